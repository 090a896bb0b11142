//! The example binaries as real processes: flags, readiness logs, loadgen against the
//! whole chain, `http_proxy` from the environment, and a clean exit on SIGTERM.

mod common;

use common::{Proc, Recorder, client, eventually, example, json};

fn listen_any(name: &str) -> tokio::process::Command {
    let mut cmd = example(name);
    cmd.args(["--listen", "127.0.0.1:0"]);
    cmd
}

#[tokio::test]
async fn loadgen_drives_the_whole_chain_and_every_service_stops_on_sigterm() {
    let mut payments = Proc::spawn("payments", listen_any("payments"));
    let payments_addr = payments.listening_addr().await;
    let mut notifications = Proc::spawn("notifications", listen_any("notifications"));
    let notifications_addr = notifications.listening_addr().await;
    let mut users = Proc::spawn("users", listen_any("users"));
    let users_addr = users.listening_addr().await;

    let mut cmd = listen_any("orders");
    cmd.env("PAYMENTS_ADDR", format!("http://{payments_addr}"))
        .env("EVENTS_URL", format!("http://{notifications_addr}/events"));
    let mut orders = Proc::spawn("orders", cmd);
    let orders_addr = orders.listening_addr().await;

    let mut cmd = listen_any("web");
    cmd.args(["--orders-url", &format!("http://{orders_addr}")])
        .env("USERS_URL", format!("http://{users_addr}"));
    let mut web = Proc::spawn("web", cmd);
    let web_addr = web.listening_addr().await;

    let output = example("loadgen")
        .args(["--target", &format!("http://{web_addr}")])
        .args([
            "--rps",
            "100",
            "--count",
            "20",
            "--duration",
            "30",
            "--users",
            "5",
        ])
        .output()
        .await
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "loadgen failed: {stdout}");
    assert!(
        stdout.trim().starts_with("sent=20 ok=20 failed=0 p50="),
        "summary: {stdout}"
    );

    // Ten of the twenty requests were checkouts; each publishes one event.
    let events_url = format!("http://{notifications_addr}/events");
    eventually("ten order.placed events", || async {
        let reply = client().get(&events_url).await.ok()?;
        (json(&reply)["count"] == 10).then_some(())
    })
    .await;

    // One of the ten profile reads was a sign-up: the first user above users' 1000.
    let signed_up = format!("http://{users_addr}/users/1001");
    let reply = client().get(&signed_up).await.expect("users answers");
    assert_eq!(json(&reply)["name"], "Load User 19", "{reply:?}");

    for service in [web, orders, users, notifications, payments] {
        let name = service.name.clone();
        let status = service.terminate().await;
        assert_eq!(status.code(), Some(0), "{name} exit status");
    }
}

#[tokio::test]
async fn loadgen_reaches_web_through_the_http_proxy_variable() {
    let proxy = Recorder::start().await;
    let output = example("loadgen")
        .env("HTTP_PROXY", format!("http://{}", proxy.addr))
        .args(["--target", "http://web.mesh.invalid:8080"])
        .args([
            "--rps",
            "50",
            "--count",
            "4",
            "--duration",
            "30",
            "--users",
            "1",
        ])
        .output()
        .await
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "loadgen failed: {stdout}");
    assert!(
        stdout.starts_with("sent=4 ok=4 failed=0"),
        "summary: {stdout}"
    );
    let mut lines = proxy.request_lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "GET http://web.mesh.invalid:8080/profile/1 HTTP/1.1",
            "GET http://web.mesh.invalid:8080/profile/1 HTTP/1.1",
            "POST http://web.mesh.invalid:8080/checkout HTTP/1.1",
            "POST http://web.mesh.invalid:8080/checkout HTTP/1.1",
        ]
    );
}

#[tokio::test]
async fn loadgen_stops_by_duration_and_fails_when_nothing_succeeds() {
    let dead = common::dead_addr().await;
    let output = example("loadgen")
        .args(["--target", &format!("http://{dead}")])
        .args(["--rps", "20", "--duration", "1"])
        .output()
        .await
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "summary: {stdout}");
    assert!(stdout.contains(" ok=0 "), "summary: {stdout}");
    assert!(!stdout.starts_with("sent=0 "), "summary: {stdout}");
}

#[tokio::test]
async fn invalid_flags_are_refused_at_startup() {
    let output = example("web")
        .args(["--listen", "127.0.0.1:0", "--orders-url", "https://orders"])
        .output()
        .await
        .expect("run web");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--orders-url"));

    let output = example("orders")
        .args(["--listen", "127.0.0.1:0"])
        .env("http_proxy", "https://proxy:443")
        .output()
        .await
        .expect("run orders");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("http_proxy"));
}

#[tokio::test]
async fn services_stop_cleanly_on_sigint() {
    for name in ["payments", "notifications", "users", "orders", "web"] {
        let mut service = Proc::spawn(name, listen_any(name));
        service.listening_addr().await;
        let status = service.signal("INT").await;
        assert_eq!(status.code(), Some(0), "{name} exit status");
    }
}
