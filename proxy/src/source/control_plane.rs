//! The gRPC channel to the control plane: plaintext for `http://` addresses, TLS for
//! `https://` ones, verified against the trust bundle the operator gives the proxy
//! (`identity.trust_bundle`, `WEFT_TRUST_BUNDLE` or `WEFT_TRUST_ANCHORS`), with the
//! usual host-name check.

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::config::TrustAnchors;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel for unary calls (certificate requests): each call bounded in time.
pub(crate) fn unary_channel(
    addr: &str,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Channel, String> {
    let endpoint = endpoint(addr)?.timeout(Duration::from_secs(10));
    connect_lazy(endpoint, tls)
}

/// A channel for long-lived watch streams: HTTP/2 keep-alives find a dead control
/// plane that never closed the stream.
pub(crate) fn streaming_channel(
    addr: &str,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Channel, String> {
    let endpoint = endpoint(addr)?
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    connect_lazy(endpoint, tls)
}

fn endpoint(addr: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("control plane address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true))
}

/// A TLS client config trusting `anchors`.
pub(crate) fn client_config(anchors: &TrustAnchors) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in anchors.certificates()? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", anchors.origin()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects lazily; `https://` needs `tls`.
fn connect_lazy(endpoint: Endpoint, tls: Option<&Arc<ClientConfig>>) -> Result<Channel, String> {
    let https = endpoint.uri().scheme_str() == Some("https");
    match (https, tls) {
        (false, _) => Ok(endpoint.connect_lazy()),
        (true, None) => Err(format!(
            "control plane {} is https but no trust bundle is configured \
             (identity.trust_bundle, WEFT_TRUST_BUNDLE or WEFT_TRUST_ANCHORS)",
            endpoint.uri()
        )),
        (true, Some(config)) => {
            let connector = TlsConnector::from(config.clone());
            let connect = tower::service_fn(move |uri: Uri| {
                let connector = connector.clone();
                async move {
                    let host = uri.host().ok_or("the control plane address has no host")?;
                    let port = uri.port_u16().unwrap_or(443);
                    let bare = host.trim_start_matches('[').trim_end_matches(']');
                    let tcp = TcpStream::connect((bare, port)).await?;
                    let _ = tcp.set_nodelay(true);
                    let name = ServerName::try_from(bare.to_string())?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, BoxError>(TokioIo::new(tls))
                }
            });
            Ok(endpoint.connect_with_connector_lazy(connect))
        }
    }
}
