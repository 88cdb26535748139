//! Shared by the benchmarks: summary statistics, and writing one bench's section of BENCHMARKS.md
//! between its markers (so that each bench replaces only its own figures). Each bench uses a part.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

/// Min, median and p95 of `xs` (which must not be empty).
pub fn stats(mut xs: Vec<Duration>) -> (Duration, Duration, Duration) {
    xs.sort();
    let pick = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (pick(0.0), pick(0.5), pick(0.95))
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A table row: what was measured, then its min, median and p95.
pub fn row(what: &str, xs: Vec<Duration>) -> String {
    let (min, med, p95) = stats(xs);
    format!("| {what} | {} | {} | {} |", ms(min), ms(med), ms(p95))
}

/// Print the section and put it into BENCHMARKS.md between `<!-- bench:NAME:begin/end -->`.
/// `how` finishes the sentence "Measured DATE on N cores; …".
pub fn publish(name: &str, title: &str, how: &str, rows: &[String]) -> std::io::Result<()> {
    let body = format!(
        "## {title}\n\nMeasured {} on {} cores; {how}\n\n| what | min | median | p95 |\n|---|---|---|---|\n{}",
        today(),
        cores(),
        rows.join("\n")
    );
    publish_section(name, &body)
}

/// The date figures are measured on, as BENCHMARKS.md shows it.
pub fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Print `body` and put it into BENCHMARKS.md between `<!-- bench:NAME:begin/end -->`, replacing
/// what was there (or appending it).
pub fn publish_section(name: &str, body: &str) -> std::io::Result<()> {
    let (begin, end) = (
        format!("<!-- bench:{name}:begin -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    let section = format!("{begin}\n{body}\n{end}");
    println!("{section}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nFigures written by `cargo bench`; timings are reported, never asserted.\n".into()
    });
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, new)
}

/// `initguard wait` started before a 300 ms task: from the task's exit to the waiter's, over
/// `rounds` keys. `base` makes an `initguard` command for the store under test.
pub fn wait_lags(
    base: &dyn Fn() -> std::process::Command,
    prefix: &str,
    rounds: usize,
) -> std::io::Result<Vec<Duration>> {
    let mut lags = Vec::new();
    for round in 0..rounds {
        let key = format!("{prefix}-{round}");
        let task = ["--", "sleep", "0.3"];
        let mut waiter = base();
        waiter
            .args(["wait", "--key", &key, "--wait-timeout", "60s"])
            .args(task);
        let mut waiter = waiter.spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        let mut runner = base();
        runner.args(["run", "--key", &key]).args(task);
        runner.status()?;
        let done = std::time::Instant::now();
        waiter.wait()?;
        lags.push(done.elapsed());
    }
    Ok(lags)
}

/// The skip path: `key` is run once to succeed, then `n` more runs are timed (each a skip).
/// `base` makes an `initguard` command for the store under test.
pub fn skips(
    base: &dyn Fn() -> std::process::Command,
    key: &str,
    n: usize,
) -> std::io::Result<Vec<Duration>> {
    let run = || {
        let mut c = base();
        c.args(["run", "--key", key, "--", "true"]);
        c
    };
    assert!(run().status()?.success(), "first run failed");
    (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            run().status()?;
            Ok(t.elapsed())
        })
        .collect()
}

/// `n` contenders on `key` at once, the command taking 200 ms: the wall time until all have
/// exited, and the time from the first exit (the holder's) to the last (the slowest waiter's).
pub fn contest(
    base: &dyn Fn() -> std::process::Command,
    key: &str,
    n: usize,
) -> std::io::Result<(Duration, Duration)> {
    let t = std::time::Instant::now();
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            base()
                .args(["run", "--key", key, "--", "sleep", "0.2"])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut exits = Vec::new();
    while !children.is_empty() {
        children.retain_mut(|c| match c.try_wait() {
            Ok(Some(_)) => {
                exits.push(std::time::Instant::now());
                false
            }
            _ => true,
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = t.elapsed();
    let first = exits.iter().min().copied().unwrap_or(t);
    let last = exits.iter().max().copied().unwrap_or(t);
    Ok((wall, last - first))
}

/// Takeover: a holder of `key` (`--lock-ttl 2s`) is killed with SIGKILL once its command runs;
/// the time from then until a successor started right after has run and exited. `dir` holds
/// the holder's start marker.
pub fn takeover(
    base: &dyn Fn() -> std::process::Command,
    dir: &Path,
    key: &str,
) -> std::io::Result<Duration> {
    let started = dir.join(format!("started-{}", key.replace('/', "-")));
    let mut holder = base()
        .args(["run", "--key", key, "--lock-ttl", "2s", "--", "sh", "-c"])
        .arg(format!("touch {}; sleep 60", started.display()))
        .spawn()?;
    while !started.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill()?;
    holder.wait()?;
    let t = std::time::Instant::now();
    base()
        .args(["run", "--key", key, "--lock-ttl", "2s", "--", "true"])
        .status()?;
    Ok(t.elapsed())
}
