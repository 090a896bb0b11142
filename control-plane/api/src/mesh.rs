//! The mesh description: services, their endpoints and traffic policy, as operators
//! write it in YAML. The proxy's file mode and the control plane's file source both
//! parse it here, so a file valid for one is valid for the other.
//!
//! Values are validated while they are parsed (newtypes with `TryFrom`), so a bad
//! value is reported with the YAML line and column it came from. Checks across
//! values (duplicates) name the field path instead.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::route::RouteSpec;
use crate::v1;

/// Default endpoint weight; weights are relative, so 100 leaves room both ways.
pub const DEFAULT_WEIGHT: u32 = 100;
pub const MAX_WEIGHT: u32 = 10_000;
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{0}")]
    Parse(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Inbound policy per workload (namespace + service account), served by
    /// `Policy.WatchInbound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadSpec>,
}

/// Who may call one workload, per port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    #[serde(default = "default_namespace")]
    pub namespace: Name,
    pub service_account: Name,
    #[serde(default)]
    pub inbound: Vec<InboundPortSpec>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsModeSpec {
    #[default]
    Strict,
    Permissive,
}

/// One port's inbound policy; port 0 (the default) applies to ports not listed.
/// Naming identities or namespaces means "only these"; naming none, any meshed caller.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InboundPortSpec {
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub mode: TlsModeSpec,
    #[serde(default)]
    pub allow_identities: Vec<SpiffeId>,
    #[serde(default)]
    pub allow_namespaces: Vec<Name>,
    #[serde(default)]
    pub allow_any_meshed: Option<bool>,
    /// Plaintext callers in permissive mode; default: allowed in permissive mode.
    #[serde(default)]
    pub allow_unauthenticated: Option<bool>,
}

impl WorkloadSpec {
    pub fn to_policy(&self, version: u64) -> v1::InboundPolicy {
        v1::InboundPolicy {
            version,
            ports: self
                .inbound
                .iter()
                .map(|p| {
                    let named = !p.allow_identities.is_empty() || !p.allow_namespaces.is_empty();
                    let permissive = p.mode == TlsModeSpec::Permissive;
                    v1::PortPolicy {
                        port: u32::from(p.port),
                        mode: if permissive {
                            v1::TlsMode::Permissive as i32
                        } else {
                            v1::TlsMode::Strict as i32
                        },
                        authorization: Some(v1::Authorization {
                            allow_identities: p
                                .allow_identities
                                .iter()
                                .map(|i| i.as_str().to_string())
                                .collect(),
                            allow_namespaces: p
                                .allow_namespaces
                                .iter()
                                .map(|n| n.as_str().to_string())
                                .collect(),
                            allow_any_meshed: p.allow_any_meshed.unwrap_or(!named),
                            allow_unauthenticated: p.allow_unauthenticated.unwrap_or(permissive),
                        }),
                    }
                })
                .collect(),
            trust_bundle: None,
            app_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: Name,
    #[serde(default = "default_namespace")]
    pub namespace: Name,
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub policy: PolicySpec,
    /// Tried in order; a request that matches none goes to this service as if it
    /// had no routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteSpec>,
}

/// One port of a service. A connection to a VIP on this port goes to the service's
/// `endpoints` as they are, unless the port names where its connections go instead:
/// the same endpoints at `target_port`, or its own `endpoints` (when the target port
/// differs between endpoints, as a Kubernetes named targetPort may).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<EndpointSpec>>,
}

impl PortSpec {
    /// A port whose connections go to the service's endpoints as they are.
    pub fn new(port: u16, name: impl Into<String>, protocol: ProtocolSpec) -> Self {
        PortSpec {
            port,
            name: name.into(),
            protocol,
            target_port: None,
            endpoints: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolSpec {
    #[default]
    Detect,
    Http1,
    Http2,
    Grpc,
    Opaque,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    #[serde(default)]
    pub weight: Weight,
    #[serde(default)]
    pub identity: Option<SpiffeId>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub state: EndpointStateSpec,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointStateSpec {
    #[default]
    Ready,
    NotReady,
    Terminating,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// What `consistent-hash` hashes on.
    #[serde(default)]
    pub hash_key: Option<HashKeySpec>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub timeouts: Option<TimeoutsSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancerSpec {
    P2cPeakEwma,
    RoundRobin,
    LeastRequest,
    ConsistentHash,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HashKeySpec {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub client_identity: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    #[serde(default)]
    pub max_connections: u32,
    #[serde(default)]
    pub max_pending_requests: u32,
    #[serde(default)]
    pub max_active_requests: u32,
    #[serde(default)]
    pub max_concurrent_retries: u32,
    #[serde(default)]
    pub outlier_detection: Option<OutlierSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierSpec {
    pub consecutive_failures: u32,
    #[serde(default)]
    pub base_ejection: Option<DurationSpec>,
    #[serde(default)]
    pub max_ejection: Option<DurationSpec>,
    #[serde(default)]
    pub max_ejected_percent: Option<Percent>,
    #[serde(default)]
    pub failure_on: Vec<FailureClassSpec>,
    #[serde(default)]
    pub grpc_codes: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClassSpec {
    #[serde(rename = "5xx")]
    ServerError,
    Gateway,
    Connect,
    Grpc,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default)]
    pub max_attempts: u32,
    #[serde(default)]
    pub retry_on_status: Vec<u16>,
    #[serde(default)]
    pub retry_on_grpc: Vec<u32>,
    #[serde(default)]
    pub budget_ratio: Option<f64>,
    #[serde(default)]
    pub min_retries_per_second: Option<u32>,
    #[serde(default)]
    pub backoff_base: Option<DurationSpec>,
    #[serde(default)]
    pub backoff_max: Option<DurationSpec>,
    #[serde(default)]
    pub max_buffered_body_bytes: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    #[serde(default)]
    pub request: Option<DurationSpec>,
    #[serde(default)]
    pub per_try: Option<DurationSpec>,
    #[serde(default)]
    pub connect: Option<DurationSpec>,
    #[serde(default)]
    pub idle: Option<DurationSpec>,
}

fn default_namespace() -> Name {
    Name(DEFAULT_NAMESPACE.to_string())
}

/// A DNS-1123 label: what Kubernetes allows for service and namespace names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Name(s))
        } else {
            Err(format!(
                "invalid name {s:?}: use 1-63 lowercase letters, digits and '-', not starting or ending with '-'"
            ))
        }
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<trust-domain>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId(String);

impl SpiffeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("invalid SPIFFE ID {s:?}: must start with spiffe://"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| {
            format!("invalid SPIFFE ID {s:?}: needs a path after the trust domain")
        })?;
        if domain.is_empty() || path.is_empty() || s.contains(['?', '#', ' ']) {
            return Err(format!("invalid SPIFFE ID {s:?}"));
        }
        Ok(SpiffeId(s))
    }
}

impl From<SpiffeId> for String {
    fn from(n: SpiffeId) -> String {
        n.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Weight(u32);

impl Weight {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Weight(DEFAULT_WEIGHT)
    }
}

impl TryFrom<u32> for Weight {
    type Error = String;
    fn try_from(w: u32) -> Result<Self, String> {
        if (1..=MAX_WEIGHT).contains(&w) {
            Ok(Weight(w))
        } else {
            Err(format!("weight {w} out of range 1..={MAX_WEIGHT}"))
        }
    }
}

impl From<Weight> for u32 {
    fn from(w: Weight) -> u32 {
        w.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Percent(u32);

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(p: u32) -> Result<Self, String> {
        if p <= 100 {
            Ok(Percent(p))
        } else {
            Err(format!("percentage {p} is over 100"))
        }
    }
}

impl From<Percent> for u32 {
    fn from(p: Percent) -> u32 {
        p.0
    }
}

/// A duration written the way operators write them: `250ms`, `5s`, `1m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct DurationSpec(pub Duration);

impl TryFrom<String> for DurationSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(DurationSpec)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. 250ms, 5s, 1m"))
    }
}

impl From<DurationSpec> for String {
    fn from(d: DurationSpec) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

pub(crate) fn millis(d: Option<DurationSpec>) -> u64 {
    d.map(|d| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl MeshSpec {
    /// The app ports of the workload `namespace`/`account` whose HTTP version the
    /// mesh declares: for each service port saying `http1`, `http2` or `grpc`, the
    /// port the workload's endpoints of it listen on. A port two services declare
    /// differently (HTTP/1.1 and HTTP/2) is left out: the inbound cannot know.
    pub fn app_ports(&self, namespace: &str, account: &str) -> Vec<v1::AppPort> {
        let mut declared: BTreeMap<u16, Option<ProtocolSpec>> = BTreeMap::new();
        for svc in &self.services {
            for port in &svc.ports {
                let protocol = match port.protocol {
                    ProtocolSpec::Http1 => ProtocolSpec::Http1,
                    // gRPC servers speak HTTP/2 only.
                    ProtocolSpec::Http2 | ProtocolSpec::Grpc => ProtocolSpec::Http2,
                    ProtocolSpec::Detect | ProtocolSpec::Opaque => continue,
                };
                let endpoints = port.endpoints.as_ref().unwrap_or(&svc.endpoints);
                let mine = endpoints.iter().filter(|e| {
                    e.identity
                        .as_ref()
                        .and_then(|id| crate::spiffe::SpiffeId::parse(id.as_str()).ok())
                        .is_some_and(|id| {
                            id.namespace == namespace && id.service_account == account
                        })
                });
                for ep in mine {
                    let app_port = match (&port.endpoints, port.target_port) {
                        (None, Some(target)) => target,
                        _ => ep.address.port(),
                    };
                    let entry = declared.entry(app_port).or_insert(Some(protocol));
                    if *entry != Some(protocol) {
                        *entry = None;
                    }
                }
            }
        }
        declared
            .into_iter()
            .filter_map(|(port, protocol)| {
                Some(v1::AppPort {
                    port: u32::from(port),
                    protocol: protocol?.to_proto() as i32,
                })
            })
            .collect()
    }

    /// Parses and validates a mesh description; `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, MeshError> {
        let spec: MeshSpec = if text.trim().is_empty() {
            MeshSpec::default()
        } else {
            yaml_serde::from_str(text).map_err(|e| {
                MeshError::Parse(format!("{origin}: {}", crate::yaml::describe(text, &e)))
            })?
        };
        spec.validate().map_err(|e| match e {
            MeshError::Invalid { path, reason } => MeshError::Invalid {
                path: format!("{origin}: {path}"),
                reason,
            },
            other => other,
        })?;
        Ok(spec)
    }

    /// Checks across values that the parser cannot see one value at a time.
    pub fn validate(&self) -> Result<(), MeshError> {
        let invalid = |path: String, reason: String| MeshError::Invalid { path, reason };
        let mut names: HashMap<(&str, &str), usize> = HashMap::new();
        let mut vips: HashMap<(IpAddr, u16), usize> = HashMap::new();
        let mut workloads: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let key = (w.namespace.as_str(), w.service_account.as_str());
            if let Some(first) = workloads.insert(key, i) {
                return Err(invalid(
                    format!("workloads[{i}].service_account"),
                    format!("duplicate workload (first at workloads[{first}])"),
                ));
            }
            let mut ports = std::collections::HashSet::new();
            for (j, p) in w.inbound.iter().enumerate() {
                if !ports.insert(p.port) {
                    return Err(invalid(
                        format!("workloads[{i}].inbound[{j}].port"),
                        format!("port {} listed twice", p.port),
                    ));
                }
            }
        }
        for (i, svc) in self.services.iter().enumerate() {
            let key = (svc.name.as_str(), svc.namespace.as_str());
            if let Some(first) = names.insert(key, i) {
                return Err(invalid(
                    format!("services[{i}].name"),
                    format!(
                        "duplicate service {}.{} (first at services[{first}])",
                        svc.name, svc.namespace
                    ),
                ));
            }
            for vip in &svc.vips {
                for port in &svc.ports {
                    if let Some(first) = vips.insert((*vip, port.port), i) {
                        return Err(invalid(
                            format!("services[{i}].vips"),
                            format!("{vip}:{} is already used by services[{first}]", port.port),
                        ));
                    }
                }
            }
            if !svc.vips.is_empty() && svc.ports.is_empty() {
                return Err(invalid(
                    format!("services[{i}].ports"),
                    "a service with vips needs at least one port".into(),
                ));
            }
            check_endpoints(&format!("services[{i}]"), &svc.endpoints)?;
            let mut ports = HashMap::new();
            for (j, port) in svc.ports.iter().enumerate() {
                let at = format!("services[{i}].ports[{j}]");
                if let Some(first) = ports.insert(port.port, j) {
                    return Err(invalid(
                        format!("{at}.port"),
                        format!("port {} listed twice (first at ports[{first}])", port.port),
                    ));
                }
                if port.target_port == Some(0) {
                    return Err(invalid(
                        format!("{at}.target_port"),
                        "must be 1-65535".into(),
                    ));
                }
                if let Some(endpoints) = &port.endpoints {
                    if port.target_port.is_some() {
                        return Err(invalid(
                            format!("{at}.target_port"),
                            "name either target_port or endpoints, not both".into(),
                        ));
                    }
                    check_endpoints(&at, endpoints)?;
                }
            }
            if let Some(retry) = &svc.policy.retry {
                check_retry(&format!("services[{i}].policy.retry"), retry)?;
            }
            if let Some(t) = &svc.policy.timeouts {
                check_timeouts(&format!("services[{i}].policy.timeouts"), t)?;
            }
            let mut route_names = HashMap::new();
            for (j, route) in svc.routes.iter().enumerate() {
                let at = format!("services[{i}].routes[{j}]");
                route.validate(&at, svc.namespace.as_str(), &|name, ns| {
                    self.find(name, ns).is_some()
                })?;
                if let Some(first) = route_names.insert(route.label(j), j) {
                    return Err(invalid(
                        format!("{at}.name"),
                        format!("duplicate route name (first at routes[{first}])"),
                    ));
                }
            }
            let hashing = svc.policy.load_balancer == Some(LoadBalancerSpec::ConsistentHash);
            match &svc.policy.hash_key {
                Some(key) if key.header.is_some() == key.client_identity => {
                    return Err(invalid(
                        format!("services[{i}].policy.hash_key"),
                        "name exactly one key: header or client_identity".into(),
                    ));
                }
                Some(_) if !hashing => {
                    return Err(invalid(
                        format!("services[{i}].policy.hash_key"),
                        "only meaningful with load_balancer: consistent-hash".into(),
                    ));
                }
                None if hashing => {
                    return Err(invalid(
                        format!("services[{i}].policy.hash_key"),
                        "consistent-hash needs a hash_key (header or client_identity)".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn find(&self, name: &str, namespace: &str) -> Option<&ServiceSpec> {
        self.services
            .iter()
            .find(|s| s.name.as_str() == name && s.namespace.as_str() == namespace)
    }
}

/// No address twice in one endpoint list (`path` names its owner in errors).
fn check_endpoints(path: &str, endpoints: &[EndpointSpec]) -> Result<(), MeshError> {
    let mut seen = HashMap::new();
    for (j, ep) in endpoints.iter().enumerate() {
        if let Some(first) = seen.insert(ep.address, j) {
            return Err(MeshError::Invalid {
                path: format!("{path}.endpoints[{j}].address"),
                reason: format!(
                    "duplicate endpoint {} (first at endpoints[{first}])",
                    ep.address
                ),
            });
        }
    }
    Ok(())
}

/// A retry block's values, wherever it sits (`path` names it in errors).
pub(crate) fn check_retry(path: &str, retry: &RetrySpec) -> Result<(), MeshError> {
    let invalid = |field: &str, reason: String| MeshError::Invalid {
        path: format!("{path}.{field}"),
        reason,
    };
    if retry.max_attempts == 0 {
        return Err(invalid(
            "max_attempts",
            "must be 1 to 10, the first try included (1: no retries); \
             a retry block needs it"
                .to_string(),
        ));
    }
    if retry.max_attempts > 10 {
        return Err(invalid(
            "max_attempts",
            format!("{} is over the limit of 10", retry.max_attempts),
        ));
    }
    if let Some(r) = retry.budget_ratio
        && !(0.0..=1.0).contains(&r)
    {
        return Err(invalid("budget_ratio", format!("{r} is outside 0.0..=1.0")));
    }
    Ok(())
}

/// A timeouts block's values, wherever it sits (`path` names it in errors).
pub(crate) fn check_timeouts(path: &str, t: &TimeoutsSpec) -> Result<(), MeshError> {
    for (field, d) in [
        ("request", &t.request),
        ("per_try", &t.per_try),
        ("connect", &t.connect),
        ("idle", &t.idle),
    ] {
        // The wire carries whole milliseconds and reads 0 as "no timeout".
        if let Some(d) = d
            && d.0 < Duration::from_millis(1)
        {
            return Err(MeshError::Invalid {
                path: format!("{path}.{field}"),
                reason: format!(
                    "{} is under 1ms; leave it out for no timeout",
                    String::from(*d)
                ),
            });
        }
    }
    Ok(())
}

impl ServiceSpec {
    /// The full-state update for this service at `version`.
    pub fn to_update(&self, version: u64) -> v1::ServiceUpdate {
        v1::ServiceUpdate {
            version,
            service: Some(self.info()),
            endpoints: Some(v1::service_update::Endpoints::Full(v1::EndpointSet {
                endpoints: self.endpoints.iter().map(EndpointSpec::to_proto).collect(),
            })),
            policy: Some(self.policy.to_proto()),
            trust_bundle: None,
            routes: self
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| r.to_proto(j))
                .collect(),
            port_endpoints: self.port_endpoints(),
        }
    }

    /// The endpoint sets of the ports that name their own (`target_port` or
    /// `endpoints`); the other ports use the service's set.
    fn port_endpoints(&self) -> Vec<v1::PortEndpoints> {
        self.ports
            .iter()
            .filter_map(|p| {
                let endpoints = match (&p.endpoints, p.target_port) {
                    (Some(own), _) => own.iter().map(EndpointSpec::to_proto).collect(),
                    (None, Some(target)) => self
                        .endpoints
                        .iter()
                        .map(|e| {
                            let mut at = e.clone();
                            at.address.set_port(target);
                            at.to_proto()
                        })
                        .collect(),
                    (None, None) => return None,
                };
                Some(v1::PortEndpoints {
                    port: u32::from(p.port),
                    endpoints: Some(v1::EndpointSet { endpoints }),
                })
            })
            .collect()
    }

    pub fn info(&self) -> v1::ServiceInfo {
        v1::ServiceInfo {
            name: self.name.to_string(),
            namespace: self.namespace.to_string(),
            vips: self.vips.iter().map(|v| v.to_string()).collect(),
            ports: self
                .ports
                .iter()
                .map(|p| v1::ServicePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    protocol: p.protocol.to_proto() as i32,
                })
                .collect(),
        }
    }
}

impl ProtocolSpec {
    pub fn to_proto(self) -> v1::Protocol {
        match self {
            ProtocolSpec::Detect => v1::Protocol::Detect,
            ProtocolSpec::Http1 => v1::Protocol::Http1,
            ProtocolSpec::Http2 => v1::Protocol::Http2,
            ProtocolSpec::Grpc => v1::Protocol::Grpc,
            ProtocolSpec::Opaque => v1::Protocol::Opaque,
        }
    }
}

impl EndpointSpec {
    pub fn to_proto(&self) -> v1::Endpoint {
        v1::Endpoint {
            address: Some(v1::SocketAddress {
                ip: self.address.ip().to_string(),
                port: u32::from(self.address.port()),
            }),
            weight: self.weight.get(),
            identity: self
                .identity
                .as_ref()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
            labels: self.labels.clone().into_iter().collect(),
            state: match self.state {
                EndpointStateSpec::Ready => v1::EndpointState::Ready,
                EndpointStateSpec::NotReady => v1::EndpointState::NotReady,
                EndpointStateSpec::Terminating => v1::EndpointState::Terminating,
            } as i32,
        }
    }
}

impl PolicySpec {
    pub fn to_proto(&self) -> v1::TrafficPolicy {
        use v1::load_balancer::Algorithm;
        let load_balancer = self.load_balancer.as_ref().map(|lb| v1::LoadBalancer {
            algorithm: Some(match lb {
                LoadBalancerSpec::P2cPeakEwma => Algorithm::P2cPeakEwma(v1::PeakEwma::default()),
                LoadBalancerSpec::RoundRobin => Algorithm::RoundRobin(v1::RoundRobin {}),
                LoadBalancerSpec::LeastRequest => Algorithm::LeastRequest(v1::LeastRequest {}),
                LoadBalancerSpec::ConsistentHash => Algorithm::ConsistentHash(v1::ConsistentHash {
                    key: Some(
                        match self.hash_key.as_ref().and_then(|k| k.header.clone()) {
                            Some(h) => v1::consistent_hash::Key::Header(h),
                            None => v1::consistent_hash::Key::ClientIdentity(true),
                        },
                    ),
                }),
            }),
        });
        let circuit_breaker = self.circuit_breaker.as_ref().map(|cb| v1::CircuitBreaker {
            max_connections: cb.max_connections,
            max_pending_requests: cb.max_pending_requests,
            max_active_requests: cb.max_active_requests,
            max_concurrent_retries: cb.max_concurrent_retries,
            outlier_detection: cb.outlier_detection.as_ref().map(|o| v1::OutlierDetection {
                consecutive_failures: o.consecutive_failures,
                base_ejection_ms: millis(o.base_ejection),
                max_ejection_ms: millis(o.max_ejection),
                max_ejected_percent: o.max_ejected_percent.map(u32::from).unwrap_or(0),
                failure_on: o
                    .failure_on
                    .iter()
                    .map(|f| {
                        (match f {
                            FailureClassSpec::ServerError => v1::FailureClass::FailureClass5xx,
                            FailureClassSpec::Gateway => v1::FailureClass::Gateway,
                            FailureClassSpec::Connect => v1::FailureClass::Connect,
                            FailureClassSpec::Grpc => v1::FailureClass::Grpc,
                        }) as i32
                    })
                    .collect(),
                grpc_codes: o.grpc_codes.clone(),
            }),
        });
        let retry = self.retry.as_ref().map(RetrySpec::to_proto);
        let timeouts = self.timeouts.as_ref().map(TimeoutsSpec::to_proto);
        v1::TrafficPolicy {
            load_balancer,
            circuit_breaker,
            retry,
            timeouts,
        }
    }
}

impl RetrySpec {
    pub fn to_proto(&self) -> v1::RetryPolicy {
        v1::RetryPolicy {
            max_attempts: self.max_attempts,
            retry_on_status: self.retry_on_status.iter().map(|s| u32::from(*s)).collect(),
            retry_on_grpc: self.retry_on_grpc.clone(),
            budget_ratio: self.budget_ratio.unwrap_or(0.0),
            min_retries_per_second: self.min_retries_per_second.unwrap_or(0),
            backoff_base_ms: millis(self.backoff_base),
            backoff_max_ms: millis(self.backoff_max),
            max_buffered_body_bytes: self.max_buffered_body_bytes.unwrap_or(0),
        }
    }
}

impl TimeoutsSpec {
    pub fn to_proto(&self) -> v1::Timeouts {
        v1::Timeouts {
            request_ms: millis(self.request),
            per_try_ms: millis(self.per_try),
            connect_ms: millis(self.connect),
            idle_ms: millis(self.idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
services:
  - name: orders
    vips: [10.96.0.10]
    ports: [{port: 80, protocol: http1}]
    endpoints:
      - address: 127.0.0.1:8081
        identity: spiffe://weft.local/ns/default/sa/orders
      - address: 127.0.0.1:8082
        weight: 300
        state: terminating
    policy:
      load_balancer: round-robin
      timeouts: {request: 5s, connect: 250ms}
  - name: payments
    policy:
      load_balancer: consistent-hash
      hash_key: {header: x-user}
"#;

    #[test]
    fn parses_sample_and_converts_to_update() {
        let mesh = MeshSpec::from_yaml(SAMPLE, "mesh.yaml").expect("valid sample");
        assert_eq!(mesh.services.len(), 2);
        let orders = mesh.find("orders", "default").expect("orders");
        let update = orders.to_update(7);
        assert_eq!(update.version, 7);
        let Some(v1::service_update::Endpoints::Full(set)) = update.endpoints else {
            panic!("expected full endpoint set");
        };
        assert_eq!(set.endpoints.len(), 2);
        assert_eq!(set.endpoints[0].weight, DEFAULT_WEIGHT);
        assert_eq!(set.endpoints[1].weight, 300);
        assert_eq!(
            set.endpoints[1].state,
            v1::EndpointState::Terminating as i32
        );
        let timeouts = update.policy.and_then(|p| p.timeouts).expect("timeouts");
        assert_eq!(timeouts.request_ms, 5000);
        assert_eq!(timeouts.connect_ms, 250);
    }

    #[test]
    fn a_workloads_app_ports_carry_what_its_services_declare() {
        let text = r#"
services:
  - name: web
    ports: [{port: 80, protocol: http1}, {port: 9090, protocol: grpc, target_port: 19090}]
    endpoints:
      - {address: '10.0.0.1:8080', identity: 'spiffe://td/ns/shop/sa/web'}
      - {address: '10.0.0.2:8080', identity: 'spiffe://td/ns/shop/sa/other'}
  - name: h2c
    ports: [{port: 81, protocol: http2}, {port: 82, protocol: opaque}]
    endpoints: [{address: '10.0.0.1:7070', identity: 'spiffe://td/ns/shop/sa/web'}]
  - name: clash
    ports: [{port: 83, protocol: http2}]
    endpoints: [{address: '10.0.0.1:8080', identity: 'spiffe://td/ns/shop/sa/web'}]
"#;
        let mesh = MeshSpec::from_yaml(text, "m").expect("valid");
        let ports: Vec<(u32, v1::Protocol)> = mesh
            .app_ports("shop", "web")
            .iter()
            .map(|p| (p.port, p.protocol()))
            .collect();
        assert_eq!(
            ports,
            [(7070, v1::Protocol::Http2), (19090, v1::Protocol::Http2),],
            "8080 is http1 to web and http2 to clash: left out"
        );
        assert!(mesh.app_ports("shop", "nobody").is_empty());
    }

    #[test]
    fn bad_value_names_line_and_field() {
        let text = "services:\n  - name: orders\n    endpoints:\n      - address: 127.0.0.1:1\n        weight: 0\n";
        let err = MeshSpec::from_yaml(text, "m.yaml").expect_err("weight 0 is invalid");
        let msg = err.to_string();
        assert!(msg.contains("m.yaml"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("weight"), "{msg}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let text = "services:\n  - name: orders\n    endpoint: []\n";
        let msg = MeshSpec::from_yaml(text, "m.yaml")
            .expect_err("typo")
            .to_string();
        assert!(msg.contains("unknown field `endpoint`"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn duplicates_are_rejected_with_their_path() {
        let text = "services:\n  - name: a\n  - name: a\n";
        let msg = MeshSpec::from_yaml(text, "m.yaml")
            .expect_err("duplicate")
            .to_string();
        assert!(msg.contains("services[1].name"), "{msg}");
        let text = "services:\n  - name: a\n    endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:1'}]\n";
        let msg = MeshSpec::from_yaml(text, "m.yaml")
            .expect_err("duplicate endpoint")
            .to_string();
        assert!(msg.contains("services[0].endpoints[1].address"), "{msg}");
    }

    #[test]
    fn bad_names_and_identities_are_rejected() {
        for text in [
            "services: [{name: Orders}]",
            "services: [{name: a, endpoints: [{address: '127.0.0.1:1', identity: 'http://x/y'}]}]",
            "services: [{name: a, policy: {timeouts: {request: fast}}}]",
        ] {
            assert!(MeshSpec::from_yaml(text, "m").is_err(), "{text}");
        }
    }

    /// The endpoint addresses each port of `update` is balanced over, by port.
    fn per_port(update: &v1::ServiceUpdate) -> Vec<(u32, Vec<String>)> {
        let addresses = |set: &v1::EndpointSet| -> Vec<String> {
            set.endpoints
                .iter()
                .filter_map(|e| e.address.as_ref())
                .map(|a| format!("{}:{}", a.ip, a.port))
                .collect()
        };
        let Some(v1::service_update::Endpoints::Full(own)) = &update.endpoints else {
            panic!("expected a full endpoint set");
        };
        let info = update.service.as_ref().expect("service info");
        info.ports
            .iter()
            .map(|p| {
                let set = update
                    .port_endpoints
                    .iter()
                    .find(|pe| pe.port == p.port)
                    .and_then(|pe| pe.endpoints.as_ref())
                    .unwrap_or(own);
                (p.port, addresses(set))
            })
            .collect()
    }

    #[test]
    fn ports_reach_the_services_endpoints_unless_they_name_their_own() {
        let text = r#"
services:
  - name: shop
    vips: [10.96.0.7]
    ports:
      - {port: 8080, name: http}
      - {port: 9090, name: grpc, target_port: 19090}
      - port: 9100
        endpoints: [{address: '10.0.0.1:9101'}, {address: '10.0.0.2:9102'}]
    endpoints: [{address: '10.0.0.1:18080'}, {address: '10.0.0.2:18080'}]
"#;
        let mesh = MeshSpec::from_yaml(text, "m").expect("valid");
        let update = mesh.services[0].to_update(1);
        assert_eq!(
            update.port_endpoints.len(),
            2,
            "8080 uses the service's set"
        );
        assert_eq!(
            per_port(&update),
            [
                (8080, vec!["10.0.0.1:18080".into(), "10.0.0.2:18080".into()]),
                (9090, vec!["10.0.0.1:19090".into(), "10.0.0.2:19090".into()]),
                (9100, vec!["10.0.0.1:9101".into(), "10.0.0.2:9102".into()]),
            ]
        );
        // A single-port description is unchanged on the wire.
        let single = MeshSpec::from_yaml(SAMPLE, "m").expect("valid");
        assert!(single.services[0].to_update(1).port_endpoints.is_empty());
    }

    #[test]
    fn bad_port_lists_are_rejected_with_their_path() {
        for (text, path) in [
            (
                "services: [{name: a, ports: [{port: 80}, {port: 80}]}]",
                "services[0].ports[1].port",
            ),
            (
                "services: [{name: a, ports: [{port: 80, target_port: 0}]}]",
                "services[0].ports[0].target_port",
            ),
            (
                "services: [{name: a, ports: [{port: 80, target_port: 81, endpoints: []}]}]",
                "services[0].ports[0].target_port",
            ),
            (
                "services: [{name: a, ports: [{port: 80, endpoints: [{address: '127.0.0.1:1'}, {address: '127.0.0.1:1'}]}]}]",
                "services[0].ports[0].endpoints[1].address",
            ),
        ] {
            let msg = MeshSpec::from_yaml(text, "m").expect_err(text).to_string();
            assert!(msg.contains(path), "{text}: {msg}");
        }
    }

    #[test]
    fn timeouts_under_a_millisecond_are_rejected() {
        for text in [
            "services: [{name: a, policy: {timeouts: {request: 0s}}}]",
            "services: [{name: a, policy: {timeouts: {connect: 500us}}}]",
        ] {
            let msg = MeshSpec::from_yaml(text, "m").expect_err(text).to_string();
            assert!(msg.contains("services[0].policy.timeouts."), "{msg}");
        }
        let ok = "services: [{name: a, policy: {timeouts: {request: 1ms}}}]";
        assert!(MeshSpec::from_yaml(ok, "m").is_ok());
    }
}
