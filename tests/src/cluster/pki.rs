//! The cluster's own keys and certificates: one CA that signs every serving and client
//! certificate, and the ServiceAccount token signing key. Written as PEM files into
//! the cluster's directory, where the components read them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The first address of the Service range: the `kubernetes` Service's cluster IP,
/// which in-cluster clients dial, so it is in the apiserver's certificate.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the components are started with.
pub struct Pki {
    pub ca: CertFiles,
    pub ca_pem: String,
    pub apiserver: CertFiles,
    pub controller_manager_serving: CertFiles,
    pub scheduler_serving: CertFiles,
    pub admin: CertFiles,
    pub controller_manager: CertFiles,
    pub scheduler: CertFiles,
    /// The ServiceAccount token signing key (ECDSA P-256, PKCS#8) and its public
    /// half (the apiserver reads only SEC1 or PKIX EC keys as verification keys).
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    /// The certificate and key the harness itself presents when probing readiness.
    pub admin_der: (Vec<u8>, Vec<u8>),
    pub ca_der: Vec<u8>,
}

/// A certificate authority that signs test certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

/// What [`Ca::create`] wrote: the CA's files, its certificate as PEM and DER.
pub struct CaFiles {
    pub files: CertFiles,
    pub pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    /// A new self-signed CA named `common_name`, written to `dir/<stem>.crt` and
    /// `dir/<stem>.key`.
    pub fn create(dir: &Path, stem: &str, common_name: &str) -> anyhow::Result<(Ca, CaFiles)> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key)?;
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        let pem = ca_cert.pem();
        std::fs::write(&files.cert, &pem)?;
        std::fs::write(&files.key, ca_key.serialize_pem())?;
        let der = ca_cert.der().to_vec();
        let ca = Ca {
            issuer: Issuer::new(params, ca_key),
        };
        Ok((ca, CaFiles { files, pem, der }))
    }

    fn sign(
        &self,
        dir: &Path,
        name: &str,
        params: CertificateParams,
    ) -> anyhow::Result<(CertFiles, Vec<u8>, Vec<u8>)> {
        let key = KeyPair::generate()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the {name} certificate"))?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem())?;
        std::fs::write(&files.key, key.serialize_pem())?;
        Ok((files, cert.der().to_vec(), key.serialize_der()))
    }

    /// A client certificate for user `user` in `groups` (the apiserver reads the
    /// common name as the user and the organizations as groups).
    fn client(
        &self,
        dir: &Path,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<(CertFiles, Vec<u8>, Vec<u8>)> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(dir, name, params)
    }

    /// A serving certificate for `names` and `ips`, written to `dir/<name>.crt`
    /// and `dir/<name>.key`.
    pub fn server(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
        ips: &[IpAddr],
    ) -> anyhow::Result<CertFiles> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        Ok(self.sign(dir, name, params)?.0)
    }
}

/// Creates the CA and everything it signs in `dir`. `api_ips` are the addresses the
/// apiserver is reached at (besides loopback and the `kubernetes` Service IP).
pub fn create(dir: &Path, api_ips: &[IpAddr]) -> anyhow::Result<Pki> {
    let (ca, ca_files) = Ca::create(dir, "ca", "weft test cluster CA")?;
    let CaFiles {
        files: ca_files,
        pem: ca_pem,
        der: ca_der,
    } = ca_files;

    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut ips = vec![loopback, IpAddr::V4(KUBERNETES_SERVICE_IP)];
    for ip in api_ips {
        if !ips.contains(ip) && !ip.is_unspecified() {
            ips.push(*ip);
        }
    }
    let apiserver = ca.server(
        dir,
        "apiserver",
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        &ips,
    )?;
    let controller_manager_serving = ca.server(
        dir,
        "controller-manager-serving",
        &["localhost"],
        &[loopback],
    )?;
    let scheduler_serving = ca.server(dir, "scheduler-serving", &["localhost"], &[loopback])?;
    let (admin, admin_cert_der, admin_key_der) =
        ca.client(dir, "admin", "weft-test-admin", &["system:masters"])?;
    let (controller_manager, ..) = ca.client(
        dir,
        "controller-manager",
        "system:kube-controller-manager",
        &[],
    )?;
    let (scheduler, ..) = ca.client(dir, "scheduler", "system:kube-scheduler", &[])?;

    let sa_key = KeyPair::generate()?;
    let service_account_key = dir.join("service-account.key");
    std::fs::write(&service_account_key, sa_key.serialize_pem())?;
    let service_account_public_key = dir.join("service-account.pub");
    std::fs::write(&service_account_public_key, sa_key.public_key_pem())?;

    Ok(Pki {
        ca: ca_files,
        ca_pem,
        apiserver,
        controller_manager_serving,
        scheduler_serving,
        admin,
        controller_manager,
        scheduler,
        service_account_key,
        service_account_public_key,
        admin_der: (admin_cert_der, admin_key_der),
        ca_der,
    })
}
