//! Follows `Policy.WatchInbound` for this workload and swaps each policy in whole.
//! An empty policy (the mesh names none for us) restores the config's own policy.
//! A lost control plane keeps the last policy and is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_api::v1;
use weft_api::v1::policy_client::PolicyClient;

use super::Identity;
use crate::inbound_policy::InboundPolicy;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub(crate) fn spawn(
    identity: Arc<Identity>,
    channel: Channel,
    node: v1::Node,
    local: InboundPolicy,
    stop: CancellationToken,
) {
    let local = Arc::new(local);
    tokio::spawn(async move {
        let mut client = PolicyClient::new(channel);
        let mut backoff = BACKOFF_MIN;
        loop {
            let request = v1::InboundRequest {
                node: Some(node.clone()),
            };
            let watched = async {
                let mut stream = client.watch_inbound(request).await?.into_inner();
                while let Some(policy) = stream.message().await? {
                    backoff = BACKOFF_MIN;
                    if let Some(bundle) = policy
                        .trust_bundle
                        .as_ref()
                        .filter(|b| !b.roots_pem.is_empty())
                        && let Err(e) = identity.update_roots(&bundle.roots_pem)
                    {
                        tracing::warn!(error = %e, "trust bundle rejected; keeping the current one");
                    }
                    let (next, from) = if policy.ports.is_empty() {
                        // The config's policy, with what the mesh says of the app.
                        let mut next = (*local).clone();
                        next.app_http = InboundPolicy::app_http_from_proto(&policy.app_ports);
                        (Arc::new(next), "config")
                    } else {
                        (
                            Arc::new(InboundPolicy::from_proto(&policy)),
                            "control plane",
                        )
                    };
                    identity.inbound.store(next);
                    tracing::info!(version = policy.version, from, "inbound policy applied");
                }
                Ok::<(), tonic::Status>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = watched => if let Err(status) = result {
                    tracing::debug!(code = ?status.code(), message = status.message(), "policy stream ended");
                },
            }
            let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}
