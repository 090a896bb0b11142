//! Workload identity: the CA ([`ca`]), proofs of who a proxy is ([`proof`]), and the
//! `Identity.Certify` API that joins them ([`service`]).

pub mod ca;
pub mod proof;
pub mod service;

use std::path::Path;

use anyhow::Context as _;

/// Writes a secret readable by the owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
