//! A real Prometheus server (Debian package `prometheus`) scrapes the demo's proxies
//! and control plane; the test reads Weft's series back through Prometheus' HTTP
//! API, and `promtool check metrics` checks every exposition.
//!
//! Without the package the test is skipped with a message, or fails under `CI=true`.

use std::time::Duration;

use nix::sys::signal::Signal;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::control::WeftControl;
use weft_tests::demo::{Demo, SERVICES};
use weft_tests::ports::closed_addr;
use weft_tests::prometheus::{Job, Prometheus, promtool_check};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, admin, tools};

/// Prometheus needs a few scrapes for `rate()`; with 1 s scrapes this is plenty.
const QUERY_LIMIT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_demo_and_promtool_accepts_every_exposition() {
    const TEST: &str = "prometheus_scrapes_the_demo_and_promtool_accepts_every_exposition";
    let Some(prometheus_bin) = tools::require("prometheus", "prometheus", TEST) else {
        return;
    };
    let Some(promtool) = tools::require("promtool", "prometheus", TEST) else {
        return;
    };
    // Bounded by --duration should the test not get to stop it.
    let mut demo = Demo::start(&["--duration", "180", "--rps", "20"]).expect("start the demo");
    demo.wait_up(Duration::from_secs(90))
        .await
        .expect("the demo comes up");

    let proxies: Vec<_> = SERVICES.iter().map(|s| demo.proxy_admin(s)).collect();
    let jobs = [
        Job {
            name: "weft-proxies".into(),
            targets: proxies.clone(),
        },
        Job {
            name: "weft-control".into(),
            targets: vec![demo.control_admin()],
        },
    ];
    let prometheus = Prometheus::start(&prometheus_bin, &jobs, Duration::from_secs(1))
        .await
        .expect("start prometheus");

    let up = prometheus
        .wait_query(
            "count(up == 1)",
            |s| s.first().is_some_and(|s| s.value == 6.0),
            QUERY_LIMIT,
        )
        .await;
    eprintln!("targets up: {up:?}");
    let total = prometheus
        .wait_query(
            r#"sum(rate(weft_requests_total{direction="inbound"}[5s])) > 0"#,
            |s| s.len() == 1,
            QUERY_LIMIT,
        )
        .await;
    eprintln!("inbound requests/s across the mesh: {}", total[0].value);
    // Every sidecar serves its app's inbound traffic.
    let per_proxy = prometheus
        .wait_query(
            r#"sum by (instance) (rate(weft_requests_total{direction="inbound",job="weft-proxies"}[5s])) > 0"#,
            |s| s.len() == SERVICES.len(),
            QUERY_LIMIT,
        )
        .await;
    eprintln!("per proxy: {per_proxy:?}");
    // web and orders call other services, so their proxies hold discovery streams.
    let connected = prometheus
        .wait_query(
            r#"weft_control_connected_proxies{job="weft-control"}"#,
            |s| s.len() == 1 && s[0].value >= 2.0,
            QUERY_LIMIT,
        )
        .await;
    eprintln!("connected proxies: {}", connected[0].value);
    prometheus
        .wait_query(
            r#"weft_control_subscriptions{job="weft-control"} >= 4"#,
            |s| s.len() == 1,
            QUERY_LIMIT,
        )
        .await;
    // Every sidecar also reports its own health: memory, descriptors, live tasks.
    for series in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "weft_runtime_alive_tasks",
    ] {
        prometheus
            .wait_query(
                &format!(r#"{series}{{job="weft-proxies"}} > 0"#),
                |s| s.len() == SERVICES.len(),
                QUERY_LIMIT,
            )
            .await;
    }
    prometheus
        .wait_query(
            r#"histogram_quantile(0.99, sum by (le) (rate(weft_request_duration_seconds_bucket{direction="inbound"}[5s])))"#,
            |s| s.len() == 1 && s[0].value.is_finite() && s[0].value > 0.0,
            QUERY_LIMIT,
        )
        .await;

    let mut problems = Vec::new();
    for (name, addr) in SERVICES
        .iter()
        .map(|s| format!("{s}'s proxy"))
        .zip(proxies.iter().copied())
        .chain([("the control plane".to_string(), demo.control_admin())])
    {
        let reply = admin::get(addr, "/metrics").await.expect("read /metrics");
        assert_eq!(reply.status, 200, "{name}: /metrics");
        assert!(reply.body.contains("weft_"), "{name}: no weft_ series");
        if let Err(e) = promtool_check(&promtool, &reply.body) {
            problems.push(format!("{name} (http://{addr}/metrics): {e:#}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    demo.process()
        .signal(Signal::SIGTERM)
        .expect("SIGTERM the demo");
    let status = demo
        .process()
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the demo stops");
    assert!(status.success(), "the demo exited with {status}");
    assert!(
        demo.output().contains("all stopped cleanly"),
        "{}",
        demo.output()
    );
    drop(prometheus);
}

/// Series that only appear after something went wrong (proxy errors, unknown
/// services, rejected mesh changes) must pass promtool too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_metrics_after_errors_and_rejections() {
    const TEST: &str = "promtool_accepts_metrics_after_errors_and_rejections";
    let Some(promtool) = tools::require("promtool", "prometheus", TEST) else {
        return;
    };
    let app = HttpApp::start("app").await.expect("start app");
    let control = WeftControl::start(&[
        ServiceDef::new("orders").endpoint(app.addr),
        ServiceDef::new("gone").endpoint(closed_addr()),
    ])
    .await
    .expect("start the control plane");
    let proxy = WeftProxy::start(
        ProxyConfig::new()
            .inbound(app.addr)
            .limit("discovery_timeout", "200ms")
            .control_plane(&control.url()),
    )
    .await
    .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    for (uri, status) in [
        ("http://orders/", 200),
        ("http://gone/", 502),
        ("http://nowhere/", 404),
    ] {
        let reply = c.send(client::get(uri)).await.expect("answer");
        assert_eq!(reply.status.as_u16(), status, "{uri}");
    }
    let mut c = H1Client::connect(proxy.inbound()).await.expect("connect");
    let reply = c
        .send(client::request("GET", "/", &[("host", "orders")], ""))
        .await
        .expect("answer");
    assert_eq!(reply.status.as_u16(), 200);
    control
        .write_mesh_text("services: [{name: Not_A_Name}]\n")
        .expect("write the mesh");
    control
        .wait_metric(
            "weft_control_source_changes_rejected_total",
            |v| v >= 1.0,
            STEP_DEADLINE,
        )
        .await;

    let proxy_text = proxy.admin_get("/metrics").await.expect("metrics").body;
    assert!(
        proxy_text.contains("weft_proxy_errors_total"),
        "{proxy_text}"
    );
    let control_text = control.metrics_text().await.expect("metrics");
    for (name, text) in [("proxy", proxy_text), ("control plane", control_text)] {
        if let Err(e) = promtool_check(&promtool, &text) {
            panic!("{name}: {e:#}\n{text}");
        }
    }
    // promtool does find problems: a counter without `_total`.
    let bad = "# HELP weft_bad A counter.\n# TYPE weft_bad counter\nweft_bad 1\n";
    assert!(promtool_check(&promtool, bad).is_err());
}
