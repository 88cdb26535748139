//! Fencing and durability of a steps run in the target database.
//!
//! `begin` registers the run's fencing token for the set in `steps_fence`, refusing a lower one.
//! Every step transaction starts by locking that row, checking the token and writing its history
//! row (`steps_step_v3`; other fenced transactions `steps_check_v2`), then runs the step, then
//! commits: exactly once, even when an older applier was killed or paused mid-step. Its transaction holds the fence row lock, so a
//! newer `begin` (an `INSERT … ON CONFLICT DO UPDATE` on that row) waits until that transaction
//! has committed or rolled back, and the history read after it includes whatever it committed;
//! a step transaction of the older applier arriving afterwards finds the newer token and rolls
//! back. A killed applier's step transactions (at most two in flight, `apply_steps`) were each sent
//! whole, in one go: the server ends each without the client, committed, or rolled back should
//! it notice the client gone first (or find the rest of it missing); either way the step and its
//! row together.
//!
//! `finish` makes the run durable, and writes the durations this process measured for its steps
//! (a step's row is written before its SQL runs, without one). Step transactions commit with
//! `synchronous_commit = off`:
//! "the server returns success as soon as the transaction is logically completed, before the
//! WAL records it generated have actually made their way to disk" (PostgreSQL documentation,
//! "Asynchronous Commit", <https://www.postgresql.org/docs/current/wal-async-commit.html>),
//! skipping the flush that dominates a small transaction; unlike `fsync = off` it cannot
//! corrupt anything, only lose the latest commits in a crash. The WAL is one sequential log, and
//! a synchronous commit waits until it is flushed up to its own commit record (`XLogFlush(upto)`
//! in `src/backend/access/transam/xlog.c` writes and flushes everything before `upto`), which
//! lies after the commit records of every earlier asynchronous commit: once one synchronous
//! commit returns, all of them are on disk. An effect and its history row commit together, so a
//! crash before the flush loses both, never one: the next run applies the step again, once.
//! `finish` commits one transaction that rewrites the set's fence row (so it writes WAL of its
//! own, which is what makes PostgreSQL flush at its commit) synchronously; when it returns, every step of the run is on disk (and on synchronous standbys, as the server's
//! `synchronous_commit` says). A failed step's `failed` row is committed synchronously too, so
//! the steps before a failure are durable without `finish`.

use super::conn::Target;
use super::error::TargetError;
use super::rows::token_i64;
use super::tables;
use crate::store::postgres::quote_ident;
use tokio_postgres::types::Type;

impl Target {
    /// Create the steps tables when missing, and register `token` as the set's newest fencing
    /// token (waiting for an older applier's step transaction in flight to end). A lower token
    /// than the registered one is refused (`Fenced`); the same one is accepted again.
    pub async fn begin(&self, set: &str, token: u64, holder: &str) -> Result<(), TargetError> {
        self.exclusive(async {
        tables::ensure(&self.conn, &self.schema)
            .await
            .map_err(|e| self.db_err("creating the steps tables", &e))?;
        let t = format!("{}.steps_fence", quote_ident(&self.schema));
        let ours = token_i64(token);
        let row = self
            .conn
            .client
            .query_typed_opt(
                &format!(
                    "INSERT INTO {t} AS f (set_name, token, holder) VALUES ($1, $2, $3)
                     ON CONFLICT (set_name) DO UPDATE
                     SET token = EXCLUDED.token, holder = EXCLUDED.holder, updated_at = clock_timestamp()
                     WHERE f.token <= EXCLUDED.token
                     RETURNING token"
                ),
                &[(&set, Type::TEXT), (&ours, Type::INT8), (&holder, Type::TEXT)],
            )
            .await
            .map_err(|e| self.db_err("registering the fencing token", &e))?;
        if row.is_none() {
            let newer: i64 = self
                .conn
                .client
                .query_one(
                    &format!("SELECT token FROM {t} WHERE set_name = $1"),
                    &[&set],
                )
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.db_err("reading the fencing token", &e))?;
            return Err(TargetError::Fenced {
                set: set.to_string(),
                token,
                newer: u64::try_from(newer).unwrap_or_default(),
            });
        }
        tracing::debug!(set, token, "steps fence registered in the target database");
        Ok(())
    })
        .await
    }

    /// One synchronous commit (see the module comment): every step committed before it is
    /// durable once it returns. The transaction rewrites the set's fence row (still holding our
    /// token, else `Fenced`): PostgreSQL flushes at commit only for a transaction that wrote WAL
    /// of its own (`wrote_xlog` in `RecordTransactionCommit`, src/backend/access/transam/xact.c),
    /// so a transaction that merely took an xid would commit asynchronously and flush nothing;
    /// the test `every_step_is_durable_when_apply_exits_0_even_if_the_server_crashes_at_once`
    /// lost the last step that way. A server whose own default is `synchronous_commit = off` is
    /// asked for `on` for this one transaction.
    pub async fn finish(&self, set: &str, token: u64) -> Result<(), TargetError> {
        self.exclusive(async {
            let t = format!("{}.steps_fence", quote_ident(&self.schema));
            // The durations of the run's steps are written in the same transaction.
            let durations = self.durations_sql(set, token).unwrap_or_default();
            let res = async {
                self.conn
                    .client
                    .batch_execute(&format!(
                        "BEGIN;\
                         SELECT set_config('synchronous_commit', 'on', true) \
                          WHERE current_setting('synchronous_commit') = 'off';{durations}"
                    ))
                    .await?;
                // Typed: parsed, bound and run in one round trip (no prepare first).
                let n = self
                    .conn
                    .client
                    .execute_typed(
                        &format!(
                            "UPDATE {t} SET updated_at = clock_timestamp() \
                             WHERE set_name = $1 AND token = $2"
                        ),
                        &[(&set, Type::TEXT), (&token_i64(token), Type::INT8)],
                    )
                    .await?;
                if n == 1 {
                    self.conn.client.batch_execute("COMMIT").await?;
                }
                Ok::<u64, tokio_postgres::Error>(n)
            }
            .await;
            match res {
                Ok(1) => Ok(()),
                Ok(_) => {
                    let _ = self.conn.client.batch_execute("ROLLBACK").await;
                    let newer: Option<i64> = self
                        .conn
                        .client
                        .query_opt(
                            &format!("SELECT token FROM {t} WHERE set_name = $1"),
                            &[&set],
                        )
                        .await
                        .ok()
                        .flatten()
                        .and_then(|r| r.try_get(0).ok());
                    Err(match newer {
                        Some(n) => TargetError::Fenced {
                            set: set.to_string(),
                            token,
                            newer: u64::try_from(n).unwrap_or_default(),
                        },
                        None => TargetError::NotBegun {
                            set: set.to_string(),
                            token,
                        },
                    })
                }
                Err(e) => {
                    let _ = self.conn.client.batch_execute("ROLLBACK").await;
                    Err(self.db_err("making the applied steps durable", &e))
                }
            }
        })
        .await
    }
}
