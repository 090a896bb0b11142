//! A service's readiness: its `/healthz` answers 503 until every part it waits for
//! (a broker consumer, say) has started, so an orchestrator (the demo, a Kubernetes
//! readiness probe) sends it no traffic it would fail for want of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the parts a service still waits for; clones share the count.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicUsize>);

impl Readiness {
    /// One more part to wait for, which reports through the returned handle.
    pub fn part(&self) -> Part {
        self.0.fetch_add(1, Ordering::AcqRel);
        Part(Some(self.0.clone()))
    }

    /// Whether every part has started.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// One part of a service that must start before it is ready.
pub struct Part(Option<Arc<AtomicUsize>>);

impl Part {
    /// This part has started (again, after a reconnect, changes nothing).
    pub fn ready(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_part_has_started_each_counted_once() {
        let readiness = Readiness::default();
        assert!(readiness.is_ready(), "nothing to wait for");
        let mut a = readiness.part();
        let mut b = readiness.part();
        assert!(!readiness.is_ready());
        a.ready();
        a.ready();
        assert!(!readiness.is_ready(), "a part counts once");
        b.ready();
        assert!(readiness.is_ready());
    }
}
