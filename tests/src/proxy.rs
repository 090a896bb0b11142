//! Runs weft-proxy: a config built in code, written to a temp dir, the process
//! started and polled until `/ready`, and helpers for reload, metrics and shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::admin::{self, Reply};
use crate::bins;
use crate::metrics::Metrics;
use crate::ports::free_addr;
use crate::process::Process;

/// How long a proxy may take from exec to `/ready`.
pub const READY_LIMIT: Duration = Duration::from_secs(15);

/// Log filter for proxies the tests start (override with `WEFT_TEST_LOG`).
const DEFAULT_LOG: &str = "info,weft_proxy=debug";

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDef {
    pub addr: SocketAddr,
    /// ready | not-ready | terminating.
    pub state: String,
    /// Relative weight; the mesh's default (100) when `None`.
    pub weight: Option<u32>,
    /// The SPIFFE ID the endpoint must present; `None`: plaintext.
    pub identity: Option<String>,
}

/// One service of the mesh: in a proxy's config (file mode) or in the control
/// plane's mesh file (the same format).
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub name: String,
    pub namespace: Option<String>,
    pub vips: Vec<String>,
    /// (port, protocol): protocol is detect | http1 | http2 | grpc | opaque.
    pub ports: Vec<(u16, String)>,
    /// Ports with an endpoint list of their own (a multi-port service).
    pub port_endpoints: Vec<(u16, Vec<SocketAddr>)>,
    pub endpoints: Vec<EndpointDef>,
    /// The `policy:` mapping as YAML flow text, e.g. `{timeouts: {request: 300ms}}`.
    pub policy: Option<String>,
    /// The `routes:` list as YAML flow text, e.g. `[{match: [{method: GET}]}]`.
    pub routes: Option<String>,
}

impl ServiceDef {
    pub fn new(name: &str) -> ServiceDef {
        ServiceDef {
            name: name.to_string(),
            namespace: None,
            vips: Vec::new(),
            ports: Vec::new(),
            port_endpoints: Vec::new(),
            endpoints: Vec::new(),
            policy: None,
            routes: None,
        }
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    pub fn vip(mut self, ip: &str) -> Self {
        self.vips.push(ip.to_string());
        self
    }

    pub fn port(mut self, port: u16, protocol: &str) -> Self {
        self.ports.push((port, protocol.to_string()));
        self
    }

    /// A port whose connections go to `endpoints` instead of the service's.
    pub fn port_with_endpoints(
        mut self,
        port: u16,
        protocol: &str,
        endpoints: &[SocketAddr],
    ) -> Self {
        self.port_endpoints.push((port, endpoints.to_vec()));
        self.port(port, protocol)
    }

    pub fn endpoint(self, addr: SocketAddr) -> Self {
        self.endpoint_in_state(addr, "ready")
    }

    pub fn endpoint_in_state(mut self, addr: SocketAddr, state: &str) -> Self {
        self.endpoints.push(EndpointDef {
            addr,
            state: state.to_string(),
            weight: None,
            identity: None,
        });
        self
    }

    /// A ready endpoint reached over mTLS, which must present `identity`.
    pub fn endpoint_with_identity(mut self, addr: SocketAddr, identity: &str) -> Self {
        self.endpoints.push(EndpointDef {
            addr,
            state: "ready".to_string(),
            weight: None,
            identity: Some(identity.to_string()),
        });
        self
    }

    /// A ready endpoint with a weight.
    pub fn weighted_endpoint(mut self, addr: SocketAddr, weight: u32) -> Self {
        self.endpoints.push(EndpointDef {
            addr,
            state: "ready".to_string(),
            weight: Some(weight),
            identity: None,
        });
        self
    }

    /// A ready endpoint with a weight (the default is 100).
    pub fn endpoint_weighted(self, addr: SocketAddr, weight: u32) -> Self {
        self.weighted_endpoint(addr, weight)
    }

    pub fn policy(mut self, flow_yaml: &str) -> Self {
        self.policy = Some(flow_yaml.to_string());
        self
    }

    /// The service's `routes:`, a YAML flow sequence.
    pub fn routes(mut self, flow_yaml: &str) -> Self {
        self.routes = Some(flow_yaml.to_string());
        self
    }

    /// The label weft-proxy uses for this service in metrics: "name.namespace".
    pub fn metric_label(&self) -> String {
        format!(
            "{}.{}",
            self.name,
            self.namespace.as_deref().unwrap_or("default")
        )
    }

    /// This service as one item of a `services:` list.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        self.write_yaml(&mut out);
        out
    }

    /// Appends this service as one item of a `services:` list.
    pub fn write_yaml(&self, out: &mut String) {
        out.push_str(&format!("  - name: {}\n", self.name));
        if let Some(ns) = &self.namespace {
            out.push_str(&format!("    namespace: {ns}\n"));
        }
        if !self.vips.is_empty() {
            out.push_str(&format!("    vips: [{}]\n", self.vips.join(", ")));
        }
        if !self.ports.is_empty() {
            out.push_str("    ports:\n");
            for (port, proto) in &self.ports {
                let own = self.port_endpoints.iter().find(|(p, _)| p == port);
                let endpoints = own.map_or(String::new(), |(_, addrs)| {
                    let list: Vec<String> = addrs
                        .iter()
                        .map(|a| format!("{{address: \"{a}\"}}"))
                        .collect();
                    format!(", endpoints: [{}]", list.join(", "))
                });
                out.push_str(&format!(
                    "      - {{port: {port}, protocol: {proto}{endpoints}}}\n"
                ));
            }
        }
        out.push_str("    endpoints:");
        if self.endpoints.is_empty() {
            out.push_str(" []\n");
        } else {
            out.push('\n');
            for e in &self.endpoints {
                let weight = e
                    .weight
                    .map(|w| format!(", weight: {w}"))
                    .unwrap_or_default();
                let identity = e
                    .identity
                    .as_ref()
                    .map(|id| format!(", identity: \"{id}\""))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "      - {{address: \"{}\", state: {}{weight}{identity}}}\n",
                    e.addr, e.state
                ));
            }
        }
        if let Some(policy) = &self.policy {
            out.push_str(&format!("    policy: {policy}\n"));
        }
        if let Some(routes) = &self.routes {
            out.push_str(&format!("    routes: {routes}\n"));
        }
    }
}

/// A weft-proxy config. Listener addresses are picked free when added.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub workers: Option<usize>,
    pub workload: Option<String>,
    pub outbound: Option<SocketAddr>,
    /// (listen, app)
    pub inbound: Option<(SocketAddr, SocketAddr)>,
    pub admin: SocketAddr,
    /// `admin.probe_ports`: app ports whose kubelet probes the admin server forwards.
    pub probe_ports: Option<String>,
    /// `inbound.opaque_ports`: app ports never sniffed.
    pub inbound_opaque_ports: Option<String>,
    /// `inbound.http1_ports`: app ports that speak HTTP/1.1 only.
    pub inbound_http1_ports: Option<String>,
    /// `inbound.http2_ports`: app ports that speak HTTP/2 only (h2c).
    pub inbound_http2_ports: Option<String>,
    /// (service, listen)
    pub upstreams: Vec<(String, SocketAddr)>,
    /// `limits:` keys and their YAML values, e.g. ("detect_timeout", "200ms").
    pub limits: Vec<(String, String)>,
    pub services: Vec<ServiceDef>,
    /// Extra top-level YAML appended verbatim (e.g. `control_plane: ...`).
    pub extra: String,
    /// RLIMIT_NOFILE (soft and hard) the proxy runs under, set by `prlimit`.
    pub open_files: Option<u64>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig::new()
    }
}

impl ProxyConfig {
    /// Admin on a free port, no data listeners yet. The outbound listener is always
    /// bound by weft-proxy, so it gets a free port too (see [`ProxyConfig::outbound`]).
    pub fn new() -> ProxyConfig {
        ProxyConfig {
            workers: None,
            workload: None,
            outbound: Some(free_addr()),
            inbound: None,
            admin: free_addr(),
            probe_ports: None,
            inbound_opaque_ports: None,
            inbound_http1_ports: None,
            inbound_http2_ports: None,
            upstreams: Vec::new(),
            limits: Vec::new(),
            services: Vec::new(),
            extra: String::new(),
            open_files: None,
        }
    }

    /// An inbound listener on a free port that forwards to `app`.
    pub fn inbound(mut self, app: SocketAddr) -> Self {
        self.inbound = Some((free_addr(), app));
        self
    }

    /// A fixed-destination listener for `service` on a free port.
    pub fn upstream(mut self, service: &str) -> Self {
        self.upstreams.push((service.to_string(), free_addr()));
        self
    }

    /// `admin.probe_ports`, in the injector's list syntax (`8080,9000-9010`).
    pub fn probe_ports(mut self, ports: &str) -> Self {
        self.probe_ports = Some(ports.to_string());
        self
    }

    /// `inbound.opaque_ports`, in the injector's list syntax.
    pub fn inbound_opaque_ports(mut self, ports: &str) -> Self {
        self.inbound_opaque_ports = Some(ports.to_string());
        self
    }

    /// `inbound.http1_ports`, in the injector's list syntax.
    pub fn inbound_http1_ports(mut self, ports: &str) -> Self {
        self.inbound_http1_ports = Some(ports.to_string());
        self
    }

    /// `inbound.http2_ports`, in the injector's list syntax.
    pub fn inbound_http2_ports(mut self, ports: &str) -> Self {
        self.inbound_http2_ports = Some(ports.to_string());
        self
    }

    pub fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.retain(|(k, _)| k != key);
        self.limits.push((key.to_string(), value.to_string()));
        self
    }

    pub fn service(mut self, service: ServiceDef) -> Self {
        self.services.push(service);
        self
    }

    /// Replaces the services (keeping listeners), e.g. to write a reloaded config.
    pub fn with_services(mut self, services: Vec<ServiceDef>) -> Self {
        self.services = services;
        self
    }

    /// Runs the proxy with at most `n` open files (soft and hard limit).
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    pub fn workload(mut self, name: &str) -> Self {
        self.workload = Some(name.to_string());
        self
    }

    /// Learns the mesh from the control plane at `url` (e.g. `http://127.0.0.1:7443`).
    pub fn control_plane(mut self, url: &str) -> Self {
        self.extra.push_str(&format!("control_plane: \"{url}\"\n"));
        self
    }

    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        if let Some(w) = self.workers {
            out.push_str(&format!("workers: {w}\n"));
        }
        if let Some(w) = &self.workload {
            out.push_str(&format!("node: {{workload: {w}}}\n"));
        }
        if let Some(addr) = self.outbound {
            out.push_str(&format!("outbound: {{listen: \"{addr}\"}}\n"));
        }
        if let Some((listen, app)) = self.inbound {
            let opaque = self
                .inbound_opaque_ports
                .as_ref()
                .map(|p| format!(", opaque_ports: \"{p}\""))
                .unwrap_or_default();
            let http1 = self
                .inbound_http1_ports
                .as_ref()
                .map(|p| format!(", http1_ports: \"{p}\""))
                .unwrap_or_default();
            let http2 = self
                .inbound_http2_ports
                .as_ref()
                .map(|p| format!(", http2_ports: \"{p}\""))
                .unwrap_or_default();
            out.push_str(&format!(
                "inbound: {{listen: \"{listen}\", app: \"{app}\"{opaque}{http1}{http2}}}\n"
            ));
        }
        let probe_ports = self
            .probe_ports
            .as_ref()
            .map(|p| format!(", probe_ports: \"{p}\""))
            .unwrap_or_default();
        out.push_str(&format!(
            "admin: {{listen: \"{}\"{probe_ports}}}\n",
            self.admin
        ));
        if !self.upstreams.is_empty() {
            out.push_str("upstreams:\n");
            for (service, listen) in &self.upstreams {
                out.push_str(&format!(
                    "  - {{service: {service}, listen: \"{listen}\"}}\n"
                ));
            }
        }
        if !self.limits.is_empty() {
            out.push_str("limits:\n");
            for (k, v) in &self.limits {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        if !self.services.is_empty() {
            out.push_str("services:\n");
            for s in &self.services {
                s.write_yaml(&mut out);
            }
        }
        out.push_str(&self.extra);
        out
    }
}

/// Writes `text` to `path` atomically (temp file + rename), so a process that
/// re-reads the file on SIGHUP never sees half of it.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))
}

/// A running weft-proxy. Stopped (SIGTERM, then SIGKILL) when dropped.
pub struct WeftProxy {
    pub config: ProxyConfig,
    config_path: PathBuf,
    process: Process,
    // Dropped last: the process's log lives here.
    _dir: TempDir,
}

/// A `weft-proxy` command for `args`, with the test log filter.
pub fn proxy_command(args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bins::binary("weft-proxy")?);
    cmd.args(args);
    with_test_env(&mut cmd);
    Ok(cmd)
}

/// `weft-proxy` with `args` under an open-file limit of `n`, set by `prlimit`,
/// which execs: the process is the proxy itself.
fn limited_proxy_command(n: u64, args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={n}:{n}"))
        .arg("--")
        .arg(bins::binary("weft-proxy")?)
        .args(args);
    with_test_env(&mut cmd);
    Ok(cmd)
}

fn with_test_env(cmd: &mut Command) {
    let log = std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_string());
    cmd.env("RUST_LOG", log)
        .env("NO_COLOR", "1")
        .env_remove("WEFT_CONFIG");
}

impl WeftProxy {
    /// Writes `config`, starts `weft-proxy run` and waits until `/ready` is 200.
    pub async fn start(config: ProxyConfig) -> anyhow::Result<WeftProxy> {
        Self::start_named("weft-proxy", config).await
    }

    /// Like [`WeftProxy::start`]; `name` labels the log printed on failure.
    pub async fn start_named(name: &str, config: ProxyConfig) -> anyhow::Result<WeftProxy> {
        Self::start_with_env(name, config, &[]).await
    }

    /// A proxy named `upstream` whose only listener is an upstream one for `service`.
    pub async fn upstream_for(service: ServiceDef) -> anyhow::Result<WeftProxy> {
        let config = ProxyConfig::new().upstream(&service.name).service(service);
        Self::start_named("upstream", config).await
    }

    /// Like [`WeftProxy::start_named`], with environment changes: `(name, Some(v))`
    /// sets a variable, `(name, None)` removes it (e.g. the harness's `NO_COLOR`).
    pub async fn start_with_env(
        name: &str,
        config: ProxyConfig,
        env: &[(&str, Option<&str>)],
    ) -> anyhow::Result<WeftProxy> {
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let config_path = dir.path().join("proxy.yaml");
        write_atomic(&config_path, &config.to_yaml())?;
        let path = config_path.to_string_lossy().into_owned();
        let args = ["run", "--config", &path];
        let mut cmd = match config.open_files {
            Some(n) => limited_proxy_command(n, &args)?,
            None => proxy_command(&args)?,
        };
        for (var, value) in env {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
        let mut process = Process::spawn(name, cmd, dir.path())?;
        admin::wait_ready(&mut process, config.admin, READY_LIMIT).await?;
        Ok(WeftProxy {
            config,
            config_path,
            process,
            _dir: dir,
        })
    }

    pub fn outbound(&self) -> SocketAddr {
        self.config
            .outbound
            .expect("this proxy has no outbound listener")
    }

    pub fn inbound(&self) -> SocketAddr {
        self.config
            .inbound
            .expect("this proxy has no inbound listener")
            .0
    }

    pub fn admin(&self) -> SocketAddr {
        self.config.admin
    }

    /// The listen address of the upstream listener for `service`.
    pub fn upstream(&self, service: &str) -> SocketAddr {
        self.config
            .upstreams
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("this proxy has no upstream listener for {service}"))
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The proxy's resident memory now.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.process.rss_kib()
    }

    /// The CPU time the proxy has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        self.process.cpu_time()
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Rewrites the config file (atomically); call [`WeftProxy::reload`] to apply it.
    pub fn write_config(&mut self, config: ProxyConfig) -> anyhow::Result<()> {
        write_atomic(&self.config_path, &config.to_yaml())?;
        self.config = config;
        Ok(())
    }

    /// Replaces the config file with arbitrary text (e.g. an invalid config).
    pub fn write_config_text(&self, text: &str) -> anyhow::Result<()> {
        write_atomic(&self.config_path, text)
    }

    /// SIGHUP: re-read the config file.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        self.process.signal(Signal::SIGHUP)
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Reply> {
        admin::get(self.admin(), path).await
    }

    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let reply = self.admin_get("/metrics").await?;
        anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
        Ok(Metrics::parse(&reply.body))
    }

    /// One metric's value over the series with these labels, summed over labels
    /// not named (requests carry a `route` label most tests leave out); 0 when no
    /// such series exists yet.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics()
            .await
            .expect("read /metrics")
            .sum(name, labels)
    }

    /// Polls `/metrics` until `name{labels}` satisfies `ok`, and returns the value.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        ok: impl Fn(f64) -> bool,
        limit: Duration,
    ) -> f64 {
        let what = format!("metric {name}{labels:?}");
        crate::eventually(limit, &what, || async {
            let v = self.metric(name, labels).await;
            ok(v).then_some(v)
        })
        .await
    }

    /// `POST /shutdown`: start draining.
    pub async fn request_shutdown(&self) -> anyhow::Result<Reply> {
        admin::post(self.admin(), "/shutdown").await
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop().await
    }
}

/// Runs `weft-proxy run` on a config file that is expected to be rejected, and
/// returns its exit status and output. The process is bounded by `limit`.
pub async fn run_expecting_exit(
    config_text: &str,
    limit: Duration,
) -> anyhow::Result<(std::process::ExitStatus, String, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("weft-e2e-")
        .tempdir()
        .context("cannot create a temp dir")?;
    let config_path = dir.path().join("bad-proxy.yaml");
    std::fs::write(&config_path, config_text)?;
    let path = config_path.to_string_lossy().into_owned();
    let mut process = Process::spawn(
        "weft-proxy",
        proxy_command(&["run", "--config", &path])?,
        dir.path(),
    )?;
    let status = process.wait_exit(limit).await?;
    let output = process.output();
    Ok((status, output, config_path))
}
