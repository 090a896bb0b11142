//! `weft.v1.Discovery`: proxies subscribe to one destination per stream and receive
//! its current state, then every new version.
//!
//! The service is written by hand rather than generated so that responses can be the
//! index's pre-encoded bytes (see [`codec`]); the wire format is exactly the one in
//! discovery.proto, so generated clients talk to it unchanged.

pub mod codec;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio_stream::wrappers::WatchStream;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use weft_api::v1::{self, subscribe, watch_request};

use crate::index::{Destination, Index, Published};
use crate::metrics::Metrics;
use codec::PreEncodedCodec;

/// A proxy that opened a stream has this long to say what it subscribes to.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
const WATCH_PATH: &str = "/weft.v1.Discovery/Watch";

struct Shared {
    index: Arc<Index>,
    metrics: Arc<Metrics>,
}

/// The `weft.v1.Discovery` gRPC service, ready for `tonic`'s server router.
#[derive(Clone)]
pub struct DiscoveryService {
    shared: Arc<Shared>,
}

impl DiscoveryService {
    pub fn new(index: Arc<Index>, metrics: Arc<Metrics>) -> Self {
        DiscoveryService {
            shared: Arc::new(Shared { index, metrics }),
        }
    }
}

impl NamedService for DiscoveryService {
    const NAME: &'static str = "weft.v1.Discovery";
}

impl<B> Service<http::Request<B>> for DiscoveryService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let method = WatchMethod(Arc::clone(&self.shared));
        Box::pin(async move {
            let mut grpc = Grpc::new(PreEncodedCodec::<v1::WatchRequest>::default());
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct WatchMethod(Arc<Shared>);

impl StreamingService<v1::WatchRequest> for WatchMethod {
    type Response = Bytes;
    type ResponseStream = UpdateStream;
    type Future = BoxFuture<Response<UpdateStream>, Status>;

    fn call(&mut self, request: Request<Streaming<v1::WatchRequest>>) -> Self::Future {
        let shared = Arc::clone(&self.0);
        Box::pin(async move { watch(shared, request).await })
    }
}

async fn watch(
    shared: Arc<Shared>,
    request: Request<Streaming<v1::WatchRequest>>,
) -> Result<Response<UpdateStream>, Status> {
    let mut requests = request.into_inner();
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, requests.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no subscribe request in time"))??
        .ok_or_else(|| Status::invalid_argument("the stream ended before a subscribe request"))?;
    let Some(watch_request::Kind::Subscribe(sub)) = first.kind else {
        return Err(Status::invalid_argument(
            "the first request on a Watch stream must be subscribe",
        ));
    };
    let node = sub.node.unwrap_or_default();
    let dest = match &sub.destination {
        Some(subscribe::Destination::Service(name)) => {
            Destination::from_service_name(name, &node.namespace)
        }
        Some(subscribe::Destination::Vip(vip)) => Destination::from_vip(vip),
        None => Err("subscribe names no destination (service or vip)".to_string()),
    }
    .map_err(Status::invalid_argument)?;
    let updates = shared
        .index
        .subscribe(&dest)
        .ok_or_else(|| Status::unavailable("the control plane is shutting down"))?;
    tracing::debug!(node = %node.id, %dest, "subscribed");
    shared.metrics.subscriptions.inc();
    Ok(Response::new(UpdateStream {
        updates: WatchStream::new(updates),
        requests: Some(requests),
        sent_first: false,
        node_id: node.id,
        dest,
        shared,
    }))
}

/// One subscriber's responses: the destination's latest update whenever it changes.
///
/// It also reads the proxy's ACK/NACKs, so a stream needs no task of its own. Being
/// polled only when the transport can take more, it skips versions a slow proxy had
/// no room for and hands over the latest one.
pub struct UpdateStream {
    updates: WatchStream<Arc<Published>>,
    requests: Option<Streaming<v1::WatchRequest>>,
    sent_first: bool,
    node_id: String,
    dest: Destination,
    shared: Arc<Shared>,
}

impl UpdateStream {
    fn on_request(&self, request: v1::WatchRequest) -> Result<(), Status> {
        match request.kind {
            Some(watch_request::Kind::Result(result)) if result.applied => {
                self.shared.metrics.acks.inc();
                tracing::trace!(node = %self.node_id, dest = %self.dest, version = result.version, "ack");
                Ok(())
            }
            Some(watch_request::Kind::Result(result)) => {
                self.shared.metrics.nacks.inc();
                tracing::warn!(
                    node = %self.node_id,
                    dest = %self.dest,
                    version = result.version,
                    error = %result.error,
                    "proxy rejected an update"
                );
                Ok(())
            }
            Some(watch_request::Kind::Subscribe(_)) => Err(Status::invalid_argument(
                "subscribe is only allowed as the first request of a stream",
            )),
            None => Ok(()),
        }
    }
}

impl Stream for UpdateStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        while let Some(requests) = self.requests.as_mut() {
            match requests.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(request))) => {
                    if let Err(status) = self.on_request(request) {
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(node = %self.node_id, %status, "request stream failed");
                    self.requests = None;
                }
                // A proxy may half-close its side and keep watching.
                Poll::Ready(None) => self.requests = None,
                Poll::Pending => break,
            }
        }
        match self.updates.poll_next_unpin(cx) {
            Poll::Ready(Some(published)) => {
                let first = !std::mem::replace(&mut self.sent_first, true);
                let metrics = &self.shared.metrics;
                if !first && let Some(at) = published.applied_at {
                    metrics.push_latency.observe(at.elapsed().as_secs_f64());
                }
                metrics.updates_pushed.inc();
                Poll::Ready(Some(Ok(published.encoded.clone())))
            }
            // The index closed for shutdown: end the stream with OK.
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for UpdateStream {
    fn drop(&mut self) {
        self.shared.metrics.subscriptions.dec();
        self.shared.index.release(&self.dest);
        tracing::debug!(node = %self.node_id, dest = %self.dest, "unsubscribed");
    }
}
