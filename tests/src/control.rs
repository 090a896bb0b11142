//! Runs `weft-control serve` on a mesh file the test owns: written before start,
//! rewritten atomically to change the mesh, and the process killed and restarted on
//! the same ports to test how proxies live through a control-plane outage.

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

/// A running (or deliberately killed) `weft-control serve`. Stopped on drop.
pub struct WeftControl {
    grpc: SocketAddr,
    admin: SocketAddr,
    mesh_path: PathBuf,
    /// `None` while killed.
    process: Option<Process>,
    /// Killed or stopped earlier runs, kept so a failed test prints their logs too.
    past: Vec<Process>,
    starts: usize,
    // Dropped last: the mesh file and the logs live here.
    dir: TempDir,
}

impl WeftControl {
    /// Writes the mesh file, starts the control plane on free ports and waits until
    /// `/ready` (it has served its first valid state).
    pub async fn start(services: &[ServiceDef]) -> anyhow::Result<WeftControl> {
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-control-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mesh_path = dir.path().join("mesh.yaml");
        write_atomic(&mesh_path, &mesh_yaml(services))?;
        let mut control = WeftControl {
            grpc: free_addr(),
            admin: free_addr(),
            mesh_path,
            process: None,
            past: Vec::new(),
            starts: 0,
            dir,
        };
        control.restart().await?;
        Ok(control)
    }

    /// Starts the process again on the same ports and mesh file (after
    /// [`WeftControl::kill`]), and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "the control plane is still running");
        self.starts += 1;
        let name = if self.starts == 1 {
            "weft-control".to_string()
        } else {
            format!("weft-control-{}", self.starts)
        };
        let mut cmd = Command::new(bins::binary("weft-control")?);
        cmd.arg("serve")
            .arg("--mesh")
            .arg(&self.mesh_path)
            .arg("--grpc")
            .arg(self.grpc.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            // Its CA and token secret stay in the test's own directory.
            .arg("--state-dir")
            .arg(self.dir.path().join("state"));
        let log = std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_string());
        cmd.env("RUST_LOG", log).env("NO_COLOR", "1");
        let mut process = Process::spawn(&name, cmd, self.dir.path())?;
        admin::wait_ready(&mut process, self.admin, READY_LIMIT).await?;
        self.process = Some(process);
        Ok(())
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

    /// What proxies put in `control_plane:`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    pub fn mesh_path(&self) -> &Path {
        &self.mesh_path
    }

    /// Everything the current (or last) process wrote.
    pub fn output(&self) -> String {
        self.process
            .as_ref()
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
