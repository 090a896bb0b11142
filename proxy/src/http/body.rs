//! The response body the proxy hands back: either the upstream's, streamed as it
//! arrives, or a short one the proxy wrote itself.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::client_body::ClientBody;
use super::h1_client::H1Body;
use super::h2_body::H2Body;
use super::watch::InFlight;
use crate::breaker::Permit;
use crate::observe::Observation;
use crate::sync::lock;

/// Errors of a body the proxy streams: hyper's (HTTP/1 upstreams and clients) or
/// h2's (HTTP/2 upstreams and clients). Boxed only when one happens.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    #[project = UpstreamProj]
    enum Upstream {
        // Boxed (by `H1Conn::send`): an HTTP/1 body (its connection's return
        // path, the request body's rest) is eight times an HTTP/2 one, and the
        // response carrying it is moved through every layer on the way out.
        H1 { body: Box<H1Body> },
        H2 { #[pin] body: H2Body },
    }
}

impl Upstream {
    fn is_end_stream(&self) -> bool {
        match self {
            Upstream::H1 { body } => Body::is_end_stream(&**body),
            Upstream::H2 { body } => Body::is_end_stream(body),
        }
    }
}

pin_project! {
    /// An upstream's response body, streamed. (An HTTP/1 body returns its
    /// connection to the pool itself, once its last byte has been read.)
    pub(crate) struct PooledBody {
        #[pin]
        inner: Upstream,
        // Keeps the request counted as active until the body is done or dropped.
        active: Option<Permit>,
        // Stops the client connection's head clock until the body is sent.
        in_flight: Option<InFlight>,
        // Counts the bytes sent and reports the request once they all are.
        observed: Option<Box<Observation>>,
    }
}

impl PooledBody {
    pub(crate) fn h1(inner: Box<H1Body>) -> Self {
        PooledBody {
            inner: Upstream::H1 { body: inner },
            active: None,
            in_flight: None,
            observed: None,
        }
    }

    /// A response body from a shared HTTP/2 connection: nothing to give back.
    pub(crate) fn h2(inner: H2Body) -> Self {
        PooledBody {
            inner: Upstream::H2 { body: inner },
            active: None,
            in_flight: None,
            observed: None,
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let res = match this.inner.as_mut().project() {
            UpstreamProj::H1 { body } => Pin::new(&mut **body)
                .poll_frame(cx)
                .map_err(BodyError::from),
            UpstreamProj::H2 { body } => body.poll_frame(cx).map_err(BodyError::from),
        };
        let done = match &res {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if let (Some(obs), Poll::Ready(Some(Ok(frame)))) = (this.observed.as_mut(), &res)
            && let Some(data) = frame.data_ref()
        {
            obs.sent(data.len() as u64);
        }
        if done {
            this.active.take();
            this.observed.take();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::H1 { body } => body.size_hint(),
            Upstream::H2 { body } => body.size_hint(),
        }
    }
}

pin_project! {
    #[project = ProxyBodyProj]
    pub(crate) enum ProxyBody {
        Upstream { #[pin] body: PooledBody },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl ProxyBody {
    pub(crate) fn full(bytes: Bytes) -> Self {
        ProxyBody::Full {
            body: Full::new(bytes),
        }
    }

    pub(crate) fn upstream(body: PooledBody) -> Self {
        ProxyBody::Upstream { body }
    }

    /// Holds `permit` (a unit of the service's active requests) until this body
    /// has been sent (or dropped).
    pub(crate) fn holding(mut self, permit: Permit) -> Self {
        if let ProxyBody::Upstream { body } = &mut self
            && !body.inner.is_end_stream()
        {
            body.active = Some(permit);
        }
        self
    }

    /// Holds the client connection's `InFlight` mark until this body has been sent
    /// (or dropped); see `watch`.
    pub(crate) fn until_sent(mut self, in_flight: Option<InFlight>) -> Self {
        if let ProxyBody::Upstream { body } = &mut self
            && !body.inner.is_end_stream()
        {
            body.in_flight = in_flight;
        }
        self
    }
}

/// Hands `obs` the response head, then lets the body carry it until the body has
/// been sent (or dropped), when it is reported.
pub(crate) fn observed(
    resp: Response<ProxyBody>,
    obs: Option<Box<Observation>>,
) -> Response<ProxyBody> {
    let Some(mut obs) = obs else {
        return resp;
    };
    obs.head(&resp);
    resp.map(|body| match body {
        ProxyBody::Upstream { mut body } if !body.inner.is_end_stream() => {
            body.observed = Some(obs);
            ProxyBody::Upstream { body }
        }
        other => {
            obs.sent(other.size_hint().exact().unwrap_or(0));
            other
        }
    })
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { body } => body.poll_frame(cx),
            ProxyBodyProj::Full { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Full { body } => body.size_hint(),
        }
    }
}

/// A copy of a streamed request body, kept while it is sent so that a retry can
/// send it again, provided it ended within the limit.
#[derive(Debug)]
pub(crate) struct Recording {
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    state: Recorded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    Partial,
    Complete,
    /// Over the limit, broken off, or with trailers: cannot be replayed.
    Abandoned,
}

impl Recording {
    pub(crate) fn new(limit: usize) -> Arc<Mutex<Recording>> {
        Arc::new(Mutex::new(Recording {
            chunks: Vec::new(),
            len: 0,
            limit,
            state: Recorded::Partial,
        }))
    }

    /// The whole body, if it was read to its end within the limit.
    pub(crate) fn replay(&self) -> Option<Bytes> {
        if self.state != Recorded::Complete {
            return None;
        }
        Some(match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }

    fn abandon(&mut self) {
        self.state = Recorded::Abandoned;
        self.chunks = Vec::new();
    }

    fn frame(&mut self, frame: &Frame<Bytes>, end: bool) {
        if self.state != Recorded::Partial {
            return;
        }
        match frame.data_ref() {
            Some(data) => {
                self.len += data.len();
                if self.len > self.limit {
                    return self.abandon();
                }
                self.chunks.push(data.clone());
            }
            None => return self.abandon(),
        }
        if end {
            self.state = Recorded::Complete;
        }
    }
}

pin_project! {
    /// A request body going upstream: the client's, streamed (and perhaps recorded
    /// for a retry), or a buffered copy sent again when the request is retried.
    /// The client's holds its connection's `InFlight` mark until it has been read
    /// to the end: an answer can come before the upload ends, and the client's
    /// head clock must not run while it is still sending.
    #[project = RequestBodyProj]
    pub(crate) enum RequestBody {
        Streaming { #[pin] body: ClientBody, in_flight: Option<InFlight> },
        Recording {
            #[pin] body: ClientBody,
            recording: Arc<Mutex<Recording>>,
            in_flight: Option<InFlight>,
        },
        Replay { #[pin] body: Full<Bytes> },
    }
}

impl RequestBody {
    pub(crate) fn replay(bytes: Bytes) -> Self {
        RequestBody::Replay {
            body: Full::new(bytes),
        }
    }

    /// A client's body, holding a copy of the request's `in_flight` mark unless it
    /// is already at its end.
    pub(crate) fn client(body: ClientBody, in_flight: Option<&InFlight>) -> Self {
        let in_flight = in_flight.filter(|_| !body.is_end_stream()).cloned();
        RequestBody::Streaming { body, in_flight }
    }
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Streaming {
            body: ClientBody::from(body),
            in_flight: None,
        }
    }
}

/// Whether a body that returned `res` from `poll_frame` is finished with.
fn ended<T, E>(res: &Poll<Option<Result<T, E>>>, at_end: bool) -> bool {
    match res {
        Poll::Ready(Some(Ok(_))) => at_end,
        Poll::Ready(_) => true,
        Poll::Pending => false,
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            RequestBodyProj::Streaming {
                mut body,
                in_flight,
            } => {
                let res = body.as_mut().poll_frame(cx);
                if in_flight.is_some() && ended(&res, body.is_end_stream()) {
                    in_flight.take();
                }
                res
            }
            RequestBodyProj::Recording {
                mut body,
                recording,
                in_flight,
            } => {
                let res = body.as_mut().poll_frame(cx);
                if in_flight.is_some() && ended(&res, body.is_end_stream()) {
                    in_flight.take();
                }
                match &res {
                    Poll::Ready(Some(Ok(frame))) => {
                        lock(recording).frame(frame, body.is_end_stream());
                    }
                    Poll::Ready(None) => {
                        let mut rec = lock(recording);
                        if rec.state == Recorded::Partial {
                            rec.state = Recorded::Complete;
                        }
                    }
                    Poll::Ready(Some(Err(_))) => lock(recording).abandon(),
                    Poll::Pending => {}
                }
                res
            }
            RequestBodyProj::Replay { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Streaming { body, .. } | RequestBody::Recording { body, .. } => {
                body.is_end_stream()
            }
            RequestBody::Replay { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Streaming { body, .. } | RequestBody::Recording { body, .. } => {
                body.size_hint()
            }
            RequestBody::Replay { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(b: &'static [u8]) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(b))
    }

    #[test]
    fn a_recording_replays_only_a_whole_body_within_the_limit() {
        let rec = Recording::new(8);
        let mut r = lock(&rec);
        r.frame(&data(b"abc"), false);
        assert_eq!(r.replay(), None, "not ended yet");
        r.frame(&data(b"def"), true);
        assert_eq!(r.replay(), Some(Bytes::from_static(b"abcdef")));

        let rec = Recording::new(4);
        let mut r = lock(&rec);
        r.frame(&data(b"abc"), false);
        r.frame(&data(b"def"), true);
        assert_eq!(r.replay(), None, "over the limit");
        assert!(r.chunks.is_empty(), "and nothing kept");

        let rec = Recording::new(64);
        let mut r = lock(&rec);
        r.frame(&data(b"abc"), false);
        r.frame(&Frame::trailers(http::HeaderMap::new()), true);
        assert_eq!(r.replay(), None, "trailers are not replayed");
    }
}
