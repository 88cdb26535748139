//! The static binary in an empty root: only the binary and what a Pod gets (`/etc/hosts`,
//! `/etc/resolv.conf`, a service-account token directory, `/proc`). Chrooted there as root, it
//! runs a task on the file store, on the test PostgreSQL by host *name*, against the
//! Kubernetes API double by name and (built with `zookeeper`) on the test ZooKeeper by name —
//! names resolved through that `/etc/hosts` alone, with no glibc and no NSS modules in the root.
//!
//! Builds nothing itself: `INITGUARD_STATIC_BIN` names the prebuilt static binary
//! (`.ci/static-chroot` builds it and runs this test). Without it the test is skipped, with a
//! SKIP line, even under CI: the script is the gate.

#[macro_use]
mod support;
#[cfg(feature = "kubernetes")]
#[path = "support/kube_api.rs"]
mod kube_api;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::{code, stderr};

const PG_HOST: &str = "pg.initguard.test";
const KUBE_HOST: &str = "kubeapi.initguard.test";
const ZK_HOST: &str = "zk.initguard.test";

/// An empty root for the static binary, removed on drop (the `/proc` it gets is mounted in a
/// private mount namespace per command, so nothing is left mounted on the host).
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new(bin: &Path) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("initguard-chroot-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        for d in [
            "etc",
            "proc",
            "tmp",
            "var/run/secrets/kubernetes.io/serviceaccount",
        ] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        std::fs::copy(bin, p.join("initguard")).unwrap();
        std::fs::write(
            p.join("etc/hosts"),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.0.1\t{PG_HOST}\n127.0.0.1\t{KUBE_HOST}\n127.0.0.1\t{ZK_HOST}\n"),
        )
        .unwrap();
        // As in a Pod: cluster DNS, search domains and ndots 5, which must not stop names that
        // /etc/hosts has from resolving.
        std::fs::write(
            p.join("etc/resolv.conf"),
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        )
        .unwrap();
        let sa = p.join("var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::write(sa.join("token"), "not-a-real-token").unwrap();
        std::fs::write(sa.join("namespace"), "initguard-test").unwrap();
        std::fs::write(sa.join("ca.crt"), "").unwrap();
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `initguard ARGS` chrooted into the root, as PID 1 of its own PID namespace (like a
    /// container's first process), with `/proc` and exactly `env`.
    fn initguard(&self, args: &[&str], env: &[(&str, String)]) -> Output {
        let proc_dir = self.path().join("proc");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--pid", "--fork"])
            .arg(format!("--mount-proc={}", proc_dir.display()))
            // The environment is cleared for initguard, so unshare gets chroot's full path.
            .arg(which("chroot"))
            .arg(self.path())
            .arg("/initguard")
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        cmd.output().unwrap()
    }
}

/// A self-signed certificate made with openssl (which .ci/run installs), in a temp dir of its
/// own so that its key never enters the root.
#[cfg(feature = "kubernetes")]
fn throwaway_ca() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ca.crt");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=initguard-test-ca",
            "-keyout",
        ])
        .arg(dir.path().join("ca.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    (dir, cert)
}

fn which(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} not found"))
}

fn static_bin() -> Option<PathBuf> {
    let Ok(bin) = std::env::var("INITGUARD_STATIC_BIN") else {
        eprintln!("SKIP: INITGUARD_STATIC_BIN not set (run .ci/static-chroot)");
        return None;
    };
    assert!(
        nix::unistd::geteuid().is_root(),
        "the chroot test needs root (chroot, unshare, mount)"
    );
    let file = Command::new("file").arg(&bin).output();
    if let Ok(f) = file {
        let f = String::from_utf8_lossy(&f.stdout);
        assert!(
            f.contains("statically linked") || f.contains("static-pie linked"),
            "{bin} is not static: {f}"
        );
    }
    Some(PathBuf::from(bin))
}

/// `--` command that leaves a mark: the binary copies itself into `/marks/N`.
fn marking(n: &str) -> Vec<String> {
    vec![
        "--".into(),
        "/initguard".into(),
        "install".into(),
        format!("/marks/{n}"),
    ]
}

fn assert_ran(root: &Root, out: &Output, mark: &str, what: &str) {
    assert_eq!(code(out), 0, "{what}: {}", stderr(out));
    assert!(
        root.path()
            .join("marks")
            .join(mark)
            .join("initguard")
            .is_file(),
        "{what}: the command ran\n{}",
        stderr(out)
    );
}

/// The same task again (same argv, so the same fingerprint) is skipped: its mark, removed,
/// does not come back.
fn assert_skips(root: &Root, key: &str, mark: &str, env: &[(&str, String)]) {
    let made = root.path().join("marks").join(mark).join("initguard");
    std::fs::remove_file(&made).unwrap();
    let cmd = marking(mark);
    let out = root.initguard(&run_args(key, &cmd), env);
    assert_eq!(code(&out), 0, "{key} again: {}", stderr(&out));
    assert!(
        !made.exists(),
        "{key}: the second run skips\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
}

fn run_args<'a>(key: &'a str, cmd: &'a [String]) -> Vec<&'a str> {
    let mut a = vec!["run", "--key", key];
    a.extend(cmd.iter().map(String::as_str));
    a
}

#[test]
fn static_binary_runs_tasks_in_an_empty_root_on_every_store_by_name() {
    let Some(bin) = static_bin() else {
        return;
    };
    let root = Root::new(&bin);
    for m in [
        "file",
        "pg",
        "kube",
        "kube-default",
        "kube-sa-ns",
        "kube-url-ns",
        "zk",
    ] {
        std::fs::create_dir_all(root.path().join("marks").join(m)).unwrap();
    }
    let base = |store: String| vec![("INITGUARD_STORE", store), ("POD_NAME", "web-0".into())];

    // File store.
    let env = base("file:/state".into());
    let cmd = marking("file");
    let out = root.initguard(&run_args("chroot/file", &cmd), &env);
    assert_ran(&root, &out, "file", "file store");
    assert_skips(&root, "chroot/file", "file", &env);

    // PostgreSQL, by the name /etc/hosts gives it.
    #[cfg(feature = "postgres")]
    if let Some(pg) = support::pg::Pg::start() {
        let url = format!(
            "postgres://{}@{PG_HOST}:{}/{}?sslmode=disable",
            support::pg::APP_USER,
            pg.port,
            support::pg::APP_DB
        );
        let mut env = base(url);
        env.push(("PGPASSWORD", support::pg::APP_PASSWORD.into()));
        let cmd = marking("pg");
        let out = root.initguard(&run_args("chroot/pg", &cmd), &env);
        assert_ran(&root, &out, "pg", "postgres store by name");
        assert_skips(&root, "chroot/pg", "pg", &env);
        assert_eq!(
            pg.sql_in(
                support::pg::APP_DB,
                "select count(*) from initguard.tasks where key = 'chroot/pg' and state = 'succeeded'"
            )
            .trim(),
            "1"
        );
    }

    // The Kubernetes API double, by name, through a kubeconfig inside the root.
    #[cfg(feature = "kubernetes")]
    {
        let api = kube_api::KubeApi::start();
        let port = api.url().rsplit(':').next().unwrap().to_string();
        // A scratch root has no system CA store, and kube builds its TLS setup even for plain
        // HTTP: without a CA in the kubeconfig that fails (78). In a Pod the CA is the service
        // account's ca.crt; here a throwaway one plays that part.
        let (_ca_dir, ca) = throwaway_ca();
        std::fs::copy(
            &ca,
            root.path()
                .join("var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
        )
        .unwrap();
        std::fs::write(
            root.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    \
                 server: http://{KUBE_HOST}:{port}\n    certificate-authority: \
                 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\ncontexts:\n- name: double\n  \
                 context:\n    cluster: double\n    user: double\n    namespace: initguard-test\n\
                 current-context: double\nusers:\n- name: double\n  user:\n    tokenFile: \
                 /var/run/secrets/kubernetes.io/serviceaccount/token\n"
            ),
        )
        .unwrap();
        // The same kubeconfig without its certificate-authority: 78, saying why, nothing run.
        let kubeconfig = std::fs::read_to_string(root.path().join("kubeconfig")).unwrap();
        let no_ca: String = kubeconfig
            .lines()
            .filter(|l| !l.contains("certificate-authority"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(root.path().join("kubeconfig-no-ca"), no_ca).unwrap();
        let mut env = base("kubernetes:".into());
        env.push(("KUBECONFIG", "/kubeconfig-no-ca".into()));
        env.push(("POD_NAMESPACE", "initguard-test".into()));
        let cmd = marking("kube-no-ca");
        let out = root.initguard(&run_args("chroot/kube-no-ca", &cmd), &env);
        assert_eq!(code(&out), 78, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("No CA certificates were loaded from the system"),
            "{}",
            stderr(&out)
        );
        assert!(api.leases("initguard-test").is_empty(), "nothing was taken");
        assert!(
            !root.path().join("marks/kube-no-ca").exists(),
            "nothing ran"
        );

        let mut env = base("kubernetes:".into());
        env.push(("KUBECONFIG", "/kubeconfig".into()));
        env.push(("POD_NAMESPACE", "initguard-test".into()));
        let cmd = marking("kube");
        let out = root.initguard(&run_args("chroot/kube", &cmd), &env);
        assert_ran(&root, &out, "kube", "kubernetes store by name");
        assert_skips(&root, "chroot/kube", "kube", &env);
        assert_eq!(api.leases("initguard-test").len(), 1);

        // No INITGUARD_STORE where a service-account token is (a Pod): `kubernetes:` it is.
        let env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| *k != "INITGUARD_STORE")
            .collect();
        let cmd = marking("kube-default");
        let out = root.initguard(&run_args("chroot/kube-default", &cmd), &env);
        assert_ran(
            &root,
            &out,
            "kube-default",
            "kubernetes: by default in a Pod",
        );
        assert!(
            stderr(&out).contains("store kubernetes:"),
            "{}",
            stderr(&out)
        );
        assert_eq!(api.leases("initguard-test").len(), 2);

        // The namespace: the URL's, else that of the credentials in use. With KUBECONFIG set,
        // those are the kubeconfig's (its context says initguard-test), even in a Pod whose
        // service account says another.
        std::fs::write(
            root.path()
                .join("var/run/secrets/kubernetes.io/serviceaccount/namespace"),
            "sa-ns",
        )
        .unwrap();
        for (store, mark, namespace) in [
            ("kubernetes:", "kube-sa-ns", "initguard-test"),
            ("kubernetes:url-ns", "kube-url-ns", "url-ns"),
        ] {
            let mut env = base(store.into());
            env.push(("KUBECONFIG", "/kubeconfig".into()));
            let before = api.leases(namespace).len();
            let out = root.initguard(&run_args(&format!("chroot/{mark}"), &marking(mark)), &env);
            assert_ran(&root, &out, mark, store);
            assert_eq!(
                api.leases(namespace).len(),
                before + 1,
                "{store}: its Lease in {namespace}"
            );
        }
        assert!(api.leases("sa-ns").is_empty());
    }

    // ZooKeeper, by name.
    #[cfg(feature = "zookeeper")]
    if let Some(zk) = support::zk::Zk::start() {
        let env = base(format!("zookeeper://{ZK_HOST}:{}", zk.port));
        let cmd = marking("zk");
        let out = root.initguard(&run_args("chroot/zk", &cmd), &env);
        assert_ran(&root, &out, "zk", "zookeeper store by name");
        assert_skips(&root, "chroot/zk", "zk", &env);
        let record = zk.admin(None).get("/initguard/chroot%2Fzk/record");
        assert!(record.is_some(), "the record is in ZooKeeper");
    }
}

/// A name neither /etc/hosts nor any DNS server knows is a clean "unreachable" (69), not a
/// hang or a crash: the resolver really is the one reading the root's files.
#[test]
fn static_binary_reports_an_unknown_host_as_unreachable() {
    let Some(bin) = static_bin() else {
        return;
    };
    let root = Root::new(&bin);
    // No nameserver at all: nothing to wait for.
    std::fs::write(root.path().join("etc/resolv.conf"), "").unwrap();
    let env = vec![
        (
            "INITGUARD_STORE",
            "postgres://app@nowhere.initguard.test:5432/app?sslmode=disable".to_string(),
        ),
        ("PGPASSWORD", "x".to_string()),
    ];
    let cmd = marking("never");
    let out = root.initguard(&run_args("chroot/unknown", &cmd), &env);
    assert_eq!(code(&out), 69, "{}", stderr(&out));
}
