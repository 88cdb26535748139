//! `ZkStore`: the `Store` trait over ZooKeeper. The lock is an ephemeral sequential znode under
//! the task's `locks/` node (the lowest holds it, Curator-style), bound to this process's session,
//! whose timeout is the lease: a holder that dies or stops answering loses it when the server
//! expires its session. Every record write is one `multi` that checks the lock znode still exists,
//! so a holder whose session expired can never write. Waiting is a watch on the holder's lock
//! znode. Must never write a record without that check, and never hand out a token that is not
//! larger than every earlier one of the task.
//!
//! The fencing token is a counter in the task's node, raised by one in a `multi` that also checks
//! our lock znode, as the last step of every acquisition. The lock znode's creation zxid would
//! increase as strictly (zxids are global and monotonic) but jumps by every unrelated write of
//! the ensemble and restarts its low half at every leader epoch; the counter counts acquisitions,
//! as every other store's token does (the contract suite checks that waiters which skip spend no
//! token), and stays a small number a command can compare (`INITGUARD_FENCING_TOKEN`). It only
//! moves under a held lock, and the previous holder's raise committed before its lock znode went
//! away, so the next holder always reads it (its own `multi` is conditioned on the version read).

use super::config::{ZkAuth, ZkUrl};
use super::names::{self, LOCK_INFIX, LOCKS, RECORD};
use crate::record::Record;
use crate::store::bounded::bounded_json;
use crate::store::{Attempt, Lease, Listing, Observation, Store, StoreError, jittered};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use zookeeper_client as zk;

/// Longest any one call may take before the server is taken for unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting: tries, and the whole budget for them.
const CONNECT_TRIES: u32 = 3;
const CONNECT_BUDGET: Duration = Duration::from_secs(10);
/// Session timeout of a session opened before any lease was asked for (`status`, the first read
/// of `run`): the default `--lock-ttl`, so that a default run needs one session only.
const DEFAULT_SESSION: Duration = Duration::from_secs(30);
/// Base pause when no watch could be set; jittered to 0.5–1.5×.
const POLL: Duration = Duration::from_millis(600);
/// Longest a release may take: a lock we fail to delete goes with our session anyway.
const RELEASE_BUDGET: Duration = Duration::from_secs(5);
/// Lost races in a row before an acquisition gives up (each means another writer got in first).
const MAX_CONFLICTS: u32 = 20;
/// Largest record kept in a znode. A server refuses (and drops the connection of) a request over
/// its `jute.maxbuffer`, 1 MiB - 1 by default, path and `multi` framing included: the rest is
/// room for those. A `--tail-bytes` of 1 MiB of escaped output would not fit otherwise.
pub const MAX_RECORD_BYTES: usize = 1000 * 1024;

/// One ZooKeeper session, and the timeout it was asked for.
struct Session {
    client: zk::Client,
    asked: Duration,
}

impl Session {
    fn connected(&self) -> bool {
        self.client.state() == zk::SessionState::SyncConnected
    }
}

/// Data of a lock znode: who holds (or contends for) the lease, and the lease they asked for.
#[derive(Serialize, Deserialize)]
struct LockData {
    holder: Holder,
    ttl_ms: u64,
}

/// Data of a task's node: its storage name (for operators; `list` decodes the node name) and the
/// last fencing token handed out.
#[derive(Serialize, Deserialize, Default)]
struct TaskData {
    task: String,
    token: u64,
}

/// `Lease::handle` of this store.
struct Held {
    /// The session our lock znode is bound to: renewals and writes go through it.
    session: Arc<Session>,
    lock: String,
    record: String,
    data: Vec<u8>,
    /// The record's version as we last wrote or saw it (`None`: not known yet).
    record_version: Mutex<Option<i32>>,
}

pub struct ZkStore {
    url: ZkUrl,
    auth: Option<ZkAuth>,
    label: String,
    /// The session new calls use; replaced when it ended or a lease asks for another timeout.
    /// A lease keeps its own session alive (`Held::session`) until it is released.
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Each acquisition's nonce, by task node: its lock znodes carry it in their names, so one
    /// whose create answer was lost is still recognised as ours.
    nonces: Mutex<HashMap<String, String>>,
}

/// `fut`, bounded by `limit`; no answer in time is `Error::Timeout`.
async fn timed<T, E: From<zk::Error>>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(E::from(zk::Error::Timeout)))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ZkStore {
    /// Read the credentials and connect once, so that an unreachable server (69) or bad
    /// configuration (78) shows before anything else happens.
    pub async fn open(url: &ZkUrl) -> Result<ZkStore, StoreError> {
        let label = url.redacted();
        let auth = ZkAuth::from_env().map_err(|e| StoreError::Config {
            store: label.clone(),
            reason: e.to_string(),
        })?;
        let store = ZkStore {
            url: url.clone(),
            auth,
            label,
            session: tokio::sync::Mutex::new(None),
            nonces: Mutex::new(HashMap::new()),
        };
        store.session(None).await?;
        Ok(store)
    }

    fn unreachable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unreachable {
            store: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// The typed error for a failed call; `what` says what initguard was doing.
    fn err(&self, what: &str, e: &zk::Error) -> StoreError {
        match e {
            zk::Error::NoAuth | zk::Error::AuthFailed => StoreError::Forbidden {
                store: self.label.clone(),
                reason: format!(
                    "{what}: {e} (the node's ACL does not let this user in); check the \
                     user:password in {} or {}",
                    super::config::AUTH_FILE_ENV,
                    super::config::AUTH_ENV
                ),
            },
            zk::Error::InvalidAcl => StoreError::Config {
                store: self.label.clone(),
                reason: format!("{what}: {e}"),
            },
            zk::Error::Throttled => StoreError::Overloaded {
                store: self.label.clone(),
                reason: format!("{what}: {e}"),
            },
            zk::Error::Timeout => self.unreachable(format!(
                "{what}: the server did not answer within {}s",
                CALL_TIMEOUT.as_secs()
            )),
            // The client's own silence detector (no answer, not even to its pings, for the
            // connection's timeout) comes as a custom error; its wording is the only mark.
            other if other.to_string().starts_with("no response from connection") => self
                .unreachable(format!(
                    "{what}: the server did not answer within the connection's timeout ({other})"
                )),
            other => self.unreachable(format!("{what}: {other}")),
        }
    }

    fn acls(&self) -> zk::Acls<'static> {
        // With credentials, only that user may touch what initguard creates; without, anyone.
        if self.auth.is_some() {
            zk::Acls::creator_all()
        } else {
            zk::Acls::anyone_all()
        }
    }

    fn task_path(&self, id: &TaskId) -> String {
        format!("{}/{}", self.url.base(), names::node_name(id))
    }

    fn location(&self, path: &str) -> String {
        format!("znode {path} of {}", self.label)
    }

    /// The session to use: the current one while it lives and (for a lease) was opened with
    /// `ttl`; otherwise a new one, which becomes current.
    async fn session(&self, ttl: Option<Duration>) -> Result<Arc<Session>, StoreError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.client.state().is_terminated()
            && ttl.is_none_or(|t| t == s.asked)
        {
            return Ok(s.clone());
        }
        let asked = ttl
            .or_else(|| slot.as_ref().map(|s| s.asked))
            .unwrap_or(DEFAULT_SESSION);
        let s = Arc::new(self.connect(asked, ttl.is_some()).await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// A new session asking for `asked`. For a lease (`strict`), a server that grants less is a
    /// configuration error: the session (and the lock with it) could expire for the others
    /// before the holder's heartbeat deadline (¾ of `--lock-ttl`) kills the command.
    async fn connect(&self, asked: Duration, strict: bool) -> Result<Session, StoreError> {
        let deadline = Instant::now() + CONNECT_BUDGET;
        let mut last = String::new();
        for attempt in 0..CONNECT_TRIES {
            let mut c = zk::Client::connector()
                .with_session_timeout(asked)
                .with_fail_eagerly();
            if let Some(a) = &self.auth {
                c = c.with_auth("digest", &a.digest());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timed(left.min(Duration::from_secs(5)), c.connect(&self.url.hosts)).await {
                Ok(client) => {
                    let granted = client.session_timeout();
                    if strict && granted < asked {
                        return Err(StoreError::Config {
                            store: self.label.clone(),
                            reason: format!(
                                "the server grants sessions of {}ms, shorter than --lock-ttl \
                                 ({}ms): the lock could expire before the command is stopped; \
                                 use a --lock-ttl the server allows (minSessionTimeout to \
                                 maxSessionTimeout, by default 2 to 20 tickTimes) or raise \
                                 maxSessionTimeout",
                                granted.as_millis(),
                                asked.as_millis()
                            ),
                        });
                    }
                    if strict && granted > asked + Duration::from_secs(1) {
                        tracing::warn!(
                            store = %self.label,
                            "the server raised the session timeout from --lock-ttl {}ms to \
                             {}ms (its minSessionTimeout): a crashed holder's lock is freed only \
                             after that",
                            asked.as_millis(),
                            granted.as_millis()
                        );
                    }
                    return Ok(Session { client, asked });
                }
                Err(e @ zk::Error::AuthFailed) => return Err(self.err("connecting", &e)),
                Err(zk::Error::Timeout) => {
                    last = format!(
                        "the servers did not answer within {:.1}s",
                        CONNECT_BUDGET.as_secs_f64()
                    )
                }
                Err(e) => last = e.to_string(),
            }
            let pause = jittered(Duration::from_millis(200 << attempt));
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Err(self.unreachable(format!(
            "could not open a session with {} ({last}); check that the servers answer from here",
            self.url.hosts
        )))
    }

    /// Create the base, the task's node and its `locks/` node, as far as they are missing.
    async fn ensure_task(&self, s: &Session, id: &TaskId) -> Result<(), StoreError> {
        let opts = zk::CreateMode::Persistent.with_acls(self.acls());
        let what = "creating the task's nodes";
        match timed(CALL_TIMEOUT, s.client.mkdir(&self.url.base(), &opts)).await {
            Ok(()) => {}
            Err(e) => return Err(self.err(what, &e)),
        }
        let task = self.task_path(id);
        let data = serde_json::to_vec(&TaskData {
            task: id.storage_name(),
            token: 0,
        })
        .unwrap_or_default();
        for (path, data) in [
            (task.clone(), data),
            (format!("{task}/{LOCKS}"), Vec::new()),
        ] {
            match timed(CALL_TIMEOUT, s.client.create(&path, &data, &opts)).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(self.err(what, &e)),
            }
        }
        Ok(())
    }

    /// Create our lock znode (`<nonce>-lock-<seq>`), making the task's nodes on first use.
    async fn create_lock(
        &self,
        s: &Session,
        id: &TaskId,
        nonce: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let prefix = format!("{}/{LOCKS}/{nonce}{LOCK_INFIX}", self.task_path(id));
        let opts = zk::CreateMode::EphemeralSequential.with_acls(self.acls());
        for _ in 0..2 {
            match timed(CALL_TIMEOUT, s.client.create(&prefix, data, &opts)).await {
                Ok(_) => return Ok(()),
                Err(zk::Error::NoNode) => self.ensure_task(s, id).await?,
                // The answer may be lost with the node made: the next listing finds it by nonce.
                Err(zk::Error::ConnectionLoss) => return Ok(()),
                Err(e) => return Err(self.err("creating the lock znode", &e)),
            }
        }
        Err(self.unreachable("the task's lock node vanished while creating a lock znode"))
    }

    /// The contenders for the task's lock, lowest sequence first.
    async fn queue(&self, s: &Session, id: &TaskId) -> Result<Option<Vec<String>>, StoreError> {
        let path = format!("{}/{LOCKS}", self.task_path(id));
        match timed(CALL_TIMEOUT, s.client.list_children(&path)).await {
            Ok(mut children) => {
                children.retain(|c| names::sequence(c).is_some());
                children.sort_by_key(|c| names::sequence(c));
                Ok(Some(children))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("listing the lock queue", &e)),
        }
    }

    /// How a lock znode looks to a waiter; `None` when it is gone.
    async fn lock_observation(
        &self,
        s: &Session,
        id: &TaskId,
        node: &str,
    ) -> Result<Option<Observation>, StoreError> {
        let task = self.task_path(id);
        let path = format!("{task}/{LOCKS}/{node}");
        let (data, stat) = match timed(CALL_TIMEOUT, s.client.get_data(&path)).await {
            Ok(x) => x,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(self.err("reading the lock znode", &e)),
        };
        let record = format!("{task}/{RECORD}");
        let record_zxid = match timed(CALL_TIMEOUT, s.client.check_stat(&record)).await {
            Ok(stat) => stat.map_or(0, |s| s.mzxid),
            Err(e) => return Err(self.err("reading the record's stat", &e)),
        };
        let lock: Option<LockData> = serde_json::from_slice(&data).ok();
        let created = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(stat.ctime).unwrap_or_default());
        Ok(Some(Observation {
            holder: lock.as_ref().map(|l| l.holder.clone()),
            // By the server's clock against ours: for the waiting line only, never a decision.
            held_for: SystemTime::now().duration_since(created).ok(),
            // Renewals bump the lock znode's version, record writes the record's mzxid. The node
            // name comes first: `wait_change` watches it.
            version: format!("{node}:{}:{record_zxid}", stat.version),
            record: None,
            ttl: lock.map(|l| Duration::from_millis(l.ttl_ms)),
            // The server decides when the session expires; waiters learn of it by the watch.
            lapses_in: None,
        }))
    }

    /// Delete lock znodes of ours (`nonce`) other than `keep`; best effort: they go with the
    /// session anyway, and the next try of this acquisition recognises them.
    async fn drop_ours(&self, s: &Session, id: &TaskId, queue: &[String], nonce: &str, keep: &str) {
        let task = self.task_path(id);
        for node in queue.iter().filter(|n| n.starts_with(nonce) && *n != keep) {
            let path = format!("{task}/{LOCKS}/{node}");
            let _ = timed(CALL_TIMEOUT, s.client.delete(&path, None)).await;
        }
    }

    /// Raise the task's token by one, conditioned on our lock znode: the lease's fencing token.
    async fn next_token(&self, s: &Session, id: &TaskId, lock: &str) -> Result<u64, StoreError> {
        let task = self.task_path(id);
        for _ in 0..MAX_CONFLICTS {
            let (data, stat) = timed(CALL_TIMEOUT, s.client.get_data(&task))
                .await
                .map_err(|e| self.err("reading the task's token", &e))?;
            let last: TaskData = if data.is_empty() {
                TaskData::default()
            } else {
                serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
                    key: id.key.to_string(),
                    location: self.location(&task),
                    reason: format!("the task node's token is not readable: {e}"),
                })?
            };
            let Some(token) = last.token.checked_add(1) else {
                return Err(StoreError::Corrupt {
                    key: id.key.to_string(),
                    location: self.location(&task),
                    reason: "the token cannot grow any further".into(),
                });
            };
            let body = serde_json::to_vec(&TaskData {
                task: id.storage_name(),
                token,
            })
            .unwrap_or_default();
            let mut w = s
                .client
                .new_check_writer(lock, None)
                .map_err(|e| self.err("raising the token", &e))?;
            w.add_set_data(&task, &body, Some(stat.version))
                .map_err(|e| self.err("raising the token", &e))?;
            match timed(CALL_TIMEOUT, w.commit()).await {
                Ok(_) => return Ok(token),
                Err(zk::CheckWriteError::OperationFailed {
                    source: zk::Error::BadVersion,
                    ..
                }) => continue,
                Err(zk::CheckWriteError::CheckFailed { .. }) => {
                    return Err(self.unreachable(
                        "our lock znode vanished while taking the lease (the session expired)",
                    ));
                }
                Err(e) => return Err(self.err("raising the token", &zk::Error::from(e))),
            }
        }
        Err(self.unreachable("every raise of the token lost a race"))
    }

    fn handle<'a>(&self, lease: &'a Lease) -> Result<&'a Held, StoreError> {
        lease.handle.downcast_ref::<Held>().ok_or_else(|| {
            StoreError::lease_lost(lease, "the lease was not taken by the ZooKeeper store")
        })
    }

    /// Whether a failed fenced call means the lease is gone, and why.
    fn lost_reason(e: &zk::Error) -> Option<&'static str> {
        match e {
            zk::Error::NoNode => Some(
                "the lock znode is gone: the session expired (or `initguard release` freed it) \
                 and another holder may have the lease",
            ),
            zk::Error::SessionExpired => Some("the ZooKeeper session expired"),
            zk::Error::ClientClosed => Some("the ZooKeeper session was closed"),
            _ => None,
        }
    }

    fn decode(&self, id: &TaskId, path: &str, data: &[u8]) -> Result<Record, StoreError> {
        Record::from_json(data)
            .map_err(|e| StoreError::unreadable_record(id.key.as_str(), self.location(path), e))
    }

    async fn read_with(&self, s: &Session, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let path = format!("{}/{RECORD}", self.task_path(id));
        match timed(CALL_TIMEOUT, s.client.get_data(&path)).await {
            Ok((data, _)) => self.decode(id, &path, &data).map(Some),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("reading the record", &e)),
        }
    }
}

#[async_trait]
impl Store for ZkStore {
    fn describe(&self) -> String {
        match &self.auth {
            Some(a) => format!("{} (as {})", self.label, a.user),
            None => self.label.clone(),
        }
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let s = self.session(None).await?;
        self.read_with(&s, id).await
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        let s = self.session(Some(ttl)).await?;
        let task = self.task_path(id);
        let nonce = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(task.clone())
            .or_insert_with(|| hex::encode(rand::random::<[u8; 8]>()))
            .clone();
        let data = serde_json::to_vec(&LockData {
            holder: holder.clone(),
            ttl_ms: millis(ttl),
        })
        .unwrap_or_default();
        for _ in 0..MAX_CONFLICTS {
            self.create_lock(&s, id, &nonce, &data).await?;
            let queue = self.queue(&s, id).await?.unwrap_or_default();
            let Some(lowest) = queue.first().cloned() else {
                continue;
            };
            if lowest.starts_with(&nonce) {
                // Ours, possibly one whose create answer was lost: every other one of ours goes.
                self.drop_ours(&s, id, &queue, &nonce, &lowest).await;
                let lock = format!("{task}/{LOCKS}/{lowest}");
                let token = match self.next_token(&s, id, &lock).await {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = timed(CALL_TIMEOUT, s.client.delete(&lock, None)).await;
                        return Err(e);
                    }
                };
                self.nonces
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task);
                tracing::debug!(key = %id, token, lock = %lock, "lease taken");
                return Ok(Attempt::Taken(Lease {
                    id: id.clone(),
                    token,
                    holder: holder.clone(),
                    ttl,
                    handle: Box::new(Held {
                        session: s.clone(),
                        lock,
                        record: format!("{task}/{RECORD}"),
                        data,
                        record_version: Mutex::new(None),
                    }),
                }));
            }
            let seen = self.lock_observation(&s, id, &lowest).await;
            // Not queueing: a waiter keeps no znode, so one that gives up leaves nothing behind
            // that others would have to wait out.
            self.drop_ours(&s, id, &queue, &nonce, "").await;
            match seen? {
                Some(seen) => return Ok(Attempt::Busy(seen)),
                // The holder let go meanwhile: look again.
                None => continue,
            }
        }
        Err(self.unreachable("every try to take the lock lost a race with another contender"))
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        let left = until.saturating_duration_since(Instant::now());
        let watched = match seen.version.split_once(':') {
            Some((node, _)) => {
                let s = self.session(None).await?;
                let path = format!("{}/{LOCKS}/{node}", self.task_path(id));
                let watching = async {
                    loop {
                        let Ok((stat, watcher)) = s.client.check_and_watch_stat(&path).await else {
                            return false;
                        };
                        if stat.is_none() {
                            return true;
                        }
                        match watcher.changed().await.event_type {
                            // A renewal: the lock is still held; watch on.
                            zk::EventType::NodeDataChanged => continue,
                            _ => return true,
                        }
                    }
                };
                tokio::time::timeout(left, watching).await.unwrap_or(true)
            }
            None => false,
        };
        if !watched {
            tokio::time::sleep(jittered(POLL).min(left)).await;
        }
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let s = self.session(None).await?;
        let Some(queue) = self.queue(&s, id).await? else {
            return Ok(None);
        };
        match queue.first() {
            Some(lowest) => self.lock_observation(&s, id, lowest).await,
            None => Ok(None),
        }
    }

    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError> {
        let Some(now) = self.observe(id).await? else {
            return Ok(false);
        };
        if now.version != seen.version {
            return Ok(false);
        }
        let mut parts = now.version.splitn(3, ':');
        let (Some(node), Some(version)) = (parts.next(), parts.next()) else {
            return Ok(false);
        };
        let version: i32 = version.parse().unwrap_or(-1);
        let s = self.session(None).await?;
        let path = format!("{}/{LOCKS}/{node}", self.task_path(id));
        // Deleted only if no renewal bumped its version since the watch: a holder gone silent.
        match timed(CALL_TIMEOUT, s.client.delete(&path, Some(version))).await {
            Ok(()) => Ok(true),
            Err(zk::Error::NoNode | zk::Error::BadVersion) => Ok(false),
            Err(e) => Err(self.err("freeing the lock", &e)),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        // SUSPENDED counts as lost for the command: while disconnected nothing proves the session
        // alive, so fail at once (not after a long wait) and let the heartbeat's deadline, ¾ of
        // the session timeout after the last renewal, stop the command before the server can
        // expire the session and hand the lock to another.
        if !held.session.connected() {
            let state = held.session.client.state();
            if state.is_terminated() {
                return Err(StoreError::lease_lost(
                    lease,
                    format!("the ZooKeeper session ended ({state})"),
                ));
            }
            return Err(self.unreachable(format!(
                "disconnected from ZooKeeper ({state}); the session may expire"
            )));
        }
        let limit = (lease.ttl / 3).clamp(Duration::from_millis(300), CALL_TIMEOUT);
        // Rewriting our own lock znode proves the session alive and the lock ours, and bumps its
        // version, which is how `initguard release` tells a live holder from a gone one.
        match timed(
            limit,
            held.session.client.set_data(&held.lock, &held.data, None),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) => match Self::lost_reason(&e) {
                Some(reason) => Err(StoreError::lease_lost(lease, reason)),
                None => Err(self.err("renewing the lease", &e)),
            },
        }
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        let client = &held.session.client;
        let json = bounded_json(record, MAX_RECORD_BYTES, &self.label, "a znode")?.into_bytes();
        let what = "writing the record";
        for _ in 0..MAX_CONFLICTS {
            let known = *held
                .record_version
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let version = match known {
                Some(v) => Some(v),
                None => match timed(CALL_TIMEOUT, client.check_stat(&held.record)).await {
                    Ok(stat) => stat.map(|s| s.version),
                    Err(e) => {
                        return Err(match Self::lost_reason(&e) {
                            Some(reason) => StoreError::lease_lost(lease, reason),
                            None => self.err(what, &e),
                        });
                    }
                },
            };
            // One multi: the check that our lock znode still exists (any version: renewals
            // bump it concurrently) and the record, conditioned on the version we know.
            let mut w = client
                .new_check_writer(&held.lock, None)
                .map_err(|e| self.err(what, &e))?;
            let staged = match version {
                Some(v) => w.add_set_data(&held.record, &json, Some(v)),
                None => w.add_create(
                    &held.record,
                    &json,
                    &zk::CreateMode::Persistent.with_acls(self.acls()),
                ),
            };
            staged.map_err(|e| self.err(what, &e))?;
            let forget = || {
                *held
                    .record_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
            };
            match timed(CALL_TIMEOUT, w.commit()).await {
                Ok(results) => {
                    let v = match results.into_iter().next() {
                        Some(zk::MultiWriteResult::SetData { stat }) => Some(stat.version),
                        Some(zk::MultiWriteResult::Create { .. }) => Some(0),
                        _ => None,
                    };
                    *held
                        .record_version
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = v;
                    return Ok(());
                }
                Err(zk::CheckWriteError::CheckFailed { source }) => {
                    return Err(StoreError::lease_lost(
                        lease,
                        Self::lost_reason(&source).unwrap_or(
                            "the write was fenced off: the lock znode is no longer ours",
                        ),
                    ));
                }
                // Written by someone else meanwhile (an operator, a reset of ours that lost its
                // answer): the lock check passed, so the lease is ours; look again and write.
                Err(zk::CheckWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
                    ..
                }) => forget(),
                Err(e) => {
                    forget();
                    let e = zk::Error::from(e);
                    return Err(match Self::lost_reason(&e) {
                        Some(reason) => StoreError::lease_lost(lease, reason),
                        None => self.err(what, &e),
                    });
                }
            }
        }
        Err(self.unreachable("every write of the record lost a race with another writer"))
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let held = self.handle(&lease)?;
        match timed(RELEASE_BUDGET, held.session.client.delete(&held.lock, None)).await {
            Ok(()) => Ok(()),
            Err(e) if Self::lost_reason(&e).is_some() => Ok(()),
            Err(e) => Err(self.err("releasing the lease", &e)),
        }
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let s = self.session(None).await?;
        let base = self.url.base();
        let children = match timed(CALL_TIMEOUT, s.client.list_children(&base)).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(self.err("listing tasks", &e)),
        };
        let mut out = Listing::default();
        for name in children {
            let Some(id) = names::task_of(&name) else {
                continue;
            };
            let read = self.read_with(&s, &id).await;
            out.add(id, read)?;
        }
        out.records
            .sort_by(|a, b| (&a.key, &a.instance).cmp(&(&b.key, &b.instance)));
        Ok(out)
    }

    fn record_limit(&self) -> Option<usize> {
        Some(MAX_RECORD_BYTES)
    }
}
