//! The file source: a YAML file, or a directory of `*.yaml`/`*.yml` files merged into
//! one mesh, watched for changes.
//!
//! Every change re-reads and validates the whole description, so a state is either
//! valid as a whole or rejected as a whole; a rejected change leaves the last good
//! state serving.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use weft_api::mesh::{MeshError, MeshSpec};

use super::{Publisher, Source};

/// How long the files must be quiet before a burst of events is read as one change.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(5);
/// A stream of events that never goes quiet is still read this often.
const MAX_DEBOUNCE: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: no *.yaml or *.yml files in the directory")]
    Empty(String),
}

/// One read of the description: the merged mesh and the raw texts it came from (to
/// skip re-validating when an event did not change any content).
#[derive(Debug)]
pub struct Loaded {
    pub mesh: MeshSpec,
    pub texts: Texts,
}

pub struct FileSource {
    path: PathBuf,
    debounce: Duration,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            debounce: DEFAULT_DEBOUNCE,
        }
    }

    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file source {}", self.path.display())
    }

    async fn run(self, mut out: Publisher) -> anyhow::Result<()> {
        let first = load(&self.path)?;
        let (events_tx, mut events) = mpsc::channel(1);
        // Held for the life of the loop; dropping it stops the watch.
        let _watcher = watch(&self.path, events_tx)?;
        let mut current = first.texts;
        let mut rejected: Option<Texts> = None;
        // Shared with the index rather than cloned: a large mesh is megabytes.
        let mut current_mesh = Arc::new(first.mesh);
        let generation = out.publish(Arc::clone(&current_mesh));
        tracing::info!(path = %self.path.display(), generation, services = current_mesh.services.len(), "mesh loaded");
        loop {
            let settled = tokio::select! {
                _ = out.closed() => return Ok(()),
                ev = events.recv() => match ev {
                    Some(signal) => signal == Signal::Settled,
                    None => anyhow::bail!("the file watcher for {} stopped", self.path.display()),
                },
            };
            // Writing in place takes several steps; read once they are done. A rename
            // into place is already complete, so it is read at once (its stragglers
            // cause a re-read that finds the same content and stops there).
            if !settled {
                let burst_end = Instant::now() + MAX_DEBOUNCE;
                while Instant::now() < burst_end {
                    match tokio::time::timeout(self.debounce, events.recv()).await {
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            let path = self.path.clone();
            let started = std::time::Instant::now();
            let texts = tokio::task::spawn_blocking(move || read(&path))
                .await
                .context("mesh reader task failed")?;
            // Events often outnumber changes (a rename's stragglers, our own reads,
            // other files in the directory); unchanged bytes are not parsed again, and
            // a bad change is rejected (and counted) once.
            let parsed = match texts {
                Ok(texts) if texts == current || rejected.as_ref() == Some(&texts) => {
                    tracing::debug!(path = %self.path.display(), "file event without content change");
                    continue;
                }
                Ok(texts) => {
                    let (texts, mesh) = tokio::task::spawn_blocking(move || {
                        let mesh = parse(&texts);
                        (texts, mesh)
                    })
                    .await
                    .context("mesh parser task failed")?;
                    match mesh {
                        Ok(mesh) => Ok((texts, mesh)),
                        Err(error) => {
                            rejected = Some(texts);
                            Err(error)
                        }
                    }
                }
                Err(error) => {
                    rejected = None;
                    Err(error)
                }
            };
            let took = started.elapsed();
            out.observe_load(took);
            match parsed {
                Ok((texts, mesh)) => {
                    current = texts;
                    rejected = None;
                    if mesh == *current_mesh {
                        tracing::debug!(path = %self.path.display(), "content changed but the mesh is the same");
                        continue;
                    }
                    current_mesh = Arc::new(mesh);
                    let generation = out.publish(Arc::clone(&current_mesh));
                    tracing::info!(
                        path = %self.path.display(),
                        generation,
                        services = current_mesh.services.len(),
                        load_ms = took.as_secs_f64() * 1000.0,
                        "mesh change published"
                    );
                }
                Err(error) => {
                    out.reject();
                    tracing::warn!(
                        %error,
                        serving_generation = out.generation(),
                        "mesh change rejected; the last good state keeps serving"
                    );
                }
            }
        }
    }
}

/// What a file event means for when to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// A file was renamed into place (or a Kubernetes `..data` symlink swapped): its
    /// content is complete.
    Settled,
    /// Something changed and may still be changing.
    Changed,
}

/// Watches the parent of a file (editors save by writing a new file and renaming it
/// over the old one, which a watch on the file itself would lose) or the directory
/// itself.
fn watch(path: &Path, events: mpsc::Sender<Signal>) -> anyhow::Result<notify::RecommendedWatcher> {
    let is_dir = path.is_dir();
    let (watched, file_name) = if is_dir {
        (path.to_path_buf(), None)
    } else {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (parent, path.file_name().map(|n| n.to_os_string()))
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "file watch error");
                // Re-reading is harmless and recovers from a missed event.
                let _ = events.try_send(Signal::Changed);
                return;
            }
        };
        let relevant_kind = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            // Our own reads show up as access events.
            EventKind::Access(_) => false,
            _ => true,
        };
        let relevant_path = match &file_name {
            None => true,
            // `..data` and friends: Kubernetes swaps a mounted ConfigMap's content by
            // replacing a symlink next to the file rather than the file itself.
            Some(name) => event.paths.iter().any(|p| {
                p.file_name()
                    .is_some_and(|n| n == name.as_os_str() || n.to_string_lossy().starts_with(".."))
            }),
        };
        if relevant_kind && relevant_path {
            let signal = match event.kind {
                EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                    Signal::Settled
                }
                _ => Signal::Changed,
            };
            // A full channel already holds a pending signal, which is all we need.
            let _ = events.try_send(signal);
        }
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&watched, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", watched.display()))?;
    Ok(watcher)
}

/// The raw contents of the description's files, in merge order.
pub type Texts = Vec<(PathBuf, String)>;

/// Reads and validates the description at `path` as a whole.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let texts = read(path)?;
    let mesh = parse(&texts)?;
    Ok(Loaded { mesh, texts })
}

/// Reads the file, or the directory's `*.yaml`/`*.yml` files in name order.
pub fn read(path: &Path) -> Result<Texts, LoadError> {
    let io_err = |p: &Path, source| LoadError::Io {
        path: p.display().to_string(),
        source,
    };
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_err(path, e))? {
            let entry = entry.map_err(|e| io_err(path, e))?;
            let p = entry.path();
            let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if yaml && !hidden && p.is_file() {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(LoadError::Empty(path.display().to_string()));
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|e| io_err(&file, e))?;
            Ok((file, text))
        })
        .collect()
}

/// Parses each file, merges their services and validates the result as a whole.
pub fn parse(texts: &Texts) -> Result<MeshSpec, LoadError> {
    let mut mesh = MeshSpec::default();
    // For each merged service: which file it came from and its index there.
    let mut origins: Vec<(usize, usize)> = Vec::new();
    for (f, (file, text)) in texts.iter().enumerate() {
        let part = MeshSpec::from_yaml(text, &file.display().to_string())
            .map_err(|e| LoadError::Invalid(e.to_string()))?;
        origins.extend((0..part.services.len()).map(|i| (f, i)));
        mesh.services.extend(part.services);
        mesh.workloads.extend(part.workloads);
    }
    if texts.len() > 1 {
        let files: Vec<PathBuf> = texts.iter().map(|(p, _)| p.clone()).collect();
        mesh.validate().map_err(|e| match e {
            MeshError::Invalid { path, reason } => LoadError::Invalid(format!(
                "{}: {}",
                relocate(&path, &files, &origins),
                relocate(&reason, &files, &origins)
            )),
            other => LoadError::Invalid(other.to_string()),
        })?;
    }
    Ok(mesh)
}

/// Rewrites `services[N]` (an index into the merged list) as `file: services[n]`, so
/// an error across files names the file each service is written in.
fn relocate(text: &str, files: &[PathBuf], origins: &[(usize, usize)]) -> String {
    const MARK: &str = "services[";
    let mut out = String::with_capacity(text.len() + 32);
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let located = after[..digits]
            .parse::<usize>()
            .ok()
            .filter(|_| after[digits..].starts_with(']'))
            .and_then(|n| origins.get(n));
        match located {
            Some(&(f, i)) => {
                let file = files.get(f).map(|p| p.display().to_string());
                out.push_str(&format!("{}: services[{i}]", file.unwrap_or_default()));
                rest = &after[digits + 1..];
            }
            None => {
                out.push_str(MARK);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    #[test]
    fn directory_files_are_merged_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "b.yml", "services: [{name: b}]\n");
        write(dir.path(), "a.yaml", "services: [{name: a}]\n");
        write(dir.path(), "notes.txt", "not yaml");
        write(dir.path(), ".hidden.yaml", "garbage: [");
        let loaded = load(dir.path()).expect("valid directory");
        let names: Vec<_> = loaded
            .mesh
            .services
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn duplicate_across_files_names_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "a.yaml",
            "services: [{name: x}, {name: shared}]\n",
        );
        write(dir.path(), "b.yaml", "services: [{name: shared}]\n");
        let msg = load(dir.path()).expect_err("duplicate").to_string();
        assert!(msg.contains("b.yaml: services[0].name"), "{msg}");
        assert!(msg.contains("a.yaml: services[1]"), "{msg}");
    }

    #[test]
    fn parse_error_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = write(
            dir.path(),
            "mesh.yaml",
            "services:\n  - name: a\n    endpoints:\n      - address: nope\n",
        );
        let msg = load(&p).expect_err("bad address").to_string();
        assert!(msg.contains("mesh.yaml"), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(load(dir.path()), Err(LoadError::Empty(_))));
    }
}
