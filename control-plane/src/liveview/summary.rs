//! Turns proxies' running totals into the live view: per window, per service (what
//! its own proxies saw arrive, or, for a service with no reporting proxy, what its
//! callers sent) and per edge (one calling workload → one service, as the caller's
//! proxy saw it), plus the endpoints ejected now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use weft_api::v1;

/// The windows every summary covers, by name.
pub const WINDOWS: [(&str, Duration); 2] = [
    ("10s", Duration::from_secs(10)),
    ("1m", Duration::from_secs(60)),
];

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// Proxies that reported within the last minute.
    pub proxies: usize,
    pub windows: BTreeMap<&'static str, Window>,
    pub ejections: Vec<EjectionView>,
    /// Every endpoint as each calling proxy sees it now: the drill-down below a
    /// service.
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub service: String,
    pub endpoint: String,
    /// The SPIFFE ID it presents (mTLS); null: plaintext.
    pub identity: Option<String>,
    /// ready | not-ready | terminating | ejected
    pub state: String,
    pub in_flight: u32,
    /// The caller's latency estimate (peak EWMA); null before its first answer.
    pub latency_ms: Option<f64>,
    pub weight: u32,
    /// The calling workload whose proxy sees it so.
    pub seen_by: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    pub services: Vec<TrafficView>,
    pub edges: Vec<TrafficView>,
}

/// One service or edge over one window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficView {
    /// The service ("name.namespace"); for an edge, the service called.
    pub service: String,
    /// For an edge: the calling workload ("name.namespace").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    /// Share of requests not answered 5xx; null without requests.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Services: share of requests that arrived over mTLS. Edges: share of the
    /// service's endpoints the caller reaches over mTLS.
    pub tls_share: Option<f64>,
    /// Services: connections open into the service's proxies now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_connections: Option<u64>,
    /// Requests turned away at once by each circuit-breaker limit.
    pub breaker: BreakerHits,
    pub retries: u64,
    pub retries_refused: u64,
    /// Retries per request: how much of the retry budget is used.
    pub retry_ratio: Option<f64>,
    /// Endpoints ejected now (services only; by any caller).
    pub ejected_endpoints: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BreakerHits {
    pub connections: u64,
    pub pending: u64,
    pub active: u64,
    pub retries: u64,
}

impl BreakerHits {
    pub fn total(&self) -> u64 {
        self.connections + self.pending + self.active + self.retries
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EjectionView {
    pub service: String,
    pub endpoint: String,
    pub reason: String,
    /// 0: its time is up and it waits for its readmission probe.
    pub remaining_ms: u64,
    pub times: u32,
    /// The calling workload whose proxy ejected it.
    pub ejected_by: String,
}

/// Differences of one (direction, service) between two reports, summed over
/// proxies as they are added.
#[derive(Debug, Clone, Default)]
struct Delta {
    requests: u64,
    failures: u64,
    rps: f64,
    buckets: Vec<u64>,
    tls_requests: u64,
    tls_endpoints: (u64, u64),
    breaker: BreakerHits,
    retries: u64,
    retries_refused: u64,
    open: Option<u64>,
}

impl Delta {
    fn add(&mut self, other: &Delta) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.rps += other.rps;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.tls_requests += other.tls_requests;
        self.tls_endpoints.0 += other.tls_endpoints.0;
        self.tls_endpoints.1 += other.tls_endpoints.1;
        self.breaker.connections += other.breaker.connections;
        self.breaker.pending += other.breaker.pending;
        self.breaker.active += other.breaker.active;
        self.breaker.retries += other.breaker.retries;
        self.retries += other.retries;
        self.retries_refused += other.retries_refused;
        if let Some(o) = other.open {
            *self.open.get_or_insert(0) += o;
        }
    }
}

/// A counter's growth; a total that went down (the proxy restarted under the same
/// name) counts from zero.
fn grew(new: u64, old: u64) -> u64 {
    if new >= old { new - old } else { new }
}

fn delta(new: &v1::TrafficTotals, old: Option<&v1::TrafficTotals>, secs: f64) -> Delta {
    let zero = v1::TrafficTotals::default();
    let old = old.unwrap_or(&zero);
    let requests = grew(new.requests, old.requests);
    Delta {
        requests,
        failures: grew(new.failures, old.failures),
        rps: if secs > 0.0 {
            requests as f64 / secs
        } else {
            0.0
        },
        buckets: new
            .latency_buckets
            .iter()
            .enumerate()
            .map(|(i, n)| grew(*n, old.latency_buckets.get(i).copied().unwrap_or(0)))
            .collect(),
        tls_requests: grew(new.tls_requests, old.tls_requests),
        tls_endpoints: (u64::from(new.tls_endpoints), u64::from(new.endpoints)),
        breaker: BreakerHits {
            connections: grew(new.overloaded_connections, old.overloaded_connections),
            pending: grew(new.overloaded_pending, old.overloaded_pending),
            active: grew(new.overloaded_active, old.overloaded_active),
            retries: grew(new.overloaded_retries, old.overloaded_retries),
        },
        retries: grew(new.retries, old.retries),
        retries_refused: grew(new.retries_refused, old.retries_refused),
        open: None,
    }
}

/// The latency (ms) below which a share `q` of the requests fell, interpolated in
/// its bucket as Prometheus' histogram_quantile does.
fn quantile(q: f64, bounds: &[f64], buckets: &[u64], total: u64) -> Option<f64> {
    if total == 0 || buckets.is_empty() {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (bound, count) in bounds.iter().zip(buckets) {
        if *count as f64 >= rank {
            let span = (*count - lower.1) as f64;
            let into = if span > 0.0 {
                (rank - lower.1 as f64) / span
            } else {
                1.0
            };
            return Some((lower.0 + (bound - lower.0) * into) * 1e3);
        }
        lower = (*bound, *count);
    }
    // Slower than the last bound: the bound is all that is known.
    bounds.last().map(|b| b * 1e3)
}

fn key(node: &v1::Node) -> String {
    let workload = if node.workload.is_empty() {
        &node.service_account
    } else {
        &node.workload
    };
    format!("{workload}.{}", node.namespace)
}

/// The summary of `histories` (each one proxy's reports, oldest first) as of `now`.
pub fn summarise(histories: &[Vec<super::Received>], now: Instant, stale: Duration) -> Summary {
    let mut bounds: Vec<f64> = Vec::new();
    let mut windows = BTreeMap::new();
    let mut ejections = Vec::new();
    let mut endpoints = Vec::new();
    for history in histories {
        let Some((at, latest)) = history.last() else {
            continue;
        };
        if bounds.is_empty() {
            bounds.clone_from(&latest.latency_bounds);
        }
        if now.saturating_duration_since(*at) <= stale {
            let by = latest.node.as_ref().map(key).unwrap_or_default();
            endpoints.extend(latest.endpoints.iter().map(|e| EndpointView {
                service: e.service.clone(),
                endpoint: e.endpoint.clone(),
                identity: (!e.identity.is_empty()).then(|| e.identity.clone()),
                state: e.state.clone(),
                in_flight: e.in_flight,
                latency_ms: (e.latency_ms > 0.0).then_some(e.latency_ms),
                weight: e.weight,
                seen_by: by.clone(),
            }));
            ejections.extend(latest.ejections.iter().map(|e| EjectionView {
                service: e.service.clone(),
                endpoint: e.endpoint.clone(),
                reason: e.reason.clone(),
                remaining_ms: e.remaining_ms.saturating_sub(
                    u64::try_from(now.saturating_duration_since(*at).as_millis()).unwrap_or(0),
                ),
                times: e.times,
                ejected_by: by.clone(),
            }));
        }
    }
    ejections.sort_by(|a, b| (&a.service, &a.endpoint).cmp(&(&b.service, &b.endpoint)));
    endpoints.sort_by(|a, b| {
        (&a.service, &a.endpoint, &a.seen_by).cmp(&(&b.service, &b.endpoint, &b.seen_by))
    });

    for (name, span) in WINDOWS {
        // (service) → inbound delta; (from, service) → outbound delta.
        let mut inbound: BTreeMap<String, Delta> = BTreeMap::new();
        let mut edges: BTreeMap<(String, String), Delta> = BTreeMap::new();
        for history in histories {
            let Some((t_new, latest)) = history.last() else {
                continue;
            };
            // The baseline: the newest report at least `span` old, else the oldest.
            let (t_old, base) = history
                .iter()
                .rev()
                .find(|(t, _)| t_new.saturating_duration_since(*t) >= span)
                .or_else(|| history.first())
                .map(|(t, r)| (*t, Some(r)))
                .unwrap_or((*t_new, None));
            let secs = t_new.saturating_duration_since(t_old).as_secs_f64();
            let same = base.is_some_and(|b| Arc::ptr_eq(b, latest));
            let from = latest.node.as_ref().map(key).unwrap_or_default();
            let fresh = now.saturating_duration_since(*t_new) <= Duration::from_secs(5);
            for t in &latest.traffic {
                let old = base.and_then(|b| {
                    b.traffic
                        .iter()
                        .find(|o| o.direction == t.direction && o.service == t.service)
                });
                let mut d = if same {
                    Delta::default()
                } else {
                    delta(t, old, secs)
                };
                if t.direction == v1::TrafficDirection::Inbound as i32 {
                    d.open = fresh.then_some(latest.open_inbound_connections);
                    inbound.entry(t.service.clone()).or_default().add(&d);
                } else {
                    d.tls_endpoints = (u64::from(t.tls_endpoints), u64::from(t.endpoints));
                    edges
                        .entry((from.clone(), t.service.clone()))
                        .or_default()
                        .add(&d);
                }
            }
        }
        let view = |service: &str, from: Option<&str>, d: &Delta, tls: Option<f64>| {
            let ratio = |n: u64| (d.requests > 0).then(|| n as f64 / d.requests as f64);
            TrafficView {
                service: service.to_string(),
                from: from.map(str::to_string),
                requests: d.requests,
                failures: d.failures,
                rps: d.rps,
                success_rate: ratio(d.requests - d.failures.min(d.requests)),
                p50_ms: quantile(0.50, &bounds, &d.buckets, d.requests),
                p95_ms: quantile(0.95, &bounds, &d.buckets, d.requests),
                p99_ms: quantile(0.99, &bounds, &d.buckets, d.requests),
                tls_share: tls,
                open_connections: d.open,
                breaker: d.breaker,
                retries: d.retries,
                retries_refused: d.retries_refused,
                retry_ratio: ratio(d.retries),
                ejected_endpoints: ejections.iter().filter(|e| e.service == service).count(),
            }
        };
        let mut window = Window::default();
        // Into each service: what its callers sent, for the breakers and retries
        // (the callers' proxies enforce them) and for a service no proxy serves.
        let mut called: BTreeMap<&str, Delta> = BTreeMap::new();
        for ((from, service), d) in &edges {
            let tls = (d.tls_endpoints.1 > 0)
                .then(|| d.tls_endpoints.0 as f64 / d.tls_endpoints.1 as f64);
            window.edges.push(view(service, Some(from), d, tls));
            called.entry(service).or_default().add(d);
        }
        let mut names: Vec<&str> = inbound.keys().map(String::as_str).collect();
        names.extend(called.keys().copied());
        names.sort_unstable();
        names.dedup();
        for service in names {
            let callers = called.get(service);
            let mut d = match inbound.get(service) {
                Some(own) => own.clone(),
                None => callers.cloned().unwrap_or_default(),
            };
            if let Some(c) = callers {
                d.breaker = c.breaker;
                d.retries = c.retries;
                d.retries_refused = c.retries_refused;
            }
            let tls = inbound.get(service).and_then(|own| {
                (own.requests > 0)
                    .then(|| own.tls_requests.min(own.requests) as f64 / own.requests as f64)
            });
            window.services.push(view(service, None, &d, tls));
        }
        windows.insert(name, window);
    }
    Summary {
        generated_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        proxies: histories.len(),
        windows,
        ejections,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.01, 0.1, 1.0];

    fn node(workload: &str) -> Option<v1::Node> {
        Some(v1::Node {
            id: format!("{workload}-1"),
            namespace: "default".into(),
            workload: workload.into(),
            ..Default::default()
        })
    }

    fn totals(
        direction: v1::TrafficDirection,
        service: &str,
        requests: u64,
        failures: u64,
        buckets: [u64; 3],
    ) -> v1::TrafficTotals {
        v1::TrafficTotals {
            direction: direction as i32,
            service: service.into(),
            requests,
            failures,
            latency_buckets: buckets.to_vec(),
            tls_requests: requests / 2,
            endpoints: 2,
            tls_endpoints: 2,
            ..Default::default()
        }
    }

    fn report(workload: &str, traffic: Vec<v1::TrafficTotals>) -> Arc<v1::ProxyReport> {
        Arc::new(v1::ProxyReport {
            node: node(workload),
            traffic,
            latency_bounds: BOUNDS.to_vec(),
            open_inbound_connections: 3,
            ..Default::default()
        })
    }

    #[test]
    fn rates_and_quantiles_come_from_the_difference_over_the_window() {
        let t0 = Instant::now();
        let out = v1::TrafficDirection::Outbound;
        let web = vec![
            (
                t0,
                report(
                    "web",
                    vec![totals(out, "orders.default", 100, 0, [100, 100, 100])],
                ),
            ),
            // 10 s later: 200 more requests, 20 of them failed; 100 under 10 ms,
            // 100 between 10 and 100 ms.
            (
                t0 + Duration::from_secs(10),
                report(
                    "web",
                    vec![totals(out, "orders.default", 300, 20, [200, 300, 300])],
                ),
            ),
        ];
        let inb = v1::TrafficDirection::Inbound;
        let orders = vec![
            (
                t0,
                report(
                    "orders",
                    vec![totals(inb, "orders.default", 0, 0, [0, 0, 0])],
                ),
            ),
            (
                t0 + Duration::from_secs(10),
                report(
                    "orders",
                    vec![totals(inb, "orders.default", 180, 0, [180, 180, 180])],
                ),
            ),
        ];
        let now = t0 + Duration::from_secs(10);
        let s = summarise(&[web, orders], now, Duration::from_secs(5));
        let w = &s.windows["10s"];
        assert_eq!(w.edges.len(), 1);
        let edge = &w.edges[0];
        assert_eq!(edge.from.as_deref(), Some("web.default"));
        assert_eq!((edge.requests, edge.failures), (200, 20));
        assert!((edge.rps - 20.0).abs() < 1e-9, "{}", edge.rps);
        assert_eq!(edge.success_rate, Some(0.9));
        // The median is the 100th request: the top of the first bucket.
        assert!((edge.p50_ms.expect("p50") - 10.0).abs() < 1e-9);
        // p95: rank 190, 90 % into the 10-100 ms bucket.
        assert!((edge.p95_ms.expect("p95") - 91.0).abs() < 1e-9);
        assert_eq!(edge.tls_share, Some(1.0));
        // The service itself is what its own proxy saw arrive.
        let svc = &w.services[0];
        assert_eq!(
            (svc.service.as_str(), svc.requests),
            ("orders.default", 180)
        );
        assert_eq!(svc.success_rate, Some(1.0));
        assert_eq!(svc.tls_share, Some(0.5));
        assert_eq!(svc.open_connections, Some(3));
    }

    #[test]
    fn a_service_without_its_own_proxy_is_seen_through_its_callers() {
        let t0 = Instant::now();
        let out = v1::TrafficDirection::Outbound;
        let history = vec![
            (
                t0,
                report("web", vec![totals(out, "db.default", 10, 0, [10, 10, 10])]),
            ),
            (
                t0 + Duration::from_secs(5),
                report("web", vec![totals(out, "db.default", 20, 10, [20, 20, 20])]),
            ),
        ];
        let s = summarise(
            &[history],
            t0 + Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let svc = &s.windows["1m"].services[0];
        assert_eq!(
            (svc.service.as_str(), svc.requests, svc.failures),
            ("db.default", 10, 10)
        );
        assert_eq!(svc.success_rate, Some(0.0));
        assert_eq!(svc.tls_share, None, "no proxy of its own to say");
    }

    #[test]
    fn one_report_has_no_rate_and_stale_ejections_are_hidden() {
        let t0 = Instant::now();
        let mut r = (*report(
            "web",
            vec![totals(
                v1::TrafficDirection::Outbound,
                "a.default",
                5,
                0,
                [5, 5, 5],
            )],
        ))
        .clone();
        r.ejections.push(v1::EndpointEjection {
            service: "a.default".into(),
            endpoint: "127.0.0.1:1".into(),
            reason: "connect-failure".into(),
            remaining_ms: 30_000,
            times: 1,
        });
        let history = vec![(t0, Arc::new(r))];
        let s = summarise(
            std::slice::from_ref(&history),
            t0 + Duration::from_secs(1),
            Duration::from_secs(5),
        );
        assert_eq!(s.windows["10s"].edges[0].requests, 0);
        assert_eq!(s.ejections.len(), 1);
        assert_eq!(s.ejections[0].remaining_ms, 29_000);
        assert_eq!(s.windows["10s"].services[0].ejected_endpoints, 1);
        let later = summarise(
            &[history],
            t0 + Duration::from_secs(6),
            Duration::from_secs(5),
        );
        assert!(later.ejections.is_empty());
    }

    #[test]
    fn quantiles_past_the_last_bucket_are_the_last_bound() {
        assert_eq!(quantile(0.99, &BOUNDS, &[0, 0, 0], 10), Some(1000.0));
        assert_eq!(quantile(0.5, &BOUNDS, &[], 0), None);
    }
}
