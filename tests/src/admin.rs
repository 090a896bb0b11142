//! A tiny HTTP/1.1 client for admin endpoints (`/ready`, `/metrics`, `/shutdown`),
//! one connection per request, so it works against any of Weft's admin servers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::Process;

/// Admin requests are small and local; anything slower than this is a failure.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    request(addr, "GET", path).await
}

pub async fn post(addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    request(addr, "POST", path).await
}

pub async fn request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<Reply> {
    let stream = tokio::time::timeout(REQUEST_LIMIT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    request_over(stream, &addr.to_string(), method, path).await
}

/// Sends one `Connection: close` request over `stream` (already connected, e.g. from
/// inside a network namespace) with `host` as its Host header, and reads the reply.
pub async fn request_over(
    mut stream: TcpStream,
    host: &str,
    method: &str,
    path: &str,
) -> anyhow::Result<Reply> {
    let exchange = async {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .with_context(|| format!("{method} http://{host}{path} timed out"))?
        .with_context(|| format!("{method} http://{host}{path}"))?;
    parse_reply(&raw).with_context(|| format!("{method} http://{host}{path}: bad reply"))
}

/// Parses a complete `Connection: close` HTTP/1.1 response (no chunked bodies: the
/// admin servers send Content-Length).
pub fn parse_reply(raw: &[u8]) -> anyhow::Result<Reply> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Polls `GET /ready` on `admin` until it answers 200. Fails early, with the
/// process's output, if the process exits first; fails after `limit` otherwise.
pub async fn wait_ready(
    process: &mut Process,
    admin: SocketAddr,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = process.try_exit()? {
            bail!(
                "{} exited ({status}) before it was ready; its output:\n{}",
                process.name(),
                process.output()
            );
        }
        let last = match get(admin, "/ready").await {
            Ok(reply) if reply.status == 200 => return Ok(()),
            Ok(reply) => format!("/ready answered {}", reply.status),
            Err(e) => format!("{e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} not ready within {limit:?} ({last}); its output:\n{}",
                process.name(),
                process.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
