//! Statements that end or start a transaction, found before an SQL task is sent: initguard runs
//! the task in one transaction together with its completion record, and a `COMMIT` inside it
//! would commit the effect without the record (run again on every retry). Pure; no I/O.
//!
//! Savepoints stay allowed: `SAVEPOINT`, `RELEASE [SAVEPOINT]` and `ROLLBACK [WORK|TRANSACTION]
//! TO [SAVEPOINT]` act inside the enclosing transaction, which still commits (or rolls back) as a
//! whole, with the record. Statements that cannot end it need no check here: `DO` blocks and
//! procedures that `COMMIT`, and `COMMIT` inside a `BEGIN ATOMIC` body, are refused by the server
//! inside a transaction block, so the task fails and rolls back.

use super::lexer::{self, LexOptions, Position, TokenKind};

/// A statement that would end or start a transaction, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "statement {index} (line {}, column {}) is {what}: initguard runs the SQL in one \
     transaction together with its completion record, so the SQL must not start or end \
     transactions itself; remove it (SAVEPOINT, RELEASE and ROLLBACK TO are allowed){}; \
     nothing was run",
    at.line,
    at.column,
    if *backslash_escapes { " (found reading backslashes in '…' strings as escapes, as the server does with standard_conforming_strings off)" } else { "" }
)]
pub struct TransactionControl {
    /// The statement's leading words, upper case: `COMMIT`, `START TRANSACTION`, ….
    pub what: String,
    /// 1-based number of the statement in the script.
    pub index: usize,
    pub at: Position,
    /// Found only when backslashes escape in plain strings (standard_conforming_strings off).
    pub backslash_escapes: bool,
}

/// Refuse a script with a transaction-control statement. The server reads plain `'…'` strings
/// by its `standard_conforming_strings`, which initguard cannot know before connecting (and the
/// script may change): the script is checked both ways, so that neither reading hides one.
pub fn check_no_transaction_control(sql: &str) -> Result<(), TransactionControl> {
    check_transaction_statements(sql).map(|_| ())
}

/// `check_no_transaction_control`, and in the same pass whether the script has a `SAVEPOINT`,
/// `RELEASE` or `ROLLBACK TO` statement (either reading): `Ok(true)`. The server accepts those
/// only in an explicit transaction block (`BEGIN`), not in the implicit one of a
/// multi-statement query.
pub fn check_transaction_statements(sql: &str) -> Result<bool, TransactionControl> {
    let mut savepoints = false;
    for backslash_escapes in [false, true] {
        let options = LexOptions {
            standard_conforming_strings: !backslash_escapes,
        };
        let mut index = 0;
        for stmt in lexer::split(sql, options) {
            // Empty statements (`;;`, a trailing comment) are no statements to the server either.
            let Some(at) = stmt.start else { continue };
            index += 1;
            if let Some(what) = transaction_control(&stmt) {
                return Err(TransactionControl {
                    what,
                    index,
                    at,
                    backslash_escapes,
                });
            }
            savepoints = savepoints || is_savepoint(&stmt);
        }
    }
    Ok(savepoints)
}

/// Whether `stmt` is `SAVEPOINT`, `RELEASE [SAVEPOINT]` or `ROLLBACK [WORK|TRANSACTION] TO`.
fn is_savepoint(stmt: &lexer::Statement) -> bool {
    let words = stmt.leading_words(3);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    match w(0) {
        "savepoint" | "release" => true,
        "rollback" if matches!(w(1), "work" | "transaction") => w(2) == "to",
        "rollback" => w(1) == "to",
        _ => false,
    }
}

/// The name of the transaction-control statement `stmt` is, if it is one.
fn transaction_control(stmt: &lexer::Statement) -> Option<String> {
    let words = stmt.leading_words(4);
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let name = |n: usize| Some(words[..n.min(words.len())].join(" ").to_uppercase());
    match w(0) {
        // COMMIT [AND CHAIN], COMMIT PREPARED 'gid', END, ABORT, BEGIN: all forms.
        "commit" if w(1) == "prepared" => name(2),
        "commit" | "end" | "abort" | "begin" => name(1),
        "rollback" => {
            let rest = if matches!(w(1), "work" | "transaction") {
                2
            } else {
                1
            };
            match w(rest) {
                // ROLLBACK TO SAVEPOINT stays inside the transaction.
                "to" => None,
                "prepared" => name(2),
                _ => name(1),
            }
        }
        "start" if w(1) == "transaction" => name(2),
        // PREPARE TRANSACTION 'gid' ends the transaction; `PREPARE transaction AS …` (a
        // prepared statement that happens to be named "transaction") does not.
        "prepare" if w(1) == "transaction" && w(2) != "as" => {
            let third = stmt.tokens().nth(2).map(|t| t.kind);
            (third != Some(TokenKind::OpenParen)).then(|| "PREPARE TRANSACTION".to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Option<(String, usize, usize, usize)> {
        check_no_transaction_control(sql)
            .err()
            .map(|e| (e.what, e.index, e.at.line, e.at.column))
    }

    #[test]
    fn savepoints_are_found_in_any_form_and_not_in_strings_or_comments() {
        for sql in [
            "SAVEPOINT a; SELECT 1;",
            "select 1; release a",
            "SELECT 1; RELEASE SAVEPOINT a",
            "select 1; rollback to a",
            "SELECT 1; ROLLBACK WORK TO SAVEPOINT a",
            "SELECT 1; rollback transaction to a",
            // Only the standard reading (no backslash escapes) ends the string before it.
            "SELECT 'a\\'; savepoint b; --';",
        ] {
            assert_eq!(check_transaction_statements(sql), Ok(true), "{sql:?}");
        }
        for sql in [
            "SELECT 'SAVEPOINT a'",
            "-- RELEASE a\nSELECT 1",
            "/* ROLLBACK TO a */ SELECT 1",
            "CREATE TABLE savepoints (id int)",
            "SELECT 1; ROLLBACK",
        ] {
            assert_ne!(check_transaction_statements(sql), Ok(true), "{sql:?}");
        }
    }

    #[test]
    fn transaction_control_is_refused_in_any_case_after_comments() {
        for (sql, what) in [
            (
                "INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2)",
                "COMMIT",
            ),
            ("insert into t values (1);\ncommit and chain;", "COMMIT"),
            ("SELECT 1; -- done\n/* really */ End;", "END"),
            ("SELECT 1; RollBack;", "ROLLBACK"),
            ("SELECT 1; ROLLBACK WORK", "ROLLBACK"),
            ("SELECT 1; abort transaction", "ABORT"),
            ("BEGIN; INSERT INTO t VALUES (1);", "BEGIN"),
            ("begin isolation level serializable; select 1", "BEGIN"),
            ("START TRANSACTION; SELECT 1", "START TRANSACTION"),
            ("SELECT 1; PREPARE TRANSACTION 'gid'", "PREPARE TRANSACTION"),
            ("SELECT 1; COMMIT PREPARED 'gid'", "COMMIT PREPARED"),
            ("SELECT 1; rollback prepared 'gid'", "ROLLBACK PREPARED"),
            // The only statement, without a semicolon.
            ("COMMIT", "COMMIT"),
        ] {
            assert_eq!(refused(sql).map(|r| r.0), Some(what.to_string()), "{sql:?}");
        }
    }

    #[test]
    fn the_refusal_names_statement_line_and_column() {
        assert_eq!(
            refused("SELECT 1;;\n  -- x\n  commit;"),
            Some(("COMMIT".into(), 2, 3, 3))
        );
        let e = check_no_transaction_control("SELECT 1; COMMIT").unwrap_err();
        assert_eq!(
            e.to_string(),
            "statement 2 (line 1, column 11) is COMMIT: initguard runs the SQL in one transaction \
             together with its completion record, so the SQL must not start or end transactions \
             itself; remove it (SAVEPOINT, RELEASE and ROLLBACK TO are allowed); nothing was run"
        );
    }

    #[test]
    fn the_words_in_literals_bodies_comments_and_identifiers_are_not_statements() {
        for sql in [
            "INSERT INTO t VALUES ('a; COMMIT; b')",
            r"INSERT INTO t VALUES (E'it\'s; COMMIT; --')",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$;",
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$\nBEGIN\n  COMMIT;\nEND\n$body$;",
            "DO $$ BEGIN COMMIT; END $$",
            "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;",
            "SELECT 1; -- COMMIT;\n/* ROLLBACK; /* BEGIN; */ END; */ SELECT 2",
            "CREATE TABLE \"commit\" (\"end\" int); INSERT INTO \"commit\" VALUES (1)",
            "SELECT U&'\\0041; COMMIT'",
            "SELECT $1; SELECT $tag$; END; $tag$",
            "SAVEPOINT a; INSERT INTO t VALUES (1); ROLLBACK TO SAVEPOINT a; RELEASE a;",
            "savepoint b; rollback work to b; release savepoint b",
            "PREPARE transaction AS SELECT 1; EXECUTE transaction",
            "CALL proc(); SELECT committed, ended FROM t",
        ] {
            assert_eq!(refused(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn both_readings_of_backslashes_are_checked() {
        // With standard_conforming_strings off the server reads 'a\' as an open string, so the
        // COMMIT after it is only text; on (the default) the COMMIT is a statement.
        assert_eq!(
            refused(r"SELECT 'a\'; COMMIT; SELECT '").map(|r| r.0),
            Some("COMMIT".to_string())
        );
        // The other way round: on, 'a\' ends before `'; COMMIT; --'` … which is one string.
        let e = check_no_transaction_control(r"SELECT 'a\''; COMMIT; --'").unwrap_err();
        assert!(e.backslash_escapes, "{e}");
        assert!(
            e.to_string().contains("standard_conforming_strings off"),
            "{e}"
        );
    }
}
