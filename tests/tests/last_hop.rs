//! The last hop speaks what the app speaks: an HTTP/2 caller (curl with prior
//! knowledge, h2c) reaches an app that speaks HTTP/1.1 only (Python's http.server),
//! through one proxy and through an mTLS pair, by the app port's declared protocol:
//! the mesh service's port (`protocol: http1`) or the inbound's `http1_ports`. And
//! the other way: an HTTP/1.1 caller (curl, Python's http.client) reaches an app
//! that speaks HTTP/2 only (h2c, a hyper server) by the service port's
//! `protocol: http2` or the inbound's `http2_ports`; undeclared, it gets a 502 at
//! once.

use weft_tests::apps::HttpApp;
use weft_tests::mtls_pair::{MtlsPair, PairOptions};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::record_app::{RecordApp, curl, parse_record};

/// Sends `GET /hello?x=1` and a POST with a body over HTTP/2 with prior knowledge to
/// `addr`, and checks each reached the app as HTTP/1.1 with what curl sent.
async fn h2c_requests_arrive_as_http1(addr: std::net::SocketAddr) {
    let url = format!("http://{addr}/hello?x=1");
    let out = curl(&["--http2-prior-knowledge", "-H", "x-trace: abc", &url])
        .await
        .expect("an answer over HTTP/2");
    let record = parse_record(&out).expect("the app's record");
    assert_eq!(
        record["request_line"], "GET /hello?x=1 HTTP/1.1",
        "{record}"
    );
    let headers = record["headers"].as_array().expect("headers");
    let has = |name: &str, value: &str| {
        headers
            .iter()
            .any(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)) && h[1] == value)
    };
    assert!(
        has("host", &addr.to_string()),
        "authority as Host: {record}"
    );
    assert!(has("x-trace", "abc"), "{record}");

    let url = format!("http://{addr}/upload");
    let out = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        "payload=1",
        &url,
    ])
    .await
    .expect("an answer to the POST");
    let record = parse_record(&out).expect("the app's record");
    assert_eq!(record["request_line"], "POST /upload HTTP/1.1", "{record}");
    assert_eq!(record["body"], "payload=1", "{record}");
    assert_eq!(record["framing"], "length", "{record}");
}

/// What curl prints for `--write-out %{http_code}` on a failed HTTP/2 request.
async fn h2c_status(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/");
    let out = curl(&[
        "--http2-prior-knowledge",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        &url,
    ])
    .await
    .expect("curl ran");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_sends_http2_to_a_declared_http1_app_port_as_http1() {
    let app = RecordApp::start().await.expect("start the app");
    let port = app.addr.port().to_string();
    let plain = WeftProxy::start_named("inbound", ProxyConfig::new().inbound(app.addr))
        .await
        .expect("start a proxy with no declaration");
    // The premise: undeclared, HTTP/2 goes on as HTTP/2, which this app cannot read.
    assert_eq!(h2c_status(plain.inbound()).await, "502");

    let proxy = WeftProxy::start_named(
        "inbound-http1",
        ProxyConfig::new()
            .inbound(app.addr)
            .inbound_http1_ports(&port),
    )
    .await
    .expect("start a proxy");
    h2c_requests_arrive_as_http1(proxy.inbound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_listener_sends_http2_to_a_service_declared_http1_as_http1() {
    let app = RecordApp::start().await.expect("start the app");
    let service = ServiceDef::new("legacy")
        .port(80, "http1")
        .endpoint(app.addr);
    let proxy = WeftProxy::upstream_for(service)
        .await
        .expect("start a proxy");
    h2c_requests_arrive_as_http1(proxy.upstream("legacy")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_through_an_mtls_pair_reaches_an_http1_app_by_the_service_port() {
    let app = RecordApp::start().await.expect("start the app");
    let pair = MtlsPair::legacy_http1_service(app.addr).await;
    h2c_requests_arrive_as_http1(pair.upstream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_through_an_mtls_pair_reaches_an_http1_app_by_the_inbound_ports() {
    let app = RecordApp::start().await.expect("start the app");
    // The caller's mesh says nothing of the port: h2 crosses the pair as h2, and the
    // server proxy, which knows its app, sends it on as HTTP/1.1.
    let pair = MtlsPair::legacy_http1_app(app.addr).await;
    h2c_requests_arrive_as_http1(pair.upstream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_stays_http2_to_an_app_port_declared_http1() {
    // An HTTP/2 app (the harness's, hyper) behind a port wrongly declared http1:
    // gRPC is never downgraded, so the gRPC-looking request still reaches it as h2.
    let app = HttpApp::start("h2-app").await.expect("start the app");
    let port = app.addr.port().to_string();
    let proxy = WeftProxy::start_named(
        "inbound-http1",
        ProxyConfig::new()
            .inbound(app.addr)
            .inbound_http1_ports(&port),
    )
    .await
    .expect("start a proxy");
    // To /upload, which reads the whole request before it answers, as a gRPC server
    // reads its request message. An app that answers first ends the stream with
    // RST_STREAM(NO_ERROR) (RFC 9113 §8.1), and curl 7.88 takes that for a stream
    // error (exit 92) when its body had not left yet.
    let url = format!("http://{}/upload", proxy.inbound());
    let out = curl(&[
        "--http2-prior-knowledge",
        "--include",
        "-H",
        "content-type: application/grpc",
        "--data-binary",
        "x",
        &url,
    ])
    .await
    .expect("an answer");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("x-version: HTTP/2.0"),
        "the app saw HTTP/2: {text}"
    );
    assert!(text.contains("x-body-len: 1"), "the body arrived: {text}");
}

/// Sends `GET /` and a POST to `/upload` over HTTP/1.1 to `addr`, and checks each
/// was answered by the h2c-only app, which saw HTTP/2.
async fn http1_requests_arrive_as_http2(addr: std::net::SocketAddr) {
    let url = format!("http://{addr}/");
    let out = curl(&["--http1.1", "--include", &url])
        .await
        .expect("an answer over HTTP/1.1");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("x-version: HTTP/2.0"),
        "the app saw HTTP/2: {text}"
    );
    assert!(text.ends_with("hello from h2c-app\n"), "{text}");
    assert!(
        text.contains(&format!("x-host: {addr}")),
        "Host as the authority: {text}"
    );

    let url = format!("http://{addr}/upload?reply=3");
    let out = curl(&["--http1.1", "--include", "--data-binary", "payload=1", &url])
        .await
        .expect("an answer to the POST");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-version: HTTP/2.0"), "{text}");
    assert!(
        text.contains("x-body-len: 9"),
        "the whole body arrived: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_listener_sends_http1_to_a_service_declared_http2_as_http2() {
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    let undeclared = ServiceDef::new("plain").endpoint(app.addr);
    let plain = WeftProxy::start_named(
        "upstream-plain",
        ProxyConfig::new().upstream("plain").service(undeclared),
    )
    .await
    .expect("start a proxy");
    // The premise: undeclared, HTTP/1.1 goes on as HTTP/1.1, which this app cannot read.
    let url = format!("http://{}/", plain.upstream("plain"));
    let out = curl(&[
        "--http1.1",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        &url,
    ])
    .await
    .expect("curl ran");
    assert_eq!(String::from_utf8_lossy(&out), "502");

    let service = ServiceDef::new("h2c").port(80, "http2").endpoint(app.addr);
    let proxy = WeftProxy::start_named(
        "upstream-h2c",
        ProxyConfig::new().upstream("h2c").service(service),
    )
    .await
    .expect("start a proxy");
    http1_requests_arrive_as_http2(proxy.upstream("h2c")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_through_an_mtls_pair_reaches_an_h2c_app_by_the_service_port() {
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    let service = ServiceDef::new("h2c").port(80, "http2");
    let pair = MtlsPair::start(service, app.addr, PairOptions::default())
        .await
        .expect("start the pair");
    http1_requests_arrive_as_http2(pair.upstream()).await;
}

/// What an HTTP/1.1 `GET /` to `addr` is answered: the status line and headers.
async fn http1_head(addr: std::net::SocketAddr) -> String {
    let url = format!("http://{addr}/");
    let out = curl(&["--http1.1", "--include", "--output", "-", &url])
        .await
        .expect("curl got an answer");
    String::from_utf8_lossy(&out).into_owned()
}

/// The premise of an undeclared h2c-only port: HTTP/1.1 goes on as HTTP/1.1, which
/// the app cannot read, and the caller is told so at once (a 502 naming the proxy's
/// reason), not left waiting.
async fn http1_to_an_undeclared_h2c_app_fails_clearly(addr: std::net::SocketAddr) {
    let head = http1_head(addr).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.to_ascii_lowercase().contains("weft-error:"), "{head}");
}

/// Python's http.client: a POST and then a GET on the same kept-alive HTTP/1.1
/// connection to `addr`, each answered by the h2c-only app, which saw HTTP/2.
async fn python_http1_client_reaches_an_h2c_app(addr: std::net::SocketAddr) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        tokio::process::Command::new("python3")
            .args([
                "-c",
                weft_tests::client::PY_KEEPALIVE_CLIENT,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .output(),
    )
    .await
    .expect("python finished")
    .expect("python ran");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    // Status, HTTP/1.1 to the client, what the app read, the body length it got
    // and the length of its 5-byte answer.
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "200 11 HTTP/2.0 11 5", "{text}");
    assert_eq!(lines[1], "200 11 HTTP/2.0 hello from h2c-app", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_sends_http1_to_a_declared_http2_app_port_as_http2() {
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    let plain = WeftProxy::start_named("inbound", ProxyConfig::new().inbound(app.addr))
        .await
        .expect("start a proxy with no declaration");
    http1_to_an_undeclared_h2c_app_fails_clearly(plain.inbound()).await;

    let port = app.addr.port().to_string();
    let proxy = WeftProxy::start_named(
        "inbound-http2",
        ProxyConfig::new()
            .inbound(app.addr)
            .inbound_http2_ports(&port),
    )
    .await
    .expect("start a proxy");
    http1_requests_arrive_as_http2(proxy.inbound()).await;
    python_http1_client_reaches_an_h2c_app(proxy.inbound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_through_an_mtls_pair_reaches_an_h2c_app_by_the_inbound_ports() {
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    // The caller's mesh says nothing of the port: HTTP/1.1 crosses the pair as a
    // carried stream and, undeclared, reaches the app as HTTP/1.1 again.
    let undeclared = MtlsPair::start(ServiceDef::new("h2c"), app.addr, PairOptions::default())
        .await
        .expect("start the pair");
    http1_to_an_undeclared_h2c_app_fails_clearly(undeclared.upstream()).await;
    drop(undeclared);

    // The server proxy knows its app: it sends the carried request on as HTTP/2.
    let options = PairOptions {
        server_http2_ports: Some(app.addr.port().to_string()),
        ..PairOptions::default()
    };
    let pair = MtlsPair::start(ServiceDef::new("h2c"), app.addr, options)
        .await
        .expect("start the pair");
    http1_requests_arrive_as_http2(pair.upstream()).await;
    python_http1_client_reaches_an_h2c_app(pair.upstream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_to_a_service_port_declared_grpc_goes_on_as_http2() {
    // appProtocol grpc (mesh `protocol: grpc`): the app is a gRPC server, which
    // speaks HTTP/2 only, so even a plain HTTP/1.1 request reaches it as HTTP/2.
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    let service = ServiceDef::new("rpc").port(80, "grpc");
    let pair = MtlsPair::start(service, app.addr, PairOptions::default())
        .await
        .expect("start the pair");
    http1_requests_arrive_as_http2(pair.upstream()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_proxy_learns_an_h2c_app_port_from_the_mesh() {
    // The control plane's mesh (as from a Service with appProtocol h2c) declares
    // the port the server's own endpoint listens on; the client proxy's config says
    // nothing of it, so HTTP/1.1 crosses the pair as a carried stream, and only the
    // server proxy's inbound, told by its inbound policy, can send it on as HTTP/2.
    let app = HttpApp::start_h2c_only("h2c-app")
        .await
        .expect("start the app");
    let mesh = format!(
        "services:\n  - name: h2c\n    ports: [{{port: 80, protocol: http2}}]\n    \
         endpoints: [{{address: '{{app}}', identity: '{}'}}]\n",
        weft_tests::mtls_pair::SERVER_ID
    );
    let options = PairOptions {
        control_plane_mesh: Some(mesh),
        ..PairOptions::default()
    };
    let pair = MtlsPair::start(ServiceDef::new("h2c"), app.addr, options)
        .await
        .expect("start the pair");
    // The policy stream may land just after the proxy is ready.
    weft_tests::eventually(
        weft_tests::STEP_DEADLINE,
        "the server proxy applies the mesh's app ports",
        || async {
            http1_head(pair.upstream())
                .await
                .starts_with("HTTP/1.1 200")
                .then_some(())
        },
    )
    .await;
    http1_requests_arrive_as_http2(pair.upstream()).await;
    python_http1_client_reaches_an_h2c_app(pair.upstream()).await;
}
