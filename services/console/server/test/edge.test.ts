// The web-edge audit of 2026-12-06 (README, types.proto, docs/api-reference.md
// against the gateway), one test per finding: refusals keep their headers,
// every refusal carries an ErrorInfo, malformed Authorization headers, the
// per-address bucket before Connect, methods and content types on RPC paths,
// feed tokens, --body_limit on the public pages, HSTS on the raw 400, and
// IPv6 addresses grouped by /64.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import http2 from 'node:http2';
import tls from 'node:tls';
import zlib from 'node:zlib';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcWebTransport } from '@connectrpc/connect-node';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb.js';
import { StatusSchema } from '../../gen/google/rpc/status_pb.js';
import { BookingService, GetBookingRequestSchema } from '../../gen/labshare/booking/v1/booking_pb.js';
import * as errors from '../errors.js';
import { setLogSink } from '../errors.js';
import { duplicateKey } from '../edge.js';
import { listen } from '../gateway.js';
import {
  newSession, consoleDir, CONNECT_JSON, errorInfo, FEED_TOKEN, makePki, request, retryDelayMs, rpc, startGateway, Stub, testConfig, type TestGateway, grpcWebTrailers,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const SESSION = '__Host-labshare_session';
const INVOICE = '/documents/invoices/ls-cny-2027-000001.pdf';

const logs: Record<string, unknown>[] = [];
setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));

describe('web edge audit', () => {
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

  it('1: an invoice download refused keeps the error\'s headers (cookie cleared, Retry-After); its address limit answers Connect JSON', async () => {
    // An ended session: SESSION_EXPIRED with the cookie cleared, as on the RPC paths.
    const gone = await request('GET', `${t.url}${INVOICE}`, { headers: { cookie: `${SESSION}=no-such-session` } });
    assert.equal(gone.status, 401);
    assert.equal(errorInfo(gone)?.reason, 'SESSION_EXPIRED');
    assert.ok((gone.headers['set-cookie'] ?? []).some((c) => c.startsWith(`${SESSION}=;`) && c.includes('Max-Age=0')), 'cookie cleared');
    assert.equal(gone.headers['content-type'], 'application/json');

    // The per-caller limit: RATE_LIMITED with Retry-After.
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, rateLimit: { perSecond: 1, burst: 1 } }));
    try {
      const h = { authorization: 'Bearer script-token' };
      assert.equal((await request('GET', `${t2.url}${INVOICE}`, { headers: h })).status, 200);
      const a = await request('GET', `${t2.url}${INVOICE}`, { headers: h });
      assert.equal(a.status, 429);
      assert.equal(errorInfo(a)?.reason, 'RATE_LIMITED');
      assert.equal(a.headers['retry-after'], '1');
    } finally {
      await t2.stop();
    }

    // The per-address limit on /documents: the Connect JSON error too.
    const t3 = await startGateway((port) => testConfig({ upstream: stub.address, port, addressRateLimit: { perSecond: 1, burst: 1 } }));
    try {
      const h = { authorization: 'Bearer script-token' };
      assert.equal((await request('GET', `${t3.url}${INVOICE}`, { headers: h })).status, 200);
      const a = await request('GET', `${t3.url}${INVOICE}`, { headers: h });
      assert.equal(a.status, 429);
      assert.equal(a.headers['content-type'], 'application/json');
      assert.equal(a.json().code, 'resource_exhausted');
      assert.equal(errorInfo(a)?.reason, 'RATE_LIMITED');
      assert.equal(errorInfo(a)?.domain, 'console.labshare');
      assert.ok(retryDelayMs(a)! > 0);
      assert.equal(a.headers['retry-after'], '1');
    } finally {
      await t3.stop();
    }
  });

  it('2: Connect\'s own refusals carry the gateway\'s ErrorInfo: unknown field, bad value, not JSON, too large, unreadable binary, bad headers', async () => {
    const before = stub.callsOf('GetBooking').length;
    const auth = { authorization: 'Bearer tok' };
    const unknown = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1', nmae: 'x' }, auth);
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json().code, 'invalid_argument');
    assert.equal(errorInfo(unknown)?.reason, 'INVALID_FIELD');
    assert.equal(errorInfo(unknown)?.domain, 'console.labshare');
    assert.equal(errorInfo(unknown)?.metadata.field, 'nmae');
    const nested = await rpc(t.url, 'labshare.usage.v1.UsageService/GetUsageFigures',
      { range: { startTime: '2027-03-01T00:00:00Z' }, filter: { instrument: ['instruments/sem-1'] } }, auth);
    assert.equal(errorInfo(nested)?.reason, 'INVALID_FIELD');
    assert.equal(errorInfo(nested)?.metadata.field, 'filter.instrument');
    const value = await rpc(t.url, 'labshare.inventory.v1.InventoryService/ListInstruments', { pageSize: 'ten' }, auth);
    assert.equal(value.status, 400);
    assert.equal(errorInfo(value)?.reason, 'INVALID_FIELD');
    assert.equal(errorInfo(value)?.metadata.field, 'page_size');
    for (const body of ['{"name":', 'not json', '', '[1]', '"x"']) {
      const a = await request('POST', `${t.url}/${GET_BOOKING}`, { headers: { ...CONNECT_JSON, ...auth }, body });
      assert.equal(a.status, 400, body);
      assert.equal(a.json().code, 'invalid_argument', body);
      assert.equal(errorInfo(a)?.reason, 'INVALID_JSON', body);
    }
    const big = await rpc(t.url, GET_BOOKING, { name: 'x'.repeat(5000) }, auth);
    assert.equal(big.status, 413);
    assert.equal(big.json().code, 'resource_exhausted');
    assert.equal(errorInfo(big)?.reason, 'BODY_TOO_LARGE');
    const binary = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { 'content-type': 'application/proto', 'connect-protocol-version': '1', ...auth }, body: Buffer.from([0xff, 0xff, 0xff]),
    });
    assert.equal(binary.status, 400);
    assert.equal(errorInfo(binary)?.reason, 'INVALID_REQUEST');
    // Refused by Connect itself after the checks: an unreadable timeout header.
    const timeout = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { ...auth, 'connect-timeout-ms': 'soon' });
    assert.equal(timeout.json().code, 'invalid_argument');
    assert.equal(errorInfo(timeout)?.reason, 'INVALID_REQUEST');
    assert.equal(errorInfo(timeout)?.domain, 'console.labshare');
    assert.equal(stub.callsOf('GetBooking').length, before, 'the service is not called');
  });

  it('2: a value the message cannot take (enum name, timestamp, duration, field mask, list entry) is INVALID_FIELD naming its path', async () => {
    // README: "a value it cannot take: invalid_argument INVALID_FIELD with
    // metadata field". protobuf-es reports enums and well-known types
    // without the field ("cannot decode enum ..."), and these were
    // INVALID_JSON without a field. Paths as the services name fields
    // (types.proto: a list's entry by its index, "states[1]").
    const before = stub.callsOf('ListBookings').length;
    const auth = { authorization: 'Bearer tok' };
    const cases: [string, Record<string, unknown>, string][] = [
      ['labshare.booking.v1.BookingService/ListBookings', { states: ['CONFIRMED', 'NOPE'] }, 'states[1]'],
      ['labshare.booking.v1.BookingService/ListBookings', { mode: 'FLYING' }, 'mode'],
      ['labshare.usage.v1.UsageService/GetUsageFigures', { range: { startTime: 'yesterday' } }, 'range.start_time'],
      ['labshare.inventory.v1.InventoryService/UpdateInstrument', { updateMask: 5 }, 'update_mask'],
      ['labshare.inventory.v1.InventoryService/UpdateInstrument',
        { instrument: { modes: [{}, { slotRules: { maxBlock: 'long' } }] } }, 'instrument.modes[1].slot_rules.max_block'],
      ['labshare.inventory.v1.InventoryService/ListInstruments', { pageSize: 'ten' }, 'page_size'],
    ];
    for (const [method, body, field] of cases) {
      const a = await rpc(t.url, method, body, auth);
      assert.equal(a.status, 400, field);
      assert.equal(a.json().code, 'invalid_argument', field);
      assert.equal(errorInfo(a)?.reason, 'INVALID_FIELD', field);
      assert.equal(errorInfo(a)?.domain, 'console.labshare', field);
      assert.equal(errorInfo(a)?.metadata.field, field);
    }
    assert.equal(stub.callsOf('ListBookings').length, before, 'the service is not called');
  });

  it('3: protobuf that does not decode is INVALID_REQUEST in the caller\'s protocol (gRPC-Web, gRPC, compressed Connect), with the ErrorInfo', async () => {
    // README: "protobuf binary that does not decode ...: invalid_argument
    // INVALID_REQUEST", "in the caller's protocol ... with their ErrorInfo".
    // Connect answered internal "parse binary: ..." (gRPC, gRPC-Web),
    // unimplemented "missing input message" (an empty body), and a gzip
    // Connect body that does not decode internal INTERNAL_ERROR.
    const before = stub.callsOf('GetBooking').length;
    const auth = { authorization: 'Bearer tok' };
    const frame = (payload: Buffer, flags = 0) => {
      const head = Buffer.alloc(5);
      head[0] = flags;
      head.writeUInt32BE(payload.length, 1);
      return Buffer.concat([head, payload]);
    };
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    const bodies: [string, Buffer, Record<string, string>][] = [
      ['garbage', frame(garbage), {}],
      ['empty', Buffer.alloc(0), {}],
      ['short prefix', frame(Buffer.from('\n\x0bbookings/b1')).subarray(0, 8), {}],
      ['two messages', Buffer.concat([frame(Buffer.alloc(0)), frame(Buffer.alloc(0))]), {}],
      ['gzip garbage', frame(garbage, 1), { 'grpc-encoding': 'gzip' }],
      ['gzip of garbage', frame(zlib.gzipSync(garbage), 1), { 'grpc-encoding': 'gzip' }],
    ];
    const reasonOf = (t: Map<string, string>) => {
      const st = fromBinary(StatusSchema, Buffer.from(t.get('grpc-status-details-bin') ?? '', 'base64'));
      const info = st.details.find((d) => d.typeUrl.endsWith('/google.rpc.ErrorInfo'));
      return info ? fromBinary(ErrorInfoSchema, info.value) : undefined;
    };
    for (const [what, body, extra] of bodies) {
      const a = await request('POST', `${t.url}/${GET_BOOKING}`, {
        headers: { 'content-type': 'application/grpc-web+proto', ...auth, ...extra }, body,
      });
      const tr = grpcWebTrailers(a);
      assert.equal(tr.get('grpc-status'), String(Code.InvalidArgument), `${what}: ${[...tr].join(' ')}`);
      assert.equal(reasonOf(tr)?.reason, 'INVALID_REQUEST', what);
      assert.equal(reasonOf(tr)?.domain, 'console.labshare', what);
    }
    // A gzip message that decodes goes through (inflated here).
    const ok = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { 'content-type': 'application/grpc-web+proto', ...auth, 'grpc-encoding': 'gzip' },
      body: frame(zlib.gzipSync(toBinary(GetBookingRequestSchema, create(GetBookingRequestSchema, { name: 'bookings/b1' }))), 1),
    });
    assert.equal(grpcWebTrailers(ok).get('grpc-status'), '0');
    assert.equal(stub.callsOf('GetBooking').length, before + 1);

    // gRPC over HTTPS (HTTP/2).
    const pki = makePki();
    const running = await listen(testConfig({
      upstream: stub.address, port: 0,
      https: { cert: path.join(pki, 'console.crt'), key: path.join(pki, 'console.key') },
    }));
    const session = http2.connect(running.url, { ca: fs.readFileSync(path.join(pki, 'ca.crt')), servername: 'localhost', rejectUnauthorized: false });
    try {
      for (const [what, body, extra] of bodies) {
        const tr = await new Promise<Map<string, string>>((resolve, reject) => {
          const out = new Map<string, string>();
          const take = (h: http2.IncomingHttpHeaders) => {
            for (const [k, v] of Object.entries(h)) if (typeof v === 'string') out.set(k, v);
          };
          const st = session.request({
            ':method': 'POST', ':path': `/${GET_BOOKING}`, 'content-type': 'application/grpc', te: 'trailers', ...auth, ...extra,
          });
          st.on('response', take);
          st.on('trailers', take);
          st.on('data', () => {});
          st.on('end', () => resolve(out));
          st.on('error', reject);
          st.end(body);
        });
        assert.equal(tr.get('grpc-status'), String(Code.InvalidArgument), `gRPC ${what}: ${[...tr].join(' ')}`);
        assert.equal(reasonOf(tr)?.reason, 'INVALID_REQUEST', `gRPC ${what}`);
      }
    } finally {
      session.close();
      await running.stop();
    }

    // Connect unary, gzip: a body that does not inflate, and one that
    // inflates to what does not decode.
    for (const [what, body, type] of [
      ['not gzip', garbage, 'application/proto'],
      ['gzip of garbage', zlib.gzipSync(garbage), 'application/proto'],
    ] as const) {
      const a = await request('POST', `${t.url}/${GET_BOOKING}`, {
        headers: { 'content-type': type, 'connect-protocol-version': '1', 'content-encoding': 'gzip', ...auth }, body,
      });
      assert.equal(a.status, 400, `${what}: ${a.text}`);
      assert.equal(a.json().code, 'invalid_argument', what);
      assert.equal(errorInfo(a)?.reason, 'INVALID_REQUEST', what);
    }
    const gz = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { ...CONNECT_JSON, 'content-encoding': 'gzip', ...auth }, body: zlib.gzipSync('{"nmae":"x"}'),
    });
    assert.equal(errorInfo(gz)?.reason, 'INVALID_FIELD');
    assert.equal(errorInfo(gz)?.metadata.field, 'nmae');
    const gzOk = await request('POST', `${t.url}/${GET_BOOKING}`, {
      headers: { ...CONNECT_JSON, 'content-encoding': 'gzip', ...auth }, body: zlib.gzipSync('{"name":"bookings/b1"}'),
    });
    assert.equal(gzOk.status, 200);
    assert.equal(gzOk.json().name, 'bookings/b1');
    assert.equal(stub.callsOf('GetBooking').length, before + 2, 'only the calls that decode reach the service');
  });

  it('4: a server stream\'s request is checked in the edge, in the README\'s order, as a unary one (INVALID_FIELD with field, INVALID_REQUEST)', async () => {
    // README: "in this order: the per-address bucket, the method and
    // content type, the size, then the request itself"; a stream's request
    // was read only after the caller was identified (a bad Authorization
    // header answered first), an unknown field was INVALID_REQUEST without
    // field and garbage binary INTERNAL_ERROR.
    const EXPORT = 'labshare.usage.v1.UsageService/ExportUsage';
    const before = stub.callsOf('ExportUsage').length;
    const env = (payload: Buffer, flags = 0) => {
      const head = Buffer.alloc(5);
      head[0] = flags;
      head.writeUInt32BE(payload.length, 1);
      return Buffer.concat([head, payload]);
    };
    // The end of a Connect stream: its last frame, {"error": {...}}.
    const endOf = (raw: Buffer) => {
      let last = '';
      for (let at = 0; at + 5 <= raw.length;) {
        const n = raw.readUInt32BE(at + 1);
        last = raw.subarray(at + 5, at + 5 + n).toString('utf8');
        at += 5 + n;
      }
      const e = (JSON.parse(last) as { error?: { code: string; details?: { type: string; value: string }[] } }).error;
      const d = e?.details?.find((x) => x.type === 'google.rpc.ErrorInfo');
      return { code: e?.code, info: d ? fromBinary(ErrorInfoSchema, Buffer.from(d.value, 'base64')) : undefined };
    };
    const stream = (type: string, body: Buffer, headers: Record<string, string>) =>
      request('POST', `${t.url}/${EXPORT}`, { headers: { 'content-type': type, 'connect-protocol-version': '1', ...headers }, body });
    for (const authorization of ['Bearer tok', 'Basic dXNlcjpwYXNz']) {
      const unknown = endOf((await stream('application/connect+json', env(Buffer.from('{"format":"CSV","filter":{"instrument":["x"]}}')), { authorization })).raw);
      assert.equal(unknown.code, 'invalid_argument', authorization);
      assert.equal(unknown.info?.reason, 'INVALID_FIELD', authorization);
      assert.equal(unknown.info?.metadata.field, 'filter.instrument');
      const value = endOf((await stream('application/connect+json', env(Buffer.from('{"format":"XLS"}')), { authorization })).raw);
      assert.equal(value.info?.reason, 'INVALID_FIELD');
      assert.equal(value.info?.metadata.field, 'format');
      for (const [what, body] of [['garbage', env(Buffer.from([0xff, 0xff, 0xff]))], ['empty', Buffer.alloc(0)], ['not JSON', env(Buffer.from('{'))]] as const) {
        const bad = endOf((await stream(what === 'not JSON' ? 'application/connect+json' : 'application/connect+proto', body, { authorization })).raw);
        assert.equal(bad.code, 'invalid_argument', what);
        assert.equal(bad.info?.reason, what === 'not JSON' ? 'INVALID_JSON' : 'INVALID_REQUEST', what);
        assert.equal(bad.info?.domain, 'console.labshare', what);
      }
    }
    // gRPC-Web too.
    const web = await request('POST', `${t.url}/${EXPORT}`, {
      headers: { 'content-type': 'application/grpc-web+proto', authorization: 'Bearer tok' }, body: env(Buffer.from([0xff, 0xff, 0xff])),
    });
    assert.match(web.raw.toString('latin1') + JSON.stringify(web.headers), /grpc-status"?:"? ?3/);
    assert.equal(stub.callsOf('ExportUsage').length, before, 'the service is not called');
    // A request that decodes still streams (the stub's interrupted export).
    const ok = endOf((await stream('application/connect+json', env(Buffer.from('{}')), { authorization: 'Bearer tok' })).raw);
    assert.equal(ok.code, 'aborted');
    assert.equal(stub.callsOf('ExportUsage').length, before + 1);
  });

  it('9: a JSON body that gives a key twice in one object is INVALID_JSON, as one field given under both its names is', async () => {
    // {"pageSize":2,"pageSize":3} was taken as 3 (JSON.parse keeps the
    // last), while {"pageSize":2,"page_size":3} was refused INVALID_JSON
    // ("set multiple times"): both are refused alike, before the service.
    const before = stub.callsOf('GetBooking').length;
    const auth = { authorization: 'Bearer tok' };
    const post = (body: string) => request('POST', `${t.url}/${GET_BOOKING}`, { headers: { ...CONNECT_JSON, ...auth }, body });
    for (const body of ['{"name":"bookings/b1","name":"bookings/b2"}', '{"name":"bookings/b1","n\\u0061me":"bookings/b2"}']) {
      const a = await post(body);
      assert.equal(a.status, 400, body);
      assert.equal(a.json().code, 'invalid_argument', body);
      assert.equal(errorInfo(a)?.reason, 'INVALID_JSON', body);
      assert.equal(errorInfo(a)?.domain, 'console.labshare', body);
      assert.match(a.json().message, /the key "name" twice in one object/, body);
    }
    const both = await request('POST', `${t.url}/labshare.inventory.v1.InventoryService/ListInstruments`,
      { headers: { ...CONNECT_JSON, ...auth }, body: '{"pageSize":2,"page_size":3}' });
    assert.equal(errorInfo(both)?.reason, 'INVALID_JSON');
    const dup = await request('POST', `${t.url}/labshare.inventory.v1.InventoryService/ListInstruments`,
      { headers: { ...CONNECT_JSON, ...auth }, body: '{"pageSize":2,"pageSize":3}' });
    assert.equal(dup.status, 400);
    assert.equal(errorInfo(dup)?.reason, 'INVALID_JSON');
    assert.equal(stub.callsOf('GetBooking').length, before, 'the service is not called');
    // A key inside a string, or the same key in two objects, is no duplicate.
    const ok = await post('{"name":"bookings/b1\\",\\"name\\":\\"x{[,"}');
    assert.equal(ok.status, 200, ok.text);
    // A server stream's JSON message too.
    const msg = Buffer.from('{"format":"CSV","format":"JSON"}');
    const head = Buffer.alloc(5);
    head.writeUInt32BE(msg.length, 1);
    const stream = await request('POST', `${t.url}/labshare.usage.v1.UsageService/ExportUsage`, {
      headers: { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', ...auth }, body: Buffer.concat([head, msg]),
    });
    assert.match(stream.text, /"code":"invalid_argument"/);
    assert.match(stream.text, /twice in one object/);
  });

  it('9: duplicateKey finds a key given twice in one object, decoded, at any depth, and nothing else', () => {
    const cases: [string, string | undefined][] = [
      ['{}', undefined],
      ['{"a":1,"b":2}', undefined],
      ['{"a":1,"a":2}', 'a'],
      ['{"a":1,"\\u0061":2}', 'a'],
      ['{"a":{"b":1},"c":{"b":2}}', undefined],
      ['{"a":[{"b":1},{"b":2}]}', undefined],
      ['{"a":[{"b":1,"b":2}]}', 'b'],
      ['{"a":{"b":{"c":1,"c":2}}}', 'c'],
      ['{"a":"\\"a\\":1,","b":["a","a"]}', undefined],
      ['{"x\\\\":1,"x\\\\":2}', 'x\\'],
      ['{"a":{},"a":[]}', 'a'],
      ['{"a":[1,{"k":"v"}],"b":{"k":[]},"c":{"k":0}}', undefined],
      [' { "a" : 1 , "a" : 2 } ', 'a'],
    ];
    for (const [text, key] of cases) {
      JSON.parse(text); // every case is JSON
      assert.equal(duplicateKey(text), key, text);
    }
  });

  it('2: refusals in the gRPC-Web protocol carry the ErrorInfo too (body over the limit)', async () => {
    const client = createClient(BookingService, createGrpcWebTransport({ baseUrl: t.url, httpVersion: '1.1' }));
    await assert.rejects(client.getBooking({ name: 'x'.repeat(5000) }, { headers: { authorization: 'Bearer tok' } }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(err.findDetails(ErrorInfoSchema)[0]?.reason, 'BODY_TOO_LARGE');
      return true;
    });
    const ok = await client.getBooking({ name: 'bookings/b1' }, { headers: { authorization: 'Bearer tok' } });
    assert.equal(ok.name, 'bookings/b1');
  });

  it('2: an RPC over HTTP/1.0 without a Host header is INVALID_REQUEST, not an internal error', async () => {
    const socket = net.connect(Number(new URL(t.url).port), '127.0.0.1');
    let answer = '';
    socket.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
    const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write(`POST /${GET_BOOKING} HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`);
    await ended;
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /"reason":"INVALID_REQUEST","domain":"console\.labshare"/);
  });

  it('4: requests Connect refuses are counted in the per-address bucket first (RATE_LIMITED, Retry-After)', async () => {
    const t2 = await startGateway((port) => testConfig({ upstream: stub.address, port, addressRateLimit: { perSecond: 1, burst: 3 } }));
    try {
      for (let i = 0; i < 3; ++i) {
        const a = await rpc(t2.url, GET_BOOKING, { nope: i }, { authorization: 'Bearer tok' });
        assert.equal(a.status, 400);
      }
      const limited = await rpc(t2.url, GET_BOOKING, { nope: 9 }, { authorization: 'Bearer tok' });
      assert.equal(limited.status, 429);
      assert.equal(errorInfo(limited)?.reason, 'RATE_LIMITED');
      assert.equal(limited.headers['retry-after'], '1');
      assert.ok(retryDelayMs(limited)! > 0);
      const get = await request('GET', `${t2.url}/${GET_BOOKING}`);
      assert.equal(get.status, 429);
      assert.equal(errorInfo(get)?.reason, 'RATE_LIMITED');
      t2.clock.t += 1000;
      assert.equal((await rpc(t2.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' })).status, 200);
    } finally {
      await t2.stop();
    }
  });

  it('5: an RPC path answers another method 405 and an unknown content type 415, as Connect JSON errors with a reason', async () => {
    const get = await request('GET', `${t.url}/${GET_BOOKING}`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'POST');
    assert.equal(get.headers['content-type'], 'application/json');
    assert.equal(get.json().code, 'unimplemented');
    assert.equal(errorInfo(get)?.reason, 'METHOD_NOT_ALLOWED');
    const text = await request('POST', `${t.url}/${GET_BOOKING}`, { headers: { 'content-type': 'text/plain' }, body: '{}' });
    assert.equal(text.status, 415);
    assert.equal(text.json().code, 'invalid_argument');
    assert.equal(errorInfo(text)?.reason, 'UNSUPPORTED_CONTENT_TYPE');
    const none = await request('POST', `${t.url}/${GET_BOOKING}`, { body: '{}' });
    assert.equal(none.status, 415);
    assert.equal(errorInfo(none)?.reason, 'UNSUPPORTED_CONTENT_TYPE');
    // Paths of no offered method stay a plain 404.
    const nope = await request('GET', `${t.url}/labshare.booking.v1.BookingService/Nope`);
    assert.equal(nope.status, 404);
    assert.equal(nope.text, 'not found\n');
  });

  it('2: the gateway\'s reasons are in the messages check (and so have an en and a zh-CN sentence)', () => {
    const REASONS = (errors as { REASONS?: Record<string, string> }).REASONS;
    assert.ok(REASONS, 'errors.ts lists its reasons');
    const script = fs.readFileSync(path.join(consoleDir, 'scripts', 'check-messages.mjs'), 'utf8');
    const extra = script.slice(script.indexOf('const EXTRA_REASONS'), script.indexOf('};', script.indexOf('const EXTRA_REASONS')));
    for (const reason of Object.keys(REASONS)) assert.match(extra, new RegExp(`\\b${reason}:`), reason);
  });

  it('3: a malformed Authorization header is refused INVALID_TOKEN and never falls back to the cookie', async () => {
    const s = newSession(t);
    const cookie = { cookie: `${SESSION}=${s.id}`, 'x-csrf-token': s.csrfToken, origin: t.origin };
    const before = stub.callsOf('GetBooking').length;
    for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer two words', 'token-without-scheme']) {
      for (const extra of [{}, cookie]) {
        const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization, ...extra });
        assert.equal(a.status, 401, authorization);
        assert.equal(a.json().code, 'unauthenticated');
        assert.equal(a.json().message, "authorization metadata must be 'Bearer <token>'");
        assert.equal(errorInfo(a)?.reason, 'INVALID_TOKEN');
        assert.equal(errorInfo(a)?.domain, 'console.labshare');
      }
      const d = await request('GET', `${t.url}${INVOICE}`, { headers: { authorization, cookie: cookie.cookie } });
      assert.equal(d.status, 401);
      assert.equal(errorInfo(d)?.reason, 'INVALID_TOKEN');
      const w = await request('GET', `${t.url}/auth/session`, { headers: { authorization, cookie: cookie.cookie } });
      assert.deepEqual(w.json(), { signedIn: false, roles: [] });
    }
    assert.equal(stub.callsOf('GetBooking').length, before, 'the service is not called');
    // Well-formed: forwarded as before.
    const ok = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok' });
    assert.equal(ok.status, 200);
    // An empty header is no header, as the services read it: the cookie's
    // session makes the call.
    const empty = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: '', ...cookie });
    assert.equal(empty.status, 200);
    assert.equal(stub.callsOf('GetBooking').length, before + 2);
  });

  it('6: a feed path whose token is not 43 URL-safe base64 characters is 404 without asking the service', async () => {
    const before = stub.callsOf('GetCalendarFeedContent').length;
    for (const token of ['x', 'x'.repeat(42), 'x'.repeat(44), 'x'.repeat(128)]) {
      const a = await request('GET', `${t.url}/feeds/${token}.ics`);
      assert.equal(a.status, 404, token);
      assert.equal(a.text, 'not found\n');
    }
    assert.equal(stub.callsOf('GetCalendarFeedContent').length, before);
    assert.equal((await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`)).status, 200);
  });

  it('7: the public pages answer 413 over --body_limit, before anything else', async () => {
    const before = stub.callsOf('Unsubscribe').length;
    const big = 'List-Unsubscribe=One-Click&' + 'x'.repeat(5000);
    const a = await request('POST', `${t.url}/unsubscribe?token=abc.0123456789abcdef`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: big,
    });
    assert.equal(a.status, 413);
    assert.equal(a.text, 'request body too large\n');
    const f = await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`, { body: 'x'.repeat(5000) });
    assert.equal(f.status, 413);
    assert.equal(stub.callsOf('Unsubscribe').length, before);
  });
});

describe('web edge audit: addresses', () => {
  it('10: IPv6 clients are counted by their /64 (rate limits; also bodies arriving and connections); IPv4 and NAT64 addresses whole', async () => {
    const { addressKey } = await import('../http-util.js') as { addressKey?: (a: string) => string };
    assert.equal(typeof addressKey, 'function');
    const key = addressKey!;
    assert.equal(key('2001:db8:1:2::1'), '2001:db8:1:2::/64');
    assert.equal(key('2001:0db8:0001:0002:ffff:ffff:ffff:fffe'), '2001:db8:1:2::/64');
    assert.equal(key('2001:db8::'), '2001:db8:0:0::/64');
    assert.equal(key('::1'), '0:0:0:0::/64');
    assert.equal(key('fe80::1%eth0'), 'fe80:0:0:0::/64');
    assert.equal(key('192.0.2.7'), '192.0.2.7');
    assert.equal(key('64:ff9b::c000:207'), '64:ff9b:0:0:0:0:c000:207');
    assert.equal(key('64:ff9b::192.0.2.7'), '64:ff9b::192.0.2.7');

    // Through the gateway: two addresses of one /64 behind a trusted proxy share the bucket.
    const stub = await new Stub().start();
    const t = await startGateway((port) => testConfig({
      upstream: stub.address, port, addressRateLimit: { perSecond: 1, burst: 2 },
      trustedProxies: (() => { const b = new net.BlockList(); b.addAddress('127.0.0.1'); return b; })(),
    }));
    try {
      const from = (ip: string) => rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { authorization: 'Bearer tok', 'x-forwarded-for': ip });
      assert.equal((await from('2001:db8:1:2::1')).status, 200);
      assert.equal((await from('2001:db8:1:2::2')).status, 200);
      const third = await from('2001:db8:1:2:abcd::3');
      assert.equal(third.status, 429);
      assert.equal(errorInfo(third)?.reason, 'RATE_LIMITED');
      assert.equal((await from('2001:db8:1:3::1')).status, 200, 'another /64 has its own bucket');
    } finally {
      await t.stop();
      await stub.stop();
    }
  });
});

describe('web edge audit over HTTPS', () => {
  it('8: the raw 400 for a request Node cannot parse carries Strict-Transport-Security when HTTPS is served', async () => {
    const pki = makePki();
    const stub = await new Stub().start();
    const running = await listen(testConfig({
      upstream: stub.address, port: 0,
      https: { cert: path.join(pki, 'console.crt'), key: path.join(pki, 'console.key') },
    }));
    try {
      const socket = tls.connect({
        host: '127.0.0.1', port: Number(new URL(running.url).port), ca: fs.readFileSync(path.join(pki, 'ca.crt')),
        servername: 'localhost', ALPNProtocols: ['http/1.1'], rejectUnauthorized: false,
      });
      let answer = '';
      socket.on('data', (c: Buffer) => { answer += c.toString('latin1'); });
      socket.on('error', () => {});
      const ended = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
      socket.write('GARBAGE / HTTP/1.1\r\n\r\n');
      await ended;
      assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
      assert.ok(answer.includes('\r\nstrict-transport-security: max-age=31536000; includeSubDomains\r\n'), answer);
    } finally {
      await running.stop();
      await stub.stop();
    }
  });
});
