//! The one place that turns an error into the line users read and the exit code they get.

use super::settings::SettingsError;
use crate::exit;
use crate::guard::{GuardError, NotRecorded};
use crate::store::StoreError;

/// Anything a subcommand can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
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
        Failure::Guard(GuardError::Store(e)) | Failure::Store(e) => store_code(e),
        Failure::Guard(GuardError::GaveUp { .. } | GuardError::InterruptedPredecessor { .. }) => {
            exit::TEMP_FAIL
        }
        Failure::Guard(GuardError::Command { outcome, .. }) => outcome.exit_code(),
        Failure::Guard(
            GuardError::SignalWhileWaiting { signal, .. }
            | GuardError::SignalBeforeStart { signal, .. },
        ) => exit::for_signal(*signal),
        Failure::Guard(GuardError::DoneIfCannotStart { outcome, .. }) => outcome.exit_code(),
        Failure::Guard(GuardError::SuccessNotRecorded { cause, .. }) => match cause {
            NotRecorded::Store(e) => store_code(e),
            NotRecorded::Signal(s) => exit::for_signal(*s),
        },
        Failure::Runtime(_) => exit::CONFIG,
        #[cfg(feature = "kubernetes")]
        Failure::Rbac(_) => exit::USAGE,
        Failure::Install(_) | Failure::Input { .. } => exit::IO_ERR,
        #[cfg(feature = "kubernetes")]
        Failure::Inject(crate::k8s::inject::InjectError::Yaml(_)) | Failure::Manifest(_) => {
            exit::DATA_ERR
        }
        #[cfg(feature = "kubernetes")]
        Failure::Inject(_) => exit::USAGE,
    }
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::Corrupt { .. } | StoreError::NewerSchema { .. } => exit::DATA_ERR,
        StoreError::Unreachable { .. } | StoreError::Io { .. } => exit::UNAVAILABLE,
        StoreError::LeaseLost { .. } | StoreError::WaitTimeout { .. } => exit::TEMP_FAIL,
        StoreError::Config { .. } | StoreError::Forbidden { .. } | StoreError::StateDir { .. } => {
            exit::CONFIG
        }
        StoreError::Unsupported { .. } => exit::USAGE,
    }
}
