//! Running an SQL step against the target database, exactly once.
//!
//! A transactional step is one message of the simple query protocol, so one round trip:
//! `BEGIN; SET LOCAL synchronous_commit = off; SELECT steps_check_v1(…); <the step>;
//! INSERT … history row …; COMMIT`. The server parses the whole message before running any of
//! it, so a syntax error anywhere runs nothing; an error while it runs skips the rest of the
//! message (the COMMIT included) and leaves the transaction aborted, which is then rolled back.
//! The server's error position counts characters of the whole message: the prefix's length is
//! subtracted to place it in the step's file. The step's text is checked first: no transaction
//! control (`crate::sql`), and no literal or comment left open at its end (which would swallow
//! the statements after it); the history insert returns a row, the proof that it ran as a
//! statement of its own.
//!
//! A no-transaction step (`-- initguard:no-transaction`) runs statement by statement, each in
//! autocommit, never inside a transaction of initguard's: `CREATE INDEX CONCURRENTLY` waits for
//! every transaction older than its snapshot, so nothing may be held open meanwhile. Its row is
//! `running` (fenced, committed) before the first statement; after each statement a short
//! fenced transaction records the count done, which is also the fence check before the next one;
//! the last one records `applied`. Transaction control is refused in it too: a `BEGIN` would
//! take the statements after it, and those progress records, into a transaction of its own. An
//! interrupted or failed step resumes at the first statement not recorded done, as history (read
//! under the fence, so newer than any plan) says; the count is by position, so a file edited
//! after a partial run resumes at the same index (its checksum change is validation's to report
//! first). When that
//! statement is a `CREATE [UNIQUE] INDEX CONCURRENTLY name`, the index an interruption or
//! failure left INVALID is dropped first (`DROP INDEX CONCURRENTLY`) so that re-running the
//! statement builds a valid one; and when an interrupted run left a *valid* index of that name,
//! the statement completed before its progress was recorded, and counts as done. Between the
//! fence check and a statement a newer applier may take over (the lease lapsed): it would run
//! that one statement too. No lock can prevent that without making the newer applier wait
//! inside a transaction, which is exactly what deadlocks `CREATE INDEX CONCURRENTLY`; the lease
//! is what keeps two appliers apart, and the fence bounds the overlap to one statement.

use super::conn::{Target, column, rows_of};
use super::error::TargetError;
use super::history::RowWrite;
use super::text::{self, Stmt};
use crate::steps::{Planned, RunInfo, Step};
use crate::store::SqlFailure;
use crate::store::postgres::is_connection_error;
use std::time::Instant;
use tokio_postgres::error::{DbError, ErrorPosition};

impl Target {
    /// Apply one planned SQL step (see the module comment). A failure is rolled back (for a
    /// no-transaction step: stops at the failing statement), recorded `failed` with the
    /// server's message and its line and column in the step's file, and returned as
    /// `StepFailed`; the steps before it stay applied (and durable).
    pub async fn apply(&self, set: &str, p: &Planned, run: &RunInfo) -> Result<(), TargetError> {
        self.exclusive(async {
            let step = &p.step;
            let bytes = tokio::fs::read(&step.path)
                .await
                .map_err(|e| refused(step, format!("cannot read {}: {e}", step.path.display())))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| refused(step, "the file is not UTF-8 text".to_string()))?;
            // Editors may start a file with a byte order mark; the server would read it as SQL.
            // Positions are then counted from after it, as editors show them.
            let text = match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_string(),
                None => text,
            };
            if step.no_transaction {
                self.apply_statements(set, p, run, &text).await
            } else {
                self.apply_transactional(set, step, run, &text).await
            }
        })
        .await
    }

    async fn apply_transactional(
        &self,
        set: &str,
        step: &Step,
        run: &RunInfo,
        text: &str,
    ) -> Result<(), TargetError> {
        text::check_transactional(text).map_err(|r| refused(step, r))?;
        let w = RowWrite::new(self, set, step, run);
        let prefix = format!(
            "BEGIN;SET LOCAL synchronous_commit = off;{};",
            self.check_call(set, run, Some(step))
        );
        // The newline ends a `--` comment on the step's last line.
        let sql = format!("{prefix}{text}\n;{};COMMIT", w.applied_in_transaction());
        let started = Instant::now();
        match self.conn.client.simple_query(&sql).await {
            Ok(msgs) => {
                if column(&rows_of(msgs), "initguard_recorded").is_none() {
                    // Cannot happen after `check_transactional`; said loudly should it ever.
                    return Err(TargetError::Db {
                        target: self.label().to_string(),
                        what: format!("applying step {}", step.id),
                        reason: "the history row was not written with the step".into(),
                    });
                }
                Ok(())
            }
            Err(e) => {
                if is_connection_error(&e) {
                    return Err(self.db_err(&format!("applying step {}", step.id), &e));
                }
                let _ = self.conn.client.batch_execute("ROLLBACK").await;
                if let Some(refusal) = self.fence_refusal(set, run.token, Some(step), &e) {
                    return Err(refusal);
                }
                let Some(db) = e.as_db_error() else {
                    return Err(self.db_err(&format!("applying step {}", step.id), &e));
                };
                let shift = prefix.chars().count();
                let failure = failure_in_file(db, text, 0, text.chars().count(), shift);
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let res = self
                    .fenced_tx(
                        set,
                        run,
                        "recording the failed step",
                        &w.failed(&failure.to_string(), Some(ms)),
                    )
                    .await;
                res?;
                Err(TargetError::StepFailed {
                    step: step.id.to_string(),
                    file: step.file.clone(),
                    failure: Box::new(failure),
                })
            }
        }
    }

    async fn apply_statements(
        &self,
        set: &str,
        p: &Planned,
        run: &RunInfo,
        text: &str,
    ) -> Result<(), TargetError> {
        let step = &p.step;
        text::check_statement_by_statement(text).map_err(|r| refused(step, r))?;
        let stmts = text::statements(text);
        let w = RowWrite::new(self, set, step, run);
        let rows = self
            .fenced_step_tx(set, run, step, "recording the step running", &w.running())
            .await?;
        let prev = column(&rows, "initguard_prev")
            .flatten()
            .map(str::to_string);
        let done: usize = column(&rows, "initguard_done")
            .flatten()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if done != p.resume_at as usize {
            tracing::info!(
                set,
                step = %step.id,
                "history says {done} statements of step {} are done (the plan said {}): resuming after them",
                step.id,
                p.resume_at
            );
        }
        if done > stmts.len() {
            let reason = format!(
                "history records {done} statements done, but the file has {} now; restore the file, or remove the step's history row to run it again from the start",
                stmts.len()
            );
            self.fenced_tx(
                set,
                run,
                "recording the failed step",
                &w.failed(&reason, None),
            )
            .await?;
            return Err(refused(step, reason));
        }
        let mut i = done;
        let resuming = matches!(prev.as_deref(), Some("running" | "failed"));
        if resuming
            && i < stmts.len()
            && self
                .repair_interrupted_index(step, &stmts[i], prev.as_deref() == Some("running"))
                .await?
        {
            i += 1;
            let body = w.progress(i as u32);
            self.fenced_tx(set, run, "recording the step's progress", &body)
                .await?;
        }
        let mut recorded = false;
        while i < stmts.len() {
            let stmt = &stmts[i];
            let started = Instant::now();
            if let Err(e) = self.conn.client.batch_execute(stmt.text).await {
                let what = format!("running statement {} of step {}", i + 1, step.id);
                if is_connection_error(&e) {
                    return Err(self.db_err(&what, &e));
                }
                let Some(db) = e.as_db_error() else {
                    return Err(self.db_err(&what, &e));
                };
                let failure = failure_in_file(db, text, stmt.offset, stmt.text.chars().count(), 0);
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::debug!(set, step = %step.id, "statement {} failed after {ms}ms", i + 1);
                let message = format!("statement {}: {failure}", i + 1);
                let res = self
                    .fenced_tx(
                        set,
                        run,
                        "recording the failed step",
                        &w.failed(&message, None),
                    )
                    .await;
                res?;
                return Err(TargetError::StepFailed {
                    step: step.id.to_string(),
                    file: step.file.clone(),
                    failure: Box::new(failure),
                });
            }
            i += 1;
            let body = if i == stmts.len() {
                recorded = true;
                w.applied(i as u32)
            } else {
                w.progress(i as u32)
            };
            self.fenced_tx(set, run, "recording the step's progress", &body)
                .await?;
        }
        if !recorded {
            self.fenced_tx(
                set,
                run,
                "recording the step applied",
                &w.applied(stmts.len() as u32),
            )
            .await?;
        }
        Ok(())
    }

    /// Before re-running statement `stmt` of an interrupted or failed step: when it creates an
    /// index concurrently and that index exists INVALID, drop it (concurrently, in autocommit);
    /// when it exists valid after an interruption, the statement had completed: true, skip it.
    async fn repair_interrupted_index(
        &self,
        step: &Step,
        stmt: &Stmt<'_>,
        interrupted: bool,
    ) -> Result<bool, TargetError> {
        let Some(name) = text::concurrent_index_name(stmt) else {
            return Ok(false);
        };
        let found = self
            .conn
            .client
            .query_opt(
                "SELECT i.indisvalid, format('%I.%I', n.nspname, c.relname) FROM pg_index i
                 JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = to_regclass($1)",
                &[&name],
            )
            .await
            .map_err(|e| self.db_err("looking for the index the step creates", &e))?;
        let Some(row) = found else {
            return Ok(false);
        };
        let valid: bool = row
            .try_get(0)
            .map_err(|e| self.db_err("looking for the index the step creates", &e))?;
        let shown: String = row
            .try_get(1)
            .map_err(|e| self.db_err("looking for the index the step creates", &e))?;
        if valid {
            if interrupted {
                tracing::info!(step = %step.id, index = %shown, "index {shown} exists and is valid: the interrupted statement had completed; not running it again");
                return Ok(true);
            }
            return Ok(false);
        }
        tracing::info!(step = %step.id, index = %shown, "dropping the INVALID index {shown} the interrupted statement left, to build it again");
        self.conn
            .client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {shown}"))
            .await
            .map_err(|e| self.db_err(&format!("dropping the INVALID index {shown}"), &e))?;
        Ok(false)
    }
}

fn refused(step: &Step, reason: String) -> TargetError {
    TargetError::Refused {
        step: step.id.to_string(),
        file: step.file.clone(),
        reason,
    }
}

/// The server's error, with its position moved from the text sent (`shift` characters of
/// initguard's own before the piece of the file that starts at byte `offset` and is `len`
/// characters long) to the step's file, and located there by line and column.
fn failure_in_file(
    db: &DbError,
    file: &str,
    offset: usize,
    len: usize,
    shift: usize,
) -> SqlFailure {
    let position = match db.position() {
        Some(ErrorPosition::Original(p)) => usize::try_from(*p)
            .ok()
            .and_then(|p| p.checked_sub(shift))
            .and_then(|p| u32::try_from(p).ok())
            .and_then(|p| text::file_position(file, offset, len, p)),
        _ => None,
    };
    SqlFailure {
        code: db.code().code().to_string(),
        message: db.message().to_string(),
        position,
        detail: db.detail().map(str::to_string),
        hint: db.hint().map(str::to_string),
        line_col: None,
    }
    .locate(file)
}
