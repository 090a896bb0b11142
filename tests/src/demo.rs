//! Runs `weft-control demo` (the local mesh as one command) and reads what it prints.
//!
//! The demo takes a block of ports above `--base-port` (see control-plane/src/demo):
//! app = base+i, proxy inbound = base+100+i, proxy admin = base+300+i (i: web=0,
//! orders=1, payments=2, notifications=3, users=4, and with RabbitMQ inventory=5,
//! rabbitmq=6), the gateway's listener base+500 (admin 501, outbound 502),
//! control-plane admin = base+990.
//!
//! [`Demo`] runs it as a child; [`TerminalDemo`] is its command for a terminal.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::bins;
use crate::client::{self, H1Client, Reply};
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

/// The control plane's admin port above the demo's base.
const CONTROL_ADMIN: u16 = 990;

/// What every demo run of the tests shares: a free block of ports, a state dir in
/// a temp dir of its own, and the command line of `weft-control demo` on them.
struct Setup {
    base: u16,
    dir: TempDir,
    /// `weft-control demo --base-port .. --state-dir .. <the test's args>`.
    argv: Vec<String>,
}

impl Setup {
    fn new(args: &[&str]) -> anyhow::Result<Setup> {
        let base = free_port_block();
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-demo-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mut argv = vec![
            bins::binary("weft-control")?.display().to_string(),
            "demo".to_string(),
            "--base-port".to_string(),
            base.to_string(),
            "--state-dir".to_string(),
            dir.path().join("state").display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        Ok(Setup { base, dir, argv })
    }
}

/// A running `weft-control demo`. It leads its own process group: dropped, it gets
/// SIGTERM and time to stop its children, then whatever is left is killed.
pub struct Demo {
    pub base: u16,
    process: Process,
    _dir: TempDir,
}

/// `weft-control demo` as a shell command for a terminal (a [`crate::tmux`]
/// session), on a port block and state dir of its own, which it keeps while
/// this lives.
pub struct TerminalDemo {
    pub base: u16,
    pub command: String,
    _dir: TempDir,
}

impl TerminalDemo {
    pub fn new(args: &[&str]) -> anyhow::Result<TerminalDemo> {
        let setup = Setup::new(args)?;
        // The demo's own children talk HTTP on loopback: no proxy in between.
        let command = format!("env -u http_proxy -u HTTP_PROXY {}", setup.argv.join(" "));
        Ok(TerminalDemo {
            base: setup.base,
            command,
            _dir: setup.dir,
        })
    }

    pub fn control_admin(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.base + CONTROL_ADMIN))
    }
}

impl Demo {
    /// Starts `weft-control demo --base-port <free block> <args>`.
    pub fn start(args: &[&str]) -> anyhow::Result<Demo> {
        let setup = Setup::new(args)?;
        let mut cmd = Command::new(&setup.argv[0]);
        cmd.args(&setup.argv[1..])
            .env("NO_COLOR", "1")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY");
        let process = Process::spawn_group("weft-control-demo", cmd, setup.dir.path())?;
        Ok(Demo {
            base: setup.base,
            process,
            _dir: setup.dir,
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
        self.port(CONTROL_ADMIN)
    }

    /// The gateway in front of web (plain HTTP).
    pub fn gateway(&self) -> SocketAddr {
        self.port(500)
    }

    /// A connection to the gateway that names it in Host, as a browser would.
    pub async fn gateway_client(&self) -> anyhow::Result<GatewayClient> {
        let gateway = self.gateway();
        Ok(GatewayClient {
            client: H1Client::connect(gateway).await?,
            host: format!("127.0.0.1:{}", gateway.port()),
        })
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

/// One connection to the demo's gateway.
pub struct GatewayClient {
    client: H1Client,
    host: String,
}

impl GatewayClient {
    /// `GET path` with the gateway's own address as Host.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        let host = self.host.clone();
        self.get_as(path, &host).await
    }

    /// `GET path` with Host `host`.
    pub async fn get_as(&mut self, path: &str, host: &str) -> anyhow::Result<Reply> {
        self.client
            .send(client::request("GET", path, &[("host", host)], ""))
            .await
    }

    /// `GET path` `times` times; each must be answered 200.
    pub async fn get_ok(&mut self, path: &str, times: usize) -> anyhow::Result<()> {
        for _ in 0..times {
            let reply = self.get(path).await?;
            anyhow::ensure!(reply.status == 200, "{path}: {}", reply.text());
        }
        Ok(())
    }
}

/// `weftctl top --admin <admin> <args>` with its output not a terminal (plain
/// lines; give it `--iterations`): what it printed, once it ended well.
pub async fn weftctl_top(
    admin: SocketAddr,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<String> {
    let admin = admin.to_string();
    let out = tokio::process::Command::new(bins::binary("weftctl")?)
        .args(["top", "--admin", &admin])
        .args(args)
        .output();
    let out = tokio::time::timeout(limit, out)
        .await
        .map_err(|_| anyhow::anyhow!("weftctl top {args:?} did not end within {limit:?}"))??;
    anyhow::ensure!(out.status.success(), "weftctl top {args:?}: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
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

/// One opaque TCP service of a live view summary's `window`.
pub fn live_tcp_service<'a>(
    s: &'a serde_json::Value,
    window: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    s["windows"][window]["tcp_services"]
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
