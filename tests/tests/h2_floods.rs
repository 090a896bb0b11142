//! HTTP/2 floods against the proxy's h2c outbound listener, written as raw frames:
//! rapid reset (CVE-2023-44487), CONTINUATION without end (CVE-2024-27316 class),
//! PING and SETTINGS floods from a client that never reads, and HPACK: a table
//! kept full by every request, and a table size over the one the proxy allows. Each is bounded:
//! the proxy closes the connection or keeps its memory and CPU in check, few
//! requests reach the app, and other clients are served throughout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::apps::HttpApp;
use weft_tests::client::{self, H2Client};
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// What a flood may cost the proxy in resident memory.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// What a flood of a few MB may cost in CPU, far above what parsing it takes.
const CPU_LIMIT: Duration = Duration::from_secs(10);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small frame");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET for http://orders/ in HPACK from the static table and one literal.
fn get_block() -> Vec<u8> {
    // :method GET, :scheme http, :path /, then :authority (index 1) literal
    // without indexing, so no dynamic-table state carries between streams.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 6];
    block.extend_from_slice(b"orders");
    block
}

/// Connects with the preface and an empty SETTINGS frame.
async fn open(proxy: &WeftProxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.outbound()).await.expect("connect");
    s.write_all(PREFACE).await.expect("preface");
    s.write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("settings");
    s
}

/// Writes `frames` batches until done or the proxy stops taking them (closed the
/// connection, or stopped reading for `stall`). Returns how many were written.
async fn flood(s: &mut TcpStream, batches: usize, batch: &[u8], stall: Duration) -> usize {
    for i in 0..batches {
        match tokio::time::timeout(stall, s.write_all(batch)).await {
            Ok(Ok(())) => {}
            _ => return i,
        }
    }
    batches
}

/// Whether the proxy closed the connection (EOF or reset) within `limit`,
/// reading and discarding whatever it sent first.
async fn closed_by_proxy(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

struct Bed {
    app: HttpApp,
    proxy: WeftProxy,
}

impl Bed {
    async fn start() -> Bed {
        let app = HttpApp::start("a").await.expect("app");
        let proxy = WeftProxy::start(
            ProxyConfig::new().service(ServiceDef::new("orders").endpoint(app.addr)),
        )
        .await
        .expect("start proxy");
        Bed { app, proxy }
    }

    /// Another client is served (over HTTP/2, as the flooder speaks).
    async fn still_serves(&self, during: &str) {
        let mut c = H2Client::connect(self.proxy.outbound())
            .await
            .unwrap_or_else(|e| panic!("connect {during}: {e:#}"));
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            c.send(client::get("http://orders/")),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer in 10 s {during}"))
        .unwrap_or_else(|e| panic!("request {during}: {e:#}"));
        assert_eq!(reply.status, 200, "{during}");
    }

    /// Runs `attack` and checks the proxy's memory and CPU stayed bounded.
    async fn bounded<F, Fut>(&self, what: &str, attack: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let rss = self.proxy.rss_kib().expect("RSS");
        let cpu = self.proxy.cpu_time().expect("CPU time");
        attack().await;
        let grown = self.proxy.rss_kib().expect("RSS").saturating_sub(rss);
        let used = self.proxy.cpu_time().expect("CPU time").saturating_sub(cpu);
        eprintln!("{what}: RSS +{grown} KiB, CPU {used:?}");
        assert!(
            grown < RSS_GROWTH_LIMIT_KIB,
            "{what}: RSS grew by {grown} KiB"
        );
        assert!(used < CPU_LIMIT, "{what}: the proxy spent {used:?} of CPU");
        self.still_serves(&format!("after {what}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_cut_off_and_few_of_its_requests_reach_the_app() {
    const STREAMS: u32 = 20_000;
    let bed = Bed::start().await;
    bed.bounded("rapid reset", || async {
        let mut s = open(&bed.proxy).await;
        let block = get_block();
        let mut batch = Vec::new();
        for i in 0..STREAMS {
            let id = 2 * i + 1;
            batch.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            batch.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        flood(&mut s, 1, &batch, Duration::from_secs(10)).await;
        assert!(
            closed_by_proxy(&mut s, Duration::from_secs(10)).await,
            "the proxy kept a connection that reset {STREAMS} streams"
        );
    })
    .await;
    // Less the one request `bounded` makes to check the proxy still serves.
    let reached = bed.app.requests() - 1;
    eprintln!("rapid reset: {reached} of {STREAMS} requests reached the app");
    assert!(
        reached < (STREAMS / 10) as usize,
        "{reached} of {STREAMS} reset requests reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_that_never_ends_is_cut_off() {
    let bed = Bed::start().await;
    bed.bounded("CONTINUATION flood", || async {
        let mut s = open(&bed.proxy).await;
        s.write_all(&frame(HEADERS, 0, 1, &get_block()))
            .await
            .expect("headers");
        // Literal headers without indexing, new name: 1 KiB per frame.
        let mut fragment = vec![0x00, 0x03];
        fragment.extend_from_slice(b"x-a");
        fragment.extend_from_slice(&[0x7f, 0x81, 0x07]); // value length 1,000
        fragment.extend(std::iter::repeat_n(b'a', 1000));
        let batch: Vec<u8> = (0..64)
            .flat_map(|_| frame(CONTINUATION, 0, 1, &fragment))
            .collect();
        // Up to 64 MiB; the proxy must stop it long before.
        let written = flood(&mut s, 1_000, &batch, Duration::from_secs(5)).await;
        assert!(written < 1_000, "the proxy took 64 MiB of one header block");
        assert!(closed_by_proxy(&mut s, Duration::from_secs(10)).await);
    })
    .await;
    assert_eq!(bed.app.requests(), 1, "only the check's own request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_settings_floods_from_a_client_that_never_reads_stay_bounded() {
    let bed = Bed::start().await;
    for (what, kind) in [("PING flood", PING), ("SETTINGS flood", SETTINGS)] {
        bed.bounded(what, || async {
            let mut s = open(&bed.proxy).await;
            let payload: &[u8] = if kind == PING { &[0; 8] } else { &[] };
            let batch: Vec<u8> = (0..4_096)
                .flat_map(|_| frame(kind, 0, 0, payload))
                .collect();
            // Up to about 70 MB (PING) of frames whose answers are never read:
            // either the proxy stops reading (backpressure) or closes.
            flood(&mut s, 1_000, &batch, Duration::from_secs(3)).await;
            bed.still_serves(&format!("during the {what}")).await;
        })
        .await;
    }
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `flags`.
fn hpack_int(flags: u8, n: u32, mut v: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamic_table_kept_full_stays_bounded_and_one_over_the_limit_is_refused() {
    const REQUESTS: usize = 150;
    let bed = Bed::start().await;
    bed.bounded("HPACK table kept full", || async {
        let s = open(&bed.proxy).await;
        let (mut rd, mut wr) = s.into_split();
        // Answers are drained, not parsed: the app's count says what got through.
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(rd.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        for i in 0..REQUESTS {
            // Each adds a ~3 KB entry under a new name: with the proxy's 4 KiB
            // table every one evicts the last.
            let mut block = get_block();
            let name = format!("x-fill-{i}");
            block.push(0x40);
            hpack_int(0, 7, name.len(), &mut block);
            block.extend_from_slice(name.as_bytes());
            hpack_int(0, 7, 3000, &mut block);
            block.extend(std::iter::repeat_n(b'a', 3000));
            let id = u32::try_from(2 * i + 1).expect("a stream id");
            wr.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, id, &block))
                .await
                .expect("write");
        }
        weft_tests::eventually(Duration::from_secs(20), "every request served", || async {
            (bed.app.requests() >= REQUESTS).then_some(())
        })
        .await;
        drop(wr);
        drain.abort();
    })
    .await;

    // A table size update above SETTINGS_HEADER_TABLE_SIZE (4,096 by default) is a
    // COMPRESSION_ERROR: the connection ends, nothing reaches the app.
    let before = bed.app.requests();
    let mut s = open(&bed.proxy).await;
    let mut block = Vec::new();
    hpack_int(0x20, 5, 1 << 30, &mut block);
    block.extend(get_block());
    s.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .expect("write");
    assert!(
        closed_by_proxy(&mut s, Duration::from_secs(10)).await,
        "a 1 GiB table size was accepted"
    );
    assert_eq!(bed.app.requests(), before);
    bed.still_serves("after the oversized table").await;
}
