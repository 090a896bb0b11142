//! The live view's feed: every `limits.report_interval` the proxy sends the control
//! plane its running totals per direction and service, and the state of the
//! endpoints it sends to, ejections included (`Telemetry.Report`). Everything comes from what the proxy keeps anyway
//! (its Prometheus counters and histograms, the snapshot's endpoint health), read
//! off the request path, so reporting adds nothing per request.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::LabelPair;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use weft_api::v1;
use weft_api::v1::telemetry_client::TelemetryClient;

use crate::endpoint::EndpointState;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;

/// What the reporter reads and where it sends.
pub(crate) struct ReportInputs {
    pub(crate) channel: Channel,
    pub(crate) node: v1::Node,
    pub(crate) metrics: Metrics,
    pub(crate) store: SnapshotStore,
    pub(crate) interval: Duration,
}

/// Reports until `shutdown`, reconnecting with backoff when the stream breaks.
pub(crate) fn spawn(inputs: ReportInputs, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut backoff = inputs.interval;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = report_once(&inputs) => {
                    tracing::debug!(reason = %ended, "telemetry stream ended; reconnecting");
                }
            }
            let wait = backoff.mul_f64(rand::random::<f64>() + 0.5);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
}

/// One stream: a report now and every interval after, until the stream fails.
async fn report_once(inputs: &ReportInputs) -> String {
    let (tx, rx) = mpsc::channel(2);
    let mut client = TelemetryClient::new(inputs.channel.clone());
    let call = client.report(ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut tick = tokio::time::interval(inputs.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0;
    loop {
        tokio::select! {
            ended = &mut call => return match ended {
                Ok(_) => "closed by the control plane".to_string(),
                Err(status) => status.to_string(),
            },
            _ = tick.tick() => {
                sequence += 1;
                let report = build(inputs, sequence);
                // A full queue means the control plane is not reading: skip one.
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(report) {
                    return "stream closed".to_string();
                }
            }
        }
    }
}

type Traffic = BTreeMap<(i32, String), v1::TrafficTotals>;
type Tcp = BTreeMap<(i32, String), v1::TcpTotals>;

/// The opaque TCP totals for one direction and service, created on first sight.
fn tcp_totals<'t>(
    tcp: &'t mut Tcp,
    direction: v1::TrafficDirection,
    service: &str,
) -> &'t mut v1::TcpTotals {
    tcp.entry((direction as i32, service.to_string()))
        .or_insert_with(|| v1::TcpTotals {
            direction: direction as i32,
            service: service.to_string(),
            ..Default::default()
        })
}

/// The totals for one direction and service, created on first sight.
fn totals<'t>(
    traffic: &'t mut Traffic,
    direction: v1::TrafficDirection,
    service: &str,
) -> &'t mut v1::TrafficTotals {
    traffic
        .entry((direction as i32, service.to_string()))
        .or_insert_with(|| v1::TrafficTotals {
            direction: direction as i32,
            service: service.to_string(),
            ..Default::default()
        })
}

/// The current totals as a report.
pub(crate) fn build(inputs: &ReportInputs, sequence: u64) -> v1::ProxyReport {
    use v1::TrafficDirection::{Inbound, Outbound};

    let families = inputs.metrics.registry().gather();
    // Inbound series are labelled with the workload; the mesh knows it as a service
    // in the proxy's namespace.
    let inbound_key = format!("{}.{}", inputs.node.workload, inputs.node.namespace);
    let mut traffic = Traffic::new();
    let mut tcp = Tcp::new();
    let mut bounds = Vec::new();
    let (mut open_in, mut open_out, mut tls_in) = (0, 0, 0);
    for family in &families {
        for m in family.get_metric() {
            let labels = m.get_label();
            let (direction, service) = match label(labels, "direction") {
                Some("inbound") => (Inbound, inbound_key.as_str()),
                _ => (Outbound, label(labels, "service").unwrap_or_default()),
            };
            let counter = m.get_counter().get_value() as u64;
            let route = label(labels, "route").unwrap_or_default();
            match family.name() {
                "weft_requests_total" => {
                    let failed = label(labels, "status_class") == Some("5xx");
                    let t = totals(&mut traffic, direction, service);
                    t.requests += counter;
                    let r = route_totals(t, route);
                    r.requests += counter;
                    if failed {
                        t.failures += counter;
                        route_totals(t, route).failures += counter;
                    }
                }
                "weft_request_duration_seconds" => {
                    let buckets = m.get_histogram().get_bucket();
                    if bounds.is_empty() {
                        bounds = buckets.iter().map(|b| b.upper_bound()).collect();
                    }
                    let counts: Vec<u64> = buckets.iter().map(|b| b.cumulative_count()).collect();
                    // A service with routes has one series per route: its own
                    // latency is their sum.
                    let t = totals(&mut traffic, direction, service);
                    add_buckets(&mut t.latency_buckets, &counts);
                    add_buckets(&mut route_totals(t, route).latency_buckets, &counts);
                }
                "weft_attempts_total" => {
                    let t = totals(&mut traffic, direction, service);
                    t.attempts += counter;
                    if label(labels, "tls") == Some("true") {
                        t.tls_requests += counter;
                    }
                }
                "weft_overload_rejections_total" => {
                    let t = totals(&mut traffic, direction, service);
                    match label(labels, "limit") {
                        Some("connections") => t.overloaded_connections = counter,
                        Some("pending") => t.overloaded_pending = counter,
                        Some("active") => t.overloaded_active = counter,
                        Some("retries") => t.overloaded_retries = counter,
                        _ => {}
                    }
                }
                "weft_retries_total" => totals(&mut traffic, direction, service).retries = counter,
                "weft_retries_refused_total" => {
                    totals(&mut traffic, direction, service).retries_refused = counter;
                }
                "weft_inbound_requests_by_peer_total" if label(labels, "tls") == Some("true") => {
                    tls_in += counter;
                }
                "weft_tcp_service_connections_total" => {
                    let t = tcp_totals(&mut tcp, direction, service);
                    t.connections += counter;
                    if label(labels, "tls") == Some("true") {
                        t.tls_connections += counter;
                    }
                }
                "weft_tcp_service_open_connections" => {
                    let n = m.get_gauge().get_value().max(0.0) as u64;
                    let t = tcp_totals(&mut tcp, direction, service);
                    t.open += n;
                    if label(labels, "tls") == Some("true") {
                        t.open_tls += n;
                    }
                }
                "weft_tcp_service_received_bytes_total" => {
                    tcp_totals(&mut tcp, direction, service).received_bytes += counter;
                }
                "weft_tcp_service_sent_bytes_total" => {
                    tcp_totals(&mut tcp, direction, service).sent_bytes += counter;
                }
                "weft_tcp_service_failures_total" => {
                    tcp_totals(&mut tcp, direction, service).failures += counter;
                }
                "weft_open_connections" => {
                    let n = m.get_gauge().get_value().max(0.0) as u64;
                    match direction {
                        Inbound => open_in += n,
                        Outbound => open_out += n,
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(t) = traffic.get_mut(&(Inbound as i32, inbound_key)) {
        t.tls_requests = tls_in;
    }
    // Requests the outbound could not place have no service to show.
    traffic.retain(|(_, service), t| service != "unknown" && t.requests > 0);
    // Label sets past the proxy's bound are counted under "overflow": no service.
    tcp.retain(|(_, service), t| service != "overflow" && (t.connections > 0 || t.failures > 0));
    for t in traffic.values_mut() {
        // A series made ready but never used (a service's unmatched requests) is
        // not a route anyone sends to.
        t.routes.retain(|r| r.requests > 0);
        // Without routes, every request is under the route "": nothing to break down.
        if t.routes.iter().all(|r| r.route.is_empty()) {
            t.routes.clear();
        }
    }

    let snapshot = inputs.store.load();
    let mut ejections = Vec::new();
    let mut endpoints = Vec::new();
    for svc in snapshot.services.values() {
        let key = svc.key();
        let outbound = (Outbound as i32, key.clone());
        if !traffic.contains_key(&outbound) && !tcp.contains_key(&outbound) {
            continue;
        }
        for ep in &svc.endpoints {
            let ejected = ep.stats.health.is_ejected();
            endpoints.push(v1::EndpointStatus {
                service: key.clone(),
                endpoint: ep.addr.to_string(),
                identity: ep.identity.as_deref().unwrap_or_default().to_string(),
                state: match ep.state {
                    _ if ejected => "ejected",
                    EndpointState::Ready => "ready",
                    EndpointState::NotReady => "not-ready",
                    EndpointState::Terminating => "terminating",
                }
                .to_string(),
                in_flight: ep.stats.load.in_flight(),
                latency_ms: ep.stats.load.ewma_ms().unwrap_or(0.0),
                weight: ep.weight,
            });
        }
        for ep in &svc.endpoints {
            if let Some(e) = ep.stats.health.ejection() {
                ejections.push(v1::EndpointEjection {
                    service: key.clone(),
                    endpoint: ep.addr.to_string(),
                    reason: e.reason.label().to_string(),
                    remaining_ms: u64::try_from(e.remaining.as_millis()).unwrap_or(u64::MAX),
                    times: e.times,
                });
            }
        }
    }
    v1::ProxyReport {
        node: Some(inputs.node.clone()),
        sequence,
        traffic: traffic.into_values().collect(),
        ejections,
        open_inbound_connections: open_in,
        open_outbound_connections: open_out,
        latency_bounds: bounds,
        endpoints,
        tcp: tcp.into_values().collect(),
    }
}

/// One route's totals within `t`, created on first sight.
fn route_totals<'t>(t: &'t mut v1::TrafficTotals, route: &str) -> &'t mut v1::RouteTotals {
    let i = match t.routes.iter().position(|r| r.route == route) {
        Some(i) => i,
        None => {
            t.routes.push(v1::RouteTotals {
                route: route.to_string(),
                ..Default::default()
            });
            t.routes.len() - 1
        }
    };
    &mut t.routes[i]
}

/// Adds histogram counts bucket by bucket.
fn add_buckets(sum: &mut Vec<u64>, counts: &[u64]) {
    if sum.len() < counts.len() {
        sum.resize(counts.len(), 0);
    }
    for (a, b) in sum.iter_mut().zip(counts) {
        *a += b;
    }
}

fn label<'a>(labels: &'a [LabelPair], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name() == name)
        .map(LabelPair::value)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::metrics::{Direction, TcpFailure};
    use crate::snapshot::Snapshot;

    fn inputs(metrics: Metrics) -> ReportInputs {
        ReportInputs {
            // Never connected: build only reads the metrics and the snapshot.
            channel: Channel::from_static("http://127.0.0.1:9").connect_lazy(),
            node: v1::Node {
                id: "rabbitmq-1".into(),
                namespace: "default".into(),
                workload: "rabbitmq".into(),
                ..Default::default()
            },
            metrics,
            store: Arc::new(ArcSwap::from_pointee(Snapshot::empty("default"))),
            interval: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn opaque_tcp_is_reported_per_direction_and_service() {
        let metrics = Metrics::new();
        let inbound = metrics.service(Direction::Inbound, "rabbitmq");
        let peer = "spiffe://cluster.local/ns/default/sa/orders";
        let mtls = inbound.tcp(Some(peer));
        let _open = mtls.open();
        drop(mtls.open());
        mtls.received.inc_by(300);
        mtls.sent.inc_by(200);
        let plain = inbound.tcp(None);
        let _open_plain = plain.open();
        plain.received.inc_by(5);
        inbound.tcp_failed(TcpFailure::Forbidden);
        let outbound = metrics.service(Direction::Outbound, "db.default");
        outbound.tcp_failed(TcpFailure::NoEndpoints);

        let report = build(&inputs(metrics), 1);
        let find = |direction: v1::TrafficDirection, service: &str| {
            report
                .tcp
                .iter()
                .find(|t| t.direction == direction as i32 && t.service == service)
                .cloned()
                .unwrap_or_else(|| panic!("{service} in {:?}", report.tcp))
        };
        let broker = find(v1::TrafficDirection::Inbound, "rabbitmq.default");
        assert_eq!((broker.connections, broker.tls_connections), (3, 2));
        assert_eq!((broker.open, broker.open_tls), (2, 1));
        assert_eq!((broker.received_bytes, broker.sent_bytes), (305, 200));
        assert_eq!(broker.failures, 1);
        let db = find(v1::TrafficDirection::Outbound, "db.default");
        assert_eq!((db.connections, db.failures), (0, 1));
        assert!(report.traffic.is_empty(), "no HTTP: {:?}", report.traffic);
    }
}
