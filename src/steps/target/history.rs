//! `steps_history` rows: reading a set's history (read-only, creates nothing), the upserts that
//! record a step running, progressing, applied or failed, and the fenced history rows of script
//! steps. The statements are built with literals so that each write, with its fence check, is
//! one message and one round trip.

use super::conn::{Target, column};
use super::error::TargetError;
use super::rows::{self, COLUMNS, kind_text, literal, opt_literal, token_i64};
use crate::steps::{Applied, RunInfo, Step};
use crate::store::postgres::quote_ident;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// Every column an upsert writes, in `RowWrite`'s order.
const WRITE_COLUMNS: &str = "set_name, step, version, description, kind, file, checksum, state, \
     started_at, finished_at, duration_ms, holder, token, statements_done, error, adopted_from";

/// The durations measured for transactional steps applied, `(key, ms)`, written into their rows
/// (which `steps_step_v3` wrote with none) as one statement; None when there are none. Only rows
/// of this run's token still without a duration are touched.
pub(crate) fn durations_update(
    schema: &str,
    set: &str,
    token: u64,
    durations: &[(String, u64)],
) -> Option<String> {
    if durations.is_empty() {
        return None;
    }
    let keys: Vec<String> = durations.iter().map(|(k, _)| literal(k)).collect();
    let ms: Vec<String> = durations.iter().map(|(_, m)| m.to_string()).collect();
    Some(format!(
        "UPDATE {}.steps_history AS h SET duration_ms = d.ms, \
         finished_at = h.started_at + d.ms * interval '1 millisecond' \
         FROM unnest(ARRAY[{}]::text[], ARRAY[{}]::bigint[]) AS d(step, ms) \
         WHERE h.set_name = {} AND h.step = d.step AND h.token = {} AND h.state = 'applied' \
         AND h.duration_ms IS NULL",
        quote_ident(schema),
        keys.join(","),
        ms.join(","),
        literal(set),
        token_i64(token)
    ))
}

/// The statements that write one step's row.
pub(crate) struct RowWrite<'a> {
    pub table: String,
    pub set: &'a str,
    pub step: &'a Step,
    pub run: &'a RunInfo,
}

impl<'a> RowWrite<'a> {
    pub fn new(target: &Target, set: &'a str, step: &'a Step, run: &'a RunInfo) -> RowWrite<'a> {
        RowWrite {
            table: format!("{}.steps_history", quote_ident(&target.schema)),
            set,
            step,
            run,
        }
    }

    pub fn key(&self) -> String {
        rows::key(&self.step.id)
    }

    /// `INSERT … VALUES (<identity>, state, started, finished, duration, holder, token, done,
    /// error, NULL)`.
    fn insert(
        &self,
        state: &str,
        started: &str,
        finished: &str,
        duration: &str,
        done: &str,
        error: Option<&str>,
    ) -> String {
        let s = self.step;
        format!(
            "INSERT INTO {t} AS h ({WRITE_COLUMNS}) VALUES ({set}, {key}, {version}, {desc}, \
             {kind}, {file}, {checksum}, '{state}', {started}, {finished}, {duration}, {holder}, \
             {token}, {done}, {error}, NULL)",
            t = self.table,
            set = literal(self.set),
            key = literal(&self.key()),
            version = opt_literal(rows::version_text(&s.id)),
            desc = literal(&s.description),
            kind = literal(kind_text(s.kind)),
            file = literal(&s.file),
            checksum = literal(&s.checksum.0),
            holder = literal(&self.run.holder),
            token = token_i64(self.run.token),
            error = opt_literal(error),
        )
    }

    /// The columns every write sets from the step and the run.
    const IDENTITY: &'static str = "version = EXCLUDED.version, description = EXCLUDED.description, \
         kind = EXCLUDED.kind, file = EXCLUDED.file, checksum = EXCLUDED.checksum, \
         holder = EXCLUDED.holder, token = EXCLUDED.token, adopted_from = NULL";

    /// Running from now: the previous state (column `initguard_prev`, no row for a new step)
    /// and the statements already done (`initguard_done`: kept from an interrupted or failed
    /// run, 0 after an applied one).
    pub fn running(&self) -> String {
        format!(
            "SELECT state AS initguard_prev FROM {t} WHERE set_name = {set} AND step = {key};\
             {insert} ON CONFLICT (set_name, step) DO UPDATE SET {id}, state = 'running', \
             started_at = EXCLUDED.started_at, finished_at = NULL, duration_ms = NULL, error = NULL, \
             statements_done = CASE WHEN h.state = 'applied' THEN 0 ELSE h.statements_done END \
             RETURNING statements_done AS initguard_done",
            t = self.table,
            set = literal(self.set),
            key = literal(&self.key()),
            insert = self.insert("running", "clock_timestamp()", "NULL", "NULL", "0", None),
            id = Self::IDENTITY,
        )
    }

    /// `done` statements of a no-transaction step completed.
    pub fn progress(&self, done: u32) -> String {
        format!(
            "UPDATE {t} SET statements_done = {done} WHERE set_name = {set} AND step = {key}",
            t = self.table,
            set = literal(self.set),
            key = literal(&self.key()),
        )
    }

    /// Applied now, after running since the row's `started_at`.
    pub fn applied(&self, done: u32) -> String {
        format!(
            "{} ON CONFLICT (set_name, step) DO UPDATE SET {}, state = 'applied', \
             finished_at = EXCLUDED.finished_at, \
             duration_ms = (extract(epoch FROM EXCLUDED.finished_at - coalesce(h.started_at, EXCLUDED.finished_at)) * 1000)::bigint, \
             statements_done = EXCLUDED.statements_done, error = NULL",
            self.insert(
                "applied",
                "clock_timestamp()",
                "clock_timestamp()",
                "0",
                &done.to_string(),
                None
            ),
            Self::IDENTITY
        )
    }

    /// Failed now with `error`; a no-transaction step's progress is kept. `duration_ms`: how
    /// long the attempt took, for a step whose attempt left no `running` row (a transactional
    /// one, rolled back); None: since the row's `started_at`.
    pub fn failed(&self, error: &str, duration_ms: Option<u64>) -> String {
        let since_start = "(extract(epoch FROM EXCLUDED.finished_at - coalesce(h.started_at, EXCLUDED.finished_at)) * 1000)::bigint";
        let (started, duration, on_update) = match duration_ms {
            Some(d) => (
                format!("clock_timestamp() - interval '{d} milliseconds'"),
                d.to_string(),
                "started_at = EXCLUDED.started_at, duration_ms = EXCLUDED.duration_ms".to_string(),
            ),
            None => (
                "clock_timestamp()".to_string(),
                "0".to_string(),
                format!("duration_ms = {since_start}"),
            ),
        };
        format!(
            "{} ON CONFLICT (set_name, step) DO UPDATE SET {}, state = 'failed', {on_update}, \
             finished_at = EXCLUDED.finished_at, error = EXCLUDED.error",
            self.insert(
                "failed",
                &started,
                "clock_timestamp()",
                &duration,
                "0",
                Some(error)
            ),
            Self::IDENTITY
        )
    }
}

impl Target {
    /// The statement that writes the durations measured so far (`durations_update`), which it
    /// takes: whether or not it is then committed, they are not written twice.
    pub(crate) fn durations_sql(&self, set: &str, token: u64) -> Option<String> {
        let mut held = self
            .durations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        durations_update(&self.schema, set, token, &std::mem::take(&mut *held))
    }

    /// The set's history, sorted by step (versioned by version, then repeatable). Read only:
    /// without the steps tables, empty.
    pub async fn history(&self, set: &str) -> Result<Vec<Applied>, TargetError> {
        self.exclusive(self.read_history(set)).await
    }

    /// `history`, inside an operation that holds the connection already.
    pub(crate) async fn read_history(&self, set: &str) -> Result<Vec<Applied>, TargetError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {}.steps_history WHERE set_name = $1",
            quote_ident(&self.schema)
        );
        // Typed: parsed, bound and run in one round trip (no prepare first).
        let found = match self
            .conn
            .client
            .query_typed(&sql, &[(&set, Type::TEXT)])
            .await
        {
            Ok(rows) => rows,
            Err(e)
                if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                    || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.db_err("reading the steps history", &e)),
        };
        let mut out = Vec::with_capacity(found.len());
        for row in &found {
            match rows::decode(row).map_err(|e| self.db_err("reading the steps history", &e))? {
                Some(a) => out.push(a),
                None => {
                    let step: String = row.try_get(0).unwrap_or_default();
                    tracing::warn!(
                        set,
                        step,
                        "ignoring a steps_history row this initguard cannot read (written by a newer one?)"
                    );
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// A script step is about to run: its row `running`, fenced, durable before it starts (so
    /// that an interruption is seen as one).
    pub async fn script_started(
        &self,
        set: &str,
        step: &Step,
        run: &RunInfo,
    ) -> Result<(), TargetError> {
        self.exclusive(async {
            let w = RowWrite::new(self, set, step, run);
            let rows = self
                .fenced_step_tx(
                    set,
                    run,
                    step,
                    "recording the script step running",
                    &w.running(),
                )
                .await?;
            if column(&rows, "initguard_done").is_none() {
                return Err(TargetError::Db {
                    target: self.label().to_string(),
                    what: "recording the script step running".into(),
                    reason: "the history row was not written".into(),
                });
            }
            Ok(())
        })
        .await
    }

    /// A script step ended: applied, or failed with `Err(message)` (its exit status, as the run
    /// describes it).
    pub async fn script_finished(
        &self,
        set: &str,
        step: &Step,
        run: &RunInfo,
        result: Result<(), String>,
    ) -> Result<(), TargetError> {
        self.exclusive(async {
            let w = RowWrite::new(self, set, step, run);
            let body = match &result {
                Ok(()) => w.applied(0),
                Err(msg) => w.failed(msg, None),
            };
            self.fenced_tx(set, run, "recording the script step's end", &body)
                .await?;
            Ok(())
        })
        .await
    }
}
