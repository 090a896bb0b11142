//! One bad peer costs little: a hung endpoint under the default policy, endpoints
//! with no latency sample yet, and clients that send malformed requests, each with
//! one proxy in file mode in front of real backends on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_tests::apps::{HttpApp, TcpApp};
use weft_tests::client::{self, H1Client};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

/// What a fixed-rate run saw, per second since its start.
#[derive(Debug, Default)]
struct Seconds {
    ok: BTreeMap<u64, usize>,
    failed: BTreeMap<u64, usize>,
    by_app: BTreeMap<String, usize>,
}

impl Seconds {
    fn after(&self, from: u64) -> (usize, usize) {
        let sum = |m: &BTreeMap<u64, usize>| m.range(from..).map(|(_, n)| n).sum::<usize>();
        (sum(&self.ok), sum(&self.failed))
    }
}

/// Sends `rate` GETs a second for `secs` seconds, each on its own connection (an
/// open loop: a slow answer does not slow the sender), giving up on an answer after
/// `patience` as a real client would. Bounded: `rate * secs` requests in all.
async fn fixed_rate(
    target: SocketAddr,
    uri: &str,
    rate: u32,
    secs: u64,
    patience: Duration,
) -> Seconds {
    let seen = Arc::new(Mutex::new(Seconds::default()));
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..(u64::from(rate) * secs) {
        tick.tick().await;
        let (seen, uri) = (seen.clone(), uri.to_string());
        let second = start.elapsed().as_secs();
        tasks.spawn(async move {
            let answer = tokio::time::timeout(patience, async {
                let mut c = H1Client::connect(target).await?;
                c.send(client::get(&uri)).await
            })
            .await;
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            match answer {
                Ok(Ok(reply)) if reply.status.is_success() => {
                    *seen.ok.entry(second).or_default() += 1;
                    let app = reply.header("x-app").unwrap_or("?").to_string();
                    *seen.by_app.entry(app).or_default() += 1;
                }
                _ => *seen.failed.entry(second).or_default() += 1,
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(seen)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_costs_under_one_percent_after_the_first_second_under_the_default_policy() {
    let a = HttpApp::start("a").await.expect("app a");
    let b = HttpApp::start("b").await.expect("app b");
    let hung = TcpApp::silent().await.expect("hung endpoint");
    let service = ServiceDef::new("orders")
        .endpoint(a.addr)
        .endpoint(b.addr)
        .endpoint(hung.addr);
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");

    let seen = fixed_rate(
        proxy.outbound(),
        "http://orders/",
        300,
        4,
        Duration::from_secs(2),
    )
    .await;

    let (ok, failed) = seen.after(1);
    assert!(
        failed * 100 < ok + failed,
        "after the first second {failed} of {} requests failed: {seen:?}",
        ok + failed
    );
    assert!(
        seen.by_app.contains_key("a") && seen.by_app.contains_key("b"),
        "{seen:?}"
    );
    // Its callers gave up after 2 s, longer than the proxy's hang bound: each such
    // wait is a failure, and the default policy ejects after five.
    let metrics = proxy.metrics().await.expect("/metrics");
    let ejected = metrics.sum("weft_outlier_ejected_endpoints", &[]);
    assert_eq!(ejected, 1.0, "the hung endpoint was not ejected: {seen:?}");
    let config = proxy.admin_get("/config").await.expect("/config").body;
    let config: serde_json::Value = serde_json::from_str(&config).expect("/config is JSON");
    let hung_state = config["services"]
        .as_object()
        .into_iter()
        .flat_map(|services| services.values())
        .flat_map(|svc| svc["endpoints"].as_array().into_iter().flatten())
        .find(|ep| ep["addr"] == hung.addr.to_string())
        .map(|ep| ep["stats"]["health"]["state"].clone());
    assert_eq!(hung_state, Some(serde_json::json!("ejected")), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_healthy_endpoint_gets_traffic_under_p2c_even_before_its_first_sample() {
    let apps = [
        HttpApp::start("a").await.expect("app a"),
        HttpApp::start("b").await.expect("app b"),
        HttpApp::start("c").await.expect("app c"),
    ];
    let service = apps
        .iter()
        .fold(ServiceDef::new("orders"), |s, app| s.endpoint(app.addr));
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    for _ in 0..300 {
        let reply = c.send(client::get("http://orders/")).await.expect("answer");
        assert!(reply.status.is_success(), "{reply:?}");
    }

    // Explored: each answered, so each has a latency sample. Peak-EWMA may still
    // favour the endpoints whose first samples were lowest; that is its design.
    let config = proxy.admin_get("/config").await.expect("/config").body;
    for app in &apps {
        assert!(
            app.requests() >= 1,
            "{} got none of 300 sequential requests (a {}, b {}, c {})",
            app.name,
            apps[0].requests(),
            apps[1].requests(),
            apps[2].requests()
        );
    }
    assert!(
        !config.contains("\"ewma_ms\": null"),
        "an endpoint was never measured: {config}"
    );
}

/// One app behind a proxy that ejects at the first failure: whatever a client's
/// fault is counted as shows at once.
async fn ejecting_at_first_failure() -> (HttpApp, WeftProxy) {
    let app = HttpApp::start("a").await.expect("app");
    let service = ServiceDef::new("orders")
        .endpoint(app.addr)
        .policy("{circuit_breaker: {outlier_detection: {consecutive_failures: 1}}}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    (app, proxy)
}

/// A client's malformed chunked bodies (a size that is not hex, one that overflows,
/// a bare LF) get 400, are the client's errors in the metrics, and never eject the
/// endpoint, even with outlier detection at one failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_malformed_chunked_body_is_its_own_400_and_never_ejects_the_endpoint() {
    let (_app, proxy) = ejecting_at_first_failure().await;
    let bodies: [&[u8]; 3] = [
        b"5g\r\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
    ];
    for body in bodies {
        let mut request =
            b"POST /upload HTTP/1.1\r\nhost: orders\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let raw = client::raw_exchange(proxy.outbound(), &request, Duration::from_secs(10))
            .await
            .expect("an answer");
        assert_eq!(
            client::raw_status(&raw),
            Some(400),
            "{:?} got {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&raw)
        );
    }
    let reply = H1Client::connect(proxy.outbound())
        .await
        .expect("connect")
        .send(client::get("http://orders/"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "the endpoint is still in rotation");
    for (reason, count) in [("bad-request-body", 3.0), ("upstream-reset", 0.0)] {
        let counted = proxy
            .metric(
                "weft_proxy_errors_total",
                &[
                    ("direction", "outbound"),
                    ("service", "orders.default"),
                    ("reason", reason),
                ],
            )
            .await;
        assert_eq!(counted, count, "{reason}");
    }
}

/// RFC 9112 §3.2: a request with two Host fields is answered 400, not forwarded with
/// both for the app to pick one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_host_fields_gets_400_and_never_reaches_the_app() {
    let app = HttpApp::start("a").await.expect("app");
    let proxy = WeftProxy::start(
        ProxyConfig::new()
            .inbound(app.addr)
            .service(ServiceDef::new("orders").endpoint(app.addr)),
    )
    .await
    .expect("start proxy");
    for listener in [proxy.outbound(), proxy.inbound()] {
        let raw = client::raw_exchange(
            listener,
            b"GET / HTTP/1.1\r\nhost: orders\r\nhost: evil\r\nconnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await
        .expect("an answer");
        assert_eq!(
            client::raw_status(&raw),
            Some(400),
            "{listener}: {}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_eq!(app.requests(), 0);
}

/// Methods are case-sensitive tokens (RFC 9110 §9.1): `get` is an extension method,
/// not garbage, so it is proxied as HTTP and the app decides what it means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowercase_method_is_recognised_as_http_and_reaches_the_app() {
    let app = HttpApp::start("a").await.expect("app");
    let proxy = WeftProxy::start(
        ProxyConfig::new()
            .upstream("orders")
            .service(ServiceDef::new("orders").endpoint(app.addr)),
    )
    .await
    .expect("start proxy");
    let requests = [
        (
            proxy.outbound(),
            &b"get http://orders/ HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n"[..],
        ),
        (
            proxy.upstream("orders"),
            &b"get / HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n"[..],
        ),
    ];
    for (listener, request) in requests {
        let raw = client::raw_exchange(listener, request, Duration::from_secs(10))
            .await
            .expect("an answer");
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(client::raw_status(&raw), Some(200), "{listener}: {text}");
        assert!(text.contains("x-app: a"), "{listener}: {text}");
    }
    assert_eq!(app.requests(), 2);
}

/// The same over HTTP/2 to an HTTP/2 endpoint: a body shorter than its
/// content-length is the client's malformed request (RFC 9113 §8.1.1), answered 400
/// and never counted against the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_malformed_http2_body_is_its_own_400_and_never_ejects_the_endpoint() {
    let (_app, proxy) = ejecting_at_first_failure().await;
    let tcp = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .expect("connect");
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = http::Request::post("http://orders/upload")
            .header("content-length", "10")
            .body(())
            .expect("request");
        let (response, mut body) = h2.send_request(request, false).expect("send");
        body.send_data(bytes::Bytes::from_static(b"hello"), true)
            .expect("send data");
        let status = match tokio::time::timeout(Duration::from_secs(10), response).await {
            Ok(Ok(resp)) => Some(resp.status().as_u16()),
            // A stream reset instead of an answer is acceptable only if nothing
            // was counted against the endpoint; checked below either way.
            Ok(Err(_)) => None,
            Err(_) => panic!("no answer within 10 s"),
        };
        assert!(matches!(status, Some(400) | None), "got {status:?}");
    }
    let reply = H1Client::connect(proxy.outbound())
        .await
        .expect("connect")
        .send(client::get("http://orders/"))
        .await
        .expect("answer");
    assert_eq!(reply.status, 200, "the endpoint is still in rotation");
    let metrics = proxy.metrics().await.expect("/metrics");
    let counted = |reason| {
        metrics.value(
            "weft_proxy_errors_total",
            &[
                ("direction", "outbound"),
                ("service", "orders.default"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(counted("upstream-reset"), 0.0);
    assert_eq!(metrics.sum("weft_outlier_ejections_total", &[]), 0.0);
}
