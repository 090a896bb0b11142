//! Forwards one HTTP request to one endpoint and streams the response back.
//!
//! Each hop keeps the client's protocol: HTTP/1.1 in, HTTP/1.1 out (with Upgrade
//! tunnels); HTTP/2 in, HTTP/2 out (so gRPC trailers and bidirectional streams pass).

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{PooledBody, ProxyBody, RequestBody};
use super::error::ProxyError;
use super::h1_client::{self, H1Body, H1Conn, Upgraded};
use super::h2_body::H2Body;
use super::h2_client::{H2Sender, SendError};
use super::headers::{is_upgrade, strip_hop_by_hop};
use super::orig_proto;
use super::pool::{Carrier, Key, Pool};
use crate::breaker::{ConnLimit, Permit};
use crate::identity::H2Orig;
use crate::metrics::{Limit, ServiceMetrics};

/// A request on its way through the proxy's layers. Boxed once, where it enters:
/// each layer is an async fn that would otherwise hold its own 272-byte slot for
/// it, and the per-request future is allocated and moved whole (hyper moves it
/// into its HTTP/1 dispatcher, and into a task per HTTP/2 stream).
pub(crate) type BoxedRequest = Box<Request<RequestBody>>;

#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// When the attempt started (`now_nanos()`): stamps a shared connection's use.
    pub(crate) started: u64,
    pub(crate) addr: SocketAddr,
    /// The SPIFFE ID the endpoint must present (mTLS); `None`: plaintext.
    pub(crate) identity: Option<Arc<str>>,
    pub(crate) connect_timeout: Duration,
    /// Bounds this one attempt, from connect to response head.
    pub(crate) request_timeout: Option<Duration>,
    /// How long a kept-alive connection to this target may sit idle (None: the
    /// pool's default).
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) gate: Option<Gate<'a>>,
    /// The answer goes back to a Weft proxy (ALPN `weft.h2-orig`), whose servers
    /// date what they forward: an HTTP/1 app's Date of this second is left out
    /// for it to write again, sparing both proxies HPACK's literal.
    pub(crate) leave_date: bool,
}

/// A service's connection-level limits: open connections and requests waiting for
/// one. Over either, the attempt fails `overloaded` at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gate<'a> {
    pub(crate) connections: &'a ConnLimit,
    pub(crate) pending: &'a AtomicU32,
    pub(crate) max_pending: u32,
    pub(crate) metrics: &'a ServiceMetrics,
}

/// Counts the request as pending while it waits for a connection; refuses it at once
/// over the service's cap. Kept apart from the connect future (rather than wrapping
/// it) so that future is not stored twice in every request's state.
fn admit<'a>(target: &Target<'a>) -> Result<Option<Permit<&'a AtomicU32>>, ProxyError> {
    let Some(gate) = target.gate else {
        return Ok(None);
    };
    match Permit::acquire(gate.pending, gate.max_pending) {
        Some(slot) => Ok(Some(slot)),
        None => {
            gate.metrics.overloaded(Limit::Pending);
            Err(ProxyError::Overloaded)
        }
    }
}

/// Counts a connect refused by the service's connection cap.
fn note_connect<T>(target: &Target<'_>, res: &Result<T, ProxyError>) {
    if let (Some(gate), Err(ProxyError::Overloaded)) = (target.gate, res) {
        gate.metrics.overloaded(Limit::Connections);
    }
}

impl Target<'_> {
    fn key(&self) -> Key {
        Key {
            addr: self.addr,
            identity: self.identity.clone(),
        }
    }
}

// On the request path, nested futures are awaited through `pin!`: awaiting one by
// value made rustc lay it out twice in the caller's state, at every level, and
// hyper moves that future whenever it spawns an HTTP/2 stream.
pub(crate) async fn forward(
    pool: &Pool,
    req: BoxedRequest,
    target: &Target<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // The timed path is boxed: wrapping the request's future in a Timeout would
    // otherwise lay it out twice in every request's state, timed or not.
    // The untimed path picks the protocol here rather than through forward_untimed:
    // one layer less in every request's future.
    match target.request_timeout {
        Some(t) => Box::pin(tokio::time::timeout(t, forward_untimed(pool, req, target)))
            .await
            .map_err(|_| ProxyError::Timeout)?,
        None if req.version() == Version::HTTP_2 => pin!(forward_h2(pool, req, target)).await,
        None => pin!(forward_h1(pool, req, target)).await,
    }
}

async fn forward_untimed(
    pool: &Pool,
    req: BoxedRequest,
    target: &Target<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    if req.version() == Version::HTTP_2 {
        pin!(forward_h2(pool, req, target)).await
    } else {
        pin!(forward_h1(pool, req, target)).await
    }
}

#[allow(clippy::manual_async_fn)]
fn forward_h1<'a>(
    pool: &'a Pool,
    mut req: BoxedRequest,
    target: &'a Target<'_>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
    async move {
        let upgrade = is_upgrade(req.headers());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
        to_origin_form(&mut req);
        strip_hop_by_hop(req.headers_mut(), upgrade);
        *req.version_mut() = Version::HTTP_11;
        if !upgrade && target.identity.is_some() && pool.h2_orig() && orig_proto::carried(&req) {
            return pin!(forward_to_peer(pool, req, target)).await;
        }

        let limit = target.gate.map(|g| g.connections);
        let key = target.key();
        let pending = admit(target)?;
        let conn = pin!(pool.h1(&key, target.connect_timeout, limit, target.started)).await;
        note_connect(target, &conn);
        drop(pending);
        // Unwrapped apart from the call, so the `?`'s result is not kept across it.
        let conn = conn?;
        pin!(send_h1(pool, key, target, conn, req, downstream_upgrade)).await
    }
}

/// Sends an HTTP/1 request on `conn` and answers with its response (or on a fresh
/// connection, when `conn` turns out stale).
///
/// An async block rather than an async fn: an async fn keeps each argument beside
/// the local it is moved into (rust-lang/rust#62958), in every request's future.
#[allow(clippy::manual_async_fn)]
fn send_h1<'a>(
    pool: &'a Pool,
    key: Key,
    target: &'a Target<'_>,
    conn: H1Conn,
    req: BoxedRequest,
    downstream_upgrade: Option<OnUpgrade>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
    async move {
        let upgrade = downstream_upgrade.is_some();
        // The stale-connection path is set up inside the match and awaited after
        // it, so the send's result (which can hold the whole request) is not kept
        // in this future's state across that await.
        let resend = match pin!(conn.send(req, upgrade, target.leave_date)).await {
            Ok(resp) => return Ok(respond_h1(pool, key, target, resp, downstream_upgrade)),
            // The peer closed a kept-alive connection just as we picked it, before
            // answering a request that may be repeated: it goes on a fresh
            // connection.
            Err(h1_client::SendError::Stale(req)) => {
                Box::pin(send_on_fresh(pool, &key, target, req, upgrade))
            }
            Err(h1_client::SendError::Client(e)) => return Err(e),
            Err(h1_client::SendError::Failed) => return Err(ProxyError::UpstreamReset),
        };
        let resp = resend.await?;
        Ok(respond_h1(pool, key, target, resp, downstream_upgrade))
    }
}

/// The client's response from an HTTP/1 upstream's: the connection goes back to the
/// pool once the body is read, or into a tunnel on 101.
fn respond_h1(
    pool: &Pool,
    key: Key,
    target: &Target<'_>,
    mut resp: Response<Box<H1Body>>,
    downstream_upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(down), Some(up)) = (downstream_upgrade, resp.body_mut().take_upgraded()) {
            tokio::spawn(tunnel(down, up));
        }
        strip_hop_by_hop(resp.headers_mut(), true);
        return resp.map(|b| ProxyBody::upstream(PooledBody::h1(b)));
    }

    strip_hop_by_hop(resp.headers_mut(), false);
    resp.body_mut()
        .give_back(pool.giveback(key, target.idle_timeout));
    resp.map(|b| ProxyBody::upstream(PooledBody::h1(b)))
}

/// Sends a request on a new connection: the cold path of a stale keep-alive pick.
async fn send_on_fresh(
    pool: &Pool,
    key: &Key,
    target: &Target<'_>,
    req: BoxedRequest,
    upgrade: bool,
) -> Result<Response<Box<H1Body>>, ProxyError> {
    let pending = admit(target)?;
    let limit = target.gate.map(|g| g.connections);
    let fresh = pool.new_h1(key, target.connect_timeout, limit).await;
    note_connect(target, &fresh);
    drop(pending);
    fresh?
        .send(req, upgrade, target.leave_date)
        .await
        .map_err(|e| match e {
            h1_client::SendError::Client(e) => e,
            _ => ProxyError::UpstreamReset,
        })
}

/// Joins the client's and the upstream's sides of an upgraded (101) connection.
async fn tunnel(downstream: OnUpgrade, mut upstream: Upgraded) {
    match downstream.await {
        Ok(down) => {
            let mut down = TokioIo::new(down);
            if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded tunnel ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "client upgrade failed"),
    }
}

/// An absolute-form target (from a client using us as its `http_proxy`, or an
/// HTTP/2 request's :authority) becomes origin-form, with the authority moved into
/// Host as RFC 9112 §3.2.2 asks. A Host the request lacked goes first, where
/// HTTP/1.1 clients write it (§3.2) and where :authority stood, not after every
/// other field.
fn to_origin_form<B>(req: &mut Request<B>) {
    let Some(authority) = req.uri().authority().cloned() else {
        return;
    };
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        let headers = req.headers_mut();
        if headers.contains_key(HOST) {
            headers.insert(HOST, host);
        } else {
            // A HeaderMap only appends new names: rebuilt with Host first.
            let mut first = HeaderMap::with_capacity(headers.len() + 1);
            first.insert(HOST, host);
            first.extend(std::mem::take(headers));
            *headers = first;
        }
    }
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
}

async fn forward_h2(
    pool: &Pool,
    mut req: BoxedRequest,
    target: &Target<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    strip_hop_by_hop(req.headers_mut(), false);
    if target.identity.is_some() {
        orig_proto::remove_request_mark(req.headers_mut());
    }
    if req.uri().authority().is_none() {
        name_authority(&mut req)?;
    }
    // The resend is set up inside the block and awaited after it, so the sender
    // and its send future are not kept in this future's state across that await.
    let resend = {
        let tx = pin!(shared_h2(pool, target)).await?;
        match pin!(tx.send(req)).await {
            Ok(resp) => return Ok(respond_h2(resp)),
            // The shared connection is going away (GOAWAY) or gone, so the request
            // was not sent: it takes a new connection, once.
            Err(SendError::Unsent(req)) => Box::pin(resend_h2(pool, req, target)),
            Err(e) => return Err(send_error(e)),
        }
    };
    Ok(respond_h2(resend.await?))
}

/// The client's response from an HTTP/2 upstream's.
fn respond_h2(mut resp: Response<H2Body>) -> Response<ProxyBody> {
    strip_hop_by_hop(resp.headers_mut(), false);
    resp.map(|b| ProxyBody::upstream(PooledBody::h2(b)))
}

/// Names the target of an HTTP/2 request that came without :authority by its
/// Host (RFC 9113 §8.3.1 lets a client send Host alone), as its HTTP/1 form
/// would. h2 sends no HTTP/2 request without one, and between two proxies on
/// `weft.h2-orig/2` a missing one says the request was HTTP/1 (`orig_proto`).
/// Without one usable Host there is nothing to name it by: malformed.
fn name_authority<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let authority = orig_proto::carried_authority(req).ok_or(ProxyError::MalformedRequest)?;
    orig_proto::as_h2(req, authority);
    Ok(())
}

/// The pool's HTTP/2 connection to the target, counted as a pending request while
/// it is dialled.
async fn shared_h2(pool: &Pool, target: &Target<'_>) -> Result<H2Sender, ProxyError> {
    let limit = target.gate.map(|g| g.connections);
    let pending = admit(target)?;
    let tx = pin!(pool.h2(&target.key(), target.connect_timeout, limit, target.started)).await;
    note_connect(target, &tx);
    drop(pending);
    tx
}

async fn resend_h2(
    pool: &Pool,
    req: BoxedRequest,
    target: &Target<'_>,
) -> Result<Response<H2Body>, ProxyError> {
    let tx = shared_h2(pool, target).await?;
    tx.send(req).await.map_err(send_error)
}

/// What a failed send on a shared HTTP/2 connection answers: the client's own
/// fault as its own, anything else as the upstream's.
fn send_error(e: SendError) -> ProxyError {
    match e {
        SendError::Client(e) => e,
        SendError::Refused => ProxyError::Refused,
        SendError::Unsent(_) | SendError::Failed => ProxyError::UpstreamReset,
    }
}

/// The peer proxy's way of taking an HTTP/1 request (`Pool::h1_carrier`), counted
/// as a pending request while it is dialled.
async fn carrier(pool: &Pool, target: &Target<'_>) -> Result<Carrier, ProxyError> {
    let limit = target.gate.map(|g| g.connections);
    let pending = admit(target)?;
    let carrier =
        pin!(pool.h1_carrier(&target.key(), target.connect_timeout, limit, target.started)).await;
    note_connect(target, &carrier);
    drop(pending);
    carrier
}

/// Sends an HTTP/1 request (already as it would be written upstream) to a peer
/// proxy: as a stream of its shared HTTP/2 connection (`orig_proto`) when it
/// takes them, else on an HTTP/1.1 connection as before.
///
/// An async block, and the rare paths (an HTTP/1.1 connection, a resend) boxed
/// and awaited after the match: the common path's state then fits within
/// `forward_h1`'s own, so it needs no box of its own on every request.
#[allow(clippy::manual_async_fn)]
fn forward_to_peer<'a>(
    pool: &'a Pool,
    mut req: BoxedRequest,
    target: &'a Target<'_>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
    async move {
        // The rare paths leave the block with what they need and are awaited
        // after it: awaited inside, they would keep the carrier's future (or a
        // `Carrier`, once taken apart) in the state beside the send's.
        let rare = 'common: {
            let (tx, version) = match pin!(carrier(pool, target)).await? {
                Carrier::Stream(tx, version) => (tx, version),
                Carrier::Conn(conn) => break 'common ToPeer::Conn(conn, req),
            };
            orig_proto::to_h2(&mut req, version);
            match pin!(tx.send(req)).await {
                Ok(resp) => return Ok(respond_peer(resp)),
                Err(SendError::Unsent(req)) => ToPeer::Unsent(req, version),
                Err(e) => return Err(send_error(e)),
            }
        };
        Box::pin(to_peer_rarely(pool, target, rare)).await
    }
}

/// What is left of a request to a peer proxy off the common path.
enum ToPeer {
    /// The peer takes no HTTP/1 streams: the request goes on this connection.
    Conn(H1Conn, BoxedRequest),
    /// The shared connection was going away (GOAWAY) or gone before the stream
    /// opened (marked for this version of the convention).
    Unsent(BoxedRequest, H2Orig),
}

async fn to_peer_rarely(
    pool: &Pool,
    target: &Target<'_>,
    rare: ToPeer,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut req = match rare {
        ToPeer::Conn(conn, req) => {
            return send_h1(pool, target.key(), target, conn, req, None).await;
        }
        ToPeer::Unsent(mut req, version) => {
            orig_proto::unmark_request(&mut req, version);
            req
        }
    };
    // Nothing was sent, so any request may go again, once, on a new connection,
    // which may have settled on another version (the peer restarted).
    match carrier(pool, target).await? {
        Carrier::Stream(tx, again) => {
            orig_proto::to_h2(&mut req, again);
            Ok(respond_peer(tx.send(req).await.map_err(send_error)?))
        }
        Carrier::Conn(conn) => send_h1(pool, target.key(), target, conn, req, None).await,
    }
}

/// The client's response from a peer proxy's answer to a carried request.
fn respond_peer(mut resp: Response<H2Body>) -> Response<ProxyBody> {
    strip_hop_by_hop(resp.headers_mut(), false);
    orig_proto::unmark_response(&mut resp);
    resp.map(|b| ProxyBody::upstream(PooledBody::h2(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2_by_host(hosts: &[&'static str]) -> Request<()> {
        let mut req = Request::builder()
            .uri("/a?b")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        for host in hosts {
            req.headers_mut()
                .append(HOST, HeaderValue::from_static(host));
        }
        req
    }

    #[test]
    fn an_http2_request_named_by_host_alone_is_named_by_it() {
        let mut req = h2_by_host(&["Orders.Shop:8080"]);
        assert!(name_authority(&mut req).is_ok());
        assert_eq!(req.uri(), "http://Orders.Shop:8080/a?b");
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.headers()[HOST], "Orders.Shop:8080", "Host stays");
    }

    #[test]
    fn a_host_made_from_the_authority_comes_first_and_one_given_keeps_its_place() {
        let names = |req: &Request<()>| {
            req.headers()
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        let request = |host: Option<&'static str>| {
            let mut req = Request::builder()
                .uri("http://app:8080/a?b=1")
                .header("x-b", "1")
                .header("x-dup", "1")
                .header("x-a", "2")
                .header("x-dup", "2")
                .body(())
                .expect("request");
            if let Some(h) = host {
                req.headers_mut().append(HOST, HeaderValue::from_static(h));
            }
            req
        };

        let mut converted = request(None);
        to_origin_form(&mut converted);
        assert_eq!(converted.uri(), "/a?b=1");
        assert_eq!(
            names(&converted),
            ["host: app:8080", "x-b: 1", "x-dup: 1", "x-dup: 2", "x-a: 2"]
        );

        let mut proxied = request(Some("old"));
        to_origin_form(&mut proxied);
        assert_eq!(
            names(&proxied),
            ["x-b: 1", "x-dup: 1", "x-dup: 2", "x-a: 2", "host: app:8080"]
        );
    }

    #[test]
    fn an_http2_request_with_nothing_to_name_its_target_is_malformed() {
        for hosts in [&[][..], &["a", "b"], &["bad host"]] {
            let mut req = h2_by_host(hosts);
            assert!(
                matches!(name_authority(&mut req), Err(ProxyError::MalformedRequest)),
                "{hosts:?}"
            );
        }
    }
}
