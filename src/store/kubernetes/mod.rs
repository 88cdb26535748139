//! `kubernetes:[NAMESPACE]`: one `coordination.k8s.io/v1` Lease per task, holding both the lock and
//! the record (in an annotation). Declarations and re-exports only.

mod api;
mod client;
mod events;
mod lease;
mod names;
mod store;

pub use names::{LABEL_MANAGED_BY, MANAGED_BY, lease_name};

/// Every API permission the store uses, as (API group, resource, verbs): `initguard k8s rbac`
/// grants exactly these, and the end-to-end tests check the store asks for nothing else.
/// No `watch`: waiting polls (jittered, under a second) instead.
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    (
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update"],
    ),
    ("", "events", &["create"]),
];
pub use store::{KubeStore, MAX_RECORD_BYTES};
