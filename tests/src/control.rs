//! Runs `weft-control serve` on free loopback ports, with a mesh file and a state
//! directory (its development CA and token secret) that are the test's own: the mesh
//! written before start and rewritten atomically to change it, the process killed or
//! stopped and started again on the same ports to test how proxies live through a
//! control-plane outage or a restart with other arguments.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::admin::{self, Reply};
use crate::bins;
use crate::metrics::Metrics;
use crate::ports::free_addr;
use crate::process::Process;
use crate::proxy::{ServiceDef, write_atomic};

/// How long the control plane may take from exec to `/ready`.
pub const READY_LIMIT: Duration = Duration::from_secs(15);

/// Log filter for the control planes the tests start (override with `WEFT_TEST_LOG`).
const DEFAULT_LOG: &str = "info,weft_control=debug";

/// Variables weft-control reads that the test's arguments and `env` set, never the
/// environment that happens to run the tests.
const SCRUBBED_ENV: &[&str] = &[
    "WEFT_CA_CERT",
    "WEFT_CA_KEY",
    "WEFT_CA_ROOT",
    "WEFT_CA_SECRET",
    "WEFT_INJECTOR_SECRET",
    "WEFT_INJECTOR_SERVICE",
    "WEFT_INJECTOR_WEBHOOK",
    "WEFT_INJECTOR_RECHECK",
    "WEFT_STATE_DIR",
    "WEFT_LOG",
    "WEFT_IDENTITY_PROOF",
    "WEFT_TOKEN_AUDIENCE",
    "WEFT_TOKEN_REVIEW_TIMEOUT",
    "WEFT_GRPC_LISTEN",
    "WEFT_ADMIN_LISTEN",
    "WEFT_GRPC_TLS",
    "WEFT_TLS_NAME",
    "KUBECONFIG",
];

/// The mesh file's text for `services`.
pub fn mesh_yaml(services: &[ServiceDef]) -> String {
    let mut out = String::from("services:\n");
    if services.is_empty() {
        return "services: []\n".to_string();
    }
    for s in services {
        s.write_yaml(&mut out);
    }
    out
}

/// `weft-control` with `args`, the test's `env` and nothing of the caller's.
fn command(args: &[&str], env: &[(String, String)]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bins::binary("weft-control")?);
    let log = std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_string());
    cmd.args(args).env("RUST_LOG", log).env("NO_COLOR", "1");
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// A running (or deliberately killed) `weft-control serve`. Stopped on drop.
pub struct WeftControl {
    grpc: SocketAddr,
    admin: SocketAddr,
    mesh_path: PathBuf,
    state_dir: PathBuf,
    /// `serve`'s arguments beyond the ports, mesh and state dir, e.g. `--grpc-tls`.
    extra: Vec<String>,
    /// Environment given at start, given again on restart.
    env: Vec<(String, String)>,
    /// `None` while killed or stopped.
    process: Option<Process>,
    /// Killed or stopped earlier runs, kept so a failed test prints their logs too.
    past: Vec<Process>,
    starts: usize,
    // Dropped last: the mesh file, the state and the logs live here.
    dir: TempDir,
}

impl WeftControl {
    /// Writes the mesh file for `services`, starts the control plane on free ports and
    /// waits until `/ready` (it has served its first valid state).
    pub async fn start(services: &[ServiceDef]) -> anyhow::Result<WeftControl> {
        Self::start_with_env(&mesh_yaml(services), &[], &[]).await
    }

    /// Serves `mesh` (YAML text); `extra` are more `serve` arguments, e.g.
    /// `["--cert-lifetime", "10s"]`.
    pub async fn start_yaml(mesh: &str, extra: &[&str]) -> anyhow::Result<WeftControl> {
        Self::start_with_env(mesh, extra, &[]).await
    }

    /// Like [`WeftControl::start_yaml`], with environment variables `env` set (e.g.
    /// `KUBECONFIG`).
    pub async fn start_with_env(
        mesh: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<WeftControl> {
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-control-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mesh_path = dir.path().join("mesh.yaml");
        write_atomic(&mesh_path, mesh)?;
        let mut control = WeftControl {
            grpc: free_addr(),
            admin: free_addr(),
            mesh_path,
            state_dir: dir.path().join("state"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
            past: Vec::new(),
            starts: 0,
            dir,
        };
        control.restart().await?;
        Ok(control)
    }

    /// Starts the process again on the same ports, mesh file, state and arguments
    /// (after [`WeftControl::kill`] or [`WeftControl::stop`]), and waits until it is
    /// ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "the control plane is still running");
        self.starts += 1;
        let name = if self.starts == 1 {
            "weft-control".to_string()
        } else {
            format!("weft-control-{}", self.starts)
        };
        let (grpc, admin_addr) = (self.grpc.to_string(), self.admin.to_string());
        let (mesh, state) = (
            self.mesh_path.to_string_lossy(),
            self.state_dir.to_string_lossy(),
        );
        let mut args = vec![
            "serve",
            "--mesh",
            &mesh,
            "--grpc",
            &grpc,
            "--admin",
            &admin_addr,
            "--state-dir",
            &state,
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let cmd = command(&args, &self.env)?;
        let mut process = Process::spawn(&name, cmd, self.dir.path())?;
        admin::wait_ready(&mut process, self.admin, READY_LIMIT).await?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the control plane (if running) and starts it again on the same ports,
    /// mesh and state directory, with `extra` arguments instead of the previous ones.
    pub async fn restart_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        if self.process.is_some() {
            self.stop().await?;
        }
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart().await
    }

    /// SIGKILL: the control plane vanishes without closing its streams cleanly.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut process = self
            .process
            .take()
            .context("the control plane is not running")?;
        process.signal(Signal::SIGKILL)?;
        let exited = process.wait_exit(Duration::from_secs(5)).await;
        self.past.push(process);
        exited.map(|_| ())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut process = self
            .process
            .take()
            .context("the control plane is not running")?;
        let stopped = process.stop().await;
        self.past.push(process);
        stopped
    }

    /// The running process (its output, whether it exited).
    pub fn process(&mut self) -> anyhow::Result<&mut Process> {
        self.process
            .as_mut()
            .context("the control plane is not running")
    }

    /// What proxies put in `control_plane:` for a plaintext gRPC port.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Started with `--grpc-tls`: proxies reach it over `https://`.
    pub fn tls(&self) -> bool {
        self.extra.iter().any(|a| a == "--grpc-tls")
    }

    pub fn mesh_path(&self) -> &Path {
        &self.mesh_path
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Everything the current (or last) process wrote.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
            .or(self.past.last())
            .map(Process::output)
            .unwrap_or_default()
    }

    /// Replaces the mesh file atomically (temp file + rename, as editors and
    /// Kubernetes do); the control plane picks the change up by itself.
    pub fn write_mesh(&self, services: &[ServiceDef]) -> anyhow::Result<()> {
        write_atomic(&self.mesh_path, &mesh_yaml(services))
    }

    /// Replaces the mesh file with arbitrary text (e.g. an invalid description).
    pub fn write_mesh_text(&self, text: &str) -> anyhow::Result<()> {
        write_atomic(&self.mesh_path, text)
    }

    /// A proxy config's `identity:` section for service account `sa` in namespace
    /// `default`, with inbound policy `inbound` (a YAML flow mapping) and `extra`
    /// more keys (indented lines, e.g. `"  http1_over_http2: false\n"`).
    pub fn identity_yaml(&self, sa: &str, inbound: &str, extra: &str) -> String {
        let token = self
            .token("default", sa)
            .expect("a token from weft-control");
        let (url, bundle) = if self.tls() {
            (
                format!("https://{}", self.grpc),
                format!(
                    "  trust_bundle: \"{}\"\n",
                    self.state_dir.join("ca.pem").display()
                ),
            )
        } else {
            (self.url(), String::new())
        };
        format!(
            "identity:\n  trust_domain: cluster.local\n  service_account: {sa}\n  token: \"{token}\"\n  \
             control_plane: \"{url}\"\n{bundle}  inbound: {inbound}\n{extra}"
        )
    }

    /// The local identity token for one workload (`weft-control token`).
    pub fn token(&self, namespace: &str, service_account: &str) -> anyhow::Result<String> {
        let state = self.state_dir.to_string_lossy();
        let out = command(
            &[
                "token",
                "--state-dir",
                &state,
                "--namespace",
                namespace,
                "--service-account",
                service_account,
            ],
            &[],
        )?
        .output()
        .context("running weft-control token")?;
        anyhow::ensure!(
            out.status.success(),
            "weft-control token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Reply> {
        admin::get(self.admin, path).await
    }

    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let reply = self.admin_get("/metrics").await?;
        anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
        Ok(reply.body)
    }

    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        Ok(Metrics::parse(&self.metrics_text().await?))
    }

    /// One metric value (no labels: the control plane's metrics have none), 0 when
    /// the series does not exist yet.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .expect("read the control plane's /metrics")
            .value(name, &[])
    }

    /// Polls `/metrics` until `name` satisfies `ok`, and returns the value.
    pub async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool, limit: Duration) -> f64 {
        crate::eventually(limit, &format!("control plane metric {name}"), || async {
            let v = self.metric(name).await;
            ok(v).then_some(v)
        })
        .await
    }
}

impl Drop for WeftControl {
    fn drop(&mut self) {
        // The processes stop (and print their logs on a panic) before the dir goes.
        self.process.take();
        self.past.clear();
    }
}
