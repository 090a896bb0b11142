//! The body of a request a client sent the proxy: hyper's on HTTP/1, the h2
//! stream's own on HTTP/2 (`h2_server`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::body::BodyError;
use super::h2_body::H2Body;

pin_project! {
    #[project = ClientBodyProj]
    pub(crate) enum ClientBody {
        H1 { #[pin] body: Incoming },
        H2 { body: H2Body },
    }
}

impl ClientBody {
    /// The body of an HTTP/2 request whose head carried `headers`.
    pub(crate) fn h2(recv: RecvStream, headers: &HeaderMap) -> Self {
        ClientBody::H2 {
            body: H2Body::request(recv, headers),
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
