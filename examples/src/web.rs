//! The web service, the entry point: checkout is forwarded to orders; a profile is
//! composed from users and orders, fetched concurrently, and the same composition
//! with payments is offered as GraphQL (`POST /graphql`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::graphql::{self, Dependencies, WebSchema};
use crate::http_client::{BaseUrl, HttpClient, Reply, TRACEPARENT};
use crate::http_server::{self, Body};
use crate::payments::proto::payments_client::PaymentsClient;

/// Where web's dependencies are.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub orders_url: BaseUrl,
    pub users_url: BaseUrl,
    /// gRPC address of payments, for GraphQL's `payment` field.
    pub payments: Option<http::Uri>,
}

struct State {
    config: WebConfig,
    client: HttpClient,
    graphql: WebSchema,
}

/// Serves `POST /checkout` and `GET /profile/{user_id}` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: WebConfig,
    client: HttpClient,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let payments = config.payments.clone().map(|uri| {
        let channel = tonic::transport::Endpoint::from(uri)
            .connect_timeout(std::time::Duration::from_secs(3))
            .connect_lazy();
        PaymentsClient::new(channel)
    });
    let deps = Arc::new(Dependencies {
        client: client.clone(),
        users_url: config.users_url.clone(),
        orders_url: config.orders_url.clone(),
        payments,
    });
    let state = Arc::new(State {
        config,
        client,
        graphql: graphql::schema(deps),
    });
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
        (Method::POST, ["signup"]) => sign_up(state, req).await,
        (Method::POST, ["graphql"]) => graphql_query(state, req).await,
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

/// Runs one GraphQL request (`{"query", "variables"?, "operationName"?}`); errors
/// in resolvers come back in the answer's `errors`, as GraphQL has it.
async fn graphql_query(state: &State, req: Request<Incoming>) -> Response<Body> {
    let body = match http_server::read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return http_server::error(
                StatusCode::BAD_REQUEST,
                format!("not a GraphQL request: {e}"),
            );
        }
    };
    let response = state.graphql.execute(request).await;
    http_server::json(StatusCode::OK, &response)
}

/// A sign-up goes to users, which announces the new user on the broker.
async fn sign_up(state: &State, req: Request<Incoming>) -> Response<Body> {
    let body = match http_server::read_body(req).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let url = state.config.users_url.join("/users");
    match state.client.post_json(&url, body).await {
        Ok(reply) if !reply.status.is_server_error() => {
            http_server::json_bytes(reply.status, reply.body)
        }
        Ok(reply) => dependency_failed("users", &reply),
        Err(e) => http_server::bad_gateway("users", format!("users request failed: {e}")),
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
