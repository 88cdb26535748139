//! The messages initguard and its supervisor exchange over their socket, one per line. Plain
//! text: both ends are the same binary, and a line is easy to read in an strace.

use std::fmt;
use std::time::Duration;

/// initguard → supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Kill everything once `CLOCK_BOOTTIME` passes this instant, unless a later order moves it.
    Deadline(Duration),
    /// No lease deadline (the file store's lock lives as long as initguard does).
    NoDeadline,
    /// Send this signal to the command's process group.
    Signal(i32),
    /// Kill the command and everything it started, now.
    Kill,
}

/// Supervisor → initguard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The command runs, with this pid (and process group).
    Started(u32),
    /// The command could not be started.
    SpawnFailed(SpawnError),
    /// The lease deadline passed without being extended: everything was killed.
    DeadlinePassed,
    /// The command's own process ended with this code…
    ExitedCode(i32),
    /// …or by this signal.
    ExitedSignal(i32),
    /// Everything the command left behind was killed; `left` processes could not be (not ours to
    /// kill). The supervisor exits after this.
    Clean { left: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    NotFound,
    NotExecutable,
    Other(String),
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::Deadline(at) => writeln!(f, "deadline {}", at.as_nanos()),
            Order::NoDeadline => writeln!(f, "nodeadline"),
            Order::Signal(s) => writeln!(f, "signal {s}"),
            Order::Kill => writeln!(f, "kill"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Started(pid) => writeln!(f, "started {pid}"),
            Report::SpawnFailed(SpawnError::NotFound) => writeln!(f, "spawn-failed notfound"),
            Report::SpawnFailed(SpawnError::NotExecutable) => writeln!(f, "spawn-failed noexec"),
            Report::SpawnFailed(SpawnError::Other(why)) => {
                // One line per message: a newline in an OS error text would split it.
                writeln!(f, "spawn-failed other {}", why.replace('\n', " "))
            }
            Report::DeadlinePassed => writeln!(f, "deadline-passed"),
            Report::ExitedCode(c) => writeln!(f, "exited code {c}"),
            Report::ExitedSignal(s) => writeln!(f, "exited signal {s}"),
            Report::Clean { left } => writeln!(f, "clean {left}"),
        }
    }
}

impl Order {
    pub fn parse(line: &str) -> Option<Order> {
        let (word, rest) = split(line);
        match word {
            "deadline" => rest
                .parse::<u64>()
                .ok()
                .map(|ns| Order::Deadline(Duration::from_nanos(ns))),
            "nodeadline" => Some(Order::NoDeadline),
            "signal" => rest.parse().ok().map(Order::Signal),
            "kill" => Some(Order::Kill),
            _ => None,
        }
    }
}

impl Report {
    pub fn parse(line: &str) -> Option<Report> {
        let (word, rest) = split(line);
        match word {
            "started" => rest.parse().ok().map(Report::Started),
            "spawn-failed" => Some(Report::SpawnFailed(match split(rest) {
                ("notfound", _) => SpawnError::NotFound,
                ("noexec", _) => SpawnError::NotExecutable,
                (_, why) => SpawnError::Other(why.to_string()),
            })),
            "deadline-passed" => Some(Report::DeadlinePassed),
            "exited" => match split(rest) {
                ("code", c) => c.parse().ok().map(Report::ExitedCode),
                ("signal", s) => s.parse().ok().map(Report::ExitedSignal),
                _ => None,
            },
            "clean" => rest.parse().ok().map(|left| Report::Clean { left }),
            _ => None,
        }
    }
}

fn split(line: &str) -> (&str, &str) {
    let line = line.trim_end_matches('\n');
    line.split_once(' ').unwrap_or((line, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let orders = [
            Order::Deadline(Duration::from_nanos(123_456_789_012)),
            Order::NoDeadline,
            Order::Signal(15),
            Order::Kill,
        ];
        for o in orders {
            assert_eq!(Order::parse(&o.to_string()), Some(o.clone()), "{o:?}");
        }
        let reports = [
            Report::Started(42),
            Report::SpawnFailed(SpawnError::NotFound),
            Report::SpawnFailed(SpawnError::NotExecutable),
            Report::SpawnFailed(SpawnError::Other("no memory".into())),
            Report::DeadlinePassed,
            Report::ExitedCode(3),
            Report::ExitedSignal(9),
            Report::Clean { left: 0 },
        ];
        for r in reports {
            assert_eq!(Report::parse(&r.to_string()), Some(r.clone()), "{r:?}");
        }
    }

    #[test]
    fn garbage_is_no_message() {
        for line in [
            "",
            "deadline x",
            "signal",
            "exited code",
            "exited maybe 3",
            "hello",
        ] {
            assert_eq!(Order::parse(line), None, "{line}");
        }
        assert_eq!(Report::parse("exited code x"), None);
    }
}
