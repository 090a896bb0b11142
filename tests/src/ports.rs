//! Free loopback ports for listeners that another process binds.
//!
//! A port is handed out once per test process and checked free by binding it. The
//! range sits below Linux's ephemeral range (32768-60999), so outgoing connections
//! made meanwhile cannot take a port between the check and the process binding it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn start_offset() -> u32 {
    // Spread concurrent test processes over the range.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN
}

/// A port on 127.0.0.1 that nothing listens on now and that this process has not
/// handed out before.
pub fn free_port() -> u16 {
    let _ = NEXT.compare_exchange(0, start_offset() + 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = u16::try_from(FIRST + n % SPAN).unwrap_or(u16::MAX);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// An address where nothing listens (for connect-refused cases).
pub fn closed_addr() -> SocketAddr {
    free_addr()
}
