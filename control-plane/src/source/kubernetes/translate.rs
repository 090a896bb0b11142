//! Kubernetes objects in, one [`MeshSpec`] out. Pure (no I/O), so every rule here is
//! tested on objects as the API server sends them.
//!
//! Rules:
//! - A Service (not `ExternalName`) becomes the mesh service `name` in its namespace,
//!   reachable by name (`name`, `name.ns`, `name.ns.svc.<domain>`) and by each cluster IP
//!   and port. Headless Services have no VIPs and are reachable by name only.
//! - Each TCP port of a Service is a port of that one mesh service, with its own
//!   endpoint set when its endpoints differ from the first port's (ports may map to
//!   different target ports): a connection to cluster IP and port `p` is balanced
//!   over `p`'s set. By name, the service means its first port.
//! - Endpoints come from the EndpointSlices labelled `kubernetes.io/service-name`, at
//!   the port the slice resolved for each Service port (by port name). Ready endpoints
//!   serve; serving-and-terminating ones drain; the rest are left out. An endpoint in
//!   several slices (slices being rebalanced) appears once, in its best state.
//! - An endpoint's identity is the SPIFFE ID of its Pod's ServiceAccount, but only
//!   for pods with a `weft-proxy` container: an uninjected pod cannot present a mesh
//!   certificate, so its callers talk plaintext to it.
//! - A TrafficPolicy or InboundAuthorization that is invalid, or that conflicts with
//!   an older one for the same Service / ServiceAccount, is rejected alone: its last
//!   good translation keeps applying if it had one, and the rest of the mesh is
//!   published as usual.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use weft_api::mesh::{
    CircuitBreakerSpec, DurationSpec, EndpointSpec, EndpointStateSpec, FailureClassSpec,
    HashKeySpec, InboundPortSpec, LoadBalancerSpec, MeshSpec, Name, OutlierSpec, Percent,
    PolicySpec, PortSpec, ProtocolSpec, RetrySpec, ServiceSpec, SpiffeId, TimeoutsSpec,
    TlsModeSpec, Weight, WorkloadSpec,
};

use super::crd::{
    FailureClass, InboundAuthorizationSpec, LoadBalancer, TlsMode, TrafficPolicySpec,
};
use super::routes::{self, RouteKind, RouteStatus};

/// The container the injector adds (`weft_inject::inject::PROXY_CONTAINER`).
pub const PROXY_CONTAINER: &str = "weft-proxy";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The endpoint label carrying the EndpointSlice's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One consistent read of every watched kind.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub services: Vec<Arc<Service>>,
    pub slices: Vec<Arc<EndpointSlice>>,
    pub pods: Vec<Arc<Pod>>,
    /// `TrafficPolicy` objects, untyped: each is parsed alone (see `spec_of`).
    pub traffic_policies: Vec<Arc<DynamicObject>>,
    /// `InboundAuthorization` objects.
    pub inbound_authorizations: Vec<Arc<DynamicObject>>,
    /// Gateway API `HTTPRoute` and `GRPCRoute` objects (none when the CRDs are not
    /// installed).
    pub http_routes: Vec<Arc<DynamicObject>>,
    pub grpc_routes: Vec<Arc<DynamicObject>>,
    /// Gateway API `Gateway` and `GatewayClass` objects: routes' Gateway parents.
    pub gateways: Vec<Arc<DynamicObject>>,
    pub gateway_classes: Vec<Arc<DynamicObject>>,
}

/// Names one object in logs: `TrafficPolicy shop/payments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl ObjectKey {
    fn of(kind: &'static str, meta: &ObjectMeta) -> Self {
        ObjectKey {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// An object the mesh does not follow, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub object: ObjectKey,
    pub reason: String,
    /// Whether the object's last good translation still applies.
    pub kept_last_good: bool,
}

/// The result of one translation.
#[derive(Debug)]
pub struct Translation {
    /// The mesh, or why it failed the final validation.
    pub mesh: Result<MeshSpec, String>,
    /// Objects rejected in this version for the first time (each object version is
    /// reported once, however often the mesh is rebuilt).
    pub new_rejections: Vec<Rejection>,
    /// How many objects are rejected now.
    pub rejected: usize,
    /// The status Weft gives each Gateway API route with a Service parent.
    pub route_statuses: Vec<RouteStatus>,
}

/// Turns objects into meshes, remembering the last good translation of each policy
/// object so that a bad edit does not take an existing policy away.
#[derive(Debug)]
pub struct Translator {
    trust_domain: String,
    /// Per object: the target it names and its last valid translation.
    last_good_policies: HashMap<ObjectKey, (String, PolicySpec)>,
    last_good_workloads: HashMap<ObjectKey, (String, WorkloadSpec)>,
    /// Rejected objects and the resourceVersion they were reported at.
    reported: HashMap<ObjectKey, String>,
}

impl Translator {
    pub fn new(trust_domain: impl Into<String>) -> Self {
        Translator {
            trust_domain: trust_domain.into(),
            last_good_policies: HashMap::new(),
            last_good_workloads: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    pub fn translate(&mut self, objects: &Objects) -> Translation {
        let mut rejections: Vec<(Rejection, String)> = Vec::new();
        let policies = resolve(
            "TrafficPolicy",
            "Service",
            &objects.traffic_policies,
            &mut self.last_good_policies,
            |_, object| {
                let spec = spec_of::<TrafficPolicySpec>(object)?;
                Ok((spec.target_ref.name.clone(), policy_spec(&spec)?))
            },
            &mut rejections,
        );
        let mut services = self.services(objects, &policies, &mut rejections);
        let route_objects: Vec<(RouteKind, Arc<DynamicObject>)> = objects
            .http_routes
            .iter()
            .map(|o| (RouteKind::Http, Arc::clone(o)))
            .chain(
                objects
                    .grpc_routes
                    .iter()
                    .map(|o| (RouteKind::Grpc, Arc::clone(o))),
            )
            .collect();
        let gateways = routes::Gateways::of(&objects.gateways, &objects.gateway_classes);
        let route_statuses = routes::attach(&route_objects, &gateways, &mut services);
        let workloads = resolve(
            "InboundAuthorization",
            "ServiceAccount",
            &objects.inbound_authorizations,
            &mut self.last_good_workloads,
            |namespace, object| {
                let spec = spec_of::<InboundAuthorizationSpec>(object)?;
                Ok((
                    spec.service_account_name.clone(),
                    workload_spec(namespace, &spec)?,
                ))
            },
            &mut rejections,
        )
        .into_values()
        .collect();
        let mesh = MeshSpec {
            services,
            workloads,
        };
        // Each part was validated alone above, so a failure here is a bug, not bad
        // input; the caller keeps the last state rather than serve this one.
        let mesh = match mesh.validate() {
            Ok(()) => Ok(mesh),
            Err(error) => Err(error.to_string()),
        };
        let rejected = rejections.len();
        let mut still = HashMap::with_capacity(rejected);
        let mut new_rejections = Vec::new();
        for (rejection, version) in rejections {
            if self.reported.get(&rejection.object) != Some(&version) {
                new_rejections.push(rejection.clone());
            }
            still.insert(rejection.object, version);
        }
        self.reported = still;
        Translation {
            mesh,
            new_rejections,
            rejected,
            route_statuses,
        }
    }

    fn services(
        &self,
        objects: &Objects,
        policies: &BTreeMap<(String, String), PolicySpec>,
        rejections: &mut Vec<(Rejection, String)>,
    ) -> Vec<ServiceSpec> {
        let pods: HashMap<(&str, &str), &Pod> = objects
            .pods
            .iter()
            .filter_map(|p| {
                Some((
                    (
                        p.metadata.namespace.as_deref()?,
                        p.metadata.name.as_deref()?,
                    ),
                    p.as_ref(),
                ))
            })
            .collect();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in &objects.slices {
            let labels = slice.metadata.labels.as_ref();
            if let (Some(ns), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) {
                slices
                    .entry((ns, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        let mut sorted: Vec<&Service> = objects.services.iter().map(|s| s.as_ref()).collect();
        sorted.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut used_vips: HashMap<(IpAddr, u16), ObjectKey> = HashMap::new();
        let mut out = Vec::with_capacity(sorted.len());
        for service in sorted {
            let key = ObjectKey::of("Service", &service.metadata);
            let version = service
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            let own_slices = slices
                .get(&(key.namespace.as_str(), key.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let policy = policies
                .get(&(key.namespace.clone(), key.name.clone()))
                .cloned()
                .unwrap_or_default();
            let spec = match self.service(service, own_slices, &pods) {
                Ok(spec) => spec,
                Err(reason) => {
                    let rejection = Rejection {
                        object: key,
                        reason,
                        kept_last_good: false,
                    };
                    rejections.push((rejection, version));
                    continue;
                }
            };
            if let Some(mut spec) = spec {
                spec.policy = policy;
                // Two Services cannot share a cluster IP in a real cluster; if objects
                // say so anyway (a stale cache), the first claim keeps the address.
                let clash = spec.vips.iter().find_map(|vip| {
                    spec.ports.iter().find_map(|p| {
                        used_vips
                            .get(&(*vip, p.port))
                            .map(|owner| (*vip, p.port, owner))
                    })
                });
                if let Some((vip, port, owner)) = clash {
                    rejections.push((
                        Rejection {
                            object: key.clone(),
                            reason: format!(
                                "{vip}:{port} is already {owner}'s; serving it by name only"
                            ),
                            kept_last_good: false,
                        },
                        version.clone(),
                    ));
                    spec.vips.clear();
                }
                for vip in &spec.vips {
                    for port in &spec.ports {
                        used_vips.insert((*vip, port.port), key.clone());
                    }
                }
                out.push(spec);
            }
        }
        out
    }

    /// The mesh service of one Service (none if the mesh does not serve it): every TCP
    /// port, the first one's endpoints as the service's, and a port's own set where
    /// it differs from those.
    fn service(
        &self,
        service: &Service,
        slices: &[&EndpointSlice],
        pods: &HashMap<(&str, &str), &Pod>,
    ) -> Result<Option<ServiceSpec>, String> {
        let Some(spec) = service.spec.as_ref() else {
            return Ok(None);
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            return Ok(None);
        }
        let name = name(service.metadata.name.clone())?;
        let namespace = name_of_namespace(service.metadata.namespace.clone())?;
        let mut cluster_ips: Vec<&String> = spec.cluster_ips.iter().flatten().collect();
        if cluster_ips.is_empty() {
            cluster_ips.extend(spec.cluster_ip.as_ref());
        }
        let mut vips = Vec::new();
        for ip in cluster_ips {
            if ip.is_empty() || ip == "None" {
                continue;
            }
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("cluster IP {ip:?} is not an IP address"))?;
            if !vips.contains(&ip) {
                vips.push(ip);
            }
        }
        let ports: Vec<_> = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| is_tcp(p.protocol.as_deref()))
            .collect();
        if ports.is_empty() {
            // No TCP port: nothing to mesh, but the name still resolves (to no
            // endpoints), so callers by name learn the service exists.
            return Ok(Some(ServiceSpec {
                name,
                namespace,
                vips: Vec::new(),
                ports: Vec::new(),
                endpoints: Vec::new(),
                policy: PolicySpec::default(),
                routes: Vec::new(),
            }));
        }
        let mut mesh_ports = Vec::with_capacity(ports.len());
        let mut endpoints = None;
        for service_port in ports {
            let port = u16::try_from(service_port.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {} is out of range", service_port.port))?;
            let port_name = service_port.name.clone().unwrap_or_default();
            let mut mesh_port = PortSpec::new(
                port,
                port_name.clone(),
                protocol_hint(service_port.app_protocol.as_deref()),
            );
            let own = self.endpoints(&port_name, slices, pods);
            match &endpoints {
                None => endpoints = Some(own),
                Some(first) if *first == own => {}
                Some(_) => mesh_port.endpoints = Some(own),
            }
            mesh_ports.push(mesh_port);
        }
        Ok(Some(ServiceSpec {
            name,
            namespace,
            vips,
            ports: mesh_ports,
            endpoints: endpoints.unwrap_or_default(),
            policy: PolicySpec::default(),
            routes: Vec::new(),
        }))
    }

    /// The endpoints of one Service port (by name, as EndpointSlices list them), in
    /// address order.
    fn endpoints(
        &self,
        port_name: &str,
        slices: &[&EndpointSlice],
        pods: &HashMap<(&str, &str), &Pod>,
    ) -> Vec<EndpointSpec> {
        let mut endpoints: BTreeMap<SocketAddr, EndpointSpec> = BTreeMap::new();
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let Some(target_port) = slice.ports.iter().flatten().find_map(|p| {
                let same_name = p.name.as_deref().unwrap_or_default() == port_name;
                (same_name && is_tcp(p.protocol.as_deref()))
                    .then_some(p.port)
                    .flatten()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
            }) else {
                continue;
            };
            let slice_namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
            for endpoint in &slice.endpoints {
                let Some(state) = endpoint_state(endpoint) else {
                    continue;
                };
                // The addresses of one endpoint are fungible; the API says to use the
                // first.
                let Some(ip) = endpoint
                    .addresses
                    .first()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                else {
                    continue;
                };
                let address = SocketAddr::new(ip, target_port);
                match endpoints.get(&address) {
                    Some(seen) if rank(seen.state) >= rank(state) => {}
                    _ => {
                        let candidate = EndpointSpec {
                            address,
                            weight: Weight::default(),
                            identity: self.identity(endpoint, slice_namespace, pods),
                            labels: endpoint
                                .zone
                                .iter()
                                .map(|z| (ZONE_LABEL.to_string(), z.clone()))
                                .collect(),
                            state,
                        };
                        endpoints.insert(address, candidate);
                    }
                }
            }
        }
        endpoints.into_values().collect()
    }

    /// The SPIFFE ID an endpoint must present: its Pod's ServiceAccount, if the Pod
    /// runs Weft's proxy.
    fn identity(
        &self,
        endpoint: &Endpoint,
        slice_namespace: &str,
        pods: &HashMap<(&str, &str), &Pod>,
    ) -> Option<SpiffeId> {
        let target = endpoint.target_ref.as_ref()?;
        if target.kind.as_deref() != Some("Pod") {
            return None;
        }
        let namespace = target.namespace.as_deref().unwrap_or(slice_namespace);
        let pod = pods.get(&(namespace, target.name.as_deref()?))?;
        let spec = pod.spec.as_ref()?;
        let injected = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER);
        if !injected {
            return None;
        }
        let account = spec
            .service_account_name
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or("default");
        let id = weft_api::spiffe::SpiffeId::new(&self.trust_domain, namespace, account).ok()?;
        SpiffeId::try_from(id.to_string()).ok()
    }
}

/// The effective translation of each target (namespace, name) of one kind of policy
/// object. An object applies with its own translation if valid, else with its last
/// good one; the oldest object naming a target wins it, later ones are rejected.
fn resolve<T: Clone>(
    kind: &'static str,
    target_kind: &str,
    objects: &[Arc<DynamicObject>],
    last_good: &mut HashMap<ObjectKey, (String, T)>,
    translate: impl Fn(&str, &DynamicObject) -> Result<(String, T), String>,
    rejections: &mut Vec<(Rejection, String)>,
) -> BTreeMap<(String, String), T> {
    let mut sorted: Vec<&DynamicObject> = objects.iter().map(|o| o.as_ref()).collect();
    sorted.sort_by_key(|o| age_order(&o.metadata));
    let present: HashSet<ObjectKey> = sorted
        .iter()
        .map(|o| ObjectKey::of(kind, &o.metadata))
        .collect();
    last_good.retain(|k, _| present.contains(k));
    let mut claimed: BTreeMap<(String, String), (T, ObjectKey)> = BTreeMap::new();
    for object in sorted {
        let key = ObjectKey::of(kind, &object.metadata);
        let version = object.metadata.resource_version.clone().unwrap_or_default();
        let (effective, failure) = match translate(&key.namespace, object) {
            Ok(translated) => {
                last_good.insert(key.clone(), translated.clone());
                (Some(translated), None)
            }
            Err(reason) => (last_good.get(&key).cloned(), Some(reason)),
        };
        let Some((target, value)) = effective else {
            let reason = failure.unwrap_or_default();
            let rejection = Rejection {
                object: key,
                reason,
                kept_last_good: false,
            };
            rejections.push((rejection, version));
            continue;
        };
        let target = (key.namespace.clone(), target);
        if let Some((_, owner)) = claimed.get(&target) {
            let rejection = Rejection {
                reason: format!(
                    "{target_kind} {} already has {owner}, which is older",
                    target.1
                ),
                object: key,
                kept_last_good: false,
            };
            rejections.push((rejection, version));
            continue;
        }
        if let Some(reason) = failure {
            let rejection = Rejection {
                object: key.clone(),
                reason,
                kept_last_good: true,
            };
            rejections.push((rejection, version));
        }
        claimed.insert(target, (value, key));
    }
    claimed.into_iter().map(|(k, (v, _))| (k, v)).collect()
}

/// A custom resource's `spec` as its Rust type. The API server has checked it against
/// the CRD's schema, but a CRD older or newer than this control plane may allow what
/// the types do not, and that must reject this object only.
fn spec_of<T: DeserializeOwned>(object: &DynamicObject) -> Result<T, String> {
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))
}

/// Older objects win conflicts (as in the Gateway API); the name breaks ties.
fn age_order(meta: &ObjectMeta) -> (Option<Time>, Option<String>, Option<String>) {
    (
        meta.creation_timestamp.clone(),
        meta.namespace.clone(),
        meta.name.clone(),
    )
}

fn is_tcp(protocol: Option<&str>) -> bool {
    matches!(protocol, None | Some("TCP"))
}

fn name(value: Option<String>) -> Result<Name, String> {
    Name::try_from(value.unwrap_or_default())
}

fn name_of_namespace(value: Option<String>) -> Result<Name, String> {
    Name::try_from(value.unwrap_or_else(|| "default".to_string()))
}

/// Ready serves; serving while terminating drains; anything else takes no traffic.
/// Absent conditions mean ready (the EndpointSlice API's rule for unknown state), and
/// an absent `serving` follows `ready`.
pub fn endpoint_state(endpoint: &Endpoint) -> Option<EndpointStateSpec> {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    match (ready, serving, terminating) {
        (_, true, true) => Some(EndpointStateSpec::Terminating),
        (true, _, false) => Some(EndpointStateSpec::Ready),
        _ => None,
    }
}

fn rank(state: EndpointStateSpec) -> u8 {
    match state {
        EndpointStateSpec::Ready => 2,
        EndpointStateSpec::Terminating => 1,
        EndpointStateSpec::NotReady => 0,
    }
}

/// A Service port's `appProtocol` as a protocol hint. Standard names
/// (`kubernetes.io/h2c`, IANA service names) and common ones are known; anything else
/// lets the proxy detect the protocol.
pub fn protocol_hint(app_protocol: Option<&str>) -> ProtocolSpec {
    let Some(value) = app_protocol else {
        return ProtocolSpec::Detect;
    };
    match value.to_ascii_lowercase().as_str() {
        "http" | "http1" | "http/1.1" | "kubernetes.io/ws" => ProtocolSpec::Http1,
        "kubernetes.io/h2c" | "h2c" | "http2" => ProtocolSpec::Http2,
        "grpc" | "grpc-web" => ProtocolSpec::Grpc,
        // TLS from the app, and protocols where the server speaks first (sniffing
        // would wait for bytes the client never sends first).
        "tcp" | "https" | "tls" | "kubernetes.io/wss" | "mysql" | "postgres" | "postgresql"
        | "redis" | "mongo" | "mongodb" | "kafka" | "amqp" | "amqps" | "nats" | "smtp" | "ftp"
        | "ssh" | "zookeeper" | "cassandra" => ProtocolSpec::Opaque,
        _ => ProtocolSpec::Detect,
    }
}

fn duration(field: &str, value: &Option<String>) -> Result<Option<DurationSpec>, String> {
    value
        .as_ref()
        .map(|v| DurationSpec::try_from(v.clone()).map_err(|e| format!("{field}: {e}")))
        .transpose()
}

/// A TrafficPolicy's spec as the mesh's policy, checked as `MeshSpec::validate` checks
/// a file's.
pub fn policy_spec(spec: &TrafficPolicySpec) -> Result<PolicySpec, String> {
    if spec.target_ref.kind != "Service" || !spec.target_ref.group.is_empty() {
        return Err(format!(
            "targetRef must be a Service (group \"\"), not {}/{}",
            spec.target_ref.group, spec.target_ref.kind
        ));
    }
    let target =
        name(Some(spec.target_ref.name.clone())).map_err(|e| format!("targetRef.name: {e}"))?;
    let circuit_breaker = match &spec.circuit_breaker {
        None => None,
        Some(cb) => Some(CircuitBreakerSpec {
            max_connections: cb.max_connections.unwrap_or(0),
            max_pending_requests: cb.max_pending_requests.unwrap_or(0),
            max_active_requests: cb.max_active_requests.unwrap_or(0),
            max_concurrent_retries: cb.max_concurrent_retries.unwrap_or(0),
            outlier_detection: match &cb.outlier_detection {
                None => None,
                Some(o) => Some(OutlierSpec {
                    consecutive_failures: o.consecutive_failures,
                    base_ejection: duration(
                        "circuitBreaker.outlierDetection.baseEjection",
                        &o.base_ejection,
                    )?,
                    max_ejection: duration(
                        "circuitBreaker.outlierDetection.maxEjection",
                        &o.max_ejection,
                    )?,
                    max_ejected_percent: o
                        .max_ejected_percent
                        .map(Percent::try_from)
                        .transpose()
                        .map_err(|e| {
                        format!("circuitBreaker.outlierDetection.maxEjectedPercent: {e}")
                    })?,
                    failure_on: o
                        .failure_on
                        .iter()
                        .map(|f| match f {
                            FailureClass::ServerError => FailureClassSpec::ServerError,
                            FailureClass::Gateway => FailureClassSpec::Gateway,
                            FailureClass::Connect => FailureClassSpec::Connect,
                            FailureClass::Grpc => FailureClassSpec::Grpc,
                        })
                        .collect(),
                    grpc_codes: o.grpc_codes.clone(),
                }),
            },
        }),
    };
    let retry = match &spec.retry {
        None => None,
        Some(r) => Some(RetrySpec {
            max_attempts: r.max_attempts.unwrap_or(0),
            retry_on_status: r.retry_on_status.clone(),
            retry_on_grpc: r.retry_on_grpc.clone(),
            budget_ratio: r.budget_ratio,
            min_retries_per_second: r.min_retries_per_second,
            backoff_base: duration("retry.backoffBase", &r.backoff_base)?,
            backoff_max: duration("retry.backoffMax", &r.backoff_max)?,
            max_buffered_body_bytes: r.max_buffered_body_bytes,
        }),
    };
    let timeouts = match &spec.timeouts {
        None => None,
        Some(t) => Some(TimeoutsSpec {
            request: duration("timeouts.request", &t.request)?,
            per_try: duration("timeouts.perTry", &t.per_try)?,
            connect: duration("timeouts.connect", &t.connect)?,
            idle: duration("timeouts.idle", &t.idle)?,
        }),
    };
    let policy = PolicySpec {
        load_balancer: spec.load_balancer.map(|lb| match lb {
            LoadBalancer::P2cPeakEwma => LoadBalancerSpec::P2cPeakEwma,
            LoadBalancer::RoundRobin => LoadBalancerSpec::RoundRobin,
            LoadBalancer::LeastRequest => LoadBalancerSpec::LeastRequest,
            LoadBalancer::ConsistentHash => LoadBalancerSpec::ConsistentHash,
        }),
        hash_key: spec.hash_key.as_ref().map(|k| HashKeySpec {
            header: k.header.clone(),
            client_identity: k.client_identity.unwrap_or(false),
        }),
        circuit_breaker,
        retry,
        timeouts,
    };
    // The cross-field rules live in one place, MeshSpec::validate.
    let probe = MeshSpec {
        services: vec![ServiceSpec {
            name: target,
            namespace: name(Some("default".into()))?,
            vips: Vec::new(),
            ports: Vec::new(),
            endpoints: Vec::new(),
            policy,
            routes: Vec::new(),
        }],
        workloads: Vec::new(),
    };
    probe
        .validate()
        .map_err(|e| e.to_string().replace("services[0].policy.", ""))?;
    probe
        .services
        .into_iter()
        .next()
        .map(|s| s.policy)
        .ok_or_else(|| "no policy".to_string())
}

/// An InboundAuthorization's spec as the mesh's workload policy.
pub fn workload_spec(
    namespace: &str,
    spec: &InboundAuthorizationSpec,
) -> Result<WorkloadSpec, String> {
    let service_account = name(Some(spec.service_account_name.clone()))
        .map_err(|e| format!("serviceAccountName: {e}"))?;
    let mut inbound = Vec::with_capacity(spec.ports.len());
    for (i, p) in spec.ports.iter().enumerate() {
        let mode = match p.mode {
            Some(TlsMode::Permissive) => TlsModeSpec::Permissive,
            Some(TlsMode::Strict) | None => TlsModeSpec::Strict,
        };
        let auth = p.authorization.clone().unwrap_or_default();
        if auth.allow_unauthenticated == Some(true) && mode != TlsModeSpec::Permissive {
            return Err(format!(
                "ports[{i}]: allowUnauthenticated is only meaningful in permissive mode"
            ));
        }
        let allow_identities = auth
            .allow_identities
            .into_iter()
            .map(SpiffeId::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ports[{i}].authorization.allowIdentities: {e}"))?;
        let allow_namespaces = auth
            .allow_namespaces
            .into_iter()
            .map(Name::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ports[{i}].authorization.allowNamespaces: {e}"))?;
        inbound.push(InboundPortSpec {
            port: p.port,
            mode,
            allow_identities,
            allow_namespaces,
            allow_any_meshed: auth.allow_any_meshed,
            allow_unauthenticated: auth.allow_unauthenticated,
        });
    }
    let workload = WorkloadSpec {
        namespace: name(Some(namespace.to_string())).map_err(|e| format!("namespace: {e}"))?,
        service_account,
        inbound,
    };
    MeshSpec {
        services: Vec::new(),
        workloads: vec![workload.clone()],
    }
    .validate()
    .map_err(|e| e.to_string().replace("workloads[0].inbound", "ports"))?;
    Ok(workload)
}
