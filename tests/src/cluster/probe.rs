//! A blocking HTTPS GET for the components' health endpoints: trusts only the
//! cluster's CA and presents the admin client certificate. One request per
//! connection, bounded by a short timeout, answering just the status code.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const TIMEOUT: Duration = Duration::from_secs(3);

pub struct Prober {
    config: Arc<rustls::ClientConfig>,
}

impl Prober {
    pub fn new(ca_der: &[u8], client_cert: &[u8], client_key: &[u8]) -> anyhow::Result<Prober> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(client_cert.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.to_vec())),
            )?;
        Ok(Prober {
            config: Arc::new(config),
        })
    }

    /// The status code and body of `GET https://<addr><path>`.
    pub fn get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        let name = ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(self.config.clone(), name)?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        tls.flush()?;
        let mut reply = Vec::new();
        // The server closes after its answer; a close without close_notify still
        // leaves the whole answer read.
        if let Err(e) = tls.read_to_end(&mut reply)
            && reply.is_empty()
        {
            return Err(e).with_context(|| format!("reading the answer to GET {path}"));
        }
        let text = String::from_utf8_lossy(&reply);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status line in the answer to GET {path}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}
