//! `etcd://host:port[,host:port…]` and `etcds://…`: the etcd store. Per task, a lock key bound to
//! an etcd lease and a record key beside it. Declarations and re-exports only.

mod call;
mod config;
mod names;
mod store;

pub use config::{DEFAULT_PREFIX, EtcdUrl, EtcdUrlError};
pub use names::{lock_key, record_key, task_dir, task_of_key};
pub use store::{EtcdStore, MAX_RECORD_BYTES};
