//! The broker example through the mesh: a real nats-server (Debian package
//! `nats-server`) behind a weft-proxy inbound, and the example publisher and
//! consumer reaching it through another proxy's upstream listener, whose
//! destination comes from the control plane. NATS speaks first (the server sends
//! INFO before the client says anything), so with detection left on, this also
//! proves sniffing gives up in time instead of hanging.
//!
//! The client proxy reports to the control plane: the subscribed consumer's
//! connection shows in the live view and `weftctl top` as a TCP service.
//!
//! Without nats-server the tests are skipped with a message, or fail under `CI=true`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use weft_tests::control::WeftControl;
use weft_tests::demo::{live_tcp_service, weftctl_top};
use weft_tests::ports::free_addr;
use weft_tests::process::Process;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, bins, eventually, tools};

const MESSAGES: usize = 3;

/// Starts nats-server on a free loopback port and waits until it greets clients.
async fn start_nats(binary: &Path, log_dir: &Path) -> (Process, SocketAddr) {
    let addr = free_addr();
    let mut cmd = Command::new(binary);
    cmd.args(["-a", "127.0.0.1", "-p", &addr.port().to_string()]);
    let mut server = Process::spawn("nats-server", cmd, log_dir).expect("start nats-server");
    let greets = || async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut greeting = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut greeting))
            .await
            .ok()?
            .ok()?;
        (&greeting == b"INFO ").then_some(())
    };
    let deadline = Instant::now() + STEP_DEADLINE;
    while greets().await.is_none() {
        if let Ok(Some(status)) = server.try_exit() {
            panic!("nats-server exited ({status}):\n{}", server.output());
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not greet a client within {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (server, addr)
}

/// Waits until `process` has written `text`; fails early if it exits first.
async fn wait_for_output(process: &mut Process, text: &str) {
    let deadline = Instant::now() + STEP_DEADLINE;
    while !process.output().contains(text) {
        if let Ok(Some(status)) = process.try_exit() {
            panic!(
                "{} exited ({status}) before writing {text:?}:\n{}",
                process.name(),
                process.output()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not write {text:?} within {STEP_DEADLINE:?}",
            process.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn example(name: &str, nats_url: &str, subject: &str, count: usize) -> Command {
    let mut cmd = Command::new(bins::binary(name).expect("example binary"));
    cmd.args([
        "--nats-url",
        nats_url,
        "--subject",
        subject,
        "--count",
        &count.to_string(),
    ])
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    cmd
}

/// nats-server ← server proxy inbound ← client proxy upstream listener ← examples.
/// `protocol` is the `nats` service port's protocol in the mesh (None: not declared).
async fn event_crosses_the_mesh(test: &str, protocol: Option<&str>) {
    let Some(nats_bin) = tools::require("nats-server", "nats-server", test) else {
        return;
    };
    let logs = tempfile::Builder::new()
        .prefix("weft-e2e-nats-")
        .tempdir()
        .expect("temp dir");
    let (_nats, nats_addr) = start_nats(&nats_bin, logs.path()).await;
    // Short sniffing, so a silent client costs little; it still has to give up.
    let server = WeftProxy::start_named(
        "server-proxy",
        ProxyConfig::new()
            .inbound(nats_addr)
            .limit("detect_timeout", "300ms"),
    )
    .await
    .expect("start server proxy");
    let mut nats = ServiceDef::new("nats").endpoint(server.inbound());
    if let Some(protocol) = protocol {
        nats = nats.port(4222, protocol);
    }
    let control = WeftControl::start(&[nats])
        .await
        .expect("start the control plane");
    let client = WeftProxy::start_named(
        "client-proxy",
        ProxyConfig::new()
            .upstream("nats")
            .limit("detect_timeout", "300ms")
            .control_plane(&control.url())
            .workload("orders"),
    )
    .await
    .expect("start client proxy");
    let nats_url = format!("nats://{}", client.upstream("nats"));
    let subject = "order.placed";

    let mut consumer = Process::spawn(
        "nats-consume",
        example("nats-consume", &nats_url, subject, MESSAGES),
        logs.path(),
    )
    .expect("start nats-consume");
    wait_for_output(&mut consumer, "subscribed").await;
    consumer_shows_in_the_live_view(&control).await;
    let mut publisher = Process::spawn(
        "nats-publish",
        example("nats-publish", &nats_url, subject, MESSAGES),
        logs.path(),
    )
    .expect("start nats-publish");
    let published = publisher
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("nats-publish ends");
    assert!(published.success(), "nats-publish: {}", publisher.output());
    let consumed = consumer
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("nats-consume ends after --count messages");
    assert!(consumed.success(), "nats-consume: {}", consumer.output());

    // The consumer prints each payload (JSON) as one line on stdout.
    let output = consumer.output();
    let ids: Vec<u64> = output
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON event"))
        .inspect(|event| assert_eq!(event["type"], "order.placed", "{event}"))
        .filter_map(|event| event["order_id"].as_u64())
        .collect();
    assert_eq!(ids, [1, 2, 3], "events received:\n{output}");

    // Both connections went through both proxies as opaque TCP.
    let opened = ("weft_tcp_connections_opened_total", "direction");
    let outbound = client
        .metrics()
        .await
        .expect("client proxy metrics")
        .value(opened.0, &[(opened.1, "outbound")]);
    let inbound = server
        .metrics()
        .await
        .expect("server proxy metrics")
        .value(opened.0, &[(opened.1, "inbound")]);
    assert!(
        outbound >= 2.0 && inbound >= 2.0,
        "connections: client outbound {outbound}, server inbound {inbound}"
    );
}

/// The subscribed consumer's connection, as the client proxy reports it: the
/// control plane's live view lists `nats` among its TCP services with it open, and
/// `weftctl top` prints that line.
async fn consumer_shows_in_the_live_view(control: &WeftControl) {
    let limit = Duration::from_secs(30);
    let nats = eventually(limit, "nats open in the live view", || async {
        let reply = weft_tests::admin::get(control.admin(), "/api/summary")
            .await
            .ok()?;
        let s: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        let nats = live_tcp_service(&s, "10s", "nats.default")?;
        (nats["open_connections"].as_u64()? >= 1).then(|| nats.clone())
    })
    .await;
    // Plaintext here: no identities in this mesh.
    assert_eq!(nats["tls_share"], 0.0, "{nats:#}");
    let text = weftctl_top(control.admin(), &["--iterations", "1"], limit)
        .await
        .expect("weftctl top");
    let open = |name: &str| {
        text.lines().find_map(|l| {
            let cells: Vec<&str> = l.trim_start_matches("  ← ").split_whitespace().collect();
            (cells.first() == Some(&name) && cells.len() == 7).then(|| cells[1].parse::<u64>())
        })
    };
    assert!(
        matches!(open("nats"), Some(Ok(n)) if n >= 1),
        "no nats TCP line with an open connection in:\n{text}"
    );
    assert!(
        matches!(open("orders"), Some(Ok(n)) if n >= 1),
        "no caller line under nats in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_event_crosses_the_mesh_as_declared_opaque_tcp() {
    event_crosses_the_mesh(
        "nats_event_crosses_the_mesh_as_declared_opaque_tcp",
        Some("opaque"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_event_crosses_the_mesh_with_protocol_detection() {
    event_crosses_the_mesh("nats_event_crosses_the_mesh_with_protocol_detection", None).await;
}
