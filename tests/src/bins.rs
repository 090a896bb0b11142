//! Finds the workspace's binaries. Cargo only builds binaries of the package under
//! test for its integration tests (`CARGO_BIN_EXE_*`), so the tests look for the
//! other packages' binaries where cargo puts them: next to the test executable's
//! `deps/` folder, i.e. `target/<profile>/`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Overrides where binaries are looked up (a folder), e.g. for an installed build.
pub const BIN_DIR_ENV: &str = "WEFT_BIN_DIR";

/// The command that builds every binary the tests run.
pub const BUILD_COMMAND: &str = "cargo build --workspace --bins";

/// The folder the binaries are in: `$WEFT_BIN_DIR`, else `target/<profile>/`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    // target/<profile>/deps/<test>-<hash>, or target/<profile>/examples/<name>
    let deps = exe
        .parent()
        .context("test executable has no parent folder")?;
    let dir = if deps
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// The path of the workspace binary `name` (e.g. "weft-proxy"), or an error that
/// says how to build it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !is_file(&path) {
        bail!(
            "{name} not found at {}: build the workspace binaries first with `{BUILD_COMMAND}` \
             (same profile and target dir as the tests), or set {BIN_DIR_ENV}",
            path.display()
        );
    }
    Ok(path)
}

fn is_file(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file()).unwrap_or(false)
}
