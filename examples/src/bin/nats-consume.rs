//! `nats-consume`: prints the `order.placed` messages it receives from NATS.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use weft_examples::{shutdown, telemetry};

/// Subscribes to --subject and prints each message's payload as one line on stdout.
/// Stops after --count messages, on SIGTERM/SIGINT, or when the connection closes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject to subscribe to.
    #[arg(long, env = "NATS_SUBJECT", default_value = "order.placed")]
    subject: String,
    /// Exit after this many messages.
    #[arg(long, env = "NATS_COUNT")]
    count: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(args.nats_url.as_str())
        .await
        .with_context(|| format!("cannot connect to {}", args.nats_url))?;
    let mut messages = client
        .subscribe(args.subject.clone())
        .await
        .context("subscribe failed")?;
    // After the flush the server knows the subscription: publishers can start.
    client.flush().await.context("flush failed")?;
    tracing::info!(subject = %args.subject, "subscribed");

    let stop = signals.received();
    tokio::pin!(stop);
    let mut received = 0u64;
    while args.count.is_none_or(|count| received < count) {
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    received += 1;
                    println!("{}", String::from_utf8_lossy(&message.payload));
                }
                None => {
                    tracing::warn!("subscription closed");
                    break;
                }
            },
            () = &mut stop => break,
        }
    }
    tracing::info!(received, "done");
    Ok(())
}
