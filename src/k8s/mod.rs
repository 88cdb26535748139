//! Kubernetes manifest tooling (pure YAML in, YAML out; never talks to a cluster). Declarations
//! only.

#[cfg(feature = "kubernetes")]
pub mod inject;
#[cfg(feature = "kubernetes")]
pub mod lint;
#[cfg(feature = "kubernetes")]
pub mod lint_report;
#[cfg(feature = "kubernetes")]
pub mod rbac;
#[cfg(feature = "kubernetes")]
pub mod workload;
#[cfg(feature = "kubernetes")]
pub mod yaml_docs;
#[cfg(feature = "kubernetes")]
mod yaml_emit;
