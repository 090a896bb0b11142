//! The proxy as the injector runs it in a pod: `weft-proxy run` without a config
//! file, configured only by WEFT_* variables (the control plane over TLS, verified
//! with WEFT_TRUST_ANCHORS; the identity proof in a file), and the admin server
//! standing in for the app's kubelet probes.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use weft_tests::admin::{self, Reply};
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::control::WeftControl;
use weft_tests::ports::{closed_addr, free_port};
use weft_tests::process::Process;
use weft_tests::proxy::{ProxyConfig, WeftProxy, proxy_command};
use weft_tests::{STEP_DEADLINE, within};

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const MESH: &str = "services:\n  - name: placeholder\n    endpoints: []\n";

/// A `weft-proxy run` started with `env` only; stopped when dropped.
struct EnvProxy {
    process: Process,
    admin: SocketAddr,
    outbound: SocketAddr,
    _dir: TempDir,
}

impl EnvProxy {
    /// Starts the proxy with the pod's variables plus `env`, and waits for `/ready`
    /// (which needs a certificate: the control plane was reached and trusted).
    async fn start(dir: TempDir, env: &[(&str, String)]) -> EnvProxy {
        let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
        let mut cmd = proxy_command(&["run"]).expect("weft-proxy binary");
        for key in ["WEFT_TRUST_BUNDLE", "WEFT_IDENTITY_TOKEN"] {
            cmd.env_remove(key);
        }
        cmd.env("WEFT_OUTBOUND_PORT", outbound.to_string())
            .env("WEFT_INBOUND_PORT", inbound.to_string())
            .env("WEFT_ADMIN_PORT", admin.to_string())
            .env("WEFT_NODE_ID", "client-7d9f-abcde")
            .env("WEFT_NODE_IP", "127.0.0.1")
            .env("WEFT_OPAQUE_PORTS", "")
            .env("WEFT_LOG", "info,weft_proxy=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut process = Process::spawn("env-proxy", cmd, dir.path()).expect("spawn");
        let admin = SocketAddr::from(([127, 0, 0, 1], admin));
        admin::wait_ready(&mut process, admin, Duration::from_secs(20))
            .await
            .expect("the env-configured proxy gets ready");
        EnvProxy {
            process,
            admin,
            outbound: SocketAddr::from(([127, 0, 0, 1], outbound)),
            _dir: dir,
        }
    }
}

/// The variables of an injected pod whose proxy is `sa` in `default`, against
/// the TLS control plane `cp`. The token goes into a file in `dir`, as the
/// projected token volume does.
fn pod_env(cp: &WeftControl, sa: &str, dir: &TempDir) -> Vec<(&'static str, String)> {
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, cp.token("default", sa).expect("token")).expect("write token");
    let anchors =
        std::fs::read_to_string(cp.state_dir().join("ca.pem")).expect("the control plane's CA");
    vec![
        // host:port, no scheme: TLS, and 127.0.0.1 is the name checked.
        ("WEFT_CONTROL_PLANE", cp.grpc().to_string()),
        ("WEFT_TRUST_ANCHORS", anchors),
        ("WEFT_TRUST_DOMAIN", "cluster.local".into()),
        (
            "WEFT_IDENTITY_TOKEN_FILE",
            token_file.to_string_lossy().into_owned(),
        ),
        ("WEFT_NODE_NAMESPACE", "default".into()),
        ("WEFT_NODE_SERVICE_ACCOUNT", sa.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_configured_only_by_the_pod_env_serves_over_mtls() {
    let cp = WeftControl::start_yaml(MESH, &["--grpc-tls"])
        .await
        .expect("start control plane");
    let app = HttpApp::start("echo-app").await.expect("start app");
    // The callee: a file-configured proxy in front of the app.
    let mut server_config = ProxyConfig::new().inbound(app.addr);
    server_config.extra = format!(
        "identity:\n  service_account: server\n  token: \"{}\"\n  control_plane: \
         \"https://{}\"\n  trust_bundle: \"{}\"\n",
        cp.token("default", "server").expect("token"),
        cp.grpc(),
        cp.state_dir().join("ca.pem").display()
    );
    let server = WeftProxy::start_named("server-proxy", server_config)
        .await
        .expect("start server proxy");
    cp.write_mesh_text(&format!(
        "services:\n  - name: echo\n    ports: [{{port: 80, protocol: http1}}]\n    endpoints:\n      \
         - {{address: \"{}\", identity: \"{SERVER_ID}\"}}\n",
        server.inbound()
    ))
    .expect("write mesh");
    let dir = tempfile::tempdir().expect("dir");
    let env = pod_env(&cp, "client", &dir);
    let proxy = EnvProxy::start(dir, &env).await;

    // The app names the proxy (no iptables here): routed by the Host header, which
    // the proxy resolves through the control plane.
    let reply = weft_tests::eventually(STEP_DEADLINE, "echo through the env proxy", || async {
        let mut c = H1Client::connect(proxy.outbound).await.ok()?;
        let mut req = client::get("/headers");
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("echo"));
        let reply = c.send(req).await.ok()?;
        (reply.status == StatusCode::OK).then_some(reply)
    })
    .await;

    let body = reply.text();
    assert!(
        body.lines()
            .any(|l| l == format!("weft-client-id: {CLIENT_ID}")),
        "the callee saw the env proxy's SPIFFE ID: {body}"
    );
    // The admin server listens on all addresses in a pod; the snapshot is still
    // shown to local callers.
    let config = admin::get(proxy.admin, "/config").await.expect("/config");
    assert_eq!(config.status, 200);
    let mut proxy = proxy;
    let status = proxy.process.stop().await.expect("stop");
    assert!(status.success(), "drains and exits 0: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_file_a_missing_variable_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = proxy_command(&["run"]).expect("weft-proxy binary");
    for key in [
        "WEFT_CONTROL_PLANE",
        "WEFT_NODE_NAMESPACE",
        "WEFT_NODE_SERVICE_ACCOUNT",
    ] {
        cmd.env_remove(key);
    }
    let mut process = Process::spawn("env-proxy", cmd, dir.path()).expect("spawn");
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(!status.success());
    let output = process.output();
    assert!(output.contains("WEFT_CONTROL_PLANE: required"), "{output}");
}

/// One probe as the kubelet sends it after injection: to the admin port, with the
/// original probe's headers and the kubelet's default Host (pod IP, probed port).
async fn probe(admin: SocketAddr, path: &str) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await?;
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: kube-probe/1.33\r\n\
             X-Probe: live\r\nConnection: close\r\n\r\n",
            admin.port()
        );
        stream.write_all(head.as_bytes()).await?;
        let raw = client::read_until_closed(&mut stream, STEP_DEADLINE).await?;
        admin::parse_reply(&raw)
    };
    within(STEP_DEADLINE, "probe through the admin port", exchange)
        .await
        .expect("a probe reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_probes_reach_the_app_through_the_admin_port() {
    let app = HttpApp::start("probed-app").await.expect("start app");
    let down = closed_addr();
    let undeclared = HttpApp::start("undeclared-app").await.expect("start app");
    let ports = format!("{},{}", app.addr.port(), down.port());
    let proxy = WeftProxy::start(
        ProxyConfig::new()
            .probe_ports(&ports)
            .limit("probe_timeout", "300ms"),
    )
    .await
    .expect("start proxy");
    let admin = proxy.admin();
    let port = app.addr.port();

    let ok = probe(admin, &format!("/app-probe/{port}/headers?deep=1")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = ok.body.to_lowercase();
    assert!(seen.contains("x-probe: live"), "headers replayed: {seen}");
    assert!(seen.contains("user-agent: kube-probe/1.33"), "{seen}");
    assert!(
        seen.contains(&format!("host: 127.0.0.1:{port}")),
        "the Host names the app's port, as the kubelet's own probe would: {seen}"
    );
    assert_eq!(app.requests(), 1);

    // An app slower than the probe timeout is as good as down.
    let slow = probe(admin, &format!("/app-probe/{port}/slow?ms=5000")).await;
    assert_eq!(slow.status, 503, "{}", slow.body);

    let refused = probe(admin, &format!("/app-probe/{}/healthz", down.port())).await;
    assert_eq!(refused.status, 503, "{}", refused.body);

    let relay = probe(
        admin,
        &format!("/app-probe/{}/healthz", undeclared.addr.port()),
    )
    .await;
    assert_eq!(relay.status, 403, "{}", relay.body);
    assert_eq!(
        undeclared.requests(),
        0,
        "no request reached an undeclared port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_grpc_probes_ask_the_apps_health_service() {
    // The checkout example's payments service: gRPC with grpc.health.v1 beside it.
    let port = free_port();
    let grpc_app = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = std::process::Command::new(
        weft_tests::bins::binary("payments").expect("the payments example (weft-examples bins)"),
    );
    cmd.env("PAYMENTS_LISTEN", grpc_app.to_string())
        .env("NO_COLOR", "1");
    let _payments = Process::spawn("payments", cmd, dir.path()).expect("spawn payments");
    weft_tests::eventually(STEP_DEADLINE, "payments listens", || async {
        TcpStream::connect(grpc_app).await.ok()
    })
    .await;
    let http_only = HttpApp::start("http-only").await.expect("start app");
    let undeclared = free_port();
    let proxy = WeftProxy::start(
        ProxyConfig::new().probe_ports(&format!("{port},{}", http_only.addr.port())),
    )
    .await
    .expect("start proxy");
    let admin = proxy.admin();

    for path in [
        format!("/app-grpc-probe/{port}"),
        format!("/app-grpc-probe/{port}/payments.v1.Payments"),
    ] {
        let reply = probe(admin, &path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    let unknown = probe(admin, &format!("/app-grpc-probe/{port}/no.such.Service")).await;
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    let not_grpc = probe(admin, &format!("/app-grpc-probe/{}", http_only.addr.port())).await;
    assert_eq!(not_grpc.status, 503, "{}", not_grpc.body);
    let relay = probe(admin, &format!("/app-grpc-probe/{undeclared}")).await;
    assert_eq!(relay.status, 403, "{}", relay.body);
}
