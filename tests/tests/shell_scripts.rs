//! Every shell script in the repository (by `.sh` name or a `#!` line naming bash or
//! sh, `.ci/run` included) must be shellcheck-clean. Without shellcheck this skips
//! with a message, except under CI=true, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Folders that hold no scripts of ours: build output and version control.
const SKIP: [&str; 3] = ["target", ".git", "node_modules"];

fn is_script(path: &Path) -> bool {
    if path.extension().is_some_and(|x| x == "sh") {
        return true;
    }
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    first.starts_with(b"#!")
        && (first.ends_with(b"bash") || first.ends_with(b"/sh") || first.ends_with(b" sh"))
}

fn scripts_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if SKIP.iter().any(|s| name == *s) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => scripts_under(&path, out),
            Ok(t) if t.is_file() && is_script(&path) => out.push(path),
            _ => {}
        }
    }
}

#[test]
fn every_shell_script_is_shellcheck_clean() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut scripts = Vec::new();
    scripts_under(&root, &mut scripts);
    scripts.sort();
    // The walk must find the scripts it is meant to check, wherever they live.
    for known in [
        ".ci/run",
        "proxy/pgo.sh",
        "tests/bench/proxy.sh",
        "tests/kind/run.sh",
        "tests/cluster/build.sh",
        "deploy/k8s/validate.sh",
    ] {
        assert!(
            scripts.iter().any(|p| p.ends_with(known)),
            "{known} not found among {scripts:?}"
        );
    }
    let out = match Command::new("shellcheck").args(&scripts).output() {
        Ok(out) => out,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and shellcheck cannot run ({e}); CI must install it")
        }
        Err(e) => {
            eprintln!("SKIPPED every_shell_script_is_shellcheck_clean: shellcheck: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
