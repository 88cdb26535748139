//! End-to-end tests of the Kubernetes store: real processes of the built binary, through the real
//! `kube` client and HTTP, against the API-server double of `support/kube_api.rs` — the store
//! contract suite, plus what only this store has (Lease takeover tokens, failing renewals, RBAC
//! refusals, an unreachable API server, a corrupt record annotation, Events, the record cap).
//!
//! The scenarios of `real_cluster_scenarios!` (the contract suite's and this store's, none needing
//! a fault) run twice: in `kube_double`, against the double, each asserting it left no Lease
//! behind; and in `kube_real_cluster`, `#[ignore]`d, against a real cluster, one test each:
//! `INITGUARD_TEST_KUBECONFIG=~/.kube/config cargo test -- --ignored kube_real_cluster`
//! (namespace from `INITGUARD_TEST_NAMESPACE`, default `default`). Each deletes every Lease it
//! created when it ends, passed or failed (`LeaseCleanup`).
#![cfg(feature = "kubernetes")]

#[macro_use]
mod support;
#[path = "support/kube_api.rs"]
mod kube_api;

use futures::StreamExt;
use initguard::store::kubernetes::lease_name;
use initguard::task::{Key, TaskId};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube_api::{Expired, KubeApi, Mode};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use support::*;

const NS: &str = "initguard-test";
const RECORD: &str = "initguard.io/record";

/// A Kubernetes API server for the binary: the double (fault switches in `api`), or a real cluster.
struct KubeFixture {
    api: Option<KubeApi>,
    kubeconfig: PathBuf,
    namespace: String,
    _dir: tempfile::TempDir,
}

impl KubeFixture {
    fn double() -> KubeFixture {
        let dir = tempfile::tempdir().unwrap();
        let api = KubeApi::start();
        KubeFixture {
            kubeconfig: api.kubeconfig(dir.path(), NS),
            api: Some(api),
            namespace: NS.into(),
            _dir: dir,
        }
    }

    /// `None` (test skipped, or failed under CI) without `INITGUARD_TEST_KUBECONFIG`.
    fn real() -> Option<KubeFixture> {
        let kubeconfig = std::env::var("INITGUARD_TEST_KUBECONFIG").ok();
        if !require(
            "a Kubernetes API server (set INITGUARD_TEST_KUBECONFIG to its kubeconfig)",
            kubeconfig.is_some(),
        ) {
            return None;
        }
        let kubeconfig = kubeconfig?;
        Some(KubeFixture {
            api: None,
            kubeconfig: kubeconfig.into(),
            namespace: std::env::var("INITGUARD_TEST_NAMESPACE")
                .unwrap_or_else(|_| "default".into()),
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    fn api(&self) -> &KubeApi {
        self.api
            .as_ref()
            .expect("this scenario needs the API-server double")
    }

    /// Run `f` with a kube client on the Leases of the namespace (one runtime for both: the
    /// client's connection worker lives on the runtime that built it).
    fn with_leases<T, Fut>(&self, f: impl FnOnce(Api<Lease>) -> Fut) -> T
    where
        Fut: std::future::Future<Output = T>,
    {
        let kubeconfig = self.kubeconfig.clone();
        let ns = self.namespace.clone();
        block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            f(Api::namespaced(kube::Client::try_from(cfg).unwrap(), &ns)).await
        })
    }

    /// The Lease of `key`, through a kube client (works on the double and on a real cluster).
    fn lease(&self, key: &str) -> Option<Lease> {
        let name = lease_of(key);
        self.with_leases(|api| async move { api.get_opt(&name).await.unwrap() })
    }

    fn edit_lease(&self, key: &str, edit: impl FnOnce(&mut Lease)) {
        let name = lease_of(key);
        self.with_leases(|api| async move {
            let mut l = api.get(&name).await.unwrap();
            edit(&mut l);
            api.replace(&name, &PostParams::default(), &l)
                .await
                .unwrap();
        });
    }

    fn delete_lease(&self, key: &str) {
        let name = lease_of(key);
        self.with_leases(|api| async move {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }

    /// Delete every initguard Lease whose task has `tag` in its key; the names deleted. Never
    /// panics (it runs from `LeaseCleanup::drop`, maybe while a failed test unwinds).
    fn delete_tagged(&self, tag: &str) -> Result<Vec<String>, String> {
        let kubeconfig = self.kubeconfig.clone();
        let ns = self.namespace.clone();
        let tag = tag.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let client = kube::Client::try_from(cfg).map_err(|e| e.to_string())?;
            let api: Api<Lease> = Api::namespaced(client, &ns);
            let selector = format!(
                "{}={}",
                initguard::store::kubernetes::LABEL_MANAGED_BY,
                initguard::store::kubernetes::MANAGED_BY
            );
            let listed = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?;
            let mut deleted = Vec::new();
            for l in listed.items {
                let ours = l
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("initguard.io/task"))
                    .is_some_and(|t| t.contains(&tag));
                let Some(name) = l.metadata.name.filter(|_| ours) else {
                    continue;
                };
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => deleted.push(name),
                    // Gone already (a scenario's own cleanup, or a concurrent one).
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(format!("delete lease {name}: {e}")),
                }
            }
            Ok(deleted)
        })
    }
}

/// Deletes every Lease of the scenario running on this thread when dropped, passed or panicked:
/// it tags every `unique_key` of the thread, and deletes the Leases whose task has the tag.
/// After a failure, processes the scenario started may still be running and create a Lease
/// again, so it looks twice more.
struct LeaseCleanup<'a> {
    fx: &'a KubeFixture,
    tag: String,
}

impl<'a> LeaseCleanup<'a> {
    fn new(fx: &'a KubeFixture) -> LeaseCleanup<'a> {
        let tag = format!("t{:08x}", rand::random::<u32>());
        tag_keys(Some(tag.clone()));
        LeaseCleanup { fx, tag }
    }
}

impl Drop for LeaseCleanup<'_> {
    fn drop(&mut self) {
        tag_keys(None);
        let rounds = if std::thread::panicking() { 3 } else { 1 };
        for round in 0..rounds {
            if round > 0 {
                std::thread::sleep(Duration::from_secs(2));
            }
            match self.fx.delete_tagged(&self.tag) {
                Ok(names) if !names.is_empty() => {
                    eprintln!("cleanup: deleted Leases {names:?}")
                }
                Ok(_) => {}
                Err(e) => eprintln!("cleanup: could not delete this test's Leases: {e}"),
            }
        }
    }
}

impl StoreFixture for KubeFixture {
    fn url(&self) -> String {
        format!("kubernetes:{}", self.namespace)
    }
    fn env(&self) -> Vec<(String, String)> {
        vec![(
            "KUBECONFIG".into(),
            self.kubeconfig.to_string_lossy().into_owned(),
        )]
    }
    fn leases_lapse(&self) -> bool {
        true
    }
    /// Every Lease of the namespace as the API double keeps it (metadata with resourceVersion,
    /// spec, annotations), named by its object name.
    fn stored(&self) -> Vec<Stored> {
        let mut out: Vec<Stored> = self
            .api()
            .leases(&self.namespace)
            .into_iter()
            .map(|l| Stored {
                task: l["metadata"]["annotations"]["initguard.io/task"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: l["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                bytes: serde_json::to_vec(&l).unwrap(),
            })
            .collect();
        out.sort();
        out
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn lease_of(key: &str) -> String {
    lease_name(&TaskId::global(Key::parse(key).unwrap()))
}

fn token_of(l: &Lease) -> i32 {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

fn holder_of(l: &Lease) -> Option<String> {
    l.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

fn last_line(o: &std::process::Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_string()
}

contract_tests!(KubeFixture::double());

// ---- scenarios that need no fault injection: run on the double and on a real cluster ----------

/// The record lives in an annotation of the task's Lease; the Lease is labelled for kubectl; every
/// acquisition bumps `leaseTransitions`, and a finished run leaves nobody holding it.
fn lease_holds_record_label_and_token(fx: &KubeFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/lease");
    for i in 1..=2 {
        let out = run_task(
            fx,
            work.path(),
            &key,
            &["--version", &i.to_string()],
            "true",
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let lease = fx.lease(&key).expect("the task's Lease exists");
    let meta = &lease.metadata;
    assert_eq!(
        meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "initguard"
    );
    assert_eq!(meta.annotations.as_ref().unwrap()["initguard.io/task"], key);
    let rec: serde_json::Value =
        serde_json::from_str(&meta.annotations.as_ref().unwrap()[RECORD]).unwrap();
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["key"], key.as_str());
    assert_eq!(token_of(&lease), 2, "two acquisitions, two transitions");
    assert_eq!(rec["token"], 2);
    assert_eq!(holder_of(&lease), None, "released after the run");
    assert!(meta.name.as_ref().unwrap().len() <= 63);
    let listed = record(fx, work.path(), &key);
    assert_eq!(listed["token"], 2, "status lists it through the label");
    fx.delete_lease(&key);
}

/// `kill -9` of the holder: the next run takes the Lease over once it has seen it unchanged for
/// the lease duration, with the next fencing token, and reports the interruption.
fn killed_holder_is_taken_over_with_the_next_token(fx: &KubeFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/kill9");
    let started = work.path().join("started");
    let mut holder = spawn_started(
        fx,
        work.path(),
        &key,
        &["--lock-ttl", "2s"],
        &started,
        "sleep 60",
    );
    let before = fx.lease(&key).unwrap();
    assert!(holder_of(&before).is_some());
    signal(&holder, Signal::SIGKILL);
    let _ = holder.wait();
    let begun = Instant::now();
    let marker = work.path().join("rerun");
    let out = run_task(
        fx,
        work.path(),
        &key,
        &["--lock-ttl", "2s", "--wait-timeout", "60s"],
        &format!("echo $INITGUARD_FENCING_TOKEN >> {}", marker.display()),
    );
    let waited = begun.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted"),
        "reports the interruption: {}",
        stderr(&out)
    );
    let next = token_of(&before) + 1;
    assert_eq!(
        lines(&marker),
        vec![next.to_string()],
        "ran once, next token"
    );
    assert_eq!(record(fx, work.path(), &key)["token"], next);
    // Documented lower bound (client-go semantics, DESIGN.md): a newcomer must see the Lease
    // unchanged for a whole lease duration (2 s) before taking it. A lower bound cannot fail
    // because the machine is slow.
    assert!(
        waited >= Duration::from_millis(1500),
        "took over after {waited:?}, before the lease could lapse"
    );
    fx.delete_lease(&key);
}

/// A corrupt record annotation: exit 65, nothing run, and the Lease not written at all.
fn corrupt_record_annotation_exits_65_and_leaves_the_lease_unchanged(fx: &KubeFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/corrupt");
    assert_eq!(code(&run_task(fx, work.path(), &key, &[], "true")), 0);
    fx.edit_lease(&key, |l| {
        l.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RECORD.into(), "{\"schema\": 1, \"state\": \"succ".into());
    });
    let before = fx.lease(&key).unwrap();
    let marker = work.path().join("ran");
    let out = run_task(
        fx,
        work.path(),
        &key,
        &["--version", "2"],
        &format!("touch {}", marker.display()),
    );
    let after = fx.lease(&key).unwrap();
    let ran_on_corrupt = marker.exists();
    // The exit-65 message's advice: `initguard reset KEY` replaces the corrupt record.
    let reset = cmd(fx, work.path()).args(["reset", &key]).output().unwrap();
    let rerun = run_task(
        fx,
        work.path(),
        &key,
        &["--version", "2"],
        &format!("touch {}", marker.display()),
    );
    // Gone before asserting: a corrupt record left behind would fail `status` in later scenarios
    // sharing a real cluster's namespace.
    fx.delete_lease(&key);
    assert_eq!(
        code(&reset),
        0,
        "reset repairs a corrupt record: {}",
        stderr(&reset)
    );
    assert_eq!(code(&rerun), 0, "runs after reset: {}", stderr(&rerun));
    assert!(marker.exists());
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(last_line(&out).contains("corrupt"), "{}", stderr(&out));
    assert!(!ran_on_corrupt, "nothing ran");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the Lease was not written"
    );
    assert_eq!(after, before);
}

/// A Lease named `name` as the tests create it by hand: labelled and annotated like the store's,
/// so that `LeaseCleanup` finds it too.
fn bare_lease(name: &str, key: &str) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [(
                    initguard::store::kubernetes::LABEL_MANAGED_BY.to_string(),
                    initguard::store::kubernetes::MANAGED_BY.to_string(),
                )]
                .into(),
            ),
            annotations: Some([("initguard.io/task".to_string(), key.to_string())].into()),
            ..Default::default()
        },
        spec: Some(Default::default()),
    }
}

fn with_holder(l: &Lease, holder: &str) -> Lease {
    let mut l = l.clone();
    l.spec.get_or_insert_with(Default::default).holder_identity = Some(holder.into());
    l
}

/// The API server semantics the store relies on: 409 AlreadyExists on create, an update that
/// changes nothing keeps the resourceVersion, one that changes something gets a new one, 409
/// Conflict on a stale resourceVersion, 404 NotFound. Pins the double to a real server when run
/// with `--ignored`.
fn api_semantics_the_store_relies_on(fx: &KubeFixture) {
    let key = unique_key("kube/semantics");
    let name = lease_of(&key);
    fx.with_leases(|api| async move {
        let pp = PostParams::default();
        let created = api.create(&pp, &bare_lease(&name, &key)).await.unwrap();
        let err = api.create(&pp, &bare_lease(&name, &key)).await.unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
            "{err:?}"
        );
        let same = api.replace(&name, &pp, &created).await.unwrap();
        assert_eq!(
            same.metadata.resource_version, created.metadata.resource_version,
            "an update that changes nothing keeps the resourceVersion"
        );
        let updated = api
            .replace(&name, &pp, &with_holder(&created, "someone"))
            .await
            .unwrap();
        assert_ne!(
            updated.metadata.resource_version, created.metadata.resource_version,
            "an update that changes something gets a new resourceVersion"
        );
        let err = api
            .replace(&name, &pp, &with_holder(&created, "someone-else"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"),
            "a stale resourceVersion conflicts: {err:?}"
        );
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        assert!(api.get_opt(&name).await.unwrap().is_none());
        let err = api.get(&name).await.unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
            "{err:?}"
        );
    });
}

/// The events of a watch stream until `n` of them that are not bookmarks (which a real server
/// sends when it likes) have arrived; panics if the stream ends first or `limit` passes.
async fn next_events<S>(stream: &mut S, n: usize, limit: Duration) -> Vec<WatchEvent<Lease>>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<Lease>>> + Unpin,
{
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while out.len() < n {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        match next {
            Err(_) => panic!("only {} of {n} watch events within {limit:?}", out.len()),
            Ok(None) => panic!("the watch ended after {} of {n} events", out.len()),
            Ok(Some(Err(e))) => panic!("watch failed: {e:?}"),
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            Ok(Some(Ok(e))) => out.push(e),
        }
    }
    out
}

fn rv_of(l: &Lease) -> String {
    l.metadata.resource_version.clone().unwrap_or_default()
}

/// Watch semantics a waiter relies on, the way the store calls it (`Api::watch` with a
/// `metadata.name` field selector, from the resourceVersion it read): only the changes after that
/// version, each with its object; nothing for an update that changed nothing nor for another
/// Lease; live changes and the deletion as they happen; the end of the stream at
/// `timeoutSeconds`; and 410 Expired (an `ERROR` event, or an HTTP 410 before the stream) for a
/// version older than the server keeps.
fn watch_semantics_the_store_relies_on(fx: &KubeFixture) {
    let key = unique_key("kube/watch");
    let other_key = unique_key("kube/watch-other");
    let (name, other) = (lease_of(&key), lease_of(&other_key));
    fx.with_leases(|api| async move {
        let pp = PostParams::default();
        let created = api.create(&pp, &bare_lease(&name, &key)).await.unwrap();
        let side = api
            .create(&pp, &bare_lease(&other, &other_key))
            .await
            .unwrap();
        let a = api
            .replace(&name, &pp, &with_holder(&created, "a"))
            .await
            .unwrap();
        let noop = api.replace(&name, &pp, &a).await.unwrap();
        assert_eq!(rv_of(&noop), rv_of(&a));
        api.replace(&other, &pp, &with_holder(&side, "x"))
            .await
            .unwrap();
        let b = api
            .replace(&name, &pp, &with_holder(&a, "b"))
            .await
            .unwrap();

        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(3);
        let mut stream = api.watch(&wp, &rv_of(&created)).await.unwrap().boxed();
        let got = next_events(&mut stream, 2, Duration::from_secs(10)).await;
        let seen: Vec<(String, Option<String>)> = got
            .iter()
            .map(|e| match e {
                WatchEvent::Modified(l) => (rv_of(l), holder_of(l)),
                other => panic!("expected MODIFIED, got {other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            vec![(rv_of(&a), Some("a".into())), (rv_of(&b), Some("b".into()))],
            "the two changes after the version asked for, not the no-op nor the other Lease"
        );
        let c = api
            .replace(&name, &pp, &with_holder(&b, "c"))
            .await
            .unwrap();
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        let live = next_events(&mut stream, 2, Duration::from_secs(10)).await;
        assert!(
            matches!(&live[0], WatchEvent::Modified(l) if rv_of(l) == rv_of(&c)),
            "{live:?}"
        );
        assert!(
            matches!(&live[1], WatchEvent::Deleted(l) if l.metadata.name.as_deref() == Some(name.as_str())),
            "{live:?}"
        );
        // The stream ends at timeoutSeconds (3 s) with nothing more for this name.
        let rest = tokio::time::timeout(Duration::from_secs(20), async {
            let mut rest = Vec::new();
            while let Some(e) = stream.next().await {
                match e {
                    Ok(WatchEvent::Bookmark(_)) => {}
                    other => rest.push(format!("{other:?}")),
                }
            }
            rest
        })
        .await
        .expect("the watch ended at its timeoutSeconds");
        assert!(rest.is_empty(), "{rest:?}");

        // A version older than any the server keeps (1: etcd compacts, and the watch cache
        // starts from its first list): 410 Expired, as an ERROR event or before the stream.
        match api.watch(&wp, "1").await {
            Ok(s) => {
                let mut s = s.boxed();
                let first = tokio::time::timeout(Duration::from_secs(10), s.next())
                    .await
                    .expect("an answer to a too-old watch");
                assert!(
                    matches!(&first, Some(Ok(WatchEvent::Error(st))) if st.code == 410),
                    "{first:?}"
                );
            }
            Err(e) => assert!(
                matches!(&e, kube::Error::Api(s) if s.code == 410),
                "{e:?}"
            ),
        }
        api.delete(&other, &DeleteParams::default()).await.unwrap();
    });
}

/// Nothing listens on the API server's address: exit 69 after bounded retries, nothing ran.
fn unreachable_api_server_exits_69(fx: &KubeFixture) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig =
        kube_api::write_kubeconfig(dir.path(), &format!("http://127.0.0.1:{port}"), NS);
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let begun = Instant::now();
    let out = task_cmd(
        fx,
        work.path(),
        "kube/unreachable",
        &[],
        &format!("touch {}", marker.display()),
    )
    .env("KUBECONFIG", &kubeconfig)
    .output()
    .unwrap();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(last_line(&out).contains("unreachable"), "{}", stderr(&out));
    assert!(!marker.exists());
    // Documented bound (README): retries within 10 s, then exit 69; 30 s is generous.
    assert!(begun.elapsed() < Duration::from_secs(30), "bounded retries");
}

/// Someone else writes the Lease mid-run (here: an unrelated annotation, like `kubectl annotate`):
/// the holder's next renewal gets 409 Conflict, re-reads, finds the lease still its own under its
/// token and carries on; the other writer's change survives.
fn foreign_edit_mid_run_is_a_conflict_the_holder_survives(fx: &KubeFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/conflict");
    let started = work.path().join("started");
    let child = spawn_started(
        fx,
        work.path(),
        &key,
        &["--lock-ttl", "2s"],
        &started,
        "sleep 2",
    );
    fx.edit_lease(&key, |l| {
        l.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("example.com/note".into(), "hello".into());
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lease = fx.lease(&key).unwrap();
    let ann = lease.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        ann["example.com/note"], "hello",
        "the other writer's change survived"
    );
    assert_eq!(record(fx, work.path(), &key)["state"], "succeeded");
    assert_eq!(token_of(&lease), 1, "no second acquisition");
    fx.delete_lease(&key);
}

/// A live holder's Lease with a `renewTime` far in the past (a node's skewed clock, a foreign
/// edit) does not look dead: a waiter judges the Lease by how long it has seen it unchanged, by
/// its own clock, never by `renewTime`. Here it gives up waiting (1.5 s, under the 4 s lease)
/// and runs nothing; the holder finishes under its one token.
fn an_old_renew_time_on_a_live_lease_is_not_taken_over(fx: &KubeFixture) {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/skew");
    let started = work.path().join("started");
    let holder = spawn_started(
        fx,
        work.path(),
        &key,
        &["--lock-ttl", "4s"],
        &started,
        "sleep 3",
    );
    let long_ago: k8s_openapi::jiff::Timestamp = "2000-01-01T00:00:00Z".parse().unwrap();
    fx.edit_lease(&key, |l| {
        let spec = l.spec.as_mut().unwrap();
        spec.renew_time = Some(MicroTime(long_ago));
        spec.acquire_time = Some(MicroTime(long_ago));
    });
    let marker = work.path().join("ran");
    let out = run_task(
        fx,
        work.path(),
        &key,
        &["--wait-timeout", "1500ms"],
        &format!("touch {}", marker.display()),
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("gave up waiting"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the waiter took a live holder's lease");
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        token_of(&fx.lease(&key).unwrap()),
        1,
        "no second acquisition"
    );
    fx.delete_lease(&key);
}

/// Without `--lock-ttl` the lease is 30 s: the Lease's `leaseDurationSeconds` says so.
#[test]
fn kube_lock_ttl_defaults_to_30s() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/ttl");
    let mut c = task_cmd(&fx, work.path(), &key, &[], "true");
    c.env_remove("INITGUARD_LOCK_TTL");
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lease = fx.lease(&key).expect("the task's Lease");
    assert_eq!(lease.spec.and_then(|s| s.lease_duration_seconds), Some(30));
}

/// `--scope pod`: one Lease and record per Pod UID, listed with their instance.
#[test]
fn kube_pod_scope_runs_once_per_pod_uid() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let script = format!("echo $POD_UID >> {}", marker.display());
    for uid in ["uid-a", "uid-a", "uid-b"] {
        let out = task_cmd(
            &fx,
            work.path(),
            "kube/per-pod",
            &["--scope", "pod"],
            &script,
        )
        .env("POD_UID", uid)
        .output()
        .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(lines(&marker), vec!["uid-a", "uid-b"]);
    assert_eq!(fx.api().leases(NS).len(), 2, "one Lease per Pod UID");
    let all = status_json(&fx, work.path(), "kube/per-pod");
    let instances: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(instances, vec!["uid-a", "uid-b"]);
}

/// A waiter names the holder Pod and how long it has held the lease, and gives up after
/// `--wait-timeout` with exit 75 without running anything.
#[test]
fn kube_waiter_names_the_holder_pod_and_times_out_with_75() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/busy");
    let started = work.path().join("started");
    let mut c = task_cmd(
        &fx,
        work.path(),
        &key,
        &[],
        &format!("touch {}; sleep 60", started.display()),
    );
    c.env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", NS)
        .env("POD_UID", "uid-web-0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut holder = c.spawn().unwrap();
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    let marker = work.path().join("ran");
    let out = run_task(
        &fx,
        work.path(),
        &key,
        &["--wait-timeout", "1500ms"],
        &format!("touch {}", marker.display()),
    );
    signal(&holder, Signal::SIGKILL);
    let _ = holder.wait();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("waiting for {key} held by pod {NS}/web-0"))
            && err.contains(" since "),
        "{err}"
    );
    assert!(last_line(&out).contains("gave up waiting"), "{err}");
    assert!(!marker.exists());
}

// ---- fault injection: the double only ---------------------------------------------------------

/// The API server stops answering (or refuses connections) mid-run: the holder kills its command
/// before the lease duration has passed since its last successful renewal, so nobody else can
/// overlap it.
fn failing_renewals_kill_the_child_before_the_lease_can_lapse(mode: Mode) {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/partition");
    let beats = work.path().join("beats");
    let ttl = Duration::from_secs(3);
    let child = spawn_task(
        &fx,
        work.path(),
        &key,
        &["--lock-ttl", "3s"],
        &format!(
            "while true; do date +%s%N >> {}; sleep 0.05; done",
            beats.display()
        ),
    );
    wait_for("the command to run", Duration::from_secs(20), || {
        lines(&beats).len() > 2
    });
    // Let a renewal or two go through, then partition.
    std::thread::sleep(Duration::from_millis(1500));
    fx.api().set_mode(mode);
    let out = child.wait_with_output().unwrap();
    fx.api().set_mode(Mode::Normal);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(last_line(&out).contains("lease"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("could not release the lease"),
        "a lease known lost is not given up again: {}",
        stderr(&out)
    );
    let name = lease_of(&key);
    let last_renewal = fx
        .api()
        .writes()
        .into_iter()
        .filter(|w| w.name == name)
        .map(|w| w.at)
        .max()
        .unwrap();
    let last_beat: u128 = lines(&beats)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap();
    let deadline = (last_renewal + ttl)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(
        last_beat < deadline,
        "the command ran {}ms past the lease duration since the last renewal",
        (last_beat - deadline) / 1_000_000
    );
    let n = lines(&beats).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&beats).len(), n, "the command is dead");
}

#[test]
fn kube_failing_renewals_kill_the_child_before_the_lease_can_lapse() {
    failing_renewals_kill_the_child_before_the_lease_can_lapse(Mode::Stall);
}

#[test]
fn kube_refused_renewals_kill_the_child_before_the_lease_can_lapse() {
    failing_renewals_kill_the_child_before_the_lease_can_lapse(Mode::Refuse);
}

/// RBAC refusing a verb: exit 78, the line names verb and resource and points to `k8s rbac`.
#[test]
fn kube_forbidden_exits_78_naming_verb_and_resource() {
    for (verb, line_has) in [("get", "\"get\""), ("create", "\"create\"")] {
        let fx = KubeFixture::double();
        fx.api().forbid(verb, "leases");
        let work = tempfile::tempdir().unwrap();
        let marker = work.path().join("ran");
        let out = run_task(
            &fx,
            work.path(),
            "kube/forbidden",
            &[],
            &format!("touch {}", marker.display()),
        );
        assert_eq!(code(&out), 78, "{verb}: {}", stderr(&out));
        let line = last_line(&out);
        assert!(line.contains(line_has), "{line}");
        assert!(line.contains("leases.coordination.k8s.io"), "{line}");
        assert!(line.contains("initguard k8s rbac"), "{line}");
        assert!(!marker.exists());
    }
}

/// The API server closing every connection: exit 69, nothing ran.
#[test]
fn kube_refused_connections_exit_69() {
    let fx = KubeFixture::double();
    fx.api().set_mode(Mode::Refuse);
    let work = tempfile::tempdir().unwrap();
    let out = run_task(&fx, work.path(), "kube/refused", &[], "true");
    assert_eq!(code(&out), 69, "{}", stderr(&out));
}

/// Events on the Pod for started/succeeded/skipped; when RBAC forbids Events, the run goes on
/// with exactly one warning line.
#[test]
fn kube_events_on_the_pod_and_one_warning_when_forbidden() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/events");
    let pod = |c: &mut std::process::Command| {
        c.env("POD_NAME", "web-0")
            .env("POD_UID", "uid-web-0")
            .env("POD_NAMESPACE", NS);
    };
    for _ in 0..2 {
        let mut c = task_cmd(&fx, work.path(), &key, &[], "true");
        pod(&mut c);
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let reasons: Vec<String> = fx
        .api()
        .events()
        .iter()
        .map(|e| {
            assert_eq!(e["involvedObject"]["uid"], "uid-web-0");
            assert_eq!(e["involvedObject"]["kind"], "Pod");
            e["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        vec!["InitguardStarted", "InitguardSucceeded", "InitguardSkipped"]
    );
    fx.api().forbid("create", kube_api::EVENTS_V1);
    let mut c = task_cmd(
        &fx,
        work.path(),
        &unique_key("kube/noevents"),
        &[],
        "exit 3",
    );
    pod(&mut c);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert_eq!(
        stderr(&out)
            .matches("Kubernetes Events are skipped")
            .count(),
        1,
        "{}",
        stderr(&out)
    );
}

/// Events are events.k8s.io/v1 with a microsecond `eventTime` and no second-resolution
/// `lastTimestamp` (which kubectl would sort by): within one second they still sort as they
/// happened (Skipped after Started and Succeeded).
#[test]
fn kube_events_carry_microsecond_event_times_in_the_order_they_happened() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/evtime");
    for _ in 0..2 {
        let out = task_cmd(&fx, work.path(), &key, &[], "true")
            .env("POD_NAME", "web-0")
            .env("POD_UID", "uid-web-0")
            .env("POD_NAMESPACE", NS)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let events = fx.api().events();
    let times: Vec<String> = events
        .iter()
        .map(|e| {
            assert!(e["lastTimestamp"].is_null(), "{e}");
            assert!(e["firstTimestamp"].is_null(), "{e}");
            assert_eq!(e["reportingComponent"], "initguard.io/initguard", "{e}");
            let t = e["eventTime"].as_str().unwrap_or_default().to_string();
            let frac = t.strip_suffix('Z').and_then(|t| t.rsplit_once('.'));
            assert_eq!(frac.map(|(_, f)| f.len()), Some(6), "{t}");
            t
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "event times in creation order");
    assert_eq!(events.len(), 3);
    assert_ne!(times[0], times[2], "{times:?}");
}

/// The reasons of the Warning events from initguard.io/initguard, as README's field selector
/// lists them, oldest first.
fn initguard_warnings(fx: &KubeFixture) -> Vec<String> {
    fx.api()
        .events()
        .iter()
        .filter(|e| e["type"] == "Warning" && e["reportingComponent"] == "initguard.io/initguard")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The run that gives up reports `InitguardGaveUp`, not `InitguardFailed`: both are Warnings from
/// reportingComponent initguard.io/initguard, which is what README's field selector lists.
#[test]
fn kube_final_failure_is_a_warning_event_initguard_gave_up() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/gaveup");
    let out = task_cmd(&fx, work.path(), &key, &["--max-attempts", "1"], "exit 3")
        .env("POD_NAME", "web-0")
        .env("POD_UID", "uid-web-0")
        .env("POD_NAMESPACE", NS)
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let warnings = initguard_warnings(&fx);
    assert_eq!(warnings, vec!["InitguardGaveUp"]);
}

/// A huge output tail cannot push the record past the cap; `status` says records are capped.
#[test]
fn kube_record_stays_under_the_cap_and_status_says_so() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/big");
    let out = run_task(
        &fx,
        work.path(),
        &key,
        &["--tail-bytes", "500000"],
        "head -c 400000 /dev/zero | tr '\\0' x",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lease = fx.lease(&key).unwrap();
    let rec = &lease.metadata.annotations.as_ref().unwrap()[RECORD];
    assert!(
        rec.len() <= initguard::store::kubernetes::MAX_RECORD_BYTES,
        "{}",
        rec.len()
    );
    assert!(rec.contains("xxxx"), "the newest output is kept");
    let table = cmd(&fx, work.path()).args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("trimmed to fit this store's record cap of 64 KiB") && text.contains(&key),
        "{text}"
    );
}

/// A record whose fingerprint is not ASCII (any text can be in a store) is shown, not a panic.
#[test]
fn kube_status_shows_a_record_with_a_non_ascii_fingerprint() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/utf8");
    let out = run_task(&fx, work.path(), &key, &[], "true");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.edit_lease(&key, |l| {
        let ann = l.metadata.annotations.as_mut().unwrap();
        let mut rec: serde_json::Value = serde_json::from_str(&ann[RECORD]).unwrap();
        rec["fingerprint"] = "sha256:aéééééééé☃".into();
        rec["history"][0]["fingerprint"] = "a☃☃☃☃☃".into();
        ann.insert(RECORD.to_string(), rec.to_string());
    });
    for (sub, shown) in [
        (vec!["status"], "aéééé"),
        (vec!["history", key.as_str()], "a☃☃☃"),
    ] {
        let out = cmd(&fx, work.path()).args(&sub).output().unwrap();
        assert_eq!(code(&out), 0, "{sub:?}: {}", stderr(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(shown),
            "{sub:?}"
        );
    }
}

/// A record that fit is not said to be trimmed.
#[test]
fn kube_status_says_nothing_of_trimming_when_nothing_was_trimmed() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/small");
    let out = run_task(&fx, work.path(), &key, &[], "echo small");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = cmd(&fx, work.path()).args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains(&key), "{text}");
    assert!(
        !text.contains("trimmed") && !text.contains("capped"),
        "{text}"
    );
}

/// `kubernetes:` without a namespace uses the kubeconfig context's.
#[test]
fn kube_namespace_defaults_to_the_context() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let out = task_cmd(&fx, work.path(), "kube/ctx", &[], "true")
        .env("INITGUARD_STORE", "kubernetes:")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fx.api().lease(NS, &lease_of("kube/ctx")).is_some());
}

/// The Role `initguard k8s rbac` prints parses into the k8s-openapi types, and with the double
/// enforcing exactly that Role every command works and every granted permission is used: the
/// store needs all of it and nothing more.
#[test]
fn kube_rbac_output_is_exactly_what_every_command_needs() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use serde::Deserialize;
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["k8s", "rbac", "--namespace", NS, "--service-account", "web"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let yaml = String::from_utf8(out.stdout).unwrap();
    let mut docs = serde_yaml::Deserializer::from_str(&yaml);
    let sa = ServiceAccount::deserialize(docs.next().unwrap()).unwrap();
    let role = Role::deserialize(docs.next().unwrap()).unwrap();
    let binding = RoleBinding::deserialize(docs.next().unwrap()).unwrap();
    assert!(docs.next().is_none());
    assert_eq!(sa.metadata.name.as_deref(), Some("web"));
    assert_eq!(binding.subjects.unwrap()[0].name, "web");
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    let mut granted = std::collections::HashSet::new();
    for rule in role.rules.unwrap() {
        let groups = rule.api_groups.unwrap_or_default();
        for r in rule.resources.unwrap() {
            for g in &groups {
                // The double names events.k8s.io Events `resource.group`: a Role grants them
                // apart from core Events.
                let r = if g == "events.k8s.io" {
                    format!("{r}.{g}")
                } else {
                    r.clone()
                };
                for v in &rule.verbs {
                    granted.insert((v.clone(), r.clone()));
                }
            }
        }
    }

    let fx = KubeFixture::double();
    fx.api().allow_only(granted.clone());
    let key = unique_key("kube/rbac");
    let pod = |mut c: std::process::Command| {
        c.env("POD_NAME", "web-0")
            .env("POD_UID", "uid-web-0")
            .env("POD_NAMESPACE", NS);
        c
    };
    let ok = |mut c: std::process::Command| {
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(
            !stderr(&out).contains("Events are skipped"),
            "{}",
            stderr(&out)
        );
    };
    // A holder and a waiter (which waits on the Lease, then skips), then a skip by record.
    let started = work.path().join("started");
    let script = format!("touch {}; sleep 1.5", started.display());
    let mut holder = pod(task_cmd(&fx, work.path(), &key, &[], &script));
    let holder = holder
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    ok(pod(task_cmd(&fx, work.path(), &key, &[], &script)));
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    ok(pod(task_cmd(&fx, work.path(), &key, &[], &script)));
    let mut c = cmd(&fx, work.path());
    c.args(["status", "--json"]);
    ok(c);
    let mut c = cmd(&fx, work.path());
    c.args(["reset", &key]);
    ok(c);
    let mut c = cmd(&fx, work.path());
    c.args(["release", &key]);
    ok(c);
    assert!(fx.api().events().len() >= 3, "events were allowed");
    let seen = fx.api().seen();
    assert!(
        seen.is_subset(&granted),
        "nothing beyond the Role asked for: {:?}",
        seen.difference(&granted).collect::<Vec<_>>()
    );
    // The waiter above watches its Lease: every granted permission is used.
    let unused: std::collections::HashSet<_> = granted.difference(&seen).cloned().collect();
    assert!(
        unused.is_empty(),
        "every granted permission is used: {unused:?} never was"
    );
}

// ---- the real-cluster suite, also run against the double ------------------------------------

/// A scenario against the double, with the cleanup a real cluster gets; then the double must
/// hold no Lease at all: the cleanup found every Lease the scenario made.
fn on_double(scenario: impl FnOnce(&KubeFixture)) {
    let fx = KubeFixture::double();
    {
        let _cleanup = LeaseCleanup::new(&fx);
        scenario(&fx);
    }
    let left: Vec<Value> = fx.api().leases(NS);
    let names: Vec<&str> = left
        .iter()
        .filter_map(|l| l["metadata"]["name"].as_str())
        .collect();
    assert!(names.is_empty(), "Leases left behind: {names:?}");
}

/// A scenario against the cluster of `INITGUARD_TEST_KUBECONFIG`, deleting its Leases after.
fn on_real_cluster(scenario: impl FnOnce(&KubeFixture)) {
    let Some(fx) = KubeFixture::real() else {
        return;
    };
    let _cleanup = LeaseCleanup::new(&fx);
    scenario(&fx);
}

/// One test per scenario in `kube_double` (against the double) and in `kube_real_cluster`
/// (`#[ignore]`d: against a real API server), so that one failure hides no other.
macro_rules! real_cluster_scenarios {
    ($($name:ident => $scenario:expr;)*) => {
        mod kube_double {
            use super::*;
            $(
                #[test]
                fn $name() {
                    on_double($scenario);
                }
            )*
        }
        mod kube_real_cluster {
            use super::*;
            $(
                #[test]
                #[ignore = "needs a Kubernetes API server"]
                fn $name() {
                    on_real_cluster($scenario);
                }
            )*
        }
    };
}

real_cluster_scenarios! {
    kube_api_semantics_the_store_relies_on => api_semantics_the_store_relies_on;
    kube_watch_semantics_the_store_relies_on => watch_semantics_the_store_relies_on;
    kube_lease_holds_record_label_and_token => lease_holds_record_label_and_token;
    kube_killed_holder_is_taken_over_with_the_next_token =>
        killed_holder_is_taken_over_with_the_next_token;
    kube_corrupt_record_annotation_exits_65_and_leaves_the_lease_unchanged =>
        corrupt_record_annotation_exits_65_and_leaves_the_lease_unchanged;
    kube_foreign_edit_mid_run_is_a_conflict_the_holder_survives =>
        foreign_edit_mid_run_is_a_conflict_the_holder_survives;
    kube_unreachable_api_server_exits_69 => unreachable_api_server_exits_69;
    kube_an_old_renew_time_on_a_live_lease_is_not_taken_over =>
        an_old_renew_time_on_a_live_lease_is_not_taken_over;
    contract_exactly_once_under_contention =>
        |fx: &KubeFixture| support::contract::exactly_once_under_contention(fx, 30);
    contract_skips_after_success_and_reruns_on_change =>
        |fx: &KubeFixture| support::contract::skips_after_success_and_reruns_on_change(fx);
    contract_killed_holder_is_detected_as_interrupted =>
        |fx: &KubeFixture| support::contract::killed_holder_is_detected_as_interrupted(fx);
    contract_interrupted_predecessor_with_fail_policy_exits_75 =>
        |fx: &KubeFixture| support::contract::interrupted_predecessor_with_fail_policy_exits_75(fx);
    contract_sigterm_is_forwarded_and_recorded =>
        |fx: &KubeFixture| support::contract::sigterm_is_forwarded_and_recorded(fx);
    contract_gives_up_after_max_attempts_and_reset_clears_it =>
        |fx: &KubeFixture| support::contract::gives_up_after_max_attempts_and_reset_clears_it(fx);
    contract_retries_in_process_with_backoff =>
        |fx: &KubeFixture| support::contract::retries_in_process_with_backoff(fx);
    contract_done_if_adopts_without_running =>
        |fx: &KubeFixture| support::contract::done_if_adopts_without_running(fx);
    contract_status_and_history_json_have_the_design_fields =>
        |fx: &KubeFixture| support::contract::status_and_history_json_have_the_design_fields(fx);
    contract_child_env_names_key_token_attempt_previous =>
        |fx: &KubeFixture| support::contract::child_env_names_key_token_attempt_previous(fx);
    contract_paused_holder_past_its_lease_is_fenced =>
        |fx: &KubeFixture| support::contract::paused_holder_past_its_lease_is_fenced(fx);
    contract_release_frees_a_dead_holders_lease_from_its_own_pod =>
        |fx: &KubeFixture| support::contract::release_frees_a_dead_holders_lease_from_its_own_pod(fx);
    contract_release_leaves_a_live_holders_lease_alone =>
        |fx: &KubeFixture| support::contract::release_leaves_a_live_holders_lease_alone(fx);
}

// ---- the double's own watch and no-op bookkeeping, and its fault switches ----------------------

/// A fresh key and its Lease name.
fn key_and_lease(prefix: &str) -> (String, String) {
    let key = unique_key(prefix);
    let name = lease_of(&key);
    (key, name)
}

/// A no-op update is answered with the stored object, counted apart, not recorded as a write
/// and sent to no watcher; an empty annotation map is the same as none (the API server's
/// encoding drops both); the next real change gets the next resourceVersion.
#[test]
fn kube_double_noop_update_is_no_write_and_no_event() {
    let fx = KubeFixture::double();
    let (key, name) = key_and_lease("kube/noop");
    let plain_name = format!("{name}-plain");
    let plain_key = key.clone();
    let api = fx.api();
    let (before, after) = fx.with_leases(|leases| async move {
        let pp = PostParams::default();
        let created = leases.create(&pp, &bare_lease(&name, &key)).await.unwrap();
        let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut stream = leases.watch(&wp, &rv_of(&created)).await.unwrap().boxed();
        let same = leases.replace(&name, &pp, &created).await.unwrap();
        let mut empty = created.clone();
        empty.metadata.finalizers = Some(Vec::new());
        empty.metadata.owner_references = Some(Vec::new());
        let also_same = leases.replace(&name, &pp, &empty).await.unwrap();
        let changed = leases
            .replace(&name, &pp, &with_holder(&created, "h"))
            .await
            .unwrap();
        let got = next_events(&mut stream, 1, Duration::from_secs(10)).await;
        assert!(
            matches!(&got[0], WatchEvent::Modified(l) if rv_of(l) == rv_of(&changed)),
            "the first event is the real change: {got:?}"
        );
        assert_eq!(same, created, "answered with the stored object");
        assert_eq!(rv_of(&also_same), rv_of(&created));
        (created, changed)
    });
    assert_eq!(api.noop_updates(), 2);
    let writes: Vec<(&str, String)> = api
        .writes()
        .iter()
        .map(|w| (w.verb, w.resource_version.clone()))
        .collect();
    assert_eq!(
        writes,
        vec![("create", rv_of(&before)), ("update", rv_of(&after))],
        "no-ops are not writes"
    );
    assert_eq!(
        rv_of(&after).parse::<u64>().unwrap(),
        rv_of(&before).parse::<u64>().unwrap() + 1
    );
    // An empty map is absent too: a Lease with no annotations, updated with `annotations: {}`.
    let (plain, emptied) = fx.with_leases(|leases| async move {
        let pp = PostParams::default();
        let mut plain = bare_lease(&plain_name, &plain_key);
        plain.metadata.annotations = None;
        let plain = leases.create(&pp, &plain).await.unwrap();
        let mut empty = plain.clone();
        empty.metadata.annotations = Some(Default::default());
        let emptied = leases.replace(&plain_name, &pp, &empty).await.unwrap();
        (plain, emptied)
    });
    assert_eq!(rv_of(&emptied), rv_of(&plain), "an empty map is no change");
    assert_eq!(api.noop_updates(), 3);
}

/// With `allowWatchBookmarks`, BOOKMARK events carry only `metadata.resourceVersion` (the
/// current one); without, none come.
#[test]
fn kube_double_bookmarks_only_when_asked() {
    let fx = KubeFixture::double();
    fx.api().set_bookmark_interval(Duration::from_millis(100));
    let (key, name) = key_and_lease("kube/bookmark");
    fx.with_leases(|leases| async move {
        let created = leases
            .create(&PostParams::default(), &bare_lease(&name, &key))
            .await
            .unwrap();
        let wp = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut with = leases.watch(&wp, &rv_of(&created)).await.unwrap().boxed();
        let first = tokio::time::timeout(Duration::from_secs(10), with.next())
            .await
            .unwrap();
        match first {
            Some(Ok(WatchEvent::Bookmark(b))) => {
                assert_eq!(b.metadata.resource_version, rv_of(&created));
                assert!(b.metadata.annotations.is_empty());
                assert_eq!(b.types.kind, "Lease");
            }
            other => panic!("expected a bookmark: {other:?}"),
        }
        let mut without = leases
            .watch(&wp.clone().disable_bookmarks(), &rv_of(&created))
            .await
            .unwrap()
            .boxed();
        let quiet = tokio::time::timeout(Duration::from_millis(800), without.next()).await;
        assert!(
            quiet.is_err(),
            "no event at all without bookmarks: {quiet:?}"
        );
    });
}

/// The history window: with 3 changes kept, a watch from the version just before them replays
/// them; from one older it gets 410 Expired, as an ERROR event by default and as an HTTP 410
/// when switched; after `compact` every version but the current one is too old.
#[test]
fn kube_double_watch_history_is_bounded_with_410_expired() {
    let fx = KubeFixture::double();
    fx.api().set_watch_history(3);
    let api = fx.api();
    let (key, name) = key_and_lease("kube/history");
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .disable_bookmarks()
        .timeout(5);
    let (rvs, wp2) = fx.with_leases(|leases| {
        let wp = wp.clone();
        async move {
            let pp = PostParams::default();
            let mut l = leases.create(&pp, &bare_lease(&name, &key)).await.unwrap();
            let mut rvs = vec![rv_of(&l)];
            for i in 0..4 {
                l = leases
                    .replace(&name, &pp, &with_holder(&l, &format!("h{i}")))
                    .await
                    .unwrap();
                rvs.push(rv_of(&l));
            }
            // Kept: the last 3 changes (rvs[2..]); a watch from rvs[1] misses none.
            let mut ok = leases.watch(&wp, &rvs[1]).await.unwrap().boxed();
            let got = next_events(&mut ok, 3, Duration::from_secs(10)).await;
            let got: Vec<String> = got
                .iter()
                .map(|e| match e {
                    WatchEvent::Modified(l) => rv_of(l),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, rvs[2..].to_vec());
            let mut old = leases.watch(&wp, &rvs[0]).await.unwrap().boxed();
            let first = old.next().await;
            match &first {
                Some(Ok(WatchEvent::Error(s))) => {
                    assert_eq!((s.code, s.reason.as_str()), (410, "Expired"), "{s:?}")
                }
                other => panic!("expected an ERROR event: {other:?}"),
            }
            assert!(
                old.next().await.is_none(),
                "the stream ends after the error"
            );
            (rvs, wp)
        }
    });
    api.set_expired(Expired::Http);
    let first = rvs[0].clone();
    fx.with_leases(|leases| async move {
        let err = leases.watch(&wp2, &first).await.err().expect("refused");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 410 && s.reason == "Expired"),
            "{err:?}"
        );
    });
    api.compact();
    let (previous, last) = (rvs[3].clone(), rvs[4].clone());
    let wp3 = wp.clone();
    fx.with_leases(|leases| async move {
        let err = leases.watch(&wp3, &previous).await.err().expect("refused");
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 410),
            "{err:?}"
        );
        // From the current version nothing can be missed: accepted.
        assert!(leases.watch(&wp3, &last).await.is_ok());
    });
}

/// The fault switches a store's fallback to polling is tested with: watch forbidden (403),
/// streams broken mid-stream (now, or after N events), and a server going down breaking them;
/// a broken stream ends before its `timeoutSeconds`, a clean one at it.
#[test]
fn kube_double_watch_faults_refuse_and_break_streams() {
    let fx = KubeFixture::double();
    let api = fx.api();
    let (key, name) = key_and_lease("kube/faults");
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .disable_bookmarks()
        .timeout(60);
    let created = fx.with_leases(|leases| async move {
        leases
            .create(&PostParams::default(), &bare_lease(&name, &key))
            .await
            .unwrap()
    });
    let rv = rv_of(&created);
    // Whether a stream opened now ends within `within` when `act` runs.
    let ends = |act: &dyn Fn(), within: Duration| -> bool {
        let (wp, rv) = (wp.clone(), rv.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let kubeconfig = fx.kubeconfig.clone();
        let watcher = std::thread::spawn(move || {
            block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let leases: Api<Lease> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), NS);
                let mut s = leases.watch(&wp, &rv).await.unwrap().boxed();
                tx.send(()).unwrap();
                tokio::time::timeout(within, async {
                    while let Some(e) = s.next().await {
                        if e.is_err() {
                            break;
                        }
                    }
                })
                .await
                .is_ok()
            })
        });
        rx.recv().unwrap();
        wait_for("the watch to be open", Duration::from_secs(10), || {
            api.open_watches() == 1
        });
        act();
        watcher.join().unwrap()
    };
    let long = Duration::from_secs(20);
    assert!(ends(&|| api.break_watches(), long), "break_watches ends it");
    assert!(
        ends(&|| api.set_mode(Mode::Refuse), long),
        "a refusing server breaks it"
    );
    api.set_mode(Mode::Normal);
    assert!(
        !ends(&|| {}, Duration::from_secs(2)),
        "untouched, it goes on (timeoutSeconds is 60)"
    );
    wait_for("the last watch to close", Duration::from_secs(10), || {
        api.open_watches() == 0
    });

    api.break_watches_after(Some(1));
    let events = fx.with_leases(|leases| {
        let (wp, rv) = (wp.clone(), rv.clone());
        async move {
            let mut s = leases.watch(&wp, &rv).await.unwrap().boxed();
            let l = leases
                .replace(
                    created.metadata.name.as_deref().unwrap(),
                    &PostParams::default(),
                    &with_holder(&created, "one"),
                )
                .await
                .unwrap();
            leases
                .replace(
                    created.metadata.name.as_deref().unwrap(),
                    &PostParams::default(),
                    &with_holder(&l, "two"),
                )
                .await
                .unwrap();
            let mut n = 0;
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout(Duration::from_secs(20), s.next()).await
            {
                n += 1;
            }
            n
        }
    });
    assert_eq!(events, 1, "broken after one event");
    api.break_watches_after(None);

    api.forbid("watch", "leases");
    let err = fx.with_leases(|leases| async move { leases.watch(&wp, &rv).await.err() });
    assert!(
        matches!(&err, Some(kube::Error::Api(s)) if s.code == 403),
        "{err:?}"
    );
    assert!(
        api.seen()
            .contains(&("watch".to_string(), "leases".to_string()))
    );
}

/// `n` contenders on one key, the holder held until all wait; returns their outputs and how
/// many times the command ran.
fn contend(fx: &KubeFixture, n: usize) -> (Vec<std::process::Output>, usize) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/watchless");
    let marker = work.path().join("ran");
    let go = work.path().join("go");
    let script = format!(
        "echo run >> {}; while [ ! -e {} ]; do sleep 0.05; done",
        marker.display(),
        go.display()
    );
    let children: Vec<_> = (0..n)
        .map(|_| spawn_task(fx, work.path(), &key, &["--lock-ttl", "30s"], &script))
        .collect();
    wait_for("the holder to start", Duration::from_secs(30), || {
        !lines(&marker).is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&go, "").unwrap();
    let outs = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    (outs, lines(&marker).len())
}

/// RBAC without `watch` (a Role from before it was granted): waiters poll instead, say so once,
/// and the task still runs once with every contender exiting 0.
#[test]
fn kube_waiters_poll_when_watch_is_forbidden() {
    let fx = KubeFixture::double();
    fx.api().forbid("watch", "leases");
    let (outs, ran) = contend(&fx, 5);
    assert_eq!(ran, 1);
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr(o));
    }
    let mut told: Vec<usize> = outs
        .iter()
        .map(|o| stderr(o).matches("refused to watch Leases").count())
        .collect();
    told.sort_unstable();
    assert_eq!(
        told,
        [0, 1, 1, 1, 1],
        "each waiter says once that it polls instead (the holder never waits)"
    );
}

/// Watches that break mid-stream, or start from a resourceVersion the server no longer has
/// (410 Gone: as the API server says it, an `ERROR` event in the stream, and as an HTTP answer),
/// leave waiters to look again: one run, all exit 0.
#[test]
fn kube_waiters_survive_broken_and_expired_watches() {
    let fx = KubeFixture::double();
    fx.api().break_watches_after(Some(0));
    let (outs, ran) = contend(&fx, 4);
    assert_eq!(ran, 1);
    assert!(outs.iter().all(|o| code(o) == 0));

    for how in [Expired::Event, Expired::Http] {
        let fx = KubeFixture::double();
        fx.api().set_watch_history(0);
        fx.api().set_expired(how);
        let (outs, ran) = contend(&fx, 4);
        assert_eq!(ran, 1);
        assert!(outs.iter().all(|o| code(o) == 0));
    }
}

/// `--kube-context NAME` (or `INITGUARD_KUBE_CONTEXT`) picks a context that is not the
/// kubeconfig's current one: the current context points at a server that refuses connections
/// (69 without the option), the named one at the API double, which gets the Lease. A context the
/// kubeconfig does not have is a one-line configuration error naming it, and nothing runs.
#[test]
fn kube_context_selects_a_context_other_than_the_current_one() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("two-contexts");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n\
             - name: gone\n  cluster:\n    server: http://127.0.0.1:1\ncontexts:\n\
             - name: double\n  context:\n    cluster: double\n    user: u\n    namespace: {NS}\n\
             - name: gone\n  context:\n    cluster: gone\n    user: u\n\
             current-context: gone\nusers:\n- name: u\n  user:\n    token: not-a-secret\n",
            fx.api().url()
        ),
    )
    .unwrap();
    let marker = work.path().join("ran");
    let script = format!("echo ran >> {}", marker.display());
    let run = |key: &str, flag: Option<&str>, var: Option<&str>| {
        let mut c = cmd(&fx, work.path());
        c.env("KUBECONFIG", &kubeconfig)
            .env_remove("INITGUARD_KUBE_CONTEXT")
            .env("INITGUARD_STORE", "kubernetes:");
        if let Some(f) = flag {
            c.args(["--kube-context", f]);
        }
        if let Some(v) = var {
            c.env("INITGUARD_KUBE_CONTEXT", v);
        }
        c.args(["run", "--key", key, "--", "sh", "-c", &script])
            .output()
            .unwrap()
    };
    let out = run("kube/ctx-current", None, None);
    assert_eq!(
        code(&out),
        69,
        "the current context's server: {}",
        stderr(&out)
    );
    let out = run("kube/ctx-flag", Some("double"), None);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        fx.lease("kube/ctx-flag").is_some(),
        "the Lease is in the named context's cluster"
    );
    let out = run("kube/ctx-var", None, Some("double"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fx.lease("kube/ctx-var").is_some());
    let out = run("kube/ctx-flag-wins", Some("double"), Some("gone"));
    assert_eq!(
        code(&out),
        0,
        "the flag wins over the variable: {}",
        stderr(&out)
    );
    let out = run("kube/ctx-unknown", Some("nosuch"), None);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(last_line(&out).contains("nosuch"), "{}", stderr(&out));
    assert_eq!(lines(&marker).len(), 3, "one run per context that answered");
}

/// A holder killed mid-run: the next run reports `InitguardInterruptedPredecessor`, a Warning
/// from initguard.io/initguard as README's field selector lists it, and with
/// `--on-interrupted fail` exits 75 without running. Dropping the record annotation (README's
/// advice for a corrupt one, `kubectl annotate lease NAME initguard.io/record-`) makes the task
/// run again.
#[test]
fn kube_interrupted_predecessor_event_and_a_dropped_record_runs_again() {
    let fx = KubeFixture::double();
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("kube/interrupted");
    let started = work.path().join("started");
    let marker = work.path().join("ran");
    let in_pod = |c: &mut std::process::Command| {
        c.env("POD_NAME", "web-0")
            .env("POD_UID", "uid-web-0")
            .env("POD_NAMESPACE", NS);
    };
    let mut c = task_cmd(
        &fx,
        work.path(),
        &key,
        &["--lock-ttl", "2s"],
        &format!("touch {}; sleep 60", started.display()),
    );
    in_pod(&mut c);
    kill_once_started(c, &started);
    let script = format!("echo ran >> {}", marker.display());
    let mut c = task_cmd(
        &fx,
        work.path(),
        &key,
        &[
            "--lock-ttl",
            "2s",
            "--on-interrupted",
            "fail",
            "--wait-timeout",
            "60s",
        ],
        &script,
    );
    in_pod(&mut c);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(!marker.exists(), "--on-interrupted fail runs nothing");
    let warnings = initguard_warnings(&fx);
    assert_eq!(warnings, vec!["InitguardInterruptedPredecessor"]);
    // The operator's way out without initguard: drop the record.
    fx.edit_lease(&key, |l| {
        l.metadata.annotations.as_mut().map(|a| a.remove(RECORD));
    });
    let mut c = task_cmd(
        &fx,
        work.path(),
        &key,
        &["--on-interrupted", "fail"],
        &script,
    );
    in_pod(&mut c);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&marker), vec!["ran"]);
    let out = run_task(&fx, work.path(), &key, &[], &script);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&marker).len(), 1, "then it skips");
}
