//! Every Kubernetes API call of the store goes through `call`: bounded in time, transient failures
//! retried a bounded number of times, answers sorted into the few outcomes the store decides on.
//! Must never retry a conflict (the caller re-reads and decides again) nor wait without a bound.

use super::super::StoreError;
use std::future::Future;
use std::time::{Duration, Instant};

/// Every API permission the store uses, as (API group, resource, verbs): `initguard k8s rbac`
/// grants exactly these, and the end-to-end tests check the store asks for nothing else.
/// `watch`: waiters watch the task's Lease (by `metadata.name` field selector) and poll only
/// when the watch is refused or breaks.
pub const PERMISSIONS: &[(&str, &str, &[&str])] = &[
    (
        "coordination.k8s.io",
        "leases",
        &["get", "list", "create", "update", "watch"],
    ),
    ("events.k8s.io", "events", &["create"]),
];

/// Longest one request may take before it counts as unanswered.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one call may take with all its tries, when the caller sets no tighter deadline: an
/// API server that does not answer is reported (exit 69) after this, the bound README states.
pub(crate) const CALL_BUDGET: Duration = Duration::from_secs(10);
/// Tries per call for transient failures (connection refused, timeout, 429, 5xx).
pub(crate) const ATTEMPTS: u32 = 4;
/// First pause between tries; doubled each time, jittered.
const BACKOFF: Duration = Duration::from_millis(200);
/// Shortest budget a try gets even when its deadline has passed: one last look is always worth it.
const MIN_BUDGET: Duration = Duration::from_millis(500);

/// What a call does, for messages: `update` on `leases` in API group `coordination.k8s.io`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub verb: &'static str,
    pub resource: &'static str,
    pub group: &'static str,
}

impl Op {
    pub const fn lease(verb: &'static str) -> Op {
        Op {
            verb,
            resource: "leases",
            group: "coordination.k8s.io",
        }
    }

    pub const fn event(verb: &'static str) -> Op {
        Op {
            verb,
            resource: "events",
            group: "events.k8s.io",
        }
    }

    fn resource_text(&self) -> String {
        if self.group.is_empty() {
            format!("{} (core API group)", self.resource)
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// How a call failed, as far as the store's decisions go.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 409 Conflict: the object changed since the resourceVersion we sent.
    Conflict,
    /// 409 AlreadyExists on create.
    AlreadyExists,
    NotFound,
    /// 403: RBAC denies this verb on this resource.
    Forbidden {
        op: Op,
        message: String,
    },
    /// 401: the credentials are missing, expired or wrong.
    Unauthorized {
        message: String,
    },
    /// The server rejected the request itself (400, 422, …): retrying cannot help.
    Rejected {
        op: Op,
        code: u16,
        message: String,
    },
    /// No usable answer after every try: refused, timed out, 429/5xx, undecodable.
    Unreachable {
        op: Op,
        tries: u32,
        reason: String,
    },
}

impl ApiError {
    /// The typed store error for failures the caller does not handle itself.
    pub(crate) fn into_store(self, store: &str, namespace: &str) -> StoreError {
        match self {
            ApiError::Forbidden { op, message } => StoreError::Forbidden {
                store: store.to_string(),
                reason: format!(
                    "the API server forbids verb {:?} on resource {} in namespace {namespace} \
                     ({message}); grant it with `initguard k8s rbac --namespace {namespace} \
                     --service-account SA | kubectl apply -f -`",
                    op.verb,
                    op.resource_text(),
                ),
            },
            ApiError::Unauthorized { message } => StoreError::Config {
                store: store.to_string(),
                reason: format!(
                    "the API server did not accept the credentials ({message}); check the \
                     service account token or the kubeconfig user"
                ),
            },
            ApiError::Rejected { op, code, message } => StoreError::Config {
                store: store.to_string(),
                reason: format!(
                    "the API server rejected {} on {} with {code}: {message}",
                    op.verb,
                    op.resource_text()
                ),
            },
            ApiError::Unreachable { op, tries, reason } => StoreError::Unreachable {
                store: store.to_string(),
                reason: format!(
                    "{} {} failed after {tries} {}: {reason}",
                    op.verb,
                    op.resource_text(),
                    if tries == 1 { "try" } else { "tries" }
                ),
            },
            ApiError::Conflict => StoreError::Unreachable {
                store: store.to_string(),
                reason: "the object kept changing under every write (409 Conflict)".into(),
            },
            ApiError::AlreadyExists => StoreError::Unreachable {
                store: store.to_string(),
                reason: "the object was created concurrently again and again (409 AlreadyExists)"
                    .into(),
            },
            ApiError::NotFound => StoreError::Config {
                store: store.to_string(),
                reason: format!("namespace {namespace} or the object does not exist (404)"),
            },
        }
    }
}

enum Sorted {
    Final(ApiError),
    Transient(String),
}

fn sort(op: Op, err: kube::Error) -> Sorted {
    match err {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                409 if status.is_already_exists() => Sorted::Final(ApiError::AlreadyExists),
                409 => Sorted::Final(ApiError::Conflict),
                404 => Sorted::Final(ApiError::NotFound),
                403 => Sorted::Final(ApiError::Forbidden { op, message }),
                401 => Sorted::Final(ApiError::Unauthorized { message }),
                // Throttling and server-side trouble pass; everything else is about the request.
                408 | 429 | 500 | 502 | 503 | 504 => {
                    Sorted::Transient(format!("{} {}", status.code, message))
                }
                code => Sorted::Final(ApiError::Rejected { op, code, message }),
            }
        }
        // An answer we cannot decode is most often a proxy or load balancer page, not the API
        // server: treat like no answer.
        other => Sorted::Transient(chain(&other)),
    }
}

/// An error with its causes, `outer: inner: innermost`: "client error (Connect)" alone does not
/// say whether DNS, TCP or the certificate failed.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// Run `f` until it answers, at most `ATTEMPTS` times, each try bounded by `CALL_TIMEOUT`, all of
/// them by `deadline` (`CALL_BUDGET` from now when not given; a passed deadline still allows one
/// short try).
pub(crate) async fn call<T, F, Fut>(
    op: Op,
    deadline: Option<Instant>,
    mut f: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = Instant::now();
    let deadline = deadline.unwrap_or_else(|| started + CALL_BUDGET);
    let mut last = String::new();
    let mut unanswered = false;
    let mut tries = 0;
    for attempt in 0..ATTEMPTS {
        tries += 1;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(CALL_TIMEOUT)
            .max(MIN_BUDGET);
        unanswered = false;
        match tokio::time::timeout(budget, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => match sort(op, e) {
                Sorted::Final(e) => return Err(e),
                Sorted::Transient(reason) => last = reason,
            },
            Err(_) => unanswered = true,
        }
        let pause = super::super::jittered(BACKOFF * 2u32.pow(attempt));
        let out_of_time = Instant::now() + pause >= deadline;
        if attempt + 1 == ATTEMPTS || out_of_time {
            break;
        }
        tracing::debug!(verb = op.verb, resource = op.resource, error = %last, "retrying");
        tokio::time::sleep(pause).await;
    }
    if unanswered {
        last = format!(
            "the API server did not answer within {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Err(ApiError::Unreachable {
        op,
        tries,
        reason: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Status::failure("msg", reason).with_code(code).boxed())
    }

    #[test]
    fn sorts_statuses() {
        let op = Op::lease("update");
        assert!(matches!(
            sort(op, api(409, "AlreadyExists")),
            Sorted::Final(ApiError::AlreadyExists)
        ));
        assert!(matches!(
            sort(op, api(409, "Conflict")),
            Sorted::Final(ApiError::Conflict)
        ));
        assert!(matches!(
            sort(op, api(404, "NotFound")),
            Sorted::Final(ApiError::NotFound)
        ));
        assert!(matches!(
            sort(op, api(403, "Forbidden")),
            Sorted::Final(ApiError::Forbidden { .. })
        ));
        assert!(matches!(sort(op, api(503, "")), Sorted::Transient(_)));
        assert!(matches!(
            sort(op, api(422, "Invalid")),
            Sorted::Final(ApiError::Rejected { code: 422, .. })
        ));
    }

    #[test]
    fn forbidden_names_verb_resource_and_the_rbac_command() {
        let err = ApiError::Forbidden {
            op: Op::lease("create"),
            message: "nope".into(),
        }
        .into_store("kubernetes:ns", "ns");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Forbidden { .. }));
        assert!(text.contains("\"create\""), "{text}");
        assert!(text.contains("leases.coordination.k8s.io"), "{text}");
        assert!(text.contains("initguard k8s rbac"), "{text}");
    }

    #[tokio::test]
    async fn transient_failures_are_retried_a_bounded_number_of_times() {
        let mut tries = 0;
        let res: Result<(), _> = call(Op::lease("get"), None, || {
            tries += 1;
            async { Err(api(503, "ServiceUnavailable")) }
        })
        .await;
        assert!(matches!(res, Err(ApiError::Unreachable { .. })));
        assert_eq!(tries, ATTEMPTS);
    }

    #[tokio::test]
    async fn a_call_nobody_answers_ends_at_its_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(1200);
        let res: Result<(), _> = call(Op::lease("get"), Some(deadline), || {
            std::future::pending::<Result<(), kube::Error>>()
        })
        .await;
        let took = started.elapsed();
        match res {
            Err(ApiError::Unreachable { reason, .. }) => {
                assert!(reason.contains("did not answer within"), "{reason}")
            }
            other => panic!("unexpected: {other:?}"),
        }
        // Ends at the 1.2 s deadline given, not at the 10 s default bound: the only thing the
        // clock must tell apart here, with room for a loaded machine.
        assert!(took < Duration::from_secs(6), "took {took:?}");
    }

    #[tokio::test]
    async fn conflicts_are_not_retried() {
        let mut tries = 0;
        let res: Result<(), _> = call(Op::lease("update"), None, || {
            tries += 1;
            async { Err(api(409, "Conflict")) }
        })
        .await;
        assert!(matches!(res, Err(ApiError::Conflict)));
        assert_eq!(tries, 1);
    }
}
