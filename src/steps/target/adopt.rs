//! Adoption: on a set's first use, another migration tool's history table read as applied steps,
//! so that a database migrated by that tool is not migrated again. Reads the tool's table and
//! writes `applied` rows (with `adopted_from`) in one fenced transaction; never changes the
//! tool's table.
//!
//! The tables, as each tool creates them on PostgreSQL (found through the connection's
//! `search_path`, where the tool put them):
//! - Flyway `flyway_schema_history (installed_rank int, version varchar(50), description
//!   varchar(200), type varchar(20), script varchar(1000), checksum int, installed_by, installed_on
//!   timestamp, execution_time int, success boolean)`: one row per run of a migration. Versioned
//!   rows by version, repeatable ones (version NULL) by description; a `BASELINE` row stands for
//!   every version up to it; `DELETE` and `UNDO_*` rows take their version back; `SCHEMA` rows are
//!   not migrations. A row with `success = false` is a failed migration: nothing is adopted.
//! - golang-migrate `schema_migrations (version bigint, dirty boolean)`: one row, the current
//!   version; every step up to it is applied. `dirty` means that version failed or was cut off
//!   part way: not trusted, nothing is adopted (ProblemKind::Dirty).
//! - sqlx `_sqlx_migrations (version bigint, description text, installed_on timestamptz, success
//!   boolean, checksum bytea, execution_time bigint)`: one row per applied version;
//!   `success = false` is sqlx's own "dirty": nothing is adopted.
//! - dbmate `schema_migrations (version varchar(255) primary key)`: one row per applied version.
//!   The same name as golang-migrate's: a table with a `dirty` column is refused as not dbmate's.
//!
//! Each adopted step's row gets the file's checksum as it is now, not None: the tools' own
//! checksums (Flyway's CRC32, sqlx's SHA-384, none in the others) are not comparable to ours, and
//! a None would leave the step unguarded forever (or, for a repeatable step, make it run again
//! at once). So adoption trusts the tool about what ran and accepts the files as they are, as a
//! baseline: from then on a changed file is reported. A version the tool applied but that has no
//! file here is adopted too (checksum None), so that validation reports it as missing instead of
//! quietly forgetting it.

use super::conn::{Target, column};
use super::error::TargetError;
use super::rows::{self, kind_text, literal, opt_literal, token_i64};
use crate::steps::{
    Applied, AppliedState, Checksum, Kind, Problem, ProblemKind, RunInfo, Step, StepId, StepSet,
    Version, version,
};
use crate::store::postgres::quote_ident;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::error::SqlState;

/// A migration tool whose history can be adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Flyway,
    GolangMigrate,
    Sqlx,
    Dbmate,
}

impl Tool {
    /// As `--adopt` spells it, and as `adopted_from` records it.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Flyway => "flyway",
            Tool::GolangMigrate => "golang-migrate",
            Tool::Sqlx => "sqlx",
            Tool::Dbmate => "dbmate",
        }
    }

    /// `--adopt` values: `flyway`, `golang-migrate`, `sqlx`, `dbmate`.
    pub fn parse(s: &str) -> Option<Tool> {
        [Tool::Flyway, Tool::GolangMigrate, Tool::Sqlx, Tool::Dbmate]
            .into_iter()
            .find(|t| t.name() == s)
    }

    fn table(self) -> &'static str {
        match self {
            Tool::Flyway => "flyway_schema_history",
            Tool::GolangMigrate | Tool::Dbmate => "schema_migrations",
            Tool::Sqlx => "_sqlx_migrations",
        }
    }

    fn required_columns(self) -> &'static [&'static str] {
        match self {
            Tool::Flyway => &[
                "installed_rank",
                "version",
                "description",
                "type",
                "success",
            ],
            Tool::GolangMigrate => &["version", "dirty"],
            Tool::Sqlx => &["version", "description", "success"],
            Tool::Dbmate => &["version"],
        }
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One thing the tool's history says is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A version, with the tool's own text and description.
    Version {
        parts: Vec<u64>,
        text: String,
        description: Option<String>,
        at: Option<DateTime<Utc>>,
        ms: Option<u64>,
    },
    /// Every version up to and including this one (golang-migrate's current version, a Flyway
    /// baseline).
    UpTo { parts: Vec<u64>, text: String },
    /// A repeatable migration, by description.
    Repeatable {
        description: String,
        at: Option<DateTime<Utc>>,
        ms: Option<u64>,
    },
}

/// A tool's version text as numeric parts (`1.2.3`, `20240101120000`), read as a step file's
/// version is (`version::parse`), so that both compare alike.
fn tool_version(text: &str) -> Option<Vec<u64>> {
    version::parse(text.trim()).ok().map(|v| v.parts)
}

impl Target {
    /// Adopt `tool`'s history for `set` (see the module comment): only when the set has no
    /// history yet (otherwise nothing, `Ok(vec![])`), and after `begin`. Returns the rows
    /// written. Without the tool's table there is nothing to adopt (a new database).
    pub async fn adopt(
        &self,
        set: &str,
        tool: Tool,
        steps: &StepSet,
        run: &RunInfo,
    ) -> Result<Vec<Applied>, TargetError> {
        self.exclusive(async {
        let client = &self.conn.client;
        let what = format!("reading {tool}'s history");
        let history = format!("{}.steps_history", quote_ident(&self.schema));
        match client
            .query_opt(
                &format!("SELECT 1 FROM {history} WHERE set_name = $1 LIMIT 1"),
                &[&set],
            )
            .await
        {
            Ok(Some(_)) => {
                return Ok(Vec::new());
            }
            Ok(None) => {}
            Err(e)
                if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                    || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
            {
                return Err(TargetError::NotBegun {
                    set: set.to_string(),
                    token: run.token,
                });
            }
            Err(e) => return Err(self.db_err(&what, &e)),
        }
        let found: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&tool.table()])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.db_err(&what, &e))?;
        let Some(table) = found else {
            tracing::info!(set, tool = %tool, "no {} table on the search_path: nothing to adopt", tool.table());
            return Ok(Vec::new());
        };
        let columns: Vec<String> = client
            .query(
                "SELECT attname::text FROM pg_attribute
                 WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
                &[&table],
            )
            .await
            .map_err(|e| self.db_err(&what, &e))?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        check_layout(tool, &table, &columns)?;
        let (seen, problems) = self.read_tool(tool, &table).await?;
        if !problems.is_empty() {
            return Err(TargetError::Untrusted {
                tool: tool.name().into(),
                problems: problems
                    .into_iter()
                    .map(|p| attach_file(p, steps))
                    .collect(),
            });
        }
        let adopted = adopted_rows(tool, &seen, steps, run);
        if adopted.is_empty() {
            return Ok(adopted);
        }
        let body = insert_rows(&history, set, &adopted, steps);
        let rows = self
            .fenced_tx(set, run, &format!("adopting {tool}'s history"), &body)
            .await?;
        let written: usize = column(&rows, "initguard_adopted")
            .flatten()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        tracing::info!(set, tool = %tool, "adopted {written} steps from {table}");
        Ok(adopted)
    })
        .await
    }

    /// The tool's rows as `Seen`, and what makes them untrustworthy.
    async fn read_tool(
        &self,
        tool: Tool,
        table: &str,
    ) -> Result<(Vec<Seen>, Vec<Problem>), TargetError> {
        let client = &self.conn.client;
        let what = format!("reading {table}");
        let err = |e: tokio_postgres::Error| self.db_err(&what, &e);
        let mut seen = Vec::new();
        let mut problems = Vec::new();
        match tool {
            Tool::Flyway => {
                let rows = client
                    .query(
                        &format!(
                            "SELECT version::text, description::text, type::text, success,
                                    installed_on::timestamptz, execution_time::bigint
                             FROM {table} ORDER BY installed_rank"
                        ),
                        &[],
                    )
                    .await
                    .map_err(err)?;
                let mut raw = Vec::with_capacity(rows.len());
                for r in &rows {
                    raw.push(FlywayRow {
                        version: r.try_get(0).map_err(err)?,
                        description: r.try_get(1).map_err(err)?,
                        kind: r.try_get(2).map_err(err)?,
                        success: r.try_get(3).map_err(err)?,
                        at: r.try_get(4).map_err(err)?,
                        ms: r
                            .try_get::<_, Option<i64>>(5)
                            .map_err(err)?
                            .and_then(|m| u64::try_from(m).ok()),
                    });
                }
                (seen, problems) = flyway(&raw);
            }
            Tool::GolangMigrate => {
                let row = client
                    .query_opt(
                        &format!("SELECT version::bigint, dirty FROM {table} LIMIT 1"),
                        &[],
                    )
                    .await
                    .map_err(err)?;
                if let Some(r) = row {
                    let version: i64 = r.try_get(0).map_err(err)?;
                    let dirty: bool = r.try_get(1).map_err(err)?;
                    if dirty {
                        problems.push(Problem {
                            kind: ProblemKind::Dirty,
                            step: (version >= 0).then(|| version.to_string()),
                            file: None,
                            detail: format!(
                                "golang-migrate's {table} marks version {version} dirty: it failed or was interrupted part way, and what it changed is unknown"
                            ),
                            fix: format!(
                                "check what version {version} changed and complete or undo it by hand, then `migrate force {version}` (completed) or `migrate force <the version before>` (undone), and run apply again"
                            ),
                        });
                    } else if let Some(parts) = tool_version(&version.to_string()) {
                        seen.push(Seen::UpTo {
                            parts,
                            text: version.to_string(),
                        });
                    }
                }
            }
            Tool::Sqlx => {
                let rows = client
                    .query(
                        &format!(
                            "SELECT version::bigint, description::text, success,
                                    installed_on::timestamptz, execution_time::bigint
                             FROM {table} ORDER BY version"
                        ),
                        &[],
                    )
                    .await
                    .map_err(err)?;
                for r in &rows {
                    let version: i64 = r.try_get(0).map_err(err)?;
                    let success: bool = r.try_get(2).map_err(err)?;
                    if !success {
                        problems.push(Problem {
                            kind: ProblemKind::Dirty,
                            step: Some(version.to_string()),
                            file: None,
                            detail: format!(
                                "sqlx's {table} marks version {version} as not successful (dirty): it failed part way, and what it changed is unknown"
                            ),
                            fix: format!(
                                "check what version {version} changed and undo it by hand, delete its row from {table}, and run apply again"
                            ),
                        });
                        continue;
                    }
                    let Some(parts) = tool_version(&version.to_string()) else {
                        continue;
                    };
                    seen.push(Seen::Version {
                        parts,
                        text: version.to_string(),
                        description: r.try_get(1).map_err(err)?,
                        at: r.try_get(3).map_err(err)?,
                        // sqlx records nanoseconds.
                        ms: r
                            .try_get::<_, Option<i64>>(4)
                            .map_err(err)?
                            .and_then(|n| u64::try_from(n / 1_000_000).ok()),
                    });
                }
            }
            Tool::Dbmate => {
                let rows = client
                    .query(
                        &format!("SELECT version::text FROM {table} ORDER BY version"),
                        &[],
                    )
                    .await
                    .map_err(err)?;
                for r in &rows {
                    let text: String = r.try_get(0).map_err(err)?;
                    match tool_version(&text) {
                        Some(parts) => seen.push(Seen::Version {
                            parts,
                            text: text.trim().to_string(),
                            description: None,
                            at: None,
                            ms: None,
                        }),
                        None => tracing::warn!(
                            "ignoring dbmate version {text:?}: not a numeric version"
                        ),
                    }
                }
            }
        }
        Ok((seen, problems))
    }
}

/// A Flyway history row.
#[derive(Debug, Clone)]
struct FlywayRow {
    version: Option<String>,
    description: Option<String>,
    kind: Option<String>,
    success: bool,
    at: Option<DateTime<Utc>>,
    ms: Option<u64>,
}

/// Flyway's rows in `installed_rank` order, as what is applied now.
fn flyway(rows: &[FlywayRow]) -> (Vec<Seen>, Vec<Problem>) {
    let mut versions: BTreeMap<Vec<u64>, Seen> = BTreeMap::new();
    let mut repeatables: BTreeMap<String, Seen> = BTreeMap::new();
    let mut baseline: Option<Seen> = None;
    let mut problems = Vec::new();
    for r in rows {
        let kind = r.kind.as_deref().unwrap_or("").to_ascii_uppercase();
        if kind == "SCHEMA" {
            continue;
        }
        let description = r.description.clone().unwrap_or_default();
        let parsed = r
            .version
            .as_deref()
            .map(|v| (v.to_string(), tool_version(v)));
        if !r.success {
            let shown = r.version.clone().unwrap_or_else(|| description.clone());
            problems.push(Problem {
                kind: ProblemKind::Failed,
                step: Some(shown.clone()),
                file: None,
                detail: format!(
                    "flyway_schema_history records migration {shown} ({description}) as failed: what it changed is unknown"
                ),
                fix: "fix the database by hand, then `flyway repair` (which removes the failed row), and run apply again".into(),
            });
            continue;
        }
        match parsed {
            Some((text, Some(parts))) => {
                if kind == "DELETE" || kind.starts_with("UNDO") {
                    versions.remove(&parts);
                } else if kind.contains("BASELINE") {
                    baseline = Some(Seen::UpTo {
                        parts: parts.clone(),
                        text: text.clone(),
                    });
                    if kind == "SQL_BASELINE" {
                        versions.insert(
                            parts.clone(),
                            Seen::Version {
                                parts,
                                text,
                                description: Some(description),
                                at: r.at,
                                ms: r.ms,
                            },
                        );
                    }
                } else {
                    versions.insert(
                        parts.clone(),
                        Seen::Version {
                            parts,
                            text,
                            description: Some(description),
                            at: r.at,
                            ms: r.ms,
                        },
                    );
                }
            }
            Some((text, None)) => {
                tracing::warn!("ignoring Flyway version {text:?}: not a numeric version");
            }
            None => {
                if kind == "DELETE" {
                    repeatables.remove(&description);
                } else {
                    repeatables.insert(
                        description.clone(),
                        Seen::Repeatable {
                            description,
                            at: r.at,
                            ms: r.ms,
                        },
                    );
                }
            }
        }
    }
    let mut seen: Vec<Seen> = baseline.into_iter().collect();
    seen.extend(versions.into_values());
    seen.extend(repeatables.into_values());
    (seen, problems)
}

/// The tool's table has the columns that tool gives it.
fn check_layout(tool: Tool, table: &str, columns: &[String]) -> Result<(), TargetError> {
    let has = |c: &str| columns.iter().any(|x| x == c);
    let missing: Vec<&str> = tool
        .required_columns()
        .iter()
        .copied()
        .filter(|c| !has(c))
        .collect();
    if !missing.is_empty() {
        return Err(TargetError::NotAdoptable {
            tool: tool.name().into(),
            reason: format!(
                "{table} has no column {}: it is not {tool}'s history table",
                missing.join(", ")
            ),
        });
    }
    if tool == Tool::Dbmate && has("dirty") {
        return Err(TargetError::NotAdoptable {
            tool: tool.name().into(),
            reason: format!(
                "{table} has a dirty column: it is golang-migrate's table, not dbmate's; use --adopt golang-migrate"
            ),
        });
    }
    Ok(())
}

/// Name the step's file in a problem about a version of the set.
fn attach_file(mut p: Problem, steps: &StepSet) -> Problem {
    if let Some(parts) = p.step.as_deref().and_then(tool_version) {
        p.file = steps
            .steps
            .iter()
            .find(|s| matches!(&s.id, StepId::Versioned(v) if v.parts == parts))
            .map(|s| s.file.clone());
    }
    p
}

/// The `applied` rows the tool's history stands for, matched to the set's steps.
fn adopted_rows(tool: Tool, seen: &[Seen], steps: &StepSet, run: &RunInfo) -> Vec<Applied> {
    let by_version: HashMap<&[u64], &Step> = steps
        .steps
        .iter()
        .filter_map(|s| match &s.id {
            StepId::Versioned(v) => Some((v.parts.as_slice(), s)),
            StepId::Repeatable(_) => None,
        })
        .collect();
    let row = |id: StepId,
               description: &str,
               kind: Kind,
               checksum: Option<Checksum>,
               at: Option<DateTime<Utc>>,
               ms: Option<u64>| Applied {
        id,
        description: description.to_string(),
        kind,
        checksum,
        state: AppliedState::Applied,
        started_at: at,
        finished_at: at,
        duration_ms: ms,
        holder: run.holder.clone(),
        token: run.token,
        statements_done: 0,
        error: None,
        adopted_from: Some(tool.name().into()),
    };
    let from_step = |s: &Step, at, ms| {
        row(
            s.id.clone(),
            &s.description,
            s.kind,
            Some(s.checksum.clone()),
            at,
            ms,
        )
    };
    let without_file = |parts: &[u64], text: &str, description: &str, at, ms| {
        let id = StepId::Versioned(Version {
            parts: parts.to_vec(),
            text: text.to_string(),
        });
        row(id, description, Kind::Sql, None, at, ms)
    };
    let mut out: BTreeMap<StepId, Applied> = BTreeMap::new();
    for s in seen {
        match s {
            Seen::UpTo { parts, text } => {
                for step in &steps.steps {
                    if let StepId::Versioned(v) = &step.id
                        && v.parts <= *parts
                    {
                        out.insert(step.id.clone(), from_step(step, None, None));
                    }
                }
                if !by_version.contains_key(parts.as_slice()) {
                    let a = without_file(parts, text, "", None, None);
                    out.insert(a.id.clone(), a);
                }
            }
            Seen::Version {
                parts,
                text,
                description,
                at,
                ms,
            } => {
                let a = match by_version.get(parts.as_slice()) {
                    Some(step) => from_step(step, *at, *ms),
                    None => {
                        without_file(parts, text, description.as_deref().unwrap_or(""), *at, *ms)
                    }
                };
                out.insert(a.id.clone(), a);
            }
            Seen::Repeatable {
                description,
                at,
                ms,
            } => {
                // A repeatable migration whose file is gone needs no row: nothing would run it.
                if let Some(step) = steps
                    .steps
                    .iter()
                    .find(|s| matches!(&s.id, StepId::Repeatable(d) if d == description))
                {
                    out.insert(step.id.clone(), from_step(step, *at, *ms));
                }
            }
        }
    }
    out.into_values().collect()
}

/// One INSERT of every adopted row (rows already there are left alone), returning the count as
/// `initguard_adopted`.
fn insert_rows(history: &str, set: &str, adopted: &[Applied], steps: &StepSet) -> String {
    let ts = |t: Option<DateTime<Utc>>| match t {
        Some(t) => format!("'{}'::timestamptz", t.to_rfc3339()),
        None => "NULL".into(),
    };
    let values: Vec<String> = adopted
        .iter()
        .map(|a| {
            let file = steps
                .steps
                .iter()
                .find(|s| s.id == a.id)
                .map(|s| s.file.as_str());
            format!(
                "({}, {}, {}, {}, {}, {}, {}, 'applied', {}, {}, {}, {}, {}, 0, NULL, {})",
                literal(set),
                literal(&rows::key(&a.id)),
                opt_literal(rows::version_text(&a.id)),
                literal(&a.description),
                literal(kind_text(a.kind)),
                opt_literal(file),
                opt_literal(a.checksum.as_ref().map(|c| c.0.as_str())),
                ts(a.started_at),
                ts(a.finished_at),
                a.duration_ms
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "NULL".into()),
                literal(&a.holder),
                token_i64(a.token),
                opt_literal(a.adopted_from.as_deref()),
            )
        })
        .collect();
    format!(
        "WITH ins AS (INSERT INTO {history} (set_name, step, version, description, kind, file, \
         checksum, state, started_at, finished_at, duration_ms, holder, token, statements_done, \
         error, adopted_from) VALUES {} ON CONFLICT (set_name, step) DO NOTHING RETURNING 1) \
         SELECT count(*) AS initguard_adopted FROM ins",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: Option<&str>, desc: &str, kind: &str, success: bool) -> FlywayRow {
        FlywayRow {
            version: version.map(str::to_string),
            description: Some(desc.into()),
            kind: Some(kind.into()),
            success,
            at: None,
            ms: None,
        }
    }

    #[test]
    fn tool_versions_compare_as_versions_do() {
        assert_eq!(tool_version("1.2.0"), Some(vec![1, 2]));
        assert_eq!(tool_version("20240101120000"), Some(vec![20240101120000]));
        assert_eq!(tool_version("1_10"), Some(vec![1, 10]));
        assert_eq!(tool_version("v1"), None);
        assert_eq!(tool_version("-1"), None);
        assert_eq!(Tool::parse("golang-migrate"), Some(Tool::GolangMigrate));
        assert_eq!(Tool::parse("liquibase"), None);
    }

    #[test]
    fn flyway_rows_read_as_what_is_applied_now() {
        let (seen, problems) = flyway(&[
            row(Some("0"), "<< Flyway Schema Creation >>", "SCHEMA", true),
            row(Some("1"), "<< Flyway Baseline >>", "BASELINE", true),
            row(Some("2"), "add users", "SQL", true),
            row(Some("3"), "gone", "SQL", true),
            row(Some("3"), "gone", "DELETE", true),
            row(None, "views", "SQL", true),
            row(None, "views", "SQL", true),
        ]);
        assert!(problems.is_empty());
        assert!(matches!(&seen[0], Seen::UpTo { parts, .. } if parts == &vec![1]));
        assert!(matches!(&seen[1], Seen::Version { parts, .. } if parts == &vec![2]));
        assert!(matches!(&seen[2], Seen::Repeatable { description, .. } if description == "views"));
        assert_eq!(seen.len(), 3);
        let (_, problems) = flyway(&[row(Some("4"), "broken", "SQL", false)]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Failed);
        assert!(problems[0].fix.contains("flyway repair"));
    }

    #[test]
    fn a_dbmate_table_with_a_dirty_column_is_golang_migrates() {
        let cols = vec!["version".to_string(), "dirty".to_string()];
        assert!(check_layout(Tool::Dbmate, "schema_migrations", &cols).is_err());
        assert!(check_layout(Tool::GolangMigrate, "schema_migrations", &cols).is_ok());
        let e = check_layout(Tool::Sqlx, "_sqlx_migrations", &cols).unwrap_err();
        assert!(
            e.to_string().contains("no column description, success"),
            "{e}"
        );
    }
}
