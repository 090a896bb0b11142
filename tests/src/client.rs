//! Clients for the tests: HTTP/1.1 and HTTP/2 (prior knowledge) over one kept
//! connection each, and raw TCP helpers. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::STEP_DEADLINE;
use crate::apps::AbortOnDrop;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A Python `http.client` script: a POST and then a GET on one kept-alive HTTP/1.1
/// connection to `argv[1]:argv[2]`, one line per answer (tests/src/py/keepalive_client.py).
pub const PY_KEEPALIVE_CLIENT: &str = include_str!("py/keepalive_client.py");

/// A request with an empty body.
pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// A request with headers and a body.
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("a valid request")
}

async fn collect(resp: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.context("reading the body")?.to_bytes();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = tokio::time::timeout(STEP_DEADLINE, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One HTTP/1.1 connection, reused for every request (keep-alive). The request's
/// URI is sent as given: an absolute URI goes out in absolute form (as to an HTTP
/// proxy), a path in origin form (set Host yourself).
pub struct H1Client {
    tx: http1::SendRequest<Full<Bytes>>,
    _conn: AbortOnDrop,
}

impl H1Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<H1Client> {
        let stream = connect(addr).await?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(H1Client {
            tx,
            _conn: AbortOnDrop(task),
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let exchange = async {
            self.tx.ready().await.context("connection not usable")?;
            let resp = self.tx.send_request(req).await.context("sending")?;
            collect(resp).await
        };
        tokio::time::timeout(STEP_DEADLINE, exchange)
            .await
            .context("HTTP/1.1 exchange timed out")?
    }
}

/// One HTTP/2 prior-knowledge (h2c) connection; clones share it.
#[derive(Clone)]
pub struct H2Client {
    tx: http2::SendRequest<Full<Bytes>>,
    _conn: std::sync::Arc<AbortOnDrop>,
}

impl H2Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<H2Client> {
        let stream = connect(addr).await?;
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Client {
            tx,
            _conn: std::sync::Arc::new(AbortOnDrop(task)),
        })
    }

    /// `req`'s URI must be absolute (HTTP/2 sends scheme and authority).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let exchange = async {
            self.tx.ready().await.context("connection not usable")?;
            let resp = self.tx.send_request(req).await.context("sending")?;
            collect(resp).await
        };
        tokio::time::timeout(STEP_DEADLINE, exchange)
            .await
            .context("HTTP/2 exchange timed out")?
    }
}

/// Connects, writes `bytes`, and reads until the peer closes (at most `limit`).
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    limit: Duration,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = connect(addr).await?;
    stream.write_all(bytes).await?;
    read_until_closed(&mut stream, limit).await
}

/// Connects, writes `bytes`, shuts down the write half, and reads the whole answer.
pub async fn raw_exchange_half_closed(
    addr: SocketAddr,
    bytes: &[u8],
    limit: Duration,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = connect(addr).await?;
    stream.write_all(bytes).await?;
    stream.shutdown().await?;
    read_until_closed(&mut stream, limit).await
}

/// Reads until EOF or a reset (both mean "closed"); fails if the connection is
/// still open after `limit`.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> anyhow::Result<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .with_context(|| format!("connection still open after {limit:?}"))?;
    Ok(got)
}

/// The status code of a raw HTTP/1 response, if `raw` starts with one.
pub fn raw_status(raw: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(raw.get(..raw.len().min(64))?).ok()?;
    text.strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}
