//! Third-party programs some tests need (prometheus, promtool, nats-server), from
//! Debian packages. A test whose program is missing fails under `CI=true`, naming
//! the package to install, and is skipped with a loud message elsewhere (so a
//! developer without the package can still run the rest).

use std::path::{Path, PathBuf};

/// Folders searched after `$PATH`: Debian puts some servers in sbin, which is not
/// on an ordinary user's PATH.
const EXTRA_DIRS: [&str; 4] = ["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin"];

/// The path of the executable `name`, from `$PATH` or the usual system folders.
pub fn find(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the tests run in CI (`CI=true`), where a missing program is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The program `name` from the Debian package `package`, or `None` after printing
/// why `test` is skipped. Panics instead under `CI=true`.
pub fn require(name: &str, package: &str, test: &str) -> Option<PathBuf> {
    if let Some(path) = find(name) {
        return Some(path);
    }
    let why = format!(
        "{name} is not installed (Debian package `{package}`: apt-get install -y {package})"
    );
    if in_ci() {
        panic!("{test}: {why}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n******** SKIPPED {test}: {why} ********\n");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_installed_programs_only() {
        assert!(find("sh").is_some());
        assert_eq!(find("weft-no-such-program"), None);
    }
}
