//! The proxy's config from the environment: what `weft-proxy run` uses without
//! `--config` (WEFT_CONFIG unset), as in an injected pod. The variables are the
//! injector's contract (see the top of weft-inject's `inject.rs`); this module turns
//! them into the same validated [`Config`] a file gives.
//!
//! | variable | default | meaning here |
//! |---|---|---|
//! | `WEFT_CONTROL_PLANE` | required | `host:port`: gRPC over TLS, the host is the TLS server name (`http://` or `https://` URLs are taken as they are) |
//! | `WEFT_TRUST_ANCHORS` | | PEM roots that verify the control plane; or `WEFT_TRUST_BUNDLE`, a PEM file |
//! | `WEFT_TRUST_DOMAIN` | `cluster.local` | SPIFFE trust domain |
//! | `WEFT_IDENTITY_TOKEN_FILE` | | the identity proof, re-read on every certificate request; or `WEFT_IDENTITY_TOKEN`, the proof itself |
//! | `WEFT_NODE_ID` | `weft-proxy-<pid>` | `Node.id` |
//! | `WEFT_NODE_NAMESPACE` | required | namespace of the SPIFFE ID |
//! | `WEFT_NODE_SERVICE_ACCOUNT` | required | service account of the SPIFFE ID |
//! | `WEFT_NODE_WORKLOAD` | the service account | the inbound metrics' `service` label |
//! | `WEFT_NODE_IP` | | the pod's IP (logged) |
//! | `WEFT_OUTBOUND_PORT` | `7140` | transparent listener on 127.0.0.1 (and `[::1]`) |
//! | `WEFT_INBOUND_PORT` | `7143` | transparent listener on all addresses; the app port is the original destination |
//! | `WEFT_ADMIN_PORT` | `7191` | admin server on all addresses (kubelet probes, Prometheus); `/shutdown` and `/config` answer loopback callers only |
//! | `WEFT_OPAQUE_PORTS` | the well-known server-first and broker ports (`weft_api::ports::DEFAULT_OPAQUE_PORTS`) | destination and app ports never sniffed (both directions); empty: none |
//! | `WEFT_HTTP1_PORTS` | none | app ports that speak HTTP/1.1 only: HTTP/2 requests to them (except gRPC) are sent on as HTTP/1.1 |
//! | `WEFT_HTTP2_PORTS` | none | app ports that speak HTTP/2 only (h2c): HTTP/1 requests to them (except upgrades and CONNECT) are sent on as HTTP/2; none may be in `WEFT_HTTP1_PORTS` |
//! | `WEFT_HTTP1_OVER_HTTP2` | `true` | `false`: HTTP/1 to peer proxies on its own connections, as before the upgrade (both ways); `1`: only `weft.h2-orig/1`, as before its /2 |
//! | `WEFT_PROBE_PORTS` | none | app ports whose rewritten kubelet probes (HTTP and gRPC) the admin server forwards |
//! | `WEFT_LOG` | `info` | `tracing` filter (read by `main`, in both modes); release builds log nothing finer than `debug` |
//! | `WEFT_ACCESS_LOG` | off | `stdout`, `stderr` or a file: one JSON line per request (the injector's `weft.io/access-log` annotation) |
//! | `WEFT_ACCESS_LOG_BUFFER` | `4096` | lines waiting for the writer before lines are dropped (counted in `weft_access_log_dropped_total`) |
//! | `WEFT_TRACE_COLLECTOR` | off | OTLP/gRPC collector (`http://host:port`) the proxy's spans go to |
//! | `WEFT_TRACE_SAMPLE_RATIO` | `0.01` | share of new traces sampled (a caller's `traceparent` decides for its own) |
//! | `WEFT_LOG_FORMAT` | `plain` | `plain` or `json` log lines (read by `main`, in both modes; also `--log-format`) |
//!
//! A config file, when given, is the whole config: these variables are then not
//! read (except `WEFT_IDENTITY_TOKEN` and `WEFT_TRUST_BUNDLE`, which a file may
//! leave to the environment as before). Mixing two sources field by field would
//! make "what is this proxy running with" a question with two answers.
//!
//! Inbound policy starts strict (mTLS only, any meshed caller) until the control
//! plane's `Policy.WatchInbound` says otherwise.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use weft_api::mesh::{MeshSpec, Name};
use weft_api::spiffe::SpiffeId;

use crate::config::Token;
use crate::config::TrustAnchors;
use crate::config::{
    Config, ConfigError, Http1OverHttp2, IdentityConfig, LimitsConfig, NodeConfig, default_node_id,
    default_trust_domain, default_workers,
};
use crate::inbound_policy::InboundPolicy;
use crate::observe_config::{self, LogSink};
use crate::ports::PortSet;

pub(crate) const DEFAULT_OUTBOUND_PORT: u16 = 7140;
pub(crate) const DEFAULT_INBOUND_PORT: u16 = 7143;
pub(crate) const DEFAULT_ADMIN_PORT: u16 = 7191;

impl Config {
    /// The config from this process's environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// The config from variables `lookup` gives; an unset or blank variable is
    /// absent. Errors name the variable.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let invalid =
            |name: &str, reason: String| ConfigError::Invalid(format!("{name}: {reason}"));
        let required = |name: &str, what: &str| {
            get(name).ok_or_else(|| invalid(name, format!("required ({what})")))
        };

        let control_plane = control_plane_url(&required(
            "WEFT_CONTROL_PLANE",
            "the control plane's host:port; or give --config",
        )?)
        .map_err(|e| invalid("WEFT_CONTROL_PLANE", e))?;

        let namespace = required("WEFT_NODE_NAMESPACE", "the pod's namespace")?;
        let namespace = Name::try_from(namespace.clone())
            .map_err(|e| invalid("WEFT_NODE_NAMESPACE", format!("{namespace:?}: {e}")))?;
        let account = required("WEFT_NODE_SERVICE_ACCOUNT", "the pod's service account")?;
        let trust_domain = get("WEFT_TRUST_DOMAIN").unwrap_or_else(default_trust_domain);
        let id = SpiffeId::new(&trust_domain, namespace.as_str(), &account).map_err(|e| {
            invalid(
                "WEFT_TRUST_DOMAIN",
                format!("with WEFT_NODE_NAMESPACE and WEFT_NODE_SERVICE_ACCOUNT: {e}"),
            )
        })?;
        let ip = get("WEFT_NODE_IP")
            .map(|v| {
                v.parse::<IpAddr>()
                    .map_err(|_| invalid("WEFT_NODE_IP", format!("{v:?} is not an IP address")))
            })
            .transpose()?;

        let token = match (get("WEFT_IDENTITY_TOKEN_FILE"), get("WEFT_IDENTITY_TOKEN")) {
            (Some(file), _) => Token::File(PathBuf::from(file)),
            (None, Some(token)) => Token::Inline(token),
            (None, None) => {
                return Err(invalid(
                    "WEFT_IDENTITY_TOKEN_FILE",
                    "required (or WEFT_IDENTITY_TOKEN): the proof of identity for certificates"
                        .into(),
                ));
            }
        };

        let anchors = match (get("WEFT_TRUST_ANCHORS"), get("WEFT_TRUST_BUNDLE")) {
            (Some(pem), _) => {
                // Env values lose nothing but surrounding blanks; PEM ends with a newline.
                let anchors = TrustAnchors::Pem(format!("{pem}\n"));
                anchors.certificates().map_err(ConfigError::Invalid)?;
                Some(anchors)
            }
            (None, Some(file)) => Some(TrustAnchors::File(PathBuf::from(file))),
            (None, None) => None,
        };
        if anchors.is_none() && control_plane.starts_with("https://") {
            return Err(invalid(
                "WEFT_TRUST_ANCHORS",
                "required (or WEFT_TRUST_BUNDLE, a file): the roots that verify the \
                 control plane's TLS certificate"
                    .into(),
            ));
        }

        let port = |name: &str, default: u16| -> Result<u16, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u16>() {
                    Ok(p) if p > 0 => Ok(p),
                    _ => Err(invalid(name, format!("{v:?} is not a port in 1-65535"))),
                },
            }
        };
        let outbound = port("WEFT_OUTBOUND_PORT", DEFAULT_OUTBOUND_PORT)?;
        let inbound = port("WEFT_INBOUND_PORT", DEFAULT_INBOUND_PORT)?;
        let admin = port("WEFT_ADMIN_PORT", DEFAULT_ADMIN_PORT)?;
        for (a, b, pa, pb) in [
            ("WEFT_OUTBOUND_PORT", "WEFT_INBOUND_PORT", outbound, inbound),
            ("WEFT_OUTBOUND_PORT", "WEFT_ADMIN_PORT", outbound, admin),
            ("WEFT_INBOUND_PORT", "WEFT_ADMIN_PORT", inbound, admin),
        ] {
            if pa == pb {
                return Err(invalid(b, format!("{pb} is also {a}")));
            }
        }
        let ports = |name: &str| {
            PortSet::parse(&get(name).unwrap_or_default()).map_err(|e| invalid(name, e))
        };
        // Unset: the well-known server-first and broker ports; set, even empty: the
        // pod's own list (the injector writes the annotation's, or the default).
        let opaque = match lookup("WEFT_OPAQUE_PORTS") {
            None => PortSet::default_opaque(),
            Some(_) => ports("WEFT_OPAQUE_PORTS")?,
        };
        let probe_ports = ports("WEFT_PROBE_PORTS")?;
        let http1_ports = ports("WEFT_HTTP1_PORTS")?;
        let http2_ports = ports("WEFT_HTTP2_PORTS")?;
        if let Some(port) = http2_ports.first_shared(&http1_ports) {
            return Err(invalid(
                "WEFT_HTTP2_PORTS",
                format!("port {port} is also in WEFT_HTTP1_PORTS"),
            ));
        }
        let http1_over_http2 = match get("WEFT_HTTP1_OVER_HTTP2").as_deref() {
            None | Some("true" | "2") => Http1OverHttp2::On,
            Some("false") => Http1OverHttp2::Off,
            Some("1") => Http1OverHttp2::V1Only,
            Some(v) => {
                return Err(invalid(
                    "WEFT_HTTP1_OVER_HTTP2",
                    format!("{v:?} is not true, false, 1 or 2"),
                ));
            }
        };
        let access_log = match get("WEFT_ACCESS_LOG").as_deref() {
            None | Some("off" | "false") => None,
            Some(to) => {
                let sink = LogSink::parse(to).map_err(|e| invalid("WEFT_ACCESS_LOG", e))?;
                let buffer = get("WEFT_ACCESS_LOG_BUFFER")
                    .map(|b| {
                        b.parse::<usize>()
                            .map_err(|e| invalid("WEFT_ACCESS_LOG_BUFFER", e.to_string()))
                    })
                    .transpose()?;
                Some(
                    observe_config::access_log(sink, buffer, "WEFT_ACCESS_LOG_BUFFER")
                        .map_err(ConfigError::Invalid)?,
                )
            }
        };

        let tracing = match get("WEFT_TRACE_COLLECTOR") {
            None => None,
            Some(collector) => {
                let ratio = get("WEFT_TRACE_SAMPLE_RATIO")
                    .map(|r| {
                        r.parse::<f64>()
                            .map_err(|e| invalid("WEFT_TRACE_SAMPLE_RATIO", e.to_string()))
                    })
                    .transpose()?;
                Some(
                    observe_config::tracing_config(&collector, ratio, None, "")
                        .map_err(|e| invalid("WEFT_TRACE_COLLECTOR or _SAMPLE_RATIO", e))?,
                )
            }
        };
        let any_v4 = IpAddr::from([0, 0, 0, 0]);
        Ok(Config {
            path: None,
            workers: default_workers(),
            node: NodeConfig {
                id: get("WEFT_NODE_ID").unwrap_or_else(default_node_id),
                namespace,
                workload: Some(get("WEFT_NODE_WORKLOAD").unwrap_or_else(|| account.clone())),
                service_account: Some(account),
                ip,
            },
            outbound: Some(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), outbound)),
            outbound_transparent: true,
            outbound_opaque_ports: opaque.clone(),
            inbound: Some((SocketAddr::new(any_v4, inbound), None)),
            inbound_opaque_ports: opaque,
            inbound_http1_ports: http1_ports,
            inbound_http2_ports: http2_ports,
            admin: SocketAddr::new(any_v4, admin),
            probe_ports,
            upstreams: Vec::new(),
            limits: LimitsConfig::default(),
            control_plane: Some(control_plane.clone()),
            identity: Some(IdentityConfig {
                id,
                token,
                control_plane,
                inbound: InboundPolicy::default(),
                http1_over_http2,
            }),
            trust_bundle: anchors,
            mesh: MeshSpec::default(),
            gateway: None,
            access_log,
            tracing,
        })
    }
}

/// `host:port` becomes `https://host:port`; an `http://` or `https://` URL stays.
fn control_plane_url(value: &str) -> Result<String, String> {
    let url = if value.starts_with("http://") || value.starts_with("https://") {
        value.to_string()
    } else {
        format!("https://{value}")
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{value:?} is not host:port"))?;
    let has_path = uri.path_and_query().is_some_and(|p| p.as_str() != "/");
    if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() || has_path {
        return Err(format!("{value:?} is not host:port"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::inbound_policy::TlsMode;

    /// A self-signed certificate, as PEM, for WEFT_TRUST_ANCHORS.
    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertificateParams::new(vec!["weft-ca".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert")
            .pem()
    }

    fn pod_env() -> HashMap<String, String> {
        [
            ("WEFT_CONTROL_PLANE", "weft-control.weft-system.svc:7443"),
            ("WEFT_TRUST_DOMAIN", "example.org"),
            (
                "WEFT_IDENTITY_TOKEN_FILE",
                "/var/run/secrets/weft.io/serviceaccount/token",
            ),
            ("WEFT_NODE_ID", "web-7d9f-abcde"),
            ("WEFT_NODE_NAMESPACE", "shop"),
            ("WEFT_NODE_SERVICE_ACCOUNT", "web"),
            ("WEFT_NODE_IP", "10.1.2.3"),
            ("WEFT_OUTBOUND_PORT", "17140"),
            ("WEFT_INBOUND_PORT", "17143"),
            ("WEFT_ADMIN_PORT", "17191"),
            ("WEFT_OPAQUE_PORTS", "3306,8000-8099"),
            ("WEFT_PROBE_PORTS", "8080"),
            ("WEFT_HTTP1_PORTS", "8080"),
            ("WEFT_HTTP2_PORTS", "9090,50051"),
            ("WEFT_HTTP1_OVER_HTTP2", "false"),
            ("WEFT_LOG", "debug"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("WEFT_TRUST_ANCHORS".to_string(), ca_pem())])
        .collect()
    }

    fn load(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| env.get(k).cloned())
    }

    fn error_with(change: &[(&str, Option<&str>)]) -> String {
        let mut env = pod_env();
        for (k, v) in change {
            match v {
                Some(v) => env.insert(k.to_string(), v.to_string()),
                None => env.remove(*k),
            };
        }
        load(&env).expect_err("invalid").to_string()
    }

    #[test]
    fn every_variable_of_the_contract_lands_in_the_config() {
        let c = load(&pod_env()).expect("valid");
        assert_eq!(
            c.control_plane.as_deref(),
            Some("https://weft-control.weft-system.svc:7443")
        );
        let id = c.identity.as_ref().expect("identity is on");
        assert_eq!(id.id.to_string(), "spiffe://example.org/ns/shop/sa/web");
        assert_eq!(
            id.control_plane,
            "https://weft-control.weft-system.svc:7443"
        );
        assert!(matches!(
            &id.token,
            Token::File(p) if p == &PathBuf::from("/var/run/secrets/weft.io/serviceaccount/token")
        ));
        assert_eq!(id.inbound.default.mode, TlsMode::Strict);
        assert!(matches!(c.trust_bundle, Some(TrustAnchors::Pem(_))));
        assert_eq!(c.node.id, "web-7d9f-abcde");
        assert_eq!(c.node.namespace.as_str(), "shop");
        assert_eq!(c.node.service_account.as_deref(), Some("web"));
        assert_eq!(c.node.ip, Some(IpAddr::from([10, 1, 2, 3])));
        assert_eq!(c.outbound, Some("127.0.0.1:17140".parse().expect("addr")));
        assert!(c.outbound_transparent);
        assert_eq!(
            c.inbound,
            Some(("0.0.0.0:17143".parse().expect("addr"), None))
        );
        assert_eq!(c.admin, "0.0.0.0:17191".parse().expect("addr"));
        for set in [&c.outbound_opaque_ports, &c.inbound_opaque_ports] {
            assert!(set.contains(3306) && set.contains(8050) && !set.contains(8100));
        }
        assert!(c.probe_ports.contains(8080) && !c.probe_ports.contains(8081));
        assert!(c.inbound_http1_ports.contains(8080) && !c.inbound_http1_ports.contains(3306));
        assert!(c.inbound_http2_ports.contains(50051) && !c.inbound_http2_ports.contains(8080));
        assert_eq!(id.http1_over_http2, Http1OverHttp2::Off);
        assert!(c.mesh.services.is_empty() && c.upstreams.is_empty());
    }

    #[test]
    fn optional_variables_have_the_documented_defaults() {
        let mut env = pod_env();
        for k in [
            "WEFT_TRUST_DOMAIN",
            "WEFT_NODE_ID",
            "WEFT_NODE_IP",
            "WEFT_OUTBOUND_PORT",
            "WEFT_INBOUND_PORT",
            "WEFT_ADMIN_PORT",
            "WEFT_PROBE_PORTS",
            "WEFT_LOG",
        ] {
            env.remove(k);
        }
        env.insert("WEFT_OPAQUE_PORTS".into(), String::new());
        let c = load(&env).expect("valid");
        let id = c.identity.expect("identity");
        assert_eq!(id.id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        assert!(c.node.id.starts_with("weft-proxy-"));
        assert_eq!(c.node.ip, None);
        assert_eq!(c.outbound, Some("127.0.0.1:7140".parse().expect("addr")));
        assert_eq!(
            c.inbound,
            Some(("0.0.0.0:7143".parse().expect("addr"), None))
        );
        assert_eq!(c.admin, "0.0.0.0:7191".parse().expect("addr"));
        assert!(c.inbound_opaque_ports.is_empty() && c.probe_ports.is_empty());
        // Unset (not empty): the well-known server-first and broker ports.
        env.remove("WEFT_OPAQUE_PORTS");
        let c = load(&env).expect("valid");
        for set in [&c.outbound_opaque_ports, &c.inbound_opaque_ports] {
            assert!(set.contains(5672) && set.contains(3306) && !set.contains(8080));
        }
        assert_eq!(c.access_log, None, "access logs are off unless asked for");
    }

    #[test]
    fn the_access_log_variables_turn_it_on() {
        let mut env = pod_env();
        env.insert("WEFT_ACCESS_LOG".into(), "stderr".into());
        env.insert("WEFT_ACCESS_LOG_BUFFER".into(), "16".into());
        let log = load(&env).expect("valid").access_log.expect("on");
        assert_eq!((log.sink, log.buffer), (LogSink::Stderr, 16));
        env.insert("WEFT_ACCESS_LOG".into(), "off".into());
        assert_eq!(load(&env).expect("valid").access_log, None);
        let err = error_with(&[
            ("WEFT_ACCESS_LOG", Some("stdout")),
            ("WEFT_ACCESS_LOG_BUFFER", Some("lots")),
        ]);
        assert!(err.contains("WEFT_ACCESS_LOG_BUFFER"), "{err}");
    }

    #[test]
    fn control_plane_forms() {
        for (value, url) in [
            ("weft-control:7443", "https://weft-control:7443"),
            ("127.0.0.1:7443", "https://127.0.0.1:7443"),
            ("[::1]:7443", "https://[::1]:7443"),
            ("http://127.0.0.1:7443", "http://127.0.0.1:7443"),
            ("https://cp.example:443", "https://cp.example:443"),
        ] {
            assert_eq!(control_plane_url(value).as_deref(), Ok(url), "{value}");
        }
        for bad in [
            "weft-control",
            "weft-control:port",
            "a:1/x",
            "https://:7443",
        ] {
            assert!(control_plane_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_plaintext_control_plane_needs_no_trust_anchors() {
        let mut env = pod_env();
        env.remove("WEFT_TRUST_ANCHORS");
        env.insert("WEFT_CONTROL_PLANE".into(), "http://127.0.0.1:7443".into());
        let c = load(&env).expect("valid");
        assert!(c.trust_bundle.is_none());
    }

    #[test]
    fn a_bundle_file_may_stand_in_for_the_anchors() {
        let err = error_with(&[("WEFT_TRUST_ANCHORS", None)]);
        assert!(err.contains("WEFT_TRUST_ANCHORS: required"), "{err}");
        let mut env = pod_env();
        env.remove("WEFT_TRUST_ANCHORS");
        env.insert("WEFT_TRUST_BUNDLE".into(), "/etc/weft/ca.pem".into());
        let c = load(&env).expect("valid");
        assert_eq!(
            c.trust_bundle,
            Some(TrustAnchors::File("/etc/weft/ca.pem".into()))
        );
    }

    #[test]
    fn an_inline_token_may_stand_in_for_the_file() {
        let err = error_with(&[("WEFT_IDENTITY_TOKEN_FILE", None)]);
        assert!(err.contains("WEFT_IDENTITY_TOKEN_FILE: required"), "{err}");
        let mut env = pod_env();
        env.remove("WEFT_IDENTITY_TOKEN_FILE");
        env.insert("WEFT_IDENTITY_TOKEN".into(), "weft1.abc".into());
        let id = load(&env).expect("valid").identity.expect("identity");
        assert!(matches!(id.token, Token::Inline(t) if t == "weft1.abc"));
    }

    #[test]
    fn bad_values_are_named_by_their_variable() {
        for (change, needle) in [
            (
                vec![("WEFT_CONTROL_PLANE", None)],
                "WEFT_CONTROL_PLANE: required",
            ),
            (
                vec![("WEFT_CONTROL_PLANE", Some("weft-control"))],
                "WEFT_CONTROL_PLANE: \"weft-control\" is not host:port",
            ),
            (
                vec![("WEFT_NODE_NAMESPACE", Some("   "))],
                "WEFT_NODE_NAMESPACE: required",
            ),
            (
                vec![("WEFT_NODE_NAMESPACE", Some("Not_A_Name"))],
                "WEFT_NODE_NAMESPACE: \"Not_A_Name\"",
            ),
            (
                vec![("WEFT_NODE_SERVICE_ACCOUNT", None)],
                "WEFT_NODE_SERVICE_ACCOUNT: required",
            ),
            (
                vec![("WEFT_TRUST_DOMAIN", Some("bad domain"))],
                "WEFT_TRUST_DOMAIN:",
            ),
            (
                vec![("WEFT_NODE_IP", Some("10.1.2"))],
                "WEFT_NODE_IP: \"10.1.2\" is not an IP address",
            ),
            (
                vec![("WEFT_HTTP2_PORTS", Some("8000-8100"))],
                "WEFT_HTTP2_PORTS: port 8080 is also in WEFT_HTTP1_PORTS",
            ),
            (
                vec![("WEFT_TRUST_ANCHORS", Some("not pem"))],
                "WEFT_TRUST_ANCHORS: no PEM certificate",
            ),
            (
                vec![("WEFT_OUTBOUND_PORT", Some("0"))],
                "WEFT_OUTBOUND_PORT: \"0\" is not a port",
            ),
            (
                vec![("WEFT_INBOUND_PORT", Some("70000"))],
                "WEFT_INBOUND_PORT: \"70000\" is not a port",
            ),
            (
                vec![("WEFT_ADMIN_PORT", Some("admin"))],
                "WEFT_ADMIN_PORT: \"admin\" is not a port",
            ),
            (
                vec![("WEFT_ADMIN_PORT", Some("17143"))],
                "WEFT_ADMIN_PORT: 17143 is also WEFT_INBOUND_PORT",
            ),
            (
                vec![("WEFT_OPAQUE_PORTS", Some("3306,mysql"))],
                "WEFT_OPAQUE_PORTS: \"mysql\"",
            ),
            (
                vec![("WEFT_PROBE_PORTS", Some("9000-8000"))],
                "WEFT_PROBE_PORTS: \"9000-8000\": the range runs backwards",
            ),
            (
                vec![("WEFT_HTTP1_OVER_HTTP2", Some("no"))],
                "WEFT_HTTP1_OVER_HTTP2: \"no\" is not true, false, 1 or 2",
            ),
        ] {
            let err = error_with(&change);
            assert!(err.contains(needle), "{change:?}: {err}");
        }
    }
}
