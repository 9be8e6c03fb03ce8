// The gateway as the process run-local starts: flags, PLAINTEXT_REFUSED,
// "listening on URL", HTTPS (HTTP/1.1 and HTTP/2, HSTS), mutual TLS to a
// service, and a graceful SIGTERM that lets a call under way finish.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { consoleDir, makePki, Stub, waitFor } from './harness.js';

const main = path.join(consoleDir, 'dist', 'server', 'main.js');

interface Proc { child: ChildProcess; url: Promise<string>; exit: Promise<{ code: number | null; stderr: string }>; stderr(): string }

function run(args: string[]): Proc {
  const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  const exit = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
  const url = new Promise<string>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /^listening on (\S+)$/.exec(line);
      if (m && m[1]) resolve(m[1]);
    });
    void exit.then((e) => reject(new Error(`exited ${e.code}: ${e.stderr}`)));
  });
  url.catch(() => undefined);
  return { child, url, exit, stderr: () => stderr };
}

describe('the gateway process', () => {
  let pki: string;
  let stub: Stub;
  let tlsStub: http2.Http2SecureServer;
  let tlsStubAddress: string;

  before(async () => {
    pki = makePki();
    stub = await new Stub().start();
    // The same stub services behind mutual TLS, as the platform runs them.
    tlsStub = http2.createSecureServer({
      cert: fs.readFileSync(path.join(pki, 'booking.crt')), key: fs.readFileSync(path.join(pki, 'booking.key')),
      ca: fs.readFileSync(path.join(pki, 'ca.crt')), requestCert: true, rejectUnauthorized: true,
    }, connectNodeAdapter({ routes: (r) => stub.routes(r) }));
    await new Promise<void>((resolve) => tlsStub.listen(0, '127.0.0.1', resolve));
    tlsStubAddress = `127.0.0.1:${(tlsStub.address() as net.AddressInfo).port}`;
  });
  after(async () => {
    await new Promise<void>((resolve) => tlsStub.close(() => resolve()));
    await stub.stop();
  });

  const upstreams = (a: string) => [`--inventory=${a}`, `--booking=${a}`, `--billing=${a}`, `--usage=${a}`, `--notify=${a}`];

  it('refuses plain HTTP off loopback (PLAINTEXT_REFUSED) and unknown flags, exit 2', async () => {
    const a = run(['--listen=0.0.0.0:0', ...upstreams(stub.address)]);
    const ea = await a.exit;
    assert.equal(ea.code, 2);
    assert.match(ea.stderr, /^labshare-console: PLAINTEXT_REFUSED: plain HTTP is served on loopback only; give --https_cert and --https_key to listen on 0\.0\.0\.0\n/);
    const b = run(['--listen=127.0.0.1:0', '--frobnicate=1', ...upstreams(stub.address)]);
    const eb = await b.exit;
    assert.equal(eb.code, 2);
    assert.match(eb.stderr, /^labshare-console: unknown flag --frobnicate\n/);
    const c = run(['--listen=127.0.0.1:0', '--booking=10.1.2.3:443', '--inventory=127.0.0.1:1', '--billing=127.0.0.1:1', '--usage=127.0.0.1:1', '--notify=127.0.0.1:1']);
    const ec = await c.exit;
    assert.equal(ec.code, 2, 'refused while reading the flags, before listening');
    assert.match(ec.stderr, /^labshare-console: PLAINTEXT_REFUSED: --booking=10\.1\.2\.3:443 is not loopback/);
  });

  it('serves HTTPS (HTTP/1.1 and HTTP/2, HSTS), calls a service over mutual TLS, stops gracefully on SIGTERM', async () => {
    const ca = fs.readFileSync(path.join(pki, 'ca.crt'));
    const p = run([
      '--listen=127.0.0.1:0', ...upstreams(tlsStubAddress),
      `--tls_ca=${path.join(pki, 'ca.crt')}`, `--tls_cert=${path.join(pki, 'console.crt')}`, `--tls_key=${path.join(pki, 'console.key')}`,
      `--https_cert=${path.join(pki, 'console.crt')}`, `--https_key=${path.join(pki, 'console.key')}`,
      '--access_log_sample=0', '--shutdown_drain=0s',
    ]);
    try {
      const url = await p.url;
      assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const h1 = await new Promise<{ status: number; hsts: unknown; body: string }>((resolve, reject) => {
        https.get(`${url}/healthz`, { ca }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => { body += c.toString(); });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, hsts: res.headers['strict-transport-security'], body }));
        }).on('error', reject);
      });
      assert.deepEqual(h1, { status: 200, hsts: 'max-age=31536000; includeSubDomains', body: 'ok\n' });

      // HTTP/2 (what gRPC clients need), a call through mutual TLS upstream.
      const session = http2.connect(url, { ca });
      const call = (name: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
        const body = JSON.stringify({ name });
        const s = session.request({
          ':method': 'POST', ':path': '/labshare.booking.v1.BookingService/GetBooking', 'content-type': 'application/json',
          'connect-protocol-version': '1', authorization: 'Bearer tls-token', 'content-length': String(body.length),
        });
        let status = 0;
        let out = '';
        s.on('response', (h) => { status = Number(h[':status']); });
        s.on('data', (c: Buffer) => { out += c.toString(); });
        s.on('end', () => resolve({ status, body: out }));
        s.on('error', reject);
        s.end(body);
      });
      const r = await call('bookings/tls');
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), { name: 'bookings/tls', user: 'users/for-tls-token' });
      const ready = await new Promise<number>((resolve, reject) => {
        https.get(`${url}/readyz`, { ca }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
      });
      assert.equal(ready, 200);

      // SIGTERM while a call waits at its service: the call still finishes.
      let release!: () => void;
      stub.slowGate = new Promise<void>((resolve) => { release = resolve; });
      let started = false;
      stub.slowStarted = () => { started = true; };
      const slow = call('bookings/slow');
      await waitFor(() => started);
      p.child.kill('SIGTERM');
      await waitFor(() => p.stderr().includes('"msg":"stopping"'));
      release();
      const done = await slow;
      assert.equal(done.status, 200);
      assert.equal(JSON.parse(done.body).name, 'bookings/slow');
      session.close();
      const e = await p.exit;
      assert.equal(e.code, 0);
      assert.match(e.stderr, /"msg":"stopping","signal":"SIGTERM"/);
    } finally {
      stub.slowGate = undefined;
      stub.slowStarted = undefined;
      if (p.child.exitCode === null) p.child.kill('SIGKILL');
    }
  });
});
