// The gateway as a request handler: routes, the RPC guard (who, CSRF, rate
// limit, errors, access log) and the listening server with its graceful
// stop. main.ts reads the flags and starts it; the tests start it in-process.
import http from 'node:http';
import http2 from 'node:http2';
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  Code, ConnectError, createClient, createConnectRouter, createContextKey, createContextValues, type Interceptor, type Transport,
} from '@connectrpc/connect';
import type { UniversalServerRequest } from '@connectrpc/connect/protocol';
import {
  compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse,
} from '@connectrpc/connect-node';
import { ErrorInfoSchema } from '../gen/google/rpc/error_details_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import { IdentityService } from '../gen/labshare/identity/v1/identity_pb.js';
import { BillingService, GetInvoiceDocumentRequest_Format } from '../gen/labshare/billing/v1/billing_pb.js';
import { CalendarFeedService } from '../gen/labshare/notify/v1/feeds_pb.js';
import { NotificationService } from '../gen/labshare/notify/v1/notify_pb.js';
import { Auth, signinError } from './auth.js';
import { consoleError, fromUpstream, logLine, MESSAGES, rateLimited, sanitize, sendConnectError } from './errors.js';
import { edgeHandler, edgeRefusal } from './edge.js';
import type { Config } from './flags.js';
import {
  addressKey, clientAddress, CSP, headersOf, HSTS, inList, peerAddress, redirect, securityHeaders, sendJson, sendText, SESSION_COOKIE,
  type Req, type Res,
} from './http-util.js';
import { Admission, BodyBudget } from './inflight.js';
import { FEED_PATH, serveFeed, serveUnsubscribe, type PublicDeps } from './public.js';
import { registerProxies, SERVICE_NAMES, UPSTREAMS, upstreamToken, upstreamTraceId, type ServiceName } from './proxy.js';
import { RateLimiter } from './ratelimit.js';
import { StaticFiles } from './static.js';
import { TRACE_HEADER, traceIdOf } from './trace.js';
import { upstreamTransport, type Upstream } from './upstream.js';

export interface GatewayDeps {
  now?: () => number;                                     // tests move time
  transports?: Partial<Record<ServiceName, Transport>>;   // tests: stub services
  random?: () => number;                                  // access-log sampling
}

export interface Gateway {
  handle(req: Req, res: Res): void;
  // A request with "Expect: 100-continue" (the server's checkContinue
  // event): a body over --body_limit by its Content-Length is refused
  // without "100 Continue", so the client never sends it; any other request
  // is told to go on. Returns whether to go on (then call handle).
  continueOk(req: Req, res: Res): boolean;
  auth: Auth;
  limiter: RateLimiter;
  // The RPC bodies held and arriving (inflight.ts).
  bodies: BodyBudget;
  readiness(): Promise<{ ready: boolean; services: Record<string, string> }>;
  // Stopping: /readyz answers 503 from now on (the load balancer takes the
  // pod out) while everything else is still served.
  drain(): void;
  close(): void;
}

// A service's UNAUTHENTICATED for the token itself (TOKEN_EXPIRED,
// INVALID_TOKEN), as proxy.ts passes it on (fromUpstream), as opposed to
// the gateway's own (domain console.labshare).
function tokenRefused(err: unknown): boolean {
  if (!(err instanceof ConnectError) || err.code !== Code.Unauthenticated) return false;
  const info = err.findDetails(ErrorInfoSchema)[0];
  return !!info && info.domain !== 'console.labshare' && (info.reason === 'TOKEN_EXPIRED' || info.reason === 'INVALID_TOKEN');
}

const addressWaitKey = createContextKey<number>(0, { description: 'wait asked by the per-address bucket' });
const ADDRESS_WAIT = Symbol('per-address wait');
const admissionKey = createContextKey<Admission | ConnectError | undefined>(undefined, { description: 'what is held for the body' });
const ADMISSION = Symbol('body admission');
const peerKey = createContextKey<string>('unknown', { description: 'client address' });
const callLog = createContextKey<{ logged: boolean }>({ logged: false }, { description: 'access log state' });

const LOG = Symbol('access log state');
const TRACE = Symbol('trace id');
// The Connect protocol's HTTP statuses, back to the likeliest code (for the
// access log of calls refused before a method ran).
const HTTP_CODE: Record<number, string> = {
  400: 'invalid_argument', 401: 'unauthenticated', 403: 'permission_denied', 404: 'unimplemented',
  405: 'unimplemented', 408: 'deadline_exceeded', 409: 'aborted', 412: 'failed_precondition', 413: 'resource_exhausted',
  415: 'invalid_argument', 429: 'resource_exhausted', 499: 'canceled', 500: 'internal', 501: 'unimplemented',
  503: 'unavailable', 504: 'deadline_exceeded',
};
const codeName = (c: Code) => Code[c].replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();

// Calls `f` once the answer has been sent in full. HTTP/2: Node's
// compatibility response says 'finish' only when its stream closes, which a
// client still sending its body never lets happen; it always ends a
// response with trailers (waitForTrailers), sent from its own
// 'wantTrailers' listener. `f` runs after that, once the write that carries
// them is under way (setImmediate): an RST_STREAM submitted any earlier goes
// out first in nghttp2 and the trailers (a gRPC status) are lost (tried on
// gRPC refusals of half-sent bodies: after process.nextTick 0 of 900 kept
// their status, after setImmediate 900 of 900, and 2400 of 2400 at 60 at once).
function answered(req: Req, res: Res, f: () => void): void {
  if ('stream' in req) {
    req.stream.once('wantTrailers', () => setImmediate(f));
    return;
  }
  res.once('finish', f);
}

export function createGateway(cfg: Config, deps: GatewayDeps = {}): Gateway {
  const now = deps.now ?? Date.now;
  const random = deps.random ?? Math.random;
  const owned: Upstream[] = [];
  const transports = {} as Record<ServiceName, Transport>;
  for (const name of SERVICE_NAMES) {
    const given = deps.transports?.[name];
    if (given) transports[name] = given;
    else {
      const u = upstreamTransport(cfg.upstreams[name], cfg.tls);
      owned.push(u);
      transports[name] = u.transport;
    }
  }
  // IdentityService lives in labshare-inventory: the same connection.
  const identity = createClient(IdentityService, transports.inventory);
  const auth = new Auth(cfg, identity, now);
  const billing = createClient(BillingService, transports.billing);
  const limiter = new RateLimiter(cfg.rateLimit.perSecond, cfg.rateLimit.burst, now);
  // Per client address, taken before anything else (who the caller is):
  // random bearer tokens, unknown cookies and CSRF failures all count here.
  const addressLimiter = new RateLimiter(cfg.addressRateLimit.perSecond, cfg.addressRateLimit.burst, now);
  const loginLimiter = new RateLimiter(cfg.loginRateLimit.perSecond, cfg.loginRateLimit.burst, now);
  const bodies = new BodyBudget(cfg.maxBodyBytesInFlight, cfg.maxPendingBodiesPerAddress, cfg.bodyReadTimeoutMs);
  // The client's address as it is counted: IPv6 by its /64 (http-util.ts addressKey).
  const addressOf = (req: Req) => addressKey(clientAddress(req, cfg.trustedProxies));
  let draining = false;
  const files = new StaticFiles(cfg.webRoot);
  const https = !!cfg.https;

  const access = (method: string, code: string, ms: number, kind: string, fields: Record<string, unknown> = {}) => {
    if (code === 'ok' && !(cfg.accessLogSample >= 1 || random() < cfg.accessLogSample)) return;
    logLine({ level: code === 'ok' ? 'info' : 'warn', msg: 'rpc', method, code, ms: Math.round(ms * 100) / 100, auth: kind, ...fields });
  };

  // Every RPC passes here first: who it is for, CSRF, the rate limit, the
  // upstream token; errors made safe; one access-log line. The trace id
  // (rpc() below) is already in the answer's headers and goes upstream
  // from the context (proxy.ts).
  const guard: Interceptor = (next) => async (req) => {
    const start = performance.now();
    const method = `${req.service.typeName}/${req.method.name}`;
    const trace = { trace_id: req.contextValues.get(upstreamTraceId) };
    req.contextValues.get(callLog).logged = true;
    let kind = 'anonymous';
    let streaming = false;
    let code = 'ok';
    try {
      // Refused in the edge (edge.ts; a stream gets here before its body is
      // read): that answer, before anything else.
      const refused = req.contextValues.get(edgeRefusal);
      if (refused) throw refused;
      // The per-address bucket was taken in rpc(), before Connect read anything.
      const peer = req.contextValues.get(peerKey);
      const caller = auth.identify(req.header, req.requestMethod, peer);
      kind = caller.kind;
      const wait = limiter.take(caller.rateKey);
      if (wait > 0) throw rateLimited(wait);
      // A refresh waits no longer than the caller's deadline (req.signal).
      const token = caller.session ? await auth.accessToken(caller.session, trace.trace_id, req.signal) : caller.token;
      req.contextValues.set(upstreamToken, token);
      let res;
      try {
        res = await next(req);
      } catch (err) {
        // A session's token refused by the service as expired or invalid:
        // renewed once and the call made once more (refused at the door,
        // the first attempt did nothing; mutations carry their request_id).
        if (!caller.session || token === undefined || !tokenRefused(err)) throw err;
        const fresh = await auth.renewRefused(caller.session, token, trace.trace_id, req.signal);
        if (fresh === undefined) throw err;
        req.contextValues.set(upstreamToken, fresh);
        res = await next(req);
      }
      if (!res.stream) return res;
      streaming = true;
      const inner = res.message;
      const who = kind;
      return {
        ...res,
        message: (async function* () {
          let c = 'ok';
          try {
            yield* inner;
          } catch (err) {
            const safe = sanitize(err, method);
            c = codeName(safe.code);
            throw safe;
          } finally {
            access(method, c, performance.now() - start, who, { stream: true, ...trace });
          }
        })(),
      };
    } catch (err) {
      const safe = sanitize(err, method);
      code = codeName(safe.code);
      if (kind === 'anonymous' && req.header.get('cookie')?.includes(SESSION_COOKIE)) kind = 'session';
      throw safe;
    } finally {
      if (!streaming) access(method, code, performance.now() - start, kind, trace);
    }
  };

  const router = createConnectRouter({
    interceptors: [guard],
    // Connect's own limit stays as the last line (it also bounds what a
    // compressed body inflates to); edge.ts refuses first, with an ErrorInfo.
    readMaxBytes: cfg.bodyLimitBytes,
    // A field the message does not have is an error, not silently dropped: a
    // script's typo ("instrument" for "instruments") would otherwise widen
    // its query to everything (edge.ts refuses it first: INVALID_FIELD).
    jsonOptions: { ignoreUnknownFields: false },
    // Compress answers (gzip/br, as the client accepts) from 16 KiB: lists
    // and reports shrink a lot; a single record of 1-2 KB is not worth the
    // CPU per call.
    compressMinBytes: 16 * 1024,
    acceptCompression: [compressionGzip, compressionBrotli],
  });
  registerProxies(router, transports, undefined, { timeoutMs: cfg.upstreamTimeoutMs });
  const edge = {
    bodyLimitBytes: cfg.bodyLimitBytes,
    addressWait: (r: UniversalServerRequest) => r.contextValues?.get(addressWaitKey) ?? 0,
    rateLimited,
    admission: (r: UniversalServerRequest) => r.contextValues?.get(admissionKey),
  };
  const methods = new Map(router.handlers.map((h) => [h.requestPath, edgeHandler(h, edge)] as const));
  const contextValues = (req: Req) => {
    const v = createContextValues();
    v.set(peerKey, addressOf(req));
    v.set(callLog, (req as unknown as { [LOG]?: { logged: boolean } })[LOG] ?? { logged: false });
    v.set(upstreamTraceId, (req as unknown as { [TRACE]?: string })[TRACE] ?? traceIdOf(req.headers));
    v.set(addressWaitKey, (req as unknown as { [ADDRESS_WAIT]?: number })[ADDRESS_WAIT] ?? 0);
    v.set(admissionKey, (req as unknown as { [ADMISSION]?: Admission | ConnectError })[ADMISSION]);
    return v;
  };
  // connect-node's adapter, with edge.ts in front of every method.
  const api = (req: Req, res: Res, path: string) => {
    const h = methods.get(path);
    if (!h) {
      // Not a method the gateway offers: plain 404, unless the address is over its limit.
      const wait = (req as unknown as { [ADDRESS_WAIT]?: number })[ADDRESS_WAIT] ?? 0;
      if (wait > 0) sendConnectError(res, rateLimited(wait));
      else sendText(res, 404, 'not found\n');
      return;
    }
    let uReq: UniversalServerRequest;
    try {
      uReq = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, undefined, contextValues(req));
    } catch {
      // HTTP/1.0 without a Host header: connect-node cannot make a URL of it.
      sendConnectError(res, consoleError(Code.InvalidArgument, 'INVALID_REQUEST', 'the request names no host (Host header)'));
      return;
    }
    h(uReq)
      .then((uRes) => universalResponseToNodeResponse(uRes, res as http.ServerResponse))
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code === Code.Aborted) return;
        sanitize(reason, path.slice(1)); // logs it
        if (!res.headersSent) sendConnectError(res, consoleError(Code.Internal, 'INTERNAL_ERROR', MESSAGES.internal));
        else res.end();
      });
  };

  const health = Object.fromEntries(
    SERVICE_NAMES.map((n) => [n, createClient(Health, transports[n])]),
  ) as Record<ServiceName, ReturnType<typeof createClient<typeof Health>>>;
  const check = async () => {
    const services: Record<string, string> = {};
    await Promise.all(SERVICE_NAMES.map(async (n) => {
      try {
        const r = await health[n].check({ service: UPSTREAMS[n][0].typeName }, { timeoutMs: 3000 });
        services[n] = HealthCheckResponse_ServingStatus[r.status] ?? String(r.status);
      } catch (err) {
        services[n] = err instanceof ConnectError ? `UNREACHABLE (${codeName(err.code)})` : 'UNREACHABLE';
      }
    }));
    const ordered = Object.fromEntries(SERVICE_NAMES.map((n) => [n, services[n]!]));
    // Ready while the core services are: the notifier (mail, webhooks,
    // feeds) is reported but does not take the whole console out of the
    // load balancer; its own pages answer 503 while it is away.
    const ready = SERVICE_NAMES.every((n) => n === 'notify' || services[n] === 'SERVING');
    return { ready, services: ordered };
  };
  // One check of the services answers every /readyz of the next second.
  let lastCheck: { at: number; answer: ReturnType<typeof check> } | undefined;
  const readiness = () => {
    const t = now();
    if (!lastCheck || t - lastCheck.at >= 1000 || t < lastCheck.at) lastCheck = { at: t, answer: check() };
    return lastCheck.answer;
  };

  // The public pages of labshare-notify (public.ts): no session, no token
  // upstream; the secret in the URL is the credential.
  const publicDeps: PublicDeps = {
    feeds: createClient(CalendarFeedService, transports.notify),
    notifications: createClient(NotificationService, transports.notify),
    timeoutMs: cfg.upstreamTimeoutMs,
    access: (what, code, ms) => access(what, code, ms, 'anonymous'),
    publicOrigin: auth.publicOrigin,
  };

  const sweep = setInterval(() => auth.sessions.sweep(), 60_000);
  sweep.unref();

  const rpc = (req: Req, res: Res, path: string) => {
    // The trace id answers on every outcome, the gateway's own refusals
    // included (Connect merges these headers into its own).
    const trace = traceIdOf(req.headers);
    res.setHeader(TRACE_HEADER, trace);
    // No answer of an RPC is for a cache (a person's bookings, invoices,
    // tokens' effects), success or error, in every protocol.
    res.setHeader('cache-control', 'no-store');
    (req as unknown as Record<symbol, unknown>)[TRACE] = trace;
    // A body over the limit is refused (resource_exhausted) from its
    // Content-Length, before anything is read; the connection closes after
    // the answer, so that the rest of the body is never taken in.
    // (Chunked bodies: Connect counts while reading and answers when over.)
    const length = Number(req.headers['content-length'] ?? 0);
    const socket = req.socket as net.Socket | null;
    if (req.httpVersionMajor === 1) {
      if (length > cfg.bodyLimitBytes) res.setHeader('connection', 'close');
      // Answered before the body was read to its end (too large while
      // counting a chunked body, refused early): say the connection closes.
      const h1 = res as http.ServerResponse;
      const writeHead = h1.writeHead;
      h1.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
        if (!req.complete && !this.headersSent) this.setHeader('connection', 'close');
        return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
      } as typeof h1.writeHead;
    }
    answered(req, res, () => {
      if (req.complete) return;
      if (req.httpVersionMajor === 1) {
        if (!socket || socket.destroyed) return;
        socket.end();
        socket.once('finish', () => socket.destroy());
      } else {
        // HTTP/2: RST_STREAM(NO_ERROR) after the complete answer tells the
        // client to stop sending the body (RFC 9113, 8.1).
        (req as http2.Http2ServerRequest).stream.close(http2.constants.NGHTTP2_NO_ERROR);
      }
    });
    const state = { logged: false };
    (req as unknown as Record<symbol, unknown>)[LOG] = state;
    const start = performance.now();
    const logRefused = () => {
      // Refused before reaching a method (unknown route, bad body, size):
      // logged here with the code of its HTTP status; a client that went
      // away before any answer as canceled.
      if (state.logged) return;
      state.logged = true;
      const grpcStatus = Number(res.getHeader('grpc-status') ?? 0);
      const code = !res.headersSent ? 'canceled'
        : res.statusCode === 200 ? (grpcStatus ? codeName(grpcStatus) : 'ok') : (HTTP_CODE[res.statusCode] ?? 'unknown');
      access(path.slice(1), code, performance.now() - start, 'none', { http: res.headersSent ? res.statusCode : 499, trace_id: trace });
    };
    answered(req, res, logRefused);
    res.once('finish', logRefused);
    res.once('close', logRefused);
    // The per-address bucket first, before Connect reads anything (edge.ts
    // answers the refusal in the caller's protocol); then a place among the
    // bodies arriving from this address, and the bytes of its body counted
    // as they are read, until the call ends (inflight.ts).
    const addr = addressOf(req);
    const wait = addressLimiter.take(`a:${addr}`);
    (req as unknown as Record<symbol, unknown>)[ADDRESS_WAIT] = wait;
    if (wait <= 0) {
      const admitted = bodies.admit(addr);
      (req as unknown as Record<symbol, unknown>)[ADMISSION] = admitted;
      if (admitted instanceof Admission) res.once('close', () => admitted.end());
    }
    api(req, res, path);
  };

  // GET /documents/invoices/{invoice}.pdf|.csv: billing's GetInvoiceDocument
  // for the signed-in session (or a bearer token) as a file download, so
  // that a plain link saves the invoice. Errors answer the Connect JSON
  // error body with its HTTP status (the console shows the reason).
  const DOCUMENT_PATH = /^\/documents\/invoices\/([a-z0-9][a-z0-9-]{0,62})\.(pdf|csv)$/;
  const invoiceDocument = async (req: Req, res: Res, path: string, trace: string) => {
    const start = performance.now();
    const method = 'labshare.billing.v1.BillingService/GetInvoiceDocument';
    const fields = { download: true, trace_id: trace };
    let kind = 'anonymous';
    try {
      const m = DOCUMENT_PATH.exec(path);
      if (!m || !m[1] || !m[2]) {
        sendText(res, 404, 'not found\n');
        return;
      }
      const caller = auth.identify(headersOf(req), 'GET', addressOf(req));
      kind = caller.kind;
      const wait = limiter.take(caller.rateKey);
      if (wait > 0) throw rateLimited(wait);
      const token = caller.session ? await auth.accessToken(caller.session, trace) : caller.token;
      const format = m[2] === 'pdf' ? GetInvoiceDocumentRequest_Format.PDF : GetInvoiceDocumentRequest_Format.CSV;
      let doc;
      try {
        doc = await billing.getInvoiceDocument({ name: `invoices/${m[1]}`, format }, {
          headers: token ? { authorization: `Bearer ${token}`, [TRACE_HEADER]: trace } : { [TRACE_HEADER]: trace },
          timeoutMs: cfg.upstreamTimeoutMs,
        });
      } catch (err) {
        throw fromUpstream(err, method, { trace });
      }
      // The file name is the invoice number ([A-Z0-9-]); anything else is dropped.
      const filename = doc.filename.replace(/[^A-Za-z0-9._-]/g, '') || `${m[1]}.${m[2]}`;
      res.writeHead(200, {
        'content-type': doc.contentType,
        'content-disposition': `attachment; filename="${filename}"`,
        'content-length': String(doc.content.byteLength),
        'cache-control': 'private, no-store',
      });
      if (req.method === 'HEAD') res.end();
      else res.end(Buffer.from(doc.content));
      access(method, 'ok', performance.now() - start, kind, fields);
    } catch (err) {
      const safe = sanitize(err, method);
      access(method, codeName(safe.code), performance.now() - start, kind, fields);
      if (res.headersSent) res.end();
      else sendConnectError(res, safe);
    }
  };

  // /feeds/<token>.ics and /unsubscribe: per client address only (there is
  // no session); a body only for the one-click POST, a few bytes.
  const publicPage = (req: Req, res: Res, url: URL) => {
    const method = req.method ?? 'GET';
    // These call labshare-notify too (an unsubscribe changes settings): the
    // trace id goes upstream, into the access log and into every answer.
    const trace = traceIdOf(req.headers);
    res.setHeader(TRACE_HEADER, trace);
    const deps: PublicDeps = {
      ...publicDeps,
      headers: { [TRACE_HEADER]: trace },
      access: (what, code, ms) => access(what, code, ms, 'anonymous', { trace_id: trace }),
    };
    const feed = FEED_PATH.exec(url.pathname);
    const allowed = feed ? ['GET', 'HEAD'] : ['GET', 'HEAD', 'POST'];
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (req.httpVersionMajor === 1 && hasBody && (feed || method !== 'POST')) res.setHeader('connection', 'close');
    if (url.pathname.startsWith('/feeds/') && !feed) {
      sendText(res, 404, 'not found\n');
      return;
    }
    if (!allowed.includes(method)) {
      sendText(res, 405, 'method not allowed\n', { allow: allowed.join(', ') });
      return;
    }
    const wait = addressLimiter.take(`a:${addressOf(req)}`);
    if (wait > 0) {
      if (req.httpVersionMajor === 1 && hasBody) res.setHeader('connection', 'close');
      sendText(res, 429, 'too many requests; try again shortly\n', { 'retry-after': String(Math.max(1, Math.ceil(wait / 1000))) });
      return;
    }
    if (req.httpVersionMajor === 1 && method === 'POST') {
      // The body is read only up to a few KiB: when the answer goes out
      // before the whole body was read, the connection closes.
      const h1 = res as http.ServerResponse;
      const writeHead = h1.writeHead;
      h1.writeHead = function (this: http.ServerResponse, ...args: unknown[]) {
        if (!req.complete && !this.headersSent) this.setHeader('connection', 'close');
        return (writeHead as (...a: unknown[]) => http.ServerResponse).apply(this, args);
      } as typeof h1.writeHead;
    }
    const done = (err: unknown) => {
      sanitize(err, url.pathname.startsWith('/feeds/') ? '/feeds/{token}.ics' : '/unsubscribe');
      if (!res.headersSent) sendText(res, 500, 'internal error\n');
      else res.end();
    };
    if (feed) serveFeed(deps, req, res, feed[1]!).catch(done);
    else serveUnsubscribe(deps, req, res, url).catch(done);
  };

  const handle = (req: Req, res: Res) => {
    securityHeaders(res, https);
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://gateway');
    } catch {
      sendText(res, 400, 'bad request\n');
      return;
    }
    const path = url.pathname;
    if (path.startsWith('/labshare.')) {
      rpc(req, res, path);
      return;
    }
    const length = Number(req.headers['content-length'] ?? 0);
    // --body_limit holds for every path that is not an RPC (those answer
    // resource_exhausted, above), the public pages included.
    if (length > cfg.bodyLimitBytes) {
      if (req.httpVersionMajor === 1) res.setHeader('connection', 'close');
      sendText(res, 413, 'request body too large\n');
      return;
    }
    if (path.startsWith('/feeds/') || path === '/unsubscribe') {
      publicPage(req, res, url);
      return;
    }
    // No endpoint here reads a body: close the connection after answering
    // rather than reading (and throwing away) whatever is sent.
    if ((length > 0 || req.headers['transfer-encoding'] !== undefined) && req.httpVersionMajor === 1) {
      res.setHeader('connection', 'close');
    }
    const method = req.method ?? 'GET';
    const only = (m: string) => {
      if (method === m || (m === 'GET' && method === 'HEAD')) return true;
      sendText(res, 405, 'method not allowed\n', { allow: m === 'GET' ? 'GET, HEAD' : m });
      return false;
    };
    // `json`: the refusal is the Connect JSON error (RATE_LIMITED, RetryInfo,
    // Retry-After), as on the RPC paths; else plain text with Retry-After.
    // `page`: a page the browser opens (/auth/login, /auth/callback): the
    // app's page with signin_error=RATE_LIMITED, said in the person's language.
    const limited = (l: RateLimiter = loginLimiter, json = false, page = false) => {
      const addr = addressOf(req);
      const wait = Math.max(addressLimiter.take(`a:${addr}`), l === addressLimiter ? 0 : l.take(`ip:${addr}`));
      if (wait <= 0) return false;
      const retryAfter = { 'retry-after': String(Math.max(1, Math.ceil(wait / 1000))) };
      if (json) sendConnectError(res, rateLimited(wait));
      else if (page) redirect(res, signinError('RATE_LIMITED'), retryAfter);
      else sendText(res, 429, 'too many requests; try again shortly\n', retryAfter);
      return true;
    };
    const fail = (err: unknown) => {
      sanitize(err, path); // logs it
      if (!res.headersSent) sendText(res, 500, 'internal error\n');
      else res.end();
    };
    switch (path) {
      case '/healthz':
        if (only('GET')) sendText(res, 200, 'ok\n');
        return;
      case '/readyz':
        if (only('GET')) {
          if (draining) sendJson(res, 503, { ready: false, draining: true, services: {} });
          else readiness().then((r) => sendJson(res, draining ? 503 : r.ready ? 200 : 503, draining ? { ...r, ready: false, draining } : r)).catch(fail);
        }
        return;
      case '/auth/session':
        if (only('GET') && !limited(addressLimiter)) auth.session(req, res, headersOf(req));
        return;
      case '/auth/login':
        if (only('GET') && !limited(loginLimiter, false, true)) auth.login(req, res, url).catch(fail);
        return;
      case '/auth/callback':
      case '/auth/logout': {
        // Calls to the identity service (ExchangeToken, RevokeToken): the
        // trace id goes upstream and answers on every outcome.
        const trace = traceIdOf(req.headers);
        res.setHeader(TRACE_HEADER, trace);
        if (path === '/auth/callback') {
          if (only('GET') && !limited(loginLimiter, false, true)) auth.callback(req, res, url, trace).catch(fail);
        } else if (only('POST') && !limited(addressLimiter)) {
          auth.logout(req, res, headersOf(req), trace).catch(fail);
        }
        return;
      }
      default:
        if (path.startsWith('/documents/')) {
          // A call to billing: its trace id answers on every outcome.
          const trace = traceIdOf(req.headers);
          res.setHeader(TRACE_HEADER, trace);
          if (only('GET') && !limited(addressLimiter, true)) invoiceDocument(req, res, path, trace).catch(fail);
          return;
        }
        if (path.startsWith('/auth/')) {
          sendText(res, 404, 'not found\n');
          return;
        }
        files.serve(req, res, path);
    }
  };

  return {
    handle,
    continueOk(req: Req, res: Res) {
      if (Number(req.headers['content-length'] ?? 0) > cfg.bodyLimitBytes) return false;
      res.writeContinue();
      return true;
    },
    auth,
    limiter,
    bodies,
    readiness,
    drain() {
      draining = true;
    },
    close() {
      clearInterval(sweep);
      for (const u of owned) u.close();
    },
  };
}

export interface Running {
  url: string;
  server: http.Server | http2.Http2SecureServer;
  gateway: Gateway;
  // Stops accepting, lets calls under way finish (up to graceMs), closes.
  stop(graceMs?: number): Promise<void>;
}

// The answer to a request Node cannot parse, with the headers every answer
// carries (Strict-Transport-Security too when HTTPS is served).
export function raw400(https: boolean): string {
  return 'HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 12\r\n'
    + `content-security-policy: ${CSP}\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n`
    + 'x-frame-options: DENY\r\ncross-origin-opener-policy: same-origin\r\ncross-origin-resource-policy: same-origin\r\n'
    + (https ? `strict-transport-security: ${HSTS}\r\n` : '')
    + 'cache-control: no-store\r\nconnection: close\r\n\r\nbad request\n';
}

// Streams at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS).
export const HTTP2_MAX_STREAMS = 100;
// A whole HTTP/1.1 request, and its headers, over HTTP and HTTPS alike.
export const REQUEST_TIMEOUT_MS = 60_000;
export const HEADERS_TIMEOUT_MS = 20_000;

export async function listen(cfg: Config, deps: GatewayDeps = {}): Promise<Running> {
  let gateway!: Gateway;
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const handler = (req: Req, res: Res) => {
    ++inFlight;
    res.on('close', () => {
      if (--inFlight === 0 && idle) idle();
    });
    try {
      if (gateway) {
        gateway.handle(req, res);
      } else {
        securityHeaders(res, !!cfg.https);
        sendText(res, 503, 'starting\n');
      }
    } catch (err) {
      sanitize(err, req.url ?? '');
      if (!res.headersSent) sendText(res, 500, 'internal error\n');
    }
  };
  const h2sessions = new Set<http2.ServerHttp2Session>();
  let server: http.Server | http2.Http2SecureServer;
  if (cfg.https) {
    const s = http2.createSecureServer({
      cert: fs.readFileSync(cfg.https.cert),
      key: fs.readFileSync(cfg.https.key),
      allowHTTP1: true,
      minVersion: 'TLSv1.2',
      // At most this many streams at once on one connection (Node's default
      // is unbounded), and the memory nghttp2 may use per connection
      // (header tables, frames queued to send; MB): past it, new streams are
      // refused. Request bodies are bounded by inflight.ts.
      settings: { maxConcurrentStreams: HTTP2_MAX_STREAMS },
      maxSessionMemory: 10,
    }, handler);
    s.setTimeout(120_000); // idle connections (PINGs keep a connection alive; bodies have their own deadline)
    // HTTP/1.1 over TLS as over plain HTTP (Node's defaults there: 300 s for
    // a request, 60 s for its headers). Not in @types/node for HTTP/2 servers.
    Object.assign(s, { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS });
    s.on('session', (sess) => {
      h2sessions.add(sess);
      sess.on('close', () => h2sessions.delete(sess));
    });
    server = s;
  } else {
    const s = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS }, handler);
    s.keepAliveTimeout = 65_000;
    server = s;
  }
  // Expect: 100-continue: a body over --body_limit by its Content-Length is
  // refused without "100 Continue" (so the client never sends it); any
  // other request is told to go on and handled as usual.
  server.on('checkContinue', (req: Req, res: Res) => {
    if (gateway) gateway.continueOk(req, res);
    handler(req, res);
  });
  // Connections per client address (the TCP peer; a trusted proxy is not
  // counted: its clients are counted by their requests): past the cap a new
  // connection is closed at once, before TLS.
  if (cfg.maxConnectionsPerAddress > 0) {
    const open = new Map<string, number>();
    server.on('connection', (socket: net.Socket) => {
      const peer = peerAddress(socket);
      if (cfg.trustedProxies && inList(cfg.trustedProxies, peer)) return;
      const key = addressKey(peer);
      const n = open.get(key) ?? 0;
      if (n >= cfg.maxConnectionsPerAddress) {
        socket.destroy();
        return;
      }
      open.set(key, n + 1);
      socket.once('close', () => {
        const left = (open.get(key) ?? 1) - 1;
        if (left > 0) open.set(key, left);
        else open.delete(key);
      });
    });
  }
  const badRequest = raw400(!!cfg.https);
  server.on('clientError', (err, socket) => {
    if ((socket as net.Socket).writable) (socket as net.Socket).end(badRequest);
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.listen.port, cfg.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as net.AddressInfo;
  const host = cfg.listen.host.includes(':') ? `[${cfg.listen.host}]` : cfg.listen.host;
  const url = `${cfg.https ? 'https' : 'http'}://${host}:${a.port}`;
  // --listen=HOST:0 without --public_url: the public URL has the bound port.
  if (cfg.publicUrl.port === '0') cfg = { ...cfg, publicUrl: new URL(url) };
  gateway = createGateway(cfg, deps);
  let stopping: Promise<void> | undefined;
  const stop = (graceMs = cfg.shutdownGraceMs) => {
    stopping ??= (async () => {
      // First the drain: /readyz says 503 while everything is still served,
      // so that the load balancer stops sending before the listener closes.
      gateway.drain();
      if (cfg.shutdownDrainMs > 0) await new Promise<void>((resolve) => setTimeout(resolve, cfg.shutdownDrainMs));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      if (server instanceof http.Server) server.closeIdleConnections();
      for (const s of h2sessions) s.close();
      if (inFlight > 0) {
        await new Promise<void>((resolve) => {
          idle = resolve;
          setTimeout(resolve, graceMs).unref();
        });
      }
      if (server instanceof http.Server) server.closeAllConnections();
      for (const s of h2sessions) s.destroy();
      await closed;
      gateway.close();
    })();
    return stopping;
  };
  return { url, server, gateway, stop };
}
