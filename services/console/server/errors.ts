// What the gateway answers when something fails, and what it never says.
//
// - An error a service answered (a gRPC status in its trailers, with the
//   google.rpc.ErrorInfo every LabShare service attaches) passes through
//   unchanged: code, message, ErrorInfo and the other details. That is the
//   contract of the HTTP API. A status without an ErrorInfo was made by gRPC
//   itself or a proxy on the way ("upstream connect error ... remote
//   10.1.2.3:50052"): its code passes, with the fixed sentence of the code;
//   its message goes to stderr only.
// - Except INTERNAL, UNKNOWN and DATA_LOSS: a defect or damaged data, whose
//   words may quote storage, keys or a stack. Their code and ErrorInfo
//   reason and domain pass (INTERNAL_ERROR of console.labshare when there
//   is none), with a fixed sentence naming the call's trace id (also in the
//   ErrorInfo metadata "trace_id"); the message, metadata and other details
//   go to stderr only, under that trace id, for the operator.
// - The gateway's own refusals carry an ErrorInfo in the domain
//   "console.labshare" (CSRF_TOKEN_INVALID, RATE_LIMITED, SESSION_EXPIRED, ...).
// - Anything else (a service that cannot be reached, a broken connection, a
//   bug here) becomes UNAVAILABLE or INTERNAL with a fixed sentence; the real
//   error goes to stderr only.
// Every error the gateway answers carries an ErrorInfo (types.proto): those
// it makes itself, and those made on the way without one, have the domain
// "console.labshare" and a reason of REASONS below.
import { create, fromBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { DurationSchema } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError } from '@connectrpc/connect';
import { errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { codeToHttpStatus } from '@connectrpc/connect/protocol-connect';
import * as rpcDetails from '../gen/google/rpc/error_details_pb.js';
import { ErrorInfoSchema, RetryInfoSchema } from '../gen/google/rpc/error_details_pb.js';
import type { Res } from './http-util.js';

export const DOMAIN = 'console.labshare';

export const MESSAGES = {
  unavailable: 'the service is unavailable; try again shortly',
  internal: 'internal error',
  deadline: 'the service did not answer in time',
  canceled: 'the call was canceled',
} as const;

// The fixed sentence of each code, for statuses that carry no ErrorInfo.
export function fixedMessage(code: Code): string {
  switch (code) {
    case Code.Unavailable: return MESSAGES.unavailable;
    case Code.DeadlineExceeded: return MESSAGES.deadline;
    case Code.Canceled: return MESSAGES.canceled;
    case Code.Internal: case Code.Unknown: case Code.DataLoss: return MESSAGES.internal;
    case Code.Unauthenticated: return 'not signed in, or the token is not valid';
    case Code.PermissionDenied: return 'not allowed';
    case Code.NotFound: return 'not found';
    case Code.ResourceExhausted: return 'too many requests or too large; try again later';
    case Code.Unimplemented: return 'this method is not offered';
    default: return 'the call failed';
  }
}

// The gateway's own reasons (domain console.labshare), besides the
// service's INVALID_TOKEN for a malformed Authorization header and
// INVALID_FIELD for a request field the message does not have.
export const REASONS = {
  CSRF_TOKEN_INVALID: 'a cookie call without the session CSRF token, or from another origin',
  RATE_LIMITED: 'the per-address, per-session or per-token rate limit, or a cap on request bodies in flight (metadata limit)',
  SESSION_EXPIRED: 'the console session ended',
  SERVICE_UNAVAILABLE: 'a service cannot be reached, its connection was lost during the call, or it answered UNAVAILABLE without an ErrorInfo',
  UPSTREAM_DEADLINE: 'a service did not answer within the deadline',
  UPSTREAM_ERROR: 'a status made on the way to a service (gRPC, a proxy), without an ErrorInfo',
  REQUEST_CANCELED: 'the caller canceled the call (or a status made on the way said CANCELLED)',
  INTERNAL_ERROR: 'a defect in the gateway, or an INTERNAL, UNKNOWN or DATA_LOSS status made on the way without an ErrorInfo',
  INVALID_JSON: 'the body is not JSON, not an object, or not the request message',
  INVALID_REQUEST: 'a request Connect cannot read (binary, headers, compression), or whose body did not arrive within --body_read_timeout',
  BODY_TOO_LARGE: 'the body is over --body_limit',
  METHOD_NOT_ALLOWED: 'an RPC path with another method than POST',
  UNSUPPORTED_CONTENT_TYPE: 'an RPC path with a content type no protocol offers',
} as const;

// The reason of an error that has none: `request` when Connect refused the
// caller's request, else it came from (or on the way to) a service.
export function reasonFor(code: Code, request: boolean): string {
  switch (code) {
    case Code.Unavailable: return 'SERVICE_UNAVAILABLE';
    case Code.DeadlineExceeded: return 'UPSTREAM_DEADLINE';
    case Code.Canceled: return 'REQUEST_CANCELED';
    case Code.Internal: case Code.Unknown: case Code.DataLoss: return 'INTERNAL_ERROR';
    case Code.ResourceExhausted: return request ? 'BODY_TOO_LARGE' : 'UPSTREAM_ERROR';
    default: return request ? 'INVALID_REQUEST' : 'UPSTREAM_ERROR';
  }
}

type Detail = { desc: DescMessage; value: MessageInitShape<DescMessage> };

export function consoleError(
  code: Code,
  reason: string,
  message: string,
  metadata: Record<string, string> = {},
  extra: Detail[] = [],
  headers?: HeadersInit,
): ConnectError {
  const details: Detail[] = [
    { desc: ErrorInfoSchema, value: { reason, domain: DOMAIN, metadata } },
    ...extra,
  ];
  return markSafe(new ConnectError(message, code, headers, details as never));
}

// RESOURCE_EXHAUSTED RATE_LIMITED with the delay (RetryInfo, Retry-After,
// metadata retry_after_ms): a rate limit, or a cap on what is in flight
// (inflight.ts: metadata "limit" names it, with its own sentence).
export function rateLimited(
  retryAfterMs: number,
  metadata: Record<string, string> = {},
  message = 'too many requests; slow down and retry after the delay given',
): ConnectError {
  const seconds = Math.floor(retryAfterMs / 1000);
  const nanos = Math.round((retryAfterMs % 1000) * 1e6);
  const retry = create(RetryInfoSchema, { retryDelay: create(DurationSchema, { seconds: BigInt(seconds), nanos }) });
  return consoleError(
    Code.ResourceExhausted,
    'RATE_LIMITED',
    message,
    { retry_after_ms: String(Math.ceil(retryAfterMs)), ...metadata },
    [{ desc: RetryInfoSchema, value: retry }],
    { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) },
  );
}

let logSink: (line: string) => void = (line) => process.stderr.write(line + '\n');
export function setLogSink(f: (line: string) => void): void {
  logSink = f;
}
export function logLine(fields: Record<string, unknown>): void {
  logSink(JSON.stringify({ ts: new Date().toISOString(), ...fields }));
}

// True when the error is a status the service itself answered: connect's
// gRPC client builds those from grpc-status in the trailers (or headers of a
// trailers-only answer) and keeps those headers as the error's metadata.
export function isServiceStatus(err: ConnectError): boolean {
  return err.metadata.has('grpc-status');
}

// The codes whose message describes the server's insides, not the request.
export function isInternalCode(code: Code): boolean {
  return code === Code.Internal || code === Code.Unknown || code === Code.DataLoss;
}

// The sentence answered for an INTERNAL, UNKNOWN or DATA_LOSS status of a
// service: the trace id is what the operator finds the original under.
export function internalMessage(trace: string | undefined): string {
  return trace ? `${MESSAGES.internal}; the operator finds the details in the log under trace id ${trace}` : MESSAGES.internal;
}

// A service's INTERNAL, UNKNOWN or DATA_LOSS status: the code and the
// ErrorInfo's reason and domain (the gateway's INTERNAL_ERROR without one)
// with the fixed sentence and the trace id; the rest is logged only.
function hiddenInternal(err: ConnectError, what: string, trace: string | undefined): ConnectError {
  const info = err.findDetails(ErrorInfoSchema)[0];
  logLine({
    level: 'error', msg: 'upstream internal error', call: what, code: Code[err.code],
    reason: info?.reason ?? null, domain: info?.domain ?? null, metadata: info?.metadata ?? {},
    trace_id: trace ?? null, error: describe(err),
  });
  const metadata: Record<string, string> = trace ? { trace_id: trace } : {};
  const reason = info?.reason || 'INTERNAL_ERROR';
  const domain = info?.reason ? info.domain : DOMAIN;
  return markSafe(new ConnectError(internalMessage(trace), err.code, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain, metadata } },
  ] as never));
}

// The call an upstream error ended: its trace id (trace.ts), named in the
// answer of an INTERNAL, UNKNOWN or DATA_LOSS status and in the log, and
// the caller's signal, aborted when the caller went away or canceled.
export interface UpstreamCall {
  trace?: string | undefined;
  signal?: AbortSignal | undefined;
}

// An error from calling a service, made safe to answer to the caller.
export function fromUpstream(err: unknown, what: string, call: UpstreamCall = {}): ConnectError {
  const trace = call.trace || undefined;
  if (err instanceof ConnectError) {
    if (isServiceStatus(err)) {
      if (isInternalCode(err.code)) return hiddenInternal(err, what, trace);
      if (hasErrorInfo(err)) {
        // The service's answer, details included; its transport headers stay here.
        return markSafe(new ConnectError(err.rawMessage, err.code, undefined, readableDetails(err.details) as never));
      }
      // Made on the way (gRPC itself, a proxy): the code, not the words.
      logLine({ level: 'error', msg: 'upstream status without ErrorInfo', call: what, code: Code[err.code], error: describe(err) });
      return consoleError(err.code, reasonFor(err.code, false), fixedMessage(err.code));
    }
    switch (err.code) {
      case Code.DeadlineExceeded:
        return consoleError(Code.DeadlineExceeded, 'UPSTREAM_DEADLINE', MESSAGES.deadline);
      case Code.Canceled:
        // Canceled by the caller; otherwise the service or the connection
        // ended the call (a connection lost mid-call resets its streams with
        // CANCEL): the service is unavailable, as for any broken connection.
        if (call.signal?.aborted) return consoleError(Code.Canceled, 'REQUEST_CANCELED', MESSAGES.canceled);
        break;
      default:
        break;
    }
  }
  logLine({ level: 'error', msg: 'upstream call failed', call: what, trace_id: trace ?? null, error: describe(err) });
  return unavailable();
}

// "the service is unavailable; try again shortly", SERVICE_UNAVAILABLE.
export function unavailable(): ConnectError {
  return consoleError(Code.Unavailable, 'SERVICE_UNAVAILABLE', MESSAGES.unavailable);
}

// The error with an ErrorInfo: itself when it has one, else the same code,
// message, details and headers with the gateway's (reasonFor).
export function withErrorInfo(err: ConnectError, request: boolean): ConnectError {
  if (hasErrorInfo(err)) return err;
  return consoleError(err.code, reasonFor(err.code, request), err.rawMessage, {}, err.details as Detail[], err.metadata);
}

export function hasErrorInfo(err: ConnectError): boolean {
  return err.details.some((d) => ('desc' in d ? d.desc.typeName : d.type) === ErrorInfoSchema.typeName);
}

// The standard google.rpc details by type name. A service's details are
// re-sent decoded, so that the Connect JSON error carries their JSON form
// ("debug") next to the binary value: a script reads the reason without
// protobuf. DebugInfo (stack entries) never leaves the gateway.
const KNOWN_DETAILS = new Map<string, DescMessage>(
  (Object.values(rpcDetails) as unknown[])
    .filter((v): v is DescMessage => typeof v === 'object' && v !== null && (v as { kind?: string }).kind === 'message')
    .map((d) => [d.typeName, d] as const),
);

function readableDetails(details: ConnectError['details']): unknown[] {
  const out: unknown[] = [];
  for (const d of details) {
    if ('desc' in d) {
      out.push(d);
      continue;
    }
    if (d.type === 'google.rpc.DebugInfo') continue;
    const desc = KNOWN_DETAILS.get(d.type);
    if (!desc) {
      out.push(d);
      continue;
    }
    try {
      out.push({ desc, value: fromBinary(desc, d.value) });
    } catch {
      out.push(d);
    }
  }
  return out;
}

// The last line: whatever is thrown inside the gateway, the caller sees only
// a ConnectError the gateway made on purpose.
export function sanitize(err: unknown, what: string): ConnectError {
  if (err instanceof ConnectError && (err as { [SAFE]?: true })[SAFE]) return withErrorInfo(err, false);
  // Connect's own refusals of a request (bad JSON, unknown field, size
  // limits) describe the caller's request and are safe to answer.
  if (err instanceof ConnectError && err.code !== Code.Internal && err.code !== Code.Unknown) return withErrorInfo(err, true);
  logLine({ level: 'error', msg: 'internal error', call: what, error: describe(err) });
  return consoleError(Code.Internal, 'INTERNAL_ERROR', MESSAGES.internal);
}

const SAFE = Symbol('safe');
export function markSafe<E extends ConnectError>(e: E): E {
  (e as { [SAFE]?: true })[SAFE] = true;
  return e;
}

export function describe(err: unknown): string {
  if (err instanceof ConnectError) {
    const cause = err.cause instanceof Error ? ` (cause: ${err.cause.message})` : '';
    return `ConnectError ${Code[err.code]}: ${err.rawMessage}${cause}`;
  }
  if (err instanceof Error) return `${err.name}: ${err.message}${err.stack ? `\n${err.stack}` : ''}`;
  return String(err);
}

// A Connect error answered outside the RPC router (e.g. POST /auth/logout):
// the Connect protocol's JSON error body and HTTP status.
export function connectErrorBody(err: ConnectError): { status: number; body: Uint8Array } {
  return { status: codeToHttpStatus(err.code), body: errorToJsonBytes(err, {}) };
}

// The response headers an error carries in its metadata (the cleared cookie
// of SESSION_EXPIRED, Retry-After of RATE_LIMITED), as Node wants them.
export function errorHeaders(err: ConnectError): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  err.metadata.forEach((value, key) => {
    if (key !== 'set-cookie') out[key] = value;
  });
  const cookies = err.metadata.getSetCookie();
  if (cookies.length > 0) out['set-cookie'] = cookies;
  return out;
}

// Answers a Connect error outside the RPC router (/documents, /auth/logout):
// the Connect protocol's JSON error body, its HTTP status, and the error's
// own headers (Set-Cookie, Retry-After).
export function sendConnectError(res: Res, err: ConnectError, extra: Record<string, string | string[]> = {}): void {
  const { status, body } = connectErrorBody(err);
  res.writeHead(status, { ...errorHeaders(err), ...extra, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(Buffer.from(body));
}
