//! The users service: deterministic fake user records by numeric id, and sign-ups
//! (`POST /users`), each announced as a `user.signed_up` event on the broker
//! (RabbitMQ or Kafka).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::amqp;
use crate::events::{EventBroker, EventSink};
use crate::http_server::{self, Body};

/// Which ids exist.
#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// Users `1..=count` exist; every other id is 404 until signed up.
    pub count: u64,
    /// The broker `user.signed_up` events go to.
    pub events: Option<EventBroker>,
}

/// A sign-up: `POST /users`.
#[derive(Debug, Deserialize)]
pub struct SignUp {
    pub name: String,
    pub email: String,
}

struct State {
    config: UsersConfig,
    /// Users who signed up, above the fake ones.
    signed_up: Mutex<BTreeMap<u64, User>>,
    events: Option<EventSink>,
}

/// A user record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub tier: &'static str,
}

/// Signed-up users kept; the oldest are forgotten beyond this.
const MAX_SIGNED_UP: usize = 10_000;

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Dennis",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Ritchie",
];
const TIERS: [&str; 3] = ["bronze", "silver", "gold"];

/// The user with `id`, the same on every call and in every replica.
pub fn user(config: &UsersConfig, id: &str) -> Option<User> {
    let n: u64 = id.parse().ok()?;
    if n == 0 || n > config.count {
        return None;
    }
    let pick = |list: &[&'static str], k: u64| list[(k % list.len() as u64) as usize];
    let first = pick(&FIRST, n);
    let last = pick(&LAST, n / FIRST.len() as u64 + n);
    Some(User {
        id: n.to_string(),
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}{n}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        tier: pick(&TIERS, n),
    })
}

/// Serves `GET /users/{id}` and `POST /users` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: UsersConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let events = config
        .events
        .as_ref()
        .map(|broker| EventSink::new(broker, Duration::from_secs(5)));
    let state = Arc::new(State {
        config,
        signed_up: Mutex::new(BTreeMap::new()),
        events,
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
        (Method::GET, ["users", id]) => {
            let found = user(&state.config, id).or_else(|| {
                let id = id.parse().ok()?;
                let signed_up = state
                    .signed_up
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                signed_up.get(&id).cloned()
            });
            match found {
                Some(user) => http_server::json(StatusCode::OK, &user),
                None => http_server::error(StatusCode::NOT_FOUND, format!("no user {id:?}")),
            }
        }
        (Method::POST, ["users"]) => sign_up(state, req).await,
        _ => http_server::not_found(),
    }
}

/// Creates a user and announces it; the answer says whether the broker confirmed
/// the event (`event`), so a caller knows the welcome is on its way.
async fn sign_up(state: &State, req: Request<Incoming>) -> Response<Body> {
    let new: SignUp = match http_server::read_json(req).await {
        Ok(new) => new,
        Err(resp) => return resp,
    };
    if new.name.trim().is_empty() || !new.email.contains('@') {
        return http_server::error(StatusCode::BAD_REQUEST, "a name and an email are needed");
    }
    let user = {
        let mut signed_up = state
            .signed_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = signed_up
            .last_key_value()
            .map_or(state.config.count, |(id, _)| *id)
            + 1;
        let user = User {
            id: id.to_string(),
            name: new.name.trim().to_owned(),
            email: new.email.trim().to_owned(),
            tier: TIERS[0],
        };
        signed_up.insert(id, user.clone());
        // A load generator signs users up for as long as it runs.
        while signed_up.len() > MAX_SIGNED_UP {
            signed_up.pop_first();
        }
        user
    };
    tracing::info!(user_id = %user.id, "user signed up");
    let mut body = serde_json::json!(user);
    if let Some(events) = &state.events {
        let message_id = format!("user-{}-{}", std::process::id(), user.id);
        let payload = serde_json::to_vec(&user).unwrap_or_default();
        let event = match events
            .publish(amqp::USER_SIGNED_UP, &message_id, &payload)
            .await
        {
            Ok(()) => "confirmed".to_owned(),
            Err(e) => {
                tracing::warn!(user_id = %user.id, error = %e, "user.signed_up not confirmed");
                format!("not confirmed: {e}")
            }
        };
        body["event"] = serde_json::Value::String(event);
    }
    http_server::json(StatusCode::CREATED, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_deterministic_and_bounded() {
        let config = UsersConfig {
            count: 10,
            events: None,
        };
        assert_eq!(user(&config, "3"), user(&config, "3"));
        assert_ne!(user(&config, "3"), user(&config, "4"));
        assert!(user(&config, "10").is_some());
        for missing in ["0", "11", "-1", "abc", ""] {
            assert!(user(&config, missing).is_none(), "{missing}");
        }
    }
}
