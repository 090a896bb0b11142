//! The body of a request a client sent the proxy: hyper's on HTTP/1, the h2
//! stream's own on HTTP/2 (`h2_server`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::body::BodyError;

pin_project! {
    #[project = ClientBodyProj]
    pub(crate) enum ClientBody {
        H1 { #[pin] body: Incoming },
        H2 { body: H2RequestBody },
    }
}

impl ClientBody {
    /// The body of an HTTP/2 request whose head carried `headers`.
    pub(crate) fn h2(recv: RecvStream, headers: &HeaderMap) -> Self {
        ClientBody::H2 {
            body: H2RequestBody::new(recv, headers),
        }
    }
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> Self {
        ClientBody::H1 { body }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ClientBodyProj::H1 { body } => body.poll_frame(cx).map_err(BodyError::from),
            ClientBodyProj::H2 { body } => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1 { body } => body.is_end_stream(),
            ClientBody::H2 { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1 { body } => body.size_hint(),
            ClientBody::H2 { body } => body.size_hint(),
        }
    }
}

/// A request body read from an HTTP/2 stream, giving back flow-control window as
/// each chunk is taken. Its length is the request's Content-Length, when it has
/// one (h2 holds the stream to it). A client that resets the stream with NO_ERROR
/// has said all it meant to (RFC 9113 §8.1): the body just ends, as in hyper.
pub(crate) struct H2RequestBody {
    recv: RecvStream,
    data_done: bool,
    /// Bytes still to come, when the head gave a Content-Length.
    remaining: Option<u64>,
}

impl H2RequestBody {
    fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        let remaining = if recv.is_end_stream() {
            Some(0)
        } else {
            headers
                .get(CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.parse().ok())
        };
        H2RequestBody {
            recv,
            data_done: false,
            remaining,
        }
    }
}

impl Body for H2RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = this.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}
