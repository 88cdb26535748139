//! The Lease as a lock, the way client-go's leader election reads it: who holds it, when it lapses
//! (judged by *locally observed* time since its resourceVersion last changed), and the edits that
//! take, renew and give it up. Pure logic over k8s-openapi values; no I/O. Must never compare
//! `renewTime` with the local clock to decide anything: clocks of different nodes disagree.

use super::names::{ANNOTATION_HOLDER, ANNOTATION_TASK, LABEL_MANAGED_BY, MANAGED_BY};
use crate::task::Holder;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `leaseDurationSeconds` for a ttl: whole seconds, rounded up, at least 1.
pub(crate) fn duration_seconds(ttl: Duration) -> i32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

pub(crate) fn holder_identity(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The fencing token: `leaseTransitions`, bumped on every acquisition.
pub(crate) fn token(lease: &Lease) -> u64 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(0)
}

/// How long the holder said its lease lasts without renewal.
pub(crate) fn lease_duration(lease: &Lease) -> Option<Duration> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
}

/// The holder as its annotation describes it; `holderIdentity` alone when the annotation is
/// missing (a Lease someone edited by hand).
pub(crate) fn holder(lease: &Lease) -> Option<Holder> {
    let identity = holder_identity(lease)?;
    let from_annotation = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_HOLDER))
        .and_then(|json| serde_json::from_str::<Holder>(json).ok());
    Some(from_annotation.unwrap_or_else(|| Holder {
        host: identity.to_string(),
        ..Holder::default()
    }))
}

/// True when `identity` holds the lease under `token`: the condition of every fenced write.
pub(crate) fn owned_by(lease: &Lease, identity: &str, token: u64) -> bool {
    holder_identity(lease) == Some(identity) && self::token(lease) == token
}

/// For the "held for Ns" log line only (never for a decision): how long ago, by the holder's
/// clock, the lease was acquired.
pub(crate) fn held_for_display(lease: &Lease) -> Option<Duration> {
    let acquired = lease.spec.as_ref()?.acquire_time.as_ref()?.0;
    let secs = Timestamp::now().duration_since(acquired).as_secs_f64();
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A new Lease for a task, already held by `identity` with token 1.
pub(crate) fn new_held(
    name: &str,
    task: &str,
    identity: &str,
    holder: &Holder,
    ttl: Duration,
) -> Lease {
    let now = MicroTime(Timestamp::now());
    let mut lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_TASK.to_string(),
                task.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_string()),
            lease_duration_seconds: Some(duration_seconds(ttl)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(1),
            ..LeaseSpec::default()
        }),
    };
    set_holder_annotation(&mut lease, Some(holder));
    lease
}

/// Edit `lease` so that `identity` takes it with the next token; `None` when `leaseTransitions`
/// cannot grow any more.
pub(crate) fn take(
    lease: &mut Lease,
    identity: &str,
    holder: &Holder,
    ttl: Duration,
) -> Option<u64> {
    let next = token(lease).checked_add(1)?;
    let next_i32 = i32::try_from(next).ok()?;
    let now = MicroTime(Timestamp::now());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(duration_seconds(ttl));
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    spec.lease_transitions = Some(next_i32);
    set_holder_annotation(lease, Some(holder));
    Some(next)
}

/// Edit `lease` to say its holder is alive now.
///
/// The API server does not write an update that changes nothing: the resourceVersion stays, and
/// everyone judging the holder's liveness by it (waiters, `release`) would see no renewal at all.
/// So a renewal always moves `renewTime` forward, by a microsecond (its precision) if the clock
/// has not moved or was set back.
pub(crate) fn renew(lease: &mut Lease) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.renew_time = Some(MicroTime(later_than(spec.renew_time.as_ref())));
}

/// Now, or one microsecond after `previous` when now is not later than it at `MicroTime`'s
/// precision.
fn later_than(previous: Option<&MicroTime>) -> Timestamp {
    let now = Timestamp::now();
    let Some(MicroTime(prev)) = previous else {
        return now;
    };
    let micros = |t: Timestamp| t.as_microsecond();
    if micros(now) > micros(*prev) {
        return now;
    }
    Timestamp::from_microsecond(micros(*prev).saturating_add(1)).unwrap_or(now)
}

/// Edit `lease` so that nobody holds it; `leaseTransitions` stays, so tokens keep growing.
pub(crate) fn release(lease: &mut Lease) {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = Some(MicroTime(later_than(spec.renew_time.as_ref())));
    set_holder_annotation(lease, None);
}

fn set_holder_annotation(lease: &mut Lease, holder: Option<&Holder>) {
    let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match holder.and_then(|h| serde_json::to_string(h).ok()) {
        Some(json) => {
            annotations.insert(ANNOTATION_HOLDER.to_string(), json);
        }
        None => {
            annotations.remove(ANNOTATION_HOLDER);
        }
    }
}

/// What an acquirer concludes from one look at a Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nobody holds it.
    Free,
    /// Its holder has not changed it for longer than its duration: take it over.
    Lapsed,
    /// Held; `left` is how long it stays held at the least, if nothing changes it.
    Held { left: Duration },
}

/// client-go's `observedRecord`/`observedTime`: the resourceVersion last seen and the local
/// instant it was first seen. Every write (renewal, record, takeover) changes the resourceVersion,
/// so "unchanged for longer than its duration, as timed here" means its holder stopped renewing.
/// A process that has just started has seen nothing yet, so it waits a full duration: slower for
/// a newcomer, but safe whatever the clocks of other nodes say.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    pub fn judge(&mut self, lease: &Lease, now: Instant, fallback: Duration) -> Verdict {
        if holder_identity(lease).is_none() {
            return Verdict::Free;
        }
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.seen {
            Some((seen_rv, at)) if *seen_rv == rv => *at,
            _ => {
                self.seen = Some((rv, now));
                now
            }
        };
        let duration = lease_duration(lease).unwrap_or(fallback);
        let elapsed = now.saturating_duration_since(since);
        if elapsed > duration {
            Verdict::Lapsed
        } else {
            Verdict::Held {
                left: duration - elapsed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(rv: &str, renew: Timestamp, secs: i32) -> Lease {
        let mut l = new_held(
            "n",
            "t",
            "someone",
            &Holder::default(),
            Duration::from_secs(1),
        );
        l.metadata.resource_version = Some(rv.into());
        let spec = l.spec.as_mut().unwrap();
        spec.renew_time = Some(MicroTime(renew));
        spec.lease_duration_seconds = Some(secs);
        l
    }

    #[test]
    fn expiry_ignores_renew_time_and_uses_local_observation() {
        // renewTime far in the past (a skewed clock): still held until observed unchanged for 10s.
        let old = Timestamp::from_second(1_000).unwrap();
        let lease = held("5", old, 10);
        let mut obs = Observer::default();
        let t0 = Instant::now();
        assert!(matches!(
            obs.judge(&lease, t0, Duration::ZERO),
            Verdict::Held { .. }
        ));
        assert!(matches!(
            obs.judge(&lease, t0 + Duration::from_secs(9), Duration::ZERO),
            Verdict::Held { .. }
        ));
        assert_eq!(
            obs.judge(&lease, t0 + Duration::from_secs(11), Duration::ZERO),
            Verdict::Lapsed
        );
    }

    #[test]
    fn any_change_restarts_the_clock() {
        // renewTime far in the future (a clock ahead) cannot keep a dead holder alive either.
        let future = Timestamp::from_second(4_000_000_000).unwrap();
        let mut obs = Observer::default();
        let t0 = Instant::now();
        obs.judge(&held("5", future, 10), t0, Duration::ZERO);
        let later = t0 + Duration::from_secs(8);
        assert!(matches!(
            obs.judge(&held("6", future, 10), later, Duration::ZERO),
            Verdict::Held { .. }
        ));
        assert!(matches!(
            obs.judge(
                &held("6", future, 10),
                later + Duration::from_secs(9),
                Duration::ZERO
            ),
            Verdict::Held { .. }
        ));
        assert_eq!(
            obs.judge(
                &held("6", future, 10),
                later + Duration::from_secs(11),
                Duration::ZERO
            ),
            Verdict::Lapsed
        );
    }

    #[test]
    fn released_leases_are_free_and_keep_their_token() {
        let mut lease = held("1", Timestamp::now(), 10);
        let t = take(&mut lease, "me", &Holder::default(), Duration::from_secs(3)).unwrap();
        assert_eq!(t, 2);
        assert!(owned_by(&lease, "me", 2));
        assert!(!owned_by(&lease, "me", 1));
        release(&mut lease);
        assert_eq!(token(&lease), 2);
        assert_eq!(
            Observer::default().judge(&lease, Instant::now(), Duration::ZERO),
            Verdict::Free
        );
        assert!(holder(&lease).is_none());
    }

    #[test]
    fn a_renewal_always_changes_the_lease() {
        // A renewTime ahead of this clock (set by a node whose clock runs fast, or ours stepped
        // back): an update that left it as it was would be a no-op the API server does not write.
        let ahead = Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3600))
            .unwrap();
        let mut lease = held("1", ahead, 10);
        let before = lease.clone();
        renew(&mut lease);
        let renewed = lease.spec.as_ref().unwrap().renew_time.clone().unwrap().0;
        assert!(renewed > ahead, "{renewed} after {ahead}");
        assert_ne!(
            serde_json::to_string(&lease).unwrap(),
            serde_json::to_string(&before).unwrap(),
            "the encoded Lease changed"
        );
        // Twice in a row within one microsecond still changes it each time.
        let mut again = lease.clone();
        renew(&mut again);
        assert_ne!(again.spec, lease.spec);
        // An ordinary renewal is simply now.
        let mut fresh = held("1", Timestamp::from_second(1_000).unwrap(), 10);
        let t0 = Timestamp::now();
        renew(&mut fresh);
        assert!(fresh.spec.unwrap().renew_time.unwrap().0 >= t0);
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(duration_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(duration_seconds(Duration::ZERO), 1);
        assert_eq!(duration_seconds(Duration::from_secs(15)), 15);
    }

    #[test]
    fn holder_comes_from_the_annotation() {
        let h = Holder {
            pod: Some("web-0".into()),
            host: "web-0".into(),
            pid: 7,
            ..Holder::default()
        };
        let lease = new_held("n", "t", "id", &h, Duration::from_secs(5));
        assert_eq!(holder(&lease), Some(h));
        assert_eq!(token(&lease), 1);
    }
}
