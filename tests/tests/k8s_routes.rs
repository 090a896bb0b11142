//! An HTTPRoute applied with kubectl splits live traffic between pods: the
//! checkout example on a real cluster (pods as network namespaces on the test
//! node, sidecars injected), a canary Deployment of orders beside it, and a
//! 50/50 HTTPRoute on the orders Service. The load generator's checkouts through
//! web reach both, counted by the orders pods' own sidecars, and none fails.

use std::net::{Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use weft_tests::kube_mesh::{KubeMesh, deploy_dir};
use weft_tests::metrics::Metrics;
use weft_tests::{STEP_DEADLINE, admin, eventually};

const NS: &str = "checkout";
const ADMIN_PORT: u16 = 7191;

/// orders.yaml's Service and Deployment as `orders-canary` (one replica, the
/// same ServiceAccount, so the same identity and authorization).
fn canary_manifest() -> String {
    let orders = std::fs::read_to_string(deploy_dir().join("examples/checkout/orders.yaml"))
        .expect("orders.yaml");
    orders
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: ServiceAccount"))
        .map(|doc| {
            doc.replace(
                "app.kubernetes.io/name: orders",
                "app.kubernetes.io/name: orders-canary",
            )
            .replace(
                "  name: orders\n  namespace: checkout",
                "  name: orders-canary\n  namespace: checkout",
            )
            .replace("replicas: 2", "replicas: 1")
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

async fn pod_ips(mesh: &KubeMesh, app: &str) -> Vec<Ipv4Addr> {
    let params = ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
    Api::<Pod>::namespaced(mesh.client.clone(), NS)
        .list(&params)
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.status?.pod_ip?.parse().ok())
        .collect()
}

/// Inbound requests the sidecars at `ips` have served.
async fn served(ips: &[Ipv4Addr]) -> f64 {
    let mut total = 0.0;
    for ip in ips {
        let reply = admin::get(SocketAddr::from((*ip, ADMIN_PORT)), "/metrics")
            .await
            .expect("proxy /metrics on the pod IP");
        total +=
            Metrics::parse(&reply.body).sum("weft_requests_total", &[("direction", "inbound")]);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_splits_live_checkout_traffic_between_orders_and_its_canary() {
    let test = "an_httproute_splits_live_checkout_traffic_between_orders_and_its_canary";
    let Some(mesh) = KubeMesh::node_only(test).await.expect("cluster and node") else {
        return;
    };
    // weft-control looks for the Gateway API at start: the CRDs go first.
    if weft_tests::gateway_api::installed(&mesh.cluster).is_none() {
        return;
    }
    mesh.install_weft().await.expect("install Weft");
    let example = deploy_dir().join("examples/checkout");
    mesh.cluster
        .kubectl(&["apply", "-k", &example.to_string_lossy()])
        .expect("kubectl apply -k deploy/k8s/examples/checkout");
    mesh.cluster
        .apply(&canary_manifest())
        .expect("the orders canary");
    for d in [
        "web",
        "orders",
        "orders-canary",
        "payments",
        "notifications",
        "users",
    ] {
        mesh.wait_rollout(NS, d)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    mesh.cluster
        .apply(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  \
             name: orders-canary\n  namespace: {NS}\nspec:\n  parentRefs:\n  \
             - {{group: \"\", kind: Service, name: orders, port: 8080}}\n  rules:\n  \
             - backendRefs:\n    - {{name: orders, port: 8080, weight: 50}}\n    \
             - {{name: orders-canary, port: 8080, weight: 50}}\n"
        ))
        .expect("apply the HTTPRoute");
    eventually(STEP_DEADLINE, "the HTTPRoute Accepted", || async {
        let status = mesh
            .cluster
            .kubectl(&[
                "get",
                "httproute",
                "orders-canary",
                "-n",
                NS,
                "-o",
                "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
            ])
            .ok()?;
        (status == "True").then_some(())
    })
    .await;

    let stable_ips = pod_ips(&mesh, "orders").await;
    let canary_ips = pod_ips(&mesh, "orders-canary").await;
    assert_eq!((stable_ips.len(), canary_ips.len()), (2, 1));
    let (stable_before, canary_before) = (served(&stable_ips).await, served(&canary_ips).await);
    let load = mesh
        .checkout()
        .run_loadgen("loadgen", 20, 10)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.node.logs()));
    assert!(load.all_ok(100), "{load}");
    let stable = served(&stable_ips).await - stable_before;
    let canary = served(&canary_ips).await - canary_before;
    eprintln!("orders-canary split: stable {stable}, canary {canary} inbound requests");
    let share = canary / (stable + canary).max(1.0);
    assert!(
        stable + canary >= 50.0 && (0.25..=0.75).contains(&share),
        "a 50/50 split: stable {stable}, canary {canary}"
    );
}
