//! The control-plane client. One `Discovery.Watch` stream per destination the app
//! uses, opened on first use (or at start for destinations the config names). Each
//! update becomes a new snapshot swapped in whole; an update that cannot be applied
//! is rejected whole, counted, and reported back on the stream (NACK) while the last
//! good state keeps serving. A lost control plane is retried with exponential backoff
//! and jitter; the first message of a new stream is the full current state, which is
//! how a proxy resynchronises after an outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use weft_api::v1;
use weft_api::v1::discovery_client::DiscoveryClient;

use crate::endpoint::Registry;
use crate::metrics::Metrics;
use crate::snapshot::lookup::{Demand, Dest, Resolving};
use crate::snapshot::{Service, SnapshotStore};

/// Subscriptions a proxy may hold; a misbehaving app inventing host names cannot
/// make the proxy open unbounded streams.
const MAX_SUBSCRIPTIONS: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Large meshes send large endpoint sets; tonic's 4 MiB default is too small.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

fn to_proto(dest: &Dest<'_>) -> v1::subscribe::Destination {
    match dest {
        Dest::Name(n) => v1::subscribe::Destination::Service(n.to_string()),
        Dest::Vip(a) => v1::subscribe::Destination::Vip(v1::SocketAddress {
            ip: a.ip().to_string(),
            port: u32::from(a.port()),
        }),
    }
}

struct Subscription {
    /// Turns true once the first update (known or unknown) has been applied.
    synced: watch::Sender<bool>,
    /// The snapshot key of the service this destination resolved to, if any.
    key: Mutex<Option<String>>,
}

pub(crate) struct Discovery {
    channel: Channel,
    node: v1::Node,
    store: SnapshotStore,
    metrics: Metrics,
    stats: Arc<Registry>,
    subs: Mutex<HashMap<Dest<'static>, Arc<Subscription>>>,
    version: AtomicU64,
    /// This client, for the watch tasks a `Demand::resolve` starts.
    me: Weak<Discovery>,
}

impl Demand for Discovery {
    fn resolve(&self, dest: Dest<'static>, wait: Duration) -> Resolving<'_> {
        Box::pin(async move {
            match self.me.upgrade() {
                Some(this) => this.wait_synced(dest, wait).await,
                None => false,
            }
        })
    }
}

impl Discovery {
    pub(crate) fn new(
        addr: &str,
        node: v1::Node,
        store: SnapshotStore,
        metrics: Metrics,
        stats: Arc<Registry>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Arc<Discovery>, String> {
        let version = store.load().version;
        let channel = super::control_plane::streaming_channel(addr, tls)?;
        Ok(Arc::new_cyclic(|me| Discovery {
            channel,
            node,
            store,
            metrics,
            stats,
            subs: Mutex::new(HashMap::new()),
            version: AtomicU64::new(version),
            me: me.clone(),
        }))
    }

    /// The channel to the control plane, for other streams to share its
    /// connection (the live view's reports).
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Subscribes to `dest` if not yet subscribed, and waits (up to `wait`) until its
    /// first update has been applied. Returns whether it is synced.
    async fn wait_synced(self: &Arc<Self>, dest: Dest<'static>, wait: Duration) -> bool {
        let mut synced = match self.subscribe(dest) {
            Some(rx) => rx,
            None => return false,
        };
        if *synced.borrow() {
            return true;
        }
        matches!(
            tokio::time::timeout(wait, synced.wait_for(|s| *s)).await,
            Ok(Ok(_))
        )
    }

    /// Starts watching `dest`; returns its sync flag, or None when at the cap.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        dest: Dest<'static>,
    ) -> Option<watch::Receiver<bool>> {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sub) = subs.get(&dest) {
            return Some(sub.synced.subscribe());
        }
        if subs.len() >= MAX_SUBSCRIPTIONS {
            tracing::warn!(?dest, "subscription cap reached; not watching");
            return None;
        }
        let (tx, rx) = watch::channel(false);
        let sub = Arc::new(Subscription {
            synced: tx,
            key: Mutex::new(None),
        });
        subs.insert(dest.clone(), sub.clone());
        self.metrics.discovery_subscriptions(subs.len());
        let this = self.clone();
        tokio::spawn(async move { this.watch_forever(dest, sub).await });
        Some(rx)
    }

    async fn watch_forever(self: Arc<Self>, dest: Dest<'static>, sub: Arc<Subscription>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.watch_once(&dest, &sub).await {
                Ok(()) => {
                    tracing::info!(?dest, "control plane closed the stream; reconnecting");
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    tracing::warn!(?dest, error = %e, "discovery stream failed; keeping last good state");
                }
            }
            // Full jitter keeps a fleet of proxies from reconnecting in lockstep.
            let sleep = rand::rng().random_range(BACKOFF_MIN..=backoff);
            tokio::time::sleep(sleep).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn watch_once(
        &self,
        dest: &Dest<'static>,
        sub: &Subscription,
    ) -> Result<(), tonic::Status> {
        let (tx, rx) = mpsc::channel(4);
        let subscribe = v1::WatchRequest {
            kind: Some(v1::watch_request::Kind::Subscribe(v1::Subscribe {
                node: Some(self.node.clone()),
                destination: Some(to_proto(dest)),
            })),
        };
        let _ = tx.send(subscribe).await;
        let mut client =
            DiscoveryClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = client.watch(ReceiverStream::new(rx)).await?.into_inner();
        self.metrics.discovery_connected(1);
        let result = async {
            while let Some(update) = stream.message().await? {
                let result = match self.apply(sub, &update) {
                    Ok(()) => {
                        sub.synced.send_replace(true);
                        v1::UpdateResult {
                            version: update.version,
                            applied: true,
                            error: String::new(),
                        }
                    }
                    Err(reason) => {
                        self.metrics.update_rejected();
                        tracing::warn!(?dest, version = update.version, %reason, "update rejected; keeping last good state");
                        v1::UpdateResult {
                            version: update.version,
                            applied: false,
                            error: reason,
                        }
                    }
                };
                let ack = v1::WatchRequest {
                    kind: Some(v1::watch_request::Kind::Result(result)),
                };
                // A full ack queue only means the server is not reading; never block on it.
                let _ = tx.try_send(ack);
            }
            Ok(())
        }
        .await;
        self.metrics.discovery_connected(-1);
        result
    }

    fn apply(&self, sub: &Subscription, update: &v1::ServiceUpdate) -> Result<(), String> {
        let mut key_slot = sub.key.lock().unwrap_or_else(|p| p.into_inner());
        let Some(info) = &update.service else {
            // The destination is not (or no longer) in the mesh.
            if let Some(old) = key_slot.take() {
                let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
                self.store
                    .rcu(|snap| snap.with_service(version, &old, None));
                self.metrics.snapshot_loaded(version);
            }
            return Ok(());
        };
        let key = format!("{}.{}", info.name, info.namespace);
        let svc = match &update.endpoints {
            Some(v1::service_update::Endpoints::Delta(delta)) => {
                let current = self.store.load().by_key(&key).cloned();
                let current = current
                    .ok_or_else(|| format!("delta for {key}, which this proxy does not hold"))?;
                current.apply_delta(update, delta, &self.metrics, &self.stats)
            }
            _ => Service::from_update(update, &self.metrics, &self.stats),
        }
        .map_err(|e| e.to_string())?;
        let svc = Arc::new(svc);
        let version = self.version.fetch_add(1, Ordering::Relaxed) + 1;
        self.store
            .rcu(|snap| snap.with_service(version, &key, Some(svc.clone())));
        self.metrics.snapshot_loaded(version);
        *key_slot = Some(key);
        Ok(())
    }
}
