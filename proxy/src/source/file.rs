//! File mode: the mesh comes from the config file and is re-read on SIGHUP. A file
//! that does not parse or validate is rejected whole; the last good snapshot stays.
//! Listeners are bound once at start: a file that changes them is rejected whole
//! too, saying so, rather than reported as reloaded while the old ports serve.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::endpoint::Registry;
use crate::metrics::Metrics;
use crate::snapshot::{self, SnapshotStore};

/// Re-reads `path` and swaps in its mesh. Returns the new version. `listeners` are
/// the running ones ([`Config::listeners`]).
pub(crate) fn reload(
    path: &Path,
    listeners: &[(String, SocketAddr)],
    store: &SnapshotStore,
    metrics: &Metrics,
    stats: &Registry,
) -> Result<u64, String> {
    let result = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let wanted = config.listeners();
            if wanted != listeners {
                return Err(format!(
                    "{}: the listeners changed ({}; running: {}); they are bound at start, \
                     so restart the proxy to apply them",
                    path.display(),
                    describe(&wanted),
                    describe(listeners)
                ));
            }
            let version = store.load().version + 1;
            snapshot::from_mesh(
                &config.mesh,
                version,
                config.node.namespace.as_str(),
                metrics,
                stats,
            )
            .map_err(|e| format!("{}: {e}", path.display()))
        });
    match result {
        Ok(snap) => {
            let version = snap.version;
            store.store(Arc::new(snap));
            metrics.snapshot_loaded(version);
            tracing::info!(version, path = %path.display(), "reloaded mesh from file");
            Ok(version)
        }
        Err(e) => {
            metrics.snapshot_rejected();
            tracing::warn!(error = %e, "reload rejected; keeping the current snapshot");
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
    listeners: Vec<(String, SocketAddr)>,
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
            let _ = reload(&path, &listeners, &store, &metrics, &stats);
        }
    });
}
