//! What the injector puts into a pod, as operators configure it (flags of `weftctl`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The proxy's outbound listener; iptables OUTPUT redirects the app's connections here.
pub const OUTBOUND_PORT: u16 = 7140;
/// The proxy's inbound listener; iptables PREROUTING redirects connections to the pod here.
pub const INBOUND_PORT: u16 = 7143;
/// The proxy's admin server (`/metrics`, `/ready`, `/live`); never redirected.
pub const ADMIN_PORT: u16 = 7191;
/// The proxy runs as this UID so that iptables can exempt its own traffic.
pub const PROXY_UID: i64 = 7102;
/// The control plane's gRPC address as seen from a pod.
pub const DEFAULT_CONTROL_PLANE: &str = "weft-control.weft-system.svc:7443";
/// Audience of the projected ServiceAccount token the proxy presents to `Identity.Certify`.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "weft";
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Everything the injector needs besides the pod itself.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// The sidecar image (`weft-proxy run`).
    pub proxy_image: String,
    /// The init image (`weft-proxy init`): the same binary plus the iptables tools,
    /// kept out of the long-running sidecar's image.
    pub init_image: String,
    pub image_pull_policy: String,
    /// `host:port` of the control plane's gRPC endpoint.
    pub control_plane: String,
    /// PEM roots that verify the control plane's TLS certificate, written into each
    /// proxy as `WEFT_TRUST_ANCHORS` (`--trust-anchors FILE`). Without them injected
    /// proxies cannot reach a TLS control plane, so both fronts warn.
    pub trust_anchors: Option<String>,
    pub trust_domain: String,
    pub token_audience: String,
    /// Lifetime of the projected token; the kubelet refreshes it at 80 %.
    pub token_expiration_seconds: i64,
    /// A `tracing` filter for the proxy.
    pub log_level: String,
    /// Default proxy resources; the `weft.io/proxy-*` annotations override them per pod.
    pub proxy_resources: Resources,
    pub init_resources: Resources,
}

/// Requests and limits of one container, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub cpu_request: Quantity,
    pub cpu_limit: Quantity,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
}

/// `weft/weft-proxy:<this crate's version>`: a neutral name that real installs
/// replace (`--proxy-image`) with their registry's.
pub fn default_proxy_image() -> String {
    format!("weft/weft-proxy:{}", env!("CARGO_PKG_VERSION"))
}

/// `weft/weft-proxy-init:<this crate's version>` (`--init-image`).
pub fn default_init_image() -> String {
    format!("weft/weft-proxy-init:{}", env!("CARGO_PKG_VERSION"))
}

fn q(s: &str) -> Quantity {
    Quantity(s.to_string())
}

impl Default for InjectConfig {
    fn default() -> Self {
        InjectConfig {
            proxy_image: default_proxy_image(),
            init_image: default_init_image(),
            image_pull_policy: "IfNotPresent".into(),
            control_plane: DEFAULT_CONTROL_PLANE.into(),
            trust_anchors: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            token_expiration_seconds: 3600,
            log_level: "info".into(),
            proxy_resources: Resources {
                cpu_request: q("100m"),
                cpu_limit: q("1"),
                memory_request: q("64Mi"),
                memory_limit: q("256Mi"),
            },
            // Installing a few dozen iptables rules needs next to nothing; the limit
            // keeps a misbehaving init from starving the node.
            init_resources: Resources {
                cpu_request: q("10m"),
                cpu_limit: q("100m"),
                memory_request: q("16Mi"),
                memory_limit: q("64Mi"),
            },
        }
    }
}

/// Reads and checks a PEM file of trust anchors (`--trust-anchors`): at least one
/// certificate, nothing that is not PEM. The text is kept as read, so the pod spec
/// carries exactly what the operator gave.
pub fn read_trust_anchors(path: &std::path::Path) -> Result<String, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let origin = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(text.as_bytes()) {
        cert.map_err(|e| format!("{origin}: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("{origin}: no PEM certificate"));
    }
    Ok(text)
}
