//! Answers the proxy gives itself. Every one carries a `weft-error` header naming the
//! reason in words an operator can grep for, and a short text body.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

pub(crate) const WEFT_ERROR: &str = "weft-error";
/// A parsed name: looking a header up by `&str` parses the name on every call, and
/// the outbound path reads this one from every response.
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No service in the snapshot matches the request's destination.
    UnknownService,
    /// The request names no destination at all (no Host, no authority).
    NoAuthority,
    /// The service exists but has no ready endpoint.
    NoEndpoints,
    ConnectRefused,
    ConnectTimeout,
    /// The upstream closed or reset the connection before a full response.
    UpstreamReset,
    /// The upstream refused the request without processing it (HTTP/2
    /// REFUSED_STREAM, or past its GOAWAY's last stream): safe to send again.
    Refused,
    /// The request did not complete within the service's request timeout.
    Timeout,
    /// Too many connections or requests; answered at once instead of queueing.
    Overloaded,
    /// The mTLS handshake with the endpoint failed (untrusted or wrong identity).
    TlsFailed,
    /// Inbound authorization refused the caller.
    Forbidden,
    /// The client's request body broke its own framing (a bad chunk size, a bare
    /// LF): the client's fault, never the endpoint's.
    BadRequestBody,
    /// The client went away before its request body was whole.
    ClientAbort,
    /// A request no server may accept as it is (two Host fields, RFC 9112 §3.2).
    MalformedRequest,
    /// A route's local rate limit refused the request (with `Retry-After`).
    RateLimited,
}

impl ProxyError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ProxyError::UnknownService => StatusCode::NOT_FOUND,
            ProxyError::NoAuthority
            | ProxyError::BadRequestBody
            | ProxyError::ClientAbort
            | ProxyError::MalformedRequest => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints | ProxyError::Overloaded | ProxyError::Refused => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::ConnectRefused | ProxyError::UpstreamReset | ProxyError::TlsFailed => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ConnectTimeout | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            ProxyError::UnknownService => "unknown-service",
            ProxyError::NoAuthority => "no-authority",
            ProxyError::NoEndpoints => "no-endpoints",
            ProxyError::ConnectRefused => "connect-refused",
            ProxyError::ConnectTimeout => "connect-timeout",
            ProxyError::UpstreamReset => "upstream-reset",
            ProxyError::Refused => "upstream-refused",
            ProxyError::Timeout => "timeout",
            ProxyError::Overloaded => "overloaded",
            ProxyError::TlsFailed => "tls-failed",
            ProxyError::Forbidden => "forbidden",
            ProxyError::BadRequestBody => "bad-request-body",
            ProxyError::ClientAbort => "client-abort",
            ProxyError::MalformedRequest => "malformed-request",
            ProxyError::RateLimited => "rate-limited",
        }
    }

    pub(crate) fn from_reason(reason: &str) -> Option<ProxyError> {
        [
            ProxyError::UnknownService,
            ProxyError::NoAuthority,
            ProxyError::NoEndpoints,
            ProxyError::ConnectRefused,
            ProxyError::ConnectTimeout,
            ProxyError::UpstreamReset,
            ProxyError::Refused,
            ProxyError::Timeout,
            ProxyError::Overloaded,
            ProxyError::TlsFailed,
            ProxyError::Forbidden,
            ProxyError::BadRequestBody,
            ProxyError::ClientAbort,
            ProxyError::MalformedRequest,
            ProxyError::RateLimited,
        ]
        .into_iter()
        .find(|e| e.reason() == reason)
    }

    /// The gRPC status code for this error: gRPC's own mapping of the HTTP status
    /// (404 UNIMPLEMENTED, 400 INTERNAL, 502/503/504 UNAVAILABLE, which clients may
    /// retry), except a request timeout, which is DEADLINE_EXCEEDED.
    pub(crate) fn grpc_status(self) -> u16 {
        match self {
            ProxyError::UnknownService => 12,
            ProxyError::NoAuthority
            | ProxyError::BadRequestBody
            | ProxyError::ClientAbort
            | ProxyError::MalformedRequest => 13,
            ProxyError::Timeout => 4,
            ProxyError::NoEndpoints
            | ProxyError::ConnectRefused
            | ProxyError::ConnectTimeout
            | ProxyError::UpstreamReset
            | ProxyError::Refused
            | ProxyError::TlsFailed
            | ProxyError::Overloaded => 14,
            ProxyError::Forbidden => 7,
            ProxyError::RateLimited => 8,
        }
    }

    fn text(self) -> &'static str {
        match self {
            ProxyError::UnknownService => "weft: no service in the mesh matches this destination\n",
            ProxyError::NoAuthority => {
                "weft: the request names no destination (Host or authority)\n"
            }
            ProxyError::NoEndpoints => "weft: the service has no ready endpoints\n",
            ProxyError::ConnectRefused => "weft: the upstream refused the connection\n",
            ProxyError::ConnectTimeout => "weft: connecting to the upstream timed out\n",
            ProxyError::UpstreamReset => {
                "weft: the upstream closed the connection before responding\n"
            }
            ProxyError::Refused => "weft: the upstream refused the request unprocessed\n",
            ProxyError::Timeout => "weft: the request timed out\n",
            ProxyError::Overloaded => "weft: over the concurrency limit\n",
            ProxyError::TlsFailed => "weft: the mTLS handshake with the upstream failed\n",
            ProxyError::Forbidden => "weft: the caller is not allowed by this workload's policy\n",
            ProxyError::BadRequestBody => "weft: the request body is malformed\n",
            ProxyError::ClientAbort => "weft: the client closed before sending the whole request\n",
            ProxyError::MalformedRequest => "weft: the request has more than one Host field\n",
            ProxyError::RateLimited => "weft: over the route's rate limit\n",
        }
    }

    pub(crate) fn response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::full(Bytes::from_static(self.text().as_bytes())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(WEFT_ERROR, HeaderValue::from_static(self.reason()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }

    /// The error as a gRPC client understands it: a trailers-only response (HTTP
    /// 200, `grpc-status`, `grpc-message`). A gRPC client given a text body instead
    /// tries to decode it as a message and reports a protocol error (INTERNAL).
    pub(crate) fn grpc_response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::full(Bytes::new()));
        let headers = resp.headers_mut();
        headers.insert(WEFT_ERROR, HeaderValue::from_static(self.reason()));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, HeaderValue::from(self.grpc_status()));
        // The texts are printable ASCII without '%', so they need no percent-encoding.
        if let Ok(message) = HeaderValue::from_str(self.text().trim_end()) {
            headers.insert("grpc-message", message);
        }
        resp
    }
}

/// Whether a request is gRPC (by its content type).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether `for_client` may change `resp`: only a failed answer to a gRPC call. A
/// caller on the hot path asks first, so an answer passed through unchanged is not
/// moved through the call.
pub(crate) fn changed_for_client(grpc: bool, resp: &Response<ProxyBody>) -> bool {
    grpc && !resp.status().is_success()
}

/// For a gRPC request: turns an error the proxy answered itself into gRPC's form.
/// Call it after metrics are recorded, so they keep the error's HTTP status class.
pub(crate) fn for_client(grpc: bool, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if !changed_for_client(grpc, &resp) {
        return resp;
    }
    match resp
        .headers()
        .get(WEFT_ERROR)
        .and_then(|v| v.to_str().ok())
        .and_then(ProxyError::from_reason)
    {
        Some(err) => err.grpc_response(),
        None => resp,
    }
}

/// The client's request body failed while it was being sent: kept apart from the
/// upstream's own errors, so the client's fault is not blamed on the endpoint.
#[derive(Debug)]
pub(crate) struct ClientBodyError(pub(crate) Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {}

impl ClientBodyError {
    /// The answer the client gets: it left (hyper saw the message end early), or it
    /// broke its body's framing.
    pub(crate) fn proxy_error(&self) -> ProxyError {
        match self.0.downcast_ref::<hyper::Error>() {
            Some(e) if e.is_incomplete_message() || e.is_canceled() => ProxyError::ClientAbort,
            _ => ProxyError::BadRequestBody,
        }
    }

    /// The client's fault inside an upstream I/O error, if that is what it is.
    pub(crate) fn within(e: &std::io::Error) -> Option<&ClientBodyError> {
        e.get_ref()?.downcast_ref::<ClientBodyError>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_clients_get_trailers_only_errors_with_readable_messages() {
        let resp = for_client(true, ProxyError::NoEndpoints.response());
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h.get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]));
        assert_eq!(
            h.get(WEFT_ERROR).map(|v| v.as_bytes()),
            Some(&b"no-endpoints"[..])
        );
        assert_eq!(
            h.get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
        for reason in [
            "unknown-service",
            "no-authority",
            "no-endpoints",
            "connect-refused",
            "connect-timeout",
            "upstream-reset",
            "upstream-refused",
            "timeout",
            "overloaded",
        ] {
            let err = ProxyError::from_reason(reason).expect("known reason");
            let text = err.text().trim_end();
            assert!(
                text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'%'),
                "{reason}: grpc-message would need percent-encoding"
            );
            assert!(err.grpc_response().headers().contains_key("grpc-message"));
        }
    }

    #[test]
    fn other_clients_and_upstream_answers_pass_unchanged() {
        let resp = for_client(false, ProxyError::Timeout.response());
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        let upstream = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(ProxyBody::full(Bytes::new()))
            .expect("response");
        assert_eq!(
            for_client(true, upstream).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
