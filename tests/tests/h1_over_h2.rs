//! HTTP/1.1 between two Weft proxies over mTLS travels as streams of one shared
//! HTTP/2 connection, and the app cannot tell: every request below reaches the app
//! (Python's http.server, which answers with the request it read) exactly as it
//! does through a pair with the upgrade off, and the client reads the same answer
//! (status line and reason phrase, fields, framing) byte for byte but the Date.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weft_tests::apps::{HttpApp, TcpApp};
use weft_tests::client::{H2Client, get, raw_exchange, read_until_closed};
use weft_tests::mtls_pair::{MtlsPair, PairOptions, UPGRADE_OFF, UPGRADE_ON, UPGRADE_V1_ONLY};
use weft_tests::proxy::{ServiceDef, WeftProxy};
use weft_tests::record_app::{RecordApp, curl, parse_record};
use weft_tests::{STEP_DEADLINE, within};

/// A pair whose sides have the upgrade on or off.
async fn pair(app: SocketAddr, client_on: bool, server_on: bool) -> MtlsPair {
    let side = |on: bool| if on { UPGRADE_ON } else { UPGRADE_OFF };
    MtlsPair::legacy(app, side(client_on), side(server_on)).await
}

async fn inbound_handshakes(server: &WeftProxy) -> f64 {
    server
        .metric(
            "weft_tls_handshakes_total",
            &[("direction", "inbound"), ("result", "ok")],
        )
        .await
}

/// One HTTP/1 response read off the wire, with what may differ between two runs
/// (Date, how a chunked body was cut into chunks) taken out.
#[derive(Debug, PartialEq)]
struct Answer {
    status_line: String,
    fields: Vec<String>,
    chunked: bool,
    body: Vec<u8>,
    trailers: Vec<String>,
}

fn line(raw: &[u8], at: &mut usize) -> Option<String> {
    let end = raw[*at..].windows(2).position(|w| w == b"\r\n")? + *at;
    let text = String::from_utf8_lossy(&raw[*at..end]).into_owned();
    *at = end + 2;
    Some(text)
}

/// Splits what a connection received into answers. `head_only`: the request was
/// HEAD, so no answer has a body.
fn answers(raw: &[u8], head_only: bool) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let Some(status_line) = line(raw, &mut at) else {
            panic!("a truncated answer: {:?}", String::from_utf8_lossy(raw));
        };
        let mut fields = Vec::new();
        while let Some(l) = line(raw, &mut at) {
            if l.is_empty() {
                break;
            }
            if !l.to_ascii_lowercase().starts_with("date:") {
                fields.push(l);
            }
        }
        let field = |name: &str| {
            fields.iter().find_map(|f| {
                let (n, v) = f.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let interim = status_line
            .split(' ')
            .nth(1)
            .is_some_and(|s| s.starts_with('1'));
        let chunked = field("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let (mut body, mut trailers) = (Vec::new(), Vec::new());
        if interim || head_only {
        } else if chunked {
            loop {
                let size = line(raw, &mut at).expect("a chunk size");
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .expect("a hex chunk size");
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&raw[at..at + size]);
                at += size + 2;
            }
            while let Some(l) = line(raw, &mut at) {
                if l.is_empty() {
                    break;
                }
                trailers.push(l);
            }
        } else if let Some(len) = field("content-length") {
            let len: usize = len.parse().expect("a length");
            body.extend_from_slice(&raw[at..at + len]);
            at += len;
        } else {
            body.extend_from_slice(&raw[at..]);
            at = raw.len();
        }
        out.push(Answer {
            status_line,
            fields,
            chunked,
            body,
            trailers,
        });
    }
    out
}

/// The raw requests of the comparison; each connection's last request closes it.
const CASES: &[(&str, &str)] = &[
    (
        "keep-alive, header order and case, repeated fields, a chunked answer",
        "GET /a?b=1 HTTP/1.1\r\nHost: legacy\r\nX-Mixed-Case: One\r\nx-dup: 1\r\n\
         Accept: */*\r\nx-dup: 2\r\nCookie: a=1; b=2\r\n\r\n\
         GET /chunked HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
    ),
    (
        "a Content-Length body",
        "POST /p HTTP/1.1\r\nHost: legacy\r\nContent-Type: text/plain\r\n\
         Content-Length: 11\r\nConnection: close\r\n\r\nhello world",
    ),
    (
        "a chunked body with trailers",
        "POST /c HTTP/1.1\r\nHost: legacy\r\nTransfer-Encoding: chunked\r\n\
         Trailer: x-sum\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    ),
    (
        "an HTTP/1.0 client",
        "GET /old HTTP/1.0\r\nHost: legacy\r\n\r\n",
    ),
    (
        "an HTTP/1.0 client asking for keep-alive, then a chunked answer it cannot read",
        "GET /k HTTP/1.0\r\nHost: legacy\r\nConnection: keep-alive\r\n\r\n\
         GET /chunked HTTP/1.0\r\nHost: legacy\r\n\r\n",
    ),
    (
        "an app that closes its connection",
        "GET /close HTTP/1.1\r\nHost: legacy\r\n\r\n\
         GET /after HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
    ),
    (
        "an app answering HTTP/1.0",
        "GET /v10 HTTP/1.1\r\nHost: legacy\r\n\r\n\
         GET /after HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
    ),
    (
        "an absolute-form target and a body on DELETE",
        "DELETE http://legacy/abs?x=%20 HTTP/1.1\r\nHost: legacy\r\nContent-Length: 3\r\n\
         Connection: close\r\n\r\nabc",
    ),
    (
        "a Host that is no valid authority (carried: crosses without :authority)",
        "GET /bh HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n",
    ),
    (
        "OPTIONS * (not carried: its own connection)",
        "OPTIONS * HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
    ),
    (
        "CONNECT (not carried: its own connection; this app refuses it)",
        "CONNECT legacy:80 HTTP/1.1\r\nHost: legacy:80\r\nConnection: close\r\n\r\n",
    ),
];

/// Sends `Expect: 100-continue`, waits for the interim answer, then the body.
async fn expect_continue(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"PUT /e HTTP/1.1\r\nHost: legacy\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .expect("write the head");
    let mut got = Vec::new();
    within(STEP_DEADLINE, "100 Continue", async {
        let mut chunk = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before 100 Continue");
            got.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(got.starts_with(b"HTTP/1.1 100 Continue\r\n"), "{got:?}");
    stream.write_all(b"body").await.expect("write the body");
    got.extend(
        read_until_closed(&mut stream, STEP_DEADLINE)
            .await
            .expect("the answer"),
    );
    got
}

/// Every case through `pair`: per case, the answers, each with the app's record.
async fn run_cases(pair: &MtlsPair) -> Vec<Vec<Answer>> {
    let addr = pair.upstream();
    let mut runs = Vec::new();
    for (what, raw) in CASES {
        let got = raw_exchange(addr, raw.as_bytes(), STEP_DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        runs.push(answers(&got, false));
    }
    runs.push(answers(&expect_continue(addr).await, false));
    let head = raw_exchange(
        addr,
        b"HEAD /h HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
        STEP_DEADLINE,
    )
    .await
    .expect("HEAD");
    runs.push(answers(&head, true));
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_crosses_as_http2_streams_and_arrives_as_without_the_upgrade() {
    let app = RecordApp::start().await.expect("start the app");
    let direct = pair(app.addr, false, false).await;
    let upgraded = pair(app.addr, true, true).await;

    let expected = run_cases(&direct).await;
    let got = run_cases(&upgraded).await;

    let names: Vec<&str> = CASES
        .iter()
        .map(|(what, _)| *what)
        .chain(["Expect: 100-continue", "HEAD"])
        .collect();
    for ((what, want), got) in names.iter().zip(&expected).zip(&got) {
        assert_eq!(got, want, "{what}: upgraded (left) vs direct (right)");
    }
    // A side that knows only `weft.h2-orig/1` (an older Weft) with a new one,
    // either way round: they settle on /1, and the app cannot tell either.
    for (client, server, which) in [
        (UPGRADE_ON, UPGRADE_V1_ONLY, "to a /1 peer"),
        (UPGRADE_V1_ONLY, UPGRADE_ON, "from a /1 peer"),
    ] {
        let mixed = MtlsPair::legacy(app.addr, client, server).await;
        for ((what, want), got) in names.iter().zip(&expected).zip(&run_cases(&mixed).await) {
            assert_eq!(
                got, want,
                "{what} {which}: upgraded (left) vs direct (right)"
            );
        }
        let handshakes = inbound_handshakes(&mixed.server).await;
        assert!((2.0..=3.0).contains(&handshakes), "{which}: {handshakes}");
    }
    // What the comparison rests on: the app's own view of a few of them.
    let record = |case: usize, answer: usize| {
        parse_record(&got[case][answer].body).expect("the app's record")
    };
    let first = record(0, 0);
    assert_eq!(first["request_line"], "GET /a?b=1 HTTP/1.1", "{first}");
    let names: Vec<String> = first["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|h| h[0].as_str().unwrap_or("").to_ascii_lowercase())
        .collect();
    assert_eq!(
        names[..6],
        ["host", "x-mixed-case", "x-dup", "x-dup", "accept", "cookie"],
        "{first}"
    );
    assert!(
        !first.to_string().contains("weft-orig"),
        "no mark reaches the app: {first}"
    );
    assert_eq!(got[0][0].status_line, "HTTP/1.1 200 Recorded Fine");
    assert!(got[0][1].chunked, "the app's chunked answer stays chunked");
    let chunked = record(2, 0);
    assert_eq!(chunked["framing"], "chunked", "{chunked}");
    assert_eq!(chunked["body"], "hello world", "{chunked}");
    assert_eq!(
        chunked["trailers"],
        serde_json::json!([["x-sum", "42"]]),
        "{chunked}"
    );
    assert_eq!(got[3][0].status_line, "HTTP/1.0 200 Recorded Fine");
    assert!(
        got[4].iter().all(|a| !a.chunked),
        "an HTTP/1.0 client never gets chunked"
    );
    assert_eq!(got[11].len(), 2, "100 Continue, then the answer");
    let bad_host = record(8, 0);
    assert_eq!(bad_host["request_line"], "GET /bh HTTP/1.1", "{bad_host}");
    assert!(
        bad_host.to_string().contains("bad host"),
        "Host as it was: {bad_host}"
    );
    assert_eq!(got[6][0].status_line, "HTTP/1.0 200 Recorded Fine");

    // All of it on one shared connection with the upgrade, but `OPTIONS *` and
    // CONNECT, which took an HTTP/1.1 connection (one, or one each when the second
    // came before the first went back to the pool).
    let handshakes = inbound_handshakes(&upgraded.server).await;
    assert!((2.0..=3.0).contains(&handshakes), "{handshakes}");
}

/// Starts `n` requests whose bodies are half sent, so all are in flight at once,
/// then finishes them; returns how many answered 200.
async fn concurrent_requests(addr: SocketAddr, n: usize) -> usize {
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /slow HTTP/1.1\r\nHost: legacy\r\nContent-Length: 6\r\nConnection: close\r\n\r\nabc")
            .await
            .expect("write");
        streams.push(s);
    }
    // The proxies are given the time to open what they open for each request;
    // the count below is what they opened, not a timing assertion.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = 0;
    for mut s in streams {
        s.write_all(b"def").await.expect("write the rest");
        let got = read_until_closed(&mut s, STEP_DEADLINE)
            .await
            .expect("answer");
        if got.starts_with(b"HTTP/1.1 200 ") {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http1_requests_share_one_connection_and_mixed_pairs_fall_back() {
    let app = RecordApp::start().await.expect("start the app");
    for (client, server, shared) in [
        (UPGRADE_ON, UPGRADE_ON, true),
        (UPGRADE_ON, UPGRADE_V1_ONLY, true),
        (UPGRADE_V1_ONLY, UPGRADE_ON, true),
        (UPGRADE_ON, UPGRADE_OFF, false),
        (UPGRADE_OFF, UPGRADE_ON, false),
    ] {
        let pair = MtlsPair::legacy(app.addr, client, server).await;
        let ok = concurrent_requests(pair.upstream(), 4).await;
        let side = |s: &str| match s {
            UPGRADE_ON => "on",
            UPGRADE_V1_ONLY => "/1 only",
            _ => "off",
        };
        let what = format!("client {}, server {}", side(client), side(server));
        assert_eq!(ok, 4, "{what}: every request served");
        let handshakes = inbound_handshakes(&pair.server).await;
        if shared {
            assert_eq!(handshakes, 1.0, "{what}: one shared connection");
        } else {
            // Four HTTP/1.1 connections; with the client's upgrade on, the one that
            // asked for it is one of them, not a fifth.
            assert_eq!(handshakes, 4.0, "{what}: one connection per request");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_allowed_connection_to_a_peer_without_the_upgrade_serves_http1() {
    let app = RecordApp::start().await.expect("start the app");
    let options = PairOptions {
        server_identity: UPGRADE_OFF.to_string(),
        ..PairOptions::default()
    };
    let service = ServiceDef::new("legacy").policy("{circuit_breaker: {max_connections: 1}}");
    let pair = MtlsPair::start(service, app.addr, options)
        .await
        .expect("start the pair");
    let url = format!("http://{}/one", pair.upstream());
    for n in 0..3 {
        let out = curl(&["--write-out", "\n%{http_code}", &url])
            .await
            .expect("curl ran");
        let text = String::from_utf8_lossy(&out);
        assert!(text.ends_with("\n200"), "request {n}: {text}");
    }
    assert_eq!(
        inbound_handshakes(&pair.server).await,
        1.0,
        "the connection that asked for the upgrade carried every request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_python_http_client_get_the_same_answers_with_the_upgrade() {
    let app = RecordApp::start().await.expect("start the app");
    let direct = pair(app.addr, false, false).await;
    let upgraded = pair(app.addr, true, true).await;
    let script = "import http.client, json, sys\n\
        c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=20)\n\
        out = []\n\
        for method, path, body in [('GET', '/x', None), ('POST', '/y', b'data'), ('GET', '/chunked', None)]:\n\
        \x20   c.request(method, path, body=body, headers={'Host': 'legacy', 'X-Client': 'py'})\n\
        \x20   r = c.getresponse()\n\
        \x20   out.append([r.version, r.status, r.reason, r.read().decode()])\n\
        print(json.dumps(out))\n";
    let mut outputs = Vec::new();
    for pair in [&direct, &upgraded] {
        let addr = pair.upstream();
        let py = within(
            STEP_DEADLINE,
            "python http.client",
            tokio::process::Command::new("python3")
                .args([
                    "-c",
                    script,
                    &addr.ip().to_string(),
                    &addr.port().to_string(),
                ])
                .output(),
        )
        .await
        .expect("run python3");
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let url = format!("http://{addr}/curl?q=1");
        let curled = curl(&[
            "--http1.1",
            "-i",
            "-H",
            "Host: legacy",
            "--data-binary",
            "from curl",
            &url,
        ])
        .await
        .expect("curl");
        let curled = answers(&curled, false);
        let curl_1_0 = curl(&["--http1.0", "-i", "-H", "Host: legacy", &url])
            .await
            .expect("curl");
        outputs.push((py.stdout, curled, answers(&curl_1_0, false)));
    }
    assert_eq!(outputs[1], outputs[0], "upgraded (left) vs direct (right)");
    let py: serde_json::Value = serde_json::from_slice(&outputs[1].0).expect("JSON");
    assert_eq!(py[0][2], "Recorded Fine", "{py}");
    assert_eq!(py[0][0], 11, "{py}");
    assert_eq!(outputs[1].2[0].status_line, "HTTP/1.0 200 Recorded Fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_still_crosses_an_upgrading_pair() {
    let app = TcpApp::serve(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("start the app");
    let pair = pair(app.addr, true, true).await;
    let stream = TcpStream::connect(pair.upstream()).await.expect("connect");
    let (mut ws, resp) = within(
        STEP_DEADLINE,
        "websocket handshake",
        tokio_tungstenite::client_async("ws://legacy/echo", stream),
    )
    .await
    .expect("handshake");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("over its own connection"))
        .await
        .expect("send");
    let echoed = within(STEP_DEADLINE, "echo", ws.next())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed, Message::text("over its own connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_does_not_stall_other_requests_on_the_shared_connection() {
    let app = HttpApp::start("big").await.expect("start the app");
    let pair = pair(app.addr, true, true).await;
    let addr = pair.upstream();
    // 16 MiB the client never reads: more than a stream's window and the socket
    // buffers, so this stream stops, holding its window of the connection's.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(
            b"POST /upload?reply=16777216 HTTP/1.1\r\nHost: legacy\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = [0u8; 12];
    within(
        STEP_DEADLINE,
        "the stalled answer starts",
        stalled.read_exact(&mut head),
    )
    .await
    .expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
    for i in 0..5 {
        let got = raw_exchange(
            addr,
            b"GET /hello HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n",
            STEP_DEADLINE,
        )
        .await
        .unwrap_or_else(|e| panic!("request {i} beside the stalled one: {e}"));
        assert!(got.starts_with(b"HTTP/1.1 200 "), "{i}");
    }
    assert_eq!(
        inbound_handshakes(&pair.server).await,
        1.0,
        "all on one connection"
    );
    drop(stalled);
}

/// A client's malformed chunked body crossing the upgraded pair is still the
/// client's own 400: the body fails while it streams into the shared HTTP/2
/// connection, and that reset must not read as the server proxy's (the endpoint's)
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_across_the_upgraded_pair_is_the_clients_400() {
    let app = HttpApp::start("legacy").await.expect("app");
    let pair = pair(app.addr, true, true).await;
    let mut request =
        b"POST /upload HTTP/1.1\r\nhost: legacy\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(b"5g\r\nhello\r\n0\r\n\r\n");
    let raw = raw_exchange(pair.upstream(), &request, STEP_DEADLINE)
        .await
        .expect("an answer");
    let head = String::from_utf8_lossy(&raw);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let counted = |reason: &'static str| {
        let client = &pair.client;
        async move {
            client
                .metrics()
                .await
                .expect("/metrics")
                .sum("weft_proxy_errors_total", &[("reason", reason)])
        }
    };
    assert_eq!(counted("bad-request-body").await, 1.0);
    assert_eq!(counted("upstream-reset").await, 0.0);
}

/// The Date an HTTP/1 app writes reaches the client once. A Date of this second
/// does not cross the pair's HTTP/2 hop: the client's proxy writes its own, of the
/// same second, after the app's other fields, which keep their order. Any other
/// Date (a cached answer's, say) crosses as the app wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_date_reaches_the_client_once_and_a_stale_one_unchanged() {
    const STALE: &str = "Tue, 01 Dec 2026 10:00:00 GMT";
    let app = TcpApp::serve(|mut stream| async move {
        loop {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let date = if head.starts_with(b"GET /stale ") {
                STALE.to_string()
            } else {
                httpdate::fmt_http_date(std::time::SystemTime::now())
            };
            let answer =
                format!("HTTP/1.1 200 OK\r\nServer: app\r\nDate: {date}\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok");
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("start the app");
    let pair = pair(app.addr, true, true).await;
    for path in ["/now", "/stale"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: legacy\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(pair.upstream(), request.as_bytes(), STEP_DEADLINE)
            .await
            .expect("an answer");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let fields: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let dates: Vec<&str> = fields
            .iter()
            .filter(|(n, _)| n == "date")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(dates.len(), 1, "one Date for {path}: {text}");
        assert!(httpdate::parse_http_date(dates[0]).is_ok(), "{text}");
        let others: Vec<&str> = fields
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != "date" && *n != "connection")
            .collect();
        assert_eq!(others, ["server", "x-a", "content-length"], "{text}");
        if path == "/stale" {
            assert_eq!(dates[0], STALE, "{text}");
        }
    }
    // Both crossed on one shared HTTP/2 connection, not on HTTP/1.1 of their own.
    assert_eq!(inbound_handshakes(&pair.server).await, 1.0);
}

/// An h2c client may name its target by Host alone, without :authority (RFC 9113
/// §8.3.1). Between two proxies on `weft.h2-orig/2` a request without :authority
/// is a carried HTTP/1 one, so the calling proxy names the target by that Host,
/// and the app gets the HTTP/2 request it was sent; without a Host it is the
/// client's 400, not the 502 of a request h2 refused to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_without_authority_crosses_as_http2() {
    let app = HttpApp::start_h2c_only("legacy").await.expect("app");
    let pair = pair(app.addr, true, true).await;
    let mut client = H2Client::connect(pair.upstream()).await.expect("connect");
    for n in 0..2 {
        let mut req = get("/headers");
        // Not HTTP/2: so h2 sends a relative target without :authority.
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("legacy:8080"),
        );
        let reply = client.send(req).await.expect("an answer");
        assert_eq!(reply.status, 200, "request {n}: {}", reply.text());
        assert_eq!(reply.header("x-version"), Some("HTTP/2.0"), "request {n}");
        assert_eq!(reply.header("x-host"), Some("legacy:8080"), "request {n}");
        assert!(!reply.text().contains("weft-orig"), "{}", reply.text());
    }
    // Nothing to name the target by: the client's fault, told so.
    let mut hostless = get("/headers");
    *hostless.version_mut() = http::Version::HTTP_11;
    let reply = client.send(hostless).await.expect("an answer");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(app.requests(), 2);
}
