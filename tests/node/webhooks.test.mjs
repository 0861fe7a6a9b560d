// Standard Webhooks, checked by verifiers nobody here wrote: the official `standardwebhooks`
// package and Svix's `svix` package verify REAL deliveries of build/komerce-hookd to a small
// HTTP receiver on a loopback port chosen here. Covers a raw secret, a rotation (two secrets:
// a verifier holding only the old one and one holding only the new one both accept), a retried
// delivery (500 first, then 2xx: the same webhook-id), and that the libraries reject a tampered
// body, a wrong secret and a timestamp outside their tolerance.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { Webhook as SvixWebhook } from 'svix';
import { Daemon, postCallback, waitFor } from './lib/hookd.mjs';

const NEW_SECRET = 'whsec_' + randomBytes(24).toString('base64');
const OLD_SECRET = 'whsec_' + randomBytes(32).toString('base64');
const RAW_SECRET = 'raw-sink-secret-' + randomBytes(8).toString('hex'); // used as its bytes
const N_PAYMENTS = 6;

let daemon;
let receiver;
const deliveries = { rotated: [], raw: [], flaky: [] }; // path -> [{headers, body, status}]
const flakySeen = new Map(); // webhook-id -> attempts

function startReceiver() {
  return new Promise((res) => {
    const srv = createServer((req, rsp) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const path = req.url.slice(1);
        let status = 204;
        if (path === 'flaky') {
          const n = (flakySeen.get(req.headers['webhook-id']) || 0) + 1;
          flakySeen.set(req.headers['webhook-id'], n);
          status = n === 1 ? 500 : 204; // every event fails once, then is accepted
        }
        (deliveries[path] ??= []).push({ headers: { ...req.headers }, body, status, at: Date.now() });
        rsp.writeHead(status);
        rsp.end();
      });
    });
    srv.listen(0, '127.0.0.1', () => res(srv));
  });
}

const verifiers = (secret, opts) => [
  ['standardwebhooks', new StandardWebhook(secret, opts)],
  ['svix', new SvixWebhook(secret, opts)],
];

before(async () => {
  receiver = await startReceiver();
  const url = `http://127.0.0.1:${receiver.address().port}`;
  daemon = new Daemon(
    '[reconcile]\nenabled = false\n' +
    // a rotation: the new secret first, the old one still signing
    `[sink.rotated]\ntype = http\nurl = ${url}/rotated\nsecret = ${NEW_SECRET}, ${OLD_SECRET}\n` +
    `[sink.raw]\ntype = http\nurl = ${url}/raw\nsecret = ${RAW_SECRET}\nsignature = standardwebhooks\n` +
    `[sink.flaky]\ntype = http\nurl = ${url}/flaky\nsecret = ${NEW_SECRET}\n`);
  await daemon.start();
  for (let i = 0; i < N_PAYMENTS; i++) {
    const pid = i === 0 ? 'KPAY-5292/KM/2026' : `KOMPAY-NODE-${i}`;
    const r1 = await postCallback(daemon, { payment_id: pid, order_id: `ORD-${i}`, status: 'PENDING', amount: 1000 * (i + 1) });
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    const r2 = await postCallback(daemon, {
      payment_id: pid, order_id: `ORD-${i}`, status: 'PAID', amount: 1000 * (i + 1),
      paid_at: '2026-08-12T10:15:30.000Z', note: 'ünïcödé ✓',
    });
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
  }
  // 2 events per payment, each to every sink; the flaky sink sees each event twice.
  await waitFor(() => deliveries.rotated.length >= 2 * N_PAYMENTS && deliveries.raw.length >= 2 * N_PAYMENTS &&
    deliveries.flaky.filter((d) => d.status === 204).length >= 2 * N_PAYMENTS, 30000, 'every delivery');
});

after(async () => {
  if (daemon) {
    const st = await daemon.stop();
    assert.deepEqual(st, { code: 0, sig: null }, daemon.log);
    await daemon.cleanup();
  }
  receiver?.close();
});

test('every delivery carries the Standard Webhooks headers and no legacy ones', () => {
  for (const d of [...deliveries.rotated, ...deliveries.raw, ...deliveries.flaky]) {
    const doc = JSON.parse(d.body);
    assert.equal(d.headers['webhook-id'], `evt_${doc.event_id}`);
    assert.match(d.headers['webhook-timestamp'], /^[0-9]{10}$/);
    assert.ok(Math.abs(Number(d.headers['webhook-timestamp']) - d.at / 1000) < 60);
    assert.equal(d.headers['x-hookd-signature'], undefined);
    assert.equal(d.headers['content-type'], 'application/json');
  }
  const ids = new Set(deliveries.rotated.map((d) => d.headers['webhook-id']));
  assert.equal(ids.size, 2 * N_PAYMENTS, 'one webhook-id per event');
});

test('rotation: two signatures; verifiers holding only the new or only the old secret accept', () => {
  for (const d of deliveries.rotated) {
    const sigs = d.headers['webhook-signature'].split(' ');
    assert.equal(sigs.length, 2);
    for (const s of sigs) assert.match(s, /^v1,[A-Za-z0-9+/]{43}=$/);
    for (const secret of [NEW_SECRET, OLD_SECRET]) {
      for (const [lib, wh] of verifiers(secret)) {
        const doc = wh.verify(d.body, d.headers);
        assert.equal(`evt_${doc.event_id}`, d.headers['webhook-id'], lib);
        assert.ok(['PENDING', 'PAID'].includes(doc.status), lib);
      }
    }
  }
});

test('a raw secret is used as its bytes (base64 of it, or format raw, in the libraries)', () => {
  assert.equal(deliveries.raw.length, 2 * N_PAYMENTS);
  const b64 = Buffer.from(RAW_SECRET).toString('base64');
  for (const d of deliveries.raw) {
    assert.equal(d.headers['webhook-signature'].split(' ').length, 1);
    for (const [lib, wh] of [...verifiers(b64), ...verifiers(RAW_SECRET, { format: 'raw' })]) {
      const doc = wh.verify(d.body, d.headers);
      assert.equal(doc.payment_id.length > 0, true, lib);
    }
  }
});

test('a retried delivery has the same webhook-id and verifies each time', () => {
  const byId = new Map();
  for (const d of deliveries.flaky) {
    const id = d.headers['webhook-id'];
    if (!byId.has(id)) byId.set(id, []);
    byId.get(id).push(d);
  }
  assert.equal(byId.size, 2 * N_PAYMENTS);
  for (const [id, attempts] of byId) {
    assert.deepEqual(attempts.map((a) => a.status), [500, 204], id);
    assert.equal(attempts[0].body, attempts[1].body, 'the same document is sent again');
    for (const a of attempts) {
      for (const [lib, wh] of verifiers(NEW_SECRET)) {
        assert.equal(`evt_${wh.verify(a.body, a.headers).event_id}`, id, lib);
      }
    }
  }
});

test('the libraries reject a tampered body, a tampered id and a wrong secret', () => {
  const d = deliveries.rotated.find((x) => JSON.parse(x.body).status === 'PAID');
  const tampered = d.body.replace('"PAID"', '"PAYD"');
  assert.notEqual(tampered, d.body);
  const other = 'whsec_' + randomBytes(24).toString('base64');
  for (const [lib, wh] of verifiers(NEW_SECRET)) {
    assert.throws(() => wh.verify(tampered, d.headers), /No matching signature/, lib);
    assert.throws(() => wh.verify(d.body + ' ', d.headers), /No matching signature/, lib);
    assert.throws(() => wh.verify(d.body, { ...d.headers, 'webhook-id': 'evt_999999' }), /No matching signature/, lib);
    assert.throws(() => wh.verify(d.body, { ...d.headers, 'webhook-timestamp': String(Number(d.headers['webhook-timestamp']) - 1) }), /No matching signature/, lib);
  }
  for (const [lib, wh] of verifiers(other)) {
    assert.throws(() => wh.verify(d.body, d.headers), /No matching signature/, lib);
  }
});

test('the libraries reject an untouched delivery once its timestamp is outside their tolerance', (t) => {
  const d = deliveries.raw[0];
  const b64 = Buffer.from(RAW_SECRET).toString('base64');
  const sent = Number(d.headers['webhook-timestamp']) * 1000;
  // Now it verifies ...
  for (const [, wh] of verifiers(b64)) wh.verify(d.body, d.headers);
  // ... ten minutes later it does not (the libraries allow 5 minutes), nor ten minutes early.
  t.mock.method(Date, 'now', () => sent + 10 * 60 * 1000);
  for (const [lib, wh] of verifiers(b64)) {
    assert.throws(() => wh.verify(d.body, d.headers), /timestamp too old/, lib);
  }
  Date.now.mock.mockImplementation(() => sent - 10 * 60 * 1000);
  for (const [lib, wh] of verifiers(b64)) {
    assert.throws(() => wh.verify(d.body, d.headers), /timestamp too new/, lib);
  }
});
