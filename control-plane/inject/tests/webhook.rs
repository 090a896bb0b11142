//! The admission webhook over real HTTPS on 127.0.0.1: a self-signed certificate made
//! here with rcgen, a rustls client that trusts only it, AdmissionReview v1 JSON as
//! the API server sends it, and the returned JSONPatch checked against what
//! `weftctl inject` writes for the same pod.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use weft_inject::{Injector, tls, webhook};

use common::{golden_config, golden_dir, text, weftctl_inject};

struct Server {
    addr: std::net::SocketAddr,
    ca: CertificateDer<'static>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(name: &str) -> Server {
        Self::start_rechecking(name, tls::RECHECK).await
    }

    async fn start_rechecking(name: &str, recheck: std::time::Duration) -> Server {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("webhook-{name}"));
        let cert = write_cert(&dir);
        let config =
            tls::server_config_rechecking(&dir.join("tls.crt"), &dir.join("tls.key"), recheck)
                .expect("server TLS config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let injector = Arc::new(Injector::new(golden_config()));
        let task = tokio::spawn(webhook::serve(listener, config, injector, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            ca: cert,
            stop: Some(stop),
            task,
        }
    }

    fn connector(&self, alpn: &[u8]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("trust the test CA");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// One request over a fresh TLS connection, HTTP/1.1 or HTTP/2 by ALPN.
    async fn send(
        &self,
        h2: bool,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let tcp = TcpStream::connect(self.addr).await.expect("connect");
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let name = ServerName::try_from("weft-injector.weft-system.svc").expect("server name");
        let tls = self
            .connector(alpn)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(alpn),
            "negotiated protocol"
        );
        let req = Request::builder()
            .method(method)
            .uri(format!("https://weft-injector.weft-system.svc{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let io = TokioIo::new(tls);
        let resp = if h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h2 response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("http1 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("http1 response")
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, body)
    }

    async fn review(&self, h2: bool, object: Value) -> Value {
        let review = admission_review(object);
        let (status, body) = self
            .send(
                h2,
                "POST",
                "/inject",
                serde_json::to_vec(&review).expect("json"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}", text(&body));
        let answer: Value = serde_json::from_slice(&body).expect("JSON review");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer["response"].clone()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(20), self.task)
            .await
            .expect("server stops within its drain timeout")
            .expect("server task");
    }
}

/// Writes a fresh self-signed certificate and key for the webhook's DNS name into
/// `dir` (tls.crt, tls.key) and returns the certificate to trust.
fn write_cert(dir: &std::path::Path) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["weft-injector.weft-system.svc".into()])
        .expect("self-signed certificate");
    std::fs::create_dir_all(dir).expect("temp dir");
    // Written beside and renamed, as the kubelet swaps a Secret's files.
    for (name, pem) in [
        ("tls.key", cert.signing_key.serialize_pem()),
        ("tls.crt", cert.cert.pem()),
    ] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, pem).expect("write PEM");
        std::fs::rename(&tmp, dir.join(name)).expect("rename PEM");
    }
    cert.cert.der().clone()
}

/// An AdmissionReview v1 as the API server sends it for a pod CREATE.
fn admission_review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "c2d5e1b9-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn yaml_docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn golden_pod() -> (Value, String) {
    let input = std::fs::read_to_string(golden_dir().join("pod.in.yaml")).expect("pod input");
    let pod = yaml_docs(&input).pop().expect("one pod");
    (pod, input)
}

fn apply(response: &Value, mut pod: Value) -> Value {
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("base64 patch"))
        .expect("valid base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("JSON Patch");
    json_patch::patch(&mut pod, &patch).expect("patch applies to the pod");
    pod
}

#[tokio::test]
async fn webhook_patch_gives_exactly_what_weftctl_inject_gives() {
    let server = Server::start("same-as-cli").await;
    let (pod, input) = golden_pod();
    let cli = weftctl_inject(&[], &input);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let expected = yaml_docs(&text(&cli.stdout)).pop().expect("injected pod");
    for h2 in [false, true] {
        let response = server.review(h2, pod.clone()).await;
        assert_eq!(apply(&response, pod.clone()), expected, "h2={h2}");
        assert_eq!(response["auditAnnotations"]["injected"], "true");
    }
    // The same for a template taken out of a workload: a pod the ReplicaSet
    // controller creates from it carries the template's metadata and spec.
    let input = std::fs::read_to_string(golden_dir().join("replicaset.in.yaml")).expect("input");
    let workload = yaml_docs(&input).pop().expect("replicaset");
    let mut created = workload["spec"]["template"].clone();
    created["metadata"]["generateName"] = json!("payments-6d4b-");
    let response = server.review(false, created.clone()).await;
    let injected_workload = yaml_docs(&text(&weftctl_inject(&[], &input).stdout))
        .pop()
        .expect("injected replicaset");
    let mut expected = injected_workload["spec"]["template"].clone();
    expected["metadata"]["generateName"] = json!("payments-6d4b-");
    assert_eq!(apply(&response, created), expected);
    server.stop().await;
}

#[tokio::test]
async fn reviewing_an_injected_pod_again_changes_nothing() {
    let server = Server::start("idempotent").await;
    let (pod, _) = golden_pod();
    let injected = apply(&server.review(false, pod.clone()).await, pod);
    let response = server.review(false, injected).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("already injected"), "{warning}");
    server.stop().await;
}

#[tokio::test]
async fn skipped_pods_are_allowed_with_the_reason() {
    let server = Server::start("skips").await;
    let (pod, _) = golden_pod();

    let mut host = pod.clone();
    host["spec"]["hostNetwork"] = json!(true);
    let response = server.review(false, host).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    let warning = response["warnings"][0].as_str().expect("a warning");
    assert!(warning.contains("hostNetwork"), "{warning}");
    assert!(
        response["auditAnnotations"]["skipped"]
            .as_str()
            .expect("audit annotation")
            .contains("hostNetwork")
    );

    let mut opted_out = pod.clone();
    opted_out["metadata"]["annotations"] = json!({"weft.io/inject": "disabled"});
    let response = server.review(true, opted_out).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        response.get("warnings").is_none(),
        "an opt-out is not a surprise"
    );
    assert_eq!(
        response["auditAnnotations"]["skipped"],
        "weft.io/inject: disabled"
    );

    let mut labelled_out = pod.clone();
    labelled_out["metadata"]["labels"]["weft.io/inject"] = json!("disabled");
    let response = server.review(false, labelled_out).await;
    assert!(response.get("patch").is_none(), "{response}");

    server.stop().await;
}

#[tokio::test]
async fn bad_annotations_deny_the_pod_and_name_the_annotation() {
    let server = Server::start("deny").await;
    let (mut pod, _) = golden_pod();
    pod["metadata"]["annotations"] = json!({"weft.io/proxy-memory-limit": "lots"});
    let response = server.review(false, pod).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(message.contains("weft.io/proxy-memory-limit"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn http_errors_and_probes() {
    let server = Server::start("http").await;
    let (status, body) = server.send(false, "GET", "/ready", vec![]).await;
    assert_eq!((status, text(&body).as_str()), (StatusCode::OK, "ok\n"));
    let (status, _) = server.send(true, "GET", "/live", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.send(false, "GET", "/nope", vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.send(false, "GET", "/inject", vec![]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = server
        .send(false, "POST", "/inject", b"{not json".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body).contains("not an AdmissionReview"),
        "{}",
        text(&body)
    );
    let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"});
    let (status, body) = server
        .send(
            false,
            "POST",
            "/inject",
            serde_json::to_vec(&v1beta1).expect("json"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text(&body).contains("admission.k8s.io/v1"),
        "{}",
        text(&body)
    );
    let huge = vec![b' '; webhook::MAX_BODY + 1];
    let (status, _) = server.send(false, "POST", "/inject", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A non-pod or non-CREATE request is let through untouched, with a warning.
    let mut review =
        admission_review(json!({"metadata": {"name": "x"}, "spec": {"containers": []}}));
    review["request"]["operation"] = json!("UPDATE");
    let (status, body) = server
        .send(
            false,
            "POST",
            "/inject",
            serde_json::to_vec(&review).expect("json"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).expect("review");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .expect("warning")
            .contains("UPDATE")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let server = Server::start("untrusted").await;
    let other = rcgen::generate_simple_self_signed(vec!["weft-injector.weft-system.svc".into()])
        .expect("another certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.cert.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("weft-injector.weft-system.svc").expect("name");
    let result = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(result.is_err(), "handshake must fail against the wrong CA");
    // The server keeps serving trusting clients.
    let (status, _) = server.send(false, "GET", "/ready", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let mut server = Server::start_rechecking("rotate", std::time::Duration::ZERO).await;
    let (status, _) = server.send(false, "GET", "/ready", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let old = server.ca.clone();
    // Modification times can be coarse; make sure the new files look newer.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webhook-rotate");
    let before = std::fs::metadata(dir.join("tls.crt"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut new = write_cert(&dir);
    let mut tries = 0;
    while std::fs::metadata(dir.join("tls.crt"))
        .and_then(|m| m.modified())
        .expect("mtime")
        == before
    {
        tries += 1;
        assert!(
            tries < 200,
            "the file system never showed a new modification time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        new = write_cert(&dir);
    }
    server.ca = new;
    let (status, _) = server.send(true, "GET", "/ready", vec![]).await;
    assert_eq!(status, StatusCode::OK, "the new certificate is served");
    server.ca = old;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("weft-injector.weft-system.svc").expect("name");
    let result = server.connector(b"http/1.1").connect(name, tcp).await;
    assert!(result.is_err(), "the old certificate is no longer served");
    server.stop().await;
}

#[test]
fn weftctl_webhook_serves_until_sigterm() {
    use std::process::{Command, Stdio};
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webhook-binary");
    let ca = write_cert(&dir);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        // As the webhook Deployment gives it, through the environment.
        .env("WEFT_TRUST_ANCHORS_FILE", common::golden_trust_anchors())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weftctl webhook starts");
    // Stopped even when an assertion below fails.
    let mut child = Reap(Some(child));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = Server {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ca,
        stop: None,
        task: runtime.spawn(async {}),
    };
    // Poll for readiness (bounded), never a fixed sleep.
    let ready = runtime.block_on(async {
        for _ in 0..100 {
            if TcpStream::connect(server.addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    });
    assert!(ready, "weftctl webhook did not listen within 5 s");
    let (pod, _) = golden_pod();
    let response = runtime.block_on(server.review(false, pod.clone()));
    let cli = weftctl_inject(
        &[],
        &std::fs::read_to_string(golden_dir().join("pod.in.yaml")).expect("input"),
    );
    let expected = yaml_docs(&text(&cli.stdout)).pop().expect("pod");
    // The binary uses the default images, the CLI run the golden ones.
    let mut injected = apply(&response, pod);
    for c in injected["spec"]["initContainers"]
        .as_array_mut()
        .expect("init containers")
    {
        if c["name"] == "weft-init" {
            c["image"] = json!(common::GOLDEN_INIT_IMAGE);
        } else if c["name"] == "weft-proxy" {
            c["image"] = json!(common::GOLDEN_IMAGE);
        }
    }
    assert_eq!(injected, expected);
    let child = child.0.take().expect("still running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("weftctl exits");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port for a child process to bind.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

/// On a first install the kubelet fills the injector's optional Secret volumes only
/// after weft-control created the Secrets: `weftctl webhook` waits for the files
/// (WEFT_WEBHOOK_WAIT_SECONDS), then serves with them; without the wait, a missing
/// file fails at once, naming it.
#[test]
fn weftctl_webhook_waits_for_its_secrets_to_be_delivered() {
    use std::process::{Command, Stdio};
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webhook-wait");
    let _ = std::fs::remove_dir_all(&dir);
    let (tls_dir, anchors_dir) = (dir.join("tls"), dir.join("trust-anchors"));
    std::fs::create_dir_all(&anchors_dir).expect("dir");
    let anchors = anchors_dir.join("ca.crt");
    let port = free_port();
    let command = |wait: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weftctl"));
        cmd.args(["webhook", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(tls_dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(tls_dir.join("tls.key"))
            .env("WEFT_TRUST_ANCHORS_FILE", &anchors)
            .env("WEFT_WEBHOOK_WAIT_SECONDS", wait)
            .env("NO_COLOR", "1");
        cmd
    };

    let out = command("0").output().expect("weftctl runs");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&anchors.display().to_string()) && stderr.contains("No such file"),
        "{stderr}"
    );

    let log = dir.join("weftctl.log");
    let child = command("60")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log")))
        .spawn()
        .expect("weftctl webhook starts");
    let mut child = Reap(Some(child));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let waiting = runtime.block_on(async {
        for _ in 0..200 {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            if logged.contains("waiting for the kubelet") {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    });
    assert!(waiting, "no word of waiting within 10 s");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "it listens before it has a certificate"
    );
    let ca = write_cert(&tls_dir);
    std::fs::copy(common::golden_trust_anchors(), &anchors).expect("trust anchors");

    let server = Server {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ca,
        stop: None,
        task: runtime.spawn(async {}),
    };
    // The wait looks every second; bounded polling for the listener.
    let ready = runtime.block_on(async {
        for _ in 0..200 {
            if TcpStream::connect(server.addr).await.is_ok() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    });
    assert!(
        ready,
        "weftctl webhook did not listen within 10 s of the files"
    );
    let (pod, _) = golden_pod();
    let injected = apply(&runtime.block_on(server.review(false, pod.clone())), pod);
    let anchors_text = std::fs::read_to_string(&anchors).expect("anchors");
    let proxy = injected["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .find(|c| c["name"] == "weft-proxy")
        .expect("the proxy was injected");
    let env_anchors = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "WEFT_TRUST_ANCHORS")
        .map(|e| e["value"].clone());
    assert_eq!(
        env_anchors,
        Some(json!(anchors_text)),
        "the delivered trust anchors"
    );
    drop(child.0.take().map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
}
