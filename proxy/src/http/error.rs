//! Answers the proxy gives itself. Every one carries a `weft-error` header naming the
//! reason in words an operator can grep for, and a short text body.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

pub const WEFT_ERROR: &str = "weft-error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
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
    /// The request did not complete within the service's request timeout.
    Timeout,
    /// Too many connections or requests; answered at once instead of queueing.
    Overloaded,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::UnknownService => StatusCode::NOT_FOUND,
            ProxyError::NoAuthority => StatusCode::BAD_REQUEST,
            ProxyError::NoEndpoints | ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectRefused | ProxyError::UpstreamReset => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout | ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::UnknownService => "unknown-service",
            ProxyError::NoAuthority => "no-authority",
            ProxyError::NoEndpoints => "no-endpoints",
            ProxyError::ConnectRefused => "connect-refused",
            ProxyError::ConnectTimeout => "connect-timeout",
            ProxyError::UpstreamReset => "upstream-reset",
            ProxyError::Timeout => "timeout",
            ProxyError::Overloaded => "overloaded",
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
            ProxyError::Timeout => "weft: the request timed out\n",
            ProxyError::Overloaded => "weft: over the concurrency limit\n",
        }
    }

    pub fn response(self) -> Response<ProxyBody> {
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
}
