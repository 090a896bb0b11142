//! A body read from an HTTP/2 stream, on either side of the proxy: a client's
//! request (`h2_server`) or an upstream's answer (`h2_client`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{Reason, RecvStream};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

/// Gives back flow-control window as each chunk is taken. A peer that resets the
/// stream with NO_ERROR has said all it meant to (RFC 9113 §8.1): the body just
/// ends, as in hyper.
pub(crate) struct H2Body {
    recv: RecvStream,
    data_done: bool,
    done: bool,
    /// Bytes still to come, when the head gave a length.
    remaining: Option<u64>,
    /// An upstream's answer (`response`), not a client's request.
    answer: bool,
}

impl H2Body {
    /// A request's body, whose length is its Content-Length when it has one (h2
    /// holds the stream to it).
    pub(crate) fn request(recv: RecvStream, headers: &HeaderMap) -> Self {
        // A request that ended with its head has no length to look up.
        let done = recv.is_end_stream();
        let length = if done {
            None
        } else {
            headers
                .get(CONTENT_LENGTH)
                .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
                .and_then(|v| v.parse().ok())
        };
        Self::new(recv, done, length, false)
    }

    /// An answer's body. Its length is left unknown: an answer's Content-Length
    /// need not describe the bytes that follow (HEAD, 304).
    pub(crate) fn response(recv: RecvStream) -> Self {
        let done = recv.is_end_stream();
        Self::new(recv, done, None, true)
    }

    /// `done`: the stream's `is_end_stream`, which locks h2's stream store, so it
    /// is asked once.
    fn new(recv: RecvStream, done: bool, length: Option<u64>, answer: bool) -> Self {
        H2Body {
            recv,
            data_done: done,
            done,
            remaining: if done { Some(0) } else { length },
            answer,
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    if let Some(left) = this.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    if this.recv.is_end_stream() {
                        this.data_done = true;
                        this.done = true;
                    }
                    // An answer's last chunk needs no release: h2 gives a stream's
                    // unreleased window back to the connection when its last
                    // reference drops, and an answer's body is dropped once it ends.
                    if !(this.done && this.answer) {
                        let _ = this.recv.flow_control().release_capacity(data.len());
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(ended_by(e));
                }
                None => this.data_done = true,
            }
        }
        let trailers = ready!(this.recv.poll_trailers(cx));
        this.done = true;
        match trailers {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(ended_by(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match (self.done, self.remaining) {
            (true, _) => SizeHint::with_exact(0),
            (false, Some(left)) => SizeHint::with_exact(left),
            (false, None) => SizeHint::default(),
        }
    }
}

/// What a stream's error means for its body: the end, after a NO_ERROR reset.
fn ended_by(e: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    if e.reason() == Some(Reason::NO_ERROR) {
        None
    } else {
        Some(Err(e))
    }
}
