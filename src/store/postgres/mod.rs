//! `postgres://…`: the PostgreSQL store and its SQL tasks. Declarations and re-exports only.

pub(crate) mod cancel;
mod config;
mod connect;
mod schema;
mod sql_task;
mod store;

pub use config::{DEFAULT_SCHEMA, PgUrl, PgUrlError, SslMode};
// For the steps target database (src/steps/target), which connects the way the store does.
pub(crate) use config::error_chain;
pub(crate) use connect::{Conn, Connector, classify, is_connection_error, quote_ident};
pub use schema::LAYOUT;
pub(crate) use schema::schema_lock_key;
pub use sql_task::clear_sql_completions;
pub use store::PgStore;
