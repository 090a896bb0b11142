//! The example services wired together in-process on 127.0.0.1, without any mesh:
//! web → orders → payments (gRPC), orders → notifications (CloudEvents), web → users.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{bind, body, client, dead_addr, eventually, json};
use http::StatusCode;
use serde_json::json;
use weft_examples::http_client::HttpClient;
use weft_examples::http_proxy::ProxySettings;
use weft_examples::notifications::{self, NotificationsConfig};
use weft_examples::orders::{self, OrdersConfig};
use weft_examples::payments::proto::ChargeRequest;
use weft_examples::payments::proto::payments_client::PaymentsClient;
use weft_examples::payments::{self, PaymentsConfig};
use weft_examples::users::{self, UsersConfig};
use weft_examples::web::{self, WebConfig};

const DECLINE_OVER: u64 = 10_000;

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

async fn start_payments() -> SocketAddr {
    let (listener, addr) = bind().await;
    let config = PaymentsConfig {
        decline_over_cents: DECLINE_OVER,
    };
    tokio::spawn(payments::serve(listener, config, std::future::pending()));
    addr
}

async fn start_notifications() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(notifications::serve(
        listener,
        NotificationsConfig {
            keep: 5,
            events: None,
        },
        std::future::pending(),
    ));
    addr
}

async fn start_users() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(users::serve(
        listener,
        UsersConfig {
            count: 100,
            events: None,
        },
        std::future::pending(),
    ));
    addr
}

async fn start_orders(payments: SocketAddr, notifications: SocketAddr) -> SocketAddr {
    let (listener, addr) = bind().await;
    let config = OrdersConfig {
        payments: url(payments).parse().expect("payments URI"),
        events_url: Some(
            format!("{}/events", url(notifications))
                .parse()
                .expect("events URI"),
        ),
        event_source: "/test/orders".into(),
        payments_timeout: Duration::from_secs(5),
        max_orders: 100,
        broker: None,
        events: None,
        publish_patience: Duration::from_secs(5),
    };
    let events = HttpClient::new(ProxySettings::direct(), Duration::from_secs(5));
    tokio::spawn(orders::serve(
        listener,
        config,
        events,
        std::future::pending(),
    ));
    addr
}

async fn start_web(orders: SocketAddr, users: SocketAddr) -> SocketAddr {
    let (listener, addr) = bind().await;
    let config = WebConfig {
        orders_url: url(orders).parse().expect("orders URL"),
        users_url: url(users).parse().expect("users URL"),
        payments: None,
    };
    let client = HttpClient::new(ProxySettings::direct(), Duration::from_secs(5));
    tokio::spawn(web::serve(listener, config, client, std::future::pending()));
    addr
}

struct Services {
    web: SocketAddr,
    orders: SocketAddr,
    users: SocketAddr,
    notifications: SocketAddr,
    payments: SocketAddr,
}

async fn start_all() -> Services {
    let payments = start_payments().await;
    let notifications = start_notifications().await;
    let users = start_users().await;
    let orders = start_orders(payments, notifications).await;
    let web = start_web(orders, users).await;
    Services {
        web,
        orders,
        users,
        notifications,
        payments,
    }
}

async fn checkout(web: SocketAddr, order: serde_json::Value) -> weft_examples::http_client::Reply {
    client()
        .post_json(&format!("{}/checkout", url(web)), body(order))
        .await
        .expect("web answers")
}

#[tokio::test]
async fn checkout_places_a_paid_order_and_notifies() {
    let s = start_all().await;
    let reply = checkout(
        s.web,
        json!({"item": "book", "quantity": 2, "amount_cents": 2500, "user": "7"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let order = json(&reply);
    assert_eq!(order["item"], "book");
    assert_eq!(order["status"], "placed");
    assert!(
        order["payment_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("pay-"))
    );
    let id = order["id"].as_u64().expect("numeric order id");

    let stored = client()
        .get(&format!("{}/orders/{id}", url(s.orders)))
        .await
        .expect("orders answers");
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(json(&stored), order);

    let events_url = format!("{}/events", url(s.notifications));
    let events = eventually("the order.placed event", || async {
        let reply = client().get(&events_url).await.ok()?;
        let events = json(&reply);
        (events["count"] == 1).then_some(events)
    })
    .await;
    let event = &events["recent"][0];
    assert_eq!(event["type"], "order.placed");
    assert_eq!(event["source"], "/test/orders");
    assert_eq!(event["subject"], id.to_string());
    assert!(
        event["id"]
            .as_str()
            .is_some_and(|i| i.ends_with(&format!("-{id}")))
    );
}

#[tokio::test]
async fn profile_combines_the_user_and_their_orders() {
    let s = start_all().await;
    for (user, item) in [("42", "lamp"), ("42", "mug"), ("43", "pen")] {
        let reply = checkout(
            s.web,
            json!({"item": item, "quantity": 1, "amount_cents": 900, "user": user}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let reply = client()
        .get(&format!("{}/profile/42", url(s.web)))
        .await
        .expect("web answers");
    assert_eq!(reply.status, StatusCode::OK);
    let profile = json(&reply);
    assert_eq!(profile["user"]["id"], "42");
    assert!(
        profile["user"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    let items: Vec<_> = profile["orders"]
        .as_array()
        .expect("orders array")
        .iter()
        .map(|o| o["item"].as_str().expect("item").to_owned())
        .collect();
    assert_eq!(items, ["lamp", "mug"]);

    let reply = client()
        .get(&format!("{}/profile/44", url(s.web)))
        .await
        .expect("web answers");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(json(&reply)["orders"], json!([]));
}

#[tokio::test]
async fn orders_lists_by_user() {
    let s = start_all().await;
    for user in ["1", "2", "1"] {
        let reply = checkout(
            s.web,
            json!({"item": "x", "quantity": 1, "amount_cents": 100, "user": user}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let list = |query: &'static str| {
        let u = format!("{}/orders{query}", url(s.orders));
        async move {
            json(&client().get(&u).await.expect("orders answers"))["orders"]
                .as_array()
                .expect("array")
                .len()
        }
    };
    assert_eq!(list("?user=1").await, 2);
    assert_eq!(list("?user=2").await, 1);
    assert_eq!(list("?user=3").await, 0);
    assert_eq!(list("").await, 3);
}

#[tokio::test]
async fn bad_json_is_400() {
    let s = start_all().await;
    for target in [
        format!("{}/checkout", url(s.web)),
        format!("{}/orders", url(s.orders)),
    ] {
        for bad in [
            "{not json",
            r#"{"item": "book"}"#,
            r#"{"item": "", "quantity": 1, "amount_cents": 5}"#,
            r#"{"item": "a", "quantity": 0, "amount_cents": 5}"#,
        ] {
            let reply = client()
                .post_json(&target, bytes::Bytes::from_static(bad.as_bytes()))
                .await
                .expect("service answers");
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{target} {bad}");
            assert!(json(&reply)["error"].is_string());
        }
    }
}

#[tokio::test]
async fn zero_amount_is_400_from_payments_invalid_argument() {
    let s = start_all().await;
    let reply = checkout(
        s.web,
        json!({"item": "book", "quantity": 1, "amount_cents": 0}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        json(&reply)["error"]
            .as_str()
            .is_some_and(|e| e.contains("amount_cents"))
    );
}

#[tokio::test]
async fn charge_over_the_limit_is_declined_and_not_stored() {
    let s = start_all().await;
    let reply = checkout(
        s.web,
        json!({"item": "car", "quantity": 1, "amount_cents": DECLINE_OVER + 1, "user": "9"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(json(&reply)["error"], "payment declined");
    let list = client()
        .get(&format!("{}/orders?user=9", url(s.orders)))
        .await
        .expect("orders answers");
    assert_eq!(json(&list)["orders"], json!([]));
}

#[tokio::test]
async fn payments_grpc_approves_declines_and_rejects() {
    let addr = start_payments().await;
    let mut payments = PaymentsClient::connect(url(addr))
        .await
        .expect("connect payments");
    let charge = |amount_cents| ChargeRequest {
        order_id: "1".into(),
        amount_cents,
        currency: "EUR".into(),
    };
    let ok = payments
        .charge(charge(DECLINE_OVER))
        .await
        .expect("charge")
        .into_inner();
    assert!(ok.approved);
    let declined = payments
        .charge(charge(DECLINE_OVER + 1))
        .await
        .expect("charge")
        .into_inner();
    assert!(!declined.approved);
    assert_ne!(ok.payment_id, declined.payment_id);
    let zero = payments
        .charge(charge(0))
        .await
        .expect_err("zero is invalid");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    let mut bad_currency = charge(5);
    bad_currency.currency = "euro".into();
    let err = payments
        .charge(bad_currency)
        .await
        .expect_err("currency is invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_orders_users_and_routes_are_404() {
    let s = start_all().await;
    for target in [
        format!("{}/orders/999", url(s.orders)),
        format!("{}/orders/abc", url(s.orders)),
        format!("{}/users/0", url(s.users)),
        format!("{}/users/101", url(s.users)),
        format!("{}/profile/101", url(s.web)),
        format!("{}/nowhere", url(s.web)),
        format!("{}/events/1", url(s.notifications)),
    ] {
        let reply = client().get(&target).await.expect("service answers");
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{target}");
        assert!(json(&reply)["error"].is_string(), "{target}");
    }
}

#[tokio::test]
async fn payments_down_is_502_naming_payments() {
    let notifications = start_notifications().await;
    let users = start_users().await;
    let orders = start_orders(dead_addr().await, notifications).await;
    let web = start_web(orders, users).await;
    let order = json!({"item": "book", "quantity": 1, "amount_cents": 100});

    let direct = client()
        .post_json(&format!("{}/orders", url(orders)), body(order.clone()))
        .await
        .expect("orders answers");
    assert_eq!(direct.status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&direct)["dependency"], "payments");

    // Through web, the failing hop is orders, which carries payments' story as detail.
    let reply = checkout(web, order).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let error = json(&reply);
    assert_eq!(error["dependency"], "orders");
    assert_eq!(error["status"], 502);
    assert_eq!(error["detail"]["dependency"], "payments");
}

#[tokio::test]
async fn orders_down_is_502_naming_orders() {
    let users = start_users().await;
    let web = start_web(dead_addr().await, users).await;
    let reply = checkout(
        web,
        json!({"item": "book", "quantity": 1, "amount_cents": 100}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&reply)["dependency"], "orders");
    let reply = client()
        .get(&format!("{}/profile/1", url(web)))
        .await
        .expect("web answers");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&reply)["dependency"], "orders");
}

#[tokio::test]
async fn users_down_is_502_naming_users() {
    let payments = start_payments().await;
    let notifications = start_notifications().await;
    let orders = start_orders(payments, notifications).await;
    let web = start_web(orders, dead_addr().await).await;
    let reply = client()
        .get(&format!("{}/profile/1", url(web)))
        .await
        .expect("web answers");
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&reply)["dependency"], "users");
}

#[tokio::test]
async fn checkout_succeeds_while_notifications_is_down() {
    let payments = start_payments().await;
    let orders = start_orders(payments, dead_addr().await).await;
    let users = start_users().await;
    let web = start_web(orders, users).await;
    let reply = checkout(
        web,
        json!({"item": "book", "quantity": 1, "amount_cents": 100}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn notifications_validates_cloudevent_headers() {
    let addr = start_notifications().await;
    let events_url = format!("{}/events", url(addr));
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let events_url = events_url.clone();
        async move {
            let mut req = http::Request::post(events_url.as_str());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let req = req
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .expect("request");
            client()
                .send(req)
                .await
                .expect("notifications answers")
                .status
        }
    };
    let full = vec![
        ("ce-specversion", "1.0"),
        ("ce-id", "e-1"),
        ("ce-source", "/test"),
        ("ce-type", "order.placed"),
        ("content-type", "application/json"),
    ];
    for missing in ["ce-specversion", "ce-id", "ce-source", "ce-type"] {
        let partial = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        assert_eq!(
            send(partial).await,
            StatusCode::BAD_REQUEST,
            "without {missing}"
        );
    }
    let mut structured = full.clone();
    structured.retain(|(k, _)| *k != "content-type");
    structured.push(("content-type", "application/cloudevents+json"));
    assert_eq!(send(structured).await, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(send(full.clone()).await, StatusCode::ACCEPTED);

    // Only the last `keep` (5) ids are listed; the count covers everything accepted.
    for _ in 0..6 {
        assert_eq!(send(full.clone()).await, StatusCode::ACCEPTED);
    }
    let events = json(
        &client()
            .get(&events_url)
            .await
            .expect("notifications answers"),
    );
    assert_eq!(events["count"], 7);
    assert_eq!(events["recent"].as_array().expect("array").len(), 5);
}

#[tokio::test]
async fn every_service_answers_its_health_check() {
    let s = start_all().await;
    for addr in [s.web, s.orders, s.users, s.notifications] {
        let reply = client()
            .get(&format!("{}/healthz", url(addr)))
            .await
            .expect("service answers");
        assert_eq!(reply.status, StatusCode::OK, "{addr}");
        assert_eq!(json(&reply)["status"], "ok");
    }

    let channel = tonic::transport::Endpoint::from_shared(url(s.payments))
        .expect("payments URI")
        .connect()
        .await
        .expect("connect payments");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "payments.v1.Payments"] {
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            reply.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
}
