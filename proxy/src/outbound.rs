//! Outbound: traffic from the local app to services in the mesh.
//!
//! A destination is found one of three ways: the request's authority (the app uses
//! the proxy as its `http_proxy`), a fixed service (an explicit upstream listener),
//! or the connection's original destination (transparent capture, a later step).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::detect::{Detected, detect};
use crate::discovery::{Dest, Discovery};
use crate::http::body::ProxyBody;
use crate::http::error::ProxyError;
use crate::http::error::{self, is_grpc};
use crate::http::forward::{Target, forward};
use crate::http::pool::{Key, Pool};
use crate::http::{ServerLimits, authority_of, serve};
use crate::listener::Conn;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::snapshot::{Protocol, Service, SnapshotStore};

/// How an outbound connection names where it wants to go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Each request's Host / absolute-form authority.
    Authority,
    /// Every request and byte goes to this service ("name" or "name.namespace").
    Service(Arc<str>),
}

pub struct Outbound {
    store: SnapshotStore,
    discovery: Option<Arc<Discovery>>,
    discovery_wait: Duration,
    pool: Pool,
    unknown: Arc<ServiceMetrics>,
    connect_timeout: Duration,
    detect_timeout: Duration,
    limits: ServerLimits,
    drain: CancellationToken,
}

impl Outbound {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: SnapshotStore,
        discovery: Option<Arc<Discovery>>,
        discovery_wait: Duration,
        pool: Pool,
        metrics: &Metrics,
        connect_timeout: Duration,
        detect_timeout: Duration,
        limits: ServerLimits,
        drain: CancellationToken,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            store,
            discovery,
            discovery_wait,
            pool,
            unknown: metrics.service("outbound", "unknown"),
            connect_timeout,
            detect_timeout,
            limits,
            drain,
        })
    }

    /// Looks a destination up in the snapshot; on a miss, and with a control plane,
    /// subscribes and waits briefly for its first update before looking again.
    async fn lookup(&self, dest: Dest) -> Option<Arc<Service>> {
        let find = |dest: &Dest| {
            let snapshot = self.store.load();
            match dest {
                Dest::Name(host) => snapshot.by_host(host).cloned(),
                Dest::Vip(addr) => snapshot.by_vip(*addr).cloned(),
            }
        };
        if let Some(svc) = find(&dest) {
            return Some(svc);
        }
        let discovery = self.discovery.as_ref()?;
        if discovery.resolve(dest.clone(), self.discovery_wait).await {
            find(&dest)
        } else {
            None
        }
    }

    async fn fixed_service(&self, dest: &Destination) -> Option<Arc<Service>> {
        match dest {
            Destination::Service(name) => self.lookup(Dest::Name(name.to_string())).await,
            Destination::Authority => None,
        }
    }

    /// Handles one accepted connection.
    pub async fn serve_conn(self: Arc<Self>, io: Conn, dest: Destination) {
        let hint = self
            .fixed_service(&dest)
            .await
            .map(|s| s.protocol(io.get_ref().local_addr().map_or(0, |a| a.port())));
        let (detected, io) = if hint == Some(Protocol::Opaque) {
            (
                Detected::Opaque,
                crate::io::PrefixedIo::new(Default::default(), io),
            )
        } else {
            match detect(io, self.detect_timeout).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "outbound detection failed");
                    return;
                }
            }
        };
        match detected {
            Detected::Http1 | Detected::Http2 => {
                let this = self.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    let dest = dest.clone();
                    async move {
                        let grpc = is_grpc(req.headers());
                        let resp = this.handle(req, &dest).await;
                        Ok::<_, Infallible>(error::for_client(grpc, resp))
                    }
                });
                serve(
                    io,
                    detected == Detected::Http2,
                    svc,
                    self.limits,
                    self.drain.clone(),
                )
                .await;
            }
            Detected::Tls | Detected::Opaque => {
                let Some(svc) = self.fixed_service(&dest).await else {
                    tracing::debug!("opaque outbound connection with no destination; closing");
                    return;
                };
                let Some(ep) = svc.pick() else {
                    tracing::debug!(service = %svc.key(), "no endpoints for opaque connection");
                    return;
                };
                let timeout = svc.policy.timeouts.connect.unwrap_or(self.connect_timeout);
                let key = Key {
                    addr: ep.addr,
                    identity: ep.identity.clone(),
                };
                crate::tcp::forward_to(io, &key, timeout, self.pool.identity().map(|i| &**i)).await;
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>, dest: &Destination) -> Response<ProxyBody> {
        let start = Instant::now();
        let dest = match dest {
            Destination::Service(name) => Dest::Name(name.to_string()),
            Destination::Authority => match authority_of(&req) {
                Some((host, port)) => match host.parse::<IpAddr>() {
                    Ok(ip) => Dest::Vip(SocketAddr::new(ip, port)),
                    Err(_) => Dest::Name(host.to_ascii_lowercase()),
                },
                None => {
                    self.unknown.proxy_error(ProxyError::NoAuthority.reason());
                    return ProxyError::NoAuthority.response();
                }
            },
        };
        let svc = self.lookup(dest).await;
        let Some(svc) = svc else {
            self.unknown
                .proxy_error(ProxyError::UnknownService.reason());
            let resp = ProxyError::UnknownService.response();
            self.unknown.record(resp.status().as_u16(), start.elapsed());
            return resp;
        };
        let result = match svc.pick() {
            None => Err(ProxyError::NoEndpoints),
            Some(ep) => {
                let target = Target {
                    addr: ep.addr,
                    identity: ep.identity.clone(),
                    connect_timeout: svc.policy.timeouts.connect.unwrap_or(self.connect_timeout),
                    request_timeout: svc.policy.timeouts.request,
                };
                forward(&self.pool, req, &target).await
            }
        };
        let resp = result.unwrap_or_else(|e| {
            svc.metrics.proxy_error(e.reason());
            e.response()
        });
        svc.metrics.record(resp.status().as_u16(), start.elapsed());
        resp
    }
}
