//! Validation: the steps on disk against what history says, giving the problems that block an
//! apply, the ones the user allowed (warnings), and the plan — which steps to run, in order, and
//! why. Pure: no I/O; history comes from the caller (target database or the set's record).
//!
//! Rules:
//! - every problem discovery found (unreadable name, not executable, duplicate) is an error;
//! - a versioned step applied with another checksum is `Changed`; a history entry without a
//!   checksum (adopted from a tool whose checksums are not comparable) never is;
//! - an applied (or running) history entry without a file is `Missing`;
//! - a pending versioned step below the highest applied version is `OutOfOrder`;
//! - each of these three is an error, or with `Allow` a warning (a changed step is then left as
//!   applied, a missing one ignored, an out-of-order one applied in version order);
//! - history `Failed` → planned again with `Previous::Failed`; `Running` → `Previous::Interrupted`
//!   (the caller holds the lease, so nobody else is running it; `--on-interrupted` is the caller's);
//!   both are reported as warnings too, as is a failed entry whose file is gone (not retried);
//!   a no-transaction SQL step resumes at `statements_done` (even if its file changed since: the
//!   usual fix edits the statement that failed), any other step starts over;
//! - the plan: pending versioned steps in version order, then repeatable steps (by description)
//!   that never ran or whose checksum differs from their last run (`Previous::Changed`).

use super::{
    Allow, Applied, AppliedState, Planned, Previous, Problem, ProblemKind, Step, StepId, StepSet,
    checksum,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What `check` found: `errors` block an apply; `warnings` do not; `plan` is what to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validation {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub plan: Vec<Planned>,
}

impl Validation {
    /// No blocking problem.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The highest version history holds as applied.
pub fn highest_applied(history: &[Applied]) -> Option<&super::Version> {
    history
        .iter()
        .filter(|a| a.state == AppliedState::Applied)
        .filter_map(|a| match &a.id {
            StepId::Versioned(v) => Some(v),
            StepId::Repeatable(_) => None,
        })
        .max()
}

/// Checks `set` against `history` (see the module comment for the rules).
pub fn check(set: &StepSet, history: &[Applied], allow: Allow) -> Validation {
    let dir = set.dir.as_path();
    let mut v = Validation {
        errors: set.problems.clone(),
        ..Validation::default()
    };
    // One entry per step; should a store hold two, the last one wins.
    let by_id: HashMap<&StepId, &Applied> = history.iter().map(|a| (&a.id, a)).collect();
    let highest = highest_applied(history);

    let mut versioned = Vec::new();
    let mut repeatable = Vec::new();
    for step in &set.steps {
        let planned = |previous, a: Option<&Applied>| Planned {
            step: step.clone(),
            previous,
            resume_at: match a {
                Some(a) if step.no_transaction => a.statements_done,
                _ => 0,
            },
        };
        let list = match step.id {
            StepId::Versioned(_) => &mut versioned,
            StepId::Repeatable(_) => &mut repeatable,
        };
        let Some(&a) = by_id.get(&step.id) else {
            if let (StepId::Versioned(ver), Some(high)) = (&step.id, highest)
                && ver < high
            {
                let p = out_of_order(step, high, allow.out_of_order);
                if allow.out_of_order {
                    v.warnings.push(p);
                    list.push(planned(Previous::None, None));
                } else {
                    v.errors.push(p);
                }
            } else {
                list.push(planned(Previous::None, None));
            }
            continue;
        };
        match a.state {
            AppliedState::Applied => {
                let changed = a.checksum.as_ref().is_some_and(|c| *c != step.checksum);
                match (&step.id, changed) {
                    (_, false) => {}
                    (StepId::Repeatable(_), true) => list.push(planned(Previous::Changed, None)),
                    (StepId::Versioned(_), true) => {
                        let p = changed_problem(dir, step, a, allow.changed);
                        if allow.changed {
                            v.warnings.push(p);
                        } else {
                            v.errors.push(p);
                        }
                    }
                }
            }
            AppliedState::Failed => {
                v.warnings.push(failed_problem(dir, a, Some(step)));
                list.push(planned(Previous::Failed, Some(a)));
            }
            AppliedState::Running => {
                v.warnings.push(interrupted_problem(a, step));
                list.push(planned(Previous::Interrupted, Some(a)));
            }
        }
    }

    let on_disk: HashSet<&StepId> = set.steps.iter().map(|s| &s.id).collect();
    let mut gone: Vec<&Applied> = by_id
        .values()
        .copied()
        .filter(|a| !on_disk.contains(&a.id))
        .collect();
    gone.sort_by(|a, b| a.id.cmp(&b.id));
    for a in gone {
        match a.state {
            AppliedState::Failed => v.warnings.push(failed_problem(dir, a, None)),
            AppliedState::Applied | AppliedState::Running => {
                let p = missing_problem(dir, a, allow.missing);
                if allow.missing {
                    v.warnings.push(p);
                } else {
                    v.errors.push(p);
                }
            }
        }
    }

    v.plan = versioned;
    v.plan.append(&mut repeatable);
    v
}

fn repair(dir: &Path) -> String {
    format!("`initguard steps repair {}`", dir.display())
}

fn changed_problem(dir: &Path, step: &Step, a: &Applied, allowed: bool) -> Problem {
    let was = a.checksum.as_ref().map_or("-", checksum::short);
    let detail = format!(
        "applied with sha256:{was}, the file now has sha256:{}",
        checksum::short(&step.checksum)
    );
    let (detail, fix) = if allowed {
        (
            format!("{detail} (--allow-changed: left as applied, not run again)"),
            format!(
                "run {} to record the file as it is now, or restore the file",
                repair(dir)
            ),
        )
    } else {
        (
            detail,
            format!(
                "restore the file, or run {} to accept it, or pass --allow-changed",
                repair(dir)
            ),
        )
    };
    Problem {
        kind: ProblemKind::Changed,
        step: Some(step.id.to_string()),
        file: Some(step.file.clone()),
        detail,
        fix,
    }
}

fn missing_problem(dir: &Path, a: &Applied, allowed: bool) -> Problem {
    let what = match a.state {
        AppliedState::Running => "was interrupted while running",
        _ => "was applied",
    };
    let when = a
        .finished_at
        .or(a.started_at)
        .map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let detail = format!(
        "{what}{when} ({:?}), and no file in {} has it now",
        a.description,
        dir.display()
    );
    let (detail, fix) = if allowed {
        (
            format!("{detail} (--allow-missing: ignored)"),
            format!("run {} to forget it, or restore its file", repair(dir)),
        )
    } else {
        (
            detail,
            format!(
                "restore its file, or run {} to forget it, or pass --allow-missing",
                repair(dir)
            ),
        )
    };
    Problem {
        kind: ProblemKind::Missing,
        step: Some(a.id.to_string()),
        file: None,
        detail,
        fix,
    }
}

fn out_of_order(step: &Step, high: &super::Version, allowed: bool) -> Problem {
    let detail = format!("pending, but version {high} is already applied");
    let (detail, fix) = if allowed {
        (
            format!("{detail} (--out-of-order: applied now)"),
            "nothing: it runs before the newer pending steps".to_string(),
        )
    } else {
        (
            detail,
            format!(
                "rename it to a version above {high}, or pass --out-of-order to apply it anyway"
            ),
        )
    };
    Problem {
        kind: ProblemKind::OutOfOrder,
        step: Some(step.id.to_string()),
        file: Some(step.file.clone()),
        detail,
        fix,
    }
}

fn failed_problem(dir: &Path, a: &Applied, step: Option<&Step>) -> Problem {
    let error = a.error.as_deref().unwrap_or("no error recorded");
    let (detail, fix) = match step {
        Some(_) => (
            format!("its last run failed: {error}"),
            "fix the step if needed; apply runs it again".to_string(),
        ),
        None => (
            format!("its last run failed ({error}), and its file is gone: not run again"),
            format!("run {} to clear it, or restore its file", repair(dir)),
        ),
    };
    Problem {
        kind: ProblemKind::Failed,
        step: Some(a.id.to_string()),
        file: step.map(|s| s.file.clone()),
        detail,
        fix,
    }
}

fn interrupted_problem(a: &Applied, step: &Step) -> Problem {
    let since = a
        .started_at
        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    let resume = if step.no_transaction && a.statements_done > 0 {
        format!(
            ", resuming at statement {} ({} completed)",
            a.statements_done + 1,
            a.statements_done
        )
    } else {
        String::new()
    };
    Problem {
        kind: ProblemKind::Interrupted,
        step: Some(a.id.to_string()),
        file: Some(step.file.clone()),
        detail: format!(
            "recorded running{since} by {} (token {}): interrupted unless an apply holds the lease now",
            a.holder, a.token
        ),
        fix: format!(
            "nothing: apply runs it again with INITGUARD_PREVIOUS=interrupted{resume}; \
             pass --on-interrupted fail to stop instead"
        ),
    }
}

/// A table cell: control characters (a newline in a file name) shown as `?`, so one value stays
/// on one line.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// A problem kind as users read it.
pub fn kind_label(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::Changed => "changed",
        ProblemKind::Missing => "missing",
        ProblemKind::Duplicate => "duplicate",
        ProblemKind::OutOfOrder => "out of order",
        ProblemKind::UnreadableName => "unreadable name",
        ProblemKind::NotExecutable => "not executable",
        ProblemKind::Failed => "failed",
        ProblemKind::Interrupted => "interrupted",
        ProblemKind::InvalidIndex => "invalid index",
        ProblemKind::Dirty => "dirty",
    }
}

/// The problem table: one aligned line per problem (kind, step, file), then its detail and what
/// to do next, indented, so a fix is never cut by a narrow terminal's column:
///
/// ```text
/// Problem         Step  File
/// changed         2     V2__add_index.sql
///     applied with sha256:1a2b3c4d, the file now has sha256:9f8e7d6c
///     fix: restore the file, or run `initguard steps repair db` to accept it, or pass --allow-changed
/// ```
///
/// No problems: the empty string.
pub fn problem_table(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let cells: Vec<[std::borrow::Cow<'_, str>; 3]> = problems
        .iter()
        .map(|p| {
            [
                kind_label(p.kind).into(),
                printable(p.step.as_deref().unwrap_or("-")),
                printable(p.file.as_deref().unwrap_or("-")),
            ]
        })
        .collect();
    let header = ["Problem", "Step", "File"];
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let line = |c: [&str; 3]| {
        format!("{:<w0$}  {:<w1$}  {}", c[0], c[1], c[2])
            .trim_end()
            .to_string()
    };
    let mut out = line(header);
    out.push('\n');
    for (p, c) in problems.iter().zip(&cells) {
        out.push_str(&line([&c[0], &c[1], &c[2]]));
        out.push('\n');
        out.push_str(&format!(
            "    {}\n    fix: {}\n",
            printable(&p.detail),
            printable(&p.fix)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Version, discover, version};
    use super::*;
    use chrono::TimeZone;
    use std::path::PathBuf;

    fn ver(t: &str) -> Version {
        version::parse(t).unwrap()
    }

    fn step(id: &str, body: &str) -> Step {
        let (sid, file) = match id.strip_prefix("R:") {
            Some(d) => (StepId::Repeatable(d.into()), format!("R__{d}.sql")),
            None => (StepId::Versioned(ver(id)), format!("V{id}__s.sql")),
        };
        Step {
            id: sid,
            description: "s".into(),
            kind: Kind::Sql,
            path: PathBuf::from("db").join(&file),
            file,
            checksum: checksum::of_bytes(body.as_bytes()),
            no_transaction: false,
        }
    }

    fn set(steps: Vec<Step>) -> StepSet {
        StepSet {
            dir: PathBuf::from("db"),
            steps,
            problems: vec![],
        }
    }

    fn applied(s: &Step, state: AppliedState) -> Applied {
        let t = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        Applied {
            id: s.id.clone(),
            description: s.description.clone(),
            kind: s.kind,
            checksum: Some(s.checksum.clone()),
            state,
            started_at: Some(t),
            finished_at: (state != AppliedState::Running).then_some(t),
            duration_ms: Some(12),
            holder: "pod-a".into(),
            token: 7,
            statements_done: 0,
            error: (state == AppliedState::Failed).then(|| "syntax error at 1:8".into()),
            adopted_from: None,
        }
    }

    fn plan_ids(v: &Validation) -> Vec<(String, Previous)> {
        v.plan
            .iter()
            .map(|p| (p.step.id.to_string(), p.previous))
            .collect()
    }

    fn kinds(ps: &[Problem]) -> Vec<(ProblemKind, String)> {
        ps.iter()
            .map(|p| (p.kind, p.step.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn fresh_set_plans_everything_in_order() {
        let s = set(vec![
            step("1", "a"),
            step("1.9", "b"),
            step("1.10", "c"),
            step("R:v", "d"),
        ]);
        let v = check(&s, &[], Allow::default());
        assert!(v.is_ok());
        assert_eq!(v.warnings, vec![]);
        assert_eq!(
            plan_ids(&v),
            [
                ("1".into(), Previous::None),
                ("1.9".into(), Previous::None),
                ("1.10".into(), Previous::None),
                ("R:v".into(), Previous::None),
            ]
        );
    }

    #[test]
    fn applied_steps_are_skipped_and_only_new_ones_planned() {
        let (a, b, r) = (step("1", "a"), step("2", "b"), step("R:v", "v"));
        let h = vec![
            applied(&a, AppliedState::Applied),
            applied(&r, AppliedState::Applied),
        ];
        let v = check(&set(vec![a, b, r]), &h, Allow::default());
        assert!(v.is_ok());
        assert_eq!(plan_ids(&v), [("2".into(), Previous::None)]);
    }

    #[test]
    fn changed_applied_step_is_an_error_unless_allowed() {
        let a = step("1", "a");
        let h = vec![applied(&a, AppliedState::Applied)];
        let now = set(vec![step("1", "a changed")]);
        let v = check(&now, &h, Allow::default());
        assert_eq!(kinds(&v.errors), [(ProblemKind::Changed, "1".into())]);
        assert!(v.errors[0].fix.contains("initguard steps repair db"));
        assert!(v.errors[0].fix.contains("--allow-changed"));
        assert!(v.plan.is_empty());

        let allow = Allow {
            changed: true,
            ..Allow::default()
        };
        let v = check(&now, &h, allow);
        assert!(v.is_ok());
        assert_eq!(kinds(&v.warnings), [(ProblemKind::Changed, "1".into())]);
        assert!(v.plan.is_empty(), "a changed versioned step is not re-run");
    }

    #[test]
    fn adopted_entries_without_checksum_never_count_as_changed() {
        let a = step("1", "a");
        let mut h = applied(&a, AppliedState::Applied);
        h.checksum = None;
        h.adopted_from = Some("flyway".into());
        let r = step("R:v", "v");
        let mut hr = applied(&r, AppliedState::Applied);
        hr.checksum = None;
        let v = check(
            &set(vec![step("1", "other"), step("R:v", "x")]),
            &[h, hr],
            Allow::default(),
        );
        assert!(v.is_ok());
        assert_eq!(v.warnings, vec![]);
        assert!(v.plan.is_empty());
    }

    #[test]
    fn missing_applied_step_is_an_error_unless_allowed() {
        let (a, b) = (step("1", "a"), step("2", "b"));
        let h = vec![
            applied(&a, AppliedState::Applied),
            applied(&b, AppliedState::Applied),
        ];
        let now = set(vec![b.clone()]);
        let v = check(&now, &h, Allow::default());
        assert_eq!(kinds(&v.errors), [(ProblemKind::Missing, "1".into())]);
        assert!(v.errors[0].fix.contains("--allow-missing"));
        assert!(v.errors[0].fix.contains("initguard steps repair db"));
        let v = check(
            &now,
            &h,
            Allow {
                missing: true,
                ..Allow::default()
            },
        );
        assert!(v.is_ok());
        assert_eq!(kinds(&v.warnings), [(ProblemKind::Missing, "1".into())]);
    }

    #[test]
    fn out_of_order_pending_step_is_an_error_unless_allowed() {
        let (a, late, c, d) = (
            step("1", "a"),
            step("1.5", "l"),
            step("2", "c"),
            step("3", "d"),
        );
        let h = vec![
            applied(&a, AppliedState::Applied),
            applied(&c, AppliedState::Applied),
        ];
        let now = set(vec![a, late, c, d]);
        let v = check(&now, &h, Allow::default());
        assert_eq!(kinds(&v.errors), [(ProblemKind::OutOfOrder, "1.5".into())]);
        assert!(v.errors[0].fix.contains("rename it to a version above 2"));
        assert!(v.errors[0].fix.contains("--out-of-order"));
        assert_eq!(plan_ids(&v), [("3".into(), Previous::None)]);

        let v = check(
            &now,
            &h,
            Allow {
                out_of_order: true,
                ..Allow::default()
            },
        );
        assert!(v.is_ok());
        assert_eq!(
            kinds(&v.warnings),
            [(ProblemKind::OutOfOrder, "1.5".into())]
        );
        assert_eq!(
            plan_ids(&v),
            [("1.5".into(), Previous::None), ("3".into(), Previous::None)]
        );
    }

    #[test]
    fn a_failed_or_running_step_below_the_highest_is_retried_not_out_of_order() {
        let (a, b, c) = (step("1", "a"), step("2", "b"), step("3", "c"));
        let h = vec![
            applied(&a, AppliedState::Failed),
            applied(&b, AppliedState::Running),
            applied(&c, AppliedState::Applied),
        ];
        let v = check(&set(vec![a, b, c]), &h, Allow::default());
        assert!(v.is_ok(), "{:?}", v.errors);
        assert_eq!(
            plan_ids(&v),
            [
                ("1".into(), Previous::Failed),
                ("2".into(), Previous::Interrupted)
            ]
        );
        assert_eq!(
            kinds(&v.warnings),
            [
                (ProblemKind::Failed, "1".into()),
                (ProblemKind::Interrupted, "2".into())
            ]
        );
        assert!(v.warnings[0].detail.contains("syntax error at 1:8"));
    }

    #[test]
    fn no_transaction_step_resumes_where_it_stopped() {
        let mut a = step("1", "create index concurrently ...");
        a.no_transaction = true;
        let b = step("2", "plain");
        let mut ha = applied(&a, AppliedState::Running);
        ha.statements_done = 3;
        let mut hb = applied(&b, AppliedState::Failed);
        hb.statements_done = 2; // a transactional step starts over
        let v = check(&set(vec![a, b]), &[ha, hb], Allow::default());
        let resume: Vec<u32> = v.plan.iter().map(|p| p.resume_at).collect();
        assert_eq!(resume, [3, 0]);
        assert!(v.warnings[0].fix.contains("resuming at statement 4"));
    }

    #[test]
    fn repeatable_runs_again_when_its_checksum_changes() {
        let r = step("R:views", "v1");
        let h = vec![applied(&r, AppliedState::Applied)];
        let v = check(
            &set(vec![step("R:views", "v2"), step("1", "new")]),
            &h,
            Allow::default(),
        );
        assert!(v.is_ok());
        assert_eq!(
            plan_ids(&v),
            [
                ("1".into(), Previous::None),
                ("R:views".into(), Previous::Changed)
            ]
        );
    }

    #[test]
    fn discovery_problems_are_always_errors() {
        let mut s = set(vec![step("1", "a")]);
        s.problems.push(Problem {
            kind: ProblemKind::Duplicate,
            step: Some("1".into()),
            file: Some("V1__a.sql, V1.0__b.sql".into()),
            detail: "d".into(),
            fix: "f".into(),
        });
        let all = Allow {
            changed: true,
            missing: true,
            out_of_order: true,
        };
        let v = check(&s, &[], all);
        assert_eq!(kinds(&v.errors), [(ProblemKind::Duplicate, "1".into())]);
    }

    #[test]
    fn a_failed_step_whose_file_is_gone_is_a_warning() {
        let a = step("1", "a");
        let v = check(
            &set(vec![]),
            &[applied(&a, AppliedState::Failed)],
            Allow::default(),
        );
        assert!(v.is_ok());
        assert_eq!(kinds(&v.warnings), [(ProblemKind::Failed, "1".into())]);
        assert!(v.warnings[0].fix.contains("steps repair"));
        assert!(v.plan.is_empty());
    }

    #[test]
    fn version_equality_is_numeric_against_history() {
        // History written as `1.0` matches the file `V1__…`.
        let mut h = applied(&step("1", "a"), AppliedState::Applied);
        h.id = StepId::Versioned(ver("1.0"));
        let v = check(&set(vec![step("1", "a")]), &[h], Allow::default());
        assert!(v.is_ok());
        assert!(v.plan.is_empty());
    }

    #[test]
    fn problem_table_says_what_to_do_for_each_problem() {
        let a = step("2", "a");
        let h = vec![applied(&a, AppliedState::Applied), {
            let mut m = applied(&step("3", "m"), AppliedState::Applied);
            m.description = "gone".into();
            m
        }];
        let mut s = set(vec![step("1.5", "late"), step("2", "edited")]);
        s.problems.push(Problem {
            kind: ProblemKind::NotExecutable,
            step: Some("4".into()),
            file: Some("V4__load.sh".into()),
            detail: "not a .sql file, and not executable".into(),
            fix: "chmod +x db/V4__load.sh to run it as a script, or give it a .sql extension"
                .into(),
        });
        let v = check(&s, &h, Allow::default());
        let table = problem_table(&v.errors);
        let want = "\
Problem         Step  File
not executable  4     V4__load.sh
    not a .sql file, and not executable
    fix: chmod +x db/V4__load.sh to run it as a script, or give it a .sql extension
out of order    1.5   V1.5__s.sql
    pending, but version 3 is already applied
    fix: rename it to a version above 3, or pass --out-of-order to apply it anyway
changed         2     V2__s.sql
    applied with sha256:ca978112, the file now has sha256:1fb9f409
    fix: restore the file, or run `initguard steps repair db` to accept it, or pass --allow-changed
missing         3     -
    was applied at 2026-12-01 10:00:00 UTC (\"gone\"), and no file in db has it now
    fix: restore its file, or run `initguard steps repair db` to forget it, or pass --allow-missing
";
        assert_eq!(table, want, "\n{table}");
        assert_eq!(problem_table(&[]), "");
        let odd = Problem {
            kind: ProblemKind::UnreadableName,
            step: None,
            file: Some("V1__a\nb.sql".into()),
            detail: "not a step name".into(),
            fix: "rename V1__a\nb.sql".into(),
        };
        assert_eq!(
            problem_table(&[odd]),
            "Problem          Step  File\nunreadable name  -     V1__a?b.sql\n    not a step name\n    fix: rename V1__a?b.sql\n"
        );
    }

    #[test]
    fn check_on_a_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("V1__a.sql"), "select 1;\n").unwrap();
        std::fs::write(d.join("V2__b.sql"), "select 2;\n").unwrap();
        let first = discover::discover(d).unwrap();
        let h: Vec<Applied> = first
            .steps
            .iter()
            .map(|s| applied(s, AppliedState::Applied))
            .collect();
        assert!(check(&first, &h, Allow::default()).plan.is_empty());
        // Same content with CRLF endings: still applied, nothing to do.
        std::fs::write(d.join("V2__b.sql"), "select 2;\r\n").unwrap();
        std::fs::write(d.join("V3__c.sql"), "select 3;\n").unwrap();
        let again = discover::discover(d).unwrap();
        let v = check(&again, &h, Allow::default());
        assert!(v.is_ok(), "{:?}", v.errors);
        assert_eq!(plan_ids(&v), [("3".into(), Previous::None)]);
    }
}
