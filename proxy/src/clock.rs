//! The data path's clock: nanoseconds on a monotonic clock, cheap to read and small
//! enough for an atomic. It reads tokio's clock, so a test on a paused runtime
//! (`start_paused`, `tokio::time::advance`) moves ejections, budgets and latency
//! estimates forward without sleeping; outside such a test it is `Instant::now`.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the first call.
pub(crate) fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    nanos(Instant::now().saturating_duration_since(epoch))
}

/// The time since `start`, a `now_nanos()` reading.
pub(crate) fn since(start: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(start))
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A runtime on paused time for tests: `tokio::time::advance` moves `now_nanos`.
/// The clock's epoch is fixed first, so no reading on the paused clock falls
/// before it.
#[cfg(test)]
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    now_nanos();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a test runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_time_moves_the_clock_only_when_advanced() {
        paused_runtime().block_on(async {
            let start = now_nanos();
            assert_eq!(since(start), Duration::ZERO);
            tokio::time::advance(Duration::from_secs(3)).await;
            assert_eq!(since(start), Duration::from_secs(3));
        });
    }
}
