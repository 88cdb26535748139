//! `initguard run` inside the command of another run: it never takes the child variables
//! (`INITGUARD_KEY`, …) as its own configuration, and a run of the same key fails at once
//! instead of waiting on its own parent's lease.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use support::*;

fn outer(work: &Path, state: &Path, key: &str, inner: &str) -> std::process::Output {
    Command::new(bin())
        .current_dir(work)
        .env("INITGUARD_STORE", format!("file:{}", state.display()))
        .env("IG", bin())
        .env_remove("INITGUARD_KEY")
        .env_remove("INITGUARD_FENCING_TOKEN")
        .stdin(Stdio::null())
        .args(["run", "--key", key, "--", "sh", "-c", inner])
        .output()
        .unwrap()
}

/// The inner run's exit code and stderr, as the outer command wrote them down. The inner runs
/// get `--wait-timeout 20s`, so that one that waits on its parent ends (75) instead of hanging.
fn inner_result(work: &Path) -> (String, String) {
    let code = std::fs::read_to_string(work.join("inner.code")).unwrap_or_default();
    let err = std::fs::read_to_string(work.join("inner.err")).unwrap_or_default();
    (code.trim().to_string(), err)
}

#[test]
fn nested_run_without_key_fails_at_once_instead_of_waiting_on_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = format!("file:{}", state.display());
    let o = outer(
        tmp.path(),
        &state,
        "app/outer",
        &format!(
            "\"$IG\" --store {store} run --wait-timeout 20s -- touch inner-ran 2>inner.err; echo $? > inner.code"
        ),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (code, err) = inner_result(tmp.path());
    assert_eq!(code, "2", "inner run: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--key"), "{err}");
    assert!(!tmp.path().join("inner-ran").exists());
}

#[test]
fn nested_run_of_the_same_key_fails_at_once_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = format!("file:{}", state.display());
    let o = outer(
        tmp.path(),
        &state,
        "app/outer",
        &format!(
            "\"$IG\" --store {store} run --key app/outer --wait-timeout 20s -- touch inner-ran 2>inner.err; echo $? > inner.code"
        ),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (code, err) = inner_result(tmp.path());
    assert_eq!(code, "2", "inner run: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nested inside a run of the same key"), "{err}");
    assert!(!tmp.path().join("inner-ran").exists());
}

#[test]
fn nested_run_of_another_key_runs_its_own_task() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = format!("file:{}", state.display());
    let o = outer(
        tmp.path(),
        &state,
        "app/outer",
        &format!(
            "\"$IG\" --store {store} run --key app/inner --wait-timeout 20s -- sh -c 'echo \"$INITGUARD_KEY\" > inner-ran' 2>inner.err; echo $? > inner.code"
        ),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let (code, err) = inner_result(tmp.path());
    assert_eq!(code, "0", "inner run: {err}");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("inner-ran"))
            .unwrap()
            .trim(),
        "app/inner"
    );
    let rec = Command::new(bin())
        .args(["--store", &store, "status", "app/inner", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    assert_eq!(v[0]["state"], "succeeded", "{v}");
}
