//! A RabbitMQ broker of the test's own (Debian package `rabbitmq-server`): its node
//! name, ports, config, data and logs in a temp dir, its own epmd on its own port,
//! never the system service. Restartable on the same port and data, so durable
//! queues and persistent messages survive as they would in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::ports::free_port;
use crate::process::Process;
use crate::tools;

/// RabbitMQ boots in seconds on an idle machine; CI shares two cores.
pub const BOOT_LIMIT: Duration = Duration::from_secs(90);

/// Debian's `/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user and the
/// system's directories; the script beside the broker's own files runs as we are.
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Builds the command for a program, e.g. to run it inside a network namespace.
pub type Launcher = Box<dyn Fn(&Path) -> Command + Send + Sync>;

pub struct RabbitMq {
    /// Where AMQP clients connect (the address the broker listens on).
    pub addr: SocketAddr,
    /// The address the broker binds: `addr`, or a wildcard inside a namespace.
    listen: SocketAddr,
    /// Kept for restarts; dropped (and removed) with the broker.
    dir: TempDir,
    server: Option<Process>,
    /// Stopped after the broker (fields drop in order).
    _epmd: Process,
    epmd_port: u16,
    dist_port: u16,
    script: PathBuf,
    launch: Launcher,
    /// The network namespace the broker is reached from (its node's), if not ours.
    reach_from: Option<String>,
    restarts: usize,
}

/// The script that starts a broker, or `None` after saying why `test` is skipped
/// (a failure under `CI=true`).
pub fn require(test: &str) -> Option<PathBuf> {
    tools::require("rabbitmq-server", "rabbitmq-server", test)?;
    let script = PathBuf::from(SERVER_SCRIPT);
    if !script.exists() {
        let why = format!("{SERVER_SCRIPT} is missing although rabbitmq-server is installed");
        assert!(!tools::in_ci(), "{test}: {why}");
        eprintln!("\n******** SKIPPED {test}: {why} ********\n");
        return None;
    }
    Some(script)
}

impl RabbitMq {
    /// A broker on a free loopback port, or `None` when the package is missing
    /// (the test is then skipped, or fails under `CI=true`).
    pub async fn start(test: &str) -> Option<RabbitMq> {
        let script = require(test)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let broker = Self::start_with(script, addr, addr, Box::new(|p| Command::new(p)), None)
            .await
            .expect("start rabbitmq");
        Some(broker)
    }

    /// A broker listening on `listen`, reached at `addr` (from the network
    /// namespace `reach_from`, else from ours), each program started by `launch`
    /// (inside a pod, say). Ports for epmd and distribution are picked free on this
    /// machine's loopback.
    pub async fn start_with(
        script: PathBuf,
        addr: SocketAddr,
        listen: SocketAddr,
        launch: Launcher,
        reach_from: Option<String>,
    ) -> anyhow::Result<RabbitMq> {
        let dir = tempfile::Builder::new()
            .prefix("weft-rabbitmq-")
            .tempdir()
            .context("temp dir")?;
        let config = format!(
            "listeners.tcp.default = {listen}\n\
             # Clients come through their sidecar, which connects from loopback anyway.\n\
             loopback_users = none\n\
             # A test box's disk may be fuller than RabbitMQ's default alarm allows.\n\
             disk_free_limit.absolute = 10MB\n\
             log.console = true\n\
             log.console.level = info\n\
             log.file = false\n"
        );
        std::fs::write(dir.path().join("rabbitmq.conf"), config)?;
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "")?;
        let epmd_port = free_port();
        let dist_port = free_port();
        let epmd_bin = tools::find("epmd").context("epmd (erlang-base) is not installed")?;
        let mut cmd = launch(&epmd_bin);
        cmd.args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"]);
        let epmd = Process::spawn("epmd", cmd, dir.path())?;
        let mut broker = RabbitMq {
            addr,
            listen,
            dir,
            server: None,
            _epmd: epmd,
            epmd_port,
            dist_port,
            script,
            launch,
            reach_from,
            restarts: 0,
        };
        broker.boot().await?;
        Ok(broker)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let mut cmd = (self.launch)(&self.script);
        cmd.env("HOME", d)
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .env(
                "RABBITMQ_NODENAME",
                format!("weft-{}@localhost", self.listen.port()),
            )
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string());
        let name = format!("rabbitmq-{}", self.restarts);
        let mut server = Process::spawn_group(&name, cmd, d)?;
        let deadline = tokio::time::Instant::now() + BOOT_LIMIT;
        while !speaks_amqp(self.addr, self.reach_from.as_deref()).await {
            if let Some(status) = server.try_exit()? {
                anyhow::bail!("rabbitmq exited ({status}):\n{}", server.output());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "rabbitmq did not answer AMQP within {BOOT_LIMIT:?}:\n{}",
                    server.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.server = Some(server);
        Ok(())
    }

    /// `amqp://guest:guest@<addr>/%2f` for clients that connect to `addr`.
    pub fn url_at(addr: SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/%2f")
    }

    /// Stops the broker cleanly (it syncs its queues to disk first).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut server) = self.server.take() {
            let status = server.stop().await?;
            anyhow::ensure!(status.success(), "rabbitmq stopped with {status}");
        }
        Ok(())
    }

    /// Starts the broker again on the same port and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.server.is_none(), "the broker is running");
        self.restarts += 1;
        self.boot().await
    }

    /// What the broker logged so far (the current run).
    pub fn output(&self) -> String {
        self.server
            .as_ref()
            .map(Process::output)
            .unwrap_or_default()
    }
}

/// Whether the broker at `addr` answers an AMQP 0-9-1 protocol header with a
/// frame (Connection.Start), i.e. it has finished booting.
async fn speaks_amqp(addr: SocketAddr, from: Option<&str>) -> bool {
    let attempt = async {
        let mut stream = match from {
            Some(netns) => crate::netns::connect(netns, addr).await.ok()?,
            None => tokio::net::TcpStream::connect(addr).await.ok()?,
        };
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let mut frame_type = [0u8; 1];
        stream.read_exact(&mut frame_type).await.ok()?;
        (frame_type[0] == 1).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}
