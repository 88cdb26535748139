//! Stores: where records and leases live. `Store` offers primitive operations only (take without
//! waiting, wait for a change, renew, fenced write, release, look, free a gone holder's lease);
//! the protocol over them is written once: waiting in `acquire.rs`, the run in `guard.rs`,
//! liveness for `release` in `release.rs`.
//!
//! `Lease::handle` stays a `Box<dyn Any>` that only the store which made the lease downcasts: the
//! store is picked at run time from a URL, so the guard holds a `dyn Store`, and an associated
//! lease type would make the trait unusable as an object (every caller generic over the store,
//! every CLI path monomorphised per backend). A handle from another store is reported as a lost
//! lease, never a panic.

// Shared by the stores with a record size limit (kubernetes, zookeeper, etcd).
#[cfg(any(feature = "kubernetes", feature = "zookeeper", feature = "etcd"))]
mod bounded;
mod error;
// etcd store (issue 11).
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod file;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod liveness;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sql;
mod url;
#[cfg(feature = "zookeeper")]
pub mod zookeeper;

pub use error::StoreError;
pub use sql::{SqlFailure, SqlOutcome, SqlTask, SqlTaskError};
pub use url::{StoreUrl, StoreUrlError, default_store_url, scrub, secret_parts};

use crate::record::Record;
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use std::any::Any;
use std::time::{Duration, Instant};

/// A held lease. The token strictly increases per task with every acquisition.
pub struct Lease {
    pub id: TaskId,
    pub token: u64,
    pub holder: Holder,
    pub ttl: Duration,
    /// Backend-specific state (the flocked file, the lease row, the Lease's resourceVersion).
    pub handle: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// How to acquire: lease duration, and how long to wait for a busy lease (`None`: forever).
#[derive(Debug, Clone, Copy)]
pub struct AcquireOpts {
    pub ttl: Duration,
    pub wait_timeout: Option<Duration>,
}

/// What a store saw of a lease that someone holds.
#[derive(Debug, Clone)]
pub struct Observation {
    pub holder: Option<Holder>,
    /// How long it has been held, as far as this process can tell.
    pub held_for: Option<Duration>,
    /// Changes with every write to the lease or its record (a resourceVersion, the lock file's
    /// contents, the row's expiry and update time): the same version means nothing happened.
    pub version: String,
    /// The task's record, when the store had it at hand with the lease (one read for both).
    pub record: Option<Box<Record>>,
    /// The lease duration, when the lease states it.
    pub ttl: Option<Duration>,
    /// How long until the lease lapses unless it is renewed, as far as this store can tell
    /// (`Some(ZERO)`: lapsed; `None`: it never lapses while its holder lives, as a flock).
    pub lapses_in: Option<Duration>,
}

impl Observation {
    pub fn holder_text(&self) -> String {
        self.holder
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_else(|| "an unknown holder".to_string())
    }
}

/// The answer of `Store::try_acquire`.
#[derive(Debug)]
pub enum Attempt {
    Taken(Lease),
    Busy(Observation),
}

/// What `Store::list` found.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<Record>,
    /// Records that exist but cannot be read, with why (`Corrupt` or `NewerSchema`).
    pub unreadable: Vec<(TaskId, StoreError)>,
}

impl Listing {
    /// File a record read: readable ones into `records`, corrupt or newer ones into
    /// `unreadable`; any other error (the store failing) ends the listing.
    pub fn add(
        &mut self,
        id: TaskId,
        read: Result<Option<Record>, StoreError>,
    ) -> Result<(), StoreError> {
        match read {
            Ok(Some(rec)) => self.records.push(rec),
            Ok(None) => {}
            Err(e @ (StoreError::Corrupt { .. } | StoreError::NewerSchema { .. })) => {
                self.unreadable.push((id, e));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// What `release::release_holder` (the `initguard release` command) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// A lease owned by this holder (same Pod, or same host outside Kubernetes) whose holder is
    /// gone (it stopped renewing) was given up.
    Released { holder: Holder },
    /// The lease is this Pod's (or host's), but its holder is alive: it renewed the lease less
    /// than `renewed_within` ago, while we watched. Nothing done; it gives the lease up on exit.
    StillAlive {
        holder: Holder,
        renewed_within: Duration,
    },
    /// The lease is held by someone else: nothing done.
    HeldByOther { holder: Option<Holder> },
    /// Nobody holds the lease: nothing to do.
    NotHeld,
}

/// A moment of a run worth telling operators about outside the logs (a Kubernetes Event on the
/// Pod). Stores without such a channel ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// The command is about to run under the lease.
    Started,
    /// Nothing ran: the task had already succeeded for this fingerprint.
    Skipped,
    Succeeded,
    Failed,
    /// Failed `--max-attempts` times; nothing runs until `initguard reset`.
    GaveUp,
    /// A predecessor's `running` record was found after its lease lapsed.
    InterruptedPredecessor,
}

impl TaskEvent {
    /// CamelCase reason, as Kubernetes Events spell them.
    pub fn reason(self) -> &'static str {
        match self {
            TaskEvent::Started => "InitguardStarted",
            TaskEvent::Skipped => "InitguardSkipped",
            TaskEvent::Succeeded => "InitguardSucceeded",
            TaskEvent::Failed => "InitguardFailed",
            TaskEvent::GaveUp => "InitguardGaveUp",
            TaskEvent::InterruptedPredecessor => "InitguardInterruptedPredecessor",
        }
    }

    /// Whether an operator should look at it (Kubernetes Event type `Warning`).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            TaskEvent::Failed | TaskEvent::GaveUp | TaskEvent::InterruptedPredecessor
        )
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Where this store is, for logs (never includes credentials).
    fn describe(&self) -> String;

    /// Whether leases must be renewed while held (file locks need not: the kernel holds them).
    fn needs_renewal(&self) -> bool {
        true
    }

    /// The task's record, if any.
    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError>;

    /// Take the task's lease if it is free or lapsed, without waiting; otherwise say who holds
    /// it. Calls for one task from one process form one acquisition: a store may keep state
    /// between them (when it first saw the lease unchanged, a lock a waiting thread got).
    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError>;

    /// Return when the lease or record seen in `seen` may have changed (a watch event, a
    /// notification, a lock freed, the lease about to lapse), or at `until` at the latest.
    /// Returning early without a change is allowed; the caller looks again.
    async fn wait_change(
        &self,
        id: &TaskId,
        seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError>;

    /// The task's lease as it is, without taking it; `None` when nobody holds it.
    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError>;

    /// Free the lease of a holder judged gone (`initguard release`), only if it is still exactly
    /// as `seen` (same version); `false` when it changed meanwhile or cannot be freed by anyone
    /// but its holder (a flock).
    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError>;

    /// Extend the lease; `StoreError::LeaseLost` when someone else has taken it.
    async fn renew(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Write the record, fenced: rejected with `StoreError::LeaseLost` unless `lease` is current.
    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError>;

    /// Give the lease up. Releasing a lease already lost is not an error.
    async fn release(&self, lease: Lease) -> Result<(), StoreError>;

    /// Every record in the store, for `status`, `history` and `reset`. A record that cannot be
    /// read (corrupt, newer schema) does not hide the others: it goes to `Listing::unreadable`.
    async fn list(&self) -> Result<Listing, StoreError>;

    /// Whether `run_sql_exactly_once` is available (the store is a database).
    fn supports_sql(&self) -> bool {
        false
    }

    /// Run an SQL task and write `done` (its `succeeded` record, fenced by `lease`) so that both
    /// commit together or not at all. An SQL error rolls back and comes back as
    /// `SqlTaskError::Sql`; the caller records the failure in a separate write. Only stores that
    /// are a database can do this; the others say so.
    async fn run_sql_exactly_once(
        &self,
        lease: &Lease,
        task: &SqlTask,
        done: &Record,
    ) -> Result<SqlOutcome, SqlTaskError> {
        let _ = (lease, task, done);
        Err(SqlTaskError::Store(StoreError::Unsupported {
            store: self.describe(),
            what: "SQL tasks (--sql, --sql-inline); use a postgres:// store".into(),
        }))
    }

    /// Tell operators about a moment of the run (Kubernetes: an Event on the Pod). Best effort:
    /// never fails the run, so it returns nothing.
    async fn event(&self, _id: &TaskId, _kind: TaskEvent, _message: &str) {}

    /// A descriptor whose lifetime is the lease's (the flocked lock file), for the supervisor to
    /// hold as well: the lock then outlives a killed initguard until the supervisor has killed
    /// the command's tree, so the next holder cannot start beside a dying one. `None` for
    /// leases that lapse by time.
    fn lease_fd(&self, _lease: &Lease) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Largest record this store keeps, in bytes, when it has to cap them (tail and history are
    /// trimmed to fit); `None` when records are only bounded by `--tail` and history length.
    fn record_limit(&self) -> Option<usize> {
        None
    }
}

/// Open the store an URL names. Backends not compiled in are a usage error, not a panic.
pub async fn open(url: &StoreUrl) -> Result<Box<dyn Store>, StoreError> {
    match url {
        StoreUrl::File(dir) => Ok(Box::new(file::FileStore::open(dir)?)),
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(pg) => Ok(Box::new(postgres::PgStore::open(pg).await?)),
        #[cfg(feature = "kubernetes")]
        StoreUrl::Kubernetes { namespace, context } => Ok(Box::new(
            kubernetes::KubeStore::open(namespace.as_deref(), context.as_deref()).await?,
        )),
        #[cfg(feature = "zookeeper")]
        StoreUrl::Zookeeper(zk) => Ok(Box::new(zookeeper::ZkStore::open(zk).await?)),
        // etcd store (issue 11).
        #[cfg(feature = "etcd")]
        StoreUrl::Etcd(url) => Ok(Box::new(etcd::EtcdStore::open(url).await?)),
    }
}

/// `open`, and the record of `id` read as soon as the store is open: in the same round trip as
/// opening where the store can do that (PostgreSQL), else right after. The read's error is the
/// read's, returned beside the open store.
pub async fn open_reading(
    url: &StoreUrl,
    id: &TaskId,
) -> Result<(Box<dyn Store>, Result<Option<Record>, StoreError>), StoreError> {
    #[cfg(feature = "postgres")]
    if let StoreUrl::Postgres(pg) = url {
        let (store, early) = postgres::PgStore::open_reading(pg, id).await?;
        return Ok((Box::new(store), early));
    }
    let store = open(url).await?;
    let early = store.read(id).await;
    Ok((store, early))
}

/// The record of `id`, for commands that only read: no store is created or upgraded by it
/// (PostgreSQL's `open` creates initguard's tables; the other stores' reads create nothing).
pub async fn read_only(url: &StoreUrl, id: &TaskId) -> Result<Option<Record>, StoreError> {
    #[cfg(feature = "postgres")]
    if let StoreUrl::Postgres(pg) = url {
        return postgres::PgStore::read_only(pg, id).await;
    }
    open(url).await?.read(id).await
}

/// Small jittered pause for backends that poll; jitter spreads many waiters apart.
pub fn jittered(base: Duration) -> Duration {
    let factor = 0.5 + rand::random::<f64>();
    base.mul_f64(factor)
}
