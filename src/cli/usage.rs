//! clap's errors as one line: what is wrong and where to read what is expected. clap renders a
//! usage error as a block (error, tip, usage, "for more information"); operators read
//! `kubectl logs`, where one line per failure is the rule. Pure formatting.

use clap::error::ErrorKind;

/// The line printed after "initguard: " for a clap error that is a usage error. `args` are the
/// arguments given, to name the subcommand when clap's text does not.
pub fn one_line(e: &clap::Error, args: &[String]) -> String {
    let text = e.render().to_string();
    let usage = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))
        .map(command_path)
        .unwrap_or_else(|| subcommand_given(args));
    // A group (`initguard steps`) given only options (`--store URL`, or a store variable) has clap
    // report a missing subcommand instead, with the list in brackets: worded as above.
    if e.kind() == ErrorKind::MissingSubcommand
        && usage.contains(' ')
        && let Some(list) = text
            .split_once("[subcommands: ")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
    {
        let commands: Vec<&str> = list.split(", ").filter(|c| *c != "help").collect();
        return format!(
            "{usage} needs a subcommand, one of: {}; see '{usage} --help'",
            commands.join(", ")
        );
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let commands = subcommands(&text);
        return if commands.is_empty() {
            format!("{usage} needs more arguments; see '{usage} --help'")
        } else {
            format!(
                "{usage} needs a subcommand, one of: {}; see '{usage} --help'",
                commands.join(", ")
            )
        };
    }
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("error:").map(str::trim).unwrap_or(line);
        match line.strip_prefix("tip:").map(str::trim) {
            // "to pass '-x' as a value, use '-- -x'": wrong for initguard, where `--` starts the
            // command; options that take values accept a leading '-' already.
            Some(tip) if tip.starts_with("to pass") => {}
            Some(tip) => parts.push(format!("({tip})")),
            None => parts.push(line.to_string()),
        }
    }
    let what = parts.join(" ");
    let what = what.trim_end_matches(':');
    format!("{what}; see '{usage} --help'")
}

/// "initguard run" when `run` is among the arguments before `--`, else "initguard".
fn subcommand_given(args: &[String]) -> String {
    use clap::CommandFactory;
    let cli = super::args::Cli::command();
    let mut path = vec!["initguard".to_string()];
    let mut cmd = &cli;
    for a in args.iter().take_while(|a| *a != "--") {
        if let Some(sub) = cmd.find_subcommand(a) {
            path.push(a.clone());
            cmd = sub;
        }
    }
    path.join(" ")
}

/// "initguard run [OPTIONS] --key <KEY> …" → "initguard run".
fn command_path(usage: &str) -> String {
    usage
        .split_whitespace()
        .take_while(|w| !w.starts_with(['[', '<', '-']))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The names listed under "Commands:" in a help text, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::args::Cli;
    use super::*;
    use clap::Parser;

    fn line(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).unwrap_err();
        let given: Vec<String> = args.iter().skip(1).map(|a| a.to_string()).collect();
        one_line(&e, &given)
    }

    #[test]
    fn clap_errors_become_one_line_naming_the_subcommand_help() {
        let l = line(&["initguard", "run", "--key", "k", "--bogus", "--", "true"]);
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.contains("--bogus") && l.ends_with("see 'initguard run --help'"),
            "{l}"
        );
        let l = line(&["initguard"]);
        assert!(!l.contains('\n') && l.contains("run, wait, status"), "{l}");
        let l = line(&["initguard", "run", "--", "true"]);
        assert!(l.contains("--key"), "{l}");
        let l = line(&[
            "initguard",
            "run",
            "--key",
            "k",
            "--retries",
            "-1",
            "--",
            "true",
        ]);
        assert!(
            l.contains("0..=1000") && l.ends_with("'initguard run --help'"),
            "{l}"
        );
    }
}
