//! Hop-by-hop header handling (RFC 9110 §7.6.1): fields that describe one connection
//! must not be forwarded to the next.

use http::header::{CONNECTION, HOST, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const PROXY_AUTHORIZATION: HeaderName = HeaderName::from_static("proxy-authorization");

// Names compared as names, not as strings: a standard name's string is a table
// lookup away, and that lookup ran for every field of every message.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == CONNECTION
        || *name == TE
        || *name == TRANSFER_ENCODING
        || *name == UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
        || *name == PROXY_AUTHORIZATION
}

/// More than one Host field: RFC 9112 §3.2 has a server answer 400, since two
/// parties reading different ones is how requests get smuggled past routing.
pub(crate) fn conflicting_host(headers: &HeaderMap) -> bool {
    // Without a repeated field of any name (most requests), no lookup is needed.
    headers.len() > headers.keys_len() && headers.get_all(HOST).iter().nth(1).is_some()
}

/// Whether the request asks to switch protocols (WebSocket and friends).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    // A pass over the names: cheaper than a hash lookup for the few most carry.
    headers.keys().any(|name| *name == UPGRADE) && connection_has(headers, "upgrade")
}

pub(super) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Removes hop-by-hop fields, keeping the others in order. With `upgrade`, keeps
/// `Connection: upgrade` and `Upgrade`, which the next hop needs to switch
/// protocols too.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these: one pass over the names is cheaper than a
    // hash lookup per hop-by-hop field.
    if !upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Only a Connection that names fields allocates here.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    // "TE: trailers" is how gRPC says it understands trailers; it must survive.
    let te_trailers = headers
        .get(TE)
        .and_then(|te| te.to_str().ok())
        .is_some_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    remove_in_order(headers, |name| {
        if *name == UPGRADE {
            !upgrade
        } else if *name == TE {
            !te_trailers
        } else {
            is_hop_by_hop(name) || named.contains(name)
        }
    });
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the fields `gone` names, the others staying in the order they came
/// (which an app may rely on, and issue 19 asks be kept). `HeaderMap::remove` moves
/// the last field into the removed one's place, so when a kept field follows a
/// removed one the map is built again instead.
fn remove_in_order(headers: &mut HeaderMap, gone: impl Fn(&HeaderName) -> bool) {
    let mut removing = false;
    let moves = headers.keys().any(|name| {
        if gone(name) {
            removing = true;
            false
        } else {
            removing
        }
    });
    if !moves {
        // Nothing kept follows what goes: removing moves only fields that go too.
        while let Some(name) = headers.keys().find(|n| gone(n)).cloned() {
            headers.remove(name);
        }
        return;
    }
    let all = std::mem::replace(headers, HeaderMap::with_capacity(headers.len()));
    let mut current: Option<HeaderName> = None;
    for (name, value) in all {
        // A field's further values come without their name.
        if name.is_some() {
            current = name;
        }
        if let Some(name) = current.as_ref().filter(|n| !gone(n)) {
            headers.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_listed_and_fixed_hop_by_hop_fields() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert(TE, HeaderValue::from_static("gzip, trailers"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get(CONNECTION).is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("proxy-authorization").is_none());
        assert_eq!(h.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.get("x-end-to-end").is_some());
    }

    #[test]
    fn the_fields_that_stay_keep_their_order() {
        let mut h = HeaderMap::new();
        h.append("host", HeaderValue::from_static("orders"));
        h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.append("x-client", HeaderValue::from_static("py"));
        h.append(CONNECTION, HeaderValue::from_static("x-secret"));
        h.append("x-step", HeaderValue::from_static("1"));
        h.append("x-secret", HeaderValue::from_static("s"));
        h.append("x-step", HeaderValue::from_static("2"));
        h.append(TE, HeaderValue::from_static("gzip, trailers"));
        h.append("x-last", HeaderValue::from_static("z"));
        strip_hop_by_hop(&mut h, false);
        let fields: Vec<String> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
            .collect();
        assert_eq!(
            fields,
            [
                "host: orders",
                "x-client: py",
                "x-step: 1",
                "x-step: 2",
                "te: trailers",
                "x-last: z"
            ]
        );
    }

    #[test]
    fn fields_after_the_last_kept_one_go_without_moving_it() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-b", HeaderValue::from_static("2"));
        h.append(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
    }

    #[test]
    fn upgrade_keeps_what_the_next_hop_needs() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            h.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }
}
