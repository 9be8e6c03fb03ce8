// The checks every RPC passes before Connect reads it, so that each refusal
// is the gateway's own, with a google.rpc.ErrorInfo of domain
// "console.labshare" (types.proto: every error carries one), in the
// protocol the caller speaks:
//
//   1. the per-address rate limit (taken in gateway.ts before anything else):
//      RESOURCE_EXHAUSTED RATE_LIMITED, RetryInfo, Retry-After; then the
//      bodies arriving from the address (inflight.ts): RATE_LIMITED too
//      (metadata limit "pending_bodies_per_address"). Every body is read
//      through the gateway's meter from then on: over the bytes all bodies
//      may hold RATE_LIMITED ("body_bytes_in_flight"), past
//      --body_read_timeout DEADLINE_EXCEEDED INVALID_REQUEST (a Connect
//      unary call with HTTP status 408), a client gone while sending
//      CANCELED REQUEST_CANCELED;
//   2. the HTTP method and the content type: 405 METHOD_NOT_ALLOWED (Allow:
//      POST) and 415 UNSUPPORTED_CONTENT_TYPE, as Connect JSON errors (no
//      protocol could be chosen, so the HTTP API's own form);
//   3. --body_limit: RESOURCE_EXHAUSTED BODY_TOO_LARGE, from Content-Length
//      before anything is read, else while reading; then the protocol's
//      deadline and compression headers (connect-timeout-ms, grpc-timeout;
//      content-encoding, connect-content-encoding, grpc-encoding):
//      INVALID_REQUEST, with Connect's codes (INVALID_ARGUMENT for a timeout
//      it cannot read, UNIMPLEMENTED for an encoding other than gzip, br);
//   4. unary Connect calls (JSON or binary, uncompressed): the body read
//      here; JSON parsed here (INVALID_ARGUMENT INVALID_JSON: not JSON, not
//      an object, a key twice in one object) and handed to Connect parsed. When Connect cannot decode
//      the message, the request is examined again for the reason:
//      INVALID_FIELD (a field the message does not have, or a value it
//      cannot take; metadata "field", the path as the services name
//      fields: "range.start_time", "states[1]"), INVALID_JSON, or INVALID_REQUEST
//      (binary that does not decode, which Connect calls internal). A call
//      that decodes costs nothing more than before. A gzip or br body is
//      inflated here (to --body_limit) and handed on inflated;
//   5. unary gRPC and gRPC-Web calls: the one length-prefixed message read,
//      inflated and decoded here (INVALID_REQUEST otherwise: Connect would
//      answer internal, or unimplemented for an empty body, without an
//      ErrorInfo, before any interceptor).
//
// A refusal after a protocol was chosen is thrown from the request body that
// the protocol handler reads (the Content-Length header taken away, so that
// Connect's own size check does not answer first): Connect serializes it as
// the protocol wants (a Connect JSON error, gRPC trailers, gRPC-Web, an end of
// stream), with its details and headers; the caller's deadline and
// compression headers are not handed on with it (Connect would answer those
// first). Whatever Connect itself still refuses on a unary Connect call (a
// compressed body too large once inflated) gets an ErrorInfo added on the
// way out (withErrorInfo).
import zlib from 'node:zlib';
import { fromBinary, fromJson, type DescMessage, type JsonValue } from '@bufbuild/protobuf';
import { Code, ConnectError, createContextKey } from '@connectrpc/connect';
import { createAsyncIterable, type UniversalHandler, type UniversalServerRequest, type UniversalServerResponse } from '@connectrpc/connect/protocol';
import { codeToHttpStatus, errorFromJsonBytes, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { ErrorInfoSchema } from '../gen/google/rpc/error_details_pb.js';
import { consoleError, hasErrorInfo, MESSAGES, withErrorInfo } from './errors.js';
import type { BodyMeter } from './inflight.js';

// The edge's refusal of this call, for the interceptors to throw first:
// Connect runs a server stream's interceptors before it reads the request
// (a unary call's after), and the caller must not be identified, counted or
// refused for anything else before the edge's answer.
export const edgeRefusal = createContextKey<ConnectError | undefined>(undefined, { description: 'edge refusal' });

export interface EdgeOptions {
  bodyLimitBytes: number;
  // The wait (ms) the per-address bucket asks for this request; 0: go ahead.
  addressWait(req: UniversalServerRequest): number;
  rateLimited(waitMs: number): ConnectError;
  // What the gateway holds for this request's body (inflight.ts): the meter
  // it is read through, the refusal of the request (its address has too
  // many bodies arriving), or undefined (not metered).
  admission?(req: UniversalServerRequest): BodyMeter | ConnectError | undefined;
}

const UNARY_JSON = /^application\/json(?:;\s*charset=utf-?8)?$/i;
const UNARY_PROTO = /^application\/proto$/i;

// The content types each protocol's handler takes, exactly as its own
// parser reads them (Connect's supportedContentType is looser: it takes
// "application/connectjson" for a stream and gRPC-Web's -text variant,
// which the handler then refuses with a bare 415 and no body).
const CONNECT_UNARY_TYPE = /^application\/(?:json(?:; ?charset=utf-?8)?|proto)$/i;
const CONNECT_STREAM_EXACT = /^application\/connect\+(?:json(?:; ?charset=utf-?8)?|proto)$/i;
const GRPC_EXACT = /^application\/grpc(?:-web)?(?:\+(?:json(?:; ?charset=utf-?8)?|proto))?$/i;

// Whether a protocol of a method of kind `unary` takes this content type.
export function negotiableType(type: string, unary: boolean): boolean {
  return GRPC_EXACT.test(type) || (unary ? CONNECT_UNARY_TYPE : CONNECT_STREAM_EXACT).test(type);
}

// The request headers through which a caller's deadline and compression
// reach Connect's protocol handlers.
const PROTOCOL_HEADERS = ['connect-timeout-ms', 'grpc-timeout', 'content-encoding', 'connect-content-encoding', 'grpc-encoding'];

// The deadline and compression headers of a request in protocol `kind`,
// checked as Connect checks them: an unreadable timeout is
// INVALID_ARGUMENT, an encoding the gateway does not take UNIMPLEMENTED
// (with the encodings it takes in the protocol's accept-encoding header),
// both INVALID_REQUEST. Connect would refuse them before reading the body,
// without an ErrorInfo.
function checkProtocolHeaders(h: Headers, kind: 'connect' | 'connect-stream' | 'grpc'): ConnectError | undefined {
  const timeoutHeader = kind === 'grpc' ? 'grpc-timeout' : 'connect-timeout-ms';
  const timeout = h.get(timeoutHeader);
  if (timeout !== null && !(kind === 'grpc' ? /^\d{1,8}[HMSmun]$/ : /^\d{1,10}$/).test(timeout)) {
    return consoleError(Code.InvalidArgument, 'INVALID_REQUEST',
      `the ${timeoutHeader} header is not a timeout (${kind === 'grpc' ? 'up to 8 digits and a unit H, M, S, m, u or n' : 'up to 10 digits, milliseconds'})`,
      { header: timeoutHeader });
  }
  const encodingHeader = kind === 'connect' ? 'content-encoding' : kind === 'connect-stream' ? 'connect-content-encoding' : 'grpc-encoding';
  const encoding = h.get(encodingHeader);
  if (encoding !== null && encoding !== 'identity' && !INFLATABLE.has(encoding)) {
    const accepted = [...INFLATABLE].join(',');
    const acceptHeader = kind === 'connect' ? 'accept-encoding' : kind === 'connect-stream' ? 'connect-accept-encoding' : 'grpc-accept-encoding';
    return consoleError(Code.Unimplemented, 'INVALID_REQUEST',
      `the ${encodingHeader} "${encoding.slice(0, 40)}" is not taken here; send ${[...INFLATABLE].join(', ')} or none`,
      { header: encodingHeader }, [], { [acceptHeader]: accepted });
  }
  return undefined;
}

// `err` when it is a BODY_TOO_LARGE refusal, else undefined.
function tooLargeError(err: ConnectError): ConnectError | undefined {
  return err.code === Code.ResourceExhausted && err.findDetails(ErrorInfoSchema)[0]?.reason === 'BODY_TOO_LARGE' ? err : undefined;
}

export function bodyTooLarge(limit: number): ConnectError {
  return consoleError(Code.ResourceExhausted, 'BODY_TOO_LARGE',
    `the request body is larger than this console accepts (${limit} bytes)`, { limit: String(limit) });
}

// A refusal made before any protocol was chosen: the Connect JSON error.
function jsonError(err: ConnectError, status: number, extra: Record<string, string> = {}): UniversalServerResponse {
  const header = new Headers({ 'content-type': 'application/json', 'cache-control': 'no-store', ...extra });
  err.metadata.forEach((v, k) => header.set(k, v));
  return { status, header, body: createAsyncIterable([errorToJsonBytes(err, {})]) };
}

// A request body that throws `err` when the protocol handler reads it.
function throwing(err: ConnectError): AsyncIterable<Uint8Array> {
  return {
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(err) }),
  };
}

function withoutEncoding(h: Headers): Headers {
  const out = new Headers(h);
  out.delete('content-encoding');
  out.delete('content-length');
  return out;
}

// application/grpc, application/grpc-web, each +proto or +json ([1]).
const GRPC_TYPE = /^application\/grpc(?:-web)?(?:\+(proto|json))?(?:;.*)?$/i;
// Connect streaming: application/connect+proto|json ([1]).
const CONNECT_STREAM_TYPE = /^application\/connect\+(proto|json)(?:;.*)?$/i;

// The compressions the gateway accepts (gateway.ts acceptCompression).
const INFLATABLE = new Set(['gzip', 'br']);

// `bytes` inflated (gzip, br) to at most `limit` bytes: BODY_TOO_LARGE
// beyond, INVALID_REQUEST when they do not inflate.
function inflate(bytes: Uint8Array, encoding: string, limit: number): Uint8Array {
  try {
    return encoding === 'br' ? zlib.brotliDecompressSync(bytes, { maxOutputLength: limit })
      : zlib.gunzipSync(bytes, { maxOutputLength: limit });
  } catch (e) {
    if (e instanceof RangeError || (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw bodyTooLarge(limit);
    throw consoleError(Code.InvalidArgument, 'INVALID_REQUEST', `the request body does not decompress as ${encoding}`);
  }
}

// The body of a gRPC / gRPC-Web unary request or of a server stream's
// request (those and Connect streaming): exactly one length-prefixed
// message, returned uncompressed (flag 0, prefix included); undefined when
// it is compressed with an encoding the gateway does not take (Connect
// refuses that itself). INVALID_REQUEST for anything else.
function envelopedMessage(bytes: Uint8Array, encoding: string | null, limit: number): Uint8Array | undefined {
  const invalid = (why: string) => consoleError(Code.InvalidArgument, 'INVALID_REQUEST',
    `the request body is not one length-prefixed message: ${why}`);
  if (bytes.byteLength < 5) throw invalid(bytes.byteLength === 0 ? 'it is empty' : 'it is shorter than a message prefix');
  const flags = bytes[0]!;
  const size = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).readUInt32BE(1);
  if (5 + size !== bytes.byteLength) throw invalid(`the prefix says ${size} bytes, ${bytes.byteLength - 5} follow`);
  if ((flags & ~1) !== 0) throw invalid(`flags 0x${flags.toString(16)}`);
  if ((flags & 1) === 0) return bytes;
  if (encoding === null || encoding === 'identity') throw invalid('compressed, and no encoding named');
  if (!INFLATABLE.has(encoding)) return undefined;
  const payload = inflate(bytes.subarray(5), encoding, limit);
  const out = Buffer.alloc(5 + payload.byteLength);
  out.writeUInt32BE(payload.byteLength, 1);
  out.set(payload, 5);
  return out;
}

function withoutLength(h: Headers): Headers {
  const out = new Headers(h);
  out.delete('content-length');
  return out;
}

async function readLimited(body: AsyncIterable<Uint8Array>, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.byteLength;
    if (n > limit) throw bodyTooLarge(limit);
    chunks.push(c);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

// The body read through the gateway's meter (inflight.ts): each chunk
// counted in the bytes held, refused when they do not fit, and no wait for
// the next chunk past the body's deadline (meter.expired).
async function* metered(body: AsyncIterable<Uint8Array>, meter: BodyMeter): AsyncIterable<Uint8Array> {
  const it = body[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const next = it.next();
      next.catch(() => {}); // settles after the deadline won, with nobody waiting
      let r: IteratorResult<Uint8Array>;
      try {
        r = await Promise.race([next, meter.expired]);
      } catch (err) {
        // The body could not be read: the client went away (reset, closed).
        if (err instanceof ConnectError) throw err;
        throw consoleError(Code.Canceled, 'REQUEST_CANCELED', MESSAGES.canceled);
      }
      if (r.done) {
        finished = true;
        meter.done();
        return;
      }
      const refused = meter.take(r.value.byteLength);
      if (refused) throw refused;
      yield r.value;
    }
  } finally {
    // Not awaited: a read may still be pending (the deadline passed); it
    // settles when the gateway closes the request after its answer.
    if (!finished) it.return?.()?.catch(() => {});
  }
}

// A refusal of a body that did not arrive in time (inflight.ts bodyTimeout).
function isBodyTimeout(err: ConnectError): boolean {
  return err.code === Code.DeadlineExceeded && err.findDetails(ErrorInfoSchema)[0]?.reason === 'INVALID_REQUEST';
}

async function* counted(body: AsyncIterable<Uint8Array>, limit: number): AsyncIterable<Uint8Array> {
  let n = 0;
  for await (const c of body) {
    n += c.byteLength;
    if (n > limit) throw bodyTooLarge(limit);
    yield c;
  }
}

// The first key of `json` (a request message's JSON) that `desc` does not
// have, as a path ("filter.instrument"), or undefined. The path names the
// fields it passes through as the services name fields in INVALID_FIELD
// (proto names, a list's entry by its index: "filter.instruments[0].nope"),
// the unknown key itself as written.
export function unknownField(desc: DescMessage, json: unknown, prefix = ''): string | undefined {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return undefined;
  if (desc.typeName.startsWith('google.protobuf.')) return undefined; // well-known types have their own JSON
  for (const [k, v] of Object.entries(json as Record<string, unknown>)) {
    const f = desc.fields.find((x) => x.jsonName === k || x.name === k);
    if (!f) return prefix + k;
    if (f.fieldKind === 'message') {
      const u = unknownField(f.message, v, `${prefix}${f.name}.`);
      if (u) return u;
    } else if (f.fieldKind === 'list' && f.listKind === 'message' && Array.isArray(v)) {
      for (let i = 0; i < v.length; ++i) {
        const u = unknownField(f.message, v[i], `${prefix}${f.name}[${i}].`);
        if (u) return u;
      }
    } else if (f.fieldKind === 'map' && f.mapKind === 'message' && v !== null && typeof v === 'object') {
      for (const [mk, mv] of Object.entries(v as Record<string, unknown>)) {
        const u = unknownField(f.message, mv, `${prefix}${f.name}.${mk}.`);
        if (u) return u;
      }
    }
  }
  return undefined;
}

// The body of a unary JSON request: a JSON object in which no object has a
// key twice, or the gateway's INVALID_ARGUMENT INVALID_JSON. (JSON.parse
// keeps the last of two equal keys, so {"pageSize":2,"pageSize":3} was
// taken as 3, while protobuf-es refuses {"pageSize":2,"page_size":3}, one
// field set twice: both are refused alike now.)
export function parseJson(desc: DescMessage, bytes: Uint8Array): JsonValue {
  let json: JsonValue;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    json = JSON.parse(text) as JsonValue;
  } catch {
    throw consoleError(Code.InvalidArgument, 'INVALID_JSON', 'the request body is not valid JSON (UTF-8)');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw consoleError(Code.InvalidArgument, 'INVALID_JSON', `the request body must be a JSON object (the fields of ${desc.typeName})`);
  }
  const twice = duplicateKey(text);
  if (twice !== undefined) {
    throw consoleError(Code.InvalidArgument, 'INVALID_JSON',
      `the request body has the key ${JSON.stringify(twice.slice(0, 100))} twice in one object; give each field once`);
  }
  return json;
}

// The first key that one object of `text` (JSON that JSON.parse accepted)
// has twice, compared as decoded ("a" and "\u0061" are one key); undefined
// when there is none. One pass over the text.
export function duplicateKey(text: string): string | undefined {
  const open: (Set<string> | undefined)[] = []; // per open object its keys, per open array undefined
  let keyNext = false;
  for (let i = 0; i < text.length; ++i) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const keys = open[open.length - 1];
      if (keyNext && keys) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      keyNext = false;
      i = j;
    } else if (c === 0x7b /* { */) {
      open.push(new Set());
      keyNext = true;
    } else if (c === 0x5b /* [ */) {
      open.push(undefined);
      keyNext = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
      keyNext = false;
    } else if (c === 0x2c /* , */) {
      keyNext = open[open.length - 1] !== undefined;
    }
  }
  return undefined;
}

// The path of the first field of `json` whose value `desc` cannot take
// (a wrong enum name, timestamp, duration, field mask, number...), named as
// unknownField names paths ("range.start_time", "states[1]"), or undefined.
// Each key is decoded on its own, then a list's entries one by one, and a
// message's value is searched further for the field inside it that fails;
// a well-known type (Timestamp, Duration, FieldMask...) is one value.
export function badValue(desc: DescMessage, json: JsonValue, prefix = ''): string | undefined {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return undefined;
  const decodes = (x: JsonValue) => {
    try {
      fromJson(desc, x, { ignoreUnknownFields: false });
      return true;
    } catch {
      return false;
    }
  };
  for (const [k, v] of Object.entries(json)) {
    if (decodes({ [k]: v })) continue;
    const f = desc.fields.find((x) => x.jsonName === k || x.name === k);
    if (!f) return prefix + k;
    const inner = (x: JsonValue | undefined, at: string) =>
      f.message === undefined || f.message.typeName.startsWith('google.protobuf.') || x === undefined
        ? undefined : badValue(f.message, x, at);
    const here = `${prefix}${f.name}`;
    if (f.fieldKind === 'message') return inner(v, `${here}.`) ?? here;
    if (f.fieldKind === 'list' && Array.isArray(v)) {
      for (let i = 0; i < v.length; ++i) {
        if (decodes({ [k]: [v[i]!] })) continue;
        return (f.listKind === 'message' ? inner(v[i], `${here}[${i}].`) : undefined) ?? `${here}[${i}]`;
      }
      return here;
    }
    if (f.fieldKind === 'map' && v !== null && typeof v === 'object' && !Array.isArray(v)) {
      for (const [mk, mv] of Object.entries(v)) {
        if (decodes({ [k]: { [mk]: mv! } })) continue;
        return (f.mapKind === 'message' ? inner(mv, `${here}.${mk}.`) : undefined) ?? `${here}.${mk}`;
      }
    }
    return here;
  }
  return undefined;
}

// Why Connect could not decode this JSON as the request message: the
// gateway's INVALID_FIELD (metadata "field": the unknown key's path, or the
// path of the field whose value does not fit, both as the keys are written)
// or INVALID_JSON; undefined when it decodes.
export function checkJson(desc: DescMessage, json: JsonValue): ConnectError | undefined {
  try {
    fromJson(desc, json, { ignoreUnknownFields: false });
    return undefined;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const unknown = unknownField(desc, json);
    if (unknown) {
      return consoleError(Code.InvalidArgument, 'INVALID_FIELD', `${desc.typeName} has no field "${unknown}"`, { field: unknown });
    }
    const field = badValue(desc, json);
    if (field) return consoleError(Code.InvalidArgument, 'INVALID_FIELD', `"${field}": ${message}`, { field });
    return consoleError(Code.InvalidArgument, 'INVALID_JSON', message);
  }
}

// Why Connect could not decode this protobuf binary (it calls that internal):
// INVALID_ARGUMENT INVALID_REQUEST; undefined when it decodes.
export function checkBinary(desc: DescMessage, bytes: Uint8Array): ConnectError | undefined {
  try {
    fromBinary(desc, bytes);
    return undefined;
  } catch (e) {
    return consoleError(Code.InvalidArgument, 'INVALID_REQUEST',
      `the request body is not a ${desc.typeName} in protobuf binary (${e instanceof Error ? e.message : String(e)})`);
  }
}

// Wraps one method's protocol-negotiating handler (Connect, gRPC, gRPC-Web).
export function edgeHandler(h: UniversalHandler, opt: EdgeOptions): UniversalHandler {
  const unary = h.method.methodKind === 'unary';
  const input = h.method.input;
  const handler = async (req: UniversalServerRequest): Promise<UniversalServerResponse> => {
    const type = req.header.get('content-type') ?? '';
    // Decided by the edge's own reading of the content type, as the handler
    // will read it (see negotiableType).
    const negotiable = h.allowedMethods.includes(req.method) && negotiableType(type, unary) && h.supportedContentType(type);
    const refuse = (err: ConnectError) => {
      // A stream's interceptors run before its request is read: they throw
      // this first (gateway.ts guard), so the order stays the edge's.
      req.contextValues?.set(edgeRefusal, err);
      // Without the caller's deadline and compression headers: Connect
      // checks those before it reads the body, and would answer its own
      // error (no ErrorInfo) instead of this one.
      const header = withoutLength(req.header);
      for (const name of PROTOCOL_HEADERS) header.delete(name);
      return h({ ...req, header, body: throwing(err) });
    };
    const wait = opt.addressWait(req);
    if (wait > 0) return negotiable ? refuse(opt.rateLimited(wait)) : jsonError(opt.rateLimited(wait), 429);
    // Too many bodies of this address arriving (inflight.ts): refused as the
    // bucket refuses, before anything is read.
    const admitted = opt.admission?.(req);
    if (admitted instanceof ConnectError) return negotiable ? refuse(admitted) : jsonError(admitted, 429);
    if (!h.allowedMethods.includes(req.method)) {
      return jsonError(consoleError(Code.Unimplemented, 'METHOD_NOT_ALLOWED',
        `${req.method} is not offered here; RPCs are POST`), 405, { allow: h.allowedMethods.join(', ') });
    }
    if (!negotiable) {
      return jsonError(consoleError(Code.InvalidArgument, 'UNSUPPORTED_CONTENT_TYPE',
        `the content type "${type.slice(0, 100)}" is not offered; send application/json (Connect), application/proto, ` +
        'application/connect+json|proto (streams), application/grpc-web or application/grpc'), 415);
    }
    const connectUnary = unary && (UNARY_JSON.test(type) || UNARY_PROTO.test(type));
    // Too large: a Connect unary call answers HTTP 413 with the Connect JSON
    // error (Connect would say 429, the status of RATE_LIMITED, which tells
    // a client to send the same body again later); other protocols carry
    // the status in their own frames.
    const tooLarge = () => {
      const err = bodyTooLarge(opt.bodyLimitBytes);
      return connectUnary ? jsonError(err, 413) : refuse(err);
    };
    const length = Number(req.header.get('content-length') ?? 0);
    if (length > opt.bodyLimitBytes) return tooLarge();
    // The deadline and compression headers, before the body is read.
    const headerError = checkProtocolHeaders(req.header,
      GRPC_TYPE.test(type) ? 'grpc' : CONNECT_STREAM_TYPE.test(type) ? 'connect-stream' : 'connect');
    if (headerError) return refuse(headerError);
    const raw = req.body as AsyncIterable<Uint8Array>;
    const body = admitted ? metered(raw, admitted) : raw;
    const encoding = req.header.get('content-encoding');
    const plain = encoding === null || encoding === 'identity';
    if (connectUnary && (plain || INFLATABLE.has(encoding))) {
      // Read here (the limit; a compressed body inflated here, to the limit
      // too, and handed on inflated), JSON parsed once here and handed to
      // Connect as JSON; the message is decoded by Connect alone, and only
      // when it refuses it is the request examined again for the precise
      // reason.
      let bytes: Uint8Array;
      let json: JsonValue | undefined;
      try {
        bytes = await readLimited(body, opt.bodyLimitBytes);
        if (!plain) bytes = inflate(bytes, encoding!, opt.bodyLimitBytes);
        if (UNARY_JSON.test(type)) json = parseJson(input, bytes);
      } catch (err) {
        if (err instanceof ConnectError && err === tooLargeError(err)) return tooLarge();
        // Its body did not arrive in time: HTTP 408 (Connect would say 504,
        // the status of a gateway that got no answer upstream).
        if (err instanceof ConnectError && isBodyTimeout(err)) return jsonError(err, 408);
        if (err instanceof ConnectError) return refuse(err);
        throw err;
      }
      const header = plain ? req.header : withoutEncoding(req.header);
      const res = await h({ ...req, header, body: json !== undefined ? json : createAsyncIterable([bytes]) });
      return mapped(res, () => (json !== undefined ? checkJson(input, json) : checkBinary(input, bytes)));
    }
    const connectStream = CONNECT_STREAM_TYPE.exec(type);
    const enveloped = GRPC_TYPE.exec(type) ?? connectStream;
    if (enveloped && (unary || h.method.methodKind === 'server_streaming')) {
      // gRPC and gRPC-Web unary, and every server stream: the one enveloped
      // message read and decoded here, since Connect refuses what does not
      // decode as internal (or an empty body as unimplemented), without an
      // ErrorInfo, and a stream's interceptors (who is calling, the rate
      // limit) would run before its message is read: the request is checked
      // here, after the size, as the README orders it. A compressed message
      // is inflated here and handed on inflated (flag 0).
      let message: Uint8Array | undefined;
      try {
        const bytes = await readLimited(body, opt.bodyLimitBytes);
        message = envelopedMessage(bytes, req.header.get(connectStream ? 'connect-content-encoding' : 'grpc-encoding'),
          opt.bodyLimitBytes);
        if (message) {
          const payload = message.subarray(5);
          const err = enveloped[1]?.toLowerCase() === 'json' ? checkJson(input, parseJson(input, payload)) : checkBinary(input, payload);
          if (err) throw err;
        } else {
          message = bytes; // an encoding Connect refuses itself
        }
      } catch (err) {
        if (err instanceof ConnectError) return refuse(err);
        throw err;
      }
      return h({ ...req, header: withoutLength(req.header), body: createAsyncIterable([message]) });
    }
    const res = await h({ ...req, body: counted(body, opt.bodyLimitBytes) });
    return unary ? mapped(res) : res;
  };
  return Object.assign(handler, {
    service: h.service, method: h.method, requestPath: h.requestPath,
    supportedContentType: h.supportedContentType, protocolNames: h.protocolNames, allowedMethods: h.allowedMethods,
  });
}

// A unary Connect error that Connect itself made (no ErrorInfo): the
// request's own diagnosis when there is one (`diagnose`), else the same
// error with the gateway's ErrorInfo added.
async function mapped(res: UniversalServerResponse, diagnose?: () => ConnectError | undefined): Promise<UniversalServerResponse> {
  if (res.status === 200 || !res.body || !/^application\/json/i.test(res.header?.get('content-type') ?? '')) return res;
  if (res.header?.get('content-encoding')) return res;
  const body = res.body;
  if (!(typeof body === 'object' && Symbol.asyncIterator in body)) return res;
  const bytes = await readLimited(body as AsyncIterable<Uint8Array>, 1 << 20);
  let err: ConnectError;
  try {
    err = errorFromJsonBytes(bytes, undefined, new ConnectError('unreadable error', Code.Internal));
  } catch {
    return { ...res, body: createAsyncIterable([bytes]) };
  }
  if (hasErrorInfo(err)) return { ...res, body: createAsyncIterable([bytes]) };
  const precise = diagnose?.();
  const out = errorToJsonBytes(precise ?? withErrorInfo(err, true), {});
  const header = new Headers(res.header);
  header.set('content-length', String(out.byteLength));
  return { ...res, status: precise ? codeToHttpStatus(precise.code) : res.status, header, body: createAsyncIterable([out]) };
}
