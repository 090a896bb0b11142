//! A real Kubernetes control plane for the tests: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler, built from their published Go modules
//! at the versions pinned in tests/cluster/ (see [`build`]) and started here with a
//! CA, ServiceAccount signing key and kubeconfigs of their own.
//!
//! ```text
//! etcd 127.0.0.1:<port>  ◄── kube-apiserver https://<bind>:<port>  (RBAC, Node; admission
//!                              incl. MutatingAdmissionWebhook; TokenRequest/TokenReview;
//!                              aggregator routing: webhook Services go to endpoint IPs)
//!                                ▲                ▲
//!           kube-controller-manager       kube-scheduler      (both on 127.0.0.1)
//! ```
//!
//! Starting takes about 10 s and blocks the calling thread (use a multi-thread
//! runtime in async tests). [`Cluster::start`] starts one for the caller, stopped on
//! drop (SIGTERM in reverse start order, then SIGKILL; its directory removed).
//! [`Cluster::shared`] is one
//! cluster per test binary, started by the first test that asks; tests sharing it use
//! namespaces of their own. Either way, a test process that dies without running drop
//! (a shared cluster is never dropped) still stops its cluster: every component runs in
//! one process group, and a small reaper process, which holds the read end of a pipe
//! only the test process writes to, kills that group and removes the directory once
//! the pipe closes.
//!
//! The kubeconfig [`Cluster::kubeconfig`] is `system:masters`; [`Cluster::token`] and
//! [`Cluster::service_account_kubeconfig`] give a ServiceAccount's real credentials,
//! so RBAC applies. No component is reachable off the machine unless
//! [`ClusterOptions::bind_address`] says so (the apiserver only; the others stay on
//! loopback).

mod build;
pub mod pki;
mod probe;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

pub use build::script as build_script;
pub use pki::KUBERNETES_SERVICE_IP;

use crate::ports::free_port;
use crate::process::Process;

/// The Service cluster IP range.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The ServiceAccount token issuer, and the apiserver's own audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// How long the whole start may take before it fails (the target is far less; CI
/// shares two cores with other work).
const START_LIMIT: Duration = Duration::from_secs(90);
/// How long one kubectl invocation may take.
const KUBECTL_LIMIT: Duration = Duration::from_secs(60);

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where kube-apiserver listens: loopback by default; a bridge address (or
    /// 0.0.0.0) when pods in network namespaces must reach it. A non-loopback address
    /// is also advertised as the `kubernetes` Service's endpoint.
    pub bind_address: IpAddr,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

pub struct Cluster {
    /// `https://<address>:<port>` of kube-apiserver.
    server: String,
    api_addr: SocketAddr,
    kubeconfig: PathBuf,
    pki: pki::Pki,
    bin_dir: PathBuf,
    started_in: Duration,
    /// In start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler;
    /// stopped in reverse.
    processes: Vec<Process>,
    reaper: Option<Reaper>,
    /// The cluster's process group (etcd's pid) and kube-apiserver's flags, to
    /// restart it.
    group: u32,
    apiserver_args: Vec<String>,
    dir: TempDir,
}

/// The process that stops the cluster's process group when the test process dies.
struct Reaper {
    child: Child,
    /// Closed on drop, or by the kernel when the test process exits.
    pipe: Option<ChildStdin>,
}

static SHARED: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

impl Cluster {
    /// A new cluster on loopback, or `None` (after saying why `test` is skipped)
    /// when Go or kubectl is missing; under `CI=true` that panics instead.
    pub fn start(test: &str) -> anyhow::Result<Option<Cluster>> {
        Self::start_with(test, ClusterOptions::default())
    }

    pub fn start_with(test: &str, options: ClusterOptions) -> anyhow::Result<Option<Cluster>> {
        let Some(bin_dir) = build::bin_dir(test) else {
            return Ok(None);
        };
        Self::launch(bin_dir, &options).map(Some)
    }

    /// The cluster of this test binary, started on first use (on loopback) and
    /// stopped when the binary exits. `None` means skip (see [`Cluster::start`]);
    /// a failed start fails every test that asks.
    pub fn shared(test: &str) -> Option<&'static Cluster> {
        let started = SHARED.get_or_init(|| {
            Self::start(test).map_err(|e| format!("starting the shared test cluster: {e:#}"))
        });
        match started {
            Ok(Some(cluster)) => Some(cluster),
            Ok(None) => {
                // Says so for every test that skips, not only the first.
                let _ = build::bin_dir(test);
                None
            }
            Err(why) => panic!("{test}: {why}"),
        }
    }

    fn launch(bin_dir: PathBuf, options: &ClusterOptions) -> anyhow::Result<Cluster> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("weft-cluster-")
            .tempdir()
            .context("cannot create the cluster's directory")?;
        let bind = options.bind_address;
        // The address clients dial: loopback when the apiserver listens everywhere.
        let dial = if bind.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind
        };
        let pki = pki::create(&dir.path().join("pki"), &[bind, dial])?;
        let (etcd_client, etcd_peer) = (free_port(), free_port());
        let api_addr = SocketAddr::new(dial, free_port());
        let cm_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let sched_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let server = format!("https://{api_addr}");

        let kubeconfig = write_kubeconfig(dir.path(), "admin", &server, &pki, &pki.admin)?;
        let cm_kubeconfig = write_kubeconfig(
            dir.path(),
            "controller-manager",
            &server,
            &pki,
            &pki.controller_manager,
        )?;
        let sched_kubeconfig =
            write_kubeconfig(dir.path(), "scheduler", &server, &pki, &pki.scheduler)?;

        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let bin = |name: &str| bin_dir.join(name);
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut processes = Vec::new();

        let etcd_client_url = format!("http://127.0.0.1:{etcd_client}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let mut etcd = Command::new(bin("etcd"));
        etcd.args([
            "--name=weft-test".to_string(),
            format!("--data-dir={}", path(&dir.path().join("etcd"))),
            format!("--listen-client-urls={etcd_client_url}"),
            format!("--advertise-client-urls={etcd_client_url}"),
            format!("--listen-peer-urls={etcd_peer_url}"),
            format!("--initial-advertise-peer-urls={etcd_peer_url}"),
            format!("--initial-cluster=weft-test={etcd_peer_url}"),
            // Throwaway data: durability only costs start time.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ])
        // The cluster's process group, led by etcd; the reaper kills it.
        .process_group(0);
        let etcd = Process::spawn("etcd", etcd, &logs)?;
        let group = etcd.pid();
        processes.push(etcd);
        let reaper = Reaper::start(group, dir.path())?;

        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_client_url}"),
            format!("--bind-address={bind}"),
            format!("--secure-port={}", api_addr.port()),
            format!("--cert-dir={}", path(&dir.path().join("apiserver-certs"))),
            format!("--tls-cert-file={}", path(&pki.apiserver.cert)),
            format!("--tls-private-key-file={}", path(&pki.apiserver.key)),
            format!("--client-ca-file={}", path(&pki.ca.cert)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--service-account-issuer={ISSUER}"),
            format!(
                "--service-account-key-file={}",
                path(&pki.service_account_public_key)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--api-audiences={ISSUER}"),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook".into(),
            // Webhook Services resolve to their endpoints' IPs: there is no kube-proxy.
            "--enable-aggregator-routing=true".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        if dial.is_loopback() {
            // The `kubernetes` Service's endpoint would be a loopback address, which
            // EndpointSlices may not hold; nothing in the tests dials it then.
            apiserver_args.push("--endpoint-reconciler-type=none".into());
        } else {
            apiserver_args.push(format!("--advertise-address={dial}"));
        }
        let mut apiserver = Command::new(bin("kube-apiserver"));
        apiserver
            .args(&apiserver_args)
            .process_group(group_id(group)?);
        processes.push(Process::spawn("kube-apiserver", apiserver, &logs)?);

        let mut cluster = Cluster {
            server,
            api_addr,
            kubeconfig,
            pki,
            bin_dir,
            started_in: Duration::ZERO,
            processes,
            reaper: Some(reaper),
            group,
            apiserver_args,
            dir,
        };
        let prober = probe::Prober::new(
            &cluster.pki.ca_der,
            &cluster.pki.admin_der.0,
            &cluster.pki.admin_der.1,
        )?;
        let deadline = started + START_LIMIT;
        cluster.wait_for(&prober, "kube-apiserver", api_addr, "/readyz", deadline)?;
        // Only now: both read their delegated-auth configuration from the apiserver
        // at start and exit if RBAC does not let them yet.
        let processes = &mut cluster.processes;
        let bin = |name: &str| cluster.bin_dir.join(name);
        let pki = &cluster.pki;
        let logs = cluster.dir.path().join("logs");
        let mut cm = Command::new(bin("kube-controller-manager"));
        cm.args([
            format!("--kubeconfig={}", path(&cm_kubeconfig)),
            format!("--authentication-kubeconfig={}", path(&cm_kubeconfig)),
            format!("--authorization-kubeconfig={}", path(&cm_kubeconfig)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", cm_addr.port()),
            format!(
                "--tls-cert-file={}",
                path(&pki.controller_manager_serving.cert)
            ),
            format!(
                "--tls-private-key-file={}",
                path(&pki.controller_manager_serving.key)
            ),
            format!("--client-ca-file={}", path(&pki.ca.cert)),
            format!(
                "--service-account-private-key-file={}",
                path(&pki.service_account_key)
            ),
            format!("--root-ca-file={}", path(&pki.ca.cert)),
            "--use-service-account-credentials=true".into(),
            format!("--cluster-signing-cert-file={}", path(&pki.ca.cert)),
            format!("--cluster-signing-key-file={}", path(&pki.ca.key)),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--controllers=*".into(),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ]);
        cm.process_group(group_id(group)?);
        processes.push(Process::spawn("kube-controller-manager", cm, &logs)?);

        let mut sched = Command::new(bin("kube-scheduler"));
        sched.args([
            format!("--kubeconfig={}", path(&sched_kubeconfig)),
            format!("--authentication-kubeconfig={}", path(&sched_kubeconfig)),
            format!("--authorization-kubeconfig={}", path(&sched_kubeconfig)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", sched_addr.port()),
            format!("--tls-cert-file={}", path(&pki.scheduler_serving.cert)),
            format!(
                "--tls-private-key-file={}",
                path(&pki.scheduler_serving.key)
            ),
            format!("--client-ca-file={}", path(&pki.ca.cert)),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ]);
        sched.process_group(group_id(group)?);
        processes.push(Process::spawn("kube-scheduler", sched, &logs)?);

        for (what, addr, path) in [
            ("kube-controller-manager", cm_addr, "/healthz"),
            ("kube-scheduler", sched_addr, "/readyz"),
            // The ServiceAccount controller is running: pods can be created.
            (
                "the default ServiceAccount",
                api_addr,
                "/api/v1/namespaces/default/serviceaccounts/default",
            ),
        ] {
            cluster.wait_for(&prober, what, addr, path, deadline)?;
        }
        cluster.started_in = started.elapsed();
        eprintln!(
            "cluster: ready in {:.1} s at {} (kubeconfig {})",
            cluster.started_in.as_secs_f64(),
            cluster.server,
            cluster.kubeconfig.display()
        );
        Ok(cluster)
    }

    /// Polls `GET path` at `addr` until it answers 200, failing (with the component
    /// logs) when a component exits or `deadline` passes.
    fn wait_for(
        &mut self,
        prober: &probe::Prober,
        what: &str,
        addr: SocketAddr,
        path: &str,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            for p in &mut self.processes {
                if let Some(status) = p.try_exit()? {
                    bail!(
                        "{} exited ({status}) while waiting for {what}:\n{}",
                        p.name(),
                        tail(&p.output(), 40)
                    );
                }
            }
            let last = match prober.get(addr, path) {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("{status}: {}", tail(&body, 20)),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{what} not ready within {START_LIMIT:?} (GET {path}: {last}); logs in {}\n{}",
                    self.dir.path().join("logs").display(),
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs_tail(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("----- {} -----\n{}", p.name(), tail(&p.output(), 15)))
            .collect()
    }

    /// Stops kube-apiserver (SIGTERM; SIGKILL after 3 s: while clients hold watches
    /// it was seen still running 10 s after SIGTERM) and starts it again with the same flags and port,
    /// returning once it is ready: every client's connections and watches break
    /// meanwhile, and etcd keeps the state.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        const APISERVER: usize = 1;
        let restarted = Instant::now();
        let old = &mut self.processes[APISERVER];
        old.signal(nix::sys::signal::Signal::SIGTERM)?;
        if old.wait_exit(Duration::from_secs(3)).await.is_err() {
            eprintln!("cluster: kube-apiserver still draining watches after SIGTERM; killing it");
        }
        let mut cmd = Command::new(self.bin_dir.join("kube-apiserver"));
        cmd.args(&self.apiserver_args)
            .process_group(group_id(self.group)?);
        let logs = self.dir.path().join("logs");
        // Replacing the old Process drops it, which kills it if it still runs.
        self.processes[APISERVER] = Process::spawn("kube-apiserver-restarted", cmd, &logs)?;
        let prober = probe::Prober::new(
            &self.pki.ca_der,
            &self.pki.admin_der.0,
            &self.pki.admin_der.1,
        )?;
        let addr = self.api_addr;
        self.wait_for(
            &prober,
            "kube-apiserver (restarted)",
            addr,
            "/readyz",
            restarted + START_LIMIT,
        )?;
        eprintln!(
            "cluster: kube-apiserver restarted and ready in {:.1} s",
            restarted.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// `https://<address>:<port>` of kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// An admin kubeconfig (`system:masters`): it may do anything, including
    /// impersonation.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA's certificate: it signed the apiserver's serving certificate
    /// and every client certificate; pods get it as their `ca.crt`.
    pub fn ca_cert_path(&self) -> &Path {
        &self.pki.ca.cert
    }

    pub fn ca_key_path(&self) -> &Path {
        &self.pki.ca.key
    }

    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The folder of the cluster's programs (etcd, kube-apiserver, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A directory that lives as long as the cluster (its logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process ids of etcd, kube-apiserver, kube-controller-manager and
    /// kube-scheduler.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }

    /// How long [`Cluster::start`] took until every component was ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// `kubectl --kubeconfig <admin>` with `args`, not yet run.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG");
        cmd
    }

    /// Runs kubectl as admin; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_with_input(args, None)
    }

    /// Like [`Cluster::kubectl`], with `input` on its stdin (`apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        kubectl_stdout(self.kubectl_command(args), args, input, KUBECTL_LIMIT)
    }

    /// Runs kubectl as admin and returns whatever it did, success or not.
    pub fn kubectl_output(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
        run_bounded(self.kubectl_command(args), input, KUBECTL_LIMIT)
            .with_context(|| format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml))
    }

    /// A token of ServiceAccount `namespace/name` from the TokenRequest API, for
    /// `audience` (the apiserver's own when `None`), bound to pod `bound_pod` when
    /// given: it stops being valid when that pod is deleted.
    pub fn token(
        &self,
        namespace: &str,
        name: &str,
        audience: Option<&str>,
        bound_pod: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut args = vec!["create", "token", name, "-n", namespace, "--duration=1h"];
        if let Some(audience) = audience {
            args.extend(["--audience", audience]);
        }
        if let Some(pod) = bound_pod {
            args.extend(["--bound-object-kind", "Pod", "--bound-object-name", pod]);
        }
        Ok(self.kubectl(&args)?.trim().to_string())
    }

    /// Writes a kubeconfig into `dir` that authenticates as ServiceAccount
    /// `namespace/name` with a fresh token of it, so RBAC applies exactly as to a
    /// pod running under that account; returns its path.
    pub fn service_account_kubeconfig(
        &self,
        dir: &Path,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<PathBuf> {
        let token = self.token(namespace, name, None, None)?;
        let path = dir.join(format!("kubeconfig-{namespace}-{name}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: weft-test\n  cluster:\n    \
             server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {namespace}-{name}\n  \
             user:\n    token: {token}\ncontexts:\n- name: weft-test\n  context:\n    \
             cluster: weft-test\n    user: {namespace}-{name}\ncurrent-context: weft-test\n",
            server = self.server,
            ca = self.pki.ca.cert.display(),
        );
        std::fs::write(&path, text).context("writing the kubeconfig")?;
        Ok(path)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        if let Some(mut reaper) = self.reaper.take() {
            reaper.pipe.take();
            let _ = reaper.child.wait();
        }
    }
}

impl Reaper {
    /// Watches process group `group`: once the pipe closes, SIGTERM to the group,
    /// SIGKILL to whatever is left after a grace (kube-apiserver does not stop on
    /// SIGTERM once etcd is gone), and `dir` removed. It leads a process group of its
    /// own and ignores SIGINT and SIGHUP, so whatever stops the test process's group
    /// (a terminal's Ctrl-C, a job runner) leaves it to clean up.
    fn start(group: u32, dir: &Path) -> anyhow::Result<Reaper> {
        let script = r#"trap '' INT HUP
cat >/dev/null
if kill -TERM -- "-$1" 2>/dev/null; then
  i=0
  while [ "$i" -lt 50 ] && kill -0 -- "-$1" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  kill -KILL -- "-$1" 2>/dev/null
fi
rm -rf -- "$2""#;
        // bash, not sh: dash's kill cannot signal a process group.
        let mut child = Command::new("bash")
            .args(["-c", script, "weft-cluster-reaper"])
            .arg(group.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start the cluster's reaper")?;
        let pipe = child.stdin.take();
        Ok(Reaper { child, pipe })
    }
}

fn group_id(pid: u32) -> anyhow::Result<i32> {
    i32::try_from(pid).context("pid out of range")
}

fn write_kubeconfig(
    dir: &Path,
    name: &str,
    server: &str,
    pki: &pki::Pki,
    user: &pki::CertFiles,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: weft-test\n  cluster:\n    \
         server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    \
         client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: weft-test\n  \
         context:\n    cluster: weft-test\n    user: {name}\ncurrent-context: weft-test\n",
        ca = pki.ca.cert.display(),
        cert = user.cert.display(),
        key = user.key.display(),
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs `cmd` with `input` on stdin, killing it if it takes longer than `limit`.
/// Runs `cmd`, a kubectl with `args`, within `limit`: its stdout, or an error with
/// its stderr.
pub fn kubectl_stdout(
    cmd: Command,
    args: &[&str],
    input: Option<&str>,
    limit: Duration,
) -> anyhow::Result<String> {
    let out =
        run_bounded(cmd, input, limit).with_context(|| format!("kubectl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run_bounded(
    mut cmd: Command,
    input: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Output> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    // Output is read on threads so a chatty child cannot block on a full pipe.
    let stdout = child.stdout.take().map(read_on_thread);
    let stderr = child.stderr.take().map(read_on_thread);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn read_on_thread(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}
