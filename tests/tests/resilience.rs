//! Load balancing, circuit breaking, retries and timeouts end to end: real backends
//! on loopback that misbehave on cue, one proxy in file mode in front of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use weft_tests::apps::{HttpApp, full};
use weft_tests::client::{self, H1Client};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually, within};

const SERVICE: &str = "orders.default";

/// What a [`Backend`] does with a request.
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
/// Accepts the request and never answers.
const BLACK_HOLE: u8 = 2;

/// An HTTP backend whose behaviour a test switches while traffic flows. Every
/// answer carries `x-app`; `delay` is added to every request.
struct Backend {
    app: HttpApp,
    mode: Arc<AtomicU8>,
}

impl Backend {
    async fn start(name: &str, delay: Duration) -> Backend {
        let mode = Arc::new(AtomicU8::new(HEALTHY));
        let m = mode.clone();
        let name_owned: Arc<str> = Arc::from(name);
        let handler = Arc::new(move |req: Request<hyper::body::Incoming>| {
            let m = m.clone();
            let name = name_owned.clone();
            Box::pin(async move {
                // Read the whole request first, as a real server would before failing.
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let status = match m.load(Ordering::SeqCst) {
                    FAILING => StatusCode::INTERNAL_SERVER_ERROR,
                    BLACK_HOLE => {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        StatusCode::OK
                    }
                    _ => StatusCode::OK,
                };
                let mut resp = Response::new(full(format!("{name}\n")));
                *resp.status_mut() = status;
                if let Ok(v) = HeaderValue::from_str(&name) {
                    resp.headers_mut().insert("x-app", v);
                }
                resp
            }) as weft_tests::apps::BoxFuture<Response<weft_tests::apps::AppBody>>
        });
        let app = HttpApp::with_handler(name, handler)
            .await
            .expect("start backend");
        Backend { app, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn addr(&self) -> SocketAddr {
        self.app.addr
    }
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Backend::start(&format!("b{i}"), Duration::ZERO).await);
    }
    out
}

fn orders(backends: &[Backend], policy: &str) -> ServiceDef {
    backends
        .iter()
        .fold(ServiceDef::new("orders"), |s, b| s.endpoint(b.addr()))
        .policy(policy)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    client::get(&format!("http://orders{path}"))
}

/// Tallies of a batch of requests: successes, failures, and which backend answered.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    by_app: std::sync::Mutex<HashMap<String, usize>>,
}

impl Tally {
    fn app(&self, name: &str) -> usize {
        self.by_app
            .lock()
            .expect("tally lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.ok.load(Ordering::SeqCst) + self.failed.load(Ordering::SeqCst)
    }
}

/// `clients` keep-alive clients sending `per_client` GETs each through the proxy.
async fn run_load(proxy: SocketAddr, clients: usize, per_client: usize, tally: Arc<Tally>) {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let tally = tally.clone();
            tokio::spawn(async move {
                let mut conn: Option<H1Client> = None;
                for _ in 0..per_client {
                    if conn.is_none() {
                        conn = H1Client::connect(proxy).await.ok();
                    }
                    let Some(c) = conn.as_mut() else {
                        tally.failed.fetch_add(1, Ordering::SeqCst);
                        continue;
                    };
                    match c.send(get("/")).await {
                        Ok(r) if r.status == StatusCode::OK => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                            let app = r.header("x-app").unwrap_or("?").to_string();
                            *tally
                                .by_app
                                .lock()
                                .expect("tally lock")
                                .entry(app)
                                .or_default() += 1;
                        }
                        Ok(r) => {
                            eprintln!("answered {} {:?}", r.status, r.header("weft-error"));
                            tally.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            eprintln!("request failed: {e:#}");
                            tally.failed.fetch_add(1, Ordering::SeqCst);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        within(Duration::from_secs(120), "load client", t)
            .await
            .expect("join load client");
    }
}

async fn config_json(proxy: &WeftProxy) -> String {
    let reply = proxy.admin_get("/config").await.expect("/config");
    assert_eq!(reply.status, 200);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_500_is_ejected_and_retries_keep_success_above_99_percent() {
    let b = backends(3).await;
    // Round robin keeps sending the failing endpoint its share, so it meets its five
    // consecutive failures within the bounded load; peak-EWMA steers away from an
    // endpoint after its first failures, which made this timing-dependent.
    let policy = "{load_balancer: round-robin, \
                  retry: {max_attempts: 3, retry_on_status: [500]}, \
                  circuit_breaker: {outlier_detection: {consecutive_failures: 5, \
                  base_ejection: 60s, failure_on: [5xx]}}}";
    let proxy = WeftProxy::start(ProxyConfig::new().service(orders(&b, policy)))
        .await
        .expect("start proxy");
    let warm = Arc::new(Tally::default());
    run_load(proxy.outbound(), 2, 30, warm.clone()).await;
    assert_eq!(warm.ok.load(Ordering::SeqCst), 60);

    b[1].set(FAILING);
    let before = b[1].app.requests();
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 4, 150, tally.clone()).await;
    let ok = tally.ok.load(Ordering::SeqCst);
    assert!(
        ok * 100 >= tally.total() * 99,
        "only {ok} of {} succeeded",
        tally.total()
    );
    let metrics = proxy.metrics().await.expect("metrics");
    let labels = [("service", SERVICE)];
    assert_eq!(
        metrics.value("weft_outlier_ejected_endpoints", &labels),
        1.0
    );
    assert_eq!(metrics.value("weft_outlier_ejections_total", &labels), 1.0);
    assert!(metrics.value("weft_retries_total", &labels) >= 1.0);
    // Ejected after 5 failures; concurrent requests in flight at that moment (at
    // most one per client) may add a few more.
    let hits = b[1].app.requests() - before;
    assert!(
        (5..=5 + 4).contains(&hits),
        "the failing backend saw {hits}"
    );
    assert_eq!(tally.app("b1"), 0);
    let config = config_json(&proxy).await;
    assert!(config.contains("\"state\": \"ejected\""), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_endpoint_times_out_per_try_is_ejected_and_readmitted_after_a_probe() {
    let b = backends(3).await;
    // Round robin keeps sending the silent endpoint its share until it is ejected
    // (peak-EWMA would simply stop picking it after the first timeout).
    let policy = "{load_balancer: round-robin, retry: {max_attempts: 3}, \
                  timeouts: {per_try: 200ms, request: 10s}, \
                  circuit_breaker: {outlier_detection: {consecutive_failures: 2, \
                  base_ejection: 300ms, max_ejection: 600ms, failure_on: [connect]}}}";
    let proxy = WeftProxy::start(ProxyConfig::new().service(orders(&b, policy)))
        .await
        .expect("start proxy");
    b[2].set(BLACK_HOLE);
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 2, 40, tally.clone()).await;
    assert_eq!(
        tally.ok.load(Ordering::SeqCst),
        80,
        "every request is retried past the silent endpoint"
    );
    let labels = [("service", SERVICE)];
    let metrics = proxy.metrics().await.expect("metrics");
    assert!(metrics.value("weft_outlier_ejections_total", &labels) >= 1.0);
    assert!(metrics.value("weft_retries_total", &labels) >= 2.0);

    // Recovery: once the ejection time is up a probe goes through and, answered,
    // readmits the endpoint.
    b[2].set(HEALTHY);
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let deadline = Instant::now() + STEP_DEADLINE;
    let mut readmitted = false;
    while !readmitted && Instant::now() < deadline {
        let r = c.send(get("/")).await.expect("answer");
        assert_eq!(r.status, StatusCode::OK);
        readmitted = proxy
            .metric("weft_outlier_ejected_endpoints", &[("service", SERVICE)])
            .await
            == 0.0;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(readmitted, "the recovered endpoint is still ejected");
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 2, 60, tally.clone()).await;
    assert_eq!(tally.ok.load(Ordering::SeqCst), 120);
    assert!(
        tally.app("b2") > 0,
        "readmitted endpoint takes requests again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_requests_get_503_at_once_counted_and_memory_stays_flat() {
    // Slow enough that a request turned away at once cannot be confused with one
    // that waited for the backend, even on a loaded machine.
    let slow = Backend::start("slow", Duration::from_secs(1)).await;
    let policy = "{circuit_breaker: {max_active_requests: 4}}";
    let proxy =
        WeftProxy::start(ProxyConfig::new().service(orders(std::slice::from_ref(&slow), policy)))
            .await
            .expect("start proxy");

    let burst = |n: usize| {
        let addr = proxy.outbound();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut c = H1Client::connect(addr).await.expect("connect");
                        let started = Instant::now();
                        let r = c.send(get("/")).await.expect("answer");
                        (
                            r.status,
                            r.header("weft-error").map(str::to_string),
                            started.elapsed(),
                        )
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("join"));
            }
            out
        }
    };
    let first = burst(40).await;
    let overloaded: Vec<_> = first
        .iter()
        .filter(|(s, e, _)| {
            *s == StatusCode::SERVICE_UNAVAILABLE && e.as_deref() == Some("overloaded")
        })
        .collect();
    let ok = first
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(ok + overloaded.len(), 40, "only 200 or 503 overloaded");
    assert!(ok >= 4, "{ok} served");
    assert!(overloaded.len() >= 20, "{} overloaded", overloaded.len());
    // Turned away at once: none of them waited for the slow backend.
    let slowest_reject = overloaded.iter().map(|(_, _, d)| *d).max().expect("some");
    let fastest_ok = first
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .map(|(_, _, d)| *d)
        .min()
        .expect("some");
    assert!(
        slowest_reject < fastest_ok,
        "a rejected request waited {slowest_reject:?}, longer than a served one ({fastest_ok:?})"
    );
    let counted = proxy
        .metric(
            "weft_overload_rejections_total",
            &[("service", SERVICE), ("limit", "active")],
        )
        .await;
    assert_eq!(counted, overloaded.len() as f64);

    // Memory: repeated bursts far over the limit do not grow the proxy.
    let before = proxy.rss_kib().expect("RSS");
    let mut rejected = 0;
    for _ in 0..5 {
        rejected += burst(200)
            .await
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
            .count();
    }
    let after = proxy.rss_kib().expect("RSS");
    assert!(rejected >= 500, "{rejected} rejected");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    eprintln!("RSS {before} KiB -> {after} KiB over {rejected} rejections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact_over_weights() {
    let b = backends(3).await;
    let service = ServiceDef::new("orders")
        .endpoint_weighted(b[0].addr(), 100)
        .endpoint_weighted(b[1].addr(), 200)
        .endpoint_weighted(b[2].addr(), 300)
        .policy("{load_balancer: round-robin}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 1, 600, tally.clone()).await;
    assert_eq!(
        (tally.app("b0"), tally.app("b1"), tally.app("b2")),
        (100, 200, 300)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_a_ten_times_slower_endpoint_under_ten_percent() {
    let b = vec![
        Backend::start("fast-1", Duration::from_millis(5)).await,
        Backend::start("fast-2", Duration::from_millis(5)).await,
        Backend::start("slow", Duration::from_millis(50)).await,
    ];
    // The default balancer: p2c-peak-ewma.
    let proxy = WeftProxy::start(ProxyConfig::new().service(orders(&b, "{}")))
        .await
        .expect("start proxy");
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 6, 80, tally.clone()).await;
    assert_eq!(tally.ok.load(Ordering::SeqCst), 480);
    let slow = tally.app("slow");
    eprintln!(
        "fast-1 {} fast-2 {} slow {slow}",
        tally.app("fast-1"),
        tally.app("fast-2")
    );
    assert!(slow * 10 < 480, "the slow endpoint took {slow} of 480");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_a_key_on_one_endpoint_and_moves_about_one_in_n_when_one_leaves() {
    let b = backends(4).await;
    let policy = "{load_balancer: consistent-hash, hash_key: {header: x-user}}";
    let config = ProxyConfig::new().service(orders(&b, policy));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let keys = 200;
    let mut owner = HashMap::new();
    for round in 0..2 {
        for k in 0..keys {
            let mut req = get("/");
            req.headers_mut()
                .insert("x-user", HeaderValue::from(k as u64));
            let r = c.send(req).await.expect("answer");
            let app = r.header("x-app").expect("x-app").to_string();
            if round == 0 {
                owner.insert(k, app);
            } else {
                assert_eq!(owner[&k], app, "key {k} moved without a change");
            }
        }
    }
    let on_last = owner.values().filter(|a| *a == "b3").count();
    assert!(
        (keys / 8..=keys * 3 / 8).contains(&on_last),
        "{on_last} of {keys} keys on one of four endpoints"
    );

    proxy
        .write_config(config.clone().with_services(vec![orders(&b[..3], policy)]))
        .expect("write config");
    proxy.reload().expect("SIGHUP");
    proxy
        .wait_metric(
            "weft_snapshot_reloads_total",
            &[("result", "ok")],
            |v| v >= 2.0,
            STEP_DEADLINE,
        )
        .await;
    let mut moved = 0;
    for k in 0..keys {
        let mut req = get("/");
        req.headers_mut()
            .insert("x-user", HeaderValue::from(k as u64));
        let r = c.send(req).await.expect("answer");
        let app = r.header("x-app").expect("x-app");
        if owner[&k] == "b3" {
            moved += 1;
            assert_ne!(app, "b3");
        } else {
            assert_eq!(owner[&k], app, "key {k} moved though its endpoint stayed");
        }
    }
    assert_eq!(moved, on_last, "only the departed endpoint's keys moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_during_load_fails_no_request() {
    let b = backends(3).await;
    let policies = [
        "{load_balancer: round-robin, retry: {max_attempts: 2}}",
        "{load_balancer: least-request, circuit_breaker: {max_active_requests: 1000, \
          outlier_detection: {consecutive_failures: 5}}}",
        "{timeouts: {per_try: 5s, request: 10s}}",
        "{load_balancer: consistent-hash, hash_key: {header: x-user}}",
        "{}",
    ];
    let config = ProxyConfig::new().service(orders(&b, policies[4]));
    let mut proxy = WeftProxy::start(config.clone()).await.expect("start proxy");
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (tally, addr) = (tally.clone(), proxy.outbound());
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            // Bounded: at most 40 rounds of 4 × 25 requests.
            for _ in 0..40 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                run_load(addr, 4, 25, tally.clone()).await;
                served.store(tally.total() as u64, Ordering::SeqCst);
            }
        })
    };
    for (i, policy) in policies.iter().enumerate() {
        proxy
            .write_config(config.clone().with_services(vec![orders(&b, policy)]))
            .expect("write config");
        let before = tally.total();
        proxy.reload().expect("SIGHUP");
        proxy
            .wait_metric(
                "weft_snapshot_reloads_total",
                &[("result", "ok")],
                |v| v >= (2 + i) as f64,
                STEP_DEADLINE,
            )
            .await;
        eventually(
            STEP_DEADLINE,
            "requests served after a policy change",
            || async { (tally.total() >= before + 50).then_some(()) },
        )
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    within(Duration::from_secs(60), "load to stop", load)
        .await
        .expect("join load");
    let failed = tally.failed.load(Ordering::SeqCst);
    assert_eq!(failed, 0, "{failed} of {} failed", tally.total());
    assert!(tally.total() >= 250);
    let config = config_json(&proxy).await;
    assert!(config.contains("p2c-peak-ewma"), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_connect_failures_eject_the_endpoint_and_try_another() {
    let app = weft_tests::apps::TcpApp::echo_after_eof()
        .await
        .expect("start app");
    let dead = weft_tests::ports::closed_addr();
    let service = ServiceDef::new("db")
        .port(5432, "opaque")
        .endpoint(dead)
        .endpoint(app.addr)
        .policy(
            "{load_balancer: round-robin, retry: {max_attempts: 2}, circuit_breaker: \
             {outlier_detection: {consecutive_failures: 1, base_ejection: 60s, \
             failure_on: [connect]}}}",
        );
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("db").service(service))
        .await
        .expect("start proxy");
    for i in 0..10u8 {
        let answer =
            client::raw_exchange_half_closed(proxy.upstream("db"), &[i; 16], STEP_DEADLINE)
                .await
                .expect("exchange");
        assert_eq!(answer, [b"echo:".as_slice(), &[i; 16]].concat());
    }
    let labels = [("service", "db.default")];
    let metrics = proxy.metrics().await.expect("metrics");
    assert_eq!(metrics.value("weft_outlier_ejections_total", &labels), 1.0);
    assert_eq!(
        metrics.value("weft_outlier_ejected_endpoints", &labels),
        1.0
    );
    assert_eq!(app.accepted(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_body_is_replayed_on_retry_and_a_large_one_is_not_retried() {
    let failing = Backend::start("failing", Duration::ZERO).await;
    failing.set(FAILING);
    let good = HttpApp::start("good").await.expect("start app");
    // Round robin alternates and a retry takes the next turn, so every first attempt
    // lands on the failing endpoint and every retry on the good one.
    let service = ServiceDef::new("orders")
        .endpoint(failing.addr())
        .endpoint(good.addr)
        .policy("{load_balancer: round-robin, retry: {max_attempts: 2, retry_on_status: [500]}}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let small = weft_tests::data::pattern(10 * 1024, 3);
    for _ in 0..4 {
        let r = c
            .send(client::request(
                "POST",
                "http://orders/upload",
                &[],
                small.clone(),
            ))
            .await
            .expect("answer");
        assert_eq!(
            r.status,
            StatusCode::OK,
            "a POST is retried on a named status"
        );
        assert_eq!(r.header("x-body-len"), Some("10240"));
        assert_eq!(
            r.header("x-body-sum"),
            Some(weft_tests::data::checksum(&small).to_string().as_str())
        );
    }
    let large = weft_tests::data::pattern(100 * 1024, 4);
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = c
            .send(client::request(
                "POST",
                "http://orders/upload",
                &[],
                large.clone(),
            ))
            .await
            .expect("answer");
        statuses.push(r.status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 500],
        "over 64 KiB the body streams once, so the failing endpoint's answer stands"
    );
    assert_eq!(
        proxy
            .metric("weft_retries_total", &[("service", SERVICE)])
            .await,
        4.0,
        "each small POST once, the large ones never"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_idle_timeout_retires_kept_alive_upstream_connections() {
    let app = HttpApp::start("app").await.expect("start app");
    let service = ServiceDef::new("orders")
        .endpoint(app.addr)
        .policy("{timeouts: {idle: 150ms}}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    for _ in 0..3 {
        assert_eq!(
            c.send(get("/")).await.expect("answer").status,
            StatusCode::OK
        );
    }
    assert_eq!(
        app.connections(),
        1,
        "back-to-back requests reuse the connection"
    );
    // Idle for longer than the service allows (the pool's default is 90 s).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.send(get("/")).await.expect("answer").status,
        StatusCode::OK
    );
    assert_eq!(app.connections(), 2, "the idle connection was not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_counts_as_active_until_its_response_body_has_streamed() {
    use http_body_util::{BodyExt as _, StreamBody};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let handler = Arc::new(move |_req: Request<hyper::body::Incoming>| {
        let r = r.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
            >(1);
            tokio::spawn(async move {
                r.notified().await;
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"done\n"))))
                    .await;
            });
            let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
            Response::new(body)
        }) as weft_tests::apps::BoxFuture<Response<weft_tests::apps::AppBody>>
    });
    let app = HttpApp::with_handler("streaming", handler)
        .await
        .expect("start app");
    let service = ServiceDef::new("orders")
        .endpoint(app.addr)
        .policy("{circuit_breaker: {max_active_requests: 1}}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");

    // First request: its head arrives, its body is held back by the app.
    let mut first = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .expect("connect");
    first
        .write_all(b"GET http://orders/ HTTP/1.1\r\nHost: orders\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    within(STEP_DEADLINE, "response head", async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = first.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the head");
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(head.starts_with(b"HTTP/1.1 200"));

    let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
    let r = c.send(get("/")).await.expect("answer");
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "still streaming: at the limit"
    );
    assert_eq!(r.header("weft-error"), Some("overloaded"));

    release.notify_one();
    eventually(STEP_DEADLINE, "the streamed request to end", || async {
        // A permit in advance, for this request's body should it get through.
        release.notify_one();
        let mut c = H1Client::connect(proxy.outbound()).await.expect("connect");
        let r = c.send(get("/")).await.expect("answer");
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_does_not_mistake_a_fast_failing_endpoint_for_a_fast_one() {
    let good = Backend::start("good", Duration::from_millis(2)).await;
    // No outlier detection: only the balancer's estimate keeps traffic away.
    let service = ServiceDef::new("orders")
        .endpoint(weft_tests::ports::closed_addr())
        .endpoint(good.addr())
        .policy("{retry: {max_attempts: 2}}");
    let proxy = WeftProxy::start(ProxyConfig::new().service(service))
        .await
        .expect("start proxy");
    let tally = Arc::new(Tally::default());
    run_load(proxy.outbound(), 2, 100, tally.clone()).await;
    assert_eq!(tally.ok.load(Ordering::SeqCst), 200);
    let retries = proxy
        .metric("weft_retries_total", &[("service", SERVICE)])
        .await;
    assert!(
        retries <= 10.0,
        "{retries} requests went to the refusing endpoint first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_is_retried_on_a_named_code_though_its_body_length_is_unknown() {
    // Answers every call UNAVAILABLE (trailers-only), after reading the request.
    let unavailable = HttpApp::with_handler(
        "unavailable",
        Arc::new(|req: Request<hyper::body::Incoming>| {
            Box::pin(async move {
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                let mut resp = Response::new(full(Bytes::new()));
                let h = resp.headers_mut();
                h.insert("content-type", HeaderValue::from_static("application/grpc"));
                h.insert("grpc-status", HeaderValue::from_static("14"));
                resp
            }) as weft_tests::apps::BoxFuture<Response<weft_tests::apps::AppBody>>
        }),
    )
    .await
    .expect("start failing app");
    let echo = weft_tests::grpc::GrpcEchoApp::start()
        .await
        .expect("start gRPC app");
    let service = ServiceDef::new("echo")
        .port(50051, "grpc")
        .endpoint(unavailable.addr)
        .endpoint(echo.addr)
        .policy("{load_balancer: round-robin, retry: {max_attempts: 2, retry_on_grpc: [14]}}");
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("echo").service(service))
        .await
        .expect("start proxy");
    let mut client = weft_tests::grpc::echo_client(proxy.upstream("echo"))
        .await
        .expect("connect");
    for i in 0..4 {
        let text = format!("call {i}");
        let reply = client
            .unary(weft_tests::pb::Msg {
                text: text.clone(),
                ..Default::default()
            })
            .await
            .expect("the call succeeds on the retry");
        assert_eq!(reply.get_ref().text, text);
    }
    assert!(
        unavailable.requests() >= 1,
        "the failing endpoint was tried"
    );
    assert_eq!(
        proxy
            .metric("weft_retries_total", &[("service", "echo.default")])
            .await,
        unavailable.requests() as f64,
        "every call that met the failing endpoint was retried"
    );
}
