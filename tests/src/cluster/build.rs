//! Finds the control-plane programs: runs tests/cluster/build.sh once per test
//! process, which builds them into its cache the first time and afterwards only
//! names the cache. Without Go the tests that need a cluster are skipped, loudly,
//! or fail under `CI=true`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::tools;

/// build.sh's exit code when Go is not installed.
const NO_GO: i32 = 3;

/// What build.sh reported: the bin directory, or why there is none.
enum Built {
    Bin(PathBuf),
    NoGo,
    Failed(String),
}

static BUILT: OnceLock<Built> = OnceLock::new();

pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh")
}

fn run_script() -> Built {
    let script = script();
    eprintln!(
        "cluster: {} (builds once, then only names its cache)",
        script.display()
    );
    // Progress goes straight to the terminal: a cold build takes many minutes.
    let out = match Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) => out,
        Err(e) => return Built::Failed(format!("cannot run {}: {e}", script.display())),
    };
    match out.status.code() {
        Some(0) => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if dir.is_empty() {
                Built::Failed(format!("{} named no bin directory", script.display()))
            } else {
                Built::Bin(PathBuf::from(dir))
            }
        }
        Some(NO_GO) => Built::NoGo,
        _ => Built::Failed(format!("{} failed ({})", script.display(), out.status)),
    }
}

/// The folder holding etcd, kube-apiserver, kube-controller-manager and
/// kube-scheduler, or `None` after printing why `test` is skipped (Go or kubectl
/// missing). Panics under `CI=true` instead of skipping, and whenever the build
/// itself fails.
pub fn bin_dir(test: &str) -> Option<PathBuf> {
    tools::require("kubectl", "kubectl", test)?;
    match BUILT.get_or_init(run_script) {
        Built::Bin(dir) => Some(dir.clone()),
        Built::Failed(why) => panic!("{test}: building the test cluster: {why}"),
        Built::NoGo => {
            let why = "Go is not installed, so the test cluster (etcd, kube-apiserver, \
                       kube-controller-manager, kube-scheduler) cannot be built \
                       (tests/cluster/build.sh)";
            if tools::in_ci() {
                panic!("{test}: {why}; CI=true, so this is a failure, not a skip");
            }
            eprintln!("\n******** SKIPPED {test}: {why} ********\n");
            None
        }
    }
}
