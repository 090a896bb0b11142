//! `weft-control demo`, the local mesh as one command, run as a user would.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use http::StatusCode;
use nix::sys::signal::Signal;
use weft_tests::admin;
use weft_tests::demo::{Demo, SERVICES, last_summary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_checkout_mesh_and_stops_every_child_cleanly() {
    let mut demo = Demo::start(&["--duration", "8"]).expect("start the demo");
    // Start-up (11 processes) plus 8 s of traffic plus a clean stop.
    let status = demo
        .process()
        .wait_exit(Duration::from_secs(120))
        .await
        .expect("the demo ends by itself after --duration");
    let output = demo.output();
    assert!(status.success(), "the demo exited with {status}:\n{output}");

    // It tells the user where to point Prometheus or curl.
    let control = format!("metrics http://{}/metrics", demo.control_admin());
    assert!(output.contains(&control), "no {control:?} in:\n{output}");
    for service in SERVICES {
        let admin = format!("metrics http://{}/metrics", demo.proxy_admin(service));
        assert!(
            output
                .lines()
                .any(|l| l.trim_start().starts_with(service) && l.contains(&admin)),
            "no line for {service} with {admin:?} in:\n{output}"
        );
    }

    let rows = last_summary(&output).unwrap_or_else(|| panic!("no summary in:\n{output}"));
    for (row, service) in rows.iter().zip(SERVICES) {
        assert_eq!(row.service, service);
        assert!(row.rps > 0.0, "{service} had no traffic:\n{output}");
        assert_eq!(
            row.success, "100.00%",
            "{service} failed requests:\n{output}"
        );
    }
    assert!(
        output.contains("all stopped cleanly"),
        "not every child stopped cleanly:\n{output}"
    );
    // Nothing outlived the demo: its proxies' and control plane's ports are free.
    for addr in SERVICES
        .iter()
        .map(|s| demo.proxy_admin(s))
        .chain([demo.control_admin()])
    {
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, addr.port())).is_ok(),
            "{addr} is still bound after the demo exited"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_stopped_during_start_up_leaves_no_child_behind() {
    let mut demo = Demo::start(&["--duration", "60"]).expect("start the demo");
    // The control plane is its first child; the proxies and apps are still starting.
    let control = demo.control_admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(admin::get(control, "/ready").await, Ok(r) if r.status == 200) {
        assert!(
            demo.process().try_exit().expect("poll the demo").is_none(),
            "the demo exited early:\n{}",
            demo.output()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo's control plane never became ready:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    demo.process()
        .signal(Signal::SIGTERM)
        .expect("SIGTERM the demo");
    let status = demo
        .process()
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the demo stops");
    let output = demo.output();
    assert!(status.success(), "the demo exited with {status}:\n{output}");
    assert!(output.contains("all stopped cleanly"), "{output}");
    for addr in SERVICES
        .iter()
        .map(|s| demo.proxy_admin(s))
        .chain([control])
    {
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, addr.port())).is_ok(),
            "{addr} is still bound after the demo exited:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gateway_routes_api_orders_to_orders_and_api_profile_to_web() {
    let mut demo = Demo::start(&["--duration", "60"]).expect("start the demo");
    demo.wait_up(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", demo.output()));
    let gateway = demo.gateway();
    assert!(
        demo.output()
            .contains(&format!("curl http://{gateway}/api/orders")),
        "the demo tells the user where the gateway is:\n{}",
        demo.output()
    );
    let mut c = demo.gateway_client().await.expect("connect to the gateway");
    let orders = c
        .get("/api/orders?user=1")
        .await
        .expect("orders through the gateway");
    assert_eq!(orders.status, StatusCode::OK, "{}", orders.text());
    assert!(
        orders.text().contains("\"orders\""),
        "orders' list: {}",
        orders.text()
    );
    let profile = c
        .get("/api/profile/1")
        .await
        .expect("a profile through the gateway");
    assert_eq!(profile.status, StatusCode::OK, "{}", profile.text());
    assert!(
        profile.text().contains("\"user\"") && profile.text().contains("\"orders\""),
        "web composed it: {}",
        profile.text()
    );
    let unknown = c
        .get_as("/", "elsewhere.example")
        .await
        .expect("an answer for an unknown host");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    demo.process()
        .signal(Signal::SIGTERM)
        .expect("SIGTERM the demo");
    let status = demo
        .process()
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the demo stops");
    assert!(status.success(), "{}", demo.output());
}
