//! The users service: deterministic fake user records by numeric id.

use std::future::Future;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::http_server::{self, Body};

/// Which ids exist.
#[derive(Debug, Clone)]
pub struct UsersConfig {
    /// Users `1..=count` exist; every other id is 404.
    pub count: u64,
}

/// A user record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub email: String,
    pub tier: &'static str,
}

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

/// Serves `GET /users/{id}` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: UsersConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    http_server::serve(
        listener,
        move |req| {
            let config = config.clone();
            async move { route(&config, &req) }
        },
        shutdown,
    )
    .await
}

fn route(config: &UsersConfig, req: &Request<Incoming>) -> Response<Body> {
    match (
        req.method(),
        http_server::segments(req.uri().path()).as_slice(),
    ) {
        (&Method::GET, ["users", id]) => match user(config, id) {
            Some(user) => http_server::json(StatusCode::OK, &user),
            None => http_server::error(StatusCode::NOT_FOUND, format!("no user {id:?}")),
        },
        _ => http_server::not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_deterministic_and_bounded() {
        let config = UsersConfig { count: 10 };
        assert_eq!(user(&config, "3"), user(&config, "3"));
        assert_ne!(user(&config, "3"), user(&config, "4"));
        assert!(user(&config, "10").is_some());
        for missing in ["0", "11", "-1", "abc", ""] {
            assert!(user(&config, missing).is_none(), "{missing}");
        }
    }
}
