//! The NATS pair against a real `nats-server` (Debian package `nats-server`); skipped,
//! with a message saying so, when the server is not installed.

mod common;

use std::process::Stdio;

use common::{Proc, example, on_path};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn published_orders_reach_the_consumer() {
    if !on_path("nats-server") {
        eprintln!(
            "SKIPPED published_orders_reach_the_consumer: nats-server is not on PATH \
             (install the Debian package: apt-get install -y nats-server)"
        );
        return;
    }
    let mut server_cmd = tokio::process::Command::new("nats-server");
    server_cmd
        .args(["-a", "127.0.0.1", "-p", "-1", "--http_port", "0"])
        .kill_on_drop(true);
    // -p -1 picks a free port; the server logs which one.
    let mut server = Proc::spawn("nats-server", server_cmd);
    let line = server
        .wait_for_log("Listening for client connections on")
        .await;
    let addr = line
        .rsplit(' ')
        .next()
        .map(str::trim)
        .expect("address at the end of the line")
        .to_owned();
    let nats_url = format!("nats://{addr}");

    let mut cmd = example("nats-consume");
    cmd.args(["--nats-url", &nats_url, "--count", "3"])
        .stdout(Stdio::piped());
    let mut consumer = Proc::spawn("nats-consume", cmd);
    consumer.wait_for_log("subscribed").await;

    let status = example("nats-publish")
        .args(["--nats-url", &nats_url, "--count", "3"])
        .status()
        .await
        .expect("run nats-publish");
    assert!(status.success(), "nats-publish failed");

    let stdout = consumer.child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut received = Vec::new();
    while let Some(line) = tokio::time::timeout(common::PATIENCE, lines.next_line())
        .await
        .expect("consumer prints in time")
        .expect("read consumer stdout")
    {
        received.push(serde_json::from_str::<serde_json::Value>(&line).expect("JSON message"));
    }
    let ids: Vec<_> = received.iter().map(|m| m["order_id"].clone()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert!(received.iter().all(|m| m["type"] == "order.placed"));
    let status = tokio::time::timeout(common::PATIENCE, consumer.child.wait())
        .await
        .expect("consumer exits after --count messages")
        .expect("wait for consumer");
    assert!(status.success());

    // nats-server's own exit status on SIGTERM is not this test's concern.
    server.child.kill().await.expect("stop nats-server");
}
