//! The other control-plane replicas' reports. Each proxy reports to one replica, so
//! a replica alone sees part of the mesh: it serves its own proxies' recent reports
//! at `/api/reports` and, given peers (`--live-peers`), fetches theirs about once a
//! second in the background, so a summary never waits on a peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::watch;
use weft_api::live::Replicas;
use weft_api::v1;

use super::{LiveView, Received};

/// The header naming the replica that answered `/api/reports`: a replica that
/// reaches itself (a headless Service's name lists every replica) skips its own answer.
pub const REPLICA_HEADER: &str = "x-weft-replica";
/// How long one round of fetches may take; a peer slower than this is left out.
const FETCH_TIMEOUT: Duration = Duration::from_millis(800);
const FETCH_INTERVAL: Duration = Duration::from_secs(1);
/// A peer's answer bigger than this is refused.
const MAX_EXPORT_BYTES: usize = 32 * 1024 * 1024;

/// `/api/reports`' body (protobuf): every proxy's recent reports with their ages,
/// since the replicas' clocks (`Instant`s) are not comparable.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Export {
    #[prost(message, repeated, tag = "1")]
    pub reports: Vec<Aged>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Aged {
    /// How long before the answer the report arrived.
    #[prost(uint64, tag = "1")]
    pub age_ms: u64,
    #[prost(message, optional, tag = "2")]
    pub report: Option<v1::ProxyReport>,
}

/// What the last round of fetches brought.
#[derive(Default)]
pub struct PeerReports {
    /// By proxy id.
    pub histories: HashMap<String, Vec<Received>>,
    pub replicas: Option<Replicas>,
}

impl LiveView {
    /// This replica's own proxies' reports as of `now`, for `/api/reports`.
    pub fn export(&self, now: Instant) -> Export {
        let reports = self
            .own_histories(now)
            .into_values()
            .flatten()
            .map(|(at, report)| Aged {
                age_ms: u64::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u64::MAX),
                report: Some((*report).clone()),
            })
            .collect();
        Export { reports }
    }
}

/// Reads an export received at `now` back into histories by proxy id, oldest first.
fn import(export: Export, now: Instant) -> HashMap<String, Vec<Received>> {
    let mut histories: HashMap<String, Vec<Received>> = HashMap::new();
    for aged in export.reports {
        let Some(report) = aged.report else { continue };
        let Some(id) = report.node.as_ref().map(|n| n.id.clone()) else {
            continue;
        };
        let Some(at) = now.checked_sub(Duration::from_millis(aged.age_ms)) else {
            continue;
        };
        histories
            .entry(id)
            .or_default()
            .push((at, Arc::new(report)));
    }
    for history in histories.values_mut() {
        history.sort_by_key(|(at, _)| *at);
    }
    histories
}

/// Fetches the peers' reports every second until `stopping` turns true. `peers` are
/// `HOST:PORT` admin addresses; a name is resolved each round and every address it
/// has is a replica.
pub async fn run(
    live: Arc<LiveView>,
    peers: Vec<String>,
    instance: String,
    mut stopping: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(FETCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let round = tokio::time::timeout(FETCH_TIMEOUT, fetch_all(&peers, &instance));
        let fetched = round.await.unwrap_or_default();
        live.set_peers(fetched);
    }
}

/// One round: each peer's reports, merged. A peer that does not answer in time
/// counts in `total` and not in `answered`.
async fn fetch_all(peers: &[String], instance: &str) -> PeerReports {
    let mut addrs = Vec::new();
    for peer in peers {
        match tokio::net::lookup_host(peer.as_str()).await {
            Ok(found) => addrs.extend(found),
            Err(error) => tracing::debug!(%peer, %error, "live view peer not resolved"),
        }
    }
    addrs.sort();
    addrs.dedup();
    let now = Instant::now();
    let answers = futures_util::future::join_all(addrs.iter().map(|addr| {
        let addr = *addr;
        async move { tokio::time::timeout(FETCH_TIMEOUT, fetch(addr)).await }
    }))
    .await;
    let mut merged = PeerReports::default();
    let (mut answered, mut total) = (1, 1);
    for (addr, answer) in addrs.iter().zip(answers) {
        match answer {
            Ok(Ok((replica, _))) if replica == instance => {}
            Ok(Ok((_, export))) => {
                answered += 1;
                total += 1;
                for (id, history) in import(export, now) {
                    merge(&mut merged.histories, id, history);
                }
            }
            Ok(Err(error)) => {
                total += 1;
                tracing::debug!(%addr, %error, "live view peer failed");
            }
            Err(_) => {
                total += 1;
                tracing::debug!(%addr, "live view peer timed out");
            }
        }
    }
    merged.replicas = Some(Replicas { answered, total });
    merged
}

/// Keeps, for one proxy, the history whose last report is the newest: a proxy that
/// moved between replicas shows once, as the replica it reports to now sees it.
pub fn merge(into: &mut HashMap<String, Vec<Received>>, id: String, history: Vec<Received>) {
    let last = |h: &[Received]| h.last().map(|(at, _)| *at);
    match into.get(&id) {
        Some(kept) if last(kept) >= last(&history) => {}
        _ => {
            into.insert(id, history);
        }
    }
}

/// `GET /api/reports` from one peer: the answering replica's id and its export.
async fn fetch(addr: SocketAddr) -> anyhow::Result<(String, Export)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let request = Request::get("/api/reports")
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let result = async {
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "answered {}",
            response.status()
        );
        let replica = response
            .headers()
            .get(REPLICA_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = Limited::new(response.into_body(), MAX_EXPORT_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the reports: {e}"))?
            .to_bytes();
        Ok((replica, Export::decode(body)?))
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, sequence: u64) -> v1::ProxyReport {
        v1::ProxyReport {
            node: Some(v1::Node {
                id: id.into(),
                ..Default::default()
            }),
            sequence,
            ..Default::default()
        }
    }

    #[test]
    fn an_export_comes_back_with_its_ages_and_order() {
        let live = LiveView::new();
        let t0 = Instant::now();
        live.record(t0, report("web-1", 1));
        live.record(t0 + Duration::from_secs(1), report("web-1", 2));
        live.record(t0 + Duration::from_secs(1), report("shop-1", 1));
        let sent_at = t0 + Duration::from_secs(3);
        let bytes = live.export(sent_at).encode_to_vec();
        // The receiver's clock differs; only ages carry over.
        let received_at = Instant::now() + Duration::from_secs(100);
        let histories = import(
            Export::decode(bytes.as_slice()).expect("decodes"),
            received_at,
        );
        let web = &histories["web-1"];
        let ages: Vec<_> = web.iter().map(|(at, _)| received_at - *at).collect();
        assert_eq!(ages, [Duration::from_secs(3), Duration::from_secs(2)]);
        assert_eq!(web[1].1.sequence, 2);
        assert_eq!(histories["shop-1"].len(), 1);
    }

    #[test]
    fn a_proxy_seen_by_two_replicas_counts_once_as_the_newest_sees_it() {
        let t0 = Instant::now();
        let old = vec![(t0, Arc::new(report("web-1", 1)))];
        let new = vec![(t0 + Duration::from_secs(2), Arc::new(report("web-1", 9)))];
        let mut into = HashMap::new();
        merge(&mut into, "web-1".into(), new.clone());
        merge(&mut into, "web-1".into(), old.clone());
        assert_eq!(into["web-1"][0].1.sequence, 9);
        let mut into = HashMap::new();
        merge(&mut into, "web-1".into(), old);
        merge(&mut into, "web-1".into(), new);
        assert_eq!(into["web-1"][0].1.sequence, 9);
        assert_eq!(into.len(), 1);
    }
}
