//! `web`: the entry point, forwarding checkouts and composing profiles.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use weft_examples::http_client::{BaseUrl, HttpClient};
use weft_examples::http_proxy::ProxySettings;
use weft_examples::web::{self, WebConfig};
use weft_examples::{listen, shutdown, telemetry};

/// Web service: POST /checkout, GET /profile/{user_id}.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "WEB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Base URL of the orders service.
    #[arg(long, env = "ORDERS_URL", default_value = "http://127.0.0.1:8081")]
    orders_url: BaseUrl,
    /// Base URL of the users service.
    #[arg(long, env = "USERS_URL", default_value = "http://127.0.0.1:8082")]
    users_url: BaseUrl,
    /// gRPC address of payments (an http:// URL), for GraphQL's payment field.
    #[arg(long, env = "PAYMENTS_ADDR")]
    payments: Option<http::Uri>,
    /// Deadline of each call to a dependency, in milliseconds.
    #[arg(long, env = "WEB_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let signals = shutdown::ShutdownSignals::install();
    let args = Args::parse();
    let proxy = ProxySettings::from_env()?;
    tracing::info!(outgoing_http = %proxy, "proxy settings");
    let listener = listen::bind(args.listen).await?;
    let config = WebConfig {
        orders_url: args.orders_url,
        users_url: args.users_url,
        payments: args.payments,
    };
    let client = HttpClient::new(proxy, Duration::from_millis(args.timeout_ms));
    web::serve(listener, config, client, signals.received()).await?;
    Ok(())
}
