//! A steady, bounded stream of checkouts, profile reads and sign-ups against web.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::http_client::{BaseUrl, HttpClient};

/// What traffic to send, and when to stop.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: BaseUrl,
    /// Requests started per second.
    pub rps: u32,
    /// Stop starting requests after this long.
    pub duration: Duration,
    /// Stop after this many requests, if sooner.
    pub count: Option<u64>,
    /// At most this many requests in flight; the rate drops rather than pile up.
    pub concurrency: usize,
    /// Profiles and checkouts use users `1..=users`.
    pub users: u64,
    /// Every this many profile reads, one is a sign-up instead (`POST /signup`),
    /// so the sign-up event flows too; 0: never.
    pub sign_up_every: u64,
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{:.1}ms", d.as_secs_f64() * 1000.0),
            None => "-".to_owned(),
        };
        write!(
            f,
            "sent={} ok={} failed={} p50={} p99={} elapsed={:.1}s",
            self.sent,
            self.ok,
            self.failed,
            ms(self.p50),
            ms(self.p99),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Sends traffic until the duration or count runs out, or `stop` completes, then waits
/// for the requests in flight (each bounded by the client's deadline) and summarises.
/// A request is ok when web answers 2xx.
pub async fn run(
    config: LoadConfig,
    client: HttpClient,
    stop: impl Future<Output = ()>,
) -> Summary {
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(config.rps.max(1)));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let mut latencies = Vec::new();
    let mut summary = Summary::default();
    let limit = config.count.unwrap_or(u64::MAX);
    let deadline = tokio::time::Instant::from_std(started + config.duration);
    tokio::pin!(stop);

    while summary.sent < limit {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut stop => break,
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut stop => break,
        };
        let n = summary.sent;
        summary.sent += 1;
        let client = client.clone();
        let target = config.target.clone();
        let mix = Mix {
            users: config.users.max(1),
            sign_up_every: config.sign_up_every,
        };
        in_flight.spawn(async move {
            let began = Instant::now();
            let ok = one_request(&client, &target, n, mix).await;
            drop(permit);
            (ok, began.elapsed())
        });
        while let Some(done) = in_flight.try_join_next() {
            record(&mut summary, &mut latencies, done);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        record(&mut summary, &mut latencies, done);
    }
    latencies.sort_unstable();
    summary.p50 = percentile(&latencies, 50);
    summary.p99 = percentile(&latencies, 99);
    summary.elapsed = started.elapsed();
    summary
}

fn record(
    summary: &mut Summary,
    latencies: &mut Vec<Duration>,
    done: Result<(bool, Duration), tokio::task::JoinError>,
) {
    match done {
        Ok((ok, latency)) => {
            latencies.push(latency);
            if ok {
                summary.ok += 1;
            } else {
                summary.failed += 1;
            }
        }
        Err(_) => summary.failed += 1,
    }
}

/// Which users the requests are for, and how often one signs up.
#[derive(Debug, Clone, Copy)]
struct Mix {
    users: u64,
    sign_up_every: u64,
}

/// What request `n` is.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Checkout,
    Profile,
    SignUp,
}

impl Mix {
    /// Even requests are checkouts, odd ones profile reads, every
    /// `sign_up_every`-th of which is a sign-up instead.
    fn kind(self, n: u64) -> Kind {
        if n.is_multiple_of(2) {
            Kind::Checkout
        } else if self.sign_up_every > 0 && (n / 2 + 1).is_multiple_of(self.sign_up_every) {
            Kind::SignUp
        } else {
            Kind::Profile
        }
    }
}

/// One request of the mix, cycling through the users.
async fn one_request(client: &HttpClient, target: &BaseUrl, n: u64, mix: Mix) -> bool {
    let user = n / 2 % mix.users + 1;
    let result = match mix.kind(n) {
        Kind::SignUp => {
            let sign_up = serde_json::json!({
                "name": format!("Load User {n}"),
                "email": format!("load-{n}@example.com"),
            });
            client
                .post_json(&target.join("/signup"), Bytes::from(sign_up.to_string()))
                .await
        }
        Kind::Checkout => {
            let item = ["book", "lamp", "mug", "pen"][(n / 2 % 4) as usize];
            let order = serde_json::json!({
                "item": item,
                "quantity": n % 3 + 1,
                "amount_cents": 500 + (n * 137) % 20_000,
                "user": user.to_string(),
            });
            client
                .post_json(&target.join("/checkout"), Bytes::from(order.to_string()))
                .await
        }
        Kind::Profile => client.get(&target.join(&format!("/profile/{user}"))).await,
    };
    match result {
        Ok(reply) if reply.status.is_success() => true,
        Ok(reply) => {
            tracing::debug!(request = n, status = %reply.status, "request failed");
            false
        }
        Err(e) => {
            tracing::debug!(request = n, error = %e, "request failed");
            false
        }
    }
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], pct: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 99), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples[..1], 99),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn one_profile_read_in_every_n_is_a_sign_up() {
        let mix = Mix {
            users: 5,
            sign_up_every: 3,
        };
        let kinds: Vec<Kind> = (0..12).map(|n| mix.kind(n)).collect();
        use Kind::{Checkout as C, Profile as P, SignUp as S};
        assert_eq!(kinds, [C, P, C, P, C, S, C, P, C, P, C, S]);
        let never = Mix {
            sign_up_every: 0,
            ..mix
        };
        assert!((0..100).all(|n| never.kind(n) != Kind::SignUp));
    }

    #[test]
    fn summary_is_one_line() {
        let s = Summary {
            sent: 3,
            ok: 2,
            failed: 1,
            p50: Some(Duration::from_micros(1500)),
            p99: None,
            elapsed: Duration::from_millis(2500),
        };
        assert_eq!(
            s.to_string(),
            "sent=3 ok=2 failed=1 p50=1.5ms p99=- elapsed=2.5s"
        );
    }
}
