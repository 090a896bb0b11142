//! The gRPC channel to the control plane: plaintext for `http://` addresses, TLS for
//! `https://` ones, verified against the trust bundle the operator gives the proxy
//! (`identity.trust_bundle` or `WEFT_TRUST_BUNDLE`), with the usual host-name check.

use std::path::Path;
use std::sync::Arc;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TLS client config trusting the roots in the PEM file at `path`.
pub fn client_config(path: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("trust bundle {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("trust bundle {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("trust bundle {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("trust bundle {}: no certificate", path.display()));
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
pub fn connect_lazy(
    endpoint: Endpoint,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Channel, String> {
    let https = endpoint.uri().scheme_str() == Some("https");
    match (https, tls) {
        (false, _) => Ok(endpoint.connect_lazy()),
        (true, None) => Err(format!(
            "control plane {} is https but no trust bundle is configured \
             (identity.trust_bundle or WEFT_TRUST_BUNDLE)",
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
