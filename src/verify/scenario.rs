//! verify's scenarios: one clean run, then a rerun, concurrent copies, and runs cut short by
//! SIGKILL or SIGTERM and re-run, each compared with the clean run's state. The command runs as
//! under `run` (same `INITGUARD_*` environment, under the supervisor that kills its whole tree)
//! but with no store and no lock: verify must never touch a store.

use super::probe::{Probe, ProbeError};
use super::report::{Clean, Name, Report, Run, Scenario, Trial};
use crate::runner::{self, ChildOutcome, ChildResult, ChildSpec, Ended, Extra, Signals};
use nix::sys::signal::Signal;
use std::cell::Cell;
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;
use tracing::info;

/// Output kept of each run of the command, for a clean run that fails.
const TAIL_BYTES: usize = 4096;

/// What to test and how, validated by the CLI.
#[derive(Debug, Clone)]
pub struct Plan {
    pub argv: Vec<String>,
    /// `INITGUARD_KEY` and `INITGUARD_FINGERPRINT`, as `run` would set them.
    pub key: String,
    pub fingerprint: String,
    pub probe: Probe,
    pub reset: Option<String>,
    /// Copies started at once in the concurrent scenario (at least 2).
    pub copies: usize,
    /// Points at which the interrupted and sigterm scenarios cut a run short (0: neither runs).
    pub kill_points: usize,
    /// Between the forwarded SIGTERM and the kill, as `run --grace`.
    pub grace: Duration,
    /// Kill any one run after this long, as `run --timeout`.
    pub timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(
        "the probe failed on the state the clean run left ({why}); fix --probe so that it \
         describes the state, then verify again"
    )]
    CleanProbe { why: String },
    #[error("--reset {command:?} cannot start: {source}")]
    ResetSpawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "--reset {command:?} {how} before {during}; the scenarios need it to bring \
         the state back to the start"
    )]
    Reset {
        command: String,
        how: String,
        during: &'static str,
    },
    #[error(
        "stopped by signal {signal} during {during}; the state is whatever that \
         run left"
    )]
    Signalled { signal: i32, during: &'static str },
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
}

/// How a trial cuts its first run short.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The supervisor kills the whole tree at once (the runner's `stop`): a SIGKILL.
    Kill(Duration),
    /// SIGTERM forwarded to the command's group, then `--grace`, then the kill.
    Term(Duration),
}

impl Cut {
    fn label(self) -> &'static str {
        match self {
            Cut::Kill(_) => "sigkill",
            Cut::Term(_) => "sigterm",
        }
    }
}

/// Runs the command, handing out fencing tokens that strictly increase in start order, as the
/// store's would across acquisitions.
struct Driver<'a> {
    plan: &'a Plan,
    signals: Signals,
    token: u64,
}

/// One run's result with the environment it ran under.
struct Ran {
    run: Run,
    /// The cut met a running command (it did not finish on its own first).
    cut_landed: bool,
}

impl<'a> Driver<'a> {
    fn spec(&mut self, attempt: u32, previous: &'static str) -> (ChildSpec, u64) {
        self.token += 1;
        let env = vec![
            ("INITGUARD_KEY".to_string(), self.plan.key.clone()),
            (
                "INITGUARD_FINGERPRINT".to_string(),
                self.plan.fingerprint.clone(),
            ),
            (
                "INITGUARD_FENCING_TOKEN".to_string(),
                self.token.to_string(),
            ),
            ("INITGUARD_ATTEMPT".to_string(), attempt.to_string()),
            ("INITGUARD_PREVIOUS".to_string(), previous.to_string()),
        ];
        let spec = ChildSpec {
            argv: self.plan.argv.clone(),
            env,
            // verify uses no store: there are no store credentials of initguard's to keep from
            // the command.
            env_remove: Vec::new(),
            timeout: self.plan.timeout,
            grace: self.plan.grace,
            capture: true,
            tail_bytes: TAIL_BYTES,
        };
        (spec, self.token)
    }

    /// One run to its end, or cut short by `cut`. The command's output goes to stderr: stdout
    /// carries the report.
    async fn once(
        &mut self,
        during: &'static str,
        attempt: u32,
        previous: &'static str,
        cut: Option<Cut>,
    ) -> Result<(Ran, ChildResult, Duration), VerifyError> {
        let (spec, token) = self.spec(attempt, previous);
        let fired = Cell::new(false);
        let start = Instant::now();
        let kill_at = match cut {
            Some(Cut::Kill(at)) => Some(start + at),
            _ => None,
        };
        let term_at = match cut {
            Some(Cut::Term(at)) => Some(start + at),
            _ => None,
        };
        let stop = async {
            match kill_at {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    "verify's kill point".to_string()
                }
                None => std::future::pending().await,
            }
        };
        let forward = async {
            match term_at {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    fired.set(true);
                    Signal::SIGTERM as i32
                }
                None => std::future::pending().await,
            }
        };
        let res = runner::run_with(
            &spec,
            &mut self.signals,
            stop,
            runner::Supervision::none(),
            Extra {
                forward,
                output: runner::Output::ToStderr,
            },
        )
        .await;
        let took = start.elapsed();
        let cut_landed = match &res.ended {
            Ended::Normally => false,
            Ended::Stopped(_) => true,
            Ended::BySignal(_) if fired.get() => true,
            // Not ours: someone wants verify itself to stop.
            Ended::BySignal(signal) => {
                return Err(VerifyError::Signalled {
                    signal: *signal,
                    during,
                });
            }
        };
        let ran = Ran {
            run: Run::new(
                token,
                attempt,
                previous,
                &res.outcome,
                cut.filter(|_| cut_landed).map(Cut::label),
            ),
            cut_landed,
        };
        Ok((ran, res, took))
    }

    async fn reset(&self, during: &'static str) -> Result<(), VerifyError> {
        let Some(command) = &self.plan.reset else {
            return Ok(());
        };
        info!("verify: resetting the state before {during}");
        // The reset's stdout goes to stderr too: stdout carries the report.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or(Stdio::null(), Stdio::from);
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", command])
            .stdin(Stdio::null())
            .stdout(stdout)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|source| VerifyError::ResetSpawn {
                command: command.clone(),
                source,
            })?;
        if status.success() {
            return Ok(());
        }
        Err(VerifyError::Reset {
            command: command.clone(),
            how: match status.code() {
                Some(c) => format!("exited {c}"),
                None => "was killed by a signal".to_string(),
            },
            during,
        })
    }
}

/// What `INITGUARD_PREVIOUS` and `INITGUARD_ATTEMPT` the next run gets after `ran`, as the run
/// protocol would set them from the record `ran` left.
fn after(ran: &Ran) -> (u32, &'static str) {
    if ran.cut_landed {
        (ran.run.attempt + 1, "interrupted")
    } else if ran.run.succeeded {
        (1, "none")
    } else {
        (ran.run.attempt + 1, "failed")
    }
}

/// The points at which to cut: `k` instants spread evenly inside the clean run's duration,
/// never at its very start or end.
pub fn points(clean: Duration, k: usize) -> Vec<Duration> {
    let k32 = u32::try_from(k).unwrap_or(u32::MAX);
    (1..=k32).map(|i| clean * i / (k32 + 1)).collect()
}

/// Run every scenario the plan allows and report what each found.
pub async fn verify(plan: &Plan) -> Result<Report, VerifyError> {
    let mut d = Driver {
        plan,
        signals: Signals::install().map_err(VerifyError::Signals)?,
        token: 0,
    };
    d.reset("the clean run").await?;
    info!("verify: clean run");
    let (first, res, took) = d.once("the clean run", 1, "none", None).await?;
    info!(
        "verify: clean run: {} in {:.2}s",
        first.run.outcome,
        took.as_secs_f64()
    );
    let mut clean = Clean::new(first.run.clone(), took, &res.tail);
    if !first.run.succeeded {
        return Ok(Report::new(plan, clean, None));
    }
    let s1 = plan.probe.take().await?;
    if let Some(why) = &s1.probe_failed {
        return Err(VerifyError::CleanProbe { why: why.clone() });
    }
    clean.state = Some(s1.text.clone());

    let mut scenarios = Vec::new();

    // rerun: no reset, the second run starts from the clean run's state.
    info!("verify: rerun");
    let (again, _, _) = d.once("the rerun scenario", 1, "none", None).await?;
    let s2 = plan.probe.take().await?;
    scenarios.push(Scenario::from_trials(
        Name::Rerun,
        vec![Trial::judge(
            Name::Rerun,
            &s1.text,
            "second run",
            None,
            vec![again.run],
            &s2,
        )],
    ));

    let no_reset = "needs --reset to bring the state back to the start";
    if plan.reset.is_none() {
        for name in [Name::Concurrent, Name::Interrupted, Name::Sigterm] {
            scenarios.push(Scenario::skipped(name, no_reset));
        }
        return Ok(Report::new(plan, clean, Some(scenarios)));
    }

    d.reset("the concurrent scenario").await?;
    info!("verify: concurrent: {} copies at once", plan.copies);
    let runs = concurrent(&mut d).await?;
    let s = plan.probe.take().await?;
    scenarios.push(Scenario::from_trials(
        Name::Concurrent,
        vec![Trial::judge(
            Name::Concurrent,
            &s1.text,
            &format!("{} copies at once", plan.copies),
            None,
            runs,
            &s,
        )],
    ));

    let at = points(took, plan.kill_points);
    for (name, label) in [
        (Name::Interrupted, "the interrupted scenario"),
        (Name::Sigterm, "the sigterm scenario"),
    ] {
        if at.is_empty() {
            scenarios.push(Scenario::skipped(name, "--kill-points 0"));
            continue;
        }
        let mut trials = Vec::new();
        for (i, &point) in at.iter().enumerate() {
            d.reset(label).await?;
            let cut = match name {
                Name::Sigterm => Cut::Term(point),
                _ => Cut::Kill(point),
            };
            info!(
                "verify: {} {}/{}: cut at {:.2}s",
                name.as_str(),
                i + 1,
                at.len(),
                point.as_secs_f64()
            );
            let (cut_run, _, _) = d.once(label, 1, "none", Some(cut)).await?;
            let mut runs = vec![cut_run.run.clone()];
            // A command that finished before its point was not cut: its run is a clean run
            // from the start state, judged as one, and says nothing about re-runs.
            if cut_run.cut_landed {
                let (attempt, previous) = after(&cut_run);
                let (rerun, _, _) = d.once(label, attempt, previous, None).await?;
                runs.push(rerun.run);
            }
            let s = plan.probe.take().await?;
            trials.push(Trial::judge(
                name,
                &s1.text,
                &format!("point {} of {}", i + 1, at.len()),
                Some((point, cut_run.cut_landed)),
                runs,
                &s,
            ));
        }
        scenarios.push(Scenario::from_trials(name, trials));
    }
    Ok(Report::new(plan, clean, Some(scenarios)))
}

/// `plan.copies` runs started together, with no lock between them. Each has its own signal
/// streams (every stream sees every signal), so a signal to verify reaches every copy.
async fn concurrent(d: &mut Driver<'_>) -> Result<Vec<Run>, VerifyError> {
    let mut tasks = Vec::new();
    for _ in 0..d.plan.copies {
        let (spec, token) = d.spec(1, "none");
        let mut signals = Signals::install().map_err(VerifyError::Signals)?;
        tasks.push(tokio::spawn(async move {
            let res = runner::run_with(
                &spec,
                &mut signals,
                std::future::pending(),
                runner::Supervision::none(),
                Extra {
                    forward: std::future::pending(),
                    output: runner::Output::ToStderr,
                },
            )
            .await;
            (token, res)
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        let (token, res) = match t.await {
            Ok(r) => r,
            // A copy's task cannot panic short of a bug in the runner; report it as a failure
            // of that copy rather than taking verify down.
            Err(e) => {
                runs.push(Run::new(
                    0,
                    1,
                    "none",
                    &ChildOutcome::SpawnFailed(e.to_string()),
                    None,
                ));
                continue;
            }
        };
        if let Ended::BySignal(signal) = res.ended {
            return Err(VerifyError::Signalled {
                signal,
                during: "the concurrent scenario",
            });
        }
        runs.push(Run::new(token, 1, "none", &res.outcome, None));
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_spread_inside_the_clean_run() {
        let p = points(Duration::from_secs(6), 5);
        assert_eq!(
            p,
            (1..=5).map(Duration::from_secs).collect::<Vec<_>>(),
            "evenly, never at 0 or at the end"
        );
        assert!(points(Duration::from_secs(1), 0).is_empty());
    }

    #[test]
    fn the_next_run_is_told_what_the_protocol_would_tell_it() {
        let ran = |succeeded: bool, cut_landed: bool| Ran {
            run: Run::new(
                1,
                1,
                "none",
                &if succeeded {
                    ChildOutcome::Exited(0)
                } else {
                    ChildOutcome::Exited(1)
                },
                None,
            ),
            cut_landed,
        };
        assert_eq!(after(&ran(false, true)), (2, "interrupted"));
        // A forwarded SIGTERM is an interruption even when the command then exits 0.
        assert_eq!(after(&ran(true, true)), (2, "interrupted"));
        assert_eq!(after(&ran(true, false)), (1, "none"));
        assert_eq!(after(&ran(false, false)), (2, "failed"));
    }
}
