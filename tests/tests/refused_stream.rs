//! A stream an HTTP/2 endpoint refused unprocessed (RST_STREAM REFUSED_STREAM, or
//! above the last stream of its GOAWAY) is sent again whatever its method, outside
//! the retry budget, and counted in `weft_refused_resends_total`; a stream reset
//! after the endpoint processed it (INTERNAL_ERROR) is not retried for a POST.
//! The resend needs no retry policy (a refused stream was never processed, RFC 9113
//! §8.7) and is bounded: a request refused every time is answered 503 after two.
//!
//! The inbound does the same on its hop to an app that speaks HTTP/2 only (h2c),
//! for HTTP/1.1 callers (plain, or carried between the proxies of an mTLS pair)
//! as for HTTP/2 ones: the app's refusal never reaches the caller as a 503.
//!
//! The outbound resends the same way what a peer proxy refused of the HTTP/1.1
//! requests it carries to it as HTTP/2 streams (`weft.h2-orig/1`, issue 19): an
//! HTTP/1.1 client sees none of it, and the app behind the peer reads each request
//! once, as it was sent.
//!
//! The endpoints are real HTTP/2 servers that misbehave on purpose: one on the h2
//! crate, resetting the first stream it gets (`weft_tests::refusing_app`); one
//! writing raw frames, going away
//! with last stream 0 after it has read the first request's HEADERS; and a peer
//! proxy stand-in with the server proxy's identity from the mesh CA, relaying what it
//! does not refuse to a real server proxy (`weft_tests::refusing_peer`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::control::WeftControl;
use weft_tests::mtls_pair::{MtlsPair, PairOptions, SERVER_ID};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::record_app::{RecordApp, curl, parse_record};
use weft_tests::refusing_app::{First, endpoint};
use weft_tests::refusing_peer::{Misbehaviour, RefusingPeer, frame};

/// Bounds each wait on a socket in the server below.
const LIMIT: Duration = Duration::from_secs(20);
/// A retry policy that would retry a POST only on a refusal.
const POLICY: &str = "{retry: {max_attempts: 2, backoff_base: 1ms}}";

/// An endpoint whose first connection reads the preface, then frames until the
/// first HEADERS (with `whole_request`: until the first frame that ends a stream),
/// and answers it with GOAWAY (last stream 0, NO_ERROR): nothing was processed.
/// Later connections go to `then`, a well-behaved h2 endpoint. Returns how many
/// connections went away like that.
async fn going_away_endpoint(
    then: SocketAddr,
    whole_request: bool,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let gone = Arc::new(AtomicUsize::new(0));
    let count = gone.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut socket, _)) = listener.accept().await {
            if !std::mem::take(&mut first) {
                tokio::spawn(async move {
                    if let Ok(mut next) = TcpStream::connect(then).await {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut next).await;
                    }
                });
                continue;
            }
            let count = count.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if tokio::time::timeout(LIMIT, socket.read_exact(&mut preface))
                    .await
                    .is_err()
                {
                    return;
                }
                if socket.write_all(&frame(0x4, 0, 0, &[])).await.is_err() {
                    return;
                }
                loop {
                    let mut head = [0u8; 9];
                    match tokio::time::timeout(LIMIT, socket.read_exact(&mut head)).await {
                        Ok(Ok(_)) => {}
                        _ => return,
                    }
                    let len = usize::from(head[0]) << 16
                        | usize::from(head[1]) << 8
                        | usize::from(head[2]);
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    // HEADERS (0x1), or with `whole_request` HEADERS or DATA (0x0)
                    // with END_STREAM (0x1).
                    let ends_stream = head[4] & 0x1 != 0 && head[3] <= 0x1;
                    if (!whole_request && head[3] == 0x1) || ends_stream {
                        break;
                    }
                }
                let mut goaway = 0u32.to_be_bytes().to_vec();
                goaway.extend_from_slice(&0u32.to_be_bytes());
                if socket.write_all(&frame(0x7, 0, 0, &goaway)).await.is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                // Stay until the caller closes, as a draining server would.
                let mut sink = [0u8; 1024];
                while let Ok(Ok(n)) = tokio::time::timeout(LIMIT, socket.read(&mut sink)).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    (addr, gone)
}

/// POSTs `body` over HTTP/2 (prior knowledge) to `addr`; returns the status and the
/// answer's body.
async fn post_h2(addr: SocketAddr, body: &str) -> (String, String) {
    order_request(addr, "--http2-prior-knowledge", &["--data-binary", body]).await
}

/// GETs `/order` over HTTP/2 (prior knowledge) from `addr`; returns the status and
/// the answer's body.
async fn get_h2(addr: SocketAddr) -> (String, String) {
    order_request(addr, "--http2-prior-knowledge", &[]).await
}

/// curl to `http://addr/order` with `proto` (`--http1.1`, `--http2-prior-knowledge`)
/// and `args`; the status and the answer's body.
async fn order_request(addr: SocketAddr, proto: &str, args: &[&str]) -> (String, String) {
    let url = format!("http://{addr}/order");
    let mut all = vec![proto, "--write-out", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(&url);
    let out = curl(&all).await.expect("curl ran");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), answer.to_string())
}

async fn proxy_to(name: &str, endpoint: SocketAddr) -> (WeftProxy, String) {
    proxy_with(name, endpoint, Some(POLICY)).await
}

/// A proxy for "orders" at `endpoint`, under `policy` if any.
async fn proxy_with(name: &str, endpoint: SocketAddr, policy: Option<&str>) -> (WeftProxy, String) {
    let service = ServiceDef::new("orders").endpoint(endpoint);
    let service = match policy {
        Some(policy) => service.policy(policy),
        None => service,
    };
    let label = service.metric_label();
    let proxy =
        WeftProxy::start_named(name, ProxyConfig::new().upstream("orders").service(service))
            .await
            .expect("start a proxy");
    (proxy, label)
}

/// The proxy counted `resends` refused-stream resends for service `label` and no
/// retry: a resend of an unprocessed request spends none of the retry budget.
async fn assert_resends(proxy: &WeftProxy, label: &str, resends: f64) {
    let service = [("service", label)];
    assert_eq!(
        proxy.metric("weft_refused_resends_total", &service).await,
        resends
    );
    assert_eq!(
        proxy.metric("weft_retries_total", &service).await,
        0.0,
        "a refusal spends no retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_endpoint_refused_is_sent_again_and_succeeds() {
    let (endpoint, seen) = endpoint(First::Refused).await;
    let (proxy, label) = proxy_to("refused", endpoint).await;
    let (status, answer) = post_h2(proxy.upstream("orders"), "item=1").await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(
        seen,
        [b"".to_vec(), b"item=1".to_vec()],
        "refused, then served whole"
    );
    assert_resends(&proxy, &label, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_past_the_endpoints_goaway_is_sent_again_and_succeeds() {
    post_past_a_goaway_is_sent_again("goaway", false, Some(POLICY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_reset_after_it_was_processed_is_not_retried() {
    let (endpoint, seen) = endpoint(First::Failed).await;
    let (proxy, label) = proxy_to("reset", endpoint).await;
    let (status, answer) = post_h2(proxy.upstream("orders"), "item=3").await;
    assert_eq!(status, "502", "{answer}");
    assert!(answer.contains("closed the connection"), "{answer}");
    assert_eq!(seen.lock().expect("log").len(), 1, "sent once");
    assert_resends(&proxy, &label, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_policy_a_refused_get_is_sent_again() {
    let (endpoint, seen) = endpoint(First::Refused).await;
    let (proxy, label) = proxy_with("refused-get", endpoint, None).await;
    let (status, answer) = get_h2(proxy.upstream("orders")).await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    assert_eq!(seen.lock().expect("log").len(), 2, "refused, then served");
    assert_resends(&proxy, &label, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_policy_a_post_refused_after_its_body_arrived_is_sent_again() {
    let (endpoint, seen) = endpoint(First::RefusedAfterBody).await;
    let (proxy, label) = proxy_with("refused-post", endpoint, None).await;
    let (status, answer) = post_h2(proxy.upstream("orders"), "item=4").await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(
        seen,
        [b"item=4".to_vec(), b"item=4".to_vec()],
        "refused, then served, whole both times"
    );
    assert_resends(&proxy, &label, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_policy_a_post_past_the_endpoints_goaway_is_sent_again() {
    post_past_a_goaway_is_sent_again("goaway-no-policy", true, None).await;
}

/// A POST to an endpoint whose first connection goes away past its stream (after its
/// HEADERS, or with `whole_request` after its whole body) is sent once more on a new
/// connection, served once and whole, and counted as one resend spending no retry.
async fn post_past_a_goaway_is_sent_again(name: &str, whole_request: bool, policy: Option<&str>) {
    let (good, seen) = endpoint(First::Served).await;
    let (endpoint, gone) = going_away_endpoint(good, whole_request).await;
    let (proxy, label) = proxy_with(name, endpoint, policy).await;
    let (status, answer) = post_h2(proxy.upstream("orders"), "item=2").await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    assert_eq!(
        gone.load(Ordering::SeqCst),
        1,
        "the first connection went away"
    );
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen, [b"item=2".to_vec()], "served once, whole");
    assert_resends(&proxy, &label, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_policy_a_processed_post_is_not_sent_again() {
    let (endpoint, seen) = endpoint(First::Failed).await;
    let (proxy, label) = proxy_with("reset-no-policy", endpoint, None).await;
    let (status, answer) = post_h2(proxy.upstream("orders"), "item=6").await;
    assert_eq!(status, "502", "{answer}");
    assert_eq!(seen.lock().expect("log").len(), 1, "sent once");
    assert_resends(&proxy, &label, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_every_time_is_resent_twice_then_answered_503() {
    let (endpoint, seen) = endpoint(First::AlwaysRefused).await;
    let (proxy, label) = proxy_with("always-refused", endpoint, None).await;
    let (status, answer) = get_h2(proxy.upstream("orders")).await;
    assert_eq!(status, "503", "{answer}");
    assert!(
        answer.contains("refused the request unprocessed"),
        "{answer}"
    );
    assert_eq!(
        seen.lock().expect("log").len(),
        3,
        "sent, then resent twice"
    );
    assert_resends(&proxy, &label, 2.0).await;
}

/// POSTs `body` over HTTP/1.1 to `addr`; returns the status and the answer's body.
async fn post_h1(addr: SocketAddr, body: &str) -> (String, String) {
    order_request(addr, "--http1.1", &["--data-binary", body]).await
}

/// A transparent-style inbound in front of the h2c-only app at `app`, whose port it
/// is told speaks HTTP/2 only.
async fn inbound_to(name: &str, app: SocketAddr) -> WeftProxy {
    let config = ProxyConfig::new()
        .inbound(app)
        .inbound_http2_ports(&app.port().to_string());
    WeftProxy::start_named(name, config)
        .await
        .expect("start a proxy")
}

/// The inbound proxy counted `resends` refused-stream resends (it has no other
/// service, so every series is the inbound's) and answered one request 2xx, or
/// none when `resends` ran out.
async fn assert_inbound_resends(proxy: &WeftProxy, resends: f64, ok: f64) {
    assert_eq!(
        proxy.metric("weft_refused_resends_total", &[]).await,
        resends
    );
    let inbound_ok = [("direction", "inbound"), ("status_class", "2xx")];
    assert_eq!(proxy.metric("weft_requests_total", &inbound_ok).await, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_sends_an_http1_get_its_h2c_app_refused_again() {
    let (app, seen) = endpoint(First::Refused).await;
    let proxy = inbound_to("inbound-refused", app).await;
    let (status, answer) = order_request(proxy.inbound(), "--http1.1", &[]).await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    assert_eq!(seen.lock().expect("log").len(), 2, "refused, then served");
    assert_inbound_resends(&proxy, 1.0, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_sends_a_post_past_its_h2c_apps_goaway_again() {
    let (good, seen) = endpoint(First::Served).await;
    // The app goes away once it has read the whole first request.
    let (app, gone) = going_away_endpoint(good, true).await;
    let proxy = inbound_to("inbound-goaway", app).await;
    let (status, answer) = post_h1(proxy.inbound(), "item=8").await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    assert_eq!(
        gone.load(Ordering::SeqCst),
        1,
        "the first connection went away"
    );
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen, [b"item=8".to_vec()], "served once, whole");
    assert_inbound_resends(&proxy, 1.0, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_answers_503_to_an_http2_caller_its_app_refused_every_time() {
    let (app, seen) = endpoint(First::AlwaysRefused).await;
    let proxy = inbound_to("inbound-always-refused", app).await;
    let (status, answer) = get_h2(proxy.inbound()).await;
    assert_eq!(status, "503", "{answer}");
    assert!(
        answer.contains("refused the request unprocessed"),
        "{answer}"
    );
    assert_eq!(
        seen.lock().expect("log").len(),
        3,
        "sent, then resent twice"
    );
    assert_inbound_resends(&proxy, 2.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_does_not_send_a_post_its_app_processed_again() {
    let (app, seen) = endpoint(First::Failed).await;
    let proxy = inbound_to("inbound-reset", app).await;
    let (status, answer) = post_h1(proxy.inbound(), "item=10").await;
    assert_eq!(status, "502", "{answer}");
    assert_eq!(seen.lock().expect("log").len(), 1, "sent once");
    assert_inbound_resends(&proxy, 0.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_mtls_pair_the_server_proxy_resends_what_its_h2c_app_refused() {
    let (app, seen) = endpoint(First::RefusedAfterBody).await;
    // The caller's mesh says nothing of the port: the POST crosses the pair as a
    // carried HTTP/1.1 request, and the server proxy sends it to its app as HTTP/2.
    let options = PairOptions {
        server_http2_ports: Some(app.port().to_string()),
        ..PairOptions::default()
    };
    let pair = MtlsPair::start(ServiceDef::new("orders"), app, options)
        .await
        .expect("start the pair");
    let (status, answer) = post_h1(pair.upstream(), "item=9").await;
    assert_eq!(status, "200", "{answer}");
    assert_eq!(answer, "served");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(
        seen,
        [b"item=9".to_vec(), b"item=9".to_vec()],
        "refused, then served, whole both times"
    );
    // The server proxy resent it; the client proxy never saw a refusal.
    assert_inbound_resends(&pair.server, 1.0, 1.0).await;
    assert_eq!(
        pair.client.metric("weft_refused_resends_total", &[]).await,
        0.0
    );
}

/// A client proxy whose "orders" endpoint is a peer that refuses streams on
/// purpose (`refusing_peer`), in front of a real server proxy and an HTTP/1.1-only
/// app that records what reaches it: HTTP/1.1 requests cross as carried HTTP/2
/// streams, and the peer refuses them as a real one shedding load would.
struct CarriedPair {
    app: RecordApp,
    peer: RefusingPeer,
    client: WeftProxy,
    label: String,
    _server: WeftProxy,
    _cp: WeftControl,
}

async fn carried_pair(how: Misbehaviour, policy: Option<&str>) -> CarriedPair {
    let app = RecordApp::start().await.expect("start the app");
    let cp = WeftControl::start_yaml(MESH, &[])
        .await
        .expect("start the control plane");
    let mut server_config = ProxyConfig::new().inbound(app.addr);
    server_config.extra = cp.identity_yaml("server", "{}", "");
    let server = WeftProxy::start_named("server-proxy", server_config)
        .await
        .expect("start the server proxy");
    let peer = RefusingPeer::start(&cp, server.inbound(), SERVER_ID, how)
        .await
        .expect("start the refusing peer");
    let service = ServiceDef::new("orders").endpoint_with_identity(peer.addr, SERVER_ID);
    let service = match policy {
        Some(policy) => service.policy(policy),
        None => service,
    };
    let label = service.metric_label();
    let mut client_config = ProxyConfig::new().upstream("orders").service(service);
    client_config.extra = cp.identity_yaml("client", "{}", "");
    let client = WeftProxy::start_named("client-proxy", client_config)
        .await
        .expect("start the client proxy");
    CarriedPair {
        app,
        peer,
        client,
        label,
        _server: server,
        _cp: cp,
    }
}

const MESH: &str = "services:\n  - name: placeholder\n    endpoints: []\n";

/// What an HTTP/1.1 client read: its status line, and the app's record of the
/// request when the answer was one.
#[derive(Debug)]
struct H1Answer {
    status_line: String,
    head: String,
    body: String,
}

impl H1Answer {
    fn record(&self) -> serde_json::Value {
        parse_record(self.body.as_bytes()).expect("the app's record")
    }
}

/// curl --http1.1 to `http://addr{target}` with `args`: what came back.
async fn h1_request(addr: SocketAddr, target: &str, args: &[&str]) -> H1Answer {
    let url = format!("http://{addr}{target}");
    let mut all = vec!["--http1.1", "--include"];
    all.extend_from_slice(args);
    all.push(&url);
    let out = curl(&all).await.expect("curl ran");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    H1Answer {
        status_line: head.lines().next().unwrap_or("").to_string(),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// How often the app read each of `lines`.
async fn arrivals(app: &RecordApp, lines: &[String]) -> Vec<usize> {
    let seen = app.seen().await.expect("the app's request lines");
    lines
        .iter()
        .map(|l| seen.iter().filter(|s| *s == l).count())
        .collect()
}

/// The `x-` fields the app read, in order: the pair keeps their order and values,
/// and names reach the app in lower case with or without a refusal.
fn x_fields(record: &serde_json::Value) -> Vec<String> {
    record["headers"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| {
            let name = f[0].as_str()?;
            name.starts_with("x-")
                .then(|| format!("{name}: {}", f[1].as_str().unwrap_or("?")))
        })
        .collect()
}

/// HTTP/1.1 requests with a body (Content-Length, chunked) and without, each
/// refused unprocessed by the peer the first time: target, curl arguments, the
/// request line, framing and `x-` fields the app must read, and the body.
type Case = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
);

const REFUSED_ONCE: [Case; 3] = [
    (
        "/order/length?item=1",
        &[
            "-H",
            "X-Order-Id: 7",
            "-H",
            "x-Mixed-Case: Kept",
            "--data-binary",
            "item=1&qty=2",
        ],
        "POST /order/length?item=1 HTTP/1.1",
        "length",
        &["x-order-id: 7", "x-mixed-case: Kept"],
        "item=1&qty=2",
    ),
    (
        "/order/chunked",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "X-Order-Id: 8",
            "--data-binary",
            "item=2&qty=3",
        ],
        "POST /order/chunked HTTP/1.1",
        "chunked",
        &["x-order-id: 8"],
        "item=2&qty=3",
    ),
    (
        "/order/list",
        &["-H", "X-Order-Id: 9"],
        "GET /order/list HTTP/1.1",
        "none",
        &["x-order-id: 9"],
        "",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carried_http1_requests_the_peer_refused_are_sent_again_and_arrive_once_as_sent() {
    let pair = carried_pair(Misbehaviour::RefuseOnce, None).await;
    let addr = pair.client.upstream("orders");
    for (n, (target, args, line, framing, fields, body)) in REFUSED_ONCE.into_iter().enumerate() {
        let resent = h1_request(addr, target, args).await;
        assert_eq!(
            resent.status_line, "HTTP/1.1 200 Recorded Fine",
            "{resent:?}"
        );
        assert_eq!(pair.peer.misbehaved(), n + 1, "the peer refused {target}");
        let record = resent.record();
        assert_eq!(record["request_line"], line, "{record}");
        assert_eq!(record["framing"], framing, "{record}");
        assert_eq!(x_fields(&record), fields, "{record}");
        assert_eq!(record["body"], body, "{record}");
        assert_eq!(
            arrivals(&pair.app, &[line.to_string()]).await,
            [1],
            "{target} arrived once"
        );
        // The same request again, which the peer now serves at once: the app reads
        // the resent one exactly as it reads one never refused.
        let served = h1_request(addr, target, args).await;
        assert_eq!(served.status_line, resent.status_line);
        assert_eq!(served.record(), record, "a resend is the request as sent");
        assert_eq!(pair.peer.misbehaved(), n + 1);
    }
    assert_resends(&pair.client, &pair.label, 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_chunked_post_past_the_peers_goaway_is_sent_again_and_arrives_once() {
    let pair = carried_pair(Misbehaviour::GoAway { requests: 1 }, None).await;
    let addr = pair.client.upstream("orders");
    let (target, args, line, framing, fields, body) = REFUSED_ONCE[1];
    let answer = h1_request(addr, target, args).await;
    assert_eq!(
        answer.status_line, "HTTP/1.1 200 Recorded Fine",
        "{answer:?}"
    );
    assert_eq!(pair.peer.misbehaved(), 1, "the first connection went away");
    let record = answer.record();
    assert_eq!(record["request_line"], line, "{record}");
    assert_eq!(record["framing"], framing, "{record}");
    assert_eq!(x_fields(&record), fields, "{record}");
    assert_eq!(record["body"], body, "{record}");
    assert_eq!(arrivals(&pair.app, &[line.to_string()]).await, [1]);
    // Sent again on a connection that stays: read as the resent one was.
    let served = h1_request(addr, target, args).await;
    assert_eq!(served.record(), record, "a resend is the request as sent");
    assert_eq!(pair.peer.misbehaved(), 1);
    assert_resends(&pair.client, &pair.label, 1.0).await;
}

/// Python's http.client on one kept-alive connection: a POST with a Content-Length
/// body, a chunked PUT and a GET, each as `[version, status, reason, body]`.
const PY_KEPT_ALIVE: &str = "import http.client, json, sys\n\
    c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)\n\
    out = []\n\
    for method, path, body, chunked in [('POST', '/py/post', b'from-python', False),\n\
    \x20       ('PUT', '/py/put', iter([b'chunk-1;', b'chunk-2']), True), ('GET', '/py/get', None, False)]:\n\
    \x20   c.request(method, path, body=body, headers={'X-Client': 'py', 'X-Step': method},\n\
    \x20             encode_chunked=chunked)\n\
    \x20   r = c.getresponse()\n\
    \x20   out.append([r.version, r.status, r.reason, r.read().decode()])\n\
    print(json.dumps(out))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_client_requests_the_peer_refused_arrive_once_on_a_kept_alive_connection() {
    let pair = carried_pair(Misbehaviour::RefuseOnce, None).await;
    let addr = pair.client.upstream("orders");
    let py = tokio::time::timeout(
        LIMIT,
        tokio::process::Command::new("python3")
            .args([
                "-c",
                PY_KEPT_ALIVE,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .output(),
    )
    .await
    .expect("python3 finished")
    .expect("run python3");
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let answers: Vec<(u8, u16, String, String)> =
        serde_json::from_slice(&py.stdout).expect("the script's JSON");
    let expected = [
        ("POST /py/post HTTP/1.1", "length", "from-python", "POST"),
        ("PUT /py/put HTTP/1.1", "chunked", "chunk-1;chunk-2", "PUT"),
        ("GET /py/get HTTP/1.1", "none", "", "GET"),
    ];
    assert_eq!(answers.len(), expected.len(), "{answers:?}");
    for ((version, status, reason, body), (line, framing, sent, step)) in
        answers.iter().zip(expected)
    {
        assert_eq!(
            (*version, *status, reason.as_str()),
            (11, 200, "Recorded Fine"),
            "{body}"
        );
        let record = parse_record(body.as_bytes()).expect("the app's record");
        assert_eq!(record["request_line"], line, "{record}");
        assert_eq!(record["framing"], framing, "{record}");
        assert_eq!(record["body"], sent, "{record}");
        assert_eq!(
            x_fields(&record),
            ["x-client: py".to_string(), format!("x-step: {step}")],
            "{record}"
        );
    }
    assert_eq!(pair.peer.misbehaved(), 3, "each refused once");
    let lines = expected.map(|(line, ..)| line.to_string());
    assert_eq!(arrivals(&pair.app, &lines).await, [1, 1, 1]);
    assert_resends(&pair.client, &pair.label, 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_post_the_peer_processed_then_reset_is_not_sent_again() {
    // Even under a retry policy: a POST that may have been processed is not repeated.
    let pair = carried_pair(Misbehaviour::FailOnceAfterProcessing, Some(POLICY)).await;
    let addr = pair.client.upstream("orders");
    let (target, args, line, ..) = REFUSED_ONCE[0];
    let answer = h1_request(addr, target, args).await;
    assert!(answer.status_line.starts_with("HTTP/1.1 502"), "{answer:?}");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("\r\nweft-error: upstream-reset"),
        "{answer:?}"
    );
    assert_eq!(
        pair.peer.misbehaved(),
        1,
        "the peer reset it after the app answered"
    );
    assert_eq!(
        arrivals(&pair.app, &[line.to_string()]).await,
        [1],
        "processed once, not again"
    );
    assert_resends(&pair.client, &pair.label, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carried_post_the_peer_refuses_every_time_is_resent_twice_then_answered_503() {
    let pair = carried_pair(Misbehaviour::RefuseAlways, None).await;
    let addr = pair.client.upstream("orders");
    let (target, args, line, ..) = REFUSED_ONCE[0];
    let answer = h1_request(addr, target, args).await;
    assert!(answer.status_line.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("\r\nweft-error: upstream-refused"),
        "{answer:?}"
    );
    assert_eq!(pair.peer.misbehaved(), 3, "sent, then resent twice");
    assert_eq!(arrivals(&pair.app, &[line.to_string()]).await, [0]);
    assert_resends(&pair.client, &pair.label, 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_carried_http1_requests_caught_by_the_peers_goaway_each_arrive_once() {
    const CLIENTS: usize = 6;
    let pair = carried_pair(Misbehaviour::GoAway { requests: CLIENTS }, None).await;
    let addr = pair.client.upstream("orders");
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        clients.spawn(async move {
            let body = format!("item={i}");
            let target = format!("/order/{i}");
            let answer = h1_request(addr, &target, &["--data-binary", &body]).await;
            (i, answer)
        });
    }
    let mut lines = Vec::new();
    while let Some(done) = clients.join_next().await {
        let (i, answer) = done.expect("a client");
        assert_eq!(
            answer.status_line, "HTTP/1.1 200 Recorded Fine",
            "{answer:?}"
        );
        let record = answer.record();
        assert_eq!(record["request_line"], format!("POST /order/{i} HTTP/1.1"));
        assert_eq!(record["body"], format!("item={i}"));
        lines.push(format!("POST /order/{i} HTTP/1.1"));
    }
    assert_eq!(pair.peer.misbehaved(), 1, "the first connection went away");
    assert_eq!(
        arrivals(&pair.app, &lines).await,
        [1; CLIENTS],
        "each arrived exactly once"
    );
    assert_eq!(
        pair.app
            .seen()
            .await
            .expect("the app's request lines")
            .len(),
        CLIENTS
    );
    // At least the request the peer read whole before going away was refused.
    let resends = pair
        .client
        .metric("weft_refused_resends_total", &[("service", &pair.label)])
        .await;
    assert!((1.0..=CLIENTS as f64).contains(&resends), "{resends}");
}
