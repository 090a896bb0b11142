//! What the proxy reports about the traffic it carries beyond its metrics: access
//! logs (`access_log:` in a file, `WEFT_ACCESS_LOG*` in a pod). Off unless asked for.

use std::path::PathBuf;

use serde::Deserialize;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogSink {
    Stdout,
    Stderr,
    /// Appended to; created if missing.
    File(PathBuf),
}

impl LogSink {
    /// `stdout`, `stderr`, or a file path.
    pub(crate) fn parse(s: &str) -> Result<LogSink, String> {
        match s.trim() {
            "" => Err("must name stdout, stderr or a file".to_string()),
            "stdout" | "-" => Ok(LogSink::Stdout),
            "stderr" => Ok(LogSink::Stderr),
            path => Ok(LogSink::File(PathBuf::from(path))),
        }
    }
}

/// `access_log: {to: stdout, buffer: 4096}`: one JSON line per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessLogConfig {
    pub(crate) sink: LogSink,
    /// Lines waiting for the writer; past this, lines are dropped (and counted)
    /// rather than slowing a request.
    pub(crate) buffer: usize,
}

pub(crate) const DEFAULT_ACCESS_LOG_BUFFER: usize = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLog {
    /// stdout (default), stderr, or a file path.
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    buffer: Option<usize>,
    /// `false` keeps the section but turns the log off.
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

impl RawAccessLog {
    /// The validated config, `None` when turned off; errors name the field.
    pub(crate) fn validate(self) -> Result<Option<AccessLogConfig>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let sink = match self.to {
            Some(to) => LogSink::parse(&to).map_err(|e| format!("access_log.to: {e}"))?,
            None => LogSink::Stdout,
        };
        access_log(sink, self.buffer, "access_log.buffer").map(Some)
    }
}

/// A config from its parts; `field` names the buffer's origin in an error.
pub(crate) fn access_log(
    sink: LogSink,
    buffer: Option<usize>,
    field: &str,
) -> Result<AccessLogConfig, String> {
    let buffer = buffer.unwrap_or(DEFAULT_ACCESS_LOG_BUFFER);
    if !(1..=1_000_000).contains(&buffer) {
        return Err(format!("{field}: {buffer} is outside 1..=1000000"));
    }
    Ok(AccessLogConfig { sink, buffer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_by_name_or_path() {
        assert_eq!(LogSink::parse("stdout"), Ok(LogSink::Stdout));
        assert_eq!(LogSink::parse("stderr"), Ok(LogSink::Stderr));
        assert_eq!(
            LogSink::parse("/var/log/weft.json"),
            Ok(LogSink::File(PathBuf::from("/var/log/weft.json")))
        );
        assert!(LogSink::parse(" ").is_err());
    }

    #[test]
    fn a_zero_buffer_is_refused_with_its_field() {
        let err = access_log(LogSink::Stdout, Some(0), "WEFT_ACCESS_LOG_BUFFER").expect_err("zero");
        assert!(err.starts_with("WEFT_ACCESS_LOG_BUFFER"), "{err}");
    }
}

/// Share of new traces sampled unless configured: one in a hundred keeps a busy
/// service's collector load small. A caller's `traceparent` decides for its own
/// trace whatever the ratio.
pub(crate) const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// `tracing: {collector: http://otel-collector:4317, sample_ratio: 0.1}`: spans
/// exported over OTLP/gRPC.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TracingConfig {
    /// The collector's OTLP/gRPC address (`http://host:port`).
    pub(crate) collector: String,
    /// Share of new traces (requests without a `traceparent`) sampled; a caller's
    /// decision is always kept.
    pub(crate) sample_ratio: f64,
    /// Spans waiting for export; past this they are dropped and counted.
    pub(crate) buffer: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    collector: String,
    #[serde(default)]
    sample_ratio: Option<f64>,
    #[serde(default)]
    buffer: Option<usize>,
}

impl RawTracing {
    pub(crate) fn validate(self) -> Result<TracingConfig, String> {
        tracing_config(&self.collector, self.sample_ratio, self.buffer, "tracing.")
    }
}

/// A config from its parts; `prefix` names the fields in errors.
pub(crate) fn tracing_config(
    collector: &str,
    ratio: Option<f64>,
    buffer: Option<usize>,
    prefix: &str,
) -> Result<TracingConfig, String> {
    let uri: http::Uri = collector
        .parse()
        .map_err(|_| format!("{prefix}collector: {collector:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{prefix}collector: {collector:?} is not http://host:port (OTLP/gRPC)"
        ));
    }
    let sample_ratio = ratio.unwrap_or(DEFAULT_SAMPLE_RATIO);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(format!(
            "{prefix}sample_ratio: {sample_ratio} is outside 0..=1"
        ));
    }
    let buffer = buffer.unwrap_or(DEFAULT_ACCESS_LOG_BUFFER);
    if !(1..=1_000_000).contains(&buffer) {
        return Err(format!("{prefix}buffer: {buffer} is outside 1..=1000000"));
    }
    Ok(TracingConfig {
        collector: collector.to_string(),
        sample_ratio,
        buffer,
    })
}

#[cfg(test)]
mod tracing_tests {
    use super::*;

    #[test]
    fn tracing_needs_an_http_collector_and_a_ratio_within_bounds() {
        let ok = tracing_config("http://127.0.0.1:4317", None, None, "tracing.").expect("valid");
        assert_eq!(ok.sample_ratio, DEFAULT_SAMPLE_RATIO);
        for (collector, ratio) in [("127.0.0.1:4317", None), ("http://c:4317", Some(1.5))] {
            let err = tracing_config(collector, ratio, None, "tracing.").expect_err("invalid");
            assert!(err.starts_with("tracing."), "{err}");
        }
    }
}
