//! `initguard reset KEY`: forget the success or gave_up of every scope instance of KEY — and of
//! nothing else — each under its own lease, so that the next run runs. For an SQL task that ran
//! in a `--sql-target` database, its completion rows there are cleared first (or the next run
//! would find them and skip the SQL). Never creates a record, lock or lease for a task that has
//! no record.

use crate::record::Record;
use crate::store::{AcquireOpts, Lease, Store, StoreError};
use crate::task::{Holder, Key, TaskId};
use chrono::Utc;
use tracing::warn;

/// How to reset.
#[derive(Debug, Clone)]
pub struct ResetOptions {
    pub acquire: AcquireOpts,
    /// History entries kept in each record.
    pub history: usize,
    /// `--sql-target URL`: clear the task's completion rows in that database too.
    pub sql_target: Option<String>,
}

/// One scope instance that was reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetDone {
    pub id: TaskId,
    /// Its state before (`succeeded`, `gave_up`, …, or `a corrupt record`).
    pub was: String,
    /// Completion rows deleted in the `--sql-target` database, when one was given.
    pub completions_cleared: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{key} is an SQL task whose completion is kept in its --sql-target database ({target}); \
         run `initguard reset {key} --sql-target URL` with that database's URL (or with \
         INITGUARD_SQL_TARGET set), so that the completion there is cleared too, or the next run \
         would skip the SQL; nothing was reset"
    )]
    NeedsSqlTarget { key: String, target: String },
    #[error(
        "--sql-target needs the postgres feature, which this initguard was built without; nothing was reset"
    )]
    SqlTargetUnsupported,
}

/// Reset every record of `key` (all its scope instances). A corrupt record is replaced by a fresh
/// one (the operator asked for exactly that after the exit-65 message); a record from a newer
/// schema is never overwritten. Returns each instance reset, with what it was.
pub async fn reset(
    store: &dyn Store,
    key: &Key,
    holder: &Holder,
    opts: &ResetOptions,
) -> Result<Vec<ResetDone>, ResetError> {
    let listing = store.list().await?;
    // Only KEY's own records: their scope and instance name the task ids to reset.
    let mut recorded_target = None;
    let ids: Vec<TaskId> = listing
        .records
        .iter()
        .filter(|r| r.key == key.as_str())
        .map(|r| {
            if recorded_target.is_none() {
                recorded_target.clone_from(&r.sql_target);
            }
            TaskId {
                key: key.clone(),
                scope: r.scope,
                instance: r.instance.clone(),
            }
        })
        // Unreadable (corrupt) records are listed apart, with their task: reset repairs those too.
        .chain(
            listing
                .unreadable
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| id.key == *key),
        )
        .collect();
    if let (Some(target), None) = (recorded_target, &opts.sql_target) {
        return Err(ResetError::NeedsSqlTarget {
            key: key.to_string(),
            target,
        });
    }
    let mut done = Vec::new();
    for id in ids {
        let lease = match crate::acquire::acquire(store, &id, holder, opts.acquire, None).await? {
            crate::acquire::Acquired::Lease(lease) => lease,
            // Only asked for with a fingerprint to wait for; reset gives none.
            crate::acquire::Acquired::DoneMeanwhile(_) => continue,
        };
        let res = reset_one(store, &lease, holder, opts).await;
        store.release(lease).await?;
        if let Some((was, completions_cleared)) = res? {
            done.push(ResetDone {
                id,
                was,
                completions_cleared,
            });
        }
    }
    Ok(done)
}

/// Reset one instance under its lease: the target's completion rows first, so that a failure
/// there leaves the record as it was (the next run still skips; reset can simply be repeated).
async fn reset_one(
    store: &dyn Store,
    lease: &Lease,
    holder: &Holder,
    opts: &ResetOptions,
) -> Result<Option<(String, Option<u64>)>, ResetError> {
    let id = &lease.id;
    let (mut rec, was) = match store.read(id).await {
        Ok(Some(rec)) => {
            let was = rec.state.to_string();
            (rec, was)
        }
        Ok(None) => return Ok(None),
        Err(StoreError::Corrupt { .. }) => {
            warn!(key = %id, "the record of {id} is corrupt: replacing it with a fresh one (its history is lost)");
            (
                Record::new(id, "", Utc::now()),
                "a corrupt record".to_string(),
            )
        }
        Err(e) => return Err(e.into()),
    };
    let cleared = match &opts.sql_target {
        Some(target) => Some(clear_completions(target, id, lease.token).await?),
        None => None,
    };
    rec.reset(lease.token, holder, Utc::now(), opts.history);
    store.write(lease, &rec).await?;
    Ok(Some((was, cleared)))
}

#[cfg(feature = "postgres")]
async fn clear_completions(target: &str, id: &TaskId, token: u64) -> Result<u64, ResetError> {
    Ok(crate::store::postgres::clear_sql_completions(target, id, token).await?)
}

#[cfg(not(feature = "postgres"))]
async fn clear_completions(_target: &str, _id: &TaskId, _token: u64) -> Result<u64, ResetError> {
    Err(ResetError::SqlTargetUnsupported)
}
