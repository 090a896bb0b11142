//! The web service, the entry point: checkout is forwarded to orders; a profile is
//! composed from users and orders, fetched concurrently.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::http_client::{BaseUrl, HttpClient, Reply, TRACEPARENT};
use crate::http_server::{self, Body};

/// Where web's dependencies are.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub orders_url: BaseUrl,
    pub users_url: BaseUrl,
}

struct State {
    config: WebConfig,
    client: HttpClient,
}

/// Serves `POST /checkout` and `GET /profile/{user_id}` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: WebConfig,
    client: HttpClient,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(State { config, client });
    http_server::serve(
        listener,
        move |req| {
            let state = state.clone();
            async move { route(&state, req).await }
        },
        shutdown,
    )
    .await
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (
        req.method().clone(),
        http_server::segments(&path).as_slice(),
    ) {
        (Method::POST, ["checkout"]) => checkout(state, req).await,
        (Method::GET, ["profile", user_id]) => profile(state, user_id).await,
        _ => http_server::not_found(),
    }
}

async fn checkout(state: &State, req: Request<Incoming>) -> Response<Body> {
    let traceparent = req.headers().get(TRACEPARENT).cloned();
    let body = match http_server::read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let url = state.config.orders_url.join("/orders");
    match state.client.post_json_traced(&url, body, traceparent).await {
        // Orders' own answers, including 400 and 402, are the customer's answer.
        Ok(reply) if !reply.status.is_server_error() => {
            http_server::json_bytes(reply.status, reply.body)
        }
        Ok(reply) => dependency_failed("orders", &reply),
        Err(e) => http_server::bad_gateway("orders", format!("orders request failed: {e}")),
    }
}

async fn profile(state: &State, user_id: &str) -> Response<Body> {
    if !user_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return http_server::error(StatusCode::BAD_REQUEST, "invalid user id");
    }
    let user_url = state.config.users_url.join(&format!("/users/{user_id}"));
    let orders_url = state
        .config
        .orders_url
        .join(&format!("/orders?user={user_id}"));
    let (user, orders) = tokio::join!(state.client.get(&user_url), state.client.get(&orders_url));

    let user = match user {
        Ok(reply) if reply.status == StatusCode::NOT_FOUND => {
            return http_server::error(StatusCode::NOT_FOUND, format!("no user {user_id:?}"));
        }
        Ok(reply) if reply.status.is_success() => match parse(&reply.body) {
            Some(user) => user,
            None => return http_server::bad_gateway("users", "users answered invalid JSON"),
        },
        Ok(reply) => return dependency_failed("users", &reply),
        Err(e) => return http_server::bad_gateway("users", format!("users request failed: {e}")),
    };
    let orders = match orders {
        Ok(reply) if reply.status.is_success() => {
            match parse(&reply.body).and_then(|mut v| v.get_mut("orders").map(Value::take)) {
                Some(orders) => orders,
                None => return http_server::bad_gateway("orders", "orders answered invalid JSON"),
            }
        }
        Ok(reply) => return dependency_failed("orders", &reply),
        Err(e) => return http_server::bad_gateway("orders", format!("orders request failed: {e}")),
    };
    http_server::json(
        StatusCode::OK,
        &serde_json::json!({ "user": user, "orders": orders }),
    )
}

fn parse(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// 502 for a dependency's unexpected status, carrying its answer for the operator.
fn dependency_failed(dependency: &str, reply: &Reply) -> Response<Body> {
    let detail = parse(&reply.body)
        .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&reply.body).into_owned()));
    http_server::json(
        StatusCode::BAD_GATEWAY,
        &serde_json::json!({
            "error": format!("{dependency} answered {}", reply.status),
            "dependency": dependency,
            "status": reply.status.as_u16(),
            "detail": detail,
        }),
    )
}
