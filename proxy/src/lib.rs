//! weft-proxy: the mesh's sidecar data plane.
//!
//! Read top down: `proxy` wires a running proxy from `config`; `listener` accepts;
//! `detect` sniffs the protocol; `outbound` and `inbound` route; `http` forwards
//! requests over pooled connections; `tcp` forwards opaque bytes; `snapshot` holds
//! the dynamic state that `reload` swaps in; `admin` and `metrics` make it visible;
//! `capture` is transparent capture (`weft-proxy init` and original destinations).
//! Per request, `balance` picks an endpoint, `breaker` admits it (concurrency limits,
//! outlier ejection) and `retry` decides whether a failed attempt goes again; their
//! per-endpoint state lives in `state`, outside the snapshot, so swaps keep it.

pub mod admin;
pub mod balance;
pub mod breaker;
pub mod capture;
pub mod config;
pub mod control_plane;
pub mod detect;
pub mod discovery;
pub mod env_config;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod ports;
pub mod probe;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod snapshot;
pub mod state;
pub mod tcp;

/// rustls panics when more than one crypto provider is compiled in and none is
/// chosen; Weft uses ring only and installs it before anything touches TLS.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A hash map for the request path. Its keys come from the proxy's own config and
/// the control plane (endpoints, service names), never inserted by a peer, so it
/// needs no DoS-resistant SipHash; foldhash is several times cheaper per lookup.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
