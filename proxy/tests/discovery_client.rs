//! The proxy as a control-plane client, against a scripted control plane served by
//! tonic on loopback: first-use subscription, hot swap, NACK of a bad update, and
//! resynchronisation after the control plane comes back.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use weft_api::v1::discovery_server::{Discovery, DiscoveryServer};
use weft_api::v1::{self, ServiceUpdate, WatchRequest};
use weft_proxy::config::Config;

/// A control plane whose answer per service name the test sets.
#[derive(Clone, Default)]
struct ScriptedControlPlane {
    state: Arc<Mutex<HashMap<String, watch::Sender<ServiceUpdate>>>>,
    results: Arc<Mutex<Vec<v1::UpdateResult>>>,
    /// Cancelling it ends every open stream, as a crashing control plane would.
    crash: CancellationToken,
}

impl ScriptedControlPlane {
    fn channel(&self, name: &str) -> watch::Sender<ServiceUpdate> {
        self.state
            .lock()
            .expect("lock")
            .entry(name.to_string())
            .or_insert_with(|| watch::channel(ServiceUpdate::default()).0)
            .clone()
    }

    fn set(&self, name: &str, update: ServiceUpdate) {
        self.channel(name).send_replace(update);
    }

    fn nacks(&self) -> Vec<v1::UpdateResult> {
        let results = self.results.lock().expect("lock");
        results.iter().filter(|r| !r.applied).cloned().collect()
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ServiceUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for ScriptedControlPlane {
    type WatchStream = UpdateStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let Some(v1::watch_request::Kind::Subscribe(sub)) = first.kind else {
            return Err(Status::invalid_argument("first message must subscribe"));
        };
        let Some(v1::subscribe::Destination::Service(name)) = sub.destination else {
            return Err(Status::invalid_argument("this fake only knows names"));
        };
        let results = self.results.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(v1::watch_request::Kind::Result(r)) = msg.kind {
                    results.lock().expect("lock").push(r);
                }
            }
        });
        let rx = self.channel(&name).subscribe();
        let stream = futures_util::StreamExt::take_until(
            WatchStream::new(rx).map(Ok),
            self.crash.clone().cancelled_owned(),
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

async fn serve_control_plane(
    cp: ScriptedControlPlane,
    listener: TcpListener,
    stop: CancellationToken,
) {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(DiscoveryServer::new(cp))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
        .expect("control plane serves");
}

/// An app that answers every request with its own name.
async fn app(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn update(version: u64, endpoints: &[&str]) -> ServiceUpdate {
    ServiceUpdate {
        version,
        service: Some(v1::ServiceInfo {
            name: "orders".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        endpoints: Some(v1::service_update::Endpoints::Full(v1::EndpointSet {
            endpoints: endpoints
                .iter()
                .map(|a| {
                    let (ip, port) = a.rsplit_once(':').expect("ip:port");
                    v1::Endpoint {
                        address: Some(v1::SocketAddress {
                            ip: ip.into(),
                            port: port.parse().expect("port"),
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
        })),
        ..Default::default()
    }
}

/// GET / with `Host: orders` through the outbound listener; returns status and body.
async fn get(outbound: SocketAddr) -> Result<(u16, String), String> {
    tokio::time::timeout(Duration::from_secs(10), get_once(outbound))
        .await
        .map_err(|_| "request timed out".to_string())?
}

async fn get_once(outbound: SocketAddr) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(outbound)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "orders")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls until the proxy routes `orders` to `want`, within a deadline.
async fn wait_for_body(outbound: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, body)) = get(outbound).await
            && body == want
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proxy never routed orders to {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn proxy_follows_control_plane_rejects_bad_updates_and_resyncs() {
    weft_proxy::install_crypto_provider();
    let (a1, a2, a3) = (app("app1").await, app("app2").await, app("app3").await);
    let cp = ScriptedControlPlane::default();
    cp.set("orders", update(1, &[&a1.to_string()]));

    let cp_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind cp");
    let cp_addr = cp_listener.local_addr().expect("cp addr");
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_control_plane(cp.clone(), cp_listener, stop.clone()));

    let config = Config::parse(
        &format!(
            "control_plane: http://{cp_addr}\noutbound: {{listen: 127.0.0.1:0}}\nadmin: {{listen: 127.0.0.1:0}}\n"
        ),
        "test",
    )
    .expect("config");
    let proxy = weft_proxy::proxy::start(config)
        .await
        .expect("proxy starts");
    let outbound = proxy.outbound.expect("outbound bound");

    // First use subscribes and waits for the answer instead of failing.
    assert_eq!(get(outbound).await, Ok((200, "app1".to_string())));

    // A new endpoint set is swapped in.
    cp.set("orders", update(2, &[&a2.to_string()]));
    wait_for_body(outbound, "app2").await;

    // A bad update is rejected whole and reported; the last good state serves on.
    let mut bad = update(3, &[&a3.to_string()]);
    if let Some(v1::service_update::Endpoints::Full(set)) = &mut bad.endpoints {
        set.endpoints[0].address = Some(v1::SocketAddress {
            ip: "not-an-ip".into(),
            port: 1,
        });
    }
    cp.set("orders", bad);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cp.nacks().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no NACK reached the control plane"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let nack = &cp.nacks()[0];
    assert_eq!(nack.version, 3);
    assert!(nack.error.contains("not-an-ip"), "{}", nack.error);
    assert_eq!(get(outbound).await, Ok((200, "app2".to_string())));
    let metrics = proxy.metrics.render();
    let text = String::from_utf8_lossy(&metrics);
    assert_eq!(
        metric(&text, "weft_discovery_updates_rejected_total"),
        Some(1.0)
    );

    // The control plane goes away: the proxy keeps serving its last good state.
    stop.cancel();
    cp.crash.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("control plane stops")
        .expect("server task");
    for _ in 0..20 {
        assert_eq!(get(outbound).await, Ok((200, "app2".to_string())));
    }

    // It comes back on the same address with a change made meanwhile: the proxy
    // reconnects and resynchronises.
    cp.set("orders", update(4, &[&a3.to_string()]));
    let cp = ScriptedControlPlane {
        crash: CancellationToken::new(),
        ..cp
    };
    let cp_listener = TcpListener::bind(cp_addr).await.expect("rebind cp");
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve_control_plane(cp.clone(), cp_listener, stop.clone()));
    wait_for_body(outbound, "app3").await;

    stop.cancel();
    cp.crash.cancel();
    let _ = server.await;
    proxy.shutdown_token().cancel();
    proxy.drain().await;
}
