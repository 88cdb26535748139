//! initguard: run an init command once per change of its inputs, by one replica at a time.

pub mod exit;
pub mod record;
pub mod store;
pub mod task;
