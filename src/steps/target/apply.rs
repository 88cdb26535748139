//! Running SQL steps against the target database, exactly once each.
//!
//! A transactional step is one message: `SELECT steps_step_v3(…)` (its fence check and its
//! history row, see `tables`), then the step's text. The server runs a message of several
//! statements without transaction control as one transaction, committed at its end; the first
//! error rolls it back and nothing after it runs. So the step and its row commit together or
//! not at all, and nothing is held open between messages. A step with savepoints, which the
//! server accepts only in an explicit block, starts its message with `BEGIN;` and is followed by
//! a `COMMIT` request (which, after an error, rolls back). Transaction control in the text is
//! refused before anything is sent (`crate::sql`). The text comes last in its message, so a
//! literal or comment it leaves open swallows nothing of initguard's: the server parses the
//! whole message before running any of it, and rejects it, with a position, which is moved past
//! initguard's prefix to the step's file (by line and column). Measured by a raw-protocol client
//! sending each form's statements for 1,000 one-table steps, one message with the check and the
//! row in one function took the server 0.91 s where five requests with their own `BEGIN` and
//! `COMMIT` took 1.00 s (the bare `CREATE TABLE`s: 0.74 s); whole applies, 1.04 s against
//! 1.11 s (BENCHMARKS.md).
//!
//! Consecutive transactional steps are pipelined: a step's transaction is sent before the one
//! before it has answered, so that the server starts it the moment that one commits instead of
//! sitting idle for a round trip and this process's turn on a core. (Over 1,000 one-table steps
//! the server's process waited for this one 95 ms in all before, 4 ms after, by its
//! `epoll_wait` calls under perf's syscall tracepoints.) At most two are in flight. The later
//! one's check also requires the earlier one applied in history (`p_after`; for a repeatable
//! step, with its checksum): when the earlier one failed or was cancelled, the later one rolls
//! back without running, and is not judged. Either way each one is whole on the server, fenced
//! by its own check, so a killed or paused applier leaves at most those two to end there, each
//! with its row or not at all.
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
//! first). When that statement is a `CREATE [UNIQUE] INDEX CONCURRENTLY name`, the index an
//! interruption or failure left INVALID is dropped first (`DROP INDEX CONCURRENTLY`) so that
//! running the statement again builds a valid one; and when an interrupted run left a *valid*
//! index of that name, the statement completed before its progress was recorded, and counts as
//! done. Between the
//! fence check and a statement a newer applier may take over (the lease lapsed): it would run
//! that one statement too. No lock can prevent that without making the newer applier wait
//! inside a transaction, which is exactly what deadlocks `CREATE INDEX CONCURRENTLY`; the lease
//! is what keeps two appliers apart, and the fence bounds the overlap to one statement.

use super::conn::{Target, column};
use super::error::TargetError;
use super::history::RowWrite;
use super::rows::{self, kind_text, literal, opt_literal, token_i64};
use super::tables;
use super::text::{self, Stmt};
use crate::steps::{Planned, RunInfo, Step, StepId};
use crate::store::SqlFailure;
use crate::store::postgres::is_connection_error;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_postgres::error::{DbError, ErrorPosition, SqlState};

/// What `apply_steps` tells its caller about a step, in order: `Sent`, then how it ended when
/// it did not stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    /// Its SQL is on its way to the server (it may still not run: a step before it failed).
    Sent,
    /// Run now, with its history row.
    Applied,
    /// History already had it applied (a plan older than the history): not run again.
    AlreadyApplied,
}

/// The server's answers to one step transaction: its message, and the `COMMIT` request sent
/// after it when the step has savepoints.
type Replies = (
    Result<(), tokio_postgres::Error>,
    Option<Result<(), tokio_postgres::Error>>,
);

/// A step transaction as it was sent, and its replies.
struct Answered {
    /// The step's text.
    text: String,
    /// How many characters of initguard's precede the text in the message.
    shift: usize,
    replies: Replies,
}

/// A step transaction's replies to come.
type Pending<'a> = Pin<Box<dyn Future<Output = Answered> + Send + 'a>>;

/// A step transaction sent and not yet judged: its requests went out when it was started
/// (`Sent::start`), and the server runs them whether or not they are awaited.
struct Sent<'a> {
    planned: &'a Planned,
    /// From when the server could run it: when it was sent, or when the one before it ended.
    from: Instant,
    replies: Answer<'a>,
}

/// The replies, still to come, or already there at the first poll (a closed connection fails
/// at once): a finished future must not be polled again.
enum Answer<'a> {
    Pending(Pending<'a>),
    Ready(Box<Answered>),
}

impl<'a> Sent<'a> {
    /// Poll `replies` once, with a waker that does nothing: tokio-postgres sends a request when
    /// its future is first polled, so the requests go out now; the replies are awaited later
    /// (with the task's own waker: each poll registers the waker it is given).
    fn start(planned: &'a Planned, mut replies: Pending<'a>) -> Sent<'a> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let replies = match replies.as_mut().poll(&mut cx) {
            Poll::Ready(r) => Answer::Ready(Box::new(r)),
            Poll::Pending => Answer::Pending(replies),
        };
        Sent {
            planned,
            from: Instant::now(),
            replies,
        }
    }

    async fn replies(self) -> Answered {
        match self.replies {
            Answer::Pending(f) => f.await,
            Answer::Ready(r) => *r,
        }
    }
}

/// A transactional step that did not commit, judged from its replies alone (no request made).
enum Unapplied {
    /// The step's own SQL failed: recorded `failed` next, and the run stops.
    Failed(Box<SqlFailure>, u64),
    /// Anything else (fenced, a broken connection, …): the run stops with it.
    Error(TargetError),
}

impl Target {
    /// Apply one planned SQL step (as `apply_steps`); a step history already has applied is
    /// `AlreadyApplied`, and nothing was run.
    pub async fn apply(&self, set: &str, p: &Planned, run: &RunInfo) -> Result<(), TargetError> {
        let mut already = false;
        self.apply_steps(set, std::slice::from_ref(p), run, &mut |_, e| {
            already |= e == StepEvent::AlreadyApplied
        })
        .await?;
        if already {
            return Err(TargetError::AlreadyApplied {
                step: p.step.id.to_string(),
            });
        }
        Ok(())
    }

    /// Apply planned SQL steps in order (see the module comment), calling `each` as each one
    /// ends. A failure is rolled back (for a no-transaction step: stops at the failing
    /// statement), recorded `failed` with the server's message and its line and column in the
    /// step's file, and returned as `StepFailed`; the steps before it stay applied (and durable).
    pub async fn apply_steps(
        &self,
        set: &str,
        steps: &[Planned],
        run: &RunInfo,
        each: &mut (dyn FnMut(&Planned, StepEvent) + Send),
    ) -> Result<(), TargetError> {
        self.exclusive(async {
            let mut sent: Option<Sent<'_>> = None;
            for p in steps {
                let text = match read_text(&p.step).await {
                    Ok(t) => t,
                    Err(e) => return self.stopped(set, run, sent, each, e).await,
                };
                if p.step.no_transaction {
                    // Its statements must not queue behind a transaction of ours: settle first.
                    self.settled(set, run, sent.take(), each).await?;
                    each(p, StepEvent::Sent);
                    match self.apply_statements(set, p, run, &text).await {
                        Ok(()) => each(p, StepEvent::Applied),
                        Err(TargetError::AlreadyApplied { .. }) => {
                            each(p, StepEvent::AlreadyApplied)
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                let savepoints = match text::check_transactional(&text) {
                    Ok(savepoints) => savepoints,
                    Err(r) => {
                        return self
                            .stopped(set, run, sent, each, refused(&p.step, r))
                            .await;
                    }
                };
                let after = sent.as_ref().map(|s| &s.planned.step);
                let replies = self.send(set, &p.step, run, text, savepoints, after);
                each(p, StepEvent::Sent);
                // Sent now, before the one before it is answered: the server starts this step
                // the moment that one commits, not a round trip and this process's turn later.
                // Nothing else may be requested while a step's replies are unread: it would wait
                // behind them (the connection hands replies out in order, through bounded
                // channels), and they are read only after it.
                if let Some(before) = sent.replace(Sent::start(p, replies)) {
                    self.settle(set, run, before, &mut sent, each).await?;
                    if let Some(s) = sent.as_mut() {
                        s.from = s.from.max(Instant::now());
                    }
                }
            }
            self.settled(set, run, sent, each).await
        })
        .await
    }

    /// The run stops at a step refused before it was sent: settle the one in flight, write the
    /// durations of the steps applied (the run ends here), and return `refusal`.
    async fn stopped(
        &self,
        set: &str,
        run: &RunInfo,
        sent: Option<Sent<'_>>,
        each: &mut (dyn FnMut(&Planned, StepEvent) + Send),
        refusal: TargetError,
    ) -> Result<(), TargetError> {
        self.settled(set, run, sent, each).await?;
        if let Some(d) = self.durations_sql(set, run.token) {
            self.fenced_tx(set, run, "recording the steps' durations", &d)
                .await?;
        }
        Err(refusal)
    }

    /// Await the step transaction `sent`, if any, and judge it.
    async fn settled(
        &self,
        set: &str,
        run: &RunInfo,
        sent: Option<Sent<'_>>,
        each: &mut (dyn FnMut(&Planned, StepEvent) + Send),
    ) -> Result<(), TargetError> {
        match sent {
            Some(s) => self.settle(set, run, s, &mut None, each).await,
            None => Ok(()),
        }
    }

    /// Await the step transaction `sent` and judge it. `behind` is the one sent after it, if
    /// any: when `sent` did not commit, `behind` (whose check requires `sent` applied) rolled
    /// back without running, and its replies are awaited before anything else is sent — the
    /// connection hands out replies in order, so a request sent meanwhile would wait behind them.
    async fn settle<'a>(
        &self,
        set: &str,
        run: &RunInfo,
        sent: Sent<'a>,
        behind: &mut Option<Sent<'a>>,
        each: &mut (dyn FnMut(&Planned, StepEvent) + Send),
    ) -> Result<(), TargetError> {
        let (planned, from) = (sent.planned, sent.from);
        let step = &planned.step;
        let answered = sent.replies().await;
        let unapplied = match self.judge(set, step, run, &answered, from) {
            Ok(done) => {
                each(planned, done);
                return Ok(());
            }
            Err(u) => u,
        };
        if let Some(b) = behind.take() {
            // Its check refuses to run it (this one is not applied); judged all the same, so
            // that if it ever did commit, the caller hears of it.
            let (planned, from) = (b.planned, b.from);
            let answered = b.replies().await;
            if let Ok(done) = self.judge(set, &planned.step, run, &answered, from) {
                each(planned, done);
            }
        }
        match unapplied {
            Unapplied::Error(e) => Err(e),
            Unapplied::Failed(failure, ms) => {
                let w = RowWrite::new(self, set, step, run);
                self.fenced_tx(
                    set,
                    run,
                    "recording the failed step",
                    &w.failed(&failure.to_string(), Some(ms)),
                )
                .await?;
                Err(TargetError::StepFailed {
                    step: step.id.to_string(),
                    file: step.file.clone(),
                    failure,
                })
            }
        }
    }

    /// The step transaction of a transactional step, as a future that sends it when first
    /// polled, in an explicit block when the step has savepoints (`explicit`). `after` is the
    /// step sent just before, not yet answered: the check refuses to run this one unless that
    /// one is applied (it committed, or history had it already).
    ///
    /// The message goes out whole, or not at all (the connection is gone): tokio-postgres
    /// refuses to encode only a text with a NUL byte, which `read_text` made sure it has not.
    fn send<'a>(
        &'a self,
        set: &'a str,
        step: &'a Step,
        run: &'a RunInfo,
        text: String,
        explicit: bool,
        after: Option<&'a Step>,
    ) -> Pending<'a> {
        let after_key = after.map(|a| rows::key(&a.id));
        // A repeatable step is applied as it is now only with this checksum.
        let after_checksum = after
            .filter(|a| matches!(a.id, StepId::Repeatable(_)))
            .map(|a| a.checksum.0.as_str());
        let prefix = format!(
            "{}SELECT {}({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
            if explicit { "BEGIN;" } else { "" },
            tables::step_fn(&self.schema),
            literal(set),
            token_i64(run.token),
            literal(&rows::key(&step.id)),
            literal(&step.checksum.0),
            matches!(step.id, StepId::Repeatable(_)),
            opt_literal(after_key.as_deref()),
            opt_literal(after_checksum),
            opt_literal(rows::version_text(&step.id)),
            literal(&step.description),
            literal(kind_text(step.kind)),
            literal(&step.file),
            literal(&run.holder),
        );
        let shift = prefix.chars().count();
        let message = prefix + &text;
        Box::pin(async move {
            let client = &self.conn.client;
            let ran = client.batch_execute(&message);
            let replies = match explicit {
                true => {
                    let (ran, committed) = in_order(ran, client.batch_execute("COMMIT")).await;
                    (ran, Some(committed))
                }
                false => (ran.await, None),
            };
            Answered {
                text,
                shift,
                replies,
            }
        })
    }

    /// Whether a step transaction committed, from its replies. An error in initguard's part of
    /// the message (by its position, or raised inside the step function) is the fence's refusal
    /// or initguard's own failure; any other is the step's, when its SQL ran or at COMMIT (a
    /// deferred constraint).
    fn judge(
        &self,
        set: &str,
        step: &Step,
        run: &RunInfo,
        answered: &Answered,
        started: Instant,
    ) -> Result<StepEvent, Unapplied> {
        let what = format!("applying step {}", step.id);
        let text = &answered.text;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let failed = |e: &tokio_postgres::Error| {
            let Some(db) = e.as_db_error().filter(|_| !is_connection_error(e)) else {
                return Err(Unapplied::Error(self.db_err(&what, e)));
            };
            if initguards(db, answered.shift) {
                return Err(Unapplied::Error(self.own_refusal(set, step, run, &what, e)));
            }
            let failure = failure_in_file(db, text, 0, text.chars().count(), answered.shift);
            Err(Unapplied::Failed(Box::new(failure), ms))
        };
        let (ran, committed) = &answered.replies;
        if let Err(e) = ran {
            // Only initguard's own statement says so: the step's SQL may raise any code.
            let ours = e
                .as_db_error()
                .is_some_and(|db| initguards(db, answered.shift));
            if ours
                && let Some(TargetError::AlreadyApplied { .. }) =
                    self.fence_refusal(set, run.token, Some(step), e)
            {
                return Ok(StepEvent::AlreadyApplied);
            }
            return failed(e);
        }
        if let Some(Err(e)) = committed {
            return failed(e);
        }
        self.durations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((rows::key(&step.id), ms));
        Ok(StepEvent::Applied)
    }

    /// An error of initguard's own statement in a step transaction: the fence's refusal; no
    /// steps tables (`begin` was never called); or a database error.
    fn own_refusal(
        &self,
        set: &str,
        step: &Step,
        run: &RunInfo,
        what: &str,
        e: &tokio_postgres::Error,
    ) -> TargetError {
        if let Some(refusal) = self.fence_refusal(set, run.token, Some(step), e) {
            return refusal;
        }
        if e.code() == Some(&SqlState::UNDEFINED_FUNCTION)
            || e.code() == Some(&SqlState::UNDEFINED_TABLE)
            || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME)
        {
            return TargetError::NotBegun {
                set: set.to_string(),
                token: run.token,
            };
        }
        self.db_err(what, e)
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
        self.end_former_builds(&name).await?;
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

impl Target {
    /// A former applier's session may still be building index `name`: the server goes on with
    /// a `CREATE INDEX CONCURRENTLY` whose client was killed until it next writes to the socket,
    /// and a paused applier's goes on too. `DROP INDEX CONCURRENTLY` of that INVALID index then
    /// deadlocks with the build (each waits for the other's transaction), and running the
    /// statement again would fail on the name. The lease is ours, so such a session is a former
    /// holder's, fenced already: end it (same role: `pg_terminate_backend` is allowed) and wait
    /// until it is gone; what it left is judged afterwards (valid: done; INVALID: dropped).
    async fn end_former_builds(&self, name: &str) -> Result<(), TargetError> {
        let what = format!("ending a former applier's build of index {name}");
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let rows = self
                .conn
                .client
                .query(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_progress_create_index
                     WHERE index_relid = to_regclass($1) AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(|e| self.db_err(&what, &e))?;
            if rows.is_empty() {
                return Ok(());
            }
            tracing::info!(
                index = name,
                "a former applier's session is still building index {name}: ending it before the step resumes"
            );
            if Instant::now() > deadline {
                return Err(TargetError::Db {
                    target: self.label().to_string(),
                    what,
                    reason: "its session was still there after 30s".into(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A step's file as text, without the byte order mark editors may start it with (the server
/// would read that as SQL; positions are then counted from after it, as editors show them).
async fn read_text(step: &Step) -> Result<String, TargetError> {
    let bytes = tokio::fs::read(&step.path)
        .await
        .map_err(|e| refused(step, format!("cannot read {}: {e}", step.path.display())))?;
    // The history row records discovery's checksum: what is sent must be what it was taken of
    // (a file edited, or DIR's path swapped for another directory, since the run began).
    if crate::steps::checksum::of_bytes(&bytes) != step.checksum {
        return Err(refused(
            step,
            format!(
                "{} changed since this run read it at its start; nothing of it was sent: run \
                 apply again to apply the file as it is now",
                step.path.display()
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| refused(step, "the file is not UTF-8 text".to_string()))?;
    if let Some((line, column)) = crate::store::sql::nul_line_col(&text) {
        return Err(refused(
            step,
            format!(
                "the file has a NUL byte (line {line}, column {column}), which PostgreSQL does not accept in SQL; remove it"
            ),
        ));
    }
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

fn refused(step: &Step, reason: String) -> TargetError {
    TargetError::Refused {
        step: step.id.to_string(),
        file: step.file.clone(),
        reason,
    }
}

/// Whether the server's error is in initguard's part of a step's message: positioned within
/// its first `shift` characters, raised inside the step function, or about it (a missing
/// privilege to call it, say).
fn initguards(db: &DbError, shift: usize) -> bool {
    let positioned = match db.position() {
        Some(ErrorPosition::Original(p)) => usize::try_from(*p).is_ok_and(|p| p <= shift),
        _ => false,
    };
    positioned || db.where_().is_some_and(tables::in_step_fn) || tables::in_step_fn(db.message())
}

/// The server's error, with its position moved from the text sent (the piece of the file that
/// starts at byte `offset` and is `len` characters long, after `shift` characters of
/// initguard's in the message) to the step's file, and located there by line and column.
fn failure_in_file(
    db: &DbError,
    file: &str,
    offset: usize,
    len: usize,
    shift: usize,
) -> SqlFailure {
    let position = match db.position() {
        Some(ErrorPosition::Original(p)) => u32::try_from(shift)
            .ok()
            .and_then(|shift| p.checked_sub(shift))
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

/// Await two futures, first polling each in the order given: tokio-postgres sends a request
/// when its future is first polled, and the server runs requests in the order they arrive, so
/// this pipelines them in that order (tokio's `join!` does not promise an order).
async fn in_order<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}
