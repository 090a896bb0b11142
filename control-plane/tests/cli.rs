//! The `weft-control serve` binary as a real process.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use tokio::io::AsyncReadExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_weft-control");

/// Two distinct free ports (both held while picking, so they cannot coincide).
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

#[test]
fn invalid_mesh_at_start_exits_non_zero_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("broken.yaml");
    std::fs::write(
        &mesh,
        "services:\n  - name: a\n    endpoints:\n      - address: nope\n",
    )
    .expect("write");
    let (grpc, admin) = free_ports();
    let out = Command::new(BIN)
        .args(["serve", "--mesh"])
        .arg(&mesh)
        .args(["--grpc", &grpc.to_string(), "--admin", &admin.to_string()])
        .output()
        .expect("run weft-control");
    assert!(!out.status.success(), "must fail: {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
}

#[tokio::test]
async fn serves_then_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, "services: [{name: orders}]\n").expect("write");
    let (grpc, admin) = free_ports();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--mesh"])
        .arg(&mesh)
        .args(["--grpc", &grpc.to_string(), "--admin", &admin.to_string()])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn weft-control");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !matches!(http_get(admin, "/ready").await, Ok((200, _))) {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err).await;
            }
            panic!("weft-control exited early ({status}): {err}");
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An open watch stream must not hold up the shutdown.
    let mut w = Watcher::subscribe(grpc, by_name("orders")).await;
    assert!(w.next().await.service.is_some());

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    // The watch stream ended cleanly rather than being cut.
    assert!(matches!(w.updates.message().await, Ok(None) | Err(_)));
}
