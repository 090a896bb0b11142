//! Opaque TCP: bytes copied both ways, half-close propagated (a client that shuts
//! down its write side still receives the rest of the server's answer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::http::pool::connect;

pub async fn forward<I>(client: I, upstream: SocketAddr, connect_timeout: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let server = match connect(upstream, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%upstream, reason = e.reason(), "opaque connect failed");
            return;
        }
    };
    splice(client, server, upstream).await;
}

/// Copies bytes both ways between a client and a connected upstream until both
/// sides are done.
pub async fn splice<I>(mut client: I, mut server: TcpStream, upstream: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((to_server, to_client)) => {
            tracing::trace!(%upstream, to_server, to_client, "opaque connection closed");
        }
        Err(e) => tracing::debug!(%upstream, error = %e, "opaque connection ended"),
    }
}
