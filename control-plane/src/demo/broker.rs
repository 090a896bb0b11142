//! The demo's RabbitMQ broker (Debian's `rabbitmq-server`), run as two children of
//! the demo: its own epmd and the broker, with config, data and logs in the demo's
//! state directory, on ports of the demo's block. The system service is never used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

use super::Plan;

/// Debian's `/usr/sbin/rabbitmq-server` switches to the `rabbitmq` user and the
/// system's directories; the script beside the broker's files runs as we are.
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const EPMD_DIRS: [&str; 3] = ["/usr/bin", "/usr/local/bin", "/usr/lib/erlang/bin"];

/// The broker's start script and epmd, when RabbitMQ is installed.
pub fn installed() -> Option<(PathBuf, PathBuf)> {
    let script = PathBuf::from(SERVER_SCRIPT);
    let epmd = EPMD_DIRS
        .iter()
        .map(|d| Path::new(d).join("epmd"))
        .find(|p| p.exists())?;
    script.exists().then_some((script, epmd))
}

/// The epmd command, in the foreground so the demo owns and stops it.
pub fn epmd_command(epmd: &Path, plan: &Plan) -> Command {
    let mut cmd = Command::new(epmd);
    own_group(&mut cmd);
    cmd.args([
        "-port",
        &plan.epmd.port().to_string(),
        "-address",
        "127.0.0.1",
    ]);
    cmd
}

/// The broker's command, its files written under `dir`; it listens on `listen`.
pub fn server_command(
    script: &Path,
    plan: &Plan,
    listen: SocketAddr,
    dir: &Path,
) -> anyhow::Result<Command> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = format!(
        "listeners.tcp.default = {listen}\n\
         # Clients come through their sidecar, which connects from loopback anyway.\n\
         loopback_users = none\n\
         disk_free_limit.absolute = 10MB\n\
         log.console = true\n\
         log.file = false\n"
    );
    std::fs::write(dir.join("rabbitmq.conf"), config)?;
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
    let mut cmd = Command::new(script);
    own_group(&mut cmd);
    cmd.env("HOME", dir)
        .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
        .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbitmq.pid"))
        .env(
            "RABBITMQ_NODENAME",
            format!("weft-demo-{}@localhost", listen.port()),
        )
        .env("RABBITMQ_DIST_PORT", plan.broker_dist.port().to_string())
        .env("ERL_EPMD_PORT", plan.epmd.port().to_string());
    Ok(cmd)
}

/// Ctrl-C in a terminal signals the whole foreground process group, and epmd and
/// the broker die of SIGINT (exit 2 and 130) instead of stopping in turn after the
/// apps that use them: in a group of their own, only the demo stops them.
fn own_group(cmd: &mut Command) {
    cmd.process_group(0);
}

/// Waits until the broker answers AMQP's protocol header with a frame, i.e. it has
/// booted; `exited` says whether its process is gone.
pub async fn wait_ready(
    addr: SocketAddr,
    limit: Duration,
    mut exited: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
            let mut frame_type = [0u8; 1];
            stream.read_exact(&mut frame_type).await.ok()?;
            (frame_type[0] == 1).then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        if exited() {
            bail!("rabbitmq exited early; see rabbitmq.log");
        }
        if Instant::now() > deadline {
            bail!("rabbitmq did not answer AMQP at {addr} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
