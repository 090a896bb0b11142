//! `weft-proxy init`: installs (or removes, or prints) the capture rules in the
//! current network namespace. The injector runs it as the pod's first init
//! container with the environment documented in weft-inject's `inject` module;
//! every variable has a flag of the same meaning for use by hand.

use std::path::Path;
use weft_api::ports::PortList;

use super::iptables::{self, Mode, Tools};
use super::rules::{self, CaptureConfig, Family, Installed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Ipv6 {
    /// IPv6 rules when the kernel has IPv6 (`/proc/net/if_inet6` exists).
    Auto,
    On,
    Off,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Connections opened by this UID (the proxy's) are never redirected.
    #[arg(long, env = "WEFT_PROXY_UID", default_value_t = 7102)]
    pub(crate) proxy_uid: u32,
    /// Where outbound TCP is redirected (the proxy's transparent outbound listener).
    #[arg(long, env = "WEFT_OUTBOUND_PORT", default_value_t = 7140)]
    pub(crate) outbound_port: u16,
    /// Where inbound TCP is redirected (the proxy's inbound listener).
    #[arg(long, env = "WEFT_INBOUND_PORT", default_value_t = 7143)]
    pub(crate) inbound_port: u16,
    /// The proxy's admin port: never redirected inbound.
    #[arg(long, env = "WEFT_ADMIN_PORT", default_value_t = 7191)]
    pub(crate) admin_port: u16,
    /// Inbound destination ports not redirected, e.g. `7191,8000-8099`.
    #[arg(long, env = "WEFT_SKIP_INBOUND_PORTS", default_value = "")]
    pub(crate) skip_inbound_ports: String,
    /// Outbound destination ports not redirected, e.g. `5432`.
    #[arg(long, env = "WEFT_SKIP_OUTBOUND_PORTS", default_value = "")]
    pub(crate) skip_outbound_ports: String,
    /// Outbound destination CIDR blocks not redirected, e.g. `169.254.0.0/16,fd00::/8`.
    #[arg(
        long,
        alias = "skip-cidrs",
        env = "WEFT_SKIP_OUTBOUND_CIDRS",
        default_value = ""
    )]
    pub(crate) skip_outbound_cidrs: String,
    /// Which iptables flavour to use.
    #[arg(long, value_enum, env = "WEFT_IPTABLES_MODE", default_value = "auto")]
    pub(crate) iptables: Mode,
    /// Whether to install IPv6 rules (with ip6tables) too.
    #[arg(long, value_enum, env = "WEFT_IPV6", default_value = "auto")]
    pub(crate) ipv6: Ipv6,
    /// Remove Weft's rules instead of installing them.
    #[arg(long)]
    pub(crate) uninstall: bool,
    /// Print the rules (iptables-restore input for a clean table) and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

impl InitArgs {
    pub(crate) fn capture_config(&self) -> Result<CaptureConfig, String> {
        fn field<T>(name: &str, r: Result<T, String>) -> Result<T, String> {
            r.map_err(|e| format!("{name}: {e}"))
        }
        Ok(CaptureConfig {
            proxy_uid: self.proxy_uid,
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            admin_port: self.admin_port,
            skip_inbound_ports: field(
                "skip inbound ports",
                PortList::parse(&self.skip_inbound_ports).map_err(|e| e.to_string()),
            )?,
            skip_outbound_ports: field(
                "skip outbound ports",
                PortList::parse(&self.skip_outbound_ports).map_err(|e| e.to_string()),
            )?,
            skip_outbound_cidrs: field(
                "skip outbound CIDRs",
                rules::parse_cidrs(&self.skip_outbound_cidrs),
            )?,
        })
    }

    fn families(&self) -> Vec<Family> {
        let v6 = match self.ipv6 {
            Ipv6::On => true,
            Ipv6::Off => false,
            Ipv6::Auto => Path::new("/proc/net/if_inet6").exists(),
        };
        if v6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }
}

/// Runs `weft-proxy init`; the error is the message to print.
pub fn run(args: &InitArgs) -> Result<(), String> {
    let config = args.capture_config()?;
    if args.dry_run {
        for family in args.families() {
            let tool = Tools::new(Mode::Auto, family).restore;
            println!("# {family} nat rules, as `{tool} --noflush` input");
            if args.uninstall {
                let all = Installed {
                    chains: rules::CHAINS.iter().map(|(_, c)| c.to_string()).collect(),
                    jumps: rules::CHAINS
                        .iter()
                        .map(|(b, c)| rules::jump_rule(b, c))
                        .collect(),
                };
                print!("{}", rules::uninstall_input(&all).unwrap_or_default());
            } else {
                print!(
                    "{}",
                    rules::install_input(&config.ruleset(family), &Installed::default())
                );
            }
        }
        return Ok(());
    }
    if !has_net_admin() {
        return Err(
            "weft-proxy init needs the NET_ADMIN capability to change iptables \
                    rules: run it as root, or add NET_ADMIN and NET_RAW to the init container"
                .to_string(),
        );
    }
    let mode = iptables::detect(args.iptables);
    for family in args.families() {
        let tools = Tools::new(mode, family);
        let installed = Installed::parse(&tools.save_nat().map_err(|e| e.to_string())?);
        if args.uninstall {
            match rules::uninstall_input(&installed) {
                Some(input) => {
                    tools.restore(&input).map_err(|e| e.to_string())?;
                    println!("{family}: removed Weft's nat rules ({})", tools.restore);
                }
                None => println!("{family}: no Weft nat rules to remove"),
            }
        } else {
            let input = rules::install_input(&config.ruleset(family), &installed);
            tools.restore(&input).map_err(|e| e.to_string())?;
            println!(
                "{family}: inbound TCP → :{}, outbound TCP → :{} except UID {} ({})",
                config.inbound_port, config.outbound_port, config.proxy_uid, tools.restore
            );
        }
    }
    Ok(())
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of the effective set). Checked
/// up front so the error names the capability instead of iptables' "Permission
/// denied (you must be root)".
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // Not Linux procfs: let iptables itself report.
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    #[test]
    fn flags_build_the_capture_config() {
        let cli = Cli::try_parse_from([
            "init",
            "--skip-inbound-ports",
            "9090",
            "--skip-cidrs",
            "10.0.0.0/8",
            "--proxy-uid",
            "1337",
        ])
        .expect("flags parse");
        let c = cli.init.capture_config().expect("valid");
        assert_eq!(c.proxy_uid, 1337);
        assert_eq!(c.skip_inbound_ports.ranges().len(), 1);
        assert_eq!(c.skip_outbound_cidrs.len(), 1);
        assert_eq!(c.admin_port, 7191);
    }

    #[test]
    fn a_bad_port_list_names_the_setting() {
        let cli = Cli::try_parse_from(["init", "--skip-outbound-ports", "80-70"]).expect("parse");
        let err = cli.init.capture_config().expect_err("backwards range");
        assert!(err.contains("skip outbound ports"), "{err}");
    }
}
