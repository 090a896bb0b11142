//! Runs iptables: picks the flavour the node uses and applies rulesets with
//! `iptables-restore` (atomic per table: a bad ruleset changes nothing).
//!
//! Rules in the other flavour's tables would be invisible to the node's tools and
//! evaluated in an order nobody intends, so `auto` uses the flavour that already
//! holds rules (the kubelet and CNI plugins leave some in every pod's network
//! namespace), and otherwise the one `iptables` itself reports.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::rules::Family;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Detect the flavour in use.
    Auto,
    /// iptables-nft (the nf_tables kernel API).
    Nft,
    /// iptables-legacy (the x_tables kernel API).
    Legacy,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum IptablesError {
    #[error("{0} not found: install iptables (the weft init image ships it)")]
    Missing(String),
    #[error(
        "{command} was denied ({detail}): weft-proxy init needs the NET_ADMIN capability \
         (run it as root, or add NET_ADMIN and NET_RAW to the init container)"
    )]
    NoPermission { command: String, detail: String },
    #[error("{command} failed: {detail}")]
    Failed { command: String, detail: String },
}

/// The save/restore commands of one flavour and family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tools {
    pub(crate) save: String,
    pub(crate) restore: String,
}

impl Tools {
    pub(crate) fn new(mode: Mode, family: Family) -> Tools {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let flavour = match mode {
            Mode::Auto => "",
            Mode::Nft => "-nft",
            Mode::Legacy => "-legacy",
        };
        Tools {
            save: format!("{base}{flavour}-save"),
            restore: format!("{base}{flavour}-restore"),
        }
    }

    /// The current nat table, as `iptables-save` prints it.
    pub(crate) fn save_nat(&self) -> Result<String, IptablesError> {
        run(&self.save, &["-t", "nat"], None)
    }

    /// Applies `input` without flushing what is not named in it.
    pub(crate) fn restore(&self, input: &str) -> Result<(), IptablesError> {
        run(&self.restore, &["--noflush", "--wait"], Some(input)).map(|_| ())
    }
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, IptablesError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IptablesError::Missing(program.to_string()),
            _ => IptablesError::Failed {
                command: command.clone(),
                detail: e.to_string(),
            },
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's failure below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| IptablesError::Failed {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let detail = if detail.is_empty() {
        output.status.to_string()
    } else {
        detail
    };
    if detail.contains("Permission denied") || detail.contains("Operation not permitted") {
        Err(IptablesError::NoPermission { command, detail })
    } else {
        Err(IptablesError::Failed { command, detail })
    }
}

/// Counts rules in an `iptables-save` dump.
fn rule_count(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Resolves `Auto` to the flavour in use; `Nft` and `Legacy` stay as given.
pub(crate) fn detect(mode: Mode) -> Mode {
    if mode != Mode::Auto {
        return mode;
    }
    let count = |m: Mode| {
        let tools = Tools::new(m, Family::V4);
        run(&tools.save, &[], None).ok().map(|s| rule_count(&s))
    };
    match (count(Mode::Legacy), count(Mode::Nft)) {
        (Some(legacy), Some(nft)) if legacy > nft => Mode::Legacy,
        (Some(_), Some(nft)) if nft > 0 => Mode::Nft,
        (Some(_), None) => Mode::Legacy,
        (None, Some(_)) => Mode::Nft,
        // No rules anywhere: follow what the node's `iptables` is.
        _ => match run("iptables", &["--version"], None) {
            Ok(v) if v.contains("legacy") => Mode::Legacy,
            Ok(v) if v.contains("nf_tables") => Mode::Nft,
            _ => Mode::Auto,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_named_per_flavour_and_family() {
        assert_eq!(
            Tools::new(Mode::Nft, Family::V6).restore,
            "ip6tables-nft-restore"
        );
        assert_eq!(
            Tools::new(Mode::Legacy, Family::V4).save,
            "iptables-legacy-save"
        );
        assert_eq!(Tools::new(Mode::Auto, Family::V4).save, "iptables-save");
    }

    #[test]
    fn a_missing_tool_says_what_to_install() {
        let err = run("weft-no-such-iptables", &[], None).expect_err("missing");
        assert!(err.to_string().contains("install iptables"), "{err}");
    }
}
