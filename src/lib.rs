//! initguard: run an init command once per change of its inputs, by one replica at a time.

pub mod acquire;
pub mod body;
pub mod cli;
pub mod clock;
pub mod exit;
pub mod fingerprint;
pub mod guard;
mod heartbeat;
pub mod install;
pub mod k8s;
pub mod record;
pub mod release;
pub mod reset;
pub mod runner;
pub mod sql;
pub mod steps;
pub mod store;
pub mod supervisor;
pub mod task;
pub mod verify;
pub mod wait;
