// staircase view: the pages' behaviour. Charts come from the server as plotly figures (the same
// Python code draws the static report); this file only fetches, draws and keeps them live.
"use strict";

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v, digits = 0) {
  if (v === null || v === undefined) return "-";
  return Number(v).toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
}
function runUrl(rid) { return "/runs/" + rid.split("/").map(encodeURIComponent).join("/"); }
function sparkSvg(values, w = 120, h = 24) {
  if (!values || values.length === 0) return "";
  const hi = Math.max(...values), lo = Math.min(...values, 0);
  const xs = values.map((_, i) => values.length > 1 ? (i / (values.length - 1)) * (w - 2) + 1 : w / 2);
  const ys = values.map(v => hi > lo ? h - 2 - ((v - lo) / (hi - lo)) * (h - 4) : h / 2);
  const pts = xs.map((x, i) => x.toFixed(1) + "," + ys[i].toFixed(1)).join(" ");
  return `<svg class="spark" width="${w}" height="${h}"><polyline fill="none" stroke="#1f4e9c" stroke-width="1.5" points="${pts}"/></svg>`;
}

function drawFigure(id, fig, rid) {
  const el = document.getElementById(id);
  Plotly.react(el, fig.data, fig.layout, {responsive: true, displaylogo: false});
  if (rid && !el.__clickBound) {
    el.__clickBound = true;
    el.on("plotly_click", ev => {
      const p = ev.points && ev.points.find(q => q.customdata !== undefined && q.customdata !== null);
      if (p) window.location.href = runUrl(rid) + "/iterations/" + p.customdata;
    });
  }
}

// -- runs page --------------------------------------------------------------------------------
function startRunsPage() {
  const selected = new Set();
  const fModel = document.getElementById("f-model"), fStatus = document.getElementById("f-status");
  let runs = [];
  function render() {
    const models = [...new Set(runs.map(r => r.model))].sort();
    const cur = fModel.value;
    fModel.innerHTML = '<option value="">all</option>' + models.map(m => `<option ${m === cur ? "selected" : ""}>${esc(m)}</option>`).join("");
    const rows = runs.filter(r => (!fModel.value || r.model === fModel.value) && (!fStatus.value || r.status === fStatus.value));
    const used = (r, k, d) => fmt(r.used[k], d) + (r.budget[k] ? ` <span class="dim">/ ${fmt(r.budget[k], d)}</span>` : "");
    document.querySelector("#runs tbody").innerHTML = rows.map(r => `<tr data-run="${esc(r.id)}" data-status="${esc(r.status)}">
      <td><input type="checkbox" class="pick" value="${esc(r.id)}" ${selected.has(r.id) ? "checked" : ""}></td>
      <td><a href="${runUrl(r.id)}">${esc(r.id)}</a></td><td><span class="status s-${esc(r.status)}">${esc(r.status)}</span></td>
      <td>${esc(r.model)}</td><td>${esc(r.preset)}</td><td>${used(r, "iterations", 0)}</td><td>${used(r, "tool_calls", 0)}</td>
      <td>${used(r, "tokens", 0)}</td><td>${used(r, "dollars", 2)}</td><td>${used(r, "hours", 2)}</td>
      <td class="best">${fmt(r.best_valid_qps)}</td><td>${sparkSvg(r.spark)}</td></tr>`).join("");
    document.querySelectorAll("#runs .pick").forEach(c => c.onchange = () => c.checked ? selected.add(c.value) : selected.delete(c.value));
  }
  async function poll() {
    try {
      runs = await (await fetch("/api/runs")).json();
      render();
    } finally { setTimeout(poll, 2000); }
  }
  fModel.onchange = fStatus.onchange = render;
  document.getElementById("compare-selected").onclick = () => {
    window.location.href = "/compare?" + [...selected].map(r => "run=" + encodeURIComponent(r)).join("&");
  };
  poll();
}

// -- run page ---------------------------------------------------------------------------------
function startRunPage(rid) {
  const view = window.__view = {version: null, axis: "iterations", updates: 0, lastUpdate: null, points: []};
  document.querySelectorAll("input[name=axis]").forEach(r => r.onchange = () => { view.axis = r.value; view.version = null; poll(true); });
  let timer = null;
  async function poll(once) {
    clearTimeout(timer);
    try {
      const since = view.version === null ? "" : "&since=" + view.version;
      const first = window.__firstData;
      window.__firstData = null;
      const res = await (first && view.axis === "iterations" ? first
        : fetch(`/api/run/${rid.split("/").map(encodeURIComponent).join("/")}?axis=${view.axis}${since}`));
      const data = await res.json();
      if (data.figure) render(data);
    } catch (e) {
      document.getElementById("live").textContent = "not reachable: " + e;
    } finally { timer = setTimeout(poll, 500); }
  }
  function render(d) {
    view.version = d.version; view.points = d.points; view.updates += 1; view.lastUpdate = Date.now();
    const s = d.summary;
    const st = document.getElementById("run-status");
    st.textContent = s.status; st.className = "status s-" + s.status;
    document.getElementById("live").textContent = s.status === "running" ? "live: updates by itself" : "not running";
    drawFigure("staircase", d.figure, rid);
    if (!view.chartDrawnAt) view.chartDrawnAt = performance.now();  // the first paint the benchmark reports
    setTimeout(() => renderTables(d), 0);  // the chart is painted first; a 1,000-row table follows
  }
  function renderTables(d) {
    const s = d.summary;
    document.getElementById("budget").innerHTML = Object.keys(s.used).map(k => {
      const lim = s.budget[k], u = s.used[k], pct = lim ? Math.min(100, 100 * u / lim) : null;
      return `<div class="bar"><span class="k">${k.replace("_", " ")}</span><span class="track">${pct === null ? "" : `<span class="fill" style="width:${pct}%"></span>`}</span>
        <span>${fmt(u, k === "dollars" || k === "hours" ? 3 : 0)}${lim ? " / " + fmt(lim, k === "dollars" || k === "hours" ? 2 : 0) : " (no limit)"}</span></div>`;
    }).join("");
    document.querySelector("#transitions tbody").innerHTML = d.transitions.map(t => `<tr><td><a href="${runUrl(rid)}/iterations/${t.iteration}">${t.iteration}</a></td>
      <td>${fmt(t.from_qps)}</td><td>${fmt(t.to_qps)}</td><td>${t.ratio ? fmt(t.ratio, 2) + "x" : "-"}</td><td>${t.plateau_iterations}</td>
      <td>${t.lines_changed}</td><td>${esc(t.message)}</td></tr>`).join("");
    document.querySelector("#iterations tbody").innerHTML = d.rows.map(r => `<tr class="st-${esc(r.status)}" data-iteration="${r.iteration}">
      <td><a href="${runUrl(rid)}/iterations/${r.iteration}">${r.iteration}</a></td><td>${esc(r.status)}</td><td>${fmt(r.qps)}</td>
      <td>${fmt(r.recall, 4)}</td><td>${esc(r.relative || "-")}</td><td class="verdict-${esc(r.verdict)}">${esc(r.verdict)}</td>
      <td>${fmt(r.p50_ms, 3)}</td><td>${fmt(r.p99_ms, 3)}</td><td>${fmt(r.tokens)}</td><td>${fmt(r.dollars, 4)}</td>
      <td>${r.tool_calls}</td><td>${fmt(r.wall_s, 1)}</td><td>${esc(r.reason || r.message)}</td></tr>`).join("");
    if (!view.tablesDrawnAt) view.tablesDrawnAt = performance.now();
    view.tablesVersion = d.version;
  }
  poll();
}
