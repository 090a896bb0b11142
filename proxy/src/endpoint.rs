//! An endpoint, and the state that outlives snapshots: per-endpoint load and
//! health, per-service concurrency counters and retry budget.
//!
//! A snapshot is rebuilt on every update, but an endpoint that is still in the set
//! must keep its latency estimate, its in-flight count and its ejection. So the
//! snapshot's `Endpoint` holds an `Arc` to stats found here by (service, address)
//! when the service is built. The registry (one per proxy, owned by its wiring)
//! only keeps `Weak` references: once no snapshot (and no in-flight request) holds
//! an endpoint, its state is dropped.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use serde::Serialize;

use crate::balance::{Candidate, Load};
use crate::breaker::{Concurrency, Health};
use crate::metrics::ServiceMetrics;
use crate::retry::Budget;
use crate::route::rate_limit::{Limit, TokenBucket};
use crate::sync::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EndpointState {
    Ready,
    NotReady,
    Terminating,
}

/// One endpoint of a service as a snapshot holds it.
#[derive(Debug, Serialize)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) identity: Option<Arc<str>>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) state: EndpointState,
    /// Load and health, shared with the previous snapshots that held this endpoint.
    pub(crate) stats: Arc<EndpointStats>,
}

impl Candidate for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn weight(&self) -> u32 {
        self.weight
    }

    fn is_ready(&self) -> bool {
        self.state == EndpointState::Ready
    }

    fn load(&self) -> &Load {
        &self.stats.load
    }

    fn health(&self) -> &Health {
        &self.stats.health
    }
}

/// What the proxy has learnt about one endpoint of one service.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointStats {
    pub(crate) load: Load,
    pub(crate) health: Health,
}

/// Counters shared by every request to one service.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ServiceStats {
    pub(crate) concurrency: Concurrency,
    #[serde(skip)]
    pub(crate) budget: Budget,
}

/// The stats of every endpoint and service some snapshot still holds, and the
/// routes' rate-limit buckets.
#[derive(Default)]
pub(crate) struct Registry {
    endpoints: Mutex<HashMap<(String, SocketAddr), Weak<EndpointStats>>>,
    services: Mutex<HashMap<String, Weak<ServiceStats>>>,
    /// By (service, route name).
    buckets: Mutex<HashMap<(String, String), Weak<TokenBucket>>>,
}

impl Registry {
    /// The stats for `addr` in `service`, shared with earlier snapshots if it was
    /// already in the set.
    pub(crate) fn endpoint(
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

    pub(crate) fn service(&self, service: &str) -> Arc<ServiceStats> {
        let mut map = lock(&self.services);
        if let Some(stats) = map.get(service).and_then(Weak::upgrade) {
            return stats;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let stats = Arc::new(ServiceStats::default());
        map.insert(service.to_string(), Arc::downgrade(&stats));
        stats
    }

    /// The bucket of route `route` of `service`: the one earlier snapshots hold
    /// while its limit stays the same (a reload does not refill it), else a full
    /// one.
    pub(crate) fn bucket(&self, service: &str, route: &str, limit: Limit) -> Arc<TokenBucket> {
        let mut map = lock(&self.buckets);
        let key = (service.to_string(), route.to_string());
        if let Some(bucket) = map.get(&key).and_then(Weak::upgrade)
            && bucket.limit() == limit
        {
            return bucket;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let bucket = Arc::new(TokenBucket::new(limit));
        map.insert(key, Arc::downgrade(&bucket));
        bucket
    }

    /// Endpoints with live state.
    #[cfg(test)]
    pub(crate) fn endpoints_held(&self) -> usize {
        lock(&self.endpoints)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Direction, Metrics};

    #[test]
    fn state_is_shared_while_held_and_dropped_after() {
        let metrics = Metrics::new();
        let m = metrics.service(Direction::Outbound, "a.default");
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

    #[test]
    fn a_bucket_is_kept_while_its_limit_stays_and_replaced_when_it_changes() {
        let reg = Registry::default();
        let limit = Limit {
            requests: 1,
            per: std::time::Duration::from_secs(3600),
            burst: 1,
        };
        let first = reg.bucket("a.default", "r", limit);
        assert!(first.take().is_ok());
        let same = reg.bucket("a.default", "r", limit);
        assert!(Arc::ptr_eq(&first, &same));
        assert!(same.take().is_err(), "the spent token stays spent");
        assert!(
            reg.bucket("a.default", "other", limit).take().is_ok(),
            "per route"
        );
        let changed = reg.bucket("a.default", "r", Limit { burst: 2, ..limit });
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.take().is_ok(), "a new limit starts full");
    }
}
