//! Timings of the run protocol on the embedded file store, with real processes of the built
//! binary: skip latency, 30 contenders on one key, and fingerprinting a 1000-file tree. Writes
//! its figures into BENCHMARKS.md between its markers. Nothing here is asserted.

mod support;

use support::row;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn initguard(store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
    c.env("INITGUARD_STORE", format!("file:{}", store.display()))
        .env("INITGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let store = tmp.path().join("state");
    let mut rows = Vec::new();

    // 1. A skip: the path every replica takes on every restart once the task is done.
    let skips = support::skips(&|| initguard(&store), "bench/skip", 50)?;
    rows.push(row("skip of a done task (50 runs)", skips));

    // 2. 30 contenders on one key, command takes 200 ms: wall time until all 30 have exited.
    let mut walls = Vec::new();
    for round in 0..5 {
        let key = format!("bench/contend-{round}");
        let t = Instant::now();
        let children: Vec<_> = (0..30)
            .map(|_| {
                initguard(&store)
                    .args(["run", "--key", &key, "--", "sleep", "0.2"])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for mut c in children {
            c.wait()?;
        }
        walls.push(t.elapsed());
    }
    rows.push(row(
        "30 contenders, 200 ms command, until all exited (5 rounds)",
        walls,
    ));

    // 3. Fingerprint of a 1000-file, 4 MiB tree.
    let tree = tmp.path().join("tree");
    for i in 0..1000 {
        let dir = tree.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.sql")), vec![b'x'; 4096])?;
    }
    let fps: Vec<Duration> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let _ = initguard(&store)
                .args(["run", "--key", "bench/fp", "--print-fingerprint", "--input"])
                .arg(&tree)
                .args(["--", "true"])
                .status();
            t.elapsed()
        })
        .collect();
    rows.push(row(
        "--print-fingerprint of 1000 files / 4 MiB (10 runs)",
        fps,
    ));

    rows.push(row(
        "wait: from the task's exit to the waiter's (10 keys)",
        support::wait_lags(&|| initguard(&store), "bench/wait", 10)?,
    ));

    support::publish(
        "file-store",
        "File store (`cargo bench --bench file_store`)",
        "whole-process times of the release binary.",
        &rows,
    )?;
    Ok(())
}
