//! What the proxy writes: its own log (plain text off a terminal, JSON on request).

use http::StatusCode;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

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
