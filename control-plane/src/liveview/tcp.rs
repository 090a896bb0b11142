//! The live view's opaque TCP (brokers, databases): per service and per edge, the
//! connections open now, those opened and the bytes moved over a window, the
//! share over mTLS and the connections that could not be forwarded.

use std::time::{Duration, Instant};

use weft_api::live::TcpView;
use weft_api::v1;

use super::Received;
use super::summary::{Sum, Tally, grew, parts, per_second};

/// One service's or edge's numbers, summed over proxies as they are added.
#[derive(Debug, Clone, Default)]
struct Tcp {
    open: u64,
    open_tls: u64,
    connections: u64,
    tls_connections: u64,
    bytes_in: u64,
    bytes_out: u64,
    failures: u64,
    connections_per_second: f64,
    bytes_in_per_second: f64,
    bytes_out_per_second: f64,
}

impl Tcp {
    /// The growth from `old` to `new` over `secs`; what is open counts only from a
    /// proxy that reported lately (`fresh`).
    fn grown(new: &v1::TcpTotals, old: Option<&v1::TcpTotals>, secs: f64, fresh: bool) -> Tcp {
        let zero = v1::TcpTotals::default();
        let old = old.unwrap_or(&zero);
        let connections = grew(new.connections, old.connections);
        let bytes_in = grew(new.received_bytes, old.received_bytes);
        let bytes_out = grew(new.sent_bytes, old.sent_bytes);
        Tcp {
            open: if fresh { new.open } else { 0 },
            open_tls: if fresh { new.open_tls } else { 0 },
            connections,
            tls_connections: grew(new.tls_connections, old.tls_connections),
            bytes_in,
            bytes_out,
            failures: grew(new.failures, old.failures),
            connections_per_second: per_second(connections, secs),
            bytes_in_per_second: per_second(bytes_in, secs),
            bytes_out_per_second: per_second(bytes_out, secs),
        }
    }
}

impl Sum for Tcp {
    fn add(&mut self, o: &Tcp) {
        self.open += o.open;
        self.open_tls += o.open_tls;
        self.connections += o.connections;
        self.tls_connections += o.tls_connections;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.failures += o.failures;
        self.connections_per_second += o.connections_per_second;
        self.bytes_in_per_second += o.bytes_in_per_second;
        self.bytes_out_per_second += o.bytes_out_per_second;
    }
}

impl Tcp {
    fn view(&self, service: &str, from: Option<&str>) -> TcpView {
        // A broker's connections live for hours: what is open says more than
        // what opened in the last seconds.
        let tls_share = if self.open > 0 {
            Some(self.open_tls.min(self.open) as f64 / self.open as f64)
        } else if self.connections > 0 {
            Some(self.tls_connections.min(self.connections) as f64 / self.connections as f64)
        } else {
            None
        };
        TcpView {
            service: service.to_string(),
            from: from.map(str::to_string),
            open_connections: self.open,
            connections: self.connections,
            connections_per_second: self.connections_per_second,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            bytes_in_per_second: self.bytes_in_per_second,
            bytes_out_per_second: self.bytes_out_per_second,
            tls_share,
            failures: self.failures,
        }
    }
}

/// The opaque TCP services and edges of one window of `span` as of `now`; a proxy
/// whose last report is older than `stale` has nothing open any more.
pub(super) fn window(
    histories: &[Vec<Received>],
    span: Duration,
    now: Instant,
    stale: Duration,
) -> (Vec<TcpView>, Vec<TcpView>) {
    let mut tally: Tally<Tcp> = Tally::new();
    for part in parts(histories, span, now, stale) {
        for t in &part.latest.tcp {
            let old = part
                .base
                .tcp
                .iter()
                .find(|o| o.direction == t.direction && o.service == t.service);
            let d = Tcp::grown(t, old, part.secs, part.fresh);
            tally.add(&part, t.direction, &t.service, &d);
        }
    }
    let edges = tally
        .edges
        .iter()
        .map(|((from, service), d)| d.view(service, Some(from)))
        .collect();
    let called = tally.called();
    let services = tally
        .services(&called)
        .into_iter()
        .map(|service| {
            let callers = called.get(service);
            let d = match tally.inbound.get(service) {
                Some(own) => {
                    // Callers' failures (no endpoint, connect failed) never reached
                    // the service's own proxy: they add to its own.
                    let mut own = own.clone();
                    own.failures += callers.map_or(0, |c| c.failures);
                    own
                }
                None => callers.cloned().unwrap_or_default(),
            };
            d.view(service, None)
        })
        .collect();
    (services, edges)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn report(workload: &str, tcp: Vec<v1::TcpTotals>) -> Arc<v1::ProxyReport> {
        Arc::new(v1::ProxyReport {
            node: Some(v1::Node {
                id: format!("{workload}-1"),
                namespace: "default".into(),
                workload: workload.into(),
                ..Default::default()
            }),
            tcp,
            ..Default::default()
        })
    }

    fn totals(
        direction: v1::TrafficDirection,
        service: &str,
        connections: u64,
        open: u64,
        bytes: (u64, u64),
        failures: u64,
    ) -> v1::TcpTotals {
        v1::TcpTotals {
            direction: direction as i32,
            service: service.into(),
            connections,
            tls_connections: connections,
            open,
            open_tls: open,
            received_bytes: bytes.0,
            sent_bytes: bytes.1,
            failures,
        }
    }

    #[test]
    fn a_brokers_connections_and_bytes_over_the_window() {
        let t0 = Instant::now();
        let (inb, out) = (
            v1::TrafficDirection::Inbound,
            v1::TrafficDirection::Outbound,
        );
        let later = t0 + Duration::from_secs(10);
        let broker = vec![
            (
                t0,
                report(
                    "rabbitmq",
                    vec![totals(inb, "rabbitmq.default", 2, 2, (1000, 500), 0)],
                ),
            ),
            (
                later,
                report(
                    "rabbitmq",
                    vec![totals(inb, "rabbitmq.default", 3, 2, (21_000, 10_500), 1)],
                ),
            ),
        ];
        let mut plain = totals(out, "rabbitmq.default", 1, 1, (0, 0), 0);
        plain.tls_connections = 0;
        plain.open_tls = 0;
        let mut orders_later = totals(out, "rabbitmq.default", 2, 1, (10_000, 5_000), 2);
        orders_later.tls_connections = 0;
        orders_later.open_tls = 0;
        let orders = vec![
            (t0, report("orders", vec![plain])),
            (later, report("orders", vec![orders_later])),
        ];
        let (services, edges) = window(
            &[broker, orders],
            Duration::from_secs(10),
            later,
            Duration::from_secs(5),
        );
        assert_eq!(services.len(), 1);
        let s = &services[0];
        assert_eq!(s.service, "rabbitmq.default");
        assert_eq!((s.open_connections, s.connections), (2, 1));
        assert_eq!((s.bytes_in, s.bytes_out), (20_000, 10_000));
        assert!((s.bytes_in_per_second - 2000.0).abs() < 1e-9);
        assert!((s.connections_per_second - 0.1).abs() < 1e-9);
        assert_eq!(
            s.tls_share,
            Some(1.0),
            "as the broker's proxy saw them arrive"
        );
        // One refused at the broker's proxy, two the caller could not connect.
        assert_eq!(s.failures, 3);
        assert_eq!(edges.len(), 1);
        let e = &edges[0];
        assert_eq!(e.from.as_deref(), Some("orders.default"));
        assert_eq!((e.open_connections, e.connections, e.failures), (1, 1, 2));
        assert_eq!(e.tls_share, Some(0.0));
    }

    #[test]
    fn a_stale_proxy_has_nothing_open_and_one_report_has_no_rate() {
        let t0 = Instant::now();
        let history = vec![(
            t0,
            report(
                "orders",
                vec![totals(
                    v1::TrafficDirection::Outbound,
                    "db.default",
                    4,
                    4,
                    (10, 10),
                    0,
                )],
            ),
        )];
        let (services, edges) = window(
            std::slice::from_ref(&history),
            Duration::from_secs(10),
            t0 + Duration::from_secs(1),
            Duration::from_secs(5),
        );
        // No proxy of its own: seen through its callers.
        assert_eq!(services[0].service, "db.default");
        assert_eq!(
            (services[0].open_connections, services[0].connections),
            (4, 0)
        );
        assert_eq!(edges[0].bytes_in_per_second, 0.0);
        let (services, _) = window(
            &[history],
            Duration::from_secs(10),
            t0 + Duration::from_secs(6),
            Duration::from_secs(5),
        );
        assert_eq!(services[0].open_connections, 0);
        assert_eq!(services[0].tls_share, None);
    }
}
