//! Example services that show the mesh's use cases. They know nothing of the mesh: each
//! listens on an address and calls its dependencies at configured URLs, so the mesh can
//! later run each one behind its own `weft-proxy`.
//!
//! Each service lives in a module with a `serve` function (used in-process by the tests)
//! and a thin binary in `src/bin` that parses flags and waits for SIGTERM/SIGINT.

pub mod amqp;
pub mod cloudevents;
pub mod events;
pub mod graphql;
pub mod http_client;
pub mod http_proxy;
pub mod http_server;
pub mod inventory;
pub mod kafka;
pub mod listen;
pub mod loadgen;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod readiness;
pub mod shutdown;
pub mod telemetry;
pub mod users;
pub mod web;
