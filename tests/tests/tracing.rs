//! Trace context through the demo: every sidecar exports its spans over OTLP/gRPC to
//! a receiver built here on the published OTLP protos, and one checkout's trace runs
//! web → orders → payments with each span's parent the hop before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio_stream::wrappers::TcpListenerStream;
use weft_tests::apps::AbortOnDrop;
use weft_tests::demo::Demo;

/// Every span received, with the `service.name` of the resource that sent it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A received span and the service that sent it.
type Received = (String, Span);

/// The hops of one trace from payments' server span up to its root: (service,
/// kind) pairs, or `None` while the chain is incomplete.
fn chain(spans: &[Received], leaf: &Span) -> Option<Vec<(String, i32)>> {
    let by_id: HashMap<(Vec<u8>, Vec<u8>), &Received> = spans
        .iter()
        .map(|s| ((s.1.trace_id.clone(), s.1.span_id.clone()), s))
        .collect();
    let mut hops = Vec::new();
    let mut at = by_id.get(&(leaf.trace_id.clone(), leaf.span_id.clone()))?;
    loop {
        hops.push((at.0.clone(), at.1.kind));
        if at.1.parent_span_id.is_empty() {
            return Some(hops);
        }
        at = by_id.get(&(at.1.trace_id.clone(), at.1.parent_span_id.clone()))?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_crosses_web_orders_and_payments_with_parent_links() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the receiver");
    let collector = listener.local_addr().expect("addr");
    let receiver = Receiver::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let _server = AbortOnDrop(tokio::spawn(async move {
        let _ = server.await;
    }));

    let otlp = format!("http://{collector}");
    let mut demo = Demo::start(&["--rps", "20", "--otlp", &otlp]).expect("start the demo");
    demo.wait_up(Duration::from_secs(60))
        .await
        .expect("the demo comes up");

    let server = SpanKind::Server as i32;
    let client = SpanKind::Client as i32;
    let want = vec![
        ("payments".to_string(), server),
        ("orders".to_string(), client),
        ("orders".to_string(), server),
        ("web".to_string(), client),
        ("web".to_string(), server),
    ];
    let found = weft_tests::eventually(
        Duration::from_secs(40),
        "a web→orders→payments trace",
        || {
            let spans = receiver
                .spans
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let want = want.clone();
            async move {
                spans
                    .iter()
                    .filter(|(service, s)| service == "payments" && s.kind == server)
                    .find_map(|(_, leaf)| {
                        let hops = chain(&spans, leaf)?;
                        (hops == want).then(|| (leaf.clone(), spans.clone()))
                    })
            }
        },
    )
    .await;
    let (leaf, spans) = found;
    let trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.trace_id == leaf.trace_id)
        .collect();
    assert!(
        trace.len() >= 5,
        "trace {} has {} spans",
        hex(&leaf.trace_id),
        trace.len()
    );
    // The hop into orders is the checkout, answered with a status and timed.
    for s in &trace {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{s:?}");
        assert!(
            s.attributes
                .iter()
                .any(|kv| kv.key == "http.response.status_code"),
            "{s:?}"
        );
    }
    let web_client = trace
        .iter()
        .find(|s| s.kind == client && s.name.contains("orders"))
        .expect("web's call to orders");
    assert!(web_client.name.starts_with("POST"), "{}", web_client.name);
}
