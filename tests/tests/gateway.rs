//! weft-proxy in gateway mode, driven with curl from outside the mesh: TLS with the
//! operator's certificate the client's SNI names, host and path routing into the
//! mesh over mTLS under the gateway's own identity, a redirect to HTTPS, 404 for a
//! host the gateway does not serve, and certificates reloaded from their files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::cluster::pki::{Ca, CertFiles};
use weft_tests::control::WeftControl;
use weft_tests::load::{Load, LoadSpec};
use weft_tests::ports::free_addr;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually};

const GATEWAY_ID: &str = "spiffe://cluster.local/ns/default/sa/gateway";
const WEB_ID: &str = "spiffe://cluster.local/ns/default/sa/web";

/// What curl got: status, response headers (lowercase names) and body.
struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl` for `url` with `host:port` resolved to `addr`, trusting `ca` (or
/// anything, without). Err: curl's own failure (e.g. certificate verification).
async fn curl(
    url: &str,
    resolve: (&str, SocketAddr),
    ca: Option<&Path>,
) -> Result<Fetched, String> {
    let (host, addr) = resolve;
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-D", "-", "--resolve"])
        .arg(format!("{host}:{}:{}", addr.port(), addr.ip()));
    match ca {
        Some(ca) => cmd.arg("--cacert").arg(ca),
        None => cmd.arg("-k"),
    };
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(STEP_DEADLINE, cmd.output())
        .await
        .map_err(|_| "curl did not finish".to_string())?
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Fetched {
        status,
        headers,
        body: body.to_string(),
    })
}

fn have_curl() -> bool {
    weft_tests::tools::require("curl", "curl", "gateway").is_some()
}

/// Two operator CAs (the second for a renewed certificate) and the certificates
/// for the gateway's two host names.
struct Certs {
    dir: TempDir,
    first_ca: PathBuf,
    second: Ca,
    second_ca: PathBuf,
    shop: CertFiles,
    api: CertFiles,
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, first_files) = Ca::create(dir.path(), "first-ca", "operator CA one").expect("CA");
    let (second, second_files) =
        Ca::create(dir.path(), "second-ca", "operator CA two").expect("CA");
    let shop = first
        .server(dir.path(), "shop", &["shop.example"], &[])
        .expect("shop cert");
    let api = first
        .server(dir.path(), "api", &["api.example"], &[])
        .expect("api cert");
    Certs {
        first_ca: first_files.files.cert,
        second_ca: second_files.files.cert,
        second,
        shop,
        api,
        dir,
    }
}

struct Gateway {
    _cp: WeftControl,
    _web_proxy: WeftProxy,
    web: HttpApp,
    orders: HttpApp,
    gateway: WeftProxy,
    tls: SocketAddr,
    plain: SocketAddr,
}

/// The mesh: `web` behind its sidecar (mTLS, letting only the gateway in), `orders`
/// as a plain endpoint; the gateway routes shop.example to web (whose routes send
/// /api/orders to orders) and api.example to orders.
async fn gateway(certs: &Certs) -> Gateway {
    let cp = WeftControl::start_yaml("services: []\n", &[])
        .await
        .expect("start control plane");
    let web = HttpApp::start("web-app").await.expect("web app");
    let orders = HttpApp::start("orders-app").await.expect("orders app");
    let mut web_config = ProxyConfig::new().inbound(web.addr);
    web_config.extra = cp.identity_yaml(
        "web",
        &format!("{{allow_identities: [\"{GATEWAY_ID}\"]}}"),
        "",
    );
    let web_proxy = WeftProxy::start_named("web-proxy", web_config)
        .await
        .expect("start web proxy");

    let (tls, plain) = (free_addr(), free_addr());
    let mut config = ProxyConfig::new();
    let lines = [
        "services:".to_string(),
        "  - name: web".to_string(),
        format!(
            "    endpoints: [{{address: \"{}\", identity: \"{WEB_ID}\"}}]",
            web_proxy.inbound()
        ),
        "    routes: [{match: [{path: {prefix: /api/orders}}], backends: [{service: orders}]}]"
            .to_string(),
        "  - name: orders".to_string(),
        format!("    endpoints: [{{address: \"{}\"}}]", orders.addr),
        "gateway:".to_string(),
        "  tls_reload_interval: 200ms".to_string(),
        "  listeners:".to_string(),
        format!("    - listen: \"{tls}\""),
        "      tls:".to_string(),
        format!(
            "        - {{cert: \"{}\", key: \"{}\"}}",
            certs.shop.cert.display(),
            certs.shop.key.display()
        ),
        format!(
            "        - {{cert: \"{}\", key: \"{}\"}}",
            certs.api.cert.display(),
            certs.api.key.display()
        ),
        format!(
            "    - {{listen: \"{plain}\", redirect_https: {}}}",
            tls.port()
        ),
        "  hosts:".to_string(),
        "    - {host: shop.example, service: web}".to_string(),
        "    - {host: api.example, service: orders}".to_string(),
    ];
    config.extra = format!(
        "{}{}\n",
        cp.identity_yaml("gateway", "{}", ""),
        lines.join("\n")
    );
    let gateway = WeftProxy::start_named("gateway", config)
        .await
        .expect("start gateway");
    Gateway {
        _cp: cp,
        _web_proxy: web_proxy,
        web,
        orders,
        gateway,
        tls,
        plain,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_gateway_reaches_the_service_its_host_and_path_name() {
    if !have_curl() {
        return;
    }
    let certs = certs();
    let gw = gateway(&certs).await;
    let shop = ("shop.example", gw.tls);
    let port = gw.tls.port();

    let profile = curl(
        &format!("https://shop.example:{port}/api/profile"),
        shop,
        Some(&certs.first_ca),
    )
    .await
    .expect("shop.example verifies with its own certificate");
    assert_eq!(profile.status, 200);
    assert_eq!(profile.header("x-app"), Some("web-app"));
    let headers = curl(
        &format!("https://shop.example:{port}/headers"),
        shop,
        Some(&certs.first_ca),
    )
    .await
    .expect("headers");
    assert!(
        headers
            .body
            .contains(&format!("weft-client-id: {GATEWAY_ID}")),
        "web is called over mTLS under the gateway's identity: {}",
        headers.body
    );

    let orders = curl(
        &format!("https://shop.example:{port}/api/orders/7"),
        shop,
        Some(&certs.first_ca),
    )
    .await
    .expect("orders");
    assert_eq!(orders.status, 200);
    assert_eq!(orders.header("x-app"), Some("orders-app"));

    // The api.example certificate names only api.example: curl verifying it proves
    // the gateway chose it by SNI.
    let api = curl(
        &format!("https://api.example:{port}/"),
        ("api.example", gw.tls),
        Some(&certs.first_ca),
    )
    .await
    .expect("api.example verifies with its own certificate");
    assert_eq!(api.header("x-app"), Some("orders-app"));

    let unknown = curl(
        &format!("https://other.example:{port}/"),
        ("other.example", gw.tls),
        None,
    )
    .await
    .expect("an answer, not a reset");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("weft-error"), Some("unknown-service"));
    let refused = curl(
        &format!("https://other.example:{port}/"),
        ("other.example", gw.tls),
        Some(&certs.first_ca),
    )
    .await;
    assert!(refused.is_err(), "no certificate names other.example");

    let plain_port = gw.plain.port();
    let redirect = curl(
        &format!("http://shop.example:{plain_port}/cart?x=1"),
        ("shop.example", gw.plain),
        None,
    )
    .await
    .expect("redirect");
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://shop.example:{port}/cart?x=1").as_str())
    );
    assert_eq!(gw.web.requests(), 2);
    assert_eq!(gw.orders.requests(), 2);
    let routed = gw
        .gateway
        .metric(
            "weft_requests_total",
            &[
                ("service", "web.default"),
                ("route", "route-0"),
                ("status_class", "2xx"),
            ],
        )
        .await;
    assert_eq!(routed, 1.0);
    let opened = gw
        .gateway
        .metric(
            "weft_tcp_connections_opened_total",
            &[("direction", "gateway")],
        )
        .await;
    assert!(opened >= 6.0, "{opened}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_once_its_files_change() {
    if !have_curl() {
        return;
    }
    let certs = certs();
    let gw = gateway(&certs).await;
    let url = format!("https://shop.example:{}/", gw.tls.port());
    let shop = ("shop.example", gw.tls);
    assert!(curl(&url, shop, Some(&certs.second_ca)).await.is_err());

    // The renewed certificate, from the second CA, replaces the files in place.
    let renewed_dir = certs.dir.path().join("renewed");
    std::fs::create_dir_all(&renewed_dir).expect("renewed dir");
    let renewed = certs
        .second
        .server(&renewed_dir, "shop", &["shop.example"], &[])
        .expect("renewed cert");
    std::fs::copy(&renewed.key, &certs.shop.key).expect("key");
    std::fs::copy(&renewed.cert, &certs.shop.cert).expect("cert");

    let fetched = eventually(
        Duration::from_secs(15),
        "the renewed certificate",
        || async { curl(&url, shop, Some(&certs.second_ca)).await.ok() },
    )
    .await;
    assert_eq!(fetched.header("x-app"), Some("web-app"));
    assert!(
        curl(&url, shop, Some(&certs.first_ca)).await.is_err(),
        "the old certificate is gone"
    );
}

/// The config deploy/k8s/gateway ships (its ConfigMap's `gateway.yaml`) is one
/// `weft-proxy check` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_components_gateway_config_passes_check() {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/k8s/gateway/gateway.yaml");
    let text = std::fs::read_to_string(&manifest).expect("the component's manifest");
    let config: String = text
        .lines()
        .skip_while(|l| l.trim() != "gateway.yaml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or("")))
        .collect();
    assert!(
        config.contains("gateway:"),
        "no gateway config in {}",
        manifest.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, &config).expect("write config");
    let cmd = weft_tests::proxy::proxy_command(&["check", "--config", &path.to_string_lossy()])
        .expect("command");
    let mut process =
        weft_tests::process::Process::spawn("weft-proxy-check", cmd, dir.path()).expect("spawn");
    let status = process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("check exits");
    assert!(status.success(), "{}\n{config}", process.output());
}

/// A Python gRPC client (grpcio, Debian's python3-grpcio) with TLS to the gateway:
/// the SNI name picks the certificate, the gRPC method picks the route.
const PYTHON_CLIENT: &str = r#"
import sys
import grpc

port, ca_path = sys.argv[1], sys.argv[2]
with open(ca_path, "rb") as f:
    creds = grpc.ssl_channel_credentials(root_certificates=f.read())
options = [("grpc.ssl_target_name_override", "grpc.example"),
           ("grpc.default_authority", "grpc.example")]
with grpc.secure_channel("127.0.0.1:" + port, creds, options=options) as channel:
    unary = channel.unary_unary("/weft.test.Echo/Unary")
    # weft.test.Msg{text: "hello"}, encoded by hand: no generated stubs needed.
    reply, call = unary.with_call(b"\x1a\x05hello", timeout=10)
    route = dict(call.initial_metadata()).get("x-route", "none")
    print(reply.hex(), route)
"#;

fn python_with_grpcio() -> Option<&'static str> {
    const PYTHON: &str = "/usr/bin/python3";
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(PYTHON);
    }
    assert!(
        !weft_tests::tools::in_ci(),
        "CI=true and {PYTHON} cannot import grpc: apt-get install -y python3-grpcio"
    );
    eprintln!("SKIPPED: {PYTHON} without grpc (apt-get install -y python3-grpcio)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_client_reaches_a_grpc_route_through_the_gateway_with_tls() {
    let Some(python) = python_with_grpcio() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, ca_files) = Ca::create(dir.path(), "ca", "operator CA").expect("CA");
    let cert = ca
        .server(dir.path(), "grpc", &["grpc.example"], &[])
        .expect("grpc cert");
    let echo = weft_tests::grpc::GrpcEchoApp::start()
        .await
        .expect("echo app");
    let tls = free_addr();
    let mut config = ProxyConfig::new();
    config.extra = [
        "services:".to_string(),
        "  - name: echo".to_string(),
        "    ports: [{port: 80, protocol: grpc}]".to_string(),
        format!("    endpoints: [{{address: \"{}\"}}]", echo.addr),
        "    routes: [{name: unary, match: [{grpc: {service: weft.test.Echo, method: Unary}}], \
         filters: {response_headers: {set: {x-route: unary}}}}]"
            .to_string(),
        "gateway:".to_string(),
        format!(
            "  listeners: [{{listen: \"{tls}\", tls: [{{cert: \"{}\", key: \"{}\"}}]}}]",
            cert.cert.display(),
            cert.key.display()
        ),
        "  hosts: [{host: grpc.example, service: echo}]\n".to_string(),
    ]
    .join("\n");
    let gateway = WeftProxy::start_named("grpc-gateway", config)
        .await
        .expect("start gateway");
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-c", PYTHON_CLIENT])
        .arg(tls.port().to_string())
        .arg(&ca_files.files.cert)
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP_DEADLINE, cmd.output())
        .await
        .expect("the client finished")
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The echo: field 3 (text), "hello".
    assert_eq!(stdout.trim(), "1a0568656c6c6f unary");
    let routed = gateway
        .metric(
            "weft_requests_total",
            &[("service", "echo.default"), ("route", "unary")],
        )
        .await;
    assert_eq!(routed, 1.0);
}

/// `base` as a plaintext gateway (no identity) over plain `web` and `orders`
/// endpoints, its host table given as YAML lines.
fn host_swap_config(
    base: ProxyConfig,
    (web, orders): (&HttpApp, &HttpApp),
    listen: SocketAddr,
    hosts: &[&str],
) -> ProxyConfig {
    let mut config = base.with_services(vec![
        ServiceDef::new("web").endpoint(web.addr),
        ServiceDef::new("orders").endpoint(orders.addr),
    ]);
    config.extra = format!(
        "gateway:\n  listeners: [{{listen: \"{listen}\"}}]\n  hosts:\n{}\n",
        hosts
            .iter()
            .map(|h| format!("    - {h}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_table_is_swapped_on_sighup_under_load_and_a_bad_one_is_refused_whole() {
    let web = HttpApp::start("web-app").await.expect("web app");
    let orders = HttpApp::start("orders-app").await.expect("orders app");
    let listen = free_addr();
    let apps = (&web, &orders);
    let first = host_swap_config(
        ProxyConfig::new(),
        apps,
        listen,
        &["{host: shop.example, service: web}"],
    );
    let mut gateway = WeftProxy::start_named("gateway", first)
        .await
        .expect("start gateway");
    let load = Load::start(LoadSpec::new(listen, "http://shop.example/"));
    load.wait_more_ok(200, Duration::from_secs(30)).await;
    assert_eq!(load.answered_by("orders-app"), 0);

    let reload = async |gateway: &mut WeftProxy, config: ProxyConfig, result: &str| {
        let before = gateway
            .metric("weft_snapshot_reloads_total", &[("result", result)])
            .await;
        gateway.write_config(config).expect("write config");
        gateway.reload().expect("SIGHUP");
        gateway
            .wait_metric(
                "weft_snapshot_reloads_total",
                &[("result", result)],
                |v| v > before,
                Duration::from_secs(15),
            )
            .await;
    };
    // shop.example moves to orders and a new host appears.
    let swapped = host_swap_config(
        gateway.config.clone(),
        apps,
        listen,
        &[
            "{host: shop.example, service: orders}",
            "{host: new.example, service: web}",
        ],
    );
    reload(&mut gateway, swapped, "ok").await;
    load.wait_more_ok(300, Duration::from_secs(30)).await;
    assert!(load.answered_by("orders-app") > 0, "{:?}", load.by_app());
    // Since the swap, shop.example is orders' alone.
    let web_by_first_table = load.answered_by("web-app");
    let mut client = H1Client::connect(listen).await.expect("connect");
    let new = client
        .send(client::get("http://new.example/"))
        .await
        .expect("new.example");
    assert_eq!(new.header("x-app"), Some("web-app"));

    // A table naming a service the mesh lacks is refused with the rest of the
    // file, even the valid host beside it.
    let bad = host_swap_config(
        gateway.config.clone(),
        apps,
        listen,
        &[
            "{host: shop.example, service: web}",
            "{host: ghost.example, service: ghost}",
        ],
    );
    reload(&mut gateway, bad, "error").await;
    load.wait_more_ok(300, Duration::from_secs(30)).await;
    let report = load.stop().await;
    report.assert_no_failures();
    assert!(web_by_first_table > 0, "{:?}", report.by_app);
    assert_eq!(
        report.by_app.get("web-app").copied().unwrap_or(0),
        web_by_first_table,
        "the refused table would send shop.example to web: {:?}",
        report.by_app
    );
    let ghost = client
        .send(client::get("http://ghost.example/"))
        .await
        .expect("ghost.example");
    assert_eq!(ghost.status, 404, "the refused table's host is not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_with_hostnames_takes_only_the_hosts_it_names() {
    let web = HttpApp::start("web-app").await.expect("web app");
    let orders = HttpApp::start("orders-app").await.expect("orders app");
    let listen = free_addr();
    let mut config = ProxyConfig::new().with_services(vec![
        ServiceDef::new("web").endpoint(web.addr).routes(
            "[{name: api-host, hostnames: [api.example, '*.api.example'], backends: [{service: orders}]}]",
        ),
        ServiceDef::new("orders").endpoint(orders.addr),
    ]);
    let hosts = [
        "shop.example",
        "api.example",
        "eu.api.example",
        "api.example.org",
    ];
    config.extra = format!(
        "gateway:\n  listeners: [{{listen: \"{listen}\"}}]\n  hosts:\n{}\n",
        hosts
            .iter()
            .map(|h| format!("    - {{host: {h}, service: web}}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let gateway = WeftProxy::start_named("gateway", config)
        .await
        .expect("start gateway");
    let mut client = H1Client::connect(listen).await.expect("connect");
    for (host, want) in [
        ("shop.example", "web-app"),
        ("api.example", "orders-app"),
        ("EU.api.example", "orders-app"),
        ("api.example.org", "web-app"),
    ] {
        // Origin form: the Host header alone names the host.
        let reply = client
            .send(client::request("GET", "/x", &[("host", host)], ""))
            .await
            .expect(host);
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(reply.header("x-app"), Some(want), "{host}");
    }
    let routed = gateway
        .metric(
            "weft_requests_total",
            &[("service", "web.default"), ("route", "api-host")],
        )
        .await;
    assert_eq!(routed, 2.0);
}
