//! The notifications service: a CloudEvents sink that remembers what it received,
//! and, with a broker (RabbitMQ or Kafka), a consumer of `order.placed` and
//! `user.signed_up` events that turns each into a notification naming its order or
//! user (`GET /notifications`).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use serde::{Deserialize, Serialize};

use crate::amqp::{self, Subscription};
use crate::cloudevents::{self, Attributes};
use crate::events::EventBroker;
use crate::http_server::{self, Body};
use crate::kafka;
use crate::readiness::{Part, Readiness};

/// How much history the service keeps.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    /// Number of most recent events listed by `GET /events` and notifications by
    /// `GET /notifications`.
    pub keep: usize,
    /// The broker whose events become notifications.
    pub events: Option<EventBroker>,
}

/// The queue notifications consumes from.
pub const QUEUE: &str = "notifications";

#[derive(Default)]
struct Received {
    count: u64,
    recent: VecDeque<Attributes>,
    notifications: Notifications,
}

/// What a customer would be told, for one event from the broker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Notification {
    /// The event type: `order.placed` or `user.signed_up`.
    pub event: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

#[derive(Default)]
struct Notifications {
    count: u64,
    recent: VecDeque<Notification>,
    /// Message ids handled, so a redelivered event (after a broker restart or a
    /// lost ack) is not notified twice; the oldest are forgotten past `MAX_SEEN`.
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
}

/// Redeliveries come soon after the original; remembering this many ids covers
/// them without growing for as long as the service runs.
const MAX_SEEN: usize = 100_000;

/// The notification for an event, or why it cannot be one.
pub fn notification(kind: &str, data: &[u8]) -> Result<Notification, String> {
    let event: serde_json::Value =
        serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let text = |key: &str| {
        event
            .get(key)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    match kind {
        amqp::ORDER_PLACED => {
            let id = event
                .get("id")
                .and_then(serde_json::Value::as_u64)
                .ok_or("order.placed without an id")?;
            Ok(Notification {
                event: kind.to_owned(),
                message: format!(
                    "Order {id} placed: {} x {} for user {}, payment {}",
                    text("quantity"),
                    text("item"),
                    text("user"),
                    text("payment_id")
                ),
                order_id: Some(id),
                user_id: Some(text("user")),
            })
        }
        amqp::USER_SIGNED_UP => {
            let id = text("id");
            if id.is_empty() {
                return Err("user.signed_up without an id".into());
            }
            Ok(Notification {
                event: kind.to_owned(),
                message: format!("Welcome, {} (user {id})", text("name")),
                order_id: None,
                user_id: Some(id),
            })
        }
        other => Err(format!("unknown event {other:?}")),
    }
}

/// Serves `POST /events` and `GET /events` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: NotificationsConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let received = Arc::new(Mutex::new(Received::default()));
    let keep = config.keep;
    // Over AMQP, not ready until its queue is bound: an event published before
    // that reaches no queue and is lost.
    let readiness = Readiness::default();
    let consumer = match config.events.clone() {
        Some(EventBroker::Amqp(url)) => {
            Some(consume_amqp(url, readiness.part(), received.clone(), keep))
        }
        Some(EventBroker::Kafka(addr)) => {
            let received = received.clone();
            Some(tokio::spawn(kafka::consume_forever(addr, move |event| {
                let received = received.clone();
                async move {
                    let id = event.message_id.as_deref();
                    record(&received, keep, &event.kind, id, &event.data);
                }
            })))
        }
        None => None,
    };
    let result = http_server::serve_when_ready(
        listener,
        move |req| {
            let received = received.clone();
            let keep = config.keep;
            async move { route(&received, keep, req).await }
        },
        readiness,
        shutdown,
    )
    .await;
    if let Some(consumer) = consumer {
        consumer.abort();
    }
    result
}

/// Consumes the AMQP queue of notifications, acknowledging each event once recorded.
fn consume_amqp(
    url: String,
    ready: Part,
    received: Arc<Mutex<Received>>,
    keep: usize,
) -> tokio::task::JoinHandle<()> {
    let subscription = Subscription {
        queue: QUEUE.to_owned(),
        keys: vec![
            amqp::ORDER_PLACED.to_owned(),
            amqp::USER_SIGNED_UP.to_owned(),
        ],
    };
    tokio::spawn(amqp::consume_forever(
        url,
        subscription,
        ready,
        move |_, delivery| {
            let received = received.clone();
            async move {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.as_str());
                record(
                    &received,
                    keep,
                    delivery.routing_key.as_str(),
                    id,
                    &delivery.data,
                );
                true
            }
        },
    ))
}

/// Records one event from the broker as a notification, once per message id.
fn record(received: &Mutex<Received>, keep: usize, kind: &str, id: Option<&str>, data: &[u8]) {
    let notification = match notification(kind, data) {
        Ok(n) => n,
        // Acknowledged all the same: a malformed event will not improve on redelivery.
        Err(e) => return tracing::warn!(kind, error = %e, "event dropped"),
    };
    let id = id.map(str::to_owned);
    let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
    let n = &mut received.notifications;
    if let Some(id) = id {
        if n.seen.contains(&id) {
            return tracing::debug!(kind, "duplicate event dropped");
        }
        n.seen.insert(id.clone());
        n.seen_order.push_back(id);
        while n.seen_order.len() > MAX_SEEN {
            if let Some(old) = n.seen_order.pop_front() {
                n.seen.remove(&old);
            }
        }
    }
    tracing::info!(kind, message = %notification.message, "notification");
    n.count += 1;
    n.recent.push_back(notification);
    while n.recent.len() > keep {
        n.recent.pop_front();
    }
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
        (&Method::GET, "/notifications") => {
            let received = received.lock().unwrap_or_else(PoisonError::into_inner);
            let n = &received.notifications;
            http_server::json(
                StatusCode::OK,
                &serde_json::json!({ "count": n.count, "recent": n.recent }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_event_becomes_a_notification_naming_the_order() {
        let order = serde_json::json!({
            "id": 17, "user": "7", "item": "book", "quantity": 2, "payment_id": "pay-9"
        });
        let n = notification(amqp::ORDER_PLACED, order.to_string().as_bytes()).expect("valid");
        assert_eq!(n.order_id, Some(17));
        assert_eq!(
            n.message,
            "Order 17 placed: 2 x book for user 7, payment pay-9"
        );
        let user = serde_json::json!({"id": "1001", "name": "Ada"});
        let n = notification(amqp::USER_SIGNED_UP, user.to_string().as_bytes()).expect("valid");
        assert_eq!(n.user_id.as_deref(), Some("1001"));
        assert_eq!(n.message, "Welcome, Ada (user 1001)");
        assert!(notification(amqp::ORDER_PLACED, b"{}").is_err());
        assert!(notification("other", b"{}").is_err());
    }

    #[test]
    fn a_redelivered_event_is_notified_once() {
        let received = Mutex::new(Received::default());
        let order = serde_json::json!({"id": 3, "user": "1", "item": "pen", "quantity": 1});
        let delivery = |tag| {
            let mut d = lapin::message::Delivery::mock(
                tag,
                amqp::EVENTS_EXCHANGE.into(),
                amqp::ORDER_PLACED.into(),
                tag > 1,
                order.to_string().into_bytes(),
            );
            d.properties = lapin::BasicProperties::default().with_message_id("orders-3".into());
            d
        };
        for d in [delivery(1), delivery(2)] {
            let id = d.properties.message_id().as_ref().map(|id| id.as_str());
            record(&received, 10, d.routing_key.as_str(), id, &d.data);
        }
        let received = received.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(received.notifications.count, 1);
        assert_eq!(received.notifications.recent[0].order_id, Some(3));
    }
}
