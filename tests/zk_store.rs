//! End-to-end tests of the ZooKeeper store through the real `initguard` binary, against a
//! throwaway server started from Debian's package (tests/support/zk.rs). The contract suite runs
//! on one shared server, each scenario under a prefix of its own; scenarios that kill or cut off
//! the server start their own. Sessions are 2-4 s so that the file runs well under 2 minutes.
#![cfg(feature = "zookeeper")]

#[macro_use]
mod support;

use initguard::store::zookeeper::task_of;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use support::proxy::Proxy;
use support::zk::{Admin, Zk};
use support::{StoreFixture, Stored, code, lines, stderr, unique_key, wait_for};

/// One server for every scenario that leaves it running.
static SHARED: LazyLock<Option<Zk>> = LazyLock::new(Zk::start);

/// The contract suite's view of the store: the shared server, under a prefix of its own.
struct ZkFixture {
    url: String,
    hosts: String,
    base: String,
    env: Vec<(String, String)>,
}

impl ZkFixture {
    fn on(zk: &Zk) -> ZkFixture {
        let base = format!("/{}", unique_key("t").replace('/', "-"));
        ZkFixture {
            url: zk.url(&format!("?prefix={base}/")),
            hosts: format!("127.0.0.1:{}", zk.port),
            base,
            env: Vec::new(),
        }
    }

    fn shared() -> Option<ZkFixture> {
        SHARED.as_ref().map(ZkFixture::on)
    }

    fn admin(&self) -> Admin {
        Admin::connect(&self.hosts, None)
    }
}

impl StoreFixture for ZkFixture {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }
    fn leases_lapse(&self) -> bool {
        true
    }
    /// Every znode under the fixture's prefix (task nodes, records, lock queues), with its data.
    fn stored(&self) -> Vec<Stored> {
        self.admin()
            .dump(&self.base)
            .into_iter()
            .map(|(path, bytes)| {
                let task_node = path[self.base.len() + 1..].split('/').next().unwrap_or("");
                Stored {
                    task: task_of(task_node)
                        .map(|t| t.storage_name())
                        .unwrap_or_default(),
                    name: path,
                    bytes,
                }
            })
            .collect()
    }
}

// Without ZooKeeper installed (and CI unset) each scenario returns after Zk::start's SKIP line.
contract_tests!(match ZkFixture::shared() {
    Some(fx) => fx,
    None => return,
});

fn ig(fx: &ZkFixture, work: &Path) -> Command {
    let mut c = support::cmd(fx, work);
    c.env_remove("INITGUARD_ZK_AUTH")
        .env_remove("INITGUARD_ZK_AUTH_FILE");
    c
}

fn run(fx: &ZkFixture, work: &Path, key: &str, extra: &[&str], script: &str) -> Command {
    let mut c = ig(fx, work);
    c.args(["run", "--key", key])
        .args(extra)
        .args(["--", "sh", "-c", script]);
    c
}

fn spawn(mut c: Command) -> std::process::Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn initguard")
}

fn output(mut c: Command) -> Output {
    c.output().expect("run initguard")
}

fn stamp(line: &str, label: &str) -> Option<u128> {
    line.strip_prefix(label)?.trim().parse().ok()
}

/// A command that logs `old <ns>` every 20 ms until killed; its pid into `pid`.
fn looper(log: &Path, pid: &Path) -> String {
    format!(
        "echo $$ > {pid}; while :; do echo \"old $(date +%s%N)\" >> {log}; sleep 0.02; done",
        pid = pid.display(),
        log = log.display()
    )
}

fn next_script(log: &Path) -> String {
    format!(
        "echo \"new-start $(date +%s%N) $INITGUARD_FENCING_TOKEN\" >> {log}",
        log = log.display()
    )
}

/// The old command's last line came before the new one's first, and the new token is larger.
fn assert_old_dead_before_new(log: &Path, old_token: u64) {
    let all = lines(log);
    let start = all
        .iter()
        .find_map(|l| l.strip_prefix("new-start "))
        .expect("the new holder ran");
    let (at, token) = start.split_once(' ').expect("stamp and token");
    let at: u128 = at.parse().expect("stamp");
    let token: u64 = token.trim().parse().expect("token");
    assert!(all.iter().any(|l| stamp(l, "old ").is_some()), "old ran");
    let late = all
        .iter()
        .filter(|l| stamp(l, "old ").is_some_and(|t| t >= at))
        .count();
    assert_eq!(
        late, 0,
        "the old command wrote after the new one started: {all:?}"
    );
    assert!(
        token > old_token,
        "the new holder's token {token} > the old one's {old_token}"
    );
}

/// The 30 contenders of the contract suite leave no lock znode behind: waiters that skipped
/// deleted theirs, the holder released its own.
#[test]
fn contenders_leave_no_lock_znode_behind() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    support::contract::exactly_once_under_contention(&fx, 30);
    let admin = fx.admin();
    let tasks = admin.children(&fx.base);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let locks = admin.children(&format!("{}/{}/locks", fx.base, tasks[0]));
    assert!(locks.is_empty(), "no lock znode left: {locks:?}");
}

/// `kill -9` of the holder: its lock znode (ephemeral, owned by its session) stays until the
/// server expires the session after --lock-ttl, then the waiter takes over with a larger token,
/// and the killed command is dead before the new one starts.
#[test]
fn kill_9_of_the_holder_is_taken_over_after_the_session_timeout() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/kill9");
    let (log, pid) = (work.path().join("log"), work.path().join("pid"));
    let ttl = ["--lock-ttl", "2s"];
    let mut holder = spawn(run(&fx, work.path(), &key, &ttl, &looper(&log, &pid)));
    wait_for("the holder's command", Duration::from_secs(20), || {
        !lines(&log).is_empty()
    });
    let admin = fx.admin();
    let task = format!("{}/{}", fx.base, key.replace('/', "%2F"));
    let locks = admin.children(&format!("{task}/locks"));
    assert_eq!(locks.len(), 1, "{locks:?}");
    let lock = format!("{task}/locks/{}", locks[0]);
    assert!(
        admin.owner(&lock).unwrap_or(0) != 0,
        "the lock znode is ephemeral"
    );
    let token_before: serde_json::Value =
        serde_json::from_slice(&admin.get(&task).expect("task node")).expect("task node JSON");
    let old_token = token_before["token"].as_u64().expect("token");
    holder.kill().unwrap();
    let killed = Instant::now();
    let _ = holder.wait();
    let out = output(run(&fx, work.path(), &key, &ttl, &next_script(&log)));
    let took = killed.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    eprintln!("took over {took:.1?} after the kill (session timeout 2 s)");
    assert!(
        admin.owner(&lock).is_none(),
        "the old lock znode went with its session"
    );
    assert!(
        stderr(&out).contains("interrupted"),
        "the run under the new lease reports the interruption: {}",
        stderr(&out)
    );
    assert_old_dead_before_new(&log, old_token);
}

/// The server is killed while a command runs: renewals fail at once (not after a long wait), the
/// command is killed by the heartbeat's deadline (¾ of the 3 s lease), and initguard exits 75
/// with a line that says the lease was lost.
#[test]
fn server_killed_mid_run_kills_the_command_in_time() {
    let Some(mut zk) = Zk::start() else {
        return;
    };
    let fx = ZkFixture::on(&zk);
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/server-killed");
    let (log, pid) = (work.path().join("log"), work.path().join("pid"));
    let holder = spawn(run(
        &fx,
        work.path(),
        &key,
        &["--lock-ttl", "3s"],
        &looper(&log, &pid),
    ));
    wait_for("the command", Duration::from_secs(20), || {
        !lines(&log).is_empty()
    });
    let child: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    zk.kill();
    let killed = Instant::now();
    let out = holder.wait_with_output().unwrap();
    let took = killed.elapsed();
    eprintln!("initguard exited {took:.1?} after the server was killed (lease 3 s)");
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("lease on"), "{}", stderr(&out));
    assert!(!support::pid_alive(child), "the command is dead");
    let last_old = lines(&log)
        .iter()
        .filter_map(|l| stamp(l, "old "))
        .max()
        .unwrap();
    // The command's last line, by the same clock as the kill: no later than the lease's end.
    let killed_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        - took.as_nanos();
    assert!(
        last_old < killed_ns + Duration::from_secs(3).as_nanos(),
        "the command ran on for longer than the lease after the server went"
    );
    assert!(took < Duration::from_secs(20), "bounded: {took:?}");
}

/// The holder is cut off (a proxy stops forwarding) until the server expires its session: its
/// command is killed before the session can expire, a contender connected directly takes the lock
/// after the expiry with a larger token, and the cut-off holder, reconnected, exits 75.
#[test]
fn session_expired_while_partitioned_is_fenced() {
    let Some(zk) = Zk::start() else {
        return;
    };
    let proxy = Proxy::start(zk.addr());
    let direct = ZkFixture::on(&zk);
    // The same prefix, reached through the proxy.
    let via_proxy = ZkFixture {
        url: direct.url.replace(
            &format!("127.0.0.1:{}", zk.port),
            &format!("127.0.0.1:{}", proxy.port),
        ),
        hosts: direct.hosts.clone(),
        base: direct.base.clone(),
        env: direct.env.clone(),
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/partition");
    let (log, pid) = (work.path().join("log"), work.path().join("pid"));
    let ttl = ["--lock-ttl", "3s", "--wait-timeout", "60s"];
    let holder = spawn(run(
        &via_proxy,
        work.path(),
        &key,
        &ttl,
        &looper(&log, &pid),
    ));
    wait_for("the command", Duration::from_secs(20), || {
        !lines(&log).is_empty()
    });
    let task = format!("{}/{}", direct.base, key.replace('/', "%2F"));
    let admin = direct.admin();
    let token_before: serde_json::Value =
        serde_json::from_slice(&admin.get(&task).expect("task node")).unwrap();
    let old_token = token_before["token"].as_u64().unwrap();
    let cut = proxy.blackholed();
    let out = output(run(&direct, work.path(), &key, &ttl, &next_script(&log)));
    assert_eq!(code(&out), 0, "the contender takes over: {}", stderr(&out));
    assert_old_dead_before_new(&log, old_token);
    drop(cut);
    let out = holder.wait_with_output().unwrap();
    assert_eq!(code(&out), 75, "the cut-off holder: {}", stderr(&out));
    let rec = support::record(&direct, work.path(), &key);
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["token"].as_u64(), Some(old_token + 1));
}

/// Digest credentials: nodes made with them are closed to other users; a wrong password is a
/// configuration error (78) whose line names no password; the credentials come from a file or a
/// variable and never reach the command's environment.
#[test]
fn digest_auth_guards_the_nodes_and_a_wrong_password_exits_78() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/auth");
    let auth_file = work.path().join("zk-auth");
    std::fs::write(&auth_file, "app:Right-PW-4b1\n").unwrap();
    let env_file = work.path().join("env");
    let script = format!("env > {}", env_file.display());
    let mut c = run(&fx, work.path(), &key, &[], &script);
    c.env("INITGUARD_ZK_AUTH_FILE", &auth_file);
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains("INITGUARD_ZK_AUTH"),
        "stripped from the command: {env}"
    );
    assert!(!env.contains("Right-PW"), "{env}");
    // The same credentials as a variable: skipped (it can read what the file's user wrote).
    let mut c = run(&fx, work.path(), &key, &[], &script);
    c.env("INITGUARD_ZK_AUTH", "app:Right-PW-4b1");
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    for (name, value) in [
        ("INITGUARD_ZK_AUTH", Some("app:Wrong-PW-77x")),
        ("INITGUARD_ZK_AUTH", None),
    ] {
        let mut c = run(&fx, work.path(), &key, &[], &script);
        if let Some(v) = value {
            c.env(name, v);
        }
        let out = output(c);
        assert_eq!(code(&out), 78, "{value:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("refused access"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("Wrong-PW"), "{}", stderr(&out));
        let status = ig(&fx, work.path())
            .args(["status"])
            .env(name, value.unwrap_or(""))
            .output()
            .unwrap();
        assert_eq!(code(&status), 78, "status: {}", stderr(&status));
    }
    let bad_file = work.path().join("bad-auth");
    std::fs::write(&bad_file, "no-colon-here\n").unwrap();
    let mut c = run(&fx, work.path(), &key, &[], &script);
    c.env("INITGUARD_ZK_AUTH_FILE", &bad_file);
    let out = output(c);
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("user:password"), "{}", stderr(&out));
}

/// A record that is not a record: exit 65, nothing run, the znode's bytes untouched; `status`
/// names it; `reset` is what repairs it.
#[test]
fn corrupt_record_exits_65_and_is_left_untouched() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/corrupt");
    let marker = work.path().join("ran");
    let script = format!("echo run >> {}", marker.display());
    assert_eq!(code(&output(run(&fx, work.path(), &key, &[], &script))), 0);
    let admin = fx.admin();
    let record = format!("{}/{}/record", fx.base, key.replace('/', "%2F"));
    admin.set(&record, b"{\"schema\": 1, \"state\": tru");
    let out = output(run(&fx, work.path(), &key, &["--input-env", "X"], &script));
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("is corrupt"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("initguard reset {key}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        admin.get(&record).unwrap(),
        b"{\"schema\": 1, \"state\": tru"
    );
    assert_eq!(lines(&marker).len(), 1, "nothing ran");
    let reset = ig(&fx, work.path()).args(["reset", &key]).output().unwrap();
    assert_eq!(code(&reset), 0, "{}", stderr(&reset));
    assert_eq!(code(&output(run(&fx, work.path(), &key, &[], &script))), 0);
    assert_eq!(lines(&marker).len(), 2, "runs after reset");
}

/// Keys that differ only where a naive path mapping would merge them get znodes of their own,
/// each one path component under the prefix, and `status` lists every one.
#[test]
fn keys_map_to_znodes_without_collisions() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let base = unique_key("zk");
    let keys: Vec<String> = ["a/b", "a.b", "a-b", "a_b", "A/b", "a/b/c"]
        .iter()
        .map(|k| format!("{base}/{k}"))
        .collect();
    let marker = work.path().join("ran");
    for key in &keys {
        let script = format!("echo {key} >> {}", marker.display());
        assert_eq!(code(&output(run(&fx, work.path(), key, &[], &script))), 0);
    }
    assert_eq!(
        lines(&marker),
        keys,
        "every key ran once, none skipped as another"
    );
    let nodes = fx.admin().children(&fx.base);
    assert_eq!(nodes.len(), keys.len(), "{nodes:?}");
    for key in &keys {
        let node = key.replace('/', "%2F");
        assert!(nodes.contains(&node), "{node} in {nodes:?}");
    }
    let out = ig(&fx, work.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(keys.len()), "{all}");
}

/// Nothing listens: exit 69 after bounded retries, with a line that says so.
#[test]
fn unreachable_server_exits_69() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(support::bin())
        .current_dir(work.path())
        .env("INITGUARD_STORE", format!("zookeeper://127.0.0.1:{port}"))
        .args(["run", "--key", "zk/unreachable", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("is unreachable"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// A --lock-ttl longer than the server grants: the session would expire before the heartbeat's
/// deadline, so initguard refuses (78) before running anything.
#[test]
fn lock_ttl_the_server_will_not_grant_exits_78() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("ran");
    let out = output(run(
        &fx,
        work.path(),
        &unique_key("zk/ttl"),
        &["--lock-ttl", "120s"],
        &format!("touch {}", marker.display()),
    ));
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("maxSessionTimeout"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "nothing ran");
}

/// What an operator finds with `zkCli.sh ls`/`get`: the task node holds its storage name and the
/// last token, `record` the record as `status --json` shows it.
#[test]
fn the_layout_is_what_the_readme_shows() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/layout");
    assert_eq!(code(&output(run(&fx, work.path(), &key, &[], "true"))), 0);
    let admin = fx.admin();
    let task = format!("{}/{}", fx.base, key.replace('/', "%2F"));
    assert_eq!(admin.children(&task), vec!["locks", "record"]);
    let node: serde_json::Value = serde_json::from_slice(&admin.get(&task).unwrap()).unwrap();
    assert_eq!(node, serde_json::json!({"task": key, "token": 1}));
    let rec: serde_json::Value =
        serde_json::from_slice(&admin.get(&format!("{task}/record")).unwrap()).unwrap();
    assert_eq!(rec, support::record(&fx, work.path(), &key));
    // A chroot that does not exist yet is made, with the default prefix under it.
    let chroot = format!("{}-chroot/apps", fx.base);
    let rooted = ZkFixture {
        url: SHARED.as_ref().map(|z| z.url(&chroot)).unwrap_or_default(),
        hosts: fx.hosts.clone(),
        base: format!("{chroot}/initguard"),
        env: Vec::new(),
    };
    assert_eq!(
        code(&output(run(&rooted, work.path(), &key, &[], "true"))),
        0
    );
    assert_eq!(admin.children(&rooted.base), vec![key.replace('/', "%2F")]);
}

/// A record bigger than a znode takes (1 MiB of output kept, escaped six bytes a byte) is cut
/// down to fit, newest output kept, instead of failing the write.
#[test]
fn a_record_too_big_for_a_znode_is_trimmed_to_fit() {
    let Some(fx) = ZkFixture::shared() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let key = unique_key("zk/big");
    let script = "head -c 1048000 /dev/zero | tr '\\0' '\\1'; echo THE-END";
    let mut c = run(&fx, work.path(), &key, &["--tail-bytes", "1048576"], script);
    c.stdout(Stdio::null());
    let out = output(c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("record trimmed to fit"),
        "{}",
        stderr(&out)
    );
    let rec = support::record(&fx, work.path(), &key);
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["trimmed"], true);
    let table = ig(&fx, work.path()).args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("trimmed to fit this store's record cap of 1000 KiB"),
        "{text}"
    );
    let tail = rec["tail"].as_str().unwrap();
    assert!(
        tail.trim_end().ends_with("THE-END"),
        "newest output kept: …{:?}",
        &tail[tail.len().saturating_sub(40)..]
    );
}

/// A server that accepts connections but never answers (a proxy that forwards nothing): exit 69
/// within the connection budget (3 tries, 10 s), not a hang.
#[test]
fn a_server_that_never_answers_exits_69() {
    let Some(zk) = SHARED.as_ref() else {
        return;
    };
    let proxy = Proxy::start(zk.addr());
    proxy.blackhole(true);
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(support::bin())
        .current_dir(work.path())
        .env(
            "INITGUARD_STORE",
            format!("zookeeper://127.0.0.1:{}", proxy.port),
        )
        .args(["run", "--key", "zk/silent", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = started.elapsed();
    eprintln!("gave up after {took:.1?}");
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("is unreachable"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "{took:?}");
}
