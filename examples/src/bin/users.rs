//! `users`: deterministic fake user records.

use std::net::SocketAddr;

use clap::Parser;
use weft_examples::events::EventArgs;
use weft_examples::users::{self, UsersConfig};
use weft_examples::{listen, shutdown, telemetry};

/// Users service: GET /users/{id}.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "USERS_LISTEN", default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    /// Users 1..=count exist.
    #[arg(long, env = "USERS_COUNT", default_value_t = 1000)]
    count: u64,
    /// The AMQP broker user.signed_up events go to (POST /users).
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
    let events = args.events.broker(args.amqp_url.as_deref())?;
    let listener = listen::bind(args.listen).await?;
    users::serve(
        listener,
        UsersConfig {
            count: args.count,
            events,
        },
        signals.received(),
    )
    .await?;
    Ok(())
}
