//! Weft's sidecar injector. One decision and one patch ([`inject::Injector`]) behind
//! two fronts: the mutating admission webhook ([`admission`], served over HTTPS by
//! [`webhook`]) and `weftctl inject` ([`manifest`]). [`top`] is `weftctl top`, the
//! control plane's live view in a terminal.

pub mod admission;
pub mod annotations;
pub mod config;
pub mod inject;
pub mod manifest;
pub mod probes;
pub mod tls;
pub mod top;
pub mod webhook;

pub use config::InjectConfig;
pub use inject::{Injector, Outcome, SkipReason};
