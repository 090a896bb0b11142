//! weft-control's first-install bootstrap against a real kube-apiserver (see
//! `weft_tests::cluster`): after `kubectl apply -k deploy/k8s` with no Secret made by
//! hand, weft-control, run on the host with nothing but the RBAC deploy/k8s gives
//! its ServiceAccount (a kubeconfig holding that account's token) and the settings
//! of its Deployment, creates the mesh CA and the injector's serving certificate,
//! sets the webhook's caBundle, and sets it again after the configuration is
//! replaced; two replicas started together agree on one CA; an operator's CA
//! Secret is used as it is, never written; and with development CAs turned off a
//! missing CA Secret stops weft-control instead.
//!
//! Each test starts a cluster of its own: the Secrets' names are fixed by the RBAC.
//! Skipped with a message without Go (the cluster is built from Go modules), failed
//! instead under `CI=true`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use weft_tests::bins;
use weft_tests::cluster::{Cluster, run_bounded};
use weft_tests::control::WeftControl;
use weft_tests::{STEP_DEADLINE, eventually};

/// How long weft-control may take to create a Secret or patch the caBundle
/// (`--injector-recheck 1s` below; CI shares two cores).
const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(30);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// A new cluster with deploy/k8s applied and its CRDs Established, or `None` when
/// the test is skipped.
fn installed(test: &str) -> Option<Cluster> {
    let cluster = Cluster::start(test).expect("starting the test cluster")?;
    cluster
        .kubectl(&["apply", "-k", &deploy_dir().to_string_lossy()])
        .expect("kubectl apply -k deploy/k8s");
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/trafficpolicies.weft.io",
            "crd/inboundauthorizations.weft.io",
        ])
        .expect("the CRDs are established");
    Some(cluster)
}

/// An API client with the cluster's admin kubeconfig, for the test's own reads.
async fn admin_client(cluster: &Cluster) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cluster.kubeconfig()).expect("admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("admin config");
    kube::Client::try_from(config).expect("admin client")
}

/// A kubeconfig in a new directory under `dir` holding a token of weft-control's
/// ServiceAccount, so exactly deploy/k8s's RBAC applies.
fn service_account_kubeconfig(cluster: &Cluster, dir: &Path, replica: &str) -> PathBuf {
    let dir = dir.join(replica);
    std::fs::create_dir_all(&dir).expect("dir");
    cluster
        .service_account_kubeconfig(&dir, "weft-system", "weft-control")
        .expect("the ServiceAccount's kubeconfig")
}

/// weft-control with the settings of its Deployment, as `kubeconfig`'s user.
async fn weft_control(kubeconfig: &Path) -> WeftControl {
    WeftControl::start_with_env(
        "services: []\n",
        &[
            "--source",
            "kubernetes",
            "--identity-proof",
            "kubernetes",
            "--grpc-tls",
            "--ca-secret",
            "weft-system/weft-identity-ca",
            "--injector-secret",
            "weft-system/weft-injector-tls",
            "--injector-service",
            "weft-injector",
            "--injector-webhook",
            "weft-injector",
            "--injector-recheck",
            "1s",
        ],
        &[("KUBECONFIG", &kubeconfig.to_string_lossy())],
    )
    .await
    .expect("weft-control starts")
}

fn value<'a>(secret: &'a Secret, key: &str) -> &'a [u8] {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
        .unwrap_or_else(|| panic!("Secret has no {key}"))
}

/// Polls until Secret weft-system/`name` exists.
async fn secret(client: &kube::Client, name: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), "weft-system");
    eventually(BOOTSTRAP_DEADLINE, &format!("Secret {name} exists"), || {
        let api = api.clone();
        async move { api.get_opt(name).await.ok().flatten() }
    })
    .await
}

/// Polls until every webhook of `weft-injector` has `bundle` as its caBundle.
async fn ca_bundle_becomes(client: &kube::Client, bundle: &[u8], what: &str) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    eventually(BOOTSTRAP_DEADLINE, what, || {
        let api = api.clone();
        async move {
            let config = api.get("weft-injector").await.ok()?;
            let webhooks = config.webhooks.unwrap_or_default();
            let all = webhooks.len() == 2
                && webhooks.iter().all(|w| {
                    w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle)
                });
            all.then_some(())
        }
    })
    .await;
}

/// Completes a TLS handshake with `cp`'s gRPC port trusting only `root_pem`: its
/// serving certificate was issued by the CA under that root.
async fn serves_under(cp: &WeftControl, root_pem: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(cp.grpc())
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("weft-control").map_err(|e| e.to_string())?;
    tokio::time::timeout(STEP_DEADLINE, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_install_needs_no_hand_made_secret_and_two_replicas_agree_on_one_ca() {
    let Some(cluster) = installed("bootstrap: first install") else {
        return;
    };
    let client = admin_client(&cluster).await;
    let dir = tempfile::tempdir().expect("dir");
    // Both replicas at once, as a Deployment's two pods start.
    let (config_a, config_b) = (
        service_account_kubeconfig(&cluster, dir.path(), "a"),
        service_account_kubeconfig(&cluster, dir.path(), "b"),
    );
    let (mut a, mut b) = tokio::join!(weft_control(&config_a), weft_control(&config_b));

    let ca = secret(&client, "weft-identity-ca").await;
    assert_eq!(
        ca.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("weft.io/generated-by"))
            .map(String::as_str),
        Some("weft-control")
    );
    let root = value(&ca, "ca.crt").to_vec();
    assert_eq!(
        root,
        value(&ca, "tls.crt"),
        "a self-signed development root"
    );
    for (name, cp) in [("a", &a), ("b", &b)] {
        serves_under(cp, &root)
            .await
            .unwrap_or_else(|e| panic!("replica {name} does not use the Secret's CA: {e}"));
    }
    let logs = format!("{}{}", a.output(), b.output());
    assert_eq!(
        count(&logs, "generated a DEVELOPMENT CA"),
        1,
        "exactly one replica generated the CA:\n{logs}"
    );

    let injector = secret(&client, "weft-injector-tls").await;
    let bundle = value(&injector, "ca.crt").to_vec();
    for key in ["tls.crt", "tls.key"] {
        assert!(!value(&injector, key).is_empty(), "{key}");
    }
    ca_bundle_becomes(&client, &bundle, "both webhooks get the injector's ca.crt").await;

    // Re-creating the configuration from the manifest (no caBundle in it) is repaired.
    cluster
        .kubectl(&[
            "replace",
            "-f",
            &deploy_dir().join("webhook.yaml").to_string_lossy(),
        ])
        .expect("kubectl replace webhook.yaml");
    ca_bundle_becomes(
        &client,
        &bundle,
        "the replaced configuration is patched again",
    )
    .await;

    // Later restarts, and the other replica meanwhile, kept the same Secrets.
    let again = secret(&client, "weft-identity-ca").await;
    assert_eq!(again.metadata.uid, ca.metadata.uid);
    assert_eq!(value(&again, "ca.crt"), root.as_slice());
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_ca_secret_is_used_and_never_written() {
    let Some(cluster) = installed("bootstrap: operator CA") else {
        return;
    };
    let client = admin_client(&cluster).await;
    let dir = tempfile::tempdir().expect("dir");

    // With development CAs turned off (as for cert-manager), a CA Secret that is not
    // there yet stops weft-control instead of being filled with a development CA.
    let kubeconfig = service_account_kubeconfig(&cluster, dir.path(), "no-dev-ca");
    let mut cmd = std::process::Command::new(bins::binary("weft-control").expect("binary"));
    cmd.args([
        "serve",
        "--source",
        "file",
        "--mesh",
        "/dev/null",
        "--grpc",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--ca-secret",
        "weft-system/weft-identity-ca",
        "--generate-dev-ca",
        "false",
    ])
    .env("KUBECONFIG", &kubeconfig)
    .env_remove("WEFT_LOG");
    let out = run_bounded(cmd, None, STEP_DEADLINE).expect("weft-control runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Secret weft-system/weft-identity-ca does not exist"),
        "{stderr}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "weft-system");
    assert!(
        secrets
            .get_opt("weft-identity-ca")
            .await
            .expect("get")
            .is_none(),
        "no development CA was generated"
    );

    // A root and an issuing intermediate below it, as cert-manager's CA Secret holds
    // them (tls.crt the intermediate, ca.crt the root).
    let (root_pem, issuing_pem, issuing_key) = root_and_intermediate();
    for (name, text) in [
        ("root.crt", &root_pem),
        ("issuing.crt", &issuing_pem),
        ("issuing.key", &issuing_key),
    ] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    cluster
        .kubectl(&[
            "-n",
            "weft-system",
            "create",
            "secret",
            "generic",
            "weft-identity-ca",
            "--type=kubernetes.io/tls",
            &format!("--from-file=tls.crt={}", file("issuing.crt")),
            &format!("--from-file=tls.key={}", file("issuing.key")),
            &format!("--from-file=ca.crt={}", file("root.crt")),
        ])
        .expect("the operator's Secret");
    let before = secret(&client, "weft-identity-ca").await;

    let mut cp = weft_control(&service_account_kubeconfig(&cluster, dir.path(), "cp")).await;
    serves_under(&cp, root_pem.as_bytes())
        .await
        .expect("weft-control's certificate chains to the operator's root");
    // The injector's Secret is still bootstrapped beside it.
    let injector = secret(&client, "weft-injector-tls").await;
    ca_bundle_becomes(&client, value(&injector, "ca.crt"), "caBundle set").await;

    let after = secret(&client, "weft-identity-ca").await;
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the operator's Secret was written"
    );
    assert_eq!(after.data, before.data);
    let logs = cp.output();
    assert_eq!(count(&logs, "DEVELOPMENT CA"), 0, "{logs}");
    assert!(
        logs.contains("issuing CA from the operator's Secret"),
        "{logs}"
    );
    cp.stop().await.expect("stops");
}

/// (root PEM, intermediate PEM, intermediate PKCS#8 key PEM).
fn root_and_intermediate() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let ca_params = |cn: &str, constraint| {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(constraint);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let root = ca_params("operator root", BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).expect("root");
    let issuer = Issuer::new(root, root_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = ca_params("operator issuing CA", BasicConstraints::Constrained(0))
        .signed_by(&key, &issuer)
        .expect("intermediate");
    (root_cert.pem(), cert.pem(), key.serialize_pem())
}
