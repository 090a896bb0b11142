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

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::{BodyError, RequestBody};
use super::headers::connection_has;
use super::pool::{ConnGuard, Giveback, Upstream};

/// Most fields a response head, or a chunked body's trailers, may carry: hyper's
/// and Envoy's default.
const MAX_HEADERS: usize = 100;
/// Largest response head (or trailer block) accepted; Envoy's default is 60 KiB.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Read sizes: a read that fills its space doubles the next, up to the maximum.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;
/// Body chunks up to this size are copied behind what is already queued (the head,
/// a chunk-size line) and go out in the same write; larger ones are written from
/// their own buffer.
const COPY_MAX: usize = 16 * 1024;

/// An HTTP/1.1 connection to an endpoint, idle or checked out of the pool.
pub struct H1Conn(Box<Conn>);

struct Conn {
    io: Upstream,
    /// Read but not yet consumed: the rest of a head, body bytes.
    rbuf: BytesMut,
    next_read: usize,
    out: Out,
    /// Whether it came from the idle stack (the peer may have closed it meanwhile).
    reused: bool,
    /// Whether the current request has had any byte of answer.
    answered: bool,
    _guard: ConnGuard,
}

/// Why a request failed.
pub enum SendError<B> {
    /// A reused connection was closed before any byte of answer, and the request
    /// (no body, a method safe to repeat) may be sent again on a new connection.
    Stale(Box<Request<B>>),
    Failed,
}

impl H1Conn {
    pub(super) fn new(io: Upstream, guard: ConnGuard) -> H1Conn {
        H1Conn(Box::new(Conn {
            io,
            rbuf: BytesMut::new(),
            next_read: READ_MIN,
            out: Out::default(),
            reused: false,
            answered: false,
            _guard: guard,
        }))
    }

    pub(super) fn reused(mut self) -> H1Conn {
        self.0.reused = true;
        self
    }

    /// Whether the peer has closed (or written out of turn on) this idle
    /// connection. Asks the socket without waiting: readiness the runtime already
    /// cleared costs no system call.
    pub(super) fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        !self.0.rbuf.is_empty()
            || Pin::new(&mut self.0.io)
                .poll_read(&mut cx, &mut buf)
                .is_ready()
    }

    /// Writes `req` and waits for the response head. With `upgrade`, a 101 answer
    /// leaves the connection to [`H1Body::take_upgraded`].
    pub async fn send<B>(
        self,
        req: Box<Request<B>>,
        upgrade: bool,
    ) -> Result<Response<H1Body<B>>, SendError<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        let mut conn = self.0;
        conn.answered = false;
        let is_head = req.method() == Method::HEAD;
        let Some(framing) = framing(&req) else {
            return Err(SendError::Failed);
        };
        conn.out.clear();
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
        let mut body = H1Body {
            conn: Some(conn),
            decode,
            upload,
            keep_alive,
            upgrade: head.status == StatusCode::SWITCHING_PROTOCOLS,
            giveback: None,
        };
        if body.upgrade {
            body.decode = Decode::Done;
        }
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

enum Framing {
    /// No body; `zero`: say so with `content-length: 0` (POST and PUT without one
    /// would otherwise leave the server guessing).
    Empty {
        zero: bool,
    },
    /// `write`: the request has no Content-Length field of its own.
    Length {
        len: u64,
        write: bool,
    },
    Chunked,
}

/// How the request's body goes on the wire: its own Content-Length when it has one
/// (the downstream server checked it), else by the body's length when known, else
/// chunked. None: a Content-Length that is no number. A body already at its end is
/// empty whatever the fields say (the downstream server held it to its length).
fn framing<B: Body>(req: &Request<B>) -> Option<Framing> {
    if req.body().is_end_stream() {
        let zero = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
            && !req.headers().contains_key(CONTENT_LENGTH);
        return Some(Framing::Empty { zero });
    }
    if let Some(v) = req.headers().get(CONTENT_LENGTH) {
        let len = std::str::from_utf8(v.as_bytes()).ok()?.parse().ok()?;
        return Some(Framing::Length { len, write: false });
    }
    Some(match req.body().size_hint().exact() {
        Some(len) => Framing::Length { len, write: true },
        None => Framing::Chunked,
    })
}

fn encode_head<B>(buf: &mut Vec<u8>, req: &Request<B>, framing: &Framing) {
    buf.extend_from_slice(req.method().as_str().as_bytes());
    buf.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Empty { zero: true } => buf.extend_from_slice(b"content-length: 0\r\n"),
        Framing::Length { len, write: true } => {
            buf.extend_from_slice(b"content-length: ");
            push_decimal(buf, *len);
            buf.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    buf.extend_from_slice(b"\r\n");
}

fn push_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

fn push_hex(buf: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// Bytes queued for the socket, written in order: `buf`, then `data`, then `tail`.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    pos: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Out {
    fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.data = Bytes::new();
        self.tail = b"";
    }

    fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Whether another body frame may be queued now.
    fn has_room(&self) -> bool {
        self.data.is_empty() && self.tail.is_empty() && self.buf.len() - self.pos < COPY_MAX
    }

    /// Queues `data`, followed by `tail`.
    fn push(&mut self, data: Bytes, tail: &'static [u8]) {
        if data.len() <= COPY_MAX {
            self.buf.extend_from_slice(&data);
            self.buf.extend_from_slice(tail);
        } else {
            self.data = data;
            self.tail = tail;
        }
    }
}

enum Encoding {
    Length(u64),
    Chunked,
}

/// The part of a request body not yet sent.
struct Upload<B> {
    body: B,
    encoding: Encoding,
    done: bool,
}

impl<B: Body<Data = Bytes> + Unpin> Upload<B> {
    fn new(req: Request<B>, encoding: Encoding) -> Upload<B> {
        Upload {
            body: req.into_body(),
            encoding,
            done: false,
        }
    }

    fn encode(&mut self, frame: Frame<Bytes>, out: &mut Out) -> io::Result<()> {
        match frame.into_data() {
            Ok(data) => match &mut self.encoding {
                Encoding::Length(left) => {
                    let len = data.len() as u64;
                    if len > *left {
                        return Err(invalid("request body longer than its content-length"));
                    }
                    *left -= len;
                    out.push(data, b"");
                }
                Encoding::Chunked if data.is_empty() => {}
                Encoding::Chunked => {
                    push_hex(&mut out.buf, data.len());
                    out.buf.extend_from_slice(b"\r\n");
                    out.push(data, b"\r\n");
                }
            },
            Err(frame) => {
                // Trailers go out only in chunked framing: a length-framed message
                // has nowhere to carry them.
                if let (Ok(trailers), Encoding::Chunked) = (frame.into_trailers(), &self.encoding) {
                    out.buf.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        out.buf.extend_from_slice(name.as_str().as_bytes());
                        out.buf.extend_from_slice(b": ");
                        out.buf.extend_from_slice(value.as_bytes());
                        out.buf.extend_from_slice(b"\r\n");
                    }
                    out.buf.extend_from_slice(b"\r\n");
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Out) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        match self.encoding {
            Encoding::Length(0) => Ok(()),
            Encoding::Length(_) => Err(invalid("request body shorter than its content-length")),
            Encoding::Chunked => {
                out.buf.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A response head, read and checked.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// A reason phrase other than the status's usual one, passed on as hyper does.
    reason: Option<hyper::ext::ReasonPhrase>,
    keep_alive: bool,
    /// Whether it has Transfer-Encoding and Content-Length fields: noted while
    /// the fields are read, so a message without them costs no lookups.
    has_te: bool,
    has_cl: bool,
}

impl Conn {
    /// Sends what is queued and as much of the request body as is ready. Ready(Ok)
    /// once the whole request is written.
    fn poll_upload<B>(
        &mut self,
        upload: &mut Option<Upload<B>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        loop {
            let mut waiting_for_body = false;
            if let Some(up) = upload.as_mut().filter(|u| !u.done)
                && self.out.has_room()
            {
                match Pin::new(&mut up.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        up.encode(frame, &mut self.out)?;
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let e: BodyError = e.into();
                        return Poll::Ready(Err(io::Error::other(e)));
                    }
                    Poll::Ready(None) => {
                        up.finish(&mut self.out)?;
                        continue;
                    }
                    Poll::Pending => waiting_for_body = true,
                }
            }
            if !self.out.is_empty() {
                ready!(self.poll_write_out(cx))?;
                continue;
            }
            return if waiting_for_body {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            };
        }
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &mut self.out;
        loop {
            let n = if out.pos < out.buf.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &out.buf[out.pos..]))?;
                out.pos += n;
                n
            } else if !out.data.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &out.data))?;
                out.data.advance(n);
                n
            } else if !out.tail.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, out.tail))?;
                out.tail = &out.tail[n..];
                n
            } else {
                break;
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        out.buf.clear();
        out.pos = 0;
        Pin::new(&mut self.io).poll_flush(cx)
    }

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

    /// Reads the response head, passing over interim (1xx) answers other than 101.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Head>> {
        loop {
            if !self.rbuf.is_empty()
                && let Some(head) = self.parse_head()?
            {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Takes a whole head off the front of `rbuf`; None: not all here yet. Field
    /// values stay slices of the bytes read, as hyper keeps them.
    fn parse_head(&mut self) -> io::Result<Option<Head>> {
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &self.rbuf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => return Ok(None),
            Ok(_) => return Err(invalid("response head too large")),
            Err(_) => return Err(invalid("malformed response head")),
        };
        let status = resp
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| invalid("bad response status"))?;
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Where each field lies in the head, kept across the split below; a head is
        // at most MAX_HEAD bytes, so offsets fit in u32.
        let base = self.rbuf.as_ptr() as usize;
        let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let count = resp.headers.len();
        for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
            let (name, name_len) = at(f.name.as_bytes());
            let (value, value_len) = at(f.value);
            *span = (name, name_len, value, value_len);
        }
        let reason = resp
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| at(r.as_bytes()));
        let head = self.rbuf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        let (mut has_connection, mut has_te, mut has_cl) = (false, false, false);
        let range = |at: u32, len: u32| at as usize..(at + len) as usize;
        for &(name, name_len, value, value_len) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[range(name, name_len)])
                .map_err(|_| invalid("bad response field name"))?;
            has_connection |= name == CONNECTION;
            has_te |= name == TRANSFER_ENCODING;
            has_cl |= name == CONTENT_LENGTH;
            let value = HeaderValue::from_maybe_shared(head.slice(range(value, value_len)))
                .map_err(|_| invalid("bad response field value"))?;
            headers.append(name, value);
        }
        let reason = reason.and_then(|(at, len)| {
            hyper::ext::ReasonPhrase::try_from(head.slice(range(at, len))).ok()
        });
        let keep_alive = match version {
            Version::HTTP_10 => has_connection && connection_has(&headers, "keep-alive"),
            _ => !(has_connection && connection_has(&headers, "close")),
        };
        Ok(Some(Head {
            status,
            version,
            headers,
            reason,
            keep_alive,
            has_te,
            has_cl,
        }))
    }

    /// The next frame of a response body framed by `decode`; Ok(None) at its end.
    fn poll_decode(
        &mut self,
        decode: &mut Decode,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<Frame<Bytes>>>> {
        loop {
            match decode {
                Decode::Done => return Poll::Ready(Ok(None)),
                Decode::Length(left) | Decode::Chunk(Chunk::Data(left)) => {
                    if !self.rbuf.is_empty() {
                        let n = self
                            .rbuf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = self.rbuf.split_to(n).freeze();
                        *left -= n as u64;
                        if *left == 0 {
                            *decode = match decode {
                                Decode::Length(_) => Decode::Done,
                                _ => Decode::Chunk(Chunk::DataEnd),
                            };
                        }
                        return Poll::Ready(Ok(Some(Frame::data(data))));
                    }
                }
                Decode::Close => {
                    if !self.rbuf.is_empty() {
                        let data = self.rbuf.split().freeze();
                        return Poll::Ready(Ok(Some(Frame::data(data))));
                    }
                    if ready!(self.poll_fill(cx))? == 0 {
                        *decode = Decode::Done;
                        return Poll::Ready(Ok(None));
                    }
                    continue;
                }
                Decode::Chunk(Chunk::Size) => {
                    if let Some(size) = self.take_chunk_size()? {
                        *decode = Decode::Chunk(match size {
                            0 => Chunk::Trailers,
                            n => Chunk::Data(n),
                        });
                        continue;
                    }
                }
                Decode::Chunk(Chunk::DataEnd) => {
                    if self.rbuf.len() >= 2 {
                        if &self.rbuf[..2] != b"\r\n" {
                            return Poll::Ready(Err(invalid("chunk not ended by CRLF")));
                        }
                        self.rbuf.advance(2);
                        *decode = Decode::Chunk(Chunk::Size);
                        continue;
                    }
                }
                Decode::Chunk(Chunk::Trailers) => {
                    if let Some(trailers) = self.take_trailers()? {
                        *decode = Decode::Done;
                        return Poll::Ready(Ok(trailers.map(Frame::trailers)));
                    }
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Takes a chunk-size line (RFC 9112 §7.1), extensions ignored; None: not all
    /// here yet.
    fn take_chunk_size(&mut self) -> io::Result<Option<u64>> {
        let Some(end) = self.rbuf.windows(2).position(|w| w == b"\r\n") else {
            if self.rbuf.len() > MAX_CHUNK_LINE {
                return Err(invalid("chunk-size line too long"));
            }
            return Ok(None);
        };
        let line = &self.rbuf[..end];
        let digits = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let rest = &line[digits..];
        let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
        if digits == 0 || digits > 15 || !rest_ok {
            return Err(invalid("bad chunk size"));
        }
        let hex = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("bad chunk size"))?;
        let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?;
        self.rbuf.advance(end + 2);
        Ok(Some(size))
    }

    /// Takes the trailer section that ends a chunked body: Some(None) when it is
    /// empty; None: not all here yet.
    fn take_trailers(&mut self) -> io::Result<Option<Option<HeaderMap>>> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (len, trailers) = match httparse::parse_headers(&self.rbuf, &mut fields) {
            Ok(httparse::Status::Complete((len, fields))) => {
                let mut map = HeaderMap::with_capacity(fields.len());
                for f in fields.iter() {
                    let name = HeaderName::from_bytes(f.name.as_bytes())
                        .map_err(|_| invalid("bad trailer name"))?;
                    let value = HeaderValue::from_bytes(f.value)
                        .map_err(|_| invalid("bad trailer value"))?;
                    map.append(name, value);
                }
                (len, (!map.is_empty()).then_some(map))
            }
            Ok(httparse::Status::Partial) if self.rbuf.len() < MAX_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(invalid("trailers too large")),
            Err(_) => return Err(invalid("malformed trailers")),
        };
        self.rbuf.advance(len);
        Ok(Some(trailers))
    }
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
    Length(u64),
    Chunk(Chunk),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// None: a response no body framing can be trusted for (conflicting lengths, a 101
/// nobody asked for).
fn decode_for(head: &Head, is_head: bool, upgrade: bool) -> Option<Decode> {
    let status = head.status;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return upgrade.then_some(Decode::Done);
    }
    if is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Some(Decode::Done);
    }
    if let Some(te) = head
        .has_te
        .then(|| head.headers.get_all(TRANSFER_ENCODING).iter().next_back())
        .flatten()
    {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Some(if chunked {
            Decode::Chunk(Chunk::Size)
        } else {
            Decode::Close
        });
    }
    let mut length = None;
    let lengths = head.has_cl.then(|| head.headers.get_all(CONTENT_LENGTH));
    for v in lengths.iter().flatten() {
        let n: u64 = v.to_str().ok()?.trim().parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(match length {
        Some(0) => Decode::Done,
        Some(n) => Decode::Length(n),
        None => Decode::Close,
    })
}

/// A response body read straight off its connection, which goes back to the pool
/// (when both sides kept it alive) once the body has been read to its end.
pub struct H1Body<B = RequestBody> {
    /// None once the body is done with it.
    conn: Option<Box<Conn>>,
    decode: Decode,
    /// The request body's unsent rest.
    upload: Option<Upload<B>>,
    keep_alive: bool,
    upgrade: bool,
    giveback: Option<Giveback>,
}

impl<B> H1Body<B> {
    /// Returns the connection to the pool through `giveback` once this body ends;
    /// at once if it already has.
    pub fn give_back(&mut self, giveback: Giveback) {
        self.giveback = Some(giveback);
        if self.decode == Decode::Done {
            self.release();
        }
    }

    fn release(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        // A connection is reused only with the whole exchange on it done: the
        // response read to its end (and nothing after it), and the request sent.
        let upload_done = self
            .upload
            .take()
            .is_none_or(|u| u.done && conn.out.is_empty());
        if self.keep_alive
            && !self.upgrade
            && upload_done
            && conn.rbuf.is_empty()
            && let Some(g) = self.giveback.take()
        {
            g.give(H1Conn(conn));
        }
    }

    /// After a 101: the connection, for the tunnel.
    pub fn take_upgraded(&mut self) -> Option<Upgraded> {
        if !self.upgrade {
            return None;
        }
        let conn = self.conn.take()?;
        let Conn {
            io, rbuf, _guard, ..
        } = *conn;
        Some(Upgraded {
            early: rbuf.freeze(),
            io,
            _guard,
        })
    }
}

impl<B> Body for H1Body<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if this.upload.is_some() {
            match conn.poll_upload(&mut this.upload, cx) {
                Poll::Ready(Ok(())) => this.upload = None,
                // The client broke off its upload: the answer may still come
                // whole, but the connection is not reused.
                Poll::Ready(Err(_)) => {
                    this.upload = None;
                    this.keep_alive = false;
                }
                Poll::Pending => {}
            }
        }
        match ready!(conn.poll_decode(&mut this.decode, cx)) {
            Ok(frame) => {
                if this.decode == Decode::Done {
                    this.release();
                }
                Poll::Ready(frame.map(Ok))
            }
            Err(e) => {
                this.conn = None;
                this.upload = None;
                this.decode = Decode::Done;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// An upstream connection that switched protocols: what was read past the 101
/// head comes first.
pub struct Upgraded {
    early: Bytes,
    io: Upstream,
    _guard: ConnGuard,
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early[..n]);
            this.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pool::{Key, Pool};
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    type Chan =
        StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

    /// A server that runs `script` on each connection it accepts, counting them.
    async fn server<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(script(stream));
            }
        });
        (addr, accepted)
    }

    /// Reads up to and including the blank line that ends a head; empty at EOF.
    async fn read_head(s: &mut TcpStream) -> Vec<u8> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return Vec::new(),
            }
        }
        head
    }

    fn request<B>(method: Method, body: B) -> Box<Request<B>> {
        let mut req = Request::new(body);
        *req.method_mut() = method;
        *req.uri_mut() = http::Uri::from_static("/x?y=1");
        req.headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("svc"));
        Box::new(req)
    }

    async fn checkout(pool: &Pool, addr: SocketAddr) -> H1Conn {
        pool.h1(
            &Key::plain(addr),
            Duration::from_secs(5),
            None,
            crate::state::now_nanos(),
        )
        .await
        .map_err(|_| "connect")
        .expect("connection")
    }

    async fn send<B>(conn: H1Conn, req: Box<Request<B>>) -> Response<H1Body<B>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        match conn.send(req, false).await {
            Ok(resp) => resp,
            Err(SendError::Stale(_)) => panic!("stale"),
            Err(SendError::Failed) => panic!("failed"),
        }
    }

    #[tokio::test]
    async fn every_response_framing_is_read_whole_on_one_kept_alive_connection() {
        let answers: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;ext=1\r\nhe\r\n3\r\nllo\r\n0\r\nx-t: 7\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 5\r\n\r\n",
        ];
        let (addr, accepted) = server(move |mut s| async move {
            for answer in answers {
                if read_head(&mut s).await.is_empty() {
                    return;
                }
                let _ = s.write_all(answer).await;
            }
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let key = Key::plain(addr);
        for (i, method) in [Method::GET, Method::GET, Method::DELETE, Method::HEAD]
            .into_iter()
            .enumerate()
        {
            let conn = checkout(&pool, addr).await;
            let mut resp = send(conn, request(method, Empty::<Bytes>::new())).await;
            resp.body_mut().give_back(pool.giveback(key.clone(), None));
            let status = resp.status();
            let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().cloned();
            let body = resp.into_body().collect().await.expect("body");
            let trailers = body.trailers().cloned();
            let data = body.to_bytes();
            match i {
                0 => assert_eq!((status, &data[..]), (StatusCode::OK, &b"hello"[..])),
                1 => {
                    assert_eq!(&data[..], b"hello");
                    let t = trailers.expect("trailers");
                    assert_eq!(t.get("x-t").map(|v| v.as_bytes()), Some(&b"7"[..]));
                }
                2 => assert_eq!((status, data.len()), (StatusCode::NO_CONTENT, 0)),
                _ => {
                    assert_eq!(data.len(), 0, "a HEAD answer has no body");
                    assert_eq!(
                        reason.map(|r| r.as_bytes().to_vec()),
                        Some(b"Fine Thanks".to_vec())
                    );
                }
            }
            assert_eq!(
                pool.idle_h1(addr),
                1,
                "answer {i} left the connection reusable"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_close_delimited_body_ends_at_eof_and_its_connection_is_not_kept() {
        let (addr, _) = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let mut resp = send(
            checkout(&pool, addr).await,
            request(Method::GET, Empty::<Bytes>::new()),
        )
        .await;
        resp.body_mut()
            .give_back(pool.giveback(Key::plain(addr), None));
        let data = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&data[..], b"until the end");
        assert_eq!(pool.idle_h1(addr), 0);
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_sent_chunked_with_its_trailers() {
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
        let (addr, _) = server(move |mut s| {
            let seen_tx = seen_tx.clone();
            async move {
                let mut got = read_head(&mut s).await;
                let mut byte = [0u8; 1];
                while !got.ends_with(b"0\r\nx-t: 1\r\n\r\n")
                    && s.read(&mut byte).await.ok() == Some(1)
                {
                    got.push(byte[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let _ = seen_tx.send(got).await;
            }
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let body: Chan = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let feed = tokio::spawn(async move {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-t", HeaderValue::from_static("1"));
            for frame in [
                Frame::data(Bytes::from_static(b"ab")),
                Frame::data(Bytes::from_static(b"cde")),
                Frame::trailers(trailers),
            ] {
                let _ = tx.send(Ok(frame)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let resp = send(checkout(&pool, addr).await, request(Method::POST, body)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let got = String::from_utf8(seen_rx.recv().await.expect("seen")).expect("utf8");
        assert!(
            got.starts_with(
                "POST /x?y=1 HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
            "{got}"
        );
        assert!(
            got.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\nx-t: 1\r\n\r\n"),
            "{got}"
        );
        feed.await.expect("feed");
    }

    #[tokio::test]
    async fn an_answer_before_the_upload_ends_comes_back_and_the_connection_is_dropped() {
        let (addr, _) = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
                .await;
            let mut sink = [0u8; 64];
            while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .expect("queue");
        let body: Chan = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut resp = tokio::time::timeout(
            Duration::from_secs(5),
            send(checkout(&pool, addr).await, request(Method::PUT, body)),
        )
        .await
        .expect("the answer does not wait for the upload");
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        resp.body_mut()
            .give_back(pool.giveback(Key::plain(addr), None));
        let data = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&data[..], b"big!");
        assert_eq!(
            pool.idle_h1(addr),
            0,
            "half a request is still on that connection"
        );
        drop(tx);
    }

    #[tokio::test]
    async fn a_reused_connection_closed_unanswered_gives_back_only_a_repeatable_request() {
        // Answers the first request, then reads the second and closes unanswered.
        let (addr, _) = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
            read_head(&mut s).await;
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        for (method, repeatable) in [(Method::GET, true), (Method::POST, false)] {
            let mut resp = send(
                checkout(&pool, addr).await,
                request(Method::GET, Full::new(Bytes::new())),
            )
            .await;
            resp.body_mut()
                .give_back(pool.giveback(Key::plain(addr), None));
            assert_eq!(pool.idle_h1(addr), 1);
            let conn = checkout(&pool, addr).await;
            let body = if method == Method::POST {
                Full::new(Bytes::from_static(b"once"))
            } else {
                Full::new(Bytes::new())
            };
            match conn.send(request(method.clone(), body), false).await {
                Err(SendError::Stale(req)) => {
                    assert!(repeatable, "{method} came back to be sent again");
                    assert_eq!(req.method(), method);
                }
                Err(SendError::Failed) => assert!(!repeatable, "{method} was not given back"),
                Ok(_) => panic!("no answer was sent"),
            }
        }
    }

    #[tokio::test]
    async fn malformed_or_oversized_heads_fail_the_request() {
        let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let answers = Arc::new(vec![
            b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec(),
            big.into_bytes(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab".to_vec(),
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec(),
        ]);
        let next = Arc::new(AtomicUsize::new(0));
        let (addr, _) = server(move |mut s| {
            let answer = answers[next.fetch_add(1, Ordering::SeqCst)].clone();
            async move {
                read_head(&mut s).await;
                let _ = s.write_all(&answer).await;
            }
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        for case in ["bad status", "head too large", "two lengths", "unasked 101"] {
            let conn = checkout(&pool, addr).await;
            let res = conn
                .send(request(Method::GET, Empty::<Bytes>::new()), false)
                .await;
            assert!(matches!(res, Err(SendError::Failed)), "{case}");
        }
    }

    #[tokio::test]
    async fn interim_answers_are_passed_over() {
        let (addr, _) = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let resp = send(
            checkout(&pool, addr).await,
            request(Method::GET, Empty::<Bytes>::new()),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get("link").is_none());
        let data = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&data[..], b"ok");
    }

    #[tokio::test]
    async fn a_switch_of_protocols_hands_over_the_bytes_after_the_head() {
        let (addr, _) = server(|mut s| async move {
            read_head(&mut s).await;
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nearly")
                .await;
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                let _ = s.write_all(&buf[..n]).await;
            }
        })
        .await;
        let pool = Pool::new(Duration::from_secs(60));
        let conn = checkout(&pool, addr).await;
        let Ok(mut resp) = conn
            .send(request(Method::GET, Empty::<Bytes>::new()), true)
            .await
        else {
            panic!("upgrade failed");
        };
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        let mut up = resp
            .body_mut()
            .take_upgraded()
            .expect("upgraded connection");
        let mut early = [0u8; 5];
        up.read_exact(&mut early).await.expect("early bytes");
        assert_eq!(&early, b"early");
        up.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        up.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"ping");
    }
}
