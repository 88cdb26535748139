//! `steps repair`: the set's history realigned with the files as they are now, in one fenced
//! transaction. Applied steps get their file's current checksum, rows of steps whose file is
//! gone are removed, failed rows are cleared (apply runs those steps again from the start).
//! A script step found `running` (interrupted) is cleared too: it runs again as a new step
//! (`INITGUARD_PREVIOUS=none`), as the record-backed history's repair does. Left as they are,
//! each said in the lines returned: a failed or interrupted no-transaction SQL step that
//! completed some of its statements (clearing it would run those again; apply resumes after
//! them), and a no-transaction step found `running` (an interruption, which apply resumes).
//! Never touches anything but `steps_history` rows of the set.

use super::conn::Target;
use super::error::TargetError;
use super::rows::{self, literal};
use crate::steps::repair::{Change, plan};
use crate::steps::{Applied, Checksum, RunInfo, Step, StepSet, checksum};
use crate::store::postgres::quote_ident;

fn line(a: &Applied, step: Option<&Step>, change: &Change) -> String {
    let file = step
        .map(|s| s.file.clone())
        .unwrap_or_else(|| a.description.clone());
    let id = &a.id;
    let short = |c: &str| checksum::short(&Checksum(c.to_string())).to_string();
    match change {
        Change::Realign { from, to } => format!(
            "{id} ({file}): checksum realigned to the file: {} -> {}",
            from.as_deref().map(short).unwrap_or_else(|| "none".into()),
            short(to)
        ),
        Change::RemoveMissing => {
            format!("{id} ({file}): removed from history: its file is gone")
        }
        Change::ClearFailed => {
            format!("{id} ({file}): failed run cleared from history; apply runs it again")
        }
        Change::KeepPartial { done } => format!(
            "{id} ({file}): failed after {done} completed statements; kept, so that apply resumes at statement {}",
            done + 1
        ),
        Change::ClearInterrupted => format!(
            "{id} ({file}): interrupted run cleared from history; apply runs it again as a new step"
        ),
        Change::KeepRunning => format!(
            "{id} ({file}): found running (interrupted) after {} completed statements; kept, so that apply resumes after them",
            a.statements_done
        ),
    }
}

impl Target {
    /// Realign the set's history with its files (see the module comment), fenced by the run's
    /// token; one line per row changed or deliberately kept. Without steps tables: nothing.
    pub async fn repair(
        &self,
        set: &str,
        steps: &StepSet,
        run: &RunInfo,
    ) -> Result<Vec<String>, TargetError> {
        self.exclusive(async {
            let history = self.read_history(set).await?;
            let changes = plan(&history, steps);
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            let table = format!("{}.steps_history", quote_ident(&self.schema));
            let mut stmts = Vec::new();
            for (a, _, change) in &changes {
                let key = literal(&rows::key(&a.id));
                let which = format!("set_name = {} AND step = {key}", literal(set));
                match change {
                    Change::Realign { to, .. } => stmts.push(format!(
                        "UPDATE {table} SET checksum = {} WHERE {which}",
                        literal(to)
                    )),
                    Change::RemoveMissing | Change::ClearFailed | Change::ClearInterrupted => {
                        stmts.push(format!("DELETE FROM {table} WHERE {which}"))
                    }
                    Change::KeepPartial { .. } | Change::KeepRunning => {}
                }
            }
            if !stmts.is_empty() {
                self.fenced_tx(set, run, "repairing the steps history", &stmts.join(";"))
                    .await?;
            }
            Ok(changes
                .iter()
                .map(|(a, s, c)| line(a, s.as_ref(), c))
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{AppliedState, Kind, StepId, Version};
    use std::path::PathBuf;

    fn step(v: u64, sum: &str, no_tx: bool) -> Step {
        Step {
            id: StepId::Versioned(Version {
                parts: vec![v],
                text: v.to_string(),
            }),
            description: format!("s{v}"),
            kind: Kind::Sql,
            file: format!("V{v}__s{v}.sql"),
            path: PathBuf::from(format!("V{v}__s{v}.sql")),
            checksum: Checksum(sum.into()),
            no_transaction: no_tx,
        }
    }

    fn applied(s: &Step, state: AppliedState, sum: Option<&str>, done: u32) -> Applied {
        Applied {
            id: s.id.clone(),
            description: s.description.clone(),
            kind: s.kind,
            checksum: sum.map(|c| Checksum(c.into())),
            state,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            holder: "h".into(),
            token: 1,
            statements_done: done,
            error: None,
            adopted_from: None,
        }
    }

    #[test]
    fn repair_realigns_removes_clears_and_keeps_what_apply_needs() {
        let (s1, s2, s3, s4, s5) = (
            step(1, "sha256:aaa", false),
            step(2, "sha256:bbb", false),
            step(3, "sha256:ccc", false),
            step(4, "sha256:ddd", true),
            step(5, "sha256:eee", false),
        );
        let mut s6 = step(6, "sha256:fff", false);
        s6.kind = Kind::Script;
        s6.file = "V6__s6.sh".into();
        let gone = step(9, "sha256:zzz", false);
        let history = vec![
            applied(&s1, AppliedState::Applied, Some("sha256:aaa"), 0),
            applied(&s2, AppliedState::Applied, Some("sha256:old"), 0),
            applied(&s3, AppliedState::Failed, Some("sha256:ccc"), 0),
            applied(&s4, AppliedState::Failed, Some("sha256:ddd"), 2),
            applied(&s5, AppliedState::Running, Some("sha256:eee"), 0),
            applied(&s6, AppliedState::Running, Some("sha256:fff"), 0),
            applied(&gone, AppliedState::Applied, Some("sha256:zzz"), 0),
        ];
        let set = StepSet {
            steps: vec![s1, s2, s3, s4, s5, s6],
            ..Default::default()
        };
        let p = plan(&history, &set);
        let lines: Vec<String> = p.iter().map(|(a, s, c)| line(a, s.as_ref(), c)).collect();
        assert_eq!(
            lines,
            [
                "2 (V2__s2.sql): checksum realigned to the file: old -> bbb",
                "3 (V3__s3.sql): failed run cleared from history; apply runs it again",
                "4 (V4__s4.sql): failed after 2 completed statements; kept, so that apply resumes at statement 3",
                "5 (V5__s5.sql): found running (interrupted) after 0 completed statements; kept, so that apply resumes after them",
                "6 (V6__s6.sh): interrupted run cleared from history; apply runs it again as a new step",
                "9 (s9): removed from history: its file is gone",
            ]
        );
    }
}
