//! Weft's control plane: reads the mesh description from a source, keeps the
//! per-destination state proxies subscribe to, and streams it to them.
//!
//! Data flows one way: [`source`] → [`index`] → [`discovery`]; [`admin`] and
//! [`metrics`] observe; [`liveview`] gathers what the proxies report. [`server`] wires them together and [`cli`] is the binary.

pub mod admin;
pub mod bootstrap;
pub mod cli;
pub mod demo;
pub mod discovery;
pub mod identity;
pub mod index;
pub mod liveview;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod source;
