//! A local rate limit: a token bucket per route and proxy. A request takes a
//! token or is refused, told when the next token comes (`Retry-After`).

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::{nanos, now_nanos};

/// Kept in integers: one token is `per` nanoseconds' worth of units and each
/// nanosecond adds `requests` units, so refills and waits are exact.
/// A bucket's configuration: `requests` tokens per `per`, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) requests: u32,
    pub(crate) per: Duration,
    pub(crate) burst: u32,
}

#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: Limit,
    /// Units in one token: `per` in nanoseconds.
    token: u128,
    /// Units added per nanosecond.
    rate: u128,
    capacity: u128,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    units: u128,
    /// `now_nanos()` of the last refill.
    at: u64,
}

impl TokenBucket {
    /// A bucket for `limit`; starts full.
    pub(crate) fn new(limit: Limit) -> TokenBucket {
        let Limit {
            requests,
            per,
            burst,
        } = limit;
        let token = u128::from(nanos(per).max(1));
        let capacity = token * u128::from(burst.max(1));
        TokenBucket {
            limit,
            token,
            rate: u128::from(requests.max(1)),
            capacity,
            state: Mutex::new(State {
                units: capacity,
                at: now_nanos(),
            }),
        }
    }

    pub(crate) fn limit(&self) -> Limit {
        self.limit
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        let now = now_nanos();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = u128::from(now.saturating_sub(s.at));
        s.units = (s.units + elapsed * self.rate).min(self.capacity);
        s.at = now;
        if s.units >= self.token {
            s.units -= self.token;
            Ok(())
        } else {
            let wait = (self.token - s.units).div_ceil(self.rate);
            Err(Duration::from_nanos(
                u64::try_from(wait).unwrap_or(u64::MAX),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::paused_runtime;

    #[test]
    fn a_burst_is_served_then_tokens_come_at_the_rate() {
        paused_runtime().block_on(async {
            let bucket = TokenBucket::new(Limit {
                requests: 10,
                per: Duration::from_secs(1),
                burst: 3,
            });
            for _ in 0..3 {
                assert!(bucket.take().is_ok());
            }
            let wait = bucket.take().expect_err("the burst is spent");
            assert_eq!(wait, Duration::from_millis(100));
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(bucket.take().is_ok());
            assert!(bucket.take().is_err());
            tokio::time::advance(Duration::from_secs(60)).await;
            let served = (0..10).filter(|_| bucket.take().is_ok()).count();
            assert_eq!(served, 3, "never more than the burst at once");
        });
    }
}
