//! Where a captured connection was going before iptables redirected it.
//!
//! REDIRECT rewrites the destination of the connection's packets; conntrack keeps
//! the original, and `getsockopt(SO_ORIGINAL_DST)` (IPv4) or
//! `getsockopt(IP6T_SO_ORIGINAL_DST)` (IPv6) reads it back. socket2 wraps both
//! calls safely, so this needs no `unsafe` of its own.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;

use tokio::net::TcpStream;

/// The original destination of an accepted connection. For a connection that was
/// not redirected this is its own local address (conntrack's tuple is unchanged);
/// callers compare with `local_addr` to tell the two apart. Fails (ENOENT) when
/// conntrack holds no entry for the connection, e.g. without netfilter.
pub(crate) fn original_dst<S: AsFd>(socket: &S, local: SocketAddr) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(socket);
    let addr = match local {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an IP address"))
}

/// Whether `orig` says the connection was redirected to `local` from elsewhere.
pub(crate) fn redirected(orig: SocketAddr, local: SocketAddr) -> bool {
    orig != local
}

/// Where a connection accepted by a transparent outbound listener was going, when
/// it was redirected; None when the app named the proxy itself (as its
/// `http_proxy`), so each request's authority says.
pub(crate) fn outbound_original(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    match original_dst(stream, local) {
        Ok(orig) if redirected(orig, local) => Some(orig),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "no original destination; routing by authority");
            None
        }
    }
}

/// Where the inbound side delivers a redirected connection: the app on loopback at
/// the port the peer dialled. None when the connection was not redirected (nothing
/// says which app port it is for) or was sent to the inbound port itself (which
/// would loop back into the proxy).
pub(crate) fn inbound_app(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let orig = original_dst(stream, local).ok()?;
    if !redirected(orig, local) || orig.port() == local.port() {
        return None;
    }
    let loopback: IpAddr = match orig {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    Some(SocketAddr::new(loopback, orig.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a nat rule conntrack's original tuple is the connection itself (or
    /// there is no entry at all); either way it is never mistaken for a redirect.
    #[test]
    fn an_unredirected_connection_is_not_a_redirect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = std::net::TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let local = server.local_addr().expect("local");
        match original_dst(&server, local) {
            Ok(orig) => assert!(!redirected(orig, local), "{orig} vs {local}"),
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
                ),
                "{e}"
            ),
        }
    }
}
