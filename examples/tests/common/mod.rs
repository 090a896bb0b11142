//! Shared test harness: in-process services on 127.0.0.1:0, real example processes,
//! a recording fake HTTP server, and bounded polling.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStderr, Command};
use weft_examples::http_client::{HttpClient, Reply};
use weft_examples::http_proxy::ProxySettings;

/// Upper bound for anything a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A direct (never proxied) client for talking to services under test.
pub fn client() -> HttpClient {
    HttpClient::new(ProxySettings::direct(), Duration::from_secs(10))
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// An address where nothing listens (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let (listener, addr) = bind().await;
    drop(listener);
    addr
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&reply.body)
        )
    })
}

pub fn body(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// A fake HTTP/1.1 server that records each request's head and answers `200 {}`.
pub struct Recorder {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    pub async fn start() -> Self {
        let (listener, addr) = bind().await;
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve_recorded(stream, recorded).await;
                });
            }
        });
        Self { addr, heads }
    }

    /// The recorded request heads (request line and headers), oldest first.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("recorder lock").clone()
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.heads()
            .iter()
            .filter_map(|h| h.lines().next().map(str::to_owned))
            .collect()
    }
}

async fn serve_recorded(
    mut stream: tokio::net::TcpStream,
    recorded: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Read until one complete request head is buffered.
        let (head_len, content_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                let content_length = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                break (len, content_length);
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_len + content_length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        recorded.lock().expect("recorder lock").push(head);
        buf.drain(..head_len + content_length);
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await?;
    }
}

/// The example binary `name`, with no proxy variables inherited from the environment.
pub fn example(name: &str) -> Command {
    let path = match name {
        "payments" => env!("CARGO_BIN_EXE_payments"),
        "orders" => env!("CARGO_BIN_EXE_orders"),
        "notifications" => env!("CARGO_BIN_EXE_notifications"),
        "users" => env!("CARGO_BIN_EXE_users"),
        "web" => env!("CARGO_BIN_EXE_web"),
        "loadgen" => env!("CARGO_BIN_EXE_loadgen"),
        "nats-publish" => env!("CARGO_BIN_EXE_nats-publish"),
        "nats-consume" => env!("CARGO_BIN_EXE_nats-consume"),
        other => panic!("no example binary {other}"),
    };
    let mut cmd = Command::new(path);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "no_proxy",
        "NO_PROXY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    cmd
}

/// A running process whose stderr is being read.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Proc {
    /// Starts `cmd` with stderr piped; its lines are echoed to the test's stderr.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        cmd.stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr: ChildStderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let label = name.to_owned();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[{label}] {line}");
                let _ = tx.send(line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let name = self.name.clone();
        tokio::time::timeout(PATIENCE, async {
            loop {
                match self.lines.recv().await {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!("{name} exited before logging {needle:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name} did not log {needle:?} in time"))
    }

    /// Waits for the "listening addr=..." line and returns the address.
    pub async fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("listening").await;
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no addr= in {line:?}"))
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(self) -> ExitStatus {
        self.signal("TERM").await
    }

    /// Sends SIG`name` (e.g. "INT") and waits for the exit.
    pub async fn signal(mut self, name: &str) -> ExitStatus {
        let pid = self.child.id().expect("process is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} ignored SIG{name}", self.name))
            .expect("wait for the process")
    }
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
