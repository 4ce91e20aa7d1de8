// Live KPI dashboard of `stgym serve` / `stgym demo`: polls /api/v1 and draws with uPlot.
// One series per (device type, algorithm) of the chosen experiment; each series has its own
// colour and, so that equal series never hide one another, its own dash pattern, a line width
// and point size that shrink with its index (later ones drawn on top, inside the earlier).
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const DASHES = [[], [10, 5], [3, 4], [14, 4, 3, 4]];
const PERCENTILES = [["switching_time_s_p50", "p50", []], ["switching_time_s_p95", "p95", [8, 4]],
                     ["switching_time_s_p99", "p99", [2, 3]]];
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const charts = {};
let lastOk = null;

for (const name of ["window", "since"]) {
  const wanted = params.get(name);
  if (wanted && ![...$(name).options].some((o) => o.value === wanted)) $(name).add(new Option(wanted, wanted));
  if (wanted) $(name).value = wanted;
  $(name).addEventListener("change", refresh);
}
$("experiment").addEventListener("change", refresh);

async function getJson(path) {
  const response = await fetch(path, {cache: "no-store"});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).error || detail; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: HTTP ${response.status} ${detail}`);
  }
  return response.json();
}

function si(value, unit) {
  if (value === null || value === undefined) return "—";
  if (value === 0) return `0 ${unit}`;
  const prefixes = [[1e-15, "f"], [1e-12, "p"], [1e-9, "n"], [1e-6, "µ"], [1e-3, "m"], [1, ""], [1e3, "k"], [1e6, "M"]];
  let [scale, prefix] = prefixes[0];
  for (const [s, p] of prefixes) if (Math.abs(value) >= s) [scale, prefix] = [s, p];
  return `${(value / scale).toPrecision(3)} ${prefix}${unit}`;
}
const pct = (v) => (v === null || v === undefined ? "—" : `${(100 * v).toFixed(v > 0.999 && v < 1 ? 3 : 1)} %`);

function fillExperiments(experiments) {
  const select = $("experiment");
  const wanted = select.value || params.get("experiment") || (experiments[0] || {}).experiment_id;
  const ids = experiments.map((e) => e.experiment_id);
  if (select.options.length !== ids.length || ids.some((id, i) => select.options[i].value !== id)) {
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
  }
  if (wanted && ids.includes(wanted)) select.value = wanted;
  return select.value;
}

function fillSummary(rows, rateByKey) {
  const body = document.querySelector("#summary tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    const rate = rateByKey.get(`${r.experiment_id}|${r.device_type}|${r.algorithm}`);
    const cells = [r.experiment_id, r.device_type, r.algorithm, r.episodes_total.toLocaleString("en"),
      pct(r.success_rate),
      r.write_error_rate === undefined ? "—" : `${pct(r.write_error_rate)} (≤ ${pct(r.write_error_rate_upper95)})`,
      si(r.energy_per_switch_j_mean, "J"),
      [r.switching_time_s_p50, r.switching_time_s_p95, r.switching_time_s_p99].map((v) => si(v, "s")).join(" / "),
      rate === undefined ? "—" : `${rate.toPrecision(3)} /s`];
    for (const text of cells) { const td = document.createElement("td"); td.textContent = text; tr.append(td); }
    return tr;
  }));
}

function seriesTable(rows, fields) {
  // x = window starts (s), one y array per (key, field), null where a window has no value.
  const xs = [...new Set(rows.map((r) => r.window_start))].sort((a, b) => a - b);
  const keys = [...new Set(rows.map((r) => `${r.device_type} / ${r.algorithm}`))].sort();
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  const series = [{}];
  keys.forEach((key, k) => {
    fields.forEach(([field, label, dash, value]) => {
      const ys = xs.map(() => null);
      for (const r of rows) {
        if (`${r.device_type} / ${r.algorithm}` === key) ys[index.get(r.window_start)] = value(r, field);
      }
      data.push(ys);
      // later keys thinner and smaller, drawn on top: an equal earlier series shows around them
      series.push({label: label ? `${key} ${label}` : key, stroke: COLORS[k % COLORS.length],
                   width: Math.max(4 - 1.5 * k, 1.5), dash: dash || DASHES[k % DASHES.length],
                   spanGaps: true,
                   points: {show: true, size: Math.max(12 - 4 * k, 5), fill: COLORS[k % COLORS.length]}});
    });
  });
  return {data, series};
}

function draw(id, title, unit, table, yRange) {
  const el = $(id);
  const width = Math.max(el.clientWidth || 560, 360);
  const signature = table.series.map((s) => s.label).join("|");
  let chart = charts[id];
  if (chart && chart.signature === signature) { chart.setData(table.data); return; }
  if (chart) chart.destroy();
  const fmt = unit === "%" ? (v) => `${(100 * v).toFixed(0)} %` : (v) => si(v, unit);
  chart = new uPlot({
    title, width, height: 260, series: table.series,
    scales: {x: {time: true}, y: yRange ? {range: yRange} : {}},
    axes: [{}, {size: 70, values: (u, vals) => vals.map(fmt)}],
    legend: {live: false},
  }, table.data, el);
  chart.signature = signature;
  charts[id] = chart;
}

async function refresh() {
  const windowText = $("window").value, since = $("since").value;
  try {
    const experiments = (await getJson("/api/v1/experiments")).experiments;
    const experiment = fillExperiments(experiments);
    const totals = (await getJson("/api/v1/kpis")).kpis;
    let rows = [];
    if (experiment) {
      const q = new URLSearchParams({experiment, window: windowText, since});
      rows = (await getJson(`/api/v1/kpis?${q}`)).kpis;
    }
    const latest = new Map();
    for (const r of rows) {
      const key = `${r.experiment_id}|${r.device_type}|${r.algorithm}`;
      if (!latest.has(key) || latest.get(key).window_start < r.window_start) latest.set(key, r);
    }
    fillSummary(totals.filter((r) => !experiment || r.experiment_id === experiment || experiments.length <= 8),
                new Map([...latest].map(([k, r]) => [k, r.episodes_total / r.window_s])));
    const value = (r, f) => r[f];
    draw("chart-success", `success rate · ${experiment || "no experiment yet"}`, "%",
         seriesTable(rows, [["success_rate", "", null, value]]), (u, lo, hi) => [Math.min(lo, 0.9) - 0.01, 1.01]);  // points at 100 % stay whole
    draw("chart-energy", "energy per switch", "J",
         seriesTable(rows, [["energy_per_switch_j_mean", "", null, value]]));
    draw("chart-time", "switching time p50 / p95 / p99", "s",
         seriesTable(rows, PERCENTILES.map(([f, label, dash]) => [f, label, dash, value])));
    draw("chart-rate", "episode rate", "/s",
         seriesTable(rows, [["episodes_total", "", null, (r) => r.episodes_total / r.window_s]]));
    lastOk = new Date();
    document.body.dataset.state = rows.length ? "live" : "empty";
    $("error").hidden = true;
    $("status").textContent = `updated ${lastOk.toLocaleTimeString()} · ${rows.length} window rows`;
  } catch (error) {
    document.body.dataset.state = "error";
    $("error").hidden = false;
    $("error").textContent = `KPI API unavailable (${error.message}); retrying every ` +
      `${window.STGYM_REFRESH_MS / 1000} s` + (lastOk ? ` · last good data ${lastOk.toLocaleTimeString()}` : "");
    $("status").textContent = "error";
  }
}

refresh();
setInterval(refresh, window.STGYM_REFRESH_MS);
