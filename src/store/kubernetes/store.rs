//! `KubeStore`: the `Store` trait over one `coordination.k8s.io/v1` Lease per task. The Lease is
//! the lock (client-go semantics, token = `leaseTransitions`) and one of its annotations is the
//! record, so taking, renewing and writing are each ONE replace guarded by `resourceVersion`.
//! Must never write without that guard, and never decide expiry from another node's clock.

use super::api::{self, ApiError, Op};
use super::client::{self, Connection};
use super::events::{EventSink, PodRef};
use super::lease::{self, Observer, Verdict};
use super::names::{ANNOTATION_RECORD, ANNOTATION_TASK, LABEL_MANAGED_BY, MANAGED_BY, lease_name};
use crate::record::{Record, RecordError};
use crate::store::liveness::{self, LOOK_EVERY, Watched};
use crate::store::{
    AcquireOpts, Busy, Lease, Listing, ReleaseOutcome, Store, StoreError, TaskEvent, WaitLog,
    jittered, next_wait,
};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease as KubeLease;
use kube::Api;
use kube::api::{ListParams, PostParams};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest record kept in the annotation. The API server caps all annotations of an object at
/// 256 KiB together; a quarter of that leaves room for everything else and for kubectl's
/// `last-applied-configuration` should someone ever apply the Lease.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Base pause between looks at a busy Lease; jittered to 0.5–1.5×, so at most 0.9 s.
const POLL: Duration = Duration::from_millis(600);
/// Longest a release may take.
const RELEASE_BUDGET: Duration = Duration::from_secs(5);
/// Lease duration assumed by `release` for a Lease that states none (edited by hand): the
/// default `--lock-ttl`.
const FALLBACK_TTL: Duration = Duration::from_secs(30);
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
            .map_err(|e| match e {
                RecordError::NewerSchema { found } => StoreError::NewerSchema {
                    key: id.key.to_string(),
                    location: self.location(name),
                    found,
                },
                other => StoreError::Corrupt {
                    key: id.key.to_string(),
                    location: self.location(name),
                    reason: other.to_string(),
                },
            })
    }

    fn handle<'a>(&self, lease: &'a Lease) -> Result<&'a Held, StoreError> {
        lease
            .handle
            .downcast_ref::<Held>()
            .ok_or_else(|| StoreError::LeaseLost {
                key: lease.id.to_string(),
                token: lease.token,
                reason: "the lease was not taken by the Kubernetes store".into(),
            })
    }

    fn took(
        id: &TaskId,
        holder: &Holder,
        opts: AcquireOpts,
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
            ttl: opts.ttl,
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
        let lost = |reason: String| StoreError::LeaseLost {
            key: lease.id.to_string(),
            token: lease.token,
            reason,
        };
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

    /// What `release_holder` concludes when the Lease changed while it watched (`within`: how
    /// long ago at most): whoever wrote it is alive, so nothing is released.
    fn judge_changed(
        &self,
        id: &TaskId,
        name: &str,
        now: Option<&KubeLease>,
        me: &Holder,
        within: Duration,
    ) -> Result<ReleaseOutcome, StoreError> {
        let Some(now) = now else {
            return Ok(ReleaseOutcome::NotHeld);
        };
        self.check_task(id, name, now)?;
        Ok(match lease::holder(now) {
            None => ReleaseOutcome::NotHeld,
            Some(h) if !me.same_owner(&h) => ReleaseOutcome::HeldByOther { holder: Some(h) },
            Some(h) => ReleaseOutcome::StillAlive {
                holder: h,
                renewed_within: within,
            },
        })
    }

    /// The record as the annotation keeps it: compact JSON of at most `MAX_RECORD_BYTES`.
    fn bounded_json(&self, record: &Record) -> Result<String, StoreError> {
        let (json, trimmed) =
            bound_record(record, MAX_RECORD_BYTES).map_err(|e| StoreError::Corrupt {
                key: record.key.clone(),
                location: self.url(),
                reason: format!("cannot encode the record: {e}"),
            })?;
        if json.len() > MAX_RECORD_BYTES {
            return Err(StoreError::Unsupported {
                store: self.url(),
                what: format!(
                    "a record of {} bytes even without output tail and history",
                    json.len()
                ),
            });
        }
        if let Some(t) = trimmed {
            tracing::warn!(
                key = %record.key,
                "record trimmed to fit {} KiB in a Lease annotation: output tail kept {} of {} \
                 bytes, {} oldest history entries dropped",
                MAX_RECORD_BYTES / 1024,
                t.tail_kept,
                record.tail.len(),
                t.history_dropped
            );
        }
        Ok(json)
    }
}

/// What `bound_record` had to cut.
#[derive(Debug, PartialEq, Eq)]
struct Trimmed {
    tail_kept: usize,
    history_dropped: usize,
}

/// `record` as compact JSON, cut down towards `limit` bytes: the output tail first (its newest
/// bytes stay: they say why a run failed), then the oldest history entries. The result is still
/// over `limit` only when even the bare record is.
fn bound_record(
    record: &Record,
    limit: usize,
) -> Result<(String, Option<Trimmed>), serde_json::Error> {
    let mut r = record.clone();
    // Says whether this write was cut, whatever an earlier write of the record said.
    r.trimmed = false;
    let mut json = serde_json::to_string(&r)?;
    if json.len() <= limit {
        return Ok((json, None));
    }
    r.trimmed = true;
    json = serde_json::to_string(&r)?;
    while json.len() > limit && !r.tail.is_empty() {
        // Escaping can make a byte of tail cost up to six in JSON: cut at least an eighth each
        // round so that this ends quickly whatever the output was.
        let over = json.len() - limit;
        let keep = r
            .tail
            .len()
            .saturating_sub(over.max(r.tail.len() / 8).max(1));
        let tail = std::mem::take(&mut r.tail);
        r.set_tail(tail.as_bytes(), keep);
        json = serde_json::to_string(&r)?;
    }
    let mut history_dropped = 0;
    while json.len() > limit && !r.history.is_empty() {
        // Drop about as many entries as the excess needs (entries are alike in size), at least one.
        let per_entry = serde_json::to_string(&r.history)?.len() / r.history.len();
        let n = ((json.len() - limit) / per_entry.max(1))
            .max(1)
            .min(r.history.len());
        r.history.drain(..n);
        history_dropped += n;
        json = serde_json::to_string(&r)?;
    }
    let trimmed = Trimmed {
        tail_kept: r.tail.len(),
        history_dropped,
    };
    Ok((json, Some(trimmed)))
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

    async fn acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        opts: AcquireOpts,
    ) -> Result<Lease, StoreError> {
        let name = lease_name(id);
        let identity = format!("{}_{:08x}", holder.identity(), rand::random::<u32>());
        let started = Instant::now();
        let mut observer = Observer::default();
        let mut log = WaitLog::new(id);
        // When our first take was sent: if its answer is lost, this is the conservative start.
        let mut first_sent: Option<Instant> = None;
        loop {
            let current = self.get(&name, None).await.map_err(|e| self.err(e))?;
            let Some(current) = current else {
                let fresh = lease::new_held(&name, &id.storage_name(), &identity, holder, opts.ttl);
                let sent = Instant::now();
                first_sent.get_or_insert(sent);
                let res = api::call(Op::lease("create"), None, || {
                    self.api.create(&self.pp, &fresh)
                })
                .await;
                match res {
                    Ok(stored) => {
                        return Ok(Self::took(id, holder, opts, name, identity, stored, sent));
                    }
                    // Someone else created it first (or our own retry did): look again.
                    Err(ApiError::AlreadyExists | ApiError::Conflict) => continue,
                    Err(e) => return Err(self.err(e)),
                }
            };
            self.check_task(id, &name, &current)?;
            if lease::holder_identity(&current) == Some(identity.as_str()) {
                // A take of ours went through although its answer was lost on the way back.
                let sent = first_sent.unwrap_or(started);
                return Ok(Self::took(id, holder, opts, name, identity, current, sent));
            }
            let verdict = observer.judge(&current, Instant::now(), opts.ttl);
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
                    let Some(_token) = lease::take(&mut next, &identity, holder, opts.ttl) else {
                        return Err(StoreError::Corrupt {
                            key: id.key.to_string(),
                            location: self.location(&name),
                            reason: "leaseTransitions cannot grow any further".into(),
                        });
                    };
                    let sent = Instant::now();
                    first_sent.get_or_insert(sent);
                    let res = api::call(Op::lease("update"), None, || {
                        self.api.replace(&name, &self.pp, &next)
                    })
                    .await;
                    match res {
                        Ok(stored) => {
                            return Ok(Self::took(id, holder, opts, name, identity, stored, sent));
                        }
                        // Another acquirer won the race, or the Lease went away: decide again.
                        Err(ApiError::Conflict | ApiError::NotFound) => continue,
                        Err(e) => return Err(self.err(e)),
                    }
                }
                Verdict::Held { left } => left,
            };
            let busy = Busy {
                holder: lease::holder(&current),
                held_for: lease::held_for_display(&current),
            };
            log.tick(&busy);
            let pause = next_wait(
                id,
                &busy,
                started,
                opts.wait_timeout,
                jittered(POLL).min(left + Duration::from_millis(50)),
            )?;
            tokio::time::sleep(pause).await;
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
                        return Err(StoreError::LeaseLost {
                            key: lease.id.to_string(),
                            token: lease.token,
                            reason: format!(
                                "could not renew it for {}ms ({reason}); stopping before it can \
                                 lapse",
                                renewed_at.elapsed().as_millis()
                            ),
                        });
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

    async fn release_holder(&self, id: &TaskId, me: &Holder) -> Result<ReleaseOutcome, StoreError> {
        let name = lease_name(id);
        let Some(first) = self.get(&name, None).await.map_err(|e| self.err(e))? else {
            return Ok(ReleaseOutcome::NotHeld);
        };
        let seen = Instant::now();
        self.check_task(id, &name, &first)?;
        let Some(holder) = lease::holder(&first) else {
            return Ok(ReleaseOutcome::NotHeld);
        };
        if !me.same_owner(&holder) {
            return Ok(ReleaseOutcome::HeldByOther {
                holder: Some(holder),
            });
        }
        // Same Pod, but the holder may well be alive and running its command (a preStop hook runs
        // before the container is told to stop): freeing its lease would let another replica run
        // the task beside it. `renewTime` cannot tell (another node's clock, client-go's rule), so
        // watch the Lease: a live holder renews every third of `leaseDurationSeconds`, and every
        // write changes the resourceVersion; one that does not renew for the whole window has
        // had its command killed by its supervisor (see `liveness::window`). The holder reaches
        // the API server through this very Pod's network, so its renewals cannot be cut off
        // while ours get through.
        let window = liveness::window(lease::lease_duration(&first).unwrap_or(FALLBACK_TTL));
        tracing::info!(
            key = %id,
            "the lease on {id} is held by {holder} of this Pod; watching it for up to {:.1}s to \
             tell whether that holder is still alive",
            window.as_secs_f64()
        );
        let same_version = |a: &KubeLease, b: &KubeLease| {
            a.metadata.resource_version == b.metadata.resource_version
        };
        let look = || {
            let name = &name;
            async move { self.get(name, None).await.map_err(|e| self.err(e)) }
        };
        let watched = liveness::watch(&first, seen, window, LOOK_EVERY, same_version, look).await?;
        if let Watched::Changed { now, within } = watched {
            return self.judge_changed(id, &name, now.as_ref(), me, within);
        }
        // Unchanged for a whole window: the holder is gone. Released only if it is still exactly
        // the Lease we watched (resourceVersion-checked).
        let mut next = first.clone();
        lease::release(&mut next);
        let decided = Instant::now();
        let res = api::call(Op::lease("update"), None, || {
            self.api.replace(&name, &self.pp, &next)
        })
        .await;
        match res {
            Ok(_) => Ok(ReleaseOutcome::Released { holder }),
            // Written meanwhile: by its holder (alive after all), or by a new one.
            Err(ApiError::Conflict) => {
                let now = self.get(&name, None).await.map_err(|e| self.err(e))?;
                self.judge_changed(id, &name, now.as_ref(), me, decided.elapsed())
            }
            Err(ApiError::NotFound) => Ok(ReleaseOutcome::NotHeld),
            Err(e) => Err(self.err(e)),
        }
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
    use crate::record::State;
    use crate::task::Key;
    use chrono::Utc;

    fn record_with(tail: &str, runs: usize) -> Record {
        let id = TaskId::global(Key::parse("app/big").unwrap());
        let mut r = Record::new(&id, "sha256:a", Utc::now());
        for t in 0..runs {
            r.start(t as u64, &Holder::default(), "sha256:a", Utc::now());
            r.finish(State::Failed, t as u64, None, None, Utc::now(), usize::MAX);
        }
        r.tail = tail.to_string();
        r
    }

    #[test]
    fn small_records_are_kept_whole() {
        let r = record_with("hello", 3);
        let (json, trimmed) = bound_record(&r, MAX_RECORD_BYTES).unwrap();
        assert_eq!(trimmed, None);
        assert_eq!(Record::from_json(json.as_bytes()).unwrap(), r);
    }

    #[test]
    fn a_big_tail_is_cut_from_the_front() {
        let tail = format!("{}THE-END", "x".repeat(200_000));
        let (json, trimmed) = bound_record(&record_with(&tail, 20), MAX_RECORD_BYTES).unwrap();
        assert!(json.len() <= MAX_RECORD_BYTES);
        let back = Record::from_json(json.as_bytes()).unwrap();
        assert!(back.tail.ends_with("THE-END"));
        assert_eq!(
            back.history.len(),
            20,
            "history kept while the tail can give"
        );
        assert_eq!(trimmed.unwrap().history_dropped, 0);
    }

    #[test]
    fn escaped_output_still_fits() {
        // Control characters cost six bytes each in JSON.
        let tail = "\u{1}".repeat(100_000);
        let (json, _) = bound_record(&record_with(&tail, 0), MAX_RECORD_BYTES).unwrap();
        assert!(json.len() <= MAX_RECORD_BYTES, "{}", json.len());
    }

    #[test]
    fn a_long_history_loses_its_oldest_runs() {
        let (json, trimmed) = bound_record(&record_with("", 2000), MAX_RECORD_BYTES).unwrap();
        assert!(json.len() <= MAX_RECORD_BYTES);
        let back = Record::from_json(json.as_bytes()).unwrap();
        assert!(trimmed.unwrap().history_dropped > 0);
        assert_eq!(back.history.last().unwrap().token, 1999, "newest run kept");
    }

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
