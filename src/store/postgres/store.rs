//! `PgStore`: records and leases in a PostgreSQL table. The lease is a row judged by the
//! database clock (`clock_timestamp()`), never the client's; its token is a counter in the row,
//! incremented by every acquisition; every write is fenced on that token. A waiter sleeps on
//! LISTEN/NOTIFY on the process's one connection (a release notifies at commit) and wakes when the
//! holder's lease would lapse, by the database's own reckoning: no tight polling, and no second
//! connection per waiter. Must never take a lease that has not lapsed, and never write without
//! the writer's token matching.

use super::config::{PgUrl, error_chain};
use super::connect::{CONNECT_BUDGET, Conn, Connector, classify, is_connection_error, quote_ident};
use super::schema::{self, SchemaError};
use crate::record::Record;
use crate::store::sql::{SqlOutcome, SqlTask, SqlTaskError};
use crate::store::{Attempt, Lease, Listing, Observation, Store, StoreError, jittered};
use crate::task::{Holder, TaskId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// Longest any one store query may take before the connection is given up as hung.
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A blocked statement (row lock held by a committing SQL task) gives up after this, server side.
const LOCK_TIMEOUT_MS: u32 = 5000;
/// Waiters keep their listening connection while fewer than this share of the server's
/// connections are in use; past it they give it up and look again every `CROWDED_POLL`. A fifth:
/// a rollout then never holds more than about that share of the application's database.
const CROWDED_SHARE: f64 = 0.2;
/// Pause between looks of a waiter without a connection (jittered to 0.5–1.5×).
const CROWDED_POLL: Duration = Duration::from_secs(1);

type PgResult<T> = Result<T, tokio_postgres::Error>;
type PgFuture<T> = Pin<Box<dyn Future<Output = PgResult<T>> + Send>>;

/// Marks a `Lease` as taken by this store (the row itself holds everything else).
pub(crate) struct PgHandle;

/// The statements, with the schema spliced in once.
struct Statements {
    take: String,
    insert: String,
    renew: String,
    write: String,
    release: String,
    read: String,
    read_with_layout: String,
    list: String,
    holder_of: String,
    lease_row: String,
    release_watched: String,
}

// Every statement runs typed (`query_typed*`, `execute_typed`: parsed, bound and run in one
// round trip, its parameters' types given here) rather than prepared first (two round trips):
// each process runs most of them once.
impl Statements {
    fn new(schema: &str) -> Statements {
        let t = format!("{}.tasks", quote_ident(schema));
        Statements {
            // One statement, one round trip: takes the lease if it is free or lapsed, and
            // either way returns the row as it now is. Always updating (a no-op when busy) locks
            // the row, so the answer reflects any concurrent taker that committed first.
            // Lapsed-ness is judged at `c.now`, read once so that every column agrees; should the
            // statement wait for a row lock, a stale `c.now` can only make the lease look *less*
            // lapsed. The new expiry counts from `clock_timestamp()` as the row is written, so a
            // wait never hands out a lease that is already (nearly) over. `$5` bounds that row-lock
            // wait for this statement only (`set_config(…, true)` ends with its transaction),
            // so that a waiter never waits on a locked row past its --wait-timeout; it is set
            // in `c`, which the join reads before the UPDATE locks the row.
            take: format!(
                "UPDATE {t} AS t SET
                    token       = CASE WHEN {free} THEN t.token + 1 ELSE t.token END,
                    holder      = CASE WHEN {free} THEN $2 ELSE t.holder END,
                    lease_nonce = CASE WHEN {free} THEN $3 ELSE t.lease_nonce END,
                    holder_pid  = CASE WHEN {free} THEN pg_backend_pid() ELSE t.holder_pid END,
                    acquired_at = CASE WHEN {free} THEN clock_timestamp() ELSE t.acquired_at END,
                    expires_at  = CASE WHEN {free}
                                  THEN clock_timestamp() + $4::bigint * interval '1 millisecond'
                                  ELSE t.expires_at END
                 FROM (SELECT clock_timestamp() AS now, set_config('lock_timeout', $5, true)) AS c
                 WHERE t.task = $1
                 RETURNING t.token, t.holder, t.lease_nonce,
                           EXTRACT(EPOCH FROM t.expires_at - c.now)::float8,
                           EXTRACT(EPOCH FROM c.now - t.acquired_at)::float8,
                           t.expires_at::text, t.updated_at::text, t.record",
                free = "(t.expires_at IS NULL OR t.expires_at <= c.now)"
            ),
            insert: format!(
                "INSERT INTO {t} (task, key, scope, instance) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (task) DO NOTHING"
            ),
            renew: format!(
                "UPDATE {t} SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
                 WHERE task = $1 AND token = $2 AND expires_at IS NOT NULL"
            ),
            // Fenced, and never replaces a success committed under the same token (an SQL task
            // whose COMMIT won the race with its cancellation) by a failure: the row lock that
            // transaction holds makes this UPDATE wait for it and then re-check this condition.
            write: format!(
                "UPDATE {t} SET record = $3, state = $4, fingerprint = $5, updated_at = clock_timestamp()
                 WHERE task = $1 AND token = $2 AND expires_at IS NOT NULL
                   AND (state = 'succeeded' AND (record->>'token')::bigint = $2 AND $4 <> 'succeeded') IS NOT TRUE"
            ),
            release: format!(
                "WITH r AS (
                    UPDATE {t} SET expires_at = NULL, holder = NULL, lease_nonce = NULL, holder_pid = NULL
                    WHERE task = $1 AND token = $2 AND expires_at IS NOT NULL RETURNING task)
                 SELECT pg_notify($3, task) FROM r"
            ),
            read: format!("SELECT record FROM {t} WHERE task = $1"),
            // The first read of a process: the layout's version beside the record, so that the
            // record counts only from tables of this build's layout (`open_reading`).
            read_with_layout: format!(
                "SELECT l.version, t.record FROM {s}.layout l LEFT JOIN {t} t ON t.task = $1
                 WHERE l.id = 1",
                s = quote_ident(schema)
            ),
            list: format!("SELECT task, record FROM {t} WHERE record IS NOT NULL ORDER BY task"),
            holder_of: format!(
                "SELECT token, holder, expires_at > clock_timestamp() FROM {t}
                 WHERE task = $1 AND expires_at IS NOT NULL"
            ),
            // For `observe` (the release watch): everything a live holder changes (renewals move `expires_at`,
            // record writes `updated_at`), and whether and for how long it is held, by the
            // database clock.
            lease_row: format!(
                "SELECT token, holder, lease_nonce, expires_at, updated_at,
                        expires_at > clock_timestamp(),
                        EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8
                 FROM {t} WHERE task = $1 AND expires_at IS NOT NULL"
            ),
            // Frees the lease only if the row is still exactly as the release watch saw it.
            release_watched: format!(
                "WITH r AS (
                    UPDATE {t} SET expires_at = NULL, holder = NULL, lease_nonce = NULL, holder_pid = NULL
                    WHERE task = $1 AND token = $2 AND lease_nonce IS NOT DISTINCT FROM $4
                      AND expires_at = $5 AND updated_at IS NOT DISTINCT FROM $6
                    RETURNING task)
                 SELECT pg_notify($3, task) FROM r"
            ),
        }
    }
}

/// One look at a held lease row, for the release watch.
#[derive(Debug, Clone)]
struct LeaseRow {
    token: i64,
    holder: Option<Holder>,
    nonce: Option<String>,
    expires_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    /// Not lapsed, by the database clock.
    live: bool,
    /// How long until it lapses, by the database clock.
    left: Duration,
}

impl LeaseRow {
    /// Nobody wrote the row in between: same acquisition, no renewal, no record write.
    /// The row as the release watch sees it: every renewal moves `expires_at`, every record
    /// write `updated_at`, every acquisition the token and nonce.
    fn observation(&self) -> Observation {
        Observation {
            holder: self.holder.clone(),
            held_for: None,
            version: format!(
                "{}/{}/{}/{:?}",
                self.token,
                self.nonce.as_deref().unwrap_or_default(),
                self.expires_at.to_rfc3339(),
                self.updated_at.map(|u| u.to_rfc3339())
            ),
            record: None,
            ttl: None,
            lapses_in: Some(if self.live { self.left } else { Duration::ZERO }),
        }
    }
}

pub struct PgStore {
    pub(crate) url: PgUrl,
    connector: Connector,
    channel: String,
    sql: Arc<Statements>,
    /// The shared connection; replaced when it dies. Held across reconnects so that concurrent
    /// callers wait for one reconnect instead of each opening a connection.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// The nonce of each acquisition under way, by row name: a take whose answer was lost with
    /// its connection is recognised as ours on the next look.
    nonces: Mutex<HashMap<String, String>>,
    /// Whether the tables were made sure of (on the first connection that got through).
    schema_ready: AtomicBool,
    /// Notifications subscribed to by a look that found the lease busy, for the wait after it.
    subscriptions: Mutex<HashMap<String, broadcast::Receiver<String>>>,
}

enum Take {
    Taken(u64),
    Busy(Observation),
    /// The row stayed locked for the whole lock wait (an SQL task committing, a paused holder
    /// mid-transaction): nothing learnt about the lease.
    Locked,
    Again,
}

impl PgStore {
    /// Connect and make sure initguard's tables exist (creating or upgrading them once).
    pub async fn open(url: &PgUrl) -> Result<PgStore, StoreError> {
        let (store, conn) = PgStore::connected(url).await?;
        if let Some(conn) = conn {
            store.ready(&conn).await?;
        }
        Ok(store)
    }

    /// `open`, and the record of `id` read in the same round trip as the connection's LISTEN and
    /// its layout check (one statement reads both): a start that only has to skip then waits
    /// for one round trip after logging in, not two. The read counts only when the tables have
    /// this build's layout; otherwise the tables are made sure of as `open` does and the record
    /// is read after.
    pub async fn open_reading(
        url: &PgUrl,
        id: &TaskId,
    ) -> Result<(PgStore, Result<Option<Record>, StoreError>), StoreError> {
        let (store, conn) = PgStore::connected(url).await?;
        let Some(conn) = conn else {
            // No connection to spare: the read tries once more at once, as the guard's first
            // read would; a server still full answers Overloaded, and the guard reads again
            // patiently.
            let early = store.read(id).await;
            return Ok((store, early));
        };
        let listen = store.listen(&conn);
        let read = store.read_with_layout(&conn, id);
        let (listened, read) = tokio::join!(listen, read);
        listened?;
        let current = match read? {
            Err(e) if is_connection_error(&e) => {
                return Err(store.pg_error("reading the record", &e));
            }
            // Tables missing (a first start), or a statement this layout does not answer.
            Err(_) => None,
            // Anything but this layout's version and a readable column is left to `ensure`
            // and the plain read, which say what is wrong.
            Ok(rows) => rows.first().and_then(|row| {
                let version: i32 = row.try_get(0).ok()?;
                let record: Option<serde_json::Value> = row.try_get(1).ok()?;
                (version == schema::LAYOUT).then_some(record)
            }),
        };
        let early = match current {
            Some(value) => {
                store.schema_ready.store(true, Ordering::Relaxed);
                store.record_of(id, value)
            }
            None => {
                store.ensure_schema(&conn).await?;
                store.schema_ready.store(true, Ordering::Relaxed);
                store.read(id).await
            }
        };
        Ok((store, early))
    }

    /// The record of `id`, creating and upgrading nothing (for commands that only read: `steps
    /// status`, `validate`, `--dry-run`): `None` when initguard's tables are not there yet.
    /// Tables of a newer layout are refused as `open` refuses them; an older layout's record is
    /// read as it is (a record says its own format).
    pub async fn read_only(url: &PgUrl, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let (store, conn) = PgStore::connected(url).await?;
        let conn = match conn {
            Some(conn) => conn,
            // No connection to spare: once more after a pause, as `open` and a read would; a
            // server still full answers Overloaded with its own reason.
            None => {
                tokio::time::sleep(jittered(Duration::from_millis(300))).await;
                store.connector.connect().await?
            }
        };
        let rows = match store.read_with_layout(&conn, id).await? {
            Err(e) if schema::not_created(&e) => return Ok(None),
            Err(e) if is_connection_error(&e) => {
                return Err(store.pg_error("reading the record", &e));
            }
            Err(e) => {
                return Err(match classify(&store.connector.label, &e) {
                    Err(fatal) => fatal,
                    Ok(reason) => store.unreachable(&format!("reading the record: {reason}")),
                });
            }
            Ok(rows) => rows,
        };
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let version: i32 = row
            .try_get(0)
            .map_err(|e| store.pg_error("reading the table layout", &e))?;
        if version > schema::LAYOUT {
            return Err(store.newer_layout(&url.schema, version));
        }
        let record: Option<serde_json::Value> = row
            .try_get(1)
            .map_err(|e| store.pg_error("reading the record", &e))?;
        store.record_of(id, record)
    }

    /// The layout's version beside the record of `id`, in one statement; the statement's own
    /// error is the caller's to judge (tables missing on a first start).
    async fn read_with_layout(
        &self,
        conn: &Conn,
        id: &TaskId,
    ) -> Result<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, StoreError> {
        let name = id.storage_name();
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&name, Type::TEXT)];
        tokio::time::timeout(
            QUERY_TIMEOUT,
            conn.client.query_typed(&self.sql.read_with_layout, &params),
        )
        .await
        .map_err(|_| self.unreachable("reading the record timed out"))
    }

    /// The store with its first connection, not made ready yet; no connection when the server
    /// has none to spare.
    async fn connected(url: &PgUrl) -> Result<(PgStore, Option<Arc<Conn>>), StoreError> {
        // Channel names are identifiers (at most 63 bytes); schema names are ASCII.
        let channel: String = format!("initguard_{}", url.schema)
            .chars()
            .take(63)
            .collect();
        let mut connector = Connector::new(url)?;
        connector.set_option("lock_timeout", &LOCK_TIMEOUT_MS.to_string());
        let conn = match connector.connect().await {
            Ok(conn) => Some(conn),
            // A server short of connections (a rollout of many replicas): the callers back off
            // and try again within their --wait-timeout; the first connection that gets through
            // makes sure of the tables.
            Err(StoreError::Overloaded { reason, .. }) => {
                tracing::info!(store = %connector.label, "the store has no connection to spare ({reason}); trying again shortly");
                None
            }
            Err(e) => return Err(e),
        };
        let store = PgStore {
            url: url.clone(),
            sql: Arc::new(Statements::new(&url.schema)),
            channel,
            connector,
            conn: tokio::sync::Mutex::new(conn.clone()),
            nonces: Mutex::new(HashMap::new()),
            schema_ready: AtomicBool::new(false),
            subscriptions: Mutex::new(HashMap::new()),
        };
        Ok((store, conn))
    }

    /// Make a new connection ready: LISTEN on initguard's channel and, until some connection has
    /// done it, make sure of the tables, both in one round trip (`Conn::listen`).
    async fn ready(&self, conn: &Conn) -> Result<(), StoreError> {
        let first = !self.schema_ready.load(Ordering::Relaxed);
        let listen = self.listen(conn);
        let schema = async {
            if first {
                self.ensure_schema(conn).await
            } else {
                Ok(())
            }
        };
        let (listened, schema) = tokio::join!(listen, schema);
        listened?;
        schema?;
        if first {
            self.schema_ready.store(true, Ordering::Relaxed);
        } else {
            tracing::info!(store = %self.connector.label, "reconnected to the store");
        }
        Ok(())
    }

    /// LISTEN on initguard's channel, on a new connection.
    async fn listen(&self, conn: &Conn) -> Result<(), StoreError> {
        match tokio::time::timeout(QUERY_TIMEOUT, conn.listen(&self.channel)).await {
            Err(_) => Err(self.unreachable("listening for releases timed out")),
            Ok(Err(e)) => Err(self.pg_error("listening for releases", &e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    pub(crate) async fn ensure_schema(&self, conn: &Conn) -> Result<(), StoreError> {
        match tokio::time::timeout(QUERY_TIMEOUT, schema::ensure(conn, &self.url.schema)).await {
            Err(_) => Err(self.unreachable("creating initguard's tables timed out")),
            Ok(Ok(())) => Ok(()),
            Ok(Err(SchemaError::Newer { schema, found })) => Err(self.newer_layout(&schema, found)),
            Ok(Err(SchemaError::Db(e))) => Err(self.pg_error("creating initguard's tables", &e)),
        }
    }

    /// Tables of a layout newer than this build's: refused, never read or changed.
    fn newer_layout(&self, schema: &str, found: i32) -> StoreError {
        StoreError::NewerSchema {
            key: "initguard's table layout".into(),
            location: format!("schema {schema} of {}", self.connector.label),
            found: u64::try_from(found).unwrap_or_default(),
        }
    }

    fn unreachable(&self, reason: &str) -> StoreError {
        StoreError::Unreachable {
            store: self.connector.label.clone(),
            reason: reason.to_string(),
        }
    }

    /// Typed error for a failed statement; `what` says what initguard was doing.
    pub(crate) fn pg_error(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        if is_connection_error(e) {
            return self.unreachable(&format!("{what}: {}", error_chain(e)));
        }
        match classify(&self.connector.label, e) {
            Err(StoreError::Forbidden { store, reason }) => StoreError::Forbidden {
                store,
                reason: format!(
                    "{what}: {reason}; grant the role USAGE and CREATE on schema {0} (or create the tables as an administrator)",
                    self.url.schema
                ),
            },
            Err(fatal) => fatal,
            Ok(reason) => self.unreachable(&format!("{what}: {reason}")),
        }
    }

    /// The live shared connection, reconnecting (with bounded retries) when it died; gives up at
    /// `deadline`, including while another caller holds the slot to reconnect.
    async fn conn_until(&self, deadline: Instant) -> Result<Arc<Conn>, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(mut slot) = tokio::time::timeout(left, self.conn.lock()).await else {
            return Err(self.unreachable(&format!(
                "reconnecting: the server did not answer within {:.1}s",
                left.as_secs_f64()
            )));
        };
        if let Some(c) = slot.as_ref()
            && c.usable()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let c = self.connector.connect_until(deadline).await?;
        self.ready(&c).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn conn(&self) -> Result<Arc<Conn>, StoreError> {
        self.conn_until(Instant::now() + CONNECT_BUDGET).await
    }

    /// Forget `c` if it is still the shared connection (it hung or died).
    /// Never waits: whoever holds the slot is reconnecting already, and `hung` keeps `c` from
    /// being handed out again meanwhile.
    async fn forget(&self, c: &Arc<Conn>) {
        c.hung.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.conn.try_lock()
            && slot.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, c))
        {
            *slot = None;
        }
    }

    /// Run one statement on the shared connection, all of it (reconnecting included) within
    /// `limit`: a server that does not answer is reported unreachable when `limit` is up, never
    /// waited for. On a connection found dead, reconnect and try once more while time is left.
    /// Only for statements that are safe to repeat.
    async fn call<T>(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(Arc<Conn>) -> PgFuture<T>,
    ) -> Result<T, StoreError> {
        let deadline = Instant::now() + limit;
        let mut tries = 0;
        loop {
            tries += 1;
            let conn = self.conn_until(deadline).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, f(conn.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if is_connection_error(&e) && tries < 2 => {
                    tracing::warn!(store = %self.connector.label, "{what}: {}; reconnecting", error_chain(&e));
                    self.forget(&conn).await;
                }
                Ok(Err(e)) => {
                    if is_connection_error(&e) {
                        self.forget(&conn).await;
                    }
                    return Err(self.pg_error(what, &e));
                }
                Err(_) => {
                    // A hung connection stays hung: drop it so the next call starts afresh.
                    self.forget(&conn).await;
                    return Err(self.unreachable(&format!(
                        "{what}: the server did not answer within {:.1}s",
                        limit.as_secs_f64()
                    )));
                }
            }
        }
    }

    /// `id`'s record from the `record` column as read.
    fn record_of(
        &self,
        id: &TaskId,
        value: Option<serde_json::Value>,
    ) -> Result<Option<Record>, StoreError> {
        value.map(|v| self.decode(&id.to_string(), v)).transpose()
    }

    fn decode(&self, id_name: &str, value: serde_json::Value) -> Result<Record, StoreError> {
        let location = format!("{} (table {}.tasks)", self.connector.label, self.url.schema);
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        Record::from_json(&bytes).map_err(|e| StoreError::unreadable_record(id_name, location, e))
    }

    fn lost(lease: &Lease, reason: impl Into<String>) -> StoreError {
        StoreError::lease_lost(lease, reason)
    }

    /// A fenced statement matches exactly the one row whose token is ours; none means lost.
    fn fenced(rows: u64, lease: &Lease, why: &str) -> Result<(), StoreError> {
        if rows == 1 {
            Ok(())
        } else {
            Err(Self::lost(lease, why))
        }
    }

    /// Leases from another store must not fence writes here.
    pub(crate) fn check_lease(lease: &Lease) -> Result<(), StoreError> {
        if lease.handle.is::<PgHandle>() {
            Ok(())
        } else {
            Err(Self::lost(
                lease,
                "the lease was not taken by this postgres store",
            ))
        }
    }

    pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
        i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    pub(crate) fn token_i64(token: u64) -> i64 {
        i64::try_from(token).unwrap_or(i64::MAX)
    }

    /// The fenced UPDATE of the record, as the SQL-task transaction also runs it.
    pub(crate) fn write_statement(&self) -> &str {
        &self.sql.write
    }

    /// One attempt at taking the lease: one UPDATE when it is free; otherwise who holds it and
    /// for how much longer, by the database clock.
    async fn try_take(
        &self,
        id: &TaskId,
        holder: &serde_json::Value,
        nonce: &str,
        ttl_ms: i64,
        lock_wait: Duration,
    ) -> Result<Take, StoreError> {
        let name = id.storage_name();
        let lock_ms = lock_wait
            .as_millis()
            .clamp(1, u128::from(LOCK_TIMEOUT_MS))
            .to_string();
        let sql = self.sql.clone();
        let (n, h, nc) = (name.clone(), holder.clone(), nonce.to_string());
        type Seen = (
            i64,
            Option<serde_json::Value>,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<String>,
            Option<String>,
            Option<serde_json::Value>,
        );
        // Outer None: the row stayed locked past lock_timeout (an SQL task committing).
        let seen: Option<Option<Seen>> = self
            .call("taking the lease", QUERY_TIMEOUT, move |c| {
                let (sql, n, h, nc, lock_ms) = (
                    sql.clone(),
                    n.clone(),
                    h.clone(),
                    nc.clone(),
                    lock_ms.clone(),
                );
                Box::pin(async move {
                    let row = match c
                        .client
                        .query_typed_opt(
                            &sql.take,
                            &[
                                (&n, Type::TEXT),
                                (&h, Type::JSONB),
                                (&nc, Type::TEXT),
                                (&ttl_ms, Type::INT8),
                                (&lock_ms, Type::TEXT),
                            ],
                        )
                        .await
                    {
                        Ok(row) => row,
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    };
                    let seen = row
                        .map(|r| {
                            Ok((
                                r.try_get(0)?,
                                r.try_get(1)?,
                                r.try_get(2)?,
                                r.try_get(3)?,
                                r.try_get(4)?,
                                r.try_get(5)?,
                                r.try_get(6)?,
                                r.try_get(7)?,
                            ))
                        })
                        .transpose()?;
                    Ok(Some(seen))
                })
            })
            .await?;
        let Some(seen) = seen else {
            return Ok(Take::Locked);
        };
        let Some((token, holder_json, row_nonce, left, held_for, expires, updated, record)) = seen
        else {
            let sql = self.sql.clone();
            let (key, scope, inst) = (
                id.key.to_string(),
                id.scope.to_string(),
                id.instance.clone(),
            );
            self.call("creating the task row", QUERY_TIMEOUT, move |c| {
                let (sql, n, k, s, i) = (
                    sql.clone(),
                    name.clone(),
                    key.clone(),
                    scope.clone(),
                    inst.clone(),
                );
                Box::pin(async move {
                    let text = Type::TEXT;
                    c.client
                        .execute_typed(
                            &sql.insert,
                            &[
                                (&n, text.clone()),
                                (&k, text.clone()),
                                (&s, text.clone()),
                                (&i, text),
                            ],
                        )
                        .await
                })
            })
            .await?;
            return Ok(Take::Again);
        };
        // Ours: just now, or by an earlier attempt whose answer was lost with its connection.
        if row_nonce.as_deref() == Some(nonce) {
            return Ok(Take::Taken(u64::try_from(token).unwrap_or_default()));
        }
        Ok(Take::Busy(Observation {
            holder: holder_json.and_then(|h| serde_json::from_value(h).ok()),
            held_for: held_for.and_then(|s| Duration::try_from_secs_f64(s).ok()),
            version: format!(
                "{token}/{}/{}/{}",
                row_nonce.unwrap_or_default(),
                expires.unwrap_or_default(),
                updated.unwrap_or_default()
            ),
            // A corrupt record is the guard's to report, from its own read.
            record: record
                .and_then(|v| self.decode(&id.to_string(), v).ok())
                .map(Box::new),
            ttl: None,
            lapses_in: Some(
                left.and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .unwrap_or(Duration::ZERO),
            ),
        }))
    }

    /// Whether `lease` is still the task's current lease (its token, not released).
    pub(crate) async fn holds(&self, lease: &Lease) -> Result<bool, StoreError> {
        let sql = self.sql.clone();
        let (n, token) = (lease.id.storage_name(), Self::token_i64(lease.token));
        let row = self
            .call("reading the lease", QUERY_TIMEOUT, move |c| {
                let (sql, n) = (sql.clone(), n.clone());
                Box::pin(async move {
                    c.client
                        .query_typed_opt(&sql.holder_of, &[(&n, Type::TEXT)])
                        .await
                })
            })
            .await?;
        Ok(row
            .map(|r| r.try_get::<_, i64>(0).is_ok_and(|t| t == token))
            .unwrap_or(false))
    }

    /// The task's lease row while it is held (released: `None`).
    async fn lease_row(&self, name: &str) -> Result<Option<LeaseRow>, StoreError> {
        let sql = self.sql.clone();
        let n = name.to_string();
        type Raw = (
            i64,
            Option<serde_json::Value>,
            Option<String>,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            bool,
            f64,
        );
        let raw: Option<Raw> = self
            .call("reading the lease", QUERY_TIMEOUT, move |c| {
                let (sql, n) = (sql.clone(), n.clone());
                Box::pin(async move {
                    let row = c
                        .client
                        .query_typed_opt(&sql.lease_row, &[(&n, Type::TEXT)])
                        .await?;
                    row.map(|r| {
                        Ok((
                            r.try_get(0)?,
                            r.try_get(1)?,
                            r.try_get(2)?,
                            r.try_get(3)?,
                            r.try_get(4)?,
                            r.try_get(5)?,
                            r.try_get(6)?,
                        ))
                    })
                    .transpose()
                })
            })
            .await?;
        Ok(raw.map(
            |(token, holder, nonce, expires_at, updated_at, live, left)| LeaseRow {
                token,
                holder: holder.and_then(|h| serde_json::from_value(h).ok()),
                nonce,
                expires_at,
                updated_at,
                live,
                left: Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO),
            },
        ))
    }

    /// Free the lease if its row is still exactly `seen`; false when it has changed since.
    async fn release_row(&self, name: &str, seen: &LeaseRow) -> Result<bool, StoreError> {
        let sql = self.sql.clone();
        let (n, ch) = (name.to_string(), self.channel.clone());
        let (token, nonce, expires_at, updated_at) = (
            seen.token,
            seen.nonce.clone(),
            seen.expires_at,
            seen.updated_at,
        );
        let rows = self
            .call("releasing the lease", QUERY_TIMEOUT, move |c| {
                let (sql, n, ch, nonce) = (sql.clone(), n.clone(), ch.clone(), nonce.clone());
                Box::pin(async move {
                    c.client
                        .query_typed(
                            &sql.release_watched,
                            &[
                                (&n, Type::TEXT),
                                (&token, Type::INT8),
                                (&ch, Type::TEXT),
                                (&nonce, Type::TEXT),
                                (&expires_at, Type::TIMESTAMPTZ),
                                (&updated_at, Type::TIMESTAMPTZ),
                            ],
                        )
                        .await
                })
            })
            .await?;
        Ok(!rows.is_empty())
    }

    /// Wait for a release notification about `name`, or for the connection to end.
    async fn notified(rx: &mut broadcast::Receiver<String>, name: &str) {
        loop {
            match rx.recv().await {
                Ok(payload) if payload == name => return,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Whether the server's connections are scarce enough that a waiter should not sit on one.
    async fn crowded(&self, conn: &Arc<Conn>) -> Result<bool, StoreError> {
        let query = conn.client.query_typed_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    current_setting('max_connections')::bigint",
            &[],
        );
        match tokio::time::timeout(QUERY_TIMEOUT, query).await {
            Ok(Ok(row)) => {
                let used: i64 = row.try_get(0).unwrap_or(0);
                let max: i64 = row.try_get(1).unwrap_or(i64::MAX);
                Ok(used as f64 >= max as f64 * CROWDED_SHARE)
            }
            // Not knowing is no reason to hold a connection either way; keep the usual wait.
            Ok(Err(_)) => Ok(false),
            Err(_) => {
                self.forget(conn).await;
                Err(self.unreachable(&format!(
                    "counting connections: the server did not answer within {:.1}s",
                    QUERY_TIMEOUT.as_secs_f64()
                )))
            }
        }
    }

    /// How to reach the store database, for the SQL-task connections of `sql_task.rs`.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.connector.label.clone()
    }

    fn supports_sql(&self) -> bool {
        true
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Record>, StoreError> {
        let name = id.storage_name();
        let sql = self.sql.clone();
        let n = name.clone();
        let value: Option<serde_json::Value> = self
            .call("reading the record", QUERY_TIMEOUT, move |c| {
                let (sql, n) = (sql.clone(), n.clone());
                Box::pin(async move {
                    // Typed: parsed, bound and run in one round trip (no prepare first).
                    let rows = c.client.query_typed(&sql.read, &[(&n, Type::TEXT)]).await?;
                    Ok(rows.first().map(|r| r.try_get(0)).transpose()?.flatten())
                })
            })
            .await?;
        self.record_of(id, value)
    }

    async fn try_acquire(
        &self,
        id: &TaskId,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Attempt, StoreError> {
        let name = id.storage_name();
        let nonce = self
            .nonces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_insert_with(|| hex::encode(rand::random::<[u8; 16]>()))
            .clone();
        let holder_json = serde_json::to_value(holder).unwrap_or_default();
        // Listen before looking: a release between this look and the wait must still wake us.
        let notes = self.conn().await?.notes.subscribe();
        loop {
            let lock_wait = Duration::from_millis(u64::from(LOCK_TIMEOUT_MS));
            match self
                .try_take(id, &holder_json, &nonce, Self::ttl_ms(ttl), lock_wait)
                .await?
            {
                Take::Taken(token) => {
                    self.nonces
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&name);
                    return Ok(Attempt::Taken(Lease {
                        id: id.clone(),
                        token,
                        holder: holder.clone(),
                        ttl,
                        handle: Box::new(PgHandle),
                    }));
                }
                Take::Again => continue,
                // The row is locked by a transaction in flight (an SQL task committing): who
                // holds the lease is unknown until it ends; look again soon.
                Take::Locked => {
                    return Ok(Attempt::Busy(Observation {
                        holder: None,
                        held_for: None,
                        version: "locked".into(),
                        record: None,
                        ttl: None,
                        lapses_in: Some(Duration::from_millis(200)),
                    }));
                }
                Take::Busy(seen) => {
                    self.subscriptions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name, notes);
                    return Ok(Attempt::Busy(seen));
                }
            }
        }
    }

    async fn wait_change(
        &self,
        id: &TaskId,
        // The caller's `until` already stops at the lease's lapse (`acquire::wake_by`).
        _seen: &Observation,
        until: Instant,
    ) -> Result<(), StoreError> {
        let name = id.storage_name();
        // Subscribed before the look that found the lease busy (`try_acquire`), so that a
        // release committed in between is not missed.
        let early = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        let conn = self.conn().await?;
        if self.crowded(&conn).await? {
            // Waiting must not starve the application of connections: give ours up and look
            // again in about a second (the next look reconnects).
            self.forget(&conn).await;
            drop(conn);
            let pause = jittered(CROWDED_POLL).min(until.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            return Ok(());
        }
        let mut notes = early.unwrap_or_else(|| conn.notes.subscribe());
        tokio::select! {
            _ = Self::notified(&mut notes, &name) => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
        Ok(())
    }

    async fn observe(&self, id: &TaskId) -> Result<Option<Observation>, StoreError> {
        let name = id.storage_name();
        // Listen before looking, as `try_acquire` does, for a `wait_change` after this look.
        let notes = self.conn().await?.notes.subscribe();
        let row = self.lease_row(&name).await?;
        if row.is_some() {
            self.subscriptions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, notes);
        }
        Ok(row.map(|row| row.observation()))
    }

    async fn free_if_unchanged(&self, id: &TaskId, seen: &Observation) -> Result<bool, StoreError> {
        let name = id.storage_name();
        let Some(row) = self.lease_row(&name).await? else {
            return Ok(false);
        };
        if row.observation().version != seen.version {
            return Ok(false);
        }
        self.release_row(&name, &row).await
    }

    async fn renew(&self, lease: &Lease) -> Result<(), StoreError> {
        Self::check_lease(lease)?;
        let sql = self.sql.clone();
        let (n, token, ttl) = (
            lease.id.storage_name(),
            Self::token_i64(lease.token),
            Self::ttl_ms(lease.ttl),
        );
        // A renewal that cannot finish within a third of the lease is as good as failed.
        let limit = (lease.ttl / 3).clamp(Duration::from_millis(300), QUERY_TIMEOUT);
        let rows = self
            .call("renewing the lease", limit, move |c| {
                let (sql, n) = (sql.clone(), n.clone());
                Box::pin(async move {
                    c.client
                        .execute_typed(
                            &sql.renew,
                            &[(&n, Type::TEXT), (&token, Type::INT8), (&ttl, Type::INT8)],
                        )
                        .await
                })
            })
            .await?;
        Self::fenced(
            rows,
            lease,
            "another holder took the lease over after it lapsed, or it was released",
        )
    }

    async fn write(&self, lease: &Lease, record: &Record) -> Result<(), StoreError> {
        Self::check_lease(lease)?;
        let value: serde_json::Value =
            serde_json::from_slice(&record.to_json()).unwrap_or_default();
        let sql = self.sql.clone();
        let (n, token, state, fp) = (
            lease.id.storage_name(),
            Self::token_i64(lease.token),
            record.state.to_string(),
            record.fingerprint.clone(),
        );
        // Repeating this UPDATE is harmless: same token, same document.
        let rows = self
            .call("writing the record", QUERY_TIMEOUT, move |c| {
                let (sql, n, v, s, f) = (
                    sql.clone(),
                    n.clone(),
                    value.clone(),
                    state.clone(),
                    fp.clone(),
                );
                Box::pin(async move {
                    c.client
                        .execute_typed(
                            &sql.write,
                            &[
                                (&n, Type::TEXT),
                                (&token, Type::INT8),
                                (&v, Type::JSONB),
                                (&s, Type::TEXT),
                                (&f, Type::TEXT),
                            ],
                        )
                        .await
                })
            })
            .await?;
        Self::fenced(
            rows,
            lease,
            "the write was fenced off: another holder has taken the lease since",
        )
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let sql = self.sql.clone();
        let (n, token, ch) = (
            lease.id.storage_name(),
            Self::token_i64(lease.token),
            self.channel.clone(),
        );
        self.call("releasing the lease", QUERY_TIMEOUT, move |c| {
            let (sql, n, ch) = (sql.clone(), n.clone(), ch.clone());
            Box::pin(async move {
                c.client
                    .query_typed(
                        &sql.release,
                        &[(&n, Type::TEXT), (&token, Type::INT8), (&ch, Type::TEXT)],
                    )
                    .await
            })
        })
        .await?;
        Ok(())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let sql = self.sql.clone();
        let rows: Vec<(String, Option<serde_json::Value>)> = self
            .call("listing records", QUERY_TIMEOUT, move |c| {
                let sql = sql.clone();
                Box::pin(async move {
                    c.client
                        .query(&sql.list, &[])
                        .await?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                        .collect()
                })
            })
            .await?;
        let mut out = Listing::default();
        for (name, value) in rows {
            let (Some(id), Some(value)) = (TaskId::from_storage_name(&name), value) else {
                continue;
            };
            let read = self.decode(&name, value).map(Some);
            out.add(id, read)?;
        }
        Ok(out)
    }

    async fn run_sql_exactly_once(
        &self,
        lease: &Lease,
        task: &SqlTask,
        done: &Record,
    ) -> Result<SqlOutcome, SqlTaskError> {
        Self::check_lease(lease)?;
        super::sql_task::run(self, lease, task, done).await
    }
}
