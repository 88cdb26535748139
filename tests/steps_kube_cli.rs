//! `initguard steps` on the `kubernetes:` store (the API double of tests/support/kube_api.rs):
//! script steps with their history in the set's record, kept in the Lease's annotation; a second
//! apply skips; a step cut off by `kill -9` runs again, told it was interrupted, once the lease
//! has lapsed.
#![cfg(feature = "kubernetes")]

#[path = "support/kube_api.rs"]
mod kube_api;
mod support;

use kube_api::KubeApi;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{bin, code, lines, stderr, wait_for};

const NS: &str = "initguard-test";

/// The API double, a kubeconfig for it, DIR and the steps' log.
struct Fx {
    _tmp: tempfile::TempDir,
    api: KubeApi,
    kubeconfig: std::path::PathBuf,
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let api = KubeApi::start();
        let kubeconfig = api.kubeconfig(tmp.path(), NS);
        let dir = tmp.path().join("steps");
        fs::create_dir(&dir).unwrap();
        let log = tmp.path().join("log");
        Fx {
            _tmp: tmp,
            api,
            kubeconfig,
            dir,
            log,
        }
    }

    /// `steps apply DIR` on the `kubernetes:` store.
    fn apply(&self) -> Command {
        let mut c = Command::new(bin());
        c.args(["steps", "apply"])
            .arg(&self.dir)
            .args(["--store", &format!("kubernetes:{NS}")])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LOG", &self.log)
            .env("INITGUARD_LOG", "info")
            .env_remove("INITGUARD_STEPS_TARGET")
            .env_remove("INITGUARD_KEY")
            .env_remove("INITGUARD_FENCING_TOKEN")
            .env_remove("POD_UID")
            .stdin(Stdio::null());
        c
    }
}

#[test]
fn script_steps_on_the_kubernetes_store_run_once_and_resume_after_a_kill() {
    let fx = Fx::new();
    let (api, dir, log) = (&fx.api, &fx.dir, &fx.log);
    for (name, body) in [
        ("V1__first.sh", ""),
        (
            "V2__slow.sh",
            "[ -e \"$LOG.slow\" ] && { echo $$ > \"$LOG.pid\"; exec sleep 60; }; true",
        ),
    ] {
        let path = dir.join(name);
        fs::write(
            &path,
            format!("#!/bin/sh\necho \"$INITGUARD_STEP_VERSION $INITGUARD_PREVIOUS\" >> \"$LOG\"\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let ig = || {
        let mut c = fx.apply();
        c.args(["--lock-ttl", "2s"]);
        c
    };
    fs::write(log.with_extension("slow"), "").unwrap();
    let mut child = ig()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let step = support::pid_written_to(
        &log.with_extension("pid"),
        "the slow step to start",
        Duration::from_secs(30),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_file(log.with_extension("slow")).unwrap();
    // The supervisor kills the step with initguard.
    wait_for(
        "the step to die with initguard",
        Duration::from_secs(10),
        || !support::pid_alive(step),
    );

    let out = ig().output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lines(log), ["1 none", "2 none", "2 interrupted"]);
    let again = ig().output().unwrap();
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains("skipped"), "{}", stderr(&again));
    assert_eq!(lines(log).len(), 3, "nothing ran again");

    // The step history is in the record, in the Lease's annotation.
    let lease = api
        .leases(NS)
        .into_iter()
        .find(|l| l["metadata"]["annotations"]["initguard.io/record"].is_string())
        .expect("a Lease with a record");
    let record: serde_json::Value = serde_json::from_str(
        lease["metadata"]["annotations"]["initguard.io/record"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["key"], "steps-steps");
    assert_eq!(record["state"], "succeeded");
    let states: Vec<&str> = record["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["applied", "applied"], "{record}");
}

/// Four `steps apply` at once on the `kubernetes:` store: one applies, the other three wait and
/// then skip; each script step ran exactly once, and no two ran at the same time.
#[test]
fn concurrent_applies_on_the_kubernetes_store_run_each_step_once() {
    let fx = Fx::new();
    let (dir, log) = (&fx.dir, &fx.log);
    for v in 1..=3 {
        let path = dir.join(format!("V{v}__s{v}.sh"));
        fs::write(
            &path,
            "#!/bin/sh\necho \"start $INITGUARD_STEP_VERSION $(date +%s%N)\" >> \"$LOG\"\nsleep 0.2\necho \"end $INITGUARD_STEP_VERSION $(date +%s%N)\" >> \"$LOG\"\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let children: Vec<_> = (0..4)
        .map(|_| {
            fx.apply()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outs {
        assert_eq!(code(out), 0, "{}", stderr(out));
    }
    let applied = outs
        .iter()
        .filter(|o| stderr(o).contains("applied 3 steps"))
        .count();
    let skipped = outs
        .iter()
        .filter(|o| stderr(o).contains("skipped"))
        .count();
    assert_eq!((applied, skipped), (1, 3));
    let lines = lines(log);
    let events: Vec<(&str, &str, u128)> = lines
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace();
            (
                f.next().unwrap_or(""),
                f.next().unwrap_or(""),
                f.next().and_then(|t| t.parse().ok()).unwrap_or(0),
            )
        })
        .collect();
    let order: Vec<String> = events.iter().map(|(e, v, _)| format!("{e} {v}")).collect();
    assert_eq!(
        order,
        ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"],
        "each step once, one at a time"
    );
    assert!(
        events.windows(2).all(|w| w[0].2 <= w[1].2),
        "timestamps in order: {lines:?}"
    );
}
