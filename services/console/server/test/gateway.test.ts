// The gateway against stub services (real connect-node HTTP/2 servers from
// the generated descriptors): calls with a session or a bearer token, CSRF,
// error passthrough and sanitising, limits, rate limit, expiry, static files,
// health. Sessions here are created directly in the store; signin.test.ts
// creates them through the real provider.
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError, type Transport } from '@connectrpc/connect';
import { setLogSink, MESSAGES } from '../errors.js';
import { CSP } from '../http-util.js';
import type { Session } from '../sessions.js';
import {
  closedPort, errorInfo, gatewayError, FEED_TOKEN, newSession, waitFor, request, retryDelayMs, rpc, startGateway, Stub, tempDir, testConfig,
  type TestGateway,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const EXPORT_USAGE = 'labshare.usage.v1.UsageService/ExportUsage';
// W3C trace context's example: trace id 4bf92f35..., parent 00f067aa...
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE}-00f067aa0ba902b7-01`;
const HEX32 = /^[0-9a-f]{32}$/;
const SESSION = '__Host-labshare_session';

const logs: Record<string, unknown>[] = [];
setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));

function cookieHeaders(t: TestGateway, s: Session, extra: Record<string, string> = {}): Record<string, string> {
  return { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken, origin: t.origin, ...extra };
}

describe('gateway with stub services', () => {
  let stub: Stub;
  let t: TestGateway;
  let webRoot: string;

  before(async () => {
    stub = await new Stub().start();
    webRoot = tempDir('console-web-');
    fs.mkdirSync(path.join(webRoot, 'assets'));
    fs.writeFileSync(path.join(webRoot, 'index.html'), '<!doctype html><script type="module" src="/assets/app.js"></script>\n');
    fs.writeFileSync(path.join(webRoot, 'assets', 'app.js'), `console.log(${JSON.stringify('x'.repeat(4000))});\n`);
    fs.writeFileSync(path.join(webRoot, '.secret'), 'no');
    t = await startGateway((port) => testConfig({ upstream: stub.address, port, webRoot, bodyLimitBytes: 4096 }));
  });
  after(async () => {
    await t.stop();
    await stub.stop();
  });

  it('forwards a cookie call with the CSRF token, with the session token upstream', async () => {
    const s = newSession(t);
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
    assert.equal(a.status, 200);
    assert.deepEqual(a.json(), { name: 'bookings/b1', user: 'users/for-access-s' });
    assert.equal(stub.callsOf('GetBooking').at(-1)!.authorization, 'Bearer access-s');
    assert.equal(a.headers['content-security-policy'], CSP);
    assert.equal(a.headers['x-content-type-options'], 'nosniff');
    assert.equal(a.headers['referrer-policy'], 'no-referrer');
    assert.equal(a.headers['strict-transport-security'], undefined); // plain HTTP on loopback
  });

  it('refuses cookie calls without, with a wrong, or from another origin CSRF token (403 CSRF_TOKEN_INVALID), service not called', async () => {
    const s = newSession(t);
    const before = stub.calls.length;
    const cases: [string, Record<string, string>, string][] = [
      ['missing', { cookie: `${SESSION}=${s.id}`, origin: t.origin }, 'the x-csrf-token header is missing'],
      ['wrong', cookieHeaders(t, s, { 'x-csrf-token': 'x'.repeat(s.csrfToken.length) }), 'the x-csrf-token header does not match this session'],
      ['other session', cookieHeaders(t, s, { 'x-csrf-token': newSession(t).csrfToken }), 'the x-csrf-token header does not match this session'],
      ['cross-origin', cookieHeaders(t, s, { origin: 'https://evil.example' }), 'the request comes from another site (Origin does not match the console)'],
      ['origin null', cookieHeaders(t, s, { origin: 'null' }), 'the request comes from another site (Origin does not match the console)'],
    ];
    for (const [what, headers, message] of cases) {
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, headers);
      assert.equal(a.status, 403, what);
      assert.equal(a.json().code, 'permission_denied', what);
      assert.equal(a.json().message, message, what);
      const info = errorInfo(a)!;
      assert.equal(info.reason, 'CSRF_TOKEN_INVALID', what);
      assert.equal(info.domain, 'console.labshare', what);
    }
    assert.equal(stub.calls.length, before);
    // No Origin header at all (a same-origin fetch of some browsers) is fine with the token.
    const ok = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken });
    assert.equal(ok.status, 200);
  });

  it('passes a bearer token through without CSRF (bearer wins over a cookie)', async () => {
    const s = newSession(t);
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b2' }, {
      authorization: 'Bearer script-token', cookie: `${SESSION}=${s.id}`, origin: 'https://elsewhere.example',
    });
    assert.equal(a.status, 200);
    assert.equal(stub.callsOf('GetBooking').at(-1)!.authorization, 'Bearer script-token');
    assert.equal(a.json().user, 'users/for-script-token');
  });

  it('refuses a JSON body with a field the request does not have (invalid_argument), without calling the service', async () => {
    const before = stub.callsOf('GetBooking').length;
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b4', nmae: 'typo' }, { authorization: 'Bearer tok' });
    assert.equal(a.status, 400);
    assert.equal(a.json().code, 'invalid_argument');
    assert.match(a.json().message, /nmae/);
    assert.equal(stub.callsOf('GetBooking').length, before);
  });

  it('forwards a call without credentials without a token (the service decides)', async () => {
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b3' });
    assert.equal(a.status, 200);
    assert.equal(stub.callsOf('GetBooking').at(-1)!.authorization, null);
  });

  it("passes a service's error through with its ErrorInfo", async () => {
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/missing' }, { authorization: 'Bearer tok' });
    assert.equal(a.status, 404);
    assert.equal(a.json().code, 'not_found');
    assert.equal(a.json().message, 'booking bookings/missing does not exist');
    const info = errorInfo(a)!;
    assert.equal(info.reason, 'BOOKING_NOT_FOUND');
    assert.equal(info.domain, 'booking.labshare');
    assert.deepEqual(info.metadata, { booking: 'bookings/missing' });
    // Decoded next to the binary value for scripts; the DebugInfo stays inside.
    assert.deepEqual(a.json().details.map((d: { type: string; debug: unknown }) => [d.type, d.debug]), [
      ['google.rpc.ErrorInfo', { reason: 'BOOKING_NOT_FOUND', domain: 'booking.labshare', metadata: { booking: 'bookings/missing' } }],
    ]);
    assert.doesNotMatch(a.text, /secret|internal detail/);
    assert.equal(a.headers['grpc-status'], undefined); // the service's transport headers stay inside
  });

  it("passes a stream's error through with its ErrorInfo (server streaming over the Connect protocol)", async () => {
    const a = await request('POST', `${t.url}/labshare.usage.v1.UsageService/ExportUsage`, {
      headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', authorization: 'Bearer tok' },
      body: envelope(JSON.stringify({})),
    });
    assert.equal(a.status, 200);
    const frames = unenvelope(a.raw);
    const end = JSON.parse(frames.at(-1)!) as { error: { code: string; message: string; details: { type: string }[] } };
    assert.equal(end.error.code, 'aborted');
    assert.equal(end.error.message, 'export interrupted');
    assert.equal(end.error.details[0]!.type, 'google.rpc.ErrorInfo');
  });

  it("answers a service's INTERNAL, UNKNOWN or DATA_LOSS with its code and reason, a fixed sentence and the trace id; logs the original", async () => {
    // Their words describe the service's insides (storage keys, addresses,
    // code): never shown. INVALID_ARGUMENT, NOT_FOUND etc. keep theirs (above).
    const cases = [
      ['bookings/internal', 500, 'internal', 'STORAGE_ERROR', 'booking.labshare', /WRONGTYPE/],
      ['bookings/dataloss', 500, 'data_loss', 'CORRUPT_DOCUMENT', 'booking.labshare', /does not parse/],
      ['bookings/unknown', 500, 'unknown', 'INTERNAL_ERROR', 'console.labshare', /TypeError/],
    ] as const;
    for (const [name, status, code, reason, domain, words] of cases) {
      logs.length = 0;
      const trace = `t-${name.slice(9)}`;
      const a = await rpc(t.url, GET_BOOKING, { name }, { authorization: 'Bearer tok', 'x-trace-id': trace });
      assert.equal(a.status, status, name);
      assert.equal(a.headers['x-trace-id'], trace, name);
      assert.deepEqual(gatewayError(a), {
        code, message: `internal error; the operator finds the details in the log under trace id ${trace}`, reason, domain,
      }, name);
      assert.deepEqual(errorInfo(a)!.metadata, { trace_id: trace }, name);
      assert.doesNotMatch(a.text, /WRONGTYPE|instr:|10\.0\.0\.5|does not parse|TypeError|srv|redis_booking_store|internal detail/, name);
      const logged = logs.find((l) => l.msg === 'upstream internal error');
      assert.ok(logged, name);
      assert.equal(logged.trace_id, trace, name);
      assert.match(String(logged.error), words, name);
    }
    // The same for a server stream's end and for an invoice document.
    logs.length = 0;
    const s = await request('POST', `${t.url}/${EXPORT_USAGE}`, {
      headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', authorization: 'Bearer tok', 'x-trace-id': 't-stream' },
      body: envelope(JSON.stringify({ resumeToken: 'corrupt' })),
    });
    const end = JSON.parse(unenvelope(s.raw).at(-1)!) as { error: { code: string; message: string; details: { type: string; debug: unknown }[] } };
    assert.equal(end.error.code, 'internal');
    assert.equal(end.error.message, 'internal error; the operator finds the details in the log under trace id t-stream');
    assert.deepEqual(end.error.details.map((d) => d.debug), [{ reason: 'AUDIT_CORRUPTED', domain: 'usage.labshare', metadata: { trace_id: 't-stream' } }]);
    assert.doesNotMatch(s.raw.toString(), /audit entry 41|usage}:audit/);
    assert.ok(logs.some((l) => l.msg === 'upstream internal error' && l.trace_id === 't-stream' && /audit entry 41/.test(String(l.error))));
    const d = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000666.pdf`, { headers: { authorization: 'Bearer tok', 'x-trace-id': 't-doc' } });
    assert.equal(d.status, 500);
    assert.deepEqual(gatewayError(d), {
      code: 'internal', message: 'internal error; the operator finds the details in the log under trace id t-doc', reason: 'DOCUMENT_RENDER_FAILED', domain: 'billing.labshare',
    });
    assert.doesNotMatch(d.text, /renderer crashed|fonts/);
  });

  it('downloads an invoice document (GET /documents/invoices/{id}.pdf|csv) with the session token, as an attachment', async () => {
    const s = newSession(t);
    const pdf = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000001.pdf`, { headers: { cookie: `${SESSION}=${s.id}` } });
    assert.equal(pdf.status, 200);
    assert.equal(pdf.headers['content-type'], 'application/pdf');
    assert.equal(pdf.headers['content-disposition'], 'attachment; filename="LS-CNY-2027-000001.pdf"');
    assert.equal(pdf.headers['cache-control'], 'private, no-store');
    assert.equal(pdf.headers['content-security-policy'], CSP);
    assert.equal(pdf.text, '%PDF-1.5 stub');
    const call = stub.callsOf('GetInvoiceDocument').at(-1)!;
    assert.equal(call.authorization, 'Bearer access-s');
    const csv = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000001.csv`, { headers: { authorization: 'Bearer script-token' } });
    assert.equal(csv.status, 200);
    assert.equal(csv.headers['content-type'], 'text/csv; charset=utf-8');
    assert.equal(csv.headers['content-disposition'], 'attachment; filename="LS-CNY-2027-000001.csv"');
    assert.equal(stub.callsOf('GetInvoiceDocument').at(-1)!.authorization, 'Bearer script-token');
    // The service's refusal with its reason and HTTP status; bad paths and methods never reach it.
    const missing = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000009.pdf`, { headers: { cookie: `${SESSION}=${s.id}` } });
    assert.equal(missing.status, 404);
    assert.equal(missing.json().code, 'not_found');
    assert.equal(errorInfo(missing)?.reason, 'INVOICE_NOT_FOUND');
    const calls = stub.callsOf('GetInvoiceDocument').length;
    for (const bad of ['/documents/invoices/x.docx', '/documents/invoices/../x.pdf', '/documents/charges/c.pdf', '/documents/invoices/UPPER.pdf']) {
      assert.equal((await request('GET', `${t.url}${bad}`, { headers: { cookie: `${SESSION}=${s.id}` } })).status, 404, bad);
    }
    assert.equal((await request('POST', `${t.url}/documents/invoices/ls-cny-2027-000001.pdf`)).status, 405);
    assert.equal(stub.callsOf('GetInvoiceDocument').length, calls);
  });

  it('answers 404 for unknown routes and for methods it does not offer (IdentityService is not exposed)', async () => {
    for (const [method, p] of [
      ['GET', '/nope'], ['GET', '/auth/nope'], ['POST', '/labshare.booking.v1.BookingService/Nope'],
      ['POST', '/labshare.identity.v1.IdentityService/ExchangeToken'], ['GET', '/.secret'], ['GET', '/assets/../.secret'],
      ['GET', '/%2e%2e/%2e%2e/etc/passwd'],
    ] as const) {
      const a = await request(method, `${t.url}${p}`, { headers: method === 'POST' ? { 'content-type': 'application/json' } : {}, ...(method === 'POST' ? { body: '{}' } : {}) });
      assert.equal(a.status, 404, p);
      assert.equal(a.text, 'not found\n', p);
      assert.equal(a.headers['content-type'], 'text/plain; charset=utf-8', p);
    }
  });

  it('hides internal errors and unreachable services behind fixed messages', async () => {
    const secret = new Error('boom at /srv/secret/path.js:12 password=hunter2');
    const broken: Transport = {
      unary: () => Promise.reject(secret),
      stream: () => Promise.reject(secret),
    };
    const down = await closedPort();
    let clockBroken = false;
    const t2 = await startGateway((port) => ({
      ...testConfig({ upstream: stub.address, port }),
      upstreams: { inventory: stub.address, booking: stub.address, billing: stub.address, usage: down, notify: stub.address },
    }), {
      transports: { booking: broken },
      // A bug inside the gateway (here: its clock fails while a session is looked up).
      now: () => {
        if (clockBroken) throw new Error('clock broke at /srv/secret/path.js password=hunter2');
        return Date.now();
      },
    });
    try {
      logs.length = 0;
      const a = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' });
      assert.equal(a.status, 503);
      assert.deepEqual(gatewayError(a), { code: 'unavailable', message: MESSAGES.unavailable, reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' });
      assert.ok(logs.some((l) => l.msg === 'upstream call failed' && String(l.error).includes('hunter2')), 'the real error is logged');

      const s = newSession(t2);
      clockBroken = true;
      logs.length = 0;
      const g = await rpc(t2.url, 'labshare.billing.v1.BillingService/GetCharge', { name: 'charges/c1' }, cookieHeaders(t2, s));
      clockBroken = false;
      assert.equal(g.status, 500);
      assert.deepEqual(gatewayError(g), { code: 'internal', message: MESSAGES.internal, reason: 'INTERNAL_ERROR', domain: 'console.labshare' });
      assert.ok(logs.some((l) => l.msg === 'internal error' && String(l.error).includes('hunter2')), 'the real error is logged');

      const b = await rpc(t2.url, 'labshare.usage.v1.UsageService/GetThresholds', {}, { authorization: 'Bearer tok' });
      assert.equal(b.status, 503);
      assert.deepEqual(gatewayError(b), { code: 'unavailable', message: MESSAGES.unavailable, reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' });
      assert.doesNotMatch(b.text, /ECONNREFUSED|127\.0\.0\.1/);
      assert.ok(logs.some((l) => l.msg === 'upstream call failed' && /ECONNREFUSED/.test(String(l.error))));

      const r = await request('GET', `${t2.url}/readyz`);
      assert.equal(r.status, 503);
      assert.equal(r.json().ready, false);
      assert.equal(r.json().services.usage, 'UNREACHABLE (unavailable)');
      assert.equal(r.json().services.inventory, 'SERVING');
    } finally {
      await t2.stop();
    }
  });

  it('gives up on a service after the upstream deadline (deadline_exceeded, fixed message)', async () => {
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, upstreamTimeoutMs: 300 }));
    try {
      const a = await rpc(t2.url, GET_BOOKING, { name: 'bookings/slow' }, { authorization: 'Bearer tok' });
      assert.equal(a.status, 504);
      assert.deepEqual(gatewayError(a), { code: 'deadline_exceeded', message: MESSAGES.deadline, reason: 'UPSTREAM_DEADLINE', domain: 'console.labshare' });
    } finally {
      await t2.stop();
    }
  });

  it('answers calls in flight UNAVAILABLE when the connection to a service is lost, and connects again for the next call', async () => {
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port }));
    const held = () => new Promise<void>((resolve) => { stub.slowStarted = resolve; });
    try {
      assert.equal((await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' })).status, 200);
      // The service's end of the connection goes away (a crash, a reset) with
      // a unary call and a server stream under way: answered at once, not
      // hung, and not "canceled" (nobody canceled them).
      const drops = [
        () => { for (const s of stub.sessions) s.destroy(); },  // the HTTP/2 session ends
        () => { for (const c of stub.sockets) c.destroy(); },   // the TCP connection breaks
      ];
      for (const drop of drops) {
        logs.length = 0;
        stub.slowGate = new Promise<void>(() => {});
        let started = held();
        const unary = rpc(t2.url, GET_BOOKING, { name: 'bookings/slow' }, { authorization: 'Bearer tok', 'x-trace-id': 't-lost' });
        await started;
        started = held();
        const stream = request('POST', `${t2.url}/${EXPORT_USAGE}`, {
          headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', authorization: 'Bearer tok' },
          body: envelope(JSON.stringify({ resumeToken: 'slow' })),
        });
        await started;
        drop();
        const a = await unary;
        assert.equal(a.status, 503);
        assert.deepEqual(gatewayError(a), { code: 'unavailable', message: MESSAGES.unavailable, reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' });
        const end = JSON.parse(unenvelope((await stream).raw).at(-1)!) as { error: { code: string; details: { debug: unknown }[] } };
        assert.equal(end.error.code, 'unavailable');
        assert.deepEqual(end.error.details.map((d) => d.debug), [{ reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' }]);
        assert.ok(logs.some((l) => l.msg === 'upstream call failed' && l.trace_id === 't-lost'), 'the lost connection is logged');
        stub.slowGate = undefined;
        // The next call opens a new connection.
        const opened = stub.sessionsOpened;
        const b = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b2' }, { authorization: 'Bearer tok' });
        assert.equal(b.status, 200);
        assert.equal(stub.sessionsOpened, opened + 1);
      }
      // A caller who goes away mid-call did cancel: logged as canceled.
      logs.length = 0;
      stub.slowGate = new Promise<void>(() => {});
      const gone = held();
      const req = http.request(`${t2.url}/${GET_BOOKING}`, {
        method: 'POST', headers: { 'content-type': 'application/json', 'connect-protocol-version': '1', authorization: 'Bearer tok', 'x-trace-id': 't-gone' },
      });
      req.on('error', () => {});
      req.end('{"name":"bookings/slow"}');
      await gone;
      req.destroy();
      await waitFor(() => logs.some((l) => l.msg === 'rpc' && l.trace_id === 't-gone'));
      assert.equal(logs.find((l) => l.msg === 'rpc' && l.trace_id === 't-gone')!.code, 'canceled');
      stub.slowGate = undefined;
      // A GOAWAY (the service stopping gracefully): the call under way is
      // answered on the old connection, the next one goes on a new one.
      let release!: () => void;
      stub.slowGate = new Promise<void>((resolve) => { release = resolve; });
      const started = held();
      const unary = rpc(t2.url, GET_BOOKING, { name: 'bookings/slow' }, { authorization: 'Bearer tok' });
      await started;
      const opened = stub.sessionsOpened;
      // A PING after the GOAWAY: its answer means the gateway read the GOAWAY.
      await Promise.all([...stub.sessions].map((s) => {
        s.goaway(http2.constants.NGHTTP2_NO_ERROR);
        return new Promise<void>((resolve) => s.ping(() => resolve()));
      }));
      const b = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b3' }, { authorization: 'Bearer tok' });
      assert.equal(b.status, 200);
      assert.equal(stub.sessionsOpened, opened + 1);
      release();
      assert.equal((await unary).status, 200);
    } finally {
      stub.slowGate = undefined;
      stub.slowStarted = undefined;
      await t2.stop();
    }
  });

  it("renews a session's token once when a service refuses it as expired (TOKEN_EXPIRED / INVALID_TOKEN) and tries the call once more", async () => {
    // A service whose clock runs ahead, or a key rotated: the token the
    // gateway still thinks valid is refused. It was passed through, and
    // the session kept the refused token until --refresh_margin.
    const s = newSession(t);
    stub.lenientRefresh = true;
    stub.refusedTokens.add('Bearer access-s');
    try {
      const refreshes = stub.refreshes;
      const calls = stub.callsOf('GetBooking').length;
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(a.status, 200, a.text);
      assert.equal(stub.refreshes, refreshes + 1, 'one refresh');
      assert.notEqual(s.accessToken, 'access-s');
      assert.equal(a.json().user, `users/for-${s.accessToken}`);
      assert.equal(stub.callsOf('GetBooking').length, calls + 2, 'the call, once more');
      // Refused again with the renewed token: once only, the service's answer stands.
      stub.refusedTokens.add('*');
      const b = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(b.status, 401);
      assert.equal(errorInfo(b)?.reason, 'TOKEN_EXPIRED');
      assert.equal(stub.refreshes, refreshes + 2);
      assert.equal(stub.callsOf('GetBooking').length, calls + 4);
      // A bearer caller's token is its own: passed through, nothing renewed.
      const c = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer script-token' });
      assert.equal(errorInfo(c)?.reason, 'TOKEN_EXPIRED');
      assert.equal(stub.refreshes, refreshes + 2);
    } finally {
      stub.lenientRefresh = false;
      stub.refusedTokens.clear();
    }
  });

  it('refuses bodies over --body_limit: resource_exhausted for RPCs (HTTP 413 on Connect unary, not the 429 of a rate limit), 413 elsewhere', async () => {
    const big = JSON.stringify({ name: 'x'.repeat(5000) });
    const a = await rpc(t.url, GET_BOOKING, JSON.parse(big), { authorization: 'Bearer tok' });
    assert.equal(a.json().code, 'resource_exhausted');
    assert.equal(a.status, 413);
    assert.equal(a.headers['retry-after'], undefined);
    assert.match(a.json().message, /larger than this console accepts \(4096 bytes\)/);
    assert.equal(errorInfo(a)?.reason, 'BODY_TOO_LARGE');
    // Same without a length up front (chunked): counted while read.
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      import('node:http').then(({ default: http }) => {
        const req = http.request(`${t.url}/${GET_BOOKING}`, {
          method: 'POST', headers: { 'content-type': 'application/json', 'connect-protocol-version': '1', 'transfer-encoding': 'chunked' },
        }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => { body += c.toString(); });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.write(big.slice(0, 3000));
        req.end(big.slice(3000));
      }, reject);
    });
    assert.equal(chunked.status, 413);
    assert.equal(JSON.parse(chunked.body).code, 'resource_exhausted');
    // Expect: 100-continue with a Content-Length over the limit: refused at
    // once, without "100 Continue" (the client never sends the body); a
    // body within the limit is asked for and served.
    const expect = (length: number, body?: string) => new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1');
      let answer = '';
      socket.on('data', (c: Buffer) => {
        answer += c.toString('latin1');
        if (body !== undefined && answer.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && !socket.destroyed) {
          socket.write(body);
          body = undefined;
        }
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(answer));
      socket.write(`POST /${GET_BOOKING} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\nconnect-protocol-version: 1\r\n` +
        `authorization: Bearer tok\r\nexpect: 100-continue\r\ncontent-length: ${length}\r\nconnection: close\r\n\r\n`);
    });
    const refused = await expect(5000);
    assert.match(refused, /^HTTP\/1\.1 413 /);
    assert.doesNotMatch(refused, /100 Continue/);
    assert.match(refused, /"reason":"BODY_TOO_LARGE"/);
    const small = '{"name":"bookings/b1"}';
    const served = await expect(small.length, small);
    assert.match(served, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    const s = newSession(t);
    const b = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s), body: 'x'.repeat(5000) });
    assert.equal(b.status, 413);
    assert.equal(b.text, 'request body too large\n');
    assert.equal(t.gw.auth.sessions.lookup(s.id).session, s, 'nothing happened');
  });

  it('rate-limits per session, per bearer token and per address (RATE_LIMITED with RetryInfo)', async () => {
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, rateLimit: { perSecond: 2, burst: 3 } }));
    try {
      const s = newSession(t2);
      const call = (h: Record<string, string>) => rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, h);
      for (let i = 0; i < 3; ++i) assert.equal((await call(cookieHeaders(t2, s))).status, 200);
      const a = await call(cookieHeaders(t2, s, { 'x-trace-id': 'erp-limited-1' }));
      assert.equal(a.status, 429);
      assert.equal(a.headers['x-trace-id'], 'erp-limited-1'); // the gateway's own refusal carries it too
      assert.equal(a.json().code, 'resource_exhausted');
      const info = errorInfo(a)!;
      assert.equal(info.reason, 'RATE_LIMITED');
      assert.equal(info.domain, 'console.labshare');
      assert.deepEqual(info.metadata, { retry_after_ms: '500' });
      assert.equal(retryDelayMs(a), 500);
      assert.equal(a.headers['retry-after'], '1');
      // Other callers have their own buckets.
      assert.equal((await call(cookieHeaders(t2, newSession(t2)))).status, 200);
      for (let i = 0; i < 3; ++i) assert.equal((await call({ authorization: 'Bearer one' })).status, 200);
      assert.equal((await call({ authorization: 'Bearer one' })).status, 429);
      // The document download's refusal, with a trace id made up here.
      const doc = await request('GET', `${t2.url}/documents/invoices/ls-cny-2027-000001.pdf`, { headers: { authorization: 'Bearer one' } });
      assert.equal(doc.status, 429);
      assert.equal(errorInfo(doc)?.reason, 'RATE_LIMITED');
      assert.match(String(doc.headers['x-trace-id']), HEX32);
      assert.equal((await call({ authorization: 'Bearer two' })).status, 200);
      for (let i = 0; i < 3; ++i) assert.equal((await call({})).status, 200);
      assert.equal((await call({})).status, 429);
      // Half a second later one call may go again, not two.
      t2.clock.t += 500;
      assert.equal((await call(cookieHeaders(t2, s))).status, 200);
      assert.equal((await call(cookieHeaders(t2, s))).status, 429);
    } finally {
      await t2.stop();
    }
  });

  it('ends a session after the idle timeout or at the refresh token expiry (SESSION_EXPIRED, cookie cleared)', async () => {
    const s = newSession(t);
    t.clock.t += 30 * 60_000; // --session_idle_timeout=30m
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
    assert.equal(a.status, 401);
    assert.equal(a.json().code, 'unauthenticated');
    assert.equal(errorInfo(a)!.reason, 'SESSION_EXPIRED');
    assert.equal(a.headers['set-cookie']?.[0], `${SESSION}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`);
    const info = await request('GET', `${t.url}/auth/session`, { headers: { cookie: `${SESSION}=${s.id}` } });
    assert.deepEqual(info.json(), { signedIn: false, roles: [] });
    assert.ok(stub.revoked.includes('rt-s'), 'the expired session is revoked at the identity service');

    const s2 = newSession(t, { refreshExpiresAt: t.clock.t + 60_000 });
    t.clock.t += 59_999;
    assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s2))).status, 200);
    t.clock.t += 1;
    const b = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s2));
    assert.equal(b.status, 401);
    assert.equal(errorInfo(b)!.reason, 'SESSION_EXPIRED');
    // An unknown session id is the same answer.
    const c = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie: `${SESSION}=forged`, 'x-csrf-token': 'x' });
    assert.equal(c.status, 401);
    assert.equal(errorInfo(c)!.reason, 'SESSION_EXPIRED');
  });

  it('ends the session when the identity service refuses the refresh (cause kept)', async () => {
    const s = newSession(t, { accessExpiresAt: t.clock.t + 10_000, refreshToken: 'rt-dead' });
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
    assert.equal(a.status, 401);
    const info = errorInfo(a)!;
    assert.equal(info.reason, 'SESSION_EXPIRED');
    assert.deepEqual(info.metadata, { cause: 'INVALID_REFRESH_TOKEN' });
    assert.equal(t.gw.auth.sessions.lookup(s.id).session, undefined);
  });

  it('reports the session (GET /auth/session) and still decodes a bearer token for scripts', async () => {
    const s = newSession(t);
    const a = await request('GET', `${t.url}/auth/session`, { headers: { cookie: `${SESSION}=${s.id}` } });
    assert.equal(a.status, 200);
    assert.equal(a.headers['cache-control'], 'no-store');
    assert.deepEqual(a.json(), {
      signedIn: true, user: 'users/li-wei', displayName: 'Li Wei', organization: 'organizations/nanocraft',
      roles: ['LAB_USER'], csrfToken: s.csrfToken, expiresAt: new Date(t.clock.t + 30 * 60_000).toISOString(),
    });
    const payload = Buffer.from(JSON.stringify({ sub: 'wang-fang', org: 'zju', roles: ['lab_user', 'facility_staff'], exp: 1800000000 })).toString('base64url');
    const b = await request('GET', `${t.url}/auth/session`, { headers: { authorization: `Bearer e30.${payload}.sig` } });
    assert.deepEqual(b.json(), {
      signedIn: true, user: 'users/wang-fang', displayName: 'wang-fang', organization: 'organizations/zju',
      roles: ['LAB_USER', 'FACILITY_STAFF'], expiresAt: '2027-01-15T08:00:00.000Z',
    });
    assert.deepEqual((await request('GET', `${t.url}/auth/session`)).json(), { signedIn: false, roles: [] });
  });

  // A bearer token's claims are shown, not verified (the console has no key;
  // the services verify): signedIn means "a JWT that has not expired". A
  // token past its exp, or not a JWT at all, was reported signed in.
  it('answers signedIn:false for a bearer token past its exp or that is not a JWT', async () => {
    const b64 = (o: unknown) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
    const header = b64({ alg: 'ES256', typ: 'JWT' });
    const now = Math.floor(t.clock.t / 1000);
    const claims = (extra: Record<string, unknown>) => b64({ sub: 'wang-fang', org: 'zju', roles: ['lab_user'], ...extra });
    const session = async (token: string) =>
      (await request('GET', `${t.url}/auth/session`, { headers: { authorization: `Bearer ${token}` } })).json();
    for (const [what, token] of [
      ['expired', `${header}.${claims({ exp: now - 60 })}.AAAA`],
      ['expiring now', `${header}.${claims({ exp: now })}.AAAA`],
      ['no exp', `${header}.${claims({})}.AAAA`],
      ['exp not a number', `${header}.${claims({ exp: String(now + 600) })}.AAAA`],
      ['exp beyond any date', `${header}.${claims({ exp: 1e20 })}.AAAA`],
      ['header not JSON', `${b64('not json')}.${claims({ exp: now + 600 })}.AAAA`],
      ['two parts', `${header}.${claims({ exp: now + 600 })}`],
      ['payload an array', `${header}.${b64([1])}.AAAA`],
      ['garbage', 'garbage'],
    ] as const) {
      assert.deepEqual(await session(token), { signedIn: false, roles: [] }, what);
    }
    assert.deepEqual(await session(`${header}.${claims({ exp: now + 600 })}.AAAA`), {
      signedIn: true, user: 'users/wang-fang', displayName: 'wang-fang', organization: 'organizations/zju',
      roles: ['LAB_USER'], expiresAt: new Date((now + 600) * 1000).toISOString(),
    });
  });

  it('signs out with POST /auth/logout: CSRF checked, refresh token revoked, cookie cleared', async () => {
    const s = newSession(t, { refreshToken: 'rt-logout' });
    const bad = await request('POST', `${t.url}/auth/logout`, { headers: { cookie: `${SESSION}=${s.id}`, origin: t.origin } });
    assert.equal(bad.status, 403);
    assert.equal(bad.json().code, 'permission_denied');
    assert.equal(errorInfo(bad)!.reason, 'CSRF_TOKEN_INVALID');
    assert.ok(!stub.revoked.includes('rt-logout'));
    const get = await request('GET', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s) });
    assert.equal(get.status, 405);
    const ok = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s) });
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.json(), { signedIn: false, roles: [], redirect: null });
    assert.deepEqual(ok.headers['set-cookie'], [`${SESSION}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0`]);
    assert.ok(stub.revoked.includes('rt-logout'));
    const after = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
    assert.equal(after.status, 401);
    assert.equal(errorInfo(after)!.reason, 'SESSION_EXPIRED');
  });

  it('serves the app: index.html revalidated, hashed assets immutable and gzip, security headers', async () => {
    const index = await request('GET', `${t.url}/`);
    assert.equal(index.status, 200);
    assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(index.headers['cache-control'], 'no-cache');
    assert.equal(index.headers['content-security-policy'], CSP);
    assert.equal(index.headers['x-frame-options'], 'DENY');
    const js = await request('GET', `${t.url}/assets/app.js`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(js.headers['content-encoding'], 'gzip');
    assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
    const raw = await new Promise<Buffer>((resolve) => {
      import('node:http').then(({ default: http }) => http.get(`${t.url}/assets/app.js`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
        const c: Buffer[] = [];
        res.on('data', (x: Buffer) => c.push(x));
        res.on('end', () => resolve(Buffer.concat(c)));
      }));
    });
    assert.match(zlib.gunzipSync(raw).toString(), /^console\.log\("x+"\);\n$/);
    const head = await request('HEAD', `${t.url}/`);
    assert.equal(head.status, 200);
    assert.equal(head.text, '');
    assert.equal((await request('POST', `${t.url}/`, { body: '' })).status, 404);
  });

  it('answers /healthz and /readyz (grpc.health.v1 of the five upstreams)', async () => {
    const h = await request('GET', `${t.url}/healthz`);
    assert.equal(h.status, 200);
    assert.equal(h.text, 'ok\n');
    const r = await request('GET', `${t.url}/readyz`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), { ready: true, services: { inventory: 'SERVING', booking: 'SERVING', billing: 'SERVING', usage: 'SERVING', notify: 'SERVING' } });
    stub.healthy = false;
    t.clock.t += 1000; // the last check answers for a second
    try {
      const n = await request('GET', `${t.url}/readyz`);
      assert.equal(n.status, 503);
      assert.equal(n.json().services.booking, 'NOT_SERVING');
    } finally {
      stub.healthy = true;
    }
  });

  it('writes one JSON access-log line per call (errors always, successes sampled)', async () => {
    logs.length = 0;
    await rpc(t.url, GET_BOOKING, { name: 'bookings/missing' }, { authorization: 'Bearer tok' });
    await rpc(t.url, 'labshare.booking.v1.BookingService/Nope', {});
    const lines = logs.filter((l) => l.msg === 'rpc');
    assert.equal(lines.length, 2);
    assert.equal(lines[0]!.method, GET_BOOKING);
    assert.equal(lines[0]!.code, 'not_found');
    assert.equal(lines[0]!.auth, 'bearer');
    assert.equal(typeof lines[0]!.ms, 'number');
    assert.equal(lines[1]!.method, 'labshare.booking.v1.BookingService/Nope');
    assert.equal(lines[1]!.code, 'unimplemented');
    assert.equal(lines[1]!.http, 404);

    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, accessLogSample: 0.25 }), { random: () => 0.5 });
    try {
      logs.length = 0;
      await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' });
      await rpc(t2.url, GET_BOOKING, { name: 'bookings/missing' }, { authorization: 'Bearer tok' });
      assert.deepEqual(logs.filter((l) => l.msg === 'rpc').map((l) => l.code), ['not_found']);
    } finally {
      await t2.stop();
    }
  });

  it('sends the trace id upstream as x-trace-id and answers it: traceparent, else x-trace-id, else a new one', async () => {
    logs.length = 0;
    const last = () => stub.callsOf('GetBooking').at(-1)!;
    const call = (headers: Record<string, string>) => rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok', ...headers });

    // A valid traceparent wins over x-trace-id.
    const a = await call({ traceparent: TRACEPARENT, 'x-trace-id': 'not-this-one' });
    assert.equal(a.status, 200);
    assert.equal(a.headers['x-trace-id'], TRACE);
    assert.equal(last().traceId, TRACE);
    assert.equal(last().authorization, 'Bearer tok');
    // A later version may carry more fields.
    const v1 = await call({ traceparent: `01-${TRACE}-00f067aa0ba902b7-01-whatever` });
    assert.equal(v1.headers['x-trace-id'], TRACE);

    // Else the caller's x-trace-id, up to 64 characters of [A-Za-z0-9._:-].
    const b = await call({ 'x-trace-id': 'erp:order-7781.retry_2' });
    assert.equal(b.status, 200);
    assert.equal(b.headers['x-trace-id'], 'erp:order-7781.retry_2');
    assert.equal(last().traceId, 'erp:order-7781.retry_2');
    const long = 'A'.repeat(64);
    assert.equal((await call({ 'x-trace-id': long })).headers['x-trace-id'], long);
    assert.equal(last().traceId, long);

    // Else a new one: 32 lowercase hex, the same upstream and in the answer.
    const c = await call({});
    assert.equal(c.status, 200);
    const made = String(c.headers['x-trace-id']);
    assert.match(made, HEX32);
    assert.equal(last().traceId, made);
    const again = String((await call({})).headers['x-trace-id']);
    assert.match(again, HEX32);
    assert.notEqual(again, made);
    assert.equal(last().traceId, again);

    // Unusable headers are ignored (the call goes through with a new id).
    for (const bad of ['A'.repeat(65), 'has space', 'a/b', 'a,b', '{"id":1}', 'x;y', '']) {
      const d = await call({ 'x-trace-id': bad });
      assert.equal(d.status, 200, bad);
      const id = String(d.headers['x-trace-id']);
      assert.match(id, HEX32, bad);
      assert.equal(last().traceId, id, bad);
    }
    const badParents = [
      `00-${TRACE.toUpperCase()}-00f067aa0ba902b7-01`, // uppercase
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,       // all-zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`,               // all-zero parent id
      `ff-${TRACE}-00f067aa0ba902b7-01`,                // version ff
      `00-${TRACE}-00f067aa0ba902b7-01-extra`,          // version 00 has four fields
      `00-${TRACE}1-00f067aa0ba902b7-01`,               // trace id too long
      `00-${TRACE}-00f067aa0ba902b-01`,                 // parent id too short
      `00-${TRACE.slice(0, 31)}g-00f067aa0ba902b7-01`,  // not hex
      TRACE,
    ];
    for (const bad of badParents) {
      // ... then the x-trace-id is used when it is usable, else a new one.
      const e = await call({ traceparent: bad, 'x-trace-id': 'fallback-1' });
      assert.equal(e.headers['x-trace-id'], 'fallback-1', bad);
      assert.equal(last().traceId, 'fallback-1', bad);
      const f = await call({ traceparent: bad });
      assert.match(String(f.headers['x-trace-id']), HEX32, bad);
      assert.equal(last().traceId, f.headers['x-trace-id'], bad);
    }

    // The access-log line has it.
    const lines = logs.filter((l) => l.msg === 'rpc');
    assert.equal(lines[0]!.trace_id, TRACE);
    assert.equal(lines[2]!.trace_id, 'erp:order-7781.retry_2');
    assert.equal(lines[4]!.trace_id, made);
  });

  it('sends the trace id to the identity service too: sign-in exchange, refresh, sign-out', async () => {
    // Sign-in: /auth/callback after the provider (played here by a stand-in
    // that hands over an ID token) -> ExchangeToken; the session this
    // browser had ends and its refresh token is revoked, in the same trace.
    const auth = t.gw.auth as unknown as { oidc: unknown };
    const oidc = auth.oidc;
    const claims = Buffer.from(JSON.stringify({ sub: 'acct-li-wei', preferred_username: 'li-wei' })).toString('base64url');
    auth.oidc = { finish: async () => `h.${claims}.s` };
    try {
      const previous = newSession(t, { refreshToken: 'rt-previous' });
      const sealed = t.gw.auth.signins.seal({
        state: 's', nonce: 'n', codeVerifier: 'v', returnTo: '#/', createdAt: t.clock.t, previousSession: previous.id,
      });
      const back = await request('GET', `${t.url}/auth/callback?code=c&state=s`, {
        headers: { cookie: `__Host-labshare_signin=${sealed}`, traceparent: TRACEPARENT },
      });
      assert.equal(back.status, 303);
      assert.equal(back.headers.location, '/#/');
      assert.equal(back.headers['x-trace-id'], TRACE);
      assert.equal(stub.callsOf('ExchangeToken').at(-1)!.traceId, TRACE);
      await waitFor(() => stub.revoked.includes('rt-previous'));
      const revoked = stub.callsOf('RevokeToken').find((c) => (c.request as { refreshToken: string }).refreshToken === 'rt-previous');
      assert.equal(revoked!.traceId, TRACE);
    } finally {
      auth.oidc = oidc;
    }

    // Refresh: made for the call that needs the token, in its trace.
    const s = newSession(t, { accessExpiresAt: t.clock.t + 30_000, refreshToken: 'rt-traced' });
    const refreshes = stub.refreshes;
    stub.lenientRefresh = true;
    try {
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s, { 'x-trace-id': 'console-refresh-1' }));
      assert.equal(a.status, 200);
    } finally {
      stub.lenientRefresh = false;
    }
    assert.equal(stub.refreshes, refreshes + 1);
    const refresh = stub.callsOf('RefreshToken').at(-1)!;
    assert.equal((refresh.request as { refreshToken: string }).refreshToken, 'rt-traced');
    assert.equal(refresh.traceId, 'console-refresh-1');
    assert.equal(stub.callsOf('GetBooking').at(-1)!.traceId, 'console-refresh-1');

    // Sign-out: RevokeToken in the request's trace, answered with it.
    const out = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s, { 'x-trace-id': 'console-logout-1' }) });
    assert.equal(out.status, 200);
    assert.equal(out.headers['x-trace-id'], 'console-logout-1');
    const revoke = stub.callsOf('RevokeToken').at(-1)!;
    assert.equal(revoke.traceId, 'console-logout-1');
    // Without a usable header a new id goes up and comes back.
    const s2 = newSession(t, { refreshToken: 'rt-untraced' });
    const out2 = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s2) });
    assert.match(String(out2.headers['x-trace-id']), HEX32);
    assert.equal(stub.callsOf('RevokeToken').at(-1)!.traceId, out2.headers['x-trace-id']);
  });

  it('answers the trace id on errors: a service error, a server stream, the gateway\'s own refusals', async () => {
    logs.length = 0;
    // The service's error.
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/missing' }, { authorization: 'Bearer tok', 'x-trace-id': 'trace-missing' });
    assert.equal(a.status, 404);
    assert.equal(a.headers['x-trace-id'], 'trace-missing');
    assert.equal(stub.callsOf('GetBooking').at(-1)!.traceId, 'trace-missing');
    // A server stream (Connect streaming) that ends in an error.
    const st = await request('POST', `${t.url}/${EXPORT_USAGE}`, {
      headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', authorization: 'Bearer tok', traceparent: TRACEPARENT },
      body: envelope(JSON.stringify({})),
    });
    assert.equal(st.status, 200);
    assert.equal(st.headers['x-trace-id'], TRACE);
    assert.equal(stub.callsOf('ExportUsage').at(-1)!.traceId, TRACE);
    // CSRF refusal: the service is never called, the answer still has it.
    const s = newSession(t);
    const before = stub.calls.length;
    const b = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie: `${SESSION}=${s.id}`, origin: t.origin, 'x-trace-id': 'trace-csrf' });
    assert.equal(b.status, 403);
    assert.equal(errorInfo(b)?.reason, 'CSRF_TOKEN_INVALID');
    assert.equal(b.headers['x-trace-id'], 'trace-csrf');
    // Connect's own refusal of the body, and an unknown method: a new id each.
    const c = await rpc(t.url, GET_BOOKING, { nmae: 'typo' }, { authorization: 'Bearer tok' });
    assert.equal(c.status, 400);
    assert.match(String(c.headers['x-trace-id']), HEX32);
    const d = await rpc(t.url, 'labshare.booking.v1.BookingService/Nope', {}, { 'x-trace-id': 'trace-nope' });
    assert.equal(d.status, 404);
    assert.equal(d.headers['x-trace-id'], 'trace-nope');
    assert.equal(stub.calls.length, before);
    // Security headers are untouched.
    for (const x of [a, b, c, d]) assert.equal(x.headers['content-security-policy'], CSP);
    const lines = logs.filter((l) => l.msg === 'rpc');
    assert.deepEqual(lines.map((l) => [l.code, l.trace_id]), [
      ['not_found', 'trace-missing'], ['aborted', TRACE], ['permission_denied', 'trace-csrf'],
      ['invalid_argument', c.headers['x-trace-id']], ['unimplemented', 'trace-nope'],
    ]);
  });

  it('carries the trace id through the invoice document download and the public pages', async () => {
    logs.length = 0;
    const s = newSession(t);
    const pdf = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000001.pdf`, { headers: { cookie: `${SESSION}=${s.id}`, traceparent: TRACEPARENT } });
    assert.equal(pdf.status, 200);
    assert.equal(pdf.text, '%PDF-1.5 stub');
    assert.equal(pdf.headers['x-trace-id'], TRACE);
    assert.equal(pdf.headers['content-security-policy'], CSP);
    assert.equal(stub.callsOf('GetInvoiceDocument').at(-1)!.traceId, TRACE);
    assert.equal(stub.callsOf('GetInvoiceDocument').at(-1)!.authorization, 'Bearer access-s');
    const csv = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000001.csv`, { headers: { authorization: 'Bearer script-token' } });
    assert.equal(csv.status, 200);
    const made = String(csv.headers['x-trace-id']);
    assert.match(made, HEX32);
    assert.equal(stub.callsOf('GetInvoiceDocument').at(-1)!.traceId, made);
    const missing = await request('GET', `${t.url}/documents/invoices/ls-cny-2027-000009.pdf`, { headers: { authorization: 'Bearer tok', 'x-trace-id': 'doc-missing' } });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers['x-trace-id'], 'doc-missing');
    assert.equal(stub.callsOf('GetInvoiceDocument').at(-1)!.traceId, 'doc-missing');
    const wrong = await request('POST', `${t.url}/documents/invoices/ls-cny-2027-000001.pdf`, { headers: { 'x-trace-id': 'doc-post' } });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers['x-trace-id'], 'doc-post');
    const lines = logs.filter((l) => l.msg === 'rpc');
    assert.deepEqual(lines.map((l) => [l.code, l.download, l.trace_id]), [
      ['ok', true, TRACE], ['ok', true, made], ['not_found', true, 'doc-missing'],
    ]);

    // The calendar feed (labshare-notify, no session).
    const feed = await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`, { headers: { 'x-trace-id': 'feed-1' } });
    assert.equal(feed.status, 200);
    assert.equal(feed.headers['x-trace-id'], 'feed-1');
    assert.equal(stub.callsOf('GetCalendarFeedContent').at(-1)!.traceId, 'feed-1');
    assert.equal(logs.filter((l) => l.msg === 'rpc').at(-1)!.trace_id, 'feed-1');
  });

  it('refreshes a session token once for many concurrent calls (single flight)', async () => {
    // A session whose access token expires within --refresh_margin, with a
    // refresh token the stub knows: sign in through the stub's ExchangeToken.
    const ex = await t.gw.auth['identity'].exchangeToken({ idToken: `e30.${Buffer.from(JSON.stringify({ sub: 'acct-x', preferred_username: 'x' })).toString('base64url')}.s` });
    const s = t.gw.auth.sessions.create({ ...t.gw.auth.tokensOf(ex), accessExpiresAt: t.clock.t + 30_000 });
    let release!: () => void;
    stub.refreshGate = new Promise<void>((r) => { release = r; });
    const refreshesBefore = stub.refreshes;
    const calls = Array.from({ length: 8 }, () => rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s)));
    await waitFor(() => stub.refreshes > refreshesBefore);
    release();
    const answers = await Promise.all(calls);
    stub.refreshGate = undefined;
    assert.deepEqual(answers.map((a) => a.status), Array(8).fill(200));
    assert.equal(stub.refreshes - refreshesBefore, 1);
    const tokens = new Set(answers.map((a) => a.json().user));
    assert.equal(tokens.size, 1);
    assert.notEqual([...tokens][0], `users/for-${ex.accessToken}`);
  });
});

function envelope(json: string): Buffer {
  const data = Buffer.from(json);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(data.length, 1);
  return Buffer.concat([head, data]);
}
function unenvelope(b: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i + 5 <= b.length;) {
    const n = b.readUInt32BE(i + 1);
    out.push(b.subarray(i + 5, i + 5 + n).toString('utf8'));
    i += 5 + n;
  }
  return out;
}
void Code;
void ConnectError;
