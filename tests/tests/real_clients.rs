//! Issue 19's real clients, through one proxy and through the mTLS pair, to the
//! HTTP/1.1-only record app (Python's http.server, which answers with the request
//! it read): httpx speaking HTTP/2 by prior knowledge, as a sidecar's app calls its
//! outbound; Python `requests`, whose requests must reach the app as they do
//! without the pair; and wrk, for a short bounded run.
//!
//! httpx and requests come from the venv `.ci/run` builds (`WEFT_PY_CLIENTS`,
//! default /opt/weft-py-clients); wrk from Debian's package.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use weft_tests::mtls_pair::{MtlsPair, PairOptions};
use weft_tests::proxy::{ServiceDef, WeftProxy};
use weft_tests::record_app::{RecordApp, parse_record};
use weft_tests::{STEP_DEADLINE, tools, within};

const HTTPX_H2: &str = include_str!("real_clients/httpx_h2.py");
const REQUESTS_SESSION: &str = include_str!("real_clients/requests_session.py");

/// The venv's python, or `None` after saying why `test` is skipped (a failure
/// under `CI=true`, where `.ci/run` has built it).
fn py_clients(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("WEFT_PY_CLIENTS")
        .map_or_else(|| PathBuf::from("/opt/weft-py-clients"), PathBuf::from);
    let python = venv.join("bin/python3");
    if python.exists() {
        return Some(python);
    }
    let why = format!(
        "no venv with httpx[http2] and requests at {} (.ci/run builds it)",
        venv.display()
    );
    if tools::in_ci() {
        panic!("{test}: {why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n******** SKIPPED {test}: {why} ********\n");
    None
}

/// Runs `script` with the venv's `python` against `addr`; its stdout, as JSON.
async fn run_script(python: &PathBuf, script: &str, addr: SocketAddr) -> Value {
    let out = within(
        STEP_DEADLINE + Duration::from_secs(10),
        "the python client",
        tokio::process::Command::new(python)
            .args([
                "-c",
                script,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run the venv's python");
    assert!(
        out.status.success(),
        "client to {addr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The value of the first header field `name` in a record.
fn field<'a>(record: &'a Value, name: &str) -> Option<&'a str> {
    record["headers"].as_array()?.iter().find_map(|h| {
        h[0].as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            .then(|| h[1].as_str())
            .flatten()
    })
}

/// httpx (HTTP/2, prior knowledge) to `addr`: a GET, a POST with a body,
/// concurrent GETs, a 1 MiB POST, a body of no length and answers the app frames
/// its HTTP/1 ways, on its one connection, each answered over HTTP/2 and each
/// reaching the app as HTTP/1.1 with what httpx sent.
async fn httpx_h2_reaches_the_http1_app(python: &PathBuf, addr: SocketAddr, what: &str) {
    let out = run_script(python, HTTPX_H2, addr).await;
    let check = |name: &str, answer: &Value| -> Value {
        assert_eq!(answer["http_version"], "HTTP/2", "{what}, {name}: {answer}");
        assert_eq!(answer["status"], 200, "{what}, {name}: {answer}");
        let body = answer["body"].as_str().unwrap_or("");
        parse_record(body.as_bytes()).unwrap_or_else(|e| panic!("{what}, {name}: {e}"))
    };

    let get = check("GET", &out["get"]);
    assert_eq!(
        get["request_line"], "GET /get?x=1 HTTP/1.1",
        "{what}: {get}"
    );
    assert_eq!(field(&get, "x-trace"), Some("abc"), "{what}: {get}");
    assert_eq!(
        field(&get, "host"),
        Some(addr.to_string().as_str()),
        "{what}: the authority as Host: {get}"
    );
    // Where :authority stood, and where an HTTP/1.1 client writes Host: first.
    assert_eq!(get["headers"][0][0], "host", "{what}: {get}");
    assert!(
        !get.to_string().contains("weft-orig"),
        "{what}: no mark reaches the app: {get}"
    );

    let post = check("POST", &out["post"]);
    assert_eq!(
        post["request_line"], "POST /post HTTP/1.1",
        "{what}: {post}"
    );
    assert_eq!(post["body"], "name=weft&body=1", "{what}: {post}");
    assert_eq!(
        field(&post, "content-type"),
        Some("application/x-www-form-urlencoded"),
        "{what}: {post}"
    );

    let concurrent = out["concurrent"].as_array().expect("concurrent answers");
    assert_eq!(concurrent.len(), 8, "{what}");
    for (i, answer) in concurrent.iter().enumerate() {
        let record = check("a concurrent GET", answer);
        // Each stream got the answer to its own request.
        assert_eq!(
            record["request_line"],
            format!("GET /concurrent/{i} HTTP/1.1"),
            "{what}: {record}"
        );
    }
    // More than HTTP/2's default windows each way: the body whole, in order.
    let large = &out["large"];
    assert_eq!(large["http_version"], "HTTP/2", "{what}: {large}");
    assert_eq!(large["status"], 200, "{what}: {large}");
    assert_eq!(large["sent"][0], 1 << 20, "{what}: {large}");
    assert_eq!(large["recorded"], large["sent"], "{what}: {large}");
    // A body of no length crosses to the HTTP/1.1 app chunked; the app's own
    // framings (close, chunked, HTTP/1.0) reach httpx as valid HTTP/2.
    let framings = &out["framings"];
    let streamed = check("a streamed upload", &framings["streamed upload"]);
    assert_eq!(streamed["framing"], "chunked", "{what}: {streamed}");
    assert_eq!(
        streamed["body"], "piece 0;piece 1;piece 2;piece 3;",
        "{what}: {streamed}"
    );
    for path in ["/close", "/chunked", "/v10"] {
        let record = check(path, &framings[path]);
        assert_eq!(
            record["request_line"],
            format!("GET {path} HTTP/1.1"),
            "{what}: {record}"
        );
    }
    // httpx multiplexed them all on the one connection it had opened.
    let port = &out["get"]["local_port"];
    assert!(port.is_u64(), "{what}: {out}");
    let framed = ["streamed upload", "/close", "/chunked", "/v10"].map(|k| &framings[k]);
    for answer in [&out["post"], large]
        .into_iter()
        .chain(concurrent)
        .chain(framed)
    {
        assert_eq!(&answer["local_port"], port, "{what}: one connection: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpx_over_http2_reaches_an_http1_app_through_one_proxy_and_the_pair() {
    let Some(python) = py_clients("httpx_over_http2_reaches_an_http1_app") else {
        return;
    };
    let app = RecordApp::start().await.expect("start the app");

    // One proxy: the outbound's listener for a service whose port says http1.
    let service = ServiceDef::new("legacy")
        .port(80, "http1")
        .endpoint(app.addr);
    let proxy = WeftProxy::upstream_for(service)
        .await
        .expect("start a proxy");
    httpx_h2_reaches_the_http1_app(&python, proxy.upstream("legacy"), "one proxy").await;

    // The pair, told by the caller's mesh (the service port)...
    let pair = MtlsPair::legacy_http1_service(app.addr).await;
    httpx_h2_reaches_the_http1_app(&python, pair.upstream(), "pair, service port").await;
    drop(pair);

    // ...or only by the server proxy, which knows its app's port.
    let pair = MtlsPair::legacy_http1_app(app.addr).await;
    httpx_h2_reaches_the_http1_app(&python, pair.upstream(), "pair, inbound ports").await;
}

/// The client proxy's identity, which the server proxy hands the app.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// The cases of a requests run, with each record's Host checked to be `addr` (the
/// address requests was given) and then taken out, so that runs to different
/// addresses compare by everything else.
fn cases_without_host(run: &Value, addr: SocketAddr) -> Vec<Value> {
    let mut cases = run["cases"].as_array().expect("cases").clone();
    for case in &mut cases {
        let headers = case["record"]["headers"]
            .as_array_mut()
            .expect("the record's headers");
        let host = headers
            .iter_mut()
            .find(|h| {
                h[0].as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))
            })
            .unwrap_or_else(|| panic!("no Host: {run}"));
        assert_eq!(host[1], addr.to_string(), "{run}");
        host[1] = Value::from("<the address requests was given>");
    }
    cases
}

/// What a proxy between requests and the app may change of a head, undone: names
/// lowercased (Weft, like HTTP/2, does not keep a name's case), `Connection`
/// dropped (hop by hop), and `weft-client-id`, the caller's verified identity,
/// checked to be the client proxy's and dropped.
fn as_a_proxy_passes_it(mut case: Value, added_id: bool) -> Value {
    let headers = case["record"]["headers"]
        .as_array_mut()
        .expect("the record's headers");
    let mut ids = Vec::new();
    headers.retain_mut(|h| {
        let name = h[0].as_str().unwrap_or("").to_ascii_lowercase();
        if name == "weft-client-id" {
            ids.push(h[1].clone());
        }
        h[0] = Value::from(name.as_str());
        name != "connection" && name != "weft-client-id"
    });
    let want: Vec<Value> = if added_id {
        vec![Value::from(CLIENT_ID)]
    } else {
        vec![]
    };
    assert_eq!(ids, want, "{case}");
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_reaches_the_app_through_the_pair_as_it_does_directly() {
    let Some(python) = py_clients("python_requests_reaches_the_app_through_the_pair") else {
        return;
    };
    let app = RecordApp::start().await.expect("start the app");
    let upgraded = MtlsPair::start(ServiceDef::new("legacy"), app.addr, PairOptions::default())
        .await
        .expect("start the pair");
    let off = PairOptions {
        client_identity: "  http1_over_http2: false\n".to_string(),
        server_identity: "  http1_over_http2: false\n".to_string(),
        ..PairOptions::default()
    };
    let plain = MtlsPair::start(ServiceDef::new("legacy"), app.addr, off)
        .await
        .expect("start the pair");

    let direct = run_script(&python, REQUESTS_SESSION, app.addr).await;
    let without_upgrade = run_script(&python, REQUESTS_SESSION, plain.upstream()).await;
    let paired = run_script(&python, REQUESTS_SESSION, upgraded.upstream()).await;

    // Compared per case: what the app recorded (request line, header fields in
    // order with name and value, body framing, body, trailers) and what requests
    // read back (status, reason phrase, HTTP version); the Host's value aside, as
    // requests names the address it was given (checked above).
    let want = cases_without_host(&direct, app.addr);
    let off = cases_without_host(&without_upgrade, plain.upstream());
    let got = cases_without_host(&paired, upgraded.upstream());
    assert_eq!(got.len(), want.len(), "{paired}");
    for ((got, off), want) in got.iter().zip(&off).zip(&want) {
        let name = &want["name"];
        // With the upgrade as without it: byte for byte, name case included.
        assert_eq!(
            got, off,
            "{name}: upgraded (left) vs without the upgrade (right)"
        );
        // And as requests sent it to the app directly, but what a proxy changes.
        assert_eq!(
            as_a_proxy_passes_it(got.clone(), true),
            as_a_proxy_passes_it(want.clone(), false),
            "{name}: through the pair (left) vs direct (right)"
        );
    }

    // What the comparison rests on: each case did what it says.
    let record = |name: &str| -> &Value {
        &got.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no case {name}: {paired}"))["record"]
    };
    assert_eq!(got[0]["reason"], "Recorded Fine", "{paired}");
    assert_eq!(got[0]["version"], 11, "{paired}");
    let json = record("POST json");
    assert_eq!(json["framing"], "length", "{json}");
    assert_eq!(
        json["body"], r#"{"a": 1, "b": ["x", "y"], "c": null}"#,
        "{json}"
    );
    assert_eq!(
        field(json, "content-type"),
        Some("application/json"),
        "{json}"
    );
    let upload = record("chunked upload");
    assert_eq!(upload["framing"], "chunked", "a generator body: {upload}");
    assert_eq!(upload["body"]["len"], 64 * 4096, "{upload}");
    let download = &paired["download"];
    assert_eq!(download["transfer_encoding"], "chunked", "{download}");
    assert!(
        download["pieces"].as_u64().is_some_and(|n| n > 1),
        "read in pieces as it streamed: {download}"
    );
    assert_eq!(
        record("streamed download")["body"],
        upload["body"],
        "the echoed body whole"
    );
    // The session's keep-alive held through the pair as it does directly: every
    // request on the one connection its pool opened.
    assert_eq!(direct["pool"]["connections"], 1, "{direct}");
    assert_eq!(
        without_upgrade["pool"]["connections"], 1,
        "{without_upgrade}"
    );
    assert_eq!(paired["pool"]["connections"], 1, "{paired}");
    assert_eq!(paired["pool"]["requests"], got.len(), "{paired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrk_through_the_pair_gets_only_successes() {
    let test = "wrk_through_the_pair_gets_only_successes";
    let Some(wrk) = tools::require("wrk", "wrk", test) else {
        return;
    };
    let app = RecordApp::start().await.expect("start the app");
    let pair = MtlsPair::start(ServiceDef::new("legacy"), app.addr, PairOptions::default())
        .await
        .expect("start the pair");
    let url = format!("http://{}/wrk", pair.upstream());
    // Bounded: two seconds, eight connections; wrk's own timeout below the step's.
    let out = within(
        STEP_DEADLINE,
        "wrk",
        tokio::process::Command::new(wrk)
            .args(["-t1", "-c8", "-d2s", "--timeout", "5s", &url])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run wrk");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    // wrk prints these lines only when there are such errors.
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx or 3xx"), "{report}");
    let done = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no request count: {report}"));
    assert!(done > 0, "{report}");
    // Every request wrk counted reached the app (it may have seen a few more, cut
    // off when wrk stopped).
    let seen = app.seen().await.expect("the app's /__seen");
    let reached = seen.iter().filter(|l| l.starts_with("GET /wrk ")).count() as u64;
    assert!(reached >= done, "wrk counted {done}, the app saw {reached}");
}
