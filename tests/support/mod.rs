//! Shared test helpers: run the built binary, store fixtures, waiting on files and processes.
//! Each test binary includes this with `mod support;`; not every binary uses every helper.
#![allow(dead_code)]

#[macro_use]
pub mod contract;
// etcd store (issue 11).
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod pg;
pub mod proxy;
pub mod supervision;
pub mod wait_scenarios;
#[cfg(feature = "zookeeper")]
pub mod zk;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_initguard"))
}

/// A store the contract suite can run against: its URL and the environment its processes need.
pub trait StoreFixture {
    fn url(&self) -> String;
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// True when a paused or dead holder's lease lapses after its TTL (not the file store, where
    /// the kernel holds the lock for exactly as long as the process lives).
    fn leases_lapse(&self) -> bool;
    /// Everything the store keeps, as raw as it keeps it (files, table rows, Lease objects), to
    /// show what a command changed and created.
    fn stored(&self) -> Vec<Stored>;
    /// How many times the lease of the global task `key` was taken, for stores whose fencing
    /// token is not a count of acquisitions (etcd: a revision of the whole store); `None`: the
    /// record's token counts them.
    fn acquisitions(&self, _key: &str) -> Option<u64> {
        None
    }
}

/// One object a store keeps: which task it belongs to (`TaskId::storage_name`), what it is, and
/// its bytes exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stored {
    pub task: String,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// So that a test can pass a shared fixture by reference (`contract_tests!(&*SHARED)`).
impl<T: StoreFixture + ?Sized> StoreFixture for &T {
    fn url(&self) -> String {
        (**self).url()
    }
    fn env(&self) -> Vec<(String, String)> {
        (**self).env()
    }
    fn leases_lapse(&self) -> bool {
        (**self).leases_lapse()
    }
    fn stored(&self) -> Vec<Stored> {
        (**self).stored()
    }
    fn acquisitions(&self, key: &str) -> Option<u64> {
        (**self).acquisitions(key)
    }
}

/// That the lease of `key` (whose record is `rec`) was taken exactly `n` times.
pub fn assert_acquisitions(fx: &dyn StoreFixture, key: &str, rec: &serde_json::Value, n: u64) {
    match fx.acquisitions(key) {
        Some(got) => assert_eq!(got, n, "lease acquisitions of {key}: {rec}"),
        None => assert_eq!(rec["token"], n, "lease acquisitions (the token): {rec}"),
    }
}

thread_local! {
    /// Set by a test that must find every key it made afterwards (`tag_keys`).
    static KEY_TAG: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// From now on, every `unique_key` of this thread (libtest runs each test on a thread of its own)
/// contains `tag`, so the test can find and delete what its scenario stored even when the
/// scenario is shared code that does not report its keys; `None` stops it.
pub fn tag_keys(tag: Option<String>) {
    KEY_TAG.with(|t| *t.borrow_mut() = tag);
}

/// A unique key per test, so that suites can share one server.
pub fn unique_key(prefix: &str) -> String {
    let n: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let tag = KEY_TAG.with(|t| t.borrow().clone());
    match tag {
        Some(tag) => format!("{prefix}-{tag}-{:x}-{}", n, std::process::id()),
        None => format!("{prefix}-{:x}-{}", n, std::process::id()),
    }
}

/// `initguard` with the fixture's store and environment, and a scratch working directory.
pub fn cmd(fx: &dyn StoreFixture, work: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env("INITGUARD_STORE", fx.url())
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .env_remove("INITGUARD_KEY")
        .stdin(Stdio::null());
    for (k, v) in fx.env() {
        c.env(k, v);
    }
    c
}

/// `initguard run --key KEY EXTRA… -- sh -c SCRIPT`.
pub fn task_cmd(
    fx: &dyn StoreFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    script: &str,
) -> Command {
    let mut c = cmd(fx, work);
    c.arg("run")
        .arg("--key")
        .arg(key)
        .args(extra)
        .args(["--", "sh", "-c", script]);
    c
}

pub fn run_task(
    fx: &dyn StoreFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    script: &str,
) -> Output {
    task_cmd(fx, work, key, extra, script)
        .output()
        .expect("spawn initguard")
}

pub fn spawn_task(
    fx: &dyn StoreFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    script: &str,
) -> Child {
    task_cmd(fx, work, key, extra, script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn initguard")
}

/// Spawn `holder` (an initguard whose command touches `started` first), wait until its command
/// has started, then kill it (SIGKILL: no chance to give its lease up or record anything).
pub fn kill_once_started(mut holder: Command, started: &Path) {
    let mut child = holder
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn initguard");
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// `spawn_task` of `touch STARTED; REST`, returned once STARTED exists: the command is running,
/// under the lease.
pub fn spawn_started(
    fx: &dyn StoreFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    started: &Path,
    rest: &str,
) -> Child {
    let script = format!("touch {}; {rest}", started.display());
    let child = spawn_task(fx, work, key, extra, &script);
    wait_for("the holder to start", Duration::from_secs(30), || {
        started.exists()
    });
    child
}

pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Wait until `cond` holds, panicking with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for `child` at most `limit` from `since`; kill it and fail when it is still alive.
pub fn exit_within(
    what: &str,
    mut child: Child,
    since: Instant,
    limit: Duration,
) -> (Output, Duration) {
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let took = since.elapsed();
            return (child.wait_with_output().expect("output"), took);
        }
        if since.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{what} still running after {limit:?}; stderr:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)
        .expect("send signal");
}

/// The pid a process wrote to `path` (`echo $$ > FILE`), waited for up to `limit`.
pub fn pid_written_to(path: &Path, what: &str, limit: Duration) -> i32 {
    let mut pid = None;
    wait_for(what, limit, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        pid.is_some()
    });
    pid.unwrap_or_default()
}

/// Shell words that print, for each of `vars`, ` VAR=set` when it is in the environment and
/// ` VAR=` when not; `unset_line(vars)` is what they print when none is.
pub fn presence_words(vars: &[&str]) -> String {
    vars.iter().map(|v| format!(" {v}=${{{v}+set}}")).collect()
}

pub fn unset_line(vars: &[&str]) -> String {
    vars.iter().map(|v| format!(" {v}=")).collect()
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); read its state to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `status --json` parsed.
pub fn status_json(fx: &dyn StoreFixture, work: &Path, key: &str) -> serde_json::Value {
    let out = cmd(fx, work)
        .args(["status", key, "--json"])
        .output()
        .expect("status");
    assert_eq!(code(&out), 0, "status failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status --json parses")
}

/// The single record of `key` from `status --json`.
pub fn record(fx: &dyn StoreFixture, work: &Path, key: &str) -> serde_json::Value {
    let all = status_json(fx, work, key);
    let arr = all.as_array().expect("status --json is an array");
    assert_eq!(arr.len(), 1, "one record for {key}: {all}");
    arr[0].clone()
}

/// Whether a server binary a test needs is missing: under CI that fails the test, otherwise the
/// test is skipped with a visible message.
pub fn require(what: &str, found: bool) -> bool {
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true but was not found (.ci/run installs it)");
    }
    eprintln!("SKIP: {what} not found; skipping (install it to run this test)");
    false
}
