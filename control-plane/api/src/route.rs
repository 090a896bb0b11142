//! Routes: a service's ordered rules that match requests and send them to weighted
//! backends (other mesh services) through filters. Written under a service's
//! `routes:` in the mesh YAML, validated here with the field path of any error, and
//! converted to `weft.v1.Route`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mesh::{DurationSpec, MeshError, RetrySpec, TimeoutsSpec};
use crate::v1;

/// The largest backend weight (Gateway API's limit).
pub const MAX_BACKEND_WEIGHT: u32 = 1_000_000;
/// Longest route name: it becomes a metric label value.
const MAX_NAME: usize = 128;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The `route` label in metrics; `route-<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one matching selects the route; none: every request.
    /// The route applies only to requests whose Host (without its port) is one of
    /// these: an exact name, or `*.example.com` for any name under example.com
    /// (not example.com itself). None: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatchSpec>,
    /// None: the service itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendSpec>,
    #[serde(default)]
    pub filters: FiltersSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcMatchSpec>,
}

/// Exactly one of the three.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A header or query parameter by name, with exactly one of `exact` or `regex`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// "name" (the route's service's namespace) or "name.namespace".
    pub service: String,
    #[serde(default = "default_backend_weight")]
    pub weight: u32,
}

fn default_backend_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FiltersSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifierSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<PathRewriteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderModifierSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Exactly one of `full` or `prefix` (the latter replaces a matched path prefix).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathRewriteSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewriteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultDelaySpec {
    pub duration: DurationSpec,
    pub percent: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultAbortSpec {
    pub status: u16,
    pub percent: f64,
}

/// A token bucket: `burst` tokens (default `requests`), refilled at `requests`
/// per `per`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub requests: u32,
    pub per: DurationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Where a route sits, for error paths: `services[i].routes[j]`.
struct At<'a>(&'a str);

impl At<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> MeshError {
        let path = if field.is_empty() {
            self.0.to_string()
        } else {
            format!("{}.{field}", self.0)
        };
        MeshError::Invalid {
            path,
            reason: reason.into(),
        }
    }
}

/// A route name: a metric label value, so short and plain.
pub fn check_route_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid route name {name:?}: use 1-{MAX_NAME} letters, digits, '-', '_' and '.'"
        ))
    }
}

/// An HTTP field name (RFC 9110 token).
pub fn check_header_name(name: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(tchar) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a header name"))
    }
}

/// An HTTP field value: visible ASCII, spaces and tabs, no surrounding whitespace.
pub fn check_header_value(value: &str) -> Result<(), String> {
    let ok = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && value.trim() == value;
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a valid header value"))
    }
}

/// A route host name as Gateway API's `Hostname`: lowercase DNS labels, the
/// first of which may be `*` alone; no IP address, no port.
pub fn check_hostname(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    if host.len() <= 253 && !is_ip && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a host name (lowercase DNS labels, optionally after \"*.\")"
        ))
    }
}

fn check_path(p: &str) -> Result<(), String> {
    if p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?')
    {
        Ok(())
    } else {
        Err(format!(
            "{p:?} must start with '/' and hold no spaces, controls or query"
        ))
    }
}

fn check_regex(re: &str) -> Result<(), String> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| format!("invalid regex {re:?}: {e}"))
}

fn check_percent(p: f64) -> Result<(), String> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("percentage {p} is outside 0..=100"))
    }
}

/// Redirect statuses Gateway API allows, and 303.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The route's backend as (name, namespace), the namespace defaulting to the
/// service's own.
pub fn backend_key<'a>(service: &'a str, own_namespace: &'a str) -> (&'a str, &'a str) {
    service.split_once('.').unwrap_or((service, own_namespace))
}

impl RouteSpec {
    /// The name metrics label this route with.
    pub fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"))
    }

    /// Checks one route of the service at `at` (`services[i].routes[j]`);
    /// `service_exists` answers whether a backend (name, namespace) is in the mesh.
    pub fn validate(
        &self,
        at: &str,
        own_namespace: &str,
        service_exists: &dyn Fn(&str, &str) -> bool,
    ) -> Result<(), MeshError> {
        let at = At(at);
        if let Some(name) = &self.name {
            check_route_name(name).map_err(|e| at.err("name", e))?;
        }
        for (k, h) in self.hostnames.iter().enumerate() {
            check_hostname(h).map_err(|e| at.err(&format!("hostnames[{k}]"), e))?;
        }
        for (k, m) in self.matches.iter().enumerate() {
            m.validate(&At(&format!("{}.match[{k}]", at.0)))?;
        }
        let f = &self.filters;
        if let Some(redirect) = &f.redirect {
            if !self.backends.is_empty() {
                return Err(at.err(
                    "filters.redirect",
                    "a redirect answers the request itself; drop the backends",
                ));
            }
            if f.rewrite.is_some() {
                return Err(at.err(
                    "filters.redirect",
                    "use redirect.path instead of a rewrite beside a redirect",
                ));
            }
            if let Some(scheme) = &redirect.scheme
                && !matches!(scheme.as_str(), "http" | "https")
            {
                return Err(at.err("filters.redirect.scheme", "must be http or https"));
            }
            if let Some(host) = &redirect.host
                && (host.is_empty()
                    || !host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)))
            {
                return Err(at.err(
                    "filters.redirect.host",
                    format!("{host:?} is not a host name"),
                ));
            }
            if redirect.port == Some(0) {
                return Err(at.err("filters.redirect.port", "port 0"));
            }
            if let Some(status) = redirect.status
                && !REDIRECT_STATUSES.contains(&status)
            {
                return Err(at.err(
                    "filters.redirect.status",
                    format!("{status} is not one of {REDIRECT_STATUSES:?}"),
                ));
            }
            if let Some(path) = &redirect.path {
                self.check_rewrite(&at, "filters.redirect.path", path)?;
            }
        }
        if let Some(rewrite) = &f.rewrite {
            self.check_rewrite(&at, "filters.rewrite", rewrite)?;
        }
        for (field, modifier) in [
            ("filters.request_headers", &f.request_headers),
            ("filters.response_headers", &f.response_headers),
        ] {
            if let Some(m) = modifier {
                m.validate(&at, field)?;
            }
        }
        if let Some(fault) = &f.fault {
            if let Some(delay) = &fault.delay {
                check_percent(delay.percent)
                    .map_err(|e| at.err("filters.fault.delay.percent", e))?;
                if delay.duration.0 < Duration::from_millis(1) {
                    return Err(at.err("filters.fault.delay.duration", "under 1ms"));
                }
            }
            if let Some(abort) = &fault.abort {
                check_percent(abort.percent)
                    .map_err(|e| at.err("filters.fault.abort.percent", e))?;
                if !(200..=599).contains(&abort.status) {
                    return Err(at.err(
                        "filters.fault.abort.status",
                        format!("{} is not a final HTTP status", abort.status),
                    ));
                }
            }
        }
        if let Some(rl) = &f.rate_limit {
            if rl.requests == 0 {
                return Err(at.err("filters.rate_limit.requests", "must be at least 1"));
            }
            if rl.per.0 < Duration::from_millis(1) {
                return Err(at.err("filters.rate_limit.per", "under 1ms"));
            }
            if rl.burst == Some(0) {
                return Err(at.err(
                    "filters.rate_limit.burst",
                    "must be at least 1 (leave it out for `requests`)",
                ));
            }
        }
        for (k, b) in self.backends.iter().enumerate() {
            let field = format!("backends[{k}]");
            let (name, ns) = backend_key(&b.service, own_namespace);
            let names_ok = crate::mesh::Name::try_from(name.to_string()).is_ok()
                && crate::mesh::Name::try_from(ns.to_string()).is_ok();
            if !names_ok {
                return Err(at.err(
                    &format!("{field}.service"),
                    format!("{:?} is not \"name\" or \"name.namespace\"", b.service),
                ));
            }
            if !service_exists(name, ns) {
                return Err(at.err(
                    &format!("{field}.service"),
                    format!("no service {name}.{ns} in the mesh"),
                ));
            }
            if b.weight > MAX_BACKEND_WEIGHT {
                return Err(at.err(
                    &format!("{field}.weight"),
                    format!("{} is over {MAX_BACKEND_WEIGHT}", b.weight),
                ));
            }
        }
        if !self.backends.is_empty() && self.backends.iter().all(|b| b.weight == 0) {
            return Err(at.err("backends", "every weight is 0: nothing would be sent"));
        }
        if let Some(retry) = &self.retry {
            crate::mesh::check_retry(&format!("{}.retry", at.0), retry)?;
        }
        if let Some(t) = &self.timeouts {
            crate::mesh::check_timeouts(&format!("{}.timeouts", at.0), t)?;
            // Connections and attempts belong to the backend service's policy.
            for (field, set) in [
                ("per_try", t.per_try.is_some()),
                ("connect", t.connect.is_some()),
                ("idle", t.idle.is_some()),
            ] {
                if set {
                    return Err(at.err(
                        &format!("timeouts.{field}"),
                        "a route sets only its request timeout; the rest is the backend service's",
                    ));
                }
            }
        }
        Ok(())
    }

    /// A prefix rewrite replaces what a prefix match matched, so every match must
    /// be a prefix match.
    fn check_rewrite(
        &self,
        at: &At<'_>,
        field: &str,
        r: &PathRewriteSpec,
    ) -> Result<(), MeshError> {
        match (&r.full, &r.prefix) {
            (Some(p), None) => check_path(p).map_err(|e| at.err(&format!("{field}.full"), e)),
            (None, Some(p)) => {
                check_path(p).map_err(|e| at.err(&format!("{field}.prefix"), e))?;
                let all_prefix = !self.matches.is_empty()
                    && self
                        .matches
                        .iter()
                        .all(|m| m.path.as_ref().is_some_and(|p| p.prefix.is_some()));
                if all_prefix {
                    Ok(())
                } else {
                    Err(at.err(
                        &format!("{field}.prefix"),
                        "a prefix rewrite needs every match to be a path prefix match",
                    ))
                }
            }
            _ => Err(at.err(field, "name exactly one of full or prefix")),
        }
    }

    pub fn to_proto(&self, index: usize) -> v1::Route {
        let f = &self.filters;
        v1::Route {
            name: self.label(index),
            matches: self.matches.iter().map(RouteMatchSpec::to_proto).collect(),
            backends: self
                .backends
                .iter()
                .map(|b| v1::WeightedBackend {
                    service: b.service.clone(),
                    weight: b.weight,
                })
                .collect(),
            filters: Some(v1::RouteFilters {
                request_headers: f.request_headers.as_ref().map(HeaderModifierSpec::to_proto),
                response_headers: f
                    .response_headers
                    .as_ref()
                    .map(HeaderModifierSpec::to_proto),
                rewrite: f.rewrite.as_ref().map(PathRewriteSpec::to_proto),
                redirect: f.redirect.as_ref().map(|r| v1::Redirect {
                    scheme: r.scheme.clone().unwrap_or_default(),
                    host: r.host.clone().unwrap_or_default(),
                    port: r.port.map(u32::from).unwrap_or(0),
                    path: r.path.as_ref().map(PathRewriteSpec::to_proto),
                    status: r.status.map(u32::from).unwrap_or(0),
                }),
                fault: f.fault.as_ref().map(|fault| v1::Fault {
                    delay_ms: fault
                        .delay
                        .as_ref()
                        .map(|d| crate::mesh::millis(Some(d.duration)))
                        .unwrap_or(0),
                    delay_percent: fault.delay.as_ref().map_or(0.0, |d| d.percent),
                    abort_status: fault.abort.as_ref().map_or(0, |a| u32::from(a.status)),
                    abort_percent: fault.abort.as_ref().map_or(0.0, |a| a.percent),
                }),
                rate_limit: f.rate_limit.as_ref().map(|rl| v1::LocalRateLimit {
                    requests: rl.requests,
                    per_ms: crate::mesh::millis(Some(rl.per)),
                    burst: rl.burst.unwrap_or(0),
                }),
            }),
            timeouts: self.timeouts.as_ref().map(TimeoutsSpec::to_proto),
            retry: self.retry.as_ref().map(RetrySpec::to_proto),
            hostnames: self.hostnames.clone(),
        }
    }
}

impl RouteMatchSpec {
    fn validate(&self, at: &At<'_>) -> Result<(), MeshError> {
        if let Some(path) = &self.path {
            if self.grpc.is_some() {
                return Err(at.err(
                    "grpc",
                    "a gRPC match is a path match; name one of path or grpc",
                ));
            }
            match (&path.exact, &path.prefix, &path.regex) {
                (Some(p), None, None) => check_path(p).map_err(|e| at.err("path.exact", e))?,
                (None, Some(p), None) => check_path(p).map_err(|e| at.err("path.prefix", e))?,
                (None, None, Some(re)) => check_regex(re).map_err(|e| at.err("path.regex", e))?,
                _ => return Err(at.err("path", "name exactly one of exact, prefix or regex")),
            }
        }
        if let Some(method) = &self.method
            && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(at.err(
                "method",
                format!("{method:?} is not a method (uppercase letters, e.g. GET)"),
            ));
        }
        for (kind, list) in [("headers", &self.headers), ("query", &self.query)] {
            for (k, v) in list.iter().enumerate() {
                let field = format!("{kind}[{k}]");
                if kind == "headers" {
                    check_header_name(&v.name).map_err(|e| at.err(&format!("{field}.name"), e))?;
                } else if v.name.is_empty() {
                    return Err(at.err(&format!("{field}.name"), "empty parameter name"));
                }
                match (&v.exact, &v.regex) {
                    (Some(_), None) => {}
                    (None, Some(re)) => {
                        check_regex(re).map_err(|e| at.err(&format!("{field}.regex"), e))?
                    }
                    _ => return Err(at.err(&field, "name exactly one of exact or regex")),
                }
            }
        }
        if let Some(g) = &self.grpc {
            let part_ok = |s: &str| !s.is_empty() && !s.contains(['/', ' ', '?']);
            if let Some(s) = &g.service
                && !part_ok(s)
            {
                return Err(at.err("grpc.service", format!("{s:?} is not a gRPC service name")));
            }
            if let Some(m) = &g.method
                && !part_ok(m)
            {
                return Err(at.err("grpc.method", format!("{m:?} is not a gRPC method name")));
            }
            if g.service.is_none() && g.method.is_some() {
                return Err(at.err("grpc.method", "a method needs its service"));
            }
        }
        Ok(())
    }

    fn to_proto(&self) -> v1::RouteMatch {
        use v1::path_match::Kind;
        let value = |v: &ValueMatchSpec| match (&v.exact, &v.regex) {
            (_, Some(re)) => (None, Some(re.clone())),
            (exact, None) => (Some(exact.clone().unwrap_or_default()), None),
        };
        v1::RouteMatch {
            path: self.path.as_ref().map(|p| v1::PathMatch {
                kind: match (&p.exact, &p.prefix, &p.regex) {
                    (Some(e), _, _) => Some(Kind::Exact(e.clone())),
                    (_, Some(pre), _) => Some(Kind::Prefix(pre.clone())),
                    (_, _, Some(re)) => Some(Kind::Regex(re.clone())),
                    _ => None,
                },
            }),
            method: self.method.clone().unwrap_or_default(),
            headers: self
                .headers
                .iter()
                .map(|h| v1::HeaderMatch {
                    name: h.name.clone(),
                    value: match value(h) {
                        (_, Some(re)) => Some(v1::header_match::Value::Regex(re)),
                        (Some(e), None) => Some(v1::header_match::Value::Exact(e)),
                        (None, None) => None,
                    },
                })
                .collect(),
            query: self
                .query
                .iter()
                .map(|q| v1::QueryMatch {
                    name: q.name.clone(),
                    value: match value(q) {
                        (_, Some(re)) => Some(v1::query_match::Value::Regex(re)),
                        (Some(e), None) => Some(v1::query_match::Value::Exact(e)),
                        (None, None) => None,
                    },
                })
                .collect(),
            grpc: self.grpc.as_ref().map(|g| v1::GrpcMethodMatch {
                service: g.service.clone().unwrap_or_default(),
                method: g.method.clone().unwrap_or_default(),
            }),
        }
    }
}

impl HeaderModifierSpec {
    fn validate(&self, at: &At<'_>, field: &str) -> Result<(), MeshError> {
        for (kind, map) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in map {
                check_header_name(name).map_err(|e| at.err(&format!("{field}.{kind}"), e))?;
                check_header_value(value)
                    .map_err(|e| at.err(&format!("{field}.{kind}.{name}"), e))?;
            }
        }
        for (k, name) in self.remove.iter().enumerate() {
            check_header_name(name).map_err(|e| at.err(&format!("{field}.remove[{k}]"), e))?;
        }
        Ok(())
    }

    fn to_proto(&self) -> v1::HeaderModifier {
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(name, value)| v1::HeaderValue {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        v1::HeaderModifier {
            set: pairs(&self.set),
            add: pairs(&self.add),
            remove: self.remove.clone(),
        }
    }
}

impl PathRewriteSpec {
    fn to_proto(&self) -> v1::PathRewrite {
        use v1::path_rewrite::Kind;
        v1::PathRewrite {
            kind: match (&self.full, &self.prefix) {
                (Some(full), _) => Some(Kind::Full(full.clone())),
                (None, Some(prefix)) => Some(Kind::Prefix(prefix.clone())),
                (None, None) => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::mesh::MeshSpec;
    use crate::v1;

    const ROUTED: &str = r#"
services:
  - name: orders-canary
  - name: orders
    routes:
      - name: canary
        match:
          - path: {prefix: /api}
            method: GET
            headers: [{name: x-user, exact: alice}, {name: x-trace, regex: "^[0-9a-f]+$"}]
            query: [{name: debug, exact: "1"}]
          - path: {prefix: /api/v1}
        backends:
          - {service: orders, weight: 95}
          - {service: orders-canary.default, weight: 5}
        filters:
          request_headers: {set: {x-a: b}, add: {x-b: c}, remove: [x-c]}
          rewrite: {prefix: /v2}
          fault: {delay: {duration: 100ms, percent: 10}, abort: {status: 503, percent: 5.5}}
          rate_limit: {requests: 10, per: 1s, burst: 20}
        timeouts: {request: 2s}
        retry: {max_attempts: 2}
      - name: grpc-get
        hostnames: [shop.example, "*.shop.example"]
        match: [{grpc: {service: shop.Orders, method: Get}}]
      - filters:
          redirect: {scheme: https, status: 301}
"#;

    #[test]
    fn routes_parse_and_convert_in_order() {
        let mesh = MeshSpec::from_yaml(ROUTED, "m.yaml").expect("valid routes");
        let update = mesh.find("orders", "default").expect("orders").to_update(3);
        assert_eq!(update.routes.len(), 3);
        let first = &update.routes[0];
        assert_eq!(first.name, "canary");
        assert_eq!(first.matches.len(), 2);
        assert_eq!(
            first.matches[0].path.as_ref().and_then(|p| p.kind.clone()),
            Some(v1::path_match::Kind::Prefix("/api".into()))
        );
        assert_eq!(first.backends[1].weight, 5);
        let filters = first.filters.as_ref().expect("filters");
        let fault = filters.fault.as_ref().expect("fault");
        assert_eq!((fault.delay_ms, fault.abort_status), (100, 503));
        assert_eq!(fault.abort_percent, 5.5);
        let rl = filters.rate_limit.as_ref().expect("rate limit");
        assert_eq!((rl.requests, rl.per_ms, rl.burst), (10, 1000, 20));
        assert_eq!(first.timeouts.map(|t| t.request_ms), Some(2000));
        assert_eq!(
            update.routes[1].matches[0]
                .grpc
                .as_ref()
                .map(|g| g.method.as_str()),
            Some("Get")
        );
        assert_eq!(
            update.routes[1].hostnames,
            ["shop.example", "*.shop.example"]
        );
        assert_eq!(
            update.routes[2].name, "route-2",
            "unnamed routes get their index"
        );
    }

    #[test]
    fn invalid_routes_are_refused_with_their_field_path() {
        let cases = [
            (
                "routes: [{match: [{path: {exact: nope}}]}]",
                "routes[0].match[0].path.exact",
            ),
            (
                "routes: [{match: [{path: {exact: /a, prefix: /b}}]}]",
                "routes[0].match[0].path",
            ),
            (
                "routes: [{match: [{headers: [{name: 'a b', exact: x}]}]}]",
                "routes[0].match[0].headers[0].name",
            ),
            (
                "routes: [{match: [{query: [{name: q, regex: '('}]}]}]",
                "routes[0].match[0].query[0].regex",
            ),
            (
                "routes: [{match: [{method: get}]}]",
                "routes[0].match[0].method",
            ),
            (
                "routes: [{backends: [{service: ghost}]}]",
                "routes[0].backends[0].service",
            ),
            (
                "routes: [{backends: [{service: a, weight: 0}]}]",
                "routes[0].backends",
            ),
            (
                "routes: [{filters: {fault: {abort: {status: 503, percent: 101}}}}]",
                "routes[0].filters.fault.abort.percent",
            ),
            (
                "routes: [{filters: {rewrite: {prefix: /x}}}]",
                "routes[0].filters.rewrite.prefix",
            ),
            (
                "routes: [{filters: {redirect: {status: 200}}}]",
                "routes[0].filters.redirect.status",
            ),
            (
                "routes: [{filters: {rate_limit: {requests: 0, per: 1s}}}]",
                "routes[0].filters.rate_limit.requests",
            ),
            (
                "routes: [{retry: {max_attempts: 0}}]",
                "routes[0].retry.max_attempts",
            ),
            (
                "routes: [{timeouts: {request: 0s}}]",
                "routes[0].timeouts.request",
            ),
            ("routes: [{name: x}, {name: x}]", "routes[1].name"),
            (
                "routes: [{hostnames: [Shop.example]}]",
                "routes[0].hostnames[0]",
            ),
            (
                "routes: [{hostnames: ['a.*.example']}]",
                "routes[0].hostnames[0]",
            ),
            (
                "routes: [{hostnames: ['10.0.0.1']}]",
                "routes[0].hostnames[0]",
            ),
            (
                "routes: [{hostnames: ['shop.example:80']}]",
                "routes[0].hostnames[0]",
            ),
            (
                "routes: [{timeouts: {per_try: 1s}}]",
                "routes[0].timeouts.per_try",
            ),
        ];
        for (routes, path) in cases {
            let text = format!("services:\n  - name: a\n    {routes}\n");
            let msg = MeshSpec::from_yaml(&text, "m.yaml")
                .expect_err(routes)
                .to_string();
            assert!(
                msg.contains(&format!("services[0].{path}")),
                "{routes}: {msg}"
            );
        }
    }
}
