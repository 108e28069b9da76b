// Drives the tandem dashboard in headless Chromium (Debian's /usr/bin/chromium
// through playwright-core) and prints one JSON object with what it saw, for
// dashboard_test.go to check. It fails (exit 1) on anything the page got
// wrong that it can judge itself.
//
// Environment: BASE_URL (serve), TOKEN (query token, optional), FROM, TO
// (explorer range), GRANULARITY, GROUP_BY, VIEW, SCREENSHOT (png path),
// LIMIT2, ORDER2, FILTER2 (';'-separated), TZ2 (a second explorer query:
// top N by ORDER2, filters, time zone),
// USER_DATA_DIR (fresh profile), CHROMIUM (default /usr/bin/chromium).
// NODE_PATH must reach playwright-core.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const env = (k, d) => process.env[k] ?? d;
const base = env('BASE_URL');
const token = env('TOKEN', '');
const out = { statusChecked: 0, cards: {}, canvasInk: {}, table: [], api: null, svg: {}, tokenPrompted: false, errors: [] };

function fail(msg) {
  out.errors.push(msg);
}

const ctx = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  ignoreHTTPSErrors: true, // the test's self-signed certificate
  viewport: { width: 1400, height: 1000 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => fail('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !/401/.test(m.text())) fail('console: ' + m.text()); });
  const reports = new Map(); // generated_at → report
  page.on('response', async (r) => {
    if (r.url().endsWith('/v1/status') && r.status() === 200) {
      try { const j = await r.json(); reports.set(j.generated_at, j); } catch { /* navigation */ }
    }
  });

  await page.goto(base + '/');
  if (token) {
    // The API wants a token: the page must ask for it.
    await page.waitForSelector('#token-panel:not(.hidden)');
    out.tokenPrompted = true;
    await page.fill('#token-input', token);
    await page.click('#token-form button[type=submit]');
  }
  // Two polls, so the live charts have a line to draw.
  await page.waitForFunction(() => document.body.dataset.generatedAt, null, { timeout: 30000 });
  const first = await page.evaluate(() => document.body.dataset.generatedAt);
  await page.waitForFunction((f) => document.body.dataset.generatedAt && document.body.dataset.generatedAt !== f, first, { timeout: 30000 });

  // The numbers on the page are those of the report it rendered last.
  const shown = await page.evaluate(() => ({
    at: document.body.dataset.generatedAt,
    verdict: document.querySelector('#verdict').dataset.verdict,
    cards: Array.from(document.querySelectorAll('.cards [data-check]')).map((e) => ({ name: e.dataset.check, text: e.textContent, value: e.dataset.value })),
    rows: Array.from(document.querySelectorAll('#checks tbody tr[data-check]')).map((tr) => ({
      name: tr.dataset.check, verdict: tr.dataset.verdict, text: tr.querySelector('td.value').textContent, value: tr.querySelector('td.value').dataset.value,
    })),
  }));
  const rep = reports.get(shown.at);
  if (!rep) fail('the page shows a report it did not fetch: ' + shown.at);
  else {
    if (shown.verdict !== rep.verdict) fail(`verdict ${shown.verdict} != API ${rep.verdict}`);
    const byName = Object.fromEntries(rep.checks.map((c) => [c.name, c]));
    if (shown.rows.length !== rep.checks.length) fail(`${shown.rows.length} check rows, API has ${rep.checks.length}`);
    for (const x of [...shown.cards, ...shown.rows]) {
      const c = byName[x.name];
      if (!c) { fail('page shows unknown check ' + x.name); continue; }
      const want = c.value == null ? '' : String(c.value);
      if (x.text !== c.display || x.value !== want) fail(`${x.name}: page "${x.text}" (${x.value}), API "${c.display}" (${want})`);
      if (x.verdict && x.verdict !== c.verdict) fail(`${x.name}: verdict ${x.verdict} != ${c.verdict}`);
      out.statusChecked++;
    }
    for (const x of shown.cards) out.cards[x.name] = byName[x.name] ? byName[x.name].value : null;
    out.report = rep;
  }
  // The live charts drew something: count non-blank pixels of each canvas.
  out.canvasInk = await page.evaluate(() => Object.fromEntries(Array.from(document.querySelectorAll('canvas.chart')).map((cv) => {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let ink = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
    return [cv.closest('.card').id, ink];
  })));

  // Query explorer.
  await page.waitForSelector('#q-view option', { state: 'attached' });
  await page.selectOption('#q-view', env('VIEW'));
  await page.selectOption('#q-range', 'custom');
  await page.fill('#q-from', env('FROM'));
  await page.fill('#q-to', env('TO'));
  await page.selectOption('#q-gran', env('GRANULARITY'));
  for (const d of env('GROUP_BY', '').split(',').filter(Boolean)) await page.check(`#q-group input[value="${d}"]`);
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().includes('/query?')),
    page.click('#q-run'),
  ]);
  if (resp.status() !== 200) fail('explorer query answered ' + resp.status());
  await page.waitForFunction(() => document.querySelectorAll('#q-table tbody tr').length > 0);
  out.table = await page.evaluate(() => Array.from(document.querySelectorAll('#q-table tbody tr')).map((tr) =>
    Object.fromEntries(Array.from(tr.querySelectorAll('td')).map((td) => [td.dataset.key, td.textContent]))));
  out.svg = await page.evaluate(() => {
    const svg = document.querySelector('#q-chart');
    const paths = Array.from(svg.querySelectorAll('path.series'));
    return {
      series: paths.length + svg.querySelectorAll('rect.series').length,
      points: paths.reduce((n, p) => n + (p.getAttribute('d').match(/[ML]/g) || []).length, 0),
      circles: svg.querySelectorAll('circle').length,
      groups: paths.map((p) => p.dataset.group),
    };
  });
  // The same query, asked of the API directly.
  const url = await page.evaluate(() => document.body.dataset.queryUrl);
  const api = await ctx.request.get(base + url, { headers: token ? { Authorization: 'Bearer ' + token } : {} });
  out.api = await api.json();
  out.queryUrl = url;

  // The same range again with top N (the chart measure, largest first),
  // filters and a time zone, when asked for.
  if (env('LIMIT2', '')) {
    await page.selectOption('#q-measure', env('ORDER2', 'views'));
    await page.selectOption('#q-order', 'desc');
    await page.fill('#q-limit', env('LIMIT2'));
    await page.fill('#q-filter', env('FILTER2', '').split(';').join('\n'));
    await page.selectOption('#q-tz', env('TZ2', 'UTC'));
    const [resp2] = await Promise.all([
      page.waitForResponse((r) => r.url().includes('/query?') && r.url().includes('limit=')),
      page.click('#q-run'),
    ]);
    if (resp2.status() !== 200) fail('explorer top-N query answered ' + resp2.status() + ': ' + (await resp2.text()));
    await page.waitForFunction((u) => document.body.dataset.queryUrl !== u, url);
    out.table2 = await page.evaluate(() => Array.from(document.querySelectorAll('#q-table tbody tr')).map((tr) =>
      Object.fromEntries(Array.from(tr.querySelectorAll('td')).map((td) => [td.dataset.key, td.textContent]))));
    out.info2 = await page.evaluate(() => document.querySelector('#q-info').textContent);
    out.queryUrl2 = await page.evaluate(() => document.body.dataset.queryUrl);
    const api2 = await ctx.request.get(base + out.queryUrl2, { headers: token ? { Authorization: 'Bearer ' + token } : {} });
    out.api2 = await api2.json();
  }
  await page.screenshot({ path: env('SCREENSHOT'), fullPage: true });
} catch (e) {
  fail(String(e && e.stack || e));
} finally {
  await ctx.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(out.errors.length ? 1 : 0);
