//! `initguard steps` beside sqlx-cli (when `sqlx` is on PATH; skipped with a message if not):
//! whole processes of the release binary against one local throwaway PostgreSQL with fsync on,
//! 1,000 trivial migrations (`CREATE TABLE t_NNNN (id int primary key)`, one per file). Applied to
//! a fresh database, applied again (nothing new), status, one more added and applied, and 8
//! appliers started at once on an empty database. Medians of 3. Writes the "Versioned steps"
//! section of BENCHMARKS.md with the goals and whether they are met. Nothing here is
//! asserted; without PostgreSQL installed it prints SKIP and exits.

mod support;

#[path = "../tests/support/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

const STEPS: usize = 1000;
/// Rounds of every measurement: the shared cores' noise moves one run's figures by a fifth.
const ROUNDS: usize = 5;
const APPLIERS: usize = 8;
/// The fast operations (no-op apply, status) are repeated this often in each round: a median of
/// one run per round is mostly the machine's noise at 20 ms.
const REPEAT: usize = 10;
/// The set's key for initguard (its history and record); sqlx-cli has no such notion.
const KEY: &str = "bench-steps";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Initguard,
    Sqlx,
}

impl Tool {
    fn short(self) -> &'static str {
        match self {
            Tool::Initguard => "ig",
            Tool::Sqlx => "sqlx",
        }
    }

    /// Each tool's own file naming for migration `n`.
    fn file_name(self, n: usize) -> String {
        match self {
            Tool::Initguard => format!("V{n:04}__t_{n:04}.sql"),
            Tool::Sqlx => format!("{n:04}_t_{n:04}.sql"),
        }
    }
}

struct Bench {
    pg: pg::Pg,
    work: tempfile::TempDir,
    sqlx: Option<PathBuf>,
}

/// `sqlx` on PATH, as an absolute path.
fn find_sqlx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("sqlx"))
        .find(|p| p.is_file())
}

fn write_steps(dir: &Path, tool: Tool, count: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for n in 1..=count {
        std::fs::write(
            dir.join(tool.file_name(n)),
            format!("CREATE TABLE t_{n:04} (id int primary key);\n"),
        )?;
    }
    Ok(())
}

/// What one process did: when it exited, how, and what it printed.
struct Exit {
    pid: u32,
    at: Instant,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// One round of `APPLIERS` processes started at once.
struct Contest {
    appliers: usize,
    skipped: usize,
    errors: usize,
    /// The first error a process printed, for the notes.
    error: Option<String>,
    /// Migrations applied more than once: applies the processes claim beyond the distinct
    /// versions recorded.
    duplicated: usize,
    /// The latest of the others' exits relative to the applier's (either side).
    spread: Option<Duration>,
    /// From the start to the last exit.
    wall: Duration,
    /// Every migration's table is there afterwards.
    complete: bool,
}

impl Bench {
    fn dir(&self, tool: Tool, count: usize) -> PathBuf {
        self.work.path().join(format!("{}-{count}", tool.short()))
    }

    fn apply(&self, tool: Tool, url: &str, dir: &Path) -> Command {
        self.command(tool, url, dir, "apply", "run")
    }

    fn status(&self, tool: Tool, url: &str, dir: &Path) -> Command {
        self.command(tool, url, dir, "status", "info")
    }

    /// `initguard steps <ours> DIR` or `sqlx migrate <theirs> --source DIR`, on `url`.
    fn command(&self, tool: Tool, url: &str, dir: &Path, ours: &str, theirs: &str) -> Command {
        match tool {
            Tool::Initguard => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_initguard"));
                c.args(["steps", ours])
                    .arg(dir)
                    .args(["--key", KEY])
                    .env("INITGUARD_STORE", url);
                self.quiet(c)
            }
            Tool::Sqlx => {
                let mut c = Command::new(self.sqlx.as_deref().unwrap_or(Path::new("sqlx")));
                c.args(["migrate", theirs, "--source"])
                    .arg(dir)
                    .args(["--database-url", url]);
                self.quiet(c)
            }
        }
    }

    fn quiet(&self, mut c: Command) -> Command {
        c.current_dir(self.work.path())
            .env("INITGUARD_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("PGPASSWORD")
            .env_remove("INITGUARD_STORE_PASSWORD_FILE")
            .stdin(Stdio::null());
        c
    }

    /// A fresh, empty database owned by the app role. Databases are never dropped during the
    /// run (the throwaway server goes with its directory at the end): PostgreSQL 15's
    /// `DROP DATABASE` forces an immediate checkpoint ("checkpoint starting: immediate force
    /// wait" in the server's log), after which the first change to every page writes a
    /// full-page image, so a drop between rounds weighed on whichever tool ran next.
    fn fresh_db(&self, name: &str) -> String {
        self.pg
            .admin(&format!("CREATE DATABASE {name} OWNER {}", pg::APP_USER));
        self.pg.url_for(name)
    }

    /// The server's own share of "apply 1,000": the 1,000 statements alone, each in its own
    /// transaction, sent by psql in one message on one connection (fresh database; psql's start
    /// and connection included), with asynchronous or synchronous commits.
    fn floor(&self, round: usize, synchronous: bool) -> Result<Duration, Error> {
        let db = format!("f_{round}_{synchronous}");
        self.fresh_db(&db);
        let mut sql = format!(
            "SET synchronous_commit = {};",
            if synchronous { "on" } else { "off" }
        );
        for n in 1..=STEPS {
            sql.push_str(&format!(
                "BEGIN; CREATE TABLE t_{n:04} (id int primary key); COMMIT;"
            ));
        }
        let t = Instant::now();
        self.pg
            .try_sql_in(&db, &sql)
            .map_err(|e| format!("floor: {e}"))?;
        let took = t.elapsed();
        Ok(took)
    }

    fn tables(&self, db: &str) -> usize {
        self.pg
            .sql_in(
                db,
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 't\\_%'",
            )
            .parse()
            .unwrap_or(0)
    }

    /// The sequential figures of one tool in one round (fresh database): apply 1,000 once, the
    /// no-op apply and status `REPEAT` times each, add one + apply once.
    fn sequential(&self, tool: Tool, round: usize) -> Result<[Vec<Sample>; 4], Error> {
        let db = format!("b_{}_{round}", tool.short());
        let url = self.fresh_db(&db);
        let (all, plus_one) = (self.dir(tool, STEPS), self.dir(tool, STEPS + 1));
        let apply = vec![timed(&mut self.apply(tool, &url, &all), "apply 1,000")?];
        let noop = (0..REPEAT)
            .map(|_| timed(&mut self.apply(tool, &url, &all), "no-op apply"))
            .collect::<Result<_, _>>()?;
        let status = (0..REPEAT)
            .map(|_| timed(&mut self.status(tool, &url, &all), "status"))
            .collect::<Result<_, _>>()?;
        let add = vec![timed(
            &mut self.apply(tool, &url, &plus_one),
            "add one + apply",
        )?];
        let n = self.tables(&db);
        if n != STEPS + 1 {
            return Err(format!("{tool:?}: {n} tables after apply, not {}", STEPS + 1).into());
        }
        Ok([apply, noop, status, add])
    }

    /// initguard's own floor for the no-op apply: the same skip with a set of one step (process
    /// start, one store connection, one record read, next to nothing to hash), `REPEAT` times.
    fn skip_floor(&self, round: usize) -> Result<Vec<Sample>, Error> {
        let db = format!("s_{round}");
        let url = self.fresh_db(&db);
        let dir = self.dir(Tool::Initguard, 1);
        timed(&mut self.apply(Tool::Initguard, &url, &dir), "apply 1")?;
        let skips = (0..REPEAT)
            .map(|_| {
                timed(
                    &mut self.apply(Tool::Initguard, &url, &dir),
                    "no-op apply of 1",
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(skips)
    }

    fn contest(&self, tool: Tool, round: usize) -> Result<Contest, Error> {
        let db = format!("c_{}_{round}", tool.short());
        let url = self.fresh_db(&db);
        let dir = self.dir(tool, STEPS);
        let logs = self
            .work
            .path()
            .join(format!("contest-{}-{round}", tool.short()));
        std::fs::create_dir_all(&logs)?;
        let t = Instant::now();
        let mut children: Vec<(Child, PathBuf, PathBuf)> = (0..APPLIERS)
            .map(|i| -> Result<_, Error> {
                let (out, err) = (logs.join(format!("{i}.out")), logs.join(format!("{i}.err")));
                let child = self
                    .apply(tool, &url, &dir)
                    .stdout(std::fs::File::create(&out)?)
                    .stderr(std::fs::File::create(&err)?)
                    .spawn()?;
                Ok((child, out, err))
            })
            .collect::<Result<_, _>>()?;
        let mut exits = Vec::new();
        while !children.is_empty() {
            let mut i = 0;
            while i < children.len() {
                if let Some(status) = children[i].0.try_wait()? {
                    let at = Instant::now();
                    let (child, out, err) = children.swap_remove(i);
                    exits.push(Exit {
                        pid: child.id(),
                        at,
                        status,
                        stdout: std::fs::read_to_string(out).unwrap_or_default(),
                        stderr: std::fs::read_to_string(err).unwrap_or_default(),
                    });
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let wall = t.elapsed();
        // Who applied: initguard's history names the holder (`host_pid`) of every step; sqlx-cli
        // prints "Applied …" for each migration it ran.
        let applied_by: Vec<bool> = match tool {
            Tool::Initguard => {
                let holders = self
                    .pg
                    .sql_in(&db, "SELECT DISTINCT holder FROM initguard.steps_history");
                let pids: Vec<String> = holders
                    .lines()
                    .filter_map(|h| h.rsplit('_').next())
                    .map(str::to_string)
                    .collect();
                exits
                    .iter()
                    .map(|e| pids.contains(&e.pid.to_string()))
                    .collect()
            }
            Tool::Sqlx => exits.iter().map(|e| e.stdout.contains("Applied")).collect(),
        };
        let appliers = applied_by.iter().filter(|a| **a).count();
        let errors = exits.iter().filter(|e| !e.status.success()).count();
        let skipped = exits
            .iter()
            .zip(&applied_by)
            .filter(|(e, a)| e.status.success() && !**a)
            .count();
        // sqlx-cli prints its errors on stdout; initguard's last stderr line says what happened.
        let error = exits.iter().filter(|e| !e.status.success()).find_map(|e| {
            e.stdout
                .lines()
                .chain(e.stderr.lines())
                .find(|l| l.starts_with("error") || l.starts_with("initguard:"))
                .map(str::to_string)
        });
        let claimed_and_distinct = match tool {
            Tool::Initguard => self.pg.sql_in(
                &db,
                "SELECT count(*) || ' ' || count(DISTINCT step) FROM initguard.steps_history",
            ),
            Tool::Sqlx => {
                let claimed: usize = exits
                    .iter()
                    .map(|e| {
                        e.stdout
                            .lines()
                            .filter(|l| l.starts_with("Applied"))
                            .count()
                    })
                    .sum();
                let distinct = self
                    .pg
                    .sql_in(&db, "SELECT count(DISTINCT version) FROM _sqlx_migrations");
                format!("{claimed} {distinct}")
            }
        };
        let duplicated = match claimed_and_distinct.split_once(' ') {
            Some((c, d)) => c
                .parse::<usize>()
                .unwrap_or(0)
                .saturating_sub(d.parse().unwrap_or(0)),
            None => 0,
        };
        let spread = (appliers == 1).then(|| {
            let at = exits
                .iter()
                .zip(&applied_by)
                .find(|(_, a)| **a)
                .map(|(e, _)| e.at)
                .unwrap_or(t);
            exits
                .iter()
                .map(|e| if e.at > at { e.at - at } else { at - e.at })
                .max()
                .unwrap_or_default()
        });
        let complete = self.tables(&db) == STEPS;
        Ok(Contest {
            appliers,
            skipped,
            errors,
            error,
            duplicated,
            spread,
            wall,
            complete,
        })
    }
}

/// One run: its wall time, and the CPU time (user + system) it and its children used.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| {
                Duration::from_micros(tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64)
            };
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

/// Run to completion, which must succeed.
fn timed(c: &mut Command, what: &str) -> Result<Sample, Error> {
    let cpu = children_cpu();
    let t = Instant::now();
    let out = c.output()?;
    let wall = t.elapsed();
    let cpu = children_cpu().saturating_sub(cpu);
    if !out.status.success() {
        return Err(format!(
            "{what}: {:?} exited {}: {}",
            c.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(Sample { wall, cpu })
}

/// The 1-minute load average, as /proc/loadavg has it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn show(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

/// Wall time, with CPU time beside it.
fn cell(f: &Figures, k: usize) -> String {
    format!("{} (CPU {})", show(f.seq[k]), show(f.cpu[k]))
}

fn yes_no(b: bool) -> &'static str {
    if b { "**yes**" } else { "**no**" }
}

/// Whether our time meets a goal set against sqlx-cli's.
type Goal = fn(ours: Duration, sqlx: Duration) -> bool;

/// Medians of the sequential figures (wall, CPU, how many runs) and the contests of one tool.
struct Figures {
    seq: [Duration; 4],
    cpu: [Duration; 4],
    runs: [usize; 4],
    contests: Vec<Contest>,
}

impl Figures {
    fn contest_cell(&self) -> String {
        let per_round = |f: fn(&Contest) -> usize| {
            self.contests
                .iter()
                .map(|c| f(c).to_string())
                .collect::<Vec<_>>()
                .join("/")
        };
        let spreads: Vec<Duration> = self.contests.iter().filter_map(|c| c.spread).collect();
        let spread = if spreads.len() == self.contests.len() && !spreads.is_empty() {
            format!(
                "last exit {} from the applier's (median; worst {})",
                show(median(spreads.clone())),
                show(spreads.iter().max().copied().unwrap_or_default())
            )
        } else {
            "not one applier in every round".to_string()
        };
        format!(
            "per round: appliers {}, skipped {}, errors {}, duplicated {}; {spread}; all tables {}; all exited after {}",
            per_round(|c| c.appliers),
            per_round(|c| c.skipped),
            per_round(|c| c.errors),
            per_round(|c| c.duplicated),
            if self.contests.iter().all(|c| c.complete) {
                "there"
            } else {
                "**not** there"
            },
            show(median(self.contests.iter().map(|c| c.wall).collect()))
        )
    }

    fn contest_goal_met(&self) -> bool {
        self.contests.iter().all(|c| {
            c.appliers == 1
                && c.skipped == APPLIERS - 1
                && c.errors == 0
                && c.duplicated == 0
                && c.complete
                && c.spread.is_some_and(|s| s <= Duration::from_millis(200))
        })
    }
}

/// What no tool can go below: the server's work for apply 1,000 (with asynchronous and with
/// synchronous commits), and initguard's skip of a one-step set (median, runs).
struct Floors {
    apply: (Duration, Duration),
    skip: (Duration, usize),
}

/// Each tool's figures, and the floors.
fn measure(b: &Bench, tools: &[Tool]) -> Result<(Vec<Figures>, Floors), Error> {
    let mut seq: Vec<[Vec<Sample>; 4]> = tools.iter().map(|_| Default::default()).collect();
    let mut floors = (Vec::new(), Vec::new());
    let mut skip_floor = Vec::new();
    // Interleaved, floors included, so that the tools and the floors see the same machine load;
    // in the reverse order every other round, so that none always runs right after the same
    // one (the server's background writes after 1,000 new tables weigh on what comes next).
    for round in 0..ROUNDS {
        let mut order: Vec<Option<usize>> = std::iter::once(None)
            .chain((0..tools.len()).map(Some))
            .collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for slot in order {
            match slot {
                None => {
                    floors.0.push(b.floor(round, false)?);
                    floors.1.push(b.floor(round, true)?);
                }
                Some(i) => {
                    for (k, samples) in b.sequential(tools[i], round)?.into_iter().enumerate() {
                        seq[i][k].extend(samples);
                    }
                }
            }
        }
        skip_floor.extend(b.skip_floor(round)?);
    }
    let floors = Floors {
        apply: (median(floors.0), median(floors.1)),
        skip: (
            median(skip_floor.iter().map(|s| s.wall).collect()),
            skip_floor.len(),
        ),
    };
    let mut contests: Vec<Vec<Contest>> = tools.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (i, tool) in tools.iter().enumerate() {
            contests[i].push(b.contest(*tool, round)?);
        }
    }
    let figures = seq
        .into_iter()
        .zip(contests)
        .map(|(samples, contests)| Figures {
            seq: std::array::from_fn(|k| median(samples[k].iter().map(|s| s.wall).collect())),
            cpu: std::array::from_fn(|k| median(samples[k].iter().map(|s| s.cpu).collect())),
            runs: std::array::from_fn(|k| samples[k].len()),
            contests,
        })
        .collect();
    Ok((figures, floors))
}

fn main() -> Result<(), Error> {
    let Some(mut pg) = pg::Pg::start() else {
        return Ok(());
    };
    pg.restart_durable();
    let sqlx = find_sqlx();
    let sqlx_version = match &sqlx {
        Some(p) => Command::new(p)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "sqlx-cli".into()),
        None => {
            eprintln!(
                "SKIP sqlx-cli: `sqlx` is not on PATH (cargo install sqlx-cli --no-default-features \
                 --features postgres,rustls); measuring initguard alone"
            );
            String::new()
        }
    };
    let b = Bench {
        pg,
        work: tempfile::tempdir()?,
        sqlx,
    };
    let tools: Vec<Tool> = if b.sqlx.is_some() {
        vec![Tool::Initguard, Tool::Sqlx]
    } else {
        vec![Tool::Initguard]
    };
    write_steps(&b.dir(Tool::Initguard, 1), Tool::Initguard, 1)?;
    for tool in &tools {
        write_steps(&b.dir(*tool, STEPS), *tool, STEPS)?;
        write_steps(&b.dir(*tool, STEPS + 1), *tool, STEPS + 1)?;
    }
    let server = b.pg.admin("SHOW server_version");
    let load_before = loadavg();
    let (figures, floors) = measure(&b, &tools)?;
    let (floor_async, floor_sync) = floors.apply;
    let load_after = loadavg();
    let ours = &figures[0];
    let theirs = figures.get(1);

    let names = [
        "apply 1,000",
        "no-op apply (all applied)",
        "status of 1,000",
        "add one + apply",
    ];
    let goals: [(&str, Goal); 4] = [
        ("≤ ½ of sqlx-cli's", |o, s| o * 2 <= s),
        ("< ½ of sqlx-cli's", |o, s| o * 2 < s),
        ("< sqlx-cli's", |o, s| o < s),
        ("–", |_, _| true),
    ];
    let mut rows = Vec::new();
    let mut met_all = true;
    for k in 0..4 {
        let (goal, check) = goals[k];
        let (theirs_cell, met) = match theirs {
            Some(t) => {
                let met = if goal == "–" {
                    "–".to_string()
                } else {
                    let m = check(ours.seq[k], t.seq[k]);
                    met_all &= m;
                    format!(
                        "{} ({:.2}×)",
                        yes_no(m),
                        ours.seq[k].as_secs_f64() / t.seq[k].as_secs_f64()
                    )
                };
                (cell(t, k), met)
            }
            None => ("not measured".to_string(), "not compared".to_string()),
        };
        rows.push(format!(
            "| {} ({} runs) | {} | {theirs_cell} | {goal} | {met} |",
            names[k],
            ours.runs[k],
            cell(ours, k)
        ));
    }
    rows.insert(
        1,
        format!(
            "| … the server's floor: the 1,000 statements alone, each its own transaction, one \
             psql message ({ROUNDS} runs) | {} with asynchronous commits | {} with synchronous \
             commits | – | – |",
            show(floor_async),
            show(floor_sync)
        ),
    );
    rows.insert(
        3,
        format!(
            "| … initguard's own floor: the same skip with a set of one step (process start, one \
             store connection, one read; {} runs) | {} | – | – | – |",
            floors.skip.1,
            show(floors.skip.0)
        ),
    );
    let contest_met = ours.contest_goal_met();
    met_all &= contest_met;
    rows.push(format!(
        "| {APPLIERS} appliers at once, empty database ({ROUNDS} rounds) | {} | {} | 1 applies, 7 skip, 0 errors, 0 duplicated, all exit within 200 ms of the applier | {} |",
        ours.contest_cell(),
        theirs.map_or("not measured".to_string(), |t| t.contest_cell()),
        yes_no(contest_met)
    ));
    let notes: Vec<String> = figures
        .iter()
        .zip(&tools)
        .filter_map(|(f, tool)| {
            let failed: Vec<&Contest> = f.contests.iter().filter(|c| c.errors > 0).collect();
            let first = failed.iter().find_map(|c| c.error.clone())?;
            Some(format!(
                "- {}: {} of {} processes exited non-zero over {ROUNDS} rounds; the first error: `{}`",
                match tool {
                    Tool::Initguard => "initguard",
                    Tool::Sqlx => "sqlx-cli",
                },
                failed.iter().map(|c| c.errors).sum::<usize>(),
                APPLIERS * ROUNDS,
                first.replace('`', "'")
            ))
        })
        .collect();
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("\n\n{}", notes.join("\n"))
    };
    let versus = if theirs.is_some() {
        format!("beside {sqlx_version} in the same run")
    } else {
        "alone: sqlx-cli was not on PATH, so the goals against it are not compared".to_string()
    };
    let body = format!(
        "## Versioned steps (`cargo bench --bench steps`)\n\n\
         Measured {} on {} cores; whole-process times of the release binary {versus}, against one \
         local throwaway PostgreSQL {server} with fsync and full_page_writes on (so a commit waits \
         for the disk, as in production). {STEPS} migrations `CREATE TABLE t_NNNN (id int primary \
         key)`, one per file, each in its own transaction with its history row; each tool with its \
         own file names (`V0001__t_0001.sql`, `0001_t_0001.sql`) and its own fresh database for \
         every round, the tools and the floors interleaved, in the reverse order every other round (no database is dropped during the run: PostgreSQL's \
         `DROP DATABASE` forces a checkpoint, which would weigh on whichever tool ran next); medians over {ROUNDS} rounds (the no-op apply and \
         status {REPEAT} times a round), wall time with the process's CPU time (user + system, \
         getrusage) beside it. initguard's store is the \
         same database (so the no-op apply is its skip path: one store read, no connection to the \
         target). \"Applier\": the process named as holder in `initguard.steps_history`, or for \
         sqlx-cli the one that printed `Applied`. Load average (1 min) {load_before} before, \
         {load_after} after: the cores are shared, so both tools' times carry the same noise.\n\n\
         | | initguard | sqlx-cli | goal (issue 10, on wall time) | met |\n|---|---|---|---|---|\n{}{notes}\n\n\
         Every goal met: {}.",
        support::today(),
        support::cores(),
        rows.join("\n"),
        if theirs.is_none() {
            "not known (sqlx-cli not measured)"
        } else if met_all {
            "yes"
        } else {
            "no (see the rows marked **no**)"
        }
    );
    support::publish_section("steps", &body)?;
    Ok(())
}
