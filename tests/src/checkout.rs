//! The checkout example on a Kubernetes cluster as a user runs it, written once
//! for two clusters: the test cluster with its node agent
//! (`tests/tests/k8s_checkout.rs`) and a kind cluster (`tests/kind/run.sh`, through
//! the `checkout-scenario` binary). Every step goes through the Kubernetes API or
//! kubectl only: pod logs through `pods/log`, the proxies' metrics through the API
//! server's pod proxy, so nothing here depends on how the pods are run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};

use crate::metrics::Metrics;

pub const NAMESPACE: &str = "checkout";
pub const SERVICES: [&str; 5] = ["web", "orders", "payments", "notifications", "users"];
/// The sidecar's admin port (metrics, readiness).
pub const ADMIN_PORT: u16 = 7191;
/// How long a rollout (pods scheduled, started and Ready) may take.
pub const ROLLOUT_LIMIT: Duration = Duration::from_secs(180);
/// web's SPIFFE identity in the example's namespace.
pub const WEB_IDENTITY: &str = "spiffe://cluster.local/ns/checkout/sa/web";
const KUBECTL_LIMIT: Duration = Duration::from_secs(120);

/// What a load generator pod reported when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSummary {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

impl LoadSummary {
    /// `sent= ok= failed=` from the load generator's last summary line.
    pub fn parse(log: &str) -> Option<LoadSummary> {
        let line = log.lines().rev().find(|l| l.contains("sent="))?;
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
        };
        Some(LoadSummary {
            sent: field("sent=")?,
            ok: field("ok=")?,
            failed: field("failed=")?,
        })
    }

    /// Whether at least `min` requests were sent and every one succeeded.
    pub fn all_ok(&self, min: u64) -> bool {
        self.sent >= min && self.ok == self.sent && self.failed == 0
    }
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} ok={} failed={}",
            self.sent, self.ok, self.failed
        )
    }
}

/// The repository's `deploy/k8s`.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/k8s")
}

/// A cluster the scenario runs on: an API client and kubectl for the same
/// cluster and user.
pub struct Checkout {
    pub client: kube::Client,
    kubeconfig: Option<PathBuf>,
}

impl Checkout {
    /// `kubeconfig`: the file kubectl is given; `None` uses kubectl's own default
    /// (`KUBECONFIG`, `~/.kube/config`), as `client` should.
    pub fn new(client: kube::Client, kubeconfig: Option<PathBuf>) -> Checkout {
        Checkout { client, kubeconfig }
    }

    /// Runs kubectl; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("kubectl");
        if let Some(k) = &self.kubeconfig {
            cmd.arg("--kubeconfig").arg(k).env_remove("KUBECONFIG");
        }
        cmd.args(args);
        crate::cluster::kubectl_stdout(cmd, args, None, KUBECTL_LIMIT)
    }

    /// Waits until deployment `ns/name` has all its replicas updated and Ready;
    /// fails with every pod's state otherwise.
    pub async fn wait_rollout(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + ROLLOUT_LIMIT;
        loop {
            let d = api.get(name).await?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if let Some(s) = &d.status
                && s.observed_generation == d.metadata.generation
                && s.updated_replicas.unwrap_or(0) == want
                && s.ready_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "deployment {ns}/{name} not rolled out within {ROLLOUT_LIMIT:?}: {:?}\n{}",
                    d.status,
                    self.pod_states().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every pod's phase, conditions and container states, for a failure message.
    pub async fn pod_states(&self) -> String {
        use std::fmt::Write as _;
        let pods = match Api::<Pod>::all(self.client.clone())
            .list(&Default::default())
            .await
        {
            Ok(p) => p.items,
            Err(e) => return format!("cannot list pods: {e}"),
        };
        let mut out = String::new();
        for p in pods {
            let s = p.status.unwrap_or_default();
            let _ = writeln!(
                out,
                "pod {}/{} on {:?}: {:?} {:?} ip {:?}",
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default(),
                p.spec.and_then(|s| s.node_name),
                s.phase,
                s.conditions
                    .iter()
                    .flatten()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect::<Vec<_>>(),
                s.pod_ip
            );
            for c in s
                .init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
            {
                let _ = writeln!(out, "  {}: ready={} {:?}", c.name, c.ready, c.state);
            }
        }
        out
    }

    /// What `kubectl apply -k deploy/k8s` left behind with nothing made by hand
    /// first: weft-control created the mesh CA (a development CA, said loudly in
    /// its log) and the injector's certificate, and set both webhooks' caBundle to
    /// that certificate's CA.
    pub async fn check_bootstrap(&self) -> anyhow::Result<()> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), "weft-system");
        for name in ["weft-identity-ca", "weft-injector-tls"] {
            let s = secrets
                .get(name)
                .await
                .with_context(|| format!("Secret weft-system/{name}"))?;
            let maker = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("weft.io/generated-by"))
                .cloned();
            if maker.as_deref() != Some("weft-control") {
                bail!("Secret weft-system/{name} is labelled generated-by={maker:?}");
            }
        }
        let injector = secrets.get("weft-injector-tls").await?;
        let ca = injector
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(|b| b.0.clone())
            .context("Secret weft-injector-tls has no ca.crt")?;
        let webhooks = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        poll(
            Duration::from_secs(60),
            "both webhooks carry the injector's CA",
            || async {
                let config = webhooks.get("weft-injector").await.ok()?;
                let hooks = config.webhooks.unwrap_or_default();
                (hooks.len() == 2
                    && hooks
                        .iter()
                        .all(|h| h.client_config.ca_bundle.as_ref().map(|b| &b.0) == Some(&ca)))
                .then_some(())
            },
        )
        .await?;
        let pods = Api::<Pod>::namespaced(self.client.clone(), "weft-system");
        let control = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=weft-control"))
            .await?;
        let mut warned = 0;
        for p in &control.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let log = pods
                .logs(&name, &LogParams::default())
                .await
                .with_context(|| format!("the log of weft-system/{name}"))?;
            warned += usize::from(log.contains("DEVELOPMENT CA"));
        }
        if warned == 0 {
            bail!(
                "none of the {} weft-control pods warned about the DEVELOPMENT CA",
                control.items.len()
            );
        }
        Ok(())
    }

    /// `kubectl apply -k deploy/k8s/examples/checkout`, every deployment rolled
    /// out and every pod injected (the init container and the native sidecar);
    /// the Ready pods' names by service.
    pub async fn install_example(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let example = deploy_dir().join("examples/checkout");
        self.kubectl(&["apply", "-k", &example.to_string_lossy()])?;
        for s in SERVICES {
            self.wait_rollout(NAMESPACE, s).await?;
        }
        let pods = self.pods_by_service().await?;
        for s in SERVICES {
            if pods.get(s).is_none_or(Vec::is_empty) {
                bail!("no Ready pod of {s}: {pods:?}");
            }
        }
        let all = Api::<Pod>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await?;
        for p in &all.items {
            let inits: Vec<&str> = p
                .spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .map(|c| c.name.as_str())
                .collect();
            if !(inits.contains(&"weft-init") && inits.contains(&"weft-proxy")) {
                bail!(
                    "pod {:?} was not injected (init containers: {inits:?})",
                    p.metadata.name
                );
            }
        }
        Ok(pods)
    }

    /// The Ready pods of each example service, by their app label.
    pub async fn pods_by_service(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default())
            .await?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in pods.items {
            let app = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/name"))
                .cloned();
            if let (Some(app), Some(name), true) =
                (app, p.metadata.name.clone(), crate::kube_mesh::is_ready(&p))
            {
                out.entry(app).or_default().push(name);
            }
        }
        Ok(out)
    }

    /// Starts a load generator pod in the meshed namespace (so injected), calling
    /// web by its Service name: `rps` requests a second for `seconds`.
    pub async fn start_loadgen(&self, name: &str, rps: u32, seconds: u32) -> anyhow::Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NAMESPACE);
        // A pod of that name left by an earlier run on a kept cluster goes first.
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                poll(ROLLOUT_LIMIT, "the old load generator gone", || async {
                    pods.get_opt(name).await.ok()?.is_none().then_some(())
                })
                .await?;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).context("delete an old load generator"),
        }
        pods.create(&PostParams::default(), &loadgen(name, rps, seconds)?)
            .await
            .with_context(|| format!("create the load generator {name}"))?;
        Ok(())
    }

    /// The phase of pod `name` in the example's namespace.
    pub async fn phase(&self, name: &str) -> Option<String> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), NAMESPACE);
        pods.get(name).await.ok()?.status?.phase
    }

    /// Waits for load generator `name` to finish; its summary. Fails when the
    /// pod failed or printed none.
    pub async fn finish_loadgen(&self, name: &str, limit: Duration) -> anyhow::Result<LoadSummary> {
        let phase = poll(limit, "load generator done", || async {
            let phase = self.phase(name).await?;
            (phase == "Succeeded" || phase == "Failed").then_some(phase)
        })
        .await?;
        let log = Api::<Pod>::namespaced(self.client.clone(), NAMESPACE)
            .logs(name, &LogParams::default())
            .await
            .with_context(|| format!("the log of {name}"))?;
        let summary =
            LoadSummary::parse(&log).with_context(|| format!("no summary ({phase}):\n{log}"))?;
        if phase != "Succeeded" {
            bail!("load generator {name} {phase}: {summary}\n{log}");
        }
        Ok(summary)
    }

    /// Runs a load generator pod to completion; its summary.
    pub async fn run_loadgen(
        &self,
        name: &str,
        rps: u32,
        seconds: u32,
    ) -> anyhow::Result<LoadSummary> {
        self.start_loadgen(name, rps, seconds).await?;
        self.finish_loadgen(name, ROLLOUT_LIMIT + Duration::from_secs(seconds.into()))
            .await
    }

    /// Pod `name`'s sidecar metrics, read through the API server's pod proxy.
    pub async fn proxy_metrics(&self, name: &str) -> anyhow::Result<Metrics> {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}:{ADMIN_PORT}/proxy/metrics");
        let request = http::Request::get(&path).body(Vec::new())?;
        let text = self
            .client
            .request_text(request)
            .await
            .with_context(|| format!("GET {path}"))?;
        Ok(Metrics::parse(&text))
    }

    /// Sums `name{labels}` over the sidecars of every pod in `pods`.
    pub async fn sum_over(
        &self,
        pods: &[String],
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for p in pods {
            total += self.proxy_metrics(p).await?.sum(name, labels);
        }
        Ok(total)
    }

    /// The checks after traffic: every service's sidecars served inbound
    /// requests, and orders' and users' sidecars took web's requests over mTLS
    /// with web's identity.
    pub async fn check_traffic(&self, pods: &BTreeMap<String, Vec<String>>) -> anyhow::Result<()> {
        for (service, names) in pods {
            let served = self
                .sum_over(names, "weft_requests_total", &[("direction", "inbound")])
                .await?;
            if served <= 0.0 {
                bail!("no inbound requests through {service}'s proxies");
            }
        }
        for service in ["orders", "users"] {
            let names = pods.get(service).map(Vec::as_slice).unwrap_or_default();
            let from_web = self
                .sum_over(
                    names,
                    "weft_inbound_requests_by_peer_total",
                    &[("tls", "true"), ("peer_identity", WEB_IDENTITY)],
                )
                .await?;
            eprintln!("checkout: {service} took {from_web} requests from web over mTLS");
            if from_web <= 0.0 {
                bail!("{service}'s proxies counted no mTLS requests from {WEB_IDENTITY}");
            }
        }
        Ok(())
    }

    /// Under load, orders scaled 1 -> 3 -> 1 and then restarted; the load's
    /// summary (the caller checks that nothing failed).
    pub async fn churn_orders_under_load(&self, seconds: u32) -> anyhow::Result<LoadSummary> {
        let scale = |replicas: &str| -> anyhow::Result<()> {
            self.kubectl(&["-n", NAMESPACE, "scale", "deployment/orders", replicas])
                .map(drop)
        };
        scale("--replicas=1")?;
        self.wait_rollout(NAMESPACE, "orders").await?;
        let name = "loadgen-churn";
        self.start_loadgen(name, 20, seconds).await?;
        poll(ROLLOUT_LIMIT, "load generator running", || async {
            (self.phase(name).await? == "Running").then_some(())
        })
        .await?;
        for replicas in ["--replicas=3", "--replicas=1"] {
            scale(replicas)?;
            self.wait_rollout(NAMESPACE, "orders").await?;
        }
        self.kubectl(&["-n", NAMESPACE, "rollout", "restart", "deployment/orders"])?;
        self.wait_rollout(NAMESPACE, "orders").await?;
        if self.phase(name).await.as_deref() != Some("Running") {
            bail!("the load stopped before the scaling and the restart were done");
        }
        self.finish_loadgen(name, ROLLOUT_LIMIT).await
    }
}

/// The values of an instant PromQL query to the Prometheus behind Service
/// `namespace/service:port`, through the API server's service proxy (a
/// Prometheus inside the cluster, as on kind).
pub async fn prometheus_query(
    client: &kube::Client,
    service: &str,
    promql: &str,
) -> anyhow::Result<Vec<f64>> {
    let (namespace, service) = service
        .split_once('/')
        .context("a Prometheus Service is namespace/name:port")?;
    let query: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'~' | b'_' | b'-' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!(
        "/api/v1/namespaces/{namespace}/services/{service}/proxy/api/v1/query?query={query}"
    );
    let text = client
        .request_text(http::Request::get(&path).body(Vec::new())?)
        .await
        .with_context(|| format!("GET {path}"))?;
    let reply: serde_json::Value = serde_json::from_str(&text).context("Prometheus's answer")?;
    let results = reply["data"]["result"]
        .as_array()
        .with_context(|| format!("no result in {text}"))?;
    Ok(results
        .iter()
        .filter_map(|r| r["value"][1].as_str()?.parse().ok())
        .collect())
}

/// The load generator pod: the examples' image, web's Service name as target.
fn loadgen(name: &str, rps: u32, seconds: u32) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532},
            "containers": [{
                "name": "loadgen",
                "image": "weft/weft-examples:0.1.0",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/local/bin/loadgen"],
                "env": [
                    {"name": "TARGET_URL", "value": "http://web:8080"},
                    {"name": "LOADGEN_RPS", "value": rps.to_string()},
                    {"name": "LOADGEN_DURATION", "value": seconds.to_string()},
                    {"name": "LOADGEN_CONCURRENCY", "value": "8"}
                ]
            }]
        }
    }))?)
}

/// Polls `check` every 250 ms until it returns `Some`, or fails naming `what`
/// once `limit` has passed.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::poll_every(Duration::from_millis(250), limit, what, check).await
}
