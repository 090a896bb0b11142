//! Load balancing: which endpoint of a service takes the next request (or opaque
//! connection). One file per algorithm; every algorithm honours endpoint weights,
//! skips ejected endpoints, and falls back to all ready endpoints when every one of
//! them is ejected (panic mode: an overloaded set beats no set at all).

mod consistent_hash;
mod least_request;
mod p2c_peak_ewma;
mod round_robin;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use serde::{Serialize, Serializer};

use crate::breaker::Health;
use crate::clock::{nanos, now_nanos};

pub(crate) use consistent_hash::hash_bytes;

/// What a balancer needs to know of an endpoint. Balancing knows no snapshot: the
/// endpoint type implements this one level up.
pub(crate) trait Candidate {
    /// Where it listens: what consistent hashing places it on the ring by.
    fn addr(&self) -> std::net::SocketAddr;
    fn weight(&self) -> u32;
    /// Ready for new requests (not starting up or terminating).
    fn is_ready(&self) -> bool;
    fn load(&self) -> &Load;
    fn health(&self) -> &Health;
}

/// Defaults of the peak-EWMA balancer when the policy leaves them unset.
pub(crate) const DEFAULT_DECAY: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// The latency recorded for an attempt that got no response (refused, reset, timed
/// out): high enough that the balancer avoids the endpoint until the estimate decays.
pub(crate) const FAILURE_PENALTY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Algorithm {
    P2cPeakEwma {
        #[serde(serialize_with = "as_ms")]
        decay: Duration,
        #[serde(serialize_with = "as_ms")]
        default_rtt: Duration,
    },
    RoundRobin,
    LeastRequest,
    ConsistentHash(HashKey),
}

impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::P2cPeakEwma {
            decay: DEFAULT_DECAY,
            default_rtt: DEFAULT_RTT,
        }
    }
}

fn header_name<S: Serializer>(h: &http::HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

fn as_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What consistent hashing hashes on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum HashKey {
    /// A request header (lowercase name); requests without it are balanced freely.
    Header(#[serde(serialize_with = "header_name")] http::HeaderName),
    /// The calling client: its mTLS identity where known (on the outbound side, the
    /// workload's own SPIFFE ID, which this proxy proves to the endpoint), else its
    /// address.
    ClientIdentity,
}

/// An endpoint's load as the balancers see it: requests in flight and a peak-EWMA
/// of its response latency. Updated with relaxed atomics; a lost update under a race
/// only makes the estimate a little older.
#[derive(Debug, Default)]
pub(crate) struct Load {
    in_flight: AtomicU32,
    /// f64 nanoseconds; 0 until the first response.
    ewma: AtomicU64,
    stamp: AtomicU64,
}

impl Serialize for Load {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Load", 2)?;
        st.serialize_field("in_flight", &self.in_flight())?;
        st.serialize_field("ewma_ms", &self.ewma_nanos().map(|n| n / 1e6))?;
        st.end()
    }
}

impl Load {
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The latency estimate, once there is one.
    pub(crate) fn ewma_ms(&self) -> Option<f64> {
        self.ewma_nanos().map(|n| n / 1e6)
    }

    fn ewma_nanos(&self) -> Option<f64> {
        let v = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    /// Folds one latency sample in, at `now` (a `now_nanos()` reading the caller
    /// has just taken to measure `rtt`). A sample above the average replaces it at
    /// once (the "peak"), so a backend that slows down is avoided immediately;
    /// lower samples pull it down with a weight that grows with the time since the
    /// last.
    pub(crate) fn observe(&self, rtt: Duration, decay: Duration, now: u64) {
        let sample = nanos(rtt) as f64;
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let next = match self.ewma_nanos() {
            Some(prev) if sample < prev => {
                let elapsed = now.saturating_sub(last) as f64;
                let w = (-elapsed / nanos(decay).max(1) as f64).exp();
                prev * w + sample * (1.0 - w)
            }
            _ => sample,
        };
        self.ewma.store(next.max(1.0).to_bits(), Ordering::Relaxed);
    }

    /// Expected wait for one more request: latency times queue depth. The estimate
    /// decays toward zero while the endpoint gets no responses, so one that was
    /// avoided after a latency spike is tried again rather than starved for good.
    ///
    /// An endpoint never measured costs nothing while idle, so it is explored at
    /// once: priced at `default_rtt` it would lose every comparison with endpoints
    /// measured faster than that and never get the request that measures it. Each
    /// request in flight to it counts as `default_rtt` until its first answer.
    fn cost(&self, default_rtt: Duration, decay: Duration, now: u64) -> f64 {
        let in_flight = f64::from(self.in_flight());
        match self.ewma_nanos() {
            Some(ewma) => {
                let idle = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
                ewma * (-idle / nanos(decay).max(1) as f64).exp() * (in_flight + 1.0)
            }
            None => nanos(default_rtt) as f64 * in_flight,
        }
    }
}

/// The balancer of one service, built with the service from its endpoint set.
#[derive(Debug)]
pub(crate) struct Balancer {
    algorithm: Algorithm,
    /// Indices of ready endpoints and their cumulative weights, for weighted draws.
    ready: Vec<u32>,
    cumulative: Vec<u64>,
    round_robin: Option<round_robin::RoundRobin>,
    ring: Option<consistent_hash::Ring>,
}

impl Balancer {
    pub(crate) fn new<E: Candidate>(algorithm: Algorithm, endpoints: &[Arc<E>]) -> Balancer {
        let ready: Vec<u32> = endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_ready())
            .map(|(i, _)| i as u32)
            .collect();
        let mut total = 0u64;
        let cumulative = ready
            .iter()
            .map(|&i| {
                total += u64::from(endpoints[i as usize].weight().max(1));
                total
            })
            .collect();
        let round_robin = (algorithm == Algorithm::RoundRobin)
            .then(|| round_robin::RoundRobin::new(endpoints, &ready));
        let ring = matches!(algorithm, Algorithm::ConsistentHash(_))
            .then(|| consistent_hash::Ring::new(endpoints, &ready));
        Balancer {
            algorithm,
            ready,
            cumulative,
            round_robin,
            ring,
        }
    }

    pub(crate) fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// Picks an endpoint (an index into `endpoints`); `key` is the request's hash
    /// key for consistent hashing. `skip` is an endpoint to avoid if any other will
    /// do (the one a retry is retrying away from).
    pub(crate) fn pick<E: Candidate>(
        &self,
        endpoints: &[Arc<E>],
        key: Option<u64>,
        skip: Option<usize>,
    ) -> Option<usize> {
        self.pick_at(endpoints, key, skip, now_nanos())
    }

    /// `pick` at `now` (a `now_nanos()` reading): a request reads the clock once
    /// as it starts and uses that reading for its pick and its attempt.
    pub(crate) fn pick_at<E: Candidate>(
        &self,
        endpoints: &[Arc<E>],
        key: Option<u64>,
        skip: Option<usize>,
        now: u64,
    ) -> Option<usize> {
        if self.ready.is_empty() {
            return None;
        }
        let healthy = |i: usize| endpoints[i].health().eligible(now);
        if self.ready.len() > 1
            && let Some(s) = skip
        {
            let pick = self.pick_with(endpoints, key, now, |i| i != s && healthy(i));
            if pick.is_some() {
                return pick;
            }
        }
        self.pick_with(endpoints, key, now, healthy)
            // Panic mode: every ready endpoint is ejected; use them all anyway.
            .or_else(|| self.pick_with(endpoints, key, now, |_| true))
    }

    fn pick_with<E: Candidate>(
        &self,
        endpoints: &[Arc<E>],
        key: Option<u64>,
        now: u64,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match &self.algorithm {
            Algorithm::P2cPeakEwma { default_rtt, decay } => {
                let (rtt, decay) = (*default_rtt, *decay);
                self.p2c(&ok, |i| endpoints[i].load().cost(rtt, decay, now))
            }
            Algorithm::LeastRequest => self.p2c(&ok, |i| least_request::cost(&endpoints[i])),
            Algorithm::RoundRobin => self.round_robin.as_ref()?.pick(&ok),
            Algorithm::ConsistentHash(_) => match (key, &self.ring) {
                (Some(key), Some(ring)) => ring.pick(key, &ok),
                _ => self.p2c(&ok, |i| least_request::cost(&endpoints[i])),
            },
        }
    }

    /// Two distinct weighted random draws over the ready endpoints (positions in
    /// `ready`): the second is drawn from the weight left once the first is out.
    fn draw_two(&self, rng: &mut impl rand::Rng) -> (usize, usize) {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let a = self
            .cumulative
            .partition_point(|&c| c <= rng.random_range(0..total));
        let a = a.min(self.ready.len() - 1);
        let below = if a == 0 { 0 } else { self.cumulative[a - 1] };
        let weight_a = self.cumulative[a] - below;
        let mut r = rng.random_range(0..(total - weight_a).max(1));
        if r >= below {
            r += weight_a;
        }
        let b = self
            .cumulative
            .partition_point(|&c| c <= r)
            .min(self.ready.len() - 1);
        (a, b)
    }

    /// Power of two choices: two weighted random draws, the cheaper one wins.
    fn p2c(&self, ok: &impl Fn(usize) -> bool, cost: impl Fn(usize) -> f64) -> Option<usize> {
        let mut rng = rand::rng();
        if self.ready.len() == 1 {
            let only = self.ready[0] as usize;
            return ok(only).then_some(only);
        }
        // A few draws find eligible endpoints quickly unless most are ejected;
        // then a scan settles it.
        for _ in 0..4 {
            let (a, b) = self.draw_two(&mut rng);
            let (a, b) = (self.ready[a] as usize, self.ready[b] as usize);
            match (ok(a), ok(b)) {
                (true, true) => return Some(if cost(b) < cost(a) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        let start = rng.random_range(0..self.ready.len());
        (0..self.ready.len())
            .map(|k| self.ready[(start + k) % self.ready.len()] as usize)
            .filter(|&i| ok(i))
            .min_by(|&x, &y| cost(x).total_cmp(&cost(y)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::endpoint::{Endpoint, EndpointState, Registry};
    use crate::metrics::{Direction, Metrics};

    pub(crate) fn endpoints(weights: &[u32]) -> (Vec<Arc<Endpoint>>, Registry) {
        let reg = Registry::default();
        let m = Metrics::new().service(Direction::Outbound, "t.default");
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("127.0.0.1:{}", i + 1).parse().expect("addr");
                Arc::new(Endpoint {
                    addr,
                    weight: w,
                    identity: None,
                    labels: Default::default(),
                    state: EndpointState::Ready,
                    stats: reg.endpoint("t.default", addr, &m),
                })
            })
            .collect();
        (eps, reg)
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let load = Load::default();
        load.observe(Duration::from_millis(10), DEFAULT_DECAY, now_nanos());
        load.observe(Duration::from_millis(100), DEFAULT_DECAY, now_nanos());
        assert_eq!(
            load.ewma_nanos(),
            Some(100e6),
            "a peak replaces the average"
        );
        load.observe(Duration::from_millis(10), DEFAULT_DECAY, now_nanos());
        let after = load.ewma_nanos().expect("measured");
        assert!(
            after <= 100e6 && after > 10e6,
            "lower samples decay it: {after}"
        );
    }

    #[test]
    fn an_avoided_estimate_decays_while_idle() {
        let load = Load::default();
        load.observe(
            Duration::from_millis(100),
            Duration::from_millis(10),
            now_nanos(),
        );
        let now = now_nanos();
        let fresh = load.cost(DEFAULT_RTT, Duration::from_millis(10), now);
        let later = load.cost(DEFAULT_RTT, Duration::from_millis(10), now + 50_000_000);
        assert!(later < fresh / 100.0, "{fresh} -> {later}");
    }

    #[test]
    fn p2c_avoids_the_slow_endpoint() {
        let (eps, _reg) = endpoints(&[100, 100, 100]);
        eps[2]
            .stats
            .load
            .observe(Duration::from_millis(100), DEFAULT_DECAY, now_nanos());
        eps[0]
            .stats
            .load
            .observe(Duration::from_millis(10), DEFAULT_DECAY, now_nanos());
        eps[1]
            .stats
            .load
            .observe(Duration::from_millis(10), DEFAULT_DECAY, now_nanos());
        let b = Balancer::new(Algorithm::default(), &eps);
        let slow = (0..1000)
            .filter(|_| b.pick(&eps, None, None) == Some(2))
            .count();
        assert_eq!(
            slow, 0,
            "with two fast endpoints idle, the slow one never wins"
        );
    }

    #[test]
    fn every_algorithm_falls_back_to_all_when_all_are_ejected() {
        let (eps, _reg) = endpoints(&[100, 100]);
        for e in &eps {
            e.stats.health.eject_for_test(Duration::from_secs(60));
        }
        for alg in [
            Algorithm::default(),
            Algorithm::RoundRobin,
            Algorithm::LeastRequest,
            Algorithm::ConsistentHash(HashKey::ClientIdentity),
        ] {
            let b = Balancer::new(alg.clone(), &eps);
            assert!(b.pick(&eps, Some(7), None).is_some(), "{alg:?} panics open");
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped() {
        let (eps, _reg) = endpoints(&[100, 100, 100]);
        eps[1].stats.health.eject_for_test(Duration::from_secs(60));
        for alg in [
            Algorithm::default(),
            Algorithm::RoundRobin,
            Algorithm::LeastRequest,
            Algorithm::ConsistentHash(HashKey::ClientIdentity),
        ] {
            let b = Balancer::new(alg.clone(), &eps);
            for k in 0..300u64 {
                assert_ne!(
                    b.pick(&eps, Some(hash_bytes(&k.to_le_bytes())), None),
                    Some(1)
                );
            }
        }
    }

    #[test]
    fn weighted_draws_follow_weights() {
        let (eps, _reg) = endpoints(&[100, 300]);
        let b = Balancer::new(Algorithm::LeastRequest, &eps);
        let mut rng = rand::rng();
        let mut firsts = [0usize; 2];
        for _ in 0..4000 {
            let (a, b2) = b.draw_two(&mut rng);
            assert_ne!(a, b2, "two distinct endpoints");
            firsts[a] += 1;
        }
        assert!((2700..3300).contains(&firsts[1]), "{firsts:?} of 4000");
    }
}
