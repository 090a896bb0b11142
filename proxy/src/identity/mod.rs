//! Workload identity in the proxy: the current certificate (renewed by
//! [`certify`]), the TLS configurations built around it, and the two handshakes:
//! outbound (mTLS to an endpoint whose SPIFFE ID discovery names) and inbound
//! (terminating mTLS and learning the caller's SPIFFE ID).
//!
//! Certificates are swapped through rustls resolvers that read an `ArcSwap`, so a
//! renewal changes what new handshakes present without touching open connections.
//! The TLS configurations themselves are rebuilt only when the trust bundle changes.

pub(crate) mod cert;
pub(crate) mod certify;
pub(crate) mod metrics;
pub(crate) mod policy_watch;
pub(crate) mod verify;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use weft_api::spiffe::SpiffeId;

use self::metrics::IdentityMetrics;
use self::verify::{SpiffeServerVerifier, peer_identity};
use crate::inbound_policy::InboundPolicy;

/// What a hop speaks inside TLS; chooses the ALPN the outbound side offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    Http1,
    Http2,
    /// HTTP/2 whose streams may carry HTTP/1 requests (`http::orig_proto`), in
    /// either version (`H2Orig`, newest first). Offered with `h2` beside it for
    /// HTTP/2 requests (`Http2`), and for HTTP/1 ones (connecting with `H2Orig`)
    /// with `http/1.1` beside it, so a peer that does not know it (an older Weft,
    /// or one with the upgrade off) settles on what the request speaks.
    H2Orig,
    /// The outbound side decided the connection is opaque TCP (a port declared
    /// opaque, or bytes it found not to be HTTP): the inbound side must not sniff
    /// again, since bytes that merely look like HTTP would be parsed as HTTP there.
    Opaque,
}

/// The version of `Alpn::H2Orig` a connection settled on: how its carried HTTP/1
/// requests are told from native HTTP/2 ones (`http::orig_proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum H2Orig {
    /// Each carried request has a `weft-orig-proto` field.
    V1 = 1,
    /// A request without `:authority` is a carried one.
    V2 = 2,
}

pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_H1: &[u8] = b"http/1.1";
/// Weft's own protocol name for "opaque bytes follow"; only proxies offer it.
const ALPN_OPAQUE: &[u8] = b"weft.opaque/1";
/// Weft's own names for `Alpn::H2Orig`'s versions; only proxies offer them.
const ALPN_H2_ORIG_1: &[u8] = b"weft.h2-orig/1";
const ALPN_H2_ORIG_2: &[u8] = b"weft.h2-orig/2";

/// The versions of `Alpn::H2Orig` up to `newest` (none: the upgrade off), newest
/// first, as both sides list them: rustls takes the first of the server's
/// protocols that the client offers, so two proxies settle on the newest both
/// know, and an older one (`weft.h2-orig/1` only) on the one it knows.
fn h2_orig_alpns(newest: Option<H2Orig>) -> &'static [&'static [u8]] {
    match newest {
        None => &[],
        Some(H2Orig::V1) => &[ALPN_H2_ORIG_1],
        Some(H2Orig::V2) => &[ALPN_H2_ORIG_2, ALPN_H2_ORIG_1],
    }
}

/// What each side lists for a proxy whose newest `Alpn::H2Orig` is `newest`:
/// the server's protocols, then the client's for an HTTP/2 request and for an
/// HTTP/1 one.
fn alpn_lists(newest: Option<H2Orig>) -> [Vec<&'static [u8]>; 3] {
    let orig = h2_orig_alpns(newest);
    let with = |rest: &[&'static [u8]]| orig.iter().chain(rest).copied().collect();
    [
        with(&[ALPN_H2, ALPN_H1, ALPN_OPAQUE]),
        with(&[ALPN_H2]),
        with(&[ALPN_H1]),
    ]
}

/// The version of `Alpn::H2Orig` a negotiated protocol names, if any.
fn h2_orig_of(protocol: Option<&[u8]>) -> Option<H2Orig> {
    match protocol {
        Some(ALPN_H2_ORIG_2) => Some(H2Orig::V2),
        Some(ALPN_H2_ORIG_1) => Some(H2Orig::V1),
        _ => None,
    }
}

/// Why a handshake failed, as the `reason` label of the handshake metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    NoCertificate,
    UnknownCa,
    Expired,
    BadCertificate,
    NoClientCertificate,
    WrongIdentity,
    PeerRefused,
    Protocol,
    Io,
    /// A plaintext connection to a port in strict mode.
    Plaintext,
}

impl HandshakeFailure {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            HandshakeFailure::NoCertificate => "no-local-certificate",
            HandshakeFailure::UnknownCa => "unknown-ca",
            HandshakeFailure::Expired => "expired",
            HandshakeFailure::BadCertificate => "bad-certificate",
            HandshakeFailure::NoClientCertificate => "no-client-certificate",
            HandshakeFailure::WrongIdentity => "wrong-identity",
            HandshakeFailure::PeerRefused => "peer-refused",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Io => "io",
            HandshakeFailure::Plaintext => "plaintext-refused",
        }
    }

    fn from_io(e: &std::io::Error) -> Self {
        use rustls::{CertificateError as C, Error as E};
        match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
            Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
                HandshakeFailure::Expired
            }
            Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
                HandshakeFailure::UnknownCa
            }
            Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
                HandshakeFailure::WrongIdentity
            }
            Some(E::InvalidCertificate(_)) => HandshakeFailure::BadCertificate,
            Some(E::NoCertificatesPresented) => HandshakeFailure::NoClientCertificate,
            Some(E::AlertReceived(_)) => HandshakeFailure::PeerRefused,
            Some(_) => HandshakeFailure::Protocol,
            None => HandshakeFailure::Io,
        }
    }
}

/// The current certificate, shared by the resolvers of every TLS config.
#[derive(Debug, Default)]
struct CurrentCert(ArcSwapOption<CertifiedKey>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }

    fn has_certs(&self) -> bool {
        self.0.load().is_some()
    }
}

struct TlsConfigs {
    h1: TlsConnector,
    h2: TlsConnector,
    /// For an HTTP/1 request: `Alpn::H2Orig`, else HTTP/1.1.
    h1_or_h2_orig: TlsConnector,
    opaque: TlsConnector,
    server: TlsAcceptor,
}

pub(crate) struct Identity {
    pub(crate) id: SpiffeId,
    id_str: Arc<str>,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    /// Unix seconds; 0 while there is no certificate.
    not_after: AtomicI64,
    tls: ArcSwapOption<TlsConfigs>,
    roots_pem: Mutex<Vec<String>>,
    pub(crate) inbound: ArcSwap<InboundPolicy>,
    pub(crate) metrics: IdentityMetrics,
    /// The newest version of `Alpn::H2Orig` this proxy offers and accepts, as
    /// `H2Orig as u8` (0: none, the upgrade configured off); read when TLS
    /// configs are built.
    h2_orig: AtomicU8,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum InstallError {
    #[error("the certificate chain is empty or not PEM")]
    BadChain,
    #[error("the trust bundle has no usable root")]
    BadBundle,
    #[error("the certificate names {found:?}, not {expected}")]
    WrongIdentity {
        expected: String,
        found: Option<String>,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl Identity {
    pub(crate) fn new(
        id: SpiffeId,
        inbound: InboundPolicy,
        metrics: IdentityMetrics,
    ) -> Arc<Identity> {
        Arc::new(Identity {
            id_str: Arc::from(id.to_string()),
            id,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: Arc::default(),
            not_after: AtomicI64::new(0),
            tls: ArcSwapOption::empty(),
            roots_pem: Mutex::new(Vec::new()),
            inbound: ArcSwap::from_pointee(inbound),
            metrics,
            h2_orig: AtomicU8::new(H2Orig::V2 as u8),
        })
    }

    pub(crate) fn h2_orig(&self) -> bool {
        self.newest_h2_orig().is_some()
    }

    fn newest_h2_orig(&self) -> Option<H2Orig> {
        match self.h2_orig.load(Ordering::Relaxed) {
            0 => None,
            1 => Some(H2Orig::V1),
            _ => Some(H2Orig::V2),
        }
    }

    /// Turns HTTP/1 over shared HTTP/2 off, both ways: as a client this proxy
    /// then never offers it, and as a server it answers like a Weft that predates
    /// it. Call before the first certificate is installed.
    pub(crate) fn disable_h2_orig(&self) {
        self.h2_orig.store(0, Ordering::Relaxed);
    }

    /// Offers and accepts no version of `Alpn::H2Orig` newer than `newest`, as a
    /// Weft that predates the others would. Call before the first certificate is
    /// installed.
    pub(crate) fn limit_h2_orig(&self, newest: H2Orig) {
        self.h2_orig.fetch_min(newest as u8, Ordering::Relaxed);
    }

    pub(crate) fn spiffe_id(&self) -> &Arc<str> {
        &self.id_str
    }

    /// True while the proxy holds a certificate that has not expired.
    pub(crate) fn has_valid_cert(&self) -> bool {
        let not_after = self.not_after.load(Ordering::Acquire);
        not_after > unix_now()
    }

    /// Installs a freshly issued certificate (and the trust bundle that came with
    /// it). New handshakes use it at once; open connections are untouched.
    pub(crate) fn install(
        &self,
        chain_pem: &[String],
        key: PrivateKeyDer<'static>,
        roots_pem: &[String],
        not_after_unix: i64,
    ) -> Result<(), InstallError> {
        let chain: Vec<CertificateDer<'static>> = chain_pem
            .iter()
            .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| InstallError::BadChain)?;
        let leaf = chain.first().ok_or(InstallError::BadChain)?;
        let found = cert::uri_san(leaf);
        if found.as_deref() != Some(&*self.id_str) {
            return Err(InstallError::WrongIdentity {
                expected: self.id_str.to_string(),
                found,
            });
        }
        let signer = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| InstallError::Tls(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signer);
        self.update_roots(roots_pem)?;
        self.current.0.store(Some(Arc::new(certified)));
        self.not_after.store(not_after_unix, Ordering::Release);
        self.metrics.cert_expiry.set(not_after_unix);
        Ok(())
    }

    /// Rebuilds the TLS configs when the trust bundle differs from the one in use.
    pub(crate) fn update_roots(&self, roots_pem: &[String]) -> Result<(), InstallError> {
        let mut held = self
            .roots_pem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *held == roots_pem && self.tls.load().is_some() {
            return Ok(());
        }
        let mut roots = RootCertStore::empty();
        for pem in roots_pem {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|_| InstallError::BadBundle)?;
                roots.add(der).map_err(|_| InstallError::BadBundle)?;
            }
        }
        if roots.is_empty() {
            return Err(InstallError::BadBundle);
        }
        let configs = self.build(Arc::new(roots))?;
        self.tls.store(Some(Arc::new(configs)));
        *held = roots_pem.to_vec();
        tracing::info!(roots = roots_pem.len(), "trust bundle installed");
        Ok(())
    }

    fn build(&self, roots: Arc<RootCertStore>) -> Result<TlsConfigs, InstallError> {
        let tls = |e: rustls::Error| InstallError::Tls(e.to_string());
        let verifier = Arc::new(SpiffeServerVerifier::new(
            roots.clone(),
            self.id.trust_domain.clone(),
            self.provider.clone(),
        ));
        let client = |alpn: &[&[u8]]| -> Result<TlsConnector, InstallError> {
            let mut c = ClientConfig::builder_with_provider(self.provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls)?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_cert_resolver(self.current.clone());
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsConnector::from(Arc::new(c)))
        };
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots, self.provider.clone())
                .build()
                .map_err(|e| InstallError::Tls(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(self.current.clone());
        let [server_alpns, h2_alpns, h1_alpns] = alpn_lists(self.newest_h2_orig());
        server.alpn_protocols = server_alpns.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConfigs {
            h1: client(&[ALPN_H1])?,
            h2: client(&h2_alpns)?,
            h1_or_h2_orig: client(&h1_alpns)?,
            opaque: client(&[ALPN_OPAQUE])?,
            server: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// mTLS to an endpoint that must prove it is `expected`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: &str,
        alpn: Alpn,
    ) -> Result<client::TlsStream<TcpStream>, HandshakeFailure> {
        let result = self.connect_inner(tcp, addr, expected, alpn).await;
        self.metrics
            .handshake(crate::metrics::Direction::Outbound, result.as_ref().err());
        result
    }

    async fn connect_inner(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        expected: &str,
        alpn: Alpn,
    ) -> Result<client::TlsStream<TcpStream>, HandshakeFailure> {
        let configs = self.tls.load_full();
        let Some(configs) = configs.filter(|_| self.has_valid_cert()) else {
            return Err(HandshakeFailure::NoCertificate);
        };
        let connector = match alpn {
            Alpn::Http1 => &configs.h1,
            Alpn::Http2 => &configs.h2,
            Alpn::H2Orig => &configs.h1_or_h2_orig,
            Alpn::Opaque => &configs.opaque,
        };
        // The name only keys rustls' session cache (per endpoint); the verifier
        // checks the SPIFFE ID instead.
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| HandshakeFailure::from_io(&e))?;
        let presented = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(cert::uri_san);
        if presented.as_deref() != Some(expected) {
            tracing::warn!(%addr, expected, ?presented, "endpoint presented the wrong identity");
            return Err(HandshakeFailure::WrongIdentity);
        }
        Ok(stream)
    }

    /// Terminates mTLS from a caller; returns the stream and the caller's identity.
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(server::TlsStream<IO>, SpiffeId, Arc<str>), HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.accept_inner(io).await;
        self.metrics
            .handshake(crate::metrics::Direction::Inbound, result.as_ref().err());
        result
    }

    async fn accept_inner<IO>(
        &self,
        io: IO,
    ) -> Result<(server::TlsStream<IO>, SpiffeId, Arc<str>), HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let configs = self.tls.load_full();
        let Some(configs) = configs.filter(|_| self.has_valid_cert()) else {
            return Err(HandshakeFailure::NoCertificate);
        };
        let stream = configs
            .server
            .accept(io)
            .await
            .map_err(|e| HandshakeFailure::from_io(&e))?;
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or(HandshakeFailure::NoClientCertificate)?;
        let id = peer_identity(leaf, &self.id.trust_domain)
            .map_err(|_| HandshakeFailure::BadCertificate)?;
        let id_str = Arc::from(id.to_string());
        Ok((stream, id, id_str))
    }
}

/// The protocol a terminated inbound connection negotiated, if ALPN settled it.
pub(crate) fn negotiated<IO>(stream: &server::TlsStream<IO>) -> Option<Alpn> {
    match stream.get_ref().1.alpn_protocol() {
        Some(ALPN_H2_ORIG_2 | ALPN_H2_ORIG_1) => Some(Alpn::H2Orig),
        Some(ALPN_H2) => Some(Alpn::Http2),
        Some(ALPN_H1) => Some(Alpn::Http1),
        Some(ALPN_OPAQUE) => Some(Alpn::Opaque),
        _ => None,
    }
}

/// The version of `Alpn::H2Orig` a terminated inbound connection settled on, if
/// it did.
pub(crate) fn negotiated_h2_orig<IO>(stream: &server::TlsStream<IO>) -> Option<H2Orig> {
    h2_orig_of(stream.get_ref().1.alpn_protocol())
}

/// The version of `Alpn::H2Orig` an outbound connection settled on, if it did.
pub(crate) fn client_negotiated_h2_orig<IO>(stream: &client::TlsStream<IO>) -> Option<H2Orig> {
    h2_orig_of(stream.get_ref().1.alpn_protocol())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use rustls::pki_types::PrivatePkcs8KeyDer;

    const TRUST_DOMAIN: &str = "spiffe://cluster.local";

    /// A proxy's identity under the CA `issuer`, whose newest `Alpn::H2Orig` is
    /// `newest` (None: the upgrade off).
    fn proxy(
        issuer: &Issuer<'_, KeyPair>,
        root: &str,
        name: &str,
        newest: Option<H2Orig>,
    ) -> Arc<Identity> {
        let id = format!("{TRUST_DOMAIN}/ns/shop/sa/{name}");
        let identity = Identity::new(
            SpiffeId::parse(&id).expect("a SPIFFE ID"),
            InboundPolicy::default(),
            IdentityMetrics::new(&prometheus::Registry::new()),
        );
        match newest {
            None => identity.disable_h2_orig(),
            Some(v) => identity.limit_h2_orig(v),
        }
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().expect("uri"))];
        let leaf = params.signed_by(&key, issuer).expect("leaf");
        let der = PrivatePkcs8KeyDer::from(key.serialize_der());
        identity
            .install(
                &[leaf.pem()],
                der.into(),
                &[root.to_string()],
                unix_now() + 3600,
            )
            .expect("install");
        identity
    }

    /// What a client proxy connecting with `alpn` and a server proxy settle on:
    /// the protocol, and each side's reading of `Alpn::H2Orig`'s version.
    async fn handshake(
        client: &Identity,
        server: &Identity,
        alpn: Alpn,
    ) -> (
        Option<Vec<u8>>,
        Option<H2Orig>,
        Option<Alpn>,
        Option<H2Orig>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (tcp, (inbound, _)) = (tcp.expect("connect"), accepted.expect("accept"));
        let expected = server.spiffe_id().to_string();
        let (out, inn) = tokio::join!(
            client.connect(tcp, addr, &expected, alpn),
            server.accept(inbound)
        );
        let (out, (inn, _, _)) = (out.expect("client side"), inn.expect("server side"));
        (
            out.get_ref().1.alpn_protocol().map(<[u8]>::to_vec),
            client_negotiated_h2_orig(&out),
            negotiated(&inn),
            negotiated_h2_orig(&inn),
        )
    }

    fn ca() -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = params.self_signed(&key).expect("root");
        (root.pem(), Issuer::new(params, key))
    }

    #[test]
    fn both_versions_are_listed_newest_first_and_none_when_off() {
        let [server, h2, h1] = alpn_lists(Some(H2Orig::V2));
        let names = |l: &[&[u8]]| {
            l.iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&server),
            [
                "weft.h2-orig/2",
                "weft.h2-orig/1",
                "h2",
                "http/1.1",
                "weft.opaque/1"
            ]
        );
        assert_eq!(names(&h2), ["weft.h2-orig/2", "weft.h2-orig/1", "h2"]);
        assert_eq!(names(&h1), ["weft.h2-orig/2", "weft.h2-orig/1", "http/1.1"]);
        let [server, h2, h1] = alpn_lists(Some(H2Orig::V1));
        assert_eq!(
            names(&server),
            ["weft.h2-orig/1", "h2", "http/1.1", "weft.opaque/1"]
        );
        assert_eq!(names(&h2), ["weft.h2-orig/1", "h2"]);
        assert_eq!(names(&h1), ["weft.h2-orig/1", "http/1.1"]);
        let [server, h2, h1] = alpn_lists(None);
        assert_eq!(names(&server), ["h2", "http/1.1", "weft.opaque/1"]);
        assert_eq!(names(&h2), ["h2"]);
        assert_eq!(names(&h1), ["http/1.1"]);
    }

    #[tokio::test]
    async fn two_proxies_settle_on_the_newest_version_both_know() {
        let (root, issuer) = ca();
        let new = proxy(&issuer, &root, "new", Some(H2Orig::V2));
        let old = proxy(&issuer, &root, "old", Some(H2Orig::V1));
        let off = proxy(&issuer, &root, "off", None);
        let v2 = Some(b"weft.h2-orig/2".to_vec());
        let v1 = Some(b"weft.h2-orig/1".to_vec());
        let h2 = Some(b"h2".to_vec());
        let h1 = Some(b"http/1.1".to_vec());
        let orig = Some(Alpn::H2Orig);
        for alpn in [Alpn::H2Orig, Alpn::Http2] {
            let what = format!("{alpn:?}");
            assert_eq!(
                handshake(&new, &new, alpn).await,
                (v2.clone(), Some(H2Orig::V2), orig, Some(H2Orig::V2)),
                "{what}: new to new"
            );
            assert_eq!(
                handshake(&new, &old, alpn).await,
                (v1.clone(), Some(H2Orig::V1), orig, Some(H2Orig::V1)),
                "{what}: new to old"
            );
            assert_eq!(
                handshake(&old, &new, alpn).await,
                (v1.clone(), Some(H2Orig::V1), orig, Some(H2Orig::V1)),
                "{what}: old to new"
            );
            let plain = if alpn == Alpn::Http2 { &h2 } else { &h1 };
            let plain_alpn = if alpn == Alpn::Http2 {
                Alpn::Http2
            } else {
                Alpn::Http1
            };
            assert_eq!(
                handshake(&new, &off, alpn).await,
                (plain.clone(), None, Some(plain_alpn), None),
                "{what}: new to off"
            );
            assert_eq!(
                handshake(&off, &new, alpn).await,
                (plain.clone(), None, Some(plain_alpn), None),
                "{what}: off to new"
            );
        }
    }
}
