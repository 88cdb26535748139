//! End-to-end tests of the PostgreSQL store and SQL tasks, through the real `initguard` binary
//! against throwaway servers (tests/support/pg.rs). Every concurrency test counts side effects
//! and asserts the exact number; timings are printed, never asserted beyond loose bounds.

#[macro_use]
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::pg::{self, Pg};
use support::{code, stderr, wait_for};

/// The contract suite's view of a throwaway server (one per test, so tests stay independent).
struct PgFixture {
    pg: Pg,
}

impl PgFixture {
    fn start() -> Option<PgFixture> {
        Pg::start().map(|pg| PgFixture { pg })
    }
}

impl support::StoreFixture for PgFixture {
    fn url(&self) -> String {
        self.pg.url()
    }
    fn leases_lapse(&self) -> bool {
        true
    }
    /// Every row of initguard's tasks table, all columns, as the database prints it.
    fn stored(&self) -> Vec<support::Stored> {
        let rows = self.pg.sql_in(
            pg::APP_DB,
            "SELECT task || E'\\t' || row_to_json(t)::text FROM initguard.tasks t ORDER BY task",
        );
        rows.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(task, row)| support::Stored {
                task: task.to_string(),
                name: format!("initguard.tasks row {task}"),
                bytes: row.as_bytes().to_vec(),
            })
            .collect()
    }
}

// Without PostgreSQL installed (and CI unset) each scenario returns after Pg::start's SKIP line.
contract_tests!(match PgFixture::start() {
    Some(fx) => fx,
    None => return,
});

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_initguard")
}

/// `initguard` against `url`, in `work`, with no password or store settings leaking in.
fn ig(url: &str, work: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env("INITGUARD_STORE", url)
        .env("INITGUARD_LOG", "info")
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .env_remove("INITGUARD_STORE_PASSWORD_FILE")
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null());
    c
}

fn run_task(url: &str, work: &Path, key: &str, extra: &[&str], script: &str) -> Command {
    let mut c = ig(url, work);
    c.args(["run", "--key", key])
        .args(extra)
        .args(["--", "sh", "-c", script]);
    c
}

fn wait_output(child: Child) -> Output {
    child.wait_with_output().expect("wait for initguard")
}

fn record_of(url: &str, work: &Path, key: &str) -> serde_json::Value {
    let out = ig(url, work)
        .args(["status", key, "--json"])
        .output()
        .expect("status");
    assert!(out.status.success(), "status failed: {}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    all.as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A table in the app database that the app role owns.
fn effect_table(pg: &Pg, db: &str, name: &str) {
    pg.sql_in(db, &format!("CREATE TABLE {name} (k text NOT NULL)"));
    pg.sql_in(db, &format!("ALTER TABLE {name} OWNER TO {}", pg::APP_USER));
}

fn effects(pg: &Pg, db: &str, table: &str, k: &str) -> usize {
    pg.sql_in(db, &format!("SELECT count(*) FROM {table} WHERE k = '{k}'"))
        .parse()
        .expect("count")
}

fn task_state(pg: &Pg, task: &str) -> String {
    pg.sql_in(
        pg::APP_DB,
        &format!("SELECT coalesce(state, '') FROM initguard.tasks WHERE task = '{task}'"),
    )
}

#[test]
fn runs_once_then_skips_and_status_reads_the_record() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}", count.display());
    for _ in 0..2 {
        let out = run_task(&pg.url(), work.path(), "app/once", &[], &script)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    assert_eq!(count_lines(&count), 1);
    let rec = record_of(&pg.url(), work.path(), "app/once");
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["token"], 1);
    // The URL is logged without its password.
    let out = run_task(&pg.url(), work.path(), "app/once", &[], &script)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("postgres://app:***@127.0.0.1"), "{err}");
    assert!(!err.contains(pg::APP_PASSWORD), "{err}");
}

#[test]
fn thirty_processes_run_once_and_all_exit_0() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    // All 30 also race to create the tables on first use.
    let script = format!("echo run >> {}; sleep 2", count.display());
    let mut children: Vec<(usize, Child)> = (0..30)
        .map(|i| {
            let c = run_task(
                &pg.url(),
                work.path(),
                "fleet/migrate",
                &["--lock-ttl", "10s"],
                &script,
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
            (i, c)
        })
        .collect();
    let mut exits: Vec<(usize, std::process::ExitStatus)> = Vec::new();
    // Not a timing assertion: only a guard, so that a hang fails instead of never ending. How
    // soon the waiters follow the holder out is measured in benches/pg_store.rs.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !children.is_empty() {
        assert!(Instant::now() < deadline, "processes did not finish");
        children.retain_mut(|(i, c)| match c.try_wait() {
            Ok(Some(st)) => {
                exits.push((*i, st));
                false
            }
            _ => true,
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(count_lines(&count), 1, "exactly one execution");
    assert!(
        exits.iter().all(|(_, st)| st.success()),
        "all exit 0: {exits:?}"
    );
}

#[test]
fn wrong_password_exits_78_without_echoing_it() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let secret = "Wr0ng-S3cret-pw";
    let url = format!(
        "postgres://{}:{secret}@127.0.0.1:{}/{}",
        pg::APP_USER,
        pg.port,
        pg::APP_DB
    );
    let out = run_task(&url, work.path(), "k", &[], "true")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 78, "{err}");
    assert!(!err.contains(secret), "password echoed: {err}");
    assert!(err.contains("password authentication failed"), "{err}");

    // Same through PGPASSWORD.
    let out = run_task(&pg.url_without_password(), work.path(), "k", &[], "true")
        .env("PGPASSWORD", secret)
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(!stderr(&out).contains(secret));

    // The right password from a file works, and a missing one is a config problem too.
    let pwfile = work.path().join("pw");
    std::fs::write(&pwfile, format!("{}\n", pg::APP_PASSWORD)).unwrap();
    let out = run_task(&pg.url_without_password(), work.path(), "k", &[], "true")
        .env("INITGUARD_STORE_PASSWORD_FILE", &pwfile)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = ig(&pg.url_without_password(), work.path())
        .arg("--store-password-file")
        .arg(&pwfile)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run_task(&pg.url_without_password(), work.path(), "k2", &[], "true")
        .env("HOME", work.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
}

#[test]
fn unreachable_host_exits_69_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let url = format!("postgres://app:pw@127.0.0.1:{port}/app");
    let started = Instant::now();
    let out = run_task(&url, work.path(), "k", &[], "true")
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 69, "{err}");
    assert!(
        err.contains("unreachable") && err.contains("after 3 attempts"),
        "{err}"
    );
    eprintln!("unreachable store reported after {} ms", took.as_millis());
    // Documented bound (README): a refused connection exits 69 after 3 attempts, "a few
    // seconds", and any unanswered store within 10 s; 30 s is generous for a loaded machine.
    assert!(took < Duration::from_secs(30));
}

#[test]
fn sql_syntax_error_records_failed_with_the_server_message() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let out = ig(&pg.url(), work.path())
        .args([
            "run",
            "--key",
            "sql/bad",
            "--sql-inline",
            "SELECT 1;\nSELEC 2;",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let rec = record_of(&pg.url(), work.path(), "sql/bad");
    assert_eq!(rec["state"], "failed");
    let reason = rec["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("syntax error at or near \"SELEC\"") && reason.contains("line 2, column 1"),
        "{reason}"
    );
    assert!(stderr(&out).contains("syntax error"), "{}", stderr(&out));
}

/// Whether initguard's tables exist: they are created when the store is first opened.
fn store_was_opened(pg: &Pg) -> bool {
    pg.sql_in(
        pg::APP_DB,
        "SELECT to_regclass('initguard.tasks') IS NOT NULL",
    ) == "t"
}

/// `run --sql-inline SQL` (or `--sql FILE` when `file` is given) for `key`.
fn run_sql(pg: &Pg, work: &Path, key: &str, sql: &str, file: bool) -> Output {
    let mut c = ig(&pg.url(), work);
    c.args(["run", "--key", key]);
    if file {
        let path = work.join(format!("{}.sql", key.replace('/', "_")));
        std::fs::write(&path, sql).unwrap();
        c.arg("--sql").arg(path);
    } else {
        // `=`: a script may start with `--`, which clap would take for a flag.
        c.arg(format!("--sql-inline={sql}"));
    }
    c.output().unwrap()
}

#[test]
fn sql_with_transaction_control_is_refused_before_anything_is_sent() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    let scripts = [
        (
            "INSERT INTO effect VALUES ('x'); COMMIT; INSERT INTO effect VALUES ('x');",
            "COMMIT",
            2,
            1,
            34,
        ),
        (
            "INSERT INTO effect VALUES ('x');\n-- done\n/* so */ end;\nINSERT INTO effect VALUES ('x');",
            "END",
            2,
            3,
            10,
        ),
        (
            "INSERT INTO effect VALUES ('x'); RollBack; INSERT INTO effect VALUES ('x');",
            "ROLLBACK",
            2,
            1,
            34,
        ),
        (
            "/* first */ BEGIN;\nINSERT INTO effect VALUES ('x');\nCOMMIT;",
            "BEGIN",
            1,
            1,
            13,
        ),
        (
            "-- seed\nstart transaction;\nINSERT INTO effect VALUES ('x');",
            "START TRANSACTION",
            1,
            2,
            1,
        ),
        (
            "INSERT INTO effect VALUES ('x');\n  Prepare Transaction 'g1';",
            "PREPARE TRANSACTION",
            2,
            2,
            3,
        ),
        (
            "INSERT INTO effect VALUES ('x'); COMMIT PREPARED 'g1';",
            "COMMIT PREPARED",
            2,
            1,
            34,
        ),
        ("INSERT INTO effect VALUES ('x'); abort;", "ABORT", 2, 1, 34),
    ];
    for (i, (sql, what, index, line, column)) in scripts.iter().enumerate() {
        for file in [false, true] {
            let key = format!("sql/tc{i}-{file}");
            let out = run_sql(&pg, work.path(), &key, sql, file);
            let err = stderr(&out);
            assert_eq!(code(&out), 2, "{sql:?}: {err}");
            let flag = if file { "--sql" } else { "--sql-inline" };
            let want = format!(
                "initguard: {flag}: statement {index} (line {line}, column {column}) is {what}: "
            );
            assert!(
                err.starts_with(&want),
                "{sql:?}: want {want:?}, got {err:?}"
            );
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains("nothing was run"), "{err}");
        }
    }
    assert_eq!(
        effects(&pg, pg::APP_DB, "effect", "x"),
        0,
        "0 rows committed"
    );
    assert!(
        !store_was_opened(&pg),
        "refused before the store was even opened"
    );
}

#[test]
fn sql_with_those_words_in_literals_bodies_comments_and_identifiers_runs_and_commits() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    let scripts = [
        "INSERT INTO effect VALUES ('a; COMMIT; b') , ('ok');",
        "INSERT INTO effect VALUES (E'it\\'s; ROLLBACK; --'), ('ok');",
        "-- COMMIT;\n/* ROLLBACK; /* nested BEGIN; */ END; */\nINSERT INTO effect VALUES ('ok');",
        "CREATE FUNCTION seed() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  INSERT INTO effect VALUES ('ok');\nEND\n$$;\nSELECT seed();",
        "CREATE FUNCTION seed2() RETURNS void LANGUAGE sql BEGIN ATOMIC\n  INSERT INTO effect VALUES ('ok');\nEND;\nSELECT seed2();",
        "CREATE TABLE \"commit\" (\"end\" text); INSERT INTO \"commit\" VALUES ('begin'); INSERT INTO effect SELECT 'ok' FROM \"commit\";",
        "INSERT INTO effect VALUES ($tag$ START TRANSACTION; $$ PREPARE TRANSACTION 'x'; $tag$), ('ok');",
        "SAVEPOINT s; INSERT INTO effect VALUES ('gone'); ROLLBACK TO SAVEPOINT s; INSERT INTO effect VALUES ('ok'); RELEASE s;",
    ];
    for (i, sql) in scripts.iter().enumerate() {
        let out = run_sql(&pg, work.path(), &format!("sql/words{i}"), sql, i % 2 == 1);
        assert_eq!(code(&out), 0, "{sql:?}: {}", stderr(&out));
        assert_eq!(
            effects(&pg, pg::APP_DB, "effect", "ok"),
            i + 1,
            "{sql:?} committed"
        );
    }
    assert_eq!(
        effects(&pg, pg::APP_DB, "effect", "gone"),
        0,
        "rolled back to the savepoint"
    );
}

/// DO blocks and procedures can COMMIT only outside a transaction block; inside initguard's,
/// the server refuses them: the task fails, and nothing of it is committed.
#[test]
fn commits_inside_do_blocks_and_procedures_fail_and_roll_back() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    pg.sql_in(
        pg::APP_DB,
        &format!(
            "CREATE PROCEDURE commits() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO effect VALUES ('x'); COMMIT; END $$;
             ALTER PROCEDURE commits() OWNER TO {}",
            pg::APP_USER
        ),
    );
    for (key, sql) in [
        (
            "sql/do",
            "INSERT INTO effect VALUES ('x'); DO $$ BEGIN INSERT INTO effect VALUES ('x'); COMMIT; END $$;",
        ),
        (
            "sql/call",
            "INSERT INTO effect VALUES ('x'); CALL commits();",
        ),
    ] {
        let out = run_sql(&pg, work.path(), key, sql, false);
        assert_eq!(code(&out), 1, "{sql:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid transaction termination"),
            "{}",
            stderr(&out)
        );
        assert_eq!(record_of(&pg.url(), work.path(), key)["state"], "failed");
    }
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "x"), 0);
}

#[test]
fn sql_file_runs_exactly_once_across_concurrent_processes() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    let file = work.path().join("seed.sql");
    std::fs::write(
        &file,
        "INSERT INTO effect VALUES ('seed');\nSELECT pg_sleep(0.3);\n",
    )
    .unwrap();
    let children: Vec<Child> = (0..10)
        .map(|_| {
            ig(&pg.url(), work.path())
                .args(["run", "--key", "sql/seed", "--sql"])
                .arg(&file)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert!(wait_output(c).status.success());
    }
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "seed"), 1);
    assert_eq!(task_state(&pg, "sql/seed"), "succeeded");
    // A changed file is a new fingerprint: it runs again, once.
    std::fs::write(&file, "INSERT INTO effect VALUES ('seed');\n").unwrap();
    let out = ig(&pg.url(), work.path())
        .args(["run", "--key", "sql/seed", "--sql"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "seed"), 2);
}

#[test]
fn sql_task_killed_at_random_instants_commits_effect_and_record_together() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    // The effect table's deferred trigger sleeps inside COMMIT (20 ms, or what the SQL asks
    // for), so that kills land in COMMIT too, and COMMIT can be aimed at.
    pg.sql_in(
        pg::APP_DB,
        "CREATE TABLE effect (k text NOT NULL);
         CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           PERFORM pg_sleep(coalesce(nullif(current_setting('initguard_test.commit_sleep', true), '')::float8, 0.02));
           RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON effect
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
         ALTER TABLE effect OWNER TO app;",
    );
    let sessions_gone = || {
        pg.admin("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'initguard'")
            == "0"
    };
    let run = |key: &str, sql: &str| {
        ig(&pg.url(), work.path())
            .args(["run", "--key", key, "--lock-ttl", "1s", "--sql-inline", sql])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Learn how long a whole run takes, so that kill instants spread over all of it.
    let t0 = Instant::now();
    let out = wait_output(run("kill/probe", "INSERT INTO effect VALUES ('probe')"));
    assert!(out.status.success());
    let span = t0.elapsed().as_micros() as u64;
    let random_trials = 20;
    let aimed_trials = 4;
    let (mut before, mut after, mut in_commit) = (0, 0, 0);
    for trial in 0..random_trials + aimed_trials {
        let key = format!("kill/t{trial}");
        let aimed = trial >= random_trials;
        let sql = if aimed {
            format!(
                "SET LOCAL initguard_test.commit_sleep = '0.5'; INSERT INTO effect VALUES ('{key}')"
            )
        } else {
            format!("INSERT INTO effect VALUES ('{key}')")
        };
        let mut child = run(&key, &sql);
        if aimed {
            let committing = "SELECT count(*) FROM pg_stat_activity WHERE query = 'COMMIT' \
                              AND state = 'active' AND application_name = 'initguard'";
            wait_for("COMMIT to start", Duration::from_secs(20), || {
                pg.admin(committing) == "1"
            });
        } else {
            std::thread::sleep(Duration::from_micros(rand::random_range(
                0..=span + span / 4,
            )));
        }
        let _ = child.kill();
        let _ = child.wait();
        // Let the server finish with the dead client's session before judging.
        wait_for(
            "the killed holder's sessions to end",
            Duration::from_secs(20),
            sessions_gone,
        );
        let n = effects(&pg, pg::APP_DB, "effect", &key);
        let state = task_state(&pg, &key);
        assert!(n <= 1, "trial {trial}: effect applied {n} times");
        assert_eq!(
            n == 1,
            state == "succeeded",
            "trial {trial} (aimed at COMMIT: {aimed}): effect {n} but record {state:?}"
        );
        match (n, aimed) {
            (1, true) => in_commit += 1,
            (1, false) => after += 1,
            _ => before += 1,
        }
        // A re-run completes it exactly once (after the dead holder's lease lapses).
        let out = wait_output(run(&key, &sql));
        assert_eq!(code(&out), 0, "trial {trial} re-run");
        assert_eq!(effects(&pg, pg::APP_DB, "effect", &key), 1, "trial {trial}");
        assert_eq!(task_state(&pg, &key), "succeeded");
    }
    eprintln!(
        "kill -9 trials: {random_trials} at random instants over a ~{} ms run ({before} before commit, {after} after) \
         and {aimed_trials} during COMMIT ({in_commit} committed); effect and success row always together",
        span / 1000
    );
}

#[test]
fn sql_target_keeps_the_completion_row_in_the_target_database() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::TARGET_DB, "effect");
    let target = pg.url_for(pg::TARGET_DB);
    let args = |key: &str| {
        vec![
            "run".to_string(),
            "--key".into(),
            key.into(),
            "--sql-inline".into(),
            "INSERT INTO effect VALUES ('t')".into(),
            "--sql-target".into(),
            target.clone(),
            "--lock-ttl".into(),
            "1s".into(),
        ]
    };
    let out = ig(&pg.url(), work.path())
        .args(args("tgt"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains(pg::APP_PASSWORD));
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "t"), 1);
    assert_eq!(
        pg.sql_in(
            pg::TARGET_DB,
            "SELECT count(*) FROM initguard.sql_completions WHERE task = 'tgt'"
        ),
        "1"
    );
    assert_eq!(task_state(&pg, "tgt"), "succeeded");
    // A holder that committed in the target but died before recording success in the store:
    // the next one finds the completion row and records success without running the SQL again.
    pg.sql_in(
        pg::APP_DB,
        "UPDATE initguard.tasks SET state = 'running', record = jsonb_set(record, '{state}', '\"running\"') WHERE task = 'tgt'",
    );
    let out = ig(&pg.url(), work.path())
        .args(args("tgt"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "t"), 1, "ran twice");
    let rec = record_of(&pg.url(), work.path(), "tgt");
    assert_eq!(rec["state"], "succeeded");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("already holds"),
        "{rec}"
    );
}

/// An SQL task's `--done-if` check is the one command it runs: given the store and the
/// `--sql-target` by the environment (`INITGUARD_STORE`, `INITGUARD_SQL_TARGET`), it inherits
/// neither (nor a password file), unless `--pass-store-env`.
#[test]
fn the_done_if_check_of_an_sql_task_inherits_no_store_settings() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::TARGET_DB, "effect");
    let password = work.path().join("password");
    std::fs::write(&password, format!("{}\n", pg::APP_PASSWORD)).unwrap();
    let settings = [
        "INITGUARD_STORE",
        "INITGUARD_STORE_PASSWORD_FILE",
        "INITGUARD_SQL_TARGET",
    ];
    for (key, pass) in [("env-plain", false), ("env-passed", true)] {
        let seen = work.path().join(key);
        let check = format!("env > {}; exit 1", seen.display());
        let mut c = ig(&pg.url_without_password(), work.path());
        c.env("INITGUARD_STORE_PASSWORD_FILE", &password)
            .env("INITGUARD_SQL_TARGET", pg.url_for(pg::TARGET_DB))
            .args(["run", "--key", key, "--done-if", &check])
            .args(["--sql-inline", "INSERT INTO effect VALUES ('e')"]);
        if pass {
            c.arg("--pass-store-env");
        }
        let out = c.output().unwrap();
        assert_eq!(code(&out), 0, "{key}: {}", stderr(&out));
        let env = std::fs::read_to_string(&seen).expect("the check ran");
        for var in settings {
            assert_eq!(
                env.lines().any(|l| l.starts_with(&format!("{var}="))),
                pass,
                "{key}: {var} in the check's environment:\n{env}"
            );
        }
        assert!(env.contains(&format!("INITGUARD_KEY={key}")), "{env}");
    }
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "e"), 2);
}

/// `reset` of a `--sql-target` task deletes its completion rows in the target, so that the next
/// run runs the SQL again (instead of finding the completion and skipping it); without the
/// target, reset refuses and changes nothing.
#[test]
fn reset_of_an_sql_target_task_clears_its_completion_so_the_sql_runs_again() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::TARGET_DB, "effect");
    let target = pg.url_for(pg::TARGET_DB);
    let key = "tgt/reset";
    let run = || {
        ig(&pg.url(), work.path())
            .args([
                "run",
                "--key",
                key,
                "--sql-inline",
                "INSERT INTO effect VALUES ('r')",
            ])
            .args(["--sql-target", &target])
            .output()
            .unwrap()
    };
    let completions = || {
        pg.sql_in(
            pg::TARGET_DB,
            &format!("SELECT count(*) FROM initguard.sql_completions WHERE task = '{key}'"),
        )
    };
    let out = run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "r"), 1);
    let rec = record_of(&pg.url(), work.path(), key);
    let recorded = rec["sql_target"].as_str().unwrap_or_default().to_string();
    assert!(recorded.contains(pg::TARGET_DB), "{rec}");
    assert!(
        !recorded.contains(pg::APP_PASSWORD),
        "no password in the record: {recorded}"
    );

    // Without the target: refused, in one line naming the flag; nothing changes.
    let out = ig(&pg.url(), work.path())
        .args(["reset", key])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let errors: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("initguard: "))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", stderr(&out));
    let err = &errors[0];
    assert!(
        err.contains(&format!("run `initguard reset {key} --sql-target URL`"))
            && err.contains(&recorded)
            && err.contains("nothing was reset"),
        "{err}"
    );
    assert_eq!(record_of(&pg.url(), work.path(), key)["state"], "succeeded");
    assert_eq!(completions(), "1");

    // With it: the completion row goes, the next run runs the SQL again.
    let out = ig(&pg.url(), work.path())
        .args(["reset", key, "--sql-target", &target])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deleted 1 completion row(s)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(completions(), "0");
    let out = run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        effects(&pg, pg::TARGET_DB, "effect", "r"),
        2,
        "the SQL ran twice"
    );
    let rec = record_of(&pg.url(), work.path(), key);
    assert_eq!(rec["state"], "succeeded");
    assert!(rec["reason"].is_null(), "ran, not found done: {rec}");

    // INITGUARD_SQL_TARGET, as the task's own environment sets it, works the same.
    let out = ig(&pg.url(), work.path())
        .args(["reset", key])
        .env("INITGUARD_SQL_TARGET", &target)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&run()), 0);
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "r"), 3);
}

#[test]
fn holder_connection_terminated_mid_run_never_overlaps_runs() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("runs.log");
    // Each run logs start, a beat every 50 ms, and end, with the time in ns.
    let script = format!(
        "echo \"start $RUN $(date +%s%N)\" >> {log}; i=0; while [ $i -lt 80 ]; do echo \"beat $RUN $(date +%s%N)\" >> {log}; sleep 0.05; i=$((i+1)); done; echo \"end $RUN $(date +%s%N)\" >> {log}",
        log = log.display()
    );
    let url_a = format!("{}?application_name=holder_a", pg.url());
    let url_b = format!("{}?application_name=holder_b", pg.url());
    let a = run_task(
        &url_a,
        work.path(),
        "term/k",
        &["--lock-ttl", "3s"],
        &script,
    )
    .env("RUN", "a")
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("a to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|s| s.contains("start a"))
    });
    let b = run_task(
        &url_b,
        work.path(),
        "term/k",
        &["--lock-ttl", "3s"],
        &script,
    )
    .env("RUN", "b")
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // A single terminated connection: the holder reconnects and keeps its lease.
    pg.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder_a'");
    std::thread::sleep(Duration::from_millis(1500));
    // Now it cannot come back: its lease must lapse, and its child must die before b runs.
    pg.admin(&format!("ALTER ROLE {} NOLOGIN", pg::APP_USER));
    pg.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder_a'");
    let out_a = wait_output(a);
    pg.admin(&format!("ALTER ROLE {} LOGIN", pg::APP_USER));
    let out_b = wait_output(b);
    assert_eq!(code(&out_a), 75, "a: {}", stderr(&out_a));
    assert!(stderr(&out_a).contains("lost"), "{}", stderr(&out_a));
    assert_eq!(code(&out_b), 0, "b: {}", stderr(&out_b));
    let text = std::fs::read_to_string(&log).unwrap();
    let times = |kind: &str, run: &str| -> Vec<u128> {
        text.lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                (p.next() == Some(kind) && p.next() == Some(run))
                    .then(|| p.next().and_then(|t| t.parse().ok()))
                    .flatten()
            })
            .collect()
    };
    assert_eq!(times("start", "a").len(), 1);
    assert_eq!(times("start", "b").len(), 1, "b ran once");
    assert!(times("end", "a").is_empty(), "a's child was killed");
    let a_last = times("beat", "a").into_iter().max().unwrap();
    let b_first = times("start", "b")[0];
    assert!(
        a_last < b_first,
        "runs overlap: a beat at {a_last}, b started at {b_first}"
    );
    eprintln!(
        "a's child last beat {} ms before b started",
        (b_first - a_last) / 1_000_000
    );
}

#[test]
fn store_stopped_mid_run_exits_cleanly_and_the_next_run_proceeds() {
    let Some(mut pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}; sleep 4", count.display());
    let a = run_task(
        &pg.url(),
        work.path(),
        "down/k",
        &["--lock-ttl", "3s"],
        &script,
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("the run to start", Duration::from_secs(20), || {
        count_lines(&count) == 1
    });
    pg.kill();
    let out = wait_output(a);
    let err = stderr(&out);
    eprintln!(
        "holder with its store stopped: exit {}: {}",
        code(&out),
        err.lines().last().unwrap_or("")
    );
    assert!(matches!(code(&out), 69 | 75), "{err}");
    assert!(
        err.lines().last().unwrap_or("").starts_with("initguard: "),
        "{err}"
    );
    // While it is down, a new run says so.
    let out = run_task(&pg.url(), work.path(), "down/k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    pg.restart();
    let out = run_task(
        &pg.url(),
        work.path(),
        "down/k",
        &["--lock-ttl", "3s"],
        &script,
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(count_lines(&count), 2);
    let rec = record_of(&pg.url(), work.path(), "down/k");
    assert_eq!(rec["state"], "succeeded");
}

#[test]
fn paused_holder_is_fenced_off_and_exits_75() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}; sleep 0.5", count.display());
    let a = run_task(
        &pg.url(),
        work.path(),
        "pause/k",
        &["--lock-ttl", "1s"],
        &script,
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("a to start its command", Duration::from_secs(20), || {
        count_lines(&count) == 1
    });
    let a_pid = nix::unistd::Pid::from_raw(a.id() as i32);
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // b waits for a's lease to lapse (by the database clock), then runs and succeeds.
    let out_b = run_task(
        &pg.url(),
        work.path(),
        "pause/k",
        &["--lock-ttl", "1s"],
        &script,
    )
    .output()
    .unwrap();
    assert_eq!(code(&out_b), 0, "{}", stderr(&out_b));
    assert!(stderr(&out_b).contains("interrupted"), "{}", stderr(&out_b));
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out_a = wait_output(a);
    assert_eq!(code(&out_a), 75, "{}", stderr(&out_a));
    assert!(stderr(&out_a).contains("lost"), "{}", stderr(&out_a));
    let rec = record_of(&pg.url(), work.path(), "pause/k");
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["token"], 2, "the record is b's: {rec}");
    assert_eq!(count_lines(&count), 2);
}

#[test]
fn newer_table_layout_is_refused_with_65() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let out = run_task(&pg.url(), work.path(), "k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    pg.sql_in(pg::APP_DB, "UPDATE initguard.layout SET version = 99");
    let out = run_task(&pg.url(), work.path(), "k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("table layout")
            && err.contains("schema 99")
            && err.contains("upgrade initguard"),
        "{err}"
    );
}

#[test]
fn schema_parameter_keeps_tables_apart() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let url = format!("{}?schema=ops_init", pg.url());
    let out = run_task(&url, work.path(), "k", &[], "true")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        pg.sql_in(
            pg::APP_DB,
            "SELECT count(*) FROM ops_init.tasks WHERE state = 'succeeded'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql_in(
            pg::APP_DB,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'initguard'"
        ),
        "0"
    );
    // --pg-schema does the same, and wins over ?schema=.
    let out = ig(&url, work.path())
        .args([
            "--pg-schema",
            "other_init",
            "run",
            "--key",
            "k",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        pg.sql_in(pg::APP_DB, "SELECT count(*) FROM other_init.tasks"),
        "1"
    );
    let out = ig(&url, work.path())
        .args(["--pg-schema", "Bad;Name", "run", "--key", "k", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

/// libfaketime, preloaded: the process's wall clock runs `offset` (e.g. "+1h") off the real one.
fn with_clock_off(mut c: Command, offset: &str) -> Option<Command> {
    // The multi-threaded variant: initguard's runtime has threads of its own.
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    if !support::require(
        "libfaketime (Debian package faketime)",
        Path::new(lib).exists(),
    ) {
        return None;
    }
    c.env("LD_PRELOAD", lib)
        .env("FAKETIME", offset)
        .env("DONT_FAKE_MONOTONIC", "1");
    Some(c)
}

/// Leases are judged by the database's clock, never a client's: a holder whose clock is an hour
/// slow (its lease would look lapsed by a true clock) and a waiter whose clock is an hour fast
/// change nothing. Each waiter gives up at its --wait-timeout (the two within the holder's 5 s
/// run, under its 8 s lease) and runs nothing; the holder finishes under its one token.
#[test]
fn leases_are_judged_by_the_database_clock_not_the_clients() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let marker = work.path().join("ran");
    let holder = run_task(
        &pg.url(),
        work.path(),
        "skew/k",
        &["--lock-ttl", "8s"],
        &format!("touch {}; sleep 5", started.display()),
    );
    let Some(mut holder) = with_clock_off(holder, "-1h") else {
        return;
    };
    let holder = holder
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the holder to start", Duration::from_secs(20), || {
        started.exists()
    });
    for offset in ["+1h", "-1h"] {
        let waiter = run_task(
            &pg.url(),
            work.path(),
            "skew/k",
            &["--wait-timeout", "1500ms"],
            &format!("touch {}", marker.display()),
        );
        let out = with_clock_off(waiter, offset).unwrap().output().unwrap();
        assert_eq!(code(&out), 75, "waiter {offset}: {}", stderr(&out));
        assert!(
            !marker.exists(),
            "a waiter {offset} took a live holder's lease"
        );
    }
    let out = wait_output(holder);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(record_of(&pg.url(), work.path(), "skew/k")["token"], 1);
}

/// Refused before the store is read or contacted: not even a corrupt record is read, no unsafe
/// state directory judged, no server contacted, on every kind of store but PostgreSQL.
#[test]
fn sql_tasks_need_a_postgres_store() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join(".initguard");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("k.json"), "{ not a record").unwrap();
    std::os::unix::fs::symlink(&state, work.path().join("linked")).unwrap();
    // A port nothing listens on: a store that would be contacted would fail otherwise.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    drop(silent);
    let zk = format!("zookeeper://127.0.0.1:{port}");
    let etcd = format!("etcd://127.0.0.1:{port}");
    // `kubernetes:` with no kubeconfig and no service account: opening it would fail (78).
    let mut stores = vec!["file:.initguard", "file:linked", "kubernetes:"];
    if cfg!(feature = "zookeeper") {
        stores.push(&zk);
    }
    if cfg!(feature = "etcd") {
        stores.push(&etcd);
    }
    for store in stores {
        let out = ig(store, work.path())
            .env("KUBECONFIG", work.path().join("no-kubeconfig"))
            .args(["run", "--key", "k", "--sql-inline", "SELECT 1"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{store}: {}", stderr(&out));
        let err = stderr(&out);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.contains("does not support SQL tasks") && last.contains("postgres://"),
            "{store}: {err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(state.join("k.json")).unwrap(),
        "{ not a record",
        "the record is left as it was"
    );
}

#[test]
fn tls_modes_connect_and_verify_as_libpq_does() {
    let Some(pg) = Pg::start() else { return };
    let Some(ca) = pg.enable_tls() else { return };
    let work = tempfile::tempdir().unwrap();
    let base = |host: &str, params: &str| {
        format!(
            "postgres://{}:{}@{host}:{}/{}?{params}",
            pg::APP_USER,
            pg::APP_PASSWORD,
            pg.port,
            pg::APP_DB
        )
    };
    let ca = ca.display().to_string();
    let run = |url: String, key: &str| {
        let out = run_task(&url, work.path(), key, &[], "true")
            .output()
            .unwrap();
        (code(&out), stderr(&out))
    };
    // Plain TCP is refused by the server for this role: proves the others really use TLS.
    let (c, err) = run(base("127.0.0.1", "sslmode=disable"), "tls/plain");
    assert_eq!(c, 78, "{err}");
    let (c, err) = run(base("127.0.0.1", "sslmode=require"), "tls/require");
    assert_eq!(c, 0, "{err}");
    let (c, err) = run(
        base(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "tls/full-ip",
    );
    assert_eq!(c, 0, "{err}");
    let (c, err) = run(
        base(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        "tls/full-name",
    );
    assert_eq!(c, 0, "{err}");
    let (c, err) = run(
        base("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        "tls/ca",
    );
    assert_eq!(c, 0, "{err}");
    // A certificate from a CA we were not told to trust: a configuration problem, not a retry.
    let (c, err) = run(base("127.0.0.1", "sslmode=verify-full"), "tls/untrusted");
    assert_eq!(c, 78, "{err}");
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn sql_task_stopped_by_sigterm_is_cancelled_and_rolled_back() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    let child = ig(&pg.url(), work.path())
        .args(["run", "--key", "sql/term", "--sql-inline"])
        .arg("INSERT INTO effect VALUES ('term'); SELECT pg_sleep(30)")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)' AND state = 'active' AND pid <> pg_backend_pid()";
    wait_for("the SQL to run", Duration::from_secs(20), || {
        pg.admin(sleeping) == "1"
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = wait_output(child);
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    // The statement is cancelled server-side, not left running until it ends by itself.
    wait_for("the SQL to be cancelled", Duration::from_secs(5), || {
        pg.admin(sleeping) == "0"
    });
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "term"), 0);
    assert_eq!(task_state(&pg, "sql/term"), "interrupted");
}

#[test]
fn paused_sql_holder_is_fenced_and_the_effect_happens_once() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    let sql = "INSERT INTO effect VALUES ('p'); SELECT pg_sleep(1.5)";
    let args = [
        "run",
        "--key",
        "sql/pause",
        "--lock-ttl",
        "1s",
        "--sql-inline",
        sql,
    ];
    let a = ig(&pg.url(), work.path())
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(1.5)' AND state = 'active' AND pid <> pg_backend_pid()";
    wait_for("a's SQL to run", Duration::from_secs(20), || {
        pg.admin(sleeping) == "1"
    });
    let a_pid = nix::unistd::Pid::from_raw(a.id() as i32);
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let out_b = ig(&pg.url(), work.path()).args(args).output().unwrap();
    assert_eq!(code(&out_b), 0, "{}", stderr(&out_b));
    nix::sys::signal::kill(a_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out_a = wait_output(a);
    assert_eq!(code(&out_a), 75, "{}", stderr(&out_a));
    assert_eq!(
        effects(&pg, pg::APP_DB, "effect", "p"),
        1,
        "effect applied once"
    );
    let rec = record_of(&pg.url(), work.path(), "sql/pause");
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["token"], 2, "the record is b's: {rec}");
}

#[test]
fn sql_tasks_wait_for_locks_without_the_store_lock_timeout() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let check = "DO $$ BEGIN IF current_setting('lock_timeout') <> '0' THEN \
                 RAISE EXCEPTION 'lock_timeout is %', current_setting('lock_timeout'); END IF; END $$";
    let out = ig(&pg.url(), work.path())
        .args(["run", "--key", "sql/locks", "--sql-inline", check])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn waiter_logs_the_holder_and_gives_up_after_wait_timeout() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let go = work.path().join("go");
    // The holder runs until told to finish: the waiter must give up while it still holds the
    // lease, however slow the machine (it used to sleep 4 s and the waiter had to beat that).
    let script = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        go.display()
    );
    let mut holder = run_task(&pg.url(), work.path(), "wait/k", &[], &script)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the holder to run", Duration::from_secs(20), || {
        started.exists()
    });
    let t0 = Instant::now();
    let out = run_task(
        &pg.url(),
        work.path(),
        "wait/k",
        &["--wait-timeout", "1s"],
        "true",
    )
    .output()
    .unwrap();
    let waited = t0.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 75, "{err}");
    assert!(err.contains("waiting for wait/k held by host"), "{err}");
    assert!(err.contains("gave up waiting"), "{err}");
    assert!(
        holder.try_wait().unwrap().is_none(),
        "gave up while the lease was still held"
    );
    // Documented bound: --wait-timeout (1 s), plus at most one bounded store call (10 s).
    assert!(waited < Duration::from_secs(11), "waited {waited:?}");
    std::fs::write(&go, "").unwrap();
    assert!(wait_output(holder).status.success());
}

/// Outside Kubernetes "this holder" means this host: `release` reports a free lease, and leaves
/// the lease of a live holder on this host alone (the contract suite covers Pods and dead holders).
#[test]
fn release_reports_a_free_lease_and_keeps_a_live_local_holders() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let out = ig(&pg.url(), work.path())
        .args(["release", "rel/k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to release"),
        "{}",
        stderr(&out)
    );
    let started = work.path().join("started");
    let holder = run_task(
        &pg.url(),
        work.path(),
        "rel/k",
        &["--lock-ttl", "3s"],
        &format!("touch {}; sleep 6", started.display()),
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for("the holder to run", Duration::from_secs(20), || {
        started.exists()
    });
    let out = ig(&pg.url(), work.path())
        .args(["release", "rel/k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not released: the holder"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg.sql_in(
            pg::APP_DB,
            "SELECT count(*) FROM initguard.tasks WHERE task = 'rel/k' AND expires_at IS NOT NULL"
        ),
        "1",
        "still held"
    );
    let out = wait_output(holder);
    assert_eq!(code(&out), 0, "the holder kept its lease and finished");
    assert_eq!(task_state(&pg, "rel/k"), "succeeded");
}

#[test]
fn corrupt_or_newer_records_exit_65_untouched_and_reset_repairs_corrupt_ones() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}", count.display());
    let out = run_task(&pg.url(), work.path(), "bad/k", &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let record = || {
        pg.sql_in(
            pg::APP_DB,
            "SELECT record::text FROM initguard.tasks WHERE task = 'bad/k'",
        )
    };
    // From a newer initguard: refused, never overwritten, not even by reset.
    pg.sql_in(
        pg::APP_DB,
        "UPDATE initguard.tasks SET record = jsonb_set(record, '{schema}', '2') WHERE task = 'bad/k'",
    );
    let before = record();
    let out = run_task(&pg.url(), work.path(), "bad/k", &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
    let out = ig(&pg.url(), work.path())
        .args(["reset", "bad/k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert_eq!(record(), before, "a newer record was overwritten");
    // Corrupt (valid JSON, not a record): refused; reset replaces it; the next run runs.
    pg.sql_in(
        pg::APP_DB,
        "UPDATE initguard.tasks SET record = '{\"schema\": 1, \"nonsense\": true}' WHERE task = 'bad/k'",
    );
    let out = run_task(&pg.url(), work.path(), "bad/k", &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("initguard reset bad/k"),
        "{}",
        stderr(&out)
    );
    let out = ig(&pg.url(), work.path())
        .args(["reset", "bad/k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run_task(&pg.url(), work.path(), "bad/k", &[], &script)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(count_lines(&count), 2);
}

#[test]
fn sql_target_task_killed_at_random_instants_keeps_effect_and_completion_together() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::TARGET_DB, "effect");
    let target = pg.url_for(pg::TARGET_DB);
    let run = |key: &str| {
        ig(&pg.url(), work.path())
            .args([
                "run",
                "--key",
                key,
                "--lock-ttl",
                "1s",
                "--sql-target",
                &target,
            ])
            .args([
                "--sql-inline",
                &format!("INSERT INTO effect VALUES ('{key}')"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let t0 = Instant::now();
    assert!(wait_output(run("tkill/probe")).status.success());
    let span = t0.elapsed().as_micros() as u64;
    let trials = 12;
    let (mut before, mut after) = (0, 0);
    for trial in 0..trials {
        let key = format!("tkill/t{trial}");
        let mut child = run(&key);
        std::thread::sleep(Duration::from_micros(rand::random_range(
            0..=span + span / 4,
        )));
        let _ = child.kill();
        let _ = child.wait();
        wait_for(
            "the killed holder's sessions to end",
            Duration::from_secs(20),
            || {
                pg.admin(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'initguard'",
                ) == "0"
            },
        );
        let n = effects(&pg, pg::TARGET_DB, "effect", &key);
        let done = pg.sql_in(
            pg::TARGET_DB,
            &format!("SELECT count(*) FROM initguard.sql_completions WHERE task = '{key}'"),
        );
        // The target schema may not exist yet if the kill came before first use.
        let done: usize = if done.is_empty() {
            0
        } else {
            done.parse().unwrap()
        };
        assert!(n <= 1, "trial {trial}: effect applied {n} times");
        assert_eq!(
            n, done,
            "trial {trial}: effect {n} but completion rows {done}"
        );
        if n == 1 {
            after += 1
        } else {
            before += 1
        }
        let out = wait_output(run(&key));
        assert_eq!(code(&out), 0, "trial {trial} re-run");
        assert_eq!(
            effects(&pg, pg::TARGET_DB, "effect", &key),
            1,
            "trial {trial}"
        );
        assert_eq!(task_state(&pg, &key), "succeeded");
    }
    eprintln!(
        "--sql-target kill -9 trials: {trials} over a ~{} ms run: {before} before commit, {after} after; effect and completion row always together",
        span / 1000
    );
}

/// A command that waits for `go` after writing `ready`, then exits 0.
fn gated_script(work: &Path, count: &Path) -> String {
    format!(
        "echo run >> {c}; touch {r}; while [ ! -e {g} ]; do sleep 0.02; done",
        c = count.display(),
        r = work.join("ready").display(),
        g = work.join("go").display()
    )
}

#[test]
fn success_is_recorded_when_the_store_returns_within_the_lease() {
    let Some(mut pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let run = run_task(
        &pg.url(),
        work.path(),
        "final/back",
        &["--lock-ttl", "30s"],
        &gated_script(work.path(), &count),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("the command to start", Duration::from_secs(20), || {
        work.path().join("ready").exists()
    });
    pg.kill();
    std::fs::write(work.path().join("go"), "").unwrap();
    // The command has exited 0 while the store is down; bring it back after 5 s.
    std::thread::sleep(Duration::from_secs(5));
    pg.restart();
    let out = wait_output(run);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        record_of(&pg.url(), work.path(), "final/back")["state"],
        "succeeded"
    );
    // Recorded: the next run skips instead of running it again.
    let out = run_task(
        &pg.url(),
        work.path(),
        "final/back",
        &[],
        &gated_script(work.path(), &count),
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(count_lines(&count), 1, "the command ran once");
}

#[test]
fn success_not_recorded_in_time_says_so_and_done_if_prevents_a_second_run() {
    let Some(mut pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let run = run_task(
        &pg.url(),
        work.path(),
        "final/gone",
        &["--lock-ttl", "3s"],
        &gated_script(work.path(), &count),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for("the command to start", Duration::from_secs(20), || {
        work.path().join("ready").exists()
    });
    pg.kill();
    std::fs::write(work.path().join("go"), "").unwrap();
    let out = wait_output(run);
    let err = stderr(&out);
    assert_eq!(code(&out), 69, "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with(
            "initguard: final/gone: the command succeeded, but its success could not be recorded"
        ) && last.contains("the next run will find this run interrupted and run the command again"),
        "one line saying what happened and what comes next: {err}"
    );
    pg.restart();
    let out = run_task(
        &pg.url(),
        work.path(),
        "final/gone",
        &["--done-if", &format!("test -s {}", count.display())],
        &gated_script(work.path(), &count),
    )
    .output()
    .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("adopted"), "{}", stderr(&out));
    assert_eq!(
        count_lines(&count),
        1,
        "--done-if kept it from running twice"
    );
}

/// A rollout larger than the database's connection limit: 100 contenders on a server that
/// allows 40 connections. Those turned away ("too many connections") back off and try again
/// within --wait-timeout instead of exiting 69: one execution, 100 exits 0, one acquisition.
#[test]
fn more_contenders_than_connections_run_once_and_all_exit_0() {
    let Some(mut pg) = Pg::start() else { return };
    pg.restart_with_max_connections(40);
    let work = tempfile::tempdir().unwrap();
    let count = work.path().join("count");
    let script = format!("echo run >> {}; sleep 2", count.display());
    // The application's connections (initguard's, all as the app role), sampled while they run.
    let sessions = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
        pg::APP_USER
    );
    let (outs, held) = pg.sample(&sessions, Duration::from_millis(50), || {
        let children: Vec<Child> = (0..100)
            .map(|_| {
                run_task(
                    &pg.url(),
                    work.path(),
                    "fleet/big",
                    &["--lock-ttl", "10s", "--wait-timeout", "120s"],
                    &script,
                )
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
            })
            .collect();
        children
            .into_iter()
            .map(wait_output)
            .collect::<Vec<Output>>()
    });
    let failed: Vec<String> = outs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| format!("{}: {}", code(o), stderr(o).lines().last().unwrap_or("")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 100 failed: {failed:?}",
        failed.len()
    );
    assert_eq!(count_lines(&count), 1, "exactly one execution");
    // Waiters that kept their connections would hold all the server has (40) for the holder's
    // 2 s; giving them up at a fifth (8), the waiting fleet holds about that many.
    let mut sorted = held.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    eprintln!("app connections while 100 contend: median {median}, samples {held:?}");
    assert!(sorted.len() >= 10, "sampled while they ran: {held:?}");
    assert!(
        median <= 16,
        "the waiters gave their connections up: median {median} of 40, samples {held:?}"
    );
    let rec = record_of(&pg.url(), work.path(), "fleet/big");
    assert_eq!(
        rec["token"], 1,
        "one lease acquisition: the waiters skipped without one"
    );
}

/// `wait` computes an SQL task's fingerprint as `run` does: the same `--sql-inline` waits for
/// that success, with the target in its redacted form (another password is the same target), an
/// empty `INITGUARD_SQL_TARGET` read as none by both (a manifest may set it for every task), and
/// another target or SQL text is another success. A target that is no URL is refused at once
/// (2), as `run` refuses it.
#[test]
fn wait_computes_an_sql_tasks_fingerprint_as_run_does() {
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    effect_table(&pg, pg::APP_DB, "effect");
    effect_table(&pg, pg::TARGET_DB, "effect");
    let sql = "INSERT INTO effect VALUES ('w')";
    let wait = |target: Option<&str>, timeout: &str| {
        let mut c = ig(&pg.url(), work.path());
        c.args(["wait", "--key", "wsql", "--wait-timeout", timeout])
            .args(["--sql-inline", sql])
            .env("INITGUARD_SQL_TARGET", "");
        if let Some(t) = target {
            c.args(["--sql-target", t]);
        }
        c.output().unwrap()
    };
    // Started before the run, as a waiting container is.
    let mut waiter = ig(&pg.url(), work.path());
    waiter
        .args(["wait", "--key", "wsql", "--wait-timeout", "60s"])
        .args(["--sql-inline", sql])
        .env("INITGUARD_SQL_TARGET", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiter = waiter.spawn().unwrap();
    let out = ig(&pg.url(), work.path())
        .env("INITGUARD_SQL_TARGET", "")
        .args(["run", "--key", "wsql", "--sql-inline", sql])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "w"), 1);
    let out = wait_output(waiter);
    assert_eq!(
        code(&out),
        0,
        "empty target, as run read it: {}",
        stderr(&out)
    );
    let out = wait(Some(&pg.url_for(pg::TARGET_DB)), "1s");
    assert_eq!(code(&out), 75, "another target: {}", stderr(&out));
    let out = ig(&pg.url(), work.path())
        .args(["wait", "--key", "wsql", "--wait-timeout", "1s"])
        .args(["--sql-inline", "INSERT INTO effect VALUES ('v')"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 75, "another SQL text: {}", stderr(&out));

    let target = pg.url_for(pg::TARGET_DB);
    let out = ig(&pg.url(), work.path())
        .args([
            "run",
            "--key",
            "wsql-t",
            "--sql-inline",
            sql,
            "--sql-target",
            &target,
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let rotated = target.replace(pg::APP_PASSWORD, "rotated-pw");
    let out = ig(&pg.url(), work.path())
        .args([
            "wait",
            "--key",
            "wsql-t",
            "--wait-timeout",
            "5s",
            "--sql-inline",
            sql,
        ])
        .args(["--sql-target", &rotated])
        .output()
        .unwrap();
    assert_eq!(
        code(&out),
        0,
        "the target's password is not the task: {}",
        stderr(&out)
    );

    let before = record_of(&pg.url(), work.path(), "wsql");
    let out = wait(Some("mysql://db/app"), "60s");
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--sql-target") && stderr(&out).contains("postgres://"),
        "{}",
        stderr(&out)
    );
    assert_eq!(record_of(&pg.url(), work.path(), "wsql"), before);
    // And a run that is no SQL task ignores the empty variable.
    let out = ig(&pg.url(), work.path())
        .env("INITGUARD_SQL_TARGET", "")
        .args(["run", "--key", "plain", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(effects(&pg, pg::APP_DB, "effect", "w"), 1);
    assert_eq!(effects(&pg, pg::TARGET_DB, "effect", "w"), 1);
}

/// Outside Kubernetes (no `POD_UID`) a lease belongs to its host: `release` on another host (a
/// UTS namespace with another host name) frees nothing, on the holder's host it frees a killed
/// holder's lease before its TTL, and a waiter runs. A holder with a `POD_UID` is not freed by a
/// `release` without one on the same host.
#[test]
fn release_without_pod_uid_frees_only_a_dead_holder_of_this_host() {
    let root = nix::unistd::geteuid().is_root();
    let unshare = Path::new("/usr/bin/unshare").exists();
    if !support::require("root and unshare (another host name)", root && unshare) {
        return;
    }
    let Some(pg) = Pg::start() else { return };
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let release = |key: &str, host: Option<&str>| {
        let mut c = match host {
            Some(host) => {
                let mut c = Command::new("/usr/bin/unshare");
                c.args(["-u", "/bin/sh", "-c"])
                    .arg(format!("hostname {host} && exec {} release {key}", bin()));
                c
            }
            None => {
                let mut c = Command::new(bin());
                c.args(["release", key]);
                c
            }
        };
        c.current_dir(work.path())
            .env("INITGUARD_STORE", pg.url())
            .env("INITGUARD_LOG", "info")
            .env_remove("POD_UID")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (key, holder_uid) in [("rel/host", None), ("rel/pod", Some("uid-web-0"))] {
        let _ = std::fs::remove_file(&started);
        let mut holder = ig(&pg.url(), work.path());
        if let Some(uid) = holder_uid {
            holder.env("POD_UID", uid).env("POD_NAME", "web-0");
        }
        holder
            .args(["run", "--key", key, "--lock-ttl", "12s", "--"])
            .args([
                "sh",
                "-c",
                &format!("touch {}; sleep 60", started.display()),
            ]);
        support::kill_once_started(holder, &started);
        let killed = Instant::now();
        let out = release(key, Some("elsewhere"));
        assert_eq!(code(&out), 0, "{key}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("nothing released"),
            "{key} from another host: {}",
            stderr(&out)
        );
        let out = release(key, None);
        assert_eq!(code(&out), 0, "{key}: {}", stderr(&out));
        if holder_uid.is_some() {
            assert!(
                stderr(&out).contains("nothing released"),
                "{key}: a Pod's lease is not this host's: {}",
                stderr(&out)
            );
            continue;
        }
        assert!(
            stderr(&out).contains("released the lease"),
            "{key}: {}",
            stderr(&out)
        );
        let ran = work.path().join("ran");
        let out = run_task(
            &pg.url(),
            work.path(),
            key,
            &["--lock-ttl", "12s", "--wait-timeout", "0"],
            &format!("echo ran >> {}", ran.display()),
        )
        .output()
        .unwrap();
        assert_eq!(
            code(&out),
            0,
            "free at once after the release: {}",
            stderr(&out)
        );
        assert!(killed.elapsed() < Duration::from_secs(12), "before the TTL");
        assert_eq!(count_lines(&ran), 1);
    }
}
