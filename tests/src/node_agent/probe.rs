//! The kubelet's probes, run from the node (the test process) against the pod IP:
//! `httpGet` (HTTP, or HTTPS without verifying the certificate, as the kubelet
//! does) succeeds on 200–399, `tcpSocket` on a connection. Other kinds are not run
//! by the test node, and the probe never succeeds, saying so.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Runs `probe` of `container` once against the pod at `ip`.
pub async fn check(probe: &Probe, container: &Container, ip: Ipv4Addr) -> anyhow::Result<()> {
    let limit = Duration::from_secs(
        probe
            .timeout_seconds
            .unwrap_or(1)
            .max(1)
            .unsigned_abs()
            .into(),
    );
    match tokio::time::timeout(limit, check_once(probe, container, ip)).await {
        Ok(result) => result,
        Err(_) => bail!("no answer within {limit:?}"),
    }
}

async fn check_once(probe: &Probe, container: &Container, ip: Ipv4Addr) -> anyhow::Result<()> {
    if let Some(http) = &probe.http_get {
        let port = port(&http.port, container)?;
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let stream = TcpStream::connect(SocketAddr::from((ip, port)))
            .await
            .with_context(|| format!("connect {ip}:{port}"))?;
        let status = if http.scheme.as_deref() == Some("HTTPS") {
            let tls = tokio_rustls::TlsConnector::from(Arc::new(insecure_client()?));
            let name = ServerName::IpAddress(std::net::IpAddr::V4(ip).into());
            let stream = tls.connect(name, stream).await.context("TLS handshake")?;
            get(stream, ip, port, &path).await?
        } else {
            get(stream, ip, port, &path).await?
        };
        if !(200..400).contains(&status) {
            bail!("GET {path} on port {port} answered {status}");
        }
        return Ok(());
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = port(&tcp.port, container)?;
        TcpStream::connect(SocketAddr::from((ip, port)))
            .await
            .with_context(|| format!("connect {ip}:{port}"))?;
        return Ok(());
    }
    bail!("only httpGet and tcpSocket probes are run by the test node agent")
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(port: &IntOrString, container: &Container) -> anyhow::Result<u16> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .with_context(|| format!("container {} has no port named {name}", container.name))?,
    };
    u16::try_from(number).with_context(|| format!("bad probe port {number}"))
}

/// One `GET` with `Connection: close`; returns the status code.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ip: Ipv4Addr,
    port: u16,
    path: &str,
) -> anyhow::Result<u16> {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/weft-test\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    // The status line is all a probe needs; the body may be anything.
    let mut buf = [0u8; 1024];
    while !raw.windows(2).any(|w| w == b"\r\n") && raw.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&raw);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {:?}", line.lines().next().unwrap_or("")))
}

/// The kubelet does not verify the certificate of an HTTPS probe.
fn insecure_client() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
