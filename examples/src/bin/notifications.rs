//! `notifications`: a CloudEvents (binary mode) sink.

use std::net::SocketAddr;

use clap::Parser;
use weft_examples::events::EventArgs;
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
    #[command(flatten)]
    events: EventArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let config = NotificationsConfig {
        keep: args.keep,
        events: args.events.broker(args.amqp_url.as_deref())?,
    };
    let listener = listen::bind(args.listen).await?;
    notifications::serve(listener, config, signals.received()).await?;
    Ok(())
}
