//! The mesh's certificate authority: an issuing CA that signs short-lived workload
//! certificates carrying exactly one URI SAN, the workload's SPIFFE ID.
//!
//! The issuing CA comes from operator-provided files or, for local use, is an ECDSA
//! P-256 root generated on first start and kept in the state directory so a restart
//! keeps the same trust. An operator's issuing CA may be the root itself or an
//! intermediate below it (as cert-manager's CA Secrets have it: `tls.crt` the
//! issuing CA, perhaps followed by its chain, `ca.crt` the root). Proxies then get the
//! root as their trust bundle, and every certificate goes out with the
//! intermediates after it, so a peer can build the path to the root.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use weft_api::spiffe::SpiffeId;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
/// Leaves start a little in the past so a peer whose clock lags accepts them.
const BACKDATE: Duration = Duration::from_secs(60);
/// The subject CN of a development root, in a state directory or a Secret.
pub const DEVELOPMENT_CA_NAME: &str = "Weft development CA";
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR cannot be parsed or its signature is invalid: {0}")]
    BadCsr(String),
    #[error("the CSR must ask for exactly one URI SAN, {0}, and nothing else")]
    WrongNames(String),
    #[error("the CSR asks for a CA certificate")]
    AsksForCa,
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A signed leaf and what the proxy needs beside it.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf first.
    pub chain_pem: Vec<String>,
    pub not_after: SystemTime,
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The trust anchor: the issuing CA itself when it is self-signed.
    root_pem: String,
    /// Sent after every leaf: the issuing CA and any intermediates above it, up to
    /// (not including) the root. Empty when the issuing CA is the root.
    chain_pem: Vec<String>,
    /// Roots trusted beside ours, e.g. the next root during a root rotation.
    extra_roots: Vec<String>,
    lifetime: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// A new self-signed root: (certificate PEM, private key PEM).
pub fn generate_root(common_name: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Weft");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl CertificateAuthority {
    /// From an operator's self-signed issuing CA: certificate and key (PEM files).
    pub fn from_files(cert: &Path, key: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        Self::from_files_with_root(cert, key, None, lifetime)
    }

    /// From an operator's issuing CA (certificate, perhaps followed by its chain, and
    /// key) and, when the issuing CA is not itself the root, the root's certificate.
    pub fn from_files_with_root(
        cert: &Path,
        key: &Path,
        root: Option<&Path>,
        lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the CA certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading the CA key {}", key.display()))?;
        let root_pem = root
            .map(|root| {
                std::fs::read_to_string(root)
                    .with_context(|| format!("reading the root certificate {}", root.display()))
            })
            .transpose()?;
        Self::from_pem_with_root(&cert_pem, &key_pem, root_pem.as_deref(), lifetime)
            .with_context(|| format!("loading the CA from {}", cert.display()))
    }

    /// Loads the development CA from `state_dir`, generating it on first start.
    pub fn development(state_dir: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        if !cert_path.exists() {
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
            let (cert, key) = generate_root(DEVELOPMENT_CA_NAME)?;
            // The key is published first and the certificate last, so whoever sees the
            // certificate finds its key beside it.
            if crate::identity::publish(&key_path, &key, true)? {
                crate::identity::publish(&cert_path, &cert, false)?;
                tracing::warn!(
                    cert = %cert_path.display(),
                    "DEVELOPMENT CA generated: its key is a plain file in the state directory; \
                     give a real root with --ca-cert/--ca-key (WEFT_CA_CERT/WEFT_CA_KEY) in production"
                );
            } else {
                // Another process sharing the state directory is creating it.
                wait_for(&cert_path)?;
            }
        } else {
            tracing::warn!(
                cert = %cert_path.display(),
                "using the DEVELOPMENT CA from the state directory; not for production"
            );
        }
        Self::from_files(&cert_path, &key_path, lifetime)
    }

    /// A self-signed issuing CA (the root itself).
    pub fn from_pem(cert_pem: &str, key_pem: &str, lifetime: Duration) -> anyhow::Result<Self> {
        Self::from_pem_with_root(cert_pem, key_pem, None, lifetime)
    }

    /// `cert_pem` is the issuing CA's certificate, optionally followed by the
    /// intermediates above it and the root; `root_pem` is the root when `cert_pem`
    /// does not end with it. The result is checked: a leaf it issues must verify
    /// against the root through the chain, so a wrong key or root fails here, at
    /// start, rather than in every proxy's handshake.
    pub fn from_pem_with_root(
        cert_pem: &str,
        key_pem: &str,
        root_pem: Option<&str>,
        lifetime: Duration,
    ) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            if key_pem.contains("-----BEGIN EC PRIVATE KEY-----")
                || key_pem.contains("-----BEGIN RSA PRIVATE KEY-----")
            {
                anyhow::anyhow!(
                    "the CA key must be PKCS#8 (\"BEGIN PRIVATE KEY\"); convert it with \
                     `openssl pkcs8 -topk8 -nocrypt`, or for cert-manager set \
                     `privateKey.encoding: PKCS8` on the Certificate"
                )
            } else {
                anyhow::anyhow!("parsing the CA key: {e}")
            }
        })?;
        let mut certs = pem_certificates(cert_pem).context("the CA certificate")?;
        let Some((issuer_pem, _)) = certs.first().cloned() else {
            anyhow::bail!("no PEM certificate in the CA certificate file");
        };
        let root = match root_pem {
            Some(pem) => {
                let mut roots = pem_certificates(pem).context("the root certificate")?;
                anyhow::ensure!(
                    roots.len() == 1,
                    "the root certificate file must hold one certificate, not {}",
                    roots.len()
                );
                roots.remove(0)
            }
            None => match certs.last() {
                Some((pem, der)) if self_signed(der)? => (pem.clone(), der.clone()),
                _ => anyhow::bail!(
                    "the issuing CA is not self-signed and its chain does not end in a \
                     root; give the root certificate with --ca-root (WEFT_CA_ROOT)"
                ),
            },
        };
        certs.retain(|(_, der)| *der != root.1);
        let issuer =
            Issuer::from_ca_cert_pem(&issuer_pem, key).context("parsing the CA certificate")?;
        let ca = CertificateAuthority {
            issuer,
            root_pem: root.0,
            chain_pem: certs.into_iter().map(|(pem, _)| pem).collect(),
            extra_roots: Vec::new(),
            lifetime,
        };
        ca.check_chain()?;
        Ok(ca)
    }

    /// Issues a throwaway leaf and verifies it the way a peer proxy does.
    fn check_chain(&self) -> anyhow::Result<()> {
        use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject as _};
        let probe = SpiffeId::new("weft.invalid", "weft", "chain-check")
            .map_err(|e| anyhow::anyhow!("probe identity: {e}"))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            probe
                .to_string()
                .try_into()
                .context("probe identity as a URI")?,
        )];
        let csr = params
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .context("probe CSR")?;
        let issued = self
            .issue(&csr, &probe)
            .context("the CA cannot sign with this key")?;
        let ders = |pems: &[String]| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            pems.iter()
                .flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes()))
                .collect::<Result<_, _>>()
                .context("parsing a certificate")
        };
        let chain = ders(&issued.chain_pem)?;
        let (leaf, intermediates) = chain.split_first().context("empty chain")?;
        let mut roots = rustls::RootCertStore::empty();
        for root in ders(std::slice::from_ref(&self.root_pem))? {
            roots.add(root).context("the root certificate")?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .context("building a verifier")?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                anyhow::anyhow!(
                    "a certificate from this CA does not verify against the root: {e} \
                     (is the key the CA certificate's, and --ca-root its root?)"
                )
            })?;
        Ok(())
    }

    /// Trusts the roots in `pem` (one or more certificates) beside this CA's own.
    pub fn with_extra_roots(mut self, pem: &str) -> anyhow::Result<Self> {
        let roots = pem_certificates(pem).context("an extra root")?;
        anyhow::ensure!(
            !roots.is_empty(),
            "no PEM certificate among the extra roots"
        );
        self.extra_roots
            .extend(roots.into_iter().map(|(pem, _)| pem));
        Ok(self)
    }

    /// The certificates sent after a leaf: the issuing CA and the intermediates above
    /// it (empty when the issuing CA is the root).
    pub fn chain(&self) -> &[String] {
        &self.chain_pem
    }

    /// Every root proxies should trust: ours first, then the extra ones.
    pub fn bundle(&self) -> Vec<String> {
        std::iter::once(self.root_pem.clone())
            .chain(self.extra_roots.iter().cloned())
            .collect()
    }

    /// The root proxies verify peers against.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs `csr_pem` for `identity`. The CSR supplies only the public key; every
    /// other field of the leaf is ours, after checking that the CSR asked for exactly
    /// this identity (a mismatch means a confused or malicious caller).
    pub fn issue(&self, csr_pem: &str, identity: &SpiffeId) -> Result<Issued, IssueError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let uri = identity.to_string();
        let names_ok = matches!(csr.params.subject_alt_names.as_slice(),
            [SanType::URI(u)] if u.as_str() == uri);
        if !names_ok {
            return Err(IssueError::WrongNames(uri));
        }
        if !matches!(csr.params.is_ca, IsCa::NoCa | IsCa::ExplicitNoCa) {
            return Err(IssueError::AsksForCa);
        }
        let now = SystemTime::now();
        let not_after = now + self.lifetime;
        let mut params = CertificateParams::default();
        // No subject, as Istio's workload certificates: the SPIFFE ID in the SAN is
        // the identity, a CN could not hold a long one (64 characters at most), and
        // with an empty subject the SAN extension is marked critical (RFC 5280
        // §4.2.1.6).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(uri.clone().try_into().map_err(
                |e: rcgen::Error| IssueError::WrongNames(e.to_string()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| IssueError::Signing(e.to_string()))?;
        Ok(Issued {
            chain_pem: std::iter::once(leaf.pem())
                .chain(self.chain_pem.iter().cloned())
                .collect(),
            not_after,
        })
    }
}

/// A TLS server certificate's fields for the DNS names `dns`: the first is also the
/// common name (`CN=<name>, O=Weft`); server auth only.
pub(crate) fn serving_params(dns: &[String]) -> anyhow::Result<CertificateParams> {
    let first = dns
        .first()
        .context("a serving certificate needs a DNS name")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Weft");
    params.subject_alt_names = dns
        .iter()
        .map(|name| {
            Ok(SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("{name:?} is not a DNS name"))?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

impl CertificateAuthority {
    /// A serving certificate for the control plane's own gRPC endpoint: the DNS
    /// names `dns` (the first also its common name) and the IP addresses `ips`, key
    /// generated here. Returns (chain PEM, PKCS#8 key DER).
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
        lifetime: Duration,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
        let mut params = serving_params(dns)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + lifetime).into();
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the control plane's certificate")?;
        let chain: String = std::iter::once(cert.pem())
            .chain(self.chain_pem.iter().cloned())
            .collect();
        Ok((chain, key.serialize_der()))
    }
}

/// Each certificate in `pem`, as (its PEM block with a final newline, its DER).
fn pem_certificates(pem: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut found = Vec::new();
    for block in pem.split_inclusive("-----END CERTIFICATE-----") {
        if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
            let text = block[start..].trim();
            let (_, parsed) = x509_parser::pem::parse_x509_pem(text.as_bytes())
                .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
            parsed
                .parse_x509()
                .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
            found.push((format!("{text}\n"), parsed.contents));
        }
    }
    Ok(found)
}

/// Whether the certificate names itself as its issuer.
fn self_signed(der: &[u8]) -> anyhow::Result<bool> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok(cert.subject().as_raw() == cert.issuer().as_raw())
}

fn wait_for(path: &Path) -> anyhow::Result<()> {
    for _ in 0..100 {
        if path.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "{} has a CA key but no certificate; remove the key to generate a new CA",
        path.display()
    )
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, as RFC 5280 §4.1.2.2 wants.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(uris: &[&str]) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().expect("ia5")))
            .collect();
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    fn ca() -> CertificateAuthority {
        let (cert, key) = generate_root("test").expect("root");
        CertificateAuthority::from_pem(&cert, &key, Duration::from_secs(3600)).expect("ca")
    }

    #[test]
    fn issues_a_leaf_with_exactly_the_asked_identity() {
        let ca = ca();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
        let issued = ca.issue(&csr_for(&[&id.to_string()]), &id).expect("issued");
        let der = rustls_pem_der(&issued.chain_pem[0]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let san = cert
            .subject_alternative_name()
            .expect("ext")
            .expect("san present");
        assert_eq!(san.value.general_names.len(), 1);
        assert!(format!("{:?}", san.value.general_names[0]).contains(&id.to_string()));
        assert!(!cert.is_ca());
    }

    #[test]
    fn refuses_a_csr_for_another_or_an_extra_identity() {
        let ca = ca();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
        for uris in [
            vec!["spiffe://cluster.local/ns/shop/sa/admin"],
            vec![
                "spiffe://cluster.local/ns/shop/sa/orders",
                "spiffe://cluster.local/ns/shop/sa/admin",
            ],
            vec![],
        ] {
            assert!(matches!(
                ca.issue(&csr_for(&uris), &id),
                Err(IssueError::WrongNames(_))
            ));
        }
        assert!(matches!(
            ca.issue("not a csr", &id),
            Err(IssueError::BadCsr(_))
        ));
    }

    #[test]
    fn control_planes_starting_together_share_one_development_ca() {
        let dir = tempfile::tempdir().expect("dir");
        let roots: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        CertificateAuthority::development(dir.path(), Duration::from_secs(60))
                            .expect("ca")
                            .root_pem()
                            .to_string()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn development_ca_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let a = CertificateAuthority::development(dir.path(), Duration::from_secs(60)).expect("a");
        let b = CertificateAuthority::development(dir.path(), Duration::from_secs(60)).expect("b");
        assert_eq!(a.root_pem(), b.root_pem());
    }

    #[test]
    fn extra_roots_join_the_bundle_after_ours() {
        let (next, _) = generate_root("next").expect("next root");
        let ca = ca().with_extra_roots(&next).expect("extra");
        let bundle = ca.bundle();
        assert_eq!(bundle.len(), 2);
        assert_eq!(bundle[0], ca.root_pem());
        assert_eq!(bundle[1].trim(), next.trim());
        assert!(self::ca().with_extra_roots("no pem here").is_err());
    }

    /// A root and an intermediate issuing CA below it, as cert-manager's CA Secret
    /// holds them: (root PEM, intermediate PEM, intermediate key PEM).
    fn root_and_intermediate() -> (String, String, String) {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("root key");
        let mut root = CertificateParams::default();
        root.distinguished_name.push(DnType::CommonName, "root");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root, root_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("intermediate key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "issuing");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &root_issuer).expect("intermediate");
        (root_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// Verifies `chain` (leaf first) against `roots` as a peer proxy does.
    fn verifies(chain: &[String], roots: &[String]) -> Result<(), rustls::Error> {
        use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject as _};
        let der = |pems: &[String]| -> Vec<CertificateDer<'static>> {
            pems.iter()
                .flat_map(|p| CertificateDer::pem_slice_iter(p.as_bytes()))
                .collect::<Result<_, _>>()
                .expect("pem")
        };
        let mut store = rustls::RootCertStore::empty();
        for r in der(roots) {
            store.add(r).expect("root");
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            store.into(),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let chain = der(chain);
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn a_self_signed_issuing_ca_is_the_root_and_sends_no_chain() {
        let ca = ca();
        assert!(ca.chain().is_empty());
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
        let issued = ca.issue(&csr_for(&[&id.to_string()]), &id).expect("issued");
        assert_eq!(issued.chain_pem.len(), 1);
        verifies(&issued.chain_pem, &ca.bundle()).expect("leaf verifies against the root");
        // cert-manager's Secret for a self-signed CA: ca.crt is tls.crt again.
        let (cert, key) = generate_root("self-signed").expect("root");
        let ca = CertificateAuthority::from_pem_with_root(
            &cert,
            &key,
            Some(&cert),
            Duration::from_secs(60),
        )
        .expect("root given as its own root");
        assert!(ca.chain().is_empty());
        assert_eq!(ca.bundle(), vec![cert]);
    }

    #[test]
    fn an_intermediate_issuing_ca_hands_out_the_root_and_sends_the_intermediate() {
        let (root, intermediate, key) = root_and_intermediate();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
        // tls.crt = the intermediate, ca.crt = the root (--ca-root); and tls.crt =
        // intermediate followed by the root, without --ca-root.
        let with_root = CertificateAuthority::from_pem_with_root(
            &intermediate,
            &key,
            Some(&root),
            Duration::from_secs(3600),
        )
        .expect("intermediate with --ca-root");
        let bundled = CertificateAuthority::from_pem(
            &format!("{intermediate}{root}"),
            &key,
            Duration::from_secs(3600),
        )
        .expect("intermediate followed by its root");
        for ca in [with_root, bundled] {
            assert_eq!(ca.bundle(), vec![root.clone()], "proxies trust the root");
            assert_eq!(ca.chain(), std::slice::from_ref(&intermediate));
            let issued = ca.issue(&csr_for(&[&id.to_string()]), &id).expect("issued");
            assert_eq!(issued.chain_pem.len(), 2, "leaf, then the intermediate");
            verifies(&issued.chain_pem, &ca.bundle()).expect("leaf verifies through it");
            assert!(
                verifies(&issued.chain_pem[..1], &ca.bundle()).is_err(),
                "the leaf alone does not reach the root"
            );
            let (server_chain, _) = ca
                .issue_server(&["weft-control".into()], &[], Duration::from_secs(60))
                .expect("serving cert");
            assert_eq!(pem_certificates(&server_chain).expect("pem").len(), 2);
        }
    }

    #[test]
    fn a_ca_that_does_not_chain_to_its_root_is_refused_at_load() {
        let (root, intermediate, key) = root_and_intermediate();
        let (other_root, other_key) = generate_root("other").expect("other root");
        let err = CertificateAuthority::from_pem(&intermediate, &key, Duration::from_secs(60))
            .expect_err("no root");
        assert!(format!("{err:#}").contains("--ca-root"), "{err:#}");
        let err = CertificateAuthority::from_pem_with_root(
            &intermediate,
            &key,
            Some(&other_root),
            Duration::from_secs(60),
        )
        .expect_err("wrong root");
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
        let err = CertificateAuthority::from_pem_with_root(
            &intermediate,
            &other_key,
            Some(&root),
            Duration::from_secs(60),
        )
        .expect_err("wrong key");
        assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
    }

    #[test]
    fn a_sec1_key_is_refused_with_the_way_to_convert_it() {
        let (root, _) = generate_root("r").expect("root");
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n";
        let err =
            CertificateAuthority::from_pem(&root, sec1, Duration::from_secs(60)).expect_err("sec1");
        assert!(format!("{err:#}").contains("PKCS#8"), "{err:#}");
    }

    /// (subject RDNs as (attribute OID, value), whether the SAN extension is critical)
    /// of a PEM certificate, as x509-parser reads them.
    fn subject_and_san_criticality(pem: &str) -> (Vec<(String, String)>, Option<bool>) {
        let der = rustls_pem_der(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        let subject = cert
            .subject()
            .iter_attributes()
            .map(|a| {
                (
                    a.attr_type().to_id_string(),
                    a.as_str().expect("printable").to_string(),
                )
            })
            .collect();
        let san = cert
            .extensions()
            .iter()
            .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
            .map(|e| e.critical);
        (subject, san)
    }

    const CN: &str = "2.5.4.3";
    const O: &str = "2.5.4.10";

    #[test]
    fn certificates_have_weft_subjects_not_rcgens_default() {
        let dir = tempfile::tempdir().expect("dir");
        let ca =
            CertificateAuthority::development(dir.path(), Duration::from_secs(60)).expect("ca");
        let (root, _) = subject_and_san_criticality(ca.root_pem());
        assert_eq!(
            root,
            [
                (CN.to_string(), "Weft development CA".to_string()),
                (O.to_string(), "Weft".to_string())
            ]
        );
        // A leaf names nothing in its subject: the SPIFFE ID is the critical SAN.
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders").expect("id");
        let issued = ca.issue(&csr_for(&[&id.to_string()]), &id).expect("issued");
        let (leaf, san_critical) = subject_and_san_criticality(&issued.chain_pem[0]);
        assert!(leaf.is_empty(), "leaf subject: {leaf:?}");
        assert_eq!(san_critical, Some(true));
        let (server, _) = ca
            .issue_server(
                &["weft-control.weft-system.svc".into()],
                &[],
                Duration::from_secs(60),
            )
            .expect("serving cert");
        let (server, san_critical) = subject_and_san_criticality(&server);
        assert_eq!(
            server,
            [
                (CN.to_string(), "weft-control.weft-system.svc".to_string()),
                (O.to_string(), "Weft".to_string())
            ]
        );
        assert_eq!(san_critical, Some(false));
    }

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }
}
