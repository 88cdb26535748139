//! `kubernetes:[NAMESPACE]`: one `coordination.k8s.io/v1` Lease per task, holding both the lock and
//! the record (in an annotation). Declarations and re-exports only.

mod api;
mod client;
mod events;
mod lease;
mod names;
mod store;

pub use api::PERMISSIONS;
pub use names::{LABEL_MANAGED_BY, MANAGED_BY, lease_name};
pub use store::{KubeStore, MAX_RECORD_BYTES};
