//! Upstream HTTP/1.1, driven from each request's own task.
//!
//! hyper's HTTP/1 client runs every connection in a task of its own and hands each
//! request to it through a channel, and the response back through another: two
//! extra wakes per request, in a proxy that already runs each request in a task.
//! Here that task writes the request and reads the response head itself, and the
//! response body reads the socket as the downstream connection asks for data. The
//! connection goes back to the pool when its response has been read to the end.
//!
//! A request body still being sent when the response head arrives (an early answer,
//! or a full-duplex stream) goes on being sent from the response body's polls.

mod body;
#[cfg(test)]
mod differential;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::either::Either;

use super::body::BodyError;
use super::error::{ClientBodyError, ProxyError};
use super::pool::Upstream;
use crate::breaker::Permit;
use request::{Encoding, Framing, Out, Upload, encode_head, framing};
use response::{Decode, decode_for};

pub(crate) use body::{H1Body, Upgraded};

/// Read sizes: a read that fills its space doubles the next, up to the maximum.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

/// An HTTP/1.1 connection to an endpoint, idle or checked out of the pool.
pub(crate) struct H1Conn(Box<Conn>);

struct Conn {
    io: Upstream,
    /// Read but not yet consumed: the rest of a head, body bytes.
    rbuf: BytesMut,
    /// Where each field of the head being read lies in it: kept between
    /// responses, so reading a head zeroes no table of `MAX_HEADERS` entries.
    spans: Vec<(u32, u32, u32, u32)>,
    /// The last heads' field names by position, as read and as parsed (see
    /// `response::Names`).
    names: response::Names,
    next_read: usize,
    out: Out,
    /// Whether it came from the idle stack (the peer may have closed it meanwhile).
    reused: bool,
    /// Whether the current request has had any byte of answer.
    answered: bool,
    /// The current answer's Date is dropped when it is this second's (see
    /// `forward::Target::leave_date`).
    leave_date: bool,
    _guard: Permit,
}

/// Why a request failed.
pub(crate) enum SendError<B> {
    /// A reused connection was closed before any byte of answer, and the request
    /// (no body, a method safe to repeat) may be sent again on a new connection.
    Stale(Box<Request<B>>),
    /// The client's own request body failed: its fault, not the upstream's.
    Client(ProxyError),
    Failed,
}

impl H1Conn {
    pub(super) fn new(io: Upstream, guard: Permit) -> H1Conn {
        H1Conn(Box::new(Conn {
            io,
            rbuf: BytesMut::new(),
            spans: Vec::new(),
            names: response::Names::default(),
            next_read: READ_MIN,
            out: Out::default(),
            reused: false,
            answered: false,
            leave_date: false,
            _guard: guard,
        }))
    }

    pub(super) fn reused(mut self) -> H1Conn {
        self.0.reused = true;
        self
    }

    /// Whether the peer has closed (or written out of turn on) this idle
    /// connection. Asks the socket without waiting: readiness the runtime already
    /// cleared costs no system call. A plain socket is asked with `try_read`,
    /// which leaves no waker behind, as a poll (even with a no-op waker) does.
    pub(super) fn is_closed(&mut self) -> bool {
        if !self.0.rbuf.is_empty() {
            return true;
        }
        let mut byte = [0u8; 1];
        match &mut self.0.io {
            Either::Left(tcp) => {
                !matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            tls => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut buf = ReadBuf::new(&mut byte);
                Pin::new(tls).poll_read(&mut cx, &mut buf).is_ready()
            }
        }
    }

    /// Writes `req` and waits for the response head. With `upgrade`, a 101 answer
    /// leaves the connection to [`H1Body::take_upgraded`]; with `leave_date`, the
    /// answer loses a Date of this second.
    pub(crate) async fn send<B>(
        self,
        req: Box<Request<B>>,
        upgrade: bool,
        leave_date: bool,
    ) -> Result<Response<Box<H1Body<B>>>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        let mut conn = self.0;
        conn.answered = false;
        conn.leave_date = leave_date;
        let is_head = req.method() == Method::HEAD;
        let Some(framing) = framing(&req) else {
            return Err(SendError::Failed);
        };
        encode_head(&mut conn.out.buf, &req, &framing);
        // Only a request whose every byte is still here, and that may be repeated,
        // can go again on a new connection: it is kept for that.
        let replayable = conn.reused && is_safe(req.method());
        let (mut upload, kept) = match framing {
            Framing::Empty { .. } => (None, Some(req)),
            Framing::Length { len, .. } => (Some(Upload::new(*req, Encoding::Length(len))), None),
            Framing::Chunked => (Some(Upload::new(*req, Encoding::Chunked)), None),
        };

        let head = poll_fn(|cx| {
            if let Poll::Ready(Err(e)) = conn.poll_upload(&mut upload, cx) {
                return Poll::Ready(Err(e));
            }
            conn.poll_head(cx)
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(e) => {
                tracing::debug!(error = %e, answered = conn.answered, "upstream HTTP/1 request failed");
                if let Some(client) = ClientBodyError::within(&e) {
                    return Err(SendError::Client(client.proxy_error()));
                }
                return Err(match kept {
                    Some(req) if replayable && !conn.answered => SendError::Stale(req),
                    _ => SendError::Failed,
                });
            }
        };
        let Some(decode) = decode_for(&head, is_head, upgrade) else {
            return Err(SendError::Failed);
        };
        // A body that ends with the connection, or whose framing had to overrule a
        // Content-Length (RFC 9112 §6.3), leaves nothing safe to reuse.
        let keep_alive =
            head.keep_alive && decode != Decode::Close && !(head.has_te && head.has_cl);
        // Boxed: the response is moved through every layer on its way out, and
        // the body is most of its size.
        let body = Box::new(H1Body {
            conn: Some(conn),
            decode,
            upload,
            keep_alive,
            upgrade: head.status == StatusCode::SWITCHING_PROTOCOLS,
            giveback: None,
        });
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            resp.extensions_mut().insert(reason);
        }
        Ok(resp)
    }
}

/// Methods a client may repeat without asking (RFC 9110 §9.2.1), as Go's transport
/// retries them on a reused connection that closed under the request.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    /// Reads more into `rbuf`: Ready(Ok(0)) at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_MIN / 8 {
            self.rbuf.reserve(self.next_read);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n > 0 {
            self.answered = true;
            if n == room {
                self.next_read = (self.next_read * 2).min(READ_MAX);
            }
        }
        Poll::Ready(Ok(n))
    }
}
