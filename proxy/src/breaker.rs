//! Circuit breaking: concurrency limits per service (over a limit the request is
//! answered at once, never queued) and outlier ejection per endpoint.
//!
//! Ejection: after `consecutive_failures` failures of the configured classes an
//! endpoint is ejected for `base × times ejected` (capped at `max`). When the time is
//! up it is half-open: the balancer may pick it again, and the first request it gets
//! is the probe — its success readmits the endpoint, its failure ejects it again.
//! At most `max_ejected_percent` of a service's endpoints are ejected at once (but
//! always at least one), and when all are ejected the balancer uses them all anyway.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::clock::{nanos, now_nanos};
use crate::metrics::ServiceMetrics;
use crate::outcome::Outcome;

/// Concurrency limits of one service; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Limits {
    pub(crate) max_connections: u32,
    pub(crate) max_pending_requests: u32,
    pub(crate) max_active_requests: u32,
    pub(crate) max_concurrent_retries: u32,
}

/// Live counts for one service; survives snapshot swaps with the service's stats.
/// The counts a permit can outlive a request with (a response body, a pooled
/// connection) are shared by `Arc`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Concurrency {
    pub(crate) active: Arc<AtomicU32>,
    pub(crate) pending: AtomicU32,
    pub(crate) retries: AtomicU32,
    pub(crate) connections: Arc<AtomicU32>,
}

/// A held unit of a limited count, given back on drop: the one guard every limit
/// hands out. `C` is how the count is held: borrowed for a unit that lives within
/// one call (a pending request, a retry), `Arc` for one that travels (with a
/// response body, with an upstream connection).
#[must_use]
pub(crate) struct Permit<C: Deref<Target = AtomicU32> = Arc<AtomicU32>>(Option<C>);

impl<C: Deref<Target = AtomicU32>> Permit<C> {
    /// Takes one unit of `count` unless that would go over `limit` (0: unlimited).
    pub(crate) fn acquire(count: C, limit: u32) -> Option<Permit<C>> {
        let prev = count.fetch_add(1, Ordering::Relaxed);
        if limit != 0 && prev >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Permit(Some(count)))
    }

    /// A permit that counts nothing, where no limit applies.
    pub(crate) fn unlimited() -> Permit<C> {
        Permit(None)
    }
}

impl<C: Deref<Target = AtomicU32>> Drop for Permit<C> {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<C: Deref<Target = AtomicU32>> std::fmt::Debug for Permit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

/// A service's count of open upstream connections and its cap (0: none). A new
/// connection takes a unit before dialing and gives it back when it closes; over
/// the cap the request is answered `overloaded` instead of waiting.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnLimit {
    pub(crate) count: Arc<AtomicU32>,
    pub(crate) max: u32,
}

impl ConnLimit {
    /// A unit for one more connection, or None over the cap.
    pub(crate) fn acquire(&self) -> Option<Permit> {
        Permit::acquire(self.count.clone(), self.max)
    }
}

/// Failure classes counted toward ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FailureClass {
    /// Any 5xx, from the endpoint or the proxy.
    ServerError,
    /// 502, 503, 504.
    Gateway,
    /// Connect refused or timed out, connection reset, no answer within the per-try
    /// timeout or before the caller gave up after `HANG_BOUND`.
    Connect,
    /// A gRPC status named in `grpc_codes`.
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutlierPolicy {
    pub(crate) consecutive_failures: u32,
    #[serde(serialize_with = "as_ms")]
    pub(crate) base_ejection: Duration,
    #[serde(serialize_with = "as_ms")]
    pub(crate) max_ejection: Duration,
    pub(crate) max_ejected_percent: u32,
    pub(crate) failure_on: Vec<FailureClass>,
    pub(crate) grpc_codes: Vec<u32>,
}

fn as_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
pub(crate) const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

/// Failures in a row that eject under the default policy (Envoy's default for
/// consecutive 5xx is also 5).
pub(crate) const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;

impl OutlierPolicy {
    /// Ejection for a service whose policy does not mention it: only what says the
    /// endpoint itself is unwell (refused or broken connections, no answer in the
    /// time the caller allowed, 502-504), not an app's own 500s.
    pub(crate) fn by_default() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejected_percent: DEFAULT_MAX_EJECTED_PERCENT,
            failure_on: vec![FailureClass::Connect, FailureClass::Gateway],
            grpc_codes: Vec::new(),
        }
    }

    /// Whether an answer's gRPC status can make it a failure.
    pub(crate) fn reads_grpc(&self) -> bool {
        self.failure_on.contains(&FailureClass::Grpc) && !self.grpc_codes.is_empty()
    }

    fn is_failure(&self, outcome: Outcome) -> Option<bool> {
        let classes = &self.failure_on;
        match outcome {
            Outcome::Cancelled | Outcome::Abandoned | Outcome::Refused => None,
            Outcome::NotSent | Outcome::NoResponse | Outcome::Unanswered { .. } => Some(
                classes.contains(&FailureClass::Connect)
                    || classes.contains(&FailureClass::Gateway)
                    || classes.contains(&FailureClass::ServerError),
            ),
            Outcome::Response { status, grpc } => Some(
                (status >= 500 && classes.contains(&FailureClass::ServerError))
                    || (matches!(status, 502..=504) && classes.contains(&FailureClass::Gateway))
                    || (classes.contains(&FailureClass::Grpc)
                        && grpc.is_some_and(|c| self.grpc_codes.contains(&c))),
            ),
        }
    }
}

/// One endpoint's ejection state. All atomics: the hot path reads `ejected_until`
/// once per candidate and writes only when an outcome changes something.
#[derive(Debug)]
pub(crate) struct Health {
    consecutive: AtomicU32,
    /// `now_nanos()` when the ejection ends; 0 while admitted.
    ejected_until: AtomicU64,
    times_ejected: AtomicU32,
    probing: AtomicBool,
    /// Responses seen, of any status: an attempt that saw this unchanged while it
    /// waited in vain was met with silence.
    answered: AtomicU32,
    /// Why the last ejection happened, an `EjectReason` as u8.
    reason: AtomicU8,
    metrics: Arc<ServiceMetrics>,
}

/// What kind of failure ejected an endpoint, for operators (the live view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EjectReason {
    /// Answers with a failing status (5xx, gateway, listed gRPC codes).
    Status,
    /// Could not be connected to.
    Connect,
    /// Sent to, but no answer (reset, per-try timeout).
    NoResponse,
    /// Failed its readmission probe.
    Probe,
}

impl EjectReason {
    pub(crate) fn label(self) -> &'static str {
        match self {
            EjectReason::Status => "failing-status",
            EjectReason::Connect => "connect-failure",
            EjectReason::NoResponse => "no-response",
            EjectReason::Probe => "probe-failed",
        }
    }

    fn of(outcome: Outcome) -> EjectReason {
        match outcome {
            Outcome::NotSent => EjectReason::Connect,
            Outcome::Response { .. } => EjectReason::Status,
            _ => EjectReason::NoResponse,
        }
    }

    fn from_u8(v: u8) -> EjectReason {
        match v {
            0 => EjectReason::Status,
            1 => EjectReason::Connect,
            2 => EjectReason::NoResponse,
            _ => EjectReason::Probe,
        }
    }
}

/// An ejection in force: why, for how much longer, and how many times so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ejection {
    pub(crate) reason: EjectReason,
    pub(crate) remaining: Duration,
    pub(crate) times: u32,
}

impl Serialize for Health {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let until = self.ejected_until.load(Ordering::Relaxed);
        let now = now_nanos();
        let state = match until {
            0 => "admitted",
            u if u > now => "ejected",
            _ => "half-open",
        };
        let mut st = s.serialize_struct("Health", 4)?;
        st.serialize_field("state", state)?;
        st.serialize_field("consecutive_failures", &self.consecutive_failures())?;
        st.serialize_field("times_ejected", &self.times_ejected.load(Ordering::Relaxed))?;
        st.serialize_field("ejected_for_ms", &(until.saturating_sub(now) / 1_000_000))?;
        st.end()
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.metrics.ejected.dec();
        }
    }
}

impl Health {
    pub(crate) fn new(metrics: Arc<ServiceMetrics>) -> Health {
        Health {
            consecutive: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            answered: AtomicU32::new(0),
            reason: AtomicU8::new(0),
            metrics,
        }
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// A mark to compare with later: unchanged means no response came since.
    pub(crate) fn answered(&self) -> u32 {
        self.answered.load(Ordering::Relaxed)
    }

    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Whether the balancer may pick this endpoint: admitted, or half-open with no
    /// probe out.
    pub(crate) fn eligible(&self, now: u64) -> bool {
        match self.ejected_until.load(Ordering::Relaxed) {
            0 => true,
            until => until <= now && !self.probing.load(Ordering::Relaxed),
        }
    }

    /// Called once an endpoint is picked. Returns true when this request is the
    /// half-open probe (so its outcome decides readmission).
    pub(crate) fn begin(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0
            && until <= now_nanos()
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records how an attempt ended. `peers` is the health of the service's
    /// endpoint set, for the cap on the share ejected.
    pub(crate) fn record<'a>(
        &self,
        outcome: Outcome,
        probe: bool,
        policy: Option<&OutlierPolicy>,
        peers: impl ExactSizeIterator<Item = &'a Health>,
    ) {
        if let Outcome::Response { .. } = outcome {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        let failed = match policy {
            Some(p) if p.consecutive_failures > 0 => p.is_failure(outcome),
            // Ejection is off: nothing to track (and a policy change that turned it
            // off readmits on the next success).
            _ => outcome_is_success(outcome),
        };
        match failed {
            None => {
                if probe {
                    self.probing.store(false, Ordering::Release);
                }
            }
            Some(false) => {
                self.consecutive.store(0, Ordering::Relaxed);
                if self.ejected_until.load(Ordering::Relaxed) != 0 && (probe || policy.is_none()) {
                    self.readmit();
                }
            }
            Some(true) => {
                let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                let Some(p) = policy else { return };
                if probe {
                    self.eject(p, EjectReason::Probe);
                    self.probing.store(false, Ordering::Release);
                } else if (n >= p.consecutive_failures
                    || outcome == (Outcome::Unanswered { silent: true }))
                    && self.ejected_until.load(Ordering::Relaxed) == 0
                    && room_to_eject(p, peers)
                {
                    self.eject(p, EjectReason::of(outcome));
                }
            }
        }
    }

    fn eject(&self, p: &OutlierPolicy, reason: EjectReason) {
        self.reason.store(reason as u8, Ordering::Relaxed);
        let times = self.times_ejected.fetch_add(1, Ordering::Relaxed) + 1;
        let span = p.base_ejection.saturating_mul(times).min(p.max_ejection);
        let until = now_nanos().saturating_add(nanos(span)).max(1);
        let was = self.ejected_until.swap(until, Ordering::AcqRel);
        self.consecutive.store(0, Ordering::Relaxed);
        if was == 0 {
            self.metrics.ejected.inc();
        }
        self.metrics.ejections.inc();
        tracing::info!(ejected_for = ?span, times, "endpoint ejected");
    }

    /// The ejection in force, if any (once its time is up, the endpoint waits for
    /// its probe and is shown with no time left).
    pub(crate) fn ejection(&self) -> Option<Ejection> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0).then(|| Ejection {
            reason: EjectReason::from_u8(self.reason.load(Ordering::Relaxed)),
            remaining: Duration::from_nanos(until.saturating_sub(now_nanos())),
            times: self.times_ejected.load(Ordering::Relaxed),
        })
    }

    fn readmit(&self) {
        if self.ejected_until.swap(0, Ordering::AcqRel) != 0 {
            self.metrics.ejected.dec();
            tracing::info!("endpoint readmitted");
        }
        self.probing.store(false, Ordering::Release);
    }

    #[cfg(test)]
    pub(crate) fn eject_for_test(&self, span: Duration) {
        self.ejected_until
            .store(now_nanos() + nanos(span), Ordering::Relaxed);
        self.metrics.ejected.inc();
    }

    #[cfg(test)]
    pub(crate) fn note_failure_for_test(&self) {
        self.consecutive.fetch_add(1, Ordering::Relaxed);
    }
}

fn outcome_is_success(outcome: Outcome) -> Option<bool> {
    match outcome {
        Outcome::Response { status, .. } if status < 500 => Some(false),
        _ => None,
    }
}

fn room_to_eject<'a>(p: &OutlierPolicy, peers: impl ExactSizeIterator<Item = &'a Health>) -> bool {
    let total = peers.len();
    let ejected = peers.filter(|h| h.is_ejected()).count();
    let cap = (total * p.max_ejected_percent as usize / 100).max(1);
    ejected < cap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::endpoints;
    use crate::endpoint::Endpoint;

    fn peers(eps: &[Arc<Endpoint>]) -> impl ExactSizeIterator<Item = &Health> {
        eps.iter().map(|e| &e.stats.health)
    }

    fn policy(n: u32, base_ms: u64) -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: n,
            base_ejection: Duration::from_millis(base_ms),
            max_ejection: Duration::from_millis(base_ms * 3),
            max_ejected_percent: 50,
            failure_on: vec![FailureClass::ServerError, FailureClass::Connect],
            grpc_codes: vec![],
        }
    }

    const FAIL: Outcome = Outcome::Response {
        status: 500,
        grpc: None,
    };
    const OK: Outcome = Outcome::Response {
        status: 200,
        grpc: None,
    };

    #[test]
    fn ejected_after_n_consecutive_failures_only() {
        let (eps, _reg) = endpoints(&[100, 100, 100, 100]);
        let p = policy(3, 10_000);
        let h = &eps[0].stats.health;
        h.record(FAIL, false, Some(&p), peers(&eps));
        h.record(FAIL, false, Some(&p), peers(&eps));
        h.record(OK, false, Some(&p), peers(&eps));
        h.record(FAIL, false, Some(&p), peers(&eps));
        h.record(FAIL, false, Some(&p), peers(&eps));
        assert!(!h.is_ejected(), "a success resets the count");
        h.record(FAIL, false, Some(&p), peers(&eps));
        assert!(h.is_ejected());
        assert!(!h.eligible(now_nanos()));
    }

    #[test]
    fn a_hang_met_with_silence_ejects_at_once_one_amid_answers_counts_once() {
        let (eps, _reg) = endpoints(&[100, 100, 100, 100]);
        let p = OutlierPolicy::by_default();
        let slow = &eps[0].stats.health;
        slow.record(
            Outcome::Unanswered { silent: false },
            false,
            Some(&p),
            peers(&eps),
        );
        slow.record(Outcome::Abandoned, false, Some(&p), peers(&eps));
        assert!(
            !slow.is_ejected(),
            "a wait the endpoint answered others during"
        );
        assert_eq!(
            slow.consecutive_failures(),
            1,
            "a short abandonment is no failure"
        );
        let stopped = &eps[1].stats.health;
        let mark = stopped.answered();
        stopped.record(OK, false, Some(&p), peers(&eps));
        assert_ne!(stopped.answered(), mark, "every response moves the mark");
        stopped.record(
            Outcome::Unanswered { silent: true },
            false,
            Some(&p),
            peers(&eps),
        );
        assert!(stopped.is_ejected());
        let app_error = &eps[2].stats.health;
        for _ in 0..10 {
            app_error.record(FAIL, false, Some(&p), peers(&eps));
        }
        assert!(
            !app_error.is_ejected(),
            "the default counts 502-504, not an app's 500"
        );
    }

    #[test]
    fn half_open_probe_readmits_or_doubles_the_ejection() {
        crate::clock::paused_runtime().block_on(async {
            let (eps, _reg) = endpoints(&[100, 100]);
            let p = policy(1, 1000);
            let h = &eps[0].stats.health;
            let ms = |n| tokio::time::advance(Duration::from_millis(n));
            h.record(Outcome::NotSent, false, Some(&p), peers(&eps));
            assert!(h.is_ejected());
            ms(999).await;
            assert!(!h.eligible(now_nanos()), "ejected for the base time");
            ms(1).await;
            assert!(h.eligible(now_nanos()), "half-open after the ejection time");
            assert!(h.begin(), "first pick is the probe");
            assert!(!h.eligible(now_nanos()), "one probe at a time");
            assert!(!h.begin());
            h.record(FAIL, true, Some(&p), peers(&eps));
            assert!(h.is_ejected(), "a failed probe ejects again");
            assert_eq!(h.times_ejected.load(Ordering::Relaxed), 2);
            ms(1999).await;
            assert!(!h.begin(), "the second ejection is twice the base");
            ms(1).await;
            assert!(h.begin());
            h.record(OK, true, Some(&p), peers(&eps));
            assert!(!h.is_ejected(), "a good probe readmits");
            assert!(h.eligible(now_nanos()));
        });
    }

    #[test]
    fn ejection_time_is_capped_at_the_max() {
        crate::clock::paused_runtime().block_on(async {
            let (eps, _reg) = endpoints(&[100, 100]);
            let p = policy(1, 1000);
            let h = &eps[0].stats.health;
            h.record(FAIL, false, Some(&p), peers(&eps));
            for _ in 0..4 {
                tokio::time::advance(p.max_ejection).await;
                assert!(h.begin(), "never ejected for longer than the max");
                h.record(FAIL, true, Some(&p), peers(&eps));
            }
            assert_eq!(h.times_ejected.load(Ordering::Relaxed), 5);
            tokio::time::advance(p.max_ejection - Duration::from_millis(1)).await;
            assert!(!h.eligible(now_nanos()), "and still for the max");
        });
    }

    #[test]
    fn never_more_than_the_cap_ejected() {
        let (eps, _reg) = endpoints(&[100, 100, 100, 100]);
        let p = policy(1, 10_000);
        for e in &eps {
            e.stats.health.record(FAIL, false, Some(&p), peers(&eps));
        }
        let ejected = eps.iter().filter(|e| e.stats.health.is_ejected()).count();
        assert_eq!(ejected, 2, "50% of 4");
    }

    #[test]
    fn only_configured_classes_count() {
        let (eps, _reg) = endpoints(&[100, 100]);
        let mut p = policy(1, 10_000);
        p.failure_on = vec![FailureClass::Gateway];
        let h = &eps[0].stats.health;
        h.record(FAIL, false, Some(&p), peers(&eps));
        assert!(!h.is_ejected(), "500 is not a gateway error");
        h.record(
            Outcome::Response {
                status: 503,
                grpc: None,
            },
            false,
            Some(&p),
            peers(&eps),
        );
        assert!(h.is_ejected());
    }

    #[test]
    fn limits_answer_at_once() {
        let c = AtomicU32::new(0);
        let a = Permit::acquire(&c, 2).expect("first");
        let b = Permit::acquire(&c, 2).expect("second");
        assert!(Permit::acquire(&c, 2).is_none());
        drop(a);
        assert!(Permit::acquire(&c, 2).is_some());
        drop(b);
        assert!(Permit::acquire(&c, 0).is_some(), "0 is unlimited");
        assert_eq!(
            c.load(Ordering::Relaxed),
            0,
            "every permit gave its unit back"
        );
    }
}
