//! The orders service: REST/JSON in front of a synchronous gRPC call to payments and an
//! asynchronous `order.placed` CloudEvent to whoever listens at the events URL. With a
//! AMQP broker, it first asks inventory to reserve the stock (request-reply over the
//! broker); with an event broker (RabbitMQ or Kafka) it publishes `order.placed`
//! there, confirmed before it answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::amqp::{self, AmqpError, RequestClient};
use crate::cloudevents;
use crate::events::{EventBroker, EventSink};
use crate::http_client::HttpClient;
use crate::http_server::{self, Body};
use crate::inventory::{Release, Released, Reservation, Reserve};
use crate::payments::proto::ChargeRequest;
use crate::payments::proto::payments_client::PaymentsClient;

/// The CloudEvents type of the event published for each placed order.
pub const ORDER_PLACED: &str = "order.placed";

/// How the orders service reaches its dependencies.
#[derive(Debug, Clone)]
pub struct OrdersConfig {
    /// gRPC address of payments, e.g. `http://payments:8083`.
    pub payments: Uri,
    /// Where `order.placed` events are POSTed; none means events are not published.
    pub events_url: Option<Uri>,
    /// The `ce-source` of published events.
    pub event_source: String,
    /// Deadline of each call to payments.
    pub payments_timeout: Duration,
    /// Orders kept in memory; the oldest are forgotten beyond this.
    pub max_orders: usize,
    /// The AMQP broker stock reservations go to.
    pub broker: Option<BrokerConfig>,
    /// The broker `order.placed` events go to.
    pub events: Option<EventBroker>,
    /// How long publishing an event keeps trying (reconnecting) before the order
    /// is answered with the event unconfirmed.
    pub publish_patience: Duration,
}

/// How orders uses the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub url: String,
    /// How long a reservation waits for inventory's answer.
    pub inventory_timeout: Duration,
}

/// A request to place an order.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    pub item: String,
    pub quantity: u32,
    pub amount_cents: u64,
    #[serde(default = "anonymous")]
    pub user: String,
    #[serde(default = "euro")]
    pub currency: String,
}

fn anonymous() -> String {
    "anonymous".to_owned()
}

fn euro() -> String {
    "EUR".to_owned()
}

/// A placed (paid) order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub id: u64,
    pub user: String,
    pub item: String,
    pub quantity: u32,
    pub amount_cents: u64,
    pub currency: String,
    pub payment_id: String,
    pub status: String,
    /// Stock of the item left after this order's reservation (with a broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_remaining: Option<u64>,
    /// "confirmed" once the broker has the `order.placed` event, else why not
    /// (with a broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

struct Store {
    next_id: u64,
    orders: BTreeMap<u64, Order>,
}

struct State {
    config: OrdersConfig,
    store: Mutex<Store>,
    payments: PaymentsClient<Channel>,
    events: HttpClient,
    broker: Option<Broker>,
    event_sink: Option<EventSink>,
    /// Distinguishes this process's event ids from another replica's.
    instance: String,
}

struct Broker {
    inventory: RequestClient,
    inventory_timeout: Duration,
}

impl State {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // The store holds plain data that a panicking holder cannot leave half-written.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves the orders API on `listener` until `shutdown` completes. Payments is dialled
/// lazily, so orders starts (and answers 502) while payments is down.
pub async fn serve(
    listener: TcpListener,
    config: OrdersConfig,
    events: HttpClient,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let channel = Endpoint::from(config.payments.clone())
        .connect_timeout(Duration::from_secs(3))
        .timeout(config.payments_timeout)
        .connect_lazy();
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let broker = config.broker.as_ref().map(|b| Broker {
        inventory: RequestClient::new(&b.url),
        inventory_timeout: b.inventory_timeout,
    });
    let event_sink = config
        .events
        .as_ref()
        .map(|broker| EventSink::new(broker, config.publish_patience));
    let state = Arc::new(State {
        broker,
        event_sink,
        config,
        store: Mutex::new(Store {
            next_id: 1,
            orders: BTreeMap::new(),
        }),
        payments: PaymentsClient::new(channel),
        events,
        instance: format!("{started:x}-{:x}", std::process::id()),
    });
    http_server::serve(
        listener,
        move |req| {
            let state = state.clone();
            async move { route(state, req).await }
        },
        shutdown,
    )
    .await
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (
        req.method().clone(),
        http_server::segments(&path).as_slice(),
    ) {
        (Method::POST, ["orders"]) => place(state, req).await,
        (Method::GET, ["orders"]) => list(&state, req.uri().query()),
        (Method::GET, ["orders", id]) => get(&state, id),
        _ => http_server::not_found(),
    }
}

async fn place(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let traceparent = req
        .headers()
        .get(crate::http_client::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<tonic::metadata::MetadataValue<_>>().ok());
    let new: NewOrder = match http_server::read_json(req).await {
        Ok(new) => new,
        Err(resp) => return resp,
    };
    if new.item.trim().is_empty() {
        return http_server::error(StatusCode::BAD_REQUEST, "item must not be empty");
    }
    if new.quantity == 0 {
        return http_server::error(StatusCode::BAD_REQUEST, "quantity must be at least 1");
    }
    let id = {
        let mut store = state.store();
        let id = store.next_id;
        store.next_id += 1;
        id
    };
    let stock_remaining = match &state.broker {
        Some(broker) => match reserve(broker, id, &new).await {
            Ok(reservation) if reservation.reserved => Some(reservation.remaining),
            Ok(reservation) => {
                return http_server::json(
                    StatusCode::CONFLICT,
                    &serde_json::json!({
                        "error": "out of stock",
                        "item": reservation.item,
                        "remaining": reservation.remaining,
                    }),
                );
            }
            Err(e @ AmqpError::NoAnswer { .. }) => {
                tracing::warn!(order_id = id, error = %e, "inventory did not answer");
                return http_server::json(
                    StatusCode::GATEWAY_TIMEOUT,
                    &serde_json::json!({
                        "error": format!("inventory: {e}"),
                        "dependency": "inventory",
                    }),
                );
            }
            Err(e) => {
                tracing::warn!(order_id = id, error = %e, "reservation failed");
                return http_server::bad_gateway("inventory", format!("inventory: {e}"));
            }
        },
        None => None,
    };
    let charge = ChargeRequest {
        order_id: id.to_string(),
        amount_cents: new.amount_cents,
        currency: new.currency.clone(),
    };
    // The trace goes on to payments with the charge.
    let mut charge = tonic::Request::new(charge);
    if let Some(tp) = traceparent {
        charge
            .metadata_mut()
            .insert(crate::http_client::TRACEPARENT, tp);
    }
    let reply = match state.payments.clone().charge(charge).await {
        Ok(reply) => reply.into_inner(),
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            release_if_reserved(&state, id, stock_remaining).await;
            return http_server::error(
                StatusCode::BAD_REQUEST,
                format!("payments rejected the charge: {}", status.message()),
            );
        }
        Err(status) => {
            tracing::warn!(order_id = id, code = ?status.code(), message = status.message(), "payments call failed");
            release_if_reserved(&state, id, stock_remaining).await;
            return http_server::bad_gateway(
                "payments",
                format!(
                    "payments call failed: {:?}: {}",
                    status.code(),
                    status.message()
                ),
            );
        }
    };
    if !reply.approved {
        let mut body =
            serde_json::json!({"error": "payment declined", "payment_id": reply.payment_id});
        if let Some(released) = release_if_reserved(&state, id, stock_remaining).await {
            body["stock_released"] = released.quantity.into();
            body["stock_remaining"] = released.remaining.into();
        }
        return http_server::json(StatusCode::PAYMENT_REQUIRED, &body);
    }
    let order = Order {
        id,
        user: new.user,
        item: new.item,
        quantity: new.quantity,
        amount_cents: new.amount_cents,
        currency: new.currency,
        payment_id: reply.payment_id,
        status: "placed".to_owned(),
        stock_remaining,
        event: None,
    };
    let mut order = order;
    if let Some(sink) = &state.event_sink {
        order.event = Some(publish_to_broker(&state, sink, &order).await);
    }
    {
        let mut store = state.store();
        store.orders.insert(id, order.clone());
        while store.orders.len() > state.config.max_orders.max(1) {
            store.orders.pop_first();
        }
    }
    tracing::info!(order_id = id, user = %order.user, "order placed");
    publish_placed(&state, &order);
    let mut resp = http_server::json(StatusCode::CREATED, &order);
    if let Ok(location) = header::HeaderValue::from_str(&format!("/orders/{id}")) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

/// Asks inventory, over the broker, to reserve the order's stock.
async fn reserve(broker: &Broker, order_id: u64, new: &NewOrder) -> Result<Reservation, AmqpError> {
    let request = Reserve {
        order_id,
        item: new.item.clone(),
        quantity: new.quantity,
    };
    let body = serde_json::to_vec(&request).unwrap_or_default();
    let answer = broker
        .inventory
        .call(amqp::INVENTORY_QUEUE, &body, broker.inventory_timeout)
        .await?;
    serde_json::from_slice(&answer)
        .map_err(|e| AmqpError::BadAnswer(format!("not a reservation: {e}")))
}

/// Gives the stock reserved for order `id` back to inventory (over the broker)
/// when the order is not placed after all; `stock_remaining` is what the
/// reservation left, `None` when nothing was reserved. A failed release is logged:
/// the customer's answer is about the payment.
async fn release_if_reserved(
    state: &State,
    id: u64,
    stock_remaining: Option<u64>,
) -> Option<Released> {
    let broker = state.broker.as_ref()?;
    stock_remaining?;
    let body = serde_json::to_vec(&Release { order_id: id }).unwrap_or_default();
    let answer = broker
        .inventory
        .call(
            amqp::INVENTORY_RELEASE_QUEUE,
            &body,
            broker.inventory_timeout,
        )
        .await;
    match answer.map(|a| serde_json::from_slice::<Released>(&a)) {
        Ok(Ok(released)) => {
            tracing::info!(
                order_id = id,
                quantity = released.quantity,
                "stock released"
            );
            Some(released)
        }
        Ok(Err(e)) => {
            tracing::warn!(order_id = id, error = %e, "inventory's release answer is not one");
            None
        }
        Err(e) => {
            tracing::warn!(order_id = id, error = %e, "stock not released");
            None
        }
    }
}

/// Publishes `order.placed` to the broker and waits for its confirm; says how that
/// went, for the order's `event` field.
async fn publish_to_broker(state: &State, sink: &EventSink, order: &Order) -> String {
    let message_id = format!("{}-{}", state.instance, order.id);
    let body = match serde_json::to_vec(order) {
        Ok(body) => body,
        Err(e) => return format!("not published: {e}"),
    };
    match sink.publish(amqp::ORDER_PLACED, &message_id, &body).await {
        Ok(()) => "confirmed".to_owned(),
        Err(e) => {
            tracing::warn!(order_id = order.id, error = %e, "order.placed not confirmed");
            format!("not confirmed: {e}")
        }
    }
}

/// Publishes `order.placed` in the background: the customer's response does not wait
/// for (or fail because of) the notification.
fn publish_placed(state: &Arc<State>, order: &Order) {
    let Some(url) = state.config.events_url.clone() else {
        return;
    };
    let body = match serde_json::to_vec(order) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the order event");
            return;
        }
    };
    let event_id = format!("{}-{}", state.instance, order.id);
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(cloudevents::SPECVERSION, cloudevents::SPEC_VERSION_1_0)
        .header(cloudevents::TYPE, ORDER_PLACED)
        .header(cloudevents::SOURCE, state.config.event_source.as_str())
        .header(cloudevents::ID, event_id.as_str())
        .header(cloudevents::SUBJECT, order.id.to_string())
        .body(Full::new(body));
    let request = match request {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the order event request");
            return;
        }
    };
    let client = state.events.clone();
    tokio::spawn(async move {
        match client.send(request).await {
            Ok(reply) if reply.status.is_success() => {
                tracing::debug!(%event_id, "order.placed delivered");
            }
            Ok(reply) => tracing::warn!(%event_id, status = %reply.status, "order.placed refused"),
            Err(e) => tracing::warn!(%event_id, error = %e, "order.placed not delivered"),
        }
    });
}

fn list(state: &State, query: Option<&str>) -> Response<Body> {
    let user = http_server::query_param(query, "user");
    let orders: Vec<Order> = state
        .store()
        .orders
        .values()
        .filter(|o| user.is_none_or(|u| o.user == u))
        .cloned()
        .collect();
    http_server::json(StatusCode::OK, &serde_json::json!({ "orders": orders }))
}

fn get(state: &State, id: &str) -> Response<Body> {
    let order = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.store().orders.get(&id).cloned());
    match order {
        Some(order) => http_server::json(StatusCode::OK, &order),
        None => http_server::error(StatusCode::NOT_FOUND, format!("no order {id:?}")),
    }
}
