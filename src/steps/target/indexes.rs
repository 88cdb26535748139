//! Indexes left INVALID in the target database (an interrupted or failed `CREATE INDEX
//! CONCURRENTLY` or `REINDEX CONCURRENTLY`), for `steps status` and `steps validate`. Read only.

use super::conn::Target;
use super::error::TargetError;
use crate::steps::{Problem, ProblemKind};

impl Target {
    /// Every INVALID index outside the system schemas, except those a running `CREATE INDEX
    /// CONCURRENTLY` is still building (invalid until it ends), each with the statement that
    /// fixes it. (`apply` itself drops one its interrupted statement left before running that
    /// statement again.)
    pub async fn invalid_indexes(&self) -> Result<Vec<Problem>, TargetError> {
        self.exclusive(self.read_invalid_indexes()).await
    }

    /// The set's history and the INVALID indexes, both asked at once (one round trip).
    pub async fn history_and_invalid_indexes(
        &self,
        set: &str,
    ) -> Result<(Vec<crate::steps::Applied>, Vec<Problem>), TargetError> {
        self.exclusive(async {
            tokio::try_join!(self.read_history(set), self.read_invalid_indexes())
        })
        .await
    }

    /// `invalid_indexes`, inside an operation that holds the connection already.
    async fn read_invalid_indexes(&self) -> Result<Vec<Problem>, TargetError> {
        // Asked of pg_index alone first: the whole question (five catalogs and a view) costs a
        // fresh connection a few milliseconds of catalog loading, for the usual answer "none".
        let any = self
            .conn
            .client
            .query_typed("SELECT 1 FROM pg_index WHERE NOT indisvalid LIMIT 1", &[])
            .await
            .map_err(|e| self.db_err("looking for INVALID indexes", &e))?;
        if any.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .conn
            .client
            .query_typed(
                "SELECT format('%I.%I', n.nspname, c.relname),
                    format('%I.%I', tn.nspname, t.relname)
             FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid
             JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_namespace tn ON tn.oid = t.relnamespace
             WHERE NOT i.indisvalid
               AND n.nspname NOT IN ('pg_catalog', 'information_schema')
               AND n.nspname NOT LIKE 'pg\\_toast%'
               AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                               WHERE p.index_relid = i.indexrelid)
             ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| self.db_err("looking for INVALID indexes", &e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (index, table): (String, String) = (
                row.try_get(0)
                    .map_err(|e| self.db_err("looking for INVALID indexes", &e))?,
                row.try_get(1)
                    .map_err(|e| self.db_err("looking for INVALID indexes", &e))?,
            );
            out.push(invalid_index(&index, &table));
        }
        Ok(out)
    }
}

/// The problem for index `index` (schema-qualified, quoted as needed: the fix works whatever the
/// reader's `search_path`).
fn invalid_index(index: &str, table: &str) -> Problem {
    Problem {
        kind: ProblemKind::InvalidIndex,
        step: None,
        file: None,
        detail: format!(
            "index {index} on {table} is INVALID: a CREATE INDEX CONCURRENTLY (or REINDEX CONCURRENTLY) did not finish; queries do not use it, but writes still maintain it"
        ),
        fix: format!("DROP INDEX CONCURRENTLY {index}; then run apply again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_names_the_statement_to_run() {
        let p = invalid_index("app.\"Idx\"", "app.t");
        assert_eq!(p.kind, ProblemKind::InvalidIndex);
        assert_eq!(
            p.fix,
            "DROP INDEX CONCURRENTLY app.\"Idx\"; then run apply again"
        );
    }
}
