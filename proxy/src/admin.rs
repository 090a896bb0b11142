//! The admin server: metrics, health, the current snapshot, shutdown, and the
//! app's rewritten kubelet probes ([`crate::probe`]).
//!
//! In a pod it listens on all addresses (the kubelet and Prometheus call it from
//! outside), so what must stay local is checked against the caller's address, not
//! the listener's: `POST /shutdown` and `GET /config` answer loopback callers only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::ports::PortSet;
use crate::snapshot::SnapshotStore;

pub(crate) struct Admin {
    pub(crate) metrics: Metrics,
    pub(crate) store: SnapshotStore,
    /// False until every listener is bound and a snapshot is loaded, and again
    /// once draining starts, so no new traffic is sent to a proxy on its way out.
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) shutdown: CancellationToken,
    /// With mTLS on, not ready while the proxy holds no valid certificate.
    pub(crate) identity: Option<Arc<crate::identity::Identity>>,
    /// App ports whose probes may be forwarded (`WEFT_PROBE_PORTS`).
    pub(crate) probe_ports: PortSet,
    pub(crate) probe_timeout: Duration,
}

impl Admin {
    pub(crate) fn spawn(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    res = listener.accept() => match res {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "admin accept failed");
                            continue;
                        }
                    },
                };
                let this = self.clone();
                let port = stream.local_addr().map_or(0, |a| a.port());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req, peer, port).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }

    /// `port`: the admin port as the caller reached it.
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        port: u16,
    ) -> Response<Full<Bytes>> {
        // An IPv4 caller of a dual-stack socket shows up as ::ffff:a.b.c.d.
        let local_caller = peer.ip().to_canonical().is_loopback();
        if let Some(rest) = req.uri().path().strip_prefix(crate::probe::GRPC_PREFIX) {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            }
            return crate::probe::forward_grpc(rest, &self.probe_ports, self.probe_timeout).await;
        }
        if let Some(rest) = req.uri().path().strip_prefix(crate::probe::PREFIX) {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            }
            return crate::probe::forward(
                rest,
                req.uri().query(),
                req.headers(),
                &self.probe_ports,
                port,
                self.probe_timeout,
            )
            .await;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET, "/ready") => {
                let certified = self.identity.as_ref().is_none_or(|i| i.has_valid_cert());
                if self.ready.load(Ordering::Acquire) && certified {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET, "/config") => {
                // Service names, endpoints and identities: not for other pods.
                if !local_caller {
                    return text(
                        StatusCode::FORBIDDEN,
                        "config is shown to loopback callers only\n",
                    );
                }
                let snapshot = self.store.load_full();
                match serde_json::to_vec_pretty(&*snapshot) {
                    Ok(body) => respond(StatusCode::OK, "application/json", body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                }
            }
            (&Method::POST, "/shutdown") => {
                // Only something on this host may stop the proxy.
                if !local_caller {
                    return text(
                        StatusCode::FORBIDDEN,
                        "shutdown is allowed from loopback only\n",
                    );
                }
                tracing::info!("shutdown requested through the admin server");
                // Not ready from this answer on, before the drain task even runs, so
                // a probe right after it never sees a proxy on its way out as ready.
                self.ready.store(false, Ordering::Release);
                self.shutdown.cancel();
                text(StatusCode::OK, "shutting down\n")
            }
            (_, "/metrics" | "/live" | "/ready" | "/config" | "/shutdown") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
