//! A step's SQL text before it is sent: what refuses it (transaction control), how a
//! no-transaction step splits into statements, and where a server's error position falls in the
//! step's file. Pure; no I/O.

use crate::sql::{self, LexOptions, TokenKind};

/// Why a transactional step cannot be sent, or whether it has savepoints. Checked both ways of reading backslashes in
/// `'…'` strings (the server's `standard_conforming_strings` is not known before connecting).
/// The text ends the message it is sent in, so a literal or comment left open at its end
/// swallows nothing of initguard's: the server rejects it, with its position.
pub(crate) fn check_transactional(text: &str) -> Result<bool, String> {
    sql::check_transaction_statements(text).map_err(|tc| {
        format!(
            "statement {} (line {}, column {}) is {}: a transactional step runs in one \
             transaction together with its history row, so it must not start or end \
             transactions itself (SAVEPOINT, RELEASE and ROLLBACK TO are allowed); remove it, or \
             make `-- initguard:no-transaction` the step's first line to run it statement by \
             statement; nothing was run",
            tc.index, tc.at.line, tc.at.column, tc.what
        )
    })
}

/// Why a no-transaction step cannot be run statement by statement, or Ok: a statement that
/// starts or ends a transaction would take the statements after it (and initguard's progress
/// records) into a transaction of its own.
pub(crate) fn check_statement_by_statement(text: &str) -> Result<(), String> {
    sql::check_no_transaction_control(text).map_err(|tc| {
        format!(
            "statement {} (line {}, column {}) is {}: a `-- initguard:no-transaction` step runs \
             each statement on its own, outside any transaction, and records its progress after \
             each; remove it, or remove the directive to run the whole step in one transaction; \
             nothing was run",
            tc.index, tc.at.line, tc.at.column, tc.what
        )
    })
}

/// A statement of a no-transaction step: its text as sent, and its byte offset in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stmt<'a> {
    pub text: &'a str,
    pub offset: usize,
    /// The statement's leading words, lowercased (`create index concurrently`).
    pub words: Vec<String>,
}

/// The statements of a no-transaction step, as psql would send them one by one; empty ones
/// (`;;`, trailing comments) are not statements. The index of a statement here is what
/// `statements_done` counts.
pub(crate) fn statements(text: &str) -> Vec<Stmt<'_>> {
    sql::split(text, LexOptions::default())
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| Stmt {
            text: s.text,
            offset: s.offset,
            words: s.leading_words(8),
        })
        .collect()
}

/// The name of the index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name …` creates,
/// as written (quotes and schema kept, for `to_regclass`); None for any other statement, or one
/// that leaves the name to the server.
pub(crate) fn concurrent_index_name(stmt: &Stmt<'_>) -> Option<String> {
    let w: Vec<&str> = stmt.words.iter().map(String::as_str).collect();
    let mut i = match w.as_slice() {
        ["create", "index", "concurrently", ..] => 3,
        ["create", "unique", "index", "concurrently", ..] => 4,
        _ => return None,
    };
    if w.get(i..i + 3) == Some(&["if", "not", "exists"][..]) {
        i += 3;
    }
    // The name: tokens up to `ON` (a word, a quoted identifier, dots between).
    let toks: Vec<_> = sql::split(stmt.text, LexOptions::default())
        .into_iter()
        .find(|s| !s.is_empty())?
        .tokens()
        .collect();
    let mut name = String::new();
    for t in toks.iter().skip(i) {
        let piece = &stmt.text[t.start..t.end];
        match t.kind {
            TokenKind::Word if piece.eq_ignore_ascii_case("on") && !name.ends_with('.') => break,
            TokenKind::Word | TokenKind::QuotedIdent { terminated: true } => name.push_str(piece),
            TokenKind::Other if piece == "." => name.push('.'),
            _ => return None,
        }
    }
    (!name.is_empty() && !name.ends_with('.')).then_some(name)
}

/// The 1-based character position in the file of the 1-based character position `pos` in a
/// piece of it that starts at byte `offset` and is `len` characters long; None when `pos` falls
/// outside the piece.
pub(crate) fn file_position(file: &str, offset: usize, len: usize, pos: u32) -> Option<u32> {
    let pos = usize::try_from(pos).ok()?;
    if pos == 0 || pos > len {
        return None;
    }
    let before = file.get(..offset)?.chars().count();
    u32::try_from(before + pos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_refused_naming_its_line_and_the_directive() {
        let e = check_transactional("CREATE TABLE a (id int);\nCOMMIT;\n").unwrap_err();
        assert!(
            e.contains("statement 2 (line 2, column 1) is COMMIT"),
            "{e}"
        );
        assert!(e.contains("-- initguard:no-transaction"), "{e}");
        assert!(check_transactional("SAVEPOINT a; SELECT 1; RELEASE a;").is_ok());
    }

    #[test]
    fn a_no_transaction_step_may_not_open_transactions_either() {
        let e = check_statement_by_statement("-- initguard:no-transaction\nBEGIN;\nSELECT 1;")
            .unwrap_err();
        assert!(e.contains("statement 1 (line 2, column 1) is BEGIN"), "{e}");
        assert!(check_statement_by_statement("CREATE INDEX CONCURRENTLY i ON t (a);").is_ok());
    }

    #[test]
    fn statements_skip_empty_ones_and_keep_their_offsets() {
        let text = "-- initguard:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);;\n\nSELECT 1;\n-- end\n";
        let s = statements(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].offset, 0);
        assert!(s[0].text.ends_with("(a);"));
        assert_eq!(&text[s[1].offset..s[1].offset + s[1].text.len()], s[1].text);
        assert!(s[1].text.trim().starts_with("SELECT 1"));
    }

    #[test]
    fn concurrent_index_names_are_found_as_written() {
        let name = |sql: &str| concurrent_index_name(&statements(sql)[0]);
        assert_eq!(
            name("CREATE INDEX CONCURRENTLY idx_a ON t (a)"),
            Some("idx_a".into())
        );
        assert_eq!(
            name("create unique index concurrently if not exists app.\"Idx\" on t (a)"),
            Some("app.\"Idx\"".into())
        );
        assert_eq!(
            name("-- c\nCREATE INDEX CONCURRENTLY \"on\" ON t (a)"),
            Some("\"on\"".into())
        );
        assert_eq!(name("CREATE INDEX CONCURRENTLY ON t (a)"), None);
        assert_eq!(name("CREATE INDEX idx ON t (a)"), None);
        assert_eq!(name("SELECT 1"), None);
    }

    #[test]
    fn positions_map_into_the_file() {
        let file = "-- x\nSELECT 1;\nSELEC 2;";
        let offset = file.find("\nSELEC").unwrap();
        // Position 2 of "\nSELEC 2;" is the S of SELEC.
        let p = file_position(file, offset, 9, 2).unwrap();
        assert_eq!(file.chars().nth(p as usize - 1), Some('S'));
        assert_eq!(file_position(file, offset, 9, 10), None);
        assert_eq!(file_position(file, offset, 9, 0), None);
    }
}
