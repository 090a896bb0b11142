//! How `weftctl top` sorts and lays out the control plane's `/api/summary`.

pub use weft_api::live::{RouteView, Summary, TcpView, TrafficView, Window};

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
pub fn sort(rows: &mut [TrafficView], by: SortBy, reverse: bool) {
    let value = |t: &TrafficView| match by {
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
pub fn service_rows(services: &[TrafficView]) -> Vec<[String; 9]> {
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

/// Bytes per second, in the unit that keeps the number short.
pub fn rate(bytes_per_second: f64) -> String {
    const UNITS: [&str; 4] = ["B/s", "KB/s", "MB/s", "GB/s"];
    let mut v = bytes_per_second.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// The opaque TCP services as rows of cells, header first, each service followed
/// by its callers (`  ← caller`); none without TCP traffic.
pub fn tcp_rows(w: &Window) -> Vec<[String; 7]> {
    if w.tcp_services.is_empty() {
        return Vec::new();
    }
    let cells = |name: String, t: &TcpView| {
        [
            name,
            t.open_connections.to_string(),
            format!("{:.1}", t.connections_per_second),
            rate(t.bytes_in_per_second),
            rate(t.bytes_out_per_second),
            pct(t.tls_share),
            t.failures.to_string(),
        ]
    };
    let mut rows = vec![
        [
            "TCP SERVICE",
            "OPEN",
            "CONN/S",
            "IN",
            "OUT",
            "MTLS",
            "FAILED",
        ]
        .map(str::to_string),
    ];
    for t in &w.tcp_services {
        rows.push(cells(short(&t.service).to_string(), t));
        for e in w.tcp_edges.iter().filter(|e| e.service == t.service) {
            let from = short(e.from.as_deref().unwrap_or("?"));
            rows.push(cells(format!("  ← {from}"), e));
        }
    }
    rows
}

/// A service's routes as rows of cells, header first; none for a service without
/// routes.
pub fn route_rows(t: &TrafficView) -> Vec<[String; 5]> {
    if t.routes.is_empty() {
        return Vec::new();
    }
    let mut rows = vec![["ROUTE", "RPS", "SUCCESS", "P50", "P99"].map(str::to_string)];
    rows.extend(t.routes.iter().map(|r| {
        [
            route_name(r).to_string(),
            format!("{:.1}", r.rps),
            pct(r.success_rate),
            ms(r.p50_ms),
            ms(r.p99_ms),
        ]
    }));
    rows
}

/// A route's name as shown: requests no route matched have none.
pub fn route_name(r: &RouteView) -> &str {
    if r.route.is_empty() {
        "(no route)"
    } else {
        &r.route
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(service: &str, rps: f64, success: Option<f64>) -> TrafficView {
        TrafficView {
            service: service.into(),
            rps,
            success_rate: success,
            ..TrafficView::default()
        }
    }

    #[test]
    fn tcp_services_are_listed_with_their_callers() {
        let tcp = |service: &str, from: Option<&str>, open: u64| TcpView {
            service: service.into(),
            from: from.map(str::to_string),
            open_connections: open,
            bytes_in_per_second: 2048.0,
            tls_share: Some(1.0),
            ..TcpView::default()
        };
        let w = Window {
            tcp_services: vec![tcp("rabbitmq.default", None, 3)],
            tcp_edges: vec![
                tcp("rabbitmq.default", Some("orders.default"), 2),
                tcp("db.default", Some("orders.default"), 1),
            ],
            ..Window::default()
        };
        let rows = tcp_rows(&w);
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[1][..4], ["rabbitmq", "3", "0.0", "2.0KB/s"]);
        assert_eq!(rows[1][5], "100.0%");
        assert_eq!(rows[2][..2], ["  ← orders", "2"]);
        assert!(tcp_rows(&Window::default()).is_empty());
        assert_eq!(rate(10.0), "10B/s");
        assert_eq!(rate(3.5 * 1024.0 * 1024.0), "3.5MB/s");
    }

    #[test]
    fn sorting_puts_the_telling_rows_first() {
        let mut rows = vec![
            t("a", 1.0, Some(1.0)),
            t("b", 5.0, Some(0.5)),
            t("c", 3.0, None),
        ];
        sort(&mut rows, SortBy::Rps, false);
        let names = |r: &[TrafficView]| r.iter().map(|t| t.service.clone()).collect::<Vec<_>>();
        assert_eq!(names(&rows), ["b", "c", "a"]);
        sort(&mut rows, SortBy::Success, false);
        assert_eq!(names(&rows), ["b", "a", "c"], "worst first, no data last");
        sort(&mut rows, SortBy::Name, true);
        assert_eq!(names(&rows), ["c", "b", "a"]);
    }
}
