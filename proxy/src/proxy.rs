//! Wires one proxy together from its config: snapshot, pool, listeners, admin, and
//! the shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weft_api::v1;

use crate::admin::Admin;
use crate::capture::listen::ipv6_twin;
use crate::config::{Config, Http1OverHttp2};
use crate::endpoint::Registry;
use crate::fd_limit;
use crate::http::ServerLimits;
use crate::http::pool::Pool;
use crate::http::watch::Watch;
use crate::identity::certify::Certifier;
use crate::identity::metrics::IdentityMetrics;
use crate::identity::{H2Orig, Identity};
use crate::inbound::{Inbound, InboundInputs};
use crate::listener::{Acceptor, Conn};
use crate::metrics::{Direction, Metrics};
use crate::observe::trace::Tracer;
use crate::observe::{Observer, Sinks};
use crate::outbound::{Destination, Outbound, OutboundInputs};
use crate::report::ReportInputs;
use crate::snapshot::lookup::{Demand, Dest, Lookup};
use crate::snapshot::{self, SnapshotStore};
use crate::source::control_plane;
use crate::source::discovery::Discovery;

/// A running proxy: its bound addresses and the handles to stop it.
pub struct Proxy {
    pub outbound: Option<SocketAddr>,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    /// Gateway listeners, in config order.
    pub gateway: Vec<SocketAddr>,
    pub metrics: Metrics,
    shutdown: CancellationToken,
    drain: CancellationToken,
    admin_stop: CancellationToken,
    tracker: TaskTracker,
    ready: Arc<AtomicBool>,
    grace: Duration,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Starts a proxy from `config`: its snapshot and sources, its identity, and every
/// listener the config names. Returns once all are bound.
pub async fn start(config: Config) -> anyhow::Result<Proxy> {
    tracing::info!(node = %config.node.id, ip = ?config.node.ip, "starting");
    let metrics = Metrics::new();
    // Endpoint and service stats outlive snapshots; every source that builds one
    // shares this registry.
    let stats = Arc::new(Registry::default());
    let initial = snapshot::from_mesh(
        &config.mesh,
        1,
        config.node.namespace.as_str(),
        &metrics,
        &stats,
    )
    .context("the mesh in the config cannot be applied")?;
    let store = snapshot::store(initial);
    metrics.snapshot_loaded(1);

    let limits = &config.limits;
    let shutdown = CancellationToken::new();
    let drain = CancellationToken::new();
    let server_limits = ServerLimits {
        conns: Watch::start(limits.header_read_timeout.0, drain.clone()),
        max_header_bytes: limits.max_header_bytes,
    };
    let acceptor = Acceptor {
        slots: Arc::new(Semaphore::new(fd_limit::connection_cap(
            limits.max_connections,
        ))),
        drain: drain.clone(),
        tracker: TaskTracker::new(),
    };
    let cp_tls = match &config.trust_bundle {
        Some(anchors) => Some(control_plane::client_config(anchors).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let identity = start_identity(&config, &metrics, cp_tls.as_ref(), &shutdown)?;
    let pool = Pool::with_identity(limits.idle_timeout.0, identity.clone());
    let discovery = start_discovery(&config, &store, &metrics, &stats, cp_tls.as_ref())?;
    // Reports share discovery's connection: one connection per proxy to the control
    // plane, as before.
    let cp_channel = discovery.as_ref().map(|d| d.channel());
    let discovery = discovery.map(|d| d as Arc<dyn Demand>);
    let tracer = match &config.tracing {
        Some(t) => {
            let channel =
                control_plane::streaming_channel(&t.collector, None).map_err(anyhow::Error::msg)?;
            let service = reporting_node(&config).workload;
            tracing::info!(collector = %t.collector, ratio = t.sample_ratio, "exporting spans");
            Some(Tracer::start(
                channel,
                t.sample_ratio,
                t.buffer,
                service,
                &metrics,
            ))
        }
        None => None,
    };
    let sinks = Sinks::start(config.access_log.as_ref(), tracer, &metrics)?;
    let outbound = Outbound::new(OutboundInputs {
        lookup: Lookup::new(store.clone(), discovery, limits.discovery_timeout.0),
        pool: pool.clone(),
        metrics: metrics.clone(),
        connect_timeout: limits.connect_timeout.0,
        detect_timeout: limits.detect_timeout.0,
        limits: server_limits.clone(),
        opaque_ports: config.outbound_opaque_ports.clone(),
        observer: Observer::new(sinks.clone(), Direction::Outbound, None),
    });

    let mut proxy = Proxy {
        outbound: None,
        inbound: None,
        admin: config.admin,
        upstreams: Vec::new(),
        gateway: Vec::new(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        drain,
        admin_stop: CancellationToken::new(),
        tracker: acceptor.tracker.clone(),
        ready: Arc::new(AtomicBool::new(false)),
        grace: limits.shutdown_grace.0,
    };
    serve_outbound(&config, &mut proxy, &acceptor, &outbound).await?;
    let mut gateway_hosts = None;
    if let Some(gateway) = &config.gateway {
        let (bound, hosts) = crate::gateway::serve(crate::gateway::GatewayInputs {
            config: gateway,
            acceptor: &acceptor,
            outbound: &outbound,
            metrics: &metrics,
            handshake_timeout: limits.header_read_timeout.0,
            shutdown: &shutdown,
        })
        .await?;
        proxy.gateway = bound;
        gateway_hosts = Some(hosts);
    }
    if let Some((listen, app)) = config.inbound {
        let workload = config.node.workload.as_deref().unwrap_or("local");
        let inbound = Inbound::new(InboundInputs {
            app,
            pool,
            metrics: metrics.service(Direction::Inbound, workload),
            connect_timeout: limits.connect_timeout.0,
            detect_timeout: limits.detect_timeout.0,
            limits: server_limits,
            identity: identity.clone(),
            opaque_ports: config.inbound_opaque_ports.clone(),
            http1_ports: config.inbound_http1_ports.clone(),
            http2_ports: config.inbound_http2_ports.clone(),
            observer: Observer::new(sinks, Direction::Inbound, Some(workload)),
        });
        proxy.inbound = Some(serve_inbound(listen, app, &acceptor, &metrics, inbound).await?);
    }
    let admin = Arc::new(Admin {
        metrics: metrics.clone(),
        store: store.clone(),
        ready: proxy.ready.clone(),
        shutdown,
        identity,
        probe_ports: config.probe_ports.clone(),
        probe_timeout: limits.probe_timeout.0,
    });
    proxy.admin = serve_admin(config.admin, admin, &proxy.admin_stop).await?;

    if let Some(channel) = cp_channel
        && !limits.report_interval.0.is_zero()
    {
        let inputs = ReportInputs {
            channel,
            node: reporting_node(&config),
            metrics: metrics.clone(),
            store: store.clone(),
            interval: limits.report_interval.0,
        };
        crate::report::spawn(inputs, proxy.shutdown.clone());
    }

    #[cfg(unix)]
    if let Some(path) = &config.path {
        let running = crate::source::file::Running {
            listeners: config.listeners(),
            gateway: config.gateway.clone().zip(gateway_hosts),
            discovered: config.control_plane.is_some(),
        };
        crate::source::file::on_sighup(path.clone(), running, store, metrics, stats);
    }

    proxy.ready.store(true, Ordering::Release);
    Ok(proxy)
}

/// Who this proxy is, as it tells the control plane.
fn node(config: &Config, namespace: &str, service_account: &str) -> v1::Node {
    v1::Node {
        id: config.node.id.clone(),
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        workload: config.node.workload.clone().unwrap_or_default(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Who reports traffic: the workload (inbound metrics' service) in its namespace.
fn reporting_node(config: &Config) -> v1::Node {
    let mut node = node(
        config,
        config.node.namespace.as_str(),
        config.node.service_account.as_deref().unwrap_or_default(),
    );
    if node.workload.is_empty() {
        "local".clone_into(&mut node.workload);
    }
    node
}

/// With an identity configured: the workload's certificate, requested and renewed
/// from the control plane, and its inbound policy, watched there.
fn start_identity(
    config: &Config,
    metrics: &Metrics,
    cp_tls: Option<&Arc<rustls::ClientConfig>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Arc<Identity>>> {
    let Some(c) = &config.identity else {
        return Ok(None);
    };
    let identity = Identity::new(
        c.id.clone(),
        c.inbound.clone(),
        IdentityMetrics::new(metrics.registry()),
    );
    match c.http1_over_http2 {
        Http1OverHttp2::Off => identity.disable_h2_orig(),
        Http1OverHttp2::V1Only => identity.limit_h2_orig(H2Orig::V1),
        Http1OverHttp2::On => {}
    }
    let channel =
        control_plane::unary_channel(&c.control_plane, cp_tls).map_err(anyhow::Error::msg)?;
    let certifier = Certifier::new(identity.clone(), channel, c.token.clone());
    tracing::info!(identity = %identity.spiffe_id(), control_plane = %c.control_plane, "mTLS on");
    tokio::spawn(certifier.run(shutdown.clone()));
    let channel =
        control_plane::streaming_channel(&c.control_plane, cp_tls).map_err(anyhow::Error::msg)?;
    let node = node(config, &c.id.namespace, &c.id.service_account);
    crate::identity::policy_watch::spawn(
        identity.clone(),
        channel,
        node,
        c.inbound.clone(),
        shutdown.clone(),
    );
    Ok(Some(identity))
}

/// With a control plane configured: the discovery client, already watching the
/// configured upstreams' services.
fn start_discovery(
    config: &Config,
    store: &SnapshotStore,
    metrics: &Metrics,
    stats: &Arc<Registry>,
    cp_tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<Option<Arc<Discovery>>> {
    let Some(addr) = &config.control_plane else {
        return Ok(None);
    };
    let node = node(
        config,
        config.node.namespace.as_str(),
        config.node.service_account.as_deref().unwrap_or_default(),
    );
    let discovery = Discovery::new(
        addr,
        node,
        store.clone(),
        metrics.clone(),
        stats.clone(),
        cp_tls,
    )
    .map_err(anyhow::Error::msg)?;
    for up in &config.upstreams {
        discovery.subscribe(Dest::Name(up.service.clone().into()));
    }
    tracing::info!(control_plane = %addr, "discovery from the control plane");
    Ok(Some(discovery))
}

/// The outbound listener (transparent or `http_proxy` style) and one listener per
/// configured upstream.
async fn serve_outbound(
    config: &Config,
    proxy: &mut Proxy,
    acceptor: &Acceptor,
    outbound: &Arc<Outbound>,
) -> anyhow::Result<()> {
    let metrics = &proxy.metrics;
    if let Some(addr) = config.outbound {
        let listener = bind(addr, "outbound").await?;
        let bound = listener.local_addr()?;
        proxy.outbound = Some(bound);
        let ob = outbound.clone();
        let transparent = config.outbound_transparent;
        let handle = move |io: Conn, _peer| {
            let original = transparent
                .then(|| crate::capture::orig_dst::outbound_original(io.get_ref()))
                .flatten();
            let dest = original.map_or(Destination::Authority, Destination::Original);
            ob.clone().serve_conn(io, dest)
        };
        if let Some(twin) = transparent.then(|| ipv6_twin(bound)).flatten() {
            acceptor.spawn(twin, metrics.conn(Direction::Outbound), handle.clone());
        }
        acceptor.spawn(listener, metrics.conn(Direction::Outbound), handle);
    }
    for up in &config.upstreams {
        let listener = bind(up.listen, &format!("upstream {}", up.service)).await?;
        proxy.upstreams.push(listener.local_addr()?);
        let ob = outbound.clone();
        let name: Arc<str> = Arc::from(up.service.as_str());
        acceptor.spawn(
            listener,
            metrics.conn(Direction::Outbound),
            move |io, _peer| {
                ob.clone()
                    .serve_conn(io, Destination::Service(name.clone()))
            },
        );
    }
    Ok(())
}

/// The inbound listener; returns its bound address.
async fn serve_inbound(
    listen: SocketAddr,
    app: Option<SocketAddr>,
    acceptor: &Acceptor,
    metrics: &Metrics,
    inbound: Arc<Inbound>,
) -> anyhow::Result<SocketAddr> {
    let listener = bind(listen, "inbound").await?;
    let bound = listener.local_addr()?;
    let handle = move |io: Conn, _peer| inbound.clone().serve_conn(io);
    // Without a fixed app the inbound side is transparent: it also takes what
    // ip6tables redirects.
    if let Some(twin) = app.is_none().then(|| ipv6_twin(bound)).flatten() {
        acceptor.spawn(twin, metrics.conn(Direction::Inbound), handle.clone());
    }
    acceptor.spawn(listener, metrics.conn(Direction::Inbound), handle);
    Ok(bound)
}

/// The admin listener; returns its bound address.
async fn serve_admin(
    addr: SocketAddr,
    admin: Arc<Admin>,
    stop: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = bind(addr, "admin").await?;
    let bound = listener.local_addr()?;
    // On all addresses (in a pod) the kubelet may probe the pod's IPv6 address.
    if let Some(twin) = addr
        .ip()
        .is_unspecified()
        .then(|| ipv6_twin(bound))
        .flatten()
    {
        admin.clone().spawn(twin, stop.clone());
    }
    admin.spawn(listener, stop.clone());
    Ok(bound)
}

impl Proxy {
    /// Cancelling this token starts the shutdown sequence.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits for a shutdown request (token, or one of `signals`), then drains: stop
    /// accepting, let in-flight requests finish within the grace period, close idle
    /// connections.
    pub async fn run_until_shutdown(self, signals: Option<StopSignals>) {
        wait_for_signal(&self.shutdown, signals).await;
        self.drain().await;
    }

    pub async fn drain(self) {
        tracing::info!(grace = ?self.grace, "draining");
        self.ready.store(false, Ordering::Release);
        self.drain.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tracker.len(),
                "grace period over; closing remaining connections"
            );
        }
        self.admin_stop.cancel();
        tracing::info!("stopped");
    }
}

/// SIGTERM and SIGINT, listened for from before start-up on: a proxy told to stop
/// while it starts (a pod deleted at once) stops cleanly instead of by the
/// signal's default action.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Listens from now on; `None` (logged) when the signals cannot be had.
    pub fn install() -> Option<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(StopSignals { term, int }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for signals; only /shutdown stops the proxy");
                None
            }
        }
    }

    /// The next stop signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn wait_for_signal(shutdown: &CancellationToken, signals: Option<StopSignals>) {
    match signals {
        Some(mut signals) => tokio::select! {
            _ = shutdown.cancelled() => {}
            name = signals.recv() => tracing::info!("{name} received"),
        },
        None => shutdown.cancelled().await,
    }
}
