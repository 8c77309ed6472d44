// trigate node dashboard: polls the daemon's summary and its history of
// rates every two seconds. Every string from the daemon (workload, model,
// tool, destination names come from outside) reaches the page through
// textContent or an SVG text node, never as markup.
"use strict";

const POLL_MS = 2000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const SVG = "http://www.w3.org/2000/svg";

const COLUMNS = [
  { key: "name", label: "workload", text: true },
  { key: "requests", label: "requests" },
  { key: "rps", label: "req/s", fmt: (v) => v.toFixed(2) },
  { key: "errors", label: "errors" },
  { key: "refused", label: "refused" },
  { key: "tokens_input", label: "tokens in" },
  { key: "tokens_output", label: "tokens out" },
  { key: "tpm", label: "tokens/min", fmt: (v) => v.toFixed(0) },
  { key: "cost_usd", label: "cost $", fmt: money },
  { key: "cache_ratio", label: "cache hit", fmt: pct },
  { key: "blocks", label: "guard blocks" },
  { key: "mcp_calls", label: "MCP calls" },
  { key: "denied_connects", label: "denied connects" },
  { key: "bytes", label: "bytes", fmt: bytes },
];

let sortKey = "requests";
let sortAsc = false;
let lastSummary = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function money(v) { return v === 0 ? "0" : v < 0.01 ? v.toFixed(6) : v.toFixed(4); }
function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
function bytes(v) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
}
function int(v) { return Number(v || 0).toLocaleString("en-US"); }

function rows(summary) {
  const recent = (summary.recent && summary.recent.workloads) || {};
  return summary.workloads.map((w) => {
    const r = recent[w.name] || {};
    const lookups = w.cache_hits + w.cache_misses;
    return {
      name: w.name,
      requests: w.requests,
      rps: r.requests_per_s || 0,
      errors: w.errors,
      refused: w.refused,
      tokens_input: w.tokens_input,
      tokens_output: w.tokens_output,
      tpm: r.tokens_per_min || 0,
      cost_usd: w.cost_usd,
      cache_ratio: lookups > 0 ? w.cache_hits / lookups : null,
      blocks: (w.guardrails && w.guardrails.block) || 0,
      mcp_calls: w.mcp_calls,
      denied_connects: w.denied_connects,
      bytes: w.bytes_sent + w.bytes_received,
    };
  });
}

function renderHead() {
  const tr = document.querySelector("#workloads thead tr");
  tr.replaceChildren();
  for (const c of COLUMNS) {
    const th = el("th", c.label, "sortable" + (c.text ? "" : " num"));
    th.dataset.key = c.key;
    if (c.key === sortKey) th.classList.add("sorted", ...(sortAsc ? ["asc"] : []));
    th.addEventListener("click", () => {
      if (sortKey === c.key) sortAsc = !sortAsc;
      else { sortKey = c.key; sortAsc = !!c.text; }
      renderHead();
      if (lastSummary) renderWorkloads(lastSummary);
    });
    tr.appendChild(th);
  }
}

function compare(a, b) {
  const x = a[sortKey], y = b[sortKey];
  let d;
  if (typeof x === "string" || typeof y === "string") d = String(x).localeCompare(String(y));
  else d = (x === null ? -1 : x) - (y === null ? -1 : y);
  if (d === 0) d = a.name.localeCompare(b.name);
  return sortAsc ? d : -d;
}

function renderWorkloads(summary) {
  const body = document.querySelector("#workloads tbody");
  const list = rows(summary).sort(compare);
  body.replaceChildren();
  for (const r of list) {
    const tr = el("tr");
    tr.dataset.workload = r.name;
    for (const c of COLUMNS) {
      const v = r[c.key];
      const td = el("td", c.fmt ? c.fmt(v) : c.text ? v : int(v), c.text ? "" : "num");
      td.dataset.col = c.key;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  document.getElementById("workloads-empty").hidden = list.length > 0;
}

function renderTotals(summary) {
  const t = summary.totals;
  const r = (summary.recent && summary.recent.node) || {};
  const lookups = t.cache_hits + t.cache_misses;
  const cards = [
    ["requests", int(t.requests)],
    ["requests/s", (r.requests_per_s || 0).toFixed(2)],
    ["errors", int(t.errors)],
    ["refused", int(t.refused)],
    ["tokens in", int(t.tokens_input)],
    ["tokens out", int(t.tokens_output)],
    ["cost (USD)", money(t.cost_usd)],
    ["cache hit", pct(lookups > 0 ? t.cache_hits / lookups : null)],
    ["guardrail blocks", int(t.guardrails.block)],
    ["MCP calls", int(t.mcp_calls)],
    ["denied connects", int(t.denied_connects)],
  ];
  const box = document.getElementById("totals");
  box.replaceChildren();
  for (const [label, value] of cards) {
    const c = el("div", null, "card");
    c.dataset.total = label;
    c.append(el("div", label, "label"), el("div", value, "value"));
    box.appendChild(c);
  }
}

function renderTools(summary) {
  const list = document.getElementById("tools");
  list.replaceChildren();
  const max = Math.max(1, ...summary.top_tools.map((t) => t.calls));
  for (const t of summary.top_tools) {
    const li = el("li");
    const name = el("span", t.tool, "name");
    name.title = t.tool;
    const bar = el("div", null, "bar");
    bar.style.width = ((100 * t.calls) / max).toFixed(1) + "%";
    li.append(name, el("div").appendChild(bar).parentNode, el("span", int(t.calls), "num"));
    list.appendChild(li);
  }
  document.getElementById("tools-empty").hidden = summary.top_tools.length > 0;
}

function renderEbpf(summary) {
  const body = document.querySelector("#ebpf tbody");
  body.replaceChildren();
  const entries = Object.entries(summary.ebpf);
  for (const [outcome, n] of entries) {
    const tr = el("tr");
    tr.append(el("td", outcome), el("td", int(n), "num"));
    body.appendChild(tr);
  }
  document.getElementById("ebpf-empty").hidden = entries.length > 0;
}

function renderDestinations(summary) {
  const body = document.querySelector("#destinations tbody");
  body.replaceChildren();
  for (const d of summary.destinations) {
    const tr = el("tr");
    const ebpf = Object.entries(d.ebpf).map(([k, v]) => k + " " + v).join(", ");
    tr.append(
      el("td", d.workload), el("td", d.destination),
      el("td", int(d.requests), "num"), el("td", int(d.errors), "num"), el("td", int(d.refused), "num"),
      el("td", int(d.tokens_input + d.tokens_output), "num"), el("td", money(d.cost_usd), "num"),
      el("td", int(d.guardrails.block || 0), "num"), el("td", int(d.mcp_calls), "num"),
      el("td", int(d.connections), "num"), el("td", bytes(d.bytes_sent), "num"),
      el("td", bytes(d.bytes_received), "num"), el("td", ebpf),
    );
    body.appendChild(tr);
  }
  document.getElementById("destinations-empty").hidden = summary.destinations.length > 0;
}

// A line chart of several series over the history's time axis, drawn as
// SVG. `series` is [{name, values: [number|null]}], `times` the x values.
function lineChart(id, times, series, fmt) {
  const box = document.getElementById(id);
  box.replaceChildren();
  const W = 340, H = 140, L = 44, B = 16, T = 6;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  box.appendChild(svg);
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  if (times.length < 2 || series.length === 0) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", W / 2); t.setAttribute("y", H / 2); t.setAttribute("text-anchor", "middle");
    t.textContent = "no data yet";
    svg.appendChild(t);
    return;
  }
  const max = Math.max(1e-9, ...all);
  const t0 = times[0], t1 = times[times.length - 1];
  const x = (t) => L + ((W - L - 4) * (t - t0)) / Math.max(1, t1 - t0);
  const y = (v) => H - B - ((H - B - T) * v) / max;
  for (const [v, label] of [[0, fmt(0)], [max, fmt(max)]]) {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", L); line.setAttribute("x2", W - 4);
    line.setAttribute("y1", y(v)); line.setAttribute("y2", y(v));
    line.setAttribute("class", "axis");
    svg.appendChild(line);
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", L - 4); t.setAttribute("y", y(v) + 3); t.setAttribute("text-anchor", "end");
    t.textContent = label;
    svg.appendChild(t);
  }
  const span = document.createElementNS(SVG, "text");
  span.setAttribute("x", W - 4); span.setAttribute("y", H - 3); span.setAttribute("text-anchor", "end");
  span.textContent = `last ${Math.round((t1 - t0) / 1000)} s`;
  svg.appendChild(span);
  const legend = el("div", null, "legend");
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.values.map((v, j) => (v === null ? null : `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
    const pl = document.createElementNS(SVG, "polyline");
    pl.setAttribute("points", pts.join(" "));
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", color);
    pl.setAttribute("stroke-width", "1.5");
    pl.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(pl);
    if (series.length > 1 || s.name) {
      const item = el("span", s.name);
      const sw = el("i");
      sw.style.background = color;
      item.prepend(sw);
      legend.appendChild(item);
    }
  });
  box.appendChild(legend);
}

function renderCharts(history) {
  const pts = history.points || [];
  const times = pts.map((p) => p.t_ms);
  const num = (v) => v.toFixed(v >= 10 ? 0 : 2);
  lineChart("chart-requests", times, [
    { name: "requests", values: pts.map((p) => p.node.requests_per_s) },
    { name: "errors", values: pts.map((p) => p.node.errors_per_s) },
    { name: "refused", values: pts.map((p) => p.node.refused_per_s) },
  ], num);
  const models = [...new Set(pts.flatMap((p) => Object.keys(p.tokens_per_min_by_model)))].sort();
  lineChart("chart-tokens", times, models.map((m) => ({
    name: m, values: pts.map((p) => p.tokens_per_min_by_model[m] ?? 0),
  })), num);
  lineChart("chart-cost", times, [{ name: "", values: pts.map((p) => p.node.cost_per_min) }], (v) => "$" + money(v));
  lineChart("chart-cache", times, [{ name: "", values: pts.map((p) => p.node.cache_hit_ratio) }], pct);
  lineChart("chart-blocks", times, [{ name: "", values: pts.map((p) => p.node.guardrail_blocks) }], num);
  const outcomes = [...new Set(pts.flatMap((p) => Object.keys(p.ebpf_per_s)))].sort();
  lineChart("chart-ebpf", times, outcomes.map((o) => ({
    name: o, values: pts.map((p) => p.ebpf_per_s[o] ?? 0),
  })), num);
}

async function fetchJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const [summary, history] = await Promise.all([
      fetchJson("/api/summary"),
      fetchJson("/api/summary/history?window=600"),
    ]);
    lastSummary = summary;
    renderTotals(summary);
    renderWorkloads(summary);
    renderTools(summary);
    renderEbpf(summary);
    renderDestinations(summary);
    renderCharts(history);
    status.textContent = "updated " + new Date(summary.t_ms).toLocaleTimeString();
    status.classList.remove("error");
    document.body.dataset.loaded = "true";
  } catch (e) {
    status.textContent = "cannot reach the daemon: " + e.message;
    status.classList.add("error");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

renderHead();
poll();
