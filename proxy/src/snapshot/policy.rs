//! A received traffic policy resolved into the data path's `Policy`, defaults filled
//! in; anything that cannot be applied rejects the whole update.

use std::time::Duration;

use weft_api::v1;

use super::{Policy, Timeouts};
use crate::balance::{self, Algorithm, HashKey};
use crate::breaker::{self, FailureClass, Limits, OutlierPolicy};
use crate::retry::{self, RetryPolicy};

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

fn dur(v: u64, default: Duration) -> Duration {
    ms(v).unwrap_or(default)
}

/// Resolves a received policy, filling defaults. Rejects what cannot be applied
/// (an update is applied whole or not at all).
pub(crate) fn policy_from_proto(raw: &v1::TrafficPolicy) -> Result<Policy, String> {
    use v1::load_balancer::Algorithm as A;
    let load_balancer = match raw
        .load_balancer
        .as_ref()
        .and_then(|lb| lb.algorithm.as_ref())
    {
        None => Algorithm::default(),
        Some(A::P2cPeakEwma(p)) => Algorithm::P2cPeakEwma {
            decay: dur(p.decay_ms, balance::DEFAULT_DECAY),
            default_rtt: dur(p.default_rtt_ms, balance::DEFAULT_RTT),
        },
        Some(A::RoundRobin(_)) => Algorithm::RoundRobin,
        Some(A::LeastRequest(_)) => Algorithm::LeastRequest,
        Some(A::ConsistentHash(h)) => Algorithm::ConsistentHash(match &h.key {
            Some(v1::consistent_hash::Key::Header(name)) => HashKey::Header(
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("consistent hash header {name:?} is not a header name"))?,
            ),
            Some(v1::consistent_hash::Key::ClientIdentity(_)) | None => HashKey::ClientIdentity,
        }),
    };
    let cb = raw.circuit_breaker.clone().unwrap_or_default();
    let limits = Limits {
        max_connections: cb.max_connections,
        max_pending_requests: cb.max_pending_requests,
        max_active_requests: cb.max_active_requests,
        max_concurrent_retries: cb.max_concurrent_retries,
    };
    let outlier = match cb.outlier_detection {
        // Unset: ejection is on with defaults, so one hung or refusing endpoint is
        // taken out of rotation without anyone having configured for it.
        None => Some(breaker::OutlierPolicy::by_default()),
        Some(o) if o.consecutive_failures > 0 => {
            let mut failure_on = o
                .failure_on
                .iter()
                .map(|f| match v1::FailureClass::try_from(*f) {
                    Ok(v1::FailureClass::FailureClass5xx) => Ok(Some(FailureClass::ServerError)),
                    Ok(v1::FailureClass::Gateway) => Ok(Some(FailureClass::Gateway)),
                    Ok(v1::FailureClass::Connect) => Ok(Some(FailureClass::Connect)),
                    Ok(v1::FailureClass::Grpc) => Ok(Some(FailureClass::Grpc)),
                    Ok(v1::FailureClass::Unspecified) => Ok(None),
                    Err(_) => Err(format!("unknown failure class {f}")),
                })
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>, _>>()?;
            if failure_on.is_empty() {
                failure_on = vec![FailureClass::ServerError, FailureClass::Connect];
            }
            let max_ejected_percent = match o.max_ejected_percent {
                0 => breaker::DEFAULT_MAX_EJECTED_PERCENT,
                p if p <= 100 => p,
                p => return Err(format!("max_ejected_percent {p} is over 100")),
            };
            let base_ejection = dur(o.base_ejection_ms, breaker::DEFAULT_BASE_EJECTION);
            Some(OutlierPolicy {
                consecutive_failures: o.consecutive_failures,
                base_ejection,
                max_ejection: dur(o.max_ejection_ms, breaker::DEFAULT_MAX_EJECTION)
                    .max(base_ejection),
                max_ejected_percent,
                failure_on,
                grpc_codes: o.grpc_codes,
            })
        }
        _ => None,
    };
    let retry = retry_from_proto(raw.retry.as_ref())?;
    Ok(Policy {
        load_balancer,
        limits,
        outlier,
        retry,
        timeouts: timeouts_from_proto(&raw.timeouts.unwrap_or_default()),
    })
}

pub(crate) fn timeouts_from_proto(t: &v1::Timeouts) -> Timeouts {
    Timeouts {
        request: ms(t.request_ms),
        per_try: ms(t.per_try_ms),
        connect: ms(t.connect_ms),
        idle: ms(t.idle_ms),
    }
}

/// None: no retries (no policy, or one allowing a single attempt).
pub(crate) fn retry_from_proto(
    raw: Option<&v1::RetryPolicy>,
) -> Result<Option<RetryPolicy>, String> {
    Ok(match raw {
        Some(r) if r.max_attempts > 1 => {
            if !(0.0..=1.0).contains(&r.budget_ratio) {
                return Err(format!(
                    "retry budget_ratio {} is outside 0..=1",
                    r.budget_ratio
                ));
            }
            Some(RetryPolicy {
                max_attempts: r.max_attempts.min(10),
                retry_on_status: r
                    .retry_on_status
                    .iter()
                    .map(|s| {
                        u16::try_from(*s)
                            .ok()
                            .filter(|s| (100..=599).contains(s))
                            .ok_or_else(|| format!("retry_on_status {s} is not an HTTP status"))
                    })
                    .collect::<Result<_, _>>()?,
                retry_on_grpc: r.retry_on_grpc.clone(),
                budget_ratio: if r.budget_ratio > 0.0 {
                    r.budget_ratio
                } else {
                    retry::DEFAULT_BUDGET_RATIO
                },
                min_retries_per_second: if r.min_retries_per_second > 0 {
                    r.min_retries_per_second
                } else {
                    retry::DEFAULT_MIN_PER_SECOND
                },
                backoff_base: dur(r.backoff_base_ms, retry::DEFAULT_BACKOFF_BASE),
                backoff_max: dur(r.backoff_max_ms, retry::DEFAULT_BACKOFF_MAX),
                max_buffered_body_bytes: match r.max_buffered_body_bytes {
                    0 => retry::DEFAULT_MAX_BODY,
                    n => n as usize,
                },
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_outlier(o: Option<v1::OutlierDetection>) -> Policy {
        let raw = v1::TrafficPolicy {
            circuit_breaker: Some(v1::CircuitBreaker {
                outlier_detection: o,
                ..Default::default()
            }),
            ..Default::default()
        };
        policy_from_proto(&raw).expect("a valid policy")
    }

    #[test]
    fn ejection_is_on_unless_turned_off_by_zero_failures() {
        let unset = policy_from_proto(&v1::TrafficPolicy::default()).expect("valid");
        assert_eq!(unset.outlier, Some(OutlierPolicy::by_default()));
        assert_eq!(
            with_outlier(None).outlier,
            Some(OutlierPolicy::by_default())
        );
        let off = with_outlier(Some(v1::OutlierDetection::default()));
        assert_eq!(off.outlier, None);
        let set = with_outlier(Some(v1::OutlierDetection {
            consecutive_failures: 2,
            ..Default::default()
        }));
        assert_eq!(set.outlier.map(|o| o.consecutive_failures), Some(2));
    }
}
