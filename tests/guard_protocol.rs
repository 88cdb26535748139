//! Every branch of the run protocol (DESIGN.md), through `Guard` over an in-memory store that
//! can fail any primitive on any call (tests/support/memory.rs). Commands are real (`sh -c`),
//! run under the real supervisor; what is asserted is the outcome, the record and the calls.

mod support;

use chrono::Utc;
use initguard::guard::{Guard, GuardError, OnInterrupted, Outcome, Plan};
use initguard::record::{Record, State};
use initguard::runner::{self, ChildSpec, Signals};
use initguard::store::{AcquireOpts, StoreError};
use initguard::task::{Holder, Key, TaskId};
use std::path::Path;
use std::time::Duration;
use support::memory::{MemoryStore, Op, lost, unreachable};

const FP: &str = "sha256:test";

fn id() -> TaskId {
    TaskId::global(Key::parse("app/protocol").unwrap())
}

fn other() -> Holder {
    Holder {
        pod: Some("web-1".into()),
        host: "elsewhere".into(),
        pid: 7,
        ..Holder::default()
    }
}

/// A plan whose command appends a line to `marker` and then runs `then`.
fn plan(marker: &Path, then: &str) -> Plan {
    runner::use_supervisor_binary(env!("CARGO_BIN_EXE_initguard"));
    Plan {
        id: id(),
        fingerprint: FP.into(),
        holder: Holder::from_env(),
        acquire: AcquireOpts {
            ttl: Duration::from_secs(3),
            wait_timeout: Some(Duration::from_secs(10)),
        },
        retries: 0,
        backoff: Duration::from_millis(10),
        max_attempts: 0,
        on_interrupted: OnInterrupted::Rerun,
        done_if: None,
        child: ChildSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo \"$INITGUARD_ATTEMPT $INITGUARD_PREVIOUS\" >> {}; {then}",
                    marker.display()
                ),
            ],
            env: Vec::new(),
            env_remove: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(1),
            capture: true,
            tail_bytes: 4096,
        },
        history: 20,
        sql: None,
    }
}

fn runs(marker: &Path) -> Vec<String> {
    std::fs::read_to_string(marker)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn record_in(state: State, token: u64) -> Record {
    let mut rec = Record::new(&id(), FP, Utc::now());
    rec.start(token, &other(), FP, Utc::now());
    if state != State::Running {
        rec.finish(state, token, None, None, Utc::now(), 20);
    }
    rec
}

async fn run(store: &MemoryStore, plan: &Plan) -> Result<Outcome, GuardError> {
    let mut signals = Signals::install().unwrap();
    Guard::new(store, plan).run(&mut signals).await
}

#[tokio::test(flavor = "current_thread")]
async fn succeeded_with_this_fingerprint_skips_without_taking_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::Succeeded, 4));
    let out = run(&store, &plan(&marker, "true")).await.unwrap();
    assert!(
        matches!(out, Outcome::Skipped { waited: false, .. }),
        "{out:?}"
    );
    assert_eq!(store.calls(Op::TryAcquire), 0);
    assert!(runs(&marker).is_empty());
}

/// `steps apply` reads the record while its files are still being hashed, and hands that read
/// to the guard as its first.
async fn run_after_read(
    store: &MemoryStore,
    plan: &Plan,
    early: Result<Option<Record>, StoreError>,
) -> Result<Outcome, GuardError> {
    let mut signals = Signals::install().unwrap();
    Guard::new(store, plan)
        .after_read(early)
        .run(&mut signals)
        .await
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_made_before_the_run_is_its_first_read() {
    use initguard::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::Succeeded, 4));
    let early = store.read(&id()).await;
    let out = run_after_read(&store, &plan(&marker, "true"), early)
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Skipped { waited: false, .. }),
        "{out:?}"
    );
    assert_eq!(store.calls(Op::Read), 1, "the guard read nothing more");
    assert_eq!(store.calls(Op::TryAcquire), 0);
    assert!(runs(&marker).is_empty());

    // Read before a record existed: the guard goes on from there, takes the lease, runs.
    let fresh = MemoryStore::new();
    let out = run_after_read(&fresh, &plan(&marker, "true"), Ok(None))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Succeeded { .. }), "{out:?}");
    assert_eq!(runs(&marker).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn an_early_read_that_failed_is_the_runs_error_unless_the_store_was_only_busy() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::Succeeded, 4));
    let err = run_after_read(
        &store,
        &plan(&marker, "true"),
        Err(unreachable("app/protocol")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, GuardError::Store(StoreError::Unreachable { .. })),
        "{err}"
    );
    assert_eq!(
        store.calls(Op::Read),
        0,
        "not read again, so not waited for twice"
    );
    assert!(runs(&marker).is_empty());

    // Short of connections: read again, patiently, as any first read is.
    let busy = StoreError::Overloaded {
        store: "memory".into(),
        reason: "too many clients already".into(),
    };
    let out = run_after_read(&store, &plan(&marker, "true"), Err(busy))
        .await
        .unwrap();
    assert!(
        matches!(out, Outcome::Skipped { waited: false, .. }),
        "{out:?}"
    );
    assert_eq!(store.calls(Op::Read), 1);
    assert!(runs(&marker).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn gave_up_with_this_fingerprint_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::GaveUp, 4));
    let err = run(&store, &plan(&marker, "true")).await.unwrap_err();
    assert!(matches!(err, GuardError::GaveUp { .. }), "{err}");
    assert_eq!(store.calls(Op::TryAcquire), 0);
    assert!(runs(&marker).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn success_seen_while_waiting_skips_without_taking_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.hold(&id(), other());
    // The other holder finishes while we wait, and keeps its lease a moment longer.
    store.on_wait(record_in(State::Succeeded, 1), false);
    let out = run(&store, &plan(&marker, "true")).await.unwrap();
    let Outcome::Skipped { waited: true, by } = out else {
        panic!("{out:?}");
    };
    assert_eq!(by, Some(other()));
    assert_eq!(store.takes(), 0, "no lease was taken just to skip");
    assert!(runs(&marker).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_busy_lease_times_out_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.hold(&id(), other());
    let mut p = plan(&marker, "true");
    p.acquire.wait_timeout = Some(Duration::from_millis(100));
    let err = run(&store, &p).await.unwrap_err();
    match err {
        GuardError::Store(StoreError::WaitTimeout { holder, .. }) => {
            assert!(holder.contains("web-1"), "{holder}")
        }
        e => panic!("{e}"),
    }
    assert!(runs(&marker).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn an_interrupted_predecessor_is_rerun_and_told_so() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::Running, 5));
    let out = run(&store, &plan(&marker, "true")).await.unwrap();
    assert!(matches!(out, Outcome::Succeeded { attempt: 2 }), "{out:?}");
    assert_eq!(runs(&marker), vec!["2 interrupted"]);
    let rec = store.record(&id()).unwrap();
    assert_eq!(rec.state, State::Succeeded);
    let interrupted = rec
        .history
        .iter()
        .find(|h| h.state == State::Interrupted)
        .unwrap();
    assert_eq!(interrupted.token, 5, "carries the interrupted run's token");
    assert!(rec.token > 5);
}

#[tokio::test(flavor = "current_thread")]
async fn an_interrupted_predecessor_with_fail_policy_stops() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.put(record_in(State::Running, 5));
    let mut p = plan(&marker, "true");
    p.on_interrupted = OnInterrupted::Fail;
    let err = run(&store, &p).await.unwrap_err();
    assert!(
        matches!(err, GuardError::InterruptedPredecessor { .. }),
        "{err}"
    );
    assert!(runs(&marker).is_empty());
    assert_eq!(store.record(&id()).unwrap().state, State::Interrupted);
}

#[tokio::test(flavor = "current_thread")]
async fn done_if_adopts_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    let mut p = plan(&marker, "true");
    p.done_if = Some("true".into());
    let out = run(&store, &p).await.unwrap();
    assert_eq!(out, Outcome::Adopted);
    assert!(runs(&marker).is_empty());
    let rec = store.record(&id()).unwrap();
    assert_eq!(rec.state, State::Succeeded);
    assert!(rec.adopted);
}

#[tokio::test(flavor = "current_thread")]
async fn done_if_saying_no_runs_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    let mut p = plan(&marker, "true");
    p.done_if = Some("false".into());
    let out = run(&store, &p).await.unwrap();
    assert!(matches!(out, Outcome::Succeeded { attempt: 1 }), "{out:?}");
    assert_eq!(runs(&marker).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failure_is_retried_in_process_then_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    let mut p = plan(
        &marker,
        &format!("[ $(wc -l < {}) -ge 2 ]", dir.path().join("runs").display()),
    );
    p.retries = 2;
    let out = run(&store, &p).await.unwrap();
    assert!(matches!(out, Outcome::Succeeded { attempt: 2 }), "{out:?}");
    assert_eq!(runs(&marker), vec!["1 none", "2 failed"]);
    let rec = store.record(&id()).unwrap();
    assert_eq!(rec.state, State::Succeeded);
    assert_eq!(rec.failures, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn the_last_allowed_failure_records_gave_up() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    let mut p = plan(&marker, "exit 3");
    p.max_attempts = 1;
    let out = run(&store, &p).await.unwrap();
    assert!(
        matches!(out, Outcome::Failed { gave_up: true, .. }),
        "{out:?}"
    );
    assert_eq!(out.exit_code(), 3);
    assert_eq!(store.record(&id()).unwrap().state, State::GaveUp);
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_error_at_the_first_read_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.fail(Op::Read, &[unreachable]);
    let err = run(&store, &plan(&marker, "true")).await.unwrap_err();
    assert!(
        matches!(err, GuardError::Store(StoreError::Unreachable { .. })),
        "{err}"
    );
    assert_eq!(store.calls(Op::TryAcquire), 0);
    assert!(runs(&marker).is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_lease_lost_before_the_start_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.fail(Op::Write("running"), &[lost]);
    let err = run(&store, &plan(&marker, "true")).await.unwrap_err();
    assert!(
        matches!(err, GuardError::Store(StoreError::LeaseLost { .. })),
        "{err}"
    );
    assert!(runs(&marker).is_empty());
    assert_eq!(
        store.calls(Op::Release),
        0,
        "a lease known lost is not released"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_lease_lost_while_running_kills_the_command_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let after = dir.path().join("after");
    let store = MemoryStore::new();
    // The first renewal (after a third of the 3 s lease) says the lease is gone.
    store.fail(Op::Renew, &[lost]);
    let p = plan(&marker, &format!("sleep 5; touch {}", after.display()));
    let err = run(&store, &p).await.unwrap_err();
    assert!(
        matches!(err, GuardError::Store(StoreError::LeaseLost { .. })),
        "{err}"
    );
    assert_eq!(runs(&marker).len(), 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!after.exists(), "the command was killed");
    assert_eq!(
        store.record(&id()).unwrap().state,
        State::Running,
        "nothing recorded"
    );
    assert_eq!(
        store.calls(Op::Release),
        0,
        "a lease known lost is not released"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn renewals_that_keep_failing_kill_the_command_before_the_lease_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let after = dir.path().join("after");
    let store = MemoryStore::new();
    store.fail(Op::Renew, &[unreachable as support::memory::Fault; 20]);
    let p = plan(&marker, &format!("sleep 5; touch {}", after.display()));
    let err = run(&store, &p).await.unwrap_err();
    assert!(
        matches!(err, GuardError::Store(StoreError::LeaseLost { .. })),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(!after.exists(), "the command was killed");
}

#[tokio::test(flavor = "current_thread")]
async fn the_final_write_is_retried_while_the_store_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.fail(Op::Write("succeeded"), &[unreachable, unreachable]);
    let out = run(&store, &plan(&marker, "true")).await.unwrap();
    assert!(matches!(out, Outcome::Succeeded { attempt: 1 }), "{out:?}");
    assert_eq!(store.calls(Op::Write("succeeded")), 3);
    assert_eq!(store.record(&id()).unwrap().state, State::Succeeded);
    assert_eq!(runs(&marker).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_final_write_fenced_off_says_the_success_was_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.fail(Op::Write("succeeded"), &[lost]);
    let err = run(&store, &plan(&marker, "true")).await.unwrap_err();
    assert!(
        matches!(err, GuardError::SuccessNotRecorded { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("the command succeeded"), "{err}");
    assert_eq!(store.calls(Op::Release), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_final_write_past_the_lease_says_the_success_was_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let store = MemoryStore::new();
    store.fail(
        Op::Write("succeeded"),
        &[unreachable as support::memory::Fault; 50],
    );
    store.fail(Op::Renew, &[unreachable as support::memory::Fault; 50]);
    let mut p = plan(&marker, "true");
    p.acquire.ttl = Duration::from_secs(1);
    let err = run(&store, &p).await.unwrap_err();
    match &err {
        GuardError::SuccessNotRecorded { .. } => {}
        e => panic!("{e}"),
    }
    assert!(err.to_string().contains("run the command again"), "{err}");
}
