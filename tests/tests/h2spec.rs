//! HTTP/2 conformance of the proxy's h2c listeners, checked by h2spec (every case,
//! strict ones included): the outbound listener, a fixed upstream listener and the
//! inbound listener, each in front of an app that speaks h2c.
//!
//! One case is expected to fail on every listener, and is checked here for what the
//! proxy does instead: 3.5/2 sends "INVALID CONNECTION PREFACE" and expects the
//! connection closed without an answer. Weft's listeners detect the protocol, so
//! bytes that are not the HTTP/2 preface are read as HTTP/1.1, and a malformed
//! request line gets `400 Bad Request` and the connection closed (RFC 9112 §3).

use std::net::SocketAddr;

use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use weft_tests::apps::{AppBody, BoxFuture, Handler, HttpApp, full};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, h2spec, within};

const INVALID_PREFACE: &str = "3.5/2: Sends invalid connection preface";

/// The app behind an upstream listener, an inbound listener and the outbound
/// listener (the service's VIP is 127.0.0.1 on the outbound's port, so h2spec's
/// `:authority` routes to it).
async fn proxy_in_front_of_h2c_app() -> (HttpApp, WeftProxy) {
    // The app reads each request whole before answering, as most do: an answer sent
    // while the request is still open races h2spec's "closed stream" cases, which
    // reset the stream and expect no answer.
    let handler: Handler = Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let _ = req.into_body().collect().await;
            Response::new(full("hello from h2c-app\n"))
        }) as BoxFuture<Response<AppBody>>
    });
    let app = HttpApp::with_handler("h2c-app", handler)
        .await
        .expect("start app");
    let config = ProxyConfig::new();
    let outbound_port = config.outbound.expect("outbound listener").port();
    let config = config.inbound(app.addr).upstream("h2c-app").service(
        ServiceDef::new("h2c-app")
            .vip("127.0.0.1")
            .port(outbound_port, "http2")
            .endpoint(app.addr),
    );
    let proxy = WeftProxy::start(config).await.expect("start proxy");
    (app, proxy)
}

async fn conforms(test: &str, listener: impl Fn(&WeftProxy) -> SocketAddr) {
    let Some(bin) = h2spec::require(test) else {
        return;
    };
    let (app, proxy) = proxy_in_front_of_h2c_app().await;
    let addr = listener(&proxy);
    let report = within(STEP_DEADLINE * 3, "h2spec", h2spec::run(bin, addr))
        .await
        .expect("h2spec runs");
    assert_eq!(
        report.failures,
        [INVALID_PREFACE],
        "h2spec against {addr}:\n{}",
        report.output
    );
    assert!(report.total >= 146, "ran only {} cases", report.total);
    assert_eq!(report.passed, report.total - 1);
    assert!(app.requests() > 0, "h2spec's requests reached the app");
    invalid_preface_is_a_bad_http1_request(addr).await;
}

/// What the proxy does with the one case h2spec counts as failed.
async fn invalid_preface_is_a_bad_http1_request(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"INVALID CONNECTION PREFACE\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    within(
        STEP_DEADLINE,
        "the connection closes",
        conn.read_to_end(&mut answer),
    )
    .await
    .expect("read until closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "answer to an invalid preface: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_listener_passes_h2spec() {
    conforms("outbound_listener_passes_h2spec", |p| p.outbound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_listener_passes_h2spec() {
    conforms("upstream_listener_passes_h2spec", |p| p.upstream("h2c-app")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_listener_passes_h2spec() {
    conforms("inbound_listener_passes_h2spec", |p| p.inbound()).await;
}
