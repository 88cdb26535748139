//! The one place that turns an error into the line users read and the exit code they get.

use super::settings::SettingsError;
use crate::exit;
use crate::guard::{GuardError, NotRecorded};
use crate::reset::ResetError;
use crate::steps::run::StepsError;
use crate::store::StoreError;

/// Anything a subcommand can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Steps(#[from] StepsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reset(#[from] ResetError),
    #[error(transparent)]
    Wait(#[from] crate::wait::WaitError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
    /// One of the signals initguard honours arrived outside the command's run.
    #[error("stopped by signal {signal} ({}) while {during}", signal_name(*signal))]
    Signal { signal: i32, during: String },
    #[error("verify: {0}")]
    Verify(#[from] crate::verify::VerifyError),
    #[error("verify: {0}")]
    VerifySave(#[from] crate::verify::SaveError),
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Rbac(#[from] crate::k8s::rbac::RbacError),
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Inject(#[from] crate::k8s::inject::InjectError),
    #[cfg(feature = "kubernetes")]
    #[error(transparent)]
    Manifest(#[from] crate::k8s::yaml_docs::YamlError),
    #[cfg(feature = "kubernetes")]
    #[error("cannot read or write {}: {source}", path.display())]
    Input {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

pub fn exit_code(f: &Failure) -> u8 {
    match f {
        Failure::Settings(SettingsError::Task(crate::task::TaskError::MissingScopeEnv {
            ..
        })) => exit::CONFIG,
        Failure::Settings(_) => exit::USAGE,
        Failure::Guard(g) | Failure::Steps(StepsError::Guard(g)) => guard_code(g),
        Failure::Steps(e) => steps_code(e),
        Failure::Store(e)
        | Failure::Reset(ResetError::Store(e))
        | Failure::Wait(crate::wait::WaitError::Store(e)) => store_code(e),
        Failure::Wait(
            crate::wait::WaitError::GaveUp { .. } | crate::wait::WaitError::Timeout { .. },
        ) => exit::TEMP_FAIL,
        Failure::Reset(ResetError::NeedsSqlTarget { .. } | ResetError::SqlTargetUnsupported) => {
            exit::USAGE
        }
        Failure::Signal { signal, .. } => exit::for_signal(*signal),
        Failure::Runtime(_) => exit::CONFIG,
        Failure::Verify(e) => verify_code(e),
        Failure::VerifySave(_) => exit::IO_ERR,
        #[cfg(feature = "kubernetes")]
        Failure::Rbac(_) => exit::USAGE,
        Failure::Install(_) => exit::IO_ERR,
        #[cfg(feature = "kubernetes")]
        Failure::Input { .. } => exit::IO_ERR,
        #[cfg(feature = "kubernetes")]
        Failure::Inject(crate::k8s::inject::InjectError::Yaml(_)) | Failure::Manifest(_) => {
            exit::DATA_ERR
        }
        #[cfg(feature = "kubernetes")]
        Failure::Inject(_) => exit::USAGE,
    }
}

fn guard_code(e: &GuardError) -> u8 {
    match e {
        GuardError::Store(e) => store_code(e),
        GuardError::GaveUp { .. } | GuardError::InterruptedPredecessor { .. } => exit::TEMP_FAIL,
        GuardError::Command { outcome, .. } => outcome.exit_code(),
        GuardError::SignalWhileWaiting { signal, .. }
        | GuardError::SignalBeforeStart { signal, .. } => exit::for_signal(*signal),
        GuardError::DoneIfCannotStart { outcome, .. } => outcome.exit_code(),
        GuardError::SuccessNotRecorded { cause, .. } => match cause.as_ref() {
            NotRecorded::Store(e) => store_code(e),
            NotRecorded::Signal(s) => exit::for_signal(*s),
        },
    }
}

fn steps_code(e: &StepsError) -> u8 {
    use crate::steps::discover::DiscoverError;
    match e {
        StepsError::Discover(DiscoverError::ReadDir { .. }) => exit::IO_ERR,
        StepsError::Discover(_) => exit::USAGE,
        StepsError::Invalid { .. } | StepsError::Problems { .. } | StepsError::Other { .. } => {
            exit::STEPS_FAILED
        }
        StepsError::NeedsTarget { .. } => exit::CONFIG,
        StepsError::ScriptFailed { outcome, .. } => outcome.exit_code(),
        StepsError::InterruptedStep { .. } => exit::TEMP_FAIL,
        StepsError::Guard(e) => guard_code(e),
        StepsError::Store(e) => store_code(e),
        #[cfg(feature = "postgres")]
        StepsError::Target { source, .. } => target_code(source),
    }
}

#[cfg(feature = "postgres")]
fn target_code(e: &crate::steps::target::TargetError) -> u8 {
    use crate::steps::target::TargetError;
    match e {
        TargetError::Connect(e) => store_code(e),
        TargetError::Db { .. } => exit::UNAVAILABLE,
        TargetError::Fenced { .. } => exit::TEMP_FAIL,
        TargetError::NotBegun { .. }
        | TargetError::StepFailed { .. }
        | TargetError::Refused { .. }
        | TargetError::Untrusted { .. } => exit::STEPS_FAILED,
        TargetError::AlreadyApplied { .. } | TargetError::OutOfTurn { .. } => exit::TEMP_FAIL,
        TargetError::NotAdoptable { .. } => exit::CONFIG,
    }
}

fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::Corrupt { .. } | StoreError::NewerSchema { .. } => exit::DATA_ERR,
        StoreError::Unreachable { .. } | StoreError::Overloaded { .. } => exit::UNAVAILABLE,
        // Only the file store reports `Io`: the local disk, not a remote store, failed.
        StoreError::Io { .. } => exit::IO_ERR,
        StoreError::LeaseLost { .. } | StoreError::WaitTimeout { .. } => exit::TEMP_FAIL,
        StoreError::Config { .. }
        | StoreError::Forbidden { .. }
        | StoreError::StateDir { .. }
        | StoreError::UnsafeStateDir { .. } => exit::CONFIG,
        StoreError::Unsupported { .. } => exit::USAGE,
    }
}

fn verify_code(e: &crate::verify::VerifyError) -> u8 {
    use crate::verify::VerifyError;
    match e {
        VerifyError::Signalled { signal, .. } => exit::for_signal(*signal),
        // The probe and the reset are the user's own commands: a setup problem, not a finding.
        VerifyError::Probe(_)
        | VerifyError::CleanProbe { .. }
        | VerifyError::ResetSpawn { .. }
        | VerifyError::Reset { .. } => exit::CONFIG,
        VerifyError::Signals(_) => exit::CONFIG,
    }
}
