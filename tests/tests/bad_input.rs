//! Clients that send bad or hostile input: malformed requests, oversized headers,
//! slow headers, too many connections.

use std::time::Duration;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client, raw_exchange, raw_status, read_until_closed};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

async fn proxy_to_app(config: ProxyConfig) -> (HttpApp, WeftProxy) {
    let app = HttpApp::start("app").await.expect("start app");
    let config = config.service(ServiceDef::new("orders").endpoint(app.addr));
    let proxy = WeftProxy::start(config).await.expect("start proxy");
    (app, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_request_gets_400() {
    let (app, proxy) = proxy_to_app(ProxyConfig::new()).await;

    let raw = raw_exchange(
        proxy.outbound(),
        b"GET / HTTP/1.1\r\nHost: orders\r\nthis line is no header\r\n\r\n",
        Duration::from_secs(10),
    )
    .await
    .expect("the proxy answers and closes");

    assert_eq!(
        raw_status(&raw),
        Some(400),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_get_431() {
    let (app, proxy) = proxy_to_app(ProxyConfig::new().limit("max_header_bytes", "8192")).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: orders\r\nx-big: ".to_vec();
    request.extend(vec![b'a'; 16 * 1024]);
    request.extend(b"\r\n\r\n");

    let raw = raw_exchange(proxy.outbound(), &request, Duration::from_secs(10))
        .await
        .expect("the proxy answers and closes");

    assert_eq!(
        raw_status(&raw),
        Some(431),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_just_under_the_limit_pass() {
    let (app, proxy) = proxy_to_app(ProxyConfig::new().limit("max_header_bytes", "16384")).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let big = "a".repeat(8 * 1024);

    let reply = c
        .send(client::request(
            "GET",
            "http://orders/",
            &[("x-big", &big)],
            "",
        ))
        .await
        .expect("answer");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sending_headers_too_slowly_is_cut_off() {
    let (app, proxy) = proxy_to_app(ProxyConfig::new().limit("header_read_timeout", "300ms")).await;
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");

    // A request line and one header, then nothing more.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: orders\r\n")
        .await
        .expect("write");

    // The limit is 300 ms; the deadline is generous for a loaded machine but well
    // under the 10 s default, so a proxy that ignored the setting (or had no header
    // timeout at all) fails here.
    read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the proxy closes the connection");
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_spares_a_slow_answer_but_not_an_idle_client() {
    let (app, proxy) = proxy_to_app(ProxyConfig::new().limit("header_read_timeout", "300ms")).await;

    // The answer takes three times the timeout: the clock stops while a request is
    // in flight, and the kept-alive connection serves the next request too.
    let mut client = H1Client::connect(proxy.outbound()).await.expect("connect");
    for _ in 0..2 {
        let reply = client
            .send(client::get("http://orders/slow?ms=900"))
            .await
            .expect("answer");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"slow done\n");
    }

    // Left idle after its answer, a client is cut off like one that never asked.
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");
    stream
        .write_all(b"GET /slow?ms=900 HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .expect("write");
    let got = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the proxy closes the idle connection");
    assert_eq!(
        raw_status(&got),
        Some(200),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(got.ends_with(b"slow done\n"));
    assert_eq!(app.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let (_app, proxy) = proxy_to_app(ProxyConfig::new().limit("max_connections", "2")).await;
    let mut first = H1Client::connect(proxy.outbound()).await.expect("connect");
    let mut second = H1Client::connect(proxy.outbound()).await.expect("connect");
    for c in [&mut first, &mut second] {
        let reply = c.send(client::get("http://orders/")).await.expect("answer");
        assert_eq!(reply.status, StatusCode::OK);
    }

    let mut third = TcpStream::connect(proxy.outbound()).await.expect("connect");
    let _ = third
        .write_all(b"GET http://orders/ HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await;
    let got = read_until_closed(&mut third, Duration::from_secs(10))
        .await
        .expect("the third connection is closed");

    assert!(
        got.is_empty(),
        "no answer on a rejected connection: {got:?}"
    );
    let rejected = proxy
        .metric(
            "weft_tcp_connections_rejected_total",
            &[("direction", "outbound")],
        )
        .await;
    assert_eq!(rejected, 1.0);
    // The connections under the cap still work.
    let reply = first
        .send(client::get("http://orders/"))
        .await
        .expect("answer");
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_on_the_http_proxy_port_is_closed_after_detection() {
    let (_app, proxy) = proxy_to_app(ProxyConfig::new().limit("detect_timeout", "200ms")).await;
    let mut stream = TcpStream::connect(proxy.outbound()).await.expect("connect");

    // Says nothing: after detect_timeout it is opaque, and the http_proxy port has
    // no destination for opaque bytes.
    let got = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the proxy closes the connection");

    assert!(got.is_empty());
    let closed = proxy
        .metric(
            "weft_tcp_connections_closed_total",
            &[("direction", "outbound")],
        )
        .await;
    assert!(closed >= 1.0);
}
