//! Reads `/api/summary` from the control plane's admin port.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;

use super::summary::Summary;

/// A summary request that takes longer than this counts as failed.
const LIMIT: Duration = Duration::from_secs(5);

pub async fn summary(admin: SocketAddr) -> anyhow::Result<Summary> {
    let get = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| format!("cannot connect to {admin}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/api/summary")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "{admin}/api/summary answered {}",
            resp.status()
        );
        let body = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&body).context("the summary is not what weftctl expects")
    };
    tokio::time::timeout(LIMIT, get)
        .await
        .map_err(|_| anyhow::anyhow!("{admin} did not answer within {LIMIT:?}"))?
}
