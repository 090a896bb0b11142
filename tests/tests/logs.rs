//! What the proxy writes: its own log (plain text off a terminal, JSON on request)
//! and, when a workload asks for it, an access log of one JSON line per request.

use std::path::Path;

use http::StatusCode;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::hops::Hops;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually, within};

/// A proxy in front of one app, started with `env`, after one request through it
/// (so the log holds request-path lines too, not only startup).
async fn proxy_after_a_request(env: &[(&str, Option<&str>)]) -> (WeftProxy, HttpApp) {
    let app = HttpApp::start("app").await.expect("start app");
    let config = ProxyConfig::new().service(ServiceDef::new("app").endpoint(app.addr));
    let proxy = WeftProxy::start_with_env("weft-proxy", config, env)
        .await
        .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let reply = c.send(client::get("http://app/")).await.expect("request");
    assert_eq!(reply.status, StatusCode::OK);
    (proxy, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_to_a_file_has_no_colour_escapes() {
    // NO_COLOR removed: the proxy must notice by itself that stderr is a file.
    let (mut proxy, _app) = proxy_after_a_request(&[("NO_COLOR", None)]).await;
    let log = proxy.process().output();

    assert!(log.contains("weft-proxy ready"), "log: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log written to a file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_per_line() {
    let (mut proxy, _app) =
        proxy_after_a_request(&[("NO_COLOR", None), ("WEFT_LOG_FORMAT", Some("json"))]).await;
    let log = proxy.process().output();

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ready = lines
        .iter()
        .find(|l| l["message"] == "weft-proxy ready")
        .unwrap_or_else(|| panic!("no ready line in {log}"));
    assert_eq!(ready["level"], "INFO");
    assert!(ready["timestamp"].is_string(), "{ready}");
    assert!(ready["admin"].is_string(), "fields are flattened: {ready}");
}

// --- access logs -----------------------------------------------------------

/// `config` with an access log written to `to`, `buffer` lines deep.
fn with_access_log(mut config: ProxyConfig, to: &Path, buffer: usize) -> ProxyConfig {
    config.extra.push_str(&format!(
        "access_log: {{to: \"{}\", buffer: {buffer}}}\n",
        to.display()
    ));
    config
}

/// The JSON lines in `path`, once there are at least `n` (the writer is a thread
/// of its own; it flushes whenever its queue runs dry).
async fn access_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let what = format!("{n} access log lines in {}", path.display());
    eventually(STEP_DEADLINE, &what, || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_json_and_match_the_requests_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client_log, server_log) = (dir.path().join("client.log"), dir.path().join("server.log"));
    let app = HttpApp::start("app").await.expect("start app");
    let hops = Hops::start_with(
        ServiceDef::new("app"),
        app.addr,
        |c| with_access_log(c, &client_log, 64),
        |c| with_access_log(c.workload("app"), &server_log, 64),
    )
    .await
    .expect("start proxies");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    let mut c = H1Client::connect(hops.upstream()).await.expect("connect");
    let mut req = client::get("http://app/first?x=1");
    req.headers_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01")
            .parse()
            .expect("value"),
    );
    let first = c.send(req).await.expect("first request");
    assert_eq!(first.status, StatusCode::OK);
    let upload = client::request(
        "POST",
        "http://app/upload?reply=300",
        &[],
        b"0123456789".to_vec(),
    );
    let second = c.send(upload).await.expect("second request");
    assert_eq!(second.status, StatusCode::OK);
    // An answer the proxy gives itself: no such service behind the http_proxy port.
    let mut o = H1Client::connect(hops.outbound()).await.expect("connect");
    let missing = o
        .send(client::get("http://nowhere/x"))
        .await
        .expect("third");
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let lines = access_lines(&client_log, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let endpoint = hops.server.inbound().to_string();
    let (a, b, c) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(a["direction"], "outbound");
    assert_eq!(a["service"], "app.default");
    assert_eq!(a["endpoint"], endpoint.as_str());
    assert_eq!(a["method"], "GET");
    assert_eq!(a["authority"], "app");
    assert_eq!(a["path"], "/first?x=1");
    assert_eq!(a["status"], 200);
    assert_eq!(a["bytes"], first.body.len());
    assert_eq!(a["trace_id"], trace);
    assert_eq!(a["weft_error"], serde_json::Value::Null);
    assert!(a["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{a}");
    assert!(a["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{a}");
    assert_eq!(b["method"], "POST");
    assert_eq!(b["path"], "/upload?reply=300");
    assert_eq!(b["bytes"], 300);
    assert_eq!(b["trace_id"], serde_json::Value::Null);
    assert_eq!(c["status"], 404);
    assert_eq!(c["weft_error"], "unknown-service");
    assert_eq!(c["authority"], "nowhere");
    assert_eq!(c["endpoint"], serde_json::Value::Null);

    // The server side logs the two requests that reached it, towards the app.
    let lines = access_lines(&server_log, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["direction"], "inbound");
    assert_eq!(lines[0]["service"], "app");
    assert_eq!(lines[0]["endpoint"], app.addr.to_string().as_str());
    assert_eq!(lines[0]["path"], "/first?x=1");
    assert_eq!(lines[0]["trace_id"], trace);
    assert_eq!(lines[1]["bytes"], 300);
    assert_eq!(
        hops.client.metric("weft_access_log_lines_total", &[]).await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_access_log_drops_lines_and_never_holds_up_requests() {
    use std::os::unix::fs::OpenOptionsExt as _;

    // A pipe that nobody reads: its read end stays open (so the proxy can open the
    // write end) but is never read, so the writer blocks once the pipe is full.
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("access.pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let _read_end = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&fifo)
        .expect("open the read end");
    let app = HttpApp::start("app").await.expect("start app");
    const BUFFER: usize = 4;
    let config = with_access_log(
        ProxyConfig::new()
            .upstream("app")
            .service(ServiceDef::new("app").endpoint(app.addr)),
        &fifo,
        BUFFER,
    );
    let proxy = WeftProxy::start(config).await.expect("start proxy");

    // Lines are a few hundred bytes; 2000 of them overflow the pipe (64 KiB), the
    // writer's buffer and the queue several times over.
    const REQUESTS: usize = 2000;
    let mut c = H1Client::connect(proxy.upstream("app"))
        .await
        .expect("connect");
    let long_path = format!("/{}", "p".repeat(200));
    for i in 0..REQUESTS {
        let reply = within(
            STEP_DEADLINE,
            "a request with the access log stuck",
            c.send(client::get(&format!("http://app{long_path}?i={i}"))),
        )
        .await
        .expect("request");
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }

    let dropped = proxy.metric("weft_access_log_dropped_total", &[]).await;
    let written = proxy.metric("weft_access_log_lines_total", &[]).await;
    assert!(dropped > 0.0, "nothing dropped ({written} written)");
    // Every line is written, dropped, or still queued (at most the queue plus the
    // one the writer holds).
    let accounted = (dropped + written) as usize;
    assert!(
        accounted <= REQUESTS && accounted + BUFFER + 1 >= REQUESTS,
        "{dropped} dropped + {written} written for {REQUESTS} requests"
    );
}

/// A request a route handled names the route in its line; one no route matched has
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_name_the_route_that_handled_the_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("access.log");
    let app = HttpApp::start("app").await.expect("start app");
    let service = ServiceDef::new("app")
        .endpoint(app.addr)
        .routes("[{name: api, match: [{path: {prefix: /api}}]}]");
    let proxy = WeftProxy::start(with_access_log(
        ProxyConfig::new().service(service),
        &log,
        64,
    ))
    .await
    .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    for path in ["http://app/api/orders", "http://app/other"] {
        let reply = c.send(client::get(path)).await.expect("request");
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let lines = access_lines(&log, 2).await;
    let route_of = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"] == path)
            .map(|l| l["route"].clone())
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    assert_eq!(route_of("/api/orders"), serde_json::json!("api"));
    assert_eq!(route_of("/other"), serde_json::Value::Null);
}
