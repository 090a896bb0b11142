//! Transparent listeners serve both address families. ip6tables' REDIRECT delivers
//! IPv6 connections to `::1` (outbound, from OUTPUT) or the pod's IPv6 address
//! (inbound, from PREROUTING), so a listener configured as `127.0.0.1:7140` or
//! `0.0.0.0:7143` gets an IPv6 twin on `[::1]` or `[::]` at the same port. The twin
//! is IPv6-only, so it neither conflicts with the IPv4 listener nor sees IPv4 as
//! mapped addresses (whose original destination would be unreadable).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// The IPv6 twin of a bound IPv4 loopback or wildcard listener; None for any other
/// address (an operator who names one address chose its family) or when the
/// network namespace has no IPv6 (logged).
pub(crate) fn ipv6_twin(bound: SocketAddr) -> Option<TcpListener> {
    let ip: IpAddr = match bound.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Ipv6Addr::LOCALHOST.into(),
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let addr = SocketAddr::new(ip, bound.port());
    match bind_v6_only(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::info!(%addr, error = %e, "no IPv6 listener; IPv6 traffic is not captured");
            None
        }
    }
}

fn bind_v6_only(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_gets_an_ipv6_twin_on_the_same_port() {
        let v4 = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let bound = v4.local_addr().expect("addr");
        // Hosts without IPv6 get no twin; that is allowed, not an error.
        if let Some(twin) = ipv6_twin(bound) {
            let addr = twin.local_addr().expect("addr");
            assert_eq!(
                addr,
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
            );
        }
        assert!(ipv6_twin("10.1.2.3:80".parse().expect("addr")).is_none());
    }
}
