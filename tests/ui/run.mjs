// End-to-end test of the marketers' web page (src/api/ui/) in headless Chromium,
// driven by playwright-core against a running `socialcrm serve`. tests/e2e_web.rs
// builds a world with known people, starts the server and runs this script; it can
// also be run by hand against any server whose data matches EXPECT:
//
//   BASE_URL=http://127.0.0.1:8089 API_KEY=... READONLY_KEY=... OUT_DIR=/tmp/ui \
//   EXPECT='{"search": {...}, ...}' node tests/ui/run.mjs
//
// EXPECT (JSON): search {q, name, customer_id}; profile {identifiers[], ledger_identifier,
// ledger_action, engagement_score, lifecycle, timeline_event_id, timeline_name};
// influencers {network, top_customer_id, top_name}; advocates {top_customer_id}?;
// segment {lifecycle[], engagement_min, count, customer_ids[]}; hostile {q, name, customer_id}.
// Exits 0 when every check passed, 1 with the failed check's message (and a
// screenshot in OUT_DIR) otherwise.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k];
  if (v === undefined || v === '') {
    if (d !== undefined) return d;
    console.error(`ui test: ${k} is required`);
    process.exit(2);
  }
  return v;
};

const BASE_URL = env('BASE_URL').replace(/\/$/, '');
const API_KEY = env('API_KEY');
const READONLY_KEY = env('READONLY_KEY', '');
const OUT_DIR = env('OUT_DIR', join(process.cwd(), 'target', 'ui-test-output'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const EXPECT = JSON.parse(env('EXPECT'));
const TIMEOUT_MS = Number(env('STEP_TIMEOUT_MS', '15000'));

if (!existsSync(CHROMIUM)) {
  console.error(`ui test: no Chromium at ${CHROMIUM}: install it (apt-get install chromium) or run deploy/local/test`);
  process.exit(2);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`ui test: playwright-core is not installed: run npm ci --prefix tests/ui (deploy/local/test does) (${e.message})`);
  process.exit(2);
}
mkdirSync(OUT_DIR, { recursive: true });

let step = 'start';
const log = (m) => console.log(`ui test: ${m}`);
class Check extends Error {}
function check(cond, message) {
  if (!cond) throw new Check(`${step}: ${message}`);
}
function same(got, want, what) {
  check(got === want, `${what}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
}

/** Minimal RFC 4180 CSV parser (quoted fields, doubled quotes, CRLF). */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); rows.push(row); row = []; field = '';
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT_MS);
const dialogs = [];
const pageErrors = [];
const cspViolations = [];
page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
});

const view = page.locator('#view');
/** Waits until `locator` has text containing `text`. */
async function waitText(locator, text, what) {
  try {
    await locator.filter({ hasText: text }).first().waitFor();
  } catch (e) {
    const got = (await locator.allInnerTexts().catch(() => [])).join(' | ').slice(0, 600);
    throw new Check(`${step}: ${what}: "${text}" not shown (found: ${got || 'nothing'})`);
  }
}
async function shot(name) {
  await page.screenshot({ path: join(OUT_DIR, name), fullPage: true });
}

try {
  // ---------------------------------------------------------------- key form
  step = 'key form';
  await page.goto(BASE_URL + '/');
  await page.locator('#key-form').waitFor();
  log('the key form is shown first');
  // a wrong key: the API answers 401 and the form comes back with the message
  await page.fill('#api-key', 'wrong-key-0000');
  await page.click('#key-form button[type=submit]');
  await page.locator('#key-error').waitFor();
  await waitText(page.locator('#key-error'), 'invalid API key', 'error message of a wrong key');
  log('a wrong key brings the key form back with the API\'s message');
  await page.fill('#api-key', API_KEY);
  await page.click('#key-form button[type=submit]');
  await page.locator('#overview').waitFor();
  await shot('overview.png');
  log('the right key opens the search page with its overview');

  // ---------------------------------------------------------------- search
  step = 'search';
  const s = EXPECT.search;
  await page.fill('#search-q', s.q);
  await page.press('#search-q', 'Enter');
  const hit = page.locator(`table.results tr[data-customer-id="${s.customer_id}"]`);
  await hit.waitFor();
  same(await hit.locator('td').first().innerText(), s.name, 'name in the results');
  check(page.url().includes('#/search?q='), `the address keeps the query (${page.url()})`);
  await shot('search.png');
  log(`search "${s.q}" lists ${s.name}`);

  // ---------------------------------------------------------------- pagination
  if (EXPECT.pagination) {
    step = 'search pagination';
    const pg = EXPECT.pagination;
    await page.fill('#search-q', pg.q);
    await page.press('#search-q', 'Enter');
    await page.locator('#search-next').waitFor();
    const n1 = await page.locator('table.results tbody tr').count();
    same(n1, 20, 'rows on the first page');
    check(await page.isEnabled('#search-next'), 'Next is disabled on the first page');
    check(await page.isDisabled('#search-prev'), 'Previous is enabled on the first page');
    await page.click('#search-next');
    await page.waitForURL((u) => u.hash.includes('offset=20'));
    await page.locator('#search-prev:not([disabled])').waitFor();
    const n2 = await page.locator('table.results tbody tr').count();
    same(n1 + n2, pg.total, 'rows over both pages');
    check(await page.isDisabled('#search-next'), 'Next is enabled on the last page');
    await page.click('#search-prev');
    await page.waitForURL((u) => !u.hash.includes('offset='));
    await page.locator('#search-next:not([disabled])').waitFor();
    log(`search "${pg.q}": ${n1} + ${n2} results over two pages`);
    // back to the person we look at
    await page.fill('#search-q', s.q);
    await page.press('#search-q', 'Enter');
    await hit.waitFor();
  }

  // ---------------------------------------------------------------- profile
  step = 'profile';
  await hit.locator('a').first().click();
  await page.locator('#profile-name').waitFor();
  same(await page.locator('#profile-name').innerText(), s.name, 'profile heading');
  same(await page.locator('#profile-id').innerText(), s.customer_id, 'customer id');
  const p = EXPECT.profile;
  for (const idf of p.identifiers) {
    const [t, ...rest] = idf.split(':');
    await waitText(page.locator('#identifiers li'), rest.join(':'), `identifier ${idf}`);
    const li = page.locator('#identifiers li').filter({ hasText: rest.join(':') }).first();
    same(await li.locator('.tag').innerText(), t, `type of ${idf}`);
  }
  const ledgerRow = page.locator('#ledger tr').filter({ hasText: p.ledger_identifier });
  check(await ledgerRow.count() > 0, `no ledger entry about ${p.ledger_identifier}`);
  const actions = await page.locator('#ledger tbody tr').evaluateAll((trs) => trs.map((t) => t.getAttribute('data-action')));
  check(actions.includes(p.ledger_action), `no "${p.ledger_action}" entry in the ledger (actions: ${actions.join(', ')})`);
  const engagement = Number(p.engagement_score).toFixed(1);
  await waitText(page.locator('#card-engagement .value'), engagement, 'engagement score card');
  await waitText(page.locator('#card-lifecycle .value'), p.lifecycle.replace(/_/g, ' '), 'lifecycle card');
  await waitText(page.locator('#scores h3'), `Engagement ${engagement} / 100`, 'engagement explanation');
  for (const reason of ['interactions', 'recency', 'frequency', 'monetary', 'dispersion', 'reach', 'amplification', 'centrality']) {
    await waitText(page.locator('#scores table.explain th'), reason, 'score component');
  }
  await waitText(page.locator('#why-lifecycle'), p.lifecycle.replace(/_/g, ' '), 'lifecycle reason');
  const ev = page.locator(`#timeline tr[data-event-id="${p.timeline_event_id}"]`);
  check(await ev.count() === 1, `timeline lacks event ${p.timeline_event_id}`);
  if (p.timeline_name) await waitText(ev, p.timeline_name, 'timeline event name');
  await shot('profile.png');
  log(`profile shows ${p.identifiers.length} identifiers, the ${p.ledger_action} of ${p.ledger_identifier}, engagement ${engagement} with its components, and event ${p.timeline_event_id}`);

  // ---------------------------------------------------------------- leaderboards
  step = 'influencers';
  const inf = EXPECT.influencers;
  await page.click('#nav a[data-route=influencers]');
  await page.locator('table.influencers').waitFor();
  await page.selectOption('#network', inf.network);
  await page.locator(`#leaderboard[data-loaded="influencers:${inf.network}"]`).waitFor();
  same(new URL(page.url()).hash, `#/influencers?network=${inf.network}`, 'address of the leaderboard');
  const first = page.locator('table.influencers tbody tr').first();
  same(await first.getAttribute('data-customer-id'), inf.top_customer_id, `top influencer on ${inf.network}`);
  same(await first.locator('td').nth(1).innerText(), inf.top_name, 'top influencer name');
  await shot('influencers.png');
  log(`top influencer on ${inf.network}: ${inf.top_name}`);
  step = 'advocates';
  await page.click('#tab-advocates');
  await page.locator(`#leaderboard[data-loaded="advocates:${inf.network}"]`).waitFor();
  check(page.url().includes(`#/advocates?network=${inf.network}`), `advocates tab keeps the network (${page.url()})`);
  if (EXPECT.advocates && EXPECT.advocates.top_customer_id) {
    same(await page.locator('table.advocates tbody tr').first().getAttribute('data-customer-id'),
      EXPECT.advocates.top_customer_id, 'top advocate');
  }
  log('advocates tab lists advocates');

  // ---------------------------------------------------------------- segment builder
  step = 'segment';
  const seg = EXPECT.segment;
  await page.click('#nav a[data-route=segments]');
  await page.locator('#segment-form').waitFor();
  for (const stage of seg.lifecycle) await page.check(`#seg-lifecycle-${stage}`);
  await page.fill('#seg-engagement-min', String(seg.engagement_min));
  await page.click('#segment-count-btn');
  await waitText(page.locator('#segment-count'), `${seg.count} customer`, 'segment count');
  const url = new URL(page.url());
  const hash = new URLSearchParams(url.hash.split('?')[1] || '');
  same(hash.get('lifecycle'), seg.lifecycle.join(','), 'lifecycle in the address');
  same(hash.get('engagement_min'), String(seg.engagement_min), 'engagement_min in the address');
  log(`count: ${seg.count} customers (${url.hash})`);

  await page.click('#segment-preview-btn');
  await page.locator('table.segment-preview').waitFor();
  const previewIds = await page.locator('table.segment-preview tbody tr')
    .evaluateAll((trs) => trs.map((t) => t.getAttribute('data-customer-id')));
  same(JSON.stringify([...previewIds].sort()), JSON.stringify([...seg.customer_ids].sort()), 'preview rows');

  // a shared address restores the filters
  const shared = page.url();
  await page.goto('about:blank');
  await page.goto(shared);
  await page.locator('table.segment-preview').waitFor();
  for (const stage of seg.lifecycle) check(await page.isChecked(`#seg-lifecycle-${stage}`), `shared link lost lifecycle ${stage}`);
  same(await page.inputValue('#seg-engagement-min'), String(seg.engagement_min), 'shared link engagement_min');
  await shot('segment.png');
  log('preview lists the expected customers, and the shared address restores the form');

  step = 'download';
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#segment-download')]);
  same(dl.suggestedFilename(), 'segment.csv', 'download file name');
  const file = await dl.path();
  const rows = parseCsv(readFileSync(file, 'utf8')).filter((r) => r.length > 1 || r[0] !== '');
  check(rows.length > 0, 'empty CSV');
  same(rows[0][0], 'customer_id', 'first CSV column');
  check(rows[0].includes('lifecycle_stage'), `CSV header ${rows[0].join(',')}`);
  const csvIds = rows.slice(1).map((r) => r[0]).sort();
  same(JSON.stringify(csvIds), JSON.stringify([...seg.customer_ids].sort()), 'CSV customer ids');
  const lc = rows[0].indexOf('lifecycle_stage');
  for (const r of rows.slice(1)) check(seg.lifecycle.includes(r[lc]), `CSV row of stage ${r[lc]}`);
  await waitText(page.locator('#segment-download-status'), 'segment.csv saved', 'download message');
  log(`segment.csv: header + ${csvIds.length} rows, the expected customers`);

  // ---------------------------------------------------------------- hostile names
  step = 'hostile name';
  const h = EXPECT.hostile;
  await page.click('#nav a[data-route=search]');
  await page.fill('#search-q', h.q);
  await page.press('#search-q', 'Enter');
  const hrow = page.locator(`table.results tr[data-customer-id="${h.customer_id}"]`);
  await hrow.waitFor();
  same(await hrow.locator('td').first().innerText(), h.name, 'hostile name shown as text');
  same(await page.locator('#view img').count(), 0, 'img elements in the results');
  await hrow.locator('a').first().click();
  await page.locator('#profile-name').waitFor();
  same(await page.locator('#profile-name').innerText(), h.name, 'hostile name in the profile heading');
  same(await page.locator('img').count(), 0, 'img elements on the profile page');
  await page.waitForTimeout(300);
  same(dialogs.length, 0, `dialogs opened (${dialogs.join('; ')})`);
  log('a name made of markup is shown as text: no element injected, no script run');

  // ---------------------------------------------------------------- error states
  step = 'error states';
  await page.goto(`${BASE_URL}/#/segments?engagement_min=250&show=count`);
  await waitText(page.locator('#segment-result .error'), 'bad_request', 'error code of a bad filter');
  await waitText(page.locator('#segment-result .error'), 'engagement_min', 'error message naming the filter');
  await page.goto(`${BASE_URL}/#/profile/c_does_not_exist`);
  await waitText(page.locator('#view .error'), 'not_found', 'error of an unknown customer');
  log('a bad filter and an unknown customer show the API\'s error');

  // ---------------------------------------------------------------- read-only key
  if (READONLY_KEY) {
    step = 'read-only key';
    await page.click('#key-forget');
    await page.locator('#key-form').waitFor();
    await page.fill('#api-key', READONLY_KEY);
    await page.click('#key-form button[type=submit]');
    await page.goto(shared);
    await page.locator('table.segment-preview').waitFor();
    await page.click('#segment-download');
    await waitText(page.locator('#segment-download-status .error'), 'export', 'refused export');
    await waitText(page.locator('#segment-download-status .error'), 'forbidden', 'refused export code');
    log('a key without the export scope sees why the download was refused');
  }

  step = 'page health';
  same(pageErrors.length, 0, `script errors: ${pageErrors.join('; ')}`);
  same(cspViolations.length, 0, `Content-Security-Policy violations: ${cspViolations.join('; ')}`);
  same(dialogs.length, 0, `dialogs opened (${dialogs.join('; ')})`);
  log('no script error, no CSP violation, no dialog');
  console.log('ui test: all checks passed');
  await browser.close();
  process.exit(0);
} catch (e) {
  const msg = e instanceof Check ? e.message : `${step}: ${e && e.stack ? e.stack : e}`;
  console.error(`ui test FAILED at ${msg}`);
  try {
    await shot('failure.png');
    console.error(`ui test: page ${page.url()}; screenshot ${join(OUT_DIR, 'failure.png')}`);
    console.error(`ui test: page text: ${(await view.innerText()).slice(0, 1500)}`);
  } catch (e2) {
    console.error(`ui test: no screenshot (${e2})`);
  }
  if (pageErrors.length) console.error(`ui test: script errors: ${pageErrors.join('; ')}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
