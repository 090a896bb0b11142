//! Turns proxies' running totals into the live view: per window, per service (what
//! its own proxies saw arrive, or, for a service with no reporting proxy, what its
//! callers sent) and per edge (one calling workload → one service, as the caller's
//! proxy saw it), plus the endpoints ejected now.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_api::live::{
    BreakerHits, EjectionView, EndpointView, RouteView, Summary, TrafficView, Window,
};
use weft_api::v1;

/// The windows every summary covers, by name.
pub const WINDOWS: [(&str, Duration); 2] = [
    ("10s", Duration::from_secs(10)),
    ("1m", Duration::from_secs(60)),
];

/// Requests, failures and latency counts: of a service, an edge or one route.
#[derive(Debug, Clone, Default)]
struct Counts {
    requests: u64,
    failures: u64,
    buckets: Vec<u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.failures += other.failures;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    fn grown(new: (u64, u64, &[u64]), old: (u64, u64, &[u64])) -> Counts {
        Counts {
            requests: grew(new.0, old.0),
            failures: grew(new.1, old.1),
            buckets: new
                .2
                .iter()
                .enumerate()
                .map(|(i, n)| grew(*n, old.2.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

/// Differences of one (direction, service) between two reports, summed over
/// proxies as they are added.
#[derive(Debug, Clone, Default)]
struct Delta {
    counts: Counts,
    rps: f64,
    tls_requests: u64,
    attempts: u64,
    breaker: BreakerHits,
    retries: u64,
    retries_refused: u64,
    open: Option<u64>,
    routes: BTreeMap<String, (Counts, f64)>,
}

/// Numbers of one service or edge that add up over proxies.
pub(super) trait Sum: Default + Clone {
    fn add(&mut self, other: &Self);
}

/// One window's numbers by where they were seen: arriving at each service's own
/// proxies, and sent by each calling workload to each service.
pub(super) struct Tally<D> {
    pub(super) inbound: BTreeMap<String, D>,
    pub(super) edges: BTreeMap<(String, String), D>,
}

impl<D: Sum> Tally<D> {
    pub(super) fn new() -> Tally<D> {
        Tally {
            inbound: BTreeMap::new(),
            edges: BTreeMap::new(),
        }
    }

    /// Adds what `part`'s proxy saw of `service` in `direction`.
    pub(super) fn add(&mut self, part: &Part<'_>, direction: i32, service: &str, d: &D) {
        if direction == v1::TrafficDirection::Inbound as i32 {
            self.inbound.entry(service.to_string()).or_default().add(d);
        } else {
            self.edges
                .entry((part.from.clone(), service.to_string()))
                .or_default()
                .add(d);
        }
    }

    /// Into each service, what all its callers sent.
    pub(super) fn called(&self) -> BTreeMap<&str, D> {
        let mut called: BTreeMap<&str, D> = BTreeMap::new();
        for ((_, service), d) in &self.edges {
            called.entry(service).or_default().add(d);
        }
        called
    }

    /// Every service seen arriving or called, in order.
    pub(super) fn services<'a>(&'a self, called: &BTreeMap<&'a str, D>) -> Vec<&'a str> {
        let mut names: Vec<&str> = self.inbound.keys().map(String::as_str).collect();
        names.extend(called.keys().copied());
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl Sum for Delta {
    fn add(&mut self, other: &Delta) {
        self.counts.add(&other.counts);
        self.rps += other.rps;
        self.tls_requests += other.tls_requests;
        self.attempts += other.attempts;
        self.breaker.connections += other.breaker.connections;
        self.breaker.pending += other.breaker.pending;
        self.breaker.active += other.breaker.active;
        self.breaker.retries += other.breaker.retries;
        self.retries += other.retries;
        self.retries_refused += other.retries_refused;
        if let Some(o) = other.open {
            *self.open.get_or_insert(0) += o;
        }
        for (name, (counts, rps)) in &other.routes {
            let route = self.routes.entry(name.clone()).or_default();
            route.0.add(counts);
            route.1 += rps;
        }
    }
}

/// A counter's growth; a total that went down (the proxy restarted under the same
/// name) counts from zero.
pub(super) fn grew(new: u64, old: u64) -> u64 {
    if new >= old { new - old } else { new }
}

pub(super) fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn delta(new: &v1::TrafficTotals, old: Option<&v1::TrafficTotals>, secs: f64) -> Delta {
    let zero = v1::TrafficTotals::default();
    let old = old.unwrap_or(&zero);
    let counts = Counts::grown(
        (new.requests, new.failures, &new.latency_buckets),
        (old.requests, old.failures, &old.latency_buckets),
    );
    let routes = new
        .routes
        .iter()
        .map(|r| {
            let before = old.routes.iter().find(|o| o.route == r.route);
            let counts = Counts::grown(
                (r.requests, r.failures, &r.latency_buckets),
                before.map_or((0, 0, &[][..]), |o| {
                    (o.requests, o.failures, &o.latency_buckets[..])
                }),
            );
            let rps = per_second(counts.requests, secs);
            (r.route.clone(), (counts, rps))
        })
        .collect();
    Delta {
        rps: per_second(counts.requests, secs),
        counts,
        tls_requests: grew(new.tls_requests, old.tls_requests),
        attempts: grew(new.attempts, old.attempts),
        breaker: BreakerHits {
            connections: grew(new.overloaded_connections, old.overloaded_connections),
            pending: grew(new.overloaded_pending, old.overloaded_pending),
            active: grew(new.overloaded_active, old.overloaded_active),
            retries: grew(new.overloaded_retries, old.overloaded_retries),
        },
        retries: grew(new.retries, old.retries),
        retries_refused: grew(new.retries_refused, old.retries_refused),
        open: None,
        routes,
    }
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part.min(whole) as f64 / whole as f64)
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

/// One proxy's part in a window: its latest report and what the window's
/// differences start from.
pub(super) struct Part<'h> {
    pub(super) latest: &'h Arc<v1::ProxyReport>,
    /// The newest report at least the window older than the latest, else the
    /// oldest: the latest itself when it is the only one (nothing grew).
    pub(super) base: &'h Arc<v1::ProxyReport>,
    /// Seconds between the two.
    pub(super) secs: f64,
    /// The proxy reported lately: what it has open counts.
    pub(super) fresh: bool,
    /// Its workload, "name.namespace".
    pub(super) from: String,
}

/// Each proxy's part in the window of `span` as of `now`; a proxy whose last
/// report is older than `stale` is not fresh.
pub(super) fn parts(
    histories: &[Vec<super::Received>],
    span: Duration,
    now: Instant,
    stale: Duration,
) -> impl Iterator<Item = Part<'_>> {
    histories.iter().filter_map(move |history| {
        let (t_new, latest) = history.last()?;
        let (t_old, base) = history
            .iter()
            .rev()
            .find(|(t, _)| t_new.saturating_duration_since(*t) >= span)
            .or_else(|| history.first())?;
        Some(Part {
            latest,
            base,
            secs: t_new.saturating_duration_since(*t_old).as_secs_f64(),
            fresh: now.saturating_duration_since(*t_new) <= stale,
            from: latest.node.as_ref().map(key).unwrap_or_default(),
        })
    })
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
        let mut tally: Tally<Delta> = Tally::new();
        for part in parts(histories, span, now, stale) {
            let same = Arc::ptr_eq(part.base, part.latest);
            for t in &part.latest.traffic {
                let old = part
                    .base
                    .traffic
                    .iter()
                    .find(|o| o.direction == t.direction && o.service == t.service);
                let mut d = if same {
                    Delta::default()
                } else {
                    delta(t, old, part.secs)
                };
                if t.direction == v1::TrafficDirection::Inbound as i32 {
                    d.open = part.fresh.then_some(part.latest.open_inbound_connections);
                }
                tally.add(&part, t.direction, &t.service, &d);
            }
        }
        let view = |service: &str, from: Option<&str>, d: &Delta, tls: Option<f64>| {
            let c = &d.counts;
            let ratio = |n: u64| (c.requests > 0).then(|| n as f64 / c.requests as f64);
            TrafficView {
                service: service.to_string(),
                from: from.map(str::to_string),
                requests: c.requests,
                failures: c.failures,
                rps: d.rps,
                success_rate: ratio(c.requests - c.failures.min(c.requests)),
                p50_ms: quantile(0.50, &bounds, &c.buckets, c.requests),
                p95_ms: quantile(0.95, &bounds, &c.buckets, c.requests),
                p99_ms: quantile(0.99, &bounds, &c.buckets, c.requests),
                tls_share: tls,
                open_connections: d.open,
                breaker: d.breaker,
                retries: d.retries,
                retries_refused: d.retries_refused,
                retry_ratio: ratio(d.retries),
                ejected_endpoints: ejections.iter().filter(|e| e.service == service).count(),
                routes: d
                    .routes
                    .iter()
                    .map(|(route, (c, rps))| RouteView {
                        route: route.clone(),
                        requests: c.requests,
                        failures: c.failures,
                        rps: *rps,
                        success_rate: share(c.requests - c.failures.min(c.requests), c.requests),
                        p50_ms: quantile(0.50, &bounds, &c.buckets, c.requests),
                        p95_ms: quantile(0.95, &bounds, &c.buckets, c.requests),
                        p99_ms: quantile(0.99, &bounds, &c.buckets, c.requests),
                    })
                    .collect(),
            }
        };
        let mut window = Window::default();
        // Into each service: what its callers sent, for the breakers and retries
        // (the callers' proxies enforce them) and for a service no proxy serves.
        for ((from, service), d) in &tally.edges {
            let tls = share(d.tls_requests, d.attempts);
            window.edges.push(view(service, Some(from), d, tls));
        }
        let called = tally.called();
        let inbound = &tally.inbound;
        for service in tally.services(&called) {
            let callers = called.get(service);
            let mut d = match inbound.get(service) {
                Some(own) => own.clone(),
                None => callers.cloned().unwrap_or_default(),
            };
            if let Some(c) = callers {
                d.breaker = c.breaker;
                d.retries = c.retries;
                d.retries_refused = c.retries_refused;
                // Routes are the callers' (their proxies match them).
                if d.routes.is_empty() {
                    d.routes.clone_from(&c.routes);
                }
            }
            let tls = inbound
                .get(service)
                .and_then(|own| share(own.tls_requests, own.counts.requests));
            window.services.push(view(service, None, &d, tls));
        }
        (window.tcp_services, window.tcp_edges) = super::tcp::window(histories, span, now, stale);
        windows.insert(name.to_string(), window);
    }
    Summary {
        generated_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        proxies: histories.len(),
        windows,
        ejections,
        endpoints,
        replicas: None,
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
            attempts: requests,
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
        // Half of the 200 attempts of the window went over mTLS.
        assert_eq!(edge.tls_share, Some(0.5));
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
    fn a_service_with_routes_is_broken_down_per_route() {
        let t0 = Instant::now();
        let out = v1::TrafficDirection::Outbound;
        let routed = |requests: [u64; 2], failures: [u64; 2]| {
            let mut t = totals(
                out,
                "shop.default",
                requests.iter().sum(),
                failures.iter().sum(),
                [0; 3],
            );
            t.routes = ["api", "static"]
                .iter()
                .zip(requests.iter().zip(failures))
                .map(|(name, (r, f))| v1::RouteTotals {
                    route: (*name).into(),
                    requests: *r,
                    failures: f,
                    latency_buckets: vec![*r, *r, *r],
                })
                .collect();
            t
        };
        let history = vec![
            (t0, report("web", vec![routed([10, 10], [0, 0])])),
            (
                t0 + Duration::from_secs(10),
                report("web", vec![routed([110, 30], [10, 0])]),
            ),
        ];
        let s = summarise(
            &[history],
            t0 + Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let w = &s.windows["10s"];
        for rows in [&w.edges[0].routes, &w.services[0].routes] {
            let names: Vec<&str> = rows.iter().map(|r| r.route.as_str()).collect();
            assert_eq!(names, ["api", "static"]);
            assert_eq!((rows[0].requests, rows[0].failures), (100, 10));
            assert!((rows[0].rps - 10.0).abs() < 1e-9);
            assert_eq!(rows[0].success_rate, Some(0.9));
            assert_eq!(rows[0].p50_ms, Some(5.0));
            assert_eq!((rows[1].requests, rows[1].success_rate), (20, Some(1.0)));
        }
    }

    #[test]
    fn quantiles_past_the_last_bucket_are_the_last_bound() {
        assert_eq!(quantile(0.99, &BOUNDS, &[0, 0, 0], 10), Some(1000.0));
        assert_eq!(quantile(0.5, &BOUNDS, &[], 0), None);
    }
}
