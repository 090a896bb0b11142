//! The proxy's watch over its HTTP client connections: it stops them all when the
//! proxy drains, and cuts off HTTP/1 clients over the header-read timeout.
//!
//! The timeout: a client has `header_read_timeout` to send a complete request head,
//! counted from when its connection was handed to the server or its previous
//! response ended; while a request is in flight the clock stops. hyper's own
//! `header_read_timeout` does this with a timer it allocates and registers in
//! tokio's wheel for every request and drops when the head is in, a noticeable
//! share of a proxied HTTP/1.1 request. Here a request costs three atomic stores,
//! and one sweeper per proxy checks the connections
//! every `header_read_timeout / 8` (10 ms to 1 s). The sweeper also stamps when a
//! connection fell idle, at its first pass after, so a request reads no clock: a
//! client is cut off between the timeout and the timeout plus two periods.
//!
//! Each connection's task waits on its own `Stopped` future rather than on the
//! drain token: it polls that future every time it wakes, and a token's future
//! costs a lock where `Stopped` costs an atomic load and a waker check.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio_util::sync::CancellationToken;

use crate::clock::{nanos, now_nanos};
use crate::sync::lock;

/// Why a connection's server should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The proxy is draining: finish in-flight requests, take no new ones.
    Drain,
    /// The client sent no complete request head in time: close now.
    HeadTimeout,
}

const RUNNING: u8 = 0;
const DRAIN: u8 = 1;
const HEAD_TIMEOUT: u8 = 2;
/// The server is done with the connection; the sweeper forgets it.
const ENDED: u8 = 3;

/// `Conn::idle_since` of a connection that fell idle since the last sweep.
const UNSTAMPED: u64 = u64::MAX;

/// The registry of open client connections, and its sweeper.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    header_read_timeout: Duration,
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    open: Vec<Arc<Conn>>,
    drained: bool,
}

impl Watch {
    /// Starts the sweeper, which runs while a clone of the returned watch lives
    /// (and stops every connection once `drain` is cancelled).
    pub(crate) fn start(header_read_timeout: Duration, drain: CancellationToken) -> Watch {
        let watch = Watch {
            inner: Arc::new(Registry {
                header_read_timeout,
                conns: Mutex::default(),
            }),
        };
        let registry = Arc::downgrade(&watch.inner);
        let period =
            (header_read_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if !sweep(&registry, now_nanos()) {
                            return;
                        }
                    }
                    _ = drain.cancelled() => {
                        stop_all(&registry);
                        return;
                    }
                }
            }
        });
        watch
    }

    /// Watches a new connection; `http1` ones are held to the header-read timeout.
    /// The returned handle marks the connection ended when dropped.
    pub(crate) fn watch(&self, http1: bool) -> Watched {
        let conn = Arc::new(Conn {
            http1,
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(UNSTAMPED),
            stop: AtomicU8::new(RUNNING),
            waker: AtomicWaker::new(),
        });
        let mut conns = lock(&self.inner.conns);
        if conns.drained {
            conn.stop(DRAIN);
        } else {
            conns.open.push(Arc::clone(&conn));
        }
        Watched(conn)
    }
}

/// Cuts off the HTTP/1 clients over time and forgets the ended connections.
/// False once the watch itself is gone.
fn sweep(registry: &Weak<Registry>, now: u64) -> bool {
    let Some(registry) = registry.upgrade() else {
        return false;
    };
    let timeout = nanos(registry.header_read_timeout);
    lock(&registry.conns).open.retain(|conn| {
        if conn.stop.load(Ordering::Relaxed) != RUNNING {
            return false;
        }
        if conn.over_time(now, timeout) {
            conn.stop(HEAD_TIMEOUT);
            return false;
        }
        true
    });
    true
}

fn stop_all(registry: &Weak<Registry>) {
    let Some(registry) = registry.upgrade() else {
        return;
    };
    let mut conns = lock(&registry.conns);
    conns.drained = true;
    for conn in conns.open.drain(..) {
        conn.stop(DRAIN);
    }
}

#[derive(Debug)]
struct Conn {
    http1: bool,
    in_flight: AtomicU32,
    /// When the connection last fell idle (`now_nanos()`), or `UNSTAMPED`.
    idle_since: AtomicU64,
    stop: AtomicU8,
    waker: AtomicWaker,
}

impl Conn {
    fn stop(&self, why: u8) {
        if self
            .stop
            .compare_exchange(RUNNING, why, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.waker.wake();
        }
    }

    fn over_time(&self, now: u64, timeout: u64) -> bool {
        // The counters are written by the connection's task and read here, in the
        // sweeper's: a request that begins just as this reads them may find its
        // connection closed, as it would have been a moment earlier.
        if !self.http1 || self.in_flight.load(Ordering::Acquire) != 0 {
            return false;
        }
        match self.idle_since.load(Ordering::Acquire) {
            UNSTAMPED => {
                // A request that ended meanwhile may have unstamped it again: then
                // this stamp is as good.
                let _ = self.idle_since.compare_exchange(
                    UNSTAMPED,
                    now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                false
            }
            since => now.saturating_sub(since) >= timeout,
        }
    }
}

/// One watched connection, held by its server.
#[derive(Debug)]
pub(crate) struct Watched(Arc<Conn>);

impl Watched {
    /// A request's head has arrived: the clock stops until the returned guard is
    /// dropped.
    pub(crate) fn begin(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::Release);
        InFlight(Arc::clone(&self.0))
    }

    /// Resolves when the server should stop, and why.
    pub(crate) fn stopped(&self) -> Stopped<'_> {
        Stopped(&self.0)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.0.stop.store(ENDED, Ordering::Relaxed);
    }
}

/// The future `Watched::stopped` returns.
#[derive(Debug)]
pub(crate) struct Stopped<'a>(&'a Conn);

impl Future for Stopped<'_> {
    type Output = Stop;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stop> {
        let conn = self.0;
        if let Some(stop) = stop_of(conn.stop.load(Ordering::Acquire)) {
            return Poll::Ready(stop);
        }
        conn.waker.register(cx.waker());
        // A stop that came between the load and the registration found no waker.
        match stop_of(conn.stop.load(Ordering::Acquire)) {
            Some(stop) => Poll::Ready(stop),
            None => Poll::Pending,
        }
    }
}

fn stop_of(state: u8) -> Option<Stop> {
    match state {
        DRAIN => Some(Stop::Drain),
        HEAD_TIMEOUT => Some(Stop::HeadTimeout),
        _ => None,
    }
}

/// A request in flight on a connection; dropping it restarts the head clock. The
/// response's body holds it (`ProxyBody::until_sent`): hyper drops the body when it
/// has written the last byte.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Conn>);

impl Clone for InFlight {
    /// Another hold on the same connection's clock (the request body's, beside the
    /// response body's).
    fn clone(&self) -> Self {
        self.0.in_flight.fetch_add(1, Ordering::Release);
        InFlight(Arc::clone(&self.0))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(UNSTAMPED, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn registry(watch: &Watch) -> Weak<Registry> {
        Arc::downgrade(&watch.inner)
    }

    fn open(watch: &Watch) -> usize {
        lock(&watch.inner.conns).open.len()
    }

    fn stopped_now(conn: &Watched) -> Option<Stop> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(&mut conn.stopped()).poll(&mut cx) {
            Poll::Ready(stop) => Some(stop),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn an_idle_http1_client_is_cut_off_once_over_time() {
        let watch = Watch::start(Duration::from_secs(10), CancellationToken::new());
        let conn = watch.watch(true);
        // The first sweep after the connection opened stamps it.
        let opened = now_nanos();
        assert!(sweep(&registry(&watch), opened));
        assert_eq!(conn.0.idle_since.load(Ordering::Relaxed), opened);

        assert!(sweep(&registry(&watch), opened + 9 * SECOND));
        assert_eq!(stopped_now(&conn), None, "within its time");
        assert!(sweep(&registry(&watch), opened + 10 * SECOND));
        assert_eq!(stopped_now(&conn), Some(Stop::HeadTimeout), "over time");
        assert_eq!(open(&watch), 0, "and forgotten");
    }

    #[tokio::test]
    async fn an_http2_connection_has_no_head_clock() {
        let watch = Watch::start(Duration::from_secs(10), CancellationToken::new());
        let conn = watch.watch(false);
        let opened = now_nanos();
        sweep(&registry(&watch), opened);
        sweep(&registry(&watch), opened + 3600 * SECOND);
        assert_eq!(stopped_now(&conn), None);
    }

    #[tokio::test]
    async fn a_request_in_flight_stops_the_clock_and_its_end_restarts_it() {
        let watch = Watch::start(Duration::from_secs(10), CancellationToken::new());
        let conn = watch.watch(true);
        let opened = now_nanos();
        sweep(&registry(&watch), opened);
        let request = conn.begin();

        // A response far longer than the timeout keeps its connection.
        sweep(&registry(&watch), opened + 60 * SECOND);
        assert_eq!(stopped_now(&conn), None, "cut off mid-request");

        drop(request);
        // The first sweep after the response's end stamps it.
        let ended = opened + 61 * SECOND;
        sweep(&registry(&watch), ended);
        assert_eq!(stopped_now(&conn), None, "just idle");
        sweep(&registry(&watch), ended + 9 * SECOND);
        assert_eq!(stopped_now(&conn), None, "timed from the response's end");
        sweep(&registry(&watch), ended + 10 * SECOND);
        assert_eq!(stopped_now(&conn), Some(Stop::HeadTimeout));
    }

    #[tokio::test]
    async fn the_clock_waits_for_every_hold_on_a_request() {
        let watch = Watch::start(Duration::from_secs(10), CancellationToken::new());
        let conn = watch.watch(true);
        let opened = now_nanos();
        sweep(&registry(&watch), opened);
        let response = conn.begin();
        let upload = response.clone();

        // The answer is sent while the client is still uploading.
        drop(response);
        sweep(&registry(&watch), opened + 30 * SECOND);
        assert_eq!(stopped_now(&conn), None, "cut off mid-upload");

        drop(upload);
        let ended = opened + 31 * SECOND;
        sweep(&registry(&watch), ended);
        sweep(&registry(&watch), ended + 10 * SECOND);
        assert_eq!(stopped_now(&conn), Some(Stop::HeadTimeout));
    }

    #[tokio::test]
    async fn a_drain_stops_open_connections_and_new_ones() {
        let drain = CancellationToken::new();
        let watch = Watch::start(Duration::from_secs(10), drain.clone());
        let conn = watch.watch(false);
        let mut stopped = std::pin::pin!(conn.stopped());
        // Polled once from this task, so that the stop has a waker to wake.
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(stopped.as_mut().poll(cx).is_pending()));
        assert!(pending.await);

        drain.cancel();
        // The sweeper wakes the waiting server.
        let stop = tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("stopped on drain");
        assert_eq!(stop, Stop::Drain);
        assert_eq!(stopped_now(&watch.watch(true)), Some(Stop::Drain));
    }

    #[tokio::test]
    async fn ended_connections_are_forgotten_and_the_sweeper_stops_with_the_watch() {
        let watch = Watch::start(Duration::from_secs(10), CancellationToken::new());
        drop(watch.watch(true));
        let weak = registry(&watch);
        assert!(sweep(&weak, now_nanos()));
        assert_eq!(open(&watch), 0);
        drop(watch);
        assert!(!sweep(&weak, now_nanos()));
    }
}
