//! What a blocked acquirer knows about the holder, and the rate limit for the "waiting for" line.

use super::StoreError;
use crate::task::{Holder, TaskId};
use std::time::{Duration, Instant};

/// Who holds a lease we are waiting for, and since when (as observed by this process).
#[derive(Debug, Clone)]
pub struct Busy {
    pub holder: Option<Holder>,
    pub held_for: Option<Duration>,
}

impl Busy {
    pub fn holder_text(&self) -> String {
        self.holder
            .as_ref()
            .map(|h| h.to_string())
            .unwrap_or_else(|| "an unknown holder".to_string())
    }
}

/// How long a blocked acquirer may wait before looking again: `want`, cut to what is left of
/// `wait_timeout` (counted from `started`); `WaitTimeout` once nothing is left.
pub fn next_wait(
    id: &TaskId,
    busy: &Busy,
    started: Instant,
    wait_timeout: Option<Duration>,
    want: Duration,
) -> Result<Duration, StoreError> {
    let Some(limit) = wait_timeout else {
        return Ok(want);
    };
    let left = limit.saturating_sub(started.elapsed());
    if left.is_zero() {
        return Err(StoreError::WaitTimeout {
            key: id.to_string(),
            holder: busy.holder_text(),
            waited: started.elapsed(),
        });
    }
    Ok(want.min(left))
}

/// How often a blocked acquirer says who it waits for.
pub const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);

/// The "waiting for KEY held by HOLDER since Ns" line, at most every `WAIT_LOG_EVERY`.
pub struct WaitLog {
    task: String,
    last: Option<Instant>,
}

impl WaitLog {
    pub fn new(id: &TaskId) -> WaitLog {
        WaitLog {
            task: id.to_string(),
            last: None,
        }
    }

    pub fn tick(&mut self, busy: &Busy) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|l| now.duration_since(l) >= WAIT_LOG_EVERY)
        {
            self.last = Some(now);
            match busy.held_for {
                Some(d) => tracing::info!(
                    key = %self.task,
                    "waiting for {} held by {} since {}s",
                    self.task,
                    busy.holder_text(),
                    d.as_secs()
                ),
                None => {
                    tracing::info!(key = %self.task, "waiting for {} held by {}", self.task, busy.holder_text())
                }
            }
        }
    }
}
