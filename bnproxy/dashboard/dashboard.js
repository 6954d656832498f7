/* bnproxy dashboard: reads dashboard/state once (with 15 min of history),
   then one "state" event a second from dashboard/events (EventSource
   reconnects by itself; on every (re)connect the history is fetched again).
   Every string from the proxy is set with textContent, never as HTML. */
"use strict";

const HISTORY = 900;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
const SOURCE_COLORS = {stream: "#16a34a", cache: "#2563eb", upstream: "#ea580c", local: "#6b7280"};

let doc = null;          // the newest document
let times = [];          // history: seconds
let series = {};         // history: name -> values (aligned with times)
let clockOffset = 0;     // proxy time - browser time, seconds
const charts = {};       // key -> {plot, keys, el}
let sortKey = "req15", sortDir = -1;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  return Math.abs(n) >= 1e6 ? (n / 1e6).toFixed(1) + "M" : Math.abs(n) >= 1e4 ?
    (n / 1e3).toFixed(1) + "k" : (Number.isInteger(n) ? String(n) : n.toFixed(1));
}
function fmtPct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }
function fmtMs(s) {
  if (s === null || s === undefined) return "–";
  const ms = 1000 * s;
  return (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) + " ms";
}
function fmtDuration(s) {
  s = Math.max(0, Math.ceil(s));
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}
function fmtTime(t) { return new Date(t * 1000).toISOString().slice(11, 19); }
function ago(t) {
  const s = Math.max(0, nowProxy() - t);
  return s < 2 ? "now" : s < 120 ? `${Math.round(s)} s ago` : s < 7200 ?
    `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}
function nowProxy() { return Date.now() / 1000 + clockOffset; }
function fill(tbody, rows) { tbody.replaceChildren(...rows); }

/* ---- history ---------------------------------------------------------------- */
function loadHistory(state) {
  times = state.history ? state.history.time.slice() : [];
  series = {};
  for (const [k, v] of Object.entries(state.history ? state.history.series : {})) series[k] = v.slice();
}

function pushSample(t, sample) {
  if (times.length && t <= times[times.length - 1]) return;
  times.push(t);
  const n = times.length;
  for (const k of Object.keys(series)) series[k].push(k in sample ? sample[k] : null);
  for (const [k, v] of Object.entries(sample)) {
    if (!(k in series)) { series[k] = new Array(n - 1).fill(null); series[k].push(v); }
  }
  if (n > HISTORY) {
    const cut = n - HISTORY;
    times.splice(0, cut);
    for (const k of Object.keys(series)) series[k].splice(0, cut);
  }
}

/* ---- charts ------------------------------------------------------------------- */
function chart(key, container, keys, opts) {
  const width = Math.max(200, container.clientWidth || 300);
  let c = charts[key];
  const data = [times, ...keys.map((k) => series[k] || new Array(times.length).fill(null))];
  if (!c || c.keys.join() !== keys.join() || !container.contains(c.plot.root)) {
    if (c) c.plot.destroy();
    container.replaceChildren();
    const plot = new uPlot({
      width, height: opts.height || 160,
      legend: {show: true},
      cursor: {drag: {x: false, y: false}},
      scales: {x: {time: true}, y: opts.y || {}},
      axes: [{values: (u, vs) => vs.map((v) => fmtTime(v).slice(0, v % 60 ? 8 : 5)), space: 60,
              label: "UTC", labelSize: 14, labelGap: 0},
             {size: opts.axisSize || 60, values: opts.values || ((u, v) => v.map(fmtNum))}],
      hooks: {setCursor: [showNewest]},
      series: [{label: "time (UTC)", value: (u, v) => v === null || v === undefined ? "–" : fmtTime(v) + " UTC"},
               ...keys.map((k, i) => ({
        label: (opts.labels && opts.labels[i]) || k,
        stroke: (opts.colors && opts.colors[i]) || COLORS[i % COLORS.length],
        width: 1.5, spanGaps: false, points: {show: false},
        value: opts.value || ((u, v) => fmtNum(v)),
      }))],
    }, data, container);
    c = charts[key] = {plot, keys};
    showNewest(plot);
  } else {
    if (Math.abs(c.plot.width - width) > 4) c.plot.setSize({width, height: opts.height || 160});
    c.plot.setData(data);
    showNewest(c.plot);
  }
}

/* the legend shows the newest values unless the pointer is on the chart */
function showNewest(u) {
  if (u.cursor.idx === null || u.cursor.idx === undefined) {
    const n = u.data[0].length;
    if (n) u.setLegend({idx: n - 1});
  }
}

/* ---- sections ----------------------------------------------------------------- */
function poolKey(p) { return p.egress ? `${p.pool}@${p.egress}` : p.pool; }

function gaugeSvg(fraction, banned) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 140 80");
  const arc = (f, color, w) => {
    const a = Math.PI * (1 - Math.min(1, Math.max(0, f)));
    const x = 70 + 55 * Math.cos(a), y = 72 - 55 * Math.sin(a);
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", `M 15 72 A 55 55 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}`);
    p.setAttribute("fill", "none"); p.setAttribute("stroke", color);
    p.setAttribute("stroke-width", w); p.setAttribute("stroke-linecap", "butt");
    return p;
  };
  svg.append(arc(1, "#e3e6eb", 14));
  if (fraction > 0) {
    const color = banned ? "#c62828" : fraction >= 0.9 ? "#c62828" : fraction >= 0.7 ? "#b7791f" : "#1a7f37";
    svg.append(arc(fraction, color, 14));
  }
  const text = document.createElementNS(ns, "text");
  text.setAttribute("x", "70"); text.setAttribute("y", "70");
  text.setAttribute("text-anchor", "middle"); text.setAttribute("font-size", "18");
  text.setAttribute("font-weight", "600"); text.setAttribute("fill", "#1d2330");
  text.textContent = fraction === null ? "no limit" : (100 * fraction).toFixed(0) + " %";
  svg.append(text);
  return svg;
}

function renderPools() {
  const box = document.getElementById("pools");
  // pools without a documented limit show only once used (or banned)
  const pools = (doc.pools || []).filter((p) => p.limit || p.used > 0 || p.banned_for > 0);
  if (!pools.length) { box.replaceChildren(el("p", {class: "empty"}, "no weight pool yet")); return; }
  const wanted = pools.map(poolKey);
  for (const node of [...box.children]) if (!wanted.includes(node.dataset.pool)) node.remove();
  for (const p of pools) {
    const key = poolKey(p);
    let card = box.querySelector(`.pool[data-pool="${CSS.escape(key)}"]`);
    if (!card) {
      card = el("div", {class: "pool", "data-pool": key},
        el("div", {class: "gauge"}, el("div", {class: "svg"}), el("div", {class: "name"}, key),
           el("div", {class: "figures"})),
        el("div", {class: "chart"}));
      box.append(card);
    }
    const budget = p.budget;
    const fraction = budget ? p.used / budget : null;
    card.classList.toggle("banned", p.banned_for > 0);
    card.querySelector(".svg").replaceChildren(gaugeSvg(fraction, p.banned_for > 0));
    const fig = card.querySelector(".figures");
    fig.replaceChildren(
      el("span", {class: "used"}, String(p.used)), " / ",
      el("span", {class: "budget"}, budget === null || budget === undefined ? "∞" : String(budget)),
      el("br"), p.limit ? `limit ${p.limit}` : "no documented limit",
      p.queued ? ` · ${p.queued} queued` : "");
    if (!p.folded) chart("pool:" + key, card.querySelector(".chart"), [`used.${key}`],
          {labels: ["used"], height: 110, y: budget ? {range: (u, mn, mx) => [0, Math.max(mx, budget)]} : {}});
    box.append(card);  // in the feed's order: the busiest first
  }
}

function renderBans() {
  const box = document.getElementById("bans");
  const bans = doc.bans || [];
  box.replaceChildren(...bans.map((b) => el("div", {class: "ban", "data-pool": b.pool, "data-until": b.until},
    `Binance ban on ${b.pool}${b.egress ? " from " + b.egress : ""}: `,
    el("span", {class: "countdown"}, fmtDuration(b.until - nowProxy())),
    " left — ", el("span", {class: "cause"}, b.cause || ""))));
}

function cls(status) { return String(status || "").replace(/[^a-z]+/g, "-"); }

function renderVerdict() {
  const v = document.getElementById("verdict");
  v.textContent = doc.status || "?";
  v.className = "verdict " + cls(doc.status);
  document.body.dataset.status = doc.status || "";
  const issues = doc.issues || [];
  document.getElementById("problems").replaceChildren(...issues.map((p) =>
    el("div", {class: "problem " + cls(p.severity), "data-name": p.name},
      `${p.severity}: ${p.text}`, el("span", {class: "since"}, `since ${fmtTime(p.since)} UTC`))));
}

let lastEvent = 0;       // browser time of the newest event, ms
const STALE_AFTER = 2500;
function markStale() {
  if (!doc || document.body.classList.contains("stale")) return;
  document.body.classList.add("stale");
  const link = document.getElementById("link");
  link.textContent = `no data since ${fmtTime(doc.time)} UTC`;
  link.className = "link down";
}

function tickCountdowns() {
  if (lastEvent && Date.now() - lastEvent > STALE_AFTER) markStale();
  for (const b of document.querySelectorAll(".ban")) {
    const left = Number(b.dataset.until) - nowProxy();
    b.querySelector(".countdown").textContent = fmtDuration(left);
    if (left <= 0) b.remove();
  }
}

function renderSaving() {
  const w = doc.weight_15m || {asked: {}, spent: {}, saving_percent: {}, total: {}};
  const refused = w.refused || {};
  const rows = Object.keys(w.asked).filter((m) => w.asked[m] > 0 || w.spent[m] > 0 || refused[m] > 0).map((m) => el("tr", {"data-market": m}, el("td", {}, m),
    el("td", {}, fmtNum(w.asked[m])), el("td", {}, fmtNum(w.spent[m])),
    el("td", {class: "saving"}, w.saving_percent[m] == null ? "–" : w.saving_percent[m] + " %"),
    el("td", {class: "refused"}, fmtNum(refused[m] || 0))));
  const t = w.total || {};
  rows.push(el("tr", {"data-market": "total"}, el("th", {}, "total"), el("th", {}, fmtNum(t.asked)),
    el("th", {}, fmtNum(t.spent)),
    el("th", {class: "saving"}, t.saving_percent == null ? "–" : t.saving_percent + " %"),
    el("th", {class: "refused"}, fmtNum(t.refused || 0))));
  fill(document.querySelector("#saving tbody"), rows);
  const markets = Object.keys(w.asked).filter((m) => w.asked[m] > 0 || w.spent[m] > 0);
  const keys = [], labels = [];
  for (const m of markets) { keys.push(`asked.${m}`, `spent.${m}`); labels.push(`asked ${m}`, `spent ${m}`); }
  if (keys.length) chart("saving", document.getElementById("saving-chart"), keys, {labels});
}

function clientRow(c) {
  const m = c.last_minute || {}, q = c.last_15m || {}, a = q.answered || {}, r = q.refused || {};
  const refused = Object.values(r).reduce((x, y) => x + y, 0);
  return {client: c.client, req1: m.requests || 0, asked1: m.asked || 0, spent1: m.spent || 0,
          req15: q.requests || 0, stream: a.stream || 0, cache: a.cache || 0, upstream: a.upstream || 0,
          refused, reasons: Object.entries(r).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", "),
          last_seen: c.last_seen};
}

function renderClients() {
  const rows = (doc.clients || []).map(clientRow);
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    return (typeof x === "string" ? (x < y ? -1 : x > y ? 1 : 0) : x - y) * sortDir;
  });
  const body = rows.map((c) => el("tr", {"data-client": c.client}, el("td", {class: "wrap"}, c.client),
    ...["req1", "asked1", "spent1", "req15", "stream", "cache", "upstream"].map((k) => el("td", {"data-key": k}, fmtNum(c[k]))),
    el("td", {"data-key": "refused", title: c.reasons || "none"}, fmtNum(c.refused) + (c.reasons ? ` (${c.reasons})` : "")),
    el("td", {title: fmtTime(c.last_seen) + " UTC"}, ago(c.last_seen))));
  if (!body.length) body.push(el("tr", {}, el("td", {class: "empty", colspan: "10"}, "no bot yet")));
  fill(document.querySelector("#clients tbody"), body);
  for (const th of document.querySelectorAll("#clients th")) {
    th.classList.toggle("asc", th.dataset.key === sortKey && sortDir > 0);
    th.classList.toggle("desc", th.dataset.key === sortKey && sortDir < 0);
  }
}

function renderHits() {
  const c = doc.cache, h = doc.hit_ratio_15m || {}, s = doc.streams;
  const items = [["cache hits (15 min, of answers)", fmtPct(h.cache)],
                 ["stream answers (15 min, of answers)", fmtPct(h.stream)]];
  if (c) items.push(["cache entries", fmtNum(c.entries)], ["cache bytes", fmtNum(c.bytes)]);
  if (s) items.push(["answered from streams (since start)", fmtNum(s.served)]);
  const totals = (doc.answers || {}).last_15m || {};
  for (const src of ["stream", "cache", "upstream", "local"]) items.push([`${src} answers (15 min)`, fmtNum(totals[src] || 0)]);
  document.getElementById("hits").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const markets = s ? Object.entries(s.markets) : [];
  const rows = markets.map(([m, x]) => el("tr", {"data-market": m}, el("td", {}, m), el("td", {}, String(x.connections)),
    el("td", {}, String(x.open)), el("td", {}, String(x.streams)), el("td", {class: x.stale ? "status-4xx" : ""}, String(x.stale)),
    el("td", {}, String(x.reconnects)), el("td", {}, fmtNum(x.messages_per_second))));
  if (!rows.length) rows.push(el("tr", {}, el("td", {class: "empty", colspan: "7"}, "no stream manager")));
  fill(document.querySelector("#streams tbody"), rows);
}

/* the bots' websocket gateway: its bots, their streams, the upstream side */
function wsStreams(b) {
  const shown = (b.streams || []).join(", ");
  const total = b.distinct === null || b.distinct === undefined ? b.subscriptions : b.distinct;
  const more = Math.max(0, total - (b.streams || []).length);
  const cell = el("td", {class: "names", title: `${b.subscriptions} subscriptions` +
    (b.distinct === null || b.distinct === undefined ? "" : `, ${b.distinct} distinct streams`)}, shown);
  if (more) cell.append(el("span", {class: "more"}, `${shown ? " " : ""}+${more} more`));
  return cell;
}

function renderWebsocket() {
  const w = doc.websocket;
  const figures = document.getElementById("ws-figures");
  const bots = document.querySelector("#ws-bots tbody"), up = document.querySelector("#ws-upstream tbody");
  const box = document.getElementById("ws-chart");
  if (!w) {
    figures.replaceChildren();
    fill(bots, [el("tr", {}, el("td", {class: "empty", colspan: "6"}, "no websocket gateway (the streams middleware is not in the chain)"))]);
    fill(up, []);
    if (charts.ws) { charts.ws.plot.destroy(); delete charts.ws; }
    box.replaceChildren();
    return;
  }
  const items = [["connections", w.connections], ["bots", w.clients], ["subscriptions", w.subscriptions],
                 ["distinct streams relayed", w.streams], ["frames to bots (since start)", w.frames],
                 ["frames from upstream", w.relayed_frames], ["bytes from upstream", w.relayed_bytes],
                 ["control messages from bots", w.control_messages], ["slow-client closes", w.slow_closes],
                 ["closed for message rate", w.rate_closes], ["closed, stream lost upstream", w.upstream_closes],
                 ["upgrades refused", w.refused]];
  figures.replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k),
    el("dd", {"data-key": k, class: k === "slow-client closes" && v ? "status-4xx" : ""}, fmtNum(v || 0))]));
  const rows = (w.bots || []).map((b) => el("tr", {"data-client": b.client},
    el("td", {class: "wrap"}, b.client), el("td", {}, fmtNum(b.connections)),
    el("td", {}, (b.markets || []).join(", ")), el("td", {}, fmtNum(b.subscriptions)), wsStreams(b),
    el("td", {title: fmtTime(b.since) + " UTC"}, fmtDuration(nowProxy() - b.since))));
  if (!rows.length) rows.push(el("tr", {}, el("td", {class: "empty", colspan: "6"}, "no bot uses websockets")));
  else if (w.clients > rows.length) rows.push(el("tr", {}, el("td", {class: "empty", colspan: "6"},
    `and ${w.clients - rows.length} more bots`)));
  fill(bots, rows);
  const ups = [];
  for (const [m, u] of Object.entries(w.upstream || {})) {
    for (const e of u.egress || []) {
      if (!(u.streams || e.connections || e.control_messages)) continue;
      ups.push(el("tr", {"data-market": m, "data-egress": e.egress || "default"}, el("td", {}, m),
        el("td", {}, e.egress || "default"), el("td", {}, fmtNum(e.connections)),
        el("td", {}, fmtNum(e.control_messages)), el("td", {}, fmtNum(u.streams)),
        el("td", {}, fmtNum(u.bot_streams)),
        el("td", {class: u.stale ? "status-4xx" : "", title: (u.stale_streams || []).join(", ") || "none"},
           fmtNum(u.stale))));
    }
  }
  if (!ups.length) ups.push(el("tr", {}, el("td", {class: "empty", colspan: "7"}, "no upstream stream connection")));
  fill(up, ups);
  chart("ws", box, ["ws.delivered", "ws.relayed"], {labels: ["frames/s to bots", "frames/s from upstream"], height: 120});
}

function renderErrors() {
  const rows = (doc.errors || []).map((e) => el("tr", {},
    el("td", {}, fmtTime(e.time)), el("td", {class: "wrap"}, e.client),
    el("td", {class: "wrap", title: `${e.method} /${e.market}${e.path}${e.query ? "?" + e.query : ""}`},
       `${e.method} /${e.market}${e.path}${e.query ? "?" + e.query : ""}` + (e.count > 1 ? ` ×${e.count}` : "")),
    el("td", {class: e.status >= 500 || e.status === 418 ? "status-5xx" : "status-4xx"}, String(e.status)),
    el("td", {}, e.source), el("td", {class: "msg"}, e.msg)));
  if (!rows.length) rows.push(el("tr", {}, el("td", {class: "empty", colspan: "6"}, "none")));
  fill(document.querySelector("#errors tbody"), rows);
}

function renderInstances() {
  const section = document.getElementById("instances-section");
  const inst = doc.instances;
  section.hidden = !inst;
  if (!inst) return;
  const list = Array.isArray(inst) ? inst : Object.entries(inst).map(([id, v]) => ({id, ...v}));
  const cols = [...new Set(list.flatMap((i) => Object.keys(i)))];
  document.querySelector("#instances thead").replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {}, c))));
  fill(document.querySelector("#instances tbody"), list.map((i) => el("tr", {},
    ...cols.map((c) => el("td", {}, typeof i[c] === "object" && i[c] !== null ? JSON.stringify(i[c]) : fmtNum(i[c]))))));
}

function render() {
  document.getElementById("version").textContent = "v" + doc.version;
  document.getElementById("uptime").textContent = "up " + fmtDuration(doc.uptime_seconds);
  renderVerdict();
  renderBans();
  renderPools();
  renderSaving();
  renderInstances();
  renderClients();
  renderHits();
  renderWebsocket();
  chart("latency", document.getElementById("latency-chart"), ["latency.p50", "latency.p99"],
        {labels: ["p50", "p99"], value: (u, v) => fmtMs(v), values: (u, vs) => vs.map(fmtMs),
         axisSize: 76});
  const sources = ["stream", "cache", "upstream", "local"];
  chart("answers", document.getElementById("answers-chart"), sources.map((s) => `answers.${s}`),
        {labels: sources, colors: sources.map((s) => SOURCE_COLORS[s])});
  renderErrors();
  document.body.dataset.updated = String(doc.time);
}

/* ---- the connection -------------------------------------------------------------- */
function setLink(up) {
  const link = document.getElementById("link");
  link.textContent = up ? "live" : "reconnecting…";
  link.className = "link " + (up ? "up" : "down");
}

async function fetchState() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), 5000);
  try {
    const r = await fetch("dashboard/state", {cache: "no-store", signal: ctl.signal});
    if (!r.ok) return;
    const state = await r.json();
    clockOffset = state.time - Date.now() / 1000;
    loadHistory(state);
    lastEvent = Date.now();
    document.body.classList.remove("stale");
    if (!doc || state.time >= doc.time) doc = state;  // patches apply to the newest
    render();
  } catch (e) {
    /* the event stream says when the proxy is back */
  } finally {
    clearTimeout(timer);
  }
}

function isObject(x) { return x !== null && typeof x === "object" && !Array.isArray(x); }
/* RFC 7386: members set, objects merged, null removes */
function applyPatch(target, patch) {
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete target[k];
    else if (isObject(v) && isObject(target[k])) applyPatch(target[k], v);
    else target[k] = v;
  }
}

function connect() {
  const source = new EventSource("dashboard/events");
  source.addEventListener("open", () => { setLink(true); fetchState(); });
  source.addEventListener("error", () => { setLink(false); markStale(); });
  source.addEventListener("patch", (ev) => {
    if (!doc) return;  // the first event of a stream is a whole "state"
    const patch = JSON.parse(ev.data);
    lastEvent = Date.now();
    if (document.body.classList.contains("stale")) { document.body.classList.remove("stale"); setLink(true); }
    const uptime = doc.uptime_seconds;
    delete doc.sample;  // a patch carries the whole new sample
    applyPatch(doc, patch);
    clockOffset = doc.time - Date.now() / 1000;
    if (doc.uptime_seconds < uptime) { times = []; series = {}; }  // restarted
    pushSample(doc.time, doc.sample || {});
    render();
  });
  source.addEventListener("state", (ev) => {
    const state = JSON.parse(ev.data);
    lastEvent = Date.now();
    if (document.body.classList.contains("stale")) { document.body.classList.remove("stale"); setLink(true); }
    clockOffset = state.time - Date.now() / 1000;
    if (doc && state.uptime_seconds < doc.uptime_seconds) { times = []; series = {}; }  // restarted
    pushSample(state.time, state.sample || {});
    doc = state;
    render();
  });
}

for (const th of document.querySelectorAll("#clients th")) {
  th.addEventListener("click", () => {
    const key = th.dataset.key;
    if (key === sortKey) sortDir = -sortDir; else { sortKey = key; sortDir = key === "client" ? 1 : -1; }
    if (doc) renderClients();
  });
}
setInterval(tickCountdowns, 250);
window.addEventListener("resize", () => { if (doc) render(); });
connect();
