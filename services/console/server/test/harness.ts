// Test harness (no tests here): stub LabShare services as real connect-node
// HTTP/2 servers built from the generated descriptors, the real development
// OpenID provider (deploy/oidc/server.mjs) on a free port with a throwaway
// PKI, a gateway in this process on a free port, and a plain HTTP client that
// shows exact statuses and headers.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fromBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { DebugInfoSchema, ErrorInfoSchema, RetryInfoSchema, type ErrorInfo } from '../../gen/google/rpc/error_details_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/grpc/health/v1/health_pb.js';
import { IdentityService, type TokenResponseSchema } from '../../gen/labshare/identity/v1/identity_pb.js';
import { BookingService } from '../../gen/labshare/booking/v1/booking_pb.js';
import { BillingService, GetInvoiceDocumentRequest_Format } from '../../gen/labshare/billing/v1/billing_pb.js';
import { InventoryService } from '../../gen/labshare/inventory/v1/inventory_pb.js';
import { UsageService } from '../../gen/labshare/usage/v1/usage_pb.js';
import { CalendarFeed_Kind, CalendarFeedService } from '../../gen/labshare/notify/v1/feeds_pb.js';
import { Webhook_State, WebhookService } from '../../gen/labshare/notify/v1/webhooks_pb.js';
import { NotificationKind, NotificationService } from '../../gen/labshare/notify/v1/notify_pb.js';
import { Role } from '../../gen/labshare/type/v1/types_pb.js';
import type { Config } from '../flags.js';
import type { Session } from '../sessions.js';
import { createGateway, type Gateway, type GatewayDeps } from '../gateway.js';

export const consoleDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const repoRoot = path.resolve(consoleDir, '..', '..');

// ------------------------------------------------------------ stub services

// The stub notify service's one live feed and one unsubscribe token.
export const FEED_TOKEN = 'q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c';
export const FEED_DOWN = 'downdowndowndowndowndowndowndowndowndowndow';
export const FEED_BODY = 'BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//LabShare//Feeds//EN\r\nX-WR-CALNAME:LabShare: 李伟\r\nEND:VCALENDAR\r\n';
export const FEED_ETAG = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
export const UNSUBSCRIBE_TOKEN = 'bGktd2VpOkJPT0tJTkdfUkVNSU5ERVI.0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
// A genuine token past its expiry: the stub answers UNSUBSCRIBE_TOKEN_EXPIRED.
export const EXPIRED_UNSUBSCRIBE_TOKEN = 'bGktd2VpOkJPT0tJTkdfUkVNSU5ERVI6MTcwMDAwMDAwMA.00112233445566778899aabbccddeeff';

// traceId: the x-trace-id request header the stub received (null: none).
export interface StubCall { method: string; authorization: string | null; traceId: string | null; request: unknown }

const DEMO_NOW = Date.parse('2027-04-01T02:00:00Z'); // the services' demo clock, not this machine's

export class Stub {
  calls: StubCall[] = [];
  accessTtlSeconds = 900;
  exchanges = 0;
  refreshes = 0;
  revoked: string[] = [];
  refreshGate: Promise<void> | undefined;  // holds RefreshToken until resolved
  revokeGate: Promise<void> | undefined;   // holds RevokeToken (after recording it) until resolved
  slowGate: Promise<void> | undefined;     // holds GetBooking "bookings/slow"
  slowStarted: (() => void) | undefined;
  healthy = true;
  deadRefreshTokens = new Set<string>();
  refreshFailure: ConnectError | undefined;  // RefreshToken answers this while set
  exchangeFailure: ConnectError | undefined; // ExchangeToken answers this while set
  // GetBooking refuses these authorization headers ('*': every one):
  // UNAUTHENTICATED TOKEN_EXPIRED.
  refusedTokens = new Set<string>();
  lenientRefresh = false;                    // an unknown refresh token is li-wei's
  healthChecks = 0;
  unsubscribed = false;
  private n = 0;
  server!: http2.Http2Server;
  address = '';

  private tokens(user: { id: string; org: string; roles: Role[]; name: string }) {
    const n = ++this.n;
    return {
      accessToken: `access-${n}`,
      tokenType: 'Bearer',
      expireTime: timestampFromMs(DEMO_NOW + this.accessTtlSeconds * 1000),
      expiresIn: BigInt(this.accessTtlSeconds),
      refreshToken: `rt-${n}`,
      refreshExpireTime: timestampFromMs(DEMO_NOW + 12 * 3600 * 1000),
      user: {
        name: `users/${user.id}`, displayName: user.name, organization: `organizations/${user.org}`, roles: user.roles,
      },
    } satisfies MessageInitShape<typeof TokenResponseSchema>;
  }

  private record(method: string, ctx: HandlerContext, request: unknown) {
    this.calls.push({
      method, authorization: ctx.requestHeader.get('authorization'), traceId: ctx.requestHeader.get('x-trace-id'), request,
    });
  }

  routes(router: ConnectRouter): void {
    const record = (method: string, ctx: HandlerContext, request: unknown) => this.record(method, ctx, request);
    // "bookings/slow", ExportUsage with resume_token "slow": held until
    // slowGate resolves or the call ends (canceled, its connection lost).
    const held = async (ctx: HandlerContext) => {
      this.slowStarted?.();
      const ended = new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
      await (this.slowGate ? Promise.race([this.slowGate, ended]) : ended);
    };
    const usersByRefresh = new Map<string, { id: string; org: string; roles: Role[]; name: string }>();
    router.service(IdentityService, {
      exchangeToken: (req, ctx) => {
        this.record('ExchangeToken', ctx, req);
        ++this.exchanges;
        if (this.exchangeFailure) throw this.exchangeFailure;
        const claims = JSON.parse(Buffer.from(req.idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
          sub?: string; aud?: string | string[]; preferred_username?: string; name?: string;
        };
        if (claims.sub === 'acct-liu-yang') {
          throw new ConnectError('no user has this subject or verified email', Code.PermissionDenied, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'USER_NOT_REGISTERED', domain: 'inventory.labshare' } },
          ]);
        }
        const id = claims.preferred_username ?? String(claims.sub);
        const user = { id, org: id === 'li-wei' ? 'nanocraft' : 'zju', roles: [Role.LAB_USER], name: claims.name ?? id };
        const t = this.tokens(user);
        usersByRefresh.set(t.refreshToken, user);
        return t;
      },
      refreshToken: async (req, ctx) => {
        this.record('RefreshToken', ctx, req);
        ++this.refreshes;
        if (this.refreshGate) await this.refreshGate;
        if (this.refreshFailure) throw this.refreshFailure;
        const user = usersByRefresh.get(req.refreshToken)
          ?? (this.lenientRefresh ? { id: 'li-wei', org: 'nanocraft', roles: [Role.LAB_USER], name: 'Li Wei' } : undefined);
        if (!user || this.deadRefreshTokens.has(req.refreshToken)) {
          throw new ConnectError('refresh token unknown, expired or revoked; sign in again', Code.Unauthenticated,
            undefined, [{ desc: ErrorInfoSchema, value: { reason: 'INVALID_REFRESH_TOKEN', domain: 'inventory.labshare' } }]);
        }
        usersByRefresh.delete(req.refreshToken);
        this.accessTtlSeconds = 900;
        const t = this.tokens({ ...user, roles: [Role.LAB_USER, Role.FACILITY_STAFF] });
        usersByRefresh.set(t.refreshToken, user);
        return t;
      },
      revokeToken: async (req, ctx) => {
        this.record('RevokeToken', ctx, req);
        this.revoked.push(req.refreshToken);
        if (this.revokeGate) await this.revokeGate;
        return {};
      },
    });
    router.service(BookingService, {
      getBooking: async (req, ctx) => {
        this.record('GetBooking', ctx, req);
        if (req.name === 'bookings/missing') {
          throw new ConnectError('booking bookings/missing does not exist', Code.NotFound, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'BOOKING_NOT_FOUND', domain: 'booking.labshare', metadata: { booking: 'bookings/missing' } } },
            { desc: DebugInfoSchema, value: { stackEntries: ['booking_service.cc:123 secret'], detail: 'internal detail' } },
          ]);
        }
        if (req.name === 'bookings/proxy') {
          // What an Envoy in front of a service says when the service is gone.
          throw new ConnectError('upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: 111 remote 10.1.2.3:50052', Code.Unavailable);
        }
        // A defect or damaged data: words that quote storage and code.
        if (req.name === 'bookings/internal') {
          throw new ConnectError('WRONGTYPE Operation against a key holding the wrong kind of value: {instr:sem-1}:cal at 10.0.0.5:6379', Code.Internal, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'STORAGE_ERROR', domain: 'booking.labshare', metadata: { key: '{instr:sem-1}:cal' } } },
            { desc: DebugInfoSchema, value: { stackEntries: ['redis_booking_store.cc:88'], detail: 'internal detail' } },
          ]);
        }
        if (req.name === 'bookings/dataloss') {
          throw new ConnectError('booking b7 does not parse at {instr:sem-1}:doc:b7', Code.DataLoss, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'CORRUPT_DOCUMENT', domain: 'booking.labshare' } },
          ]);
        }
        if (req.name === 'bookings/unknown') {
          throw new ConnectError('TypeError: undefined is not a function at /srv/booking/handler.js:12', Code.Unknown);
        }
        if (req.name === 'bookings/bare') {
          throw new ConnectError('grpc: received message larger than max (5000 vs. 4096) at 10.1.2.3', Code.ResourceExhausted);
        }
        if (req.name === 'bookings/slow') await held(ctx);
        const who = ctx.requestHeader.get('authorization') ?? '';
        if (this.refusedTokens.has(who) || this.refusedTokens.has('*')) {
          throw new ConnectError('the bearer token expired at 2027-03-01T00:15:00Z; sign in again with `labshare login`', Code.Unauthenticated,
            undefined, [{ desc: ErrorInfoSchema, value: { reason: 'TOKEN_EXPIRED', domain: 'booking.labshare' } }]);
        }
        return { name: req.name, user: `users/for-${who.replace(/^Bearer /, '')}` };
      },
    });
    router.service(BillingService, {
      getInvoiceDocument: (req, ctx) => {
        this.record('GetInvoiceDocument', ctx, req);
        if (req.name === 'invoices/ls-cny-2027-000666') {
          throw new ConnectError('renderer crashed: /usr/share/fonts/missing.ttf', Code.Internal, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'DOCUMENT_RENDER_FAILED', domain: 'billing.labshare' } },
          ]);
        }
        if (req.name !== 'invoices/ls-cny-2027-000001') {
          throw new ConnectError(`${req.name} does not exist`, Code.NotFound, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'INVOICE_NOT_FOUND', domain: 'billing.labshare' } },
          ]);
        }
        const pdf = req.format === GetInvoiceDocumentRequest_Format.PDF;
        return {
          contentType: pdf ? 'application/pdf' : 'text/csv; charset=utf-8',
          filename: `LS-CNY-2027-000001.${pdf ? 'pdf' : 'csv'}`,
          content: new TextEncoder().encode(pdf ? '%PDF-1.5 stub' : 'record,key\r\ninvoice,number\r\n'),
        };
      },
    });
    router.service(InventoryService, {
      getOrganization: (req, ctx) => {
        this.record('GetOrganization', ctx, req);
        return { name: req.name, displayName: 'NanoCraft' };
      },
    });
    router.service(UsageService, {
      exportUsage: async function* (this: void, req, ctx) {
        record('ExportUsage', ctx, req);
        yield {};
        if (req.resumeToken === 'slow') await held(ctx);
        if (req.resumeToken === 'corrupt') {
          throw new ConnectError('audit entry 41 missing at {usage}:audit:41', Code.Internal, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'AUDIT_CORRUPTED', domain: 'usage.labshare' } },
          ]);
        }
        throw new ConnectError('export interrupted', Code.Aborted, undefined, [
          { desc: ErrorInfoSchema, value: { reason: 'EXPORT_ABORTED', domain: 'usage.labshare' } },
        ]);
      },
    });
    // labshare-notify: one live feed ("feed-token-...") and one unsubscribe
    // token; everything else unknown, as the service answers it.
    router.service(CalendarFeedService, {
      getCalendarFeedContent: (req, ctx) => {
        this.record('GetCalendarFeedContent', ctx, req);
        if (req.token === FEED_DOWN) throw new ConnectError('redis down at 10.0.0.5', Code.Unavailable, undefined, [
          { desc: ErrorInfoSchema, value: { reason: 'STORAGE_UNAVAILABLE', domain: 'notify.labshare' } },
        ]);
        if (req.token !== FEED_TOKEN) {
          throw new ConnectError('no live feed has this token', Code.NotFound, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'FEED_NOT_FOUND', domain: 'notify.labshare' } },
          ]);
        }
        return { contentType: 'text/calendar; charset=utf-8', body: new TextEncoder().encode(FEED_BODY), etag: FEED_ETAG };
      },
      listCalendarFeeds: (req, ctx) => {
        this.record('ListCalendarFeeds', ctx, req);
        return { calendarFeeds: [{ name: `${req.parent}/calendarFeeds/f1`, kind: CalendarFeed_Kind.USER }] };
      },
    });
    router.service(WebhookService, {
      listWebhooks: (req, ctx) => {
        this.record('ListWebhooks', ctx, req);
        return { webhooks: [{ name: `${req.parent}/webhooks/erp`, url: 'https://erp.example.com/hook', state: Webhook_State.ENABLED }] };
      },
    });
    router.service(NotificationService, {
      getNotificationSettings: (req, ctx) => {
        this.record('GetNotificationSettings', ctx, req);
        return { name: req.name, language: 'zh-CN' };
      },
      unsubscribe: (req, ctx) => {
        this.record('Unsubscribe', ctx, req);
        if (req.token === EXPIRED_UNSUBSCRIBE_TOKEN) {
          throw new ConnectError('this unsubscribe link has expired', Code.NotFound, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'UNSUBSCRIBE_TOKEN_EXPIRED', domain: 'notify.labshare' } },
          ]);
        }
        if (req.token !== UNSUBSCRIBE_TOKEN) {
          throw new ConnectError('this unsubscribe link is not valid', Code.NotFound, undefined, [
            { desc: ErrorInfoSchema, value: { reason: 'UNSUBSCRIBE_TOKEN_NOT_FOUND', domain: 'notify.labshare' } },
          ]);
        }
        const changed = !req.validateOnly && !this.unsubscribed;
        if (!req.validateOnly) this.unsubscribed = true;
        return { user: 'users/li-wei', kind: NotificationKind.BOOKING_REMINDER, changed };
      },
    });
    router.service(Health, {
      check: () => (++this.healthChecks, {
        status: this.healthy ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.NOT_SERVING,
      }),
    });
  }

  // The HTTP/2 connections the stub accepted and still has.
  sessions = new Set<http2.ServerHttp2Session>();
  sockets = new Set<net.Socket>();
  sessionsOpened = 0;

  async start(): Promise<this> {
    this.server = http2.createServer(connectNodeAdapter({ routes: (r) => this.routes(r) }));
    this.server.on('session', (s) => {
      ++this.sessionsOpened;
      this.sessions.add(s);
      s.on('close', () => this.sessions.delete(s));
    });
    this.server.on('connection', (c: net.Socket) => {
      this.sockets.add(c);
      c.on('close', () => this.sockets.delete(c));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.address = `127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
    return this;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      (this.server as unknown as { closeAllSessions?: () => void }).closeAllSessions?.();
    });
  }

  callsOf(method: string): StubCall[] {
    return this.calls.filter((c) => c.method === method);
  }
}

// A loopback port nobody listens on (bound, then closed).
export async function closedPort(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

// --------------------------------------------------------------- gateway

export function testConfig(over: Partial<Config> & { upstream: string; port: number }): Config {
  const { upstream, port, ...rest } = over;
  return {
    listen: { host: '127.0.0.1', port },
    publicUrl: new URL(`http://127.0.0.1:${port}`),
    upstreams: { inventory: upstream, booking: upstream, billing: upstream, usage: upstream, notify: upstream },
    tls: {},
    webRoot: path.join(consoleDir, 'dist', 'web'),
    bodyLimitBytes: 1024 * 1024,
    maxBodyBytesInFlight: 64 * 1024 * 1024,
    maxPendingBodiesPerAddress: 32,
    bodyReadTimeoutMs: 15_000,
    maxConnectionsPerAddress: 256,
    upstreamTimeoutMs: 5000,
    refreshMarginMs: 60_000,
    sessionIdleTimeoutMs: 30 * 60_000,
    maxSessions: 1000,
    // Tests make many sessions of one person in one store; the cap per
    // person (10 in production) is tested on its own (edge-harden.test.ts).
    maxSessionsPerUser: 1000,
    rateLimit: { perSecond: 0, burst: 1 },
    addressRateLimit: { perSecond: 0, burst: 1 },
    loginRateLimit: { perSecond: 0, burst: 1 },
    accessLogSample: 1,
    shutdownGraceMs: 1000,
    shutdownDrainMs: 0,
    ...rest,
  };
}

export interface TestGateway {
  url: string;
  origin: string;
  gw: Gateway;
  clock: { t: number };
  stop(): Promise<void>;
}

// Binds a free port first (the gateway's public URL and the provider's
// redirect URI depend on it), then builds the gateway for it.
export async function reservePort(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

export async function startGateway(
  make: (port: number) => Config,
  deps: GatewayDeps = {},
  reserved?: { server: http.Server; port: number },
): Promise<TestGateway> {
  const { server, port } = reserved ?? (await reservePort());
  const clock = { t: Date.parse('2026-06-01T08:00:00Z') };
  const gw = createGateway(make(port), { now: () => clock.t, random: () => 0.5, ...deps });
  server.on('request', (req, res) => gw.handle(req, res));
  server.on('checkContinue', (req, res) => {
    gw.continueOk(req, res);
    gw.handle(req, res);
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    origin: url,
    gw,
    clock,
    stop: () =>
      new Promise<void>((resolve) => {
        gw.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ------------------------------------------------------------ HTTP client

export interface Answer { status: number; headers: http.IncomingHttpHeaders; text: string; raw: Buffer; json<T = any>(): T }

export function request(
  method: string,
  url: string,
  { headers = {}, body }: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const h: Record<string, string> = { ...headers };
    if (body !== undefined) h['content-length'] = String(Buffer.byteLength(body));
    const req = http.request(u, { method, headers: h, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const text = raw.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, raw, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export const CONNECT_JSON = { 'content-type': 'application/json', 'connect-protocol-version': '1' };

export function rpc(base: string, method: string, message: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  return request('POST', `${base}/${method}`, { headers: { ...CONNECT_JSON, ...headers }, body: JSON.stringify(message) });
}

// The ErrorInfo (and RetryInfo) of a Connect JSON error body.
export function errorInfo(a: Answer): ErrorInfo | undefined {
  const body = a.json<{ details?: { type: string; value: string }[] }>();
  const d = body.details?.find((x) => x.type === 'google.rpc.ErrorInfo');
  return d ? fromBinary(ErrorInfoSchema, Buffer.from(d.value, 'base64')) : undefined;
}
// A Connect JSON error without details of its own: code, message and the
// ErrorInfo's reason and domain (the details must be that ErrorInfo only).
export function gatewayError(a: Answer): { code: string; message: string; reason?: string; domain?: string } {
  const body = a.json<{ code: string; message: string; details?: { type: string }[] }>();
  const info = errorInfo(a);
  if ((body.details ?? []).length !== 1) throw new Error(`expected exactly one detail (the ErrorInfo): ${a.text}`);
  return { code: body.code, message: body.message, reason: info?.reason, domain: info?.domain };
}
export function retryDelayMs(a: Answer): number | undefined {
  const body = a.json<{ details?: { type: string; value: string }[] }>();
  const d = body.details?.find((x) => x.type === 'google.rpc.RetryInfo');
  if (!d) return undefined;
  const r = fromBinary(RetryInfoSchema, Buffer.from(d.value, 'base64'));
  return Number(r.retryDelay?.seconds ?? 0n) * 1000 + (r.retryDelay?.nanos ?? 0) / 1e6;
}

export function cookieValue(setCookie: string[] | undefined, name: string): string | undefined {
  for (const line of setCookie ?? []) {
    const m = new RegExp(`^${name.replace(/[$]/g, '\\$&')}=([^;]*)`).exec(line);
    if (m) return m[1];
  }
  return undefined;
}

// ------------------------------------------------- PKI and the real provider

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function makePki(): string {
  const dir = path.join(tempDir('console-test-pki-'), 'pki');
  execFileSync('bash', [path.join(repoRoot, 'deploy', 'dev-pki.sh'), dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

export interface Provider { issuer: string; process: ChildProcess; stop(): Promise<void> }

export async function startProvider(pki: string, redirectUris: string[]): Promise<Provider> {
  const child = spawn(process.execPath, [
    path.join(repoRoot, 'deploy', 'oidc', 'server.mjs'),
    '--listen=127.0.0.1:0',
    `--accounts=${path.join(repoRoot, 'deploy', 'oidc', 'demo-accounts.json')}`,
    `--tls_cert=${path.join(pki, 'oidc.crt')}`,
    `--tls_key=${path.join(pki, 'oidc.key')}`,
    ...redirectUris.map((u) => `--console_redirect_uri=${u}`),
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  const issuer = await new Promise<string>((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const m = /^listening on (\S+)/.exec(line);
      if (m && m[1]) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`the provider exited (${code}): ${stderr}`)));
  });
  return {
    issuer,
    process: child,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.on('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

// deploy/oidc/browser.mjs: plays the person at the provider's real pages.
export interface BrowserLike {
  cookies: Map<string, { value: string; path: string }>;
  request(method: string, url: string, o?: { form?: Record<string, string>; headers?: Record<string, string> }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; url: URL }>;
  go(method: string, url: string, o?: { form?: Record<string, string>; stopAt?: string }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; url: URL; redirect?: string }>;
}
export interface BrowserModule {
  Browser: new (o: { ca?: string }) => BrowserLike;
  walk(b: BrowserLike, res: unknown, o: { login?: string; password?: string; stopAt?: string }): Promise<{ status: number; body: string; url: URL; redirect?: string }>;
  forms(html: string, url: URL): { action: string; method: string; fields: Record<string, string> }[];
}
export async function browserModule(): Promise<BrowserModule> {
  return (await import(pathToFileURL(path.join(repoRoot, 'deploy', 'oidc', 'browser.mjs')).href)) as BrowserModule;
}

export function providerInstalled(): boolean {
  return fs.existsSync(path.join(repoRoot, 'deploy', 'oidc', 'node_modules', 'oidc-provider'));
}

// Polls a condition the test cannot await directly (a call arriving at a
// stub, a line in a log); no fixed sleeps.
export async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

// A signed-in session of Li Wei (LAB_USER of NanoCraft) in the gateway's
// store, its access token valid for 15 minutes; `over` replaces fields.
export function newSession(t: TestGateway, over: Partial<Session> = {}): Session {
  const now = t.clock.t;
  const s = t.gw.auth.sessions.create({
    accessToken: 'access-s', accessExpiresAt: now + 900_000, refreshToken: 'rt-s', refreshExpiresAt: now + 12 * 3600_000,
    user: { name: 'users/li-wei', displayName: 'Li Wei', organization: 'organizations/nanocraft', roles: ['LAB_USER'] },
  });
  Object.assign(s, over);
  return s;
}

// gRPC-Web over HTTP/1.1: the answer's headers and the fields of its
// trailer frame at the body's end (a trailers-only answer has its status in
// the headers), lower-cased names.
export function grpcWebTrailers(a: { headers: Record<string, unknown>; raw: Buffer }): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of Object.entries(a.headers)) if (typeof v === 'string') out.set(k, v);
  for (let at = 0; at + 5 <= a.raw.length;) {
    const n = a.raw.readUInt32BE(at + 1);
    if (a.raw[at] === 0x80) {
      for (const line of a.raw.subarray(at + 5, at + 5 + n).toString('latin1').split('\r\n')) {
        const i = line.indexOf(':');
        if (i > 0) out.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
      }
    }
    at += 5 + n;
  }
  return out;
}
