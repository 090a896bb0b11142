//! The `weft.io/*` annotations a pod (or pod template) uses to steer injection, parsed
//! once into [`PodOverrides`] so the rest of the injector never sees raw strings.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::Resources;

/// `enabled` or `disabled`, on the namespace (label) or the pod (annotation or label).
pub const INJECT: &str = "weft.io/inject";
pub const SKIP_INBOUND_PORTS: &str = "weft.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "weft.io/skip-outbound-ports";
pub const OPAQUE_PORTS: &str = "weft.io/opaque-ports";
/// App ports that speak HTTP/1.1 only: the proxy sends HTTP/2 callers on to them
/// as HTTP/1.1 (gRPC excepted).
pub const HTTP1_PORTS: &str = "weft.io/http1-ports";
/// App ports that speak HTTP/2 only (h2c, gRPC): the proxy sends HTTP/1 callers on
/// to them as HTTP/2 (upgrades and CONNECT excepted). None may be an http1 port.
pub const HTTP2_PORTS: &str = "weft.io/http2-ports";
/// `enabled` (or `stdout`, `stderr`): the proxy writes an access log, one JSON
/// line per request; `disabled` or absent: it does not.
pub const ACCESS_LOG: &str = "weft.io/access-log";
/// `plain` or `json`: how the proxy's own log lines look.
pub const LOG_FORMAT: &str = "weft.io/log-format";
/// `http://host:port`: the OTLP/gRPC collector the proxy exports its spans to;
/// absent: no spans.
pub const TRACING_COLLECTOR: &str = "weft.io/tracing-collector";
/// `0`..`1`: the share of new traces (requests without a sampled-or-not
/// `traceparent`) the proxy samples; the proxy's default when absent.
pub const TRACING_SAMPLE_RATIO: &str = "weft.io/tracing-sample-ratio";
pub const PROXY_CPU_REQUEST: &str = "weft.io/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "weft.io/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "weft.io/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "weft.io/proxy-memory-limit";

pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";

/// A bad annotation value, named so the operator can find and fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?} {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> AnnotationError {
    AnnotationError {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The pod's own choice, if it made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectChoice {
    Enabled,
    Disabled,
}

/// Reads `weft.io/inject` from the annotations and the labels (the label exists
/// because the API server routes webhook calls by label, never by annotation).
/// `disabled` in either wins, as it does in the webhook's object selector.
pub fn inject_choice(
    annotations: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<Option<InjectChoice>, AnnotationError> {
    let mut choice = None;
    for value in [annotations, labels]
        .into_iter()
        .filter_map(|m| m.and_then(|m| m.get(INJECT)))
    {
        match value.as_str() {
            "disabled" => return Ok(Some(InjectChoice::Disabled)),
            "enabled" => choice = Some(InjectChoice::Enabled),
            other => return Err(bad(INJECT, other, "is not one of: enabled, disabled")),
        }
    }
    Ok(choice)
}

pub use weft_api::ports::{PortList, PortRange};

/// A port list annotation (`3306,8000-8099`; empty is none), parsed as the proxy
/// parses its own port lists.
fn port_list(key: &str, value: &str) -> Result<PortList, AnnotationError> {
    PortList::parse(value).map_err(|e| bad(key, value, format!("is not a port list: {e}")))
}

/// What a pod's annotations change about its proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct PodOverrides {
    pub skip_inbound_ports: PortList,
    pub skip_outbound_ports: PortList,
    pub opaque_ports: PortList,
    pub http1_ports: PortList,
    pub http2_ports: PortList,
    pub proxy_resources: Resources,
    /// `WEFT_ACCESS_LOG` for the proxy: where its access log goes, if anywhere.
    pub access_log: Option<&'static str>,
    /// `WEFT_LOG_FORMAT` for the proxy, when the pod chose one.
    pub log_format: Option<&'static str>,
    /// `WEFT_TRACE_COLLECTOR` and `WEFT_TRACE_SAMPLE_RATIO`, when the pod asked
    /// for spans.
    pub tracing: Option<Tracing>,
}

/// Where a proxy's spans go, and how many new traces it samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub collector: String,
    /// The proxy's default when `None`.
    pub sample_ratio: Option<f64>,
}

/// Reads the tracing annotations: a ratio without a collector is a mistake worth
/// naming, since it would do nothing.
fn tracing<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Tracing>, AnnotationError> {
    let ratio = match get(TRACING_SAMPLE_RATIO).map(str::trim) {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
            _ => return Err(bad(TRACING_SAMPLE_RATIO, v, "is not a number from 0 to 1")),
        },
    };
    let Some(collector) = get(TRACING_COLLECTOR).map(str::trim) else {
        return match (ratio, get(TRACING_SAMPLE_RATIO)) {
            (Some(_), Some(v)) => Err(bad(
                TRACING_SAMPLE_RATIO,
                v,
                format!("needs {TRACING_COLLECTOR} too"),
            )),
            _ => Ok(None),
        };
    };
    // As the proxy checks it: an OTLP/gRPC collector is plain http://host:port.
    let valid = collector
        .strip_prefix("http://")
        .and_then(|rest| rest.trim_end_matches('/').rsplit_once(':'))
        .is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(['/', ' ', '@'])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
    if !valid {
        return Err(bad(
            TRACING_COLLECTOR,
            collector,
            "is not http://host:port (OTLP/gRPC)",
        ));
    }
    Ok(Some(Tracing {
        collector: collector.to_string(),
        sample_ratio: ratio,
    }))
}

impl PodOverrides {
    /// Validates every `weft.io/*` annotation the injector reads; `defaults` are the
    /// configured proxy resources.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
        defaults: &Resources,
    ) -> Result<Self, AnnotationError> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let ports = |key: &str| port_list(key, get(key).unwrap_or(""));
        let quantity = |key: &str, default: &Quantity, unit: Unit| match get(key) {
            None => Ok(default.clone()),
            Some(v) => {
                parse_quantity(v, unit).map_err(|reason| bad(key, v, reason))?;
                Ok(Quantity(v.trim().to_string()))
            }
        };
        let resources = Resources {
            cpu_request: quantity(PROXY_CPU_REQUEST, &defaults.cpu_request, Unit::Cpu)?,
            cpu_limit: quantity(PROXY_CPU_LIMIT, &defaults.cpu_limit, Unit::Cpu)?,
            memory_request: quantity(PROXY_MEMORY_REQUEST, &defaults.memory_request, Unit::Bytes)?,
            memory_limit: quantity(PROXY_MEMORY_LIMIT, &defaults.memory_limit, Unit::Bytes)?,
        };
        // The API server would reject the pod anyway; saying which annotation to fix
        // is kinder than its generic message about the container.
        for (req_key, req, lim_key, lim, unit) in [
            (
                PROXY_CPU_REQUEST,
                &resources.cpu_request,
                PROXY_CPU_LIMIT,
                &resources.cpu_limit,
                Unit::Cpu,
            ),
            (
                PROXY_MEMORY_REQUEST,
                &resources.memory_request,
                PROXY_MEMORY_LIMIT,
                &resources.memory_limit,
                Unit::Bytes,
            ),
        ] {
            let (r, l) = (parse_quantity(&req.0, unit), parse_quantity(&lim.0, unit));
            if let (Ok(r), Ok(l)) = (r, l)
                && r > l
            {
                return Err(bad(
                    req_key,
                    &req.0,
                    format!("is above the proxy's limit {}; set {lim_key} too", lim.0),
                ));
            }
        }
        let access_log = match get(ACCESS_LOG).map(str::trim) {
            None | Some("disabled") => None,
            Some("enabled" | "stdout") => Some("stdout"),
            Some("stderr") => Some("stderr"),
            Some(other) => {
                return Err(bad(
                    ACCESS_LOG,
                    other,
                    "is not one of: enabled, stdout, stderr, disabled",
                ));
            }
        };
        let log_format = match get(LOG_FORMAT).map(str::trim) {
            None => None,
            Some("plain") => Some("plain"),
            Some("json") => Some("json"),
            Some(other) => return Err(bad(LOG_FORMAT, other, "is not one of: plain, json")),
        };
        let http1_ports = ports(HTTP1_PORTS)?;
        let http2_ports = ports(HTTP2_PORTS)?;
        if let Some(port) = http2_ports.first_shared(&http1_ports) {
            return Err(bad(
                HTTP2_PORTS,
                get(HTTP2_PORTS).unwrap_or(""),
                format!("names port {port}, which {HTTP1_PORTS} names too"),
            ));
        }
        Ok(PodOverrides {
            access_log,
            log_format,
            tracing: tracing(get)?,
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS)?,
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS)?,
            // No annotation: the well-known server-first and broker ports; an
            // annotation replaces them (empty: none), as the proxy reads its variable.
            opaque_ports: match get(OPAQUE_PORTS) {
                None => PortList::default_opaque(),
                Some(_) => ports(OPAQUE_PORTS)?,
            },
            http1_ports,
            http2_ports,
            proxy_resources: resources,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Cpu,
    Bytes,
}

/// Parses a Kubernetes quantity (`250m`, `1.5`, `128Mi`, `1e9`) into base units, to
/// reject what the API server would reject and to compare requests with limits.
pub fn parse_quantity(s: &str, unit: Unit) -> Result<f64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let valid_number = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit());
    let value: f64 = match number.parse() {
        Ok(v) if valid_number => v,
        _ => return Err("is not a quantity such as 250m, 1, 128Mi".into()),
    };
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        e if e.starts_with(['e', 'E']) => match e[1..].parse::<i32>() {
            Ok(exp) => 10f64.powi(exp),
            Err(_) => return Err(format!("has the bad exponent {e:?}")),
        },
        other => return Err(format!("has the unknown suffix {other:?}")),
    };
    let v = value * scale;
    if unit == Unit::Bytes && suffix == "m" {
        return Err("is a fraction of a byte; write e.g. 128Mi".into());
    }
    if v <= 0.0 {
        return Err("must be above zero".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ports_default_to_the_well_known_list_unless_annotated() {
        let defaults = crate::config::InjectConfig::default().proxy_resources;
        let none = PodOverrides::from_annotations(None, &defaults).expect("no annotations");
        assert_eq!(none.opaque_ports, PortList::default_opaque());
        for (value, want) in [("", ""), ("8000-8001", "8000-8001")] {
            let annotations = BTreeMap::from([(OPAQUE_PORTS.to_string(), value.to_string())]);
            let got = PodOverrides::from_annotations(Some(&annotations), &defaults)
                .expect("valid annotation");
            assert_eq!(got.opaque_ports.to_string(), want, "{value:?}");
        }
    }

    #[test]
    fn port_lists_are_sorted_merged_and_checked() {
        let l = port_list("k", " 5432,3306, 8000-8010,3306").expect("valid list");
        assert_eq!(l.to_string(), "3306,5432,8000-8010");
        assert_eq!(l.with(7191).to_string(), "3306,5432,7191,8000-8010");
        assert_eq!(port_list("k", "").expect("empty").to_string(), "");
        for bad in ["0", "65536", "http", "10-5", "1-", "-"] {
            let err = port_list("weft.io/opaque-ports", bad).expect_err(bad);
            assert!(err.to_string().contains("weft.io/opaque-ports"), "{err}");
        }
    }

    #[test]
    fn an_app_port_is_http1_only_or_http2_only_not_both() {
        let defaults = crate::config::InjectConfig::default().proxy_resources;
        let with = |http1: &str, http2: &str| {
            let a = BTreeMap::from([
                (HTTP1_PORTS.to_string(), http1.to_string()),
                (HTTP2_PORTS.to_string(), http2.to_string()),
            ]);
            PodOverrides::from_annotations(Some(&a), &defaults)
        };
        let o = with("8080", "9090,50051").expect("disjoint");
        assert_eq!(o.http2_ports.to_string(), "9090,50051");
        let err = with("8000-8099", "8080").expect_err("overlap");
        assert!(err.to_string().contains(HTTP2_PORTS), "{err}");
        assert!(err.to_string().contains("port 8080"), "{err}");
    }

    #[test]
    fn quantities_parse_like_the_api_server() {
        assert_eq!(parse_quantity("250m", Unit::Cpu), Ok(0.25));
        assert_eq!(parse_quantity("2", Unit::Cpu), Ok(2.0));
        assert_eq!(parse_quantity("128Mi", Unit::Bytes), Ok(134_217_728.0));
        assert_eq!(parse_quantity("1e3", Unit::Bytes), Ok(1000.0));
        for bad in ["", "m", "1.2.3", "12x", "-1", "0", "1e", ".", "128m"] {
            assert!(parse_quantity(bad, Unit::Bytes).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_log_and_log_format_annotations_are_checked() {
        let defaults = crate::config::InjectConfig::default().proxy_resources;
        let none = PodOverrides::from_annotations(None, &defaults).expect("no annotations");
        assert_eq!((none.access_log, none.log_format), (None, None));
        let mut a = BTreeMap::new();
        a.insert(ACCESS_LOG.to_string(), "enabled".to_string());
        a.insert(LOG_FORMAT.to_string(), "json".to_string());
        let o = PodOverrides::from_annotations(Some(&a), &defaults).expect("valid");
        assert_eq!((o.access_log, o.log_format), (Some("stdout"), Some("json")));
        a.insert(ACCESS_LOG.to_string(), "/tmp/x".to_string());
        let err = PodOverrides::from_annotations(Some(&a), &defaults).expect_err("a path");
        assert!(err.to_string().contains(ACCESS_LOG), "{err}");
    }

    #[test]
    fn tracing_annotations_need_a_collector_url_and_a_ratio_in_range() {
        let defaults = crate::config::InjectConfig::default().proxy_resources;
        let with = |pairs: &[(&str, &str)]| {
            let a: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            PodOverrides::from_annotations(Some(&a), &defaults)
        };
        assert_eq!(with(&[]).expect("none").tracing, None);
        let t = with(&[(TRACING_COLLECTOR, "http://otel.monitoring:4317")])
            .expect("a collector")
            .tracing
            .expect("tracing on");
        assert_eq!(
            (t.collector.as_str(), t.sample_ratio),
            ("http://otel.monitoring:4317", None)
        );
        let t = with(&[
            (TRACING_COLLECTOR, "http://10.0.0.9:4317"),
            (TRACING_SAMPLE_RATIO, "0.25"),
        ])
        .expect("with a ratio")
        .tracing
        .expect("tracing on");
        assert_eq!(t.sample_ratio, Some(0.25));
        for (pairs, named) in [
            (&[(TRACING_COLLECTOR, "otel:4317")][..], TRACING_COLLECTOR),
            (
                &[(TRACING_COLLECTOR, "https://otel:4317")][..],
                TRACING_COLLECTOR,
            ),
            (&[(TRACING_COLLECTOR, "http://otel")][..], TRACING_COLLECTOR),
            (
                &[
                    (TRACING_COLLECTOR, "http://otel:4317"),
                    (TRACING_SAMPLE_RATIO, "2"),
                ][..],
                TRACING_SAMPLE_RATIO,
            ),
            (&[(TRACING_SAMPLE_RATIO, "0.5")][..], TRACING_SAMPLE_RATIO),
        ] {
            let err = with(pairs).expect_err("invalid");
            assert!(err.to_string().contains(named), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn request_above_limit_names_the_annotation() {
        let mut a = BTreeMap::new();
        a.insert(PROXY_CPU_REQUEST.to_string(), "2".to_string());
        let defaults = crate::config::InjectConfig::default().proxy_resources;
        let err = PodOverrides::from_annotations(Some(&a), &defaults).expect_err("2 > 1");
        assert!(err.to_string().contains(PROXY_CPU_LIMIT), "{err}");
        a.insert(PROXY_CPU_LIMIT.to_string(), "4".to_string());
        let o = PodOverrides::from_annotations(Some(&a), &defaults).expect("now valid");
        assert_eq!(o.proxy_resources.cpu_limit.0, "4");
    }
}
