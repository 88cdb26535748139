//! PostgreSQL's lexical rules, just far enough to split a script into statements the way the
//! server and psql do, and to see each statement's leading words. Pure functions over `&str`;
//! never fails and never panics: an unterminated string or comment runs to the end of the text
//! (the server then rejects the whole script with a syntax error, and nothing of it runs).
//!
//! Hand-written rather than taken from a crate: `pg_query` is the server's own parser but builds
//! C code (a C compiler and libclang, which a plain `cargo build` must not need), and `sqlparser`'s
//! tokenizer fails on input it cannot tokenize, reports no byte offsets, and does not split
//! statements the way psql does (`BEGIN ATOMIC … END` bodies, semicolons inside parentheses).
//! The rules below follow `src/backend/parser/scan.l` and `src/fe_utils/psqlscan.l`.

/// How the text is read, as in the server's session settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexOptions {
    /// `standard_conforming_strings` (on by default since PostgreSQL 9.1): when off, a backslash
    /// in a plain `'…'` string escapes the next character, as it always does in `E'…'`.
    pub standard_conforming_strings: bool,
}

impl Default for LexOptions {
    fn default() -> LexOptions {
        LexOptions {
            standard_conforming_strings: true,
        }
    }
}

/// What a token is. Literal and comment tokens say whether they were closed before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Whitespace,
    /// `-- …` up to (not including) the end of the line.
    LineComment,
    /// `/* … */`, nested as PostgreSQL nests them.
    BlockComment {
        terminated: bool,
    },
    /// `'…'`, `E'…'`, `U&'…'`, `B'…'`, `X'…'`, `N'…'`, with continuation lines (`'a'\n'b'`).
    String {
        terminated: bool,
    },
    /// `$tag$ … $tag$` (the tag may be empty).
    DollarString {
        terminated: bool,
    },
    /// `"…"` or `U&"…"`.
    QuotedIdent {
        terminated: bool,
    },
    /// An unquoted identifier or keyword.
    Word,
    /// `$1`, `$2`, …
    Param,
    Semicolon,
    OpenParen,
    CloseParen,
    /// Anything else, one character at a time: digits, operators, punctuation.
    Other,
}

impl TokenKind {
    /// Whitespace and comments: what the server skips between tokens.
    pub fn is_trivia(self) -> bool {
        matches!(
            self,
            TokenKind::Whitespace | TokenKind::LineComment | TokenKind::BlockComment { .. }
        )
    }
}

/// One token: its kind and where it is, as a byte range of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

/// Where something starts: byte offset, and 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement with the whitespace and comments before it, up to and including its
    /// terminating `;` when it has one: the statements of a text, joined, are the text.
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
    /// Where its first token (not whitespace or a comment) starts; `None` when `text` holds
    /// nothing but whitespace and comments (an empty statement, or the tail after the last `;`).
    pub start: Option<Position>,
    options: LexOptions,
}

impl<'a> Statement<'a> {
    /// The tokens of the statement that are not whitespace or comments, with ranges relative
    /// to the script (not to `text`). A statement starts at a top-level boundary, so lexing it
    /// alone gives the tokens lexing the whole script gave.
    pub fn tokens(&self) -> impl Iterator<Item = Token> + 'a {
        let offset = self.offset;
        Tokens::new(self.text, self.options)
            .filter(|t| !t.kind.is_trivia())
            .map(move |t| Token {
                start: t.start + offset,
                end: t.end + offset,
                ..t
            })
    }

    /// The statement's leading unquoted words, lowercased, up to the first token that is not one
    /// (`COMMIT PREPARED 'x'` → `["commit", "prepared"]`): what says which statement it is.
    pub fn leading_words(&self, max: usize) -> Vec<String> {
        let text = self.text;
        let offset = self.offset;
        self.tokens()
            .take_while(|t| t.kind == TokenKind::Word)
            .take(max)
            .map(|t| text[t.start - offset..t.end - offset].to_ascii_lowercase())
            .collect()
    }

    /// Whether the statement has any token at all.
    pub fn is_empty(&self) -> bool {
        self.start.is_none()
    }
}

/// The tokens of `text`, in order, covering it without gaps.
pub fn tokens(text: &str, options: LexOptions) -> Tokens<'_> {
    Tokens::new(text, options)
}

/// Split `text` into statements at top-level semicolons, as psql does before sending them: not
/// inside literals, comments, quoted identifiers, parentheses, or the `BEGIN ATOMIC … END` body of
/// `CREATE [OR REPLACE] FUNCTION|PROCEDURE`. Joining the `text` of the statements gives `text`
/// back; a trailing piece with only whitespace or comments is a statement with `start: None`.
pub fn split(text: &str, options: LexOptions) -> Vec<Statement<'_>> {
    let mut out = Vec::new();
    let mut splitter = Splitter::default();
    let mut begin = 0;
    let mut first: Option<usize> = None;
    let mut lines = LineCounter::new(text);
    let toks: Vec<Token> = Tokens::new(text, options).collect();
    for (i, tok) in toks.iter().enumerate() {
        if tok.kind.is_trivia() {
            continue;
        }
        if first.is_none() && tok.kind != TokenKind::Semicolon {
            first = Some(tok.start);
        }
        let next_word = toks[i + 1..]
            .iter()
            .find(|t| !t.kind.is_trivia())
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| &text[t.start..t.end]);
        if splitter.feed(tok, &text[tok.start..tok.end], next_word) {
            out.push(Statement {
                text: &text[begin..tok.end],
                offset: begin,
                start: first.map(|o| lines.position(o)),
                options,
            });
            begin = tok.end;
            first = None;
            splitter = Splitter::default();
        }
    }
    if begin < text.len() {
        out.push(Statement {
            text: &text[begin..],
            offset: begin,
            start: first.map(|o| lines.position(o)),
            options,
        });
    }
    out
}

/// psql's statement-boundary state (`psqlscan.l`: `paren_depth`, `begin_depth`, `identifiers`).
#[derive(Default)]
struct Splitter {
    paren_depth: usize,
    begin_depth: usize,
    /// First letters of the leading words when they are create/or/replace/function/procedure.
    leading: [u8; 4],
    words: usize,
    /// The previous significant token was a `.`: the word after it is a column name, even when it
    /// is a keyword (`t.end`).
    after_dot: bool,
}

impl Splitter {
    /// Take the next significant token; true when it ends the statement.
    fn feed(&mut self, tok: &Token, text: &str, next_word: Option<&str>) -> bool {
        let after_dot = std::mem::replace(&mut self.after_dot, text == ".");
        match tok.kind {
            TokenKind::OpenParen => self.paren_depth += 1,
            TokenKind::CloseParen => self.paren_depth = self.paren_depth.saturating_sub(1),
            TokenKind::Semicolon => return self.paren_depth == 0 && self.begin_depth == 0,
            TokenKind::Word => self.word(text, next_word, after_dot),
            _ => {}
        }
        false
    }

    fn word(&mut self, word: &str, next_word: Option<&str>, after_dot: bool) {
        let is = |w: &str| word.eq_ignore_ascii_case(w);
        if self.words < self.leading.len()
            && ["create", "or", "replace", "function", "procedure"]
                .iter()
                .any(|w| is(w))
        {
            self.leading[self.words] = word.as_bytes()[0].to_ascii_lowercase();
        }
        self.words += 1;
        let l = self.leading;
        let routine = l[0] == b'c'
            && (l[1] == b'f'
                || l[1] == b'p'
                || (l[1] == b'o' && l[2] == b'r' && matches!(l[3], b'f' | b'p')));
        if !routine || self.paren_depth > 0 || after_dot {
            return;
        }
        // The grammar's only BEGIN here is `BEGIN ATOMIC`; psql counts any BEGIN, which would keep
        // the rest of the script in one statement after `CREATE FUNCTION begin() …`.
        if is("begin") && next_word.is_some_and(|n| n.eq_ignore_ascii_case("atomic")) {
            self.begin_depth += 1;
        } else if is("case") && self.begin_depth > 0 {
            // CASE ends with END too; it only matters inside a BEGIN ATOMIC body.
            self.begin_depth += 1;
        } else if is("end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }
}

/// Turns byte offsets into lines and columns, for offsets asked in increasing order.
struct LineCounter<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
    column: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> LineCounter<'a> {
        LineCounter {
            text,
            offset: 0,
            line: 1,
            column: 1,
        }
    }

    fn position(&mut self, offset: usize) -> Position {
        let upto = offset.min(self.text.len());
        if let Some(seen) = self.text.get(self.offset..upto) {
            for c in seen.chars() {
                if c == '\n' {
                    self.line += 1;
                    self.column = 1;
                } else {
                    self.column += 1;
                }
            }
            self.offset = upto;
        }
        Position {
            offset,
            line: self.line,
            column: self.column,
        }
    }
}

/// Iterator over the tokens of a text (see `tokens`).
pub struct Tokens<'a> {
    bytes: &'a [u8],
    pos: usize,
    options: LexOptions,
}

/// How backslashes read inside a `'…'` literal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// Only `''` is special.
    Standard,
    /// `\` escapes the next character too (`E'…'`, or any string with
    /// `standard_conforming_strings` off).
    Backslash,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str, options: LexOptions) -> Tokens<'a> {
        Tokens {
            bytes: text.as_bytes(),
            pos: 0,
            options,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.bytes.get(i).copied()
    }

    fn plain_quoting(&self) -> Quoting {
        if self.options.standard_conforming_strings {
            Quoting::Standard
        } else {
            Quoting::Backslash
        }
    }

    /// Kind and end of the token starting at `i`.
    fn lex(&self, i: usize) -> (TokenKind, usize) {
        let b = self.bytes[i];
        let next = self.at(i + 1);
        match b {
            _ if is_space(b) => {
                let end = self.skip_while(i, is_space);
                (TokenKind::Whitespace, end)
            }
            b'-' if next == Some(b'-') => (TokenKind::LineComment, self.line_end(i)),
            b'/' if next == Some(b'*') => self.block_comment(i),
            b'\'' => self.string(i + 1, self.plain_quoting()),
            b'e' | b'E' if next == Some(b'\'') => self.string(i + 2, Quoting::Backslash),
            // N'…' is a plain string after the NATIONAL CHARACTER keyword; B'…' and X'…' hold no
            // quotes or backslashes, so reading them as plain strings finds the same end.
            b'n' | b'N' if next == Some(b'\'') => self.string(i + 2, self.plain_quoting()),
            b'b' | b'B' | b'x' | b'X' if next == Some(b'\'') => {
                self.string(i + 2, Quoting::Standard)
            }
            b'u' | b'U' if next == Some(b'&') && self.at(i + 2) == Some(b'\'') => {
                self.string(i + 3, Quoting::Standard)
            }
            b'u' | b'U' if next == Some(b'&') && self.at(i + 2) == Some(b'"') => {
                self.quoted_ident(i + 3)
            }
            b'"' => self.quoted_ident(i + 1),
            b'$' => self.dollar(i),
            _ if is_ident_start(b) => (TokenKind::Word, self.skip_while(i, is_ident_cont)),
            b';' => (TokenKind::Semicolon, i + 1),
            b'(' => (TokenKind::OpenParen, i + 1),
            b')' => (TokenKind::CloseParen, i + 1),
            // Bytes >= 0x80 start identifiers, so everything else is one ASCII byte.
            _ => (TokenKind::Other, i + 1),
        }
    }

    fn skip_while(&self, mut i: usize, f: impl Fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(&f) {
            i += 1;
        }
        i
    }

    /// End of a `--` comment: the next line break (not included) or the end.
    fn line_end(&self, i: usize) -> usize {
        self.skip_while(i, |b| b != b'\n' && b != b'\r')
    }

    fn block_comment(&self, i: usize) -> (TokenKind, usize) {
        let mut depth = 0usize;
        let mut j = i;
        while j < self.bytes.len() {
            match (self.bytes[j], self.at(j + 1)) {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    j += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        return (TokenKind::BlockComment { terminated: true }, j);
                    }
                }
                _ => j += 1,
            }
        }
        (
            TokenKind::BlockComment { terminated: false },
            self.bytes.len(),
        )
    }

    /// The rest of a `'…'` literal whose body starts at `j`, with its continuations.
    fn string(&self, mut j: usize, quoting: Quoting) -> (TokenKind, usize) {
        loop {
            match self.at(j) {
                None => return (TokenKind::String { terminated: false }, j),
                Some(b'\\') if quoting == Quoting::Backslash => j += 2,
                Some(b'\'') if self.at(j + 1) == Some(b'\'') => j += 2,
                Some(b'\'') => match self.continuation(j + 1) {
                    // `'a'<newline>'b'` is one literal, read with the first part's rules.
                    Some(k) => j = k,
                    None => return (TokenKind::String { terminated: true }, j + 1),
                },
                Some(_) => j += 1,
            }
        }
    }

    /// After a closing quote at `j - 1`: where the continued literal's body resumes, when
    /// whitespace with at least one line break (and `--` comments) leads to another quote
    /// (scan.l's `quotecontinue`).
    fn continuation(&self, mut j: usize) -> Option<usize> {
        loop {
            match (self.at(j)?, self.at(j + 1)) {
                (b' ' | b'\t' | b'\x0c', _) => j += 1,
                (b'-', Some(b'-')) => j = self.line_end(j),
                _ => break,
            }
        }
        if !matches!(self.at(j)?, b'\n' | b'\r') {
            return None;
        }
        j += 1;
        loop {
            match (self.at(j)?, self.at(j + 1)) {
                (b, _) if is_space(b) => j += 1,
                (b'-', Some(b'-')) => {
                    j = self.line_end(j);
                    self.at(j)?;
                }
                (b'\'', _) => return Some(j + 1),
                _ => return None,
            }
        }
    }

    fn quoted_ident(&self, mut j: usize) -> (TokenKind, usize) {
        loop {
            match self.at(j) {
                None => return (TokenKind::QuotedIdent { terminated: false }, j),
                Some(b'"') if self.at(j + 1) == Some(b'"') => j += 2,
                Some(b'"') => return (TokenKind::QuotedIdent { terminated: true }, j + 1),
                Some(_) => j += 1,
            }
        }
    }

    /// `$1` (a parameter), `$tag$…$tag$` (a dollar-quoted string), or a lone `$`.
    fn dollar(&self, i: usize) -> (TokenKind, usize) {
        if self.at(i + 1).is_some_and(|b| b.is_ascii_digit()) {
            return (
                TokenKind::Param,
                self.skip_while(i + 1, |b| b.is_ascii_digit()),
            );
        }
        // scan.l: dolq_start [A-Za-z\200-\377_], dolq_cont [A-Za-z\200-\377_0-9] — no `$`.
        let tag_end = if self.at(i + 1).is_some_and(is_ident_start) {
            self.skip_while(i + 1, |b| is_ident_start(b) || b.is_ascii_digit())
        } else {
            i + 1
        };
        if self.at(tag_end) != Some(b'$') {
            return (TokenKind::Other, i + 1);
        }
        let delim = &self.bytes[i..=tag_end];
        let body = tag_end + 1;
        match find(&self.bytes[body..], delim) {
            Some(k) => (
                TokenKind::DollarString { terminated: true },
                body + k + delim.len(),
            ),
            None => (
                TokenKind::DollarString { terminated: false },
                self.bytes.len(),
            ),
        }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let start = self.pos;
        if start >= self.bytes.len() {
            return None;
        }
        let (kind, end) = self.lex(start);
        // Every token ends on a character boundary (all delimiters are ASCII, and identifiers
        // take whole multi-byte characters) and moves forward; a backslash at the very end of an
        // unterminated E'…' may point one past the text.
        let end = end.max(start + 1).min(self.bytes.len());
        self.pos = end;
        Some(Token { kind, start, end })
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql, LexOptions::default())
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    fn words(sql: &str) -> Vec<Vec<String>> {
        split(sql, LexOptions::default())
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.leading_words(3))
            .collect()
    }

    fn kinds(sql: &str) -> Vec<TokenKind> {
        tokens(sql, LexOptions::default())
            .filter(|t| !t.kind.is_trivia())
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn statements_split_at_top_level_semicolons_with_their_start() {
        let sql = "SELECT 1;\n  -- next\n  INSERT INTO t VALUES (2);\n/* tail */\n";
        let stmts = split(sql, LexOptions::default());
        assert_eq!(
            stmts.iter().map(|s| s.text).collect::<Vec<_>>(),
            [
                "SELECT 1;",
                "\n  -- next\n  INSERT INTO t VALUES (2);",
                "\n/* tail */\n"
            ]
        );
        let starts: Vec<_> = stmts.iter().map(|s| s.start).collect();
        assert_eq!(
            starts[0],
            Some(Position {
                offset: 0,
                line: 1,
                column: 1
            })
        );
        assert_eq!(
            starts[1],
            Some(Position {
                offset: 22,
                line: 3,
                column: 3
            })
        );
        assert_eq!(starts[2], None, "only a comment");
        assert_eq!(stmts[1].offset, 9);
        assert_eq!(words(sql), [vec!["select"], vec!["insert", "into", "t"]]);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let stmts = split("SELECT 'äö';\tCOMMIT", LexOptions::default());
        assert_eq!(
            stmts[1].start,
            Some(Position {
                offset: 15,
                line: 1,
                column: 14
            })
        );
    }

    #[test]
    fn semicolons_inside_literals_comments_and_identifiers_do_not_split() {
        for sql in [
            "SELECT 'a;b'",
            "SELECT 'it''s; here'",
            r"SELECT E'it\'s; here'",
            r"SELECT e'\\'",
            "SELECT $$;$$",
            "SELECT $fn$ a; $$ still; $fn$",
            "SELECT $a1_é$;$a1_é$",
            "SELECT \"a;\"\"b\"",
            "SELECT U&'d\\0061;t'",
            "SELECT U&\"d;a\"",
            "SELECT B'01', X'1F', N'x;y'",
            "SELECT 1 -- ; comment\n + 2",
            "SELECT /* a /* nested; */ still; */ 1",
            "SELECT 'a'\n  'b;c'",
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO u VALUES (1); NOTIFY u)",
        ] {
            assert_eq!(texts(sql), [sql], "{sql:?}");
        }
    }

    #[test]
    fn backslashes_escape_only_in_e_strings_unless_conforming_strings_are_off() {
        // Standard: 'a\' is a whole string, so the ';' after it splits.
        assert_eq!(texts(r"SELECT 'a\'; SELECT 'b'").len(), 2);
        // E'a\'…' goes on past the escaped quote.
        assert_eq!(texts(r"SELECT E'a\'; SELECT 'b'").len(), 1);
        let off = LexOptions {
            standard_conforming_strings: false,
        };
        assert_eq!(split(r"SELECT 'a\'; SELECT 'b'", off).len(), 1);
        // U&'…' never takes backslash escapes of quotes, whatever the setting.
        assert_eq!(split(r"SELECT U&'a\'; SELECT 1", off).len(), 2);
    }

    #[test]
    fn continued_e_strings_keep_their_escapes() {
        // The continuation of an E'' literal is read with E'' rules (scan.l's quotecontinue).
        let sql = "SELECT E'a'\n -- c\n '\\'; COMMIT; --'";
        assert_eq!(texts(sql), [sql]);
        // Without a line break it is not a continuation.
        assert_eq!(texts("SELECT E'a' '\\'; COMMIT; --'").len(), 3);
    }

    #[test]
    fn dollar_signs_that_are_not_quotes() {
        assert_eq!(
            kinds("SELECT $1, $23"),
            [
                TokenKind::Word,
                TokenKind::Param,
                TokenKind::Other,
                TokenKind::Param
            ]
        );
        // `$` inside an identifier does not open a quote.
        assert_eq!(texts("SELECT a$b$; SELECT 2").len(), 2);
        // `$1$` is a parameter and a lone `$`, not a tag (tags do not start with a digit).
        assert_eq!(texts("SELECT $1$; SELECT 2").len(), 2);
        assert_eq!(kinds("SELECT $"), [TokenKind::Word, TokenKind::Other]);
        // Tags are case-sensitive.
        assert_eq!(texts("SELECT $A$ $a$; $A$; SELECT 2").len(), 2);
    }

    #[test]
    fn begin_atomic_bodies_are_one_statement() {
        let f = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN true THEN 1 END;\n  SELECT t.end FROM t;\nEND;";
        let sql = format!("{f}\nSELECT 2;");
        assert_eq!(texts(&sql), [f, "\nSELECT 2;"]);
        let p = "create procedure p() begin atomic insert into t values (1); end;";
        assert_eq!(texts(p), [p]);
        // Only CREATE FUNCTION/PROCEDURE has such a body, and only BEGIN ATOMIC opens one.
        assert_eq!(texts("BEGIN; SELECT 1; END;").len(), 3);
        assert_eq!(
            texts("CREATE FUNCTION begin() RETURNS int LANGUAGE sql RETURN 1; END;").len(),
            2
        );
    }

    #[test]
    fn unterminated_literals_and_comments_run_to_the_end() {
        for (sql, kind) in [
            ("SELECT 'a; COMMIT", TokenKind::String { terminated: false }),
            ("SELECT E'a\\", TokenKind::String { terminated: false }),
            (
                "SELECT $x$ a; COMMIT",
                TokenKind::DollarString { terminated: false },
            ),
            (
                "SELECT \"a; COMMIT",
                TokenKind::QuotedIdent { terminated: false },
            ),
            (
                "SELECT /* /* */ ; COMMIT",
                TokenKind::BlockComment { terminated: false },
            ),
        ] {
            assert_eq!(texts(sql), [sql], "{sql:?}");
            let last = tokens(sql, LexOptions::default()).last().unwrap();
            assert_eq!((last.kind, last.end), (kind, sql.len()), "{sql:?}");
        }
    }

    /// Pieces that exercise every rule, so that generated scripts are mostly lexer edge cases.
    fn sqlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("'".to_string()),
            Just("''".to_string()),
            Just("E'".to_string()),
            Just("U&'".to_string()),
            Just("U&\"".to_string()),
            Just("\\".to_string()),
            Just("\"".to_string()),
            Just("$$".to_string()),
            Just("$a$".to_string()),
            Just("$1".to_string()),
            Just("--".to_string()),
            Just("/*".to_string()),
            Just("*/".to_string()),
            Just(";".to_string()),
            Just("\n".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just(" create function f() begin atomic ".to_string()),
            Just(" case ".to_string()),
            Just(" end".to_string()),
            Just("commit".to_string()),
            "[a-z .é]{0,4}",
            any::<String>(),
        ];
        prop::collection::vec(piece, 0..30).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn splitting_never_panics_and_rejoins_to_the_text(sql in sqlish(), scs in any::<bool>()) {
            let options = LexOptions { standard_conforming_strings: scs };
            let stmts = split(&sql, options);
            let joined: String = stmts.iter().map(|s| s.text).collect();
            prop_assert_eq!(&joined, &sql);
            let mut offset = 0;
            for s in &stmts {
                prop_assert_eq!(s.offset, offset);
                prop_assert!(!s.text.is_empty());
                offset += s.text.len();
                if let Some(p) = s.start {
                    prop_assert!(p.offset >= s.offset && p.offset < s.offset + s.text.len());
                    let before = &sql[..p.offset];
                    prop_assert_eq!(p.line, before.matches('\n').count() + 1);
                    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
                    prop_assert_eq!(p.column, col);
                }
                let _ = s.leading_words(4);
            }
        }

        #[test]
        fn tokens_cover_the_text_without_gaps(sql in sqlish(), scs in any::<bool>()) {
            let options = LexOptions { standard_conforming_strings: scs };
            let mut end = 0;
            for t in tokens(&sql, options) {
                prop_assert_eq!(t.start, end);
                prop_assert!(t.end > t.start && sql.is_char_boundary(t.end));
                end = t.end;
            }
            prop_assert_eq!(end, sql.len());
        }

        #[test]
        fn a_dollar_quoted_body_is_one_token(body in "[^$]*", tag in "[a-z_][a-z0-9_]{0,5}") {
            let sql = format!("SELECT ${tag}${body}${tag}$; SELECT 1");
            prop_assert_eq!(split(&sql, LexOptions::default()).len(), 2);
        }
    }
}
