//! A service with two ports whose target ports differ, on the netns test bed: apps
//! connect to its VIP on either port, the client's sidecar learns the service from
//! weft-control on first use and balances each port over that port's own endpoints.
//!
//! ```text
//! pod a (client app, proxy) ── bridge ── pod b (web :8080, admin :9090, proxy)
//!                                   └── pod c (web :8080, admin :9091, proxy)
//! service shop, VIP 10.96.0.30: port 80 -> b:8080, c:8080; port 90 -> b:9090, c:9091
//! ```
//!
//! Port 90's target differs from pod to pod, as a Kubernetes named targetPort may.
//! Needs root, iproute2, iptables and setpriv (CI has them; elsewhere the test says so
//! and skips).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use weft_tests::apps::{HttpApp, standard_handler};
use weft_tests::netns::{self, Node, Pod, Sidecars};
use weft_tests::proxy::ServiceDef;

const VIP: &str = "10.96.0.30";
const WEB_PORT: u16 = 80;
const ADMIN_PORT: u16 = 90;
/// Requests per service port: enough that the round robin reaches both pods.
const REQUESTS: usize = 6;

/// The two listeners of one pod's app, named `<pod>-web` and `<pod>-admin`.
async fn two_port_app(pod: &Pod, name: &str, admin: u16) -> (HttpApp, HttpApp) {
    let app = |name: String, listener| {
        HttpApp::on_listener(&name, listener, standard_handler(&name)).expect("app")
    };
    let web = app(
        format!("{name}-web"),
        pod.listen(8080).await.expect("web listener"),
    );
    let admin = app(
        format!("{name}-admin"),
        pod.listen(admin).await.expect("admin listener"),
    );
    (web, admin)
}

/// Which app answered how many of `REQUESTS` GETs from pod a to the VIP on `port`.
async fn answers(a: &Pod, port: u16) -> BTreeMap<String, usize> {
    let vip = SocketAddr::new(VIP.parse().expect("VIP"), port);
    let mut by_app = BTreeMap::new();
    for _ in 0..REQUESTS {
        let reply = a
            .http_get(vip, VIP, "/")
            .await
            .unwrap_or_else(|e| panic!("GET {vip} from pod a: {e:#}"));
        assert_eq!(reply.status, 200, "{vip}: {reply:?}");
        let app = reply
            .body
            .trim()
            .strip_prefix("hello from ")
            .unwrap_or_else(|| panic!("{vip}: not an app's answer: {reply:?}"))
            .to_string();
        *by_app.entry(app).or_insert(0) += 1;
    }
    by_app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_of_a_vip_reaches_its_own_target_ports_as_one_service() {
    if !netns::available("each_port_of_a_vip_reaches_its_own_target_ports_as_one_service") {
        return;
    }
    let mut node = Node::create().expect("node");
    let a = node.pod("a").expect("pod a");
    let b = node.pod("b").expect("pod b");
    let c = node.pod("c").expect("pod c");
    let (b_web, b_admin) = two_port_app(&b, "b", 9090).await;
    let (c_web, c_admin) = two_port_app(&c, "c", 9091).await;
    let shop = ServiceDef::new("shop")
        .vip(VIP)
        .port(WEB_PORT, "http1")
        .port_with_endpoints(ADMIN_PORT, "http1", &[b.addr(9090), c.addr(9091)])
        .endpoint(b.addr(8080))
        .endpoint(c.addr(8080))
        .policy("{load_balancer: round-robin}");
    let (_control, proxies) = node
        .mesh(&[shop], &[&a, &b, &c], Sidecars::Plain)
        .await
        .expect("the mesh on the node");
    let a_proxy = &proxies[0];

    let web = answers(&a, WEB_PORT).await;
    let admin = answers(&a, ADMIN_PORT).await;
    // Each port only ever reached its own listeners, on both pods.
    assert_eq!(
        web.keys().collect::<Vec<_>>(),
        ["b-web", "c-web"],
        "port {WEB_PORT}: {web:?}"
    );
    assert_eq!(
        admin.keys().collect::<Vec<_>>(),
        ["b-admin", "c-admin"],
        "port {ADMIN_PORT}: {admin:?}"
    );
    assert_eq!(b_web.requests() + c_web.requests(), REQUESTS);
    assert_eq!(b_admin.requests() + c_admin.requests(), REQUESTS);

    // One service in the metrics: every outbound request is counted under `shop`,
    // none under a per-port name.
    let shop_ok = a_proxy.requests_ok("outbound", "shop.default").await;
    assert_eq!(shop_ok, (2 * REQUESTS) as f64);
    let outbound = a_proxy
        .metric("weft_requests_total", &[("direction", "outbound")])
        .await;
    assert_eq!(
        outbound,
        (2 * REQUESTS) as f64,
        "requests counted under another service"
    );
}
