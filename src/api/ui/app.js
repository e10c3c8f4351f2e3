// socialcrm web page: a small single-page front end over the read-only JSON API
// (/openapi.json). No build step, no external resources (the server's CSP is
// `default-src 'self'`). Every value from the API is put into the page as text
// (textContent / createElement), never as HTML: names and handles come from strangers.
//
// Routes (location.hash):
//   #/search?q=&offset=         search, or an overview when q is empty
//   #/profile/<customer_id>     unified profile, ledger, scores and why, timeline
//   #/influencers?network=      influence leaderboard
//   #/advocates?network=        advocacy leaderboard
//   #/segments?<filters>&sort=&show=count|preview   segment builder, CSV export
'use strict';

(function () {
  const KEY_STORE = 'socialcrm.apiKey';
  const PAGE = 20;
  const PREVIEW_ROWS = 50;
  const NETWORKS = ['mastodon', 'x', 'telegram', 'bluesky', 'reddit'];
  const LIFECYCLE = ['prospect', 'new_customer', 'repeat', 'loyal', 'at_risk', 'churned'];
  const RFM_DEFAULT = ['champions', 'loyal', 'potential_loyalist', 'new', 'promising', 'needs_attention',
    'about_to_sleep', 'cant_lose', 'at_risk', 'hibernating', 'lost'];
  const CHANNELS = ['web', 'shop', 'social', 'support', 'email'];
  const ID_TYPES = ['email', 'phone', 'user_id', 'anonymous_id', 'device_id', 'mastodon', 'x', 'telegram',
    'bluesky', 'reddit'];
  const SORTS = [['engagement', 'engagement score'], ['influence', 'influence score'], ['last_seen', 'last seen'],
    ['orders', 'orders'], ['customer_id', 'customer id']];
  // filter parameters of /v1/segments/* (src/api/filter.rs FILTER_PARAMS)
  const FILTER_PARAMS = ['engagement_min', 'engagement_max', 'influence_min', 'influence_max', 'lifecycle',
    'rfm_segment', 'channels', 'category', 'has_identifier', 'active_within_days', 'inactive_for_days',
    'min_orders', 'trait'];
  const LEDGER_ACTIONS = ['create', 'link', 'merge', 'reject', 'candidate', 'unlink', 'split', 'erase'];

  // ------------------------------------------------------------------ DOM helpers

  const PROPS = new Set(['checked', 'selected', 'disabled', 'value', 'hidden', 'multiple', 'noValidate']);

  /** createElement with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (PROPS.has(k)) e[k] = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    add(e, children);
    return e;
  }

  function add(parent, ...children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return parent;
  }

  /** Appends one element and returns it (add returns the parent). */
  function put(parent, child) {
    parent.append(child);
    return child;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  const view = () => document.getElementById('view');

  function setStatus(text, busy) {
    const s = document.getElementById('status');
    s.textContent = text || '';
    s.classList.toggle('busy', !!busy);
    document.body.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  // ------------------------------------------------------------------ formatting

  function num(x, digits) {
    if (typeof x !== 'number' || !isFinite(x)) return '–';
    return x.toFixed(digits === undefined ? 1 : digits);
  }

  /** Like `score explain`: whole numbers as they are, others with 2 decimals. */
  function auto(x) {
    if (x === null || x === undefined) return '–';
    if (typeof x === 'number') {
      const v = x + 0;
      return Number.isInteger(v) ? String(v) : v.toFixed(2);
    }
    if (typeof x === 'string') return x;
    return JSON.stringify(x);
  }

  function time(v) {
    if (v === null || v === undefined || v === '' || v === 0) return '–';
    const d = typeof v === 'number' ? new Date(v * 1000) : new Date(v);
    if (isNaN(d.getTime())) return String(v);
    if (d.getTime() <= 0) return '–';
    return d.toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }

  function days(n) {
    return `${auto(n)} ${n === 1 ? 'day' : 'days'}`;
  }

  function money(rev) {
    const parts = Object.entries(rev || {}).map(([cur, amt]) => `${num(amt, 2)} ${cur}`);
    return parts.length ? parts.join(', ') : '–';
  }

  function label(s) {
    return s ? String(s).replace(/_/g, ' ') : '–';
  }

  function profileLink(customerId, name) {
    return el('a', { href: '#/profile/' + encodeURIComponent(customerId) },
      name && String(name).trim() ? String(name) : customerId);
  }

  function table(cls, headers, rows, empty) {
    if (!rows.length) return el('p', { class: 'empty', text: empty || 'Nothing to show.' });
    return el('div', { class: 'scroll' }, el('table', { class: cls },
      headers ? el('thead', null, el('tr', null, headers.map((h) => {
        const [text, numeric] = Array.isArray(h) ? h : [h, false];
        return el('th', { class: numeric ? 'num' : null, scope: 'col' }, text);
      }))) : null,
      el('tbody', null, rows)));
  }

  function td(content, cls) {
    return el('td', { class: cls || null }, content);
  }

  function errorBox(err) {
    const code = err && err.code ? err.code : 'error';
    const status = err && err.status ? ` (HTTP ${err.status})` : '';
    return el('div', { class: 'error', role: 'alert' },
      el('strong', null, `${code}${status}: `), err && err.message ? err.message : String(err));
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function apiKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ''; } catch (e) { return ''; }
  }

  function setKey(k) {
    try {
      if (k) sessionStorage.setItem(KEY_STORE, k); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage disabled: the key lives for this page only */ }
    memoryKey = k || '';
    showKeyState();
  }

  let memoryKey = '';
  const currentKey = () => apiKey() || memoryKey;

  /** GET an API path with the key; JSON by default, the raw Response with {raw: true}. */
  async function api(path, opts) {
    const key = currentKey();
    if (!key) throw new ApiError(401, 'unauthorized', 'Enter an API key to continue.');
    let resp;
    try {
      resp = await fetch(path, {
        headers: { Authorization: 'Bearer ' + key, Accept: opts && opts.raw ? 'text/csv' : 'application/json' },
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network_error', 'The server did not answer: ' + (e && e.message ? e.message : e));
    }
    if (!resp.ok) {
      let code = 'http_' + resp.status;
      let message = resp.statusText || 'request failed';
      try {
        const body = await resp.json();
        if (body && body.error) {
          code = String(body.error.code || code);
          message = String(body.error.message || message);
        }
      } catch (e) { /* not JSON */ }
      throw new ApiError(resp.status, code, message);
    }
    return opts && opts.raw ? resp : resp.json();
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of params) if (v !== null && v !== undefined && v !== '') u.append(k, String(v));
    const s = u.toString();
    return s ? '?' + s : '';
  }

  // ------------------------------------------------------------------ routing

  let renderSeq = 0;

  function parseHash() {
    let h = location.hash.replace(/^#/, '');
    if (!h || h === '/') h = '/search';
    const i = h.indexOf('?');
    const path = i >= 0 ? h.slice(0, i) : h;
    const params = new URLSearchParams(i >= 0 ? h.slice(i + 1) : '');
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    return { parts, params };
  }

  /** Navigate; re-renders even when the hash does not change (same search twice). */
  function go(hash) {
    if (location.hash === hash) route(); else location.hash = hash;
  }

  async function route() {
    const seq = ++renderSeq;
    const live = () => seq === renderSeq;
    const { parts, params } = parseHash();
    const name = parts[0] || 'search';
    for (const a of document.querySelectorAll('#nav a')) {
      const r = a.getAttribute('data-route');
      a.classList.toggle('active', r === name || (r === 'influencers' && name === 'advocates'));
    }
    if (!currentKey()) {
      showKeyForm('');
      return;
    }
    const v = clear(view());
    setStatus('Loading…', true);
    try {
      if (name === 'search') await searchView(v, params, live);
      else if (name === 'profile' && parts[1]) await profileView(v, parts[1], live);
      else if (name === 'influencers' || name === 'advocates') await leaderboardView(v, name, params, live);
      else if (name === 'segments') await segmentView(v, params, live);
      else add(v, el('h1', { text: 'Not found' }), el('p', null, 'No such page. ', el('a', { href: '#/search' }, 'Search')));
      if (live()) setStatus('');
    } catch (err) {
      if (!live()) return;
      setStatus('');
      if (err instanceof ApiError && err.status === 401) {
        setKey('');
        showKeyForm(err.message);
        return;
      }
      add(v, errorBox(err));
    }
  }

  // ------------------------------------------------------------------ key form

  function showKeyState() {
    const has = !!currentKey();
    document.getElementById('key-state').textContent = has ? 'API key set' : 'no API key';
    document.getElementById('key-forget').hidden = !has;
  }

  function showKeyForm(message) {
    setStatus('');
    const v = clear(view());
    const input = el('input', { type: 'password', id: 'api-key', name: 'key', autocomplete: 'off', required: true,
      placeholder: 'the key from [api] keys' });
    const form = el('form', { id: 'key-form', class: 'panel keyform' },
      el('h1', { text: 'API key' }),
      el('p', { class: 'muted small' },
        'This page reads the HTTP API with a key from the [api] keys of the server\'s config. ' +
        'It is kept in this tab only (session storage).'),
      message ? el('p', { class: 'error', role: 'alert', id: 'key-error' }, message) : null,
      el('label', { for: 'api-key' }, 'Key'), input,
      el('button', { type: 'submit', class: 'primary' }, 'Use this key'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const k = input.value.trim();
      if (!k) return;
      setKey(k);
      route();
    });
    add(v, form);
    input.focus();
  }

  // ------------------------------------------------------------------ search

  async function searchView(v, params, live) {
    const q = (params.get('q') || '').trim();
    const offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
    const input = el('input', { type: 'search', id: 'search-q', name: 'q', value: q, autocomplete: 'off',
      placeholder: 'Name, email prefix or handle', 'aria-label': 'Search' });
    const form = el('form', { id: 'search-form', class: 'inline' }, input,
      el('button', { type: 'submit', class: 'primary' }, 'Search'));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const t = input.value.trim();
      go('#/search' + qs([['q', t]]));
    });
    add(v, el('h1', { text: 'Find a person' }), el('div', { class: 'panel' }, form));
    const out = put(v, el('div', { id: 'search-results' }));
    if (!q) {
      input.focus();
      await overview(out, live);
      return;
    }
    add(out, el('p', { class: 'muted', text: 'Searching…' }));
    const r = await api('/v1/profiles' + qs([['q', q], ['limit', PAGE], ['offset', offset]]));
    if (!live()) return;
    clear(out);
    const rows = r.items.map((p) => el('tr', { 'data-customer-id': p.customer_id },
      td(profileLink(p.customer_id, p.name)),
      td(p.email || '–'),
      td(num(p.engagement_score), 'num'),
      td(num(p.influence_score), 'num'),
      td(label(p.lifecycle_stage)),
      td(label(p.rfm_segment)),
      td(String(p.order_count), 'num'),
      td(time(p.last_seen), 'time')));
    const section = el('section', null,
      el('h2', null, `Results for “${q}”`),
      table('results', ['Name', 'Email', ['Engagement', true], ['Influence', true], 'Lifecycle', 'RFM segment',
        ['Orders', true], 'Last seen'], rows, `No profile matches “${q}”.`));
    if (offset > 0 || r.has_more) {
      const pager = el('div', { class: 'pager' });
      const prev = el('button', { type: 'button', id: 'search-prev', disabled: offset === 0 }, '← Previous');
      prev.addEventListener('click', () => go('#/search' + qs([['q', q], ['offset', Math.max(0, offset - PAGE) || '']])));
      const next = el('button', { type: 'button', id: 'search-next', disabled: !r.has_more }, 'Next →');
      next.addEventListener('click', () => go('#/search' + qs([['q', q], ['offset', offset + PAGE]])));
      add(pager, prev, el('span', { class: 'muted', text: `${offset + 1}–${offset + r.items.length}` }), next);
      add(section, pager);
    }
    add(out, section);
  }

  /** Customers by lifecycle stage, RFM segment and channel, each a link to its segment. */
  async function overview(out, live) {
    const r = await api('/v1/reports/distributions');
    if (!live()) return;
    const box = (title, head, items, param) => el('section', null, el('h2', { text: title }),
      table('dist', [head, ['Customers', true]], items.map((it) => el('tr', null,
        td(it.key === '(none)' ? el('span', { class: 'muted', text: '(none)' })
          : el('a', { href: '#/segments' + qs([[param, it.key], ['show', 'preview']]) }, label(it.key))),
        td(String(it.customers), 'num'))), 'No profiles yet.'));
    add(out, el('h2', { class: 'muted', text: 'Overview' }), el('div', { class: 'overview', id: 'overview' },
      box('Lifecycle stages', 'Stage', r.lifecycle || [], 'lifecycle'),
      box('RFM segments', 'Segment', r.rfm_segments || [], 'rfm_segment'),
      box('Channels', 'Channel', r.channels || [], 'channels')));
  }

  // ------------------------------------------------------------------ profile

  async function profileView(v, customerId, live) {
    const id = encodeURIComponent(customerId);
    const [p, ledger] = await Promise.all([api('/v1/profiles/' + id), api('/v1/profiles/' + id + '/ledger')]);
    if (!live()) return;
    if (p.customer_id !== customerId) {
      // a merged-away id: show the survivor under its own address
      history.replaceState(null, '', '#/profile/' + encodeURIComponent(p.customer_id));
    }
    const name = p.display_name && p.display_name.trim() ? p.display_name : '(no name)';
    add(v,
      el('h1', { id: 'profile-name' }, name),
      el('p', { class: 'muted' }, el('span', { class: 'mono', id: 'profile-id' }, p.customer_id),
        ` · first seen ${time(p.first_seen)} · last seen ${time(p.last_seen)} · ${p.event_count} events`),
      (p.merged_from || []).length ? el('p', { class: 'notice' }, 'Absorbed profiles: ',
        p.merged_from.map((m, i) => [i ? ', ' : '', el('span', { class: 'mono' }, m)])) : null,
      (p.flags || []).length ? el('p', { class: 'notice' }, 'Flags: ', p.flags.map((f) => el('span', { class: 'tag', text: f }))) : null,
      summaryCards(p),
      el('div', { class: 'grid' }, identifiersSection(p), traitsSection(p)),
      ledgerSection(ledger),
      scoresSection(p),
      affinitySection(p),
      timelineSection(p));
  }

  function card(labelText, value, sub, bar, id) {
    return el('div', { class: 'card', id: id || null },
      el('div', { class: 'label', text: labelText }),
      el('div', { class: 'value' }, value),
      sub ? el('div', { class: 'sub' }, sub) : null,
      typeof bar === 'number' ? el('div', { class: 'bar' }, barFill(bar)) : null);
  }

  function barFill(pct) {
    const s = el('span');
    // style attributes are allowed by the CSP only through the CSSOM, not as markup
    s.style.width = Math.max(0, Math.min(100, pct)) + '%';
    return s;
  }

  function summaryCards(p) {
    const rfm = Array.isArray(p.rfm) ? p.rfm : (p.scores ? [p.scores.rfm_r, p.scores.rfm_f, p.scores.rfm_m] : null);
    const rfmSub = rfm && rfm[0] ? `R${rfm[0]} F${rfm[1]} M${rfm[2]}` : 'no orders';
    return el('div', { class: 'cards', id: 'profile-summary' },
      card('Engagement', num(p.engagement_score), 'of 100', p.engagement_score, 'card-engagement'),
      card('Influence', num(p.influence_score), 'of 100', p.influence_score, 'card-influence'),
      card('Lifecycle', label(p.lifecycle_stage), null, null, 'card-lifecycle'),
      card('RFM segment', label(p.rfm_segment), rfmSub, null, 'card-rfm'),
      card('Orders', String(p.order_count), null, null, 'card-orders'),
      card('Revenue', money(p.revenue), null, null, 'card-revenue'));
  }

  function identifiersSection(p) {
    return el('section', { id: 'identifiers' },
      el('h2', { text: `Identifiers (${(p.identifiers || []).length})` }),
      el('ul', { class: 'ids' }, (p.identifiers || []).map((idf) => {
        const i = idf.indexOf(':');
        return el('li', { class: 'mono' }, el('span', { class: 'tag', text: idf.slice(0, i) }), idf.slice(i + 1));
      })),
      el('p', { class: 'muted small' }, 'Sources: ', (p.sources || []).join(', ') || '–'));
  }

  function traitsSection(p) {
    const entries = Object.entries(p.traits || {});
    return el('section', { id: 'traits' }, el('h2', { text: 'Traits' }),
      table('kv', ['Trait', 'Value'], entries.map(([k, val]) => el('tr', null,
        el('th', { scope: 'row', text: k }), td(typeof val === 'string' ? val : JSON.stringify(val)))), 'No traits.'));
  }

  function ledgerSection(ledger) {
    const entries = (ledger && ledger.entries) || [];
    const rows = entries.map((e) => el('tr', { 'data-action': e.action },
      td(time(e.at), 'time'),
      td(el('span', { class: 'tag ' + (LEDGER_ACTIONS.includes(e.action) ? e.action : ''), text: e.action })),
      td(e.id_type ? el('span', { class: 'mono' }, `${e.id_type}:${e.id_value}`) : '–'),
      td(e.merged_customer_id ? el('span', { class: 'mono' }, e.merged_customer_id) : ''),
      td(e.rule || '–'),
      td(e.reason || ''),
      td(el('span', { class: 'mono small' }, e.event_id || '–'))));
    return el('section', { id: 'ledger' },
      el('h2', { text: 'How the identifiers were linked' }),
      el('p', { class: 'muted small' }, 'The identity ledger, oldest first: each link, merge and refused link, with the rule that applied and the event that caused it.'),
      table('ledger', ['When', 'Action', 'Identifier', 'Merged profile', 'Rule', 'Reason', 'Event'], rows,
        'No ledger entries.'));
  }

  function scoresSection(p) {
    const s = p.scores;
    const sec = el('section', { id: 'scores' }, el('h2', { text: 'Scores and why' }));
    const c = s && s.components;
    if (!c || typeof c !== 'object') {
      return add(sec, el('p', { class: 'empty' },
        'Not scored yet: scores appear after the first scoring run (socialcrm score run, or the pipeline\'s schedule).'));
    }
    add(sec, el('p', { class: 'muted small' },
      `Scoring run ${s.run_id || '–'} as of ${time(s.scored_at)}. Each score is the percentile of its raw value ` +
      '(the sum of the contributions below) among all customers.'));
    const e = c.engagement || {};
    const row = (name, measured, score, weight, contribution) => el('tr', null,
      el('th', { scope: 'row', text: name }), td(measured), td(auto(score), 'num'), td(auto(weight), 'num'),
      td(auto(contribution), 'num'));
    const it = e.interactions || {};
    const rc = e.recency || {};
    const fr = e.frequency || {};
    const m = e.monetary || {};
    const d = e.dispersion || {};
    add(sec, el('h3', { text: `Engagement ${num(s.engagement_score)} / 100` }),
      table('explain', ['Component', 'Measured', ['Score', true], ['Weight', true], ['Contribution', true]], [
        row('interactions', `${auto(it.weighted_decayed)} weighted, decayed interactions (half-life ${auto(it.half_life_days)} days)`,
          it.percentile, it.weight, it.contribution),
        row('recency', rc.days_since_last_event === null || rc.days_since_last_event === undefined ? 'no event yet'
          : `${days(rc.days_since_last_event)} since the last event`, rc.score, rc.weight, rc.contribution),
        row('frequency', `${auto(fr.events_in_window)} events in ${auto(fr.window_days)} days`, fr.percentile, fr.weight,
          fr.contribution),
        row('monetary', `revenue ${auto(m.revenue)}`, m.percentile, m.weight, m.contribution),
        row('dispersion', `${auto(d.channels_in_window)} channels (full at ${auto(d.full_at)})`, d.score, d.weight,
          d.contribution),
        el('tr', { class: 'total' }, td('raw'), td(''), td(''), td(''), td(auto(e.raw), 'num')),
      ]));
    const byType = Object.entries(it.by_type || {});
    if (byType.length) {
      add(sec, el('p', { class: 'muted small why', text: 'Interactions by type' }),
        table('explain-types', ['Type', ['Events', true], ['Decayed', true], ['Type weight', true], ['Weighted', true]],
          byType.map(([t, x]) => el('tr', null, td(t), td(auto(x.count), 'num'), td(auto(x.decayed), 'num'),
            td(auto(x.type_weight), 'num'), td(auto(x.weighted), 'num')))));
    }
    const i = c.influence || {};
    const reach = i.reach || {};
    const amp = i.amplification || {};
    const cen = i.centrality || {};
    add(sec, el('h3', { text: `Influence ${num(s.influence_score)} / 100` }),
      table('explain', ['Component', 'Measured', ['Score', true], ['Weight', true], ['Contribution', true]], [
        row('reach', `${auto(reach.value)} (followers, log-scaled)`, reach.percentile, reach.weight, reach.contribution),
        row('amplification', `${auto(amp.value)} (replies, reshares, likes by others)`, amp.percentile, amp.weight,
          amp.contribution),
        row('centrality', `PageRank ${cen.pagerank === null || cen.pagerank === undefined ? '–' : Number(cen.pagerank).toPrecision(3)}`,
          cen.percentile, cen.weight, cen.contribution),
        el('tr', { class: 'total' }, td('raw'), td(''), td(''), td(''), td(auto(i.raw), 'num')),
      ]));
    const byNet = Object.entries(i.by_network || {});
    if (byNet.length) {
      add(sec, el('p', { class: 'muted small why', text: 'By network' }),
        table('explain-networks', ['Network', ['Followers', true], ['Amplification', true]],
          byNet.map(([n, x]) => el('tr', null, td(n), td(auto(x.followers), 'num'), td(auto(x.amplification), 'num')))));
    }
    const rfm = c.rfm || {};
    const lc = c.lifecycle || {};
    const why = lc.why || {};
    const rfmText = s.rfm_r > 0
      ? `R${s.rfm_r} F${s.rfm_f} M${s.rfm_m} → ${label(s.rfm_segment)} (orders ${auto(rfm.orders)}, revenue ${auto(rfm.monetary)}, last order ${time(rfm.last_order_at)})`
      : 'no orders';
    const lcFacts = why.cadence_days !== undefined
      ? ` — cadence ${auto(why.cadence_days)} days (from ${why.cadence_from || '–'}), ${auto(why.days_since_last_order)} days since the last order`
      : '';
    add(sec, el('h3', { text: 'RFM and lifecycle' }),
      table('kv', null, [
        el('tr', { id: 'why-rfm' }, el('th', { scope: 'row', text: 'RFM' }), td(rfmText)),
        el('tr', { id: 'why-lifecycle' }, el('th', { scope: 'row', text: 'Lifecycle' }),
          td(`${label(s.lifecycle_stage)}: ${why.rule || '–'}${lcFacts}`)),
      ]));
    return sec;
  }

  function affinitySection(p) {
    const counts = (obj) => Object.entries(obj || {}).sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ${n}`).join(', ') || '–';
    return el('section', { id: 'affinities' }, el('h2', { text: 'Affinities and activity' }),
      table('kv', null, [
        el('tr', null, el('th', { scope: 'row', text: 'Top categories' }), td((p.top_categories || []).join(', ') || '–')),
        el('tr', null, el('th', { scope: 'row', text: 'Top channels' }), td((p.top_channels || []).join(', ') || '–')),
        el('tr', null, el('th', { scope: 'row', text: 'Channels used' }), td(counts(p.channel_counts))),
        el('tr', null, el('th', { scope: 'row', text: 'Events by type' }), td(counts(p.event_counts))),
        el('tr', null, el('th', { scope: 'row', text: 'Revenue' }), td(money(p.revenue))),
      ]));
  }

  function timelineSection(p) {
    const evs = p.recent_events || [];
    return el('section', { id: 'timeline' }, el('h2', { text: 'Timeline (newest first)' }),
      table('timeline', ['When', 'Type', 'Name', 'Channel', 'Source', ['Revenue', true], 'Event'],
        evs.map((e) => el('tr', { 'data-event-id': e.event_id },
          td(time(e.occurred_at), 'time'), td(e.type), td(e.name || ''), td(e.channel), td(e.source),
          td(e.revenue_currency ? `${num(e.revenue_amount, 2)} ${e.revenue_currency}` : '', 'num'),
          td(el('span', { class: 'mono small' }, e.event_id)))), 'No events.'));
  }

  // ------------------------------------------------------------------ leaderboards

  async function leaderboardView(v, board, params, live) {
    const network = params.get('network') || 'all';
    const sel = el('select', { id: 'network', 'aria-label': 'Network' },
      ['all'].concat(NETWORKS).map((n) => el('option', { value: n, selected: n === network }, n === 'all' ? 'all networks' : n)));
    if (!['all'].concat(NETWORKS).includes(network)) add(sel, el('option', { value: network, selected: true }, network));
    sel.addEventListener('change', () => go(`#/${board}` + qs([['network', sel.value === 'all' ? '' : sel.value]])));
    const tab = (b, text) => el('a', { href: `#/${b}` + qs([['network', network === 'all' ? '' : network]]),
      class: b === board ? 'active' : null, id: 'tab-' + b }, text);
    add(v, el('h1', { text: 'Leaderboards' }),
      el('div', { class: 'tabs' }, tab('influencers', 'Top influencers'), tab('advocates', 'Top advocates')),
      el('form', { class: 'inline panel', id: 'network-form' }, el('label', { for: 'network' }, 'Network '), sel,
        el('span', { class: 'muted small' }, board === 'influencers'
          ? 'Influence: reach (followers), amplification by others, PageRank over the interaction graph; newest scoring run.'
          : 'Advocacy: weighted mentions, replies, reshares, quotes, posts, likes and follows, all time.')));
    const out = put(v, el('section', { id: 'leaderboard' }, el('p', { class: 'muted', text: 'Loading…' })));
    const path = board === 'influencers' ? '/v1/top/influencers' : '/v1/top/advocates';
    const r = await api(path + qs([['network', network === 'all' ? '' : network], ['limit', 100]]));
    if (!live()) return;
    clear(out);
    const handles = (h) => (h || []).map((x) => el('div', { class: 'mono small', text: x }));
    let rows;
    let headers;
    if (board === 'influencers') {
      headers = [['#', true], 'Name', 'Handles', ['Influence', true], ['Reach', true], ['Amplification', true],
        ['PageRank', true], 'Followers by network'];
      rows = r.items.map((x) => el('tr', { 'data-customer-id': x.customer_id },
        td(String(x.rank), 'num'), td(profileLink(x.customer_id, x.name)), td(handles(x.handles)),
        td(num(x.influence_score), 'num'), td(num(x.reach, 2), 'num'), td(num(x.amplification, 1), 'num'),
        td(typeof x.pagerank === 'number' ? x.pagerank.toPrecision(3) : '–', 'num'),
        td(Object.entries(x.networks || {}).map(([n, f]) => `${n} ${auto(f.followers)}`).join(', ') || '–')));
    } else {
      headers = [['#', true], 'Name', 'Handles', ['Advocacy', true], ['Actions', true], ['Engagement', true],
        ['Influence', true]];
      rows = r.items.map((x) => el('tr', { 'data-customer-id': x.customer_id },
        td(String(x.rank), 'num'), td(profileLink(x.customer_id, x.name)), td(handles(x.handles)),
        td(num(x.advocacy, 1), 'num'), td(String(x.actions), 'num'), td(num(x.engagement_score), 'num'),
        td(num(x.influence_score), 'num')));
    }
    add(out, table(board, headers, rows,
      board === 'influencers' ? 'No scored customers here yet (scores come from the newest scoring run).'
        : 'No advocates here yet.'));
    out.setAttribute('data-loaded', `${board}:${network}`);
  }

  // ------------------------------------------------------------------ segments

  /** Filter pairs of a hash's parameters (what the API takes), in a stable order. */
  function filterPairs(params) {
    const out = [];
    for (const k of FILTER_PARAMS) for (const v of params.getAll(k)) if (v.trim() !== '') out.push([k, v.trim()]);
    return out;
  }

  async function segmentView(v, params, live) {
    const show = params.get('show') || '';
    const sort = params.get('sort') || 'engagement';
    const filters = filterPairs(params);
    const one = (k) => params.get(k) || '';
    const many = (k) => params.getAll(k).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);

    const numIn = (key, ph) => el('input', { type: 'number', id: 'seg-' + key.replace(/_/g, '-'), name: key,
      min: 0, step: 'any', value: one(key), placeholder: ph || '', 'aria-label': key.replace(/_/g, ' ') });
    const checks = (key, values, chosen) => el('div', { class: 'checks' }, values.map((val) => el('label', null,
      el('input', { type: 'checkbox', name: key, value: val, id: `seg-${key}-${val}`, checked: chosen.includes(val) }),
      ' ' + label(val))));

    const lifecycleChosen = many('lifecycle');
    const channelsChosen = many('channels');
    const rfmChosen = many('rfm_segment');
    const rfmSel = el('select', { id: 'seg-rfm-segment', name: 'rfm_segment', 'aria-label': 'RFM segment' },
      el('option', { value: '' }, 'any'));
    const rfmOptions = new Set(RFM_DEFAULT);
    const fillRfm = () => {
      clear(rfmSel);
      add(rfmSel, el('option', { value: '' }, 'any'));
      const chosen = rfmChosen.join(',');
      if (chosen && !rfmOptions.has(chosen)) rfmOptions.add(chosen);
      for (const s of rfmOptions) add(rfmSel, el('option', { value: s, selected: s === chosen }, label(s)));
    };
    fillRfm();
    const hasSel = el('select', { id: 'seg-has-identifier', name: 'has_identifier', 'aria-label': 'Has identifier' },
      el('option', { value: '' }, 'any'),
      ID_TYPES.concat(ID_TYPES.includes(one('has_identifier')) || !one('has_identifier') ? [] : [one('has_identifier')])
        .map((t) => el('option', { value: t, selected: t === one('has_identifier') }, t)));
    const sortSel = el('select', { id: 'seg-sort', name: 'sort', 'aria-label': 'Sort' },
      SORTS.map(([k, t]) => el('option', { value: k, selected: k === sort }, t)));
    const category = el('input', { type: 'text', id: 'seg-category', name: 'category', value: many('category').join(', '),
      placeholder: 'e.g. shoes, bags' });
    const traits = el('textarea', { id: 'seg-traits', name: 'trait', rows: 2, placeholder: 'one name:value a line, e.g. plan:pro' });
    traits.value = params.getAll('trait').join('\n');

    const form = el('form', { id: 'segment-form', class: 'panel', noValidate: true },
      el('div', { class: 'filters' },
        el('fieldset', null, el('legend', { text: 'Engagement score (0–100)' }),
          el('div', { class: 'range' }, numIn('engagement_min', 'min'), '–', numIn('engagement_max', 'max'))),
        el('fieldset', null, el('legend', { text: 'Influence score (0–100)' }),
          el('div', { class: 'range' }, numIn('influence_min', 'min'), '–', numIn('influence_max', 'max'))),
        el('fieldset', null, el('legend', { text: 'Activity' }),
          el('div', { class: 'range' }, el('label', { for: 'seg-active-within-days' }, 'active within'),
            numIn('active_within_days', 'days'), 'days'),
          el('div', { class: 'range' }, el('label', { for: 'seg-inactive-for-days' }, 'inactive for'),
            numIn('inactive_for_days', 'days'), 'days'),
          el('div', { class: 'range' }, el('label', { for: 'seg-min-orders' }, 'at least'),
            numIn('min_orders', 'n'), 'orders')),
        el('fieldset', { class: 'wide' }, el('legend', { text: 'Lifecycle stage (any of)' }),
          checks('lifecycle', LIFECYCLE.concat(lifecycleChosen.filter((x) => !LIFECYCLE.includes(x))), lifecycleChosen)),
        el('fieldset', null, el('legend', { text: 'RFM segment' }), rfmSel),
        el('fieldset', null, el('legend', { text: 'Channels used (all of)' }),
          checks('channels', CHANNELS.concat(channelsChosen.filter((x) => !CHANNELS.includes(x))), channelsChosen)),
        el('fieldset', null, el('legend', { text: 'Has an identifier of type' }), hasSel),
        el('fieldset', null, el('legend', { text: 'Product category (any of)' }), category),
        el('fieldset', { class: 'wide2' }, el('legend', { text: 'Traits (all must hold)' }), traits)),
      el('div', { class: 'actions' },
        el('button', { type: 'submit', class: 'primary', id: 'segment-count-btn', value: 'count' }, 'Count'),
        el('button', { type: 'button', id: 'segment-preview-btn' }, 'Preview'),
        el('button', { type: 'button', id: 'segment-download' }, 'Download CSV'),
        el('label', { for: 'seg-sort' }, 'sorted by '), sortSel,
        el('button', { type: 'button', id: 'segment-reset' }, 'Clear'),
        el('span', { class: 'muted small' }, 'This page\'s address keeps the filters: copy it to share the segment.')));

    /** The form's state as hash parameters (filters, then sort and what to show). */
    const formPairs = () => {
      const fd = new FormData(form);
      const pairs = [];
      for (const k of ['engagement_min', 'engagement_max', 'influence_min', 'influence_max']) pairs.push([k, fd.get(k)]);
      const lc = fd.getAll('lifecycle');
      if (lc.length) pairs.push(['lifecycle', lc.join(',')]);
      pairs.push(['rfm_segment', fd.get('rfm_segment')]);
      const ch = fd.getAll('channels');
      if (ch.length) pairs.push(['channels', ch.join(',')]);
      pairs.push(['category', String(fd.get('category') || '').split(',').map((x) => x.trim()).filter(Boolean).join(',')]);
      pairs.push(['has_identifier', fd.get('has_identifier')]);
      for (const k of ['active_within_days', 'inactive_for_days', 'min_orders']) pairs.push([k, fd.get(k)]);
      for (const line of String(fd.get('trait') || '').split('\n')) if (line.trim()) pairs.push(['trait', line.trim()]);
      return pairs.filter(([, val]) => val !== null && String(val).trim() !== '').map(([k, val]) => [k, String(val).trim()]);
    };
    const submit = (what) => {
      const pairs = formPairs();
      if (sortSel.value !== 'engagement') pairs.push(['sort', sortSel.value]);
      pairs.push(['show', what]);
      go('#/segments' + qs(pairs));
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); submit('count'); });
    const downloadMsg = el('div', { id: 'segment-download-status' });
    form.querySelector('#segment-preview-btn').addEventListener('click', () => submit('preview'));
    form.querySelector('#segment-reset').addEventListener('click', () => go('#/segments'));
    form.querySelector('#segment-download').addEventListener('click', (e) => {
      const pairs = formPairs();
      pairs.push(['sort', sortSel.value]);
      download(pairs, e.currentTarget, downloadMsg);
    });

    add(v, el('h1', { text: 'Segment builder' }), form, downloadMsg);
    const out = put(v, el('section', { id: 'segment-result' }));

    // extra RFM segment names configured on this server (the distribution report lists those in use)
    api('/v1/reports/distributions').then((r) => {
      if (!live()) return;
      let added = false;
      for (const it of r.rfm_segments || []) {
        if (it.key && it.key !== '(none)' && !rfmOptions.has(it.key)) { rfmOptions.add(it.key); added = true; }
      }
      if (added) { const keep = rfmSel.value; fillRfm(); rfmSel.value = keep; }
    }).catch(() => { /* the static list stays */ });

    const what = show || (filters.length ? 'preview' : '');
    if (!what) {
      add(out, el('p', { class: 'muted' }, 'Choose filters, then Count, Preview or Download CSV. No filter means every live profile.'));
      return;
    }
    add(out, el('p', { class: 'muted', text: 'Counting…' }));
    try {
      await segmentResult(out, what, filters, sort, live);
    } catch (err) {
      if (!live() || (err instanceof ApiError && err.status === 401)) throw err;
      clear(out);
      add(out, errorBox(err));
    }
  }

  async function segmentResult(out, what, filters, sort, live) {
    if (what === 'count') {
      const r = await api('/v1/segments/count' + qs(filters));
      if (!live()) return;
      clear(out);
      add(out, countLine(r.count));
      return;
    }
    const r = await api('/v1/segments/preview' + qs(filters.concat([['sort', sort], ['limit', PREVIEW_ROWS]])));
    if (!live()) return;
    clear(out);
    add(out, countLine(r.count),
      r.count > r.items.length ? el('p', { class: 'muted small', text: `The first ${r.items.length} by ${label(sort)}:` }) : null,
      table('segment-preview', ['Name', 'Email', ['Engagement', true], ['Influence', true], 'Lifecycle', 'RFM segment',
        'Channels', ['Orders', true], 'Revenue', 'Last seen'],
      r.items.map((p) => el('tr', { 'data-customer-id': p.customer_id },
        td(profileLink(p.customer_id, p.name)), td(p.email || '–'), td(num(p.engagement_score), 'num'),
        td(num(p.influence_score), 'num'), td(label(p.lifecycle_stage)), td(label(p.rfm_segment)),
        td((p.channels || []).join(', ')), td(String(p.order_count), 'num'), td(money(p.revenue)),
        td(time(p.last_seen), 'time'))), 'No customer matches.'));
  }

  function countLine(n) {
    return el('p', { id: 'segment-count', class: 'notice' }, el('strong', { text: String(n) }),
      n === 1 ? ' customer matches' : ' customers match');
  }

  /** Fetches the CSV with the key (a plain link could not send it) and saves it. */
  async function download(pairs, button, msg) {
    button.disabled = true;
    clear(msg);
    setStatus('Exporting…', true);
    try {
      const resp = await api('/v1/segments/export.csv' + qs(pairs), { raw: true });
      const blob = await resp.blob();
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: 'segment.csv', hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      add(msg, el('p', { class: 'ok' }, `segment.csv saved (${(blob.size / 1024).toFixed(1)} KB).`));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        setKey('');
        showKeyForm(err.message);
        return;
      }
      add(msg, errorBox(err));
    } finally {
      button.disabled = false;
      setStatus('');
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    document.getElementById('key-forget').addEventListener('click', () => {
      setKey('');
      route();
    });
    window.addEventListener('hashchange', route);
    showKeyState();
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}());
