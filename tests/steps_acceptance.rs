//! Acceptance of `initguard steps` (issue 10) end to end: real processes of the built binary
//! against throwaway PostgreSQL servers (tests/support/pg.rs; without PostgreSQL installed each
//! test prints SKIP and returns, and fails under `CI=true`). Every step's side effect is a row
//! (with its time) in an `effects` table, and every test asserts exact counts of effects and of
//! history rows in `initguard.steps_history`. Kill instants come from a seeded generator whose
//! seed is printed (set `STEPS_SEED` to replay one). Timings are printed, never asserted.

mod support;

use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::pg::{self, Pg};
use support::proxy::Proxy;
use support::wait_for;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A throwaway server with the `effects` table in the target database (and in the store's, for
/// tests that apply there).
struct Fx {
    pg: Pg,
    work: tempfile::TempDir,
    started: Instant,
}

impl Fx {
    fn start(name: &str) -> Option<Fx> {
        let pg = Pg::start()?;
        let fx = Fx {
            pg,
            work: tempfile::tempdir().expect("temp dir"),
            started: Instant::now(),
        };
        for db in [pg::TARGET_DB, pg::APP_DB] {
            fx.pg.sql_in(
                db,
                "CREATE TABLE effects (tag text NOT NULL, step int NOT NULL,
                                       at timestamptz NOT NULL DEFAULT clock_timestamp());
                 ALTER TABLE effects OWNER TO app;",
            );
        }
        eprintln!("{name}: server up");
        Some(fx)
    }

    fn store(&self) -> String {
        self.pg.url()
    }

    fn target(&self) -> String {
        self.pg.url_for(pg::TARGET_DB)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.work.path().join(name);
        std::fs::create_dir_all(&d).expect("steps dir");
        d
    }

    /// `initguard steps SUB DIR --key KEY` with the store in the environment; `EXTRA` after.
    fn steps(&self, sub: &str, dir: &Path, key: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
        c.current_dir(self.work.path())
            .arg("steps")
            .arg(sub)
            .arg(dir)
            .args(["--key", key])
            .args(extra)
            .env("INITGUARD_STORE", self.store())
            .env("INITGUARD_LOG", "info")
            .env_remove("INITGUARD_STEPS_TARGET")
            .env_remove("PGPASSWORD")
            .env_remove("PGPASSFILE")
            .env_remove("INITGUARD_STORE_PASSWORD_FILE")
            .env_remove("POD_UID")
            .env_remove("POD_NAME")
            .env_remove("NODE_NAME")
            .stdin(Stdio::null());
        c
    }

    /// Start `cmd` with its output going to files (so that no pipe fills while it runs).
    fn spawn(&self, mut cmd: Command) -> Proc {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = self.work.path().join(format!("proc-{n}.out"));
        let err = self.work.path().join(format!("proc-{n}.err"));
        let child = cmd
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn initguard");
        Proc {
            child,
            out,
            err,
            exit: None,
        }
    }

    /// Run to completion (at most `limit`: a hang is a failure, not a stuck test).
    fn run(&self, cmd: Command, limit: Duration) -> Done {
        self.spawn(cmd).finish(limit)
    }

    fn effects(&self, db: &str, tag: &str) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for l in self
            .pg
            .sql_in(
                db,
                &format!("SELECT step, count(*) FROM effects WHERE tag = '{tag}' GROUP BY step"),
            )
            .lines()
        {
            if let Some((s, n)) = l.split_once('|') {
                m.insert(s.parse().expect("step"), n.parse().expect("count"));
            }
        }
        m
    }

    /// `initguard.steps_history` of the database `db`, one JSON object per row, as stored.
    fn history(&self, db: &str) -> Vec<serde_json::Value> {
        let exists = self.pg.sql_in(
            db,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'initguard' AND tablename = 'steps_history'",
        );
        if exists != "1" {
            return Vec::new();
        }
        self.pg
            .sql_in(
                db,
                "SELECT row_to_json(h)::text FROM initguard.steps_history h",
            )
            .lines()
            .map(|l| serde_json::from_str(l).expect("history row as JSON"))
            .collect()
    }

    /// History rows of the set `key`, by version (as text): asserts one row per version.
    fn history_of(&self, db: &str, key: &str) -> BTreeMap<String, Hist> {
        let mut m = BTreeMap::new();
        for row in self.history(db) {
            let h = Hist::from(&row);
            if h.set != key {
                continue;
            }
            let v = h.version.clone();
            assert!(
                m.insert(v.clone(), h).is_none(),
                "two history rows for version {v} of {key}: {:#?}",
                self.history(db)
            );
        }
        m
    }

    /// Sessions of the app role still open on the server (the killed holder's, until the server
    /// has noticed it is gone).
    fn app_sessions(&self) -> usize {
        self.pg
            .admin(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
                pg::APP_USER
            ))
            .parse()
            .unwrap_or(0)
    }

    fn wait_sessions_gone(&self) {
        wait_for(
            "the killed applier's sessions to end",
            Duration::from_secs(30),
            || self.app_sessions() == 0,
        );
    }

    fn elapsed(&self) -> String {
        format!("{:.1} s", self.started.elapsed().as_secs_f64())
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The columns of a history row this file looks at, whatever else the row holds.
#[derive(Debug, Clone)]
struct Hist {
    set: String,
    version: String,
    state: String,
    token: i64,
    holder: String,
    adopted_from: Option<String>,
}

impl From<&serde_json::Value> for Hist {
    fn from(row: &serde_json::Value) -> Hist {
        let text = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| match row.get(*n) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(x)) => Some(x.to_string()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        Hist {
            set: text(&["set_name", "set", "key", "set_key"]),
            version: text(&["step", "version"]),
            state: text(&["state"]),
            token: text(&["token", "fencing_token"]).parse().unwrap_or(-1),
            holder: text(&["holder"]),
            adopted_from: Some(text(&["adopted_from"])).filter(|s| !s.is_empty()),
        }
    }
}

struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    exit: Option<(i32, Instant)>,
}

#[derive(Debug)]
struct Done {
    code: i32,
    pid: u32,
    at: Instant,
    stdout: String,
    stderr: String,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("signal the applier");
    }

    /// Still running (reaps it when it has exited, keeping its exit time).
    fn running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exit = Some((code_of(s), Instant::now()));
                false
            }
            _ => true,
        }
    }

    fn finish(mut self, limit: Duration) -> Done {
        let t = Instant::now();
        while self.running() {
            if t.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "initguard (pid {}) did not exit within {limit:?}; its stderr:\n{}",
                    self.pid(),
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (code, at) = self.exit.expect("exited");
        Done {
            code,
            pid: self.child.id(),
            at,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }

    fn kill9(mut self) -> i32 {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let s = self.child.wait().expect("reap");
        code_of(s)
    }
}

fn code_of(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// A step file.
fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).expect("write step");
}

fn write_script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write script step");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `count` transactional steps, each sleeping `sleep` seconds and then recording its effect.
fn slow_steps(dir: &Path, tag: &str, count: usize, sleep: f64) {
    for n in 1..=count {
        write(
            dir,
            &format!("V{n}__step_{n}.sql"),
            &format!(
                "SELECT pg_sleep({sleep});\nINSERT INTO effects (tag, step) VALUES ('{tag}', {n});\n"
            ),
        );
    }
}

/// SplitMix64: a seeded, reproducible sequence of kill instants.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("STEPS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{test}: seed {seed} (STEPS_SEED={seed} replays it)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const LIMIT: Duration = Duration::from_secs(120);

fn assert_ok(d: &Done, what: &str) {
    assert_eq!(d.code, 0, "{what}: exit {}\n{}", d.code, d.stderr);
}

/// The pid in a holder identity (`host_pid`, `pod_pid`, `pod_uid_pid`).
fn holder_pid(holder: &str) -> Option<u32> {
    holder.rsplit('_').next()?.parse().ok()
}

/// Each of `1..=count` applied exactly once: one effect, one `applied` history row.
fn assert_all_once(fx: &Fx, db: &str, key: &str, tag: &str, count: usize) {
    let eff = fx.effects(db, tag);
    let hist = fx.history_of(db, key);
    for n in 1..=count as i64 {
        assert_eq!(
            eff.get(&n).copied().unwrap_or(0),
            1,
            "effect of step {n}: {eff:?}"
        );
        let h = hist
            .get(&n.to_string())
            .unwrap_or_else(|| panic!("no history row for step {n}: {hist:?}"));
        assert_eq!(h.state, "applied", "step {n}: {h:?}");
    }
    assert_eq!(
        eff.len(),
        count,
        "effects of steps that do not exist: {eff:?}"
    );
    assert_eq!(hist.len(), count, "history rows: {hist:?}");
    // In version order, by the effects' own timestamps.
    let order: Vec<i64> = fx
        .pg
        .sql_in(
            db,
            &format!("SELECT step FROM effects WHERE tag = '{tag}' ORDER BY at, step"),
        )
        .lines()
        .map(|l| l.parse().expect("step"))
        .collect();
    assert_eq!(
        order,
        (1..=count as i64).collect::<Vec<_>>(),
        "effects in version order"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1,000 steps apply; a second apply skips after one store read: the target database sits behind
/// a proxy that is black-holed by then, so any connection to it would hang. Then the validation
/// rules on top of those 1,000 (`validation_guards_an_applied_set`).
#[test]
fn thousand_steps_apply_reapply_skips_without_the_target_and_validation_guards_them() {
    let Some(fx) = Fx::start("thousand") else {
        return;
    };
    let proxy = Proxy::start(([127, 0, 0, 1], fx.pg.port).into());
    let target = format!(
        "postgres://{}:{}@127.0.0.1:{}/{}",
        pg::APP_USER,
        pg::APP_PASSWORD,
        proxy.port,
        pg::TARGET_DB
    );
    let dir = fx.dir("thousand");
    for n in 1..=1000 {
        write(
            &dir,
            &format!("V{n:04}__t_{n:04}.sql"),
            &format!("CREATE TABLE t_{n:04} (id int primary key);\n"),
        );
    }
    let t = Instant::now();
    let first = fx.run(
        fx.steps("apply", &dir, "thousand", &["--target", &target]),
        LIMIT,
    );
    assert_ok(&first, "apply of 1,000 steps");
    let applied_in = t.elapsed();
    let tables = fx.pg.sql_in(
        pg::TARGET_DB,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 't\\_%'",
    );
    assert_eq!(tables, "1000");
    let hist = fx.history_of(pg::TARGET_DB, "thousand");
    assert_eq!(hist.len(), 1000);
    assert!(hist.values().all(|h| h.state == "applied"), "{hist:?}");
    let tokens: std::collections::BTreeSet<i64> = hist.values().map(|h| h.token).collect();
    assert_eq!(tokens.len(), 1, "one applier, one token: {tokens:?}");

    let t = Instant::now();
    let before = proxy.connections();
    let again = {
        let _hole = proxy.blackholed();
        fx.run(
            fx.steps("apply", &dir, "thousand", &["--target", &target]),
            Duration::from_secs(60),
        )
    };
    assert_ok(&again, "re-apply with the target black-holed");
    assert_eq!(
        proxy.connections(),
        before,
        "the skip opened no connection to the target"
    );
    assert!(
        again.stderr.contains("skip"),
        "the re-apply says it skipped: {}",
        again.stderr
    );
    assert_eq!(fx.history_of(pg::TARGET_DB, "thousand").len(), 1000);
    eprintln!(
        "thousand: applied 1,000 in {:.2} s, re-apply (target black-holed) skipped in {} ms",
        applied_in.as_secs_f64(),
        t.elapsed().as_millis(),
    );
    validation_guards_an_applied_set(&fx, &dir, &target);
    eprintln!("thousand: test {}", fx.elapsed());
}

fn has_table(fx: &Fx, name: &str) -> bool {
    table_exists(fx, pg::TARGET_DB, name)
}

/// Everything `steps` printed, both streams.
fn said(d: &Done) -> String {
    format!("{}{}", d.stdout, d.stderr)
}

/// Changed, missing, duplicate and out-of-order steps against the 1,000 applied ones: each fails
/// `validate` and `apply` with exit 1 and a table naming the file, applies nothing, and is
/// accepted by its `--allow-*` flag (or `repair`, or fixing the files).
fn validation_guards_an_applied_set(fx: &Fx, dir: &Path, target: &str) {
    let key = "thousand";
    let apply = |extra: &[&str]| {
        fx.run(
            fx.steps(
                "apply",
                dir,
                key,
                &[&["--target", target][..], extra].concat(),
            ),
            LIMIT,
        )
    };
    let validate = || fx.run(fx.steps("validate", dir, key, &["--target", target]), LIMIT);
    let refused = |d: &Done, what: &str, step: &str| {
        assert_eq!(d.code, 1, "{what}: exit 1\n{}", said(d));
        let text = said(d).to_lowercase();
        assert!(text.contains(what), "{what} is reported:\n{}", said(d));
        assert!(said(d).contains(step), "{what}: names {step}:\n{}", said(d));
        assert!(
            text.contains("fix:"),
            "{what}: says what to do:\n{}",
            said(d)
        );
    };
    let create = |n: &str| format!("CREATE TABLE t_{n} (id int primary key);\n");

    // Changed: an applied step's file edited, while a new step waits behind it.
    write(
        dir,
        "V0500__t_0500.sql",
        "CREATE TABLE t_0500 (id int primary key, x int);\n",
    );
    write(dir, "V1001__t_1001.sql", &create("1001"));
    refused(&validate(), "changed", "V0500__t_0500.sql");
    refused(&apply(&[]), "changed", "V0500__t_0500.sql");
    assert!(
        !has_table(fx, "t_1001"),
        "nothing applied past a changed step"
    );
    assert_ok(&apply(&["--allow-changed"]), "apply --allow-changed");
    assert!(has_table(fx, "t_1001"));
    // repair accepts the file as it is now: no problem left.
    assert_ok(
        &fx.run(fx.steps("repair", dir, key, &["--target", target]), LIMIT),
        "repair",
    );
    assert_ok(&validate(), "validate after repair");

    // Missing: an applied step's file gone.
    std::fs::remove_file(dir.join("V0002__t_0002.sql")).expect("remove a step");
    // (History keeps no file name for it to show: the step's version and description.)
    refused(&validate(), "missing", "0002");
    refused(&apply(&[]), "missing", "0002");
    assert_ok(&apply(&["--allow-missing"]), "apply --allow-missing");
    write(dir, "V0002__t_0002.sql", &create("0002"));
    assert_ok(&validate(), "validate with the file back");

    // Duplicate: two files claim one version; nothing of it is applied.
    write(dir, "V1002__t_1002.sql", &create("1002"));
    write(dir, "V1002__t_1002_again.sql", &create("1002_again"));
    refused(&validate(), "duplicate", "V1002__t_1002");
    refused(&apply(&[]), "duplicate", "V1002__t_1002");
    assert!(!has_table(fx, "t_1002") && !has_table(fx, "t_1002_again"));
    std::fs::remove_file(dir.join("V1002__t_1002_again.sql")).expect("remove the duplicate");
    assert_ok(&apply(&[]), "apply without the duplicate");
    assert!(has_table(fx, "t_1002") && !has_table(fx, "t_1002_again"));

    // Out of order: a new step older than the newest applied one.
    write(dir, "V999.5__late.sql", &create("late"));
    let d = validate();
    assert_eq!(d.code, 1, "out of order: exit 1\n{}", said(&d));
    let text = said(&d).to_lowercase();
    assert!(
        text.contains("out of order")
            || text.contains("out-of-order")
            || text.contains("out_of_order"),
        "out of order is reported:\n{}",
        said(&d)
    );
    assert!(said(&d).contains("V999.5__late.sql"), "{}", said(&d));
    assert_eq!(apply(&[]).code, 1, "apply refuses the out-of-order step");
    assert!(!has_table(fx, "t_late"));
    assert_ok(&apply(&["--out-of-order"]), "apply --out-of-order");
    assert!(has_table(fx, "t_late"));
    let hist = fx.history_of(pg::TARGET_DB, key);
    assert_eq!(hist.len(), 1003, "1,000 + 1001, 1002 and 999.5, each once");
    assert!(hist.values().all(|h| h.state == "applied"));
    eprintln!(
        "thousand: changed, missing, duplicate, out of order each refused with exit 1 and accepted by its flag"
    );
}

/// `n` appliers started at once on one directory: one applies every step, the others exit 0
/// having skipped; history holds each version once, under one token, and each effect happened
/// once.
fn concurrent_appliers(fx: &Fx, n: usize) {
    let key = format!("crowd-{n}");
    let dir = fx.dir(&key);
    let steps = 20;
    slow_steps(&dir, &key, steps, 0.02);
    let procs: Vec<Proc> = (0..n)
        .map(|_| {
            fx.spawn(fx.steps(
                "apply",
                &dir,
                &key,
                &["--target", &fx.target(), "--wait-timeout", "5m"],
            ))
        })
        .collect();
    let done: Vec<Done> = procs.into_iter().map(|p| p.finish(LIMIT)).collect();
    for d in &done {
        assert_ok(d, &format!("one of {n} appliers (pid {})", d.pid));
    }
    assert_all_once(fx, pg::TARGET_DB, &key, &key, steps);
    let hist = fx.history_of(pg::TARGET_DB, &key);
    let holders: std::collections::BTreeSet<&str> =
        hist.values().map(|h| h.holder.as_str()).collect();
    assert_eq!(holders.len(), 1, "one applier: {holders:?}");
    let tokens: std::collections::BTreeSet<i64> = hist.values().map(|h| h.token).collect();
    assert_eq!(tokens.len(), 1, "one token: {tokens:?}");
    let applier = holders.iter().next().and_then(|h| holder_pid(h));
    let (mine, others): (Vec<&Done>, Vec<&Done>) =
        done.iter().partition(|d| Some(d.pid) == applier);
    assert_eq!(
        mine.len(),
        1,
        "the holder {holders:?} is one of the {n} processes"
    );
    for d in &others {
        assert!(
            d.stderr.contains("skip"),
            "pid {} did not apply, so it says it skipped: {}",
            d.pid,
            d.stderr
        );
    }
    let last = others
        .iter()
        .map(|d| {
            if d.at > mine[0].at {
                (d.at - mine[0].at).as_millis() as i64
            } else {
                -((mine[0].at - d.at).as_millis() as i64)
            }
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "{n} appliers: 1 applied {steps} steps, {} skipped, 0 errors; last exit {last} ms after the applier's",
        others.len()
    );
}

#[test]
fn eight_and_thirty_concurrent_appliers_apply_each_step_once() {
    let Some(fx) = Fx::start("crowd") else { return };
    concurrent_appliers(&fx, 8);
    concurrent_appliers(&fx, 30);
    eprintln!("crowd: test {}", fx.elapsed());
}

/// After every kill the invariants hold: no effect twice, a history row `applied` exactly when
/// its effect is there.
fn assert_together(fx: &Fx, key: &str, count: usize, trial: usize) -> usize {
    let eff = fx.effects(pg::TARGET_DB, key);
    let hist = fx.history_of(pg::TARGET_DB, key);
    let mut applied = 0;
    for n in 1..=count as i64 {
        let e = eff.get(&n).copied().unwrap_or(0);
        let h = hist.get(&n.to_string());
        assert!(e <= 1, "trial {trial}: step {n} applied {e} times");
        let is_applied = h.is_some_and(|h| h.state == "applied");
        assert_eq!(
            e == 1,
            is_applied,
            "trial {trial}: step {n}: effect {e} but history {h:?}"
        );
        applied += e;
    }
    applied
}

/// kill -9 of the applier at 20 random instants of a 50-step apply of slow steps, then apply
/// again: each step's effect and its history row commit together, never twice, and the second
/// apply needs nothing done by hand.
#[test]
fn applier_killed_at_random_instants_never_applies_a_step_twice() {
    let Some(fx) = Fx::start("kill") else { return };
    let mut rng = Rng::seeded("kill");
    let steps = 50;
    let args = ["--target", &fx.target(), "--lock-ttl", "1s"];
    // How long a whole apply takes, so that the kill instants spread over all of it.
    let probe = fx.dir("kill-probe");
    slow_steps(&probe, "kill-probe", steps, 0.02);
    let t = Instant::now();
    assert_ok(
        &fx.run(fx.steps("apply", &probe, "kill-probe", &args), LIMIT),
        "probe apply",
    );
    let span = t.elapsed().as_millis() as u64;
    let mut cut_at = Vec::new();
    for trial in 0..20 {
        let key = format!("kill-{trial}");
        let dir = fx.dir(&key);
        slow_steps(&dir, &key, steps, 0.02);
        let p = fx.spawn(fx.steps("apply", &dir, &key, &args));
        std::thread::sleep(Duration::from_millis(rng.below(span)));
        p.kill9();
        fx.wait_sessions_gone();
        cut_at.push(assert_together(&fx, &key, steps, trial));
        let again = fx.run(fx.steps("apply", &dir, &key, &args), LIMIT);
        assert_ok(&again, &format!("trial {trial}: apply after the kill"));
        assert_all_once(&fx, pg::TARGET_DB, &key, &key, steps);
    }
    eprintln!(
        "kill: 20 kills -9 over a ~{span} ms apply; steps applied when killed: {cut_at:?}; every \
         step once after the next apply; test {}",
        fx.elapsed()
    );
}

/// An applier stopped (SIGSTOP) past its lease while a second one takes over: the second applies
/// the rest; the stopped one, resumed, is fenced (exit 75) and applies nothing more. Three
/// rounds, each stopped after a random number of steps.
#[test]
fn applier_stopped_past_its_lease_is_fenced_and_the_successor_finishes() {
    let Some(fx) = Fx::start("pause") else { return };
    let mut rng = Rng::seeded("pause");
    let steps = 50;
    for round in 0..3 {
        let key = format!("pause-{round}");
        let dir = fx.dir(&key);
        slow_steps(&dir, &key, steps, 0.05);
        let args = ["--target", &fx.target(), "--lock-ttl", "1s"];
        let a = fx.spawn(fx.steps("apply", &dir, &key, &args));
        let stop_after = 1 + rng.below(40) as usize;
        wait_for("a to apply some steps", Duration::from_secs(60), || {
            fx.effects(pg::TARGET_DB, &key).len() >= stop_after
        });
        a.signal(nix::sys::signal::Signal::SIGSTOP);
        let stopped_at = Instant::now();
        let b = fx.run(fx.steps("apply", &dir, &key, &args), LIMIT);
        let b_took = stopped_at.elapsed();
        a.signal(nix::sys::signal::Signal::SIGCONT);
        let a = a.finish(LIMIT);
        assert_ok(&b, &format!("round {round}: the successor"));
        assert_eq!(
            a.code, 75,
            "round {round}: the stopped applier, resumed, is fenced:\n{}",
            a.stderr
        );
        assert_all_once(&fx, pg::TARGET_DB, &key, &key, steps);
        let hist = fx.history_of(pg::TARGET_DB, &key);
        let by = |pid: u32| {
            hist.values()
                .filter(|h| holder_pid(&h.holder) == Some(pid))
                .map(|h| h.token)
                .collect::<Vec<_>>()
        };
        let (a_tokens, b_tokens) = (by(a.pid), by(b.pid));
        assert_eq!(
            a_tokens.len() + b_tokens.len(),
            steps,
            "round {round}: every step by a or b: {hist:?}"
        );
        assert!(!b_tokens.is_empty(), "round {round}: b applied the rest");
        if let (Some(at), Some(bt)) = (a_tokens.iter().max(), b_tokens.iter().min()) {
            assert!(at < bt, "round {round}: b's token is newer: a {at}, b {bt}");
        }
        eprintln!(
            "pause round {round}: a stopped after {stop_after}+ steps ({} recorded as a's); b took \
             over and finished {} in {} ms; a exited 75 when resumed",
            a_tokens.len(),
            b_tokens.len(),
            b_took.as_millis(),
        );
    }
    eprintln!("pause: test {}", fx.elapsed());
}

/// The CIC set in the store's own database (the default target, so waiters watch the store in
/// the database the index is built in): a 1M-row table `<name>_big`, then a no-transaction step
/// with two `CREATE INDEX CONCURRENTLY` statements (`<name>_md5`, `<name>_v`), then a last step
/// with an effect. `name` uses `[a-z_]` only.
fn cic_set(fx: &Fx, name: &str) -> PathBuf {
    let dir = fx.dir(name);
    write(
        &dir,
        "V1__big_table.sql",
        &format!(
            "CREATE TABLE {name}_big (id int PRIMARY KEY, v int NOT NULL);\n\
             INSERT INTO {name}_big SELECT g, g % 1000 FROM generate_series(1, 1000000) g;\n"
        ),
    );
    write(
        &dir,
        "V2__indexes.sql",
        &format!(
            "-- initguard:no-transaction\n\
             CREATE INDEX CONCURRENTLY {name}_md5 ON {name}_big (md5(v::text || id::text));\n\
             CREATE INDEX CONCURRENTLY {name}_v ON {name}_big (v);\n"
        ),
    );
    write(
        &dir,
        "V3__after.sql",
        &format!("INSERT INTO effects (tag, step) VALUES ('{name}', 3);\n"),
    );
    dir
}

fn index_valid(fx: &Fx, name: &str) -> Option<bool> {
    let v = fx.pg.sql_in(
        pg::APP_DB,
        &format!(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = '{name}'"
        ),
    );
    match v.as_str() {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

fn process_signal(pid: i32, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("send signal");
}

/// Whether SIGTERM waits, undelivered, on process `pid` (stopped, it cannot take it yet).
fn sigterm_pending(pid: i32) -> bool {
    let sigterm = 1u64 << (Signal::SIGTERM as i32 - 1);
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| {
            status.lines().any(|l| {
                l.strip_prefix("ShdPnd:")
                    .or_else(|| l.strip_prefix("SigPnd:"))
                    .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                    .is_some_and(|mask| mask & sigterm != 0)
            })
        })
        .unwrap_or(false)
}

fn cic_running(fx: &Fx) -> Option<String> {
    let pid = fx.pg.admin(
        "SELECT pid FROM pg_stat_progress_create_index \
         WHERE command = 'CREATE INDEX CONCURRENTLY' LIMIT 1",
    );
    (!pid.is_empty()).then_some(pid)
}

/// `CREATE INDEX CONCURRENTLY` on a 1M-row table while 4 more replicas wait for the lease: no
/// deadlock, all 5 exit 0, both indexes valid, the last step once.
#[test]
fn create_index_concurrently_with_four_waiting_replicas_does_not_deadlock() {
    let Some(fx) = Fx::start("cic") else { return };
    let dir = cic_set(&fx, "cic");
    let mut procs: Vec<Proc> = (0..5)
        .map(|_| fx.spawn(fx.steps("apply", &dir, "cic", &["--wait-timeout", "5m"])))
        .collect();
    wait_for("CREATE INDEX CONCURRENTLY to run", LIMIT, || {
        cic_running(&fx).is_some() || procs.iter_mut().all(|p| !p.running())
    });
    let waiting = procs.iter_mut().map(|p| p.running()).filter(|r| *r).count();
    let done: Vec<Done> = procs.into_iter().map(|p| p.finish(LIMIT)).collect();
    assert_eq!(
        waiting,
        5,
        "while the index is built, the applier and 4 waiters are all running; stderr:\n{}",
        done.iter()
            .map(|d| d.stderr.as_str())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    for d in &done {
        assert_ok(d, "an applier of the CIC set");
        assert!(!d.stderr.contains("deadlock"), "{}", d.stderr);
    }
    assert_eq!(index_valid(&fx, "cic_md5"), Some(true));
    assert_eq!(index_valid(&fx, "cic_v"), Some(true));
    assert_eq!(fx.effects(pg::APP_DB, "cic").get(&3).copied(), Some(1));
    let hist = fx.history_of(pg::APP_DB, "cic");
    assert_eq!(hist.len(), 3, "{hist:?}");
    assert!(hist.values().all(|h| h.state == "applied"), "{hist:?}");
    eprintln!(
        "cic: 5 replicas, 1 applier + 4 waiting through the CIC, all exit 0, indexes valid; test {}",
        fx.elapsed()
    );
}

/// The applier killed (-9) while `CREATE INDEX CONCURRENTLY` runs, in two ways: (a) the server
/// ends the session as well (as it does once it finds the connection dead), leaving the index
/// INVALID, which `validate` reports; (b) the server's backend goes on building the index for the
/// dead client while the next applier takes over. Either way the next apply resumes the step,
/// both indexes end valid, and the last step is applied once.
#[test]
fn create_index_concurrently_interrupted_resumes_and_the_index_is_valid() {
    let Some(fx) = Fx::start("cic-kill") else {
        return;
    };
    for (name, terminate) in [("cic_kill_a", true), ("cic_kill_b", false)] {
        let dir = cic_set(&fx, name);
        let args = ["--lock-ttl", "1s"];
        let mut p = fx.spawn(fx.steps("apply", &dir, name, &args));
        let mut cic = None;
        wait_for("CREATE INDEX CONCURRENTLY to run", LIMIT, || {
            cic = cic_running(&fx);
            cic.is_some() || !p.running()
        });
        let Some(cic) = cic else {
            panic!(
                "{name}: the apply did not reach the CIC step:\n{}",
                p.finish(LIMIT).stderr
            );
        };
        // Into the build, past its catalog entry.
        std::thread::sleep(Duration::from_millis(150));
        p.kill9();
        let md5 = format!("{name}_md5");
        if terminate {
            fx.pg.admin(&format!("SELECT pg_terminate_backend({cic})"));
            fx.wait_sessions_gone();
            // Ended 150 ms into the build of an index over 1M rows: it is left INVALID.
            assert_eq!(index_valid(&fx, &md5), Some(false), "{name}: left INVALID");
            let allow = ["--allow-changed", "--allow-missing", "--out-of-order"];
            for flags in [&[][..], &allow[..]] {
                let v = fx.run(fx.steps("validate", &dir, name, flags), LIMIT);
                assert_eq!(
                    v.code,
                    1,
                    "{name}: validate {flags:?} fails on the INVALID index:\n{}",
                    said(&v)
                );
                assert!(
                    said(&v).contains(&md5),
                    "validate names the index:\n{}",
                    said(&v)
                );
                assert!(
                    said(&v).contains("DROP INDEX CONCURRENTLY"),
                    "validate gives the statement to fix it:\n{}",
                    said(&v)
                );
            }
            // `status` lists it under the table too, with the same statement, and exits 0.
            let s = fx.run(fx.steps("status", &dir, name, &[]), LIMIT);
            assert_eq!(s.code, 0, "{name}: status:\n{}", said(&s));
            assert!(
                said(&s).contains(&md5) && said(&s).contains("DROP INDEX CONCURRENTLY"),
                "status names the index and the fix:\n{}",
                said(&s)
            );
        }
        assert_eq!(fx.effects(pg::APP_DB, name).get(&3), None);
        // Case b: the dead applier's build is held where it is (its server process stopped), so
        // that it is certainly still running when the next apply takes the lease, and let go
        // once that apply has asked the server to end it (SIGTERM pending on the process).
        let build: i32 = cic.trim().parse().expect("a backend pid");
        if !terminate {
            process_signal(build, Signal::SIGSTOP);
        }
        let again = fx.spawn(fx.steps("apply", &dir, name, &args));
        if !terminate {
            wait_for(
                "the next apply to end the dead applier's build",
                LIMIT,
                || sigterm_pending(build),
            );
            process_signal(build, Signal::SIGCONT);
        }
        let again = again.finish(LIMIT);
        assert_ok(&again, &format!("{name}: apply after the interrupted CIC"));
        if !terminate {
            assert!(
                again
                    .stderr
                    .contains(&format!("still building index {md5}")),
                "{name}: the next apply says it ends the dead applier's build:\n{}",
                again.stderr
            );
            wait_for("the ended build's process to exit", LIMIT, || {
                !support::pid_alive(build)
            });
        }
        assert_eq!(index_valid(&fx, &md5), Some(true), "{name}");
        assert_eq!(index_valid(&fx, &format!("{name}_v")), Some(true), "{name}");
        assert_eq!(
            fx.effects(pg::APP_DB, name).get(&3).copied(),
            Some(1),
            "{name}"
        );
        let hist = fx.history_of(pg::APP_DB, name);
        assert_eq!(hist.len(), 3, "{hist:?}");
        assert!(hist.values().all(|h| h.state == "applied"), "{hist:?}");
        eprintln!("{name}: resumed, indexes valid");
    }
    eprintln!("cic-kill: test {}", fx.elapsed());
}

/// A script step killed mid-way (kill -9 of the applier) with history in the target database:
/// `--on-interrupted fail` stops with 75 and runs nothing; the default reruns it with
/// `INITGUARD_PREVIOUS=interrupted`, then applies the rest; every effect once.
#[test]
fn interrupted_script_step_reruns_with_previous_interrupted_or_stops_with_fail() {
    let Some(fx) = Fx::start("script") else {
        return;
    };
    let key = "script";
    let dir = fx.dir(key);
    let log = fx.work.path().join("script.log");
    let started = fx.work.path().join("script.started");
    write(
        &dir,
        "V1__first.sql",
        "INSERT INTO effects (tag, step) VALUES ('script', 1);\n",
    );
    // The first run hangs until killed; later runs finish at once.
    write_script(
        &dir,
        "V2__load_fixtures.sh",
        &format!(
            "#!/bin/sh\necho \"$INITGUARD_PREVIOUS $INITGUARD_STEP_VERSION $INITGUARD_FENCING_TOKEN\" >> {log}\n\
             if [ ! -e {started} ]; then echo $$ > {started}; exec sleep 300; fi\n",
            log = log.display(),
            started = started.display()
        ),
    );
    write(
        &dir,
        "V3__last.sql",
        "INSERT INTO effects (tag, step) VALUES ('script', 3);\n",
    );
    let args = ["--target", &fx.target(), "--lock-ttl", "1s"];
    let mut a = fx.spawn(fx.steps("apply", &dir, key, &args));
    wait_for("the script step to start", LIMIT, || {
        started.exists() || !a.running()
    });
    assert!(started.exists(), "the script step ran");
    let script_pid = support::pid_written_to(
        &started,
        "the script step to write its pid",
        Duration::from_secs(10),
    );
    a.kill9();
    // No process of the killed run outlives its lease.
    wait_for("the script to be killed", Duration::from_secs(30), || {
        !support::pid_alive(script_pid)
    });
    let h = fx.history_of(pg::TARGET_DB, key);
    assert_eq!(h.get("1").map(|h| h.state.as_str()), Some("applied"));
    assert_eq!(
        h.get("2").map(|h| h.state.as_str()),
        Some("running"),
        "{h:?}"
    );

    let fail = fx.run(
        fx.steps(
            "apply",
            &dir,
            key,
            &[&args[..], &["--on-interrupted", "fail"]].concat(),
        ),
        LIMIT,
    );
    assert_eq!(
        fail.code, 75,
        "--on-interrupted fail stops:\n{}",
        fail.stderr
    );
    assert!(fail.stderr.contains("interrupted"), "{}", fail.stderr);
    assert_eq!(
        support::lines(&log).len(),
        1,
        "the script did not run again"
    );
    assert_eq!(fx.effects(pg::TARGET_DB, key).get(&3), None);

    let rerun = fx.run(fx.steps("apply", &dir, key, &args), LIMIT);
    assert_ok(&rerun, "apply with the default --on-interrupted rerun");
    let runs = support::lines(&log);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs[0].starts_with("none 2 "), "{runs:?}");
    assert!(runs[1].starts_with("interrupted 2 "), "{runs:?}");
    let tokens: Vec<u64> = runs
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        tokens.len() == 2 && tokens[0] < tokens[1],
        "the rerun has a newer fencing token: {runs:?}"
    );
    let eff = fx.effects(pg::TARGET_DB, key);
    assert_eq!(eff.get(&1).copied(), Some(1));
    assert_eq!(eff.get(&3).copied(), Some(1));
    let h = fx.history_of(pg::TARGET_DB, key);
    assert_eq!(h.len(), 3, "{h:?}");
    assert!(h.values().all(|h| h.state == "applied"), "{h:?}");
    eprintln!(
        "script: killed mid-script; fail → 75; rerun saw INITGUARD_PREVIOUS=interrupted; test {}",
        fx.elapsed()
    );
}

/// One tool's database: its history table, made with the tool's own layout (as its PostgreSQL
/// driver creates it), saying versions 1 and 2 are applied (and their tables exist); and the
/// directory as initguard reads it, with a third step that is new.
struct Adoption {
    tool: &'static str,
    /// DDL and rows of the tool's history.
    history: String,
    /// File names of steps 1, 2, 3.
    files: [String; 3],
}

fn adoptions() -> Vec<Adoption> {
    let sql = |n: usize| format!("CREATE TABLE a{n} (id int PRIMARY KEY);\n");
    vec![
        // Flyway's flyway_schema_history (its PostgreSQL createMetaDataTable.sql).
        Adoption {
            tool: "flyway",
            history: "CREATE TABLE flyway_schema_history (
                 installed_rank INT NOT NULL, version VARCHAR(50), description VARCHAR(200) NOT NULL,
                 type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL, checksum INTEGER,
                 installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),
                 execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL);
               ALTER TABLE flyway_schema_history ADD CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank);
               CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success);
               INSERT INTO flyway_schema_history VALUES
                 (1, '1', 'a1', 'SQL', 'V1__a1.sql', -1382443937, 'app', now(), 7, true),
                 (2, '2', 'a2', 'SQL', 'V2__a2.sql', 188224511, 'app', now(), 5, true);"
                .into(),
            files: ["V1__a1.sql".into(), "V2__a2.sql".into(), "V3__a3.sql".into()],
        },
        // golang-migrate's schema_migrations: one row, the current version, and its dirty flag.
        Adoption {
            tool: "golang-migrate",
            history: "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
                      INSERT INTO schema_migrations VALUES (2, false);"
                .into(),
            files: [
                "000001_a1.up.sql".into(),
                "000002_a2.up.sql".into(),
                "000003_a3.up.sql".into(),
            ],
        },
        // sqlx's _sqlx_migrations (its checksum: SHA-384 of the migration's SQL).
        Adoption {
            tool: "sqlx",
            history: format!(
                "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
                   version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                   installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
                   checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);
                 INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES
                   (20240101000001, 'a1', true, sha384(convert_to('{}', 'UTF8')), 4123456),
                   (20240101000002, 'a2', true, sha384(convert_to('{}', 'UTF8')), 3123456);",
                sql(1),
                sql(2)
            ),
            files: [
                "V20240101000001__a1.sql".into(),
                "V20240101000002__a2.sql".into(),
                "V20240101000003__a3.sql".into(),
            ],
        },
        // dbmate's schema_migrations: one row per applied version.
        Adoption {
            tool: "dbmate",
            history: "CREATE TABLE IF NOT EXISTS public.schema_migrations (version varchar(255) PRIMARY KEY);
                      INSERT INTO public.schema_migrations (version) VALUES ('20240101000001'), ('20240101000002');"
                .into(),
            files: [
                "V20240101000001__a1.sql".into(),
                "V20240101000002__a2.sql".into(),
                "V20240101000003__a3.sql".into(),
            ],
        },
    ]
}

fn table_exists(fx: &Fx, db: &str, name: &str) -> bool {
    fx.pg.sql_in(
        db,
        &format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = '{name}'"
        ),
    ) == "1"
}

/// `--adopt TOOL` against each tool's real history table: the versions it applied are taken as
/// applied (their CREATE TABLE would fail if run again), the new one is applied, and a second
/// apply skips. A dirty golang-migrate version is refused and reported, and nothing is applied.
#[test]
fn adoption_from_each_tool_applies_only_what_is_new_and_refuses_dirty() {
    let Some(fx) = Fx::start("adopt") else { return };
    for a in adoptions() {
        let db = format!("adopt_{}", a.tool.replace('-', "_"));
        fx.pg
            .admin(&format!("CREATE DATABASE {db} OWNER {}", pg::APP_USER));
        // As the app role, as the tool would have run: its tables are the app's.
        fx.pg
            .sql_in(&db, &format!("SET ROLE {}; {}", pg::APP_USER, a.history));
        fx.pg.sql_in(
            &db,
            &format!(
                "SET ROLE {}; CREATE TABLE a1 (id int PRIMARY KEY); CREATE TABLE a2 (id int PRIMARY KEY);",
                pg::APP_USER
            ),
        );
        let dir = fx.dir(&db);
        for (i, f) in a.files.iter().enumerate() {
            write(
                &dir,
                f,
                &format!("CREATE TABLE a{n} (id int PRIMARY KEY);\n", n = i + 1),
            );
        }
        let target = fx.pg.url_for(&db);
        let key = format!("adopt-{}", a.tool);
        let out = fx.run(
            fx.steps(
                "apply",
                &dir,
                &key,
                &["--target", &target, "--adopt", a.tool],
            ),
            LIMIT,
        );
        assert_ok(&out, &format!("apply --adopt {}", a.tool));
        assert!(
            table_exists(&fx, &db, "a3"),
            "{}: the new step applied",
            a.tool
        );
        let hist = fx.history_of(&db, &key);
        assert_eq!(hist.len(), 3, "{}: {hist:?}", a.tool);
        let adopted: Vec<&Hist> = hist.values().filter(|h| h.adopted_from.is_some()).collect();
        assert_eq!(adopted.len(), 2, "{}: two adopted: {hist:?}", a.tool);
        assert!(
            adopted
                .iter()
                .all(|h| h.adopted_from.as_deref() == Some(a.tool)),
            "{hist:?}"
        );
        assert!(hist.values().all(|h| h.state == "applied"), "{hist:?}");
        let again = fx.run(
            fx.steps(
                "apply",
                &dir,
                &key,
                &["--target", &target, "--adopt", a.tool],
            ),
            LIMIT,
        );
        assert_ok(&again, &format!("second apply --adopt {}", a.tool));
        assert_eq!(fx.history_of(&db, &key).len(), 3);
        eprintln!("adopt {}: 2 adopted, 1 applied", a.tool);
    }

    // A dirty golang-migrate version: migrate stopped half way through version 2.
    let db = "adopt_dirty";
    fx.pg
        .admin(&format!("CREATE DATABASE {db} OWNER {}", pg::APP_USER));
    fx.pg.sql_in(
        db,
        "SET ROLE app;
         CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
         INSERT INTO schema_migrations VALUES (2, true);
         CREATE TABLE a1 (id int PRIMARY KEY);",
    );
    let dir = fx.dir(db);
    for n in 1..=3 {
        write(
            &dir,
            &format!("{n:06}_a{n}.up.sql"),
            &format!("CREATE TABLE a{n} (id int PRIMARY KEY);\n"),
        );
    }
    let out = fx.run(
        fx.steps(
            "apply",
            &dir,
            "adopt-dirty",
            &["--target", &fx.pg.url_for(db), "--adopt", "golang-migrate"],
        ),
        LIMIT,
    );
    assert_ne!(
        out.code, 0,
        "a dirty version is not trusted:\n{}",
        out.stderr
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("dirty"),
        "the refusal says why:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(!table_exists(&fx, db, "a2"), "nothing applied");
    assert!(!table_exists(&fx, db, "a3"), "nothing applied");
    assert!(
        fx.history_of(db, "adopt-dirty")
            .values()
            .all(|h| h.state != "applied" || h.adopted_from.is_some()),
        "nothing recorded as applied by initguard"
    );
    eprintln!(
        "adopt: dirty golang-migrate refused with exit {}; test {}",
        out.code,
        fx.elapsed()
    );
}
