//! Keeping a held lease alive while the command runs: renew every third of the lease's TTL, hand
//! the supervisor a deadline after each successful renewal, and report the lease lost when
//! renewals stop succeeding in time, so that the command is dead before anyone else can take the
//! lease over. All timing is on `CLOCK_BOOTTIME` (see `clock.rs`).
//!
//! Stores whose leases need no renewal (flock) are still checked: a lock file deleted or replaced
//! under a running command means another process can lock the new one, so `renew` there is a
//! check that the lock is still ours, made every `CHECK_EVERY`.

use crate::clock::boot_now;
use crate::runner::Deadline;
use crate::store::liveness::holder_gives_up_after;
use crate::store::{Lease, Store, StoreError};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How often a lease that needs no renewal is checked for still being ours.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Longest single sleep: after a suspend, the heartbeat looks at the boot clock within this.
const TICK: Duration = Duration::from_millis(250);
/// Pause before retrying a renewal that failed for a reason other than a lost lease.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub(crate) struct Heartbeat {
    /// Boot time at which the last successful renewal (or the acquisition) was asked for.
    last_ok: Duration,
    ttl: Duration,
    renews: bool,
    deadline: watch::Sender<Option<Duration>>,
}

impl Heartbeat {
    /// `asked` is the boot time at which we asked for the lease: the store granted it no
    /// earlier, so counting from there errs on the safe side.
    pub fn new(store: &dyn Store, lease: &Lease, asked: Duration) -> Heartbeat {
        let renews = store.needs_renewal();
        let ttl = lease.ttl;
        let (deadline, _) = watch::channel(renews.then(|| asked + holder_gives_up_after(ttl)));
        Heartbeat {
            last_ok: asked,
            ttl,
            renews,
            deadline,
        }
    }

    /// The supervisor's deadline, kept current by this heartbeat.
    pub fn deadline(&self) -> Deadline {
        self.deadline.subscribe()
    }

    /// Whether the lease may have lapsed for others already: past the point where a holder gives
    /// its lease up.
    pub fn expired(&self) -> bool {
        self.renews && boot_now() >= self.give_up_at()
    }

    fn give_up_at(&self) -> Duration {
        self.last_ok + holder_gives_up_after(self.ttl)
    }

    fn renewed(&mut self, asked: Duration) {
        self.last_ok = asked;
        self.deadline
            .send_replace(Some(asked + holder_gives_up_after(self.ttl)));
    }

    fn since_ok(&self) -> Duration {
        boot_now().saturating_sub(self.last_ok)
    }

    /// Renew now unless a renewal is recent, so that a command never starts on a lease that may
    /// be about to lapse (slow store calls since the last renewal, a long wait for the lease).
    /// A renewal that succeeds proves the lease is still ours: every store fences it.
    pub async fn ensure_fresh(&mut self, store: &dyn Store, lease: &Lease) -> Result<(), String> {
        if !self.renews {
            return match store.renew(lease).await {
                Err(StoreError::LeaseLost { reason, .. }) => Err(reason),
                _ => Ok(()),
            };
        }
        if self.since_ok() < self.ttl / 3 {
            return Ok(());
        }
        let asked = boot_now();
        let limit = (self.ttl / 4).max(Duration::from_secs(1));
        match tokio::time::timeout(limit, store.renew(lease)).await {
            Ok(Ok(())) => {
                self.renewed(asked);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("could not renew the lease: {e}")),
            Err(_) => Err(format!(
                "could not renew the lease (no answer in {}s)",
                limit.as_secs()
            )),
        }
    }

    /// Resolves only when the lease is lost, with the reason.
    pub async fn lost(&mut self, store: &dyn Store, lease: &Lease) -> String {
        if !self.renews {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                if let Err(StoreError::LeaseLost { reason, .. }) = store.renew(lease).await {
                    return reason;
                }
            }
        }
        let every = (self.ttl / 3).max(Duration::from_millis(200));
        let mut next = self.last_ok + every;
        loop {
            let now = boot_now();
            if now < next {
                tokio::time::sleep((next - now).min(TICK)).await;
                continue;
            }
            let asked = boot_now();
            let budget = self.give_up_at().saturating_sub(asked);
            if budget.is_zero() {
                return format!("no renewal succeeded for {}s", self.since_ok().as_secs());
            }
            match tokio::time::timeout(budget, store.renew(lease)).await {
                Ok(Ok(())) => {
                    self.renewed(asked);
                    next = asked + every;
                }
                Ok(Err(StoreError::LeaseLost { reason, .. })) => return reason,
                Ok(Err(e)) => {
                    warn!(key = %lease.id, "lease renewal failed, retrying: {e}");
                    next = boot_now() + RETRY_AFTER.min(every);
                }
                Err(_) => {
                    return format!("no renewal succeeded for {}s", self.since_ok().as_secs());
                }
            }
        }
    }
}
