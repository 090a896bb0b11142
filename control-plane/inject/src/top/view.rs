//! The terminal view: redrawn in place every interval and on every key.
//!
//! Keys: `n` `r` `s` `l` `p` sort by name, rps, success, p50, p99; `i` inverts;
//! `w` switches between the 10 s and 1 min windows; up/down (or `k`/`j`) select a
//! service, Enter shows its endpoints, Esc goes back; `q` quits. Opaque TCP
//! services (no requests to sort by) sit in a block of their own below.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};

use super::TopOptions;
use super::fetch;
use super::summary::{self, SortBy, Summary, TrafficView, ms, pct, short};

struct State {
    title: String,
    window: String,
    sort: SortBy,
    reverse: bool,
    table: TableState,
    /// The service whose endpoints are shown, if drilled down.
    detail: Option<String>,
    summary: Option<Summary>,
    error: Option<String>,
}

impl State {
    fn services(&self) -> Vec<TrafficView> {
        let mut rows = self
            .summary
            .as_ref()
            .and_then(|s| s.windows.get(&self.window))
            .map(|w| w.services.clone())
            .unwrap_or_default();
        summary::sort(&mut rows, self.sort, self.reverse);
        rows
    }
}

pub(super) fn interactive(
    runtime: &tokio::runtime::Runtime,
    opts: &TopOptions,
) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, runtime, opts);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut DefaultTerminal,
    runtime: &tokio::runtime::Runtime,
    opts: &TopOptions,
) -> anyhow::Result<()> {
    let mut state = State {
        title: opts.title.clone(),
        window: opts.window.clone(),
        sort: opts.sort,
        reverse: false,
        table: TableState::default().with_selected(Some(0)),
        detail: None,
        summary: None,
        error: None,
    };
    let mut next_fetch = Instant::now();
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if Instant::now() >= next_fetch {
            match runtime.block_on(fetch::summary(opts.admin)) {
                Ok(s) => {
                    state.summary = Some(s);
                    state.error = None;
                }
                Err(e) => state.error = Some(format!("{e:#}")),
            }
            next_fetch = Instant::now() + opts.interval;
        }
        terminal.draw(|f| draw(f, &mut state))?;
        let wait = next_fetch.saturating_duration_since(Instant::now());
        if !event::poll(wait.min(Duration::from_millis(250)))? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let count = state.services().len();
        match key.code {
            KeyCode::Char('q') => return Ok(()),
            // Raw mode turns Ctrl-C into a key: it quits, as it would anywhere else.
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Esc | KeyCode::Backspace if state.detail.is_some() => state.detail = None,
            KeyCode::Esc => return Ok(()),
            KeyCode::Char('i') => state.reverse = !state.reverse,
            KeyCode::Char('w') => {
                state.window = if state.window == "10s" { "1m" } else { "10s" }.to_string();
            }
            KeyCode::Down | KeyCode::Char('j') if count > 0 => {
                let i = state.table.selected().unwrap_or(0);
                state.table.select(Some((i + 1).min(count - 1)));
            }
            KeyCode::Up | KeyCode::Char('k') => {
                let i = state.table.selected().unwrap_or(0);
                state.table.select(Some(i.saturating_sub(1)));
            }
            KeyCode::Enter => {
                let services = state.services();
                state.detail = state
                    .table
                    .selected()
                    .and_then(|i| services.get(i))
                    .map(|t| t.service.clone());
            }
            KeyCode::Char(c) => {
                if let Some(by) = SortBy::from_key(c) {
                    state.sort = by;
                }
            }
            _ => {}
        }
    }
}

fn draw(f: &mut Frame<'_>, state: &mut State) {
    let [title, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let proxies = state.summary.as_ref().map_or(0, |s| s.proxies);
    let replicas = state
        .summary
        .as_ref()
        .map_or_else(String::new, |s| s.replicas_note());
    let head = format!(
        "{} — {proxies} proxies{replicas} — last {} — sorted by {}{}",
        state.title,
        state.window,
        state.sort.label(),
        if state.reverse { " (inverted)" } else { "" }
    );
    f.render_widget(
        Paragraph::new(head).style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    let help = match &state.error {
        Some(e) => format!("error: {e}"),
        None if state.detail.is_some() => "esc: back   q: quit".to_string(),
        None => "n/r/s/l/p: sort   i: invert   w: window   ↑↓: select   enter: endpoints   q: quit"
            .to_string(),
    };
    f.render_widget(Paragraph::new(help), foot);
    match state.detail.clone() {
        Some(service) => draw_detail(f, body, state, &service),
        None => draw_services(f, body, state),
    }
}

fn success_style(rate: Option<f64>) -> Style {
    match rate {
        Some(r) if r >= 0.99 => Style::new().fg(Color::Green),
        Some(r) if r >= 0.95 => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        None => Style::new(),
    }
}

fn draw_services(f: &mut Frame<'_>, area: ratatui::layout::Rect, state: &mut State) {
    let services = state.services();
    let ejections = state
        .summary
        .as_ref()
        .map(|s| s.ejections.clone())
        .unwrap_or_default();
    let tcp = state
        .summary
        .as_ref()
        .and_then(|s| s.windows.get(&state.window))
        .map(summary::tcp_rows)
        .unwrap_or_default();
    // Rows and borders; no block at all without opaque TCP.
    let tcp_height = if tcp.is_empty() {
        0
    } else {
        u16::try_from(tcp.len()).unwrap_or(12).min(12) + 2
    };
    let [table_area, tcp_area, ejected_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(tcp_height),
        Constraint::Length(u16::try_from(ejections.len()).unwrap_or(10).min(10) + 2),
    ])
    .areas(area);
    let mut rows = summary::service_rows(&services).into_iter();
    let header =
        Row::new(rows.next().unwrap_or_default()).style(Style::new().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'_>> = rows
        .zip(&services)
        .map(|(cells, t)| Row::new(cells).style(success_style(t.success_rate)))
        .collect();
    let widths = [
        Constraint::Length(18),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title("services"))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    f.render_stateful_widget(table, table_area, &mut state.table);
    if !tcp.is_empty() {
        draw_tcp(f, tcp_area, tcp);
    }
    let lines: Vec<Line<'_>> = if ejections.is_empty() {
        vec![Line::from("none")]
    } else {
        ejections
            .iter()
            .map(|e| {
                Line::from(format!(
                    "{} {} — {} — {} s left — by {}",
                    short(&e.service),
                    e.endpoint,
                    e.reason,
                    e.remaining_ms / 1000,
                    short(&e.ejected_by)
                ))
                .style(Style::new().fg(Color::Red))
            })
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("ejected endpoints")),
        ejected_area,
    );
}

/// Opaque TCP services, each with its callers below it.
fn draw_tcp(f: &mut Frame<'_>, area: ratatui::layout::Rect, rows: Vec<[String; 7]>) {
    let mut rows = rows.into_iter();
    let header =
        Row::new(rows.next().unwrap_or_default()).style(Style::new().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'_>> = rows
        .map(|cells| {
            let failed = cells[6] != "0";
            let style = if failed {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(22),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    f.render_widget(
        Table::new(body, widths)
            .header(header)
            .block(Block::bordered().title("tcp services (connections and bytes)")),
        area,
    );
}

fn draw_detail(f: &mut Frame<'_>, area: ratatui::layout::Rect, state: &State, service: &str) {
    let summary = state.summary.clone().unwrap_or_default();
    let window = summary
        .windows
        .get(&state.window)
        .cloned()
        .unwrap_or_default();
    let own = window.services.iter().find(|t| t.service == service);
    let routes = own.map(summary::route_rows).unwrap_or_default();
    let route_height = if routes.is_empty() {
        0
    } else {
        u16::try_from(routes.len()).unwrap_or(8).min(8) + 2
    };
    let [numbers, routes_area, endpoints, edges] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(route_height),
        Constraint::Min(4),
        Constraint::Length(8),
    ])
    .areas(area);
    let line = own.map_or_else(
        || "no traffic in this window".to_string(),
        |t| {
            format!(
                "{:.1} rps   success {}   p50 {}   p99 {}   mTLS {}   breaker hits {}   retries {}",
                t.rps,
                pct(t.success_rate),
                ms(t.p50_ms),
                ms(t.p99_ms),
                pct(t.tls_share),
                t.breaker.total(),
                t.retries
            )
        },
    );
    f.render_widget(
        Paragraph::new(line).block(Block::bordered().title(format!("service {}", short(service)))),
        numbers,
    );
    if !routes.is_empty() {
        let mut rows = routes.into_iter();
        let header = Row::new(rows.next().unwrap_or_default())
            .style(Style::new().add_modifier(Modifier::BOLD));
        let body: Vec<Row<'_>> = rows
            .zip(own.map(|t| t.routes.as_slice()).unwrap_or_default())
            .map(|(cells, r)| Row::new(cells).style(success_style(r.success_rate)))
            .collect();
        let widths = [
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
        ];
        f.render_widget(
            Table::new(body, widths)
                .header(header)
                .block(Block::bordered().title("routes")),
            routes_area,
        );
    }
    let header = Row::new([
        "ENDPOINT",
        "STATE",
        "IN-FLIGHT",
        "LATENCY",
        "WEIGHT",
        "SEEN BY",
        "IDENTITY",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row<'_>> = summary
        .endpoints
        .iter()
        .filter(|e| e.service == service)
        .map(|e| {
            let style = if e.state == "ejected" {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            Row::new([
                e.endpoint.clone(),
                e.state.clone(),
                e.in_flight.to_string(),
                ms(e.latency_ms),
                e.weight.to_string(),
                short(&e.seen_by).to_string(),
                e.identity.clone().unwrap_or_else(|| "-".into()),
            ])
            .style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(22),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(14),
        Constraint::Min(20),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title("endpoints")),
        endpoints,
    );
    let mut lines: Vec<Line<'_>> = window
        .edges
        .iter()
        .filter(|e| e.service == service || e.from.as_deref() == Some(service))
        .map(|e| {
            Line::from(format!(
                "{} → {}   {:.1} rps   success {}   p99 {}",
                short(e.from.as_deref().unwrap_or("?")),
                short(&e.service),
                e.rps,
                pct(e.success_rate),
                ms(e.p99_ms)
            ))
            .style(success_style(e.success_rate))
        })
        .collect();
    lines.extend(
        window
            .tcp_edges
            .iter()
            .filter(|e| e.service == service || e.from.as_deref() == Some(service))
            .map(|e| {
                Line::from(format!(
                    "{} → {}   tcp: {} open   in {}   out {}   mTLS {}   failed {}",
                    short(e.from.as_deref().unwrap_or("?")),
                    short(&e.service),
                    e.open_connections,
                    summary::rate(e.bytes_in_per_second),
                    summary::rate(e.bytes_out_per_second),
                    pct(e.tls_share),
                    e.failures
                ))
            }),
    );
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("calls in and out")),
        edges,
    );
}
