//! `weftctl`: Weft's operator CLI. `weftctl inject` adds the proxy to manifests;
//! `weftctl webhook` serves the same injection as a mutating admission webhook.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use weft_inject::config::{self, InjectConfig};
use weft_inject::{Injector, manifest, tls, webhook};

#[derive(Parser)]
#[command(name = "weftctl", version, about = "Operate a Weft mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the Weft proxy to Kubernetes manifests (Pods, Deployments, StatefulSets,
    /// DaemonSets, ReplicaSets, Jobs, CronJobs, Lists; multi-document YAML) and
    /// write them to stdout. Reads stdin when no file (or `-`) is given.
    Inject {
        files: Vec<PathBuf>,
        #[command(flatten)]
        inject: InjectArgs,
    },
    /// The mesh live: per-service traffic, success, latency and ejections from the
    /// control plane's admin port, redrawn in place (plain lines when stdout is not
    /// a terminal). In a cluster: `kubectl -n weft-system port-forward
    /// deploy/weft-control 7990` first.
    Top {
        /// The control plane's admin address.
        #[arg(long, env = "WEFT_CONTROL_ADMIN", default_value = "127.0.0.1:7990")]
        admin: SocketAddr,
        /// The window: 10s or 1m.
        #[arg(long, default_value = "10s", value_parser = ["10s", "1m"])]
        window: String,
        /// Sort by name, rps, success, p50 or p99.
        #[arg(long, default_value = "rps")]
        sort: weft_inject::top::summary::SortBy,
        /// Seconds between two refreshes.
        #[arg(long, default_value_t = 1)]
        interval: u64,
        /// Plain output only: stop after this many tables.
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Serve injection as a mutating admission webhook over HTTPS.
    Webhook {
        #[arg(long, env = "WEFT_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        #[arg(
            long,
            env = "WEFT_WEBHOOK_TLS_CERT",
            default_value = "/etc/weft/webhook/tls.crt"
        )]
        tls_cert: PathBuf,
        #[arg(
            long,
            env = "WEFT_WEBHOOK_TLS_KEY",
            default_value = "/etc/weft/webhook/tls.key"
        )]
        tls_key: PathBuf,
        /// Wait up to this many seconds for the certificate, key and trust-anchor
        /// files to appear before starting. On a first install the control plane
        /// creates their Secrets, and the kubelet fills the (optional) volumes a
        /// little after the injector started.
        #[arg(
            long,
            value_name = "SECONDS",
            env = "WEFT_WEBHOOK_WAIT_SECONDS",
            default_value_t = 0
        )]
        wait_for_files: u64,
        #[command(flatten)]
        inject: InjectArgs,
    },
}

/// The injector's settings, identical for both fronts so their output matches.
#[derive(Args)]
struct InjectArgs {
    /// Proxy image [default: weft/weft-proxy:<weftctl's version>]
    #[arg(long, env = "WEFT_PROXY_IMAGE")]
    proxy_image: Option<String>,
    /// Image of the init container (runs `weft-proxy init`)
    /// [default: weft/weft-proxy-init:<weftctl's version>]
    #[arg(long, env = "WEFT_INIT_IMAGE")]
    init_image: Option<String>,
    #[arg(long, env = "WEFT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    image_pull_policy: String,
    /// The control plane's gRPC address, as seen from pods
    #[arg(long, env = "WEFT_CONTROL_PLANE", default_value = config::DEFAULT_CONTROL_PLANE)]
    control_plane: String,
    /// PEM file of the roots that verify the control plane's TLS certificate (the
    /// mesh CA); injected proxies get its text as WEFT_TRUST_ANCHORS
    #[arg(long, value_name = "FILE", env = "WEFT_TRUST_ANCHORS_FILE")]
    trust_anchors: Option<PathBuf>,
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = config::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Audience of the projected ServiceAccount token the proxy proves itself with
    #[arg(long, env = "WEFT_TOKEN_AUDIENCE", default_value = config::DEFAULT_TOKEN_AUDIENCE)]
    token_audience: String,
    /// The proxy's log filter (WEFT_LOG in the sidecar)
    #[arg(long, default_value = "info")]
    proxy_log_level: String,
    #[arg(long)]
    proxy_cpu_request: Option<String>,
    #[arg(long)]
    proxy_cpu_limit: Option<String>,
    #[arg(long)]
    proxy_memory_request: Option<String>,
    #[arg(long)]
    proxy_memory_limit: Option<String>,
}

impl InjectArgs {
    fn config(self) -> anyhow::Result<InjectConfig> {
        let mut c = InjectConfig::default();
        if let Some(image) = self.proxy_image {
            c.proxy_image = image;
        }
        if let Some(image) = self.init_image {
            c.init_image = image;
        }
        c.image_pull_policy = self.image_pull_policy;
        c.control_plane = self.control_plane;
        c.trust_anchors = self
            .trust_anchors
            .map(|path| config::read_trust_anchors(&path))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--trust-anchors {e}"))?;
        c.trust_domain = self.trust_domain;
        c.token_audience = self.token_audience;
        c.log_level = self.proxy_log_level;
        let r = &mut c.proxy_resources;
        for (value, slot, unit, flag) in [
            (
                self.proxy_cpu_request,
                &mut r.cpu_request,
                weft_inject::annotations::Unit::Cpu,
                "--proxy-cpu-request",
            ),
            (
                self.proxy_cpu_limit,
                &mut r.cpu_limit,
                weft_inject::annotations::Unit::Cpu,
                "--proxy-cpu-limit",
            ),
            (
                self.proxy_memory_request,
                &mut r.memory_request,
                weft_inject::annotations::Unit::Bytes,
                "--proxy-memory-request",
            ),
            (
                self.proxy_memory_limit,
                &mut r.memory_limit,
                weft_inject::annotations::Unit::Bytes,
                "--proxy-memory-limit",
            ),
        ] {
            if let Some(v) = value {
                weft_inject::annotations::parse_quantity(&v, unit)
                    .map_err(|reason| anyhow::anyhow!("{flag} {v:?} {reason}"))?;
                *slot = Quantity(v);
            }
        }
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inject { files, inject } => run_inject(files, inject),
        Command::Top {
            admin,
            window,
            sort,
            interval,
            iterations,
        } => weft_inject::top::run(weft_inject::top::TopOptions {
            window,
            sort,
            interval: Duration::from_secs(interval.max(1)),
            iterations,
            ..weft_inject::top::TopOptions::new(admin)
        }),
        Command::Webhook {
            listen,
            tls_cert,
            tls_key,
            wait_for_files,
            inject,
        } => run_webhook(
            listen,
            tls_cert,
            tls_key,
            Duration::from_secs(wait_for_files),
            inject,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weftctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Said once per run: such proxies cannot verify a TLS control plane.
const NO_TRUST_ANCHORS: &str = "no --trust-anchors: injected proxies get no WEFT_TRUST_ANCHORS \
     and cannot verify the control plane";

fn run_inject(files: Vec<PathBuf>, args: InjectArgs) -> anyhow::Result<()> {
    let injector = Injector::new(args.config()?);
    if injector.config().trust_anchors.is_none() {
        eprintln!("weftctl: warning: {NO_TRUST_ANCHORS}");
    }
    let inputs = if files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        files
    };
    // Everything is read and injected before anything is written, so an error
    // never leaves half a manifest on stdout.
    let mut output = String::new();
    for path in &inputs {
        let (origin, text) = if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            ("<stdin>".to_string(), text)
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), text)
        };
        let (yaml, notes) = manifest::inject_manifests(&injector, &text, &origin)?;
        for note in notes {
            eprintln!("{note}");
        }
        if !yaml.is_empty() {
            if !output.is_empty() {
                output.push_str("---\n");
            }
            output.push_str(&yaml);
        }
    }
    std::io::stdout()
        .lock()
        .write_all(output.as_bytes())
        .context("writing stdout")?;
    Ok(())
}

fn run_webhook(
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    wait: Duration,
    args: InjectArgs,
) -> anyhow::Result<()> {
    let format = match std::env::var("WEFT_LOG_FORMAT") {
        Ok(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("WEFT_LOG_FORMAT: {e}"))?,
        Err(_) => weft_api::logs::LogFormat::Plain,
    };
    weft_api::logs::init(
        tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        format,
    );
    let mut files = vec![cert.clone(), key.clone()];
    files.extend(args.trust_anchors.clone());
    wait_for_files(&files, wait);
    let injector = Arc::new(Injector::new(args.config()?));
    if injector.config().trust_anchors.is_none() {
        tracing::warn!("{NO_TRUST_ANCHORS}");
    }
    let tls = tls::server_config(&cert, &key)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(%listen, "weft injector webhook serving");
        webhook::serve(listener, tls, injector, shutdown_signal()).await;
        tracing::info!("weft injector webhook stopped");
        Ok(())
    })
}

/// Returns once every file exists or `wait` has passed (what is still missing then
/// fails where it is read, with its name). Says what it waits for every 30 s.
fn wait_for_files(files: &[PathBuf], wait: Duration) {
    let started = Instant::now();
    let mut said: Option<Instant> = None;
    loop {
        let missing: Vec<_> = files.iter().filter(|f| !f.exists()).collect();
        if missing.is_empty() || started.elapsed() >= wait {
            return;
        }
        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            tracing::info!(
                ?missing,
                "waiting for the kubelet to deliver the injector's Secrets (weft-control \
                 creates them on a first install)"
            );
            said = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// SIGTERM (the kubelet) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
