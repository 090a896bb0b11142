//! The checkout over RabbitMQ through the mesh, checked by content: the order a
//! checkout places is paid over gRPC, its event crosses the broker and the
//! notification names it; a sign-up is announced; inventory reserves stock by
//! request-reply and a reservation nobody answers fails cleanly; a broker restarted
//! under load loses no confirmed event and its clients reconnect through the mesh.
//! The same events switched to Kafka (KRaft) cross it through the sidecars too, the
//! broker advertising an address its clients' sidecar serves or captures.
//!
//! Without `rabbitmq-server` (Debian package), or Java and Kafka's jars (Maven,
//! tests/kafka/install.sh) for the Kafka tests, the tests are skipped with a
//! message, or fail under `CI=true`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use weft_tests::client::{self, H1Client};
use weft_tests::demo::Demo;
use weft_tests::kafka::{self, Kafka};
use weft_tests::mtls_pair::{MtlsPair, PairOptions, SERVER_ID};
use weft_tests::netns::{self, Node, Sidecars};
use weft_tests::ports::{free_addr, free_port};
use weft_tests::process::Process;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::rabbitmq::{self, RabbitMq};
use weft_tests::wire::{WireCapture, hex};
use weft_tests::{STEP_DEADLINE, bins, eventually, poll_every};

/// Sends `method path` with a JSON body (or none) to `addr`; the status and JSON.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut c = H1Client::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = client::request(
        method,
        path,
        &[("host", "localhost"), ("content-type", "application/json")],
        body,
    );
    let reply = c.send(req).await.expect("a reply");
    let json = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status.as_u16(), json)
}

/// The notifications service's notifications.
async fn notifications(addr: SocketAddr) -> Vec<Value> {
    let (status, body) = call(addr, "GET", "/notifications", None).await;
    assert_eq!(status, 200, "{body}");
    body["recent"].as_array().cloned().unwrap_or_default()
}

fn spiffe(name: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{name}")
}

/// The whole demo, mTLS on every hop: a checkout through web, paid over gRPC,
/// its stock reserved by inventory over the broker, its event consumed by
/// notifications, which names the order; a sign-up is announced the same way. The
/// broker's sidecar counts the AMQP connections per calling identity, over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_sign_up_events_cross_the_broker_and_name_their_subject() {
    if rabbitmq::require("checkout_and_sign_up_events_cross_the_broker").is_none() {
        return;
    }
    let mut demo = Demo::start(&["--duration", "600", "--rps", "2"]).expect("start the demo");
    demo.wait_up(Duration::from_secs(150))
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", demo.output()));
    let edge = demo.inbound("web");

    // A user the load generator never orders for (it uses 1..=100).
    let order = json!({"item": "teapot", "quantity": 2, "amount_cents": 2500, "user": "420"});
    let (status, placed) = call(edge, "POST", "/checkout", Some(order)).await;
    assert_eq!(status, 201, "{placed}");
    let id = placed["id"].as_u64().expect("an order id");
    let payment = placed["payment_id"].as_str().expect("a payment id");
    assert!(payment.starts_with("pay-"), "paid over gRPC: {placed}");
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["event"], "confirmed", "{placed}");
    let left = placed["stock_remaining"].as_u64().expect("reserved stock");
    assert!(left < 1_000_000, "inventory took 2 teapots: {placed}");

    let notified = demo.app("notifications");
    let note = eventually(STEP_DEADLINE, "the order's notification", || async {
        notifications(notified)
            .await
            .into_iter()
            .find(|n| n["order_id"].as_u64() == Some(id))
    })
    .await;
    assert_eq!(note["event"], "order.placed");
    assert_eq!(
        note["message"],
        format!("Order {id} placed: 2 x teapot for user 420, payment {payment}")
    );

    // The same composition as GraphQL: exactly the fields asked for, the payment
    // as payments recorded it (gRPC), each resolver going through web's sidecar.
    let query = json!({
        "query": "query($id: ID!) { user(id: $id) { name orders { id item payment { id status } } } }",
        "variables": {"id": "420"},
    });
    let (status, answer) = call(edge, "POST", "/graphql", Some(query)).await;
    assert_eq!(status, 200, "{answer}");
    let (status, user) = call(demo.app("users"), "GET", "/users/420", None).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        answer,
        json!({"data": {"user": {
            "name": user["name"],
            "orders": [{
                "id": id.to_string(),
                "item": "teapot",
                "payment": {"id": payment, "status": "approved"},
            }],
        }}}),
        "nothing more, nothing less"
    );

    let sign_up = json!({"name": "Grace Hopper", "email": "grace@example.com"});
    let (status, user) = call(edge, "POST", "/signup", Some(sign_up)).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["event"], "confirmed", "{user}");
    let user_id = user["id"].as_str().expect("a user id").to_string();
    let welcome = eventually(STEP_DEADLINE, "the sign-up's notification", || async {
        notifications(notified)
            .await
            .into_iter()
            .find(|n| n["event"] == "user.signed_up" && n["user_id"] == user_id.as_str())
    })
    .await;
    assert_eq!(
        welcome["message"],
        format!("Welcome, Grace Hopper (user {user_id})")
    );
    // The load generator signs users up too (one profile read in ten), and their
    // welcomes arrive the same way.
    let load = eventually(STEP_DEADLINE, "a load generator's sign-up", || async {
        notifications(notified).await.into_iter().find(|n| {
            n["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Welcome, Load User "))
        })
    })
    .await;
    assert_eq!(load["event"], "user.signed_up", "{load}");
    let load_user: u64 = load["user_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a user id");
    assert!(
        load_user > 1000,
        "a signed-up user, not one of the 1000: {load}"
    );

    // Every client of the broker reached it over mTLS, counted with its identity.
    let broker = weft_tests::admin::get(demo.proxy_admin("rabbitmq"), "/metrics")
        .await
        .expect("broker sidecar metrics");
    let metrics = weft_tests::metrics::Metrics::parse(&broker.body);
    for caller in ["orders", "users", "notifications", "inventory"] {
        let id = spiffe(caller);
        let labels = [
            ("direction", "inbound"),
            ("service", "rabbitmq"),
            ("peer_identity", id.as_str()),
            ("tls", "true"),
        ];
        let open = metrics.get("weft_tcp_service_open_connections", &labels);
        assert!(
            open.is_some_and(|n| n >= 1.0),
            "{caller}: {open:?} open connections"
        );
    }
    assert_eq!(
        metrics.sum("weft_tcp_service_connections_total", &[("tls", "false")]),
        0.0,
        "no plaintext connection reached the broker"
    );
}

/// A broker behind its sidecar, a client sidecar whose `rabbitmq` upstream the
/// apps use, and the apps of the checkout that use the broker.
struct BrokerMesh {
    broker: RabbitMq,
    _broker_proxy: WeftProxy,
    client_proxy: WeftProxy,
    logs: tempfile::TempDir,
}

impl BrokerMesh {
    async fn start(test: &str) -> Option<BrokerMesh> {
        let broker = RabbitMq::start(test).await?;
        let broker_proxy = WeftProxy::start_named(
            "broker-proxy",
            ProxyConfig::new().inbound(broker.addr).workload("rabbitmq"),
        )
        .await
        .expect("start the broker's sidecar");
        // No protocol: AMQP's port is opaque by the default list.
        let service = ServiceDef::new("rabbitmq")
            .port(5672, "detect")
            .endpoint(broker_proxy.inbound());
        let client_proxy = WeftProxy::start_named(
            "client-proxy",
            ProxyConfig::new().upstream("rabbitmq").service(service),
        )
        .await
        .expect("start the clients' sidecar");
        let logs = tempfile::Builder::new()
            .prefix("weft-e2e-broker-")
            .tempdir()
            .expect("temp dir");
        Some(BrokerMesh {
            broker,
            _broker_proxy: broker_proxy,
            client_proxy,
            logs,
        })
    }

    fn amqp_url(&self) -> String {
        RabbitMq::url_at(self.client_proxy.upstream("rabbitmq"))
    }

    /// Starts example `name` on a free port with `args`; waits for its health.
    async fn app(&self, name: &str, args: &[&str]) -> (Process, SocketAddr) {
        start_app(self.logs.path(), name, args).await
    }

    /// payments, then orders using it and the broker (`timeout_ms` for inventory).
    async fn orders(&self, timeout_ms: &str) -> (Process, Process, SocketAddr) {
        let (payments, payments_addr) = self.app("payments", &[]).await;
        let url = self.amqp_url();
        let payments_url = format!("http://{payments_addr}");
        let (orders, addr) = self
            .app(
                "orders",
                &[
                    "--payments",
                    &payments_url,
                    "--amqp-url",
                    &url,
                    "--inventory-timeout-ms",
                    timeout_ms,
                ],
            )
            .await;
        (payments, orders, addr)
    }
}

/// Starts example `name` on a free port with `args`, its log in `logs`; waits for
/// its health.
async fn start_app(logs: &std::path::Path, name: &str, args: &[&str]) -> (Process, SocketAddr) {
    let addr = free_addr();
    let mut cmd = Command::new(bins::binary(name).expect("example binary"));
    cmd.arg("--listen")
        .arg(addr.to_string())
        .args(args)
        .env("RUST_LOG", "info,weft_examples=debug")
        .env("NO_COLOR", "1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY");
    let mut process = Process::spawn(name, cmd, logs).expect("start app");
    let grpc = name == "payments";
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        let up = if grpc {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        } else {
            weft_tests::admin::get(addr, "/healthz")
                .await
                .is_ok_and(|r| r.status == 200)
        };
        if up {
            return (process, addr);
        }
        if let Ok(Some(status)) = process.try_exit() {
            panic!("{name} exited ({status}):\n{}", process.output());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not healthy within {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn order(item: &str, quantity: u32) -> Value {
    json!({"item": item, "quantity": quantity, "amount_cents": 100, "user": "5"})
}

/// Inventory answers reservations over the broker until it runs out; with its
/// consumer stopped, a reservation fails after the timeout with an error that names
/// inventory's queue, and orders keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_reserves_stock_and_times_out_cleanly_without_a_consumer() {
    let Some(mesh) = BrokerMesh::start("request_reply_reserves_stock").await else {
        return;
    };
    let url = mesh.amqp_url();
    let (mut inventory, _) = mesh
        .app("inventory", &["--amqp-url", &url, "--stock", "10"])
        .await;
    let (_payments, _orders, orders) = mesh.orders("1000").await;

    // Inventory is healthy only once its queues are bound, so the first
    // reservation finds one.
    let (status, first) = call(orders, "POST", "/orders", Some(order("lamp", 3))).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["stock_remaining"], 7, "{first}");
    let (status, second) = call(orders, "POST", "/orders", Some(order("lamp", 3))).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["stock_remaining"], 4, "{second}");
    let (status, refused) = call(orders, "POST", "/orders", Some(order("lamp", 5))).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"], "out of stock");
    assert_eq!(refused["remaining"], 4);

    let stopped = inventory.stop().await.expect("stop inventory");
    assert!(stopped.success(), "inventory: {}", inventory.output());
    let (status, timed_out) = call(orders, "POST", "/orders", Some(order("lamp", 1))).await;
    assert_eq!(status, 504, "{timed_out}");
    assert_eq!(timed_out["dependency"], "inventory");
    assert_eq!(
        timed_out["error"],
        "inventory: no consumer of \"inventory.reserve\" answered within 1s"
    );
    // Orders is fine: its other endpoints answer, with the two orders it placed.
    let (status, listed) = call(orders, "GET", "/orders?user=5", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["orders"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

/// Inventory whose broker cannot be reached is not ready: its `/healthz` answers
/// 503 (so the demo, or a readiness probe, sends it nothing yet) while the rest of
/// it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_is_not_ready_until_its_queues_are_bound() {
    let logs = tempfile::tempdir().expect("log dir");
    // A port nothing listens on: the consumer keeps retrying.
    let nowhere = free_addr();
    let addr = free_addr();
    let mut cmd = Command::new(bins::binary("inventory").expect("example binary"));
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--amqp-url")
        .arg(RabbitMq::url_at(nowhere))
        .env("NO_COLOR", "1");
    let mut inventory = Process::spawn("inventory", cmd, logs.path()).expect("start inventory");
    let stock = eventually(STEP_DEADLINE, "inventory's /stock", || async {
        weft_tests::admin::get(addr, "/stock").await.ok()
    })
    .await;
    assert_eq!(stock.status, 200, "the app itself serves: {}", stock.body);
    // Bounded: 20 probes over about a second, every one refused.
    for _ in 0..20 {
        let health = weft_tests::admin::get(addr, "/healthz")
            .await
            .expect("inventory answers");
        assert_eq!(
            health.status, 503,
            "ready without a broker: {}",
            health.body
        );
        assert!(health.body.contains("starting"), "{}", health.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        inventory.try_exit().ok().flatten().is_none(),
        "inventory exited: {}",
        inventory.output()
    );
}

/// A checkout whose payment is declined gives its reserved stock back: orders
/// asks inventory to release it over the broker, inventory's `/stock` shows the
/// full count again, and the next order can take all of it; a second decline of
/// the same quantity releases only its own reservation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_reserved_for_a_declined_payment_is_released() {
    let Some(mesh) = BrokerMesh::start("stock_reserved_for_a_declined_payment").await else {
        return;
    };
    let url = mesh.amqp_url();
    let (inventory, stock) = mesh
        .app("inventory", &["--amqp-url", &url, "--stock", "10"])
        .await;
    // Both of inventory's queues exist once it consumes them.
    eventually(STEP_DEADLINE, "inventory consumes releases", || async {
        let log = inventory.output();
        log.lines()
            .any(|l| l.contains("consuming") && l.contains("inventory.release"))
            .then_some(())
    })
    .await;
    let (_payments, _orders, orders) = mesh.orders("2000").await;
    let declined = json!({"item": "clock", "quantity": 4, "amount_cents": 500_000, "user": "5"});
    let (status, refused) = eventually(STEP_DEADLINE, "a first reservation", || async {
        let reply = call(orders, "POST", "/orders", Some(declined.clone())).await;
        (reply.0 != 502).then_some(reply)
    })
    .await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["error"], "payment declined");
    assert_eq!(refused["stock_released"], 4, "{refused}");
    assert_eq!(refused["stock_remaining"], 10, "{refused}");
    let (status, left) = call(stock, "GET", "/stock", None).await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(left["left"]["clock"], 10, "{left}");

    // Stock held by a placed order stays taken; a declined one's comes back.
    let (status, placed) = call(orders, "POST", "/orders", Some(order("clock", 7))).await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["stock_remaining"], 3, "{placed}");
    let declined = json!({"item": "clock", "quantity": 3, "amount_cents": 500_000, "user": "5"});
    let (status, refused) = call(orders, "POST", "/orders", Some(declined)).await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["stock_remaining"], 3, "{refused}");
    let (status, last) = call(orders, "POST", "/orders", Some(order("clock", 3))).await;
    assert_eq!(status, 201, "{last}");
    assert_eq!(last["stock_remaining"], 0, "{last}");
}

/// Orders placed while the broker stops and starts again: every order whose
/// event the broker confirmed reaches notifications (durable queue, persistent
/// messages, acks after handling), and orders and notifications reconnect through
/// their sidecar by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_under_load_loses_no_confirmed_event() {
    let Some(mut mesh) = BrokerMesh::start("a_broker_restarted_under_load").await else {
        return;
    };
    let url = mesh.amqp_url();
    let (_inventory, _) = mesh.app("inventory", &["--amqp-url", &url]).await;
    let (_notifications, notified) = mesh
        .app("notifications", &["--amqp-url", &url, "--keep", "5000"])
        .await;
    let (_payments, _orders, orders) = mesh.orders("2000").await;
    // Both queues exist (inventory's and notifications') once an event arrives.
    eventually(STEP_DEADLINE, "a first confirmed event", || async {
        let (status, body) = call(orders, "POST", "/orders", Some(order("pen", 1))).await;
        (status == 201 && body["event"] == "confirmed").then_some(())
    })
    .await;
    let connections = |m: &weft_tests::metrics::Metrics| {
        m.sum(
            "weft_tcp_service_connections_total",
            &[("direction", "outbound"), ("service", "rabbitmq.default")],
        )
    };
    let before = connections(&mesh.client_proxy.metrics().await.expect("metrics"));

    // Load: one checkout after another, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut confirmed = Vec::new();
            let mut failed = 0u32;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            for _ in 0..2000 {
                if stop.load(Ordering::SeqCst) || tokio::time::Instant::now() > deadline {
                    break;
                }
                let (status, body) = call(orders, "POST", "/orders", Some(order("pen", 1))).await;
                match (status, body["id"].as_u64()) {
                    (201, Some(id)) if body["event"] == "confirmed" => confirmed.push(id),
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (confirmed, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.broker.stop().await.expect("stop the broker");
    mesh.broker
        .start_again()
        .await
        .expect("start the broker again");
    // Checkouts succeed again: orders reconnected (its sidecar counts new
    // connections to the broker's service).
    let last = std::sync::Mutex::new(None);
    let reconnected = poll_every(
        Duration::from_millis(10),
        Duration::from_secs(60),
        "orders reconnects",
        || async {
            let (status, body) = call(orders, "POST", "/orders", Some(order("pen", 1))).await;
            let placed = status == 201 && body["event"] == "confirmed";
            *last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((status, body));
            placed.then_some(())
        },
    )
    .await;
    if let Err(e) = reconnected {
        let broker = mesh.broker.output();
        let tail: Vec<&str> = broker.lines().rev().take(40).collect();
        panic!(
            "{e}; orders' last answer: {:?}\nthe restarted broker's last lines:\n{}",
            last.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (confirmed, failed) = load.await.expect("the load task");
    let after = connections(&mesh.client_proxy.metrics().await.expect("metrics"));
    assert!(
        after >= before + 2.0,
        "reconnections through the sidecar: {before} before, {after} after"
    );
    assert!(
        confirmed.len() >= 10,
        "{} confirmed, {failed} failed",
        confirmed.len()
    );

    let want: BTreeSet<u64> = confirmed.iter().copied().collect();
    let missing = eventually(Duration::from_secs(60), "every confirmed event", || async {
        let seen: BTreeSet<u64> = notifications(notified)
            .await
            .iter()
            .filter_map(|n| n["order_id"].as_u64())
            .collect();
        want.is_subset(&seen).then_some(())
    })
    .await;
    let () = missing;
    eprintln!(
        "{} orders confirmed, {failed} refused while the broker was away",
        confirmed.len()
    );
}

/// A node with pods `a` and `b` for the tests that watch the bridge with tshark, or
/// `None` (skipped, or a failure under `CI=true`) without tshark.
fn pods_on_a_watched_bridge(test: &str) -> Option<(Node, netns::Pod, netns::Pod)> {
    if !netns::on_path("tshark") {
        assert!(!weft_tests::tools::in_ci(), "tshark is not installed");
        eprintln!("SKIPPED {test}: tshark is not installed");
        return None;
    }
    let mut node = Node::create().expect("create the node");
    let a = node.pod("a").expect("pod a");
    let b = node.pod("b").expect("pod b");
    Some((node, a, b))
}

/// Starts a broker's programs inside `pod`'s network namespace.
fn in_pod(pod: &netns::Pod) -> rabbitmq::Launcher {
    let netns = pod.netns.clone();
    Box::new(move |program| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns]).arg(program);
        cmd
    })
}

/// The bridge carried TLS on the broker's `port`, nothing tshark decodes as
/// `protocol`, and not the signed-up user's `name`.
fn assert_only_tls_between_the_pods(wire: &WireCapture, port: u16, protocol: &str, name: &str) {
    let tls = format!("tls && tcp.port == {port}");
    assert!(
        !wire.read(&tls, &["frame.number"]).trim().is_empty(),
        "no TLS on the broker's port {port} between the pods"
    );
    assert!(
        wire.read(protocol, &["frame.number"]).trim().is_empty(),
        "{protocol} in clear on the wire"
    );
    assert!(
        !wire.payload_hex().contains(&hex(name.as_bytes())),
        "the new user's name crossed in clear"
    );
}

/// Starts notifications and users in pod `a`, their events on the broker that
/// `broker` (their flags) names, then signs `name` up through users while tshark
/// records the node's bridge: users answers that the broker confirmed the event and
/// notifications welcomes the new user. The capture (still running) and the apps.
async fn sign_up_in_pod(
    node: &Node,
    a: &netns::Pod,
    b: &netns::Pod,
    broker: &[&str],
    name: &str,
) -> (WireCapture, [Process; 2]) {
    let bin = |name: &str| bins::binary(name).expect("example binary");
    let notifications = a
        .spawn(
            "notifications",
            None,
            &bin("notifications").to_string_lossy(),
            &[&["--listen", "127.0.0.1:8084"], broker].concat(),
        )
        .expect("notifications in a");
    let users_app = a
        .spawn(
            "users",
            None,
            &bin("users").to_string_lossy(),
            &[&["--listen", "127.0.0.1:8082"], broker].concat(),
        )
        .expect("users in a");
    let users = SocketAddr::from(([127, 0, 0, 1], 8082));
    let notified = SocketAddr::from(([127, 0, 0, 1], 8084));
    eventually(STEP_DEADLINE, "notifications consumes", || async {
        notifications.output().contains("consuming").then_some(())
    })
    .await;
    eventually(STEP_DEADLINE, "users is up", || async {
        let reply = a.http_get(users, "users", "/healthz").await.ok()?;
        (reply.status == 200).then_some(())
    })
    .await;

    let wire = WireCapture::start(node).expect("start tshark on the bridge");
    wire.mark(&[a, b]).await;
    let body = json!({"name": name, "email": "ada@example.com"}).to_string();
    let request = format!(
        "POST /users HTTP/1.1\r\nhost: users\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = a.connect(users).await.expect("connect to users in a");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .expect("send the sign-up");
    let raw = client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("users answers");
    assert_eq!(
        client::raw_status(&raw),
        Some(201),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let answer = String::from_utf8_lossy(&raw);
    assert!(answer.contains(r#""event":"confirmed""#), "{answer}");
    eventually(STEP_DEADLINE, "the welcome notification", || async {
        let reply = a
            .http_get(notified, "notifications", "/notifications")
            .await
            .ok()?;
        reply
            .body
            .contains(&format!("Welcome, {name}"))
            .then_some(())
    })
    .await;
    wire.mark(&[a, b]).await;
    (wire, [notifications, users_app])
}

/// Pods on a node's bridge: the broker in pod b behind its sidecar, users and
/// notifications in pod a reaching it by a service VIP (iptables capture, AMQP's
/// port opaque by default, mTLS between the sidecars). A sign-up is confirmed and
/// welcomed, and tshark on the bridge sees TLS on the broker's port and no AMQP,
/// not even its protocol header, nor the new user's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_hop_between_pods_carries_only_tls() {
    const TEST: &str = "the_broker_hop_between_pods_carries_only_tls";
    const VIP: &str = "10.96.0.56";
    if !netns::available(TEST) {
        return;
    }
    let Some(script) = rabbitmq::require(TEST) else {
        return;
    };
    let Some((node, a, b)) = pods_on_a_watched_bridge(TEST) else {
        return;
    };
    let launch = in_pod(&b);
    // Started before b's capture, so the readiness check reaches it directly.
    let _broker = RabbitMq::start_with(
        script,
        b.addr(5672),
        SocketAddr::from(([0, 0, 0, 0], 5672)),
        launch,
        Some(node.netns.clone()),
    )
    .await
    .expect("the broker in pod b");
    let service = ServiceDef::new("rabbitmq")
        .vip(VIP)
        .port(5672, "detect")
        .endpoint_with_identity(b.addr(5672), &b.spiffe_id());
    let (_control, _proxies) = node
        .mesh(&[service], &[&a, &b], Sidecars::WithIdentity)
        .await
        .expect("the mesh on the node");

    let url = format!("amqp://guest:guest@{VIP}:5672/%2f");
    let name = "Ada Marker-5a1f";
    let (mut wire, _apps) = sign_up_in_pod(&node, &a, &b, &["--amqp-url", &url], name).await;
    wire.stop().await.expect("tshark exits");

    assert_only_tls_between_the_pods(&wire, 5672, "amqp", name);
    assert!(
        !wire.payload_hex().contains(&hex(b"AMQP\x00\x00\x09\x01")),
        "an AMQP protocol header crossed in clear"
    );
}

/// The event path switched to Kafka (KRaft, one broker) behind its sidecar, mTLS
/// between the clients' sidecar and the broker's. The broker advertises the
/// clients' sidecar listener for `kafka`, so the connection a client opens to the
/// advertised address after bootstrapping goes through the mesh too. A checkout's
/// `order.placed` crosses Kafka and the notification names the order; a sign-up
/// is welcomed; both sidecars count the Kafka connections over TLS with the peer's
/// identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_and_sign_up_events_cross_kafka_through_the_mesh() {
    const TEST: &str = "checkout_and_sign_up_events_cross_kafka_through_the_mesh";
    let Some(jars) = kafka::require(TEST) else {
        return;
    };
    let broker_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // No protocol: Kafka's port is opaque by the default list.
    let service = ServiceDef::new("kafka").port(9092, "detect");
    let mut pair = MtlsPair::start(service, broker_addr, PairOptions::default())
        .await
        .expect("the sidecars");
    let kafka_addr = pair.upstream();
    let addrs = kafka::Addresses {
        listen: broker_addr,
        probe: broker_addr,
        advertised: kafka_addr,
    };
    let broker = Kafka::start(&jars, addrs, Box::new(|p| Command::new(p)), None)
        .await
        .expect("start kafka");
    let logs = tempfile::Builder::new()
        .prefix("weft-e2e-kafka-")
        .tempdir()
        .expect("temp dir");
    let kafka_addr = kafka_addr.to_string();
    let events = ["--events-broker", "kafka", "--kafka-addr", &kafka_addr];
    let (_notifications, notified) = start_app(logs.path(), "notifications", &events).await;
    let (_users, users) = start_app(logs.path(), "users", &events).await;
    let (_payments, payments) = start_app(logs.path(), "payments", &[]).await;
    let payments = format!("http://{payments}");
    let orders_args: Vec<&str> = ["--payments", payments.as_str()]
        .into_iter()
        .chain(events)
        .collect();
    let (_orders, orders) = start_app(logs.path(), "orders", &orders_args).await;

    let new = json!({"item": "kettle", "quantity": 3, "amount_cents": 4200, "user": "77"});
    let (status, placed) = call(orders, "POST", "/orders", Some(new)).await;
    assert_eq!(status, 201, "{placed}\n{}", broker.output());
    assert_eq!(placed["event"], "confirmed", "{placed}");
    let id = placed["id"].as_u64().expect("an order id");
    let payment = placed["payment_id"].as_str().expect("a payment id");
    let note = eventually(STEP_DEADLINE, "the order's notification", || async {
        notifications(notified)
            .await
            .into_iter()
            .find(|n| n["order_id"].as_u64() == Some(id))
    })
    .await;
    assert_eq!(note["event"], "order.placed");
    assert_eq!(
        note["message"],
        format!("Order {id} placed: 3 x kettle for user 77, payment {payment}")
    );

    let sign_up = json!({"name": "Katherine Johnson", "email": "kj@example.com"});
    let (status, user) = call(users, "POST", "/users", Some(sign_up)).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["event"], "confirmed", "{user}");
    let user_id = user["id"].as_str().expect("a user id").to_string();
    let welcome = eventually(STEP_DEADLINE, "the sign-up's notification", || async {
        notifications(notified)
            .await
            .into_iter()
            .find(|n| n["event"] == "user.signed_up" && n["user_id"] == user_id.as_str())
    })
    .await;
    assert_eq!(
        welcome["message"],
        format!("Welcome, Katherine Johnson (user {user_id})")
    );

    // Only the broker's sidecar holds connections to the broker: no client went
    // around the mesh to an address the broker advertised.
    let server_pid = pair.server.process().pid();
    let holders = kafka::clients_of(broker_addr).expect("the broker's connections");
    assert!(
        !holders.is_empty() && holders.iter().all(|pid| *pid == server_pid),
        "connections to the broker held by {holders:?}; its sidecar is {server_pid}"
    );

    // The clients' side: every Kafka connection went out over mTLS to the broker's
    // sidecar (none plaintext). The broker's side: they came in over TLS from the
    // clients' identity, and none without.
    let client = pair.client.metrics().await.expect("client sidecar metrics");
    let out = [
        ("direction", "outbound"),
        ("service", "kafka.default"),
        ("peer_identity", SERVER_ID),
        ("tls", "true"),
    ];
    let opened = client.sum("weft_tcp_service_connections_total", &out);
    // Bootstrap and the advertised broker, for each of orders, users, notifications.
    assert!(opened >= 3.0, "{opened} Kafka connections over mTLS");
    assert_eq!(
        client.sum(
            "weft_tcp_service_connections_total",
            &[("service", "kafka.default"), ("tls", "false")]
        ),
        0.0,
        "a Kafka connection left the sidecar in plaintext"
    );
    let server = pair.server.metrics().await.expect("broker sidecar metrics");
    let caller = spiffe("client");
    let inbound = [
        ("direction", "inbound"),
        ("peer_identity", caller.as_str()),
        ("tls", "true"),
    ];
    let open = server.sum("weft_tcp_service_open_connections", &inbound);
    assert!(open >= 3.0, "{open} open Kafka connections over mTLS");
    assert_eq!(
        server.sum("weft_tcp_service_connections_total", &[("tls", "false")]),
        0.0,
        "a plaintext connection reached the broker"
    );
}

/// Pods on a node's bridge: Kafka in pod b behind its sidecar, advertising the
/// service's VIP, and users and notifications in pod a reaching it there. Both the
/// bootstrap connection and the one to the advertised address are captured by pod
/// a's iptables and cross over mTLS (Kafka's port is opaque by default). A sign-up
/// is confirmed and welcomed; tshark on the bridge sees TLS on Kafka's port, no
/// Kafka protocol and not the user's name; the broker's sidecar counts the
/// connections from pod a's identity over TLS and none without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_advertising_its_service_address_is_reached_over_mtls_between_pods() {
    const TEST: &str = "kafka_advertising_its_service_address_is_reached_over_mtls";
    const VIP: &str = "10.96.0.92";
    if !netns::available(TEST) {
        return;
    }
    let Some(jars) = kafka::require(TEST) else {
        return;
    };
    let Some((node, a, b)) = pods_on_a_watched_bridge(TEST) else {
        return;
    };
    let launch = in_pod(&b);
    let advertised: SocketAddr = format!("{VIP}:9092").parse().expect("the VIP");
    let addrs = kafka::Addresses {
        listen: SocketAddr::from(([0, 0, 0, 0], 9092)),
        probe: b.addr(9092),
        advertised,
    };
    // Started before b's capture, so the readiness check reaches it directly.
    let _broker = Kafka::start(&jars, addrs, launch, Some(&node.netns))
        .await
        .expect("kafka in pod b");
    let service = ServiceDef::new("kafka")
        .vip(VIP)
        .port(9092, "detect")
        .endpoint_with_identity(b.addr(9092), &b.spiffe_id());
    let (_control, proxies) = node
        .mesh(&[service], &[&a, &b], Sidecars::WithIdentity)
        .await
        .expect("the mesh on the node");
    let b_proxy = &proxies[1];

    let addr = advertised.to_string();
    let broker = ["--events-broker", "kafka", "--kafka-addr", &addr];
    let name = "Emmy Marker-9c2e";
    let (mut wire, _apps) = sign_up_in_pod(&node, &a, &b, &broker, name).await;
    wire.stop().await.expect("tshark exits");

    assert_only_tls_between_the_pods(&wire, 9092, "kafka", name);
    let metrics = b_proxy.metrics().await.expect("b's sidecar metrics");
    let caller = a.spiffe_id();
    let inbound = [
        ("direction", "inbound"),
        ("peer_identity", caller.as_str()),
        ("tls", "true"),
    ];
    let opened = metrics.sum("weft_tcp_service_connections_total", &inbound);
    // users' and notifications' bootstrap and advertised-broker connections.
    assert!(opened >= 2.0, "{opened} Kafka connections from a over mTLS");
    assert_eq!(
        metrics.sum("weft_tcp_service_connections_total", &[("tls", "false")]),
        0.0,
        "a plaintext connection reached the broker's pod"
    );
}
