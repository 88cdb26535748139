//! End-to-end tests of the etcd store, through the real `initguard` binary against throwaway etcd
//! servers (tests/support/etcd.rs): the store contract suite (30 contenders, kill -9, SIGSTOP
//! past the lease, supervision, waiting, release, reset), plus what only this store has: where
//! the keys live and that the token is the lock key's create revision, takeover by etcd's lease
//! expiry, the server killed mid-run, a partition, authentication and permissions, a corrupt
//! record, prefixes, TLS. Timings are printed; only bounds that follow from the lease are
//! asserted.
#![cfg(feature = "etcd")]

#[macro_use]
mod support;

use initguard::store::etcd::{lock_key, record_key, task_of_key};
use initguard::task::{Key, TaskId};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::etcd::Etcd;
use support::proxy::Proxy;
use support::*;

const PREFIX: &str = "/initguard/";

struct EtcdFixture {
    etcd: Etcd,
}

impl StoreFixture for EtcdFixture {
    fn url(&self) -> String {
        self.etcd.url()
    }
    fn leases_lapse(&self) -> bool {
        true
    }
    /// Every key under the prefix (locks and records) with its value, as etcd keeps them.
    fn stored(&self) -> Vec<Stored> {
        self.etcd
            .get_prefix(PREFIX)
            .into_iter()
            .map(|(key, value)| Stored {
                task: task_of_key(PREFIX, &key)
                    .map(|t| t.storage_name())
                    .unwrap_or_default(),
                name: key,
                bytes: value.into_bytes(),
            })
            .collect()
    }
    /// Each take creates the lock key (a take is a txn "create if absent"), and only a take.
    fn acquisitions(&self, key: &str) -> Option<u64> {
        let id = TaskId::global(Key::parse(key).ok()?);
        Some(self.etcd.creations(&lock_key(PREFIX, &id)))
    }
}

// Without etcd installed (and CI unset) each scenario returns after Etcd::start's SKIP line.
contract_tests!(match Etcd::start() {
    Some(etcd) => EtcdFixture { etcd },
    None => return,
});

fn global(key: &str) -> TaskId {
    TaskId::global(Key::parse(key).unwrap())
}

/// `initguard` against `url`, with no etcd credentials leaking in from the environment.
fn ig(url: &str, work: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env("INITGUARD_STORE", url)
        .env("INITGUARD_LOG", "info")
        .env_remove("INITGUARD_STORE_PASSWORD_FILE")
        .env_remove("INITGUARD_ETCD_USER")
        .env_remove("INITGUARD_ETCD_CA_FILE")
        .env_remove("INITGUARD_ETCD_CERT_FILE")
        .env_remove("INITGUARD_ETCD_KEY_FILE")
        .env_remove("INITGUARD_KEY")
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null());
    c
}

fn run(url: &str, work: &Path, key: &str, extra: &[&str], script: &str) -> Command {
    let mut c = ig(url, work);
    c.args(["run", "--key", key])
        .args(extra)
        .args(["--", "sh", "-c", script]);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn initguard")
}

fn last_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_string()
}

/// Nanosecond timestamps of the lines `KIND RUN TIME` in `log`.
fn times(log: &Path, kind: &str, run: &str) -> Vec<u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some(kind) && p.next() == Some(run))
                .then(|| p.next().and_then(|t| t.parse().ok()))
                .flatten()
        })
        .collect()
}

/// A command that logs `start RUN t`, a `beat RUN t` every 50 ms for `beats` beats, `end RUN t`.
fn beating(log: &Path, beats: u32) -> String {
    format!(
        "echo \"start $RUN $(date +%s%N)\" >> {log}; i=0; while [ $i -lt {beats} ]; do echo \"beat $RUN $(date +%s%N)\" >> {log}; sleep 0.05; i=$((i+1)); done; echo \"end $RUN $(date +%s%N)\" >> {log}",
        log = log.display()
    )
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The record is at `<prefix><escaped key>/record`; while the command runs, the lock key beside
/// it names the holder, is bound to an etcd lease of the TTL, and its create revision is the
/// token the command is given; after the run the lock key is gone.
#[test]
fn keys_live_where_the_readme_says_and_the_token_is_the_locks_create_revision() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let key = "app/migrate";
    let token_file = work.path().join("token");
    let go = work.path().join("go");
    let script = format!(
        "echo $INITGUARD_FENCING_TOKEN > {}; while [ ! -e {} ]; do sleep 0.05; done",
        token_file.display(),
        go.display()
    );
    let child = spawn(run(
        &etcd.url(),
        work.path(),
        key,
        &["--lock-ttl", "5s"],
        &script,
    ));
    wait_for("the command to start", Duration::from_secs(20), || {
        !lines(&token_file).is_empty()
    });
    let lock = lock_key(PREFIX, &global(key));
    assert_eq!(lock, "/initguard/app%2Fmigrate/lock");
    let token: u64 = lines(&token_file)[0].parse().unwrap();
    assert_eq!(
        etcd.create_revision(&lock),
        token,
        "token = create revision"
    );
    let holder: serde_json::Value = serde_json::from_str(&etcd.get(&lock).unwrap()).unwrap();
    assert_eq!(holder["ttl_secs"], 5);
    assert!(holder["holder"]["pid"].is_u64(), "{holder}");
    let json: serde_json::Value =
        serde_json::from_str(&etcd.ctl(&["get", &lock, "-w", "json"])).unwrap();
    let lease_id = json["kvs"][0]["lease"].as_i64().unwrap();
    assert_ne!(lease_id, 0, "the lock key is bound to a lease");
    let ttl = etcd.ctl(&["lease", "timetolive", &format!("{lease_id:x}")]);
    assert!(ttl.contains("granted with TTL(5s)"), "{ttl}");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(etcd.get(&lock), None, "the lock key goes with the lease");
    let rec: serde_json::Value =
        serde_json::from_str(&etcd.get("/initguard/app%2Fmigrate/record").unwrap()).unwrap();
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["token"], token);
    assert!(
        stderr(&out).contains(&format!("store {} (keys under /initguard/)", etcd.url())),
        "{}",
        stderr(&out)
    );
}

/// `kill -9` of the holder: etcd deletes the lock key when its lease expires, a waiter takes it
/// over no earlier than that, under a larger token (the new lock key's create revision).
#[test]
fn killed_holder_is_taken_over_after_its_etcd_lease_expires_with_a_larger_token() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let key = "kill/k";
    let tokens = work.path().join("tokens");
    let started = work.path().join("started");
    let ttl = Duration::from_secs(3);
    let first = format!(
        "echo $INITGUARD_FENCING_TOKEN >> {}; touch {}; sleep 60",
        tokens.display(),
        started.display()
    );
    let mut holder = spawn(run(
        &etcd.url(),
        work.path(),
        key,
        &["--lock-ttl", "3s"],
        &first,
    ));
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    holder.kill().unwrap();
    let _ = holder.wait();
    let killed = Instant::now();
    let out = run(
        &etcd.url(),
        work.path(),
        key,
        &["--lock-ttl", "3s"],
        &format!("echo $INITGUARD_FENCING_TOKEN >> {}", tokens.display()),
    )
    .output()
    .unwrap();
    let waited = killed.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let t: Vec<u64> = lines(&tokens).iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(t.len(), 2, "{t:?}");
    assert!(t[1] > t[0], "the next holder's token is larger: {t:?}");
    eprintln!("took over {waited:.1?} after the kill (TTL {ttl:?})");
    // The holder renewed at most a third of the TTL before it died, and etcd keeps the lease a
    // whole TTL after that: a lower bound that a slow machine cannot break.
    assert!(
        waited >= ttl / 2,
        "took over after {waited:?}, before the lease could expire"
    );
}

/// The etcd server killed while a command runs: renewals fail, the command is killed within
/// the lease (¾ of the TTL after the last renewal at the latest), initguard exits with one
/// clear line; while etcd is down a run exits 69; once it is back, the next run finds the run
/// interrupted and runs.
#[test]
fn server_killed_mid_run_kills_the_command_within_the_lease_and_exits_clearly() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let ttl = Duration::from_secs(3);
    let mut c = run(
        &etcd.url(),
        work.path(),
        "down/k",
        &["--lock-ttl", "3s"],
        &beating(&log, 400),
    );
    c.env("RUN", "a");
    let a = spawn(c);
    wait_for("the command to beat", Duration::from_secs(20), || {
        times(&log, "beat", "a").len() > 3
    });
    etcd.kill();
    let killed_at = now_ns();
    let out = a.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("with etcd killed: exit {}: {}", code(&out), last_line(&out));
    assert_eq!(code(&out), 75, "{err}");
    assert!(last_line(&out).starts_with("initguard: "), "{err}");
    assert!(last_line(&out).contains("lease"), "{err}");
    assert!(times(&log, "end", "a").is_empty(), "the command was killed");
    let last_beat = times(&log, "beat", "a").into_iter().max().unwrap();
    // The last renewal was asked for before the kill: the command must be dead by then + ¾ TTL
    // (the supervisor's deadline); a whole TTL is the bound that matters to others.
    assert!(
        last_beat < killed_at + ttl.as_nanos(),
        "the command ran {} ms past the kill",
        (last_beat - killed_at) / 1_000_000
    );
    let n = times(&log, "beat", "a").len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(times(&log, "beat", "a").len(), n, "the command is dead");

    let started = Instant::now();
    let out = run(&etcd.url(), work.path(), "down/k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    eprintln!(
        "a run with etcd down exited 69 after {:.1?}",
        started.elapsed()
    );

    etcd.restart();
    let mut c = run(
        &etcd.url(),
        work.path(),
        "down/k",
        &["--lock-ttl", "3s"],
        &beating(&log, 1),
    );
    c.env("RUN", "b");
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(times(&log, "end", "b").len(), 1);
}

/// A holder cut off from etcd by a partition (a proxy that stops forwarding, connections left
/// open): its command is killed before etcd lets its lease expire, so a waiter that reaches etcd
/// starts only after the partitioned command's last beat. The cut-off holder exits 75.
#[test]
fn partitioned_holder_is_killed_before_the_waiter_starts() {
    let Some(etcd) = Etcd::start() else { return };
    let backend: std::net::SocketAddr = etcd.endpoint().parse().unwrap();
    let proxy = Proxy::start(backend);
    let via_proxy = format!("etcd://127.0.0.1:{}", proxy.port);
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let script = beating(&log, 200);
    let mut c = run(
        &via_proxy,
        work.path(),
        "split/k",
        &["--lock-ttl", "3s"],
        &script,
    );
    c.env("RUN", "a");
    let a = spawn(c);
    wait_for("a to start", Duration::from_secs(20), || {
        !times(&log, "start", "a").is_empty()
    });
    let mut c = run(
        &etcd.url(),
        work.path(),
        "split/k",
        &["--lock-ttl", "3s"],
        &script,
    );
    c.env("RUN", "b");
    let b = spawn(c);
    // Let a renewal or two through, then cut a off.
    std::thread::sleep(Duration::from_millis(1500));
    proxy.blackhole(true);
    let out_a = a.wait_with_output().unwrap();
    let out_b = b.wait_with_output().unwrap();
    assert_eq!(code(&out_a), 75, "a: {}", stderr(&out_a));
    assert!(last_line(&out_a).contains("lease"), "{}", stderr(&out_a));
    assert_eq!(code(&out_b), 0, "b: {}", stderr(&out_b));
    assert!(times(&log, "end", "a").is_empty(), "a's command was killed");
    let a_last = times(&log, "beat", "a").into_iter().max().unwrap();
    let b_first = times(&log, "start", "b")[0];
    assert!(
        a_last < b_first,
        "runs overlap: a beat at {a_last}, b started at {b_first}"
    );
    eprintln!(
        "a's command last beat {} ms before b started",
        (b_first - a_last) / 1_000_000
    );
}

/// With etcd authentication on: no user, a wrong password, or a user without permission on the
/// prefix each exit 78 with one line that names the fix and never the password; the right
/// password from a file works; the etcd variables are not passed to the command.
#[test]
fn auth_failures_exit_78_without_echoing_the_password() {
    let Some(mut etcd) = Etcd::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let right = "app-pw-5d1e9";
    etcd.enable_auth(right);
    let wrong = "Wr0ng-etcd-pw-77";
    let pwfile = work.path().join("pw");

    let out = run(&etcd.url(), work.path(), "auth/k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "no user: {}", stderr(&out));

    std::fs::write(&pwfile, format!("{wrong}\n")).unwrap();
    let out = run(&etcd.url(), work.path(), "auth/k", &[], "true")
        .env("INITGUARD_ETCD_USER", "app")
        .env("INITGUARD_STORE_PASSWORD_FILE", &pwfile)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 78, "wrong password: {err}");
    assert!(!err.contains(wrong), "password echoed: {err}");
    assert!(err.contains("credentials"), "{err}");

    let out = run(&etcd.url(), work.path(), "auth/k", &[], "true")
        .env("INITGUARD_ETCD_USER", "app")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "user without a password: {}", stderr(&out));
    assert!(
        stderr(&out).contains("--store-password-file"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&pwfile, format!("{right}\n")).unwrap();
    let env_file = work.path().join("env");
    let out = run(
        &etcd.url(),
        work.path(),
        "auth/k",
        &[],
        &format!("env > {}", env_file.display()),
    )
    .env("INITGUARD_ETCD_USER", "app")
    .env("INITGUARD_STORE_PASSWORD_FILE", &pwfile)
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("INITGUARD_ETCD_USER"), "{env}");
    assert!(!env.contains("INITGUARD_STORE_PASSWORD_FILE"), "{env}");
    // The user from the URL, and the password file from the flag, work alike.
    let url = format!("etcd://app@{}", etcd.endpoint());
    let out = ig(&url, work.path())
        .arg("--store-password-file")
        .arg(&pwfile)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // app may only touch /initguard/: another prefix is refused, and says how to grant it.
    let other = format!("{}?prefix=/elsewhere/", etcd.url());
    let out = run(&other, work.path(), "auth/k", &[], "true")
        .env("INITGUARD_ETCD_USER", "app")
        .env("INITGUARD_STORE_PASSWORD_FILE", &pwfile)
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("grant-permission"),
        "{}",
        stderr(&out)
    );
}

/// A record that is not a record: exit 65, nothing run, the value left exactly as it was (not
/// even a lock taken over it by `status`); `reset` replaces it and the next run runs.
#[test]
fn corrupt_record_exits_65_untouched_and_reset_repairs_it() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}", count.display());
    let key = "bad/k";
    let rk = record_key(PREFIX, &global(key));
    etcd.put(&rk, "{\"schema\": 1, \"nonsense\": true}");
    let before = etcd.ctl(&["get", &rk, "-w", "json"]);
    let out = run(&etcd.url(), work.path(), key, &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        last_line(&out).contains(&format!("etcd key {rk}")),
        "{}",
        stderr(&out)
    );
    assert!(
        last_line(&out).contains("initguard reset bad/k"),
        "{}",
        stderr(&out)
    );
    assert!(!count.exists(), "nothing ran");
    let status = ig(&etcd.url(), work.path()).arg("status").output().unwrap();
    assert!(stderr(&status).contains("corrupt"), "{}", stderr(&status));
    let after = etcd.ctl(&["get", &rk, "-w", "json"]);
    let kv = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap()["kvs"].clone();
    assert_eq!(kv(&after), kv(&before), "the corrupt record was written");
    let out = ig(&etcd.url(), work.path())
        .args(["reset", key])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(&etcd.url(), work.path(), key, &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&count).len(), 1);
}

/// `?prefix=` keeps stores apart, nested ones too; keys that differ only in their separators
/// (`a/b`, `a.b`, `a-b`, `a_b`) and scope instances each get their own record.
#[test]
fn prefixes_and_look_alike_keys_never_share_records() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}", count.display());
    let outer = format!("{}?prefix=/t1", etcd.url());
    let inner = format!("{}?prefix=/t1/a/", etcd.url());
    let keys = ["a/b", "a.b", "a-b", "a_b", "a"];
    for url in [&outer, &inner] {
        for key in keys {
            let out = run(url, work.path(), key, &[], &script).output().unwrap();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
        }
        let out = run(url, work.path(), "a", &["--scope", "pod"], &script)
            .env("POD_UID", "b")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(lines(&count).len(), 12, "every key ran once in each prefix");
    for url in [&outer, &inner] {
        let out = ig(url, work.path())
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 6, "{url}: {all}");
    }
    let stored = etcd.get_prefix("/t1/");
    assert_eq!(stored.len(), 12, "12 records, no lock left: {stored:?}");
}

/// `etcds://`: the server's certificate checked against INITGUARD_ETCD_CA_FILE, a client
/// certificate from INITGUARD_ETCD_CERT_FILE/_KEY_FILE; without the CA the server is not
/// trusted; TLS files with a plain etcd:// URL are a configuration error.
#[test]
fn tls_with_a_ca_and_a_client_certificate() {
    let Some(etcd) = Etcd::start_tls() else {
        return;
    };
    let tls = etcd.tls.as_ref().unwrap();
    let work = tempfile::tempdir().unwrap();
    let url = etcd.url();
    assert!(url.starts_with("etcds://"));
    let with = |c: &mut Command, ca: bool, cert: bool| {
        if ca {
            c.env("INITGUARD_ETCD_CA_FILE", &tls.ca);
        }
        if cert {
            c.env("INITGUARD_ETCD_CERT_FILE", &tls.client_cert)
                .env("INITGUARD_ETCD_KEY_FILE", &tls.client_key);
        }
    };
    let env_file = work.path().join("env");
    let script = format!("env > {}", env_file.display());
    let mut c = run(&url, work.path(), "tls/k", &[], &script);
    with(&mut c, true, true);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains("INITGUARD_ETCD_"),
        "the command got them: {env}"
    );
    let mut c = run(&url, work.path(), "tls/k5", &["--pass-store-env"], &script);
    with(&mut c, true, true);
    assert_eq!(code(&c.output().unwrap()), 0);
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains("INITGUARD_ETCD_CA_FILE="), "{env}");

    let mut c = run(&url, work.path(), "tls/k2", &[], "true");
    with(&mut c, false, true);
    let out = c.output().unwrap();
    assert_ne!(code(&out), 0, "an untrusted server: {}", stderr(&out));
    eprintln!("without the CA: exit {}: {}", code(&out), last_line(&out));

    let mut c = run(&url, work.path(), "tls/k3", &[], "true");
    with(&mut c, true, false);
    let out = c.output().unwrap();
    assert_ne!(code(&out), 0, "no client certificate: {}", stderr(&out));

    let plain = format!("etcd://{}", etcd.endpoint());
    let mut c = run(&plain, work.path(), "tls/k4", &[], "true");
    with(&mut c, true, false);
    let out = c.output().unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("etcds://"), "{}", stderr(&out));
}

#[test]
fn unreachable_etcd_exits_69_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let url = format!("etcd://127.0.0.1:{port}");
    let started = Instant::now();
    let out = run(&url, work.path(), "k", &[], "true").output().unwrap();
    let took = started.elapsed();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("unreachable") && last_line(&out).contains("tries"),
        "{}",
        stderr(&out)
    );
    eprintln!("unreachable etcd reported after {} ms", took.as_millis());
    // Documented bound (README): every call gives up within 10 s; 30 s for a loaded machine.
    assert!(took < Duration::from_secs(30));
}

#[test]
fn a_password_in_the_url_is_refused_and_never_printed() {
    let work = tempfile::tempdir().unwrap();
    let out = run(
        "etcd://root:S3cretPW@127.0.0.1:1",
        work.path(),
        "k",
        &[],
        "true",
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(!stderr(&out).contains("S3cretPW"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--store-password-file"),
        "{}",
        stderr(&out)
    );
    // Nor beside the user in INITGUARD_ETCD_USER: refused before connecting, never printed.
    let out = run("etcd://127.0.0.1:1", work.path(), "k", &[], "true")
        .env("INITGUARD_ETCD_USER", "root:S3cretPW")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(!stderr(&out).contains("S3cretPW"), "{}", stderr(&out));
}

/// An output tail that escapes to more than etcd takes in one request (1.5 MiB) cannot keep the
/// success from being recorded: the record is trimmed to its cap (the newest output kept), and
/// `status` says so.
#[test]
fn a_huge_tail_is_trimmed_to_the_cap_and_the_success_recorded() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    // 1 MiB of control characters: six bytes each in JSON.
    let script = "head -c 1048000 /dev/zero | tr '\\0' '\\1'; printf THE-END";
    let out = run(
        &etcd.url(),
        work.path(),
        "big/k",
        &["--tail-bytes", "1048576"],
        script,
    )
    .stdout(Stdio::null())
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rec = etcd.get(&record_key(PREFIX, &global("big/k"))).unwrap();
    assert!(
        rec.len() <= initguard::store::etcd::MAX_RECORD_BYTES,
        "{}",
        rec.len()
    );
    let rec: serde_json::Value = serde_json::from_str(&rec).unwrap();
    assert_eq!(rec["state"], "succeeded");
    assert!(
        rec["tail"].as_str().unwrap().ends_with("THE-END"),
        "newest output kept"
    );
    let table = ig(&etcd.url(), work.path()).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("trimmed to fit this store's record cap of 1024 KiB"),
        "{text}"
    );
}

/// Requests etcd has served of `method` (its Prometheus counter on the client port).
fn served(etcd: &Etcd, method: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(etcd.endpoint()).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("grpc_server_started_total{")
                && l.contains(&format!("grpc_method=\"{method}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waiters watch the task's keys: while a holder runs (renewing every 10 s of a 30 s lease),
/// five waiters send etcd no reads at all; each wakes once, when the holder's success is written.
#[test]
fn waiters_watch_and_send_no_reads_while_they_wait() {
    let Some(etcd) = Etcd::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let script = format!("touch {}; sleep 4", started.display());
    let holder = spawn(run(&etcd.url(), work.path(), "watch/k", &[], &script));
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    let waiters: Vec<Child> = (0..5)
        .map(|_| spawn(run(&etcd.url(), work.path(), "watch/k", &[], &script)))
        .collect();
    // Once every waiter has looked and is waiting.
    std::thread::sleep(Duration::from_millis(1500));
    let (ranges, txns) = (served(&etcd, "Range"), served(&etcd, "Txn"));
    assert!(
        ranges > 0 && txns > 0,
        "the counters count: {ranges} {txns}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (ranges2, txns2) = (served(&etcd, "Range"), served(&etcd, "Txn"));
    eprintln!(
        "in 2 s of waiting: {} reads, {} txns",
        ranges2 - ranges,
        txns2 - txns
    );
    assert_eq!(ranges2 - ranges, 0, "waiters read while they waited");
    assert_eq!(txns2 - txns, 0, "waiters tried to take while they waited");
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for w in waiters {
        let out = w.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    }
}
