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
//! Left alone, and why:
//! - `httpGet` with `scheme: HTTPS`: the proxy would have to speak TLS to the app;
//!   under strict mTLS such a probe fails (use a permissive port or an HTTP probe);
//! - `httpGet` with a `host`: the kubelet does not probe the pod then;
//! - `httpGet` on a named port the container does not declare: the API server
//!   rejects that pod anyway;
//! - `tcpSocket`: the connection is accepted by the proxy's inbound listener
//!   whatever the app does, so the probe always succeeds once the proxy runs (it
//!   says "the pod's network is up", no more);
//! - `grpc`: plaintext HTTP/2 from the kubelet, refused under strict mTLS like any
//!   plaintext; use an HTTP health endpoint, or a permissive port;
//! - `exec`: runs inside the container, no network involved;
//! - probes of the pod's own init containers (native sidecars).
//!
//! The original `httpGet` of every rewritten probe is kept in the pod annotation
//! `weft.io/original-probes` (JSON: container → probe → httpGet), so what the
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
/// Pod annotation with the original `httpGet` of each rewritten probe.
pub const ORIGINAL_PROBES: &str = "weft.io/original-probes";

const KINDS: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];

/// What rewriting the probes adds to the patch.
#[derive(Debug, Default)]
pub struct ProbeRewrite {
    /// (path under the pod: ["spec", "containers", i, kind, "httpGet", field], value)
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
    let mut originals: BTreeMap<String, BTreeMap<&str, Value>> = BTreeMap::new();
    let mut ports = Vec::new();
    for (i, container) in spec.containers.iter().enumerate() {
        for kind in KINDS {
            let probe = match kind {
                "livenessProbe" => container.liveness_probe.as_ref(),
                "readinessProbe" => container.readiness_probe.as_ref(),
                _ => container.startup_probe.as_ref(),
            };
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
            let original = raw
                .pointer(&format!("/spec/containers/{i}/{kind}/httpGet"))
                .cloned()
                .unwrap_or(Value::Null);
            originals
                .entry(container.name.clone())
                .or_default()
                .insert(kind, original);
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
            originals["app"]["livenessProbe"]["port"],
            json!("http"),
            "{originals}"
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
            "readinessProbe": {"grpc": {"port": 9000}},
            "startupProbe": {"exec": {"command": ["true"]}}
        }]));
        assert!(r.fields.is_empty(), "{:?}", r.fields);
        assert!(r.ports.0.is_empty());
        assert!(r.originals.is_none());
    }
}
