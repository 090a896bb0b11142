//! `inventory`: reserves stock for orders over the broker (request-reply).

use std::net::SocketAddr;

use clap::Parser;
use weft_examples::inventory::{self, InventoryConfig};
use weft_examples::{listen, shutdown, telemetry};

/// Inventory service: answers `inventory.reserve` requests on the broker;
/// GET /stock.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (GET /stock, /healthz).
    #[arg(long, env = "INVENTORY_LISTEN", default_value = "127.0.0.1:8085")]
    listen: SocketAddr,
    /// The AMQP broker.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Units of every item in stock at start.
    #[arg(long, env = "INVENTORY_STOCK", default_value_t = 1_000_000)]
    stock: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let listener = listen::bind(args.listen).await?;
    let config = InventoryConfig {
        amqp_url: args.amqp_url,
        initial_stock: args.stock,
    };
    inventory::serve(listener, config, signals.received()).await?;
    Ok(())
}
