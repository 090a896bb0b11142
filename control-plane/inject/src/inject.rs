//! Sidecar injection: decides whether a pod gets the proxy and, if so, produces the
//! JSON Patch that adds it. The admission webhook returns that patch to the API
//! server; `weftctl inject` applies it to the pod template inside a workload. Both
//! fronts therefore give byte-for-byte the same pod.
//!
//! Patches are generated against the pod as received (never a re-serialized copy),
//! so fields this crate's Kubernetes types do not know survive untouched.
//!
//! # What an injected pod gets
//!
//! - `initContainers[0]` **`weft-init`**: `weft-proxy init` from the init image (the
//!   proxy binary plus the iptables tools), installs the iptables rules and exits. Runs as root with only `NET_ADMIN` and `NET_RAW`, a read-only root
//!   filesystem and an in-memory `/run` (for the xtables lock).
//! - `initContainers[1]` **`weft-proxy`**: `weft-proxy run` as a native sidecar
//!   (`restartPolicy: Always`). Its startup probe on `/ready` (admin port 7191) holds
//!   back later init containers and the app until the proxy is ready; the kubelet
//!   stops it after the app, and a Job completes without waiting for it. UID/GID 7102,
//!   non-root, read-only root filesystem, all capabilities dropped, RuntimeDefault
//!   seccomp. Both come before the pod's own init containers so that those already
//!   have a working network.
//! - volume `weft-identity-token`: a projected ServiceAccount token with audience
//!   `weft` (configurable), mounted read-only in the proxy at
//!   `/var/run/secrets/weft.io/serviceaccount/token`. The kubelet rotates it; the
//!   proxy must re-read the file for each `Identity.Certify`.
//! - volume `weft-xtables-lock`: in-memory `emptyDir` for `weft-init`'s `/run`.
//! - pod `securityContext.fsGroup: 7102` (with `fsGroupChangePolicy: OnRootMismatch`)
//!   when the pod sets no fsGroup: the kubelet writes projected tokens mode 0600
//!   owned by root unless an fsGroup makes them group-readable, and the proxy is not
//!   root. A pod's own fsGroup is kept (the proxy gets it as a supplemental group).
//! - annotations `prometheus.io/scrape: "true"`, `prometheus.io/port: "7191"`,
//!   `prometheus.io/path: /metrics`, only when the pod has none of the
//!   `prometheus.io/*` annotations (an app that exports its own metrics keeps them;
//!   Weft's scrape config finds the proxy by its `weft-admin` container port).
//! - the app containers' `httpGet` and `grpc` probes, rewritten to go through the proxy's admin
//!   port (see [`crate::probes`]), with the originals in the annotation
//!   `weft.io/original-probes`.
//!
//! # Environment contract of the proxy container (`weft-proxy run`)
//!
//! | variable | value | notes |
//! |---|---|---|
//! | `WEFT_CONTROL_PLANE` | `weft-control.weft-system.svc:7443` | gRPC over TLS; the host part is the TLS server name |
//! | `WEFT_TRUST_ANCHORS` | PEM certificates (`--trust-anchors FILE`) | roots that verify the control plane's certificate; absent when the injector has none (the proxy then refuses to start) |
//! | `WEFT_TRUST_DOMAIN` | `cluster.local` | SPIFFE trust domain: `spiffe://<td>/ns/<ns>/sa/<sa>` |
//! | `WEFT_IDENTITY_TOKEN_FILE` | `/var/run/secrets/weft.io/serviceaccount/token` | proof for `CertifyRequest.service_account_token`; re-read on every use |
//! | `WEFT_NODE_ID` | downward API `metadata.name` | `weft.v1.Node.id` (the pod's name) |
//! | `WEFT_NODE_NAMESPACE` | downward API `metadata.namespace` | `Node.namespace` |
//! | `WEFT_NODE_SERVICE_ACCOUNT` | downward API `spec.serviceAccountName` | `Node.service_account` |
//! | `WEFT_NODE_IP` | downward API `status.podIP` | the pod's primary IP |
//! | `WEFT_OUTBOUND_PORT` | `7140` | listen on 127.0.0.1 (redirect target of OUTPUT) |
//! | `WEFT_INBOUND_PORT` | `7143` | listen on all addresses (redirect target of PREROUTING) |
//! | `WEFT_ADMIN_PORT` | `7191` | listen on all addresses: the kubelet probes it and Prometheus scrapes it |
//! | `WEFT_OPAQUE_PORTS` | `weft.io/opaque-ports` (e.g. `3306,8000-8099`, may be empty), else `weft_api::ports::DEFAULT_OPAQUE_PORTS` | destination/app ports never sniffed, handled as opaque TCP both ways |
//! | `WEFT_HTTP1_PORTS` | annotation `weft.io/http1-ports`, e.g. `8080`; set only when annotated | app ports that speak HTTP/1.1 only (HTTP/2 callers are sent on as HTTP/1.1) |
//! | `WEFT_HTTP2_PORTS` | annotation `weft.io/http2-ports`, e.g. `9090`; set only when annotated | app ports that speak HTTP/2 only, h2c (HTTP/1 callers are sent on as HTTP/2) |
//! | `WEFT_PROBE_PORTS` | e.g. `8080`, may be empty | app ports whose rewritten probes the admin server forwards (`GET /app-probe/<port><path>`, `GET /app-grpc-probe/<port>[/<service>]`); other ports are refused |
//! | `WEFT_LOG` | `info` | a `tracing` env filter |
//! | `WEFT_ACCESS_LOG` | `stdout` or `stderr`, only with the `weft.io/access-log` annotation | one JSON line per request |
//! | `WEFT_LOG_FORMAT` | `plain` or `json`, only with the `weft.io/log-format` annotation | the proxy's own log lines |
//! | `WEFT_TRACE_COLLECTOR` | `http://host:port`, only with the `weft.io/tracing-collector` annotation | OTLP/gRPC collector for the proxy's spans |
//! | `WEFT_TRACE_SAMPLE_RATIO` | `0`..`1`, only with the `weft.io/tracing-sample-ratio` annotation (and a collector) | share of new traces sampled; the proxy's default otherwise |
//!
//! # Environment contract of the init container (`weft-proxy init`)
//!
//! | variable | value | notes |
//! |---|---|---|
//! | `WEFT_PROXY_UID` | `7102` | traffic of this UID is never redirected |
//! | `WEFT_OUTBOUND_PORT` | `7140` | OUTPUT REDIRECT target |
//! | `WEFT_INBOUND_PORT` | `7143` | PREROUTING REDIRECT target |
//! | `WEFT_SKIP_INBOUND_PORTS` | always has the admin port, e.g. `7191` or `7191,9090` | not redirected inbound |
//! | `WEFT_SKIP_OUTBOUND_PORTS` | e.g. `5432`, may be empty | destination ports not redirected outbound |
//!
//! Port lists are comma-separated ports or inclusive `first-last` ranges, sorted,
//! without spaces. Loopback traffic is the init's business (never redirected, except
//! what the proxy needs); the injector does not encode it.
//!
//! The trust anchors travel in the pod spec (as Linkerd's do) rather than in a
//! ConfigMap volume: a pod in any namespace gets them without a per-namespace copy,
//! and a pod keeps the roots it started with. Rotating the roots means restarting
//! the injector with the new file and rolling the workloads.

use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::annotations::{self, AnnotationError, InjectChoice, PodOverrides, PortList};
use crate::config::{ADMIN_PORT, INBOUND_PORT, InjectConfig, OUTBOUND_PORT, PROXY_UID, Resources};
use crate::probes;

pub const INIT_CONTAINER: &str = "weft-init";
pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const TOKEN_VOLUME: &str = "weft-identity-token";
pub const XTABLES_VOLUME: &str = "weft-xtables-lock";
pub const TOKEN_DIR: &str = "/var/run/secrets/weft.io/serviceaccount";
/// Named so a scrape config can keep exactly the proxies' admin endpoints.
pub const ADMIN_PORT_NAME: &str = "weft-admin";

/// What the injector decided for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Apply this patch (paths relative to where the pod was found).
    Inject(Patch),
    /// Leave the pod as it is, for this reason.
    Skip(SkipReason),
}

/// Why a pod is left alone. Shown to operators (webhook warning, CLI stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    OptedOut,
    AlreadyInjected { by: String },
    HostNetwork,
    RunsAsProxyUid { container: String },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::OptedOut => write!(f, "{}: disabled", annotations::INJECT),
            SkipReason::AlreadyInjected { by } => write!(f, "already injected ({by} present)"),
            SkipReason::HostNetwork => write!(
                f,
                "hostNetwork pod: its iptables rules would capture the node's own traffic"
            ),
            SkipReason::RunsAsProxyUid { container } => write!(
                f,
                "container {container} runs as the proxy's UID {PROXY_UID}, so its traffic would bypass the proxy"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("not a pod or pod template: {0}")]
    NotAPod(String),
}

/// The injection logic, configured once and shared by both fronts.
#[derive(Debug, Clone)]
pub struct Injector {
    config: InjectConfig,
}

impl Injector {
    pub fn new(config: InjectConfig) -> Self {
        Injector { config }
    }

    pub fn config(&self) -> &InjectConfig {
        &self.config
    }

    /// Decides for `pod` (a Pod or a PodTemplateSpec, which share `metadata` and
    /// `spec`) and returns the patch with paths under `at`.
    pub fn plan(&self, pod: &Value, at: &Pointer) -> Result<Outcome, InjectError> {
        let template: PodTemplateSpec =
            serde_json::from_value(pod.clone()).map_err(|e| InjectError::NotAPod(e.to_string()))?;
        let spec = template
            .spec
            .ok_or_else(|| InjectError::NotAPod("it has no spec".into()))?;
        let meta = template.metadata.unwrap_or_default();
        let annotations = meta.annotations.as_ref();
        if annotations::inject_choice(annotations, meta.labels.as_ref())?
            == Some(InjectChoice::Disabled)
        {
            return Ok(Outcome::Skip(SkipReason::OptedOut));
        }
        if let Some(reason) = skip_reason(&spec) {
            return Ok(Outcome::Skip(reason));
        }
        let overrides = PodOverrides::from_annotations(annotations, &self.config.proxy_resources)?;

        let path = |tokens: &[&str]| at.concat(&PointerBuf::from_tokens(tokens.iter().copied()));
        let mut ops = Vec::new();
        let mut add = |path: PointerBuf, value: Value| {
            ops.push(PatchOperation::Add(AddOperation { path, value }));
        };

        let probes = probes::rewrite(&spec, pod);
        let mut new_annotations = BTreeMap::new();
        let has_prometheus =
            annotations.is_some_and(|a| a.keys().any(|k| k.starts_with("prometheus.io/")));
        if !has_prometheus {
            new_annotations.extend(scrape_annotations());
        }
        if let Some(originals) = &probes.originals {
            new_annotations.insert(probes::ORIGINAL_PROBES.to_string(), originals.clone());
        }
        if !new_annotations.is_empty() {
            match (pod.get("metadata"), annotations) {
                (None, _) => add(
                    path(&["metadata"]),
                    serde_json::json!({ "annotations": new_annotations }),
                ),
                (Some(_), None) => add(
                    path(&["metadata", "annotations"]),
                    to_json(&new_annotations),
                ),
                (Some(_), Some(_)) => {
                    for (k, v) in &new_annotations {
                        add(
                            path(&["metadata", "annotations", k]),
                            Value::String(v.clone()),
                        );
                    }
                }
            }
        }

        match spec.security_context.as_ref() {
            None => add(
                path(&["spec", "securityContext"]),
                serde_json::json!({ "fsGroup": PROXY_UID, "fsGroupChangePolicy": "OnRootMismatch" }),
            ),
            Some(sc) if sc.fs_group.is_none() => {
                add(
                    path(&["spec", "securityContext", "fsGroup"]),
                    PROXY_UID.into(),
                );
                if sc.fs_group_change_policy.is_none() {
                    add(
                        path(&["spec", "securityContext", "fsGroupChangePolicy"]),
                        "OnRootMismatch".into(),
                    );
                }
            }
            Some(_) => {}
        }

        let volumes = self.volumes();
        match spec.volumes.as_ref() {
            None => add(path(&["spec", "volumes"]), to_json(&volumes)),
            Some(_) => {
                for v in &volumes {
                    add(path(&["spec", "volumes", "-"]), to_json(v));
                }
            }
        }

        for (field, value) in &probes.fields {
            let tokens: Vec<&str> = field.iter().map(String::as_str).collect();
            add(path(&tokens), value.clone());
        }

        let containers = [
            self.init_container(&overrides),
            self.proxy_container(&overrides, &probes.ports),
        ];
        match spec.init_containers.as_ref() {
            None => add(path(&["spec", "initContainers"]), to_json(&containers)),
            Some(_) => {
                for (i, c) in containers.iter().enumerate() {
                    add(
                        path(&["spec", "initContainers", &i.to_string()]),
                        to_json(c),
                    );
                }
            }
        }
        Ok(Outcome::Inject(Patch(ops)))
    }

    fn volumes(&self) -> Vec<Volume> {
        vec![
            Volume {
                name: TOKEN_VOLUME.into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(self.config.token_audience.clone()),
                            expiration_seconds: Some(self.config.token_expiration_seconds),
                            path: "token".into(),
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: XTABLES_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        "1Mi".into(),
                    )),
                }),
                ..Default::default()
            },
        ]
    }

    fn init_container(&self, overrides: &PodOverrides) -> Container {
        let skip_inbound = overrides.skip_inbound_ports.clone().with(ADMIN_PORT);
        Container {
            name: INIT_CONTAINER.into(),
            image: Some(self.config.init_image.clone()),
            image_pull_policy: Some(self.config.image_pull_policy.clone()),
            args: Some(vec!["init".into()]),
            env: Some(vec![
                env("WEFT_PROXY_UID", PROXY_UID.to_string()),
                env("WEFT_OUTBOUND_PORT", OUTBOUND_PORT.to_string()),
                env("WEFT_INBOUND_PORT", INBOUND_PORT.to_string()),
                env("WEFT_SKIP_INBOUND_PORTS", skip_inbound.to_string()),
                env(
                    "WEFT_SKIP_OUTBOUND_PORTS",
                    overrides.skip_outbound_ports.to_string(),
                ),
            ]),
            resources: Some(resources(&self.config.init_resources)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                // iptables needs root inside the pod's network namespace; the two
                // capabilities are all the privilege it gets.
                run_as_user: Some(0),
                run_as_group: Some(0),
                run_as_non_root: Some(false),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: XTABLES_VOLUME.into(),
                mount_path: "/run".into(),
                ..Default::default()
            }]),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        }
    }

    fn proxy_container(&self, overrides: &PodOverrides, probe_ports: &PortList) -> Container {
        let http = |path: &str, period: i32, failures: i32| Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::Int(i32::from(ADMIN_PORT)),
                ..Default::default()
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failures),
            timeout_seconds: Some(1),
            ..Default::default()
        };
        Container {
            name: PROXY_CONTAINER.into(),
            image: Some(self.config.proxy_image.clone()),
            image_pull_policy: Some(self.config.image_pull_policy.clone()),
            args: Some(vec!["run".into()]),
            // A restartable init container is a native sidecar (Kubernetes 1.29+).
            restart_policy: Some("Always".into()),
            env: Some(
                [env("WEFT_CONTROL_PLANE", self.config.control_plane.clone())]
                    .into_iter()
                    .chain(
                        self.config
                            .trust_anchors
                            .clone()
                            .map(|pem| env("WEFT_TRUST_ANCHORS", pem)),
                    )
                    .chain([
                        env("WEFT_TRUST_DOMAIN", self.config.trust_domain.clone()),
                        env("WEFT_IDENTITY_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
                        field_env("WEFT_NODE_ID", "metadata.name"),
                        field_env("WEFT_NODE_NAMESPACE", "metadata.namespace"),
                        field_env("WEFT_NODE_SERVICE_ACCOUNT", "spec.serviceAccountName"),
                        field_env("WEFT_NODE_IP", "status.podIP"),
                        env("WEFT_OUTBOUND_PORT", OUTBOUND_PORT.to_string()),
                        env("WEFT_INBOUND_PORT", INBOUND_PORT.to_string()),
                        env("WEFT_ADMIN_PORT", ADMIN_PORT.to_string()),
                        env("WEFT_OPAQUE_PORTS", overrides.opaque_ports.to_string()),
                        env("WEFT_PROBE_PORTS", probe_ports.to_string()),
                        env("WEFT_LOG", self.config.log_level.clone()),
                    ])
                    .chain(
                        (!overrides.http1_ports.is_empty())
                            .then(|| env("WEFT_HTTP1_PORTS", overrides.http1_ports.to_string())),
                    )
                    .chain(
                        (!overrides.http2_ports.is_empty())
                            .then(|| env("WEFT_HTTP2_PORTS", overrides.http2_ports.to_string())),
                    )
                    .chain(
                        overrides
                            .access_log
                            .map(|to| env("WEFT_ACCESS_LOG", to.to_string())),
                    )
                    .chain(
                        overrides
                            .log_format
                            .map(|f| env("WEFT_LOG_FORMAT", f.to_string())),
                    )
                    .chain(overrides.tracing.iter().flat_map(|t| {
                        std::iter::once(env("WEFT_TRACE_COLLECTOR", t.collector.clone())).chain(
                            t.sample_ratio
                                .map(|r| env("WEFT_TRACE_SAMPLE_RATIO", r.to_string())),
                        )
                    }))
                    .collect(),
            ),
            ports: Some(vec![ContainerPort {
                name: Some(ADMIN_PORT_NAME.into()),
                container_port: i32::from(ADMIN_PORT),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            // Polled every second for up to two minutes: the app waits for this, so
            // a slow poll is a slow pod start.
            startup_probe: Some(http("/ready", 1, 120)),
            readiness_probe: Some(http("/ready", 5, 3)),
            liveness_probe: Some(http("/live", 10, 3)),
            resources: Some(resources(&overrides.proxy_resources)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                privileged: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_user: Some(PROXY_UID),
                run_as_group: Some(PROXY_UID),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    add: None,
                    drop: Some(vec!["ALL".into()]),
                }),
                seccomp_profile: Some(runtime_default()),
                ..Default::default()
            }),
            volume_mounts: Some(vec![VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            ..Default::default()
        }
    }
}

/// Reasons in the pod spec itself to leave a pod alone.
fn skip_reason(spec: &PodSpec) -> Option<SkipReason> {
    let all_containers = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
    };
    if let Some(c) =
        all_containers().find(|c| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER)
    {
        return Some(SkipReason::AlreadyInjected {
            by: format!("container {}", c.name),
        });
    }
    if let Some(v) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == TOKEN_VOLUME || v.name == XTABLES_VOLUME)
    {
        return Some(SkipReason::AlreadyInjected {
            by: format!("volume {}", v.name),
        });
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    let pod_uid = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    all_containers()
        .find(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.run_as_user)
                .or(pod_uid)
                == Some(PROXY_UID)
        })
        .map(|c| SkipReason::RunsAsProxyUid {
            container: c.name.clone(),
        })
}

fn scrape_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        (annotations::PROMETHEUS_SCRAPE.into(), "true".into()),
        (annotations::PROMETHEUS_PORT.into(), ADMIN_PORT.to_string()),
        (annotations::PROMETHEUS_PATH.into(), "/metrics".into()),
    ])
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

fn field_env(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: field.into(),
            }),
            ..Default::default()
        }),
    }
}

fn resources(r: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), r.cpu_request.clone()),
            ("memory".into(), r.memory_request.clone()),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".into(), r.cpu_limit.clone()),
            ("memory".into(), r.memory_limit.clone()),
        ])),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// k8s-openapi types serialize infallibly (plain data, string map keys).
fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(extra: Value) -> Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "x"}]}
        });
        json_patch::merge(&mut pod, &extra);
        pod
    }

    fn plan(pod: &Value) -> Outcome {
        Injector::new(InjectConfig::default())
            .plan(pod, Pointer::root())
            .expect("a valid pod")
    }

    fn paths(outcome: &Outcome) -> Vec<String> {
        match outcome {
            Outcome::Inject(patch) => patch.iter().map(|op| op.path().to_string()).collect(),
            Outcome::Skip(reason) => panic!("skipped: {reason}"),
        }
    }

    #[test]
    fn annotation_keys_are_escaped_in_patch_paths() {
        let outcome = plan(&pod(json!({"metadata": {"annotations": {"team": "shop"}}})));
        let paths = paths(&outcome);
        assert!(
            paths.contains(&"/metadata/annotations/prometheus.io~1scrape".to_string()),
            "{paths:?}"
        );
    }

    #[test]
    fn http1_and_http2_ports_reach_the_proxy_only_when_annotated() {
        let patch_text = |outcome: &Outcome| match outcome {
            Outcome::Inject(patch) => serde_json::to_string(patch).expect("patch as JSON"),
            Outcome::Skip(reason) => panic!("skipped: {reason}"),
        };
        let annotated = plan(&pod(json!({"metadata": {"annotations": {
            "weft.io/http1-ports": "8080,9000-9001",
            "weft.io/http2-ports": "50051",
        }}})));
        let text = patch_text(&annotated);
        assert!(
            text.contains(r#"{"name":"WEFT_HTTP1_PORTS","value":"8080,9000-9001"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"name":"WEFT_HTTP2_PORTS","value":"50051"}"#),
            "{text}"
        );
        let plain = patch_text(&plan(&pod(json!({}))));
        assert!(!plain.contains("WEFT_HTTP1_PORTS"), "{plain}");
        assert!(!plain.contains("WEFT_HTTP2_PORTS"), "{plain}");
    }

    #[test]
    fn tracing_annotations_become_the_proxys_trace_variables() {
        let patch_text = |outcome: &Outcome| match outcome {
            Outcome::Inject(patch) => serde_json::to_string(patch).expect("patch as JSON"),
            Outcome::Skip(reason) => panic!("skipped: {reason}"),
        };
        let annotated = plan(&pod(json!({"metadata": {"annotations": {
            "weft.io/tracing-collector": "http://otel.monitoring:4317",
            "weft.io/tracing-sample-ratio": "0.05",
        }}})));
        let text = patch_text(&annotated);
        for var in [
            r#"{"name":"WEFT_TRACE_COLLECTOR","value":"http://otel.monitoring:4317"}"#,
            r#"{"name":"WEFT_TRACE_SAMPLE_RATIO","value":"0.05"}"#,
        ] {
            assert!(text.contains(var), "{var} missing: {text}");
        }
        let plain = patch_text(&plan(&pod(json!({}))));
        assert!(!plain.contains("WEFT_TRACE_"), "{plain}");
    }

    #[test]
    fn sidecars_go_before_the_pods_own_init_containers() {
        let outcome = plan(&pod(
            json!({"spec": {"initContainers": [{"name": "migrate", "image": "x"}]}}),
        ));
        let paths = paths(&outcome);
        assert!(
            paths.contains(&"/spec/initContainers/0".to_string()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"/spec/initContainers/1".to_string()),
            "{paths:?}"
        );
    }

    #[test]
    fn opt_out_by_label_or_annotation_wins_over_everything() {
        for extra in [
            json!({"metadata": {"labels": {"weft.io/inject": "disabled"}}}),
            json!({"metadata": {"annotations": {"weft.io/inject": "disabled"}}}),
            json!({"metadata": {"labels": {"weft.io/inject": "enabled"},
                                "annotations": {"weft.io/inject": "disabled"}}}),
            json!({"metadata": {"labels": {"weft.io/inject": "disabled"},
                                "annotations": {"weft.io/inject": "enabled"}}}),
        ] {
            assert_eq!(plan(&pod(extra)), Outcome::Skip(SkipReason::OptedOut));
        }
    }

    #[test]
    fn a_pod_that_cannot_be_meshed_is_skipped_with_its_reason() {
        let host = pod(json!({"spec": {"hostNetwork": true}}));
        assert_eq!(plan(&host), Outcome::Skip(SkipReason::HostNetwork));
        let as_proxy = pod(json!({"spec": {"securityContext": {"runAsUser": 7102}}}));
        assert_eq!(
            plan(&as_proxy),
            Outcome::Skip(SkipReason::RunsAsProxyUid {
                container: "app".into()
            })
        );
        let half = pod(json!({"spec": {"volumes": [{"name": TOKEN_VOLUME, "emptyDir": {}}]}}));
        assert!(matches!(
            plan(&half),
            Outcome::Skip(SkipReason::AlreadyInjected { .. })
        ));
    }

    #[test]
    fn a_pod_without_spec_is_an_error() {
        let err = Injector::new(InjectConfig::default())
            .plan(&json!({"metadata": {}}), Pointer::root())
            .expect_err("no spec");
        assert!(err.to_string().contains("no spec"), "{err}");
    }
}
