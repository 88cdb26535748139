//! `initguard steps` against a real PostgreSQL target (tests/support/pg.rs), through the built
//! binary: SQL steps applied once, the skip that never connects to the target, the store's
//! database as the default target, a failed step's message and what stays applied, status and
//! validation from the target's history, repair there, script steps' history in the target,
//! concurrent appliers. Side effects are counted and asserted exactly.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::pg::{self, Pg};
use support::{bin, code, lines, stderr, wait_for};

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    pg: Pg,
}

impl Fx {
    fn start() -> Option<Fx> {
        let pg = Pg::start()?;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("db");
        fs::create_dir(&dir).unwrap();
        Some(Fx {
            log: root.join("log"),
            dir,
            root,
            pg,
            _tmp: tmp,
        })
    }

    /// `initguard` with `store`; no password anywhere but in PGPASSWORD.
    fn ig(&self, store: &str) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(&self.root)
            .env("INITGUARD_STORE", store)
            .env("INITGUARD_LOG", "info")
            .env("PGPASSWORD", pg::APP_PASSWORD)
            .env("LOG", &self.log)
            .env_remove("PGPASSFILE")
            .env_remove("INITGUARD_STEPS_TARGET")
            .env_remove("INITGUARD_KEY")
            .env_remove("INITGUARD_FENCING_TOKEN")
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .stdin(Stdio::null());
        c
    }

    fn file_store(&self) -> String {
        format!("file:{}", self.root.join("state").display())
    }

    fn target(&self) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            pg::APP_USER,
            self.pg.port,
            pg::TARGET_DB
        )
    }

    /// `steps SUB DIR` on the file store with `--target` the target database.
    fn steps(&self, sub: &str, extra: &[&str]) -> Output {
        self.ig(&self.file_store())
            .args(["steps", sub])
            .arg(&self.dir)
            .args(["--target", &self.target()])
            .args(extra)
            .output()
            .unwrap()
    }

    /// A proxy in front of the server, and the store's database reached through it.
    fn proxied_store(&self) -> (support::proxy::Proxy, String) {
        let proxy = support::proxy::Proxy::start(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            self.pg.port,
        )));
        let url = format!(
            "postgres://{}@127.0.0.1:{}/{}",
            pg::APP_USER,
            proxy.port,
            pg::APP_DB
        );
        (proxy, url)
    }

    /// `steps apply DIR` with the store's own database as the target (no `--target`).
    fn apply_cmd(&self) -> Command {
        let mut c = self.ig(&self.pg.url_without_password());
        c.args(["steps", "apply"]).arg(&self.dir);
        c
    }

    fn apply_on_store(&self) -> Output {
        self.apply_cmd().output().unwrap()
    }

    /// The tables of the store's database's `public` schema, comma-separated.
    fn public_tables(&self) -> String {
        self.query(
            pg::APP_DB,
            "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
        )
    }

    fn sql(&self, name: &str, text: &str) {
        fs::write(self.dir.join(name), text).unwrap();
    }

    fn script(&self, name: &str, body: &str) {
        let path = self.dir.join(name);
        fs::write(
            &path,
            format!("#!/bin/sh\necho \"$INITGUARD_STEP_VERSION $INITGUARD_PREVIOUS\" >> \"$LOG\"\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn query(&self, db: &str, sql: &str) -> String {
        self.pg.sql_in(db, sql)
    }

    /// `state` of every history row of the set, in step order.
    fn history(&self, db: &str, set: &str) -> Vec<String> {
        self.query(
            db,
            &format!(
                "SELECT step || ' ' || state FROM initguard.steps_history WHERE set_name = '{set}' ORDER BY started_at, step"
            ),
        )
        .lines()
        .map(str::to_string)
        .collect()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn last_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or_default().to_string()
}

fn three_tables(fx: &Fx) {
    fx.sql("V1__one.sql", "CREATE TABLE t1 (id int primary key);\n");
    fx.sql(
        "V2__two.sql",
        "CREATE TABLE t2 (id int primary key);\nINSERT INTO t2 VALUES (1), (2);\n",
    );
    fx.sql("V3__three.sql", "CREATE TABLE t3 (id int primary key);\n");
}

#[test]
fn sql_steps_apply_once_and_a_second_start_skips_without_the_target() {
    let Some(mut fx) = Fx::start() else { return };
    three_tables(&fx);
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied 3 steps of steps-db"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fx.query(pg::TARGET_DB, "SELECT count(*) FROM t2"), "2");
    let rows = fx.query(
        pg::TARGET_DB,
        "SELECT count(*) FROM initguard.steps_history WHERE set_name = 'steps-db' AND state = 'applied'",
    );
    assert_eq!(rows, "3");
    // The password never reaches the record or the output.
    let state = fs::read_to_string(fx.root.join("state/steps-db.json")).unwrap_or_default();
    assert!(!state.contains(pg::APP_PASSWORD));
    assert!(!stderr(&out).contains(pg::APP_PASSWORD));

    // Nothing new: skipped from the record alone, with the database gone.
    fx.pg.kill();
    let again = fx.steps("apply", &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("skipped"), "{}", stderr(&again));
}

#[test]
fn the_store_database_is_the_default_target_and_a_failed_step_keeps_the_ones_before_it() {
    let Some(fx) = Fx::start() else { return };
    fx.sql("V1__one.sql", "CREATE TABLE t1 (id int primary key);\n");
    fx.sql(
        "V2__bad.sql",
        "CREATE TABLE t2 (id int primary key);\n\nINSERT INTO t2 VALUES ('not a number');\n",
    );
    fx.sql("V3__later.sql", "CREATE TABLE t3 (id int primary key);\n");
    let apply = || fx.apply_on_store();
    let out = apply();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(line.contains("(V2__bad.sql) failed"), "{line}");
    assert!(
        line.contains("line 3, column 24"),
        "where in the file: {line}"
    );
    assert!(
        line.contains("not a number") || line.contains("invalid input"),
        "{line}"
    );
    let tables = fx.public_tables();
    assert_eq!(tables, "t1", "V1 applied, V2 rolled back, V3 not run");
    assert_eq!(
        fx.history(pg::APP_DB, "steps-db"),
        ["1 applied", "2 failed"]
    );

    // Fixed: the failed step runs, then the next one.
    fx.sql("V2__bad.sql", "CREATE TABLE t2 (id int primary key);\n");
    let out = apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let tables = fx.public_tables();
    assert_eq!(tables, "t1,t2,t3");
}

/// The first start makes the store's tables; a later one reads its record in the same round trip
/// as its layout check, and trusts it only from tables of this build's layout.
#[test]
fn a_set_done_on_store_tables_of_a_newer_layout_is_refused_not_skipped() {
    let Some(fx) = Fx::start() else { return };
    fx.sql("V1__one.sql", "CREATE TABLE t1 (id int primary key);\n");
    let out = fx.apply_on_store();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.query(pg::APP_DB, "SELECT version FROM initguard.layout"),
        "1"
    );
    let again = fx.apply_on_store();
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("skipped"), "{}", stderr(&again));

    fx.query(pg::APP_DB, "UPDATE initguard.layout SET version = 99");
    let out = fx.apply_on_store();
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("table layout") && line.contains("upgrade initguard"),
        "{line}"
    );
    assert!(!stderr(&out).contains("skipped"), "{}", stderr(&out));
    assert_eq!(fx.history(pg::APP_DB, "steps-db"), ["1 applied"]);
}

/// Step transactions are sent ahead: the next one is on its way before the one before it has
/// answered. Behind a changed repeatable step that now fails (its earlier version is applied, so
/// history has it `applied` under another checksum), the next step must not run.
#[test]
fn a_step_sent_behind_a_failing_one_does_not_run() {
    let Some(fx) = Fx::start() else { return };
    fx.sql("V1__one.sql", "CREATE TABLE t1 (id int primary key);\n");
    fx.sql("R__a_view.sql", "CREATE VIEW va AS SELECT 1 AS one;\n");
    fx.sql("R__b_view.sql", "CREATE VIEW vb AS SELECT 2 AS two;\n");
    let apply = || fx.apply_on_store();
    let out = apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.sql(
        "R__a_view.sql",
        "CREATE OR REPLACE VIEW va AS SELECT * FROM no_such_table;\n",
    );
    fx.sql(
        "R__b_view.sql",
        "CREATE OR REPLACE VIEW vb AS SELECT 3 AS two;\n",
    );
    let out = apply();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("(R__a_view.sql) failed"),
        "{}",
        last_line(&out)
    );
    assert_eq!(
        fx.query(pg::APP_DB, "SELECT two FROM vb"),
        "2",
        "R__b_view must not run after R__a_view failed"
    );
    let states = fx.query(
        pg::APP_DB,
        "SELECT string_agg(step || ' ' || state, ',' ORDER BY step) FROM initguard.steps_history WHERE set_name = 'steps-db'",
    );
    assert_eq!(states, "1 applied,R:a view failed,R:b view applied");

    // Fixed: both run.
    fx.sql(
        "R__a_view.sql",
        "CREATE OR REPLACE VIEW va AS SELECT 1 AS one;\n",
    );
    let out = apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fx.query(pg::APP_DB, "SELECT two FROM vb"), "3");
}

/// A step that fails only at COMMIT (a deferred constraint) fails like any other: recorded
/// `failed` with the server's message, and the step sent behind it does not run.
#[test]
fn a_step_failing_at_commit_is_a_failed_step_and_the_next_does_not_run() {
    let Some(fx) = Fx::start() else { return };
    fx.sql(
        "V1__tables.sql",
        "CREATE TABLE parent (id int primary key);\n\
         CREATE TABLE child (pid int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);\n",
    );
    fx.sql("V2__orphan.sql", "INSERT INTO child VALUES (42);\n");
    fx.sql("V3__later.sql", "CREATE TABLE t3 (id int primary key);\n");
    let out = fx.apply_on_store();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(line.contains("(V2__orphan.sql) failed"), "{line}");
    assert!(
        line.contains("23503"),
        "the server's foreign-key error: {line}"
    );
    assert_eq!(fx.query(pg::APP_DB, "SELECT count(*) FROM child"), "0");
    assert_eq!(
        fx.query(
            pg::APP_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't3'"
        ),
        "0",
        "V3 must not run after V2 failed"
    );
    assert_eq!(
        fx.history(pg::APP_DB, "steps-db"),
        ["1 applied", "2 failed"]
    );
    let recorded = fx.query(
        pg::APP_DB,
        "SELECT error FROM initguard.steps_history WHERE set_name = 'steps-db' AND step = '2'",
    );
    assert!(
        recorded.contains("23503") && recorded.contains("foreign key"),
        "the history keeps the server's message: {recorded}"
    );
}

/// A NUL byte is the one thing the client library cannot send in SQL text: such a step is
/// refused before any of its transaction is sent, so neither it nor its history row is
/// committed, and the steps after it do not run.
#[test]
fn a_step_with_a_nul_byte_is_refused_before_anything_is_sent() {
    let Some(fx) = Fx::start() else { return };
    fx.sql("V1__one.sql", "CREATE TABLE t1 (id int primary key);\n");
    fx.sql(
        "V2__nul.sql",
        "CREATE TABLE t2 (id int primary key);\nSELECT 'a\0b';\n",
    );
    fx.sql("V3__later.sql", "CREATE TABLE t3 (id int primary key);\n");
    let out = fx.apply_on_store();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let line = last_line(&out);
    assert!(
        line.contains("(V2__nul.sql) was not run: the file has a NUL byte (line 2, column 10)"),
        "{line}"
    );
    assert_eq!(fx.public_tables(), "t1");
    assert_eq!(fx.history(pg::APP_DB, "steps-db"), ["1 applied"]);
}

/// A cancellation that cannot reach the server (the target behind a proxy that stopped passing
/// bytes) delays the exit by at most 1 s: SIGTERM during a step, and `apply` exits 143 well
/// before the cancellation task's own 10 s bound.
#[test]
fn an_unreachable_target_delays_the_exit_after_sigterm_by_at_most_a_second() {
    let Some(fx) = Fx::start() else { return };
    let (proxy, _) = fx.proxied_store();
    let target = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        pg::APP_USER,
        proxy.port,
        pg::TARGET_DB
    );
    fx.sql(
        "V1__slow.sql",
        "CREATE TABLE t1 (id int primary key);\nSELECT pg_sleep(3);\n",
    );
    let child = fx
        .ig(&fx.file_store())
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .args(["--target", &target])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' \
                    AND state = 'active' AND pid <> pg_backend_pid()";
    wait_for("the step to run", Duration::from_secs(20), || {
        fx.pg.admin(sleeping) == "1"
    });
    let hole = proxy.blackholed();
    let sent = std::time::Instant::now();
    support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let (out, took) = support::exit_within("the applier", child, sent, Duration::from_secs(20));
    eprintln!(
        "exited {} {} ms after SIGTERM",
        code(&out),
        took.as_millis()
    );
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert!(took < Duration::from_secs(3), "{took:?}: {}", stderr(&out));
    drop(hole);
    wait_for("the step to end", Duration::from_secs(20), || {
        fx.pg.admin(sleeping) == "0"
    });
}

/// SIGTERM while an SQL step runs: `apply` exits 143, the statement is cancelled on the server
/// (not left to run until it ends by itself), the step rolls back, and the step sent behind it
/// does not run. The next `apply` applies both.
#[test]
fn sigterm_cancels_the_running_step_and_the_one_sent_behind_it_does_not_run() {
    let Some(fx) = Fx::start() else { return };
    fx.sql(
        "V1__slow.sql",
        "CREATE TABLE t1 (id int primary key);\nSELECT pg_sleep(30);\n",
    );
    fx.sql("V2__next.sql", "CREATE TABLE t2 (id int primary key);\n");
    let child = fx.apply_cmd().stderr(Stdio::piped()).spawn().unwrap();
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' \
                    AND state = 'active' AND pid <> pg_backend_pid()";
    wait_for("the step to run", Duration::from_secs(20), || {
        fx.pg.admin(sleeping) == "1"
    });
    support::signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    wait_for("the step to be cancelled", Duration::from_secs(5), || {
        fx.pg.admin(sleeping) == "0"
    });
    assert_eq!(fx.public_tables(), "", "neither step may have committed");
    assert!(fx.history(pg::APP_DB, "steps-db").is_empty());

    fx.sql("V1__slow.sql", "CREATE TABLE t1 (id int primary key);\n");
    let out = fx.apply_on_store();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(fx.public_tables(), "t1,t2");
}

#[test]
fn status_validate_and_repair_read_and_fix_the_target_history() {
    let Some(fx) = Fx::start() else { return };
    three_tables(&fx);
    assert_eq!(code(&fx.steps("apply", &[])), 0);
    fx.sql("V4__four.sql", "CREATE TABLE t4 (id int);\n");
    fx.sql(
        "V1__one.sql",
        "CREATE TABLE t1 (id int primary key); -- edited\n",
    );

    let out = fx.steps("status", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table
            .lines()
            .any(|l| l.contains("one") && l.contains("changed")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("four") && l.contains("pending")),
        "{table}"
    );
    let out = fx.steps("status", &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["steps"].as_array().map(Vec::len), Some(4), "{json}");
    assert_eq!(json["problems"][0]["kind"], "changed", "{json}");

    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).contains("V1__one.sql"), "{}", stdout(&out));
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't4'"
        ),
        "0",
        "refused before anything was applied"
    );
    let out = fx.steps("repair", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        !stdout(&out).trim().is_empty(),
        "repair says what it changed"
    );
    assert_eq!(code(&fx.steps("validate", &[])), 0);
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't4'"
        ),
        "1"
    );
}

#[test]
fn dry_run_reads_the_target_and_changes_nothing() {
    let Some(fx) = Fx::start() else { return };
    three_tables(&fx);
    let out = fx.steps("apply", &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = stdout(&out);
    assert_eq!(
        plan.lines().filter(|l| l.contains(".sql")).count(),
        3,
        "{plan}"
    );
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'initguard'"
        ),
        "0",
        "not even the history table"
    );
    assert!(!fx.root.join("state").exists(), "no record, no lease");
}

/// With a `postgres://` store and no `--target`, the store's database is the target, and a start
/// with nothing new reads the record over the store's one connection: counted at a proxy in
/// front of the server, the skip opens exactly one connection.
#[test]
fn a_skip_on_the_store_database_opens_one_connection() {
    let Some(fx) = Fx::start() else { return };
    three_tables(&fx);
    let (proxy, store) = fx.proxied_store();
    let apply = || {
        fx.ig(&store)
            .args(["steps", "apply"])
            .arg(&fx.dir)
            .output()
            .unwrap()
    };
    let out = apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("applied 3 steps"), "{}", stderr(&out));
    let before = proxy.connections();
    let out = apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    assert_eq!(proxy.connections() - before, 1, "connections of the skip");
}

/// `status`, `validate` and `--dry-run` only read, on a PostgreSQL store too: with the store in
/// one database and the target in another, neither gets initguard's tables (the store's `open`
/// would create them). Once `apply` has made them, `status` reads the history.
#[test]
fn status_validate_and_dry_run_create_nothing_in_the_store_or_the_target_database() {
    let Some(fx) = Fx::start() else { return };
    three_tables(&fx);
    let store = fx.pg.url_without_password();
    let run = |sub: &str, extra: &[&str]| {
        fx.ig(&store)
            .args(["steps", sub])
            .arg(&fx.dir)
            .args(["--target", &fx.target()])
            .args(extra)
            .output()
            .unwrap()
    };
    let read_only = |sub: &str, extra: &[&str]| {
        let out = run(sub, extra);
        assert_eq!(code(&out), 0, "{sub}: {}", stderr(&out));
        out
    };
    let schemas = || {
        [pg::APP_DB, pg::TARGET_DB].map(|db| {
            fx.query(
                db,
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'initguard'",
            )
        })
    };
    let status = read_only("status", &[]);
    assert_eq!(
        stdout(&status)
            .lines()
            .filter(|l| l.split_whitespace().skip(2).take(2).eq(["sql", "pending"]))
            .count(),
        3,
        "{}",
        stdout(&status)
    );
    read_only("validate", &[]);
    read_only("apply", &["--dry-run"]);
    assert_eq!(schemas(), ["0", "0"], "store's and target's databases");
    let out = run("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(schemas(), ["1", "1"]);
    let status = read_only("status", &[]);
    assert_eq!(
        stdout(&status)
            .lines()
            .filter(|l| l.split_whitespace().skip(2).take(2).eq(["sql", "applied"]))
            .count(),
        3,
        "{}",
        stdout(&status)
    );
    // Store tables of a newer layout are refused, not read as empty.
    fx.query(pg::APP_DB, "UPDATE initguard.layout SET version = 99");
    let out = run("status", &[]);
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("upgrade initguard"),
        "{}",
        stderr(&out)
    );
}

/// The target given by INITGUARD_STEPS_TARGET with its password in a file, the store's password
/// in a file too: a script step sees none of them.
#[test]
fn script_steps_get_none_of_the_target_and_store_settings() {
    let Some(fx) = Fx::start() else { return };
    let settings = [
        "INITGUARD_STORE",
        "INITGUARD_STORE_PASSWORD_FILE",
        "INITGUARD_STEPS_TARGET",
        "INITGUARD_STEPS_TARGET_PASSWORD_FILE",
    ];
    let seen = support::presence_words(&settings);
    fx.script("V1__env.sh", &format!("echo \"env{seen}\" >> \"$LOG\""));
    let password = fx.root.join("password");
    fs::write(&password, format!("{}\n", pg::APP_PASSWORD)).unwrap();
    let out = fx
        .ig(&fx.file_store())
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .env("INITGUARD_STEPS_TARGET", fx.target())
        .env("INITGUARD_STEPS_TARGET_PASSWORD_FILE", &password)
        .env("INITGUARD_STORE_PASSWORD_FILE", &password)
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let unset = support::unset_line(&settings);
    assert_eq!(
        lines(&fx.log),
        ["1 none".to_string(), format!("env{unset}")]
    );
    // The history went to the target, reached with the password from its file.
    assert_eq!(fx.history(pg::TARGET_DB, "steps-db"), ["1 applied"]);
}

#[test]
fn script_steps_keep_their_history_in_the_target_and_an_interrupted_one_reruns() {
    let Some(fx) = Fx::start() else { return };
    fx.sql("V1__table.sql", "CREATE TABLE t1 (id int);\n");
    fx.script(
        "V2__load.sh",
        "[ -e \"$LOG.slow\" ] && sleep 60\necho done >> \"$LOG\"",
    );
    fs::write(fx.log.with_extension("slow"), "").unwrap();
    let spawn = |extra: &[&str]| -> Child {
        fx.apply_cmd()
            .args(["--lock-ttl", "2s"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&[]);
    wait_for("the script step to start", Duration::from_secs(30), || {
        lines(&fx.log).len() == 1
    });
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_file(fx.log.with_extension("slow")).unwrap();
    assert_eq!(
        fx.history(pg::APP_DB, "steps-db"),
        ["1 applied", "2 running"]
    );

    let out = spawn(&["--on-interrupted", "fail"])
        .wait_with_output()
        .unwrap();
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("initguard steps repair"),
        "{}",
        stderr(&out)
    );

    let out = spawn(&[]).wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&fx.log), ["2 none", "2 interrupted", "done"]);
    assert_eq!(
        fx.history(pg::APP_DB, "steps-db"),
        ["1 applied", "2 applied"]
    );
}

#[test]
fn concurrent_appliers_apply_each_step_once_and_the_rest_skip() {
    let Some(fx) = Fx::start() else { return };
    for v in 1..=20 {
        fx.sql(
            &format!("V{v}__t{v}.sql"),
            &format!("CREATE TABLE t{v} (id int primary key);\n"),
        );
    }
    let children: Vec<Child> = (0..6)
        .map(|_| {
            fx.apply_cmd()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut appliers = 0;
    for o in &outs {
        assert_eq!(code(o), 0, "{}", stderr(o));
        if stderr(o).contains("applied 20 steps") {
            appliers += 1;
        } else {
            assert!(stderr(o).contains("skipped"), "{}", stderr(o));
        }
    }
    assert_eq!(appliers, 1);
    assert_eq!(
        fx.query(
            pg::APP_DB,
            "SELECT count(*) || ' ' || count(DISTINCT step) FROM initguard.steps_history WHERE set_name = 'steps-db'"
        ),
        "20 20"
    );
}

#[test]
fn adopting_golang_migrate_applies_only_what_it_did_not_and_refuses_a_dirty_version() {
    let Some(fx) = Fx::start() else { return };
    // golang-migrate's own layout: one row, the current version, and its dirty flag.
    for v in 1..=3 {
        fx.sql(
            &format!("{v:06}_t{v}.up.sql"),
            &format!("CREATE TABLE t{v} (id int);\n"),
        );
        fx.sql(
            &format!("{v:06}_t{v}.down.sql"),
            &format!("DROP TABLE t{v};\n"),
        );
    }
    fx.query(
        pg::TARGET_DB,
        "CREATE TABLE t1 (id int); CREATE TABLE t2 (id int); \
         CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); \
         INSERT INTO schema_migrations VALUES (2, true); \
         GRANT ALL ON ALL TABLES IN SCHEMA public TO app",
    );
    let out = fx.steps("apply", &["--adopt", "golang-migrate"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("dirty"), "{}", stderr(&out));
    // The table row names the version and how to settle it.
    let row = stderr(&out)
        .lines()
        .find(|l| l.starts_with("dirty"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        row.split_whitespace().nth(1) == Some("2"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("migrate force"), "{}", stderr(&out));
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't3'"
        ),
        "0",
        "nothing applied"
    );
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM initguard.steps_history WHERE set_name = 'steps-db'"
        ),
        "0",
        "nothing adopted"
    );

    fx.query(pg::TARGET_DB, "UPDATE schema_migrations SET dirty = false");
    let out = fx.steps("apply", &["--adopt", "golang-migrate"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("adopted 2 steps"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied 1 step of"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_tables WHERE tablename = 't3'"
        ),
        "1"
    );
    // Once adopted, a changed file of an adopted step is reported like any other.
    fx.sql(
        "000001_t1.up.sql",
        "CREATE TABLE t1 (id int, changed int);\n",
    );
    let out = fx.steps("validate", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with("changed") && l.contains("000001_t1.up.sql")),
        "{}",
        stdout(&out)
    );
}

/// The target's password from a password file named by PGPASSFILE, as libpq reads it (no
/// PGPASSWORD, none in the URL).
#[test]
fn the_target_password_comes_from_pgpassfile() {
    let Some(fx) = Fx::start() else { return };
    three_tables(&fx);
    let pgpass = fx.root.join("pgpass");
    fs::write(
        &pgpass,
        format!(
            "127.0.0.1:{}:{}:{}:{}\n",
            fx.pg.port,
            pg::TARGET_DB,
            pg::APP_USER,
            pg::APP_PASSWORD
        ),
    )
    .unwrap();
    fs::set_permissions(&pgpass, fs::Permissions::from_mode(0o600)).unwrap();
    let out = fx
        .ig(&fx.file_store())
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &pgpass)
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .args(["--target", &fx.target()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM initguard.steps_history WHERE state = 'applied'"
        ),
        "3"
    );
}

#[test]
fn script_steps_applied_before_the_set_had_a_target_are_not_run_again() {
    let Some(fx) = Fx::start() else { return };
    fx.script("V1__seed.sh", "");
    let out = fx
        .ig(&fx.file_store())
        .args(["steps", "apply"])
        .arg(&fx.dir)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.sql("V2__table.sql", "CREATE TABLE t2 (id int);\n");
    let out = fx.steps("apply", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(&fx.log), ["1 none"], "the script ran once");
    assert_eq!(fx.history(pg::TARGET_DB, "steps-db"), ["2 applied"]);
    let out = fx.steps("status", &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied", "applied"], "{json}");
}

/// An apply longer than its lease, of many short steps: the lease is renewed as it goes.
#[test]
fn a_long_apply_of_short_steps_keeps_its_lease() {
    let Some(fx) = Fx::start() else { return };
    for v in 1..=1000 {
        fx.sql(
            &format!("V{v}__t{v}.sql"),
            &format!("CREATE TABLE t{v} (id int);\n"),
        );
    }
    let started = std::time::Instant::now();
    let out = fx.apply_cmd().args(["--lock-ttl", "1s"]).output().unwrap();
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("applied 1000 steps"),
        "{}",
        stderr(&out)
    );
    // Printed, never asserted (debug build, shared machine).
    let timed = |sub: &str| {
        let t = std::time::Instant::now();
        let out = fx
            .ig(&fx.pg.url_without_password())
            .args(["steps", sub])
            .arg(&fx.dir)
            .env("INITGUARD_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        t.elapsed()
    };
    let noop = timed("apply");
    let status = timed("status");
    eprintln!(
        "1000 steps: apply under a 1s lease {took:?}, no-op apply {noop:?}, status {status:?}"
    );
}

/// Step commits do not wait for the disk; `finish` makes them durable before apply exits 0. The
/// server is crashed (`pg_ctl stop -m immediate`: WAL still in its shared buffers is lost) the
/// moment apply exits: every step and its history row must still be there after the restart.
#[test]
fn every_step_is_durable_when_apply_exits_0_even_if_the_server_crashes_at_once() {
    let Some(mut fx) = Fx::start() else { return };
    for n in 1..=300 {
        fx.sql(
            &format!("V{n}__t{n}.sql"),
            &format!("CREATE TABLE d_{n} (id int primary key);\n"),
        );
    }
    let out = fx.steps("apply", &[]);
    fx.pg.kill();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    fx.pg.restart();
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'd\\_%' AND relkind = 'r'"
        ),
        "300"
    );
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM initguard.steps_history WHERE set_name = 'steps-db' AND state = 'applied'",
        ),
        "300"
    );
}

/// The store goes silent in the middle of an apply whose target it does not carry (the store's
/// traffic goes through a proxy that stops forwarding; the target is reached directly): the
/// lease cannot be renewed, so the apply stops with 75 before the lease can lapse, and a step
/// still in flight does not commit after that. Once the store answers again, the next apply
/// finishes the set: every step's effect is there exactly once, with its history row, and none
/// of the successor's effects overlaps the first applier's.
#[test]
fn a_store_gone_silent_mid_apply_stops_it_with_75_and_the_next_apply_finishes_each_step_once() {
    let Some(fx) = Fx::start() else { return };
    let (proxy, store) = fx.proxied_store();
    const STEPS: usize = 12;
    fx.sql(
        "V1__effects.sql",
        "CREATE TABLE effects (step int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());\n",
    );
    for v in 2..=STEPS {
        fx.sql(
            &format!("V{v}__slow{v}.sql"),
            // The effect first: a step not cancelled would commit it well after the exit.
            &format!("INSERT INTO effects (step) VALUES ({v});\nSELECT pg_sleep(0.5);\n"),
        );
    }
    let apply = |ttl: &str| {
        let mut c = fx.ig(&store);
        c.args(["steps", "apply"])
            .arg(&fx.dir)
            .args(["--target", &fx.target(), "--lock-ttl", ttl]);
        c
    };
    let applied = || {
        if fx.query(
            pg::TARGET_DB,
            "SELECT to_regclass('initguard.steps_history') IS NULL",
        ) == "t"
        {
            return 0;
        }
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FROM initguard.steps_history WHERE set_name = 'steps-db' AND state = 'applied'",
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    let child = apply("3s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("three steps applied", Duration::from_secs(60), || {
        applied() >= 3
    });
    let hole = proxy.blackholed();
    let silent = std::time::Instant::now();
    let (out, took) = support::exit_within("the applier", child, silent, Duration::from_secs(30));
    let at_exit = applied();
    eprintln!(
        "first applier exited {} {} ms after its store went silent, {at_exit} steps applied",
        code(&out),
        took.as_millis()
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    // Stopped before its 3 s lease could lapse, then at most 1 s for the server to end the
    // statement in flight.
    assert!(
        took < Duration::from_secs(4),
        "exited {took:?} after its store went silent"
    );
    assert!(at_exit < STEPS, "stopped before the end: {at_exit}");
    // Nothing of the first applier commits after it exited: its step in flight was cancelled.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        applied(),
        at_exit,
        "a step committed after the applier exited"
    );
    // Cut off from its store, the run never ended: its steps have no duration, and the moment
    // each started as its end (each step takes 500 ms).
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) FILTER (WHERE duration_ms IS NULL
                                       AND finished_at - started_at < interval '50 ms')
             FROM initguard.steps_history WHERE set_name = 'steps-db' AND state = 'applied'",
        ),
        at_exit.to_string()
    );
    drop(hole);
    let out = apply("3s").output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(applied(), STEPS);
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(*) || ' ' || count(DISTINCT step) || ' ' || min(step) || ' ' || max(step) FROM effects",
        ),
        format!("{} {} 2 {STEPS}", STEPS - 1, STEPS - 1),
        "each step's effect exactly once"
    );
    // The successor's first effect comes after the first applier's last one (the history row
    // of each step names its holder).
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "SELECT count(DISTINCT h.holder) FROM initguard.steps_history h WHERE h.set_name = 'steps-db'",
        ),
        "2",
        "two appliers"
    );
    assert_eq!(
        fx.query(
            pg::TARGET_DB,
            "WITH e AS (SELECT e.at, h.holder, h.token FROM effects e
                        JOIN initguard.steps_history h ON h.set_name = 'steps-db' AND h.version = e.step::text)
             SELECT (SELECT max(at) FROM e WHERE token = (SELECT min(token) FROM e))
                  < (SELECT min(at) FROM e WHERE token = (SELECT max(token) FROM e))",
        ),
        "t",
        "the appliers' effects do not overlap"
    );
}
