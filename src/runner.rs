//! The child process, run under the supervisor (`supervisor/`): its output passed through byte
//! for byte with a bounded tail kept, signals forwarded, timeout and grace enforced, the lease
//! deadline handed on. Knows nothing of stores or records.

// `unsafe` is needed for one thing only: `pre_exec`, to set the supervisor's parent-death signal
// and let it inherit its control socket, between fork and exec (no safe API exists for either;
// the closure calls async-signal-safe prctl, getppid and fcntl only).
#![allow(unsafe_code)]

use crate::supervisor::{self, control::Order, control::Report, control::SpawnError};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// How long to keep draining the child's pipes after it exited (a background grandchild may keep
/// them open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The signals initguard forwards to the child. Created once, early, so that from then on a
/// SIGTERM never kills initguard before it has recorded what happened. SIGHUP and SIGQUIT mean
/// "stop" as much as SIGTERM does (a closed terminal, a core-dump request): all four end a run
/// as interrupted.
pub struct Signals {
    term: SignalStream,
    int: SignalStream,
    hup: SignalStream,
    quit: SignalStream,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next stop signal, as its number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM as i32,
            _ = self.int.recv() => Signal::SIGINT as i32,
            _ = self.hup.recv() => Signal::SIGHUP as i32,
            _ = self.quit.recv() => Signal::SIGQUIT as i32,
        }
    }
}

/// When the supervisor must kill everything unless told otherwise: a `CLOCK_BOOTTIME` instant
/// (`clock::boot_now`), moved on by the heartbeat after each successful renewal; `None` for
/// leases that cannot lapse while initguard lives (flock).
pub type Deadline = watch::Receiver<Option<Duration>>;

/// The binary to run as supervisor, when it is not this process's own (`/proc/self/exe`): for
/// programs that embed the library (and its tests), which must name the `initguard` binary.
static SUPERVISOR_BINARY: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Run supervisors from `path` (an `initguard` binary) instead of re-executing this process.
/// Only the first call counts.
pub fn use_supervisor_binary(path: impl Into<std::path::PathBuf>) {
    let _ = SUPERVISOR_BINARY.set(path.into());
}

/// What the supervisor is given of the lease the command runs under.
pub struct Supervision {
    pub deadline: Deadline,
    /// A descriptor the supervisor keeps open until the command's tree is dead (`Store::lease_fd`).
    pub hold: Option<std::os::fd::RawFd>,
}

impl Supervision {
    /// No lease at all (checks run outside one, tests).
    pub fn none() -> Supervision {
        Supervision {
            deadline: watch::channel(None).1,
            hold: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables of initguard's own environment the command must not inherit (store credentials).
    pub env_remove: Vec<String>,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub capture: bool,
    pub tail_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    NotFound,
    NotExecutable,
    SpawnFailed(String),
}

impl ChildOutcome {
    pub fn success(&self) -> bool {
        *self == ChildOutcome::Exited(0)
    }

    /// The exit code initguard passes on for this outcome (DESIGN.md's table).
    pub fn exit_code(&self) -> u8 {
        match self {
            ChildOutcome::Exited(c) => u8::try_from(*c).unwrap_or(1),
            ChildOutcome::Signaled(s) => crate::exit::for_signal(*s),
            ChildOutcome::TimedOut => crate::exit::TIMED_OUT,
            ChildOutcome::NotFound => crate::exit::NOT_FOUND,
            ChildOutcome::NotExecutable | ChildOutcome::SpawnFailed(_) => {
                crate::exit::NOT_EXECUTABLE
            }
        }
    }
}

/// How the outcome reads in log lines and reports ("exit status 3", "killed by signal 9").
impl std::fmt::Display for ChildOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildOutcome::Exited(c) => write!(f, "exit status {c}"),
            ChildOutcome::Signaled(s) => write!(f, "killed by signal {s}"),
            ChildOutcome::TimedOut => f.write_str("exceeded --timeout"),
            ChildOutcome::NotFound => f.write_str("command not found"),
            ChildOutcome::NotExecutable => f.write_str("command not executable"),
            ChildOutcome::SpawnFailed(e) => write!(f, "could not start: {e}"),
        }
    }
}

/// Why initguard ended the child itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The child ended on its own (or after our timeout).
    Normally,
    /// A SIGTERM/SIGINT (this number) was forwarded to it.
    BySignal(i32),
    /// The caller's stop future fired (lease lost): killed at once.
    Stopped(String),
}

#[derive(Debug)]
pub struct ChildResult {
    pub outcome: ChildOutcome,
    pub ended: Ended,
    pub tail: Vec<u8>,
}

/// Last `cap` bytes of everything the child wrote, stdout and stderr interleaved as they came.
struct Tail {
    cap: usize,
    buf: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.cap)..];
        self.buf.extend(chunk);
        let excess = self.buf.len().saturating_sub(self.cap);
        self.buf.drain(..excess);
    }
}

async fn pump<R, W>(mut from: R, mut to: W, tail: Arc<Mutex<Tail>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut passing = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if passing {
            // Our own stdout closing must not block the child: keep draining, stop passing.
            passing = to.write_all(&buf[..n]).await.is_ok() && to.flush().await.is_ok();
        }
        if let Ok(mut t) = tail.lock() {
            t.push(&buf[..n]);
        }
    }
}

/// Check before anything is written that the program exists and is executable, the way `exec`
/// will look it up (PATH search for a bare name), so that a typo changes nothing in the store.
pub fn preflight(argv: &[String]) -> Result<(), ChildOutcome> {
    use std::os::unix::fs::PermissionsExt;
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err(ChildOutcome::NotFound);
    };
    let candidates: Vec<std::path::PathBuf> = if program.contains('/') {
        vec![program.into()]
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .collect()
    };
    let mut not_executable = false;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
            Ok(_) => not_executable = true,
            Err(_) => {}
        }
    }
    Err(if not_executable {
        ChildOutcome::NotExecutable
    } else {
        ChildOutcome::NotFound
    })
}

/// How long to wait for the supervisor to report after it was told to kill everything; it kills
/// within its own bound, so this only matters if the supervisor itself is wedged.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(10);

/// Run the child to its end under a supervisor. `signals` are forwarded; `stop` firing kills the
/// child's whole tree at once; `deadline` is handed to the supervisor, which kills the tree on
/// its own when it passes. Returns once no process of the command is left (or, if one could not
/// be killed, after saying so).
pub async fn run(
    spec: &ChildSpec,
    signals: &mut Signals,
    stop: impl Future<Output = String>,
    supervision: Supervision,
) -> ChildResult {
    run_with(
        spec,
        signals,
        stop,
        supervision,
        Extra {
            forward: std::future::pending(),
            output: Output::Inherit,
        },
    )
    .await
}

/// Where the command's stdout goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// initguard's own stdout: under `run`, stdout belongs to the wrapped command.
    Inherit,
    /// initguard's stderr, for subcommands whose stdout carries their own report (`verify`).
    ToStderr,
}

/// What `run_with` adds to `run`, for callers that drive the command themselves (`verify`).
pub struct Extra<F> {
    /// When it fires, its signal is forwarded exactly as a received one would be (to the
    /// command's group, then `grace`, then the kill), and the run ends `BySignal`.
    pub forward: F,
    pub output: Output,
}

/// `run`, plus a signal the caller chooses when to forward and where the output goes.
pub async fn run_with(
    spec: &ChildSpec,
    signals: &mut Signals,
    stop: impl Future<Output = String>,
    supervision: Supervision,
    extra: Extra<impl Future<Output = i32>>,
) -> ChildResult {
    let Extra { forward, output } = extra;
    let Supervision { mut deadline, hold } = supervision;
    let tail = Arc::new(Mutex::new(Tail {
        cap: spec.tail_bytes,
        buf: VecDeque::new(),
    }));
    let ended_early = |outcome| ChildResult {
        outcome,
        ended: Ended::Normally,
        tail: Vec::new(),
    };
    if spec.argv.is_empty() {
        return ended_early(ChildOutcome::SpawnFailed("empty command".into()));
    }
    // A SIGTERM that arrived while the store was being written must not start the command.
    let pending = tokio::select! {
        biased;
        sig = signals.recv() => Some(sig),
        _ = std::future::ready(()) => None,
    };
    if let Some(sig) = pending {
        return ChildResult {
            outcome: ChildOutcome::Signaled(sig),
            ended: Ended::BySignal(sig),
            tail: Vec::new(),
        };
    }
    let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return ended_early(ChildOutcome::SpawnFailed(e.to_string())),
    };
    let their_fd = theirs.as_raw_fd();
    let first_deadline = *deadline.borrow_and_update();
    // /proc/self/exe: this very binary, even if the file was replaced since we started.
    let program = SUPERVISOR_BINARY
        .get()
        .map_or_else(|| std::path::Path::new("/proc/self/exe"), |p| p.as_path());
    let mut cmd = tokio::process::Command::new(program);
    cmd.as_std_mut().arg0("initguard");
    cmd.args(supervisor::args(their_fd, first_deadline, hold))
        .args(&spec.argv);
    // The supervisor passes its environment on to the command unchanged.
    for name in &spec.env_remove {
        cmd.env_remove(name);
    }
    cmd.envs(spec.env.iter().cloned()).kill_on_drop(false);
    if spec.capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else if output == Output::ToStderr {
        match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => cmd.stdout(Stdio::from(fd)),
            Err(e) => return ended_early(ChildOutcome::SpawnFailed(e.to_string())),
        };
    }
    let parent = nix::unistd::getpid();
    // SAFETY: runs in the forked child before exec; prctl, getppid and fcntl are
    // async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // SIGUSR1, not SIGKILL: the supervisor reads it from its signalfd and kills the
            // command's tree before it goes.
            nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1)?;
            // initguard may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "initguard exited before the command started",
                ));
            }
            // The supervisor's end of the socket and the lease's descriptor are the ones it
            // inherits on purpose.
            for fd in std::iter::once(their_fd).chain(hold) {
                nix::fcntl::fcntl(
                    std::os::fd::BorrowedFd::borrow_raw(fd),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(theirs);
    let mut sup = match spawned {
        Ok(c) => c,
        Err(e) => {
            return ended_early(ChildOutcome::SpawnFailed(format!(
                "cannot start the supervisor: {e}"
            )));
        }
    };
    let socket = match ours
        .set_nonblocking(true)
        .and_then(|_| tokio::net::UnixStream::from_std(ours))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = sup.start_kill();
            return ended_early(ChildOutcome::SpawnFailed(e.to_string()));
        }
    };
    let (reader, mut orders) = socket.into_split();
    let mut reports = BufReader::new(reader).lines();
    let mut pumps = Vec::new();
    if let Some(out) = sup.stdout.take() {
        pumps.push(match output {
            Output::Inherit => tokio::spawn(pump(out, tokio::io::stdout(), tail.clone())),
            Output::ToStderr => tokio::spawn(pump(out, tokio::io::stderr(), tail.clone())),
        });
    }
    if let Some(err) = sup.stderr.take() {
        pumps.push(tokio::spawn(pump(err, tokio::io::stderr(), tail.clone())));
    }

    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut timeout_at = spec.timeout.map_or(far, |t| Instant::now() + t);
    let mut kill_at = far;
    let mut gone_at = far;
    let mut timed_out = false;
    let mut ended = Ended::Normally;
    let mut stop = std::pin::pin!(stop);
    let mut forward = std::pin::pin!(forward);
    let mut forwarded = false;
    let mut stopped = false;
    let mut group: Option<Pid> = None;
    let mut outcome: Option<ChildOutcome> = None;
    let mut deadline_open = true;
    macro_rules! order {
        ($o:expr) => {
            // A supervisor that is gone has nothing left to act on; its EOF ends the loop.
            let _ = orders.write_all($o.to_string().as_bytes()).await;
        };
    }
    macro_rules! forward_signal {
        ($sig:expr) => {
            order!(Order::Signal($sig));
            if matches!(ended, Ended::Normally) {
                ended = Ended::BySignal($sig);
                kill_at = Instant::now() + spec.grace;
            }
        };
    }
    loop {
        tokio::select! {
            line = reports.next_line() => match line {
                Ok(Some(line)) => match Report::parse(&line) {
                    Some(Report::Started(pid)) => group = i32::try_from(pid).ok().map(Pid::from_raw),
                    Some(Report::SpawnFailed(e)) => outcome = Some(match e {
                        SpawnError::NotFound => ChildOutcome::NotFound,
                        SpawnError::NotExecutable => ChildOutcome::NotExecutable,
                        SpawnError::Other(why) => ChildOutcome::SpawnFailed(why),
                    }),
                    Some(Report::DeadlinePassed) if !stopped => {
                        stopped = true;
                        ended = Ended::Stopped("the lease deadline passed before a renewal extended it; the supervisor killed the command".into());
                    }
                    Some(Report::DeadlinePassed) => {}
                    Some(Report::ExitedCode(c)) => outcome = Some(ChildOutcome::Exited(c)),
                    Some(Report::ExitedSignal(s)) => outcome = Some(ChildOutcome::Signaled(s)),
                    Some(Report::Clean { left }) => {
                        if left > 0 {
                            tracing::warn!("{left} process(es) the command started could not be killed (they belong to another user)");
                        }
                        break;
                    }
                    None => {}
                },
                // EOF: the supervisor is gone, reported or not.
                _ => break,
            },
            sig = signals.recv() => {
                forward_signal!(sig);
            }
            sig = &mut forward, if !forwarded => {
                forwarded = true;
                forward_signal!(sig);
            }
            _ = sleep_until(timeout_at) => {
                timed_out = true;
                timeout_at = far;
                order!(Order::Signal(Signal::SIGTERM as i32));
                kill_at = Instant::now() + spec.grace;
            }
            _ = sleep_until(kill_at) => {
                kill_at = far;
                gone_at = Instant::now() + SUPERVISOR_GRACE;
                order!(Order::Kill);
            }
            _ = sleep_until(gone_at) => {
                // The supervisor did not answer in time: kill it and what we know of the command.
                let _ = sup.start_kill();
                if let Some(pg) = group {
                    let _ = killpg(pg, Signal::SIGKILL);
                }
                break;
            }
            changed = deadline.changed(), if deadline_open => {
                if changed.is_err() {
                    deadline_open = false;
                } else {
                    let next = *deadline.borrow_and_update();
                    order!(next.map_or(Order::NoDeadline, Order::Deadline));
                }
            }
            reason = &mut stop, if !stopped => {
                stopped = true;
                ended = Ended::Stopped(reason);
                gone_at = Instant::now() + SUPERVISOR_GRACE;
                order!(Order::Kill);
            }
        }
    }
    // The supervisor exits right after its last report; reap it.
    if tokio::time::timeout(SUPERVISOR_GRACE, sup.wait())
        .await
        .is_err()
    {
        let _ = sup.start_kill();
    }
    if outcome.is_none()
        && let Some(pg) = group
    {
        // The supervisor died before reporting: take down what we know of the command.
        let _ = killpg(pg, Signal::SIGKILL);
    }
    let drain = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    let outcome = match outcome {
        _ if timed_out => ChildOutcome::TimedOut,
        Some(o) => o,
        None => ChildOutcome::SpawnFailed("the supervisor ended without reporting".into()),
    };
    let tail = tail
        .lock()
        .map(|t| t.buf.iter().copied().collect())
        .unwrap_or_default();
    ChildResult {
        outcome,
        ended,
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail {
            cap: 4,
            buf: VecDeque::new(),
        };
        t.push(b"abc");
        t.push(b"defgh");
        assert_eq!(t.buf.iter().copied().collect::<Vec<_>>(), b"efgh");
        t.push(b"i");
        assert_eq!(t.buf.iter().copied().collect::<Vec<_>>(), b"fghi");
    }

    #[test]
    fn preflight_finds_programs_on_path_and_refuses_missing_ones() {
        assert_eq!(preflight(&["sh".into()]), Ok(()));
        assert_eq!(preflight(&["/bin/sh".into()]), Ok(()));
        assert_eq!(
            preflight(&["no-such-program-xyz".into()]),
            Err(ChildOutcome::NotFound)
        );
        let plain = tempfile::NamedTempFile::new().unwrap();
        let path = plain.path().to_string_lossy().into_owned();
        assert_eq!(preflight(&[path]), Err(ChildOutcome::NotExecutable));
    }

    #[test]
    fn exit_codes_follow_the_design_table() {
        assert_eq!(ChildOutcome::Exited(3).exit_code(), 3);
        assert_eq!(ChildOutcome::Signaled(9).exit_code(), 137);
        assert_eq!(ChildOutcome::TimedOut.exit_code(), 124);
        assert_eq!(ChildOutcome::NotFound.exit_code(), 127);
        assert_eq!(ChildOutcome::NotExecutable.exit_code(), 126);
    }
}
