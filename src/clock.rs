//! Lease timing on `CLOCK_BOOTTIME`: it keeps counting while the machine is suspended, where the
//! monotonic clock stops. A holder resumed after a suspend then sees at once that its lease
//! deadline has passed, instead of believing its lease is as fresh as before the pause. The value
//! is system-wide, so initguard and its supervisor compare the same instants.

use std::time::Duration;

/// Time since boot, suspend included.
pub fn boot_now() -> Duration {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => Duration::from(ts),
        // Every Linux since 2.6.39 has CLOCK_BOOTTIME; should it fail anyway, the monotonic clock
        // is the next best (it only misses suspends).
        Err(_) => nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(Duration::from)
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward() {
        let a = boot_now();
        std::thread::sleep(Duration::from_millis(5));
        let b = boot_now();
        assert!(b > a && b - a >= Duration::from_millis(5), "{a:?} {b:?}");
    }
}
