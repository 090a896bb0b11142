//! What crosses the wire between pods: tshark on the node's bridge ports, and the
//! capture read back with display filters.
//!
//! tshark prints "Capturing on" before packets are really seen, and packets it has
//! not read yet are lost when it stops. So pods knock on a closed port of the node
//! (each knock a packet on its bridge port) and [`WireCapture::mark`] waits for
//! knocks that tshark printed: called before the traffic, the capture is live on
//! every port; after it, everything before the knock (in order on that port) is in
//! the capture.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::netns::{Node, Pod};
use crate::process::Process;
use crate::{STEP_DEADLINE, eventually};

pub struct WireCapture {
    capture: Process,
    pcap: PathBuf,
    probe: SocketAddr,
    gateway: std::net::Ipv4Addr,
}

impl WireCapture {
    /// Starts tshark on every bridge port of `node`, writing TCP packets to a file.
    pub fn start(node: &Node) -> anyhow::Result<WireCapture> {
        let pcap = node.dir.path().join("bridge.pcapng");
        let pcap_arg = pcap.to_string_lossy().into_owned();
        let mut cmd = node.exec("tshark");
        for port in node.bridge_ports() {
            cmd.args(["-i", port]);
        }
        // -P -l: also print each packet as it is captured, which is how `mark`
        // knows the capture is live.
        cmd.args(["-f", "tcp", "-l", "-P", "-w", &pcap_arg]);
        let capture = Process::spawn("tshark", cmd, node.dir.path())?;
        let gateway = node.gateway();
        Ok(WireCapture {
            capture,
            pcap,
            probe: SocketAddr::from((gateway, 9)),
            gateway,
        })
    }

    fn knocks(&self, pod: &Pod) -> usize {
        self.capture
            .output()
            .matches(&format!("{} → {} ", pod.ip, self.gateway))
            .count()
    }

    /// Knocks from every pod until tshark has printed a new knock from each.
    pub async fn mark(&self, pods: &[&Pod]) {
        let before: Vec<usize> = pods.iter().map(|p| self.knocks(p)).collect();
        eventually(
            STEP_DEADLINE,
            "tshark prints a knock from every pod",
            || async {
                let mut all = true;
                for (pod, before) in pods.iter().zip(&before) {
                    let _ = pod.connect(self.probe).await;
                    all &= self.knocks(pod) > *before;
                }
                all.then_some(())
            },
        )
        .await;
    }

    /// Stops tshark; the capture file is complete once it has exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.capture.signal(nix::sys::signal::Signal::SIGINT)?;
        self.capture.wait_exit(STEP_DEADLINE).await?;
        Ok(())
    }

    /// `fields` of the packets matching display `filter`, one line per packet.
    pub fn read(&self, filter: &str, fields: &[&str]) -> String {
        let mut cmd = std::process::Command::new("tshark");
        // Heuristics first: by port alone tshark takes 8080 for HTTP and would
        // not look for TLS there (the heuristics still find plaintext HTTP).
        cmd.args(["-o", "tcp.try_heuristic_first:TRUE"]);
        cmd.arg("-r").arg(&self.pcap);
        cmd.args(["-Y", filter, "-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        match cmd.output() {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => panic!("cannot run tshark -r: {e}"),
        }
    }

    /// Every TCP payload byte captured, as lowercase hex.
    pub fn payload_hex(&self) -> String {
        self.read("tcp.len > 0", &["tcp.payload"])
            .replace([':', '\n'], "")
    }
}

/// `text` as lowercase hex, to look for in [`WireCapture::payload_hex`].
pub fn hex(text: &[u8]) -> String {
    text.iter().map(|b| format!("{b:02x}")).collect()
}
