//! HTTP/1.1 and HTTP/2 (h2c) through the data path: client proxy (outbound or an
//! upstream listener) → server proxy inbound → app.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use weft_tests::apps::{AbortOnDrop, AppBody, HttpApp, full};

use weft_tests::client::{self, H1Client, H2Client};
use weft_tests::data::{checksum, pattern};
use weft_tests::hops::Hops;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, within};

const MIB: usize = 1024 * 1024;

/// A proxy whose one service, `name`, is the app at `app`, and a raw TCP client
/// connected to its outbound.
async fn proxy_with_raw_client(
    name: &str,
    app: std::net::SocketAddr,
) -> (WeftProxy, tokio::net::TcpStream) {
    let service = ServiceDef::new(name).endpoint(app);
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let client = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .expect("connect");
    (proxy, client)
}

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
    // The payload first: a client that connects and then says nothing for the
    // proxy's detect_timeout (1 s) is taken for a server-first protocol, which the
    // http_proxy port has no destination for, and is closed. Making 8 MiB takes
    // that long in a debug build on a busy machine.
    let upload = pattern(8 * MIB, 3);
    let sum = checksum(&upload);
    let expected = pattern(8 * MIB, 7);
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

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
    assert!(reply.body == expected, "response body corrupted");
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

/// A body fed chunk by chunk through the returned sender.
fn channel_body() -> (mpsc::Sender<Bytes>, BoxBody<Bytes, Infallible>) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let frames = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    (tx, StreamBody::new(frames).boxed())
}

/// An app for proving that bodies stream: `/down` sends "first", then "second" only
/// once `release` is notified; `/up` reports the first request chunk on `first_up`
/// before reading the rest.
async fn streaming_app(release: Arc<Notify>, first_up: mpsc::Sender<Bytes>) -> HttpApp {
    HttpApp::with_handler(
        "streamer",
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let release = release.clone();
            let first_up = first_up.clone();
            Box::pin(async move {
                match req.uri().path() {
                    "/down" => {
                        let (tx, body) = channel_body();
                        tokio::spawn(async move {
                            let _ = tx.send(Bytes::from_static(b"first")).await;
                            release.notified().await;
                            let _ = tx.send(Bytes::from_static(b"second")).await;
                        });
                        Response::new(body)
                    }
                    _ => {
                        let mut body = req.into_body();
                        let mut total = 0;
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                if total == 0 {
                                    let _ = first_up.send(data.clone()).await;
                                }
                                total += data.len();
                            }
                        }
                        Response::new(full(total.to_string()))
                    }
                }
            }) as weft_tests::apps::BoxFuture<Response<AppBody>>
        }),
    )
    .await
    .expect("start app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_bodies_stream_through_without_buffering() {
    let release = Arc::new(Notify::new());
    let (first_up_tx, mut first_up) = mpsc::channel(1);
    let app = streaming_app(release.clone(), first_up_tx).await;
    let hops = Hops::start(ServiceDef::new("stream"), app.addr)
        .await
        .expect("start proxies");
    let stream = tokio::net::TcpStream::connect(hops.outbound())
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, BoxBody<Bytes, Infallible>>(
        TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));

    // Response: the first chunk arrives while the app still holds back the rest. A
    // proxy that buffered whole responses would stall here until the deadline.
    let req = Request::get("http://stream/down")
        .body(full(Bytes::new()))
        .expect("request");
    let resp = within(STEP_DEADLINE, "response head", tx.send_request(req))
        .await
        .expect("response");
    let mut body = resp.into_body();
    let first = within(STEP_DEADLINE, "first response chunk", body.frame())
        .await
        .expect("a frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"first");
    release.notify_one();
    let rest = within(STEP_DEADLINE, "rest of the response", body.collect())
        .await
        .expect("ok")
        .to_bytes();
    assert_eq!(&rest[..], b"second");

    // Request: the app sees the first chunk before the client has sent the rest.
    let (chunks, req_body) = channel_body();
    let req = Request::post("http://stream/up")
        .body(req_body)
        .expect("request");
    within(STEP_DEADLINE, "connection ready", tx.ready())
        .await
        .expect("ready");
    let pending = tokio::spawn(tx.send_request(req));
    chunks
        .send(Bytes::from_static(b"hello"))
        .await
        .expect("send chunk");
    let seen = within(
        STEP_DEADLINE,
        "first request chunk at the app",
        first_up.recv(),
    )
    .await
    .expect("the app saw a chunk");
    assert_eq!(&seen[..], b"hello");
    chunks
        .send(Bytes::from_static(b" world"))
        .await
        .expect("send chunk");
    drop(chunks);
    let resp = within(STEP_DEADLINE, "upload answer", pending)
        .await
        .expect("join")
        .expect("response");
    let total = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&total[..], b"11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_kept_alive_connections_costs_no_request() {
    // Answers one request per connection, then closes it without saying so: every
    // pooled connection the proxy keeps goes stale.
    let app = weft_tests::apps::TcpApp::serve(|mut stream| async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    })
    .await
    .expect("start app");
    let hops = Hops::start(ServiceDef::new("oneshot"), app.addr)
        .await
        .expect("start proxies");
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

    for i in 0..30 {
        let reply = c
            .send(client::get("http://oneshot/"))
            .await
            .expect("answer");
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i}: {:?}",
            reply.header("weft-error")
        );
        assert_eq!(&reply.body[..], b"ok");
    }
    assert_eq!(app.accepted(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_in_responses_do_not_reach_the_client() {
    let app = HttpApp::with_handler(
        "hop",
        Arc::new(|_req: Request<hyper::body::Incoming>| {
            Box::pin(async {
                Response::builder()
                    .header("connection", "x-bar")
                    .header("x-bar", "secret")
                    .header("x-end-to-end", "kept")
                    .body(full("ok"))
                    .expect("response")
            }) as weft_tests::apps::BoxFuture<Response<AppBody>>
        }),
    )
    .await
    .expect("start app");
    let hops = Hops::start(ServiceDef::new("hop"), app.addr)
        .await
        .expect("start proxies");

    // Control: the app really sends them.
    let mut direct = H1Client::connect(app.addr).await.expect("connect");
    let reply = direct
        .send(client::request("GET", "/", &[("host", "hop")], ""))
        .await
        .expect("answer");
    assert_eq!(reply.header("x-bar"), Some("secret"));

    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");
    let reply = c.send(client::get("http://hop/")).await.expect("answer");

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-end-to-end"), Some("kept"));
    assert_eq!(reply.header("x-bar"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_client_identity_header_never_reaches_the_app() {
    let (_app, hops) = orders().await;
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");

    let req = client::request(
        "GET",
        "http://orders/headers",
        &[("weft-client-id", "spiffe://evil/ns/x/sa/admin")],
        "",
    );
    let reply = c.send(req).await.expect("answer");

    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.text().contains("weft-client-id"),
        "the app saw:\n{}",
        reply.text()
    );
}

/// An app that answers one request per connection, as a server with a short
/// keep-alive timeout does: on odd connections it then reads the next request and
/// closes without answering it (the race of an idle close), on even ones it closes
/// right after its answer. Counts connections and request heads.
async fn closing_app() -> (
    std::net::SocketAddr,
    Arc<std::sync::atomic::AtomicUsize>,
    Arc<std::sync::atomic::AtomicUsize>,
    AbortOnDrop,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_head(s: &mut tokio::net::TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok() != Some(1) {
                return false;
            }
            head.push(byte[0]);
        }
        true
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(AtomicUsize::new(0));
    let (c, h) = (conns.clone(), heads.clone());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let h = h.clone();
            tokio::spawn(async move {
                if !read_head(&mut s).await {
                    return;
                }
                h.fetch_add(1, Ordering::SeqCst);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if s.write_all(answer).await.is_err() || n % 2 == 0 {
                    return;
                }
                if read_head(&mut s).await {
                    h.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, conns, heads, AbortOnDrop(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_closing_kept_alive_connections_loses_only_a_request_unsafe_to_repeat() {
    use std::sync::atomic::Ordering;
    let (app, conns, heads, _app_task) = closing_app().await;
    let mut hops = Hops::start(ServiceDef::new("closer"), app)
        .await
        .expect("start proxies");
    let mut c = H1Client::connect(hops.outbound()).await.expect("connect");
    let post = || client::request("POST", "http://closer/p", &[], "x");

    // 1: a new connection. 2: the kept connection takes the GET and closes
    // unanswered, so it goes again on a new one.
    for path in ["/a", "/b"] {
        let reply = c
            .send(client::get(&format!("http://closer{path}")))
            .await
            .expect("request");
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
    }
    // That connection closed after its answer: the next request must not pick it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let reply = c.send(post()).await.expect("request");
    assert_eq!(reply.status, StatusCode::OK, "POST on a fresh connection");
    // A POST the app may have seen before it closed is not sent twice.
    let reply = c.send(post()).await.expect("request");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.header("weft-error"), Some("upstream-reset"));

    assert_eq!(conns.load(Ordering::SeqCst), 3);
    assert_eq!(heads.load(Ordering::SeqCst), 5);
    hops.stop().await.expect("both proxies drain and exit 0");
}

/// hyper's HTTP/1 server watches for the client's EOF while a request is in
/// flight (its `half_close` off): a client that hangs up before its answer has
/// its request cancelled, so the upstream connection is closed at once rather
/// than left to the upstream's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_request_cancels_the_upstream_request() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = upstream.local_addr().expect("addr");
    let (_proxy, mut client) = proxy_with_raw_client("stall", addr).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: stall\r\n\r\n")
        .await
        .expect("send the request");
    // The upstream takes the request and never answers.
    let (mut conn, _) = within(
        STEP_DEADLINE,
        "the request reaches the upstream",
        upstream.accept(),
    )
    .await
    .expect("accept");
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within(STEP_DEADLINE, "the request head", conn.read(&mut chunk))
            .await
            .expect("read the head");
        assert!(n > 0, "the proxy closed before sending the whole head");
        head.extend_from_slice(&chunk[..n]);
    }
    assert!(head.starts_with(b"GET /slow HTTP/1.1\r\n"));

    drop(client);
    let after = within(
        STEP_DEADLINE,
        "the proxy lets go of the upstream request",
        conn.read(&mut chunk),
    )
    .await;
    assert!(
        matches!(after, Ok(0) | Err(_)),
        "the upstream connection stays open: {after:?}"
    );
}

/// Reads one HTTP/1.1 response framed by content-length from `stream`, with `buf`
/// holding what was read past the previous one; returns its status line and body.
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = within(STEP_DEADLINE, "a response head", stream.read(&mut chunk))
            .await
            .expect("read a response head");
        assert!(n > 0, "closed before a whole response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while buf.len() < head_end + len {
        let n = within(STEP_DEADLINE, "a response body", stream.read(&mut chunk))
            .await
            .expect("read a response body");
        assert!(n > 0, "closed before a whole response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_shuts_down_its_sending_side_after_a_request_gets_no_answer() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // An upstream that takes requests and never answers. Whether the request
    // reaches it depends on when the proxy sees the client's FIN.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = upstream.local_addr().expect("addr");
    let _held = AbortOnDrop(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = upstream.accept().await {
            held.push(conn);
        }
    }));
    let (_proxy, mut client) = proxy_with_raw_client("stall", addr).await;
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: stall\r\n\r\n")
        .await
        .expect("send the request");
    // As `nc -N` does: a complete request, then FIN. The proxy takes a FIN
    // mid-request for a client gone (as hyper's server does unless `half_close`):
    // the request ends unanswered and the connection closes.
    client.shutdown().await.expect("shut down the sending side");
    let mut answer = Vec::new();
    within(
        STEP_DEADLINE,
        "the proxy closes the connection",
        client.read_to_end(&mut answer),
    )
    .await
    .expect("read to the end");
    assert!(
        answer.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_after_sending_its_body_cancels_the_upstream_request() {
    use tokio::io::AsyncWriteExt as _;

    // Far more than one read of the socket.
    const BODY: usize = 256 * 1024;
    // `/hold` reads the whole body, says so, and never answers; its future's drop
    // (the upstream request cancelled) is reported too.
    let (read_tx, mut read_rx) = mpsc::channel::<usize>(4);
    let (dropped_tx, mut dropped_rx) = mpsc::channel::<()>(4);
    struct OnDrop(mpsc::Sender<()>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let _ = self.0.try_send(());
        }
    }
    let app = HttpApp::with_handler(
        "uploads",
        Arc::new(move |req: Request<hyper::body::Incoming>| {
            let (read_tx, dropped_tx) = (read_tx.clone(), dropped_tx.clone());
            Box::pin(async move {
                let hold = req.uri().path() == "/hold";
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let len = body.map_or(0, |b| b.len());
                if hold {
                    let _dropped = OnDrop(dropped_tx);
                    let _ = read_tx.send(len).await;
                    std::future::pending::<()>().await;
                }
                Response::new(full(len.to_string()))
            }) as weft_tests::apps::BoxFuture<Response<AppBody>>
        }),
    )
    .await
    .expect("start app");
    let (_proxy, mut client) = proxy_with_raw_client("uploads", app.addr).await;
    let body = pattern(BODY, 5);
    let head = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nhost: uploads\r\ncontent-length: {BODY}\r\n\r\n")
    };
    // First an upload answered on the kept-alive connection.
    client
        .write_all(head("/upload").as_bytes())
        .await
        .expect("send a head");
    client.write_all(&body).await.expect("send a body");
    let mut buf = Vec::new();
    let (status, answer) = read_response(&mut client, &mut buf).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(answer, BODY.to_string().as_bytes());

    // Then one whose answer never comes: the client leaves once it is all sent.
    client
        .write_all(head("/hold").as_bytes())
        .await
        .expect("send a head");
    client.write_all(&body).await.expect("send a body");
    let read = within(STEP_DEADLINE, "the app reads the body", read_rx.recv())
        .await
        .expect("the app's report");
    assert_eq!(read, BODY);
    drop(client);
    within(
        STEP_DEADLINE,
        "the proxy cancels the upstream request",
        dropped_rx.recv(),
    )
    .await
    .expect("the app's request dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_while_one_is_in_flight() {
    use tokio::io::AsyncWriteExt as _;

    // `/one` is answered only once released; every other path at once.
    let release = Arc::new(Notify::new());
    let (one_tx, mut one_rx) = mpsc::channel::<()>(4);
    let app = HttpApp::with_handler(
        "pipeline",
        Arc::new({
            let release = release.clone();
            move |req: Request<hyper::body::Incoming>| {
                let (release, one_tx) = (release.clone(), one_tx.clone());
                Box::pin(async move {
                    let path = req.uri().path().to_string();
                    if path == "/one" {
                        let _ = one_tx.send(()).await;
                        release.notified().await;
                    }
                    Response::new(full(path))
                }) as weft_tests::apps::BoxFuture<Response<AppBody>>
            }
        }),
    )
    .await
    .expect("start app");
    let (_proxy, mut client) = proxy_with_raw_client("pipeline", app.addr).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: pipeline\r\n\r\n");
    // Two at once: the second waits in the proxy's read buffer.
    client
        .write_all(format!("{}{}", get("/one"), get("/two")).as_bytes())
        .await
        .expect("send two requests");
    within(
        STEP_DEADLINE,
        "the first request reaches the app",
        one_rx.recv(),
    )
    .await
    .expect("the app's report");
    // A third while the first is in flight: it waits on the socket, which the
    // proxy checks for the client leaving. The pause lets the proxy find it there
    // before the first answer; the outcome must not depend on it.
    client
        .write_all(get("/three").as_bytes())
        .await
        .expect("send a third request");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    release.notify_one();

    let mut buf = Vec::new();
    for path in ["/one", "/two", "/three"] {
        let (status, body) = read_response(&mut client, &mut buf).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        assert_eq!(body, path.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_while_its_answer_streams_cancels_the_upstream_response() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // `/stream` answers "first" and then nothing, until its body is dropped
    // (the upstream response cancelled), which it reports.
    let (dropped_tx, mut dropped_rx) = mpsc::channel::<()>(4);
    let app = HttpApp::with_handler(
        "streams",
        Arc::new(move |_req: Request<hyper::body::Incoming>| {
            let dropped_tx = dropped_tx.clone();
            Box::pin(async move {
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"first")).await;
                    tx.closed().await;
                    let _ = dropped_tx.send(()).await;
                });
                Response::new(body)
            }) as weft_tests::apps::BoxFuture<Response<AppBody>>
        }),
    )
    .await
    .expect("start app");
    let (_proxy, mut client) = proxy_with_raw_client("streams", app.addr).await;
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: streams\r\n\r\n")
        .await
        .expect("send the request");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !seen.windows(5).any(|w| w == b"first") {
        let n = within(
            STEP_DEADLINE,
            "the answer's first chunk",
            client.read(&mut chunk),
        )
        .await
        .expect("read the answer");
        assert!(n > 0, "closed before the first chunk: {seen:?}");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{seen:?}");

    drop(client);
    within(
        STEP_DEADLINE,
        "the proxy cancels the upstream response",
        dropped_rx.recv(),
    )
    .await
    .expect("the app's body dropped");
}
