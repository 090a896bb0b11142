//! Inbound: traffic from the mesh to the local app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, Version};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::clock::{now_nanos, since};
use crate::detect::{Detected, detect};
use crate::http::body::{ProxyBody, RequestBody, observed};
use crate::http::client_body::ClientBody;
use crate::http::convert::{to_http1, to_http2};
use crate::http::error::{self, ProxyError, is_grpc};
use crate::http::forward::{BoxedRequest, Target, forward};
use crate::http::headers::conflicting_host;
use crate::http::orig_proto;
use crate::http::pool::Pool;
use crate::http::watch::InFlight;
use crate::http::{Dates, ServerLimits, serve_handler};
use crate::identity::{Alpn, H2Orig, HandshakeFailure, Identity, negotiated, negotiated_h2_orig};
use crate::inbound_policy::{AppHttp, TlsMode};
use crate::io::PrefixedIo;
use crate::listener::Conn;
use crate::metrics::{Direction, ServiceMetrics, TcpFailure};
use crate::observe::Observer;
use crate::ports::PortSet;
use crate::replay::RefusedResends;
use weft_api::spiffe::SpiffeId;

/// Set by the inbound proxy to the caller's verified identity; anything a client
/// sends under this name is a forgery and is dropped.
pub(crate) const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("weft-client-id");

pub(crate) struct Inbound {
    /// A fixed app address; None under transparent capture, where each connection
    /// goes to the port it was originally sent to.
    app: Option<SocketAddr>,
    pool: Pool,
    metrics: Arc<ServiceMetrics>,
    connect_timeout: Duration,
    detect_timeout: Duration,
    limits: ServerLimits,
    identity: Option<Arc<Identity>>,
    /// App ports whose bytes are never parsed, whatever they look like.
    opaque_ports: PortSet,
    /// App ports that speak HTTP/1.1 only.
    http1_ports: PortSet,
    /// App ports that speak HTTP/2 only (h2c).
    http2_ports: PortSet,
    observer: Observer,
}

/// What the inbound knows about the caller of one connection.
struct Peer {
    /// Whether the inbound policy admitted the caller when the connection opened;
    /// refused TCP is closed. HTTP requests are checked again each, against the
    /// policy in force, so a policy change applies to open connections too.
    allowed: bool,
    /// The verified caller, and the port whose policy applies.
    id: Option<(SpiffeId, Arc<str>)>,
    port: u16,
    /// Where the local app listens for this connection.
    app: SocketAddr,
    /// The verified SPIFFE ID, as the `weft-client-id` value.
    header: Option<HeaderValue>,
    requests: Option<IntCounter>,
    /// A peer proxy on an `Alpn::H2Orig` connection of this version: its
    /// carried requests were HTTP/1 and go to the app as HTTP/1.1 again.
    h2_orig: Option<H2Orig>,
    /// What the mesh declares the app port to speak (inbound policy).
    declared: Option<AppHttp>,
}

impl Peer {
    /// Identity is off: nothing is known and nothing is checked.
    fn unchecked(app: SocketAddr) -> Peer {
        Peer {
            allowed: true,
            id: None,
            port: 0,
            app,
            header: None,
            requests: None,
            h2_orig: None,
            declared: None,
        }
    }
}

/// What an inbound proxy is built from.
pub(crate) struct InboundInputs {
    /// A fixed app address; None under transparent capture.
    pub(crate) app: Option<SocketAddr>,
    pub(crate) pool: Pool,
    /// Handles for the workload's inbound requests.
    pub(crate) metrics: Arc<ServiceMetrics>,
    pub(crate) connect_timeout: Duration,
    pub(crate) detect_timeout: Duration,
    pub(crate) limits: ServerLimits,
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) opaque_ports: PortSet,
    pub(crate) http1_ports: PortSet,
    pub(crate) http2_ports: PortSet,
    pub(crate) observer: Observer,
}

impl Inbound {
    pub(crate) fn new(inputs: InboundInputs) -> Arc<Inbound> {
        let InboundInputs {
            app,
            pool,
            metrics,
            connect_timeout,
            detect_timeout,
            limits,
            identity,
            opaque_ports,
            http1_ports,
            http2_ports,
            observer,
        } = inputs;
        Arc::new(Inbound {
            app,
            pool,
            metrics,
            connect_timeout,
            detect_timeout,
            limits,
            identity,
            opaque_ports,
            http1_ports,
            http2_ports,
            observer,
        })
    }

    pub(crate) async fn serve_conn(self: Arc<Self>, io: Conn) {
        let Some(app) = self
            .app
            .or_else(|| crate::capture::orig_dst::inbound_app(io.get_ref()))
        else {
            tracing::debug!("inbound connection with no app port to deliver to; closing");
            return;
        };
        // The port whose policy applies: the app's port as the caller dialled it
        // (the original destination under capture), else this listener's port.
        let port = match self.app {
            Some(_) => io.get_ref().local_addr().map_or(0, |a| a.port()),
            None => app.port(),
        };
        let declared_opaque = self.opaque_ports.contains(app.port());
        if declared_opaque && self.identity.is_none() {
            let io = PrefixedIo::new(Default::default(), io);
            return self
                .serve_detected(Detected::Opaque, io, Peer::unchecked(app))
                .await;
        }
        // With identity on, even a declared-opaque port is sniffed, only to tell a
        // peer proxy's mTLS from plaintext; what follows is never parsed as HTTP.
        let (detected, io) = match detect(io, self.detect_timeout).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "inbound detection failed");
                return;
            }
        };
        let Some(identity) = self.identity.clone() else {
            return self
                .serve_detected(detected, io, Peer::unchecked(app))
                .await;
        };
        let policy = identity.inbound.load_full();
        let port_policy = policy.for_port(port);
        if detected == Detected::Tls {
            let (tls, id, id_str) = match identity.accept(io).await {
                Ok(accepted) => accepted,
                Err(failure) => {
                    tracing::debug!(reason = failure.reason(), "inbound mTLS handshake failed");
                    return;
                }
            };
            let alpn = negotiated(&tls);
            let peer = Peer {
                allowed: port_policy.authorization.allows(Some(&id), Some(&id_str)),
                header: HeaderValue::from_str(&id_str).ok(),
                requests: Some(identity.metrics.peer_requests(Some(&id_str))),
                id: Some((id, id_str)),
                port,
                app,
                h2_orig: negotiated_h2_orig(&tls),
                declared: policy.app_http(app.port()),
            };
            if !peer.allowed {
                tracing::debug!(port, "caller denied by inbound policy");
            }
            // The calling proxy's ALPN already says what follows; only without one
            // is the tunnel's content sniffed.
            let decided = match alpn {
                Some(Alpn::Opaque) => Some(Detected::Opaque),
                _ if declared_opaque => Some(Detected::Opaque),
                Some(Alpn::Http2 | Alpn::H2Orig) => Some(Detected::Http2),
                Some(Alpn::Http1) => Some(Detected::Http1),
                None => None,
            };
            match decided {
                Some(detected) => {
                    let io = PrefixedIo::new(Default::default(), tls);
                    self.serve_detected(detected, io, peer).await
                }
                None => match detect(tls, self.detect_timeout).await {
                    // Inside the tunnel, "TLS" is the app's own TLS: opaque to us.
                    Ok((inner, io)) => self.serve_detected(inner, io, peer).await,
                    Err(e) => tracing::debug!(error = %e, "detection inside mTLS failed"),
                },
            }
        } else if port_policy.mode == TlsMode::Permissive {
            let peer = Peer {
                allowed: port_policy.authorization.allows(None, None),
                id: None,
                port,
                app,
                header: None,
                requests: Some(identity.metrics.peer_requests(None)),
                h2_orig: None,
                declared: policy.app_http(app.port()),
            };
            let detected = if declared_opaque {
                Detected::Opaque
            } else {
                detected
            };
            self.serve_detected(detected, io, peer).await
        } else {
            identity
                .metrics
                .handshake(Direction::Inbound, Some(&HandshakeFailure::Plaintext));
            tracing::debug!(port, "plaintext refused in strict mode");
        }
    }

    async fn serve_detected<I>(self: Arc<Self>, detected: Detected, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match detected {
            Detected::Http1 | Detected::Http2 => {
                let this = self.clone();
                // The proxy's own lists (the pod's annotations) first, then the mesh.
                let app_port = peer.app.port();
                let app_http = if self.http1_ports.contains(app_port) {
                    Some(AppHttp::Http1)
                } else if self.http2_ports.contains(app_port) {
                    Some(AppHttp::Http2)
                } else {
                    peer.declared
                };
                let h2 = (detected == Detected::Http2).then_some(if peer.h2_orig.is_some() {
                    Dates::Peer
                } else {
                    Dates::Here
                });
                let peer = Arc::new(peer);
                let handler = move |mut req: Request<ClientBody>, in_flight: Option<InFlight>| {
                    let this = this.clone();
                    let peer = peer.clone();
                    // A carried HTTP/1 request is HTTP/1.1 again first, so an h2c app
                    // gets it as any HTTP/1 caller's: Host as the authority.
                    let orig = orig_proto::to_h1(&mut req, peer.h2_orig);
                    match app_http {
                        Some(AppHttp::Http1) if !orig => to_http1(&mut req),
                        Some(AppHttp::Http2) => to_http2(&mut req),
                        _ => {}
                    }
                    let mut req = Box::new(req.map(|b| RequestBody::client(b, in_flight.as_ref())));
                    async move {
                        let grpc = is_grpc(req.headers());
                        let caller = peer.id.as_ref().map(|(_, id)| &**id);
                        let obs = this.observer.begin(&mut req, caller, Some(peer.app));
                        let mut resp = pin!(this.handle(req, &peer)).await;
                        // Each step runs only when it has work to do: passing the
                        // answer through one that returns it as it is still copies it.
                        if error::changed_for_client(grpc, &resp) {
                            resp = error::for_client(grpc, resp);
                        }
                        if orig {
                            orig_proto::mark_response(&mut resp);
                        }
                        // An HTTP/2 request has no in-flight mark to hand on.
                        if in_flight.is_some() {
                            resp = resp.map(|b| b.until_sent(in_flight));
                        }
                        if obs.is_some() {
                            resp = observed(resp, obs);
                        }
                        Ok::<_, Infallible>(resp)
                    }
                };
                serve_handler(io, h2, handler, &self.limits).await;
            }
            Detected::Tls | Detected::Opaque => {
                if !peer.allowed {
                    self.metrics.tcp_failed(TcpFailure::Forbidden);
                    return;
                }
                let peer_id = peer.id.as_ref().map(|(_, id)| &**id);
                let metrics = self.metrics.tcp(peer_id);
                if !crate::tcp::forward(io, peer.app, self.connect_timeout, Some(&metrics)).await {
                    self.metrics.tcp_failed(TcpFailure::ConnectFailure);
                }
            }
        }
    }

    async fn handle(&self, mut req: BoxedRequest, peer: &Peer) -> Response<ProxyBody> {
        let start = now_nanos();
        if conflicting_host(req.headers()) {
            self.metrics
                .proxy_error(ProxyError::MalformedRequest.reason());
            return ProxyError::MalformedRequest.response();
        }
        if let Some(requests) = &peer.requests {
            requests.inc();
        }
        let allowed = match &self.identity {
            None => true,
            Some(identity) => {
                let (id, id_str) = match &peer.id {
                    Some((id, s)) => (Some(id), Some(&**s)),
                    None => (None, None),
                };
                identity
                    .inbound
                    .load()
                    .for_port(peer.port)
                    .authorization
                    .allows(id, id_str)
            }
        };
        if !allowed {
            let resp = ProxyError::Forbidden.response();
            self.metrics.proxy_error(ProxyError::Forbidden.reason());
            self.metrics.record(resp.status().as_u16(), since(start));
            return resp;
        }
        // A caller's own field of this name never reaches the app: replaced by the
        // verified identity (insert drops every earlier value), or removed.
        match &peer.header {
            Some(id) => req.headers_mut().insert(CLIENT_ID_HEADER, id.clone()),
            None => req.headers_mut().remove(CLIENT_ID_HEADER),
        };
        let target = Target {
            started: start,
            addr: peer.app,
            identity: None,
            connect_timeout: self.connect_timeout,
            request_timeout: None,
            idle_timeout: None,
            gate: None,
            leave_date: peer.h2_orig.is_some(),
        };
        // Only an HTTP/2 request can be refused unprocessed: the inbound never
        // carries HTTP/1 to the app on a stream. Boxed: a copy of the head would
        // otherwise take its room in every request's future, HTTP/1 ones too.
        let kept =
            (req.version() == Version::HTTP_2).then(|| Box::new(RefusedResends::keep(&mut req)));
        let result = pin!(forward(&self.pool, req, &target)).await;
        let result = match kept {
            // Boxed: the resend's state stays out of every request's future.
            Some(kept) if matches!(result, Err(ProxyError::Refused)) => {
                Box::pin(self.resend_refused(kept, result, &target)).await
            }
            _ => result,
        };
        let resp = result.unwrap_or_else(|e| {
            self.metrics.proxy_error(e.reason());
            e.response()
        });
        self.metrics.record(resp.status().as_u16(), since(start));
        resp
    }

    /// Sends a request the app refused unprocessed again (as the outbound does to an
    /// endpoint): an h2c app shedding load or going away must not turn into an error
    /// for a caller whose request it never started.
    async fn resend_refused(
        &self,
        mut kept: Box<RefusedResends>,
        refused: Result<Response<ProxyBody>, ProxyError>,
        target: &Target<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut result = refused;
        while let Some(req) = kept.again() {
            self.metrics.refused_resends.inc();
            result = pin!(forward(&self.pool, req, target)).await;
            if !matches!(result, Err(ProxyError::Refused)) {
                break;
            }
        }
        result
    }
}
