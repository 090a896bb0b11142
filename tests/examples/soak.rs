//! Soak: a meshed client -> server hop under steady load for a long time, with the
//! endpoint set changing every second and certificates living 60 s, sampling each
//! proxy's resident memory, open descriptors and live tasks once a minute and
//! printing their slope. Not a test (it runs for half an hour); see
//! tests/bench/README.md.
//!
//!   cargo build --release --workspace --bins
//!   SOAK_MINUTES=30 cargo run --release -p weft-tests --example soak
//!
//! Knobs: SOAK_MINUTES (30), SOAK_RPS (half the capacity measured first),
//! SOAK_CERT_LIFETIME (60s). The proxies are the binaries under target/ that the
//! test harness uses (WEFT_BIN_DIR to choose others).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H1Client};
use weft_tests::control::WeftControl;
use weft_tests::control::mesh_yaml;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";
const SERVERS: usize = 3;
/// Samples before this are the warm-up, left out of the slope.
const WARM_UP_SAMPLES: usize = 2;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The mesh with every server but `left_out` (None: all of them).
fn mesh(servers: &[SocketAddr], left_out: Option<usize>) -> String {
    let svc = servers
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != left_out)
        .fold(ServiceDef::new("echo").port(80, "http1"), |s, (_, addr)| {
            s.endpoint_with_identity(*addr, SERVER_ID)
        });
    mesh_yaml(&[svc])
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// `workers` keep-alive clients, each sending at `rate / workers` a second (or
/// flat out when `rate` is None) until `until`.
async fn load(
    target: SocketAddr,
    workers: u32,
    rate: Option<f64>,
    until: Instant,
    tally: Arc<Tally>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let tally = tally.clone();
        let gap = rate.map(|r| Duration::from_secs_f64(f64::from(workers) / r));
        tasks.spawn(async move {
            let mut conn: Option<H1Client> = None;
            let mut next = tokio::time::Instant::now();
            while Instant::now() < until {
                if let Some(gap) = gap {
                    next += gap;
                    tokio::time::sleep_until(next).await;
                }
                if conn.is_none() {
                    conn = H1Client::connect(target).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut req = client::get("/");
                req.headers_mut()
                    .insert("host", http::HeaderValue::from_static("echo"));
                match c.send(req).await {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// (RSS MiB, open fds, alive tasks) from a proxy's /metrics.
async fn sample(p: &WeftProxy) -> Option<(f64, f64, f64)> {
    let m = p.metrics().await.ok()?;
    Some((
        m.value("process_resident_memory_bytes", &[]) / (1024.0 * 1024.0),
        m.value("process_open_fds", &[]),
        m.value("weft_runtime_alive_tasks", &[]),
    ))
}

/// Least-squares slope of `ys` per step.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    num / den
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let minutes: u64 = env_or("SOAK_MINUTES", 30);
    let lifetime: String = env_or("SOAK_CERT_LIFETIME", "60s".to_string());
    let cp = WeftControl::start_yaml("services: []\n", &["--cert-lifetime", &lifetime]).await?;
    let mut apps = Vec::new();
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        let app = HttpApp::start(&format!("app-{i}")).await?;
        let mut config = ProxyConfig::new().inbound(app.addr);
        config.extra = cp.identity_yaml("server", "{}", "");
        servers.push(WeftProxy::start_named(&format!("server-{i}"), config).await?);
        apps.push(app);
    }
    let endpoints: Vec<SocketAddr> = servers.iter().map(WeftProxy::inbound).collect();
    cp.write_mesh_text(&mesh(&endpoints, None))?;
    let mut config = ProxyConfig::new().upstream("echo");
    config.outbound = None;
    config.extra = format!(
        "{}control_plane: \"{}\"\n",
        cp.identity_yaml("client", "{}", ""),
        cp.url()
    );
    let client = WeftProxy::start_named("client", config).await?;
    let target = client.upstream("echo");

    let rate = match std::env::var("SOAK_RPS").ok().and_then(|v| v.parse().ok()) {
        Some(r) => r,
        None => {
            let tally = Arc::new(Tally::default());
            let secs = 10;
            load(
                target,
                32,
                None,
                Instant::now() + Duration::from_secs(secs),
                tally.clone(),
            )
            .await;
            let capacity = tally.ok.load(Ordering::Relaxed) as f64 / secs as f64;
            println!("capacity: {capacity:.0} requests/s (32 connections, flat out)");
            capacity / 2.0
        }
    };
    println!(
        "soak: {minutes} min at {rate:.0} requests/s, endpoint set changing every second, \
         certificates of {lifetime}"
    );

    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let tally = Arc::new(Tally::default());
    let load_task = tokio::spawn(load(target, 16, Some(rate), until, tally.clone()));
    let churn_cp = &cp;
    let churn = async {
        let mut step = 0usize;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            step += 1;
            // One server left out in turn, every other second all of them.
            let left_out = (step % 2 == 1).then_some((step / 2) % SERVERS);
            if let Err(e) = churn_cp.write_mesh_text(&mesh(&endpoints, left_out)) {
                eprintln!("churn: {e:#}");
            }
        }
    };
    let proxies: Vec<(&str, &WeftProxy)> = std::iter::once(("client", &client))
        .chain(servers.iter().map(|s| ("server", s)))
        .collect();
    let mut series: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); proxies.len()];
    let sampler = async {
        println!(
            "{:>4} {:>9} {:>9} | {:>10} {:>6} {:>6} | {:>10} {:>6} {:>6}",
            "min", "ok", "failed", "client MiB", "fds", "tasks", "server MiB", "fds", "tasks"
        );
        let mut minute = 0;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(60).min(until - Instant::now())).await;
            minute += 1;
            for (i, (_, p)) in proxies.iter().enumerate() {
                if let Some(s) = sample(p).await {
                    series[i].push(s);
                }
            }
            let last = |i: usize| series[i].last().copied().unwrap_or_default();
            let (c, s) = (last(0), last(1));
            println!(
                "{minute:>4} {:>9} {:>9} | {:>10.1} {:>6} {:>6} | {:>10.1} {:>6} {:>6}",
                tally.ok.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
                c.0,
                c.1,
                c.2,
                s.0,
                s.1,
                s.2
            );
        }
    };
    tokio::join!(churn, sampler);
    load_task.await?;

    println!("\nslope per minute after {WARM_UP_SAMPLES} minutes of warm-up:");
    for (i, (name, _)) in proxies.iter().enumerate() {
        let kept: Vec<(f64, f64, f64)> = series[i].iter().skip(WARM_UP_SAMPLES).copied().collect();
        let col = |f: fn(&(f64, f64, f64)) -> f64| kept.iter().map(f).collect::<Vec<_>>();
        println!(
            "  {name}-{i}: RSS {:+.3} MiB/min, fds {:+.2}/min, tasks {:+.2}/min",
            slope(&col(|s| s.0)),
            slope(&col(|s| s.1)),
            slope(&col(|s| s.2))
        );
    }
    println!(
        "requests: {} ok, {} failed; certificates renewed by the client: {}",
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        client
            .metric("weft_identity_renewals_total", &[("result", "ok")])
            .await
    );
    drop(apps);
    Ok(())
}
