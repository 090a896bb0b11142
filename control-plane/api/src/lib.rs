//! Weft's wire API (`weft.v1`) and the mesh description that both the proxy's file
//! mode and the control plane's file source read.

pub mod live;
pub mod logs;
pub mod mesh;
pub mod ports;
pub mod route;
pub mod spiffe;
pub mod yaml;

/// Generated `weft.v1` messages, clients and servers.
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("weft.v1");
}
