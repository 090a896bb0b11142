//! Opaque TCP: bytes copied both ways, half-close propagated (a client that shuts
//! down its write side still receives the rest of the server's answer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::pool::{Key, connect_to};
use crate::identity::Alpn;
use crate::io::CountingIo;
use crate::metrics::TcpConnMetrics;

/// Connects to `upstream` in plaintext and splices; with `metrics`, the connection
/// is counted in its service's TCP metrics once it is connected. False: the
/// upstream could not be reached.
pub(crate) async fn forward<I>(
    client: I,
    upstream: SocketAddr,
    connect_timeout: Duration,
    metrics: Option<&TcpConnMetrics>,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let server = match connect_to(&Key::plain(upstream), connect_timeout, None, Alpn::Opaque).await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%upstream, reason = e.reason(), "opaque connect failed");
            return false;
        }
    };
    match metrics {
        Some(metrics) => splice_counted(client, server, upstream, metrics).await,
        None => splice(client, server, upstream).await,
    }
    true
}

/// [`splice`], counted in a service's TCP metrics while it lasts: open, and bytes
/// as they pass (a broker's connection lives for hours; its bytes show at once).
pub(crate) async fn splice_counted<I, S>(
    client: I,
    server: S,
    upstream: SocketAddr,
    metrics: &TcpConnMetrics,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _open = metrics.open();
    let client = CountingIo::new(client, metrics.received.clone(), metrics.sent.clone());
    splice(client, server, upstream).await;
}

/// Copies bytes both ways between a client and a connected upstream until both
/// sides are done.
async fn splice<I, S>(mut client: I, mut server: S, upstream: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((to_server, to_client)) => {
            tracing::trace!(%upstream, to_server, to_client, "opaque connection closed");
        }
        Err(e) => tracing::debug!(%upstream, error = %e, "opaque connection ended"),
    }
}
