//! The admin server: metrics, health, the current snapshot, and shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;

pub struct Admin {
    pub metrics: Metrics,
    pub store: SnapshotStore,
    /// False until every listener is bound and a snapshot is loaded, and again
    /// once draining starts, so no new traffic is sent to a proxy on its way out.
    pub ready: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
    /// With mTLS on, not ready while the proxy holds no valid certificate.
    pub identity: Option<Arc<crate::identity::Identity>>,
}

impl Admin {
    pub fn spawn(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
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
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, Infallible>(this.handle(req, peer)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }

    fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
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
                let snapshot = self.store.load_full();
                match serde_json::to_vec_pretty(&*snapshot) {
                    Ok(body) => respond(StatusCode::OK, "application/json", body),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
                }
            }
            (&Method::POST, "/shutdown") => {
                // Only something on this host may stop the proxy.
                if !peer.ip().is_loopback() {
                    return text(
                        StatusCode::FORBIDDEN,
                        "shutdown is allowed from loopback only\n",
                    );
                }
                tracing::info!("shutdown requested through the admin server");
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
