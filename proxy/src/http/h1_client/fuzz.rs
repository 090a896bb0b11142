//! Entry points for the fuzz targets (tests/fuzz): the upstream response reader
//! on arbitrary bytes, and the request encoder checked by re-parsing what it wrote.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::request::{encode_head, framing};
use crate::http::headers::strip_hop_by_hop;
use crate::http::pool::{Key, Pool};

/// Reads `answer` as an upstream's response to a GET, body and all. Any outcome
/// but a panic or a hang is fine.
pub(crate) fn response(answer: &[u8]) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let answer = Bytes::copy_from_slice(answer);
        let upstream = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        });
        let pool = Pool::new(Duration::from_secs(1));
        let read = async {
            let conn = pool
                .h1(&Key::plain(addr), Duration::from_secs(1), None, 0)
                .await
                .ok()?;
            let mut req = Request::new(Empty::<Bytes>::new());
            *req.uri_mut() = http::Uri::from_static("/");
            let resp = conn.send(Box::new(req), false, false).await.ok()?;
            resp.into_body().collect().await.ok()
        };
        // The upstream closes after its bytes, so every read ends; the bound
        // only turns a hang into a finding.
        if tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .is_err()
        {
            panic!("reading a closed upstream's answer hung");
        }
        upstream.abort();
    });
}

/// Encodes a request built from `method`, `target` and `fields` (whatever of them
/// `http` accepts) as the proxy does (hop-by-hop fields stripped first), and checks
/// that what was written parses back as the same request line and fields (values
/// up to the whitespace around them, which is not part of a value), and never
/// frames the body twice (Content-Length beside Transfer-Encoding).
pub(crate) fn request(method: &[u8], target: &[u8], fields: &[(&[u8], &[u8])]) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    for (name, value) in fields {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            return;
        };
        req.headers_mut().append(name, value);
    }
    strip_hop_by_hop(req.headers_mut(), false);
    let Some(framing) = framing(&req) else {
        return;
    };
    let mut buf = Vec::new();
    encode_head(&mut buf, &req, &framing);
    let mut parsed_fields = vec![httparse::EMPTY_HEADER; req.headers().len() + 4];
    let mut parsed = httparse::Request::new(&mut parsed_fields);
    match parsed.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, buf.len(), "bytes after the head"),
        other => panic!(
            "the encoded head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
    assert_eq!(parsed.method, Some(req.method().as_str()));
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    assert_eq!(parsed.path, Some(target));
    let written: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
    let has = |name: &str| written.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    assert!(
        !(has("content-length") && has("transfer-encoding")),
        "the body framed twice: {:?}",
        String::from_utf8_lossy(&buf)
    );
    for (name, value) in req.headers() {
        assert!(
            written
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name.as_str())
                    && v.trim_ascii() == value.as_bytes().trim_ascii()),
            "{name}: {value:?} was not written as given: {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
}
