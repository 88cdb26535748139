//! `initguard verify`: an idempotence checker for init commands. It runs the command against a
//! state probe (twice, as copies at once, cut short by SIGKILL and SIGTERM and re-run) and
//! reports which scenarios leave a different state than one clean run. Uses no store.

mod probe;
mod report;
mod scenario;

pub use probe::{Probe, ProbeError};
pub use report::{DIFF_LINES, Finding, Name, Report, SaveError, Scenario, Trial, bounded, secs};
pub use scenario::{Plan, VerifyError, verify};
