//! The served model: what each destination a proxy can subscribe to resolves to, with
//! the update for it already encoded.
//!
//! Versions are the source generation in which a service's content last changed. So a
//! version only moves when that service changes (an unrelated edit pushes nothing),
//! never goes back, and stays monotonic for a VIP destination whose owner changes (the
//! new owner changed in that very generation, since its VIPs did).
//!
//! Every subscribed destination has one `watch` channel holding the latest
//! [`Published`] update; subscribers share it, so a change is encoded once per service
//! however many proxies watch it, and a slow subscriber simply sees the latest value
//! when it next looks.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;
use weft_api::mesh::{DEFAULT_NAMESPACE, MeshSpec, Name, ServiceSpec};
use weft_api::v1;

/// A service's identity in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub name: String,
    pub namespace: String,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// What a proxy subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Service(ServiceKey),
    Vip(SocketAddr),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Service(key) => key.fmt(f),
            Destination::Vip(addr) => addr.fmt(f),
        }
    }
}

impl Destination {
    /// Resolves a service name the way cluster DNS does: `name` (in the subscriber's
    /// namespace), `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster-domain>`. Any
    /// cluster domain is accepted since clusters may configure their own.
    pub fn from_service_name(name: &str, node_namespace: &str) -> Result<Self, String> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        let (svc, ns) = match parts.as_slice() {
            [svc] => {
                let ns = if node_namespace.is_empty() {
                    DEFAULT_NAMESPACE
                } else {
                    node_namespace
                };
                (*svc, ns)
            }
            [svc, ns] | [svc, ns, "svc"] => (*svc, *ns),
            [svc, ns, "svc", domain @ ..] if domain.iter().all(|l| !l.is_empty()) => (*svc, *ns),
            _ => {
                return Err(format!(
                    "{name:?} is not a service name (name, name.namespace or name.namespace.svc[.domain])"
                ));
            }
        };
        let svc = Name::try_from(svc.to_string())?;
        let ns = Name::try_from(ns.to_string())?;
        Ok(Destination::Service(ServiceKey {
            name: svc.to_string(),
            namespace: ns.to_string(),
        }))
    }

    pub fn from_vip(vip: &v1::SocketAddress) -> Result<Self, String> {
        let ip: IpAddr = vip
            .ip
            .parse()
            .map_err(|_| format!("invalid VIP address {:?}", vip.ip))?;
        let port = u16::try_from(vip.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid VIP port {}", vip.port))?;
        Ok(Destination::Vip(SocketAddr::new(ip, port)))
    }
}

/// One destination's current update, encoded once and shared by every subscriber.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    /// Whether the destination resolves to a service (the update has `service` set).
    pub known: bool,
    /// A protobuf-encoded `weft.v1.ServiceUpdate`.
    pub encoded: Bytes,
    /// When the source change that produced this update was applied; `None` for the
    /// state a destination had before anything changed.
    pub applied_at: Option<Instant>,
}

impl Published {
    fn unknown(version: u64, applied_at: Option<Instant>) -> Arc<Self> {
        let update = v1::ServiceUpdate {
            version,
            ..Default::default()
        };
        Arc::new(Published {
            version,
            known: false,
            encoded: Bytes::from(update.encode_to_vec()),
            applied_at,
        })
    }
}

struct ServiceState {
    spec: ServiceSpec,
    published: Arc<Published>,
}

/// What changed in one [`Index::apply`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Services whose content (and so version) changed, including added ones.
    pub changed: usize,
    pub removed: usize,
    /// Destination channels that received a new value.
    pub notified: usize,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    services: HashMap<ServiceKey, Arc<ServiceState>>,
    vips: HashMap<SocketAddr, ServiceKey>,
    channels: HashMap<Destination, watch::Sender<Arc<Published>>>,
    closed: bool,
}

impl Inner {
    fn resolve(&self, dest: &Destination) -> Option<&Arc<ServiceState>> {
        let key = match dest {
            Destination::Service(key) => key,
            Destination::Vip(addr) => self.vips.get(addr)?,
        };
        self.services.get(key)
    }
}

/// The per-destination state the discovery API serves.
#[derive(Default)]
pub struct Index {
    inner: Mutex<Inner>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    // The lock is never held across an await and no code under it panics on input, so
    // a poisoned lock still guards consistent data.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `mesh` (source generation `generation`) the served state and notifies the
    /// subscribers of each destination whose content changed.
    pub fn apply(&self, generation: u64, mesh: &MeshSpec) -> ApplyOutcome {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut outcome = ApplyOutcome::default();
        let mut services = HashMap::with_capacity(mesh.services.len());
        let mut vips = HashMap::new();
        for spec in &mesh.services {
            let key = ServiceKey {
                name: spec.name.to_string(),
                namespace: spec.namespace.to_string(),
            };
            let state = match inner.services.get(&key) {
                Some(old) if old.spec == *spec => Arc::clone(old),
                _ => {
                    outcome.changed += 1;
                    Arc::new(ServiceState {
                        published: Arc::new(Published {
                            version: generation,
                            known: true,
                            encoded: Bytes::from(spec.to_update(generation).encode_to_vec()),
                            applied_at: Some(now),
                        }),
                        spec: spec.clone(),
                    })
                }
            };
            for vip in &spec.vips {
                for port in &spec.ports {
                    vips.insert(SocketAddr::new(*vip, port.port), key.clone());
                }
            }
            services.insert(key, state);
        }
        outcome.removed = inner
            .services
            .keys()
            .filter(|k| !services.contains_key(*k))
            .count();
        inner.generation = generation;
        inner.services = services;
        inner.vips = vips;

        let Inner {
            channels,
            services,
            vips,
            ..
        } = &mut *inner;
        // `release` normally drops unwatched channels; this catches receivers dropped
        // without it (tests, panics).
        channels.retain(|_, tx| tx.receiver_count() > 0);
        for (dest, tx) in channels.iter() {
            let resolved = match dest {
                Destination::Service(key) => services.get(key),
                Destination::Vip(addr) => vips.get(addr).and_then(|k| services.get(k)),
            };
            let current = tx.borrow().clone();
            let next = match resolved {
                Some(state) if current.known && current.version == state.published.version => {
                    continue;
                }
                Some(state) => Arc::clone(&state.published),
                None if !current.known => continue,
                None => Published::unknown(generation, Some(now)),
            };
            tx.send_replace(next);
            outcome.notified += 1;
        }
        outcome
    }

    /// A receiver of `dest`'s updates that holds the current one; `None` once the
    /// index is closed for shutdown.
    pub fn subscribe(&self, dest: &Destination) -> Option<watch::Receiver<Arc<Published>>> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        if let Some(tx) = inner.channels.get(dest) {
            return Some(tx.subscribe());
        }
        let current = match inner.resolve(dest) {
            Some(state) => Arc::clone(&state.published),
            None => Published::unknown(0, None),
        };
        let (tx, rx) = watch::channel(current);
        inner.channels.insert(dest.clone(), tx);
        Some(rx)
    }

    /// Called as a subscriber's receiver goes away: drops the destination's channel if
    /// that receiver was the last, so subscriptions to names that never exist cannot
    /// pile up channels between source changes.
    pub fn release(&self, dest: &Destination) {
        let mut inner = self.lock();
        if inner
            .channels
            .get(dest)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            inner.channels.remove(dest);
        }
    }

    /// Ends every subscription (their streams finish) and refuses new ones, so a
    /// graceful shutdown is not held up by watch streams that never end by themselves.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.channels.clear();
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Destinations with a channel (for tests and diagnostics).
    pub fn channel_count(&self) -> usize {
        self.lock().channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(text: &str) -> MeshSpec {
        MeshSpec::from_yaml(text, "test.yaml").expect("valid test mesh")
    }

    fn decode(p: &Published) -> v1::ServiceUpdate {
        v1::ServiceUpdate::decode(p.encoded.clone()).expect("index encodes valid updates")
    }

    fn svc(name: &str, ns: &str) -> Destination {
        Destination::Service(ServiceKey {
            name: name.into(),
            namespace: ns.into(),
        })
    }

    const TWO: &str = "services:
  - name: orders
    vips: [10.96.0.10]
    ports: [{port: 80}, {port: 8080}]
    endpoints: [{address: '127.0.0.1:8081'}]
  - name: payments
    namespace: billing
    endpoints: [{address: '127.0.0.1:9091'}]
";

    #[test]
    fn service_names_resolve_like_cluster_dns() {
        let orders = svc("orders", "shop");
        for name in [
            "orders",
            "orders.shop",
            "orders.shop.svc",
            "orders.shop.svc.cluster.local",
            "Orders.Shop.svc.cluster.local.",
        ] {
            assert_eq!(
                Destination::from_service_name(name, "shop"),
                Ok(orders.clone()),
                "{name}"
            );
        }
        assert_eq!(
            Destination::from_service_name("orders", ""),
            Ok(svc("orders", "default"))
        );
        for bad in ["", "a.b.c", "a..svc", "a.b.svc..x", "-a", "a_b.c"] {
            assert!(
                Destination::from_service_name(bad, "x").is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn vips_parse_and_reject_bad_values() {
        let ok = v1::SocketAddress {
            ip: "10.96.0.10".into(),
            port: 80,
        };
        assert_eq!(
            Destination::from_vip(&ok),
            Ok(Destination::Vip("10.96.0.10:80".parse().expect("addr")))
        );
        for (ip, port) in [("10.96.0.10", 0), ("10.96.0.10", 70_000), ("nope", 80)] {
            let bad = v1::SocketAddress {
                ip: ip.into(),
                port,
            };
            assert!(Destination::from_vip(&bad).is_err(), "{ip}:{port}");
        }
    }

    #[test]
    fn subscribe_by_name_and_by_every_vip_port() {
        let index = Index::new();
        index.apply(1, &mesh(TWO));
        let by_name = index.subscribe(&svc("orders", "default")).expect("open");
        let update = decode(&by_name.borrow());
        assert_eq!(update.version, 1);
        assert_eq!(update.service.expect("known").name, "orders");
        for port in [80, 8080] {
            let dest = Destination::Vip(SocketAddr::new([10, 96, 0, 10].into(), port));
            let rx = index.subscribe(&dest).expect("open");
            let p = rx.borrow().clone();
            assert!(p.known, "vip port {port}");
            // The VIP channel shares the service's encoded update.
            assert!(Arc::ptr_eq(&p, &by_name.borrow()));
        }
        let unknown_port = Destination::Vip(SocketAddr::new([10, 96, 0, 10].into(), 81));
        let rx = index.subscribe(&unknown_port).expect("open");
        assert!(!rx.borrow().known);
        assert!(decode(&rx.borrow()).service.is_none());
    }

    #[test]
    fn unrelated_change_keeps_other_versions() {
        let index = Index::new();
        index.apply(1, &mesh(TWO));
        let mut orders = index.subscribe(&svc("orders", "default")).expect("open");
        let mut payments = index.subscribe(&svc("payments", "billing")).expect("open");
        orders.mark_unchanged();
        payments.mark_unchanged();
        let edited = TWO.replace("9091", "9092");
        let outcome = index.apply(2, &mesh(&edited));
        assert_eq!(outcome.changed, 1);
        assert_eq!(outcome.notified, 1);
        assert!(!orders.has_changed().expect("open"));
        assert!(payments.has_changed().expect("open"));
        assert_eq!(orders.borrow().version, 1);
        assert_eq!(payments.borrow_and_update().version, 2);
        // Re-applying identical content changes nothing.
        let outcome = index.apply(3, &mesh(&edited));
        assert_eq!(outcome.changed, 0);
        assert!(!payments.has_changed().expect("open"));
    }

    #[test]
    fn unknown_service_appears_and_removal_bumps_version() {
        let index = Index::new();
        index.apply(1, &mesh(TWO));
        let mut later = index.subscribe(&svc("later", "default")).expect("open");
        assert_eq!(later.borrow().version, 0);
        assert!(!later.borrow_and_update().known);
        index.apply(2, &mesh(&format!("{TWO}  - name: later\n")));
        assert!(later.has_changed().expect("open"));
        let p = later.borrow_and_update().clone();
        assert!(p.known);
        assert_eq!(p.version, 2);
        index.apply(3, &mesh(TWO));
        let p = later.borrow_and_update().clone();
        assert!(!p.known);
        assert_eq!(p.version, 3, "removal is a newer version, not a reset");
        assert!(decode(&p).service.is_none());
    }

    #[test]
    fn vip_moving_to_another_service_keeps_versions_increasing() {
        let index = Index::new();
        index.apply(5, &mesh(TWO));
        let vip = Destination::Vip("10.96.0.10:80".parse().expect("addr"));
        let mut rx = index.subscribe(&vip).expect("open");
        assert_eq!(rx.borrow_and_update().version, 5);
        let moved = "services:
  - name: orders
    endpoints: [{address: '127.0.0.1:8081'}]
  - name: payments
    namespace: billing
    vips: [10.96.0.10]
    ports: [{port: 80}]
";
        index.apply(6, &mesh(moved));
        let update = decode(&rx.borrow_and_update());
        assert_eq!(update.version, 6);
        assert_eq!(update.service.expect("known").name, "payments");
    }

    #[test]
    fn close_ends_subscriptions_and_unwatched_channels_are_dropped() {
        let index = Index::new();
        index.apply(1, &mesh(TWO));
        let rx = index.subscribe(&svc("orders", "default")).expect("open");
        let gone = index.subscribe(&svc("ghost", "default")).expect("open");
        assert_eq!(index.channel_count(), 2);
        drop(gone);
        index.apply(2, &mesh(TWO));
        assert_eq!(index.channel_count(), 1);
        let ghost = svc("ghost", "default");
        let first = index.subscribe(&ghost).expect("open");
        let second = index.subscribe(&ghost).expect("open");
        // A receiver releases while still alive (from its Drop), so one is the last.
        index.release(&ghost);
        assert_eq!(index.channel_count(), 2, "two receivers: the channel stays");
        drop(first);
        index.release(&ghost);
        assert_eq!(index.channel_count(), 1);
        drop(second);
        index.close();
        assert!(rx.has_changed().is_err(), "sender dropped");
        assert!(index.subscribe(&svc("orders", "default")).is_none());
    }
}
