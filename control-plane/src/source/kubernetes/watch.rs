//! One reflector per watched kind. kube's watcher lists, then watches; after an API
//! error it backs off and resumes (relisting when the server says the watch is too
//! old). The store is only replaced when a relist completes, so an error never
//! empties it: the mesh keeps its last state until the API answers again.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures_util::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::crd::{InboundAuthorization, TrafficPolicy};
use super::translate::Objects;

/// The last complete state of every watched kind.
#[derive(Clone)]
pub struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    traffic_policies: Store<DynamicObject>,
    inbound_authorizations: Store<DynamicObject>,
    /// None when the cluster has no Gateway API CRDs for the kind.
    http_routes: Option<Store<DynamicObject>>,
    grpc_routes: Option<Store<DynamicObject>>,
    gateways: Option<Store<DynamicObject>>,
    gateway_classes: Option<Store<DynamicObject>>,
}

/// Which Gateway API route kinds the cluster serves (v1).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayApi {
    pub http_routes: bool,
    pub grpc_routes: bool,
    /// Gateways and GatewayClasses: a route's Gateway parent is looked up in them.
    pub gateways: bool,
}

impl GatewayApi {
    /// Asks the API server once, at start: without the CRDs a watch would never
    /// complete its first list, and nothing would ever be published.
    pub async fn discover(client: &Client) -> GatewayApi {
        match client
            .list_api_group_resources(&format!("{}/v1", super::routes::GROUP))
            .await
        {
            Ok(list) => {
                let has = |name: &str| list.resources.iter().any(|r| r.name == name);
                GatewayApi {
                    http_routes: has("httproutes"),
                    grpc_routes: has("grpcroutes"),
                    gateways: has("gateways") && has("gatewayclasses"),
                }
            }
            Err(error) => {
                tracing::info!(%error, "no Gateway API v1 in this cluster: HTTPRoutes and GRPCRoutes are not watched (restart weft-control after installing the CRDs)");
                GatewayApi::default()
            }
        }
    }
}

/// A gateway.networking.k8s.io/v1 resource.
fn gateway_api_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: super::routes::GROUP.to_string(),
        version: "v1".to_string(),
        api_version: format!("{}/v1", super::routes::GROUP),
        kind: kind.to_string(),
        plural: plural.to_string(),
    }
}

/// The HTTPRoute and GRPCRoute API resources (gateway.networking.k8s.io/v1).
pub fn route_resource(kind: super::routes::RouteKind) -> ApiResource {
    let (kind, plural) = match kind {
        super::routes::RouteKind::Http => ("HTTPRoute", "httproutes"),
        super::routes::RouteKind::Grpc => ("GRPCRoute", "grpcroutes"),
    };
    gateway_api_resource(kind, plural)
}

impl Stores {
    pub fn objects(&self) -> Objects {
        Objects {
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
            traffic_policies: self.traffic_policies.state(),
            inbound_authorizations: self.inbound_authorizations.state(),
            http_routes: self
                .http_routes
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
            grpc_routes: self
                .grpc_routes
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
            gateways: self.gateways.as_ref().map(Store::state).unwrap_or_default(),
            gateway_classes: self
                .gateway_classes
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
        }
    }

    /// The kinds whose first list has not completed yet.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let mut waiting = Vec::new();
        if !is_ready(&self.services) {
            waiting.push("services");
        }
        if !is_ready(&self.slices) {
            waiting.push("endpointslices");
        }
        if !is_ready(&self.pods) {
            waiting.push("pods");
        }
        if !is_ready(&self.traffic_policies) {
            waiting.push("trafficpolicies.weft.io");
        }
        if !is_ready(&self.inbound_authorizations) {
            waiting.push("inboundauthorizations.weft.io");
        }
        if self.http_routes.as_ref().is_some_and(|s| !is_ready(s)) {
            waiting.push("httproutes.gateway.networking.k8s.io");
        }
        if self.grpc_routes.as_ref().is_some_and(|s| !is_ready(s)) {
            waiting.push("grpcroutes.gateway.networking.k8s.io");
        }
        if self.gateways.as_ref().is_some_and(|s| !is_ready(s)) {
            waiting.push("gateways.gateway.networking.k8s.io");
        }
        if self.gateway_classes.as_ref().is_some_and(|s| !is_ready(s)) {
            waiting.push("gatewayclasses.gateway.networking.k8s.io");
        }
        waiting
    }
}

/// Whether the store's first list has completed (it stays so after later errors).
fn is_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// The watch loops, one per kind; each notifies `changed` when its store changes.
pub type Watches = Vec<std::pin::Pin<Box<dyn Future<Output = &'static str> + Send>>>;

/// Starts watching every kind the mesh is built from, cluster-wide.
pub fn start(client: &Client, gateway_api: GatewayApi, changed: &Arc<Notify>) -> (Stores, Watches) {
    let mut watches: Watches = Vec::new();
    let services = follow(
        Api::all(client.clone()),
        (),
        slim,
        "services",
        changed,
        &mut watches,
    );
    let slices = follow(
        Api::all(client.clone()),
        (),
        slim,
        "endpointslices",
        changed,
        &mut watches,
    );
    let pods = follow(
        Api::all(client.clone()),
        (),
        slim_pod,
        "pods",
        changed,
        &mut watches,
    );
    // Weft's own resources are read untyped and parsed one by one in the translation:
    // one object the types cannot read must not fail the whole list.
    let custom = |resource: ApiResource, kind, watches: &mut Watches| {
        let api = Api::all_with(client.clone(), &resource);
        follow(api, resource, slim, kind, changed, watches)
    };
    let traffic_policies = custom(
        ApiResource::erase::<TrafficPolicy>(&()),
        "trafficpolicies",
        &mut watches,
    );
    let inbound_authorizations = custom(
        ApiResource::erase::<InboundAuthorization>(&()),
        "inboundauthorizations",
        &mut watches,
    );
    let http_routes = gateway_api.http_routes.then(|| {
        custom(
            route_resource(super::routes::RouteKind::Http),
            "httproutes",
            &mut watches,
        )
    });
    let grpc_routes = gateway_api.grpc_routes.then(|| {
        custom(
            route_resource(super::routes::RouteKind::Grpc),
            "grpcroutes",
            &mut watches,
        )
    });
    let gateways = gateway_api.gateways.then(|| {
        custom(
            gateway_api_resource("Gateway", "gateways"),
            "gateways",
            &mut watches,
        )
    });
    let gateway_classes = gateway_api.gateways.then(|| {
        custom(
            gateway_api_resource("GatewayClass", "gatewayclasses"),
            "gatewayclasses",
            &mut watches,
        )
    });
    (
        Stores {
            services,
            slices,
            pods,
            traffic_policies,
            inbound_authorizations,
            http_routes,
            grpc_routes,
            gateways,
            gateway_classes,
        },
        watches,
    )
}

/// Drops what the translation never reads before it is stored: managed fields and
/// last-applied copies often double an object's size.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Pods are the bulk of a cluster's objects, and only their ServiceAccount and
/// container names matter here (to tell injected pods from the rest).
fn slim_pod(pod: &mut Pod) {
    slim(pod);
    pod.status = None;
    if let Some(spec) = pod.spec.as_mut() {
        let names = |containers: &[Container]| -> Vec<Container> {
            containers
                .iter()
                .map(|c| Container {
                    name: c.name.clone(),
                    ..Container::default()
                })
                .collect()
        };
        *spec = PodSpec {
            service_account_name: spec.service_account_name.take(),
            containers: names(&spec.containers),
            init_containers: spec.init_containers.as_deref().map(names),
            ..PodSpec::default()
        };
    }
}

fn follow<K>(
    api: Api<K>,
    dynamic_type: K::DynamicType,
    slim: fn(&mut K),
    kind: &'static str,
    changed: &Arc<Notify>,
    watches: &mut Watches,
) -> Store<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dynamic_type);
    let store = writer.as_reader();
    let stream = watcher::watcher(api, watcher::Config::default())
        .modify(slim)
        .default_backoff()
        .reflect(writer);
    let changed = Arc::clone(changed);
    watches.push(Box::pin(async move {
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                // The store changes only when a relist is complete.
                Ok(Event::Init | Event::InitApply(_)) => {}
                Ok(event) => {
                    if failing {
                        tracing::info!(kind, "watch resumed");
                        failing = false;
                    }
                    if let Event::Apply(o) | Event::Delete(o) = &event {
                        tracing::trace!(kind, name = %o.name_any(), "object changed");
                    }
                    changed.notify_one();
                }
                Err(error) => {
                    // Logged once per outage at warn, then quietly: the backoff
                    // retries for as long as the API is away.
                    if failing {
                        tracing::debug!(kind, %error, "watch still failing");
                    } else {
                        tracing::warn!(kind, %error, "watch failed; retrying with backoff, the last state keeps serving");
                        failing = true;
                    }
                }
            }
        }
        kind
    }));
    store
}
