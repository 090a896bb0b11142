//! Reads Prometheus text exposition: enough to find one sample by name and exact
//! label set.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sample named `name` whose labels are exactly `labels` (no more, no fewer).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
    }

    /// Like [`Metrics::get`], but a missing series counts as 0 (a counter that was
    /// never incremented may not be exported yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The sum over every series of `name` that has (at least) these labels.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let (labels, rest) = if let Some(body) = rest.strip_prefix('{') {
        parse_labels(body)?
    } else {
        (BTreeMap::new(), rest)
    };
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let mut chars = rest.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &rest[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP weft_requests_total HTTP requests.
# TYPE weft_requests_total counter
weft_requests_total{direction="outbound",service="orders.default",status_class="2xx"} 7
weft_requests_total{direction="outbound",service="orders.default",status_class="5xx"} 1
weft_requests_total{direction="inbound",service="odd \"name\"\\x",status_class="2xx"} 3
weft_snapshot_version 4
weft_request_duration_seconds_bucket{direction="outbound",service="a",le="+Inf"} 2
"#;

    #[test]
    fn finds_samples_by_exact_labels() {
        let m = Metrics::parse(TEXT);
        let two = [
            ("direction", "outbound"),
            ("service", "orders.default"),
            ("status_class", "2xx"),
        ];
        assert_eq!(m.get("weft_requests_total", &two), Some(7.0));
        // A subset of the labels is not an exact match.
        assert_eq!(
            m.get("weft_requests_total", &[("direction", "outbound")]),
            None
        );
        assert_eq!(m.get("weft_snapshot_version", &[]), Some(4.0));
        assert_eq!(
            m.get(
                "weft_requests_total",
                &[
                    ("direction", "inbound"),
                    ("service", "odd \"name\"\\x"),
                    ("status_class", "2xx")
                ]
            ),
            Some(3.0)
        );
        assert_eq!(
            m.sum("weft_requests_total", &[("direction", "outbound")]),
            8.0
        );
        assert_eq!(m.value("weft_missing_total", &[]), 0.0);
        assert_eq!(
            m.get(
                "weft_request_duration_seconds_bucket",
                &[("direction", "outbound"), ("service", "a"), ("le", "+Inf")]
            ),
            Some(2.0)
        );
    }
}
