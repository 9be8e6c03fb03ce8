// The web-edge audit of 2026-12-07, one test per finding: the caller's
// deadline and compression headers never pre-empt the edge's refusal and
// never answer without the gateway's ErrorInfo; the content types a
// protocol takes decided by the edge; no RPC answer cached; a token refresh
// bounded by the caller's deadline.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Code } from '@connectrpc/connect';
import { ErrorInfoSchema, type ErrorInfo } from '../../gen/google/rpc/error_details_pb.js';
import { StatusSchema } from '../../gen/google/rpc/status_pb.js';
import { GetBookingRequestSchema } from '../../gen/labshare/booking/v1/booking_pb.js';
import { setLogSink } from '../errors.js';
import type { Session } from '../sessions.js';
import {
  CONNECT_JSON, errorInfo, newSession, request, rpc, startGateway, Stub, testConfig, waitFor, type Answer, type TestGateway, grpcWebTrailers,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const EXPORT = 'labshare.usage.v1.UsageService/ExportUsage';
const SESSION = '__Host-labshare_session';

setLogSink(() => {});

function frame(payload: Uint8Array, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(payload.byteLength, 1);
  return Buffer.concat([head, payload]);
}
const GET_B1 = frame(toBinary(GetBookingRequestSchema, create(GetBookingRequestSchema, { name: 'bookings/b1' })));

// gRPC-Web over HTTP/1.1: the status in the headers (trailers-only) or the
// trailer frame at the body's end.
function grpcWebStatus(a: Answer): { status?: string; info?: ErrorInfo } {
  const out = grpcWebTrailers(a);
  const st = fromBinary(StatusSchema, Buffer.from(out.get('grpc-status-details-bin') ?? '', 'base64'));
  const d = st.details.find((x) => x.typeUrl.endsWith('/google.rpc.ErrorInfo'));
  return { status: out.get('grpc-status'), info: d ? fromBinary(ErrorInfoSchema, d.value) : undefined };
}

// The end of a Connect stream: its last frame, {"error": {...}}.
function streamEnd(a: Answer): { code?: string; info?: ErrorInfo } {
  let last = '';
  for (let at = 0; at + 5 <= a.raw.length;) {
    const n = a.raw.readUInt32BE(at + 1);
    last = a.raw.subarray(at + 5, at + 5 + n).toString('utf8');
    at += 5 + n;
  }
  const e = (JSON.parse(last || '{}') as { error?: { code: string; details?: { type: string; value: string }[] } }).error;
  const d = e?.details?.find((x) => x.type === 'google.rpc.ErrorInfo');
  return { code: e?.code, info: d ? fromBinary(ErrorInfoSchema, Buffer.from(d.value, 'base64')) : undefined };
}

const grpcWeb = (base: string, headers: Record<string, string>, body: Buffer = GET_B1) =>
  request('POST', `${base}/${GET_BOOKING}`, { headers: { 'content-type': 'application/grpc-web+proto', ...headers }, body });
const connectStream = (base: string, headers: Record<string, string>) =>
  request('POST', `${base}/${EXPORT}`, {
    headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', ...headers }, body: frame(Buffer.from('{}')),
  });

describe('web edge audit (deadline and compression headers, content types, caching, refresh deadline)', () => {
  let stub: Stub;
  let t: TestGateway;

  before(async () => {
    stub = await new Stub().start();
    t = await startGateway((port) => testConfig({ upstream: stub.address, port }));
  });
  after(async () => {
    await t.stop();
    await stub.stop();
  });

  it('2: over the per-address limit, a bad timeout or an unknown compression header still answers RATE_LIMITED with Retry-After', async () => {
    // Connect checked connect-timeout-ms and content-encoding before it read
    // the body carrying the edge's refusal: 400 "invalid connect timeout"
    // and unimplemented "unknown compression", without an ErrorInfo.
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, addressRateLimit: { perSecond: 1, burst: 1 } }));
    try {
      const auth = { authorization: 'Bearer tok' };
      assert.equal((await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, auth)).status, 200);
      const before = stub.callsOf('GetBooking').length;
      for (const extra of [{ 'connect-timeout-ms': 'soon' }, { 'content-encoding': 'deflate' }, { 'connect-timeout-ms': 'soon', 'content-encoding': 'deflate' }] as Record<string, string>[]) {
        const what = JSON.stringify(extra);
        const a = await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { ...auth, ...extra });
        assert.equal(a.status, 429, `${what}: ${a.text}`);
        assert.equal(a.json().code, 'resource_exhausted', what);
        assert.equal(errorInfo(a)?.reason, 'RATE_LIMITED', what);
        assert.equal(errorInfo(a)?.domain, 'console.labshare', what);
        assert.equal(a.headers['retry-after'], '1', what);
      }
      for (const extra of [{ 'grpc-timeout': 'soon' }, { 'grpc-encoding': 'deflate' }] as Record<string, string>[]) {
        const st = grpcWebStatus(await grpcWeb(t2.url, { ...auth, ...extra }));
        assert.equal(st.status, String(Code.ResourceExhausted), JSON.stringify(extra));
        assert.equal(st.info?.reason, 'RATE_LIMITED', JSON.stringify(extra));
      }
      for (const extra of [{ 'connect-timeout-ms': 'soon' }, { 'connect-content-encoding': 'deflate' }] as Record<string, string>[]) {
        const end = streamEnd(await connectStream(t2.url, { ...auth, ...extra }));
        assert.equal(end.code, 'resource_exhausted', JSON.stringify(extra));
        assert.equal(end.info?.reason, 'RATE_LIMITED', JSON.stringify(extra));
      }
      assert.equal(stub.callsOf('GetBooking').length, before, 'the service is not called');
    } finally {
      await t2.stop();
    }
  });

  it('2: an unreadable timeout or an unknown compression answers INVALID_REQUEST with the gateway\'s ErrorInfo in every protocol', async () => {
    // errors.ts: "Every error the gateway answers carries an ErrorInfo";
    // README: "a header Connect cannot read: invalid_argument INVALID_REQUEST".
    // Connect answered gRPC-Web and Connect streams without one.
    const auth = { authorization: 'Bearer tok' };
    const bookings = stub.callsOf('GetBooking').length;
    const exports = stub.callsOf('ExportUsage').length;
    // Connect unary.
    const timeout = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...auth, 'connect-timeout-ms': 'soon' });
    assert.equal(timeout.status, 400);
    assert.equal(timeout.json().code, 'invalid_argument');
    assert.equal(errorInfo(timeout)?.reason, 'INVALID_REQUEST');
    assert.equal(errorInfo(timeout)?.domain, 'console.labshare');
    const deflate = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { ...CONNECT_JSON, ...auth, 'content-encoding': 'deflate' }, body: '{"name":"bookings/b1"}',
    });
    assert.equal(deflate.status, 501, deflate.text);
    assert.equal(deflate.json().code, 'unimplemented');
    assert.equal(errorInfo(deflate)?.reason, 'INVALID_REQUEST');
    assert.equal(errorInfo(deflate)?.domain, 'console.labshare');
    // gRPC-Web.
    for (const [extra, code] of [
      [{ 'grpc-timeout': 'soon' }, Code.InvalidArgument], [{ 'grpc-timeout': '123456789S' }, Code.InvalidArgument],
      [{ 'grpc-encoding': 'deflate' }, Code.Unimplemented],
    ] as const) {
      const st = grpcWebStatus(await grpcWeb(t.url, { ...auth, ...extra }));
      assert.equal(st.status, String(code), JSON.stringify(extra));
      assert.equal(st.info?.reason, 'INVALID_REQUEST', JSON.stringify(extra));
      assert.equal(st.info?.domain, 'console.labshare', JSON.stringify(extra));
    }
    // A Connect server stream.
    for (const [extra, code] of [[{ 'connect-timeout-ms': 'soon' }, 'invalid_argument'], [{ 'connect-content-encoding': 'deflate' }, 'unimplemented']] as const) {
      const end = streamEnd(await connectStream(t.url, { ...auth, ...extra }));
      assert.equal(end.code, code, JSON.stringify(extra));
      assert.equal(end.info?.reason, 'INVALID_REQUEST', JSON.stringify(extra));
      assert.equal(end.info?.domain, 'console.labshare', JSON.stringify(extra));
    }
    assert.equal(stub.callsOf('GetBooking').length, bookings, 'the service is not called');
    assert.equal(stub.callsOf('ExportUsage').length, exports, 'the service is not called');
    // Readable ones pass.
    assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...auth, 'connect-timeout-ms': '5000' })).status, 200);
    assert.equal(grpcWebStatus(await grpcWeb(t.url, { ...auth, 'grpc-timeout': '5S', 'grpc-encoding': 'identity' })).status, '0');
  });

  it('3: a content type Connect offers but its handler refuses (application/connectjson, gRPC-Web text) is 415 UNSUPPORTED_CONTENT_TYPE', async () => {
    // README: a content type none of the protocols takes answers 415 with
    // the Connect JSON error. These answered a bare 415 with an empty body.
    const before = stub.callsOf('ExportUsage').length;
    for (const [method, type] of [
      [EXPORT, 'application/connectjson'], [EXPORT, 'application/connectproto'],
      [GET_BOOKING, 'application/grpc-web-text'], [GET_BOOKING, 'application/grpc-web-text+proto'],
    ] as const) {
      const a = await request('POST', `${t.url}/${method}`, {
        headers: { 'content-type': type, 'connect-protocol-version': '1', authorization: 'Bearer tok' }, body: frame(Buffer.from('{}')),
      });
      assert.equal(a.status, 415, type);
      assert.equal(a.headers['content-type'], 'application/json', type);
      assert.equal(a.json().code, 'invalid_argument', type);
      assert.equal(errorInfo(a)?.reason, 'UNSUPPORTED_CONTENT_TYPE', type);
      assert.equal(errorInfo(a)?.domain, 'console.labshare', type);
    }
    assert.equal(stub.callsOf('ExportUsage').length, before);
    // The types the protocols do take still go through.
    assert.equal(streamEnd(await connectStream(t.url, { authorization: 'Bearer tok' })).code, 'aborted');
    const charset = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { 'content-type': 'application/json; charset=utf-8', 'connect-protocol-version': '1', authorization: 'Bearer tok' },
      body: '{"name":"bookings/b1"}',
    });
    assert.equal(charset.status, 200);
  });

  it('4: every RPC answer says Cache-Control: no-store (success, error, every protocol)', async () => {
    const auth = { authorization: 'Bearer tok' };
    const answers: [string, Answer][] = [
      ['Connect ok', await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, auth)],
      ['Connect service error', await rpc(t.url, GET_BOOKING, { name: 'bookings/missing' }, auth)],
      ['Connect edge refusal', await rpc(t.url, GET_BOOKING, { name: 'bookings/b1', nmae: 'x' }, auth)],
      ['Connect gateway refusal', await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Basic x' })],
      ['gRPC-Web ok', await grpcWeb(t.url, auth)],
      ['Connect stream', await connectStream(t.url, auth)],
    ];
    for (const [what, a] of answers) assert.equal(a.headers['cache-control'], 'no-store', `${what}: ${a.status}`);
    assert.equal(answers[0]![1].status, 200);
    assert.equal(answers[1]![1].status, 404);
  });

  it('5: a call waits for its session\'s token refresh no longer than its own deadline; the refresh goes on for the session', async () => {
    stub.lenientRefresh = true;
    let release!: () => void;
    stub.refreshGate = new Promise<void>((r) => { release = r; });
    try {
      // The access token expires within --refresh_margin: the call refreshes first.
      const s: Session = newSession(t, { accessExpiresAt: t.clock.t + 30_000, refreshToken: 'rt-deadline' });
      const cookie = { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken, origin: t.origin };
      const refreshes = stub.refreshes;
      const started = Date.now();
      const short = rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...cookie, 'connect-timeout-ms': '300' });
      await waitFor(() => stub.refreshes === refreshes + 1);
      // A second call of the session, with a long deadline, waits for the same refresh.
      const long = rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...cookie, 'connect-timeout-ms': '30000' });
      const first = await Promise.race([short, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3000))]);
      const waited = Date.now() - started;
      release();
      assert.ok(first, 'the call with a 300 ms deadline answered while the refresh was still under way');
      assert.ok(waited < 3000, `answered after ${waited} ms`);
      assert.equal(first.status, 504, first.text);
      assert.equal(first.json().code, 'deadline_exceeded');
      assert.equal(errorInfo(first)?.reason, 'UPSTREAM_DEADLINE');
      assert.equal(errorInfo(first)?.domain, 'console.labshare');
      const second = await long;
      assert.equal(second.status, 200, second.text);
      assert.notEqual(s.accessToken, 'access-s', 'the refresh completed for the session');
      assert.equal(second.json().user, `users/for-${s.accessToken}`);
      assert.equal(stub.refreshes, refreshes + 1, 'one refresh');
      assert.equal(t.gw.auth.sessions.lookup(s.id).session, s, 'the session lives on');
    } finally {
      release();
      stub.refreshGate = undefined;
      stub.lenientRefresh = false;
    }
  });
});
