//! Fan-out benchmark: how long from a mesh file write until every subscribed proxy
//! holds the new version, and the control plane's memory at 10 000 endpoints.
//!
//! The server runs as its own process (the real `weft-control serve` binary), so its
//! RSS is read from /proc/<pid>/status without the simulated proxies in it. Each
//! simulated proxy is a real gRPC client with its own connection over loopback.
//!
//! The simulated proxies decode only each update's version (a real proxy decodes the
//! whole update on its own CPU, not the control plane's; here 1000 full decodes would
//! compete with the server for the same cores). One extra scenario decodes in full
//! for comparison.
//!
//! Run: `cargo bench -p weft-control --bench fanout`

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use weft_api::v1::{self, discovery_client::DiscoveryClient, subscribe, watch_request};

const SERVICES: usize = 100;
const ENDPOINTS_PER_SERVICE: usize = 100;
const CHANGES: u64 = 20;
/// Bounds every wait; a run that hits it is reported as a failure, not a number.
const WAIT: Duration = Duration::from_secs(30);
const CHANGED: &str = "svc-0";

struct Scenario {
    subscribers: usize,
    /// How many of them watch the changed service; the rest spread over the others.
    on_changed: usize,
    /// Decode whole `ServiceUpdate`s rather than only their version.
    full_decode: bool,
}

/// The first field of `weft.v1.ServiceUpdate`; prost skips the rest unread.
#[derive(Clone, PartialEq, prost::Message)]
struct VersionOnly {
    #[prost(uint64, tag = "1")]
    version: u64,
}

fn mesh(change: u64) -> String {
    let mut text = String::with_capacity(SERVICES * ENDPOINTS_PER_SERVICE * 40);
    text.push_str("services:\n");
    for s in 0..SERVICES {
        let _ = writeln!(
            text,
            "  - name: svc-{s}\n    vips: [10.96.{}.{}]\n    ports: [{{port: 80, protocol: http1}}]\n    endpoints:",
            s / 250,
            s % 250
        );
        for e in 0..ENDPOINTS_PER_SERVICE {
            // The changed service's first endpoint moves port with every change.
            let port = if s == 0 && e == 0 {
                20_000 + change
            } else {
                8080
            };
            let _ = writeln!(
                text,
                "      - address: 10.{}.{}.{}:{port}",
                1 + s / 250,
                s % 250,
                e
            );
        }
    }
    text
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over mesh file");
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("rss field")
}

/// The process's user + system CPU time so far (all threads).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn scrape(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("metrics");
    out
}

/// Samples whose name (with labels) starts with `prefix`, in exposition order.
fn samples(text: &str, prefix: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            Some((n.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Mean and bucket-bound p99 of a histogram between two scrapes.
fn histogram_delta(before: &str, after: &str, name: &str) -> (Duration, Duration) {
    let get = |text: &str, suffix: &str| {
        samples(text, &format!("{name}_{suffix}"))
            .first()
            .map(|s| s.1)
            .unwrap_or(0.0)
    };
    let count = get(after, "count") - get(before, "count");
    let sum = get(after, "sum") - get(before, "sum");
    if count <= 0.0 {
        return (Duration::ZERO, Duration::ZERO);
    }
    let b0 = samples(before, &format!("{name}_bucket"));
    let b1 = samples(after, &format!("{name}_bucket"));
    let mut p99 = f64::INFINITY;
    for ((label, v1), (_, v0)) in b1.iter().zip(b0.iter()) {
        if v1 - v0 >= 0.99 * count {
            p99 = label
                .split("le=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|le| le.parse().ok())
                .unwrap_or(f64::INFINITY);
            break;
        }
    }
    (
        Duration::from_secs_f64(sum / count),
        Duration::from_secs_f64(p99.min(3600.0)),
    )
}

async fn http_ready(admin: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(admin).await else {
        return false;
    };
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.starts_with("HTTP/1.1 200")
}

/// One simulated proxy: reports (subscriber, version, arrival) for every update.
async fn subscriber(
    id: usize,
    grpc: SocketAddr,
    service: String,
    full_decode: bool,
    reports: mpsc::UnboundedSender<(usize, u64, Instant)>,
) -> tokio::task::JoinHandle<()> {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(4);
    tx.send(v1::WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(v1::Subscribe {
            node: Some(v1::Node {
                id: format!("bench-{id}"),
                namespace: "default".into(),
                ..Default::default()
            }),
            destination: Some(subscribe::Destination::Service(service)),
        })),
    })
    .await
    .expect("queue subscribe");
    if full_decode {
        let mut client = DiscoveryClient::new(channel);
        let mut updates = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        tokio::spawn(async move {
            // Holding the request sender and the client keeps the stream open.
            let _requests = tx;
            let _client = client;
            while let Ok(Some(update)) = updates.message().await {
                if reports.send((id, update.version, Instant::now())).is_err() {
                    break;
                }
            }
        })
    } else {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("channel ready");
        let codec = tonic_prost::ProstCodec::<v1::WatchRequest, VersionOnly>::default();
        let mut updates = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                http::uri::PathAndQuery::from_static("/weft.v1.Discovery/Watch"),
                codec,
            )
            .await
            .expect("watch")
            .into_inner();
        tokio::spawn(async move {
            let _requests = tx;
            let _grpc = grpc;
            while let Ok(Some(update)) = updates.message().await {
                if reports.send((id, update.version, Instant::now())).is_err() {
                    break;
                }
            }
        })
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_path = dir.path().join("mesh.yaml");
    write_atomically(&mesh_path, &mesh(0));
    let (grpc, admin) = (free_addr(), free_addr());
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft-control"))
        .args(["serve", "--mesh"])
        .arg(&mesh_path)
        .args(["--grpc", &grpc.to_string(), "--admin", &admin.to_string()])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn weft-control");
    let pid = server.id().expect("server pid");
    let deadline = Instant::now() + WAIT;
    while !http_ready(admin).await {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "fanout: {SERVICES} services x {ENDPOINTS_PER_SERVICE} endpoints = {} endpoints, {CHANGES} changes per scenario",
        SERVICES * ENDPOINTS_PER_SERVICE
    );
    println!(
        "server process RSS at idle (loaded, no subscribers): {} KiB",
        rss_kib(pid, "VmRSS:")
    );

    // (subscribers, of them on the changed service, full decode)
    let scenarios = [
        (1, 1, false),
        (100, 100, false),
        (1000, 1000, false),
        (1000, 100, false),
        (1000, 1000, true),
    ]
    .map(|(subscribers, on_changed, full_decode)| Scenario {
        subscribers,
        on_changed,
        full_decode,
    });
    let mut generation = 1u64;
    let mut change = 0u64;
    for sc in scenarios {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut clients = Vec::with_capacity(sc.subscribers);
        let mut connecting = tokio::task::JoinSet::new();
        for id in 0..sc.subscribers {
            let service = if id < sc.on_changed {
                CHANGED.to_string()
            } else {
                format!("svc-{}", 1 + id % (SERVICES - 1))
            };
            connecting.spawn(subscriber(
                id,
                grpc,
                service,
                sc.full_decode,
                reports_tx.clone(),
            ));
            // Connect in waves so the accept backlog never overflows.
            if connecting.len() >= 100 {
                while let Some(c) = connecting.join_next().await {
                    clients.push(c.expect("subscriber task"));
                }
            }
        }
        while let Some(c) = connecting.join_next().await {
            clients.push(c.expect("subscriber task"));
        }
        drop(reports_tx);
        // Every subscriber first gets the current state.
        let mut initial = 0;
        while initial < sc.subscribers {
            tokio::time::timeout(WAIT, reports.recv())
                .await
                .expect("initial states in time")
                .expect("reports open");
            initial += 1;
        }

        let mut per_subscriber = Vec::with_capacity(sc.on_changed * CHANGES as usize);
        let mut all_hold = Vec::with_capacity(CHANGES as usize);
        let texts: Vec<String> = (1..=CHANGES).map(|k| mesh(change + k)).collect();
        let before = scrape(admin).await;
        let cpu_before = cpu_time(pid);
        for text in &texts {
            change += 1;
            generation += 1;
            let start = Instant::now();
            write_atomically(&mesh_path, text);
            let mut holding = vec![false; sc.on_changed];
            let mut remaining = sc.on_changed;
            let mut last = start;
            while remaining > 0 {
                let (id, version, at) = tokio::time::timeout(WAIT, reports.recv())
                    .await
                    .expect("every subscriber of the changed service gets the change in time")
                    .expect("reports open");
                assert!(id < sc.on_changed, "an unchanged service was pushed to");
                if version >= generation && !holding[id] {
                    holding[id] = true;
                    remaining -= 1;
                    per_subscriber.push(at - start);
                    last = last.max(at);
                }
            }
            all_hold.push(last - start);
            // Spaces the writes so each is its own change, not part of one burst.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let cpu_per_change = (cpu_time(pid) - cpu_before) / CHANGES as u32;
        let rss = rss_kib(pid, "VmRSS:");
        let after = scrape(admin).await;
        let (push_mean, push_p99) =
            histogram_delta(&before, &after, "weft_control_push_latency_seconds");
        let (load_mean, _) = histogram_delta(&before, &after, "weft_control_source_load_seconds");
        per_subscriber.sort();
        all_hold.sort();
        println!(
            "N={:>4} ({:>4} on the changed service{}): per subscriber p50 {} p99 {} max {} | all hold: p50 {} max {} | server RSS {} KiB ({:.1} MB)",
            sc.subscribers,
            sc.on_changed,
            if sc.full_decode { ", full decode" } else { "" },
            ms(percentile(&per_subscriber, 50.0)),
            ms(percentile(&per_subscriber, 99.0)),
            ms(percentile(&per_subscriber, 100.0)),
            ms(percentile(&all_hold, 50.0)),
            ms(percentile(&all_hold, 100.0)),
            rss,
            rss as f64 / 1024.0,
        );
        println!(
            "        server side: CPU per change {} | source load mean {} | push latency (applied -> handed to stream) mean {} p99 <= {}",
            ms(cpu_per_change),
            ms(load_mean),
            ms(push_mean),
            ms(push_p99),
        );
        // Closes every stream and connection before the next scenario.
        for client in clients {
            client.abort();
        }
        // The server must notice every close before the next scenario's numbers.
        let deadline = Instant::now() + WAIT;
        loop {
            let text = scrape(admin).await;
            let open = |name: &str| samples(&text, name).first().map(|s| s.1).unwrap_or(0.0);
            if open("weft_control_connected_proxies ") == 0.0
                && open("weft_control_subscriptions ") == 0.0
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "connections still open after the scenario"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "server process peak RSS (VmHWM): {} KiB",
        rss_kib(pid, "VmHWM:")
    );
    let metrics = scrape(admin).await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("weft_control_source_changes_"))
    {
        println!("  {line}");
    }
    let _ = server.start_kill();
    let _ = server.wait().await;
}
