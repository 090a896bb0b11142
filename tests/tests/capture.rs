//! Transparent capture on the netns test bed: pods are network namespaces on a
//! bridge, `weft-proxy init` installs the iptables rules in each, weft-proxy runs
//! under its own UID, and the apps know nothing about the mesh: they connect to a
//! service's VIP as if it were the service.
//!
//! ```text
//! pod a (client app, proxy) ── bridge ── pod b (web :8080, gRPC echo :50051, NATS :4222, proxy)
//!                                   └── pod x (plain HTTP :9000, outside the mesh: no proxy)
//! ```
//!
//! Needs root, iproute2, iptables and setpriv (CI has them; elsewhere the tests
//! say so and skip). Run: `cargo build -p weft-proxy -p weft-examples --bins &&
//! sudo -E cargo test -p weft-tests --test capture`.

use std::io::Write as _;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use weft_tests::apps::HttpApp;
use weft_tests::bins;
use weft_tests::grpc::GrpcEchoApp;
use weft_tests::netns::{
    self, ControlPlane, INBOUND_PORT, Node, OUTBOUND_PORT, PROXY_UID, Pod, PodProxy, Sidecars,
};
use weft_tests::pb::Msg;
use weft_tests::pb::echo_client::EchoClient;
use weft_tests::proxy::ServiceDef;
use weft_tests::wire::{WireCapture, hex};
use weft_tests::{STEP_DEADLINE, eventually, within};

const WEB_VIP: &str = "10.96.0.10";
const ECHO_VIP: &str = "10.96.0.11";
const NATS_VIP: &str = "10.96.0.12";
const WEB_VIP6: &str = "fd96::10";
const WEB_PORT: u16 = 8080;
const ECHO_PORT: u16 = 50051;
const NATS_PORT: u16 = 4222;
const OUTSIDE_PORT: u16 = 9000;

fn vip(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("VIP"), port)
}

/// Two meshed pods and one outside the mesh. Fields drop in order: apps and
/// proxies first, then the pods' namespaces, then the node.
struct Mesh {
    a_proxy: PodProxy,
    b_proxy: PodProxy,
    /// The CA the proxies' certificates come from, when they have identities.
    _control: Option<ControlPlane>,
    web: HttpApp,
    _echo: GrpcEchoApp,
    outside: HttpApp,
    a: Pod,
    b: Pod,
    x: Pod,
    node: Node,
}

impl Mesh {
    fn services(b: &Pod) -> Vec<ServiceDef> {
        Self::services_as(b, None)
    }

    /// The mesh's services, all on pod b; with `identity`, b's endpoints must
    /// present it (reached over mTLS).
    fn services_as(b: &Pod, identity: Option<&str>) -> Vec<ServiceDef> {
        let endpoint = |s: ServiceDef, addr: SocketAddr| match identity {
            Some(id) => s.endpoint_with_identity(addr, id),
            None => s.endpoint(addr),
        };
        vec![
            endpoint(
                ServiceDef::new("web").vip(WEB_VIP).port(80, "http1"),
                b.addr(WEB_PORT),
            ),
            endpoint(
                ServiceDef::new("web6").vip(WEB_VIP6).port(80, "http1"),
                b.addr6(WEB_PORT),
            ),
            endpoint(
                ServiceDef::new("echo")
                    .vip(ECHO_VIP)
                    .port(ECHO_PORT, "grpc"),
                b.addr(ECHO_PORT),
            ),
            endpoint(
                ServiceDef::new("nats")
                    .vip(NATS_VIP)
                    .port(NATS_PORT, "opaque"),
                b.addr(NATS_PORT),
            ),
        ]
    }

    /// The mesh with plaintext between the sidecars.
    async fn start() -> Mesh {
        Self::start_with(false).await
    }

    /// The mesh with mTLS between the sidecars: a control plane on the node is the
    /// CA, each proxy's identity is its pod's service account, b's inbound is strict.
    async fn start_with_mtls() -> Mesh {
        Self::start_with(true).await
    }

    async fn start_with(mtls: bool) -> Mesh {
        let mut node = Node::create().expect("create the node");
        let a = node.pod("a").expect("pod a");
        let b = node.pod("b").expect("pod b");
        let x = node.pod("x").expect("pod x");
        let web = HttpApp::on_listener(
            "b",
            b.listen(WEB_PORT).await.expect("web listener in b"),
            weft_tests::apps::standard_handler("b"),
        )
        .expect("web app");
        let echo = GrpcEchoApp::on_listener(b.listen(ECHO_PORT).await.expect("echo listener"))
            .expect("echo app");
        let outside = HttpApp::on_listener(
            "x",
            x.listen(OUTSIDE_PORT).await.expect("listener in x"),
            weft_tests::apps::standard_handler("x"),
        )
        .expect("outside app");
        let (a_proxy, b_proxy, control) = if mtls {
            let services = Self::services_as(&b, Some(&b.spiffe_id()));
            let (control, proxies) = node
                .mesh(&services, &[&a, &b], Sidecars::WithIdentity)
                .await
                .expect("the control plane (the CA) and mTLS sidecars on the node");
            let Ok([a_proxy, b_proxy]) = <[PodProxy; 2]>::try_from(proxies) else {
                panic!("a sidecar per pod");
            };
            (a_proxy, b_proxy, Some(control))
        } else {
            a.install_capture().expect("init in a");
            b.install_capture().expect("init in b");
            let services = Self::services(&b);
            let a_proxy = a.start_proxy(&services).await.expect("proxy in a");
            let b_proxy = b.start_proxy(&services).await.expect("proxy in b");
            (a_proxy, b_proxy, None)
        };
        Mesh {
            a_proxy,
            b_proxy,
            _control: control,
            web,
            _echo: echo,
            outside,
            a,
            b,
            x,
            node,
        }
    }

    fn outside_addr(&self) -> SocketAddr {
        self.x.addr(OUTSIDE_PORT)
    }
}

async fn passthrough(proxy: &PodProxy) -> f64 {
    proxy
        .metric("weft_tcp_passthrough_total", &[("direction", "outbound")])
        .await
}

async fn opened(proxy: &PodProxy, direction: &str) -> f64 {
    proxy
        .metric(
            "weft_tcp_connections_opened_total",
            &[("direction", direction)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_calls_a_service_vip_through_both_sidecars() {
    if !netns::available("app_calls_a_service_vip_through_both_sidecars") {
        return;
    }
    let mesh = Mesh::start().await;
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP, 80), WEB_VIP, "/")
        .await
        .expect("GET http://<web VIP>/ from pod a");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "hello from b");
    assert_eq!(mesh.web.requests(), 1);
    let out = mesh.a_proxy.requests_ok("outbound", "web.default").await;
    assert_eq!(out, 1.0, "pod a's outbound routed the request by VIP");
    let inb = mesh.b_proxy.requests_ok("inbound", "b").await;
    assert_eq!(inb, 1.0, "pod b's inbound delivered it to the app");
    assert_eq!(passthrough(&mesh.a_proxy).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_http_routes_by_original_destination_not_host() {
    if !netns::available("captured_http_routes_by_original_destination_not_host") {
        return;
    }
    let mesh = Mesh::start().await;
    // A Host the mesh has never heard of: the VIP the app dialled decides.
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP, 80), "legacy-name.internal", "/")
        .await
        .expect("GET the web VIP with a foreign Host");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "hello from b");
    // An app that names the proxy itself (loopback is not captured) still gets
    // routing by authority on the same listener.
    let outbound = SocketAddr::from(([127, 0, 0, 1], OUTBOUND_PORT));
    let reply = mesh
        .a
        .http_get(outbound, "web", "/")
        .await
        .expect("GET via the outbound listener as http_proxy");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "hello from b");
    assert_eq!(mesh.web.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_to_a_service_vip_goes_through_both_sidecars() {
    if !netns::available("grpc_call_to_a_service_vip_goes_through_both_sidecars") {
        return;
    }
    let mesh = Mesh::start().await;
    let target = vip(ECHO_VIP, ECHO_PORT);
    let ns = mesh.a.netns.clone();
    let channel = within(
        STEP_DEADLINE,
        "gRPC connect from pod a",
        tonic::transport::Endpoint::from_shared(format!("http://{target}"))
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let ns = ns.clone();
                async move {
                    netns::connect(&ns, target)
                        .await
                        .map(hyper_util::rt::TokioIo::new)
                }
            })),
    )
    .await
    .expect("gRPC channel");
    let mut client = EchoClient::new(channel);
    let reply = within(
        STEP_DEADLINE,
        "unary call",
        client.unary(Msg {
            text: "ping".into(),
            ..Msg::default()
        }),
    )
    .await
    .expect("unary call through the mesh");
    assert_eq!(reply.into_inner().text, "ping");
    let out = mesh.a_proxy.requests_ok("outbound", "echo.default").await;
    assert_eq!(out, 1.0);
    let inb = mesh.b_proxy.requests_ok("inbound", "b").await;
    assert_eq!(inb, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publish_and_consume_through_a_service_vip() {
    if !netns::available("nats_publish_and_consume_through_a_service_vip") {
        return;
    }
    if !netns::on_path("nats-server") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "nats-server is not installed (CI=true: failing instead of skipping)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!! nats-server is not installed: SKIPPED !!!!!\n"
        );
        return;
    }
    let mesh = Mesh::start().await;
    let _server = mesh
        .b
        .spawn(
            "nats-server",
            None,
            "nats-server",
            &["-a", "0.0.0.0", "-p", &NATS_PORT.to_string()],
        )
        .expect("start nats-server in b");
    eventually(STEP_DEADLINE, "nats-server listening in b", || async {
        let mut s = mesh.b.connect(mesh.b.addr(NATS_PORT)).await.ok()?;
        let mut info = [0u8; 4];
        s.read_exact(&mut info).await.ok()?;
        (&info == b"INFO").then_some(())
    })
    .await;
    let url = format!("nats://{NATS_VIP}:{NATS_PORT}");
    let consume = bins::binary("nats-consume").expect("build weft-examples");
    let publish = bins::binary("nats-publish").expect("build weft-examples");
    let mut consumer = mesh
        .a
        .spawn(
            "nats-consume",
            None,
            &consume.to_string_lossy(),
            &["--nats-url", &url, "--count", "3"],
        )
        .expect("start nats-consume in a");
    eventually(STEP_DEADLINE, "consumer subscribed", || async {
        consumer.output().contains("subscribed").then_some(())
    })
    .await;
    let mut publisher = mesh
        .a
        .spawn(
            "nats-publish",
            None,
            &publish.to_string_lossy(),
            &["--nats-url", &url, "--count", "3"],
        )
        .expect("start nats-publish in a");
    let status = publisher
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("publisher ends");
    assert!(status.success(), "{}", publisher.output());
    let status = consumer
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("consumer ends");
    assert!(status.success(), "{}", consumer.output());
    let received = consumer
        .output()
        .lines()
        .filter(|l| l.contains("\"order.placed\""))
        .count();
    assert_eq!(received, 3, "{}", consumer.output());
    assert!(opened(&mesh.a_proxy, "outbound").await >= 2.0);
    assert!(opened(&mesh.b_proxy, "inbound").await >= 2.0);
    assert_eq!(passthrough(&mesh.a_proxy).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_to_an_address_outside_the_mesh_passes_through() {
    if !netns::available("traffic_to_an_address_outside_the_mesh_passes_through") {
        return;
    }
    let mesh = Mesh::start().await;
    let addr = mesh.outside_addr();
    let reply = mesh
        .a
        .http_get(addr, &addr.to_string(), "/")
        .await
        .expect("GET the outside pod from a");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.trim(), "hello from x");
    assert_eq!(mesh.outside.connections(), 1);
    assert_eq!(
        passthrough(&mesh.a_proxy).await,
        1.0,
        "the connection went through a's outbound, as plain TCP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_traffic_is_captured_too() {
    if !netns::available("ipv6_traffic_is_captured_too") {
        return;
    }
    let mesh = Mesh::start().await;
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP6, 80), "[fd96::10]", "/")
        .await
        .expect("GET http://[<web6 VIP>]/ from pod a");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "hello from b");
    let out = mesh.a_proxy.requests_ok("outbound", "web6.default").await;
    assert_eq!(out, 1.0, "routed by the IPv6 original destination");
    let outside = mesh.x.addr6(OUTSIDE_PORT);
    let reply = mesh
        .a
        .http_get(outside, &outside.to_string(), "/")
        .await
        .expect("GET the outside pod over IPv6");
    assert_eq!(reply.body.trim(), "hello from x");
    assert_eq!(passthrough(&mesh.a_proxy).await, 1.0);
}

/// With a control plane, a proxy that knows no services learns a VIP on first use
/// (subscribing by VIP:port), and learns that an outside address is not in the mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vips_unknown_to_the_proxy_are_asked_of_the_control_plane() {
    if !netns::available("vips_unknown_to_the_proxy_are_asked_of_the_control_plane") {
        return;
    }
    let mut node = Node::create().expect("node");
    let a = node.pod("a").expect("pod a");
    let b = node.pod("b").expect("pod b");
    let x = node.pod("x").expect("pod x");
    let web = HttpApp::on_listener(
        "b",
        b.listen(WEB_PORT).await.expect("listener in b"),
        weft_tests::apps::standard_handler("b"),
    )
    .expect("web app");
    let _outside = HttpApp::on_listener(
        "x",
        x.listen(OUTSIDE_PORT).await.expect("listener in x"),
        weft_tests::apps::standard_handler("x"),
    )
    .expect("outside app");
    let (_control, proxies) = node
        .mesh(&Mesh::services(&b), &[&a, &b], Sidecars::Plain)
        .await
        .expect("the mesh on the node");
    let a_proxy = &proxies[0];

    let reply = a
        .http_get(vip(WEB_VIP, 80), WEB_VIP, "/")
        .await
        .expect("GET the web VIP");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body.trim(), "hello from b");
    assert_eq!(web.requests(), 1);
    assert_eq!(
        a_proxy.metric("weft_discovery_subscriptions", &[]).await,
        1.0
    );

    let outside = x.addr(OUTSIDE_PORT);
    let reply = a
        .http_get(outside, "x", "/")
        .await
        .expect("GET the outside pod");
    assert_eq!(reply.body.trim(), "hello from x");
    assert_eq!(passthrough(a_proxy).await, 1.0);
}

/// Connects from pod a with bash's /dev/tcp as `uid` (None: root) to `addr`, sends
/// an HTTP/1.0 request and returns what came back.
fn bash_get(pod: &Pod, uid: Option<u32>, addr: SocketAddr) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        addr.ip(),
        addr.port()
    );
    let mut cmd = match uid {
        Some(uid) => pod.exec_as(uid, "bash"),
        None => pod.exec("bash"),
    };
    let out = cmd
        .args(["-c", &script])
        .output()
        .expect("run bash in the pod");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_uid_is_not_redirected() {
    if !netns::available("the_proxy_uid_is_not_redirected") {
        return;
    }
    let mesh = Mesh::start().await;
    let addr = mesh.outside_addr();
    let before = opened(&mesh.a_proxy, "outbound").await;
    let direct = tokio::task::block_in_place(|| bash_get(&mesh.a, Some(PROXY_UID), addr));
    assert!(direct.contains("hello from x"), "{direct}");
    assert_eq!(
        opened(&mesh.a_proxy, "outbound").await,
        before,
        "a connection by the proxy's UID reached its destination without the proxy"
    );
    // The same connection by another user is captured.
    let captured = tokio::task::block_in_place(|| bash_get(&mesh.a, None, addr));
    assert!(captured.contains("hello from x"), "{captured}");
    assert_eq!(opened(&mesh.a_proxy, "outbound").await, before + 1.0);
    assert_eq!(passthrough(&mesh.a_proxy).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_with_nft_and_legacy_iptables() {
    if !netns::available("init_is_idempotent_with_nft_and_legacy_iptables") {
        return;
    }
    let mut node = Node::create().expect("node");
    for mode in ["nft", "legacy"] {
        let save = format!("iptables-{mode}-save");
        let save6 = format!("ip6tables-{mode}-save");
        if !netns::on_path(&save) {
            eprintln!("{save} not installed; skipping the {mode} flavour");
            continue;
        }
        let pod = node.pod(mode).expect("pod");
        let args = [
            "--iptables",
            mode,
            "--skip-outbound-ports",
            "5432,8000-8099",
        ];
        let first = pod.init(&args).expect("run init");
        assert!(first.status.success(), "{first:?}");
        let once = pod.nat_rules(&save).expect("save");
        let once6 = pod.nat_rules(&save6).expect("save v6");
        assert!(once.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"), "{once}");
        assert!(once.contains("--dport 8000:8099 -j RETURN"), "{once}");
        assert!(once6.contains("REDIRECT --to-ports 7140"), "{once6}");
        let second = pod.init(&args).expect("run init again");
        assert!(second.status.success(), "{second:?}");
        assert_eq!(pod.nat_rules(&save).expect("save"), once, "{mode}: IPv4");
        assert_eq!(pod.nat_rules(&save6).expect("save"), once6, "{mode}: IPv6");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_restores_direct_traffic() {
    if !netns::available("uninstall_restores_direct_traffic") {
        return;
    }
    let mesh = Mesh::start().await;
    let addr = mesh.outside_addr();
    let captured = mesh.a.http_get(addr, "x", "/").await.expect("GET x");
    assert_eq!(captured.status, 200);
    assert_eq!(passthrough(&mesh.a_proxy).await, 1.0);

    let out = mesh.a.init(&["--uninstall"]).expect("run init --uninstall");
    assert!(out.status.success(), "{out:?}");
    let rules = mesh.a.nat_rules("iptables-save").expect("save");
    assert!(!rules.contains("WEFT"), "{rules}");
    let rules6 = mesh.a.nat_rules("ip6tables-save").expect("save");
    assert!(!rules6.contains("WEFT"), "{rules6}");

    let direct = mesh.a.http_get(addr, "x", "/").await.expect("GET x");
    assert_eq!(direct.status, 200);
    assert_eq!(direct.body.trim(), "hello from x");
    assert_eq!(
        passthrough(&mesh.a_proxy).await,
        1.0,
        "after uninstall the app's connection did not go through the proxy"
    );
    assert_eq!(mesh.outside.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_proxy_fails_closed() {
    if !netns::available("killing_the_proxy_fails_closed") {
        return;
    }
    let mut mesh = Mesh::start().await;
    mesh.a_proxy.kill().await.expect("kill a's proxy");
    for target in [vip(WEB_VIP, 80), mesh.outside_addr()] {
        let err = within(STEP_DEADLINE, "connect", mesh.a.connect(target))
            .await
            .expect_err("a connection with the proxy dead must not go anywhere");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{target}: {err}"
        );
    }
    assert_eq!(mesh.outside.connections(), 0, "nothing bypassed the mesh");
    assert_eq!(mesh.web.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_connection_to_the_outbound_port_is_not_looped() {
    if !netns::available("a_captured_connection_to_the_outbound_port_is_not_looped") {
        return;
    }
    let mesh = Mesh::start().await;
    // An address nobody knows, on the outbound port: passing it through would make
    // the proxy dial its own listener if it were reachable.
    let target = vip("10.96.0.99", OUTBOUND_PORT);
    let mut stream = mesh.a.connect(target).await.expect("captured connect");
    let got = weft_tests::client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .unwrap_or_default();
    assert!(got.is_empty());
    assert_eq!(passthrough(&mesh.a_proxy).await, 0.0);
    // The same for the inbound side: a peer dialling b's inbound port directly.
    let mut stream = mesh
        .a
        .connect(mesh.b.addr(INBOUND_PORT))
        .await
        .expect("connect to b's inbound port");
    let got = weft_tests::client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .unwrap_or_default();
    assert!(got.is_empty());
    assert_eq!(mesh.web.connections(), 0);
    // Both proxies still serve.
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP, 80), WEB_VIP, "/")
        .await
        .expect("GET web");
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_without_net_admin_says_so() {
    if !netns::available("init_without_net_admin_says_so") {
        return;
    }
    let mut node = Node::create().expect("node");
    let pod = node.pod("p").expect("pod");
    let bin = bins::binary("weft-proxy").expect("weft-proxy built");
    let out = pod
        .exec_as(PROXY_UID, &bin.to_string_lossy())
        .arg("init")
        .output()
        .expect("run init as an unprivileged user");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NET_ADMIN"), "{stderr}");
    let rules = pod.nat_rules("iptables-save").expect("save");
    assert!(!rules.contains("WEFT"), "{rules}");
}

/// With mTLS between the sidecars, b's app learns who called it: a's SPIFFE ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_called_app_sees_the_callers_spiffe_id() {
    if !netns::available("the_called_app_sees_the_callers_spiffe_id") {
        return;
    }
    let mesh = Mesh::start_with_mtls().await;
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP, 80), WEB_VIP, "/headers")
        .await
        .expect("GET /headers");
    assert_eq!(reply.status, 200);
    let id = reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix("weft-client-id: "))
        .unwrap_or_else(|| panic!("no weft-client-id in {}", reply.body));
    assert_eq!(id, "spiffe://cluster.local/ns/default/sa/a");
}

/// On the wire between pods there is only TLS: tshark on the node's bridge ports sees
/// TLS records and none of the plaintext the apps exchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_between_pods_carries_only_tls() {
    if !netns::available("the_wire_between_pods_carries_only_tls") {
        return;
    }
    assert!(netns::on_path("tshark"), "tshark is not installed");
    let mesh = Mesh::start_with_mtls().await;
    let mut wire = WireCapture::start(&mesh.node).expect("start tshark on the bridge");
    let pods = [&mesh.a, &mesh.b, &mesh.x];
    wire.mark(&pods).await;
    let marker = "weft-plaintext-marker-7f3a";
    let reply = mesh
        .a
        .http_get(vip(WEB_VIP, 80), WEB_VIP, &format!("/{marker}"))
        .await
        .expect("GET through the mesh");
    assert_eq!(reply.status, 200);
    wire.mark(&pods).await;
    wire.stop().await.expect("tshark exits");
    assert!(
        !wire.read("tls", &["frame.number"]).trim().is_empty(),
        "no TLS records between the pods"
    );
    assert!(
        wire.read("http", &["frame.number"]).trim().is_empty(),
        "plaintext HTTP on the wire"
    );
    assert!(
        !wire.payload_hex().contains(&hex(marker.as_bytes())),
        "the request path went over the wire in clear"
    );
}

/// Two pods as the injector leaves them: both sidecars are `weft-proxy run` with
/// only the WEFT_* environment (no config file), learn the mesh from the control
/// plane, get certificates and speak mTLS; pod a declares a port opaque
/// (WEFT_OPAQUE_PORTS), and a kubelet stand-in outside the mesh probes pod b's app
/// through the admin port (WEFT_PROBE_PORTS) while its plaintext to the app port
/// is refused (strict inbound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_pods_configured_by_env_alone() {
    if !netns::available("injected_pods_configured_by_env_alone") {
        return;
    }
    const RAW_VIP: &str = "10.96.0.13";
    const RAW_PORT: u16 = 5433;
    let mut node = Node::create().expect("create the node");
    let a = node.pod("a").expect("pod a");
    let b = node.pod("b").expect("pod b");
    let x = node.pod("x").expect("pod x");
    let _web = HttpApp::on_listener(
        "b",
        b.listen(WEB_PORT).await.expect("web listener in b"),
        weft_tests::apps::standard_handler("b"),
    )
    .expect("web app");
    let _raw = weft_tests::apps::TcpApp::serve_on(
        b.listen(RAW_PORT).await.expect("raw listener in b"),
        |mut stream| async move {
            use tokio::io::AsyncWriteExt as _;
            let mut got = Vec::new();
            if stream.read_to_end(&mut got).await.is_ok() {
                let _ = stream.write_all(b"echo:").await;
                let _ = stream.write_all(&got).await;
                let _ = stream.shutdown().await;
            }
        },
    )
    .expect("raw app");
    a.install_capture().expect("init in a");
    b.install_capture().expect("init in b");
    let b_id = b.spiffe_id();
    let services = [
        ServiceDef::new("web")
            .vip(WEB_VIP)
            .port(80, "http1")
            .endpoint_with_identity(b.addr(WEB_PORT), &b_id),
        // Declared HTTP by the service; pod a's annotation says opaque.
        ServiceDef::new("raw")
            .vip(RAW_VIP)
            .port(RAW_PORT, "http1")
            .endpoint_with_identity(b.addr(RAW_PORT), &b_id),
    ];
    let control = node
        .start_control_plane(&services)
        .await
        .expect("control plane on the node");
    let raw_port = RAW_PORT.to_string();
    let _a_proxy = a
        .start_injected_proxy(&control, &[("WEFT_OPAQUE_PORTS", &raw_port)])
        .await
        .expect("proxy in a");
    let probe_port = WEB_PORT.to_string();
    let _b_proxy = b
        .start_injected_proxy(&control, &[("WEFT_PROBE_PORTS", &probe_port)])
        .await
        .expect("proxy in b");

    let reply = a
        .http_get(vip(WEB_VIP, 80), "web", "/headers")
        .await
        .expect("GET web's VIP from a");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .body
            .contains(&format!("weft-client-id: {}", a.spiffe_id())),
        "b's app learns a's identity: {}",
        reply.body
    );

    let mut payload = b"GET / HTTP/1.1\r\n".to_vec();
    payload.extend(weft_tests::data::pattern(16 * 1024, 5));
    let mut stream = a.connect(vip(RAW_VIP, RAW_PORT)).await.expect("connect");
    {
        use tokio::io::AsyncWriteExt as _;
        stream.write_all(&payload).await.expect("write");
        stream.shutdown().await.expect("half-close");
    }
    let echoed = weft_tests::client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("read");
    assert!(
        echoed.starts_with(b"echo:") && echoed[5..] == payload[..],
        "opaque both hops: {:?}",
        String::from_utf8_lossy(&echoed[..echoed.len().min(64)])
    );

    // The kubelet, from outside the mesh: the rewritten probe works, the original
    // would not (plaintext to a strict inbound), and the admin port is no relay.
    let probe = x
        .http_get(
            b.addr(7191),
            &format!("{}:7191", b.ip),
            "/app-probe/8080/healthz",
        )
        .await
        .expect("probe through b's admin port");
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert!(probe.body.contains("hello from b"), "{}", probe.body);
    let direct = x.http_get(b.addr(WEB_PORT), "b", "/healthz").await;
    assert!(
        direct.as_ref().map_or(true, |r| r.status != 200),
        "plaintext to the app port got through: {direct:?}"
    );
    let relay = x
        .http_get(b.addr(7191), "b", &format!("/app-probe/{RAW_PORT}/"))
        .await
        .expect("reply");
    assert_eq!(relay.status, 403, "{}", relay.body);
    let config = x
        .http_get(b.addr(7191), "b", "/config")
        .await
        .expect("reply");
    assert_eq!(
        config.status, 403,
        "the snapshot is for loopback callers only"
    );
}
