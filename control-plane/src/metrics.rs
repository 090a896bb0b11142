//! The control plane's own Prometheus metrics.
//!
//! Each server owns its registry (not the process-global one), so several servers in
//! one test process keep separate counts.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Open gRPC connections (one per proxy in normal operation).
    pub connected_proxies: IntGauge,
    /// Open `Discovery.Watch` streams.
    pub subscriptions: IntGauge,
    pub updates_pushed: IntCounter,
    /// From the source change being applied to the index until the update is handed
    /// to a subscriber's stream; initial states are not observed (nothing changed).
    pub push_latency: Histogram,
    /// Reading and validating the whole source after a change.
    pub source_load: Histogram,
    pub source_changes_applied: IntCounter,
    pub source_changes_rejected: IntCounter,
    pub source_generation: IntGauge,
    pub acks: IntCounter,
    pub nacks: IntCounter,
    /// Identity.Certify answers by result: issued, denied (bad proof), invalid,
    /// unavailable (the proof could not be checked, e.g. the API server is down).
    pub certificates: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(Opts::new(name, help).namespace("weft_control"))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(&registry, Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help).namespace("weft_control"))
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            register(&registry, Box::new(c.clone()));
            c
        };
        let push_latency = Histogram::with_opts(
            HistogramOpts::new(
                "push_latency_seconds",
                "Time from a source change being applied to the update being handed to a subscriber's stream",
            )
            .namespace("weft_control")
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5,
            ]),
        )
        .unwrap_or_else(|e| panic!("metric push_latency_seconds: {e}"));
        register(&registry, Box::new(push_latency.clone()));
        let source_load = Histogram::with_opts(
            HistogramOpts::new(
                "source_load_seconds",
                "Time to read and validate the whole mesh description after a change",
            )
            .namespace("weft_control")
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .unwrap_or_else(|e| panic!("metric source_load_seconds: {e}"));
        register(&registry, Box::new(source_load.clone()));
        let certificates = IntCounterVec::new(
            Opts::new(
                "certificates_total",
                "Identity.Certify answers by result (issued, denied, invalid, unavailable)",
            )
            .namespace("weft_control"),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("metric certificates_total: {e}"));
        register(&registry, Box::new(certificates.clone()));
        Metrics {
            certificates,
            connected_proxies: gauge("connected_proxies", "Open gRPC connections from proxies"),
            subscriptions: gauge("subscriptions", "Open Discovery.Watch streams"),
            updates_pushed: counter(
                "updates_pushed_total",
                "Service updates handed to subscriber streams, initial states included",
            ),
            push_latency,
            source_load,
            source_changes_applied: counter(
                "source_changes_applied_total",
                "Valid mesh states applied from the source",
            ),
            source_changes_rejected: counter(
                "source_changes_rejected_total",
                "Source changes rejected as invalid (the last good state keeps serving)",
            ),
            source_generation: gauge(
                "source_generation",
                "Generation of the mesh state currently served (0 before the first)",
            ),
            acks: counter("acks_total", "Updates proxies reported as applied"),
            nacks: counter("nacks_total", "Updates proxies reported as rejected"),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Registration fails only for a duplicate or malformed name, which is a bug in this
// file, caught by every test that builds `Metrics`.
fn register(registry: &Registry, c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = registry.register(c) {
        panic!("registering metric: {e}");
    }
}
