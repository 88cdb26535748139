//! What `steps repair` does to each history entry, decided once for both places history lives
//! (the target database, `target/repair.rs`; the set's record, `run::repair_record`): applied
//! steps get their file's current checksum, entries whose file is gone are removed, failed ones
//! and interrupted script steps are cleared (apply runs them again), and a no-transaction SQL
//! step with completed statements is kept so that apply resumes after them.

use super::{Applied, AppliedState, Kind, Step, StepSet};

/// What repair does to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Realign { from: Option<String>, to: String },
    RemoveMissing,
    ClearFailed,
    ClearInterrupted,
    KeepPartial { done: u32 },
    KeepRunning,
}

/// The changes for the set's history against its files, in history order.
pub(crate) fn plan<'a>(
    history: &'a [Applied],
    steps: &StepSet,
) -> Vec<(&'a Applied, Option<Step>, Change)> {
    let mut out = Vec::new();
    for a in history {
        let step = steps.steps.iter().find(|s| s.id == a.id).cloned();
        let change = match (&step, a.state) {
            (None, _) => Change::RemoveMissing,
            (Some(s), AppliedState::Applied) => {
                if a.checksum.as_ref() == Some(&s.checksum) {
                    continue;
                }
                Change::Realign {
                    from: a.checksum.as_ref().map(|c| c.0.clone()),
                    to: s.checksum.0.clone(),
                }
            }
            (Some(s), AppliedState::Failed) if s.no_transaction && a.statements_done > 0 => {
                Change::KeepPartial {
                    done: a.statements_done,
                }
            }
            (Some(_), AppliedState::Failed) => Change::ClearFailed,
            (Some(s), AppliedState::Running) if s.kind == Kind::Script => Change::ClearInterrupted,
            (Some(_), AppliedState::Running) => Change::KeepRunning,
        };
        out.push((a, step, change));
    }
    out
}
