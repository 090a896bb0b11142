use super::response::MAX_HEAD;
use super::{H1Body, H1Conn, SendError};
use crate::http::body::BodyError;
use crate::http::pool::{Key, Pool};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Chan = StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// A server that runs `script` on each connection it accepts, counting them.
pub(super) async fn server<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(stream));
        }
    });
    (addr, accepted)
}

/// Reads up to and including the blank line that ends a head; empty at EOF.
pub(super) async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return Vec::new(),
        }
    }
    head
}

fn request<B>(method: Method, body: B) -> Box<Request<B>> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = http::Uri::from_static("/x?y=1");
    req.headers_mut()
        .insert(http::header::HOST, HeaderValue::from_static("svc"));
    Box::new(req)
}

pub(super) async fn checkout(pool: &Pool, addr: SocketAddr) -> H1Conn {
    pool.h1(
        &Key::plain(addr),
        Duration::from_secs(5),
        None,
        crate::clock::now_nanos(),
    )
    .await
    .map_err(|_| "connect")
    .expect("connection")
}

async fn send<B>(conn: H1Conn, req: Box<Request<B>>) -> Response<Box<H1Body<B>>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    match conn.send(req, false, false).await {
        Ok(resp) => resp,
        Err(SendError::Stale(_)) => panic!("stale"),
        Err(SendError::Failed) => panic!("failed"),
        Err(SendError::Client(e)) => panic!("client body: {e:?}"),
    }
}

/// A server that answers the first request of each connection with `answer`.
async fn answering(answer: &'static [u8]) -> SocketAddr {
    let (addr, _) = server(move |mut s| async move {
        read_head(&mut s).await;
        let _ = s.write_all(answer).await;
    })
    .await;
    addr
}

/// A server that answers the requests of each connection with `answers`, one each,
/// in turn.
async fn answering_in_turn<const N: usize>(
    answers: [&'static [u8]; N],
) -> (SocketAddr, Arc<AtomicUsize>) {
    server(move |mut s| async move {
        for answer in answers {
            if read_head(&mut s).await.is_empty() {
                return;
            }
            let _ = s.write_all(answer).await;
        }
    })
    .await
}

/// A GET on a connection from `pool`, which takes it back at the body's end.
async fn get(pool: &Pool, addr: SocketAddr) -> Response<Box<H1Body<Empty<Bytes>>>> {
    let mut resp = send(
        checkout(pool, addr).await,
        request(Method::GET, Empty::new()),
    )
    .await;
    resp.body_mut()
        .give_back(pool.giveback(Key::plain(addr), None));
    resp
}

#[tokio::test]
async fn every_response_framing_is_read_whole_on_one_kept_alive_connection() {
    let answers: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;ext=1\r\nhe\r\n3\r\nllo\r\n0\r\nx-t: 7\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 5\r\n\r\n",
    ];
    let (addr, accepted) = answering_in_turn(answers).await;
    let pool = Pool::new(Duration::from_secs(60));
    let key = Key::plain(addr);
    for (i, method) in [Method::GET, Method::GET, Method::DELETE, Method::HEAD]
        .into_iter()
        .enumerate()
    {
        let conn = checkout(&pool, addr).await;
        let mut resp = send(conn, request(method, Empty::<Bytes>::new())).await;
        resp.body_mut().give_back(pool.giveback(key.clone(), None));
        let status = resp.status();
        let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().cloned();
        let body = resp.into_body().collect().await.expect("body");
        let trailers = body.trailers().cloned();
        let data = body.to_bytes();
        match i {
            0 => assert_eq!((status, &data[..]), (StatusCode::OK, &b"hello"[..])),
            1 => {
                assert_eq!(&data[..], b"hello");
                let t = trailers.expect("trailers");
                assert_eq!(t.get("x-t").map(|v| v.as_bytes()), Some(&b"7"[..]));
            }
            2 => assert_eq!((status, data.len()), (StatusCode::NO_CONTENT, 0)),
            _ => {
                assert_eq!(data.len(), 0, "a HEAD answer has no body");
                assert_eq!(
                    reason.map(|r| r.as_bytes().to_vec()),
                    Some(b"Fine Thanks".to_vec())
                );
            }
        }
        assert_eq!(
            pool.idle_h1(addr),
            1,
            "answer {i} left the connection reusable"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_content_length_beside_transfer_encoding_is_dropped_and_the_chunks_read() {
    let addr = answering(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let resp = get(&pool, addr).await;
    assert!(!resp.headers().contains_key(http::header::CONTENT_LENGTH));
    assert_eq!(resp.headers()["x-a"], "1");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
    assert_eq!(
        pool.idle_h1(addr),
        0,
        "a connection whose framing conflicted is not kept"
    );
}

#[tokio::test]
async fn field_names_read_again_on_a_kept_connection_are_the_ones_sent() {
    // Names repeat by position from one answer to the next, then change: each
    // head's names must be its own, whatever the last head's were.
    let answers: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\nServer: s\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 2\r\nServer: s\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nX-B: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-B: 4\r\nServer: s\r\nX-Ab: 5\r\n\r\n",
    ];
    let (addr, accepted) = answering_in_turn(answers).await;
    let pool = Pool::new(Duration::from_secs(60));
    let expected: [&[&str]; 4] = [
        &["content-length", "x-a", "server"],
        &["content-length", "x-a", "server"],
        &["content-length", "x-b"],
        &["content-length", "x-b", "server", "x-ab"],
    ];
    for (i, names) in expected.into_iter().enumerate() {
        let resp = get(&pool, addr).await;
        let got: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(got, names, "answer {i}");
        let value = resp.headers().get(names[1]).map(|v| v.as_bytes().to_vec());
        assert_eq!(value, Some((i + 1).to_string().into_bytes()), "answer {i}");
        resp.into_body().collect().await.expect("body");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_idle_connection_the_app_closed_is_not_handed_out_again() {
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let closed_tx = Arc::new(std::sync::Mutex::new(Some(closed_tx)));
    let (addr, accepted) = server(move |mut s| {
        let closed_tx = closed_tx.clone();
        async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            drop(s);
            if let Some(tx) = crate::sync::lock(&closed_tx).take() {
                let _ = tx.send(());
            }
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    get(&pool, addr)
        .await
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(pool.idle_h1(addr), 1);
    tokio::time::timeout(Duration::from_secs(20), closed)
        .await
        .expect("closed in time")
        .expect("closed");
    // Lets the runtime see the close on loopback before the checkout asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    get(&pool, addr)
        .await
        .into_body()
        .collect()
        .await
        .expect("body");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new connection served it"
    );
}

#[tokio::test]
async fn a_close_delimited_body_ends_at_eof_and_its_connection_is_not_kept() {
    let addr = answering(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    let pool = Pool::new(Duration::from_secs(60));
    let data = get(&pool, addr)
        .await
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&data[..], b"until the end");
    assert_eq!(pool.idle_h1(addr), 0);
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked_with_its_trailers() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let (addr, _) = server(move |mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut got = read_head(&mut s).await;
            let mut byte = [0u8; 1];
            while !got.ends_with(b"0\r\nx-t: 1\r\n\r\n") && s.read(&mut byte).await.ok() == Some(1)
            {
                got.push(byte[0]);
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = seen_tx.send(got).await;
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body: Chan = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let feed = tokio::spawn(async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-t", HeaderValue::from_static("1"));
        for frame in [
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cde")),
            Frame::trailers(trailers),
        ] {
            let _ = tx.send(Ok(frame)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let resp = send(checkout(&pool, addr).await, request(Method::POST, body)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let got = String::from_utf8(seen_rx.recv().await.expect("seen")).expect("utf8");
    assert!(
        got.starts_with("POST /x?y=1 HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n"),
        "{got}"
    );
    assert!(
        got.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\nx-t: 1\r\n\r\n"),
        "{got}"
    );
    feed.await.expect("feed");
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_comes_back_and_the_connection_is_dropped() {
    let (addr, _) = server(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
            .await;
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
        .await
        .expect("queue");
    let body: Chan = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = tokio::time::timeout(
        Duration::from_secs(5),
        send(checkout(&pool, addr).await, request(Method::PUT, body)),
    )
    .await
    .expect("the answer does not wait for the upload");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    resp.body_mut()
        .give_back(pool.giveback(Key::plain(addr), None));
    let data = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&data[..], b"big!");
    assert_eq!(
        pool.idle_h1(addr),
        0,
        "half a request is still on that connection"
    );
    drop(tx);
}

#[tokio::test]
async fn a_reused_connection_closed_unanswered_gives_back_only_a_repeatable_request() {
    // Answers the first request, then reads the second and closes unanswered.
    let (addr, _) = server(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
        read_head(&mut s).await;
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    for (method, repeatable) in [(Method::GET, true), (Method::POST, false)] {
        let mut resp = send(
            checkout(&pool, addr).await,
            request(Method::GET, Full::new(Bytes::new())),
        )
        .await;
        resp.body_mut()
            .give_back(pool.giveback(Key::plain(addr), None));
        assert_eq!(pool.idle_h1(addr), 1);
        let conn = checkout(&pool, addr).await;
        let body = if method == Method::POST {
            Full::new(Bytes::from_static(b"once"))
        } else {
            Full::new(Bytes::new())
        };
        match conn.send(request(method.clone(), body), false, false).await {
            Err(SendError::Stale(req)) => {
                assert!(repeatable, "{method} came back to be sent again");
                assert_eq!(req.method(), method);
            }
            Err(SendError::Failed) => assert!(!repeatable, "{method} was not given back"),
            Err(SendError::Client(e)) => panic!("client body: {e:?}"),
            Ok(_) => panic!("no answer was sent"),
        }
    }
}

#[tokio::test]
async fn malformed_or_oversized_heads_fail_the_request() {
    let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let answers = Arc::new(vec![
        b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec(),
        big.into_bytes(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nab".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n\
          2\r\nab\r\n0\r\n\r\n"
            .to_vec(),
    ]);
    let next = Arc::new(AtomicUsize::new(0));
    let (addr, _) = server(move |mut s| {
        let answer = answers[next.fetch_add(1, Ordering::SeqCst)].clone();
        async move {
            read_head(&mut s).await;
            let _ = s.write_all(&answer).await;
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    for case in [
        "bad status",
        "head too large",
        "two lengths",
        "unasked 101",
        "a coding other than chunked",
        "another coding before chunked",
        "chunked twice",
    ] {
        let conn = checkout(&pool, addr).await;
        let res = conn
            .send(request(Method::GET, Empty::<Bytes>::new()), false, false)
            .await;
        assert!(matches!(res, Err(SendError::Failed)), "{case}");
    }
}

/// Found by the h1_response fuzz target: a reason phrase with obs-text (bytes
/// over 0x7f) made the head parser take httparse's static "" for a slice of the
/// head and panic (the whole proxy, with panic = abort). It is read as a response
/// with an empty reason phrase, as hyper reads it.
#[tokio::test]
async fn a_reason_phrase_that_is_not_utf8_is_read_as_empty_not_a_panic() {
    let addr = answering(b"HTTP/1.1 200 OK\x8a\x80\r\ncontent-length: 2\r\n\r\nok").await;
    let pool = Pool::new(Duration::from_secs(60));
    let resp = get(&pool, addr).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b""[..]));
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
}

#[tokio::test]
async fn interim_answers_are_passed_over() {
    let addr = answering(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let pool = Pool::new(Duration::from_secs(60));
    let resp = get(&pool, addr).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("link").is_none());
    let data = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&data[..], b"ok");
}

#[tokio::test]
async fn a_switch_of_protocols_hands_over_the_bytes_after_the_head() {
    let (addr, _) = server(|mut s| async move {
        read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly")
            .await;
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            let _ = s.write_all(&buf[..n]).await;
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let conn = checkout(&pool, addr).await;
    let Ok(mut resp) = conn
        .send(request(Method::GET, Empty::<Bytes>::new()), true, false)
        .await
    else {
        panic!("upgrade failed");
    };
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut up = resp
        .body_mut()
        .take_upgraded()
        .expect("upgraded connection");
    let mut early = [0u8; 5];
    up.read_exact(&mut early).await.expect("early bytes");
    assert_eq!(&early, b"early");
    up.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    up.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
}

#[tokio::test]
async fn a_response_arriving_a_byte_at_a_time_is_read_the_same() {
    let answers: [&[u8]; 2] = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 7\r\nx-u: 8\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond",
    ];
    let (addr, accepted) = server(move |mut s| async move {
        let _ = s.set_nodelay(true);
        for answer in answers {
            if read_head(&mut s).await.is_empty() {
                return;
            }
            for byte in answer {
                if s.write_all(std::slice::from_ref(byte)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let body = get(&pool, addr).await.into_body();
        bodies.push(body.collect().await.expect("body"));
    }
    let second = bodies.pop().expect("second").to_bytes();
    let first = bodies.pop().expect("first");
    let trailers = first.trailers().cloned().expect("trailers");
    assert_eq!(&first.to_bytes()[..], b"hello!");
    assert_eq!(trailers.get("x-u").map(|v| v.as_bytes()), Some(&b"8"[..]));
    assert_eq!(&second[..], b"second");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
}

#[tokio::test]
async fn only_a_date_of_this_second_is_left_out_and_only_when_asked() {
    // Each connection answers one request with the Date the test hands it.
    let (dates_tx, dates_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let dates_rx = Arc::new(tokio::sync::Mutex::new(dates_rx));
    let (addr, _) = server(move |mut s| {
        let dates_rx = dates_rx.clone();
        async move {
            read_head(&mut s).await;
            let Some(date) = dates_rx.lock().await.recv().await else {
                return;
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nserver: app\r\ndate: {date}\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    })
    .await;
    let pool = Pool::new(Duration::from_secs(60));
    let stale = "Thu, 01 Jan 1970 00:00:00 GMT";
    for (date, leave, kept) in [
        (None, true, false),
        (None, false, true),
        (Some(stale), true, true),
    ] {
        // The second may turn between the answer and the check; then try again.
        let mut tries = 0;
        let fields = loop {
            let now = crate::http::date::now().expect("a date");
            let sent = date.unwrap_or(now.to_str().expect("ascii"));
            dates_tx.send(sent.to_owned()).expect("the server is up");
            let conn = checkout(&pool, addr).await;
            let resp = match conn
                .send(request(Method::GET, Empty::<Bytes>::new()), false, leave)
                .await
            {
                Ok(resp) => resp,
                Err(_) => panic!("the request failed"),
            };
            let fields: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            let turned = crate::http::date::now().expect("a date") != now;
            tries += 1;
            if !turned || date.is_some() || tries == 5 {
                break fields;
            }
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        if kept {
            assert_eq!(
                names,
                ["server", "date", "x-a", "content-length"],
                "{date:?} {leave}"
            );
        } else {
            // The other fields keep their order.
            assert_eq!(
                names,
                ["server", "x-a", "content-length"],
                "{date:?} {leave}"
            );
        }
    }
}
