//! The nat-table rules of transparent capture, as `iptables-restore` input.
//!
//! Everything lives in two chains of Weft's own, so install and uninstall never
//! touch rules that other software put in the built-in chains; the built-in chains
//! only get one jump each:
//!
//! ```text
//! PREROUTING -p tcp -j WEFT_INBOUND     (connections arriving at the pod)
//!   WEFT_INBOUND: lo, admin and skip ports RETURN; else REDIRECT → inbound port
//! OUTPUT     -p tcp -j WEFT_OUTPUT      (connections the pod opens)
//!   WEFT_OUTPUT: proxy UID, loopback, skip ports and CIDRs RETURN;
//!                else REDIRECT → outbound port
//! ```
//!
//! The proxy's own UID is exempt so that its upstream connections leave the pod
//! instead of coming back to it. Loopback (`-o lo`, which also covers the pod
//! calling its own addresses) never leaves the pod, so there is nothing to secure.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use weft_api::ports::{PortList, PortRange};

pub(crate) const INBOUND_CHAIN: &str = "WEFT_INBOUND";
pub(crate) const OUTBOUND_CHAIN: &str = "WEFT_OUTPUT";

/// The chains this module owns, and the built-in chain that jumps to each.
pub(crate) const CHAINS: [(&str, &str); 2] =
    [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTBOUND_CHAIN)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// iptables' `--dport` syntax for a port or range: `80` or `8000:8099`.
fn dport(r: &PortRange) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}:{}", r.first, r.last)
    }
}

/// An address block such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Parses a comma-separated list of CIDR blocks (empty means none).
pub(crate) fn parse_cidrs(text: &str) -> Result<Vec<Cidr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// What to capture. Defaults match the injector's contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaptureConfig {
    /// Connections opened by this UID (the proxy's) are never redirected.
    pub(crate) proxy_uid: u32,
    pub(crate) outbound_port: u16,
    pub(crate) inbound_port: u16,
    /// Always exempt from inbound capture: the kubelet probes it, Prometheus scrapes it.
    pub(crate) admin_port: u16,
    pub(crate) skip_inbound_ports: PortList,
    pub(crate) skip_outbound_ports: PortList,
    pub(crate) skip_outbound_cidrs: Vec<Cidr>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            proxy_uid: 7102,
            outbound_port: 7140,
            inbound_port: 7143,
            admin_port: 7191,
            skip_inbound_ports: PortList::default(),
            skip_outbound_ports: PortList::default(),
            skip_outbound_cidrs: Vec::new(),
        }
    }
}

/// The rules of one address family: the contents of Weft's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ruleset {
    pub(crate) family: Family,
    /// (chain, rule specs without the `-A <chain>` prefix), in order.
    pub(crate) chains: Vec<(&'static str, Vec<String>)>,
}

/// The jump from a built-in chain into Weft's chain, as `iptables-save` prints it
/// (so an existing jump is recognised exactly).
pub(crate) fn jump_rule(builtin: &str, chain: &str) -> String {
    format!("-A {builtin} -p tcp -j {chain}")
}

impl CaptureConfig {
    pub(crate) fn ruleset(&self, family: Family) -> Ruleset {
        let mut inbound = vec!["-i lo -j RETURN".to_string()];
        let skip_in = self.skip_inbound_ports.clone().with(self.admin_port);
        for r in skip_in.ranges() {
            inbound.push(format!("-p tcp -m tcp --dport {} -j RETURN", dport(r)));
        }
        inbound.push(format!(
            "-p tcp -j REDIRECT --to-ports {}",
            self.inbound_port
        ));

        let mut outbound = vec![
            format!("-m owner --uid-owner {} -j RETURN", self.proxy_uid),
            "-o lo -j RETURN".to_string(),
        ];
        for r in self.skip_outbound_ports.ranges() {
            outbound.push(format!("-p tcp -m tcp --dport {} -j RETURN", dport(r)));
        }
        for c in self
            .skip_outbound_cidrs
            .iter()
            .filter(|c| c.family() == family)
        {
            outbound.push(format!("-d {c} -j RETURN"));
        }
        outbound.push(format!(
            "-p tcp -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        Ruleset {
            family,
            chains: vec![(INBOUND_CHAIN, inbound), (OUTBOUND_CHAIN, outbound)],
        }
    }
}

/// What Weft's rules look like in a nat table now, read from `iptables-save`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Installed {
    /// Weft chains that exist.
    pub(crate) chains: Vec<String>,
    /// Rules in built-in chains that jump to a Weft chain, as printed (`-A ...`).
    pub(crate) jumps: Vec<String>,
}

impl Installed {
    /// Parses `iptables-save -t nat` output.
    pub(crate) fn parse(save: &str) -> Installed {
        let ours = |name: &str| CHAINS.iter().any(|(_, c)| *c == name);
        let mut out = Installed::default();
        for line in save.lines().map(str::trim) {
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                if ours(name) {
                    out.chains.push(name.to_string());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = rule.split_whitespace();
                let chain = words.next().unwrap_or_default();
                let target = rule
                    .split_whitespace()
                    .skip_while(|w| *w != "-j")
                    .nth(1)
                    .unwrap_or_default();
                if !ours(chain) && ours(target) {
                    out.jumps.push(line.to_string());
                }
            }
        }
        out
    }
}

/// `iptables-restore --noflush` input that installs `rules`. Declaring a chain
/// flushes it, so re-running replaces Weft's rules whole; a jump is added only when
/// missing. The result is the same however many times it runs.
pub(crate) fn install_input(rules: &Ruleset, installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    for (chain, _) in &rules.chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for (chain, specs) in &rules.chains {
        for spec in specs {
            out.push_str(&format!("-A {chain} {spec}\n"));
        }
    }
    for (builtin, chain) in CHAINS {
        let jump = jump_rule(builtin, chain);
        if !installed.jumps.contains(&jump) {
            out.push_str(&jump);
            out.push('\n');
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// `iptables-restore --noflush` input that removes every trace of Weft's rules, or
/// None when there is nothing to remove.
pub(crate) fn uninstall_input(installed: &Installed) -> Option<String> {
    if installed.chains.is_empty() && installed.jumps.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for chain in &installed.chains {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for jump in &installed.jumps {
        if let Some(spec) = jump.strip_prefix("-A ") {
            out.push_str(&format!("-D {spec}\n"));
        }
    }
    for chain in &installed.chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CaptureConfig {
        CaptureConfig {
            skip_inbound_ports: PortList::parse("7191,9090").expect("ports"),
            skip_outbound_ports: PortList::parse("5432,8000-8099").expect("ports"),
            skip_outbound_cidrs: parse_cidrs("10.0.0.0/8, fd00::/8").expect("cidrs"),
            ..CaptureConfig::default()
        }
    }

    #[test]
    fn cidrs_parse_and_reject_bad_prefixes() {
        let c: Cidr = "10.1.0.0/16".parse().expect("valid");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert_eq!("::1".parse::<Cidr>().expect("bare").prefix, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn outbound_exempts_proxy_loopback_and_skips_before_redirecting() {
        let rules = config().ruleset(Family::V4);
        let (_, out) = &rules.chains[1];
        assert_eq!(
            out,
            &vec![
                "-m owner --uid-owner 7102 -j RETURN".to_string(),
                "-o lo -j RETURN".into(),
                "-p tcp -m tcp --dport 5432 -j RETURN".into(),
                "-p tcp -m tcp --dport 8000:8099 -j RETURN".into(),
                "-d 10.0.0.0/8 -j RETURN".into(),
                "-p tcp -j REDIRECT --to-ports 7140".into(),
            ]
        );
        let v6 = config().ruleset(Family::V6);
        assert!(
            v6.chains[1]
                .1
                .contains(&"-d fd00::/8 -j RETURN".to_string())
        );
        assert!(!v6.chains[1].1.iter().any(|r| r.contains("10.0.0.0")));
    }

    #[test]
    fn inbound_always_exempts_the_admin_port() {
        let mut c = config();
        c.skip_inbound_ports = PortList::default();
        let rules = c.ruleset(Family::V4);
        assert!(
            rules.chains[0]
                .1
                .contains(&"-p tcp -m tcp --dport 7191 -j RETURN".to_string())
        );
        assert_eq!(
            rules.chains[0].1.last().map(String::as_str),
            Some("-p tcp -j REDIRECT --to-ports 7143")
        );
    }

    #[test]
    fn second_install_adds_no_jumps_and_uninstall_removes_all() {
        let rules = config().ruleset(Family::V4);
        let fresh = install_input(&rules, &Installed::default());
        assert!(fresh.contains("-A PREROUTING -p tcp -j WEFT_INBOUND\n"));
        assert!(fresh.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT\n"));

        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\n\
                    :WEFT_INBOUND - [0:0]\n:WEFT_OUTPUT - [0:0]\n\
                    -A PREROUTING -p tcp -j WEFT_INBOUND\n-A OUTPUT -p tcp -j WEFT_OUTPUT\n\
                    -A OUTPUT -d 1.2.3.4/32 -j ACCEPT\n\
                    -A WEFT_OUTPUT -o lo -j RETURN\nCOMMIT\n";
        let installed = Installed::parse(save);
        assert_eq!(installed.chains, vec!["WEFT_INBOUND", "WEFT_OUTPUT"]);
        assert_eq!(installed.jumps.len(), 2);
        let again = install_input(&rules, &installed);
        assert!(!again.contains("-A PREROUTING"), "{again}");
        assert!(!again.contains("-A OUTPUT "), "{again}");

        let removal = uninstall_input(&installed).expect("something to remove");
        assert!(removal.contains("-D PREROUTING -p tcp -j WEFT_INBOUND\n"));
        assert!(removal.contains("-X WEFT_OUTPUT\n"));
        assert!(!removal.contains("1.2.3.4"));
        assert_eq!(uninstall_input(&Installed::default()), None);
    }
}
