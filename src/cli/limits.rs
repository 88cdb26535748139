//! The accepted range of every numeric option and duration, in one place, so that `--help`,
//! validation and README agree. Values outside them are usage errors (exit 2), found before any
//! store is contacted.

use std::time::Duration;

/// Longest duration any option takes: more than any lease, wait or timeout needs, and far inside
/// what every store (PostgreSQL intervals, `leaseDurationSeconds`) and timer can represent.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How `MAX_DURATION` is spelt in messages.
pub const MAX_DURATION_TEXT: &str = "365d";
/// Shortest `--lock-ttl`: the heartbeat renews every third of it.
pub const MIN_LOCK_TTL: Duration = Duration::from_secs(1);

pub const MAX_RETRIES: i64 = 1000;
pub const MAX_ATTEMPTS: i64 = 1000;
/// A record holds the tail; a MiB is already more than the Kubernetes store keeps.
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;
pub const MAX_HISTORY: u64 = 1000;
