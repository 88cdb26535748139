//! initguard: run an init command once per change of its inputs, by one replica at a time.

pub mod cli;
pub mod exit;
pub mod fingerprint;
pub mod guard;
pub mod k8s;
pub mod record;
pub mod reset;
pub mod runner;
pub mod sql;
pub mod store;
pub mod task;
