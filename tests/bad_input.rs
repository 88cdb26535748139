//! Bad input on the command line and in `INITGUARD_*` variables: every usage error exits 2 with
//! exactly one line on stderr, before any store is contacted; and each option's 0 means one thing.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// `initguard` with a file store that does not exist yet: a usage error must leave it so.
fn ig(work: &Path, state: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env("INITGUARD_STORE", format!("file:{}", state.display()))
        .env_remove("INITGUARD_KEY")
        .env_remove("INITGUARD_FENCING_TOKEN")
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null());
    c
}

/// One bad input: the arguments after `initguard`, and variables to set.
struct Bad {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
}

fn run_args(extra: &[&str]) -> Vec<String> {
    let mut v = vec!["run".to_string(), "--key".into(), "app/k".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(["--", "touch", "ran"].map(String::from));
    v
}

fn bad_inputs() -> Vec<Bad> {
    let mut out = Vec::new();
    let plain = |args: Vec<String>| Bad { args, env: vec![] };
    // Durations: out of range, negative, garbage, zero where zero is refused.
    for (flag, values) in [
        (
            "--lock-ttl",
            &[
                "300000y",
                "-1s",
                "-1",
                "0",
                "0s",
                "500ms",
                "soon",
                "",
                "1s5",
                "99999999999999999999s",
            ][..],
        ),
        ("--timeout", &["0", "0s", "-5s", "366d", "300000y", "x"][..]),
        ("--grace", &["-1s", "400d", "later"][..]),
        ("--backoff", &["-1s", "300000y", "1 fortnight"][..]),
        ("--wait-timeout", &["-1", "-1s", "300000y", "never"][..]),
    ] {
        for v in values {
            out.push(plain(run_args(&[flag, v])));
        }
    }
    // Numbers: negative, out of range, not a number.
    for (flag, values) in [
        (
            "--tail-bytes",
            &["-1", "1048577", "99999999999999999999", "4k"][..],
        ),
        ("--history", &["0", "-1", "1001", "many"][..]),
        ("--retries", &["-1", "1001", "4294967296", "two"][..]),
        ("--max-attempts", &["-3", "1001", "x"][..]),
    ] {
        for v in values {
            out.push(plain(run_args(&[flag, v])));
        }
    }
    // The same through the environment.
    for (var, v) in [
        ("INITGUARD_LOCK_TTL", "300000y"),
        ("INITGUARD_LOCK_TTL", "-1s"),
        ("INITGUARD_TIMEOUT", "0"),
        ("INITGUARD_WAIT_TIMEOUT", "-1"),
        ("INITGUARD_HISTORY", "0"),
        ("INITGUARD_TAIL_BYTES", "-1"),
        ("INITGUARD_RETRIES", "1001"),
    ] {
        out.push(Bad {
            args: run_args(&[]),
            env: vec![(var, v.to_string())],
        });
    }
    // reset's --wait-timeout.
    for v in ["-1", "-1s", "300000y", "soon"] {
        out.push(plain(
            ["reset", "app/k", "--wait-timeout", v]
                .map(String::from)
                .to_vec(),
        ));
    }
    // Structure: unknown flags and subcommands, missing values and arguments.
    for args in [
        &["run", "--key", "app/k", "--bogus", "--", "true"][..],
        &["run", "--key", "app/k", "--lock-tt", "3s", "--", "true"][..],
        &["run", "--key", "app/k"][..],
        &["run", "--", "true"][..],
        &["run", "--key"][..],
        &["run", "--key", "app/k", "--lock-ttl"][..],
        &[
            "run",
            "--key",
            "app/k",
            "--on-interrupted",
            "maybe",
            "--",
            "true",
        ][..],
        &["run", "--key", "app/k", "--scope", "galaxy", "--", "true"][..],
        &["run", "--key", "../etc", "--", "true"][..],
        &["run", "--key", "", "--", "true"][..],
        &["run", "--key", "app/k", "--log-format", "xml", "--", "true"][..],
        &["statuss"][..],
        &[][..],
        &["k8s"][..],
        &["history"][..],
        &["reset"][..],
        &["status", "bad key"][..],
        &["status", "--json", "extra", "more"][..],
    ] {
        out.push(plain(args.iter().map(|s| s.to_string()).collect()));
    }
    // verify's --timeout as run's; steps apply's ranges as run's (on a directory that exists).
    for v in ["0", "0s", "-5s", "366d"] {
        out.push(plain(
            ["verify", "--timeout", v, "--", "touch", "ran"]
                .map(String::from)
                .to_vec(),
        ));
    }
    for (flag, v) in [
        ("--history", "0"),
        ("--history", "1001"),
        ("--tail-bytes", "1048577"),
        ("--grace", "-1s"),
        ("--lock-ttl", "0"),
        ("--wait-timeout", "-1s"),
    ] {
        out.push(plain(
            ["steps", "apply", ".", flag, v].map(String::from).to_vec(),
        ));
    }
    // Store URLs.
    for url in [
        "redis://x",
        "nocolon",
        "file:",
        "postgress://app@db/app",
        "postgres://app@db/app?sslmode=bogus",
        "kubernetes:Bad_NS",
    ] {
        out.push(plain(["--store", url, "status"].map(String::from).to_vec()));
    }
    out
}

fn one_stderr_line(o: &Output) -> Option<String> {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    match lines.as_slice() {
        [line] if line.starts_with("initguard: ") && line.len() > "initguard: ".len() + 10 => {
            Some(line.to_string())
        }
        _ => None,
    }
}

#[test]
fn every_usage_error_is_one_line_exit_2_and_touches_no_store() {
    let inputs = bad_inputs();
    assert!(inputs.len() >= 50, "only {} bad inputs", inputs.len());
    let mut wrong = Vec::new();
    for bad in &inputs {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let mut c = ig(tmp.path(), &state);
        c.args(&bad.args);
        for (k, v) in &bad.env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let line = one_stderr_line(&o);
        if code(&o) != 2 || line.is_none() || state.exists() || tmp.path().join("ran").exists() {
            wrong.push(format!(
                "{:?} {:?}: exit {}, store touched {}, stderr:\n{}",
                bad.env,
                bad.args,
                code(&o),
                state.exists(),
                stderr(&o)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} bad inputs were not one-line usage errors:\n{}",
        wrong.len(),
        inputs.len(),
        wrong.join("\n")
    );
}

#[test]
fn out_of_range_lock_ttl_is_a_usage_error_naming_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ig(tmp.path(), &tmp.path().join("state"))
        .args(run_args(&["--lock-ttl", "300000y"]))
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    let line = one_stderr_line(&o).expect("one line");
    assert!(
        line.contains("--lock-ttl") && line.contains("at most 365d"),
        "{line}"
    );
}

#[test]
fn a_negative_duration_is_read_as_the_flags_value() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ig(tmp.path(), &tmp.path().join("state"))
        .args(run_args(&["--lock-ttl", "-1s"]))
        .output()
        .unwrap();
    let line = one_stderr_line(&o).expect("one line");
    assert!(
        line.contains("--lock-ttl: \"-1s\" is not a duration"),
        "{line}"
    );
}

/// A holder of `key` that stays in its command until `release` exists, or for 30 s at most (so
/// that a waiter that waits, instead of giving up at once, ends with the holder and exits 0).
fn hold(tmp: &Path, state: &Path, key: &str) -> (std::process::Child, PathBuf) {
    let release = tmp.join("release");
    let started = tmp.join("started");
    let child = ig(tmp, state)
        .args(["run", "--key", key, "--", "sh", "-c"])
        .arg(format!(
            "touch {}; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            started.display(),
            release.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the holder to start",
        std::time::Duration::from_secs(20),
        || started.exists(),
    );
    (child, release)
}

/// The top of every range is accepted, and `--wait-timeout forever`: the run runs.
#[test]
fn the_largest_values_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ig(tmp.path(), &tmp.path().join("state"))
        .args(run_args(&[
            "--retries",
            "1000",
            "--max-attempts",
            "1000",
            "--history",
            "1000",
            "--tail-bytes",
            "1048576",
            "--lock-ttl",
            "365d",
            "--timeout",
            "365d",
            "--grace",
            "365d",
            "--backoff",
            "5m",
            "--wait-timeout",
            "forever",
        ]))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(tmp.path().join("ran").exists(), "the command ran");
}

#[test]
fn wait_timeout_zero_means_do_not_wait_however_spelt() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (mut holder, release) = hold(tmp.path(), &state, "app/zero");
    for zero in ["0", "0s", "0ms"] {
        let o = ig(tmp.path(), &state)
            .args([
                "run",
                "--key",
                "app/zero",
                "--wait-timeout",
                zero,
                "--",
                "true",
            ])
            .output()
            .unwrap();
        assert_eq!(code(&o), 75, "--wait-timeout {zero}: {}", stderr(&o));
        let o = ig(tmp.path(), &state)
            .args(["reset", "app/zero", "--wait-timeout", zero])
            .output()
            .unwrap();
        assert_eq!(code(&o), 75, "reset --wait-timeout {zero}: {}", stderr(&o));
    }
    std::fs::write(&release, "").unwrap();
    assert!(holder.wait().unwrap().success());
}

#[test]
fn history_1_keeps_one_run_and_tail_bytes_0_keeps_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    for i in 0..3 {
        let o = ig(tmp.path(), &state)
            .args([
                "run",
                "--key",
                "app/h",
                "--history",
                "1",
                "--tail-bytes",
                "0",
            ])
            .args(["--version", &i.to_string(), "--", "echo", "some output"])
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = ig(tmp.path(), &state)
        .args(["status", "app/h", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["history"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["tail"], "", "{v}");
}

#[test]
fn grace_0_and_backoff_0_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ig(tmp.path(), &tmp.path().join("state"))
        .args(run_args(&[
            "--grace",
            "0",
            "--backoff",
            "0s",
            "--retries",
            "1",
        ]))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(tmp.path().join("ran").exists());
}
