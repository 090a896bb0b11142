//! `weftctl top` against the demo: driven in tmux (keys in, screen out) as a person
//! would use it, and as plain lines when its output is not a terminal.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use weft_tests::browser::artefact_dir;
use weft_tests::client::{self, H1Client};
use weft_tests::demo::{Demo, PROXIES_WITHOUT_BROKER, SERVICES, free_port_block};
use weft_tests::{bins, tools};

const UP_LIMIT: Duration = Duration::from_secs(60);
const CHANGE_LIMIT: Duration = Duration::from_secs(40);

/// A tmux session running one command, killed when dropped.
struct Tmux {
    tmux: PathBuf,
    name: String,
}

impl Tmux {
    /// `label` tells this test's session from the others running at once.
    fn start(tmux: PathBuf, label: &str, command: &str) -> Tmux {
        let name = format!("weft-{label}-{}", std::process::id());
        let status = Command::new(&tmux)
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "150",
                "-y",
                "45",
                command,
            ])
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        Tmux { tmux, name }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new(&self.tmux)
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new(&self.tmux)
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alive(&self) -> bool {
        Command::new(&self.tmux)
            .args(["has-session", "-t", &self.name])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Polls the screen until `ok` holds; fails showing the last screen.
    async fn wait_screen(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not on screen within {CHANGE_LIMIT:?}:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux)
            .args(["kill-session", "-t", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

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
    let top = Tmux::start(tmux, "top", &command);
    let artefacts = artefact_dir("top").expect("artefact dir");

    let screen = top
        .wait_screen("every demo service", |s| {
            s.contains(&format!("{PROXIES_WITHOUT_BROKER} proxies"))
                && service_order(s).len() == SERVICES.len()
        })
        .await;
    assert!(screen.contains("sorted by rps"), "{screen}");

    // Sorted by name, then inverted.
    top.keys(&["n"]);
    let screen = top
        .wait_screen("sorted by name", |s| s.contains("sorted by name"))
        .await;
    let mut names: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    names.sort();
    assert_eq!(service_order(&screen), names, "{screen}");
    top.keys(&["i"]);
    let screen = top
        .wait_screen("inverted", |s| s.contains("(inverted)"))
        .await;
    names.reverse();
    assert_eq!(service_order(&screen), names, "{screen}");
    top.keys(&["i"]);
    top.wait_screen("back in order", |s| !s.contains("(inverted)"))
        .await;

    // Drill down into users (the fourth by name) and see its endpoint as web does.
    top.keys(&["Down", "Down", "Down", "Enter"]);
    let screen = top
        .wait_screen("users' endpoints", |s| {
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
        .wait_screen("users' endpoint ejected", |s| s.contains("ejected"))
        .await;
    std::fs::write(artefacts.join("ejected.txt"), &screen).expect("save screen");

    // Back to the table: the ejection is listed under it.
    top.keys(&["Escape"]);
    let screen = top
        .wait_screen("the ejection under the table", |s| {
            s.contains("ejected endpoints") && s.contains("failing-status")
        })
        .await;
    assert_eq!(service_order(&screen).len(), SERVICES.len(), "{screen}");

    // web's route api-orders, called through the gateway, in web's drill-down (web
    // is last by name, one below users).
    let gateway = demo.gateway();
    let host = format!("127.0.0.1:{}", gateway.port());
    let mut c = H1Client::connect(gateway)
        .await
        .expect("connect to the gateway");
    for _ in 0..10 {
        let reply = c
            .send(client::request(
                "GET",
                "/api/orders?user=1",
                &[("host", &host)],
                "",
            ))
            .await
            .expect("a request through the gateway");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    top.keys(&["Down", "Enter"]);
    let screen = top
        .wait_screen("web's routes", |s| {
            s.contains("service web") && s.contains("ROUTE") && s.contains("api-orders")
        })
        .await;
    std::fs::write(artefacts.join("routes.txt"), &screen).expect("save screen");
    top.keys(&["Escape"]);
    top.keys(&["q"]);
    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    while top.alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "weftctl top did not quit on q"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftctl_top_prints_plain_lines_when_not_on_a_terminal() {
    let mut demo = Demo::start(&["--rps", "40", "--no-broker"]).expect("start the demo");
    demo.wait_up(UP_LIMIT).await.expect("the demo comes up");
    demo.wait_live(CHANGE_LIMIT).await;
    let weftctl = bins::binary("weftctl").expect("weftctl is built");
    let admin = demo.control_admin().to_string();
    let out = tokio::process::Command::new(weftctl)
        .args([
            "top",
            "--admin",
            &admin,
            "--iterations",
            "2",
            "--sort",
            "name",
        ])
        .output();
    let out = tokio::time::timeout(CHANGE_LIMIT, out)
        .await
        .expect("weftctl top --iterations 2 ends")
        .expect("run weftctl");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
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
    let base = free_port_block();
    let dir = tempfile::Builder::new()
        .prefix("weft-e2e-demo-screen-")
        .tempdir()
        .expect("temp dir");
    let control = bins::binary("weft-control").expect("weft-control is built");
    let command = format!(
        "env -u http_proxy -u HTTP_PROXY {} demo --no-broker --rps 40 --base-port {base} \
         --state-dir {} --duration 300",
        control.display(),
        dir.path().join("state").display()
    );
    let demo = Tmux::start(tmux, "demo-screen", &command);
    let screen = demo
        .wait_screen("the demo's services in top's view", |s| {
            s.contains(&format!("weft demo — {PROXIES_WITHOUT_BROKER} proxies"))
                && service_order(s).len() == SERVICES.len()
        })
        .await;
    assert!(screen.contains("sorted by rps"), "{screen}");
    let artefacts = artefact_dir("top").expect("artefact dir");
    std::fs::write(artefacts.join("demo-screen.txt"), &screen).expect("save screen");

    demo.keys(&["q"]);
    let deadline = tokio::time::Instant::now() + CHANGE_LIMIT;
    while demo.alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo did not stop on q:\n{}",
            demo.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped whole: its control plane's admin port is closed.
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], base + 990));
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the demo's control plane still answers at {admin}"
    );
}
