//! Work the guard runs in-process under its lease instead of a command (`initguard steps`): the
//! `Body` trait, and `BodyCtx`, what the protocol lends such work while it holds the lease — the
//! token, the previous run's state, commands run under the lease's supervision, store calls that
//! give way to a lost lease or a stop signal, and fenced writes of the record. The protocol itself
//! (running/succeeded/failed/interrupted, events, the final write) stays in `guard.rs`; nothing
//! here decides what a result means.

use crate::heartbeat::Heartbeat;
use crate::record::Record;
use crate::runner::{self, ChildOutcome, ChildResult, ChildSpec, Signals};
use crate::store::{Lease, Store, StoreError};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use std::future::Future;

/// In-process work run under the lease, once per attempt.
#[async_trait]
pub trait Body: Send + Sync {
    /// Do the work. The guard has written `running` before and writes the outcome after.
    async fn run(&self, ctx: &mut BodyCtx<'_>) -> BodyEnd;
}

/// Why work under the lease had to stop.
#[derive(Debug)]
pub enum Stop {
    /// The lease is lost (or may be): stop at once, record nothing.
    LeaseLost(String),
    /// A stop signal arrived (SIGTERM, SIGINT, SIGHUP, SIGQUIT).
    Signal(i32),
    /// The store failed a write.
    Store(StoreError),
}

/// How the work ended.
#[derive(Debug)]
pub enum BodyEnd {
    /// All done: the guard records success.
    Done,
    /// Failed: recorded `failed` with `reason`; initguard exits with `outcome`'s code.
    Failed {
        outcome: ChildOutcome,
        reason: String,
    },
    Stopped(Stop),
}

/// What the guard lends a `Body` while it holds the lease.
pub struct BodyCtx<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) lease: &'a Lease,
    pub(crate) heartbeat: &'a mut Heartbeat,
    pub(crate) signals: &'a mut Signals,
    pub(crate) record: &'a mut Record,
    pub(crate) previous: &'static str,
    /// The combined output of the commands run, for the record's tail.
    pub(crate) tail: Vec<u8>,
    pub(crate) tail_bytes: usize,
}

impl BodyCtx<'_> {
    pub fn id(&self) -> &TaskId {
        &self.lease.id
    }

    pub fn token(&self) -> u64 {
        self.lease.token
    }

    pub fn holder(&self) -> &Holder {
        &self.lease.holder
    }

    /// How the previous run of the task ended: `none`, `failed` or `interrupted`.
    pub fn previous(&self) -> &'static str {
        self.previous
    }

    /// The task's record as it is now (written `running` by this attempt).
    pub fn record(&self) -> &Record {
        self.record
    }

    /// `work`, unless the lease is lost or a stop signal arrives first; then `work` is dropped
    /// wherever it was (a database transaction in it is rolled back).
    ///
    /// A renewal that is due is made first, to its end: raced against many short pieces of work
    /// (1,000 one-line script steps), a renewal started inside the race could be dropped whenever
    /// the work won, again and again, until the lease lapsed.
    pub async fn guarded<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Stop> {
        let (store, lease) = (self.store, self.lease);
        if store.needs_renewal() {
            self.fresh().await?;
        }
        tokio::select! {
            biased;
            signal = self.signals.recv() => Err(Stop::Signal(signal)),
            reason = self.heartbeat.lost(store, lease) => Err(Stop::LeaseLost(reason)),
            out = work => Ok(out),
        }
    }

    /// Renew the lease now unless a renewal is recent: before starting something long.
    pub async fn fresh(&mut self) -> Result<(), Stop> {
        let (store, lease) = (self.store, self.lease);
        tokio::select! {
            biased;
            signal = self.signals.recv() => Err(Stop::Signal(signal)),
            res = self.heartbeat.ensure_fresh(store, lease) => res.map_err(Stop::LeaseLost),
        }
    }

    /// Run a command under the lease's supervision: it is killed at the lease's deadline, when
    /// initguard dies, or at once when the lease is lost; stop signals are forwarded to it. Its
    /// output passes through and is kept for the record's tail.
    pub async fn run_child(&mut self, spec: &ChildSpec) -> ChildResult {
        let (store, lease) = (self.store, self.lease);
        let watch = runner::Supervision {
            deadline: self.heartbeat.deadline(),
            hold: store.lease_fd(lease),
        };
        let res = runner::run(spec, self.signals, self.heartbeat.lost(store, lease), watch).await;
        self.tail.extend_from_slice(&res.tail);
        let excess = self.tail.len().saturating_sub(self.tail_bytes);
        self.tail.drain(..excess);
        res
    }

    /// Change the record and write it, fenced by the lease. Not given up on a stop signal: the
    /// write may record an effect that already happened (a step's end); the signal stays pending
    /// for the next `guarded` or `run_child`.
    pub async fn write_record(&mut self, edit: impl FnOnce(&mut Record)) -> Result<(), Stop> {
        edit(self.record);
        self.record.updated_at = chrono::Utc::now();
        match self.store.write(self.lease, self.record).await {
            Ok(()) => Ok(()),
            Err(StoreError::LeaseLost { reason, .. }) => Err(Stop::LeaseLost(reason)),
            Err(e) => Err(Stop::Store(e)),
        }
    }
}
