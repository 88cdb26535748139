//! `initguard steps` end to end, with the built binary: script steps on the file store (their
//! history in the set's record), validation and its tables, status, dry runs, repair, interrupted
//! steps, bad input. The PostgreSQL target's runs are in `steps_pg_cli.rs`.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::{bin, code, lines, stderr, wait_for};

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("migrations");
        fs::create_dir(&dir).unwrap();
        Fx {
            state: root.join("state"),
            log: root.join("log"),
            dir,
            root,
            _tmp: tmp,
        }
    }

    fn ig(&self) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(&self.root)
            .env("INITGUARD_STORE", format!("file:{}", self.state.display()))
            .env("INITGUARD_LOG", "info")
            .env("LOG", &self.log)
            .env_remove("INITGUARD_STEPS_TARGET")
            .env_remove("INITGUARD_KEY")
            .env_remove("INITGUARD_FENCING_TOKEN")
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .stdin(Stdio::null());
        c
    }

    fn steps(&self, sub: &str, extra: &[&str]) -> Output {
        self.ig()
            .args(["steps", sub])
            .arg(&self.dir)
            .args(extra)
            .output()
            .unwrap()
    }

    /// A script step that logs `<version> <description> <previous> <token>` and runs `body`.
    fn script(&self, name: &str, body: &str) {
        let path = self.dir.join(name);
        fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"$INITGUARD_STEP_VERSION $INITGUARD_STEP_DESCRIPTION $INITGUARD_PREVIOUS\" >> \"$LOG\"\n{body}\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log(&self) -> Vec<String> {
        lines(&self.log)
    }

    fn status_json(&self) -> serde_json::Value {
        let out = self.steps("status", &["--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn spawn(&self, extra: &[&str]) -> Child {
        self.ig()
            .args(["steps", "apply"])
            .arg(&self.dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// initguard's own last line (its error), among the log lines before it.
fn last_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_string()
}

#[test]
fn script_steps_apply_once_in_order_and_a_second_apply_skips() {
    let fx = Fx::new();
    fx.script("V2__second.sh", "");
    fx.script("V1__first.sh", "");
    fx.script("V10__tenth.sh", "");
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.log(),
        ["1 first none", "2 second none", "10 tenth none"],
        "version order, numerically"
    );
    assert!(
        stderr(&out).contains("applied 3 steps of steps-migrations"),
        "{}",
        stderr(&out)
    );
    let again = fx.steps("apply", &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("skipped"), "{}", stderr(&again));
    assert_eq!(fx.log().len(), 3, "nothing ran again");
    // One more step: only it runs.
    fx.script("V11__eleventh.sh", "");
    let more = fx.steps("apply", &[]);
    assert_eq!(code(&more), 0, "{}", stderr(&more));
    assert_eq!(fx.log().len(), 4);
    assert_eq!(fx.log()[3], "11 eleventh none");
    // An executable without an extension is a script step too.
    fx.script("V12__twelfth", "");
    let more = fx.steps("apply", &[]);
    assert_eq!(code(&more), 0, "{}", stderr(&more));
    assert_eq!(fx.log().len(), 5);
    assert_eq!(fx.log()[4], "12 twelfth none");
    // The store options come before `steps`, between `steps` and `status`, and after `status`.
    let store = format!("file:{}", fx.state.display());
    for args in [
        ["--store", &store, "steps", "status"],
        ["steps", "--store", &store, "status"],
        ["steps", "status", "--store", &store],
    ] {
        let out = fx
            .ig()
            .env_remove("INITGUARD_STORE")
            .args(args)
            .arg(&fx.dir)
            .arg("--json")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["counts"]["applied"], 5, "{args:?}: {json}");
    }
}

#[test]
fn script_steps_get_their_variables_and_not_the_target() {
    let fx = Fx::new();
    // The store's settings and the (empty) target, each given to initguard (INITGUARD_STORE by
    // `ig`). The target's password file, which needs a target, is steps_pg_cli.rs's.
    let settings = [
        "INITGUARD_STORE",
        "INITGUARD_STORE_PASSWORD_FILE",
        "INITGUARD_STEPS_TARGET",
    ];
    let seen = support::presence_words(&settings);
    fx.script(
        "V1__env.sh",
        &format!("echo \"token=$INITGUARD_FENCING_TOKEN key=$INITGUARD_KEY{seen}\" >> \"$LOG\""),
    );
    let password = fx.root.join("password");
    fs::write(&password, "secret\n").unwrap();
    let out = fx
        .ig()
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .env("INITGUARD_STEPS_TARGET", "")
        .env("INITGUARD_STORE_PASSWORD_FILE", &password)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let log = fx.log();
    assert_eq!(log[0], "1 env none");
    assert!(log[1].starts_with("token="), "{log:?}");
    assert!(log[1].contains(" key=steps-migrations "), "{log:?}");
    let unset = support::unset_line(&settings);
    assert!(
        log[1].ends_with(&unset),
        "none of {settings:?} reached the step: {log:?}"
    );
}

#[test]
fn script_output_passes_through_and_its_tail_is_recorded() {
    let fx = Fx::new();
    fx.script(
        "V1__talk.sh",
        "echo hello-from-the-step; echo to-stderr >&2",
    );
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello-from-the-step\n");
    assert!(stderr(&out).contains("to-stderr"), "{}", stderr(&out));
    let rec = fx.ig().args(["status", "--json"]).output().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    let tail = rec[0]["tail"].as_str().unwrap_or_default();
    assert!(tail.contains("hello-from-the-step"), "{rec}");
}

#[test]
fn a_failed_script_step_exits_with_its_code_and_the_steps_before_it_stay_applied() {
    let fx = Fx::new();
    fx.script("V1__ok.sh", "");
    fx.script("V2__broken.sh", "[ -e \"$LOG.fixed\" ] || exit 3");
    fx.script("V3__later.sh", "");
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.starts_with(
            "initguard: steps-migrations: step 2 (V2__broken.sh) failed: exit status 3"
        ),
        "{line}"
    );
    assert_eq!(fx.log(), ["1 ok none", "2 broken none"]);
    let st = fx.status_json();
    let states: Vec<&str> = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied", "failed", "pending"], "{st}");
    // Fixed outside the file: the failed step runs again, told so, then the next one.
    fs::write(fx.log.with_extension("fixed"), "").unwrap();
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.log(),
        [
            "1 ok none",
            "2 broken none",
            "2 broken failed",
            "3 later none"
        ]
    );
}

#[test]
fn sql_steps_without_a_target_database_exit_78_and_touch_nothing() {
    let fx = Fx::new();
    fx.script("V1__script.sh", "");
    fs::write(fx.dir.join("V2__table.sql"), "CREATE TABLE t (id int);\n").unwrap();
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(last_line(&out).contains("--target"), "{}", stderr(&out));
    assert!(fx.log().is_empty(), "no step ran");
    assert!(!fx.state.exists(), "the store was not even opened");
}

#[test]
fn an_interrupted_script_step_runs_again_told_it_was_interrupted() {
    let fx = Fx::new();
    fx.script("V1__first.sh", "");
    // Slow while the marker exists (its pid in $LOG.pid): killed there, then quick.
    fx.script(
        "V2__slow.sh",
        "[ -e \"$LOG.slow\" ] && { echo $$ > \"$LOG.pid\"; exec sleep 60; }\necho done >> \"$LOG\"",
    );
    fs::write(fx.log.with_extension("slow"), "").unwrap();
    let mut child = fx.spawn(&[]);
    let step = support::pid_written_to(
        &fx.log.with_extension("pid"),
        "the slow step to start",
        Duration::from_secs(20),
    );
    child.kill().unwrap(); // SIGKILL: no chance to record anything
    child.wait().unwrap();
    fs::remove_file(fx.log.with_extension("slow")).unwrap();
    // The supervisor kills the step with initguard.
    wait_for(
        "the step to die with initguard",
        Duration::from_secs(10),
        || !support::pid_alive(step),
    );
    let st = fx.status_json();
    assert_eq!(st["steps"][1]["state"], "running", "{st}");

    // --on-interrupted fail: stop, say what to do.
    let out = fx.steps("apply", &["--on-interrupted", "fail"]);
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(line.contains("was interrupted"), "{line}");
    assert!(line.contains("initguard steps repair"), "{line}");
    assert!(line.contains("--on-interrupted rerun"), "{line}");
    assert_eq!(fx.log().len(), 2, "nothing ran");

    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.log(),
        ["1 first none", "2 slow none", "2 slow interrupted", "done"],
        "the first step not again, the interrupted one once more"
    );
}

#[test]
fn repair_clears_an_interrupted_step_so_that_it_runs_afresh() {
    let fx = Fx::new();
    fx.script(
        "V1__slow.sh",
        "[ -e \"$LOG.slow\" ] && sleep 60\necho done >> \"$LOG\"",
    );
    fs::write(fx.log.with_extension("slow"), "").unwrap();
    let mut child = fx.spawn(&[]);
    wait_for("the step to start", Duration::from_secs(20), || {
        fx.log().len() == 1
    });
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_file(fx.log.with_extension("slow")).unwrap();
    let out = fx.steps("repair", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("cleared 1"), "{}", stdout(&out));
    let out = fx.steps("apply", &["--on-interrupted", "fail"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fx.log(), ["1 slow none", "1 slow none", "done"]);
}

#[test]
fn concurrent_applies_run_each_step_once() {
    let fx = Fx::new();
    for v in 1..=3 {
        fx.script(&format!("V{v}__s{v}.sh"), "sleep 0.2");
    }
    let children: Vec<Child> = (0..4).map(|_| fx.spawn(&[])).collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(fx.log(), ["1 s1 none", "2 s2 none", "3 s3 none"]);
}

#[test]
fn status_shows_a_table_and_json() {
    let fx = Fx::new();
    fx.script("V1__create_things.sh", "");
    fx.script("R__refresh_views.sh", "");
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.script("V2__pending_one.sh", "");
    let out = fx.steps("status", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows.len() >= 4, "{table}");
    assert!(
        rows.iter()
            .any(|r| r.contains("create things") && r.contains("applied")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("pending one") && r.contains("pending")),
        "{table}"
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("refresh views") && r.contains("applied")),
        "{table}"
    );
    let json = fx.status_json();
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{json}");
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0), "{json}");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let fx = Fx::new();
    fx.script("V1__one.sh", "");
    fx.script("V2__two.sh", "");
    let out = fx.steps("apply", &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = stdout(&out);
    let one = plan.find("V1__one.sh").expect(&plan);
    let two = plan.find("V2__two.sh").expect(&plan);
    assert!(one < two, "{plan}");
    assert!(fx.log().is_empty(), "nothing ran");
    let records = fs::read_dir(&fx.state).map(|d| d.count()).unwrap_or(0);
    assert_eq!(records, 0, "no record, no lock file");
}

#[test]
fn validation_refuses_changed_missing_and_out_of_order_steps_unless_allowed() {
    let fx = Fx::new();
    fx.script("V1__one.sh", "");
    fx.script("V3__three.sh", "");
    assert_eq!(code(&fx.steps("apply", &[])), 0);
    assert_eq!(code(&fx.steps("validate", &[])), 0);

    // Changed.
    fx.script("V1__one.sh", "# edited");
    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).contains("changed"), "{}", stdout(&out));
    assert!(stdout(&out).contains("V1__one.sh"), "{}", stdout(&out));
    // Allowed: a warning (the same row), not an error.
    let out = fx.steps("validate", &["--allow-changed"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("changed") && stdout(&out).contains("V1__one.sh"),
        "the warning: {}",
        stdout(&out)
    );
    apply_refuses(&fx, "changed");
    let out = fx.steps("repair", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("realigned the checksum of 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(code(&fx.steps("validate", &[])), 0);

    // Out of order.
    fx.script("V2__two.sh", "");
    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("out"), "{}", stdout(&out));
    let out = fx.steps("apply", &["--out-of-order"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fx.log().last().map(String::as_str), Some("2 two none"));

    // Missing.
    fs::remove_file(fx.dir.join("V3__three.sh")).unwrap();
    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("missing"), "{}", stdout(&out));
    let out = fx.steps("validate", &["--allow-missing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("missing") && stdout(&out).contains("--allow-missing: ignored"),
        "the warning: {}",
        stdout(&out)
    );
    // With a new step pending, apply refuses: the table on stderr, the new step not run.
    fx.script("V4__four.sh", "");
    apply_refuses(&fx, "missing");
    assert_eq!(fx.log().len(), 3, "V4 did not run");
    fs::remove_file(fx.dir.join("V4__four.sh")).unwrap();
    let out = fx.steps("repair", &[]);
    assert!(stdout(&out).contains("removed 3"), "{}", stdout(&out));
    assert_eq!(code(&fx.steps("validate", &[])), 0);
    assert_eq!(fx.log().len(), 3, "validate and repair ran nothing");
}

/// `apply` refuses before it applies anything: exit 1, the problem table (with `problem`) on
/// stderr.
fn apply_refuses(fx: &Fx, problem: &str) {
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(problem) && stderr(&out).contains("Problem"),
        "the table on stderr: {}",
        stderr(&out)
    );
    assert!(
        last_line(&out).contains("nothing was applied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn duplicate_versions_fail_validation_and_apply_runs_nothing() {
    let fx = Fx::new();
    fx.script("V1__one.sh", "");
    fx.script("V1.0__also_one.sh", "");
    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).contains("duplicate"), "{}", stdout(&out));
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(fx.log().is_empty());
}

#[test]
fn bad_input_is_one_line_exit_2_and_touches_nothing() {
    let fx = Fx::new();
    fx.script("V1__one.sh", "");
    fs::write(fx.root.join("a-file"), "").unwrap();
    let dir = fx.dir.to_string_lossy().into_owned();
    let cases: Vec<Vec<&str>> = vec![
        vec!["steps", "apply", "no-such-dir"],
        vec!["steps", "apply", "a-file"],
        vec!["steps", "status", "no-such-dir"],
        vec!["steps", "apply", &dir, "--key", "../up"],
        vec!["steps", "apply", &dir, "--key", ""],
        vec!["steps", "apply", &dir, "--target", "mysql://db/app"],
        vec!["steps", "apply", &dir, "--target", "postgres:app:PW@db"],
        vec!["steps", "apply", &dir, "--adopt", "liquibase"],
        vec!["steps", "apply", &dir, "--adopt", "flyway"],
        vec!["steps", "apply", &dir, "--lock-ttl", "0"],
        vec!["steps", "apply", &dir, "--wait-timeout", "never"],
        vec!["steps", "apply", &dir, "--on-interrupted", "maybe"],
        vec!["steps", "validate", &dir, "--json"],
        vec!["steps", "apply", &dir, "--dry-run", "--adopt", "sqlx"],
        vec!["steps", "apply"],
    ];
    for args in cases {
        let out = fx.ig().args(&args).output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("initguard: "), "{args:?}: {err}");
        assert!(!err.contains("PW"), "{args:?}: {err}");
        assert!(!fx.state.exists(), "{args:?} created the store");
        assert!(fx.log().is_empty(), "{args:?} ran a step");
    }
}

#[test]
fn the_default_key_is_steps_and_the_directory_name() {
    let fx = Fx::new();
    let odd = fx.root.join("my migrations..v2");
    fs::create_dir(&odd).unwrap();
    let step = odd.join("V1__x.sh");
    fs::write(&step, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&step, fs::Permissions::from_mode(0o755)).unwrap();
    let out = fx.ig().args(["steps", "apply"]).arg(&odd).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = fx.ig().args(["status", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["key"], "steps-my-migrations.-.v2", "{v}");
    assert_eq!(v[0]["state"], "succeeded", "{v}");
}

#[test]
fn sigterm_reaches_the_script_step_and_the_next_apply_finds_it_interrupted() {
    let fx = Fx::new();
    fx.script(
        "V1__slow.sh",
        "trap 'echo term >> \"$LOG\"; exit 1' TERM\n[ -e \"$LOG.slow\" ] || exit 0\nsleep 60 & wait",
    );
    fs::write(fx.log.with_extension("slow"), "").unwrap();
    let child = fx.spawn(&[]);
    wait_for("the step to start", Duration::from_secs(20), || {
        fx.log().len() == 1
    });
    support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "128 + SIGTERM: {}", stderr(&out));
    assert_eq!(fx.log(), ["1 slow none", "term"]);
    let rec = fx.ig().args(["status", "--json"]).output().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    assert_eq!(rec[0]["state"], "interrupted", "{rec}");
    fs::remove_file(fx.log.with_extension("slow")).unwrap();
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fx.log(), ["1 slow none", "term", "1 slow interrupted"]);
}

#[test]
fn an_unreachable_target_exits_69_without_showing_its_password() {
    let fx = Fx::new();
    fs::write(fx.dir.join("V1__t.sql"), "CREATE TABLE t (id int);\n").unwrap();
    let out = fx
        .ig()
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .env(
            "INITGUARD_STEPS_TARGET",
            "postgres://app:s3cr3t-Pw@127.0.0.1:1/app",
        )
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("target database postgres://app:***@127.0.0.1:1/app is unreachable"),
        "{line}"
    );
    assert!(!stderr(&out).contains("s3cr3t"), "{}", stderr(&out));
}

/// `--grace`, `--tail-bytes` and `--history` of `steps apply` mean what they mean for `run`: a
/// script step that ignores SIGTERM is killed `--grace` after it (1 s here, not the default 10 s),
/// `--tail-bytes 0` keeps no output in the record, and `--history 1` keeps one past run.
#[test]
fn script_steps_take_grace_tail_bytes_and_history_as_run_does() {
    let fx = Fx::new();
    fx.script(
        "V1__stubborn.sh",
        "trap '' TERM\n[ -e \"$LOG.slow\" ] || { echo said-something; exit 0; }\nsleep 60",
    );
    fs::write(fx.log.with_extension("slow"), "").unwrap();
    let child = fx.spawn(&["--grace", "1s"]);
    wait_for("the step to start", Duration::from_secs(20), || {
        fx.log().len() == 1
    });
    let sent = std::time::Instant::now();
    support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let (out, took) = support::exit_within("the applier", child, sent, Duration::from_secs(30));
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(5),
        "killed about 1 s after SIGTERM, not after the default 10 s: {took:?}"
    );
    fs::remove_file(fx.log.with_extension("slow")).unwrap();
    let out = fx.steps("apply", &["--tail-bytes", "0", "--history", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "said-something\n",
        "the output still passes through"
    );
    let rec = fx.ig().args(["status", "--json"]).output().unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&rec.stdout).unwrap();
    assert_eq!(rec[0]["state"], "succeeded", "{rec}");
    assert!(
        rec[0]["tail"].as_str().unwrap_or_default().is_empty(),
        "no tail kept: {rec}"
    );
    let hist = fx
        .ig()
        .args(["history", "steps-migrations", "--json"])
        .output()
        .unwrap();
    let hist: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(
        hist[0]["history"].as_array().map(Vec::len),
        Some(1),
        "one past run kept of two (interrupted, succeeded): {hist}"
    );
    assert_eq!(hist[0]["history"][0]["state"], "succeeded", "{hist}");
}
