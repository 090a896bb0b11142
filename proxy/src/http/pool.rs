//! Keep-alive connections to endpoints, keyed by endpoint address and the identity
//! the endpoint must prove (mTLS when it has one), so a connection verified for one
//! identity is never reused for a request that expects another.
//!
//! HTTP/1: a stack of idle connections per endpoint; a connection goes back on the
//! stack when its response body has been read to the end. HTTP/2: one multiplexed
//! connection per endpoint, shared by all requests. Idle connections are closed after
//! the idle timeout, which also drains connections to endpoints that left the set.

use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::error::ProxyError;
use super::h1_client::H1Conn;
use super::h2_client::{H2Sender, KeepAlive};
use crate::FastMap;
use crate::breaker::{ConnLimit, Permit};
use crate::clock::now_nanos;
use crate::identity::{Alpn, H2Orig, Identity, client_negotiated_h2_orig};
use crate::sync::lock;

/// One endpoint as the pool sees it: where, and who it must be.
#[derive(Debug, Clone, Eq)]
pub(crate) struct Key {
    pub(crate) addr: SocketAddr,
    /// The SPIFFE ID the endpoint must present; `None`: plaintext.
    pub(crate) identity: Option<Arc<str>>,
}

/// Hashes the address alone, as one word: one address rarely has more than one
/// identity, and hashing the SPIFFE ID cost more than the rest of a lookup, which
/// every request through the pool makes.
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.addr {
            SocketAddr::V4(a) => {
                state.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()))
            }
            SocketAddr::V6(a) => {
                state.write_u128(a.ip().to_bits());
                state.write_u16(a.port());
            }
        }
    }
}

/// The identity compared by pointer first: a request's key shares its endpoint's
/// `Arc`, as the key its connection was opened with usually does, and `Arc<str>`'s
/// own `==` compares the bytes whatever the pointers (a byte loop in a musl build).
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.addr == other.addr
            && match (&self.identity, &other.identity) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                (None, None) => true,
                _ => false,
            }
    }
}

impl Key {
    pub(crate) fn plain(addr: SocketAddr) -> Key {
        Key {
            addr,
            identity: None,
        }
    }
}

/// A connection to an endpoint, in plaintext or mTLS.
pub(crate) type Upstream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// The version of `Alpn::H2Orig` a new connection settled on: none on plaintext.
fn settled_h2_orig(stream: &Upstream) -> Option<H2Orig> {
    match stream {
        Either::Right(tls) => client_negotiated_h2_orig(tls),
        Either::Left(_) => None,
    }
}

/// Idle HTTP/1 connections kept per endpoint; more are closed when returned.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    h1: Mutex<FastMap<Key, Vec<Idle>>>,
    h2: Mutex<FastMap<Key, Shared>>,
    /// Peer proxies that answered an offer of `Alpn::H2Orig` with plain HTTP/1.1
    /// (an older Weft, or the upgrade off there), and when (`now_nanos()`): their
    /// HTTP/1 requests take idle HTTP/1.1 connections without asking again until
    /// the pool's idle timeout has passed.
    h1_only: Mutex<FastMap<Key, u64>>,
    /// One HTTP/2 dial at a time per endpoint, so a burst of requests to a cold
    /// endpoint shares one new connection instead of each opening its own.
    h2_dials: Mutex<FastMap<Key, Arc<tokio::sync::Mutex<Dial>>>>,
    idle_timeout: Duration,
    identity: Option<Arc<Identity>>,
}

/// The outcome of the last HTTP/2 dial to one endpoint.
#[derive(Default)]
struct Dial {
    /// When the last dial failed (`now_nanos()`), and how.
    failed: Option<(u64, ProxyError)>,
    /// When the last dial was answered with HTTP/1.1 (`Alpn::H2Orig` declined).
    answered_h1: Option<u64>,
}

/// What a request that waited at a dial gate goes on with.
enum Gated<T> {
    /// Its own dial's result.
    Dialed(T),
    /// The shared connection a dial made while it waited.
    Shared(H2Sender),
    /// A dial made while it waited found the peer speaks HTTP/1.1 only.
    NoShared,
}

struct Idle {
    conn: H1Conn,
    /// `now_nanos()` when it went idle.
    since: u64,
    /// The service's idle timeout, or the pool's. Checked when the connection is
    /// taken, so a shorter one than the pool's holds even between sweeps.
    timeout: Duration,
}

/// What an HTTP/1 request to a peer proxy travels on.
pub(crate) enum Carrier {
    /// A stream of the peer's shared HTTP/2 connection (`http::orig_proto`), in
    /// the version of `Alpn::H2Orig` it settled on.
    Stream(H2Sender, H2Orig),
    /// An HTTP/1.1 connection of its own: the peer takes no HTTP/1 streams.
    Conn(H1Conn),
}

struct Shared {
    tx: H2Sender,
    /// `now_nanos()` when a request last took it.
    last_used: u64,
}

/// A unit of the service's connection cap, for a new connection; a dial without a
/// service's limit counts nothing.
fn take(limit: Option<&ConnLimit>) -> Result<Permit, ProxyError> {
    match limit {
        None => Ok(Permit::unlimited()),
        Some(l) => l.acquire().ok_or(ProxyError::Overloaded),
    }
}

/// Puts an HTTP/1 connection back on its endpoint's idle stack.
pub(crate) struct Giveback {
    key: Key,
    idle_timeout: Option<Duration>,
    pool: Weak<PoolInner>,
}

impl Giveback {
    pub(crate) fn give(self, conn: H1Conn) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut h1 = lock(&pool.h1);
        let stack = h1.entry(self.key).or_default();
        if stack.len() < MAX_IDLE_PER_ENDPOINT {
            stack.push(Idle {
                conn,
                since: now_nanos(),
                timeout: self.idle_timeout.unwrap_or(pool.idle_timeout),
            });
        }
    }
}

pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // Requests and responses are written whole; Nagle would only add latency.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "connect failed");
            Err(connect_error(&e))
        }
        Err(_) => Err(ProxyError::ConnectTimeout),
    }
}

fn connect_error(e: &io::Error) -> ProxyError {
    match e.kind() {
        io::ErrorKind::TimedOut => ProxyError::ConnectTimeout,
        _ => ProxyError::ConnectRefused,
    }
}

/// Opens a connection to `key`: TCP, then mTLS when the endpoint has an identity.
pub(crate) async fn connect_to(
    key: &Key,
    timeout: Duration,
    identity: Option<&Identity>,
    alpn: Alpn,
) -> Result<Upstream, ProxyError> {
    let stream = connect(key.addr, timeout).await?;
    let Some(expected) = &key.identity else {
        return Ok(Either::Left(stream));
    };
    // An endpoint that must prove an identity is never spoken to in plaintext.
    let identity = identity.ok_or(ProxyError::TlsFailed)?;
    match tokio::time::timeout(timeout, identity.connect(stream, key.addr, expected, alpn)).await {
        Ok(Ok(tls)) => Ok(Either::Right(tls)),
        Ok(Err(failure)) => {
            tracing::debug!(addr = %key.addr, reason = failure.reason(), "mTLS handshake failed");
            Err(ProxyError::TlsFailed)
        }
        Err(_) => Err(ProxyError::ConnectTimeout),
    }
}

impl Pool {
    /// A plaintext-only pool.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn new(idle_timeout: Duration) -> Pool {
        Self::with_identity(idle_timeout, None)
    }

    /// A pool that can open mTLS connections with `identity`'s certificate.
    pub(crate) fn with_identity(idle_timeout: Duration, identity: Option<Arc<Identity>>) -> Pool {
        let pool = Pool {
            inner: Arc::new(PoolInner {
                h1: Mutex::new(FastMap::default()),
                h2: Mutex::new(FastMap::default()),
                h1_only: Mutex::new(FastMap::default()),
                h2_dials: Mutex::new(FastMap::default()),
                idle_timeout,
                identity,
            }),
        };
        let weak = Arc::downgrade(&pool.inner);
        let period = (idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.sweep();
            }
        });
        pool
    }

    /// The identity mTLS connections present, when the proxy has one.
    pub(crate) fn identity(&self) -> Option<&Arc<Identity>> {
        self.inner.identity.as_ref()
    }

    /// Whether HTTP/1 requests to peer proxies may travel as streams of the shared
    /// HTTP/2 connection (mTLS on, and the upgrade not turned off).
    pub(crate) fn h2_orig(&self) -> bool {
        self.inner.identity.as_ref().is_some_and(|i| i.h2_orig())
    }

    /// `idle_timeout` overrides the pool's for this connection (a service's policy).
    pub(crate) fn giveback(&self, key: Key, idle_timeout: Option<Duration>) -> Giveback {
        Giveback {
            key,
            idle_timeout,
            pool: Arc::downgrade(&self.inner),
        }
    }

    /// An idle HTTP/1 connection to `key`, or a new one; `now` is a `now_nanos()`
    /// reading the request already has.
    pub(crate) async fn h1(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
        now: u64,
    ) -> Result<H1Conn, ProxyError> {
        loop {
            let idle = lock(&self.inner.h1).get_mut(key).and_then(Vec::pop);
            let Some(mut idle) = idle else { break };
            let idle_for = Duration::from_nanos(now.saturating_sub(idle.since));
            if idle_for > idle.timeout || idle.conn.is_closed() {
                continue;
            }
            return Ok(idle.conn.reused());
        }
        // Boxed: the dial (with its TLS handshake state) is the cold path, and
        // inlining it would make every request's future, spawned per HTTP/2
        // stream, that much larger to allocate and move.
        Box::pin(self.new_h1(key, connect_timeout, limit)).await
    }

    pub(crate) async fn new_h1(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
    ) -> Result<H1Conn, ProxyError> {
        let (guard, stream) = self.open(key, connect_timeout, limit, Alpn::Http1).await?;
        Ok(H1Conn::new(stream, guard))
    }

    /// The shared HTTP/2 connection to `key`, opened on first use; `now` (a
    /// `now_nanos()` reading the request already has) stamps its last use.
    pub(crate) async fn h2(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
        now: u64,
    ) -> Result<H2Sender, ProxyError> {
        if let Some(tx) = self.shared_h2(key, now) {
            return Ok(tx);
        }
        // Boxed: waiting for or making a dial is the cold path.
        Box::pin(self.h2_dial_once(key, connect_timeout, limit)).await
    }

    /// What an HTTP/1 request to the peer proxy at `key` goes on: a stream of the
    /// shared HTTP/2 connection when the peer takes them, else an HTTP/1.1
    /// connection. A first request asks the peer with one connection offering
    /// both (`Alpn::H2Orig`) and uses whichever it answers, so a peer without the
    /// upgrade costs no extra connection (a `max_connections: 1` has room for it).
    pub(crate) async fn h1_carrier(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
        now: u64,
    ) -> Result<Carrier, ProxyError> {
        match self.shared_h2(key, now) {
            Some(tx) => {
                if let Some(version) = tx.carries_h1() {
                    return Ok(Carrier::Stream(tx, version));
                }
            }
            None if !self.h1_only(key, now) => {
                // Boxed: waiting for or making a dial is the cold path.
                return Box::pin(self.h1_carrier_dial(key, connect_timeout, limit)).await;
            }
            None => {}
        }
        Ok(Carrier::Conn(
            self.h1(key, connect_timeout, limit, now).await?,
        ))
    }

    fn h1_only(&self, key: &Key, now: u64) -> bool {
        let mut h1_only = lock(&self.inner.h1_only);
        match h1_only.get(key) {
            Some(&since)
                if Duration::from_nanos(now.saturating_sub(since)) <= self.inner.idle_timeout =>
            {
                true
            }
            Some(_) => {
                h1_only.remove(key);
                false
            }
            None => false,
        }
    }

    /// `h1_carrier`'s dial, behind the endpoint's dial gate like `h2_dial_once`.
    async fn h1_carrier_dial(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
    ) -> Result<Carrier, ProxyError> {
        let dialed = self
            .dial_gated(key, || async {
                let (guard, stream) = self.open(key, connect_timeout, limit, Alpn::H2Orig).await?;
                let carries_h1 = settled_h2_orig(&stream);
                if let Some(version) = carries_h1 {
                    return self
                        .start_h2(key, stream, guard, carries_h1)
                        .await
                        .map(|tx| Carrier::Stream(tx, version));
                }
                lock(&self.inner.h1_only).insert(key.clone(), now_nanos());
                Ok(Carrier::Conn(H1Conn::new(stream, guard)))
            })
            .await?;
        match dialed {
            Gated::Dialed(carrier) => return Ok(carrier),
            Gated::Shared(tx) => {
                if let Some(version) = tx.carries_h1() {
                    return Ok(Carrier::Stream(tx, version));
                }
            }
            Gated::NoShared => {}
        }
        // Another request found the peer without the upgrade while we waited.
        Ok(Carrier::Conn(
            self.h1(key, connect_timeout, limit, now_nanos()).await?,
        ))
    }

    /// Waits for the endpoint's dial gate, then uses a connection another waiter
    /// made, or that waiter's failure, or dials.
    async fn h2_dial_once(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
    ) -> Result<H2Sender, ProxyError> {
        let dialed = self
            .dial_gated(key, || async {
                let (guard, stream) = self.open(key, connect_timeout, limit, Alpn::Http2).await?;
                let carries_h1 = settled_h2_orig(&stream);
                self.start_h2(key, stream, guard, carries_h1).await
            })
            .await?;
        match dialed {
            Gated::Dialed(tx) | Gated::Shared(tx) => Ok(tx),
            // Only an HTTP/1 dial leaves no shared connection, and only it waits
            // with `NoShared`.
            Gated::NoShared => Box::pin(self.h2_dial_once(key, connect_timeout, limit)).await,
        }
    }

    /// Runs `dial` behind the endpoint's dial gate, one at a time, unless a dial
    /// made while this one waited left a shared connection, or failed.
    async fn dial_gated<T, F, Fut>(&self, key: &Key, dial: F) -> Result<Gated<T>, ProxyError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ProxyError>>,
    {
        let gate = lock(&self.inner.h2_dials)
            .entry(key.clone())
            .or_default()
            .clone();
        let waited_since = now_nanos();
        let mut gated = gate.lock().await;
        if let Some(tx) = self.shared_h2(key, now_nanos()) {
            return Ok(Gated::Shared(tx));
        }
        // A dial that failed while we waited answers us too, rather than every
        // waiter dialing (and timing out) in turn.
        if let Some((at, err)) = gated.failed
            && at >= waited_since
        {
            return Err(err);
        }
        if gated.answered_h1.is_some_and(|at| at >= waited_since) {
            return Ok(Gated::NoShared);
        }
        match dial().await {
            Ok(made) => {
                gated.failed = None;
                if !self.has_shared_h2(key) {
                    gated.answered_h1 = Some(now_nanos());
                }
                Ok(Gated::Dialed(made))
            }
            Err(e) => {
                gated.failed = Some((now_nanos(), e));
                Err(e)
            }
        }
    }

    fn has_shared_h2(&self, key: &Key) -> bool {
        lock(&self.inner.h2).contains_key(key)
    }

    fn shared_h2(&self, key: &Key, now: u64) -> Option<H2Sender> {
        let mut h2 = lock(&self.inner.h2);
        let shared = h2.get_mut(key)?;
        if shared.tx.is_closed() {
            h2.remove(key);
            return None;
        }
        shared.last_used = shared.last_used.max(now);
        Some(shared.tx.clone())
    }

    /// A new connection to `key` (mTLS when it has an identity), counted against
    /// the service's connection cap for as long as the returned guard lives.
    async fn open(
        &self,
        key: &Key,
        connect_timeout: Duration,
        limit: Option<&ConnLimit>,
        alpn: Alpn,
    ) -> Result<(Permit, Upstream), ProxyError> {
        let guard = take(limit)?;
        let stream = connect_to(key, connect_timeout, self.inner.identity.as_deref(), alpn).await?;
        Ok((guard, stream))
    }

    /// Starts HTTP/2 on a new connection and shares it.
    async fn start_h2(
        &self,
        key: &Key,
        stream: Upstream,
        guard: Permit,
        carries_h1: Option<H2Orig>,
    ) -> Result<H2Sender, ProxyError> {
        let tx = super::h2_client::handshake(stream, key.addr, guard, KeepAlive::DEFAULT)
            .await
            .map_err(|_| ProxyError::UpstreamReset)?
            .carrying_h1(carries_h1);
        lock(&self.inner.h2).insert(
            key.clone(),
            Shared {
                tx: tx.clone(),
                last_used: now_nanos(),
            },
        );
        Ok(tx)
    }

    /// Idle connections per endpoint.
    #[cfg(test)]
    pub(crate) fn idle_h1(&self, addr: SocketAddr) -> usize {
        lock(&self.inner.h1)
            .iter()
            .filter(|(k, _)| k.addr == addr)
            .map(|(_, v)| v.len())
            .sum()
    }
}

impl PoolInner {
    fn sweep(&self) {
        let now = now_nanos();
        let idle_for = |since: u64| Duration::from_nanos(now.saturating_sub(since));
        lock(&self.h1).retain(|_, stack| {
            stack.retain_mut(|i| idle_for(i.since) <= i.timeout && !i.conn.is_closed());
            !stack.is_empty()
        });
        // Dropping our handle only closes the connection once in-flight streams,
        // which hold their own handles, are done.
        lock(&self.h2)
            .retain(|_, s| idle_for(s.last_used) <= self.idle_timeout && !s.tx.is_closed());
        // A gate nobody holds or waits on is only kept for the next dial.
        lock(&self.h2_dials).retain(|_, gate| Arc::strong_count(gate) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn connections_over_the_service_cap_are_refused_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let pool = Pool::new(Duration::from_secs(60));
        let limit = ConnLimit {
            count: Arc::default(),
            max: 1,
        };
        let first = pool
            .new_h1(&Key::plain(addr), Duration::from_secs(5), Some(&limit))
            .await
            .expect("first connection");
        assert!(matches!(
            pool.new_h1(&Key::plain(addr), Duration::from_secs(5), Some(&limit))
                .await,
            Err(ProxyError::Overloaded)
        ));
        drop(first);
        assert_eq!(limit.count.load(Ordering::Relaxed), 0);
        server.abort();
    }

    #[tokio::test]
    async fn a_burst_to_a_cold_endpoint_opens_one_http2_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        let pool = Pool::new(Duration::from_secs(60));
        let dials: Vec<_> = (0..16)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.h2(&Key::plain(addr), Duration::from_secs(5), None, now_nanos())
                        .await
                })
            })
            .collect();
        for d in dials {
            assert!(d.await.expect("join").is_ok());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        server.abort();
    }

    #[tokio::test]
    async fn waiters_share_a_failed_dial_instead_of_retrying_in_turn() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let pool = Pool::new(Duration::from_secs(60));
        let dials: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.h2(&Key::plain(addr), Duration::from_secs(5), None, now_nanos())
                        .await
                })
            })
            .collect();
        for d in dials {
            assert!(matches!(
                d.await.expect("join"),
                Err(ProxyError::ConnectRefused)
            ));
        }
    }
}
