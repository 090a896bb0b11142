//! Workload identity: the CA ([`ca`]), proofs of who a proxy is ([`proof`], and
//! Kubernetes ServiceAccount tokens in [`token_review`]), and the `Identity.Certify`
//! API that joins them ([`service`]).

pub mod ca;
pub mod proof;
pub mod service;
pub mod token_review;

use std::path::Path;

use anyhow::Context as _;

/// Publishes `contents` at `path` whole (written to a temporary file, then linked
/// into place), readable by the owner only when `private`. Returns false when the
/// file already existed: another process sharing the state directory got there
/// first, and its file is the one to use.
pub(crate) fn publish(path: &Path, contents: &str, private: bool) -> anyhow::Result<bool> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!(
        "tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}
