//! The live view on the control plane's admin port: what the demo's proxies report,
//! summarised per service and edge as JSON and server-sent events, and the page
//! that draws it, loaded in a headless Chromium (screenshots under
//! target/test-artefacts/live_view).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_tests::apps::{Handler, HttpApp, full};
use weft_tests::browser::{Browser, artefact_dir};
use weft_tests::control::WeftControl;
use weft_tests::demo::{Demo, PROXIES_WITHOUT_BROKER, SERVICES, live_service, weftctl_top};
use weft_tests::load::{Load, LoadSpec};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{admin, eventually, within};

const UP_LIMIT: Duration = Duration::from_secs(60);
/// Reports come every second and the short window is 10 s; a change shows well
/// within this.
const CHANGE_LIMIT: Duration = Duration::from_secs(40);

async fn summary(demo: &Demo) -> Value {
    demo.live_summary().await.expect("the live summary")
}

fn service<'a>(s: &'a Value, window: &str, name: &str) -> Option<&'a Value> {
    live_service(s, window, name)
}

fn edge<'a>(s: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    s["windows"]["10s"]["edges"]
        .as_array()?
        .iter()
        .find(|v| v["from"] == from && v["service"] == to)
}

/// The first event of `/api/events`, read off a raw connection.
async fn first_event(demo: &Demo) -> (String, Value) {
    let mut conn = tokio::net::TcpStream::connect(demo.control_admin())
        .await
        .expect("connect to the admin port");
    conn.write_all(b"GET /api/events HTTP/1.1\r\nHost: weft\r\n\r\n")
        .await
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let text = within(Duration::from_secs(10), "the first event", async {
        loop {
            let n = conn.read(&mut buf).await.expect("read the stream");
            assert!(
                n > 0,
                "the stream ended: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.contains("event: summary\ndata: ")
                && text
                    .split("data: ")
                    .nth(1)
                    .is_some_and(|d| d.contains("\n\n"))
            {
                return text;
            }
        }
    })
    .await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    // Chunked framing: the event is the one line starting with `data: `.
    let data = body
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    (
        head.to_string(),
        serde_json::from_str(data).expect("the event is JSON"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_view_summarises_the_demo_and_shows_a_failing_backend() {
    let mut demo = Demo::start(&["--rps", "40", "--no-broker"]).expect("start the demo");
    demo.wait_up(UP_LIMIT).await.expect("the demo comes up");

    // Every service carries traffic, every hop succeeds, over mTLS.
    let s = demo.wait_live(CHANGE_LIMIT).await;
    assert_eq!(s["proxies"], PROXIES_WITHOUT_BROKER, "{s}");
    for name in SERVICES {
        let v = service(&s, "10s", &format!("{name}.default")).expect("listed");
        assert_eq!(v["success_rate"], 1.0, "{name}: {v}");
        assert!(v["rps"].as_f64().is_some_and(|r| r > 0.0), "{name}: {v}");
        assert!(v["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{name}: {v}");
        // The load generator calls web from outside the mesh, in plaintext.
        let tls = if name == "web" { 0.0 } else { 1.0 };
        assert_eq!(v["tls_share"], tls, "{name}: {v}");
        assert!(v["open_connections"].as_u64().is_some(), "{name}: {v}");
        assert!(service(&s, "1m", &format!("{name}.default")).is_some());
    }
    for (from, to) in [("web", "orders"), ("web", "users"), ("orders", "payments")] {
        let e = edge(&s, &format!("{from}.default"), &format!("{to}.default"))
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in {s}"));
        assert_eq!(e["success_rate"], 1.0, "{e}");
        assert_eq!(e["tls_share"], 1.0, "{e}");
    }
    assert_eq!(s["ejections"], serde_json::json!([]));

    let (head, event) = first_event(&demo).await;
    assert!(head.contains("text/event-stream"), "{head}");
    assert_eq!(event["proxies"], PROXIES_WITHOUT_BROKER, "{event}");

    // users' app dies: its proxy answers 502, web's proxy ejects the endpoint.
    demo.kill_child("users").expect("kill users");
    let s = eventually(CHANGE_LIMIT, "users failing and ejected", || async {
        let s = summary(&demo).await;
        let users = service(&s, "10s", "users.default")?;
        let failing = users["success_rate"].as_f64().is_some_and(|r| r < 0.9);
        let ejected = s["ejections"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["service"] == "users.default"));
        (failing && ejected).then_some(s)
    })
    .await;
    let ejection = s["ejections"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["service"] == "users.default"))
        .expect("users ejected");
    assert_eq!(ejection["ejected_by"], "web.default", "{ejection}");
    assert_eq!(ejection["reason"], "failing-status", "{ejection}");
    assert!(ejection["times"].as_u64() >= Some(1), "{ejection}");
    let users = service(&s, "10s", "users.default").expect("users listed");
    assert!(users["ejected_endpoints"].as_u64() >= Some(1), "{users}");
    // The drill-down data: web's proxy sees the endpoint ejected.
    let seen = s["endpoints"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|e| e["service"] == "users.default" && e["seen_by"] == "web.default")
        })
        .expect("users' endpoint as web sees it");
    assert_eq!(seen["state"], "ejected", "{seen}");
    assert_eq!(seen["endpoint"], ejection["endpoint"], "{seen}");
    // The others are unaffected.
    let orders = service(&s, "10s", "orders.default").expect("orders listed");
    assert_eq!(orders["success_rate"], 1.0, "{orders}");
}

/// The services' rows of the page's table: (service, success rate as shown in its
/// data attribute).
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('#services tbody tr[data-service]')]\
    .map(r => [r.dataset.service, r.dataset.success === '' ? null : Number(r.dataset.success)]))";

/// The rows of the page's routes table: (service, route, success rate).
const ROUTES: &str = "JSON.stringify([...document.querySelectorAll('#routes tbody tr[data-route]')]\
    .map(r => [r.dataset.service, r.dataset.route, r.dataset.success === '' ? null : Number(r.dataset.success)]))";

async fn rows(browser: &mut Browser) -> Vec<(String, Option<f64>)> {
    let text = browser.eval(ROWS).await.expect("read the table");
    serde_json::from_str(text.as_str().unwrap_or("[]")).expect("rows as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_view_page_shows_the_demo_and_a_failing_backend() {
    let test = "the_live_view_page_shows_the_demo_and_a_failing_backend";
    let Some(mut browser) = Browser::start(test).await.expect("start chromium") else {
        return;
    };
    let shots = artefact_dir("live_view").expect("artefact dir");
    let mut demo = Demo::start(&["--rps", "40", "--no-broker"]).expect("start the demo");
    demo.wait_up(UP_LIMIT).await.expect("the demo comes up");
    browser
        .navigate(&format!("http://{}/", demo.control_admin()))
        .await
        .expect("load the page");

    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    loop {
        let rows = rows(&mut browser).await;
        let healthy = SERVICES.iter().all(|name| {
            rows.iter()
                .any(|(s, ok)| *s == format!("{name}.default") && *ok == Some(1.0))
        });
        if healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every demo service healthy on the page within {CHANGE_LIMIT:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes = browser
        .eval("document.querySelectorAll('#graph g.node').length")
        .await
        .expect("count nodes");
    assert_eq!(nodes, 5, "one graph node per service");
    let status = browser
        .eval("document.querySelector('#status').textContent")
        .await
        .expect("status");
    assert!(
        status
            .as_str()
            .is_some_and(|s| s.starts_with(&format!("{PROXIES_WITHOUT_BROKER} proxies"))),
        "{status}"
    );
    // Through the gateway, web's two routes carry requests: the page lists both
    // under Routes.
    let mut c = demo.gateway_client().await.expect("connect to the gateway");
    for _ in 0..10 {
        for path in ["/api/orders?user=1", "/api/profile/1"] {
            c.get_ok(path, 1)
                .await
                .expect("a request through the gateway");
        }
    }
    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    loop {
        let text = browser.eval(ROUTES).await.expect("read the routes");
        let rows: Vec<(String, String, Option<f64>)> =
            serde_json::from_str(text.as_str().unwrap_or("[]")).expect("routes as JSON");
        let shown = |name: &str| {
            rows.iter()
                .any(|(s, r, ok)| s == "web.default" && r == name && *ok == Some(1.0))
        };
        if shown("api-orders") && shown("api-profile") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "web's routes not on the page within {CHANGE_LIMIT:?}: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let healthy = shots.join("healthy.png");
    browser.screenshot(&healthy).await.expect("screenshot");

    demo.kill_child("users").expect("kill users");
    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    loop {
        let rows = rows(&mut browser).await;
        let failing = rows
            .iter()
            .any(|(s, ok)| s == "users.default" && ok.is_some_and(|r| r < 0.9));
        let ejected = browser
            .eval(
                "document.querySelectorAll('#ejections tr[data-service=\"users.default\"]').length",
            )
            .await
            .expect("ejections");
        let edge = browser
            .eval("document.querySelector('#graph line[data-from=\"web.default\"][data-to=\"users.default\"]')?.dataset.class")
            .await
            .expect("edge colour");
        if failing && ejected.as_u64() >= Some(1) && edge == "bad" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "users not shown failing and ejected within {CHANGE_LIMIT:?}: {rows:?}, \
             {ejected} ejection rows, edge {edge}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failing = shots.join("users-failing.png");
    browser.screenshot(&failing).await.expect("screenshot");
    for png in [&healthy, &failing] {
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", png.display());
        println!("screenshot: {}", png.display());
    }
}

/// A control plane serving `service` and a proxy of workload `web` that calls
/// it and reports to it.
async fn web_calling(service: ServiceDef) -> (WeftControl, WeftProxy) {
    let control = WeftControl::start(&[service])
        .await
        .expect("start the control plane");
    let proxy = WeftProxy::start(
        ProxyConfig::new()
            .control_plane(&control.url())
            .workload("web"),
    )
    .await
    .expect("start proxy");
    (control, proxy)
}

/// An app that answers every request 500.
async fn failing_app() -> HttpApp {
    let handler: Handler = Arc::new(|_req| {
        Box::pin(async {
            let mut resp = http::Response::new(full("failed\n"));
            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            resp
        })
    });
    HttpApp::with_handler("failing", handler)
        .await
        .expect("start app")
}

/// A service behind a concurrency limit, one of whose two endpoints fails every
/// request and is retried on the other: the live view (and top's table) shows the
/// breaker's hits and the retries it took, from the caller's proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_hits_and_retries_show_in_the_live_view() {
    let good = HttpApp::start("good").await.expect("start app");
    let failing = failing_app().await;
    let orders = ServiceDef::new("orders")
        .endpoint(failing.addr)
        .endpoint(good.addr)
        .policy(
            "{load_balancer: round-robin, retry: {max_attempts: 2, retry_on_status: [500]}, \
              circuit_breaker: {max_active_requests: 2}}",
        );
    let (control, proxy) = web_calling(orders).await;
    let load = Load::start(LoadSpec {
        clients: 6,
        pause: Duration::from_millis(5),
        max_requests_per_client: 2_000,
        max_time: Duration::from_secs(90),
        ..LoadSpec::new(proxy.outbound(), "http://orders/slow?ms=50")
    });

    let orders = eventually(CHANGE_LIMIT, "breaker hits and retries", || async {
        let reply = admin::get(control.admin(), "/api/summary").await.ok()?;
        let s: Value = serde_json::from_str(&reply.body).ok()?;
        let svc = live_service(&s, "10s", "orders.default")?.clone();
        let hits = svc["breaker"]["active"].as_u64()?;
        (hits > 0 && svc["retries"].as_u64()? > 0).then_some(svc)
    })
    .await;
    assert!(
        orders["retry_ratio"]
            .as_f64()
            .is_some_and(|r| r > 0.0 && r <= 1.0),
        "{orders:#}"
    );
    // Retried onto the good endpoint, or turned away by the limit at once.
    assert!(
        orders["success_rate"].as_f64().is_some_and(|r| r > 0.0),
        "{orders:#}"
    );

    // top's BREAKER column counts the same hits.
    let text = weftctl_top(control.admin(), &["--iterations", "1"], CHANGE_LIMIT)
        .await
        .expect("weftctl top --iterations 1");
    let row: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&"orders"))
        .unwrap_or_else(|| panic!("no orders row in:\n{text}"));
    let breaker: u64 = row
        .get(7)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no BREAKER cell in {row:?}"));
    assert!(breaker > 0, "{text}");
    let report = load.stop().await;
    assert!(report.ok > 0, "nothing got through");
}

fn route<'a>(service: &'a Value, name: &str) -> Option<&'a Value> {
    service["routes"]
        .as_array()?
        .iter()
        .find(|r| r["route"] == name)
}

/// A service with two routes, one of them always failing (a fault abort), called
/// through a proxy of the control plane: the summary, and `weftctl top`'s plain
/// output, break its numbers down per route; the edge's TLS share counts requests
/// (all plaintext here), not endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_two_routes_is_summarised_per_route() {
    let app = HttpApp::start("orders-app").await.expect("start app");
    let orders = ServiceDef::new("orders").endpoint(app.addr).routes(
        "[{name: api, match: [{path: {prefix: /api}}]}, \
          {name: broken, match: [{path: {prefix: /broken}}], \
           filters: {fault: {abort: {status: 503, percent: 100}}}}]",
    );
    let (control, proxy) = web_calling(orders).await;
    let bounded = |uri: &str| LoadSpec {
        clients: 2,
        pause: Duration::from_millis(5),
        max_requests_per_client: 20_000,
        max_time: Duration::from_secs(90),
        ..LoadSpec::new(proxy.outbound(), uri)
    };
    let ok = Load::start(bounded("http://orders/api/items"));
    let broken = Load::start(bounded("http://orders/broken"));
    ok.wait_more_ok(20, CHANGE_LIMIT).await;

    let orders = eventually(CHANGE_LIMIT, "both routes in the summary", || async {
        let reply = admin::get(control.admin(), "/api/summary").await.ok()?;
        let s: Value = serde_json::from_str(&reply.body).ok()?;
        let svc = live_service(&s, "10s", "orders.default")?.clone();
        let api = route(&svc, "api")?;
        let failing = route(&svc, "broken")?;
        (api["requests"].as_u64()? > 0 && failing["requests"].as_u64()? > 0).then_some(svc)
    })
    .await;
    let api = route(&orders, "api").expect("api");
    let failing = route(&orders, "broken").expect("broken");
    assert_eq!(api["success_rate"], 1.0, "{orders:#}");
    assert_eq!(failing["success_rate"], 0.0, "{orders:#}");
    assert!(api["p50_ms"].as_f64().is_some(), "{orders:#}");
    let sum = api["requests"].as_u64().unwrap_or(0) + failing["requests"].as_u64().unwrap_or(0);
    assert_eq!(orders["requests"].as_u64(), Some(sum), "{orders:#}");

    let reply = admin::get(control.admin(), "/api/summary")
        .await
        .expect("the summary");
    let s: Value = serde_json::from_str(&reply.body).expect("JSON");
    let edge = s["windows"]["10s"]["edges"]
        .as_array()
        .and_then(|edges| edges.iter().find(|e| e["service"] == "orders.default"))
        .expect("the edge into orders");
    // Aborted requests never reach an endpoint; the others all went in plaintext.
    assert_eq!(edge["tls_share"], 0.0, "{edge:#}");
    assert!(route(edge, "api").is_some(), "{edge:#}");

    let text = weftctl_top(control.admin(), &["--iterations", "1"], CHANGE_LIMIT)
        .await
        .expect("weftctl top --iterations 1");
    for name in ["api", "broken"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().take(2).eq(["route", name])),
            "no route {name} in:\n{text}"
        );
    }

    ok.stop().await.assert_no_failures();
    let broken = broken.stop().await;
    assert_eq!(broken.ok, 0, "the broken route answered a request");
}

/// The services in `s`'s 10 s window that carried requests.
fn busy_services(s: &Value) -> Vec<String> {
    s["windows"]["10s"]["services"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|v| v["requests"].as_u64().is_some_and(|n| n > 0))
                .filter_map(|v| v["service"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn admin_summary(control: &WeftControl) -> Option<Value> {
    let reply = admin::get(control.admin(), "/api/summary").await.ok()?;
    serde_json::from_str(&reply.body).ok()
}

/// Two control-plane replicas, each with one proxy reporting to it, told of each
/// other with --live-peers: either one's summary (and top) covers both proxies'
/// services; once one replica is gone the other shows it missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_shows_the_whole_mesh() {
    let orders_app = HttpApp::start("orders-app").await.expect("start app");
    let users_app = HttpApp::start("users-app").await.expect("start app");
    let services = [
        ServiceDef::new("orders").endpoint(orders_app.addr),
        ServiceDef::new("users").endpoint(users_app.addr),
    ];
    let mut a = WeftControl::start(&services)
        .await
        .expect("start replica a");
    let b_peers = a.admin().to_string();
    let yaml = weft_tests::control::mesh_yaml(&services);
    let mut b = WeftControl::start_yaml(&yaml, &["--live-peers", &b_peers])
        .await
        .expect("start replica b");
    // a's own address in its list is recognised and skipped.
    let a_peers = format!("{},{}", b.admin(), a.admin());
    a.restart_with(&["--live-peers", &a_peers])
        .await
        .expect("restart replica a with its peer");

    let web = WeftProxy::start(ProxyConfig::new().control_plane(&a.url()).workload("web"))
        .await
        .expect("start web's proxy");
    let shop = WeftProxy::start(ProxyConfig::new().control_plane(&b.url()).workload("shop"))
        .await
        .expect("start shop's proxy");
    let bounded = |proxy: &WeftProxy, uri: &str| LoadSpec {
        clients: 1,
        pause: Duration::from_millis(20),
        max_requests_per_client: 5_000,
        max_time: Duration::from_secs(90),
        ..LoadSpec::new(proxy.outbound(), uri)
    };
    let to_orders = Load::start(bounded(&web, "http://orders/"));
    let to_users = Load::start(bounded(&shop, "http://users/"));

    for (name, replica) in [("a", &a), ("b", &b)] {
        let s = eventually(CHANGE_LIMIT, "both proxies' services", || async {
            let s = admin_summary(replica).await?;
            let busy = busy_services(&s);
            let both = busy.iter().any(|s| s == "orders.default")
                && busy.iter().any(|s| s == "users.default");
            (both && s["replicas"] == serde_json::json!({"answered": 2, "total": 2})).then_some(s)
        })
        .await;
        assert_eq!(s["proxies"], 2, "replica {name}: {s}");
        let text = weftctl_top(replica.admin(), &["--iterations", "1"], CHANGE_LIMIT)
            .await
            .expect("weftctl top --iterations 1");
        assert!(
            text.contains("2 proxies — 2/2 replicas answered"),
            "replica {name}:\n{text}"
        );
        for service in ["orders", "users"] {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().next() == Some(service)),
                "replica {name}: no {service} row in:\n{text}"
            );
        }
    }

    // b gone: a keeps its own proxy's service and says a replica did not answer.
    b.kill().await.expect("kill replica b");
    let s = eventually(CHANGE_LIMIT, "b's proxies left out", || async {
        let s = admin_summary(&a).await?;
        let left_out = s["replicas"] == serde_json::json!({"answered": 1, "total": 2});
        (left_out && s["proxies"] == 1).then_some(s)
    })
    .await;
    assert!(
        busy_services(&s).iter().any(|s| s == "orders.default"),
        "{s}"
    );
    to_orders.stop().await.assert_no_failures();
    let users = to_users.stop().await;
    assert!(users.ok > 0, "nothing reached users");
}
