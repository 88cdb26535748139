//! `--print-fingerprint` on large inputs, with the release binary: wall time and peak RSS of one
//! 1 GiB file (streamed through a 64 KiB buffer, so memory must not grow with it) and of a tree
//! of 100,000 small files. Writes its figures into BENCHMARKS.md between its markers. Nothing
//! here is asserted.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a re-executed copy of this bench: run initguard with these arguments (separated by
/// U+001F), then print the peak RSS of that one child in KiB.
const RSS_CHILD: &str = "INITGUARD_BENCH_RSS_CHILD";

fn initguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
    c.env("INITGUARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn fingerprint_args(input: &Path) -> Vec<String> {
    vec![
        "--store".into(),
        "file:/nonexistent-bench-store".into(),
        "run".into(),
        "--key".into(),
        "bench/fp".into(),
        "--print-fingerprint".into(),
        "--input".into(),
        input.display().to_string(),
        "--".into(),
        "true".into(),
    ]
}

/// Wall time and peak RSS (KiB) of one `--print-fingerprint` run, measured in a fresh process so
/// that getrusage's "largest child" is this run alone.
fn measure(input: &Path) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .env(RSS_CHILD, fingerprint_args(input).join("\u{1f}"))
        .stderr(Stdio::inherit())
        .output()?;
    let wall = t.elapsed();
    let kib = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok((wall, kib))
}

fn rss_child(args: &str) -> Result<(), Box<dyn std::error::Error>> {
    let status = initguard().args(args.split('\u{1f}')).status()?;
    assert!(status.success(), "--print-fingerprint failed: {status}");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    // Linux reports ru_maxrss in KiB.
    println!("{}", usage.max_rss());
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A row of peak RSS figures, in the table's min/median/p95 columns.
fn rss_row(what: &str, mut kib: Vec<u64>) -> String {
    kib.sort();
    let pick = |q: f64| kib[((kib.len() - 1) as f64 * q).round() as usize];
    format!(
        "| {what} | {} | {} | {} |",
        mib(pick(0.0)),
        mib(pick(0.5)),
        mib(pick(0.95))
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(args) = std::env::var(RSS_CHILD) {
        return rss_child(&args);
    }
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();

    // 1. One 1 GiB file, written in 1 MiB chunks of varying bytes.
    let big = tmp.path().join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big)?);
        let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..1024 {
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let runs: Vec<(Duration, u64)> = (0..3).map(|_| measure(&big)).collect::<Result<_, _>>()?;
    rows.push(support::row(
        "--print-fingerprint of one 1 GiB file (3 runs)",
        runs.iter().map(|r| r.0).collect(),
    ));
    rows.push(rss_row(
        "… its peak RSS",
        runs.iter().map(|r| r.1).collect(),
    ));
    std::fs::remove_file(&big)?;

    // 2. 100,000 files of 64 bytes in 100 directories.
    let tree = tmp.path().join("tree");
    for d in 0..100 {
        let dir = tree.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for i in 0..1000 {
            std::fs::write(
                dir.join(format!("f{i:04}.sql")),
                [b'a' + (i % 26) as u8; 64],
            )?;
        }
    }
    let runs: Vec<(Duration, u64)> = (0..5).map(|_| measure(&tree)).collect::<Result<_, _>>()?;
    rows.push(support::row(
        "--print-fingerprint of 100,000 files of 64 bytes (5 runs)",
        runs.iter().map(|r| r.0).collect(),
    ));
    rows.push(rss_row(
        "… its peak RSS",
        runs.iter().map(|r| r.1).collect(),
    ));

    support::publish(
        "fingerprint",
        "Fingerprint of large inputs (`cargo bench --bench fingerprint`)",
        "whole-process times and peak RSS (getrusage) of the release binary, warm page cache.",
        &rows,
    )?;
    Ok(())
}
