// gyro dashboard: polls the controller's /api/series, /api/events and /api/quarantine, draws the
// curves with uPlot and every repair on them, and lists the quarantine. Plain script, no build step, nothing fetched from elsewhere.
//
// Data flow: series arrive as columns (steps, loss, loss_ch{name}, grad norms, lr, tokens_per_s,
// rank_tokens_per_s[rank]) for the steps after the newest one we hold (?since=STEP). A rollback
// re-runs steps: the controller then starts a new "timeline", and we fetch everything again
// (?since=-1), which also brings the steps the rollback abandoned (drawn dashed and faint).
// Events (?since=ID) are the audit log: the notable ones become markers on every chart (one
// absolutely positioned element per event over the plot, with the event's text as its tooltip)
// and rows of the table below. Which kinds are notable, and their marker classes, come from
// /api/event_kinds (the controller's table of kinds), fetched once.
"use strict";

const POLL_MS = 1000;
const MAX_POINTS = 50000; // client-side bound on the points kept
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
                 "#e377c2", "#bcbd22", "#7f7f7f"];

// The event kinds come from the controller (/api/event_kinds, generated from the table in
// controller/event_kinds.h): name -> {marker, notable}. Fetched once, before the first events.
let KINDS = null;
async function loadKinds() {
  const r = await getJSON("/api/event_kinds");
  const m = new Map();
  for (const k of r.kinds) m.set(k.name, k);
  KINDS = m;
}

// Marker class of an event (null: listed only, no marker). The table gives the class; a repair's
// knob changes ("skip" with hparams in its text, an operator's SET_HPARAMS "command") are drawn
// as "hparams".
function markerClass(ev) {
  const k = KINDS && KINDS.get(ev.kind), t = ev.text || "";
  const m = k ? k.marker : "";
  if (m === "skip") return /lr|clip|eps|z_loss|shallow|wsd/i.test(t) ? "hparams" : "skip";
  if (m === "hparams") return /SET_HPARAMS/.test(t) ? "hparams" : null;
  return m || null;
}
function notable(ev) {
  const k = KINDS && KINDS.get(ev.kind);
  return !!(k && k.notable);
}

const st = {
  timeline: null,
  cols: null,       // the current timeline's columns
  abandoned: [],    // segments of steps abandoned by rollbacks
  evals: [],
  events: [],
  lastEvent: 0,
  info: null,
  charts: {},
  highlight: null,  // step whose markers are highlighted
};

function $(sel) { return document.querySelector(sel); }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v, digits) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  return Number(v).toFixed(digits);
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// ---- data ----

function appendColumns(dst, src) {
  dst.steps.push(...src.steps);
  for (const k of ["loss", "grad_norm", "grad_norm_shallow", "grad_norm_deep", "lr",
                   "tokens_per_s", "step_ms"]) dst[k].push(...src[k]);
  for (const name of Object.keys(src.loss_ch)) {
    if (!dst.loss_ch[name]) dst.loss_ch[name] = new Array(dst.steps.length - src.steps.length).fill(null);
    dst.loss_ch[name].push(...src.loss_ch[name]);
  }
  const rk = src.rank_tokens_per_s || [];
  rk.forEach((a, r) => {
    if (!dst.rank[r]) dst.rank[r] = new Array(dst.steps.length - src.steps.length).fill(null);
    dst.rank[r].push(...a);
  });
  const drop = dst.steps.length - MAX_POINTS;
  if (drop > 0) {
    dst.steps.splice(0, drop);
    for (const k of ["loss", "grad_norm", "grad_norm_shallow", "grad_norm_deep", "lr",
                     "tokens_per_s", "step_ms"]) dst[k].splice(0, drop);
    for (const a of Object.values(dst.loss_ch)) a.splice(0, drop);
    for (const a of dst.rank) a.splice(0, drop);
  }
}

function emptyColumns() {
  return {steps: [], loss: [], grad_norm: [], grad_norm_shallow: [], grad_norm_deep: [], lr: [],
          tokens_per_s: [], step_ms: [], loss_ch: {}, rank: []};
}

async function pollSeries() {
  let since = -1;
  if (st.cols && st.cols.steps.length) since = st.cols.steps[st.cols.steps.length - 1];
  let s = await getJSON("/api/series?since=" + since);
  if (st.timeline !== null && s.timeline !== st.timeline && since >= 0) {
    s = await getJSON("/api/series?since=-1"); // a rollback re-ran steps: start over
    since = -1;
  }
  if (since < 0) {
    st.cols = emptyColumns();
    st.abandoned = s.abandoned || [];
  }
  st.timeline = s.timeline;
  appendColumns(st.cols, s);
  st.evals = s.eval || [];
  st.info = s;
}

async function pollEvents() {
  for (let i = 0; i < 20; i++) { // at most 500 a call
    const r = await getJSON("/api/events?since=" + st.lastEvent);
    for (const ev of r.events) st.events.push(ev);
    if (r.events.length) st.lastEvent = r.events[r.events.length - 1].id;
    if (r.events.length < 500) break;
  }
  if (st.events.length > 5000) st.events.splice(0, st.events.length - 5000);
}

// ---- charts ----

// Draws the abandoned segments of the columns named by `pick` (dashed, faint).
function abandonedPlugin(pick) {
  return {hooks: {draw: [u => {
    const ctx = u.ctx, b = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(b.left, b.top, b.width, b.height);
    ctx.clip();
    ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.globalAlpha = 0.55;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    for (const seg of st.abandoned) {
      for (const [ys, color, scale] of pick(seg)) {
        ctx.strokeStyle = color;
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < seg.steps.length; i++) {
          const y = ys[i];
          if (y === null || y === undefined || (scale === "log" && y <= 0)) { pen = false; continue; }
          const px = u.valToPos(seg.steps[i], "x", true), py = u.valToPos(y, "y", true);
          if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
          pen = true;
        }
        ctx.stroke();
      }
    }
    ctx.restore();
  }]}};
}

// Places one marker element per notable event over the plot.
function markersPlugin() {
  return {hooks: {draw: [u => placeMarkers(u)]}};
}

function placeMarkers(u) {
  for (const m of Array.from(u.over.querySelectorAll(".marker"))) m.remove();
  const xs = u.scales.x;
  if (xs.min === null || xs.max === null) return;
  for (const ev of st.events) {
    const cls = markerClass(ev);
    if (!cls || ev.step < xs.min || ev.step > xs.max) continue;
    const m = el("div", "marker k-" + cls + (st.highlight === ev.id ? " hl" : ""));
    m.dataset.kind = ev.kind;
    m.dataset.step = ev.step;
    m.dataset.id = ev.id;
    m.style.left = u.valToPos(ev.step, "x") + "px";
    m.title = ev.kind + " at step " + ev.step + ": " + ev.text;
    m.addEventListener("click", () => selectEvent(ev.id));
    u.over.appendChild(m);
  }
}

// The y range of a linear chart, widened to the abandoned values.
function rangeWith(pick) {
  return (u, min, max) => {
    for (const seg of st.abandoned)
      for (const [ys] of pick(seg))
        for (const y of ys) if (y !== null && isFinite(y)) { min = Math.min(min, y); max = Math.max(max, y); }
    if (min === null || max === null || !isFinite(min) || !isFinite(max)) return [0, 1];
    const pad = (max - min) * 0.05 || Math.abs(max) * 0.05 || 1;
    return [min - pad, max + pad];
  };
}

function width(section) {
  return Math.max(300, section.clientWidth || 800);
}

function makeChart(id, series, data, opts) {
  const sec = document.getElementById(id);
  const plot = sec.querySelector(".plot");
  plot.textContent = "";
  const u = new uPlot(Object.assign({
    width: width(sec),
    height: opts.height || 220,
    scales: Object.assign({x: {time: false}}, opts.scales || {}),
    series: [{label: "step"}].concat(series),
    axes: [{label: "step"}, {size: 70}],
    legend: {live: true},
    plugins: (opts.plugins || []).concat([markersPlugin()]),
  }), data, plot);
  sec.classList.add("has-data");
  return u;
}

function chartKey(names) { return names.join("|"); }

function lossPick(seg) {
  const out = [[seg.loss, "#000000"]];
  Object.keys(seg.loss_ch || {}).forEach((n, i) => out.push([seg.loss_ch[n], PALETTE[i % PALETTE.length]]));
  return out;
}
function gradPick(seg) {
  return [[seg.grad_norm, "#000000", "log"], [seg.grad_norm_shallow, PALETTE[0], "log"],
          [seg.grad_norm_deep, PALETTE[1], "log"]];
}
function positive(a) { return a.map(v => (v !== null && v > 0 ? v : null)); }

function render() {
  const c = st.cols, s = st.info;
  if (!c || !s) return;
  // loss per channel
  const chNames = Object.keys(c.loss_ch);
  const lossData = [c.steps, c.loss].concat(chNames.map(n => c.loss_ch[n]));
  upsert("c-loss", chartKey(chNames), lossData, () => [
    {label: "total", stroke: "#000000", width: 1.5},
  ].concat(chNames.map((n, i) => ({label: n, stroke: PALETTE[i % PALETTE.length], width: 1.2}))),
  {plugins: [abandonedPlugin(lossPick)], scales: {y: {range: rangeWith(lossPick)}}});
  // gradient norms (log)
  upsert("c-grad", "g", [c.steps, positive(c.grad_norm), positive(c.grad_norm_shallow),
                         positive(c.grad_norm_deep)], () => [
    {label: "global", stroke: "#000000", width: 1.5},
    {label: "shallow", stroke: PALETTE[0], width: 1.2},
    {label: "deep", stroke: PALETTE[1], width: 1.2},
  ], {plugins: [abandonedPlugin(gradPick)], scales: {y: {distr: 3}}});
  // held-out perplexity per source
  const srcs = [...new Set(st.evals.map(e => e.source))];
  if (st.evals.length) {
    const steps = [...new Set(st.evals.map(e => e.step))].sort((a, b) => a - b);
    const idx = new Map(steps.map((x, i) => [x, i]));
    const ys = srcs.map(() => new Array(steps.length).fill(null));
    for (const e of st.evals) ys[srcs.indexOf(e.source)][idx.get(e.step)] = e.ppl;
    upsert("c-ppl", chartKey(srcs), [steps].concat(ys), () =>
      srcs.map((n, i) => ({label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5,
                           points: {show: true}})), {});
  }
  // throughput per rank
  const ranks = c.rank.map((_, r) => "rank " + r);
  upsert("c-tps", chartKey(ranks), [c.steps].concat(c.rank), () =>
    ranks.map((n, i) => ({label: n, stroke: PALETTE[i % PALETTE.length], width: 1})), {});
  // learning rate
  upsert("c-lr", "lr", [c.steps, c.lr], () => [{label: "lr", stroke: PALETTE[3], width: 1.5}],
         {height: 150});
}

function upsert(id, key, data, series, opts) {
  const have = st.charts[id];
  if (have && have.key === key) {
    have.u.setData(data);
    return;
  }
  if (have) have.u.destroy();
  st.charts[id] = {key, u: makeChart(id, series(), data, opts)};
}

// The cloze accuracy (and perplexity) of every checkpoint's evaluation, newest first: one row
// per checkpoint step, one column per source. The evaluations of the current timeline replace
// those of an abandoned one (the newest record of a (step, source) wins).
function renderCloze() {
  const sec = $("#cloze");
  const evs = st.evals.filter(e => e.checkpoint);
  if (!evs.length) return;
  const srcs = [...new Set(evs.map(e => e.source))];
  const rows = new Map();
  for (const e of evs) {
    if (!rows.has(e.step)) rows.set(e.step, {});
    rows.get(e.step)[e.source] = e;
  }
  const head = $("#cloze-head"), body = $("#cloze-body");
  head.textContent = "";
  const hr = el("tr");
  hr.append(el("th", null, "checkpoint"));
  for (const n of srcs) hr.append(el("th", "num", n + " cloze"), el("th", "num", n + " ppl"));
  head.append(hr);
  body.textContent = "";
  for (const step of [...rows.keys()].sort((a, b) => b - a).slice(0, 50)) {
    const tr = el("tr");
    tr.dataset.step = step;
    tr.append(el("td", "num", String(step)));
    for (const n of srcs) {
      const e = rows.get(step)[n];
      tr.append(el("td", "num", e && e.cloze !== null ? fmt(100 * e.cloze, 1) + "%" : "–"),
                el("td", "num", e ? fmt(e.ppl, 2) : "–"));
    }
    body.append(tr);
  }
  sec.classList.add("has-data");
}

// The quarantine list (/api/quarantine, the newest changes first): regions of shard files the
// workers' guard or the operator took out of training. Polled at most every QUAR_MS.
const QUAR_MS = 5000;
let quarAt = 0;
async function pollQuarantine() {
  if (Date.now() - quarAt < QUAR_MS) return;
  quarAt = Date.now();
  const q = await getJSON("/api/quarantine");
  const sec = $("#quarantine"), body = $("#q-body");
  body.textContent = "";
  const list = q.entries || [];
  if (!list.length) {
    sec.classList.remove("has-data");
    return;
  }
  $("#q-sum").textContent = q.total + " entries, " + q.active + " active" +
      (q.shown < q.total ? " (the newest " + q.shown + " changes shown; gyroctl quarantine list " +
                           "has them all)" : "");
  for (const e of list) {
    const tr = el("tr", e.released ? "released" : "");
    tr.dataset.step = e.changed_step;
    tr.append(el("td", "num", String(e.id)), el("td", null, e.released ? "released" : "active"),
              el("td", null, e.channel), el("td", "file", e.file),
              el("td", "num", e.offset + " +" + e.length),
              el("td", "num", e.document >= 0 ? String(e.document) : "–"), el("td", null, e.reason),
              el("td", "num", e.first_step >= 0 ? String(e.first_step) : "operator"),
              el("td", "num", String(e.hits)),
              el("td", "num", e.first_step >= 0 ? fmt(e.loss, 2) + " (" + fmt(e.median, 2) +
                                                  " + " + fmt(e.threshold, 2) + ")" : "–"));
    body.append(tr);
  }
  sec.classList.add("has-data");
}

// ---- header and events ----

function renderHeader() {
  const s = st.info;
  if (!s) return;
  $("#run").textContent = s.run ? "— run " + s.run : "";
  const status = $("#status");
  status.textContent = "";
  const state = el("span", "state state-" + s.state, s.state);
  status.append("State ", state, "  ·  step " + (s.step + 1) + " of " + s.steps_total +
                "  ·  generation " + s.generation + (s.gang ? "" : " (no gang)") +
                "  ·  world " + s.world + " (tp " + s.tp + ")");
  const c = st.cols;
  const last = c && c.steps.length ? c.steps.length - 1 : -1;
  const cn = s.counters || {};
  const ck = s.checkpoint;
  const items = [
    ["loss", last >= 0 ? fmt(c.loss[last], 4) : "–"],
    ["tokens/s", last >= 0 ? fmt(c.tokens_per_s[last], 0) : "–"],
    ["spikes", cn.spikes_detected],
    ["recovered", cn.spikes_recovered],
    ["rollbacks", cn.rollbacks],
    ["samples skipped", cn.samples_skipped],
    ["directives", cn.directives],
    ["checkpoint", ck ? "step " + ck.step + " (" + fmt(ck.age_s, 0) + " s ago)" : "none"],
    ["reports", cn.reports],
  ];
  const dl = $("#counters");
  dl.textContent = "";
  for (const [k, v] of items) {
    const d = el("div");
    d.append(el("dt", null, k), el("dd", null, v === undefined ? "–" : String(v)));
    dl.append(d);
  }
}

function renderEvents() {
  const all = $("#all-events").checked;
  const body = $("#ev-body");
  body.textContent = "";
  const list = st.events.filter(e => all || notable(e) || markerClass(e)).slice(-400).reverse();
  for (const ev of list) {
    const cls = markerClass(ev);
    const tr = el("tr", "ev ev-" + ev.kind + (cls ? " k-" + cls : "") + (st.highlight === ev.id ? " hl" : ""));
    tr.dataset.id = ev.id;
    tr.dataset.step = ev.step;
    tr.dataset.kind = ev.kind;
    const t = new Date(ev.time * 1000);
    tr.append(el("td", "num", t.toLocaleTimeString()), el("td", "num", String(ev.step)),
              el("td", "kind", ev.kind), el("td", "text", ev.text));
    tr.addEventListener("click", () => selectEvent(ev.id));
    body.append(tr);
  }
}

function selectEvent(id) {
  st.highlight = st.highlight === id ? null : id;
  for (const c of Object.values(st.charts)) placeMarkers(c.u);
  renderEvents();
}

// ---- loop ----

let evCount = -1;
async function tick() {
  try {
    if (!KINDS) await loadKinds();
    await pollEvents();
    await pollSeries();
    render();
    renderCloze();
    renderHeader();
    await pollQuarantine();
    if (st.events.length !== evCount) {
      evCount = st.events.length;
      renderEvents();
      for (const c of Object.values(st.charts)) placeMarkers(c.u);
    }
  } catch (e) {
    $("#status").textContent = "cannot reach the controller: " + e.message + " (retrying)";
  }
  setTimeout(tick, POLL_MS);
}

$("#all-events").addEventListener("change", renderEvents);
window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(st.charts))
    c.u.setSize({width: width(document.getElementById(id)), height: c.u.height});
});
tick();
