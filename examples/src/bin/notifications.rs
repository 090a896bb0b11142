//! `notifications`: a CloudEvents (binary mode) sink.

use std::net::SocketAddr;

use clap::Parser;
use weft_examples::notifications::{self, NotificationsConfig};
use weft_examples::{listen, shutdown, telemetry};

/// Notifications service: POST /events (CloudEvents, binary mode), GET /events.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "NOTIFICATIONS_LISTEN", default_value = "127.0.0.1:8084")]
    listen: SocketAddr,
    /// How many recent events GET /events lists.
    #[arg(long, env = "NOTIFICATIONS_KEEP", default_value_t = 100)]
    keep: usize,
    /// The AMQP broker whose order.placed and user.signed_up events become
    /// notifications (GET /notifications).
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let listener = listen::bind(args.listen).await?;
    let config = NotificationsConfig {
        keep: args.keep,
        amqp_url: args.amqp_url,
    };
    notifications::serve(listener, config, signals.received()).await?;
    Ok(())
}
