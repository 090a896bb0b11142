//! A test bed of pods as network namespaces: a "node" namespace holding a bridge,
//! and pods (namespaces with a veth pair onto the bridge), each with its own address,
//! its own iptables rules, a weft-proxy running under the proxy UID, and an app.
//!
//! ```text
//!  node netns  "weft-<pid>-<n>-node": bridge br0 10.250.<n>.1/24, fd77:0:0:<n>::1/64
//!     ├─ veth ── pod netns "weft-<pid>-<n>-a": eth0 10.250.<n>.2/24, fd77:0:0:<n>::2/64
//!     └─ veth ── pod netns "weft-<pid>-<n>-b": eth0 10.250.<n>.3/24, fd77:0:0:<n>::3/64
//! ```
//!
//! Pods route everything (IPv4 and IPv6) via the bridge's addresses.
//!
//! Addresses exist only inside namespaces the bed created; the test process's own
//! namespace gets nothing, and reaches into a pod (an app's listener, a client
//! connection, the proxy's admin port on the pod's loopback) by creating the socket
//! on a short-lived thread that has entered the pod's namespace (a socket stays in
//! the namespace it was created in).
//!
//! Everything is removed on drop, also when a test fails. A test process killed
//! outright (Ctrl-C) cannot run drop: the processes it started in pods die with it
//! (`setpriv --pdeathsig KILL`), and the next bed removes the namespaces that beds
//! of dead test processes left behind (named `weft-<pid>-…`, pid gone).
//!
//! Needs root, iproute2, iptables and setpriv. [`available`] says loudly when they
//! are missing; under `CI=true` it fails the test instead of skipping it.

use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

use crate::admin::{self, Reply};
use crate::bins;
use crate::metrics::Metrics;
use crate::process::Process;
use crate::proxy::ServiceDef;

/// The UID weft-proxy runs as in a pod; `weft-proxy init` exempts its traffic.
pub const PROXY_UID: u32 = 7102;
pub const OUTBOUND_PORT: u16 = 7140;
pub const INBOUND_PORT: u16 = 7143;
pub const ADMIN_PORT: u16 = 7191;
/// weft-control's gRPC port, on the node's bridge address.
pub const CONTROL_PLANE_PORT: u16 = 7443;
/// The trust domain of the pods' identities (the proxies' default).
pub const TRUST_DOMAIN: &str = "cluster.local";

const PREFIX: &str = "weft-";
const BRIDGE: &str = "br0";

static NEXT_NODE: AtomicU32 = AtomicU32::new(0);
static CLEAN_STALE: Once = Once::new();

/// Whether the test bed can run here. When it cannot, prints why (loudly) and
/// returns false so the test can return early; with `CI=true` it panics instead,
/// because CI is set up to run these tests and must not pass by skipping them.
pub fn available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (network namespaces and iptables need it)".to_string());
    }
    for tool in ["ip", "iptables-save", "iptables-restore", "setpriv"] {
        if !on_path(tool) {
            missing.push(format!("`{tool}` (install iproute2, iptables, util-linux)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "\n!!!!! {test}: the netns test bed cannot run here; missing: {} !!!!!\n",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}(CI=true: failing instead of skipping)");
    }
    // Straight to stderr: libtest hides eprintln! output of tests that pass.
    let _ = writeln!(
        std::io::stderr(),
        "{msg}SKIPPED (set CI=true to make this a failure)"
    );
    false
}

/// Whether `tool` is on PATH (or in the sbin folders root's PATH has).
pub fn on_path(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| Path::new(dir).join(tool).is_file())
}

/// Runs a command to completion, failing with its output if it does not succeed.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs `ip` with `args` (see [`run`]).
pub(crate) fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

/// Once per test process: removes the namespaces that test processes now gone
/// left behind (also those of [`crate::node_agent`]'s pods).
pub fn remove_stale_namespaces() {
    CLEAN_STALE.call_once(clean_stale);
}

/// Removes namespaces (and their processes) left by test processes that are gone.
fn clean_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("netns test bed: removing {name}, left by test process {pid}");
        delete_netns(name);
    }
}

/// Kills whatever still runs in `name`, then deletes it.
fn delete_netns(name: &str) {
    if let Ok(out) = ip(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("netns test bed: cannot delete {name}: {e:#}");
    }
}

/// Runs `f` on a fresh thread inside network namespace `netns`. A fresh thread,
/// because a thread that entered a namespace stays there: a pooled one would run
/// later, unrelated work inside the pod.
async fn in_netns<T, F>(netns: &str, f: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> anyhow::Result<T> + Send + 'static,
{
    let path = format!("/run/netns/{netns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{netns}"))
        .spawn(move || {
            let result = File::open(&path)
                .with_context(|| format!("cannot open {path}"))
                .and_then(|ns| {
                    setns(&ns, CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("cannot enter {path}"))
                })
                .and_then(|()| f());
            let _ = tx.send(result);
        })
        .context("cannot start a thread")?;
    rx.await.context("the netns thread died")?
}

/// Connects to `addr` from inside `netns`, as an app there would.
pub async fn connect(netns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = in_netns(netns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, crate::STEP_DEADLINE)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await
    .map_err(|e| match e.downcast::<std::io::Error>() {
        Ok(io) => io,
        Err(other) => std::io::Error::other(format!("{other:#}")),
    })?;
    TcpStream::from_std(stream)
}

/// Binds a listener inside `netns`.
pub async fn listen(netns: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let l = in_netns(netns, move || {
        let l = std::net::TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    Ok(TcpListener::from_std(l)?)
}

/// The node: a namespace with a bridge that the pods' veth pairs plug into.
pub struct Node {
    pub netns: String,
    /// The third octet of this node's 10.250.x.0/24.
    subnet: u8,
    next_host: u8,
    /// The node-side veth of each pod, in the bridge.
    ports: Vec<String>,
    // Dropped last: logs of everything run on the bed.
    pub dir: TempDir,
}

impl Node {
    pub fn create() -> anyhow::Result<Node> {
        CLEAN_STALE.call_once(clean_stale);
        let n = NEXT_NODE.fetch_add(1, Ordering::SeqCst);
        let subnet = u8::try_from(n % 250).unwrap_or(0) + 1;
        let netns = format!("{PREFIX}{}-{n}-node", std::process::id());
        ip(&["netns", "add", &netns])?;
        let dir = tempfile::Builder::new()
            .prefix("weft-netns-")
            .tempdir()
            .context("cannot create a temp dir")?;
        // World-readable: the proxy runs as UID 7102 and reads its config here.
        set_mode(dir.path(), 0o755)?;
        let node = Node {
            netns,
            subnet,
            next_host: 2,
            ports: Vec::new(),
            dir,
        };
        let ns = node.netns.as_str();
        let gateway = format!("{}/24", node.gateway());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", ns, "addr", "add", &gateway, "dev", BRIDGE])?;
        // nodad: the address is usable at once instead of after duplicate detection.
        let gateway6 = format!("{}/64", node.ip6(1));
        ip(&[
            "-n", ns, "-6", "addr", "add", &gateway6, "dev", BRIDGE, "nodad",
        ])?;
        ip(&["-n", ns, "link", "set", BRIDGE, "up"])?;
        Ok(node)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.subnet, 1)
    }

    /// This node's IPv6 address for `host` (1 is the bridge).
    fn ip6(&self, host: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd77, 0, 0, self.subnet.into(), 0, 0, 0, host.into())
    }

    /// A new pod on this node with the next free address.
    pub fn pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        let host = self.next_host;
        self.next_host = self.next_host.checked_add(1).context("node is full")?;
        let ip4 = Ipv4Addr::new(10, 250, self.subnet, host);
        let netns = format!("{}-{name}", self.netns.trim_end_matches("-node"));
        ip(&["netns", "add", &netns])?;
        let pod = Pod {
            name: name.to_string(),
            netns,
            ip: ip4,
            ip6: self.ip6(host),
            log_dir: self.dir.path().to_path_buf(),
        };
        let peer = format!("v{host}");
        let ns = pod.netns.as_str();
        let node = self.netns.as_str();
        let cidr = format!("{ip4}/24");
        let gw = self.gateway().to_string();
        ip(&[
            "-n", node, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", node, "link", "set", &peer, "master", BRIDGE])?;
        ip(&["-n", node, "link", "set", &peer, "up"])?;
        self.ports.push(peer.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        // Service VIPs are not on any interface; a route must exist for the app's
        // connect() to reach the OUTPUT chain that redirects it.
        ip(&["-n", ns, "route", "add", "default", "via", &gw])?;
        let cidr6 = format!("{}/64", pod.ip6);
        let gw6 = self.ip6(1).to_string();
        ip(&[
            "-n", ns, "-6", "addr", "add", &cidr6, "dev", "eth0", "nodad",
        ])?;
        ip(&["-n", ns, "-6", "route", "add", "default", "via", &gw6])?;
        Ok(pod)
    }

    /// Starts `weft-control serve` in the node's namespace with `services` as the
    /// mesh; pods reach its gRPC API at [`ControlPlane::url`] (the bridge address).
    pub async fn start_control_plane(
        &self,
        services: &[ServiceDef],
    ) -> anyhow::Result<ControlPlane> {
        let mut yaml = String::from("services:\n");
        for s in services {
            yaml.push_str(&s.to_yaml());
        }
        let mesh = self.dir.path().join("mesh.yaml");
        std::fs::write(&mesh, yaml).with_context(|| format!("cannot write {}", mesh.display()))?;
        // The node's own CA and token secret, never the machine's default state dir.
        let state_dir = self.dir.path().join("control-state");
        let grpc = SocketAddr::from((self.gateway(), CONTROL_PLANE_PORT));
        let bin = bins::binary("weft-control")?;
        let mut cmd = self.exec("setpriv");
        cmd.args(["--pdeathsig", "KILL"])
            .arg(&bin)
            .arg("serve")
            .arg("--mesh")
            .arg(&mesh)
            .args(["--grpc", &grpc.to_string(), "--admin", "127.0.0.1:7990"])
            .arg("--state-dir")
            .arg(&state_dir)
            .env("NO_COLOR", "1")
            .env_remove("WEFT_CA_CERT")
            .env_remove("WEFT_CA_KEY")
            .env_remove("WEFT_CA_SECRET")
            .env_remove("WEFT_INJECTOR_SECRET")
            .env_remove("WEFT_STATE_DIR");
        let mut process = Process::spawn("weft-control", cmd, self.dir.path())?;
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, 7990));
        let deadline = tokio::time::Instant::now() + crate::proxy::READY_LIMIT;
        loop {
            if let Some(status) = process.try_exit()? {
                bail!("weft-control exited ({status}):\n{}", process.output());
            }
            if let Ok(stream) = connect(&self.netns, admin).await
                && let Ok(r) = admin::request_over(stream, "127.0.0.1", "GET", "/ready").await
                && r.status == 200
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("weft-control not ready:\n{}", process.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(ControlPlane {
            url: format!("http://{grpc}"),
            state_dir,
            process,
        })
    }

    /// A command run inside the node's namespace (e.g. tshark on the bridge).
    pub fn exec(&self, program: &str) -> Command {
        netns_command(&self.netns, program)
    }

    pub fn bridge(&self) -> &'static str {
        BRIDGE
    }

    /// The bridge's ports (one veth per pod). A capture on the bridge device itself
    /// misses unicast the bridge forwards port to port; capture on these instead.
    pub fn bridge_ports(&self) -> &[String] {
        &self.ports
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        delete_netns(&self.netns);
    }
}

/// weft-control serving discovery to the node's pods; stopped when dropped.
pub struct ControlPlane {
    /// What a proxy's `control_plane:` setting says.
    pub url: String,
    /// Its `--state-dir`: the development CA and the token secret.
    pub state_dir: std::path::PathBuf,
    pub process: Process,
}

impl ControlPlane {
    /// The local identity token of service account `sa` in namespace `default`
    /// (`weft-control token`).
    pub fn token(&self, sa: &str) -> anyhow::Result<String> {
        let bin = bins::binary("weft-control")?;
        let out = run(Command::new(bin)
            .args(["token", "--namespace", "default", "--service-account", sa])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .env_remove("WEFT_STATE_DIR"))?;
        Ok(String::from_utf8(out.stdout)
            .context("weft-control token printed non-UTF-8")?
            .trim()
            .to_string())
    }
}

/// How [`Node::mesh`] starts each pod's sidecar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sidecars {
    /// Plain sidecars fed by the control plane.
    Plain,
    /// Sidecars with their pod's identity: mTLS between them.
    WithIdentity,
}

impl Node {
    /// Starts the control plane with `services`, then captures each of `pods`'
    /// traffic and starts its sidecar: the control plane and the sidecars in
    /// `pods`' order, which serve while held.
    pub async fn mesh(
        &self,
        services: &[ServiceDef],
        pods: &[&Pod],
        sidecars: Sidecars,
    ) -> anyhow::Result<(ControlPlane, Vec<PodProxy>)> {
        let control = self.start_control_plane(services).await?;
        let mut proxies = Vec::with_capacity(pods.len());
        for pod in pods {
            pod.install_capture()
                .with_context(|| format!("init in pod {}", pod.name))?;
            let proxy = match sidecars {
                Sidecars::Plain => pod.start_proxy_with(&[], Some(&control)).await,
                Sidecars::WithIdentity => pod.start_proxy_with_identity(services, &control).await,
            };
            proxies.push(proxy.with_context(|| format!("the sidecar of pod {}", pod.name))?);
        }
        Ok((control, proxies))
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

fn netns_command(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

/// One pod: a network namespace with an address on the node's bridge.
pub struct Pod {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    log_dir: std::path::PathBuf,
}

impl Pod {
    /// This pod's IPv4 `ip:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// This pod's IPv6 `[ip]:port`.
    pub fn addr6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip6, port))
    }

    /// A command run inside the pod as root.
    pub fn exec(&self, program: &str) -> Command {
        netns_command(&self.netns, program)
    }

    /// A command run inside the pod as `uid` (group `uid`, no supplementary groups).
    /// It is killed if the test process dies without cleaning up (`--pdeathsig`).
    pub fn exec_as(&self, uid: u32, program: &str) -> Command {
        let id = uid.to_string();
        let mut cmd = self.exec("setpriv");
        cmd.args([
            "--pdeathsig",
            "KILL",
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
        ])
        .arg(program);
        cmd
    }

    /// A command run inside the pod as root, killed if the test process dies.
    fn exec_tied(&self, program: &str) -> Command {
        let mut cmd = self.exec("setpriv");
        cmd.args(["--pdeathsig", "KILL", program]);
        cmd
    }

    /// Runs `weft-proxy init <args>` in the pod (as root) and returns its output,
    /// whether it succeeded or not.
    pub fn init(&self, args: &[&str]) -> anyhow::Result<Output> {
        let bin = bins::binary("weft-proxy")?;
        let mut cmd = self.exec(&bin.to_string_lossy());
        cmd.arg("init").args(args);
        cmd.output().with_context(|| format!("cannot run {cmd:?}"))
    }

    /// Installs the capture rules, failing with init's output if it fails.
    pub fn install_capture(&self) -> anyhow::Result<()> {
        let out = self.init(&[])?;
        if !out.status.success() {
            bail!(
                "weft-proxy init failed in {}: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `<tool> -t nat` in the pod (e.g. `iptables-save`), with comment lines and
    /// packet counters removed so that two dumps compare equal when the rules do.
    pub fn nat_rules(&self, save_tool: &str) -> anyhow::Result<String> {
        let out = run(self.exec(save_tool).args(["-t", "nat"]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{} [0:0]", &l[..i]),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// Starts a process in the pod (as root unless `uid` is given); its output goes
    /// to the node's log folder and is printed if the test fails.
    pub fn spawn(
        &self,
        name: &str,
        uid: Option<u32>,
        program: &str,
        args: &[&str],
    ) -> anyhow::Result<Process> {
        let mut cmd = match uid {
            Some(uid) => self.exec_as(uid, program),
            None => self.exec_tied(program),
        };
        cmd.args(args).env("NO_COLOR", "1");
        Process::spawn(&format!("{}-{name}", self.name), cmd, &self.log_dir)
    }

    /// Connects from inside the pod, as its app would (as root: captured).
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        connect(&self.netns, addr).await
    }

    /// Binds a listener inside the pod (an app's) on `[::]:port`, which on Linux
    /// also accepts IPv4.
    pub async fn listen(&self, port: u16) -> anyhow::Result<TcpListener> {
        listen(&self.netns, SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))).await
    }

    /// One HTTP/1.1 `GET path` from inside the pod to `addr`, with `host` as Host.
    pub async fn http_get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
    ) -> anyhow::Result<Reply> {
        let stream = self
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr} from pod {}", self.name))?;
        admin::request_over(stream, host, "GET", path).await
    }

    /// Starts weft-proxy in the pod as [`PROXY_UID`], in transparent mode: outbound
    /// on 127.0.0.1:7140, inbound on 0.0.0.0:7143 delivering to the original port,
    /// admin on 127.0.0.1:7191, and `services` as its mesh (file mode).
    pub async fn start_proxy(&self, services: &[ServiceDef]) -> anyhow::Result<PodProxy> {
        self.start_proxy_with(services, None).await
    }

    /// Like [`Pod::start_proxy`], also asking `control_plane` (a URL) about
    /// destinations its own services do not name.
    pub async fn start_proxy_with(
        &self,
        services: &[ServiceDef],
        control_plane: Option<&ControlPlane>,
    ) -> anyhow::Result<PodProxy> {
        self.start_proxy_config(services, control_plane, "").await
    }

    /// This pod's SPIFFE ID: service account = the pod's name, namespace `default`.
    pub fn spiffe_id(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{}", self.name)
    }

    /// Like [`Pod::start_proxy`], with [`Pod::spiffe_id`] as its identity: a
    /// certificate from `ca`'s CA (over its plaintext gRPC channel, which only
    /// serves identity and inbound policy here: discovery stays `services`), mTLS
    /// to endpoints that name an identity, and strict (mTLS-only) inbound.
    pub async fn start_proxy_with_identity(
        &self,
        services: &[ServiceDef],
        ca: &ControlPlane,
    ) -> anyhow::Result<PodProxy> {
        let token = ca.token(&self.name)?;
        let identity = format!(
            "identity:\n  trust_domain: {TRUST_DOMAIN}\n  service_account: {sa}\n  \
             token: \"{token}\"\n  control_plane: \"{url}\"\n  inbound: {{mode: strict}}\n",
            sa = self.name,
            url = ca.url
        );
        self.start_proxy_config(services, None, &identity).await
    }

    /// Starts weft-proxy as an injected pod's sidecar: `weft-proxy run` without a
    /// config file, configured only by the injector's WEFT_* variables (identity:
    /// namespace `default`, service account = the pod's name, certified by `ca`,
    /// whose plaintext URL stands in for the in-cluster TLS address; the token in a
    /// file, as the projected token volume gives it), plus `extra` variables.
    pub async fn start_injected_proxy(
        &self,
        ca: &ControlPlane,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<PodProxy> {
        let token_file = self.log_dir.join(format!("{}-token", self.name));
        std::fs::write(&token_file, ca.token(&self.name)?)
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        set_mode(&token_file, 0o644)?;
        let bin = bins::binary("weft-proxy")?;
        let log = std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| "info,weft_proxy=debug".into());
        let mut cmd = self.exec_as(PROXY_UID, &bin.to_string_lossy());
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("WEFT_CONTROL_PLANE", &ca.url)
            .env("WEFT_TRUST_DOMAIN", TRUST_DOMAIN)
            .env("WEFT_IDENTITY_TOKEN_FILE", &token_file)
            .env("WEFT_NODE_ID", format!("{}-pod", self.name))
            .env("WEFT_NODE_NAMESPACE", "default")
            .env("WEFT_NODE_SERVICE_ACCOUNT", &self.name)
            .env("WEFT_NODE_IP", self.ip.to_string())
            .env("WEFT_OUTBOUND_PORT", OUTBOUND_PORT.to_string())
            .env("WEFT_INBOUND_PORT", INBOUND_PORT.to_string())
            .env("WEFT_ADMIN_PORT", ADMIN_PORT.to_string())
            .env("WEFT_OPAQUE_PORTS", "")
            .env("WEFT_PROBE_PORTS", "")
            .env("WEFT_LOG", log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let process = Process::spawn(&format!("{}-proxy", self.name), cmd, &self.log_dir)?;
        let mut proxy = PodProxy {
            netns: self.netns.clone(),
            process,
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    /// Starts weft-proxy with `extra` (top-level YAML) added to its config.
    async fn start_proxy_config(
        &self,
        services: &[ServiceDef],
        control_plane: Option<&ControlPlane>,
        extra: &str,
    ) -> anyhow::Result<PodProxy> {
        let mut yaml = format!(
            "workers: 1\n\
             node: {{workload: {name}}}\n\
             outbound: {{listen: \"127.0.0.1:{OUTBOUND_PORT}\", transparent: true}}\n\
             inbound: {{listen: \"0.0.0.0:{INBOUND_PORT}\"}}\n\
             admin: {{listen: \"127.0.0.1:{ADMIN_PORT}\"}}\n\
             limits: {{shutdown_grace: 1s}}\n",
            name = self.name
        );
        if let Some(cp) = control_plane {
            yaml.push_str(&format!("control_plane: \"{}\"\n", cp.url));
        }
        yaml.push_str(extra);
        if !services.is_empty() {
            yaml.push_str("services:\n");
            for s in services {
                yaml.push_str(&s.to_yaml());
            }
        }
        let config = self.log_dir.join(format!("{}-proxy.yaml", self.name));
        std::fs::write(&config, &yaml)
            .with_context(|| format!("cannot write {}", config.display()))?;
        set_mode(&config, 0o644)?;
        let bin = bins::binary("weft-proxy")?;
        let config_arg = config.to_string_lossy().into_owned();
        let log = std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| "info,weft_proxy=debug".into());
        let mut cmd = self.exec_as(PROXY_UID, &bin.to_string_lossy());
        cmd.args(["run", "--config", &config_arg])
            .env("RUST_LOG", log)
            .env("NO_COLOR", "1")
            .env_remove("WEFT_CONFIG");
        let process = Process::spawn(&format!("{}-proxy", self.name), cmd, &self.log_dir)?;
        let mut proxy = PodProxy {
            netns: self.netns.clone(),
            process,
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        delete_netns(&self.netns);
    }
}

/// weft-proxy running in a pod. Stopped when dropped (before its pod is deleted,
/// if declared after the pod).
pub struct PodProxy {
    netns: String,
    pub process: Process,
}

impl PodProxy {
    fn admin_addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, ADMIN_PORT))
    }

    async fn admin_get(&self, path: &str) -> anyhow::Result<Reply> {
        let stream = connect(&self.netns, Self::admin_addr()).await?;
        admin::request_over(stream, "127.0.0.1", "GET", path).await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + crate::proxy::READY_LIMIT;
        loop {
            if let Some(status) = self.process.try_exit()? {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.process.name(),
                    self.process.output()
                );
            }
            let last = match self.admin_get("/ready").await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("/ready answered {}", r.status),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready ({last}):\n{}",
                    self.process.name(),
                    self.process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let reply = self.admin_get("/metrics").await?;
        anyhow::ensure!(reply.status == 200, "/metrics answered {}", reply.status);
        Ok(Metrics::parse(&reply.body))
    }

    /// One metric's value over the series with these labels, summed over labels not
    /// named (e.g. `route`); 0 when no such series exists yet.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics()
            .await
            .expect("read the pod proxy's /metrics")
            .sum(name, labels)
    }

    /// Requests `direction` ("outbound", "inbound") for `service` answered 2xx.
    pub async fn requests_ok(&self, direction: &str, service: &str) -> f64 {
        let labels = [
            ("direction", direction),
            ("service", service),
            ("status_class", "2xx"),
        ];
        self.metric("weft_requests_total", &labels).await
    }

    /// SIGKILL: the proxy dies without draining, as in a crash.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.signal(nix::sys::signal::Signal::SIGKILL)?;
        self.process.wait_exit(crate::STEP_DEADLINE).await?;
        Ok(())
    }
}
