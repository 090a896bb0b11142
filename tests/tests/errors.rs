//! Errors a client sees when the proxy cannot deliver a request: each has its status,
//! a `weft-error` header naming the reason, and a count in weft_proxy_errors_total.

use http::StatusCode;
use weft_tests::apps::{HttpApp, TcpApp};
use weft_tests::client::{self, H1Client, H2Client, Reply};
use weft_tests::hops::Hops;
use weft_tests::ports::closed_addr;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

/// One proxy with `service`; sends `GET http://<host>/` through its outbound.
async fn get_through(service: Option<ServiceDef>, host: &str) -> (WeftProxy, Reply) {
    let mut config = ProxyConfig::new();
    if let Some(s) = service {
        config = config.service(s);
    }
    let proxy = WeftProxy::start(config).await.expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let reply = c
        .send(client::get(&format!("http://{host}/")))
        .await
        .expect("the proxy answers");
    (proxy, reply)
}

async fn errors_counted(proxy: &WeftProxy, direction: &str, service: &str, reason: &str) -> f64 {
    proxy
        .metric(
            "weft_proxy_errors_total",
            &[
                ("direction", direction),
                ("service", service),
                ("reason", reason),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_404_unknown_service() {
    let (proxy, reply) = get_through(None, "nowhere").await;

    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.header("weft-error"), Some("unknown-service"));
    assert_eq!(
        errors_counted(&proxy, "outbound", "unknown", "unknown-service").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_endpoints_is_503_no_endpoints() {
    let (proxy, reply) = get_through(Some(ServiceDef::new("empty")), "empty").await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("weft-error"), Some("no-endpoints"));
    assert_eq!(
        errors_counted(&proxy, "outbound", "empty.default", "no-endpoints").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_that_are_not_ready_get_no_traffic() {
    let starting = HttpApp::start("starting").await.expect("start app");
    let leaving = HttpApp::start("leaving").await.expect("start app");
    let service = ServiceDef::new("warming")
        .endpoint_in_state(starting.addr, "not-ready")
        .endpoint_in_state(leaving.addr, "terminating");

    let (proxy, reply) = get_through(Some(service), "warming").await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("weft-error"), Some("no-endpoints"));
    assert_eq!(starting.requests() + leaving.requests(), 0);
    assert_eq!(
        errors_counted(&proxy, "outbound", "warming.default", "no-endpoints").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_502_connect_refused() {
    let service = ServiceDef::new("down").endpoint(closed_addr());

    let (proxy, reply) = get_through(Some(service), "down").await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("connect-refused"));
    assert_eq!(
        errors_counted(&proxy, "outbound", "down.default", "connect-refused").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_request_is_502_upstream_reset() {
    let app = TcpApp::close_after_request_head().await.expect("start app");
    let service = ServiceDef::new("flaky").endpoint(app.addr);

    let (proxy, reply) = get_through(Some(service), "flaky").await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("upstream-reset"));
    assert!(app.accepted() >= 1);
    assert_eq!(
        errors_counted(&proxy, "outbound", "flaky.default", "upstream-reset").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_504_timeout() {
    let app = TcpApp::silent().await.expect("start app");
    let service = ServiceDef::new("stuck")
        .endpoint(app.addr)
        .policy("{timeouts: {request: 300ms}}");

    let (proxy, reply) = get_through(Some(service), "stuck").await;

    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.header("weft-error"), Some("timeout"));
    assert_eq!(
        errors_counted(&proxy, "outbound", "stuck.default", "timeout").await,
        1.0
    );
    let five_xx = proxy
        .metric(
            "weft_requests_total",
            &[
                ("direction", "outbound"),
                ("service", "stuck.default"),
                ("status_class", "5xx"),
            ],
        )
        .await;
    assert_eq!(five_xx, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_down_behind_the_inbound_proxy_is_502_from_the_server_side() {
    let hops = Hops::start(ServiceDef::new("orders"), closed_addr())
        .await
        .expect("start proxies");
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

    let reply = c.send(client::get("http://orders/")).await.expect("answer");

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("connect-refused"));
    assert_eq!(
        errors_counted(&hops.server, "inbound", "local", "connect-refused").await,
        1.0
    );
    // The client side delivered the request; it only relays the answer.
    assert_eq!(
        errors_counted(
            &hops.client,
            "outbound",
            "orders.default",
            "connect-refused"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_over_http2_gets_the_error_status_without_a_body() {
    let service = ServiceDef::new("gone").endpoint(closed_addr());
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let mut c = H2Client::connect(proxy.outbound()).await.expect("connect");

    let reply = c
        .send(client::request("HEAD", "http://gone/", &[], ""))
        .await
        .expect("an answer, not a reset stream");

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("connect-refused"));
    assert!(reply.body.is_empty());
    let len: usize = reply
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("content-length as a GET would get");
    assert!(len > 0);
}
