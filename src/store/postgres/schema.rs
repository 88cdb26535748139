//! initguard's tables in PostgreSQL: created on first use and upgraded step by step, under a
//! transaction-scoped advisory lock so that two first users never race. The layout version lives
//! in `<schema>.layout`. Must never drop or rewrite user data, and never downgrade a newer layout.

use super::connect::{Conn, quote_ident};
use sha2::{Digest, Sha256};

/// Layout this build creates and understands.
pub const LAYOUT: i32 = 1;

/// Upgrade steps: `STEPS[n]` takes the layout from version n to n+1. Only ever append.
/// `{s}` is replaced by the quoted schema name.
const STEPS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE {s}.tasks (
        task         text PRIMARY KEY,          -- TaskId::storage_name
        key          text NOT NULL,
        scope        text NOT NULL,
        instance     text,
        token        bigint NOT NULL DEFAULT 0, -- fencing counter, +1 per acquisition
        holder       jsonb,                     -- current lease holder, NULL when free
        lease_nonce  text,                      -- identifies one acquisition, for safe retries
        holder_pid   integer,                   -- backend pid of the holder's connection
        acquired_at  timestamptz,               -- database clock
        expires_at   timestamptz,               -- database clock; NULL = released
        state        text,
        fingerprint  text,
        record       jsonb,                     -- the Record document
        updated_at   timestamptz
    );
    CREATE INDEX tasks_key_idx ON {s}.tasks (key);
    CREATE INDEX tasks_state_idx ON {s}.tasks (state);
    -- SQL tasks with --sql-target: in the target database, the fence (newest token that ran
    -- there) and the completion rows, both written in the task's own transaction.
    CREATE TABLE {s}.sql_fence (
        task        text PRIMARY KEY,
        token       bigint NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE {s}.sql_completions (
        task         text NOT NULL,
        fingerprint  text NOT NULL,
        token        bigint NOT NULL,
        completed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        record       jsonb NOT NULL,
        PRIMARY KEY (task, fingerprint)
    );
    "#,
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "the initguard tables in schema {schema} have layout {found}, newer than this initguard understands ({LAYOUT}); upgrade initguard"
    )]
    Newer { schema: String, found: i32 },
}

/// Key of the advisory lock that serializes schema creation and upgrades in one database.
pub(crate) fn schema_lock_key(schema: &str) -> i64 {
    lock_key(&format!("initguard schema {schema}"))
}

/// A stable 64-bit advisory-lock key (never `DefaultHasher`: it must agree across builds).
pub(crate) fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Make sure the tables exist at `LAYOUT`. Cheap when they do (one query, no lock, no DDL), so
/// that a role without CREATE can use tables an administrator created.
pub(crate) async fn ensure(conn: &Conn, schema: &str) -> Result<(), SchemaError> {
    let s = quote_ident(schema);
    // Typed (no prepare first): the one query of every start, in one round trip.
    match conn
        .client
        .query_typed(&format!("SELECT version FROM {s}.layout WHERE id = 1"), &[])
        .await
        .map(|rows| rows.into_iter().next())
    {
        Ok(Some(row)) => {
            let found: i32 = row.try_get(0)?;
            if found == LAYOUT {
                return Ok(());
            }
            if found > LAYOUT {
                return Err(SchemaError::Newer {
                    schema: schema.to_string(),
                    found,
                });
            }
        }
        Ok(None) => {}
        Err(e) if not_created(&e) => {}
        Err(e) => return Err(e.into()),
    }
    upgrade(conn, schema).await
}

/// The error of a statement on initguard's tables before they were created (no such table, or
/// no such schema).
pub(crate) fn not_created(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code() == Some(&SqlState::UNDEFINED_TABLE) || e.code() == Some(&SqlState::INVALID_SCHEMA_NAME)
}

async fn upgrade(conn: &Conn, schema: &str) -> Result<(), SchemaError> {
    let s = quote_ident(schema);
    let client = &conn.client;
    client.batch_execute("BEGIN").await?;
    let res = async {
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&schema_lock_key(schema)])
            .await?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.layout (
                     id integer PRIMARY KEY CHECK (id = 1),
                     version integer NOT NULL,
                     updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
                 );
                 INSERT INTO {s}.layout (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;"
            ))
            .await?;
        let found: i32 = client
            .query_one(&format!("SELECT version FROM {s}.layout WHERE id = 1"), &[])
            .await?
            .try_get(0)?;
        if found > LAYOUT {
            return Err(SchemaError::Newer {
                schema: schema.to_string(),
                found,
            });
        }
        for (from, step) in STEPS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
            client.batch_execute(&step.replace("{s}", &s)).await?;
            let to = i32::try_from(from + 1).unwrap_or(LAYOUT);
            client
                .execute(
                    &format!(
                        "UPDATE {s}.layout SET version = $1, updated_at = clock_timestamp() WHERE id = 1"
                    ),
                    &[&to],
                )
                .await?;
            tracing::info!(schema, "initguard tables in schema {schema} upgraded to layout {to}");
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => {
            client.batch_execute("COMMIT").await?;
            Ok(())
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_match_the_layout() {
        assert_eq!(STEPS.len(), usize::try_from(LAYOUT).unwrap());
    }

    /// Pins the advisory-lock keys: two initguard versions in one rollout must take the same lock
    /// (the first 8 bytes of SHA-256, big-endian), or both would create or upgrade the tables at
    /// once and queue on different locks. Never paste new values in.
    #[test]
    fn lock_keys_are_pinned() {
        assert_eq!(lock_key("x"), 3_274_422_879_871_479_876);
        assert_eq!(schema_lock_key("initguard"), -4_824_056_964_136_214_035);
        assert_eq!(schema_lock_key("a"), -6_389_952_278_515_775_625);
    }
}
