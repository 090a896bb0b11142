//! `weft.v1.Identity`: checks a proxy's proof and signs its CSR.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prometheus::IntCounterVec;
use tonic::{Request, Response, Status};
use weft_api::spiffe::SpiffeId;
use weft_api::v1;
use weft_api::v1::identity_server::{Identity, IdentityServer};

use super::ca::CertificateAuthority;
use super::proof::{IdentityProof, ProofError, Workload};

pub struct IdentityService {
    ca: Arc<CertificateAuthority>,
    proof: Arc<dyn IdentityProof>,
    trust_domain: String,
    issued: IntCounterVec,
}

impl IdentityService {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        proof: Arc<dyn IdentityProof>,
        trust_domain: String,
        issued: IntCounterVec,
    ) -> IdentityServer<IdentityService> {
        IdentityServer::new(IdentityService {
            ca,
            proof,
            trust_domain,
            issued,
        })
    }

    fn count(&self, result: &str) {
        self.issued.with_label_values(&[result]).inc();
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<v1::CertifyRequest>,
    ) -> Result<Response<v1::CertifyResponse>, Status> {
        let req = request.into_inner();
        let id = SpiffeId::parse(&req.identity).map_err(|e| {
            self.count("invalid");
            Status::invalid_argument(e.to_string())
        })?;
        if id.trust_domain != self.trust_domain {
            self.count("invalid");
            return Err(Status::invalid_argument(format!(
                "{id} is outside the trust domain {}",
                self.trust_domain
            )));
        }
        let claimed = Workload {
            namespace: id.namespace.clone(),
            service_account: id.service_account.clone(),
        };
        match self.proof.verify(req.proof.as_ref(), &claimed).await {
            Ok(()) => {}
            // Not the proxy's fault: UNAVAILABLE makes it retry with backoff.
            Err(e @ ProofError::Unavailable(_)) => {
                self.count("unavailable");
                tracing::warn!(identity = %id, error = %e, "cannot check the proof of identity");
                return Err(Status::unavailable(e.to_string()));
            }
            Err(e) => {
                self.count("denied");
                tracing::warn!(identity = %id, error = %e, "certificate refused");
                return Err(Status::permission_denied(e.to_string()));
            }
        }
        let issued = self.ca.issue(&req.csr_pem, &id).map_err(|e| {
            self.count("invalid");
            Status::invalid_argument(e.to_string())
        })?;
        self.count("issued");
        tracing::debug!(identity = %id, "certificate issued");
        let not_after_unix = issued
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(Response::new(v1::CertifyResponse {
            chain_pem: issued.chain_pem,
            trust_bundle: Some(v1::TrustBundle {
                roots_pem: self.ca.bundle(),
            }),
            not_after_unix,
        }))
    }
}
