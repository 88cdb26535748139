//! How the target database can fail a step run, in typed terms the run matches on (fenced,
//! a step's own SQL error, a step refused before anything was sent). Plain data; no I/O.

use crate::steps::Problem;
use crate::store::{SqlFailure, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Connecting failed (misconfigured, unreachable, refused, overloaded), or the target refused
    /// one of initguard's statements for want of a privilege (`Forbidden`): as the store says it.
    #[error(transparent)]
    Connect(#[from] StoreError),
    /// One of initguard's own statements in the target failed (the connection broke, a
    /// permission is missing).
    #[error("target database {target}: {what}: {reason}")]
    Db {
        target: String,
        what: String,
        reason: String,
    },
    /// A newer applier has registered a higher fencing token for the set: nothing of this run's
    /// current step was committed.
    #[error(
        "steps of {set} were fenced off in the target database: this run has token {token}, a newer applier has {newer}; nothing more is applied by this run"
    )]
    Fenced { set: String, token: u64, newer: u64 },
    /// Called before `begin` registered the run's token.
    #[error("steps of {set}: the target database was not prepared (`begin`) for token {token}")]
    NotBegun { set: String, token: u64 },
    /// The step's SQL failed on the server: a transactional step was rolled back; a
    /// no-transaction step stopped at that statement (the ones before it stay done). Recorded
    /// `failed` in the history.
    #[error("step {step} ({file}) failed: {failure}")]
    StepFailed {
        step: String,
        file: String,
        failure: Box<SqlFailure>,
    },
    /// The step was not sent at all (transaction control in a transactional step, a file that
    /// is not UTF-8, text that ends inside a string or comment).
    #[error("step {step} ({file}) was not run: {reason}")]
    Refused {
        step: String,
        file: String,
        reason: String,
    },
    /// History already records the step as applied (another applier committed it after this run
    /// read the history): nothing was run.
    #[error("step {step} is already applied in the target database; nothing was run")]
    AlreadyApplied { step: String },
    /// The step was sent before the one before it had answered, and that one turned out not
    /// applied: this one did not run either. (Judged only when that one committed, so never
    /// expected: history changed under the run.)
    #[error("step {step} was not run: {reason}")]
    OutOfTurn { step: String, reason: String },
    /// The adopted tool's history cannot be trusted as it is (a dirty golang-migrate version, a
    /// failed Flyway migration): nothing was adopted.
    #[error("cannot adopt the history of {tool}: {}", problems.iter().map(|p| format!("{} ({})", p.detail, p.fix)).collect::<Vec<_>>().join("; "))]
    Untrusted {
        tool: String,
        problems: Vec<Problem>,
    },
    /// The adopted tool's history table is not laid out as that tool lays it out.
    #[error("cannot adopt the history of {tool}: {reason}")]
    NotAdoptable { tool: String, reason: String },
}
