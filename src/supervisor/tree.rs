//! Finding and killing every process below the supervisor. The supervisor is a child subreaper,
//! so whatever the command starts stays below it: processes that call `setsid`, daemons that
//! double-fork (their orphans are reparented to the supervisor), and processes that changed
//! their credentials (the supervisor runs with initguard's, root in a typical init container).
//!
//! Parent links are read from `/proc/<pid>/stat` by hand: one field of one file, where a crate
//! (procfs) would bring a whole parser and its dependencies for it.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The parent pid in the text of `/proc/<pid>/stat`: the field after the state, which follows
/// the command name in parentheses (that name may itself hold spaces and parentheses).
fn parent_of(stat: &str) -> Option<i32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every live process below `root`, nearest first.
pub fn descendants(root: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may end between listing and reading: it is then nobody's to kill.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = parent_of(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root.as_raw()];
    while let Some(p) = next.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            found.push(Pid::from_raw(c));
            next.push(c);
        }
    }
    found
}

/// Reap every child that has ended; returns the status of `watched` if it was among them, and
/// whether any child is left at all.
pub fn reap(watched: Option<Pid>) -> (Option<WaitStatus>, bool) {
    let mut seen = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return (seen, true),
            Ok(status) => {
                if status.pid() == watched {
                    seen = Some(status);
                }
            }
            Err(Errno::EINTR) => continue,
            // ECHILD: nobody is left below us.
            Err(_) => return (seen, false),
        }
    }
}

/// SIGKILL everything below `root` until nothing is left or `limit` has passed. Processes that
/// fork while being killed are found on the next round. Returns how many could not be killed
/// (another user's setuid process when initguard is not root), and the status of `watched` if it
/// was reaped here.
pub fn kill_all(root: Pid, watched: Option<Pid>, limit: Duration) -> (usize, Option<WaitStatus>) {
    let started = Instant::now();
    let mut status = None;
    loop {
        let below = descendants(root);
        let mut refused = 0;
        for p in &below {
            if let Err(Errno::EPERM) = kill(*p, Signal::SIGKILL) {
                refused += 1;
            }
        }
        let (reaped, any_left) = reap(watched);
        status = status.or(reaped);
        if !any_left && below.is_empty() {
            return (0, status);
        }
        if started.elapsed() >= limit {
            return (refused.max(usize::from(any_left)), status);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_is_read_past_a_command_name_with_parentheses() {
        assert_eq!(parent_of("123 (a) b (c)) S 77 123 123 0"), Some(77));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
        assert_eq!(parent_of("1 (x)"), None);
    }

    #[test]
    fn our_own_children_are_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = Pid::this();
        let found = descendants(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found.contains(&Pid::from_raw(child.id() as i32)),
            "{found:?}"
        );
    }
}
