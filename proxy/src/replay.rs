//! A request kept so that it can be sent again: by a retry, or because an HTTP/2
//! endpoint refused it unprocessed (RFC 9113 §8.7: REFUSED_STREAM, or past a
//! GOAWAY's last stream), which is safe whatever its method.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
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
    head: KeptHead,
    replay: Option<Replay>,
    resends: u32,
}

impl RefusedResends {
    /// Keeps what it takes to send `req` again. The request itself goes first as it
    /// is (its body recorded as it streams): a copy is made only of the head, and a
    /// request is built again only on a refusal.
    pub(crate) fn keep(req: &mut BoxedRequest) -> RefusedResends {
        let head = KeptHead::of(req);
        let replay = if req.body().is_end_stream() {
            Some(Replay::Buffered(Bytes::new()))
        } else {
            let body = std::mem::replace(req.body_mut(), RequestBody::replay(Bytes::new()));
            let (body, replay) = match body {
                RequestBody::Streaming { body, in_flight } => {
                    let recording = Recording::new(crate::retry::DEFAULT_MAX_BODY);
                    let first = RequestBody::Recording {
                        body,
                        recording: recording.clone(),
                        in_flight,
                    };
                    (first, Some(Replay::Recorded(recording)))
                }
                // Only a client's body is ever handed in here; anything else is sent once.
                body => (body, None),
            };
            *req.body_mut() = body;
            replay
        };
        RefusedResends {
            head,
            replay,
            resends: 0,
        }
    }

    /// The request to send again after the endpoint refused it unprocessed, or
    /// None once the resends are spent or its body cannot be sent again.
    pub(crate) fn again(&mut self) -> Option<BoxedRequest> {
        if self.resends >= MAX_REFUSED_RESENDS {
            return None;
        }
        let body = self.replay.as_ref().and_then(Replay::body)?;
        self.resends += 1;
        Some(Box::new(self.head.request(body)))
    }
}

/// A request's head as it came in. Its fields in a list rather than a `HeaderMap`:
/// one allocation where a map's copy takes two, and the map is only built again on
/// a resend.
struct KeptHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl KeptHead {
    fn of<B>(req: &Request<B>) -> KeptHead {
        let mut headers = Vec::with_capacity(req.headers().len());
        headers.extend(req.headers().iter().map(|(n, v)| (n.clone(), v.clone())));
        KeptHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers,
        }
    }

    fn request(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        let headers = req.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_head_sends_the_request_again_as_it_came() {
        let req = Request::post("http://orders:8080/a?b=c")
            .version(Version::HTTP_11)
            .header("x-b", "1")
            .header("host", "orders:8080")
            .header("x-b", "2")
            .header("x-a", "3")
            .body(())
            .expect("request");
        let again = KeptHead::of(&req).request(RequestBody::replay(Bytes::new()));
        assert_eq!(again.method(), Method::POST);
        assert_eq!(again.uri(), req.uri());
        assert_eq!(again.version(), Version::HTTP_11);
        let fields = |h: &http::HeaderMap| {
            h.iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(again.headers()), fields(req.headers()));
        assert_eq!(
            fields(again.headers()),
            ["x-b: 1", "x-b: 2", "host: orders:8080", "x-a: 3"]
        );
    }

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
        let mut first = request(RequestBody::replay(Bytes::new()));
        let mut kept = RefusedResends::keep(&mut first);
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
        let mut first = request(RequestBody::replay(Bytes::from_static(b"copy")));
        let mut kept = RefusedResends::keep(&mut first);
        assert!(kept.again().is_none());
    }
}
