//! The admission webhook's HTTPS server: `POST /inject` takes an AdmissionReview,
//! `GET /ready` and `GET /live` answer the kubelet's probes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission;
use crate::inject::Injector;

/// The API server sends whole pods; etcd caps an object at 1.5 MiB, so twice that
/// plus the review's envelope is generous.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight reviews get this long after shutdown starts; the API server's own
/// webhook timeout is shorter.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
pub const INJECT_PATH: &str = "/inject";

/// Serves until `shutdown` completes, then stops accepting and drains.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    injector: Arc<Injector>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req| handle(injector.clone(), req));
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after the drain timeout");
    }
}

async fn handle(
    injector: Arc<Injector>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/live") => text(StatusCode::OK, "ok\n".into()),
        (&Method::POST, INJECT_PATH) => {
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(body) => match admission::review(&injector, &body.to_bytes()) {
                    Ok(review) => match serde_json::to_vec(&review) {
                        Ok(json) => Response::builder()
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(json)))
                            .unwrap_or_else(|_| internal()),
                        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                    },
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                },
                Err(e) if e.is::<http_body_util::LengthLimitError>() => text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the limit of {MAX_BODY} bytes\n"),
                ),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("request body: {e}\n")),
            }
        }
        (_, INJECT_PATH | "/ready" | "/live") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| internal())
}

fn internal() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"internal error\n")));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
