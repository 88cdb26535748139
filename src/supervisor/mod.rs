//! The supervisor: initguard re-executed in a helper mode (`initguard __supervise …`) between
//! initguard and the command. It is a child subreaper and the parent of the command's process
//! group, and it kills the command's whole tree (group members, `setsid` escapees, daemons,
//! processes that changed their credentials):
//! - when initguard goes away: its end of the control socket reaches EOF, or the parent-death
//!   signal (SIGUSR1) arrives as a second line;
//! - when the lease deadline that initguard extends after every successful renewal passes, even
//!   if initguard itself is stopped or stuck (timed on `CLOCK_BOOTTIME`, see `clock.rs`);
//! - when initguard orders it (lease lost, `--grace` over);
//! - after the command exits, before initguard records the outcome and releases the lease.
//!
//! It is deliberately synchronous (poll on the socket and a signalfd): nothing in it may depend
//! on an event loop that could wedge.

// `unsafe` for two things with no safe API: taking ownership of the control socket, whose number
// initguard passes on the command line, and `pre_exec` to set the command's own parent-death
// signal and reset its signal state between fork and exec (async-signal-safe calls only).
#![allow(unsafe_code)]

pub mod control;
mod tree;

use crate::clock::boot_now;
use control::{Order, Report, SpawnError};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

/// The first argument that makes `initguard` a supervisor.
pub const ARG: &str = "__supervise";

/// How long killing a tree may take before the supervisor reports what it could not kill.
const KILL_LIMIT: Duration = Duration::from_secs(5);
/// Longest poll: the deadline is re-checked at least this often, so that a suspend (during which
/// the monotonic poll timeout does not count) is noticed within this much after resuming.
const TICK: Duration = Duration::from_millis(100);

/// The supervisor's command line: `ARG <control fd> <deadline ns|none> <held fd|none> --
/// <argv…>`.
pub fn args(control_fd: i32, deadline: Option<Duration>, hold: Option<i32>) -> Vec<String> {
    vec![
        ARG.to_string(),
        control_fd.to_string(),
        deadline.map_or("none".into(), |d| d.as_nanos().to_string()),
        hold.map_or("none".into(), |fd| fd.to_string()),
        "--".into(),
    ]
}

/// Entry point of `initguard __supervise …`; `args` are those after `ARG`. Exits 0 after
/// reporting, 70 when started wrongly (by hand).
pub fn main(args: &[OsString]) -> ExitCode {
    let parsed = (|| {
        let fd: i32 = args.first()?.to_str()?.parse().ok()?;
        let deadline = match args.get(1)?.to_str()? {
            "none" => None,
            ns => Some(Duration::from_nanos(ns.parse().ok()?)),
        };
        let hold = match args.get(2)?.to_str()? {
            "none" => None,
            fd => Some(fd.parse::<i32>().ok()?),
        };
        (args.get(3)?.to_str()? == "--" && args.len() > 4).then_some((fd, deadline, hold))
    })();
    let Some((fd, deadline, hold)) = parsed else {
        let _ = writeln!(
            std::io::stderr(),
            "initguard: {ARG} is initguard's own helper mode, not a command to run by hand"
        );
        return ExitCode::from(70);
    };
    if !is_open(fd) {
        let _ = writeln!(std::io::stderr(), "initguard: {ARG}: no control socket");
        return ExitCode::from(70);
    }
    // SAFETY: initguard opened this socket for us and passed its number; nothing else in this
    // process owns it, and it was checked open above.
    let socket = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // Held, never used, until this process exits: dropped last, after the tree is dead.
    let _held = hold.filter(|&h| is_open(h) && h != fd).map(|h| {
        // SAFETY: as for the socket: passed to us by initguard, open, and owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(h) };
        // The command must not inherit the lock: it would hold it past its supervisor.
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        owned
    });
    match Supervisor::start(socket, deadline, &args[4..]) {
        Ok(mut s) => {
            s.run();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "initguard: supervisor: {e}");
            ExitCode::from(70)
        }
    }
}

/// Whether `fd` is an open descriptor past stdin, stdout and stderr.
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads a descriptor's flags; any number may be asked about.
    fd > 2 && unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } >= 0
}

struct Supervisor {
    socket: UnixStream,
    signals: SignalFd,
    deadline: Option<Duration>,
    me: Pid,
    /// The command (and its process group), once started.
    command: Option<Pid>,
    inbox: Vec<u8>,
}

enum Step {
    Continue,
    /// initguard is gone: kill everything and exit without reporting.
    Orphaned,
}

impl Supervisor {
    fn start(
        socket: UnixStream,
        deadline: Option<Duration>,
        argv: &[OsString],
    ) -> std::io::Result<Supervisor> {
        nix::sys::prctl::set_child_subreaper(true)?;
        // Signals are read from a signalfd, never delivered: SIGTERM and friends sent to the
        // supervisor are initguard's to forward; SIGUSR1 is our parent-death signal. The command
        // gets an empty mask: std resets it between fork and exec.
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGUSR1,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
        ] {
            mask.add(s);
        }
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // The command must not inherit the socket: initguard would then never see it close.
        nix::fcntl::fcntl(
            &socket,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        let mut s = Supervisor {
            socket,
            signals,
            deadline,
            me: Pid::this(),
            command: None,
            inbox: Vec::new(),
        };
        match spawn(argv, s.me) {
            Ok(pid) => {
                s.command = Some(pid);
                s.report(&Report::Started(pid.as_raw().unsigned_abs()));
            }
            Err(e) => s.report(&Report::SpawnFailed(e)),
        }
        Ok(s)
    }

    fn report(&mut self, r: &Report) {
        // initguard gone: nothing to tell, and the socket's EOF ends the loop.
        let _ = self.socket.write_all(r.to_string().as_bytes());
    }

    fn run(&mut self) {
        let Some(command) = self.command else {
            self.report(&Report::Clean { left: 0 });
            return;
        };
        let status = loop {
            let now = boot_now();
            if let Some(at) = self.deadline
                && now >= at
            {
                self.deadline = None;
                self.report(&Report::DeadlinePassed);
                if let (_, Some(st)) = tree::kill_all(self.me, Some(command), KILL_LIMIT) {
                    break st;
                }
            }
            let wait = self
                .deadline
                .map_or(TICK * 10, |at| at.saturating_sub(now).min(TICK));
            let (socket_ready, signals_ready) = {
                let mut fds = [
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                if poll(&mut fds, PollTimeout::from(ms)).is_err() {
                    // EINTR: look again.
                    continue;
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if socket_ready {
                match self.read_orders(command) {
                    Ok(Some(st)) => break st,
                    Ok(None) => {}
                    Err(Step::Orphaned) => return self.orphaned(command),
                    Err(Step::Continue) => {}
                }
            }
            if signals_ready {
                let mut chld = false;
                while let Ok(Some(info)) = self.signals.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => chld = true,
                        Ok(Signal::SIGUSR1) => return self.orphaned(command),
                        _ => {}
                    }
                }
                if chld && let (Some(st), _) = tree::reap(Some(command)) {
                    break st;
                }
            }
        };
        self.report(&match status {
            WaitStatus::Signaled(_, sig, _) => Report::ExitedSignal(sig as i32),
            WaitStatus::Exited(_, code) => Report::ExitedCode(code),
            _ => Report::ExitedCode(1),
        });
        // Whatever the command left running must not outlive the lease it ran under.
        let (left, _) = tree::kill_all(self.me, None, KILL_LIMIT);
        self.report(&Report::Clean { left });
    }

    /// Read and carry out what initguard sent. `Ok(Some)`: the command's status, when killing
    /// reaped it.
    fn read_orders(&mut self, command: Pid) -> Result<Option<WaitStatus>, Step> {
        let mut buf = [0u8; 512];
        let n = match self.socket.read(&mut buf) {
            Ok(0) => return Err(Step::Orphaned),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(Step::Continue),
            Err(_) => return Err(Step::Orphaned),
        };
        self.inbox.extend_from_slice(&buf[..n]);
        let mut status = None;
        while let Some(end) = self.inbox.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbox.drain(..=end).collect();
            let Some(order) = std::str::from_utf8(&line).ok().and_then(Order::parse) else {
                continue;
            };
            match order {
                Order::Deadline(at) => self.deadline = Some(at),
                Order::NoDeadline => self.deadline = None,
                Order::Signal(sig) => {
                    if status.is_none()
                        && let Ok(sig) = Signal::try_from(sig)
                    {
                        let _ = killpg(command, sig);
                    }
                }
                Order::Kill => {
                    let (_, st) = tree::kill_all(self.me, Some(command), KILL_LIMIT);
                    status = status.or(st);
                }
            }
        }
        Ok(status)
    }

    fn orphaned(&mut self, _command: Pid) {
        tree::kill_all(self.me, None, KILL_LIMIT);
    }
}

/// Start the command in a process group of its own, below us.
fn spawn(argv: &[OsString], me: Pid) -> Result<Pid, SpawnError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(SpawnError::Other("empty command".into()));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).process_group(0);
    // SAFETY: runs in the forked child before exec; prctl, sigprocmask, signal and getppid are
    // async-signal-safe, no handler is installed (only the default), and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            // A second line behind the subreaper's kill: cleared by a credential change, but
            // it covers a supervisor killed with SIGKILL while the command keeps its identity.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The command starts as if from a plain shell: no signal blocked (the supervisor
            // blocks its own, and a mask is inherited across exec), SIGPIPE not ignored (Rust
            // ignores it in its own processes).
            SigSet::empty().thread_set_mask()?;
            nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)?;
            if nix::unistd::getppid() != me {
                return Err(std::io::Error::other("the supervisor exited first"));
            }
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => Ok(Pid::from_raw(child.id() as i32)),
        Err(e) => Err(spawn_error(&e)),
    }
}

fn spawn_error(e: &std::io::Error) -> SpawnError {
    match e.kind() {
        std::io::ErrorKind::NotFound => SpawnError::NotFound,
        std::io::ErrorKind::PermissionDenied => SpawnError::NotExecutable,
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => SpawnError::NotExecutable,
        _ => SpawnError::Other(e.to_string()),
    }
}
