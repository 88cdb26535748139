//! The target database connection of a steps run: connected the way the PG store connects (TLS,
//! password sources, redaction, bounded retries), one operation at a time, and the fenced
//! short transactions every history write goes through. Must never leave a transaction open
//! between operations: a `CREATE INDEX CONCURRENTLY` of a no-transaction step waits for every
//! transaction older than its snapshot in the database, this connection's included.

use super::error::TargetError;
use super::rows::{self, literal, token_i64};
use super::tables::{self, AFTER_UNAPPLIED, ALREADY_APPLIED, FENCED};
use crate::steps::{RunInfo, Step, StepId};
use crate::store::StoreError;
use crate::store::postgres::{Conn, Connector, PgUrl, classify, error_chain, is_connection_error};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{SimpleQueryMessage, SimpleQueryRow};

/// How to connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetOptions {
    /// The lease's duration, when the run holds one: the connection's
    /// `idle_in_transaction_session_timeout`. Every transaction initguard opens is sent whole
    /// (`BEGIN … COMMIT` in one go), which the server runs to its end without waiting for the
    /// client; this is the backstop for a holder paused (SIGSTOP, a frozen node) in the instant
    /// between the requests of one, with the fence row locked: the server ends that transaction
    /// after a lease's worth of idleness, not never.
    pub lease_ttl: Option<Duration>,
}

/// The target database of a set of steps. One connection, one operation at a time.
pub struct Target {
    pub(crate) conn: Arc<Conn>,
    connector: Connector,
    /// Schema of the steps tables (the URL's `schema=`, default `initguard`).
    pub(crate) schema: String,
    /// Held for the length of each operation. `true` when an operation was dropped midway (its
    /// future cancelled): the next one rolls back whatever that left open first.
    op: tokio::sync::Mutex<bool>,
    /// The step key and the duration (ms) measured by this process of each transactional step
    /// applied and not yet given its duration in history (`steps_step_v3` writes the row
    /// without one); written by `finish`, or with the next fenced row (`fenced_tx`).
    pub(crate) durations: std::sync::Mutex<Vec<(String, u64)>>,
}

/// Marks an operation under way on the connection. Dropped before the operation ended (its
/// future was dropped: lease lost, signal), it cancels the statement the server is running and
/// leaves a ROLLBACK for the next operation, so that a cancelled run does not go on holding
/// locks. (A step transaction cancelled that way rolls back as a whole, its history row with it.)
/// The step sent behind it (`apply_steps` has up to two in flight) then does not run, its check
/// finding the one before it not applied; but a cancel that arrives between the two, when the
/// server is reading the next request, is ignored by the server, and that step runs to its end:
/// whole, with its history row, and fenced like any other.
struct InFlight<'a> {
    target: &'a Target,
    dirty: tokio::sync::MutexGuard<'a, bool>,
    ended: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.ended {
            *self.dirty = true;
            self.target
                .connector
                .cancel_in_background(&self.target.conn);
        }
    }
}

impl Target {
    /// Connect to the target database. Creates nothing (status reads must not).
    pub async fn connect(url: &PgUrl, opts: &TargetOptions) -> Result<Target, TargetError> {
        let mut connector = Connector::new(url)?;
        if let Some(ttl) = opts.lease_ttl {
            let ms = ttl.as_millis().clamp(1000, i32::MAX as u128);
            connector.set_option("idle_in_transaction_session_timeout", &ms.to_string());
        }
        let conn = connector.connect().await?;
        Ok(Target {
            conn,
            connector,
            schema: url.schema.clone(),
            op: tokio::sync::Mutex::new(false),
            durations: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The target as logged (no password).
    pub fn label(&self) -> &str {
        &self.connector.label
    }

    /// Run one operation alone on the connection: after the previous one, and after cleaning up
    /// what a cancelled one left (see `InFlight`).
    pub(crate) async fn exclusive<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, TargetError>>,
    ) -> Result<T, TargetError> {
        let mut dirty = self.op.lock().await;
        if *dirty {
            let _ = self.conn.client.batch_execute("ROLLBACK").await;
            *dirty = false;
        }
        let mut flight = InFlight {
            target: self,
            dirty,
            ended: false,
        };
        let res = op.await;
        flight.ended = true;
        res
    }

    /// One of initguard's own statements failed. Judged as the store judges its errors
    /// (`classify`): a missing privilege is `Connect(Forbidden)`, not a database that is down.
    pub(crate) fn db_err(&self, what: &str, e: &tokio_postgres::Error) -> TargetError {
        let label = &self.connector.label;
        match classify(label, e) {
            Err(StoreError::Forbidden { store, reason }) => {
                TargetError::Connect(StoreError::Forbidden {
                    store,
                    reason: format!("{what}: {reason}"),
                })
            }
            _ => TargetError::Db {
                target: label.clone(),
                what: what.to_string(),
                reason: error_chain(e),
            },
        }
    }

    /// `e` as a fencing refusal (of the check for `step`, when there was one), when it is one;
    /// None otherwise.
    pub(crate) fn fence_refusal(
        &self,
        set: &str,
        token: u64,
        step: Option<&Step>,
        e: &tokio_postgres::Error,
    ) -> Option<TargetError> {
        let db = e.as_db_error()?;
        match db.code().code() {
            FENCED => match db.detail().and_then(|d| d.parse::<u64>().ok()) {
                Some(newer) if newer > 0 => Some(TargetError::Fenced {
                    set: set.to_string(),
                    token,
                    newer,
                }),
                // No fence row: `begin` was never called for the set.
                _ => Some(TargetError::NotBegun {
                    set: set.to_string(),
                    token,
                }),
            },
            ALREADY_APPLIED => Some(TargetError::AlreadyApplied {
                step: step
                    .map(|s| s.id.to_string())
                    .unwrap_or_else(|| db.message().to_string()),
            }),
            AFTER_UNAPPLIED => Some(TargetError::OutOfTurn {
                step: step.map(|s| s.id.to_string()).unwrap_or_default(),
                reason: db.message().to_string(),
            }),
            _ => None,
        }
    }

    /// `SELECT steps_check_v2(…)`: lock the set's fence row for the rest of the transaction and
    /// check the token (and, given a step, that it is not applied yet, as it is now).
    pub(crate) fn check_call(&self, set: &str, run: &RunInfo, step: Option<&Step>) -> String {
        let (key, checksum, repeatable) = match step {
            Some(s) => (
                literal(&rows::key(&s.id)),
                literal(&s.checksum.0),
                matches!(s.id, StepId::Repeatable(_)),
            ),
            None => ("NULL".into(), "NULL".into(), false),
        };
        format!(
            "SELECT {}({}, {}, {key}, {checksum}, {repeatable}, NULL, NULL)",
            tables::check_fn(&self.schema),
            literal(set),
            token_i64(run.token)
        )
    }

    /// Run `body` (statements separated by `;`) in one short fenced transaction, one message,
    /// committed synchronously, with the durations measured so far (`durations_sql`); the rows
    /// it returns. Refused by the fence: rolled back, `Fenced`.
    pub(crate) async fn fenced_tx(
        &self,
        set: &str,
        run: &RunInfo,
        what: &str,
        body: &str,
    ) -> Result<Vec<SimpleQueryRow>, TargetError> {
        self.checked_tx(set, run, None, what, body).await
    }

    /// `fenced_tx` that also refuses to start `step` when history already has it applied (as
    /// it is now): `AlreadyApplied`.
    pub(crate) async fn fenced_step_tx(
        &self,
        set: &str,
        run: &RunInfo,
        step: &Step,
        what: &str,
        body: &str,
    ) -> Result<Vec<SimpleQueryRow>, TargetError> {
        self.checked_tx(set, run, Some(step), what, body).await
    }

    async fn checked_tx(
        &self,
        set: &str,
        run: &RunInfo,
        step: Option<&Step>,
        what: &str,
        body: &str,
    ) -> Result<Vec<SimpleQueryRow>, TargetError> {
        let check = self.check_call(set, run, step);
        // Synchronous whatever the session says (a step may have turned it off): these rows
        // say what happened, and the steps applied before them get their durations with them.
        let durations = self
            .durations_sql(set, run.token)
            .map(|d| format!(";{d}"))
            .unwrap_or_default();
        let sql = format!(
            "BEGIN;{check};SELECT set_config('synchronous_commit', 'on', true) \
             WHERE current_setting('synchronous_commit') = 'off';{body}{durations};COMMIT"
        );
        match self.conn.client.simple_query(&sql).await {
            Ok(msgs) => Ok(rows_of(msgs)),
            Err(e) => {
                if !is_connection_error(&e) {
                    let _ = self.conn.client.batch_execute("ROLLBACK").await;
                }
                Err(self
                    .fence_refusal(set, run.token, step, &e)
                    .unwrap_or_else(|| self.db_err(what, &e)))
            }
        }
    }
}

/// The data rows among a simple query's messages.
pub(crate) fn rows_of(msgs: Vec<SimpleQueryMessage>) -> Vec<SimpleQueryRow> {
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The value of column `name` in the first row that has such a column.
pub(crate) fn column<'a>(rows: &'a [SimpleQueryRow], name: &str) -> Option<Option<&'a str>> {
    rows.iter().find_map(|r| {
        let i = r.columns().iter().position(|c| c.name() == name)?;
        Some(r.get(i))
    })
}
