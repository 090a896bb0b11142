//! Finding the service a request or connection is for: in the snapshot, and on a
//! miss, on demand from the control plane. The data path calls only this; it never
//! reaches the discovery client, which sits behind the `Demand` trait.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{Service, SnapshotStore};

/// A destination as a request or connection names it: borrowed on the request
/// path, owned where a subscription keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Dest<'a> {
    /// A host name, as in a Host header or a configured upstream.
    Name(Cow<'a, str>),
    /// A service VIP and port, as a captured connection was addressed.
    Vip(SocketAddr),
}

/// A subscription's first update, awaited: true once it has been applied.
pub(crate) type Resolving<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Asks the control plane for a destination the snapshot does not hold yet.
pub(crate) trait Demand: Send + Sync {
    /// Watches `dest` (if not already) and waits up to `wait` for its first update.
    fn resolve(&self, dest: Dest<'static>, wait: Duration) -> Resolving<'_>;
}

/// The snapshot, with discovery on demand behind it.
pub(crate) struct Lookup {
    store: SnapshotStore,
    demand: Option<Arc<dyn Demand>>,
    /// How long a request waits for a destination's first update.
    wait: Duration,
}

impl Lookup {
    pub(crate) fn new(
        store: SnapshotStore,
        demand: Option<Arc<dyn Demand>>,
        wait: Duration,
    ) -> Lookup {
        Lookup {
            store,
            demand,
            wait,
        }
    }

    /// The service for `dest`. On a miss, and with a control plane, subscribes and
    /// waits briefly for its first update before looking again. The common case, a
    /// hit, allocates nothing.
    pub(crate) async fn service(&self, dest: Dest<'_>) -> Option<Arc<Service>> {
        if let Some(svc) = self.find(&dest) {
            return Some(svc);
        }
        let demand = self.demand.as_ref()?;
        let owned = match &dest {
            Dest::Name(host) => Dest::Name(Cow::Owned(host.to_ascii_lowercase())),
            Dest::Vip(addr) => Dest::Vip(*addr),
        };
        if demand.resolve(owned, self.wait).await {
            self.find(&dest)
        } else {
            None
        }
    }

    fn find(&self, dest: &Dest<'_>) -> Option<Arc<Service>> {
        let snapshot = self.store.load();
        match dest {
            Dest::Name(host) => snapshot.by_host(host).cloned(),
            Dest::Vip(addr) => snapshot.by_vip(*addr).cloned(),
        }
    }
}
