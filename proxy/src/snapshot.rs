//! The proxy's whole dynamic state — services, endpoints, policy — as one immutable
//! value. The data path loads it once per request or connection from an `ArcSwap`;
//! sources (the config file, the control plane) build a new one and swap it in, so a
//! request never sees half an update.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use weft_api::v1;

use crate::FastMap;
use crate::balance::{self, Algorithm, Balancer, HashKey};
use crate::breaker::{self, FailureClass, Limits, OutlierPolicy};
use crate::http::pool::ConnLimit;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::retry::{self, RetryPolicy};
use crate::state::{EndpointStats, ServiceStats};

pub type SnapshotStore = Arc<ArcSwap<Snapshot>>;

#[derive(Debug, thiserror::Error)]
#[error("update for {service} rejected: {reason}")]
pub struct UpdateError {
    pub service: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    Ready,
    NotReady,
    Terminating,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub identity: Option<Arc<str>>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub state: EndpointState,
    /// Load and health, shared with the previous snapshots that held this endpoint.
    pub stats: Arc<EndpointStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub per_try: Option<Duration>,
    pub connect: Option<Duration>,
    pub idle: Option<Duration>,
}

/// Traffic policy as the data path uses it, with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Policy {
    pub load_balancer: Algorithm,
    pub limits: Limits,
    /// None: outlier detection is off.
    pub outlier: Option<OutlierPolicy>,
    /// None: no retries.
    pub retry: Option<RetryPolicy>,
    pub timeouts: Timeouts,
}

#[derive(Debug, Serialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub version: u64,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<(u16, Protocol)>,
    pub endpoints: Vec<Arc<Endpoint>>,
    #[serde(skip)]
    balancer: Balancer,
    pub policy: Policy,
    /// Concurrency counts and retry budget, shared across snapshots.
    pub stats: Arc<ServiceStats>,
    #[serde(skip)]
    pub conn_limit: ConnLimit,
    #[serde(skip)]
    pub metrics: Arc<ServiceMetrics>,
}

impl Service {
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// The protocol hint for a destination port; `Detect` when the service says nothing.
    pub fn protocol(&self, port: u16) -> Protocol {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .or_else(|| (self.ports.len() == 1).then(|| &self.ports[0]))
            .map(|(_, proto)| *proto)
            .unwrap_or(Protocol::Detect)
    }

    /// The endpoint for the next request, by the service's balancer; `key` is the
    /// hash key for consistent hashing, `skip` an endpoint a retry moves away from.
    pub fn pick(&self, key: Option<u64>, skip: Option<usize>) -> Option<usize> {
        self.balancer.pick(&self.endpoints, key, skip)
    }

    /// `pick` at `now`, a `now_nanos()` reading the caller already has.
    pub fn pick_at(&self, key: Option<u64>, skip: Option<usize>, now: u64) -> Option<usize> {
        self.balancer.pick_at(&self.endpoints, key, skip, now)
    }

    pub fn has_ready_endpoints(&self) -> bool {
        self.balancer.has_ready()
    }

    /// The header consistent hashing hashes on, if the balancer hashes on one.
    pub fn hash_key(&self) -> Option<&HashKey> {
        match self.balancer.algorithm() {
            Algorithm::ConsistentHash(key) => Some(key),
            _ => None,
        }
    }

    /// Builds a service from a full-state update, validating everything first.
    pub fn from_update(
        update: &v1::ServiceUpdate,
        metrics: &Metrics,
    ) -> Result<Service, UpdateError> {
        let info = update.service.as_ref().ok_or_else(|| UpdateError {
            service: "?".into(),
            reason: "update carries no service".into(),
        })?;
        let name = format!("{}.{}", info.name, info.namespace);
        let err = |reason: String| UpdateError {
            service: name.clone(),
            reason,
        };
        if info.name.is_empty() || info.namespace.is_empty() {
            return Err(err("service name and namespace must be set".into()));
        }
        let vips = info
            .vips
            .iter()
            .map(|v| {
                v.parse::<IpAddr>()
                    .map_err(|_| err(format!("bad VIP {v:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ports = info
            .ports
            .iter()
            .map(|p| {
                let port =
                    u16::try_from(p.port).map_err(|_| err(format!("bad port {}", p.port)))?;
                let proto = match v1::Protocol::try_from(p.protocol) {
                    Ok(v1::Protocol::Detect) => Protocol::Detect,
                    Ok(v1::Protocol::Http1) => Protocol::Http1,
                    Ok(v1::Protocol::Http2) => Protocol::Http2,
                    Ok(v1::Protocol::Grpc) => Protocol::Grpc,
                    Ok(v1::Protocol::Opaque) => Protocol::Opaque,
                    Err(_) => return Err(err(format!("unknown protocol {}", p.protocol))),
                };
                Ok((port, proto))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let svc_metrics = metrics.service("outbound", &name);
        let endpoints = match &update.endpoints {
            Some(v1::service_update::Endpoints::Full(set)) => set
                .endpoints
                .iter()
                .map(|e| {
                    endpoint_from_proto(e, &name, metrics, &svc_metrics)
                        .map(Arc::new)
                        .map_err(&err)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(v1::service_update::Endpoints::Delta(_)) => {
                return Err(err("a delta needs a base; use Service::apply_delta".into()));
            }
            None => Vec::new(),
        };
        let policy = policy_from_proto(&update.policy.clone().unwrap_or_default()).map_err(err)?;
        Ok(Service::assemble(
            info,
            update.version,
            vips,
            ports,
            endpoints,
            policy,
            metrics,
        ))
    }

    /// Applies an add/remove delta on top of this service.
    pub fn apply_delta(
        &self,
        update: &v1::ServiceUpdate,
        delta: &v1::EndpointDelta,
        metrics: &Metrics,
    ) -> Result<Service, UpdateError> {
        let err = |reason: String| UpdateError {
            service: self.key(),
            reason,
        };
        if delta.base_version != self.version {
            return Err(err(format!(
                "delta is based on version {} but this proxy holds {}",
                delta.base_version, self.version
            )));
        }
        let mut endpoints: Vec<Arc<Endpoint>> = self.endpoints.clone();
        for removed in &delta.removed {
            let addr = socket_addr(removed).map_err(&err)?;
            endpoints.retain(|e| e.addr != addr);
        }
        let key = self.key();
        for added in &delta.upserted {
            let ep = endpoint_from_proto(added, &key, metrics, &self.metrics).map_err(&err)?;
            endpoints.retain(|e| e.addr != ep.addr);
            endpoints.push(Arc::new(ep));
        }
        let info = update.service.clone().unwrap_or_else(|| v1::ServiceInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            ..Default::default()
        });
        let policy = match &update.policy {
            Some(p) => policy_from_proto(p).map_err(err)?,
            None => self.policy.clone(),
        };
        Ok(Service::assemble(
            &info,
            update.version,
            self.vips.clone(),
            self.ports.clone(),
            endpoints,
            policy,
            metrics,
        ))
    }

    fn assemble(
        info: &v1::ServiceInfo,
        version: u64,
        vips: Vec<IpAddr>,
        ports: Vec<(u16, Protocol)>,
        endpoints: Vec<Arc<Endpoint>>,
        policy: Policy,
        metrics: &Metrics,
    ) -> Service {
        let label = format!("{}.{}", info.name, info.namespace);
        let stats = metrics.state().service(&label);
        Service {
            conn_limit: ConnLimit {
                count: stats.concurrency.connections.clone(),
                max: policy.limits.max_connections,
            },
            name: info.name.clone(),
            namespace: info.namespace.clone(),
            version,
            vips,
            ports,
            balancer: Balancer::new(policy.load_balancer.clone(), &endpoints),
            endpoints,
            policy,
            stats,
            metrics: metrics.service("outbound", &label),
        }
    }
}

fn socket_addr(a: &v1::SocketAddress) -> Result<SocketAddr, String> {
    let ip: IpAddr =
        a.ip.parse()
            .map_err(|_| format!("bad endpoint IP {:?}", a.ip))?;
    let port = u16::try_from(a.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("bad endpoint port {}", a.port))?;
    Ok(SocketAddr::new(ip, port))
}

fn endpoint_from_proto(
    e: &v1::Endpoint,
    service: &str,
    metrics: &Metrics,
    svc_metrics: &Arc<ServiceMetrics>,
) -> Result<Endpoint, String> {
    let addr = socket_addr(e.address.as_ref().ok_or("endpoint without address")?)?;
    let weight = match e.weight {
        0 => weft_api::mesh::DEFAULT_WEIGHT,
        w if w <= weft_api::mesh::MAX_WEIGHT => w,
        w => return Err(format!("endpoint {addr}: weight {w} is too large")),
    };
    let state = match v1::EndpointState::try_from(e.state) {
        Ok(v1::EndpointState::Ready) => EndpointState::Ready,
        Ok(v1::EndpointState::NotReady) => EndpointState::NotReady,
        Ok(v1::EndpointState::Terminating) => EndpointState::Terminating,
        Err(_) => return Err(format!("endpoint {addr}: unknown state {}", e.state)),
    };
    if !e.identity.is_empty() && !e.identity.starts_with("spiffe://") {
        return Err(format!(
            "endpoint {addr}: identity {:?} is not a SPIFFE ID",
            e.identity
        ));
    }
    Ok(Endpoint {
        addr,
        weight,
        identity: (!e.identity.is_empty()).then(|| Arc::from(e.identity.as_str())),
        labels: e.labels.clone().into_iter().collect(),
        state,
        stats: metrics.state().endpoint(service, addr, svc_metrics),
    })
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

fn dur(v: u64, default: Duration) -> Duration {
    ms(v).unwrap_or(default)
}

/// Resolves a received policy, filling defaults. Rejects what cannot be applied
/// (an update is applied whole or not at all).
fn policy_from_proto(raw: &v1::TrafficPolicy) -> Result<Policy, String> {
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
    let retry = match &raw.retry {
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
    };
    let t = raw.timeouts.unwrap_or_default();
    Ok(Policy {
        load_balancer,
        limits,
        outlier,
        retry,
        timeouts: Timeouts {
            request: ms(t.request_ms),
            per_try: ms(t.per_try_ms),
            connect: ms(t.connect_ms),
            idle: ms(t.idle_ms),
        },
    })
}

/// Every service the proxy knows, indexed the ways a destination can be named.
#[derive(Default, Serialize)]
pub struct Snapshot {
    pub version: u64,
    pub services: HashMap<String, Arc<Service>>,
    #[serde(skip)]
    by_host: FastMap<String, Arc<Service>>,
    #[serde(skip)]
    by_vip: FastMap<SocketAddr, Arc<Service>>,
    #[serde(skip)]
    local_namespace: String,
}

impl Snapshot {
    pub fn empty(local_namespace: &str) -> Snapshot {
        Snapshot {
            local_namespace: local_namespace.to_string(),
            ..Snapshot::default()
        }
    }

    /// A snapshot holding exactly `services`.
    pub fn build(version: u64, local_namespace: &str, services: Vec<Service>) -> Snapshot {
        let mut snap = Snapshot::empty(local_namespace);
        snap.version = version;
        for svc in services {
            snap.services.insert(svc.key(), Arc::new(svc));
        }
        snap.reindex();
        snap
    }

    /// A copy of this snapshot with one service added, replaced or (None) removed.
    pub fn with_service(&self, version: u64, key: &str, svc: Option<Arc<Service>>) -> Snapshot {
        let mut snap = Snapshot::empty(&self.local_namespace);
        snap.version = version;
        snap.services = self.services.clone();
        match svc {
            Some(s) => snap.services.insert(key.to_string(), s),
            None => snap.services.remove(key),
        };
        snap.reindex();
        snap
    }

    fn reindex(&mut self) {
        self.by_host.clear();
        self.by_vip.clear();
        for svc in self.services.values() {
            let (n, ns) = (&svc.name, &svc.namespace);
            if *ns == self.local_namespace {
                self.by_host.insert(n.clone(), svc.clone());
            }
            for host in [
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc"),
                format!("{n}.{ns}.svc.cluster.local"),
            ] {
                self.by_host.insert(host, svc.clone());
            }
            for vip in &svc.vips {
                for (port, _) in &svc.ports {
                    self.by_vip
                        .insert(SocketAddr::new(*vip, *port), svc.clone());
                }
            }
        }
    }

    pub fn by_key(&self, key: &str) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// Resolves a service by a host name (as in a Host header, without the port).
    pub fn by_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.trim_end_matches('.');
        if let Some(s) = self.by_host.get(host) {
            return Some(s);
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.by_host.get(&host.to_ascii_lowercase());
        }
        None
    }

    pub fn by_vip(&self, addr: SocketAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&addr)
    }

    /// Resolves an authority (`host[:port]`) as an app wrote it.
    pub fn resolve_authority(&self, host: &str, port: u16) -> Option<&Arc<Service>> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.by_vip(SocketAddr::new(ip, port)),
            Err(_) => self.by_host(host),
        }
    }
}

/// Builds a snapshot from a whole mesh description (file mode).
pub fn from_mesh(
    mesh: &weft_api::mesh::MeshSpec,
    version: u64,
    local_namespace: &str,
    metrics: &Metrics,
) -> Result<Snapshot, UpdateError> {
    let services = mesh
        .services
        .iter()
        .map(|s| Service::from_update(&s.to_update(version), metrics))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot::build(version, local_namespace, services))
}

pub fn store(snapshot: Snapshot) -> SnapshotStore {
    Arc::new(ArcSwap::from_pointee(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::mesh::MeshSpec;

    fn snapshot(yaml: &str) -> Snapshot {
        let mesh = MeshSpec::from_yaml(yaml, "t").expect("valid mesh");
        from_mesh(&mesh, 1, "default", &Metrics::new()).expect("valid snapshot")
    }

    #[test]
    fn resolves_by_name_forms_and_vip() {
        let snap = snapshot(
            "services:\n  - name: orders\n    vips: [10.0.0.1]\n    ports: [{port: 80}]\n  - name: users\n    namespace: other\n",
        );
        assert!(snap.by_host("orders").is_some());
        assert!(snap.by_host("orders.default.svc.cluster.local").is_some());
        assert!(snap.by_host("ORDERS.default").is_some());
        assert!(
            snap.by_host("users").is_none(),
            "bare names resolve in the local namespace"
        );
        assert!(snap.by_host("users.other").is_some());
        assert!(snap.resolve_authority("10.0.0.1", 80).is_some());
        assert!(snap.resolve_authority("10.0.0.1", 81).is_none());
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        let snap = snapshot(
            "services:\n  - name: a\n    policy: {load_balancer: round-robin}\n    endpoints:\n      - {address: '127.0.0.1:1', weight: 100}\n      - {address: '127.0.0.1:2', weight: 300}\n      - {address: '127.0.0.1:3', state: terminating}\n",
        );
        let svc = snap.by_host("a").expect("service a");
        let mut counts = HashMap::new();
        for _ in 0..400 {
            let ep = &svc.endpoints[svc.pick(None, None).expect("an endpoint")];
            *counts.entry(ep.addr.port()).or_insert(0) += 1;
        }
        assert_eq!(counts.get(&1), Some(&100));
        assert_eq!(counts.get(&2), Some(&300));
        assert_eq!(
            counts.get(&3),
            None,
            "terminating endpoints take no new requests"
        );
    }

    #[test]
    fn delta_applies_only_on_its_base() {
        let snap = snapshot("services:\n  - name: a\n    endpoints: [{address: '127.0.0.1:1'}]\n");
        let svc = snap.by_host("a").expect("a");
        let delta = v1::EndpointDelta {
            base_version: 1,
            upserted: vec![v1::Endpoint {
                address: Some(v1::SocketAddress {
                    ip: "127.0.0.1".into(),
                    port: 2,
                }),
                ..Default::default()
            }],
            removed: vec![v1::SocketAddress {
                ip: "127.0.0.1".into(),
                port: 1,
            }],
        };
        let update = v1::ServiceUpdate {
            version: 2,
            ..Default::default()
        };
        let next = svc
            .apply_delta(&update, &delta, &Metrics::new())
            .expect("applies");
        assert_eq!(next.endpoints.len(), 1);
        assert_eq!(next.endpoints[0].addr.port(), 2);
        let stale = v1::EndpointDelta {
            base_version: 7,
            ..delta
        };
        assert!(svc.apply_delta(&update, &stale, &Metrics::new()).is_err());
    }

    #[test]
    fn endpoint_state_survives_a_swap_and_a_policy_change_but_not_removal() {
        let metrics = Metrics::new();
        let build = |yaml: &str| {
            let mesh = MeshSpec::from_yaml(yaml, "t").expect("valid mesh");
            from_mesh(&mesh, 1, "default", &metrics).expect("valid snapshot")
        };
        let first = build(
            "services:\n  - name: a\n    endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:2'}]\n",
        );
        let svc = first.by_host("a").expect("a");
        svc.endpoints[0].stats.load.start();
        svc.stats
            .concurrency
            .active
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let second = build(
            "services:\n  - name: a\n    policy: {load_balancer: least-request, circuit_breaker: {max_active_requests: 9}}\n    endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:3'}]\n",
        );
        drop(first);
        let svc = second.by_host("a").expect("a");
        assert_eq!(svc.policy.load_balancer, Algorithm::LeastRequest);
        assert_eq!(svc.policy.limits.max_active_requests, 9);
        assert_eq!(
            svc.endpoints[0].stats.load.in_flight(),
            1,
            "kept across the swap"
        );
        assert_eq!(
            svc.stats
                .concurrency
                .active
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        assert_eq!(
            metrics.state().endpoints_held(),
            2,
            "the endpoint that left has no state any more"
        );
    }
}
