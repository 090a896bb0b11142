//! Kubernetes ServiceAccount tokens as proof of identity: the proxy sends the
//! projected token the kubelet mounts into its pod (audience-bound to Weft), and the
//! API server's TokenReview API says whose it is.
//!
//! A proof passes only when the API server says the token is authenticated, for our
//! audience, and belongs to exactly `system:serviceaccount:<namespace>:<sa>` of the
//! workload the proxy claims, so a proxy can only ever get its own ServiceAccount's
//! SPIFFE ID. A token for another audience (for instance the pod's ordinary API
//! token) is refused even if the API server accepts it for itself, so a token stolen
//! from Weft cannot be replayed against the API server and vice versa.
//!
//! Results are not cached: a proxy asks once per certificate lifetime (about every
//! 17 h by default), so the API server's load is negligible, and without a cache a
//! token invalidated by deleting its pod is refused as soon as the API server stops
//! accepting it: kube-apiserver itself remembers a successful authentication for
//! 10 s (`TokenSuccessCacheTTL`), so a review within 10 s of the last one may still
//! accept the token of a pod deleted in between.
//!
//! Failing to ask (API server unreachable, slow, refusing our own credentials) is
//! [`ProofError::Unavailable`], never a rejection: the proxy retries with backoff.
//! The token is never logged, and no error message here contains it.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use weft_api::v1::certify_request::Proof;

use super::proof::{IdentityProof, ProofError, Workload};

/// The default audience proxies' projected tokens are bound to.
pub const DEFAULT_AUDIENCE: &str = "weft";
/// How long one TokenReview may take, connecting included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Real tokens are about 1 KiB; anything much larger is not worth sending on.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Checks `service_account_token` proofs with the TokenReview API.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    timeout: Duration,
}

impl TokenReviewer {
    /// Uses `client`; each review asks for `audience` and gives up after `timeout`.
    pub fn new(client: kube::Client, audience: String, timeout: Duration) -> Self {
        TokenReviewer {
            client,
            audience,
            timeout,
        }
    }

    /// A client for `config`, with connect and read timeouts of `timeout` and
    /// without kube's own retries (the proxy retries, with backoff).
    pub fn from_config(
        mut config: kube::Config,
        audience: String,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        config.connect_timeout = Some(timeout);
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        // The read timeout counts from the request, not from when a pooled
        // connection went idle.
        config.reset_reader_on_write = true;
        config.default_retry = false;
        let client = kube::Client::try_from(config)
            .map_err(|e| anyhow::anyhow!("building the Kubernetes client: {e}"))?;
        Ok(Self::new(client, audience, timeout))
    }

    /// The API server from the environment, as kubectl finds it: `$KUBECONFIG` or
    /// `~/.kube/config`, else the in-cluster ServiceAccount.
    pub async fn from_environment(audience: String, timeout: Duration) -> anyhow::Result<Self> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("finding the Kubernetes API server: {e}"))?;
        Self::from_config(config, audience, timeout)
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    async fn review(&self, token: &str) -> Result<Option<TokenReviewStatus>, ProofError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let api = kube::Api::<TokenReview>::all(self.client.clone());
        match tokio::time::timeout(self.timeout, api.create(&PostParams::default(), &review)).await
        {
            Err(_) => Err(ProofError::Unavailable(format!(
                "the Kubernetes API server did not answer the TokenReview within {:?}",
                self.timeout
            ))),
            // kube's errors carry the API server's status or a transport error; the
            // request (and so the token) is not part of them.
            Ok(Err(e)) => Err(ProofError::Unavailable(format!(
                "the TokenReview failed: {}",
                describe(&e)
            ))),
            Ok(Ok(answer)) => Ok(answer.status),
        }
    }
}

/// What went wrong asking the API server, in words for the log.
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("{other}"),
    }
}

/// The username the API server gives `workload`'s ServiceAccount.
pub fn service_account_username(workload: &Workload) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        workload.namespace, workload.service_account
    )
}

/// Decides a TokenReview answer for `claimed`, asked for `audience`.
pub fn judge(
    status: Option<&TokenReviewStatus>,
    audience: &str,
    claimed: &Workload,
) -> Result<(), ProofError> {
    let who = format!("{}/{}", claimed.namespace, claimed.service_account);
    let reject = |why: String| Err(ProofError::Rejected(format!("{who}: {why}")));
    let Some(status) = status else {
        return reject("the TokenReview came back without a status".into());
    };
    if status.authenticated != Some(true) {
        return reject(match status.error.as_deref() {
            Some(error) if !error.is_empty() => format!("the token is not valid ({error})"),
            _ => "the token is not valid".into(),
        });
    }
    // An authenticator that ignores audiences answers without ours; such a token
    // may be one meant for the API server itself.
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return reject(format!(
            "the token is not for the audience {audience:?} (it is for {audiences:?})"
        ));
    }
    let expected = service_account_username(claimed);
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    if username != expected {
        return reject(format!("the token belongs to {username:?}, not {expected}"));
    }
    Ok(())
}

#[tonic::async_trait]
impl IdentityProof for TokenReviewer {
    async fn verify(&self, proof: Option<&Proof>, claimed: &Workload) -> Result<(), ProofError> {
        let token = match proof {
            None => return Err(ProofError::Missing),
            Some(Proof::LocalToken(_)) => return Err(ProofError::Unsupported("local token")),
            Some(Proof::ServiceAccountToken(token)) => token.trim(),
        };
        if token.is_empty() {
            return Err(ProofError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ProofError::Rejected(format!(
                "{}/{}: the token is longer than {MAX_TOKEN_BYTES} bytes",
                claimed.namespace, claimed.service_account
            )));
        }
        let status = self.review(token).await?;
        judge(status.as_ref(), &self.audience, claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn orders() -> Workload {
        Workload {
            namespace: "shop".into(),
            service_account: "orders".into(),
        }
    }

    fn status(authenticated: bool, username: &str, audiences: &[&str]) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    #[test]
    fn accepts_only_an_authenticated_token_of_the_claimed_account_for_our_audience() {
        let ok = status(true, "system:serviceaccount:shop:orders", &["weft"]);
        assert!(judge(Some(&ok), "weft", &orders()).is_ok());

        let cases = [
            (
                status(false, "system:serviceaccount:shop:orders", &["weft"]),
                "not valid",
            ),
            (
                status(true, "system:serviceaccount:shop:orders", &[]),
                "audience",
            ),
            (
                status(true, "system:serviceaccount:shop:orders", &["other"]),
                "audience",
            ),
            (
                status(true, "system:serviceaccount:shop:admin", &["weft"]),
                "belongs to",
            ),
            (
                status(true, "system:serviceaccount:shop:orders:x", &["weft"]),
                "belongs to",
            ),
            (status(true, "system:node:orders", &["weft"]), "belongs to"),
        ];
        for (answer, why) in cases {
            match judge(Some(&answer), "weft", &orders()) {
                Err(ProofError::Rejected(msg)) => assert!(msg.contains(why), "{msg}"),
                other => panic!("{answer:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            judge(None, "weft", &orders()),
            Err(ProofError::Rejected(_))
        ));
    }

    #[test]
    fn the_api_servers_reason_is_kept() {
        let mut answer = status(false, "", &[]);
        answer.error = Some("[invalid bearer token, token has been invalidated]".into());
        match judge(Some(&answer), "weft", &orders()) {
            Err(ProofError::Rejected(msg)) => {
                assert!(msg.contains("token has been invalidated"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
}
