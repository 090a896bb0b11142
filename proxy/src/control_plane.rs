//! The gRPC channel to the control plane: plaintext for `http://` addresses, TLS for
//! `https://` ones, verified against the trust bundle the operator gives the proxy
//! (`identity.trust_bundle`, `WEFT_TRUST_BUNDLE` or `WEFT_TRUST_ANCHORS`), with the
//! usual host-name check.

use std::path::PathBuf;
use std::sync::Arc;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the roots that verify the control plane come from: a PEM file
/// (`identity.trust_bundle`, `WEFT_TRUST_BUNDLE`) or PEM text in the environment
/// (`WEFT_TRUST_ANCHORS`, which the injector writes into the pod spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustAnchors {
    File(PathBuf),
    Pem(String),
}

impl TrustAnchors {
    /// Names the source in errors.
    fn origin(&self) -> String {
        match self {
            TrustAnchors::File(path) => format!("trust bundle {}", path.display()),
            TrustAnchors::Pem(_) => "WEFT_TRUST_ANCHORS".to_string(),
        }
    }

    /// The certificates, parsed; an error names the source.
    pub(crate) fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let origin = self.origin();
        let certs: Vec<CertificateDer<'static>> = match self {
            TrustAnchors::File(path) => CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{origin}: {e}"))?
                .collect::<Result<_, _>>(),
            TrustAnchors::Pem(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
                .map(|c| c.map(CertificateDer::into_owned))
                .collect::<Result<_, _>>(),
        }
        .map_err(|e| format!("{origin}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{origin}: no PEM certificate"));
        }
        Ok(certs)
    }
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
pub(crate) fn connect_lazy(
    endpoint: Endpoint,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Channel, String> {
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
