//! web's composition as GraphQL (`POST /graphql`): one query fetches a user, their
//! orders and each order's payment. Each field is resolved only when the query asks
//! for it, so a query that names no payment never calls payments: users and orders
//! over HTTP, payments over gRPC, all through the caller's sidecar.

use std::sync::Arc;

use async_graphql::{Context, EmptyMutation, EmptySubscription, ID, Object, Schema};
use bytes::Bytes;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::http_client::{BaseUrl, HttpClient};
use crate::payments::proto::GetPaymentRequest;
use crate::payments::proto::payments_client::PaymentsClient;

/// The schema web serves.
pub type WebSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// What the resolvers call.
pub struct Dependencies {
    pub client: HttpClient,
    pub users_url: BaseUrl,
    pub orders_url: BaseUrl,
    /// None: web was started without `--payments`; `payment` is then an error.
    pub payments: Option<PaymentsClient<Channel>>,
}

pub fn schema(deps: Arc<Dependencies>) -> WebSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(deps)
        // A composition query is a few levels deep; anything deeper is a mistake
        // or an attack on the services behind.
        .limit_depth(8)
        .limit_complexity(200)
        .finish()
}

fn deps<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Arc<Dependencies>> {
    ctx.data::<Arc<Dependencies>>()
}

/// Fetches JSON from `url`: `Ok(None)` for 404, an error naming `dependency`
/// for anything else that is not a success.
async fn get_json<T: for<'de> Deserialize<'de>>(
    deps: &Dependencies,
    dependency: &str,
    url: &str,
) -> async_graphql::Result<Option<T>> {
    let reply = deps
        .client
        .get(url)
        .await
        .map_err(|e| async_graphql::Error::new(format!("{dependency}: {e}")))?;
    if reply.status == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(async_graphql::Error::new(format!(
            "{dependency} answered {}",
            reply.status
        )));
    }
    parse(&reply.body, dependency).map(Some)
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, dependency: &str) -> async_graphql::Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| async_graphql::Error::new(format!("{dependency} answered invalid JSON: {e}")))
}

pub struct Query;

#[Object]
impl Query {
    /// The user with `id`, or null when users knows none.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(async_graphql::Error::new("invalid user id"));
        }
        let deps = deps(ctx)?;
        let url = deps.users_url.join(&format!("/users/{}", id.as_str()));
        get_json(deps, "users", &url).await
    }
}

#[derive(Deserialize)]
pub struct User {
    id: String,
    name: String,
    email: String,
    tier: String,
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn email(&self) -> &str {
        &self.email
    }
    async fn tier(&self) -> &str {
        &self.tier
    }
    /// The user's orders, from orders.
    async fn orders(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Order>> {
        #[derive(Deserialize)]
        struct List {
            orders: Vec<Order>,
        }
        let deps = deps(ctx)?;
        let url = deps.orders_url.join(&format!("/orders?user={}", self.id));
        let list: Option<List> = get_json(deps, "orders", &url).await?;
        Ok(list.map(|l| l.orders).unwrap_or_default())
    }
}

#[derive(Deserialize)]
pub struct Order {
    id: u64,
    item: String,
    quantity: u32,
    amount_cents: u64,
    currency: String,
    status: String,
    payment_id: String,
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
    async fn item(&self) -> &str {
        &self.item
    }
    async fn quantity(&self) -> u32 {
        self.quantity
    }
    async fn amount_cents(&self) -> u64 {
        self.amount_cents
    }
    async fn currency(&self) -> &str {
        &self.currency
    }
    async fn status(&self) -> &str {
        &self.status
    }
    /// The order's payment as payments recorded it (gRPC `GetPayment`).
    async fn payment(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Payment>> {
        let deps = deps(ctx)?;
        let Some(payments) = deps.payments.clone() else {
            return Err(async_graphql::Error::new("web has no payments address"));
        };
        let request = GetPaymentRequest {
            payment_id: self.payment_id.clone(),
        };
        match payments.clone().get_payment(request).await {
            Ok(reply) => {
                let p = reply.into_inner();
                Ok(Some(Payment {
                    id: p.payment_id,
                    status: p.status,
                    amount_cents: p.amount_cents,
                }))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(async_graphql::Error::new(format!(
                "payments: {:?}: {}",
                status.code(),
                status.message()
            ))),
        }
    }
}

pub struct Payment {
    id: String,
    status: String,
    amount_cents: u64,
}

#[Object]
impl Payment {
    async fn id(&self) -> &str {
        &self.id
    }
    /// "approved" or "declined".
    async fn status(&self) -> &str {
        &self.status
    }
    async fn amount_cents(&self) -> u64 {
        self.amount_cents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_the_composition() {
        let deps = Arc::new(Dependencies {
            client: HttpClient::new(
                crate::http_proxy::ProxySettings::direct(),
                std::time::Duration::from_secs(1),
            ),
            users_url: "http://users".parse().expect("URL"),
            orders_url: "http://orders".parse().expect("URL"),
            payments: None,
        });
        let sdl = schema(deps).sdl();
        for needle in [
            "user(id: ID!): User",
            "orders: [Order!]!",
            "payment: Payment",
            "amountCents: Int!",
        ] {
            assert!(sdl.contains(needle), "{needle} in\n{sdl}");
        }
    }
}
