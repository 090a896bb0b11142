//! A real cluster ([`crate::cluster`]) with a node ([`crate::node_agent`]) and
//! Weft's control plane installed from `deploy/k8s` the way an operator installs
//! it: the certificate Secrets, `kubectl apply -k deploy/k8s`, the webhook's
//! caBundle; weft-control and the injector then run as pods on the test node.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;

use crate::checkout::Checkout;
use crate::cluster::{Cluster, ClusterOptions, SERVICE_CIDR};
use crate::node_agent::{Bridge, NodeAgent, NodeConfig};

pub use crate::checkout::{ROLLOUT_LIMIT, deploy_dir};

pub struct KubeMesh {
    // Dropped first: the pods stop before the cluster does.
    pub node: NodeAgent,
    pub client: kube::Client,
    pub cluster: Cluster,
}

/// Prometheus with Kubernetes service discovery, from tests/cluster/prometheus.sh
/// (built once into the cluster cache: Debian's prometheus has no
/// `kubernetes_sd_configs`). `None` after saying why `test` is skipped when Go is
/// missing; under `CI=true` that, and a failed build, panic.
pub fn prometheus_binary(test: &str) -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, Option<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster/prometheus.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Some(format!("cannot run {}: {e}", script.display())))?;
        match out.status.code() {
            Some(0) => Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())),
            Some(3) => Err(None),
            _ => Err(Some(format!(
                "{} failed ({})",
                script.display(),
                out.status
            ))),
        }
    });
    match built {
        Ok(path) => Some(path.clone()),
        Err(Some(why)) => panic!("{test}: {why}"),
        Err(None) => {
            let why =
                "Go is not installed, so Prometheus with Kubernetes discovery cannot be built";
            assert!(
                !crate::tools::in_ci(),
                "{test}: {why}; CI=true, so this is a failure"
            );
            eprintln!("\n******** SKIPPED {test}: {why} ********\n");
            None
        }
    }
}

impl KubeMesh {
    /// A cluster and its node, without Weft. `None`: skipped (the test bed or the
    /// cluster's programs are missing, and CI is not set).
    pub async fn node_only(test: &str) -> anyhow::Result<Option<KubeMesh>> {
        if !crate::netns::available(test) {
            return Ok(None);
        }
        let bridge = Bridge::create(SERVICE_CIDR)?;
        let options = ClusterOptions {
            bind_address: IpAddr::V4(bridge.gateway()),
        };
        let Some(cluster) = Cluster::start_with(test, options)? else {
            return Ok(None);
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let node = NodeAgent::start(
            client.clone(),
            NodeConfig {
                name: "weft-test-node".into(),
                bridge,
                apiserver: Some(cluster.api_addr()),
            },
        )
        .await?;
        Ok(Some(KubeMesh {
            node,
            client,
            cluster,
        }))
    }

    /// [`KubeMesh::node_only`] with Weft installed and its pods Ready.
    pub async fn start(test: &str) -> anyhow::Result<Option<KubeMesh>> {
        let Some(mesh) = Self::node_only(test).await? else {
            return Ok(None);
        };
        mesh.install_weft().await?;
        Ok(Some(mesh))
    }

    /// Installs Weft from deploy/k8s and waits for its pods (after CRDs that
    /// weft-control only looks for at start, e.g. the Gateway API's).
    pub async fn install_weft(&self) -> anyhow::Result<()> {
        // The first install as a user makes it: no Secret made by hand; weft-control
        // creates the mesh CA and the webhook's certificate and sets the caBundle.
        self.cluster
            .kubectl(&["apply", "-k", &deploy_dir().to_string_lossy()])?;
        for d in ["weft-control", "weft-injector"] {
            self.wait_rollout("weft-system", d).await?;
        }
        Ok(())
    }

    /// The checkout scenario's view of this cluster, as admin.
    pub fn checkout(&self) -> Checkout {
        Checkout::new(
            self.client.clone(),
            Some(self.cluster.kubeconfig().to_path_buf()),
        )
    }

    /// Waits until deployment `ns/name` has all its replicas updated and Ready;
    /// fails with every pod's state and the containers' output otherwise.
    pub async fn wait_rollout(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        self.checkout()
            .wait_rollout(ns, name)
            .await
            .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.node.logs()))
    }
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}
