//! The request on the wire: its head, and its body framed by Content-Length or
//! chunked, queued for the socket in as few writes as it allows.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::CONTENT_LENGTH;
use http::{Method, Request};
use http_body::{Body, Frame};
use tokio::io::AsyncWrite;

use super::{Conn, invalid};
use crate::http::body::BodyError;
use crate::http::error::ClientBodyError;

/// Body chunks up to this size are copied behind what is already queued (the head,
/// a chunk-size line) and go out in the same write; larger ones are written from
/// their own buffer.
const COPY_MAX: usize = 16 * 1024;

pub(super) enum Framing {
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
pub(super) fn framing<B: Body>(req: &Request<B>) -> Option<Framing> {
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

pub(super) fn encode_head<B>(buf: &mut Vec<u8>, req: &Request<B>, framing: &Framing) {
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
pub(super) struct Out {
    pub(super) buf: Vec<u8>,
    pos: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Out {
    pub(super) fn is_empty(&self) -> bool {
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

pub(super) enum Encoding {
    Length(u64),
    Chunked,
}

/// The part of a request body not yet sent.
pub(super) struct Upload<B> {
    body: B,
    encoding: Encoding,
    pub(super) done: bool,
}

impl<B: Body<Data = Bytes> + Unpin> Upload<B> {
    pub(super) fn new(req: Request<B>, encoding: Encoding) -> Upload<B> {
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

impl Conn {
    /// Sends what is queued and as much of the request body as is ready. Ready(Ok)
    /// once the whole request is written.
    pub(super) fn poll_upload<B>(
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
                        return Poll::Ready(Err(io::Error::other(ClientBodyError(e.into()))));
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
}
