// The console edge review of 2026-12-07, one test (or a few) per finding:
//   1. half-sent bodies: RPC bodies arriving per address, bytes of bodies
//      held overall, a deadline for a body that PINGs do not move, HTTP/2
//      streams per connection, HTTP/1.1-over-TLS timeouts, connections per
//      address;
//   2. the session table: a cap per person, expired sessions first, and a
//      sign-in refused rather than another person's live session ended;
//   3. pending sign-ins sealed in the browser's cookie, not in a table that
//      a flood of /auth/login could push a real sign-in out of;
//   4. sign-out ends the session before RevokeToken answers;
//   (6., the ID token's signature checked by the gateway too, was taken
//   back: inventory checks it at ExchangeToken; see oidc.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb.js';
import { StatusSchema } from '../../gen/google/rpc/status_pb.js';
import { GetBookingRequestSchema } from '../../gen/labshare/booking/v1/booking_pb.js';
import { setLogSink } from '../errors.js';
import { HEADERS_TIMEOUT_MS, HTTP2_MAX_STREAMS, listen, REQUEST_TIMEOUT_MS, type Running } from '../gateway.js';
import {
  MAX_PENDING_PER_BROWSER, MAX_SIGNIN_COOKIE, SessionsFull, SessionStore, SignInCookies, type Session, type Tokens,
} from '../sessions.js';
import {
  errorInfo, makePki, request, retryDelayMs, rpc, startGateway, Stub, testConfig, waitFor, grpcWebTrailers,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const SESSION = '__Host-labshare_session';
const SIGNIN = '__Host-labshare_signin';
const BEARER = { authorization: 'Bearer tok' };

const logs: Record<string, unknown>[] = [];
setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));

function loopbackProxy(): net.BlockList {
  const b = new net.BlockList();
  b.addAddress('127.0.0.1');
  return b;
}

// A request sent over a raw socket up to `sent` bytes of its body (of
// `length`): the rest follows with finish(), or never.
interface Stalled { socket: net.Socket; answer(): string; closed: Promise<void>; finish(rest: string): void }
async function stall(base: string, headers: Record<string, string>, length: number, sent: string): Promise<Stalled> {
  const u = new URL(base);
  const socket = net.connect(Number(u.port), u.hostname);
  socket.on('error', () => {});
  let answer = '';
  socket.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const head = Object.entries({ host: u.host, ...headers, 'content-length': String(length) }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  socket.write(`POST /${GET_BOOKING} HTTP/1.1\r\n${head}\r\n${sent}`);
  return { socket, answer: () => answer, closed, finish: (rest) => socket.write(rest) };
}

const JSON_HEADERS = { 'content-type': 'application/json', 'connect-protocol-version': '1', ...BEARER };
const BODY = '{"name":"bookings/b1"}';

function reasonOf(t: Map<string, string>) {
  const st = fromBinary(StatusSchema, Buffer.from(t.get('grpc-status-details-bin') ?? '', 'base64'));
  const info = st.details.find((d) => d.typeUrl.endsWith('/google.rpc.ErrorInfo'));
  return info ? fromBinary(ErrorInfoSchema, info.value) : undefined;
}
function frame(payload: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

describe('edge review 1: half-sent bodies', () => {
  let stub: Stub;
  before(async () => {
    stub = await new Stub().start();
  });
  after(async () => {
    await stub.stop();
  });

  it('takes at most --max_pending_bodies_per_address bodies arriving from one address; the next is RATE_LIMITED in the caller\'s protocol, other addresses go on', async () => {
    const t = await startGateway((port) => testConfig({
      upstream: stub.address, port, maxPendingBodiesPerAddress: 2, trustedProxies: loopbackProxy(),
    }));
    const stalled: Stalled[] = [];
    try {
      const from = (ip: string) => ({ ...JSON_HEADERS, 'x-forwarded-for': ip });
      for (let i = 0; i < 2; ++i) stalled.push(await stall(t.url, from('203.0.113.1'), BODY.length, BODY.slice(0, 10)));
      await waitFor(() => t.gw.bodies.pendingOf('203.0.113.1') === 2);
      const calls = stub.callsOf('GetBooking').length;

      // Connect JSON: 429, the gateway's RATE_LIMITED with the delay.
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, from('203.0.113.1'));
      assert.equal(a.status, 429);
      assert.equal(a.json().code, 'resource_exhausted');
      assert.match(a.json().message, /too many requests from your address are still sending their body \(at most 2\)/);
      const info = errorInfo(a)!;
      assert.equal(info.reason, 'RATE_LIMITED');
      assert.equal(info.domain, 'console.labshare');
      assert.deepEqual({ ...info.metadata }, { retry_after_ms: '1000', limit: 'pending_bodies_per_address' });
      assert.equal(retryDelayMs(a), 1000);
      assert.equal(a.headers['retry-after'], '1');

      // gRPC-Web: the same refusal in its trailers.
      const g = await request('POST', `${t.url}/${GET_BOOKING}`, {
        headers: { 'content-type': 'application/grpc-web+proto', ...BEARER, 'x-forwarded-for': '203.0.113.1' },
        body: frame(toBinary(GetBookingRequestSchema, create(GetBookingRequestSchema, { name: 'bookings/b1' }))),
      });
      const tr = grpcWebTrailers(g);
      assert.equal(tr.get('grpc-status'), '8', [...tr].join(' '));
      assert.equal(reasonOf(tr)?.reason, 'RATE_LIMITED');
      assert.equal(reasonOf(tr)?.metadata.limit, 'pending_bodies_per_address');
      assert.equal(stub.callsOf('GetBooking').length, calls, 'nothing refused reached the service');

      // Another address is not affected.
      assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, from('203.0.113.2'))).status, 200);

      // A body that arrives gives its place back.
      stalled[0]!.finish(BODY.slice(10));
      await waitFor(() => /^HTTP\/1\.1 200 /.test(stalled[0]!.answer()));
      assert.equal(t.gw.bodies.pendingOf('203.0.113.1'), 1);
      assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, from('203.0.113.1'))).status, 200);
      // So does a client that goes away.
      stalled[1]!.socket.destroy();
      await waitFor(() => t.gw.bodies.pendingOf('203.0.113.1') === 0 && t.gw.bodies.bytes === 0);
    } finally {
      for (const s of stalled) s.socket.destroy();
      await t.stop();
    }
  });

  it('holds at most --max_body_bytes_in_flight of RPC bodies, all callers together; a body that does not fit is RATE_LIMITED; the bytes come back when the calls end', async () => {
    const t = await startGateway((port) => testConfig({
      upstream: stub.address, port, bodyLimitBytes: 40_000, maxBodyBytesInFlight: 100_000, trustedProxies: loopbackProxy(),
    }));
    const stalled: Stalled[] = [];
    const padded = (n: number) => BODY + ' '.repeat(n - BODY.length); // JSON: whitespace after the object
    try {
      // Three clients, three addresses, 30,000 bytes each sent of 40,000.
      for (const ip of ['198.51.100.11', '198.51.100.12', '198.51.100.13']) {
        stalled.push(await stall(t.url, { ...JSON_HEADERS, 'x-forwarded-for': ip }, 40_000, padded(40_000).slice(0, 30_000)));
      }
      await waitFor(() => t.gw.bodies.bytes === 90_000);
      // A fourth, complete, of 20,000 bytes: 10,000 more do not fit.
      const big = await request('POST', `${t.url}/${GET_BOOKING}`, {
        headers: { ...JSON_HEADERS, 'x-forwarded-for': '198.51.100.14' }, body: padded(20_000),
      });
      assert.equal(big.status, 429, big.text);
      assert.equal(errorInfo(big)?.reason, 'RATE_LIMITED');
      assert.deepEqual({ ...errorInfo(big)!.metadata }, { retry_after_ms: '1000', limit: 'body_bytes_in_flight' });
      assert.equal(big.headers['retry-after'], '1');
      await waitFor(() => t.gw.bodies.bytes === 90_000);
      assert.ok(t.gw.bodies.bytes <= 100_000);
      // A small one fits.
      assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...BEARER, 'x-forwarded-for': '198.51.100.15' })).status, 200);
      // The stalled clients go away: their bytes come back, the large body passes.
      for (const s of stalled) s.socket.destroy();
      await waitFor(() => t.gw.bodies.bytes === 0);
      const again = await request('POST', `${t.url}/${GET_BOOKING}`, {
        headers: { ...JSON_HEADERS, 'x-forwarded-for': '198.51.100.14' }, body: padded(20_000),
      });
      assert.equal(again.status, 200, again.text);
      await waitFor(() => t.gw.bodies.bytes === 0);
    } finally {
      for (const s of stalled) s.socket.destroy();
      await t.stop();
    }
  });

  it('refuses a body still arriving after --body_read_timeout over HTTP/1.1 (408, Connect JSON) and closes the connection', async () => {
    const t = await startGateway((port) => testConfig({ upstream: stub.address, port, bodyReadTimeoutMs: 200 }));
    try {
      const s = await stall(t.url, JSON_HEADERS, BODY.length, BODY.slice(0, 10));
      // The old gateway waited for the body until Node's own request timeout (60 s and more).
      let guard: NodeJS.Timeout | undefined;
      await Promise.race([s.closed, new Promise<void>((resolve) => { guard = setTimeout(resolve, 10_000); })]);
      clearTimeout(guard);
      assert.match(s.answer(), /^HTTP\/1\.1 408 /);
      assert.match(s.answer(), /\r\nconnection: close\r\n/i);
      assert.ok(s.answer().includes('{"code":"deadline_exceeded","message":"the request body did not arrive within 200 ms of its headers; send the body at once"'),
        s.answer());
      await waitFor(() => t.gw.bodies.pendingOf('127.0.0.1') === 0 && t.gw.bodies.bytes === 0);
    } finally {
      await t.stop();
    }
  });

  describe('over HTTPS', () => {
    let pki: string;
    let running: Running;
    let ca: Buffer;
    before(async () => {
      pki = makePki();
      ca = fs.readFileSync(path.join(pki, 'ca.crt'));
      running = await listen(testConfig({
        upstream: stub.address, port: 0, bodyReadTimeoutMs: 300,
        https: { cert: path.join(pki, 'console.crt'), key: path.join(pki, 'console.key') },
      }));
    });
    after(async () => {
      await running.stop(0);
    });

    it('offers at most 100 streams per HTTP/2 connection, and HTTP/1.1 over TLS the request and header timeouts of plain HTTP', async () => {
      const session = http2.connect(running.url, { ca, servername: 'localhost', rejectUnauthorized: false });
      try {
        const settings = await new Promise<http2.Settings>((resolve) => session.once('remoteSettings', resolve));
        assert.equal(settings.maxConcurrentStreams, HTTP2_MAX_STREAMS);
        assert.equal(HTTP2_MAX_STREAMS, 100);
      } finally {
        session.close();
      }
      const s = running.server as unknown as { requestTimeout: number; headersTimeout: number };
      assert.equal(s.requestTimeout, REQUEST_TIMEOUT_MS);
      assert.equal(s.headersTimeout, HEADERS_TIMEOUT_MS);
      assert.deepEqual([REQUEST_TIMEOUT_MS, HEADERS_TIMEOUT_MS], [60_000, 20_000]);
    });

    it('refuses an HTTP/2 body still arriving after --body_read_timeout although the client keeps PINGing, in the caller\'s protocol; the connection goes on', async () => {
      const session = http2.connect(running.url, { ca, servername: 'localhost', rejectUnauthorized: false });
      session.on('error', () => {});
      // PINGs all along: the connection is never idle.
      const pinging = setInterval(() => session.ping(() => {}), 20);
      // The answer to a stream that sends part of its body and stops; the
      // old gateway never answered (its 120 s idle timer restarts at every PING).
      const partial = (headers: http2.OutgoingHttpHeaders, part: Buffer) => new Promise<{
        status: number; headers: Map<string, string>; body: string; rstCode: number;
      }>((resolve, reject) => {
        const out = new Map<string, string>();
        const take = (h: http2.IncomingHttpHeaders) => {
          for (const [k, v] of Object.entries(h)) if (typeof v === 'string' || typeof v === 'number') out.set(k, String(v));
        };
        const st = session.request({ ':method': 'POST', ':path': `/${GET_BOOKING}`, ...BEARER, ...headers });
        let body = '';
        st.on('response', take);
        st.on('trailers', take);
        st.on('data', (c: Buffer) => { body += c.toString('utf8'); });
        st.on('close', () => resolve({ status: Number(out.get(':status')), headers: out, body, rstCode: st.rstCode ?? -1 }));
        st.on('error', () => {});
        const guard = setTimeout(() => { st.close(); reject(new Error('no answer: the body is still awaited')); }, 10_000);
        st.on('close', () => clearTimeout(guard));
        st.write(part);
      });
      try {
        const c = await partial({ 'content-type': 'application/json', 'connect-protocol-version': '1', 'content-length': String(BODY.length) },
          Buffer.from(BODY.slice(0, 10)));
        assert.equal(c.status, 408);
        const body = JSON.parse(c.body) as { code: string; details: { type: string; value: string }[] };
        assert.equal(body.code, 'deadline_exceeded');
        const info = fromBinary(ErrorInfoSchema, Buffer.from(body.details.find((d) => d.type === 'google.rpc.ErrorInfo')!.value, 'base64'));
        assert.equal(info.reason, 'INVALID_REQUEST');
        assert.deepEqual({ ...info.metadata }, { timeout_ms: '300' });
        assert.equal(c.rstCode, http2.constants.NGHTTP2_NO_ERROR, 'the stream is closed after the answer (the client stops sending)');

        const message = frame(toBinary(GetBookingRequestSchema, create(GetBookingRequestSchema, { name: 'bookings/b1' })));
        const g = await partial({ 'content-type': 'application/grpc', te: 'trailers' }, message.subarray(0, 8));
        assert.equal(g.headers.get('grpc-status'), '4', JSON.stringify([...g.headers, ['body', g.body], ['rst', g.rstCode]])); // DEADLINE_EXCEEDED
        assert.equal(reasonOf(g.headers)?.reason, 'INVALID_REQUEST');

        // The connection serves on.
        const ok = await new Promise<number>((resolve, reject) => {
          const st = session.request({ ':method': 'POST', ':path': `/${GET_BOOKING}`, 'content-type': 'application/json', ...BEARER });
          st.on('response', (h) => resolve(Number(h[':status'])));
          st.on('error', reject);
          st.resume();
          st.end(BODY);
        });
        assert.equal(ok, 200);
        await waitFor(() => running.gateway.bodies.bytes === 0 && running.gateway.bodies.pendingOf('127.0.0.1') === 0);
      } finally {
        clearInterval(pinging);
        session.close();
      }
    });
  });

  it('closes a connection past --max_connections_per_address at once; a trusted proxy is not counted', async () => {
    // One request on the connection and its answer: the connection is open at the gateway.
    const open = async (port: number) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      let answer = '';
      const answered = await new Promise<boolean>((resolve) => {
        socket.on('data', (c: Buffer) => {
          answer += c.toString('latin1');
          if (/^HTTP\/1\.1 200 [^]*\r\n\r\n/.test(answer)) resolve(true);
        });
        socket.once('close', () => resolve(false));
        socket.write('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
      });
      return { socket, answered };
    };
    const capped = await listen(testConfig({ upstream: stub.address, port: 0, maxConnectionsPerAddress: 2 }));
    const sockets: net.Socket[] = [];
    try {
      const port = Number(new URL(capped.url).port);
      for (let i = 0; i < 2; ++i) {
        const c = await open(port);
        assert.equal(c.answered, true);
        sockets.push(c.socket);
      }
      const third = await open(port);
      sockets.push(third.socket);
      assert.equal(third.answered, false, 'the third connection is closed without an answer');
      // One of the two goes: a new connection is taken again.
      sockets[0]!.destroy();
      let again = false;
      for (let i = 0; i < 200 && !again; ++i) {
        const c = await open(port);
        sockets.push(c.socket);
        again = c.answered;
      }
      assert.equal(again, true);
    } finally {
      for (const s of sockets) s.destroy();
      await capped.stop(0);
    }
    const proxied = await listen(testConfig({
      upstream: stub.address, port: 0, maxConnectionsPerAddress: 1, trustedProxies: loopbackProxy(),
    }));
    try {
      const port = Number(new URL(proxied.url).port);
      for (let i = 0; i < 3; ++i) {
        const c = await open(port);
        sockets.push(c.socket);
        assert.equal(c.answered, true, 'a trusted proxy carries many clients');
      }
    } finally {
      for (const s of sockets) s.destroy();
      await proxied.stop(0);
    }
  });
});

function tokens(user: string, now: number, over: Partial<Tokens> = {}): Tokens {
  return {
    accessToken: `access-${user}`, accessExpiresAt: now + 900_000, refreshToken: `rt-${user}`, refreshExpiresAt: now + 12 * 3600_000,
    user: { name: `users/${user}`, displayName: user, organization: 'organizations/nanocraft', roles: ['LAB_USER'] },
    ...over,
  };
}

describe('edge review 2: the session table', () => {
  it('keeps at most --max_sessions_per_user sessions of one person: a new one ends their own least recently used, nobody else\'s', () => {
    const clock = { t: 0 };
    const ended: string[] = [];
    const store = new SessionStore(() => clock.t, 3_600_000, 100, (s) => ended.push(s.accessToken), 3);
    const other = store.create(tokens('chen-jing', 0, { accessToken: 'c1' }));
    const mine: Session[] = [];
    for (let i = 1; i <= 3; ++i) {
      clock.t += 1000;
      mine.push(store.create(tokens('li-wei', clock.t, { accessToken: `l${i}` })));
    }
    clock.t += 1000;
    store.touch(mine[0]!); // l1 used again: l2 is the least recently used
    for (let i = 4; i <= 20; ++i) store.create(tokens('li-wei', clock.t, { accessToken: `l${i}` }));
    assert.equal(store.sessionsOf('users/li-wei').length, 3);
    assert.deepEqual(ended.slice(0, 1), ['l2']);
    assert.equal(ended.length, 17);
    assert.ok(!ended.includes('c1'));
    assert.equal(store.lookup(other.id).session, other);
    assert.equal(store.size, 4);
  });

  it('when full, ends expired sessions first, then the person\'s own; refuses the sign-in (SessionsFull) rather than end another person\'s live session', () => {
    const clock = { t: 0 };
    const ended: string[] = [];
    const store = new SessionStore(() => clock.t, 60_000, 3, (s) => ended.push(s.accessToken), 10);
    const a = store.create(tokens('a', 0));
    const b = store.create(tokens('b', 0));
    clock.t = 30_000;
    const c = store.create(tokens('c', clock.t));
    store.touch(a);
    clock.t = 70_000; // b idle for 70 s (> 60 s): expired; a and c live
    const d = store.create(tokens('d', clock.t));
    assert.deepEqual(ended, ['access-b'], 'the expired one went');
    assert.equal(store.lookup(b.id).session, undefined);
    // Full of live sessions of others: refused, nobody ended.
    assert.throws(() => store.create(tokens('e', clock.t)), SessionsFull);
    assert.deepEqual(ended, ['access-b']);
    for (const s of [a, c, d]) assert.equal(store.lookup(s.id).session, s);
    // A session past its refresh token's end, not at the head: found too.
    c.refreshExpiresAt = clock.t;
    clock.t += 1000;
    const e = store.create(tokens('e', clock.t));
    assert.deepEqual(ended, ['access-b', 'access-c']);
    // Full again; a person who has a session: their own goes.
    const a2 = store.create(tokens('a', clock.t, { accessToken: 'a2' }));
    assert.deepEqual(ended, ['access-b', 'access-c', 'access-a']);
    for (const s of [d, e, a2]) assert.equal(store.lookup(s.id).session, s);
  });

  it('answers /auth/callback with signin_error=SESSIONS_FULL (and revokes the tokens just issued) when every session is another person\'s and live', async () => {
    const stub = await new Stub().start();
    const t = await startGateway((port) => testConfig({ upstream: stub.address, port, maxSessions: 2, maxSessionsPerUser: 10 }));
    const auth = t.gw.auth as unknown as { oidc: unknown };
    const claims = Buffer.from(JSON.stringify({ sub: 'acct-li-wei', preferred_username: 'li-wei' })).toString('base64url');
    auth.oidc = { finish: async () => `h.${claims}.s` };
    const callback = (state: string) => request('GET', `${t.url}/auth/callback?code=c&state=${state}`, {
      headers: { cookie: `${SIGNIN}=${t.gw.auth.signins.seal({ state, nonce: 'n', codeVerifier: 'v', returnTo: '#/bookings', createdAt: t.clock.t })}` },
    });
    try {
      const others = ['chen-jing', 'sun-mei'].map((u) => t.gw.auth.sessions.create(tokens(u, t.clock.t)));
      const revoked = stub.revoked.length;
      const back = await callback('s1');
      assert.equal(back.status, 303);
      assert.equal(back.headers.location, '/#/?signin_error=SESSIONS_FULL');
      assert.ok(!(back.headers['set-cookie'] ?? []).some((c) => c.startsWith(`${SESSION}=`) && !c.includes('Max-Age=0')), 'no session');
      for (const s of others) assert.equal(t.gw.auth.sessions.lookup(s.id).session, s, 'the others stay signed in');
      await waitFor(() => stub.revoked.length === revoked + 1);
      assert.match(stub.revoked.at(-1)!, /^rt-\d+$/, 'the refresh token ExchangeToken just issued');
      assert.ok(logs.some((l) => l.signin_error === 'SESSIONS_FULL'));
      // One of them idle too long: its place is taken.
      t.clock.t += 31 * 60_000;
      t.gw.auth.sessions.touch(others[1]!);
      const ok = await callback('s2');
      assert.equal(ok.headers.location, '/#/bookings');
      assert.equal(t.gw.auth.sessions.lookup(others[1]!.id).session, others[1]);
      assert.equal(t.gw.auth.sessions.lookup(others[0]!.id).session, undefined);
    } finally {
      await t.stop();
      await stub.stop();
    }
  });
});

describe('edge review 3: pending sign-ins in the browser', () => {
  it('seals a pending sign-in for one state, this process, unchanged, 10 minutes', () => {
    const clock = { t: Date.parse('2026-06-01T08:00:00Z') };
    const c = new SignInCookies(() => clock.t);
    const p = { state: 'state-1', nonce: 'n'.repeat(43), codeVerifier: 'v'.repeat(43), returnTo: '#/bookings?week=2027-03-01', createdAt: clock.t,
      previousSession: 'p'.repeat(43) };
    const sealed = c.seal(p);
    assert.deepEqual(c.open(sealed, 'state-1'), p);
    assert.equal(c.open(sealed, 'state-2'), undefined, 'bound to its state');
    assert.equal(new SignInCookies(() => clock.t).open(sealed, 'state-1'), undefined, 'another process\'s key');
    const raw = Buffer.from(sealed, 'base64url');
    for (const at of [3, 8, 25, raw.length - 1]) { // createdAt, IV, ciphertext, tag
      const bad = Buffer.from(raw);
      bad[at]! ^= 1;
      assert.equal(c.open(bad.toString('base64url'), 'state-1'), undefined, `byte ${at} changed`);
    }
    assert.ok(!raw.toString('latin1').includes('bookings') && !raw.toString('latin1').includes('nnnn'), 'not readable');
    // Not a session id: not carried.
    assert.equal(c.open(c.seal({ ...p, previousSession: 'x' }), 'state-1')?.previousSession, undefined);
    clock.t += 10 * 60_000 - 1;
    assert.ok(c.open(sealed, 'state-1'));
    clock.t += 1;
    assert.equal(c.open(sealed, 'state-1'), undefined, 'expired');
    assert.deepEqual(c.pending(sealed), []);
    // The cookie: the newest five that fit in MAX_SIGNIN_COOKIE characters.
    const many = Array.from({ length: 7 }, (_, i) => c.seal({ ...p, state: `s${i}`, createdAt: clock.t }));
    const value = c.value(many);
    assert.deepEqual(value.split('.'), many.slice(-MAX_PENDING_PER_BROWSER));
    assert.deepEqual(c.pending(`${value}.garbage..${many[0]}`), [...many.slice(-MAX_PENDING_PER_BROWSER), many[0]]);
    const long = Array.from({ length: 5 }, (_, i) => c.seal({ ...p, state: `l${i}`, returnTo: `#/${'a'.repeat(498)}`, createdAt: clock.t }));
    const kept = c.value(long);
    assert.ok(kept.length <= MAX_SIGNIN_COOKIE && kept.split('.').length >= 3, String(kept.length));
    assert.equal(kept.split('.').at(-1), long.at(-1));
  });

  it('keeps no table of pending sign-ins: 10,001 sign-ins started from as many addresses do not push out another browser\'s', async () => {
    const stub = await new Stub().start();
    const t = await startGateway((port) => testConfig({ upstream: stub.address, port, trustedProxies: loopbackProxy() }));
    // The provider played by a stand-in (its pages: signin.test.ts): the
    // authorization URL names the state, the code exchange gives an ID token.
    const auth = t.gw.auth as unknown as { oidc: unknown };
    const states: string[] = [];
    const claims = Buffer.from(JSON.stringify({ sub: 'acct-li-wei', preferred_username: 'li-wei' })).toString('base64url');
    auth.oidc = {
      authorizationUrl: async (p: { state: string }) => {
        states.push(p.state);
        return new URL(`https://id.example.org/auth?state=${p.state}`);
      },
      finish: async (_u: URL, p: { state: string }) => {
        assert.equal(p.state, states[0]);
        return `h.${claims}.s`;
      },
    };
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const login = (ip: string) => new Promise<http.IncomingHttpHeaders>((resolve, reject) => {
      const req = http.request(`${t.url}/auth/login`, { agent, headers: { 'x-forwarded-for': ip } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.headers));
      });
      req.on('error', reject);
      req.end();
    });
    try {
      const mine = await login('192.0.2.1');
      const cookie = /^(__Host-labshare_signin=[^;]*)/.exec(mine['set-cookie']?.[0] ?? '')![1]!;
      // Everybody else: one sign-in from each of 10,001 addresses (the old
      // table held 10,000 and pushed the oldest out).
      const n = 10_001;
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next < n) {
          const i = next++;
          await login(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
        }
      }));
      assert.equal(states.length, n + 1);
      const back = await request('GET', `${t.url}/auth/callback?code=c&state=${states[0]}`, { headers: { cookie } });
      assert.equal(back.status, 303);
      assert.equal(back.headers.location, '/#/', 'signed in');
      assert.ok((back.headers['set-cookie'] ?? []).some((c) => c.startsWith(`${SESSION}=`) && !c.includes('Max-Age=0')));
    } finally {
      agent.destroy();
      await t.stop();
      await stub.stop();
    }
  });
});

describe('edge review 4: sign-out', () => {
  it('ends the session before RevokeToken answers: no call of it is served meanwhile', async () => {
    const stub = await new Stub().start();
    const t = await startGateway((port) => testConfig({ upstream: stub.address, port }));
    let release!: () => void;
    try {
      const s = t.gw.auth.sessions.create(tokens('li-wei', t.clock.t, { refreshToken: 'rt-signout' }));
      const h = { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken, origin: t.origin };
      stub.revokeGate = new Promise<void>((r) => { release = r; });
      const out = request('POST', `${t.url}/auth/logout`, { headers: h });
      await waitFor(() => stub.revoked.includes('rt-signout'));
      // RevokeToken has not answered yet: the session is over already.
      const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, h);
      assert.equal(a.status, 401);
      assert.equal(errorInfo(a)?.reason, 'SESSION_EXPIRED');
      release();
      const done = await out;
      assert.equal(done.status, 200);
      assert.deepEqual(done.json(), { signedIn: false, roles: [], redirect: null });
      assert.equal(stub.revoked.filter((r) => r === 'rt-signout').length, 1, 'revoked once');
    } finally {
      release?.();
      stub.revokeGate = undefined;
      await t.stop();
      await stub.stop();
    }
  });
});
