//! The demo's own screen on a terminal: `weftctl top`'s view of the demo's control
//! plane (the same code, the same data), titled for the demo. It ends on `q` or
//! Ctrl-C in the view, on SIGTERM, or when the demo's time is up; the demo then
//! stops its processes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use weft_inject::top::{self, TopOptions};

pub async fn show(
    admin: SocketAddr,
    interval: Duration,
    run_for: Option<Duration>,
) -> anyhow::Result<()> {
    let opts = TopOptions {
        title: "weft demo".to_string(),
        interval,
        ..TopOptions::new(admin)
    };
    let stop = opts.stop.clone();
    let (tx, mut ended) = tokio::sync::oneshot::channel();
    // The view blocks on the terminal and runs its own small runtime: a thread
    // of its own keeps it off the demo's.
    std::thread::Builder::new()
        .name("demo-screen".to_string())
        .spawn(move || {
            let _ = tx.send(top::run(opts));
        })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let time_up = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut ended => return result.unwrap_or_else(|_| Ok(())),
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = time_up => {}
    }
    stop.store(true, Ordering::Relaxed);
    // The view restores the terminal before it ends.
    ended.await.unwrap_or(Ok(()))
}
