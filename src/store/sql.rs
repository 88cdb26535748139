//! SQL tasks as the `Store` trait sees them: what to run, how it ended, how it failed. Plain data;
//! the one backend that can run SQL together with its completion record is PostgreSQL.

use super::StoreError;
use std::fmt;

/// An SQL task: its text, and where it runs (`None`: the store's own database).
#[derive(Clone, PartialEq, Eq)]
pub struct SqlTask {
    pub sql: String,
    /// `--sql-target URL`: another PostgreSQL database; its completion row is kept there. May
    /// hold a password: `Debug` leaves it out.
    pub target: Option<String>,
}

impl fmt::Debug for SqlTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlTask")
            .field("sql", &self.sql)
            .field("target", &self.target.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How an SQL task that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlOutcome {
    /// The SQL and the `succeeded` record were committed together.
    Committed,
    /// The target database already had a completion row for this fingerprint (a predecessor
    /// committed but died before updating the store): nothing was run. The caller writes the
    /// `succeeded` record.
    AlreadyDone {
        token: u64,
        /// The target database as the record names it (no password), for `initguard reset`.
        target: Option<String>,
    },
}

/// The server's own account of an SQL error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFailure {
    /// SQLSTATE, e.g. `42601`.
    pub code: String,
    pub message: String,
    /// 1-based character position in the SQL text, when the server gives one.
    pub position: Option<u32>,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Line and column of `position` in the SQL text.
    pub line_col: Option<(usize, usize)>,
}

impl SqlFailure {
    /// Fill `line_col` from `position` against the text that was run.
    pub fn locate(mut self, sql: &str) -> SqlFailure {
        self.line_col = self.position.and_then(|p| line_col(sql, p));
        self
    }
}

/// Line and column (both 1-based) of the first NUL byte in `text`, if it has one: the one
/// character tokio-postgres cannot send in a query (its text goes out NUL-terminated).
pub fn nul_line_col(text: &str) -> Option<(usize, usize)> {
    let at = text.find('\0')?;
    let pos = u32::try_from(text[..at].chars().count() + 1).ok()?;
    line_col(text, pos)
}

/// Line and column (both 1-based) of the 1-based character position `pos`.
fn line_col(text: &str, pos: u32) -> Option<(usize, usize)> {
    let pos = usize::try_from(pos).ok()?.checked_sub(1)?;
    let mut line = 1;
    let mut col = 1;
    for (i, c) in text.chars().enumerate() {
        if i == pos {
            return Some((line, col));
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    None
}

impl fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR {}: {}", self.code, self.message)?;
        match (self.line_col, self.position) {
            (Some((l, c)), Some(p)) => write!(f, " (line {l}, column {c}, position {p})")?,
            (None, Some(p)) => write!(f, " (position {p})")?,
            _ => {}
        }
        if let Some(d) = &self.detail {
            write!(f, "; detail: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SqlTaskError {
    /// The SQL failed and was rolled back: nothing of it was committed.
    #[error("SQL failed and was rolled back: {0}")]
    Sql(SqlFailure),
    /// The store (or target) failed: lease lost, unreachable, misconfigured.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_line_and_column() {
        let f = SqlFailure {
            code: "42601".into(),
            message: "syntax error at or near \"SELEC\"".into(),
            position: Some(11),
            detail: None,
            hint: None,
            line_col: None,
        }
        .locate("SELECT 1;\nSELEC 2;");
        assert_eq!(f.line_col, Some((2, 1)));
        assert_eq!(
            f.to_string(),
            "ERROR 42601: syntax error at or near \"SELEC\" (line 2, column 1, position 11)"
        );
        assert_eq!(line_col("a\nbc", 4), Some((2, 2)));
        assert_eq!(line_col("a", 5), None);
    }
}
