//! Contract scenarios for the supervisor: no process of a run outlives its lease. Every scenario
//! counts side effects with timestamps (`date +%s%N`, one clock for every process here) and
//! asserts that nothing of the old run happened after the next holder's command started.

use super::*;
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// How the old run's processes are started, each looping `old <ns>` lines into the log.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `sh -c 'loop; true'`: the loop is a grandchild of the supervisor.
    Grandchild,
    /// A `setsid` child: in a session and process group of its own.
    Setsid,
    /// Under another user (`setpriv --reuid 65534`), which clears the parent-death signal.
    OtherUser,
}

/// A scratch directory any user may write in (the other-user shape writes there too).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The loop an old process runs: its pid into `pids`, then a timestamped line every 20 ms.
fn looper(log: &Path, pids: &Path) -> String {
    format!(
        "echo $$ >> {pids}; while :; do echo \"old $(date +%s%N)\" >> {log}; sleep 0.02; done",
        pids = pids.display(),
        log = log.display()
    )
}

fn holder_script(shape: Shape, log: &Path, pids: &Path, started: &Path) -> String {
    let inner = looper(log, pids);
    let start = match shape {
        Shape::Grandchild => format!("sh -c '{inner}; true' &"),
        Shape::Setsid => format!("setsid sh -c '{inner}' &"),
        Shape::OtherUser => {
            format!("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{inner}; true' &")
        }
    };
    format!(
        "{start} while [ ! -s {log} ]; do sleep 0.01; done; touch {started}; wait; true",
        log = log.display(),
        started = started.display()
    )
}

/// The next holder's command: its start and end, timestamped.
fn next_script(log: &Path) -> String {
    format!(
        "echo \"new-start $(date +%s%N)\" >> {log}; sleep 0.3; echo \"new-end $(date +%s%N)\" >> {log}",
        log = log.display()
    )
}

fn stamp(line: &str, label: &str) -> Option<u128> {
    line.strip_prefix(label)?.trim().parse().ok()
}

/// No `old` line after the first `new-start`, and exactly one new run.
fn assert_no_overlap(log: &Path) {
    let all = lines(log);
    let starts: Vec<u128> = all.iter().filter_map(|l| stamp(l, "new-start ")).collect();
    assert_eq!(starts.len(), 1, "exactly one new run: {all:?}");
    let late: Vec<&String> = all
        .iter()
        .filter(|l| stamp(l, "old ").is_some_and(|t| t >= starts[0]))
        .collect();
    assert!(
        late.is_empty(),
        "the old run wrote after the next holder started ({} lines, first {:?})",
        late.len(),
        late.first()
    );
    assert!(
        all.iter().any(|l| stamp(l, "old ").is_some()),
        "the old run did run: {all:?}"
    );
}

fn pids_in(path: &Path) -> Vec<i32> {
    lines(path)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `kill -9` of initguard while its command's processes have the given shape: every one of them
/// is dead before the next holder's command starts, and that command runs exactly once.
pub fn killed_holder_leaves_no_process_behind(fx: &dyn StoreFixture, shape: Shape) {
    if matches!(shape, Shape::OtherUser) && !require("root (to change credentials)", is_root()) {
        return;
    }
    let work = open_dir();
    let key = unique_key("supervise/kill9");
    let log = work.path().join("log");
    let pids = work.path().join("pids");
    let started = work.path().join("started");
    let ttl = ["--lock-ttl", "2s"];
    let script = holder_script(shape, &log, &pids, &started);
    let mut holder = spawn_task(fx, work.path(), &key, &ttl, &script);
    wait_for("the old run to start", Duration::from_secs(20), || {
        started.exists()
    });
    signal(&holder, Signal::SIGKILL);
    let _ = holder.wait();
    let out = run_task(fx, work.path(), &key, &ttl, &next_script(&log));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Anything still alive would keep writing: give it the time to.
    std::thread::sleep(Duration::from_millis(300));
    assert_no_overlap(&log);
    for pid in pids_in(&pids) {
        assert!(!pid_alive(pid), "process {pid} of the old run is alive");
    }
}

/// A run that succeeds leaves nothing behind: a daemon (double fork + setsid) and a background
/// job are dead when initguard exits.
pub fn successful_run_leaves_no_process_behind(fx: &dyn StoreFixture) {
    let work = open_dir();
    let key = unique_key("supervise/daemon");
    let pids = work.path().join("pids");
    let script = format!(
        "(setsid sh -c 'echo $$ >> {p}; exec sleep 300' &) ; sh -c 'echo $$ >> {p}; exec sleep 300' & \
         while [ $(wc -l < {p} 2>/dev/null || echo 0) -lt 2 ]; do sleep 0.01; done; exit 0",
        p = pids.display()
    );
    let out = run_task(fx, work.path(), &key, &[], &script);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let left = pids_in(&pids);
    assert_eq!(left.len(), 2, "both started: {left:?}");
    for pid in left {
        assert!(!pid_alive(pid), "process {pid} outlived the run");
    }
    assert_eq!(record(fx, work.path(), &key)["state"], "succeeded");
}

/// SIGSTOP of initguard alone (not its command) past the lease: the supervisor kills the
/// command before the lease can lapse, so the next holder's command starts after the stale one
/// is dead; the stale initguard, resumed, is fenced (75) and records nothing.
pub fn paused_holders_command_is_dead_before_the_next_starts(fx: &dyn StoreFixture) {
    let work = open_dir();
    let key = unique_key("supervise/sigstop");
    let log = work.path().join("log");
    let pids = work.path().join("pids");
    let started = work.path().join("started");
    let ttl = ["--lock-ttl", "2s", "--wait-timeout", "60s"];
    let script = holder_script(Shape::Grandchild, &log, &pids, &started);
    let stale = spawn_task(fx, work.path(), &key, &ttl, &script);
    wait_for("the old run to start", Duration::from_secs(20), || {
        started.exists()
    });
    signal(&stale, Signal::SIGSTOP);
    let out = run_task(fx, work.path(), &key, &ttl, &next_script(&log));
    assert_eq!(
        code(&out),
        0,
        "the next holder takes over: {}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_no_overlap(&log);
    signal(&stale, Signal::SIGCONT);
    let out = stale.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        75,
        "the stale holder is fenced: {}",
        stderr(&out)
    );
    assert_eq!(record(fx, work.path(), &key)["state"], "succeeded");
}

/// `initguard release` from the Pod of a paused holder frees its lease only when the holder's
/// supervisor has killed its command: the next holder's command never overlaps it.
pub fn release_of_a_paused_holder_never_overlaps(fx: &dyn StoreFixture) {
    let work = open_dir();
    let key = unique_key("supervise/release-paused");
    let log = work.path().join("log");
    let pids = work.path().join("pids");
    let started = work.path().join("started");
    let ttl = ["--lock-ttl", "6s"];
    let script = holder_script(Shape::Grandchild, &log, &pids, &started);
    let mut holder = task_cmd(fx, work.path(), &key, &ttl, &script);
    holder
        .env("POD_NAME", "paused")
        .env("POD_UID", "uid-paused")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    wait_for("the old run to start", Duration::from_secs(20), || {
        started.exists()
    });
    signal(&holder, Signal::SIGSTOP);
    let waiter = task_cmd(
        fx,
        work.path(),
        &key,
        &["--lock-ttl", "6s", "--wait-timeout", "60s"],
        &next_script(&log),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let rel = cmd(fx, work.path())
        .args(["release", &key])
        .env("POD_NAME", "paused")
        .env("POD_UID", "uid-paused")
        .output()
        .unwrap();
    assert_eq!(code(&rel), 0, "{}", stderr(&rel));
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(300));
    assert_no_overlap(&log);
    signal(&holder, Signal::SIGCONT);
    let _ = holder.kill();
    let _ = holder.wait();
}

/// SIGHUP, SIGQUIT and SIGINT stop a run as SIGTERM does: forwarded to the command's process
/// group (a grandchild in it runs its trap too), the record says `interrupted` (not `running`),
/// and the exit code is 128+N.
pub fn hangup_and_quit_end_a_run_as_interrupted(fx: &dyn StoreFixture) {
    for sig in [Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGINT] {
        let work = tempfile::tempdir().unwrap();
        let key = unique_key("supervise/hupquit");
        let started = work.path().join("started");
        let log = work.path().join("log");
        let name = &sig.as_str()[3..];
        // The grandchild runs in the foreground: a shell's background jobs ignore SIGINT and
        // SIGQUIT, and a signal ignored on entry cannot be trapped.
        let script = format!(
            "trap 'echo command >> {log}; exit {code}' {name}\n\
             touch {started}\n\
             sh -c \"trap 'echo grandchild >> {log}; exit 7' {name}; while true; do sleep 0.05; done\"\n",
            log = log.display(),
            started = started.display(),
            code = 128 + sig as i32,
        );
        let child = spawn_task(fx, work.path(), &key, &["--grace", "5s"], &script);
        wait_for("the command to start", Duration::from_secs(20), || {
            started.exists()
        });
        // The grandchild is up once the command has a child of its own.
        std::thread::sleep(Duration::from_millis(300));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 128 + sig as i32, "{sig}: {}", stderr(&out));
        assert_eq!(
            record(fx, work.path(), &key)["state"],
            "interrupted",
            "{sig}"
        );
        assert_eq!(
            lines(&log),
            ["grandchild", "command"],
            "{sig} reached the command's process group"
        );
    }
}

/// How many times process `pid`'s threads have been switched to so far (voluntary and not).
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Every waiter sleeps while the holder works (no polling: at most 8 wakeups in 2 s, a store's
/// keepalive) and wakes when the holder finishes (watch, notification, freed flock), not at its
/// next periodic look (every 5 s) nor at the lease's lapse (60 s here): all 10 exit 0 within
/// 4 s of the holder's end, having skipped.
pub fn every_waiter_wakes_promptly(fx: &dyn StoreFixture) {
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("contract/wake");
    let marker = work.path().join("ran");
    let go = work.path().join("go");
    let script = format!(
        "echo run >> {}; while [ ! -e {} ]; do sleep 0.05; done",
        marker.display(),
        go.display()
    );
    let args = ["--lock-ttl", "60s", "--wait-timeout", "120s"];
    let children: Vec<_> = (0..10)
        .map(|_| spawn_task(fx, work.path(), &key, &args, &script))
        .collect();
    wait_for("the holder to start", Duration::from_secs(30), || {
        !lines(&marker).is_empty()
    });
    // Let every waiter get past its first look and into its wait; then, for 2 s, count how often
    // each initguard process (all its threads, not the holder's command) is woken.
    std::thread::sleep(Duration::from_millis(1500));
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let before: Vec<u64> = pids.iter().map(|&p| wakeups(p)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let woken: Vec<u64> = pids
        .iter()
        .zip(&before)
        .map(|(&p, b)| wakeups(p).saturating_sub(*b))
        .collect();
    eprintln!("wakeups in 2 s of waiting, per process: {woken:?}");
    // Waiting is sleeping: a waiter is woken only by its store's keepalive (ZooKeeper's session
    // pings, about 2 a second; none elsewhere). A poll every 100 ms would be 20 wakeups. The
    // holder (the record names its pid) supervises its command and is not judged.
    let holder = record(fx, work.path(), &key)["holder"]["pid"].as_u64();
    let waiters: Vec<(u32, u64)> = pids
        .iter()
        .zip(&woken)
        .filter(|(p, _)| Some(u64::from(**p)) != holder)
        .map(|(p, w)| (*p, *w))
        .collect();
    assert_eq!(
        waiters.len(),
        pids.len() - 1,
        "the holder is one of them: {holder:?}"
    );
    assert!(
        waiters.iter().all(|(_, w)| *w <= 8),
        "waiters were woken while nothing changed (pid, wakeups in 2 s): {waiters:?}"
    );
    fs::write(&go, "").unwrap();
    let released = Instant::now();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let took = released.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "the last waiter exited {took:?} after the holder finished: it was not woken"
    );
    assert_eq!(lines(&marker).len(), 1);
}
