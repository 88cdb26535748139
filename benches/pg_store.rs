//! Timings of the PostgreSQL store with real processes of the built binary against a throwaway
//! server: skip latency, 30 contenders on one key (and how soon the waiters follow the holder
//! out), a one-statement SQL task, takeover after `kill -9`, and 100 contenders on a server that
//! allows 40 connections. Writes its figures into
//! BENCHMARKS.md between its markers. Nothing here is asserted; without PostgreSQL installed it
//! prints SKIP and exits.

mod support;

use support::row;

#[path = "../tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let Some(pg) = pg::Pg::start() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let url = pg.url();
    let mut rows = Vec::new();

    // 1. A skip: the path every replica takes on every restart once the task is done.
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

    // 3. An SQL task: one INSERT committed with its success record (new key each run).
    pg.sql_in(pg::APP_DB, "CREATE TABLE bench_effect (k text)");
    pg.sql_in(pg::APP_DB, "ALTER TABLE bench_effect OWNER TO app");
    let sqls = (0..20)
        .map(|i| {
            let t = Instant::now();
            let _ = initguard(&url, work.path())
                .args(["run", "--key", &format!("bench/sql-{i}"), "--sql-inline"])
                .arg(format!("INSERT INTO bench_effect VALUES ('{i}')"))
                .status();
            t.elapsed()
        })
        .collect();
    rows.push(row("SQL task, one INSERT + success record (20 runs)", sqls));

    // 4. Takeover: the holder is killed with SIGKILL; a successor started right after waits
    //    until the lease lapses by the database clock (--lock-ttl 2s), then runs.
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

    // 5. A rollout larger than the connection limit: 100 contenders, max_connections=40, the
    //    holder's command 3 s. Server connections in use are sampled while they wait.
    let mut pg = pg;
    pg.restart_with_max_connections(40);
    let mut peaks = Vec::new();
    let mut big_walls = Vec::new();
    let mut failures = 0;
    for round in 0..2 {
        let key = format!("bench/big-{round}");
        let t = Instant::now();
        let mut children: Vec<_> = (0..100)
            .map(|_| {
                initguard(&url, work.path())
                    .args([
                        "run",
                        "--key",
                        &key,
                        "--wait-timeout",
                        "120s",
                        "--",
                        "sleep",
                        "3",
                    ])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut peak = 0u64;
        // Once the start-up burst (every process's first read) is over, while they wait.
        while t.elapsed() < Duration::from_millis(1500) {
            std::thread::sleep(Duration::from_millis(50));
        }
        while t.elapsed() < Duration::from_millis(2800) {
            let n: u64 = pg
                .admin("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
                .trim()
                .parse()
                .unwrap_or(0);
            peak = peak.max(n);
            std::thread::sleep(Duration::from_millis(200));
        }
        for c in &mut children {
            if !c.wait()?.success() {
                failures += 1;
            }
        }
        big_walls.push(t.elapsed());
        peaks.push(peak);
    }
    rows.push(row(
        "100 contenders, max_connections=40, 3 s command, until all exited (2 rounds)",
        big_walls,
    ));
    peaks.sort();
    rows.push(format!(
        "| … server connections of the store's role in use while they waited (peak, 1.5–2.8 s in; {failures} exits ≠ 0) | {} | {} | {} |",
        peaks[0],
        peaks[peaks.len() / 2],
        peaks[peaks.len() - 1]
    ));

    rows.push(row(
        "wait: from the task's exit to the waiter's (10 keys)",
        support::wait_lags(&|| initguard(&url, work.path()), "bench/wait", 10)?,
    ));

    support::publish(
        "pg-store",
        "PostgreSQL store (`cargo bench --bench pg_store`)",
        "whole-process times of the release binary against a local throwaway server.",
        &rows,
    )?;
    Ok(())
}
