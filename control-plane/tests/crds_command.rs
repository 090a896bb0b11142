//! `weft-control crds` as a real process: what an operator pipes into kubectl.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_weft-control");

#[test]
fn crds_prints_both_definitions_as_yaml_documents() {
    let out = Command::new(BIN)
        .arg("crds")
        .output()
        .expect("run weft-control crds");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let names: Vec<String> = text
        .split("\n---\n")
        .map(|doc| {
            let value: serde_json::Value = yaml_serde::from_str(doc).expect("a YAML document");
            assert_eq!(value["kind"], "CustomResourceDefinition");
            value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["trafficpolicies.weft.io", "inboundauthorizations.weft.io"]
    );
}
