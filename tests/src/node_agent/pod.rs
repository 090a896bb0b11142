//! One pod's life on the node: sandbox, volumes, init containers in order (a
//! restartable one, the native sidecar, stays running and must pass its startup
//! probe before the next starts), the app containers, readiness probes and status
//! reports, and on deletion: the apps stopped first, then the sidecars, then the
//! namespace removed and the object deleted for good (the kubelet's last word).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Ctx;
use super::env;
use super::network::Sandbox;
use super::probe;
use super::runtime::{self, Launch, Mount, Refusal};
use super::volumes;
use crate::process::Process;

/// How often a running pod's containers are looked at (exits, due probes).
const TICK: Duration = Duration::from_millis(250);
/// Until its first success a probe is tried this often, whatever its period, so
/// that a pod becomes Ready soon after it can.
const FIRST_PROBE_PERIOD: Duration = Duration::from_millis(500);
/// How often Secret and ConfigMap volumes are synced again (the kubelet: about a
/// minute; shorter here, as test pods live for seconds).
const VOLUME_REFRESH: Duration = Duration::from_secs(2);
/// Longest wait before restarting a container that exited.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs the pod until it is deleted. `updates` carries the latest stored object.
pub async fn run(ctx: Arc<Ctx>, mut updates: watch::Receiver<Pod>) {
    let pod = updates.borrow_and_update().clone();
    let name = pod_key(&pod);
    let mut life = Life::new(ctx.clone(), pod);
    if let Err(e) = life.live(&mut updates).await {
        eprintln!("node agent: pod {name}: {e:#}");
        life.fail("AgentError", &format!("{e:#}")).await;
        wait_for_deletion(&mut updates).await;
    }
    let latest = updates.borrow().clone();
    life.terminate(&latest).await;
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

async fn wait_for_deletion(updates: &mut watch::Receiver<Pod>) {
    while !deleting(&updates.borrow_and_update()) {
        if updates.changed().await.is_err() {
            return;
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        process: Process,
        since: Time,
    },
    Terminated {
        code: i32,
        reason: String,
        since: Time,
        until: Time,
    },
}

struct Box_ {
    spec: Container,
    launch: Launch,
    init: bool,
    /// Restarted when it exits: a native sidecar, or an app of an `Always` pod.
    restartable: bool,
    state: State,
    restarts: i32,
    started: bool,
    ready: bool,
    probe_failures: i32,
    next_probe: Instant,
    restart_at: Option<Instant>,
    probed_once: bool,
}

impl Box_ {
    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    fn process(&mut self) -> Option<&mut Process> {
        match &mut self.state {
            State::Running { process, .. } => Some(process),
            _ => None,
        }
    }
}

struct Life {
    ctx: Arc<Ctx>,
    pod: Pod,
    key: String,
    sandbox: Option<Sandbox>,
    dir: PathBuf,
    volumes: BTreeMap<String, PathBuf>,
    boxes: Vec<Box_>,
    phase: &'static str,
    failure: Option<(String, String)>,
    start_time: Time,
    initialized: bool,
    last_report: Option<Value>,
}

impl Life {
    fn new(ctx: Arc<Ctx>, pod: Pod) -> Life {
        let key = pod_key(&pod);
        let dir = ctx.dir.join(format!(
            "{}_{}",
            key.replace('/', "_"),
            pod.metadata.uid.as_deref().unwrap_or("no-uid")
        ));
        Life {
            ctx,
            pod,
            key,
            sandbox: None,
            dir,
            volumes: BTreeMap::new(),
            boxes: Vec::new(),
            phase: "Pending",
            failure: None,
            start_time: now(),
            initialized: false,
            last_report: None,
        }
    }

    fn ip(&self) -> Option<Ipv4Addr> {
        self.sandbox.as_ref().map(|s| s.ip)
    }

    async fn live(&mut self, updates: &mut watch::Receiver<Pod>) -> anyhow::Result<()> {
        if deleting(&self.pod) {
            return Ok(());
        }
        let spec = self.pod.spec.clone().context("the pod has no spec")?;
        let always = spec.restart_policy.as_deref().unwrap_or("Always") == "Always";
        let mut refused = Vec::new();
        for (c, init) in spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c, true))
            .chain(spec.containers.iter().map(|c| (c, false)))
        {
            let sidecar = init && c.restart_policy.as_deref() == Some("Always");
            let (launch, state) = match runtime::resolve(&self.pod, c) {
                Ok(l) => (
                    l,
                    State::Waiting {
                        reason: "PodInitializing".into(),
                        message: String::new(),
                    },
                ),
                Err(Refusal { reason, message }) => {
                    refused.push(format!("container {}: {message}", c.name));
                    (
                        Launch {
                            binary: String::new(),
                            args: Vec::new(),
                            uid: 0,
                            gid: 0,
                        },
                        State::Waiting {
                            reason: reason.into(),
                            message,
                        },
                    )
                }
            };
            self.boxes.push(Box_ {
                spec: c.clone(),
                launch,
                init,
                restartable: sidecar || (!init && always),
                state,
                restarts: 0,
                started: false,
                ready: false,
                probe_failures: 0,
                next_probe: Instant::now(),
                restart_at: None,
                probed_once: false,
            });
        }
        if !refused.is_empty() {
            self.fail("UnsupportedImage", &refused.join("; ")).await;
            wait_for_deletion(updates).await;
            return Ok(());
        }

        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.sandbox = Some(self.ctx.bridge.sandbox()?);
        self.report().await;

        // Volumes may wait for objects that do not exist yet (a Secret, the
        // kube-root-ca.crt ConfigMap), as the kubelet's mounts do.
        loop {
            match volumes::prepare(&self.ctx.client, &self.pod, &self.dir.join("volumes")).await {
                Ok(v) => {
                    self.volumes = v;
                    break;
                }
                Err(e) => {
                    self.set_waiting_all("ContainerCreating", &format!("volumes: {e:#}"));
                    self.report().await;
                    if self.pause(updates, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
            }
        }
        self.write_hosts().await?;

        for i in 0..self.boxes.len() {
            if !self.boxes[i].init {
                continue;
            }
            if self.boxes[i].restartable {
                self.start(i)?;
                while !self.boxes[i].started {
                    self.tick().await;
                    self.report().await;
                    if self.pause(updates, TICK).await {
                        return Ok(());
                    }
                }
            } else {
                let mut backoff = Duration::from_millis(500);
                loop {
                    self.start(i)?;
                    let code = loop {
                        if let Some(status) = self.boxes[i]
                            .process()
                            .and_then(|p| p.try_exit().ok().flatten())
                        {
                            break status.code().unwrap_or(-1);
                        }
                        self.tick().await;
                        if self.pause(updates, TICK).await {
                            return Ok(());
                        }
                    };
                    self.finish(i, code);
                    self.report().await;
                    if code == 0 {
                        break;
                    }
                    self.boxes[i].restarts += 1;
                    if self.pause(updates, backoff).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.initialized = true;
        for i in 0..self.boxes.len() {
            if !self.boxes[i].init {
                self.start(i)?;
            }
        }
        self.phase = "Running";
        let mut next_refresh = Instant::now() + VOLUME_REFRESH;
        loop {
            self.tick().await;
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + VOLUME_REFRESH;
                let volumes = self.dir.join("volumes");
                if let Err(e) = volumes::refresh(&self.ctx.client, &self.pod, &volumes).await {
                    eprintln!("node agent: refreshing volumes: {e:#}");
                }
            }
            if let Some(phase) = self.completed() {
                // The kubelet stops the sidecars once the pod's own containers
                // are done, so a Job's pod completes.
                let sidecars: Vec<usize> = (0..self.boxes.len())
                    .filter(|&i| self.boxes[i].init)
                    .rev()
                    .collect();
                let grace = Instant::now() + Duration::from_secs(10);
                for i in sidecars {
                    self.stop(&[i], grace).await;
                }
                self.phase = phase;
                self.report().await;
                wait_for_deletion(updates).await;
                return Ok(());
            }
            self.report().await;
            if self.pause(updates, TICK).await {
                return Ok(());
            }
        }
    }

    /// `Succeeded` or `Failed` once every app container has exited for good.
    fn completed(&self) -> Option<&'static str> {
        let mut apps = self.boxes.iter().filter(|b| !b.init).peekable();
        apps.peek()?;
        let mut all_zero = true;
        for b in apps {
            match &b.state {
                State::Terminated { code, .. } if !b.restartable => all_zero &= *code == 0,
                _ => return None,
            }
        }
        Some(if all_zero { "Succeeded" } else { "Failed" })
    }

    /// Sleeps `d`, taking in updates; true once the pod is being deleted.
    async fn pause(&mut self, updates: &mut watch::Receiver<Pod>, d: Duration) -> bool {
        let _ = tokio::time::timeout(d, updates.changed()).await;
        let latest = updates.borrow_and_update().clone();
        self.pod.metadata.deletion_timestamp = latest.metadata.deletion_timestamp.clone();
        self.pod.metadata.deletion_grace_period_seconds =
            latest.metadata.deletion_grace_period_seconds;
        self.pod.status = latest.status;
        deleting(&self.pod)
    }

    fn set_waiting_all(&mut self, reason: &str, message: &str) {
        for b in &mut self.boxes {
            if !b.running() {
                b.state = State::Waiting {
                    reason: reason.into(),
                    message: message.into(),
                };
            }
        }
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let ip = self.ip().context("no sandbox")?;
        let sandbox = self.sandbox.as_ref().context("no sandbox")?;
        let b = &self.boxes[i];
        let c = &b.spec;
        let env = match env::build(&self.pod, c, ip, self.ctx.apiserver) {
            Ok(env) => env,
            Err(e) => {
                self.boxes[i].state = State::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: format!("{e:#}"),
                };
                return Ok(());
            }
        };
        // The proxy's own traffic is never captured, and no kube-proxy rewrites
        // ClusterIPs here: it gets the endpoints' addresses instead.
        let hosts = if b.launch.uid == crate::netns::PROXY_UID {
            "hosts-direct"
        } else {
            "hosts"
        };
        let mut mounts = vec![Mount {
            source: self.dir.join(hosts),
            target: "/etc/hosts".into(),
            read_only: true,
        }];
        for m in c.volume_mounts.iter().flatten() {
            let Some(dir) = self.volumes.get(&m.name) else {
                anyhow::bail!("container {} mounts unknown volume {}", c.name, m.name);
            };
            let source = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir.clone(),
            };
            mounts.push(Mount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only == Some(true),
            });
        }
        let program = crate::bins::binary(&b.launch.binary)?;
        let scratch = self
            .dir
            .join("scratch")
            .join(format!("{}-{}", c.name, b.restarts));
        let script = runtime::script(
            &b.launch,
            &program,
            &runtime::groups(&self.pod),
            &mounts,
            &scratch,
        );
        let script_file = self.dir.join(format!("{}.sh", c.name));
        std::fs::write(&script_file, script)
            .with_context(|| format!("cannot write {}", script_file.display()))?;
        let cmd = runtime::command(&sandbox.netns, &script_file, &env);
        let log_name = format!("{}-{}", self.key.replace('/', "-"), c.name);
        let process = Process::spawn(&log_name, cmd, &self.dir)?;
        let b = &mut self.boxes[i];
        b.state = State::Running {
            process,
            since: now(),
        };
        b.started = b.spec.startup_probe.is_none();
        b.ready = false;
        b.probed_once = false;
        b.probe_failures = 0;
        b.next_probe = Instant::now()
            + Duration::from_secs(
                b.spec
                    .readiness_probe
                    .as_ref()
                    .or(b.spec.startup_probe.as_ref())
                    .and_then(|p| p.initial_delay_seconds)
                    .unwrap_or(0)
                    .unsigned_abs()
                    .into(),
            );
        Ok(())
    }

    fn finish(&mut self, i: usize, code: i32) {
        let b = &mut self.boxes[i];
        let since = match &b.state {
            State::Running { since, .. } => since.clone(),
            _ => now(),
        };
        b.state = State::Terminated {
            code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            since,
            until: now(),
        };
        b.ready = false;
    }

    /// Notes exits (restarting what restarts, after a growing wait) and runs the
    /// probes that are due.
    async fn tick(&mut self) {
        let ip = self.ip();
        for i in 0..self.boxes.len() {
            let exited = self.boxes[i]
                .process()
                .and_then(|p| p.try_exit().ok().flatten());
            if let Some(status) = exited {
                self.finish(i, status.code().unwrap_or(-1));
                let b = &mut self.boxes[i];
                if b.restartable {
                    let backoff = Duration::from_millis(500)
                        .saturating_mul(1 << b.restarts.clamp(0, 5))
                        .min(MAX_BACKOFF);
                    b.restart_at = Some(Instant::now() + backoff);
                }
            }
            if let Some(at) = self.boxes[i].restart_at
                && Instant::now() >= at
            {
                self.boxes[i].restart_at = None;
                self.boxes[i].restarts += 1;
                if let Err(e) = self.start(i) {
                    self.boxes[i].state = State::Waiting {
                        reason: "RunContainerError".into(),
                        message: format!("{e:#}"),
                    };
                }
            }
            let Some(ip) = ip else { continue };
            let b = &mut self.boxes[i];
            if !b.running() || Instant::now() < b.next_probe {
                continue;
            }
            let (probe, startup) = match (&b.spec.startup_probe, &b.spec.readiness_probe) {
                (Some(p), _) if !b.started => (p.clone(), true),
                (_, Some(p)) => (p.clone(), false),
                (_, None) => {
                    b.started = true;
                    b.ready = true;
                    continue;
                }
            };
            let result = probe::check(&probe, &b.spec, ip).await;
            let period = Duration::from_secs(
                probe
                    .period_seconds
                    .unwrap_or(10)
                    .max(1)
                    .unsigned_abs()
                    .into(),
            );
            match result {
                Ok(()) => {
                    b.probe_failures = 0;
                    b.probed_once = true;
                    if startup {
                        b.started = true;
                    } else {
                        b.ready = true;
                    }
                }
                Err(_) => {
                    b.probe_failures += 1;
                    if !startup && b.probe_failures >= probe.failure_threshold.unwrap_or(3) {
                        b.ready = false;
                    }
                }
            }
            b.next_probe = Instant::now()
                + if b.probed_once && !startup {
                    period
                } else {
                    period.min(FIRST_PROBE_PERIOD)
                };
        }
    }

    async fn write_hosts(&self) -> anyhow::Result<()> {
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = self.pod.metadata.name.as_deref().unwrap_or_default();
        let ip = self.ip().context("no sandbox")?;
        let services = Api::<Service>::all(self.ctx.client.clone())
            .list(&ListParams::default())
            .await
            .context("list services for the pod's hosts file")?;
        let slices = Api::<EndpointSlice>::all(self.ctx.client.clone())
            .list(&ListParams::default())
            .await
            .context("list endpointslices for the pod's hosts file")?;
        std::fs::write(
            self.dir.join("hosts"),
            hosts(ns, name, ip, &services.items, None),
        )
        .context("write the pod's hosts file")?;
        std::fs::write(
            self.dir.join("hosts-direct"),
            hosts(ns, name, ip, &services.items, Some(&slices.items)),
        )
        .context("write the pod's hosts file")
    }

    /// The pod's status as the kubelet would report it now.
    fn status(&self) -> Value {
        let containers = |init: bool| -> Vec<Value> {
            self.boxes
                .iter()
                .filter(|b| b.init == init)
                .map(container_status)
                .collect()
        };
        let apps_ready = self.initialized
            && self
                .boxes
                .iter()
                .filter(|b| !b.init || b.restartable)
                .all(|b| b.ready && b.running());
        let t = now();
        let cond = |kind: &str, ok: bool| {
            json!({"type": kind, "status": if ok { "True" } else { "False" },
                   "lastTransitionTime": t, "lastProbeTime": null})
        };
        let mut conditions: Vec<Value> = self
            .pod
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter(|c| c.type_ == "PodScheduled")
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(cond("PodReadyToStartContainers", self.sandbox.is_some()));
        conditions.push(cond("Initialized", self.initialized));
        conditions.push(cond("ContainersReady", apps_ready));
        conditions.push(cond("Ready", apps_ready));
        let mut status = json!({
            "phase": if self.failure.is_some() { "Failed" } else { self.phase },
            "hostIP": self.ctx.bridge.gateway().to_string(),
            "hostIPs": [{"ip": self.ctx.bridge.gateway().to_string()}],
            "startTime": self.start_time,
            "conditions": conditions,
            "initContainerStatuses": containers(true),
            "containerStatuses": containers(false),
        });
        if let Some(ip) = self.ip() {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        if let Some((reason, message)) = &self.failure {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        status
    }

    /// Sends the status if it changed (lastTransitionTime aside).
    async fn report(&mut self) {
        let status = self.status();
        let mut comparable = status.clone();
        for c in comparable["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["lastTransitionTime"] = Value::Null;
        }
        if self.last_report.as_ref() == Some(&comparable) {
            return;
        }
        let api = self.pods();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_report = Some(comparable),
            Err(e) => eprintln!("node agent: status of {}: {e}", self.key),
        }
    }

    async fn fail(&mut self, reason: &str, message: &str) {
        self.failure = Some((reason.into(), message.into()));
        self.report().await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// Stops the apps, then the sidecars (last started, first stopped), removes
    /// the sandbox and deletes the object.
    async fn terminate(&mut self, latest: &Pod) {
        let grace = latest
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(1);
        let deadline = Instant::now() + Duration::from_secs(grace.unsigned_abs());
        let apps: Vec<usize> = (0..self.boxes.len())
            .filter(|&i| !self.boxes[i].init)
            .collect();
        let sidecars: Vec<usize> = (0..self.boxes.len())
            .filter(|&i| self.boxes[i].init)
            .rev()
            .collect();
        self.stop(&apps, deadline).await;
        // Sidecars get at least a moment even when the apps used the whole grace.
        let sidecar_deadline = deadline.max(Instant::now() + Duration::from_secs(2));
        for i in sidecars {
            self.stop(&[i], sidecar_deadline).await;
        }
        self.sandbox = None;
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods().delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => eprintln!("node agent: delete {}: {e}", self.key),
        }
    }

    async fn stop(&mut self, which: &[usize], deadline: Instant) {
        // A preStop sleep runs before the signal (the kubelet's order), so the app
        // keeps serving while its endpoint's withdrawal reaches its callers.
        let pre_stop = which
            .iter()
            .filter(|&&i| self.boxes[i].running())
            .filter_map(|&i| {
                let sleep = self.boxes[i]
                    .spec
                    .lifecycle
                    .as_ref()?
                    .pre_stop
                    .as_ref()?
                    .sleep
                    .as_ref()?;
                u64::try_from(sleep.seconds).ok()
            })
            .max();
        if let Some(secs) = pre_stop {
            tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_secs(secs)))
                .await;
        }
        for &i in which {
            self.boxes[i].restart_at = None;
            if let Some(p) = self.boxes[i].process() {
                let _ = p.signal(Signal::SIGTERM);
            }
        }
        for &i in which {
            if let Some(p) = self.boxes[i].process() {
                let left = deadline.saturating_duration_since(Instant::now());
                if p.wait_exit(left).await.is_err() {
                    let _ = p.signal(Signal::SIGKILL);
                    let _ = p.wait_exit(Duration::from_secs(5)).await;
                }
            }
            if self.boxes[i].running() {
                let code = self.boxes[i]
                    .process()
                    .and_then(|p| p.try_exit().ok().flatten())
                    .and_then(|s| s.code())
                    .unwrap_or(137);
                self.finish(i, code);
            }
        }
    }
}

fn container_status(b: &Box_) -> Value {
    let state = match &b.state {
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { since, .. } => json!({"running": {"startedAt": since}}),
        State::Terminated {
            code,
            reason,
            since,
            until,
        } => json!({"terminated": {"exitCode": code, "reason": reason,
                                    "startedAt": since, "finishedAt": until}}),
    };
    let pid = match &b.state {
        State::Running { process, .. } => process.pid().to_string(),
        _ => "0".into(),
    };
    json!({
        "name": b.spec.name,
        "image": b.spec.image.clone().unwrap_or_default(),
        "imageID": format!("weft-test://{}", b.launch.binary),
        "containerID": format!("weft-test://{pid}"),
        "state": state,
        "ready": b.ready && b.running(),
        "started": b.started && b.running(),
        "restartCount": b.restarts,
    })
}

/// `/etc/hosts` for a pod: itself, and every Service with a ClusterIP under its
/// cluster DNS names (bare names for the pod's own namespace), standing in for
/// cluster DNS. Services created after the pod started are not in it. With
/// `endpoints`, a name maps to its first ready endpoint instead (when it has one).
pub fn hosts(
    ns: &str,
    pod: &str,
    ip: Ipv4Addr,
    services: &[Service],
    endpoints: Option<&[EndpointSlice]>,
) -> String {
    let mut out = format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{ip}\t{pod}\n");
    for s in services {
        let Some(cluster_ip) = s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) else {
            continue;
        };
        if cluster_ip.is_empty() || cluster_ip == "None" {
            continue;
        }
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let sns = s.metadata.namespace.as_deref().unwrap_or_default();
        let addr = endpoints
            .and_then(|slices| ready_endpoint(slices, sns, name))
            .unwrap_or(cluster_ip);
        out.push_str(&format!(
            "{addr}\t{name}.{sns}.svc.cluster.local {name}.{sns}.svc {name}.{sns}"
        ));
        if sns == ns {
            out.push_str(&format!(" {name}"));
        }
        out.push('\n');
    }
    out
}

fn ready_endpoint<'a>(slices: &'a [EndpointSlice], ns: &str, service: &str) -> Option<&'a str> {
    slices
        .iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(service)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .find_map(|e| e.addresses.first().map(String::as_str))
}

/// The output of container `container` of pod `ns/name` (every pod of that name
/// this node ran, oldest first).
pub fn container_log(dir: &Path, ns: &str, name: &str, container: &str) -> String {
    pod_dirs(dir, ns, name)
        .iter()
        .map(|d| {
            std::fs::read_to_string(d.join(format!("{ns}-{name}-{container}.log")))
                .unwrap_or_default()
        })
        .collect()
}

/// The output of container `container` of the newest pod `ns/name`, as the
/// kubelet serves it; `None` when this node ran no such container.
pub fn current_container_log(dir: &Path, ns: &str, name: &str, container: &str) -> Option<String> {
    let newest = pod_dirs(dir, ns, name).pop()?;
    std::fs::read_to_string(newest.join(format!("{ns}-{name}-{container}.log"))).ok()
}

/// The folders of every pod `ns/name` this node ran, oldest first.
fn pod_dirs(dir: &Path, ns: &str, name: &str) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(&format!("{ns}_{name}_"))
        })
        .filter_map(|d| Some((d.metadata().ok()?.modified().ok()?, d.path())))
        .collect();
    dirs.sort();
    dirs.into_iter().map(|(_, d)| d).collect()
}

/// Where a pod's container logs are: for a test that failed.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(pods) = std::fs::read_dir(dir) else {
        return out;
    };
    for pod in pods.flatten() {
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                out.push_str(&format!("----- {} -----\n{text}", path.display()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_services_by_cluster_dns_names_and_bare_in_the_pods_namespace() {
        let svc = |name: &str, ns: &str, ip: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip}
            }))
            .expect("a service")
        };
        let text = hosts(
            "shop",
            "web-1",
            Ipv4Addr::new(10, 251, 1, 2),
            &[
                svc("orders", "shop", "10.96.0.10"),
                svc("weft-control", "weft-system", "10.96.0.11"),
                svc("headless", "shop", "None"),
            ],
            None,
        );
        assert!(text.contains("10.251.1.2\tweb-1\n"), "{text}");
        assert!(
            text.contains(
                "10.96.0.10\torders.shop.svc.cluster.local orders.shop.svc orders.shop orders\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("weft-control.weft-system.svc weft-control.weft-system\n"),
            "{text}"
        );
        assert!(!text.contains("headless"), "{text}");
    }
}
