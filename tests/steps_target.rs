//! The steps target database (`initguard::steps::target`) against a real throwaway PostgreSQL
//! (tests/support/pg.rs), through the library: history, fencing, failures located in the step's
//! file, interleavings with an older applier, no-transaction steps resumed, INVALID indexes,
//! adoption of each tool's history table, repair. Skipped with a message without PostgreSQL
//! (a failure under CI=true).
#![cfg(feature = "postgres")]

#[path = "support/pg.rs"]
mod pg;

use initguard::steps::target::{StepEvent, Target, TargetError, TargetOptions, Tool};
use initguard::steps::{
    AppliedState, Kind, Planned, Previous, ProblemKind, RunInfo, Step, StepSet, discover,
};
use initguard::store::postgres::PgUrl;
use pg::{Pg, TARGET_DB};
use std::time::{Duration, Instant};

const SET: &str = "steps-app";

struct Fx {
    pg: Pg,
    dir: tempfile::TempDir,
}

impl Fx {
    fn start() -> Option<Fx> {
        Some(Fx {
            pg: Pg::start()?,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    fn url(&self) -> PgUrl {
        PgUrl::parse(&self.pg.url_for(TARGET_DB)).expect("target url")
    }

    async fn target(&self) -> Target {
        Target::connect(
            &self.url(),
            &TargetOptions {
                lease_ttl: Some(Duration::from_secs(10)),
            },
        )
        .await
        .expect("connect to the target")
    }

    /// A target whose connections have `search_path` `schema` (where another tool's table is).
    async fn target_in(&self, schema: &str) -> Target {
        let url = PgUrl::parse(&format!(
            "{}?options=-c%20search_path%3D{schema}",
            self.pg.url_for(TARGET_DB)
        ))
        .expect("target url");
        Target::connect(&url, &TargetOptions::default())
            .await
            .expect("connect to the target")
    }

    /// A plain connection of the app role to the target database, with server `options`.
    async fn client(&self, options: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={} password={} dbname={TARGET_DB} options='{options}'",
                self.pg.port,
                pg::APP_USER,
                pg::APP_PASSWORD
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the target");
        tokio::spawn(conn);
        client
    }

    /// SQL as the superuser in the target database.
    fn sql(&self, q: &str) -> String {
        self.pg.sql_in(TARGET_DB, q)
    }

    /// Write a step file and take it as discovery finds it.
    fn step(&self, name: &str, body: &str) -> Step {
        std::fs::write(self.dir.path().join(name), body).expect("write step");
        let set = discover::discover(self.dir.path()).expect("discover");
        set.steps
            .into_iter()
            .find(|s| s.file == name)
            .unwrap_or_else(|| panic!("{name} is not a step: {:?}", set.problems))
    }
}

fn plan(step: &Step) -> Planned {
    Planned {
        step: step.clone(),
        previous: Previous::None,
        resume_at: 0,
    }
}

fn run(token: u64) -> RunInfo {
    RunInfo {
        token,
        holder: format!("test-holder-{token}"),
    }
}

fn set_of(steps: &[&Step]) -> StepSet {
    StepSet {
        steps: steps.iter().map(|s| (*s).clone()).collect(),
        ..Default::default()
    }
}

macro_rules! fixture {
    () => {
        match Fx::start() {
            Some(fx) => fx,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_apply_with_their_history_rows_and_a_status_read_creates_nothing() {
    let fx = fixture!();
    let t = fx.target().await;
    // A status read on a database that never saw initguard: empty, and nothing created.
    assert!(t.history(SET).await.unwrap().is_empty());
    assert!(t.invalid_indexes().await.unwrap().is_empty());
    let early = fx.step("V0_9__early.sql", "SELECT 1;");
    assert!(matches!(
        t.apply(SET, &plan(&early), &run(7)).await,
        Err(TargetError::NotBegun { .. })
    ));
    std::fs::remove_file(&early.path).unwrap();
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'initguard'"),
        "0"
    );
    let s1 = fx.step(
        "V1__create_users.sql",
        "CREATE TABLE users (id int primary key, name text);\n",
    );
    let s2 = fx.step(
        "V1_1__add_user.sql",
        "INSERT INTO users VALUES (1, 'it''s me') -- no trailing newline, no semicolon",
    );
    let r = fx.step(
        "R__user_view.sql",
        "CREATE OR REPLACE VIEW user_names AS SELECT name FROM users;",
    );
    let info = run(7);
    t.begin(SET, 7, &info.holder).await.unwrap();
    for s in [&s1, &s2, &r] {
        t.apply(SET, &plan(s), &info).await.unwrap();
    }
    t.finish(SET, 7).await.unwrap();
    assert_eq!(fx.sql("SELECT name FROM user_names"), "it's me");
    let h = t.history(SET).await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(
        h.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        vec![s1.id.clone(), s2.id.clone(), r.id.clone()]
    );
    for (a, s) in h.iter().zip([&s1, &s2, &r]) {
        assert_eq!(a.state, AppliedState::Applied);
        assert_eq!(a.checksum.as_ref(), Some(&s.checksum));
        assert_eq!(a.description, s.description);
        assert_eq!(a.holder, "test-holder-7");
        assert_eq!(a.token, 7);
        assert!(a.started_at.is_some() && a.finished_at.is_some() && a.duration_ms.is_some());
        assert_eq!(a.error, None);
    }
    // The version's text is kept as written; the key is canonical.
    assert_eq!(
        fx.sql("SELECT step || ' ' || version FROM initguard.steps_history WHERE version = '1_1'"),
        "1.1 1_1"
    );
    // Applying a versioned step that history has as applied runs nothing (a stale plan).
    match t.apply(SET, &plan(&s2), &info).await {
        Err(e @ TargetError::AlreadyApplied { .. }) => assert_eq!(
            e.to_string(),
            "step 1_1 is already applied in the target database; nothing was run"
        ),
        other => panic!("re-applying V1_1: {other:?}"),
    }
    assert_eq!(fx.sql("SELECT count(*) FROM users"), "1");
    // A repeatable step runs again when its checksum changed, and not when it did not.
    assert!(matches!(
        t.apply(SET, &plan(&r), &info).await,
        Err(TargetError::AlreadyApplied { .. })
    ));
    let r2 = fx.step(
        "R__user_view.sql",
        "CREATE OR REPLACE VIEW user_names AS SELECT name, id FROM users;",
    );
    t.apply(SET, &plan(&r2), &info).await.unwrap();
    let h = t.history(SET).await.unwrap();
    assert_eq!(h[2].checksum.as_ref(), Some(&r2.checksum));
}

/// `apply_steps` sends each step before the one before it has answered (its check requires that
/// one applied). A step history has applied already (a stale plan) is passed over and the ones
/// after it run; a database laid out by an older build (without `steps_check_v2`) is brought up
/// to date by `begin`, its history kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_sent_together_pass_over_an_applied_one_and_an_older_layout_is_upgraded() {
    let fx = fixture!();
    let s1 = fx.step("V1__a.sql", "CREATE TABLE a (id int primary key);");
    let s2 = fx.step("V2__b.sql", "CREATE TABLE b (id int primary key);");
    let s3 = fx.step("V3__c.sql", "CREATE TABLE c (id int primary key);");
    {
        let t = fx.target().await;
        let info = run(3);
        t.begin(SET, 3, &info.holder).await.unwrap();
        t.apply(SET, &plan(&s1), &info).await.unwrap();
        t.finish(SET, 3).await.unwrap();
    }
    // The older build's check function, in place of this one's.
    fx.sql("DROP FUNCTION initguard.steps_check_v2(text, bigint, text, text, boolean, text, text)");
    fx.sql(
        "CREATE FUNCTION initguard.steps_check_v1(text, bigint, text, text, boolean) \
         RETURNS void LANGUAGE sql AS ''",
    );
    let t = fx.target().await;
    let info = run(4);
    t.begin(SET, 4, &info.holder).await.unwrap();
    let mut seen = Vec::new();
    t.apply_steps(
        SET,
        &[plan(&s1), plan(&s2), plan(&s3)],
        &info,
        &mut |p, event| {
            if event != StepEvent::Sent {
                seen.push((p.step.file.clone(), event))
            }
        },
    )
    .await
    .unwrap();
    t.finish(SET, 4).await.unwrap();
    assert_eq!(
        seen,
        [
            ("V1__a.sql".to_string(), StepEvent::AlreadyApplied),
            ("V2__b.sql".to_string(), StepEvent::Applied),
            ("V3__c.sql".to_string(), StepEvent::Applied),
        ]
    );
    assert_eq!(
        fx.sql("SELECT string_agg(step || ' ' || state || ' ' || token, ',' ORDER BY step) FROM initguard.steps_history"),
        "1 applied 3,2 applied 4,3 applied 4"
    );
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b', 'c')"),
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_rolls_back_and_is_recorded_with_its_line_and_column_in_the_file() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let ok = fx.step("V1__ok.sql", "CREATE TABLE a (id int);");
    t.apply(SET, &plan(&ok), &info).await.unwrap();
    // Runtime error on line 3: the column is where the server points (the unknown column).
    let bad = fx.step(
        "V2__bad.sql",
        "CREATE TABLE b (id int);\n\nSELECT é, nosuch FROM a;\n",
    );
    let err = t.apply(SET, &plan(&bad), &info).await.unwrap_err();
    let TargetError::StepFailed {
        step,
        file,
        failure,
    } = &err
    else {
        panic!("expected StepFailed, got {err:?}");
    };
    assert_eq!((step.as_str(), file.as_str()), ("2", "V2__bad.sql"));
    assert_eq!(failure.code, "42703", "{failure}");
    assert_eq!(failure.line_col, Some((3, 8)), "{failure}");
    // Rolled back: b does not exist; the step before stays applied.
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_class WHERE relname = 'b'"),
        "0"
    );
    let h = t.history(SET).await.unwrap();
    assert_eq!(h[0].state, AppliedState::Applied);
    assert_eq!(h[1].state, AppliedState::Failed);
    let msg = h[1].error.as_deref().unwrap();
    assert!(
        msg.contains("42703") && msg.contains("line 3, column 8"),
        "{msg}"
    );
    // A syntax error (nothing of the message runs at all), on line 2 after a multi-byte line.
    let syntax = fx.step("V3__syntax.sql", "SELECT 'ü';\nSELEC 2;\n");
    let err = t.apply(SET, &plan(&syntax), &info).await.unwrap_err();
    match &err {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "42601");
            assert_eq!(failure.line_col, Some((2, 1)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    // A byte order mark is not sent; positions count from after it, as editors show them.
    let bom = fx.step("V4__bom.sql", "\u{feff}SELECT 1;\n  SELEC 2;\n");
    match t.apply(SET, &plan(&bom), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.line_col, Some((2, 3)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    // Fixed, the failed step applies on the next run.
    let fixed = fx.step("V2__bad.sql", "CREATE TABLE b (id int);\n");
    t.apply(SET, &plan(&fixed), &info).await.unwrap();
    let h = t.history(SET).await.unwrap();
    assert_eq!(h[1].state, AppliedState::Applied);
    assert_eq!(h[1].error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_is_refused_before_anything_is_sent() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let s = fx.step(
        "V1__commits.sql",
        "CREATE TABLE x (id int);\n-- done\n  COMMIT;\nCREATE TABLE y (id int);\n",
    );
    let err = t.apply(SET, &plan(&s), &info).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TargetError::Refused { .. }), "{err:?}");
    assert!(
        text.contains("line 3, column 3") && text.contains("COMMIT"),
        "{text}"
    );
    assert!(text.contains("-- initguard:no-transaction"), "{text}");
    // Text that ends inside a literal ends its message: the server rejects it, located.
    let open = fx.step("V2__open.sql", "CREATE TABLE z (id int);\nSELECT 'oops");
    match t.apply(SET, &plan(&open), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.line_col, Some((2, 8)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_class WHERE relname IN ('x', 'y', 'z')"),
        "0"
    );
    let h = t.history(SET).await.unwrap();
    assert_eq!(h.len(), 1, "only the failed V2 has a row: {h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_file_changed_since_discovery_is_refused_and_nothing_of_it_runs() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let s = fx.step("V1__grows.sql", "CREATE TABLE grown_a (id int);\n");
    std::fs::write(&s.path, "CREATE TABLE grown_b (id int);\n").unwrap();
    let err = t.apply(SET, &plan(&s), &info).await.unwrap_err();
    assert!(matches!(err, TargetError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("changed since this run read it"),
        "{err}"
    );
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_class WHERE relname IN ('grown_a', 'grown_b')"),
        "0"
    );
    assert_not_applied(&t, "1").await;
}

/// History does not have step `key` applied.
async fn assert_not_applied(t: &Target, key: &str) {
    let h = t.history(SET).await.unwrap();
    let state = h.iter().find(|a| a.id.to_string() == key).map(|a| a.state);
    assert_ne!(state, Some(AppliedState::Applied), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_a_step_commits_without_its_row_whatever_its_end_or_its_savepoints() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    // A block comment left open: nothing of the message runs, neither the table nor the row.
    let open = fx.step("V1__open.sql", "CREATE TABLE c1 (id int);\n/* not closed");
    match t.apply(SET, &plan(&open), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "42601", "{failure}");
            assert_eq!(failure.line_col, Some((2, 1)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert_not_applied(&t, "1").await;
    // A COMMIT the lexer cannot see (inside a DO block) is refused by the server: the step's
    // transaction is one block, so the table before it rolls back with the row.
    let commits = fx.step(
        "V1__open.sql",
        "CREATE TABLE c2 (id int);\nDO $$ BEGIN COMMIT; END $$;\n",
    );
    match t.apply(SET, &plan(&commits), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "2D000", "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert_not_applied(&t, "1").await;
    // initguard's own codes raised by the step's SQL are the step's failure, not a refusal.
    let mimic = fx.step(
        "V1__open.sql",
        "CREATE TABLE c3 (id int);\n\
         DO $$ BEGIN RAISE EXCEPTION 'no' USING ERRCODE = 'IGA01'; END $$;",
    );
    match t.apply(SET, &plan(&mimic), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "IGA01", "{failure}");
        }
        other => panic!("{other:?}"),
    }
    assert_not_applied(&t, "1").await;
    // Savepoints need an explicit block: the step runs in one, and commits with its row.
    let saves = fx.step(
        "V1__open.sql",
        "CREATE TABLE s (v text);\nSAVEPOINT a;\nINSERT INTO s VALUES ('gone');\n\
         ROLLBACK TO SAVEPOINT a;\nINSERT INTO s VALUES ('kept');\nRELEASE a; -- done",
    );
    t.apply(SET, &plan(&saves), &info).await.unwrap();
    assert_eq!(fx.sql("SELECT string_agg(v, ',') FROM s"), "kept");
    // One that fails after its savepoint rolls back whole, and the connection goes on.
    let bad = fx.step(
        "V2__bad.sql",
        "CREATE TABLE s2 (v text);\nSAVEPOINT a;\nSELECT nosuch;\nRELEASE a;",
    );
    match t.apply(SET, &plan(&bad), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.line_col, Some((3, 8)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
    let next = fx.step("V3__next.sql", "CREATE TABLE s3 (v text);");
    t.apply(SET, &plan(&next), &info).await.unwrap();
    t.finish(SET, 1).await.unwrap();
    assert_eq!(
        fx.sql(
            "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class \
             WHERE relname IN ('c1', 'c2', 'c3', 's', 's2', 's3')"
        ),
        "s,s3"
    );
    let h = t.history(SET).await.unwrap();
    let states: Vec<_> = h.iter().map(|a| (a.id.to_string(), a.state)).collect();
    assert_eq!(
        states,
        vec![
            ("1".to_string(), AppliedState::Applied),
            ("2".to_string(), AppliedState::Failed),
            ("3".to_string(), AppliedState::Applied),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_duration_is_the_one_measured_and_is_written_when_the_run_ends() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let slow = fx.step("V1__slow.sql", "SELECT pg_sleep(0.3);");
    t.apply(SET, &plan(&slow), &info).await.unwrap();
    // Committed with its row, the duration still to come.
    let h = t.history(SET).await.unwrap();
    assert_eq!(h[0].state, AppliedState::Applied);
    assert_eq!(h[0].duration_ms, None);
    t.finish(SET, 1).await.unwrap();
    let h = t.history(SET).await.unwrap();
    let ms = h[0].duration_ms.expect("a duration after finish");
    assert!((300..3000).contains(&ms), "{ms}");
    let (started, finished) = (h[0].started_at.unwrap(), h[0].finished_at.unwrap());
    assert_eq!((finished - started).num_milliseconds(), ms as i64);
    // A run that ends with a failed step writes the durations before it with the failure.
    let info = run(2);
    t.begin(SET, 2, &info.holder).await.unwrap();
    let slow2 = fx.step("V2__slow.sql", "SELECT pg_sleep(0.2);");
    let bad = fx.step("V3__bad.sql", "SELECT nosuch;");
    t.apply(SET, &plan(&slow2), &info).await.unwrap();
    t.apply(SET, &plan(&bad), &info).await.unwrap_err();
    let h = t.history(SET).await.unwrap();
    let ms = h[1].duration_ms.expect("a duration with the failure");
    assert!((200..3000).contains(&ms), "{ms}");
    assert_eq!(h[2].state, AppliedState::Failed);
    // And one that stops at a step refused before it is sent, likewise.
    let info = run(3);
    t.begin(SET, 3, &info.holder).await.unwrap();
    let slow3 = fx.step("V4__slow.sql", "SELECT pg_sleep(0.2);");
    let commits = fx.step("V5__commits.sql", "SELECT 1;\nCOMMIT;");
    t.apply(SET, &plan(&slow3), &info).await.unwrap();
    let err = t.apply(SET, &plan(&commits), &info).await.unwrap_err();
    assert!(matches!(err, TargetError::Refused { .. }), "{err:?}");
    let h = t.history(SET).await.unwrap();
    let ms = h[3].duration_ms.expect("a duration when a step is refused");
    assert!((200..3000).contains(&ms), "{ms}");
}

/// README: "Step commits do not wait for the disk" — a transactional step runs with
/// `synchronous_commit` off, set for its own transaction only; the run's end commits
/// synchronously (the durability half is the server-crash test's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_commits_without_waiting_for_the_disk() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let step = fx.step(
        "V1__seen.sql",
        "CREATE TABLE seen AS SELECT current_setting('synchronous_commit') AS v;",
    );
    let after = fx.step(
        "V2__after.sql",
        "INSERT INTO seen SELECT current_setting('synchronous_commit');",
    );
    t.apply(SET, &plan(&step), &info).await.unwrap();
    t.apply(SET, &plan(&after), &info).await.unwrap();
    t.finish(SET, 1).await.unwrap();
    assert_eq!(fx.sql("SELECT string_agg(v, ',') FROM seen"), "off,off");
    assert_eq!(
        fx.sql("SHOW synchronous_commit"),
        "on",
        "the server's setting is left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_token_is_fenced_off_and_runs_nothing() {
    let fx = fixture!();
    let old = fx.target().await;
    let new = fx.target().await;
    old.begin(SET, 5, "old").await.unwrap();
    new.begin(SET, 6, "new").await.unwrap();
    let s = fx.step("V1__t.sql", "CREATE TABLE t (id int);");
    match old.apply(SET, &plan(&s), &run(5)).await {
        Err(TargetError::Fenced {
            token: 5, newer: 6, ..
        }) => {}
        other => panic!("old applier after a newer begin: {other:?}"),
    }
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_class WHERE relname = 't'"),
        "0"
    );
    assert!(matches!(
        old.begin(SET, 5, "old").await,
        Err(TargetError::Fenced { newer: 6, .. })
    ));
    // The same token again is the same applier (a reconnect): accepted.
    new.begin(SET, 6, "new").await.unwrap();
    new.apply(SET, &plan(&s), &run(6)).await.unwrap();
    // Script rows are fenced too.
    assert!(matches!(
        old.script_started(SET, &s, &run(5)).await,
        Err(TargetError::Fenced { .. })
    ));
    // Another set has a fence of its own; a set nobody began is refused.
    old.begin("other-set", 1, "old").await.unwrap();
    assert!(matches!(
        old.apply("never-begun", &plan(&s), &run(1)).await,
        Err(TargetError::NotBegun { .. })
    ));
}

/// An older applier's step transaction is in flight (it was paused or killed while the server
/// ran it) when a newer applier begins: the newer one's `begin` waits for it to end, then sees
/// its history row; the older applier's next step is refused. Never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_begin_waits_for_an_older_appliers_open_step_transaction() {
    let fx = fixture!();
    let old = fx.target().await;
    let new = fx.target().await;
    fx.sql("CREATE TABLE effects (step text)");
    fx.sql("GRANT ALL ON effects TO app");
    old.begin(SET, 1, "old").await.unwrap();
    let slow = fx.step(
        "V1__slow.sql",
        "INSERT INTO effects VALUES ('v1');\nSELECT pg_sleep(1.5);\n",
    );
    let next = fx.step("V2__next.sql", "INSERT INTO effects VALUES ('v2');");
    // The new applier read history (empty) and planned V1 before the old one committed it.
    let stale = new.history(SET).await.unwrap();
    assert!(stale.is_empty());
    let old_step = {
        let slow = slow.clone();
        let old = std::sync::Arc::new(old);
        let o = old.clone();
        (
            tokio::spawn(async move { o.apply(SET, &plan(&slow), &run(1)).await }),
            old,
        )
    };
    // Let the old transaction start and take the fence row lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waited = Instant::now();
    new.begin(SET, 2, "new").await.unwrap();
    let waited = waited.elapsed();
    old_step.0.await.unwrap().unwrap();
    assert!(
        waited >= Duration::from_millis(800),
        "begin returned after {waited:?}, before the older transaction ended"
    );
    let h = new.history(SET).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!((h[0].state, h[0].token), (AppliedState::Applied, 1));
    // The stale plan's V1 is not run again.
    assert!(matches!(
        new.apply(SET, &plan(&slow), &run(2)).await,
        Err(TargetError::AlreadyApplied { .. })
    ));
    // The old applier's next step is fenced off.
    assert!(matches!(
        old_step.1.apply(SET, &plan(&next), &run(1)).await,
        Err(TargetError::Fenced { newer: 2, .. })
    ));
    new.apply(SET, &plan(&next), &run(2)).await.unwrap();
    assert_eq!(
        fx.sql("SELECT string_agg(step, ',' ORDER BY step) FROM effects"),
        "v1,v2"
    );
}

/// An older applier's connection sits idle in a transaction holding the fence row (paused
/// between messages): the newer `begin` waits, and the server ends that transaction after the
/// idle timeout the lease sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_transaction_on_the_fence_row_ends_after_the_lease_and_begin_proceeds() {
    let fx = fixture!();
    let t = Target::connect(
        &fx.url(),
        &TargetOptions {
            lease_ttl: Some(Duration::from_secs(1)),
        },
    )
    .await
    .unwrap();
    t.begin(SET, 1, "old").await.unwrap();
    // A session of the old applier, holding the row lock in an idle transaction (as a holder
    // stopped in the middle of a multi-message transaction would), with the same timeout.
    let client = fx
        .client("-c idle_in_transaction_session_timeout=1000")
        .await;
    client
        .batch_execute("BEGIN; SELECT token FROM initguard.steps_fence FOR UPDATE")
        .await
        .unwrap();
    let new = fx.target().await;
    let started = Instant::now();
    new.begin(SET, 2, "new").await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert!(client.batch_execute("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_transaction_step_resumes_after_its_completed_statements_and_rebuilds_an_invalid_index()
 {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let setup = fx.step(
        "V1__data.sql",
        "CREATE TABLE items (a int);\nINSERT INTO items SELECT g % 50 FROM generate_series(1, 200) g;\nCREATE TABLE log (n int);",
    );
    t.apply(SET, &plan(&setup), &info).await.unwrap();
    // Statement 2 fails (duplicates) and leaves the index INVALID; statement 1 completed.
    let body = "-- initguard:no-transaction\nINSERT INTO log VALUES (1);\n\nCREATE UNIQUE INDEX CONCURRENTLY items_a\n    ON items (a);\nINSERT INTO log VALUES (3);\n";
    let cic = fx.step("V2__index.sql", body);
    let err = t.apply(SET, &plan(&cic), &info).await.unwrap_err();
    match &err {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.code, "23505", "{failure}");
        }
        other => panic!("{other:?}"),
    }
    let h = t.history(SET).await.unwrap();
    assert_eq!(
        (h[1].state, h[1].statements_done),
        (AppliedState::Failed, 1)
    );
    assert!(h[1].error.as_deref().unwrap().starts_with("statement 2: "));
    // Status names the INVALID index and the fix.
    let invalid = t.invalid_indexes().await.unwrap();
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert_eq!(invalid[0].kind, ProblemKind::InvalidIndex);
    assert_eq!(
        invalid[0].fix,
        "DROP INDEX CONCURRENTLY public.items_a; then run apply again"
    );
    // Fix the data; apply again: resumes at statement 2, drops the INVALID index, builds it.
    fx.sql("DELETE FROM items WHERE ctid NOT IN (SELECT min(ctid) FROM items GROUP BY a)");
    t.apply(
        SET,
        &Planned {
            previous: Previous::Failed,
            resume_at: 1,
            ..plan(&cic)
        },
        &info,
    )
    .await
    .unwrap();
    assert_eq!(
        fx.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM log"),
        "1,3"
    );
    assert_eq!(
        fx.sql("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_a'::regclass"),
        "t"
    );
    assert!(t.invalid_indexes().await.unwrap().is_empty());
    let h = t.history(SET).await.unwrap();
    assert_eq!(
        (h[1].state, h[1].statements_done),
        (AppliedState::Applied, 3)
    );
    // Interrupted after the index was built but before its progress was recorded: the valid
    // index counts as the statement done, and the rest runs.
    fx.sql(
        "UPDATE initguard.steps_history SET state = 'running', statements_done = 1 WHERE step = '2'",
    );
    fx.sql("DELETE FROM log WHERE n = 3");
    t.apply(SET, &plan(&cic), &info).await.unwrap();
    assert_eq!(
        fx.sql("SELECT string_agg(n::text, ',' ORDER BY n) FROM log"),
        "1,3"
    );
    // A failing statement in a multi-line no-transaction step is located in the file.
    let bad = fx.step(
        "V3__bad.sql",
        "-- initguard:no-transaction\nSELECT 1;\nSELECT\n  nosuch FROM log;\n",
    );
    match t.apply(SET, &plan(&bad), &info).await.unwrap_err() {
        TargetError::StepFailed { failure, .. } => {
            assert_eq!(failure.line_col, Some((4, 3)), "{failure}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_begins_create_the_tables_once_without_errors() {
    let fx = fixture!();
    let mut targets = Vec::new();
    for _ in 0..8 {
        targets.push(std::sync::Arc::new(fx.target().await));
    }
    let mut tasks = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            t.begin(&format!("set-{}", i % 2), i as u64 + 1, "h").await
        }));
    }
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) | Err(TargetError::Fenced { .. }) => {}
            Err(e) => panic!("concurrent begin: {e}"),
        }
    }
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'initguard'"),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_steps_have_fenced_running_and_finished_rows() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(3);
    t.begin(SET, 3, &info.holder).await.unwrap();
    let mut script = fx.step("V1__load.sql", "");
    script.kind = Kind::Script;
    script.file = "V1__load.sh".into();
    t.script_started(SET, &script, &info).await.unwrap();
    let h = t.history(SET).await.unwrap();
    assert_eq!(
        (h[0].state, h[0].kind),
        (AppliedState::Running, Kind::Script)
    );
    t.script_finished(SET, &script, &info, Err("exited with status 3".into()))
        .await
        .unwrap();
    let h = t.history(SET).await.unwrap();
    assert_eq!(h[0].state, AppliedState::Failed);
    assert_eq!(h[0].error.as_deref(), Some("exited with status 3"));
    t.script_started(SET, &script, &info).await.unwrap();
    t.script_finished(SET, &script, &info, Ok(()))
        .await
        .unwrap();
    let h = t.history(SET).await.unwrap();
    assert_eq!(
        (h[0].state, h[0].error.as_deref()),
        (AppliedState::Applied, None)
    );
}

/// A set as a tool would have applied it (V1, V2, V3 and a repeatable), and a target whose
/// `search_path` is `schema`, where the tool's table is created by `ddl` (run as superuser, the
/// table then granted to the app role).
struct Adoption {
    fx: Fx,
    steps: [Step; 4],
    set: StepSet,
    target: Target,
}

async fn adoption(schema: &str, ddl: &str, table: &str) -> Option<Adoption> {
    let fx = Fx::start()?;
    let steps = [
        fx.step("V1__one.sql", "CREATE TABLE one (id int);"),
        fx.step("V2__two.sql", "CREATE TABLE two (id int);"),
        fx.step("V3__three.sql", "CREATE TABLE three (id int);"),
        fx.step("R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;"),
    ];
    let set = set_of(&steps.iter().collect::<Vec<_>>());
    fx.sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; GRANT USAGE, CREATE ON SCHEMA {schema} TO app;
         SET search_path = {schema}; {ddl}; GRANT SELECT ON {schema}.{table} TO app;"
    ));
    let target = fx.target_in(schema).await;
    target.begin(SET, 1, "h").await.unwrap();
    Some(Adoption {
        fx,
        steps,
        set,
        target,
    })
}

fn ids(h: &[initguard::steps::Applied]) -> Vec<String> {
    h.iter().map(|a| a.id.to_string()).collect()
}

/// Flyway's table as its PostgreSQL `createMetaDataTable.sql` creates it.
const FLYWAY_DDL: &str = r#"CREATE TABLE "flyway_schema_history" (
    "installed_rank" INT NOT NULL, "version" VARCHAR(50), "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL);
ALTER TABLE "flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "flyway_schema_history" ("success");
INSERT INTO flyway_schema_history VALUES
  (1, '1', 'one', 'SQL', 'V1__one.sql', 123, 'app', now(), 5, true),
  (2, '2', 'two', 'SQL', 'V2__two.sql', 456, 'app', now(), 7, true),
  (3, NULL, 'views', 'SQL', 'R__views.sql', 789, 'app', now(), 1, true)"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flyway_history_is_adopted_and_nothing_is_applied_again() {
    let Some(a) = adoption("public", FLYWAY_DDL, "flyway_schema_history").await else {
        return;
    };
    let (t, info) = (&a.target, run(1));
    let got = t.adopt(SET, Tool::Flyway, &a.set, &info).await.unwrap();
    assert_eq!(ids(&got), ["1", "2", "R:views"]);
    let h = t.history(SET).await.unwrap();
    assert_eq!(ids(&h), ["1", "2", "R:views"]);
    assert!(
        h.iter()
            .all(|r| r.adopted_from.as_deref() == Some("flyway"))
    );
    assert_eq!(h[0].checksum.as_ref(), Some(&a.steps[0].checksum));
    assert_eq!(h[0].duration_ms, Some(5));
    // Nothing re-applied, the repeatable step included; V3 is pending and applies.
    for s in [&a.steps[0], &a.steps[3]] {
        assert!(matches!(
            t.apply(SET, &plan(s), &info).await,
            Err(TargetError::AlreadyApplied { .. })
        ));
    }
    t.apply(SET, &plan(&a.steps[2]), &info).await.unwrap();
    assert_eq!(
        a.fx.sql("SELECT count(*) FROM pg_class WHERE relname IN ('one', 'two', 'three')"),
        "1"
    );
    // Adoption is for the first use only.
    assert!(
        t.adopt(SET, Tool::Flyway, &a.set, &info)
            .await
            .unwrap()
            .is_empty()
    );
    // A failed Flyway migration: nothing adopted.
    a.fx.sql("INSERT INTO flyway_schema_history VALUES (4, '3', 'three', 'SQL', 'V3__three.sql', 1, 'app', now(), 1, false)");
    t.begin("failed", 1, "h").await.unwrap();
    match t.adopt("failed", Tool::Flyway, &a.set, &info).await {
        Err(TargetError::Untrusted { problems, .. }) => {
            assert_eq!(problems[0].kind, ProblemKind::Failed);
            assert_eq!(problems[0].file.as_deref(), Some("V3__three.sql"));
            assert!(problems[0].fix.contains("flyway repair"));
        }
        other => panic!("{other:?}"),
    }
    assert!(t.history("failed").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golang_migrate_history_is_adopted_up_to_its_version_and_a_dirty_one_is_not_trusted() {
    // As its postgres driver creates it.
    let ddl = "CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null);
               INSERT INTO schema_migrations VALUES (2, false)";
    let Some(a) = adoption("gm", ddl, "schema_migrations").await else {
        return;
    };
    let (t, info) = (&a.target, run(1));
    let got = t
        .adopt(SET, Tool::GolangMigrate, &a.set, &info)
        .await
        .unwrap();
    assert_eq!(ids(&got), ["1", "2"]);
    assert!(matches!(
        t.apply(SET, &plan(&a.steps[1]), &info).await,
        Err(TargetError::AlreadyApplied { .. })
    ));
    // dbmate's name, but golang-migrate's layout: refused.
    t.begin("as-dbmate", 1, "h").await.unwrap();
    assert!(matches!(
        t.adopt("as-dbmate", Tool::Dbmate, &a.set, &info).await,
        Err(TargetError::NotAdoptable { .. })
    ));
    // Dirty: reported, not trusted, nothing adopted.
    a.fx.sql("UPDATE gm.schema_migrations SET version = 3, dirty = true");
    t.begin("dirty", 1, "h").await.unwrap();
    match t.adopt("dirty", Tool::GolangMigrate, &a.set, &info).await {
        Err(TargetError::Untrusted { problems, .. }) => {
            assert_eq!(problems[0].kind, ProblemKind::Dirty);
            assert_eq!(problems[0].step.as_deref(), Some("3"));
            assert_eq!(problems[0].file.as_deref(), Some("V3__three.sql"));
            assert!(
                problems[0].fix.contains("migrate force"),
                "{}",
                problems[0].fix
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(t.history("dirty").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_history_is_adopted_and_an_unsuccessful_version_is_not_trusted() {
    // As sqlx-postgres' migrate.rs creates it.
    let ddl = r"CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
          installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
          checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);
        INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES
          (1, 'one', true, '\x00', 3000000), (2, 'two', true, '\x00', 4000000)";
    let Some(a) = adoption("public", ddl, "_sqlx_migrations").await else {
        return;
    };
    let (t, info) = (&a.target, run(1));
    let got = t.adopt(SET, Tool::Sqlx, &a.set, &info).await.unwrap();
    assert_eq!(ids(&got), ["1", "2"]);
    assert_eq!(got[0].duration_ms, Some(3), "sqlx keeps nanoseconds");
    t.apply(SET, &plan(&a.steps[2]), &info).await.unwrap();
    a.fx.sql("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (3, 'three', false, '\\x00', 1)");
    t.begin("dirty", 1, "h").await.unwrap();
    match t.adopt("dirty", Tool::Sqlx, &a.set, &info).await {
        Err(TargetError::Untrusted { problems, .. }) => {
            assert_eq!(problems[0].kind, ProblemKind::Dirty);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.history("dirty").await.unwrap().is_empty(),
        "nothing adopted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbmate_history_is_adopted_with_versions_that_have_no_file_kept() {
    // As dbmate's postgres driver creates it.
    let ddl = "CREATE TABLE schema_migrations (version varchar(255) primary key);
               INSERT INTO schema_migrations VALUES ('1'), ('3'), ('20240101120000')";
    let Some(a) = adoption("dbm", ddl, "schema_migrations").await else {
        return;
    };
    let (t, info) = (&a.target, run(1));
    let got = t.adopt(SET, Tool::Dbmate, &a.set, &info).await.unwrap();
    assert_eq!(ids(&got), ["1", "3", "20240101120000"]);
    assert_eq!(
        got[2].checksum, None,
        "a version without a file has no checksum"
    );
    // V2 was never applied by dbmate: still pending, and it applies.
    t.apply(SET, &plan(&a.steps[1]), &info).await.unwrap();
    // Without the tool's table (a new database) there is nothing to adopt.
    let bare = a.fx.target().await;
    bare.begin("new-db", 1, "h").await.unwrap();
    assert!(
        bare.adopt("new-db", Tool::Dbmate, &a.set, &info)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_realigns_checksums_forgets_missing_files_and_clears_failures() {
    let fx = fixture!();
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let s1 = fx.step("V1__a.sql", "CREATE TABLE a (id int);");
    let s2 = fx.step("V2__b.sql", "CREATE TABLE b (id int);");
    let s3 = fx.step("V3__c.sql", "SELECT nosuch;");
    for s in [&s1, &s2] {
        t.apply(SET, &plan(s), &info).await.unwrap();
    }
    assert!(t.apply(SET, &plan(&s3), &info).await.is_err());
    // V1 edited after it ran, V2's file deleted.
    let s1_edited = fx.step("V1__a.sql", "CREATE TABLE a (id int); -- reformatted");
    let set = set_of(&[&s1_edited, &s3]);
    let lines = t.repair(SET, &set, &info).await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("1 (V1__a.sql): checksum realigned"),
        "{lines:?}"
    );
    assert!(lines[1].contains("removed from history"), "{lines:?}");
    assert!(lines[2].contains("failed run cleared"), "{lines:?}");
    let h = t.history(SET).await.unwrap();
    assert_eq!(ids(&h), ["1"]);
    assert_eq!(h[0].checksum.as_ref(), Some(&s1_edited.checksum));
    // Nothing left to repair; and a lower token may not repair.
    assert!(t.repair(SET, &set, &info).await.unwrap().is_empty());
    let newer = fx.target().await;
    newer.begin(SET, 2, "newer").await.unwrap();
    let s1_again = fx.step("V1__a.sql", "CREATE TABLE a (id int);");
    assert!(matches!(
        t.repair(SET, &set_of(&[&s1_again]), &info).await,
        Err(TargetError::Fenced { .. })
    ));
}

/// Timing harness, not a test of timings (run with `--ignored --nocapture`): 1,000 trivial
/// steps (`CREATE TABLE t_NNNN (id int primary key)`, one per file) applied, each its own
/// transaction with its history row, then `finish`; beside the statements sqlx-cli sends for
/// the same work, round by round (the machine's load varies). The server is switched to
/// `fsync = on` first (a restart): the test servers run with it off, which would hide what a
/// commit waits for. The real benchmark, beside sqlx-cli, is benches/steps.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing harness: run with --ignored --nocapture"]
async fn timing_apply_1000_trivial_steps() {
    let fx = fixture!();
    let mut fx = fx;
    fx.pg.restart_durable();
    assert_eq!(fx.sql("SHOW fsync"), "on");
    let steps: Vec<Step> = (1..=1000)
        .map(|i| {
            fx.step(
                &format!("V{i:04}__t_{i:04}.sql"),
                &format!("CREATE TABLE t_{i:04} (id int primary key);\n"),
            )
        })
        .collect();
    let (mut applies, mut statuses, mut sqlx_like) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor = Vec::new();
    for round in 0..3 {
        let set = format!("bench-{round}");
        let schema = format!("r{round}");
        fx.sql(&format!("CREATE SCHEMA {schema} AUTHORIZATION app"));
        let started = Instant::now();
        let t = fx.target_in(&schema).await;
        let info = run(1);
        t.begin(&set, 1, &info.holder).await.unwrap();
        for s in &steps {
            t.apply(&set, &plan(s), &info).await.unwrap();
        }
        t.finish(&set, 1).await.unwrap();
        applies.push(started.elapsed());
        let started = Instant::now();
        let h = t.history(&set).await.unwrap();
        statuses.push(started.elapsed());
        assert_eq!(h.len(), 1000);
        sqlx_like.push(sqlx_sequence(&fx, &format!("s{round}"), &steps).await);
        floor.push(bare_steps(&fx, &format!("b{round}"), &steps).await);
    }
    for v in [&mut applies, &mut statuses, &mut sqlx_like, &mut floor] {
        v.sort();
    }
    eprintln!(
        "TIMING apply 1,000 trivial steps (connect, begin, 1,000 x apply, finish): median {:?} of {applies:?}",
        applies[1]
    );
    eprintln!(
        "TIMING history of 1,000 (status read): median {:?} of {statuses:?}",
        statuses[1]
    );
    eprintln!(
        "TIMING sqlx-cli's sequence of statements, same server, same rounds: median {:?} of {sqlx_like:?} (apply / it = {:.2})",
        sqlx_like[1],
        applies[1].as_secs_f64() / sqlx_like[1].as_secs_f64()
    );
    eprintln!(
        "TIMING the steps alone (each one message, asynchronous commit, no history, no fence): median {:?} of {floor:?}",
        floor[1]
    );
}

/// The server's own cost of the steps: each step's text alone, one message each, committed
/// asynchronously, no history row, no fence: what no runner can go below.
async fn bare_steps(fx: &Fx, schema: &str, steps: &[Step]) -> Duration {
    fx.sql(&format!("CREATE SCHEMA {schema} AUTHORIZATION app"));
    let client = fx
        .client(&format!(
            "-c search_path={schema} -c synchronous_commit=off"
        ))
        .await;
    let texts: Vec<String> = steps
        .iter()
        .map(|s| std::fs::read_to_string(&s.path).unwrap())
        .collect();
    let started = Instant::now();
    for text in &texts {
        client.batch_execute(text).await.unwrap();
    }
    started.elapsed()
}

/// The statements sqlx-cli's PostgreSQL migrator sends per migration (sqlx-postgres
/// `migrate.rs`: BEGIN, the migration, its INSERT, COMMIT, then an UPDATE of execution_time in
/// a transaction of its own; every commit synchronous), in a schema of its own: the figure the
/// goal is stated against, measured beside ours when sqlx-cli itself is not installed.
async fn sqlx_sequence(fx: &Fx, schema: &str, steps: &[Step]) -> Duration {
    fx.sql(&format!("CREATE SCHEMA {schema} AUTHORIZATION app"));
    let client = fx.client(&format!("-c search_path={schema}")).await;
    client
        .batch_execute(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
               installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
               checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, $2, TRUE, $3, -1)",
        )
        .await
        .unwrap();
    let update = client
        .prepare("UPDATE _sqlx_migrations SET execution_time = $1 WHERE version = $2")
        .await
        .unwrap();
    let started = Instant::now();
    for (i, s) in steps.iter().enumerate() {
        let one = Instant::now();
        let version = i as i64 + 1;
        client.batch_execute("BEGIN").await.unwrap();
        client
            .batch_execute(&std::fs::read_to_string(&s.path).unwrap())
            .await
            .unwrap();
        client
            .execute(
                &insert,
                &[&version, &s.description, &s.checksum.0.as_bytes()],
            )
            .await
            .unwrap();
        client.batch_execute("COMMIT").await.unwrap();
        let nanos = one.elapsed().as_nanos() as i64;
        client.execute(&update, &[&nanos, &version]).await.unwrap();
    }
    started.elapsed()
}

/// A `CREATE INDEX CONCURRENTLY` step while the applier's lease is renewed on a PG store in the
/// same database and replicas wait for that lease there: CIC waits for every transaction older
/// than its snapshot, so any of those connections sitting in a transaction would stall it (or
/// deadlock it, as alembic's and dbmate's do). None is ever seen idle in a transaction, and the
/// index is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_index_concurrently_is_not_held_up_by_the_lease_or_waiting_replicas() {
    use initguard::store::postgres::PgStore;
    use initguard::store::{Attempt, Store};
    use initguard::task::{Holder, Key, TaskId};
    let fx = fixture!();
    fx.sql("CREATE TABLE big (a int, b text); INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 300000) g; ALTER TABLE big OWNER TO app");
    let store_url = PgUrl::parse(&fx.pg.url_for(TARGET_DB)).unwrap();
    let id = TaskId::global(Key::parse("steps-app").unwrap());
    let ttl = Duration::from_secs(2);
    let applier = PgStore::open(&store_url).await.unwrap();
    let lease = match applier
        .try_acquire(&id, &Holder::from_env(), ttl)
        .await
        .unwrap()
    {
        Attempt::Taken(l) => l,
        Attempt::Busy(_) => panic!("a fresh lease is busy"),
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    // The applier's heartbeat.
    {
        let stop = stop.clone();
        background.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                applier.renew(&lease).await.expect("renew");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Four waiting replicas, polling the busy lease as the guard does between notifications.
    for n in 0..4u32 {
        let stop = stop.clone();
        let id = id.clone();
        let store = PgStore::open(&store_url).await.unwrap();
        background.push(tokio::spawn(async move {
            let mut holder = Holder::from_env();
            holder.pid += 1 + n;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match store.try_acquire(&id, &holder, ttl).await.unwrap() {
                    Attempt::Busy(seen) => {
                        let until = std::time::Instant::now() + Duration::from_millis(300);
                        store.wait_change(&id, &seen, until).await.unwrap();
                    }
                    Attempt::Taken(_) => panic!("replica {n} took a lease that is renewed"),
                }
            }
        }));
    }
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    // Watch for any session in a transaction but idle, while the index builds.
    let idle_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let stop = stop.clone();
        let idle_seen = idle_seen.clone();
        let admin = fx.pg.admin_url(TARGET_DB);
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for row in client
                    .query(
                        "SELECT pid::text || ' ' || coalesce(query, '') FROM pg_stat_activity
                         WHERE datname = current_database() AND pid <> pg_backend_pid()
                           AND state LIKE 'idle in transaction%'",
                        &[],
                    )
                    .await
                    .unwrap()
                {
                    idle_seen.lock().unwrap().push(row.get(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let step = fx.step(
        "V1__index.sql",
        "-- initguard:no-transaction\nCREATE INDEX CONCURRENTLY big_b ON big (b);\nCREATE INDEX CONCURRENTLY big_a ON big (a);\n",
    );
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), t.apply(SET, &plan(&step), &info))
        .await
        .expect("CREATE INDEX CONCURRENTLY did not finish")
        .unwrap();
    eprintln!(
        "two CREATE INDEX CONCURRENTLY on 300,000 rows: {:?}",
        started.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in background {
        task.await.unwrap();
    }
    watcher.await.unwrap();
    assert_eq!(
        fx.sql("SELECT string_agg(indisvalid::text, ',') FROM pg_index WHERE indrelid = 'big'::regclass"),
        "true,true"
    );
    let idle = idle_seen.lock().unwrap().clone();
    assert!(idle.is_empty(), "sessions idle in a transaction: {idle:?}");
}

/// A run that gives up in the middle of a step (its future dropped: lease lost, signal) cancels
/// the statement: the step and its history row roll back together, nothing stays locked, and
/// the same connection serves the next operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_abandoned_midway_rolls_back_with_its_row_and_the_connection_goes_on() {
    let fx = fixture!();
    fx.sql("CREATE TABLE effects (step text); GRANT ALL ON effects TO app");
    let t = fx.target().await;
    let info = run(1);
    t.begin(SET, 1, &info.holder).await.unwrap();
    let slow = fx.step(
        "V1__slow.sql",
        "INSERT INTO effects VALUES ('v1');\nSELECT pg_sleep(5);\n",
    );
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        t.apply(SET, &plan(&slow), &info),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the step should still have been running"
    );
    // The cancellation reaches the server: the fence row is free again for a newer applier.
    let newer = fx.target().await;
    let started = Instant::now();
    newer.begin(SET, 2, "newer").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fx.sql("SELECT count(*) FROM effects"), "0");
    assert!(t.history(SET).await.unwrap().is_empty());
    // The old connection still works (and is fenced off, as it should be).
    assert!(matches!(
        t.apply(SET, &plan(&slow), &info).await,
        Err(TargetError::Fenced { newer: 2, .. })
    ));
}

/// A role that may not create the steps tables is told so as a refusal (as the store reports
/// one), not as a database that is down; its status reads still work and create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_is_refused_as_forbidden_and_can_still_read_status() {
    let fx = fixture!();
    fx.pg.admin("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'");
    fx.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    let url = PgUrl::parse(&format!(
        "postgres://reader:reader-pw@127.0.0.1:{}/{TARGET_DB}",
        fx.pg.port
    ))
    .unwrap();
    let t = Target::connect(&url, &TargetOptions::default())
        .await
        .unwrap();
    assert!(t.history(SET).await.unwrap().is_empty());
    match t.begin(SET, 1, "h").await {
        Err(TargetError::Connect(initguard::store::StoreError::Forbidden { reason, .. })) => {
            assert!(reason.contains("creating the steps tables"), "{reason}");
            assert!(!reason.contains("reader-pw"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'initguard'"),
        "0"
    );
}

/// The URL's `schema=` holds the steps tables, as it holds the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_urls_schema_parameter_holds_the_steps_tables() {
    let fx = fixture!();
    let url = PgUrl::parse(&format!("{}?schema=ops", fx.pg.url_for(TARGET_DB))).unwrap();
    let t = Target::connect(&url, &TargetOptions::default())
        .await
        .unwrap();
    t.begin(SET, 1, "h").await.unwrap();
    let s = fx.step("V1__a.sql", "CREATE TABLE a (id int);");
    t.apply(SET, &plan(&s), &run(1)).await.unwrap();
    assert_eq!(fx.sql("SELECT count(*) FROM ops.steps_history"), "1");
    assert_eq!(
        fx.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'initguard'"),
        "0"
    );
    assert_eq!(t.history(SET).await.unwrap().len(), 1);
}
