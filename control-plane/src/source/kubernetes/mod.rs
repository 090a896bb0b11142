//! The Kubernetes source: Services, EndpointSlices, Pods (for identities) and Weft's
//! own CRDs, watched cluster-wide and translated into one [`MeshSpec`] after each
//! burst of changes.
//!
//! - Nothing is published before every kind has been listed once, so proxies never
//!   see a mesh that is empty only because the lists are still running.
//! - After an API error the watches back off and resume; the last state keeps serving
//!   meanwhile (see [`watch`]).
//! - An invalid or conflicting custom resource is rejected alone, counted in
//!   `weft_control_source_changes_rejected_total` and logged (see [`translate`]).
//! - Gateway API HTTPRoutes and GRPCRoutes with a Service parent become that
//!   service's routes, and get `Accepted` / `ResolvedRefs` status (see [`routes`]);
//!   they are watched when the cluster has the CRDs at start.

pub mod crd;
pub mod routes;
mod status;
pub mod translate;
pub mod watch;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use kube::Client;
use tokio::sync::Notify;
use weft_api::mesh::MeshSpec;

use super::{Publisher, Source};
use translate::Translator;

/// How long the cluster must be quiet before a burst of changes is built as one mesh.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// A stream of changes that never goes quiet is still built this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the wait for the first lists says what it still waits for.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub struct KubernetesSource {
    client: Client,
    trust_domain: String,
    debounce: Duration,
}

impl KubernetesSource {
    /// `trust_domain` is the CA's: endpoint identities must match the certificates
    /// their proxies get.
    pub fn new(client: Client, trust_domain: impl Into<String>) -> Self {
        KubernetesSource {
            client,
            trust_domain: trust_domain.into(),
            debounce: DEFAULT_DEBOUNCE,
        }
    }

    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }
}

impl Source for KubernetesSource {
    fn describe(&self) -> String {
        "kubernetes source".to_string()
    }

    async fn run(self, mut out: Publisher) -> anyhow::Result<()> {
        let changed = Arc::new(Notify::new());
        let gateway_api = watch::GatewayApi::discover(&self.client).await;
        let (stores, watches) = watch::start(&self.client, gateway_api, &changed);
        let mut statuses = status::StatusWriter::new(self.client.clone());
        // The watch loops run inside this future: when the source stops, they stop.
        let mut watches = select_all(watches);
        loop {
            let waiting = stores.waiting_for();
            if waiting.is_empty() {
                break;
            }
            tokio::select! {
                _ = out.closed() => return Ok(()),
                (kind, _, _) = &mut watches => anyhow::bail!("the {kind} watch stopped"),
                _ = changed.notified() => {}
                _ = tokio::time::sleep(WAITING_LOG_INTERVAL) => {
                    tracing::info!(?waiting, "waiting for the first list of these kinds");
                }
            }
        }
        let mut translator = Translator::new(self.trust_domain);
        let mut current: Option<Arc<MeshSpec>> = None;
        loop {
            let started = Instant::now();
            let translation = translator.translate(&stores.objects());
            let took = started.elapsed();
            out.observe_load(took);
            for rejection in &translation.new_rejections {
                out.reject();
                tracing::warn!(
                    object = %rejection.object,
                    reason = %rejection.reason,
                    kept_last_good = rejection.kept_last_good,
                    "object rejected; the rest of the mesh is served"
                );
            }
            statuses.write(&translation.route_statuses).await;
            let mesh = match translation.mesh {
                Ok(mesh) => Some(mesh),
                Err(error) => {
                    out.reject();
                    tracing::error!(%error, serving_generation = out.generation(), "translated mesh is invalid; the last state keeps serving");
                    None
                }
            };
            if let Some(mesh) = mesh.filter(|m| current.as_deref() != Some(m)) {
                let mesh = Arc::new(mesh);
                let generation = out.publish(Arc::clone(&mesh));
                tracing::info!(
                    generation,
                    services = mesh.services.len(),
                    workloads = mesh.workloads.len(),
                    rejected = translation.rejected,
                    build_ms = took.as_secs_f64() * 1000.0,
                    "mesh from kubernetes published"
                );
                current = Some(mesh);
            }
            tokio::select! {
                _ = out.closed() => return Ok(()),
                (kind, _, _) = &mut watches => anyhow::bail!("the {kind} watch stopped"),
                _ = changed.notified() => {}
            }
            let burst_end = tokio::time::Instant::now() + MAX_DEBOUNCE;
            while tokio::time::Instant::now() < burst_end {
                tokio::select! {
                    _ = out.closed() => return Ok(()),
                    (kind, _, _) = &mut watches => anyhow::bail!("the {kind} watch stopped"),
                    _ = changed.notified() => continue,
                    _ = tokio::time::sleep(self.debounce) => break,
                }
            }
        }
    }
}
