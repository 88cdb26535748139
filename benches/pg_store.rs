//! Timings of the PostgreSQL store with real processes of the built binary against a throwaway
//! server: skip latency, 30 contenders on one key (and how soon the waiters follow the holder
//! out), a one-statement SQL task, and takeover after `kill -9`. Writes its figures into
//! BENCHMARKS.md between its markers. Nothing here is asserted; without PostgreSQL installed it
//! prints SKIP and exits.

#[path = "../tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BEGIN: &str = "<!-- bench:pg-store:begin -->";
const END: &str = "<!-- bench:pg-store:end -->";

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

fn stats(mut xs: Vec<Duration>) -> (Duration, Duration, Duration) {
    xs.sort();
    let pick = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    (pick(0.0), pick(0.5), pick(0.95))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(what: &str, xs: Vec<Duration>) -> String {
    let (min, med, p95) = stats(xs);
    format!("| {what} | {} | {} | {} |", ms(min), ms(med), ms(p95))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(pg) = pg::Pg::start() else {
        return Ok(());
    };
    let work = tempfile::tempdir()?;
    let url = pg.url();
    let mut rows = Vec::new();

    // 1. A skip: the path every replica takes on every restart once the task is done.
    let ok = initguard(&url, work.path())
        .args(["run", "--key", "bench/skip", "--", "true"])
        .status()?;
    assert!(ok.success(), "first run failed");
    let skips = (0..50)
        .map(|_| {
            let t = Instant::now();
            let _ = initguard(&url, work.path())
                .args(["run", "--key", "bench/skip", "--", "true"])
                .status();
            t.elapsed()
        })
        .collect();
    rows.push(row("skip of a done task (50 runs)", skips));

    // 2. 30 contenders on one key, command takes 200 ms: wall time until all 30 have exited,
    //    and from the first exit (the holder) to the last (the slowest waiter).
    let (mut walls, mut follows) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let key = format!("bench/contend-{round}");
        let t = Instant::now();
        let mut children: Vec<_> = (0..30)
            .map(|_| {
                initguard(&url, work.path())
                    .args(["run", "--key", &key, "--", "sleep", "0.2"])
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut exits = Vec::new();
        while !children.is_empty() {
            children.retain_mut(|c| match c.try_wait() {
                Ok(Some(_)) => {
                    exits.push(Instant::now());
                    false
                }
                _ => true,
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        walls.push(t.elapsed());
        let first = exits.iter().min().copied().unwrap_or(t);
        let last = exits.iter().max().copied().unwrap_or(t);
        follows.push(last - first);
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
        let started = work.path().join(format!("started-{round}"));
        let mut holder = initguard(&url, work.path())
            .args(["run", "--key", &key, "--lock-ttl", "2s", "--", "sh", "-c"])
            .arg(format!("touch {}; sleep 60", started.display()))
            .spawn()?;
        while !started.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        holder.kill()?;
        holder.wait()?;
        let t = Instant::now();
        initguard(&url, work.path())
            .args(["run", "--key", &key, "--lock-ttl", "2s", "--", "true"])
            .status()?;
        takeovers.push(t.elapsed());
    }
    rows.push(row(
        "takeover after kill -9, --lock-ttl 2s, until the successor exited (3 runs)",
        takeovers,
    ));

    let section = format!(
        "{BEGIN}\n## PostgreSQL store (`cargo bench --bench pg_store`)\n\nMeasured {} on {} cores against a local throwaway server; whole-process times of the release binary.\n\n| what | min | median | p95 |\n|---|---|---|---|\n{}\n{END}",
        chrono::Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rows.join("\n")
    );
    println!("{section}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\nFigures written by `cargo bench`; timings are reported, never asserted.\n".into());
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + END.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(&path, new)?;
    Ok(())
}
