//! `payments`: the gRPC payments service.

use std::net::SocketAddr;

use clap::Parser;
use weft_examples::payments::{self, PaymentsConfig};
use weft_examples::{listen, shutdown, telemetry};

/// gRPC payments service: Charge approves amounts up to a limit.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "PAYMENTS_LISTEN", default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// Charges above this many cents are declined.
    #[arg(long, env = "PAYMENTS_DECLINE_OVER_CENTS", default_value_t = 100_000)]
    decline_over_cents: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let listener = listen::bind(args.listen).await?;
    let config = PaymentsConfig {
        decline_over_cents: args.decline_over_cents,
    };
    payments::serve(listener, config, signals.received()).await?;
    Ok(())
}
