//! `weftctl inject` against golden files: every `tests/golden/NAME.in.yaml` is
//! injected by the real binary and compared with `NAME.out.yaml` (stdout) and
//! `NAME.err.txt` (the per-workload notes on stderr). Regenerate after an intended
//! change with `WEFT_BLESS=1 cargo test -p weft-inject --test golden` and review
//! the diff.

mod common;

use std::fs;
use std::path::Path;

use common::{golden_dir, text, weftctl_inject};

fn bless() -> bool {
    std::env::var_os("WEFT_BLESS").is_some_and(|v| v == "1")
}

fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(path, actual).expect("write golden file");
        return;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs (WEFT_BLESS=1 regenerates it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(e) => failures.push(format!(
            "{}: {e} (WEFT_BLESS=1 creates it)",
            path.display()
        )),
    }
}

fn inputs() -> Vec<(String, String)> {
    let mut inputs: Vec<(String, String)> = fs::read_dir(golden_dir())
        .expect("golden dir")
        .map(|e| e.expect("dir entry").path())
        .filter_map(|p| {
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".in.yaml")?
                .to_string();
            Some((name, fs::read_to_string(&p).expect("read input")))
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_kind_matches_its_golden_file() {
    let inputs = inputs();
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [
        "pod",
        "deployment",
        "statefulset",
        "daemonset",
        "replicaset",
        "job",
        "cronjob",
        "list",
        "multi-document",
    ] {
        assert!(names.contains(&kind), "no golden input {kind}.in.yaml");
    }
    let mut failures = Vec::new();
    for (name, input) in &inputs {
        let out = weftctl_inject(&[], input);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let dir = golden_dir();
        check(
            &dir.join(format!("{name}.out.yaml")),
            &text(&out.stdout),
            &mut failures,
        );
        check(
            &dir.join(format!("{name}.err.txt")),
            &text(&out.stderr),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn injecting_twice_changes_nothing_and_says_so() {
    for (name, input) in inputs() {
        let first = weftctl_inject(&[], &input);
        assert!(first.status.success(), "{name}: {}", text(&first.stderr));
        let second = weftctl_inject(&[], &text(&first.stdout));
        assert!(second.status.success(), "{name}: {}", text(&second.stderr));
        assert_eq!(text(&first.stdout), text(&second.stdout), "{name}");
        for line in text(&second.stderr).lines() {
            assert!(
                !line.ends_with(": injected"),
                "{name}: second run injected again: {line}"
            );
        }
        let first_injected = text(&first.stderr)
            .lines()
            .filter(|l| l.ends_with(": injected"))
            .count();
        let second_already = text(&second.stderr)
            .lines()
            .filter(|l| l.contains("skipped: already injected"))
            .count();
        assert_eq!(first_injected, second_already, "{name}");
    }
}

#[test]
fn files_and_stdin_give_the_same_output() {
    let path = golden_dir().join("deployment.in.yaml");
    let input = fs::read_to_string(&path).expect("read input");
    let from_file = weftctl_inject(&[path.to_str().expect("utf-8 path")], "");
    let from_stdin = weftctl_inject(&["-"], &input);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert_eq!(text(&from_file.stdout), text(&from_stdin.stdout));
    assert!(text(&from_file.stderr).starts_with("deployment/web: injected"));
}

#[test]
fn skip_reasons_are_reported_on_stderr() {
    let out = weftctl_inject(
        &[golden_dir()
            .join("multi-document.in.yaml")
            .to_str()
            .expect("utf-8 path")],
        "",
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("deployment/legacy: skipped: weft.io/inject: disabled"),
        "{err}"
    );
    assert!(
        err.contains("pod/sneaky: skipped: container app runs as the proxy's UID 7102"),
        "{err}"
    );
    let list = weftctl_inject(
        &[],
        &fs::read_to_string(golden_dir().join("list.in.yaml")).expect("read"),
    );
    let err = text(&list.stderr);
    assert!(err.contains("skipped: hostNetwork pod"), "{err}");
}

#[test]
fn a_bad_annotation_fails_the_command_and_writes_nothing() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    weft.io/opaque-ports: \"3306,http\"\nspec:\n  containers: [{name: a, image: x}]\n";
    let out = weftctl_inject(&[], input);
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "partial output: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert!(err.contains("pod/p"), "{err}");
    assert!(err.contains("weft.io/opaque-ports"), "{err}");
    let bad_choice = input.replace(
        "weft.io/opaque-ports: \"3306,http\"",
        "weft.io/inject: \"true\"",
    );
    let out = weftctl_inject(&[], &bad_choice);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("enabled, disabled"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn broken_yaml_names_the_document() {
    let out = weftctl_inject(
        &[],
        "apiVersion: v1\nkind: ConfigMap\n---\nkind: [unclosed\n",
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("<stdin>: document 1"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Runs `weftctl inject` with only `args` (no golden trust anchors).
fn weftctl_inject_bare(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .arg("inject")
        .args(args)
        .env_remove("WEFT_TRUST_ANCHORS_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weftctl starts");
    // weftctl may refuse its arguments before it reads stdin.
    let _ = child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("weftctl finishes")
}

#[test]
fn trust_anchors_are_checked_and_their_absence_is_warned_about() {
    let pod = fs::read_to_string(golden_dir().join("pod.in.yaml")).expect("read");
    let out = weftctl_inject_bare(&[], &pod);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("warning: no --trust-anchors"), "{err}");
    assert!(!text(&out.stdout).contains("WEFT_TRUST_ANCHORS"));

    let dir = tempfile_dir();
    let bad = dir.join("not-pem.txt");
    fs::write(&bad, "hello\n").expect("write");
    let out = weftctl_inject_bare(&["--trust-anchors", bad.to_str().expect("utf-8")], &pod);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("--trust-anchors") && err.contains("no PEM certificate"),
        "{err}"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A fresh directory under the target dir (the crate has no tempfile dependency).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("weftctl-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
