//! The client side of an upstream HTTP/2 connection, on the `h2` crate directly.
//!
//! hyper's HTTP/2 client hands every request to the connection's task over a
//! channel, spawns a task per request to await the response, and answers through a
//! oneshot: three allocations and two task wakes per request that a proxy, which
//! already runs each request in a task of its own, does not need. Here the
//! request's own task opens the stream and awaits the response; the connection
//! task only drives the socket.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason, SendStream};
use http::{Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::body::RequestBody;
use super::error::ClientBodyError;
use super::error::ProxyError;
use super::h2_body::H2Body;
use crate::identity::H2Orig;

/// How a connection's liveness is checked: a ping every `interval`, and the
/// connection dropped if its pong is not back within `timeout`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

impl KeepAlive {
    pub(crate) const DEFAULT: KeepAlive = KeepAlive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };
}

/// hyper's client default: how much request body h2 may queue beyond the window.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// hyper's client default for the response head.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// Why a request on a shared connection failed.
pub(crate) enum SendError {
    /// The connection cannot take a new stream (closed, or going away), so the
    /// request was not sent: here it is back, for another connection.
    Unsent(Box<Request<RequestBody>>),
    /// The peer refused the stream unprocessed (REFUSED_STREAM, or a GOAWAY whose
    /// last stream is below it): the request may go again, whatever its method,
    /// but it was consumed here, so the caller resends its own copy.
    Refused,
    /// The stream failed (reset, or the connection broke).
    Failed,
    /// The client's request body failed (malformed, or the client left), so the
    /// stream was reset by us: the client's fault, not the endpoint's.
    Client(ProxyError),
}

impl std::fmt::Debug for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unsent(_) => f.write_str("Unsent"),
            SendError::Refused => f.write_str("Refused"),
            SendError::Failed => f.write_str("Failed"),
            SendError::Client(e) => write!(f, "Client({e:?})"),
        }
    }
}

/// A handle to one upstream HTTP/2 connection; clones share it.
#[derive(Clone)]
pub(crate) struct H2Sender {
    tx: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// The peer takes HTTP/1 requests as streams (`http::orig_proto`), told
    /// apart from HTTP/2 ones as this version of `Alpn::H2Orig` says.
    carries_h1: Option<H2Orig>,
}

impl H2Sender {
    /// Notes the version of `Alpn::H2Orig` the peer settled on, if any.
    pub(crate) fn carrying_h1(mut self, carries_h1: Option<H2Orig>) -> H2Sender {
        self.carries_h1 = carries_h1;
        self
    }

    pub(crate) fn carries_h1(&self) -> Option<H2Orig> {
        self.carries_h1
    }

    /// Whether the connection has ended or refused a stream; the pool drops it then.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends `req` and waits for the response head. A request body is streamed by a
    /// task of its own, so the response can come (and stream) before it ends.
    pub(crate) async fn send(
        self,
        req: Box<Request<RequestBody>>,
    ) -> Result<Response<H2Body>, SendError> {
        let H2Sender { mut tx, closed, .. } = self;
        if poll_fn(|cx| tx.poll_ready(cx)).await.is_err() {
            closed.store(true, Ordering::Relaxed);
            return Err(SendError::Unsent(req));
        }
        let (parts, body) = req.into_parts();
        let eos = body.is_end_stream();
        // An error here is this request's own (h2 refuses e.g. a connection-specific
        // header): the connection stays, or a client could make us redial at will.
        let (response, send) = match tx.send_request(Request::from_parts(parts, ()), eos) {
            Ok(opened) => opened,
            Err(e) if refused(&e) => {
                // The peer's GOAWAY arrived since `poll_ready`: nothing was sent.
                closed.store(true, Ordering::Relaxed);
                return Err(SendError::Refused);
            }
            Err(_) => return Err(SendError::Failed),
        };
        // Dropped before the response head arrives, this request is cancelled:
        // the body task then resets the stream.
        let (mut cancel, mut fault) = if eos {
            // Let go of the stream's send side while the stream is still open: h2
            // then only counts the reference down, where a drop after the answer
            // closed the stream would take it through its closing bookkeeping once
            // more (the ResponseFuture keeps the request cancellable).
            drop(send);
            (None, None)
        } else {
            let (cancel, cancelled) = oneshot::channel();
            let (fault_tx, fault) = oneshot::channel();
            tokio::spawn(send_body(body, send, cancelled, fault_tx));
            (Some(CancelOnDrop(Some(cancel))), Some(fault))
        };
        // The body task names a client fault before it resets the stream, so it is
        // there by the time the reset fails the response.
        let response =
            response
                .await
                .map_err(|e| match fault.as_mut().and_then(|f| f.try_recv().ok()) {
                    Some(e) => SendError::Client(e),
                    None if refused(&e) => SendError::Refused,
                    None => SendError::Failed,
                })?;
        if let Some(c) = cancel.as_mut() {
            c.0.take();
        }
        Ok(response.map(H2Body::response))
    }
}

/// Whether the peer said it did not process the stream (RFC 9113 §8.7): it reset it
/// with REFUSED_STREAM, or went away with a last stream below it (h2 fails only
/// those streams with the GOAWAY; streams the peer kept fail later with the
/// connection's own error).
fn refused(e: &h2::Error) -> bool {
    e.is_remote() && (e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM))
}

struct CancelOnDrop(Option<oneshot::Sender<()>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// Opens an HTTP/2 connection over `io` and spawns the task that drives it.
pub(crate) async fn handshake<T, G>(
    io: T,
    addr: SocketAddr,
    guard: G,
    keep_alive: KeepAlive,
) -> Result<H2Sender, h2::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let (tx, mut conn) = h2::client::Builder::new()
        .initial_window_size(super::H2_STREAM_WINDOW)
        .initial_connection_window_size(super::H2_CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        .handshake::<T, Bytes>(io)
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = conn.ping_pong();
    let ended = closed.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let (dead, no_pong) = oneshot::channel();
        let pinger = pings.map(|p| tokio::spawn(ping_every(keep_alive, p, dead)));
        // biased: the connection first; the keep-alive verdict is rare.
        tokio::select! {
            biased;
            res = conn => {
                if let Err(e) = res {
                    tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
                }
            }
            Ok(()) = no_pong => {
                tracing::debug!(%addr, "upstream HTTP/2 connection missed its keep-alive pong");
            }
        }
        ended.store(true, Ordering::Relaxed);
        if let Some(p) = pinger {
            p.abort();
        }
    });
    Ok(H2Sender {
        tx,
        closed,
        carries_h1: None,
    })
}

/// Pings every `interval`; a pong that does not come back in time declares the
/// connection dead, which drops it and fails its streams.
async fn ping_every(keep_alive: KeepAlive, mut pings: PingPong, dead: oneshot::Sender<()>) {
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        match tokio::time::timeout(keep_alive.timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            // The connection is gone already.
            Ok(Err(_)) => return,
            Err(_) => {
                let _ = dead.send(());
                return;
            }
        }
    }
}

/// Streams a request body into its HTTP/2 stream, a frame at a time as flow
/// control allows, then its trailers. A failing body, a reset from the peer or a
/// cancelled request resets the stream.
async fn send_body(
    body: RequestBody,
    mut send: SendStream<Bytes>,
    mut cancelled: oneshot::Receiver<()>,
    fault: oneshot::Sender<ProxyError>,
) {
    let mut body = std::pin::pin!(body);
    // Until the response head arrives, a dropped request sends on `cancelled`;
    // after it, the sender is dropped unused and stops being polled.
    let mut listening = true;
    // Why the stream must stop now: the request was cancelled, or the peer reset it.
    let mut stopped = |send: &mut SendStream<Bytes>, cx: &mut Context<'_>| -> Option<Reason> {
        if listening {
            match Pin::new(&mut cancelled).poll(cx) {
                Poll::Ready(Ok(())) => return Some(Reason::CANCEL),
                Poll::Ready(Err(_)) => listening = false,
                Poll::Pending => {}
            }
        }
        match send.poll_reset(cx) {
            Poll::Ready(r) => Some(r.unwrap_or(Reason::CANCEL)),
            Poll::Pending => None,
        }
    };
    loop {
        // Wait for window (h2 then queues one whole frame, as hyper does), for the
        // peer to reset, or for the request to be cancelled.
        send.reserve_capacity(1);
        let ready = poll_fn(|cx| {
            if let Some(reason) = stopped(&mut send, cx) {
                return Poll::Ready(Err(reason));
            }
            if send.capacity() > 0 {
                return Poll::Ready(Ok(()));
            }
            match send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(_)) | None) => Poll::Ready(Err(Reason::CANCEL)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Err(reason) = ready {
            send.send_reset(reason);
            return;
        }
        let frame = poll_fn(|cx| {
            if let Some(reason) = stopped(&mut send, cx) {
                return Poll::Ready(Err(reason));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match frame {
            Err(reason) => {
                send.send_reset(reason);
                return;
            }
            Ok(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body failed; resetting the stream");
                let _ = fault.send(ClientBodyError(e).proxy_error());
                send.send_reset(Reason::CANCEL);
                return;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let eos = body.is_end_stream();
                if send.send_data(data, eos).is_err() || eos {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h2::RecvStream;
    use h2::server::SendResponse;
    use http::HeaderMap;
    use http_body_util::BodyExt;
    use tokio::net::{TcpListener, TcpStream};

    const MIB: usize = 1024 * 1024;
    /// Bounds every wait in these tests.
    const LIMIT: Duration = Duration::from_secs(20);

    /// An h2 server on loopback that hands each request to `handler`; with `goaway`,
    /// each connection goes away gracefully after its first request.
    async fn serve<F, Fut>(handler: F, goaway: bool) -> SocketAddr
    where
        F: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((req, resp))) = conn.accept().await {
                        tokio::spawn(handler(req, resp));
                        if goaway {
                            conn.graceful_shutdown();
                        }
                    }
                });
            }
        });
        addr
    }

    async fn connect(addr: SocketAddr) -> H2Sender {
        let socket = TcpStream::connect(addr).await.expect("connect");
        handshake(socket, addr, (), KeepAlive::DEFAULT)
            .await
            .expect("handshake")
    }

    fn get() -> Box<Request<RequestBody>> {
        Box::new(
            Request::get("http://test/")
                .body(RequestBody::replay(Bytes::new()))
                .expect("request"),
        )
    }

    /// Sends `len` bytes on `send` in 64 KiB frames as the window allows.
    async fn send_bytes(send: &mut SendStream<Bytes>, mut len: usize) {
        while len > 0 {
            send.reserve_capacity(len.min(64 * 1024));
            let granted = poll_fn(|cx| send.poll_capacity(cx))
                .await
                .expect("open")
                .expect("capacity");
            let n = granted.min(len);
            send.send_data(Bytes::from(vec![7u8; n]), false)
                .expect("send");
            len -= n;
        }
    }

    #[tokio::test]
    async fn a_response_larger_than_every_window_streams_whole_with_its_trailers() {
        let addr = serve(
            |_req, mut resp: SendResponse<Bytes>| async move {
                let head = Response::new(());
                let mut send = resp.send_response(head, false).expect("head");
                send_bytes(&mut send, 6 * MIB).await;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                send.send_trailers(trailers).expect("trailers");
            },
            false,
        )
        .await;
        let sender = connect(addr).await;
        let resp = tokio::time::timeout(LIMIT, sender.send(get()))
            .await
            .expect("in time")
            .map_err(|e| format!("{e:?}"))
            .expect("response");
        let body = tokio::time::timeout(LIMIT, resp.into_body().collect())
            .await
            .expect("in time: the window is given back as the body is read")
            .expect("body");
        let trailers = body.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(body.to_bytes().len(), 6 * MIB);
    }

    #[tokio::test]
    async fn a_request_body_larger_than_every_window_is_sent_whole() {
        let addr = serve(
            |req: Request<RecvStream>, mut resp: SendResponse<Bytes>| async move {
                let mut body = req.into_body();
                let mut got = 0;
                while let Some(Ok(data)) = body.data().await {
                    got += data.len();
                    let _ = body.flow_control().release_capacity(data.len());
                }
                let head = Response::builder()
                    .header("x-got", got.to_string())
                    .body(())
                    .expect("head");
                let _ = resp.send_response(head, true);
            },
            false,
        )
        .await;
        let sender = connect(addr).await;
        let req = Request::post("http://test/")
            .body(RequestBody::replay(Bytes::from(vec![1u8; 6 * MIB])))
            .expect("request");
        let resp = tokio::time::timeout(LIMIT, sender.send(Box::new(req)))
            .await
            .expect("in time")
            .map_err(|e| format!("{e:?}"))
            .expect("response");
        assert_eq!(resp.headers()["x-got"], (6 * MIB).to_string().as_str());
        assert!(resp.body().is_end_stream());
    }

    /// A client's broken body (here malformed chunking, read by a real hyper
    /// server) is the client's fault: `Client(BadRequestBody)`, not `Failed`, so the
    /// endpoint that saw its stream reset is not blamed.
    #[tokio::test]
    async fn a_clients_broken_body_is_reported_as_the_clients_fault() {
        let addr = serve(
            |req: Request<RecvStream>, mut resp: SendResponse<Bytes>| async move {
                // Waits for the whole body, as an app reading an upload does.
                let mut body = req.into_body();
                while let Some(Ok(_)) = body.data().await {}
                let _ = resp.send_response(Response::new(()), true);
            },
            false,
        )
        .await;
        let sender = connect(addr).await;
        let (result_tx, result) = oneshot::channel();
        let result_tx = Arc::new(std::sync::Mutex::new(Some(result_tx)));
        let (client, server) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (sender, result_tx) = (sender.clone(), result_tx.clone());
                async move {
                    let mut req = Box::new(req.map(RequestBody::from));
                    // Hop-by-hop, so HTTP/2 refuses it; the proxy strips it too.
                    req.headers_mut().remove(http::header::TRANSFER_ENCODING);
                    let sent = sender.send(req).await.map(|_| ());
                    if let Some(tx) = result_tx.lock().ok().and_then(|mut t| t.take()) {
                        let _ = tx.send(sent);
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(
                        http_body_util::Empty::<Bytes>::new(),
                    ))
                }
            });
            let io = hyper_util::rt::TokioIo::new(server);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
        let mut client = client;
        tokio::io::AsyncWriteExt::write_all(
            &mut client,
            b"POST / HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n5g\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
        let sent = tokio::time::timeout(LIMIT, result)
            .await
            .expect("in time")
            .expect("a result");
        assert!(
            matches!(sent, Err(SendError::Client(ProxyError::BadRequestBody))),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_answer_resets_the_stream() {
        let (tx, mut resets) = tokio::sync::mpsc::channel(1);
        let addr = serve(
            move |_req, mut resp: SendResponse<Bytes>| {
                let tx = tx.clone();
                async move {
                    let reason = poll_fn(|cx| resp.poll_reset(cx)).await;
                    let _ = tx.send(reason.ok()).await;
                }
            },
            false,
        )
        .await;
        let sender = connect(addr).await;
        // The server never answers: the send is still waiting when it times out.
        let waited = tokio::time::timeout(Duration::from_millis(200), sender.send(get())).await;
        assert!(waited.is_err(), "the server does not answer");
        let reason = tokio::time::timeout(LIMIT, resets.recv())
            .await
            .expect("in time")
            .expect("a reset");
        assert_eq!(reason, Some(Reason::CANCEL));
    }

    #[tokio::test]
    async fn a_connection_going_away_is_marked_closed_and_refuses_new_requests() {
        let addr = serve(
            |_req, mut resp: SendResponse<Bytes>| async move {
                let _ = resp.send_response(Response::new(()), true);
            },
            true,
        )
        .await;
        let sender = connect(addr).await;
        let first = tokio::time::timeout(LIMIT, sender.clone().send(get()))
            .await
            .expect("in time");
        assert!(first.is_ok(), "the first request is answered");
        let give_up = tokio::time::Instant::now() + LIMIT;
        while !sender.is_closed() && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sender.is_closed(), "the pool would still hand it out");
        let again = tokio::time::timeout(LIMIT, sender.send(get()))
            .await
            .expect("in time");
        assert!(
            matches!(again, Err(SendError::Unsent(_))),
            "{:?}",
            again.map(|r| r.status())
        );
    }

    #[tokio::test]
    async fn a_request_a_going_away_connection_refuses_is_resent_on_a_new_one() {
        use crate::http::forward::{Target, forward};
        use crate::http::pool::Pool;
        // The first request is held unanswered, so its connection stays open after
        // the server's GOAWAY and the pool still holds it.
        let (hold, held) = oneshot::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(Some(held)));
        let addr = serve(
            move |_req, mut resp: SendResponse<Bytes>| {
                let held = held.lock().ok().and_then(|mut h| h.take());
                async move {
                    if let Some(held) = held {
                        let _ = held.await;
                    }
                    let _ = resp.send_response(Response::new(()), true);
                }
            },
            true,
        )
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let send = |pool: Pool| async move {
            let target = Target {
                started: crate::clock::now_nanos(),
                addr,
                identity: None,
                connect_timeout: Duration::from_secs(5),
                request_timeout: None,
                idle_timeout: None,
                gate: None,
                leave_date: false,
            };
            let mut req = get();
            *req.version_mut() = http::Version::HTTP_2;
            forward(&pool, req, &target).await.map(|r| r.status())
        };
        let first = tokio::spawn(send(pool.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = tokio::time::timeout(LIMIT, send(pool.clone()))
            .await
            .expect("in time");
        assert_eq!(second, Ok(http::StatusCode::OK));
        drop(hold);
        let first = tokio::time::timeout(LIMIT, first).await.expect("in time");
        assert_eq!(first.expect("join"), Ok(http::StatusCode::OK));
    }

    #[tokio::test]
    async fn a_peer_that_stops_answering_pings_is_dropped() {
        // A peer that reads everything and never writes: the handshake completes
        // (a client does not wait for the server's settings), no pong ever comes.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut socket, &mut sink).await;
            }
        });
        let socket = TcpStream::connect(addr).await.expect("connect");
        let keep_alive = KeepAlive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
        };
        let sender = handshake(socket, addr, (), keep_alive)
            .await
            .expect("handshake");
        assert!(!sender.is_closed());
        let give_up = tokio::time::Instant::now() + LIMIT;
        while !sender.is_closed() && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(sender.is_closed(), "a connection without pongs was kept");
    }

    #[tokio::test]
    async fn a_refused_stream_is_told_apart_from_one_reset_after_processing() {
        for (reason, refused) in [
            (Reason::REFUSED_STREAM, true),
            (Reason::INTERNAL_ERROR, false),
        ] {
            let addr = serve(
                move |_req, mut resp: SendResponse<Bytes>| async move {
                    resp.send_reset(reason);
                },
                false,
            )
            .await;
            let sender = connect(addr).await;
            let res = tokio::time::timeout(LIMIT, sender.clone().send(get()))
                .await
                .expect("in time");
            match res {
                Err(SendError::Refused) => assert!(refused, "{reason:?} taken for a refusal"),
                Err(SendError::Failed) => assert!(!refused, "{reason:?} not taken for a refusal"),
                Err(other) => panic!("{reason:?}: {other:?}"),
                Ok(resp) => panic!("{reason:?}: answered {}", resp.status()),
            }
            assert!(!sender.is_closed(), "a reset stream keeps the connection");
        }
    }

    #[tokio::test]
    async fn a_request_h2_refuses_fails_alone_and_keeps_the_connection() {
        let addr = serve(
            |_req, mut resp: SendResponse<Bytes>| async move {
                let _ = resp.send_response(Response::new(()), true);
            },
            false,
        )
        .await;
        let sender = connect(addr).await;
        let mut bad = get();
        bad.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        let refused = tokio::time::timeout(LIMIT, sender.clone().send(bad))
            .await
            .expect("in time");
        assert!(matches!(refused, Err(SendError::Failed)));
        assert!(
            !sender.is_closed(),
            "one bad request must not cost the connection"
        );
        let next = tokio::time::timeout(LIMIT, sender.send(get()))
            .await
            .expect("in time");
        assert!(next.is_ok(), "the connection still serves");
    }
}
