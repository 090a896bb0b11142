//! `nats-publish`: publishes `order.placed` messages to NATS (plain TCP to the server).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use weft_examples::telemetry;

/// Publishes --count order.placed messages on --subject, then exits.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// NATS server URL.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject to publish on.
    #[arg(long, env = "NATS_SUBJECT", default_value = "order.placed")]
    subject: String,
    /// Number of messages.
    #[arg(long, env = "NATS_COUNT", default_value_t = 1)]
    count: u64,
    /// Pause between messages, in milliseconds.
    #[arg(long, env = "NATS_INTERVAL_MS", default_value_t = 0)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let args = Args::parse();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(args.nats_url.as_str())
        .await
        .with_context(|| format!("cannot connect to {}", args.nats_url))?;
    for n in 1..=args.count {
        let event = serde_json::json!({
            "type": "order.placed",
            "order_id": n,
            "amount_cents": 500 + n * 100,
        });
        client
            .publish(args.subject.clone(), event.to_string().into())
            .await
            .context("publish failed")?;
        if args.interval_ms > 0 && n < args.count {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
    }
    // Publishing only buffers; flushing makes sure the server has every message.
    client.flush().await.context("flush failed")?;
    tracing::info!(count = args.count, subject = %args.subject, "published");
    Ok(())
}
