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
use weft_tests::checkout::{Checkout, NAMESPACE};
use weft_tests::kube_mesh::{KubeMesh, prometheus_binary};
use weft_tests::process::Process;
use weft_tests::prometheus::Prometheus;
use weft_tests::{admin, eventually, netns};

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

/// The IPs of pods `names` in the example's namespace.
async fn pod_ips(mesh: &KubeMesh, names: &[String]) -> Vec<Ipv4Addr> {
    let pods = Api::<Pod>::namespaced(mesh.client.clone(), NAMESPACE);
    let mut ips = Vec::new();
    for name in names {
        let pod = pods.get(name).await.expect("a pod of the example");
        let ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .and_then(|ip| ip.parse().ok());
        ips.push(ip.unwrap_or_else(|| panic!("pod {name} has no IP")));
    }
    ips
}

/// Weft (checked as the first install leaves it) and the checkout example
/// installed, every deployment rolled out; the Ready pods' names by service.
/// `None`: skipped.
async fn installed(test: &str) -> Option<(KubeMesh, Checkout, BTreeMap<String, Vec<String>>)> {
    let mesh = KubeMesh::start(test).await.expect("cluster with Weft")?;
    let checkout = mesh.checkout();
    checkout
        .check_bootstrap()
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.node.logs()));
    let by_service = checkout
        .install_example()
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.node.logs()));
    for (service, pods) in &by_service {
        assert_eq!(pods.len(), 2, "{service}: {by_service:?}");
    }
    Some((mesh, checkout, by_service))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_example_runs_meshed_with_only_tls_between_pods() {
    let test = "the_checkout_example_runs_meshed_with_only_tls_between_pods";
    if !netns::on_path("tshark") {
        assert!(!weft_tests::tools::in_ci(), "tshark is not installed");
        eprintln!("SKIPPED {test}: tshark is not installed");
        return;
    }
    let Some((mesh, checkout, by_service)) = installed(test).await else {
        return;
    };
    let all_names: Vec<String> = by_service.values().flatten().cloned().collect();
    let all_ips = pod_ips(&mesh, &all_names).await;

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
    let load = checkout
        .run_loadgen("loadgen", 20, 5)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.node.logs()));
    assert!(load.all_ok(50), "{load}");
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

    // Every service's sidecars served requests (the traffic went through all
    // five), and web's calls arrived over mTLS with web's identity.
    checkout
        .check_traffic(&by_service)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

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
        "checkout: loadgen {load}; between pod IPs {payload} data packets, {tls} TLS, {plain} plaintext"
    );
    assert!(tls > 0, "no TLS between pod IPs ({payload} data packets)");
    assert_eq!(
        plain, 0,
        "plaintext between pod IPs (of {payload} data packets, {tls} TLS)"
    );
}

/// The scenario `tests/kind/run.sh` runs on a kind cluster, run here as the same
/// program (`checkout-scenario`) on the test cluster with Weft just installed:
/// the bootstrap, the example installed and injected, traffic over mTLS, and
/// orders scaled 1 -> 3 -> 1 and restarted under load without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_scenario_passes_and_churning_orders_under_load_loses_no_request() {
    let test = "the_kind_scenario_passes_and_churning_orders_under_load_loses_no_request";
    let Some(mesh) = KubeMesh::start(test).await.expect("cluster with Weft") else {
        return;
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_checkout-scenario"));
    cmd.env("KUBECONFIG", mesh.cluster.kubeconfig());
    let mut scenario =
        Process::spawn("checkout-scenario", cmd, mesh.cluster.dir()).expect("start the scenario");
    // Two rollouts of the example, three of orders and two load runs, each
    // bounded inside the scenario; this bounds the whole.
    let status = scenario
        .wait_exit(Duration::from_secs(900))
        .await
        .expect("the scenario ends");
    let output = scenario.output();
    eprintln!("{output}");
    assert!(
        status.success() && output.contains("PASS"),
        "checkout-scenario {status}:\n{output}\n{}",
        mesh.node.logs()
    );
    assert!(
        output.contains("orders scaled 1 -> 3 -> 1 and restarted under load"),
        "the churn step did not run:\n{output}"
    );
}
