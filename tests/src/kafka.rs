//! A Kafka broker of the test's own, in KRaft mode (broker and controller in one
//! process, no ZooKeeper): the jars come from Maven Central through
//! `tests/kafka/install.sh` (cached outside the clone), run on the machine's Java,
//! with config, data and logs in a temp dir. The broker advertises the address its
//! clients are told to use, which in a mesh is an address the client's sidecar
//! captures or listens on, never the broker's own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::ports::free_port;
use crate::process::Process;
use crate::rabbitmq::Launcher;
use crate::tools;

/// The JVM starts and formats in seconds on an idle machine; CI shares two cores.
pub const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// A fixed cluster id (Kafka's base64 form of 16 bytes): each broker has its own
/// data dir, so no two tests ever share a cluster.
const CLUSTER_ID: &str = "d2VmdC1rYWZrYS10ZXN0MQ";

/// The broker's jars (the folder for `java -cp 'DIR/*'`) and `java`, fetched or
/// found; `None` after saying why `test` is skipped (a failure under `CI=true`).
pub fn require(test: &str) -> Option<Jars> {
    let java = tools::require("java", "openjdk-17-jre-headless", test)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kafka/install.sh");
    let why = match Command::new("bash").arg(&script).output() {
        Ok(out) if out.status.success() => {
            let libs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            return Some(Jars { java, libs });
        }
        Ok(out) => format!(
            "{} failed (it fetches with Maven, apt-get install -y maven, from Maven Central): {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    assert!(
        !tools::in_ci(),
        "{test}: {why}; CI=true, so this is a failure, not a skip"
    );
    eprintln!("\n******** SKIPPED {test}: {why} ********\n");
    None
}

/// What runs a broker: the JVM and the folder of Kafka's jars.
#[derive(Debug, Clone)]
pub struct Jars {
    pub java: PathBuf,
    pub libs: PathBuf,
}

/// Where the broker listens and what it tells clients.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// The address the broker binds (a wildcard inside a namespace, say).
    pub listen: SocketAddr,
    /// Where the test reaches it directly to see it is up.
    pub probe: SocketAddr,
    /// The address the broker advertises in its metadata: every client connects
    /// there after bootstrapping.
    pub advertised: SocketAddr,
}

pub struct Kafka {
    pub addrs: Addresses,
    server: Process,
    /// Removed after the broker stopped (fields drop in order).
    _dir: TempDir,
}

impl Kafka {
    /// Formats a data dir and starts the broker with `addrs`, each program started
    /// by `launch` (inside a pod, say), and waits until it answers the Kafka
    /// protocol at `addrs.probe`, reached from network namespace `reach_from` (else
    /// from ours).
    pub async fn start(
        jars: &Jars,
        addrs: Addresses,
        launch: Launcher,
        reach_from: Option<&str>,
    ) -> anyhow::Result<Kafka> {
        let dir = tempfile::Builder::new()
            .prefix("weft-kafka-")
            .tempdir()
            .context("temp dir")?;
        let d = dir.path();
        // The controller's port is only ever used by this process, on its loopback.
        let controller = free_port();
        let config = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             controller.listener.names=CONTROLLER\n\
             listeners=PLAINTEXT://{listen},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://{advertised}\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            listen = addrs.listen,
            advertised = addrs.advertised,
            data = d.join("data").display(),
        );
        std::fs::write(d.join("server.properties"), config)?;
        std::fs::write(
            d.join("log4j2.properties"),
            "rootLogger.level=INFO\n\
             rootLogger.appenderRef.stdout.ref=STDOUT\n\
             appender.console.type=Console\n\
             appender.console.name=STDOUT\n\
             appender.console.layout.type=PatternLayout\n\
             appender.console.layout.pattern=[%d] %p %m (%c)%n\n",
        )?;
        let java = |main: &str| {
            let mut cmd = launch(&jars.java);
            cmd.arg("-Xmx512m")
                .arg("-XX:+UseSerialGC")
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    d.join("log4j2.properties").display()
                ))
                .arg("-cp")
                .arg(jars.libs.join("*"))
                .arg(main)
                .current_dir(d);
            cmd
        };
        let mut format = java("kafka.tools.StorageTool");
        format.args(["format", "--cluster-id", CLUSTER_ID, "--config"]);
        format.arg(d.join("server.properties"));
        let formatted = format.output().context("run kafka's StorageTool")?;
        anyhow::ensure!(
            formatted.status.success(),
            "formatting the data dir failed: {}{}",
            String::from_utf8_lossy(&formatted.stdout),
            String::from_utf8_lossy(&formatted.stderr)
        );
        let mut server = java("kafka.Kafka");
        server.arg(d.join("server.properties"));
        let mut server = Process::spawn_group("kafka", server, d)?;
        let deadline = tokio::time::Instant::now() + BOOT_LIMIT;
        while !speaks_kafka(addrs.probe, reach_from).await {
            if let Some(status) = server.try_exit()? {
                anyhow::bail!("kafka exited ({status}):\n{}", server.output());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "kafka did not answer within {BOOT_LIMIT:?}:\n{}",
                    server.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Kafka {
            addrs,
            server,
            _dir: dir,
        })
    }

    /// A broker on a free loopback port that advertises `advertised`.
    pub async fn on_loopback(jars: &Jars, advertised: SocketAddr) -> anyhow::Result<Kafka> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let addrs = Addresses {
            listen,
            probe: listen,
            advertised,
        };
        Kafka::start(jars, addrs, Box::new(|p: &Path| Command::new(p)), None).await
    }

    /// What the broker logged so far.
    pub fn output(&self) -> String {
        self.server.output()
    }
}

/// Whether a Kafka broker at `addr` answers an ApiVersions request (v0) without
/// error: its listener only accepts once the broker has started.
async fn speaks_kafka(addr: SocketAddr, from: Option<&str>) -> bool {
    const CORRELATION: i32 = 0x7765_6674;
    let attempt = async {
        let mut stream = match from {
            Some(netns) => crate::netns::connect(netns, addr).await.ok()?,
            None => tokio::net::TcpStream::connect(addr).await.ok()?,
        };
        let client = b"weft-tests";
        let mut request = Vec::new();
        request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
        request.extend_from_slice(&0i16.to_be_bytes()); // version 0
        request.extend_from_slice(&CORRELATION.to_be_bytes());
        request.extend_from_slice(&(client.len() as i16).to_be_bytes());
        request.extend_from_slice(client);
        let mut frame = (request.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&request);
        stream.write_all(&frame).await.ok()?;
        let mut head = [0u8; 10];
        stream.read_exact(&mut head).await.ok()?;
        let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let error = i16::from_be_bytes([head[8], head[9]]);
        (correlation == CORRELATION && error == 0).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}

/// The ids of the processes holding an established TCP connection to `addr`, one
/// per connection (`ss` of iproute2): who really talks to the broker, whatever
/// address its clients were given.
pub fn clients_of(addr: SocketAddr) -> anyhow::Result<Vec<u32>> {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established", "dst"])
        .arg(addr.to_string())
        .output()
        .context("run ss (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|line| {
            line.split("pid=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|pid| pid.parse().ok())
                .with_context(|| format!("no process in ss's line {line:?}"))
        })
        .collect()
}
