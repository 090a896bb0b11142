use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_proxy::config::Config;

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "Weft's sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The proxy's YAML config (listeners, limits, and in file mode the mesh).
        #[arg(long, short, env = "WEFT_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Install the transparent-capture iptables rules in this network namespace
    /// (the pod's init container), or remove or print them.
    Init(weft_proxy::capture::init::InitArgs),
}

fn main() -> ExitCode {
    weft_proxy::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Init(args) => match weft_proxy::capture::init::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            run(config)
        }
    }
}

fn run(config: Config) -> ExitCode {
    // One worker runs on a current-thread runtime: no work-stealing overhead, which
    // is most of what a sidecar with one core to spare wants.
    let runtime = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match weft_proxy::proxy::start(config).await {
            Ok(proxy) => {
                tracing::info!(
                    outbound = ?proxy.outbound,
                    inbound = ?proxy.inbound,
                    admin = %proxy.admin,
                    upstreams = ?proxy.upstreams,
                    "weft-proxy ready"
                );
                proxy.run_until_shutdown().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
