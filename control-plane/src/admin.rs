//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/live` and `/ready`, and
//! the live view: the page at `/`, its data at `/api/summary` (JSON) and
//! `/api/events` (server-sent events, one summary a second); `/api/reports` is this
//! replica's proxies' raw reports, for the other replicas.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

use prost::Message as _;

use crate::liveview::{LiveView, page, peers};
use crate::metrics::Metrics;

/// Every admin answer's body: a whole one, or the event stream.
pub type AdminBody = BoxBody<Bytes, Infallible>;

/// What the admin endpoint reports on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once the first valid mesh state is served.
    pub ready: AtomicBool,
    /// What the proxies report, for the live view.
    pub live: Arc<LiveView>,
    /// Turns true when the server stops: ends the event streams, which would
    /// otherwise keep their connections open for ever.
    pub stopping: watch::Receiver<bool>,
    /// This process's id among the replicas, sent with `/api/reports`.
    pub instance: String,
}

/// Serves until `shutdown` resolves. Requests are tiny and answered at once, so open
/// connections are simply left to finish on their own.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually out of file descriptors; keep serving the rest.
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, &req)) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<AdminBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let path = req.uri().path();
    if let Some(asset) = page::asset(path) {
        return typed(Bytes::from_static(asset.body), asset.content_type);
    }
    match path {
        "/metrics" => typed(
            Bytes::from(state.metrics.render()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/api/summary" => match serde_json::to_vec(&state.live.summary(Instant::now())) {
            Ok(json) => typed(Bytes::from(json), "application/json"),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "summary failed\n"),
        },
        "/api/events" => events(state),
        "/api/reports" => {
            let body = state.live.export(Instant::now()).encode_to_vec();
            let mut resp = typed(Bytes::from(body), "application/x-protobuf");
            if let Ok(id) = header::HeaderValue::from_str(&state.instance) {
                resp.headers_mut().insert(peers::REPLICA_HEADER, id);
            }
            resp
        }
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no valid mesh state loaded yet\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

fn typed(body: Bytes, content_type: &'static str) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// How often the event stream sends a summary.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// `text/event-stream`: a `summary` event at once and every second after, until the
/// client leaves or the server stops.
fn events(state: &AdminState) -> Response<AdminBody> {
    let live = Arc::clone(&state.live);
    let stopping = state.stopping.clone();
    let mut tick = tokio::time::interval(EVENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold(
        (live, stopping, tick),
        |(live, mut stopping, mut tick)| async move {
            tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return None,
                _ = tick.tick() => {}
            }
            let json = serde_json::to_string(&live.summary(Instant::now())).ok()?;
            let event = Bytes::from(format!("event: summary\ndata: {json}\n\n"));
            Some((Ok(Frame::data(event)), (live, stopping, tick)))
        },
    );
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}
