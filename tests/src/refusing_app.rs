//! An HTTP/2 (h2c) app that refuses streams on purpose, on the h2 crate: it resets
//! a stream with REFUSED_STREAM unprocessed, as a server shedding load does, or
//! with INTERNAL_ERROR after processing it, and records every stream it took.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use http::Response;
use tokio::net::TcpListener;

/// Bounds each wait for a request body.
const LIMIT: Duration = Duration::from_secs(20);

/// Streams an endpoint took, in order, each with its request body (empty for one
/// refused unread).
pub type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// How an endpoint treats the first stream it gets.
#[derive(Debug, Clone, Copy)]
pub enum First {
    Served,
    /// Reset at once, unread.
    Refused,
    /// Reset with REFUSED_STREAM once its body was read: a server shedding load
    /// refuses what it has not started, whatever of it already arrived.
    RefusedAfterBody,
    /// Every stream reset at once, unread.
    AlwaysRefused,
    /// Reset with INTERNAL_ERROR after its body was read: it was processed.
    Failed,
}

/// An h2 endpoint on loopback that treats its first stream as `first` says and
/// answers every other 200 "served".
pub async fn endpoint(first: First) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (addr, endpoint_on(listener, first))
}

/// [`endpoint`] on a listener bound elsewhere (e.g. inside a network namespace).
pub fn endpoint_on(listener: TcpListener, first: First) -> Seen {
    let seen: Seen = Arc::default();
    let streams = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (log, streams) = (log.clone(), streams.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, resp))) = conn.accept().await {
                    let n = streams.fetch_add(1, Ordering::SeqCst);
                    let first = match first {
                        First::AlwaysRefused => First::Refused,
                        first if n == 0 => first,
                        _ => First::Served,
                    };
                    tokio::spawn(answer(req.into_body(), resp, first, log.clone()));
                }
            });
        }
    });
    seen
}

async fn answer(
    mut body: h2::RecvStream,
    mut resp: h2::server::SendResponse<Bytes>,
    first: First,
    log: Seen,
) {
    let record = |got: Vec<u8>| log.lock().expect("log").push(got);
    if let First::Refused = first {
        record(Vec::new());
        resp.send_reset(Reason::REFUSED_STREAM);
        return;
    }
    let mut got = Vec::new();
    while let Some(Ok(chunk)) = tokio::time::timeout(LIMIT, body.data())
        .await
        .ok()
        .flatten()
    {
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    record(got);
    match first {
        First::Failed => return resp.send_reset(Reason::INTERNAL_ERROR),
        First::RefusedAfterBody => return resp.send_reset(Reason::REFUSED_STREAM),
        _ => {}
    }
    if let Ok(mut send) = resp.send_response(Response::new(()), false) {
        let _ = send.send_data(Bytes::from_static(b"served"), true);
    }
}
