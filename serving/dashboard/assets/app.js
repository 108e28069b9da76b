// tandem dashboard: polls /v1/status, draws live charts on <canvas>, and
// runs queries against /v1/views/{view}/query with an SVG chart and a
// table. No dependencies; everything is same-origin.
'use strict';

const POLL_MS = 3000;
const HISTORY = 200; // points per live series (10 minutes at 3 s)
const COLORS = ['#3b6fd8', '#e07b39', '#2ba58b', '#9b59b6', '#c0392b', '#7f8c8d'];
const GRANS = [['1m', 60], ['5m', 300], ['15m', 900], ['1h', 3600], ['6h', 21600], ['1d', 86400]];

const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
};
const svgEl = (tag, attrs) => {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
};

// --- API with an optional bearer token ------------------------------------

const tokenKey = 'tandem.token';
let token = sessionStorage.getItem(tokenKey) || '';

class AuthError extends Error {}

async function api(path) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const resp = await fetch(path, { headers, cache: 'no-store' });
  if (resp.status === 401) {
    showToken(token ? 'That token was refused.' : '');
    throw new AuthError('a token is required');
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.status + ' ' + resp.statusText);
  return body;
}

function showToken(msg) {
  $('#token-panel').classList.remove('hidden');
  $('#token-error').textContent = msg || '';
  if (document.activeElement !== $('#token-input')) $('#token-input').focus();
}

function setupToken() {
  $('#token-button').addEventListener('click', () => showToken(''));
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('#token-input').value.trim();
    sessionStorage.setItem(tokenKey, token);
    $('#token-input').value = '';
    $('#token-panel').classList.add('hidden');
    poll();
    loadViews();
  });
}

// --- formatting -------------------------------------------------------------

function fmtNum(v) {
  if (v == null || Number.isNaN(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (Number.isInteger(v)) return String(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function fmtThreshold(c) {
  if (!c.threshold) return '—';
  const f = (v) => (v == null ? 'never' : fmtUnit(v, c.unit));
  return 'yellow ≥ ' + f(c.threshold.yellow) + ', red ≥ ' + f(c.threshold.red);
}

function fmtUnit(v, unit) {
  switch (unit) {
    case 'seconds':
      if (v === 0) return '0s';
      if (v < 1e-3) return (v * 1e6).toFixed(0) + 'µs';
      if (v < 1) return (v * 1e3).toFixed(1) + 'ms';
      if (v < 120) return v.toFixed(1) + 's';
      if (v < 7200) return (v / 60).toFixed(1) + 'm';
      return (v / 3600).toFixed(1) + 'h';
    case 'ratio': return (v * 100).toFixed(2) + '%';
    default: return fmtNum(v) + (unit ? ' ' + unit : '');
  }
}

// --- live status --------------------------------------------------------------

const history = {}; // check name → [{t, v}]
let lastReport = null;

async function poll() {
  let rep;
  try {
    rep = await api('/v1/status');
  } catch (e) {
    if (!(e instanceof AuthError)) showError('GET /v1/status: ' + e.message);
    return;
  }
  hideError();
  lastReport = rep;
  const t = Date.parse(rep.generated_at);
  for (const c of rep.checks) {
    const h = history[c.name] || (history[c.name] = []);
    h.push({ t, v: c.value });
    if (h.length > HISTORY) h.shift();
  }
  render(rep);
}

function showError(msg) { const e = $('#error'); e.textContent = msg; e.classList.remove('hidden'); }
function hideError() { $('#error').classList.add('hidden'); }

function render(rep) {
  const badge = $('#verdict');
  badge.textContent = rep.verdict;
  badge.className = 'badge ' + rep.verdict;
  badge.dataset.verdict = rep.verdict;
  document.body.dataset.generatedAt = rep.generated_at;
  $('#generated').textContent = 'as of ' + new Date(rep.generated_at).toLocaleTimeString() +
    (rep.window_seconds ? ' · rates over ' + rep.window_seconds.toFixed(1) + ' s' : '');

  const comps = $('#components');
  comps.replaceChildren(...rep.components.map((c) => el('span', {
    class: 'chip ' + (c.reachable && c.ready ? 'up' : 'down'), title: c.error || c.addr, 'data-component': c.name,
  }, c.name)));

  const byName = Object.fromEntries(rep.checks.map((c) => [c.name, c]));
  for (const span of $$('[data-check]', $('.cards'))) {
    const c = byName[span.dataset.check];
    span.textContent = c ? c.display : '—';
    span.dataset.value = c && c.value != null ? String(c.value) : '';
    span.dataset.verdict = c ? c.verdict : '';
    span.title = c ? c.question + (c.detail ? ' — ' + c.detail : '') : '';
  }
  for (const card of $$('.card')) {
    $$('.big', card).forEach((b, i) => b.classList.add('s' + i));
  }
  for (const cv of $$('canvas.chart')) drawLive(cv, cv.dataset.series.split(','));

  const rows = [];
  let area = '';
  for (const c of rep.checks) {
    if (c.area !== area) {
      area = c.area;
      rows.push(el('tr', { class: 'area' }, el('td', { colSpan: 6, textContent: area })));
    }
    rows.push(el('tr', { 'data-check': c.name, 'data-verdict': c.verdict },
      el('td', {}, el('span', { class: 'dot ' + c.verdict, title: c.verdict })),
      el('td', { class: 'name', textContent: c.name }),
      el('td', { textContent: c.question }),
      el('td', { class: 'num value', textContent: c.display, 'data-value': c.value != null ? String(c.value) : '' }),
      el('td', { textContent: fmtThreshold(c) }),
      el('td', { class: 'detail', textContent: c.detail || '' })));
  }
  $('#checks tbody').replaceChildren(...rows);

  $('#partitions tbody').replaceChildren(...(rep.partitions || []).map((p) => el('tr', {},
    el('td', { textContent: p.stream }),
    ...[p.partition, p.high_water, p.speed_lag, p.archive_lag, p.absorbed, p.unabsorbed].map((v) =>
      el('td', { class: 'num', textContent: v < 0 ? '?' : String(v) })))));
}

// drawLive draws the history of up to two checks on a canvas.
function drawLive(cv, names) {
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth || 600, h = cv.clientHeight || 150;
  if (cv.width !== Math.round(w * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 46, r: 8, t: 8, b: 18 };
  const series = names.map((n) => (history[n] || []).filter((p) => p.v != null));
  const all = series.flat();
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#6b7280';
  if (all.length === 0) {
    ctx.fillText('no data yet', pad.l, h / 2);
    return;
  }
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
  let vmax = Math.max(...all.map((p) => p.v));
  vmax = vmax > 0 ? vmax * 1.15 : 1;
  const x = (t) => pad.l + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / vmax) * (h - pad.t - pad.b);
  ctx.strokeStyle = '#e3e6eb';
  ctx.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const v = (vmax * i) / 3, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
    ctx.fillText(fmtNum(v), 2, yy + 4);
  }
  ctx.fillText(new Date(t0).toLocaleTimeString(), pad.l, h - 4);
  const end = new Date(t1).toLocaleTimeString();
  ctx.fillText(end, w - pad.r - ctx.measureText(end).width, h - 4);
  series.forEach((pts, i) => {
    if (pts.length === 0) return;
    ctx.strokeStyle = COLORS[i];
    ctx.fillStyle = COLORS[i];
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((p, k) => (k ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
    ctx.stroke();
    const last = pts[pts.length - 1];
    ctx.beginPath(); ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI); ctx.fill();
  });
}

// --- query explorer -----------------------------------------------------------

let views = [];
let lastResult = null; // the last answer, so changing the charted measure redraws at once

async function loadViews() {
  try {
    const body = await api('/v1/views');
    views = body.views || [];
  } catch (e) {
    if (!(e instanceof AuthError)) $('#q-error').textContent = 'GET /v1/views: ' + e.message;
    return;
  }
  const sel = $('#q-view');
  const keep = sel.value;
  sel.replaceChildren(...views.map((v) => el('option', { value: v.name, textContent: v.name })));
  if (keep && views.some((v) => v.name === keep)) sel.value = keep;
  viewChanged();
}

function currentView() { return views.find((v) => v.name === $('#q-view').value); }

function granSeconds(g) { const f = GRANS.find((x) => x[0] === g); return f ? f[1] : 60; }

function viewChanged() {
  const v = currentView();
  if (!v) return;
  const base = granSeconds(v.granularity);
  const grans = GRANS.filter(([, s]) => s >= base && s % base === 0).map(([g]) => g);
  const gsel = $('#q-gran');
  gsel.replaceChildren(...grans.map((g) => el('option', { value: g, textContent: g })), el('option', { value: 'all', textContent: 'all' }));
  gsel.value = grans.includes('5m') ? '5m' : grans[0];
  const group = $('#q-group');
  group.replaceChildren(el('legend', { textContent: 'group by' }), ...v.dimensions.map((d) =>
    el('label', {}, el('input', { type: 'checkbox', value: d, name: 'group_by' }), ' ' + d)));
  const msel = $('#q-measure');
  const opts = [];
  for (const m of v.measures) {
    if (m.type === 'quantiles') for (const p of ['p50', 'p90', 'p99']) opts.push(m.name + '.' + p);
    else opts.push(m.name);
  }
  msel.replaceChildren(...opts.map((o) => el('option', { value: o, textContent: o })));
}

function isoSec(ms) { return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z'); }

function queryURL() {
  const v = currentView();
  const gran = $('#q-gran').value;
  const params = new URLSearchParams();
  if ($('#q-range').value === 'custom') {
    params.set('from', $('#q-from').value.trim());
    params.set('to', $('#q-to').value.trim());
  } else {
    const g = (gran === 'all' ? granSeconds(v.granularity) : granSeconds(gran)) * 1000;
    const now = Date.now();
    const to = Math.floor(now / g) * g + g;
    const from = Math.floor((now - Number($('#q-range').value) * 1000) / g) * g;
    params.set('from', isoSec(from));
    params.set('to', isoSec(to));
  }
  params.set('granularity', gran);
  const dims = $$('#q-group input:checked').map((i) => i.value);
  if (dims.length) params.set('group_by', dims.join(','));
  // Top N, filters, having and the time zone: the API checks them and
  // says what is wrong (shown under the form).
  const order = $('#q-order').value;
  if (order) params.set('order_by', $('#q-measure').value + ':' + order);
  const limit = $('#q-limit').value.trim();
  if (limit) params.set('limit', limit);
  const lines = (id) => $(id).value.split('\n').map((x) => x.trim()).filter(Boolean);
  for (const f of lines('#q-filter')) params.append('filter', f);
  for (const h of lines('#q-having')) params.append('having', h);
  const tz = $('#q-tz').value;
  if (tz && tz !== 'UTC') params.set('tz', tz);
  return '/v1/views/' + encodeURIComponent(v.name) + '/query?' + params.toString();
}

async function runQuery(ev) {
  if (ev) ev.preventDefault();
  const v = currentView();
  if (!v) return;
  const url = queryURL();
  $('#q-url').textContent = url;
  $('#q-error').textContent = '';
  const t0 = performance.now();
  let res;
  try {
    res = await api(url);
  } catch (e) {
    if (!(e instanceof AuthError)) $('#q-error').textContent = e.message;
    return;
  }
  const ms = performance.now() - t0;
  $('#q-info').textContent = res.rows.length + ' rows in ' + ms.toFixed(0) + ' ms' +
    (res.truncated ? ' · top ' + $('#q-limit').value.trim() + ' per bucket (more groups left out)' : '') +
    (res.freshness && res.freshness.batch_run ? ' · batch run ' + res.freshness.batch_run : ' · no batch run yet') +
    (res.warnings && res.warnings.length ? ' · ' + res.warnings.join('; ') : '');
  document.body.dataset.queryUrl = url;
  lastResult = res;
  renderTable(v, res);
  renderChart(v, res);
}

function measureValue(row, key) {
  const [name, p] = key.split('.');
  const m = row.measures[name];
  if (p) return m == null ? null : m[p];
  return m;
}

function measureKeys(v, res) {
  const names = v.measures.map((m) => m.name).filter((n) => res.rows.length === 0 || n in res.rows[0].measures);
  const keys = [];
  for (const n of names) {
    const m = v.measures.find((x) => x.name === n);
    if (m.type === 'quantiles') for (const p of ['p50', 'p90', 'p99']) keys.push(n + '.' + p);
    else keys.push(n);
  }
  return keys;
}

function groupKey(row, dims) { return dims.map((d) => row.dimensions[d] || '""').join(' / ') || 'total'; }

function renderTable(v, res) {
  const dims = res.rows.length ? Object.keys(res.rows[0].dimensions || {}) : $$('#q-group input:checked').map((i) => i.value);
  const keys = measureKeys(v, res);
  $('#q-table thead').replaceChildren(el('tr', {},
    el('th', { textContent: 'window_start' }), ...dims.map((d) => el('th', { textContent: d })),
    ...keys.map((k) => el('th', { class: 'num', textContent: k }))));
  $('#q-table tbody').replaceChildren(...res.rows.map((r) => el('tr', {},
    el('td', { textContent: r.window_start, 'data-key': 'window_start' }),
    ...dims.map((d) => el('td', { textContent: r.dimensions[d], 'data-key': 'dim.' + d })),
    ...keys.map((k) => {
      const val = measureValue(r, k);
      // The exact number the API sent: the table is for reading off values.
      return el('td', { class: 'num', textContent: val == null ? '—' : String(val), 'data-key': k });
    }))));
}

function renderChart(v, res) {
  const svg = $('#q-chart');
  svg.replaceChildren();
  const W = 900, H = 260, pad = { l: 60, r: 12, t: 12, b: 24 };
  const key = $('#q-measure').value;
  const dims = res.rows.length ? Object.keys(res.rows[0].dimensions || {}) : [];
  const groups = new Map();
  for (const r of res.rows) {
    const g = groupKey(r, dims);
    if (!groups.has(g)) groups.set(g, []);
    const val = measureValue(r, key);
    if (val != null) groups.get(g).push({ t: Date.parse(r.window_start), v: val });
  }
  // The six largest groups get a line each.
  const ranked = [...groups.entries()].map(([g, pts]) => [g, pts, pts.reduce((s, p) => s + Math.abs(p.v), 0)])
    .sort((a, b) => b[2] - a[2]).slice(0, COLORS.length);
  const all = ranked.flatMap(([, pts]) => pts);
  if (all.length === 0) {
    svg.append(Object.assign(svgEl('text', { x: pad.l, y: H / 2 }), { textContent: 'no rows in this range' }));
    $('#q-legend').replaceChildren();
    return;
  }
  const t0 = Math.min(...all.map((p) => p.t)), t1 = Math.max(...all.map((p) => p.t));
  const vmin = Math.min(0, ...all.map((p) => p.v));
  let vmax = Math.max(...all.map((p) => p.v));
  vmax = vmax > vmin ? vmax + (vmax - vmin) * 0.1 : vmin + 1;
  const x = (t) => pad.l + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - pad.l - pad.r);
  const y = (val) => H - pad.b - ((val - vmin) / (vmax - vmin)) * (H - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const val = vmin + ((vmax - vmin) * i) / 4;
    svg.append(svgEl('line', { x1: pad.l, x2: W - pad.r, y1: y(val), y2: y(val), stroke: '#e3e6eb' }));
    svg.append(Object.assign(svgEl('text', { x: 4, y: y(val) + 4 }), { textContent: fmtNum(val) }));
  }
  const fmtT = (t) => new Date(t).toISOString().slice(5, 16).replace('T', ' ');
  svg.append(Object.assign(svgEl('text', { x: pad.l, y: H - 6 }), { textContent: fmtT(t0) + ' UTC' }));
  if (t1 > t0) svg.append(Object.assign(svgEl('text', { x: W - pad.r - 110, y: H - 6 }), { textContent: fmtT(t1) + ' UTC' }));
  const single = ranked.every(([, pts]) => pts.length <= 1);
  ranked.forEach(([g, pts], i) => {
    pts.sort((a, b) => a.t - b.t);
    if (single) {
      // One value per group (granularity "all"): bars side by side.
      const bw = (W - pad.l - pad.r) / ranked.length;
      const p = pts[0];
      svg.append(svgEl('rect', { class: 'series', 'data-group': g, x: pad.l + i * bw + bw * 0.15, width: bw * 0.7,
        y: y(Math.max(p.v, 0)), height: Math.abs(y(p.v) - y(0)), fill: COLORS[i] }));
      return;
    }
    const d = pts.map((p, k) => (k ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p.v).toFixed(1)).join(' ');
    svg.append(svgEl('path', { class: 'series', 'data-group': g, d, fill: 'none', stroke: COLORS[i], 'stroke-width': 2 }));
    for (const p of pts) svg.append(svgEl('circle', { cx: x(p.t), cy: y(p.v), r: 2.5, fill: COLORS[i] }));
  });
  $('#q-legend').replaceChildren(...ranked.map(([g], i) => el('span', {}, el('span', { class: 'sw c' + i }), g)));
}

// Time zones offered for local-time buckets: UTC, the browser's own, and a
// few common ones (the API takes any IANA name).
const ZONES = ['UTC', 'Europe/Amsterdam', 'Europe/London', 'America/New_York', 'America/Los_Angeles', 'Asia/Kolkata', 'Asia/Tokyo', 'Australia/Sydney'];

function setupExplorer() {
  const own = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = own && !ZONES.includes(own) ? [ZONES[0], own, ...ZONES.slice(1)] : ZONES;
  $('#q-tz').replaceChildren(...zones.map((z) => el('option', { value: z, textContent: z === own ? z + ' (this browser)' : z })));
  $('#q-view').addEventListener('change', viewChanged);
  $('#q-range').addEventListener('change', () => {
    const custom = $('#q-range').value === 'custom';
    $$('label.custom').forEach((l) => l.classList.toggle('hidden', !custom));
  });
  $('#explorer').addEventListener('submit', runQuery);
  $('#q-measure').addEventListener('change', () => { if (lastResult) renderChart(currentView(), lastResult); });
}


document.addEventListener('DOMContentLoaded', () => {
  setupToken();
  setupExplorer();
  poll();
  loadViews();
  setInterval(poll, POLL_MS);
  window.addEventListener('resize', () => { for (const cv of $$('canvas.chart')) drawLive(cv, cv.dataset.series.split(',')); });
});
