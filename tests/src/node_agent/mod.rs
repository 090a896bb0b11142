//! A node agent (a small kubelet) for tests against a real API server: it
//! registers a Node, keeps it Ready (status and Lease heartbeats), and runs every
//! pod bound to it as a network namespace on the node's bridge, with the pod's
//! IP from the node's pod CIDR.
//!
//! For each pod it runs the init containers for real (an injected pod's
//! `weft-proxy init` installs iptables in the pod's namespace), the native
//! sidecar with exactly the environment in the pod spec and its projected
//! ServiceAccount token from the TokenRequest API, and the app containers; images
//! map to workspace binaries ([`runtime`]), and any other image fails the pod with
//! the reason. It reports the pod's IP, container states and Ready (from the real
//! readiness probes), and on deletion stops the apps before the sidecars. It
//! serves the kubelet API's `containerLogs`, so `kubectl logs` works.
//!
//! What the kubelet does and this agent does not: liveness probes, exec and gRPC
//! probes, resource limits, capabilities and seccomp, image pulls, token rotation,
//! and cluster DNS, for which each pod gets an `/etc/hosts` naming the Services
//! that exist when it starts (see [`pod::hosts`]).

mod env;
mod kubelet_api;
mod network;
mod pod;
mod probe;
mod runtime;
mod volumes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use kubelet_api::KubeletApi;
pub use network::Bridge;

/// How often the node says it is alive (the node lifecycle controller's default
/// grace is 40 s).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// How a node is set up.
pub struct NodeConfig {
    pub name: String,
    /// The pod network; made first, so the API server can listen on its address.
    pub bridge: Arc<Bridge>,
    /// Where pods reach the API server (`KUBERNETES_SERVICE_HOST`/`_PORT`), if
    /// they can.
    pub apiserver: Option<SocketAddr>,
}

/// What every pod task shares.
struct Ctx {
    client: kube::Client,
    bridge: Arc<Bridge>,
    dir: PathBuf,
    apiserver: Option<SocketAddr>,
}

struct PodTask {
    updates: watch::Sender<Pod>,
    task: JoinHandle<()>,
}

/// A registered node running its pods; stops them and removes its network and
/// its Node object when dropped.
pub struct NodeAgent {
    pub name: String,
    ctx: Arc<Ctx>,
    tasks: Arc<std::sync::Mutex<HashMap<String, PodTask>>>,
    heartbeat: JoinHandle<()>,
    watch: JoinHandle<()>,
    _kubelet_api: KubeletApi,
    // Dropped last: the pods' volumes and logs.
    dir: TempDir,
}

impl NodeAgent {
    /// Registers the node and starts running the pods bound to it.
    pub async fn start(client: kube::Client, config: NodeConfig) -> anyhow::Result<NodeAgent> {
        let bridge = config.bridge;
        let dir = tempfile::Builder::new()
            .prefix("weft-node-")
            .tempdir()
            .context("cannot create the node's folder")?;
        // Containers run as other users and read their volumes below it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .context("chmod the node's folder")?;
        let kubelet_api = KubeletApi::start(bridge.gateway(), dir.path().to_path_buf()).await?;
        register(&client, &config.name, &bridge, kubelet_api.addr.port()).await?;
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            bridge,
            dir: dir.path().to_path_buf(),
            apiserver: config.apiserver,
        });
        let heartbeat = tokio::spawn(heartbeat(client.clone(), config.name.clone()));
        let tasks = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let watch = tokio::spawn(watch_pods(ctx.clone(), config.name.clone(), tasks.clone()));
        Ok(NodeAgent {
            name: config.name,
            ctx,
            tasks,
            heartbeat,
            watch,
            _kubelet_api: kubelet_api,
            dir,
        })
    }

    /// The node's address on its bridge (where pods reach the host).
    pub fn host_ip(&self) -> std::net::Ipv4Addr {
        self.ctx.bridge.gateway()
    }

    /// The node's bridge, e.g. for a capture (`tshark -i`).
    pub fn bridge(&self) -> &str {
        &self.ctx.bridge.name
    }

    pub fn pod_cidr(&self) -> String {
        self.ctx.bridge.cidr()
    }

    /// The output of one container of pod `ns/name` so far.
    pub fn container_log(&self, ns: &str, name: &str, container: &str) -> String {
        pod::container_log(self.dir.path(), ns, name, container)
    }

    /// The interfaces plugged into the bridge now (one per pod): a capture on
    /// the bridge itself misses what it forwards port to port.
    pub fn bridge_ports(&self) -> Vec<String> {
        network::ports(&self.ctx.bridge.name)
    }

    /// Every container's output so far, for a failed test.
    pub fn logs(&self) -> String {
        pod::logs(self.dir.path())
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.watch.abort();
        self.heartbeat.abort();
        // Aborted pod tasks drop their processes and namespaces when the runtime
        // next polls or shuts down; their Process guards stop them either way.
        for (_, t) in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            t.task.abort();
        }
        if std::thread::panicking() {
            eprintln!("----- node {} containers -----\n{}", self.name, self.logs());
        }
    }
}

async fn register(
    client: &kube::Client,
    name: &str,
    bridge: &Bridge,
    kubelet_port: u16,
) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }},
        "spec": {"podCIDR": bridge.cidr(), "podCIDRs": [bridge.cidr()]},
    }))
    .context("node object")?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e).context("register the node"),
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(node_status(bridge, kubelet_port)),
        )
        .await
        .context("report the node's status")?;
    Ok(())
}

fn node_status(bridge: &Bridge, kubelet_port: u16) -> serde_json::Value {
    let now = k8s_openapi::jiff::Timestamp::now();
    let resources =
        json!({"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"});
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("Ready", "True", "KubeletReady"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID"),
        ],
        "addresses": [{"type": "InternalIP", "address": bridge.gateway().to_string()}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "weft-test", "systemUUID": "weft-test", "bootID": "weft-test",
            "kernelVersion": "", "osImage": "weft test node", "containerRuntimeVersion": "weft-test://0",
            "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }})
}

/// Renews the node's Lease and Ready condition.
async fn heartbeat(client: kube::Client, name: String) {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let nodes = Api::<Node>::all(client);
    loop {
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": MicroTime(now)},
        });
        let apply = PatchParams::apply("weft-test-node").force();
        if let Err(e) = leases.patch(&name, &apply, &Patch::Apply(&lease)).await {
            eprintln!("node agent: lease of {name}: {e}");
        }
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "message": "KubeletReady", "lastHeartbeatTime": now}]}});
        // A strategic merge patch updates the Ready condition in place by type.
        if let Err(e) = nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(ready))
            .await
        {
            eprintln!("node agent: status of node {name}: {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Starts a task per pod bound to the node and feeds it the pod's updates.
async fn watch_pods(
    ctx: Arc<Ctx>,
    node: String,
    tasks: Arc<std::sync::Mutex<HashMap<String, PodTask>>>,
) {
    let api = Api::<Pod>::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(mut pod)) => {
                // Gone without our final delete (forced): stop it now.
                if pod.metadata.deletion_timestamp.is_none() {
                    pod.metadata.deletion_timestamp =
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                            k8s_openapi::jiff::Timestamp::now(),
                        ));
                }
                pod.metadata.deletion_grace_period_seconds = Some(0);
                pod
            }
            Ok(_) => continue,
            Err(e) => {
                eprintln!("node agent: pod watch: {e}");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let mut tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, t| !t.task.is_finished());
        match tasks.get(&uid) {
            Some(t) => {
                let _ = t.updates.send(pod);
            }
            None if pod.metadata.deletion_grace_period_seconds == Some(0)
                && pod.metadata.deletion_timestamp.is_some() => {}
            None => {
                let (tx, rx) = watch::channel(pod);
                let task = tokio::spawn(pod::run(ctx.clone(), rx));
                tasks.insert(uid, PodTask { updates: tx, task });
            }
        }
    }
}

/// Deletes the Node object (its pods are the caller's business).
pub async fn deregister(client: &kube::Client, name: &str) {
    let _ = Api::<Node>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
