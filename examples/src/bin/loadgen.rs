//! `loadgen`: a steady, bounded stream of checkouts, profile reads and sign-ups
//! against web.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use weft_examples::http_client::{BaseUrl, HttpClient};
use weft_examples::http_proxy::ProxySettings;
use weft_examples::loadgen::{self, LoadConfig};
use weft_examples::{shutdown, telemetry};

/// Sends checkouts, profile reads and sign-ups to web, then prints one summary line. Exits 1 when
/// requests were sent and none succeeded.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Base URL of the web service.
    #[arg(long, env = "TARGET_URL", default_value = "http://127.0.0.1:8080")]
    target: BaseUrl,
    /// Requests started per second.
    #[arg(long, env = "LOADGEN_RPS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rps: u32,
    /// Seconds to send for.
    #[arg(long, env = "LOADGEN_DURATION", default_value_t = 10)]
    duration: u64,
    /// Stop after this many requests, if sooner.
    #[arg(long, env = "LOADGEN_COUNT")]
    count: Option<u64>,
    /// Most requests in flight at once.
    #[arg(long, env = "LOADGEN_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Users 1..=users are used.
    #[arg(long, env = "LOADGEN_USERS", default_value_t = 100)]
    users: u64,
    /// One profile read in this many is a sign-up (POST /signup) instead; 0: none.
    #[arg(long, env = "LOADGEN_SIGN_UP_EVERY", default_value_t = 10)]
    sign_up_every: u64,
    /// Deadline of each request, in milliseconds.
    #[arg(long, env = "LOADGEN_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let proxy = match ProxySettings::from_env() {
        Ok(proxy) => proxy,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(outgoing_http = %proxy, "proxy settings");
    let config = LoadConfig {
        target: args.target,
        rps: args.rps,
        duration: Duration::from_secs(args.duration),
        count: args.count,
        concurrency: args.concurrency,
        users: args.users,
        sign_up_every: args.sign_up_every,
    };
    let client = HttpClient::new(proxy, Duration::from_millis(args.timeout_ms));
    let summary = loadgen::run(config, client, signals.received()).await;
    println!("{summary}");
    if summary.sent > 0 && summary.ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
