//! The node's pod network: a bridge in the test process's own namespace holding
//! `10.251.<n>.1/24`, and one network namespace per pod with a veth pair onto it.
//!
//! The bridge lives in the root namespace (unlike [`crate::netns`]'s node) so that
//! processes there, the API server calling a webhook pod and the agent's probes,
//! reach pod IPs directly. Pods get routes to the pod subnet and to the Service
//! range only, and the bridge does not forward, so nothing a pod sends can leave
//! the bridge: a Service's ClusterIP works only through the sidecar's capture.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;

use crate::netns::ip;

/// Pod subnets are 10.251.<n>.0/24, away from [`crate::netns`]'s 10.250.x.0/24.
const SECOND_OCTET: u8 = 251;
/// Bridges are named `wfb<pid>-<n>`: a later test run removes those of dead runs.
const BRIDGE_PREFIX: &str = "wfb";
/// Pod veths (host side) are `wv<pid>.<n>`.
const VETH_PREFIX: &str = "wv";

static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);
static NEXT_POD: AtomicU32 = AtomicU32::new(0);

fn write_sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("cannot write {path}"))
}

/// Deletes bridges and pod veths left by test processes that are gone (killed
/// before drop, or a veth whose namespace outlived its deletion).
fn remove_stale_links() {
    let Ok(out) = ip(&["-o", "link", "show"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(BRIDGE_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .or_else(|| {
                name.strip_prefix(VETH_PREFIX)
                    .and_then(|rest| rest.split('.').next())
            })
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["link", "del", name]);
        }
    }
}

/// The interfaces enslaved to bridge `name`.
pub fn ports(name: &str) -> Vec<String> {
    let Ok(out) = ip(&["-o", "link", "show", "master", name]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// The pod subnet of one node; removed on drop.
pub struct Bridge {
    pub name: String,
    subnet: u8,
    free: Mutex<Vec<u8>>,
    /// Routed into every pod so that connect() to a ClusterIP reaches the OUTPUT
    /// chain that redirects it.
    service_cidr: String,
}

impl Bridge {
    /// A new bridge; `service_cidr` (the Service range) is routed into its pods.
    pub fn create(service_cidr: &str) -> anyhow::Result<Arc<Bridge>> {
        remove_stale_links();
        crate::netns::remove_stale_namespaces();
        let n = NEXT_SUBNET.fetch_add(1, Ordering::SeqCst);
        let subnet = u8::try_from(n % 250).unwrap_or(0) + 1;
        let name = format!("{BRIDGE_PREFIX}{}-{n}", std::process::id());
        ip(&["link", "add", &name, "type", "bridge"])?;
        let bridge = Bridge {
            name,
            subnet,
            free: Mutex::new((2..=254).rev().collect()),
            service_cidr: service_cidr.to_string(),
        };
        let name = bridge.name.as_str();
        // Received on the bridge, addressed elsewhere: dropped, never routed out.
        write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "0")?;
        write_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1")?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", bridge.gateway()),
            "dev",
            name,
        ])?;
        ip(&["link", "set", name, "up"])?;
        Ok(Arc::new(bridge))
    }

    /// The host's address on the bridge (the node's InternalIP).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, SECOND_OCTET, self.subnet, 1)
    }

    pub fn cidr(&self) -> String {
        format!("10.{SECOND_OCTET}.{}.0/24", self.subnet)
    }

    /// A new pod network namespace with the next free address.
    pub fn sandbox(self: &Arc<Self>) -> anyhow::Result<Sandbox> {
        let host = self.free().pop().context("the pod subnet is full")?;
        let k = NEXT_POD.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let sandbox = Sandbox {
            // netns' stale-namespace cleanup recognises `weft-<pid>-…`.
            netns: format!("weft-{pid}-k{k}"),
            veth: format!("{VETH_PREFIX}{pid}.{k}"),
            ip: Ipv4Addr::new(10, SECOND_OCTET, self.subnet, host),
            host,
            bridge: self.clone(),
            created: false,
        };
        let mut sandbox = sandbox;
        ip(&["netns", "add", &sandbox.netns])?;
        sandbox.created = true;
        let ns = sandbox.netns.as_str();
        let veth = sandbox.veth.as_str();
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["link", "set", veth, "master", &self.name])?;
        ip(&["link", "set", veth, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", sandbox.ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            &self.service_cidr,
            "via",
            &self.gateway().to_string(),
        ])?;
        Ok(sandbox)
    }

    fn free(&self) -> MutexGuard<'_, Vec<u8>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Err(e) = ip(&["link", "del", &self.name]) {
            eprintln!("node agent: cannot delete bridge {}: {e:#}", self.name);
        }
    }
}

/// One pod's network namespace; deleted (with whatever still runs in it) on drop.
pub struct Sandbox {
    pub netns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
    host: u8,
    bridge: Arc<Bridge>,
    created: bool,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.created {
            self.delete();
        }
        self.bridge.free().push(self.host);
    }
}

impl Sandbox {
    fn delete(&self) {
        if let Ok(out) = ip(&["netns", "pids", &self.netns]) {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // Deleting the namespace takes its end of the veth pair, and so ours.
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("node agent: cannot delete {}: {e:#}", self.netns);
        }
    }
}
