//! The benchmark scripts under tests/bench, tests/cluster/build.sh (the Kubernetes tests'
//! control plane) and proxy/pgo.sh must be shellcheck-clean. Without
//! shellcheck this skips with a message, except under CI=true, where it fails.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_scripts_are_shellcheck_clean() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bench exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    // The PGO build the Dockerfile and the benchmarks run.
    scripts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy/pgo.sh"));
    scripts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cluster/build.sh"));
    assert!(!scripts.is_empty(), "no scripts in {}", dir.display());
    let out = match Command::new("shellcheck").args(&scripts).output() {
        Ok(out) => out,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and shellcheck cannot run ({e}); CI must install it")
        }
        Err(e) => {
            eprintln!("SKIPPED bench_scripts_are_shellcheck_clean: shellcheck: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
