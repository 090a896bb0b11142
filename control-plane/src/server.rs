//! Wires a source, the index, the discovery API and the admin endpoint together.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::admin::{self, AdminState};
use crate::discovery::DiscoveryService;
use crate::identity::ca::CertificateAuthority;
use crate::identity::proof::IdentityProof;
use crate::identity::service::IdentityService;
use crate::index::Index;
use crate::liveview::LiveView;
use crate::liveview::collector::TelemetryService;
use crate::metrics::Metrics;
use crate::policy::PolicyService;
use crate::source::{Publisher, Source, SourceState};
use weft_api::v1;

/// How long open watch streams get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

/// A bound, not yet running control plane. Binding first lets callers (tests, the
/// benchmark) use port 0 and learn the ports before anything runs.
pub struct Server {
    grpc: TcpListener,
    admin: TcpListener,
    metrics: Arc<Metrics>,
    index: Arc<Index>,
    identity: Option<IdentityConfig>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    live_peers: Vec<String>,
}

/// The rustls server config for the gRPC endpoint from a PEM chain and a PKCS#8 key.
pub fn tls_config(chain_pem: &str, key_der: Vec<u8>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .context("the serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What `Identity.Certify` needs; without it the API is not served.
#[derive(Clone)]
pub struct IdentityConfig {
    pub ca: Arc<CertificateAuthority>,
    pub proof: Arc<dyn IdentityProof>,
    pub trust_domain: String,
}

impl Server {
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(config.grpc)
            .await
            .with_context(|| format!("binding the gRPC address {}", config.grpc))?;
        let admin = TcpListener::bind(config.admin)
            .await
            .with_context(|| format!("binding the admin address {}", config.admin))?;
        Ok(Server {
            grpc,
            admin,
            metrics: Arc::new(Metrics::new()),
            index: Arc::new(Index::new()),
            identity: None,
            tls: None,
            live_peers: Vec::new(),
        })
    }

    /// Serves gRPC over TLS.
    pub fn with_tls(mut self, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        self.tls = Some(acceptor);
        self
    }

    /// Serves `Identity.Certify` with this CA and proof check.
    pub fn with_identity(mut self, identity: IdentityConfig) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The other replicas' admin addresses (`HOST:PORT`; a name may resolve to
    /// several), whose proxies' reports the live view merges with this one's.
    pub fn with_live_peers(mut self, peers: Vec<String>) -> Self {
        self.live_peers = peers;
        self
    }

    pub fn grpc_addr(&self) -> io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` resolves (then drains and returns `Ok`) or something
    /// fails: the source before its first valid state, the source later, or the gRPC
    /// server.
    pub async fn run<S: Source>(
        self,
        source: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Server {
            grpc,
            admin,
            metrics,
            index,
            identity,
            tls,
            live_peers,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which is also a stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let live = LiveView::new();
        let instance = format!("{:016x}", rand::random::<u64>());
        let admin_state = Arc::new(AdminState {
            metrics: Arc::clone(&metrics),
            ready: false.into(),
            live: Arc::clone(&live),
            stopping: stop_rx.clone(),
            instance: instance.clone(),
        });
        // Ends by itself when the server stops.
        if !live_peers.is_empty() {
            tokio::spawn(crate::liveview::peers::run(
                Arc::clone(&live),
                live_peers,
                instance,
                stop_rx.clone(),
            ));
        }
        tracing::info!(addr = %admin.local_addr()?, "admin listening");
        let admin_task = tokio::spawn(admin::serve(
            admin,
            Arc::clone(&admin_state),
            stopped(stop_rx.clone()),
        ));

        let (publisher, mut states) = Publisher::new(
            metrics.source_changes_rejected.clone(),
            metrics.source_load.clone(),
        );
        let described = source.describe();
        let mut source_task = tokio::spawn(source.run(publisher));
        tokio::pin!(shutdown);

        // Nothing is served before the first valid state: a proxy told "unknown"
        // would treat a meshed service as not meshed.
        tokio::select! {
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                source_task.abort();
                let _ = admin_task.await;
                return Ok(());
            }
            changed = states.changed() => {
                if changed.is_err() {
                    let _ = stop_tx.send(true);
                    return Err(source_result(&described, source_task.await));
                }
            }
        }
        apply(&index, &metrics, &mut states);
        admin_state.ready.store(true, Ordering::Release);

        let grpc_addr = grpc.local_addr()?;
        let gauge = metrics.connected_proxies.clone();
        let plain = TcpListenerStream::new(grpc).map(move |conn| {
            conn.map(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "set_nodelay failed");
                }
                CountedConn::new(stream, gauge.clone())
            })
        });
        let incoming: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = io::Result<GrpcConn>> + Send>,
        > = match tls {
            None => Box::pin(plain.map(|c| c.map(GrpcConn::Plain))),
            Some(acceptor) => Box::pin(tls_incoming(plain, acceptor)),
        };
        let grpc_server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(DiscoveryService::new(
                Arc::clone(&index),
                Arc::clone(&metrics),
            ))
            .add_service(PolicyService::new(
                states.clone(),
                stop_rx.clone(),
                identity.as_ref().map(|id| v1::TrustBundle {
                    roots_pem: id.ca.bundle(),
                }),
            ))
            .add_service(TelemetryService::new(live))
            .add_optional_service(identity.map(|id| {
                IdentityService::new(
                    id.ca,
                    id.proof,
                    id.trust_domain,
                    metrics.certificates.clone(),
                )
            }))
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
        tokio::pin!(grpc_server);
        tracing::info!(addr = %grpc_addr, "discovery listening");

        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                changed = states.changed() => {
                    if changed.is_err() {
                        break Err(source_result(&described, (&mut source_task).await));
                    }
                    apply(&index, &metrics, &mut states);
                }
                served = &mut grpc_server => {
                    break Err(match served {
                        Ok(()) => anyhow::anyhow!("the gRPC server stopped"),
                        Err(e) => anyhow::Error::new(e).context("the gRPC server failed"),
                    });
                }
            }
        };
        tracing::info!("shutting down");
        // Ending every watch stream lets the gRPC server's graceful shutdown finish.
        index.close();
        let _ = stop_tx.send(true);
        source_task.abort();
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut grpc_server)
            .await
            .is_err()
        {
            tracing::warn!("gRPC connections did not close in time");
        }
        let _ = admin_task.await;
        result
    }
}

fn apply(index: &Index, metrics: &Metrics, states: &mut watch::Receiver<Option<SourceState>>) {
    let Some(state) = states.borrow_and_update().clone() else {
        return;
    };
    let outcome = index.apply(state.generation, &state.mesh);
    metrics.source_changes_applied.inc();
    metrics
        .source_generation
        .set(i64::try_from(state.generation).unwrap_or(i64::MAX));
    tracing::info!(
        generation = state.generation,
        changed = outcome.changed,
        removed = outcome.removed,
        notified = outcome.notified,
        "mesh state applied"
    );
}

fn source_result(
    described: &str,
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Error {
    match joined {
        Ok(Ok(())) => anyhow::anyhow!("{described} stopped"),
        Ok(Err(e)) => e.context(format!("{described} failed")),
        Err(e) => anyhow::Error::new(e).context(format!("{described} crashed")),
    }
}

/// Handshakes run concurrently, so one slow client cannot hold up the others.
fn tls_incoming(
    plain: impl futures_util::Stream<Item = io::Result<CountedConn>> + Send + 'static,
    acceptor: tokio_rustls::TlsAcceptor,
) -> impl futures_util::Stream<Item = io::Result<GrpcConn>> + Send {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        tokio::pin!(plain);
        while let Some(conn) = plain.next().await {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(GrpcConn::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!("gRPC TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A gRPC connection, plaintext or TLS.
enum GrpcConn {
    Plain(CountedConn),
    Tls(Box<tokio_rustls::server::TlsStream<CountedConn>>),
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            GrpcConn::Plain(c) => c.connect_info(),
            GrpcConn::Tls(t) => t.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for GrpcConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(c) => Pin::new(c).poll_read(cx, buf),
            GrpcConn::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            GrpcConn::Plain(c) => Pin::new(c).poll_write(cx, buf),
            GrpcConn::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(c) => Pin::new(c).poll_flush(cx),
            GrpcConn::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            GrpcConn::Plain(c) => Pin::new(c).poll_shutdown(cx),
            GrpcConn::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A proxy's connection, counted in `weft_control_connected_proxies` while open.
struct CountedConn {
    inner: TcpStream,
    gauge: IntGauge,
}

impl CountedConn {
    fn new(inner: TcpStream, gauge: IntGauge) -> Self {
        gauge.inc();
        CountedConn { inner, gauge }
    }
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Connected for CountedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
