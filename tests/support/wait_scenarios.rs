//! Contract scenarios for `initguard wait`: it returns once the task has succeeded (with the
//! fingerprint the same options compute, or any), exits 75 on gave_up and at its timeout, and
//! never writes to the store.

use super::*;
use std::fs;

fn wait_cmd(
    fx: &dyn StoreFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    script: &str,
) -> Command {
    let mut c = cmd(fx, work);
    c.args(["wait", "--key", key])
        .args(extra)
        .args(["--", "sh", "-c", script]);
    c
}

/// A waiter started before the task ever ran exits 0 once it has run, and changed nothing: the
/// record is the one the run wrote (one acquisition, one history entry).
pub fn wait_returns_once_the_task_succeeded(fx: &dyn StoreFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("contract/wait");
    let marker = work.path().join("ran");
    let go = work.path().join("go");
    let script = format!(
        "echo run >> {}; while [ ! -e {} ]; do sleep 0.05; done",
        marker.display(),
        go.display()
    );
    let waiter = wait_cmd(fx, work.path(), &key, &["--wait-timeout", "60s"], &script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A waiter for another fingerprint (another command) keeps waiting; one with --any does not.
    let other = wait_cmd(fx, work.path(), &key, &["--wait-timeout", "4s"], "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let any = cmd(fx, work.path())
        .args(["wait", "--key", &key, "--any", "--wait-timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let runner = spawn_task(fx, work.path(), &key, &[], &script);
    wait_for("the task to start", Duration::from_secs(30), || {
        !lines(&marker).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    fs::write(&go, "").unwrap();
    let out = runner.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let done = record(fx, work.path(), &key);
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        0,
        "the waiter sees the success: {}",
        stderr(&out)
    );
    let out = any.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "--any: {}", stderr(&out));
    let out = other.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        75,
        "another fingerprint is not this success: {}",
        stderr(&out)
    );
    assert_eq!(lines(&marker).len(), 1, "nobody but the runner ran it");
    let rec = record(fx, work.path(), &key);
    assert_eq!(
        rec, done,
        "the waiters wrote nothing once the runner was done"
    );
    // Waiting took no lease.
    assert_acquisitions(fx, &key, &rec, 1);
    assert_eq!(rec["history"].as_array().map(Vec::len), Some(1), "{rec}");
}

/// A task that gave up: `wait` exits 75 at once with the reason, runs nothing, writes nothing.
pub fn wait_on_a_task_that_gave_up_exits_75(fx: &dyn StoreFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("contract/wait-gaveup");
    let out = run_task(fx, work.path(), &key, &["--max-attempts", "1"], "exit 3");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let before = record(fx, work.path(), &key);
    let out = wait_cmd(fx, work.path(), &key, &["--wait-timeout", "60s"], "exit 3")
        .output()
        .unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("gave up"), "{}", stderr(&out));
    assert_eq!(record(fx, work.path(), &key), before, "nothing written");
}
