// The aggregator's page: draws /api/portfolio/fleet (the newest portfolio run) with uPlot.
"use strict";

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const $ = (id) => document.getElementById(id);
const charts = {};  // container id -> uPlot, for anyone inspecting the page
window.fleetCharts = charts;

function token() { return sessionStorage.getItem("dashboardToken") || ""; }

// This page may be the first one a session opens: without the token (DASHBOARD_TOKEN) it asks
// for it, as the site page does, and keeps it for the session under the same name.
class Unauthorized extends Error {}

async function getJSON(url) {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(url, { headers });
  if (response.status === 401) throw new Unauthorized("token needed");
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

function width(el) { return Math.max(320, el.clientWidth || 800); }

// Shade [start, end) time ranges behind the series (the DR windows).
function shadePlugin(ranges) {
  return { hooks: { drawClear: (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.fillStyle = "rgba(255, 165, 0, 0.25)";
    for (const [a, b] of ranges) {
      const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
      ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
    }
    ctx.restore();
  } } };
}

function loadChart(data) {
  const el = $("load-chart");
  const keys = Object.keys(data.grid_kw);
  const series = [{}].concat(keys.map((k, i) => ({ label: k, stroke: COLOURS[i % COLOURS.length], width: 1 })));
  const columns = [data.times].concat(keys.map((k) => data.grid_kw[k]));
  if (data.cap_kw.some((v) => v !== null)) {
    series.push({ label: "import cap", stroke: "#000", dash: [6, 4], width: 1 });
    columns.push(data.cap_kw);
  }
  if (data.dr_target_kw.some((v) => v !== null)) {
    series.push({ label: "DR target", stroke: "#000", width: 3 });
    columns.push(data.dr_target_kw);
  }
  $("load-note").textContent = `Times in ${data.timezone}; shaded: demand-response windows (${data.dr_windows.length}).`;
  charts[el.id] = new uPlot({
    title: "Fleet net grid import per strategy (kW; negative = export)", width: width(el), height: 320, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), data.timezone),
    series, plugins: [shadePlugin(data.dr_windows)],
    axes: [{ label: `time (${data.timezone})` }, { label: "fleet net import (kW)" }],
  }, columns, el);
}

function histogram(el, title, xLabel, byKey, bins) {
  const all = Object.values(byKey).flat().filter((v) => v !== null);
  if (!all.length) { el.textContent = "no sites to show"; return; }
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) hi = lo + 1;
  const step = (hi - lo) / bins;
  const centres = Array.from({ length: bins }, (_, i) => lo + (i + 0.5) * step);
  const keys = Object.keys(byKey);
  const counts = keys.map((k) => {
    const c = new Array(bins).fill(0);
    for (const v of byKey[k]) if (v !== null) c[Math.min(bins - 1, Math.floor((v - lo) / step))] += 1;
    return c;
  });
  // Outlined steps, not bars: several strategies' counts share each bin without hiding each other.
  const steps = uPlot.paths.stepped({ align: 0 });
  charts[el.id] = new uPlot({
    title, width: width(el), height: 260, scales: { x: { time: false } },
    series: [{ label: xLabel }].concat(keys.map((k, i) => ({ label: k, stroke: COLOURS[(i + 1) % COLOURS.length],
      fill: COLOURS[(i + 1) % COLOURS.length] + "22", width: 2, paths: steps }))),
    axes: [{ label: xLabel }, { label: "sites" }],
  }, [centres].concat(counts), el);
}

function about(data) {
  const s = data.summary;
  $("about").textContent = `${s.sites} sites, ${s.steps} steps of ${s.step_hours} h from ${s.start} (${data.path}); ` +
    `region ${s.region || "?"}, times in ${data.timezone}, money in ${data.currency}.`;
}

function kpis(data) {
  const strategies = Object.keys(data.summary.strategies);
  const rows = ["total_cost", "savings", "peak_aggregate_import_kw", "dr_requested_kwh", "dr_delivered_kwh", "dr_target_met",
    "satisfaction_mean", "unserved_kwh", "starved_sites"];
  const table = $("kpis");
  table.innerHTML = "";
  const head = table.insertRow();
  ["KPI"].concat(strategies).forEach((t) => { const th = document.createElement("th"); th.textContent = t; head.appendChild(th); });
  for (const row of rows) {
    if (!strategies.some((k) => row in data.summary.strategies[k])) continue;
    const tr = table.insertRow();
    tr.insertCell().textContent = kpiLabel(row, data.currency);
    for (const k of strategies) {
      const v = data.summary.strategies[k][row];
      tr.insertCell().textContent = kpiValue(v, row);
    }
  }
}

function starved(data) {
  const list = $("starved");
  list.innerHTML = "";
  if (!data.starved_sites.length) {
    const li = document.createElement("li");
    li.textContent = "none: every site's load was served";
    list.appendChild(li);
  }
  for (const s of data.starved_sites) {
    const li = document.createElement("li");
    li.textContent = `${s.site_id} (${s.strategy}): ${s.unserved_kwh.toFixed(2)} kWh not served`;
    list.appendChild(li);
  }
}

// The events the fleet was asked for, its decision and what it delivered (GET /api/dr/events).
async function drEvents() {
  const table = $("dr-events");
  const events = await getJSON("/api/dr/events");
  $("dr-note").textContent = events.length ? "kW averaged over each window; delivered against the forecast baseline." :
    "no events yet: POST /api/dr/events announces one";
  table.innerHTML = "";
  if (!events.length) return;
  const head = table.insertRow();
  ["event", "window (UTC)", "signal", "status", "planned kW", "delivered kW", "reason"].forEach((t) => {
    const th = document.createElement("th"); th.textContent = t; head.appendChild(th);
  });
  const kw = (v) => (v === null || v === undefined ? "–" : v.toFixed(1));
  for (const e of events) {
    const tr = table.insertRow();
    [e.id, `${e.start.slice(0, 16)} → ${e.end.slice(11, 16)}`, `${e.signal} ${e.value}`, e.status, kw(e.planned_kw),
      kw(e.delivered_kw), e.reason].forEach((v) => { tr.insertCell().textContent = v; });
  }
}

async function main() {
  drEvents().catch((error) => { if (!(error instanceof Unauthorized)) $("dr-note").textContent = String(error.message || error); });
  try {
    const data = await getJSON("/api/portfolio/fleet");
    const skipped = (data.skipped || []).map((s) => `${s.path} skipped (${s.error})`).join("; ");
    if (!data.available) {
      $("status").textContent = skipped ? `no readable portfolio run: ${skipped}` : "no portfolio results yet: run run_portfolio.py";
      return;
    }
    about(data);
    loadChart(data);
    const days = (data.summary.steps * data.summary.step_hours / 24).toLocaleString();
    $("savings-title").textContent = `Savings per battery site against no battery (${data.currency}, ${days} days)`;
    histogram($("savings-chart"), `Savings per battery site (${data.currency})`, `savings (${data.currency})`, data.savings, 20);
    histogram($("satisfaction-chart"), "Satisfaction per battery site (%)", "share of own savings kept (%)",
      Object.fromEntries(Object.entries(data.satisfaction).map(([k, v]) => [k, v.map((x) => x === null ? null : 100 * x)])), 10);
    starved(data);
    kpis(data);
    $("status").textContent = skipped ? `showing ${data.path}; ${skipped}` : "";
  } catch (error) {
    if (error instanceof Unauthorized) { $("token-form").hidden = false; $("status").textContent = "token needed"; return; }
    $("status").textContent = String(error.message || error);
  }
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("dashboardToken", $("token").value);
  $("token-form").hidden = true;
  main();
});

main();
