//! Accept loops: the connection cap, per-connection metrics, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::io::CountingIo;
use crate::metrics::ConnMetrics;

pub(crate) type Conn = CountingIo<TcpStream>;

/// Shared by every accept loop of one proxy.
#[derive(Clone)]
pub(crate) struct Acceptor {
    /// Caps connections across all listeners; over the cap a connection is closed at
    /// once (and counted) rather than queued, so overload is visible and bounded.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) drain: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

impl Acceptor {
    pub(crate) fn spawn<F, Fut>(&self, listener: TcpListener, metrics: ConnMetrics, handle: F)
    where
        F: Fn(Conn, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move { this.run(listener, metrics, handle).await });
    }

    async fn run<F, Fut>(self, listener: TcpListener, metrics: ConnMetrics, handle: F)
    where
        F: Fn(Conn, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut last_warned = None;
        loop {
            let accepted = tokio::select! {
                _ = self.drain.cancelled() => return,
                res = listener.accept() => res,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning, and
                    // say so once a second at most, not fifty times.
                    if last_warned
                        .is_none_or(|t: tokio::time::Instant| t.elapsed() >= Duration::from_secs(1))
                    {
                        tracing::warn!(error = %e, "accept failed");
                        last_warned = Some(tokio::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                metrics.rejected.inc();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            metrics.opened.inc();
            metrics.open.inc();
            let io = CountingIo::new(
                stream,
                metrics.bytes_read.clone(),
                metrics.bytes_written.clone(),
            );
            let fut = handle(io, peer);
            let (open, closed) = (metrics.open.clone(), metrics.closed.clone());
            self.tracker.spawn(async move {
                fut.await;
                closed.inc();
                open.dec();
                drop(permit);
            });
        }
    }
}
