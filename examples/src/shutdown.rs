//! Waiting for the signals that ask a service to stop.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM (what Kubernetes and the mesh's tests send) and SIGINT handlers.
///
/// Installed eagerly, as the first thing a binary does: until a handler exists the
/// default action kills the process, so a signal arriving between "listening" and the
/// first poll of a lazily created handler would end the process with no exit code.
#[derive(Debug)]
pub struct ShutdownSignals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl ShutdownSignals {
    /// Installs the handlers; must run inside the Tokio runtime.
    pub fn install() -> Self {
        let install = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {name}");
                None
            }
        };
        Self {
            terminate: install(SignalKind::terminate(), "SIGTERM"),
            interrupt: install(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Completes on the first SIGTERM or SIGINT.
    pub async fn received(mut self) {
        async fn next(stream: Option<&mut Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(self.terminate.as_mut()) => tracing::info!("SIGTERM received, shutting down"),
            () = next(self.interrupt.as_mut()) => tracing::info!("SIGINT received, shutting down"),
        }
    }
}
