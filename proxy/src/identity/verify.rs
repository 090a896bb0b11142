//! Server-certificate verification between proxies. SPIFFE certificates carry no
//! DNS name, so rustls' usual name check cannot apply: the chain is verified with
//! webpki against the trust bundle, then the certificate must name one SPIFFE ID in
//! our trust domain. Which ID the endpoint must have is checked by the caller after
//! the handshake, before a single byte of the request is written.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use weft_api::spiffe::SpiffeId;

use super::cert::uri_san;

#[derive(Debug)]
pub(crate) struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        trust_domain: String,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        SpiffeServerVerifier {
            roots,
            trust_domain,
            provider,
        }
    }
}

/// Checks that a verified certificate names one SPIFFE ID in `trust_domain`.
pub(crate) fn peer_identity(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
) -> Result<SpiffeId, Error> {
    let id = uri_san(cert)
        .and_then(|u| SpiffeId::parse(&u).ok())
        .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if id.trust_domain != trust_domain {
        return Err(Error::InvalidCertificate(CertificateError::NotValidForName));
    }
    Ok(id)
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        peer_identity(end_entity, &self.trust_domain)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("root");
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'_, KeyPair>, uris: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().expect("uri")))
            .collect();
        params.signed_by(&key, issuer).expect("leaf").der().clone()
    }

    fn verifier(root: CertificateDer<'static>) -> SpiffeServerVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(root).expect("root");
        SpiffeServerVerifier::new(
            Arc::new(roots),
            "cluster.local".into(),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    }

    fn check(v: &SpiffeServerVerifier, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let name = ServerName::try_from("127.0.0.1").expect("name");
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn accepts_a_spiffe_leaf_of_the_bundle_without_any_dns_name() {
        let (root, issuer) = ca();
        let v = verifier(root);
        let cert = leaf(&issuer, &["spiffe://cluster.local/ns/shop/sa/orders"]);
        assert!(check(&v, &cert).is_ok());
    }

    #[test]
    fn refuses_other_cas_other_trust_domains_and_ambiguous_names() {
        let (root, issuer) = ca();
        let (_, other) = ca();
        let v = verifier(root);
        let foreign = leaf(&other, &["spiffe://cluster.local/ns/shop/sa/orders"]);
        assert!(matches!(
            check(&v, &foreign),
            // Both test roots share rcgen's default name, so webpki finds the wrong
            // root by name and the signature check is what fails.
            Err(Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            ))
        ));
        let elsewhere = leaf(&issuer, &["spiffe://other.example/ns/shop/sa/orders"]);
        assert!(check(&v, &elsewhere).is_err());
        let two = leaf(
            &issuer,
            &[
                "spiffe://cluster.local/ns/shop/sa/orders",
                "spiffe://cluster.local/ns/shop/sa/admin",
            ],
        );
        assert!(check(&v, &two).is_err());
        assert!(uri_san(&two).is_none());
    }
}
