//! The server side of accepted HTTP/2 connections, on the `h2` crate directly.
//!
//! hyper's HTTP/2 server runs a boxed task per stream around a boxed handler
//! future, pipes the response body through an adapter of its own and strips the
//! answer's connection fields in a pass over a fixed list. Here each stream's task
//! awaits the handler and sends its answer itself, in one allocation; the
//! connection's task only accepts streams and drives the socket. Settings and
//! limits are hyper 1.12's server defaults, so its flood and rapid-reset
//! protections stay as they were.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::{BodyError, ProxyBody};
use super::client_body::ClientBody;
use super::date;
use super::watch::Watched;

/// hyper 1.12's server defaults.
const MAX_CONCURRENT_STREAMS: u32 = 200;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Who puts a Date on the answers: RFC 9110 §6.6.1 has a proxy add one to an
/// answer that lacks it before forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dates {
    /// This server: every answer leaves with a Date.
    Here,
    /// The client, a Weft proxy (ALPN `weft.h2-orig`), whose servers date every
    /// answer they forward: one without a Date costs neither side HPACK's
    /// literal (see `forward::Target::leave_date`).
    Peer,
}

/// Serves one accepted HTTP/2 connection, `handler` answering each stream in a task
/// of its own (so a slow one stalls no other). On drain, sends GOAWAY and lets
/// in-flight streams finish.
pub(crate) async fn serve<I, F, Fut>(
    io: I,
    handler: F,
    watched: &Watched,
    max_header_bytes: usize,
    dates: Dates,
) where
    I: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(super::H2_STREAM_WINDOW)
        .initial_connection_window_size(super::H2_CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let mut stopped = pin!(watched.stopped());
    let mut draining = false;
    let mut handshake = pin!(builder.handshake::<I, Bytes>(io));
    // A drain during the handshake takes effect once it is done, as in hyper.
    let conn = tokio::select! {
        biased;
        conn = handshake.as_mut() => conn,
        _ = stopped.as_mut() => {
            draining = true;
            handshake.await
        }
    };
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "client HTTP/2 handshake failed");
            return;
        }
    };
    if draining {
        conn.graceful_shutdown();
    }
    loop {
        // biased: the connection first, with no random pick on every wake.
        let next = tokio::select! {
            biased;
            next = poll_fn(|cx| conn.poll_accept(cx)) => next,
            _ = stopped.as_mut(), if !draining => {
                draining = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        match next {
            Some(Ok((req, respond))) => {
                // Boxed: a tokio task is 128-byte aligned, and mimalloc serves
                // such blocks from its slow aligned path unless they are small.
                tokio::spawn(Box::pin(serve_stream(&handler, req, respond, dates)));
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "client connection ended with an error");
                return;
            }
            None => return,
        }
    }
}

pin_project! {
    /// One stream's task: the handler's answer, then its body. A client's
    /// RST_STREAM before the answer drops the handler, cancelling the request.
    ///
    /// Written by hand, not as an async fn: one keeps each argument for its whole
    /// life beside the local it is moved into, and any local once borrowed until
    /// its scope ends (rust-lang/rust#62958), so the request and its parts would
    /// sit beside the handler's future in every stream's task. This holds the
    /// handler's future, then the body, and what it takes to answer.
    #[project = StreamProj]
    enum Stream<Fut> {
        Answering {
            #[pin]
            answer: Fut,
            // Taken when the answer goes out; `Some` while answering.
            respond: Option<SendResponse<Bytes>>,
            head: bool,
            dates: Dates,
        },
        Sending {
            #[pin]
            body: ProxyBody,
            send: SendStream<Bytes>,
            // A chunk waiting for window.
            held: Option<Bytes>,
        },
        Done,
    }
}

/// Has `handler` make the answer to a stream, in the connection's task: the
/// stream's task then holds its future alone (see `Stream`).
fn serve_stream<F, Fut>(
    handler: &F,
    req: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
    dates: Dates,
) -> Stream<Fut>
where
    F: Fn(Request<ClientBody>) -> Fut,
{
    let head = req.method() == Method::HEAD;
    let (parts, recv) = req.into_parts();
    let body = ClientBody::h2(recv, &parts.headers);
    Stream::Answering {
        answer: handler(Request::from_parts(parts, body)),
        respond: Some(respond),
        head,
        dates,
    }
}

impl<Fut> Future for Stream<Fut>
where
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let StreamProj::Answering {
            answer,
            respond,
            head,
            dates,
        } = self.as_mut().project()
        {
            let resp = match answer.poll(cx) {
                Poll::Ready(Ok(resp)) => resp,
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => match respond.as_mut().map(|r| r.poll_reset(cx)) {
                    Some(Poll::Pending) => return Poll::Pending,
                    // Reset by the client: the handler is dropped.
                    _ => {
                        self.set(Stream::Done);
                        return Poll::Ready(());
                    }
                },
            };
            let sending = respond
                .take()
                .and_then(|respond| send_head(resp, respond, *head, *dates));
            match sending {
                Some((body, send)) => self.set(Stream::Sending {
                    body,
                    send,
                    held: None,
                }),
                None => {
                    self.set(Stream::Done);
                    return Poll::Ready(());
                }
            }
        }
        match self.as_mut().project() {
            StreamProj::Sending { body, send, held } => {
                ready!(poll_body(body, send, held, cx));
                self.set(Stream::Done);
                Poll::Ready(())
            }
            StreamProj::Answering { .. } | StreamProj::Done => Poll::Ready(()),
        }
    }
}

/// Sends the answer's head: the body and the stream to send it on when there is
/// a body to send.
fn send_head(
    resp: Response<ProxyBody>,
    mut respond: SendResponse<Bytes>,
    head: bool,
    dates: Dates,
) -> Option<(ProxyBody, SendStream<Bytes>)> {
    let resp = if head {
        super::without_body(resp)
    } else {
        resp
    };
    let (mut parts, body) = resp.into_parts();
    let mut has = Has::of(&mut parts.headers);
    if has.connection_fields {
        strip_connection_fields(&mut parts.headers);
        // Connection may have named Date or Content-Length too.
        has = Has::of(&mut parts.headers);
    }
    if !has.date
        && dates == Dates::Here
        && let Some(date) = date::now()
    {
        parts.headers.insert(DATE, date);
    }
    let eos = body.is_end_stream();
    if !eos
        && let Some(len) = body.size_hint().exact()
        && !has.content_length
    {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(parts, ()), eos) {
        Ok(send) => (!eos).then_some((body, send)),
        Err(e) => {
            tracing::debug!(error = %e, "sending a response head failed");
            respond.send_reset(Reason::INTERNAL_ERROR);
            None
        }
    }
}

/// Streams a response body into its HTTP/2 stream as flow control allows, then its
/// trailers. A failing body resets the stream; so does the client, which ends it.
fn poll_body(
    mut body: Pin<&mut ProxyBody>,
    send: &mut SendStream<Bytes>,
    held: &mut Option<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if held.is_some() {
            if !ready!(has_capacity(send, cx)) {
                return Poll::Ready(());
            }
            if let Some(data) = held.take()
                && send.send_data(data, false).is_err()
            {
                return Poll::Ready(());
            }
        }
        // The next frame first, then window for it: reserving window before there
        // is data to send would pin the connection's window (hyper #4003). The
        // client's reset is watched only while the body has nothing to give.
        let frame = match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending if send.poll_reset(cx).is_ready() => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        };
        let frame = match frame {
            None => {
                let _ = send.send_data(Bytes::new(), true);
                return Poll::Ready(());
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; resetting the stream");
                send.send_reset(reason_of(&e));
                return Poll::Ready(());
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let eos = body.is_end_stream();
                // A last chunk goes at once: h2 holds it until the window lets it
                // out, and nothing follows it. Any other waits for window, so a
                // body is read no faster than the client takes it.
                if !eos && !data.is_empty() {
                    send.reserve_capacity(1);
                    *held = Some(data);
                    continue;
                }
                if send.send_data(data, eos).is_err() || eos {
                    return Poll::Ready(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    let _ = send.send_trailers(trailers);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Waits until the stream may send (true), or has been reset or closed (false).
fn has_capacity(send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Poll<bool> {
    if send.poll_reset(cx).is_ready() {
        return Poll::Ready(false);
    }
    while send.capacity() == 0 {
        match ready!(send.poll_capacity(cx)) {
            Some(Ok(0)) => {}
            Some(Ok(_)) => break,
            Some(Err(_)) | None => return Poll::Ready(false),
        }
    }
    Poll::Ready(true)
}

/// The reset a failed body's stream gets: the reason of an HTTP/2 error in its
/// chain (an upstream's reset passes on), else INTERNAL_ERROR, as in hyper.
fn reason_of(e: &BodyError) -> Reason {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason().unwrap_or(Reason::INTERNAL_ERROR);
        }
        cause = err.source();
    }
    Reason::INTERNAL_ERROR
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2), which h2 would refuse the answer for,
/// besides Connection.
static LISTED: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    UPGRADE,
    TE,
];

/// What an answer's fields hold that `serve_stream` must act on, found in one pass
/// over their names: cheaper, for the few fields most answers carry, than a hash
/// lookup for each. The pass also keeps Date out of HPACK's dynamic table (see
/// `date::unindexed`).
struct Has {
    connection_fields: bool,
    date: bool,
    content_length: bool,
}

impl Has {
    fn of(headers: &mut HeaderMap) -> Has {
        let mut has = Has {
            connection_fields: false,
            date: false,
            content_length: false,
        };
        for (name, value) in headers.iter_mut() {
            if *name == DATE {
                has.date = true;
                date::unindexed(value);
            } else if *name == CONTENT_LENGTH {
                has.content_length = true;
            } else if *name == CONNECTION || LISTED.contains(name) {
                has.connection_fields = true;
            }
        }
        has
    }
}

/// Removes the fields HTTP/2 forbids (RFC 9113 §8.2.2), and those Connection names.
fn strip_connection_fields(headers: &mut HeaderMap) {
    for name in &LISTED {
        headers.remove(name);
    }
    if let Some(connection) = headers.remove(CONNECTION)
        && let Ok(names) = connection.to_str()
    {
        for name in names.split(',') {
            headers.remove(name.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::watch::Watch;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;

    /// Bounds every wait in these tests.
    const LIMIT: Duration = Duration::from_secs(20);

    /// Sends `()` when dropped: tells a test a handler's future was dropped.
    struct Dropped(Option<oneshot::Sender<()>>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    /// What the handler of the test server does per path.
    #[derive(Default)]
    struct Script {
        /// `/slow` never answers; its future reports being dropped here.
        slow_dropped: Option<oneshot::Sender<()>>,
        /// `/held` answers once this fires.
        held: Option<oneshot::Receiver<()>>,
        /// The client is a Weft proxy, which dates the answers itself.
        peer_dates: bool,
    }

    /// Serves one connection on loopback with `serve`; the returned token drains it.
    async fn server(script: Script) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let drain = CancellationToken::new();
        let watch = Watch::start(Duration::from_secs(60), drain.clone());
        let dates = if script.peer_dates {
            Dates::Peer
        } else {
            Dates::Here
        };
        let script = Arc::new(Mutex::new(script));
        tokio::spawn(async move {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let watched = watch.watch(false);
            let handler = move |req: Request<ClientBody>| {
                let mut script = crate::sync::lock(&script);
                let slow = script.slow_dropped.take();
                let held = script.held.take();
                let path = req.uri().path().to_owned();
                async move {
                    match path.as_str() {
                        "/slow" => {
                            let _guard = Dropped(slow);
                            std::future::pending::<()>().await;
                        }
                        "/held" => {
                            if let Some(held) = held {
                                let _ = held.await;
                            }
                        }
                        _ => {}
                    }
                    let resp = Response::builder()
                        .header(CONNECTION, "close, x-hop")
                        .header("x-hop", "1")
                        .header(TRANSFER_ENCODING, "chunked")
                        .body(ProxyBody::full(Bytes::from_static(b"hello")))
                        .expect("response");
                    Ok::<_, Infallible>(resp)
                }
            };
            serve(socket, handler, &watched, 16 * 1024, dates).await;
        });
        (addr, drain)
    }

    async fn client(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
        let socket = TcpStream::connect(addr).await.expect("connect");
        let (tx, conn) = h2::client::handshake(socket).await.expect("handshake");
        tokio::spawn(conn);
        tx
    }

    fn get(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(format!("http://test{path}"))
            .body(())
            .expect("request")
    }

    async fn body_of(resp: Response<h2::RecvStream>) -> Vec<u8> {
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.expect("data");
            let _ = body.flow_control().release_capacity(data.len());
            got.extend_from_slice(&data);
        }
        got
    }

    #[tokio::test]
    async fn a_slow_stream_stalls_no_other_and_a_reset_cancels_its_handler() {
        let (dropped_tx, dropped) = oneshot::channel();
        let script = Script {
            slow_dropped: Some(dropped_tx),
            ..Script::default()
        };
        let (addr, _drain) = server(script).await;
        let mut tx = client(addr).await;
        let (_slow, mut slow_stream) = tx
            .send_request(get(Method::GET, "/slow"), true)
            .expect("slow");
        let (fast, _) = tx
            .send_request(get(Method::GET, "/fast"), true)
            .expect("fast");
        let fast = tokio::time::timeout(LIMIT, fast)
            .await
            .expect("in time")
            .expect("answer");
        assert_eq!(fast.status(), 200);
        let h = fast.headers();
        assert!(h.get(CONNECTION).is_none() && h.get("x-hop").is_none());
        assert!(h.get(TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(CONTENT_LENGTH).map(|v| v.as_bytes()), Some(&b"5"[..]));
        assert!(h.contains_key(DATE));
        let body = tokio::time::timeout(LIMIT, body_of(fast))
            .await
            .expect("in time");
        assert_eq!(body, b"hello");
        slow_stream.send_reset(Reason::CANCEL);
        tokio::time::timeout(LIMIT, dropped)
            .await
            .expect("the handler was dropped in time")
            .expect("the handler was dropped");
    }

    /// The answer to one `method` request for `/` from a server running `script`.
    async fn answer(script: Script, method: Method) -> Response<h2::RecvStream> {
        let (addr, _drain) = server(script).await;
        let mut tx = client(addr).await;
        let (resp, _) = tx.send_request(get(method, "/"), true).expect("request");
        tokio::time::timeout(LIMIT, resp)
            .await
            .expect("in time")
            .expect("answer")
    }

    #[tokio::test]
    async fn an_answer_to_a_weft_peer_leaves_the_date_to_it() {
        let script = Script {
            peer_dates: true,
            ..Script::default()
        };
        let resp = answer(script, Method::GET).await;
        assert_eq!(resp.status(), 200);
        assert!(!resp.headers().contains_key(DATE));
        assert_eq!(resp.headers()[CONTENT_LENGTH], "5");
    }

    #[tokio::test]
    async fn a_head_answer_keeps_its_length_and_loses_its_body() {
        let resp = answer(Script::default(), Method::HEAD).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[CONTENT_LENGTH], "5");
        assert!(resp.body().is_end_stream(), "END_STREAM on the head");
    }

    #[tokio::test]
    async fn a_drain_sends_goaway_and_lets_the_stream_in_flight_finish() {
        let (release, held) = oneshot::channel();
        let script = Script {
            held: Some(held),
            ..Script::default()
        };
        let (addr, drain) = server(script).await;
        let mut tx = client(addr).await;
        let (resp, _) = tx
            .send_request(get(Method::GET, "/held"), true)
            .expect("held");
        // The stream is open at the server before the drain begins.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drain.cancel();
        // A new stream is refused once the GOAWAY arrives.
        let give_up = tokio::time::Instant::now() + LIMIT;
        let refused = loop {
            match std::future::poll_fn(|cx| tx.poll_ready(cx)).await {
                Err(_) => break true,
                Ok(()) if tokio::time::Instant::now() > give_up => break false,
                Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        assert!(refused, "no GOAWAY came");
        let _ = release.send(());
        let resp = tokio::time::timeout(LIMIT, resp)
            .await
            .expect("in time")
            .expect("answer");
        assert_eq!(resp.status(), 200);
        let body = tokio::time::timeout(LIMIT, body_of(resp))
            .await
            .expect("in time");
        assert_eq!(body, b"hello");
    }

    #[test]
    fn connection_fields_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert(CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        strip_connection_fields(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn a_reset_reason_in_a_body_error_passes_on() {
        let e: BodyError = Box::new(h2::Error::from(Reason::CANCEL));
        assert_eq!(reason_of(&e), Reason::CANCEL);
        let e: BodyError = Box::new(std::io::Error::other("broken"));
        assert_eq!(reason_of(&e), Reason::INTERNAL_ERROR);
    }

    #[test]
    fn a_date_goes_as_a_literal_whether_the_app_sent_it_or_not() {
        // h2 encodes a sensitive value as a never-indexed literal.
        let mut h = HeaderMap::new();
        h.insert(
            DATE,
            HeaderValue::from_static("Fri, 04 Dec 2026 18:00:12 GMT"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        let has = Has::of(&mut h);
        assert!(has.date && has.content_length && !has.connection_fields);
        assert!(h[DATE].is_sensitive());
        assert!(!h[CONTENT_LENGTH].is_sensitive());
    }
}
