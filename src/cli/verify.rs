//! `initguard verify` glue: flags validated into a `verify::Plan`, the report printed as a table
//! or as JSON, the exit code passed on. The scenarios and their judgement live in `crate::verify`.

use super::args::VerifyArgs;
use super::failure::Failure;
use super::report::table;
use super::settings::{SettingsError, command_timeout, duration};
use crate::fingerprint::{self, Sources};
use crate::task::Key;
use crate::verify::{self, DIFF_LINES, Finding, Plan, Probe, Report, bounded, secs};
use std::fmt::Write;
use tracing::info;

pub async fn verify(args: VerifyArgs) -> Result<u8, Failure> {
    let plan = plan(&args)?;
    let report = verify::verify(&plan).await?;
    if let Some(dir) = &args.out {
        let files = report.save(dir)?;
        info!(
            "verify: saved {} files (probe outputs, diffs, report.json) under {}",
            files.len(),
            dir.display()
        );
    }
    if args.json {
        println!("{}", report.json());
        // stdout is JSON for a machine; the one line for people goes where errors go.
        if report.exit_code != crate::exit::OK {
            eprintln!("initguard: verify: {}", report.verdict.line);
        }
    } else {
        print!("{}", text(&report));
    }
    Ok(report.exit_code)
}

fn usage(flag: &'static str, why: impl Into<String>) -> SettingsError {
    SettingsError::Usage {
        flag,
        why: why.into(),
    }
}

fn plan(args: &VerifyArgs) -> Result<Plan, Failure> {
    let command = args.probe.clone().filter(|p| !p.trim().is_empty());
    if command.is_none() && args.probe_dir.is_none() {
        return Err(usage(
            "--probe",
            "verify needs --probe CMD and/or --probe-dir DIR to see the state the command leaves",
        )
        .into());
    }
    let mut ignore = Vec::new();
    for raw in &args.ignore {
        let re = regex::Regex::new(raw).map_err(|e| {
            // regex's message spans several lines (the pattern, a caret); its last says why.
            let msg = e.to_string();
            let why = msg.lines().last().unwrap_or_default().trim().to_string();
            usage("--ignore", format!("{raw:?} is not a valid regex: {why}"))
        })?;
        ignore.push(re);
    }
    if args.copies < 2 {
        return Err(usage(
            "--copies",
            "must be at least 2: one copy is not concurrency",
        )
        .into());
    }
    let key = Key::parse(&args.key).map_err(SettingsError::from)?;
    let fp = fingerprint::compute(&Sources {
        argv: args.command.clone(),
        inputs: args.inputs.clone(),
        ..Sources::default()
    })
    .map_err(SettingsError::from)?;
    Ok(Plan {
        argv: args.command.clone(),
        key: key.to_string(),
        fingerprint: fp.value,
        probe: Probe {
            command,
            dir: args.probe_dir.clone(),
            ignore,
        },
        reset: args.reset.clone().filter(|r| !r.trim().is_empty()),
        copies: args.copies,
        kill_points: args.kill_points,
        grace: duration("--grace", &args.grace)?,
        timeout: command_timeout(args.timeout.as_deref())?,
    })
}

/// The human report: the clean run, a table of scenarios, a bounded diff per failing scenario,
/// and the verdict as the last line.
fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "clean run: {} in {}",
        r.clean.run.outcome,
        secs(r.clean.duration_ms)
    );
    let _ = writeln!(out);
    let mut rows = vec![vec!["SCENARIO".into(), "RESULT".into(), "DETAIL".into()]];
    for s in &r.scenarios {
        let result = match s.result {
            Finding::Pass => "pass",
            Finding::Fail => "FAIL",
            Finding::Skipped => "skipped",
        };
        rows.push(vec![
            s.name.as_str().to_string(),
            result.to_string(),
            s.detail.clone(),
        ]);
    }
    out.push_str(&table(rows));
    for s in &r.scenarios {
        let with_diff: Vec<_> = s.trials.iter().filter(|t| t.diff.is_some()).collect();
        let Some(first) = with_diff.first() else {
            continue;
        };
        let Some(diff) = &first.diff else { continue };
        let _ = writeln!(out);
        let at = first
            .at_ms
            .map_or(String::new(), |ms| format!(", cut at {}", secs(ms)));
        let _ = writeln!(
            out,
            "{} ({}{at}): the state differs from the clean run's",
            s.name.as_str(),
            first.label
        );
        let (shown, more) = bounded(diff, DIFF_LINES);
        out.push_str(&shown);
        if more > 0 {
            let _ = writeln!(
                out,
                "… {more} more diff lines (--out DIR saves the whole diff)"
            );
        }
        match with_diff.len() {
            0 | 1 => {}
            2 => out
                .push_str("(1 more point leaves a different state; --out DIR saves every diff)\n"),
            n => {
                let _ = writeln!(
                    out,
                    "({} more points leave a different state; --out DIR saves every diff)",
                    n - 1
                );
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "verdict: {}", r.verdict.line);
    out
}
