//! In-process backends the proxies forward to. Each binds 127.0.0.1:0 before it
//! returns (so it is ready at once), counts what it accepted, and stops, with every
//! connection it holds, when dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::data;

/// Aborts the task (and so everything it owns) when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A response body an app can stream (or send whole with [`full`]).
pub type AppBody = BoxBody<Bytes, Infallible>;
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<Response<AppBody>> + Send + Sync>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> AppBody {
    Full::new(bytes.into()).boxed()
}

async fn bind_loopback() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?)
}

/// An HTTP server speaking HTTP/1.1 and HTTP/2 prior knowledge on one port.
pub struct HttpApp {
    pub name: String,
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl HttpApp {
    /// The standard test app (see [`standard_handler`]).
    pub async fn start(name: &str) -> anyhow::Result<HttpApp> {
        Self::with_handler(name, standard_handler(name)).await
    }

    pub async fn with_handler(name: &str, handler: Handler) -> anyhow::Result<HttpApp> {
        Self::on_listener(name, bind_loopback().await?, handler)
    }

    /// The standard test app speaking HTTP/2 prior knowledge (h2c) only, as a gRPC
    /// server does: an HTTP/1.1 request gets its connection closed.
    pub async fn start_h2c_only(name: &str) -> anyhow::Result<HttpApp> {
        Self::serve(name, bind_loopback().await?, standard_handler(name), true)
    }

    /// [`HttpApp::start_h2c_only`] on a listener bound elsewhere (e.g. inside a
    /// network namespace).
    pub fn h2c_only_on_listener(name: &str, listener: TcpListener) -> anyhow::Result<HttpApp> {
        Self::serve(name, listener, standard_handler(name), true)
    }

    /// Serves on a listener bound elsewhere (e.g. inside a network namespace).
    pub fn on_listener(
        name: &str,
        listener: TcpListener,
        handler: Handler,
    ) -> anyhow::Result<HttpApp> {
        Self::serve(name, listener, handler, false)
    }

    fn serve(
        name: &str,
        listener: TcpListener,
        handler: Handler,
        h2c_only: bool,
    ) -> anyhow::Result<HttpApp> {
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        let task = tokio::spawn(async move {
            let mut open = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while open.try_join_next().is_some() {}
                conns.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let reqs = reqs.clone();
                open.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // `http2_only` holds for `serve_connection` alone.
                    let _ = if h2c_only {
                        builder
                            .http2_only()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await
                    } else {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await
                    };
                });
            }
        });
        Ok(HttpApp {
            name: name.to_string(),
            addr,
            connections,
            requests,
            _task: AbortOnDrop(task),
        })
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// The standard app's routes. Every answer carries `x-app` (the app's name),
/// `x-host` (the Host or :authority it received) and `x-version`.
///
/// - `/headers`: the body lists the request's headers, one `name: value` a line.
/// - `/upload?reply=N`: reads the whole body, answers with `x-body-len` and
///   `x-body-sum` ([`data::checksum`]) and a body of `data::pattern(N, 7)`.
/// - `/slow?ms=N`: answers after N ms (at most 60 s).
/// - anything else: `hello from <name>`.
pub fn standard_handler(name: &str) -> Handler {
    let name: Arc<str> = Arc::from(name);
    Arc::new(move |req: Request<Incoming>| {
        let name = name.clone();
        Box::pin(async move {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()))
                .unwrap_or_default();
            let version = format!("{:?}", req.version());
            let mut extra = Vec::new();
            let body = match req.uri().path() {
                "/headers" => {
                    let mut text = String::new();
                    for (n, v) in req.headers() {
                        text.push_str(&format!("{}: {}\n", n, v.to_str().unwrap_or("?")));
                    }
                    Bytes::from(text)
                }
                "/upload" => {
                    let reply = query_param(&req, "reply").unwrap_or(0);
                    let received = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(e) => {
                            return status_response(StatusCode::BAD_REQUEST, &format!("{e}\n"));
                        }
                    };
                    extra.push(("x-body-len", received.len().to_string()));
                    extra.push(("x-body-sum", data::checksum(&received).to_string()));
                    Bytes::from(data::pattern(usize::try_from(reply).unwrap_or(0), 7))
                }
                "/slow" => {
                    let ms = query_param(&req, "ms").unwrap_or(0).min(60_000);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Bytes::from_static(b"slow done\n")
                }
                _ => Bytes::from(format!("hello from {name}\n")),
            };
            let mut resp = Response::new(full(body));
            let h = resp.headers_mut();
            for (k, v) in [
                ("x-app", name.to_string()),
                ("x-host", host),
                ("x-version", version),
            ]
            .into_iter()
            .chain(extra)
            {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(k, v);
                }
            }
            resp
        })
    })
}

fn status_response(status: StatusCode, text: &str) -> Response<AppBody> {
    let mut resp = Response::new(full(text.to_string()));
    *resp.status_mut() = status;
    resp
}

/// A raw TCP server: each accepted connection is handed to a handler.
pub struct TcpApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl TcpApp {
    pub async fn serve<F, Fut>(handler: F) -> anyhow::Result<TcpApp>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::serve_on(bind_loopback().await?, handler)
    }

    /// Like [`TcpApp::serve`] on a listener bound elsewhere.
    pub fn serve_on<F, Fut>(listener: TcpListener, handler: F) -> anyhow::Result<TcpApp>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut open = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while open.try_join_next().is_some() {}
                count.fetch_add(1, Ordering::SeqCst);
                open.spawn(handler(stream));
            }
        });
        Ok(TcpApp {
            addr,
            accepted,
            _task: AbortOnDrop(task),
        })
    }

    /// Reads until the client half-closes, then answers `echo:` + everything it
    /// read, then closes. Only a proxy that propagates half-close gets an answer.
    pub async fn echo_after_eof() -> anyhow::Result<TcpApp> {
        Self::serve(|mut stream| async move {
            let mut got = Vec::new();
            if stream.read_to_end(&mut got).await.is_err() {
                return;
            }
            let _ = stream.write_all(b"echo:").await;
            let _ = stream.write_all(&got).await;
            let _ = stream.shutdown().await;
        })
        .await
    }

    /// Server speaks first: writes `banner` on accept, then echoes until EOF.
    pub async fn banner(banner: &'static [u8]) -> anyhow::Result<TcpApp> {
        Self::serve(move |mut stream| async move {
            if stream.write_all(banner).await.is_err() {
                return;
            }
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .await
    }

    /// Reads a request head, then closes without answering: an upstream that
    /// resets mid-request.
    pub async fn close_after_request_head() -> anyhow::Result<TcpApp> {
        Self::serve(|mut stream| async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            drop(stream);
        })
        .await
    }

    /// Accepts and reads but never answers; holds each connection until the app is
    /// dropped.
    pub async fn silent() -> anyhow::Result<TcpApp> {
        Self::serve(|mut stream| async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
            // Keep the socket open after the peer's FIN, still never answering.
            std::future::pending::<()>().await;
        })
        .await
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
