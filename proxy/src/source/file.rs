//! File mode: the mesh comes from the config file and is re-read on SIGHUP, with
//! the gateway's host table (in any mode). A file that does not parse or validate
//! is rejected whole; the last good snapshot and host table stay. Listeners are
//! bound once at start: a file that changes them is rejected whole too, saying so,
//! rather than reported as reloaded while the old ports serve.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::endpoint::Registry;
use crate::gateway_config::{GatewayConfig, HostsStore};
use crate::metrics::Metrics;
use crate::snapshot::{self, SnapshotStore};

/// What the running proxy was started with, that a reload compares against or
/// swaps.
pub(crate) struct Running {
    /// [`Config::listeners`] at start.
    pub(crate) listeners: Vec<(String, SocketAddr)>,
    /// The gateway's config at start and the host table its listeners read.
    pub(crate) gateway: Option<(GatewayConfig, HostsStore)>,
    /// The mesh comes from the control plane: the file's `services:` are not
    /// swapped in (they would hide what discovery learnt).
    pub(crate) discovered: bool,
}

/// Re-reads `path` and swaps in its mesh and its gateway host table, both or
/// neither. Returns the new snapshot version.
pub(crate) fn reload(
    path: &Path,
    running: &Running,
    store: &SnapshotStore,
    metrics: &Metrics,
    stats: &Registry,
) -> Result<u64, String> {
    let result = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let wanted = config.listeners();
            if wanted != running.listeners {
                return Err(format!(
                    "{}: the listeners changed ({}; running: {}); they are bound at start, \
                     so restart the proxy to apply them",
                    path.display(),
                    describe(&wanted),
                    describe(&running.listeners)
                ));
            }
            if let (Some(new), Some((old, _))) = (&config.gateway, &running.gateway)
                && let Some(field) = new.fixed_change(old)
            {
                return Err(format!(
                    "{}: {field} changed; it is applied at start, so restart the proxy to \
                     apply it",
                    path.display()
                ));
            }
            let snap = if running.discovered {
                None
            } else {
                let version = store.load().version + 1;
                Some(
                    snapshot::from_mesh(
                        &config.mesh,
                        version,
                        config.node.namespace.as_str(),
                        metrics,
                        stats,
                    )
                    .map_err(|e| format!("{}: {e}", path.display()))?,
                )
            };
            Ok((snap, config.gateway.map(|g| g.hosts)))
        });
    match result {
        Ok((snap, hosts)) => {
            // The mesh first: a host added with its service finds the service.
            let version = match snap {
                Some(snap) => {
                    let version = snap.version;
                    store.store(Arc::new(snap));
                    version
                }
                None => store.load().version,
            };
            if let (Some(hosts), Some((_, table))) = (hosts, &running.gateway) {
                table.store(hosts);
            }
            metrics.snapshot_loaded(version);
            tracing::info!(version, path = %path.display(), "reloaded config file");
            Ok(version)
        }
        Err(e) => {
            metrics.snapshot_rejected();
            tracing::warn!(error = %e, "reload rejected; keeping the current config");
            Err(e)
        }
    }
}

fn describe(listeners: &[(String, SocketAddr)]) -> String {
    listeners
        .iter()
        .map(|(field, addr)| format!("{field} {addr}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reloads on every SIGHUP until the process ends.
#[cfg(unix)]
pub(crate) fn on_sighup(
    path: std::path::PathBuf,
    running: Running,
    store: SnapshotStore,
    metrics: Metrics,
    stats: Arc<Registry>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload disabled");
                return;
            }
        };
        while hup.recv().await.is_some() {
            let _ = reload(&path, &running, &store, &metrics, &stats);
        }
    });
}
