//! The access log: one JSON object per line per request, written by a thread of
//! its own so that a slow or stuck destination (a pipe nobody reads, a full disk)
//! never holds up a request. Requests hand their line to a bounded queue; when it
//! is full the line is dropped and counted in `weft_access_log_dropped_total`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

use prometheus::{IntCounter, Opts};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::observe_config::{AccessLogConfig, LogSink};

/// One request's line. Field names are the log's contract with its readers.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    #[serde(serialize_with = "rfc3339")]
    pub(crate) time: SystemTime,
    pub(crate) direction: &'static str,
    pub(crate) service: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) peer_identity: Option<String>,
    pub(crate) method: String,
    pub(crate) authority: Option<String>,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    /// Response body bytes sent to the client.
    pub(crate) bytes: u64,
    pub(crate) weft_error: Option<String>,
    pub(crate) trace_id: Option<String>,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            time: SystemTime::UNIX_EPOCH,
            direction: "",
            service: None,
            route: None,
            endpoint: None,
            peer_identity: None,
            method: String::new(),
            authority: None,
            path: String::new(),
            status: 0,
            duration_ms: 0.0,
            bytes: 0,
            weft_error: None,
            trace_id: None,
        }
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t = time::OffsetDateTime::from(*t);
    match t.format(&time::format_description::well_known::Rfc3339) {
        Ok(text) => s.serialize_str(&text),
        Err(e) => Err(serde::ser::Error::custom(e)),
    }
}

/// The request side of the log: a queue and its drop counter.
pub(crate) struct AccessLog {
    tx: mpsc::Sender<Entry>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread.
    pub(crate) fn start(config: &AccessLogConfig, metrics: &Metrics) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &config.sink {
            LogSink::Stdout => Box::new(std::io::stdout()),
            LogSink::Stderr => Box::new(std::io::stderr()),
            LogSink::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
                    })?,
            ),
        };
        let registry = metrics.registry();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help))
                .unwrap_or_else(|e| unreachable!("static metric is valid: {e}"));
            // Registered once per proxy; a second Sinks in one process (tests)
            // has its own Metrics.
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let written = counter("weft_access_log_lines_total", "Access log lines written.");
        let dropped = counter(
            "weft_access_log_dropped_total",
            "Access log lines dropped because the writer was behind (queue full).",
        );
        let (tx, rx) = mpsc::channel(config.buffer);
        std::thread::Builder::new()
            .name("weft-access-log".to_string())
            .spawn(move || write_lines(rx, out, &written))?;
        Ok(AccessLog { tx, dropped })
    }

    /// Queues a line, or drops and counts it when the writer is behind.
    pub(crate) fn send(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }
}

/// The writer thread: blocking writes are its whole job. It flushes whenever the
/// queue runs dry, so a quiet proxy's lines are not held back, and ends when the
/// proxy drops its queue.
fn write_lines(mut rx: mpsc::Receiver<Entry>, out: Box<dyn Write + Send>, written: &IntCounter) {
    let mut out = BufWriter::new(out);
    let mut line = Vec::with_capacity(512);
    while let Some(entry) = rx.blocking_recv() {
        line.clear();
        if serde_json::to_writer(&mut line, &entry).is_err() {
            continue;
        }
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            continue;
        }
        written.inc();
        if rx.is_empty() && out.flush().is_err() {
            tracing::debug!("access log flush failed");
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_json_object_with_every_field() {
        let entry = Entry {
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
            direction: "outbound",
            service: Some("orders.default".into()),
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            method: "GET".into(),
            path: "/a?b=c".into(),
            status: 200,
            ..Entry::default()
        };
        let text = serde_json::to_string(&entry).expect("serializes");
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(v["time"], "1970-01-01T00:00:01.5Z");
        assert_eq!(v["endpoint"], "127.0.0.1:8080");
        assert_eq!(v["route"], serde_json::Value::Null);
        for field in [
            "direction",
            "service",
            "peer_identity",
            "method",
            "authority",
            "path",
            "status",
            "duration_ms",
            "bytes",
            "weft_error",
            "trace_id",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {text}");
        }
    }
}
