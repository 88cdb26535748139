//! `KubeStore`: the `Store` trait over one `coordination.k8s.io/v1` Lease per task. The Lease is
//! the lock (client-go semantics, token = `leaseTransitions`) and one of its annotations is the
//! record, so taking, renewing and writing are each ONE replace guarded by `resourceVersion`.
//! Must never write without that guard, and never decide expiry from another node's clock.

use super::api::{self, ApiError, Op};
use super::client::{self, Connection};
use super::events::{EventSink, PodRef};
use super::lease::{self, Observer, Verdict};
use super::names::{ANNOTATION_RECORD, ANNOTATION_TASK, LABEL_MANAGED_BY, MANAGED_BY, lease_name};
use crate::record::Record;
use crate::store::bounded::bounded_json;
use crate::store::{Attempt, Lease, Listing, Observation, Store, StoreError, TaskEvent, jittered};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use kube::Api;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest record kept in the annotation. The API server caps all annotations of an object at
/// 256 KiB together; a quarter of that leaves room for everything else and for kubectl's
/// `last-applied-configuration` should someone ever apply the Lease.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Base pause between looks at a busy Lease when watching is not possible; jittered to 0.5–1.5×,
/// so at most 0.9 s.
const POLL: Duration = Duration::from_millis(600);
/// Longest a release may take.
const RELEASE_BUDGET: Duration = Duration::from_secs(5);
/// Conflicts in a row before an update gives up (each one means another writer got in first).
const MAX_CONFLICTS: u32 = 20;

pub struct KubeStore {
    api: Api<KubeLease>,
    namespace: String,
    source: String,
    server: String,
    events: EventSink,
    /// Writes name initguard as field manager, so `kubectl get lease -o yaml` shows who wrote.
    pp: PostParams,
    /// Each acquisition under way, by Lease name (see `Pending`).
    pending: Mutex<HashMap<String, Pending>>,
    /// Set once the API server refused a watch (RBAC without `watch`): poll from then on.
    no_watch: AtomicBool,
}

/// What one acquisition remembers between looks: its identity (so that a take whose answer was
/// lost is recognised as ours), when its first take was sent, and client-go's observation of the
/// Lease (expiry is judged by how long it stayed unchanged as seen here).
struct Pending {
    identity: String,
    started: Instant,
    first_sent: Option<Instant>,
    observer: Observer,
}

/// `Lease::handle` of this store: the Lease as we last wrote it and when that write was sent.
struct Held {
    name: String,
    /// `holderIdentity`: the holder's identity plus a per-acquisition nonce, so two processes of
    /// one Pod (both pid 1 in their containers) can never pass for each other.
    identity: String,
    state: Mutex<HeldState>,
}

struct HeldState {
    lease: KubeLease,
    /// When the last successful write of ours was *sent*: nobody can see the lease lapse before
    /// this instant plus the lease duration, however late the answer came back.
    renewed_at: Instant,
}

impl Held {
    fn snapshot(&self) -> (KubeLease, Instant) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.lease.clone(), s.renewed_at)
    }

    fn stored(&self, lease: KubeLease, sent: Option<Instant>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.lease = lease;
        if let Some(sent) = sent {
            s.renewed_at = sent;
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGED_BY.to_string()),
        ..PostParams::default()
    }
}

/// How long before its lease could lapse a holder stops trying to renew and reports it lost, so
/// the guard can stop the command while the lease is still certainly ours.
fn renew_margin(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(300)).min(ttl / 2)
}

impl KubeStore {
    /// Connect as the environment says (see `client::connect`); `namespace` overrides the Pod's
    /// or the kubeconfig context's.
    pub async fn open(
        namespace: Option<&str>,
        context: Option<&str>,
    ) -> Result<KubeStore, StoreError> {
        Ok(KubeStore::new(client::connect(namespace, context).await?))
    }

    /// Connect through the kubeconfig at `path`.
    pub async fn open_kubeconfig(
        path: &Path,
        namespace: Option<&str>,
        context: Option<&str>,
    ) -> Result<KubeStore, StoreError> {
        Ok(KubeStore::new(
            client::connect_kubeconfig(path, namespace, context).await?,
        ))
    }

    fn new(conn: Connection) -> KubeStore {
        let pod = PodRef::from_env(&conn.namespace);
        KubeStore {
            api: Api::namespaced(conn.client.clone(), &conn.namespace),
            events: EventSink::new(conn.client, pod),
            namespace: conn.namespace,
            source: conn.source,
            server: conn.server,
            pp: post_params(),
            pending: Mutex::new(HashMap::new()),
            no_watch: AtomicBool::new(false),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn url(&self) -> String {
        format!("kubernetes:{}", self.namespace)
    }

    fn err(&self, e: ApiError) -> StoreError {
        match e.into_store(&self.url(), &self.namespace) {
            StoreError::Unreachable { store, reason } => StoreError::Unreachable {
                store,
                reason: format!(
                    "{reason}; check that the API server {} answers from here (network \
                     policy, proxy, DNS)",
                    self.server
                ),
            },
            other => other,
        }
    }

    fn location(&self, name: &str) -> String {
        format!(
            "Lease {}/{name} (annotation {ANNOTATION_RECORD})",
            self.namespace
        )
    }

    async fn get(
        &self,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<Option<KubeLease>, ApiError> {
        api::call(Op::lease("get"), deadline, || self.api.get_opt(name)).await
    }

    /// A Lease name is a lossy function of the task; the task annotation says whose it really is.
    fn check_task(&self, id: &TaskId, name: &str, lease: &KubeLease) -> Result<(), StoreError> {
        let task = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_TASK));
        match task {
            Some(t) if *t != id.storage_name() => Err(StoreError::Corrupt {
                key: id.key.to_string(),
                location: self.location(name),
                reason: format!("the Lease belongs to task {t:?} (name collision)"),
            }),
            _ => Ok(()),
        }
    }

    fn parse_record(
        &self,
        id: &TaskId,
        name: &str,
        lease: &KubeLease,
    ) -> Result<Option<Record>, StoreError> {
        self.check_task(id, name, lease)?;
        let Some(json) = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RECORD))
        else {
            return Ok(None);
        };
        Record::from_json(json.as_bytes())
            .map(Some)
            .map_err(|e| StoreError::unreadable_record(id.key.as_str(), self.location(name), e))
    }

    fn handle<'a>(&self, lease: &'a Lease) -> Result<&'a Held, StoreError> {
        lease.handle.downcast_ref::<Held>().ok_or_else(|| {
            StoreError::lease_lost(lease, "the lease was not taken by the Kubernetes store")
        })
    }

    fn took(
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
        name: String,
        identity: String,
        stored: KubeLease,
        sent: Instant,
    ) -> Lease {
        let token = lease::token(&stored);
        tracing::debug!(key = %id, token, lease = %name, "lease taken");
        Lease {
            id: id.clone(),
            token,
            holder: holder.clone(),
            ttl,
            handle: Box::new(Held {
                name,
                identity,
                state: Mutex::new(HeldState {
                    lease: stored,
                    renewed_at: sent,
                }),
            }),
        }
    }

    /// Apply `edit` to the Lease we hold and replace it, guarded by its resourceVersion. On a
    /// conflict, re-read: still ours under our token → edit that version; else the lease is lost.
    async fn update_held(
        &self,
        lease: &Lease,
        deadline: Option<Instant>,
        edit: &(dyn Fn(&mut KubeLease) + Sync),
    ) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        let lost = |reason: String| StoreError::lease_lost(lease, reason);
        for _ in 0..MAX_CONFLICTS {
            let (mut next, _) = held.snapshot();
            if !lease::owned_by(&next, &held.identity, lease.token) {
                return Err(lost("the Lease names another holder".into()));
            }
            edit(&mut next);
            let sent = Instant::now();
            let res = api::call(Op::lease("update"), deadline, || {
                self.api.replace(&held.name, &self.pp, &next)
            })
            .await;
            match res {
                Ok(stored) => {
                    held.stored(stored, Some(sent));
                    return Ok(());
                }
                Err(ApiError::Conflict) => {
                    match self
                        .get(&held.name, deadline)
                        .await
                        .map_err(|e| self.err(e))?
                    {
                        None => return Err(lost("the Lease was deleted".into())),
                        Some(fresh) if lease::owned_by(&fresh, &held.identity, lease.token) => {
                            held.stored(fresh, None);
                        }
                        Some(fresh) => {
                            let by = lease::holder(&fresh)
                                .map_or_else(|| "nobody".to_string(), |h| h.to_string());
                            return Err(lost(format!(
                                "the Lease is now held by {by} under token {}",
                                lease::token(&fresh)
                            )));
                        }
                    }
                }
                Err(ApiError::NotFound) => return Err(lost("the Lease was deleted".into())),
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(self.err(ApiError::Conflict))
    }

    /// A busy Lease as the guard sees it; `left`: how long it stays held at the least.
    fn observation(
        &self,
        id: &TaskId,
        name: &str,
        current: &KubeLease,
        left: Option<Duration>,
    ) -> Observation {
        Observation {
            holder: lease::holder(current),
            held_for: lease::held_for_display(current),
            version: current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
            // A corrupt record is the guard's to report, from its own read.
            record: self
                .parse_record(id, name, current)
                .ok()
                .flatten()
                .map(Box::new),
            ttl: lease::lease_duration(current),
            lapses_in: left,
        }
    }

    /// Wait for the Lease `name` to change from resourceVersion `version`, by watch; `false`
    /// when no watch could be had (refused, expired, broken), so the caller polls instead.
    async fn watch_change(&self, name: &str, version: &str, until: Instant) -> bool {
        if self.no_watch.load(Ordering::Relaxed) || version.is_empty() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        // The server ends the watch itself a little after we stop caring.
        let secs = u32::try_from(left.as_secs() + 1).unwrap_or(u32::MAX).max(1);
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(secs);
        let watching = async {
            let stream = match self.api.watch(&params, version).await {
                Ok(s) => s,
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    tracing::info!(
                        "the API server refused to watch Leases (RBAC); looking again every second                          instead (re-apply `initguard k8s rbac` to grant watch)"
                    );
                    self.no_watch.store(true, Ordering::Relaxed);
                    return false;
                }
                Err(_) => return false,
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Bookmark(_)) => continue,
                    Ok(WatchEvent::Error(_)) | Err(_) => return false,
                    Ok(_) => return true,
                }
            }
            // Closed at its timeout without a change: the caller looks again.
            true
        };
        tokio::time::timeout(left, watching).await.unwrap_or(true)
    }

    fn bounded_json(&self, record: &Record) -> Result<String, StoreError> {
        bounded_json(record, MAX_RECORD_BYTES, &self.url(), "a Lease annotation")
    }
}

#[async_trait]
impl Store for KubeStore {
    fn describe(&self) -> String {
        format!("{} ({})", self.url(), self.source)
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let name = lease_name(id);
        match self.get(&name, None).await.map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(l) => self.parse_record(id, &name, &l),
        }
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        let name = lease_name(id);
        let mut p = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name)
            .unwrap_or_else(|| Pending {
                identity: format!("{}_{:08x}", holder.identity(), rand::random::<u32>()),
                started: Instant::now(),
                first_sent: None,
                observer: Observer::default(),
            });
        let identity = p.identity.clone();
        for _ in 0..MAX_CONFLICTS {
            let current = self.get(&name, None).await.map_err(|e| self.err(e))?;
            let Some(current) = current else {
                let fresh = lease::new_held(&name, &id.storage_name(), &identity, holder, ttl);
                let sent = Instant::now();
                p.first_sent.get_or_insert(sent);
                let res = api::call(Op::lease("create"), None, || {
                    self.api.create(&self.pp, &fresh)
                })
                .await;
                match res {
                    Ok(stored) => {
                        let lease = Self::took(id, holder, ttl, name, identity, stored, sent);
                        return Ok(Attempt::Taken(lease));
                    }
                    // Someone else created it first (or our own retry did): look again.
                    Err(ApiError::AlreadyExists | ApiError::Conflict) => continue,
                    Err(e) => return Err(self.err(e)),
                }
            };
            self.check_task(id, &name, &current)?;
            if lease::holder_identity(&current) == Some(identity.as_str()) {
                // A take of ours went through although its answer was lost on the way back.
                let sent = p.first_sent.unwrap_or(p.started);
                let lease = Self::took(id, holder, ttl, name, identity, current, sent);
                return Ok(Attempt::Taken(lease));
            }
            let verdict = p.observer.judge(&current, Instant::now(), ttl);
            let left = match verdict {
                Verdict::Free | Verdict::Lapsed => {
                    if verdict == Verdict::Lapsed {
                        let by = lease::holder(&current)
                            .map_or_else(|| "an unknown holder".into(), |h| h.to_string());
                        tracing::info!(
                            key = %id,
                            "lease of {id} held by {by} was not renewed for its duration; taking it over"
                        );
                    }
                    let mut next = current.clone();
                    let Some(_token) = lease::take(&mut next, &identity, holder, ttl) else {
                        return Err(StoreError::Corrupt {
                            key: id.key.to_string(),
                            location: self.location(&name),
                            reason: "leaseTransitions cannot grow any further".into(),
                        });
                    };
                    let sent = Instant::now();
                    p.first_sent.get_or_insert(sent);
                    let res = api::call(Op::lease("update"), None, || {
                        self.api.replace(&name, &self.pp, &next)
                    })
                    .await;
                    match res {
                        Ok(stored) => {
                            let lease = Self::took(id, holder, ttl, name, identity, stored, sent);
                            return Ok(Attempt::Taken(lease));
                        }
                        // Another acquirer won the race, or the Lease went away: decide again.
                        Err(ApiError::Conflict | ApiError::NotFound) => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Verdict::Held { left } => left,
            };
            let seen = self.observation(id, &name, &current, Some(left));
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, p);
            return Ok(Attempt::Busy(seen));
        }
        Err(self.err(ApiError::Unreachable {
            op: Op::lease("update"),
            tries: MAX_CONFLICTS,
            reason: "every take lost a race with another writer".into(),
        }))
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        let name = lease_name(id);
        if !self.watch_change(&name, &seen.version, until).await {
            let pause = jittered(POLL).min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let name = lease_name(id);
        let Some(current) = self.get(&name, None).await.map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        self.check_task(id, &name, &current)?;
        if lease::holder_identity(&current).is_none() {
            return Ok(None);
        }
        Ok(Some(self.observation(id, &name, &current, None)))
    }

    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError> {
        let name = lease_name(id);
        let Some(current) = self.get(&name, None).await.map_err(|e| self.err(e))? else {
            return Ok(false);
        };
        if current.metadata.resource_version.as_deref() != Some(seen.version.as_str()) {
            return Ok(false);
        }
        // Replaced only if it is still exactly the Lease watched (resourceVersion-checked).
        let mut next = current;
        lease::release(&mut next);
        let res = api::call(Op::lease("update"), None, || {
            self.api.replace(&name, &self.pp, &next)
        })
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(ApiError::Conflict | ApiError::NotFound) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        let (_, renewed_at) = held.snapshot();
        // Past this instant another holder may soon take over; report the lease lost before it.
        let deadline = renewed_at + lease.ttl.saturating_sub(renew_margin(lease.ttl));
        loop {
            match self.update_held(lease, Some(deadline), &lease::renew).await {
                Err(StoreError::Unreachable { reason, .. }) => {
                    if Instant::now() + POLL / 2 >= deadline {
                        return Err(StoreError::lease_lost(
                            lease,
                            format!(
                                "could not renew it for {}ms ({reason}); stopping before it can \
                                 lapse",
                                renewed_at.elapsed().as_millis()
                            ),
                        ));
                    }
                    tokio::time::sleep(jittered(POLL / 2)).await;
                }
                other => return other,
            }
        }
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        let json = self.bounded_json(record)?;
        let edit = move |l: &mut KubeLease| {
            lease::renew(l);
            l.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(ANNOTATION_RECORD.to_string(), json.clone());
        };
        self.update_held(lease, None, &edit).await
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        // Bounded tighter than other writes: a Lease we fail to give up lapses on its own, and a
        // holder that lost the API server should not linger on the way out.
        let deadline = Instant::now() + RELEASE_BUDGET;
        match self
            .update_held(&lease, Some(deadline), &lease::release)
            .await
        {
            Ok(()) | Err(StoreError::LeaseLost { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let params = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let leases = api::call(Op::lease("list"), None, || self.api.list(&params))
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Listing::default();
        for l in &leases.items {
            let Some(id) = l
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_TASK))
                .and_then(|t| TaskId::from_storage_name(t))
            else {
                continue;
            };
            let name = l.metadata.name.clone().unwrap_or_default();
            let read = self.parse_record(&id, &name, l);
            out.add(id, read)?;
        }
        out.records
            .sort_by(|a, b| (&a.key, &a.instance).cmp(&(&b.key, &b.instance)));
        Ok(out)
    }

    async fn event(&self, id: &TaskId, kind: TaskEvent, message: &str) {
        self.events.send(id, kind, message).await;
    }

    fn record_limit(&self) -> Option<usize> {
        Some(MAX_RECORD_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_gives_up_well_before_the_lease_lapses() {
        for secs in [1u64, 2, 5, 15, 60] {
            let ttl = Duration::from_secs(secs);
            let m = renew_margin(ttl);
            assert!(m >= Duration::from_millis(300).min(ttl / 2), "{secs}");
            assert!(m <= ttl / 2, "{secs}");
        }
    }
}
