use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::{ParseError, Targets};
use weft_proxy::config::Config;

// mimalloc rather than the C library's allocator: tokio allocates every task (two per
// proxied HTTP/2 request) 128-byte aligned, glibc's aligned path is slow, and the
// shipped static binary would otherwise get musl's allocator, slower still.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weft-proxy", version, about = "Weft's sidecar proxy")]
struct Cli {
    /// Log lines as `plain` text (coloured only on a terminal) or `json`, one object
    /// per line.
    #[arg(long, global = true, env = "WEFT_LOG_FORMAT", default_value_t)]
    log_format: weft_api::logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. Without a config file, the config comes from WEFT_*
    /// environment variables, as the injector sets them in a pod (see the
    /// proxy's env_config module); a file, when given, is the whole config.
    Run {
        /// The proxy's YAML config (listeners, limits, and in file mode the mesh).
        #[arg(long, short, env = "WEFT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file (or, without one, the WEFT_* environment) and exit.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Install the transparent-capture iptables rules in this network namespace
    /// (the pod's init container), or remove or print them.
    Init(weft_proxy::capture::init::InitArgs),
}

fn main() -> ExitCode {
    weft_proxy::install_crypto_provider();
    let cli = Cli::parse();
    let (filter, bad_filter) = log_filter();
    weft_api::logs::init(filter, cli.log_format);
    if let Some((name, e)) = bad_filter {
        tracing::warn!(error = %e, "{name} is not a valid log filter; logging at info");
    }
    match cli.command {
        Command::Init(args) => match weft_proxy::capture::init::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match config
            .as_deref()
            .map_or_else(Config::from_env, Config::load)
        {
            Ok(_) => {
                let origin = config.map_or("the environment".into(), |p| p.display().to_string());
                println!("{origin}: ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let config = match config {
                Some(path) => Config::load(&path),
                None => Config::from_env(),
            };
            let config = match config {
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

/// WEFT_LOG (the injector's name for it), else RUST_LOG, else `info`. A bad filter
/// is reported once logging works rather than stopping the proxy. `Targets` (level
/// per module path) rather than EnvFilter: the sidecar needs no span-field filters,
/// and EnvFilter's regex engine is resident text the sidecar would carry for nothing.
/// Release builds stop at `debug` (`release_max_level_debug` in Cargo.toml): a
/// `trace` filter there logs what `debug` does.
fn log_filter() -> (Targets, Option<(&'static str, ParseError)>) {
    for name in ["WEFT_LOG", "RUST_LOG"] {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => {
                return match v.trim().parse::<Targets>() {
                    Ok(f) => (f, None),
                    Err(e) => (info(), Some((name, e))),
                };
            }
            _ => {}
        }
    }
    (info(), None)
}

fn info() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
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
        let mut signals = weft_proxy::proxy::StopSignals::install();
        let started = match signals.as_mut() {
            Some(s) => tokio::select! {
                started = weft_proxy::proxy::start(config) => started,
                name = s.recv() => {
                    tracing::info!("{name} received while starting; stopped");
                    return ExitCode::SUCCESS;
                }
            },
            None => weft_proxy::proxy::start(config).await,
        };
        match started {
            Ok(proxy) => {
                tracing::info!(
                    outbound = ?proxy.outbound,
                    inbound = ?proxy.inbound,
                    admin = %proxy.admin,
                    upstreams = ?proxy.upstreams,
                    "weft-proxy ready"
                );
                proxy.run_until_shutdown(signals).await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
