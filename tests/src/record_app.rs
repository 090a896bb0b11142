//! An HTTP/1.1-only app: Python's `http.server` (tests/src/py/record_app.py), which
//! answers every request with what reached it, as JSON (request line, header fields
//! in order and case, body framing, body, trailers), with the reason phrase
//! "Recorded Fine". Another implementation than the proxy's own, so a test sees what
//! a real app would see; it speaks no HTTP/2 at all.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::ports::free_addr;
use crate::process::Process;
use crate::{STEP_DEADLINE, eventually};

const SCRIPT: &str = include_str!("py/record_app.py");

pub struct RecordApp {
    pub addr: SocketAddr,
    _process: Process,
    _dir: TempDir,
}

impl RecordApp {
    /// Starts the app on a free loopback port and waits until it accepts.
    pub async fn start() -> anyhow::Result<RecordApp> {
        let dir = tempfile::Builder::new()
            .prefix("weft-record-app-")
            .tempdir()
            .context("cannot create a temp dir")?;
        let script = dir.path().join("record_app.py");
        std::fs::write(&script, SCRIPT).context("cannot write the app's script")?;
        let addr = free_addr();
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(addr.port().to_string());
        let process = Process::spawn("record-app", cmd, dir.path())?;
        eventually(STEP_DEADLINE, "the record app accepts", || async move {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        Ok(RecordApp {
            addr,
            _process: process,
            _dir: dir,
        })
    }

    /// The request lines of every request the app has read so far, in order.
    pub async fn seen(&self) -> anyhow::Result<Vec<String>> {
        let url = format!("http://{}/__seen", self.addr);
        let out = curl(&["--http1.1", &url]).await?;
        serde_json::from_slice(&out).context("the app's /__seen is not a list of lines")
    }
}

/// What the app answered for one request: the JSON record, parsed.
pub fn parse_record(body: &[u8]) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(body).with_context(|| {
        format!(
            "not a record from the app: {:?}",
            String::from_utf8_lossy(body)
        )
    })
}

/// Runs `curl` with `args` (bounded by `--max-time`) and returns its stdout, failing
/// on a non-zero exit.
pub async fn curl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = tokio::time::timeout(
        STEP_DEADLINE + Duration::from_secs(5),
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20"])
            .args(args)
            .output(),
    )
    .await
    .context("curl did not finish")?
    .context("cannot run curl")?;
    anyhow::ensure!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}
