//! Outgoing HTTP through `http_proxy`: absolute-form requests to the proxy, unless
//! `no_proxy` matches the destination.

mod common;

use std::time::Duration;

use common::{Recorder, client, eventually};
use http::StatusCode;
use weft_examples::http_client::HttpClient;
use weft_examples::http_proxy::ProxySettings;

fn via(proxy: &Recorder, no_proxy: Option<&str>) -> HttpClient {
    let settings = ProxySettings::parse(Some(&format!("http://{}", proxy.addr)), no_proxy)
        .expect("valid proxy settings");
    HttpClient::new(settings, Duration::from_secs(5))
}

#[tokio::test]
async fn requests_go_to_the_proxy_in_absolute_form() {
    let proxy = Recorder::start().await;
    let client = via(&proxy, None);
    // The names need not resolve: only the proxy is dialled.
    let reply = client
        .get("http://orders.mesh.invalid:8081/orders?user=7")
        .await
        .expect("proxy answers");
    assert_eq!(reply.status, StatusCode::OK);
    let reply = client
        .post_json(
            "http://notifications.mesh.invalid/events",
            bytes::Bytes::from_static(b"{}"),
        )
        .await
        .expect("proxy answers");
    assert_eq!(reply.status, StatusCode::OK);

    let heads = proxy.heads();
    assert_eq!(
        proxy.request_lines(),
        [
            "GET http://orders.mesh.invalid:8081/orders?user=7 HTTP/1.1",
            "POST http://notifications.mesh.invalid/events HTTP/1.1",
        ]
    );
    let host = |head: &str| {
        head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("host: ")
                .map(str::to_owned)
        })
    };
    assert_eq!(host(&heads[0]).as_deref(), Some("orders.mesh.invalid:8081"));
    assert_eq!(
        host(&heads[1]).as_deref(),
        Some("notifications.mesh.invalid")
    );
}

#[tokio::test]
async fn no_proxy_destinations_are_called_directly_in_origin_form() {
    let proxy = Recorder::start().await;
    let server = Recorder::start().await;
    let client = via(&proxy, Some("localhost,127.0.0.1"));
    let reply = client
        .get(&format!("http://{}/users/1", server.addr))
        .await
        .expect("server answers");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.request_lines(), ["GET /users/1 HTTP/1.1"]);
    assert!(proxy.heads().is_empty());
}

#[tokio::test]
async fn without_a_proxy_requests_use_origin_form() {
    let server = Recorder::start().await;
    let reply = client()
        .get(&format!("http://{}/orders/3", server.addr))
        .await
        .expect("server answers");
    assert_eq!(reply.status, StatusCode::OK);
    let lines = eventually("the request", || async {
        let lines = server.request_lines();
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(lines, ["GET /orders/3 HTTP/1.1"]);
}
