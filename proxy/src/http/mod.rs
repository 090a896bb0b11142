//! HTTP on both sides of the proxy: serving accepted connections, forwarding
//! requests over pooled connections, and the proxy's own error answers.

pub(crate) mod body;
pub(crate) mod client_body;
pub(crate) mod convert;
pub(crate) mod date;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod h1_client;
pub(crate) mod h2_body;
pub(crate) mod h2_client;
pub(crate) mod h2_server;
pub(crate) mod headers;
pub(crate) mod orig_proto;
pub(crate) mod pool;
pub(crate) mod watch;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use body::ProxyBody;
use client_body::ClientBody;
pub(crate) use h2_server::Dates;
use watch::{InFlight, Stop, Watch, Watched};

/// HTTP/2 flow-control windows, the same on the proxy's server and client sides so
/// both ends of a mesh hop grant alike (hyper's client defaults). They are fixed:
/// hyper's adaptive windows read a precise clock on every DATA frame and every poll
/// of the connection, a cost these windows make unnecessary at mesh round trips
/// (figures: tests/bench/README.md).
pub(crate) const H2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
pub(crate) const H2_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Limits applied to every HTTP connection a client opens to the proxy.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    /// Stops connections on drain and enforces the header-read timeout.
    pub(crate) conns: Watch,
    pub(crate) max_header_bytes: usize,
}

/// Serves one accepted connection with `handler` answering each request. On
/// HTTP/1 the handler also gets the request's `InFlight` mark, which the response
/// body must hold (`ProxyBody::until_sent`) so the header-read clock stays stopped
/// until the response is sent. HTTP/2 (`h2`: who dates its answers) is served on the
/// `h2` crate (`h2_server`).
pub(crate) async fn serve_handler<I, F, Fut>(
    io: I,
    h2: Option<Dates>,
    handler: F,
    limits: &ServerLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<ClientBody>, Option<InFlight>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    if let Some(dates) = h2 {
        let watched = limits.conns.watch(false);
        let handler = move |req| handler(req, None);
        h2_server::serve(io, handler, &watched, limits.max_header_bytes, dates).await;
    } else {
        let watched = Arc::new(limits.conns.watch(true));
        let svc = hyper::service::service_fn({
            let watched = Arc::clone(&watched);
            move |req: Request<Incoming>| handler(req.map(ClientBody::from), Some(watched.begin()))
        });
        serve_h1(io, svc, &watched, limits).await;
    }
}

/// An answer to HEAD keeps its fields and loses its body. hyper's HTTP/1 server
/// drops a HEAD answer's body itself, `h2_server` does it here, and h2 resets a
/// stream that sends DATA after a HEAD (RFC 9110 §9.3.2): without this, the proxy's
/// own error answers, or an upstream's stray body, reach an HTTP/2 client as
/// PROTOCOL_ERROR instead of a status.
fn without_body(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if resp.body().is_end_stream() {
        return resp;
    }
    if let Some(len) = resp.body().size_hint().exact()
        && !resp.headers().contains_key(CONTENT_LENGTH)
    {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp.map(|_| ProxyBody::full(Bytes::new()))
}

/// Serves one accepted HTTP/1 connection. On drain, closes it after the current
/// request. A client that leaves it idle for the header-read timeout, or sends a
/// request head too slowly, is cut off (`watch`, in place of hyper's timeout).
async fn serve_h1<I, S>(io: I, svc: S, watched: &Watched, limits: &ServerLimits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // writev(false): hyper then joins head and body into one buffer and writes
    // it with send(2) rather than writev(2), which costs more in the kernel per
    // call; bodies are copied once more in user space.
    let conn = http1::Builder::new()
        .writev(false)
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    // biased: the connection first, with no random pick on every wake.
    let result = tokio::select! {
        biased;
        res = conn.as_mut() => res,
        stop = watched.stopped() => match stop {
            Stop::HeadTimeout => {
                tracing::debug!("client sent no complete request head in time; closing");
                return;
            }
            Stop::Drain => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// The destination a request names: its absolute-form authority, else its Host
/// header. Returns the host (without brackets for IPv6) and the port.
pub(crate) fn authority_of<B>(req: &Request<B>) -> Option<(&str, u16)> {
    if let Some(a) = req.uri().authority() {
        let default = if req.uri().scheme_str() == Some("https") {
            443
        } else {
            80
        };
        return Some((a.host(), a.port_u16().unwrap_or(default)));
    }
    let host = req.headers().get(HOST)?.to_str().ok()?;
    split_host_port(host, 80)
}

fn split_host_port(s: &str, default_port: u16) -> Option<(&str, u16)> {
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((ip, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, p.parse().ok()?)),
        Some(_) => None,
        None => Some((s, default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("orders", 80), Some(("orders", 80)));
        assert_eq!(split_host_port("orders:8080", 80), Some(("orders", 8080)));
        assert_eq!(split_host_port("[::1]:9", 80), Some(("::1", 9)));
        assert_eq!(split_host_port("[::1]", 80), Some(("::1", 80)));
        assert_eq!(split_host_port("a:b", 80), None);
        assert_eq!(split_host_port("", 80), None);
    }
}
