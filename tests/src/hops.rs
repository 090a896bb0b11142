//! The usual two-proxy data path, as between two pods:
//!
//! ```text
//! test client ─► client proxy (outbound :http_proxy, or upstream listener)
//!             ─► server proxy inbound ─► app
//! ```
//!
//! The service's one endpoint is the server proxy's inbound listener.

use std::net::SocketAddr;

use crate::proxy::{ProxyConfig, ServiceDef, WeftProxy};

pub struct Hops {
    pub client: WeftProxy,
    pub server: WeftProxy,
    pub service: ServiceDef,
}

impl Hops {
    /// Both proxies with default limits; `service` gets the server proxy as endpoint.
    pub async fn start(service: ServiceDef, app: SocketAddr) -> anyhow::Result<Hops> {
        Self::start_with(service, app, |c| c, |c| c).await
    }

    /// Lets a test adjust each proxy's config (limits, more listeners) before start.
    pub async fn start_with(
        service: ServiceDef,
        app: SocketAddr,
        client: impl FnOnce(ProxyConfig) -> ProxyConfig,
        server: impl FnOnce(ProxyConfig) -> ProxyConfig,
    ) -> anyhow::Result<Hops> {
        let server_config = server(ProxyConfig::new().inbound(app));
        let server = WeftProxy::start_named("server-proxy", server_config).await?;
        let service = service.endpoint(server.inbound());
        let client_config = client(
            ProxyConfig::new()
                .upstream(&service.name)
                .service(service.clone()),
        );
        let client = WeftProxy::start_named("client-proxy", client_config).await?;
        Ok(Hops {
            client,
            server,
            service,
        })
    }

    /// The client proxy's upstream listener for the service.
    pub fn upstream(&self) -> SocketAddr {
        self.client.upstream(&self.service.name)
    }

    /// The client proxy's outbound (http_proxy) listener.
    pub fn outbound(&self) -> SocketAddr {
        self.client.outbound()
    }

    /// Stops the client proxy, then the server proxy (SIGTERM), and checks that both
    /// drained and exited 0.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        for proxy in [&mut self.client, &mut self.server] {
            let status = proxy.stop().await?;
            anyhow::ensure!(
                status.success(),
                "{} exited with {status}",
                proxy.process().name()
            );
        }
        Ok(())
    }
}
