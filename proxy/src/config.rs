//! The proxy's own configuration: where it listens, its limits, and (in file mode)
//! the mesh it routes to. Parsed once into typed values and validated here; the rest
//! of the proxy never sees raw YAML.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;
use weft_api::mesh::{DurationSpec, MeshSpec, Name, ServiceSpec};
use weft_api::spiffe::SpiffeId;

use crate::gateway_config::{GatewayConfig, RawGateway};
use crate::inbound_policy::{Authorization, InboundPolicy, PortPolicy, TlsMode};
use crate::observe_config::{AccessLogConfig, RawAccessLog, RawTracing, TracingConfig};
use crate::ports::PortSet;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    node: NodeConfig,
    #[serde(default)]
    outbound: Option<OutboundConfig>,
    #[serde(default)]
    inbound: Option<InboundConfig>,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    control_plane: Option<String>,
    #[serde(default)]
    identity: Option<RawIdentity>,
    /// File mode: the mesh itself, in the same schema the control plane reads.
    #[serde(default)]
    services: Vec<ServiceSpec>,
    /// Gateway mode: listeners for traffic from outside the mesh.
    #[serde(default)]
    gateway: Option<RawGateway>,
    #[serde(default)]
    access_log: Option<RawAccessLog>,
    #[serde(default)]
    tracing: Option<RawTracing>,
}

/// Where the roots that verify the control plane come from: a PEM file
/// (`identity.trust_bundle`, `WEFT_TRUST_BUNDLE`) or PEM text in the environment
/// (`WEFT_TRUST_ANCHORS`, which the injector writes into the pod spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustAnchors {
    File(PathBuf),
    Pem(String),
}

impl TrustAnchors {
    /// Names the source in errors.
    pub(crate) fn origin(&self) -> String {
        match self {
            TrustAnchors::File(path) => format!("trust bundle {}", path.display()),
            TrustAnchors::Pem(_) => "WEFT_TRUST_ANCHORS".to_string(),
        }
    }

    /// The certificates, parsed; an error names the source.
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let origin = self.origin();
        let certs: Vec<CertificateDer<'static>> = match self {
            TrustAnchors::File(path) => CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{origin}: {e}"))?
                .collect::<Result<_, _>>(),
            TrustAnchors::Pem(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
                .map(|c| c.map(CertificateDer::into_owned))
                .collect::<Result<_, _>>(),
        }
        .map_err(|e| format!("{origin}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{origin}: no PEM certificate"));
        }
        Ok(certs)
    }
}

/// Where the proof of identity comes from; a file is re-read on every renewal, so
/// a rotated token is picked up.
#[derive(Debug, Clone)]
pub(crate) enum Token {
    Inline(String),
    File(PathBuf),
}

impl Token {
    pub(crate) fn read(&self) -> Result<String, String> {
        match self {
            Token::Inline(t) => Ok(t.clone()),
            Token::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("reading the token file {}: {e}", p.display())),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConfig {
    #[serde(default = "default_node_id")]
    pub(crate) id: String,
    #[serde(default = "default_namespace")]
    pub(crate) namespace: Name,
    #[serde(default)]
    pub(crate) service_account: Option<String>,
    /// Name used as the `service` label on inbound metrics.
    #[serde(default)]
    pub(crate) workload: Option<String>,
    /// The pod's IP, for logs (`WEFT_NODE_IP` in a pod).
    #[serde(default)]
    pub(crate) ip: Option<IpAddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            namespace: default_namespace(),
            service_account: None,
            workload: None,
            ip: None,
        }
    }
}

pub(crate) fn default_node_id() -> String {
    format!("weft-proxy-{}", std::process::id())
}

fn default_namespace() -> Name {
    Name::try_from(weft_api::mesh::DEFAULT_NAMESPACE.to_string())
        .unwrap_or_else(|_| unreachable!("the default namespace is a valid name"))
}

/// `admin: {listen: 0.0.0.0:7191, probe_ports: "8080"}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminConfig {
    listen: SocketAddr,
    /// App ports whose kubelet probes the injector rewrote to `/app-probe/<port>/...`
    /// here; only these are forwarded, so the admin port is no relay to localhost.
    #[serde(default)]
    probe_ports: PortSet,
}

/// `outbound: {listen: 127.0.0.1:7140, transparent: true}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboundConfig {
    listen: SocketAddr,
    /// The listener receives connections redirected by `weft-proxy init`'s rules:
    /// each is routed by its original destination (a service VIP:port, or else
    /// passed through untouched to where the app was going). A connection that was
    /// not redirected (the app names the proxy, as its `http_proxy`) still routes
    /// by each request's authority. A loopback or wildcard IPv4 listen address
    /// gets an IPv6 twin (`[::1]` / `[::]`, same port), where ip6tables redirects.
    #[serde(default)]
    transparent: bool,
    /// Destination ports (of the original destination, or of a fixed upstream's
    /// service) never sniffed: opaque TCP. Default: the well-known server-first and
    /// broker ports; a list given here replaces it (`""`: none).
    #[serde(default = "PortSet::default_opaque")]
    opaque_ports: PortSet,
}

/// `inbound: {listen: 0.0.0.0:7143, app: 127.0.0.1:8080}`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundConfig {
    listen: SocketAddr,
    /// Where the local application listens. Without it (transparent capture) each
    /// connection goes to 127.0.0.1 (or ::1) on the port it was originally sent
    /// to, so one inbound listener serves every port of the app; the listener
    /// then gets an IPv6 twin as a transparent outbound one does.
    #[serde(default)]
    app: Option<SocketAddr>,
    /// App ports never sniffed: opaque TCP even when the bytes look like HTTP. Over
    /// mTLS the calling proxy says so itself (ALPN `weft.opaque/1`); this list is
    /// for callers that cannot (plaintext, permissive mode). Default as outbound's.
    #[serde(default = "PortSet::default_opaque")]
    opaque_ports: PortSet,
    /// App ports that speak HTTP/1.1 only: an HTTP/2 request to one (h2c, or h2
    /// from a caller that could not say so) is sent on as HTTP/1.1; gRPC stays HTTP/2.
    #[serde(default)]
    http1_ports: PortSet,
    /// App ports that speak HTTP/2 only (h2c): an HTTP/1 request to one (plaintext,
    /// or HTTP/1 a peer proxy carried as a stream) is sent on as HTTP/2; upgrades
    /// (WebSocket) and CONNECT stay HTTP/1.1.
    #[serde(default)]
    http2_ports: PortSet,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamConfig {
    /// "name" or "name.namespace".
    pub(crate) service: String,
    pub(crate) listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    #[serde(default = "default_header_read_timeout")]
    pub(crate) header_read_timeout: DurationSpec,
    #[serde(default = "default_max_header_bytes")]
    pub(crate) max_header_bytes: usize,
    #[serde(default = "default_detect_timeout")]
    pub(crate) detect_timeout: DurationSpec,
    #[serde(default = "default_connect_timeout")]
    pub(crate) connect_timeout: DurationSpec,
    #[serde(default = "default_idle_timeout")]
    pub(crate) idle_timeout: DurationSpec,
    #[serde(default = "default_shutdown_grace")]
    pub(crate) shutdown_grace: DurationSpec,
    /// How long a request to a destination not yet known waits for the control
    /// plane's first answer about it.
    #[serde(default = "default_discovery_timeout")]
    pub(crate) discovery_timeout: DurationSpec,
    /// How long the admin server waits for the app when it forwards a kubelet
    /// probe; the kubelet's own `timeoutSeconds` usually ends it sooner.
    #[serde(default = "default_probe_timeout")]
    pub(crate) probe_timeout: DurationSpec,
    /// How often the proxy sends the control plane its traffic totals for the
    /// live view (`Telemetry.Report`); 0 turns the reports off.
    #[serde(default = "default_report_interval")]
    pub(crate) report_interval: DurationSpec,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            detect_timeout: default_detect_timeout(),
            connect_timeout: default_connect_timeout(),
            idle_timeout: default_idle_timeout(),
            shutdown_grace: default_shutdown_grace(),
            discovery_timeout: default_discovery_timeout(),
            probe_timeout: default_probe_timeout(),
            report_interval: default_report_interval(),
        }
    }
}

fn default_max_connections() -> usize {
    10_000
}
fn default_header_read_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(10))
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_detect_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(1))
}
fn default_connect_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(3))
}
fn default_idle_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(90))
}
fn default_discovery_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(3))
}
fn default_probe_timeout() -> DurationSpec {
    DurationSpec(Duration::from_secs(5))
}
fn default_report_interval() -> DurationSpec {
    DurationSpec(Duration::from_secs(1))
}
fn default_shutdown_grace() -> DurationSpec {
    DurationSpec(Duration::from_secs(10))
}

/// `identity:` as written. With it, the proxy gets a certificate from the control
/// plane, speaks mTLS to endpoints that have an identity, and terminates mTLS inbound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(default = "default_trust_domain")]
    trust_domain: String,
    /// Default: node.service_account, else "default".
    #[serde(default)]
    service_account: Option<String>,
    /// The proof of identity: the local token `weft-control token` prints (it
    /// starts with `weft1.`), or a Kubernetes ServiceAccount token (anything else,
    /// e.g. the projected token in `token_file`, re-read on every renewal); or the
    /// WEFT_IDENTITY_TOKEN environment variable.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    /// Where Identity.Certify is served; default: the top-level control_plane.
    #[serde(default)]
    control_plane: Option<String>,
    /// Roots (PEM) that verify an `https://` control plane; else WEFT_TRUST_BUNDLE.
    #[serde(default)]
    trust_bundle: Option<PathBuf>,
    #[serde(default)]
    inbound: RawInbound,
    /// HTTP/1 requests to peer proxies travel as streams of one shared HTTP/2
    /// connection per peer (ALPN `weft.h2-orig/2`, or /1 with a peer that knows
    /// only that); false turns it off both ways, as in a Weft that predates it,
    /// and 1 keeps to `weft.h2-orig/1`, as a Weft that predates /2.
    #[serde(default)]
    http1_over_http2: RawHttp1OverHttp2,
}

/// `identity.http1_over_http2` as written: true, false, or the newest version of
/// `weft.h2-orig` to use.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged, expecting = "true, false, 1 or 2")]
enum RawHttp1OverHttp2 {
    On(bool),
    UpTo(u8),
}

impl Default for RawHttp1OverHttp2 {
    fn default() -> Self {
        RawHttp1OverHttp2::On(true)
    }
}

/// Whether HTTP/1 between proxies travels as HTTP/2 streams, and in which
/// versions of `weft.h2-orig` (`http::orig_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Http1OverHttp2 {
    Off,
    /// `weft.h2-orig/1` only, as a Weft that predates /2.
    V1Only,
    On,
}

pub(crate) fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

/// One port's inbound policy as written (flat, so YAML stays short).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortPolicy {
    #[serde(default)]
    port: u16,
    #[serde(default)]
    mode: TlsMode,
    #[serde(default)]
    allow_identities: Vec<String>,
    #[serde(default)]
    allow_namespaces: Vec<String>,
    #[serde(default)]
    allow_any_meshed: Option<bool>,
    #[serde(default)]
    allow_unauthenticated: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    #[serde(default)]
    mode: TlsMode,
    #[serde(default)]
    allow_identities: Vec<String>,
    #[serde(default)]
    allow_namespaces: Vec<String>,
    #[serde(default)]
    allow_any_meshed: Option<bool>,
    #[serde(default)]
    allow_unauthenticated: Option<bool>,
    #[serde(default)]
    ports: Vec<RawPortPolicy>,
}

fn port_policy(
    mode: TlsMode,
    ids: &[String],
    namespaces: &[String],
    any: Option<bool>,
    unauthenticated: Option<bool>,
) -> Result<PortPolicy, String> {
    for id in ids {
        SpiffeId::parse(id).map_err(|e| e.to_string())?;
    }
    // Naming callers means "only these"; naming none means "any meshed caller".
    let named = !ids.is_empty() || !namespaces.is_empty();
    Ok(PortPolicy {
        mode,
        authorization: Authorization {
            allow_identities: ids.to_vec(),
            allow_namespaces: namespaces.to_vec(),
            allow_any_meshed: any.unwrap_or(!named),
            allow_unauthenticated: unauthenticated.unwrap_or(mode == TlsMode::Permissive),
        },
    })
}

/// The validated `identity:` section.
#[derive(Debug, Clone)]
pub(crate) struct IdentityConfig {
    pub(crate) id: SpiffeId,
    pub(crate) token: Token,
    pub(crate) control_plane: String,
    pub(crate) inbound: InboundPolicy,
    /// HTTP/1 between proxies as HTTP/2 streams (`http::orig_proto`).
    pub(crate) http1_over_http2: Http1OverHttp2,
}

impl RawIdentity {
    fn validate(
        self,
        node: &NodeConfig,
        control_plane: Option<&String>,
        origin: &str,
    ) -> Result<IdentityConfig, ConfigError> {
        let invalid = |field: &str, e: String| {
            ConfigError::Invalid(format!("{origin}: identity.{field}: {e}"))
        };
        let account = self
            .service_account
            .or_else(|| node.service_account.clone())
            .unwrap_or_else(|| "default".to_string());
        let id = SpiffeId::new(&self.trust_domain, node.namespace.as_str(), &account)
            .map_err(|e| invalid("service_account", e.to_string()))?;
        let token = match (self.token, self.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "token",
                    "give token or token_file, not both".into(),
                ));
            }
            (Some(t), None) => Token::Inline(t),
            (None, Some(f)) => Token::File(f),
            (None, None) => match std::env::var("WEFT_IDENTITY_TOKEN") {
                Ok(t) if !t.is_empty() => Token::Inline(t),
                _ => {
                    return Err(invalid(
                        "token",
                        "a token, token_file or WEFT_IDENTITY_TOKEN is required".into(),
                    ));
                }
            },
        };
        let control_plane = self
            .control_plane
            .or_else(|| control_plane.cloned())
            .ok_or_else(|| {
                invalid(
                    "control_plane",
                    "no control plane to get a certificate from".into(),
                )
            })?;
        let raw = self.inbound;
        let mut inbound = InboundPolicy {
            default: port_policy(
                raw.mode,
                &raw.allow_identities,
                &raw.allow_namespaces,
                raw.allow_any_meshed,
                raw.allow_unauthenticated,
            )
            .map_err(|e| invalid("inbound", e))?,
            ports: Default::default(),
            app_http: Default::default(),
        };
        for (i, p) in raw.ports.iter().enumerate() {
            let policy = port_policy(
                p.mode,
                &p.allow_identities,
                &p.allow_namespaces,
                p.allow_any_meshed,
                p.allow_unauthenticated,
            )
            .map_err(|e| invalid(&format!("inbound.ports[{i}]"), e))?;
            inbound.ports.insert(p.port, policy);
        }
        let http1_over_http2 = match self.http1_over_http2 {
            RawHttp1OverHttp2::On(false) => Http1OverHttp2::Off,
            RawHttp1OverHttp2::UpTo(1) => Http1OverHttp2::V1Only,
            RawHttp1OverHttp2::On(true) | RawHttp1OverHttp2::UpTo(2) => Http1OverHttp2::On,
            RawHttp1OverHttp2::UpTo(n) => {
                return Err(invalid(
                    "http1_over_http2",
                    format!("{n} is not true, false, 1 or 2"),
                ));
            }
        };
        Ok(IdentityConfig {
            id,
            token,
            control_plane,
            inbound,
            http1_over_http2,
        })
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) path: Option<PathBuf>,
    pub workers: usize,
    pub(crate) node: NodeConfig,
    pub(crate) outbound: Option<SocketAddr>,
    /// Whether the outbound listener receives redirected connections.
    pub(crate) outbound_transparent: bool,
    /// Original destination ports handled as opaque TCP, whatever the service says.
    pub(crate) outbound_opaque_ports: PortSet,
    /// (listen, app); no app: the original destination port on loopback.
    pub(crate) inbound: Option<(SocketAddr, Option<SocketAddr>)>,
    /// App ports handled as opaque TCP even from a plaintext caller.
    pub(crate) inbound_opaque_ports: PortSet,
    /// App ports that speak HTTP/1.1 only.
    pub(crate) inbound_http1_ports: PortSet,
    /// App ports that speak HTTP/2 only (h2c); never one of `inbound_http1_ports`.
    pub(crate) inbound_http2_ports: PortSet,
    pub(crate) admin: SocketAddr,
    /// App ports the admin server forwards kubelet probes to (`/app-probe/<port>/…`).
    pub(crate) probe_ports: PortSet,
    pub(crate) upstreams: Vec<UpstreamConfig>,
    pub(crate) limits: LimitsConfig,
    pub(crate) control_plane: Option<String>,
    pub(crate) identity: Option<IdentityConfig>,
    /// Verifies an `https://` control plane.
    pub(crate) trust_bundle: Option<TrustAnchors>,
    pub(crate) mesh: MeshSpec,
    pub(crate) gateway: Option<GatewayConfig>,
    /// One JSON line per request; `None`: off.
    pub(crate) access_log: Option<AccessLogConfig>,
    /// Spans over OTLP; `None`: off (trace context still passes through untouched).
    pub(crate) tracing: Option<TracingConfig>,
}

pub(crate) const DEFAULT_OUTBOUND: &str = "127.0.0.1:7140";
pub(crate) const DEFAULT_ADMIN: &str = "127.0.0.1:7191";

/// A sidecar shares its pod's CPU with the app, so it stays small by default.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1)
}

pub(crate) fn parse_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("built-in default address {s} parses"))
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses a config; `origin` names the source in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = yaml_serde::from_str(text).map_err(|e| {
            ConfigError::Invalid(format!("{origin}: {}", weft_api::yaml::describe(text, &e)))
        })?;
        let mesh = MeshSpec {
            services: raw.services,
            workloads: Vec::new(),
        };
        mesh.validate()
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        let workers = raw.workers.unwrap_or_else(default_workers);
        if workers == 0 || workers > 64 {
            return Err(ConfigError::Invalid(format!(
                "{origin}: workers: {workers} is outside 1..=64"
            )));
        }
        if raw.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(format!(
                "{origin}: limits.max_connections: must be at least 1"
            )));
        }
        if raw.limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid(format!(
                "{origin}: limits.max_header_bytes: must be at least 8192"
            )));
        }
        // Zero would cut off every client, connection or probe at once. Only the
        // shutdown grace and the discovery wait may be zero: "do not wait".
        let limits = &raw.limits;
        for (field, d) in [
            ("header_read_timeout", limits.header_read_timeout.0),
            ("detect_timeout", limits.detect_timeout.0),
            ("connect_timeout", limits.connect_timeout.0),
            ("idle_timeout", limits.idle_timeout.0),
            ("probe_timeout", limits.probe_timeout.0),
        ] {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::Invalid(format!(
                    "{origin}: limits.{field}: must be at least 1ms"
                )));
            }
        }
        for (i, up) in raw.upstreams.iter().enumerate() {
            if up.service.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{origin}: upstreams[{i}].service: must not be empty"
                )));
            }
        }
        let access_log = raw
            .access_log
            .map(RawAccessLog::validate)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?
            .flatten();
        let tracing = raw
            .tracing
            .map(RawTracing::validate)
            .transpose()
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        let trust_bundle = raw
            .identity
            .as_ref()
            .and_then(|i| i.trust_bundle.clone())
            .or_else(|| std::env::var_os("WEFT_TRUST_BUNDLE").map(PathBuf::from))
            .map(TrustAnchors::File);
        let identity = raw
            .identity
            .map(|i| i.validate(&raw.node, raw.control_plane.as_ref(), origin))
            .transpose()?;
        let https = |a: &String| a.starts_with("https://");
        if trust_bundle.is_none()
            && (raw.control_plane.as_ref().is_some_and(https)
                || identity.as_ref().is_some_and(|i| https(&i.control_plane)))
        {
            return Err(ConfigError::Invalid(format!(
                "{origin}: identity.trust_bundle: an https:// control plane needs a trust bundle \
                 (or WEFT_TRUST_BUNDLE)"
            )));
        }
        let gateway = raw
            .gateway
            .map(|g| g.validate(origin))
            .transpose()
            .map_err(ConfigError::Invalid)?;
        let config = Config {
            gateway,
            path: None,
            identity,
            trust_bundle,
            workers,
            node: raw.node,
            outbound: Some(
                raw.outbound
                    .as_ref()
                    .map(|l| l.listen)
                    .unwrap_or_else(|| parse_addr(DEFAULT_OUTBOUND)),
            ),
            outbound_transparent: raw.outbound.as_ref().is_some_and(|l| l.transparent),
            outbound_opaque_ports: raw
                .outbound
                .map_or_else(PortSet::default_opaque, |l| l.opaque_ports),
            inbound_opaque_ports: raw
                .inbound
                .as_ref()
                .map_or_else(PortSet::default_opaque, |i| i.opaque_ports.clone()),
            inbound_http1_ports: raw
                .inbound
                .as_ref()
                .map(|i| i.http1_ports.clone())
                .unwrap_or_default(),
            inbound_http2_ports: raw
                .inbound
                .as_ref()
                .map(|i| i.http2_ports.clone())
                .unwrap_or_default(),
            inbound: raw.inbound.map(|i| (i.listen, i.app)),
            admin: raw
                .admin
                .as_ref()
                .map(|l| l.listen)
                .unwrap_or_else(|| parse_addr(DEFAULT_ADMIN)),
            probe_ports: raw.admin.map(|a| a.probe_ports).unwrap_or_default(),
            upstreams: raw.upstreams,
            limits: raw.limits,
            control_plane: raw.control_plane,
            mesh,
            access_log,
            tracing,
        };
        config
            .check_listeners()
            .and_then(|()| config.check_app_ports("inbound.http2_ports", "inbound.http1_ports"))
            .and_then(|()| config.check_upstreams())
            .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// An app port speaks HTTP/1.1 only or HTTP/2 only, not both; the error names
    /// the two fields (or variables) as given.
    pub(crate) fn check_app_ports(&self, http2: &str, http1: &str) -> Result<(), String> {
        match self
            .inbound_http2_ports
            .first_shared(&self.inbound_http1_ports)
        {
            Some(port) => Err(format!("{http2}: port {port} is also in {http1}")),
            None => Ok(()),
        }
    }

    /// Two listeners on one port cannot both bind: refused here, so `check` and a
    /// reload refuse what `run` would fail on.
    fn check_listeners(&self) -> Result<(), String> {
        let listeners = self.listeners();
        for (j, (field, addr)) in listeners.iter().enumerate() {
            let clash = listeners[..j].iter().find(|(_, other)| {
                addr.port() != 0
                    && other.port() == addr.port()
                    && (other.ip() == addr.ip()
                        || other.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            });
            if let Some((first, other)) = clash {
                return Err(format!("{field}: {addr} clashes with {first} ({other})"));
            }
        }
        Ok(())
    }

    /// Every listener with the field that sets it.
    pub(crate) fn listeners(&self) -> Vec<(String, SocketAddr)> {
        let mut listeners: Vec<(String, SocketAddr)> = Vec::new();
        listeners.extend(self.outbound.map(|a| ("outbound.listen".to_string(), a)));
        listeners.extend(self.inbound.map(|(a, _)| ("inbound.listen".to_string(), a)));
        listeners.push(("admin.listen".to_string(), self.admin));
        for (i, up) in self.upstreams.iter().enumerate() {
            listeners.push((
                format!("upstreams[{i}].listen (service {})", up.service),
                up.listen,
            ));
        }
        for (i, l) in self
            .gateway
            .iter()
            .flat_map(|g| g.listeners.iter())
            .enumerate()
        {
            listeners.push((format!("gateway.listeners[{i}].listen"), l.listen));
        }
        listeners
    }

    /// In file mode the mesh is all there is: an upstream listener for a service it
    /// lacks could never route a request.
    fn check_upstreams(&self) -> Result<(), String> {
        if self.control_plane.is_some() {
            return Ok(());
        }
        if let Some(gateway) = &self.gateway {
            for (host, service) in gateway.hosts.iter() {
                let (name, namespace) = service
                    .split_once('.')
                    .unwrap_or((service, self.node.namespace.as_str()));
                if self.mesh.find(name, namespace).is_none() {
                    return Err(format!(
                        "gateway.hosts: {host} names no service {name} in namespace {namespace} \
                         among services (and no control_plane to learn it from)"
                    ));
                }
            }
        }
        for (i, up) in self.upstreams.iter().enumerate() {
            let (name, namespace) = up
                .service
                .split_once('.')
                .unwrap_or((up.service.as_str(), self.node.namespace.as_str()));
            if self.mesh.find(name, namespace).is_none() {
                return Err(format!(
                    "upstreams[{i}].service: no service {name} in namespace {namespace} \
                     among services (and no control_plane to learn it from)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_run_would_refuse_is_refused_at_parse() {
        let refused = |yaml: &str, why: &str| match Config::parse(yaml, "t") {
            Ok(_) => panic!("{yaml:?} was accepted"),
            Err(e) => assert!(e.to_string().contains(why), "{yaml:?}: {e}"),
        };
        refused(
            "outbound: {listen: 127.0.0.1:7000}\nadmin: {listen: 0.0.0.0:7000}\n",
            "admin.listen: 0.0.0.0:7000 clashes with outbound.listen",
        );
        refused(
            "upstreams: [{service: nosuch, listen: 127.0.0.1:7001}]\n",
            "upstreams[0].service: no service nosuch",
        );
        refused(
            "services: [{name: a, policy: {retry: {max_attempts: 0}}}]\n",
            "retry.max_attempts: must be 1 to 10",
        );
        // With a control plane the service may come from discovery.
        Config::parse(
            "control_plane: http://127.0.0.1:7443\nupstreams: [{service: later, listen: 127.0.0.1:7001}]\n",
            "t",
        )
        .expect("valid");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("{}", "t").expect("valid");
        assert_eq!(c.outbound, Some(parse_addr(DEFAULT_OUTBOUND)));
        assert_eq!(c.admin, parse_addr(DEFAULT_ADMIN));
        assert!(c.inbound.is_none());
        assert!(!c.outbound_transparent);
        assert_eq!(c.limits.max_connections, 10_000);
    }

    #[test]
    fn inbound_app_ports_say_which_http_the_app_speaks_never_both() {
        let c = Config::parse(
            "inbound: {listen: 0.0.0.0:7143, http1_ports: \"8080\", http2_ports: [9090, \"50051-50052\"]}\n",
            "t",
        )
        .expect("valid");
        assert!(c.inbound_http1_ports.contains(8080) && !c.inbound_http1_ports.contains(9090));
        assert!(c.inbound_http2_ports.contains(9090) && c.inbound_http2_ports.contains(50052));
        assert!(!c.inbound_http2_ports.contains(8080));
        let err = Config::parse(
            "inbound: {listen: 0.0.0.0:7143, http1_ports: \"8000-8099\", http2_ports: \"8080\"}\n",
            "t",
        )
        .expect_err("overlap");
        assert!(
            err.to_string()
                .contains("inbound.http2_ports: port 8080 is also in inbound.http1_ports"),
            "{err}"
        );
    }

    #[test]
    fn transparent_capture_needs_no_fixed_app() {
        let c = Config::parse(
            "outbound: {listen: 127.0.0.1:7140, transparent: true}\ninbound: {listen: 0.0.0.0:7143}\n",
            "t",
        )
        .expect("valid");
        assert!(c.outbound_transparent);
        assert_eq!(c.inbound, Some((parse_addr("0.0.0.0:7143"), None)));
    }

    #[test]
    fn errors_name_origin_line_and_field() {
        let err = Config::parse("workers: 1\nlimits:\n  max_conections: 3\n", "proxy.yaml")
            .expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("proxy.yaml"), "{msg}");
        assert!(msg.contains("max_conections"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn zero_timeouts_are_rejected_by_name() {
        for field in [
            "header_read_timeout",
            "detect_timeout",
            "connect_timeout",
            "idle_timeout",
            "probe_timeout",
        ] {
            let err =
                Config::parse(&format!("limits: {{{field}: 0s}}\n"), "p.yaml").expect_err(field);
            assert!(
                err.to_string().contains(&format!("limits.{field}")),
                "{err}"
            );
        }
        let c = Config::parse(
            "limits: {shutdown_grace: 0s, discovery_timeout: 0s}\n",
            "p.yaml",
        )
        .expect("zero grace and discovery wait are allowed");
        assert_eq!(c.limits.shutdown_grace.0, Duration::ZERO);
    }

    #[test]
    fn identity_section_derives_the_spiffe_id_and_policy() {
        let c = Config::parse(
            "node: {namespace: shop, service_account: orders}\n\
             control_plane: http://127.0.0.1:7443\n\
             identity:\n  token: weft1.00\n  inbound:\n    mode: permissive\n    \
             allow_namespaces: [shop]\n    ports: [{port: 9090, mode: strict}]\n",
            "p.yaml",
        )
        .expect("valid");
        let id = c.identity.expect("identity");
        assert_eq!(
            id.id.to_string(),
            "spiffe://cluster.local/ns/shop/sa/orders"
        );
        assert_eq!(id.control_plane, "http://127.0.0.1:7443");
        let default = &id.inbound.default;
        assert_eq!(default.mode, TlsMode::Permissive);
        assert!(!default.authorization.allow_any_meshed);
        assert!(default.authorization.allow_unauthenticated);
        let strict = id.inbound.for_port(9090);
        assert_eq!(strict.mode, TlsMode::Strict);
        assert!(strict.authorization.allow_any_meshed);
    }

    #[test]
    fn identity_needs_a_token_and_a_control_plane() {
        let err = Config::parse("identity: {token: t}\n", "p.yaml").expect_err("no control plane");
        assert!(err.to_string().contains("identity.control_plane"), "{err}");
        let err = Config::parse(
            "identity: {token: t, token_file: /x, control_plane: http://a:1}\n",
            "p.yaml",
        )
        .expect_err("two tokens");
        assert!(err.to_string().contains("identity.token"), "{err}");
    }

    #[test]
    fn http1_over_http2_is_on_off_or_kept_to_v1() {
        let parse = |value: &str| {
            Config::parse(
                &format!(
                    "identity: {{token: t, control_plane: http://a:1, http1_over_http2: {value}}}\n"
                ),
                "p.yaml",
            )
            .map(|c| c.identity.expect("identity").http1_over_http2)
        };
        assert_eq!(parse("true").expect("valid"), Http1OverHttp2::On);
        assert_eq!(parse("2").expect("valid"), Http1OverHttp2::On);
        assert_eq!(parse("false").expect("valid"), Http1OverHttp2::Off);
        assert_eq!(parse("1").expect("valid"), Http1OverHttp2::V1Only);
        let err = parse("3").expect_err("no such version");
        assert!(
            err.to_string().contains("identity.http1_over_http2"),
            "{err}"
        );
        let err = parse("yes").expect_err("not a version");
        assert!(err.to_string().contains("true, false, 1 or 2"), "{err}");
        let default = Config::parse(
            "identity: {token: t, control_plane: http://a:1}\n",
            "p.yaml",
        )
        .expect("valid");
        assert_eq!(
            default.identity.expect("identity").http1_over_http2,
            Http1OverHttp2::On
        );
    }

    #[test]
    fn invalid_mesh_is_rejected() {
        let err = Config::parse("services:\n  - name: a\n  - name: a\n", "p.yaml")
            .expect_err("duplicate");
        assert!(err.to_string().contains("services[1].name"), "{err}");
    }
}
