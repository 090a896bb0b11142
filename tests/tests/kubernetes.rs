//! Weft against a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler on loopback; see `weft_tests::cluster`):
//! the manifests of deploy/k8s install and their CRD rules hold; weft-control, with
//! only the RBAC those manifests give its ServiceAccount, serves Services,
//! EndpointSlices and TrafficPolicies; and ServiceAccount tokens from the TokenRequest
//! API prove an identity only for their own account, audience and living pod;
//! weft-control rides out an apiserver restart; a multi-port Service is one mesh
//! service with an endpoint set per port.
//!
//! The tests share one cluster per test binary, each in namespaces of its own (the
//! restart test, which breaks its cluster for a moment, starts its own). They
//! are skipped with a message without Go (the cluster is built from Go modules), and
//! fail instead under `CI=true`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use weft_api::v1;
use weft_api::v1::certify_request::Proof;
use weft_control::identity::proof::{IdentityProof, ProofError, Workload};
use weft_control::identity::token_review::TokenReviewer;
use weft_tests::cluster::Cluster;
use weft_tests::control::WeftControl;
use weft_tests::proxy::{ProxyConfig, WeftProxy};
use weft_tests::{STEP_DEADLINE, eventually, within};

/// How long the controllers may take to act on an object (the ReplicaSet controller
/// creating pods, a CRD becoming Established).
const CONTROLLER_DEADLINE: Duration = Duration::from_secs(60);

/// How often a deleted pod's token is reviewed again, every 0.5 s, until it is
/// refused: longer than kube-apiserver's 10 s cache of successful authentications.
const TOKEN_CACHE_POLLS: usize = 60;

/// weft-control serves from the Kubernetes API; the mesh file it is also given
/// is not read then.
const UNUSED_MESH: &str = "services: []\n";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// What `kubectl apply -k deploy/k8s` wrote on stderr (warnings), once per binary.
static APPLY_WARNINGS: OnceLock<Result<String, String>> = OnceLock::new();

/// The shared cluster with deploy/k8s applied once (the CRDs Established), or
/// `None` when the test is skipped.
fn installed(test: &str) -> Option<&'static Cluster> {
    let cluster = Cluster::shared(test)?;
    let result = APPLY_WARNINGS.get_or_init(|| install(cluster));
    if let Err(e) = result {
        panic!("{test}: kubectl apply -k deploy/k8s: {e}");
    }
    Some(cluster)
}

/// `kubectl apply -k deploy/k8s`, then waits for the CRDs to be Established;
/// returns kubectl's stderr (its warnings).
fn install(cluster: &Cluster) -> Result<String, String> {
    let dir = deploy_dir();
    let out = cluster
        .kubectl_output(&["apply", "-k", &dir.to_string_lossy()], None)
        .map_err(|e| format!("{e:#}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!(
            "kubectl apply -k failed ({}): {stderr}",
            out.status
        ));
    }
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/trafficpolicies.weft.io",
            "crd/inboundauthorizations.weft.io",
        ])
        .map_err(|e| format!("{e:#}"))?;
    Ok(stderr)
}

/// Creates namespace `name` (the tests share a cluster; each keeps to its own).
fn namespace(cluster: &Cluster, name: &str) {
    cluster
        .kubectl(&["create", "namespace", name])
        .expect("create the test's namespace");
}

/// weft-control watching the cluster as its ServiceAccount, with a real token: only
/// deploy/k8s/rbac.yaml's rights apply. Ready once every kind it watches is listed;
/// returned with the folder of its kubeconfig, which it needs while it runs.
async fn weft_control_as_its_account(cluster: &Cluster) -> (WeftControl, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a folder for the kubeconfig");
    let kubeconfig = cluster
        .service_account_kubeconfig(dir.path(), "weft-system", "weft-control")
        .expect("weft-control's kubeconfig");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let cp = WeftControl::start_with_env(
        UNUSED_MESH,
        &["--source", "kubernetes"],
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await
    .expect("weft-control lists everything it watches and becomes ready");
    (cp, dir)
}

/// No API request of weft-control's was refused: deploy/k8s/rbac.yaml grants all
/// it uses.
fn assert_nothing_forbidden(cp: &WeftControl) {
    let log = cp.output();
    assert!(
        !log.contains("forbidden"),
        "an API request was forbidden:\n{log}"
    );
}

/// The shared cluster with deploy/k8s and the Gateway API's CRDs installed, or
/// `None` when the test is skipped.
fn installed_with_gateway_api(test: &str) -> Option<&'static Cluster> {
    let cluster = installed(test)?;
    weft_tests::gateway_api::installed(cluster)?;
    Some(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_k8s_installs_on_a_real_apiserver_and_its_crd_rules_are_enforced() {
    let Some(cluster) = installed("deploy_k8s_installs_on_a_real_apiserver") else {
        return;
    };
    // The API server warns about what it ignores (a CRD's unknown formats, a
    // deprecated field): the manifests give it nothing to warn about.
    let warnings = APPLY_WARNINGS
        .get()
        .and_then(|r| r.as_ref().ok())
        .expect("applied");
    assert!(
        !warnings.contains("Warning"),
        "kubectl apply -k warned:\n{warnings}"
    );
    let version = cluster
        .kubectl(&["version", "-o", "json"])
        .expect("kubectl version");
    let version: serde_json::Value = serde_json::from_str(&version).expect("json");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.37.2");
    for crd in ["trafficpolicies.weft.io", "inboundauthorizations.weft.io"] {
        let established = cluster
            .kubectl(&[
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])
            .expect("read the CRD");
        assert_eq!(established, "True", "{crd} is Established");
    }

    // The Deployments' pods pass admission in weft-system, which enforces the
    // "restricted" Pod Security level: the ReplicaSet controller creates them all
    // (they stay Pending: the cluster has no node).
    for (app, replicas) in [("weft-control", 2), ("weft-injector", 2)] {
        let selector = format!("app.kubernetes.io/name={app}");
        eventually(CONTROLLER_DEADLINE, &format!("{app}'s pods"), || async {
            let pods = cluster
                .kubectl(&[
                    "get",
                    "pods",
                    "-n",
                    "weft-system",
                    "-l",
                    &selector,
                    "-o",
                    "name",
                ])
                .ok()?;
            (pods.lines().count() == replicas).then_some(())
        })
        .await;
        let refused = cluster
            .kubectl(&[
                "get",
                "events",
                "-n",
                "weft-system",
                "--field-selector",
                "reason=FailedCreate",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .expect("read events");
        assert!(refused.is_empty(), "pods were refused: {refused}");
    }

    namespace(cluster, "kd-crd");
    let policy = |spec: &str| {
        format!(
            "apiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: orders\n  \
             namespace: kd-crd\nspec:\n  targetRef: {{kind: Service, name: orders}}\n{spec}"
        )
    };
    cluster
        .apply(&policy(
            "  loadBalancer: consistent-hash\n  hashKey: {header: x-user}\n  \
             retry: {maxAttempts: 3, retryOnStatus: [503], backoffBase: 25ms}\n  \
             timeouts: {request: 2s}\n",
        ))
        .expect("a valid TrafficPolicy is accepted");

    // Each CEL rule of the schema refuses what it should, with its own message.
    for (spec, message) in [
        (
            "  loadBalancer: consistent-hash\n",
            "consistent-hash needs a hashKey (header or clientIdentity)",
        ),
        (
            "  loadBalancer: round-robin\n  hashKey: {header: x-user}\n",
            "hashKey is only meaningful with loadBalancer consistent-hash",
        ),
        (
            "  loadBalancer: consistent-hash\n  hashKey: {header: x-user, clientIdentity: true}\n",
            "name exactly one key, header or clientIdentity",
        ),
    ] {
        let out = cluster
            .kubectl_output(&["apply", "-f", "-"], Some(&policy(spec)))
            .expect("run kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{spec}");
        assert!(stderr.contains(message), "{stderr:?} lacks {message:?}");
    }
    let strict_unauthenticated = "apiVersion: weft.io/v1alpha1\nkind: InboundAuthorization\n\
        metadata:\n  name: orders\n  namespace: kd-crd\nspec:\n  serviceAccountName: orders\n  \
        ports:\n  - port: 8080\n    mode: strict\n    authorization: {allowUnauthenticated: true}\n";
    let out = cluster
        .kubectl_output(&["apply", "-f", "-"], Some(strict_unauthenticated))
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted a strict port open to plaintext"
    );
    assert!(
        stderr.contains("allowUnauthenticated is only meaningful in permissive mode"),
        "{stderr:?}"
    );
    // The refused ones changed nothing.
    let stored = cluster
        .kubectl(&[
            "get",
            "trafficpolicy",
            "orders",
            "-n",
            "kd-crd",
            "-o",
            "jsonpath={.spec.loadBalancer}",
        ])
        .expect("read the policy");
    assert_eq!(stored, "consistent-hash");
}

/// A Discovery watch of one destination, as a proxy holds it, acknowledging every
/// update; keeps the destination's latest state.
struct Watch {
    acks: tokio::sync::mpsc::Sender<v1::WatchRequest>,
    updates: tonic::Streaming<v1::ServiceUpdate>,
    service: Option<v1::ServiceInfo>,
    endpoints: Vec<v1::Endpoint>,
    policy: Option<v1::TrafficPolicy>,
    routes: Vec<v1::Route>,
    port_endpoints: Vec<v1::PortEndpoints>,
}

impl Watch {
    async fn start(grpc: std::net::SocketAddr, node_namespace: &str, service: &str) -> Watch {
        let destination = v1::subscribe::Destination::Service(service.into());
        Self::start_for(grpc, node_namespace, destination).await
    }

    async fn start_for(
        grpc: std::net::SocketAddr,
        node_namespace: &str,
        destination: v1::subscribe::Destination,
    ) -> Watch {
        let mut client = within(
            STEP_DEADLINE,
            "connecting to weft-control",
            v1::discovery_client::DiscoveryClient::connect(format!("http://{grpc}")),
        )
        .await
        .expect("connect to the discovery API");
        let (acks, requests) = tokio::sync::mpsc::channel(16);
        let subscribe = v1::WatchRequest {
            kind: Some(v1::watch_request::Kind::Subscribe(v1::Subscribe {
                node: Some(v1::Node {
                    id: "kubernetes-test".into(),
                    namespace: node_namespace.into(),
                    service_account: "default".into(),
                    ..Default::default()
                }),
                destination: Some(destination),
            })),
        };
        acks.send(subscribe).await.expect("queue the subscription");
        let updates = within(
            STEP_DEADLINE,
            "opening the watch",
            client.watch(ReceiverStream::new(requests)),
        )
        .await
        .expect("watch")
        .into_inner();
        Watch {
            acks,
            updates,
            service: None,
            endpoints: Vec::new(),
            policy: None,
            routes: Vec::new(),
            port_endpoints: Vec::new(),
        }
    }

    /// Applies updates until `done` holds for the destination's state.
    async fn until(&mut self, what: &str, done: impl Fn(&Watch) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
        while !done(self) {
            let update = tokio::time::timeout_at(deadline, self.updates.message())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{what}: not served within {STEP_DEADLINE:?}; served: {:?} at {:?}",
                        self.service.as_ref().map(|s| (&s.name, &s.vips)),
                        self.endpoints
                    )
                })
                .expect("the watch failed")
                .expect("the watch ended");
            self.apply(&update);
            let ack = v1::WatchRequest {
                kind: Some(v1::watch_request::Kind::Result(v1::UpdateResult {
                    version: update.version,
                    applied: true,
                    error: String::new(),
                })),
            };
            self.acks.send(ack).await.expect("acknowledge the update");
        }
    }

    fn apply(&mut self, update: &v1::ServiceUpdate) {
        self.service = update.service.clone();
        match &update.endpoints {
            Some(v1::service_update::Endpoints::Full(set)) => {
                self.endpoints = set.endpoints.clone();
                self.port_endpoints = update.port_endpoints.clone();
            }
            Some(v1::service_update::Endpoints::Delta(delta)) => {
                self.endpoints.retain(|e| {
                    !delta
                        .removed
                        .contains(e.address.as_ref().unwrap_or(&Default::default()))
                        && !delta.upserted.iter().any(|u| u.address == e.address)
                });
                self.endpoints.extend(delta.upserted.iter().cloned());
            }
            None => {}
        }
        if update.policy.is_some() {
            self.policy = update.policy.clone();
        }
        // A full update carries the routes as they are; a delta only when they changed.
        if !update.routes.is_empty()
            || matches!(
                update.endpoints,
                Some(v1::service_update::Endpoints::Full(_))
            )
        {
            self.routes = update.routes.clone();
        }
    }

    /// The routes' backends as (service, weight), in order.
    fn route_backends(&self) -> Vec<(String, u32)> {
        self.routes
            .iter()
            .flat_map(|r| r.backends.iter().map(|b| (b.service.clone(), b.weight)))
            .collect()
    }

    fn addresses(&self) -> Vec<String> {
        sorted_addresses(&self.endpoints)
    }

    /// The addresses a connection to the service's `port` is balanced over: the
    /// port's own set, or the service's.
    fn port_addresses(&self, port: u32) -> Vec<String> {
        match self.port_endpoints.iter().find(|p| p.port == port) {
            Some(own) => sorted_addresses(own.endpoints.as_ref().map_or(&[], |s| &s.endpoints)),
            None => self.addresses(),
        }
    }
}

fn sorted_addresses(endpoints: &[v1::Endpoint]) -> Vec<String> {
    let mut out: Vec<String> = endpoints
        .iter()
        .filter_map(|e| e.address.as_ref())
        .map(|a| format!("{}:{}", a.ip, a.port))
        .collect();
    out.sort();
    out
}

fn endpoint_slice(namespace: &str, name: &str, ips: &[&str]) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\n  labels:\n    kubernetes.io/service-name: orders\n    \
         endpointslice.kubernetes.io/managed-by: weft-tests\naddressType: IPv4\nports:\n\
         - {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n{endpoints}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_control_serves_a_real_apiservers_services_and_policies_with_its_own_rbac() {
    let Some(cluster) = installed("weft_control_serves_a_real_apiservers_services") else {
        return;
    };
    let ns = "kd-serve";
    namespace(cluster, ns);
    let cluster_ip = orders_service(cluster, ns);
    cluster
        .apply(&endpoint_slice(ns, "orders-a", &["10.244.1.5"]))
        .expect("create the EndpointSlice");
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");

    // weft-control runs as its ServiceAccount with a real token: only the RBAC of
    // deploy/k8s/rbac.yaml lets it list and watch, and it is ready only once every
    // kind it watches has been listed.
    let (cp, _kubeconfig) = weft_control_as_its_account(cluster).await;

    let mut watch = Watch::start(cp.grpc(), ns, &format!("orders.{ns}")).await;
    watch
        .until("the Service and its endpoint", |w| {
            w.service.is_some() && w.addresses() == ["10.244.1.5:8080"]
        })
        .await;
    let service = watch.service.clone().expect("service");
    assert_eq!(service.name, "orders");
    assert_eq!(service.namespace, ns);
    assert!(service.vips.contains(&cluster_ip), "{:?}", service.vips);
    let port = service.ports.first().expect("a port");
    assert_eq!((port.port, port.protocol), (80, v1::Protocol::Http1 as i32));

    // A second slice adds to the endpoints; a TrafficPolicy sets how it is called.
    cluster
        .apply(&endpoint_slice(ns, "orders-b", &["10.244.2.7"]))
        .expect("create the second EndpointSlice");
    watch
        .until("both slices' endpoints", |w| {
            w.addresses() == ["10.244.1.5:8080", "10.244.2.7:8080"]
        })
        .await;
    cluster
        .apply(&format!(
            "apiVersion: weft.io/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: orders\n  \
             namespace: {ns}\nspec:\n  targetRef: {{kind: Service, name: orders}}\n  \
             loadBalancer: round-robin\n  retry: {{maxAttempts: 3}}\n"
        ))
        .expect("create the TrafficPolicy");
    watch
        .until("the TrafficPolicy", |w| {
            w.policy.as_ref().is_some_and(|p| {
                matches!(
                    p.load_balancer
                        .as_ref()
                        .and_then(|lb| lb.algorithm.as_ref()),
                    Some(v1::load_balancer::Algorithm::RoundRobin(_))
                ) && p.retry.as_ref().is_some_and(|r| r.max_attempts == 3)
            })
        })
        .await;

    // An InboundAuthorization reaches the proxies of its ServiceAccount.
    cluster
        .apply(&format!(
            "apiVersion: weft.io/v1alpha1\nkind: InboundAuthorization\nmetadata:\n  \
             name: orders\n  namespace: {ns}\nspec:\n  serviceAccountName: orders\n  ports:\n  \
             - port: 8080\n    mode: permissive\n    authorization: {{allowNamespaces: [{ns}]}}\n"
        ))
        .expect("create the InboundAuthorization");
    let mut policy = within(
        STEP_DEADLINE,
        "connecting to weft-control",
        v1::policy_client::PolicyClient::connect(format!("http://{}", cp.grpc())),
    )
    .await
    .expect("connect to the policy API");
    let mut inbound = within(
        STEP_DEADLINE,
        "opening the inbound policy watch",
        policy.watch_inbound(v1::InboundRequest {
            node: Some(v1::Node {
                id: "kubernetes-test".into(),
                namespace: ns.into(),
                service_account: "orders".into(),
                ..Default::default()
            }),
        }),
    )
    .await
    .expect("watch inbound policy")
    .into_inner();
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        let update = tokio::time::timeout_at(deadline, inbound.message())
            .await
            .expect("the InboundAuthorization was not served in time")
            .expect("the inbound watch failed")
            .expect("the inbound watch ended");
        let served = update.ports.iter().any(|p| {
            p.port == 8080
                && p.mode == v1::TlsMode::Permissive as i32
                && p.authorization
                    .as_ref()
                    .is_some_and(|a| a.allow_namespaces == [ns])
        });
        if served {
            break;
        }
    }

    assert_nothing_forbidden(&cp);
}

/// An EndpointSlice of Service `service` whose endpoints `ips` serve `ports` (name,
/// port); the test writes it (no selector, so no controller does).
fn named_slice(ns: &str, service: &str, name: &str, ports: &[(&str, u16)], ips: &[&str]) -> String {
    let ports: String = ports
        .iter()
        .map(|(port_name, port)| format!("- {{name: {port_name}, port: {port}, protocol: TCP}}\n"))
        .collect();
    let endpoints: String = ips
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {service}\n    \
         endpointslice.kubernetes.io/managed-by: weft-tests\naddressType: IPv4\nports:\n\
         {ports}endpoints:\n{endpoints}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_port_service_is_one_mesh_service_with_an_endpoint_set_per_port() {
    let Some(cluster) = installed("a_multi_port_service_is_one_mesh_service") else {
        return;
    };
    let ns = "kd-ports";
    namespace(cluster, ns);
    // Named targetPorts: each pod template says which container port they are.
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: payments\n  namespace: {ns}\n\
             spec:\n  ports:\n  - {{name: http, port: 8080, targetPort: http, appProtocol: http}}\n  \
             - {{name: grpc, port: 9090, targetPort: grpc, appProtocol: grpc}}\n"
        ))
        .expect("create the Service");
    let cluster_ip = cluster
        .kubectl(&[
            "get",
            "service",
            "payments",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect("read the cluster IP");
    // A rollout in progress: the old pods serve http on 18080 and no grpc, the new
    // ones http on 28080 and grpc on 29090.
    cluster
        .apply(&named_slice(
            ns,
            "payments",
            "payments-old",
            &[("http", 18080)],
            &["10.244.3.5"],
        ))
        .expect("create the old pods' EndpointSlice");
    cluster
        .apply(&named_slice(
            ns,
            "payments",
            "payments-new",
            &[("http", 28080), ("grpc", 29090)],
            &["10.244.3.6"],
        ))
        .expect("create the new pods' EndpointSlice");

    let (cp, _kubeconfig) = weft_control_as_its_account(cluster).await;
    // As a captured connection to the cluster IP's second port asks for it.
    let vip = v1::SocketAddress {
        ip: cluster_ip.clone(),
        port: 9090,
    };
    let mut watch = Watch::start_for(cp.grpc(), ns, v1::subscribe::Destination::Vip(vip)).await;
    watch
        .until("each port's endpoints at its own target ports", |w| {
            w.port_addresses(9090) == ["10.244.3.6:29090"]
                && w.port_addresses(8080) == ["10.244.3.5:18080", "10.244.3.6:28080"]
        })
        .await;
    let service = watch.service.clone().expect("service");
    assert_eq!(
        service.name, "payments",
        "one mesh service, not `9090-payments`"
    );
    let ports: Vec<(u32, i32)> = service.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(
        ports,
        [
            (8080, v1::Protocol::Http1 as i32),
            (9090, v1::Protocol::Grpc as i32)
        ]
    );
    assert!(service.vips.contains(&cluster_ip), "{:?}", service.vips);

    // The old pods go: both ports reach only the new pods, each at its own port.
    cluster
        .kubectl(&["delete", "endpointslice", "payments-old", "-n", ns])
        .expect("delete the old pods' EndpointSlice");
    watch
        .until("the old pods gone from every port", |w| {
            w.port_addresses(8080) == ["10.244.3.6:28080"]
                && w.port_addresses(9090) == ["10.244.3.6:29090"]
        })
        .await;
}

/// A Service `orders` in `ns` without a selector (its EndpointSlices are the
/// test's to write; the addresses are never dialled); returns its cluster IP.
fn orders_service(cluster: &Cluster, ns: &str) -> String {
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: orders\n  namespace: {ns}\n\
             spec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, appProtocol: http}}\n"
        ))
        .expect("create the Service");
    cluster
        .kubectl(&[
            "get",
            "service",
            "orders",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect("read the cluster IP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_control_keeps_serving_through_an_apiserver_restart_and_catches_up() {
    let Some(mut cluster) =
        Cluster::start("weft_control_keeps_serving_through_an_apiserver_restart").expect("start")
    else {
        return;
    };
    install(&cluster).expect("kubectl apply -k deploy/k8s");
    let ns = "kd-restart";
    namespace(&cluster, ns);
    orders_service(&cluster, ns);
    cluster
        .apply(&endpoint_slice(ns, "orders-a", &["10.244.1.5"]))
        .expect("create the EndpointSlice");
    let (mut cp, _kubeconfig) = weft_control_as_its_account(&cluster).await;
    let mut watch = Watch::start(cp.grpc(), ns, &format!("orders.{ns}")).await;
    watch
        .until("the first endpoint", |w| {
            w.addresses() == ["10.244.1.5:8080"]
        })
        .await;

    cluster
        .restart_apiserver()
        .await
        .expect("restart kube-apiserver");
    // Its watches broke; it keeps what it had, resumes, and serves what changed.
    let ready = weft_tests::admin::get(cp.admin(), "/ready")
        .await
        .expect("admin");
    assert_eq!(ready.status, 200, "still ready with its last state");
    cluster
        .apply(&endpoint_slice(ns, "orders-b", &["10.244.2.7"]))
        .expect("create the second EndpointSlice");
    watch
        .until("the endpoint added after the restart", |w| {
            w.addresses() == ["10.244.1.5:8080", "10.244.2.7:8080"]
        })
        .await;
    assert!(
        cp.process()
            .expect("weft-control runs")
            .try_exit()
            .expect("status")
            .is_none(),
        "weft-control exited"
    );
    drop(cp);

    // A cluster of its own stops on drop with nothing left behind.
    let pids = cluster.pids();
    let dir = cluster.dir().to_path_buf();
    assert_eq!(pids.len(), 4);
    drop(cluster);
    for pid in pids {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
        assert_eq!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH),
            "process {pid} outlived its cluster"
        );
    }
    assert!(!dir.exists(), "{} outlived its cluster", dir.display());
}

/// Makes pod `name` look as a kubelet would report it running and ready at `ip`
/// (there is no kubelet): the EndpointSlice controller then lists it.
fn report_running(cluster: &Cluster, ns: &str, name: &str, ip: &str) {
    let status = format!(
        "{{\"status\":{{\"phase\":\"Running\",\"podIP\":\"{ip}\",\"podIPs\":[{{\"ip\":\"{ip}\"}}],\
         \"conditions\":[{{\"type\":\"Ready\",\"status\":\"True\"}}]}}}}"
    );
    cluster
        .kubectl(&[
            "patch",
            "pod",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .expect("report the pod running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_from_the_endpointslice_controller_carry_injected_pods_identities() {
    let Some(cluster) = installed("endpoints_from_the_endpointslice_controller") else {
        return;
    };
    let ns = "kd-pods";
    namespace(cluster, ns);
    cluster
        .kubectl(&["create", "serviceaccount", "orders", "-n", ns])
        .expect("create the ServiceAccount");
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: orders\n  namespace: {ns}\n\
             spec:\n  selector: {{app: orders}}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n"
        ))
        .expect("create the Service");
    // The EndpointSlice controller lists only pods on a Node it knows. This one has
    // no kubelet: the node lifecycle controller marks its pods not ready only once
    // its grace period (40 s and more) passes without a heartbeat.
    cluster
        .apply("apiVersion: v1\nkind: Node\nmetadata:\n  name: kd-pods-node\n")
        .expect("create the Node");
    // One pod as the injector leaves it (the proxy a native sidecar), one without.
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: meshed\n  namespace: {ns}\n  \
             labels: {{app: orders}}\nspec:\n  nodeName: kd-pods-node\n  serviceAccountName: orders\n  initContainers:\n  \
             - {{name: weft-proxy, image: registry.invalid/weft-proxy:1, restartPolicy: Always}}\n  \
             containers:\n  - name: app\n    image: registry.invalid/app:1\n    \
             ports: [{{containerPort: 8080}}]\n"
        ))
        .expect("create the meshed pod");
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\n  namespace: {ns}\n  \
             labels: {{app: orders}}\nspec:\n  nodeName: kd-pods-node\n  containers:\n  - name: app\n    \
             image: registry.invalid/app:1\n    ports: [{{containerPort: 8080}}]\n"
        ))
        .expect("create the plain pod");
    report_running(cluster, ns, "meshed", "10.244.3.10");
    report_running(cluster, ns, "plain", "10.244.3.11");

    let (cp, _kubeconfig) = weft_control_as_its_account(cluster).await;
    let mut watch = Watch::start(cp.grpc(), ns, &format!("orders.{ns}")).await;
    watch
        .until("both pods as endpoints", |w| {
            w.addresses() == ["10.244.3.10:8080", "10.244.3.11:8080"]
        })
        .await;
    let identity = |ip: &str| {
        watch
            .endpoints
            .iter()
            .find(|e| e.address.as_ref().is_some_and(|a| a.ip == ip))
            .map(|e| (e.identity.clone(), e.state))
            .expect("endpoint")
    };
    let ready = v1::EndpointState::Ready as i32;
    assert_eq!(
        identity("10.244.3.10"),
        (format!("spiffe://cluster.local/ns/{ns}/sa/orders"), ready),
        "the injected pod is called with mTLS as its ServiceAccount"
    );
    assert_eq!(
        identity("10.244.3.11"),
        (String::new(), ready),
        "the uninjected pod is called in plaintext"
    );
}

fn workload(namespace: &str, service_account: &str) -> Workload {
    Workload {
        namespace: namespace.into(),
        service_account: service_account.into(),
    }
}

async fn reviewer(kubeconfig: &Path) -> TokenReviewer {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    TokenReviewer::from_config(config, "weft".into(), STEP_DEADLINE).expect("reviewer")
}

async fn verify(r: &TokenReviewer, token: &str, claimed: &Workload) -> Result<(), ProofError> {
    within(
        STEP_DEADLINE,
        "a TokenReview",
        r.verify(
            Some(&Proof::ServiceAccountToken(token.to_string())),
            claimed,
        ),
    )
    .await
}

fn rejected_because(result: Result<(), ProofError>, why: &str) {
    match result {
        Err(ProofError::Rejected(msg)) => assert!(msg.contains(why), "{msg:?} lacks {why:?}"),
        other => panic!("expected a rejection ({why}), got {other:?}"),
    }
}

/// A pod that never runs (the cluster has no node), under ServiceAccount `sa`.
fn pod(namespace: &str, name: &str, sa: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
         spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    \
         image: registry.invalid/app:1\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_service_account_tokens_prove_only_their_own_account_audience_and_pod() {
    let Some(cluster) = installed("real_service_account_tokens_prove_only_their_own") else {
        return;
    };
    let ns = "kd-tokens";
    namespace(cluster, ns);
    for sa in ["orders", "admin"] {
        cluster
            .kubectl(&["create", "serviceaccount", sa, "-n", ns])
            .expect("create the ServiceAccount");
    }
    cluster
        .apply(&pod(ns, "orders-0", "orders"))
        .expect("create the orders pod");
    cluster
        .apply(&pod(ns, "admin-0", "admin"))
        .expect("create the admin pod");
    // What the kubelet would project into each pod: a token for audience weft, bound
    // to the pod.
    let orders_token = cluster
        .token(ns, "orders", Some("weft"), Some("orders-0"))
        .expect("the orders pod's token");
    let admin_token = cluster
        .token(ns, "admin", Some("weft"), Some("admin-0"))
        .expect("the admin pod's token");
    let orders_api_token = cluster
        .token(ns, "orders", None, Some("orders-0"))
        .expect("the orders pod's API token");
    let orders_other_token = cluster
        .token(ns, "orders", Some("another-mesh"), Some("orders-0"))
        .expect("a token for another audience");

    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = cluster
        .service_account_kubeconfig(dir.path(), "weft-system", "weft-control")
        .expect("weft-control's kubeconfig");
    let r = reviewer(&kubeconfig).await;
    let orders = workload(ns, "orders");

    verify(&r, &orders_token, &orders)
        .await
        .expect("the pod's own token proves its account");
    rejected_because(
        verify(&r, &admin_token, &orders).await,
        &format!("system:serviceaccount:{ns}:admin"),
    );
    verify(&r, &admin_token, &workload(ns, "admin"))
        .await
        .expect("it does prove the admin account");
    for (token, what) in [
        (&orders_api_token, "the API server's audience"),
        (&orders_other_token, "another audience"),
    ] {
        match verify(&r, token, &orders).await {
            Err(ProofError::Rejected(msg)) => assert!(msg.contains("not valid"), "{what}: {msg}"),
            other => panic!("a token for {what} was not refused: {other:?}"),
        }
    }

    // weft-control itself, asked by a proxy with the pod's token file.
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let cp = WeftControl::start_with_env(
        "services:\n  - name: placeholder\n    endpoints: []\n",
        &["--identity-proof", "kubernetes"],
        &[("KUBECONFIG", &kubeconfig), ("WEFT_TOKEN_AUDIENCE", "weft")],
    )
    .await
    .expect("start weft-control with the TokenReview proof");
    // A proxy of shop/orders with the token in `file`.
    let orders_proxy = |file: &Path| {
        let mut config = ProxyConfig::new();
        config.extra = format!(
            "node: {{namespace: {ns}, service_account: orders}}\nidentity:\n  \
             trust_domain: cluster.local\n  token_file: \"{}\"\n  control_plane: \"{}\"\n",
            file.display(),
            cp.url()
        );
        config
    };
    let token_file = dir.path().join("orders-token");
    std::fs::write(&token_file, &orders_token).expect("token file");
    let proxy = WeftProxy::start_named("orders-proxy", orders_proxy(&token_file))
        .await
        .expect("the proxy gets a certificate with its pod's token and is ready");
    drop(proxy);

    // The admin pod's token, claiming orders: refused, so no certificate.
    let stolen_file = dir.path().join("stolen-token");
    std::fs::write(&stolen_file, &admin_token).expect("token file");
    let config = orders_proxy(&stolen_file);
    let admin = config.admin;
    let path = dir.path().join("impostor.yaml");
    std::fs::write(&path, config.to_yaml()).expect("write config");
    let cmd = weft_tests::proxy::proxy_command(&["run", "--config", &path.to_string_lossy()])
        .expect("command");
    let _impostor =
        weft_tests::process::Process::spawn("impostor-proxy", cmd, dir.path()).expect("spawn");
    eventually(STEP_DEADLINE, "a refused certificate request", || async {
        let reply = weft_tests::admin::get(cp.admin(), "/metrics").await.ok()?;
        let denied = weft_tests::metrics::Metrics::parse(&reply.body)
            .value("weft_control_certificates_total", &[("result", "denied")]);
        (denied >= 1.0).then_some(())
    })
    .await;
    let ready = weft_tests::admin::get(admin, "/ready")
        .await
        .expect("the impostor's admin port");
    assert_eq!(ready.status, 503, "no certificate, not ready");

    // A bound token dies with its pod; kube-apiserver remembers a successful
    // authentication for 10 s, so the refusal may come only after that.
    cluster
        .kubectl(&["delete", "pod", "orders-0", "-n", ns, "--wait=true"])
        .expect("delete the orders pod");
    let mut last = None;
    for _ in 0..TOKEN_CACHE_POLLS {
        match verify(&r, &orders_token, &orders).await {
            Err(ProofError::Rejected(msg)) => {
                assert!(msg.contains("not valid"), "{msg}");
                last = None;
                break;
            }
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(other) = last {
        panic!("a deleted pod's token was still not refused: {other:?}");
    }
    verify(&r, &admin_token, &workload(ns, "admin"))
        .await
        .expect("the other pod's token still proves its account");
}

/// A selectorless Service `name` with one endpoint at `ip` (never dialled).
fn service_at(cluster: &Cluster, ns: &str, name: &str, ip: &str) {
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, appProtocol: http}}\n"
        ))
        .expect("create the Service");
    cluster
        .apply(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-a\n  \
             namespace: {ns}\n  labels:\n    kubernetes.io/service-name: {name}\n    \
             endpointslice.kubernetes.io/managed-by: weft-tests\naddressType: IPv4\nports:\n\
             - {{name: http, port: 8080, protocol: TCP}}\nendpoints:\n\
             - addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"
        ))
        .expect("create the EndpointSlice");
}

fn canary_route(ns: &str, stable: u32, canary: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  \
         name: canary\n  namespace: {ns}\nspec:\n  parentRefs:\n  \
         - {{group: \"\", kind: Service, name: orders, port: 80}}\n  rules:\n  \
         - backendRefs:\n    - {{name: orders, port: 80, weight: {stable}}}\n    \
         - {{name: orders-canary, port: 80, weight: {canary}}}\n"
    )
}

/// The proxies' side of an HTTPRoute (the data path's split of traffic by these
/// routes is tests/tests/routes.rs's): the route reaches a proxy's watch of the
/// Service, follows the route's edits, and the route shows Accepted and
/// ResolvedRefs from Weft. The Service's endpoints are never dialled (the API
/// server refuses loopback endpoints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_applied_with_kubectl_reaches_the_proxies_watch_and_is_accepted() {
    let Some(cluster) =
        installed_with_gateway_api("an_httproute_applied_with_kubectl_reaches_the_proxies")
    else {
        return;
    };
    let ns = "kd-routes";
    namespace(cluster, ns);
    service_at(cluster, ns, "orders", "10.244.3.5");
    service_at(cluster, ns, "orders-canary", "10.244.3.6");

    // weft-control finds the Gateway API at start, so it starts after the CRDs.
    let (cp, _kubeconfig) = weft_control_as_its_account(cluster).await;
    let mut watch = Watch::start(cp.grpc(), ns, &format!("orders.{ns}")).await;
    watch
        .until("orders without routes", |w| {
            w.service.is_some() && w.addresses() == ["10.244.3.5:8080"] && w.routes.is_empty()
        })
        .await;

    cluster
        .apply(&canary_route(ns, 100, 0))
        .expect("apply the HTTPRoute");
    let canary = format!("orders-canary.{ns}");
    let stable = format!("orders.{ns}");
    watch
        .until("the HTTPRoute as orders' route", |w| {
            w.route_backends() == [(stable.clone(), 100), (canary.clone(), 0)]
        })
        .await;
    assert_eq!(watch.routes[0].name, "canary.0");
    cluster
        .apply(&canary_route(ns, 90, 10))
        .expect("shift 10 % to the canary");
    watch
        .until("the shifted weights", |w| {
            w.route_backends() == [(stable.clone(), 90), (canary.clone(), 10)]
        })
        .await;

    let accepted = eventually(
        STEP_DEADLINE,
        "Accepted in the HTTPRoute's status",
        || async {
            let status = cluster
                .kubectl(&[
                    "get",
                    "httproute",
                    "canary",
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.status.parents[0].controllerName} \
                 {.status.parents[0].conditions[?(@.type==\"Accepted\")].status} \
                 {.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].status} \
                 {.status.parents[0].conditions[0].observedGeneration}",
                ])
                .ok()?;
            (status == "weft.io/gateway-controller True True 2").then_some(status)
        },
    )
    .await;
    assert!(accepted.ends_with(" 2"), "{accepted}");
    assert_nothing_forbidden(&cp);
}

/// `parents[]` of an HTTPRoute's status as "name Accepted-status reason
/// ResolvedRefs-status" entries, Weft's only.
fn route_parents(cluster: &Cluster, ns: &str, name: &str) -> Option<Vec<String>> {
    let text = cluster
        .kubectl(&[
            "get",
            "httproute",
            name,
            "-n",
            ns,
            "-o",
            "jsonpath={range .status.parents[?(@.controllerName==\"weft.io/gateway-controller\")]}\
             {.parentRef.name} {.conditions[?(@.type==\"Accepted\")].status} \
             {.conditions[?(@.type==\"Accepted\")].reason} \
             {.conditions[?(@.type==\"ResolvedRefs\")].status}{\"\\n\"}{end}",
        ])
        .ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// An HTTPRoute whose parent is Weft's Gateway: its rules reach the gateway's
/// Service (where the gateway's hosts send), ending in the 404 catch-all; its
/// status says Accepted for that Gateway and NoMatchingParent for one that does
/// not exist, and nothing for another controller's Gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_on_wefts_gateway_reaches_the_gateways_service_with_parent_status() {
    let Some(cluster) = installed_with_gateway_api("an_httproute_on_wefts_gateway") else {
        return;
    };
    let ns = "kd-gw-routes";
    namespace(cluster, ns);
    service_at(cluster, ns, "weft-gateway", "10.244.4.5");
    service_at(cluster, ns, "orders", "10.244.4.6");
    for (class, controller) in [
        ("weft-test", "weft.io/gateway-controller"),
        ("other-test", "example.com/other"),
    ] {
        cluster
            .apply(&format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata:\n  \
                 name: {class}\nspec:\n  controllerName: {controller}\n"
            ))
            .expect("create the GatewayClass");
    }
    for (gateway, class) in [("weft-gateway", "weft-test"), ("theirs", "other-test")] {
        cluster
            .apply(&format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  \
                 name: {gateway}\n  namespace: {ns}\nspec:\n  gatewayClassName: {class}\n  \
                 listeners:\n  - {{name: http, protocol: HTTP, port: 80}}\n"
            ))
            .expect("create the Gateway");
    }

    let (cp, _kubeconfig) = weft_control_as_its_account(cluster).await;
    let mut watch = Watch::start(cp.grpc(), ns, &format!("weft-gateway.{ns}")).await;
    watch
        .until("the gateway's Service without routes", |w| {
            w.service.is_some() && w.routes.is_empty()
        })
        .await;
    cluster
        .apply(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  \
             name: storefront\n  namespace: {ns}\nspec:\n  parentRefs:\n  \
             - {{name: weft-gateway}}\n  - {{name: theirs}}\n  - {{name: missing}}\n  \
             hostnames: [shop.example]\n  rules:\n  \
             - matches: [{{path: {{type: PathPrefix, value: /orders}}}}]\n    \
               backendRefs: [{{name: orders, port: 80}}]\n"
        ))
        .expect("apply the HTTPRoute");
    watch
        .until(
            "the route and the catch-all on the gateway's Service",
            |w| {
                w.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()
                    == ["storefront.0", "weft-gateway.no-route"]
            },
        )
        .await;
    assert_eq!(watch.routes[0].hostnames, ["shop.example"]);
    assert_eq!(
        watch.route_backends(),
        [(format!("orders.{ns}"), 1)],
        "the catch-all has no backend"
    );
    let parents = eventually(STEP_DEADLINE, "the HTTPRoute's parent status", || async {
        let parents = route_parents(cluster, ns, "storefront")?;
        (parents.len() == 2).then_some(parents)
    })
    .await;
    assert_eq!(
        parents,
        [
            "weft-gateway True Accepted True",
            "missing False NoMatchingParent True"
        ]
    );
    assert_nothing_forbidden(&cp);
}
