//! Proofs of identity: what a proxy shows so the CA will sign a certificate for a
//! given SPIFFE ID. Every kind of proof answers one question through
//! [`IdentityProof`]: which (namespace, service account) does this proof allow?
//! The local kind is an HMAC token the control plane derives from a secret in its
//! state directory; the Kubernetes kind is in [`super::token_review`].

use std::path::Path;

use anyhow::Context as _;
use ring::hmac;

use weft_api::v1::certify_request::Proof;

const SECRET_FILE: &str = "token-secret";
const TOKEN_PREFIX: &str = "weft1.";

/// The workload a proof speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("no proof of identity was given")]
    Missing,
    #[error("this control plane does not accept {0} proofs")]
    Unsupported(&'static str),
    #[error("the proof is not valid for {0}")]
    Rejected(String),
    /// The proof could not be checked right now (e.g. the Kubernetes API server did
    /// not answer); the caller should retry, the proof itself may be fine.
    #[error("the proof cannot be checked now: {0}")]
    Unavailable(String),
}

/// Checks a proof for the workload the caller claims to be.
#[tonic::async_trait]
pub trait IdentityProof: Send + Sync + 'static {
    async fn verify(&self, proof: Option<&Proof>, claimed: &Workload) -> Result<(), ProofError>;
}

/// Per-workload tokens: `weft1.` + hex(HMAC-SHA256(secret, namespace "/" account)).
/// Tokens need no storage and survive restarts; rotating the secret revokes them all.
pub struct LocalTokens {
    key: hmac::Key,
}

impl LocalTokens {
    pub fn from_secret(secret: &[u8]) -> Self {
        LocalTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The secret from `state_dir`, created on first use.
    pub fn in_state_dir(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join(SECRET_FILE);
        if !path.exists() {
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
            let secret: [u8; 32] = rand::random();
            super::publish(&path, &hex(&secret), true)?;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the token secret {}", path.display()))?;
        let text = text.trim();
        anyhow::ensure!(
            text.len() >= 32,
            "the token secret {} is shorter than 32 characters",
            path.display()
        );
        Ok(Self::from_secret(text.as_bytes()))
    }

    fn message(workload: &Workload) -> String {
        format!("{}/{}", workload.namespace, workload.service_account)
    }

    pub fn token(&self, workload: &Workload) -> String {
        let tag = hmac::sign(&self.key, Self::message(workload).as_bytes());
        format!("{TOKEN_PREFIX}{}", hex(tag.as_ref()))
    }

    fn check(&self, token: &str, workload: &Workload) -> bool {
        let Some(tag) = token.trim().strip_prefix(TOKEN_PREFIX).and_then(unhex) else {
            return false;
        };
        // Constant-time comparison inside ring.
        hmac::verify(&self.key, Self::message(workload).as_bytes(), &tag).is_ok()
    }
}

#[tonic::async_trait]
impl IdentityProof for LocalTokens {
    async fn verify(&self, proof: Option<&Proof>, claimed: &Workload) -> Result<(), ProofError> {
        match proof {
            None => Err(ProofError::Missing),
            Some(Proof::ServiceAccountToken(_)) => {
                Err(ProofError::Unsupported("Kubernetes service-account"))
            }
            Some(Proof::LocalToken(token)) => {
                if self.check(token, claimed) {
                    Ok(())
                } else {
                    Err(ProofError::Rejected(Self::message(claimed)))
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ns: &str, sa: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    #[tokio::test]
    async fn a_token_proves_only_its_own_workload() {
        let tokens = LocalTokens::from_secret(b"0123456789abcdef0123456789abcdef");
        let t = tokens.token(&w("shop", "orders"));
        let proof = Proof::LocalToken(t);
        assert!(
            tokens
                .verify(Some(&proof), &w("shop", "orders"))
                .await
                .is_ok()
        );
        assert!(
            tokens
                .verify(Some(&proof), &w("shop", "admin"))
                .await
                .is_err()
        );
        assert!(
            tokens
                .verify(Some(&proof), &w("other", "orders"))
                .await
                .is_err()
        );
        let forged = Proof::LocalToken("weft1.00ff".into());
        assert!(
            tokens
                .verify(Some(&forged), &w("shop", "orders"))
                .await
                .is_err()
        );
        assert!(tokens.verify(None, &w("shop", "orders")).await.is_err());
    }

    #[test]
    fn secret_persists_in_the_state_dir() {
        let dir = tempfile::tempdir().expect("dir");
        let a = LocalTokens::in_state_dir(dir.path()).expect("a");
        let b = LocalTokens::in_state_dir(dir.path()).expect("b");
        assert_eq!(a.token(&w("n", "s")), b.token(&w("n", "s")));
    }
}
