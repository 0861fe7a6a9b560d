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
    '[server]\nmax_body = 2048\n' +
    `[komerce]\nbase_url = ${sim.base}/user\ntimeout_ms = 1000\nconnect_timeout_ms = 1000\n` +
    '[reconcile]\nenabled = false\n');
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

test('POST /v1/payments: 201, 400, 401, 405, 413, 415, 502, 504', async () => {
  const ok = await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('OAS-1') });
  assert.equal(ok.status, 201);
  created = ok.body.data.payment_id;
  const r400 = await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: JSON.stringify({ order_id: 'OAS-2' }) });
  assert.equal(r400.status, 400);
  assert.ok(r400.body.field && r400.body.rule);
  const reserved = await call('post', '/v1/payments',
    { headers: { ...auth, ...json }, body: JSON.stringify({ ...JSON.parse(createBody('OAS-3')), callback_url: 'http://x' }) });
  assert.equal(reserved.body.field, 'callback_url');
  assert.equal((await call('post', '/v1/payments', { headers: json, body: createBody('OAS-4') })).status, 401);
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, 'Content-Type': 'text/plain' }, body: createBody('OAS-5') })).status, 415);
  assert.equal((await call('post', '/v1/payments', { headers: { ...auth, ...json }, body: createBody('x'.repeat(3000)) })).status, 413);
  assert.equal((await call('get', '/v1/payments', { headers: auth, as: 'post' })).status, 405);
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
