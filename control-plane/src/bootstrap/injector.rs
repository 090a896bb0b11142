//! The injector's serving certificate and the webhook's caBundle.
//!
//! The API server calls the webhook at `<service>.<namespace>.svc` and trusts what
//! the webhook configuration's caBundle says. When the injector's Secret is absent,
//! the control plane makes one: a self-signed CA used for this one certificate (its
//! key is dropped at once) and the serving certificate it signs, `ca.crt` beside
//! them as cert-manager writes it. The webhook's trust is the API server's business,
//! not the mesh's, so the mesh CA stays out of it. Whatever the Secret holds, made
//! here, by cert-manager or by hand, its `ca.crt` is what every webhook of the
//! configuration gets as caBundle; it is re-checked periodically, so a re-applied or
//! replaced configuration, or a rotated Secret, is patched again.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::secret::{self, Origin, SecretRef};

/// Ten years: nothing here renews the certificate; delete the Secret to rotate it.
const LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const BACKDATE: Duration = Duration::from_secs(60);
/// Retries after an error start here and double up to the recheck interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What to bootstrap for the injector.
#[derive(Debug, Clone)]
pub struct InjectorBootstrap {
    /// The injector's serving-certificate Secret (created when absent).
    pub secret: SecretRef,
    /// The injector's Service, in the Secret's namespace: the names in the certificate.
    pub service: String,
    /// The MutatingWebhookConfiguration whose caBundle follows the Secret's `ca.crt`.
    pub webhook: Option<String>,
    /// How often the Secret and the caBundle are checked again.
    pub recheck: Duration,
}

impl InjectorBootstrap {
    /// The names the API server dials, short and with the default cluster domain.
    pub fn dns_names(&self) -> Vec<String> {
        let short = format!("{}.{}.svc", self.service, self.secret.namespace);
        vec![short.clone(), format!("{short}.cluster.local")]
    }

    /// Checks and repairs until the task is dropped: at once, then every `recheck`,
    /// sooner (with backoff) after an error.
    pub async fn run(self, client: kube::Client) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.reconcile(&client).await {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    self.recheck
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "injector bootstrap; retrying");
                    let wait = retry.min(self.recheck);
                    retry = (retry * 2).min(self.recheck);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One pass: the Secret exists, and every webhook's caBundle is its `ca.crt`.
    pub async fn reconcile(&self, client: &kube::Client) -> anyhow::Result<()> {
        let names = self.dns_names();
        let (found, origin) =
            secret::get_or_create(client, &self.secret, || serving_secret(&names)).await?;
        if origin == Origin::Created {
            tracing::info!(secret = %self.secret, ?names, "created the injector's serving certificate");
        }
        let Some(webhook) = &self.webhook else {
            return Ok(());
        };
        let bundle = secret::value(&found, "ca.crt").with_context(|| {
            format!(
                "Secret {} has no ca.crt, so the caBundle of {webhook} cannot be set from it; \
                 add ca.crt, or unset WEFT_INJECTOR_WEBHOOK and manage the caBundle yourself",
                self.secret
            )
        })?;
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let config = api.get(webhook).await.map_err(|e| {
            anyhow::anyhow!(
                "get MutatingWebhookConfiguration {webhook}: {}",
                describe(&e)
            )
        })?;
        if let Some((patch, stale)) = ca_bundle_patch(&config, bundle) {
            api.patch(webhook, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "patch MutatingWebhookConfiguration {webhook}: {}",
                        describe(&e)
                    )
                })?;
            tracing::info!(%webhook, webhooks = ?stale, "set the caBundle");
        }
        Ok(())
    }
}

/// A strategic-merge patch that sets `bundle` as the caBundle of every webhook in
/// `config` that has another, and those webhooks' names; None when all are right.
/// The patch carries the resourceVersion read, so it applies only to that version.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    bundle: &[u8],
) -> Option<(serde_json::Value, Vec<String>)> {
    let stale: Vec<String> = config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle))
        .map(|w| w.name.clone())
        .collect();
    if stale.is_empty() {
        return None;
    }
    let webhooks: Vec<serde_json::Value> = stale
        .iter()
        .map(|name| {
            serde_json::json!({
                "name": name,
                "clientConfig": { "caBundle": ByteString(bundle.to_vec()) },
            })
        })
        .collect();
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": config.metadata.resource_version },
        "webhooks": webhooks,
    });
    Some((patch, stale))
}

/// A `kubernetes.io/tls` Secret with a serving certificate for `names` (the first is
/// also its CN), its PKCS#8 key, and `ca.crt`, the throwaway CA that signed it.
pub fn serving_secret(names: &[String]) -> anyhow::Result<Secret> {
    let now = SystemTime::now();
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "Weft injector webhook CA");
    ca.distinguished_name.push(DnType::OrganizationName, "Weft");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = (now - BACKDATE).into();
    ca.not_after = (now + LIFETIME).into();
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("self-signing the webhook CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating a key")?;
    let mut params = crate::identity::ca::serving_params(names)?;
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LIFETIME).into();
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the webhook certificate")?;
    Ok(Secret {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(
                super::GENERATED_BY.to_string(),
                super::GENERATED_BY_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(secret::data(&[
            ("tls.crt", &cert.pem()),
            ("tls.key", &key.serialize_pem()),
            ("ca.crt", &ca_cert.pem()),
        ])),
        ..Secret::default()
    })
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if status.is_forbidden() => format!(
            "forbidden ({}); the control plane's ServiceAccount needs get and patch on it \
             (deploy/k8s/rbac.yaml)",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    fn bootstrap() -> InjectorBootstrap {
        InjectorBootstrap {
            secret: "weft-system/weft-injector-tls".parse().expect("ref"),
            service: "weft-injector".into(),
            webhook: Some("weft-injector".into()),
            recheck: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_serving_certificate_verifies_for_the_service_name_against_ca_crt() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _};
        let names = bootstrap().dns_names();
        assert_eq!(
            names,
            [
                "weft-injector.weft-system.svc",
                "weft-injector.weft-system.svc.cluster.local"
            ]
        );
        let secret = serving_secret(&names).expect("secret");
        let der = |key: &str| {
            CertificateDer::from_pem_slice(secret::value(&secret, key).expect("key")).expect("pem")
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der("ca.crt")).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = der("tls.crt");
        for name in &names {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(name.clone()).expect("name"),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("weft-control.weft-system.svc").expect("name"),
                    &[],
                    UnixTime::now(),
                )
                .is_err(),
            "only the injector's names"
        );
        let key =
            std::str::from_utf8(secret::value(&secret, "tls.key").expect("key")).expect("text");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        let subject = |der: &CertificateDer<'_>| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
            cert.subject().to_string()
        };
        assert_eq!(subject(&leaf), "CN=weft-injector.weft-system.svc, O=Weft");
        assert_eq!(
            subject(&der("ca.crt")),
            "CN=Weft injector webhook CA, O=Weft"
        );
    }

    fn config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some("weft-injector".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            webhooks: Some(
                bundles
                    .iter()
                    .enumerate()
                    .map(|(i, bundle)| MutatingWebhook {
                        name: format!("w{i}.inject.weft.io"),
                        client_config: WebhookClientConfig {
                            ca_bundle: bundle.map(|b| ByteString(b.to_vec())),
                            ..WebhookClientConfig::default()
                        },
                        ..MutatingWebhook::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn only_webhooks_with_another_ca_bundle_are_patched() {
        let ours: &[u8] = b"ours";
        assert!(ca_bundle_patch(&config(&[Some(ours), Some(ours)]), ours).is_none());
        let (patch, stale) =
            ca_bundle_patch(&config(&[Some(ours), None, Some(b"old")]), ours).expect("patch");
        assert_eq!(stale, ["w1.inject.weft.io", "w2.inject.weft.io"]);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        let webhooks = patch["webhooks"].as_array().expect("list");
        assert_eq!(webhooks.len(), 2);
        assert_eq!(webhooks[0]["name"], "w1.inject.weft.io");
        // base64 of "ours", as the API server expects bytes in JSON.
        assert_eq!(webhooks[1]["clientConfig"]["caBundle"], "b3Vycw==");
    }
}
