//! State that outlives snapshots: per-endpoint load and health, per-service
//! concurrency counters and retry budget.
//!
//! A snapshot is rebuilt on every update, but an endpoint that is still in the set
//! must keep its latency estimate, its in-flight count and its ejection. So the
//! snapshot's `Endpoint` holds an `Arc` to stats found here by (service, address)
//! when the service is built. The registry only keeps `Weak` references: once no
//! snapshot (and no in-flight request) holds an endpoint, its state is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::balance::Load;
use crate::breaker::{Concurrency, Health};
use crate::metrics::ServiceMetrics;
use crate::retry::Budget;

/// Nanoseconds since the first call: a cheap, monotonic clock that fits an atomic.
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The time since `start`, a `now_nanos()` reading.
pub fn since(start: u64) -> Duration {
    Duration::from_nanos(now_nanos().saturating_sub(start))
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the proxy has learnt about one endpoint of one service.
#[derive(Debug, Serialize)]
pub struct EndpointStats {
    pub load: Load,
    pub health: Health,
}

/// Counters shared by every request to one service.
#[derive(Debug, Default, Serialize)]
pub struct ServiceStats {
    pub concurrency: Concurrency,
    #[serde(skip)]
    pub budget: Budget,
}

#[derive(Default)]
pub struct Registry {
    endpoints: Mutex<HashMap<(String, SocketAddr), Weak<EndpointStats>>>,
    services: Mutex<HashMap<String, Weak<ServiceStats>>>,
}

/// Locks `m` even if a thread panicked while holding it: the proxy's critical
/// sections leave their data whole, and one panicked request must not take every
/// later one down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// The stats for `addr` in `service`, shared with earlier snapshots if it was
    /// already in the set.
    pub fn endpoint(
        &self,
        service: &str,
        addr: SocketAddr,
        metrics: &Arc<ServiceMetrics>,
    ) -> Arc<EndpointStats> {
        let mut map = lock(&self.endpoints);
        let key = (service.to_string(), addr);
        if let Some(stats) = map.get(&key).and_then(Weak::upgrade) {
            return stats;
        }
        // Building a service is rare; sweeping here keeps the map bounded by the
        // endpoints that some snapshot still holds.
        map.retain(|_, w| w.strong_count() > 0);
        let stats = Arc::new(EndpointStats {
            load: Load::default(),
            health: Health::new(metrics.clone()),
        });
        map.insert(key, Arc::downgrade(&stats));
        stats
    }

    pub fn service(&self, service: &str) -> Arc<ServiceStats> {
        let mut map = lock(&self.services);
        if let Some(stats) = map.get(service).and_then(Weak::upgrade) {
            return stats;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let stats = Arc::new(ServiceStats::default());
        map.insert(service.to_string(), Arc::downgrade(&stats));
        stats
    }

    /// Endpoints with live state, for tests.
    pub fn endpoints_held(&self) -> usize {
        lock(&self.endpoints)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn state_is_shared_while_held_and_dropped_after() {
        let metrics = Metrics::new();
        let m = metrics.service("outbound", "a.default");
        let reg = Registry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let first = reg.endpoint("a.default", addr, &m);
        first.health.note_failure_for_test();
        let again = reg.endpoint("a.default", addr, &m);
        assert!(Arc::ptr_eq(&first, &again));
        let other = reg.endpoint("b.default", addr, &m);
        assert!(!Arc::ptr_eq(&first, &other), "state is per service");
        drop((first, again, other));
        assert_eq!(reg.endpoints_held(), 0);
        let fresh = reg.endpoint("a.default", addr, &m);
        assert_eq!(fresh.health.consecutive_failures(), 0);
    }
}
