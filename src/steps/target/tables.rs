//! The steps tables in the target database: `steps_fence` (the newest token per set),
//! `steps_history` (one row per step) and the check function every step transaction calls.
//! Created on the first `begin`, never by a status read; must never drop or rewrite rows.
//!
//! Created under the same transaction-scoped advisory lock as the store's own tables
//! (`schema_lock_key`): `CREATE … IF NOT EXISTS` alone races (two creators both pass the check
//! and one fails with a unique violation on `pg_type` or `pg_namespace`), and the lock also
//! orders them against a PG store creating its tables in the same schema at the same moment.
//! Under the lock every statement is idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), so the
//! second creator just finds everything there.
//!
//! Layout changes are made by a new `steps_check_vN` or `steps_step_vN` function created in the
//! same transaction as the `ALTER TABLE … ADD COLUMN IF NOT EXISTS` they need: the function's
//! presence is the layout marker, found in one cheap query (`ready`), and older builds keep
//! calling the function they know. `steps_step_v3` repeats `steps_check_v2`'s fence and after
//! checks instead of calling it: each step pays for every statement, and v2 stays as older
//! builds know it.

use crate::store::postgres::{Conn, quote_ident, schema_lock_key};

/// The check function of the fenced transactions of script and no-transaction steps.
const CHECK_FN: &str = "steps_check_v2";
/// The function that starts every transactional step; its presence marks this layout (with its
/// argument types, for `to_regprocedure`).
const STEP_FN: &str = "steps_step_v3";
const STEP_ARGS: &str = "(text,bigint,text,text,boolean,text,text,text,text,text,text,text)";

/// SQLSTATE raised by the check function when the set's fence holds another token.
pub(crate) const FENCED: &str = "IGF01";
/// SQLSTATE raised when the step is already applied (as it is now).
pub(crate) const ALREADY_APPLIED: &str = "IGA01";
/// SQLSTATE raised when the step sent just before this one is not applied.
pub(crate) const AFTER_UNAPPLIED: &str = "IGP01";

/// The DDL; `{s}` is the quoted schema.
const DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS {s};
-- The newest fencing token per set: every step transaction locks its row and checks it, so a
-- newer applier's `begin` waits for an older one's transaction in flight, and an older applier
-- arriving later is refused.
CREATE TABLE IF NOT EXISTS {s}.steps_fence (
    set_name    text PRIMARY KEY,
    token       bigint NOT NULL,
    holder      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- One row per step of a set, updated in place.
CREATE TABLE IF NOT EXISTS {s}.steps_history (
    set_name        text NOT NULL,
    step            text NOT NULL,    -- versioned: the version's parts joined by '.'; repeatable: 'R:' || description
    version         text,             -- as the file name writes it; NULL for a repeatable step
    description     text NOT NULL,
    kind            text NOT NULL,    -- 'sql' or 'script'
    file            text,
    checksum        text,             -- 'sha256:…'
    state           text NOT NULL CHECK (state IN ('applied', 'failed', 'running')),
    started_at      timestamptz,
    finished_at     timestamptz,
    duration_ms     bigint,
    holder          text NOT NULL,
    token           bigint NOT NULL,
    statements_done integer NOT NULL DEFAULT 0,
    error           text,
    adopted_from    text,
    PRIMARY KEY (set_name, step)
);
-- Called first in every step transaction: locks the set's fence row (held until the
-- transaction ends), refuses another token, and refuses a step that history already has as
-- applied (for a repeatable step: with this checksum). Given p_after, the step sent just before
-- this one (its transaction queued ahead of this one on the connection, not yet answered), it
-- also refuses unless history has that step applied (with p_after_checksum, when given): a
-- step never runs after one that failed or was cancelled. (v1, without p_after, is the older
-- builds'; they create it themselves when they find it missing.)
CREATE OR REPLACE FUNCTION {s}.steps_check_v2(
    p_set text, p_token bigint, p_step text, p_checksum text, p_repeatable boolean,
    p_after text, p_after_checksum text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    t  bigint;
    st text;
    ck text;
BEGIN
    SELECT token INTO t FROM {s}.steps_fence WHERE set_name = p_set FOR UPDATE;
    IF t IS DISTINCT FROM p_token THEN
        RAISE EXCEPTION 'initguard: steps of % are fenced by token %', p_set, coalesce(t::text, 'none')
            USING ERRCODE = 'IGF01', DETAIL = coalesce(t::text, '0');
    END IF;
    IF p_step IS NOT NULL THEN
        SELECT state, checksum INTO st, ck FROM {s}.steps_history
         WHERE set_name = p_set AND step = p_step;
        IF st = 'applied' AND (NOT p_repeatable OR ck IS NOT DISTINCT FROM p_checksum) THEN
            RAISE EXCEPTION 'initguard: step % of % is already applied', p_step, p_set
                USING ERRCODE = 'IGA01';
        END IF;
    END IF;
    IF p_after IS NOT NULL THEN
        PERFORM FROM {s}.steps_history
         WHERE set_name = p_set AND step = p_after AND state = 'applied'
           AND (p_after_checksum IS NULL OR checksum = p_after_checksum);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'initguard: step % of % is not applied, so the step after it is not run', p_after, p_set
                USING ERRCODE = 'IGP01';
        END IF;
    END IF;
END
$fn$;
-- The first statement of every transactional step, in the step's transaction, before the step's
-- SQL: makes the transaction's commit asynchronous (`finish` makes the run durable), locks the
-- set's fence row and refuses another token, refuses the step unless p_after (the step sent
-- just before it) is applied, and writes the step's row `applied`, refusing a step that history
-- already has applied (for a repeatable step: with this checksum). The step's SQL runs after it
-- in the same transaction: should it fail, the row goes with it. `duration_ms` is left NULL and
-- `finished_at` at this instant, for the client to write the duration it measured (`finish`).
CREATE OR REPLACE FUNCTION {s}.steps_step_v3(
    p_set text, p_token bigint, p_step text, p_checksum text, p_repeatable boolean,
    p_after text, p_after_checksum text,
    p_version text, p_description text, p_kind text, p_file text, p_holder text
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    t bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT token INTO t FROM {s}.steps_fence WHERE set_name = p_set FOR UPDATE;
    IF t IS DISTINCT FROM p_token THEN
        RAISE EXCEPTION 'initguard: steps of % are fenced by token %', p_set, coalesce(t::text, 'none')
            USING ERRCODE = 'IGF01', DETAIL = coalesce(t::text, '0');
    END IF;
    IF p_after IS NOT NULL THEN
        PERFORM FROM {s}.steps_history
         WHERE set_name = p_set AND step = p_after AND state = 'applied'
           AND (p_after_checksum IS NULL OR checksum = p_after_checksum);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'initguard: step % of % is not applied, so the step after it is not run', p_after, p_set
                USING ERRCODE = 'IGP01';
        END IF;
    END IF;
    INSERT INTO {s}.steps_history AS h (set_name, step, version, description, kind, file,
        checksum, state, started_at, finished_at, duration_ms, holder, token, statements_done,
        error, adopted_from)
    VALUES (p_set, p_step, p_version, p_description, p_kind, p_file, p_checksum, 'applied',
        now(), clock_timestamp(), NULL, p_holder, p_token, 0, NULL, NULL)
    ON CONFLICT (set_name, step) DO UPDATE SET version = EXCLUDED.version,
        description = EXCLUDED.description, kind = EXCLUDED.kind, file = EXCLUDED.file,
        checksum = EXCLUDED.checksum, holder = EXCLUDED.holder, token = EXCLUDED.token,
        adopted_from = NULL, state = 'applied', started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at, duration_ms = NULL, statements_done = 0, error = NULL
    WHERE h.state <> 'applied' OR (p_repeatable AND h.checksum IS DISTINCT FROM p_checksum);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'initguard: step % of % is already applied', p_step, p_set
            USING ERRCODE = 'IGA01';
    END IF;
END
$fn$;
"#;

/// `schema.steps_check_v2`, quoted, for calls.
pub(crate) fn check_fn(schema: &str) -> String {
    format!("{}.{CHECK_FN}", quote_ident(schema))
}

/// `schema.steps_step_v3`, quoted, for calls.
pub(crate) fn step_fn(schema: &str) -> String {
    format!("{}.{STEP_FN}", quote_ident(schema))
}

/// Whether an error's context (`where`) places it inside the step function.
pub(crate) fn in_step_fn(context: &str) -> bool {
    context.contains(STEP_FN)
}

/// Whether this layout is in place (one query; creates nothing).
pub(crate) async fn ready(conn: &Conn, schema: &str) -> Result<bool, tokio_postgres::Error> {
    let name = format!("{}.{STEP_FN}{STEP_ARGS}", quote_ident(schema));
    conn.client
        .query_typed_one(
            "SELECT to_regprocedure($1) IS NOT NULL",
            &[(&name, tokio_postgres::types::Type::TEXT)],
        )
        .await?
        .try_get(0)
}

/// Create the tables and the function when missing. Safe when several appliers (and a PG store)
/// do it at once: serialised by the schema's advisory lock, every statement idempotent. One
/// message (lock, DDL, commit), so that the transaction is never left idle between messages.
pub(crate) async fn ensure(conn: &Conn, schema: &str) -> Result<(), tokio_postgres::Error> {
    if ready(conn, schema).await? {
        return Ok(());
    }
    let sql = format!(
        "BEGIN;SELECT pg_advisory_xact_lock({});{};COMMIT",
        schema_lock_key(schema),
        DDL.replace("{s}", &quote_ident(schema))
    );
    if let Err(e) = conn.client.batch_execute(&sql).await {
        let _ = conn.client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    tracing::info!(schema, "initguard's steps tables are in schema {schema}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_raises_the_codes_the_client_matches() {
        assert!(DDL.contains(&format!("ERRCODE = '{FENCED}'")));
        assert!(DDL.contains(&format!("ERRCODE = '{ALREADY_APPLIED}'")));
        assert!(DDL.contains(&format!("ERRCODE = '{AFTER_UNAPPLIED}'")));
        assert!(DDL.contains(&format!("{{s}}.{CHECK_FN}(")));
        assert!(DDL.contains(&format!("{{s}}.{STEP_FN}(")));
        assert_eq!(STEP_ARGS.matches(',').count(), 11);
    }
}
