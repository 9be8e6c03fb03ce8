// Forwards every RPC of the four public services to the service itself, with
// the caller's LabShare token. Connect does all protocol work (Connect JSON,
// gRPC-Web and gRPC in, gRPC out); nothing here translates a message by hand.
import type { ConnectRouter, HandlerContext } from '@connectrpc/connect';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import type { Client, Transport } from '@connectrpc/connect';
import type { DescMethod, DescService } from '@bufbuild/protobuf';
import { InventoryService } from '../gen/labshare/inventory/v1/inventory_pb.js';
import { BookingService } from '../gen/labshare/booking/v1/booking_pb.js';
import { BillingService } from '../gen/labshare/billing/v1/billing_pb.js';
import { UsageService } from '../gen/labshare/usage/v1/usage_pb.js';

export const PUBLIC_SERVICES = {
  inventory: InventoryService,
  booking: BookingService,
  billing: BillingService,
  usage: UsageService,
} as const;
export type ServiceName = keyof typeof PUBLIC_SERVICES;

// Who the call is for: the bearer token to send upstream, or undefined
// (the service then answers UNAUTHENTICATED itself).
export type TokenOf = (ctx: HandlerContext) => Promise<string | undefined> | string | undefined;

function callOptions(ctx: HandlerContext, token: string | undefined) {
  const headers = new Headers();
  if (token) headers.set('authorization', `Bearer ${token}`);
  const timeoutMs = ctx.timeoutMs();
  return { headers, signal: ctx.signal, ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
}

// An upstream error goes back as the service's code, message and details
// only: its metadata holds the upstream gRPC response headers (content-type
// application/grpc, grpc-status...), which would otherwise be copied onto
// the Connect answer and make it unreadable to the browser.
function rethrowClean(err: unknown): never {
  const ce = ConnectError.from(err);
  const out = new ConnectError(ce.rawMessage, ce.code, undefined, undefined, ce.cause);
  out.details = ce.details;
  throw out;
}

function forwarder(desc: DescService, transport: Transport, tokenOf: TokenOf) {
  const client = createClient(desc, transport) as unknown as Record<string, (...a: unknown[]) => unknown>;
  const impl: Record<string, unknown> = {};
  for (const method of desc.methods as DescMethod[]) {
    const call = client[method.localName];
    if (!call) continue;
    switch (method.methodKind) {
      case 'unary':
        impl[method.localName] = async (req: unknown, ctx: HandlerContext) => {
          try {
            return await call(req, callOptions(ctx, await tokenOf(ctx)));
          } catch (err) {
            rethrowClean(err);
          }
        };
        break;
      case 'server_streaming':
        impl[method.localName] = async function* (req: unknown, ctx: HandlerContext) {
          try {
            yield* call(req, callOptions(ctx, await tokenOf(ctx))) as AsyncIterable<unknown>;
          } catch (err) {
            rethrowClean(err);
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
  tokenOf: TokenOf,
): void {
  for (const [name, desc] of Object.entries(PUBLIC_SERVICES) as [ServiceName, DescService][]) {
    router.service(desc, forwarder(desc, transports[name], tokenOf) as never);
  }
}

export type PublicClients = { [K in ServiceName]: Client<(typeof PUBLIC_SERVICES)[K]> };
