//! The payments service: a gRPC `Charge` that approves amounts up to a limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Generated `payments.v1` messages, client and server.
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("payments.v1");
}

use proto::payments_server::{Payments, PaymentsServer};
use proto::{ChargeReply, ChargeRequest, GetPaymentRequest, Payment};

/// Charges remembered for `GetPayment`; the oldest are forgotten beyond this.
const KEEP: usize = 100_000;

/// What the service approves.
#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    /// Charges above this many cents are declined.
    pub decline_over_cents: u64,
}

/// The `Payments` implementation.
#[derive(Debug)]
pub struct PaymentsService {
    config: PaymentsConfig,
    next_id: AtomicU64,
    made: Mutex<BTreeMap<u64, Payment>>,
}

impl PaymentsService {
    pub fn new(config: PaymentsConfig) -> Self {
        Self {
            config,
            next_id: AtomicU64::new(1),
            made: Mutex::new(BTreeMap::new()),
        }
    }
}

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(
        &self,
        request: Request<ChargeRequest>,
    ) -> Result<Response<ChargeReply>, Status> {
        let charge = request.into_inner();
        if charge.amount_cents == 0 {
            return Err(Status::invalid_argument(
                "amount_cents must be greater than zero",
            ));
        }
        if charge.currency.len() != 3 || !charge.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(Status::invalid_argument(format!(
                "currency {:?} is not an ISO 4217 code",
                charge.currency
            )));
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payment_id = format!("pay-{n}");
        let approved = charge.amount_cents <= self.config.decline_over_cents;
        {
            let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            made.insert(
                n,
                Payment {
                    payment_id: payment_id.clone(),
                    order_id: charge.order_id.clone(),
                    amount_cents: charge.amount_cents,
                    currency: charge.currency.clone(),
                    status: if approved { "approved" } else { "declined" }.to_owned(),
                },
            );
            while made.len() > KEEP {
                made.pop_first();
            }
        }
        tracing::info!(
            order_id = %charge.order_id,
            amount_cents = charge.amount_cents,
            currency = %charge.currency,
            %payment_id,
            approved,
            "charge"
        );
        Ok(Response::new(ChargeReply {
            payment_id,
            approved,
        }))
    }

    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().payment_id;
        let found = id
            .strip_prefix("pay-")
            .and_then(|n| n.parse::<u64>().ok())
            .and_then(|n| {
                let made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
                made.get(&n).cloned()
            });
        found
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no payment {id:?}")))
    }
}

/// Serves gRPC on `listener` until `shutdown` completes, with the standard
/// `grpc.health.v1.Health` service beside `Payments` (what gRPC probes call, since a gRPC
/// server has no `GET /healthz`).
pub async fn serve(
    listener: TcpListener,
    config: PaymentsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PaymentsServer<PaymentsService>>()
        .await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(PaymentsServer::new(PaymentsService::new(config)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
