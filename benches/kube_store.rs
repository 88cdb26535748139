//! Timings of the run protocol on the Kubernetes store, with real processes of the built binary
//! against the API-server double (loopback HTTP): skip latency, 30 contenders on one key and the
//! API requests they cost, and takeover after `kill -9`. Writes its figures into BENCHMARKS.md
//! between its markers. Nothing here is asserted; a real API server adds its own latency.

mod support;

use support::row;

#[path = "../tests/support/kube_api.rs"]
mod kube_api;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

const NS: &str = "bench";

fn initguard(kubeconfig: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
    c.env("INITGUARD_STORE", format!("kubernetes:{NS}"))
        .env("KUBECONFIG", kubeconfig)
        .env("INITGUARD_LOG", "warn")
        .env_remove("POD_NAME")
        .env_remove("POD_UID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn total_requests(api: &kube_api::KubeApi) -> u64 {
    ["get", "list", "create", "update"]
        .iter()
        .map(|v| api.requests(v))
        .sum()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let api = kube_api::KubeApi::start();
    let kubeconfig = api.kubeconfig(tmp.path(), NS);
    let mut rows = Vec::new();

    // 1. A skip: one GET of the Lease, the path every replica takes on every restart.
    let skips = support::skips(&|| initguard(&kubeconfig), "bench/skip", 50)?;
    rows.push(row("skip of a done task (50 runs)", skips));

    // 2. 30 contenders on one key, command takes 200 ms: wall time until all 30 have exited,
    // and the API requests the round cost.
    let mut walls = Vec::new();
    let mut per_round = Vec::new();
    let mut watches = Vec::new();
    for round in 0..5 {
        let key = format!("bench/contend-{round}");
        let before = total_requests(&api);
        let watches_before = api.requests("watch");
        let t = Instant::now();
        let children: Vec<_> = (0..30)
            .map(|_| {
                initguard(&kubeconfig)
                    .args(["run", "--key", &key, "--", "sleep", "0.2"])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut c in children {
            c.wait()?;
        }
        walls.push(t.elapsed());
        per_round.push(total_requests(&api) - before);
        watches.push(api.requests("watch") - watches_before);
    }
    rows.push(row(
        "30 contenders, 200 ms command, until all exited (5 rounds)",
        walls,
    ));
    per_round.sort();
    watches.sort();
    let mid = per_round.len() / 2;
    rows.push(format!(
        "| API requests per 30-contender round (get+list+create+update) | {} | {} | {} |",
        per_round[0],
        per_round[mid],
        per_round[per_round.len() - 1]
    ));
    // Each process's first read is one GET; the rest, holder's writes included, spread over
    // the 29 waiters: an upper bound on what each waiter costs after its first read.
    let per_waiter = |n: u64| format!("{:.1}", n.saturating_sub(30) as f64 / 29.0);
    rows.push(format!(
        "| … per waiter after its first read (upper bound: holder's requests included) | {} | {} | {} |",
        per_waiter(per_round[0]),
        per_waiter(per_round[mid]),
        per_waiter(per_round[per_round.len() - 1])
    ));
    rows.push(format!(
        "| … watches opened per round | {} | {} | {} |",
        watches[0],
        watches[watches.len() / 2],
        watches[watches.len() - 1]
    ));

    // 3. Takeover: the holder is killed with SIGKILL; a successor started right after waits
    // until it has seen the Lease unchanged for the lease duration (--lock-ttl 2s).
    let mut takeovers = Vec::new();
    for round in 0..3 {
        let key = format!("bench/takeover-{round}");
        takeovers.push(support::takeover(
            &|| initguard(&kubeconfig),
            tmp.path(),
            &key,
        )?);
    }
    rows.push(row(
        "takeover after kill -9, --lock-ttl 2s, until the successor exited (3 runs)",
        takeovers,
    ));

    rows.push(row(
        "wait: from the task's exit to the waiter's (10 keys)",
        support::wait_lags(&|| initguard(&kubeconfig), "bench/wait", 10)?,
    ));

    support::publish(
        "kube-store",
        "Kubernetes store (`cargo bench --bench kube_store`)",
        "whole-process times of the release binary against the API-server double of `tests/support/kube_api.rs` on loopback (a real API server adds its own latency per request).",
        &rows,
    )?;
    Ok(())
}
