//! Route building blocks, compiled once when a snapshot is built and cheap on the
//! request path: `matcher` (path, method, headers, query), `filter` (header
//! changes, rewrite, redirect), `split` (weighted backends), `fault` (injected
//! delays and aborts), `rate_limit` (a token bucket). They know no snapshot; the
//! snapshot's `routes` puts them together per service.

pub(crate) mod fault;
pub(crate) mod filter;
pub(crate) mod matcher;
pub(crate) mod rate_limit;
pub(crate) mod split;
