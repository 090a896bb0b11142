//! A gRPC echo server (tests/proto/echo.proto) and a client for it, with message
//! size limits raised so multi-MiB messages pass.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::apps::AbortOnDrop;
use crate::pb::Msg;
use crate::pb::echo_client::EchoClient;
use crate::pb::echo_server::{Echo, EchoServer};

/// Both ends accept messages up to this size.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

/// The status a message asks for with `fail_code`, carrying `text` as its message.
fn requested_failure(msg: &Msg) -> Option<Status> {
    (msg.fail_code != 0)
        .then(|| Status::new(Code::from_i32(msg.fail_code as i32), msg.text.clone()))
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    /// Echoes the message, or fails with the status it asks for.
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let msg = request.into_inner();
        match requested_failure(&msg) {
            Some(status) => Err(status),
            None => Ok(Response::new(msg)),
        }
    }

    /// Answers with how many messages arrived (`count`) and their total data size
    /// (`text`).
    async fn client_stream(
        &self,
        request: Request<Streaming<Msg>>,
    ) -> Result<Response<Msg>, Status> {
        let mut stream = request.into_inner();
        let (mut count, mut bytes) = (0u32, 0usize);
        while let Some(msg) = stream.message().await? {
            count += 1;
            bytes += msg.data.len();
        }
        Ok(Response::new(Msg {
            count,
            text: bytes.to_string(),
            ..Msg::default()
        }))
    }

    type ServerStreamStream = MsgStream;

    /// Sends `count` copies of the message with `text` set to their index, then, if
    /// `fail_code` is set, ends with that status (in the trailers).
    async fn server_stream(&self, request: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let msg = request.into_inner();
        let failure = requested_failure(&msg);
        let copies = (0..msg.count).map(move |i| {
            Ok(Msg {
                data: msg.data.clone(),
                count: i,
                text: i.to_string(),
                fail_code: 0,
            })
        });
        let stream = tokio_stream::iter(copies).chain(tokio_stream::iter(failure.map(Err)));
        Ok(Response::new(Box::pin(stream)))
    }

    type BidiStream = MsgStream;

    /// Echoes each message as soon as it arrives.
    async fn bidi(&self, request: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let next = match incoming.message().await {
                    Ok(Some(msg)) => match requested_failure(&msg) {
                        Some(status) => Err(status),
                        None => Ok(msg),
                    },
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let stop = next.is_err();
                if tx.send(next).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// The echo server on 127.0.0.1:<free port>, stopped when dropped.
pub struct GrpcEchoApp {
    pub addr: SocketAddr,
    _task: AbortOnDrop,
}

impl GrpcEchoApp {
    pub async fn start() -> anyhow::Result<GrpcEchoApp> {
        Self::on_listener(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?)
    }

    /// Serves on a listener bound elsewhere (e.g. inside a network namespace).
    pub fn on_listener(listener: TcpListener) -> anyhow::Result<GrpcEchoApp> {
        let addr = listener.local_addr()?;
        let service = EchoServer::new(EchoService)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let task = tokio::spawn(async move {
            let _ = Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Ok(GrpcEchoApp {
            addr,
            _task: AbortOnDrop(task),
        })
    }
}

/// A client for the echo service at `addr` (plain HTTP/2, as to a sidecar).
pub async fn echo_client(addr: SocketAddr) -> anyhow::Result<EchoClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(crate::STEP_DEADLINE)
        .timeout(crate::STEP_DEADLINE)
        .connect()
        .await?;
    Ok(EchoClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE))
}
