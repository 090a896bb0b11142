//! Translation on objects as the API server sends them (JSON through k8s-openapi's
//! own deserializers).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use weft_api::mesh::{EndpointStateSpec, LoadBalancerSpec, ProtocolSpec, ServiceSpec, TlsModeSpec};

use super::translate::{Objects, Translator};
use kube::api::DynamicObject;

const TRUST_DOMAIN: &str = "cluster.local";

fn object<K: DeserializeOwned>(value: Value) -> Arc<K> {
    Arc::new(serde_json::from_value(value).expect("object as the API server sends it"))
}

fn service(ns: &str, name: &str, cluster_ip: &str, ports: Value) -> Arc<Service> {
    let ips = if cluster_ip == "None" {
        json!(["None"])
    } else {
        json!([cluster_ip])
    };
    object(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "100",
                     "uid": format!("uid-svc-{name}"),
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": ips,
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": ports,
            "selector": {"app": name},
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    }))
}

/// `endpoints`: (ip, pod name, ready, serving, terminating).
fn slice(
    ns: &str,
    service: &str,
    slice_name: &str,
    port_name: &str,
    port: u16,
    endpoints: &[(&str, &str, bool, bool, bool)],
) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, ready, serving, terminating)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": "node-a",
                "zone": "zone-a",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": format!("uid-{pod}")}
            })
        })
        .collect();
    object(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name,
            "namespace": ns,
            "resourceVersion": "200",
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                 "uid": format!("uid-svc-{service}"), "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]
    }))
}

fn pod(ns: &str, name: &str, account: &str, injected: bool) -> Arc<Pod> {
    let mut init = Vec::new();
    if injected {
        init.push(json!({"name": "weft-init", "image": "weft/weft-proxy:0.1.0"}));
        init.push(
            json!({"name": "weft-proxy", "image": "weft/weft-proxy:0.1.0",
                         "restartPolicy": "Always"}),
        );
    }
    object(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "300",
                     "labels": {"app": "payments"}},
        "spec": {
            "serviceAccountName": account,
            "initContainers": init,
            "containers": [{"name": "app", "image": "example/payments:1"}]
        },
        "status": {"phase": "Running", "podIP": "10.244.1.5"}
    }))
}

fn traffic_policy(
    ns: &str,
    name: &str,
    created: &str,
    version: &str,
    spec: Value,
) -> Arc<DynamicObject> {
    object(json!({
        "apiVersion": "weft.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": version,
                     "creationTimestamp": created, "generation": 1},
        "spec": spec
    }))
}

fn inbound_authorization(ns: &str, name: &str, created: &str, spec: Value) -> Arc<DynamicObject> {
    object(json!({
        "apiVersion": "weft.io/v1alpha1",
        "kind": "InboundAuthorization",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1",
                     "creationTimestamp": created},
        "spec": spec
    }))
}

fn payments() -> Objects {
    Objects {
        services: vec![service(
            "shop",
            "payments",
            "10.96.0.20",
            json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c"}]),
        )],
        slices: vec![slice(
            "shop",
            "payments",
            "payments-abcde",
            "http",
            8080,
            &[
                ("10.244.1.5", "payments-1", true, true, false),
                ("10.244.1.6", "payments-2", false, true, true),
                ("10.244.1.7", "payments-3", false, false, true),
                ("10.244.1.8", "payments-4", false, false, false),
            ],
        )],
        pods: vec![
            pod("shop", "payments-1", "payments", true),
            pod("shop", "payments-2", "payments", true),
        ],
        ..Objects::default()
    }
}

/// The mesh `objects` translate to, which must be valid.
fn valid_mesh(objects: &Objects) -> weft_api::mesh::MeshSpec {
    Translator::new(TRUST_DOMAIN)
        .translate(objects)
        .mesh
        .expect("valid mesh")
}

/// [`payments`] with its Service's `ports` replaced.
fn payments_on_ports(ports: Value) -> Objects {
    let mut objects = payments();
    objects.services = vec![service("shop", "payments", "10.96.0.20", ports)];
    objects
}

fn only_service(objects: &Objects) -> ServiceSpec {
    let mesh = valid_mesh(objects);
    assert_eq!(mesh.services.len(), 1, "{mesh:?}");
    mesh.services[0].clone()
}

#[test]
fn service_gets_cluster_ip_port_and_protocol_hint() {
    let svc = only_service(&payments());
    assert_eq!(svc.name.as_str(), "payments");
    assert_eq!(svc.namespace.as_str(), "shop");
    assert_eq!(
        svc.vips,
        ["10.96.0.20".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(svc.ports.len(), 1);
    assert_eq!(svc.ports[0].port, 80);
    assert_eq!(svc.ports[0].name, "http");
    assert_eq!(svc.ports[0].protocol, ProtocolSpec::Http2);
}

#[test]
fn endpoint_conditions_decide_serving_draining_or_left_out() {
    let svc = only_service(&payments());
    let states: Vec<(String, EndpointStateSpec)> = svc
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.state))
        .collect();
    assert_eq!(
        states,
        [
            ("10.244.1.5:8080".to_string(), EndpointStateSpec::Ready),
            (
                "10.244.1.6:8080".to_string(),
                EndpointStateSpec::Terminating
            ),
        ],
        "terminating but not serving (.7) and not ready (.8) take no traffic"
    );
    assert_eq!(
        svc.endpoints[0]
            .labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("zone-a")
    );
}

#[test]
fn slices_of_one_service_are_merged_without_duplicates() {
    let mut objects = payments();
    objects.slices.push(slice(
        "shop",
        "payments",
        "payments-fghij",
        "http",
        8080,
        &[
            // Moving between slices: listed in both, ready in this one.
            ("10.244.1.6", "payments-2", true, true, false),
            ("10.244.2.9", "payments-9", true, true, false),
        ],
    ));
    // Another service's slice in the same namespace stays out.
    objects.slices.push(slice(
        "shop",
        "orders",
        "orders-1",
        "http",
        9000,
        &[("10.244.3.1", "orders-1", true, true, false)],
    ));
    let svc = only_service(&objects);
    let states: Vec<(String, EndpointStateSpec)> = svc
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.state))
        .collect();
    assert_eq!(
        states,
        [
            ("10.244.1.5:8080".to_string(), EndpointStateSpec::Ready),
            ("10.244.1.6:8080".to_string(), EndpointStateSpec::Ready),
            ("10.244.2.9:8080".to_string(), EndpointStateSpec::Ready),
        ]
    );
}

#[test]
fn identity_comes_from_the_pods_service_account_only_when_injected() {
    let mut objects = payments();
    objects.slices = vec![slice(
        "shop",
        "payments",
        "payments-abcde",
        "http",
        8080,
        &[
            ("10.244.1.5", "payments-1", true, true, false),
            ("10.244.1.9", "legacy-1", true, true, false),
            ("10.244.1.10", "unknown-pod", true, true, false),
        ],
    )];
    objects.pods.push(pod("shop", "legacy-1", "legacy", false));
    let svc = only_service(&objects);
    let ids: Vec<(String, Option<String>)> = svc
        .endpoints
        .iter()
        .map(|e| {
            (
                e.address.to_string(),
                e.identity.as_ref().map(|i| i.as_str().to_string()),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            (
                "10.244.1.5:8080".to_string(),
                Some("spiffe://cluster.local/ns/shop/sa/payments".to_string())
            ),
            ("10.244.1.9:8080".to_string(), None),
            ("10.244.1.10:8080".to_string(), None),
        ]
    );
}

/// A slice whose endpoints serve `ports` (name, port), built on [`slice`].
fn slice_with_ports(
    service: &str,
    slice_name: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, &str, bool, bool, bool)],
) -> Arc<EndpointSlice> {
    let mut out = (*slice("shop", service, slice_name, "", 1, endpoints)).clone();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
        .collect();
    out.ports = Some(serde_json::from_value(Value::Array(ports)).expect("ports"));
    Arc::new(out)
}

/// Each port of a mesh service and the endpoint addresses it is balanced over.
fn per_port(s: &ServiceSpec) -> Vec<String> {
    s.ports
        .iter()
        .map(|p| {
            let set = p.endpoints.as_ref().unwrap_or(&s.endpoints);
            let addresses: Vec<String> = set.iter().map(|e| e.address.to_string()).collect();
            format!("{} {} -> {addresses:?}", p.port, p.name)
        })
        .collect()
}

#[test]
fn a_multi_port_service_is_one_service_with_an_endpoint_set_per_port() {
    let mut objects = payments_on_ports(json!([
        {"name": "web", "port": 80, "targetPort": "web", "protocol": "TCP", "appProtocol": "http"},
        {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}
    ]));
    objects.slices = vec![slice_with_ports(
        "payments",
        "payments-x",
        &[("metrics", 9090), ("web", 8081)],
        &[("10.244.1.5", "payments-1", true, true, false)],
    )];
    let mesh = valid_mesh(&objects);
    assert_eq!(mesh.services.len(), 1, "no `<port>-<name>` services");
    let svc = &mesh.services[0];
    assert_eq!(svc.name.as_str(), "payments");
    assert_eq!(
        svc.vips,
        ["10.96.0.20".parse::<std::net::IpAddr>().expect("ip")]
    );
    // Each port reaches the endpoints at the port the slice resolved for its name.
    assert_eq!(
        per_port(svc),
        [
            r#"80 web -> ["10.244.1.5:8081"]"#,
            r#"9090 metrics -> ["10.244.1.5:9090"]"#,
        ]
    );
    assert!(
        svc.ports[0].endpoints.is_none(),
        "the first port's set is the service's"
    );
    assert_eq!(svc.ports[0].protocol, ProtocolSpec::Http1);
    assert_eq!(svc.ports[1].protocol, ProtocolSpec::Detect);
    // On the wire: the service's set, and 9090's own.
    let update = svc.to_update(1);
    assert_eq!(update.port_endpoints.len(), 1);
    assert_eq!(update.port_endpoints[0].port, 9090);
}

#[test]
fn a_named_target_port_may_differ_per_pod_and_a_port_shared_by_all_adds_no_set() {
    let mut objects = payments_on_ports(json!([
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 9090, "targetPort": "grpc", "protocol": "TCP"},
        {"name": "admin", "port": 9900, "targetPort": "http", "protocol": "TCP"}
    ]));
    // Two pod templates (a rollout): the old one names its ports differently, and only
    // the new one serves grpc.
    objects.slices = vec![
        slice_with_ports(
            "payments",
            "payments-old",
            &[("http", 8080), ("admin", 8080)],
            &[("10.244.1.5", "payments-1", true, true, false)],
        ),
        slice_with_ports(
            "payments",
            "payments-new",
            &[("http", 18080), ("grpc", 19090), ("admin", 18080)],
            &[("10.244.1.6", "payments-2", true, true, false)],
        ),
    ];
    let mesh = valid_mesh(&objects);
    let svc = &mesh.services[0];
    assert_eq!(
        per_port(svc),
        [
            r#"8080 http -> ["10.244.1.5:8080", "10.244.1.6:18080"]"#,
            r#"9090 grpc -> ["10.244.1.6:19090"]"#,
            r#"9900 admin -> ["10.244.1.5:8080", "10.244.1.6:18080"]"#,
        ]
    );
    assert!(
        svc.ports[2].endpoints.is_none(),
        "a port with the first port's endpoints carries no set of its own"
    );
}

#[test]
fn app_protocol_hints() {
    use super::translate::protocol_hint;
    for (hint, want) in [
        (None, ProtocolSpec::Detect),
        (Some("kubernetes.io/h2c"), ProtocolSpec::Http2),
        (Some("http"), ProtocolSpec::Http1),
        (Some("HTTP2"), ProtocolSpec::Http2),
        (Some("grpc"), ProtocolSpec::Grpc),
        (Some("tcp"), ProtocolSpec::Opaque),
        (Some("postgresql"), ProtocolSpec::Opaque),
        (Some("example.com/custom"), ProtocolSpec::Detect),
    ] {
        assert_eq!(protocol_hint(hint), want, "{hint:?}");
    }
}

#[test]
fn headless_and_external_name_services() {
    let mut objects = payments();
    objects.services = vec![
        service(
            "shop",
            "payments",
            "None",
            json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
        ),
        object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "external", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}
        })),
    ];
    let svc = only_service(&objects);
    assert!(svc.vips.is_empty(), "headless: by name only");
    assert_eq!(svc.endpoints.len(), 2, "pod endpoints still served by name");
}

#[test]
fn traffic_policy_becomes_the_services_policy() {
    let mut objects = payments();
    objects.traffic_policies = vec![traffic_policy(
        "shop",
        "payments",
        "2026-01-02T00:00:00Z",
        "5",
        json!({
            "targetRef": {"kind": "Service", "name": "payments"},
            "loadBalancer": "consistent-hash",
            "hashKey": {"header": "x-user"},
            "circuitBreaker": {"maxPendingRequests": 100,
                "outlierDetection": {"consecutiveFailures": 5, "baseEjection": "30s",
                                     "maxEjectedPercent": 50, "failureOn": ["5xx", "connect"]}},
            "retry": {"maxAttempts": 3, "retryOnStatus": [503], "budgetRatio": 0.2},
            "timeouts": {"request": "5s", "connect": "250ms"}
        }),
    )];
    let policy = only_service(&objects).policy;
    assert_eq!(policy.load_balancer, Some(LoadBalancerSpec::ConsistentHash));
    assert_eq!(
        policy.hash_key.and_then(|k| k.header).as_deref(),
        Some("x-user")
    );
    let cb = policy.circuit_breaker.expect("circuit breaker");
    assert_eq!(cb.max_pending_requests, 100);
    let outlier = cb.outlier_detection.expect("outlier detection");
    assert_eq!(outlier.consecutive_failures, 5);
    assert_eq!(outlier.base_ejection.map(|d| d.0.as_secs()), Some(30));
    assert_eq!(policy.retry.expect("retry").max_attempts, 3);
    let timeouts = policy.timeouts.expect("timeouts");
    assert_eq!(timeouts.connect.map(|d| d.0.as_millis()), Some(250));
}

#[test]
fn invalid_or_conflicting_policy_is_rejected_alone_and_last_good_kept() {
    let good = json!({"targetRef": {"kind": "Service", "name": "payments"},
                      "loadBalancer": "round-robin", "timeouts": {"request": "5s"}});
    let mut objects = payments();
    objects.services.push(service(
        "shop",
        "orders",
        "10.96.0.30",
        json!([{"port": 80, "protocol": "TCP"}]),
    ));
    objects.traffic_policies = vec![traffic_policy(
        "shop",
        "payments",
        "2026-01-02T00:00:00Z",
        "5",
        good,
    )];
    let mut translator = Translator::new(TRUST_DOMAIN);
    let first = translator.translate(&objects);
    assert!(first.new_rejections.is_empty());
    let lb = |mesh: &weft_api::mesh::MeshSpec| {
        mesh.find("payments", "shop")
            .and_then(|s| s.policy.load_balancer.clone())
    };
    assert_eq!(
        lb(first.mesh.as_ref().expect("valid mesh")),
        Some(LoadBalancerSpec::RoundRobin)
    );

    // A bad edit of the same object (a value its type cannot hold): rejected, its
    // last good translation stays on its Service. A newer policy for the same Service
    // conflicts. Bad policies with no past are ignored. Every service is still
    // published.
    objects.traffic_policies = vec![
        traffic_policy(
            "shop",
            "payments",
            "2026-01-02T00:00:00Z",
            "6",
            json!({"targetRef": {"kind": "Service", "name": "payments"}, "loadBalancer": "random"}),
        ),
        traffic_policy(
            "shop",
            "payments-2",
            "2026-01-03T00:00:00Z",
            "1",
            json!({"targetRef": {"kind": "Service", "name": "payments"}, "loadBalancer": "least-request"}),
        ),
        traffic_policy(
            "shop",
            "orders",
            "2026-01-03T00:00:00Z",
            "1",
            json!({"targetRef": {"kind": "Service", "name": "orders"}, "retry": {"maxAttempts": 50}}),
        ),
        traffic_policy(
            "shop",
            "orders-2",
            "2026-01-04T00:00:00Z",
            "1",
            json!({"targetRef": {"kind": "Service", "name": "orders"}, "timeouts": {"request": "soon"}}),
        ),
    ];
    let second = translator.translate(&objects);
    let mesh = second.mesh.as_ref().expect("valid mesh");
    assert_eq!(mesh.services.len(), 2);
    assert_eq!(
        lb(mesh),
        Some(LoadBalancerSpec::RoundRobin),
        "last good kept"
    );
    let orders = mesh.find("orders", "shop").expect("orders still served");
    assert_eq!(orders.policy, Default::default());
    let mut rejected: Vec<(String, bool)> = second
        .new_rejections
        .iter()
        .map(|r| (r.object.to_string(), r.kept_last_good))
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            ("TrafficPolicy shop/orders".to_string(), false),
            ("TrafficPolicy shop/orders-2".to_string(), false),
            ("TrafficPolicy shop/payments".to_string(), true),
            ("TrafficPolicy shop/payments-2".to_string(), false),
        ]
    );
    let reasons: Vec<&str> = second
        .new_rejections
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    for expected in [
        "unknown variant `random`",
        "invalid duration",
        "already has TrafficPolicy shop/payments",
        "max_attempts",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "{expected}: {reasons:?}"
        );
    }

    // The same object versions are reported once, however often the mesh is rebuilt.
    let third = translator.translate(&objects);
    assert!(third.new_rejections.is_empty());
    assert_eq!(third.rejected, 4);
}

#[test]
fn inbound_authorization_becomes_the_workloads_policy() {
    let mut objects = payments();
    objects.inbound_authorizations = vec![
        inbound_authorization(
            "shop",
            "payments",
            "2026-01-02T00:00:00Z",
            json!({
                "serviceAccountName": "payments",
                "ports": [
                    {"port": 8080, "mode": "strict",
                     "authorization": {"allowIdentities": ["spiffe://cluster.local/ns/shop/sa/orders"]}},
                    {"port": 0, "mode": "permissive", "authorization": {"allowUnauthenticated": true}}
                ]
            }),
        ),
        // Conflicts with the older one above.
        inbound_authorization(
            "shop",
            "payments-open",
            "2026-01-05T00:00:00Z",
            json!({
                "serviceAccountName": "payments",
                "ports": [{"port": 0, "mode": "permissive"}]
            }),
        ),
        // Invalid: plaintext callers in strict mode.
        inbound_authorization(
            "shop",
            "orders",
            "2026-01-02T00:00:00Z",
            json!({
                "serviceAccountName": "orders",
                "ports": [{"port": 0, "authorization": {"allowUnauthenticated": true}}]
            }),
        ),
    ];
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let mesh = translation.mesh.as_ref().expect("valid mesh");
    let workloads = &mesh.workloads;
    assert_eq!(workloads.len(), 1, "{workloads:?}");
    let w = &workloads[0];
    assert_eq!(
        (w.namespace.as_str(), w.service_account.as_str()),
        ("shop", "payments")
    );
    assert_eq!(w.inbound.len(), 2);
    assert_eq!(w.inbound[0].port, 8080);
    assert_eq!(w.inbound[0].mode, TlsModeSpec::Strict);
    assert_eq!(
        w.inbound[0].allow_identities[0].as_str(),
        "spiffe://cluster.local/ns/shop/sa/orders"
    );
    assert_eq!(w.inbound[1].mode, TlsModeSpec::Permissive);
    assert_eq!(w.inbound[1].allow_unauthenticated, Some(true));
    assert_eq!(translation.rejected, 2);
    assert_eq!(mesh.services.len(), 1, "services unaffected");
}

/// The checked-in CRDs are what the Rust types generate.
#[test]
fn checked_in_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s/crds");
    for (file, definition) in super::crd::definitions() {
        let want = super::crd::to_yaml(&definition).expect("CRD as YAML");
        let path = dir.join(file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} differs from the CRD generated from control-plane/src/source/kubernetes/crd.rs; \
             regenerate with: cargo run -p weft-control -- crds --out-dir deploy/k8s/crds",
            path.display()
        );
    }
}

fn http_route(ns: &str, name: &str, created: &str, spec: Value) -> Arc<DynamicObject> {
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "7",
                     "creationTimestamp": created, "generation": 3},
        "spec": spec,
        "status": {"parents": [{
            "parentRef": {"name": "edge", "kind": "Gateway", "group": "gateway.networking.k8s.io"},
            "controllerName": "example.com/other",
            "conditions": []
        }]}
    }))
}

/// payments and its canary, both in `shop`.
fn payments_and_canary() -> Objects {
    let mut objects = payments();
    objects.services.push(service(
        "shop",
        "payments-canary",
        "10.96.0.21",
        json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]),
    ));
    objects
}

fn condition<'a>(parent: &'a Value, kind: &str) -> (&'a str, &'a str) {
    let c = parent["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {parent}"));
    (
        c["status"].as_str().unwrap_or("?"),
        c["reason"].as_str().unwrap_or("?"),
    )
}

#[test]
fn an_httproute_on_a_service_becomes_its_routes_and_is_accepted() {
    let mut objects = payments_and_canary();
    objects.http_routes.push(http_route(
        "shop",
        "canary",
        "2026-01-02T00:00:00Z",
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "payments", "port": 80},
                           {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
            "rules": [
                {"backendRefs": [{"name": "payments", "port": 80, "weight": 90},
                                 {"name": "payments-canary", "port": 80, "weight": 10}]},
                {"matches": [{"path": {"type": "Exact", "value": "/v1/pay"},
                              "headers": [{"name": "x-canary", "value": "yes"}]}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"set": [{"name": "X-Routed", "value": "1"}]}}],
                 "backendRefs": [{"name": "payments-canary", "port": 80}],
                 "timeouts": {"request": "2s"}}
            ]
        }),
    ));
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let mesh = translation.mesh.expect("valid mesh");
    let payments = mesh.find("payments", "shop").expect("payments");
    let names: Vec<_> = payments.routes.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        [Some("canary.1".to_string()), Some("canary.0".to_string())],
        "the exact path match goes first"
    );
    let split = &payments.routes[1];
    assert_eq!(split.backends.len(), 2);
    assert_eq!(split.backends[0].service, "payments.shop");
    assert_eq!(split.backends[1].weight, 10);
    assert_eq!(
        split.matches[0]
            .path
            .as_ref()
            .and_then(|p| p.prefix.as_deref()),
        Some("/"),
        "no match is every path"
    );
    let exact = &payments.routes[0];
    assert_eq!(
        exact
            .filters
            .request_headers
            .as_ref()
            .map(|h| h.set.clone()),
        Some([("x-routed".to_string(), "1".to_string())].into())
    );
    assert!(exact.timeouts.as_ref().and_then(|t| t.request).is_some());

    assert_eq!(translation.route_statuses.len(), 1);
    let status = &translation.route_statuses[0];
    assert_eq!(status.parents.len(), 2, "{:?}", status.parents);
    assert_eq!(
        condition(&status.parents[1], "Accepted"),
        ("False", "NoMatchingParent"),
        "the Gateway edge does not exist"
    );
    assert_eq!(
        condition(&status.parents[0], "Accepted"),
        ("True", "Accepted")
    );
    assert_eq!(
        condition(&status.parents[0], "ResolvedRefs"),
        ("True", "ResolvedRefs")
    );
    assert_eq!(
        status.parents[0]["controllerName"],
        super::routes::CONTROLLER_NAME
    );
    assert_eq!(status.parents[0]["conditions"][0]["observedGeneration"], 3);
    let patch = status.patch();
    let parents = patch["status"]["parents"].as_array().expect("parents");
    assert_eq!(
        parents.len(),
        3,
        "the other controller's entry is kept: {patch}"
    );
}

#[test]
fn unresolved_backends_and_unsupported_filters_show_in_status_and_leave_the_mesh_valid() {
    let mut objects = payments_and_canary();
    objects.http_routes.push(http_route(
        "shop",
        "ghost",
        "2026-01-02T00:00:00Z",
        json!({
            "parentRefs": [{"kind": "Service", "name": "payments"}],
            "rules": [{"backendRefs": [{"name": "nowhere", "port": 80}]}]
        }),
    ));
    objects.http_routes.push(http_route(
        "shop",
        "mirror",
        "2026-01-03T00:00:00Z",
        json!({
            "parentRefs": [{"kind": "Service", "name": "payments-canary"}],
            "rules": [{"filters": [{"type": "RequestMirror",
                                    "requestMirror": {"backendRef": {"name": "payments"}}}]}]
        }),
    ));
    objects.http_routes.push(http_route(
        "shop",
        "orphan",
        "2026-01-04T00:00:00Z",
        json!({"parentRefs": [{"kind": "Service", "name": "missing"}], "rules": [{}]}),
    ));
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let mesh = translation.mesh.expect("the rest of the mesh stays valid");
    let payments = mesh.find("payments", "shop").expect("payments");
    assert_eq!(payments.routes.len(), 1);
    let abort = payments.routes[0]
        .filters
        .fault
        .as_ref()
        .and_then(|f| f.abort.as_ref())
        .map(|a| a.status);
    assert_eq!(abort, Some(500), "a rule with no valid backend answers 500");
    assert!(
        mesh.find("payments-canary", "shop")
            .expect("canary")
            .routes
            .is_empty(),
        "an unsupported route is not applied"
    );
    let by_name = |name: &str| {
        translation
            .route_statuses
            .iter()
            .find(|s| s.object.name == name)
            .unwrap_or_else(|| panic!("no status for {name}"))
    };
    let ghost = &by_name("ghost").parents[0];
    assert_eq!(condition(ghost, "Accepted"), ("True", "Accepted"));
    assert_eq!(
        condition(ghost, "ResolvedRefs"),
        ("False", "BackendNotFound")
    );
    let mirror = &by_name("mirror").parents[0];
    assert_eq!(condition(mirror, "Accepted"), ("False", "UnsupportedValue"));
    let orphan = &by_name("orphan").parents[0];
    assert_eq!(condition(orphan, "Accepted"), ("False", "NoMatchingParent"));
}

#[test]
fn a_grpcroute_matches_on_service_and_method() {
    let mut objects = payments_and_canary();
    objects.grpc_routes.push(object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "refunds", "namespace": "shop", "resourceVersion": "1",
                     "creationTimestamp": "2026-01-02T00:00:00Z", "generation": 1},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": "payments"}],
            "rules": [{"matches": [{"method": {"service": "shop.Payments", "method": "Refund"}}],
                       "backendRefs": [{"name": "payments-canary", "port": 80}]}]
        }
    })));
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let mesh = translation.mesh.expect("valid mesh");
    let route = &mesh.find("payments", "shop").expect("payments").routes[0];
    let grpc = route.matches[0].grpc.as_ref().expect("a gRPC match");
    assert_eq!(grpc.service.as_deref(), Some("shop.Payments"));
    assert_eq!(grpc.method.as_deref(), Some("Refund"));
    assert_eq!(route.backends[0].service, "payments-canary.shop");
    assert_eq!(
        condition(&translation.route_statuses[0].parents[0], "Accepted"),
        ("True", "Accepted")
    );
}

#[test]
fn route_hostnames_reach_the_routes_and_exact_names_go_first() {
    let mut objects = payments_and_canary();
    let to_canary = json!([{"name": "payments-canary", "port": 80}]);
    objects.http_routes.push(http_route(
        "shop",
        "any-host",
        "2026-01-01T00:00:00Z",
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "payments"}],
            "rules": [{"matches": [{"path": {"type": "Exact", "value": "/a"}}],
                       "backendRefs": to_canary}]
        }),
    ));
    objects.http_routes.push(http_route(
        "shop",
        "wild",
        "2026-01-02T00:00:00Z",
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "payments"}],
            "hostnames": ["*.pay.example"],
            "rules": [{"backendRefs": to_canary}]
        }),
    ));
    objects.http_routes.push(http_route(
        "shop",
        "exact",
        "2026-01-03T00:00:00Z",
        json!({
            "parentRefs": [{"group": "", "kind": "Service", "name": "payments"}],
            "hostnames": ["eu.pay.example", "*.pay.example"],
            "rules": [{"backendRefs": to_canary}]
        }),
    ));
    let mesh = valid_mesh(&objects);
    let routes = &mesh.find("payments", "shop").expect("payments").routes;
    let got: Vec<_> = routes
        .iter()
        .map(|r| (r.name.clone().unwrap_or_default(), r.hostnames.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "exact.0".to_string(),
                vec!["eu.pay.example".to_string(), "*.pay.example".to_string()]
            ),
            ("wild.0".to_string(), vec!["*.pay.example".to_string()]),
            ("any-host.0".to_string(), vec![]),
        ],
        "a route naming an exact host, then wildcards, then any host, whatever the path"
    );
}

fn gateway_api_object(kind: &str, ns: Option<&str>, name: &str, spec: Value) -> Arc<DynamicObject> {
    object(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"},
        "spec": spec,
    }))
}

#[test]
fn a_route_on_wefts_gateway_serves_from_the_gateways_service_and_others_get_no_status() {
    let mut objects = payments_and_canary();
    objects.services.push(service(
        "edge",
        "weft-gateway",
        "10.96.0.30",
        json!([{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]),
    ));
    objects.gateway_classes = vec![
        gateway_api_object(
            "GatewayClass",
            None,
            "weft",
            json!({"controllerName": "weft.io/gateway-controller"}),
        ),
        gateway_api_object(
            "GatewayClass",
            None,
            "other",
            json!({"controllerName": "example.com/other"}),
        ),
    ];
    objects.gateways = vec![
        gateway_api_object(
            "Gateway",
            Some("edge"),
            "weft-gateway",
            json!({"gatewayClassName": "weft", "listeners": []}),
        ),
        gateway_api_object(
            "Gateway",
            Some("edge"),
            "theirs",
            json!({"gatewayClassName": "other", "listeners": []}),
        ),
    ];
    let parents = json!([
        {"name": "weft-gateway", "namespace": "edge"},
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "theirs", "namespace": "edge"},
        {"name": "missing", "namespace": "edge"}
    ]);
    objects.http_routes.push(http_route(
        "shop",
        "storefront",
        "2026-01-02T00:00:00Z",
        json!({
            "parentRefs": parents,
            "hostnames": ["pay.example"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/pay"}}],
                       "backendRefs": [{"name": "payments", "port": 80, "weight": 9},
                                       {"name": "payments-canary", "port": 80, "weight": 1}]}]
        }),
    ));
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let mesh = translation.mesh.expect("valid mesh");
    let gateway = mesh
        .find("weft-gateway", "edge")
        .expect("the Gateway's Service");
    let names: Vec<_> = gateway
        .routes
        .iter()
        .map(|r| r.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["shop.storefront.0", "weft-gateway.no-route"]);
    assert_eq!(gateway.routes[0].hostnames, ["pay.example"]);
    assert_eq!(gateway.routes[0].backends[0].service, "payments.shop");
    let abort = gateway.routes[1]
        .filters
        .fault
        .as_ref()
        .and_then(|f| f.abort.as_ref());
    assert_eq!(abort.map(|a| a.status), Some(404), "what no route matched");
    assert!(
        mesh.find("payments", "shop")
            .expect("payments")
            .routes
            .is_empty()
    );

    let status = &translation.route_statuses[0];
    let got: Vec<_> = status
        .parents
        .iter()
        .map(|p| {
            (
                p["parentRef"]["name"].as_str().unwrap_or("?"),
                condition(p, "Accepted"),
                condition(p, "ResolvedRefs"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "weft-gateway",
                ("True", "Accepted"),
                ("True", "ResolvedRefs")
            ),
            (
                "missing",
                ("False", "NoMatchingParent"),
                ("True", "ResolvedRefs")
            ),
        ],
        "another class's Gateway gets no entry from Weft"
    );

    // Weft's Gateway without its Service: nothing to attach the rules to.
    objects
        .services
        .retain(|s| s.metadata.name.as_deref() != Some("weft-gateway"));
    let translation = Translator::new(TRUST_DOMAIN).translate(&objects);
    let parent = &translation.route_statuses[0].parents[0];
    assert_eq!(condition(parent, "Accepted"), ("False", "NoMatchingParent"));
}
