//! `weftctl top`: the live view in a terminal. On a terminal it redraws in place
//! (sortable service table, drill-down to a service's endpoints, opaque TCP
//! services with their callers below); otherwise it
//! prints the table as plain lines every interval, for scripts and logs.

pub mod fetch;
pub mod summary;
mod view;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use summary::{SortBy, Summary};

/// What `weftctl top` was asked for.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// The control plane's admin address.
    pub admin: SocketAddr,
    /// `10s` or `1m`.
    pub window: String,
    pub sort: SortBy,
    pub interval: Duration,
    /// Plain output: stop after this many tables.
    pub iterations: Option<u64>,
    /// The title's first words: `weft top`, or the program showing it.
    pub title: String,
    /// Set by the caller to end the view (the demo on SIGTERM or at its end).
    pub stop: Arc<AtomicBool>,
}

impl TopOptions {
    /// `weftctl top`'s defaults against `admin`.
    pub fn new(admin: SocketAddr) -> TopOptions {
        TopOptions {
            admin,
            window: "10s".to_string(),
            sort: SortBy::Rps,
            interval: Duration::from_secs(1),
            iterations: None,
            title: "weft top".to_string(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Whether a terminal view can be drawn: stdout is a terminal.
pub fn on_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub fn run(opts: TopOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if on_terminal() {
        view::interactive(&runtime, &opts)
    } else {
        runtime.block_on(plain(&opts))
    }
}

/// One table per interval, as plain lines.
async fn plain(opts: &TopOptions) -> anyhow::Result<()> {
    let mut n = 0;
    loop {
        match fetch::summary(opts.admin).await {
            Ok(s) => print!("{}", plain_table(&s, opts)),
            Err(e) => println!("weftctl top: {e:#}"),
        }
        n += 1;
        if opts.iterations.is_some_and(|max| n >= max) {
            return Ok(());
        }
        tokio::time::sleep(opts.interval).await;
    }
}

fn plain_table(s: &Summary, opts: &TopOptions) -> String {
    let mut services = s
        .windows
        .get(&opts.window)
        .map(|w| w.services.clone())
        .unwrap_or_default();
    summary::sort(&mut services, opts.sort, false);
    let mut out = format!(
        "{} — {} proxies{} — last {} — sorted by {}\n",
        opts.title,
        s.proxies,
        s.replicas_note(),
        opts.window,
        opts.sort.label()
    );
    let mut rows = summary::service_rows(&services).into_iter();
    let line = |row: &[String; 9]| {
        format!(
            "{:<16}{:>8}{:>9}{:>10}{:>10}{:>8}{:>7}{:>9}{:>9}\n",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
        )
    };
    if let Some(header) = rows.next() {
        out.push_str(&line(&header));
    }
    for (row, t) in rows.zip(&services) {
        out.push_str(&line(&row));
        // A service's routes, indented below it (their header skipped).
        for r in summary::route_rows(t).iter().skip(1) {
            out.push_str(&format!(
                "  route {:<16}{:>8}{:>9}{:>10}{:>10}\n",
                r[0], r[1], r[2], r[3], r[4]
            ));
        }
    }
    if let Some(w) = s.windows.get(&opts.window) {
        for row in summary::tcp_rows(w) {
            out.push_str(&format!(
                "{:<22}{:>6}{:>8}{:>10}{:>10}{:>8}{:>7}\n",
                row[0], row[1], row[2], row[3], row[4], row[5], row[6]
            ));
        }
    }
    for e in &s.ejections {
        out.push_str(&format!(
            "ejected: {} {} ({}, {} s left, by {})\n",
            summary::short(&e.service),
            e.endpoint,
            e.reason,
            e.remaining_ms / 1000,
            summary::short(&e.ejected_by)
        ));
    }
    out.push('\n');
    out
}
