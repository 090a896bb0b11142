//! Waiting for the signals that ask a service to stop.

use tokio::signal::unix::{SignalKind, signal};

/// Completes on the first SIGTERM (what Kubernetes and the mesh's tests send) or SIGINT.
pub async fn signal_received() {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT will stop the service");
            None
        }
    };
    let sigterm = async {
        match terminate.as_mut() {
            Some(stream) => {
                stream.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let sigint = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot watch SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = sigterm => tracing::info!("SIGTERM received, shutting down"),
        _ = sigint => tracing::info!("SIGINT received, shutting down"),
    }
}
