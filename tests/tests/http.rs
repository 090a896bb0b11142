//! HTTP/1.1 and HTTP/2 (h2c) through the data path: client proxy (outbound or an
//! upstream listener) → server proxy inbound → app.

use bytes::Bytes;
use http::{StatusCode, Version};
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client, H2Client};
use weft_tests::data::{checksum, pattern};
use weft_tests::hops::Hops;
use weft_tests::proxy::ServiceDef;

const MIB: usize = 1024 * 1024;

async fn orders() -> (HttpApp, Hops) {
    let app = HttpApp::start("orders-app").await.expect("start app");
    let hops = Hops::start(ServiceDef::new("orders"), app.addr)
        .await
        .expect("start proxies");
    (app, hops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_absolute_form_through_outbound_reaches_app_with_host_preserved() {
    let (app, hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

    let reply = c
        .send(client::get("http://orders/hello"))
        .await
        .expect("request");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello from orders-app\n");
    assert_eq!(reply.header("x-host"), Some("orders"));
    assert_eq!(reply.header("x-version"), Some("HTTP/1.1"));
    assert_eq!(app.requests(), 1);
    let ok_out = hops
        .client
        .metric(
            "weft_requests_total",
            &[
                ("direction", "outbound"),
                ("service", "orders.default"),
                ("status_class", "2xx"),
            ],
        )
        .await;
    assert_eq!(ok_out, 1.0);
    let ok_in = hops
        .server
        .metric(
            "weft_requests_total",
            &[
                ("direction", "inbound"),
                ("service", "local"),
                ("status_class", "2xx"),
            ],
        )
        .await;
    assert_eq!(ok_in, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_host_form_resolves_and_reaches_the_app_unchanged() {
    let (_app, hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");
    for host in [
        "orders",
        "orders.default",
        "orders.default.svc",
        "orders.default.svc.cluster.local",
        "orders:8080",
    ] {
        let reply = c
            .send(client::get(&format!("http://{host}/")))
            .await
            .expect("request");
        assert_eq!(reply.status, StatusCode::OK, "host {host}");
        assert_eq!(reply.header("x-host"), Some(host), "host {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_through_upstream_listener_keeps_the_clients_host() {
    let (_app, hops) = orders().await;
    let mut c = H1Client::connect(hops.upstream()).await.expect("connect");

    let req = client::request("GET", "/path?q=1", &[("host", "api.example:8080")], "");
    let reply = c.send(req).await.expect("request");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-app"), Some("orders-app"));
    assert_eq!(reply.header("x-host"), Some("api.example:8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_the_app() {
    let (_app, hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

    let req = client::request(
        "GET",
        "http://orders/headers",
        &[
            ("connection", "x-foo, keep-alive"),
            ("x-foo", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-end-to-end", "kept"),
        ],
        "",
    );
    let reply = c.send(req).await.expect("request");

    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.text();
    assert!(seen.contains("x-end-to-end: kept"), "app saw:\n{seen}");
    for gone in ["x-foo", "keep-alive", "proxy-authorization", "connection"] {
        assert!(
            !seen.lines().any(|l| l.starts_with(&format!("{gone}:"))),
            "{gone} reached the app:\n{seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_intact_both_ways_over_http1() {
    let (_app, mut hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");
    let upload = pattern(8 * MIB, 3);
    let sum = checksum(&upload);

    let req = client::request(
        "POST",
        &format!("http://orders/upload?reply={}", 8 * MIB),
        &[("content-type", "application/octet-stream")],
        Bytes::from(upload),
    );
    let reply = c.send(req).await.expect("request");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-body-len"), Some(&*(8 * MIB).to_string()));
    assert_eq!(reply.header("x-body-sum"), Some(&*sum.to_string()));
    assert_eq!(reply.body.len(), 8 * MIB);
    assert!(reply.body == pattern(8 * MIB, 7), "response body corrupted");
    hops.stop().await.expect("both proxies drain and exit 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_are_reused_along_the_path() {
    let (app, hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");
    let n = 20;

    for i in 0..n {
        let reply = c
            .send(client::get(&format!("http://orders/r{i}")))
            .await
            .expect("request");
        assert_eq!(reply.status, StatusCode::OK);
    }

    assert_eq!(app.requests(), n);
    assert!(
        app.connections() < n,
        "the app saw {} connections for {n} requests",
        app.connections()
    );
    let opened_in = hops
        .server
        .metric(
            "weft_tcp_connections_opened_total",
            &[("direction", "inbound")],
        )
        .await;
    assert!(
        opened_in < n as f64,
        "the server proxy accepted {opened_in} connections for {n} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_stays_http2_end_to_end() {
    let (app, mut hops) = orders().await;
    let c = H2Client::connect(hops.outbound()).await.expect("connect");

    // Concurrent streams on one client connection.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.send(client::get(&format!("http://orders/s{i}"))).await
        }));
    }
    for t in tasks {
        let reply = t.await.expect("join").expect("request");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.header("x-version"), Some("HTTP/2.0"));
        assert_eq!(reply.header("x-host"), Some("orders"));
    }
    assert_eq!(app.requests(), 16);
    assert!(
        app.connections() < 16,
        "the app saw {} connections for 16 multiplexed requests",
        app.connections()
    );
    hops.stop().await.expect("both proxies drain and exit 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_intact_both_ways_over_h2c() {
    let (_app, mut hops) = orders().await;
    let mut c = H2Client::connect(hops.upstream()).await.expect("connect");
    let upload = pattern(8 * MIB, 5);
    let sum = checksum(&upload);

    let req = client::request(
        "POST",
        &format!("http://orders/upload?reply={}", 8 * MIB),
        &[],
        Bytes::from(upload),
    );
    let reply = c.send(req).await.expect("request");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-version"), Some("HTTP/2.0"));
    assert_eq!(reply.header("x-body-len"), Some(&*(8 * MIB).to_string()));
    assert_eq!(reply.header("x-body-sum"), Some(&*sum.to_string()));
    assert!(reply.body == pattern(8 * MIB, 7), "response body corrupted");
    hops.stop().await.expect("both proxies drain and exit 0");
}
