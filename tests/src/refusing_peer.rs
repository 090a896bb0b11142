//! A peer proxy that refuses streams on purpose, standing between a client proxy and
//! a real server proxy of an mTLS pair: it presents the server proxy's SPIFFE
//! identity on a certificate from the mesh's own CA and takes HTTP/1 requests
//! carried as HTTP/2 streams (ALPN `weft.h2-orig/1`), so the client proxy treats it
//! as the peer. It misbehaves as [`Misbehaviour`] says; every stream it serves goes
//! on to the server proxy as it came (over mTLS, on `weft.h2-orig/1`, so the server
//! proxy hands the app the HTTP/1.1 request), with the server proxy's answer back.
//!
//! ```text
//! client proxy ══ mTLS ══► refusing peer ══ mTLS ══► server proxy inbound ─► app
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response, Version};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::control::WeftControl;
use crate::mesh_ca::{AnyServer, MeshCa};

/// Bounds each wait on a socket or a stream.
const LIMIT: Duration = Duration::from_secs(20);
/// How long a going-away connection waits for more requests once one has arrived:
/// it decides only how many concurrent requests the GOAWAY catches, never whether
/// a test passes.
const QUIET: Duration = Duration::from_millis(300);
/// The ALPN on which a Weft proxy carries HTTP/1 requests as HTTP/2 streams.
const ALPN_H2_ORIG: &[u8] = b"weft.h2-orig/1";
/// The identity the peer presents to the server proxy, which admits any meshed caller.
const RELAY_ID: &str = "spiffe://cluster.local/ns/default/sa/refusing-peer";

/// What the peer does wrong.
#[derive(Debug, Clone, Copy)]
pub enum Misbehaviour {
    /// Each request (method and target) the first time it comes: read whole, then
    /// reset with REFUSED_STREAM, unprocessed. Its next arrival is served.
    RefuseOnce,
    /// Every stream: read whole, then reset with REFUSED_STREAM, unprocessed.
    RefuseAlways,
    /// Each request the first time it comes: sent on and answered by the app, then
    /// reset with INTERNAL_ERROR in place of the answer. Its next arrival is served.
    FailOnceAfterProcessing,
    /// The first connection: GOAWAY (last stream 0, NO_ERROR) once `requests` requests
    /// have arrived whole on it (or one has and no more come for a moment), none of
    /// them processed. Every later connection goes to the server proxy untouched.
    GoAway { requests: usize },
}

pub struct RefusingPeer {
    pub addr: SocketAddr,
    misbehaved: Arc<AtomicUsize>,
}

impl RefusingPeer {
    /// A peer in front of the server proxy's inbound `server`, presenting `identity`
    /// on a certificate signed by `cp`'s CA.
    pub async fn start(
        cp: &WeftControl,
        server: SocketAddr,
        identity: &str,
        how: Misbehaviour,
    ) -> anyhow::Result<RefusingPeer> {
        let ca = MeshCa::of(cp)?;
        let acceptor = TlsAcceptor::from(Arc::new(server_config(ca.leaf(identity)?)?));
        let connector = TlsConnector::from(Arc::new(client_config(ca.leaf(RELAY_ID)?)?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let misbehaved = Arc::new(AtomicUsize::new(0));
        let peer = Peer {
            server,
            connector,
            how,
            misbehaved: misbehaved.clone(),
            seen: Arc::default(),
        };
        tokio::spawn(peer.serve(listener, acceptor));
        Ok(RefusingPeer { addr, misbehaved })
    }

    /// How many streams it refused or failed, or connections it sent away.
    pub fn misbehaved(&self) -> usize {
        self.misbehaved.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Peer {
    server: SocketAddr,
    connector: TlsConnector,
    how: Misbehaviour,
    misbehaved: Arc<AtomicUsize>,
    /// The requests (method and target) that came before.
    seen: Arc<Mutex<HashSet<String>>>,
}

impl Peer {
    async fn serve(self, listener: TcpListener, acceptor: TlsAcceptor) {
        let mut first = true;
        while let Ok((socket, _)) = listener.accept().await {
            let going_away = matches!(self.how, Misbehaviour::GoAway { .. });
            if going_away && !std::mem::take(&mut first) {
                tokio::spawn(pass_through(socket, self.server));
                continue;
            }
            let (peer, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(LIMIT, acceptor.accept(socket)).await else {
                    return;
                };
                match peer.how {
                    Misbehaviour::GoAway { requests } => {
                        go_away(tls, requests, &peer.misbehaved).await;
                    }
                    _ => peer.relay_connection(tls).await,
                }
            });
        }
    }

    /// Serves one connection's streams, each on its own stream to the server proxy.
    async fn relay_connection<S>(self, tls: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(Ok(mut conn)) = tokio::time::timeout(LIMIT, h2::server::handshake(tls)).await else {
            return;
        };
        let Ok(to) = self.connect_server().await else {
            return;
        };
        while let Some(Ok((req, respond))) = conn.accept().await {
            let key = format!("{} {}", req.method(), req.uri());
            let first = self.seen.lock().expect("seen").insert(key);
            let how = match self.how {
                Misbehaviour::RefuseAlways => Some(Misbehaviour::RefuseOnce),
                how => first.then_some(how),
            };
            tokio::spawn(relay(
                req,
                respond,
                to.clone(),
                how,
                self.misbehaved.clone(),
            ));
        }
    }

    /// An HTTP/2 connection to the server proxy, as a peer proxy makes it.
    async fn connect_server(&self) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
        let tcp = TcpStream::connect(self.server).await?;
        let name = ServerName::IpAddress(self.server.ip().into());
        let tls = tokio::time::timeout(LIMIT, self.connector.connect(name, tcp)).await??;
        anyhow::ensure!(
            tls.get_ref().1.alpn_protocol() == Some(ALPN_H2_ORIG),
            "the server proxy did not take {}",
            String::from_utf8_lossy(ALPN_H2_ORIG)
        );
        let (to, conn) = h2::client::handshake(tls).await?;
        tokio::spawn(conn);
        Ok(to)
    }
}

/// One stream: refused or failed as `how` says (None: served), counted in
/// `misbehaved` before the caller can learn of it.
async fn relay(
    req: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    to: h2::client::SendRequest<Bytes>,
    how: Option<Misbehaviour>,
    misbehaved: Arc<AtomicUsize>,
) {
    let (mut parts, mut body) = req.into_parts();
    if parts.uri.authority().is_none() {
        // A carried HTTP/1 request crosses without :authority; h2 sends a relative
        // target on only for a request it is told is HTTP/1.1, as it came.
        parts.version = Version::HTTP_11;
    }
    if let Some(Misbehaviour::RefuseOnce) = how {
        // Whole first: the caller can send again only what it finished sending.
        while let Some(Ok(chunk)) = tokio::time::timeout(LIMIT, body.data())
            .await
            .ok()
            .flatten()
        {
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        misbehaved.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(Reason::REFUSED_STREAM);
        return;
    }
    let answer = async {
        let end = body.is_end_stream();
        let mut to = to.ready().await?;
        let (answer, mut send) = to.send_request(Request::from_parts(parts, ()), end)?;
        if !end {
            pipe(&mut body, &mut send).await?;
        }
        anyhow::Ok(tokio::time::timeout(LIMIT, answer).await??)
    };
    let Ok(answer) = answer.await else {
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    };
    if let Some(Misbehaviour::FailOnceAfterProcessing) = how {
        misbehaved.fetch_add(1, Ordering::SeqCst);
        respond.send_reset(Reason::INTERNAL_ERROR);
        return;
    }
    let (parts, mut body) = answer.into_parts();
    let end = body.is_end_stream();
    if let Ok(mut send) = respond.send_response(Response::from_parts(parts, ()), end)
        && !end
    {
        let _ = pipe(&mut body, &mut send).await;
    }
}

/// Copies a body and its trailers from one stream to another.
async fn pipe(from: &mut RecvStream, to: &mut SendStream<Bytes>) -> anyhow::Result<()> {
    while let Some(chunk) = tokio::time::timeout(LIMIT, from.data()).await? {
        let chunk = chunk?;
        let _ = from.flow_control().release_capacity(chunk.len());
        to.send_data(chunk, false)?;
    }
    match tokio::time::timeout(LIMIT, from.trailers()).await?? {
        Some(trailers) => to.send_trailers(trailers)?,
        None => to.send_data(Bytes::new(), true)?,
    }
    Ok(())
}

/// One raw HTTP/2 frame: for peers that must send what h2 would not.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads the preface and frames until `requests` streams have ended (or one has and
/// the connection goes quiet), then goes away with last stream 0 (counted in
/// `gone` first) and stays until the caller closes, as a draining server does.
async fn go_away<S: AsyncRead + AsyncWrite + Unpin>(
    mut tls: S,
    requests: usize,
    gone: &AtomicUsize,
) {
    let mut preface = [0u8; 24];
    if tokio::time::timeout(LIMIT, tls.read_exact(&mut preface))
        .await
        .is_err()
        || tls.write_all(&frame(0x4, 0, 0, &[])).await.is_err()
        || tls.flush().await.is_err()
    {
        return;
    }
    let mut ended = HashSet::new();
    while ended.len() < requests {
        let wait = if ended.is_empty() { LIMIT } else { QUIET };
        let mut head = [0u8; 9];
        match tokio::time::timeout(wait, tls.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            Err(_) if !ended.is_empty() => break,
            _ => return,
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        if tls.read_exact(&mut payload).await.is_err() {
            return;
        }
        // HEADERS (0x1) or DATA (0x0) with END_STREAM (0x1).
        if head[4] & 0x1 != 0 && head[3] <= 0x1 {
            ended.insert(u32::from_be_bytes([head[5], head[6], head[7], head[8]]));
        }
    }
    let mut goaway = 0u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    gone.fetch_add(1, Ordering::SeqCst);
    if tls.write_all(&frame(0x7, 0, 0, &goaway)).await.is_err() || tls.flush().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(LIMIT, tls.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn pass_through(mut socket: TcpStream, server: SocketAddr) {
    if let Ok(mut next) = TcpStream::connect(server).await {
        let _ = tokio::io::copy_bidirectional(&mut socket, &mut next).await;
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serves `leaf` and takes only carried HTTP/1, as a peer proxy offers it.
fn server_config(
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN_H2_ORIG.to_vec()];
    Ok(config)
}

/// Presents `leaf` to the server proxy and asks for carried HTTP/1. The server
/// proxy's own certificate is not what these tests check.
fn client_config(
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN_H2_ORIG.to_vec()];
    Ok(config)
}
