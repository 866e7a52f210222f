// The dashboard page: reads the JSON API and draws it with the vendored uPlot (no network
// beyond this server, so it works offline). Refreshes itself every REFRESH_MS.
"use strict";

const REFRESH_MS = 60000;
const COLORS = { solar: "#f2b01e", load: "#d64545", grid: "#3d5a80", soc: "#2e9e57", price: "#6b7785",
  buy: "#2f6fde", store: "#2e9e57", sell: "#e08a12", discharge: "#8e4ec6" };
const TARGET_LABELS = { load_kw: ["load", COLORS.load], solar_kw: ["solar", COLORS.solar] };
const charts = {};
const state = { site: null, sites: [], token: sessionStorage.getItem("dashboardToken") || "" };

class Unauthorized extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const response = await fetch(path, { headers });
  if (response.status === 401) throw new Unauthorized("token needed");
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(path + ": " + response.status + " " + JSON.stringify(body.detail || ""));
  }
  return response.json();
}

const seconds = (stamps) => stamps.map((t) => Date.parse(t) / 1000);
const el = (id) => document.getElementById(id);

// Every time on the page is the site's local time, and says which zone; money is in the
// site's currency. The texts of the plan and its savings come from the plan's summary.
const currentSite = () => state.sites.find((s) => s.device_id === state.site) || {};
const siteZone = () => currentSite().timezone || "UTC";
// A device whose site is not declared has no currency: its prices are shown per kWh alone.
const currency = () => currentSite().currency || "";
const perKwh = () => (currency() ? currency() + "/kWh" : "per kWh");

function localTime(stamp, withZone) {
  return new Date(stamp).toLocaleString("en-US", { timeZone: siteZone(), weekday: "short", hour: "2-digit",
    minute: "2-digit", hourCycle: "h23", timeZoneName: withZone ? "short" : undefined });
}

// One uPlot per container, rebuilt on each refresh (the data and series change with the site).
// A chart whose series hold no value at all says so (``unmeasured``) rather than draw empty axes.
function draw(id, opts, data, unmeasured) {
  const box = el(id);
  if (charts[id]) charts[id].destroy();
  box.textContent = "";
  const valued = data.slice(1).some((series) => series.some((v) => v != null));
  const points = valued || !unmeasured ? data[0].length : 0;
  box.dataset.points = String(points);
  box.dataset.site = state.site;
  if (!points) { box.textContent = data[0].length ? unmeasured : "no data yet"; delete charts[id]; return; }
  const zone = siteZone();
  opts = Object.assign({ width: box.clientWidth || 900, height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), zone) }, opts);
  charts[id] = new uPlot(opts, data, box);
}

const line = (label, stroke, scale, extra) => Object.assign({ label, stroke, scale, width: 1.5, points: { show: false },
  value: (u, v) => (v == null ? "–" : v.toFixed(2)) }, extra || {});
const axis = (scale, label, side) => ({ scale, label, side: side || 3, grid: { show: side !== 1 } });

function drawHistory(readings) {
  const s = readings.series, x = seconds(s.ts);
  draw("chart-power", {
    series: [{}, line("solar kW", COLORS.solar, "kW"), line("load kW", COLORS.load, "kW"),
      line("grid kW (+import)", COLORS.grid, "kW")],
    axes: [{}, axis("kW", "kW")],
  }, [x, s.pv_kw, s.house_load_kw, s.net_grid_flow_kw]);  // as the plans read them: measured, else the balance
  draw("chart-battery", {
    series: [{}, line("SOC %", COLORS.soc, "%"), line("price " + perKwh(), COLORS.price, "price", { width: 1 })],
    scales: { "%": { range: [0, 100] } },
    axes: [{}, axis("%", "SOC %"), axis("price", perKwh(), 1)],
  }, [x, s.battery_soc_percent, s.grid_price_price_per_kwh],
  "No battery state of charge or grid price among these readings: a plan starts the battery at its configured " +
  "state of charge and prices at the site's tariff or price feed.");
}

function drawForecasts(forecasts) {
  const targets = Object.keys(TARGET_LABELS).filter((t) => forecasts.targets[t]);
  const note = el("forecast-note");
  if (!targets.length) {
    draw("chart-forecast", {}, [[]]);
    note.textContent = "No forecasts stored for this site yet.";
    return;
  }
  const base = forecasts.targets[targets[0]];
  const x = seconds(base.series.ts);
  const series = [{}], data = [x], bands = [];
  for (const t of targets) {
    const [label, color] = TARGET_LABELS[t], f = forecasts.targets[t].series;
    const at = new Map(seconds(f.ts).map((v, i) => [v, i]));
    const pick = (arr) => x.map((v) => (at.has(v) ? arr[at.get(v)] : null));
    series.push(line(label + " kW", color, "kW"));
    data.push(pick(f.value));
    if (f.p10.some((v) => v != null)) {
      series.push(line(label + " P90", color, "kW", { width: 0.5, dash: [4, 4] }));
      series.push(line(label + " P10", color, "kW", { width: 0.5, dash: [4, 4] }));
      data.push(pick(f.p90), pick(f.p10));
      bands.push({ series: [data.length - 2, data.length - 1], fill: color + "33" });
    }
  }
  draw("chart-forecast", { series, bands, axes: [{}, axis("kW", "kW")] }, data);
  note.textContent = targets.map((t) => TARGET_LABELS[t][0] + ": " + forecasts.targets[t].model).join(", ")
    + " — issued " + localTime(base.issued_at, true) + ", " + ago(base.issued_at);
}

// Paint each planned step's action as a translucent column behind the price line.
function actionBands(actions, stepSeconds) {
  return (u) => {
    const ctx = u.ctx, xs = u.data[0], top = u.bbox.top, height = u.bbox.height;
    ctx.save();
    ctx.globalAlpha = 0.3;
    xs.forEach((t, i) => {
      const color = COLORS[actions[i]];
      if (!color) return;
      const left = u.valToPos(t, "x", true), right = u.valToPos(t + stepSeconds, "x", true);
      ctx.fillStyle = color;
      ctx.fillRect(left, top, Math.max(1, right - left), height);
    });
    ctx.restore();
  };
}

function drawPlan(plan) {
  const note = el("plan-note");
  if (!plan.series) {
    draw("chart-plan", {}, [[]]);
    note.textContent = "No plan stored for this site yet.";
    renderNext(null);
    return;
  }
  const s = plan.series, x = seconds(s.ts);
  const step = x.length > 1 ? x[1] - x[0] : 900;
  draw("chart-plan", {
    series: [{}, line("price " + perKwh(), COLORS.price, "price", { width: 2 }), line("planned SOC %", COLORS.soc, "%"),
      line("battery kW (+charge)", COLORS.buy, "kW", { width: 1, dash: [3, 3] })],
    scales: { "%": { range: [0, 100] } },
    axes: [{}, axis("price", perKwh()), axis("%", "SOC %", 1), axis("kW", "battery kW (+charge)", 1)],
    hooks: { drawClear: [actionBands(s.action, step)] },
  }, [x, s.price_per_kwh, s.soc_percent, s.battery_power_kw]);
  note.textContent = "Issued " + localTime(plan.issued_at, true) + ", " + ago(plan.issued_at) + " · " + Object.entries(plan.actions)
    .map(([a, n]) => a + " " + (n * step / 3600).toFixed(1) + " h").join(", ");
  renderNext(plan.summary);
}

// Every action block of the plan's summary, with its reason, so an owner can act on it; first
// the inputs it was planned on while their service was down ("prices stale since ..."). The
// API shows the newest plan near the newest reading, however old both are (a backfill's store
// still draws): a plan whose horizon has passed says so, and its first action is what "was"
// next, not what to do now.
function renderNext(summary) {
  const list = el("next-actions"), next = el("next-now"), stale = el("plan-stale");
  const ended = summary && Date.parse(summary.end) <= Date.now();
  const staleLines = [...(ended ? ["this plan ended " + localTime(summary.end, true) + ", " + ago(summary.end)
    + ": no newer plan is stored, so its actions are past"] : []), ...(summary && summary.stale_lines ? summary.stale_lines : [])];
  stale.textContent = staleLines.join("; ");
  stale.hidden = !staleLines.length;
  list.textContent = "";
  next.textContent = summary ? (ended ? "Was next: " : "Next: ") + summary.next_action + " (times in " + summary.zone + ")" : "";
  if (!summary) { list.innerHTML = "<li class='muted'>no plan yet</li>"; return; }
  for (const block of summary.blocks) {
    const item = document.createElement("li");
    item.dataset.action = block.action;
    item.dataset.start = block.start;
    const head = document.createElement("strong");
    head.textContent = block.heading;
    head.style.color = COLORS[block.action];
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = block.reason;
    item.append(head, ": ", reason);
    list.appendChild(item);
  }
  if (!list.children.length) list.innerHTML = "<li class='muted'>keep the battery idle</li>";
}

function renderSavings(sv) {
  el("savings").textContent = sv.available ? sv.savings_text : "–";
  el("savings-detail").textContent = sv.available ? sv.savings_line : "no plan yet";
}

function renderSite(site) {
  el("site-detail").textContent = [site.device_id, site.timezone,
    site.pv_capacity_kw != null ? site.pv_capacity_kw.toFixed(1) + " kWp PV" : null,
    site.battery_capacity_kwh != null ? site.battery_capacity_kwh.toFixed(1) + " kWh battery" : null,
    site.currency, site.has_ev ? "EV" : null,
    site.readings + " readings, newest " + (site.last_reading ? localTime(site.last_reading, true) + ", " + ago(site.last_reading) : "–"),
  ].filter(Boolean).join(" · ");
}

function age(secondsAgo) {
  if (secondsAgo == null) return "never";
  if (secondsAgo < 120) return Math.round(secondsAgo) + " s ago";
  if (secondsAgo < 7200) return Math.round(secondsAgo / 60) + " min ago";
  if (secondsAgo < 172800) return (secondsAgo / 3600).toFixed(1) + " h ago";
  return (secondsAgo / 86400).toFixed(1) + " days ago";
}

// How long before now an ISO 8601 instant was: the page's times name a weekday, not a date.
// One after now (a gateway whose clock runs fast) says so rather than a negative age.
function ago(stamp) {
  const seconds = (Date.now() - Date.parse(stamp)) / 1000;
  return seconds < 0 ? age(-seconds).replace(/ ago$/, " ahead of this clock") : age(seconds);
}

function renderPipeline(status) {
  const body = document.querySelector("#pipeline tbody");
  body.textContent = "";
  if (!status.jobs.length) { body.innerHTML = "<tr><td colspan=5 class='muted'>no runs recorded</td></tr>"; return; }
  for (const job of status.jobs) {
    const row = body.insertRow();
    row.dataset.job = job.job;
    const cells = [job.job, job.last_status + (job.last_error ? ": " + job.last_error : ""), age(job.age_seconds),
      String(job.rows), String(job.failures)];
    cells.forEach((text, i) => { const cell = row.insertCell(); cell.textContent = text; if (i === 1) cell.className = job.last_status; });
  }
}

const PORTFOLIO_KPIS = ["total_cost", "savings", "peak_aggregate_import_kw", "self_consumption", "load_factor",
  "emissions_kg", "unserved_kwh", "deferred_kwh", "satisfaction_mean"];

function renderPortfolio(portfolio) {
  const section = el("portfolio");
  section.hidden = !portfolio.available;
  if (!portfolio.available) return;
  // The newest summary that reads; newer ones that do not (a run cut short) are named with why.
  const body = el("portfolio-body"), readable = portfolio.results.findIndex((r) => r.summary);
  const skipped = portfolio.results.slice(0, readable < 0 ? undefined : readable).map((r) => r.path + " skipped (" + r.error + ")");
  body.textContent = "";
  const title = document.createElement("p");
  title.className = "muted";
  body.appendChild(title);
  if (readable < 0) { title.textContent = "no readable portfolio summary: " + skipped.join("; "); return; }
  const newest = portfolio.results[readable], summary = newest.summary;
  title.textContent = [newest.path, summary.sites != null ? summary.sites + " sites" : null,
    summary.steps != null ? summary.steps + " steps from " + summary.start : null,
    newest.modified ? "written " + new Date(newest.modified).toLocaleString() : null, ...skipped].filter(Boolean).join(" · ");
  const table = document.createElement("table");
  const strategies = summary.strategies && typeof summary.strategies === "object" ? summary.strategies : null;
  if (strategies) {
    // Strategies as rows, the headline KPIs the portfolio job reports as columns.
    const kpis = PORTFOLIO_KPIS.filter((k) => Object.values(strategies).some((s) => s && k in s));
    const head = table.createTHead().insertRow();
    ["strategy", ...kpis].forEach((k) => { const th = document.createElement("th"); th.textContent = kpiLabel(k, summary.currency); head.appendChild(th); });
    const rows = table.createTBody();
    for (const [name, values] of Object.entries(strategies)) {
      const row = rows.insertRow();
      row.insertCell().textContent = name;
      kpis.forEach((k) => { row.insertCell().textContent = kpiValue(values[k], k); });
    }
  } else {
    flatten(summary, "").slice(0, 60).forEach(([key, value]) => {
      const row = table.insertRow();
      row.insertCell().textContent = key;
      row.insertCell().textContent = kpiValue(value, key);
    });
  }
  body.appendChild(table);
}

function flatten(value, prefix) {
  if (value === null || typeof value !== "object") return [[prefix || "value", value]];
  if (Array.isArray(value)) return [[prefix, value.length + " items"]];
  return Object.entries(value).flatMap(([k, v]) => flatten(v, prefix ? prefix + "." + k : k));
}

async function loadSites() {
  state.sites = await api("/api/sites");
  const select = el("site");
  const previous = state.site || new URLSearchParams(location.search).get("site");
  select.textContent = "";
  for (const site of state.sites) select.add(new Option(site.device_id, site.device_id));
  const known = state.sites.some((s) => s.device_id === previous);
  state.site = known ? previous : (state.sites[0] ? state.sites[0].device_id : null);
  if (state.site) select.value = state.site;
}

async function refresh() {
  const status = el("status");
  try {
    await loadSites();
    const [pipeline, portfolio] = await Promise.all([api("/api/pipeline"), api("/api/portfolio")]);
    renderPipeline(pipeline);
    renderPortfolio(portfolio);
    if (state.site) await refreshSite(state.site);
    status.textContent = "updated " + (state.site ? localTime(new Date().toISOString(), true) : new Date().toISOString())
      + " · refreshes every " + REFRESH_MS / 1000 + " s";
    status.className = "muted";
    document.body.dataset.loaded = state.site || "none";
  } catch (error) {
    if (error instanceof Unauthorized) { el("token-form").hidden = false; status.textContent = "token needed"; return; }
    status.textContent = "update failed: " + error.message;
    status.className = "error-text";
  }
}

async function refreshSite(site) {
  const base = "/api/sites/" + encodeURIComponent(site);
  const [info, readings, forecasts, plan, savings] = await Promise.all(
    ["", "/readings", "/forecasts", "/plan", "/savings"].map((p) => api(base + p)));
  if (site !== state.site) return; // the user switched site while this was loading
  renderSite(info);
  drawHistory(readings);
  drawForecasts(forecasts);
  drawPlan(plan);
  renderSavings(savings);
}

el("site").addEventListener("change", (event) => {
  state.site = event.target.value;
  const url = new URL(location.href);
  url.searchParams.set("site", state.site);
  history.replaceState(null, "", url);
  refreshSite(state.site).then(() => { document.body.dataset.loaded = state.site; })
    .catch((error) => { el("status").textContent = "update failed: " + error.message; });
});

el("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = el("token").value;
  sessionStorage.setItem("dashboardToken", state.token);
  el("token-form").hidden = true;
  refresh();
});

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(charts)) chart.setSize({ width: el(id).clientWidth, height: 260 });
});

refresh();
setInterval(refresh, REFRESH_MS);
