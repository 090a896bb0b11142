//! The inventory service: reserves stock for orders, answering requests that come
//! over the broker (request-reply on the `inventory.reserve` queue). `GET /stock`
//! shows what is left; `GET /healthz` is its health.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::amqp::{self, Subscription};
use crate::http_server::{self, Body};

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

/// Stock per item; an item not seen yet has the initial stock.
struct Stock {
    initial: u64,
    left: BTreeMap<String, u64>,
}

impl Stock {
    fn reserve(&mut self, request: &Reserve) -> Reservation {
        let initial = self.initial;
        let left = self.left.entry(request.item.clone()).or_insert(initial);
        let want = u64::from(request.quantity);
        let reserved = want > 0 && *left >= want;
        if reserved {
            *left -= want;
        }
        Reservation {
            order_id: request.order_id,
            item: request.item.clone(),
            quantity: request.quantity,
            reserved,
            remaining: *left,
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
    let stock = Arc::new(Mutex::new(Stock {
        initial: config.initial_stock,
        left: BTreeMap::new(),
    }));
    let subscription = Subscription {
        queue: amqp::INVENTORY_QUEUE.to_string(),
        keys: Vec::new(),
    };
    let consumer_stock = stock.clone();
    let consumer = tokio::spawn(amqp::consume_forever(
        config.amqp_url.clone(),
        subscription,
        move |channel, request| {
            let stock = consumer_stock.clone();
            async move {
                let answer = match serde_json::from_slice::<Reserve>(&request.data) {
                    Ok(reserve) => {
                        let reservation = stock
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .reserve(&reserve);
                        tracing::info!(order_id = reserve.order_id, item = %reserve.item, reserved = reservation.reserved, remaining = reservation.remaining, "reservation");
                        serde_json::to_vec(&reservation)
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
    ));
    let result = http_server::serve(
        listener,
        move |req| {
            let stock = stock.clone();
            async move { route(&stock, &req) }
        },
        shutdown,
    )
    .await;
    consumer.abort();
    result
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
        let mut stock = Stock {
            initial: 5,
            left: BTreeMap::new(),
        };
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
}
