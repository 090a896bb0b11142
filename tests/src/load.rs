//! Steady HTTP/1.1 load through a proxy while a test changes the mesh: a few
//! keep-alive clients, each bounded in requests and time, counting answers by the
//! app that gave them and keeping the first failures for the assertion message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::task::JoinHandle;

use crate::client::{self, H1Client};

/// Failures kept verbatim; the rest are only counted.
const KEPT_FAILURES: usize = 20;

/// What the load sends and for how long at most.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where the clients connect: a proxy's outbound or upstream listener.
    pub target: SocketAddr,
    /// Request target as sent: absolute (`http://orders/`) for an outbound
    /// listener, a path for an upstream listener.
    pub uri: String,
    pub clients: usize,
    /// Pause after each answer, so the load leaves CPU to the processes under test.
    pub pause: Duration,
    pub max_requests_per_client: usize,
    pub max_time: Duration,
}

impl LoadSpec {
    pub fn new(target: SocketAddr, uri: &str) -> LoadSpec {
        LoadSpec {
            target,
            uri: uri.to_string(),
            clients: 4,
            pause: Duration::from_millis(2),
            max_requests_per_client: 50_000,
            max_time: Duration::from_secs(90),
        }
    }
}

#[derive(Default)]
struct Stats {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
    /// Successful answers by the `x-app` header of the answer.
    by_app: Mutex<BTreeMap<String, usize>>,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut kept = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < KEPT_FAILURES {
            kept.push(what);
        }
    }
}

/// Running load; stop it with [`Load::stop`] (dropping it aborts the clients).
pub struct Load {
    stats: Arc<Stats>,
    clients: Vec<JoinHandle<()>>,
}

/// The outcome of a load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: usize,
    pub by_app: BTreeMap<String, usize>,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stats = Arc::new(Stats::default());
        let clients = (0..spec.clients)
            .map(|_| tokio::spawn(run_client(spec.clone(), stats.clone())))
            .collect();
        Load { stats, clients }
    }

    pub fn ok(&self) -> usize {
        self.stats.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> usize {
        self.stats.failed.load(Ordering::SeqCst)
    }

    /// Successful answers from the app named `app` so far.
    pub fn answered_by(&self, app: &str) -> usize {
        let by_app = self.stats.by_app.lock().unwrap_or_else(|p| p.into_inner());
        by_app.get(app).copied().unwrap_or(0)
    }

    pub fn by_app(&self) -> BTreeMap<String, usize> {
        self.stats
            .by_app
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether every client is still sending (none hit its bounds or stopped).
    pub fn running(&self) -> bool {
        self.clients.iter().all(|c| !c.is_finished())
    }

    /// Waits until `n` more requests than now have succeeded; fails the test after
    /// `limit`, or at once if the clients have stopped.
    pub async fn wait_more_ok(&self, n: usize, limit: Duration) {
        let target = self.ok() + n;
        crate::eventually(limit, &format!("{n} more successful requests"), || async {
            assert!(
                self.running() || self.ok() >= target,
                "the load stopped early (bounds reached?)"
            );
            (self.ok() >= target).then_some(())
        })
        .await;
    }

    /// Stops the clients and waits for them (each finishes its current request).
    pub async fn stop(mut self) -> LoadReport {
        self.stats.stop.store(true, Ordering::SeqCst);
        for c in std::mem::take(&mut self.clients) {
            crate::within(crate::STEP_DEADLINE, "load client to stop", c)
                .await
                .expect("load client panicked");
        }
        LoadReport {
            ok: self.stats.ok.load(Ordering::SeqCst),
            failed: self.stats.failed.load(Ordering::SeqCst),
            by_app: self
                .stats
                .by_app
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            failures: self
                .stats
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &self.clients {
            c.abort();
        }
    }
}

impl LoadReport {
    /// Fails the test, listing the first failures, unless every request succeeded.
    pub fn assert_no_failures(&self) {
        assert_eq!(
            self.failed,
            0,
            "{} of {} requests failed; the first ones:\n{}",
            self.failed,
            self.ok + self.failed,
            self.failures.join("\n")
        );
    }
}

/// One client: keep-alive requests until told to stop or a bound is reached. A
/// failure is counted and the client reconnects.
async fn run_client(spec: LoadSpec, stats: Arc<Stats>) {
    let started = Instant::now();
    let mut conn: Option<H1Client> = None;
    for _ in 0..spec.max_requests_per_client {
        if stats.stop.load(Ordering::SeqCst) || started.elapsed() > spec.max_time {
            return;
        }
        if conn.is_none() {
            match H1Client::connect(spec.target).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    stats.fail(format!("connect to {}: {e:#}", spec.target));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let req = client::request("GET", &spec.uri, &[("host", "load.test")], "");
        let req = if spec.uri.starts_with('/') {
            req
        } else {
            // An absolute URI carries the destination; the Host header must agree.
            client::get(&spec.uri)
        };
        match c.send(req).await {
            Ok(r) if r.status == StatusCode::OK => {
                stats.ok.fetch_add(1, Ordering::SeqCst);
                let app = r.header("x-app").unwrap_or("?").to_string();
                let mut by_app = stats.by_app.lock().unwrap_or_else(|p| p.into_inner());
                *by_app.entry(app).or_default() += 1;
            }
            Ok(r) => {
                stats.fail(format!(
                    "{:?}: answered {} weft-error={:?} body={:?}",
                    started.elapsed(),
                    r.status,
                    r.header("weft-error"),
                    r.text()
                ));
            }
            Err(e) => {
                stats.fail(format!("{:?}: {e:#}", started.elapsed()));
                conn = None;
            }
        }
        if !spec.pause.is_zero() {
            tokio::time::sleep(spec.pause).await;
        }
    }
}
