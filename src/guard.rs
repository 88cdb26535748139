//! The run protocol of DESIGN.md, written once over the `Store` trait: skip, wait, detect an
//! interrupted predecessor, adopt, run with heartbeat, retry, record. Prints nothing to stdout
//! (stdout belongs to the wrapped command); decisions are logged with `tracing`.

use crate::acquire::{Acquired, acquire, patiently};
use crate::body::{Body, BodyCtx, BodyEnd, Stop};
use crate::clock::boot_now;
use crate::heartbeat::Heartbeat;
use crate::record::{ExitInfo, Record, State};
use crate::runner::{self, ChildOutcome, ChildSpec, Ended, Signals};
use crate::store::{
    AcquireOpts, Lease, SqlOutcome, SqlTask, SqlTaskError, Store, StoreError, TaskEvent,
};
use crate::task::{Holder, TaskId};
use chrono::Utc;
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Longest pause between in-process retries, whatever `--backoff` and the attempt number say.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Pause between tries of the final `succeeded` write while the store does not answer.
const FINAL_WRITE_RETRY: Duration = Duration::from_millis(500);
/// How long giving the lease up may take; it lapses on its own if the store does not answer.
const RELEASE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupted {
    Rerun,
    Fail,
}

/// Everything the protocol needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: TaskId,
    pub fingerprint: String,
    pub holder: Holder,
    pub acquire: AcquireOpts,
    pub retries: u32,
    pub backoff: Duration,
    /// 0: unlimited.
    pub max_attempts: u32,
    pub on_interrupted: OnInterrupted,
    pub done_if: Option<String>,
    pub child: ChildSpec,
    pub history: usize,
    /// An SQL task (`--sql`): run through the store, committed with its success record.
    pub sql: Option<SqlTask>,
}

/// How one SQL attempt ended, in the terms the attempt loop uses for children.
enum SqlAttempt {
    /// Committed, and its `succeeded` record with it: nothing left to write.
    Recorded,
    /// Did not commit; `why` is the server's account, when there is one.
    Ended {
        result: runner::ChildResult,
        why: Option<String>,
    },
}

/// How a run ended, when initguard itself did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already done for this fingerprint; `waited` when another holder finished while we waited.
    Skipped {
        waited: bool,
        by: Option<Holder>,
    },
    /// `--done-if` showed the work done: recorded as succeeded without running.
    Adopted,
    Succeeded {
        attempt: u32,
    },
    /// The command failed after its last in-process attempt; `gave_up` when that reached
    /// `--max-attempts`.
    Failed {
        outcome: ChildOutcome,
        gave_up: bool,
    },
    /// Stopped by a forwarded signal.
    Interrupted {
        outcome: ChildOutcome,
        signal: i32,
    },
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Skipped { .. } | Outcome::Adopted | Outcome::Succeeded { .. } => {
                crate::exit::OK
            }
            Outcome::Failed { outcome, .. } => outcome.exit_code(),
            Outcome::Interrupted { outcome, signal } => match outcome {
                ChildOutcome::Exited(c) if *c != 0 => outcome.exit_code(),
                _ => crate::exit::for_signal(*signal),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key} gave up after {attempts} failed attempts with this fingerprint ({reason}); fix the cause, then run `initguard reset {key}`"
    )]
    GaveUp {
        key: String,
        attempts: u32,
        reason: String,
    },
    #[error(
        "the previous run of {key} was interrupted and --on-interrupted is fail; check its effects, then run `initguard reset {key}`"
    )]
    InterruptedPredecessor { key: String },
    #[error(
        "{key}: cannot run {program:?}: {}; nothing was recorded",
        describe(outcome)
    )]
    Command {
        key: String,
        program: String,
        outcome: ChildOutcome,
    },
    #[error("stopped by signal {signal} while waiting for the lease on {key}; nothing was run")]
    SignalWhileWaiting { key: String, signal: i32 },
    #[error("stopped by signal {signal} while {doing} for {key}; the command was not started")]
    SignalBeforeStart {
        key: String,
        signal: i32,
        doing: &'static str,
    },
    #[error(
        "{key}: --done-if could not be checked ({}); nothing was run. A check that cannot start is not a \"no\": fix the image or the check",
        describe(outcome)
    )]
    DoneIfCannotStart { key: String, outcome: ChildOutcome },
    #[error(
        "{key}: the command succeeded, but its success could not be recorded ({cause}); the next run will find this run interrupted and {next}"
    )]
    SuccessNotRecorded {
        key: String,
        cause: Box<NotRecorded>,
        next: String,
    },
}

/// Why a success went unrecorded.
#[derive(Debug, thiserror::Error)]
pub enum NotRecorded {
    #[error(transparent)]
    Store(StoreError),
    #[error("stopped by signal {0} while recording it")]
    Signal(i32),
}

/// What a store that is no database does not support (`StoreError::Unsupported`).
pub const SQL_TASKS: &str = "SQL tasks (--sql, --sql-inline); use a postgres:// store";

pub struct Guard<'a> {
    store: &'a dyn Store,
    plan: &'a Plan,
    /// In-process work to run under the lease instead of `plan.child` (`initguard steps`).
    body: Option<&'a dyn Body>,
    /// A read of the record made before the run, taken as its first read (see `after_read`).
    early: std::sync::Mutex<Option<EarlyRead>>,
}

/// The record as read before the run began (`Guard::after_read`).
pub type EarlyRead = Result<Option<Record>, StoreError>;

impl<'a> Guard<'a> {
    pub fn new(store: &'a dyn Store, plan: &'a Plan) -> Guard<'a> {
        Guard {
            store,
            plan,
            body: None,
            early: std::sync::Mutex::new(None),
        }
    }

    /// A guard whose leased work is `body`, run in-process, rather than a command.
    pub fn with_body(store: &'a dyn Store, plan: &'a Plan, body: &'a dyn Body) -> Guard<'a> {
        Guard {
            store,
            plan,
            body: Some(body),
            early: std::sync::Mutex::new(None),
        }
    }

    /// Take `early`, a read of the record made before the run (as the store was opened, and for
    /// `steps apply` while the plan's fingerprint was still being computed, so that the read's
    /// round trip overlaps that work), as the run's first read: a record read a little earlier
    /// is as good a snapshot for deciding to skip. A store short of connections is read again
    /// patiently, as a first read is; any other error is the run's, not waited for twice.
    pub fn after_read(self, early: EarlyRead) -> Guard<'a> {
        Guard {
            early: std::sync::Mutex::new(Some(early)),
            ..self
        }
    }

    fn key(&self) -> String {
        self.plan.id.to_string()
    }

    pub async fn run(&self, signals: &mut Signals) -> Result<Outcome, GuardError> {
        let plan = self.plan;
        let fp = plan.fingerprint.as_str();
        let started = Instant::now();
        // A store short of connections at start (many replicas at once) is waited for, within
        // --wait-timeout, like a busy lease.
        let early = match self.early.lock() {
            Ok(mut e) => e.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let first_read = async {
            match early {
                Some(Err(StoreError::Overloaded { .. })) | None => {
                    patiently(started, plan.acquire.wait_timeout, || {
                        self.store.read(&plan.id)
                    })
                    .await
                }
                Some(read) => read,
            }
        };
        let first = tokio::select! {
            biased;
            signal = signals.recv() => {
                return Err(GuardError::SignalBeforeStart { key: self.key(), signal, doing: "reading the record" });
            }
            rec = first_read => rec?,
        };
        if let Some(rec) = first {
            if rec.is_done_for(fp) {
                info!(key = %plan.id, fingerprint = fp, "skipped: {} already succeeded with this fingerprint{}", self.key(), done_by(&rec));
                self.event(
                    TaskEvent::Skipped,
                    &format!("already succeeded with this fingerprint{}", done_by(&rec)),
                )
                .await;
                return Ok(Outcome::Skipped {
                    waited: false,
                    by: rec.holder,
                });
            }
            if rec.gave_up_for(fp) {
                return Err(self.gave_up(&rec));
            }
        }
        if plan.sql.is_some() && !self.store.supports_sql() {
            // Refused before anything is written, like a missing command.
            return Err(GuardError::Store(StoreError::Unsupported {
                store: self.store.describe(),
                what: SQL_TASKS.into(),
            }));
        }
        if plan.sql.is_none()
            && self.body.is_none()
            && let Err(outcome) = runner::preflight(&plan.child.argv)
        {
            return Err(GuardError::Command {
                key: self.key(),
                program: plan.child.argv.first().cloned().unwrap_or_default(),
                outcome,
            });
        }
        let started_wait = Instant::now();
        let asked = boot_now();
        let acquired = tokio::select! {
            a = acquire(self.store, &plan.id, &plan.holder, plan.acquire, Some(fp)) => a?,
            signal = signals.recv() => {
                return Err(GuardError::SignalWhileWaiting { key: self.key(), signal });
            }
        };
        let lease = match acquired {
            Acquired::Lease(lease) => lease,
            // Seen done while waiting: skipped without ever taking the lease.
            Acquired::DoneMeanwhile(rec) => return Ok(self.completed_meanwhile(&rec).await),
        };
        info!(key = %plan.id, token = lease.token, "lease on {} taken (token {}) after {}ms", self.key(), lease.token, started_wait.elapsed().as_millis());
        let heartbeat = Heartbeat::new(self.store, &lease, asked);
        let result = self.run_leased(&lease, signals, heartbeat).await;
        if let Err(
            GuardError::Store(StoreError::LeaseLost { .. }) | GuardError::SuccessNotRecorded { .. },
        ) = &result
        {
            // Known lost: giving it up would only wait on a store that already said no (or does
            // not answer), and the next holder has it anyway.
            return result;
        }
        let release = tokio::time::timeout(RELEASE_LIMIT, self.store.release(lease));
        tokio::select! {
            res = release => match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(key = %plan.id, "could not release the lease (it lapses on its own): {e}"),
                Err(_) => warn!(key = %plan.id, "could not release the lease in {}s (it lapses on its own)", RELEASE_LIMIT.as_secs()),
            },
            signal = signals.recv() => {
                warn!(key = %plan.id, "stopped by signal {signal} while releasing the lease (it lapses on its own)");
                if result.is_ok() {
                    return Ok(Outcome::Interrupted { outcome: ChildOutcome::Signaled(signal), signal });
                }
            }
        }
        result
    }

    fn supervision(&self, lease: &Lease, heartbeat: &Heartbeat) -> runner::Supervision {
        runner::Supervision {
            deadline: heartbeat.deadline(),
            hold: self.store.lease_fd(lease),
        }
    }

    /// A store call made while holding the lease, given up when a stop signal arrives: initguard
    /// must answer SIGTERM promptly even while the store does not answer.
    async fn call<T>(
        &self,
        signals: &mut Signals,
        doing: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, GuardError> {
        tokio::select! {
            res = fut => Ok(res?),
            signal = signals.recv() => Err(GuardError::SignalBeforeStart { key: self.key(), signal, doing }),
        }
    }

    /// Another holder completed the task while we waited for the lease.
    async fn completed_meanwhile(&self, rec: &Record) -> Outcome {
        info!(key = %self.plan.id, "skipped: {} was completed{} while we waited", self.key(), done_by(rec));
        self.event(
            TaskEvent::Skipped,
            &format!("completed{} while this Pod waited", done_by(rec)),
        )
        .await;
        Outcome::Skipped {
            waited: true,
            by: rec.holder.clone(),
        }
    }

    fn gave_up(&self, rec: &Record) -> GuardError {
        GuardError::GaveUp {
            key: self.key(),
            attempts: rec.failures,
            reason: rec
                .history
                .iter()
                .rev()
                .find(|h| h.state != State::GaveUp || h.exit.is_some())
                .and_then(|h| h.exit.as_ref().map(|e| e.to_string()))
                .or_else(|| rec.reason.clone())
                .unwrap_or_else(|| "no reason recorded".into()),
        }
    }

    async fn run_leased(
        &self,
        lease: &Lease,
        signals: &mut Signals,
        mut heartbeat: Heartbeat,
    ) -> Result<Outcome, GuardError> {
        let plan = self.plan;
        let fp = plan.fingerprint.as_str();
        let store = self.store;
        let existing = self
            .call(signals, "reading the record", store.read(&plan.id))
            .await?;
        if let Some(rec) = &existing {
            if rec.is_done_for(fp) {
                return Ok(self.completed_meanwhile(rec).await);
            }
            if rec.gave_up_for(fp) {
                return Err(self.gave_up(rec));
            }
        }
        let mut rec = existing.unwrap_or_else(|| Record::new(&plan.id, fp, Utc::now()));
        let mut previous = rec.previous();
        if matches!(rec.state, State::Running | State::Interrupted) {
            let who = rec
                .holder
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "an unknown holder".into());
            warn!(key = %plan.id, token = rec.token, "previous run of {} (attempt {}, token {}, by {who}) was interrupted", self.key(), rec.attempts, rec.token);
            self.event(
                TaskEvent::InterruptedPredecessor,
                &format!(
                    "previous run (attempt {}, token {}, by {who}) was interrupted",
                    rec.attempts, rec.token
                ),
            )
            .await;
            if rec.state == State::Running {
                // The history entry carries the token the interrupted run held, not ours.
                let theirs = rec.token;
                rec.mark_interrupted(theirs, "the holder's lease ended while it was running (process or node died, or it lost the store)", Utc::now(), plan.history);
                rec.token = lease.token;
                self.call(
                    signals,
                    "recording the interrupted run",
                    store.write(lease, &rec),
                )
                .await?;
            }
            if plan.on_interrupted == OnInterrupted::Fail {
                return Err(GuardError::InterruptedPredecessor { key: self.key() });
            }
        }
        if let Some(check) = &plan.done_if {
            let argv: Vec<String> = vec!["/bin/sh".into(), "-c".into(), check.clone()];
            // Fail closed: a check that cannot even start (no shell in a distroless image) says
            // nothing about the work, and running the command then could do it twice.
            if let Err(outcome) = runner::preflight(&argv) {
                return Err(GuardError::DoneIfCannotStart {
                    key: self.key(),
                    outcome,
                });
            }
            let spec = ChildSpec {
                argv,
                env: self.child_env(lease, rec.attempts, previous),
                capture: false,
                ..plan.child.clone()
            };
            if let Err(reason) = heartbeat.ensure_fresh(store, lease).await {
                return Err(self.lease_lost(lease, reason));
            }
            let watch = self.supervision(lease, &heartbeat);
            let res = runner::run(&spec, signals, heartbeat.lost(store, lease), watch).await;
            match res.ended {
                Ended::Stopped(reason) => return Err(self.lease_lost(lease, reason)),
                // Told to stop while checking: run nothing, record nothing.
                Ended::BySignal(signal) => {
                    return Ok(Outcome::Interrupted {
                        outcome: res.outcome,
                        signal,
                    });
                }
                Ended::Normally => {}
            }
            if matches!(
                res.outcome,
                ChildOutcome::NotFound | ChildOutcome::NotExecutable | ChildOutcome::SpawnFailed(_)
            ) {
                return Err(GuardError::DoneIfCannotStart {
                    key: self.key(),
                    outcome: res.outcome,
                });
            }
            if res.outcome.success() {
                info!(key = %plan.id, "adopted: --done-if reports {} already done; recorded as succeeded without running it", self.key());
                rec.adopt(lease.token, &plan.holder, fp, Utc::now(), plan.history);
                self.call(signals, "recording the adoption", store.write(lease, &rec))
                    .await?;
                self.event(
                    TaskEvent::Succeeded,
                    "adopted: --done-if reports the work already done; nothing was run",
                )
                .await;
                return Ok(Outcome::Adopted);
            }
            info!(key = %plan.id, "--done-if says not done ({}): running", describe(&res.outcome));
        }
        let mut retry = 0u32;
        loop {
            rec.start(lease.token, &plan.holder, fp, Utc::now());
            let attempt = rec.attempts;
            self.call(signals, "recording the start", store.write(lease, &rec))
                .await?;
            info!(key = %plan.id, token = lease.token, attempt, "running {} (attempt {attempt}{})", self.key(), if previous == "none" { String::new() } else { format!(", previous {previous}") });
            self.event(
                TaskEvent::Started,
                &format!(
                    "running attempt {attempt} under fencing token {}",
                    lease.token
                ),
            )
            .await;
            let spec = ChildSpec {
                env: self.child_env(lease, attempt, previous),
                ..plan.child.clone()
            };
            if let Err(reason) = heartbeat.ensure_fresh(store, lease).await {
                return Err(self.lease_lost(lease, reason));
            }
            let (res, why) = match (&plan.sql, self.body) {
                (None, Some(body)) => {
                    self.run_body(body, lease, &mut rec, signals, &mut heartbeat, previous)
                        .await?
                }
                (None, None) => {
                    let watch = self.supervision(lease, &heartbeat);
                    (
                        runner::run(&spec, signals, heartbeat.lost(store, lease), watch).await,
                        None,
                    )
                }
                (Some(sql), _) => match self
                    .run_sql(lease, sql, &rec, signals, &mut heartbeat)
                    .await?
                {
                    SqlAttempt::Recorded => {
                        info!(key = %plan.id, "succeeded: {} committed its SQL together with its success record (attempt {attempt})", self.key());
                        self.event(
                            TaskEvent::Succeeded,
                            &format!("SQL committed with its success record (attempt {attempt})"),
                        )
                        .await;
                        return Ok(Outcome::Succeeded { attempt });
                    }
                    SqlAttempt::Ended { result, why } => (result, why),
                },
            };
            if let Ended::Stopped(reason) = res.ended {
                return Err(self.lease_lost(lease, reason));
            }
            rec.set_tail(&res.tail, plan.child.tail_bytes);
            let exit = exit_info(&res.outcome);
            let now = Utc::now();
            // A forwarded SIGTERM/SIGINT means the run was cut short, whatever the command then
            // exits with: DESIGN.md records it as interrupted.
            if let Ended::BySignal(signal) = res.ended {
                let reason = format!("stopped by signal {signal} ({})", describe(&res.outcome));
                if !self
                    .end_attempt(lease, &mut rec, State::Interrupted, exit, &reason)
                    .await?
                {
                    return Ok(self.committed_meanwhile(attempt));
                }
                warn!(key = %plan.id, "interrupted: {} {reason}", self.key());
                return Ok(Outcome::Interrupted {
                    outcome: res.outcome,
                    signal,
                });
            }
            if res.outcome.success() {
                rec.finish(
                    State::Succeeded,
                    lease.token,
                    Some(exit),
                    None,
                    now,
                    plan.history,
                );
                self.record_success(lease, &rec, signals, &mut heartbeat)
                    .await?;
                info!(key = %plan.id, "succeeded: {} in {}ms (attempt {attempt})", self.key(), rec.duration_ms.unwrap_or(0));
                self.event(
                    TaskEvent::Succeeded,
                    &format!(
                        "succeeded in {}ms (attempt {attempt})",
                        rec.duration_ms.unwrap_or(0)
                    ),
                )
                .await;
                return Ok(Outcome::Succeeded { attempt });
            }
            let reason = why.unwrap_or_else(|| describe(&res.outcome));
            if plan.max_attempts > 0 && rec.failures + 1 >= plan.max_attempts {
                if !self
                    .end_attempt(lease, &mut rec, State::GaveUp, exit, &reason)
                    .await?
                {
                    return Ok(self.committed_meanwhile(attempt));
                }
                warn!(key = %plan.id, "gave up: {} failed ({reason}) on attempt {attempt} of --max-attempts {}; fix the cause, then run `initguard reset {}`", self.key(), plan.max_attempts, plan.id.key);
                self.event(TaskEvent::GaveUp, &format!("failed ({reason}) on attempt {attempt} of --max-attempts {}; fix the cause, then run `initguard reset {}`", plan.max_attempts, plan.id.key)).await;
                return Ok(Outcome::Failed {
                    outcome: res.outcome,
                    gave_up: true,
                });
            }
            if !self
                .end_attempt(lease, &mut rec, State::Failed, exit, &reason)
                .await?
            {
                return Ok(self.committed_meanwhile(attempt));
            }
            self.event(
                TaskEvent::Failed,
                &format!("attempt {attempt} failed: {reason}"),
            )
            .await;
            if retry >= plan.retries {
                warn!(key = %plan.id, "failed: {} {reason} (attempt {attempt})", self.key());
                return Ok(Outcome::Failed {
                    outcome: res.outcome,
                    gave_up: false,
                });
            }
            retry += 1;
            previous = "failed";
            let pause = backoff(plan.backoff, retry);
            warn!(key = %plan.id, "failed: {} {reason} (attempt {attempt}); retry {retry} of {} in {}ms", self.key(), plan.retries, pause.as_millis());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                reason = heartbeat.lost(store, lease) => return Err(self.lease_lost(lease, reason)),
                signal = signals.recv() => {
                    let reason = format!("stopped by signal {signal} while waiting to retry");
                    rec.finish(State::Interrupted, lease.token, None, Some(reason.clone()), Utc::now(), plan.history);
                    store.write(lease, &rec).await?;
                    warn!(key = %plan.id, "interrupted: {} {reason}", self.key());
                    return Ok(Outcome::Interrupted { outcome: ChildOutcome::Signaled(signal), signal });
                }
            }
        }
    }

    /// Write the `succeeded` record of a command that exited 0. The work is done: losing this
    /// write would make the next run do it again, so a store that does not answer is retried
    /// while the lease is still ours (renewing it meanwhile), and only a fenced-off write, a
    /// stop signal or the lease's end stops the retries, with a message that says what the next
    /// run will do.
    async fn record_success(
        &self,
        lease: &Lease,
        rec: &Record,
        signals: &mut Signals,
        heartbeat: &mut Heartbeat,
    ) -> Result<(), GuardError> {
        let plan = self.plan;
        let next = match (&plan.done_if, plan.on_interrupted) {
            _ if self.body.is_some() => "apply again (the steps already applied are in their \
                                         history and are not run again)"
                .to_string(),
            (Some(_), _) => "ask --done-if whether the work is done before running it".into(),
            (None, OnInterrupted::Rerun) => {
                "run the command again (--done-if can tell it the work is done)".into()
            }
            (None, OnInterrupted::Fail) => format!(
                "stop (--on-interrupted fail); check the work, then run `initguard reset {}`",
                plan.id.key
            ),
        };
        let not_recorded = |cause| GuardError::SuccessNotRecorded {
            key: self.key(),
            cause: Box::new(cause),
            next: next.clone(),
        };
        let mut tries = 0u32;
        loop {
            tries += 1;
            let res = tokio::select! {
                res = self.store.write(lease, rec) => res,
                signal = signals.recv() => return Err(not_recorded(NotRecorded::Signal(signal))),
            };
            let e = match res {
                Ok(()) => {
                    if tries > 1 {
                        info!(key = %plan.id, "recorded the success of {} after {tries} tries", self.key());
                    }
                    return Ok(());
                }
                Err(e @ StoreError::Unreachable { .. }) if !heartbeat.expired() => e,
                Err(e) => return Err(not_recorded(NotRecorded::Store(e))),
            };
            warn!(key = %plan.id, "the command succeeded; recording it failed ({e}), retrying while the lease is ours");
            tokio::select! {
                _ = tokio::time::sleep(FINAL_WRITE_RETRY) => {}
                signal = signals.recv() => return Err(not_recorded(NotRecorded::Signal(signal))),
            }
            let renewal = tokio::select! {
                r = heartbeat.ensure_fresh(self.store, lease) => r,
                signal = signals.recv() => return Err(not_recorded(NotRecorded::Signal(signal))),
            };
            if let Err(reason) = renewal
                && heartbeat.expired()
            {
                // The store's own error says why better than the renewal that could not reach it.
                warn!(key = %plan.id, "{reason}");
                return Err(not_recorded(NotRecorded::Store(e)));
            }
        }
    }

    /// One attempt of the in-process body, in the terms the attempt loop uses for children.
    async fn run_body(
        &self,
        body: &dyn Body,
        lease: &Lease,
        rec: &mut Record,
        signals: &mut Signals,
        heartbeat: &mut Heartbeat,
        previous: &'static str,
    ) -> Result<(runner::ChildResult, Option<String>), GuardError> {
        let mut ctx = BodyCtx {
            store: self.store,
            lease,
            heartbeat,
            signals,
            record: rec,
            previous,
            tail: Vec::new(),
            tail_bytes: self.plan.child.tail_bytes,
        };
        let end = body.run(&mut ctx).await;
        let tail = std::mem::take(&mut ctx.tail);
        let result = |outcome, ended| runner::ChildResult {
            outcome,
            ended,
            tail: tail.clone(),
        };
        Ok(match end {
            BodyEnd::Done => (result(ChildOutcome::Exited(0), Ended::Normally), None),
            BodyEnd::Failed { outcome, reason } => {
                (result(outcome.clone(), Ended::Normally), Some(reason))
            }
            BodyEnd::Stopped(Stop::Signal(signal)) => (
                result(ChildOutcome::Signaled(signal), Ended::BySignal(signal)),
                None,
            ),
            BodyEnd::Stopped(Stop::LeaseLost(reason)) => (
                result(ChildOutcome::Signaled(9), Ended::Stopped(reason)),
                None,
            ),
            BodyEnd::Stopped(Stop::Store(e)) => return Err(e.into()),
        })
    }

    /// One attempt of an SQL task: the store runs it in one transaction with the `succeeded`
    /// record. Losing the lease, a signal or `--timeout` drops the transaction (rolled back).
    async fn run_sql(
        &self,
        lease: &Lease,
        sql: &SqlTask,
        rec: &Record,
        signals: &mut Signals,
        heartbeat: &mut Heartbeat,
    ) -> Result<SqlAttempt, GuardError> {
        let plan = self.plan;
        let store = self.store;
        let mut done = rec.clone();
        done.finish(
            State::Succeeded,
            lease.token,
            Some(ExitInfo::Code(0)),
            None,
            Utc::now(),
            plan.history,
        );
        let committed = done.clone();
        let work = async {
            let run = store.run_sql_exactly_once(lease, sql, &committed);
            match plan.child.timeout {
                Some(limit) => tokio::time::timeout(limit, run).await.ok(),
                None => Some(run.await),
            }
        };
        let ended = |outcome, ended, why: &str| SqlAttempt::Ended {
            result: runner::ChildResult {
                outcome,
                ended,
                tail: why.as_bytes().to_vec(),
            },
            why: Some(why.to_string()),
        };
        tokio::select! {
            res = work => match res {
                None => Ok(ended(ChildOutcome::TimedOut, Ended::Normally, "exceeded --timeout; the SQL was cancelled and rolled back")),
                Some(Ok(SqlOutcome::Committed)) => Ok(SqlAttempt::Recorded),
                Some(Ok(SqlOutcome::AlreadyDone { token, target })) => {
                    done.sql_target = target;
                    done.reason = Some(format!("the target database already holds this fingerprint's completion (token {token}); not run again"));
                    store.write(lease, &done).await?;
                    Ok(SqlAttempt::Recorded)
                }
                Some(Err(SqlTaskError::Sql(failure))) => {
                    warn!(key = %plan.id, "SQL of {} failed and was rolled back: {failure}", self.key());
                    Ok(ended(ChildOutcome::Exited(1), Ended::Normally, &failure.to_string()))
                }
                Some(Err(SqlTaskError::Store(e))) => Err(e.into()),
            },
            reason = heartbeat.lost(store, lease) => Ok(SqlAttempt::Ended {
                result: runner::ChildResult { outcome: ChildOutcome::Signaled(9), ended: Ended::Stopped(reason), tail: Vec::new() },
                why: None,
            }),
            signal = signals.recv() => Ok(ended(
                ChildOutcome::Signaled(signal),
                Ended::BySignal(signal),
                &format!("stopped by signal {signal}; the SQL was cancelled and rolled back"),
            )),
        }
    }

    /// Write an attempt's end (failed, gave up, interrupted). For an SQL task cut short during its
    /// COMMIT, the store may already hold `succeeded` under this very token; the store refuses to
    /// overwrite that (see `Store::write`), and this returns `false` so that the caller reports the
    /// success instead of recording a failure that would make the SQL run twice.
    async fn write_unless_committed(
        &self,
        lease: &Lease,
        rec: &Record,
    ) -> Result<bool, GuardError> {
        match self.store.write(lease, rec).await {
            Ok(()) => Ok(true),
            Err(StoreError::LeaseLost { .. }) if self.plan.sql.is_some() => {
                match self.store.read(&self.plan.id).await? {
                    Some(now) if now.state == State::Succeeded && now.token == lease.token => {
                        Ok(false)
                    }
                    _ => Err(self.lease_lost(lease, "the record write was fenced off".into())),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// End the attempt in `state` (a failure or an interruption) and record it; `false` when the
    /// store holds this attempt's committed success instead (see `write_unless_committed`).
    async fn end_attempt(
        &self,
        lease: &Lease,
        rec: &mut Record,
        state: State,
        exit: ExitInfo,
        reason: &str,
    ) -> Result<bool, GuardError> {
        rec.finish(
            state,
            lease.token,
            Some(exit),
            Some(reason.to_string()),
            Utc::now(),
            self.plan.history,
        );
        self.write_unless_committed(lease, rec).await
    }

    fn committed_meanwhile(&self, attempt: u32) -> Outcome {
        info!(key = %self.plan.id, "succeeded: {}'s SQL committed with its success record before the cancellation reached it (attempt {attempt})", self.key());
        Outcome::Succeeded { attempt }
    }

    /// Best effort: a store that can (Kubernetes) tells operators outside the logs.
    async fn event(&self, kind: TaskEvent, message: &str) {
        self.store.event(&self.plan.id, kind, message).await;
    }

    fn lease_lost(&self, lease: &Lease, reason: String) -> GuardError {
        GuardError::Store(StoreError::LeaseLost {
            key: self.key(),
            token: lease.token,
            reason: format!("{reason}; the command was killed and nothing was recorded"),
        })
    }

    fn child_env(&self, lease: &Lease, attempt: u32, previous: &str) -> Vec<(String, String)> {
        vec![
            ("INITGUARD_KEY".into(), self.plan.id.key.to_string()),
            (
                "INITGUARD_FINGERPRINT".into(),
                self.plan.fingerprint.clone(),
            ),
            ("INITGUARD_FENCING_TOKEN".into(), lease.token.to_string()),
            ("INITGUARD_ATTEMPT".into(), attempt.max(1).to_string()),
            ("INITGUARD_PREVIOUS".into(), previous.to_string()),
        ]
    }
}

fn done_by(rec: &Record) -> String {
    match (&rec.holder, rec.finished_at) {
        (Some(h), Some(t)) => format!(" (by {h} at {})", t.format("%Y-%m-%dT%H:%M:%SZ")),
        (Some(h), None) => format!(" (by {h})"),
        _ => String::new(),
    }
}

fn exit_info(o: &ChildOutcome) -> ExitInfo {
    match o {
        ChildOutcome::Exited(c) => ExitInfo::Code(*c),
        ChildOutcome::Signaled(s) => ExitInfo::Signal(*s),
        ChildOutcome::TimedOut => ExitInfo::TimedOut,
        ChildOutcome::NotFound => ExitInfo::NotFound,
        ChildOutcome::NotExecutable => ExitInfo::NotExecutable,
        ChildOutcome::SpawnFailed(_) => ExitInfo::SpawnFailed,
    }
}

fn describe(o: &ChildOutcome) -> String {
    o.to_string()
}

/// Exponential backoff with full jitter: uniform in [base·2^(n-1) / 2, base·2^(n-1)], capped.
fn backoff(base: Duration, retry: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    exp.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Duration::from_secs(1);
        for _ in 0..20 {
            let first = backoff(b, 1);
            assert!(first >= Duration::from_millis(500) && first <= b);
            let third = backoff(b, 3);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            let late = backoff(b, 40);
            assert!(late >= MAX_BACKOFF / 2 && late <= MAX_BACKOFF, "{late:?}");
        }
        // README: "at most 5 min".
        assert_eq!(MAX_BACKOFF, Duration::from_secs(300));
    }

    #[test]
    fn interrupted_exit_code_prefers_the_signal() {
        let o = Outcome::Interrupted {
            outcome: ChildOutcome::Exited(0),
            signal: 15,
        };
        assert_eq!(o.exit_code(), 143);
        let o = Outcome::Interrupted {
            outcome: ChildOutcome::Exited(3),
            signal: 15,
        };
        assert_eq!(o.exit_code(), 3);
    }
}
