//! `weft-control demo`: a whole mesh on one machine, with no cluster, no root and no
//! hand-written config. It starts the control plane on the embedded checkout mesh,
//! every example service behind its own weft-proxy, a steady stream of traffic, and
//! a live summary read from the proxies' /metrics, until Ctrl-C (or `--duration`).
//!
//! Ports come from one block above `--base-port`, so a demo never collides with a
//! mesh on the default ports: app = base+i, proxy inbound = base+100+i, outbound =
//! base+200+i, admin = base+300+i, fixed upstream listeners for payments =
//! base+400+i (web's for GraphQL, orders'), control
//! plane gRPC = base+900, control plane admin = base+990. With RabbitMQ installed
//! the broker is workload 6 (AMQP on base+6), inventory workload 5, each broker
//! client's upstream listener for it base+410+i, epmd base+950 and the broker's
//! distribution port base+951.

mod broker;
mod plan;
mod screen;
mod summary;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

pub use plan::{Plan, Workload};

/// The broker's log file name (`<state-dir>/rabbitmq.log`).
const BROKER_LOG: &str = plan::BROKER;

use crate::identity::proof::{LocalTokens, Workload as IdentityWorkload};

/// Options of `weft-control demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// First port of the block the demo uses.
    #[arg(long, default_value_t = 17000)]
    pub base_port: u16,
    /// Requests per second the load generator sends to `web`.
    #[arg(long, default_value_t = 50)]
    pub rps: u32,
    /// Stop by itself after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Seconds between two summaries.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Where configs and logs go (default: a new temporary directory).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Plaintext between the sidecars instead of mTLS (the default is mTLS, with a
    /// development CA in the state directory).
    #[arg(long)]
    pub plaintext: bool,
    /// Run without RabbitMQ even when it is installed (no inventory, no events
    /// over AMQP).
    #[arg(long)]
    pub no_broker: bool,
    /// Every sidecar exports its spans to this OTLP/gRPC collector
    /// (`http://host:4317`); the services pass the W3C trace context on.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
}

/// A child process with a name, its log file, and a clean stop.
struct Proc {
    name: String,
    child: Child,
    /// Ends by SIGTERM's default action (epmd), which is its clean stop.
    dies_by_signal: bool,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logs: &Path) -> anyhow::Result<Proc> {
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let err = log.try_clone()?;
        cmd.stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            dies_by_signal: false,
        })
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

/// Finds a sibling binary of this executable (cargo puts them all in one folder).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe.parent().context("executable has no parent folder")?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found; build every binary first: cargo build --release --workspace --bins",
            path.display()
        );
    }
    Ok(path)
}

async fn wait_ready(url: &str, proc: &mut Proc, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((200, _)) = summary::http_get(url).await {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("{} exited early ({status}); see its log", proc.name);
        }
        if Instant::now() > deadline {
            bail!("{} was not ready at {url} within {limit:?}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    // Installed before any child starts: a SIGTERM or Ctrl-C during start-up then
    // stops the children too, instead of killing the demo and orphaning them.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let broker = if opts.no_broker {
        None
    } else {
        let found = broker::installed();
        if found.is_none() {
            println!(
                "RabbitMQ is not installed (apt-get install rabbitmq-server): running without \
                 the broker, inventory and the events over AMQP."
            );
        }
        found
    };
    let mut plan = Plan::new(opts.base_port, !opts.plaintext, broker.is_some())?;
    plan.otlp.clone_from(&opts.otlp);
    plan.check_ports_free()?;
    let (state_dir, _tmp) = match &opts.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (dir.clone(), None)
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("weft-demo-").tempdir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let (control, proxy) = (binary("weft-control")?, binary("weft-proxy")?);
    for w in plan.workloads.iter().filter(|w| !w.broker) {
        binary(w.name)?;
    }
    binary("loadgen")?;

    let mesh_path = state_dir.join("mesh.yaml");
    std::fs::write(&mesh_path, plan.mesh_yaml())?;
    let mut procs: Vec<Proc> = Vec::new();
    let result = tokio::select! {
        result = start_and_watch(
            &opts, &plan, &state_dir, &control, &proxy, &mesh_path, broker.as_ref(), &mut procs,
        ) => result,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    };

    println!("\nstopping {} processes…", procs.len());
    // Reverse start order: traffic first, then apps, proxies, control plane last.
    for p in procs.iter().rev() {
        p.terminate();
    }
    let mut unclean = Vec::new();
    for p in procs.iter_mut().rev() {
        match p.wait(Duration::from_secs(12)).await {
            Some(s) if s.success() => {}
            Some(s)
                if p.dies_by_signal && {
                    use std::os::unix::process::ExitStatusExt as _;
                    s.signal() == Some(nix::sys::signal::Signal::SIGTERM as i32)
                } => {}
            other => unclean.push(format!("{} ({other:?})", p.name)),
        }
    }
    if unclean.is_empty() {
        println!("all stopped cleanly; logs were in {}", state_dir.display());
    } else {
        println!("not stopped cleanly: {}", unclean.join(", "));
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn start_and_watch(
    opts: &DemoOptions,
    plan: &Plan,
    state_dir: &Path,
    control: &Path,
    proxy: &Path,
    mesh_path: &Path,
    broker_bins: Option<&(PathBuf, PathBuf)>,
    procs: &mut Vec<Proc>,
) -> anyhow::Result<()> {
    // The broker first, so it is stopped last, after every client of it.
    if let (Some((script, epmd)), Some(w)) = (broker_bins, plan.broker()) {
        let mut epmd = Proc::spawn("epmd", broker::epmd_command(epmd, plan), state_dir)?;
        epmd.dies_by_signal = true;
        procs.push(epmd);
        let cmd = broker::server_command(script, plan, w.app, &state_dir.join("rabbitmq"))?;
        procs.push(Proc::spawn(BROKER_LOG, cmd, state_dir)?);
        let last = procs.len() - 1;
        let server = &mut procs[last];
        broker::wait_ready(w.app, Duration::from_secs(90), || {
            matches!(server.child.try_wait(), Ok(Some(_)))
        })
        .await?;
    }
    let control_state = state_dir.join("control");
    let mut cmd = Command::new(control);
    cmd.arg("serve")
        .arg("--mesh")
        .arg(mesh_path)
        .arg("--grpc")
        .arg(plan.control_grpc.to_string())
        .arg("--admin")
        .arg(plan.control_admin.to_string())
        .arg("--state-dir")
        .arg(&control_state)
        // The demo hands its proxies local tokens, whatever the environment says.
        .arg("--identity-proof")
        .arg("local")
        .env_remove("WEFT_CA_CERT")
        .env_remove("WEFT_CA_KEY")
        .env_remove("WEFT_CA_ROOT");
    if plan.mtls {
        cmd.arg("--grpc-tls");
    }
    procs.push(Proc::spawn("weft-control", cmd, state_dir)?);
    let last = procs.len() - 1;
    wait_ready(
        &format!("http://{}/ready", plan.control_admin),
        &mut procs[last],
        Duration::from_secs(15),
    )
    .await?;

    for w in &plan.workloads {
        let config = state_dir.join(format!("{}-proxy.yaml", w.name));
        // The control plane created the token secret when it started.
        let token = LocalTokens::in_state_dir(&control_state)?.token(&IdentityWorkload {
            namespace: "default".into(),
            service_account: w.name.to_string(),
        });
        std::fs::write(
            &config,
            plan.proxy_yaml(w, &token, &control_state.join("ca.pem")),
        )?;
        let mut cmd = Command::new(proxy);
        cmd.arg("run").arg("--config").arg(&config);
        procs.push(Proc::spawn(&format!("{}-proxy", w.name), cmd, state_dir)?);
        let last = procs.len() - 1;
        wait_ready(
            &format!("http://{}/ready", w.admin),
            &mut procs[last],
            Duration::from_secs(15),
        )
        .await?;
    }
    {
        let config = state_dir.join("gateway-proxy.yaml");
        let token = LocalTokens::in_state_dir(&control_state)?.token(&IdentityWorkload {
            namespace: "default".into(),
            service_account: "gateway".into(),
        });
        std::fs::write(
            &config,
            plan.gateway_yaml(&token, &control_state.join("ca.pem")),
        )?;
        let mut cmd = Command::new(proxy);
        cmd.arg("run").arg("--config").arg(&config);
        procs.push(Proc::spawn("gateway", cmd, state_dir)?);
        let last = procs.len() - 1;
        wait_ready(
            &format!("http://{}/ready", plan.gateway_admin),
            &mut procs[last],
            Duration::from_secs(15),
        )
        .await?;
    }
    for w in plan.workloads.iter().filter(|w| !w.broker) {
        let mut cmd = Command::new(binary(w.name)?);
        cmd.args(plan.app_args(w)).envs(plan.app_env(w));
        procs.push(Proc::spawn(w.name, cmd, state_dir)?);
    }
    for w in plan.workloads.iter().filter(|w| !w.broker) {
        let idx = procs
            .iter()
            .position(|p| p.name == w.name)
            .context("app just started")?;
        wait_ready(&w.health_url(), &mut procs[idx], Duration::from_secs(15)).await?;
    }

    println!(
        "Weft local mesh is up (state and logs: {})",
        state_dir.display()
    );
    println!(
        "  control plane   gRPC {}   metrics http://{}/metrics",
        plan.control_grpc, plan.control_admin
    );
    println!(
        "  live view       http://{}/   (data: /api/summary, /api/events); in a terminal: \
         weftctl top --admin {}, which is what this screen shows when it is a terminal",
        plan.control_admin, plan.control_admin
    );
    for w in &plan.workloads {
        println!(
            "  {:<14} app {}   proxy inbound {}   metrics http://{}/metrics",
            w.name, w.app, w.inbound, w.admin
        );
    }
    println!(
        "  traffic: loadgen → web's proxy at http://{} ({} rps); try: curl http://{}/profile/1",
        plan.web_inbound(),
        opts.rps,
        plan.web_inbound()
    );
    println!(
        "  gateway in front of web at http://{gw} (metrics http://{gw_admin}/metrics); try: \
         curl http://{gw}/api/orders?user=1 and curl http://{gw}/api/profile/1",
        gw = plan.gateway,
        gw_admin = plan.gateway_admin,
    );
    if plan.mtls {
        println!(
            "  mTLS between every pair of sidecars (SPIFFE IDs {}, development CA in {}; \
             web's inbound is permissive for the load generator), TLS to the control plane. \
             --plaintext turns both off.",
            plan::spiffe_id("<name>"),
            control_state.display()
        );
    }
    if let Some(w) = plan.broker() {
        println!(
            "  broker: RabbitMQ on {} behind its own sidecar (AMQP opaque over mTLS); orders \
             reserves stock with inventory by request-reply and publishes order.placed, users \
             publishes user.signed_up (POST /users), notifications turns both into \
             notifications: curl http://{}/notifications",
            w.app,
            plan.workloads
                .iter()
                .find(|w| w.name == "notifications")
                .map_or(w.app, |n| n.app)
        );
    }
    println!("Press Ctrl-C (or q in the terminal view) to stop.\n");

    let run_for = opts.duration.map(Duration::from_secs);
    let loadgen_secs = opts.duration.unwrap_or(3600).max(1);
    let mut cmd = Command::new(binary("loadgen")?);
    cmd.args([
        "--target".to_string(),
        format!("http://{}", plan.web_inbound()),
        "--rps".to_string(),
        opts.rps.to_string(),
        "--duration".to_string(),
        loadgen_secs.to_string(),
    ])
    .env_remove("http_proxy")
    .env_remove("HTTP_PROXY");
    procs.push(Proc::spawn("loadgen", cmd, state_dir)?);

    let every = Duration::from_secs(opts.interval.max(1));
    if weft_inject::top::on_terminal() {
        return screen::show(plan.control_admin, every, run_for).await;
    }
    summary::watch(plan, every, run_for).await
}
