//! End-to-end tests of `initguard run` and the operator commands on the embedded file store:
//! the store contract suite, plus what only the file store can show (bad input leaves files
//! byte-identical, unwritable state dir, output passthrough).

#[macro_use]
mod support;

use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::*;

struct FileFixture {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl FileFixture {
    fn new() -> FileFixture {
        let tmp = tempfile::tempdir().unwrap();
        FileFixture {
            dir: tmp.path().join("state"),
            _tmp: tmp,
        }
    }
}

impl StoreFixture for FileFixture {
    fn url(&self) -> String {
        format!("file:{}", self.dir.display())
    }
    fn leases_lapse(&self) -> bool {
        false
    }
    /// Every file of the state dir (records and lock files), named by its path in it.
    fn stored(&self) -> Vec<support::Stored> {
        snapshot(&self.dir)
            .into_iter()
            .map(|(path, bytes)| {
                let name = path
                    .strip_prefix(&self.dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                // The file store's layout spells `/` in a key as `+` (keys never hold `+`).
                let task = [".json", ".lock"]
                    .iter()
                    .find_map(|ext| name.strip_suffix(ext))
                    .unwrap_or(&name)
                    .replace('+', "/");
                support::Stored { task, name, bytes }
            })
            .collect()
    }
}

contract_tests!(FileFixture::new());

/// Every file under `dir` with its bytes, to show that a refused run changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if dir.exists() {
        for e in walk(dir) {
            out.push((e.clone(), fs::read(&e).unwrap()));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn one_line_error(out: &std::process::Output) -> String {
    let err = stderr(out);
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("initguard: "), "error line: {err}");
    last
}

#[test]
fn invalid_key_exits_2_and_writes_nothing() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    for key in ["../etc", "/abs", "has space", ""] {
        let out = run_task(&fx, work.path(), key, &[], "touch ran");
        assert_eq!(code(&out), 2, "{key:?}: {}", stderr(&out));
        assert!(one_line_error(&out).contains("invalid key"));
    }
    assert!(!fx.dir.exists(), "no state dir created");
    assert!(!work.path().join("ran").exists());
}

#[test]
fn unknown_store_scheme_exits_2() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .current_dir(work.path())
        .args([
            "--store",
            "redis://localhost",
            "run",
            "--key",
            "k",
            "--",
            "touch",
            "ran",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(one_line_error(&out).contains("unknown store URL"));
    assert!(!work.path().join("ran").exists());
}

#[test]
fn corrupt_record_exits_65_and_is_left_byte_identical() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&run_task(&fx, work.path(), "app/corrupt", &[], "true")),
        0
    );
    let path = fx.dir.join("app+corrupt.json");
    fs::write(&path, b"{\"schema\": 1, \"state\": \"succ").unwrap();
    let before = snapshot(&fx.dir);
    let out = run_task(&fx, work.path(), "app/corrupt", &[], "touch ran");
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(one_line_error(&out).contains("corrupt"));
    assert_eq!(snapshot(&fx.dir), before, "nothing written");
    assert!(!work.path().join("ran").exists());
    unreadable_for_status_and_history(&fx, work.path(), "app/corrupt", "corrupt");
    assert_eq!(snapshot(&fx.dir), before, "nothing written");
    // The message's advice works: reset replaces the corrupt record, the next run runs.
    let reset = cmd(&fx, work.path())
        .args(["reset", "app/corrupt"])
        .output()
        .unwrap();
    assert_eq!(code(&reset), 0, "{}", stderr(&reset));
    assert_eq!(record(&fx, work.path(), "app/corrupt")["state"], "reset");
    let out = run_task(&fx, work.path(), "app/corrupt", &[], "touch ran");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(work.path().join("ran").exists());
}

#[test]
fn newer_schema_exits_65_and_is_left_byte_identical() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&run_task(&fx, work.path(), "app/newer", &[], "true")),
        0
    );
    let path = fx.dir.join("app+newer.json");
    let mut rec: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    rec["schema"] = 99.into();
    rec["state"] = "failed".into();
    fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let before = snapshot(&fx.dir);
    let out = run_task(&fx, work.path(), "app/newer", &[], "touch ran");
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(one_line_error(&out).contains("newer than this initguard"));
    assert_eq!(snapshot(&fx.dir), before);
    assert!(!work.path().join("ran").exists());
    unreadable_for_status_and_history(&fx, work.path(), "app/newer", "newer");
    // Never overwritten, not even by reset (which takes the lease to look: its lock file moves on).
    let rec_before = fs::read(&path).unwrap();
    let reset = cmd(&fx, work.path())
        .args(["reset", "app/newer"])
        .output()
        .unwrap();
    assert_eq!(code(&reset), 65, "{}", stderr(&reset));
    assert!(
        one_line_error(&reset).contains("newer"),
        "{}",
        stderr(&reset)
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        rec_before,
        "reset left it as it was"
    );
}

/// `status` (all records, and KEY's) and `history KEY` exit 65 over a record they cannot read,
/// with one line on stderr saying why.
fn unreadable_for_status_and_history(fx: &FileFixture, work: &Path, key: &str, why: &str) {
    for args in [
        &["status"][..],
        &["status", key],
        &["status", "--json"],
        &["history", key],
        &["history", key, "--json"],
    ] {
        let out = cmd(fx, work).args(args).output().unwrap();
        assert_eq!(code(&out), 65, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).lines().any(|l| l.contains(why)),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn unwritable_state_dir_exits_78() {
    if nix::unistd::geteuid().is_root() {
        // root ignores directory permissions; use a path under a regular file instead.
        let work = tempfile::tempdir().unwrap();
        fs::write(work.path().join("file"), "").unwrap();
        let out = std::process::Command::new(bin())
            .current_dir(work.path())
            .args([
                "--store",
                "file:file/state",
                "run",
                "--key",
                "k",
                "--",
                "touch",
                "ran",
            ])
            .output()
            .unwrap();
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(one_line_error(&out).contains("state directory"));
        assert!(!work.path().join("ran").exists());
        return;
    }
    let fx = FileFixture::new();
    fs::create_dir_all(&fx.dir).unwrap();
    fs::set_permissions(&fx.dir, fs::Permissions::from_mode(0o555)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = run_task(&fx, work.path(), "k", &[], "touch ran");
    fs::set_permissions(&fx.dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(!work.path().join("ran").exists());
}

#[test]
fn command_not_found_exits_127_and_records_nothing() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let out = cmd(&fx, work.path())
        .args(["run", "--key", "nf", "--", "/no/such/command-xyz"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 127, "{}", stderr(&out));
    assert!(one_line_error(&out).contains("command not found"));
    assert_eq!(
        status_json(&fx, work.path(), "nf"),
        serde_json::json!([]),
        "nothing recorded"
    );
}

#[test]
fn not_executable_exits_126() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("script.sh");
    fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let out = cmd(&fx, work.path())
        .args(["run", "--key", "nx", "--"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 126, "{}", stderr(&out));
    assert!(one_line_error(&out).contains("not executable"));
}

#[test]
fn the_child_inherits_no_lock_descriptor() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let fds = work.path().join("fds");
    let out = run_task(
        &fx,
        work.path(),
        "fds",
        &[],
        &format!("ls -l /proc/$$/fd > {}", fds.display()),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let listing = fs::read_to_string(&fds).unwrap();
    // `N -> TARGET` per open descriptor. The listing must show stdin, stdout and stderr, or
    // it is not a listing of the child's descriptors and the check below would prove nothing.
    let open: Vec<(u32, &str)> = listing
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(left, target)| Some((left.rsplit(' ').next()?.parse().ok()?, target)))
        .collect();
    for fd in 0..3 {
        assert!(
            open.iter().any(|(n, _)| *n == fd),
            "fd {fd} missing: {listing}"
        );
    }
    let state = fx.dir.canonicalize().unwrap();
    for (fd, target) in &open {
        assert!(
            !target.ends_with(".lock") && !Path::new(target).starts_with(&state),
            "fd {fd} into the state dir leaked into the child ({target}): {listing}"
        );
    }
}

/// A command that ignores SIGTERM is killed (SIGKILL) `--grace` after it: 500 ms, or at once for
/// `--grace 0` (not after the default 10 s).
#[test]
fn a_child_ignoring_sigterm_is_killed_after_grace() {
    // Each bound is well short of the 30 s the command would sleep if nobody killed it; the one
    // for 0 is half the default grace, so a grace that was not 0 fails it.
    for (key, grace, bound) in [("stubborn", "500ms", 20), ("stubborn0", "0", 5)] {
        let fx = FileFixture::new();
        let work = tempfile::tempdir().unwrap();
        let started = work.path().join("started");
        let child = spawn_task(
            &fx,
            work.path(),
            key,
            &["--grace", grace],
            &format!("trap '' TERM; touch {}; sleep 30", started.display()),
        );
        wait_for("start", std::time::Duration::from_secs(10), || {
            started.exists()
        });
        let begun = std::time::Instant::now();
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        let out = child.wait_with_output().unwrap();
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(bound),
            "--grace {grace}: {:?}",
            begun.elapsed()
        );
        assert_eq!(code(&out), 128 + 15, "{}", stderr(&out));
        let rec = record(&fx, work.path(), key);
        assert_eq!(rec["state"], "interrupted");
        assert_eq!(rec["exit"], serde_json::json!({"signal": 9}));
    }
}

/// `--backoff 0`: a failed attempt is retried at once (the default 1 s backoff would pause at
/// least 0.5 s, then 1 s, before the third attempt).
#[test]
fn backoff_0_retries_at_once() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!(
        "echo try >> {c}; [ $(wc -l < {c}) -ge 3 ]",
        c = count.display()
    );
    let begun = std::time::Instant::now();
    let out = run_task(
        &fx,
        work.path(),
        "quick",
        &["--retries", "2", "--backoff", "0"],
        &script,
    );
    let took = begun.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&count).len(), 3, "three attempts");
    assert!(took < std::time::Duration::from_millis(1200), "{took:?}");
}

#[test]
fn ten_mib_of_output_passes_through_intact_while_the_tail_is_bounded() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut bytes = Vec::with_capacity(10 << 20);
    let mut x: u32 = 12345;
    while bytes.len() < 10 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bytes.push((x >> 16) as u8);
    }
    fs::write(&data, &bytes).unwrap();
    // initguard's own log lines off, so that its stderr is the command's alone.
    let out = task_cmd(
        &fx,
        work.path(),
        "big",
        &["--tail-bytes", "1000"],
        &format!("cat {0}; cat {0} >&2", data.display()),
    )
    .env("INITGUARD_LOG", "off")
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout.len(), bytes.len());
    assert_eq!(
        Sha256::digest(&out.stdout),
        Sha256::digest(&bytes),
        "stdout intact"
    );
    assert_eq!(out.stderr.len(), bytes.len());
    assert_eq!(
        Sha256::digest(&out.stderr),
        Sha256::digest(&bytes),
        "stderr intact"
    );
    let rec = record(&fx, work.path(), "big");
    let tail = rec["tail"].as_str().unwrap();
    assert!(tail.len() <= 1000, "tail bounded: {}", tail.len());
    assert!(!tail.is_empty());
}

/// `--no-capture`: the command writes to initguard's own stdout and stderr (the same open files,
/// not a pipe through initguard), and the record keeps no tail.
#[test]
fn no_capture_hands_the_command_initguards_own_output() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (work.path().join("out"), work.path().join("err"));
    let out = fs::File::create(&out_path).unwrap();
    let err = fs::File::create(&err_path).unwrap();
    let status = task_cmd(
        &fx,
        work.path(),
        "direct",
        &["--no-capture"],
        "echo \"stdout is $(readlink /proc/$$/fd/1)\"; echo \"stderr is $(readlink /proc/$$/fd/2)\" >&2",
    )
    .stdout(out)
    .stderr(err)
    .status()
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let said_out = fs::read_to_string(&out_path).unwrap();
    let said_err = fs::read_to_string(&err_path).unwrap();
    assert!(
        said_out.contains(&format!("stdout is {}", out_path.display())),
        "{said_out}"
    );
    assert!(
        said_err.contains(&format!("stderr is {}", err_path.display())),
        "{said_err}"
    );
    let rec = record(&fx, work.path(), "direct");
    assert_eq!(rec["state"], "succeeded");
    assert!(
        rec["tail"].as_str().unwrap_or_default().is_empty(),
        "no tail kept: {rec}"
    );
}

/// A command killed by signal N (here by itself, SIGSEGV and SIGKILL) makes initguard exit
/// 128+N, and the record says which signal ended it.
#[test]
fn a_command_killed_by_a_signal_exits_128_plus_its_number() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    for (key, sig) in [("segv", 11), ("killed", 9)] {
        let out = run_task(&fx, work.path(), key, &[], &format!("kill -{sig} $$"));
        assert_eq!(code(&out), 128 + sig, "{key}: {}", stderr(&out));
        let rec = record(&fx, work.path(), key);
        assert_eq!(rec["state"], "failed", "{rec}");
        assert_eq!(rec["exit"], serde_json::json!({ "signal": sig }), "{rec}");
    }
}

#[test]
fn timeout_exits_124() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let out = run_task(
        &fx,
        work.path(),
        "slow",
        &["--timeout", "300ms", "--grace", "1s"],
        "sleep 30",
    );
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    let rec = record(&fx, work.path(), "slow");
    assert_eq!(rec["exit"], "timed_out");
}

#[test]
fn exit_code_passes_through() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    assert_eq!(code(&run_task(&fx, work.path(), "seven", &[], "exit 7")), 7);
    assert_eq!(
        code(&run_task(&fx, work.path(), "sig", &[], "kill -USR1 $$")),
        128 + 10
    );
}

#[test]
fn options_are_read_from_initguard_environment_and_flags_win() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    // --key has no variable (INITGUARD_KEY is what the command is given, never configuration);
    // INITGUARD_VERSION stands for the options that do.
    let out = cmd(&fx, work.path())
        .env("INITGUARD_VERSION", "v1")
        .args([
            "run",
            "--key",
            "from/env",
            "--",
            "sh",
            "-c",
            &format!("echo $INITGUARD_KEY >> {}", marker.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&marker), vec!["from/env"]);
    // --version from the flag overrides INITGUARD_VERSION: a new fingerprint, so it runs again.
    let out = cmd(&fx, work.path())
        .env("INITGUARD_VERSION", "v1")
        .args([
            "run",
            "--key",
            "from/env",
            "--version",
            "v2",
            "--",
            "sh",
            "-c",
            &format!("echo $INITGUARD_KEY >> {}", marker.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert_eq!(lines(&marker).len(), 2);
}

/// `--scope pod` runs once per `POD_UID` and `--scope node` once per `NODE_NAME`; without its
/// variable (or with it empty) either is a configuration error, 78, that runs nothing.
#[test]
fn pod_and_node_scopes_run_once_per_pod_uid_and_per_node_name() {
    for (scope, var) in [("pod", "POD_UID"), ("node", "NODE_NAME")] {
        let fx = FileFixture::new();
        let work = tempfile::tempdir().unwrap();
        let marker = work.path().join("ran");
        let script = format!("echo ${var} >> {}", marker.display());
        let run = |value: Option<&str>| {
            let mut c = cmd(&fx, work.path());
            if let Some(v) = value {
                c.env(var, v);
            }
            c.args([
                "run", "--key", "per", "--scope", scope, "--", "sh", "-c", &script,
            ])
            .output()
            .unwrap()
        };
        for value in ["a-1", "a-1", "b-2", "a-1"] {
            let out = run(Some(value));
            assert_eq!(code(&out), 0, "{scope} {value}: {}", stderr(&out));
        }
        assert_eq!(
            lines(&marker),
            vec!["a-1", "b-2"],
            "{scope}: once per {var}"
        );
        for value in [None, Some(""), Some("  ")] {
            let out = run(value);
            assert_eq!(
                code(&out),
                78,
                "{scope} scope with {var}={value:?} is a configuration error"
            );
            assert!(one_line_error(&out).contains(var), "{}", stderr(&out));
        }
        assert_eq!(
            lines(&marker).len(),
            2,
            "{scope}: nothing ran without {var}"
        );
    }
}

#[test]
fn waiter_logs_who_it_waits_for_and_wait_timeout_exits_75() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let mut holder = spawn_task(
        &fx,
        work.path(),
        "busy",
        &[],
        &format!("touch {}; sleep 30", started.display()),
    );
    wait_for(
        "holder to start",
        std::time::Duration::from_secs(10),
        || started.exists(),
    );
    // Past 5 s, so that the waiter says it again; `wait` beside it does the same.
    let waiter = spawn_task(
        &fx,
        work.path(),
        "busy",
        &["--wait-timeout", "6s"],
        "touch ran",
    );
    let watcher = cmd(&fx, work.path())
        .args([
            "wait",
            "--key",
            "busy",
            "--wait-timeout",
            "6s",
            "--",
            "sh",
            "-c",
        ])
        .arg("touch ran")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .matches("waiting for busy held by host")
            .count()
            >= 2,
        "said at once and again 5 s later: {}",
        stderr(&out)
    );
    assert!(one_line_error(&out).contains("gave up waiting"));
    let out = watcher.wait_with_output().unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let told = stderr(&out)
        .lines()
        .filter(|l| l.contains("running") && l.contains("by host") && l.contains("since"))
        .count();
    assert!(
        told >= 2,
        "wait says who runs it since when, at once and 5 s later: {}",
        stderr(&out)
    );
    assert!(!work.path().join("ran").exists());
    signal(&holder, nix::sys::signal::Signal::SIGKILL);
    let _ = holder.wait();
}

#[test]
fn release_reports_a_free_lease_and_a_held_one() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let out = cmd(&fx, work.path())
        .args(["release", "free"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert!(
        stderr(&out).contains("nothing to release"),
        "{}",
        stderr(&out)
    );
    let started = work.path().join("started");
    let mut holder = spawn_task(
        &fx,
        work.path(),
        "held",
        &[],
        &format!("touch {}; sleep 30", started.display()),
    );
    wait_for(
        "holder to start",
        std::time::Duration::from_secs(10),
        || started.exists(),
    );
    let out = cmd(&fx, work.path())
        .args(["release", "held"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("is held by host"), "{}", stderr(&out));
    signal(&holder, nix::sys::signal::Signal::SIGKILL);
    let _ = holder.wait();
}

#[test]
fn reset_of_an_unknown_key_says_so() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let out = cmd(&fx, work.path())
        .args(["reset", "never/ran"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    assert!(stderr(&out).contains("nothing to reset"));
}

#[test]
fn a_command_exiting_0_after_sigterm_is_recorded_interrupted() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let script = format!(
        "trap 'exit 0' TERM; touch {}; while true; do sleep 0.1; done",
        started.display()
    );
    let child = spawn_task(&fx, work.path(), "clean-exit", &[], &script);
    wait_for("start", std::time::Duration::from_secs(10), || {
        started.exists()
    });
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert_eq!(
        record(&fx, work.path(), "clean-exit")["state"],
        "interrupted"
    );
    // Not skipped next time: the work was cut short.
    let again = run_task(&fx, work.path(), "clean-exit", &[], "touch again");
    assert_eq!(code(&again), 0);
    assert!(work.path().join("again").exists());
}

#[test]
fn a_signal_during_the_retry_backoff_records_interrupted() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let script = format!("echo run >> {}; exit 1", marker.display());
    let child = spawn_task(
        &fx,
        work.path(),
        "backoff",
        &["--retries", "3", "--backoff", "20s"],
        &script,
    );
    wait_for("first attempt", std::time::Duration::from_secs(10), || {
        lines(&marker).len() == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert_eq!(lines(&marker).len(), 1, "no retry after the signal");
    assert_eq!(record(&fx, work.path(), "backoff")["state"], "interrupted");
}

#[test]
fn interruptions_do_not_use_up_max_attempts() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let (marker, hang, started) = (
        work.path().join("ran"),
        work.path().join("hang"),
        work.path().join("started"),
    );
    let args = ["--max-attempts", "2"];
    // One command (one fingerprint): fails at once, or hangs while `hang` exists.
    let script = format!(
        "echo run >> {}; if [ -e {} ]; then touch {}; sleep 30; fi; exit 5",
        marker.display(),
        hang.display(),
        started.display()
    );
    assert_eq!(
        code(&run_task(&fx, work.path(), "evicted", &args, &script)),
        5
    );
    // An eviction: SIGTERM mid-run.
    fs::write(&hang, "").unwrap();
    let child = spawn_task(&fx, work.path(), "evicted", &args, &script);
    wait_for("start", std::time::Duration::from_secs(10), || {
        started.exists()
    });
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait_with_output().unwrap();
    fs::remove_file(&hang).unwrap();
    let rec = record(&fx, work.path(), "evicted");
    assert_eq!(rec["state"], "interrupted");
    assert_eq!(rec["failures"], 1);
    assert_eq!(rec["attempts"], 2);
    // The second real failure is the one that gives up.
    assert_eq!(
        code(&run_task(&fx, work.path(), "evicted", &args, &script)),
        5
    );
    assert_eq!(record(&fx, work.path(), "evicted")["state"], "gave_up");
    assert_eq!(lines(&marker).len(), 3);
}

/// The job announces its pid before the command exits (the command waits for it), so the check
/// does not depend on how fast the job is: the old version slept 2 s and looked for a file the
/// job would touch after 1 s, and passed whenever the job was slower than that.
#[test]
fn background_jobs_of_the_command_do_not_outlive_it() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let pid_file = work.path().join("pid");
    let late = work.path().join("late");
    let out = run_task(
        &fx,
        work.path(),
        "bg",
        &[],
        &format!(
            "sh -c 'echo $$ > {p}.tmp && mv {p}.tmp {p}; sleep 30; touch {late}' & \
             while [ ! -s {p} ]; do sleep 0.01; done; exit 0",
            p = pid_file.display(),
            late = late.display()
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !pid_alive(pid),
        "the background job {pid} outlived the command and initguard"
    );
    assert!(!late.exists());
}

#[test]
fn keys_with_dot_segments_are_listed_and_reset() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        code(&run_task(&fx, work.path(), "app/.seed", &[], "true")),
        0
    );
    assert_eq!(record(&fx, work.path(), "app/.seed")["state"], "succeeded");
    let reset = cmd(&fx, work.path())
        .args(["reset", "app/.seed"])
        .output()
        .unwrap();
    assert_eq!(code(&reset), 0);
    assert_eq!(record(&fx, work.path(), "app/.seed")["state"], "reset");
}

#[test]
fn a_corrupt_record_does_not_hide_the_others_and_reset_reaches_scoped_ones() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    assert_eq!(code(&run_task(&fx, work.path(), "good", &[], "true")), 0);
    let scoped = cmd(&fx, work.path())
        .env("POD_UID", "uid-1")
        .args(["run", "--key", "bad", "--scope", "pod", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&scoped), 0, "{}", stderr(&scoped));
    fs::write(fx.dir.join("bad@pod=uid-1.json"), b"{garbage").unwrap();
    let out = cmd(&fx, work.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        65,
        "unreadable records are not hidden: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("bad") && stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 1);
    assert_eq!(shown[0]["key"], "good");
    // Only "good": nothing unreadable among what was asked for.
    let out = cmd(&fx, work.path())
        .args(["status", "good"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let reset = cmd(&fx, work.path())
        .args(["reset", "bad"])
        .output()
        .unwrap();
    assert_eq!(code(&reset), 0, "{}", stderr(&reset));
    let rec = record(&fx, work.path(), "bad");
    assert_eq!(rec["state"], "reset");
    assert_eq!(rec["instance"], "uid-1");
}

#[test]
fn done_if_without_a_shell_fails_closed() {
    let root = nix::unistd::geteuid().is_root();
    let unshare = std::path::Path::new("/usr/bin/unshare").exists();
    if !support::require("root and unshare (to hide /bin/sh)", root && unshare) {
        return;
    }
    // In a mount namespace of its own, as in a distroless image: /bin/sh not a program (126), or
    // not there at all, its directory an empty tmpfs (127).
    for (hide, exit) in [
        ("mount --bind /dev/null /bin/sh", 126),
        (
            "mount -t tmpfs none \"$(dirname \"$(readlink -f /bin/sh)\")\"",
            127,
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let marker = work.path().join("ran");
        // The command itself stays reachable, outside the hidden directory.
        let touch = work.path().join("touch");
        fs::copy("/usr/bin/touch", &touch).unwrap();
        let script = format!(
            "{hide} && exec {bin} run --store file:{dir} --key noshell/k \
             --done-if true -- {touch} {marker}",
            bin = support::bin().display(),
            dir = work.path().join("state").display(),
            touch = touch.display(),
            marker = marker.display()
        );
        let out = std::process::Command::new("/usr/bin/unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c", &script])
            .env_remove("INITGUARD_STORE")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), exit, "{hide}: {err}");
        assert!(
            err.lines()
                .last()
                .unwrap_or("")
                .contains("--done-if could not be checked"),
            "{hide}: {err}"
        );
        assert!(
            !marker.exists(),
            "{hide}: the command must not run when the check cannot"
        );
    }
}

/// The golden tree of `fingerprint::tests` (src/fingerprint.rs), built again here because the
/// unit tests are not visible to integration tests: a plain file, an executable, a nested and an
/// empty directory, and a ConfigMap-style volume whose `..` internals are skipped.
fn fingerprint_golden_tree(parent: &Path) {
    let root = parent.join("migrations");
    let files: [(&str, &[u8], u32); 4] = [
        ("001_init.sql", b"CREATE TABLE t (id int);\n", 0o644),
        ("run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        (
            "nested/deeper/002_more.sql",
            b"ALTER TABLE t ADD x int;",
            0o644,
        ),
        ("..2024_01_01/app.conf", b"mode=fast\n", 0o644),
    ];
    for (name, content, mode) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir(root.join("empty")).unwrap();
    std::os::unix::fs::symlink("..2024_01_01", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.conf", root.join("app.conf")).unwrap();
}

/// Pins the fingerprint the CLI computes, with a `--input-env` variable that is set (the unit
/// golden can only pin an unset one). If this fails, the change re-runs every task of every fleet
/// on upgrade: keep the encoding, or bump its tag deliberately. Never paste the new value in.
#[test]
fn fingerprint_encoding_is_pinned() {
    let work = tempfile::tempdir().unwrap();
    fingerprint_golden_tree(work.path());
    // A clean environment: no INITGUARD_* variable from the caller may add to the fingerprint.
    let out = std::process::Command::new(bin())
        .current_dir(work.path())
        .env_clear()
        .env("INITGUARD_GOLDEN_ENV", "blue")
        .args(["run", "--store", "file:state", "--key", "golden/fp"])
        .args([
            "--input",
            "migrations",
            "--input-env",
            "INITGUARD_GOLDEN_ENV",
        ])
        .args(["--version", "v1.2.3", "--print-fingerprint", "--"])
        .args(["./migrate.sh", "--db", "main db"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    // The env component's own digest is not asserted from the output: whether it is shown at
    // all is a display choice (an unsalted digest of a short secret can be reversed). It is
    // pinned through the total below, and by the unit golden's component digests.
    let env_line = text.lines().find(|l| l.starts_with("env")).unwrap();
    assert!(env_line.ends_with("INITGUARD_GOLDEN_ENV (set)"), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("fingerprint sha256:2e4b645e0ac6be704f8c3243fa201f5b826a2d6b3e6d761a392d56b6a81079af"),
        "{text}"
    );
    assert!(
        !text.contains("blue"),
        "an --input-env value is never shown"
    );
    assert!(
        !work.path().join("state").exists(),
        "printing touches no store"
    );
}

/// What `run` does with no flags and no store settings: the store is `file:.initguard` in the
/// working directory, the tail kept is 4096 bytes, the history keeps 20 runs, and failures never
/// end in `gave_up` (`--max-attempts 0`).
#[test]
fn run_defaults_store_tail_history_and_no_giving_up() {
    let work = tempfile::tempdir().unwrap();
    let run = |script: &str| {
        std::process::Command::new(bin())
            .current_dir(work.path())
            .env_remove("INITGUARD_STORE")
            .env_remove("INITGUARD_TAIL_BYTES")
            .env_remove("INITGUARD_HISTORY")
            .env_remove("INITGUARD_MAX_ATTEMPTS")
            .env_remove("INITGUARD_KEY")
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .env("INITGUARD_LOG", "warn")
            .args(["run", "--key", "app/defaults", "--", "sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // 9000 bytes of output, then failure, 22 times over.
    let script = "head -c 9000 /dev/zero | tr '\\0' x; exit 3";
    for _ in 0..22 {
        assert_eq!(code(&run(script)), 3);
    }
    let path = work.path().join(".initguard/app+defaults.json");
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("the record under .initguard")).unwrap();
    assert_eq!(rec["state"], "failed", "never gave up: {}", rec["state"]);
    assert_eq!(rec["failures"], 22);
    assert_eq!(rec["history"].as_array().map(Vec::len), Some(20));
    assert_eq!(rec["tail"].as_str().map(str::len), Some(4096));
}

/// `wait` with the fingerprint options of the `run` it waits for (`--input`, `--input-env`,
/// `--version`, the command) returns 0 for that run's success, and keeps waiting (75 at its
/// timeout) when any one of them differs: changed inputs are another success. It writes nothing.
#[test]
fn wait_with_the_runs_fingerprint_options_finds_only_that_success() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let inputs = work.path().join("migrations");
    fs::create_dir(&inputs).unwrap();
    fs::write(inputs.join("1.sql"), "select 1;\n").unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}", count.display());
    let options = [
        "--input",
        "migrations",
        "--input-env",
        "APP_RELEASE",
        "--version",
        "7",
    ];
    let out = task_cmd(&fx, work.path(), "fp", &options, &script)
        .env("APP_RELEASE", "r1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let done = record(&fx, work.path(), "fp");
    let wait = |options: &[&str], release: &str| {
        cmd(&fx, work.path())
            .args(["wait", "--key", "fp", "--wait-timeout", "1s"])
            .args(options)
            .args(["--", "sh", "-c", &script])
            .env("APP_RELEASE", release)
            .output()
            .unwrap()
    };
    let out = wait(&options, "r1");
    assert_eq!(code(&out), 0, "the same options: {}", stderr(&out));
    let other_version = [
        "--input",
        "migrations",
        "--input-env",
        "APP_RELEASE",
        "--version",
        "8",
    ];
    let no_inputs = ["--input-env", "APP_RELEASE", "--version", "7"];
    for (what, options, release) in [
        ("another --version", &other_version[..], "r1"),
        ("another --input-env value", &options[..], "r2"),
        ("without the --input", &no_inputs[..], "r1"),
    ] {
        let out = wait(options, release);
        assert_eq!(code(&out), 75, "{what}: {}", stderr(&out));
        assert!(
            one_line_error(&out).contains("gave up waiting"),
            "{what}: {}",
            stderr(&out)
        );
    }
    fs::write(inputs.join("2.sql"), "select 2;\n").unwrap();
    let out = wait(&options, "r1");
    assert_eq!(code(&out), 75, "a changed input: {}", stderr(&out));
    assert_eq!(lines(&count).len(), 1, "only the run ran it");
    assert_eq!(
        record(&fx, work.path(), "fp"),
        done,
        "the waiters wrote nothing"
    );
}

/// Lists in variables are comma-separated: `INITGUARD_INPUT=a,b` and `INITGUARD_INPUT_ENV=X,Y`
/// are the same fingerprint as the flags given twice, and as `--input a,b` (a comma splits on
/// the command line too); a flag replaces its variable instead of adding to it.
#[test]
fn comma_separated_list_variables_are_the_repeated_flags() {
    let work = tempfile::tempdir().unwrap();
    for (name, content) in [("a", "1"), ("b", "2")] {
        fs::write(work.path().join(name), content).unwrap();
    }
    let fingerprint = |vars: &[(&str, &str)], flags: &[&str]| {
        let mut c = cmd(&FileFixture::new(), work.path());
        c.env_remove("INITGUARD_INPUT")
            .env_remove("INITGUARD_INPUT_ENV")
            .env("X", "x")
            .env("Y", "y");
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c
            .args(["run", "--key", "lists"])
            .args(flags)
            .args(["--print-fingerprint", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().last().unwrap_or_default().to_string()
    };
    let flags = fingerprint(
        &[],
        &[
            "--input",
            "a",
            "--input",
            "b",
            "--input-env",
            "X",
            "--input-env",
            "Y",
        ],
    );
    assert!(flags.starts_with("fingerprint sha256:"), "{flags}");
    let vars = fingerprint(
        &[("INITGUARD_INPUT", "a,b"), ("INITGUARD_INPUT_ENV", "X,Y")],
        &[],
    );
    assert_eq!(vars, flags);
    let commas = fingerprint(&[], &["--input", "a,b", "--input-env", "X,Y"]);
    assert_eq!(commas, flags);
    let only_a = fingerprint(&[], &["--input", "a", "--input-env", "X,Y"]);
    assert_ne!(only_a, flags);
    let flag_wins = fingerprint(
        &[("INITGUARD_INPUT", "b")],
        &["--input", "a", "--input-env", "X,Y"],
    );
    assert_eq!(flag_wins, only_a, "the flag replaces the variable");
}

/// A holder of `key` whose command has started and waits for the file `go` (returned with it)
/// to exist, then runs `then`.
fn gated_holder(
    fx: &FileFixture,
    work: &Path,
    key: &str,
    extra: &[&str],
    then: &str,
) -> (std::process::Child, PathBuf) {
    let go = work.join("go");
    let rest = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; {then}",
        go.display()
    );
    let holder = spawn_started(fx, work, key, extra, &work.join("started"), &rest);
    (holder, go)
}

/// The file store's lock belongs to the live process: a paused (SIGSTOP) holder keeps it past
/// any `--lock-ttl`, the waiter runs nothing and exits 75 at its `--wait-timeout`, and the holder,
/// woken, finishes its run (exit 0): one execution.
#[test]
fn a_paused_holder_keeps_the_file_lock_and_waiters_time_out() {
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let (holder, go) = gated_holder(
        &fx,
        work.path(),
        "paused",
        &["--lock-ttl", "1s"],
        &format!("echo holder >> {}", marker.display()),
    );
    signal(&holder, nix::sys::signal::Signal::SIGSTOP);
    let out = run_task(
        &fx,
        work.path(),
        "paused",
        &["--lock-ttl", "1s", "--wait-timeout", "3s"],
        &format!("echo waiter >> {}", marker.display()),
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        one_line_error(&out).contains("gave up waiting"),
        "{}",
        stderr(&out)
    );
    fs::write(&go, "").unwrap();
    signal(&holder, nix::sys::signal::Signal::SIGCONT);
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "the woken holder finishes: {}", stderr(&out));
    assert_eq!(lines(&marker), vec!["holder"]);
    assert_eq!(record(&fx, work.path(), "paused")["state"], "succeeded");
}

/// While waiting for the lease behind a live holder, SIGTERM, SIGINT, SIGHUP and SIGQUIT end a
/// waiting `run` (and a `wait`) at once with 128+N and one line saying so; they run nothing, and
/// the holder's run goes on to succeed.
#[test]
fn a_signal_ends_a_waiter_behind_a_live_holder() {
    use nix::sys::signal::Signal;
    let fx = FileFixture::new();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let (holder, go) = gated_holder(&fx, work.path(), "held", &[], "true");
    let script = format!("echo waiter >> {}", marker.display());
    let mut waiters = Vec::new();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        let run = spawn_task(
            &fx,
            work.path(),
            "held",
            &["--wait-timeout", "60s"],
            &script,
        );
        let wait = cmd(&fx, work.path())
            .args(["wait", "--key", "held", "--any", "--wait-timeout", "60s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        waiters.push((sig, "run", run));
        waiters.push((sig, "wait", wait));
    }
    // Both kinds have logged that they wait for the holder.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sent = std::time::Instant::now();
    for (sig, _, child) in &waiters {
        signal(child, *sig);
    }
    for (sig, what, child) in waiters {
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "{what} exited {} {} ms after {sig}",
            code(&out),
            sent.elapsed().as_millis()
        );
        assert_eq!(
            code(&out),
            128 + sig as i32,
            "{what} {sig}: {}",
            stderr(&out)
        );
        assert!(
            one_line_error(&out).contains(&format!("stopped by signal {}", sig as i32)),
            "{what} {sig}: {}",
            stderr(&out)
        );
    }
    assert!(!marker.exists(), "a waiter ran the command");
    fs::write(&go, "").unwrap();
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(record(&fx, work.path(), "held")["state"], "succeeded");
}
