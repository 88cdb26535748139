//! End-to-end tests of `initguard verify` with small real tasks: each idempotence flaw the
//! checker exists to find (a rerun that appends, a two-step write cut in the middle, a
//! check-then-create race), and tasks that are fine (mkdir -p, CREATE TABLE IF NOT EXISTS, a
//! SIGTERM trap that cleans up). Timings only make the cuts land between steps; no test asserts
//! how long anything took.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::*;

/// `initguard verify` in `work`, with none of verify's settings from the environment.
fn verify_cmd(work: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env_remove("INITGUARD_KEY")
        .env_remove("INITGUARD_INPUT")
        .env_remove("INITGUARD_GRACE")
        .env_remove("INITGUARD_TIMEOUT")
        .arg("verify")
        .stdin(Stdio::null());
    c
}

/// `initguard verify ARGS… -- sh -c SCRIPT` in `work`.
fn verify(work: &Path, args: &[&str], script: &str) -> Output {
    verify_cmd(work)
        .args(args)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("spawn initguard verify")
}

/// `--probe P --reset R --kill-points N --grace G --json`: the arguments most tests give.
fn json_cuts<'a>(probe: &'a str, reset: &'a str, points: &'a str, grace: &'a str) -> [&'a str; 9] {
    [
        "--probe",
        probe,
        "--reset",
        reset,
        "--kill-points",
        points,
        "--grace",
        grace,
        "--json",
    ]
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output does not parse ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    })
}

fn scenario<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["scenarios"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no scenario {name} in {report:#}"))
}

fn result<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    scenario(report, name)["result"].as_str().unwrap_or("?")
}

const ALL: [&str; 4] = ["rerun", "concurrent", "interrupted", "sigterm"];

#[test]
fn idempotent_mkdir_passes_every_scenario_and_json_holds_them_all() {
    let work = tempfile::tempdir().unwrap();
    // The sleep keeps the command running long enough for the cuts to meet it.
    let out = verify(
        work.path(),
        &[
            "--probe-dir",
            "data",
            "--reset",
            "rm -rf data",
            "--kill-points",
            "3",
            "--grace",
            "5s",
            "--json",
        ],
        "mkdir -p data/a && sleep 0.6 && mkdir -p data/a/b",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    let names: Vec<&str> = r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL);
    for name in ALL {
        assert_eq!(result(&r, name), "pass", "{name}: {r:#}");
    }
    assert_eq!(
        scenario(&r, "interrupted")["trials"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(r["verdict"]["idempotent"], true);
    assert_eq!(r["verdict"]["on_interrupted"], "rerun");
    assert_eq!(r["exit_code"], 0);
}

fn psql() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().or_else(|| {
        let p = PathBuf::from("/usr/bin/psql");
        p.is_file().then_some(p)
    })
}

#[test]
fn create_table_if_not_exists_passes_every_scenario() {
    let Some(pg) = support::pg::Pg::start() else {
        return;
    };
    let Some(psql) = psql() else {
        assert!(!require("psql", false));
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let url = pg.url_without_password();
    let sql = |q: &str| {
        format!(
            "{} -X -q -At -v ON_ERROR_STOP=1 '{url}' -c \"{q}\"",
            psql.display()
        )
    };
    let probe = sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns \
         WHERE table_schema = 'public' ORDER BY 1, 2",
    );
    let reset = sql("DROP TABLE IF EXISTS items");
    // Plain concurrent CREATE TABLE IF NOT EXISTS can collide on pg_type's unique index in
    // PostgreSQL (finding that is what the concurrent scenario is for); the task takes an
    // advisory lock for its transaction, as a migration should, and sleeps inside it so that
    // the cuts land while it runs.
    let task = sql(
        "BEGIN; SELECT pg_advisory_xact_lock(4242); SELECT pg_sleep(0.4); \
         CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, name text); COMMIT;",
    );
    let out = Command::new(bin())
        .current_dir(work.path())
        .env("PGPASSWORD", support::pg::APP_PASSWORD)
        .env_remove("INITGUARD_KEY")
        .args(["verify", "--probe", &probe, "--reset", &reset])
        .args(["--kill-points", "2", "--grace", "5s", "--json", "--"])
        .args(["sh", "-c", &task])
        .stdin(Stdio::null())
        .output()
        .expect("spawn initguard verify");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = json(&out);
    for name in ALL {
        assert_eq!(result(&r, name), "pass", "{name}: {r:#}");
    }
    // The probe really saw the table: the states compared were not empty.
    assert!(
        pg.sql_in(
            support::pg::APP_DB,
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'"
        ) == "1"
    );
}

#[test]
fn appending_task_fails_rerun_with_a_diff_showing_the_extra_line() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &["--probe", "cat log", "--json"],
        "echo 'migrated users' >> log",
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(result(&r, "rerun"), "fail");
    let diff = scenario(&r, "rerun")["trials"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n migrated users\n+migrated users\n"),
        "{diff}"
    );
    // Without --reset, the scenarios that need one are skipped, and say why.
    for name in ["concurrent", "interrupted", "sigterm"] {
        assert_eq!(result(&r, name), "skipped");
        assert!(
            scenario(&r, name)["detail"]
                .as_str()
                .unwrap()
                .contains("--reset"),
            "{r:#}"
        );
    }
    assert!(stderr(&out).contains("initguard: verify: NOT idempotent (fails rerun)"));
}

/// Skips the work when the file exists: fine after a success, wrong after a cut between the
/// halves, which leaves a file that exists but is half written.
const TWO_STEPS: &str = "[ -e f ] && exit 0; printf 'half\\n' > f; sleep 1; printf 'rest\\n' >> f";
/// The same, serialised by a lock: copies at once cannot race (so *concurrent* passes whatever
/// the machine's load), while a cut between the halves still leaves half a file for good.
const TWO_STEPS_LOCKED: &str = "exec 9>f.lock; flock 9; [ -e f ] && exit 0; printf 'half\\n' > f; sleep 1; printf 'rest\\n' >> f";

#[test]
fn two_step_write_passes_rerun_but_fails_interrupted_between_the_halves() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &json_cuts("cat f", "rm -f f", "1", "5s"),
        TWO_STEPS,
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(result(&r, "rerun"), "pass", "{r:#}");
    assert_eq!(result(&r, "interrupted"), "fail", "{r:#}");
    let trial = &scenario(&r, "interrupted")["trials"][0];
    // Cut at the middle of the clean run: after the first half, before the rest.
    assert!(trial["at_ms"].as_u64().is_some());
    assert_eq!(trial["runs"][0]["cut"], "sigkill");
    assert_eq!(trial["runs"][1]["previous"], "interrupted");
    assert!(
        trial["diff"].as_str().unwrap().contains("\n half\n-rest\n"),
        "{trial:#}"
    );
    // Without a trap, SIGTERM leaves the same half file.
    assert_eq!(result(&r, "sigterm"), "fail", "{r:#}");
    assert_eq!(r["verdict"]["on_interrupted"], "fail");
}

/// The interrupted scenario kills the command's whole process tree: a grandchild that outlived
/// the cut would still write its line. Every run that ended writes "late" (its grandchild's)
/// before "end"; a cut run writes neither.
#[test]
fn interrupted_kills_the_commands_whole_process_tree() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let script = format!(
        "sh -c 'sleep 0.6; echo late >> {log}' & wait; echo end >> {log}",
        log = log.display()
    );
    let out = verify(work.path(), &json_cuts("true", "true", "2", "1s"), &script);
    let r = json(&out);
    let cuts = scenario(&r, "interrupted")["trials"]
        .as_array()
        .map(|t| t.len())
        .unwrap_or(0);
    assert_eq!(cuts, 2, "{r:#}");
    // Past every grandchild's 0.6 s.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let said = lines(&log);
    let late = said.iter().filter(|l| *l == "late").count();
    let end = said.iter().filter(|l| *l == "end").count();
    assert!(end > 0, "{said:?}");
    assert_eq!(
        late, end,
        "a cut run's grandchild lived on and wrote its line: {said:?}"
    );
}

/// README's worked example, taken from README.md itself: its script and `verify` line, run here,
/// print the report README shows as "Its real output", timings aside.
#[test]
fn the_readme_worked_example_prints_what_the_readme_shows() {
    let ex = ReadmeExample::read();
    let shown =
        without_timings(ex.between("Its real output (stdout), exit code 1:\n\n```\n", "```\n"));
    let broken = ex.between("cat > load.sh <<'SH'\n", "\nSH\n");
    // The copies break it only when they meet inside its window, which README says can take
    // several runs: up to 3 runs for a report in full; failing that, all but the concurrent
    // scenario as shown, and the verdict it then gives.
    let mut got = String::new();
    for _ in 0..3 {
        let (code, out) = ex.run(broken, &ex.args);
        assert_eq!(code, 1, "{out}");
        got = without_timings(&out);
        if got.contains("\nconcurrent   FAIL ") {
            assert_eq!(got, shown);
            return;
        }
    }
    assert_eq!(without_concurrent(&got), without_concurrent(&shown));
    assert!(got.contains("\nconcurrent   pass "), "{got}");
    assert!(
        got.contains(
            "\nverdict: NOT idempotent (fails interrupted, sigterm); run it with \
             --on-interrupted fail, or make it clean up when INITGUARD_PREVIOUS=interrupted\n"
        ),
        "{got}"
    );
}

/// The example's fixed script, with `--probe-dir data` for the probe, passes every scenario with
/// the report README shows.
#[test]
fn the_readme_fixed_example_prints_what_the_readme_shows() {
    let ex = ReadmeExample::read();
    let fixed = ex.between("left\nbehind:\n\n```sh\n", "```\n");
    let shown = ex.between(
        "With `--probe-dir data`, so that a temporary file left behind would count too, exit code \
         0:\n\n```\n",
        "```\n",
    );
    let mut args = ex.args.clone();
    let at = args.iter().position(|a| a == "--probe").expect("--probe");
    args.splice(at..at + 2, ["--probe-dir".to_string(), "data".to_string()]);
    let (code, out) = ex.run(fixed, &args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(without_timings(&out), without_timings(shown));
}

/// README.md's `verify` worked example: its text from "A worked example:" on, and the arguments
/// of its `initguard verify` line.
struct ReadmeExample {
    text: String,
    args: Vec<String>,
}

impl ReadmeExample {
    fn read() -> ReadmeExample {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .expect("README.md");
        let text = readme
            .split_once("A worked example:")
            .expect("README has the worked example")
            .1
            .to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("initguard verify "))
            .expect("the example's verify line");
        let args = shell_words(line.trim_start_matches("initguard verify "));
        ReadmeExample { text, args }
    }

    /// The text between the first `from` and the next `to` after it.
    fn between(&self, from: &str, to: &str) -> &str {
        self.text
            .split_once(from)
            .and_then(|(_, rest)| rest.split_once(to))
            .unwrap_or_else(|| panic!("README's example has no {from:?} … {to:?}"))
            .0
    }

    /// `initguard verify ARGS` in a fresh directory holding `script` as `load.sh`: the exit code
    /// and the report.
    fn run(&self, script: &str, args: &[String]) -> (i32, String) {
        let work = tempfile::tempdir().unwrap();
        let load = work.path().join("load.sh");
        std::fs::write(&load, format!("{}\n", script.trim_end())).unwrap();
        std::fs::set_permissions(&load, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = verify_cmd(work.path()).args(args).output().unwrap();
        (
            code(&out),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// The report without the concurrent scenario's row, its diff and the verdict that names it.
fn without_concurrent(report: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in report.lines() {
        if line.starts_with("concurrent (") {
            in_block = true;
        }
        if in_block {
            in_block = !line.is_empty();
            continue;
        }
        if line.starts_with("concurrent ") || line.starts_with("verdict:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `a 'b c' d` as the shell splits it (single quotes only: all the example uses).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// Every duration ("1.01s", "0.25s") as `Ns`: the one part of the report that changes from run
/// to run.
fn without_timings(text: &str) -> String {
    let re = regex::Regex::new(r"\b\d+(\.\d+)?s\b").unwrap();
    re.replace_all(text, "Ns").into_owned()
}

/// `concurrent` wants the same state and every copy to exit 0: copies that refuse to run beside
/// each other (exit 3) leave the clean run's state, and still fail it.
#[test]
fn a_copy_that_exits_non_zero_fails_concurrent_even_with_the_same_state() {
    let work = tempfile::tempdir().unwrap();
    let script = "mkdir -p out; if mkdir lock 2>/dev/null; then sleep 0.5; echo x > out/f; \
                  rmdir lock; else exit 3; fi";
    let out = verify(
        work.path(),
        &json_cuts("cat out/f", "rm -rf out lock", "1", "1s"),
        script,
    );
    let r = json(&out);
    assert_eq!(result(&r, "rerun"), "pass", "{r:#}");
    assert_eq!(result(&r, "concurrent"), "fail", "{r:#}");
    let detail = scenario(&r, "concurrent")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("ended with exit status 3") && !detail.contains("state differs"),
        "failed for the copy's exit alone: {r:#}"
    );
}

/// Without `--kill-points` and `--key`: 5 cuts per cut scenario, and the command's key is
/// `verify`.
#[test]
fn kill_points_and_key_defaults() {
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    let out = verify(
        work.path(),
        &["--probe", "true", "--reset", "true", "--json"],
        &format!("echo \"$INITGUARD_KEY\" >> {}; sleep 0.3", keys.display()),
    );
    let r = json(&out);
    for name in ["interrupted", "sigterm"] {
        let trials = scenario(&r, name)["trials"].as_array().map(Vec::len);
        assert_eq!(trials, Some(5), "{name}: {r:#}");
    }
    let said = lines(&keys);
    assert!(
        !said.is_empty() && said.iter().all(|k| k == "verify"),
        "{said:?}"
    );
}

/// `sigterm`: a command that ignores SIGTERM is killed with SIGKILL once `--grace` has passed.
#[test]
fn sigterm_escalates_to_sigkill_after_grace() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &json_cuts("cat f", "rm -f f", "1", "300ms"),
        "trap '' TERM; echo a > f; sleep 1; echo b >> f",
    );
    let r = json(&out);
    let cut = &scenario(&r, "sigterm")["trials"][0]["runs"][0];
    assert_eq!(cut["cut"], "sigterm", "{r:#}");
    assert_eq!(cut["outcome"], "killed by signal 9", "{r:#}");
    assert_eq!(cut["exit_code"], 137, "{r:#}");
}

#[test]
fn sigterm_trap_that_cleans_up_passes_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let script = format!("trap 'rm -f f; exit 143' TERM; {TWO_STEPS}");
    let out = verify(
        work.path(),
        &[
            "--probe",
            "cat f 2>/dev/null || echo no file",
            "--reset",
            "rm -f f",
            "--kill-points",
            "2",
            "--grace",
            "5s",
            "--json",
            "--out",
            "saved",
        ],
        &script,
    );
    let r = json(&out);
    // One state file per trial of the cut scenarios, a diff only where the state differs.
    let saved = work.path().join("saved");
    for f in [
        "interrupted-1.state",
        "interrupted-1.diff",
        "sigterm-2.state",
    ] {
        assert!(saved.join(f).is_file(), "{f}");
    }
    assert!(!saved.join("sigterm-2.diff").exists());
    assert_eq!(result(&r, "sigterm"), "pass", "{r:#}");
    let sigterm = scenario(&r, "sigterm");
    assert_eq!(sigterm["cuts_landed"], 2, "{sigterm:#}");
    // SIGKILL cannot be trapped: the same task still fails the interrupted scenario.
    assert_eq!(result(&r, "interrupted"), "fail", "{r:#}");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

#[test]
fn check_then_create_fails_concurrent_in_repeated_trials() {
    // Both copies see no file, both create it: the sleep widens the race window so that every
    // trial loses it.
    let script = "if [ ! -e f ]; then sleep 0.5; echo created >> f; fi";
    for trial in 0..3 {
        let work = tempfile::tempdir().unwrap();
        let out = verify(
            work.path(),
            &[
                "--probe",
                "cat f",
                "--reset",
                "rm -f f",
                "--kill-points",
                "0",
                "--json",
            ],
            script,
        );
        assert_eq!(code(&out), 1, "trial {trial}: {}", stderr(&out));
        let r = json(&out);
        assert_eq!(result(&r, "rerun"), "pass", "trial {trial}: {r:#}");
        assert_eq!(result(&r, "concurrent"), "fail", "trial {trial}: {r:#}");
        let diff = scenario(&r, "concurrent")["trials"][0]["diff"]
            .as_str()
            .unwrap();
        assert!(diff.contains("+created\n"), "{diff}");
        assert!(
            r["verdict"]["line"]
                .as_str()
                .unwrap()
                .contains("initguard's lock")
        );
    }
}

/// The probe-dir state after running `script` twice (the rerun scenario): pass or fail, diff.
fn rerun_on_dir(script: &str) -> (String, String) {
    let work = tempfile::tempdir().unwrap();
    let out = verify(work.path(), &["--probe-dir", "d", "--json"], script);
    let r = json(&out);
    let rerun = scenario(&r, "rerun");
    (
        rerun["result"].as_str().unwrap().to_string(),
        rerun["trials"][0]["diff"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[test]
fn probe_dir_ignores_mtimes_but_sees_content_mode_and_type_changes() {
    // Same bytes, a different mtime on every run (the token is 1, then 2).
    let (res, diff) =
        rerun_on_dir("mkdir -p d; printf same > d/f; touch -d \"@$INITGUARD_FENCING_TOKEN\" d/f");
    assert_eq!(res, "pass", "{diff}");

    let (res, diff) = rerun_on_dir("mkdir -p d; echo \"$INITGUARD_FENCING_TOKEN\" > d/f");
    assert_eq!(res, "fail");
    assert!(
        diff.contains("-file 0644 ") && diff.contains("+file 0644 "),
        "{diff}"
    );

    let (res, diff) = rerun_on_dir(
        "mkdir -p d; [ -e d/f ] || { printf x > d/f; chmod 644 d/f; exit 0; }; chmod 755 d/f",
    );
    assert_eq!(res, "fail");
    assert!(
        diff.contains("-file 0644 ") && diff.contains("+file 0755 "),
        "{diff}"
    );

    let (res, diff) =
        rerun_on_dir("mkdir -p d; if [ -e d/x ]; then rm -f d/x; mkdir d/x; else touch d/x; fi");
    assert_eq!(res, "fail");
    assert!(diff.contains("-file ") && diff.contains("+dir "), "{diff}");
}

#[test]
fn command_runs_with_runs_environment_and_its_output_stays_off_stdout() {
    let work = tempfile::tempdir().unwrap();
    // env.log is outside the probed state; the echo to stdout must not reach the report.
    let script = "echo \"$INITGUARD_FENCING_TOKEN $INITGUARD_ATTEMPT $INITGUARD_PREVIOUS \
                  $INITGUARD_KEY $INITGUARD_FINGERPRINT\" >> env.log; echo chatter; sleep 0.6; \
                  touch state";
    let out = verify(
        work.path(),
        &[
            "--probe",
            "ls state 2>/dev/null; true",
            "--reset",
            "rm -f state",
            "--kill-points",
            "1",
            "--grace",
            "5s",
            "--key",
            "app/migrate",
            "--json",
        ],
        script,
    );
    let r = json(&out);
    assert_eq!(code(&out), 0, "{}\n{r:#}", stderr(&out));
    assert!(
        stderr(&out).contains("chatter"),
        "the command's stdout goes to stderr"
    );
    let mut seen: Vec<Vec<String>> = lines(&work.path().join("env.log"))
        .iter()
        .map(|l| l.split(' ').map(str::to_string).collect())
        .collect();
    seen.sort_by_key(|f| f[0].parse::<u64>().unwrap_or(0));
    let got: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|f| (f[0].as_str(), f[1].as_str(), f[2].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("1", "1", "none"),        // clean
            ("2", "1", "none"),        // rerun
            ("3", "1", "none"),        // concurrent copy 1
            ("4", "1", "none"),        // concurrent copy 2
            ("5", "1", "none"),        // interrupted: cut
            ("6", "2", "interrupted"), // interrupted: re-run
            ("7", "1", "none"),        // sigterm: cut
            ("8", "2", "interrupted"), // sigterm: re-run
        ]
    );
    for f in &seen {
        assert_eq!(f[3], "app/migrate");
        assert!(f[4].starts_with("sha256:"), "{f:?}");
    }
}

#[test]
fn failing_clean_run_is_reported_as_a_failure_with_its_exit_code_not_as_non_idempotent() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &["--probe", "true", "--reset", "true", "--json"],
        "echo broken >&2; exit 3",
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["clean"]["run"]["exit_code"], 3);
    assert!(
        r["clean"]["output_tail"]
            .as_str()
            .unwrap()
            .contains("broken")
    );
    for name in ALL {
        assert_eq!(result(&r, name), "skipped");
    }
    let line = r["verdict"]["line"].as_str().unwrap();
    assert!(line.contains("fails on its own (exit status 3"), "{line}");
    assert!(!line.contains("NOT idempotent"), "{line}");
}

#[test]
fn setup_problems_are_one_line_errors() {
    let work = tempfile::tempdir().unwrap();
    // Succeeds the first time only: the reset before the second scenario fails.
    let once = format!(
        "[ ! -e {0} ] && touch {0}",
        work.path().join("once").display()
    );
    let cases: [(&[&str], i32, &str); 6] = [
        (
            &[],
            2,
            "--probe: verify needs --probe CMD and/or --probe-dir DIR",
        ),
        (
            &["--probe", "true", "--ignore", "(unclosed"],
            2,
            "--ignore: \"(unclosed\" is not a valid regex",
        ),
        (
            &["--probe", "true", "--copies", "1"],
            2,
            "--copies: must be at least 2",
        ),
        (
            &["--probe", "echo no db >&2; exit 4"],
            78,
            "the probe failed on the state the clean run left (exited 4: no db)",
        ),
        (
            &["--probe", "true", "--reset", "exit 5"],
            78,
            "--reset \"exit 5\" exited 5 before the clean run",
        ),
        (
            &["--probe", "true", "--reset", &once],
            78,
            "exited 1 before the concurrent scenario",
        ),
    ];
    for (args, want, msg) in cases {
        let out = verify(work.path(), args, "true");
        assert_eq!(code(&out), want, "{args:?}: {}", stderr(&out));
        let last = stderr(&out).lines().last().unwrap_or_default().to_string();
        assert!(
            last.starts_with("initguard: ") && last.contains(msg),
            "{args:?}: {last}"
        );
    }
}

#[test]
fn out_dir_keeps_the_whole_diff_that_the_report_bounds() {
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("report");
    let out = verify(
        work.path(),
        &["--probe", "cat log", "--out", "report"],
        "seq 1 60 >> log",
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("more diff lines (--out DIR saves the whole diff)"),
        "{text}"
    );
    // The shown diff: from its `---` header up to the line that says what was left out.
    let shown = text
        .lines()
        .skip_while(|l| !l.starts_with("--- clean run"))
        .take_while(|l| !l.contains("more diff lines"))
        .count();
    assert!(
        (1..=40).contains(&shown),
        "{shown} diff lines shown:\n{text}"
    );
    let diff = std::fs::read_to_string(out_dir.join("rerun.diff")).unwrap();
    assert_eq!(
        diff.lines()
            .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
            .count(),
        60
    );
    assert_eq!(lines(&out_dir.join("clean.state")).len(), 60);
    assert_eq!(lines(&out_dir.join("rerun.state")).len(), 120);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved["exit_code"], 1);
}

#[test]
fn text_report_is_pinned() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &[
            "--probe",
            "cat f",
            "--reset",
            "rm -f f",
            "--kill-points",
            "2",
            "--grace",
            "5s",
        ],
        TWO_STEPS_LOCKED,
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let durations = regex::Regex::new(r"\d+\.\d\ds").unwrap();
    insta::assert_snapshot!(durations.replace_all(&text, "<duration>"));
}

#[test]
fn ignore_patterns_hide_what_changes_on_every_probe() {
    let work = tempfile::tempdir().unwrap();
    // The probe prints a fresh timestamp each time; the task itself is idempotent.
    let probe = "echo \"dumped at $(date +%s%N)\"; cat f";
    let task = "echo config > f";
    let out = verify(work.path(), &["--probe", probe, "--json"], task);
    assert_eq!(result(&json(&out), "rerun"), "fail", "without --ignore");
    let out = verify(
        work.path(),
        &["--probe", probe, "--ignore", r"^dumped at \d+$", "--json"],
        task,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(result(&json(&out), "rerun"), "pass");
}

#[test]
fn timeout_ends_a_hanging_clean_run_with_124() {
    let work = tempfile::tempdir().unwrap();
    let out = verify(
        work.path(),
        &[
            "--probe",
            "true",
            "--timeout",
            "1s",
            "--grace",
            "1s",
            "--json",
        ],
        "sleep 30",
    );
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert_eq!(json(&out)["clean"]["run"]["outcome"], "exceeded --timeout");
}

#[test]
fn a_signal_to_verify_stops_it_and_the_command() {
    let work = tempfile::tempdir().unwrap();
    let child = Command::new(bin())
        .current_dir(work.path())
        .args(["verify", "--probe", "true", "--grace", "5s", "--"])
        .args(["sh", "-c", "echo $$ > pid; sleep 30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn initguard verify");
    let pid_file = work.path().join("pid");
    wait_for(
        "the command to start",
        std::time::Duration::from_secs(20),
        || lines(&pid_file).first().is_some_and(|l| !l.is_empty()),
    );
    let pid: i32 = lines(&pid_file)[0].parse().unwrap();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("initguard: verify: stopped by signal 15 during the clean run"),
        "{}",
        stderr(&out)
    );
    assert!(!pid_alive(pid), "the command was stopped with verify");
}
