//! The mesh's certificate authority: an ECDSA P-256 root that signs short-lived
//! workload certificates carrying exactly one URI SAN, the workload's SPIFFE ID.
//!
//! The root comes from operator-provided files or, for local use, is generated on
//! first start and kept in the state directory so a restart keeps the same trust.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType, SerialNumber,
};
use weft_api::spiffe::SpiffeId;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
/// Leaves start a little in the past so a peer whose clock lags accepts them.
const BACKDATE: Duration = Duration::from_secs(60);
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
    root_pem: String,
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
    /// From an operator's root certificate and key (PEM files).
    pub fn from_files(cert: &Path, key: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the CA certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading the CA key {}", key.display()))?;
        Self::from_pem(&cert_pem, &key_pem, lifetime)
            .with_context(|| format!("loading the CA from {}", cert.display()))
    }

    /// Loads the development CA from `state_dir`, generating it on first start.
    pub fn development(state_dir: &Path, lifetime: Duration) -> anyhow::Result<Self> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        if !cert_path.exists() {
            std::fs::create_dir_all(state_dir)
                .with_context(|| format!("creating the state directory {}", state_dir.display()))?;
            let (cert, key) = generate_root("Weft development CA")?;
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

    pub fn from_pem(cert_pem: &str, key_pem: &str, lifetime: Duration) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("parsing the CA key")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).context("parsing the CA certificate")?;
        Ok(CertificateAuthority {
            issuer,
            root_pem: cert_pem.to_string(),
            extra_roots: Vec::new(),
            lifetime,
        })
    }

    /// Trusts the roots in `pem` (one or more certificates) beside this CA's own.
    pub fn with_extra_roots(mut self, pem: &str) -> anyhow::Result<Self> {
        let mut found = 0;
        for block in pem.split_inclusive("-----END CERTIFICATE-----") {
            if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
                let cert = block[start..].trim().to_string();
                x509_parser::pem::parse_x509_pem(cert.as_bytes())
                    .map_err(|e| anyhow::anyhow!("an extra root is not a PEM certificate: {e}"))?;
                self.extra_roots.push(format!("{cert}\n"));
                found += 1;
            }
        }
        anyhow::ensure!(found > 0, "no PEM certificate among the extra roots");
        Ok(self)
    }

    /// Every root proxies should trust: ours first, then the extra ones.
    pub fn bundle(&self) -> Vec<String> {
        std::iter::once(self.root_pem.clone())
            .chain(self.extra_roots.iter().cloned())
            .collect()
    }

    /// The trust bundle proxies verify peers against.
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
            chain_pem: vec![leaf.pem()],
            not_after,
        })
    }
}

impl CertificateAuthority {
    /// A serving certificate for the control plane's own gRPC endpoint: DNS name
    /// `dns` and the IP addresses `ips`, key generated here. Returns (chain PEM,
    /// PKCS#8 key DER).
    pub fn issue_server(
        &self,
        dns: &str,
        ips: &[std::net::IpAddr],
        lifetime: Duration,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, dns);
        params.subject_alt_names = vec![SanType::DnsName(
            dns.to_string()
                .try_into()
                .with_context(|| format!("{dns:?} is not a DNS name"))?,
        )];
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + lifetime).into();
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("signing the control plane's certificate")?;
        Ok((cert.pem(), key.serialize_der()))
    }
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

    fn rustls_pem_der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(pem.as_bytes())
            .expect("pem")
            .to_vec()
    }
}
