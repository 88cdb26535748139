//! A throwaway etcd for tests: Debian's `/usr/bin/etcd` (package etcd-server) with its data in a
//! temp dir, listening on free loopback ports, killed on drop; `etcdctl` (package etcd-client)
//! to set it up and look at it. Elections and lease checks are made fast (50 ms heartbeat, 500 ms
//! election timeout) so that leases of 1–2 s work. With no binaries installed `start` returns
//! None after a visible SKIP line, or panics under `CI=true`. Never touches a server it did not
//! start.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "etcdctl";
/// The password `enable_auth` gives `root`.
pub const ROOT_PASSWORD: &str = "root-pw-e7c1d";

/// Certificates made by `start_tls`: CA, and a client certificate the server accepts.
pub struct Tls {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct Etcd {
    dir: tempfile::TempDir,
    pub port: u16,
    peer_port: u16,
    child: Option<Child>,
    pub tls: Option<Tls>,
    /// `root`'s password once auth is on (etcdctl then needs it).
    auth: bool,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn etcdctl_found() -> bool {
    Command::new(ETCDCTL)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// As `support::require` (this file is also the benches' harness, without `support`): missing
/// under CI fails, otherwise a visible SKIP line.
fn require(what: &str, found: bool) -> bool {
    if found {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required under CI=true but was not found (.ci/run installs it)");
    }
    eprintln!("SKIP: {what} not found; skipping (install it to run this test)");
    false
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

impl Etcd {
    /// A fresh single-member etcd on plain HTTP. None (after a SKIP line) when not installed.
    pub fn start() -> Option<Etcd> {
        Etcd::start_with(false)
    }

    /// A fresh etcd serving TLS with a test CA, requiring client certificates signed by it.
    pub fn start_tls() -> Option<Etcd> {
        Etcd::start_with(true)
    }

    fn start_with(tls: bool) -> Option<Etcd> {
        let found = Path::new(ETCD).is_file() && etcdctl_found();
        if !require(
            "etcd (/usr/bin/etcd from etcd-server, and etcdctl from etcd-client)",
            found,
        ) {
            return None;
        }
        if tls && !require("openssl (to make test certificates)", openssl_found()) {
            return None;
        }
        let dir = tempfile::tempdir().expect("etcd temp dir");
        let mut e = Etcd {
            port: free_port(),
            peer_port: free_port(),
            dir,
            child: None,
            tls: None,
            auth: false,
        };
        if tls {
            e.tls = Some(make_certs(&e.dir.path().join("tls")));
        }
        // A port found free can be taken by another test's server before etcd binds it: start
        // again on fresh ports then.
        for attempt in 0.. {
            match e.try_launch() {
                Ok(()) => break,
                Err(log) if attempt < 4 && log.contains("address already in use") => {
                    let _ = std::fs::remove_dir_all(e.dir.path().join("data"));
                    e.port = free_port();
                    e.peer_port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        Some(e)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// `host:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The store URL initguard uses.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "etcds" } else { "etcd" };
        format!("{scheme}://{}", self.endpoint())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("{log}");
        }
    }

    /// Start etcd on this server's ports and wait until it is healthy; what went wrong otherwise.
    fn try_launch(&mut self) -> Result<(), String> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.client_url();
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(tls) = &self.tls {
            let dir = tls.ca.parent().expect("tls dir");
            cmd.arg("--cert-file")
                .arg(dir.join("server.crt"))
                .arg("--key-file")
                .arg(dir.join("server.key"))
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca);
        }
        self.child = Some(cmd.spawn().expect("spawn etcd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .etcdctl()
                .args(["endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "etcd exited with {st} before it was healthy:\n{}",
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("etcd was not healthy after 30s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `etcdctl` against this server (as root once auth is on).
    pub fn etcdctl(&self) -> Command {
        let mut c = Command::new(ETCDCTL);
        c.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.client_url())
            .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
            .stdin(Stdio::null());
        if let Some(tls) = &self.tls {
            c.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        if self.auth {
            c.arg("--user").arg(format!("root:{ROOT_PASSWORD}"));
        }
        c
    }

    /// Run etcdctl with `args`, panicking on failure; its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = check(
            self.etcdctl().args(args).output().expect("etcdctl"),
            &format!("etcdctl {args:?}"),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key under `prefix` with its value, as etcdctl prints them (key line, value line).
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let text = self.ctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
            .collect()
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<String> {
        let text = self.ctl(&["get", key, "--print-value-only"]);
        (!text.is_empty()).then(|| text.strip_suffix('\n').unwrap_or(&text).to_string())
    }

    /// `key`'s create revision, from etcdctl's JSON (0 when the key does not exist).
    pub fn create_revision(&self, key: &str) -> u64 {
        let text = self.ctl(&["get", key, "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&text).expect("etcdctl JSON");
        v["kvs"][0]["create_revision"].as_u64().unwrap_or(0)
    }

    /// How many times `key` was created (put while absent) since the server started: the
    /// history of its events replayed by a watch from revision 1 (these servers never compact).
    pub fn creations(&self, key: &str) -> u64 {
        assert!(
            self.tls.is_none() && !self.auth,
            "creations: plain servers only"
        );
        let endpoint = self.endpoint();
        let key = key.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut client = etcd_client::Client::connect([endpoint], None)
                .await
                .expect("connect to etcd");
            let opts = etcd_client::WatchOptions::new().with_start_revision(1);
            let mut stream = client.watch(key, Some(opts)).await.expect("watch");
            let mut created = 0;
            // The history comes at once; a second of silence after it means it is all there.
            while let Ok(msg) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await
            {
                let Some(resp) = msg.expect("watch message") else {
                    break;
                };
                for e in resp.events() {
                    if let Some(kv) = e.kv()
                        && e.event_type() == etcd_client::EventType::Put
                        && kv.version() == 1
                    {
                        created += 1;
                    }
                }
            }
            created
        })
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// Turn authentication on, with user `root` (password `ROOT_PASSWORD`) and a user `app`
    /// with `password` allowed read-write on `/initguard/` only.
    pub fn enable_auth(&mut self, app_password: &str) {
        self.ctl(&[
            "user",
            "add",
            &format!("root:{ROOT_PASSWORD}"),
            "--interactive=false",
        ]);
        self.ctl(&[
            "user",
            "add",
            &format!("app:{app_password}"),
            "--interactive=false",
        ]);
        self.ctl(&["role", "add", "app"]);
        self.ctl(&[
            "role",
            "grant-permission",
            "app",
            "--prefix=true",
            "readwrite",
            "/initguard/",
        ]);
        self.ctl(&["user", "grant-role", "app", "app"]);
        self.ctl(&["auth", "enable"]);
        self.auth = true;
    }

    /// SIGKILL the server (its data stays, for `restart`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the killed server again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn openssl_found() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, in `dir`.
fn make_certs(dir: &Path) -> Tls {
    std::fs::create_dir_all(dir).expect("tls dir");
    let openssl = |args: &[&str]| {
        check(
            Command::new("openssl")
                .current_dir(dir)
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
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, cn) in [("server", "localhost"), ("client", "initguard")] {
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    Tls {
        ca: dir.join("ca.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}
