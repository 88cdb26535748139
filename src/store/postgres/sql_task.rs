//! SQL tasks that commit exactly once: the task's SQL and its completion are one transaction, on a
//! connection of its own (the lease is renewed on the store's connection meanwhile). In the store
//! database the completion is the fenced `succeeded` record itself; with `--sql-target` it is a
//! row in the target database, fenced by a per-task token row there. Must never commit the SQL
//! without its completion, nor run it when a completion for this fingerprint exists.

use super::config::{PgUrl, error_chain};
use super::connect::{Conn, Connector, classify, is_connection_error, quote_ident};
use super::schema::{self, SchemaError};
use super::store::PgStore;
use crate::record::Record;
use crate::store::sql::{SqlFailure, SqlOutcome, SqlTask, SqlTaskError};
use crate::store::{Lease, Store, StoreError};
use crate::task::TaskId;
use std::sync::Arc;
use tokio_postgres::error::ErrorPosition;

/// A connection that runs one SQL task. Dropped before it finished (the guard gave up: lease
/// lost, signal), it cancels the running statement so that the server rolls back at once instead
/// of holding locks until the statement ends.
struct Session {
    conn: Arc<Conn>,
    connector: Connector,
    finished: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            self.connector.cancel_in_background(&self.conn);
        }
    }
}

impl Session {
    async fn open(mut connector: Connector, lease: &Lease) -> Result<Session, StoreError> {
        // A holder paused mid-transaction (SIGSTOP, frozen node) keeps its socket open; the server
        // ends its transaction after a lease's worth of silence, so its locks do not block the
        // next holder for longer than the lease itself would.
        let idle_ms = PgStore::ttl_ms(lease.ttl).max(1000);
        connector.set_option("idle_in_transaction_session_timeout", &idle_ms.to_string());
        // The store's short lock_timeout is for its own statements; a migration may rightly wait
        // for its locks (later `-c` options override earlier ones).
        connector.set_option("lock_timeout", "0");
        let conn = connector.connect().await?;
        Ok(Session {
            conn,
            connector,
            finished: false,
        })
    }

    fn store_err(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Unreachable {
            store: self.connector.label.clone(),
            reason: format!("{what}: {}", error_chain(e)),
        }
    }

    async fn exec(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        self.conn
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| self.store_err(what, &e))
    }

    async fn rollback(&mut self) {
        let _ = self.conn.client.batch_execute("ROLLBACK").await;
        self.finished = true;
    }

    async fn txid(&self) -> Result<i64, StoreError> {
        self.conn
            .client
            .query_one("SELECT txid_current()", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.store_err("checking the transaction", &e))
    }

    /// Run the task's SQL inside the open transaction. An SQL error rolls back and is returned
    /// with the server's message and position. Transaction control (COMMIT, BEGIN, …) is refused
    /// before anything is sent (`crate::sql`); the transaction-id check below stays as the last
    /// line for whatever ends the transaction without being such a statement.
    async fn run_user_sql(&mut self, sql: &str) -> Result<(), SqlTaskError> {
        let before = self.txid().await?;
        if let Err(e) = self.conn.client.batch_execute(sql).await {
            if is_connection_error(&e) {
                return Err(self.store_err("running the SQL", &e).into());
            }
            let failure = match e.as_db_error() {
                Some(db) => SqlFailure {
                    code: db.code().code().to_string(),
                    message: db.message().to_string(),
                    position: match db.position() {
                        Some(ErrorPosition::Original(p)) => Some(*p),
                        _ => None,
                    },
                    detail: db.detail().map(str::to_string),
                    hint: db.hint().map(str::to_string),
                    line_col: None,
                }
                .locate(sql),
                None => return Err(self.store_err("running the SQL", &e).into()),
            };
            self.rollback().await;
            return Err(SqlTaskError::Sql(failure));
        }
        if self.txid().await? != before {
            self.rollback().await;
            return Err(SqlTaskError::Sql(SqlFailure {
                code: "initguard".into(),
                message: "the SQL ends initguard's transaction itself (COMMIT, ROLLBACK or END); \
                          its effects may have been committed without a completion record. \
                          Remove the transaction control statements"
                    .into(),
                position: None,
                detail: None,
                hint: None,
                line_col: None,
            }));
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        let res = self.exec("committing the SQL task", "COMMIT").await;
        self.finished = true;
        res
    }
}

fn record_value(rec: &Record) -> serde_json::Value {
    serde_json::from_slice(&rec.to_json()).unwrap_or_default()
}

fn lost(lease: &Lease, reason: &str) -> StoreError {
    StoreError::lease_lost(lease, reason)
}

pub(crate) async fn run(
    store: &PgStore,
    lease: &Lease,
    task: &SqlTask,
    done: &Record,
) -> Result<SqlOutcome, SqlTaskError> {
    let res = match &task.target {
        None => in_store_db(store, lease, task, done).await,
        Some(target) => in_target_db(store, lease, task, done, target).await,
    };
    match res {
        // A task connection that broke may have been ended by the server because its holder
        // stalled past the lease (idle_in_transaction_session_timeout): if the lease has moved
        // on, that is the truth to report (exit 75), not the broken connection (exit 69).
        Err(SqlTaskError::Store(StoreError::Unreachable { store: label, reason })) => {
            match store.holds(lease).await {
                Ok(false) => Err(lost(
                    lease,
                    &format!("another holder took the lease over while the SQL ran ({reason}); nothing of it was committed"),
                )
                .into()),
                _ => Err(StoreError::Unreachable { store: label, reason }.into()),
            }
        }
        other => other,
    }
}

/// The SQL and the fenced `succeeded` record, in one transaction of the store's database.
async fn in_store_db(
    store: &PgStore,
    lease: &Lease,
    task: &SqlTask,
    done: &Record,
) -> Result<SqlOutcome, SqlTaskError> {
    let mut s = Session::open(store.connector().clone(), lease).await?;
    s.exec("starting the SQL task", "BEGIN").await?;
    s.run_user_sql(&task.sql).await?;
    // Last, so that the task row stays unlocked (renewable) while the SQL runs; the row lock it
    // takes keeps a takeover waiting until this transaction has committed or rolled back.
    let rows = s
        .conn
        .client
        .execute(
            store.write_statement(),
            &[
                &lease.id.storage_name(),
                &PgStore::token_i64(lease.token),
                &record_value(done),
                &done.state.to_string(),
                &done.fingerprint,
            ],
        )
        .await
        .map_err(|e| s.store_err("recording the SQL task's success", &e))?;
    if rows != 1 {
        s.rollback().await;
        return Err(lost(
            lease,
            "another holder took the lease over while the SQL ran; it was rolled back",
        )
        .into());
    }
    s.commit().await?;
    Ok(SqlOutcome::Committed)
}

/// The SQL and a completion row in the target database, fenced by the target's token row; then
/// the `succeeded` record in the store.
async fn in_target_db(
    store: &PgStore,
    lease: &Lease,
    task: &SqlTask,
    done: &Record,
    target: &str,
) -> Result<SqlOutcome, SqlTaskError> {
    let url = PgUrl::parse(target).map_err(|e| StoreError::Config {
        store: "--sql-target".into(),
        reason: e.to_string(),
    })?;
    let connector = Connector::new(&url)?;
    // The record remembers the target (without its password), so that `initguard reset` knows
    // this task's completion lives there too.
    let mut marked = done.clone();
    marked.sql_target = Some(url.redacted());
    let done = &marked;
    let mut s = Session::open(connector, lease).await?;
    match schema::ensure(&s.conn, &url.schema).await {
        Ok(()) => {}
        Err(SchemaError::Newer { schema, found }) => {
            return Err(StoreError::NewerSchema {
                key: "initguard's table layout".into(),
                location: format!("schema {schema} of {}", url.redacted()),
                found: u64::try_from(found).unwrap_or_default(),
            }
            .into());
        }
        Err(SchemaError::Db(e)) => {
            return Err(store
                .pg_error("creating initguard's tables in the target", &e)
                .into());
        }
    }
    let sch = quote_ident(&url.schema);
    let name = lease.id.storage_name();
    let token = PgStore::token_i64(lease.token);
    s.exec("starting the SQL task", "BEGIN").await?;
    // Locks the fence row until commit: a newer holder queues here behind us, then sees our
    // completion row; an older one finds our newer token and stops.
    let fenced = s
        .conn
        .client
        .query_opt(
            &format!(
                "INSERT INTO {sch}.sql_fence (task, token) VALUES ($1, $2)
                 ON CONFLICT (task) DO UPDATE SET token = EXCLUDED.token, updated_at = clock_timestamp()
                 WHERE {sch}.sql_fence.token <= EXCLUDED.token
                 RETURNING token"
            ),
            &[&name, &token],
        )
        .await
        .map_err(|e| s.store_err("fencing the SQL task in the target", &e))?;
    if fenced.is_none() {
        s.rollback().await;
        return Err(lost(
            lease,
            "a newer holder has already run this task in the target database",
        )
        .into());
    }
    let existing = s
        .conn
        .client
        .query_opt(
            &format!(
                "SELECT token FROM {sch}.sql_completions WHERE task = $1 AND fingerprint = $2"
            ),
            &[&name, &done.fingerprint],
        )
        .await
        .map_err(|e| s.store_err("reading the target's completion row", &e))?;
    if let Some(row) = existing {
        let by: i64 = row
            .try_get(0)
            .map_err(|e| s.store_err("reading the target's completion row", &e))?;
        s.commit().await?;
        return Ok(SqlOutcome::AlreadyDone {
            token: u64::try_from(by).unwrap_or_default(),
            target: done.sql_target.clone(),
        });
    }
    s.run_user_sql(&task.sql).await?;
    s.conn
        .client
        .execute(
            &format!(
                "INSERT INTO {sch}.sql_completions (task, fingerprint, token, record)
                 VALUES ($1, $2, $3, $4)"
            ),
            &[&name, &done.fingerprint, &token, &record_value(done)],
        )
        .await
        .map_err(|e| s.store_err("recording the completion in the target", &e))?;
    s.commit().await?;
    // The effect is committed with its completion row; should this write fail, the next holder
    // finds the row and records success without running the SQL again.
    store.write(lease, done).await?;
    Ok(SqlOutcome::Committed)
}

/// For `initguard reset` of a `--sql-target` task, under the task's lease (token `token`): forget
/// every completion row of `id` in the target, so that the next run runs the SQL again. The fence
/// row is raised to `token` in the same transaction: it waits for a stale holder's transaction
/// still in flight there (whose completion is then deleted too), and a stale holder arriving
/// later finds the newer token and commits nothing. Creates no tables; returns the rows removed.
pub async fn clear_sql_completions(
    target: &str,
    id: &TaskId,
    token: u64,
) -> Result<u64, StoreError> {
    let url = PgUrl::parse(target).map_err(|e| StoreError::Config {
        store: "--sql-target".into(),
        reason: e.to_string(),
    })?;
    let connector = Connector::new(&url)?;
    let conn = connector.connect().await?;
    let fail = |what: &str, e: tokio_postgres::Error| {
        let reason = format!("{what}: {}", error_chain(&e));
        match classify(&connector.label, &e) {
            Err(StoreError::Forbidden { store, reason }) => StoreError::Forbidden {
                store,
                reason: format!("{what}: {reason}"),
            },
            Err(fatal) if !is_connection_error(&e) => fatal,
            _ => StoreError::Unreachable {
                store: connector.label.clone(),
                reason,
            },
        }
    };
    let sch = quote_ident(&url.schema);
    let client = &conn.client;
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| fail("starting the reset in the target", e))?;
    let res = async {
        let exists: bool = client
            .query_one(
                "SELECT to_regclass(format('%I.sql_completions', $1::text)) IS NOT NULL",
                &[&url.schema],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| fail("looking for initguard's tables in the target", e))?;
        if !exists {
            return Ok(0);
        }
        let name = id.storage_name();
        client
            .execute(
                &format!(
                    "INSERT INTO {sch}.sql_fence (task, token) VALUES ($1, $2)
                     ON CONFLICT (task) DO UPDATE
                     SET token = greatest({sch}.sql_fence.token, EXCLUDED.token),
                         updated_at = clock_timestamp()"
                ),
                &[&name, &PgStore::token_i64(token)],
            )
            .await
            .map_err(|e| fail("fencing the reset in the target", e))?;
        client
            .execute(
                &format!("DELETE FROM {sch}.sql_completions WHERE task = $1"),
                &[&name],
            )
            .await
            .map_err(|e| fail("deleting the completion rows in the target", e))
    }
    .await;
    match res {
        Ok(n) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| fail("committing the reset in the target", e))?;
            Ok(n)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
