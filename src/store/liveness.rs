//! Telling a live lease holder from a dead one, for `initguard release`: look at the lease, keep
//! looking for a little longer than one renewal period, and call the holder alive if anything it
//! writes changed meanwhile. Only locally measured time spans are used, never another machine's
//! clock. Must never conclude "unchanged" before a whole window has been watched.

use crate::store::StoreError;
use std::future::Future;
use std::time::{Duration, Instant};

/// Room past the holder's renewal period for a slow renewal round trip.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);
/// Pause between looks while watching: a live holder is usually seen well before the window ends.
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(500);

/// What watching a lease showed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Watched<T> {
    /// Unchanged for the whole window: its holder did not renew, so it is gone.
    Unchanged,
    /// It changed (`None`: the lease is gone); the change happened less than `within` ago.
    Changed { now: Option<T>, within: Duration },
}

/// How long after asking for its last successful renewal a holder of a lease of `ttl` kills its
/// command and gives the lease up: the guard's heartbeat and the supervisor's deadline both use
/// this. Three quarters leave the others' view of the lease a quarter of `ttl` of room: they
/// count its lapse from when they saw the renewal, which is later than when it was asked for.
pub fn holder_gives_up_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.75)
}

/// The watch window that proves a holder of a lease of `ttl` gone: had it renewed while we
/// watched, we would have seen the change; if it did not, its last renewal was asked for before
/// we started watching, so its supervisor killed its command `holder_gives_up_after(ttl)` after
/// that at the latest, even if the holder itself is paused or stuck. The margin is for the
/// round trip of our own first look.
pub(crate) fn window(ttl: Duration) -> Duration {
    holder_gives_up_after(ttl) + MARGIN
}

/// Look at the lease with `look`, every `every`, until it differs from `first` (by `same`) or
/// until `window` has passed since `seen`, the instant the answer holding `first` arrived. The
/// last look is sent no earlier than `seen + window`, so "unchanged" covers the whole window.
pub(crate) async fn watch<T, F, Fut>(
    first: &T,
    seen: Instant,
    window: Duration,
    every: Duration,
    same: impl Fn(&T, &T) -> bool,
    mut look: F,
) -> Result<Watched<T>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    let until = seen + window;
    let mut previous = seen;
    loop {
        let pause = until.saturating_duration_since(Instant::now()).min(every);
        tokio::time::sleep(pause).await;
        let sent = Instant::now();
        let now = look().await?;
        let unchanged = now.as_ref().is_some_and(|n| same(first, n));
        if !unchanged {
            return Ok(Watched::Changed {
                now,
                within: previous.elapsed(),
            });
        }
        if sent >= until {
            return Ok(Watched::Unchanged);
        }
        previous = sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const EVERY: Duration = Duration::from_millis(20);

    fn eq(a: &u32, b: &u32) -> bool {
        a == b
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_quiet_lease_is_watched_for_the_whole_window() {
        let looks = Cell::new(0);
        let start = Instant::now();
        let window = Duration::from_millis(200);
        let w = rt()
            .block_on(watch(&1, start, window, EVERY, eq, || {
                looks.set(looks.get() + 1);
                async { Ok(Some(1)) }
            }))
            .unwrap();
        assert_eq!(w, Watched::Unchanged);
        // The documented window is a lower bound: "unchanged" only after all of it was watched.
        assert!(start.elapsed() >= window);
        assert!(looks.get() >= 2, "looked again while watching");
    }

    #[test]
    fn a_renewal_ends_the_watch_early() {
        let looks = Cell::new(0);
        let start = Instant::now();
        let w = rt()
            .block_on(watch(&1, start, Duration::from_secs(60), EVERY, eq, || {
                looks.set(looks.get() + 1);
                let v = if looks.get() < 3 { 1 } else { 2 };
                async move { Ok(Some(v)) }
            }))
            .unwrap();
        let Watched::Changed { now, within } = w else {
            panic!("{w:?}");
        };
        assert_eq!(now, Some(2));
        // Ended by the change, not by the 60 s window: 10 s tells them apart on any machine.
        assert!(within >= EVERY && within < Duration::from_secs(10));
        assert_eq!(looks.get(), 3);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_vanished_lease_is_a_change() {
        let w = rt()
            .block_on(watch(
                &1,
                Instant::now(),
                Duration::from_secs(60),
                EVERY,
                eq,
                || async { Ok(None) },
            ))
            .unwrap();
        assert!(matches!(w, Watched::Changed { now: None, .. }));
    }
}
