//! Gateway mode: listeners for traffic from outside the mesh. A TLS listener
//! terminates TLS with the operator's certificate for the name the client asked
//! for (SNI); a plaintext one serves HTTP or redirects it to HTTPS. Requests then
//! take the outbound path: the host picks a mesh service, its routes pick by path,
//! and the request goes on over mTLS under this proxy's own identity, with the same
//! balancing, breaking, retries, metrics and drain as any outbound request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::gateway_config::{GatewayConfig, GatewayEntry, HostsStore};
use crate::identity::{ALPN_H1, ALPN_H2};
use crate::listener::{Acceptor, Conn};
use crate::metrics::{Direction, Metrics};
use crate::outbound::{Destination, Outbound};

mod tls;

/// What the gateway's listeners are built from.
pub(crate) struct GatewayInputs<'a> {
    pub(crate) config: &'a GatewayConfig,
    pub(crate) acceptor: &'a Acceptor,
    pub(crate) outbound: &'a Arc<Outbound>,
    pub(crate) metrics: &'a Metrics,
    /// How long a client may take to finish its TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// Stops the certificate reloads.
    pub(crate) shutdown: &'a CancellationToken,
}

/// Binds every gateway listener; returns their addresses in config order and the
/// host table they share, for a reload to swap.
pub(crate) async fn serve(
    inputs: GatewayInputs<'_>,
) -> anyhow::Result<(Vec<std::net::SocketAddr>, HostsStore)> {
    let config = inputs.config;
    let hosts: HostsStore = Arc::new(arc_swap::ArcSwap::new(config.hosts.clone()));
    let mut bound = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let listener = TcpListener::bind(l.listen)
            .await
            .with_context(|| format!("cannot listen on {} (gateway.listeners[{i}])", l.listen))?;
        bound.push(listener.local_addr()?);
        let entry = Arc::new(GatewayEntry {
            hosts: hosts.clone(),
            redirect_https: l.redirect_https,
        });
        let ob = inputs.outbound.clone();
        let conn_metrics = inputs.metrics.conn(Direction::Gateway);
        if l.tls.is_empty() {
            inputs
                .acceptor
                .spawn(listener, conn_metrics, move |io: Conn, _peer| {
                    ob.clone()
                        .serve_conn(io, Destination::Gateway(entry.clone()))
                });
            continue;
        }
        let certs = tls::Certificates::load(&l.tls)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("gateway.listeners[{i}].tls"))?;
        let certs = Arc::new(certs);
        tls::reload_every(
            certs.clone(),
            config.tls_reload_interval,
            inputs.shutdown.clone(),
        );
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certs);
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_H1.to_vec()];
        let tls = TlsAcceptor::from(Arc::new(server));
        let timeout = inputs.handshake_timeout;
        inputs
            .acceptor
            .spawn(listener, conn_metrics, move |io: Conn, peer| {
                let (ob, tls, entry) = (ob.clone(), tls.clone(), entry.clone());
                async move {
                    let stream = match tokio::time::timeout(timeout, tls.accept(io)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "gateway TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "gateway TLS handshake timed out");
                            return;
                        }
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                    ob.serve_http(
                        stream,
                        h2,
                        None,
                        Destination::Gateway(entry),
                        Some(peer.ip()),
                    )
                    .await;
                }
            });
    }
    Ok((bound, hosts))
}
