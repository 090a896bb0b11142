//! Retries: which failed attempts may be tried again, the budget that keeps retries
//! from multiplying load on a struggling service, and backoff with jitter.
//!
//! A request is retried only when nothing has been sent to the client yet (the
//! decision is made on the response head, before it is returned), its body can be
//! replayed (buffered up to `max_buffered_body_bytes`), and either its method is
//! idempotent, the policy names the status / gRPC code it got, or the endpoint
//! never processed it (not connected, or an HTTP/2 stream refused).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::Method;
use rand::Rng as _;
use serde::{Serialize, Serializer};

use crate::clock::now_nanos;
use crate::outcome::Outcome;

pub(crate) const DEFAULT_BUDGET_RATIO: f64 = 0.2;
pub(crate) const DEFAULT_MIN_PER_SECOND: u32 = 10;
pub(crate) const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub(crate) const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
pub(crate) const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Retried on by idempotent requests when the policy names no statuses.
const DEFAULT_STATUSES: [u16; 3] = [502, 503, 504];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) retry_on_status: Vec<u16>,
    pub(crate) retry_on_grpc: Vec<u32>,
    pub(crate) budget_ratio: f64,
    pub(crate) min_retries_per_second: u32,
    #[serde(serialize_with = "as_ms")]
    pub(crate) backoff_base: Duration,
    #[serde(serialize_with = "as_ms")]
    pub(crate) backoff_max: Duration,
    pub(crate) max_buffered_body_bytes: usize,
}

fn as_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 9110 §9.2.2.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl RetryPolicy {
    /// Whether `should_retry` looks at an answer's gRPC status.
    pub(crate) fn reads_grpc(&self) -> bool {
        !self.retry_on_grpc.is_empty()
    }

    pub(crate) fn should_retry(&self, method: &Method, outcome: Outcome) -> bool {
        let named = |status: u16, grpc: Option<u32>| {
            self.retry_on_status.contains(&status)
                || grpc.is_some_and(|c| self.retry_on_grpc.contains(&c))
        };
        match outcome {
            // Nothing reached the endpoint, or it did not process the request; any
            // method is safe to send again.
            Outcome::NotSent | Outcome::Refused => true,
            Outcome::NoResponse => is_idempotent(method),
            // A local limit refused it, or the client left: nothing to retry.
            Outcome::Cancelled | Outcome::Abandoned | Outcome::Unanswered { .. } => false,
            Outcome::Response { status, grpc } => {
                named(status, grpc)
                    || (is_idempotent(method)
                        && self.retry_on_status.is_empty()
                        && DEFAULT_STATUSES.contains(&status))
            }
        }
    }

    /// Full jitter: a random wait up to `base × 2^(retry-1)`, capped.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.backoff_max);
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

/// Retries allowed per second: `min_retries_per_second` plus `ratio` of the
/// requests seen (this second or the last, whichever is more, so the allowance does
/// not collapse at each second's start). Lock-free; the window roll can race, which
/// at worst lets a few extra retries through at a second boundary.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    window: AtomicU64,
    requests: AtomicU32,
    previous: AtomicU32,
    retries: AtomicU32,
}

impl Budget {
    fn roll(&self) {
        let second = now_nanos() / 1_000_000_000;
        let seen = self.window.load(Ordering::Relaxed);
        if seen != second
            && self
                .window
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.requests.swap(0, Ordering::Relaxed);
            self.previous
                .store(if second == seen + 1 { last } else { 0 }, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn deposit(&self) {
        self.roll();
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn try_withdraw(&self, ratio: f64, min_per_second: u32) -> bool {
        self.roll();
        let seen = self
            .requests
            .load(Ordering::Relaxed)
            .max(self.previous.load(Ordering::Relaxed));
        let allowed = u64::from(min_per_second) + (f64::from(seen) * ratio) as u64;
        let used = self.retries.fetch_add(1, Ordering::Relaxed);
        if u64::from(used) < allowed {
            true
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            retry_on_status: vec![],
            retry_on_grpc: vec![],
            budget_ratio: 0.2,
            min_retries_per_second: 0,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            max_buffered_body_bytes: DEFAULT_MAX_BODY,
        }
    }

    #[test]
    fn only_safe_cases_are_retried() {
        let p = policy();
        let bad_gateway = Outcome::Response {
            status: 502,
            grpc: None,
        };
        assert!(p.should_retry(&Method::GET, bad_gateway));
        assert!(
            !p.should_retry(&Method::POST, bad_gateway),
            "POST is not idempotent"
        );
        assert!(p.should_retry(&Method::POST, Outcome::NotSent));
        assert!(!p.should_retry(&Method::POST, Outcome::NoResponse));
        assert!(p.should_retry(&Method::PUT, Outcome::NoResponse));
        let err = Outcome::Response {
            status: 500,
            grpc: None,
        };
        assert!(!p.should_retry(&Method::GET, err));
        let named = RetryPolicy {
            retry_on_status: vec![500],
            retry_on_grpc: vec![14],
            ..policy()
        };
        assert!(
            named.should_retry(&Method::POST, err),
            "named statuses retry any method"
        );
        assert!(named.should_retry(
            &Method::POST,
            Outcome::Response {
                status: 200,
                grpc: Some(14)
            }
        ));
        assert!(
            !named.should_retry(&Method::GET, bad_gateway),
            "the list replaces the default"
        );
    }

    #[test]
    fn budget_allows_ratio_of_requests_plus_minimum() {
        crate::clock::paused_runtime().block_on(async {
            let b = Budget::default();
            for _ in 0..100 {
                b.deposit();
            }
            let granted = (0..100).filter(|_| b.try_withdraw(0.2, 5)).count();
            assert_eq!(granted, 25, "5 + 20% of 100");
        });
    }

    #[test]
    fn budget_carries_the_last_second_over_then_resets() {
        crate::clock::paused_runtime().block_on(async {
            let b = Budget::default();
            for _ in 0..100 {
                b.deposit();
            }
            tokio::time::advance(Duration::from_secs(1)).await;
            let granted = (0..100).filter(|_| b.try_withdraw(0.2, 0)).count();
            assert_eq!(
                granted, 20,
                "a new second starts from the last one's requests"
            );
            tokio::time::advance(Duration::from_secs(2)).await;
            let granted = (0..100).filter(|_| b.try_withdraw(0.2, 5)).count();
            assert_eq!(granted, 5, "after an idle second only the minimum is left");
        });
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = policy();
        for retry in 1..10 {
            assert!(p.backoff(retry) <= Duration::from_millis(40));
        }
    }
}
