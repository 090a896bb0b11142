//! A control plane on 127.0.0.1 with a mesh file in a temp dir, and gRPC watchers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use weft_api::v1::{self, discovery_client::DiscoveryClient, subscribe, watch_request};
use weft_control::server::{Server, ServerConfig};
use weft_control::source::file::FileSource;

/// Bounds every wait in the tests so a broken server fails a test instead of hanging
/// it; never used to judge speed.
pub const WAIT: Duration = Duration::from_secs(15);

pub struct ControlPlane {
    pub dir: tempfile::TempDir,
    pub mesh: PathBuf,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl ControlPlane {
    /// Starts a control plane serving `files` (name, YAML) from a temp dir; `watch`
    /// names what `--mesh` points at (a file name in the dir, or "" for the dir).
    pub async fn start_with(files: &[(&str, &str)], watch: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write mesh file");
        }
        let mesh = if watch.is_empty() {
            dir.path().to_path_buf()
        } else {
            dir.path().join(watch)
        };
        let config = ServerConfig {
            grpc: "127.0.0.1:0".parse().expect("addr"),
            admin: "127.0.0.1:0".parse().expect("addr"),
        };
        let server = Server::bind(&config).await.expect("bind");
        let grpc = server.grpc_addr().expect("grpc addr");
        let admin = server.admin_addr().expect("admin addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(FileSource::new(mesh.clone()), async move {
            let _ = stopped.await;
        }));
        let cp = ControlPlane {
            dir,
            mesh,
            grpc,
            admin,
            stop: Some(stop),
            task: Some(task),
        };
        cp.wait_ready().await;
        cp
    }

    pub async fn start(mesh: &str) -> Self {
        Self::start_with(&[("mesh.yaml", mesh)], "mesh.yaml").await
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = http_get(self.admin, "/ready").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "control plane not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces a mesh file the way editors do: write a new file, rename it over.
    pub fn write(&self, name: &str, text: &str) {
        write_atomically(&self.dir.path().join(name), text);
    }

    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.admin, name).await
    }

    /// Polls `/metrics` until `name` has `value`.
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.metric(name).await;
            if now == value {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed at {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ends cleanly");
        }
    }
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over mesh file");
}

pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A sample's value from `/metrics` (0 when absent).
pub async fn metric(admin: SocketAddr, name: &str) -> f64 {
    let (status, body) = http_get(admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A proxy's Watch stream for one destination, on its own connection.
pub struct Watcher {
    pub requests: mpsc::Sender<v1::WatchRequest>,
    pub updates: tonic::Streaming<v1::ServiceUpdate>,
}

pub fn by_name(name: &str) -> subscribe::Destination {
    subscribe::Destination::Service(name.to_string())
}

pub fn by_vip(ip: &str, port: u32) -> subscribe::Destination {
    subscribe::Destination::Vip(v1::SocketAddress {
        ip: ip.to_string(),
        port,
    })
}

pub fn subscribe_request(node_id: &str, dest: subscribe::Destination) -> v1::WatchRequest {
    v1::WatchRequest {
        kind: Some(watch_request::Kind::Subscribe(v1::Subscribe {
            node: Some(v1::Node {
                id: node_id.to_string(),
                namespace: "default".to_string(),
                ..Default::default()
            }),
            destination: Some(dest),
        })),
    }
}

pub async fn connect(grpc: SocketAddr) -> DiscoveryClient<Channel> {
    connect_with_window(grpc, None).await
}

/// `window` sets the HTTP/2 stream and connection windows (hyper's client defaults
/// are megabytes, enough to buffer many updates a test wants left unread).
pub async fn connect_with_window(
    grpc: SocketAddr,
    window: Option<u32>,
) -> DiscoveryClient<Channel> {
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .expect("connect to discovery");
    DiscoveryClient::new(channel)
}

/// Opens a stream whose first request is `first`.
pub async fn open(grpc: SocketAddr, first: v1::WatchRequest) -> Result<Watcher, tonic::Status> {
    open_with_window(grpc, first, None).await
}

pub async fn open_with_window(
    grpc: SocketAddr,
    first: v1::WatchRequest,
    window: Option<u32>,
) -> Result<Watcher, tonic::Status> {
    let mut client = connect_with_window(grpc, window).await;
    let (requests, rx) = mpsc::channel(16);
    requests.send(first).await.expect("queue first request");
    let updates = tokio::time::timeout(WAIT, client.watch(ReceiverStream::new(rx)))
        .await
        .expect("watch answered in time")?
        .into_inner();
    Ok(Watcher { requests, updates })
}

impl Watcher {
    pub async fn subscribe(grpc: SocketAddr, dest: subscribe::Destination) -> Self {
        open(grpc, subscribe_request("test-node", dest))
            .await
            .expect("subscribe accepted")
    }

    pub async fn next(&mut self) -> v1::ServiceUpdate {
        tokio::time::timeout(WAIT, self.updates.message())
            .await
            .expect("update in time")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Reads updates until one has at least `version`.
    pub async fn until_version(&mut self, version: u64) -> v1::ServiceUpdate {
        loop {
            let update = self.next().await;
            if update.version >= version {
                return update;
            }
        }
    }

    pub async fn result(&self, version: u64, applied: bool, error: &str) {
        self.requests
            .send(v1::WatchRequest {
                kind: Some(watch_request::Kind::Result(v1::UpdateResult {
                    version,
                    applied,
                    error: error.to_string(),
                })),
            })
            .await
            .expect("send result");
    }
}

pub fn endpoints(update: &v1::ServiceUpdate) -> Vec<String> {
    match &update.endpoints {
        Some(v1::service_update::Endpoints::Full(set)) => set
            .endpoints
            .iter()
            .filter_map(|e| e.address.as_ref())
            .map(|a| format!("{}:{}", a.ip, a.port))
            .collect(),
        _ => Vec::new(),
    }
}
