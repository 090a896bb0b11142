//! Where the proxy's snapshot comes from, and the channel to the control plane.
//! The data path never calls a source: it reads the snapshot a source swaps in.
//!
//! - `file`: the mesh in the config file, re-read on SIGHUP.
//! - `discovery`: `Discovery.Watch` streams from the control plane, per destination.
//! - `control_plane`: the gRPC channel they (and identity's certifier and policy
//!   watch) use.

pub(crate) mod control_plane;
pub(crate) mod discovery;
pub(crate) mod file;
