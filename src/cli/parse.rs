//! Arguments to `Cli`: clap, then one merge clap cannot do itself. The store options are taken
//! before the subcommand and after it (they are not `global`, so that subcommands without a store
//! neither list nor accept them); here the two places become one `Cli::store`. No I/O.

use super::args::{Cli, Command, STORE_ARG_IDS, StepsCommand, StoreArgs};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::ffi::OsString;

/// Parse `args` (the program name first). `Cli::store` holds, per option, the value given after
/// the subcommand if there is one, else the one before it, else the variable's: the option
/// nearest the subcommand wins, and any option on the command line beats a variable.
pub fn parse(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Cli, clap::Error> {
    let mut matches = Cli::command().try_get_matches_from(args)?;
    // Read where the values came from before `from_arg_matches_mut` takes them out: at the top,
    // then at each subcommand down to the innermost (`steps`, then `steps apply`).
    let before: Vec<&str> = given(&matches);
    let mut levels: Vec<Vec<&str>> = Vec::new();
    let mut level = matches.subcommand().map(|(_, sub)| sub);
    while let Some(m) = level {
        levels.push(given(m));
        level = m.subcommand().map(|(_, sub)| sub);
    }
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    let below = store_args_of(&mut cli.command);
    if below.is_empty()
        && let Some(id) = before.first()
    {
        return Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "--{} only applies to subcommands that use a store (run, wait, status, \
                 history, reset, release, steps)\n",
                id.replace('_', "-")
            ),
        ));
    }
    // Outermost first: each level's options override those above it.
    let mut store = std::mem::take(&mut cli.store);
    for (sub, given_here) in below.into_iter().zip(&levels) {
        store = merge(store, std::mem::take(sub), |id| given_here.contains(&id));
    }
    cli.store = store;
    Ok(cli)
}

/// The store options given on the command line at this level.
fn given(m: &ArgMatches) -> Vec<&'static str> {
    STORE_ARG_IDS
        .into_iter()
        // `value_source` of an id this level does not define is a bug to clap (it asserts), so
        // only ids it has are asked.
        .filter(|id| m.ids().any(|have| have == id))
        .filter(|id| m.value_source(id) == Some(ValueSource::CommandLine))
        .collect()
}

/// The store options of each subcommand level that takes them, outermost first (`steps`, then
/// `steps apply`); empty for a subcommand that uses no store. Every level below the top that
/// takes them is listed, so that the levels line up with `parse`'s.
fn store_args_of(command: &mut Command) -> Vec<&mut StoreArgs> {
    match command {
        Command::Run(a) => vec![&mut a.store],
        Command::Wait(a) => vec![&mut a.store],
        Command::Status(a) => vec![&mut a.store],
        Command::History(a) => vec![&mut a.store],
        Command::Reset(a) => vec![&mut a.store],
        Command::Release(a) => vec![&mut a.store],
        Command::Steps(steps) => {
            let inner = match &mut steps.command {
                StepsCommand::Apply(a) => &mut a.set.store,
                StepsCommand::Status(a) => &mut a.set.store,
                StepsCommand::Validate(a) => &mut a.set.store,
                StepsCommand::Repair(a) => &mut a.set.store,
            };
            vec![&mut steps.store, inner]
        }
        Command::Verify(_) | Command::Install(_) => Vec::new(),
        #[cfg(feature = "kubernetes")]
        Command::K8s(_) => Vec::new(),
    }
}

/// Per option: `after` where it was given after the subcommand, else `before` (which holds the
/// option given before the subcommand, or the variable, or nothing).
fn merge(before: StoreArgs, after: StoreArgs, given_after: impl Fn(&str) -> bool) -> StoreArgs {
    fn pick<T>(
        id: &str,
        before: Option<T>,
        after: Option<T>,
        given_after: &impl Fn(&str) -> bool,
    ) -> Option<T> {
        if given_after(id) { after } else { before }
    }
    StoreArgs {
        store: pick("store", before.store, after.store, &given_after),
        store_password_file: pick(
            "store_password_file",
            before.store_password_file,
            after.store_password_file,
            &given_after,
        ),
        pg_schema: pick("pg_schema", before.pg_schema, after.pg_schema, &given_after),
        kube_context: pick(
            "kube_context",
            before.kube_context,
            after.kube_context,
            &given_after,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(args: &[&str]) -> StoreArgs {
        parse(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .store
    }

    #[test]
    fn store_options_are_taken_before_and_after_the_subcommand() {
        let s = store_of(&["initguard", "--store", "file:a", "status"]);
        assert_eq!(s.store.as_deref(), Some("file:a"));
        let s = store_of(&["initguard", "status", "--store", "file:b"]);
        assert_eq!(s.store.as_deref(), Some("file:b"));
        // After the subcommand wins, option by option.
        let s = store_of(&[
            "initguard",
            "--store",
            "file:a",
            "--pg-schema",
            "one",
            "history",
            "k",
            "--store",
            "file:b",
        ]);
        assert_eq!(s.store.as_deref(), Some("file:b"));
        assert_eq!(s.pg_schema.as_deref(), Some("one"));
        let s = store_of(&[
            "initguard",
            "run",
            "--key",
            "k",
            "--kube-context",
            "kind",
            "--store-password-file",
            "/pw",
            "--",
            "true",
        ]);
        assert_eq!(s.kube_context.as_deref(), Some("kind"));
        assert_eq!(
            s.store_password_file.as_deref(),
            Some(std::path::Path::new("/pw"))
        );
    }

    #[test]
    fn steps_takes_the_store_options_at_each_of_its_three_places() {
        let dir = "migrations";
        for (line, want) in [
            ("initguard --store file:a steps status DIR", "file:a"),
            ("initguard steps --store file:b apply DIR", "file:b"),
            ("initguard steps repair DIR --store file:c", "file:c"),
            // The place nearest the subcommand wins.
            (
                "initguard --store file:a steps --store file:b validate DIR",
                "file:b",
            ),
            (
                "initguard --store file:a steps --store file:b status DIR --store file:c",
                "file:c",
            ),
        ] {
            let args: Vec<&str> = line
                .split(' ')
                .map(|w| if w == "DIR" { dir } else { w })
                .collect();
            assert_eq!(store_of(&args).store.as_deref(), Some(want), "{args:?}");
        }
        // Option by option: one from each place.
        let s = store_of(&[
            "initguard",
            "--pg-schema",
            "top",
            "steps",
            "--kube-context",
            "mid",
            "status",
            dir,
            "--store",
            "file:leaf",
        ]);
        assert_eq!(s.pg_schema.as_deref(), Some("top"));
        assert_eq!(s.kube_context.as_deref(), Some("mid"));
        assert_eq!(s.store.as_deref(), Some("file:leaf"));
    }

    #[test]
    fn store_options_are_refused_where_no_store_is_used() {
        for args in [
            &["initguard", "--store", "file:a", "verify", "--", "true"][..],
            #[cfg(feature = "kubernetes")]
            &["initguard", "--pg-schema", "x", "k8s", "rbac"][..],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
        #[cfg(feature = "kubernetes")]
        {
            let e = parse(["initguard", "k8s", "rbac", "--store", "file:a"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        }
    }

    #[test]
    fn merge_takes_each_option_from_where_it_was_given() {
        let before = StoreArgs {
            store: Some("file:a".into()),
            pg_schema: Some("s".into()),
            ..StoreArgs::default()
        };
        let after = StoreArgs {
            // As clap fills it from the variable, even where the option was given before.
            store: Some("file:env".into()),
            kube_context: Some("ctx".into()),
            ..StoreArgs::default()
        };
        let m = merge(before, after, |id| id == "kube_context");
        assert_eq!(m.store.as_deref(), Some("file:a"));
        assert_eq!(m.pg_schema.as_deref(), Some("s"));
        assert_eq!(m.kube_context.as_deref(), Some("ctx"));
        assert_eq!(m.store_password_file, None);
    }

    /// Every positional argument of every subcommand says what it is in --help.
    #[test]
    fn every_positional_argument_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_positionals() {
                if arg
                    .get_help()
                    .is_none_or(|h| h.to_string().trim().is_empty())
                {
                    missing.push(format!("{path} <{}>", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "initguard", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    /// Only the subcommands that open a store list the store options; every one lists
    /// --log-format under the global heading.
    #[test]
    fn store_options_belong_to_the_subcommands_that_use_a_store() {
        let mut cli = Cli::command();
        cli.build();
        let with_store = [
            "run",
            "wait",
            "status",
            "history",
            "reset",
            "release",
            "steps",
            "steps apply",
            "steps status",
            "steps validate",
            "steps repair",
        ];
        let mut seen = Vec::new();
        fn each<'a>(
            cmd: &'a clap::Command,
            out: &mut Vec<(String, &'a clap::Command)>,
            path: String,
        ) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let p = format!("{path} {}", sub.get_name()).trim().to_string();
                out.push((p.clone(), sub));
                each(sub, out, p);
            }
        }
        each(&cli, &mut seen, String::new());
        for (path, cmd) in seen {
            let has = |id: &str| cmd.get_arguments().any(|a| a.get_id() == id);
            let leaf = cmd.get_subcommands().next().is_none();
            for id in STORE_ARG_IDS {
                assert_eq!(has(id), with_store.contains(&path.as_str()), "{path}: {id}");
            }
            if leaf {
                let log = cmd
                    .get_arguments()
                    .find(|a| a.get_id() == "log_format")
                    .unwrap_or_else(|| panic!("{path}: no --log-format"));
                assert_eq!(
                    log.get_help_heading(),
                    Some(super::super::args::GLOBAL_HEADING)
                );
            }
        }
    }
}
