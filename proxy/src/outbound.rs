//! Outbound: traffic from the local app to services in the mesh.
//!
//! A destination is found one of three ways: the request's authority (the app uses
//! the proxy as its `http_proxy`), a fixed service (an explicit upstream listener),
//! or the connection's original destination (transparent capture: iptables
//! redirected a connection the app opened to VIP:port). A captured connection to a
//! destination the mesh does not know is passed through untouched.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;

use crate::balance::{self, HashKey, hash_bytes};
use crate::breaker::{OutlierPolicy, Permit};
use crate::clock::{now_nanos, since};
use crate::detect::{Detected, detect};
use crate::endpoint::Endpoint;
use crate::gateway_config::GatewayEntry;
use crate::http::body::{ProxyBody, Recording, RequestBody, observed};
use crate::http::client_body::ClientBody;
use crate::http::convert::{to_http1, to_http2};
use crate::http::error::ProxyError;
use crate::http::error::{self, GRPC_STATUS, is_grpc};
use crate::http::forward::{BoxedRequest, Gate, Target, forward};
use crate::http::headers::{conflicting_host, is_upgrade};
use crate::http::pool::{Key, Pool, connect_to};
use crate::http::watch::InFlight;
use crate::http::{Dates, ServerLimits, authority_of, serve_handler};
use crate::identity::Alpn;
use crate::listener::Conn;
use crate::metrics::{Direction, Limit, Metrics, ServiceMetrics, TcpFailure};
use crate::observe::{Observer, Picked};
use crate::outcome::Outcome;
use crate::ports::PortSet;
use crate::replay::{MAX_REFUSED_RESENDS, RefusedResends, Replay, rebuild};
use crate::retry::RetryPolicy;
use crate::snapshot::lookup::{Dest, Lookup};
use crate::snapshot::{Protocol, Service};

mod routed;

/// How an outbound connection names where it wants to go.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// Each request's Host / absolute-form authority.
    Authority,
    /// Every request and byte goes to this service ("name" or "name.namespace").
    Service(Arc<str>),
    /// Where a captured connection was going: a service VIP:port, or an address
    /// outside the mesh.
    Original(SocketAddr),
    /// A gateway listener: each request's host, by the gateway's host table.
    Gateway(Arc<GatewayEntry>),
}

/// What an outbound proxy is built from.
pub(crate) struct OutboundInputs {
    pub(crate) lookup: Lookup,
    pub(crate) pool: Pool,
    pub(crate) metrics: Metrics,
    pub(crate) connect_timeout: Duration,
    pub(crate) detect_timeout: Duration,
    pub(crate) limits: ServerLimits,
    /// Original destination ports handled as opaque TCP without sniffing.
    pub(crate) opaque_ports: PortSet,
    pub(crate) observer: Observer,
}

pub(crate) struct Outbound {
    lookup: Lookup,
    pool: Pool,
    unknown: Arc<ServiceMetrics>,
    passthrough: prometheus::IntCounter,
    connect_timeout: Duration,
    detect_timeout: Duration,
    limits: ServerLimits,
    opaque_ports: PortSet,
    observer: Observer,
    /// What consistent hashing on the client identity hashes: this proxy's own
    /// SPIFFE ID, the identity it proves to every endpoint, when mTLS is on.
    client_identity: Option<u64>,
}

impl Outbound {
    pub(crate) fn new(inputs: OutboundInputs) -> Arc<Outbound> {
        let OutboundInputs {
            lookup,
            pool,
            metrics,
            connect_timeout,
            detect_timeout,
            limits,
            opaque_ports,
            observer,
        } = inputs;
        let client_identity = pool
            .identity()
            .map(|id| hash_bytes(id.spiffe_id().as_bytes()));
        Arc::new(Outbound {
            lookup,
            pool,
            unknown: metrics.service(Direction::Outbound, "unknown"),
            passthrough: metrics.passthrough(Direction::Outbound),
            connect_timeout,
            detect_timeout,
            limits,
            opaque_ports,
            observer,
            client_identity,
        })
    }

    async fn fixed_service(&self, dest: &Destination) -> Option<Arc<Service>> {
        match dest {
            Destination::Service(name) => {
                self.lookup.service(Dest::Name(Cow::Borrowed(name))).await
            }
            Destination::Original(addr) => self.lookup.service(Dest::Vip(*addr)).await,
            Destination::Authority | Destination::Gateway(_) => None,
        }
    }

    /// The consistent-hash key for a request or connection from `client` by the
    /// client's identity: the mTLS identity this proxy calls with, else (no mTLS)
    /// the client's address.
    fn client_key(&self, client: Option<IpAddr>) -> Option<u64> {
        self.client_identity.or_else(|| client.map(hash_ip))
    }

    /// A captured connection to an address the mesh does not know goes where the
    /// app sent it, byte for byte. The proxy's own connections are exempt from
    /// capture, so this cannot come back here, except to this very listener: that
    /// is refused rather than looped.
    async fn pass_through(&self, io: Conn, orig: SocketAddr) {
        let local = io.get_ref().local_addr().ok();
        if local.is_some_and(|l| l.port() == orig.port()) {
            tracing::debug!(%orig, "captured connection to the outbound port itself; closing");
            return;
        }
        self.passthrough.inc();
        crate::tcp::forward(io, orig, self.connect_timeout, None).await;
    }

    /// Handles one accepted connection.
    pub(crate) async fn serve_conn(self: Arc<Self>, io: Conn, dest: Destination) {
        let client = io.get_ref().peer_addr().ok().map(|a| a.ip());
        let svc = self.fixed_service(&dest).await;
        let port = match &dest {
            Destination::Original(orig) => orig.port(),
            _ => io.get_ref().local_addr().map_or(0, |a| a.port()),
        };
        if let Destination::Original(orig) = dest
            && svc.is_none()
        {
            return self.pass_through(io, orig).await;
        }
        // The service port the app asked for: the captured destination's, or for a
        // fixed upstream listener the service's one declared port.
        let service_port = match &dest {
            Destination::Original(_) => Some(port),
            _ => svc.as_ref().and_then(|s| s.sole_port()),
        };
        let hint = svc.map(|s| s.protocol(port));
        let declared_opaque = service_port.is_some_and(|p| self.opaque_ports.contains(p));
        let (detected, io) = if hint == Some(Protocol::Opaque) || declared_opaque {
            (
                Detected::Opaque,
                crate::io::PrefixedIo::new(Default::default(), io),
            )
        } else {
            match detect(io, self.detect_timeout).await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "outbound detection failed");
                    return;
                }
            }
        };
        match detected {
            Detected::Http1 | Detected::Http2 => {
                // The destination port's declared protocol: an HTTP/2 caller to an
                // HTTP/1.1-only app is sent on as HTTP/1.1 from here, an HTTP/1
                // caller to an HTTP/2-only (h2c) app as HTTP/2.
                self.serve_http(io, detected == Detected::Http2, hint, dest, client)
                    .await;
            }
            Detected::Tls | Detected::Opaque => {
                let Some(svc) = self.fixed_service(&dest).await else {
                    tracing::debug!("opaque outbound connection with no destination; closing");
                    return;
                };
                self.opaque(io, &svc, client).await;
            }
        }
    }

    /// Serves HTTP on a connection already known to carry it (`h2`: HTTP/2), to a
    /// destination port declared to speak `app`, when known.
    pub(crate) async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        h2: bool,
        app: Option<Protocol>,
        dest: Destination,
        client: Option<IpAddr>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let handler = move |mut req: Request<ClientBody>, in_flight: Option<InFlight>| {
            let this = this.clone();
            let dest = dest.clone();
            match app {
                Some(Protocol::Http1) => to_http1(&mut req),
                // A gRPC server speaks HTTP/2 only, whatever the request carries.
                Some(Protocol::Http2 | Protocol::Grpc) => to_http2(&mut req),
                _ => {}
            }
            let mut req = Box::new(req.map(|b| RequestBody::client(b, in_flight.as_ref())));
            async move {
                let grpc = is_grpc(req.headers());
                let obs = this.observer.begin(&mut req, None, None);
                let resp = pin!(this.handle(req, &dest, client)).await;
                let resp = error::for_client(grpc, resp);
                let resp = resp.map(|b| b.until_sent(in_flight));
                Ok::<_, Infallible>(observed(resp, obs))
            }
        };
        serve_handler(io, h2.then_some(Dates::Here), handler, &self.limits).await;
    }

    /// An opaque connection: balanced per connection; a failed connect feeds
    /// ejection and, with retries on, tries another endpoint.
    async fn opaque(&self, io: crate::io::PrefixedIo<Conn>, svc: &Service, client: Option<IpAddr>) {
        let key = match svc.hash_key() {
            Some(_) => self.client_key(client),
            None => None,
        };
        let timeout = svc.policy.timeouts.connect.unwrap_or(self.connect_timeout);
        let attempts = svc
            .policy
            .retry
            .as_ref()
            .map_or(1, |r| r.max_attempts.max(1));
        let mut skip = None;
        for _ in 0..attempts {
            let Some(idx) = svc.pick(key, skip) else {
                tracing::debug!(service = %svc.key(), "no endpoints for opaque connection");
                let reason = if skip.is_some() {
                    TcpFailure::ConnectFailure
                } else {
                    TcpFailure::NoEndpoints
                };
                svc.metrics.tcp_failed(reason);
                return;
            };
            let ep = &svc.endpoints[idx];
            let mut attempt = AttemptGuard::start(svc, ep, now_nanos());
            let endpoint = Key {
                addr: ep.addr,
                identity: ep.identity.clone(),
            };
            let identity = self.pool.identity().map(|i| &**i);
            match connect_to(&endpoint, timeout, identity, Alpn::Opaque).await {
                Ok(server) => {
                    attempt.finish(Outcome::Response {
                        status: 200,
                        grpc: None,
                    });
                    // The endpoint stays loaded (in flight) for the connection's life.
                    let _loaded = attempt;
                    // An endpoint with an identity is only ever reached over mTLS.
                    let metrics = svc.metrics.tcp(ep.identity.as_deref());
                    crate::tcp::splice_counted(io, server, ep.addr, &metrics).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(addr = %ep.addr, reason = e.reason(), "opaque connect failed");
                    attempt.finish(Outcome::NotSent);
                    skip = Some(idx);
                }
            }
        }
        svc.metrics.tcp_failed(TcpFailure::ConnectFailure);
    }

    /// Answers one request. This and the steps under it (`dispatch`, `send`,
    /// `attempt`) return async blocks: an async fn keeps each argument beside the
    /// local it is moved into (rust-lang/rust#62958), at every level of the
    /// request's future, which hyper moves whole.
    #[allow(clippy::manual_async_fn)]
    fn handle<'a>(
        &'a self,
        req: BoxedRequest,
        dest: &'a Destination,
        client: Option<IpAddr>,
    ) -> impl Future<Output = Response<ProxyBody>> {
        async move {
            // The request's one clock read on the way in: its latency, its pick and its
            // first attempt all start here.
            let start = now_nanos();
            if conflicting_host(req.headers()) {
                self.unknown
                    .proxy_error(ProxyError::MalformedRequest.reason());
                return ProxyError::MalformedRequest.response();
            }
            // A service named with a port (`http://shop:9090`) is reached on that port.
            let mut named_port = None;
            // The gateway's host table may be swapped meanwhile: its service name is
            // held here for the lookup.
            let gateway_service: Arc<str>;
            let want = match dest {
                Destination::Service(name) => Dest::Name(Cow::Borrowed(name)),
                Destination::Original(addr) => Dest::Vip(*addr),
                Destination::Authority => match authority_of(&req) {
                    Some((host, port)) => match host.parse::<IpAddr>() {
                        Ok(ip) => Dest::Vip(SocketAddr::new(ip, port)),
                        Err(_) => {
                            named_port = Some(port);
                            Dest::Name(Cow::Borrowed(host))
                        }
                    },
                    None => {
                        self.unknown.proxy_error(ProxyError::NoAuthority.reason());
                        return ProxyError::NoAuthority.response();
                    }
                },
                Destination::Gateway(entry) => match crate::routing::gateway_dest(entry, &req) {
                    Ok(name) => {
                        gateway_service = name;
                        Dest::Name(Cow::Borrowed(&*gateway_service))
                    }
                    Err(resp) => {
                        if let Some(reason) = resp.headers().get(error::WEFT_ERROR) {
                            self.unknown
                                .proxy_error(reason.to_str().unwrap_or("unknown"));
                        }
                        self.unknown.record(resp.status().as_u16(), since(start));
                        return *resp;
                    }
                },
            };
            let svc = pin!(self.lookup.service(want)).await;
            let Some(svc) = svc else {
                self.unknown
                    .proxy_error(ProxyError::UnknownService.reason());
                let resp = ProxyError::UnknownService.response();
                self.unknown.record(resp.status().as_u16(), since(start));
                return resp;
            };
            let svc = match named_port {
                Some(port) => svc.for_port(port).clone(),
                None => svc,
            };
            if !svc.routes.is_empty() {
                // Boxed: a service without routes keeps its request's future small.
                return Box::pin(self.handle_routed(svc, req, client, start)).await;
            }
            let plan = Plan::of(&svc);
            self.dispatch(&svc, req, client, start, &plan).await
        }
    }

    /// Sends a request to `svc` under `plan` and records its answer.
    #[allow(clippy::manual_async_fn)]
    fn dispatch<'a>(
        &'a self,
        svc: &'a Service,
        req: BoxedRequest,
        client: Option<IpAddr>,
        start: u64,
        plan: &'a Plan<'_>,
    ) -> impl Future<Output = Response<ProxyBody>> {
        async move {
            // The request timeout covers every attempt and backoff. Boxed when set, so
            // the untimed path does not lay the request's future out twice.
            let result = match plan.request_timeout {
                Some(t) => Box::pin(tokio::time::timeout(
                    t,
                    self.send(svc, req, client, start, plan.retry),
                ))
                .await
                .unwrap_or(Err(ProxyError::Timeout)),
                None => pin!(self.send(svc, req, client, start, plan.retry)).await,
            };
            let resp = result.unwrap_or_else(|e| {
                plan.metrics.proxy_error(e.reason());
                e.response()
            });
            plan.metrics.record(resp.status().as_u16(), since(start));
            resp
        }
    }
}

/// What a request is sent under: the service's policy, or a route's overrides.
struct Plan<'a> {
    request_timeout: Option<Duration>,
    retry: Option<&'a RetryPolicy>,
    /// Where its request and latency are counted.
    metrics: &'a ServiceMetrics,
}

impl<'a> Plan<'a> {
    fn of(svc: &'a Service) -> Plan<'a> {
        Plan {
            request_timeout: svc.policy.timeouts.request,
            retry: svc.policy.retry.as_ref(),
            metrics: &svc.metrics,
        }
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

impl Outbound {
    /// Admits a request to `svc` and sends it, retrying as the policy allows.
    #[allow(clippy::manual_async_fn)]
    fn send<'a>(
        &'a self,
        svc: &'a Service,
        mut req: BoxedRequest,
        client: Option<IpAddr>,
        start: u64,
        retry: Option<&'a RetryPolicy>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> {
        async move {
            let policy = &svc.policy;
            let active = &svc.stats.concurrency.active;
            let Some(active) = Permit::acquire(active.clone(), policy.limits.max_active_requests)
            else {
                svc.metrics.overloaded(Limit::Active);
                return Err(ProxyError::Overloaded);
            };
            let key = match svc.hash_key() {
                None => None,
                Some(HashKey::Header(name)) => {
                    req.headers().get(name).map(|v| hash_bytes(v.as_bytes()))
                }
                Some(HashKey::ClientIdentity) => self.client_key(client),
            };
            // Under a retry policy every request is kept for replay, whatever its
            // method: an HTTP/2 peer may refuse any request unprocessed.
            let retry = retry.filter(|_| !is_upgrade(req.headers()));
            let result = match retry {
                None => {
                    let idx = svc
                        .pick_at(key, None, start)
                        .ok_or(ProxyError::NoEndpoints)?;
                    // The request itself goes first; what a resend needs is kept beside
                    // it, only for a request the upstream may refuse unprocessed.
                    let kept = self
                        .may_be_refused(&req, &svc.endpoints[idx])
                        .then(|| RefusedResends::keep(&mut req));
                    let (result, outcome) = pin!(self.attempt(svc, idx, req, start, None)).await;
                    match kept {
                        // Boxed: the resend's state stays out of every request's future.
                        Some(kept) if outcome == Outcome::Refused => {
                            Box::pin(self.resend_refused(svc, key, idx, kept, result)).await
                        }
                        _ => result,
                    }
                }
                // Boxed: with retries on, the request carries its replay state and a
                // backoff timer; keeping that out of line keeps every other request's
                // future small.
                Some(retry) => Box::pin(self.send_retrying(svc, retry, key, req)).await,
            };
            result.map(|resp| resp.map(|body| body.holding(active)))
        }
    }

    /// Whether `req` to `ep` may travel as a stream of a shared HTTP/2 connection,
    /// the only kind an upstream can refuse unprocessed: an HTTP/2 request, or an
    /// HTTP/1 one to a peer proxy that may carry it (`orig_proto`).
    fn may_be_refused(&self, req: &BoxedRequest, ep: &Endpoint) -> bool {
        req.version() == Version::HTTP_2
            || (ep.identity.is_some() && self.pool.h2_orig() && !is_upgrade(req.headers()))
    }

    /// A request with no retry policy that the upstream refused unprocessed
    /// (`RefusedResends`): sent again, each time to an endpoint picked anew, until
    /// one is not refused or the resends are spent.
    async fn resend_refused(
        &self,
        svc: &Service,
        key: Option<u64>,
        mut idx: usize,
        mut kept: RefusedResends,
        refused: Result<Response<ProxyBody>, ProxyError>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let mut result = refused;
        while let Some(req) = kept.again() {
            svc.metrics.refused_resends.inc();
            let now = now_nanos();
            idx = svc
                .pick_at(key, Some(idx), now)
                .ok_or(ProxyError::NoEndpoints)?;
            let (again, outcome) = self.attempt(svc, idx, req, now, None).await;
            if outcome != Outcome::Refused {
                return again;
            }
            result = again;
        }
        result
    }

    async fn send_retrying(
        &self,
        svc: &Service,
        retry: &RetryPolicy,
        key: Option<u64>,
        req: BoxedRequest,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        svc.stats.budget.deposit();
        let (parts, body) = req.into_parts();
        // The mark goes with the body; it is dropped once the body is read whole.
        let (body, in_flight) = match body {
            RequestBody::Streaming { body, in_flight } => (body, in_flight),
            // Only a client's body is ever handed in here; anything else is sent once.
            other => {
                let idx = svc.pick(key, None).ok_or(ProxyError::NoEndpoints)?;
                let req = Box::new(Request::from_parts(parts, other));
                return self.attempt(svc, idx, req, now_nanos(), None).await.0;
            }
        };
        let replay = match replayable(body, retry.max_buffered_body_bytes).await? {
            Ok(bytes) => Replay::Buffered(bytes),
            Err(body) if body.size_hint().exact().is_none() => {
                // Unknown length (chunked, or HTTP/2 as gRPC sends it): stream it and
                // keep a copy; if it ends within the limit before a retry is needed,
                // it can be sent again.
                let recording = Recording::new(retry.max_buffered_body_bytes);
                let first = RequestBody::Recording {
                    body,
                    recording: recording.clone(),
                    in_flight,
                };
                return self
                    .send_with_retries(svc, retry, key, &parts, first, Replay::Recorded(recording))
                    .await;
            }
            Err(body) => {
                // Known to be over the limit: one attempt, streamed.
                let idx = svc.pick(key, None).ok_or(ProxyError::NoEndpoints)?;
                let body = RequestBody::Streaming { body, in_flight };
                let req = Box::new(Request::from_parts(parts, body));
                return self.attempt(svc, idx, req, now_nanos(), None).await.0;
            }
        };
        let first = replay
            .body()
            .unwrap_or_else(|| RequestBody::replay(Bytes::new()));
        self.send_with_retries(svc, retry, key, &parts, first, replay)
            .await
    }

    async fn send_with_retries(
        &self,
        svc: &Service,
        retry: &RetryPolicy,
        key: Option<u64>,
        parts: &Parts,
        first: RequestBody,
        replay: Replay,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let concurrency = &svc.stats.concurrency;
        let mut skip = None;
        let mut _retry_slot = None;
        let mut attempt = 1;
        let mut resends = 0;
        let mut body = first;
        loop {
            let now = now_nanos();
            let idx = svc.pick_at(key, skip, now).ok_or(ProxyError::NoEndpoints)?;
            let (result, outcome) = self
                .attempt(svc, idx, Box::new(rebuild(parts, body)), now, Some(retry))
                .await;
            let resend = outcome == Outcome::Refused && resends < MAX_REFUSED_RESENDS;
            if !resend
                && (attempt >= retry.max_attempts || !retry.should_retry(&parts.method, outcome))
            {
                return result;
            }
            // A streamed body that did not end within the limit cannot be sent again.
            let Some(again) = replay.body() else {
                return result;
            };
            body = again;
            skip = Some(idx);
            if resend {
                // The endpoint processed nothing: no failure to back off from or to
                // pay for with the retry budget, and no attempt spent.
                resends += 1;
                svc.metrics.refused_resends.inc();
                continue;
            }
            if _retry_slot.is_none() {
                match Permit::acquire(
                    &concurrency.retries,
                    svc.policy.limits.max_concurrent_retries,
                ) {
                    Some(slot) => _retry_slot = Some(slot),
                    None => {
                        svc.metrics.overloaded(Limit::Retries);
                        svc.metrics.retries_refused.inc();
                        return result;
                    }
                }
            }
            if !svc
                .stats
                .budget
                .try_withdraw(retry.budget_ratio, retry.min_retries_per_second)
            {
                svc.metrics.retries_refused.inc();
                return result;
            }
            // The failed response is dropped unread; nothing of it reached the client.
            drop(result);
            svc.metrics.retries.inc();
            tokio::time::sleep(retry.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// One attempt on one endpoint, with its outcome recorded for balancing and
    /// ejection, and returned for retrying under `retry`.
    #[allow(clippy::manual_async_fn)]
    fn attempt<'a>(
        &'a self,
        svc: &'a Service,
        idx: usize,
        req: BoxedRequest,
        now: u64,
        retry: Option<&'a RetryPolicy>,
    ) -> impl Future<Output = (Result<Response<ProxyBody>, ProxyError>, Outcome)> {
        async move {
            let ep = &svc.endpoints[idx];
            svc.metrics.attempted(ep.identity.is_some());
            let mut guard = AttemptGuard::start(svc, ep, now);
            let concurrency = &svc.stats.concurrency;
            let target = Target {
                started: now,
                addr: ep.addr,
                identity: ep.identity.clone(),
                connect_timeout: svc.policy.timeouts.connect.unwrap_or(self.connect_timeout),
                request_timeout: svc.policy.timeouts.per_try,
                idle_timeout: svc.policy.timeouts.idle,
                gate: Some(Gate {
                    connections: &svc.conn_limit,
                    pending: &concurrency.pending,
                    max_pending: svc.policy.limits.max_pending_requests,
                    metrics: &svc.metrics,
                }),
                leave_date: false,
            };
            let mut result = pin!(forward(&self.pool, req, &target)).await;
            self.observer.picked(&mut result, || Picked {
                service: svc.key(),
                endpoint: ep.addr,
                identity: ep.identity.clone(),
            });
            let outcome = match &result {
                Ok(resp) => Outcome::Response {
                    status: resp.status().as_u16(),
                    // Looked up only for a policy that reads it: most answers are not
                    // gRPC, and the lookup hashes the field's name every time.
                    grpc: reads_grpc(svc, retry)
                        .then(|| resp.headers().get(GRPC_STATUS))
                        .flatten()
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok()),
                },
                // Refused by a local limit (the endpoint was never tried), or the
                // client's own fault: nothing to blame on the endpoint or to retry.
                Err(
                    ProxyError::Overloaded | ProxyError::BadRequestBody | ProxyError::ClientAbort,
                ) => Outcome::Cancelled,
                Err(ProxyError::ConnectRefused | ProxyError::ConnectTimeout) => Outcome::NotSent,
                Err(ProxyError::Refused) => Outcome::Refused,
                Err(_) => Outcome::NoResponse,
            };
            guard.finish(outcome);
            (result, outcome)
        }
    }
}

/// Whether an attempt's outcome is judged by its gRPC status: by the service's
/// ejection or the retry policy in force.
fn reads_grpc(svc: &Service, retry: Option<&RetryPolicy>) -> bool {
    retry.is_some_and(RetryPolicy::reads_grpc)
        || svc
            .policy
            .outlier
            .as_ref()
            .is_some_and(OutlierPolicy::reads_grpc)
}

/// Tracks one attempt on an endpoint: in flight while it runs, latency and outcome
/// recorded when it ends. Dropped unfinished, the attempt was abandoned.
struct AttemptGuard<'a> {
    svc: &'a Service,
    ep: &'a Endpoint,
    probe: bool,
    /// The endpoint's count of responses at the start (`Health::answered`).
    answered: u32,
    /// `now_nanos()` at the start: the same clock `Load` keeps its stamps in, so
    /// `finish` reads the clock once for both the latency and the EWMA's stamp.
    start: u64,
    finished: bool,
}

impl<'a> AttemptGuard<'a> {
    /// An attempt that started at `now`, a `now_nanos()` reading.
    fn start(svc: &'a Service, ep: &'a Endpoint, now: u64) -> AttemptGuard<'a> {
        let probe = ep.stats.health.begin();
        ep.stats.load.start();
        AttemptGuard {
            svc,
            ep,
            probe,
            answered: ep.stats.health.answered(),
            start: now,
            finished: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut outcome = outcome;
        if outcome != Outcome::Cancelled {
            let decay = match &self.svc.policy.load_balancer {
                balance::Algorithm::P2cPeakEwma { decay, .. } => *decay,
                _ => balance::DEFAULT_DECAY,
            };
            let now = now_nanos();
            let mut rtt = Duration::from_nanos(now.saturating_sub(self.start));
            if outcome == Outcome::Abandoned {
                let silent = self.ep.stats.health.answered() == self.answered;
                outcome = Outcome::abandoned_after(rtt, silent);
            }
            if outcome.is_connect_failure() {
                // A refused connect is fast; counted as-is it would make a dead
                // endpoint look like the best one.
                rtt = rtt.max(balance::FAILURE_PENALTY);
            }
            self.ep.stats.load.observe(rtt, decay, now);
        }
        self.ep.stats.health.record(
            outcome,
            self.probe,
            self.svc.policy.outlier.as_ref(),
            self.svc.endpoints.iter().map(|e| &e.stats.health),
        );
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.finish(Outcome::Abandoned);
        self.ep.stats.load.end();
    }
}

/// The request body as bytes that can be sent again, if it is known to fit in
/// `limit`; otherwise the body back, untouched.
async fn replayable(
    body: ClientBody,
    limit: usize,
) -> Result<Result<Bytes, ClientBody>, ProxyError> {
    if body.is_end_stream() {
        return Ok(Ok(Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(n) if usize::try_from(n).is_ok_and(|n| n <= limit) => match body.collect().await {
            Ok(collected) => Ok(Ok(collected.to_bytes())),
            // The client's body broke off; there is nothing left to forward.
            Err(_) => Err(ProxyError::UpstreamReset),
        },
        _ => Ok(Err(body)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;
    use weft_api::mesh::MeshSpec;

    use super::*;
    use crate::endpoint::Registry;
    use crate::http::watch::Watch;
    use crate::identity::Identity;
    use crate::identity::metrics::IdentityMetrics;
    use crate::snapshot;

    /// An upstream answering every HTTP/1.1 request with `status`, keeping the
    /// connection open; returns its address and a count of requests answered.
    async fn upstream(status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            count.fetch_add(1, Ordering::SeqCst);
                            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, answered)
    }

    /// An outbound proxy whose snapshot holds service `a` with `policy` (YAML
    /// flow mapping) and these endpoints.
    fn outbound(policy: &str, endpoints: &[SocketAddr]) -> (Arc<Outbound>, Arc<Service>) {
        outbound_with(policy, endpoints, Pool::new(Duration::from_secs(60)))
    }

    fn outbound_with(
        policy: &str,
        endpoints: &[SocketAddr],
        pool: Pool,
    ) -> (Arc<Outbound>, Arc<Service>) {
        let eps: Vec<String> = endpoints
            .iter()
            .map(|a| format!("{{address: '{a}'}}"))
            .collect();
        let yaml = format!(
            "services:\n  - name: a\n    policy: {policy}\n    endpoints: [{}]\n",
            eps.join(", ")
        );
        outbound_for_mesh(&yaml, pool)
    }

    /// An outbound proxy whose snapshot is the mesh `yaml`, and its service `a`.
    fn outbound_for_mesh(yaml: &str, pool: Pool) -> (Arc<Outbound>, Arc<Service>) {
        let mesh = MeshSpec::from_yaml(yaml, "t").expect("valid mesh");
        let metrics = Metrics::new();
        let stats = Registry::default();
        let snap = snapshot::from_mesh(&mesh, 1, "default", &metrics, &stats).expect("snapshot");
        let svc = snap.by_host("a").expect("service a").clone();
        let ob = Outbound::new(OutboundInputs {
            lookup: Lookup::new(snapshot::store(snap), None, Duration::from_secs(1)),
            pool,
            metrics,
            connect_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_secs(5),
            limits: ServerLimits {
                conns: Watch::start(Duration::from_secs(10), CancellationToken::new()),
                max_header_bytes: 64 * 1024,
            },
            opaque_ports: PortSet::parse("").expect("empty port set"),
            observer: Observer::new(None, Direction::Outbound, None),
        });
        (ob, svc)
    }

    /// A bodiless GET sent through the retry loop, as `send_retrying` sends a
    /// buffered request.
    async fn get_retrying(ob: &Outbound, svc: &Service) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, ()) = Request::get("http://a/")
            .body(())
            .expect("request")
            .into_parts();
        let retry = svc.policy.retry.as_ref().expect("a retry policy");
        let first = RequestBody::replay(Bytes::new());
        ob.send_with_retries(
            svc,
            retry,
            None,
            &parts,
            first,
            Replay::Buffered(Bytes::new()),
        )
        .await
    }

    #[tokio::test]
    async fn a_service_named_with_one_of_its_ports_is_reached_on_that_port() {
        let (web, web_seen) = upstream(200).await;
        let (admin, admin_seen) = upstream(200).await;
        let yaml = format!(
            "services:\n  - name: a\n    ports: [{{port: 80}}, {{port: 9090, endpoints: [{{address: '{admin}'}}]}}]\n    endpoints: [{{address: '{web}'}}]\n"
        );
        let (ob, _) = outbound_for_mesh(&yaml, Pool::new(Duration::from_secs(60)));
        for (uri, seen) in [
            ("http://a:9090/", &admin_seen),
            ("http://a/", &web_seen),
            ("http://a:80/", &web_seen),
        ] {
            let before = seen.load(Ordering::SeqCst);
            let req = Request::get(uri)
                .body(RequestBody::replay(Bytes::new()))
                .expect("request");
            let resp = ob
                .handle(Box::new(req), &Destination::Authority, None)
                .await;
            assert_eq!(resp.status(), 200, "{uri}");
            assert_eq!(seen.load(Ordering::SeqCst), before + 1, "{uri}");
        }
        assert_eq!(admin_seen.load(Ordering::SeqCst), 1);
    }

    const RETRY_3: &str = "{retry: {max_attempts: 3, backoff_base: 1ms, backoff_max: 2ms}}";

    #[tokio::test]
    async fn every_attempt_fails_then_the_last_answer_is_returned() {
        let (one, one_seen) = upstream(503).await;
        let (two, two_seen) = upstream(503).await;
        let (ob, svc) = outbound(RETRY_3, &[one, two]);
        let resp = get_retrying(&ob, &svc).await.expect("an answer");
        assert_eq!(resp.status(), 503);
        let (a, b) = (
            one_seen.load(Ordering::SeqCst),
            two_seen.load(Ordering::SeqCst),
        );
        assert_eq!(a + b, 3, "max_attempts attempts");
        assert!(
            a >= 1 && b >= 1,
            "a retry moves away from the endpoint that failed"
        );
        assert_eq!(svc.metrics.retries.get(), 2);
    }

    #[tokio::test]
    async fn a_retry_on_another_endpoint_returns_its_answer() {
        let (bad, bad_seen) = upstream(503).await;
        let (good, good_seen) = upstream(200).await;
        let (ob, svc) = outbound(RETRY_3, &[bad, good]);
        let resp = get_retrying(&ob, &svc).await.expect("an answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(good_seen.load(Ordering::SeqCst), 1);
        let bad_tries = bad_seen.load(Ordering::SeqCst);
        assert!(bad_tries <= 1, "never back to the endpoint that failed");
        assert_eq!(svc.metrics.retries.get(), bad_tries as u64);
    }

    #[tokio::test]
    async fn the_concurrent_retry_limit_refuses_a_retry() {
        let (bad, bad_seen) = upstream(503).await;
        let (ob, svc) = outbound(
            "{retry: {max_attempts: 3, backoff_base: 1ms}, circuit_breaker: {max_concurrent_retries: 1}}",
            &[bad],
        );
        // Another request's retry holds the one unit.
        let held = Permit::acquire(&svc.stats.concurrency.retries, 1).expect("the unit");
        let resp = get_retrying(&ob, &svc).await.expect("an answer");
        assert_eq!(resp.status(), 503, "the first answer, not retried");
        assert_eq!(bad_seen.load(Ordering::SeqCst), 1);
        assert_eq!(svc.metrics.retries.get(), 0);
        assert_eq!(svc.metrics.retries_refused.get(), 1);
        drop(held);
        assert_eq!(svc.stats.concurrency.retries.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_attempt_refused_by_a_local_limit_is_not_retried() {
        let (up, seen) = upstream(200).await;
        let (ob, svc) = outbound(
            "{retry: {max_attempts: 3, backoff_base: 1ms}, circuit_breaker: {max_connections: 1}}",
            &[up],
        );
        // The service's one connection is taken.
        let held = svc.conn_limit.acquire().expect("the one connection");
        let result = get_retrying(&ob, &svc).await;
        assert!(matches!(result, Err(ProxyError::Overloaded)));
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        assert_eq!(svc.metrics.retries.get(), 0);
        let health = &svc.endpoints[0].stats.health;
        assert_eq!(
            health.consecutive_failures(),
            0,
            "not the endpoint's failure"
        );
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_attempt_counts_its_wait_as_latency_and_a_long_silent_one_ejects() {
        let (ob, svc) = outbound(
            "{circuit_breaker: {outlier_detection: {consecutive_failures: 2}}}",
            &["127.0.0.1:1".parse().expect("addr")],
        );
        drop(ob);
        let ep = &svc.endpoints[0];
        let guard = AttemptGuard::start(&svc, ep, now_nanos());
        assert_eq!(ep.stats.load.in_flight(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        drop(guard);
        assert_eq!(ep.stats.load.in_flight(), 0);
        assert_eq!(
            ep.stats.health.consecutive_failures(),
            0,
            "a caller's impatience is not the endpoint's failure"
        );
        let load = serde_json::to_value(&ep.stats.load).expect("load as JSON");
        assert_eq!(load["ewma_ms"].as_f64(), Some(200.0), "{load}");

        let guard = AttemptGuard::start(&svc, ep, now_nanos());
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(guard);
        assert!(
            ep.stats.health.is_ejected(),
            "two seconds without an answer to anyone: a stopped endpoint"
        );
        let load = serde_json::to_value(&ep.stats.load).expect("load as JSON");
        assert_eq!(load["ewma_ms"].as_f64(), Some(2000.0), "{load}");
    }

    #[tokio::test]
    async fn a_failed_attempt_is_recorded_once_with_the_failure_penalty() {
        let (ob, svc) = outbound(
            "{circuit_breaker: {outlier_detection: {consecutive_failures: 1}}}",
            &["127.0.0.1:1".parse().expect("addr")],
        );
        drop(ob);
        let ep = &svc.endpoints[0];
        let mut guard = AttemptGuard::start(&svc, ep, now_nanos());
        guard.finish(Outcome::NotSent);
        guard.finish(Outcome::NotSent);
        drop(guard);
        assert!(ep.stats.health.is_ejected());
        assert_eq!(svc.metrics.ejections.get(), 1, "recorded once");
        assert_eq!(ep.stats.load.in_flight(), 0);
        let load = serde_json::to_value(&ep.stats.load).expect("load as JSON");
        let ewma_ms = load["ewma_ms"].as_f64().expect("a latency sample");
        assert!(
            ewma_ms >= 1000.0,
            "a fast refusal counts as slow: {ewma_ms}"
        );
    }

    #[tokio::test]
    async fn client_identity_hashes_the_mtls_identity_when_there_is_one() {
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let (plain, _) = outbound("{}", &[]);
        assert_eq!(plain.client_key(Some(a)), Some(hash_ip(a)));
        assert_ne!(plain.client_key(Some(a)), plain.client_key(Some(b)));

        let id = "spiffe://weft.local/ns/default/sa/web";
        let identity = Identity::new(
            weft_api::spiffe::SpiffeId::parse(id).expect("a SPIFFE ID"),
            Default::default(),
            IdentityMetrics::new(&prometheus::Registry::new()),
        );
        let pool = Pool::with_identity(Duration::from_secs(60), Some(identity));
        let (mtls, _) = outbound_with("{}", &[], pool);
        let key = Some(hash_bytes(id.as_bytes()));
        assert_eq!(mtls.client_key(Some(a)), key);
        assert_eq!(
            mtls.client_key(Some(b)),
            key,
            "every caller here is the same workload"
        );
        assert_eq!(mtls.client_key(None), key);
    }
}
