//! The live view's summary as the control plane serves it (`/api/summary`, the
//! `/api/events` stream) and as `weftctl top` reads it: one set of types for both
//! ends, so a field added on one side cannot go missing on the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    pub generated_at_ms: u64,
    /// Proxies that reported within the last minute.
    pub proxies: usize,
    /// By window name (`10s`, `1m`).
    pub windows: BTreeMap<String, Window>,
    #[serde(default)]
    pub ejections: Vec<EjectionView>,
    /// Every endpoint as each calling proxy sees it now: the drill-down below a
    /// service.
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
    /// With several control-plane replicas: how many were asked for their proxies'
    /// reports (this one included) and how many answered. Absent with one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    pub answered: usize,
    pub total: usize,
}

impl Summary {
    /// For a title: " — 1/2 replicas answered", or nothing with one replica.
    pub fn replicas_note(&self) -> String {
        self.replicas.map_or_else(String::new, |r| {
            format!(" — {}/{} replicas answered", r.answered, r.total)
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Window {
    pub services: Vec<TrafficView>,
    pub edges: Vec<TrafficView>,
    /// Opaque TCP (brokers, databases) per service: what its own proxies saw
    /// arrive, or, without one, what its callers sent.
    #[serde(default)]
    pub tcp_services: Vec<TcpView>,
    /// Opaque TCP per calling workload and service, as the caller's proxy saw it.
    #[serde(default)]
    pub tcp_edges: Vec<TcpView>,
}

/// The opaque TCP connections of one service or edge over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TcpView {
    /// The service ("name.namespace"); for an edge, the service called.
    pub service: String,
    /// For an edge: the calling workload ("name.namespace").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Open now (from proxies that reported in the last few seconds).
    pub open_connections: u64,
    /// Opened in the window, and per second.
    pub connections: u64,
    pub connections_per_second: f64,
    /// Bytes towards the service (from its clients) and back, in the window.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub bytes_in_per_second: f64,
    pub bytes_out_per_second: f64,
    /// Share over mTLS: of the connections open now, or without any, of those
    /// opened in the window; null with neither.
    pub tls_share: Option<f64>,
    /// Connections not forwarded in the window (no endpoint, connect failed,
    /// refused by authorization).
    pub failures: u64,
}

/// One service or edge over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrafficView {
    /// The service ("name.namespace"); for an edge, the service called.
    pub service: String,
    /// For an edge: the calling workload ("name.namespace").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    /// Share of requests not answered 5xx; null without requests.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Share of requests that went over mTLS: services, as their own proxies saw
    /// them arrive; edges, as the caller's proxy sent them (attempts, retries
    /// included).
    pub tls_share: Option<f64>,
    /// Services: connections open into the service's proxies now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_connections: Option<u64>,
    /// Requests turned away at once by each circuit-breaker limit.
    pub breaker: BreakerHits,
    pub retries: u64,
    pub retries_refused: u64,
    /// Retries per request: how much of the retry budget is used.
    pub retry_ratio: Option<f64>,
    /// Endpoints ejected now (services only; by any caller).
    pub ejected_endpoints: usize,
    /// The same numbers per route, for a service with routes (requests no route
    /// matched under the route ""); empty without routes.
    #[serde(default)]
    pub routes: Vec<RouteView>,
}

/// One route of a service or edge over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteView {
    /// The route's name; "" for requests no route matched.
    pub route: String,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
