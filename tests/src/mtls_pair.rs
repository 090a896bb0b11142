//! Two proxies with identities from a real weft-control CA, mTLS between them, as
//! between two pods:
//!
//! ```text
//! test client ─► client proxy (upstream listener) ══ mTLS ══► server proxy inbound ─► app
//! ```

use std::net::SocketAddr;

use crate::control::WeftControl;
use crate::proxy::{ProxyConfig, ServiceDef, WeftProxy};

/// The server proxy's identity, which the client proxy requires of its endpoint.
pub const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";

/// `identity:` lines for a side with HTTP/1.1 over HTTP/2 off.
pub const UPGRADE_OFF: &str = "  http1_over_http2: false\n";
/// A side that knows only `weft.h2-orig/1`, as a Weft before /2: it marks each
/// carried request, and takes an unmarked one for native HTTP/2.
pub const UPGRADE_V1_ONLY: &str = "  http1_over_http2: 1\n";
/// A side with the upgrade as it ships (on).
pub const UPGRADE_ON: &str = "";

/// How each side of the pair differs from the default.
#[derive(Debug, Clone, Default)]
pub struct PairOptions {
    /// More `identity:` keys for the client proxy, as indented lines.
    pub client_identity: String,
    /// More `identity:` keys for the server proxy, as indented lines.
    pub server_identity: String,
    /// The server proxy's `inbound.http1_ports`.
    pub server_http1_ports: Option<String>,
    /// The server proxy's `inbound.http2_ports`.
    pub server_http2_ports: Option<String>,
    /// The control plane's mesh YAML; default: one placeholder service. Its
    /// services may name the app (`{app}`, replaced by its address) as an endpoint
    /// with the server's identity, so the server proxy learns what the app speaks.
    pub control_plane_mesh: Option<String>,
}

pub struct MtlsPair {
    pub client: WeftProxy,
    pub server: WeftProxy,
    pub service: ServiceDef,
    pub cp: WeftControl,
}

impl MtlsPair {
    /// A control plane (the CA), a server proxy in front of `app` that admits any
    /// meshed caller, and a client proxy with an upstream listener for `service`,
    /// whose one endpoint is the server proxy, which must prove [`SERVER_ID`].
    pub async fn start(
        service: ServiceDef,
        app: SocketAddr,
        options: PairOptions,
    ) -> anyhow::Result<MtlsPair> {
        let mesh = options.control_plane_mesh.as_deref().map_or_else(
            || "services:\n  - name: placeholder\n    endpoints: []\n".to_string(),
            |m| m.replace("{app}", &app.to_string()),
        );
        let cp = WeftControl::start_yaml(&mesh, &[]).await?;
        let mut server_config = ProxyConfig::new().inbound(app);
        if let Some(ports) = &options.server_http1_ports {
            server_config = server_config.inbound_http1_ports(ports);
        }
        if let Some(ports) = &options.server_http2_ports {
            server_config = server_config.inbound_http2_ports(ports);
        }
        server_config.extra = cp.identity_yaml("server", "{}", &options.server_identity);
        let server = WeftProxy::start_named("server-proxy", server_config).await?;
        let service = service.endpoint_with_identity(server.inbound(), SERVER_ID);
        let mut client_config = ProxyConfig::new()
            .upstream(&service.name)
            .service(service.clone());
        client_config.extra = cp.identity_yaml("client", "{}", &options.client_identity);
        let client = WeftProxy::start_named("client-proxy", client_config).await?;
        Ok(MtlsPair {
            client,
            server,
            service,
            cp,
        })
    }

    /// A pair for the service `legacy` in front of `app`, whose sides have these
    /// `identity:` lines (`UPGRADE_OFF`, ...).
    pub async fn legacy(app: SocketAddr, client_identity: &str, server_identity: &str) -> MtlsPair {
        let options = PairOptions {
            client_identity: client_identity.to_string(),
            server_identity: server_identity.to_string(),
            ..PairOptions::default()
        };
        MtlsPair::start(ServiceDef::new("legacy"), app, options)
            .await
            .expect("start the pair")
    }

    /// A pair for the service `legacy`, whose port the caller's mesh declares
    /// `http1`.
    pub async fn legacy_http1_service(app: SocketAddr) -> MtlsPair {
        let service = ServiceDef::new("legacy").port(80, "http1");
        MtlsPair::start(service, app, PairOptions::default())
            .await
            .expect("start the pair")
    }

    /// A pair for the service `legacy`, whose caller's mesh says nothing of what
    /// `app` speaks; only the server proxy's inbound ports say HTTP/1.1.
    pub async fn legacy_http1_app(app: SocketAddr) -> MtlsPair {
        let options = PairOptions {
            server_http1_ports: Some(app.port().to_string()),
            ..PairOptions::default()
        };
        MtlsPair::start(ServiceDef::new("legacy"), app, options)
            .await
            .expect("start the pair")
    }

    /// The client proxy's upstream listener for the service.
    pub fn upstream(&self) -> SocketAddr {
        self.client.upstream(&self.service.name)
    }
}
