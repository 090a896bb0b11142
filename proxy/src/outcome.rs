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
    /// The endpoint refused it unprocessed (HTTP/2 REFUSED_STREAM, or past its
    /// GOAWAY's last stream): safe to send again whatever the method, and no
    /// failure of the endpoint's (it is draining, or at its stream limit).
    Refused,
    /// Refused by a local limit before the endpoint was tried. Neither a failure
    /// nor retried.
    Cancelled,
    /// The caller stopped waiting before a response head came (the client left, or
    /// the request timeout ended it), sooner than `HANG_BOUND`. The wait it cost
    /// counts as the endpoint's latency, or an endpoint that never answers would
    /// look idle again once its callers give up; it is no failure for ejection,
    /// since a caller's impatience is not the endpoint's fault, and nothing is left
    /// to retry.
    Abandoned,
    /// Abandoned after waiting `HANG_BOUND` or longer: the endpoint did not answer
    /// in the time its caller allowed. Counted for ejection like a per-try timeout,
    /// so a hung endpoint is ejected even under a policy with no timeouts. `silent`:
    /// the endpoint answered no other request meanwhile either, so it is not slow
    /// but stopped, and one such wait ejects it (the balancer steers away from it
    /// after the first, so waiting for several in a row could take minutes).
    Unanswered { silent: bool },
}

/// How long an abandoned attempt must have waited to count as unanswered.
pub(crate) const HANG_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

impl Outcome {
    /// No response at all: the endpoint is unreachable or broke off.
    pub(crate) fn is_connect_failure(self) -> bool {
        matches!(self, Outcome::NotSent | Outcome::NoResponse)
    }

    /// A caller's abandonment judged by how long the attempt had waited, and
    /// whether the endpoint answered anything else meanwhile.
    pub(crate) fn abandoned_after(waited: std::time::Duration, silent: bool) -> Outcome {
        if waited >= HANG_BOUND {
            Outcome::Unanswered { silent }
        } else {
            Outcome::Abandoned
        }
    }
}
