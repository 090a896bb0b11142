//! The part of the kubelet's HTTPS API that the API server calls for
//! `kubectl logs` (`pods/log`): `GET /containerLogs/{namespace}/{pod}/{container}`,
//! with `tailLines` honoured. With it, a test reads a container's output through
//! the Kubernetes API exactly as it would on a real cluster (kind), so one
//! scenario runs on both.
//!
//! The API server finds it through the Node's `daemonEndpoints.kubeletEndpoint`
//! and InternalIP (the bridge's gateway). The test cluster gives the API server no
//! kubelet client certificate and no kubelet CA, so the server presents a
//! self-signed certificate and asks for no client certificate; it listens only on
//! the node's bridge address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::apps::AbortOnDrop;

/// The kubelet API of one node, served until dropped.
pub struct KubeletApi {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl KubeletApi {
    /// Serves the logs under `dir` (the node's pod folders) on `ip`.
    pub async fn start(ip: Ipv4Addr, dir: PathBuf) -> anyhow::Result<KubeletApi> {
        let acceptor = tls(ip)?;
        let listener = TcpListener::bind((ip, 0))
            .await
            .context("bind the kubelet API")?;
        let addr = listener.local_addr()?;
        let dir = Arc::new(dir);
        let task = crate::apiserver::serve_https(listener, acceptor, move |req| {
            let dir = dir.clone();
            async move { answer(&dir, &req) }
        });
        Ok(KubeletApi { addr, _task: task })
    }
}

fn answer(dir: &std::path::Path, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.method() != http::Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    let path: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    let ["containerLogs", ns, pod, container] = path.as_slice() else {
        return reply(StatusCode::NOT_FOUND, format!("{} not served\n", req.uri()));
    };
    let Some(log) = super::pod::current_container_log(dir, ns, pod, container) else {
        return reply(
            StatusCode::NOT_FOUND,
            format!("no container {container} in pod {ns}/{pod} on this node\n"),
        );
    };
    let tail = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("tailLines="))
            .and_then(|n| n.parse::<usize>().ok())
    });
    let body = match tail {
        Some(n) => {
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(n);
            lines[from..].iter().map(|l| format!("{l}\n")).collect()
        }
        None => log,
    };
    reply(StatusCode::OK, body)
}

fn tls(ip: Ipv4Addr) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::new())?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(ip.into()));
    let cert = params.self_signed(&key)?;
    crate::apiserver::tls_acceptor(&cert, &key, &[b"http/1.1"])
}
