//! Routes through a real weft-proxy: the test client sends through the proxy's
//! outbound (http_proxy) listener to `orders`, whose routes match, filter, split
//! and answer; the apps behind it say what reached them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use weft_tests::apps::{AppBody, Handler, HttpApp, full};
use weft_tests::client::{self, H1Client, Reply};
use weft_tests::load::{Load, LoadSpec};
use weft_tests::process::Process;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy, proxy_command};

/// An app that answers `status` and tells what reached it: `x-app` (its name),
/// `x-path` (path and query as received), and the request's headers as the body,
/// one `name: value` a line.
fn echo(name: &str, status: StatusCode) -> Handler {
    let name: Arc<str> = Arc::from(name);
    Arc::new(move |req: Request<Incoming>| {
        let name = name.clone();
        Box::pin(async move {
            let mut body = String::new();
            for (n, v) in req.headers() {
                body.push_str(&format!("{n}: {}\n", v.to_str().unwrap_or("?")));
            }
            let path = req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.to_string());
            let mut resp: Response<AppBody> = Response::new(full(Bytes::from(body)));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert("x-app", HeaderValue::from_str(&name).expect("app name"));
            if let Ok(v) = HeaderValue::from_str(&path) {
                h.insert("x-path", v);
            }
            if let Some(ms) = path
                .split_once("slow=")
                .and_then(|(_, ms)| ms.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
            }
            resp
        })
    })
}

async fn app(name: &str) -> HttpApp {
    app_answering(name, StatusCode::OK).await
}

async fn app_answering(name: &str, status: StatusCode) -> HttpApp {
    HttpApp::with_handler(name, echo(name, status))
        .await
        .expect("start app")
}

/// One proxy in file mode holding `services`.
async fn proxy(services: Vec<ServiceDef>) -> WeftProxy {
    let config = ProxyConfig::new().with_services(services);
    WeftProxy::start_named("routes-proxy", config)
        .await
        .expect("start proxy")
}

async fn get(c: &mut H1Client, uri: &str, headers: &[(&str, &str)]) -> Reply {
    get_method(c, "GET", uri, headers).await
}

async fn get_method(c: &mut H1Client, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
    c.send(client::request(method, uri, headers, ""))
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e:#}"))
}

/// The route that answered, by the `x-route` response header its filter sets.
fn route_of(reply: &Reply) -> Option<&str> {
    reply.header("x-route")
}

/// method, path, request headers, and the route expected to answer.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

/// A route sending to the service itself, named `name`, marking its answers.
fn marked(name: &str, matches: &str) -> String {
    format!(
        "{{name: {name}, match: [{matches}], filters: {{response_headers: {{set: {{x-route: {name}}}}}}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_match_kind_selects_its_route_and_unmatched_requests_go_to_the_service() {
    let orders = app("orders-app").await;
    let routes = [
        marked("exact", "{path: {exact: /exact}}"),
        marked("prefix", "{path: {prefix: /pre/}}"),
        marked("regex", "{path: {regex: '/r/[a-z]+'}}"),
        marked("method", "{method: DELETE}"),
        marked("header", "{headers: [{name: x-user, exact: alice}]}"),
        marked("header-regex", "{headers: [{name: x-id, regex: '[0-9]+'}]}"),
        marked("query", "{query: [{name: debug, exact: '1'}]}"),
        marked("grpc", "{grpc: {service: shop.Orders, method: Get}}"),
        marked("all-of", "{path: {exact: /both}, method: PUT}"),
    ];
    let svc = ServiceDef::new("orders")
        .endpoint(orders.addr)
        .routes(&format!("[{}]", routes.join(", ")));
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    let cases: &[Case<'_>] = &[
        ("GET", "/exact", &[], Some("exact")),
        ("GET", "/exact/more", &[], None),
        ("GET", "/pre", &[], Some("prefix")),
        ("GET", "/pre/a/b", &[], Some("prefix")),
        ("GET", "/prefix", &[], None),
        ("GET", "/r/abc", &[], Some("regex")),
        ("GET", "/r/ab1", &[], None),
        ("DELETE", "/x", &[], Some("method")),
        ("GET", "/x", &[("x-user", "alice")], Some("header")),
        ("GET", "/x", &[("x-user", "bob")], None),
        ("GET", "/x", &[("x-id", "42")], Some("header-regex")),
        ("GET", "/x", &[("x-id", "42a")], None),
        ("GET", "/x?a=2&debug=1", &[], Some("query")),
        ("GET", "/x?debug=10", &[], None),
        (
            "POST",
            "/shop.Orders/Get",
            &[("content-type", "application/grpc")],
            Some("grpc"),
        ),
        (
            "POST",
            "/shop.Orders/List",
            &[("content-type", "application/grpc")],
            None,
        ),
        ("PUT", "/both", &[], Some("all-of")),
        ("GET", "/both", &[], None),
    ];
    for (method, path, headers, want) in cases {
        let reply = get_method(&mut c, method, &format!("http://orders{path}"), headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}");
        assert_eq!(route_of(&reply), *want, "{method} {path} {headers:?}");
        assert_eq!(reply.header("x-app"), Some("orders-app"));
    }
    let metrics = proxy.metrics().await.expect("metrics");
    let routed = |route: &str| {
        metrics.sum(
            "weft_requests_total",
            &[("service", "orders.default"), ("route", route)],
        )
    };
    assert_eq!(routed("prefix"), 2.0);
    assert_eq!(routed("exact"), 1.0);
    assert_eq!(
        routed(""),
        8.0,
        "requests no route matched carry route=\"\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_of_ten_thousand_requests_lands_within_two_percent() {
    let stable = app("orders-app").await;
    let canary = app("canary-app").await;
    let services = vec![
        ServiceDef::new("orders").endpoint(stable.addr).routes(
            "[{name: split, backends: [{service: orders, weight: 90}, {service: orders-canary, weight: 10}]}]",
        ),
        ServiceDef::new("orders-canary").endpoint(canary.addr),
    ];
    let proxy = proxy(services).await;
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 2_500;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let target = proxy.outbound();
        tasks.push(tokio::spawn(async move {
            let mut c = H1Client::connect(target).await.expect("connect");
            let mut to_canary = 0usize;
            for _ in 0..PER_CLIENT {
                let reply = get(&mut c, "http://orders/", &[]).await;
                assert_eq!(reply.status, StatusCode::OK);
                if reply.header("x-app") == Some("canary-app") {
                    to_canary += 1;
                }
            }
            to_canary
        }));
    }
    let mut to_canary = 0;
    for t in tasks {
        to_canary += t.await.expect("client task");
    }
    let total = CLIENTS * PER_CLIENT;
    let share = to_canary as f64 / total as f64;
    println!(
        "split: {to_canary} of {total} to the canary ({:.2} %)",
        share * 100.0
    );
    assert!((0.08..=0.12).contains(&share), "canary share {share}");
    assert_eq!(stable.requests() + canary.requests(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_changes_reach_the_app_and_the_client() {
    let orders = app("orders-app").await;
    let svc = ServiceDef::new("orders").endpoint(orders.addr).routes(
        "[{filters: {request_headers: {set: {x-set: 'yes'}, add: {x-add: second}, remove: [x-secret]}, \
           response_headers: {set: {x-resp: done}, remove: [x-path]}}}]",
    );
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let reply = get(
        &mut c,
        "http://orders/h",
        &[("x-set", "no"), ("x-add", "first"), ("x-secret", "s3cret")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = reply.text();
    assert!(seen.contains("x-set: yes\n"), "{seen}");
    assert!(!seen.contains("x-set: no"), "set replaces: {seen}");
    assert!(
        seen.contains("x-add: first\n") && seen.contains("x-add: second\n"),
        "{seen}"
    );
    assert!(!seen.contains("x-secret"), "removed: {seen}");
    assert_eq!(reply.header("x-resp"), Some("done"));
    assert_eq!(reply.header("x-path"), None, "removed from the response");
    assert_eq!(reply.header("x-app"), Some("orders-app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_answered_by_the_proxy_and_rewrites_reach_the_app() {
    let orders = app("orders-app").await;
    let svc = ServiceDef::new("orders").endpoint(orders.addr).routes(
        "[{match: [{path: {exact: /old}}], filters: {redirect: {path: {full: /new}, status: 301}}}, \
          {match: [{path: {prefix: /moved}}], filters: {redirect: {scheme: https, host: shop.example}}}, \
          {match: [{path: {prefix: /api}}], filters: {rewrite: {prefix: /v2}}}, \
          {match: [{path: {exact: /one}}], filters: {rewrite: {full: /two}}}]",
    );
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    let moved = get(&mut c, "http://orders/old?q=1", &[]).await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(moved.header("location"), Some("http://orders/new?q=1"));
    let found = get(&mut c, "http://orders:8080/moved/x", &[]).await;
    assert_eq!(found.status, StatusCode::FOUND);
    assert_eq!(
        found.header("location"),
        Some("https://shop.example/moved/x")
    );
    assert_eq!(orders.requests(), 0, "redirects never reach the app");

    let rewritten = get(&mut c, "http://orders/api/orders/7?x=1", &[]).await;
    assert_eq!(rewritten.header("x-path"), Some("/v2/orders/7?x=1"));
    let full = get(&mut c, "http://orders/one?x=1", &[]).await;
    assert_eq!(full.header("x-path"), Some("/two?x=1"));
    let untouched = get(&mut c, "http://orders/apis", &[]).await;
    assert_eq!(untouched.header("x-path"), Some("/apis"));
    let redirects = proxy
        .metric("weft_route_actions_total", &[("action", "redirect")])
        .await;
    assert_eq!(redirects, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_aborts_and_delays_follow_their_percentages_and_count_apart() {
    let orders = app("orders-app").await;
    let svc = ServiceDef::new("orders").endpoint(orders.addr).routes(
        "[{name: aborts, match: [{path: {exact: /abort}}], filters: {fault: {abort: {status: 503, percent: 30}}}}, \
          {name: delays, match: [{path: {exact: /delay}}], filters: {fault: {delay: {duration: 150ms, percent: 50}}}}]",
    );
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    const ABORT_TRIES: usize = 1_000;
    let mut aborted = 0;
    for _ in 0..ABORT_TRIES {
        let reply = get(&mut c, "http://orders/abort", &[]).await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(reply.header("weft-error"), Some("fault-injected"));
                aborted += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // 300 expected; 5 standard deviations is about 72.
    assert!(
        (228..=372).contains(&aborted),
        "{aborted} of {ABORT_TRIES} aborted"
    );
    assert_eq!(orders.requests(), ABORT_TRIES - aborted);

    const DELAY_TRIES: usize = 120;
    let mut slow = 0;
    for _ in 0..DELAY_TRIES {
        let started = Instant::now();
        let reply = get(&mut c, "http://orders/delay", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        if started.elapsed() >= Duration::from_millis(150) {
            slow += 1;
        }
    }
    let metrics = proxy.metrics().await.expect("metrics");
    let delayed = metrics.value(
        "weft_route_actions_total",
        &[
            ("service", "orders.default"),
            ("route", "delays"),
            ("action", "fault-delay"),
        ],
    );
    // 60 expected; 5 standard deviations is about 27.
    assert!(
        (33.0..=87.0).contains(&delayed),
        "{delayed} of {DELAY_TRIES} delayed"
    );
    assert!(
        slow as f64 >= delayed,
        "every delayed request took the delay"
    );
    assert_eq!(
        metrics.value(
            "weft_route_actions_total",
            &[
                ("service", "orders.default"),
                ("route", "aborts"),
                ("action", "fault-abort")
            ],
        ),
        aborted as f64
    );
    assert_eq!(
        metrics.sum("weft_proxy_errors_total", &[("service", "orders.default")]),
        0.0,
        "injected faults are not proxy errors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_serves_the_bucket_then_answers_429_with_retry_after() {
    let orders = app("orders-app").await;
    let svc = ServiceDef::new("orders").endpoint(orders.addr).routes(
        "[{name: tight, match: [{path: {exact: /tight}}], filters: {rate_limit: {requests: 5, per: 1h}}}, \
          {name: roomy, match: [{path: {exact: /roomy}}], filters: {rate_limit: {requests: 1000, per: 1s, burst: 100}}}]",
    );
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    for i in 0..5 {
        let reply = get(&mut c, "http://orders/tight", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i} is within the bucket"
        );
    }
    for _ in 0..3 {
        let reply = get(&mut c, "http://orders/tight", &[]).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.header("weft-error"), Some("rate-limited"));
        let retry_after: u64 = reply
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("a Retry-After in seconds");
        // One token every 12 minutes.
        assert!((1..=720).contains(&retry_after), "{retry_after}");
    }
    for i in 0..50 {
        let reply = get(&mut c, "http://orders/roomy", &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "request {i} is under the limit"
        );
    }
    assert_eq!(orders.requests(), 55);
    let limited = proxy
        .metric(
            "weft_route_actions_total",
            &[("route", "tight"), ("action", "rate-limited")],
        )
        .await;
    assert_eq!(limited, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_overrides_the_services_timeout_and_retries() {
    let good = app("good-app").await;
    let bad = app_answering("bad-app", StatusCode::SERVICE_UNAVAILABLE).await;
    let svc = ServiceDef::new("orders")
        .endpoint(good.addr)
        .endpoint(bad.addr)
        // Ejection off: the failing endpoint must stay in rotation for the count
        // of unretried failures below.
        .policy(
            "{load_balancer: round-robin, retry: {max_attempts: 3, backoff_base: 1ms}, \
             circuit_breaker: {outlier_detection: {consecutive_failures: 0}}}",
        )
        .routes(
            "[{name: hasty, match: [{path: {prefix: /hasty}}], timeouts: {request: 300ms}}, \
              {name: once, match: [{path: {prefix: /once}}], retry: {max_attempts: 1}}]",
        );
    let proxy = proxy(vec![svc]).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");

    // The service retries: every request finds the good endpoint.
    for _ in 0..10 {
        let reply = get(&mut c, "http://orders/any", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The route turns retries off: round robin sends every other request to the
    // endpoint that fails.
    let mut failed = 0;
    for _ in 0..10 {
        let reply = get(&mut c, "http://orders/once", &[]).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(reply.header("x-app"), Some("bad-app"));
            failed += 1;
        }
    }
    assert_eq!(failed, 5, "no retries on this route");

    // The route's request timeout, where the service has none.
    for _ in 0..2 {
        let reply = get(&mut c, "http://orders/hasty?slow=3000", &[]).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(reply.header("weft-error"), Some("timeout"));
    }
    let reply = get(&mut c, "http://orders/any?slow=600", &[]).await;
    assert_ne!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "no timeout outside the route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_hot_swapped_under_load_lose_no_request() {
    let stable = app("orders-app").await;
    let canary = app("canary-app").await;
    let base = |routes: Option<&str>| {
        let orders = ServiceDef::new("orders").endpoint(stable.addr);
        let orders = match routes {
            Some(r) => orders.routes(r),
            None => orders,
        };
        vec![
            orders,
            ServiceDef::new("orders-canary").endpoint(canary.addr),
        ]
    };
    let mut proxy = proxy(base(None)).await;
    let load = Load::start(LoadSpec::new(proxy.outbound(), "http://orders/"));
    load.wait_more_ok(200, Duration::from_secs(30)).await;

    let steps = [
        Some(
            "[{name: half, backends: [{service: orders, weight: 50}, {service: orders-canary, weight: 50}]}]",
        ),
        Some(
            "[{name: all-canary, backends: [{service: orders-canary}], filters: {request_headers: {set: {x-step: 2}}}}]",
        ),
        Some(
            "[{name: other, match: [{path: {prefix: /nothing}}], backends: [{service: orders-canary}]}]",
        ),
        None,
    ];
    for routes in steps {
        let reloaded = proxy
            .metric("weft_snapshot_reloads_total", &[("result", "ok")])
            .await;
        let config = proxy.config.clone().with_services(base(routes));
        proxy.write_config(config).expect("write config");
        proxy.reload().expect("SIGHUP");
        proxy
            .wait_metric(
                "weft_snapshot_reloads_total",
                &[("result", "ok")],
                |v| v > reloaded,
                Duration::from_secs(15),
            )
            .await;
        load.wait_more_ok(300, Duration::from_secs(30)).await;
    }
    let report = load.stop().await;
    report.assert_no_failures();
    assert!(
        report.by_app.get("canary-app").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_app
    );
    assert!(
        report.by_app.get("orders-app").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_app
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_field_of_an_invalid_route() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("proxy.yaml");
    let config = ProxyConfig::new().with_services(vec![
        ServiceDef::new("orders").routes("[{backends: [{service: ghost, weight: 5}]}]"),
    ]);
    std::fs::write(&path, config.to_yaml()).expect("write config");
    let cmd = proxy_command(&["check", "--config", &path.to_string_lossy()]).expect("command");
    let mut process = Process::spawn("weft-proxy-check", cmd, dir.path()).expect("spawn");
    let status = process
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("check exits");
    let output = process.output();
    assert!(!status.success(), "check accepted it: {output}");
    assert!(
        output.contains("services[0].routes[0].backends[0].service"),
        "{output}"
    );
    assert!(output.contains("no service ghost.default"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_spent_bucket_unless_its_limit_changes() {
    let orders = app("orders-app").await;
    let orders_with = |limit: &str, other_header: &str| {
        vec![
            ServiceDef::new("orders")
                .endpoint(orders.addr)
                .routes(&format!(
                    "[{{name: other, match: [{{path: {{exact: /other}}}}], \
               filters: {{request_headers: {{set: {{x-step: \"{other_header}\"}}}}}}}}, \
              {{name: tight, match: [{{path: {{exact: /tight}}}}], \
               filters: {{rate_limit: {limit}}}}}]"
                )),
        ]
    };
    let mut proxy = proxy(orders_with("{requests: 2, per: 1h}", "1")).await;
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let status = async |c: &mut H1Client| get(c, "http://orders/tight", &[]).await.status;
    assert_eq!(status(&mut c).await, StatusCode::OK);
    assert_eq!(status(&mut c).await, StatusCode::OK);
    assert_eq!(status(&mut c).await, StatusCode::TOO_MANY_REQUESTS);

    let reload = async |proxy: &mut WeftProxy, services: Vec<ServiceDef>| {
        let before = proxy
            .metric("weft_snapshot_reloads_total", &[("result", "ok")])
            .await;
        let config = proxy.config.clone().with_services(services);
        proxy.write_config(config).expect("write config");
        proxy.reload().expect("SIGHUP");
        proxy
            .wait_metric(
                "weft_snapshot_reloads_total",
                &[("result", "ok")],
                |v| v > before,
                Duration::from_secs(15),
            )
            .await;
    };
    // Another route changes; this one's limit does not: its bucket stays spent.
    reload(&mut proxy, orders_with("{requests: 2, per: 1h}", "2")).await;
    let step = get(&mut c, "http://orders/other", &[]).await;
    assert!(step.text().contains("x-step: 2"), "the reload applied");
    assert_eq!(status(&mut c).await, StatusCode::TOO_MANY_REQUESTS);

    // A new limit starts a full bucket.
    reload(
        &mut proxy,
        orders_with("{requests: 2, per: 1h, burst: 3}", "2"),
    )
    .await;
    for i in 0..3 {
        assert_eq!(
            status(&mut c).await,
            StatusCode::OK,
            "request {i} of the new burst"
        );
    }
    assert_eq!(status(&mut c).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(orders.requests(), 6);
}
