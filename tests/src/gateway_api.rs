//! The Gateway API CRDs on a test cluster, from the Go module
//! `sigs.k8s.io/gateway-api` at the version tests/cluster/gateway-api.sh pins.

use std::path::Path;
use std::sync::OnceLock;

use crate::cluster::Cluster;

/// The Gateway API CRDs (standard channel) from the pinned Go module, applied once
/// per cluster and Established; `None` (after a message) when Go is missing, as
/// for the cluster itself.
pub fn installed(cluster: &Cluster) -> Option<()> {
    static APPLIED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = APPLIED.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/gateway-api.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .env(
                "PATH",
                format!(
                    "/usr/local/go/bin:{}",
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.code() == Some(3) && !crate::tools::in_ci() {
            return Err("skip".into());
        }
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        cluster
            .kubectl(&["apply", "--server-side", "-f", &dir])
            .map_err(|e| format!("{e:#}"))?;
        cluster
            .kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/httproutes.gateway.networking.k8s.io",
                "crd/grpcroutes.gateway.networking.k8s.io",
                "crd/gateways.gateway.networking.k8s.io",
                "crd/gatewayclasses.gateway.networking.k8s.io",
            ])
            .map_err(|e| format!("{e:#}"))?;
        Ok(())
    });
    match result {
        Ok(()) => Some(()),
        Err(e) if e == "skip" => {
            eprintln!("SKIPPED: Go is needed to fetch the Gateway API CRDs");
            None
        }
        Err(e) => panic!("Gateway API CRDs: {e}"),
    }
}
