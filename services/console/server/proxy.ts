// Forwards every RPC of the public services to the service itself, with
// the caller's LabShare token and the call's trace id. Connect does all protocol work (Connect JSON,
// gRPC-Web and gRPC in, gRPC out); nothing here translates a message by hand.
// A service's error passes through with its details (errors.ts/fromUpstream),
// but an INTERNAL, UNKNOWN or DATA_LOSS one with a fixed message and the trace
// id; a failure to reach it becomes UNAVAILABLE with a fixed message.
import type { ConnectRouter, HandlerContext } from '@connectrpc/connect';
import { Code, ConnectError, createClient, createContextKey } from '@connectrpc/connect';
import type { Transport } from '@connectrpc/connect';
import type { DescMethod, DescService } from '@bufbuild/protobuf';
import { InventoryService } from '../gen/labshare/inventory/v1/inventory_pb.js';
import { BookingService } from '../gen/labshare/booking/v1/booking_pb.js';
import { BillingService } from '../gen/labshare/billing/v1/billing_pb.js';
import { UsageService } from '../gen/labshare/usage/v1/usage_pb.js';
import { NotificationService } from '../gen/labshare/notify/v1/notify_pb.js';
import { WebhookService } from '../gen/labshare/notify/v1/webhooks_pb.js';
import { CalendarFeedService } from '../gen/labshare/notify/v1/feeds_pb.js';
import { fromUpstream } from './errors.js';
import { TRACE_HEADER } from './trace.js';

// The upstreams (one --flag each) and the services each one serves. The
// first service of each is the one /readyz asks grpc.health.v1 about (a
// LabShare process marks every service it registers alike).
export const UPSTREAMS = {
  inventory: [InventoryService],
  booking: [BookingService],
  billing: [BillingService],
  usage: [UsageService],
  notify: [NotificationService, WebhookService, CalendarFeedService],
} as const satisfies Record<string, readonly DescService[]>;
export type ServiceName = keyof typeof UPSTREAMS;
export const SERVICE_NAMES = Object.keys(UPSTREAMS) as ServiceName[];

// Who the call is for: the bearer token to send upstream, or undefined
// (the service then answers UNAUTHENTICATED itself).
export type TokenOf = (ctx: HandlerContext) => Promise<string | undefined> | string | undefined;

// The token the gateway's interceptor (gateway.ts) resolved for this call.
export const upstreamToken = createContextKey<string | undefined>(undefined, { description: 'upstream token' });
export const tokenFromContext: TokenOf = (ctx) => ctx.values.get(upstreamToken);

// The call's trace id (trace.ts), sent upstream as x-trace-id; empty: none.
export const upstreamTraceId = createContextKey<string>('', { description: 'trace id' });

export interface ProxyOptions {
  // The longest a call may wait for its service (the caller's own deadline,
  // when shorter, wins). Server streams (exports) get ten times as long.
  timeoutMs: number;
}

function callOptions(ctx: HandlerContext, token: string | undefined, limitMs: number) {
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const trace = ctx.values.get(upstreamTraceId);
  if (trace) headers[TRACE_HEADER] = trace;
  const callerMs = ctx.timeoutMs();
  const timeoutMs = callerMs !== undefined && callerMs < limitMs ? Math.max(1, callerMs) : limitMs;
  return { headers, signal: ctx.signal, timeoutMs };
}

function forwarder(desc: DescService, transport: Transport, tokenOf: TokenOf, opt: ProxyOptions) {
  const client = createClient(desc, transport) as unknown as Record<string, (...a: unknown[]) => unknown>;
  const impl: Record<string, unknown> = {};
  for (const method of desc.methods as DescMethod[]) {
    const call = client[method.localName];
    if (!call) continue;
    const what = `${desc.typeName}/${method.name}`;
    switch (method.methodKind) {
      case 'unary':
        impl[method.localName] = async (req: unknown, ctx: HandlerContext) => {
          try {
            return await call(req, callOptions(ctx, await tokenOf(ctx), opt.timeoutMs));
          } catch (err) {
            throw fromUpstream(err, what, { trace: ctx.values.get(upstreamTraceId), signal: ctx.signal });
          }
        };
        break;
      case 'server_streaming':
        impl[method.localName] = async function* (req: unknown, ctx: HandlerContext) {
          try {
            yield* call(req, callOptions(ctx, await tokenOf(ctx), opt.timeoutMs * 10)) as AsyncIterable<unknown>;
          } catch (err) {
            throw fromUpstream(err, what, { trace: ctx.values.get(upstreamTraceId), signal: ctx.signal });
          }
        };
        break;
      default:
        impl[method.localName] = () => {
          throw new ConnectError('this method is not offered over HTTP', Code.Unimplemented);
        };
    }
  }
  return impl;
}

export function registerProxies(
  router: ConnectRouter,
  transports: Record<ServiceName, Transport>,
  tokenOf: TokenOf = tokenFromContext,
  opt: ProxyOptions = { timeoutMs: 15_000 },
): void {
  for (const name of SERVICE_NAMES) {
    for (const desc of UPSTREAMS[name] as readonly DescService[]) {
      router.service(desc, forwarder(desc, transports[name], tokenOf, opt) as never);
    }
  }
}

