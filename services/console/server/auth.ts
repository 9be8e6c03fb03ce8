// Who a call is for, and the sign-in endpoints.
//
// A call carries either
//   - "Authorization: Bearer <LabShare access token>" (scripts, `labshare
//     login`): forwarded as is, no CSRF check (a browser never sends it by
//     itself). An Authorization header that is not "Bearer <token>" is
//     refused UNAUTHENTICATED INVALID_TOKEN, as the services refuse it; the
//     cookie is not consulted then. Or
//   - the session cookie (the console in a browser): the session's access
//     token is forwarded, renewed with RefreshToken shortly before it
//     expires (one refresh per session at a time). Every non-GET/HEAD call
//     must carry the session's CSRF token in "x-csrf-token", and an Origin,
//     when the browser sends one, equal to --public_url's.
//   - neither: forwarded without a token; the service answers
//     UNAUTHENTICATED itself.
//
// Sign-in: /auth/login -> the provider (code flow, PKCE S256, state, nonce)
// -> /auth/callback -> IdentityService.ExchangeToken (the provider's ID token
// for LabShare tokens) -> a session. The sign-in under way lives in the
// browser's cookie, sealed (sessions.ts SignInCookies). /auth/logout ends the
// session, then revokes the refresh token.
import crypto from 'node:crypto';
import { Code, ConnectError, type Client } from '@connectrpc/connect';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { IdentityService, TokenResponse } from '../gen/labshare/identity/v1/identity_pb.js';
import { Role } from '../gen/labshare/type/v1/types_pb.js';
import { ErrorInfoSchema } from '../gen/google/rpc/error_details_pb.js';
import type { Config } from './flags.js';
import { consoleError, describe, fromUpstream, hasErrorInfo, isServiceStatus, logLine, MESSAGES, sendConnectError, unavailable } from './errors.js';
import {
  clearCookie, LOGIN_COOKIE, parseCookies, redirect, sendJson, SESSION_COOKIE, setCookie,
  type Req, type Res,
} from './http-util.js';
import { isLoopbackHost } from './upstream.js';
import { AuthorizationResponseError, Oidc, randomCodeVerifier, randomNonce, randomState } from './oidc.js';
import { sameSecret, SessionsFull, SessionStore, SignInCookies, type PendingLogin, type Session, type Tokens } from './sessions.js';
import { TRACE_HEADER } from './trace.js';

export interface Caller {
  kind: 'bearer' | 'session' | 'anonymous';
  rateKey: string;
  token?: string;
  session?: Session;
}

// A same-app hash route: "#/", "#/bookings", "#/instruments/sem-1?week=2027-03-01".
const RETURN_TO = /^#\/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]{0,500}$/;
export function validReturnTo(v: string): boolean {
  return RETURN_TO.test(v);
}

const BEARER = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)$/i;

interface Claims { sub?: unknown; org?: unknown; roles?: unknown; exp?: unknown; name?: unknown }
function jsonObject(part: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

// A bearer token's claims, for GET /auth/session to show: the console holds
// no key to verify a token (the services verify it on every call), so this
// only sets aside what cannot be a valid token: not a JWT (three parts, a
// JSON object header and payload, a string sub) or, by `now` (ms), past its
// exp or without one.
function displayClaims(token: string, now: number): Claims | undefined {
  const parts = token.split('.');
  if (parts.length !== 3 || !jsonObject(parts[0]!)) return undefined;
  const c = jsonObject(parts[1]!) as Claims | undefined;
  if (!c || typeof c.sub !== 'string') return undefined;
  // (Beyond Date's range, year 275760, no service accepts it either.)
  if (typeof c.exp !== 'number' || !(c.exp * 1000 > now && c.exp * 1000 <= 8.64e15)) return undefined;
  return c;
}

function isNetworkError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, ++depth) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^(E[A-Z_]+|UND_ERR.*|ERR_TLS.*|UNABLE_TO.*|DEPTH_ZERO.*|SELF_SIGNED.*|CERT_.*)$/.test(code)) return true;
    const msg = (e as { message?: unknown }).message;
    if (typeof msg === 'string' && /fetch failed|no answer from|socket hang up|timed? ?out/i.test(msg)) return true;
  }
  return false;
}

// The call options of an identity call made for a request with trace id
// `trace` (trace.ts): x-trace-id upstream, as every other upstream call
// sends it; none when there is no request (a session evicted or swept).
function traced(timeoutMs: number, trace: string | undefined): { timeoutMs: number; headers?: Record<string, string> } {
  return trace ? { timeoutMs, headers: { [TRACE_HEADER]: trace } } : { timeoutMs };
}

// After a refresh that failed for a passing reason, the next try waits this long.
export const REFRESH_BACKOFF_MS = 5000;

export class Auth {
  readonly sessions: SessionStore;
  readonly signins: SignInCookies;
  private readonly origin: string;
  get publicOrigin(): string {
    return this.origin;
  }
  private readonly redirectUri: string;
  readonly oidc: Oidc | undefined;

  constructor(
    private readonly cfg: Config,
    private readonly identity: Client<typeof IdentityService>,
    private readonly now: () => number,
  ) {
    this.origin = cfg.publicUrl.origin;
    this.redirectUri = new URL('/auth/callback', cfg.publicUrl).href;
    this.oidc = cfg.oidc
      ? new Oidc({ issuer: cfg.oidc.issuer, clientId: cfg.oidc.clientId, caFile: cfg.oidc.caFile, redirectUri: this.redirectUri })
      : undefined;
    this.sessions = new SessionStore(now, cfg.sessionIdleTimeoutMs, cfg.maxSessions, (s) => {
      if (!s.revoked) void this.revoke(s);
    }, cfg.maxSessionsPerUser);
    this.signins = new SignInCookies(now);
  }

  // --------------------------------------------------------------- calls

  // Who the call is for; throws the gateway's refusal (session ended, CSRF).
  identify(header: Headers, requestMethod: string, peer: string): Caller {
    // An empty header is no header (the services read it as missing).
    const authz = header.get('authorization') || null;
    if (authz !== null) {
      // Present but not "Bearer <token>": refused as the services refuse it
      // (common/auth.cc), never taken as anonymous or as the cookie's session.
      const m = BEARER.exec(authz);
      if (!m || !m[1]) throw invalidAuthorization();
      const digest = crypto.createHash('sha256').update(m[1]).digest('base64url').slice(0, 22);
      return { kind: 'bearer', token: m[1], rateKey: `b:${digest}` };
    }
    const id = parseCookies(header.get('cookie')).get(SESSION_COOKIE);
    if (!id) return { kind: 'anonymous', rateKey: `ip:${peer}` };
    const { session } = this.sessions.lookup(id);
    if (!session) throw sessionEnded();
    if (requestMethod !== 'GET' && requestMethod !== 'HEAD') this.checkCsrf(header, session);
    return { kind: 'session', session, rateKey: `s:${session.id}` };
  }

  checkCsrf(header: Headers, session: Session): void {
    const origin = header.get('origin');
    if (origin !== null && origin !== this.origin) {
      throw consoleError(Code.PermissionDenied, 'CSRF_TOKEN_INVALID',
        'the request comes from another site (Origin does not match the console)', { origin });
    }
    const token = header.get('x-csrf-token');
    if (!token || !sameSecret(token, session.csrfToken)) {
      throw consoleError(Code.PermissionDenied, 'CSRF_TOKEN_INVALID',
        token ? 'the x-csrf-token header does not match this session' : 'the x-csrf-token header is missing');
    }
  }

  // The session's access token, renewed when it expires within
  // --refresh_margin. Concurrent calls share one RefreshToken call. When the
  // identity service cannot renew it for a passing reason (unreachable,
  // overloaded, deadline), the current token is used while it is valid and
  // the refresh is not retried for REFRESH_BACKOFF_MS. `trace`: the trace
  // id of the call that needs the token (a shared refresh carries the first
  // caller's). `signal`: the caller's call (its deadline, its cancellation):
  // the caller waits for a refresh no longer than that (awaitRefresh).
  async accessToken(s: Session, trace?: string, signal?: AbortSignal): Promise<string> {
    this.sessions.touch(s);
    const t = this.now();
    if (t < s.accessExpiresAt - this.cfg.refreshMarginMs) return s.accessToken;
    // The session's last access token (identity.proto: capped at the
    // session's end, which its refresh token shares to within a second): a
    // refresh could not extend it, and would only rotate the refresh token
    // on every call. Used until it expires; the refresh then ends the session.
    if (t < s.accessExpiresAt && s.refreshExpiresAt - s.accessExpiresAt < 1000) return s.accessToken;
    if (s.refreshRetryAt !== undefined && t < s.refreshRetryAt && !s.refreshing) {
      if (t < s.accessExpiresAt) return s.accessToken;
      throw unavailable();
    }
    await this.awaitRefresh(s, trace, signal);
    if (s.ended) throw sessionEnded(s.endCause);
    if (this.now() >= s.accessExpiresAt) throw unavailable();
    return s.accessToken;
  }

  // Waits for the session's refresh (started now when none is under way),
  // but no longer than the caller's call (`signal`): past its deadline the
  // caller answers DEADLINE_EXCEEDED UPSTREAM_DEADLINE (canceled:
  // REQUEST_CANCELED) while the refresh goes on for the session, bounded
  // by --upstream_timeout alone, since other calls of the session with
  // longer deadlines may wait for it too.
  private async awaitRefresh(s: Session, trace: string | undefined, signal: AbortSignal | undefined): Promise<void> {
    s.refreshing ??= this.refresh(s, trace).finally(() => {
      s.refreshing = undefined;
    });
    if (!signal) {
      await s.refreshing;
      return;
    }
    if (signal.aborted) throw callEnded(signal);
    let onAbort: (() => void) | undefined;
    const ended = new Promise<never>((_, reject) => {
      onAbort = () => reject(callEnded(signal));
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([s.refreshing, ended]);
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  // A service refused `rejected`, the session's access token, as expired
  // or invalid (its clock ahead of ours, a key rotated, the token revoked):
  // renewed once, whatever the margin. Returns the token to try again
  // with (another call may have renewed it already), or undefined when
  // none is to be had now (the refresh failed for a passing reason: the
  // service's answer stands). Throws SESSION_EXPIRED when the refresh ended
  // the session.
  async renewRefused(s: Session, rejected: string, trace?: string, signal?: AbortSignal): Promise<string | undefined> {
    if (s.ended) throw sessionEnded(s.endCause);
    if (s.accessToken !== rejected) return s.accessToken;
    await this.awaitRefresh(s, trace, signal);
    if (s.ended) throw sessionEnded(s.endCause);
    return s.accessToken !== rejected ? s.accessToken : undefined;
  }

  private async refresh(s: Session, trace: string | undefined): Promise<void> {
    let r: TokenResponse;
    try {
      r = await this.identity.refreshToken({ refreshToken: s.refreshToken }, traced(this.cfg.upstreamTimeoutMs, trace));
    } catch (err) {
      if (err instanceof ConnectError && isServiceStatus(err)
        && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) {
        // Refused (expired, reused, revoked, user disabled): the session is over.
        const reason = err.findDetails(ErrorInfoSchema)[0]?.reason ?? Code[err.code];
        s.revoked = true;
        s.endCause = reason;
        this.sessions.end(s);
        logLine({ level: 'info', msg: 'session ended at refresh', reason });
        return;
      }
      // Anything else passes: keep the session, retry a little later.
      logLine({ level: 'warn', msg: 'refresh failed; the session is kept', error: describe(err) });
      s.refreshRetryAt = this.now() + REFRESH_BACKOFF_MS;
      return;
    }
    if (s.ended) {
      // Signed out or evicted while the refresh was under way: the rotated
      // refresh token is never stored, and revoked at once.
      void this.revokeToken(r.refreshToken, trace);
      return;
    }
    s.refreshRetryAt = undefined;
    Object.assign(s, this.tokensOf(r));
  }

  private async revokeToken(refreshToken: string, trace?: string): Promise<void> {
    try {
      await this.identity.revokeToken({ refreshToken }, traced(this.cfg.upstreamTimeoutMs, trace));
    } catch (err) {
      logLine({ level: 'warn', msg: 'RevokeToken failed', error: describe(err) });
    }
  }

  private async revoke(s: Session, trace?: string): Promise<void> {
    s.revoked = true;
    await this.revokeToken(s.refreshToken, trace);
  }

  // Times from the answer's relative lifetimes: the services may run on a
  // demo clock, this machine's clock decides here.
  tokensOf(r: TokenResponse): Tokens {
    const t = this.now();
    const accessMs = Number(r.expiresIn) * 1000;
    let refreshMs = accessMs;
    if (r.refreshExpireTime && r.expireTime) {
      refreshMs = accessMs + (timestampMs(r.refreshExpireTime) - timestampMs(r.expireTime));
    }
    const u = r.user;
    return {
      accessToken: r.accessToken,
      accessExpiresAt: t + accessMs,
      refreshToken: r.refreshToken,
      refreshExpiresAt: t + Math.max(refreshMs, accessMs),
      user: {
        name: u?.name ?? '',
        displayName: u?.displayName || u?.name || '',
        organization: u?.organization ?? '',
        roles: (u?.roles ?? []).map((x) => Role[x] ?? String(x)).filter((x) => x !== 'ROLE_UNSPECIFIED'),
      },
    };
  }

  // ------------------------------------------------------------ endpoints

  async login(req: Req, res: Res, url: URL): Promise<void> {
    // Refusals land on the app's page, which says them in the person's
    // language (/#/?signin_error=CODE), as the callback's do.
    if (!this.oidc) {
      logLine({ level: 'warn', msg: 'sign-in: not configured (no --oidc_issuer)', signin_error: 'SIGN_IN_NOT_CONFIGURED' });
      redirect(res, signinError('SIGN_IN_NOT_CONFIGURED'));
      return;
    }
    // Opened on this machine under another name (localhost for 127.0.0.1):
    // sign in under the public URL, where the provider sends the person back
    // and the cookies live. (Only between loopback names: behind a proxy that
    // rewrites Host this would loop.)
    const host = req.headers.host;
    if (host && host !== this.cfg.publicUrl.host && isLoopbackHost(hostPart(host)) && isLoopbackHost(this.cfg.publicUrl.hostname)) {
      redirect(res, new URL(`/auth/login${url.search}`, this.cfg.publicUrl).href);
      return;
    }
    const returnTo = url.searchParams.get('return_to') ?? '#/';
    if (!validReturnTo(returnTo)) {
      redirect(res, signinError('INVALID_RETURN_TO'));
      return;
    }
    const cookies = parseCookies(req.headers.cookie);
    const p = { state: randomState(), nonce: randomNonce(), codeVerifier: randomCodeVerifier(), returnTo, createdAt: this.now(),
      // The session this browser has now (its cookie is SameSite=Strict, so
      // it comes here, not to the callback the provider redirects to): it
      // ends when the new one starts.
      previousSession: cookies.get(SESSION_COOKIE) };
    let to: URL;
    try {
      to = await this.oidc.authorizationUrl(p);
    } catch (err) {
      logLine({ level: 'error', msg: 'sign-in: provider discovery failed', error: describe(err) });
      redirect(res, signinError('PROVIDER_UNAVAILABLE'));
      return;
    }
    // The sign-ins this browser started in other tabs stay pending too: the
    // cookie holds the last few, and the callback opens its own by state.
    const earlier = this.signins.pending(cookies.get(LOGIN_COOKIE));
    redirect(res, to.href, { 'set-cookie': this.loginCookie([...earlier, this.signins.seal(p)]) });
  }

  // The sign-in cookie holding these sealed sign-ins (cleared when none).
  private loginCookie(sealed: readonly string[]): string {
    return sealed.length === 0 ? clearCookie(LOGIN_COOKIE, 'Lax')
      : setCookie(LOGIN_COOKIE, this.signins.value(sealed), 'Lax', Math.floor(this.signins.ttlMs / 1000));
  }

  // `trace`: the request's trace id (trace.ts), sent to ExchangeToken.
  async callback(req: Req, res: Res, url: URL, trace?: string): Promise<void> {
    // The pending sign-in of this browser sealed for the state the answer
    // carries (sign-in may have been started in several tabs); the others
    // stay.
    const state = url.searchParams.get('state') ?? '';
    let p: PendingLogin | undefined;
    const left: string[] = [];
    for (const sealed of this.signins.pending(parseCookies(req.headers.cookie).get(LOGIN_COOKIE))) {
      const opened = p ? undefined : this.signins.open(sealed, state);
      if (opened) p = opened;
      else left.push(sealed);
    }
    const clear = this.loginCookie(left);
    const fail = (code: string) => redirect(res, signinError(code), { 'set-cookie': clear });
    if (!p || !this.oidc) {
      // None with this state: another sign-in of this browser is pending
      // (the state was changed: the check fails), or none is (too late,
      // replayed, or started in another browser).
      fail(left.length > 0 && this.oidc ? 'SIGN_IN_FAILED' : 'SIGN_IN_EXPIRED');
      return;
    }
    let idToken: string;
    try {
      idToken = await this.oidc.finish(new URL(`/auth/callback${url.search}`, this.cfg.publicUrl), p);
    } catch (err) {
      let code = 'SIGN_IN_FAILED';
      if (err instanceof AuthorizationResponseError) code = err.error === 'access_denied' ? 'ACCESS_DENIED' : 'PROVIDER_ERROR';
      else if (isNetworkError(err)) code = 'PROVIDER_UNAVAILABLE';
      logLine({ level: code === 'ACCESS_DENIED' ? 'info' : 'error', msg: 'sign-in: code exchange failed', signin_error: code, error: describe(err) });
      fail(code);
      return;
    }
    let r: TokenResponse;
    try {
      r = await this.identity.exchangeToken({ idToken }, traced(this.cfg.upstreamTimeoutMs, trace));
    } catch (err) {
      // The reason inventory answered, or the one an RPC would carry
      // (fromUpstream: a status made on the way has its code's reason,
      // SERVICE_UNAVAILABLE for UNAVAILABLE; unreachable: SERVICE_UNAVAILABLE).
      const safe = fromUpstream(err, 'labshare.identity.v1.IdentityService/ExchangeToken', { trace }); // logs what is not the service's
      const code = safe.findDetails(ErrorInfoSchema)[0]?.reason || 'SERVICE_UNAVAILABLE';
      if (err instanceof ConnectError && isServiceStatus(err) && hasErrorInfo(err)) {
        logLine({ level: 'info', msg: 'sign-in refused by the identity service', signin_error: code, message: err.rawMessage });
      }
      fail(code);
      return;
    }
    // Signed in again in the same browser: the session it had ends (its
    // refresh token revoked), rather than living on unreachable.
    for (const id of new Set([p.previousSession, parseCookies(req.headers.cookie).get(SESSION_COOKIE)])) {
      const { session: previous } = this.sessions.lookup(id);
      if (!previous) continue;
      void this.revoke(previous, trace); // marks it revoked at once: ending it revokes nothing more
      this.sessions.end(previous);
      logLine({ level: 'info', msg: 'signed in again; the previous session ended', user: previous.user.name });
    }
    let s: Session;
    try {
      s = this.sessions.create(this.tokensOf(r));
    } catch (err) {
      if (!(err instanceof SessionsFull)) throw err;
      // Every session is another person's and live: refused rather than
      // ending one of theirs. The tokens just issued are given back.
      void this.revokeToken(r.refreshToken, trace);
      logLine({ level: 'warn', msg: 'sign-in refused: --max_sessions live sessions of other people', signin_error: 'SESSIONS_FULL',
        max_sessions: this.cfg.maxSessions });
      fail('SESSIONS_FULL');
      return;
    }
    s.signedInAtProvider = true;
    logLine({ level: 'info', msg: 'signed in', user: s.user.name });
    redirect(res, `/${p.returnTo}`, { 'set-cookie': [clear, setCookie(SESSION_COOKIE, s.id, 'Strict')] });
  }

  // Sign-out: the session ended, its refresh token revoked, and, when the
  // provider offers RP-initiated logout (end_session_endpoint), the address
  // where the app sends the browser to end the provider's session too
  // ({"redirect": URL}; null otherwise). `trace`: the request's trace id,
  // sent to RevokeToken.
  async logout(req: Req, res: Res, header: Headers, trace?: string): Promise<void> {
    const gone = { 'set-cookie': clearCookie(SESSION_COOKIE, 'Strict') };
    let redirectTo: string | null = null;
    const { session } = this.sessions.lookup(parseCookies(header.get('cookie')).get(SESSION_COOKIE));
    if (session) {
      try {
        this.checkCsrf(header, session);
      } catch (err) {
        sendConnectError(res, err as ConnectError);
        return;
      }
      // Ended first, so that no call of the session is served while
      // RevokeToken is under way; then its refresh token revoked.
      session.revoked = true;
      this.sessions.end(session);
      await this.revokeToken(session.refreshToken, trace);
      logLine({ level: 'info', msg: 'signed out', user: session.user.name });
      if (this.oidc && session.signedInAtProvider) {
        try {
          redirectTo = (await this.oidc.endSessionUrl(this.cfg.publicUrl.href))?.href ?? null;
        } catch (err) {
          logLine({ level: 'warn', msg: 'sign-out: provider discovery failed; its session stays', error: describe(err) });
        }
      }
    }
    sendJson(res, 200, { signedIn: false, roles: [], redirect: redirectTo }, gone);
  }

  session(req: Req, res: Res, header: Headers): void {
    const authz = header.get('authorization') || null;
    const m = authz !== null ? BEARER.exec(authz) : null;
    if (authz !== null && !(m && m[1])) {
      // A malformed Authorization header signs nobody in (and the cookie's
      // session is not consulted: the header decides, as on every call).
      sendJson(res, 200, { signedIn: false, roles: [] });
      return;
    }
    if (m && m[1]) {
      // A script's bearer token: its claims, read for display only (the
      // services verify the token on every call); signedIn only says it
      // is a JWT that has not expired.
      const c = displayClaims(m[1], this.now());
      if (!c) {
        sendJson(res, 200, { signedIn: false, roles: [] });
        return;
      }
      const roles = Array.isArray(c.roles) ? c.roles.filter((r): r is string => typeof r === 'string').map((r) => r.toUpperCase()) : [];
      sendJson(res, 200, {
        signedIn: true,
        user: `users/${String(c.sub)}`,
        displayName: typeof c.name === 'string' ? c.name : String(c.sub),
        ...(typeof c.org === 'string' ? { organization: `organizations/${c.org}` } : {}),
        roles,
        expiresAt: new Date((c.exp as number) * 1000).toISOString(),
      });
      return;
    }
    const id = parseCookies(header.get('cookie')).get(SESSION_COOKIE);
    const { session } = this.sessions.lookup(id);
    if (!session) {
      sendJson(res, 200, { signedIn: false, roles: [] }, id ? { 'set-cookie': clearCookie(SESSION_COOKIE, 'Strict') } : {});
      return;
    }
    this.sessions.touch(session);
    const ends = Math.min(session.refreshExpiresAt, session.lastSeen + this.cfg.sessionIdleTimeoutMs);
    sendJson(res, 200, {
      signedIn: true,
      user: session.user.name,
      displayName: session.user.displayName,
      organization: session.user.organization,
      roles: session.user.roles,
      csrfToken: session.csrfToken,
      expiresAt: new Date(ends).toISOString(),
    });
  }
}

function hostPart(hostHeader: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(hostHeader) ?? /^([^:]+)(?::\d+)?$/.exec(hostHeader);
  return m?.[1] ?? hostHeader;
}

// The sentence and reason the services answer (common/auth.cc).
export function invalidAuthorization(): ConnectError {
  return consoleError(Code.Unauthenticated, 'INVALID_TOKEN', "authorization metadata must be 'Bearer <token>'");
}

export function sessionEnded(cause?: string): ConnectError {
  // The cookie goes with it (a Connect error's metadata are response headers).
  return consoleError(Code.Unauthenticated, 'SESSION_EXPIRED', 'your session has ended; sign in again',
    cause ? { cause } : {}, [], { 'set-cookie': clearCookie(SESSION_COOKIE, 'Strict') });
}

// The caller's call ended while it waited (for a refresh): its deadline
// passed (UPSTREAM_DEADLINE, as when a service does not answer in time) or
// it was canceled.
function callEnded(signal: AbortSignal): ConnectError {
  return ConnectError.from(signal.reason).code === Code.DeadlineExceeded
    ? consoleError(Code.DeadlineExceeded, 'UPSTREAM_DEADLINE', MESSAGES.deadline)
    : consoleError(Code.Canceled, 'REQUEST_CANCELED', MESSAGES.canceled);
}

export function signinError(code: string): string {
  return `/#/?signin_error=${encodeURIComponent(code)}`;
}
