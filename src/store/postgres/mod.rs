//! `postgres://…`: the PostgreSQL store and its SQL tasks. Declarations and re-exports only.

mod config;
mod connect;
mod schema;
mod sql_task;
mod store;

pub use config::{DEFAULT_SCHEMA, PgUrl, PgUrlError, SslMode};
pub use schema::LAYOUT;
pub use sql_task::clear_sql_completions;
pub use store::PgStore;
