//! Weft's custom resources (group `weft.io`, version `v1alpha1`). The CRD YAML under
//! deploy/k8s/crds/ is generated from these types (`weft-control crds`), so the API
//! server validates exactly what the translation reads. CEL rules repeat the checks
//! across fields that `MeshSpec::validate` makes, so most mistakes are refused at
//! `kubectl apply` instead of being rejected later by the control plane.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResource;
use kube::CustomResourceExt as _;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What `humantime` reads, as the API server checks it: `250ms`, `5s`, `1m 30s`.
const DURATION_PATTERN: &str =
    r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|min|h|d)( ?[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|min|h|d))*$";
// Unsigned fields say their maximum so that the API server refuses what the types
// could not read (`u32::MAX`); the translation would reject it anyway, later.
/// A DNS-1123 label, as Kubernetes names services, namespaces and accounts.
const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const SPIFFE_PATTERN: &str = "^spiffe://[^/?# ]+/[^?# ]+$";

// Fields mirror weft_api::mesh::PolicySpec (camelCase here, as Kubernetes APIs are
// spelled). The doc comments below become the CRD's descriptions (kubectl explain).
// Each printcolumn(...) says `type_ = "string"`, which clippy reads as a repeat.
#[allow(clippy::duplicated_attributes)]
/// How proxies call one Service. One TrafficPolicy per Service: when two name the same
/// Service, the older one applies and the newer one is rejected.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    namespaced,
    shortname = "tp",
    category = "weft",
    doc = "How Weft's proxies call one Service: load balancer, circuit breaker, retries and timeouts.",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Balancer", type_ = "string", json_path = ".spec.loadBalancer"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.hashKey) || (has(self.loadBalancer) && self.loadBalancer == 'consistent-hash')").message("hashKey is only meaningful with loadBalancer consistent-hash"))]
#[x_kube(validation = Rule::new("!has(self.loadBalancer) || self.loadBalancer != 'consistent-hash' || has(self.hashKey)").message("consistent-hash needs a hashKey (header or clientIdentity)"))]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// The Service in this namespace whose callers follow this policy.
    pub target_ref: ServiceRef,
    /// Default p2c-peak-ewma.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// What consistent-hash hashes on; name exactly one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<HashKey>,
    /// Limits answered at once with 503; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retries only for safe cases, within a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Always the core group ("").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = "^$"))]
    pub group: String,
    #[schemars(regex(pattern = "^Service$"))]
    pub kind: String,
    #[schemars(length(max = 63), regex(pattern = NAME_PATTERN))]
    pub name: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    P2cPeakEwma,
    RoundRobin,
    LeastRequest,
    ConsistentHash,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.header) != (has(self.clientIdentity) && self.clientIdentity)").message("name exactly one key, header or clientIdentity"))]
pub struct HashKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_identity: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub max_pending_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub max_active_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub max_concurrent_retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive failures that eject an endpoint; 0 disables ejection.
    #[schemars(range(max = u32::MAX))]
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub base_ejection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_ejection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub max_ejected_percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub failure_on: Vec<FailureClass>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 17), inner(range(max = 16)))]
    pub grpc_codes: Vec<u32>,
}

#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    #[serde(rename = "5xx")]
    ServerError,
    Gateway,
    Connect,
    Grpc,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts including the first; 0 or 1 means no retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 100, max = 599)))]
    pub retry_on_status: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 17), inner(range(max = 16)))]
    pub retry_on_grpc: Vec<u32>,
    /// Retries allowed per request, e.g. 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub budget_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub min_retries_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub backoff_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub backoff_max: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub max_buffered_body_bytes: Option<u32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// The whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub per_try: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle: Option<String>,
}

// A workload's identity is its ServiceAccount, so that is what is selected.
/// Who may call the pods running as one ServiceAccount, per port. One
/// InboundAuthorization per ServiceAccount: when two name the same account, the older
/// one applies and the newer one is rejected.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "weft.io",
    version = "v1alpha1",
    kind = "InboundAuthorization",
    namespaced,
    shortname = "inauth",
    category = "weft",
    doc = "Who may call the pods of one ServiceAccount through their Weft proxies, per port.",
    printcolumn(
        name = "ServiceAccount",
        type_ = "string",
        json_path = ".spec.serviceAccountName"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InboundAuthorizationSpec {
    /// The ServiceAccount (in this namespace) whose pods' proxies enforce this.
    #[schemars(length(max = 63), regex(pattern = NAME_PATTERN))]
    pub service_account_name: String,
    /// Per-port policy; port 0 applies to the ports not listed.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port"]))]
    pub ports: Vec<InboundPort>,
}

#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.authorization) && has(self.authorization.allowUnauthenticated) && self.authorization.allowUnauthenticated) || (has(self.mode) && self.mode == 'permissive')").message("allowUnauthenticated is only meaningful in permissive mode"))]
pub struct InboundPort {
    /// The app's port; 0 is the default for ports not listed.
    pub port: u16,
    /// strict (mTLS only, the default) or permissive (mTLS or plaintext, for migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Strict,
    Permissive,
}

/// Naming identities or namespaces means "only these"; naming none, any meshed caller.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// SPIFFE IDs, spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(regex(pattern = SPIFFE_PATTERN)))]
    pub allow_identities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 63), regex(pattern = NAME_PATTERN)))]
    pub allow_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_any_meshed: Option<bool>,
    /// Plaintext callers; only in permissive mode (allowed there by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
}

/// File name (under deploy/k8s/crds/) and CRD of each of Weft's custom resources.
pub fn definitions() -> Vec<(&'static str, CustomResourceDefinition)> {
    let mut crds = vec![
        ("trafficpolicies.weft.io.yaml", TrafficPolicy::crd()),
        (
            "inboundauthorizations.weft.io.yaml",
            InboundAuthorization::crd(),
        ),
    ];
    for (_, crd) in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                kubernetes_formats(schema);
            }
        }
    }
    crds
}

/// Rewrites the integer formats schemars derives from Rust types (`uint16`,
/// `uint32`, ...) to the two the API server knows, `int32` and `int64`: it ignores
/// any other and warns about each on every `kubectl apply`. The bounds stay in
/// `minimum`/`maximum`.
fn kubernetes_formats(schema: &mut JSONSchemaProps) {
    if schema.type_.as_deref() == Some("integer")
        && let Some(format) = schema.format.as_mut()
        && format != "int32"
        && format != "int64"
    {
        *format = match format.as_str() {
            "int8" | "int16" | "uint8" | "uint16" => "int32",
            _ => "int64",
        }
        .to_string();
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    let items: Vec<&mut JSONSchemaProps> = match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => vec![s.as_mut()],
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().collect(),
        None => Vec::new(),
    };
    let additional = match schema.additional_properties.as_mut() {
        Some(JSONSchemaPropsOrBool::Schema(s)) => Some(s.as_mut()),
        _ => None,
    };
    for child in children.chain(items).chain(additional) {
        kubernetes_formats(child);
    }
}

/// The checked-in text of one CRD file.
pub fn to_yaml(crd: &CustomResourceDefinition) -> anyhow::Result<String> {
    let body = yaml_serde::to_string(crd)?;
    Ok(format!(
        "# Generated from control-plane/src/source/kubernetes/crd.rs; do not edit.\n\
         # Regenerate: cargo run -p weft-control -- crds --out-dir deploy/k8s/crds\n{body}"
    ))
}
