//! Prometheus metrics. Handles are resolved once — per service when a snapshot is
//! built, per listener at start — so the hot path only touches atomics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Fine enough at the bottom for sub-millisecond hops, wide enough for slow upstreams.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A metric's name, help and labels: the table below is every metric the proxy
/// exports outside identity's.
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

impl Def {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }
}

const fn def(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Def {
    Def { name, help, labels }
}

const REQUESTS: Def = def(
    "weft_requests_total",
    "HTTP requests by direction, service, route (empty: none) and response status class.",
    &["direction", "service", "route", "status_class"],
);
const DURATION: Def = def(
    "weft_request_duration_seconds",
    "Time from request received to response headers sent.",
    &["direction", "service", "route"],
);
const OPEN: Def = def(
    "weft_open_connections",
    "TCP connections open now.",
    &["direction"],
);
const TCP_OPENED: Def = def(
    "weft_tcp_connections_opened_total",
    "TCP connections accepted.",
    &["direction"],
);
const TCP_CLOSED: Def = def(
    "weft_tcp_connections_closed_total",
    "TCP connections closed.",
    &["direction"],
);
const TCP_REJECTED: Def = def(
    "weft_tcp_connections_rejected_total",
    "TCP connections refused because the connection limit was reached.",
    &["direction"],
);
const TCP_PASSTHROUGH: Def = def(
    "weft_tcp_passthrough_total",
    "Captured connections to destinations the mesh does not know, passed through \
     untouched as plain TCP.",
    &["direction"],
);
const BYTES_READ: Def = def(
    "weft_tcp_read_bytes_total",
    "Bytes read from accepted connections.",
    &["direction"],
);
const BYTES_WRITTEN: Def = def(
    "weft_tcp_write_bytes_total",
    "Bytes written to accepted connections.",
    &["direction"],
);
/// Opaque TCP per service, labelled like HTTP requests: the service, the peer's
/// SPIFFE ID (outbound: the endpoint's; inbound: the caller's) and whether the hop
/// was mTLS.
const TCP_SERVICE_LABELS: &[&str] = &["direction", "service", "peer_identity", "tls"];
const TCP_SERVICE_OPENED: Def = def(
    "weft_tcp_service_connections_total",
    "Opaque TCP connections forwarded, by direction, service, peer identity and TLS.",
    TCP_SERVICE_LABELS,
);
const TCP_SERVICE_OPEN: Def = def(
    "weft_tcp_service_open_connections",
    "Opaque TCP connections open now, by direction, service, peer identity and TLS.",
    TCP_SERVICE_LABELS,
);
const TCP_SERVICE_RECEIVED: Def = def(
    "weft_tcp_service_received_bytes_total",
    "Bytes received from the client of opaque TCP connections.",
    TCP_SERVICE_LABELS,
);
const TCP_SERVICE_SENT: Def = def(
    "weft_tcp_service_sent_bytes_total",
    "Bytes sent to the client of opaque TCP connections.",
    TCP_SERVICE_LABELS,
);
const TCP_SERVICE_FAILURES: Def = def(
    "weft_tcp_service_failures_total",
    "Opaque TCP connections not forwarded, by direction, service and reason \
     (no-endpoints, connect-failure, forbidden).",
    &["direction", "service", "reason"],
);
/// Distinct label sets of the per-service TCP metrics. Services come from the
/// control plane and identities are verified against the mesh's CA, so real meshes
/// stay far below; past it, new combinations are counted under `overflow`, so a
/// mesh that grows without bound cannot grow the proxy's memory with it.
const MAX_TCP_LABEL_SETS: usize = 2048;
const OVERFLOW: &str = "overflow";

const PROXY_ERRORS: Def = def(
    "weft_proxy_errors_total",
    "Requests the proxy answered itself, by the reason it gave in weft-error.",
    &["direction", "service", "reason"],
);
const EJECTED: Def = def(
    "weft_outlier_ejected_endpoints",
    "Endpoints currently ejected by outlier detection.",
    &["service"],
);
const EJECTIONS: Def = def(
    "weft_outlier_ejections_total",
    "Endpoints ejected by outlier detection (re-ejections after a failed probe too).",
    &["service"],
);
const OVERLOADED: Def = def(
    "weft_overload_rejections_total",
    "Requests answered 503 overloaded at once because a concurrency limit was reached.",
    &["service", "limit"],
);
const RETRIES: Def = def(
    "weft_retries_total",
    "Attempts made after the first, by service.",
    &["service"],
);
const RETRIES_REFUSED: Def = def(
    "weft_retries_refused_total",
    "Retries not made because the retry budget or the concurrent-retry limit was spent.",
    &["service"],
);
const REFUSED_RESENDS: Def = def(
    "weft_refused_resends_total",
    "Requests sent again because an HTTP/2 endpoint (inbound: the app) refused them \
     unprocessed (REFUSED_STREAM, or past its GOAWAY); outside the retry budget and \
     weft_retries_total.",
    &["service"],
);
const ATTEMPTS: Def = def(
    "weft_attempts_total",
    "Attempts sent to endpoints (retries included), by service and whether over mTLS.",
    &["service", "tls"],
);
const ROUTE_ACTIONS: Def = def(
    "weft_route_actions_total",
    "Requests a route answered or held itself, apart from failures: rate-limited, \
     fault-abort, fault-delay, redirect.",
    &["service", "route", "action"],
);
const RELOADS: Def = def(
    "weft_snapshot_reloads_total",
    "Attempts to load a new snapshot, by result.",
    &["result"],
);
const SNAPSHOT_VERSION: Def = def(
    "weft_snapshot_version",
    "Version of the snapshot the proxy is serving.",
    &[],
);
const UPDATES_REJECTED: Def = def(
    "weft_discovery_updates_rejected_total",
    "Discovery updates rejected whole because they could not be applied.",
    &[],
);
const SUBSCRIPTIONS: Def = def(
    "weft_discovery_subscriptions",
    "Destinations this proxy watches through the control plane.",
    &[],
);
const STREAMS: Def = def(
    "weft_discovery_streams_connected",
    "Discovery streams currently connected to the control plane.",
    &[],
);
const ALIVE_TASKS: Def = def(
    "weft_runtime_alive_tasks",
    "Tasks alive in the proxy's runtime, read at scrape: a leak shows as growth.",
    &[],
);

/// Registers a metric built from a static definition; either step fails only for
/// a bad definition or a name registered twice, which every test would show.
fn register<C: Collector + Clone + 'static>(r: &Registry, c: prometheus::Result<C>) -> C {
    let c = c.unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric registered once: {e}"));
    c
}

fn counter_vec(r: &Registry, d: &Def) -> IntCounterVec {
    register(r, IntCounterVec::new(d.opts(), d.labels))
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    open_connections: IntGaugeVec,
    tcp_opened: IntCounterVec,
    tcp_closed: IntCounterVec,
    tcp_rejected: IntCounterVec,
    tcp_passthrough: IntCounterVec,
    bytes_read: IntCounterVec,
    bytes_written: IntCounterVec,
    proxy_errors: IntCounterVec,
    snapshot_version: IntGauge,
    reloads: IntCounterVec,
    updates_rejected: IntCounter,
    subscriptions: IntGauge,
    streams: IntGauge,
    alive_tasks: IntGauge,
    ejected: IntGaugeVec,
    ejections: IntCounterVec,
    overloaded: IntCounterVec,
    retries: IntCounterVec,
    retries_refused: IntCounterVec,
    refused_resends: IntCounterVec,
    attempts: IntCounterVec,
    route_actions: IntCounterVec,
    /// By (direction, service, route); route "" for requests no route matched.
    services: Mutex<HashMap<(Direction, String, String), Arc<ServiceMetrics>>>,
    tcp: Arc<TcpFamilies>,
}

/// The per-service TCP metric families and the handles resolved so far.
struct TcpFamilies {
    opened: IntCounterVec,
    open: IntGaugeVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    failures: IntCounterVec,
    resolved: Mutex<HashMap<TcpKey, TcpConnMetrics>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TcpKey {
    direction: Direction,
    service: String,
    peer_identity: String,
    tls: bool,
}

impl TcpFamilies {
    fn new(r: &Registry) -> TcpFamilies {
        TcpFamilies {
            opened: counter_vec(r, &TCP_SERVICE_OPENED),
            open: register(
                r,
                IntGaugeVec::new(TCP_SERVICE_OPEN.opts(), TCP_SERVICE_OPEN.labels),
            ),
            received: counter_vec(r, &TCP_SERVICE_RECEIVED),
            sent: counter_vec(r, &TCP_SERVICE_SENT),
            failures: counter_vec(r, &TCP_SERVICE_FAILURES),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    fn handles(&self, mut key: TcpKey) -> TcpConnMetrics {
        let mut resolved = self
            .resolved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = resolved.get(&key) {
            return found.clone();
        }
        if resolved.len() >= MAX_TCP_LABEL_SETS {
            key.service = OVERFLOW.to_string();
            key.peer_identity = OVERFLOW.to_string();
        }
        resolved
            .entry(key)
            .or_insert_with_key(|key| {
                let tls = if key.tls { "true" } else { "false" };
                let labels = [
                    key.direction.label(),
                    key.service.as_str(),
                    key.peer_identity.as_str(),
                    tls,
                ];
                TcpConnMetrics {
                    opened: self.opened.with_label_values(&labels),
                    open: self.open.with_label_values(&labels),
                    received: self.received.with_label_values(&labels),
                    sent: self.sent.with_label_values(&labels),
                }
            })
            .clone()
    }
}

/// One label set of the per-service TCP metrics, resolved once per connection.
#[derive(Clone, Debug)]
pub(crate) struct TcpConnMetrics {
    opened: IntCounter,
    open: IntGauge,
    /// Bytes from the connection's client, counted as they pass.
    pub(crate) received: IntCounter,
    /// Bytes to the connection's client.
    pub(crate) sent: IntCounter,
}

impl TcpConnMetrics {
    /// Counts a connection as opened and open until the guard is dropped.
    pub(crate) fn open(&self) -> OpenTcpConn {
        self.opened.inc();
        self.open.inc();
        OpenTcpConn(self.open.clone())
    }
}

/// An opaque connection counted as open; dropped when it closes.
pub(crate) struct OpenTcpConn(IntGauge);

impl Drop for OpenTcpConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Which side of the proxy traffic is on, as the `direction` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// From the local app to the mesh.
    Outbound,
    /// From the mesh to the local app.
    Inbound,
    /// From outside the mesh into it, through a gateway listener.
    Gateway,
}

impl Direction {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Gateway => "gateway",
        }
    }
}

/// Why an opaque connection was not forwarded, as the `reason` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TcpFailure {
    /// The service had no endpoint to pick.
    NoEndpoints,
    /// No endpoint (outbound) or the app (inbound) accepted the connection.
    ConnectFailure,
    /// Inbound authorization refused the caller.
    Forbidden,
}

impl TcpFailure {
    fn label(self) -> &'static str {
        match self {
            TcpFailure::NoEndpoints => "no-endpoints",
            TcpFailure::ConnectFailure => "connect-failure",
            TcpFailure::Forbidden => "forbidden",
        }
    }
}

/// Which concurrency limit turned a request away, as the `limit` label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    Connections,
    Pending,
    Active,
    Retries,
}

impl Limit {
    const ALL: [Limit; 4] = [
        Limit::Connections,
        Limit::Pending,
        Limit::Active,
        Limit::Retries,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Pending => "pending",
            Limit::Active => "active",
            Limit::Retries => "retries",
        }
    }
}

/// Per (direction, service) handles.
pub(crate) struct ServiceMetrics {
    by_class: [IntCounter; 5],
    pub(crate) duration: Histogram,
    errors: IntCounterVec,
    /// Endpoints of this service ejected now.
    pub(crate) ejected: IntGauge,
    pub(crate) ejections: IntCounter,
    /// Requests turned away by a concurrency limit, by `Limit`.
    overloaded: [IntCounter; 4],
    pub(crate) retries: IntCounter,
    /// Retries not made because the budget or the concurrent-retry limit said no.
    pub(crate) retries_refused: IntCounter,
    /// Requests an endpoint refused unprocessed and that were sent again.
    pub(crate) refused_resends: IntCounter,
    /// Attempts sent in plaintext, and over mTLS.
    attempts: [IntCounter; 2],
    tcp: Arc<TcpFamilies>,
    direction: Direction,
    service: String,
}

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ServiceMetrics({}, {})",
            self.direction.label(),
            self.service
        )
    }
}

impl ServiceMetrics {
    pub(crate) fn record(&self, status: u16, elapsed: std::time::Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one attempt sent to an endpoint, over mTLS or not.
    pub(crate) fn attempted(&self, tls: bool) {
        self.attempts[usize::from(tls)].inc();
    }

    pub(crate) fn overloaded(&self, limit: Limit) {
        self.overloaded[limit as usize].inc();
    }

    /// Handles for one opaque connection of this service with `peer` (a SPIFFE ID
    /// the TLS handshake verified, or none: plaintext).
    pub(crate) fn tcp(&self, peer: Option<&str>) -> TcpConnMetrics {
        self.tcp.handles(TcpKey {
            direction: self.direction,
            service: self.service.clone(),
            peer_identity: peer.unwrap_or_default().to_string(),
            tls: peer.is_some(),
        })
    }

    /// Counts an opaque connection of this service that could not be forwarded.
    /// The service comes from the snapshot and the reasons are fixed, so this
    /// label set is as bounded as the services'.
    pub(crate) fn tcp_failed(&self, reason: TcpFailure) {
        self.tcp
            .failures
            .with_label_values(&[
                self.direction.label(),
                self.service.as_str(),
                reason.label(),
            ])
            .inc();
    }

    /// Counts an error the proxy answered itself, by the reason in `weft-error`.
    pub(crate) fn proxy_error(&self, reason: &str) {
        self.errors
            .with_label_values(&[self.direction.label(), self.service.as_str(), reason])
            .inc();
    }
}

/// What a route answered or held itself, counted apart from failures.
#[derive(Debug, Clone)]
pub(crate) struct RouteActions {
    pub(crate) rate_limited: IntCounter,
    pub(crate) fault_abort: IntCounter,
    pub(crate) fault_delay: IntCounter,
    pub(crate) redirect: IntCounter,
}

/// Per-listener connection handles.
#[derive(Clone)]
pub(crate) struct ConnMetrics {
    pub(crate) open: IntGauge,
    pub(crate) opened: IntCounter,
    pub(crate) closed: IntCounter,
    pub(crate) rejected: IntCounter,
    pub(crate) bytes_read: IntCounter,
    pub(crate) bytes_written: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        // The standard process_* series (resident memory, open fds, CPU), read from
        // /proc at scrape.
        if let Err(e) = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(error = %e, "process metrics unavailable");
        }
        // Make the reload series visible before the first reload.
        let reloads = counter_vec(&r, &RELOADS);
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        let duration =
            HistogramOpts::new(DURATION.name, DURATION.help).buckets(LATENCY_BUCKETS.to_vec());
        Metrics {
            inner: Arc::new(Inner {
                requests: counter_vec(&r, &REQUESTS),
                duration: register(&r, HistogramVec::new(duration, DURATION.labels)),
                open_connections: register(&r, IntGaugeVec::new(OPEN.opts(), OPEN.labels)),
                tcp_opened: counter_vec(&r, &TCP_OPENED),
                tcp_closed: counter_vec(&r, &TCP_CLOSED),
                tcp_rejected: counter_vec(&r, &TCP_REJECTED),
                tcp_passthrough: counter_vec(&r, &TCP_PASSTHROUGH),
                bytes_read: counter_vec(&r, &BYTES_READ),
                bytes_written: counter_vec(&r, &BYTES_WRITTEN),
                proxy_errors: counter_vec(&r, &PROXY_ERRORS),
                snapshot_version: register(&r, IntGauge::with_opts(SNAPSHOT_VERSION.opts())),
                reloads,
                updates_rejected: register(&r, IntCounter::with_opts(UPDATES_REJECTED.opts())),
                subscriptions: register(&r, IntGauge::with_opts(SUBSCRIPTIONS.opts())),
                streams: register(&r, IntGauge::with_opts(STREAMS.opts())),
                alive_tasks: register(&r, IntGauge::with_opts(ALIVE_TASKS.opts())),
                ejected: register(&r, IntGaugeVec::new(EJECTED.opts(), EJECTED.labels)),
                ejections: counter_vec(&r, &EJECTIONS),
                overloaded: counter_vec(&r, &OVERLOADED),
                retries: counter_vec(&r, &RETRIES),
                retries_refused: counter_vec(&r, &RETRIES_REFUSED),
                refused_resends: counter_vec(&r, &REFUSED_RESENDS),
                attempts: counter_vec(&r, &ATTEMPTS),
                route_actions: counter_vec(&r, &ROUTE_ACTIONS),
                services: Mutex::new(HashMap::new()),
                tcp: Arc::new(TcpFamilies::new(&r)),
                registry: r,
            }),
        }
    }

    /// Handles for one service in one direction; cached so snapshots share them.
    pub(crate) fn service(&self, direction: Direction, service: &str) -> Arc<ServiceMetrics> {
        self.service_route(direction, service, "")
    }

    /// Handles for the requests one route of a service handles: requests and
    /// latency carry its name; the rest is the service's.
    pub(crate) fn service_route(
        &self,
        direction: Direction,
        service: &str,
        route: &str,
    ) -> Arc<ServiceMetrics> {
        let key = (direction, service.to_string(), route.to_string());
        let mut cache = self
            .inner
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                let i = &self.inner;
                let direction_label = direction.label();
                Arc::new(ServiceMetrics {
                    by_class: STATUS_CLASSES.map(|class| {
                        i.requests
                            .with_label_values(&[direction_label, service, route, class])
                    }),
                    duration: i
                        .duration
                        .with_label_values(&[direction_label, service, route]),
                    errors: i.proxy_errors.clone(),
                    ejected: i.ejected.with_label_values(&[service]),
                    ejections: i.ejections.with_label_values(&[service]),
                    overloaded: Limit::ALL
                        .map(|limit| i.overloaded.with_label_values(&[service, limit.label()])),
                    retries: i.retries.with_label_values(&[service]),
                    retries_refused: i.retries_refused.with_label_values(&[service]),
                    refused_resends: i.refused_resends.with_label_values(&[service]),
                    attempts: ["false", "true"]
                        .map(|tls| i.attempts.with_label_values(&[service, tls])),
                    tcp: i.tcp.clone(),
                    direction,
                    service: service.to_string(),
                })
            })
            .clone()
    }

    /// Counters for what one route answers or holds itself.
    pub(crate) fn route_actions(&self, service: &str, route: &str) -> RouteActions {
        let c = |action: &str| {
            self.inner
                .route_actions
                .with_label_values(&[service, route, action])
        };
        RouteActions {
            rate_limited: c("rate-limited"),
            fault_abort: c("fault-abort"),
            fault_delay: c("fault-delay"),
            redirect: c("redirect"),
        }
    }

    pub(crate) fn conn(&self, direction: Direction) -> ConnMetrics {
        let i = &self.inner;
        let direction = direction.label();
        ConnMetrics {
            open: i.open_connections.with_label_values(&[direction]),
            opened: i.tcp_opened.with_label_values(&[direction]),
            closed: i.tcp_closed.with_label_values(&[direction]),
            rejected: i.tcp_rejected.with_label_values(&[direction]),
            bytes_read: i.bytes_read.with_label_values(&[direction]),
            bytes_written: i.bytes_written.with_label_values(&[direction]),
        }
    }

    /// Counts connections passed through outside the mesh.
    pub(crate) fn passthrough(&self, direction: Direction) -> IntCounter {
        self.inner
            .tcp_passthrough
            .with_label_values(&[direction.label()])
    }

    pub(crate) fn snapshot_loaded(&self, version: u64) {
        self.inner
            .snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.inner.reloads.with_label_values(&["ok"]).inc();
    }

    pub(crate) fn snapshot_rejected(&self) {
        self.inner.reloads.with_label_values(&["error"]).inc();
    }

    pub(crate) fn update_rejected(&self) {
        self.inner.updates_rejected.inc();
    }

    pub(crate) fn discovery_subscriptions(&self, n: usize) {
        self.inner
            .subscriptions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn discovery_connected(&self, delta: i64) {
        self.inner.streams.add(delta);
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let alive = rt.metrics().num_alive_tasks();
            self.inner
                .alive_tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        let families = self.inner.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = String::from_utf8(metrics.render()).expect("UTF-8");
        let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        want.sort();
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (inner, value) = rest.split_once("} ")?;
            let mut got: Vec<String> = inner.split(',').map(str::to_string).collect();
            got.sort();
            (got == want).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn an_opaque_connection_is_counted_with_its_service_peer_and_tls() {
        let metrics = Metrics::new();
        let svc = metrics.service(Direction::Inbound, "rabbitmq");
        let peer = "spiffe://cluster.local/ns/default/sa/orders";
        let conn = svc.tcp(Some(peer));
        let open = conn.open();
        conn.received.inc_by(10);
        conn.sent.inc_by(7);
        let labels = [
            ("direction", "inbound"),
            ("service", "rabbitmq"),
            ("peer_identity", peer),
            ("tls", "true"),
        ];
        let get = |name| sample(&metrics, name, &labels);
        assert_eq!(get("weft_tcp_service_connections_total"), Some(1.0));
        assert_eq!(get("weft_tcp_service_open_connections"), Some(1.0));
        assert_eq!(get("weft_tcp_service_received_bytes_total"), Some(10.0));
        assert_eq!(get("weft_tcp_service_sent_bytes_total"), Some(7.0));
        drop(open);
        assert_eq!(get("weft_tcp_service_open_connections"), Some(0.0));

        svc.tcp(None).open();
        let plain = [
            ("direction", "inbound"),
            ("service", "rabbitmq"),
            ("peer_identity", ""),
            ("tls", "false"),
        ];
        assert_eq!(
            sample(&metrics, "weft_tcp_service_connections_total", &plain),
            Some(1.0)
        );
    }

    #[test]
    fn tcp_label_sets_are_bounded() {
        let metrics = Metrics::new();
        let svc = metrics.service(Direction::Inbound, "db");
        for n in 0..MAX_TCP_LABEL_SETS + 10 {
            let peer = format!("spiffe://cluster.local/ns/default/sa/caller-{n}");
            drop(svc.tcp(Some(&peer)).open());
        }
        let text = String::from_utf8(metrics.render()).expect("UTF-8");
        let series = text
            .lines()
            .filter(|l| l.starts_with("weft_tcp_service_connections_total{"))
            .count();
        assert_eq!(
            series,
            MAX_TCP_LABEL_SETS + 1,
            "the cap plus one overflow set"
        );
        let overflow = [
            ("direction", "inbound"),
            ("service", OVERFLOW),
            ("peer_identity", OVERFLOW),
            ("tls", "true"),
        ];
        assert_eq!(
            sample(&metrics, "weft_tcp_service_connections_total", &overflow),
            Some(10.0)
        );
    }
}
