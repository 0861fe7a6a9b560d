/* komerce-hookd payments console: plain JavaScript, no framework, no build step.
 *
 * Talks only to the admin API of the daemon that served it (same origin), with the admin
 * token from sessionStorage in an Authorization header (never in a URL, never in a cookie).
 * Every value from the API is put into the page as text (textContent / text nodes): payment
 * ids and callback bodies come from outside and may contain markup. Views are chosen by the
 * location hash: #/ live events, #/search/Q, #/payment/ID, #/stale, #/conflicts, #/outbox. */
'use strict';

(function () {
  const TOKEN_KEY = 'komerce-hookd.admin-token';
  const LIVE_MS = 2000;
  /* The statistics scan the whole store (about a second per 300k events on a busy machine):
   * refreshed every 30 s while the tab is visible, and after a replay. */
  const STATS_MS = 30000;
  const OUTBOX_MS = 3000;
  const LIVE_KEEP = 200;

  const $ = (id) => document.getElementById(id);
  const view = $('view');
  let timers = [];
  let renderSeq = 0;
  let statsTimer = null;
  let lastStats = null;

  /* ---- DOM ------------------------------------------------------------------------------ */

  /* h('a', {href: '#/x', class: 'y'}, 'text', child...): children are nodes or text. */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function notice(text, kind) {
    const n = $('notice');
    n.textContent = text || '';
    n.className = 'notice ' + (kind || 'error');
    n.hidden = !text;
  }

  /* ---- formatting ----------------------------------------------------------------------- */

  const dateFmt = new Intl.DateTimeFormat(undefined, {
    year: 'numeric', month: 'short', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
  const amountFmt = new Intl.NumberFormat('id-ID', {
    style: 'currency', currency: 'IDR', maximumFractionDigits: 0,
  });

  /* A time in the viewer's zone, UTC on hover. */
  function when(iso) {
    if (!iso) return h('span', {class: 'muted'}, '—');
    const d = new Date(iso);
    if (isNaN(d)) return h('span', {}, String(iso));
    const utc = d.toISOString().replace('T', ' ').replace('Z', ' UTC');
    return h('time', {datetime: d.toISOString(), title: utc}, dateFmt.format(d));
  }

  function ago(iso) {
    if (!iso) return '';
    let s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    const future = s < 0;
    s = Math.abs(s);
    const t = s < 90 ? s + ' s' : s < 5400 ? Math.round(s / 60) + ' min'
      : s < 172800 ? Math.round(s / 3600) + ' h' : Math.round(s / 86400) + ' d';
    return future ? 'in ' + t : t + ' ago';
  }

  function amount(v) {
    return v === null || v === undefined ? h('span', {class: 'muted'}, '—') : amountFmt.format(v);
  }

  function badge(status) {
    return h('span', {class: 'badge st-' + String(status).toLowerCase()}, status);
  }

  function srcTag(source) {
    return h('span', {class: 'src src-' + source}, source);
  }

  function paymentLink(id) {
    return h('a', {href: '#/payment/' + encodeURIComponent(id), class: 'id'}, id);
  }

  /* Names each cell after its column: narrow screens show rows as labelled cards. */
  function labelled(rows, head) {
    for (const tr of rows)
      [...tr.children].forEach((td, i) => {
        if (head[i]) td.setAttribute('data-label', head[i]);
      });
    return rows;
  }

  function table(cls, head, rows, empty) {
    if (!rows.length) return h('p', {class: 'empty'}, empty || 'Nothing here.');
    labelled(rows, head);
    return h('div', {class: 'table-wrap'},
      h('table', {class: cls},
        h('thead', {}, h('tr', {}, head.map((c) => h('th', {scope: 'col'}, c)))),
        h('tbody', {}, rows)));
  }

  function section(title, id, ...kids) {
    return h('section', {class: 'card', id: id}, h('h2', {}, title), kids);
  }

  /* The VA number of a payment, read from its events' stored bodies (create reply, callbacks). */
  function vaNumber(events) {
    for (const e of events || []) {
      const cb = e.callback;
      if (cb && typeof cb === 'object') {
        const va = cb.va_number ?? (cb.data && cb.data.va_number);
        if (va !== undefined && va !== null && va !== '') return String(va);
      }
    }
    return null;
  }

  /* ---- API ------------------------------------------------------------------------------ */

  class AuthError extends Error {}

  async function api(path, opts) {
    opts = opts || {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new AuthError('no token');
    const headers = {Authorization: 'Bearer ' + token, Accept: 'application/json'};
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(path, {
      method: opts.method || 'GET', headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer',
    });
    let body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (res.status === 401) {
      logout('The admin token was refused.');
      throw new AuthError('refused');
    }
    if (!res.ok) {
      const err = new Error((body && body.error) || res.status + ' ' + res.statusText);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? '?' + s : '';
  }

  /* ---- session -------------------------------------------------------------------------- */

  function showLogin(message) {
    stopTimers();
    if (statsTimer) clearInterval(statsTimer);
    statsTimer = null;
    lastStats = null;
    clear(view);
    clear($('stats'));
    $('stats').hidden = true;
    $('nav').hidden = true;
    $('search').hidden = true;
    $('login').hidden = false;
    notice('');
    const e = $('login-error');
    e.textContent = message || '';
    e.hidden = !message;
    $('token').focus();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  async function login(ev) {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await refreshStats();
    } catch (e) {
      if (!(e instanceof AuthError)) {
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin('Cannot reach the daemon: ' + e.message);
      }
      return;
    }
    startApp();
  }

  function startApp() {
    $('login').hidden = true;
    $('nav').hidden = false;
    $('search').hidden = false;
    $('stats').hidden = false;
    if (!statsTimer)
      statsTimer = setInterval(() => {
        if (!document.hidden) refreshStats().catch(() => {});
      }, STATS_MS);
    route();
  }

  /* ---- stats ---------------------------------------------------------------------------- */

  function stat(label, value, href, cls) {
    const inner = [h('span', {class: 'v'}, String(value)), h('span', {class: 'k'}, label)];
    return href ? h('a', {class: 'stat ' + (cls || ''), href}, inner) : h('div', {class: 'stat ' + (cls || '')}, inner);
  }

  async function refreshStats() {
    const r = await api('/v1/stats');
    r.fetched = Date.now();
    lastStats = r;
    const s = r.stats;
    const box = $('stats');
    clear(box);
    box.append(
      stat('events', s.events.total),
      h('div', {class: 'stat group'},
        Object.entries(s.events.by_status).map(([k, v]) => h('span', {class: 'pair'}, badge(k), ' ', String(v)))),
      h('div', {class: 'stat group'},
        Object.entries(s.events.by_source).map(([k, v]) => h('span', {class: 'pair'}, srcTag(k), ' ', String(v)))),
      stat('reconciled', s.reconciled.total),
      stat('stale pending', s.payments.stale, '#/stale', s.payments.stale ? 'warn' : ''),
      stat('conflicts', s.events.conflicts, '#/conflicts', s.events.conflicts ? 'warn' : ''),
      stat('backlog', s.outbox.pending, '#/outbox'),
      stat('dead letters', s.outbox.dead, '#/outbox', s.outbox.dead ? 'bad' : ''));
    return r;
  }

  /* ---- router --------------------------------------------------------------------------- */

  function stopTimers() {
    for (const t of timers) clearInterval(t);
    timers = [];
  }

  function every(ms, fn) {
    timers.push(setInterval(() => {
      if (!document.hidden) fn();
    }, ms));
  }

  function route() {
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      showLogin();
      return;
    }
    stopTimers();
    notice('');
    const seq = ++renderSeq;
    const hash = location.hash.replace(/^#/, '') || '/';
    const parts = hash.split('/');
    const name = parts[1] || 'live';
    const arg = parts.length > 2 ? decodeURIComponent(parts.slice(2).join('/')) : '';
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    clear(view);
    const views = {live, search, payment, stale, conflicts, outbox};
    const fn = views[name];
    if (!fn) {
      view.append(h('p', {class: 'empty'}, 'No such page.'));
      return;
    }
    Promise.resolve(fn(arg, () => seq === renderSeq)).catch((e) => {
      if (e instanceof AuthError) return;
      if (seq === renderSeq) notice(e.message);
    });
  }

  /* ---- live events ---------------------------------------------------------------------- */

  function eventRow(e) {
    return h('tr', {class: e.conflict ? 'conflict' : ''},
      h('td', {class: 'num'}, String(e.id)),
      h('td', {}, when(e.received_at)),
      h('td', {}, paymentLink(e.payment_id)),
      h('td', {}, e.order_id === null ? h('span', {class: 'muted'}, '—') : e.order_id),
      h('td', {}, badge(e.status), e.conflict ? h('span', {class: 'flag'}, 'conflict') : null),
      h('td', {}, srcTag(e.source)),
      h('td', {class: 'num'}, amount(e.amount)),
      h('td', {class: 'num'}, String(e.receipts)));
  }

  async function live(_, current) {
    const tbody = h('tbody', {});
    const status = h('span', {class: 'muted'}, 'polling every 2 s');
    view.append(section('Recent events', 'live', status,
      h('div', {class: 'table-wrap'}, h('table', {class: 'events'},
        h('thead', {}, h('tr', {}, ['id', 'received', 'payment', 'order', 'status', 'source', 'amount', 'receipts'].map((c) => h('th', {scope: 'col'}, c)))),
        tbody))));
    const stats = lastStats || await refreshStats();
    let after = Math.max(0, (stats.last_event_id || 0) - 50);
    const poll = async () => {
      let more = true;
      while (more && current()) {
        const r = await api('/v1/events' + qs({after_id: after, limit: 100}));
        if (!current()) return;
        for (const e of r.events) {
          tbody.prepend(eventRow(e));
          after = e.id;
        }
        while (tbody.rows.length > LIVE_KEEP) tbody.deleteRow(-1);
        more = r.next_after_id !== null;
      }
      status.textContent = tbody.rows.length ? 'live · polling every 2 s' : 'no events yet · polling every 2 s';
    };
    await poll();
    every(LIVE_MS, () => poll().catch((e) => {
      if (!(e instanceof AuthError)) status.textContent = 'poll failed: ' + e.message;
    }));
  }

  /* ---- payment lists -------------------------------------------------------------------- */

  function paymentRows(list, cols) {
    return list.map((p) => h('tr', {},
      h('td', {}, paymentLink(p.payment_id)),
      h('td', {}, p.order_id === null ? h('span', {class: 'muted'}, '—') : p.order_id),
      h('td', {}, badge(p.status), p.conflicts ? h('span', {class: 'flag'}, p.conflicts + ' conflict' + (p.conflicts > 1 ? 's' : '')) : null),
      h('td', {class: 'num'}, amount(p.amount)),
      h('td', {}, [p.payment_type, p.channel_code].filter(Boolean).join(' · ')),
      cols === 'stale'
        ? [h('td', {}, when(p.expires_at), h('div', {class: 'muted small'}, ago(p.expires_at))),
          h('td', {}, when(p.last_polled_at), h('div', {class: 'muted small'}, p.poll_attempts + ' polls'))]
        : [h('td', {}, when(p.created_at)), h('td', {}, when(p.updated_at))],
      p.matched ? h('td', {}, p.matched.replace('_', ' ')) : null));
  }

  /* A payments list with "Load more" (cursor next_after). */
  async function paymentList(title, id, params, cols, empty, current) {
    const head = ['payment', 'order', 'status', 'amount', 'method'].concat(
      cols === 'stale' ? ['expired', 'last poll'] : ['created', 'updated']);
    const box = section(title, id);
    view.append(box);
    let after = null;
    let first = true;
    let tbody = null;
    const more = h('button', {type: 'button', class: 'more', hidden: true}, 'Load more');
    const load = async () => {
      const r = await api('/v1/payments' + qs(Object.assign({}, params, {after})));
      if (!current()) return null;
      if (first) {
        first = false;
        const withMatch = r.payments.some((p) => p.matched);
        const t = table('payments', withMatch ? head.concat(['matched']) : head, paymentRows(r.payments, cols), empty);
        box.append(t, more);
        tbody = t.querySelector('tbody');
      } else if (tbody) {
        tbody.append(...labelled(paymentRows(r.payments, cols), head));
      }
      after = r.next_after;
      more.hidden = after === null;
      return r;
    };
    more.addEventListener('click', () => load().catch((e) => notice(e.message)));
    return load();
  }

  async function search(q, current) {
    $('q').value = q;
    const r = await paymentList('Search: ' + q, 'results', {q, limit: 50}, 'list',
      'No payment has this id, order id or VA number.', current);
    if (r && r.payments.length === 1 && r.next_after === null && current())
      location.replace('#/payment/' + encodeURIComponent(r.payments[0].payment_id));
  }

  function stale(_, current) {
    return paymentList('PENDING past their expiry', 'stale-list', {status: 'PENDING', stale: 'true', limit: 100},
      'stale', 'No PENDING payment is past its expiry.', current);
  }

  function conflicts(_, current) {
    return paymentList('Payments with conflicts', 'conflict-list', {conflict: 'true', limit: 100},
      'list', 'No event contradicted what was known.', current);
  }

  /* ---- one payment ---------------------------------------------------------------------- */

  function kv(pairs) {
    return h('dl', {class: 'kv'}, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  function pretty(v) {
    if (typeof v === 'string') return v;
    return JSON.stringify(v, null, 2);
  }

  /* A generic table for data whose shape this console does not know yet (polls). */
  function genericTable(cls, rows) {
    const keys = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
    return table(cls, keys, rows.map((r) => h('tr', {}, keys.map((k) => {
      const v = r[k];
      if (/_at$/.test(k) && typeof v === 'string') return h('td', {}, when(v));
      return h('td', {}, v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
    }))));
  }

  function replayButton(row, after) {
    return h('button', {
      type: 'button', class: 'replay',
      onclick: async (ev) => {
        const b = ev.currentTarget;
        if (!window.confirm('Replay event ' + row.event_id + ' to sink "' + row.sink + '"?\n' +
          'It is queued again and delivered within a second or two.')) return;
        b.disabled = true;
        try {
          const r = await api('/v1/outbox/replay', {method: 'POST', body: {event_id: row.event_id, sink: row.sink}});
          notice(r.queued ? 'Event ' + row.event_id + ' queued again for ' + row.sink + '.'
            : 'Event ' + row.event_id + ' is already waiting for ' + row.sink + '.', 'ok');
          refreshStats().catch(() => {});
          if (after) after();
        } catch (e) {
          if (!(e instanceof AuthError)) notice('Replay failed: ' + e.message);
          b.disabled = false;
        }
      },
    }, 'Replay');
  }

  function deliveryRows(rows, statusOf, after) {
    return rows.map((d) => h('tr', {class: 'state-' + d.state},
      h('td', {class: 'num'}, String(d.id)),
      h('td', {}, '#' + d.event_id, statusOf[d.event_id] ? [' ', badge(statusOf[d.event_id])] : null),
      h('td', {}, h('span', {class: 'badge ob-' + d.state}, d.state)),
      h('td', {class: 'num'}, String(d.attempts)),
      h('td', {class: 'err'}, d.last_error || ''),
      h('td', {}, when(d.created_at)),
      h('td', {}, d.state === 'delivered' ? when(d.delivered_at) : d.state === 'dead' ? ['died ', when(d.dead_at)] : ['next ', when(d.next_attempt_at)]),
      h('td', {}, d.state !== 'dead' ? null
        : d.replayed_at ? h('span', {class: 'muted small'}, 'replayed ', when(d.replayed_at), d.replayed_by ? ' by ' + d.replayed_by : '')
          : replayButton(d, after))));
  }

  async function payment(id, current) {
    const r = await api('/v1/payments/' + encodeURIComponent(id));
    if (!current()) return;
    const p = r.payment;
    const events = r.events || [];
    const va = vaNumber(events);
    const statusOf = {};
    for (const e of events) statusOf[e.id] = e.status;
    const past = p.expires_at && new Date(p.expires_at) < new Date();

    view.append(h('section', {class: 'card head', id: 'payment'},
      h('div', {class: 'title'}, h('h1', {class: 'id'}, p.payment_id), badge(p.status),
        p.status === 'PENDING' && past ? h('span', {class: 'flag'}, 'past expiry') : null),
      kv([
        ['Order', p.order_id === null ? '—' : p.order_id],
        ['Amount', amount(p.amount)],
        ['Method', [p.payment_type, p.channel_code].filter(Boolean).join(' · ') || '—'],
        va ? ['VA number', h('span', {class: 'mono'}, va)] : null,
        ['Created', [when(p.created_at), ' (', p.origin, ')']],
        ['Expires', [when(p.expires_at), p.expires_at ? ' · ' + ago(p.expires_at) : '']],
        ['Updated', when(p.updated_at)],
        ['Last callback', when(p.callback_seen_at)],
      ])));

    /* timeline: every event with its source, its receipts and its stored body */
    const byEvent = {};
    for (const rc of r.receipts || []) (byEvent[rc.event_id] = byEvent[rc.event_id] || []).push(rc);
    const steps = events.map((e, i) => h('li', {class: 'step' + (e.conflict ? ' conflict' : ''), 'data-status': e.status},
      h('div', {class: 'step-head'},
        i > 0 ? h('span', {class: 'arrow', 'aria-hidden': 'true'}, '→') : null,
        badge(e.status), srcTag(e.source),
        e.conflict ? h('span', {class: 'flag'}, 'conflict') : null,
        h('span', {class: 'muted'}, 'event #' + e.id), when(e.received_at)),
      table('receipts', ['received', 'source', 'from'],
        (byEvent[e.id] || []).map((rc) => h('tr', {}, h('td', {}, when(rc.received_at)), h('td', {}, srcTag(rc.source)),
          h('td', {class: 'mono'}, rc.remote_addr || '—'))), 'No receipt.'),
      h('details', {class: 'raw', open: e.source === 'callback'},
        h('summary', {}, e.source === 'callback' ? 'Callback body' : e.source === 'api' ? 'Komerce reply' : 'Komerce status reply'),
        h('pre', {}, e.callback === null ? '(empty)' : pretty(e.callback)))));
    view.append(section('Timeline', 'timeline',
      events.length ? h('ol', {class: 'steps'}, steps) : h('p', {class: 'empty'}, 'No event stored.'),
      r.receipts_truncated ? h('p', {class: 'muted'}, 'Only the first receipts are listed.') : null));

    /* reconciler and confirmation */
    const rec = r.reconcile || {};
    const recBox = section('Reconciler', 'reconcile',
      kv([
        ['Watched', rec.watched ? 'yes' : 'no'],
        ['Last poll', when(rec.last_polled_at)],
        ['Next poll', [when(rec.next_poll_at), rec.next_poll_at ? ' · ' + ago(rec.next_poll_at) : '']],
        ['Polls', String(rec.poll_attempts ?? 0)],
        p.confirmation ? ['Confirmation of PAID', [String(p.confirmation),
          p.confirmation_detail ? ' · ' + p.confirmation_detail : '',
          p.confirmation_at ? ' · ' + when(p.confirmation_at) : '']] : null,
      ]));
    if (Array.isArray(r.polls)) recBox.append(h('h3', {}, 'Polls'), genericTable('polls', r.polls));
    view.append(recBox);

    /* forwarded deliveries, per sink */
    const sinks = {};
    for (const d of r.deliveries || []) (sinks[d.sink] = sinks[d.sink] || []).push(d);
    const refresh = () => setTimeout(route, 1200);
    const dBox = section('Deliveries', 'deliveries');
    const names = Object.keys(sinks).sort();
    if (!names.length) dBox.append(h('p', {class: 'empty'}, 'Not forwarded to any sink.'));
    for (const s of names)
      dBox.append(h('h3', {class: 'sink'}, s),
        table('deliveries', ['outbox', 'event', 'state', 'failures', 'last error', 'queued', 'outcome', ''],
          deliveryRows(sinks[s], statusOf, refresh)));
    view.append(dBox);
  }

  /* ---- outbox --------------------------------------------------------------------------- */

  function outboxRows(rows, after) {
    return rows.map((o) => h('tr', {class: 'state-' + o.state},
      h('td', {class: 'num'}, String(o.id)),
      h('td', {}, o.sink),
      h('td', {}, '#' + o.event_id, ' ', badge(o.status)),
      h('td', {}, paymentLink(o.payment_id)),
      h('td', {class: 'num'}, String(o.attempts)),
      h('td', {class: 'err'}, o.last_error || ''),
      h('td', {}, o.state === 'dead' ? when(o.dead_at) : when(o.next_attempt_at)),
      h('td', {class: 'replay-cell'}, o.state !== 'dead' ? null
        : o.replayed_at
          ? h('span', {class: 'badge ob-' + (o.after_replay ? o.after_replay.state : 'pending'),
            title: 'replayed ' + o.replayed_at + (o.replayed_by ? ' by ' + o.replayed_by : '')},
          'replayed · ' + (o.after_replay ? o.after_replay.state : 'queued'))
          : replayButton(o, after))));
  }

  async function outbox(_, current) {
    const sinkBox = section('Sinks', 'sinks');
    const dead = section('Dead letters', 'dead');
    const backlog = section('Backlog', 'backlog');
    view.append(sinkBox, dead, backlog);
    const draw = async () => {
      const [st, d, b] = await Promise.all([
        lastStats && Date.now() - lastStats.fetched < STATS_MS ? lastStats : refreshStats(),
        api('/v1/outbox' + qs({state: 'dead', limit: 200})),
        api('/v1/outbox' + qs({state: 'pending', limit: 200})),
      ]);
      if (!current()) return;
      const per = {};
      for (const n of st.sinks || []) per[n] = {sink: n, pending: 0, dead: 0, replayed: 0, delivered: 0, oldest_pending: null};
      for (const k of st.stats.outbox.sinks) per[k.sink] = k;
      for (const [el, title] of [[sinkBox, 'Sinks'], [dead, 'Dead letters'], [backlog, 'Backlog']]) {
        clear(el);
        el.append(h('h2', {}, title));
      }
      sinkBox.append(table('sinks', ['sink', 'pending', 'dead', 'replayed', 'delivered', 'oldest pending'],
        Object.values(per).map((k) => h('tr', {}, h('td', {}, k.sink), h('td', {class: 'num'}, String(k.pending)),
          h('td', {class: 'num'}, String(k.dead)), h('td', {class: 'num'}, String(k.replayed ?? 0)),
          h('td', {class: 'num'}, String(k.delivered)),
          h('td', {}, when(k.oldest_pending)))), 'No sink configured.'));
      const head = ['outbox', 'sink', 'event', 'payment', 'failures', 'last error'];
      dead.append(table('outbox dead-letters', head.concat(['died', '']), outboxRows(d.outbox, () => setTimeout(draw, 300)),
        'No dead letter.'));
      if (d.next_after_id !== null) dead.append(h('p', {class: 'muted'}, 'Only the oldest 200 are shown.'));
      backlog.append(table('outbox backlog', head.concat(['next attempt', '']), outboxRows(b.outbox),
        'Nothing waiting: every event was delivered.'));
      if (b.next_after_id !== null) backlog.append(h('p', {class: 'muted'}, 'Only the oldest 200 are shown.'));
    };
    await draw();
    every(OUTBOX_MS, () => draw().catch((e) => {
      if (!(e instanceof AuthError)) notice(e.message);
    }));
  }

  /* ---- start ---------------------------------------------------------------------------- */

  $('login').addEventListener('submit', login);
  $('logout').addEventListener('click', () => logout());
  $('search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = $('q').value.trim();
    if (q) location.hash = '#/search/' + encodeURIComponent(q);
  });
  window.addEventListener('hashchange', route);
  if (sessionStorage.getItem(TOKEN_KEY)) {
    refreshStats().then(startApp, (e) => {
      if (!(e instanceof AuthError)) showLogin('Cannot reach the daemon: ' + e.message);
    });
  } else {
    showLogin();
  }
})();
