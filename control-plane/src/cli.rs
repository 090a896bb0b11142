//! The `weft-control` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::server::{Server, ServerConfig};
use crate::source::file::FileSource;

#[derive(Debug, Parser)]
#[command(name = "weft-control", version, about = "Weft's control plane")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve discovery to the proxies from a mesh description.
    Serve(ServeArgs),
    /// Run a whole local mesh: this control plane on the embedded checkout example,
    /// every example service behind its own weft-proxy, traffic and a live summary.
    Demo(crate::demo::DemoOptions),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A mesh YAML file, or a directory whose *.yaml and *.yml files are merged.
    /// Watched: valid changes are served at once, invalid ones are rejected.
    #[arg(long, value_name = "PATH")]
    pub mesh: PathBuf,
    /// Address for the gRPC API (weft.v1.Discovery).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443")]
    pub grpc: SocketAddr,
    /// Address for /metrics, /live and /ready.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7990")]
    pub admin: SocketAddr,
}

/// Parses the command line, runs it and maps the outcome to the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-control: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Demo(opts) => runtime.block_on(crate::demo::run(opts)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("weft-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServerConfig {
        grpc: args.grpc,
        admin: args.admin,
    };
    let server = Server::bind(&config).await?;
    server
        .run(FileSource::new(args.mesh), shutdown_signal())
        .await
}

/// Resolves on SIGTERM or SIGINT. If the handlers cannot be installed the process
/// still runs, and the default signal action stops it.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot install signal handlers");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
