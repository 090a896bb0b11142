//! The Kubernetes source against a stand-in API server on 127.0.0.1 (plain HTTP) that
//! answers list and watch requests with real JSON, then fails (500s, dropped watches)
//! and recovers. The published mesh must keep its state through the outage and pick
//! up a change made after it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Histogram, HistogramOpts, IntCounter};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use weft_control::source::kubernetes::KubernetesSource;
use weft_control::source::{Publisher, Source, SourceState};

const SERVICES: &str = "/api/v1/services";
const PODS: &str = "/api/v1/pods";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const TRAFFIC_POLICIES: &str = "/apis/weft.io/v1alpha1/trafficpolicies";
const INBOUND_AUTHORIZATIONS: &str = "/apis/weft.io/v1alpha1/inboundauthorizations";
const COLLECTIONS: [&str; 5] = [
    SERVICES,
    PODS,
    SLICES,
    TRAFFIC_POLICIES,
    INBOUND_AUTHORIZATIONS,
];
/// Every wait in this test is bounded by this.
const WAIT: Duration = Duration::from_secs(60);

type Body = BoxBody<Bytes, Infallible>;
type WatchTx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

#[derive(Default)]
struct State {
    resource_version: u64,
    failing: bool,
    failed_requests: u64,
    /// Lists that fail before the first success, per collection.
    fail_first_lists: HashMap<&'static str, u32>,
    lists_served: HashMap<String, u64>,
    objects: HashMap<&'static str, BTreeMap<String, Value>>,
    /// (resourceVersion, collection, event) in order, replayed to watches that resume.
    events: Vec<(u64, &'static str, Value)>,
    watches: Vec<(&'static str, WatchTx)>,
}

/// A tiny API server: lists, watches (newline-delimited events), injected failures.
#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake API state")
    }

    fn put(&self, collection: &'static str, mut object: Value) {
        let mut state = self.lock();
        state.resource_version += 1;
        let rv = state.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        let existed = state
            .objects
            .entry(collection)
            .or_default()
            .insert(key, object.clone())
            .is_some();
        let event = json!({"type": if existed { "MODIFIED" } else { "ADDED" }, "object": object});
        state.events.push((rv, collection, event.clone()));
        let line = Bytes::from(format!("{event}\n"));
        state.watches.retain(|(c, tx)| {
            *c != collection || tx.try_send(Ok(Frame::data(line.clone()))).is_ok()
        });
    }

    /// From now on every request fails with 500, and open watches are cut.
    fn break_down(&self) {
        let mut state = self.lock();
        state.failing = true;
        state.watches.clear();
    }

    fn recover(&self) {
        self.lock().failing = false;
    }

    fn failed_requests(&self) -> u64 {
        self.lock().failed_requests
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        let mut state = self.lock();
        let path = req.uri().path();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let Some(collection) = COLLECTIONS.iter().copied().find(|c| *c == path) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such collection");
        };
        let watching = query.get("watch").is_some_and(|v| v == "true" || v == "1");
        if state.failing {
            state.failed_requests += 1;
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected failure",
            );
        }
        if !watching {
            if let Some(left) = state.fail_first_lists.get_mut(collection)
                && *left > 0
            {
                *left -= 1;
                state.failed_requests += 1;
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "not yet",
                );
            }
            *state
                .lists_served
                .entry(collection.to_string())
                .or_default() += 1;
            let items: Vec<Value> = state
                .objects
                .get(collection)
                .map(|o| o.values().cloned().collect())
                .unwrap_or_default();
            let list = json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {"resourceVersion": state.resource_version.to_string()},
                "items": items
            });
            return json_response(StatusCode::OK, list.to_string());
        }
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(1024);
        for (rv, c, event) in &state.events {
            if *rv > since && *c == collection {
                let _ = tx.try_send(Ok(Frame::data(Bytes::from(format!("{event}\n")))));
            }
        }
        state.watches.push((collection, tx));
        let body = StreamBody::new(ReceiverStream::new(rx)).boxed();
        Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .expect("watch response")
    }
}

fn json_response(code: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("response")
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Failure", "message": message, "reason": reason,
                      "code": code.as_u16()});
    json_response(code, body.to_string())
}

async fn serve(api: FakeApi) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in API server");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let api = api.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.handle(&req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "payments", "namespace": "shop", "uid": "u-svc",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                            "appProtocol": "http"}],
                 "selector": {"app": "payments"}}
    })
}

fn slice(ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                   "targetRef": {"kind": "Pod", "namespace": "shop", "name": format!("payments-{i}")}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "payments-abcde", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "payments"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("payments-{i}"), "namespace": "shop"},
        "spec": {"serviceAccountName": "payments",
                 "initContainers": [{"name": "weft-proxy", "image": "weft/weft-proxy:0.1.0",
                                     "restartPolicy": "Always"}],
                 "containers": [{"name": "app", "image": "example/payments:1"}]}
    })
}

fn traffic_policy() -> Value {
    json!({
        "apiVersion": "weft.io/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "payments", "namespace": "shop",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"targetRef": {"kind": "Service", "name": "payments"}, "loadBalancer": "round-robin"}
    })
}

/// Waits (bounded) until the latest published state satisfies `done`.
async fn wait_for(
    rx: &mut watch::Receiver<Option<SourceState>>,
    what: &str,
    done: impl Fn(&SourceState) -> bool,
) -> SourceState {
    let found = tokio::time::timeout(WAIT, async {
        rx.wait_for(|s| s.as_ref().is_some_and(&done))
            .await
            .map(|s| s.clone())
    })
    .await;
    match found {
        Ok(Ok(state)) => state.expect("a state"),
        Ok(Err(_)) => panic!("the source stopped before {what}"),
        Err(_) => panic!(
            "no published state with {what} within {WAIT:?}; last: {:?}",
            *rx.borrow()
        ),
    }
}

fn endpoints(state: &SourceState) -> Vec<String> {
    state
        .mesh
        .find("payments", "shop")
        .map(|s| s.endpoints.iter().map(|e| e.address.to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn watches_resume_after_api_errors_without_losing_state() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = FakeApi::default();
    api.put(SERVICES, service());
    api.put(SLICES, slice(&["10.244.1.5"]));
    api.put(PODS, pod(0));
    api.put(TRAFFIC_POLICIES, traffic_policy());
    // An object the API server would have refused (no schema checks here) and the
    // types cannot read: rejected alone, the list and the rest of the mesh still work.
    api.put(
        INBOUND_AUTHORIZATIONS,
        json!({
            "apiVersion": "weft.io/v1alpha1", "kind": "InboundAuthorization",
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"serviceAccountName": "payments", "ports": [{"port": 70000}]}
        }),
    );
    // The policies' first lists fail: nothing may be published before they succeed.
    api.lock().fail_first_lists.insert(TRAFFIC_POLICIES, 2);
    let addr = serve(api.clone()).await;

    let config = kube::Config::new(format!("http://{addr}").parse().expect("URL"));
    let client = kube::Client::try_from(config).expect("client for the stand-in API server");
    let rejected = IntCounter::new("rejected_total", "rejected").expect("counter");
    let load = Histogram::with_opts(HistogramOpts::new("load_seconds", "load")).expect("histogram");
    let (publisher, mut rx) = Publisher::new(rejected.clone(), load);
    let source =
        KubernetesSource::new(client, "cluster.local").with_debounce(Duration::from_millis(20));
    let task = tokio::spawn(source.run(publisher));

    let first = wait_for(&mut rx, "the payments endpoint", |s| {
        !endpoints(s).is_empty()
    })
    .await;
    assert_eq!(first.generation, 1, "the first publish is already complete");
    assert_eq!(endpoints(&first), ["10.244.1.5:8080"]);
    let svc = first.mesh.find("payments", "shop").expect("payments");
    assert_eq!(
        svc.endpoints[0].identity.as_ref().map(|i| i.as_str()),
        Some("spiffe://cluster.local/ns/shop/sa/payments")
    );
    assert_eq!(
        svc.policy.load_balancer,
        Some(weft_api::mesh::LoadBalancerSpec::RoundRobin),
        "published only once the policies were listed"
    );

    // Outage: watches cut, every request fails. Wait until the watchers have hit it
    // several times; the published state must not have moved.
    api.break_down();
    let outage = tokio::time::timeout(WAIT, async {
        while api.failed_requests() < 5 + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        outage.is_ok(),
        "the watchers never retried during the outage"
    );
    {
        let current = rx.borrow();
        let current = current.as_ref().expect("state");
        assert_eq!(
            current.generation, first.generation,
            "nothing published during the outage"
        );
        assert_eq!(endpoints(current), ["10.244.1.5:8080"]);
    }
    assert!(!task.is_finished(), "the source survives API errors");

    // Recovery, then a change: a second endpoint (and its pod).
    api.recover();
    api.put(PODS, pod(1));
    api.put(SLICES, slice(&["10.244.1.5", "10.244.1.6"]));
    let after = wait_for(&mut rx, "the second endpoint", |s| endpoints(s).len() == 2).await;
    assert_eq!(endpoints(&after), ["10.244.1.5:8080", "10.244.1.6:8080"]);
    assert!(after.generation > first.generation);
    assert_eq!(
        rejected.get(),
        1,
        "the broken InboundAuthorization, counted once"
    );
    assert!(after.mesh.workloads.is_empty());
    task.abort();
}
