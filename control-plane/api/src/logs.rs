//! Log output shared by Weft's binaries: plain text, coloured only when stderr is a
//! terminal (a log file or a container's log must not fill with escape codes), or
//! one JSON object per line for log collectors.

use std::io::IsTerminal as _;
use std::str::FromStr;

use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines look: `plain` (the default) or `json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "plain" | "text" => Ok(LogFormat::Plain),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (plain or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the global subscriber: `filter` decides what is logged, `format` how, to
/// stderr. A second call is ignored (tests may start several servers in a process).
pub fn init<F>(filter: F, format: LogFormat)
where
    F: Layer<Registry> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Plain => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_reject_others() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" JSON ".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("plain".parse::<LogFormat>(), Ok(LogFormat::Plain));
        assert_eq!("".parse::<LogFormat>(), Ok(LogFormat::Plain));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
