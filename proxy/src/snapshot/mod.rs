//! The proxy's whole dynamic state — services, endpoints, policy — as one immutable
//! value. The data path loads it once per request or connection from an `ArcSwap`;
//! sources (the config file, the control plane) build a new one and swap it in, so a
//! request never sees half an update.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use weft_api::v1;

use crate::FastMap;
use crate::balance::{Algorithm, Balancer, HashKey};
use crate::breaker::{ConnLimit, Limits, OutlierPolicy};
use crate::endpoint::{Endpoint, EndpointState, Registry, ServiceStats};
use crate::metrics::{Direction, Metrics, ServiceMetrics};
use crate::retry::RetryPolicy;
use crate::sync::lock;

pub(crate) mod lookup;
mod policy;
pub(crate) mod routes;

use policy::policy_from_proto;
use routes::Routes;

pub(crate) type SnapshotStore = Arc<ArcSwap<Snapshot>>;

#[derive(Debug, thiserror::Error)]
#[error("update for {service} rejected: {reason}")]
pub(crate) struct UpdateError {
    pub(crate) service: String,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Protocol {
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub(crate) struct Timeouts {
    pub(crate) request: Option<Duration>,
    pub(crate) per_try: Option<Duration>,
    pub(crate) connect: Option<Duration>,
    pub(crate) idle: Option<Duration>,
}

/// Traffic policy as the data path uses it, with defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Policy {
    pub(crate) load_balancer: Algorithm,
    pub(crate) limits: Limits,
    /// None: outlier detection is off.
    pub(crate) outlier: Option<OutlierPolicy>,
    /// None: no retries.
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeouts: Timeouts,
}

#[derive(Debug, Serialize)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) version: u64,
    pub(crate) vips: Vec<IpAddr>,
    pub(crate) ports: Vec<(u16, Protocol)>,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    #[serde(skip)]
    balancer: Balancer,
    pub(crate) policy: Policy,
    /// Tried in order before the service's own endpoints; shared by the snapshots
    /// an endpoint delta builds, so rate-limit buckets carry over.
    pub(crate) routes: Arc<Routes>,
    /// Concurrency counts and retry budget, shared across snapshots.
    pub(crate) stats: Arc<ServiceStats>,
    #[serde(skip)]
    pub(crate) conn_limit: ConnLimit,
    #[serde(skip)]
    pub(crate) metrics: Arc<ServiceMetrics>,
    /// This service as reached on each port with an endpoint set of its own (a
    /// multi-port service whose ports map to other target ports): the same policy,
    /// routes, counters and metrics, balanced over that port's set.
    #[serde(rename = "port_endpoints", serialize_with = "views_endpoints")]
    pub(crate) port_views: Vec<(u16, Arc<Service>)>,
}

/// `/config` shows a port's own set, not the whole view again.
fn views_endpoints<S: serde::Serializer>(
    views: &[(u16, Arc<Service>)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(views.iter().map(|(port, view)| (port, &view.endpoints)))
}

impl Service {
    pub(crate) fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// The protocol hint for a destination port; `Detect` when the service says nothing.
    pub(crate) fn protocol(&self, port: u16) -> Protocol {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .or_else(|| (self.ports.len() == 1).then(|| &self.ports[0]))
            .map(|(_, proto)| *proto)
            .unwrap_or(Protocol::Detect)
    }

    /// This service as reached on `port`: balanced over that port's own endpoint set
    /// if it has one, else over the service's.
    pub(crate) fn for_port(self: &Arc<Self>, port: u16) -> &Arc<Service> {
        self.port_views
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(self, |(_, view)| view)
    }

    /// The service's port when it declares exactly one.
    pub(crate) fn sole_port(&self) -> Option<u16> {
        match self.ports.as_slice() {
            [(port, _)] => Some(*port),
            _ => None,
        }
    }

    /// The endpoint for the next request, by the service's balancer; `key` is the
    /// hash key for consistent hashing, `skip` an endpoint a retry moves away from.
    pub(crate) fn pick(&self, key: Option<u64>, skip: Option<usize>) -> Option<usize> {
        self.balancer.pick(&self.endpoints, key, skip)
    }

    /// `pick` at `now`, a `now_nanos()` reading the caller already has.
    pub(crate) fn pick_at(&self, key: Option<u64>, skip: Option<usize>, now: u64) -> Option<usize> {
        self.balancer.pick_at(&self.endpoints, key, skip, now)
    }

    /// The header consistent hashing hashes on, if the balancer hashes on one.
    pub(crate) fn hash_key(&self) -> Option<&HashKey> {
        match self.balancer.algorithm() {
            Algorithm::ConsistentHash(key) => Some(key),
            _ => None,
        }
    }

    /// Builds a service from a full-state update, validating everything first.
    pub(crate) fn from_update(
        update: &v1::ServiceUpdate,
        metrics: &Metrics,
        stats: &Registry,
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
        let svc_metrics = metrics.service(Direction::Outbound, &name);
        let endpoints = match &update.endpoints {
            Some(v1::service_update::Endpoints::Full(set)) => set
                .endpoints
                .iter()
                .map(|e| {
                    endpoint_from_proto(e, &name, stats, &svc_metrics)
                        .map(Arc::new)
                        .map_err(&err)
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(v1::service_update::Endpoints::Delta(_)) => {
                return Err(err("a delta needs a base; use Service::apply_delta".into()));
            }
            None => Vec::new(),
        };
        let mut port_sets = Vec::with_capacity(update.port_endpoints.len());
        for pe in &update.port_endpoints {
            let port = u16::try_from(pe.port)
                .ok()
                .filter(|p| ports.iter().any(|(declared, _)| declared == p))
                .ok_or_else(|| err(format!("endpoints for port {}, not a port of it", pe.port)))?;
            if port_sets.iter().any(|(p, _)| *p == port) {
                return Err(err(format!("port {port} has two endpoint sets")));
            }
            let set = pe
                .endpoints
                .iter()
                .flat_map(|set| &set.endpoints)
                .map(|e| {
                    endpoint_from_proto(e, &name, stats, &svc_metrics)
                        .map(Arc::new)
                        .map_err(&err)
                })
                .collect::<Result<Vec<_>, _>>()?;
            port_sets.push((port, set));
        }
        let policy = policy_from_proto(&update.policy.clone().unwrap_or_default()).map_err(err)?;
        let routes = Routes::compile(&update.routes, &name, metrics, stats).map_err(err)?;
        let mut svc = Service::assemble(
            info,
            update.version,
            vips,
            ports,
            endpoints,
            policy,
            Arc::new(routes),
            metrics,
            stats,
        );
        svc.port_views = port_sets
            .into_iter()
            .map(|(port, set)| (port, Arc::new(svc.view(set))))
            .collect();
        Ok(svc)
    }

    /// This service balanced over `endpoints` instead of its own set.
    fn view(&self, endpoints: Vec<Arc<Endpoint>>) -> Service {
        Service {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            version: self.version,
            vips: self.vips.clone(),
            ports: self.ports.clone(),
            balancer: Balancer::new(self.policy.load_balancer.clone(), &endpoints),
            endpoints,
            policy: self.policy.clone(),
            routes: self.routes.clone(),
            stats: self.stats.clone(),
            conn_limit: self.conn_limit.clone(),
            metrics: self.metrics.clone(),
            port_views: Vec::new(),
        }
    }

    /// Applies an add/remove delta on top of this service.
    pub(crate) fn apply_delta(
        &self,
        update: &v1::ServiceUpdate,
        delta: &v1::EndpointDelta,
        metrics: &Metrics,
        stats: &Registry,
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
            let ep = endpoint_from_proto(added, &key, stats, &self.metrics).map_err(&err)?;
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
        // A delta carries routes only when they changed.
        let routes = if update.routes.is_empty() {
            self.routes.clone()
        } else {
            Arc::new(Routes::compile(&update.routes, &key, metrics, stats).map_err(err)?)
        };
        let mut svc = Service::assemble(
            &info,
            update.version,
            self.vips.clone(),
            self.ports.clone(),
            endpoints,
            policy,
            routes,
            metrics,
            stats,
        );
        // The ports' own sets stay as they were, under the new policy and routes.
        svc.port_views = self
            .port_views
            .iter()
            .map(|(port, view)| (*port, Arc::new(svc.view(view.endpoints.clone()))))
            .collect();
        Ok(svc)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        info: &v1::ServiceInfo,
        version: u64,
        vips: Vec<IpAddr>,
        ports: Vec<(u16, Protocol)>,
        endpoints: Vec<Arc<Endpoint>>,
        policy: Policy,
        routes: Arc<Routes>,
        metrics: &Metrics,
        stats: &Registry,
    ) -> Service {
        let label = format!("{}.{}", info.name, info.namespace);
        let stats = stats.service(&label);
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
            routes,
            stats,
            metrics: metrics.service(Direction::Outbound, &label),
            port_views: Vec::new(),
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
    stats: &Registry,
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
        identity: (!e.identity.is_empty()).then(|| shared_identity(&e.identity)),
        labels: e.labels.clone().into_iter().collect(),
        state,
        stats: stats.endpoint(service, addr, svc_metrics),
    })
}

/// One `Arc` for a SPIFFE ID in every snapshot that names it. The pool finds a
/// request's open connection by endpoint and identity, comparing the identity's
/// pointer before its bytes: with an `Arc` of its own in each rebuilt snapshot,
/// every request to an endpoint already connected would compare the whole ID.
fn shared_identity(id: &str) -> Arc<str> {
    /// The IDs handed out, and the size at which the table is next pruned of the
    /// ones no snapshot holds any more.
    static IDS: LazyLock<Mutex<(HashSet<Arc<str>>, usize)>> =
        LazyLock::new(|| Mutex::new((HashSet::new(), 64)));
    let mut guard = lock(&IDS);
    let (ids, prune_at) = &mut *guard;
    if let Some(known) = ids.get(id) {
        return known.clone();
    }
    if ids.len() >= *prune_at {
        ids.retain(|i| Arc::strong_count(i) > 1);
        *prune_at = (ids.len() * 2).max(64);
    }
    let new: Arc<str> = Arc::from(id);
    ids.insert(new.clone());
    new
}

/// Every service the proxy knows, indexed the ways a destination can be named.
#[derive(Default, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) version: u64,
    pub(crate) services: HashMap<String, Arc<Service>>,
    #[serde(skip)]
    by_host: FastMap<String, Arc<Service>>,
    #[serde(skip)]
    by_vip: FastMap<SocketAddr, Arc<Service>>,
    #[serde(skip)]
    local_namespace: String,
}

impl Snapshot {
    pub(crate) fn empty(local_namespace: &str) -> Snapshot {
        Snapshot {
            local_namespace: local_namespace.to_string(),
            ..Snapshot::default()
        }
    }

    /// A snapshot holding exactly `services`.
    pub(crate) fn build(version: u64, local_namespace: &str, services: Vec<Service>) -> Snapshot {
        let mut snap = Snapshot::empty(local_namespace);
        snap.version = version;
        for svc in services {
            snap.services.insert(svc.key(), Arc::new(svc));
        }
        snap.reindex();
        snap
    }

    /// A copy of this snapshot with one service added, replaced or (None) removed.
    pub(crate) fn with_service(
        &self,
        version: u64,
        key: &str,
        svc: Option<Arc<Service>>,
    ) -> Snapshot {
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
                        .insert(SocketAddr::new(*vip, *port), svc.for_port(*port).clone());
                }
            }
        }
    }

    pub(crate) fn by_key(&self, key: &str) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// Resolves a service by a host name (as in a Host header, without the port).
    pub(crate) fn by_host(&self, host: &str) -> Option<&Arc<Service>> {
        let host = host.trim_end_matches('.');
        if let Some(s) = self.by_host.get(host) {
            return Some(s);
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.by_host.get(&host.to_ascii_lowercase());
        }
        None
    }

    pub(crate) fn by_vip(&self, addr: SocketAddr) -> Option<&Arc<Service>> {
        self.by_vip.get(&addr)
    }
}

/// Builds a snapshot from a whole mesh description (file mode).
pub(crate) fn from_mesh(
    mesh: &weft_api::mesh::MeshSpec,
    version: u64,
    local_namespace: &str,
    metrics: &Metrics,
    stats: &Registry,
) -> Result<Snapshot, UpdateError> {
    let services = mesh
        .services
        .iter()
        .map(|s| Service::from_update(&s.to_update(version), metrics, stats))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot::build(version, local_namespace, services))
}

pub(crate) fn store(snapshot: Snapshot) -> SnapshotStore {
    Arc::new(ArcSwap::from_pointee(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::mesh::MeshSpec;

    fn snapshot(yaml: &str) -> Snapshot {
        let mesh = MeshSpec::from_yaml(yaml, "t").expect("valid mesh");
        from_mesh(&mesh, 1, "default", &Metrics::new(), &Registry::default())
            .expect("valid snapshot")
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
        assert!(snap.by_vip("10.0.0.1:80".parse().expect("addr")).is_some());
        assert!(snap.by_vip("10.0.0.1:81".parse().expect("addr")).is_none());
    }

    #[test]
    fn snapshots_built_apart_share_one_arc_per_identity() {
        let yaml = "services:\n  - name: idd\n    endpoints:\n      - {address: '127.0.0.1:1', identity: 'spiffe://t/ns/a/sa/idd'}\n      - {address: '127.0.0.2:1', identity: 'spiffe://t/ns/a/sa/idd'}\n      - {address: '127.0.0.3:1', identity: 'spiffe://t/ns/a/sa/other'}\n";
        let (one, two) = (snapshot(yaml), snapshot(yaml));
        let ids = |snap: &Snapshot| -> Vec<Arc<str>> {
            let svc = snap.by_host("idd").expect("idd");
            svc.endpoints
                .iter()
                .map(|e| e.identity.clone().expect("an identity"))
                .collect()
        };
        let (a, b) = (ids(&one), ids(&two));
        assert!(Arc::ptr_eq(&a[0], &a[1]), "one ID, one Arc");
        assert!(Arc::ptr_eq(&a[0], &b[0]), "and across snapshots");
        assert_eq!(&*a[2], "spiffe://t/ns/a/sa/other");
        assert!(!Arc::ptr_eq(&a[0], &a[2]));
    }

    const TWO_PORTS: &str = "services:\n  - name: shop\n    vips: [10.0.0.1]\n    ports: [{port: 8080}, {port: 9090, target_port: 19090}, {port: 9100}]\n    endpoints: [{address: '127.0.0.1:18080'}, {address: '127.0.0.2:18080'}]\n";

    fn ports_of(svc: &Service) -> Vec<u16> {
        svc.endpoints.iter().map(|e| e.addr.port()).collect()
    }

    #[test]
    fn each_vip_port_reaches_its_own_endpoint_set_of_one_service() {
        let snap = snapshot(TWO_PORTS);
        let vip = |port| {
            snap.by_vip(SocketAddr::new([10, 0, 0, 1].into(), port))
                .expect("a VIP port of shop")
        };
        assert_eq!(ports_of(vip(8080)), [18080, 18080]);
        assert_eq!(ports_of(vip(9090)), [19090, 19090]);
        assert_eq!(ports_of(vip(9100)), [18080, 18080], "no set of its own");
        let by_name = snap.by_host("shop").expect("shop");
        assert_eq!(
            ports_of(by_name),
            [18080, 18080],
            "by name: the service's set"
        );
        assert_eq!(ports_of(by_name.for_port(9090)), [19090, 19090]);
        // One service: the same name, counters and metrics on every port.
        assert_eq!(vip(9090).key(), "shop.default");
        assert!(Arc::ptr_eq(&vip(9090).stats, &vip(8080).stats));
        assert!(Arc::ptr_eq(&vip(9090).metrics, &vip(8080).metrics));
        assert_eq!(snap.services.len(), 1);
        let idx = vip(9090).pick(None, None).expect("an endpoint");
        assert_eq!(vip(9090).endpoints[idx].addr.port(), 19090);
    }

    #[test]
    fn a_delta_keeps_the_ports_own_sets_and_bad_port_sets_are_rejected() {
        let snap = snapshot(TWO_PORTS);
        let svc = snap.by_host("shop").expect("shop");
        let delta = v1::EndpointDelta {
            base_version: 1,
            removed: vec![v1::SocketAddress {
                ip: "127.0.0.2".into(),
                port: 18080,
            }],
            ..Default::default()
        };
        let update = v1::ServiceUpdate {
            version: 2,
            ..Default::default()
        };
        let next = Arc::new(
            svc.apply_delta(&update, &delta, &Metrics::new(), &Registry::default())
                .expect("applies"),
        );
        assert_eq!(ports_of(&next), [18080]);
        assert_eq!(ports_of(next.for_port(9090)), [19090, 19090]);
        assert_eq!(next.for_port(9090).version, 2);

        let mesh = MeshSpec::from_yaml(TWO_PORTS, "t").expect("valid mesh");
        let mut update = mesh.services[0].to_update(1);
        update.port_endpoints[0].port = 7;
        let err = Service::from_update(&update, &Metrics::new(), &Registry::default())
            .expect_err("a set for an undeclared port");
        assert!(err.to_string().contains("port 7"), "{err}");
        let mut update = mesh.services[0].to_update(1);
        update.port_endpoints.push(update.port_endpoints[0].clone());
        assert!(Service::from_update(&update, &Metrics::new(), &Registry::default()).is_err());
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
            .apply_delta(&update, &delta, &Metrics::new(), &Registry::default())
            .expect("applies");
        assert_eq!(next.endpoints.len(), 1);
        assert_eq!(next.endpoints[0].addr.port(), 2);
        let stale = v1::EndpointDelta {
            base_version: 7,
            ..delta
        };
        assert!(
            svc.apply_delta(&update, &stale, &Metrics::new(), &Registry::default())
                .is_err()
        );
    }

    #[test]
    fn endpoint_state_survives_a_swap_and_a_policy_change_but_not_removal() {
        let metrics = Metrics::new();
        let stats = Registry::default();
        let build = |yaml: &str| {
            let mesh = MeshSpec::from_yaml(yaml, "t").expect("valid mesh");
            from_mesh(&mesh, 1, "default", &metrics, &stats).expect("valid snapshot")
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
            stats.endpoints_held(),
            2,
            "the endpoint that left has no state any more"
        );
    }
}
