//! `orders`: REST/JSON orders service that charges through payments (gRPC).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use http::Uri;
use weft_examples::events::EventArgs;
use weft_examples::http_client::HttpClient;
use weft_examples::http_proxy::ProxySettings;
use weft_examples::orders::{self, BrokerConfig, OrdersConfig};
use weft_examples::{listen, shutdown, telemetry};

/// Orders service: POST /orders, GET /orders/{id}, GET /orders?user={id}.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "ORDERS_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// gRPC address of the payments service (an http:// URL).
    #[arg(long, env = "PAYMENTS_ADDR", default_value = "http://127.0.0.1:8083")]
    payments: Uri,
    /// Where order.placed CloudEvents are POSTed; unset means no events.
    #[arg(long, env = "EVENTS_URL")]
    events_url: Option<Uri>,
    /// The ce-source of published events.
    #[arg(long, env = "EVENT_SOURCE", default_value = "/weft-examples/orders")]
    event_source: String,
    /// Deadline of each call to a dependency, in milliseconds.
    #[arg(long, env = "ORDERS_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
    /// The AMQP broker (e.g. amqp://guest:guest@127.0.0.1:5672/%2f): with it, stock
    /// is reserved through inventory and order.placed is published there.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// How long a stock reservation waits for inventory, in milliseconds.
    #[arg(long, env = "INVENTORY_TIMEOUT_MS", default_value_t = 2000)]
    inventory_timeout_ms: u64,
    /// Orders kept in memory (the oldest are forgotten).
    #[arg(long, env = "ORDERS_MAX", default_value_t = 10_000)]
    max_orders: usize,
    #[command(flatten)]
    events: EventArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let proxy = ProxySettings::from_env()?;
    tracing::info!(outgoing_http = %proxy, "proxy settings");
    let timeout = Duration::from_millis(args.timeout_ms);
    let events = args.events.broker(args.amqp_url.as_deref())?;
    let listener = listen::bind(args.listen).await?;
    tracing::info!(payments = %args.payments, "calling payments");
    let config = OrdersConfig {
        payments: args.payments,
        events_url: args.events_url,
        event_source: args.event_source,
        payments_timeout: timeout,
        max_orders: args.max_orders,
        broker: args.amqp_url.map(|url| BrokerConfig {
            url,
            inventory_timeout: Duration::from_millis(args.inventory_timeout_ms),
        }),
        events,
        publish_patience: timeout,
    };
    let events = HttpClient::new(proxy, timeout);
    orders::serve(listener, config, events, signals.received()).await?;
    Ok(())
}
