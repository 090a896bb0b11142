//! The `gateway:` section: listeners that take traffic from outside the mesh (TLS
//! with operator certificates, or plaintext) and the host names they route, each to
//! a mesh service whose routes then choose by path.
//!
//! ```yaml
//! gateway:
//!   listeners:
//!     - listen: 0.0.0.0:8443
//!       tls: [{cert: /etc/weft/shop.pem, key: /etc/weft/shop.key}]
//!     - listen: 0.0.0.0:8080
//!       redirect_https: 443
//!   hosts:
//!     - {host: shop.example, service: web}
//!   tls_reload_interval: 10s
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Deserialize;
use weft_api::mesh::DurationSpec;

const DEFAULT_TLS_RELOAD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    listeners: Vec<RawListener>,
    #[serde(default)]
    hosts: Vec<RawHost>,
    #[serde(default)]
    tls_reload_interval: Option<DurationSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: SocketAddr,
    #[serde(default)]
    tls: Vec<CertFiles>,
    #[serde(default)]
    redirect_https: Option<u16>,
}

/// One operator certificate: a PEM chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    host: String,
    service: String,
}

/// The validated `gateway:` section.
#[derive(Debug, Clone)]
pub(crate) struct GatewayConfig {
    pub(crate) listeners: Vec<GatewayListener>,
    pub(crate) hosts: Arc<GatewayHosts>,
    pub(crate) tls_reload_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GatewayListener {
    pub(crate) listen: SocketAddr,
    /// Empty: plaintext HTTP.
    pub(crate) tls: Vec<CertFiles>,
    /// Plaintext only: answer every request with a redirect to HTTPS on this port.
    pub(crate) redirect_https: Option<u16>,
}

/// The host table every gateway listener reads; a reload swaps it whole.
pub(crate) type HostsStore = Arc<ArcSwap<GatewayHosts>>;

/// How one gateway listener names destinations.
#[derive(Debug)]
pub(crate) struct GatewayEntry {
    pub(crate) hosts: HostsStore,
    /// A plaintext listener that sends every client to HTTPS on this port.
    pub(crate) redirect_https: Option<u16>,
}

/// Which mesh service a host name goes to.
#[derive(Debug, Default)]
pub(crate) struct GatewayHosts {
    by_host: HashMap<String, Arc<str>>,
}

impl GatewayHosts {
    /// (host, service) pairs.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_host.iter().map(|(h, s)| (h.as_str(), &**s))
    }

    /// The service for a Host (without its port), matched without case.
    pub(crate) fn service(&self, host: &str) -> Option<&Arc<str>> {
        let host = host.trim_end_matches('.');
        match self.by_host.get(host) {
            Some(s) => Some(s),
            None if host.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.by_host.get(&host.to_ascii_lowercase())
            }
            None => None,
        }
    }
}

impl GatewayConfig {
    /// What a reload cannot change: the listeners are bound, and their
    /// certificates watched, once at start. None: they match.
    pub(crate) fn fixed_change(&self, running: &GatewayConfig) -> Option<&'static str> {
        if self.listeners != running.listeners {
            Some("gateway.listeners")
        } else if self.tls_reload_interval != running.tls_reload_interval {
            Some("gateway.tls_reload_interval")
        } else {
            None
        }
    }
}

impl RawGateway {
    /// `origin` names the file in errors.
    pub(crate) fn validate(self, origin: &str) -> Result<GatewayConfig, String> {
        let err = |field: String, e: String| format!("{origin}: gateway.{field}: {e}");
        if self.listeners.is_empty() {
            return Err(err("listeners".into(), "a gateway needs a listener".into()));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if !l.tls.is_empty() && l.redirect_https.is_some() {
                return Err(err(
                    format!("listeners[{i}].redirect_https"),
                    "only a plaintext listener redirects to HTTPS".into(),
                ));
            }
            if l.redirect_https == Some(0) {
                return Err(err(
                    format!("listeners[{i}].redirect_https"),
                    "port 0".into(),
                ));
            }
        }
        let mut by_host = HashMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let host = h.host.to_ascii_lowercase();
            let ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(err(
                    format!("hosts[{i}].host"),
                    format!("{:?} is not a host name", h.host),
                ));
            }
            if h.service.is_empty() {
                return Err(err(
                    format!("hosts[{i}].service"),
                    "must not be empty".into(),
                ));
            }
            if by_host
                .insert(host, Arc::<str>::from(h.service.as_str()))
                .is_some()
            {
                return Err(err(
                    format!("hosts[{i}].host"),
                    format!("{:?} is listed twice", h.host),
                ));
            }
        }
        let tls_reload_interval = self.tls_reload_interval.map_or(DEFAULT_TLS_RELOAD, |d| d.0);
        if tls_reload_interval < Duration::from_millis(100) {
            return Err(err(
                "tls_reload_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        Ok(GatewayConfig {
            listeners: self
                .listeners
                .into_iter()
                .map(|l| GatewayListener {
                    listen: l.listen,
                    tls: l.tls,
                    redirect_https: l.redirect_https,
                })
                .collect(),
            hosts: Arc::new(GatewayHosts { by_host }),
            tls_reload_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<GatewayConfig, String> {
        let raw: RawGateway = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        raw.validate("gw.yaml")
    }

    #[test]
    fn hosts_resolve_without_case_and_mistakes_name_their_field() {
        let gw = parse(
            "listeners: [{listen: '127.0.0.1:0'}]\nhosts: [{host: Shop.Example, service: web}]",
        )
        .expect("valid");
        assert_eq!(gw.hosts.service("shop.example").map(|s| &**s), Some("web"));
        assert_eq!(gw.hosts.service("SHOP.example.").map(|s| &**s), Some("web"));
        assert_eq!(gw.hosts.service("other.example"), None);
        for (yaml, field) in [
            ("listeners: []", "gateway.listeners"),
            (
                "listeners: [{listen: '127.0.0.1:0', tls: [{cert: a, key: b}], redirect_https: 443}]",
                "gateway.listeners[0].redirect_https",
            ),
            (
                "listeners: [{listen: '127.0.0.1:0'}]\nhosts: [{host: a, service: x}, {host: A, service: y}]",
                "gateway.hosts[1].host",
            ),
            (
                "listeners: [{listen: '127.0.0.1:0'}]\nhosts: [{host: 'a b', service: x}]",
                "gateway.hosts[0].host",
            ),
        ] {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(field), "{yaml}: {err}");
        }
    }
}
