//! Hostile input across the HTTP/1.1-over-HTTP/2 pair: what a client sends and
//! what an app answers crosses an upgrading pair exactly as it crosses a pair with
//! the upgrade off, or is refused the same way, and nothing either side sends can
//! pass for one of Weft's own marks. Each case runs through both pairs (real
//! proxies, real mTLS) and the client's bytes are compared, Date aside.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use weft_tests::apps::TcpApp;
use weft_tests::client::{H2Client, get, raw_exchange, raw_status};
use weft_tests::mesh_ca::{AnyServer, MeshCa};
use weft_tests::mtls_pair::{MtlsPair, PairOptions, UPGRADE_OFF, UPGRADE_ON, UPGRADE_V1_ONLY};
use weft_tests::proxy::{ServiceDef, WeftProxy};
use weft_tests::record_app::{RecordApp, parse_record};
use weft_tests::{STEP_DEADLINE, within};

/// The client's bytes with the Date line taken out (each proxy writes its own).
fn without_date(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        if !line.to_ascii_lowercase().starts_with("date:") {
            out.push_str(line);
        }
    }
    out
}

/// Reads one request head off `stream`; None if the caller went away first.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > 256 * 1024 {
            return None;
        }
    }
    Some(head)
}

/// An app that answers `GET /<i>` with `answers[i]`'s bytes as they are, and
/// anything else with a plain 200, then closes the connection.
async fn scripted_app(answers: &'static [(&'static str, &'static [u8])]) -> TcpApp {
    TcpApp::serve(move |mut stream| async move {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let target = head
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("");
        let answer = target
            .strip_prefix('/')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| answers.get(i))
            .map_or(
                &b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"[..],
                |(_, a)| a,
            );
        let _ = stream.write_all(answer).await;
        let _ = stream.shutdown().await;
    })
    .await
    .expect("start the scripted app")
}

/// mTLS connections the server proxy's inbound accepted: one, on an upgrading
/// pair, for as long as the shared connection serves.
async fn inbound_handshakes(pair: &MtlsPair) -> f64 {
    pair.server
        .metric(
            "weft_tls_handshakes_total",
            &[("direction", "inbound"), ("result", "ok")],
        )
        .await
}

async fn requests_counted(proxy: &WeftProxy) -> f64 {
    proxy
        .metrics()
        .await
        .expect("/metrics")
        .sum("weft_requests_total", &[])
}

/// The pair answers an ordinary request at `path` after `what`.
async fn still_answers(pair: &MtlsPair, path: &str, what: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n");
    let after = raw_exchange(pair.upstream(), request.as_bytes(), STEP_DEADLINE)
        .await
        .expect("the request after");
    assert_eq!(raw_status(&after), Some(200), "after {what}");
}

/// What a client gets for `GET /<i>` of each answer, through `pair`; after each,
/// a plain request on a new client connection must still be answered, which on an
/// upgrading pair goes on the same shared HTTP/2 connection.
async fn run_answers(pair: &MtlsPair, count: usize, method: &str) -> Vec<String> {
    let mut got = Vec::new();
    for i in 0..count {
        let request =
            format!("{method} /{i} HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(pair.upstream(), request.as_bytes(), STEP_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("answer {i}: {e}"));
        got.push(without_date(&raw));
        still_answers(pair, "/good", &format!("answer {i}")).await;
    }
    got
}

const TRUNCATED: &str = "a Content-Length longer than the body, then a close";

/// Answers no framing can be trusted for, interim answers, and answers with the
/// names of Weft's own marks.
const HOSTILE_ANSWERS: &[(&str, &[u8])] = &[
    (
        "the app's own weft-orig fields",
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\nweft-orig-reason: Forged\r\nweft-orig-proto: HTTP/1.0\r\nx-b: 2\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "the app's own weft-orig fields and a reason phrase of its own",
        b"HTTP/1.1 200 Fine Indeed\r\nweft-orig-reason: Forged\r\nweft-orig-reason: Twice\r\nx-b: 2\r\nweft-orig-proto: HTTP/1.0\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "an HTTP/1.0 status line and the app's own weft-orig-proto",
        b"HTTP/1.0 200 OK\r\nweft-orig-proto: HTTP/1.1\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "other weft- fields",
        b"HTTP/1.1 200 OK\r\nweft-client-id: spiffe://evil/x\r\nweft-anything: y\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a reason phrase with a control byte",
        b"HTTP/1.1 200 O\x01K\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a reason phrase with obs-text",
        b"HTTP/1.1 200 Gr\xfc\xdfe\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a reason phrase with a bare CR",
        b"HTTP/1.1 200 O\rX-Injected: 1\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a reason phrase with a bare LF",
        b"HTTP/1.1 200 O\nX-Injected: 1\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "two differing Content-Lengths",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nokk",
    ),
    (
        "Content-Length and Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    (
        "a Content-Length shorter than the body",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
    ),
    (TRUNCATED, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok"),
    ("status 99", b"HTTP/1.1 99 X\r\ncontent-length: 2\r\n\r\nok"),
    ("status 2000", b"HTTP/1.1 2000 X\r\ncontent-length: 2\r\n\r\nok"),
    ("status 600", b"HTTP/1.1 600 X\r\ncontent-length: 2\r\n\r\nok"),
    (
        "a 102 before the answer",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a 103 with fields before the answer",
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a 101 nobody asked for",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\nbytes",
    ),
    (
        "a 204 with a body",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "Transfer-Encoding gzip only, till close",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw bytes",
    ),
    (
        "Transfer-Encoding gzip, chunked",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    (
        "a field value with a NUL",
        b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nx-a: a\r\n b\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a space before the colon",
        b"HTTP/1.1 200 OK\r\nx-a : a\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a bad chunk size",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_reach_the_client_as_without_the_upgrade() {
    let app = scripted_app(HOSTILE_ANSWERS).await;
    let off = MtlsPair::legacy(app.addr, UPGRADE_OFF, UPGRADE_OFF).await;
    let on = MtlsPair::legacy(app.addr, UPGRADE_ON, UPGRADE_ON).await;
    let v1 = MtlsPair::legacy(app.addr, UPGRADE_V1_ONLY, UPGRADE_ON).await;
    let n = HOSTILE_ANSWERS.len();
    let expected = run_answers(&off, n, "GET").await;
    let got = run_answers(&on, n, "GET").await;
    let got_v1 = run_answers(&v1, n, "GET").await;
    let mut differ = Vec::new();
    for (i, (what, _)) in HOSTILE_ANSWERS.iter().enumerate() {
        println!(
            "{what}:\n  off: {:?}\n  on:  {:?}\n  v1:  {:?}",
            expected[i], got[i], got_v1[i]
        );
        if *what == TRUNCATED {
            // Whether the head is out before the body fails is a race on every
            // hop: the client gets the head and a short body, a 502, or, when
            // the short body and its failure reach proxy A together, nothing
            // (hyper's server drops a head it has not flushed when the body
            // fails). Each is a failed answer to the client.
            let short = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nok";
            for answer in [&expected[i], &got[i], &got_v1[i]] {
                assert!(
                    answer == short
                        || answer.is_empty()
                        || raw_status(answer.as_bytes()) == Some(502),
                    "{what}: {answer:?}"
                );
            }
        } else if expected[i] != got[i] || expected[i] != got_v1[i] {
            differ.push(*what);
        }
    }
    assert!(differ.is_empty(), "differ with the upgrade: {differ:?}");
    // Each case and the request after it, counted once by each proxy. Without
    // the upgrade an answer that fails after its head (two cases) reaches the
    // calling proxy as a reused connection closed unanswered, so it sends the GET
    // again: the server proxy, and the app, see those twice.
    let count = (2 * HOSTILE_ANSWERS.len()) as f64;
    for (name, pair, upgraded) in [("off", &off, false), ("on", &on, true), ("v1", &v1, true)] {
        let client = requests_counted(&pair.client).await;
        let server = requests_counted(&pair.server).await;
        assert_eq!(client, count, "{name}");
        let resent = if upgraded { 0.0 } else { 2.0 };
        assert!(
            (count..=count + resent).contains(&server),
            "{name}: {server} of {count}"
        );
        if upgraded {
            let handshakes = inbound_handshakes(pair).await;
            assert_eq!(handshakes, 1.0, "{name}: one shared connection throughout");
        }
    }
}

/// What an HTTP/1.1 client may send that a proxy must refuse, or pass on exactly:
/// smuggling shapes, bytes no field may hold, Weft's own mark names, a head too
/// large to take.
fn hostile_requests() -> Vec<(&'static str, Vec<u8>)> {
    let request = |head: &str| format!("{head}\r\nConnection: close\r\n\r\n").into_bytes();
    let mut large = "GET /large HTTP/1.1\r\nHost: legacy\r\nx-big: ".to_string();
    large.push_str(&"a".repeat(200 * 1024));
    vec![
        (
            "the client's own weft-orig-proto and weft-orig-reason",
            request(
                "GET /m HTTP/1.1\r\nHost: legacy\r\nweft-orig-proto: HTTP/1.0\r\n\
                 weft-orig-reason: Forged\r\nweft-orig-proto: HTTP/1.1",
            ),
        ),
        (
            "the client's own weft-client-id",
            request("GET /id HTTP/1.1\r\nHost: legacy\r\nweft-client-id: spiffe://evil/x"),
        ),
        (
            "Content-Length and Transfer-Encoding",
            b"POST /s HTTP/1.1\r\nHost: legacy\r\nContent-Length: 4\r\n\
              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "two differing Content-Lengths",
            b"POST /s HTTP/1.1\r\nHost: legacy\r\nContent-Length: 2\r\n\
              Content-Length: 3\r\nConnection: close\r\n\r\nabc"
                .to_vec(),
        ),
        (
            "Transfer-Encoding: chunked, gzip",
            b"POST /s HTTP/1.1\r\nHost: legacy\r\nTransfer-Encoding: chunked, gzip\r\n\
              Connection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            b"POST /s HTTP/1.1\r\nHost: legacy\r\nTransfer-Encoding: gzip, chunked\r\n\
              Connection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding: gzip alone",
            b"POST /s HTTP/1.1\r\nHost: legacy\r\nTransfer-Encoding: gzip\r\n\
              Connection: close\r\n\r\nok"
                .to_vec(),
        ),
        (
            "obs-fold",
            request("GET /f HTTP/1.1\r\nHost: legacy\r\nx-a: a\r\n b"),
        ),
        (
            "a bare LF ending a field",
            request("GET /lf HTTP/1.1\r\nHost: legacy\r\nx-a: a\nx-b: b"),
        ),
        (
            "a NUL in a field value",
            request("GET /nul HTTP/1.1\r\nHost: legacy\r\nx-a: a\0b"),
        ),
        (
            "a CR in a field value",
            request("GET /cr HTTP/1.1\r\nHost: legacy\r\nx-a: a\rx-b: b"),
        ),
        (
            "a space before the colon",
            request("GET /sp HTTP/1.1\r\nHost: legacy\r\nx-a : a"),
        ),
        ("an over-long head", request(&large)),
    ]
}

/// Each request's answer through `pair`, each followed by a plain request that
/// must still be answered.
async fn run_requests(pair: &MtlsPair, requests: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut got = Vec::new();
    for (what, raw) in requests {
        let answer = raw_exchange(pair.upstream(), raw, STEP_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        got.push(without_date(&answer));
        still_answers(pair, "/after", what).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_or_reach_the_app_as_without_the_upgrade() {
    let app = RecordApp::start().await.expect("start the app");
    let off = MtlsPair::legacy(app.addr, UPGRADE_OFF, UPGRADE_OFF).await;
    let on = MtlsPair::legacy(app.addr, UPGRADE_ON, UPGRADE_ON).await;
    let v1 = MtlsPair::legacy(app.addr, UPGRADE_V1_ONLY, UPGRADE_ON).await;
    let requests = hostile_requests();
    let expected = run_requests(&off, &requests).await;
    let got = run_requests(&on, &requests).await;
    let got_v1 = run_requests(&v1, &requests).await;
    let mut differ = Vec::new();
    for (i, (what, _)) in requests.iter().enumerate() {
        println!(
            "{what}:\n  off: {:?}\n  on:  {:?}\n  v1:  {:?}",
            expected[i], got[i], got_v1[i]
        );
        if expected[i] != got[i] || expected[i] != got_v1[i] {
            differ.push(*what);
        }
        assert!(
            !got[i].contains("weft-orig-proto") && !got_v1[i].contains("weft-orig-proto"),
            "a mark reached the app or the client: {what}"
        );
    }
    assert!(differ.is_empty(), "differ with the upgrade: {differ:?}");
}

/// Answers to HEAD that a HEAD answer may not have: a body, after each framing.
const HEAD_ANSWERS: &[(&str, &[u8])] = &[
    (
        "a body after a Content-Length",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ),
    (
        "a chunked body",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
    (
        "a body and no framing",
        b"HTTP/1.1 200 Fine\r\nx-a: 1\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_an_answer_to_head_never_reaches_the_client() {
    let app = scripted_app(HEAD_ANSWERS).await;
    let off = MtlsPair::legacy(app.addr, UPGRADE_OFF, UPGRADE_OFF).await;
    let on = MtlsPair::legacy(app.addr, UPGRADE_ON, UPGRADE_ON).await;
    let n = HEAD_ANSWERS.len();
    let expected = run_answers(&off, n, "HEAD").await;
    let got = run_answers(&on, n, "HEAD").await;
    for (i, (what, answer)) in HEAD_ANSWERS.iter().enumerate() {
        println!("{what}:\n  off: {:?}\n  on:  {:?}", expected[i], got[i]);
        assert_eq!(got[i], expected[i], "{what}");
        // The app's status line, and nothing after the head.
        let line_end = answer
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a line");
        let status_line = String::from_utf8_lossy(&answer[..line_end]);
        assert!(got[i].starts_with(&*status_line), "{what}");
        assert!(got[i].ends_with("\r\n\r\n"), "{what}: a body came through");
    }
}

/// The app's record of an HTTP/2 request sent through `pair` with `fields`, and
/// the answer's fields.
async fn record_of_h2(
    pair: &MtlsPair,
    fields: &[(&str, &str)],
) -> (serde_json::Value, http::HeaderMap) {
    let mut client = H2Client::connect(pair.upstream()).await.expect("connect");
    let mut req = get("http://legacy/n?x=1");
    for (name, value) in fields {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let reply = client.send(req).await.expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let record = parse_record(reply.text().as_bytes()).expect("the app's record");
    let mut headers = reply.headers;
    headers.remove(http::header::DATE);
    (record, headers)
}

/// Through a pair whose calling side speaks `client`, an HTTP/2 request with
/// `fields` and one with `weft-orig-proto` as well reach the app alike and get
/// the same answer's fields.
async fn forged_mark_changes_nothing(fields: &[(&str, &str)]) {
    let app = RecordApp::start().await.expect("start the app");
    for (name, client) in [
        ("off", UPGRADE_OFF),
        ("on", UPGRADE_ON),
        ("v1", UPGRADE_V1_ONLY),
    ] {
        let options = PairOptions {
            client_identity: client.to_string(),
            server_identity: UPGRADE_ON.to_string(),
            server_http1_ports: Some(app.addr.port().to_string()),
            ..PairOptions::default()
        };
        let pair = MtlsPair::start(ServiceDef::new("legacy"), app.addr, options)
            .await
            .expect("start the pair");
        let plain = record_of_h2(&pair, fields).await;
        for forged in ["HTTP/1.1", "HTTP/1.0"] {
            let mut marked_fields = fields.to_vec();
            marked_fields.push(("weft-orig-proto", forged));
            let marked = record_of_h2(&pair, &marked_fields).await;
            assert_eq!(marked, plain, "{name}, weft-orig-proto: {forged}");
        }
    }
}

/// An HTTP/2 client's request is HTTP/2 on the pair's connection too: a
/// `weft-orig-proto` field of its own must not make the peer take it for a
/// carried HTTP/1 request (on `weft.h2-orig/1` the field is the only sign). Taken
/// for one, it lost its authority, so the app got a request without a Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_clients_forged_mark_changes_nothing_the_app_gets() {
    forged_mark_changes_nothing(&[]).await;
}

/// As above, for an HTTP/2 request that has a Host field beside its authority,
/// as a carried HTTP/1 request has: on `weft.h2-orig/1` the peer cannot tell the
/// two apart, so the calling proxy keeps the client's field from passing for its
/// mark (it sends no `weft-orig-proto` of a client's on to a peer). Passed on,
/// the app got the request as HTTP/1 (its cookies not joined, say) and the client
/// got the answer's marks as fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_clients_forged_mark_with_a_host_changes_nothing_the_app_gets() {
    forged_mark_changes_nothing(&[("host", "legacy")]).await;
}

/// A stand-in for a calling proxy: an HTTP/2 connection to `server`'s inbound over
/// mTLS with a mesh certificate, offering only `alpn`.
async fn h2_to_inbound(
    pair: &MtlsPair,
    alpn: &[u8],
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let ca = MeshCa::of(&pair.cp).expect("the mesh CA");
    let (cert, key) = ca
        .leaf("spiffe://cluster.local/ns/default/sa/client")
        .expect("a leaf");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![cert], key)
        .expect("client cert");
    config.alpn_protocols = vec![alpn.to_vec()];
    let addr = pair.server.inbound();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .expect("mTLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    tx
}

/// A peer speaking straight to the app's proxy, with marks of its own on every
/// kind of request either version of the convention knows: the app gets each
/// request with a Host and without the mark, and the answer's marks say only what
/// the app's status line said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_forging_marks_on_the_inbound_gets_nothing_past_it() {
    let app = RecordApp::start().await.expect("start the app");
    let pair = MtlsPair::legacy_http1_app(app.addr).await;
    for alpn in [&b"weft.h2-orig/2"[..], b"weft.h2-orig/1"] {
        let mut tx = h2_to_inbound(&pair, alpn).await;
        let carried = |proto: &str| {
            // As a calling proxy sends an HTTP/1 request: no :authority.
            let mut req = get("/c");
            *req.version_mut() = http::Version::HTTP_11;
            let h = req.headers_mut();
            h.insert(http::header::HOST, http::HeaderValue::from_static("legacy"));
            h.insert(
                "weft-orig-proto",
                http::HeaderValue::from_str(proto).expect("value"),
            );
            h.insert("weft-orig-reason", http::HeaderValue::from_static("Forged"));
            req
        };
        let native = || {
            let mut req = get("http://legacy/n");
            req.headers_mut().insert(
                "weft-orig-proto",
                http::HeaderValue::from_static("HTTP/1.1"),
            );
            req
        };
        let alpn = String::from_utf8_lossy(alpn);
        for (what, req) in [
            ("carried, HTTP/1.1", carried("HTTP/1.1")),
            ("carried, HTTP/1.0", carried("HTTP/1.0")),
            ("carried, garbage", carried("HTTP/9 \tq")),
            ("native", native()),
        ] {
            let resp = within(STEP_DEADLINE, "an answer", tx.send_request(req))
                .await
                .unwrap_or_else(|e| panic!("{alpn} {what}: {e}"));
            assert_eq!(resp.status(), 200, "{alpn} {what}");
            // The app's own status line, marked as it was: its reason phrase only.
            let marks: Vec<_> = resp
                .headers()
                .iter()
                .filter(|(n, _)| n.as_str().starts_with("weft-orig"))
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            let body = within(STEP_DEADLINE, "the body", resp.into_body().collect())
                .await
                .expect("the body")
                .to_bytes();
            let record = parse_record(&body).expect("the app's record");
            let fields = record["headers"].to_string();
            assert!(
                !fields.contains("weft-orig-proto"),
                "{alpn} {what}: {fields}"
            );
            assert!(
                fields.contains(r#"["host","legacy"]"#),
                "{alpn} {what}: {fields}"
            );
            if what == "native" {
                assert!(marks.is_empty(), "{alpn} {what}: {marks:?}");
            } else {
                assert_eq!(marks, ["weft-orig-reason: Recorded Fine"], "{alpn} {what}");
                assert!(fields.contains("Forged"), "the request's own field crosses");
            }
        }
    }
}
