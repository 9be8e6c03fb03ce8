// The security review's findings (issue 14 gateway review), one test each:
// transient refresh failures, rate limits before identify, trusted proxies,
// sign-out racing a refresh, errors without ErrorInfo, oversized bodies, the
// drain at SIGTERM, security headers and Accept-Encoding. (Pending sign-ins
// and the session table when full: edge-harden.test.ts.)
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb.js';
import { REFRESH_BACKOFF_MS } from '../auth.js';
import { MESSAGES, setLogSink } from '../errors.js';
import { configFromFlags, FlagError, parseFlags } from '../flags.js';
import { listen } from '../gateway.js';
import { clientAddress, CSP, type Req } from '../http-util.js';
import { type Session, type Tokens } from '../sessions.js';
import { acceptsGzip } from '../static.js';
import {
  errorInfo, gatewayError, request, rpc, startGateway, Stub, testConfig, waitFor, type TestGateway,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const SESSION = '__Host-labshare_session';

const logs: Record<string, unknown>[] = [];
setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));

function tokens(now: number, over: Partial<Tokens> = {}): Tokens {
  return {
    accessToken: 'access-s', accessExpiresAt: now + 900_000, refreshToken: 'rt-s', refreshExpiresAt: now + 12 * 3600_000,
    user: { name: 'users/li-wei', displayName: 'Li Wei', organization: 'organizations/nanocraft', roles: ['LAB_USER'] },
    ...over,
  };
}
function newSession(t: TestGateway, over: Partial<Session> = {}): Session {
  const s = t.gw.auth.sessions.create(tokens(t.clock.t));
  Object.assign(s, over);
  return s;
}
function cookieHeaders(t: TestGateway, s: Session): Record<string, string> {
  return { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken, origin: t.origin };
}
const serviceError = (code: Code, reason?: string) => new ConnectError('refused', code, undefined,
  reason ? [{ desc: ErrorInfoSchema, value: { reason, domain: 'inventory.labshare' } }] : []);

describe('gateway hardening', () => {
  let stub: Stub;
  let t: TestGateway;

  before(async () => {
    stub = await new Stub().start();
    t = await startGateway((port) => testConfig({ upstream: stub.address, port, bodyLimitBytes: 4096 }));
  });
  after(async () => {
    await t.stop();
    await stub.stop();
  });

  it('does not refresh the last access token of a session (capped at its end) on every call', async () => {
    // Both tokens end with the session, 20 s from now (within --refresh_margin).
    const end = t.clock.t + 20_000;
    const s = newSession(t, { accessExpiresAt: end, refreshExpiresAt: end + 400 });
    const before = stub.refreshes;
    for (let i = 0; i < 3; i++) {
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(a.status, 200);
      assert.equal(stub.callsOf('GetBooking').at(-1)!.authorization, 'Bearer access-s');
    }
    assert.equal(stub.refreshes, before, 'no refresh while the last token is valid');
    // A session with time left after its access token still refreshes early.
    const other = newSession(t, { accessExpiresAt: t.clock.t + 20_000 });
    stub.lenientRefresh = true;
    assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, other))).status, 200);
    stub.lenientRefresh = false;
    assert.equal(stub.refreshes, before + 1);
  });

  it('keeps the session when a refresh fails for a passing reason; backs off; UNAVAILABLE once the token expired', async () => {
    for (const code of [Code.Unavailable, Code.DeadlineExceeded, Code.Internal, Code.ResourceExhausted, Code.Unknown]) {
      const s = newSession(t, { accessExpiresAt: t.clock.t + 10_000 }); // within --refresh_margin
      stub.refreshFailure = serviceError(code);
      const before = stub.refreshes;
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(a.status, 200, Code[code]);
      assert.equal(stub.callsOf('GetBooking').at(-1)!.authorization, 'Bearer access-s');
      assert.equal(stub.refreshes, before + 1);
      // Backing off: the next calls do not try again.
      assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s))).status, 200);
      assert.equal(stub.refreshes, before + 1);
      assert.equal(t.gw.auth.sessions.lookup(s.id).session, s, 'the session lives on');
      t.clock.t += REFRESH_BACKOFF_MS;
      assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s))).status, 200);
      assert.equal(stub.refreshes, before + 2);
      // The access token has expired (10 s), the refresh still fails: UNAVAILABLE, session kept.
      t.clock.t += REFRESH_BACKOFF_MS;
      const b = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(b.status, 503);
      assert.deepEqual(gatewayError(b), { code: 'unavailable', message: MESSAGES.unavailable, reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' });
      assert.equal(stub.refreshes, before + 3);
      const c = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(c.status, 503);
      assert.equal(stub.refreshes, before + 3, 'still backing off');
      assert.equal(t.gw.auth.sessions.lookup(s.id).session, s);
      // The identity service is back: renewed.
      stub.refreshFailure = undefined;
      stub.lenientRefresh = true;
      t.clock.t += REFRESH_BACKOFF_MS;
      const d = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      stub.lenientRefresh = false;
      assert.equal(d.status, 200);
      assert.notEqual(stub.callsOf('GetBooking').at(-1)!.authorization, 'Bearer access-s');
    }
    // Refusals end it.
    for (const [code, reason] of [[Code.Unauthenticated, 'REFRESH_TOKEN_REUSED'], [Code.PermissionDenied, 'USER_DISABLED'],
      [Code.PermissionDenied, 'ORGANIZATION_SUSPENDED']] as const) {
      const s = newSession(t, { accessExpiresAt: t.clock.t + 10_000 });
      stub.refreshFailure = serviceError(code, reason);
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      assert.equal(a.status, 401);
      assert.deepEqual(errorInfo(a)!.metadata, { cause: reason });
      assert.equal(t.gw.auth.sessions.lookup(s.id).session, undefined);
    }
    stub.refreshFailure = undefined;
  });

  it('revokes the rotated refresh token when the session ended (sign-out, eviction) while the refresh was under way', async () => {
    stub.lenientRefresh = true;
    try {
      // Sign-out during the refresh.
      const s = newSession(t, { accessExpiresAt: t.clock.t + 10_000, refreshToken: 'rt-race' });
      let release!: () => void;
      stub.refreshGate = new Promise<void>((r) => { release = r; });
      const before = stub.refreshes;
      const call = rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t, s));
      await waitFor(() => stub.refreshes === before + 1);
      const out = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s) });
      assert.equal(out.status, 200);
      assert.ok(stub.revoked.includes('rt-race'));
      release();
      stub.refreshGate = undefined;
      const a = await call;
      assert.equal(a.status, 401);
      assert.equal(errorInfo(a)!.reason, 'SESSION_EXPIRED');
      await waitFor(() => stub.revoked.length > 0 && /^rt-\d+$/.test(stub.revoked.at(-1)!));
      const rotated = stub.revoked.at(-1)!;
      assert.notEqual(s.refreshToken, rotated, 'never stored');

      // Eviction during the refresh (a store of one session).
      const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, maxSessions: 1 }));
      try {
        const e = newSession(t2, { accessExpiresAt: t2.clock.t + 10_000, refreshToken: 'rt-evicted' });
        stub.refreshGate = new Promise<void>((r) => { release = r; });
        const b4 = stub.refreshes;
        const call2 = rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, cookieHeaders(t2, e));
        await waitFor(() => stub.refreshes === b4 + 1);
        newSession(t2); // evicts e
        await waitFor(() => stub.revoked.includes('rt-evicted'));
        const n = stub.revoked.length;
        release();
        stub.refreshGate = undefined;
        assert.equal((await call2).status, 401);
        await waitFor(() => stub.revoked.length === n + 1);
        assert.match(stub.revoked.at(-1)!, /^rt-\d+$/);
        assert.notEqual(e.refreshToken, stub.revoked.at(-1));
      } finally {
        await t2.stop();
      }
    } finally {
      stub.lenientRefresh = false;
      stub.refreshGate = undefined;
    }
  });

  it("answers the fixed sentence for statuses without ErrorInfo (made by gRPC or a proxy), logs the original", async () => {
    logs.length = 0;
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/proxy' }, { authorization: 'Bearer tok' });
    assert.equal(a.status, 503);
    assert.deepEqual(gatewayError(a), { code: 'unavailable', message: MESSAGES.unavailable, reason: 'SERVICE_UNAVAILABLE', domain: 'console.labshare' });
    assert.doesNotMatch(a.text, /10\.1\.2\.3/);
    assert.ok(logs.some((l) => l.msg === 'upstream status without ErrorInfo' && String(l.error).includes('10.1.2.3:50052')));
    const b = await rpc(t.url, GET_BOOKING, { name: 'bookings/bare' }, { authorization: 'Bearer tok' });
    assert.equal(b.status, 429);
    assert.deepEqual(gatewayError(b), { code: 'resource_exhausted', message: 'too many requests or too large; try again later', reason: 'UPSTREAM_ERROR', domain: 'console.labshare' });
    // With an ErrorInfo the service's words pass.
    const c = await rpc(t.url, GET_BOOKING, { name: 'bookings/missing' }, { authorization: 'Bearer tok' });
    assert.equal(c.json().message, 'booking bookings/missing does not exist');
  });

  it('refuses an RPC body over the limit from its Content-Length and closes the connection', async () => {
    const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1');
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let answer = '';
    socket.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
    const closed = new Promise<boolean>((resolve) => {
      socket.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000).unref();
    });
    socket.on('error', () => {});
    socket.write(`POST /${GET_BOOKING} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n`
      + 'connect-protocol-version: 1\r\ncontent-length: 10737418240\r\n\r\n{"name":"');
    socket.write('x'.repeat(1000));
    assert.equal(await closed, true, 'the gateway closes the connection instead of reading 10 GiB');
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.match(answer, /"code":"resource_exhausted"/);
    socket.destroy();
  });

  it('does not gzip for Accept-Encoding gzip;q=0', () => {
    assert.equal(acceptsGzip('gzip;q=0'), false);
    assert.equal(acceptsGzip('gzip; q=0.0, br'), false);
    assert.equal(acceptsGzip('*;q=0'), false);
    assert.equal(acceptsGzip('gzip, deflate, br'), true);
    assert.equal(acceptsGzip('gzip;q=0.5'), true);
    assert.equal(acceptsGzip('*'), true);
    assert.equal(acceptsGzip('identity'), false);
    assert.equal(acceptsGzip(undefined), false);
  });

  it('takes a per-address bucket before identify: random bearer tokens and unknown cookies are limited too', async () => {
    const t2 = await startGateway((port) => testConfig({
      upstream: stub.address, port, rateLimit: { perSecond: 100, burst: 100 }, addressRateLimit: { perSecond: 1, burst: 3 },
    }));
    try {
      for (let i = 0; i < 3; ++i) {
        assert.equal((await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: `Bearer random-${i}` })).status, 200);
      }
      const a = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer random-new' });
      assert.equal(a.status, 429);
      assert.equal(errorInfo(a)!.reason, 'RATE_LIMITED');
      t2.clock.t += 2000;
      for (let i = 0; i < 2; ++i) {
        const u = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie: `${SESSION}=unknown-${i}`, 'x-csrf-token': 'x' });
        assert.equal(u.status, 401);
      }
      const b = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie: `${SESSION}=unknown-9`, 'x-csrf-token': 'x' });
      assert.equal(b.status, 429);
      assert.equal(errorInfo(b)!.reason, 'RATE_LIMITED');
    } finally {
      await t2.stop();
    }
  });

  it('checks the services for /readyz at most once a second', async () => {
    const n = stub.healthChecks;
    const [a, b] = await Promise.all([request('GET', `${t.url}/readyz`), request('GET', `${t.url}/readyz`)]);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal((await request('GET', `${t.url}/readyz`)).status, 200);
    assert.equal(stub.healthChecks, n + 5);
    t.clock.t += 1000;
    assert.equal((await request('GET', `${t.url}/readyz`)).status, 200);
    assert.equal(stub.healthChecks, n + 10);
  });

  it('gives /auth/login and /auth/callback their own per-address bucket; X-Forwarded-For only from --trusted_proxies', async () => {
    const trusted = new net.BlockList();
    trusted.addSubnet('127.0.0.0', 8, 'ipv4');
    const make = (proxies?: net.BlockList) => startGateway((port) => testConfig({
      upstream: stub.address, port, loginRateLimit: { perSecond: 1, burst: 2 }, ...(proxies ? { trustedProxies: proxies } : {}),
    }));
    const login = (u: string, xff?: string) => request('GET', `${u}/auth/login`, { headers: xff ? { 'x-forwarded-for': xff } : {} });
    // Pages the browser opens: a refusal lands on the app, which says it in
    // the person's language (/#/?signin_error=CODE), not an English text page.
    const NOT_CONFIGURED = '/#/?signin_error=SIGN_IN_NOT_CONFIGURED';
    const LIMITED = '/#/?signin_error=RATE_LIMITED';
    const t2 = await make(trusted);
    try {
      assert.equal((await login(t2.url, '203.0.113.7')).headers.location, NOT_CONFIGURED); // sign-in not configured here: passes the bucket
      assert.equal((await login(t2.url, '198.51.100.1, 203.0.113.7')).headers.location, NOT_CONFIGURED);
      const a = await login(t2.url, '203.0.113.7');
      assert.equal(a.status, 303);
      assert.equal(a.headers.location, LIMITED);
      assert.equal(a.headers['retry-after'], '1');
      const cb = await request('GET', `${t2.url}/auth/callback`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
      assert.equal(cb.status, 303);
      assert.equal(cb.headers.location, LIMITED);
      // Another client behind the proxy has its own bucket; RPCs are not counted there.
      assert.equal((await login(t2.url, '203.0.113.8')).headers.location, NOT_CONFIGURED);
      assert.equal((await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { 'x-forwarded-for': '203.0.113.7' })).status, 200);
    } finally {
      await t2.stop();
    }
    const t3 = await make(); // no trusted proxies: the header is the client's own words
    try {
      assert.equal((await login(t3.url, '203.0.113.1')).headers.location, NOT_CONFIGURED);
      assert.equal((await login(t3.url, '203.0.113.2')).headers.location, NOT_CONFIGURED);
      assert.equal((await login(t3.url, '203.0.113.3')).headers.location, LIMITED);
    } finally {
      await t3.stop();
    }
    // The rightmost hop that is not a trusted proxy.
    const req = (peer: string, xff?: string) => ({ socket: { remoteAddress: peer }, headers: xff ? { 'x-forwarded-for': xff } : {} }) as unknown as Req;
    const list = configFromFlags(parseFlags([
      '--listen=127.0.0.1:8080', '--inventory=127.0.0.1:1', '--booking=127.0.0.1:1', '--billing=127.0.0.1:1', '--usage=127.0.0.1:1', '--notify=127.0.0.1:1',
      '--trusted_proxies=10.0.0.0/8, fd00::/8,192.168.1.7',
    ]), '/web').trustedProxies!;
    assert.equal(clientAddress(req('10.1.2.3', 'spoofed, 203.0.113.9, 10.9.9.9'), list), '203.0.113.9');
    assert.equal(clientAddress(req('::ffff:10.1.2.3', '2001:db8::1'), list), '2001:db8::1');
    assert.equal(clientAddress(req('192.168.1.7', '203.0.113.9'), list), '203.0.113.9');
    assert.equal(clientAddress(req('192.168.1.8', '203.0.113.9'), list), '192.168.1.8', 'not a trusted peer');
    assert.equal(clientAddress(req('10.1.2.3'), list), '10.1.2.3');
    assert.equal(clientAddress(req('10.1.2.3', '10.0.0.1, 10.0.0.2'), list), '10.0.0.1', 'all trusted: the leftmost');
    assert.equal(clientAddress(req('10.1.2.3', '203.0.113.9, not-an-ip'), list), '10.1.2.3', 'garbage stops the walk');
    assert.equal(clientAddress(req('203.0.113.5', '10.0.0.1')), '203.0.113.5');
    assert.throws(() => configFromFlags(parseFlags([
      '--listen=127.0.0.1:8080', '--inventory=127.0.0.1:1', '--booking=127.0.0.1:1', '--billing=127.0.0.1:1', '--usage=127.0.0.1:1', '--notify=127.0.0.1:1',
      '--trusted_proxies=10.0.0.0/33',
    ]), '/web'), (e: unknown) => e instanceof FlagError && /--trusted_proxies: want CIDR ranges/.test(e.message));
  });

  it('refuses plaintext to a non-loopback service while reading the flags (PLAINTEXT_REFUSED)', () => {
    assert.throws(() => configFromFlags(parseFlags([
      '--listen=127.0.0.1:8080', '--inventory=127.0.0.1:1', '--booking=10.1.2.3:443', '--billing=127.0.0.1:1', '--usage=127.0.0.1:1', '--notify=127.0.0.1:1',
    ]), '/web'), (e: unknown) => e instanceof FlagError && /^PLAINTEXT_REFUSED: --booking=10\.1\.2\.3:443 is not loopback/.test(e.message));
  });

  it('answers /auth/logout with {"redirect": null} when sign-in has no provider', async () => {
    const s = newSession(t);
    const a = await request('POST', `${t.url}/auth/logout`, { headers: cookieHeaders(t, s) });
    assert.deepEqual(a.json(), { signedIn: false, roles: [], redirect: null });
  });
});

describe('stopping', () => {
  it('answers a request Node cannot parse with 400 and the security headers', async () => {
    const stub = await new Stub().start();
    const running = await listen(testConfig({ upstream: stub.address, port: 0 }));
    try {
    const socket = net.connect(Number(new URL(running.url).port), '127.0.0.1');
    let answer = '';
    socket.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write('GARBAGE / HTTP/1.1\r\n\r\n');
    await ended;
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.ok(answer.includes(`\r\ncontent-security-policy: ${CSP}\r\n`));
    assert.ok(answer.includes('\r\nx-content-type-options: nosniff\r\n'));
    assert.ok(answer.endsWith('\r\n\r\nbad request\n'));
  } finally {
      await running.stop();
      await stub.stop();
    }
  });

  it('answers /readyz 503 at once and keeps serving for --shutdown_drain, then closes', async () => {
    const stub = await new Stub().start();
    const running = await listen(testConfig({ upstream: stub.address, port: 0, shutdownDrainMs: 1500 }));
    try {
      assert.equal((await request('GET', `${running.url}/readyz`)).status, 200);
      const started = Date.now();
      const stopped = running.stop();
      let done = false;
      void stopped.then(() => { done = true; });
      const r = await request('GET', `${running.url}/readyz`);
      assert.equal(r.status, 503);
      assert.equal(r.json().draining, true);
      assert.equal((await request('GET', `${running.url}/healthz`)).status, 200);
      assert.equal((await rpc(running.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' })).status, 200);
      assert.equal(done, false, 'still draining');
      await stopped;
      assert.ok(Date.now() - started >= 1400, 'the drain lasted');
      await assert.rejects(request('GET', `${running.url}/healthz`));
    } finally {
      await stub.stop();
    }
  });
});
void http;
