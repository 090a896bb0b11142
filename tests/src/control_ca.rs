//! Runs weft-control: `serve` on free loopback ports with its own state directory
//! (so its development CA and token secret are the test's own), polled until ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::admin;
use crate::bins;
use crate::ports::free_addr;
use crate::process::Process;

const READY_LIMIT: Duration = Duration::from_secs(15);

pub struct ControlPlane {
    pub grpc: SocketAddr,
    /// Started with `--grpc-tls`: proxies reach it over `https://`.
    pub tls: bool,
    pub admin: SocketAddr,
    state_dir: PathBuf,
    mesh_path: PathBuf,
    /// `serve` and the arguments that keep its ports and state across a restart.
    base_args: Vec<String>,
    /// Environment given at start, given again on restart.
    env: Vec<(String, String)>,
    process: Process,
    _dir: TempDir,
}

fn command(args: &[&str], env: &[(String, String)]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bins::binary("weft-control")?);
    cmd.args(args)
        .env("RUST_LOG", "info,weft_control=debug")
        .env("NO_COLOR", "1");
    // Only the test's arguments count, not what the environment running the tests
    // happens to set.
    for name in [
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
    ] {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

impl ControlPlane {
    /// Serves `mesh` (YAML); `extra` are more `serve` arguments, e.g.
    /// `["--cert-lifetime", "10s"]`.
    pub async fn start(mesh: &str, extra: &[&str]) -> anyhow::Result<ControlPlane> {
        Self::start_with_env(mesh, extra, &[]).await
    }

    /// Like [`ControlPlane::start`], with environment variables `env` set (e.g.
    /// `KUBECONFIG`).
    pub async fn start_with_env(
        mesh: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<ControlPlane> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("weft-cp-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mesh_path = dir.path().join("mesh.yaml");
        std::fs::write(&mesh_path, mesh)?;
        let state_dir = dir.path().join("state");
        let (grpc, admin_addr) = (free_addr(), free_addr());
        let mut args = vec![
            "serve".to_string(),
            "--mesh".into(),
            mesh_path.to_string_lossy().into_owned(),
            "--grpc".into(),
            grpc.to_string(),
            "--admin".into(),
            admin_addr.to_string(),
            "--state-dir".into(),
            state_dir.to_string_lossy().into_owned(),
        ];
        let base_args = args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Process::spawn("weft-control", command(&args, &env)?, dir.path())?;
        admin::wait_ready(&mut process, admin_addr, READY_LIMIT).await?;
        Ok(ControlPlane {
            grpc,
            tls: extra.contains(&"--grpc-tls"),
            admin: admin_addr,
            state_dir,
            mesh_path,
            base_args,
            env,
            process,
            _dir: dir,
        })
    }

    /// The address proxies put in `control_plane:`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Replaces the mesh file (atomically); the control plane picks it up itself.
    pub fn write_mesh(&self, text: &str) -> anyhow::Result<()> {
        crate::proxy::write_atomic(&self.mesh_path, text)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The local identity token for one workload (`weft-control token`).
    pub fn token(&self, namespace: &str, service_account: &str) -> anyhow::Result<String> {
        let state = self.state_dir.to_string_lossy().into_owned();
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

    /// A proxy config's `identity:` section for ServiceAccount `sa` in namespace
    /// `default` of `trust_domain`, with inbound policy `inbound` (YAML flow text).
    pub fn proxy_identity_yaml(&self, trust_domain: &str, sa: &str, inbound: &str) -> String {
        let token = self.token("default", sa).expect("token");
        let (url, bundle) = if self.tls {
            (
                format!("https://{}", self.grpc),
                format!(
                    "  trust_bundle: \"{}\"\n",
                    self.state_dir().join("ca.pem").display()
                ),
            )
        } else {
            (self.url(), String::new())
        };
        format!(
            "identity:\n  trust_domain: {trust_domain}\n  service_account: {sa}\n  token: \"{token}\"\n  \
             control_plane: \"{url}\"\n{bundle}  inbound: {inbound}\n"
        )
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Stops the control plane and starts it again on the same ports, mesh and state
    /// directory, with `extra` arguments instead of the previous ones.
    pub async fn restart(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.process.stop().await?;
        let mut args: Vec<&str> = self.base_args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let log_dir = self._dir.path().to_path_buf();
        self.process = Process::spawn(
            "weft-control-restarted",
            command(&args, &self.env)?,
            &log_dir,
        )?;
        admin::wait_ready(&mut self.process, self.admin, READY_LIMIT).await
    }

    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.stop().await
    }
}
