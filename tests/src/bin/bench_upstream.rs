//! A minimal upstream for tests/bench/proxy.sh: answers every request with the same
//! small body over HTTP/1.1 keep-alive and HTTP/2 prior knowledge (h2c) on one port.
//!
//! Usage: `bench-upstream LISTEN_ADDR [BODY_BYTES]`. It prints `listening on ADDR`
//! once bound, and runs on a current-thread runtime so that, pinned to one CPU, it
//! costs the same on every path the benchmark compares.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const DEFAULT_BODY_BYTES: usize = 64;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .context("usage: bench-upstream LISTEN_ADDR [BODY_BYTES]")?
        .parse()
        .context("LISTEN_ADDR must be ip:port")?;
    let size = match args.next() {
        Some(s) => s.parse().context("BODY_BYTES must be a number")?,
        None => DEFAULT_BODY_BYTES,
    };
    let body = Bytes::from(vec![b'x'; size]);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(addr, body))
}

async fn serve(addr: SocketAddr, body: Bytes) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the open ones.
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            // Closed connections at the end of a load run are expected; stay quiet.
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
