//! A throwaway PostgreSQL for tests: Debian's `initdb` + `pg_ctl` in a temp dir, listening on a
//! random loopback port, stopped (`-m immediate`) on drop. As root it runs the server as the
//! system user `initguard-test` (the server refuses to run as root). With no binaries installed
//! it returns None after a visible SKIP line, or panics under `CI=true`. Never touches any
//! server it did not start.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Unprivileged account that runs the server when the tests run as root.
const RUN_AS: &str = "initguard-test";
/// Superuser (created by initdb) and the role initguard connects as.
pub const ADMIN: &str = "postgres";
pub const ADMIN_PASSWORD: &str = "admin-pw-7f3a";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret-pw-91c2";
/// Databases created for the tests: the store's and a separate SQL target.
pub const APP_DB: &str = "app";
pub const TARGET_DB: &str = "target";

pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    run_as: Option<String>,
    running: bool,
    max_connections: u32,
    /// fsync and full_page_writes on (`restart_durable`), for timings of what a commit waits for.
    durable: bool,
}

fn find_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("pg_ctl").is_file())
        .collect();
    // Newest major version first (directory names are the major version).
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make sure RUN_AS exists before any server is started. Test threads of one binary go through
/// the OnceLock one at a time (the others block until the first is done); several test binaries
/// may also race here, and `useradd` fails for the loser either with "already exists" (exit 9)
/// or because the winner holds the lock on /etc/passwd (exit 10) while the account is not there
/// yet: initdb then fails with "could not look up effective user ID". So a failed `useradd` is
/// only accepted once `getent` shows the account, and is tried again until then.
fn ensure_run_as_user() {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if user_exists(RUN_AS) {
                return Ok(());
            }
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    RUN_AS,
                ])
                .output()
                .map_err(|e| format!("useradd: {e}"))?;
            if user_exists(RUN_AS) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "useradd {RUN_AS} failed ({}) and the account does not exist: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // Another process holds /etc/passwd's lock or is half way through adding it.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Pg {
    /// Start a fresh server with roles `postgres` (superuser) and `app`, and databases `app`
    /// (owned by app) and `target`. None (after a SKIP line) when PostgreSQL is not installed.
    pub fn start() -> Option<Pg> {
        let Some(bin) = find_bin() else {
            let msg = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin \
                       (apt-get install postgresql)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}; CI=true, so this is a failure");
            }
            eprintln!("SKIP: {msg}; skipping PostgreSQL tests");
            return None;
        };
        let run_as = is_root().then(|| {
            ensure_run_as_user();
            RUN_AS.to_string()
        });
        // As root, the server user must be able to reach the directory: /tmp is world-traversable
        // where a $TMPDIR under /root would not be.
        let parent = if run_as.is_some() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("initguard-pg-")
            .tempdir_in(parent)
            .expect("temp dir");
        let mut pg = Pg {
            dir,
            bin,
            port: 0,
            run_as,
            running: false,
            max_connections: 200,
            durable: false,
        };
        std::fs::write(pg.dir.path().join("pwfile"), format!("{ADMIN_PASSWORD}\n"))
            .expect("pwfile");
        if let Some(user) = &pg.run_as {
            check(
                Command::new("chown")
                    .args(["-R", &format!("{user}:"), &pg.path_str(pg.dir.path())])
                    .output()
                    .expect("chown"),
                "chown",
            );
        }
        let data = pg.data_dir();
        let pwfile = pg.dir.path().join("pwfile");
        check(
            pg.as_server_user(&pg.bin.join("initdb"))
                .args([
                    "-D",
                    &pg.path_str(&data),
                    "-U",
                    ADMIN,
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .arg("--auth=scram-sha-256")
                .arg(format!("--pwfile={}", pg.path_str(&pwfile)))
                .output()
                .expect("initdb"),
            "initdb",
        );
        // A port picked free may be taken by the time the server binds it: try a few.
        for attempt in 0..5 {
            pg.port = free_port();
            if pg.try_start() {
                break;
            }
            assert!(attempt < 4, "PostgreSQL did not start:\n{}", pg.log());
        }
        pg.admin(&format!(
            "CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"
        ));
        pg.admin(&format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"));
        pg.admin(&format!("CREATE DATABASE {TARGET_DB} OWNER {APP_USER}"));
        Some(pg)
    }

    fn path_str(&self, p: &Path) -> String {
        p.to_string_lossy().into_owned()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_server_user(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn try_start(&mut self) -> bool {
        let sync = if self.durable {
            "-c fsync=on -c full_page_writes=on"
        } else {
            "-c fsync=off -c full_page_writes=off"
        };
        let opts = format!(
            // fsync=off is safe for crash tests: a killed server's writes are in the page cache.
            // synchronous_commit stays on: a commit must survive `kill()` as it would in prod.
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={} {sync}",
            self.port,
            self.path_str(self.dir.path()),
            self.max_connections
        );
        let ok = self
            .as_server_user(&self.bin.join("pg_ctl"))
            .args(["-D", &self.path_str(&self.data_dir()), "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        self.running = ok;
        ok
    }

    /// Turn TLS on with a certificate for `localhost`/`127.0.0.1` signed by a fresh CA, and make
    /// the app role connect over TLS only. Returns the CA file, or None (after a SKIP line) when
    /// `openssl` is missing.
    pub fn enable_tls(&self) -> Option<PathBuf> {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).expect("tls dir");
        let found = Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let msg = "openssl not found: cannot make test certificates";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}; CI=true, so this is a failure");
            }
            eprintln!("SKIP: {msg}");
            return None;
        }
        let openssl = |args: &[&str]| {
            check(
                Command::new("openssl")
                    .current_dir(&dir)
                    .args(args)
                    .output()
                    .expect("openssl"),
                "openssl",
            )
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=initguard-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        let data = self.data_dir();
        std::fs::copy(dir.join("server.crt"), data.join("server.crt")).expect("copy cert");
        std::fs::copy(dir.join("server.key"), data.join("server.key")).expect("copy key");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod key");
        }
        if let Some(user) = &self.run_as {
            for f in ["server.crt", "server.key"] {
                check(
                    Command::new("chown")
                        .arg(format!("{user}:"))
                        .arg(data.join(f))
                        .output()
                        .expect("chown"),
                    "chown",
                );
            }
        }
        // First match wins: the app role over plain TCP is turned away.
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("hostnossl all {APP_USER} 0.0.0.0/0 reject\n{old}"),
        )
        .expect("pg_hba.conf");
        self.admin("ALTER SYSTEM SET ssl = on");
        self.admin("SELECT pg_reload_conf()");
        // The reload is asynchronous: wait until the server says TLS is on.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.admin("SHOW ssl") != "on" {
            assert!(
                Instant::now() < deadline,
                "TLS did not come on:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(dir.join("ca.crt"))
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Store URL for the app role, password included.
    pub fn url(&self) -> String {
        self.url_for(APP_DB)
    }

    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Store URL without a password (tests pass it through PGPASSWORD or a file).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{APP_USER}@127.0.0.1:{}/{APP_DB}", self.port)
    }

    pub fn admin_url(&self, db: &str) -> String {
        format!(
            "postgres://{ADMIN}:{ADMIN_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Run SQL as the superuser in `postgres`; returns psql's unaligned output.
    pub fn admin(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// Run SQL as the superuser in database `db`; panics on error.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        let out = self.try_sql_in(db, sql);
        match out {
            Ok(s) => s,
            Err(e) => panic!("psql failed on {sql:?}: {e}"),
        }
    }

    pub fn try_sql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .arg(self.admin_url(db))
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Run `sql` (one number per run) as the superuser every `every` in one psql session, for as
    /// long as `during` runs, and return the numbers read. One session for all the samples: a
    /// psql started per sample took up to half a second on a loaded machine, too few samples.
    pub fn sample<T>(
        &self,
        sql: &str,
        every: Duration,
        during: impl FnOnce() -> T,
    ) -> (T, Vec<usize>) {
        let mut psql = Command::new(self.bin.join("psql"))
            .arg(self.admin_url("postgres"))
            .args(["-X", "-q", "-A", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql");
        {
            use std::io::Write;
            let mut stdin = psql.stdin.take().expect("psql stdin");
            writeln!(stdin, "{sql}\n\\watch {}", every.as_secs_f64()).expect("to psql");
            // psql keeps watching until it is killed; its stdin may close.
        }
        let out = during();
        let _ = psql.kill();
        let printed = psql.wait_with_output().expect("psql output");
        let numbers = String::from_utf8_lossy(&printed.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        (out, numbers)
    }

    /// Stop the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&mut self) {
        if self.running {
            let _ = self
                .as_server_user(&self.bin.join("pg_ctl"))
                .args([
                    "-D",
                    &self.path_str(&self.data_dir()),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }

    /// Restart it allowing only `n` connections (superusers keep 3 of them).
    pub fn restart_with_max_connections(&mut self, n: u32) {
        self.max_connections = n;
        self.restart();
    }

    /// Restart it with fsync and full_page_writes on, as a production server runs: for timing
    /// harnesses that measure what commits wait for.
    pub fn restart_durable(&mut self) {
        self.durable = true;
        self.restart();
    }

    /// Start it again on the same port, after `kill`.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not restart:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The server's processes, stopped with SIGSTOP (`Pg::pause`): it accepts TCP connections (the
/// kernel completes the handshake) and answers nothing. SIGCONT on drop, panicking test or not,
/// so no stopped server is left behind.
pub struct Paused {
    pids: Vec<i32>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in self.pids.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGCONT,
            );
        }
    }
}

/// Direct children of `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name (which may hold spaces): state, ppid, …
                    let rest = stat
                        .rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .to_string();
                    rest.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

impl Pg {
    /// The postmaster's pid, from the first line of `postmaster.pid` in the data directory.
    pub fn postmaster_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .expect("postmaster.pid");
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("a pid on the first line of postmaster.pid")
    }

    /// SIGSTOP the postmaster, then every backend and helper it has forked (it can fork no more
    /// once stopped). Resumed when the returned guard drops.
    pub fn pause(&self) -> Paused {
        let postmaster = self.postmaster_pid();
        let stop = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGSTOP,
            );
        };
        stop(postmaster);
        let mut pids = vec![postmaster];
        for child in children_of(postmaster) {
            stop(child);
            pids.push(child);
        }
        Paused { pids }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.kill();
    }
}
