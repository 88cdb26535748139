//! Cancellations still on their way when the process is about to exit.
//!
//! A statement is cancelled from `Drop` (a task or step given up on: lease lost, signal), which
//! cannot wait, so the cancel request goes out from a spawned task. Were the process to exit
//! before that task ran, the request would never be sent and the statement would run on, and
//! commit, after initguard had exited 75 or 143. The tasks are kept here, process-wide because
//! whatever dropped the connection is gone by then, for the CLI to wait for before it exits.

use std::sync::Mutex;
use std::time::Duration;
use tokio::task::JoinHandle;

static PENDING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// How long an exit waits for them: a healthy server takes the request and ends the statement in
/// milliseconds; one that does not within this is unreachable, and waiting longer would only
/// delay the exit (the lease may be lapsing meanwhile).
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// How long one cancellation task lives at most: in a process that goes on, a connection that
/// never answers must not keep its task (and socket) forever.
pub(super) const TASK_LIMIT: Duration = Duration::from_secs(10);

pub(super) fn track(task: JoinHandle<()>) {
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    pending.retain(|t| !t.is_finished());
    pending.push(task);
}

/// Wait, at most `limit` in all, until every cancellation sent has reached its server and the
/// connection it was for has answered everything sent on it before (what was cancelled ended).
pub(crate) async fn settle(limit: Duration) {
    let pending = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|p| p.into_inner()));
    let deadline = tokio::time::Instant::now() + limit;
    for task in pending {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::debug!("a statement's cancellation did not finish before the exit");
            return;
        }
    }
}
