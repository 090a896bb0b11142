//! Gateway API routes (`HTTPRoute`, `GRPCRoute`, v1) whose parentRef is a Service
//! (the mesh, GAMMA): each becomes routes of that mesh service, and each gets the
//! status a Gateway API controller writes, per parent: `Accepted` and
//! `ResolvedRefs`. Pure, like the rest of the translation.
//!
//! Rules:
//! - Every rule of a route is one Weft route named `<route>.<rule index>` (with the
//!   route's namespace in front when it is not the Service's). Rules are ordered by
//!   Gateway API precedence of their most specific match: an exact path before a
//!   prefix, a longer prefix before a shorter, then more header and query matches,
//!   then the older route, then its name.
//! - Backends must be Services in the route's namespace (no ReferenceGrant support);
//!   one that is missing or elsewhere sets `ResolvedRefs=False` and takes no
//!   requests; a rule left with no backend answers 500, as the spec asks.
//! - Filters: request and response header changes, redirects and URL rewrites of
//!   the path. Anything else (mirrors, extension refs, host rewrites) makes the route
//!   `Accepted=False` with reason `UnsupportedValue`, and none of it is applied.
//! - A parentRef to a Gateway of Weft's class (its GatewayClass names
//!   `weft.io/gateway-controller`) attaches the rules to the Service of the same
//!   name and namespace (the Service in front of the gateway's pods, to which the
//!   gateway's `hosts:` send), ending with a catch-all answering 404: Gateway API's
//!   answer for a request no route matches, and no request loops back to the
//!   gateway. A Gateway that does not exist, or has no such Service, is
//!   `Accepted=False` with `NoMatchingParent`; another class's Gateway is not
//!   Weft's, and gets no status from it. Listeners (`sectionName`, `port`,
//!   `allowedRoutes`) are not checked.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use kube::api::DynamicObject;
use serde::Deserialize;
use serde_json::{Value, json};
use weft_api::mesh::{DurationSpec, ServiceSpec, TimeoutsSpec};
use weft_api::route::{
    BackendSpec, FaultAbortSpec, FaultSpec, FiltersSpec, GrpcMatchSpec, HeaderModifierSpec,
    PathMatchSpec, PathRewriteSpec, RedirectSpec, RouteMatchSpec, RouteSpec, ValueMatchSpec,
};

use super::translate::ObjectKey;

pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `controllerName` Weft writes route status under.
pub const CONTROLLER_NAME: &str = "weft.io/gateway-controller";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// What Weft says about one route: the parents it handles, each with its conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStatus {
    pub kind: RouteKind,
    pub object: ObjectKey,
    pub generation: i64,
    /// `status.parents` entries for this controller.
    pub parents: Vec<Value>,
    /// The route's current `status.parents` entries of other controllers, kept.
    pub others: Vec<Value>,
}

impl RouteStatus {
    /// The merge patch that sets this status.
    pub fn patch(&self) -> Value {
        let mut parents = self.others.clone();
        parents.extend(self.parents.iter().cloned());
        json!({ "status": { "parents": parents } })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    parent_refs: Vec<ParentRef>,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl ParentRef {
    /// A Service (core group) is a mesh parent.
    fn is_service(&self) -> bool {
        self.kind.as_deref() == Some("Service")
            && matches!(self.group.as_deref(), None | Some("") | Some("core"))
    }

    /// A Gateway: the kind and group a parentRef defaults to.
    fn is_gateway(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("Gateway"))
            && matches!(self.group.as_deref(), None | Some(GROUP))
    }
}

/// The cluster's Gateways by (namespace, name): whether each is of Weft's class.
#[derive(Debug, Default)]
pub struct Gateways {
    weft: HashSet<(String, String)>,
    others: HashSet<(String, String)>,
}

impl Gateways {
    /// From the Gateway and GatewayClass objects.
    pub fn of(gateways: &[Arc<DynamicObject>], classes: &[Arc<DynamicObject>]) -> Gateways {
        let weft_classes: HashSet<&str> = classes
            .iter()
            .filter(|c| {
                c.data
                    .pointer("/spec/controllerName")
                    .and_then(Value::as_str)
                    == Some(CONTROLLER_NAME)
            })
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let mut out = Gateways::default();
        for g in gateways {
            let key = (
                g.metadata.namespace.clone().unwrap_or_default(),
                g.metadata.name.clone().unwrap_or_default(),
            );
            let class = g
                .data
                .pointer("/spec/gatewayClassName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if weft_classes.contains(class) {
                out.weft.insert(key);
            } else {
                out.others.insert(key);
            }
        }
        out
    }

    fn is_others(&self, namespace: &str, name: &str) -> bool {
        self.others
            .contains(&(namespace.to_string(), name.to_string()))
    }

    fn is_weft(&self, namespace: &str, name: &str) -> bool {
        self.weft
            .contains(&(namespace.to_string(), name.to_string()))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    matches: Vec<Value>,
    #[serde(default)]
    filters: Vec<Value>,
    #[serde(default)]
    backend_refs: Vec<BackendRef>,
    #[serde(default)]
    timeouts: Option<RuleTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackendRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RuleTimeouts {
    #[serde(default)]
    request: Option<String>,
}

/// Routes per mesh service (name, namespace): (precedence, age order, route).
type Attached = BTreeMap<(String, String), Vec<(Precedence, usize, RouteSpec)>>;

/// Why a condition is False: (reason, message).
type Refusal = (&'static str, String);

/// Routes of every route object whose parent is a Service in `services` or one of
/// Weft's `gateways`, attached to its Service, and the status of every such
/// object. `objects` are (kind, object).
pub fn attach(
    objects: &[(RouteKind, Arc<DynamicObject>)],
    gateways: &Gateways,
    services: &mut [ServiceSpec],
) -> Vec<RouteStatus> {
    let mut sorted: Vec<&(RouteKind, Arc<DynamicObject>)> = objects.iter().collect();
    sorted.sort_by(|a, b| {
        let (a, b) = (&a.1.metadata, &b.1.metadata);
        (&a.creation_timestamp, &a.namespace, &a.name).cmp(&(
            &b.creation_timestamp,
            &b.namespace,
            &b.name,
        ))
    });
    // Per mesh service: (precedence, age order, route).
    let mut attached: Attached = BTreeMap::new();
    let mut statuses = Vec::new();
    // Gateways' Services that got routes: each ends with the catch-all.
    let mut gateway_services = BTreeSet::new();
    for (age, (kind, object)) in sorted.into_iter().enumerate() {
        let key = ObjectKey {
            kind: kind.kind(),
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
        };
        let spec: Result<Spec, String> = object
            .data
            .get("spec")
            .cloned()
            .map_or(Err("no spec".to_string()), |s| {
                serde_json::from_value(s).map_err(|e| format!("spec: {e}"))
            });
        let parents: Vec<ParentRef> = match &spec {
            Ok(spec) => spec
                .parent_refs
                .iter()
                .filter(|p| {
                    let ns = p.namespace.as_deref().unwrap_or(&key.namespace);
                    p.is_service() || (p.is_gateway() && !gateways.is_others(ns, &p.name))
                })
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        if parents.is_empty() {
            continue;
        }
        let converted = spec.and_then(|spec| {
            spec.rules
                .iter()
                .enumerate()
                .map(|(i, rule)| convert_rule(*kind, rule, i, &key, &spec.hostnames, services))
                .collect::<Result<Vec<_>, String>>()
        });
        let mut parent_status = Vec::new();
        for parent in &parents {
            let ns = parent
                .namespace
                .clone()
                .unwrap_or_else(|| key.namespace.clone());
            let service_exists = services
                .iter()
                .any(|s| s.name.as_str() == parent.name && s.namespace.as_str() == ns);
            let gateway = parent.is_gateway();
            let exists = match (gateway, service_exists) {
                (true, _) if !gateways.is_weft(&ns, &parent.name) => Err((
                    "NoMatchingParent",
                    format!("no Gateway {ns}/{}", parent.name),
                )),
                (true, false) => Err((
                    "NoMatchingParent",
                    format!(
                        "no Service {ns}/{} in front of the Gateway's pods (its hosts route to it)",
                        parent.name
                    ),
                )),
                (false, false) => Err((
                    "NoMatchingParent",
                    format!("no Service {ns}/{} in the mesh", parent.name),
                )),
                (_, true) => Ok(()),
            };
            let (accepted, resolved): (Result<(), Refusal>, Result<(), Refusal>) =
                match (&converted, exists) {
                    (_, Err(refusal)) => (Err(refusal), Ok(())),
                    (Err(e), Ok(())) => (Err(("UnsupportedValue", e.clone())), Ok(())),
                    (Ok(rules), Ok(())) => {
                        let unresolved = rules.iter().find_map(|r| r.unresolved.clone());
                        (Ok(()), unresolved.map_or(Ok(()), Err))
                    }
                };
            if let (Ok(rules), Ok(())) = (&converted, &accepted) {
                let route_label = |i: usize| {
                    if ns == key.namespace {
                        format!("{}.{i}", key.name)
                    } else {
                        format!("{}.{}.{i}", key.namespace, key.name)
                    }
                };
                if gateway {
                    gateway_services.insert((parent.name.clone(), ns.clone()));
                }
                let entry = attached
                    .entry((parent.name.clone(), ns.clone()))
                    .or_default();
                for (i, rule) in rules.iter().enumerate() {
                    let mut route = rule.route.clone();
                    route.name = Some(route_label(i));
                    entry.push((rule.precedence.clone(), age, route));
                }
            }
            parent_status.push(parent_entry(
                parent,
                object.metadata.generation,
                accepted,
                resolved,
            ));
        }
        let others = object
            .data
            .get("status")
            .and_then(|s| s.get("parents"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|p| {
                        p.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER_NAME)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        statuses.push(RouteStatus {
            kind: *kind,
            object: key,
            generation: object.metadata.generation.unwrap_or(0),
            parents: parent_status,
            others,
        });
    }
    for ((name, ns), mut routes) in attached {
        routes.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let catch_all = gateway_services
            .contains(&(name.clone(), ns.clone()))
            .then(|| no_route(&name));
        if let Some(svc) = services
            .iter_mut()
            .find(|s| s.name.as_str() == name && s.namespace.as_str() == ns)
        {
            svc.routes = routes
                .into_iter()
                .map(|(_, _, r)| r)
                .chain(catch_all)
                .collect();
        }
    }
    statuses
}

/// The last route of a Gateway's Service: 404 for what no route matched.
fn no_route(gateway: &str) -> RouteSpec {
    RouteSpec {
        name: Some(format!("{gateway}.no-route")),
        filters: FiltersSpec {
            fault: Some(FaultSpec {
                delay: None,
                abort: Some(FaultAbortSpec {
                    status: 404,
                    percent: 100.0,
                }),
            }),
            ..FiltersSpec::default()
        },
        ..RouteSpec::default()
    }
}

fn parent_entry(
    parent: &ParentRef,
    generation: Option<i64>,
    accepted: Result<(), Refusal>,
    resolved: Result<(), Refusal>,
) -> Value {
    let condition = |kind: &str, ok_reason: &str, result: &Result<(), Refusal>| {
        let (status, reason, message) = match result {
            Ok(()) => ("True", ok_reason.to_string(), String::new()),
            Err((reason, message)) => ("False", reason.to_string(), message.clone()),
        };
        json!({
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation.unwrap_or(0),
            // The API requires a time; a fixed one keeps the status unchanged (and
            // unwritten) while nothing about the route changes.
            "lastTransitionTime": "1970-01-01T00:00:00Z",
        })
    };
    json!({
        "parentRef": parent,
        "controllerName": CONTROLLER_NAME,
        "conditions": [
            condition("Accepted", "Accepted", &accepted),
            condition("ResolvedRefs", "ResolvedRefs", &resolved),
        ],
    })
}

/// Gateway API's match precedence, smallest first: exact paths, then longer
/// prefixes, then more header and query matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// The route's host names: (0 some exact, 1 wildcards only, 2 none; the
    /// longest first). Gateway API ranks by the host name that matched; a route
    /// naming exact names goes before one naming only wildcards.
    host: (u8, Reverse<usize>),
    /// 0 exact, 1 prefix, 2 regex or none.
    path_kind: u8,
    longer_prefix: Reverse<usize>,
    has_method: Reverse<bool>,
    more_headers: Reverse<usize>,
    more_query: Reverse<usize>,
}

struct Converted {
    route: RouteSpec,
    precedence: Precedence,
    unresolved: Option<Refusal>,
}

fn convert_rule(
    kind: RouteKind,
    rule: &Rule,
    index: usize,
    key: &ObjectKey,
    hostnames: &[String],
    services: &[ServiceSpec],
) -> Result<Converted, String> {
    let at = |what: &str| format!("rules[{index}].{what}");
    let mut matches = rule
        .matches
        .iter()
        .enumerate()
        .map(|(j, m)| {
            match kind {
                RouteKind::Http => http_match(m),
                RouteKind::Grpc => grpc_match(m),
            }
            .map_err(|e| format!("{}: {e}", at(&format!("matches[{j}]"))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if matches.is_empty() && kind == RouteKind::Http {
        // The spec's default: every path.
        matches.push(RouteMatchSpec {
            path: Some(PathMatchSpec {
                prefix: Some("/".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut precedence = matches
        .iter()
        .map(precedence_of)
        .min()
        .unwrap_or(Precedence {
            host: (2, Reverse(0)),
            path_kind: 2,
            longer_prefix: Reverse(0),
            has_method: Reverse(false),
            more_headers: Reverse(0),
            more_query: Reverse(0),
        });
    let exact = hostnames
        .iter()
        .filter(|h| !h.starts_with('*'))
        .map(String::len)
        .max();
    let wild = hostnames.iter().map(String::len).max();
    precedence.host = match (exact, wild) {
        (Some(len), _) => (0, Reverse(len)),
        (None, Some(len)) => (1, Reverse(len)),
        (None, None) => (2, Reverse(0)),
    };
    let mut filters = FiltersSpec::default();
    for (j, f) in rule.filters.iter().enumerate() {
        apply_filter(f, &mut filters)
            .map_err(|e| format!("{}: {e}", at(&format!("filters[{j}]"))))?;
    }
    let mut unresolved = None;
    let mut backends = Vec::new();
    for b in &rule.backend_refs {
        let kind_ok = matches!(b.group.as_deref(), None | Some("") | Some("core"))
            && matches!(b.kind.as_deref(), None | Some("Service"));
        let ns = b.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let refusal = if !kind_ok {
            Some((
                "InvalidKind",
                format!("backend {} is not a Service", b.name),
            ))
        } else if ns != key.namespace {
            Some((
                "RefNotPermitted",
                format!("backend {ns}/{} is in another namespace", b.name),
            ))
        } else if !services
            .iter()
            .any(|s| s.name.as_str() == b.name && s.namespace.as_str() == ns)
        {
            Some((
                "BackendNotFound",
                format!("no Service {ns}/{} in the mesh", b.name),
            ))
        } else {
            None
        };
        match refusal {
            Some(r) => {
                unresolved.get_or_insert(r);
            }
            None => backends.push(BackendSpec {
                service: format!("{}.{ns}", b.name),
                weight: b.weight.unwrap_or(1),
            }),
        }
    }
    if !rule.backend_refs.is_empty() && backends.iter().all(|b| b.weight == 0) {
        // Nothing valid to send to: the spec asks for 500s.
        backends.clear();
        filters.fault = Some(FaultSpec {
            delay: None,
            abort: Some(FaultAbortSpec {
                status: 500,
                percent: 100.0,
            }),
        });
    }
    let timeouts = match rule.timeouts.as_ref().and_then(|t| t.request.as_deref()) {
        None | Some("0s") => None,
        Some(d) => Some(TimeoutsSpec {
            request: Some(
                DurationSpec::try_from(d.to_string())
                    .map_err(|e| format!("{}: {e}", at("timeouts.request")))?,
            ),
            ..Default::default()
        }),
    };
    let route = RouteSpec {
        name: None,
        hostnames: hostnames.to_vec(),
        matches,
        backends,
        filters,
        timeouts,
        retry: None,
    };
    // What the mesh would refuse (a bad regex, a prefix rewrite without a prefix
    // match) refuses this route alone.
    route
        .validate(&format!("rules[{index}]"), &key.namespace, &|name, ns| {
            services
                .iter()
                .any(|s| s.name.as_str() == name && s.namespace.as_str() == ns)
        })
        .map_err(|e| e.to_string())?;
    Ok(Converted {
        route,
        precedence,
        unresolved,
    })
}

fn precedence_of(m: &RouteMatchSpec) -> Precedence {
    let (path_kind, len) = match &m.path {
        Some(p) if p.exact.is_some() => (0, 0),
        Some(PathMatchSpec {
            prefix: Some(prefix),
            ..
        }) => (1, prefix.len()),
        _ if m.grpc.as_ref().is_some_and(|g| g.method.is_some()) => (0, 0),
        _ if m.grpc.is_some() => (1, 0),
        _ => (2, 0),
    };
    Precedence {
        host: (2, Reverse(0)),
        path_kind,
        longer_prefix: Reverse(len),
        has_method: Reverse(m.method.is_some()),
        more_headers: Reverse(m.headers.len()),
        more_query: Reverse(m.query.len()),
    }
}

fn str_of<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

fn value_matches(list: Option<&Value>) -> Result<Vec<ValueMatchSpec>, String> {
    let Some(list) = list.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|h| {
            let name = str_of(h, "name")
                .ok_or("a match without a name")?
                .to_string();
            let value = str_of(h, "value").unwrap_or_default().to_string();
            match str_of(h, "type").unwrap_or("Exact") {
                "Exact" => Ok(ValueMatchSpec {
                    name,
                    exact: Some(value),
                    regex: None,
                }),
                "RegularExpression" => Ok(ValueMatchSpec {
                    name,
                    exact: None,
                    regex: Some(value),
                }),
                other => Err(format!("match type {other:?}")),
            }
        })
        .collect()
}

fn http_match(m: &Value) -> Result<RouteMatchSpec, String> {
    let path = match m.get("path") {
        None => None,
        Some(p) => {
            let value = str_of(p, "value").unwrap_or("/").to_string();
            Some(match str_of(p, "type").unwrap_or("PathPrefix") {
                "Exact" => PathMatchSpec {
                    exact: Some(value),
                    ..Default::default()
                },
                "PathPrefix" => PathMatchSpec {
                    prefix: Some(value),
                    ..Default::default()
                },
                "RegularExpression" => PathMatchSpec {
                    regex: Some(value),
                    ..Default::default()
                },
                other => return Err(format!("path match type {other:?}")),
            })
        }
    };
    Ok(RouteMatchSpec {
        path,
        method: str_of(m, "method").map(str::to_string),
        headers: value_matches(m.get("headers"))?,
        query: value_matches(m.get("queryParams"))?,
        grpc: None,
    })
}

fn grpc_match(m: &Value) -> Result<RouteMatchSpec, String> {
    let grpc = match m.get("method") {
        None => None,
        Some(method) => {
            if str_of(method, "type").unwrap_or("Exact") != "Exact" {
                return Err("only Exact gRPC method matches".into());
            }
            Some(GrpcMatchSpec {
                service: str_of(method, "service").map(str::to_string),
                method: str_of(method, "method").map(str::to_string),
            })
        }
    };
    Ok(RouteMatchSpec {
        grpc,
        headers: value_matches(m.get("headers"))?,
        ..Default::default()
    })
}

fn header_modifier(v: Option<&Value>) -> HeaderModifierSpec {
    let pairs = |field: &str| -> BTreeMap<String, String> {
        v.and_then(|v| v.get(field))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|h| {
                        Some((
                            str_of(h, "name")?.to_ascii_lowercase(),
                            str_of(h, "value")?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    HeaderModifierSpec {
        set: pairs("set"),
        add: pairs("add"),
        remove: v
            .and_then(|v| v.get("remove"))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn path_modifier(p: &Value) -> Result<PathRewriteSpec, String> {
    match str_of(p, "type") {
        Some("ReplaceFullPath") => Ok(PathRewriteSpec {
            full: str_of(p, "replaceFullPath").map(str::to_string),
            prefix: None,
        }),
        Some("ReplacePrefixMatch") => Ok(PathRewriteSpec {
            full: None,
            prefix: str_of(p, "replacePrefixMatch").map(str::to_string),
        }),
        other => Err(format!("path modifier type {other:?}")),
    }
}

fn apply_filter(f: &Value, filters: &mut FiltersSpec) -> Result<(), String> {
    match str_of(f, "type") {
        Some("RequestHeaderModifier") => {
            filters.request_headers = Some(header_modifier(f.get("requestHeaderModifier")));
        }
        Some("ResponseHeaderModifier") => {
            filters.response_headers = Some(header_modifier(f.get("responseHeaderModifier")));
        }
        Some("RequestRedirect") => {
            let r = f.get("requestRedirect").cloned().unwrap_or_default();
            filters.redirect = Some(RedirectSpec {
                scheme: str_of(&r, "scheme").map(str::to_string),
                host: str_of(&r, "hostname").map(str::to_string),
                port: r
                    .get("port")
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok()),
                path: r.get("path").map(path_modifier).transpose()?,
                status: r
                    .get("statusCode")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok()),
            });
        }
        Some("URLRewrite") => {
            let r = f.get("urlRewrite").cloned().unwrap_or_default();
            if r.get("hostname").is_some() {
                return Err("URLRewrite of the hostname is not supported".into());
            }
            filters.rewrite = r.get("path").map(path_modifier).transpose()?;
        }
        other => return Err(format!("filter type {other:?} is not supported")),
    }
    Ok(())
}
