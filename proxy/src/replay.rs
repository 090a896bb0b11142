//! A request kept so that it can be sent again: by a retry, or because an HTTP/2
//! endpoint refused it unprocessed (RFC 9113 §8.7: REFUSED_STREAM, or past a
//! GOAWAY's last stream), which is safe whatever its method.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body as _;

use crate::http::body::{Recording, RequestBody};
use crate::http::forward::BoxedRequest;

/// How many times one request refused unprocessed is sent again, beyond its
/// policy's attempts: bounds the loop against a peer that refuses everything.
pub(crate) const MAX_REFUSED_RESENDS: u32 = 2;

/// A request body as it can be sent again.
pub(crate) enum Replay {
    Buffered(Bytes),
    /// Copied as the first attempt streamed it.
    Recorded(Arc<Mutex<Recording>>),
}

impl Replay {
    /// The body again, unless a streamed one did not end within its limit.
    pub(crate) fn body(&self) -> Option<RequestBody> {
        match self {
            Replay::Buffered(bytes) => Some(RequestBody::replay(bytes.clone())),
            Replay::Recorded(rec) => rec
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .replay()
                .map(RequestBody::replay),
        }
    }
}

/// The request `parts` heads, with `body`.
pub(crate) fn rebuild(parts: &Parts, body: RequestBody) -> Request<RequestBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// A request sent with no retry policy, kept so that it can be sent again if the
/// endpoint refuses it unprocessed, at most [`MAX_REFUSED_RESENDS`] times. Its body
/// is recorded as it streams, up to the retry policy's default limit; one refused
/// before the client finished sending it, or over the limit, cannot be sent again.
pub(crate) struct RefusedResends {
    parts: Parts,
    replay: Option<Replay>,
    resends: u32,
}

impl RefusedResends {
    /// Keeps what it takes to send `req` again; returns that and the request to
    /// send first.
    pub(crate) fn keep(req: BoxedRequest) -> (RefusedResends, BoxedRequest) {
        let (parts, body) = req.into_parts();
        let (first, replay) = match body {
            RequestBody::Streaming { body, in_flight } if !body.is_end_stream() => {
                let recording = Recording::new(crate::retry::DEFAULT_MAX_BODY);
                let first = RequestBody::Recording {
                    body,
                    recording: recording.clone(),
                    in_flight,
                };
                (first, Some(Replay::Recorded(recording)))
            }
            body if body.is_end_stream() => (body, Some(Replay::Buffered(Bytes::new()))),
            // Only a client's body is ever handed in here; anything else is sent once.
            body => (body, None),
        };
        let first = Box::new(rebuild(&parts, first));
        let kept = RefusedResends {
            parts,
            replay,
            resends: 0,
        };
        (kept, first)
    }

    /// The request to send again after the endpoint refused it unprocessed, or
    /// None once the resends are spent or its body cannot be sent again.
    pub(crate) fn again(&mut self) -> Option<BoxedRequest> {
        if self.resends >= MAX_REFUSED_RESENDS {
            return None;
        }
        let body = self.replay.as_ref().and_then(Replay::body)?;
        self.resends += 1;
        Some(Box::new(rebuild(&self.parts, body)))
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn request(body: RequestBody) -> BoxedRequest {
        let mut req = Request::new(body);
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = "/order/7".parse().expect("uri");
        req.headers_mut()
            .insert("x-trace", http::HeaderValue::from_static("abc"));
        Box::new(req)
    }

    #[test]
    fn a_bodiless_request_is_sent_again_twice_with_its_head() {
        let (mut kept, first) = RefusedResends::keep(request(RequestBody::replay(Bytes::new())));
        assert_eq!(first.method(), Method::DELETE);
        for _ in 0..MAX_REFUSED_RESENDS {
            let again = kept.again().expect("sent again");
            assert_eq!(again.method(), Method::DELETE);
            assert_eq!(again.uri(), "/order/7");
            assert_eq!(again.headers()["x-trace"], "abc");
            assert!(again.body().is_end_stream());
        }
        assert!(kept.again().is_none(), "bounded");
    }

    #[test]
    fn a_body_that_is_not_the_clients_is_sent_once() {
        let (mut kept, _) =
            RefusedResends::keep(request(RequestBody::replay(Bytes::from_static(b"copy"))));
        assert!(kept.again().is_none());
    }
}
