//! Every etcd request of the store goes through `call`: bounded in time, transient failures
//! (no connection, no leader, a timeout) retried a bounded number of times, answers sorted into
//! the few outcomes the store decides on. Must never wait without a bound, and never retry a
//! request that was refused for a reason a retry cannot change (credentials, permissions).

use std::future::Future;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// Longest one request may take before it counts as unanswered.
pub(crate) const TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one call may take with all its tries when the caller sets no tighter deadline: an
/// etcd that does not answer is reported (exit 69) after this, as for the other stores.
pub(crate) const CALL_BUDGET: Duration = Duration::from_secs(10);
/// Tries per call for transient failures.
const ATTEMPTS: u32 = 4;
/// First pause between tries; doubled each time, jittered.
const BACKOFF: Duration = Duration::from_millis(200);
/// Shortest budget a try gets even when its deadline has passed: one last look is worth it.
const MIN_BUDGET: Duration = Duration::from_millis(300);

/// How a request failed, as far as the store's decisions go.
#[derive(Debug)]
pub(crate) enum EtcdError {
    /// The credentials were refused, or none were given to a server that wants them.
    Auth(String),
    /// The user may not touch these keys (etcd RBAC).
    Denied(String),
    /// The lease is gone (expired or revoked): what holds it is lost.
    LeaseGone,
    /// The server refused the request itself: a retry cannot help.
    Rejected(String),
    /// No usable answer after every try.
    Unreachable { tries: u32, reason: String },
}

enum Sorted {
    Final(EtcdError),
    Transient(String),
}

fn sort_status(s: &Status) -> Sorted {
    let msg = s.message().to_string();
    match s.code() {
        Code::Unauthenticated => Sorted::Final(EtcdError::Auth(msg)),
        // etcd 3.4 answers a request without a token, when auth is on, with InvalidArgument.
        Code::InvalidArgument if msg.contains("user name is empty") => {
            Sorted::Final(EtcdError::Auth(msg))
        }
        Code::InvalidArgument if msg.contains("authentication failed") => {
            Sorted::Final(EtcdError::Auth(msg))
        }
        Code::PermissionDenied => Sorted::Final(EtcdError::Denied(msg)),
        Code::NotFound if msg.contains("lease not found") => Sorted::Final(EtcdError::LeaseGone),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled => Sorted::Transient(format!("{:?}: {msg}", s.code())),
        code => Sorted::Final(EtcdError::Rejected(format!("{code:?}: {msg}"))),
    }
}

fn sort(e: etcd_client::Error) -> Sorted {
    use etcd_client::Error;
    match e {
        Error::GRpcStatus(s) => sort_status(&s),
        Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
            Sorted::Final(EtcdError::LeaseGone)
        }
        Error::InvalidArgs(m) => Sorted::Final(EtcdError::Rejected(m)),
        other => Sorted::Transient(chain(&other)),
    }
}

/// An error with its causes, `outer: inner`: "transport error" alone says nothing.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
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

/// The error `connect` reports, sorted as a request's would be (authentication happens there).
pub(crate) fn sorted_connect_error(e: etcd_client::Error) -> EtcdError {
    match sort(e) {
        Sorted::Final(e) => e,
        Sorted::Transient(reason) => EtcdError::Unreachable { tries: 1, reason },
    }
}

/// Run `f` (one request) until it answers, fails for good, or `deadline` (default: now +
/// `CALL_BUDGET`) passes; each try bounded by `TRY_TIMEOUT`.
pub(crate) async fn call<T, F, Fut>(deadline: Option<Instant>, mut f: F) -> Result<T, EtcdError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = deadline.unwrap_or_else(|| Instant::now() + CALL_BUDGET);
    let mut pause = BACKOFF;
    let mut last = String::new();
    for tries in 1..=ATTEMPTS {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_BUDGET)
            .min(TRY_TIMEOUT);
        match tokio::time::timeout(budget, f()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => match sort(e) {
                Sorted::Final(e) => return Err(e),
                Sorted::Transient(reason) => last = reason,
            },
            Err(_) => last = format!("etcd did not answer within {:.1}s", budget.as_secs_f64()),
        }
        let wait = crate::store::jittered(pause);
        if tries == ATTEMPTS || Instant::now() + wait >= deadline {
            return Err(EtcdError::Unreachable {
                tries,
                reason: last,
            });
        }
        tokio::time::sleep(wait).await;
        pause *= 2;
    }
    Err(EtcdError::Unreachable {
        tries: ATTEMPTS,
        reason: last,
    })
}
