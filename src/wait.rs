//! `initguard wait`: for a container that needs a task's result but must not run it. Waits until
//! the record shows success (with the expected fingerprint, or any), by the store's own change
//! notification while someone holds the lease (a watch, `NOTIFY`), and by a short jittered look
//! while nobody does yet. Never takes the lease and never writes.

use crate::acquire::{Every, WAIT_LOG_EVERY};
use crate::record::Record;
use crate::store::{Store, StoreError, jittered};
use crate::task::TaskId;
use std::time::{Duration, Instant};

/// Pause between looks while nobody holds the lease (the task has not started, or between
/// attempts), and on stores whose wait would take their lock (flock); jittered to 0.5–1.5×.
const IDLE_LOOK: Duration = Duration::from_millis(400);

#[derive(Debug, Clone)]
pub struct WaitPlan {
    pub id: TaskId,
    /// The fingerprint the success must carry; `None`: any.
    pub fingerprint: Option<String>,
    /// `None`: forever.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key} gave up after {attempts} failed attempts ({reason}); nothing to wait for until `initguard reset {key}`"
    )]
    GaveUp {
        key: String,
        attempts: u32,
        reason: String,
    },
    #[error("gave up waiting after {}s for {key} to succeed ({now})", waited.as_secs())]
    Timeout {
        key: String,
        waited: Duration,
        now: String,
    },
}

fn done(rec: &Record, fp: Option<&str>) -> bool {
    match fp {
        Some(fp) => rec.is_done_for(fp),
        None => rec.state == crate::record::State::Succeeded,
    }
}

/// Wait for the task's success; the record that shows it.
pub async fn wait(store: &dyn Store, plan: &WaitPlan) -> Result<Record, WaitError> {
    let started = Instant::now();
    let fp = plan.fingerprint.as_deref();
    let mut log = Every::default();
    loop {
        let rec = crate::acquire::patiently(started, plan.timeout, || store.read(&plan.id)).await?;
        if let Some(rec) = &rec {
            if done(rec, fp) {
                return Ok(rec.clone());
            }
            if fp.is_some_and(|fp| rec.gave_up_for(fp))
                || (fp.is_none() && rec.state == crate::record::State::GaveUp)
            {
                return Err(WaitError::GaveUp {
                    key: plan.id.to_string(),
                    attempts: rec.failures,
                    reason: rec
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason recorded".into()),
                });
            }
        }
        let seen = store.observe(&plan.id).await?;
        let now = match &seen {
            Some(o) => match o.held_for {
                Some(d) => format!("running by {} since {}s", o.holder_text(), d.as_secs()),
                None => format!("running by {}", o.holder_text()),
            },
            None => match &rec {
                Some(r) => format!("not running; last {}", r.state),
                None => "not started yet".to_string(),
            },
        };
        let mut until = Instant::now() + WAIT_LOG_EVERY;
        if let Some(limit) = plan.timeout {
            if started.elapsed() >= limit {
                return Err(WaitError::Timeout {
                    key: plan.id.to_string(),
                    waited: started.elapsed(),
                    now,
                });
            }
            until = until.min(started + limit);
        }
        if log.due() {
            tracing::info!(key = %plan.id, "waiting for {} to succeed: {now}", plan.id);
        }
        match seen {
            // A held lease on a store with its own change notification: wait for it.
            Some(o) if store.needs_renewal() => {
                let until = crate::acquire::wake_by(&o, until);
                store.wait_change(&plan.id, &o, until).await?;
            }
            // Nothing to be notified of yet, or a flock (waiting on it would take it): look again.
            _ => {
                let pause =
                    jittered(IDLE_LOOK).min(until.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
        }
    }
}
