//! The live view: what the proxies report (`weft.v1.Telemetry`), kept for a minute
//! and summarised per service and per edge (caller → service) over the last 10 s
//! and 1 min (opaque TCP apart: connections and bytes, not requests), served by the admin port as JSON (`/live/summary`), as server-sent
//! events (`/live/events`) and as a web page (`/live/`). With several replicas each
//! also merges the others' reports (`peers`).

pub mod collector;
pub mod page;
pub mod peers;
pub mod summary;
mod tcp;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_api::v1;

pub use weft_api::live::Summary;

/// Reports older than this are forgotten: the longest window plus slack for a
/// baseline just before it.
const KEEP: Duration = Duration::from_secs(75);
/// A proxy whose last report is older than this is gone (stopped, or cut off):
/// its ejections no longer show.
const STALE: Duration = Duration::from_secs(5);

/// One report and when it arrived.
pub type Received = (Instant, Arc<v1::ProxyReport>);

/// Every proxy's recent reports, newest last.
#[derive(Default)]
pub struct LiveView {
    proxies: Mutex<HashMap<String, VecDeque<Received>>>,
    /// The other replicas' proxies, as last fetched (see `peers`).
    peers: Mutex<peers::PeerReports>,
}

impl LiveView {
    pub fn new() -> Arc<LiveView> {
        Arc::new(LiveView::default())
    }

    /// Keeps one report, received `at`.
    pub fn record(&self, at: Instant, report: v1::ProxyReport) {
        let id = report
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        let history = proxies.entry(id).or_default();
        history.push_back((at, Arc::new(report)));
        while history
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > KEEP)
        {
            history.pop_front();
        }
        proxies.retain(|_, h| {
            h.back()
                .is_some_and(|(t, _)| at.saturating_duration_since(*t) <= KEEP)
        });
    }

    /// This replica's own proxies that reported within `KEEP` of `now`, by id.
    fn own_histories(&self, now: Instant) -> HashMap<String, Vec<Received>> {
        let proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        proxies
            .iter()
            .filter(|(_, h)| {
                h.back()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) <= KEEP)
            })
            .map(|(id, h)| (id.clone(), h.iter().cloned().collect()))
            .collect()
    }

    /// Replaces what the other replicas reported.
    pub fn set_peers(&self, reports: peers::PeerReports) {
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = reports;
    }

    /// The summary as of `now`: this replica's proxies and the other replicas'.
    pub fn summary(&self, now: Instant) -> Summary {
        let mut histories = self.own_histories(now);
        let replicas = {
            let fetched = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            for (id, history) in &fetched.histories {
                let fresh = history
                    .last()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) <= KEEP);
                if fresh {
                    peers::merge(&mut histories, id.clone(), history.clone());
                }
            }
            fetched.replicas
        };
        let histories: Vec<Vec<Received>> = histories.into_values().collect();
        let mut summary = summary::summarise(&histories, now, STALE);
        summary.replicas = replicas;
        summary
    }
}
