//! The small HTTP/1.1 server loop and JSON responses shared by the REST examples.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::readiness::Readiness;

/// Response body type of every example handler.
pub type Body = Full<Bytes>;

/// Largest request body a handler reads; the examples exchange small JSON documents.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How long in-flight requests may take to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 on `listener` with `handler` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (up to a few seconds).
///
/// `GET /healthz` is answered here for every service, so probes work the same everywhere.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_when_ready(listener, handler, Readiness::default(), shutdown).await
}

/// As `serve`, with `GET /healthz` answering 503 until `readiness` is ready.
pub async fn serve_when_ready<H, F>(
    listener: TcpListener,
    handler: H,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning on the error.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                let readiness = readiness.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let ready = readiness.is_ready();
                    async move {
                        if req.method() == Method::GET && req.uri().path() == "/healthz" {
                            return Ok::<_, Infallible>(if ready {
                                json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
                            } else {
                                json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "starting"}))
                            });
                        }
                        Ok(handler(req).await)
                    }
                });
                let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish in time; closing them");
        }
    }
    Ok(())
}

/// A JSON response with `status`.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a response");
            response(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"cannot serialise the response"}"#.to_vec(),
            )
        }
    }
}

/// A raw JSON body passed through from a dependency.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    response(status, body)
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// 502 naming the dependency that failed, so an operator sees which hop broke.
pub fn bad_gateway(dependency: &str, message: impl std::fmt::Display) -> Response<Body> {
    json(
        StatusCode::BAD_GATEWAY,
        &serde_json::json!({ "error": message.to_string(), "dependency": dependency }),
    )
}

/// 404 for any route a service does not have.
pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not found")
}

/// Reads a request body of at most [`MAX_BODY_BYTES`]; the error is the response to send.
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// Parses a JSON request body; malformed JSON is a 400 naming the problem.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<Body>> {
    let body = read_body(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// The path split on `/` without empty segments: `/orders/7` is `["orders", "7"]`.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The first value of query parameter `name`, undecoded.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(key, value)| (key == name).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_finds_the_first_value() {
        assert_eq!(query_param(Some("user=7&x=1"), "user"), Some("7"));
        assert_eq!(query_param(Some("x=1&user=8&user=9"), "user"), Some("8"));
        assert_eq!(query_param(Some("flag&user="), "user"), Some(""));
        assert_eq!(query_param(Some("users=1"), "user"), None);
        assert_eq!(query_param(None, "user"), None);
    }

    #[test]
    fn segments_ignore_empty_parts() {
        assert_eq!(segments("/orders/7/"), vec!["orders", "7"]);
        assert!(segments("/").is_empty());
    }
}
