//! What `--help` shows, and where the store options are taken: under their own heading, only on
//! the subcommands that open a store, before or after the subcommand, and from their variables.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::bin;

fn ig(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args)
        .env_remove("INITGUARD_STORE")
        .env_remove("INITGUARD_STORE_PASSWORD_FILE")
        .env_remove("INITGUARD_PG_SCHEMA")
        .env_remove("INITGUARD_KUBE_CONTEXT")
        .env_remove("INITGUARD_KEY")
        .env_remove("INITGUARD_FENCING_TOKEN")
        .env("INITGUARD_LOG", "warn")
        .stdin(Stdio::null());
    c
}

fn help(args: &[&str]) -> String {
    let out = ig(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The option names listed under `heading` ("Options", "Store options", …) in a help text.
fn section(help: &str, heading: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != format!("{heading}:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(',').to_string())
        .collect()
}

const STORE_OPTIONS: [&str; 4] = [
    "--store",
    "--store-password-file",
    "--pg-schema",
    "--kube-context",
];

#[test]
fn run_help_shows_store_and_global_options_under_their_own_headings() {
    let text = help(&["run"]);
    assert_eq!(section(&text, "Store options"), STORE_OPTIONS, "{text}");
    assert_eq!(section(&text, "Global options"), ["--log-format"], "{text}");
    let own = section(&text, "Options");
    assert!(own.contains(&"--key".to_string()), "{text}");
    for shared in STORE_OPTIONS.iter().chain(&["--log-format"]) {
        assert!(
            !own.contains(&shared.to_string()),
            "{shared} under Options: {text}"
        );
    }
    // A URL in the variable may carry a password: its value is never shown.
    let out = ig(&["run", "--help"])
        .env("INITGUARD_STORE", "postgres://app:hunter2@db/app")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[env: INITGUARD_STORE]"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn subcommands_without_a_store_list_no_store_options() {
    let mut without: Vec<Vec<&str>> = vec![vec!["verify"]];
    if cfg!(feature = "kubernetes") {
        without.push(vec!["k8s", "rbac"]);
    }
    for args in without {
        let text = help(&args);
        for flag in STORE_OPTIONS {
            assert!(!text.contains(flag), "{args:?} --help lists {flag}: {text}");
        }
        assert!(!text.contains("Store options"), "{args:?}: {text}");
        assert_eq!(section(&text, "Global options"), ["--log-format"], "{text}");
    }
    for args in [["status"], ["history"], ["reset"], ["release"]] {
        assert_eq!(
            section(&help(&args), "Store options"),
            STORE_OPTIONS,
            "{args:?}"
        );
    }
}

#[test]
fn every_key_argument_is_described() {
    for sub in ["status", "history", "reset", "release"] {
        let text = help(&[sub]);
        let line = text
            .lines()
            .skip_while(|l| *l != "Arguments:")
            .nth(1)
            .unwrap_or_else(|| panic!("{sub}: no Arguments section: {text}"));
        let described = line
            .trim()
            .strip_prefix("<KEY>")
            .or_else(|| line.trim().strip_prefix("[KEY]"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{sub}: {line}"));
        assert!(described.contains("task"), "{sub}: {line}");
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One done task in each of two file stores, to tell which one a command read.
fn two_stores(dir: &Path) -> (String, String) {
    let a = format!("file:{}", dir.join("a").display());
    let b = format!("file:{}", dir.join("b").display());
    for (url, key) in [(&a, "in/a"), (&b, "in/b")] {
        let out = ig(&["run", "--store", url, "--key", key, "--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    (a, b)
}

fn keys_listed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    match (text.contains("in/a"), text.contains("in/b")) {
        (true, false) => "a".into(),
        (false, true) => "b".into(),
        other => panic!("{other:?}: {text}"),
    }
}

#[test]
fn store_options_work_before_and_after_the_subcommand_and_from_the_variable() {
    let td = tempfile::tempdir().unwrap();
    let (a, b) = two_stores(td.path());
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (&["status", "--json"], Some(&a), "a"),
        (&["--store", &b, "status", "--json"], None, "b"),
        (&["status", "--json", "--store", &b], None, "b"),
        // The command line beats the variable, wherever the option is.
        (&["--store", &b, "status", "--json"], Some(&a), "b"),
        (&["status", "--json", "--store", &b], Some(&a), "b"),
    ];
    for (args, env, want) in cases {
        let mut cmd = ig(args);
        if let Some(url) = env {
            cmd.env("INITGUARD_STORE", url);
        }
        assert_eq!(
            keys_listed(&mut cmd),
            want,
            "{args:?} with INITGUARD_STORE={env:?}"
        );
    }
    // After the subcommand beats before it.
    assert_eq!(
        keys_listed(&mut ig(&["--store", &a, "status", "--json", "--store", &b])),
        "b"
    );
    // The variable reaches every subcommand that opens a store.
    let out = ig(&["history", "in/a"])
        .env("INITGUARD_STORE", &a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("succeeded"),
        "{out:?}"
    );
    let out = ig(&["reset", "in/a"])
        .env("INITGUARD_STORE", &a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = ig(&["release", "in/a"])
        .env("INITGUARD_STORE", &a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // reset forgot in/a in store a, so a run there runs again (and leaves a marker).
    let marker = td.path().join("ran");
    let out = ig(&[
        "run",
        "--key",
        "in/a",
        "--",
        "touch",
        marker.to_str().unwrap(),
    ])
    .env("INITGUARD_STORE", &a)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(marker.exists(), "run did not use INITGUARD_STORE");
}

#[test]
fn store_options_where_no_store_is_used_are_a_one_line_usage_error() {
    let td = tempfile::tempdir().unwrap();
    let url = format!("file:{}", td.path().join("s").display());
    let mut cases = vec![vec!["--store", url.as_str(), "verify", "--", "true"]];
    if cfg!(feature = "kubernetes") {
        cases.push(vec!["--store", url.as_str(), "k8s", "rbac"]);
        cases.push(vec!["k8s", "rbac", "--store", url.as_str()]);
    }
    for args in cases {
        let out = ig(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--store"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
    // The variable is no error there: it is for the subcommands that use it.
    if cfg!(feature = "kubernetes") {
        let out = ig(&["k8s", "rbac"])
            .env("INITGUARD_STORE", &url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// Each option's `[default: …]` in a help text, by flag.
fn help_defaults(help: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut flag = None;
    for line in help.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(f) = words
            .iter()
            .find(|w| w.starts_with("--"))
            .filter(|_| words.first().is_some_and(|w| w.starts_with('-')))
        {
            flag = Some(f.trim_end_matches(',').to_string());
        }
        if let (Some(f), Some(at)) = (&flag, line.find("[default: ")) {
            let rest = &line[at + "[default: ".len()..];
            if let Some(end) = rest.find(']') {
                out.insert(f.clone(), rest[..end].to_string());
            }
        }
    }
    out
}

/// README's option tables state the defaults `--help` shows (the values the parser applies):
/// the first against `run`, the one under "Migrations" against `steps apply` (its row "as for
/// `run`" too), and the `--wait-timeout` defaults of `reset` and `steps repair` README gives in
/// words. A changed default cannot leave README behind.
#[test]
fn the_readme_option_tables_state_the_defaults_help_shows() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (options, steps) = readme
        .split_once("## Migrations")
        .expect("README has a Migrations section");
    let run = help_defaults(&help(&["run"]));
    let apply = help_defaults(&help(&["steps", "apply"]));
    let mut compared = Vec::new();
    for (text, shown, of) in [(options, &run, "run"), (steps, &apply, "steps apply")] {
        for row in text.lines().filter(|l| l.starts_with("| `--")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let flags: Vec<&str> = cells[0].trim_start_matches("| ").split(" / ").collect();
            let defaults: Vec<&str> = cells[1].split(" / ").collect();
            if cells[1].starts_with("as for `run`") {
                for flag in cells[0].trim_start_matches("| ").split(", ") {
                    let flag = flag.trim_matches('`');
                    assert_eq!(
                        shown.get(flag),
                        run.get(flag),
                        "{flag}: {of} and run differ"
                    );
                    assert!(
                        shown.contains_key(flag),
                        "{of} --help shows no default for {flag}"
                    );
                    compared.push(format!("{of} {flag}"));
                }
                continue;
            }
            for (i, f) in flags.iter().enumerate() {
                let name = f.trim_matches('`').split_whitespace().next().unwrap_or("");
                let Some(expected) = shown.get(name) else {
                    continue;
                };
                let stated = defaults.get(i).copied().unwrap_or(defaults[0]);
                assert!(
                    stated.starts_with(&format!("`{expected}`")),
                    "README says {name} of {of} defaults to {stated}, --help says {expected}"
                );
                compared.push(format!("{of} {name}"));
            }
        }
    }
    for flag in [
        "run --scope",
        "run --lock-ttl",
        "run --wait-timeout",
        "run --retries",
        "run --backoff",
        "run --grace",
        "steps apply --on-interrupted",
        "steps apply --wait-timeout",
    ] {
        assert!(
            compared.contains(&flag.to_string()),
            "{flag} not in README's tables: {compared:?}"
        );
    }
    for (args, words) in [
        (&["reset"][..], "The same for `reset` (default `{}`)"),
        (
            &["steps", "repair"][..],
            "`steps repair`'s `--wait-timeout`: `{}`",
        ),
    ] {
        let shown = help_defaults(&help(args));
        let expected = shown
            .get("--wait-timeout")
            .expect("a --wait-timeout default");
        let sentence = words.replace("{}", expected);
        assert!(
            readme.contains(&sentence),
            "{args:?} --help says --wait-timeout defaults to {expected}"
        );
    }
}
