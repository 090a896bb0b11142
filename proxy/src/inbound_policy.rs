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

/// The whole inbound policy of one workload; swapped in whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct InboundPolicy {
    pub(crate) default: PortPolicy,
    pub(crate) ports: HashMap<u16, PortPolicy>,
}

impl InboundPolicy {
    pub(crate) fn for_port(&self, port: u16) -> &PortPolicy {
        self.ports.get(&port).unwrap_or(&self.default)
    }

    pub(crate) fn from_proto(p: &v1::InboundPolicy) -> Self {
        let mut policy = InboundPolicy::default();
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
}
