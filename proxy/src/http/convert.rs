//! Converting a request between HTTP versions for an app that speaks only one.
//!
//! A caller may speak HTTP/2 (h2c, or h2 from a peer proxy) to an app port declared
//! to speak HTTP/1.1 only; forwarded as it came, the app would read a connection
//! preface it does not understand and the caller would get 502. Such a request is
//! sent on as HTTP/1.1 (`forward` picks the upstream protocol by the request's
//! version); its response goes back to the caller in the caller's protocol, which
//! hyper's server does whatever the upstream spoke. The other way round, an HTTP/1
//! caller to a port declared HTTP/2 only (h2c) is sent on as HTTP/2.

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Method, Request, Version};

use super::error::is_grpc;
use super::headers::is_upgrade;
use super::orig_proto;

/// Makes an HTTP/1 request an HTTP/2 one, when it can be: not an upgrade
/// (WebSocket, which has its own HTTP/1.1 connection), and with a target HTTP/2
/// can name (`orig_proto::carried_authority`: one Host, no CONNECT or `OPTIONS *`).
/// Hop-by-hop fields go on the way out, as for any HTTP/2 request (`forward`).
pub(crate) fn to_http2<B>(req: &mut Request<B>) {
    if req.version() == Version::HTTP_2 || is_upgrade(req.headers()) {
        return;
    }
    if let Some(authority) = orig_proto::carried_authority(req) {
        orig_proto::as_h2(req, authority);
    }
}

/// Makes an HTTP/2 request an HTTP/1.1 one, when it can be. gRPC needs HTTP/2
/// (trailers, bidirectional streams) and stays as it is, as does CONNECT, which
/// has no HTTP/1.1 form to forward. The authority moves into Host on the way out
/// (`forward`'s origin-form step, RFC 9113 §8.3.1).
pub(crate) fn to_http1<B>(req: &mut Request<B>) {
    if req.version() != Version::HTTP_2 || req.method() == Method::CONNECT || is_grpc(req.headers())
    {
        return;
    }
    *req.version_mut() = Version::HTTP_11;
    join_cookies(req.headers_mut());
}

/// HTTP/2 may split Cookie into one field per pair; HTTP/1.1 carries one field,
/// joined with "; " (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h2(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder()
            .method(method)
            .uri("http://app:8080/a?b=1")
            .version(Version::HTTP_2);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request")
    }

    #[test]
    fn an_http2_request_becomes_http1_with_its_cookies_joined() {
        let mut req = h2(Method::POST, &[("cookie", "a=1"), ("cookie", "b=2")]);
        to_http1(&mut req);
        assert_eq!(req.version(), Version::HTTP_11);
        let cookies: Vec<_> = req.headers().get_all(COOKIE).iter().collect();
        assert_eq!(cookies, [HeaderValue::from_static("a=1; b=2")]);
        assert_eq!(req.uri(), "http://app:8080/a?b=1");
    }

    #[test]
    fn an_http1_request_becomes_http2_unless_it_upgrades_or_has_no_host() {
        let h1 = |host: Option<&str>, upgrade: bool| {
            let mut req = Request::builder().method(Method::POST).uri("/a?b=1");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            if upgrade {
                req = req
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket");
            }
            req.body(()).expect("request")
        };
        let mut req = h1(Some("app:8080"), false);
        to_http2(&mut req);
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "http://app:8080/a?b=1");
        assert_eq!(req.headers()["host"], "app:8080");
        for (host, upgrade) in [
            (None, false),
            (Some("app"), true),
            (Some("bad host"), false),
        ] {
            let mut req = h1(host, upgrade);
            to_http2(&mut req);
            assert_eq!(req.version(), Version::HTTP_11, "{host:?} {upgrade}");
            assert_eq!(req.uri(), "/a?b=1");
        }
    }

    #[test]
    fn grpc_and_connect_stay_http2() {
        let mut grpc = h2(Method::POST, &[("content-type", "application/grpc+proto")]);
        to_http1(&mut grpc);
        assert_eq!(grpc.version(), Version::HTTP_2);
        let mut connect = Request::builder()
            .method(Method::CONNECT)
            .uri("app:443")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        to_http1(&mut connect);
        assert_eq!(connect.version(), Version::HTTP_2);
    }
}
