//! Request matching. Everything a match compares is parsed when it is compiled
//! (header names, methods, regexes), so matching is comparisons only: no
//! allocation, no parsing beyond splitting the query string.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;

#[derive(Debug)]
pub(crate) enum PathMatch {
    Exact(Box<str>),
    /// Whole segments; stored without a trailing '/' (except "/" itself).
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Debug)]
pub(crate) enum ValueMatch {
    Exact(Box<[u8]>),
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(want) => **want == *value,
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }
}

/// One match: every condition it names must hold.
#[derive(Debug, Default)]
pub(crate) struct Match {
    pub(crate) path: Option<PathMatch>,
    pub(crate) method: Option<Method>,
    pub(crate) headers: Box<[(HeaderName, ValueMatch)]>,
    /// Query parameters compared as sent (not percent-decoded); the first
    /// occurrence of a name counts.
    pub(crate) query: Box<[(Box<str>, ValueMatch)]>,
}

/// A route's host name (Gateway API `hostnames`): exact, or `*.suffix` for one
/// or more labels before the suffix. Compared without case.
#[derive(Debug)]
pub(crate) enum HostMatch {
    Exact(Box<str>),
    /// The suffix with its leading '.'.
    Wildcard(Box<str>),
}

impl HostMatch {
    pub(crate) fn new(name: &str) -> HostMatch {
        match name.strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.into()),
            None => HostMatch::Exact(name.into()),
        }
    }

    /// `host`: the request's, without its port.
    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want.as_bytes()),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// What a request offers to matching.
pub(crate) struct RequestView<'a> {
    /// Its Host without the port; None when no route names host names (it is
    /// then not looked up) or the request has none.
    pub(crate) host: Option<&'a str>,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap<HeaderValue>,
}

/// A regex that must match the whole value, as Gateway API's RegularExpression.
pub(crate) fn whole_regex(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regex {re:?}: {e}"))
}

/// A prefix as matched: without its trailing '/', so "/api/" and "/api" both
/// match "/api" and "/api/x".
pub(crate) fn normalize_prefix(prefix: &str) -> Box<str> {
    match prefix.trim_end_matches('/') {
        "" => "/".into(),
        p => p.into(),
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => **p == *path,
            PathMatch::Prefix(p) if &**p == "/" => true,
            PathMatch::Prefix(p) => {
                path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path),
        }
    }
}

impl Match {
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        if let Some(p) = &self.path
            && !p.matches(req.path)
        {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, want)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| want.matches(v.as_bytes()))
        });
        if !headers_ok {
            return false;
        }
        self.query.iter().all(|(name, want)| {
            query_value(req.query, name).is_some_and(|v| want.matches(v.as_bytes()))
        })
    }

    /// The prefix this match matched on, for a prefix rewrite.
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}

/// The first value of parameter `name` in a query string.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        RequestView {
            host: None,
            method,
            path,
            query,
            headers,
        }
    }

    #[test]
    fn host_names_match_exactly_or_under_a_wildcard() {
        let exact = HostMatch::new("shop.example");
        let wild = HostMatch::new("*.shop.example");
        for (host, want_exact, want_wild) in [
            ("shop.example", true, false),
            ("SHOP.example.", true, false),
            ("a.shop.example", false, true),
            ("a.b.Shop.Example", false, true),
            ("ashop.example", false, false),
            (".shop.example", false, false),
            ("other.example", false, false),
        ] {
            assert_eq!(exact.matches(host), want_exact, "{host}");
            assert_eq!(wild.matches(host), want_wild, "*. {host}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let m = Match {
            path: Some(PathMatch::Prefix(normalize_prefix("/api/"))),
            ..Match::default()
        };
        let h = HeaderMap::new();
        let get = Method::GET;
        for (path, want) in [
            ("/api", true),
            ("/api/x", true),
            ("/apix", false),
            ("/", false),
        ] {
            assert_eq!(m.matches(&view(&get, path, None, &h)), want, "{path}");
        }
        let root = Match {
            path: Some(PathMatch::Prefix(normalize_prefix("/"))),
            ..Match::default()
        };
        assert!(root.matches(&view(&get, "/anything", None, &h)));
    }

    #[test]
    fn every_condition_must_hold() {
        let m = Match {
            path: Some(PathMatch::Exact("/a".into())),
            method: Some(Method::POST),
            headers: vec![
                (
                    HeaderName::from_static("x-user"),
                    ValueMatch::Exact(b"alice".to_vec().into()),
                ),
                (
                    HeaderName::from_static("x-id"),
                    ValueMatch::Regex(whole_regex("[0-9]+").expect("regex")),
                ),
            ]
            .into(),
            query: vec![("debug".into(), ValueMatch::Exact(b"1".to_vec().into()))].into(),
        };
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.insert("x-id", HeaderValue::from_static("42"));
        let post = Method::POST;
        assert!(m.matches(&view(&post, "/a", Some("x=2&debug=1"), &h)));
        assert!(
            !m.matches(&view(&post, "/a", Some("debug=2&debug=1"), &h)),
            "first occurrence"
        );
        assert!(!m.matches(&view(&Method::GET, "/a", Some("debug=1"), &h)));
        assert!(!m.matches(&view(&post, "/a/", Some("debug=1"), &h)));
        h.insert("x-id", HeaderValue::from_static("42a"));
        assert!(
            !m.matches(&view(&post, "/a", Some("debug=1"), &h)),
            "regex is anchored"
        );
    }
}
