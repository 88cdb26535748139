//! Errors every store reports in the same typed terms, so the guard and `main` can match on them.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "record of {key} in {location} is corrupt: {reason}; it was left as it is (inspect it, then `initguard reset {key}`)"
    )]
    Corrupt {
        key: String,
        location: String,
        reason: String,
    },
    #[error(
        "record of {key} in {location} has schema {found}, newer than this initguard understands; upgrade initguard"
    )]
    NewerSchema {
        key: String,
        location: String,
        found: u64,
    },
    #[error("store {store} is unreachable: {reason}")]
    Unreachable { store: String, reason: String },
    /// The store answered but turned us away for now (PostgreSQL: too many connections): a
    /// reason to back off and try again while there is time to wait, not to give up.
    #[error("store {store} is overloaded: {reason}")]
    Overloaded { store: String, reason: String },
    #[error("lease on {key} lost (token {token}): {reason}")]
    LeaseLost {
        key: String,
        token: u64,
        reason: String,
    },
    #[error("gave up waiting after {}s for the lease on {key}, held by {holder}", waited.as_secs())]
    WaitTimeout {
        key: String,
        holder: String,
        waited: Duration,
    },
    #[error("store {store} is misconfigured: {reason}")]
    Config { store: String, reason: String },
    #[error("store {store} refused access: {reason}")]
    Forbidden { store: String, reason: String },
    #[error("state directory {} is not usable: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A state directory, or a name in it, that someone else could have planted or could swap
    /// things into: nothing is opened through it.
    #[error("refusing {}: {why}; {fix}", path.display())]
    UnsafeStateDir {
        path: PathBuf,
        why: String,
        fix: String,
    },
    /// A local file system error (disk full, read-only file system, I/O error).
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {store} does not support {what}")]
    Unsupported { store: String, what: String },
}

impl StoreError {
    /// The lease `lease` is no longer ours, and why.
    pub fn lease_lost(lease: &super::Lease, reason: impl Into<String>) -> StoreError {
        StoreError::LeaseLost {
            key: lease.id.to_string(),
            token: lease.token,
            reason: reason.into(),
        }
    }

    /// A stored record that does not parse: newer than us, or corrupt. `key` names the task,
    /// `location` where the record lives, for the message.
    pub fn unreadable_record(
        key: &str,
        location: impl Into<String>,
        e: crate::record::RecordError,
    ) -> StoreError {
        let location = location.into();
        match e {
            crate::record::RecordError::NewerSchema { found } => StoreError::NewerSchema {
                key: key.to_string(),
                location,
                found,
            },
            other => StoreError::Corrupt {
                key: key.to_string(),
                location,
                reason: other.to_string(),
            },
        }
    }

    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
