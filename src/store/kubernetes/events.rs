//! Kubernetes Events on the Pod that runs a task (run started, skipped, succeeded, …), so that
//! `kubectl describe pod` tells the story. Best effort: must never fail or slow down a run — one
//! short try per Event, and one warning line, then silence, when RBAC forbids creating Events.
//! events.k8s.io/v1 Events with a microsecond `eventTime`, so that `kubectl describe` and
//! `kubectl get events` order them as they happened, also within one second.

use super::api::{self, ApiError, Op};
use crate::store::TaskEvent;
use crate::task::TaskId;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// An Event waits at most this long: it is a courtesy, and the run (holding a lease whose clock
/// is ticking) matters more. API servers answer an Event in milliseconds.
const EVENT_BUDGET: Duration = Duration::from_secs(1);
/// Kubernetes caps Event notes at 1 KiB; longer ones are rejected, not cut.
const MAX_MESSAGE: usize = 1000;
/// `reportingController`: a qualified name, by convention prefixed with a domain.
const REPORTING_CONTROLLER: &str = "initguard.io/initguard";

/// The Pod Events are about, from the Downward API (`POD_NAME`, `POD_UID`, `POD_NAMESPACE`).
#[derive(Debug, Clone)]
pub(crate) struct PodRef {
    pub name: String,
    pub uid: String,
    pub namespace: String,
}

impl PodRef {
    /// `None` outside a Pod (or without the Downward API env): then no Events are sent.
    pub fn from_env(fallback_namespace: &str) -> Option<PodRef> {
        let var = |n| {
            std::env::var(n)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Some(PodRef {
            name: var("POD_NAME")?,
            uid: var("POD_UID")?,
            namespace: var("POD_NAMESPACE").unwrap_or_else(|| fallback_namespace.to_string()),
        })
    }
}

pub(crate) struct EventSink {
    client: kube::Client,
    pod: Option<PodRef>,
    /// Set after the first refusal, so that a missing RBAC rule costs one warning line, not one
    /// per Event.
    off: AtomicBool,
}

impl EventSink {
    pub fn new(client: kube::Client, pod: Option<PodRef>) -> EventSink {
        EventSink {
            client,
            pod,
            off: AtomicBool::new(false),
        }
    }

    pub async fn send(&self, id: &TaskId, kind: TaskEvent, message: &str) {
        let Some(pod) = &self.pod else { return };
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let event = build(pod, id, kind, message);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let deadline = Some(Instant::now() + EVENT_BUDGET);
        let pp = PostParams::default();
        let res = api::call(Op::event("create"), deadline, || api.create(&pp, &event)).await;
        match res {
            Ok(_) => {}
            Err(ApiError::Forbidden { .. }) => {
                if !self.off.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        namespace = %pod.namespace,
                        "Kubernetes Events are skipped: the service account may not create events \
                         in namespace {} (see `initguard k8s rbac`)",
                        pod.namespace
                    );
                }
            }
            Err(e) => tracing::debug!(error = ?e, reason = kind.reason(), "event not recorded"),
        }
    }
}

fn build(pod: &PodRef, id: &TaskId, kind: TaskEvent, message: &str) -> Event {
    let now = Timestamp::now();
    let mut text = format!("{id}: {message}");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    // events.k8s.io/v1 (every API server since 1.19): `eventTime` has microseconds, where the
    // core/v1 first/lastTimestamp have seconds, and kubectl sorts by lastTimestamp when it is
    // set. That API's validation wants reportingController, reportingInstance and action, and
    // none of the deprecated* fields. Event names only need to be unique, as in client-go.
    let suffix: u64 = rand::random();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{suffix:016x}", pod.name)),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..ObjectReference::default()
        }),
        reason: Some(kind.reason().into()),
        // What initguard did about the Pod: the reason without its prefix ("Started", "Skipped").
        action: Some(
            kind.reason()
                .strip_prefix("Initguard")
                .unwrap_or(kind.reason())
                .into(),
        ),
        note: Some(text),
        type_: Some(
            if kind.is_warning() {
                "Warning"
            } else {
                "Normal"
            }
            .into(),
        ),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        // At most 128 characters; a Pod name has at most 253, so keep its end (the unique part).
        reporting_instance: Some(last_chars(&pod.name, 128)),
        event_time: Some(MicroTime(now)),
        ..Event::default()
    }
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Key;

    #[test]
    fn events_point_at_the_pod_and_stay_short() {
        let pod = PodRef {
            name: "web-0".into(),
            uid: "u-1".into(),
            namespace: "shop".into(),
        };
        let id = TaskId::global(Key::parse("app/migrate").unwrap());
        let e = build(&pod, &id, TaskEvent::Failed, &"x".repeat(5000));
        let regarding = e.regarding.clone().unwrap();
        assert_eq!(regarding.uid.as_deref(), Some("u-1"));
        assert_eq!(regarding.kind.as_deref(), Some("Pod"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("InitguardFailed"));
        assert_eq!(e.action.as_deref(), Some("Failed"));
        assert!(e.note.unwrap().len() <= MAX_MESSAGE);
        assert!(e.event_time.is_some() && e.deprecated_last_timestamp.is_none());
        assert!(e.metadata.name.unwrap().starts_with("web-0."));
    }
}
