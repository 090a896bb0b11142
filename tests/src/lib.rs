//! Test harness for Weft's end-to-end tests: real processes talking over real
//! sockets on 127.0.0.1.
//!
//! Run: `cargo build --workspace --bins && cargo test -p weft-tests` (the tests run
//! the binaries built into the same target dir and profile; `WEFT_TEST_LOG` sets the
//! proxies' log filter, printed for a failed test).
//!
//! - [`bins`] finds the workspace binaries next to the test executable.
//! - [`ports`] hands out free loopback ports for the listeners a process will bind.
//! - [`process`] runs a binary with its output in a log file and stops it on drop.
//! - [`admin`] is a tiny HTTP client for admin endpoints and readiness polling.
//! - [`metrics`] reads values out of Prometheus text.
//! - [`proxy`] writes a weft-proxy config and runs the proxy.
//! - [`hops`] starts the usual two-proxy path (client pod, server pod);
//!   [`mtls_pair`] the same with identities and mTLS between the proxies.
//! - [`record_app`] is an HTTP/1.1-only Python app that answers with what it got;
//!   [`refusing_app`] an h2c app that refuses streams (REFUSED_STREAM) on purpose.
//! - [`apps`] are in-process backends (HTTP, raw TCP) that record what they saw.
//! - [`client`] sends HTTP/1, HTTP/2 and raw bytes with bounded waits.
//! - [`grpc`] and [`pb`]: a small gRPC echo service and client for streaming tests.
//! - [`h2spec`] builds and runs the HTTP/2 conformance checker h2spec.
//! - [`netns`] is the pod test bed: network namespaces on a bridge, iptables
//!   capture, weft-proxy under its own UID (needs root; see its docs).
//! - [`wire`] captures what crosses the bridge between pods with tshark.
//! - [`node_agent`] registers a Node with a real API server and runs the pods bound
//!   to it as network namespaces (a small kubelet).
//! - [`kube_mesh`] is a cluster with a node agent and Weft installed from
//!   `deploy/k8s` (control plane and injector as pods).
//! - [`control`] runs `weft-control serve` on a mesh file the test rewrites.
//! - [`apiserver`] is a stand-in Kubernetes API server answering TokenReviews.
//! - [`cluster`] is a real Kubernetes control plane (etcd, kube-apiserver,
//!   kube-controller-manager, kube-scheduler) built once by tests/cluster/build.sh.
//! - [`load`] keeps bounded HTTP load running through a proxy and counts failures.
//! - [`demo`] runs `weft-control demo` (as a child, or as the command of a
//!   [`tmux`] session: a terminal program driven by keys and read off the screen)
//!   and reads its summary; `weftctl top`'s plain output.
//! - [`browser`] drives a headless Chromium over DevTools (pages, screenshots).
//! - [`rabbitmq`] runs a RabbitMQ broker of the test's own (ports, data, epmd);
//!   [`kafka`] a Kafka broker (KRaft, jars cached by tests/kafka/install.sh).
//! - [`prometheus`] runs a real Prometheus server and `promtool`; [`tools`] finds
//!   such third-party programs (skip, or fail under `CI=true`, when missing).
//!
//! Tests run on a multi-thread runtime (`#[tokio::test(flavor = "multi_thread",
//! worker_threads = 2)]`): dropping a [`process::Process`] blocks the test's thread
//! while the process drains, and the in-process clients and apps it may be waiting
//! for (an HTTP/2 client answering GOAWAY) must keep running meanwhile.

pub mod admin;
pub mod apiserver;
pub mod apps;
pub mod bins;
pub mod browser;
pub mod checkout;
pub mod client;
pub mod cluster;
pub mod control;
pub mod data;
pub mod demo;
pub mod gateway_api;
pub mod grpc;
pub mod h2spec;
pub mod hops;
pub mod kafka;
pub mod kube_mesh;
pub mod load;
pub mod mesh_ca;
pub mod metrics;
pub mod mtls_pair;
pub mod netns;
pub mod node_agent;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod rabbitmq;
pub mod record_app;
pub mod refusing_app;
pub mod refusing_peer;
pub mod tmux;
pub mod tools;
pub mod wire;

/// Generated code for tests/proto/echo.proto.
pub mod pb {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("weft.test");
}

use std::future::Future;
use std::time::Duration;

/// The longest any single step of a test may take before the test fails. Generous,
/// because CI shares two cores with other work; a healthy run takes milliseconds.
pub const STEP_DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no result within {limit:?}"),
    }
}

/// Polls `check` every few milliseconds until it returns `Some`, or fails the test
/// naming `what` once `limit` has passed. Use it to wait for a state change instead
/// of sleeping for a guessed time.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_every(Duration::from_millis(10), limit, what, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Polls `check` every `every` until it returns `Some`, or errs naming `what` once
/// `limit` has passed.
pub async fn poll_every<T, F, Fut>(
    every: Duration,
    limit: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: condition not reached within {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}
