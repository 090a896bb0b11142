//! Inbound: traffic from the mesh to the local app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, Request, Response};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use crate::detect::{Detected, detect};
use crate::http::body::ProxyBody;
use crate::http::error::{self, is_grpc};
use crate::http::forward::{Target, forward};
use crate::http::pool::Pool;
use crate::http::{ServerLimits, serve};
use crate::listener::Conn;
use crate::metrics::ServiceMetrics;

/// Set by the inbound proxy to the caller's verified identity; anything a client
/// sends under this name is a forgery and is dropped.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("weft-client-id");

pub struct Inbound {
    /// A fixed app address; None under transparent capture, where each connection
    /// goes to the port it was originally sent to.
    app: Option<SocketAddr>,
    pool: Pool,
    metrics: Arc<ServiceMetrics>,
    connect_timeout: Duration,
    detect_timeout: Duration,
    limits: ServerLimits,
    drain: CancellationToken,
}

impl Inbound {
    pub fn new(
        app: Option<SocketAddr>,
        pool: Pool,
        metrics: Arc<ServiceMetrics>,
        connect_timeout: Duration,
        detect_timeout: Duration,
        limits: ServerLimits,
        drain: CancellationToken,
    ) -> Arc<Inbound> {
        Arc::new(Inbound {
            app,
            pool,
            metrics,
            connect_timeout,
            detect_timeout,
            limits,
            drain,
        })
    }

    pub async fn serve_conn(self: Arc<Self>, io: Conn) {
        let Some(app) = self
            .app
            .or_else(|| crate::capture::orig_dst::inbound_app(io.get_ref()))
        else {
            tracing::debug!("inbound connection with no app port to deliver to; closing");
            return;
        };
        let (detected, io) = match detect(io, self.detect_timeout).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "inbound detection failed");
                return;
            }
        };
        match detected {
            Detected::Http1 | Detected::Http2 => {
                let this = self.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move {
                        let grpc = is_grpc(req.headers());
                        let resp = this.handle(req, app).await;
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
                crate::tcp::forward(io, app, self.connect_timeout).await;
            }
        }
    }

    async fn handle(&self, mut req: Request<Incoming>, app: SocketAddr) -> Response<ProxyBody> {
        let start = Instant::now();
        req.headers_mut().remove(CLIENT_ID_HEADER);
        let target = Target {
            addr: app,
            connect_timeout: self.connect_timeout,
            request_timeout: None,
            idle_timeout: None,
            gate: None,
        };
        let resp = forward(&self.pool, req.map(Into::into), &target)
            .await
            .unwrap_or_else(|e| {
                self.metrics.proxy_error(e.reason());
                e.response()
            });
        self.metrics.record(resp.status().as_u16(), start.elapsed());
        resp
    }
}
