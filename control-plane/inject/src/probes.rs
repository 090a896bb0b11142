//! Rewriting the app's kubelet probes so they survive strict mTLS.
//!
//! The kubelet probes an app port in plaintext from the node; the inbound redirect
//! takes that to the proxy, which in strict mode refuses plaintext. So each app
//! container's `httpGet` liveness, readiness and startup probe is pointed at the
//! proxy's admin port (never redirected) with the path `/app-probe/<port><path>`;
//! the proxy replays it to `127.0.0.1:<port><path>` with the same headers and
//! answers with the app's status. Only ports listed in the proxy's
//! `WEFT_PROBE_PORTS` are forwarded, so the admin port is no open relay.
//!
//! A `grpc` probe (plaintext HTTP/2 from the kubelet, refused the same way)
//! becomes an `httpGet` of `/app-grpc-probe/<port>[/<service>]` on the admin port:
//! the proxy asks the app's `grpc.health.v1.Health/Check` and answers 200 only for
//! SERVING, which is how the kubelet itself judges a gRPC probe.
//!
//! Left alone, and why:
//! - `httpGet` with `scheme: HTTPS`: the proxy would have to speak TLS to the app;
//!   under strict mTLS such a probe fails (use a permissive port or an HTTP probe);
//! - `httpGet` with a `host`: the kubelet does not probe the pod then;
//! - `httpGet` on a named port the container does not declare: the API server
//!   rejects that pod anyway;
//! - `tcpSocket`: the connection is accepted by the proxy's inbound listener
//!   whatever the app does, so the probe always succeeds once the proxy runs (it
//!   says "the pod's network is up", no more);
//! - `exec`: runs inside the container, no network involved;
//! - probes of the pod's own init containers (native sidecars).
//!
//! The original handler of every rewritten probe is kept in the pod annotation
//! `weft.io/original-probes` (JSON: container → probe → `{httpGet|grpc: …}`), so what the
//! kubelet checks can always be traced back; injection itself never runs twice on
//! a pod (the proxy container marks it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::annotations::{PortList, PortRange};
use crate::config::ADMIN_PORT;

/// The path prefix the proxy's admin server forwards.
pub const PROBE_PREFIX: &str = "/app-probe/";
/// The path prefix under which the proxy asks the app's gRPC health service.
pub const GRPC_PROBE_PREFIX: &str = "/app-grpc-probe/";
/// Pod annotation with the original `httpGet` of each rewritten probe.
pub const ORIGINAL_PROBES: &str = "weft.io/original-probes";

const KINDS: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];

/// What rewriting the probes adds to the patch.
#[derive(Debug, Default)]
pub struct ProbeRewrite {
    /// JSON Patch `add`s: (path under the pod, value). An HTTP probe gets a new
    /// `httpGet.port` and `.path`; a gRPC probe is replaced whole.
    pub fields: Vec<(Vec<String>, Value)>,
    /// The app ports probed, for `WEFT_PROBE_PORTS`.
    pub ports: PortList,
    /// The `weft.io/original-probes` value; None when nothing was rewritten.
    pub originals: Option<String>,
}

/// Plans the rewrite of every app container's HTTP probes. `raw` is the pod as
/// received, so the kept originals are exactly what the user wrote.
pub fn rewrite(spec: &PodSpec, raw: &Value) -> ProbeRewrite {
    let mut out = ProbeRewrite::default();
    let mut originals: BTreeMap<String, BTreeMap<&str, BTreeMap<&str, Value>>> = BTreeMap::new();
    let mut ports = Vec::new();
    for (i, container) in spec.containers.iter().enumerate() {
        for kind in KINDS {
            let probe = match kind {
                "livenessProbe" => container.liveness_probe.as_ref(),
                "readinessProbe" => container.readiness_probe.as_ref(),
                _ => container.startup_probe.as_ref(),
            };
            let raw_probe = |handler: &str| {
                raw.pointer(&format!("/spec/containers/{i}/{kind}/{handler}"))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            if let Some(port) = probe.and_then(grpc_port) {
                let service = probe
                    .and_then(|p| p.grpc.as_ref())
                    .and_then(|g| g.service.as_deref())
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                // The probe as written (timings, thresholds), with its handler swapped.
                let mut new = raw
                    .pointer(&format!("/spec/containers/{i}/{kind}"))
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                let original = raw_probe("grpc");
                if let Some(map) = new.as_object_mut() {
                    map.remove("grpc");
                    map.insert(
                        "httpGet".into(),
                        serde_json::json!({
                            "path": format!("{GRPC_PROBE_PREFIX}{port}{service}"),
                            "port": ADMIN_PORT,
                        }),
                    );
                }
                out.fields.push((
                    ["spec", "containers", &i.to_string(), kind]
                        .map(String::from)
                        .to_vec(),
                    new,
                ));
                originals
                    .entry(container.name.clone())
                    .or_default()
                    .insert(kind, BTreeMap::from([("grpc", original)]));
                ports.push(PortRange {
                    first: port,
                    last: port,
                });
                continue;
            }
            let Some((get, port)) = probe.and_then(|p| rewritable(container, p)) else {
                continue;
            };
            let path = match get.path.as_deref() {
                None | Some("") => "/".to_string(),
                Some(p) if p.starts_with('/') => p.to_string(),
                Some(p) => format!("/{p}"),
            };
            let at = |field: &str| {
                ["spec", "containers", &i.to_string(), kind, "httpGet", field]
                    .map(String::from)
                    .to_vec()
            };
            out.fields
                .push((at("port"), Value::from(i64::from(ADMIN_PORT))));
            out.fields.push((
                at("path"),
                Value::String(format!("{PROBE_PREFIX}{port}{path}")),
            ));
            originals
                .entry(container.name.clone())
                .or_default()
                .insert(kind, BTreeMap::from([("httpGet", raw_probe("httpGet"))]));
            ports.push(PortRange {
                first: port,
                last: port,
            });
        }
    }
    out.ports = PortList::from_ranges(ports);
    if !originals.is_empty() {
        out.originals = serde_json::to_string(&originals).ok();
    }
    out
}

/// The port of a gRPC probe the proxy can stand in for.
fn grpc_port(probe: &Probe) -> Option<u16> {
    let port = u16::try_from(probe.grpc.as_ref()?.port)
        .ok()
        .filter(|p| *p > 0)?;
    (port != ADMIN_PORT).then_some(port)
}

/// The probe's httpGet and its numeric port, if the proxy can stand in for it.
fn rewritable<'a>(container: &Container, probe: &'a Probe) -> Option<(&'a HTTPGetAction, u16)> {
    let get = probe.http_get.as_ref()?;
    if get.host.as_deref().is_some_and(|h| !h.is_empty()) {
        return None;
    }
    if get
        .scheme
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        return None;
    }
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))?
                .container_port
        }
    };
    let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
    // A probe of the admin port itself needs no help (and must not loop).
    (port != ADMIN_PORT).then_some((get, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(containers: Value) -> ProbeRewrite {
        let pod = json!({"spec": {"containers": containers}});
        let spec: PodSpec = serde_json::from_value(pod["spec"].clone()).expect("spec");
        rewrite(&spec, &pod)
    }

    #[test]
    fn http_probes_go_through_the_admin_port() {
        let r = plan(json!([{
            "name": "app", "image": "x",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz?full=1", "port": "http",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
            "readinessProbe": {"httpGet": {"port": 9090}},
            "startupProbe": {"httpGet": {"path": "ready", "port": 8080, "scheme": "HTTP"}}
        }]));
        let fields: Vec<(String, Value)> = r
            .fields
            .iter()
            .map(|(p, v)| (p.join("/"), v.clone()))
            .collect();
        assert!(fields.contains(&(
            "spec/containers/0/livenessProbe/httpGet/path".into(),
            json!("/app-probe/8080/healthz?full=1")
        )));
        assert!(fields.contains(&(
            "spec/containers/0/readinessProbe/httpGet/path".into(),
            json!("/app-probe/9090/")
        )));
        assert!(fields.contains(&(
            "spec/containers/0/startupProbe/httpGet/path".into(),
            json!("/app-probe/8080/ready")
        )));
        assert!(fields.contains(&(
            "spec/containers/0/livenessProbe/httpGet/port".into(),
            json!(7191)
        )));
        assert_eq!(r.ports.to_string(), "8080,9090");
        let originals: Value =
            serde_json::from_str(&r.originals.expect("originals")).expect("JSON");
        assert_eq!(
            originals["app"]["livenessProbe"]["httpGet"]["port"],
            json!("http"),
            "{originals}"
        );
    }

    #[test]
    fn grpc_probes_become_health_checks_through_the_admin_port() {
        let r = plan(json!([{
            "name": "app", "image": "x",
            "livenessProbe": {"grpc": {"port": 9000}, "periodSeconds": 7},
            "readinessProbe": {"grpc": {"port": 9000, "service": "shop.v1.Cart"}}
        }]));
        let probe = |kind: &str| {
            r.fields
                .iter()
                .find(|(p, _)| p.join("/") == format!("spec/containers/0/{kind}"))
                .map(|(_, v)| v.clone())
                .expect("rewritten")
        };
        assert_eq!(
            probe("livenessProbe"),
            json!({"httpGet": {"path": "/app-grpc-probe/9000", "port": 7191}, "periodSeconds": 7})
        );
        assert_eq!(
            probe("readinessProbe")["httpGet"]["path"],
            json!("/app-grpc-probe/9000/shop.v1.Cart")
        );
        assert_eq!(r.ports.to_string(), "9000");
        let originals: Value =
            serde_json::from_str(&r.originals.expect("originals")).expect("JSON");
        assert_eq!(
            originals["app"]["readinessProbe"]["grpc"]["service"],
            json!("shop.v1.Cart")
        );
    }

    #[test]
    fn probes_the_proxy_cannot_stand_in_for_are_left_alone() {
        let r = plan(json!([{
            "name": "app", "image": "x",
            "livenessProbe": {"httpGet": {"path": "/", "port": 8443, "scheme": "HTTPS"}},
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080, "host": "10.0.0.1"}},
            "startupProbe": {"httpGet": {"path": "/", "port": "nope"}}
        }, {
            "name": "other", "image": "x",
            "livenessProbe": {"tcpSocket": {"port": 5432}},
            "readinessProbe": {"grpc": {"port": 7191}},
            "startupProbe": {"exec": {"command": ["true"]}}
        }]));
        assert!(r.fields.is_empty(), "{:?}", r.fields);
        assert!(r.ports.is_empty());
        assert!(r.originals.is_none());
    }
}
