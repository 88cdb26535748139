//! Timings of the ZooKeeper store with real processes of the built binary against a throwaway
//! server (Debian's package, tests/support/zk.rs): skip latency, 30 contenders on one key (and how
//! soon the waiters follow the holder out), takeover after `kill -9` (the server expires the
//! holder's session), and `wait`. Writes its figures into BENCHMARKS.md between its markers.
//! Nothing here is asserted; without ZooKeeper installed it prints SKIP and exits.

mod support;

use support::row;

#[path = "../tests/support/zk.rs"]
mod zk;

use std::path::Path;
use std::process::{Command, Stdio};

/// What tests/support/zk.rs asks of its parent module: skip visibly, or fail under CI.
fn require(what: &str, found: bool) -> bool {
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{what} is required under CI=true but was not found");
        }
        eprintln!("SKIP: {what} not found; skipping the ZooKeeper bench");
    }
    found
}

fn initguard(url: &str, work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
    c.current_dir(work)
        .env("INITGUARD_STORE", url)
        .env("INITGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(server) = zk::Zk::start() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let url = server.url("");
    let mut rows = Vec::new();

    // 1. A skip: the path every replica takes on every restart once the task is done (one
    //    session, one getData).
    let skips = support::skips(&|| initguard(&url, work.path()), "bench/skip", 50)?;
    rows.push(row("skip of a done task (50 runs)", skips));

    // 2. 30 contenders on one key, command takes 200 ms: wall time until all 30 have exited,
    //    and from the first exit (the holder) to the last (the slowest waiter).
    let (mut walls, mut follows) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let key = format!("bench/contend-{round}");
        let (wall, follow) = support::contest(&|| initguard(&url, work.path()), &key, 30)?;
        walls.push(wall);
        follows.push(follow);
    }
    rows.push(row(
        "30 contenders, 200 ms command, until all exited (5 rounds)",
        walls,
    ));
    rows.push(row(
        "… of which: holder's exit to the last waiter's exit",
        follows,
    ));

    // 3. Takeover: the holder is killed with SIGKILL; a successor started right after waits
    //    until the server expires the holder's session (--lock-ttl 2s), then runs.
    let mut takeovers = Vec::new();
    for round in 0..3 {
        let key = format!("bench/takeover-{round}");
        takeovers.push(support::takeover(
            &|| initguard(&url, work.path()),
            work.path(),
            &key,
        )?);
    }
    rows.push(row(
        "takeover after kill -9, --lock-ttl 2s, until the successor exited (3 runs)",
        takeovers,
    ));

    rows.push(row(
        "wait: from the task's exit to the waiter's (10 keys)",
        support::wait_lags(&|| initguard(&url, work.path()), "bench/wait", 10)?,
    ));

    support::publish(
        "zk-store",
        "ZooKeeper store (`cargo bench --features zookeeper --bench zk_store`)",
        "whole-process times of the release binary against a local throwaway ZooKeeper 3.8 \
         (Debian's package, tickTime 250 ms).",
        &rows,
    )?;
    Ok(())
}
