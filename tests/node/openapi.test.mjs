// docs/openapi.yaml against the daemon, so that document and code cannot drift:
//  1. the document the daemon serves at GET /openapi.json is a valid OpenAPI 3.1 document
//     (@apidevtools/swagger-parser);
//  2. the real build/komerce-hookd, with the bundled simulator as its Komerce upstream, is driven
//     through every route, success and error paths, and every reply is validated against the
//     document (ajv, JSON Schema 2020-12): its status must be documented for that operation, its
//     content type too, its body must match the schema and documented headers their schemas;
//  3. coverage: every operation of the document is exercised with a success and an error, and
//     every documented status is exercised except the few listed in UNEXERCISED (out of memory,
//     a full disk ...), which must stay exactly that list.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import SwaggerParser from '@apidevtools/swagger-parser';
import yaml from 'js-yaml';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { ADMIN_TOKEN, Daemon, Sim, postCallback, signCallback } from './lib/hookd.mjs';

// Documented replies no test here can provoke on purpose, with the reason.
const UNEXERCISED = new Map([
  ['post /v1/komerce/callback 503', 'disk full / database busy: tests/integration/it_faults.c'],
  ['get /readyz 503', 'only while starting or stopping'],
  ['get /v1/methods 500', 'out of memory'],
  ['post /v1/payments 500', 'out of memory'],
  ['post /v1/payments 503', 'store unavailable after Komerce created the payment'],
  ['post /v1/payments/track 503', 'store unavailable'],
  ['get /v1/payments/{payment_id} 500', 'out of memory'],
  ['get /v1/payments/{payment_id} 503', 'store unavailable'],
  ['post /v1/payments/{payment_id}/cancel 500', 'out of memory'],
  ['post /v1/payments/{payment_id}/cancel 503', 'store unavailable'],
  ['get /v1/events 500', 'out of memory'],
  ['get /v1/events 503', 'store unavailable'],
  ['get /v1/payments 500', 'out of memory'],
  ['get /v1/payments 503', 'store unavailable'],
  ['get /v1/outbox 500', 'out of memory'],
  ['get /v1/outbox 503', 'store unavailable'],
  ['post /v1/outbox/replay 409', 'no sink configured (this daemon has one)'],
  ['post /v1/outbox/replay 500', 'out of memory'],
  ['post /v1/outbox/replay 503', 'store unavailable'],
  ['get /v1/stats 500', 'out of memory'],
  ['get /v1/stats 503', 'store unavailable'],
]);

let sim;
let daemon;
let doc; // the served document, dereferenced
let ajv;
const validators = new Map();
const seen = new Set(); // "method template status"

const auth = { Authorization: `Bearer ${ADMIN_TOKEN}` };
const json = { 'Content-Type': 'application/json' };

before(async () => {
  sim = await new Sim().start();
  daemon = new Daemon(
    // request_timeout: the 408 test waits for it
    '[server]\nmax_body = 2048\nrequest_timeout = 3\n' +
    `[komerce]\nbase_url = ${sim.base}/user\ntimeout_ms = 1000\nconnect_timeout_ms = 1000\n` +
    '[reconcile]\nenabled = false\n' +
    // a sink nobody listens on: its rows stay pending (the outbox routes have a backlog)
    '[sink.oas]\nurl = http://127.0.0.1:9/nowhere\nsecret = node-oas-sink-secret-0001\n');
  await daemon.start();
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
});

after(async () => {
  if (daemon) {
    const st = await daemon.stop();
    assert.deepEqual(st, { code: 0, sig: null }, daemon.log);
    await daemon.cleanup();
  }
  await sim?.stop();
});

async function simConfig(cfg) {
  const r = await fetch(`${sim.base}/_sim/config`, { method: 'POST', headers: json, body: JSON.stringify(cfg) });
  assert.equal(r.status, 200);
}

/** Which document path template a concrete path belongs to. */
function template(path) {
  if (path in doc.paths) return path;
  if (/^\/v1\/payments\/.+\/cancel$/.test(path)) return '/v1/payments/{payment_id}/cancel';
  if (/^\/v1\/payments\/.+$/.test(path)) return '/v1/payments/{payment_id}';
  if (/^\/console\/.+$/.test(path)) return '/console/{asset}';
  throw new Error(`no document path for ${path}`);
}

function validator(key, schema) {
  if (!validators.has(key)) validators.set(key, ajv.compile(schema));
  return validators.get(key);
}

/**
 * Sends a request to the admin (or public) listener and validates the reply against the
 * document. The operation is the one of `method` (for a 405, the one of `as`, i.e. the path's
 * documented operation whose responses list the 405). Returns {status, body, text, headers}.
 */
async function call(method, path, { listener = 'admin', headers = {}, body, as } = {}) {
  const base = listener === 'admin' ? daemon.admin : daemon.base;
  const r = await fetch(base + path, { method: method.toUpperCase(), headers, body });
  const text = await r.text();
  const tpl = template(path.split('?')[0]);
  const op = doc.paths[tpl][(as ?? method).toLowerCase()];
  const where = `${method.toUpperCase()} ${path} -> ${r.status}`;
  assert.ok(op, `${where}: no documented operation ${as ?? method} ${tpl}`);
  const resp = op.responses[String(r.status)];
  assert.ok(resp, `${where}: status not documented; body ${text}`);
  seen.add(`${(as ?? method).toLowerCase()} ${tpl} ${r.status}`);
  let parsed = text;
  if (resp.content) {
    const ctype = (r.headers.get('content-type') || '').split(';')[0].trim();
    assert.ok(resp.content[ctype], `${where}: content type ${ctype} not documented`);
    if (ctype === 'application/json') parsed = JSON.parse(text);
    const v = validator(`${tpl} ${as ?? method} ${r.status} ${ctype}`, resp.content[ctype].schema);
    assert.ok(v(parsed), `${where}: reply does not match the document: ${ajv.errorsText(v.errors)}\n${text.slice(0, 600)}`);
  } else {
    assert.equal(text, '', `${where}: undocumented body`);
  }
  for (const [name, h] of Object.entries(resp.headers ?? {})) {
    const value = r.headers.get(name);
    if (value === null) continue; // presence is asserted where the route promises it
    const v = validator(`${tpl} ${method} ${r.status} header ${name}`, h.schema);
    const typed = h.schema.type === 'integer' ? Number(value) : value;
    assert.ok(v(typed), `${where}: header ${name}: ${value}: ${ajv.errorsText(v.errors)}`);
  }
  return { status: r.status, body: parsed, text, headers: r.headers };
}

test('GET /openapi.json serves a valid OpenAPI 3.1 document, without a token', async () => {
  const r = await fetch(`${daemon.admin}/openapi.json`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/json');
  const served = await r.json();
  assert.equal(served.openapi, '3.1.0');
  // The validator checks it against the OpenAPI 3.1 schema and its own rules (refs resolve,
  // operation ids unique, path parameters declared ...); it throws on the first problem.
  await SwaggerParser.validate(structuredClone(served));
  doc = await SwaggerParser.dereference(structuredClone(served));
  // The served document is docs/openapi.yaml as it is now (a stale build fails here).
  const source = yaml.load(readFileSync(new URL('../../docs/openapi.yaml', import.meta.url), 'utf8'));
  assert.deepEqual(served, JSON.parse(JSON.stringify(source)));
  await call('get', '/openapi.json');
  await call('post', '/openapi.json', { as: 'get' });
});

test('health, readiness and metrics on both listeners', async () => {
  for (const listener of ['admin', 'public']) {
    assert.equal((await call('get', '/healthz', { listener })).status, 200);
    assert.equal((await call('get', '/readyz', { listener })).status, 200);
    const r = await call('post', '/healthz', { listener, as: 'get' });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET');
  }
  await call('put', '/readyz', { as: 'get' });
  const m = await call('get', '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.text, /^hookd_events_stored_total /m);
  await call('post', '/metrics', { as: 'get' });
});

test('the callback route: 200, duplicate, 400, 401, 405, 413, 415, then 429 once throttled', async () => {
  const cb = { payment_id: 'KOMPAY-OAS-1', order_id: 'ORD-OAS-1', status: 'PAID', amount: 5000 };
  const body = JSON.stringify(cb);
  const signed = { ...json, 'X-Callback-Api-Key': signCallback(body) };
  const ok = await call('post', '/v1/komerce/callback', { listener: 'public', headers: signed, body });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.duplicate, false);
  const dup = await call('post', '/v1/komerce/callback', { listener: 'public', headers: signed, body });
  assert.deepEqual(dup.body, { ...ok.body, duplicate: true });
  const bad = JSON.stringify({ payment_id: 'KOMPAY-OAS-2' });
  const r400 = await call('post', '/v1/komerce/callback',
    { listener: 'public', headers: { ...json, 'X-Callback-Api-Key': signCallback(bad) }, body: bad });
  assert.equal(r400.status, 400);
  assert.match(r400.body.error, /status/);
  assert.equal((await call('post', '/v1/komerce/callback',
    { listener: 'public', headers: { ...json, 'X-Callback-Api-Key': 'deadbeef' }, body })).status, 401);
  const r405 = await call('get', '/v1/komerce/callback', { listener: 'public', as: 'post' });
  assert.equal(r405.status, 405);
  assert.equal(r405.headers.get('allow'), 'POST');
  const big = JSON.stringify({ ...cb, pad: 'x'.repeat(4096) });
  assert.equal((await call('post', '/v1/komerce/callback',
    { listener: 'public', headers: { ...json, 'X-Callback-Api-Key': signCallback(big) }, body: big })).status, 413);
  assert.equal((await call('post', '/v1/komerce/callback',
    { listener: 'public', headers: { 'Content-Type': 'text/plain', 'X-Callback-Api-Key': signCallback(body) }, body })).status, 415);
  // Spend the source's budget of failed signatures (20): then 429 with Retry-After.
  let last;
  for (let i = 0; i < 25 && (last === undefined || last.status !== 429); i++) {
    last = await call('post', '/v1/komerce/callback', { listener: 'public', headers: { ...json, 'X-Callback-Api-Key': 'bad' }, body });
  }
  assert.equal(last.status, 429);
  assert.match(last.headers.get('retry-after'), /^[0-9]+$/);
  // A correctly signed callback is never refused for it.
  assert.equal((await postCallback(daemon, { ...cb, payment_id: 'KOMPAY-OAS-3' })).status, 200);
});

test('GET /v1/methods: 504 and 502 while Komerce fails (nothing cached), then 200; 401, 405', async () => {
  await simConfig({ slow_ms: 1500 });
  assert.equal((await call('get', '/v1/methods', { headers: auth })).status, 504);
  await simConfig({ slow_ms: 0, fail_status: 500, fail_count: 1 });
  const r502 = await call('get', '/v1/methods', { headers: auth });
  assert.equal(r502.status, 502);
  assert.equal(r502.body.upstream.http_status, 500);
  const ok = await call('get', '/v1/methods', { headers: auth });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.stale, false);
  assert.ok(ok.body.data.length > 0);
  const r401 = await call('get', '/v1/methods', { headers: { Authorization: 'Bearer wrong-token' } });
  assert.equal(r401.status, 401);
  assert.equal(r401.headers.get('www-authenticate'), 'Bearer realm="komerce-hookd"');
  await call('get', '/v1/methods');
  await call('post', '/v1/methods', { headers: auth, as: 'get' });
});

const createBody = (order) => JSON.stringify({
  order_id: order, payment_type: 'bank_transfer', channel_code: 'BCA', amount: 100000,
  customer: { name: 'Budi', email: 'budi@example.com', phone: '081234567890' },
});
let created; // a payment id created through the API
let createdVa; // its VA number

/** Sends raw bytes to the public listener and returns everything it answers until it closes. */
function rawExchange(bytes) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ host: '127.0.0.1', port: daemon.port }, () => sock.write(bytes));
    const chunks = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
}

test('the callback route: 408 for a request still incomplete at server.request_timeout', async () => {
  const t0 = Date.now();
  const raw = await rawExchange('POST /v1/komerce/callback HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  const waited = Date.now() - t0;
  const m = /^HTTP\/1\.1 (\d{3}) [^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(raw);
  assert.ok(m, `not one HTTP reply: ${JSON.stringify(raw)}`);
  assert.equal(m[1], '408');
  assert.ok(waited >= 2500, `answered after ${waited} ms, before the deadline`);
  assert.equal((raw.match(/^HTTP\/1\./gm) || []).length, 1, 'one status line');
  const resp = doc.paths['/v1/komerce/callback'].post.responses['408'];
  assert.match(m[2], /^Content-Type: application\/json$/mi);
  const v = validator('/v1/komerce/callback post 408 application/json', resp.content['application/json'].schema);
  assert.ok(v(JSON.parse(m[3])), ajv.errorsText(v.errors));
  seen.add('post /v1/komerce/callback 408');
});

test('POST /v1/payments: 201, 400, 401, 405, 413, 415, 502, 504', async () => {
  const ok = await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('OAS-1') });
  assert.equal(ok.status, 201);
  created = ok.body.data.payment_id;
  createdVa = ok.body.data.va_number;
  const r400 = await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: JSON.stringify({ order_id: 'OAS-2' }) });
  assert.equal(r400.status, 400);
  assert.ok(r400.body.field && r400.body.rule);
  const reserved = await call('post', '/v1/payments',
    { headers: { ...auth, ...json }, body: JSON.stringify({ ...JSON.parse(createBody('OAS-3')), callback_url: 'http://x' }) });
  assert.equal(reserved.body.field, 'callback_url');
  assert.equal((await call('post', '/v1/payments', { headers: json, body: createBody('OAS-4') })).status, 401);
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, 'Content-Type': 'text/plain' }, body: createBody('OAS-5') })).status, 415);
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('x'.repeat(3000)) })).status, 413);
  assert.equal((await call('put', '/v1/payments', { headers: auth, as: 'post' })).status, 405);
  await simConfig({ fail_status: 503, fail_count: 1 });
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('OAS-6') })).status, 502);
  await simConfig({ slow_ms: 1500 });
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('OAS-7') })).status, 504);
  await simConfig({ slow_ms: 0 });
});

test('POST /v1/payments/track: 201, 400, 401, 409, 413, 415', async () => {
  const track = { payment_id: 'KPAY-5292/KM/2026', order_id: 'ORD-TRACK', amount: 25000, expires_at: '2030-01-01T00:00:00Z' };
  const ok = await call('post', '/v1/payments/track', { headers: { ...auth, ...json }, body: JSON.stringify(track) });
  assert.equal(ok.status, 201);
  assert.equal(ok.body.payment.origin, 'track');
  assert.equal((await call('post', '/v1/payments/track', { headers: { ...auth, ...json }, body: JSON.stringify(track) })).status, 409);
  const r400 = await call('post', '/v1/payments/track', { headers: { ...auth, ...json }, body: JSON.stringify({ ...track, amount: -1 }) });
  assert.equal(r400.body.field, 'amount');
  assert.equal((await call('post', '/v1/payments/track', { headers: json, body: JSON.stringify(track) })).status, 401);
  assert.equal((await call('post', '/v1/payments/track', { headers: { ...auth, 'Content-Type': 'text/plain' }, body: '{}' })).status, 415);
  assert.equal((await call('post', '/v1/payments/track', { headers: { ...auth, ...json }, body: JSON.stringify({ ...track, pad: 'x'.repeat(3000) }) })).status, 413);
});

test('GET /v1/payments/{id}: 200 (an id with slashes), 401, 404, 405', async () => {
  const r = await call('get', `/v1/payments/${encodeURIComponent('KPAY-5292/KM/2026')}`, { headers: auth });
  assert.equal(r.status, 200);
  assert.equal(r.body.payment.payment_id, 'KPAY-5292/KM/2026');
  const c = await call('get', `/v1/payments/${encodeURIComponent(created)}`, { headers: auth });
  assert.equal(c.body.events.length, 1);
  assert.equal(c.body.events[0].source, 'api');
  const cb = await call('get', '/v1/payments/KOMPAY-OAS-1', { headers: auth });
  assert.equal(cb.body.events[0].callback.order_id, 'ORD-OAS-1');
  assert.equal((await call('get', '/v1/payments/KOMPAY-OAS-1', {})).status, 401);
  const nf = await call('get', '/v1/payments/NOPE-1', { headers: auth });
  assert.equal(nf.status, 404);
  assert.equal(nf.body.payment_id, 'NOPE-1');
  const r405 = await call('delete', '/v1/payments/KOMPAY-OAS-1', { headers: auth, as: 'get' });
  assert.match(r405.headers.get('allow'), /GET/);
});

test('POST /v1/payments/{id}/cancel: 502, 504, 200, then 409; 401, 404, 405, 413', async () => {
  const path = `/v1/payments/${encodeURIComponent(created)}/cancel`;
  await simConfig({ fail_status: 500, fail_count: 1 });
  assert.equal((await call('post', path, { headers: auth })).status, 502);
  await simConfig({ slow_ms: 1500 });
  assert.equal((await call('post', path, { headers: auth })).status, 504);
  await simConfig({ slow_ms: 0 });
  const ok = await call('post', path, { headers: auth });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.body.conflict, false);
  const again = await call('post', path, { headers: auth });
  assert.equal(again.status, 409);
  assert.equal(again.body.payment.status, 'CANCELED');
  assert.equal((await call('post', path, {})).status, 401);
  assert.equal((await call('post', '/v1/payments/NOPE-2/cancel', { headers: auth })).status, 404);
  assert.equal((await call('put', path, { headers: auth, as: 'post' })).status, 405);
  assert.equal((await call('post', path, { headers: { ...auth, ...json }, body: 'x'.repeat(4096) })).status, 413);
});

test('GET /v1/events: pages with a cursor, 400, 401, 405', async () => {
  const first = await call('get', '/v1/events?limit=2', { headers: auth });
  assert.equal(first.body.events.length, 2);
  assert.equal(typeof first.body.next_after_id, 'number');
  const rest = await call('get', `/v1/events?limit=1000&after_id=${first.body.next_after_id}`, { headers: auth });
  assert.equal(rest.body.next_after_id, null);
  assert.ok(rest.body.events.every((e) => e.id > first.body.next_after_id));
  const filtered = await call('get', `/v1/events?source=api&status=CANCELED&payment_id=${encodeURIComponent(created)}`, { headers: auth });
  assert.equal(filtered.body.events.length, 1);
  await call('get', '/v1/events?since=2020-01-01T00:00:00Z&until=2100-01-01', { headers: auth });
  for (const bad of ['limit=0', 'limit=1001', 'status=LOST', 'source=mail', 'since=yesterday', 'after_id=-1']) {
    const r = await call('get', `/v1/events?${bad}`, { headers: auth });
    assert.equal(r.status, 400, bad);
    assert.ok(r.body.error.startsWith(bad.split('=')[0]), r.body.error);
  }
  assert.equal((await call('get', '/v1/events', {})).status, 401);
  assert.equal((await call('post', '/v1/events', { headers: auth, as: 'get' })).status, 405);
});

test('GET /v1/payments: search by id, order id and VA number, lists, pages; 400, 401, 405', async () => {
  const byId = await call('get', `/v1/payments?q=${encodeURIComponent(created)}`, { headers: auth });
  assert.equal(byId.body.payments[0].payment_id, created);
  assert.equal(byId.body.payments[0].matched, 'payment_id');
  const byVa = await call('get', `/v1/payments?q=${createdVa}`, { headers: auth });
  assert.equal(byVa.body.payments[0].matched, 'va_number');
  const byOrder = await call('get', '/v1/payments?q=ORD-OAS-1', { headers: auth });
  assert.deepEqual(byOrder.body.payments.map((p) => p.matched), ['order_id', 'order_id']);
  const first = await call('get', '/v1/payments?limit=1', { headers: auth });
  assert.equal(first.body.payments.length, 1);
  assert.equal(typeof first.body.next_after, 'string');
  const next = await call('get', `/v1/payments?limit=1&after=${encodeURIComponent(first.body.next_after)}`, { headers: auth });
  assert.notEqual(next.body.payments[0].payment_id, first.body.payments[0].payment_id);
  await call('get', '/v1/payments?status=PENDING&stale=true', { headers: auth });
  await call('get', '/v1/payments?conflict=true', { headers: auth });
  for (const bad of ['limit=0', 'limit=501', 'status=LOST', 'stale=maybe', 'conflict=2', 'after=x', 'q=%20', 'stal=true']) {
    const r = await call('get', `/v1/payments?${bad}`, { headers: auth });
    assert.equal(r.status, 400, bad);
    assert.equal(r.body.field, bad.split('=')[0]);
  }
  assert.equal((await call('get', '/v1/payments', {})).status, 401);
  assert.equal((await call('delete', '/v1/payments', { headers: auth, as: 'get' })).status, 405);
});

test('GET /v1/outbox and POST /v1/outbox/replay: 200, 400, 401, 404, 405, 413, 415', async () => {
  const backlog = await call('get', '/v1/outbox?state=pending&sink=oas', { headers: auth });
  assert.ok(backlog.body.outbox.length > 0);
  assert.ok(backlog.body.outbox.every((o) => o.sink === 'oas' && o.state === 'pending'));
  const page = await call('get', '/v1/outbox?limit=1', { headers: auth });
  assert.equal(typeof page.body.next_after_id, 'number');
  await call('get', `/v1/outbox?after_id=${page.body.next_after_id}&limit=1000`, { headers: auth });
  for (const bad of ['state=lost', 'sink=a%20b', 'limit=1001', 'after_id=-1', 'states=dead']) {
    const r = await call('get', `/v1/outbox?${bad}`, { headers: auth });
    assert.equal(r.status, 400, bad);
    assert.equal(r.body.field, bad.split('=')[0]);
  }
  assert.equal((await call('get', '/v1/outbox', {})).status, 401);
  assert.equal((await call('post', '/v1/outbox', { headers: auth, as: 'get' })).status, 405);

  const eventId = backlog.body.outbox[0].event_id;
  const replay = (body, headers = { ...auth, ...json }) =>
    call('post', '/v1/outbox/replay', { headers, body: JSON.stringify(body) });
  const ok = await replay({ event_id: eventId, sink: 'oas' });
  assert.equal(ok.status, 200);
  assert.equal(ok.body.queued, 0); // still pending: not queued twice
  assert.equal((await replay({ event_id: eventId, sink: null })).status, 200);
  const r400 = await replay({ event_id: eventId, sink: 'nope' });
  assert.equal(r400.body.field, 'sink');
  assert.equal((await replay({ event_id: 0 })).body.field, 'event_id');
  const nf = await replay({ event_id: 999999 });
  assert.equal(nf.status, 404);
  assert.equal(nf.body.event_id, 999999);
  assert.equal((await replay({ event_id: eventId }, json)).status, 401);
  assert.equal((await replay({ event_id: eventId }, { ...auth, 'Content-Type': 'text/plain' })).status, 415);
  assert.equal((await replay({ event_id: eventId, pad: 'x'.repeat(3000) })).status, 413);
  assert.equal((await call('get', '/v1/outbox/replay', { headers: auth, as: 'post' })).status, 405);
});

test('GET /v1/stats: 200, 400, 401, 405', async () => {
  const r = await call('get', '/v1/stats', { headers: auth });
  assert.equal(r.status, 200);
  assert.ok(r.body.stats.events.total > 0);
  assert.deepEqual(r.body.sinks, ['oas']);
  const events = await call('get', '/v1/events?limit=1000', { headers: auth });
  assert.equal(r.body.last_event_id, events.body.events.at(-1).id);
  const unknown = await call('get', '/v1/stats?since=1', { headers: auth });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.field, 'since');
  assert.equal((await call('get', '/v1/stats', {})).status, 401);
  assert.equal((await call('put', '/v1/stats', { headers: auth, as: 'get' })).status, 405);
});

test('the console: the page and its assets without a token, 304, 404, 405', async () => {
  const page = await call('get', '/');
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('cache-control'), 'no-cache');
  assert.equal(page.headers.get('x-frame-options'), 'DENY');
  const assets = [...page.text.matchAll(/(?:src|href)="(\/console\/[^"]+)"/g)].map((m) => m[1]);
  assert.ok(assets.some((a) => a.endsWith('.js')) && assets.some((a) => a.endsWith('.css')), assets.join());
  for (const a of new Set(assets)) {
    const r = await call('get', a);
    assert.equal(r.status, 200, a);
    assert.match(r.headers.get('cache-control'), /immutable/);
    const again = await call('get', a, { headers: { 'If-None-Match': r.headers.get('etag') } });
    assert.equal(again.status, 304, a);
  }
  assert.equal((await call('get', '/', { headers: { 'If-None-Match': page.headers.get('etag') } })).status, 304);
  assert.equal((await call('get', '/console/app.js')).status, 404);
  assert.equal((await call('post', '/', { as: 'get' })).status, 405);
  assert.equal((await call('post', assets[0], { as: 'get' })).status, 405);
});

test('coverage: every operation with a success and an error; every documented status but UNEXERCISED', () => {
  const missing = [];
  for (const [tpl, item] of Object.entries(doc.paths)) {
    for (const method of ['get', 'post', 'put', 'delete', 'patch']) {
      if (!item[method]) continue;
      const statuses = Object.keys(item[method].responses);
      const hit = statuses.filter((s) => seen.has(`${method} ${tpl} ${s}`));
      assert.ok(hit.some((s) => s.startsWith('2')), `${method} ${tpl}: no success exercised`);
      assert.ok(hit.some((s) => !s.startsWith('2')), `${method} ${tpl}: no error exercised`);
      for (const s of statuses) if (!hit.includes(s)) missing.push(`${method} ${tpl} ${s}`);
    }
  }
  assert.deepEqual(missing.sort(), [...UNEXERCISED.keys()].sort());
});
