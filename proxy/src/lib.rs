//! weft-proxy: the mesh's sidecar data plane.
//!
//! Modules in layers; none imports from a layer above it
//! (`tools/modcycles.py proxy/src` finds no cycle):
//!
//! - L6 `proxy` wires a running proxy from `config`.
//! - L5 `outbound` and `inbound` route (`routing` applies a service's routes to
//!   a request); `gateway` takes traffic from outside the mesh (TLS by SNI) into
//!   outbound; `admin` and `probe` answer operators and the kubelet; `report`
//!   sends the control plane the live view's totals.
//! - L4 `http` serves and forwards requests over pooled connections, `tcp`
//!   forwards opaque bytes, `detect` sniffs the protocol, `listener` accepts.
//! - L3 `snapshot` is the dynamic state, and its lookup; `source` (the config
//!   file, the control plane's discovery) builds and swaps it in.
//! - L2 `endpoint`: an endpoint and the stats that outlive snapshots.
//! - L1 building blocks that know no snapshot: `balance` picks an endpoint,
//!   `breaker` admits it (concurrency limits, outlier ejection), `retry` decides
//!   whether a failed attempt goes again, judged by its `outcome`; `route`
//!   (matching, filters, splits, faults, rate limits); `metrics`;
//!   `observe` (access log, trace context and spans, fed by one hook per direction);
//!   `identity` (mTLS, certificates from the control plane).
//! - L0 `clock`, `sync`, `io`, `fd_limit`, and config: `config`, `env_config`, `ports`,
//!   `inbound_policy`, `gateway_config`, `observe_config`.
//!
//! `capture` is transparent capture (`weft-proxy init` and original destinations).

// Items are crate-private unless main.rs or the tests need them, so the compiler
// reports dead code; this keeps a stray `pub` from hiding it again.
#![warn(unreachable_pub)]

mod admin;
mod balance;
mod breaker;
pub mod capture;
mod clock;
pub mod config;
mod detect;
mod endpoint;
mod env_config;
mod fd_limit;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod gateway_config;
mod http;
mod identity;
mod inbound;
mod inbound_policy;
mod io;
mod listener;
pub mod metrics;
mod observe;
mod observe_config;
mod outbound;
mod outcome;
mod ports;
mod probe;
pub mod proxy;
mod replay;
mod report;
mod retry;
mod route;
mod routing;
mod snapshot;
mod source;
mod sync;
mod tcp;

/// rustls panics when more than one crypto provider is compiled in and none is
/// chosen; Weft uses ring only and installs it before anything touches TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A hash map for the request path. Its keys come from the proxy's own config and
/// the control plane (endpoints, service names), never inserted by a peer, so it
/// needs no DoS-resistant SipHash; foldhash is several times cheaper per lookup.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
