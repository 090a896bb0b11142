//! The node agent against a real control plane: pods the scheduler binds to the
//! test node run as network namespaces, report their IP and readiness, fail with a
//! reason when their image has no binary here, and are removed on deletion.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use weft_tests::kube_mesh::{KubeMesh, is_ready};
use weft_tests::{admin, eventually};

/// How long a pod may take from creation to Ready (scheduling, sandbox, probes).
const POD_READY: Duration = Duration::from_secs(60);

fn pod(yaml: serde_json::Value) -> Pod {
    serde_json::from_value(yaml).expect("a pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_as_namespaces_report_readiness_and_fail_foreign_images() {
    let test = "pods_run_as_namespaces_report_readiness_and_fail_foreign_images";
    let Some(env) = KubeMesh::node_only(test).await.expect("cluster and node") else {
        return;
    };
    env.cluster
        .kubectl(&["create", "namespace", "plain"])
        .expect("namespace");
    // The default ServiceAccount of a new namespace comes from a controller.
    eventually(
        Duration::from_secs(30),
        "default serviceaccount",
        || async {
            env.cluster
                .kubectl(&["-n", "plain", "get", "serviceaccount", "default"])
                .ok()
        },
    )
    .await;
    let pods = Api::<Pod>::namespaced(env.client.clone(), "plain");
    let users = pod(serde_json::json!({
        "metadata": {"name": "users"},
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
    }));
    let foreign = pod(serde_json::json!({
        "metadata": {"name": "nginx"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    }));
    pods.create(&PostParams::default(), &users)
        .await
        .expect("create users");
    pods.create(&PostParams::default(), &foreign)
        .await
        .expect("create nginx");

    let ready = eventually(POD_READY, "pod users Ready", || async {
        pods.get("users").await.ok().filter(is_ready)
    })
    .await;
    let status = ready.status.clone().expect("status");
    let ip: std::net::Ipv4Addr = status
        .pod_ip
        .expect("pod IP")
        .parse()
        .expect("an IPv4 pod IP");
    assert!(
        env.node.pod_cidr().starts_with(&format!(
            "{}.{}.{}.",
            ip.octets()[0],
            ip.octets()[1],
            ip.octets()[2]
        )),
        "pod IP {ip} outside the node's {}",
        env.node.pod_cidr()
    );
    let cs = &status.container_statuses.expect("container statuses")[0];
    assert!(
        cs.ready && cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some(),
        "{cs:?}"
    );
    // The app really listens at the pod's address, as the user it was given.
    let reply = admin::get(SocketAddr::from((ip, 8080)), "/users/7")
        .await
        .expect("GET the app on its pod IP");
    assert_eq!(reply.status, 200, "{}", reply.body);
    // `kubectl logs` goes API server -> the node's kubelet API, as on a real node.
    let on_node = env.node.container_log("plain", "users", "users");
    assert!(!on_node.is_empty(), "the app printed nothing");
    let through_api = env
        .cluster
        .kubectl(&["-n", "plain", "logs", "users"])
        .expect("kubectl logs");
    assert!(
        on_node.starts_with(&through_api) && !through_api.is_empty(),
        "kubectl logs: {through_api:?}\non the node: {on_node:?}"
    );
    let tail = env
        .cluster
        .kubectl(&["-n", "plain", "logs", "users", "--tail=1"])
        .expect("kubectl logs --tail=1");
    assert_eq!(tail.lines().count(), 1, "{tail:?}");

    let failed = eventually(POD_READY, "pod nginx Failed", || async {
        pods.get("nginx")
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
    })
    .await;
    let status = failed.status.expect("status");
    assert_eq!(status.reason.as_deref(), Some("UnsupportedImage"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("nginx:1.27"),
        "{:?}",
        status.message
    );

    // Deleted: the app stops, the object goes for good, the address is free.
    pods.delete("users", &DeleteParams::default())
        .await
        .expect("delete users");
    eventually(POD_READY, "pod users gone", || async {
        match pods.get_opt("users").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        admin::get(SocketAddr::from((ip, 8080)), "/healthz")
            .await
            .is_err(),
        "the app still answers after its pod was deleted"
    );
}
