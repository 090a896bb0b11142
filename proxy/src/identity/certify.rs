//! Getting and renewing the proxy's certificate. The private key is generated here
//! and never leaves the process; the control plane sees only a CSR and a proof.
//!
//! Renewal happens at about 70 % of the certificate's remaining lifetime, jittered
//! so a fleet started together does not renew together. A failed renewal is retried
//! with backoff while the old certificate keeps serving until it expires.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_api::v1;
use weft_api::v1::identity_client::IdentityClient;

use super::{Identity, unix_now};
use crate::config::Token;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const RENEW_AT: f64 = 0.7;

/// The proof a token is: `weft-control token`'s local tokens carry the `weft1.`
/// prefix; anything else (in a pod: the projected ServiceAccount token, a JWT) is a
/// Kubernetes service-account token for the control plane's TokenReview. So one
/// WEFT_IDENTITY_TOKEN_FILE works in a cluster and on a laptop alike.
fn proof(token: String) -> v1::certify_request::Proof {
    use v1::certify_request::Proof;
    if token.starts_with("weft1.") {
        Proof::LocalToken(token)
    } else {
        Proof::ServiceAccountToken(token)
    }
}

pub(crate) struct Certifier {
    identity: Arc<Identity>,
    client: IdentityClient<Channel>,
    token: Token,
}

impl Certifier {
    pub(crate) fn new(identity: Arc<Identity>, channel: Channel, token: Token) -> Self {
        Certifier {
            identity,
            client: IdentityClient::new(channel),
            token,
        }
    }

    /// One CSR round trip; on success the new certificate is in use. Returns the
    /// certificate's expiry (unix seconds).
    pub(crate) async fn certify_once(&mut self) -> Result<i64, String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("generating a key: {e}"))?;
        let id = self.identity.spiffe_id().to_string();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            id.clone()
                .try_into()
                .map_err(|e: rcgen::Error| format!("identity {id}: {e}"))?,
        )];
        let csr_pem = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| format!("building the CSR: {e}"))?;
        let token = self.token.read()?;
        let response = self
            .client
            .certify(v1::CertifyRequest {
                csr_pem,
                identity: id,
                proof: Some(proof(token)),
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        let roots = response
            .trust_bundle
            .map(|b| b.roots_pem)
            .unwrap_or_default();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        self.identity
            .install(
                &response.chain_pem,
                key_der,
                &roots,
                response.not_after_unix,
            )
            .map_err(|e| e.to_string())?;
        Ok(response.not_after_unix)
    }

    /// Keeps a valid certificate installed until `stop`.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let wait = match self.certify_once().await {
                Ok(not_after) => {
                    self.identity.metrics.renewal(true);
                    backoff = BACKOFF_MIN;
                    let remaining = u64::try_from(not_after - unix_now()).unwrap_or(0);
                    let jitter = rand::rng().random_range(0.9..1.0);
                    let wait = Duration::from_secs(remaining).mul_f64(RENEW_AT * jitter);
                    tracing::info!(
                        identity = %self.identity.spiffe_id(),
                        renew_in = ?wait,
                        "certificate installed"
                    );
                    wait.max(Duration::from_millis(500))
                }
                Err(e) => {
                    self.identity.metrics.renewal(false);
                    tracing::warn!(
                        error = %e,
                        valid = self.identity.has_valid_cert(),
                        retry_in = ?backoff,
                        "certificate request failed"
                    );
                    let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::certify_request::Proof;

    #[test]
    fn local_tokens_and_service_account_tokens_are_told_apart() {
        assert_eq!(
            proof("weft1.00ff".into()),
            Proof::LocalToken("weft1.00ff".into())
        );
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsid2VmdCJdfQ.c2ln".to_string();
        assert_eq!(proof(jwt.clone()), Proof::ServiceAccountToken(jwt));
    }
}
