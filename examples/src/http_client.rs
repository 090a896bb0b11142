//! The outgoing HTTP client of the REST examples: plain HTTP/1.1 through hyper-util's
//! pooled client, via `http_proxy` when it is set (see [`crate::http_proxy`]).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http_proxy::{ProxyConnector, ProxySettings};

/// How long dialling a destination (or the proxy) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest response body read from a dependency.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Why a request to a dependency produced no response.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("reading the response failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid URL {0:?}")]
    Url(String),
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A cheap-to-clone HTTP client with a per-request deadline.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<ProxyConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client that follows `proxy` and gives each exchange `timeout` to complete.
    pub fn new(proxy: ProxySettings, timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(ProxyConnector::new(http, proxy));
        Self { inner, timeout }
    }

    /// Sends `req` and reads the whole response, all within the client's deadline.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Reply, CallError> {
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(CallError::Request)?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(CallError::Body)?
                .to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)))
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Reply, CallError> {
        let uri: Uri = url.parse().map_err(|_| CallError::Url(url.to_owned()))?;
        let req = Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|_| CallError::Url(url.to_owned()))?;
        self.send(req).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(&self, url: &str, body: Bytes) -> Result<Reply, CallError> {
        self.post_json_traced(url, body, None).await
    }

    /// `POST url` with a JSON body, in the trace `traceparent` (the incoming
    /// request's W3C trace context, passed on so the mesh's spans join up).
    pub async fn post_json_traced(
        &self,
        url: &str,
        body: Bytes,
        traceparent: Option<http::HeaderValue>,
    ) -> Result<Reply, CallError> {
        let uri: Uri = url.parse().map_err(|_| CallError::Url(url.to_owned()))?;
        let mut req = Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|_| CallError::Url(url.to_owned()))?;
        if let Some(tp) = traceparent {
            req.headers_mut().insert(TRACEPARENT, tp);
        }
        self.send(req).await
    }
}

/// The W3C trace context header, which the services pass from each request they
/// serve to the calls it makes.
pub const TRACEPARENT: &str = "traceparent";

/// A validated base URL such as `http://orders:8081` that paths are appended to.
#[derive(Clone, Debug)]
pub struct BaseUrl(String);

impl BaseUrl {
    /// `base + path`, with exactly one `/` between them.
    pub fn join(&self, path: &str) -> String {
        format!("{}/{}", self.0, path.trim_start_matches('/'))
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = s.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!("{s:?} must be an http://host[:port] URL"));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_joins_with_one_slash() {
        let base: BaseUrl = "http://orders:8081/".parse().expect("valid");
        assert_eq!(base.join("/orders/1"), "http://orders:8081/orders/1");
        let base: BaseUrl = "http://users".parse().expect("valid");
        assert_eq!(base.join("users/2"), "http://users/users/2");
    }

    #[test]
    fn base_url_rejects_non_http() {
        assert!("https://orders".parse::<BaseUrl>().is_err());
        assert!("orders:8081".parse::<BaseUrl>().is_err());
        assert!("".parse::<BaseUrl>().is_err());
    }
}
