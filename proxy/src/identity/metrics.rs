//! Identity metrics: handshakes by result, the certificate's expiry, renewals, and
//! inbound requests by TLS and peer identity.

use crate::metrics::Direction;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::HandshakeFailure;

#[derive(Clone)]
pub(crate) struct IdentityMetrics {
    handshakes: IntCounterVec,
    pub(crate) cert_expiry: IntGauge,
    renewals: IntCounterVec,
    peer_requests: IntCounterVec,
}

impl IdentityMetrics {
    pub(crate) fn new(registry: &Registry) -> IdentityMetrics {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable!("static metric {name} is valid: {e}"));
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::warn!(error = %e, "metric {name} not registered");
            }
            c
        };
        let cert_expiry = IntGauge::new(
            "weft_identity_cert_expiry_timestamp_seconds",
            "Unix time at which the proxy's current certificate expires (0: none).",
        )
        .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
        if let Err(e) = registry.register(Box::new(cert_expiry.clone())) {
            tracing::warn!(error = %e, "metric not registered");
        }
        IdentityMetrics {
            handshakes: counter(
                "weft_tls_handshakes_total",
                "mTLS handshakes by direction and result (ok or the failure reason).",
                &["direction", "result"],
            ),
            cert_expiry,
            renewals: counter(
                "weft_identity_renewals_total",
                "Certificate requests to the control plane by result.",
                &["result"],
            ),
            peer_requests: counter(
                "weft_inbound_requests_by_peer_total",
                "Inbound HTTP requests by whether they came over mTLS and the caller's SPIFFE ID.",
                &["tls", "peer_identity"],
            ),
        }
    }

    pub(crate) fn handshake(&self, direction: Direction, failure: Option<&HandshakeFailure>) {
        let result = failure.map_or("ok", |f| f.reason());
        self.handshakes
            .with_label_values(&[direction.label(), result])
            .inc();
    }

    pub(crate) fn renewal(&self, ok: bool) {
        self.renewals
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The counter for one inbound connection's requests, resolved once per
    /// connection. Identities are bounded by the mesh's service accounts.
    pub(crate) fn peer_requests(&self, peer: Option<&str>) -> prometheus::IntCounter {
        match peer {
            Some(id) => self.peer_requests.with_label_values(&["true", id]),
            None => self.peer_requests.with_label_values(&["false", ""]),
        }
    }
}
