//! What the proxy tells about each request besides its metrics: the access log.
//!
//! The request path touches this in one place per direction: [`Observer::begin`]
//! where a request enters, which is a single branch when nothing is on, and the
//! [`Observation`] it returns rides on the response body until the body has been
//! sent (or dropped), when it is reported. Reporting never waits: lines go to a
//! bounded queue that a writer thread drains.

pub(crate) mod access_log;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Request, Response};

use crate::metrics::{Direction, Metrics};
use crate::observe_config::AccessLogConfig;
use access_log::{AccessLog, Entry};

/// The request's `weft-error` answer header, as the proxy sets it.
const WEFT_ERROR: &str = "weft-error";

/// Where observations go; shared by every listener.
pub(crate) struct Sinks {
    access_log: Option<AccessLog>,
}

impl Sinks {
    /// Starts what the config turns on; `None` when nothing is.
    pub(crate) fn start(
        access_log: Option<&AccessLogConfig>,
        metrics: &Metrics,
    ) -> std::io::Result<Option<Arc<Sinks>>> {
        let Some(config) = access_log else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Sinks {
            access_log: Some(AccessLog::start(config, metrics)?),
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
    /// nothing is on. `peer` is the caller's verified identity, `endpoint` where
    /// the request goes when the direction alone decides it (inbound: the app).
    #[inline]
    pub(crate) fn begin<B>(
        &self,
        req: &Request<B>,
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

/// One request being observed. Dropped when its response has been sent or given
/// up on; dropping it reports it.
pub(crate) struct Observation {
    sinks: Arc<Sinks>,
    started: Instant,
    entry: Entry,
}

impl Observation {
    fn new<B>(
        sinks: Arc<Sinks>,
        observer: &Observer,
        req: &Request<B>,
        peer: Option<&str>,
        endpoint: Option<SocketAddr>,
    ) -> Observation {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| header(req.headers(), http::header::HOST.as_str()));
        Observation {
            sinks,
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
                trace_id: trace_id(req.headers()),
            },
        }
    }

    /// The response head: status, the proxy's own error, the endpoint it came from.
    pub(crate) fn head<B>(&mut self, resp: &Response<B>) {
        let e = &mut self.entry;
        e.status = resp.status().as_u16();
        e.weft_error = header(resp.headers(), WEFT_ERROR);
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
        self.entry.duration_ms = self.started.elapsed().as_secs_f64() * 1e3;
        if let Some(log) = &self.sinks.access_log {
            log.send(std::mem::take(&mut self.entry));
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
