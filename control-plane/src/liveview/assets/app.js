// Weft live view: draws /api/events summaries. No framework, nothing fetched but
// this control plane's own API.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const HISTORY = 60; // points per latency chart (one a second)
const history = new Map(); // service -> [{p50, p99}]
let latest = null;

const $ = (sel) => document.querySelector(sel);
const windowName = () => $("#window").value;

function cls(rate) {
  if (rate === null || rate === undefined) return "idle";
  if (rate >= 0.99) return "ok";
  if (rate >= 0.95) return "warn";
  return "bad";
}
const colour = (rate) => getComputedStyle(document.documentElement).getPropertyValue("--" + cls(rate)).trim();
const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(x >= 0.9995 || x === 0 ? 0 : 1) + " %");
const ms = (x) => (x === null || x === undefined ? "–" : x < 10 ? x.toFixed(2) + " ms" : x.toFixed(0) + " ms");
const rps = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const short = (name) => name.endsWith(".default") ? name.slice(0, -8) : name;

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function cell(row, text, className) {
  const td = el("td", className ? { class: className } : {}, text);
  row.appendChild(td);
  return td;
}

function fillTable(id, rows, empty, build) {
  const body = $(id + " tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = el("tr", { class: "empty" });
    const td = el("td", { colspan: $(id + " thead tr").children.length }, empty);
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) body.appendChild(build(r));
}

function spark(points) {
  const svg = el("svg:svg", { class: "spark", viewBox: "0 0 120 26", preserveAspectRatio: "none" });
  const max = Math.max(1, ...points.map((p) => p.p99 || 0));
  for (const [key, stroke] of [["p99", "#d2362f"], ["p50", "#2d6cdf"]]) {
    const xs = points.map((p, i) => `${(i * 120) / (HISTORY - 1)},${25 - ((p[key] || 0) / max) * 24}`);
    if (xs.length > 1) svg.appendChild(el("svg:polyline", { points: xs.join(" "), fill: "none", stroke, "stroke-width": 1.5 }));
  }
  return svg;
}

function breakerText(b) {
  const parts = Object.entries(b).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  return parts.length ? parts.join(", ") : "0";
}

function drawServices(w) {
  fillTable("#services", w.services, "no traffic reported yet", (s) => {
    const tr = el("tr", { "data-service": s.service, "data-success": s.success_rate ?? "", "data-rps": s.rps });
    cell(tr, short(s.service));
    cell(tr, rps(s.rps));
    cell(tr, pct(s.success_rate), cls(s.success_rate));
    cell(tr, ms(s.p50_ms));
    cell(tr, ms(s.p95_ms));
    cell(tr, ms(s.p99_ms));
    cell(tr, "").appendChild(spark(history.get(s.service) || []));
    cell(tr, pct(s.tls_share));
    cell(tr, s.open_connections ?? "–");
    const hits = s.breaker.connections + s.breaker.pending + s.breaker.active + s.breaker.retries;
    cell(tr, breakerText(s.breaker), hits > 0 ? "bad" : "");
    cell(tr, s.retries + (s.retries_refused ? ` (${s.retries_refused} refused)` : ""));
    cell(tr, s.ejected_endpoints, s.ejected_endpoints > 0 ? "bad" : "");
    return tr;
  });
}

function drawEdges(w) {
  fillTable("#edges", w.edges, "no calls between services yet", (e) => {
    const tr = el("tr", { "data-from": e.from, "data-to": e.service, "data-success": e.success_rate ?? "" });
    cell(tr, short(e.from));
    cell(tr, short(e.service));
    cell(tr, rps(e.rps));
    cell(tr, pct(e.success_rate), cls(e.success_rate));
    cell(tr, ms(e.p50_ms));
    cell(tr, ms(e.p99_ms));
    cell(tr, pct(e.tls_share));
    cell(tr, breakerText(e.breaker));
    cell(tr, e.retries);
    return tr;
  });
}

const bytes = (x) => {
  const units = ["B/s", "KB/s", "MB/s", "GB/s"];
  let i = 0;
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return (i === 0 ? x.toFixed(0) : x.toFixed(1)) + " " + units[i];
};
// Opaque TCP has no requests: failures colour it, else open or new connections.
const tcpRate = (t) => (t.failures > 0 ? 0 : t.open_connections > 0 || t.connections > 0 ? 1 : null);

function drawTcp(w) {
  const rows = (w.tcp_services || []).flatMap((s) => [s, ...(w.tcp_edges || []).filter((e) => e.service === s.service)]);
  fillTable("#tcp", rows, "no opaque TCP traffic", (t) => {
    const tr = el("tr", { "data-service": t.service, "data-from": t.from || "", "data-open": t.open_connections });
    cell(tr, t.from ? "" : short(t.service));
    cell(tr, t.from ? "← " + short(t.from) : "");
    cell(tr, t.open_connections);
    cell(tr, rps(t.connections_per_second));
    cell(tr, bytes(t.bytes_in_per_second));
    cell(tr, bytes(t.bytes_out_per_second));
    cell(tr, pct(t.tls_share));
    cell(tr, t.failures, t.failures > 0 ? "bad" : "");
    return tr;
  });
}

function drawRoutes(w) {
  const rows = w.services.flatMap((s) => (s.routes || []).map((r) => ({ service: s.service, ...r })));
  fillTable("#routes", rows, "no service with routes", (r) => {
    const tr = el("tr", { "data-service": r.service, "data-route": r.route, "data-success": r.success_rate ?? "" });
    cell(tr, short(r.service));
    cell(tr, r.route === "" ? "(no route)" : r.route);
    cell(tr, rps(r.rps));
    cell(tr, pct(r.success_rate), cls(r.success_rate));
    cell(tr, ms(r.p50_ms));
    cell(tr, ms(r.p95_ms));
    cell(tr, ms(r.p99_ms));
    return tr;
  });
}

function drawEjections(list) {
  fillTable("#ejections", list, "none", (e) => {
    const tr = el("tr", { "data-ejected": e.endpoint, "data-service": e.service });
    cell(tr, short(e.service));
    cell(tr, e.endpoint);
    cell(tr, e.reason);
    cell(tr, e.remaining_ms > 0 ? (e.remaining_ms / 1000).toFixed(0) + " s" : "probing");
    cell(tr, e.times);
    cell(tr, short(e.ejected_by));
    return tr;
  });
}

// Columns by call depth: callers left, what they call to the right.
function layout(names, edges) {
  const depth = new Map(names.map((n) => [n, 0]));
  for (let i = 0; i < names.length; i++) {
    for (const e of edges) {
      if (e.from === e.service) continue;
      const d = (depth.get(e.from) || 0) + 1;
      if (d > (depth.get(e.service) || 0) && d < names.length) depth.set(e.service, d);
    }
  }
  const columns = new Map();
  for (const n of names) {
    const d = depth.get(n);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(n);
  }
  const box = $("#graph").getBoundingClientRect();
  const width = Math.max(box.width, 400), height = 360;
  const cols = Math.max(...columns.keys()) + 1;
  const pos = new Map();
  for (const [d, col] of columns) {
    col.sort();
    col.forEach((n, i) => pos.set(n, { x: ((d + 0.5) * width) / cols, y: ((i + 0.5) * height) / col.length }));
  }
  return { pos, width, height };
}

function drawGraph(w, ejections) {
  const svg = $("#graph");
  svg.replaceChildren();
  const byName = new Map(w.services.map((s) => [s.service, s]));
  const tcpServices = w.tcp_services || [], tcpEdges = w.tcp_edges || [];
  const tcpByName = new Map(tcpServices.map((s) => [s.service, s]));
  const names = [...new Set([
    ...w.services.map((s) => s.service), ...w.edges.map((e) => e.from),
    ...tcpServices.map((s) => s.service), ...tcpEdges.map((e) => e.from),
  ])];
  if (names.length === 0) return;
  const { pos, width, height } = layout(names, [...w.edges, ...tcpEdges]);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const defs = el("svg:defs");
  for (const c of ["ok", "warn", "bad", "idle"]) {
    const m = el("svg:marker", { id: "arrow-" + c, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.appendChild(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: colour(c === "ok" ? 1 : c === "warn" ? 0.96 : c === "bad" ? 0 : null) }));
    defs.appendChild(m);
  }
  svg.appendChild(defs);
  const R = 26;
  for (const e of w.edges) {
    const a = pos.get(e.from), b = pos.get(e.service);
    if (!a || !b) continue;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const x1 = a.x + (dx / len) * R, y1 = a.y + (dy / len) * R, x2 = b.x - (dx / len) * (R + 3), y2 = b.y - (dy / len) * (R + 3);
    const c = cls(e.requests > 0 ? e.success_rate : null);
    const line = el("svg:line", { class: "edge", x1, y1, x2, y2, stroke: colour(e.requests > 0 ? e.success_rate : null), "marker-end": `url(#arrow-${c})`, "data-from": e.from, "data-to": e.service, "data-class": c });
    line.appendChild(el("svg:title", {}, `${short(e.from)} → ${short(e.service)}: ${rps(e.rps)} rps, ${pct(e.success_rate)} success`));
    svg.appendChild(line);
    svg.appendChild(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5 }, `${rps(e.rps)} rps · ${pct(e.success_rate)}`));
  }
  for (const e of tcpEdges) {
    const a = pos.get(e.from), b = pos.get(e.service);
    if (!a || !b) continue;
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const x1 = a.x + (dx / len) * R, y1 = a.y + (dy / len) * R, x2 = b.x - (dx / len) * (R + 3), y2 = b.y - (dy / len) * (R + 3);
    const c = cls(tcpRate(e));
    const line = el("svg:line", { class: "edge tcp", x1, y1, x2, y2, stroke: colour(tcpRate(e)), "stroke-dasharray": "6 4", "marker-end": `url(#arrow-${c})`, "data-from": e.from, "data-to": e.service, "data-class": c, "data-kind": "tcp", "data-open": e.open_connections });
    line.appendChild(el("svg:title", {}, `${short(e.from)} → ${short(e.service)} (TCP): ${e.open_connections} open, ${bytes(e.bytes_in_per_second)} in, ${bytes(e.bytes_out_per_second)} out, ${pct(e.tls_share)} mTLS`));
    svg.appendChild(line);
    svg.appendChild(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5 }, `tcp ${e.open_connections} open · ${bytes(e.bytes_in_per_second + e.bytes_out_per_second)}`));
  }
  for (const n of names) {
    const p = pos.get(n), s = byName.get(n), t = tcpByName.get(n);
    const kind = !s && t ? "tcp" : "http";
    const g = el("svg:g", { class: "node", "data-service": n, "data-kind": kind, transform: `translate(${p.x},${p.y})` });
    const fill = kind === "tcp" ? colour(tcpRate(t)) : colour(s && s.requests > 0 ? s.success_rate : null);
    g.appendChild(el("svg:circle", kind === "tcp" ? { r: R, fill, "stroke-dasharray": "5 3", class: "tcp" } : { r: R, fill }));
    g.appendChild(el("svg:text", { y: R + 14 }, short(n)));
    if (s) g.appendChild(el("svg:text", { class: "sub", y: R + 27 }, `${rps(s.rps)} rps · ${pct(s.success_rate)} · p99 ${ms(s.p99_ms)}`));
    else if (t) g.appendChild(el("svg:text", { class: "sub", y: R + 27 }, `tcp · ${t.open_connections} open · ${pct(t.tls_share)} mTLS`));
    const ejected = ejections.filter((e) => e.service === n).length;
    if (ejected > 0) {
      g.appendChild(el("svg:circle", { class: "badge", cx: R - 4, cy: -R + 4, r: 9 }));
      g.appendChild(el("svg:text", { class: "badge-text", x: R - 4, y: -R + 8 }, String(ejected)));
    }
    svg.appendChild(g);
  }
}

function draw() {
  if (!latest) return;
  const w = latest.windows[windowName()] || { services: [], edges: [] };
  drawGraph(w, latest.ejections);
  drawServices(w);
  drawEdges(w);
  drawTcp(w);
  drawRoutes(w);
  drawEjections(latest.ejections);
  const when = new Date(latest.generated_at_ms).toLocaleTimeString();
  const replicas = latest.replicas
    ? ` · ${latest.replicas.answered}/${latest.replicas.total} replicas answered`
    : "";
  $("#status").textContent = `${latest.proxies} proxies reporting${replicas} · ${when}`;
  $("#status").className = "status live";
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function receive(summary) {
  latest = summary;
  // The charts follow the short window: the freshest latency.
  for (const s of summary.windows["10s"].services) {
    const h = history.get(s.service) || [];
    h.push({ p50: s.p50_ms, p99: s.p99_ms });
    while (h.length > HISTORY) h.shift();
    history.set(s.service, h);
  }
  draw();
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("summary", (ev) => receive(JSON.parse(ev.data)));
  source.onerror = () => {
    $("#status").textContent = "reconnecting…";
    $("#status").className = "status";
  };
}

$("#window").addEventListener("change", draw);
window.addEventListener("resize", draw);
connect();
