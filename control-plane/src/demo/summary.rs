//! The demo's live summary: scrapes each sidecar's /metrics and prints, per service,
//! the inbound request rate, success rate and latency percentiles over the last
//! interval (from counter and histogram deltas, as Prometheus' rate() would).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plan::Plan;

/// A minimal HTTP/1.0 GET for loopback admin endpoints: (status, body).
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http URL: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let fut = async {
        let mut stream = TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), fut).await??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP answer from {url}"))?;
    Ok((status, body.to_string()))
}

/// Counters for one service's inbound traffic at one moment.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub requests: f64,
    pub failures: f64,
    /// Upper bound (seconds) → cumulative count.
    pub buckets: BTreeMap<OrderedF64, f64>,
    /// Opaque TCP connections open now, and those of them over mTLS.
    pub tcp_open: f64,
    pub tcp_open_mtls: f64,
    /// Bytes received from the opaque connections' clients so far.
    pub tcp_received: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedF64(pub f64);
impl Eq for OrderedF64 {}
impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn labels(s: &str) -> HashMap<&str, &str> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .collect()
}

/// Reads the inbound series for `service` from Prometheus text.
pub fn parse(text: &str, service: &str) -> Sample {
    let mut sample = Sample::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, rest)) = series.split_once('{') else {
            continue;
        };
        let l = labels(rest.trim_end_matches('}'));
        if l.get("direction") != Some(&"inbound") || l.get("service") != Some(&service) {
            continue;
        }
        match name {
            "weft_requests_total" => {
                sample.requests += value;
                if l.get("status_class") == Some(&"5xx") {
                    sample.failures += value;
                }
            }
            "weft_tcp_service_open_connections" => {
                sample.tcp_open += value;
                if l.get("tls") == Some(&"true") {
                    sample.tcp_open_mtls += value;
                }
            }
            "weft_tcp_service_received_bytes_total" => sample.tcp_received += value,
            "weft_request_duration_seconds_bucket" => {
                let le = match l.get("le") {
                    Some(&"+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                sample.buckets.insert(OrderedF64(le), value);
            }
            _ => {}
        }
    }
    sample
}

/// The q-quantile of the observations between two samples, interpolated within
/// the bucket it falls in.
pub fn quantile(prev: &Sample, cur: &Sample, q: f64) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = cur
        .buckets
        .iter()
        .map(|(le, c)| (le.0, c - prev.buckets.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, count) in deltas {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let frac = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, count);
    }
    None
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |s| format!("{:.2}ms", s * 1000.0))
}

pub async fn watch(plan: &Plan, every: Duration, run_for: Option<Duration>) -> anyhow::Result<()> {
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut prev: HashMap<&str, (Instant, Sample)> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let sleep = tokio::time::sleep(every);
        tokio::select! {
            _ = sleep => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        }
        let mut rows = Vec::new();
        let mut tcp = Vec::new();
        for w in &plan.workloads {
            let url = format!("http://{}/metrics", w.admin);
            let Ok((200, text)) = http_get(&url).await else {
                rows.push(format!("{:<14} (metrics unavailable at {url})", w.name));
                continue;
            };
            let now = Instant::now();
            let cur = parse(&text, w.name);
            if let Some((then, before)) = prev.get(w.name) {
                let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                if cur.tcp_open > 0.0 {
                    tcp.push(format!(
                        "{}: {} open TCP connections ({} over mTLS), {:.1} KB/s in",
                        w.name,
                        cur.tcp_open,
                        cur.tcp_open_mtls,
                        (cur.tcp_received - before.tcp_received) / secs / 1024.0,
                    ));
                }
                let reqs = cur.requests - before.requests;
                let fails = cur.failures - before.failures;
                let success = if reqs > 0.0 {
                    format!("{:.2}%", 100.0 * (reqs - fails) / reqs)
                } else {
                    "-".to_string()
                };
                rows.push(format!(
                    "{:<14} {:>8.1} {:>9} {:>10} {:>10}",
                    w.name,
                    reqs / secs,
                    success,
                    ms(quantile(before, &cur, 0.5)),
                    ms(quantile(before, &cur, 0.99)),
                ));
            }
            prev.insert(w.name, (now, cur));
        }
        if !rows.is_empty() {
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "weft demo — {:>4}s — inbound traffic per service (Ctrl-C to stop)",
                started.elapsed().as_secs()
            );
            println!(
                "{:<14} {:>8} {:>9} {:>10} {:>10}",
                "service", "rps", "success", "p50", "p99"
            );
            for r in rows {
                println!("{r}");
            }
            println!();
            for t in &tcp {
                println!("{t}");
            }
            if !tcp.is_empty() {
                println!();
            }
        }
        if run_for.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"
weft_requests_total{direction="inbound",service="web",status_class="2xx"} 10
weft_requests_total{direction="inbound",service="web",status_class="5xx"} 0
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="0.001"} 5
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="0.01"} 10
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="+Inf"} 10
weft_requests_total{direction="outbound",service="web",status_class="2xx"} 99
"#;
    const AFTER: &str = r#"
weft_requests_total{direction="inbound",service="web",status_class="2xx"} 108
weft_requests_total{direction="inbound",service="web",status_class="5xx"} 2
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="0.001"} 55
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="0.01"} 110
weft_request_duration_seconds_bucket{direction="inbound",service="web",le="+Inf"} 110
"#;

    #[test]
    fn rates_and_quantiles_come_from_deltas() {
        let (a, b) = (parse(BEFORE, "web"), parse(AFTER, "web"));
        assert_eq!(a.requests, 10.0);
        assert_eq!(b.requests - a.requests, 100.0);
        assert_eq!(b.failures - a.failures, 2.0);
        // 50 of the 100 new observations are under 1ms: the median sits at 1ms.
        let p50 = quantile(&a, &b, 0.5).expect("p50");
        assert!((p50 - 0.001).abs() < 1e-9, "{p50}");
        let p99 = quantile(&a, &b, 0.99).expect("p99");
        assert!(p99 > 0.009 && p99 <= 0.01, "{p99}");
        assert_eq!(quantile(&b, &b, 0.5), None, "no new observations");
    }

    #[test]
    fn the_brokers_open_connections_are_read_with_their_tls() {
        let text = r#"
weft_tcp_service_open_connections{direction="inbound",service="rabbitmq",peer_identity="spiffe://cluster.local/ns/default/sa/orders",tls="true"} 2
weft_tcp_service_open_connections{direction="inbound",service="rabbitmq",peer_identity="",tls="false"} 1
weft_tcp_service_open_connections{direction="outbound",service="rabbitmq.default",peer_identity="x",tls="true"} 5
weft_tcp_service_received_bytes_total{direction="inbound",service="rabbitmq",peer_identity="",tls="false"} 2048
"#;
        let s = parse(text, "rabbitmq");
        assert_eq!((s.tcp_open, s.tcp_open_mtls), (3.0, 2.0));
        assert_eq!(s.tcp_received, 2048.0);
    }
}
