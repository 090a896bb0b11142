//! The part of the control plane's `/api/summary` that `weftctl top` shows, and how
//! its rows sort.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Summary {
    pub proxies: usize,
    pub windows: BTreeMap<String, Window>,
    #[serde(default)]
    pub ejections: Vec<Ejection>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Window {
    pub services: Vec<Traffic>,
    pub edges: Vec<Traffic>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Traffic {
    pub service: String,
    #[serde(default)]
    pub from: Option<String>,
    pub rps: f64,
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub tls_share: Option<f64>,
    #[serde(default)]
    pub open_connections: Option<u64>,
    pub breaker: Breaker,
    pub retries: u64,
    pub ejected_endpoints: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Breaker {
    pub connections: u64,
    pub pending: u64,
    pub active: u64,
    pub retries: u64,
}

impl Breaker {
    pub fn total(&self) -> u64 {
        self.connections + self.pending + self.active + self.retries
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ejection {
    pub service: String,
    pub endpoint: String,
    pub reason: String,
    pub remaining_ms: u64,
    pub ejected_by: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub service: String,
    pub endpoint: String,
    pub identity: Option<String>,
    pub state: String,
    pub in_flight: u32,
    pub latency_ms: Option<f64>,
    pub weight: u32,
    pub seen_by: String,
}

/// The column the service table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    Rps,
    Success,
    P50,
    P99,
}

impl SortBy {
    pub fn label(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::Rps => "rps",
            SortBy::Success => "success",
            SortBy::P50 => "p50",
            SortBy::P99 => "p99",
        }
    }

    /// The key that picks it in the terminal view.
    pub fn from_key(c: char) -> Option<SortBy> {
        Some(match c {
            'n' => SortBy::Name,
            'r' => SortBy::Rps,
            's' => SortBy::Success,
            'l' => SortBy::P50,
            'p' => SortBy::P99,
            _ => return None,
        })
    }
}

impl std::str::FromStr for SortBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "name" => Ok(SortBy::Name),
            "rps" => Ok(SortBy::Rps),
            "success" => Ok(SortBy::Success),
            "p50" => Ok(SortBy::P50),
            "p99" => Ok(SortBy::P99),
            other => Err(format!(
                "cannot sort by {other:?} (name, rps, success, p50, p99)"
            )),
        }
    }
}

/// Sorts services: numbers with the most telling first (busiest, least
/// successful, slowest), names alphabetically; `reverse` turns it round. A
/// service without a value sorts last either way.
pub fn sort(rows: &mut [Traffic], by: SortBy, reverse: bool) {
    let value = |t: &Traffic| match by {
        SortBy::Name => None,
        SortBy::Rps => Some(-t.rps),
        SortBy::Success => t.success_rate,
        SortBy::P50 => t.p50_ms.map(|v| -v),
        SortBy::P99 => t.p99_ms.map(|v| -v),
    };
    rows.sort_by(|a, b| {
        let order = match (value(a), value(b)) {
            _ if by == SortBy::Name => a.service.cmp(&b.service),
            (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| a.service.cmp(&b.service)),
            (Some(_), None) => return std::cmp::Ordering::Less,
            (None, Some(_)) => return std::cmp::Ordering::Greater,
            (None, None) => a.service.cmp(&b.service),
        };
        if reverse { order.reverse() } else { order }
    });
}

pub fn short(name: &str) -> &str {
    name.strip_suffix(".default").unwrap_or(name)
}

pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0))
}

pub fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}ms"))
}

/// The service table as rows of cells, header first: what both the terminal view
/// and the plain output show.
pub fn service_rows(services: &[Traffic]) -> Vec<[String; 9]> {
    let mut rows = vec![
        [
            "SERVICE", "RPS", "SUCCESS", "P50", "P99", "MTLS", "CONNS", "BREAKER", "EJECTED",
        ]
        .map(str::to_string),
    ];
    rows.extend(services.iter().map(|t| {
        [
            short(&t.service).to_string(),
            format!("{:.1}", t.rps),
            pct(t.success_rate),
            ms(t.p50_ms),
            ms(t.p99_ms),
            pct(t.tls_share),
            t.open_connections.map_or("-".into(), |c| c.to_string()),
            t.breaker.total().to_string(),
            t.ejected_endpoints.to_string(),
        ]
    }));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(service: &str, rps: f64, success: Option<f64>) -> Traffic {
        Traffic {
            service: service.into(),
            rps,
            success_rate: success,
            ..Traffic::default()
        }
    }

    #[test]
    fn sorting_puts_the_telling_rows_first() {
        let mut rows = vec![
            t("a", 1.0, Some(1.0)),
            t("b", 5.0, Some(0.5)),
            t("c", 3.0, None),
        ];
        sort(&mut rows, SortBy::Rps, false);
        let names = |r: &[Traffic]| r.iter().map(|t| t.service.clone()).collect::<Vec<_>>();
        assert_eq!(names(&rows), ["b", "c", "a"]);
        sort(&mut rows, SortBy::Success, false);
        assert_eq!(names(&rows), ["b", "a", "c"], "worst first, no data last");
        sort(&mut rows, SortBy::Name, true);
        assert_eq!(names(&rows), ["c", "b", "a"]);
    }
}
