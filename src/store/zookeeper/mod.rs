//! `zookeeper://HOST:PORT[,HOST:PORT…][/CHROOT]`: one persistent znode per task, holding the
//! record and a queue of ephemeral lock znodes bound to their holders' sessions. Declarations and
//! re-exports only.

mod config;
mod names;
mod store;

pub use config::{AUTH_ENV, AUTH_FILE_ENV, DEFAULT_PREFIX, ZkAuth, ZkUrl, ZkUrlError, env_secrets};
pub use names::{node_name, task_of};
pub use store::{MAX_RECORD_BYTES, ZkStore};
