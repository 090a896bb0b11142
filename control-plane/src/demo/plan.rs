//! The demo's layout: which workloads run, on which ports, with which configs.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use anyhow::bail;

/// One example service and its sidecar.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// Speaks gRPC (payments), so callers reach it through a fixed upstream listener.
    pub grpc: bool,
    /// The broker (RabbitMQ): the demo runs it itself, with no example binary.
    pub broker: bool,
    /// Reaches the broker through a fixed upstream listener of its sidecar here.
    pub amqp_upstream: Option<SocketAddr>,
}

impl Workload {
    pub fn health_url(&self) -> String {
        if self.grpc || self.broker {
            // payments answers gRPC health only, the broker AMQP only; their
            // proxies' readiness stands in.
            format!("http://{}/ready", self.admin)
        } else {
            format!("http://{}/healthz", self.app)
        }
    }
}

pub struct Plan {
    pub workloads: Vec<Workload>,
    /// mTLS between every pair of sidecars (the default); off: plaintext hops.
    pub mtls: bool,
    pub control_grpc: SocketAddr,
    pub control_admin: SocketAddr,
    /// orders' fixed listener for payments (gRPC clients cannot use http_proxy).
    pub payments_upstream: SocketAddr,
    /// web's, for GraphQL's payment field.
    pub web_payments_upstream: SocketAddr,
    /// The broker's Erlang port mapper and distribution ports (with a broker).
    pub epmd: SocketAddr,
    pub broker_dist: SocketAddr,
    /// The gateway in front of web: its HTTP listener, admin and (unused) outbound.
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    pub gateway_outbound: SocketAddr,
    /// The OTLP/gRPC collector every sidecar sends its spans to, if any.
    pub otlp: Option<String>,
}

/// The workloads; the last two run only with a broker.
const NAMES: [(&str, bool); 7] = [
    ("web", false),
    ("orders", false),
    ("payments", true),
    ("notifications", false),
    ("users", false),
    ("inventory", false),
    (BROKER, false),
];

/// The broker's workload and mesh service.
pub const BROKER: &str = "rabbitmq";
/// AMQP's port, declared by the broker's service; opaque by the default list.
const AMQP_PORT: u16 = 5672;
/// Workloads that talk to the broker.
const BROKER_CLIENTS: [&str; 4] = ["orders", "notifications", "users", "inventory"];

pub const TRUST_DOMAIN: &str = "cluster.local";

/// Every demo workload runs as its own service account in `default`.
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{name}")
}

fn local(port: u32) -> anyhow::Result<SocketAddr> {
    let port = u16::try_from(port).map_err(|_| anyhow::anyhow!("port {port} is out of range"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

impl Plan {
    /// `broker`: run RabbitMQ, inventory and the event paths over AMQP.
    pub fn new(base: u16, mtls: bool, broker: bool) -> anyhow::Result<Plan> {
        let b = u32::from(base);
        let mut workloads = Vec::new();
        let names = if broker { &NAMES[..] } else { &NAMES[..5] };
        for (i, (name, grpc)) in names.iter().enumerate() {
            let i = i as u32;
            let amqp_upstream = (broker && BROKER_CLIENTS.contains(name))
                .then(|| local(b + 410 + i))
                .transpose()?;
            workloads.push(Workload {
                name,
                app: local(b + i)?,
                inbound: local(b + 100 + i)?,
                outbound: local(b + 200 + i)?,
                admin: local(b + 300 + i)?,
                grpc: *grpc,
                broker: *name == BROKER,
                amqp_upstream,
            });
        }
        Ok(Plan {
            workloads,
            mtls,
            control_grpc: local(b + 900)?,
            control_admin: local(b + 990)?,
            payments_upstream: local(b + 401)?,
            web_payments_upstream: local(b + 400)?,
            epmd: local(b + 950)?,
            broker_dist: local(b + 951)?,
            gateway: local(b + 500)?,
            gateway_admin: local(b + 501)?,
            gateway_outbound: local(b + 502)?,
            otlp: None,
        })
    }

    /// The broker's workload, when the demo runs one.
    pub fn broker(&self) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.broker)
    }

    pub fn all_ports(&self) -> Vec<SocketAddr> {
        let mut ports: Vec<SocketAddr> = self
            .workloads
            .iter()
            .flat_map(|w| [w.app, w.inbound, w.outbound, w.admin])
            .chain(self.workloads.iter().filter_map(|w| w.amqp_upstream))
            .collect();
        if self.broker().is_some() {
            ports.extend([self.epmd, self.broker_dist]);
        }
        ports.extend([
            self.control_grpc,
            self.control_admin,
            self.payments_upstream,
            self.web_payments_upstream,
            self.gateway,
            self.gateway_admin,
            self.gateway_outbound,
        ]);
        ports
    }

    /// Fails early, naming the port, instead of letting a child die on a busy one.
    pub fn check_ports_free(&self) -> anyhow::Result<()> {
        for addr in self.all_ports() {
            if TcpListener::bind(addr).is_err() {
                bail!(
                    "port {} is already in use; pick another block with --base-port",
                    addr.port()
                );
            }
        }
        Ok(())
    }

    fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    pub fn web_inbound(&self) -> SocketAddr {
        self.workload("web")
            .map_or(self.workloads[0].inbound, |w| w.inbound)
    }

    /// The checkout mesh: each service's endpoint is its sidecar's inbound listener.
    pub fn mesh_yaml(&self) -> String {
        let mut out =
            String::from("# Generated by weft-control demo: the checkout example.\nservices:\n");
        for w in &self.workloads {
            out.push_str(&format!("  - name: {}\n", w.name));
            if w.grpc {
                out.push_str("    ports: [{port: 80, protocol: grpc}]\n");
            }
            if w.broker {
                // No protocol: AMQP's port is opaque by default.
                out.push_str(&format!("    ports: [{{port: {AMQP_PORT}}}]\n"));
            }
            out.push_str(&format!("    endpoints:\n      - address: {}\n", w.inbound));
            if self.mtls {
                out.push_str(&format!("        identity: {}\n", spiffe_id(w.name)));
            }
            // Outlier detection on, so a failing service shows its ejection in
            // the live view.
            out.push_str(
                "    policy:\n      timeouts: {request: 5s, connect: 1s}\n      \
                 circuit_breaker: {outlier_detection: {consecutive_failures: 5, base_ejection: 10s}}\n",
            );
            if w.name == "web" {
                // What the gateway serves: /api/orders from orders, /api/profile
                // from web's own composition.
                out.push_str(
                    "    routes:\n      \
                     - {name: api-orders, match: [{path: {prefix: /api/orders}}], \
                     backends: [{service: orders}], filters: {rewrite: {prefix: /orders}}}\n      \
                     - {name: api-profile, match: [{path: {prefix: /api/profile}}], \
                     filters: {rewrite: {prefix: /profile}}}\n",
                );
            }
        }
        out
    }

    /// The gateway's config: plain HTTP on `gateway` for localhost, to web.
    pub fn gateway_yaml(&self, token: &str, trust_bundle: &Path) -> String {
        let scheme = if self.mtls { "https" } else { "http" };
        let mut out = format!(
            "# Generated by weft-control demo: the gateway in front of web.\n\
             workers: 1\n\
             node: {{id: gateway-0, namespace: default, workload: gateway}}\n\
             control_plane: {scheme}://{cp}\n\
             outbound: {{listen: {outbound}}}\n\
             admin: {{listen: {admin}}}\n\
             gateway:\n  listeners: [{{listen: {listen}}}]\n  \
             hosts: [{{host: localhost, service: web}}, {{host: 127.0.0.1, service: web}}]\n",
            cp = self.control_grpc,
            outbound = self.gateway_outbound,
            admin = self.gateway_admin,
            listen = self.gateway,
        );
        if self.mtls {
            out.push_str(&format!(
                "identity:\n  trust_domain: {TRUST_DOMAIN}\n  service_account: gateway\n  \
                 token: \"{token}\"\n  trust_bundle: \"{bundle}\"\n",
                bundle = trust_bundle.display(),
            ));
        }
        out
    }

    /// `token` is the workload's local identity proof and `trust_bundle` the CA file
    /// that verifies the control plane (both used when mTLS is on).
    pub fn proxy_yaml(&self, w: &Workload, token: &str, trust_bundle: &Path) -> String {
        let scheme = if self.mtls { "https" } else { "http" };
        let mut out = format!(
            "# Generated by weft-control demo: {name}'s sidecar.\n\
             workers: 1\n\
             node: {{id: {name}-0, namespace: default, workload: {name}}}\n\
             control_plane: {scheme}://{cp}\n\
             outbound: {{listen: {outbound}}}\n\
             inbound: {{listen: {inbound}, app: {app}}}\n\
             admin: {{listen: {admin}}}\n",
            name = w.name,
            cp = self.control_grpc,
            outbound = w.outbound,
            inbound = w.inbound,
            app = w.app,
            admin = w.admin,
        );
        if self.mtls {
            // web is the edge: the load generator reaches it from outside the mesh.
            let mode = if w.name == "web" {
                "permissive"
            } else {
                "strict"
            };
            out.push_str(&format!(
                "identity:\n  trust_domain: {TRUST_DOMAIN}\n  service_account: {name}\n  \
                 token: \"{token}\"\n  trust_bundle: \"{bundle}\"\n  inbound: {{mode: {mode}}}\n",
                name = w.name,
                bundle = trust_bundle.display(),
            ));
        }
        if let Some(collector) = &self.otlp {
            // Every request: the demo is there to show its traces.
            out.push_str(&format!(
                "tracing: {{collector: \"{collector}\", sample_ratio: 1}}\n"
            ));
        }
        let mut upstreams = Vec::new();
        let payments = match w.name {
            "orders" => Some(self.payments_upstream),
            "web" => Some(self.web_payments_upstream),
            _ => None,
        };
        if let Some(listen) = payments {
            upstreams.push(format!("  - {{service: payments, listen: {listen}}}\n"));
        }
        if let Some(listen) = w.amqp_upstream {
            upstreams.push(format!("  - {{service: {BROKER}, listen: {listen}}}\n"));
        }
        if !upstreams.is_empty() {
            out.push_str("upstreams:\n");
            out.push_str(&upstreams.concat());
        }
        out
    }

    pub fn app_args(&self, w: &Workload) -> Vec<String> {
        let mut args = vec!["--listen".to_string(), w.app.to_string()];
        match w.name {
            "web" => args.extend([
                "--orders-url".into(),
                "http://orders".into(),
                "--users-url".into(),
                "http://users".into(),
                "--payments".into(),
                format!("http://{}", self.web_payments_upstream),
            ]),
            "orders" => args.extend([
                "--payments".into(),
                format!("http://{}", self.payments_upstream),
                "--events-url".into(),
                "http://notifications/events".into(),
            ]),
            _ => {}
        }
        if let Some(upstream) = w.amqp_upstream {
            args.extend([
                "--amqp-url".into(),
                format!("amqp://guest:guest@{upstream}/%2f"),
            ]);
        }
        args
    }

    /// Apps reach the mesh through their own sidecar as `http_proxy`.
    pub fn app_env(&self, w: &Workload) -> Vec<(String, String)> {
        let proxy = format!("http://{}", w.outbound);
        vec![
            ("http_proxy".into(), proxy.clone()),
            ("HTTP_PROXY".into(), proxy),
            ("no_proxy".into(), String::new()),
            ("NO_PROXY".into(), String::new()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_mesh_and_proxy_configs_are_valid() {
        let plan = Plan::new(23000, true, true).expect("plan");
        let mesh = weft_api::mesh::MeshSpec::from_yaml(&plan.mesh_yaml(), "demo").expect("mesh");
        assert_eq!(mesh.services.len(), 7);
        let orders = plan.workload("orders").expect("orders");
        let yaml = plan.proxy_yaml(orders, "weft1.00", Path::new("/ca.pem"));
        assert!(yaml.contains("service: payments"), "{yaml}");
        assert!(yaml.contains("service: rabbitmq"), "{yaml}");
        assert!(
            plan.app_args(orders)
                .iter()
                .any(|a| a.starts_with("amqp://guest:guest@127.0.0.1:23411/")),
            "orders reaches the broker through its sidecar"
        );
        assert!(yaml.contains("service_account: orders"), "{yaml}");
        assert!(yaml.contains("mode: strict"), "{yaml}");
        assert!(yaml.contains("control_plane: https://"), "{yaml}");
        let web = plan.workload("web").expect("web");
        assert!(
            plan.proxy_yaml(web, "t", Path::new("/ca.pem"))
                .contains("mode: permissive")
        );
        let gateway = plan.gateway_yaml("t", Path::new("/ca.pem"));
        assert!(gateway.contains("service_account: gateway"), "{gateway}");
        assert!(
            gateway.contains("{host: localhost, service: web}"),
            "{gateway}"
        );
        assert_eq!(mesh.services[0].routes.len(), 2, "web's routes");
        let plain = Plan::new(23000, false, false).expect("plan");
        assert_eq!(plain.workloads.len(), 5);
        let plain_orders = plain.workload("orders").expect("orders");
        assert!(
            plain
                .app_args(plain_orders)
                .iter()
                .all(|a| !a.contains("amqp"))
        );
        assert!(
            !plain
                .proxy_yaml(orders, "t", Path::new("/ca.pem"))
                .contains("identity")
        );
        assert!(mesh.services[1].endpoints[0].identity.is_some());
        let ports = plan.all_ports();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "every port is used once");
    }
}
