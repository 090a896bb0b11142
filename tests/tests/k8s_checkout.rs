//! The checkout example as a user runs it: Weft installed from deploy/k8s, then
//! `kubectl apply -k deploy/k8s/examples/checkout` on a real cluster whose pods run
//! on the test node. Every pod becomes Ready (probes through the sidecars), the
//! load generator's traffic through web, orders, payments, notifications and users
//! succeeds, and between pod IPs the bridge carries only TLS.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use weft_tests::kube_mesh::{KubeMesh, ROLLOUT_LIMIT, deploy_dir, prometheus_binary};
use weft_tests::metrics::Metrics;
use weft_tests::process::Process;
use weft_tests::prometheus::Prometheus;
use weft_tests::{admin, eventually, netns};

const SERVICES: [&str; 5] = ["web", "orders", "payments", "notifications", "users"];
const ADMIN_PORT: u16 = 7191;
/// Long enough for orders to scale 1 -> 3 -> 1 and restart while it runs.
const CHURN_LOAD_SECONDS: u32 = 60;

/// A load generator pod in the meshed namespace (so injected), calling web by its
/// Service name: `rps` requests a second for `seconds`.
fn loadgen(name: &str, rps: u32, seconds: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
            "containers": [{
                "name": "loadgen",
                "image": "weft/weft-examples:0.1.0",
                "command": ["/usr/local/bin/loadgen"],
                "env": [
                    {"name": "TARGET_URL", "value": "http://web:8080"},
                    {"name": "LOADGEN_RPS", "value": rps.to_string()},
                    {"name": "LOADGEN_DURATION", "value": seconds.to_string()},
                    {"name": "LOADGEN_CONCURRENCY", "value": "8"}
                ]
            }]
        }
    }))
    .expect("a pod")
}

/// `sent= ok= failed=` from the load generator's summary line.
fn summary(log: &str) -> Option<(u64, u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains("sent="))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
    };
    Some((field("sent=")?, field("ok=")?, field("failed=")?))
}

/// Runs a load generator pod to completion; its (sent, ok, failed).
async fn run_loadgen(mesh: &KubeMesh, name: &str, rps: u32, seconds: u32) -> (u64, u64, u64) {
    let pods = Api::<Pod>::namespaced(mesh.client.clone(), "checkout");
    pods.create(&PostParams::default(), &loadgen(name, rps, seconds))
        .await
        .expect("create the load generator");
    let limit = ROLLOUT_LIMIT + Duration::from_secs(seconds.into());
    let phase = eventually(limit, "load generator done", || async {
        let p = pods.get(name).await.ok()?;
        let phase = p.status?.phase?;
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    })
    .await;
    let log = mesh.node.container_log("checkout", name, "loadgen");
    let counts = summary(&log).unwrap_or_else(|| panic!("no summary ({phase}):\n{log}"));
    assert_eq!(phase, "Succeeded", "{log}");
    counts
}

/// prometheus.yml: a 1 s interval and the jobs of deploy/k8s's
/// `weft-prometheus-scrape` ConfigMap as installed, each pod discovery told where
/// the API server is (a Prometheus outside the cluster has no in-cluster config).
fn scrape_config(mesh: &KubeMesh) -> String {
    let jobs = mesh
        .cluster
        .kubectl(&[
            "-n",
            "weft-system",
            "get",
            "configmap",
            "weft-prometheus-scrape",
            "-o",
            "jsonpath={.data.weft-scrape\\.yml}",
        ])
        .expect("the scrape ConfigMap");
    let kubeconfig = mesh.cluster.kubeconfig().display().to_string();
    let mut out = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n");
    for line in jobs.lines() {
        out.push_str(line);
        out.push('\n');
        if let Some(indent) = line.strip_suffix("- role: pod") {
            out.push_str(&format!("{indent}  kubeconfig_file: {kubeconfig}\n"));
        }
    }
    assert!(
        out.contains("kubeconfig_file"),
        "no pod discovery in:\n{jobs}"
    );
    out
}

/// The Ready pods of each example service, by their app label.
async fn pods_by_service(mesh: &KubeMesh) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let pods = Api::<Pod>::namespaced(mesh.client.clone(), "checkout")
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let mut out: BTreeMap<String, Vec<Ipv4Addr>> = BTreeMap::new();
    for p in pods.items {
        let Some(app) = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .cloned()
        else {
            continue;
        };
        if let Some(ip) = p
            .status
            .and_then(|s| s.pod_ip)
            .and_then(|ip| ip.parse().ok())
        {
            out.entry(app).or_default().push(ip);
        }
    }
    out
}

/// Weft and the checkout example installed, every deployment rolled out; the
/// pods' IPs by service. `None`: skipped.
async fn installed(test: &str) -> Option<(KubeMesh, BTreeMap<String, Vec<Ipv4Addr>>)> {
    let mesh = KubeMesh::start(test).await.expect("cluster with Weft")?;
    let example = deploy_dir().join("examples/checkout");
    mesh.cluster
        .kubectl(&["apply", "-k", &example.to_string_lossy()])
        .expect("kubectl apply -k deploy/k8s/examples/checkout");
    for s in SERVICES {
        mesh.wait_rollout("checkout", s)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let by_service = pods_by_service(&mesh).await;
    for s in SERVICES {
        assert_eq!(by_service.get(s).map(Vec::len), Some(2), "{by_service:?}");
    }

    Some((mesh, by_service))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_example_runs_meshed_with_only_tls_between_pods() {
    let test = "the_checkout_example_runs_meshed_with_only_tls_between_pods";
    if !netns::on_path("tshark") {
        assert!(!weft_tests::tools::in_ci(), "tshark is not installed");
        eprintln!("SKIPPED {test}: tshark is not installed");
        return;
    }
    let Some((mesh, by_service)) = installed(test).await else {
        return;
    };

    // Capture on every pod's bridge port. The test knocks on a closed port of
    // each pod until tshark has printed a knock from each: then it is live, and
    // after the traffic, everything before the knocks was read.
    let gateway = mesh.node.host_ip();
    let pcap = mesh.cluster.dir().join("checkout.pcapng");
    let pcap_arg = pcap.to_string_lossy().into_owned();
    let mut tshark = std::process::Command::new("tshark");
    for port in mesh.node.bridge_ports() {
        tshark.args(["-i", &port]);
    }
    tshark.args(["-f", "tcp", "-l", "-P", "-w", &pcap_arg]);
    let mut capture = Process::spawn("tshark", tshark, mesh.cluster.dir()).expect("start tshark");
    let all_ips: Vec<Ipv4Addr> = by_service.values().flatten().copied().collect();
    let knock = |seen_before: usize| {
        let ips = all_ips.clone();
        let capture = &capture;
        async move {
            eventually(Duration::from_secs(30), "tshark prints the knocks", || {
                let ips = ips.clone();
                async move {
                    for ip in &ips {
                        let _ = admin::get(SocketAddr::from((*ip, 9)), "/").await;
                    }
                    let out = capture.output();
                    ips.iter()
                        .all(|ip| out.matches(&format!("{gateway} → {ip} ")).count() > seen_before)
                        .then_some(())
                }
            })
            .await;
        }
    };
    knock(0).await;
    let (sent, ok, failed) = run_loadgen(&mesh, "loadgen", 20, 5).await;
    assert!(
        sent >= 50 && ok == sent && failed == 0,
        "sent={sent} ok={ok} failed={failed}"
    );
    let seen = all_ips
        .iter()
        .map(|ip| {
            capture
                .output()
                .matches(&format!("{gateway} → {ip} "))
                .count()
        })
        .min()
        .unwrap_or(0);
    knock(seen).await;
    capture
        .signal(nix::sys::signal::Signal::SIGINT)
        .expect("stop tshark");
    capture
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("tshark exits");

    // Every service's sidecars served requests: the traffic went through all five.
    for (service, ips) in &by_service {
        let mut served = 0.0;
        for ip in ips {
            let reply = admin::get(SocketAddr::from((*ip, ADMIN_PORT)), "/metrics")
                .await
                .expect("proxy /metrics on the pod IP");
            served +=
                Metrics::parse(&reply.body).sum("weft_requests_total", &[("direction", "inbound")]);
        }
        assert!(
            served > 0.0,
            "no inbound requests through {service}'s proxies"
        );
    }

    // A Prometheus started here with deploy/k8s's scrape jobs, discovering pods
    // through the API server, finds every proxy and gets weft_ series.
    if let Some(binary) = prometheus_binary(test) {
        let prometheus = Prometheus::start_with_config(&binary, &scrape_config(&mesh))
            .await
            .expect("start prometheus");
        let proxies: usize = by_service.values().map(Vec::len).sum();
        let up = prometheus
            .wait_query(
                "up{job=\"weft-proxies\", namespace=\"checkout\"} == 1",
                |s| s.len() >= proxies,
                Duration::from_secs(60),
            )
            .await;
        let requests = prometheus
            .wait_query(
                "weft_requests_total{job=\"weft-proxies\", namespace=\"checkout\"}",
                |s| !s.is_empty(),
                Duration::from_secs(60),
            )
            .await;
        prometheus
            .wait_query(
                "up{job=\"weft-control-plane\"} == 1",
                |s| s.len() == 2,
                Duration::from_secs(60),
            )
            .await;
        eprintln!(
            "checkout: prometheus scrapes {} proxies, {} weft_requests_total series",
            up.len(),
            requests.len()
        );
    }

    let subnet = mesh.node.pod_cidr();
    let between_pods = format!(
        "ip.src == {subnet} && ip.dst == {subnet} && ip.src != {gateway} && ip.dst != {gateway} && tcp.len > 0"
    );
    let read = |filter: &str| {
        let out = std::process::Command::new("tshark")
            // Heuristics first: by port alone tshark would take 8080 for HTTP and
            // not look for TLS there (the heuristics still find plaintext HTTP).
            .args([
                "-o",
                "tcp.try_heuristic_first:TRUE",
                "-r",
                &pcap_arg,
                "-Y",
                filter,
            ])
            .args(["-T", "fields", "-e", "frame.number"])
            .output()
            .expect("tshark -r");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let payload = read(&between_pods);
    let tls = read(&format!("({between_pods}) && tls"));
    let plain = read(&format!(
        "({between_pods}) && (http || http2 || grpc || json)"
    ));
    eprintln!(
        "checkout: loadgen sent={sent} ok={ok} failed={failed}; between pod IPs {payload} data packets, {tls} TLS, {plain} plaintext"
    );
    assert!(tls > 0, "no TLS between pod IPs ({payload} data packets)");
    assert_eq!(
        plain, 0,
        "plaintext between pod IPs (of {payload} data packets, {tls} TLS)"
    );
}

/// Under load, orders scaled 1 -> 3 -> 1 and then restarted: no request may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_and_restarting_orders_under_load_loses_no_request() {
    let test = "scaling_and_restarting_orders_under_load_loses_no_request";
    let Some((mesh, _)) = installed(test).await else {
        return;
    };
    // Under load: orders scaled 1 -> 3 -> 1, then a rollout restart; no request
    // may fail meanwhile.
    let kubectl = |args: &[&str]| {
        mesh.cluster
            .kubectl(args)
            .unwrap_or_else(|e| panic!("{e:#}"));
    };
    let rollout = |name: &'static str| {
        let mesh = &mesh;
        async move {
            mesh.wait_rollout("checkout", name)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
        }
    };
    kubectl(&[
        "-n",
        "checkout",
        "scale",
        "deployment/orders",
        "--replicas=1",
    ]);
    rollout("orders").await;
    let pods = Api::<Pod>::namespaced(mesh.client.clone(), "checkout");
    pods.create(
        &PostParams::default(),
        &loadgen("loadgen-churn", 20, CHURN_LOAD_SECONDS),
    )
    .await
    .expect("create the load generator");
    eventually(ROLLOUT_LIMIT, "load generator running", || async {
        let phase = pods.get("loadgen-churn").await.ok()?.status?.phase?;
        (phase == "Running").then_some(())
    })
    .await;
    for replicas in ["--replicas=3", "--replicas=1"] {
        kubectl(&["-n", "checkout", "scale", "deployment/orders", replicas]);
        rollout("orders").await;
    }
    kubectl(&["-n", "checkout", "rollout", "restart", "deployment/orders"]);
    rollout("orders").await;
    let phase = pods
        .get("loadgen-churn")
        .await
        .expect("load generator")
        .status
        .and_then(|s| s.phase);
    assert_eq!(
        phase.as_deref(),
        Some("Running"),
        "the load stopped before the scaling and the restart were done"
    );
    let phase = eventually(ROLLOUT_LIMIT, "load generator done", || async {
        let phase = pods.get("loadgen-churn").await.ok()?.status?.phase?;
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    })
    .await;
    let log = mesh
        .node
        .container_log("checkout", "loadgen-churn", "loadgen");
    let (sent, ok, failed) =
        summary(&log).unwrap_or_else(|| panic!("no summary ({phase}):\n{log}"));
    eprintln!("checkout: under scaling and restart, loadgen sent={sent} ok={ok} failed={failed}");
    assert!(
        sent > 0 && ok == sent && failed == 0,
        "requests lost while orders scaled and restarted: sent={sent} ok={ok} failed={failed}\n{log}"
    );
}
