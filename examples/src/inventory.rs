//! The inventory service: reserves stock for orders, answering requests that come
//! over the broker (request-reply on the `inventory.reserve` queue), and takes the
//! stock of an order that was not placed (its payment declined) back on
//! `inventory.release`. `GET /stock` shows what is left; `GET /healthz` is its
//! health.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::amqp::{self, Subscription};
use crate::http_server::{self, Body};
use crate::readiness::{Part, Readiness};

/// Where inventory's requests come from and how much it holds.
#[derive(Debug, Clone)]
pub struct InventoryConfig {
    /// The broker, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub amqp_url: String,
    /// Units of every item in stock at start.
    pub initial_stock: u64,
}

/// A request to reserve `quantity` of `item` for an order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reserve {
    pub order_id: u64,
    pub item: String,
    pub quantity: u32,
}

/// Inventory's answer: reserved or not, and what is left of the item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: u64,
    pub item: String,
    pub quantity: u32,
    pub reserved: bool,
    pub remaining: u64,
}

/// A request to give back the stock reserved for an order that was not placed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Release {
    pub order_id: u64,
}

/// Inventory's answer to a release: what came back (nothing when the order held
/// nothing, or was released already) and what is left of the item now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Released {
    pub order_id: u64,
    pub item: Option<String>,
    pub quantity: u32,
    pub remaining: Option<u64>,
}

/// Reservations remembered for a release; the oldest are forgotten beyond this
/// (an order is released within its checkout, long before).
const MAX_HELD: usize = 10_000;

/// Stock per item; an item not seen yet has the initial stock.
struct Stock {
    initial: u64,
    left: BTreeMap<String, u64>,
    /// What each order holds (item, quantity), until released or forgotten.
    held: BTreeMap<u64, (String, u32)>,
}

impl Stock {
    fn new(initial: u64) -> Stock {
        Stock {
            initial,
            left: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    fn reserve(&mut self, request: &Reserve) -> Reservation {
        let initial = self.initial;
        let left = self.left.entry(request.item.clone()).or_insert(initial);
        let want = u64::from(request.quantity);
        let reserved = want > 0 && *left >= want;
        if reserved {
            *left -= want;
            self.held
                .insert(request.order_id, (request.item.clone(), request.quantity));
            while self.held.len() > MAX_HELD {
                self.held.pop_first();
            }
        }
        Reservation {
            order_id: request.order_id,
            item: request.item.clone(),
            quantity: request.quantity,
            reserved,
            remaining: *left,
        }
    }

    /// Gives an order's stock back, once: a repeated release returns nothing.
    fn release(&mut self, request: &Release) -> Released {
        let Some((item, quantity)) = self.held.remove(&request.order_id) else {
            return Released {
                order_id: request.order_id,
                item: None,
                quantity: 0,
                remaining: None,
            };
        };
        let initial = self.initial;
        let left = self.left.entry(item.clone()).or_insert(initial);
        *left += u64::from(quantity);
        Released {
            order_id: request.order_id,
            item: Some(item),
            quantity,
            remaining: Some(*left),
        }
    }
}

/// Serves reservations from the broker and `GET /stock` on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: InventoryConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stock = Arc::new(Mutex::new(Stock::new(config.initial_stock)));
    // Not ready until both queues are bound: a reservation sent before that would
    // find no queue and fail the caller's checkout.
    let readiness = Readiness::default();
    let reserving = answer_on(
        &config.amqp_url,
        amqp::INVENTORY_QUEUE,
        readiness.part(),
        stock.clone(),
        |stock, reserve: Reserve| {
            let reservation = stock.reserve(&reserve);
            tracing::info!(order_id = reserve.order_id, item = %reserve.item, reserved = reservation.reserved, remaining = reservation.remaining, "reservation");
            reservation
        },
    );
    let releasing = answer_on(
        &config.amqp_url,
        amqp::INVENTORY_RELEASE_QUEUE,
        readiness.part(),
        stock.clone(),
        |stock, release: Release| {
            let released = stock.release(&release);
            tracing::info!(order_id = release.order_id, item = ?released.item, quantity = released.quantity, "release");
            released
        },
    );
    let result = http_server::serve_when_ready(
        listener,
        move |req| {
            let stock = stock.clone();
            async move { route(&stock, &req) }
        },
        readiness,
        shutdown,
    )
    .await;
    reserving.abort();
    releasing.abort();
    result
}

/// Consumes `queue`, answering each request (JSON `Q`) with what `act` makes of it
/// on the stock (JSON `A`), or with an error for a request that is not a `Q`.
fn answer_on<Q, A, F>(
    url: &str,
    queue: &str,
    ready: Part,
    stock: Arc<Mutex<Stock>>,
    act: F,
) -> tokio::task::JoinHandle<()>
where
    Q: serde::de::DeserializeOwned,
    A: Serialize,
    F: Fn(&mut Stock, Q) -> A + Send + Sync + Copy + 'static,
{
    let subscription = Subscription {
        queue: queue.to_string(),
        keys: Vec::new(),
    };
    tokio::spawn(amqp::consume_forever(
        url.to_owned(),
        subscription,
        ready,
        move |channel, request| {
            let stock = stock.clone();
            async move {
                let answer = match serde_json::from_slice::<Q>(&request.data) {
                    Ok(q) => {
                        let mut stock = stock.lock().unwrap_or_else(PoisonError::into_inner);
                        serde_json::to_vec(&act(&mut stock, q))
                    }
                    Err(e) => serde_json::to_vec(
                        &serde_json::json!({"error": format!("invalid request: {e}")}),
                    ),
                };
                match answer {
                    Ok(answer) => match amqp::reply(&channel, &request, &answer).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "reply not sent");
                            // The requester has given up by the time a retry would
                            // answer; a request is not worth a redelivery loop.
                            true
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialise the answer");
                        true
                    }
                }
            }
        },
    ))
}

fn route(stock: &Mutex<Stock>, req: &Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/stock") => {
            let stock = stock.lock().unwrap_or_else(PoisonError::into_inner);
            http_server::json(
                StatusCode::OK,
                &serde_json::json!({"initial": stock.initial, "left": stock.left}),
            )
        }
        _ => http_server::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_is_reserved_until_it_runs_out() {
        let mut stock = Stock::new(5);
        let ask = |quantity| Reserve {
            order_id: 1,
            item: "book".into(),
            quantity,
        };
        let first = stock.reserve(&ask(3));
        assert!(first.reserved);
        assert_eq!(first.remaining, 2);
        let second = stock.reserve(&ask(3));
        assert!(!second.reserved, "only 2 left");
        assert_eq!(second.remaining, 2);
        assert!(!stock.reserve(&ask(0)).reserved);
        assert_eq!(stock.reserve(&ask(2)).remaining, 0);
    }

    #[test]
    fn a_release_gives_an_orders_stock_back_once() {
        let mut stock = Stock::new(5);
        let reserve = |order_id, quantity| Reserve {
            order_id,
            item: "lamp".into(),
            quantity,
        };
        assert!(stock.reserve(&reserve(1, 3)).reserved);
        assert!(!stock.reserve(&reserve(2, 4)).reserved, "2 left");
        let released = stock.release(&Release { order_id: 1 });
        assert_eq!(released.item.as_deref(), Some("lamp"));
        assert_eq!((released.quantity, released.remaining), (3, Some(5)));
        let again = stock.release(&Release { order_id: 1 });
        assert_eq!((again.quantity, again.remaining), (0, None));
        assert_eq!(stock.release(&Release { order_id: 2 }).quantity, 0);
        assert_eq!(stock.reserve(&reserve(3, 5)).remaining, 0);
    }
}
