//! An app that speaks HTTP/2 only (h2c) in an injected pod, on the netns test bed:
//! the pod's `weft.io/http2-ports` annotation becomes the sidecar's
//! `WEFT_HTTP2_PORTS` (as `weftctl inject` renders it), and an HTTP/1.1 client in
//! another pod (curl, Python's http.client) reaches the app through both sidecars,
//! over mTLS, and the app gets them as HTTP/2.
//! The same app in a pod without the annotation gets the client's HTTP/1.1 as
//! HTTP/1.1, which it cannot read: the client is answered 502 at once.
//!
//! ```text
//! pod a (clients, sidecar) ── bridge ── pod b (h2c app :8080, sidecar, annotated)
//!                                  └── pod c (h2c app :8080, sidecar, not annotated)
//! service h2c, VIP 10.96.0.40:80 -> b:8080; service plain, VIP 10.96.0.41:80 -> c:8080
//! ```
//!
//! An h2c app there that refuses a stream unprocessed (REFUSED_STREAM) is sent it
//! again by its own sidecar: the client gets the answer, not a 503.
//!
//! Neither service declares a protocol, so the client's sidecar knows nothing of
//! the app: only the server pod's own sidecar does. Needs root, iproute2, iptables
//! and setpriv (CI has them; elsewhere the test says so and skips).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::Stdio;

use weft_tests::apps::HttpApp;
use weft_tests::netns::{self, Pod};
use weft_tests::proxy::ServiceDef;
use weft_tests::refusing_app::{First, endpoint_on};
use weft_tests::{STEP_DEADLINE, bins, within};

const H2C_VIP: &str = "10.96.0.40";
const PLAIN_VIP: &str = "10.96.0.41";
const REFUSING_VIP: &str = "10.96.0.42";
const APP_PORT: u16 = 8080;

/// The sidecar's environment variables with a plain value, as `weftctl inject`
/// renders them for a pod named `name` with `annotations`.
fn injected_env(name: &str, annotations: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    \
         weft.io/inject: enabled\n"
    );
    for (k, v) in annotations {
        manifest.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    manifest.push_str(&format!(
        "spec:\n  containers:\n    - name: app\n      image: app\n      \
         ports: [{{containerPort: {APP_PORT}}}]\n"
    ));
    let mut child = std::process::Command::new(bins::binary("weftctl").expect("weftctl"))
        .args(["inject", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run weftctl inject");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write the manifest");
    let out = child.wait_with_output().expect("weftctl inject ran");
    assert!(
        out.status.success(),
        "weftctl inject: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: serde_json::Value =
        yaml_serde::from_str(&String::from_utf8_lossy(&out.stdout)).expect("one YAML pod");
    let sidecar = pod["spec"]["initContainers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "weft-proxy"))
        .unwrap_or_else(|| panic!("no weft-proxy container in {pod}"));
    sidecar["env"]
        .as_array()
        .expect("the sidecar's env")
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// What the injector says about the app's protocol, as `(name, value)` pairs for
/// [`Pod::start_injected_proxy`] (which sets the pod-specific variables itself).
fn app_protocol_env(env: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    env.iter()
        .filter(|(k, _)| *k == "WEFT_HTTP1_PORTS" || *k == "WEFT_HTTP2_PORTS")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// curl in `pod` (captured, as its app would be) with `args`; its stdout.
async fn curl_in(pod: &Pod, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::from(pod.exec("curl"));
    cmd.args(["--silent", "--show-error", "--max-time", "20"])
        .args(args);
    let out = within(STEP_DEADLINE + STEP_DEADLINE, "curl in a pod", cmd.output())
        .await
        .expect("curl ran");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Python's http.client in `pod`: a POST and then a GET on one kept-alive HTTP/1.1
/// connection to `vip`:80; one line per answer.
async fn python_in(pod: &Pod, vip: &str) -> String {
    let mut cmd = tokio::process::Command::from(pod.exec("python3"));
    cmd.args(["-c", weft_tests::client::PY_KEEPALIVE_CLIENT, vip, "80"]);
    let out = within(
        STEP_DEADLINE + STEP_DEADLINE,
        "python in a pod",
        cmd.output(),
    )
    .await
    .expect("python ran");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_reaches_an_h2c_app_by_its_pods_http2_ports_annotation() {
    if !netns::available("an_http1_client_reaches_an_h2c_app_by_its_pods_http2_ports_annotation") {
        return;
    }
    // The injector's rendering first: the annotation, and only it, sets the variable.
    let port = APP_PORT.to_string();
    let b_env = injected_env("b", &[("weft.io/http2-ports", &port)]);
    assert_eq!(
        b_env.get("WEFT_HTTP2_PORTS"),
        Some(&port),
        "the annotation reaches the sidecar: {b_env:?}"
    );
    let c_env = injected_env("c", &[]);
    assert!(!c_env.contains_key("WEFT_HTTP2_PORTS"), "{c_env:?}");

    let mut node = netns::Node::create().expect("node");
    let a = node.pod("a").expect("pod a");
    let b = node.pod("b").expect("pod b");
    let c = node.pod("c").expect("pod c");
    let b_app = HttpApp::h2c_only_on_listener("b", b.listen(APP_PORT).await.expect("listen in b"))
        .expect("app in b");
    let _c_app = HttpApp::h2c_only_on_listener("c", c.listen(APP_PORT).await.expect("listen in c"))
        .expect("app in c");
    for pod in [&a, &b, &c] {
        pod.install_capture().expect("init");
    }
    let services = [
        ServiceDef::new("h2c")
            .vip(H2C_VIP)
            .port(80, "detect")
            .endpoint_with_identity(b.addr(APP_PORT), &b.spiffe_id()),
        ServiceDef::new("plain")
            .vip(PLAIN_VIP)
            .port(80, "detect")
            .endpoint_with_identity(c.addr(APP_PORT), &c.spiffe_id()),
    ];
    let control = node
        .start_control_plane(&services)
        .await
        .expect("control plane on the node");
    let _a_proxy = a
        .start_injected_proxy(&control, &[])
        .await
        .expect("sidecar in a");
    let b_proxy = b
        .start_injected_proxy(&control, &app_protocol_env(&b_env))
        .await
        .expect("sidecar in b");
    let _c_proxy = c
        .start_injected_proxy(&control, &app_protocol_env(&c_env))
        .await
        .expect("sidecar in c");

    // curl: a GET, a POST with a body, and the headers the app saw.
    let h2c = format!("http://{H2C_VIP}");
    let get = curl_in(&a, &["--http1.1", "--include", &format!("{h2c}/")]).await;
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(
        get.contains("x-version: HTTP/2.0"),
        "the app saw HTTP/2: {get}"
    );
    assert!(get.ends_with("hello from b\n"), "{get}");
    let post = curl_in(
        &a,
        &[
            "--http1.1",
            "--include",
            "--data-binary",
            "payload=1",
            &format!("{h2c}/upload?reply=3"),
        ],
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 200"), "{post}");
    assert!(post.contains("x-version: HTTP/2.0"), "{post}");
    assert!(
        post.contains("x-body-len: 9"),
        "the whole body arrived: {post}"
    );
    let headers = curl_in(&a, &["--http1.1", &format!("{h2c}/headers")]).await;
    assert!(
        headers.contains(&format!("weft-client-id: {}", a.spiffe_id())),
        "over mTLS from a's sidecar: {headers}"
    );
    assert!(
        headers.contains(&format!("host: {H2C_VIP}")),
        "Host as the authority: {headers}"
    );

    // Python's http.client, two requests on one kept-alive connection.
    let python = python_in(&a, H2C_VIP).await;
    let lines: Vec<&str> = python.lines().collect();
    assert_eq!(
        lines,
        ["200 11 HTTP/2.0 11 5", "200 11 HTTP/2.0 hello from b"],
        "{python}"
    );
    assert_eq!(b_app.requests(), 5, "every request reached b's app");
    let inbound_ok = [("direction", "inbound"), ("status_class", "2xx")];
    assert_eq!(
        b_proxy.metric("weft_requests_total", &inbound_ok).await,
        5.0
    );

    // Without the annotation the same app cannot read what it is sent, and the
    // client is told so at once.
    let plain = curl_in(
        &a,
        &["--http1.1", "--include", &format!("http://{PLAIN_VIP}/")],
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 502"), "{plain}");
    assert!(
        plain.to_ascii_lowercase().contains("weft-error:"),
        "{plain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_an_injected_pods_h2c_app_refused_is_sent_again_by_its_sidecar() {
    if !netns::available("a_stream_an_injected_pods_h2c_app_refused_is_sent_again_by_its_sidecar") {
        return;
    }
    let port = APP_PORT.to_string();
    let d_env = injected_env("d", &[("weft.io/http2-ports", &port)]);
    let mut node = netns::Node::create().expect("node");
    let a = node.pod("a").expect("pod a");
    let d = node.pod("d").expect("pod d");
    // The app resets the first stream it gets with REFUSED_STREAM, unread.
    let seen = endpoint_on(
        d.listen(APP_PORT).await.expect("listen in d"),
        First::Refused,
    );
    for pod in [&a, &d] {
        pod.install_capture().expect("init");
    }
    let services = [ServiceDef::new("orders")
        .vip(REFUSING_VIP)
        .port(80, "detect")
        .endpoint_with_identity(d.addr(APP_PORT), &d.spiffe_id())];
    let control = node
        .start_control_plane(&services)
        .await
        .expect("control plane on the node");
    let a_proxy = a
        .start_injected_proxy(&control, &[])
        .await
        .expect("sidecar in a");
    let d_proxy = d
        .start_injected_proxy(&control, &app_protocol_env(&d_env))
        .await
        .expect("sidecar in d");

    let url = format!("http://{REFUSING_VIP}/order");
    let out = curl_in(&a, &["--http1.1", "--write-out", "\n%{http_code}", &url]).await;
    assert_eq!(out, "served\n200", "answered after the resend");
    assert_eq!(seen.lock().expect("log").len(), 2, "refused, then served");
    // d's sidecar resent it; a's never saw a refusal.
    assert_eq!(d_proxy.metric("weft_refused_resends_total", &[]).await, 1.0);
    assert_eq!(a_proxy.metric("weft_refused_resends_total", &[]).await, 0.0);
}
