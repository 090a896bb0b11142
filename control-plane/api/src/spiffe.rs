//! SPIFFE IDs as Weft uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.
//! Both the control plane (what a proof allows) and the proxy (what a peer presents)
//! parse them here, so the two sides agree on what a valid identity is.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Weft SPIFFE ID (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)"
)]
pub struct InvalidSpiffeId(pub String);

/// Trust domains and path segments: lower-case letters, digits, '-', '.', '_'.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

impl SpiffeId {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, InvalidSpiffeId> {
        let id = SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        if [trust_domain, namespace, service_account]
            .iter()
            .all(|s| valid_segment(s))
        {
            Ok(id)
        } else {
            Err(InvalidSpiffeId(id.to_string()))
        }
    }

    pub fn parse(s: &str) -> Result<SpiffeId, InvalidSpiffeId> {
        let invalid = || InvalidSpiffeId(s.to_string());
        let rest = s.strip_prefix("spiffe://").ok_or_else(invalid)?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                SpiffeId::new(td, ns, sa).map_err(|_| invalid())
            }
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("valid");
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.service_account, "orders");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/orders");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "spiffe://cluster.local/ns/shop",
            "spiffe://cluster.local/ns/shop/sa/orders/x",
            "https://cluster.local/ns/shop/sa/orders",
            "spiffe://cluster.local/ns/Shop/sa/orders",
            "spiffe://cluster.local/ns//sa/orders",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }
}
