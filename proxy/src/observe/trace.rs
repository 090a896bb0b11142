//! W3C trace context and the proxy's own spans. Each request the proxy carries keeps
//! the caller's `traceparent` trace (or starts one, sampled at the configured
//! ratio), becomes a span of it (client span outbound, server span inbound) whose
//! id goes onwards as the next hop's parent, and, when sampled, is exported over
//! OTLP/gRPC: in batches, from a bounded queue (full: the span is dropped and
//! counted), by a task of its own, so no request waits for the collector.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use prometheus::{IntCounter, Opts};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::otlp;
use crate::metrics::Metrics;

pub(crate) const TRACEPARENT: &str = "traceparent";
/// Spans per export call at most.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One hop's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: [u8; 16],
    /// The caller's span; none when this hop started the trace.
    pub(crate) parent: Option<[u8; 8]>,
    /// This hop's span, the next hop's parent.
    pub(crate) span_id: [u8; 8],
    pub(crate) sampled: bool,
}

impl TraceContext {
    /// Continues the request's trace, or starts one sampled with probability `ratio`.
    pub(crate) fn continue_or_start(headers: &HeaderMap, ratio: f64) -> TraceContext {
        let span_id = nonzero();
        match headers.get(TRACEPARENT).and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                parent: Some(parent),
                span_id,
                sampled: flags & 1 == 1,
            },
            None => TraceContext {
                trace_id: nonzero(),
                parent: None,
                span_id,
                sampled: rand::random::<f64>() < ratio,
            },
        }
    }

    /// The `traceparent` the next hop gets: this span as its parent.
    pub(crate) fn header(&self) -> HeaderValue {
        let mut text = Vec::with_capacity(55);
        text.extend_from_slice(b"00-");
        push_hex(&mut text, &self.trace_id);
        text.push(b'-');
        push_hex(&mut text, &self.span_id);
        text.extend_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("00"))
    }
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id.iter().any(|b| *b != 0) {
            return id;
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    out.iter().any(|b| *b != 0).then_some(out)
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2); version ff and all-zero
/// ids are invalid. Later versions may append fields, which are ignored.
fn parse(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = value.split(|b| *b == b'-');
    let version = parts.next()?;
    if version.len() != 2 || version.eq_ignore_ascii_case(b"ff") {
        return None;
    }
    let trace_id = unhex::<16>(parts.next()?)?;
    let parent = unhex::<8>(parts.next()?)?;
    let flags = parts.next()?;
    if flags.len() != 2 || (version == b"00" && parts.next().is_some()) {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some((trace_id, parent, flags))
}

/// A finished span, queued for export.
pub(crate) struct SpanRecord {
    pub(crate) context: TraceContext,
    pub(crate) client: bool,
    pub(crate) name: String,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: Vec<otlp::KeyValue>,
    pub(crate) error: Option<String>,
}

/// The request side of tracing: the sampling ratio and the export queue.
pub(crate) struct Tracer {
    pub(crate) ratio: f64,
    tx: mpsc::Sender<SpanRecord>,
    dropped: IntCounter,
}

impl Tracer {
    /// Starts the exporter on the current runtime. `service` names this workload
    /// in every span's resource.
    pub(crate) fn start(
        channel: Channel,
        ratio: f64,
        buffer: usize,
        service: String,
        metrics: &Metrics,
    ) -> Tracer {
        let registry = metrics.registry();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help))
                .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let dropped = counter(
            "weft_trace_spans_dropped_total",
            "Spans dropped: the export queue was full, or the collector refused a batch.",
        );
        let exported = counter(
            "weft_trace_spans_exported_total",
            "Spans the collector accepted.",
        );
        let (tx, rx) = mpsc::channel(buffer);
        tokio::spawn(export(rx, channel, service, exported, dropped.clone()));
        Tracer { ratio, tx, dropped }
    }

    pub(crate) fn send(&self, span: SpanRecord) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn to_otlp(s: SpanRecord) -> otlp::Span {
    otlp::Span {
        trace_id: s.context.trace_id.to_vec(),
        span_id: s.context.span_id.to_vec(),
        parent_span_id: s.context.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name,
        kind: if s.client {
            otlp::SPAN_KIND_CLIENT
        } else {
            otlp::SPAN_KIND_SERVER
        },
        start_time_unix_nano: unix_nanos(s.start),
        end_time_unix_nano: unix_nanos(s.end),
        attributes: s.attributes,
        status: s.error.map(|message| otlp::Status {
            message,
            code: otlp::STATUS_ERROR,
        }),
    }
}

/// The exporter: waits for a span, gathers a batch (up to `BATCH`, or what came
/// within `LINGER`), sends it, and starts over. A batch the collector does not
/// take is dropped and counted; spans are not worth holding up the next ones.
async fn export(
    mut rx: mpsc::Receiver<SpanRecord>,
    channel: Channel,
    service: String,
    exported: IntCounter,
    dropped: IntCounter,
) {
    let mut grpc = tonic::client::Grpc::new(channel);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![to_otlp(first)];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(to_otlp(span)),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let request = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(otlp::Resource {
                    attributes: vec![otlp::string("service.name", service.clone())],
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope {
                        name: "weft-proxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans: batch,
                }],
            }],
        };
        let sent = async {
            grpc.ready().await.map_err(|e| e.to_string())?;
            let codec = tonic_prost::ProstCodec::<
                otlp::ExportTraceServiceRequest,
                otlp::ExportTraceServiceResponse,
            >::default();
            grpc.unary(
                tonic::Request::new(request),
                http::uri::PathAndQuery::from_static(otlp::EXPORT_PATH),
                codec,
            )
            .await
            .map_err(|s| s.to_string())
        };
        match tokio::time::timeout(EXPORT_TIMEOUT, sent).await {
            Ok(Ok(_)) => exported.inc_by(n),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, spans = n, "span export failed");
                dropped.inc_by(n);
            }
            Err(_) => {
                tracing::debug!(spans = n, "span export timed out");
                dropped.inc_by(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, v.parse().expect("value"));
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_its_sampling_decision() {
        let h = headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let c = TraceContext::continue_or_start(&h, 0.0);
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(c.sampled, "the caller's decision wins over the ratio");
        let next = c.header();
        let next = next.to_str().expect("ascii");
        assert_eq!(
            next,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&c.span_id))
        );

        let unsampled = headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let c = TraceContext::continue_or_start(&unsampled, 1.0);
        assert!(!c.sampled);
        assert!(c.header().to_str().expect("ascii").ends_with("-00"));
    }

    #[test]
    fn an_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let c = TraceContext::continue_or_start(&headers(bad), 1.0);
            assert_eq!(c.parent, None, "{bad}");
            assert_ne!(
                hex(&c.trace_id),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert!(c.sampled, "ratio 1 samples every new trace");
        }
        let c = TraceContext::continue_or_start(&HeaderMap::new(), 0.0);
        assert!(!c.sampled, "ratio 0 samples none");
    }
}
