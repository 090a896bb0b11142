//! A terminal program driven as a person would: run in a detached tmux session,
//! keys typed with send-keys, the screen read with capture-pane.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A tmux session running one command, killed when dropped.
pub struct Tmux {
    tmux: PathBuf,
    name: String,
}

impl Tmux {
    /// Runs `command` in a 150x45 session; `label` tells this test's session from
    /// the others running at once.
    pub fn start(tmux: PathBuf, label: &str, command: &str) -> anyhow::Result<Tmux> {
        let name = format!("weft-{label}-{}", std::process::id());
        let status = Command::new(&tmux)
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "150",
                "-y",
                "45",
                command,
            ])
            .status()?;
        anyhow::ensure!(status.success(), "tmux new-session failed: {status}");
        Ok(Tmux { tmux, name })
    }

    /// Types `keys` (tmux key names: "Down", "Enter", "q").
    pub fn keys(&self, keys: &[&str]) {
        let status = Command::new(&self.tmux)
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success(), "tmux send-keys {keys:?}: {status}");
    }

    /// The screen as text.
    pub fn screen(&self) -> String {
        let out = Command::new(&self.tmux)
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether the command still runs (the session ends with it).
    pub fn alive(&self) -> bool {
        Command::new(&self.tmux)
            .args(["has-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Polls the screen until `ok` holds; fails after `limit` showing the last
    /// screen.
    pub async fn wait_screen(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not on screen within {limit:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the command has ended; fails after `limit` showing the screen.
    pub async fn wait_gone(&self, what: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.alive() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {limit:?}:\n{}",
                self.screen()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux)
            .args(["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
