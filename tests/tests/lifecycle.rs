//! The proxy's life: config errors at start, reloads (good and bad) under load, and
//! a graceful shutdown that finishes in-flight requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::net::TcpStream;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy, run_expecting_exit};
use weft_tests::{STEP_DEADLINE, admin, eventually, within};

const RELOADS_OK: (&str, &[(&str, &str)]) = ("weft_snapshot_reloads_total", &[("result", "ok")]);
const RELOADS_ERROR: (&str, &[(&str, &str)]) =
    ("weft_snapshot_reloads_total", &[("result", "error")]);

fn orders_at(app: &HttpApp) -> ServiceDef {
    ServiceDef::new("orders").endpoint(app.addr)
}

async fn app_answering(proxy: &WeftProxy) -> String {
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let reply = c.send(client::get("http://orders/")).await.expect("answer");
    assert_eq!(reply.status, StatusCode::OK);
    reply.header("x-app").unwrap_or_default().to_string()
}

#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

/// One client of the load: keep-alive requests until told to stop, at most
/// `MAX_REQUESTS` or `MAX_TIME`. A failure is counted and the client reconnects.
async fn load_client(addr: std::net::SocketAddr, load: Arc<Load>) {
    const MAX_REQUESTS: usize = 3000;
    const MAX_TIME: Duration = Duration::from_secs(15);
    let started = Instant::now();
    let mut conn = None;
    for _ in 0..MAX_REQUESTS {
        if load.stop.load(Ordering::SeqCst) || started.elapsed() > MAX_TIME {
            return;
        }
        if conn.is_none() {
            conn = H1Client::connect(addr).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            load.failed.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        match c.send(client::get("http://orders/")).await {
            Ok(r) if r.status == StatusCode::OK => {
                load.ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                eprintln!(
                    "load request answered {} {:?}",
                    r.status,
                    r.header("weft-error")
                );
                load.failed.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                eprintln!("load request failed: {e:#}");
                load.failed.fetch_add(1, Ordering::SeqCst);
                conn = None;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_load_loses_no_request() {
    let first = HttpApp::start("app-1").await.expect("start app");
    let second = HttpApp::start("app-2").await.expect("start app");
    let config = ProxyConfig::new().service(orders_at(&first));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load_client(proxy.outbound(), load.clone())))
        .collect();

    // Switch endpoints back and forth, ending on the second app; each time wait
    // for the reload to be applied and for traffic to flow before the next.
    let reloads = 5;
    for i in 0..reloads {
        let target = if i % 2 == 0 { &second } else { &first };
        proxy
            .write_config(config.clone().with_services(vec![orders_at(target)]))
            .expect("write config");
        let served_before = load.ok.load(Ordering::SeqCst);
        proxy.reload().expect("SIGHUP");
        proxy
            .wait_metric(
                RELOADS_OK.0,
                RELOADS_OK.1,
                |v| v >= (2 + i) as f64,
                STEP_DEADLINE,
            )
            .await;
        eventually(STEP_DEADLINE, "requests served after a reload", || async {
            (load.ok.load(Ordering::SeqCst) >= served_before + 20).then_some(())
        })
        .await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        within(STEP_DEADLINE, "load client to stop", c)
            .await
            .expect("join");
    }

    let (ok, failed) = (
        load.ok.load(Ordering::SeqCst),
        load.failed.load(Ordering::SeqCst),
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(ok >= 100, "only {ok} requests ran");
    assert!(first.requests() > 0 && second.requests() > 0);
    assert_eq!(app_answering(&proxy).await, "app-2");
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(
        metrics.value(RELOADS_OK.0, RELOADS_OK.1),
        (1 + reloads) as f64
    );
    assert_eq!(metrics.value(RELOADS_ERROR.0, RELOADS_ERROR.1), 0.0);
    assert_eq!(
        metrics.value("weft_snapshot_version", &[]),
        (1 + reloads) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_serving_the_old_snapshot() {
    let first = HttpApp::start("app-1").await.expect("start app");
    let second = HttpApp::start("app-2").await.expect("start app");
    let config = ProxyConfig::new().service(orders_at(&first));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");
    assert_eq!(app_answering(&proxy).await, "app-1");

    // Points at the second app, but one service name is invalid: rejected whole.
    let mut bad = config
        .clone()
        .with_services(vec![orders_at(&second), ServiceDef::new("Not_A_Name")])
        .to_yaml();
    bad.push('\n');
    proxy.write_config_text(&bad).expect("write config");
    proxy.reload().expect("SIGHUP");
    proxy
        .wait_metric(
            RELOADS_ERROR.0,
            RELOADS_ERROR.1,
            |v| v >= 1.0,
            STEP_DEADLINE,
        )
        .await;

    assert_eq!(app_answering(&proxy).await, "app-1");
    assert_eq!(second.requests(), 0);
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(metrics.value(RELOADS_ERROR.0, RELOADS_ERROR.1), 1.0);
    assert_eq!(metrics.value(RELOADS_OK.0, RELOADS_OK.1), 1.0);
    assert_eq!(metrics.value("weft_snapshot_version", &[]), 1.0);
    assert!(
        proxy.process().output().contains("Not_A_Name"),
        "the log explains the rejection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_at_start_exits_nonzero_naming_file_line_and_field() {
    let text = "workers: 1\nlimits:\n  max_conections: 3\n";

    let (status, output, path) = run_expecting_exit(text, STEP_DEADLINE)
        .await
        .expect("the proxy exits by itself");

    assert!(!status.success(), "exit status {status}");
    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains(&path.display().to_string()),
        "file not named:\n{output}"
    );
    assert!(output.contains("line 3"), "line not named:\n{output}");
    assert!(
        output.contains("max_conections"),
        "field not named:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_mesh_at_start_exits_nonzero_naming_the_field() {
    let text = "services:\n  - name: orders\n  - name: orders\n";

    let (status, output, path) = run_expecting_exit(text, STEP_DEADLINE)
        .await
        .expect("the proxy exits by itself");

    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains(&path.display().to_string()),
        "file not named:\n{output}"
    );
    assert!(
        output.contains("services[1].name"),
        "field not named:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let app = HttpApp::start("app").await.expect("start app");
    let mut proxy = WeftProxy::start(ProxyConfig::new().service(orders_at(&app)))
        .await
        .expect("start proxy");
    let outbound = proxy.outbound();
    let in_flight = tokio::spawn(async move {
        let mut c = H1Client::connect(outbound).await.expect("connect");
        c.send(client::get("http://orders/slow?ms=2000")).await
    });
    eventually(
        STEP_DEADLINE,
        "the slow request reaches the app",
        || async { (app.requests() == 1).then_some(()) },
    )
    .await;

    let reply = proxy.request_shutdown().await.expect("POST /shutdown");
    assert_eq!(reply.status, 200);

    // Draining: not ready, and no new connections.
    let ready = admin::get(proxy.admin(), "/ready")
        .await
        .expect("GET /ready");
    assert_eq!(ready.status, 503, "/ready while draining");
    eventually(STEP_DEADLINE, "new connections refused", || async {
        TcpStream::connect(outbound).await.is_err().then_some(())
    })
    .await;

    let reply = within(STEP_DEADLINE, "the in-flight request", in_flight)
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "slow done\n");
    let status = proxy
        .process()
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("the proxy exits after draining");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_drain_of_long_lived_connections() {
    let app = weft_tests::apps::TcpApp::banner(b"hi\r\n")
        .await
        .expect("start app");
    let config = ProxyConfig::new()
        .upstream("chat")
        .limit("shutdown_grace", "500ms")
        .service(
            ServiceDef::new("chat")
                .port(6667, "opaque")
                .endpoint(app.addr),
        );
    let mut proxy = WeftProxy::start(config).await.expect("start proxy");
    // An opaque connection that stays open and idle through the shutdown.
    let mut stream = TcpStream::connect(proxy.upstream("chat"))
        .await
        .expect("connect");
    let mut banner = [0u8; 4];
    within(
        STEP_DEADLINE,
        "banner",
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut banner),
    )
    .await
    .expect("banner");

    proxy.request_shutdown().await.expect("POST /shutdown");

    let status = proxy
        .process()
        .wait_exit(STEP_DEADLINE)
        .await
        .expect("the proxy exits once the grace period is over");
    assert!(status.success(), "exit status {status}");
    weft_tests::client::read_until_closed(&mut stream, STEP_DEADLINE)
        .await
        .expect("the held connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_does_not_drop_in_flight_requests_to_a_removed_endpoint() {
    let old = HttpApp::start("old").await.expect("start app");
    let new = HttpApp::start("new").await.expect("start app");
    let config = ProxyConfig::new().service(orders_at(&old));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");
    let outbound = proxy.outbound();
    let in_flight = tokio::spawn(async move {
        let mut c = H1Client::connect(outbound).await.expect("connect");
        c.send(client::get("http://orders/slow?ms=1000")).await
    });
    eventually(
        STEP_DEADLINE,
        "the slow request reaches the old app",
        || async { (old.requests() == 1).then_some(()) },
    )
    .await;

    proxy
        .write_config(config.with_services(vec![orders_at(&new)]))
        .expect("write config");
    proxy.reload().expect("SIGHUP");
    proxy
        .wait_metric(RELOADS_OK.0, RELOADS_OK.1, |v| v >= 2.0, STEP_DEADLINE)
        .await;
    assert_eq!(app_answering(&proxy).await, "new");

    let reply = within(STEP_DEADLINE, "the in-flight request", in_flight)
        .await
        .expect("join")
        .expect("the in-flight request completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-app"), Some("old"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_listeners_is_refused_whole_and_says_why() {
    let first = HttpApp::start("app-1").await.expect("start app");
    let second = HttpApp::start("app-2").await.expect("start app");
    let config = ProxyConfig::new().service(orders_at(&first));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");

    // A new upstream listener beside a changed endpoint: listeners are bound at
    // start, so the whole file is refused rather than half applied.
    let changed = config
        .clone()
        .upstream("orders")
        .with_services(vec![orders_at(&second)]);
    let new_listener = changed.upstreams[0].1;
    proxy.write_config(changed).expect("write config");
    proxy.reload().expect("SIGHUP");
    proxy
        .wait_metric(
            RELOADS_ERROR.0,
            RELOADS_ERROR.1,
            |v| v >= 1.0,
            STEP_DEADLINE,
        )
        .await;

    assert_eq!(app_answering(&proxy).await, "app-1");
    assert_eq!(second.requests(), 0);
    assert!(
        tokio::net::TcpStream::connect(new_listener).await.is_err(),
        "no half-applied listener"
    );
    assert!(
        proxy.process().output().contains("the listeners changed"),
        "the log explains the rejection"
    );
}
