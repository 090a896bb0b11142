//! A container's environment as the kubelet builds it: the container's own `env`
//! (plain values and downward API `fieldRef`s), plus what every container gets
//! (`HOSTNAME`, the image's `PATH` and, when the node knows where pods reach the
//! API server, `KUBERNETES_SERVICE_HOST`/`_PORT`).

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::runtime::IMAGE_PATH;

/// The value of the downward API field `path` of `pod`; `pod_ip` is the address
/// the node gave it (which the stored pod may not show yet).
pub fn field(pod: &Pod, path: &str, pod_ip: Option<Ipv4Addr>) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "status.podIP" => pod_ip
            .map(|ip| ip.to_string())
            .or_else(|| status.and_then(|s| s.pod_ip.clone())),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        other => bail!("downward API field {other:?} is not supported by the test node"),
    };
    Ok(value.unwrap_or_default())
}

/// The environment of `container` in `pod`.
pub fn build(
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
    apiserver: Option<SocketAddr>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = vec![
        ("PATH".to_string(), IMAGE_PATH.to_string()),
        (
            "HOSTNAME".to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
    ];
    if let Some(addr) = apiserver {
        env.push(("KUBERNETES_SERVICE_HOST".into(), addr.ip().to_string()));
        env.push(("KUBERNETES_SERVICE_PORT".into(), addr.port().to_string()));
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                let field_ref = from.field_ref.as_ref().with_context(|| {
                    format!(
                        "env {}: only value and fieldRef are supported by the test node",
                        var.name
                    )
                })?;
                field(pod, &field_ref.field_path, Some(pod_ip))
                    .with_context(|| format!("env {}", var.name))?
            }
            (Some(v), None) => v.clone(),
            (None, None) => String::new(),
        };
        // A later definition wins, as in the kubelet.
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_come_from_the_pod_and_its_ip_from_the_node() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"serviceAccountName": "web", "containers": [{
                "name": "c",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "A", "value": "2"}
                ]
            }]}
        }))
        .expect("a pod");
        let c = pod.spec.as_ref().expect("spec").containers[0].clone();
        let env = build(&pod, &c, Ipv4Addr::new(10, 251, 1, 7), None).expect("env");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("2"));
        assert_eq!(get("ID"), Some("web-1"));
        assert_eq!(get("SA"), Some("web"));
        assert_eq!(get("IP"), Some("10.251.1.7"));
        assert_eq!(get("HOSTNAME"), Some("web-1"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), None);
    }

    #[test]
    fn unsupported_sources_are_errors_naming_the_variable() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}]}
        }))
        .expect("a pod");
        let c = pod.spec.as_ref().expect("spec").containers[0].clone();
        let err = build(&pod, &c, Ipv4Addr::LOCALHOST, None).expect_err("unsupported");
        assert!(format!("{err:#}").contains("env PW"), "{err:#}");
    }
}
