//! `steps status`: one row per step (on disk, in history, or both), as a table for people (like
//! `flyway info`) and as JSON for machines. Pure: no I/O, the caller prints.
//!
//! States: `pending` (never ran), `applied`, `outdated` (a repeatable step whose file changed
//! since it last ran: apply runs it again), `changed` (an applied versioned step whose file no
//! longer matches: validation refuses it), `missing` (applied, or interrupted, and no file any
//! more), `failed` (its last run failed), `running` (started and not ended: running now, or
//! interrupted if no apply holds the lease).
//!
//! JSON (`json`), stable snake_case names; absent values are `null`, never omitted:
//!
//! ```text
//! {
//!   "schema": 1,
//!   "steps": [{
//!     "id": "1.1" | "R:refresh views",   // StepId as displayed
//!     "version": "1_1" | null,           // as written in the file name; null: repeatable
//!     "description": "create users",
//!     "kind": "sql" | "script",
//!     "state": "pending" | "applied" | "outdated" | "changed" | "missing" | "failed" | "running",
//!     "file": "V1_1__create_users.sql" | null,  // null: missing
//!     "checksum": "sha256:…" | null,            // the file's; null: missing
//!     "applied_checksum": "sha256:…" | null,    // history's; null: never ran, or adopted
//!     "started_at": RFC 3339 | null,
//!     "applied_at": RFC 3339 | null,            // when its last run ended
//!     "duration_ms": 12 | null,
//!     "holder": "pod/…" | null, "token": 7 | null,
//!     "no_transaction": false, "statements_done": 0,
//!     "out_of_order": false,   // pending, below the highest applied version
//!     "error": "…" | null, "adopted_from": "flyway" | null
//!   }],
//!   "counts": {"applied": 3, "pending": 1, "outdated": 0, "changed": 0, "missing": 0,
//!              "failed": 0, "running": 0},
//!   "problems": [{"kind": "changed", "step": "2", "file": "V2__x.sql", "detail": "…", "fix": "…"}]
//! }
//! ```
//!
//! `problems[].kind` is `ProblemKind` in snake_case (`out_of_order`, `unreadable_name`, ...).

use super::{Applied, AppliedState, Checksum, Kind, Problem, StepId, StepSet, checksum, validate};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    Pending,
    Applied,
    Outdated,
    Changed,
    Missing,
    Failed,
    Running,
}

impl RowState {
    pub const ALL: [RowState; 7] = [
        RowState::Applied,
        RowState::Pending,
        RowState::Outdated,
        RowState::Changed,
        RowState::Missing,
        RowState::Failed,
        RowState::Running,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Applied => "applied",
            RowState::Outdated => "outdated",
            RowState::Changed => "changed",
            RowState::Missing => "missing",
            RowState::Failed => "failed",
            RowState::Running => "running",
        }
    }
}

/// One step as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub id: StepId,
    pub description: String,
    pub kind: Kind,
    pub state: RowState,
    /// The file, relative to the set's directory; `None` when missing.
    pub file: Option<String>,
    /// The file's checksum; `None` when missing.
    pub checksum: Option<Checksum>,
    /// History's checksum; `None` when it never ran or was adopted without one.
    pub applied_checksum: Option<Checksum>,
    pub started_at: Option<DateTime<Utc>>,
    /// When its last run ended.
    pub applied_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub holder: Option<String>,
    pub token: Option<u64>,
    pub no_transaction: bool,
    pub statements_done: u32,
    /// Pending, and below the highest applied version.
    pub out_of_order: bool,
    pub error: Option<String>,
    pub adopted_from: Option<String>,
}

/// One row per step on disk, and one per history entry with no file, in apply order.
pub fn rows(set: &StepSet, history: &[Applied]) -> Vec<StatusRow> {
    let by_id: HashMap<&StepId, &Applied> = history.iter().map(|a| (&a.id, a)).collect();
    let highest = validate::highest_applied(history);
    let mut out = Vec::with_capacity(set.steps.len());
    for step in &set.steps {
        let a = by_id.get(&step.id).copied();
        let state = match a.map(|a| a.state) {
            None => RowState::Pending,
            Some(AppliedState::Failed) => RowState::Failed,
            Some(AppliedState::Running) => RowState::Running,
            Some(AppliedState::Applied) => {
                let changed = a
                    .and_then(|a| a.checksum.as_ref())
                    .is_some_and(|c| *c != step.checksum);
                match (&step.id, changed) {
                    (_, false) => RowState::Applied,
                    (StepId::Versioned(_), true) => RowState::Changed,
                    (StepId::Repeatable(_), true) => RowState::Outdated,
                }
            }
        };
        let out_of_order = match (&step.id, highest) {
            (StepId::Versioned(v), Some(h)) => a.is_none() && v < h,
            _ => false,
        };
        let mut row = from_history(step.id.clone(), step.description.clone(), step.kind, a);
        row.state = state;
        row.file = Some(step.file.clone());
        row.checksum = Some(step.checksum.clone());
        row.no_transaction = step.no_transaction;
        row.out_of_order = out_of_order;
        out.push(row);
    }
    let on_disk: std::collections::HashSet<&StepId> = set.steps.iter().map(|s| &s.id).collect();
    for a in by_id.values().filter(|a| !on_disk.contains(&a.id)) {
        let mut row = from_history(a.id.clone(), a.description.clone(), a.kind, Some(a));
        row.state = match a.state {
            AppliedState::Failed => RowState::Failed,
            AppliedState::Applied | AppliedState::Running => RowState::Missing,
        };
        out.push(row);
    }
    out.sort_by(|x, y| x.id.cmp(&y.id).then_with(|| x.file.cmp(&y.file)));
    out
}

fn from_history(id: StepId, description: String, kind: Kind, a: Option<&Applied>) -> StatusRow {
    StatusRow {
        id,
        description,
        kind,
        state: RowState::Pending,
        file: None,
        checksum: None,
        applied_checksum: a.and_then(|a| a.checksum.clone()),
        started_at: a.and_then(|a| a.started_at),
        applied_at: a.and_then(|a| a.finished_at),
        duration_ms: a.and_then(|a| a.duration_ms),
        holder: a.map(|a| a.holder.clone()),
        token: a.map(|a| a.token),
        no_transaction: false,
        statements_done: a.map_or(0, |a| a.statements_done),
        out_of_order: false,
        error: a.and_then(|a| a.error.clone()),
        adopted_from: a.and_then(|a| a.adopted_from.clone()),
    }
}

/// The width the table tries to fit, when descriptions allow.
const TARGET_WIDTH: usize = 80;
/// Descriptions are never cut below this.
const MIN_DESCRIPTION: usize = 20;

/// The status table, like `flyway info`: a header, aligned columns, then a summary line.
///
/// ```text
/// Version  Description         Kind    State     Applied (UTC)     Duration  Checksum
/// 1        create users        sql     applied   2026-12-01 10:00  12ms      1a2b3c4d
/// 1.1      add email index     sql     pending                               9f8e7d6c
/// R        refresh views       sql     outdated  2026-12-01 10:00  3ms       0c1d2e3f
///
/// 3 steps: 1 applied, 1 pending, 1 outdated
/// ```
///
/// Repeatable steps show `R` as their version. Descriptions longer than the room left in 80
/// columns (at least 20) end in `…`; a missing step's checksum is the one history holds; a running
/// one shows when it started. Times are UTC, to the minute.
pub fn table(rows: &[StatusRow]) -> String {
    const HEADER: [&str; 7] = [
        "Version",
        "Description",
        "Kind",
        "State",
        "Applied (UTC)",
        "Duration",
        "Checksum",
    ];
    // Borrowed where a cell is already text: a status of 1,000 steps is mostly this loop.
    let cells: Vec<[Cow<'_, str>; 7]> = rows
        .iter()
        .map(|r| {
            let version = match &r.id {
                StepId::Versioned(v) => validate::printable(&v.text),
                StepId::Repeatable(_) => Cow::Borrowed("R"),
            };
            let when = match r.state {
                RowState::Running => r.started_at,
                _ => r.applied_at.or(r.started_at),
            };
            [
                version,
                validate::printable(&r.description),
                Cow::Borrowed(r.kind.as_str()),
                Cow::Borrowed(r.state.as_str()),
                when.map(minute).map(Cow::Owned).unwrap_or_default(),
                r.duration_ms
                    .map(duration)
                    .map(Cow::Owned)
                    .unwrap_or_default(),
                r.checksum
                    .as_ref()
                    .or(r.applied_checksum.as_ref())
                    .map(|c| Cow::Borrowed(checksum::short(c)))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = (0..7)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([HEADER[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let others: usize = widths
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, w)| w)
        .sum();
    let room = TARGET_WIDTH
        .saturating_sub(others + 2 * 6)
        .max(MIN_DESCRIPTION);
    widths[1] = widths[1].min(room);

    let line = |out: &mut String, c: [&str; 7]| {
        let start = out.len();
        for (i, cell) in c.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let cell = cut(cell, widths[i]);
            out.push_str(&cell);
            out.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count()));
        }
        let end = start + out[start..].trim_end().len();
        out.truncate(end);
        out.push('\n');
    };
    let mut out = String::with_capacity((cells.len() + 3) * (TARGET_WIDTH + 1));
    line(&mut out, HEADER);
    for c in &cells {
        line(&mut out, [&c[0], &c[1], &c[2], &c[3], &c[4], &c[5], &c[6]]);
    }
    out.push('\n');
    out.push_str(&summary(rows));
    out.push('\n');
    out
}

/// `2026-12-01 13:21`: what `%Y-%m-%d %H:%M` gives, without parsing that format for each row.
fn minute(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `7 steps: 3 applied, 2 pending, 1 outdated, 1 changed` (states with no step left out).
pub fn summary(rows: &[StatusRow]) -> String {
    let counts = count(rows);
    let parts: Vec<String> = RowState::ALL
        .iter()
        .filter(|s| counts[s] > 0)
        .map(|s| format!("{} {}", counts[s], s.as_str()))
        .collect();
    let n = rows.len();
    match n {
        0 => "no steps".to_string(),
        _ => format!(
            "{n} step{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        ),
    }
}

fn count(rows: &[StatusRow]) -> HashMap<RowState, usize> {
    let mut counts: HashMap<RowState, usize> = RowState::ALL.iter().map(|s| (*s, 0)).collect();
    for r in rows {
        *counts.entry(r.state).or_default() += 1;
    }
    counts
}

fn cut(text: &str, width: usize) -> Cow<'_, str> {
    if text.chars().count() <= width {
        return Cow::Borrowed(text);
    }
    let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    Cow::Owned(s)
}

/// `850ms`, `1.2s`, `3m05s`, `1h02m`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    id: String,
    version: Option<&'a str>,
    description: &'a str,
    kind: Kind,
    state: RowState,
    file: Option<&'a str>,
    checksum: Option<&'a Checksum>,
    applied_checksum: Option<&'a Checksum>,
    started_at: Option<String>,
    applied_at: Option<String>,
    duration_ms: Option<u64>,
    holder: Option<&'a str>,
    token: Option<u64>,
    no_transaction: bool,
    statements_done: u32,
    out_of_order: bool,
    error: Option<&'a str>,
    adopted_from: Option<&'a str>,
}

/// The `--json` document (format in the module comment).
pub fn json(rows: &[StatusRow], problems: &[Problem]) -> serde_json::Value {
    let rfc3339 = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let steps: Vec<JsonRow> = rows
        .iter()
        .map(|r| JsonRow {
            id: r.id.to_string(),
            version: match &r.id {
                StepId::Versioned(v) => Some(v.text.as_str()),
                StepId::Repeatable(_) => None,
            },
            description: &r.description,
            kind: r.kind,
            state: r.state,
            file: r.file.as_deref(),
            checksum: r.checksum.as_ref(),
            applied_checksum: r.applied_checksum.as_ref(),
            started_at: r.started_at.as_ref().map(rfc3339),
            applied_at: r.applied_at.as_ref().map(rfc3339),
            duration_ms: r.duration_ms,
            holder: r.holder.as_deref(),
            token: r.token,
            no_transaction: r.no_transaction,
            statements_done: r.statements_done,
            out_of_order: r.out_of_order,
            error: r.error.as_deref(),
            adopted_from: r.adopted_from.as_deref(),
        })
        .collect();
    let counts = count(rows);
    let counts: serde_json::Map<String, serde_json::Value> = RowState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), counts[s].into()))
        .collect();
    serde_json::json!({
        "schema": 1,
        "steps": steps,
        "counts": counts,
        "problems": problems,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Step, version};
    use super::*;
    use chrono::TimeZone;
    use std::path::PathBuf;

    fn step(id: &str, desc: &str, body: &str) -> Step {
        let (sid, file) = match id.strip_prefix("R:") {
            Some(d) => (StepId::Repeatable(d.into()), format!("R__{d}.sql")),
            None => (
                StepId::Versioned(version::parse(id).unwrap()),
                format!("V{id}__{}.sql", desc.replace(' ', "_")),
            ),
        };
        Step {
            id: sid,
            description: desc.into(),
            kind: Kind::Sql,
            path: PathBuf::from("db").join(&file),
            file,
            checksum: checksum::of_bytes(body.as_bytes()),
            no_transaction: false,
        }
    }

    fn hist(s: &Step, state: AppliedState, body: &str) -> Applied {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        Applied {
            id: s.id.clone(),
            description: s.description.clone(),
            kind: s.kind,
            checksum: Some(checksum::of_bytes(body.as_bytes())),
            state,
            started_at: Some(t),
            finished_at: (state != AppliedState::Running)
                .then(|| t + chrono::Duration::milliseconds(1234)),
            duration_ms: (state != AppliedState::Running).then_some(1234),
            holder: "pod/web-0".into(),
            token: 3,
            statements_done: 0,
            error: (state == AppliedState::Failed).then(|| "boom".into()),
            adopted_from: None,
        }
    }

    /// Every state once: the fixture of the table and JSON tests.
    fn fixture() -> Vec<StatusRow> {
        let s1 = step("1", "create users", "a");
        let s2 = step("1.1", "add email index", "b");
        let s3 = step("2", "backfill", "c");
        let s4 = step("3", "load fixtures", "d");
        let s5 = step("4", "concurrently", "e");
        let gone = step("1.5", "dropped later", "x");
        let s6 = step("5", "new", "f");
        let r = step("R:refresh views", "refresh views", "v2");
        let history = vec![
            hist(&s1, AppliedState::Applied, "a"),
            hist(&s2, AppliedState::Applied, "b was"),
            hist(&s3, AppliedState::Failed, "c"),
            hist(&s4, AppliedState::Running, "d"),
            hist(&gone, AppliedState::Applied, "x"),
            hist(&r, AppliedState::Applied, "v1"),
            hist(&s5, AppliedState::Applied, "e"),
        ];
        let set = StepSet {
            dir: "db".into(),
            steps: vec![s1, s2, s3, s4, s5, s6, r],
            problems: vec![],
        };
        rows(&set, &history)
    }

    #[test]
    fn rows_merge_disk_and_history_in_order() {
        let rows = fixture();
        let got: Vec<(String, &str)> = rows
            .iter()
            .map(|r| (r.id.to_string(), r.state.as_str()))
            .collect();
        let want = [
            ("1", "applied"),
            ("1.1", "changed"),
            ("1.5", "missing"),
            ("2", "failed"),
            ("3", "running"),
            ("4", "applied"),
            ("5", "pending"),
            ("R:refresh views", "outdated"),
        ];
        let want: Vec<(String, &str)> = want.iter().map(|(a, b)| (a.to_string(), *b)).collect();
        assert_eq!(got, want);
        assert_eq!(rows[2].file, None);
        assert_eq!(rows[2].applied_checksum, Some(checksum::of_bytes(b"x")));
        assert!(!rows[6].out_of_order);
    }

    #[test]
    fn a_pending_step_below_the_highest_applied_is_marked_out_of_order() {
        let (a, b) = (step("1", "a", "a"), step("2", "b", "b"));
        let set = StepSet {
            dir: "db".into(),
            steps: vec![a.clone(), b.clone()],
            problems: vec![],
        };
        let rows = rows(&set, &[hist(&b, AppliedState::Applied, "b")]);
        assert!(rows[0].out_of_order);
        assert_eq!(rows[0].state, RowState::Pending);
        assert!(!rows[1].out_of_order);
    }

    #[test]
    fn table_looks_like_flyway_info() {
        let table = table(&fixture());
        let want = "\
Version  Description      Kind  State     Applied (UTC)     Duration  Checksum
1        create users     sql   applied   2026-12-01 10:00  1.2s      ca978112
1.1      add email index  sql   changed   2026-12-01 10:00  1.2s      3e23e816
1.5      dropped later    sql   missing   2026-12-01 10:00  1.2s      2d711642
2        backfill         sql   failed    2026-12-01 10:00  1.2s      2e7d2c03
3        load fixtures    sql   running   2026-12-01 10:00            18ac3e73
4        concurrently     sql   applied   2026-12-01 10:00  1.2s      3f79bb7b
5        new              sql   pending                               252f10c8
R        refresh views    sql   outdated  2026-12-01 10:00  1.2s      fb04dcb6

8 steps: 2 applied, 1 pending, 1 outdated, 1 changed, 1 missing, 1 failed, 1 running
";
        assert_eq!(table, want, "\n{table}");
        for line in table.lines().take_while(|l| !l.is_empty()) {
            assert!(line.chars().count() <= 80, "{line}");
        }
    }

    #[test]
    fn long_descriptions_are_cut_to_fit_the_terminal() {
        let long = "a very long description that goes on and on and would wrap any terminal";
        let s = step("20240101120000", long, "a");
        let set = StepSet {
            dir: "db".into(),
            steps: vec![s],
            problems: vec![],
        };
        let t = table(&rows(&set, &[]));
        // A 14-digit version leaves 20 columns of description: a little over 80 in all.
        for line in t.lines() {
            assert!(line.chars().count() <= 90, "{line}");
        }
        assert!(t.contains('…'), "{t}");
        assert!(t.contains("20240101120000"));
        assert_eq!(
            table(&[]),
            "Version  Description  Kind  State  Applied (UTC)  Duration  Checksum\n\nno steps\n"
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(1_234), "1.2s");
        assert_eq!(duration(65_000), "1m05s");
        assert_eq!(duration(3_723_000), "1h02m");
    }

    #[test]
    fn json_has_stable_snake_case_fields() {
        let problems = vec![Problem {
            kind: super::super::ProblemKind::OutOfOrder,
            step: Some("1.5".into()),
            file: Some("V1_5__x.sql".into()),
            detail: "d".into(),
            fix: "f".into(),
        }];
        let v = json(&fixture(), &problems);
        assert_eq!(v["schema"], 1);
        assert_eq!(v["counts"]["applied"], 2);
        assert_eq!(v["counts"]["pending"], 1);
        assert_eq!(v["problems"][0]["kind"], "out_of_order");
        assert_eq!(v["problems"][0]["fix"], "f");
        let first = &v["steps"][0];
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "id",
            "version",
            "description",
            "kind",
            "state",
            "file",
            "checksum",
            "applied_checksum",
            "started_at",
            "applied_at",
            "duration_ms",
            "holder",
            "token",
            "no_transaction",
            "statements_done",
            "out_of_order",
            "error",
            "adopted_from",
        ];
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(first["id"], "1");
        assert_eq!(first["version"], "1");
        assert_eq!(first["kind"], "sql");
        assert_eq!(first["state"], "applied");
        assert_eq!(first["applied_at"], "2026-12-01T10:00:01.234Z");
        assert_eq!(first["duration_ms"], 1234);
        assert_eq!(first["error"], serde_json::Value::Null);
        let r = &v["steps"][7];
        assert_eq!(r["id"], "R:refresh views");
        assert_eq!(r["version"], serde_json::Value::Null);
        assert_eq!(r["state"], "outdated");
        let missing = &v["steps"][2];
        assert_eq!(missing["file"], serde_json::Value::Null);
        assert_eq!(missing["checksum"], serde_json::Value::Null);
        assert!(
            missing["applied_checksum"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        assert_eq!(v["steps"][3]["error"], "boom");
    }
}
