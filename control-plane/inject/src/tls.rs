//! The webhook's TLS: a rustls (ring) server config whose certificate is re-read
//! from disk when the files change, so a rotated Secret takes effect without a
//! restart (the kubelet updates mounted Secrets in place).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often a handshake may look at the files' modification times.
pub const RECHECK: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reads a PEM certificate chain and private key into a rustls key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no PEM certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A server config for the webhook (HTTP/2 and HTTP/1.1, ring, no client auth: the
/// API server does not present one by default).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_rechecking(cert, key, RECHECK)
}

/// [`server_config`] looking for new files at most every `recheck`.
pub fn server_config_rechecking(
    cert: &Path,
    key: &Path,
    recheck: Duration,
) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = ReloadingCert::new(cert, key, recheck)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the last good certificate and swaps in a new one when the files change;
/// a half-written or bad pair is logged and the old one kept.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    recheck: Duration,
    state: Mutex<State>,
}

struct State {
    current: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path, recheck: Duration) -> Result<Self, TlsError> {
        let current = Arc::new(load_certified_key(cert, key)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            recheck,
            state: Mutex::new(State {
                current,
                stamp: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
        })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.checked.elapsed() >= self.recheck {
            state.checked = Instant::now();
            let stamp = (modified(&self.cert), modified(&self.key));
            if stamp != state.stamp {
                match load_certified_key(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded webhook certificate");
                        state.current = Arc::new(key);
                        state.stamp = stamp;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the previous webhook certificate")
                    }
                }
            }
        }
        Some(state.current.clone())
    }
}
