//! Opaque TCP: bytes copied both ways, half-close propagated (a client that shuts
//! down its write side still receives the rest of the server's answer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::pool::connect;

pub async fn forward<I>(mut client: I, upstream: SocketAddr, connect_timeout: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut server = match connect(upstream, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%upstream, reason = e.reason(), "opaque connect failed");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((to_server, to_client)) => {
            tracing::trace!(%upstream, to_server, to_client, "opaque connection closed");
        }
        Err(e) => tracing::debug!(%upstream, error = %e, "opaque connection ended"),
    }
}
