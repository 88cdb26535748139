//! `initguard release`: give up a lease whose holder on this Pod (or host) is gone, written once
//! for every store. A holder that is alive keeps its lease: freeing it would let another replica
//! run the task beside it. Alive or gone is told by watching the lease (`liveness`): only locally
//! measured time spans, never another machine's clock.

use crate::store::liveness::{self, LOOK_EVERY, Watched};
use crate::store::{Observation, ReleaseOutcome, Store, StoreError};
use crate::task::{Holder, TaskId};
use std::time::{Duration, Instant};

/// Lease duration assumed for a lease that states none and whose lapse the store cannot tell:
/// the default `--lock-ttl`.
const FALLBACK_TTL: Duration = Duration::from_secs(30);

pub async fn release_holder(
    store: &dyn Store,
    id: &TaskId,
    me: &Holder,
) -> Result<ReleaseOutcome, StoreError> {
    let Some(first) = store.observe(id).await? else {
        return Ok(ReleaseOutcome::NotHeld);
    };
    let seen = Instant::now();
    let Some(holder) = first.holder.clone() else {
        return Ok(ReleaseOutcome::NotHeld);
    };
    // A lease that cannot lapse (flock) belongs to the live process that holds it and goes away
    // with it: nobody else can hand it over, nor needs to.
    if !me.same_owner(&holder) || !store.needs_renewal() {
        return Ok(ReleaseOutcome::HeldByOther {
            holder: Some(holder),
        });
    }
    if first.lapses_in != Some(Duration::ZERO) {
        // Same Pod (or host), and the holder may well be alive and running its command. One
        // that does not renew for the whole window has had its command killed by its
        // supervisor's deadline (see `liveness::window`), paused or not.
        let basis = first.ttl.or(first.lapses_in).unwrap_or(FALLBACK_TTL);
        let window = liveness::window(basis);
        tracing::info!(
            key = %id,
            "the lease on {id} is held by {holder} of this host or Pod; watching it for up to \
             {:.1}s to tell whether that holder is still alive",
            window.as_secs_f64()
        );
        let same = |a: &Observation, b: &Observation| a.version == b.version;
        let watched =
            liveness::watch(&first, seen, window, LOOK_EVERY, same, || store.observe(id)).await?;
        if let Watched::Changed { now, within } = watched {
            return Ok(judge_changed(now, me, within));
        }
    }
    // Unchanged for a whole window, or lapsed: the holder is gone. Freed only if the lease is
    // still exactly the one watched.
    let decided = Instant::now();
    if store.free_if_unchanged(id, &first).await? {
        return Ok(ReleaseOutcome::Released { holder });
    }
    // Written meanwhile: by its holder (alive after all), or by a new one.
    let now = store.observe(id).await?;
    Ok(judge_changed(now, me, decided.elapsed()))
}

/// What a lease that changed while we watched says: freed, renewed by a holder of ours, or
/// taken by someone else.
fn judge_changed(now: Option<Observation>, me: &Holder, within: Duration) -> ReleaseOutcome {
    let Some(now) = now else {
        return ReleaseOutcome::NotHeld;
    };
    let lapsed = now.lapses_in == Some(Duration::ZERO);
    match now.holder {
        Some(h) if me.same_owner(&h) => ReleaseOutcome::StillAlive {
            holder: h,
            renewed_within: within,
        },
        Some(h) if !lapsed => ReleaseOutcome::HeldByOther { holder: Some(h) },
        _ => ReleaseOutcome::NotHeld,
    }
}
