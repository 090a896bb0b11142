//! Filters that change a request or response on its way: header changes, a path
//! rewrite, and a redirect the proxy answers itself.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

#[derive(Debug, Default)]
pub(crate) struct HeaderModifier {
    pub(crate) set: Box<[(HeaderName, HeaderValue)]>,
    pub(crate) add: Box<[(HeaderName, HeaderValue)]>,
    pub(crate) remove: Box<[HeaderName]>,
}

impl HeaderModifier {
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
    }
}

#[derive(Debug)]
pub(crate) enum PathRewrite {
    Full(Box<str>),
    /// Replaces the prefix the route matched.
    Prefix(Box<str>),
}

impl PathRewrite {
    /// The new path for `path`, which matched on `matched` (a prefix match's
    /// prefix, when there was one).
    pub(crate) fn path(&self, path: &str, matched: Option<&str>) -> String {
        match self {
            PathRewrite::Full(full) => full.to_string(),
            PathRewrite::Prefix(replacement) => {
                let rest = match matched {
                    Some("/") => path.strip_prefix('/').unwrap_or(path),
                    Some(prefix) => path.strip_prefix(prefix).unwrap_or(path),
                    None => path,
                };
                let rest = rest.strip_prefix('/').unwrap_or(rest);
                let base = replacement.trim_end_matches('/');
                match (base.is_empty(), rest.is_empty()) {
                    (true, _) => format!("/{rest}"),
                    (false, true) => base.to_string(),
                    (false, false) => format!("{base}/{rest}"),
                }
            }
        }
    }

    /// `uri` with its path rewritten, query kept.
    pub(crate) fn apply(&self, uri: &Uri, matched: Option<&str>) -> Option<Uri> {
        let path = self.path(uri.path(), matched);
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
        Uri::from_parts(parts).ok()
    }
}

#[derive(Debug)]
pub(crate) struct Redirect {
    pub(crate) scheme: Option<Scheme>,
    pub(crate) host: Option<Box<str>>,
    pub(crate) port: Option<u16>,
    pub(crate) path: Option<PathRewrite>,
    pub(crate) status: StatusCode,
}

impl Redirect {
    /// The `Location` for a request to `uri` with host `host` (its Host or
    /// authority, port included if it had one).
    pub(crate) fn location(
        &self,
        uri: &Uri,
        host: &str,
        matched: Option<&str>,
    ) -> Option<HeaderValue> {
        let scheme = self
            .scheme
            .clone()
            .or_else(|| uri.scheme().cloned())
            .unwrap_or(Scheme::HTTP);
        let request_authority: Option<Authority> = host.parse().ok();
        let name = match &self.host {
            Some(h) => h.to_string(),
            None => request_authority.as_ref()?.host().to_string(),
        };
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        // A redirect that changes the scheme drops the old port (it belonged to
        // the old scheme), as Gateway API says.
        let port = self.port.or_else(|| {
            if self.scheme.is_some() {
                None
            } else {
                request_authority.as_ref().and_then(Authority::port_u16)
            }
        });
        let authority = match port {
            Some(p) if p != default_port => format!("{name}:{p}"),
            _ => name,
        };
        let path = match &self.path {
            Some(rewrite) => rewrite.path(uri.path(), matched),
            None => uri.path().to_string(),
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        HeaderValue::try_from(format!("{scheme}://{authority}{path}{query}")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_replace_the_matched_segments() {
        let r = PathRewrite::Prefix("/v2".into());
        assert_eq!(r.path("/api/orders", Some("/api")), "/v2/orders");
        assert_eq!(r.path("/api", Some("/api")), "/v2");
        let root = PathRewrite::Prefix("/".into());
        assert_eq!(root.path("/api/orders", Some("/api")), "/orders");
        assert_eq!(root.path("/api", Some("/api")), "/");
        let uri: Uri = "/api/x?q=1".parse().expect("uri");
        let out = r.apply(&uri, Some("/api")).expect("rewritten");
        assert_eq!(out.to_string(), "/v2/x?q=1");
    }

    #[test]
    fn redirects_keep_what_they_do_not_change() {
        let uri: Uri = "/old/a?x=1".parse().expect("uri");
        let to_https = Redirect {
            scheme: Some(Scheme::HTTPS),
            host: None,
            port: None,
            path: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let loc = to_https
            .location(&uri, "shop.example:8080", None)
            .expect("location");
        assert_eq!(loc, "https://shop.example/old/a?x=1");
        let moved = Redirect {
            scheme: None,
            host: Some("new.example".into()),
            port: Some(8443),
            path: Some(PathRewrite::Prefix("/new".into())),
            status: StatusCode::FOUND,
        };
        let loc = moved
            .location(&uri, "shop.example", Some("/old"))
            .expect("location");
        assert_eq!(loc, "http://new.example:8443/new/a?x=1");
    }
}
