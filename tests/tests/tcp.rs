//! Opaque TCP through the data path: half-close and server-speaks-first protocols.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::apps::TcpApp;
use weft_tests::client::read_until_closed;
use weft_tests::data::pattern;
use weft_tests::hops::Hops;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, within};

/// Writes `payload`, shuts down the write half, and reads the whole answer.
async fn send_then_half_close(addr: std::net::SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(payload).await.expect("write");
    stream.shutdown().await.expect("shut down the write half");
    read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("the answer ends with a close")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_echo_survives_client_half_close() {
    let app = TcpApp::echo_after_eof().await.expect("start app");
    let service = ServiceDef::new("db").port(5432, "opaque");
    let mut hops = Hops::start(service, app.addr).await.expect("start proxies");
    let payload = [b"\x00\x00\x00\x08".as_slice(), &pattern(256 * 1024, 9)].concat();

    let answer = send_then_half_close(hops.upstream(), &payload).await;

    assert_eq!(answer.len(), 5 + payload.len());
    assert!(answer.starts_with(b"echo:"));
    assert!(answer[5..] == payload[..], "echoed bytes differ");
    let read = hops
        .client
        .metric("weft_tcp_read_bytes_total", &[("direction", "outbound")])
        .await;
    assert_eq!(read, payload.len() as f64);
    hops.stop().await.expect("both proxies drain and exit 0");
}

/// Bytes that look like HTTP on a port declared opaque.
fn http_lookalike() -> Vec<u8> {
    let mut payload = b"GET / HTTP/1.1\r\n".to_vec();
    payload.extend(pattern(64 * 1024, 9));
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_port_is_forwarded_as_bytes_even_if_they_look_like_http() {
    let app = TcpApp::echo_after_eof().await.expect("start app");
    let service = ServiceDef::new("db")
        .port(5432, "opaque")
        .endpoint(app.addr);
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("db").service(service))
        .await
        .expect("start proxy");
    let payload = http_lookalike();

    let answer = send_then_half_close(proxy.upstream("db"), &payload).await;

    assert!(
        answer.starts_with(b"echo:"),
        "got {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(64)])
    );
    assert!(answer[5..] == payload[..], "echoed bytes differ");
}

/// A plaintext hop cannot say the connection is opaque (over mTLS the calling
/// proxy does, through ALPN: see identity.rs), so the server proxy declares the
/// app's port opaque itself, as WEFT_OPAQUE_PORTS does in a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_port_stays_opaque_across_the_inbound_hop() {
    let app = TcpApp::echo_after_eof().await.expect("start app");
    let service = ServiceDef::new("db").port(5432, "opaque");
    let app_port = app.addr.port().to_string();
    let hops = Hops::start_with(
        service,
        app.addr,
        |c| c,
        |c| c.inbound_opaque_ports(&app_port),
    )
    .await
    .expect("start proxies");
    let payload = http_lookalike();

    let answer = send_then_half_close(hops.upstream(), &payload).await;

    assert!(
        answer.starts_with(b"echo:"),
        "got {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(64)])
    );
    assert!(answer[5..] == payload[..], "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_opaque_tcp_survives_client_half_close() {
    let app = TcpApp::echo_after_eof().await.expect("start app");
    // No port hint: both proxies sniff the first bytes and find no HTTP.
    let hops = Hops::start(ServiceDef::new("cache"), app.addr)
        .await
        .expect("start proxies");
    let payload = [b"\x00\x01binary".as_slice(), &pattern(64 * 1024, 1)].concat();

    let answer = send_then_half_close(hops.upstream(), &payload).await;

    assert!(answer.starts_with(b"echo:"));
    assert!(answer[5..] == payload[..], "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_protocol_gets_its_banner() {
    let app = TcpApp::banner(b"220 mail.test ESMTP ready\r\n")
        .await
        .expect("start app");
    let small_detect = |c: weft_tests::proxy::ProxyConfig| c.limit("detect_timeout", "200ms");
    let hops = Hops::start_with(
        ServiceDef::new("smtp"),
        app.addr,
        small_detect,
        small_detect,
    )
    .await
    .expect("start proxies");
    let mut stream = TcpStream::connect(hops.upstream()).await.expect("connect");

    // The client says nothing until it is greeted.
    let mut banner = vec![0u8; 27];
    within(
        Duration::from_secs(10),
        "banner through two proxies",
        stream.read_exact(&mut banner),
    )
    .await
    .expect("read banner");
    assert_eq!(&banner, b"220 mail.test ESMTP ready\r\n");

    stream.write_all(b"HELO me\r\n").await.expect("write");
    stream.shutdown().await.expect("half-close");
    let rest = read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("close after echo");
    assert_eq!(rest, b"HELO me\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_connection_to_a_refused_endpoint_is_closed() {
    let service = ServiceDef::new("db")
        .port(5432, "opaque")
        .endpoint(weft_tests::ports::closed_addr());
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("db").service(service))
        .await
        .expect("start proxy");

    let answer = send_then_half_close(proxy.upstream("db"), b"\x00\x00\x00\x08hello").await;

    assert!(answer.is_empty(), "got {answer:?}");
}
