//! `weftctl top` against the demo: driven in tmux (keys in, screen out) as a person
//! would use it, and as plain lines when its output is not a terminal; the demo's
//! own screen, with its broker's opaque TCP block (and the page's graph of it).

use std::time::Duration;

use weft_tests::browser::{Browser, artefact_dir};
use weft_tests::demo::{
    Demo, PROXIES_WITHOUT_BROKER, SERVICES, TerminalDemo, live_tcp_service, weftctl_top,
};
use weft_tests::tmux::Tmux;
use weft_tests::{bins, eventually, rabbitmq, tools};

const UP_LIMIT: Duration = Duration::from_secs(60);
const CHANGE_LIMIT: Duration = Duration::from_secs(40);
/// Start-up with the broker: RabbitMQ alone takes a while on a busy machine.
const BROKER_UP_LIMIT: Duration = Duration::from_secs(180);

/// The services of the table's rows in screen order.
fn service_order(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim_matches(|c| c == '│' || c == ' ')
                .trim_start_matches("> ")
                .split_whitespace()
                .collect();
            // A table row: name, rps, then the success column.
            let row = cells.len() > 5 && (cells[2].ends_with('%') || cells[2] == "-");
            cells
                .first()
                .filter(|name| SERVICES.contains(name) && row)
                .map(|s| s.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftctl_top_in_tmux_sorts_drills_down_and_shows_an_ejection() {
    let test = "weftctl_top_in_tmux_sorts_drills_down_and_shows_an_ejection";
    let Some(tmux) = tools::require("tmux", "tmux", test) else {
        return;
    };
    let mut demo = Demo::start(&["--rps", "40", "--no-broker"]).expect("start the demo");
    demo.wait_up(UP_LIMIT).await.expect("the demo comes up");
    demo.wait_live(CHANGE_LIMIT).await;
    let weftctl = bins::binary("weftctl").expect("weftctl is built");
    let command = format!("{} top --admin {}", weftctl.display(), demo.control_admin());
    let top = Tmux::start(tmux, "top", &command).expect("start tmux");
    let artefacts = artefact_dir("top").expect("artefact dir");

    let screen = top
        .wait_screen("every demo service", CHANGE_LIMIT, |s| {
            s.contains(&format!("{PROXIES_WITHOUT_BROKER} proxies"))
                && service_order(s).len() == SERVICES.len()
        })
        .await;
    assert!(screen.contains("sorted by rps"), "{screen}");

    // Sorted by name, then inverted.
    top.keys(&["n"]);
    let screen = top
        .wait_screen("sorted by name", CHANGE_LIMIT, |s| {
            s.contains("sorted by name")
        })
        .await;
    let mut names: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(service_order(&screen), names, "{screen}");
    top.keys(&["i"]);
    let screen = top
        .wait_screen("inverted", CHANGE_LIMIT, |s| s.contains("(inverted)"))
        .await;
    names.reverse();
    assert_eq!(service_order(&screen), names, "{screen}");
    top.keys(&["i"]);
    top.wait_screen("back in order", CHANGE_LIMIT, |s| !s.contains("(inverted)"))
        .await;

    // Drill down into users (the fourth by name) and see its endpoint as web does.
    top.keys(&["Down", "Down", "Down", "Enter"]);
    let screen = top
        .wait_screen("users' endpoints", CHANGE_LIMIT, |s| {
            s.contains("service users") && s.contains("ready") && s.contains("web ")
        })
        .await;
    assert!(
        screen.contains("spiffe://cluster.local/ns/default/sa/users"),
        "{screen}"
    );
    std::fs::write(artefacts.join("drill-down.txt"), &screen).expect("save screen");

    demo.kill_child("users").expect("kill users");
    let screen = top
        .wait_screen("users' endpoint ejected", CHANGE_LIMIT, |s| {
            s.contains("ejected")
        })
        .await;
    std::fs::write(artefacts.join("ejected.txt"), &screen).expect("save screen");

    // Back to the table: the ejection is listed under it.
    top.keys(&["Escape"]);
    let screen = top
        .wait_screen("the ejection under the table", CHANGE_LIMIT, |s| {
            s.contains("ejected endpoints") && s.contains("failing-status")
        })
        .await;
    assert_eq!(service_order(&screen).len(), SERVICES.len(), "{screen}");

    // web's route api-orders, called through the gateway, in web's drill-down (web
    // is last by name, one below users).
    demo.gateway_client()
        .await
        .expect("connect to the gateway")
        .get_ok("/api/orders?user=1", 10)
        .await
        .expect("requests through the gateway");
    top.keys(&["Down", "Enter"]);
    let screen = top
        .wait_screen("web's routes", CHANGE_LIMIT, |s| {
            s.contains("service web") && s.contains("ROUTE") && s.contains("api-orders")
        })
        .await;
    std::fs::write(artefacts.join("routes.txt"), &screen).expect("save screen");
    top.keys(&["Escape"]);
    top.keys(&["q"]);
    top.wait_gone("weftctl top quits on q", CHANGE_LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftctl_top_prints_plain_lines_when_not_on_a_terminal() {
    let mut demo = Demo::start(&["--rps", "40", "--no-broker"]).expect("start the demo");
    demo.wait_up(UP_LIMIT).await.expect("the demo comes up");
    demo.wait_live(CHANGE_LIMIT).await;
    let args = ["--iterations", "2", "--sort", "name"];
    let text = weftctl_top(demo.control_admin(), &args, CHANGE_LIMIT)
        .await
        .expect("weftctl top --iterations 2");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in plain output:\n{text}"
    );
    assert_eq!(
        text.matches(
            format!("weft top — {PROXIES_WITHOUT_BROKER} proxies — last 10s — sorted by name")
                .as_str()
        )
        .count(),
        2,
        "{text}"
    );
    let rows: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| SERVICES.contains(w))
        .collect();
    let mut names = SERVICES.to_vec();
    names.sort_unstable();
    assert_eq!(rows[..5], names[..], "{text}");
}

/// `weft-control demo` on a terminal shows top's view of its own control plane
/// (titled for the demo) instead of its scrolling table, and `q` there stops the
/// whole demo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_a_terminal_shows_tops_view_and_q_stops_it() {
    let test = "the_demo_on_a_terminal_shows_tops_view_and_q_stops_it";
    let Some(tmux) = tools::require("tmux", "tmux", test) else {
        return;
    };
    let run = TerminalDemo::new(&["--no-broker", "--rps", "40", "--duration", "300"])
        .expect("the demo's command");
    let demo = Tmux::start(tmux, "demo-screen", &run.command).expect("start tmux");
    let screen = demo
        .wait_screen("the demo's services in top's view", CHANGE_LIMIT, |s| {
            s.contains(&format!("weft demo — {PROXIES_WITHOUT_BROKER} proxies"))
                && service_order(s).len() == SERVICES.len()
        })
        .await;
    assert!(screen.contains("sorted by rps"), "{screen}");
    let artefacts = artefact_dir("top").expect("artefact dir");
    std::fs::write(artefacts.join("demo-screen.txt"), &screen).expect("save screen");

    demo.keys(&["q"]);
    demo.wait_gone("the demo stops on q", CHANGE_LIMIT).await;
    // Stopped whole: its control plane's admin port is closed.
    let admin = run.control_admin();
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the demo's control plane still answers at {admin}"
    );
}

/// The open connections on the TCP block's line for `name`: a service, or a
/// caller (`← name`) under one.
fn tcp_open(screen: &str, name: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let cells: Vec<&str> = l
            .trim_matches(|c| c == '│' || c == ' ')
            .trim_start_matches("← ")
            .split_whitespace()
            .collect();
        // name, open, conn/s, in, out, mTLS, failed
        (cells.len() == 7 && cells[0] == name && cells[5].ends_with('%'))
            .then(|| cells[1].parse().ok())?
    })
}

/// The demo with its RabbitMQ broker, on a terminal: the broker's opaque AMQP
/// connections (orders, users, notifications and inventory through their
/// sidecars, over mTLS) show in top's TCP block with their callers, as the demo's
/// old table showed them; and the live view's page draws the broker in its graph
/// with the callers' TCP edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_screen_and_page_show_the_brokers_tcp_connections() {
    let test = "the_demo_screen_and_page_show_the_brokers_tcp_connections";
    let Some(tmux) = tools::require("tmux", "tmux", test) else {
        return;
    };
    if rabbitmq::require(test).is_none() {
        return;
    }
    let run = TerminalDemo::new(&["--rps", "10", "--duration", "600"]).expect("the demo's command");
    let demo = Tmux::start(tmux, "demo-broker", &run.command).expect("start tmux");
    let screen = demo
        .wait_screen("the broker's TCP line", BROKER_UP_LIMIT, |s| {
            tcp_open(s, "rabbitmq").is_some_and(|n| n > 0)
                && ["orders", "notifications"]
                    .iter()
                    .all(|caller| tcp_open(s, caller).is_some_and(|n| n > 0))
        })
        .await;
    assert!(screen.contains("tcp services"), "{screen}");
    let artefacts = artefact_dir("top").expect("artefact dir");
    std::fs::write(artefacts.join("demo-broker.txt"), &screen).expect("save screen");

    // The same numbers in the summary: every connection into the broker is mTLS.
    let admin = run.control_admin();
    let broker = eventually(CHANGE_LIMIT, "the broker in the summary", || async {
        let reply = weft_tests::admin::get(admin, "/api/summary").await.ok()?;
        let s: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
        let b = live_tcp_service(&s, "10s", "rabbitmq.default")?;
        (b["open_connections"].as_u64()? >= 4).then(|| b.clone())
    })
    .await;
    assert_eq!(broker["tls_share"], 1.0, "{broker:#}");
    assert_eq!(broker["failures"], 0, "{broker:#}");

    if let Some(mut browser) = Browser::start(test).await.expect("start chromium") {
        browser
            .navigate(&format!("http://{admin}/"))
            .await
            .expect("load the page");
        let drawn = "(() => { \
            const node = document.querySelector('#graph g.node[data-service=\"rabbitmq.default\"]'); \
            const edges = [...document.querySelectorAll('#graph line[data-kind=\"tcp\"][data-to=\"rabbitmq.default\"]')]; \
            const row = document.querySelector('#tcp tr[data-service=\"rabbitmq.default\"][data-from=\"\"]'); \
            return JSON.stringify({ kind: node ? node.dataset.kind : null, \
              callers: edges.filter((e) => Number(e.dataset.open) > 0).map((e) => e.dataset.from).sort(), \
              open: row ? Number(row.dataset.open) : 0 }); })()";
        let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
        loop {
            let seen = browser.eval(drawn).await.expect("read the page");
            let seen: serde_json::Value =
                serde_json::from_str(seen.as_str().unwrap_or("{}")).expect("JSON");
            let callers = seen["callers"].as_array().cloned().unwrap_or_default();
            if seen["kind"] == "tcp"
                && seen["open"].as_u64() > Some(0)
                && ["orders.default", "notifications.default"]
                    .iter()
                    .all(|c| callers.iter().any(|v| v == c))
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broker and its TCP callers not drawn within {CHANGE_LIMIT:?}: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let shot = artefact_dir("live_view")
            .expect("artefact dir")
            .join("broker-tcp.png");
        browser.screenshot(&shot).await.expect("screenshot");
        println!("screenshot: {}", shot.display());
    }

    demo.keys(&["q"]);
    demo.wait_gone("the demo stops on q", BROKER_UP_LIMIT).await;
}
