//! Honouring the conventional `http_proxy` / `no_proxy` variables for outgoing plain HTTP.
//!
//! An application that cannot be redirected by iptables (no root, a laptop) still reaches
//! the mesh's outbound proxy the way curl, Go and most HTTP libraries do: with `http_proxy`
//! set, every plain-HTTP request is sent to the proxy in absolute form
//! (`GET http://orders/orders/7 HTTP/1.1`), which tells the proxy the destination.
//!
//! Matching follows curl where implementations differ: lowercase variables win over
//! uppercase ones, loopback destinations are proxied unless `no_proxy` names them, and a
//! `no_proxy` domain also matches its subdomains.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a proxy variable could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} is not a usable HTTP proxy: {reason}")]
pub struct ProxyConfigError {
    var: &'static str,
    value: String,
    reason: &'static str,
}

/// Where the proxy listens, as `host:port` (an IPv6 host keeps its brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAddr {
    authority: String,
}

impl ProxyAddr {
    /// The `host:port` to connect to.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// The proxy decision for outgoing plain-HTTP requests, read once at startup.
#[derive(Clone, Debug, Default)]
pub struct ProxySettings {
    proxy: Option<ProxyAddr>,
    no_proxy: NoProxy,
}

impl ProxySettings {
    /// No proxy: every request goes straight to its destination.
    pub fn direct() -> Self {
        Self::default()
    }

    /// Reads `http_proxy`/`HTTP_PROXY` and `no_proxy`/`NO_PROXY` from the environment.
    pub fn from_env() -> Result<Self, ProxyConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`ProxySettings::from_env`], with the variables coming from `lookup`, so the
    /// precedence rules can be tested without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProxyConfigError> {
        let pick = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|var| {
                lookup(var)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (var, v))
            })
        };
        let proxy = match pick("http_proxy", "HTTP_PROXY") {
            Some((var, value)) => Some(parse_proxy(var, &value)?),
            None => None,
        };
        let no_proxy = pick("no_proxy", "NO_PROXY")
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        Ok(Self { proxy, no_proxy })
    }

    /// Settings from explicit values, as the variables would hold them.
    pub fn parse(
        http_proxy: Option<&str>,
        no_proxy: Option<&str>,
    ) -> Result<Self, ProxyConfigError> {
        Self::from_lookup(|name| match name {
            "http_proxy" => http_proxy.map(str::to_owned),
            "no_proxy" => no_proxy.map(str::to_owned),
            _ => None,
        })
    }

    /// The proxy that a request to `uri` must go through, if any. Only `http` URIs are
    /// proxied: `http_proxy` does not apply to other schemes.
    pub fn proxy_for(&self, uri: &Uri) -> Option<&ProxyAddr> {
        let proxy = self.proxy.as_ref()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(80);
        if self.no_proxy.matches(host, port) {
            return None;
        }
        Some(proxy)
    }
}

impl std::fmt::Display for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.proxy {
            None => f.write_str("direct"),
            Some(proxy) if self.no_proxy.everything => {
                write!(f, "direct (no_proxy=* overrides {})", proxy.authority)
            }
            Some(proxy) => write!(
                f,
                "via proxy {} ({} no_proxy entries)",
                proxy.authority,
                self.no_proxy.entries.len()
            ),
        }
    }
}

fn parse_proxy(var: &'static str, value: &str) -> Result<ProxyAddr, ProxyConfigError> {
    let invalid = |reason| ProxyConfigError {
        var,
        value: value.to_owned(),
        reason,
    };
    let value = value.trim();
    // curl accepts a bare `host:port` and assumes http.
    let with_scheme = if value.contains("://") {
        value.to_owned()
    } else {
        format!("http://{value}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| invalid("not a URL of the form http://host:port"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// proxies are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("proxy credentials are not supported"));
    }
    if authority.host().is_empty() {
        return Err(invalid("the URL has no host"));
    }
    let port = authority.port_u16().unwrap_or(80);
    Ok(ProxyAddr {
        authority: format!("{}:{port}", authority.host()),
    })
}

/// The parsed `no_proxy` list.
#[derive(Clone, Debug, Default)]
struct NoProxy {
    everything: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Clone, Debug)]
enum NoProxyEntry {
    /// `example.com` or `.example.com`: the domain and its subdomains.
    Domain {
        name: String,
        port: Option<u16>,
    },
    Ip {
        ip: IpAddr,
        port: Option<u16>,
    },
    /// `10.0.0.0/8`, `fd00::/8`.
    Cidr {
        network: IpAddr,
        prefix: u8,
    },
}

impl NoProxy {
    fn parse(value: &str) -> Self {
        let mut list = Self::default();
        for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if raw == "*" {
                list.everything = true;
            } else if let Some(entry) = NoProxyEntry::parse(raw) {
                list.entries.push(entry);
            } else {
                tracing::warn!(entry = raw, "ignoring an unparsable no_proxy entry");
            }
        }
        list
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.everything {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        self.entries
            .iter()
            .any(|entry| entry.matches(&host, ip, port))
    }
}

impl NoProxyEntry {
    fn parse(raw: &str) -> Option<Self> {
        if let Some((net, prefix)) = raw.split_once('/') {
            let network: IpAddr = net.parse().ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if network.is_ipv4() { 32 } else { 128 };
            return (prefix <= max).then_some(Self::Cidr { network, prefix });
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Some(Self::Ip { ip, port: None });
        }
        let (host, port) = split_port(raw)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Self::Ip { ip, port });
        }
        let name = host
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        (!name.is_empty()).then_some(Self::Domain { name, port })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        let port_ok = |want: &Option<u16>| want.is_none_or(|p| p == port);
        match self {
            Self::Domain { name, port: want } => {
                port_ok(want)
                    && (host == name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|prefix| prefix.ends_with('.')))
            }
            Self::Ip {
                ip: want_ip,
                port: want,
            } => port_ok(want) && ip == Some(*want_ip),
            Self::Cidr { network, prefix } => {
                ip.is_some_and(|ip| in_network(ip, *network, *prefix))
            }
        }
    }
}

/// Splits `host:port` or `[v6]:port`; a missing port is `None`, a malformed one fails.
fn split_port(raw: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match raw.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((raw, None)),
    }
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// A connector for hyper-util's legacy client that dials the proxy instead of the
/// destination when [`ProxySettings`] says so, and marks such connections as proxied so
/// the client writes requests in absolute form.
#[derive(Clone, Debug)]
pub struct ProxyConnector {
    http: HttpConnector,
    settings: Arc<ProxySettings>,
}

impl ProxyConnector {
    /// Wraps `http` (which dials both destinations and the proxy).
    pub fn new(http: HttpConnector, settings: ProxySettings) -> Self {
        Self {
            http,
            settings: Arc::new(settings),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl tower::Service<Uri> for ProxyConnector {
    type Response = ProxiedStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxiedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (target, proxied) = match self.settings.proxy_for(&dst) {
            Some(proxy) => match Uri::builder()
                .scheme("http")
                .authority(proxy.authority())
                .path_and_query("/")
                .build()
            {
                Ok(uri) => (uri, true),
                Err(e) => return Box::pin(async move { Err(e.into()) }),
            },
            None => (dst, false),
        };
        let connecting = self.http.call(target);
        Box::pin(async move {
            let inner = connecting.await?;
            Ok(ProxiedStream { inner, proxied })
        })
    }
}

/// A TCP connection that remembers whether it leads to a proxy.
#[derive(Debug)]
pub struct ProxiedStream {
    inner: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for ProxiedStream {
    fn connected(&self) -> Connected {
        self.inner.connected().proxy(self.proxied)
    }
}

impl Read for ProxiedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl Write for ProxiedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().expect("test URI parses")
    }

    fn proxied(settings: &ProxySettings, target: &str) -> bool {
        settings.proxy_for(&uri(target)).is_some()
    }

    #[test]
    fn unset_variables_mean_direct() {
        let s = ProxySettings::from_lookup(|_| None).expect("valid");
        assert!(!proxied(&s, "http://orders/x"));
    }

    #[test]
    fn proxy_url_forms_resolve_to_host_and_port() {
        for (value, want) in [
            ("http://127.0.0.1:7140", "127.0.0.1:7140"),
            ("http://127.0.0.1:7140/", "127.0.0.1:7140"),
            ("127.0.0.1:7140", "127.0.0.1:7140"),
            ("http://proxy.local", "proxy.local:80"),
            ("http://[::1]:7140", "[::1]:7140"),
        ] {
            let s = ProxySettings::parse(Some(value), None).expect("valid proxy");
            let got = s
                .proxy_for(&uri("http://orders/x"))
                .map(ProxyAddr::authority);
            assert_eq!(got, Some(want), "for {value}");
        }
    }

    #[test]
    fn unusable_proxy_values_are_errors_naming_the_variable() {
        for value in [
            "https://proxy:443",
            "http://user:pw@proxy:80",
            "http://",
            "ht tp://x",
        ] {
            let err = ProxySettings::parse(Some(value), None).expect_err(value);
            assert!(err.to_string().contains("http_proxy"), "{err}");
        }
    }

    #[test]
    fn lowercase_wins_over_uppercase_and_blank_is_unset() {
        let s = ProxySettings::from_lookup(|name| match name {
            "http_proxy" => Some("http://lower:1".into()),
            "HTTP_PROXY" => Some("http://upper:2".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(s.proxy.as_ref().map(ProxyAddr::authority), Some("lower:1"));

        let s = ProxySettings::from_lookup(|name| match name {
            "http_proxy" => Some("  ".into()),
            "HTTP_PROXY" => Some("http://upper:2".into()),
            "NO_PROXY" => Some("orders".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(s.proxy.as_ref().map(ProxyAddr::authority), Some("upper:2"));
        assert!(!proxied(&s, "http://orders/x"));
    }

    #[test]
    fn only_plain_http_is_proxied() {
        let s = ProxySettings::parse(Some("http://p:1"), None).expect("valid");
        assert!(proxied(&s, "http://orders/x"));
        assert!(!proxied(&s, "https://orders/x"));
        assert!(!proxied(&s, "/relative"));
    }

    #[test]
    fn no_proxy_domains_match_themselves_and_subdomains_only() {
        let s = ProxySettings::parse(Some("http://p:1"), Some("example.com, .svc.local,*.corp"))
            .expect("valid");
        assert!(!proxied(&s, "http://example.com/"));
        assert!(!proxied(&s, "http://api.EXAMPLE.com:8080/"));
        assert!(!proxied(&s, "http://orders.ns.svc.local/"));
        assert!(!proxied(&s, "http://svc.local/"));
        assert!(!proxied(&s, "http://a.corp/"));
        assert!(proxied(&s, "http://notexample.com/"));
        assert!(proxied(&s, "http://example.com.evil/"));
        assert!(proxied(&s, "http://orders/"));
    }

    #[test]
    fn no_proxy_ports_ips_and_networks() {
        let s = ProxySettings::parse(
            Some("http://p:1"),
            Some("orders:8081,127.0.0.1,[::1]:9000,10.0.0.0/8,fd00::/8,::2"),
        )
        .expect("valid");
        assert!(!proxied(&s, "http://orders:8081/"));
        assert!(proxied(&s, "http://orders:8082/"));
        assert!(proxied(&s, "http://orders/"));
        assert!(!proxied(&s, "http://127.0.0.1:1234/"));
        assert!(proxied(&s, "http://127.0.0.2/"));
        assert!(!proxied(&s, "http://[::1]:9000/"));
        assert!(proxied(&s, "http://[::1]:9001/"));
        assert!(!proxied(&s, "http://10.20.30.40/"));
        assert!(proxied(&s, "http://11.0.0.1/"));
        assert!(!proxied(&s, "http://[fd12::1]/"));
        assert!(!proxied(&s, "http://[::2]/"));
    }

    #[test]
    fn no_proxy_star_disables_the_proxy_and_junk_entries_are_ignored() {
        let s = ProxySettings::parse(Some("http://p:1"), Some("*")).expect("valid");
        assert!(!proxied(&s, "http://orders/"));
        let s = ProxySettings::parse(Some("http://p:1"), Some("host:notaport,10.0.0.0/99,,"))
            .expect("valid");
        assert!(proxied(&s, "http://host/"));
        assert!(proxied(&s, "http://10.0.0.1/"));
    }

    #[test]
    fn the_choice_is_described_for_the_startup_log() {
        let describe = |proxy, no_proxy| {
            ProxySettings::parse(proxy, no_proxy)
                .expect("valid")
                .to_string()
        };
        assert_eq!(describe(None, None), "direct");
        assert_eq!(
            describe(Some("http://127.0.0.1:7140"), Some("a,b")),
            "via proxy 127.0.0.1:7140 (2 no_proxy entries)"
        );
        assert_eq!(
            describe(Some("p:1"), Some("*")),
            "direct (no_proxy=* overrides p:1)"
        );
    }

    #[test]
    fn cidr_prefix_edges() {
        let any4: IpAddr = "0.0.0.0".parse().expect("ip");
        let ip: IpAddr = "192.168.1.1".parse().expect("ip");
        assert!(in_network(ip, any4, 0));
        assert!(in_network(ip, ip, 32));
        assert!(!in_network("192.168.1.2".parse().expect("ip"), ip, 32));
        assert!(!in_network(ip, "::".parse().expect("ip"), 0));
    }
}
