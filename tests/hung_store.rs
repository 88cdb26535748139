//! initguard never hangs on a store that does not answer, and always honours SIGTERM: a
//! PostgreSQL whose processes are SIGSTOPped, a PostgreSQL behind a black-holed TCP proxy, and a
//! Kubernetes API double that accepts requests and never answers. Real binary, real servers
//! (one per test, so a stopped server never stalls another test). Bounds are asserted loosely
//! (README's bound + 5 s, or 3 s for a signal); the figures measured are printed.

#[macro_use]
mod support;
#[cfg(feature = "kubernetes")]
#[path = "support/kube_api.rs"]
mod kube_api;

use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::pg::Pg;
use support::proxy::Proxy;
use support::{code, exit_within, stderr, wait_for};

/// README: a store that does not answer is reported (exit 69) 10 s after it went silent.
const BOUND: Duration = Duration::from_secs(10);
/// What the tests allow on top of a bound, for a loaded machine.
const SLACK: Duration = Duration::from_secs(5);
/// README: a signal outside the command's run ends initguard at once; asserted loosely.
const SIGNAL_BOUND: Duration = Duration::from_secs(3);

/// Where the binary finds its store: the URL and any environment it needs.
struct Target {
    url: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn pg(pg: &Pg) -> Target {
        Target {
            url: pg.url(),
            env: Vec::new(),
        }
    }

    /// PostgreSQL behind `proxy`.
    fn via(proxy: &Proxy) -> Target {
        Target {
            url: pg_url_at(proxy.port),
            env: Vec::new(),
        }
    }

    fn ig(&self, work: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(support::bin());
        c.current_dir(work)
            .env("INITGUARD_STORE", &self.url)
            .env("INITGUARD_LOG", "info")
            .env_remove("PGPASSWORD")
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .env_remove("INITGUARD_KEY")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn spawn(&self, work: &Path, args: &[&str]) -> Child {
        self.ig(work, args).spawn().expect("spawn initguard")
    }
}

/// The app's PostgreSQL URL on loopback port `port` (a proxy's).
fn pg_url_at(port: u16) -> String {
    format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        support::pg::APP_USER,
        support::pg::APP_PASSWORD,
        support::pg::APP_DB
    )
}

fn pg_addr(pg: &Pg) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg.port))
}

/// The commands that talk to the store, on `key`; `run` would touch `marker`.
fn four(key: &str, marker: &Path) -> Vec<(&'static str, Vec<String>)> {
    let touch = format!("touch {}", marker.display());
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    vec![
        ("run", s(&["run", "--key", key, "--", "sh", "-c", &touch])),
        ("status", s(&["status", key])),
        ("history", s(&["history", key])),
        ("reset", s(&["reset", key, "--wait-timeout", "5s"])),
        ("release", s(&["release", key])),
    ]
}

fn spawn_four(t: &Target, work: &Path, key: &str, marker: &Path) -> Vec<(&'static str, Child)> {
    four(key, marker)
        .into_iter()
        .map(|(name, args)| {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (name, t.spawn(work, &refs))
        })
        .collect()
}

fn last_line(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or("").to_string()
}

/// Every one of the commands exits 69 within the bound, with a line that says the store
/// did not answer; nothing ran.
fn four_exit_69(label: &str, t: &Target, key: &str) {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let started = Instant::now();
    let children = spawn_four(t, work.path(), key, &marker);
    for (name, child) in children {
        let (out, took) = exit_within(name, child, started, BOUND + SLACK);
        let line = last_line(&out);
        eprintln!(
            "{label}: {name} exited {} after {} ms: {line}",
            code(&out),
            took.as_millis()
        );
        assert_eq!(code(&out), 69, "{label} {name}: {}", stderr(&out));
        assert!(
            line.starts_with("initguard: ") && line.contains("unreachable"),
            "{label} {name}: {line}"
        );
        assert!(
            line.contains("did not answer within"),
            "{label} {name}: {line}"
        );
    }
    assert!(!marker.exists(), "{label}: the command ran");
}

/// Every one of the commands, spawned against a store that does not answer, exits 143 soon
/// after a SIGTERM sent while it connects (or reads), with one line saying so; nothing ran.
fn four_exit_143_while_connecting(label: &str, t: &Target, key: &str) {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let children = spawn_four(t, work.path(), key, &marker);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    for (_, child) in &children {
        support::signal(child, Signal::SIGTERM);
    }
    for (name, child) in children {
        let (out, took) = exit_within(name, child, sent, SIGNAL_BOUND);
        let line = last_line(&out);
        eprintln!(
            "{label}: {name} exited {} {} ms after SIGTERM: {line}",
            code(&out),
            took.as_millis()
        );
        assert_eq!(code(&out), 143, "{label} {name}: {}", stderr(&out));
        assert!(
            line.contains("stopped by signal 15"),
            "{label} {name}: {line}"
        );
    }
    assert!(!marker.exists(), "{label}: the command ran");
}

/// SIGINT, SIGHUP and SIGQUIT are honoured like SIGTERM while the store does not answer: exit
/// 128+N at once.
fn other_signals_exit_128_plus_n(label: &str, t: &Target) {
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let children: Vec<_> = [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT]
        .into_iter()
        .map(|sig| {
            let touch = format!("touch {}", marker.display());
            (
                sig,
                t.spawn(
                    work.path(),
                    &["run", "--key", "hang/sig", "--", "sh", "-c", &touch],
                ),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    for (sig, child) in &children {
        support::signal(child, *sig);
    }
    for (sig, child) in children {
        let (out, took) = exit_within(sig.as_str(), child, sent, SIGNAL_BOUND);
        eprintln!(
            "{label}: run exited {} {} ms after {sig}",
            code(&out),
            took.as_millis()
        );
        assert_eq!(
            code(&out),
            128 + sig as i32,
            "{label} {sig}: {}",
            stderr(&out)
        );
        assert!(
            last_line(&out).contains(&format!("stopped by signal {}", sig as i32)),
            "{label} {sig}: {}",
            stderr(&out)
        );
    }
    assert!(!marker.exists(), "{label}: the command ran");
}

/// A `run` waiting for a lease whose store then goes silent (`silence`) exits 69 within the
/// bound counted from the end of its current wait slice (at most 5 s), never waits on. `holder`
/// is where the holder finds the store.
fn waiter_exits_69_when_the_store_goes_silent<G>(
    label: &str,
    holder: &Target,
    t: &Target,
    key: &str,
    silence: impl FnOnce() -> G,
) {
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let script = format!("touch {}; sleep 60", started.display());
    let mut holder = holder.spawn(
        work.path(),
        &["run", "--key", key, "--", "sh", "-c", &script],
    );
    wait_for("the holder to run", Duration::from_secs(30), || {
        started.exists()
    });
    let waiter = t.spawn(work.path(), &["run", "--key", key, "--", "true"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _guard = silence();
    let silent = Instant::now();
    let (out, took) = exit_within(
        "waiter",
        waiter,
        silent,
        Duration::from_secs(5) + BOUND + SLACK,
    );
    eprintln!(
        "{label}: waiter exited {} {} ms after its store went silent: {}",
        code(&out),
        took.as_millis(),
        last_line(&out)
    );
    assert_eq!(code(&out), 69, "{label}: {}", stderr(&out));
    assert!(
        last_line(&out).contains("did not answer within"),
        "{label}: {}",
        stderr(&out)
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A holder runs the task; a `run` and a `reset` wait for its lease (after their first read);
/// then the store stops answering (`silence`) and SIGTERM comes: both exit 143 at once.
fn waiters_exit_143_when_the_store_goes_silent<G>(
    label: &str,
    t: &Target,
    key: &str,
    silence: impl FnOnce() -> G,
) {
    let work = tempfile::tempdir().unwrap();
    let started = work.path().join("started");
    let script = format!("touch {}; sleep 60", started.display());
    let mut holder = t.spawn(
        work.path(),
        &["run", "--key", key, "--", "sh", "-c", &script],
    );
    wait_for("the holder to run", Duration::from_secs(30), || {
        started.exists()
    });
    let waiters = vec![
        (
            "run",
            t.spawn(work.path(), &["run", "--key", key, "--", "true"]),
        ),
        (
            "reset",
            t.spawn(work.path(), &["reset", key, "--wait-timeout", "1m"]),
        ),
    ];
    // Long enough for both to have read the record and be waiting for the lease.
    std::thread::sleep(Duration::from_millis(1500));
    let guard = silence();
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    for (_, child) in &waiters {
        support::signal(child, Signal::SIGTERM);
    }
    for (name, child) in waiters {
        let (out, took) = exit_within(name, child, sent, SIGNAL_BOUND);
        eprintln!(
            "{label}: waiting {name} exited {} {} ms after SIGTERM",
            code(&out),
            took.as_millis()
        );
        assert_eq!(code(&out), 143, "{label} {name}: {}", stderr(&out));
        assert!(
            last_line(&out).contains("stopped by signal 15"),
            "{label} {name}: {}",
            stderr(&out)
        );
    }
    drop(guard);
    let _ = holder.kill();
    let _ = holder.wait();
}

// ---- PostgreSQL, SIGSTOPped ------------------------------------------------------------------

#[test]
fn stopped_postgres_run_status_reset_release_exit_69_within_the_bound() {
    let Some(pg) = Pg::start() else { return };
    let t = Target::pg(&pg);
    let _paused = pg.pause();
    four_exit_69("stopped postgres", &t, "hang/stopped");
}

#[test]
fn stopped_postgres_commands_exit_143_soon_after_sigterm() {
    let Some(pg) = Pg::start() else { return };
    let t = Target::pg(&pg);
    {
        let _paused = pg.pause();
        four_exit_143_while_connecting("stopped postgres", &t, "hang/stopped-term");
    }
    waiters_exit_143_when_the_store_goes_silent(
        "stopped postgres",
        &t,
        "hang/stopped-wait",
        || pg.pause(),
    );
    let _paused = pg.pause();
    other_signals_exit_128_plus_n("stopped postgres", &t);
}

// ---- Behind a black-holed proxy: PostgreSQL, etcd, ZooKeeper ----------------------------------

/// A store's server, reached directly and through a proxy that can stop forwarding.
struct Proxied {
    label: &'static str,
    direct: Target,
    via: Target,
    proxy: Proxy,
    /// The server, kept alive for the test.
    _server: Box<dyn std::any::Any>,
}

impl Proxied {
    fn new(
        label: &'static str,
        server: impl std::any::Any,
        addr: SocketAddr,
        direct: String,
        url: impl Fn(u16) -> String,
    ) -> Proxied {
        let proxy = Proxy::start(addr);
        Proxied {
            label,
            direct: Target {
                url: direct,
                env: Vec::new(),
            },
            via: Target {
                url: url(proxy.port),
                env: Vec::new(),
            },
            proxy,
            _server: Box::new(server),
        }
    }

    /// `run`, `status`, `history`, `reset` and `release` with the proxy black-holed: exit 69.
    fn four_exit_69(&self) {
        let _hole = self.proxy.blackholed();
        four_exit_69(self.label, &self.via, "hang/hole");
    }

    /// The same, and waiters whose store goes silent, stopped by SIGTERM: exit 143.
    fn commands_exit_143_soon_after_sigterm(&self) {
        {
            let _hole = self.proxy.blackholed();
            four_exit_143_while_connecting(self.label, &self.via, "hang/hole-term");
        }
        waiters_exit_143_when_the_store_goes_silent(
            self.label,
            &self.via,
            "hang/hole-wait",
            || self.proxy.blackholed(),
        );
    }

    /// A waiter whose store goes silent exits 69 (the holder talks to the server directly).
    fn waiter_exits_69(&self) {
        waiter_exits_69_when_the_store_goes_silent(
            self.label,
            &self.direct,
            &self.via,
            "hang/w",
            || self.proxy.blackholed(),
        );
    }
}

fn proxied_pg() -> Option<Proxied> {
    let pg = Pg::start()?;
    let (addr, direct) = (pg_addr(&pg), pg.url());
    Some(Proxied::new(
        "black-holed postgres",
        pg,
        addr,
        direct,
        pg_url_at,
    ))
}

#[test]
fn blackholed_postgres_run_status_reset_release_exit_69_within_the_bound() {
    if let Some(p) = proxied_pg() {
        p.four_exit_69();
    }
}

#[test]
fn blackholed_postgres_commands_exit_143_soon_after_sigterm() {
    if let Some(p) = proxied_pg() {
        p.commands_exit_143_soon_after_sigterm();
    }
}

#[test]
fn waiter_whose_postgres_goes_silent_exits_69_within_the_bound() {
    if let Some(p) = proxied_pg() {
        p.waiter_exits_69();
    }
}

#[cfg(feature = "etcd")]
fn proxied_etcd() -> Option<Proxied> {
    let etcd = support::etcd::Etcd::start()?;
    let addr: SocketAddr = etcd.endpoint().parse().expect("etcd endpoint");
    let direct = etcd.url();
    Some(Proxied::new(
        "black-holed etcd",
        etcd,
        addr,
        direct,
        |port| format!("etcd://127.0.0.1:{port}"),
    ))
}

#[cfg(feature = "etcd")]
#[test]
fn blackholed_etcd_run_status_reset_release_exit_69_within_the_bound() {
    if let Some(p) = proxied_etcd() {
        p.four_exit_69();
    }
}

#[cfg(feature = "etcd")]
#[test]
fn blackholed_etcd_commands_exit_143_soon_after_sigterm() {
    if let Some(p) = proxied_etcd() {
        p.commands_exit_143_soon_after_sigterm();
    }
}

#[cfg(feature = "etcd")]
#[test]
fn waiter_whose_etcd_goes_silent_exits_69_within_the_bound() {
    if let Some(p) = proxied_etcd() {
        p.waiter_exits_69();
    }
}

#[cfg(feature = "zookeeper")]
fn proxied_zk() -> Option<Proxied> {
    let zk = support::zk::Zk::start()?;
    let (addr, direct) = (zk.addr(), zk.url(""));
    Some(Proxied::new(
        "black-holed ZooKeeper",
        zk,
        addr,
        direct,
        |port| format!("zookeeper://127.0.0.1:{port}"),
    ))
}

#[cfg(feature = "zookeeper")]
#[test]
fn blackholed_zookeeper_run_status_reset_release_exit_69_within_the_bound() {
    if let Some(p) = proxied_zk() {
        p.four_exit_69();
    }
}

#[cfg(feature = "zookeeper")]
#[test]
fn blackholed_zookeeper_commands_exit_143_soon_after_sigterm() {
    if let Some(p) = proxied_zk() {
        p.commands_exit_143_soon_after_sigterm();
    }
}

#[cfg(feature = "zookeeper")]
#[test]
fn waiter_whose_zookeeper_goes_silent_exits_69_within_the_bound() {
    if let Some(p) = proxied_zk() {
        p.waiter_exits_69();
    }
}

/// The store goes black-hole while the command runs: the heartbeat cannot renew, the command is
/// killed before the lease can lapse (lease lost), and initguard exits 75 promptly instead of
/// waiting on a release it already knows is pointless.
#[test]
fn blackholed_store_mid_run_kills_the_command_and_exits_75_promptly() {
    let Some(pg) = Pg::start() else { return };
    let proxy = Proxy::start(pg_addr(&pg));
    let t = Target::via(&proxy);
    let work = tempfile::tempdir().unwrap();
    let beats = work.path().join("beats");
    let script = format!(
        "while true; do echo b >> {}; sleep 0.05; done",
        beats.display()
    );
    let child = t.spawn(
        work.path(),
        &[
            "run",
            "--key",
            "hang/mid",
            "--lock-ttl",
            "3s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_for("the command to run", Duration::from_secs(30), || {
        support::lines(&beats).len() > 2
    });
    let _hole = proxy.blackholed();
    let silent = Instant::now();
    // Documented bound (README): `run` against a store that went silent exits within 10 s. The
    // command is killed 3/4 of the lease after the last renewal, usually far sooner; that figure
    // is printed, not asserted (it used to be asserted under 5 s on a 2-core machine).
    let (out, took) = exit_within("holder", child, silent, BOUND + SLACK);
    eprintln!(
        "holder exited {} {} ms after its store went silent",
        code(&out),
        took.as_millis()
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(last_line(&out).contains("lost"), "{}", stderr(&out));
    let n = support::lines(&beats).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(support::lines(&beats).len(), n, "the command is dead");
}

/// A lease row that stays locked (here by an open transaction holding it FOR UPDATE, as a
/// holder paused inside its SQL task's commit would) never keeps a waiter past --wait-timeout.
#[test]
fn postgres_waiter_gives_up_at_wait_timeout_while_the_lease_row_stays_locked() {
    let Some(pg) = Pg::start() else { return };
    let t = Target::pg(&pg);
    let work = tempfile::tempdir().unwrap();
    let out = t
        .ig(work.path(), &["run", "--key", "hang/locked", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Forget the success so that the next run must take the lease.
    let out = t
        .ig(work.path(), &["reset", "hang/locked"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut locker = Command::new("psql")
        .arg(pg.admin_url(support::pg::APP_DB))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .or_else(|_| {
            // psql is not always on PATH: Debian keeps it beside the server binaries.
            let psql = std::fs::read_dir("/usr/lib/postgresql")
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.path().join("bin/psql"))
                .expect("psql");
            Command::new(psql)
                .arg(pg.admin_url(support::pg::APP_DB))
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        })
        .expect("psql");
    {
        use std::io::{BufRead, Write};
        let stdin = locker.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; SELECT task FROM initguard.tasks WHERE task LIKE 'hang/locked%' FOR UPDATE;"
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(locker.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("hang/locked"), "row locked: {line}");
    }
    let begun = Instant::now();
    let waiter = t.spawn(
        work.path(),
        &[
            "run",
            "--key",
            "hang/locked",
            "--wait-timeout",
            "2s",
            "--",
            "true",
        ],
    );
    let (out, took) = exit_within("waiter", waiter, begun, Duration::from_secs(2) + SLACK);
    eprintln!(
        "waiter on a locked row exited {} after {} ms (--wait-timeout 2s)",
        code(&out),
        took.as_millis()
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        last_line(&out).contains("gave up waiting"),
        "{}",
        stderr(&out)
    );
    let _ = locker.kill();
    let _ = locker.wait();
}

// ---- Kubernetes API double that never answers -------------------------------------------------

#[cfg(feature = "kubernetes")]
mod kube {
    use super::*;
    use kube_api::{KubeApi, Mode};

    const NS: &str = "initguard-test";

    fn target(api: &KubeApi, dir: &Path) -> Target {
        Target {
            url: format!("kubernetes:{NS}"),
            env: vec![(
                "KUBECONFIG".into(),
                api.kubeconfig(dir, NS).to_string_lossy().into_owned(),
            )],
        }
    }

    /// Stalled until dropped.
    struct Stalled<'a>(&'a KubeApi);

    impl Drop for Stalled<'_> {
        fn drop(&mut self) {
            self.0.set_mode(Mode::Normal);
        }
    }

    fn stall(api: &KubeApi) -> Stalled<'_> {
        api.set_mode(Mode::Stall);
        Stalled(api)
    }

    #[test]
    fn hung_kube_api_run_status_reset_release_exit_69_within_the_bound() {
        let api = KubeApi::start();
        let dir = tempfile::tempdir().unwrap();
        let t = target(&api, dir.path());
        let _stalled = stall(&api);
        four_exit_69("hung kube API", &t, "hang/kube");
    }

    #[test]
    fn hung_kube_api_commands_exit_143_soon_after_sigterm() {
        let api = KubeApi::start();
        let dir = tempfile::tempdir().unwrap();
        let t = target(&api, dir.path());
        {
            let _stalled = stall(&api);
            four_exit_143_while_connecting("hung kube API", &t, "hang/kube-term");
        }
        let a = &api;
        waiters_exit_143_when_the_store_goes_silent("hung kube API", &t, "hang/kube-wait", || {
            stall(a)
        });
    }

    #[test]
    fn waiter_whose_kube_api_goes_silent_exits_69_within_the_bound() {
        let api = KubeApi::start();
        let dir = tempfile::tempdir().unwrap();
        let t = target(&api, dir.path());
        waiter_exits_69_when_the_store_goes_silent("hung kube API", &t, &t, "hang/kube-w", || {
            stall(&api)
        });
    }
}
