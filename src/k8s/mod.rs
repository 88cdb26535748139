//! Kubernetes manifest tooling (pure YAML in, YAML out; never talks to a cluster). Declarations
//! only.

#[cfg(feature = "kubernetes")]
pub mod rbac;
