// The trace id of a call, chosen as the services choose it (common/server.cc
// TraceIdOf): the trace id of a valid W3C traceparent header, else the
// caller's x-trace-id (1-64 characters of [A-Za-z0-9._:-]), else a new one
// (32 lowercase hex). An unusable header is ignored, never refused. The
// gateway sends it upstream as x-trace-id (the services then put it into
// every event the call causes), writes it into its access-log line and
// answers it in the x-trace-id response header.
import { randomBytes } from 'node:crypto';
import type http from 'node:http';

export const TRACE_HEADER = 'x-trace-id';

// version "-" trace-id "-" parent-id "-" flags, lowercase hex
// (https://www.w3.org/TR/trace-context/#traceparent-header). Version ff is
// invalid; version 00 has exactly these four fields, a later version may
// have more after a "-".
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_PARENT = '0'.repeat(16);
const X_TRACE_ID = /^[A-Za-z0-9._:-]{1,64}$/;

function one(v: string | string[] | undefined): string | undefined {
  // Repeated headers are unusable (Node joins unknown ones with ", ").
  if (Array.isArray(v)) return v.length === 1 ? v[0] : undefined;
  return v;
}

export function traceParentId(value: string | undefined): string | undefined {
  const m = value === undefined ? null : TRACEPARENT.exec(value);
  if (!m) return undefined;
  const [, version, trace, parent, , rest] = m;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (trace === ZERO_TRACE || parent === ZERO_PARENT) return undefined;
  return trace;
}

export function newTraceId(): string {
  return randomBytes(16).toString('hex');
}

export function traceIdOf(headers: http.IncomingHttpHeaders): string {
  const fromParent = traceParentId(one(headers.traceparent));
  if (fromParent) return fromParent;
  const x = one(headers[TRACE_HEADER]);
  if (x !== undefined && X_TRACE_ID.test(x)) return x;
  return newTraceId();
}
