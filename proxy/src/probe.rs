//! Kubelet probes of the app, forwarded by the admin server.
//!
//! Under strict mTLS the inbound side refuses the kubelet's plaintext probes of an
//! app port. The injector therefore rewrites each app container's `httpGet` probe
//! to `GET /app-probe/<port><original path>` on the admin port (never redirected),
//! and lists the ports in `WEFT_PROBE_PORTS`. Here such a request is replayed to
//! `127.0.0.1:<port>` with the kubelet's headers, and the app's status comes back.
//! Ports not in the list are refused, so the admin port is no open relay to
//! whatever listens on the pod's loopback.
//!
//! A `grpc` probe becomes `GET /app-grpc-probe/<port>[/<service>]`: the proxy
//! calls `grpc.health.v1.Health/Check` over h2c on `127.0.0.1:<port>` and answers
//! 200 when the app says SERVING, 503 otherwise, as the kubelet's own gRPC probe
//! decides.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::ports::PortSet;

/// The path prefix the injector rewrites HTTP probes to.
pub(crate) const PREFIX: &str = "/app-probe/";
/// The path prefix the injector rewrites gRPC probes to.
pub(crate) const GRPC_PREFIX: &str = "/app-grpc-probe/";
/// A health answer is a few bytes; anything larger is not one.
const MAX_GRPC_BODY: usize = 4 * 1024;
/// The kubelet reads no more than this much of a probe's body.
const MAX_BODY: usize = 10 * 1024;

/// Headers that describe one hop, not the request: never replayed.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
];

/// The app port a probe path names, if it is one the injector declared: the admin
/// port must not become a relay to anything else listening on loopback.
fn probe_port(port: &str, allowed: &PortSet) -> Result<u16, (StatusCode, String)> {
    let Ok(port) = port.parse::<u16>() else {
        return Err((StatusCode::NOT_FOUND, "not found\n".into()));
    };
    if !allowed.contains(port) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("port {port} is not a probe port of this pod\n"),
        ));
    }
    Ok(port)
}

/// Answers `GET /app-probe/<port>/<path>?<query>` (the path after the prefix
/// already split off by the caller is `rest`).
pub(crate) async fn forward(
    rest: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    allowed: &PortSet,
    admin_port: u16,
    timeout: Duration,
) -> Response<Full<Bytes>> {
    let (port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port = match probe_port(port, allowed) {
        Ok(port) => port,
        Err((status, why)) => return text(status, why),
    };
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    match tokio::time::timeout(timeout, get(app, &path_and_query, headers, admin_port)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(%app, error = %e, "app probe failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the app on port {port} did not answer: {e}\n"),
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the app on port {port} did not answer within {timeout:?}\n"),
        ),
    }
}

/// Answers `GET /app-grpc-probe/<port>[/<service>]` (`rest`: after the prefix).
pub(crate) async fn forward_grpc(
    rest: &str,
    allowed: &PortSet,
    timeout: Duration,
) -> Response<Full<Bytes>> {
    let (port, service) = rest.split_once('/').unwrap_or((rest, ""));
    let port = match probe_port(port, allowed) {
        Ok(port) => port,
        Err((status, why)) => return text(status, why),
    };
    let app = SocketAddr::from(([127, 0, 0, 1], port));
    match tokio::time::timeout(timeout, grpc_health(app, service)).await {
        Ok(Ok(SERVING)) => text(StatusCode::OK, "SERVING\n".into()),
        Ok(Ok(status)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the app on port {port} reports health status {status}, not SERVING\n"),
        ),
        Ok(Err(e)) => {
            tracing::debug!(%app, error = %e, "app gRPC probe failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the app on port {port} did not answer the health check: {e}\n"),
            )
        }
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the app on port {port} did not answer within {timeout:?}\n"),
        ),
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// One `grpc.health.v1.Health/Check` over h2c; returns the serving status. The two
/// messages are one string and one enum field, encoded here by hand rather than
/// pulling generated code into the proxy for them.
async fn grpc_health(app: SocketAddr, service: &str) -> Result<u64, BoxError> {
    let stream = TcpStream::connect(app).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // HealthCheckRequest { string service = 1; }, in a gRPC length-prefixed frame.
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    frame.extend_from_slice(&message);
    let req = Request::post(format!("http://{app}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(Bytes::from(frame)))?;
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()).into());
    }
    let (parts, body) = resp.into_parts();
    let collected = http_body_util::Limited::new(body, MAX_GRPC_BODY)
        .collect()
        .await?;
    // grpc-status comes in the trailers, or in the headers of a trailers-only reply.
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if grpc_status != "0" {
        return Err(format!("grpc-status {grpc_status:?}").into());
    }
    serving_status(&collected.to_bytes()).ok_or_else(|| "a malformed health reply".into())
}

/// The `status` field (1, varint) of a framed `HealthCheckResponse`; 0 (UNKNOWN)
/// when the field is absent, as protobuf defaults it.
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (len, mut msg) = rest.split_at(4);
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    msg = msg.get(..len)?;
    let mut status = 0;
    while let Some((&key, rest)) = msg.split_first() {
        msg = rest;
        match key & 0x07 {
            0 => {
                let (v, rest) = take_varint(msg)?;
                msg = rest;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let (n, rest) = take_varint(msg)?;
                msg = rest.get(usize::try_from(n).ok()?..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &buf[i + 1..]));
        }
    }
    None
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn get(
    app: SocketAddr,
    path_and_query: &str,
    headers: &HeaderMap,
    admin_port: u16,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(app).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(path_and_query).body(Empty::<Bytes>::new())?;
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(name) && name != header::HOST {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req.headers_mut()
        .insert(header::HOST, app_host(headers, admin_port, app.port())?);
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut body = resp.into_body();
    let mut kept = BytesMut::new();
    while kept.len() < MAX_BODY {
        match body.frame().await {
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            None => break,
        }
    }
    let mut out = Response::new(Full::new(kept.freeze()));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(out)
}

/// The Host the kubelet would have sent to the app: its default names the pod IP
/// and the probed port, so `<ip>:<admin port>` becomes `<ip>:<app port>`; a custom
/// Host from the probe's `httpHeaders` is kept as it is.
fn app_host(headers: &HeaderMap, admin_port: u16, app_port: u16) -> Result<HeaderValue, BoxError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let value = match host {
        Some(h) => match h.rsplit_once(':') {
            Some((name, port)) if port.parse() == Ok(admin_port) => format!("{name}:{app_port}"),
            _ => h.to_string(),
        },
        None => format!("127.0.0.1:{app_port}"),
    };
    Ok(HeaderValue::try_from(value)?)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).expect("value"));
        m
    }

    #[test]
    fn the_kubelets_default_host_names_the_app_port() {
        let h = |m: &HeaderMap| app_host(m, 7191, 8080).expect("host");
        assert_eq!(h(&host("10.1.2.3:7191")), "10.1.2.3:8080");
        assert_eq!(h(&host("[fd00::5]:7191")), "[fd00::5]:8080");
        assert_eq!(h(&host("shop.example")), "shop.example");
        assert_eq!(h(&host("shop.example:9000")), "shop.example:9000");
        assert_eq!(h(&HeaderMap::new()), "127.0.0.1:8080");
    }

    #[test]
    fn health_replies_are_decoded() {
        // status: SERVING; status: NOT_SERVING; empty message (UNKNOWN).
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x02]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown length-delimited field before the status is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 0x01, b'x', 0x08, 0x01]),
            Some(1)
        );
        assert_eq!(
            serving_status(&[1, 0, 0, 0, 2, 0x08, 0x01]),
            None,
            "compressed"
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "truncated");
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(take_varint(&v), Some((300, &[][..])));
    }

    #[tokio::test]
    async fn undeclared_and_malformed_ports_are_refused_without_connecting() {
        let allowed = PortSet::parse("8080").expect("ports");
        let t = Duration::from_secs(1);
        let resp = forward("9090/healthz", None, &HeaderMap::new(), &allowed, 7191, t).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let resp = forward("http/healthz", None, &HeaderMap::new(), &allowed, 7191, t).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
}
