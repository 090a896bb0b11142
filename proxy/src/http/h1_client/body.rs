//! The response body, read off its connection as the client asks for data, and
//! the connection left to a tunnel after a 101.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::request::Upload;
use super::response::Decode;
use super::{Conn, H1Conn};
use crate::breaker::Permit;
use crate::http::body::{BodyError, RequestBody};
use crate::http::pool::{Giveback, Upstream};

/// A response body read straight off its connection, which goes back to the pool
/// (when both sides kept it alive) once the body has been read to its end.
pub(crate) struct H1Body<B = RequestBody> {
    /// None once the body is done with it.
    pub(super) conn: Option<Box<Conn>>,
    pub(super) decode: Decode,
    /// The request body's unsent rest.
    pub(super) upload: Option<Upload<B>>,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
    pub(super) giveback: Option<Giveback>,
}

impl<B> H1Body<B> {
    /// Returns the connection to the pool through `giveback` once this body ends;
    /// at once if it already has.
    pub(crate) fn give_back(&mut self, giveback: Giveback) {
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
        // response read to its end (and nothing after it), and the request sent,
        // head included (a server may answer before it has read all of it).
        let upload_done = self.upload.take().is_none_or(|u| u.done) && conn.out.is_empty();
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
    pub(crate) fn take_upgraded(&mut self) -> Option<Upgraded> {
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
pub(crate) struct Upgraded {
    early: Bytes,
    io: Upstream,
    _guard: Permit,
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
