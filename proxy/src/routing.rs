//! Applies a service's routes to one request: finds the route, answers what the
//! route answers itself (a redirect, a rate-limit refusal, an injected abort),
//! changes the request as its filters say, and names where it goes. Sending it is
//! the caller's (outbound, gateway); this module never touches a connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::gateway_config::GatewayEntry;
use crate::http::body::ProxyBody;
use crate::http::error::{GRPC_STATUS, ProxyError, WEFT_ERROR};
use crate::route::matcher::RequestView;
use crate::snapshot::Service;
use crate::snapshot::routes::Route;

/// `weft-error` on an abort a fault filter injected.
pub(crate) const FAULT_INJECTED: &str = "fault-injected";

pub(crate) enum Routed<'s> {
    /// No route matched: the service handles it as if it had none.
    Unmatched,
    /// The route answered the request itself.
    /// Boxed: the common variant, Forward, stays small.
    Answered(&'s Route, Box<Response<ProxyBody>>),
    /// Send the (already changed) request on.
    Forward {
        route: &'s Route,
        /// The backend service's host name; None: the service itself.
        backend: Option<&'s str>,
        /// An injected delay to wait first.
        delay: Option<Duration>,
    },
}

/// Routes `req`, addressed to `svc`; `grpc` says how to shape answers.
pub(crate) fn route<'s, B>(svc: &'s Service, req: &mut Request<B>, grpc: bool) -> Routed<'s> {
    let host = if svc.routes.by_host() {
        crate::http::authority_of(req).map(|(h, _)| h)
    } else {
        None
    };
    let view = RequestView {
        host,
        method: req.method(),
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
    };
    let Some(matched) = svc.routes.find(&view) else {
        return Routed::Unmatched;
    };
    let route = matched.route;
    if let Some(redirect) = &route.redirect {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or("");
        let Some(location) = redirect.location(req.uri(), host, matched.prefix) else {
            return Routed::Answered(route, Box::new(ProxyError::MalformedRequest.response()));
        };
        route.actions.redirect.inc();
        let mut resp = Response::new(ProxyBody::full(Bytes::new()));
        *resp.status_mut() = redirect.status;
        resp.headers_mut().insert(LOCATION, location);
        return Routed::Answered(route, Box::new(resp));
    }
    if let Some(bucket) = &route.rate_limit
        && let Err(wait) = bucket.take()
    {
        route.actions.rate_limited.inc();
        let mut resp = ProxyError::RateLimited.response();
        // Whole seconds (RFC 9110 §10.2.3), rounded up so a client that waits
        // as told finds a token.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return Routed::Answered(route, Box::new(resp));
    }
    let mut delay = None;
    if let Some(fault) = &route.fault {
        if let Some(status) = fault.abort() {
            route.actions.fault_abort.inc();
            return Routed::Answered(route, Box::new(abort(status, grpc)));
        }
        delay = fault.delay();
        if delay.is_some() {
            route.actions.fault_delay.inc();
        }
    }
    if let Some(m) = &route.request_headers {
        m.apply(req.headers_mut());
    }
    if let Some(rewrite) = &route.rewrite
        && let Some(uri) = rewrite.apply(req.uri(), matched.prefix)
    {
        *req.uri_mut() = uri;
    }
    Routed::Forward {
        route,
        backend: route.pick_backend(),
        delay,
    }
}

/// The service a gateway request goes to, by its host in the host table as it
/// is now; or the gateway's own answer: a redirect to HTTPS, 404 for a host it
/// does not serve.
pub(crate) fn gateway_dest<B>(
    entry: &GatewayEntry,
    req: &Request<B>,
) -> Result<Arc<str>, Box<Response<ProxyBody>>> {
    let Some((host, _)) = crate::http::authority_of(req) else {
        return Err(Box::new(ProxyError::NoAuthority.response()));
    };
    if let Some(port) = entry.redirect_https {
        let authority = match port {
            443 => host.to_string(),
            p => format!("{host}:{p}"),
        };
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let Ok(location) = HeaderValue::try_from(format!("https://{authority}{path}")) else {
            return Err(Box::new(ProxyError::MalformedRequest.response()));
        };
        let mut resp = Response::new(ProxyBody::full(Bytes::new()));
        *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        resp.headers_mut().insert(LOCATION, location);
        return Err(Box::new(resp));
    }
    entry
        .hosts
        .load()
        .service(host)
        .cloned()
        .ok_or_else(|| Box::new(ProxyError::UnknownService.response()))
}

/// An injected abort. A gRPC client gets it in gRPC's form (trailers-only, the
/// status's gRPC code), or it would report a protocol error instead.
fn abort(status: StatusCode, grpc: bool) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(
        b"weft: fault injected by the route\n",
    )));
    if !grpc {
        *resp.status_mut() = status;
    }
    let headers = resp.headers_mut();
    headers.insert(WEFT_ERROR, HeaderValue::from_static(FAULT_INJECTED));
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(GRPC_STATUS, HeaderValue::from(grpc_code(status)));
        headers.insert("grpc-message", HeaderValue::from_static("fault injected"));
    } else {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// gRPC's mapping of HTTP statuses to codes (doc/http-grpc-status-mapping.md).
fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use weft_api::mesh::MeshSpec;

    use super::*;
    use crate::endpoint::Registry;
    use crate::metrics::Metrics;
    use crate::snapshot::{self, Snapshot};

    fn snapshot(routes: &str) -> Snapshot {
        let yaml = format!("services:\n  - name: canary\n  - name: a\n    routes:\n{routes}");
        let mesh = MeshSpec::from_yaml(&yaml, "t").expect("valid mesh");
        snapshot::from_mesh(&mesh, 1, "default", &Metrics::new(), &Registry::default())
            .expect("valid snapshot")
    }

    fn request(method: Method, uri: &str) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = method;
        *req.uri_mut() = uri.parse().expect("uri");
        req.headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("a"));
        req
    }

    #[test]
    fn the_first_matching_route_rewrites_and_names_its_backend() {
        let snap = snapshot(concat!(
            "      - name: posts\n        match: [{method: POST}]\n",
            "      - name: api\n        match: [{path: {prefix: /api}}]\n",
            "        backends: [{service: canary}]\n",
            "        filters: {rewrite: {prefix: /v2}, request_headers: {set: {x-routed: api}}}\n",
        ));
        let svc = snap.by_host("a").expect("a");
        let mut req = request(Method::GET, "/api/orders?x=1");
        match route(svc, &mut req, false) {
            Routed::Forward {
                route,
                backend,
                delay,
            } => {
                assert_eq!(&*route.name, "api");
                assert_eq!(backend, Some("canary.default"));
                assert_eq!(delay, None);
            }
            _ => panic!("expected a forward"),
        }
        assert_eq!(req.uri(), "/v2/orders?x=1");
        assert_eq!(
            req.headers().get("x-routed").map(|v| v.as_bytes()),
            Some(&b"api"[..])
        );
        let mut post = request(Method::POST, "/api");
        assert!(matches!(
            route(svc, &mut post, false),
            Routed::Forward { route, backend: None, .. } if &*route.name == "posts"
        ));
        let mut other = request(Method::GET, "/else");
        assert!(matches!(route(svc, &mut other, false), Routed::Unmatched));
    }

    #[test]
    fn methods_select_their_routes_in_order_standard_or_not() {
        let snap = snapshot(concat!(
            "      - name: purge
        match: [{method: PURGE}]
",
            "      - name: get
        match: [{method: GET}]
",
            "      - name: any
",
            "      - name: post
        match: [{method: POST}]
",
        ));
        let svc = snap.by_host("a").expect("a");
        let purge = Method::from_bytes(b"PURGE").expect("method");
        let lock = Method::from_bytes(b"LOCK").expect("method");
        for (method, want) in [
            (purge, "purge"),
            (lock, "any"),
            (Method::GET, "get"),
            (Method::POST, "any"),
            (Method::DELETE, "any"),
        ] {
            let mut req = request(method.clone(), "/");
            match route(svc, &mut req, false) {
                Routed::Forward { route, .. } => assert_eq!(&*route.name, want, "{method}"),
                _ => panic!("{method}: expected a forward"),
            }
        }
    }

    #[test]
    fn a_route_with_host_names_takes_only_requests_for_them() {
        let snap = snapshot(concat!(
            "      - name: shop
        hostnames: [shop.example, '*.shop.example']
",
            "        backends: [{service: canary}]
",
            "      - name: rest
",
        ));
        let svc = snap.by_host("a").expect("a");
        for (host, want) in [
            (Some("shop.example"), "shop"),
            (Some("Shop.Example:8080"), "shop"),
            (Some("eu.shop.example"), "shop"),
            (Some("a"), "rest"),
            (Some("myshop.example"), "rest"),
            (None, "rest"),
        ] {
            let mut req = request(Method::GET, "/");
            match host {
                Some(h) => {
                    req.headers_mut()
                        .insert(http::header::HOST, HeaderValue::from_str(h).expect("host"));
                }
                None => {
                    req.headers_mut().remove(http::header::HOST);
                }
            }
            match route(svc, &mut req, false) {
                Routed::Forward { route, .. } => assert_eq!(&*route.name, want, "{host:?}"),
                _ => panic!("{host:?}: expected a forward"),
            }
        }
        let mut absolute = request(Method::GET, "http://eu.shop.example/x");
        absolute.headers_mut().insert(
            http::header::HOST,
            HeaderValue::from_static("eu.shop.example"),
        );
        assert!(matches!(
            route(svc, &mut absolute, false),
            Routed::Forward { route, .. } if &*route.name == "shop"
        ));
    }

    #[test]
    fn routes_answer_redirects_aborts_and_rate_limits_themselves() {
        let snap = snapshot(concat!(
            "      - match: [{path: {exact: /old}}]\n",
            "        filters: {redirect: {path: {full: /new}, status: 301}}\n",
            "      - match: [{path: {exact: /broken}}]\n",
            "        filters: {fault: {abort: {status: 418, percent: 100}}}\n",
            "      - match: [{path: {exact: /limited}}]\n",
            "        filters: {rate_limit: {requests: 1, per: 10s}}\n",
        ));
        let svc = snap.by_host("a").expect("a");
        let answer = |uri: &str, grpc: bool| match route(svc, &mut request(Method::GET, uri), grpc)
        {
            Routed::Answered(_, resp) => Some(*resp),
            _ => None,
        };
        let moved = answer("/old?q=1", false).expect("a redirect");
        assert_eq!(moved.status(), 301);
        assert_eq!(
            moved.headers().get(LOCATION).map(|v| v.as_bytes()),
            Some(&b"http://a/new?q=1"[..])
        );
        let aborted = answer("/broken", false).expect("an abort");
        assert_eq!(aborted.status(), 418);
        assert_eq!(
            aborted.headers().get(WEFT_ERROR).map(|v| v.as_bytes()),
            Some(FAULT_INJECTED.as_bytes())
        );
        let grpc = answer("/broken", true).expect("an abort");
        assert_eq!(
            grpc.status(),
            200,
            "gRPC carries its failure in grpc-status"
        );
        assert_eq!(
            grpc.headers().get(GRPC_STATUS).map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        assert!(
            answer("/limited", false).is_none(),
            "the first takes the one token"
        );
        let limited = answer("/limited", false).expect("refused");
        assert_eq!(limited.status(), 429);
        assert_eq!(
            limited.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"10"[..])
        );
    }
}
