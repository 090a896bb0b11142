//! WebSocket (HTTP/1.1 Upgrade) through the data path: the proxies switch to a
//! byte tunnel after 101 and frames flow both ways.

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weft_tests::apps::TcpApp;
use weft_tests::data::pattern;
use weft_tests::hops::Hops;
use weft_tests::proxy::ServiceDef;
use weft_tests::{STEP_DEADLINE, within};

/// Echoes every data message until the client closes.
async fn websocket_echo_app() -> TcpApp {
    TcpApp::serve(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await
    .expect("start app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_outbound_and_upstream_listeners() {
    let app = websocket_echo_app().await;
    let hops = Hops::start(ServiceDef::new("chat"), app.addr)
        .await
        .expect("start proxies");

    for (how, addr) in [("outbound", hops.outbound()), ("upstream", hops.upstream())] {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut ws, resp) = within(
            STEP_DEADLINE,
            "websocket handshake",
            tokio_tungstenite::client_async("ws://chat/echo", stream),
        )
        .await
        .unwrap_or_else(|e| panic!("handshake via {how}: {e}"));
        assert_eq!(resp.status(), 101, "via {how}");

        let big = pattern(1024 * 1024, 4);
        let sent = [
            Message::text(format!("hello via {how}")),
            Message::binary(big),
            Message::text("last"),
        ];
        for m in &sent {
            ws.send(m.clone()).await.expect("send");
            let echoed = within(STEP_DEADLINE, "echo", ws.next())
                .await
                .expect("a message")
                .expect("ok");
            assert!(echoed == *m, "via {how}: echo differs");
        }
        ws.close(None).await.expect("close");
    }
    assert_eq!(app.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_to_an_app_port_declared_http2_stays_http1() {
    // The server proxy sends HTTP/1 requests to this port on as HTTP/2, but an
    // Upgrade has no HTTP/2 form here: it keeps its own HTTP/1.1 connection.
    let app = websocket_echo_app().await;
    let port = app.addr.port().to_string();
    let hops = Hops::start_with(
        ServiceDef::new("chat"),
        app.addr,
        |c| c,
        |c| c.inbound_http2_ports(&port),
    )
    .await
    .expect("start proxies");
    let stream = TcpStream::connect(hops.upstream()).await.expect("connect");
    let (mut ws, resp) = within(
        STEP_DEADLINE,
        "websocket handshake",
        tokio_tungstenite::client_async("ws://chat/echo", stream),
    )
    .await
    .expect("the upgrade went through");
    assert_eq!(resp.status(), 101);
    let m = Message::text("still HTTP/1.1");
    ws.send(m.clone()).await.expect("send");
    let echoed = within(STEP_DEADLINE, "echo", ws.next())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed, m);
    ws.close(None).await.expect("close");
}
