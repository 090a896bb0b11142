//! A service's routes as the data path uses them: compiled from `weft.v1.Route`
//! when the snapshot is built (regexes, header names, weights, buckets), so a
//! request costs a walk over the routes' comparisons. Anything that cannot be
//! compiled rejects the whole update.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::{Serialize, Serializer};
use weft_api::v1;

use super::Timeouts;
use super::policy::{retry_from_proto, timeouts_from_proto};
use crate::endpoint::Registry;
use crate::metrics::{Direction, Metrics, RouteActions, ServiceMetrics};
use crate::retry::RetryPolicy;
use crate::route::fault::{Chance, Fault};
use crate::route::filter::{HeaderModifier, PathRewrite, Redirect};
use crate::route::matcher::{
    HostMatch, Match, PathMatch, RequestView, ValueMatch, normalize_prefix, whole_regex,
};
use crate::route::rate_limit::{Limit, TokenBucket};
use crate::route::split::Split;

/// One compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    /// Host names of the backend services; empty: the service itself.
    pub(crate) backends: Box<[Box<str>]>,
    split: Option<Split>,
    pub(crate) request_headers: Option<HeaderModifier>,
    pub(crate) response_headers: Option<HeaderModifier>,
    pub(crate) rewrite: Option<PathRewrite>,
    pub(crate) redirect: Option<Redirect>,
    pub(crate) fault: Option<Fault>,
    /// Shared with earlier snapshots while the route's limit is unchanged.
    pub(crate) rate_limit: Option<Arc<TokenBucket>>,
    /// Replace the backend service's when set.
    pub(crate) timeouts: Option<Timeouts>,
    /// Some(None): this route retries nothing, whatever the service says.
    pub(crate) retry: Option<Option<RetryPolicy>>,
    /// Requests and latency, labelled with the route under its service.
    pub(crate) metrics: Arc<ServiceMetrics>,
    pub(crate) actions: RouteActions,
}

impl Route {
    /// The backend service (a host name) for this request, by weight; None when
    /// the route sends to its own service.
    pub(crate) fn pick_backend(&self) -> Option<&str> {
        let split = self.split.as_ref()?;
        self.backends.get(split.pick()).map(|b| &**b)
    }
}

/// A service's routes, in order; the first that matches a request handles it.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Every route's matches, flattened in route order with the index of their
    /// route: matching walks one small contiguous table, not the routes themselves
    /// (filters, buckets, metrics), so a long list costs few cache lines per route.
    matches: Box<[(usize, Match)]>,
    /// Per request method (by `method_slot`), the indexes into `matches` that
    /// may match it, in order: those naming that method or none (and, for a
    /// method outside the standard ones, those naming one too). A request skips
    /// every match naming another method without reading it.
    by_method: Box<[Box<[u32]>]>,
    /// Each route's host names, by route index; an empty list takes any host.
    hosts: Box<[Box<[HostMatch]>]>,
    /// Whether any route names host names: else a request's host is not read.
    by_host: bool,
    routes: Box<[Route]>,
}

/// Slots of `by_method`: the nine standard methods, then every other one.
const METHOD_SLOTS: usize = 10;
const OTHER_METHOD: usize = METHOD_SLOTS - 1;

fn method_slot(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::HEAD => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => OTHER_METHOD,
    }
}

impl Serialize for Routes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.routes.iter().map(|r| &*r.name))
    }
}

/// A matched route, with the path prefix it matched (for a prefix rewrite).
pub(crate) struct Matched<'r> {
    pub(crate) route: &'r Route,
    pub(crate) prefix: Option<&'r str>,
}

impl Routes {
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether matching needs the request's host ([`RequestView::host`]).
    pub(crate) fn by_host(&self) -> bool {
        self.by_host
    }

    pub(crate) fn find(&self, req: &RequestView<'_>) -> Option<Matched<'_>> {
        let candidates = self.by_method.get(method_slot(req.method))?;
        let (i, m) = candidates.iter().find_map(|&k| {
            let (i, m) = self.matches.get(k as usize)?;
            ((!self.by_host || self.host_ok(*i, req.host)) && m.matches(req)).then_some((i, m))
        })?;
        Some(Matched {
            route: self.routes.get(*i)?,
            prefix: m.prefix(),
        })
    }

    fn host_ok(&self, route: usize, host: Option<&str>) -> bool {
        match self.hosts.get(route) {
            None => true,
            Some(names) if names.is_empty() => true,
            Some(names) => host.is_some_and(|h| names.iter().any(|n| n.matches(h))),
        }
    }

    /// Compiles `raw`, the routes of service `service` ("name.namespace"); rate
    /// limits take their buckets from `stats`.
    pub(crate) fn compile(
        raw: &[v1::Route],
        service: &str,
        metrics: &Metrics,
        stats: &Registry,
    ) -> Result<Routes, String> {
        let namespace = service.split_once('.').map_or("default", |(_, ns)| ns);
        let mut names = std::collections::HashSet::new();
        let mut matches = Vec::new();
        let routes = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let name = if r.name.is_empty() {
                    format!("route-{i}")
                } else {
                    r.name.clone()
                };
                weft_api::route::check_route_name(&name)
                    .map_err(|e| format!("routes[{i}]: {e}"))?;
                if !names.insert(name.clone()) {
                    return Err(format!("routes[{i}]: duplicate route name {name:?}"));
                }
                let (route, route_matches) =
                    compile_route(r, &name, service, namespace, metrics, stats)
                        .map_err(|e| format!("routes[{i}] ({name}): {e}"))?;
                if route_matches.is_empty() {
                    // No match listed: every request.
                    matches.push((i, Match::default()));
                }
                matches.extend(route_matches.into_iter().map(|m| (i, m)));
                Ok(route)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let by_method = (0..METHOD_SLOTS)
            .map(|slot| {
                (0u32..)
                    .zip(matches.iter())
                    .filter(|(_, (_, m)): &(u32, &(usize, Match))| {
                        m.method
                            .as_ref()
                            .is_none_or(|want| method_slot(want) == slot)
                    })
                    .map(|(k, _)| k)
                    .collect()
            })
            .collect();
        let hosts: Box<[Box<[HostMatch]>]> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.hostnames
                    .iter()
                    .map(|h| {
                        weft_api::route::check_hostname(h)
                            .map(|()| HostMatch::new(h))
                            .map_err(|e| format!("routes[{i}].hostnames: {e}"))
                    })
                    .collect()
            })
            .collect::<Result<_, String>>()?;
        Ok(Routes {
            matches: matches.into(),
            by_method,
            by_host: hosts.iter().any(|h| !h.is_empty()),
            hosts,
            routes: routes.into(),
        })
    }
}

fn compile_route(
    r: &v1::Route,
    name: &str,
    service: &str,
    namespace: &str,
    metrics: &Metrics,
    stats: &Registry,
) -> Result<(Route, Vec<Match>), String> {
    let matches = r
        .matches
        .iter()
        .map(compile_match)
        .collect::<Result<Vec<_>, _>>()?;
    let backends: Box<[Box<str>]> = r
        .backends
        .iter()
        .map(|b| {
            let (n, ns) = weft_api::route::backend_key(&b.service, namespace);
            if n.is_empty() || ns.is_empty() {
                return Err(format!("backend {:?} is not a service name", b.service));
            }
            Ok(format!("{n}.{ns}").into_boxed_str())
        })
        .collect::<Result<_, _>>()?;
    let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
    let split = Split::new(&weights);
    if !backends.is_empty() && split.is_none() {
        return Err("every backend weight is 0".into());
    }
    let f = r.filters.clone().unwrap_or_default();
    let rewrite = f.rewrite.as_ref().map(compile_rewrite).transpose()?;
    let redirect = f
        .redirect
        .as_ref()
        .map(|rd| -> Result<Redirect, String> {
            let status = match rd.status {
                0 => StatusCode::FOUND,
                s if weft_api::route::REDIRECT_STATUSES
                    .contains(&u16::try_from(s).unwrap_or(0)) =>
                {
                    StatusCode::from_u16(u16::try_from(s).unwrap_or(302))
                        .map_err(|e| e.to_string())?
                }
                s => return Err(format!("redirect status {s} is not a redirect")),
            };
            let scheme = match rd.scheme.as_str() {
                "" => None,
                "http" => Some(Scheme::HTTP),
                "https" => Some(Scheme::HTTPS),
                other => return Err(format!("redirect scheme {other:?}")),
            };
            let port = match rd.port {
                0 => None,
                p => Some(u16::try_from(p).map_err(|_| format!("redirect port {p}"))?),
            };
            Ok(Redirect {
                scheme,
                host: (!rd.host.is_empty()).then(|| rd.host.clone().into_boxed_str()),
                port,
                path: rd.path.as_ref().map(compile_rewrite).transpose()?,
                status,
            })
        })
        .transpose()?;
    let fault = f
        .fault
        .as_ref()
        .map(|fault| -> Result<Fault, String> {
            let percent = |p: f64| {
                if p.is_finite() && (0.0..=100.0).contains(&p) {
                    Ok(Chance::percent(p))
                } else {
                    Err(format!("fault percentage {p} is outside 0..=100"))
                }
            };
            let delay = (fault.delay_ms > 0)
                .then(|| {
                    Ok::<_, String>((
                        Duration::from_millis(fault.delay_ms),
                        percent(fault.delay_percent)?,
                    ))
                })
                .transpose()?;
            let abort = (fault.abort_status > 0)
                .then(|| {
                    let status = u16::try_from(fault.abort_status)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .ok_or_else(|| format!("abort status {}", fault.abort_status))?;
                    Ok::<_, String>((status, percent(fault.abort_percent)?))
                })
                .transpose()?;
            Ok(Fault { delay, abort })
        })
        .transpose()?;
    let rate_limit = f
        .rate_limit
        .as_ref()
        .map(|rl| {
            if rl.requests == 0 || rl.per_ms == 0 {
                return Err("a rate limit needs requests and per".to_string());
            }
            let burst = if rl.burst == 0 { rl.requests } else { rl.burst };
            let limit = Limit {
                requests: rl.requests,
                per: Duration::from_millis(rl.per_ms),
                burst,
            };
            Ok(stats.bucket(service, name, limit))
        })
        .transpose()?;
    if redirect.is_some() && !backends.is_empty() {
        return Err("a redirect route has no backends".into());
    }
    let route = Route {
        name: Arc::from(name),
        backends,
        split,
        request_headers: f
            .request_headers
            .as_ref()
            .map(compile_headers)
            .transpose()?,
        response_headers: f
            .response_headers
            .as_ref()
            .map(compile_headers)
            .transpose()?,
        rewrite,
        redirect,
        fault,
        rate_limit,
        timeouts: r.timeouts.as_ref().map(timeouts_from_proto),
        retry: r
            .retry
            .as_ref()
            .map(|p| retry_from_proto(Some(p)))
            .transpose()?,
        metrics: metrics.service_route(Direction::Outbound, service, name),
        actions: metrics.route_actions(service, name),
    };
    Ok((route, matches))
}

fn compile_match(m: &v1::RouteMatch) -> Result<Match, String> {
    use v1::path_match::Kind;
    let mut path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(Kind::Exact(p)) => Some(PathMatch::Exact(checked_path(p)?.into())),
        Some(Kind::Prefix(p)) => Some(PathMatch::Prefix(normalize_prefix(checked_path(p)?))),
        Some(Kind::Regex(re)) => Some(PathMatch::Regex(whole_regex(re)?)),
    };
    if let Some(g) = &m.grpc {
        if path.is_some() {
            return Err("a match names both a path and a gRPC method".into());
        }
        path = match (g.service.as_str(), g.method.as_str()) {
            ("", "") => None,
            ("", _) => return Err("a gRPC method needs its service".into()),
            (svc, "") => Some(PathMatch::Prefix(checked_path(&format!("/{svc}"))?.into())),
            (svc, method) => Some(PathMatch::Exact(
                checked_path(&format!("/{svc}/{method}"))?.into(),
            )),
        };
    }
    let method = match m.method.as_str() {
        "" => None,
        name => {
            Some(Method::from_bytes(name.as_bytes()).map_err(|_| format!("bad method {name:?}"))?)
        }
    };
    let headers = m
        .headers
        .iter()
        .map(|h| {
            use v1::header_match::Value;
            let name = header_name(&h.name)?;
            let want = match &h.value {
                Some(Value::Exact(v)) => ValueMatch::Exact(v.as_bytes().into()),
                Some(Value::Regex(re)) => ValueMatch::Regex(whole_regex(re)?),
                None => return Err(format!("header match {:?} has no value", h.name)),
            };
            Ok((name, want))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let query = m
        .query
        .iter()
        .map(|q| {
            use v1::query_match::Value;
            if q.name.is_empty() {
                return Err("a query match needs a name".to_string());
            }
            let want = match &q.value {
                Some(Value::Exact(v)) => ValueMatch::Exact(v.as_bytes().into()),
                Some(Value::Regex(re)) => ValueMatch::Regex(whole_regex(re)?),
                None => return Err(format!("query match {:?} has no value", q.name)),
            };
            Ok((q.name.clone().into_boxed_str(), want))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Match {
        path,
        method,
        headers: headers.into(),
        query: query.into(),
    })
}

fn checked_path(p: &str) -> Result<&str, String> {
    if p.starts_with('/')
        && !p
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?')
    {
        Ok(p)
    } else {
        Err(format!(
            "path {p:?} must start with '/' and hold no spaces or query"
        ))
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

fn compile_headers(m: &v1::HeaderModifier) -> Result<HeaderModifier, String> {
    let pairs = |list: &[v1::HeaderValue]| {
        list.iter()
            .map(|h| {
                let value = HeaderValue::from_str(&h.value)
                    .map_err(|_| format!("header {:?}: invalid value {:?}", h.name, h.value))?;
                Ok((header_name(&h.name)?, value))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(HeaderModifier {
        set: pairs(&m.set)?.into(),
        add: pairs(&m.add)?.into(),
        remove: m
            .remove
            .iter()
            .map(|n| header_name(n))
            .collect::<Result<Vec<_>, _>>()?
            .into(),
    })
}

fn compile_rewrite(r: &v1::PathRewrite) -> Result<PathRewrite, String> {
    use v1::path_rewrite::Kind;
    match &r.kind {
        Some(Kind::Full(p)) => Ok(PathRewrite::Full(checked_path(p)?.into())),
        Some(Kind::Prefix(p)) => Ok(PathRewrite::Prefix(checked_path(p)?.into())),
        None => Err("a path rewrite names neither full nor prefix".into()),
    }
}
