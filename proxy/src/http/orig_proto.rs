//! HTTP/1 requests between two Weft proxies as streams of their shared HTTP/2
//! connection, so a burst of HTTP/1.1 requests to one peer costs streams, not one
//! TLS connection each.
//!
//! The connection says the peer understands it (ALPN `Alpn::H2Orig`), and its
//! version says how a carried HTTP/1 request is told from a native HTTP/2 one,
//! since both share the connection:
//! - `weft.h2-orig/2`: by its missing `:authority`. A carried request keeps its
//!   version, HTTP/1.1, so h2 sends its origin-form target with none, while h2
//!   refuses to send an HTTP/2 request without one (and `forward` gives every
//!   native request one first). Nothing is added to the request.
//! - `weft.h2-orig/1`: by a `weft-orig-proto` field the calling proxy adds and the
//!   peer removes. Still offered and accepted, after /2, so a proxy that knows
//!   only /1 is spoken to, and sees requests, as before /2 existed.
//!
//! The peer's inbound turns a carried request back into the HTTP/1.1 request it
//! would have read from its own connection before the app sees anything; the
//! answer carries back what HTTP/2 has no place for (a reason phrase, an HTTP/1.0
//! status line) in fields of Weft's own, in both versions, which the calling
//! proxy removes: each the first value of its name, so an app's own field of
//! that name crosses as the app sent it and can never pass for one. Fields
//! describing one connection (Connection, Keep-Alive, Transfer-Encoding) are
//! stripped on both paths alike, so body framing and keep-alive are each side's
//! own business, as they are without the upgrade.
//!
//! Per request rather than an ALPN per request kind: one connection carries both
//! kinds. Requests the upgrade cannot carry faithfully (Upgrade, CONNECT,
//! `OPTIONS *`, no Host or more than one) take their own HTTP/1.1 connection as
//! before.

use bytes::Bytes;
use http::header::{Entry, HOST, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::ext::ReasonPhrase;

use crate::identity::H2Orig;

/// On a request (`weft.h2-orig/1` only): it was HTTP/1 before it crossed. On an
/// answer: the app's status line said HTTP/1.0.
pub(crate) const ORIG_PROTO: HeaderName = HeaderName::from_static("weft-orig-proto");
/// On an answer: the app's reason phrase, when it was not the status's usual one
/// (or when the app sent a field of this name itself: `mark_response`).
const ORIG_REASON: HeaderName = HeaderName::from_static("weft-orig-reason");

const HTTP_11: HeaderValue = HeaderValue::from_static("HTTP/1.1");
const HTTP_10: HeaderValue = HeaderValue::from_static("HTTP/1.0");

/// Whether an HTTP/1 request, as the proxy would write it upstream, can cross as a
/// stream and arrive unchanged: one Host, an ordinary target, and no tunnel.
pub(crate) fn carried<B>(req: &Request<B>) -> bool {
    if req.method() == Method::CONNECT || req.uri().path() == "*" {
        return false;
    }
    // A pass over the names finds Host without hashing it; the map's counts say
    // whether any field repeats, and only then is Host looked up for a second one.
    let headers = req.headers();
    headers.keys().any(|name| *name == HOST)
        && (headers.len() == headers.keys_len() || headers.get_all(HOST).iter().nth(1).is_none())
}

/// The authority an HTTP/1 request's HTTP/2 form names (`as_h2`), when it has
/// one: a `carried` request's Host, if that is a valid authority.
pub(crate) fn carried_authority<B>(req: &Request<B>) -> Option<Authority> {
    if !carried(req) {
        return None;
    }
    let host = req.headers().get(HOST)?;
    Authority::try_from(host.as_bytes()).ok()
}

/// Outbound: readies a `carried` origin-form HTTP/1.1 request (hop-by-hop fields
/// already gone) for a connection of `version`, on which it then goes as a
/// stream as it is. Its version stays HTTP/1.1: that is how h2 knows a relative
/// target is an HTTP/1 request forwarded, and sends it with the scheme `http` and
/// no :authority (RFC 9113 §8.3.1: origin-form carries none), which is all /2
/// needs; /1 also marks it. Its Host goes along as a field, so the peer hands it
/// on unchanged; nothing has to parse it on either side.
pub(crate) fn to_h2<B>(req: &mut Request<B>, version: H2Orig) {
    debug_assert!(
        req.uri().authority().is_none(),
        "a carried request is origin-form"
    );
    if version == H2Orig::V1 {
        req.headers_mut().insert(ORIG_PROTO, HTTP_11);
    }
}

/// Outbound: takes back what `to_h2` added for a connection of `version`, for a
/// request that goes on another connection after all.
pub(crate) fn unmark_request<B>(req: &mut Request<B>, version: H2Orig) {
    if version == H2Orig::V1 {
        req.headers_mut().remove(ORIG_PROTO);
    }
}

/// An origin-form HTTP/1 request as the HTTP/2 one for the same target, `authority`
/// (`carried_authority`), for an app that speaks HTTP/2 only: its Host stays.
pub(crate) fn as_h2<B>(req: &mut Request<B>, authority: Authority) {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
}

/// Inbound: whether a request came as a carried HTTP/1 one, from a peer proxy on
/// a connection of `Alpn::H2Orig`'s `version` (None: any other connection); if
/// so it becomes HTTP/1.1 again, origin-form, its Host untouched. A
/// `weft-orig-proto` field is removed whatever the connection: it is never
/// passed to an app.
pub(crate) fn to_h1<B>(req: &mut Request<B>, version: Option<H2Orig>) -> bool {
    match version {
        Some(H2Orig::V2) => {
            // The calling proxy adds no mark on /2, but it passes its client's
            // fields on as they are, and a client may have sent one: it is
            // removed here, where every request to the app passes, for the cost
            // of one pass over the names (no hashing) on a request without one.
            remove_request_mark(req.headers_mut());
            // h2 names no authority only for a request that was HTTP/1.
            if req.uri().authority().is_some() {
                return false;
            }
        }
        Some(H2Orig::V1) => {
            if req.headers_mut().remove(ORIG_PROTO).is_none() {
                return false;
            }
            // Every carried request has one Host (`carried`), in every version
            // of the convention. A mark on one without is an HTTP/2 client's own
            // field, passed on: taken for a mark, it would cost the request its
            // authority, and the app its Host.
            let mut hosts = req.headers().get_all(HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                return false;
            }
            // A carried request crosses without :authority, so it arrives
            // origin-form already; one that named an authority (an older peer's)
            // loses it here.
            if req.uri().authority().is_some() {
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
        }
        None => {
            req.headers_mut().remove(ORIG_PROTO);
            return false;
        }
    }
    *req.version_mut() = Version::HTTP_11;
    true
}

/// Removes a request's `weft-orig-proto` field: no app is handed one, and a
/// calling proxy sends an HTTP/2 client's own on to no peer, since on /1 the peer
/// could not tell it from a mark (a request with one Host, as a carried one has).
pub(crate) fn remove_request_mark(headers: &mut HeaderMap) {
    if headers.keys().any(|k| *k == ORIG_PROTO) {
        headers.remove(ORIG_PROTO);
    }
}

/// Inbound: what the app's HTTP/1 answer said that HTTP/2 cannot, as fields.
///
/// An app's own field of a mark's name crosses too, as it would without the
/// upgrade: the mark then goes first among that name's values, even when it says
/// only what the caller would assume, so the caller takes the first value as
/// Weft's and leaves the rest (`unmark_response`). Nothing the app sends can pass
/// for a mark.
pub(crate) fn mark_response<B>(resp: &mut Response<B>) {
    let proto = (resp.version() == Version::HTTP_10).then_some(HTTP_10);
    let reason = resp
        .extensions()
        .get::<ReasonPhrase>()
        .and_then(|r| HeaderValue::from_bytes(r.as_bytes()).ok());
    let status = resp.status();
    let headers = resp.headers_mut();
    // Most answers carry no field of these names: one pass over the names is
    // cheaper than a hash lookup for each.
    if !has_mark_names(headers) {
        if let Some(proto) = proto {
            headers.insert(ORIG_PROTO, proto);
        }
        if let Some(reason) = reason {
            headers.insert(ORIG_REASON, reason);
        }
        return;
    }
    mark_before_apps(headers, ORIG_PROTO, proto.unwrap_or(HTTP_11), true);
    let usual = status.canonical_reason().unwrap_or("");
    let always = reason.is_some();
    let reason = reason.unwrap_or_else(|| HeaderValue::from_static(usual));
    mark_before_apps(headers, ORIG_REASON, reason, always);
}

/// Puts `ours` first among `name`'s values when the app sent the field too;
/// otherwise only when it is `needed`. The field keeps its place among the others.
fn mark_before_apps(headers: &mut HeaderMap, name: HeaderName, ours: HeaderValue, needed: bool) {
    match headers.entry(name) {
        Entry::Vacant(e) => {
            if needed {
                e.insert(ours);
            }
        }
        // Not `insert_mult`: http 1.5 panics draining three or more values.
        Entry::Occupied(mut e) => {
            let apps: Vec<HeaderValue> = e.iter().cloned().collect();
            e.insert(ours);
            for value in apps {
                e.append(value);
            }
        }
    }
}

fn has_mark_names(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| *k == ORIG_PROTO || *k == ORIG_REASON)
}

/// Outbound: the answer as the client would have had it over HTTP/1: each mark is
/// the first value of its name (`mark_response`); any after it are the app's own
/// and stay where they were.
pub(crate) fn unmark_response<B>(resp: &mut Response<B>) {
    if !has_mark_names(resp.headers()) {
        *resp.version_mut() = Version::HTTP_11;
        return;
    }
    let version = match take_first(resp.headers_mut(), ORIG_PROTO) {
        Some(v) if v == HTTP_10 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    *resp.version_mut() = version;
    if let Some(reason) = take_first(resp.headers_mut(), ORIG_REASON)
        && let Ok(reason) = ReasonPhrase::try_from(Bytes::copy_from_slice(reason.as_bytes()))
    {
        resp.extensions_mut().insert(reason);
    }
}

/// Removes and returns the first of `name`'s values, leaving the rest in place.
fn take_first(headers: &mut HeaderMap, name: HeaderName) -> Option<HeaderValue> {
    let Entry::Occupied(mut e) = headers.entry(name) else {
        return None;
    };
    if e.iter().nth(1).is_none() {
        return Some(e.remove());
    }
    let mut values = e.iter().cloned().collect::<Vec<_>>().into_iter();
    let first = values.next();
    if let Some(next) = values.next() {
        e.insert(next);
    }
    for value in values {
        e.append(value);
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(method: Method, target: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.header("x-b", "2")
            .header("x-a", "1")
            .body(())
            .expect("request")
    }

    /// A carried request as the peer's h2 server hands it on: HTTP/2, and the
    /// target h2 built from its pseudo-fields (no :authority, so origin-form).
    fn arrived<B>(req: &mut Request<B>) {
        *req.version_mut() = Version::HTTP_2;
    }

    #[test]
    fn a_request_crosses_marked_on_v1_and_arrives_as_it_left() {
        let mut req = h1(Method::POST, "/a/b?c=d", Some("Orders.Shop:8080"));
        assert!(carried(&req));
        to_h2(&mut req, H2Orig::V1);
        assert_eq!(
            req.version(),
            Version::HTTP_11,
            "h2 sends it without :authority"
        );
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers().get(&ORIG_PROTO), Some(&HTTP_11));

        arrived(&mut req);
        assert!(to_h1(&mut req, Some(H2Orig::V1)));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert!(req.uri().authority().is_none());
        let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-b", "x-a"], "order kept, mark gone");
        assert_eq!(req.headers()[HOST], "Orders.Shop:8080");
    }

    #[test]
    fn a_request_crosses_unmarked_on_v2_and_arrives_as_it_left() {
        let mut req = h1(Method::POST, "/a/b?c=d", Some("Orders.Shop:8080"));
        let sent = req.headers().clone();
        to_h2(&mut req, H2Orig::V2);
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(*req.headers(), sent, "nothing added");

        arrived(&mut req);
        assert!(to_h1(&mut req, Some(H2Orig::V2)), "no :authority: carried");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.uri(), "/a/b?c=d");
        let names: Vec<_> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "x-b", "x-a"]);
    }

    #[test]
    fn on_v2_an_authority_says_http2_and_a_stray_mark_never_reaches_the_app() {
        // A native HTTP/2 request, marked by a client of the calling proxy.
        let mut native = h1(Method::GET, "http://x:1/a?b", None);
        arrived(&mut native);
        native.headers_mut().insert(ORIG_PROTO, HTTP_11);
        assert!(!to_h1(&mut native, Some(H2Orig::V2)));
        assert_eq!(native.version(), Version::HTTP_2);
        assert_eq!(native.uri(), "http://x:1/a?b");
        assert!(!native.headers().contains_key(ORIG_PROTO));

        // A carried one whose HTTP/1 client sent the field itself.
        let mut carried = h1(Method::GET, "/a", Some("x"));
        carried.headers_mut().insert(ORIG_PROTO, HTTP_10);
        to_h2(&mut carried, H2Orig::V2);
        assert_eq!(
            carried.headers()[&ORIG_PROTO],
            HTTP_10,
            "passed on as it came"
        );
        arrived(&mut carried);
        assert!(to_h1(&mut carried, Some(H2Orig::V2)));
        assert!(!carried.headers().contains_key(ORIG_PROTO));
        assert_eq!(carried.version(), Version::HTTP_11);
    }

    #[test]
    fn on_v1_only_the_mark_says_http1() {
        let mut native = h1(Method::GET, "http://x:1/a?b", None);
        arrived(&mut native);
        assert!(!to_h1(&mut native, Some(H2Orig::V1)));
        assert_eq!(native.version(), Version::HTTP_2);
        assert_eq!(native.uri(), "http://x:1/a?b");
    }

    #[test]
    fn on_v1_a_mark_on_a_request_without_one_host_is_no_mark() {
        for hosts in [&[][..], &["a", "b"]] {
            let mut native = h1(Method::GET, "http://x:1/a?b", None);
            for host in hosts {
                native
                    .headers_mut()
                    .append(HOST, HeaderValue::from_static(host));
            }
            arrived(&mut native);
            native.headers_mut().insert(ORIG_PROTO, HTTP_11);
            assert!(!to_h1(&mut native, Some(H2Orig::V1)), "{hosts:?}");
            assert_eq!(native.version(), Version::HTTP_2);
            assert_eq!(native.uri(), "http://x:1/a?b", "its authority stays");
            assert!(!native.headers().contains_key(ORIG_PROTO));
        }
    }

    #[test]
    fn a_request_taken_back_from_a_stream_goes_as_it_came() {
        for version in [H2Orig::V1, H2Orig::V2] {
            let mut req = h1(Method::GET, "/a", Some("x"));
            let sent = req.headers().clone();
            to_h2(&mut req, version);
            unmark_request(&mut req, version);
            assert_eq!(*req.headers(), sent, "{version:?}");
            assert_eq!(req.version(), Version::HTTP_11);
        }
    }

    #[test]
    fn a_request_an_older_peer_sent_with_an_authority_arrives_origin_form() {
        let mut req = h1(Method::GET, "http://x:1/a?b", Some("x:1"));
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().insert(ORIG_PROTO, HTTP_11);
        assert!(to_h1(&mut req, Some(H2Orig::V1)));
        assert_eq!(req.uri(), "/a?b");
        assert_eq!(req.version(), Version::HTTP_11);
    }

    #[test]
    fn an_untrusted_mark_is_removed_and_ignored() {
        let mut req = h1(Method::GET, "/", Some("x"));
        *req.version_mut() = Version::HTTP_2;
        req.headers_mut().insert(ORIG_PROTO, HTTP_11);
        assert!(!to_h1(&mut req, None));
        assert!(!req.headers().contains_key(ORIG_PROTO));
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(
            !to_h1(&mut req, Some(H2Orig::V1)),
            "no mark, nothing to undo"
        );
    }

    #[test]
    fn tunnels_and_hostless_requests_keep_their_own_connection() {
        assert!(!carried(&h1(Method::CONNECT, "x:443", Some("x:443"))));
        assert!(!carried(&h1(Method::OPTIONS, "*", Some("x"))));
        assert!(!carried(&h1(Method::GET, "/", None)));
        let mut two = h1(Method::GET, "/", Some("a"));
        two.headers_mut()
            .append(HOST, HeaderValue::from_static("b"));
        assert!(!carried(&two));
        assert!(carried_authority(&two).is_none());
    }

    #[test]
    fn a_host_that_is_no_authority_crosses_as_a_field_but_names_none() {
        let req = h1(Method::GET, "/", Some("bad host"));
        assert!(carried(&req), "carried as it is, Host and all");
        assert!(
            carried_authority(&req).is_none(),
            "no HTTP/2 form for an h2c app"
        );
        let ok = h1(Method::GET, "/", Some("Orders.Shop:8080"));
        assert_eq!(
            carried_authority(&ok).map(|a| a.to_string()),
            Some("Orders.Shop:8080".to_string())
        );
    }

    #[test]
    fn the_reason_phrase_and_an_http10_status_line_come_back() {
        let mut resp = Response::new(());
        *resp.version_mut() = Version::HTTP_10;
        resp.extensions_mut()
            .insert(ReasonPhrase::from_static(b"Recorded Fine"));
        mark_response(&mut resp);
        assert_eq!(resp.headers()[&ORIG_REASON], "Recorded Fine");

        let mut crossed = Response::new(());
        *crossed.version_mut() = Version::HTTP_2;
        *crossed.headers_mut() = resp.headers().clone();
        unmark_response(&mut crossed);
        assert_eq!(crossed.version(), Version::HTTP_10);
        assert!(crossed.headers().is_empty());
        let reason = crossed
            .extensions()
            .get::<ReasonPhrase>()
            .expect("a reason");
        assert_eq!(reason.as_bytes(), b"Recorded Fine");
    }

    /// An answer as the app sent it, marked, crossed and unmarked.
    fn cross(resp: &Response<()>) -> Response<()> {
        let mut marked = Response::new(());
        *marked.status_mut() = resp.status();
        *marked.version_mut() = resp.version();
        *marked.headers_mut() = resp.headers().clone();
        if let Some(r) = resp.extensions().get::<ReasonPhrase>() {
            marked.extensions_mut().insert(r.clone());
        }
        mark_response(&mut marked);
        let mut crossed = Response::new(());
        *crossed.version_mut() = Version::HTTP_2;
        *crossed.headers_mut() = marked.headers().clone();
        unmark_response(&mut crossed);
        crossed
    }

    #[test]
    fn an_apps_own_mark_fields_cross_as_sent_and_steer_nothing() {
        let mut resp = Response::new(());
        let h = resp.headers_mut();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append(ORIG_REASON, HeaderValue::from_static("Forged"));
        h.append(ORIG_PROTO, HeaderValue::from_static("HTTP/1.0"));
        h.append(ORIG_REASON, HeaderValue::from_static("Twice"));
        h.append("x-b", HeaderValue::from_static("2"));
        let sent = resp.headers().clone();

        // The usual reason, HTTP/1.1: the app's fields alone decide nothing.
        let crossed = cross(&resp);
        assert_eq!(*crossed.headers(), sent, "values and order as sent");
        assert_eq!(crossed.version(), Version::HTTP_11);
        let reason = crossed.extensions().get::<ReasonPhrase>();
        assert!(reason.is_none_or(|r| r.as_bytes() == b"OK"), "{reason:?}");

        // A reason and a version of the app's own line win over its fields.
        *resp.version_mut() = Version::HTTP_10;
        resp.extensions_mut()
            .insert(ReasonPhrase::from_static(b"Fine Indeed"));
        let crossed = cross(&resp);
        assert_eq!(*crossed.headers(), sent);
        assert_eq!(crossed.version(), Version::HTTP_10);
        let reason = crossed.extensions().get::<ReasonPhrase>().expect("reason");
        assert_eq!(reason.as_bytes(), b"Fine Indeed");

        // Only one of the names sent by the app.
        let mut only = Response::new(());
        only.headers_mut()
            .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.0"));
        let crossed = cross(&only);
        assert_eq!(crossed.headers(), only.headers());
        assert_eq!(crossed.version(), Version::HTTP_11);
    }
}
