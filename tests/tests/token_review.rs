//! Kubernetes ServiceAccount tokens as proof of identity, against a stand-in API
//! server over real HTTPS on loopback: first the TokenReview proof as a library
//! (accepted, rejected, wrong audience, another account's token, API server down,
//! slow or refusing us), then weft-control `serve --identity-proof kubernetes` and a
//! weft-proxy that proves itself with a token file.

use std::path::Path;
use std::time::Duration;

use weft_api::v1::certify_request::Proof;
use weft_control::identity::proof::{IdentityProof, ProofError, Workload};
use weft_control::identity::token_review::TokenReviewer;
use weft_tests::apiserver::{ApiServer, CALLER_TOKEN, Mode, TOKEN_REVIEW_PATH};
use weft_tests::control::WeftControl;
use weft_tests::proxy::{ProxyConfig, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually, within};

const ORDERS_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.orders-weft.sig";
const ADMIN_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.admin-weft.sig";
/// The pod's ordinary API token: valid, but for the API server's audience.
const ORDERS_API_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.orders-api.sig";
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

fn orders() -> Workload {
    Workload {
        namespace: "shop".into(),
        service_account: "orders".into(),
    }
}

fn token(t: &str) -> Proof {
    Proof::ServiceAccountToken(t.to_string())
}

async fn stand_in() -> ApiServer {
    let api = ApiServer::start().await.expect("start the stand-in");
    api.add_service_account_token(ORDERS_TOKEN, "shop", "orders", &["weft"]);
    api.add_service_account_token(ADMIN_TOKEN, "shop", "admin", &["weft"]);
    api.add_service_account_token(ORDERS_API_TOKEN, "shop", "orders", &[API_AUDIENCE]);
    api
}

async fn reviewer(kubeconfig: &Path, timeout: Duration) -> TokenReviewer {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    TokenReviewer::from_config(config, "weft".into(), timeout).expect("reviewer")
}

/// A stand-in API server and a reviewer that asks it (the kubeconfig lives in the
/// returned directory, kept for the test's life).
async fn reviewing() -> (ApiServer, TokenReviewer, tempfile::TempDir) {
    let api = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.write_kubeconfig(dir.path()).expect("kubeconfig");
    let r = reviewer(&kubeconfig, STEP_DEADLINE).await;
    (api, r, dir)
}

async fn verify(r: &TokenReviewer, proof: Proof) -> Result<(), ProofError> {
    within(
        STEP_DEADLINE,
        "a TokenReview",
        r.verify(Some(&proof), &orders()),
    )
    .await
}

fn rejected_because(result: Result<(), ProofError>, why: &str) {
    match result {
        Err(ProofError::Rejected(msg)) => assert!(msg.contains(why), "{msg:?} lacks {why:?}"),
        other => panic!("expected a rejection ({why}), got {other:?}"),
    }
}

fn unavailable_because(result: Result<(), ProofError>, why: &str) {
    match result {
        Err(ProofError::Unavailable(msg)) => assert!(msg.contains(why), "{msg:?} lacks {why:?}"),
        other => panic!("expected unavailable ({why}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_of_the_claimed_account_for_our_audience_is_accepted() {
    let (api, r, _dir) = reviewing().await;

    verify(&r, token(ORDERS_TOKEN))
        .await
        .expect("the orders token proves shop/orders");

    let received = api.received();
    assert_eq!(received.len(), 1, "one TokenReview per proof");
    let req = &received[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, TOKEN_REVIEW_PATH);
    assert_eq!(
        req.authorization.as_deref(),
        Some(format!("Bearer {CALLER_TOKEN}").as_str()),
        "the control plane authenticates as itself"
    );
    assert!(
        req.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        req.content_type
    );
    assert_eq!(req.body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(req.body["kind"], "TokenReview");
    assert_eq!(req.body["spec"]["token"], ORDERS_TOKEN);
    assert_eq!(req.body["spec"]["audiences"], serde_json::json!(["weft"]));
}

#[tokio::test]
async fn an_invalid_token_is_rejected_with_the_api_servers_reason() {
    let (_api, r, _dir) = reviewing().await;

    rejected_because(
        verify(&r, token("eyJhbGciOiJSUzI1NiJ9.forged.sig")).await,
        "invalid bearer token",
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_rejected() {
    let (api, r, _dir) = reviewing().await;

    // The API server itself refuses it for our audience...
    rejected_because(
        verify(&r, token(ORDERS_API_TOKEN)).await,
        "target audiences",
    );
    // ...and if an authenticator ignored the audience we asked for, the answer's
    // audiences still give it away.
    api.set_mode(Mode::AudienceUnaware);
    rejected_because(
        verify(&r, token(ORDERS_API_TOKEN)).await,
        "not for the audience",
    );
    verify(&r, token(ORDERS_TOKEN))
        .await
        .expect("a weft-audience token still passes");
}

#[tokio::test]
async fn a_token_of_another_service_account_proves_only_that_account() {
    let (_api, r, _dir) = reviewing().await;

    rejected_because(
        verify(&r, token(ADMIN_TOKEN)).await,
        "system:serviceaccount:shop:admin",
    );
    let admin = Workload {
        namespace: "shop".into(),
        service_account: "admin".into(),
    };
    within(
        STEP_DEADLINE,
        "a TokenReview",
        r.verify(Some(&token(ADMIN_TOKEN)), &admin),
    )
    .await
    .expect("it does prove shop/admin");
}

#[tokio::test]
async fn no_request_is_made_for_a_missing_or_local_proof() {
    let (api, r, _dir) = reviewing().await;

    assert!(matches!(
        r.verify(None, &orders()).await,
        Err(ProofError::Missing)
    ));
    assert!(matches!(
        r.verify(Some(&token("  ")), &orders()).await,
        Err(ProofError::Missing)
    ));
    assert!(matches!(
        r.verify(Some(&Proof::LocalToken("weft1.00".into())), &orders())
            .await,
        Err(ProofError::Unsupported(_))
    ));
    assert!(api.received().is_empty());
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_not_a_rejection() {
    let dir = tempfile::tempdir().expect("dir");
    let api = stand_in().await;
    let path = weft_tests::apiserver::kubeconfig(
        dir.path(),
        &format!("https://{}", weft_tests::ports::closed_addr()),
        &api.ca_pem,
    )
    .expect("kubeconfig");
    let r = reviewer(&path, Duration::from_secs(2)).await;

    unavailable_because(verify(&r, token(ORDERS_TOKEN)).await, "TokenReview failed");
}

#[tokio::test]
async fn a_slow_api_server_is_unavailable_after_the_timeout() {
    let api = stand_in().await;
    api.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().expect("dir");
    let r = reviewer(
        &api.write_kubeconfig(dir.path()).expect("kubeconfig"),
        Duration::from_millis(500),
    )
    .await;

    // `verify` bounds the wait itself; STEP_DEADLINE only keeps a broken timeout
    // from hanging the test.
    unavailable_because(verify(&r, token(ORDERS_TOKEN)).await, "did not answer");
    assert_eq!(api.received().len(), 1, "the request did arrive");
}

#[tokio::test]
async fn an_api_server_refusing_the_control_plane_is_unavailable() {
    let api = stand_in().await;
    api.set_mode(Mode::Forbidden);
    let dir = tempfile::tempdir().expect("dir");
    let r = reviewer(
        &api.write_kubeconfig(dir.path()).expect("kubeconfig"),
        STEP_DEADLINE,
    )
    .await;

    unavailable_because(verify(&r, token(ORDERS_TOKEN)).await, "403");
}

const MESH: &str = "services:\n  - name: placeholder\n    endpoints: []\n";

/// The identity section of a proxy claiming `shop/orders` with a token file.
fn orders_identity(cp: &WeftControl, token_file: &Path) -> String {
    format!(
        "node: {{namespace: shop, service_account: orders}}\nidentity:\n  \
         trust_domain: cluster.local\n  token_file: \"{}\"\n  control_plane: \"{}\"\n",
        token_file.display(),
        cp.url()
    )
}

async fn metric(admin: std::net::SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let reply = weft_tests::admin::get(admin, "/metrics").await.ok()?;
    Some(weft_tests::metrics::Metrics::parse(&reply.body).value(name, labels))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_its_own_identity_with_its_service_account_token_and_none_with_another() {
    let api = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.write_kubeconfig(dir.path()).expect("kubeconfig");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let cp = WeftControl::start_with_env(
        MESH,
        &["--identity-proof", "kubernetes"],
        &[("KUBECONFIG", &kubeconfig), ("WEFT_TOKEN_AUDIENCE", "weft")],
    )
    .await
    .expect("start weft-control with the TokenReview proof");

    // Its own token: a certificate, so the proxy becomes ready.
    let orders_file = dir.path().join("orders-token");
    std::fs::write(&orders_file, format!("{ORDERS_TOKEN}\n")).expect("token file");
    let mut config = ProxyConfig::new();
    config.extra = orders_identity(&cp, &orders_file);
    let proxy = WeftProxy::start_named("orders-proxy", config)
        .await
        .expect("the proxy gets a certificate and is ready");
    let expiry = metric(
        proxy.admin(),
        "weft_identity_cert_expiry_timestamp_seconds",
        &[],
    )
    .await
    .expect("metrics");
    assert!(expiry > 0.0, "a certificate is installed");
    assert!(
        api.received()
            .iter()
            .any(|r| r.body["spec"]["token"] == ORDERS_TOKEN
                && r.body["spec"]["audiences"] == serde_json::json!(["weft"])),
        "weft-control reviewed the proxy's token for audience weft"
    );

    // Another account's token: refused, so no certificate and not ready; it keeps
    // asking, and a rotated (now valid) token in the same file is picked up.
    let stolen_file = dir.path().join("stolen-token");
    std::fs::write(&stolen_file, ADMIN_TOKEN).expect("token file");
    let mut config = ProxyConfig::new();
    config.extra = orders_identity(&cp, &stolen_file);
    let admin = config.admin;
    let path = dir.path().join("impostor.yaml");
    std::fs::write(&path, config.to_yaml()).expect("write config");
    let cmd = weft_tests::proxy::proxy_command(&["run", "--config", &path.to_string_lossy()])
        .expect("command");
    let mut impostor =
        weft_tests::process::Process::spawn("impostor-proxy", cmd, dir.path()).expect("spawn");
    eventually(
        STEP_DEADLINE,
        "two refused certificate requests",
        || async {
            (metric(
                admin,
                "weft_identity_renewals_total",
                &[("result", "error")],
            )
            .await?
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    let ready = weft_tests::admin::get(admin, "/ready")
        .await
        .expect("ready");
    assert_eq!(ready.status, 503, "no certificate, not ready");
    assert_eq!(
        metric(admin, "weft_identity_cert_expiry_timestamp_seconds", &[]).await,
        Some(0.0)
    );
    let denied = metric(
        cp.admin(),
        "weft_control_certificates_total",
        &[("result", "denied")],
    )
    .await
    .expect("control plane metrics");
    assert!(denied >= 2.0, "denied {denied}");

    std::fs::write(&stolen_file, ORDERS_TOKEN).expect("rotate the token");
    weft_tests::admin::wait_ready(&mut impostor, admin, STEP_DEADLINE)
        .await
        .expect("ready once its token file holds its own token");

    // The tokens never reach the control plane's log.
    let log = cp.output();
    for t in [ORDERS_TOKEN, ADMIN_TOKEN] {
        assert!(!log.contains(t), "token in the control plane's log");
    }
    assert!(log.contains("certificate refused"), "refusals are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_waits_out_an_api_server_that_does_not_answer() {
    let api = stand_in().await;
    api.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = api.write_kubeconfig(dir.path()).expect("kubeconfig");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let cp = WeftControl::start_with_env(
        MESH,
        &[
            "--identity-proof",
            "kubernetes",
            "--token-review-timeout",
            "1s",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await
    .expect("start weft-control with the TokenReview proof");
    let token_file = dir.path().join("orders-token");
    std::fs::write(&token_file, ORDERS_TOKEN).expect("token file");
    let mut config = ProxyConfig::new();
    config.extra = orders_identity(&cp, &token_file);
    let admin = config.admin;
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config.to_yaml()).expect("write config");
    let cmd = weft_tests::proxy::proxy_command(&["run", "--config", &path.to_string_lossy()])
        .expect("command");
    let mut proxy =
        weft_tests::process::Process::spawn("orders-proxy", cmd, dir.path()).expect("spawn");

    // Certify answers UNAVAILABLE (not a refusal) while the API server is silent...
    eventually(STEP_DEADLINE, "two unanswered TokenReviews", || async {
        (metric(
            cp.admin(),
            "weft_control_certificates_total",
            &[("result", "unavailable")],
        )
        .await?
            >= 2.0)
            .then_some(())
    })
    .await;
    let ready = weft_tests::admin::get(admin, "/ready")
        .await
        .expect("ready");
    assert_eq!(ready.status, 503, "no certificate yet");

    // ...and the proxy, retrying, gets its certificate once it answers.
    api.set_mode(Mode::Answer);
    weft_tests::admin::wait_ready(&mut proxy, admin, STEP_DEADLINE)
        .await
        .expect("ready once the API server answers");
    assert_eq!(
        metric(
            cp.admin(),
            "weft_control_certificates_total",
            &[("result", "denied")]
        )
        .await,
        Some(0.0),
        "an unanswered review is never a refusal"
    );
}
