//! gRPC end to end: a tonic client → client proxy (upstream listener) → server proxy
//! inbound → a tonic server. Every streaming shape, large messages, and error
//! statuses carried in trailers.

use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use weft_tests::data::{checksum, pattern};
use weft_tests::grpc::{GrpcEchoApp, echo_client};
use weft_tests::hops::Hops;
use weft_tests::pb::Msg;
use weft_tests::proxy::{ProxyConfig, ServiceDef, WeftProxy};
use weft_tests::{STEP_DEADLINE, within};

const MIB: usize = 1024 * 1024;

async fn echo() -> (GrpcEchoApp, Hops) {
    let app = GrpcEchoApp::start().await.expect("start gRPC app");
    let service = ServiceDef::new("echo").port(50051, "grpc");
    let hops = Hops::start(service, app.addr).await.expect("start proxies");
    (app, hops)
}

fn msg(text: &str) -> Msg {
    Msg {
        text: text.to_string(),
        ..Msg::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_call_passes_through_both_proxies() {
    let (_app, mut hops) = echo().await;
    let mut client = echo_client(hops.upstream()).await.expect("connect");

    let reply = client.unary(msg("ping")).await.expect("unary call");

    assert_eq!(reply.get_ref().text, "ping");
    let ok = hops
        .client
        .metric(
            "weft_requests_total",
            &[
                ("direction", "outbound"),
                ("service", "echo.default"),
                ("status_class", "2xx"),
            ],
        )
        .await;
    assert_eq!(ok, 1.0);
    drop(client);
    hops.stop().await.expect("both proxies drain and exit 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_streaming_delivers_every_message() {
    let (_app, _hops) = echo().await;
    let mut client = echo_client(_hops.upstream()).await.expect("connect");
    let messages: Vec<Msg> = (0..50)
        .map(|i| Msg {
            data: vec![i as u8; 1000 + i],
            ..Msg::default()
        })
        .collect();
    let total: usize = messages.iter().map(|m| m.data.len()).sum();

    let reply = client
        .client_stream(tokio_stream::iter(messages))
        .await
        .expect("client streaming call")
        .into_inner();

    assert_eq!(reply.count, 50);
    assert_eq!(reply.text, total.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_server_streaming_delivers_every_message_in_order() {
    let (_app, hops) = echo().await;
    let mut client = echo_client(hops.upstream()).await.expect("connect");

    let mut stream = client
        .server_stream(Msg {
            data: vec![7; 4096],
            count: 100,
            ..Msg::default()
        })
        .await
        .expect("server streaming call")
        .into_inner();

    let mut seen = 0u32;
    while let Some(m) = within(STEP_DEADLINE, "next message", stream.message())
        .await
        .expect("stream ok")
    {
        assert_eq!(m.count, seen);
        assert_eq!(m.data.len(), 4096);
        seen += 1;
    }
    assert_eq!(seen, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidi_streaming_answers_each_message_before_the_next_is_sent() {
    let (_app, hops) = echo().await;
    let mut client = echo_client(hops.upstream()).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(msg("0")).await.expect("queue first message");

    let mut replies = client
        .bidi(ReceiverStream::new(rx))
        .await
        .expect("bidi call")
        .into_inner();

    // Ping-pong: a proxy that buffered either direction until the end of the
    // stream would deadlock here (bounded by the deadline).
    for i in 0..20 {
        let reply = within(STEP_DEADLINE, "bidi reply", replies.message())
            .await
            .expect("stream ok")
            .expect("a reply before the stream ends");
        assert_eq!(reply.text, i.to_string());
        if i + 1 < 20 {
            tx.send(msg(&(i + 1).to_string())).await.expect("send");
        }
    }
    drop(tx);
    let end = within(STEP_DEADLINE, "end of bidi stream", replies.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "stream should end cleanly: {end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_multi_mib_messages_arrive_intact_both_ways() {
    let (_app, hops) = echo().await;
    let mut client = echo_client(hops.upstream()).await.expect("connect");
    let data = pattern(6 * MIB, 11);
    let sum = checksum(&data);

    let reply = client
        .unary(Msg {
            data,
            ..Msg::default()
        })
        .await
        .expect("unary call with 6 MiB")
        .into_inner();

    assert_eq!(reply.data.len(), 6 * MIB);
    assert_eq!(checksum(&reply.data), sum);

    // And a stream of large messages in both directions at once.
    let outgoing = tokio_stream::iter((0..3).map(|i| Msg {
        data: pattern(3 * MIB, i),
        ..Msg::default()
    }));
    let mut replies = client.bidi(outgoing).await.expect("bidi call").into_inner();
    let mut n = 0u8;
    while let Some(m) = within(STEP_DEADLINE, "bidi reply", replies.next())
        .await
        .transpose()
        .expect("stream ok")
    {
        assert!(m.data == pattern(3 * MIB, n), "message {n} corrupted");
        n += 1;
    }
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_error_status_arrives_with_code_and_message_intact() {
    let (_app, hops) = echo().await;
    let mut client = echo_client(hops.upstream()).await.expect("connect");

    // Trailers-only answer (a unary error).
    let status = client
        .unary(Msg {
            fail_code: Code::NotFound as u32,
            text: "no such order: 42 (ünïcode kept)".to_string(),
            ..Msg::default()
        })
        .await
        .expect_err("the call fails");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such order: 42 (ünïcode kept)");

    // Data frames, then the status in real trailers.
    let mut stream = client
        .server_stream(Msg {
            count: 2,
            fail_code: Code::ResourceExhausted as u32,
            text: "quota exceeded".to_string(),
            ..Msg::default()
        })
        .await
        .expect("the stream starts")
        .into_inner();
    for i in 0..2u32 {
        let m = stream
            .message()
            .await
            .expect("message before the error")
            .expect("not the end yet");
        assert_eq!(m.count, i);
    }
    let status = stream
        .message()
        .await
        .expect_err("the stream ends in error");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "quota exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_to_a_service_without_endpoints_fails_unavailable() {
    let service = ServiceDef::new("echo").port(50051, "grpc");
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("echo").service(service))
        .await
        .expect("start proxy");
    let mut client = echo_client(proxy.upstream("echo")).await.expect("connect");

    let status = client.unary(msg("ping")).await.expect_err("no endpoints");

    // UNAVAILABLE, which gRPC clients may retry; the reason rides along.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "weft: the service has no ready endpoints");
    assert_eq!(
        status.metadata().get("weft-error").map(|v| v.as_bytes()),
        Some(&b"no-endpoints"[..])
    );
    // Metrics still count the failure as a 5xx.
    assert_eq!(
        proxy
            .metric(
                "weft_requests_total",
                &[
                    ("direction", "outbound"),
                    ("service", "echo.default"),
                    ("status_class", "5xx"),
                ],
            )
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric(
                "weft_proxy_errors_total",
                &[
                    ("direction", "outbound"),
                    ("service", "echo.default"),
                    ("reason", "no-endpoints"),
                ],
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_timing_out_in_the_proxy_fails_deadline_exceeded() {
    let app = weft_tests::apps::TcpApp::silent().await.expect("start app");
    let service = ServiceDef::new("echo")
        .port(50051, "grpc")
        .endpoint(app.addr)
        .policy("{timeouts: {request: 300ms}}");
    let proxy = WeftProxy::start(ProxyConfig::new().upstream("echo").service(service))
        .await
        .expect("start proxy");
    let mut client = echo_client(proxy.upstream("echo")).await.expect("connect");

    let status = client.unary(msg("ping")).await.expect_err("times out");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "weft: the request timed out");
}
