//! A throwaway ZooKeeper for tests: Debian's `zookeeper` package run directly with java
//! (`ZooKeeperServerMain` over a config in a temp dir: a random loopback client port, a short
//! tickTime so that sessions of 1-4 s are allowed, no admin server), killed on drop. With no
//! server installed it returns None after a visible SKIP line, or panics under `CI=true`. Never
//! touches any server it did not start, and leaves none behind (see `watch_over`). Also a small client (`Admin`) to look at and tamper with
//! what the store keeps.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// The server jar of Debian's package; its manifest's Class-Path names every dependency.
const JAR: &str = "/usr/share/java/zookeeper.jar";
const JAVA: &str = "/usr/bin/java";
/// Every test process connects from 127.0.0.1: no per-address connection limit
/// (`maxClientCnxns=0`; the default 60 refuses the 31st contender's second session).
/// Sessions from 2 ticks (0.5 s) to 60 s: the contract suite asks for 2 s to 30 s.
const TICK_MS: u64 = 250;
const MAX_SESSION_MS: u64 = 60_000;

pub struct Zk {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Zk {
    /// A fresh server, or None (after a SKIP line) when ZooKeeper or java is not installed.
    pub fn start() -> Option<Zk> {
        let found = Path::new(JAR).is_file() && Path::new(JAVA).is_file();
        if !super::require(
            "ZooKeeper (Debian zookeeper: /usr/share/java/zookeeper.jar, java)",
            found,
        ) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("initguard-zk-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let mut z = Zk {
            dir,
            port: 0,
            child: None,
        };
        // A port picked free may be taken by the time the server binds it: try a few.
        for attempt in 0..5 {
            z.port = free_port();
            if z.spawn() {
                return Some(z);
            }
            assert!(attempt < 4, "ZooKeeper did not start:\n{}", z.log());
        }
        None
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Start the server on `self.port` over the same data directory; true once it answers.
    fn spawn(&mut self) -> bool {
        let cfg = format!(
            "tickTime={TICK_MS}\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             minSessionTimeout={}\nmaxSessionTimeout={MAX_SESSION_MS}\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok\nforceSync=no\n\
             maxClientCnxns=0\n",
            self.dir.path().join("data").display(),
            self.port,
            2 * TICK_MS,
        );
        std::fs::write(self.config(), cfg).expect("zoo.cfg");
        let log = std::fs::File::create(self.dir.path().join("log")).expect("log");
        let child = Command::new(JAVA)
            .args([
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                JAR,
            ])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn java");
        self.watch_over(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ruok() {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && c.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A server in a `static` is never dropped: a watchdog kills it (and removes its directory)
    /// once this test process is gone. It checks that the pid is still this server (its command
    /// line names this directory) before it kills, so a reused pid is never hit.
    fn watch_over(&self, java: u32) {
        let dir = self.dir.path().display().to_string();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; \
             grep -qF '{dir}' /proc/{java}/cmdline 2>/dev/null && kill -9 {java}; \
             sleep 1; rm -rf '{dir}'",
            me = std::process::id()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    fn ruok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"ruok").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer == "imok"
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `zookeeper://127.0.0.1:PORT` with `rest` (a chroot, `?prefix=…`) appended.
    pub fn url(&self, rest: &str) -> String {
        format!("zookeeper://127.0.0.1:{}{rest}", self.port)
    }

    /// Kill the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "ZooKeeper did not restart:\n{}", self.log());
    }

    /// A client of this server (optionally with digest credentials).
    pub fn admin(&self, auth: Option<&str>) -> Admin {
        Admin::connect(&format!("127.0.0.1:{}", self.port), auth)
    }
}

impl Drop for Zk {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking client for tests: looks at and changes nodes as an operator with zkCli.sh would.
pub struct Admin {
    rt: tokio::runtime::Runtime,
    client: zk::Client,
}

impl Admin {
    pub fn connect(hosts: &str, auth: Option<&str>) -> Admin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(async {
            let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
            if let Some(a) = auth {
                c = c.with_auth("digest", a.as_bytes());
            }
            c.connect(hosts).await.expect("admin connects to ZooKeeper")
        });
        Admin { rt, client }
    }

    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        match self.rt.block_on(self.client.get_data(path)) {
            Ok((data, _)) => Some(data),
            Err(zk::Error::NoNode) => None,
            Err(e) => panic!("get {path}: {e}"),
        }
    }

    pub fn set(&self, path: &str, data: &[u8]) {
        self.rt
            .block_on(self.client.set_data(path, data, None))
            .unwrap_or_else(|e| panic!("set {path}: {e}"));
    }

    pub fn children(&self, path: &str) -> Vec<String> {
        match self.rt.block_on(self.client.list_children(path)) {
            Ok(mut c) => {
                c.sort();
                c
            }
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => panic!("ls {path}: {e}"),
        }
    }

    /// Every node under `base` (not `base` itself), depth first, with its data.
    pub fn dump(&self, base: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![base.to_string()];
        while let Some(dir) = todo.pop() {
            for child in self.children(&dir) {
                let path = format!("{dir}/{child}");
                if let Some(data) = self.get(&path) {
                    out.push((path.clone(), data));
                }
                todo.push(path);
            }
        }
        out.sort();
        out
    }

    /// The ephemeral owner (session id) of `path`, 0 for a persistent node, None when absent.
    pub fn owner(&self, path: &str) -> Option<i64> {
        match self.rt.block_on(self.client.check_stat(path)) {
            Ok(stat) => stat.map(|s| s.ephemeral_owner),
            Err(e) => panic!("stat {path}: {e}"),
        }
    }
}
