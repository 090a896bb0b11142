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
