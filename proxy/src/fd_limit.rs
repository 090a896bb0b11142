//! The open-file limit and the connection cap it implies. Over RLIMIT_NOFILE,
//! accept fails with EMFILE and so does every upstream connect, which would break
//! the connections already established along with the new ones; capping accepted
//! connections below the limit keeps descriptors for their upstream side.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for what is not a proxied connection: listeners, the admin
/// server, the control-plane channel, log and config files, DNS.
const RESERVED: u64 = 64;
/// A cap below this would make the proxy useless; it is used even if the limit is
/// lower, and the operator is warned.
const MIN_CAP: usize = 16;

/// Raises the soft open-file limit to the hard one (as the Go runtime and Envoy's
/// launchers do), then returns the connection cap: `configured`, or less when the
/// limit cannot hold that many (each proxied connection takes two descriptors,
/// downstream and upstream).
pub(crate) fn connection_cap(configured: usize) -> usize {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return configured;
    };
    let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let cap = cap_for(configured, soft);
    if cap < configured {
        tracing::warn!(
            open_files = soft,
            configured,
            cap,
            "the open-file limit holds fewer connections than limits.max_connections; \
             capping accepted connections"
        );
    }
    cap
}

fn cap_for(configured: usize, open_files: u64) -> usize {
    let fits = usize::try_from(open_files.saturating_sub(RESERVED) / 2).unwrap_or(usize::MAX);
    configured.min(fits.max(MIN_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstream_connections_and_reserved_files() {
        assert_eq!(cap_for(10_000, 1_048_576), 10_000);
        assert_eq!(cap_for(10_000, 256), 96);
        assert_eq!(cap_for(50, 256), 50);
        assert_eq!(cap_for(10_000, 32), MIN_CAP);
    }
}
