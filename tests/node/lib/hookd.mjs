// Test harness for the node suites: starts the real build/komerce-hookd (and build/komerce-sim)
// on loopback ports chosen here, with a temporary directory, waits for /readyz with a deadline,
// and stops them at the end. The same steps as tests/integration/harness.c, in JavaScript.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const HOOKD_BIN = process.env.HOOKD_BIN || join(root, 'build', 'komerce-hookd');
export const SIM_BIN = process.env.SIM_BIN || join(root, 'build', 'komerce-sim');
export const CALLBACK_KEY = 'node-callback-key-0001';
export const ADMIN_TOKEN = 'node-admin-token-0123456789';
export const API_KEY = 'node-komerce-api-key';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls fn until it returns a truthy value or timeoutMs passes; returns that value. */
export async function waitFor(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export class Daemon {
  /** extra: INI text appended to the generated configuration, or a function of the daemon
   * (its ports are chosen by then) that returns it. */
  constructor(extra = '', env = {}) {
    this.extra = extra;
    this.env = env;
    this.dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'hookd-node-'));
    this.conf = join(this.dir, 'hookd.conf');
    this.db = join(this.dir, 'events.db');
    this.logPath = join(this.dir, 'hookd.log');
    this.proc = null;
  }

  async start() {
    this.port = await freePort();
    do this.adminPort = await freePort(); while (this.adminPort === this.port);
    writeFileSync(this.conf,
      `[server]\nlisten = 127.0.0.1:${this.port}\n` +
      `[admin]\nlisten = 127.0.0.1:${this.adminPort}\ntoken = ${ADMIN_TOKEN}\n` +
      `[komerce]\napi_key = ${API_KEY}\ncallback_keys = ${CALLBACK_KEY}\nconfirm_paid = false\n` +
      `[store]\npath = ${this.db}\n[log]\nlevel = debug\n` +
      `${typeof this.extra === 'function' ? this.extra(this) : this.extra}\n`);
    if (!existsSync(HOOKD_BIN)) throw new Error(`${HOOKD_BIN} not built (run make)`);
    this.log = '';
    this.proc = spawn(HOOKD_BIN, ['-c', this.conf], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ...this.env },
    });
    this.proc.stderr.on('data', (d) => { this.log += d.toString(); });
    this.exited = new Promise((res) => this.proc.on('exit', (code, sig) => res({ code, sig })));
    let gone = false;
    this.exited.then(() => { gone = true; });
    await waitFor(async () => {
      if (gone) throw new Error(`komerce-hookd exited during start-up:\n${this.log}`);
      try {
        const r = await fetch(`${this.admin}/readyz`);
        return r.status === 200;
      } catch {
        return false;
      }
    }, 10000, 'komerce-hookd /readyz');
    return this;
  }

  get base() { return `http://127.0.0.1:${this.port}`; }
  get admin() { return `http://127.0.0.1:${this.adminPort}`; }

  /** SIGTERM, then the exit status (the daemon must drain and exit 0). */
  async stop() {
    if (this.proc === null) return null;
    this.proc.kill('SIGTERM');
    const st = await this.exited;
    this.proc = null;
    writeFileSync(this.logPath, this.log);
    return st;
  }

  async cleanup() {
    if (this.proc !== null) {
      this.proc.kill('SIGKILL');
      await this.exited;
      this.proc = null;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Lowercase hex HMAC-SHA256 of body with key: the X-Callback-Api-Key Komerce sends. */
export function signCallback(body, key = CALLBACK_KEY) {
  return createHmac('sha256', key).update(body).digest('hex');
}

/** POSTs a signed callback; returns {status, body (parsed when JSON), headers}. */
export async function postCallback(d, doc, { key = CALLBACK_KEY, headers = {} } = {}) {
  const body = typeof doc === 'string' ? doc : JSON.stringify(doc);
  const r = await fetch(`${d.base}/v1/komerce/callback`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Callback-Api-Key': signCallback(body, key), ...headers },
    body,
  });
  const text = await r.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, body: parsed, headers: r.headers };
}

export class Sim {
  async start(args = []) {
    this.dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'hookd-node-sim-'));
    const portFile = join(this.dir, 'port');
    if (!existsSync(SIM_BIN)) throw new Error(`${SIM_BIN} not built (run make)`);
    this.log = '';
    this.proc = spawn(SIM_BIN, ['--listen', '127.0.0.1:0', '--api-key', API_KEY, '--port-file', portFile, '--quiet', ...args],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr.on('data', (d) => { this.log += d.toString(); });
    this.exited = new Promise((res) => this.proc.on('exit', (code, sig) => res({ code, sig })));
    this.port = await waitFor(() => existsSync(portFile) && Number(readFileSync(portFile, 'utf8')), 10000, 'komerce-sim port file');
    return this;
  }

  get base() { return `http://127.0.0.1:${this.port}`; }

  async stop() {
    if (this.proc) {
      this.proc.kill('SIGTERM');
      await this.exited;
      this.proc = null;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
