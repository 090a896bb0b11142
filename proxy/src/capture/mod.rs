//! Transparent capture: the app does not know the proxy exists.
//!
//! - [`rules`] turns a [`rules::CaptureConfig`] into the nat-table ruleset
//!   (`weft-proxy init`): outbound TCP is redirected to the outbound listener,
//!   inbound TCP to the inbound listener.
//! - [`iptables`] finds the iptables flavour the node uses (nft or legacy) and
//!   applies a ruleset atomically with `iptables-restore`.
//! - [`init`] is `weft-proxy init`: flags and environment → install, uninstall or
//!   print.
//! - [`listen`] gives transparent listeners an IPv6 twin, where ip6tables
//!   redirects to.
//! - [`orig_dst`] reads where a redirected connection was going
//!   (`SO_ORIGINAL_DST`), which is how the proxy routes captured traffic.

pub mod init;
pub(crate) mod iptables;
pub(crate) mod listen;
pub(crate) mod orig_dst;
pub(crate) mod rules;
