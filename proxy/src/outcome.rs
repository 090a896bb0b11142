//! How one attempt on an endpoint ended: what outlier ejection, retrying and the
//! latency estimate each judge an attempt by.

/// The end of one attempt (a request, or an opaque connection's connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response with this status (and gRPC status from its headers, if any).
    Response { status: u16, grpc: Option<u32> },
    /// The connection could not be made: the request was never sent.
    NotSent,
    /// Sent, but no response head came back (reset, per-try timeout).
    NoResponse,
    /// Ended by something other than the endpoint: the client left, the request
    /// timed out, or a local limit refused it. Neither a failure nor retried.
    Cancelled,
}

impl Outcome {
    /// No response at all: the endpoint is unreachable or broke off.
    pub(crate) fn is_connect_failure(self) -> bool {
        matches!(self, Outcome::NotSent | Outcome::NoResponse)
    }
}
