//! `weftctl top`: the live view in a terminal. On a terminal it redraws in place
//! (sortable service table, drill-down to a service's endpoints); otherwise it
//! prints the table as plain lines every interval, for scripts and logs.

pub mod fetch;
pub mod summary;
mod view;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
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
}

pub fn run(opts: TopOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if std::io::stdout().is_terminal() {
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
        "weft top — {} proxies — last {} — sorted by {}\n",
        s.proxies,
        opts.window,
        opts.sort.label()
    );
    for row in summary::service_rows(&services) {
        out.push_str(&format!(
            "{:<16}{:>8}{:>9}{:>10}{:>10}{:>8}{:>7}{:>9}{:>9}\n",
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8]
        ));
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
