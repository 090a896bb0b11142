//! Inbound policy: per port, whether plaintext is accepted (`permissive`) or only
//! mTLS (`strict`), and which callers are allowed.

use std::collections::HashMap;

use serde::Deserialize;
use weft_api::spiffe::SpiffeId;
use weft_api::v1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsMode {
    #[default]
    Strict,
    Permissive,
}

#[derive(Debug, Clone)]
pub(crate) struct Authorization {
    pub(crate) allow_identities: Vec<String>,
    pub(crate) allow_namespaces: Vec<String>,
    pub(crate) allow_any_meshed: bool,
    /// Plaintext callers (permissive mode only; strict mode never sees them).
    pub(crate) allow_unauthenticated: bool,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            allow_identities: Vec::new(),
            allow_namespaces: Vec::new(),
            allow_any_meshed: true,
            allow_unauthenticated: true,
        }
    }
}

impl Authorization {
    pub(crate) fn allows(&self, peer: Option<&SpiffeId>, peer_str: Option<&str>) -> bool {
        match peer {
            None => self.allow_unauthenticated,
            Some(id) => {
                self.allow_any_meshed
                    || peer_str.is_some_and(|s| self.allow_identities.iter().any(|a| a == s))
                    || self.allow_namespaces.contains(&id.namespace)
            }
        }
    }

    fn from_proto(a: &v1::Authorization) -> Self {
        Authorization {
            allow_identities: a.allow_identities.clone(),
            allow_namespaces: a.allow_namespaces.clone(),
            allow_any_meshed: a.allow_any_meshed,
            allow_unauthenticated: a.allow_unauthenticated,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PortPolicy {
    pub(crate) mode: TlsMode,
    pub(crate) authorization: Authorization,
}

/// The HTTP version an app port speaks, when only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppHttp {
    Http1,
    Http2,
}

/// The whole inbound policy of one workload; swapped in whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct InboundPolicy {
    pub(crate) default: PortPolicy,
    pub(crate) ports: HashMap<u16, PortPolicy>,
    /// App ports whose HTTP version the mesh declares (the control plane's
    /// `app_ports`); the proxy's own `http1_ports`/`http2_ports` come first.
    pub(crate) app_http: HashMap<u16, AppHttp>,
}

impl InboundPolicy {
    pub(crate) fn for_port(&self, port: u16) -> &PortPolicy {
        self.ports.get(&port).unwrap_or(&self.default)
    }

    /// What the mesh declares app port `port` to speak, if anything.
    pub(crate) fn app_http(&self, port: u16) -> Option<AppHttp> {
        if self.app_http.is_empty() {
            return None;
        }
        self.app_http.get(&port).copied()
    }

    /// The control plane's app ports; ports not HTTP/1.1 or HTTP/2 (gRPC is
    /// HTTP/2) are left out.
    pub(crate) fn app_http_from_proto(ports: &[v1::AppPort]) -> HashMap<u16, AppHttp> {
        ports
            .iter()
            .filter_map(|p| {
                let http = match p.protocol() {
                    v1::Protocol::Http1 => AppHttp::Http1,
                    v1::Protocol::Http2 | v1::Protocol::Grpc => AppHttp::Http2,
                    v1::Protocol::Detect | v1::Protocol::Opaque => return None,
                };
                Some((u16::try_from(p.port).ok()?, http))
            })
            .collect()
    }

    pub(crate) fn from_proto(p: &v1::InboundPolicy) -> Self {
        let mut policy = InboundPolicy {
            app_http: Self::app_http_from_proto(&p.app_ports),
            ..InboundPolicy::default()
        };
        for port in &p.ports {
            let pp = PortPolicy {
                mode: if port.mode == v1::TlsMode::Permissive as i32 {
                    TlsMode::Permissive
                } else {
                    TlsMode::Strict
                },
                authorization: port
                    .authorization
                    .as_ref()
                    .map(Authorization::from_proto)
                    .unwrap_or_default(),
            };
            match u16::try_from(port.port) {
                Ok(0) | Err(_) => policy.default = pp,
                Ok(n) => {
                    policy.ports.insert(n, pp);
                }
            }
        }
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_by_identity_namespace_or_any() {
        let a = Authorization {
            allow_identities: vec!["spiffe://td/ns/a/sa/x".into()],
            allow_namespaces: vec!["b".into()],
            allow_any_meshed: false,
            allow_unauthenticated: false,
        };
        let check = |s: &str| {
            let id = SpiffeId::parse(s).expect("id");
            a.allows(Some(&id), Some(s))
        };
        assert!(check("spiffe://td/ns/a/sa/x"));
        assert!(!check("spiffe://td/ns/a/sa/y"));
        assert!(check("spiffe://td/ns/b/sa/anything"));
        assert!(!a.allows(None, None));
    }

    #[test]
    fn the_meshs_app_ports_say_which_http_an_app_speaks() {
        let port = |port, protocol: v1::Protocol| v1::AppPort {
            port,
            protocol: protocol as i32,
        };
        let policy = InboundPolicy::from_proto(&v1::InboundPolicy {
            app_ports: vec![
                port(8080, v1::Protocol::Http1),
                port(9090, v1::Protocol::Http2),
                port(50051, v1::Protocol::Grpc),
                port(3306, v1::Protocol::Opaque),
                port(70000, v1::Protocol::Http2),
            ],
            ..Default::default()
        });
        assert_eq!(policy.app_http(8080), Some(AppHttp::Http1));
        assert_eq!(policy.app_http(9090), Some(AppHttp::Http2));
        assert_eq!(policy.app_http(50051), Some(AppHttp::Http2));
        assert_eq!(policy.app_http(3306), None);
        assert_eq!(policy.app_http(80), None);
        assert_eq!(policy.app_http.len(), 3, "no port out of range");
    }
}
