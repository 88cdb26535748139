//! The child process: spawned in its own process group, killed if initguard dies, its output
//! passed through byte for byte with a bounded tail kept, SIGTERM/SIGINT forwarded, timeout and
//! grace enforced. Knows nothing of stores or records.

// `unsafe` is needed for one thing only: `pre_exec`, to set the parent-death signal in the child
// between fork and exec (no safe API exists for that; the closure calls async-signal-safe prctl
// and getppid only).
#![allow(unsafe_code)]

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{Signal as SignalStream, SignalKind, signal};
use tokio::time::{Instant, sleep_until};

/// How long to keep draining the child's pipes after it exited (a background grandchild may keep
/// them open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The signals initguard forwards to the child. Created once, early, so that from then on a
/// SIGTERM never kills initguard before it has recorded what happened.
pub struct Signals {
    term: SignalStream,
    int: SignalStream,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT, as its number.
    pub async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM as i32,
            _ = self.int.recv() => Signal::SIGINT as i32,
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

fn spawn_error(e: &std::io::Error) -> ChildOutcome {
    match e.kind() {
        std::io::ErrorKind::NotFound => ChildOutcome::NotFound,
        std::io::ErrorKind::PermissionDenied => ChildOutcome::NotExecutable,
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => ChildOutcome::NotExecutable,
        _ => ChildOutcome::SpawnFailed(e.to_string()),
    }
}

/// Run the child to its end. `signals` are forwarded; `stop` firing kills the child at once.
/// Must be called on a thread that lives as long as the child: the parent-death signal fires when
/// the spawning *thread* exits (initguard runs a current-thread runtime on its main thread).
pub async fn run(
    spec: &ChildSpec,
    signals: &mut Signals,
    stop: impl Future<Output = String>,
) -> ChildResult {
    let tail = Arc::new(Mutex::new(Tail {
        cap: spec.tail_bytes,
        buf: VecDeque::new(),
    }));
    let Some((program, args)) = spec.argv.split_first() else {
        return ChildResult {
            outcome: ChildOutcome::SpawnFailed("empty command".into()),
            ended: Ended::Normally,
            tail: Vec::new(),
        };
    };
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
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for name in &spec.env_remove {
        cmd.env_remove(name);
    }
    cmd.envs(spec.env.iter().cloned()).process_group(0);
    if spec.capture {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let parent = nix::unistd::getpid();
    // SAFETY: runs in the forked child before exec; prctl and getppid are async-signal-safe and
    // the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // initguard may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "initguard exited before the command started",
                ));
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ChildResult {
                outcome: spawn_error(&e),
                ended: Ended::Normally,
                tail: Vec::new(),
            };
        }
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let group_kill = |sig: Signal| {
        if let Some(pg) = pgid {
            let _ = killpg(pg, sig);
        }
    };
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(out, tokio::io::stdout(), tail.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(err, tokio::io::stderr(), tail.clone())));
    }

    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut timeout_at = spec.timeout.map_or(far, |t| Instant::now() + t);
    let mut kill_at = far;
    let mut timed_out = false;
    let mut ended = Ended::Normally;
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            sig = signals.recv() => {
                if let Ok(s) = Signal::try_from(sig) {
                    group_kill(s);
                }
                if matches!(ended, Ended::Normally) {
                    ended = Ended::BySignal(sig);
                    kill_at = Instant::now() + spec.grace;
                }
            }
            _ = sleep_until(timeout_at) => {
                timed_out = true;
                timeout_at = far;
                group_kill(Signal::SIGTERM);
                kill_at = Instant::now() + spec.grace;
            }
            _ = sleep_until(kill_at) => {
                group_kill(Signal::SIGKILL);
                kill_at = far;
            }
            reason = &mut stop, if !stopped => {
                stopped = true;
                group_kill(Signal::SIGKILL);
                ended = Ended::Stopped(reason);
            }
        }
    };
    // Whatever the command left running in its group (background jobs) must not outlive the
    // lease it ran under: the next holder could start while they still work.
    group_kill(Signal::SIGKILL);
    let drain = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    let outcome = match status {
        _ if timed_out => ChildOutcome::TimedOut,
        Ok(st) => match (st.code(), st.signal()) {
            (Some(c), _) => ChildOutcome::Exited(c),
            (None, Some(s)) => ChildOutcome::Signaled(s),
            (None, None) => ChildOutcome::SpawnFailed("unknown exit status".into()),
        },
        Err(e) => ChildOutcome::SpawnFailed(e.to_string()),
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
