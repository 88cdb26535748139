//! Waiting for a lease, written once for every store: look (`try_acquire`), and while someone
//! else holds it, say who every few seconds, wait for a change (`wait_change`: a watch, a
//! notification, a freed flock) and look again, until `--wait-timeout`. A waiter that sees the
//! task succeed with its fingerprint while it waits stops there, without taking the lease.

use crate::record::Record;
use crate::store::{AcquireOpts, Attempt, Lease, Observation, Store, StoreError};
use crate::task::{Holder, TaskId};
use std::time::{Duration, Instant};

/// How often a blocked acquirer says who it waits for, and looks again at the latest.
pub const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// How a wait for the lease ended, when it did not fail.
#[derive(Debug)]
pub enum Acquired {
    Lease(Lease),
    /// The record turned `succeeded` with the fingerprint we wait for: nothing left to do.
    DoneMeanwhile(Record),
}

/// Take the lease of `id`, waiting while another holder has it. With `done_for`, a record seen
/// succeeded with that fingerprint while waiting ends the wait (`Acquired::DoneMeanwhile`).
pub async fn acquire(
    store: &dyn Store,
    id: &TaskId,
    holder: &Holder,
    opts: AcquireOpts,
    done_for: Option<&str>,
) -> Result<Acquired, StoreError> {
    let started = Instant::now();
    let mut log = WaitLog::new(id);
    let mut waited = false;
    loop {
        // Woken by a change: it may be the task's success (the holder writes it, then lets go).
        // One read tells, before a take that would only find it done.
        if waited && let Some(fp) = done_for {
            let rec = patiently(started, opts.wait_timeout, || store.read(id)).await?;
            if let Some(rec) = rec.filter(|r| r.is_done_for(fp)) {
                return Ok(Acquired::DoneMeanwhile(rec));
            }
        }
        let attempt = patiently(started, opts.wait_timeout, || {
            store.try_acquire(id, holder, opts.ttl)
        })
        .await?;
        let seen = match attempt {
            Attempt::Taken(lease) => return Ok(Acquired::Lease(lease)),
            Attempt::Busy(seen) => seen,
        };
        if let (Some(fp), Some(rec)) = (done_for, &seen.record)
            && rec.is_done_for(fp)
        {
            return Ok(Acquired::DoneMeanwhile(rec.as_ref().clone()));
        }
        log.tick(&seen);
        let now = Instant::now();
        let mut until = now + WAIT_LOG_EVERY;
        if let Some(limit) = opts.wait_timeout {
            let end = started + limit;
            if now >= end {
                return Err(StoreError::WaitTimeout {
                    key: id.to_string(),
                    holder: seen.holder_text(),
                    waited: started.elapsed(),
                });
            }
            until = until.min(end);
        }
        // A lease that would lapse before `until` is looked at again the moment it does.
        let until = wake_by(&seen, until);
        patiently(started, opts.wait_timeout, || {
            store.wait_change(id, &seen, until)
        })
        .await?;
        waited = true;
    }
}

/// Past the moment a busy lease would lapse, so that the next look finds it lapsed.
const LAPSE_SLACK: Duration = Duration::from_millis(50);

/// `until`, or just after the moment `seen` would lapse if that comes first.
pub fn wake_by(seen: &Observation, until: Instant) -> Instant {
    seen.lapses_in
        .map_or(until, |left| until.min(Instant::now() + left + LAPSE_SLACK))
}

/// Pause between tries while the store is overloaded (jittered to 0.5–1.5×).
const OVERLOADED_PAUSE: Duration = Duration::from_secs(1);

/// `f`, tried again after a jittered pause while the store says it is overloaded (too many
/// connections), until `wait_timeout` (counted from `started`) runs out; then its last error.
pub async fn patiently<T, F, Fut>(
    started: Instant,
    wait_timeout: Option<Duration>,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    loop {
        match f().await {
            Err(e @ StoreError::Overloaded { .. }) => {
                let pause = crate::store::jittered(OVERLOADED_PAUSE);
                if wait_timeout.is_some_and(|limit| started.elapsed() + pause >= limit) {
                    return Err(e);
                }
                tracing::debug!("{e}; trying again in {}ms", pause.as_millis());
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// At most once every `WAIT_LOG_EVERY`: how often a waiter says what it waits for.
#[derive(Default)]
pub(crate) struct Every {
    last: Option<Instant>,
}

impl Every {
    /// True the first time, then again once `WAIT_LOG_EVERY` has passed since the last true.
    pub fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < WAIT_LOG_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// The "waiting for KEY held by HOLDER since Ns" line, at most every `WAIT_LOG_EVERY`.
struct WaitLog {
    task: String,
    every: Every,
}

impl WaitLog {
    fn new(id: &TaskId) -> WaitLog {
        WaitLog {
            task: id.to_string(),
            every: Every::default(),
        }
    }

    fn tick(&mut self, seen: &Observation) {
        if !self.every.due() {
            return;
        }
        match seen.held_for {
            Some(d) => tracing::info!(
                key = %self.task,
                "waiting for {} held by {} since {}s",
                self.task,
                seen.holder_text(),
                d.as_secs()
            ),
            None => {
                tracing::info!(key = %self.task, "waiting for {} held by {}", self.task, seen.holder_text())
            }
        }
    }
}
