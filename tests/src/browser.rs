//! A headless Chromium (Debian's `chromium`) driven over the DevTools protocol: load
//! a page, evaluate JavaScript in it, take screenshots. For tests of pages Weft
//! serves itself (the control plane's live view).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::process::Process;
use crate::{STEP_DEADLINE, tools};

/// A running headless Chromium with one page open. Stopped when dropped.
pub struct Browser {
    page: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _process: Process,
    _dir: TempDir,
}

impl Browser {
    /// Starts Chromium, or returns `None` after saying why `test` is skipped when
    /// it is not installed (a failure under `CI=true`).
    pub async fn start(test: &str) -> anyhow::Result<Option<Browser>> {
        let Some(chromium) = tools::require("chromium", "chromium", test) else {
            return Ok(None);
        };
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-chromium-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            // Root (the test machines) cannot use Chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1400,1100",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("about:blank");
        let process = Process::spawn("chromium", cmd, dir.path())?;
        // Chromium writes the port it picked here once DevTools listens.
        let port_file = dir.path().join("profile").join("DevToolsActivePort");
        let port: u16 = crate::within(STEP_DEADLINE, "chromium's DevTools port", async {
            loop {
                if let Some(port) = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                {
                    return port;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Keep-alive HTTP (DevTools does not close after answering).
        let mut http = crate::client::H1Client::connect(devtools).await?;
        let host = devtools.to_string();
        let list = http
            .send(crate::client::request(
                "GET",
                "/json/list",
                &[("host", host.as_str())],
                Vec::new(),
            ))
            .await?;
        let targets: Vec<Value> =
            serde_json::from_slice(&list.body).context("DevTools /json/list is JSON")?;
        let url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("no page target in DevTools")?
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .with_context(|| format!("cannot open {url}"))?;
        let mut browser = Browser {
            page,
            next_id: 0,
            _process: process,
            _dir: dir,
        };
        browser.call("Page.enable", json!({})).await?;
        Ok(Some(browser))
    }

    /// Sends one DevTools command and returns its result (events in between are
    /// skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.page.send(Message::text(msg)).await?;
        let what = format!("DevTools {method}");
        crate::within(STEP_DEADLINE, &what, async {
            while let Some(msg) = self.page.next().await {
                let Message::Text(text) = msg? else { continue };
                let v: Value = serde_json::from_str(text.as_str())?;
                if v["id"] == id {
                    if let Some(e) = v.get("error") {
                        anyhow::bail!("{method}: {e}");
                    }
                    return Ok(v["result"].clone());
                }
            }
            anyhow::bail!("DevTools closed the connection during {method}")
        })
        .await
    }

    pub async fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(e) = r.get("errorText") {
            anyhow::bail!("navigating to {url}: {e}");
        }
        Ok(())
    }

    /// The value of a JavaScript expression in the page (JSON-serialisable).
    pub async fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            anyhow::bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Saves a PNG of the page to `path`.
    pub async fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// A folder for a test's artefacts (screenshots) under the target directory, kept
/// after the test; its path is printed.
pub fn artefact_dir(test: &str) -> anyhow::Result<PathBuf> {
    // The test binary is target/<profile>/deps/<name>.
    let exe = std::env::current_exe().context("the test binary's path")?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not under a target directory")?;
    let dir = target.join("test-artefacts").join(test);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("{test}: artefacts in {}", dir.display());
    Ok(dir)
}
