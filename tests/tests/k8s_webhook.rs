//! The injector as the API server meets it: deploy/k8s installed on a real
//! cluster, weft-control and the webhook running as pods on the test node. The API
//! server calls the webhook over TLS (caBundle) for pods in an annotated
//! namespace; the stored pod has the native sidecar, which then runs with its
//! projected token and makes the pod Ready through the rewritten probe. With the
//! webhook down, `failurePolicy: Fail` keeps unmeshed pods out.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use weft_tests::eventually;
use weft_tests::kube_mesh::{KubeMesh, ROLLOUT_LIMIT, is_ready};

fn users_pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
            "containers": [{
                "name": "users",
                "image": "weft/weft-examples:0.1.0",
                "command": ["/usr/local/bin/users"],
                "env": [{"name": "USERS_LISTEN", "value": "0.0.0.0:8080"}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}
            }]
        }
    }))
    .expect("a pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_injects_through_the_webhook_and_fails_closed_without_it() {
    let test = "the_apiserver_injects_through_the_webhook_and_fails_closed_without_it";
    let Some(mesh) = KubeMesh::start(test).await.expect("cluster with Weft") else {
        return;
    };
    let c = &mesh.cluster;
    c.kubectl(&["create", "namespace", "meshed"])
        .expect("namespace");
    c.kubectl(&["label", "namespace", "meshed", "weft.io/inject=enabled"])
        .expect("label");
    eventually(
        Duration::from_secs(30),
        "default serviceaccount",
        || async {
            c.kubectl(&["-n", "meshed", "get", "serviceaccount", "default"])
                .ok()
        },
    )
    .await;
    let pods = Api::<Pod>::namespaced(mesh.client.clone(), "meshed");
    pods.create(&PostParams::default(), &users_pod("users"))
        .await
        .expect("create a pod in the meshed namespace");

    // What the API server stored is what the webhook made of it.
    let stored = pods.get("users").await.expect("stored pod");
    let spec = stored.spec.clone().expect("spec");
    let init: Vec<_> = spec.init_containers.iter().flatten().collect();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["weft-init", "weft-proxy"], "{spec:?}");
    assert_eq!(init[1].restart_policy.as_deref(), Some("Always"));
    let probe_path = spec.containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone());
    assert_eq!(probe_path.as_deref(), Some("/app-probe/8080/healthz"));

    // And it runs: init's iptables, the sidecar certified with its projected
    // token, the app Ready through the rewritten probe on the proxy's admin port.
    let ready = eventually(ROLLOUT_LIMIT, "injected pod Ready", || async {
        pods.get("users").await.ok().filter(is_ready)
    })
    .await;
    let statuses = ready.status.expect("status");
    let init_states: Vec<_> = statuses
        .init_container_statuses
        .iter()
        .flatten()
        .map(|s| {
            let st = s.state.clone().unwrap_or_default();
            (
                s.name.clone(),
                st.terminated.map(|t| t.exit_code),
                st.running.is_some(),
            )
        })
        .collect();
    assert_eq!(
        init_states,
        [
            ("weft-init".to_string(), Some(0), false),
            ("weft-proxy".to_string(), None, true)
        ]
    );

    // The sidecar runs with exactly the environment the injector wrote (field
    // references resolved), plus what every container gets from the kubelet.
    let proxy_status = statuses
        .init_container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == "weft-proxy")
        .expect("weft-proxy status");
    let pid = proxy_status
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("weft-test://"))
        .expect("the test node's container id is the pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the sidecar's environment");
    let mut running: BTreeMap<String, String> = environ
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    for kubelet_adds in [
        "PATH",
        "HOSTNAME",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ] {
        assert!(
            running.remove(kubelet_adds).is_some(),
            "{kubelet_adds} missing"
        );
    }
    let pod_ip = statuses.pod_ip.clone().expect("pod IP");
    let written: BTreeMap<String, String> = init[1]
        .env
        .iter()
        .flatten()
        .map(|e| {
            let value = match e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
                Some(f) => match f.field_path.as_str() {
                    "metadata.name" => "users".to_string(),
                    "metadata.namespace" => "meshed".to_string(),
                    "spec.serviceAccountName" => "default".to_string(),
                    "status.podIP" => pod_ip.clone(),
                    other => panic!("unexpected field reference {other}"),
                },
                None => e.value.clone().unwrap_or_default(),
            };
            (e.name.clone(), value)
        })
        .collect();
    assert_eq!(running, written);

    // The webhook down: failurePolicy Fail refuses pods it should have seen.
    c.kubectl(&[
        "-n",
        "weft-system",
        "scale",
        "deployment/weft-injector",
        "--replicas=0",
    ])
    .expect("scale the injector down");
    eventually(ROLLOUT_LIMIT, "injector pods gone", || async {
        let out = c
            .kubectl(&[
                "-n",
                "weft-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=weft-injector",
                "-o",
                "name",
            ])
            .ok()?;
        out.trim().is_empty().then_some(())
    })
    .await;
    let err = pods
        .create(&PostParams::default(), &users_pod("unmeshed"))
        .await
        .expect_err("a meshed namespace must not admit pods while the injector is down");
    let text = err.to_string();
    assert!(
        text.contains("namespace.inject.weft.io") && text.contains("failed calling webhook"),
        "{text}"
    );
    assert!(pods.get_opt("unmeshed").await.expect("get").is_none());
    // Namespaces that are not meshed do not depend on it.
    c.kubectl(&["create", "namespace", "plain"])
        .expect("namespace");
    eventually(
        Duration::from_secs(30),
        "default serviceaccount",
        || async {
            c.kubectl(&["-n", "plain", "get", "serviceaccount", "default"])
                .ok()
        },
    )
    .await;
    Api::<Pod>::namespaced(mesh.client.clone(), "plain")
        .create(&PostParams::default(), &users_pod("plain"))
        .await
        .expect("an unmeshed namespace admits pods without the webhook");
}
