//! Runs `weft-control demo` (the local mesh as one command) and reads what it prints.
//!
//! The demo takes a block of ports above `--base-port` (see control-plane/src/demo):
//! app = base+i, proxy inbound = base+100+i, proxy admin = base+300+i (i: web=0,
//! orders=1, payments=2, notifications=3, users=4, and with RabbitMQ inventory=5,
//! rabbitmq=6), the gateway's listener base+500 (admin 501, outbound 502),
//! control-plane admin = base+990.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::bins;
use crate::process::Process;

/// The demo's HTTP services in port order.
pub const SERVICES: [&str; 5] = ["web", "orders", "payments", "notifications", "users"];

/// Proxies in a demo run with `--no-broker`: the services' sidecars and the
/// gateway.
pub const PROXIES_WITHOUT_BROKER: usize = SERVICES.len() + 1;

/// Every workload in port order, with the broker's when RabbitMQ is installed.
pub const WORKLOADS: [&str; 7] = [
    "web",
    "orders",
    "payments",
    "notifications",
    "users",
    "inventory",
    "rabbitmq",
];

/// Every port offset the demo binds above its base (with a broker: its clients'
/// upstream listeners at 410+i, epmd and the broker's distribution port; the
/// gateway at 500-502).
const OFFSETS: [u16; 43] = [
    0, 1, 2, 3, 4, 5, 6, 100, 101, 102, 103, 104, 105, 106, 200, 201, 202, 203, 204, 205, 206, 300,
    301, 302, 303, 304, 305, 306, 400, 401, 411, 413, 414, 415, 500, 501, 502, 900, 950, 951, 990,
    991, 992,
];

/// Blocks sit above Linux's ephemeral range (32768-60999), so no outgoing
/// connection can take one of their ports while the demo starts.
const FIRST_BASE: u16 = 61_000;
const LAST_BASE: u16 = 64_500;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A base port whose whole block is free now and shares no port with a block this
/// process handed out before.
pub fn free_port_block() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(7919);
    let span = u32::from((LAST_BASE - FIRST_BASE) / 10);
    for attempt in 0..span {
        let k = (seed.wrapping_add(attempt.wrapping_mul(37))) % span;
        let base = FIRST_BASE + u16::try_from(k * 10).unwrap_or(0);
        let ports: Vec<u16> = OFFSETS.iter().map(|o| base + o).collect();
        let taken = ports.iter().any(|p| handed.contains(p));
        if !taken
            && ports
                .iter()
                .all(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)).is_ok())
        {
            handed.extend(ports);
            return base;
        }
    }
    panic!("no free block of demo ports between {FIRST_BASE} and {LAST_BASE}");
}

/// A running `weft-control demo`. It leads its own process group: dropped, it gets
/// SIGTERM and time to stop its children, then whatever is left is killed.
pub struct Demo {
    pub base: u16,
    process: Process,
    _dir: TempDir,
}

impl Demo {
    /// Starts `weft-control demo --base-port <free block> <args>`.
    pub fn start(args: &[&str]) -> anyhow::Result<Demo> {
        let base = free_port_block();
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-demo-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mut cmd = Command::new(bins::binary("weft-control")?);
        cmd.arg("demo")
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY");
        let process = Process::spawn_group("weft-control-demo", cmd, dir.path())?;
        Ok(Demo {
            base,
            process,
            _dir: dir,
        })
    }

    fn port(&self, offset: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.base + offset))
    }

    fn index(service: &str) -> u16 {
        let i = WORKLOADS
            .iter()
            .position(|s| *s == service)
            .unwrap_or_else(|| panic!("the demo has no service {service}"));
        u16::try_from(i).unwrap_or(0)
    }

    /// The admin (metrics) address of `service`'s proxy.
    pub fn proxy_admin(&self, service: &str) -> SocketAddr {
        self.port(300 + Self::index(service))
    }

    /// Where `service`'s app listens (the broker's AMQP port for `rabbitmq`).
    pub fn app(&self, service: &str) -> SocketAddr {
        self.port(Self::index(service))
    }

    /// `service`'s proxy inbound listener (web's is the mesh's edge).
    pub fn inbound(&self, service: &str) -> SocketAddr {
        self.port(100 + Self::index(service))
    }

    pub fn control_admin(&self) -> SocketAddr {
        self.port(990)
    }

    /// The gateway in front of web (plain HTTP).
    pub fn gateway(&self) -> SocketAddr {
        self.port(500)
    }

    pub fn output(&self) -> String {
        self.process.output()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Kills (SIGKILL) the demo's child process named `name` (an app such as
    /// `users`, or `users-proxy`'s binary `weft-proxy` is not told apart: use app
    /// names), found among the processes of the demo's group. The demo keeps
    /// running, as it does when an app crashes.
    pub fn kill_child(&self, name: &str) -> anyhow::Result<()> {
        let group = i32::try_from(self.process.pid())?;
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let comm = head.split_once(" (").map_or("", |(_, c)| c);
            let pgrp = rest
                .split_whitespace()
                .nth(2)
                .and_then(|g| g.parse::<i32>().ok());
            if comm == name && pgrp == Some(group) {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )?;
                return Ok(());
            }
        }
        anyhow::bail!("no process {name} in the demo's group {group}")
    }

    /// The control plane's live view summary (`/api/summary`).
    pub async fn live_summary(&self) -> anyhow::Result<serde_json::Value> {
        let reply = crate::admin::get(self.control_admin(), "/api/summary").await?;
        anyhow::ensure!(reply.status == 200, "/api/summary: {}", reply.body);
        anyhow::ensure!(
            reply.header("content-type") == Some("application/json"),
            "/api/summary is not JSON: {:?}",
            reply.header("content-type")
        );
        Ok(serde_json::from_str(&reply.body)?)
    }

    /// Waits until every demo service is in the live view's short window as its
    /// own proxy saw it (which alone counts open connections), not only through its
    /// callers, and returns that summary.
    pub async fn wait_live(&self, limit: Duration) -> serde_json::Value {
        crate::eventually(limit, "every demo service in the live view", || async {
            let s = self.live_summary().await.ok()?;
            SERVICES
                .iter()
                .all(|name| {
                    live_service(&s, "10s", &format!("{name}.default")).is_some_and(|v| {
                        v["requests"].as_u64() > Some(0) && v["open_connections"].is_u64()
                    })
                })
                .then_some(s)
        })
        .await
    }

    /// Waits until the demo prints that the mesh is up.
    pub async fn wait_up(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.output().contains("Weft local mesh is up") {
                return Ok(());
            }
            if let Some(status) = self.process.try_exit()? {
                anyhow::bail!("the demo exited ({status}) before it was up");
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the demo was not up within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One service of a live view summary's `window` (`10s` or `1m`).
pub fn live_service<'a>(
    s: &'a serde_json::Value,
    window: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    s["windows"][window]["services"]
        .as_array()?
        .iter()
        .find(|v| v["service"] == name)
}

/// One row of the demo's live summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub service: String,
    pub rps: f64,
    /// As printed, e.g. "100.00%" (or "-" when the service saw no request).
    pub success: String,
}

/// The rows of the last complete summary table in the demo's output.
pub fn last_summary(output: &str) -> Option<Vec<SummaryRow>> {
    let lines: Vec<&str> = output.lines().collect();
    let header = lines.iter().rposition(|l| {
        l.split_whitespace()
            .eq(["service", "rps", "success", "p50", "p99"])
    })?;
    let rows: Vec<SummaryRow> = lines[header + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let [service, rps, success, _p50, _p99] = cols[..] else {
                return None;
            };
            Some(SummaryRow {
                service: service.to_string(),
                rps: rps.parse().ok()?,
                success: success.to_string(),
            })
        })
        .collect();
    // Five rows, or seven with the broker and inventory.
    [SERVICES.len(), WORKLOADS.len()]
        .contains(&rows.len())
        .then_some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_summary_table() {
        let out = "weft demo —    2s — inbound traffic per service (Ctrl-C to stop)\n\
            service             rps   success        p50        p99\n\
            web                 0.0         -          -          -\n\
            \n\
            weft demo —    4s — inbound traffic per service (Ctrl-C to stop)\n\
            service             rps   success        p50        p99\n\
            web                20.1   100.00%     2.10ms     9.90ms\n\
            orders             20.0   100.00%     1.00ms     5.00ms\n\
            payments           20.0   100.00%     0.50ms     1.00ms\n\
            notifications      20.0   100.00%     0.50ms     1.00ms\n\
            users              20.0    99.50%     0.50ms     1.00ms\n\
            \n\
            stopping 11 processes…\n";
        let rows = last_summary(out).expect("a complete table");
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].service, "web");
        assert_eq!(rows[0].rps, 20.1);
        assert_eq!(rows[4].success, "99.50%");
        assert_eq!(last_summary("nothing"), None);
    }

    #[test]
    fn port_blocks_do_not_overlap() {
        let (a, b) = (free_port_block(), free_port_block());
        let ports = |base: u16| OFFSETS.map(|o| base + o);
        assert!(ports(a).iter().all(|p| !ports(b).contains(p)), "{a} {b}");
    }
}
