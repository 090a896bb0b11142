//! What the proxy tells about each request besides its metrics: the access log and
//! trace spans (with W3C trace context passed on).
//!
//! The request path touches this in one place per direction: [`Observer::begin`]
//! where a request enters, which is a single branch when nothing is on, and the
//! [`Observation`] it returns rides on the response body until the body has been
//! sent (or dropped), when it is reported. Reporting never waits: lines go to a
//! bounded queue that a writer thread drains.

pub(crate) mod access_log;
pub(crate) mod otlp;
pub(crate) mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderName, Request, Response};

use crate::metrics::{Direction, Metrics};
use crate::observe_config::AccessLogConfig;
use access_log::{AccessLog, Entry};
use trace::{SpanRecord, TraceContext, Tracer};

/// The request's `weft-error` answer header, as the proxy sets it.
const WEFT_ERROR: &str = "weft-error";

/// Where observations go; shared by every listener.
pub(crate) struct Sinks {
    access_log: Option<AccessLog>,
    tracer: Option<Tracer>,
}

impl Sinks {
    /// Starts what is turned on; `None` when nothing is. `tracer` is the started
    /// exporter, if tracing is on.
    pub(crate) fn start(
        access_log: Option<&AccessLogConfig>,
        tracer: Option<Tracer>,
        metrics: &Metrics,
    ) -> std::io::Result<Option<Arc<Sinks>>> {
        if access_log.is_none() && tracer.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Sinks {
            access_log: access_log
                .map(|c| AccessLog::start(c, metrics))
                .transpose()?,
            tracer,
        })))
    }
}

/// One direction's hook: knows the sinks and, inbound, the local workload.
#[derive(Clone)]
pub(crate) struct Observer {
    sinks: Option<Arc<Sinks>>,
    direction: Direction,
    /// The service every request of this direction belongs to (inbound: the
    /// workload); outbound the answering attempt names it.
    service: Option<Arc<str>>,
}

impl Observer {
    pub(crate) fn new(
        sinks: Option<Arc<Sinks>>,
        direction: Direction,
        service: Option<&str>,
    ) -> Observer {
        Observer {
            sinks,
            direction,
            service: service.map(Arc::from),
        }
    }

    pub(crate) fn is_on(&self) -> bool {
        self.sinks.is_some()
    }

    /// Starts observing a request that just arrived; `None` (and no work) when
    /// nothing is on. With tracing on, the request's `traceparent` is replaced by
    /// this hop's. `peer` is the caller's verified identity, `endpoint` where the
    /// request goes when the direction alone decides it (inbound: the app).
    #[inline]
    pub(crate) fn begin<B>(
        &self,
        req: &mut Request<B>,
        peer: Option<&str>,
        endpoint: Option<SocketAddr>,
    ) -> Option<Box<Observation>> {
        let sinks = self.sinks.as_ref()?;
        Some(Box::new(Observation::new(
            sinks.clone(),
            self,
            req,
            peer,
            endpoint,
        )))
    }

    /// Names, on the response of the attempt that answered, the service and
    /// endpoint it went to; only while observing, so it costs nothing otherwise.
    pub(crate) fn picked<B, E>(
        &self,
        result: &mut Result<Response<B>, E>,
        what: impl FnOnce() -> Picked,
    ) {
        if let (true, Ok(resp)) = (self.is_on(), result) {
            resp.extensions_mut().insert(what());
        }
    }
}

/// The service and endpoint an outbound request was answered by.
#[derive(Debug, Clone)]
pub(crate) struct Picked {
    pub(crate) service: String,
    pub(crate) endpoint: SocketAddr,
    /// The SPIFFE ID the endpoint proved (mTLS), the outbound's peer.
    pub(crate) identity: Option<Arc<str>>,
}

/// The route that handled a request, on its response (outbound, when the
/// service has routes), for the access log.
#[derive(Debug, Clone)]
pub(crate) struct RouteName(pub(crate) Arc<str>);

/// One request being observed. Dropped when its response has been sent or given
/// up on; dropping it reports it.
pub(crate) struct Observation {
    sinks: Arc<Sinks>,
    started: Instant,
    entry: Entry,
    /// This hop's span, when tracing is on.
    trace: Option<TraceContext>,
}

impl Observation {
    fn new<B>(
        sinks: Arc<Sinks>,
        observer: &Observer,
        req: &mut Request<B>,
        peer: Option<&str>,
        endpoint: Option<SocketAddr>,
    ) -> Observation {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| header(req.headers(), http::header::HOST.as_str()));
        let trace = sinks.tracer.as_ref().map(|t| {
            let context = TraceContext::continue_or_start(req.headers(), t.ratio);
            req.headers_mut().insert(
                HeaderName::from_static(trace::TRACEPARENT),
                context.header(),
            );
            context
        });
        let trace_id = match &trace {
            Some(c) => Some(trace::hex(&c.trace_id)),
            None => trace_id(req.headers()),
        };
        Observation {
            sinks,
            trace,
            started: Instant::now(),
            entry: Entry {
                time: SystemTime::now(),
                direction: observer.direction.label(),
                service: observer.service.as_deref().map(str::to_string),
                route: None,
                endpoint,
                peer_identity: peer.map(str::to_string),
                method: req.method().as_str().to_string(),
                authority,
                path: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
                status: 0,
                duration_ms: 0.0,
                bytes: 0,
                weft_error: None,
                trace_id,
            },
        }
    }

    /// The response head: status, the proxy's own error, the endpoint it came from.
    pub(crate) fn head<B>(&mut self, resp: &Response<B>) {
        let e = &mut self.entry;
        e.status = resp.status().as_u16();
        e.weft_error = header(resp.headers(), WEFT_ERROR);
        if let Some(route) = resp.extensions().get::<RouteName>() {
            e.route = Some(route.0.to_string());
        }
        if let Some(picked) = resp.extensions().get::<Picked>() {
            e.service.get_or_insert_with(|| picked.service.clone());
            e.endpoint = Some(picked.endpoint);
            if e.peer_identity.is_none() {
                e.peer_identity = picked.identity.as_deref().map(str::to_string);
            }
        }
    }

    /// Counts response body bytes sent to the client.
    pub(crate) fn sent(&mut self, bytes: u64) {
        self.entry.bytes += bytes;
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.entry.duration_ms = elapsed.as_secs_f64() * 1e3;
        if let (Some(tracer), Some(context)) = (&self.sinks.tracer, self.trace)
            && context.sampled
        {
            tracer.send(self.span(context, elapsed));
        }
        if let Some(log) = &self.sinks.access_log {
            log.send(std::mem::take(&mut self.entry));
        }
    }
}

impl Observation {
    /// This hop as a span: client span outbound, server span inbound.
    fn span(&self, context: TraceContext, elapsed: std::time::Duration) -> SpanRecord {
        use otlp::{int, string};
        let e = &self.entry;
        let client = e.direction == Direction::Outbound.label();
        let target = e
            .service
            .as_deref()
            .or(e.authority.as_deref())
            .unwrap_or("-");
        let mut attributes = vec![
            string("http.request.method", e.method.clone()),
            string("url.path", e.path.clone()),
            int("http.response.status_code", i64::from(e.status)),
            string("weft.direction", e.direction),
        ];
        let optional = [
            ("server.address", e.authority.as_ref()),
            ("weft.service", e.service.as_ref()),
            ("http.route", e.route.as_ref()),
            ("weft.peer_identity", e.peer_identity.as_ref()),
            ("weft.error", e.weft_error.as_ref()),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                attributes.push(string(key, v.clone()));
            }
        }
        if let Some(endpoint) = e.endpoint {
            attributes.push(string("weft.endpoint", endpoint.to_string()));
        }
        SpanRecord {
            context,
            client,
            name: format!("{} {target}", e.method),
            start: e.time,
            end: e.time + elapsed,
            attributes,
            error: (e.status >= 500 || e.status == 0).then(|| {
                e.weft_error
                    .clone()
                    .unwrap_or_else(|| format!("status {}", e.status))
            }),
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if the
/// request carries a valid one.
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let valid = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    valid.then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("traceparent", v.parse().expect("header value"));
            trace_id(&h)
        };
        assert_eq!(
            with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            with("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(with("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(&HeaderMap::new()), None);
    }
}
