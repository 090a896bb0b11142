//! A real Prometheus server scraping Weft's admin endpoints, queried back through
//! its HTTP API, and `promtool check metrics` on an exposition.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::client::{self, H1Client};
use crate::ports::free_addr;
use crate::process::Process;

/// From exec to `/-/ready`: Prometheus replays (an empty) WAL and loads its config.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// One scrape job: a name and its targets.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub targets: Vec<SocketAddr>,
}

/// One series of an instant-query result: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running `prometheus` with its config and TSDB in a temp dir. Stopped on drop.
pub struct Prometheus {
    addr: SocketAddr,
    process: Process,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `jobs` every `scrape_interval` and waits until ready.
    pub async fn start(
        binary: &Path,
        jobs: &[Job],
        scrape_interval: Duration,
    ) -> anyhow::Result<Prometheus> {
        Self::start_with_config(binary, &config_yaml(jobs, scrape_interval)).await
    }

    /// Starts `binary` with `config` (a whole prometheus.yml) and waits until ready.
    pub async fn start_with_config(binary: &Path, config: &str) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-prometheus-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let config = config_file;
        let addr = free_addr();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let mut process = Process::spawn("prometheus", cmd, dir.path())?;
        let deadline = tokio::time::Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = process.try_exit()? {
                bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    process.output()
                );
            }
            if matches!(http_get(addr, "/-/ready").await, Ok((200, _))) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "prometheus not ready within {READY_LIMIT:?}:\n{}",
                    process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Prometheus {
            addr,
            process,
            _dir: dir,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Runs an instant query (`/api/v1/query`) and returns the vector it yields (a
    /// scalar result comes back as one series without labels).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Series>> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http_get(self.addr, &path).await?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("query {promql:?}: not JSON ({status}): {body}"))?;
        if json["status"] != "success" {
            bail!("query {promql:?} failed ({status}): {body}");
        }
        let data = &json["data"];
        let value_of = |v: &serde_json::Value| -> anyhow::Result<f64> {
            let text = v[1]
                .as_str()
                .with_context(|| format!("query {promql:?}: no value in {v}"))?;
            match text {
                "+Inf" => Ok(f64::INFINITY),
                "-Inf" => Ok(f64::NEG_INFINITY),
                t => t
                    .parse()
                    .with_context(|| format!("query {promql:?}: bad value {t:?}")),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .context("vector result is not an array")?
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().into()))
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Series {
                        labels,
                        value: value_of(&s["value"])?,
                    })
                })
                .collect(),
            Some("scalar") => Ok(vec![Series {
                labels: BTreeMap::new(),
                value: value_of(&data["result"])?,
            }]),
            other => bail!("query {promql:?}: unexpected result type {other:?}: {body}"),
        }
    }

    /// Repeats `promql` until `ok` accepts its result, and returns that result; fails
    /// after `limit` showing the last result (and Prometheus' target health).
    pub async fn wait_query(
        &self,
        promql: &str,
        ok: impl Fn(&[Series]) -> bool,
        limit: Duration,
    ) -> Vec<Series> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let last = self.query(promql).await;
            if let Ok(series) = &last
                && ok(series)
            {
                return series.clone();
            }
            if tokio::time::Instant::now() >= deadline {
                let targets = http_get(self.addr, "/api/v1/targets")
                    .await
                    .map(|(_, body)| body)
                    .unwrap_or_else(|e| format!("{e:#}"));
                panic!(
                    "query {promql:?}: no acceptable result within {limit:?}; last: {last:?}\n\
                     targets: {targets}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn config_yaml(jobs: &[Job], every: Duration) -> String {
    let secs = every.as_secs_f64();
    let mut out = format!(
        "global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n  evaluation_interval: {ms}ms\nscrape_configs:\n",
        ms = (secs * 1000.0).round() as u64
    );
    for job in jobs {
        let targets: Vec<String> = job.targets.iter().map(|t| format!("\"{t}\"")).collect();
        out.push_str(&format!(
            "  - job_name: \"{}\"\n    static_configs:\n      - targets: [{}]\n",
            job.name,
            targets.join(", ")
        ));
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET over a fresh HTTP/1.1 connection (Prometheus may answer chunked, which the
/// admin client does not read): (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut c = H1Client::connect(addr).await?;
    let reply = c
        .send(client::request(
            "GET",
            path,
            &[("host", &addr.to_string())],
            "",
        ))
        .await?;
    Ok((reply.status.as_u16(), reply.text()))
}

/// `promtool check metrics` on an exposition: `Ok(())` when it finds no problem,
/// else an error with what it reported.
pub fn promtool_check(promtool: &Path, exposition: &str) -> anyhow::Result<()> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", promtool.display()))?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    // A small exposition fits the pipe; promtool reads it all before answering.
    let text = exposition.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().context("waiting for promtool")?;
    let _ = writer.join();
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            percent_encode("sum(rate(x{a=\"b\"}[5s])) > 0"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B5s%5D%29%29%20%3E%200"
        );
    }

    #[test]
    fn config_lists_every_job_and_target() {
        let yaml = config_yaml(
            &[Job {
                name: "weft-proxies".into(),
                targets: vec!["127.0.0.1:1".parse().expect("addr")],
            }],
            Duration::from_secs(1),
        );
        assert!(yaml.contains("scrape_interval: 1000ms"), "{yaml}");
        assert!(yaml.contains("targets: [\"127.0.0.1:1\"]"), "{yaml}");
    }
}
