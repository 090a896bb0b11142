//! Identity and mutual TLS between proxies: certificates from weft-control's CA,
//! SPIFFE IDs checked both ways, strict and permissive inbound, authorization,
//! rotation, and a control plane outage. Every handshake is real, on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_tests::apps::{HttpApp, TcpApp};
use weft_tests::client::{self, H1Client, H2Client};
use weft_tests::control::WeftControl;
use weft_tests::mesh_ca::AnyServer;
use weft_tests::proxy::{ProxyConfig, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually, within};

const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const MESH: &str = "services:\n  - name: placeholder\n    endpoints: []\n";

/// The identity section of a proxy config.
fn identity_yaml(cp: &WeftControl, sa: &str, inbound: &str) -> String {
    cp.identity_yaml(sa, inbound, "")
}

/// A file-mode service `echo` whose one endpoint must present `identity`. Its port
/// declares no protocol: the app speaks both HTTP versions, and a port declared
/// `http1` would have HTTP/2 callers sent on as HTTP/1.1.
fn echo_service(endpoint: SocketAddr, identity: &str) -> String {
    format!(
        "services:\n  - name: echo\n    endpoints:\n      \
         - {{address: \"{endpoint}\", identity: \"{identity}\"}}\n"
    )
}

struct Mesh {
    cp: WeftControl,
    app: HttpApp,
    server: WeftProxy,
    client: WeftProxy,
}

/// A server proxy in front of `app` with `inbound` policy, and a client proxy whose
/// `echo` endpoint (the server proxy) must be `expect_id`.
async fn proxies(
    cp: &WeftControl,
    app: SocketAddr,
    inbound: &str,
    expect_id: &str,
) -> (WeftProxy, WeftProxy) {
    let mut server_config = ProxyConfig::new().inbound(app);
    server_config.extra = identity_yaml(cp, "server", inbound);
    let server = WeftProxy::start_named("server-proxy", server_config)
        .await
        .expect("start server proxy");
    let mut client_config = ProxyConfig::new().upstream("echo");
    client_config.extra = format!(
        "{}{}",
        identity_yaml(cp, "client", "{}"),
        echo_service(server.inbound(), expect_id)
    );
    let client = WeftProxy::start_named("client-proxy", client_config)
        .await
        .expect("start client proxy");
    (server, client)
}

impl Mesh {
    /// Control plane, app, a server proxy in front of the app with `inbound` policy,
    /// and a client proxy whose `echo` endpoint must be `expect_id`.
    async fn start(cp_args: &[&str], inbound: &str, expect_id: &str) -> Mesh {
        let cp = WeftControl::start_yaml(MESH, cp_args)
            .await
            .expect("start control plane");
        let app = HttpApp::start("echo-app").await.expect("start app");
        let (server, client) = proxies(&cp, app.addr, inbound, expect_id).await;
        Mesh {
            cp,
            app,
            server,
            client,
        }
    }

    async fn get(&self, path: &str) -> client::Reply {
        let mut c = H1Client::connect(self.client.upstream("echo"))
            .await
            .expect("connect to the client proxy");
        let mut req = client::get(path);
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("echo"));
        req.headers_mut().insert(
            "weft-client-id",
            http::HeaderValue::from_static("spiffe://forged/ns/x/sa/y"),
        );
        c.send(req).await.expect("request")
    }
}

async fn handshakes_ok(p: &WeftProxy, direction: &str) -> f64 {
    p.metric(
        "weft_tls_handshakes_total",
        &[("direction", direction), ("result", "ok")],
    )
    .await
}

fn header_line<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_between_proxies_tells_the_app_who_called() {
    let mesh = Mesh::start(&[], "{}", SERVER_ID).await;

    let reply = mesh.get("/headers").await;

    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.text();
    assert_eq!(
        header_line(&body, "weft-client-id"),
        Some(CLIENT_ID),
        "{body}"
    );
    assert_eq!(mesh.app.requests(), 1);
    assert_eq!(handshakes_ok(&mesh.client, "outbound").await, 1.0);
    assert_eq!(handshakes_ok(&mesh.server, "inbound").await, 1.0);
    let by_peer = mesh
        .server
        .metric(
            "weft_inbound_requests_by_peer_total",
            &[("tls", "true"), ("peer_identity", CLIENT_ID)],
        )
        .await;
    assert_eq!(by_peer, 1.0);
    assert!(
        mesh.server
            .metric("weft_identity_cert_expiry_timestamp_seconds", &[])
            .await
            > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_valid_cert_for_the_wrong_identity_is_refused() {
    let wrong = "spiffe://cluster.local/ns/default/sa/payments";
    let mesh = Mesh::start(&[], "{}", wrong).await;

    let reply = mesh.get("/").await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("tls-failed"));
    assert_eq!(mesh.app.requests(), 0);
    let refused = mesh
        .client
        .metric(
            "weft_tls_handshakes_total",
            &[("direction", "outbound"), ("result", "wrong-identity")],
        )
        .await;
    assert!(refused >= 1.0, "{refused}");
}

/// Connects to `addr` with TLS 1.3, presenting `cert` (or none), sends a request
/// and returns what came back before the connection closed.
async fn tls_request(
    addr: SocketAddr,
    cert: Option<(CertificateDer<'static>, KeyPair)>,
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match cert {
        Some((der, key)) => builder
            .with_client_auth_cert(
                vec![der],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let mut out = Vec::new();
    let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    else {
        return out;
    };
    if tls
        .write_all(b"GET / HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return out;
    }
    let _ = within(
        STEP_DEADLINE,
        "reading the reply",
        tls.read_to_end(&mut out),
    )
    .await;
    out
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    id: &str,
    not_after: time::OffsetDateTime,
) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().expect("uri"))];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    params.not_after = not_after;
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.der().clone(), key)
}

fn root(dir: &std::path::Path) -> (Issuer<'static, KeyPair>, String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dir.to_string_lossy().as_ref());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("root");
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca-key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write ca");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (
        Issuer::new(params, key),
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_inbound_refuses_other_ca_expired_missing_certs_and_plaintext() {
    let dir = tempfile::tempdir().expect("dir");
    let (mesh_ca, cert, key) = root(dir.path());
    let mesh = Mesh::start(&["--ca-cert", &cert, "--ca-key", &key], "{}", SERVER_ID).await;
    let inbound = mesh.server.inbound();
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);

    // The control: a valid cert from the mesh CA is served.
    let good = tls_request(inbound, Some(leaf(&mesh_ca, CLIENT_ID, later))).await;
    assert!(
        good.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&good)
    );

    let other_dir = tempfile::tempdir().expect("dir");
    let (other_ca, _, _) = root(other_dir.path());
    let other = tls_request(inbound, Some(leaf(&other_ca, CLIENT_ID, later))).await;
    assert!(other.is_empty(), "{}", String::from_utf8_lossy(&other));

    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let expired = tls_request(inbound, Some(leaf(&mesh_ca, CLIENT_ID, past))).await;
    assert!(expired.is_empty(), "{}", String::from_utf8_lossy(&expired));

    let anonymous = tls_request(inbound, None).await;
    assert!(
        anonymous.is_empty(),
        "{}",
        String::from_utf8_lossy(&anonymous)
    );

    let mut plain = tokio::net::TcpStream::connect(inbound)
        .await
        .expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: echo\r\n\r\n")
        .await
        .expect("write");
    let answer = client::read_until_closed(&mut plain, STEP_DEADLINE)
        .await
        .unwrap_or_default();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    assert_eq!(
        mesh.app.requests(),
        1,
        "only the valid caller reached the app"
    );
    for reason in [
        "unknown-ca",
        "expired",
        "no-client-certificate",
        "plaintext-refused",
    ] {
        let n = mesh
            .server
            .metric(
                "weft_tls_handshakes_total",
                &[("direction", "inbound"), ("result", reason)],
            )
            .await;
        assert_eq!(n, 1.0, "handshake failures for {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_inbound_serves_plaintext_labelled_tls_false() {
    let mesh = Mesh::start(&[], "{mode: permissive}", SERVER_ID).await;

    let mut c = H1Client::connect(mesh.server.inbound())
        .await
        .expect("connect");
    let mut req = client::get("/headers");
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("echo"));
    req.headers_mut()
        .insert("weft-client-id", http::HeaderValue::from_static(CLIENT_ID));
    let plain = c.send(req).await.expect("plaintext request");
    // And mTLS still works beside it.
    let meshed = mesh.get("/headers").await;

    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        header_line(&plain.text(), "weft-client-id"),
        None,
        "forged id stripped"
    );
    assert_eq!(meshed.status, StatusCode::OK);
    assert_eq!(
        header_line(&meshed.text(), "weft-client-id"),
        Some(CLIENT_ID)
    );
    let metric = |tls: &'static str, peer: &'static str| {
        let server = &mesh.server;
        async move {
            server
                .metric(
                    "weft_inbound_requests_by_peer_total",
                    &[("tls", tls), ("peer_identity", peer)],
                )
                .await
        }
    };
    assert_eq!(metric("false", "").await, 1.0);
    assert_eq!(metric("true", CLIENT_ID).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_allows_named_callers_and_denies_others() {
    let allowed = Mesh::start(
        &[],
        &format!("{{allow_identities: [\"{CLIENT_ID}\"]}}"),
        SERVER_ID,
    )
    .await;
    let reply = allowed.get("/").await;
    assert_eq!(reply.status, StatusCode::OK);

    let denied = Mesh::start(&[], "{allow_namespaces: [payments]}", SERVER_ID).await;
    let reply = denied.get("/").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("weft-error"), Some("forbidden"));
    assert_eq!(denied.app.requests(), 0);

    let by_namespace = Mesh::start(&[], "{allow_namespaces: [default]}", SERVER_ID).await;
    assert_eq!(by_namespace.get("/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_keep_serving_on_their_certs_while_the_control_plane_is_down() {
    let mut mesh = Mesh::start(&[], "{}", SERVER_ID).await;
    assert_eq!(mesh.get("/").await.status, StatusCode::OK);

    mesh.cp.stop().await.expect("stop control plane");

    // New client connections, and a fresh upstream connection after the pool's
    // one is closed by the server proxy's restart-free path: all on current certs.
    for _ in 0..5 {
        assert_eq!(mesh.get("/").await.status, StatusCode::OK);
    }
    let ready = mesh.server.admin_get("/ready").await.expect("ready");
    assert_eq!(ready.status, 200);
}

/// The issue asks for 60 s of load with a 10 s lifetime; renewal at ~70 % of the
/// lifetime gives a rotation every ~7 s, so 45 s of load already shows at least
/// five rotations per proxy while keeping CI time bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_failed_requests() {
    let mesh = Mesh::start(&["--cert-lifetime", "10s"], "{}", SERVER_ID).await;
    let upstream = mesh.client.upstream("echo");
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let run_for = Duration::from_secs(45);
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (failed, done) = (failed.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            // Bounded in count and time; every 50th request opens a new client
            // connection so upstream connections also come and go.
            let mut c = None;
            for i in 0..200_000u32 {
                if start.elapsed() >= run_for {
                    break;
                }
                if c.is_none() || (i + w) % 50 == 0 {
                    c = H1Client::connect(upstream).await.ok();
                }
                let Some(conn) = c.as_mut() else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let mut req = client::get("/");
                req.headers_mut()
                    .insert("host", http::HeaderValue::from_static("echo"));
                match conn.send(req).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        c = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for w in workers {
        within(run_for + STEP_DEADLINE, "load worker", w)
            .await
            .expect("worker");
    }
    let renewals = |p: &'static str| {
        let proxy = if p == "client" {
            &mesh.client
        } else {
            &mesh.server
        };
        async move {
            proxy
                .metric("weft_identity_renewals_total", &[("result", "ok")])
                .await
        }
    };
    let (client_certs, server_certs) = (renewals("client").await, renewals("server").await);
    println!(
        "rotation under load: {} ok, {} failed, certificates: client {client_certs}, server {server_certs}",
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(done.load(Ordering::Relaxed) > 100);
    // The first certificate plus at least five rotations.
    assert!(client_certs >= 6.0, "client certificates: {client_certs}");
    assert!(server_certs >= 6.0, "server certificates: {server_certs}");
    let _ = eventually(STEP_DEADLINE, "server still ready", || async {
        let r = mesh.server.admin_get("/ready").await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_policy_from_the_control_plane_is_hot_swapped() {
    let deny = format!(
        "{MESH}workloads:\n  - {{service_account: server, inbound: [{{allow_namespaces: [payments]}}]}}\n"
    );
    let cp = WeftControl::start_yaml(&deny, &[])
        .await
        .expect("start control plane");
    let app = HttpApp::start("echo-app").await.expect("start app");
    let (server, client) = proxies(&cp, app.addr, "{}", SERVER_ID).await;
    let mesh = Mesh {
        cp,
        app,
        server,
        client,
    };

    let denied = eventually(STEP_DEADLINE, "the control plane's deny policy", || async {
        let reply = mesh.get("/").await;
        (reply.status == StatusCode::FORBIDDEN).then_some(reply)
    })
    .await;
    assert_eq!(denied.header("weft-error"), Some("forbidden"));
    assert_eq!(mesh.app.requests(), 0);

    let allow = format!(
        "{MESH}workloads:\n  - {{service_account: server, inbound: [{{allow_identities: [\"{CLIENT_ID}\"]}}]}}\n"
    );
    mesh.cp.write_mesh_text(&allow).expect("write mesh");
    eventually(
        STEP_DEADLINE,
        "the control plane's allow policy",
        || async { (mesh.get("/").await.status == StatusCode::OK).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_opaque_tcp_cross_the_mtls_hop() {
    let mesh = Mesh::start(&[], "{}", SERVER_ID).await;
    let mut h2 = H2Client::connect(mesh.client.upstream("echo"))
        .await
        .expect("connect h2");
    let reply = h2
        .send(client::get("http://echo/headers"))
        .await
        .expect("h2 request");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-version"), Some("HTTP/2.0"));
    assert_eq!(
        header_line(&reply.text(), "weft-client-id"),
        Some(CLIENT_ID)
    );

    let tcp_app = TcpApp::echo_after_eof().await.expect("tcp app");
    let (_server, client) = proxies(&mesh.cp, tcp_app.addr, "{}", SERVER_ID).await;
    let mut stream = tokio::net::TcpStream::connect(client.upstream("echo"))
        .await
        .expect("connect");
    stream
        .write_all(b"\x00\x01opaque bytes")
        .await
        .expect("write");
    stream.shutdown().await.expect("half-close");
    let got = client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("read");
    assert_eq!(got, b"echo:\x00\x01opaque bytes");
    assert_eq!(tcp_app.accepted(), 1);
    assert_eq!(handshakes_ok(&client, "outbound").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_root_beside_the_old_reaches_running_proxies() {
    let dir = tempfile::tempdir().expect("dir");
    let (_, cert, key) = root(dir.path());
    let next_dir = tempfile::tempdir().expect("dir");
    let (next_ca, next_cert, _) = root(next_dir.path());
    let mut mesh = Mesh::start(&["--ca-cert", &cert, "--ca-key", &key], "{}", SERVER_ID).await;
    let inbound = mesh.server.inbound();
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let before = tls_request(inbound, Some(leaf(&next_ca, CLIENT_ID, later))).await;
    assert!(before.is_empty(), "the next root is not trusted yet");

    mesh.cp
        .restart_with(&[
            "--ca-cert",
            &cert,
            "--ca-key",
            &key,
            "--extra-roots",
            &next_cert,
        ])
        .await
        .expect("restart the control plane");

    // The proxies keep their certificates (24 h lifetime); only the policy stream
    // can have brought the new root.
    eventually(
        STEP_DEADLINE,
        "the next root trusted by the server proxy",
        || async {
            let got = tls_request(inbound, Some(leaf(&next_ca, CLIENT_ID, later))).await;
            got.starts_with(b"HTTP/1.1 200").then_some(())
        },
    )
    .await;
    assert_eq!(
        mesh.get("/").await.status,
        StatusCode::OK,
        "the old root still works"
    );
    let renewals = mesh
        .server
        .metric("weft_identity_renewals_total", &[("result", "ok")])
        .await;
    assert_eq!(renewals, 1.0, "no new certificate was needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_a_certificate_is_live_but_not_ready() {
    let dir = tempfile::tempdir().expect("dir");
    let mut config = ProxyConfig::new();
    config.extra = format!(
        "identity:\n  token: weft1.00\n  control_plane: \"http://{}\"\n",
        weft_tests::ports::closed_addr()
    );
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config.to_yaml()).expect("write config");
    let cmd = weft_tests::proxy::proxy_command(&["run", "--config", &path.to_string_lossy()])
        .expect("command");
    let _proxy =
        weft_tests::process::Process::spawn("uncertified-proxy", cmd, dir.path()).expect("spawn");
    let admin = config.admin;

    // Live (it answers), not ready (no certificate), and it keeps asking.
    eventually(STEP_DEADLINE, "two failed certificate requests", || async {
        let reply = weft_tests::admin::get(admin, "/metrics").await.ok()?;
        let m = weft_tests::metrics::Metrics::parse(&reply.body);
        (m.value("weft_identity_renewals_total", &[("result", "error")]) >= 2.0).then_some(())
    })
    .await;
    let live = weft_tests::admin::get(admin, "/live").await.expect("live");
    assert_eq!(live.status, 200);
    let ready = weft_tests::admin::get(admin, "/ready")
        .await
        .expect("ready");
    assert_eq!(ready.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_and_policy_come_over_a_tls_control_plane_channel() {
    let mesh = Mesh::start(&["--grpc-tls"], "{}", SERVER_ID).await;
    assert!(mesh.cp.tls());

    let reply = mesh.get("/headers").await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        header_line(&reply.text(), "weft-client-id"),
        Some(CLIENT_ID)
    );
    // A plaintext gRPC client gets nowhere: the port speaks TLS only.
    let mut plain = tokio::net::TcpStream::connect(mesh.cp.grpc())
        .await
        .expect("connect");
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let answer = client::read_until_closed(&mut plain, STEP_DEADLINE)
        .await
        .unwrap_or_default();
    assert!(
        !answer.windows(4).any(|w| w == b"\x00\x00\x00\x04"),
        "no HTTP/2 SETTINGS in clear"
    );
}

/// A server proxy over mTLS in front of an echo app (echoing after EOF), and a
/// client proxy with an upstream listener for `service`, whose port is `port`
/// (YAML flow) and whose one endpoint is the server proxy.
struct OpaqueHop {
    _cp: WeftControl,
    _app: TcpApp,
    server: WeftProxy,
    client: WeftProxy,
}

impl OpaqueHop {
    async fn start(service: &str, port: &str, server_workload: Option<&str>) -> OpaqueHop {
        let cp = WeftControl::start_yaml(MESH, &[])
            .await
            .expect("start control plane");
        let app = TcpApp::echo_after_eof().await.expect("tcp app");
        let mut server_config = ProxyConfig::new().inbound(app.addr);
        if let Some(w) = server_workload {
            server_config = server_config.workload(w);
        }
        server_config.extra = identity_yaml(&cp, "server", "{}");
        let server = WeftProxy::start_named("server-proxy", server_config)
            .await
            .expect("start server proxy");
        let mut client_config = ProxyConfig::new().upstream(service);
        client_config.extra = format!(
            "{}services:\n  - name: {service}\n    ports: [{port}]\n    \
             endpoints:\n      - {{address: \"{}\", identity: \"{SERVER_ID}\"}}\n",
            identity_yaml(&cp, "client", "{}"),
            server.inbound()
        );
        let client = WeftProxy::start_named("client-proxy", client_config)
            .await
            .expect("start client proxy");
        OpaqueHop {
            _cp: cp,
            _app: app,
            server,
            client,
        }
    }
}

/// Writes `payload` to `addr`, half-closes, and reads until the other side closes.
async fn echo_through(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(payload).await.expect("write");
    stream.shutdown().await.expect("half-close");
    client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("read")
}

/// Over mTLS the calling proxy says "opaque" itself (ALPN `weft.opaque/1`), so
/// the server proxy forwards bytes that look like HTTP untouched without any port
/// list of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_port_stays_opaque_across_an_mtls_hop() {
    let hop = OpaqueHop::start("db", "{port: 5432, protocol: opaque}", None).await;
    let (client, server) = (&hop.client, &hop.server);
    let mut payload = b"GET / HTTP/1.1\r\n".to_vec();
    payload.extend(weft_tests::data::pattern(64 * 1024, 3));
    let got = echo_through(client.upstream("db"), &payload).await;

    assert!(
        got.starts_with(b"echo:"),
        "got {:?}",
        String::from_utf8_lossy(&got[..got.len().min(64)])
    );
    assert!(got[5..] == payload[..], "echoed bytes differ");
    assert_eq!(handshakes_ok(client, "outbound").await, 1.0);
    assert_eq!(handshakes_ok(server, "inbound").await, 1.0);
}

/// An opaque connection is counted per service like HTTP requests: the service, the
/// verified identity on the other side and `tls="true"`, on both proxies. The port
/// is AMQP's and the service declares no protocol: the default opaque ports make
/// it opaque, so bytes that look like HTTP still cross untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_counted_per_service_with_the_peer_identity() {
    let hop = OpaqueHop::start("broker", "{port: 5672}", Some("broker")).await;
    let (client, server) = (&hop.client, &hop.server);
    let mut payload = b"POST /queue HTTP/1.1\r\n".to_vec();
    payload.extend(weft_tests::data::pattern(16 * 1024, 4));
    let got = echo_through(client.upstream("broker"), &payload).await;
    assert!(got.starts_with(b"echo:") && got[5..] == payload[..]);

    let outbound = [
        ("direction", "outbound"),
        ("service", "broker.default"),
        ("peer_identity", SERVER_ID),
        ("tls", "true"),
    ];
    let inbound = [
        ("direction", "inbound"),
        ("service", "broker"),
        ("peer_identity", CLIENT_ID),
        ("tls", "true"),
    ];
    for (proxy, labels) in [(client, &outbound), (server, &inbound)] {
        // The proxy closes its side just after the client saw the end.
        eventually(
            STEP_DEADLINE,
            "the connection is counted closed",
            || async {
                let m = proxy.metrics().await.ok()?;
                (m.get("weft_tcp_service_open_connections", labels) == Some(0.0)).then_some(())
            },
        )
        .await;
        let m = proxy.metrics().await.expect("metrics");
        assert_eq!(
            m.get("weft_tcp_service_connections_total", labels),
            Some(1.0),
            "{labels:?}"
        );
        assert_eq!(
            m.get("weft_tcp_service_received_bytes_total", labels),
            Some(payload.len() as f64),
            "{labels:?}"
        );
        assert_eq!(
            m.get("weft_tcp_service_sent_bytes_total", labels),
            Some(got.len() as f64),
            "{labels:?}"
        );
    }
}
