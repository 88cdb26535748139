//! verify's findings: the clean run, each scenario's trials and result, the verdict with its
//! `--on-interrupted` advice, the unified diffs, the JSON form and the `--out` files. Pure data
//! and judgement, except `save`, which writes under `--out` and nowhere else.

use super::probe::State;
use super::scenario::Plan;
use crate::runner::ChildOutcome;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Diff lines shown per scenario in the text report; `--out` keeps the whole diff.
pub const DIFF_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
#[error("--out {}: cannot write {}: {source}", dir.display(), path.display())]
pub struct SaveError {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Name {
    Rerun,
    Concurrent,
    Interrupted,
    Sigterm,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Rerun => "rerun",
            Name::Concurrent => "concurrent",
            Name::Interrupted => "interrupted",
            Name::Sigterm => "sigterm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    Pass,
    Fail,
    Skipped,
}

/// One run of the command and the environment it ran under.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub fencing_token: u64,
    pub attempt: u32,
    pub previous: &'static str,
    pub outcome: String,
    pub exit_code: u8,
    pub succeeded: bool,
    /// `sigkill` or `sigterm` when verify cut this run short (it had not finished by then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<&'static str>,
}

impl Run {
    pub fn new(
        token: u64,
        attempt: u32,
        previous: &'static str,
        outcome: &ChildOutcome,
        cut: Option<&'static str>,
    ) -> Run {
        Run {
            fencing_token: token,
            attempt,
            previous,
            outcome: outcome.to_string(),
            exit_code: outcome.exit_code(),
            succeeded: outcome.success(),
            cut,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Clean {
    pub run: Run,
    pub duration_ms: u64,
    /// The end of the command's output, kept when the clean run failed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output_tail: String,
    /// The probe's view of the state the clean run left (`S1`); None when it failed.
    #[serde(skip)]
    pub state: Option<String>,
}

impl Clean {
    pub fn new(run: Run, took: Duration, tail: &[u8]) -> Clean {
        Clean {
            output_tail: if run.succeeded {
                String::new()
            } else {
                String::from_utf8_lossy(tail).into_owned()
            },
            run,
            duration_ms: millis(took),
            state: None,
        }
    }
}

/// One comparison with the clean state: the rerun, the copies, or one cut point.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub label: String,
    /// When the cut came, measured from the start of the run it cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    pub runs: Vec<Run>,
    pub result: Finding,
    pub why: String,
    /// The unified diff from the clean state to this one, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip)]
    pub state: String,
    #[serde(skip)]
    cut_landed: bool,
}

impl Trial {
    /// Judge the state `now` left after `runs`. The first run of a cut trial (`cut` = its point,
    /// and whether the cut met a running command) may fail: it was cut; every other run must
    /// exit 0.
    pub fn judge(
        name: Name,
        clean: &str,
        label: &str,
        cut: Option<(Duration, bool)>,
        runs: Vec<Run>,
        now: &State,
    ) -> Trial {
        let mut problems = Vec::new();
        let landed = cut.is_some_and(|(_, landed)| landed);
        // Only the run that was cut may fail; a cut that came too late cut nothing.
        let must_succeed = if landed { 1 } else { 0 };
        for (i, r) in runs.iter().enumerate().skip(must_succeed) {
            if !r.succeeded {
                let who = match name {
                    Name::Rerun => "the second run".to_string(),
                    Name::Concurrent => format!("copy {}", i + 1),
                    Name::Interrupted | Name::Sigterm if landed => "the re-run".to_string(),
                    Name::Interrupted | Name::Sigterm => {
                        "the run (finished before the cut)".to_string()
                    }
                };
                problems.push(format!("{who} ended with {}", r.outcome));
            }
        }
        let diff = (clean != now.text).then(|| unified(clean, &now.text, name, label));
        if diff.is_some() {
            problems.push(match &now.probe_failed {
                Some(why) => format!("the state differs from the clean run's (the probe {why})"),
                None => "the state differs from the clean run's".to_string(),
            });
        }
        Trial {
            label: label.to_string(),
            at_ms: cut.map(|(at, _)| millis(at)),
            runs,
            result: if problems.is_empty() {
                Finding::Pass
            } else {
                Finding::Fail
            },
            why: if problems.is_empty() {
                "same state".to_string()
            } else {
                problems.join(", and ")
            },
            diff,
            state: now.text.clone(),
            cut_landed: landed,
        }
    }

    fn at(&self) -> String {
        self.at_ms.map_or(String::new(), secs)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: Name,
    pub result: Finding,
    pub detail: String,
    /// Trials whose cut met a running command (interrupted, sigterm); the others are clean runs.
    pub cuts_landed: usize,
    pub trials: Vec<Trial>,
}

impl Scenario {
    pub fn skipped(name: Name, why: &str) -> Scenario {
        Scenario {
            name,
            result: Finding::Skipped,
            detail: format!("skipped: {why}"),
            cuts_landed: 0,
            trials: Vec::new(),
        }
    }

    pub fn from_trials(name: Name, trials: Vec<Trial>) -> Scenario {
        let failing: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.result == Finding::Fail)
            .collect();
        let result = if failing.is_empty() {
            Finding::Pass
        } else {
            Finding::Fail
        };
        let detail = match name {
            Name::Rerun | Name::Concurrent => {
                let t = trials.first();
                let label = t.map_or("", |t| t.label.as_str());
                match (name, failing.first()) {
                    (Name::Rerun, None) => "same state, exit 0 both times".to_string(),
                    (_, None) => format!("{label}: same state, every copy exit 0"),
                    (Name::Rerun, Some(f)) => f.why.clone(),
                    (_, Some(f)) => format!("{label}: {}", f.why),
                }
            }
            Name::Interrupted | Name::Sigterm => {
                let signal = if name == Name::Sigterm {
                    "SIGTERM"
                } else {
                    "SIGKILL"
                };
                let k = trials.len();
                let span = match (trials.first(), trials.last()) {
                    (Some(a), Some(b)) if k > 1 => {
                        format!("{k} points from {} to {}", a.at(), b.at())
                    }
                    (Some(a), _) => format!("1 point at {}", a.at()),
                    _ => "no points".to_string(),
                };
                let missed = trials.iter().filter(|t| !t.cut_landed).count();
                let missed = match missed {
                    0 => String::new(),
                    m => format!(
                        " ({m} of them after the command had finished, so nothing was cut there)"
                    ),
                };
                let found = match failing.first() {
                    None => "same state every time".to_string(),
                    Some(f) => {
                        let at: Vec<String> = failing.iter().map(|t| t.at()).collect();
                        format!(
                            "fails at {} of {k} points ({}): {}",
                            at.len(),
                            at.join(", "),
                            f.why
                        )
                    }
                };
                format!("{signal} at {span}{missed}, then a re-run: {found}")
            }
        };
        Scenario {
            name,
            result,
            detail,
            cuts_landed: trials.iter().filter(|t| t.cut_landed).count(),
            trials,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub idempotent: bool,
    pub failed: Vec<Name>,
    pub skipped: Vec<Name>,
    /// The `run --on-interrupted` policy the interrupted and sigterm scenarios call for; None
    /// when neither ran.
    pub on_interrupted: Option<&'static str>,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: Vec<String>,
    pub clean: Clean,
    pub scenarios: Vec<Scenario>,
    pub verdict: Verdict,
    /// verify's own exit code: 0 every scenario that ran passed, 1 one failed, the command's
    /// own code when the clean run failed.
    pub exit_code: u8,
}

impl Report {
    /// `scenarios` is None when the clean run failed, so that none could run.
    pub fn new(plan: &Plan, clean: Clean, scenarios: Option<Vec<Scenario>>) -> Report {
        let Some(scenarios) = scenarios else {
            let why = "the clean run failed";
            let scenarios = [
                Name::Rerun,
                Name::Concurrent,
                Name::Interrupted,
                Name::Sigterm,
            ]
            .into_iter()
            .map(|n| Scenario::skipped(n, why))
            .collect();
            let line = format!(
                "the command fails on its own ({} in the clean run), so it cannot be tested for \
                 idempotence: fix it first",
                clean.run.outcome
            );
            return Report {
                command: plan.argv.clone(),
                exit_code: clean.run.exit_code,
                verdict: Verdict {
                    idempotent: false,
                    failed: Vec::new(),
                    skipped: vec![
                        Name::Rerun,
                        Name::Concurrent,
                        Name::Interrupted,
                        Name::Sigterm,
                    ],
                    on_interrupted: None,
                    line,
                },
                clean,
                scenarios,
            };
        };
        let verdict = verdict(&scenarios, plan.reset.is_some());
        Report {
            command: plan.argv.clone(),
            exit_code: if verdict.idempotent { 0 } else { 1 },
            clean,
            scenarios,
            verdict,
        }
    }

    /// The JSON form (`--json`).
    pub fn json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Write the clean state, each trial's state and diff, and the JSON report under `dir`.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>, SaveError> {
        let fail = |path: &Path| {
            let (dir, path) = (dir.to_path_buf(), path.to_path_buf());
            move |source| SaveError { dir, path, source }
        };
        std::fs::create_dir_all(dir).map_err(fail(dir))?;
        let mut files: Vec<(PathBuf, &str)> = Vec::new();
        if let Some(s) = &self.clean.state {
            files.push((dir.join("clean.state"), s));
        }
        for sc in &self.scenarios {
            for (i, t) in sc.trials.iter().enumerate() {
                let stem = if sc.trials.len() > 1 {
                    format!("{}-{}", sc.name.as_str(), i + 1)
                } else {
                    sc.name.as_str().to_string()
                };
                files.push((dir.join(format!("{stem}.state")), &t.state));
                if let Some(d) = &t.diff {
                    files.push((dir.join(format!("{stem}.diff")), d));
                }
            }
        }
        let json = self.json();
        files.push((dir.join("report.json"), &json));
        for (path, content) in &files {
            std::fs::write(path, content).map_err(fail(path))?;
        }
        Ok(files.into_iter().map(|(p, _)| p).collect())
    }
}

fn verdict(scenarios: &[Scenario], have_reset: bool) -> Verdict {
    let with = |f: Finding| -> Vec<Name> {
        scenarios
            .iter()
            .filter(|s| s.result == f)
            .map(|s| s.name)
            .collect()
    };
    let (failed, skipped) = (with(Finding::Fail), with(Finding::Skipped));
    // Advice needs evidence: at least one cut that met a running command.
    let cut_ran = scenarios
        .iter()
        .any(|s| matches!(s.name, Name::Interrupted | Name::Sigterm) && s.cuts_landed > 0);
    let cut_failed = failed
        .iter()
        .any(|n| matches!(n, Name::Interrupted | Name::Sigterm));
    let on_interrupted = cut_ran.then_some(if cut_failed { "fail" } else { "rerun" });
    let names = |ns: &[Name]| ns.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut line = if failed.is_empty() {
        "idempotent in every scenario that ran".to_string()
    } else {
        format!("NOT idempotent (fails {})", names(&failed))
    };
    if !skipped.is_empty() {
        line.push_str(&format!(" (skipped {})", names(&skipped)));
    }
    line.push_str(match on_interrupted {
        Some("rerun") => "; --on-interrupted rerun (the default) is safe for it",
        Some(_) => {
            "; run it with --on-interrupted fail, or make it clean up when \
             INITGUARD_PREVIOUS=interrupted"
        }
        None if have_reset => {
            "; no --on-interrupted advice: no cut met the command while it ran (--kill-points)"
        }
        None => "; give --reset to learn which --on-interrupted policy it needs",
    });
    if failed.contains(&Name::Concurrent) {
        line.push_str(
            "; copies at once break it: it needs initguard's lock, which run always takes",
        );
    }
    Verdict {
        idempotent: failed.is_empty(),
        failed,
        skipped,
        on_interrupted,
        line,
    }
}

/// The unified diff from the clean state to `now`, with three lines of context.
fn unified(clean: &str, now: &str, name: Name, label: &str) -> String {
    similar::TextDiff::from_lines(clean, now)
        .unified_diff()
        .context_radius(3)
        .header("clean run", &format!("{} ({label})", name.as_str()))
        .to_string()
}

/// At most `max` lines of `diff`, and how many were left out.
pub fn bounded(diff: &str, max: usize) -> (String, usize) {
    let total = diff.lines().count();
    let shown: Vec<&str> = diff.lines().take(max).collect();
    let mut out = shown.join("\n");
    out.push('\n');
    (out, total.saturating_sub(max))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds with two decimals, the one duration format of the report.
pub fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(text: &str) -> State {
        State {
            text: text.into(),
            probe_failed: None,
        }
    }

    fn ok_run() -> Run {
        Run::new(2, 1, "none", &ChildOutcome::Exited(0), None)
    }

    #[test]
    fn a_diff_shows_the_extra_line() {
        let t = Trial::judge(
            Name::Rerun,
            "a\n",
            "second run",
            None,
            vec![ok_run()],
            &state("a\na\n"),
        );
        assert_eq!(t.result, Finding::Fail);
        let diff = t.diff.unwrap();
        assert!(diff.contains("\n+a\n"), "{diff}");
        assert!(
            diff.starts_with("--- clean run\n+++ rerun (second run)\n"),
            "{diff}"
        );
    }

    #[test]
    fn a_failing_rerun_fails_even_with_the_same_state() {
        let bad = Run::new(2, 1, "none", &ChildOutcome::Exited(1), None);
        let t = Trial::judge(Name::Rerun, "a\n", "x", None, vec![bad], &state("a\n"));
        assert_eq!(t.result, Finding::Fail);
        assert_eq!(t.why, "the second run ended with exit status 1");
        assert!(t.diff.is_none());
    }

    #[test]
    fn the_cut_run_may_fail_but_its_rerun_may_not() {
        let killed = Run::new(3, 1, "none", &ChildOutcome::Signaled(9), Some("sigkill"));
        let cut = Some((Duration::from_millis(500), true));
        let t = Trial::judge(
            Name::Interrupted,
            "a\n",
            "point 1 of 1",
            cut,
            vec![killed.clone(), ok_run()],
            &state("a\n"),
        );
        assert_eq!(t.result, Finding::Pass);
        let t = Trial::judge(
            Name::Interrupted,
            "a\n",
            "point 1 of 1",
            cut,
            vec![killed.clone(), killed],
            &state("a\n"),
        );
        assert_eq!(t.result, Finding::Fail);
    }

    #[test]
    fn diffs_are_bounded() {
        let long: String = (0..100).map(|i| format!("+{i}\n")).collect();
        let (shown, more) = bounded(&long, 10);
        assert_eq!(shown.lines().count(), 10);
        assert_eq!(more, 90);
    }

    fn scenario(name: Name, result: Finding) -> Scenario {
        Scenario {
            name,
            result,
            detail: String::new(),
            cuts_landed: usize::from(result != Finding::Skipped),
            trials: Vec::new(),
        }
    }

    #[test]
    fn verdict_recommends_fail_when_a_cut_scenario_fails() {
        let all_pass = [
            Name::Rerun,
            Name::Concurrent,
            Name::Interrupted,
            Name::Sigterm,
        ]
        .map(|n| scenario(n, Finding::Pass));
        let v = verdict(&all_pass, true);
        assert!(v.idempotent);
        assert_eq!(v.on_interrupted, Some("rerun"));
        let mut cut_fails = all_pass.clone();
        cut_fails[2].result = Finding::Fail;
        let v = verdict(&cut_fails, true);
        assert!(!v.idempotent);
        assert_eq!(v.on_interrupted, Some("fail"));
        let no_reset = [
            scenario(Name::Rerun, Finding::Pass),
            scenario(Name::Concurrent, Finding::Skipped),
            scenario(Name::Interrupted, Finding::Skipped),
            scenario(Name::Sigterm, Finding::Skipped),
        ];
        let v = verdict(&no_reset, false);
        assert!(v.idempotent);
        assert_eq!(v.on_interrupted, None);
        assert!(v.line.contains("--reset"), "{}", v.line);
        // Cuts that all came after the command had finished are no evidence either way.
        let mut missed = all_pass.clone();
        missed[2].cuts_landed = 0;
        missed[3].cuts_landed = 0;
        let v = verdict(&missed, true);
        assert_eq!(v.on_interrupted, None);
        assert!(v.line.contains("no cut met the command"), "{}", v.line);
    }
}
