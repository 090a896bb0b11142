//! Proxies that learn the mesh from `weft-control serve` while traffic flows: endpoint
//! churn, a control-plane outage, and an invalid mesh change.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_tests::STEP_DEADLINE;
use weft_tests::apps::HttpApp;
use weft_tests::control::WeftControl;
use weft_tests::load::{Load, LoadSpec};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

/// How long the endpoints churn, and how often they change.
const CHURN_FOR: Duration = Duration::from_secs(30);
const CHURN_EVERY: Duration = Duration::from_millis(100);
/// How long the control plane stays down.
const OUTAGE: Duration = Duration::from_secs(10);

fn orders() -> ServiceDef {
    ServiceDef::new("orders")
}

/// How many answers each app gave between two readings of the load's tallies.
fn delta(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(app, n)| (app.clone(), n - before.get(app).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The mesh at churn step `step`: a non-empty subset of `apps`, each with a weight
/// that changes from step to step (deterministic, so a failure can be replayed).
fn churn_state(step: usize, apps: &[HttpApp]) -> ServiceDef {
    let n = apps.len();
    // Walks every non-empty subset of the apps in a scrambled order.
    let subsets = (1usize << n) - 1;
    let mask = (step * 7 + 3) % subsets + 1;
    let mut svc = orders();
    for (i, app) in apps.iter().enumerate() {
        if mask & (1 << i) != 0 {
            let weight = 1 + ((step * 13 + i * 29) % 400) as u32;
            svc = svc.weighted_endpoint(app.addr, weight);
        }
    }
    svc
}

/// Waits until `app` has answered the load, i.e. the proxy holds a state with it.
async fn wait_answered_by(load: &Load, app: &str) {
    weft_tests::eventually(STEP_DEADLINE, &format!("answers from {app}"), || async {
        assert!(load.running(), "the load stopped early");
        (load.answered_by(app) > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_churning_every_100ms_lose_no_request_and_final_weights_hold() {
    let mut apps = Vec::new();
    for i in 0..4 {
        apps.push(
            HttpApp::start(&format!("app-{i}"))
                .await
                .expect("start app"),
        );
    }
    // Appears only in the final state, so its first answer shows the proxy holds it.
    let last = HttpApp::start("app-last").await.expect("start app");
    let control = WeftControl::start(&[churn_state(0, &apps)])
        .await
        .expect("start the control plane");
    let proxy = WeftProxy::start(ProxyConfig::new().control_plane(&control.url()))
        .await
        .expect("start proxy");
    let spec = LoadSpec::new(proxy.outbound(), "http://orders/");
    let clients = spec.clients;
    let load = Load::start(spec);
    // Requests that outlive a churn step: they must finish on the endpoint they
    // started on even when a change removes it meanwhile.
    let slow = Load::start(LoadSpec {
        clients: 2,
        pause: Duration::ZERO,
        ..LoadSpec::new(proxy.outbound(), "http://orders/slow?ms=150")
    });
    load.wait_more_ok(50, STEP_DEADLINE).await;
    slow.wait_more_ok(2, STEP_DEADLINE).await;

    let steps = (CHURN_FOR.as_millis() / CHURN_EVERY.as_millis()) as usize;
    let mut tick = tokio::time::interval(CHURN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for step in 1..=steps {
        tick.tick().await;
        control
            .write_mesh(&[churn_state(step, &apps)])
            .expect("write the mesh");
        assert!(
            load.running() && slow.running(),
            "the load stopped early (bounds reached?)"
        );
    }
    let slow = slow.stop().await;
    slow.assert_no_failures();
    assert!(slow.ok >= 100, "only {} slow requests ran", slow.ok);
    // Final weights 1:3 between app-0 and app-last, under the weighted round robin
    // (the default peak-EWMA balancer also weighs latency, so its shares are not
    // exact ratios).
    control
        .write_mesh(&[orders()
            .policy("{load_balancer: round-robin}")
            .weighted_endpoint(apps[0].addr, 100)
            .weighted_endpoint(last.addr, 300)])
        .expect("write the mesh");
    wait_answered_by(&load, "app-last").await;
    // Requests in flight when the final state arrived finish on their old endpoint
    // (at most one per client); let them land before counting.
    load.wait_more_ok(4 * clients, STEP_DEADLINE).await;
    let before = load.by_app();
    load.wait_more_ok(2000, STEP_DEADLINE).await;
    let answered = delta(&before, &load.by_app());
    let report = load.stop().await;
    report.assert_no_failures();

    let first = answered.get("app-0").copied().unwrap_or(0) as f64;
    let newest = answered.get("app-last").copied().unwrap_or(0) as f64;
    let share = newest / (first + newest);
    assert!(
        (0.65..=0.85).contains(&share),
        "app-last should take ~75% with weights 100:300, took {share:.3}: {answered:?}"
    );
    let elsewhere: usize = answered
        .iter()
        .filter(|(app, _)| *app != "app-0" && *app != "app-last")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        elsewhere, 0,
        "removed endpoints still answered: {answered:?}"
    );
    eprintln!(
        "churn: {steps} mesh changes, {} requests ({} slow), final share {share:.3}, answers {:?}",
        report.ok, slow.ok, report.by_app
    );

    // The churn really reached the proxy: most changes were applied, none refused.
    let proxy_metrics = proxy.metrics().await.expect("proxy metrics");
    let applied = proxy_metrics.value("weft_snapshot_version", &[]);
    assert!(
        applied >= (steps / 4) as f64,
        "the proxy applied only {applied} snapshots for {steps} changes"
    );
    assert_eq!(
        proxy_metrics.value("weft_discovery_updates_rejected_total", &[]),
        0.0
    );
    let cp = control.metrics().await.expect("control plane metrics");
    assert_eq!(cp.value("weft_control_nacks_total", &[]), 0.0);
    assert_eq!(
        cp.value("weft_control_source_changes_rejected_total", &[]),
        0.0
    );
    assert!(cp.value("weft_control_acks_total", &[]) >= applied - 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_loses_no_request_and_changes_made_meanwhile_arrive() {
    let before_outage = HttpApp::start("app-before").await.expect("start app");
    let after_outage = HttpApp::start("app-after").await.expect("start app");
    let mut control = WeftControl::start(&[orders().endpoint(before_outage.addr)])
        .await
        .expect("start the control plane");
    // One proxy subscribes on first use (http_proxy style), one for the upstream
    // listener its config names.
    let by_host = WeftProxy::start_named(
        "proxy-by-host",
        ProxyConfig::new().control_plane(&control.url()),
    )
    .await
    .expect("start proxy");
    let by_listener = WeftProxy::start_named(
        "proxy-by-listener",
        ProxyConfig::new()
            .upstream("orders")
            .control_plane(&control.url()),
    )
    .await
    .expect("start proxy");
    let loads = [
        Load::start(LoadSpec::new(by_host.outbound(), "http://orders/")),
        Load::start(LoadSpec::new(by_listener.upstream("orders"), "/")),
    ];
    for load in &loads {
        load.wait_more_ok(50, STEP_DEADLINE).await;
    }
    control
        .wait_metric(
            "weft_control_connected_proxies",
            |v| v == 2.0,
            STEP_DEADLINE,
        )
        .await;

    control.kill().await.expect("SIGKILL the control plane");
    control
        .write_mesh(&[orders().endpoint(after_outage.addr)])
        .expect("write the mesh");
    // Kept down on purpose (this is the scenario, not a wait for readiness); the
    // load keeps running through both proxies meanwhile.
    tokio::time::sleep(OUTAGE).await;
    for load in &loads {
        load.wait_more_ok(50, STEP_DEADLINE).await;
        assert_eq!(
            load.answered_by("app-after"),
            0,
            "nobody told the proxies about the change yet"
        );
    }

    control.restart().await.expect("restart the control plane");
    for load in &loads {
        wait_answered_by(load, "app-after").await;
    }
    // Once in-flight requests on the old endpoint have landed, only the new one answers.
    let mut settled = Vec::new();
    for load in &loads {
        load.wait_more_ok(20, STEP_DEADLINE).await;
        settled.push(load.by_app());
    }
    for (load, before) in loads.iter().zip(&settled) {
        load.wait_more_ok(200, STEP_DEADLINE).await;
        let answered = delta(before, &load.by_app());
        assert_eq!(
            answered.keys().collect::<Vec<_>>(),
            ["app-after"],
            "after the resync only the new endpoint answers: {answered:?}"
        );
    }
    control
        .wait_metric(
            "weft_control_connected_proxies",
            |v| v == 2.0,
            STEP_DEADLINE,
        )
        .await;
    let [a, b] = loads;
    for (name, load) in [("by host", a), ("by listener", b)] {
        let report = load.stop().await;
        report.assert_no_failures();
        eprintln!(
            "outage, proxy {name}: {} requests, {:?}",
            report.ok, report.by_app
        );
    }
    for proxy in [&by_host, &by_listener] {
        assert_eq!(
            proxy
                .metric("weft_discovery_updates_rejected_total", &[])
                .await,
            0.0
        );
    }
    let status = control.stop().await.expect("stop the control plane");
    assert!(status.success(), "weft-control exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_mesh_change_is_rejected_and_the_old_state_keeps_serving() {
    let old = HttpApp::start("app-old").await.expect("start app");
    let new = HttpApp::start("app-new").await.expect("start app");
    let control = WeftControl::start(&[orders().endpoint(old.addr)])
        .await
        .expect("start the control plane");
    let proxy = WeftProxy::start(ProxyConfig::new().control_plane(&control.url()))
        .await
        .expect("start proxy");
    let load = Load::start(LoadSpec::new(proxy.outbound(), "http://orders/"));
    load.wait_more_ok(50, STEP_DEADLINE).await;
    let generation = control.metric("weft_control_source_generation").await;
    let mesh = control.mesh_path().display().to_string();

    // Points at the new app, but with a weight above the maximum: rejected whole.
    let over_weight = format!(
        "services:\n  - name: orders\n    endpoints:\n      - {{address: \"{}\", weight: 20000}}\n",
        new.addr
    );
    // Not YAML at all.
    let broken = "services:\n  - name: orders\n    endpoints: [{address: \"\n".to_string();
    for (i, bad) in [over_weight, broken].iter().enumerate() {
        control.write_mesh_text(bad).expect("write the mesh");
        let rejected = (i + 1) as f64;
        control
            .wait_metric(
                "weft_control_source_changes_rejected_total",
                |v| v >= rejected,
                STEP_DEADLINE,
            )
            .await;
        load.wait_more_ok(100, STEP_DEADLINE).await;
        assert_eq!(
            load.answered_by("app-new"),
            0,
            "a rejected state was served"
        );
        assert_eq!(
            control.metric("weft_control_source_generation").await,
            generation,
            "the served generation moved on a rejected change"
        );
        assert_eq!(
            control.admin_get("/ready").await.expect("/ready").status,
            200
        );
    }
    let output = control.output();
    let rejections: Vec<&str> = output.lines().filter(|l| l.contains("rejected")).collect();
    assert!(
        rejections.len() >= 2 && rejections.iter().all(|l| l.contains(&mesh)),
        "each rejection names the mesh file:\n{}",
        rejections.join("\n")
    );
    assert!(
        rejections[0].contains("weight"),
        "the rejection says why: {}",
        rejections[0]
    );

    // The watch still works: a valid change after the bad ones is served.
    control
        .write_mesh(&[orders().endpoint(new.addr)])
        .expect("write the mesh");
    wait_answered_by(&load, "app-new").await;
    let report = load.stop().await;
    report.assert_no_failures();
    assert!(report.ok > 0 && old.requests() > 0);
    assert_eq!(
        control
            .metric("weft_control_source_changes_rejected_total")
            .await,
        2.0
    );
}
