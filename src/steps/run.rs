//! The run of a step set (`initguard steps apply`): the set's fingerprint, the body the guard runs
//! under the set's one lease (history, validation, SQL steps through the target database, script
//! steps as commands), and the record-backed history used when there is no target database.
//! The protocol (skip, wait, running/succeeded/failed, signals, lost lease) is the guard's; this
//! module never writes the record except through `BodyCtx`, and prints nothing.

use super::repair::{self, Change};
use super::validate::{self, Validation};
use super::{Allow, Applied, AppliedState, Kind, Planned, Previous, Problem, StepSet};
use crate::body::{Body, BodyCtx, BodyEnd, Stop};
use crate::fingerprint::{self, Fingerprint, Sources};
use crate::guard::{EarlyRead, Guard, GuardError, OnInterrupted, Outcome, Plan};
use crate::record::Record;
use crate::runner::{ChildOutcome, ChildSpec, Ended, Signals};
use crate::store::{Store, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use std::sync::Mutex;
use tracing::{info, warn};

#[cfg(feature = "postgres")]
pub use super::target::Tool;
#[cfg(feature = "postgres")]
use super::target::{StepEvent, Target, TargetError};

/// Where a set's SQL steps run and its history lives, when it has a target database.
#[cfg(feature = "postgres")]
pub type TargetUrl = crate::store::postgres::PgUrl;
/// Without the postgres backend there is no target database.
#[cfg(not(feature = "postgres"))]
pub type TargetUrl = std::convert::Infallible;

/// The tool whose history `--adopt` takes over.
#[cfg(not(feature = "postgres"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {}

/// Label of the fingerprint component that covers the steps (part of the fingerprint encoding:
/// never change it).
const STEPS_COMPONENT: &str = "steps v1";
const TARGET_COMPONENT: &str = "steps target";

#[derive(Debug, thiserror::Error)]
pub enum StepsError {
    #[error(transparent)]
    Discover(#[from] super::discover::DiscoverError),
    #[error(
        "{key}: {} problem{} with the steps (listed above, each with its fix); nothing was applied",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )]
    Invalid { key: String, problems: Vec<Problem> },
    /// `steps validate` (and `--dry-run`) found problems; nothing was to be applied anyway.
    #[error(
        "{key}: {} problem{} with the steps (listed above, each with its fix)",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )]
    Problems { key: String, problems: Vec<Problem> },
    #[error(
        "{key}: the set has SQL steps ({first} …) and no target database: give --target URL \
         (or INITGUARD_STEPS_TARGET), or use a postgres:// store; nothing was done"
    )]
    NeedsTarget { key: String, first: String },
    #[error(
        "{key}: step {step} ({file}) failed: {}; the steps before it stay applied. Fix the step, \
         then apply again",
        describe(outcome)
    )]
    ScriptFailed {
        key: String,
        step: String,
        file: String,
        outcome: ChildOutcome,
    },
    #[error(
        "{key}: step {step} ({file}) was interrupted in an earlier run and --on-interrupted is \
         fail; check what it did, then run `initguard steps repair {dir}` or apply again with \
         --on-interrupted rerun"
    )]
    InterruptedStep {
        key: String,
        step: String,
        file: String,
        dir: String,
    },
    #[cfg(feature = "postgres")]
    #[error("{key}: {}", target_text(source))]
    Target { key: String, source: TargetError },
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The body failed without saying why (cannot happen; kept so that no path panics).
    #[error("{key}: the steps failed ({reason})")]
    Other { key: String, reason: String },
}

impl StepsError {
    /// What initguard exits with when the guard recorded this failure.
    fn outcome(&self) -> ChildOutcome {
        match self {
            StepsError::ScriptFailed { outcome, .. } => outcome.clone(),
            StepsError::InterruptedStep { .. } => {
                ChildOutcome::Exited(i32::from(crate::exit::TEMP_FAIL))
            }
            _ => ChildOutcome::Exited(1),
        }
    }
}

/// A target error as users read it: connecting is done by the store's connector, whose errors
/// say "store …"; here it is the target database.
#[cfg(feature = "postgres")]
fn target_text(e: &TargetError) -> String {
    let text = e.to_string();
    match (e, text.strip_prefix("store ")) {
        (TargetError::Connect(_), Some(rest)) => format!("target database {rest}"),
        _ => text,
    }
}

fn describe(o: &ChildOutcome) -> String {
    o.to_string()
}

/// The set's fingerprint: every step's identity, kind and checksum, in apply order, and the
/// target database's identity without its password. Reads nothing: the checksums are discovery's.
pub fn fingerprint(set: &StepSet, target: Option<&str>) -> Fingerprint {
    let mut steps = Vec::with_capacity(set.steps.len() * 128);
    for s in &set.steps {
        // Length-prefixed fields: no two different sets encode to the same bytes. The id is
        // written as `StepId` displays it, without a String for each field of each step.
        let (prefix, id) = s.id.parts();
        push_field(&mut steps, &[prefix, id]);
        push_field(&mut steps, &[s.kind.as_str()]);
        push_field(&mut steps, &[s.checksum.0.as_str()]);
        push_field(&mut steps, &[if s.no_transaction { "1" } else { "0" }]);
    }
    of_encoded_steps(steps, target)
}

/// One field, its pieces written one after the other behind their total length.
fn push_field(out: &mut Vec<u8>, pieces: &[&str]) {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&(len as u64).to_be_bytes());
    for p in pieces {
        out.extend_from_slice(p.as_bytes());
    }
}

/// The fingerprint of the encoded steps and the target's identity.
fn of_encoded_steps(steps: Vec<u8>, target: Option<&str>) -> Fingerprint {
    let mut extra = vec![(STEPS_COMPONENT.to_string(), steps)];
    if let Some(t) = target {
        extra.push((TARGET_COMPONENT.to_string(), t.as_bytes().to_vec()));
    }
    // Sources hold no paths here: computing cannot fail.
    fingerprint::compute(&Sources {
        extra,
        ..Sources::default()
    })
    .unwrap_or_else(|_| Fingerprint {
        value: String::new(),
        components: Vec::new(),
    })
}

/// What `steps apply` is told, besides the set and the guard's plan.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The set's name in the target database's history (the key).
    pub set_name: String,
    pub allow: Allow,
    pub on_interrupted: OnInterrupted,
    pub adopt: Option<Tool>,
    pub target: Option<TargetUrl>,
    /// The lease's duration: the target database ends a transaction left idle longer.
    pub lease_ttl: std::time::Duration,
    /// How script steps run: environment to remove, grace, capture, tail.
    pub script: ChildSpec,
    /// DIR as the user gave it, for messages.
    pub dir_label: String,
}

/// How an apply ended, when it did not fail.
#[derive(Debug)]
pub struct ApplyOutcome {
    pub outcome: Outcome,
    /// Steps applied by this run (0 when skipped).
    pub applied: usize,
}

/// Apply the set under the guard: skip when the record shows this fingerprint done, else take
/// the lease, validate against the history, run the plan, and record the outcome.
pub async fn apply(
    store: &dyn Store,
    plan: &Plan,
    set: StepSet,
    opts: ApplyOptions,
    early: Option<EarlyRead>,
    signals: &mut Signals,
) -> Result<ApplyOutcome, StepsError> {
    let body = StepsBody {
        set,
        opts,
        key: plan.id.to_string(),
        failure: Mutex::new(None),
        applied: Mutex::new(0),
    };
    let guard = Guard::with_body(store, plan, &body);
    let guard = match early {
        Some(read) => guard.after_read(read),
        None => guard,
    };
    let outcome = guard.run(signals).await?;
    if let Outcome::Failed { .. } = outcome {
        let failure = body.failure.lock().ok().and_then(|mut f| f.take());
        return Err(failure.unwrap_or_else(|| StepsError::Other {
            key: body.key.clone(),
            reason: "no reason recorded".into(),
        }));
    }
    let applied = body.applied.lock().map(|n| *n).unwrap_or(0);
    Ok(ApplyOutcome { outcome, applied })
}

struct StepsBody {
    set: StepSet,
    opts: ApplyOptions,
    key: String,
    failure: Mutex<Option<StepsError>>,
    applied: Mutex<usize>,
}

/// Why the body stopped early.
enum Halt {
    Stop(Stop),
    Fail(StepsError),
    /// The step turned out applied already (a stale plan): skip it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    AlreadyApplied,
}

impl From<Stop> for Halt {
    fn from(s: Stop) -> Halt {
        Halt::Stop(s)
    }
}

#[async_trait]
impl Body for StepsBody {
    async fn run(&self, ctx: &mut BodyCtx<'_>) -> BodyEnd {
        match self.apply(ctx).await {
            Ok(n) => {
                if let Ok(mut a) = self.applied.lock() {
                    *a = n;
                }
                BodyEnd::Done
            }
            Err(Halt::Stop(stop)) => BodyEnd::Stopped(stop),
            // Only `script` returns it, and `apply` handles it there.
            Err(Halt::AlreadyApplied) => BodyEnd::Done,
            Err(Halt::Fail(e)) => {
                let outcome = e.outcome();
                // The guard's log line names the key already.
                let text = e.to_string();
                let prefix = format!("{}: ", self.key);
                let reason = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(e);
                }
                BodyEnd::Failed { outcome, reason }
            }
        }
    }
}

impl StepsBody {
    async fn apply(&self, ctx: &mut BodyCtx<'_>) -> Result<usize, Halt> {
        #[cfg(feature = "postgres")]
        let target = self.open_target(ctx).await?;
        #[cfg(not(feature = "postgres"))]
        let target: Option<NoTarget> = None;
        let history = match &target {
            #[cfg(feature = "postgres")]
            Some(t) => merged(self.target_history(ctx, t).await?, &ctx.record().steps),
            #[cfg(not(feature = "postgres"))]
            Some(_) => Vec::new(),
            None => ctx.record().steps.clone(),
        };
        let Validation {
            errors,
            warnings,
            plan,
        } = validate::check(&self.set, &history, self.opts.allow);
        if !errors.is_empty() {
            return Err(Halt::Fail(StepsError::Invalid {
                key: self.key.clone(),
                problems: errors,
            }));
        }
        // An interrupted step is said once, where it is run again (`script`, `sql`).
        for w in warnings
            .iter()
            .filter(|w| w.kind != super::ProblemKind::Interrupted)
        {
            warn!(key = %self.key, "{}", problem_line(w));
        }
        if plan.is_empty() {
            info!(key = %self.key, "nothing to apply: every step of {} is applied", self.key);
        }
        let mut applied = 0;
        let mut rest = &plan[..];
        while let Some(p) = rest.first() {
            if p.step.kind == Kind::Script {
                match self.script(ctx, &target, p).await {
                    Err(Halt::AlreadyApplied) => {}
                    other => {
                        other?;
                        applied += 1;
                    }
                }
                rest = &rest[1..];
                continue;
            }
            #[cfg(not(feature = "postgres"))]
            return Err(Halt::Fail(StepsError::NeedsTarget {
                key: self.key.clone(),
                first: p.step.file.clone(),
            }));
            #[cfg(feature = "postgres")]
            {
                // The SQL steps up to the next script step go to the target database together.
                let n = rest
                    .iter()
                    .position(|q| q.step.kind != Kind::Sql)
                    .unwrap_or(rest.len());
                applied += self.sql(ctx, &target, &rest[..n]).await?;
                rest = &rest[n..];
            }
        }
        #[cfg(feature = "postgres")]
        if let Some(t) = &target {
            // One synchronous commit: every step committed before it is durable once it returns.
            let done = ctx
                .guarded(t.finish(&self.opts.set_name, ctx.token()))
                .await?;
            done.map_err(|e| self.target_err(e))?;
        }
        Ok(applied)
    }

    async fn script(
        &self,
        ctx: &mut BodyCtx<'_>,
        target: &Option<ActiveTarget>,
        p: &Planned,
    ) -> Result<(), Halt> {
        let step = &p.step;
        if p.previous == Previous::Interrupted && self.opts.on_interrupted == OnInterrupted::Fail {
            return Err(Halt::Fail(StepsError::InterruptedStep {
                key: self.key.clone(),
                step: step.id.to_string(),
                file: step.file.clone(),
                dir: self.opts.dir_label.clone(),
            }));
        }
        let previous = match p.previous {
            Previous::Interrupted => "interrupted",
            Previous::Failed => "failed",
            Previous::None | Previous::Changed => "none",
        };
        if p.previous == Previous::Interrupted {
            warn!(key = %self.key, "step {} ({}) was interrupted in an earlier run: running it again with INITGUARD_PREVIOUS=interrupted", step.id, step.file);
        }
        let started = Utc::now();
        let entry = Applied {
            id: step.id.clone(),
            description: step.description.clone(),
            kind: Kind::Script,
            checksum: Some(step.checksum.clone()),
            state: AppliedState::Running,
            started_at: Some(started),
            finished_at: None,
            duration_ms: None,
            holder: ctx.holder().identity(),
            token: ctx.token(),
            statements_done: 0,
            error: None,
            adopted_from: None,
        };
        self.record_script(ctx, target, p, entry.clone(), None)
            .await?;
        ctx.fresh().await?;
        info!(key = %self.key, token = ctx.token(), "running step {} ({})", step.id, step.file);
        let version = match &step.id {
            super::StepId::Versioned(v) => v.text.clone(),
            super::StepId::Repeatable(_) => String::new(),
        };
        let spec = ChildSpec {
            argv: vec![step.path.to_string_lossy().into_owned()],
            env: vec![
                // With INITGUARD_FENCING_TOKEN: a nested `initguard run` of this key is refused.
                ("INITGUARD_KEY".into(), self.key.clone()),
                ("INITGUARD_STEP_VERSION".into(), version),
                (
                    "INITGUARD_STEP_DESCRIPTION".into(),
                    step.description.clone(),
                ),
                ("INITGUARD_FENCING_TOKEN".into(), ctx.token().to_string()),
                ("INITGUARD_PREVIOUS".into(), previous.into()),
            ],
            ..self.opts.script.clone()
        };
        let res = ctx.run_child(&spec).await;
        match res.ended {
            Ended::Stopped(reason) => return Err(Halt::Stop(Stop::LeaseLost(reason))),
            // Left `running`: the next apply finds it interrupted and `--on-interrupted` decides.
            Ended::BySignal(signal) => return Err(Halt::Stop(Stop::Signal(signal))),
            Ended::Normally => {}
        }
        let now = Utc::now();
        let mut end = entry;
        end.finished_at = Some(now);
        end.duration_ms = (now - started)
            .to_std()
            .ok()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        if res.outcome.success() {
            end.state = AppliedState::Applied;
            self.record_script(ctx, target, p, end, Some(Ok(())))
                .await?;
            info!(key = %self.key, "applied step {} ({}) in {}ms", step.id, step.file, (now - started).num_milliseconds());
            return Ok(());
        }
        end.state = AppliedState::Failed;
        end.error = Some(res.outcome.to_string());
        self.record_script(ctx, target, p, end, Some(Err(res.outcome.to_string())))
            .await?;
        Err(Halt::Fail(StepsError::ScriptFailed {
            key: self.key.clone(),
            step: step.id.to_string(),
            file: step.file.clone(),
            outcome: res.outcome,
        }))
    }

    /// Record a script step's start (`ended: None`) or end, fenced: in the target database's
    /// history when there is one, else in the set's record.
    async fn record_script(
        &self,
        ctx: &mut BodyCtx<'_>,
        target: &Option<ActiveTarget>,
        p: &Planned,
        entry: Applied,
        ended: Option<Result<(), String>>,
    ) -> Result<(), Halt> {
        match target {
            #[cfg(feature = "postgres")]
            Some(t) => {
                let run = self.run_info(ctx);
                let set = &self.opts.set_name;
                let res = match ended {
                    None => match ctx.guarded(t.script_started(set, &p.step, &run)).await? {
                        Err(TargetError::AlreadyApplied { step }) => {
                            info!(key = %self.key, "step {step} is already applied in the target database; not run again");
                            return Err(Halt::AlreadyApplied);
                        }
                        other => other,
                    },
                    // Not given up on a signal: it records an effect that already happened.
                    Some(result) => t.script_finished(set, &p.step, &run, result).await,
                };
                // The target builds its row from the step and the run; `entry` is the record's.
                drop(entry);
                res.map_err(|e| self.target_err(e))
            }
            #[cfg(not(feature = "postgres"))]
            Some(_) => {
                let _ = (p, ended);
                Ok(())
            }
            None => {
                let _ = (p, ended);
                ctx.write_record(|r| upsert(&mut r.steps, entry))
                    .await
                    .map_err(Halt::Stop)
            }
        }
    }

    /// Connect to the target database and register this run's token there (the fence every
    /// step's transaction checks).
    #[cfg(feature = "postgres")]
    async fn open_target(&self, ctx: &mut BodyCtx<'_>) -> Result<Option<Target>, Halt> {
        let Some(url) = &self.opts.target else {
            return Ok(None);
        };
        let opts = super::target::TargetOptions {
            lease_ttl: Some(self.opts.lease_ttl),
        };
        let target = ctx
            .guarded(Target::connect(url, &opts))
            .await?
            .map_err(|e| self.target_err(e))?;
        let (token, holder) = (ctx.token(), ctx.holder().identity());
        ctx.guarded(target.begin(&self.opts.set_name, token, &holder))
            .await?
            .map_err(|e| self.target_err(e))?;
        Ok(Some(target))
    }

    /// The target database's history, adopted from another tool's on first use when asked, and
    /// its INVALID indexes reported.
    #[cfg(feature = "postgres")]
    async fn target_history(
        &self,
        ctx: &mut BodyCtx<'_>,
        target: &Target,
    ) -> Result<Vec<Applied>, Halt> {
        let set = &self.opts.set_name;
        // Both asked at once, one round trip: adoption below changes no index.
        let (mut history, invalid) = ctx
            .guarded(target.history_and_invalid_indexes(set))
            .await?
            .map_err(|e| self.target_err(e))?;
        if history.is_empty()
            && let Some(tool) = self.opts.adopt
        {
            let run = self.run_info(ctx);
            let adopted = ctx
                .guarded(target.adopt(set, tool, &self.set, &run))
                .await?
                .map_err(|e| self.target_err(e))?;
            if adopted.is_empty() {
                info!(key = %self.key, "--adopt {tool}: no {tool} history in the target database; nothing adopted");
            } else {
                info!(key = %self.key, "adopted {} step{} from {tool}'s history: not applied again", adopted.len(), if adopted.len() == 1 { "" } else { "s" });
            }
            history = ctx
                .guarded(target.history(set))
                .await?
                .map_err(|e| self.target_err(e))?;
        }
        for p in &invalid {
            warn!(key = %self.key, "{}", problem_line(p));
        }
        Ok(history)
    }

    /// SQL steps, in order, in the target database, each with its history row (fenced); how
    /// many were applied.
    #[cfg(feature = "postgres")]
    async fn sql(
        &self,
        ctx: &mut BodyCtx<'_>,
        target: &Option<Target>,
        steps: &[Planned],
    ) -> Result<usize, Halt> {
        let Some(target) = target else {
            return Err(Halt::Fail(StepsError::NeedsTarget {
                key: self.key.clone(),
                first: steps
                    .first()
                    .map(|p| p.step.file.clone())
                    .unwrap_or_default(),
            }));
        };
        let run = self.run_info(ctx);
        let mut applied = 0;
        let mut last = std::time::Instant::now();
        let key = &self.key;
        let mut each = |p: &Planned, event: StepEvent| match event {
            // Said as it is sent, not for steps the run never reaches.
            StepEvent::Sent => match (p.previous, p.resume_at) {
                (Previous::Interrupted, 0) => {
                    warn!(key = %key, "step {} ({}) was interrupted in an earlier run: running it again", p.step.id, p.step.file)
                }
                (_, 0) => {}
                (_, at) => {
                    warn!(key = %key, "step {} ({}) was interrupted in an earlier run: resuming at statement {}", p.step.id, p.step.file, at + 1)
                }
            },
            StepEvent::Applied | StepEvent::AlreadyApplied => {
                if event == StepEvent::Applied {
                    tracing::debug!(key = %key, "applied step {} ({}) in {}ms", p.step.id, p.step.file, last.elapsed().as_millis());
                } else {
                    // Applied meanwhile (a plan older than the history): done, not done twice.
                    info!(key = %key, "step {} is already applied in the target database; not run again", p.step.id);
                }
                applied += 1;
                last = std::time::Instant::now();
            }
        };
        ctx.guarded(target.apply_steps(&self.opts.set_name, steps, &run, &mut each))
            .await?
            .map_err(|e| self.target_err(e))?;
        Ok(applied)
    }

    #[cfg(feature = "postgres")]
    fn run_info(&self, ctx: &BodyCtx<'_>) -> super::RunInfo {
        super::RunInfo {
            token: ctx.token(),
            holder: ctx.holder().identity(),
        }
    }

    #[cfg(feature = "postgres")]
    fn target_err(&self, e: TargetError) -> Halt {
        match e {
            TargetError::Fenced { .. } => Halt::Stop(Stop::LeaseLost(e.to_string())),
            e => Halt::Fail(StepsError::Target {
                key: self.key.clone(),
                source: e,
            }),
        }
    }
}

#[cfg(not(feature = "postgres"))]
type ActiveTarget = NoTarget;
#[cfg(not(feature = "postgres"))]
enum NoTarget {}
#[cfg(feature = "postgres")]
type ActiveTarget = Target;

/// The target database's history, with the steps the set's record holds that the target does
/// not: script steps applied while the set had no target database stay applied when it gets one.
pub fn merged(target: Vec<Applied>, record: &[Applied]) -> Vec<Applied> {
    let mut out = target;
    for a in record {
        if !out.iter().any(|t| t.id == a.id) {
            out.push(a.clone());
        }
    }
    out
}

/// Put `entry` in place of the history entry of the same step, or add it.
pub fn upsert(history: &mut Vec<Applied>, entry: Applied) {
    match history.iter_mut().find(|a| a.id == entry.id) {
        Some(slot) => *slot = entry,
        None => history.push(entry),
    }
}

/// One line for a problem in a log: kind, step, detail, fix.
pub fn problem_line(p: &Problem) -> String {
    let step = p
        .step
        .as_deref()
        .or(p.file.as_deref())
        .map(|s| format!("{s}: "))
        .unwrap_or_default();
    format!("{step}{} ({})", p.detail, p.fix)
}

/// `steps repair` without a target database: accept the files as they are now in the record's
/// history (checksums realigned, missing steps forgotten, failed and interrupted ones cleared so
/// that they run again). Returns what changed, one line each.
pub fn repair_record(set: &StepSet, rec: &mut Record) -> Vec<String> {
    let history = std::mem::take(&mut rec.steps);
    let planned = repair::plan(&history, set);
    let mut changes = Vec::new();
    let mut kept = Vec::new();
    for a in &history {
        let Some((_, step, change)) = planned.iter().find(|(p, _, _)| p.id == a.id) else {
            kept.push(a.clone());
            continue;
        };
        let file = step
            .as_ref()
            .map_or(a.description.as_str(), |s| s.file.as_str());
        match change {
            Change::RemoveMissing => changes.push(format!(
                "removed {} ({}): its file is gone",
                a.id, a.description
            )),
            Change::ClearFailed | Change::ClearInterrupted => changes.push(format!(
                "cleared {} ({file}): it was {}; it runs again on the next apply",
                a.id,
                if a.state == AppliedState::Failed {
                    "failed"
                } else {
                    "interrupted"
                }
            )),
            Change::Realign { .. } => {
                changes.push(format!(
                    "realigned the checksum of {} ({file}) to the file as it is now",
                    a.id
                ));
                let mut a = a.clone();
                a.checksum = step.as_ref().map(|s| s.checksum.clone());
                kept.push(a);
            }
            // Only SQL steps resume; the record holds script steps alone.
            Change::KeepPartial { .. } | Change::KeepRunning => kept.push(a.clone()),
        }
    }
    rec.steps = kept;
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{Checksum, Step, StepId, Version};
    use crate::task::{Key, TaskId};
    use std::path::PathBuf;

    fn step(v: u64, sum: &str) -> Step {
        Step {
            id: StepId::Versioned(Version {
                parts: vec![v],
                text: v.to_string(),
            }),
            description: format!("s{v}"),
            kind: Kind::Script,
            file: format!("V{v}__s{v}.sh"),
            path: PathBuf::from(format!("V{v}__s{v}.sh")),
            checksum: Checksum(sum.into()),
            no_transaction: false,
        }
    }

    fn applied(s: &Step, state: AppliedState, sum: &str) -> Applied {
        Applied {
            id: s.id.clone(),
            description: s.description.clone(),
            kind: s.kind,
            checksum: Some(Checksum(sum.into())),
            state,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            holder: "h".into(),
            token: 1,
            statements_done: 0,
            error: None,
            adopted_from: None,
        }
    }

    fn set(steps: Vec<Step>) -> StepSet {
        StepSet {
            dir: PathBuf::from("m"),
            steps,
            problems: Vec::new(),
        }
    }

    /// The set's fingerprint is part of every record of every fleet: a change re-runs (and
    /// re-validates) every set once. Never paste a new value in without meaning to.
    #[test]
    fn fingerprint_is_pinned() {
        let s = set(vec![step(1, "sha256:a"), step(2, "sha256:b")]);
        assert_eq!(
            fingerprint(&s, None).value,
            "sha256:f6d13be193cf61685102e900abd84375044dacd1e0eba9dec587a16920337af6"
        );
    }

    /// `fingerprint` as it was first written (a String for every field), for sets with every
    /// kind of id and flag: the encoding that writes the fields in place must give the same bytes.
    #[test]
    fn fingerprint_encodes_every_kind_of_step_as_first_written() {
        fn as_first_written(set: &StepSet, target: Option<&str>) -> String {
            let mut steps = Vec::new();
            for s in &set.steps {
                for field in [
                    s.id.to_string(),
                    s.kind.to_string(),
                    s.checksum.0.clone(),
                    u8::from(s.no_transaction).to_string(),
                ] {
                    steps.extend_from_slice(&(field.len() as u64).to_be_bytes());
                    steps.extend_from_slice(field.as_bytes());
                }
            }
            of_encoded_steps(steps, target).value
        }
        let mut sql = step(3, "sha256:c");
        sql.kind = Kind::Sql;
        sql.no_transaction = true;
        let mut repeatable = step(4, "sha256:d");
        repeatable.id = StepId::Repeatable("views".into());
        let s = set(vec![step(1, "sha256:a"), sql, repeatable]);
        for target in [None, Some("postgres://app@db/app")] {
            assert_eq!(fingerprint(&s, target).value, as_first_written(&s, target));
        }
        assert_eq!(
            fingerprint(&s, None).value,
            "sha256:365dece189f562cca8ed03ac75b2e378f3eadf8bd01b38a418944272de6e51b5"
        );
    }

    #[test]
    fn fingerprint_covers_checksums_kinds_and_the_target() {
        let base = set(vec![step(1, "sha256:a")]);
        let fp = fingerprint(&base, None).value;
        let mut changed = base.clone();
        changed.steps[0].checksum = Checksum("sha256:b".into());
        assert_ne!(fingerprint(&changed, None).value, fp);
        let mut kind = base.clone();
        kind.steps[0].kind = Kind::Sql;
        assert_ne!(fingerprint(&kind, None).value, fp);
        assert_ne!(fingerprint(&base, Some("postgres://app@db/app")).value, fp);
        assert_eq!(fingerprint(&base, None).value, fp);
    }

    #[test]
    fn upsert_replaces_the_entry_of_the_same_step() {
        let s = step(1, "sha256:a");
        let mut h = vec![applied(&s, AppliedState::Running, "sha256:a")];
        upsert(&mut h, applied(&s, AppliedState::Applied, "sha256:a"));
        upsert(&mut h, applied(&step(2, "x"), AppliedState::Applied, "x"));
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].state, AppliedState::Applied);
    }

    #[test]
    fn repair_of_the_record_realigns_forgets_and_clears() {
        let (one, two, three) = (step(1, "sha256:new"), step(2, "sha256:b"), step(3, "c"));
        let gone = step(4, "d");
        let mut rec = Record::new(
            &TaskId::global(Key::parse("steps-m").unwrap()),
            "sha256:x",
            Utc::now(),
        );
        rec.steps = vec![
            applied(&one, AppliedState::Applied, "sha256:old"),
            applied(&two, AppliedState::Failed, "sha256:b"),
            applied(&three, AppliedState::Running, "c"),
            applied(&gone, AppliedState::Applied, "d"),
        ];
        let changes = repair_record(&set(vec![one, two, three]), &mut rec);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert_eq!(rec.steps.len(), 1);
        assert_eq!(rec.steps[0].checksum, Some(Checksum("sha256:new".into())));
        assert!(repair_record(&set(vec![step(1, "sha256:new")]), &mut rec).is_empty());
    }
}
