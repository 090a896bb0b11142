//! Where the mesh description comes from. A source produces whole, validated
//! [`MeshSpec`] states; the rest of the control plane never sees a half-valid one.
//!
//! Two sources implement it: the file source ([`file::FileSource`], a watched YAML file
//! or directory, for local use) and the Kubernetes source
//! ([`kubernetes::KubernetesSource`]: Services, EndpointSlices, Pods and Weft's CRDs,
//! watched through the API server). `weft-control serve --source` picks one.

pub mod file;
pub mod kubernetes;

use std::future::Future;
use std::sync::Arc;

use prometheus::{Histogram, IntCounter};
use tokio::sync::watch;
use weft_api::mesh::MeshSpec;

/// A validated state and the generation it was published as (1 for the first).
#[derive(Debug, Clone)]
pub struct SourceState {
    pub generation: u64,
    pub mesh: Arc<MeshSpec>,
}

/// Produces mesh states until shutdown.
pub trait Source: Send + 'static {
    /// A short name for logs, e.g. the watched path.
    fn describe(&self) -> String;

    /// Loads the first state and then follows changes, publishing each valid state
    /// through `out`. Returns an error only when the source cannot continue; an error
    /// before the first state means the control plane cannot start.
    fn run(self, out: Publisher) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The source's side of the channel to the index: numbers valid states and counts
/// rejected ones.
pub struct Publisher {
    tx: watch::Sender<Option<SourceState>>,
    generation: u64,
    rejected: IntCounter,
    load_time: Histogram,
}

impl Publisher {
    /// `rejected` counts rejected changes; `load_time` observes how long a source
    /// takes to read and validate a change.
    pub fn new(
        rejected: IntCounter,
        load_time: Histogram,
    ) -> (Self, watch::Receiver<Option<SourceState>>) {
        let (tx, rx) = watch::channel(None);
        (
            Publisher {
                tx,
                generation: 0,
                rejected,
                load_time,
            },
            rx,
        )
    }

    pub fn observe_load(&self, took: std::time::Duration) {
        self.load_time.observe(took.as_secs_f64());
    }

    /// Publishes a new valid state; consumers only ever see the latest one.
    pub fn publish(&mut self, mesh: Arc<MeshSpec>) -> u64 {
        self.generation += 1;
        let state = SourceState {
            generation: self.generation,
            mesh,
        };
        self.tx.send_replace(Some(state));
        self.generation
    }

    /// Records a rejected change; the previous state keeps serving. The source logs
    /// the details (it knows the file and line).
    pub fn reject(&self) {
        self.rejected.inc();
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True once nobody consumes states any more (the server is shutting down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when nobody consumes states any more.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
