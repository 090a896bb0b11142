//! The gateway's operator certificates: loaded from PEM files, chosen by the name
//! the client asks for (SNI), and re-read when the files change, so a renewed
//! certificate is served without a restart. A file that cannot be read or parsed
//! leaves the last good set serving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::gateway_config::CertFiles;

/// The certificates of one listener, by the DNS names they are valid for.
#[derive(Debug)]
pub(super) struct Certificates {
    files: Vec<CertFiles>,
    current: ArcSwap<Loaded>,
}

/// Each certificate's PEM chain and key, as read.
type Source = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug)]
struct Loaded {
    /// The files' bytes, to see whether they changed.
    source: Source,
    /// Exact names, and wildcard names under their suffix ("*.example" as "example").
    by_name: HashMap<String, Arc<CertifiedKey>>,
    by_wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For a client that sends no SNI: the first certificate.
    default: Arc<CertifiedKey>,
}

impl Certificates {
    pub(super) fn load(files: &[CertFiles]) -> Result<Certificates, String> {
        let source = read(files)?;
        let loaded = parse(files, source)?;
        Ok(Certificates {
            files: files.to_vec(),
            current: ArcSwap::from_pointee(loaded),
        })
    }

    /// Re-reads the files; swaps in the new set if they changed and parse.
    fn reload(&self) -> Result<bool, String> {
        let source = read(&self.files)?;
        if source == self.current.load().source {
            return Ok(false);
        }
        self.current.store(Arc::new(parse(&self.files, source)?));
        Ok(true)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.current.load();
        let Some(name) = hello.server_name() else {
            return Some(loaded.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(key) = loaded.by_name.get(&name) {
            return Some(key.clone());
        }
        let wildcard = name
            .split_once('.')
            .and_then(|(_, parent)| loaded.by_wildcard.get(parent));
        // A name no certificate covers still gets the default one, so the client
        // can see what it reached (and a client that skips verification, the
        // gateway's 404 for a host it does not serve).
        Some(wildcard.unwrap_or(&loaded.default).clone())
    }
}

fn read(files: &[CertFiles]) -> Result<Source, String> {
    files
        .iter()
        .map(|f| {
            let cert = std::fs::read(&f.cert).map_err(|e| format!("{}: {e}", f.cert.display()))?;
            let key = std::fs::read(&f.key).map_err(|e| format!("{}: {e}", f.key.display()))?;
            Ok((cert, key))
        })
        .collect()
}

fn parse(files: &[CertFiles], source: Source) -> Result<Loaded, String> {
    let provider = rustls::crypto::ring::default_provider();
    let mut by_name = HashMap::new();
    let mut by_wildcard = HashMap::new();
    let mut default = None;
    for (f, (cert_pem, key_pem)) in files.iter().zip(&source) {
        let origin = f.cert.display();
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .map(|c| c.map(CertificateDer::into_owned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{origin}: {e}"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{origin}: no PEM certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("{}: {e}", f.key.display()))?;
        let certified = Arc::new(
            CertifiedKey::from_der(chain.clone(), key, &provider)
                .map_err(|e| format!("{origin} with {}: {e}", f.key.display()))?,
        );
        let names = dns_names(leaf).map_err(|e| format!("{origin}: {e}"))?;
        if names.is_empty() {
            return Err(format!("{origin}: the certificate names no DNS name"));
        }
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => by_wildcard.insert(parent.to_string(), certified.clone()),
                None => by_name.insert(name, certified.clone()),
            };
        }
        default.get_or_insert(certified);
    }
    Ok(Loaded {
        source,
        by_name,
        by_wildcard,
        default: default.ok_or("no certificate")?,
    })
}

/// The DNS names in a certificate's subjectAltName, lowercased.
fn dns_names(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let san = cert.subject_alternative_name().map_err(|e| e.to_string())?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Re-reads the certificate files every `interval` until `stop`.
pub(super) fn reload_every(certs: Arc<Certificates>, interval: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match certs.reload() {
                Ok(true) => tracing::info!("gateway certificates reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "gateway certificates not reloaded; the last good ones stay")
                }
            }
        }
    });
}
