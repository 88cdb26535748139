//! `EtcdStore`: the `Store` trait over two keys per task. The lock key is bound to the holder's
//! etcd lease (server-side TTL: etcd deletes the key when the lease is not kept alive), and its
//! create revision is the fencing token; the record key beside it is only ever written in a txn
//! that compares the lock key's create revision with the writer's token. Must never write the
//! record or the lock without that compare, and never decide a lease's lapse from a clock: etcd
//! does, and tells us by deleting the key.

use super::call::{self, EtcdError, call};
use super::config::{CA_ENV, CERT_ENV, EtcdUrl, KEY_ENV, USER_ENV};
use super::names::{lock_key, record_key, task_dir, task_of_record_key};
use crate::record::Record;
use crate::store::bounded::bounded_json;
use crate::store::{Attempt, Lease, Listing, Observation, Store, StoreError, jittered};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use etcd_client::proto::PbTxnOpResponse;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    PutOptions, TlsOptions, Txn, TxnOp, TxnResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest record written: etcd refuses requests over 1.5 MiB (`--max-request-bytes`), and a
/// record of `--tail-bytes 1048576` of escaped output or `--history 1000` can be larger. Over
/// this, its output tail and then its oldest history entries are trimmed (`bounded`).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Pause between looks at a busy lock when no watch could be had; jittered to 0.5–1.5×.
const POLL: Duration = Duration::from_millis(600);
/// Longest a release may take: a lease we fail to revoke lapses on its own.
const RELEASE_BUDGET: Duration = Duration::from_secs(5);
/// Longest connecting (and authenticating) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct EtcdStore {
    client: Client,
    url: EtcdUrl,
}

/// The lock key's value: who holds it, for how long, since when (by the holder's clock, for the
/// "held for Ns" line only).
#[derive(Debug, Serialize, Deserialize)]
struct LockValue {
    holder: Holder,
    ttl_secs: u64,
    acquired_at: DateTime<Utc>,
}

/// `Lease::handle` of this store.
struct Held {
    lock: String,
    record: String,
    /// The etcd lease the lock key is bound to.
    lease_id: i64,
    /// The lock key's value as written, written again by every renewal.
    value: Vec<u8>,
}

/// etcd's lease TTL for a `--lock-ttl`: whole seconds, rounded up, at least 1. The server keeps
/// a lease at least this long after each keep-alive it receives, which comes after the renewal
/// was asked for: so it lapses later than the holder's own deadline (¾ of the TTL after asking,
/// `liveness::holder_gives_up_after`), and the command is dead before anyone else can take over.
/// (etcd raises TTLs below its minimum, 1.5 × its election timeout; longer is as safe.)
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

fn config_error(url: &EtcdUrl, reason: String) -> StoreError {
    StoreError::Config {
        store: url.redacted(),
        reason,
    }
}

fn read_file(url: &EtcdUrl, what: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| {
        config_error(
            url,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

/// The first line of the password file, as `--store-password-file` says.
fn password(url: &EtcdUrl, path: &Path) -> Result<String, StoreError> {
    let bytes = read_file(url, "password file", path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| config_error(url, format!("{} is not UTF-8 text", path.display())))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(config_error(
            url,
            format!("the password file {} is empty", path.display()),
        ));
    }
    Ok(line)
}

fn tls_options(url: &EtcdUrl) -> Result<Option<TlsOptions>, StoreError> {
    if !url.tls {
        if url.ca_file.is_some() || url.cert_file.is_some() || url.key_file.is_some() {
            return Err(config_error(
                url,
                format!(
                    "{CA_ENV}, {CERT_ENV} or {KEY_ENV} is set, but the URL is etcd:// (no \
                     TLS): use etcds:// for TLS"
                ),
            ));
        }
        return Ok(None);
    }
    // Only ring is built in; make it the process default so rustls never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut tls = TlsOptions::new();
    tls = match &url.ca_file {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read_file(url, "CA file", ca)?)),
        None => tls.with_webpki_roots(),
    };
    match (&url.cert_file, &url.key_file) {
        (Some(cert), Some(key)) => {
            let cert = read_file(url, "client certificate", cert)?;
            let key = read_file(url, "client key", key)?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => {
            return Err(config_error(
                url,
                format!("{CERT_ENV} and {KEY_ENV} go together: set both or neither"),
            ));
        }
    }
    Ok(Some(tls))
}

/// The key-value pairs of a txn's range reads. Read from the raw answer: a response without its
/// body is skipped, where etcd-client's `op_responses` would panic.
fn kvs_of(resp: &TxnResponse) -> Vec<KeyValue> {
    resp.0
        .responses
        .iter()
        .filter_map(|r| match r.response.as_ref()? {
            PbTxnOpResponse::ResponseRange(range) => Some(&range.kvs),
            _ => None,
        })
        .flatten()
        .map(|kv| <&KeyValue>::from(kv).clone())
        .collect()
}

/// What etcd holds of a task: its lock key and its record key, each if present.
#[derive(Default)]
struct TaskKeys {
    lock: Option<KeyValue>,
    record: Option<KeyValue>,
}

impl TaskKeys {
    fn from(kvs: Vec<KeyValue>, lock: &str, record: &str) -> TaskKeys {
        let mut t = TaskKeys::default();
        for kv in kvs {
            if kv.key() == lock.as_bytes() {
                t.lock = Some(kv);
            } else if kv.key() == record.as_bytes() {
                t.record = Some(kv);
            }
        }
        t
    }
}

/// The observation's version: the lock key's and the record key's mod revisions. Every renewal
/// rewrites the lock key, so a live holder changes it at least every third of its TTL.
fn version_of(lock: Option<&KeyValue>, record: Option<&KeyValue>) -> String {
    format!(
        "{}.{}",
        lock.map_or(0, KeyValue::mod_revision),
        record.map_or(0, KeyValue::mod_revision)
    )
}

/// The mod revisions a version names (lock, record).
fn revisions_of(version: &str) -> Option<(i64, i64)> {
    let (l, r) = version.split_once('.')?;
    Some((l.parse().ok()?, r.parse().ok()?))
}

impl EtcdStore {
    /// Connect to `url`'s endpoints (lazily: etcd-client dials on the first request) and, with a
    /// user, authenticate, which is when wrong credentials show.
    pub async fn open(url: &EtcdUrl) -> Result<EtcdStore, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            // A token that expires while a long command runs is fetched again, not an error.
            .with_auto_token_refresh(true);
        if url.user.as_deref().is_some_and(|u| u.contains(':')) {
            return Err(config_error(
                url,
                format!(
                    "the etcd user ({USER_ENV}) contains ':': the password goes in a file named                      by --store-password-file, not beside the user"
                ),
            ));
        }
        match (&url.user, &url.password_file) {
            (Some(user), Some(file)) => opts = opts.with_user(user, password(url, file)?),
            (Some(user), None) => {
                return Err(config_error(
                    url,
                    format!(
                        "etcd user {user} needs a password: name a file holding it with \
                         --store-password-file (or INITGUARD_STORE_PASSWORD_FILE)"
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    url,
                    format!(
                        "a password file is given but no etcd user: set {USER_ENV} or put \
                         USER@ in the URL"
                    ),
                ));
            }
            (None, None) => {}
        }
        if let Some(tls) = tls_options(url)? {
            opts = opts.with_tls(tls);
        }
        let connecting = Client::connect(url.endpoints.clone(), Some(opts));
        let client = match tokio::time::timeout(call::CALL_BUDGET, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let sorted = call::sorted_connect_error(e);
                return Err(EtcdStore::error_for(url, sorted));
            }
            Err(_) => {
                return Err(EtcdStore::error_for(
                    url,
                    EtcdError::Unreachable {
                        tries: 1,
                        reason: format!(
                            "etcd did not answer within {}s",
                            call::CALL_BUDGET.as_secs()
                        ),
                    },
                ));
            }
        };
        Ok(EtcdStore {
            client,
            url: url.clone(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.url.prefix
    }

    fn error_for(url: &EtcdUrl, e: EtcdError) -> StoreError {
        let store = url.redacted();
        match e {
            EtcdError::Auth(m) => StoreError::Config {
                store,
                reason: format!(
                    "etcd did not accept the credentials ({m}); check the user ({USER_ENV} or \
                     USER@ in the URL) and the password file (--store-password-file)"
                ),
            },
            EtcdError::Denied(m) => StoreError::Forbidden {
                store,
                reason: format!(
                    "etcd denies this user the keys under {} ({m}); grant its role readwrite on \
                     them: `etcdctl role grant-permission ROLE --prefix=true readwrite {}`",
                    url.prefix, url.prefix
                ),
            },
            EtcdError::Rejected(m) => StoreError::Config {
                store,
                reason: format!("etcd rejected the request: {m}"),
            },
            EtcdError::LeaseGone => StoreError::Unreachable {
                store,
                reason: "etcd lost a lease it had just granted".into(),
            },
            EtcdError::Unreachable { tries, reason } => StoreError::Unreachable {
                store,
                reason: format!(
                    "failed after {tries} {} ({reason}); check that etcd answers at {} from \
                     here",
                    if tries == 1 { "try" } else { "tries" },
                    url.endpoints.join(",")
                ),
            },
        }
    }

    fn err(&self, e: EtcdError) -> StoreError {
        EtcdStore::error_for(&self.url, e)
    }

    fn location(&self, key: &str) -> String {
        format!("etcd key {key} at {}", self.url.redacted())
    }

    fn parse_record(&self, id: &TaskId, kv: &KeyValue) -> Result<Record, StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        Record::from_json(kv.value())
            .map_err(|e| StoreError::unreadable_record(id.key.as_str(), self.location(&key), e))
    }

    fn handle<'a>(&self, lease: &'a Lease) -> Result<&'a Held, StoreError> {
        lease.handle.downcast_ref::<Held>().ok_or_else(|| {
            StoreError::lease_lost(lease, "the lease was not taken by the etcd store")
        })
    }

    /// The task's lock and record keys, in one range read over its directory.
    async fn task_keys(&self, id: &TaskId) -> Result<TaskKeys, StoreError> {
        let dir = task_dir(&self.url.prefix, id);
        let resp = call(None, || {
            let mut kv = self.client.kv_client();
            let dir = dir.clone();
            async move { kv.get(dir, Some(GetOptions::new().with_prefix())).await }
        })
        .await
        .map_err(|e| self.err(e))?;
        Ok(TaskKeys::from(
            resp.kvs().to_vec(),
            &lock_key(&self.url.prefix, id),
            &record_key(&self.url.prefix, id),
        ))
    }

    fn observation(&self, id: &TaskId, keys: &TaskKeys) -> Observation {
        let value = keys
            .lock
            .as_ref()
            .and_then(|l| serde_json::from_slice::<LockValue>(l.value()).ok());
        Observation {
            holder: value.as_ref().map(|v| v.holder.clone()),
            held_for: value
                .as_ref()
                .and_then(|v| (Utc::now() - v.acquired_at).to_std().ok()),
            version: version_of(keys.lock.as_ref(), keys.record.as_ref()),
            // A corrupt record is the guard's to report, from its own read.
            record: keys
                .record
                .as_ref()
                .and_then(|r| self.parse_record(id, r).ok())
                .map(Box::new),
            ttl: value.as_ref().map(|v| Duration::from_secs(v.ttl_secs)),
            // etcd decides the lapse and deletes the key, which a watch sees at once.
            lapses_in: None,
        }
    }

    /// A txn over the task's keys, tried as `call` does.
    async fn txn(&self, txn: Txn, deadline: Option<Instant>) -> Result<TxnResponse, StoreError> {
        call(deadline, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|e| self.err(e))
    }

    /// Why a fenced txn failed: what the lock key shows now.
    fn lost_reason(lock: Option<&KeyValue>, token: u64) -> String {
        match lock {
            None => "the lock key is gone (its etcd lease expired or was revoked)".into(),
            Some(kv) => {
                let by = serde_json::from_slice::<LockValue>(kv.value())
                    .map(|v| v.holder.to_string())
                    .unwrap_or_else(|_| "an unknown holder".into());
                format!(
                    "the lock key is now held by {by} under token {} (ours: {token})",
                    kv.create_revision()
                )
            }
        }
    }

    /// `ops` if the lock key is still the one created under `lease`'s token; else LeaseLost.
    async fn fenced(
        &self,
        lease: &Lease,
        held: &Held,
        ops: Vec<TxnOp>,
        deadline: Option<Instant>,
    ) -> Result<(), StoreError> {
        let token = i64::try_from(lease.token).unwrap_or(i64::MAX);
        // The create revision of a key is the revision of the txn that created it: a key
        // deleted (lease expired, released) and created again by the next holder gets a newer,
        // larger one. So equal create revision means: still the very key we created.
        let txn = Txn::new()
            .when([Compare::create_revision(
                held.lock.clone(),
                CompareOp::Equal,
                token,
            )])
            .and_then(ops)
            .or_else([TxnOp::get(held.lock.clone(), None)]);
        let resp = self.txn(txn, deadline).await?;
        if resp.succeeded() {
            return Ok(());
        }
        let kvs = kvs_of(&resp);
        Err(StoreError::lease_lost(
            lease,
            EtcdStore::lost_reason(kvs.first(), lease.token),
        ))
    }

    /// Give back a lease granted for a take that did not happen. Best effort: it lapses anyway.
    async fn revoke_quietly(&self, lease_id: i64) {
        let deadline = Some(Instant::now() + RELEASE_BUDGET);
        let _ = call(deadline, || {
            let mut l = self.client.lease_client();
            async move { l.revoke(lease_id).await }
        })
        .await;
    }

    fn took(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
        token: i64,
        lease_id: i64,
        value: Vec<u8>,
    ) -> Result<Lease, StoreError> {
        let token = u64::try_from(token)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| StoreError::Unreachable {
                store: self.url.redacted(),
                reason: format!("etcd answered the take with create revision {token}"),
            })?;
        tracing::debug!(key = %id, token, lease = lease_id, "lease taken");
        Ok(Lease {
            id: id.clone(),
            token,
            holder: holder.clone(),
            ttl,
            handle: Box::new(Held {
                lock: lock_key(&self.url.prefix, id),
                record: record_key(&self.url.prefix, id),
                lease_id,
                value,
            }),
        })
    }

    /// Wait for a change of the task's keys after the revisions `version` names, by watch;
    /// `false` when no watch could be had, so the caller pauses instead.
    async fn watch_change(&self, id: &TaskId, version: &str, until: Instant) -> bool {
        let Some((l, r)) = revisions_of(version) else {
            return false;
        };
        // Every change after the look that gave `version` has a larger revision than both.
        let from = l.max(r) + 1;
        let dir = task_dir(&self.url.prefix, id);
        let left = until.saturating_duration_since(Instant::now());
        let watching = async {
            let mut w = self.client.watch_client();
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let Ok(mut stream) = w.watch(dir, Some(opts)).await else {
                return false;
            };
            loop {
                match stream.message().await {
                    // Canceled: compacted past `from`, or refused. A pause, then a fresh look,
                    // never a loop of watches canceled at once.
                    Ok(Some(resp)) if resp.canceled() => return false,
                    Ok(Some(resp)) if !resp.events().is_empty() => return true,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(left, watching).await.unwrap_or(true)
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("{} (keys under {})", self.url.redacted(), self.url.prefix)
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let key = record_key(&self.url.prefix, id);
        let resp = call(None, || {
            let mut kv = self.client.kv_client();
            let key = key.clone();
            async move { kv.get(key, None).await }
        })
        .await
        .map_err(|e| self.err(e))?;
        resp.kvs()
            .first()
            .map(|kv| self.parse_record(id, kv))
            .transpose()
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        let keys = self.task_keys(id).await?;
        if keys.lock.is_some() {
            return Ok(Attempt::Busy(self.observation(id, &keys)));
        }
        let secs = ttl_secs(ttl);
        let granted = call(None, || {
            let mut l = self.client.lease_client();
            async move { l.grant(secs, None).await }
        })
        .await
        .map_err(|e| self.err(e))?;
        let lease_id = granted.id();
        let value = serde_json::to_vec(&LockValue {
            holder: holder.clone(),
            ttl_secs: u64::try_from(secs).unwrap_or(u64::MAX),
            acquired_at: Utc::now(),
        })
        .map_err(|e| StoreError::Unsupported {
            store: self.url.redacted(),
            what: format!("a holder that cannot be encoded: {e}"),
        })?;
        let lock = lock_key(&self.url.prefix, id);
        let dir = task_dir(&self.url.prefix, id);
        let txn = Txn::new()
            .when([Compare::create_revision(lock.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    lock.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease_id)),
                ),
                TxnOp::get(lock.clone(), None),
            ])
            .or_else([TxnOp::get(dir, Some(GetOptions::new().with_prefix()))]);
        let resp = match self.txn(txn, None).await {
            Ok(r) => r,
            Err(e) => {
                self.revoke_quietly(lease_id).await;
                return Err(e);
            }
        };
        let kvs = kvs_of(&resp);
        let keys = TaskKeys::from(kvs, &lock, &record_key(&self.url.prefix, id));
        let ours = keys.lock.as_ref().filter(|l| l.lease() == lease_id);
        if let Some(l) = ours {
            // Taken now, or by a try of this same txn whose answer was lost (the lock key is
            // bound to the lease we granted for it).
            let token = l.create_revision();
            return Ok(Attempt::Taken(
                self.took(id, holder, ttl, token, lease_id, value)?,
            ));
        }
        if resp.succeeded() {
            // The put went through but the read in the same txn did not show it: the txn's
            // revision is the key's create revision.
            let token = resp.header().map_or(0, |h| h.revision());
            return Ok(Attempt::Taken(
                self.took(id, holder, ttl, token, lease_id, value)?,
            ));
        }
        self.revoke_quietly(lease_id).await;
        Ok(Attempt::Busy(self.observation(id, &keys)))
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        if !self.watch_change(id, &seen.version, until).await {
            let pause = jittered(POLL).min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let keys = self.task_keys(id).await?;
        if keys.lock.is_none() {
            return Ok(None);
        }
        Ok(Some(self.observation(id, &keys)))
    }

    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError> {
        let Some((lock_rev, _)) = revisions_of(&seen.version).filter(|(l, _)| *l > 0) else {
            return Ok(false);
        };
        let lock = lock_key(&self.url.prefix, id);
        // Deleted only if nobody renewed or retook it since it was watched. Its holder's lease
        // lingers until its TTL, bound to nothing: that holder's next renewal finds the lock
        // key gone (compare fails) and reports the lease lost.
        let txn = Txn::new()
            .when([Compare::mod_revision(
                lock.clone(),
                CompareOp::Equal,
                lock_rev,
            )])
            .and_then([TxnOp::delete(lock, None)]);
        Ok(self.txn(txn, None).await?.succeeded())
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        let lease_id = held.lease_id;
        let kept = call(None, || {
            let mut l = self.client.lease_client();
            // One keep-alive round trip per renewal: the heartbeat decides when.
            async move { l.keep_alive(lease_id).await.map(|_| ()) }
        })
        .await;
        match kept {
            Ok(()) => {}
            Err(EtcdError::LeaseGone) => {
                return Err(StoreError::lease_lost(
                    lease,
                    "its etcd lease expired (not kept alive within its TTL) or was revoked",
                ));
            }
            Err(e) => return Err(self.err(e)),
        }
        // Rewriting the lock key (same value, same lease) proves it is still ours and changes
        // its mod revision, which is how waiters and `release` see that the holder lives.
        let put = TxnOp::put(
            held.lock.clone(),
            held.value.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        );
        self.fenced(lease, held, vec![put], None).await
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        let held = self.handle(lease)?;
        let json = bounded_json(
            record,
            MAX_RECORD_BYTES,
            &self.url.redacted(),
            "an etcd value",
        )?;
        let put = TxnOp::put(held.record.clone(), json, None);
        self.fenced(lease, held, vec![put], None).await
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let held = self.handle(&lease)?;
        let lease_id = held.lease_id;
        // Revoking the lease deletes the keys bound to it: our lock key, and nothing of a newer
        // holder's (theirs is bound to their own lease). So it needs no compare.
        let deadline = Some(Instant::now() + RELEASE_BUDGET);
        let res = call(deadline, || {
            let mut l = self.client.lease_client();
            async move { l.revoke(lease_id).await.map(|_| ()) }
        })
        .await;
        match res {
            Ok(()) | Err(EtcdError::LeaseGone) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn record_limit(&self) -> Option<usize> {
        Some(MAX_RECORD_BYTES)
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let prefix = self.url.prefix.clone();
        let resp = call(None, || {
            let mut kv = self.client.kv_client();
            let prefix = prefix.clone();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await
        .map_err(|e| self.err(e))?;
        let mut out = Listing::default();
        for kv in resp.kvs() {
            let Some(id) = task_of_record_key(&prefix, kv.key()) else {
                continue;
            };
            let read = self.parse_record(&id, kv).map(Some);
            out.add(id, read)?;
        }
        out.records
            .sort_by(|a, b| (&a.key, &a.instance).cmp(&(&b.key, &b.instance)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ttl_is_never_shorter_than_the_lock_ttl() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2500)), 3);
        for ms in [1000u64, 1500, 2000, 30_000, 90_001] {
            let ttl = Duration::from_millis(ms);
            let server = Duration::from_secs(ttl_secs(ttl) as u64);
            assert!(server >= ttl, "{ms}");
            assert!(server > crate::store::liveness::holder_gives_up_after(ttl));
        }
    }

    #[test]
    fn versions_name_both_revisions() {
        assert_eq!(revisions_of("12.7"), Some((12, 7)));
        assert_eq!(revisions_of("0.0"), Some((0, 0)));
        assert_eq!(revisions_of("x"), None);
    }
}
