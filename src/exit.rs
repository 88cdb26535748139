//! Exit codes of the `initguard` binary, as DESIGN.md lists them. Only `main` (via `cli`) picks one.

/// The task ran and succeeded, or was skipped because it already had.
pub const OK: u8 = 0;
/// `k8s lint` found at least one error-level finding.
pub const LINT_ERRORS: u8 = 1;
/// `steps`: validation problems (nothing applied), or a failed SQL step.
pub const STEPS_FAILED: u8 = 1;
/// Usage error: bad flags, invalid key, unknown store URL scheme.
pub const USAGE: u8 = 2;
/// A record in the store is corrupt or from a newer schema; nothing was overwritten.
pub const DATA_ERR: u8 = 65;
/// The store is unreachable after bounded retries.
pub const UNAVAILABLE: u8 = 69;
/// Local I/O error: disk full, read-only file system, I/O error, unreadable input file.
pub const IO_ERR: u8 = 74;
/// Temporary: lease wait timed out, lease lost, or the task gave up after `--max-attempts`.
pub const TEMP_FAIL: u8 = 75;
/// Configuration problem: missing credentials, RBAC forbidden, unwritable state dir.
pub const CONFIG: u8 = 78;
/// The task exceeded `--timeout`.
pub const TIMED_OUT: u8 = 124;
/// The command exists but could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;
/// Added to a signal number when the task was killed by that signal.
pub const SIGNAL_BASE: u8 = 128;

/// Exit code for a task killed by signal `sig` (128+N, saturating for nonsense input).
pub fn for_signal(sig: i32) -> u8 {
    u8::try_from(sig)
        .ok()
        .and_then(|s| SIGNAL_BASE.checked_add(s))
        .unwrap_or(u8::MAX)
}
