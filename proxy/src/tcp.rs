//! Opaque TCP: bytes copied both ways, half-close propagated (a client that shuts
//! down its write side still receives the rest of the server's answer).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::pool::{Key, connect_to};
use crate::identity::{Alpn, Identity};

pub(crate) async fn forward<I>(client: I, upstream: SocketAddr, connect_timeout: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    forward_to(client, &Key::plain(upstream), connect_timeout, None).await
}

/// Like [`forward`], over mTLS when the endpoint has an identity.
pub(crate) async fn forward_to<I>(
    client: I,
    key: &Key,
    connect_timeout: Duration,
    identity: Option<&Identity>,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = key.addr;
    let server = match connect_to(key, connect_timeout, identity, Alpn::Opaque).await {
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
pub(crate) async fn splice<I, S>(mut client: I, mut server: S, upstream: SocketAddr)
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
