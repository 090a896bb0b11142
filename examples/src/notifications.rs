//! The notifications service: a CloudEvents sink that remembers what it received.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::cloudevents::{self, Attributes};
use crate::http_server::{self, Body};

/// How much history the service keeps.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Number of most recent events listed by `GET /events`.
    pub keep: usize,
}

#[derive(Default)]
struct Received {
    count: u64,
    recent: VecDeque<Attributes>,
}

/// Serves `POST /events` and `GET /events` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: NotificationsConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let received = Arc::new(Mutex::new(Received::default()));
    http_server::serve(
        listener,
        move |req| {
            let received = received.clone();
            let keep = config.keep;
            async move { route(&received, keep, req).await }
        },
        shutdown,
    )
    .await
}

async fn route(received: &Mutex<Received>, keep: usize, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/events") => accept(received, keep, req).await,
        (&Method::GET, "/events") => {
            let received = received.lock().unwrap_or_else(PoisonError::into_inner);
            http_server::json(
                StatusCode::OK,
                &serde_json::json!({ "count": received.count, "recent": received.recent }),
            )
        }
        _ => http_server::not_found(),
    }
}

async fn accept(received: &Mutex<Received>, keep: usize, req: Request<Incoming>) -> Response<Body> {
    let structured = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/cloudevents"));
    if structured {
        return http_server::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only binary-mode CloudEvents (ce-* headers) are accepted",
        );
    }
    let attributes = match cloudevents::attributes(req.headers()) {
        Ok(attributes) => attributes,
        Err(e) => return http_server::error(StatusCode::BAD_REQUEST, e),
    };
    // Read the data so the connection stays reusable; its content is not needed.
    if let Err(resp) = http_server::read_body(req).await {
        return resp;
    }
    tracing::info!(id = %attributes.id, kind = %attributes.kind, source = %attributes.source, "event received");
    let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
    received.count += 1;
    received.recent.push_back(attributes.clone());
    while received.recent.len() > keep {
        received.recent.pop_front();
    }
    http_server::json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "accepted": attributes.id }),
    )
}
