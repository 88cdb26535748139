//! Timings of the etcd store with real processes of the built binary against a throwaway etcd
//! (tests/support/etcd.rs): skip latency, 30 contenders on one key (and how soon the waiters
//! follow the holder out), takeover after `kill -9` (etcd expires the holder's lease), and how
//! soon `initguard wait` sees a success. Writes its figures into BENCHMARKS.md between its
//! markers. Nothing here is asserted; without etcd installed it prints SKIP and exits.

mod support;

use support::row;

#[path = "../tests/support/etcd.rs"]
mod etcd;

use std::path::Path;
use std::process::{Command, Stdio};

fn initguard(url: &str, work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
    c.current_dir(work)
        .env("INITGUARD_STORE", url)
        .env("INITGUARD_LOG", "warn")
        .env_remove("POD_UID")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The store's revision: every write to etcd raises it by one.
fn revision(e: &etcd::Etcd) -> u64 {
    let out = e.ctl(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v[0]["Status"]["header"]["revision"].as_u64().unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(etcd) = etcd::Etcd::start() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let url = etcd.url();
    let mut rows = Vec::new();

    // 1. A skip: the path every replica takes on every restart once the task is done.
    let skips = support::skips(&|| initguard(&url, work.path()), "bench/skip", 50)?;
    rows.push(row("skip of a done task (50 runs)", skips));

    // 2. 30 contenders on one key, command takes 200 ms: wall time until all 30 have exited,
    //    from the first exit (the holder) to the last (the slowest waiter), and etcd writes.
    let (mut walls, mut follows, mut writes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        let key = format!("bench/contend-{round}");
        let before = revision(&etcd);
        let (wall, follow) = support::contest(&|| initguard(&url, work.path()), &key, 30)?;
        walls.push(wall);
        follows.push(follow);
        writes.push(revision(&etcd).saturating_sub(before));
    }
    rows.push(row(
        "30 contenders, 200 ms command, until all exited (5 rounds)",
        walls,
    ));
    rows.push(row(
        "… of which: holder's exit to the last waiter's exit",
        follows,
    ));
    writes.sort();
    rows.push(format!(
        "| … etcd writes (revisions) per round: take, running, succeeded, release | {} | {} | {} |",
        writes[0],
        writes[writes.len() / 2],
        writes[writes.len() - 1]
    ));

    // 3. Takeover: the holder is killed with SIGKILL; a successor started right after waits
    //    until etcd expires the holder's lease (--lock-ttl 2s: a 2 s etcd lease), then runs.
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
        "etcd-store",
        "etcd store (`cargo bench --bench etcd_store --features etcd`)",
        "whole-process times of the release binary against a local throwaway etcd 3.4 (one \
         member, its data on the local disk, 500 ms election timeout as the tests start it).",
        &rows,
    )?;
    Ok(())
}
