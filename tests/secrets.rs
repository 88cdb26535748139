//! A store password never appears in any output: error lines of every URL parse path (password in
//! every position it can take), text and JSON logs, `status`, records, and the command's
//! environment. `--print-fingerprint` shows no digest of `--input-env` values.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::*;

const PW: &str = "Zq9SecretPW";

/// Store URLs with the password in every place it can be put, each malformed or failing in its
/// own way.
fn bad_urls() -> Vec<String> {
    [
        // misspelt or missing scheme
        "postgress://app:PW@db:5432/app",
        "postgre://app:PW@db/app",
        "app:PW@db/app",
        "//app:PW@db/app",
        "host=db password=PW dbname=app",
        "host=db password='PW x' dbname=app",
        "host=db user=app password=PW",
        // malformed postgres URLs
        "postgresql:/app:PW@db/app",
        "postgresql:app:PW@db/app",
        "postgres://app:PW@db:notaport/app",
        "postgres://app:PW@[::1/app",
        "postgres://app:PW/app",
        "postgres://:PW@db/app?sslmode=bogus",
        "postgres://app:p@ssPW@db/app?sslmode=bogus",
        "postgres://app:P%40PW@db/app?sslmode=bogus",
        // password as a parameter, with a bad parameter beside it
        "postgres://app@db/app?password=PW&sslmode=bogus",
        "postgres://app@db/app?sslmode=bogus&password=PW",
        "postgres://app@db/app?password=PW&schema=Bad-Name",
        "postgres://app@db/app?password=PW&nonsense=1",
        "postgres://app@db/app?PW",
        "postgres://app@db/app?PW=1",
        "postgres://app@db/app?sslmode=PW",
        "postgres://app@db/app?connect_timeout=PW",
        "postgres://app:PW@db/app?sslrootcert=%ff",
        // etcd (issue 11): a password is refused anywhere in the URL
        "etcd://root:PW@127.0.0.1:2379",
        "etcds://root:PW@h1:2379,h2:2379?prefix=/x/",
        "etcd://h:2379?PW",
        "etcd://h:2379?prefix=/x/&PW=1",
        "etcd://h:PW",
        "etcd:/root:PW@h",
        // other schemes
        "kubernetes://app:PW@cluster",
        "zookeeper://app:PW@zk:2181/chroot",
        "zookeeper://zk:2181?password=PW",
        "zookeeper://zk:PW/x",
        "zookeeper://zk?PW=1",
        "zookeeper://zk/PW//x",
        "file:",
    ]
    .iter()
    .map(|u| u.replace("PW", PW))
    .collect()
}

fn ig(work: &Path) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(work)
        .env_remove("INITGUARD_STORE")
        .env_remove("INITGUARD_KEY")
        .env_remove("INITGUARD_FENCING_TOKEN")
        .env_remove("PGPASSWORD")
        .stdin(Stdio::null());
    c
}

fn leaks(o: &Output) -> bool {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    all.contains(PW) || all.contains("SecretPW")
}

fn subcommands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["run", "--key", "app/k", "--", "true"],
        vec!["status"],
        vec!["status", "app/k", "--json"],
        vec!["history", "app/k"],
        vec!["reset", "app/k"],
        vec!["release", "app/k"],
    ]
}

#[test]
fn a_password_in_any_part_of_a_bad_store_url_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for url in bad_urls() {
        for sub in subcommands() {
            for format in ["text", "json"] {
                for via_env in [false, true] {
                    let mut c = ig(tmp.path());
                    c.args(["--log-format", format]);
                    if via_env {
                        c.env("INITGUARD_STORE", &url);
                    } else {
                        c.args(["--store", &url]);
                    }
                    let o = c.args(&sub).output().unwrap();
                    if code(&o) != 2 || leaks(&o) || stderr(&o).lines().count() != 1 {
                        wrong.push(format!(
                            "{url} {sub:?} {format} env={via_env}: exit {}: {}",
                            code(&o),
                            stderr(&o)
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_password_in_an_unreachable_store_url_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    for url in [
        format!("postgres://app:{PW}@127.0.0.1:1/app"),
        format!("postgres://app@127.0.0.1:1/app?password={PW}"),
        // Accepted by the parser (an empty host list, then the path): still never printed.
        format!("postgres:///app:{PW}@127.0.0.1:1/app"),
    ] {
        for (format, sub) in [
            ("text", vec!["status"]),
            ("json", vec!["run", "--key", "app/k", "--", "true"]),
        ] {
            let o = ig(tmp.path())
                .args(["--log-format", format, "--store", &url])
                .args(&sub)
                .output()
                .unwrap();
            assert_eq!(code(&o), 69, "{}", stderr(&o));
            assert!(!leaks(&o), "{url}: {}", stderr(&o));
        }
    }
}

#[test]
fn a_password_in_a_bad_sql_target_is_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    for target in [
        format!("postgress://app:{PW}@db/app"),
        format!("postgres://app:{PW}@db/app?sslmode=bogus"),
        format!("host=db password={PW}"),
    ] {
        let o = ig(tmp.path())
            .args(["--store", "file:state", "run", "--key", "app/sql"])
            .args(["--sql-inline", "SELECT 1", "--sql-target", &target])
            .output()
            .unwrap();
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(!leaks(&o), "{target}: {}", stderr(&o));
    }
}

/// The command prints its environment; returns what it printed and the recorded tail.
fn child_env(work: &Path, extra: &[&str]) -> (String, String) {
    let o = ig(work)
        .env("INITGUARD_STORE", "file:state")
        .env("INITGUARD_STORE_PASSWORD_FILE", format!("/run/{PW}"))
        .args(["run", "--key", "app/env"])
        .args(extra)
        .args(["--", "env"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let st = ig(work)
        .args(["--store", "file:state", "status", "app/env", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        v[0]["tail"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn the_command_does_not_inherit_the_store_settings_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (env, tail) = child_env(tmp.path(), &[]);
    for out in [&env, &tail] {
        assert!(!out.contains("INITGUARD_STORE"), "{out}");
        assert!(!out.contains(PW), "{out}");
        assert!(out.contains("INITGUARD_KEY=app/env"), "{out}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (env, _) = child_env(tmp.path(), &["--pass-store-env"]);
    assert!(env.contains("INITGUARD_STORE=file:state"), "{env}");
    assert!(env.contains("INITGUARD_STORE_PASSWORD_FILE="), "{env}");
}

fn print_fingerprint(work: &Path, pin: &str) -> String {
    let o = ig(work)
        .env("APP_PIN", pin)
        .args(["--store", "file:state", "run", "--key", "app/fp"])
        .args([
            "--input-env",
            "APP_PIN",
            "--print-fingerprint",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn print_fingerprint_shows_no_digest_of_an_environment_value() {
    let tmp = tempfile::tempdir().unwrap();
    let a = print_fingerprint(tmp.path(), "1234");
    let env_line = a
        .lines()
        .find(|l| l.starts_with("env"))
        .expect("an env line");
    assert!(!env_line.contains("sha256:"), "{env_line}");
    assert!(env_line.contains("APP_PIN"), "{env_line}");
    // The value still counts: another PIN is another fingerprint.
    let b = print_fingerprint(tmp.path(), "1235");
    let value = |s: &str| s.lines().last().unwrap_or_default().to_string();
    assert!(value(&a).starts_with("fingerprint sha256:"), "{a}");
    assert_ne!(value(&a), value(&b));
}

#[test]
fn a_password_in_a_working_postgres_url_appears_in_no_log_record_status_or_child_env() {
    let Some(pg) = support::pg::Pg::start() else {
        return;
    };
    let pw = support::pg::APP_PASSWORD;
    let with_param = format!("{}?password={pw}", pg.url_without_password());
    for url in [pg.url(), with_param] {
        assert!(url.contains(pw));
        let tmp = tempfile::tempdir().unwrap();
        let mut outputs = Vec::new();
        for (format, level) in [("text", "debug"), ("json", "debug")] {
            let key = unique_key("secret/run");
            let o = ig(tmp.path())
                .env("INITGUARD_STORE", &url)
                .env("INITGUARD_LOG", level)
                .args(["--log-format", format, "run", "--key", &key, "--", "env"])
                .output()
                .unwrap();
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            outputs.push(o);
            for sub in [
                vec!["status"],
                vec!["status", "--json"],
                vec!["history", key.as_str(), "--json"],
            ] {
                let o = ig(tmp.path())
                    .env("INITGUARD_STORE", &url)
                    .args(["--log-format", format])
                    .args(&sub)
                    .output()
                    .unwrap();
                assert_eq!(code(&o), 0, "{}", stderr(&o));
                outputs.push(o);
            }
        }
        for o in &outputs {
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(!all.contains(pw), "{url}: {all}");
        }
        let rows = pg.sql_in(
            support::pg::APP_DB,
            "SELECT coalesce(string_agg(record::text || holder::text, ' '), '') FROM initguard.tasks",
        );
        assert!(!rows.contains(pw), "{rows}");
    }
}

/// Every store credential variable README's `--pass-store-env` row names (the ZooKeeper digest
/// and the etcd user and TLS files too, whatever the store in use) is removed from the command's
/// environment, and passed with `--pass-store-env`.
#[test]
fn every_store_credential_variable_is_removed_unless_passed() {
    let vars = [
        ("INITGUARD_ZK_AUTH", format!("app:{PW}")),
        ("INITGUARD_ZK_AUTH_FILE", format!("/run/{PW}-zk")),
        ("INITGUARD_ETCD_USER", format!("app:{PW}")),
        ("INITGUARD_ETCD_CA_FILE", "/run/etcd/ca.pem".to_string()),
        ("INITGUARD_ETCD_CERT_FILE", "/run/etcd/cert.pem".to_string()),
        ("INITGUARD_ETCD_KEY_FILE", "/run/etcd/key.pem".to_string()),
    ];
    for pass in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = ig(tmp.path());
        c.env("INITGUARD_STORE", "file:state")
            .args(["run", "--key", "app/creds"]);
        for (k, v) in &vars {
            c.env(k, v);
        }
        if pass {
            c.arg("--pass-store-env");
        }
        let o = c.args(["--", "env"]).output().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let env = String::from_utf8_lossy(&o.stdout);
        for (k, v) in &vars {
            assert_eq!(
                env.lines().any(|l| l == format!("{k}={v}")),
                pass,
                "{k} in the command's environment (--pass-store-env {pass}):\n{env}"
            );
        }
        assert_eq!(env.contains(PW), pass, "{env}");
    }
}
