//! Differential test: Weft's HTTP/1.1 client and hyper's read the same generated,
//! well-formed responses (every framing, interim answers, odd reason phrases,
//! extensions and trailers) and must agree on status, reason, fields, body and
//! trailers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::tests::{checkout, read_head, server};
use super::{H1Conn, SendError};
use crate::http::pool::Pool;

const CASES: usize = 300;

/// What a client made of a response.
#[derive(Debug, PartialEq)]
struct Seen {
    status: StatusCode,
    reason: Option<Vec<u8>>,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

fn token(rng: &mut StdRng, len: usize) -> String {
    const CHARS: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~";
    (0..len)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// A field value: visible ASCII with inner spaces and tabs, no edge whitespace.
fn value(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..40);
    let mut v: String = (0..len)
        .map(|_| match rng.random_range(0..10) {
            0 => ' ',
            1 => '\t',
            _ => char::from(rng.random_range(0x21u8..0x7f)),
        })
        .collect();
    v = v.trim_matches([' ', '\t']).to_string();
    v
}

/// One generated response, and whether the server closes after it.
fn response(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.random_bool(0.1) {
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let status = [
        200u16, 201, 202, 204, 206, 299, 301, 304, 404, 418, 500, 503, 599,
    ][rng.random_range(0..13)];
    let reason = match rng.random_range(0..5) {
        0 => String::new(),
        // obs-text: not UTF-8, which httparse does not hand back as a slice.
        1 => "caf\u{e9}".to_string(),
        2 => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Whatever")
            .to_string(),
        _ => format!("{} {}", token(rng, 5), token(rng, 3)),
    };
    out.extend_from_slice(format!("HTTP/1.1 {status} ").as_bytes());
    if reason == "caf\u{e9}" {
        out.extend_from_slice(b"caf\xe9");
    } else {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for i in 0..rng.random_range(0..8) {
        let len = rng.random_range(1..10);
        let name = format!("X-{}{i}", token(rng, len));
        out.extend_from_slice(format!("{name}: {}\r\n", value(rng)).as_bytes());
    }
    let bodiless = matches!(status, 204 | 304);
    let body: Vec<u8> = if bodiless {
        Vec::new()
    } else {
        (0..rng.random_range(0..5000))
            .map(|_| rng.random())
            .collect()
    };
    match (bodiless, rng.random_range(0..3)) {
        (true, _) => out.extend_from_slice(b"\r\n"),
        (false, 0) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
        }
        (false, 1) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(1500));
                let ext = if rng.random_bool(0.2) {
                    format!(";{}={}", token(rng, 3), token(rng, 4))
                } else {
                    String::new()
                };
                let size = if rng.random_bool(0.5) {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            for i in 0..rng.random_range(0..3) {
                out.extend_from_slice(format!("x-trailer-{i}: {}\r\n", value(rng)).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        // Delimited by the close.
        (false, _) => {
            out.extend_from_slice(b"Connection: close\r\n\r\n");
            out.extend_from_slice(&body);
        }
    }
    out
}

/// A server that answers one request per connection with `answer`, then closes.
async fn serving(answer: Vec<u8>) -> SocketAddr {
    let answer = Bytes::from(answer);
    let (addr, _) = server(move |mut s| {
        let answer = answer.clone();
        async move {
            read_head(&mut s).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        }
    })
    .await;
    addr
}

fn get() -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = Method::GET;
    *req.uri_mut() = http::Uri::from_static("/");
    req.headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_static("svc"));
    req
}

async fn collect<B>(resp: http::Response<B>) -> Result<Seen, String>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let status = resp.status();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes().to_vec());
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(Seen {
        status,
        reason,
        headers,
        trailers: body.trailers().cloned(),
        body: body.to_bytes(),
    })
}

async fn by_weft(pool: &Pool, addr: SocketAddr) -> Result<Seen, String> {
    let conn: H1Conn = checkout(pool, addr).await;
    match conn.send(Box::new(get()), false, false).await {
        Ok(resp) => collect(resp).await,
        Err(SendError::Failed | SendError::Stale(_)) => Err("failed".into()),
        Err(SendError::Client(e)) => Err(format!("client {e:?}")),
    }
}

async fn by_hyper(addr: SocketAddr) -> Result<Seen, String> {
    let io =
        hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tx.send_request(get()).await.map_err(|e| e.to_string())?;
    collect(resp).await
}

#[tokio::test]
async fn weft_and_hyper_read_every_generated_response_alike() {
    let mut rng = StdRng::seed_from_u64(0x5eed_4ef7);
    let pool = Pool::new(std::time::Duration::from_secs(60));
    for case in 0..CASES {
        let answer = response(&mut rng);
        let addr = serving(answer.clone()).await;
        let weft = by_weft(&pool, addr).await;
        let hyper = by_hyper(addr).await;
        assert!(hyper.is_ok(), "case {case}: hyper failed: {hyper:?}");
        assert_eq!(
            weft,
            hyper,
            "case {case}, response:\n{}",
            String::from_utf8_lossy(&answer)
        );
    }
}
