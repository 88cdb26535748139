//! The text of every user-facing error message initguard itself prints, pinned by one `insta`
//! snapshot: a change to what users read is a visible diff in review
//! (tests/snapshots/error_messages__*.snap; `INSTA_UPDATE=always` rewrites it after a deliberate
//! change).

mod support;

use std::process::{Command, Stdio};
use support::*;

/// One invocation: arguments after `initguard`, and variables to set.
struct Case {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const fn case(args: &'static [&'static str]) -> Case {
    Case { args, env: &[] }
}

const CASES: &[Case] = &[
    // clap: structure
    case(&[]),
    case(&["k8s"]),
    case(&["statuss"]),
    case(&["run", "--", "true"]),
    case(&["run", "--key"]),
    case(&["run", "--key", "app/k", "--bogus", "--", "true"]),
    case(&["run", "--key", "app/k", "--lock-tt", "3s", "--", "true"]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--on-interrupted",
        "maybe",
        "--",
        "true",
    ]),
    case(&["run", "--key", "app/k", "--log-format", "xml", "--", "true"]),
    case(&["history"]),
    // numbers
    case(&["run", "--key", "app/k", "--retries", "-1", "--", "true"]),
    case(&["run", "--key", "app/k", "--retries", "two", "--", "true"]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--max-attempts",
        "1001",
        "--",
        "true",
    ]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--tail-bytes",
        "1048577",
        "--",
        "true",
    ]),
    case(&["run", "--key", "app/k", "--history", "0", "--", "true"]),
    // durations
    case(&[
        "run",
        "--key",
        "app/k",
        "--lock-ttl",
        "300000y",
        "--",
        "true",
    ]),
    case(&["run", "--key", "app/k", "--lock-ttl", "-1s", "--", "true"]),
    case(&["run", "--key", "app/k", "--lock-ttl", "500ms", "--", "true"]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--lock-ttl",
        "99999999999999999999s",
        "--",
        "true",
    ]),
    case(&["run", "--key", "app/k", "--timeout", "0", "--", "true"]),
    case(&["run", "--key", "app/k", "--grace", "later", "--", "true"]),
    case(&["run", "--key", "app/k", "--backoff", "400d", "--", "true"]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--wait-timeout",
        "never",
        "--",
        "true",
    ]),
    case(&["reset", "app/k", "--wait-timeout", "-1s"]),
    // keys and scopes
    case(&["run", "--key", "../etc", "--", "true"]),
    case(&["run", "--key", "app/k", "--scope", "galaxy", "--", "true"]),
    case(&["status", "bad key"]),
    // store URLs (the password never appears)
    case(&["--store", "redis://x", "status"]),
    case(&["--store", "host=db password=PW dbname=app", "status"]),
    case(&["--store", "postgress://app:PW@db/app", "status"]),
    case(&["--store", "postgresql:/app:PW@db/app", "status"]),
    case(&[
        "--store",
        "postgres://app@db/app?password=PW&sslmode=bogus",
        "status",
    ]),
    case(&["--store", "postgres://app:PW@db:notaport/app", "status"]),
    case(&[
        "--store",
        "postgres://app:PW@db/app?schema=Bad-Name",
        "status",
    ]),
    case(&["--store", "postgres://app:PW@db/app?PW=1", "status"]),
    case(&["--store", "kubernetes:Bad_NS", "status"]),
    case(&["--store", "file:", "status"]),
    case(&["--store", "file:state", "--pg-schema", "x", "status"]),
    // store options where no store is used
    case(&["--store", "file:state", "verify", "--", "true"]),
    case(&["verify", "--store", "file:state", "--", "true"]),
    // store errors as the CLI prints them
    case(&["--store", "postgres://app:PW@127.0.0.1:1/app", "status"]),
    // SQL tasks
    case(&[
        "run",
        "--key",
        "app/k",
        "--sql-target",
        "postgres://db/app",
        "--",
        "true",
    ]),
    case(&["run", "--key", "app/k", "--sql-inline", " "]),
    case(&["run", "--key", "app/k", "--sql", "missing.sql"]),
    case(&["run", "--key", "app/k", "--sql", "nul.sql"]),
    case(&[
        "run",
        "--key",
        "app/k",
        "--sql-inline",
        "SELECT 1",
        "--sql-target",
        "postgress://app:PW@db/x",
    ]),
    // a run nested inside a run of the same key
    Case {
        args: &["run", "--key", "app/outer", "--", "true"],
        env: &[
            ("INITGUARD_KEY", "app/outer"),
            ("INITGUARD_FENCING_TOKEN", "4"),
        ],
    },
    // the command itself
    case(&["run", "--key", "app/nf", "--", "./no-such-command"]),
    // missing Downward API variables
    case(&["run", "--key", "app/k", "--scope", "pod", "--", "true"]),
    // steps
    case(&["steps"]),
    case(&["steps", "apply"]),
    case(&["steps", "apply", "no-such-dir"]),
    case(&["steps", "status", "no-such-dir"]),
    case(&["steps", "apply", ".", "--key", "a/../b"]),
    case(&["steps", "apply", ".", "--target", "mysql://db/app"]),
    case(&["steps", "apply", ".", "--target", "postgres:app:PW@db"]),
    case(&["steps", "apply", ".", "--adopt", "liquibase"]),
    case(&["steps", "apply", ".", "--adopt", "flyway"]),
    case(&["steps", "validate", ".", "--json"]),
];

/// Measured durations (" in 1.6s") vary from run to run; the words around them are what is pinned.
fn without_durations(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(" in ") {
        out.push_str(&rest[..at + 4]);
        rest = &rest[at + 4..];
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits > 0 && rest[digits..].starts_with('s') {
            out.push_str("[N]s");
            rest = &rest[digits + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn every_user_facing_error_message_is_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("nul.sql"), "SELECT 1;\nSELECT 'a\0b';\n").unwrap();
    let mut out = String::new();
    for c in CASES {
        let mut cmd = Command::new(bin());
        cmd.current_dir(tmp.path())
            .env("INITGUARD_STORE", "file:state")
            .env("INITGUARD_LOG", "off")
            .env_remove("INITGUARD_KEY")
            .env_remove("INITGUARD_FENCING_TOKEN")
            .env_remove("POD_UID")
            .env_remove("NODE_NAME")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .args(c.args);
        for (k, v) in c.env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let env: Vec<String> = c.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        out.push_str(&format!(
            "$ {}initguard {}\n[{}] {}\n",
            env.concat(),
            c.args
                .iter()
                .map(|a| if a.contains(' ') || a.is_empty() {
                    format!("{a:?}")
                } else {
                    a.to_string()
                })
                .collect::<Vec<_>>()
                .join(" "),
            code(&o),
            without_durations(
                &stderr(&o)
                    .trim_end()
                    .replace(&tmp.path().display().to_string(), "[TMP]")
            )
        ));
    }
    insta::assert_snapshot!(out);
}
