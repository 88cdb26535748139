//! SQL text as initguard reads it before sending it anywhere: PostgreSQL's lexical rules and
//! statement splitting (`lexer`), and the statements an SQL task must not contain (`control`).

mod control;
pub mod lexer;

pub use control::{TransactionControl, check_no_transaction_control, check_transaction_statements};
pub use lexer::{LexOptions, Position, Statement, Token, TokenKind, split, tokens};
