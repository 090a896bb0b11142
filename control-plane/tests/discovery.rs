//! Discovery over real gRPC connections on 127.0.0.1, fed by real files.

mod support;

use std::fmt::Write as _;

use support::*;
use weft_api::v1;

const MESH: &str = "services:
  - name: orders
    vips: [10.96.0.10]
    ports: [{port: 80, protocol: http1}]
    endpoints:
      - address: 127.0.0.1:8081
  - name: payments
    endpoints:
      - address: 127.0.0.1:9091
";

fn edited_orders(port: u16) -> String {
    MESH.replace("127.0.0.1:8081", &format!("127.0.0.1:{port}"))
}

#[tokio::test]
async fn subscribes_by_every_name_form_and_by_vip() {
    let cp = ControlPlane::start(MESH).await;
    for dest in [
        by_name("orders"),
        by_name("orders.default"),
        by_name("orders.default.svc"),
        by_name("orders.default.svc.cluster.local"),
        by_vip("10.96.0.10", 80),
    ] {
        let mut w = Watcher::subscribe(cp.grpc, dest.clone()).await;
        let update = w.next().await;
        assert_eq!(update.version, 1, "{dest:?}");
        let info = update.service.clone().expect("orders is known");
        assert_eq!(
            (info.name.as_str(), info.namespace.as_str()),
            ("orders", "default")
        );
        assert_eq!(info.vips, ["10.96.0.10"]);
        assert_eq!(endpoints(&update), ["127.0.0.1:8081"]);
    }
    cp.stop().await;
}

#[tokio::test]
async fn edited_file_pushes_a_new_version_to_that_service_only() {
    let cp = ControlPlane::start(MESH).await;
    let mut orders = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    let mut payments = Watcher::subscribe(cp.grpc, by_name("payments")).await;
    assert_eq!(orders.next().await.version, 1);
    assert_eq!(payments.next().await.version, 1);

    cp.write("mesh.yaml", &edited_orders(8082));
    let update = orders.next().await;
    assert_eq!(update.version, 2);
    assert_eq!(endpoints(&update), ["127.0.0.1:8082"]);

    // Had the orders edit reached payments, its next update would be version 1 or 2.
    cp.write(
        "mesh.yaml",
        &edited_orders(8082).replace("127.0.0.1:9091", "127.0.0.1:9092"),
    );
    let update = payments.next().await;
    assert_eq!(update.version, 3);
    assert_eq!(endpoints(&update), ["127.0.0.1:9092"]);
    assert_eq!(cp.metric("weft_control_source_generation").await, 3.0);
    assert_eq!(
        cp.metric("weft_control_source_changes_applied_total").await,
        3.0
    );
    cp.stop().await;
}

#[tokio::test]
async fn in_place_write_is_picked_up_too() {
    let cp = ControlPlane::start(MESH).await;
    let mut orders = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    assert_eq!(orders.next().await.version, 1);
    std::fs::write(&cp.mesh, edited_orders(8083)).expect("write in place");
    let update = orders.until_version(2).await;
    assert_eq!(endpoints(&update), ["127.0.0.1:8083"]);
    cp.stop().await;
}

#[tokio::test]
async fn invalid_edit_is_rejected_and_the_last_good_state_keeps_serving() {
    let cp = ControlPlane::start(MESH).await;
    let mut orders = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    assert_eq!(orders.next().await.version, 1);

    cp.write(
        "mesh.yaml",
        &MESH.replace("127.0.0.1:8081", "not-an-address"),
    );
    cp.wait_metric("weft_control_source_changes_rejected_total", 1.0)
        .await;
    // A new subscriber still gets the last good state.
    let mut late = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    let update = late.next().await;
    assert_eq!(update.version, 1);
    assert_eq!(endpoints(&update), ["127.0.0.1:8081"]);
    assert_eq!(cp.metric("weft_control_source_generation").await, 1.0);

    // The next valid edit is served, and the rejected one used up no version.
    cp.write("mesh.yaml", &edited_orders(8084));
    let update = orders.next().await;
    assert_eq!(update.version, 2);
    assert_eq!(endpoints(&update), ["127.0.0.1:8084"]);
    // Later events for the same bad bytes did not count it again.
    assert_eq!(
        cp.metric("weft_control_source_changes_rejected_total")
            .await,
        1.0
    );
    cp.stop().await;
}

#[tokio::test]
async fn unknown_service_is_watched_until_it_appears() {
    let cp = ControlPlane::start(MESH).await;
    let mut later = Watcher::subscribe(cp.grpc, by_name("later.default.svc.cluster.local")).await;
    let update = later.next().await;
    assert!(
        update.service.is_none(),
        "unknown destination: service unset"
    );
    assert_eq!(update.version, 0);

    let mut unknown_vip = Watcher::subscribe(cp.grpc, by_vip("10.96.0.99", 80)).await;
    assert!(unknown_vip.next().await.service.is_none());

    let grown = format!(
        "{MESH}  - name: later\n    vips: [10.96.0.99]\n    ports: [{{port: 80}}]\n    endpoints: [{{address: '127.0.0.1:7071'}}]\n"
    );
    cp.write("mesh.yaml", &grown);
    for w in [&mut later, &mut unknown_vip] {
        let update = w.next().await;
        assert_eq!(update.version, 2);
        assert_eq!(update.service.as_ref().expect("now known").name, "later");
        assert_eq!(endpoints(&update), ["127.0.0.1:7071"]);
    }

    // Removing it again is a newer version with the service unset.
    cp.write("mesh.yaml", MESH);
    let update = later.next().await;
    assert_eq!(update.version, 3);
    assert!(update.service.is_none());
    cp.stop().await;
}

/// A service large enough that a few updates fill a stream's HTTP/2 window.
fn big_mesh(marker: u16) -> String {
    let mut text = String::from("services:\n  - name: big\n    endpoints:\n");
    for i in 0..2000u32 {
        let port = 10_000 + i;
        let _ = writeln!(
            text,
            "      - {{address: '10.1.{}.{}:{port}', labels: {{zone: z{marker}}}}}",
            i / 250,
            i % 250
        );
    }
    text
}

#[tokio::test]
async fn slow_subscriber_does_not_block_a_fast_one_and_gets_the_latest() {
    const EDITS: u16 = 20;
    let cp = ControlPlane::start(&big_mesh(0)).await;
    // Separate connections, as separate proxies would have. The slow one's HTTP/2
    // window holds about one update, so unread updates back up at the server.
    let mut slow = open_with_window(
        cp.grpc,
        subscribe_request("slow", by_name("big")),
        Some(65_535),
    )
    .await
    .expect("subscribe");
    let mut fast = Watcher::subscribe(cp.grpc, by_name("big")).await;
    assert_eq!(fast.next().await.version, 1);
    for edit in 1..=EDITS {
        cp.write("mesh.yaml", &big_mesh(edit));
        // The fast subscriber sees every version while the slow one reads nothing.
        assert_eq!(fast.next().await.version, u64::from(edit) + 1);
    }
    let last = u64::from(EDITS) + 1;
    let mut received = 0;
    loop {
        let update = slow.next().await;
        received += 1;
        if update.version == last {
            break;
        }
    }
    println!(
        "slow subscriber received {received} of {} versions",
        EDITS + 1
    );
    assert!(
        received < EDITS + 1,
        "slow subscriber got {received} updates: intermediate versions should be skipped"
    );
    cp.stop().await;
}

#[tokio::test]
async fn acks_and_nacks_are_counted() {
    let cp = ControlPlane::start(MESH).await;
    let mut orders = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    let update = orders.next().await;
    orders.result(update.version, true, "").await;
    orders
        .result(
            update.version,
            false,
            "endpoint 127.0.0.1:8081: unsupported",
        )
        .await;
    cp.wait_metric("weft_control_nacks_total", 1.0).await;
    cp.wait_metric("weft_control_acks_total", 1.0).await;
    cp.stop().await;
}

#[tokio::test]
async fn first_request_must_be_subscribe() {
    let cp = ControlPlane::start(MESH).await;
    let ack_first = v1::WatchRequest {
        kind: Some(v1::watch_request::Kind::Result(v1::UpdateResult {
            version: 1,
            applied: true,
            error: String::new(),
        })),
    };
    let status = match open(cp.grpc, ack_first).await {
        Err(status) => status,
        Ok(mut w) => w
            .updates
            .message()
            .await
            .expect_err("a stream without subscribe must fail"),
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    let bad_name = subscribe_request("n", by_name("Not_A_Name"));
    let status = open(cp.grpc, bad_name)
        .await
        .err()
        .expect("bad name rejected");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    cp.stop().await;
}

#[tokio::test]
async fn gauges_follow_connections_and_subscriptions() {
    let cp = ControlPlane::start(MESH).await;
    let mut a = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    let mut b = Watcher::subscribe(cp.grpc, by_name("payments")).await;
    a.next().await;
    b.next().await;
    cp.wait_metric("weft_control_subscriptions", 2.0).await;
    cp.wait_metric("weft_control_connected_proxies", 2.0).await;
    assert_eq!(cp.metric("weft_control_updates_pushed_total").await, 2.0);
    drop(a);
    drop(b);
    cp.wait_metric("weft_control_subscriptions", 0.0).await;
    cp.wait_metric("weft_control_connected_proxies", 0.0).await;
    assert_eq!(http_get(cp.admin, "/live").await.expect("live").0, 200);
    cp.stop().await;
}

#[tokio::test]
async fn push_latency_is_observed_for_changes() {
    let cp = ControlPlane::start(MESH).await;
    let mut orders = Watcher::subscribe(cp.grpc, by_name("orders")).await;
    orders.next().await;
    assert_eq!(
        cp.metric("weft_control_push_latency_seconds_count").await,
        0.0,
        "the initial state is not a change"
    );
    cp.write("mesh.yaml", &edited_orders(8085));
    orders.until_version(2).await;
    cp.wait_metric("weft_control_push_latency_seconds_count", 1.0)
        .await;
    cp.stop().await;
}

#[tokio::test]
async fn directory_of_files_is_merged_and_each_file_watched() {
    let cp = ControlPlane::start_with(
        &[
            (
                "a.yaml",
                "services: [{name: alpha, endpoints: [{address: '127.0.0.1:1001'}]}]\n",
            ),
            (
                "b.yml",
                "services: [{name: beta, endpoints: [{address: '127.0.0.1:2001'}]}]\n",
            ),
        ],
        "",
    )
    .await;
    let mut beta = Watcher::subscribe(cp.grpc, by_name("beta")).await;
    assert_eq!(endpoints(&beta.next().await), ["127.0.0.1:2001"]);
    cp.write(
        "b.yml",
        "services: [{name: beta, endpoints: [{address: '127.0.0.1:2002'}]}]\n",
    );
    let update = beta.next().await;
    assert_eq!(update.version, 2);
    assert_eq!(endpoints(&update), ["127.0.0.1:2002"]);

    // A duplicate across files is rejected as a whole.
    cp.write("c.yaml", "services: [{name: alpha}]\n");
    cp.wait_metric("weft_control_source_changes_rejected_total", 1.0)
        .await;
    cp.stop().await;
}
