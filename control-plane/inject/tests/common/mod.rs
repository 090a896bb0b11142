//! Shared by the injector's integration tests: the configuration the golden files
//! were made with, and a way to run the real `weftctl` binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use weft_inject::InjectConfig;

/// Pinned so golden files do not change with the crate's version.
pub const GOLDEN_IMAGE: &str = "weft/weft-proxy:0.0.0-golden";
pub const GOLDEN_INIT_IMAGE: &str = "weft/weft-proxy-init:0.0.0-golden";

pub fn golden_config() -> InjectConfig {
    InjectConfig {
        proxy_image: GOLDEN_IMAGE.into(),
        init_image: GOLDEN_INIT_IMAGE.into(),
        trust_anchors: Some(
            weft_inject::config::read_trust_anchors(&golden_trust_anchors())
                .expect("golden trust anchors"),
        ),
        ..InjectConfig::default()
    }
}

/// The mesh CA the golden pods trust (a fixed self-signed test certificate).
pub fn golden_trust_anchors() -> PathBuf {
    golden_dir().join("trust-anchors.pem")
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs `weftctl inject` with the golden images, `args` and `stdin`.
pub fn weftctl_inject(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .arg("inject")
        .args([
            "--proxy-image",
            GOLDEN_IMAGE,
            "--init-image",
            GOLDEN_INIT_IMAGE,
        ])
        .arg("--trust-anchors")
        .arg(golden_trust_anchors())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weftctl starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("weftctl finishes")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}
