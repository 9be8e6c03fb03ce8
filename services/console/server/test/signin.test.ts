// Sign-in end to end with the REAL development OpenID provider
// (deploy/oidc/server.mjs over TLS with a throwaway CA; its login and consent
// pages played by deploy/oidc/browser.mjs) and a stub IdentityService:
// login -> provider -> callback -> ExchangeToken -> session cookie ->
// /auth/session -> RPC with cookie + CSRF -> refresh -> logout.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Code, ConnectError } from '@connectrpc/connect';
import { setLogSink } from '../errors.js';
import {
  browserModule, closedPort, cookieValue, errorInfo, makePki, providerInstalled, request, reservePort, rpc,
  startGateway, startProvider, Stub, testConfig, waitFor, type BrowserLike, type BrowserModule, type Provider, type TestGateway,
} from './harness.js';

const GET_BOOKING = 'labshare.booking.v1.BookingService/GetBooking';
const logs: Record<string, unknown>[] = [];
setLogSink((line) => logs.push(JSON.parse(line) as Record<string, unknown>));

describe('sign-in with the development OpenID provider', { skip: !providerInstalled() && 'deploy/oidc: run npm ci there first' }, () => {
  let stub: Stub;
  let pki: string;
  let provider: Provider;
  let t: TestGateway;
  let B: BrowserModule;
  let callbackUrl: string;

  before(async () => {
    B = await browserModule();
    stub = await new Stub().start();
    pki = makePki();
    const reserved = await reservePort();
    callbackUrl = `http://127.0.0.1:${reserved.port}/auth/callback`;
    provider = await startProvider(pki, [callbackUrl]);
    t = await startGateway((port) => testConfig({
      upstream: stub.address, port,
      oidc: { issuer: new URL(provider.issuer), clientId: 'labshare-console', caFile: path.join(pki, 'ca.crt') },
    }), {}, reserved);
  });
  after(async () => {
    await t?.stop();
    await provider?.stop();
    await stub?.stop();
  });

  // The person at the browser: /auth/login, the provider's pages, back to
  // /auth/callback. Returns the browser (its cookie jar) and the answers.
  async function signIn(login: string, password: string, returnTo?: string) {
    const b = new B.Browser({ ca: path.join(pki, 'ca.crt') });
    const q = returnTo === undefined ? '' : `?return_to=${encodeURIComponent(returnTo)}`;
    const start = await b.request('GET', `${t.url}/auth/login${q}`);
    assert.equal(start.status, 303);
    const atProvider = await b.go('GET', String(start.headers.location), { stopAt: callbackUrl });
    // The development provider says what it is on its pages.
    assert.ok(atProvider.body.includes('<strong>LabShare development provider — demo accounts.</strong>'), atProvider.body);
    const done = await B.walk(b, atProvider, { login, password, stopAt: callbackUrl });
    assert.ok(done.redirect, 'the provider redirects back to the console');
    const back = await b.request('GET', done.redirect!);
    return { b, start, back, redirect: done.redirect! };
  }
  const sessionCookie = (b: BrowserLike) => b.cookies.get(`${new URL(t.url).host}|__Host-labshare_session`)?.value;

  it('signs in (code + PKCE S256 + state + nonce), calls with cookie + CSRF, refreshes, signs out', async () => {
    stub.accessTtlSeconds = 30; // expires within --refresh_margin (60 s): the first call refreshes
    const exchangesBefore = stub.exchanges;
    const { b, start, back } = await signIn('li-wei@example.org', 'demo-li-wei', '#/bookings?week=2027-03-01');

    // /auth/login: to the provider's authorization endpoint, bound to this browser.
    const auth = new URL(String(start.headers.location));
    assert.equal(`${auth.origin}${auth.pathname}`, `${provider.issuer}/auth`);
    const p = auth.searchParams;
    assert.equal(p.get('client_id'), 'labshare-console');
    assert.equal(p.get('response_type'), 'code');
    assert.equal(p.get('redirect_uri'), callbackUrl);
    assert.equal(p.get('scope'), 'openid email profile');
    assert.equal(p.get('code_challenge_method'), 'S256');
    assert.match(p.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('state') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('nonce') ?? '', /^[A-Za-z0-9_-]{43}$/);
    const loginCookie = start.headers['set-cookie'] ?? [];
    assert.equal(loginCookie.length, 1);
    // The pending sign-in itself, sealed (AES-256-GCM): nothing of it is kept in the gateway.
    assert.match(loginCookie[0]!, /^__Host-labshare_signin=[A-Za-z0-9_-]{150,400}; Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$/);
    const sealed = /=([^;]*)/.exec(loginCookie[0]!)![1]!;
    for (const secret of [p.get('state')!, p.get('nonce')!, 'bookings']) {
      assert.ok(!Buffer.from(sealed, 'base64url').toString('latin1').includes(secret), 'sealed, not readable');
    }
    assert.match(String(start.headers['content-security-policy']), /^default-src 'self'; script-src 'self';/);

    // /auth/callback: a session, the cookie, back to the page asked for.
    assert.equal(back.status, 303);
    assert.equal(back.headers.location, '/#/bookings?week=2027-03-01');
    const set = back.headers['set-cookie'] ?? [];
    assert.equal(set[0], '__Host-labshare_signin=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0');
    assert.match(set[1]!, /^__Host-labshare_session=[A-Za-z0-9_-]{43}; Path=\/; Secure; HttpOnly; SameSite=Strict$/);
    assert.equal(stub.exchanges, exchangesBefore + 1);

    // ExchangeToken got the provider's ID token, without a bearer.
    const ex = stub.callsOf('ExchangeToken').at(-1)!;
    assert.equal(ex.authorization, null);
    const idToken = (ex.request as { idToken: string }).idToken;
    const claims = JSON.parse(Buffer.from(idToken.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    assert.equal(claims.iss, provider.issuer);
    assert.equal(claims.aud, 'labshare-console');
    assert.equal(claims.sub, 'acct-li-wei');
    assert.equal(claims.nonce, p.get('nonce'));

    const cookie = `__Host-labshare_session=${sessionCookie(b)}`;
    const info = await request('GET', `${t.url}/auth/session`, { headers: { cookie } });
    const s = info.json<{ signedIn: boolean; user: string; csrfToken: string; roles: string[]; displayName: string; organization: string; expiresAt: string }>();
    assert.equal(s.signedIn, true);
    assert.equal(s.user, 'users/li-wei');
    assert.equal(s.displayName, 'Li Wei');
    assert.equal(s.organization, 'organizations/nanocraft');
    assert.deepEqual(s.roles, ['LAB_USER']);
    assert.match(s.csrfToken, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(s.expiresAt, new Date(t.clock.t + 30 * 60_000).toISOString());

    // A call with the cookie and the CSRF token: refreshed first (30 s left < 60 s margin).
    const csrf = { cookie, 'x-csrf-token': s.csrfToken, origin: t.origin };
    const refreshesBefore = stub.refreshes;
    const a = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, csrf);
    assert.equal(a.status, 200);
    assert.equal(stub.refreshes, refreshesBefore + 1);
    const refresh = stub.callsOf('RefreshToken').at(-1)!;
    const exchangedRefresh = (refresh.request as { refreshToken: string }).refreshToken;
    assert.match(exchangedRefresh, /^rt-\d+$/);
    const used = stub.callsOf('GetBooking').at(-1)!.authorization!;
    assert.match(used, /^Bearer access-\d+$/);
    assert.notEqual(used, `Bearer access-${exchangedRefresh.slice(3)}`, 'the refreshed token, not the first one');
    // The refreshed roles show (the stub adds FACILITY_STAFF at refresh).
    assert.deepEqual((await request('GET', `${t.url}/auth/session`, { headers: { cookie } })).json().roles, ['LAB_USER', 'FACILITY_STAFF']);
    // Next call: no refresh needed (900 s left).
    assert.equal((await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, csrf)).status, 200);
    assert.equal(stub.refreshes, refreshesBefore + 1);
    // Without the CSRF token the same cookie does nothing.
    const noCsrf = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, { cookie, origin: t.origin });
    assert.equal(noCsrf.status, 403);
    assert.equal(errorInfo(noCsrf)!.reason, 'CSRF_TOKEN_INVALID');

    // Sign out: RevokeToken with the current refresh token, cookie cleared.
    const currentRefresh = `rt-${used.slice('Bearer access-'.length)}`;
    const out = await request('POST', `${t.url}/auth/logout`, { headers: csrf });
    assert.equal(out.status, 200);
    assert.deepEqual(out.headers['set-cookie'], ['__Host-labshare_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0']);
    assert.equal(stub.revoked.at(-1), currentRefresh);
    const afterOut = await rpc(t.url, GET_BOOKING, { name: 'bookings/b1' }, csrf);
    assert.equal(afterOut.status, 401);
    assert.equal(errorInfo(afterOut)!.reason, 'SESSION_EXPIRED');
    assert.deepEqual((await request('GET', `${t.url}/auth/session`, { headers: { cookie } })).json(), { signedIn: false, roles: [] });
  });

  it('signing in again in the same browser ends the previous session and revokes its refresh token', async () => {
    const { b } = await signIn('li-wei', 'demo-li-wei', '#/');
    const first = sessionCookie(b)!;
    const firstSession = t.gw.auth.sessions.lookup(first).session!;
    const firstRefresh = firstSession.refreshToken;
    // Again: /auth/login sees the session cookie (SameSite=Strict: sent on the
    // console's own page, not on the provider's redirect to the callback).
    const start = await b.request('GET', `${t.url}/auth/login`);
    const atProvider = await b.go('GET', String(start.headers.location), { stopAt: callbackUrl });
    const done = await B.walk(b, atProvider, { login: 'li-wei', password: 'demo-li-wei', stopAt: callbackUrl });
    b.cookies.delete(`${new URL(t.url).host}|__Host-labshare_session`);
    const back = await b.request('GET', done.redirect!);
    assert.equal(back.status, 303);
    const second = sessionCookie(b)!;
    assert.notEqual(second, first);
    assert.ok(t.gw.auth.sessions.lookup(second).session);
    assert.equal(t.gw.auth.sessions.lookup(first).session, undefined, 'the first session ended');
    assert.equal(firstSession.ended, true);
    await waitFor(() => stub.revoked.includes(firstRefresh));
  });

  it("signs out at the provider too: /auth/logout answers its end_session URL; after it, Sign in asks for the password again", async () => {
    const { b } = await signIn('li-wei', 'demo-li-wei', '#/');
    const cookie = `__Host-labshare_session=${sessionCookie(b)}`;
    const info = (await request('GET', `${t.url}/auth/session`, { headers: { cookie } })).json<{ csrfToken: string }>();
    const out = await request('POST', `${t.url}/auth/logout`, { headers: { cookie, 'x-csrf-token': info.csrfToken, origin: t.origin } });
    assert.equal(out.status, 200);
    const { redirect: to } = out.json<{ redirect: string }>();
    const u = new URL(to);
    assert.equal(`${u.origin}${u.pathname}`, `${provider.issuer}/session/end`);
    // No ID token in the URL: it stays in the browser's history, and an ID
    // token is a credential (identity.proto: exchanged once, but until then
    // it signs its holder in). The provider signs out with client_id alone.
    assert.equal(u.searchParams.get('id_token_hint'), null);
    assert.doesNotMatch(to, /eyJ/);
    assert.equal(u.searchParams.get('post_logout_redirect_uri'), `${t.url}/`);
    assert.equal(u.searchParams.get('client_id'), 'labshare-console');
    // At the provider: its confirmation, then back to the console.
    const confirm = await b.go('GET', to, { stopAt: `${t.url}/` });
    assert.ok(confirm.body.includes('development provider — demo accounts'), confirm.body);
    const form = B.forms(confirm.body, confirm.url)[0]!;
    const done = await b.go('POST', form.action, { form: { ...form.fields, logout: 'yes' }, stopAt: `${t.url}/` });
    assert.equal(done.redirect, `${t.url}/`);
    // Signing in again: the provider asks who it is (its session has ended).
    const start = await b.request('GET', `${t.url}/auth/login`);
    const page = await b.go('GET', String(start.headers.location), { stopAt: callbackUrl });
    assert.equal(page.redirect, undefined, 'not silently signed back in');
    assert.ok(B.forms(page.body, page.url).some((f) => 'password' in f.fields), 'the login form');
  });

  it('refuses a replayed callback and a callback from another browser (SIGN_IN_EXPIRED)', async () => {
    const { b, redirect } = await signIn('li-wei', 'demo-li-wei', '#/');
    const again = await b.request('GET', redirect);
    assert.equal(again.status, 303);
    assert.equal(again.headers.location, '/#/?signin_error=SIGN_IN_EXPIRED');
    const other = await request('GET', redirect);
    assert.equal(other.headers.location, '/#/?signin_error=SIGN_IN_EXPIRED');
  });

  it('refuses a callback whose state was changed (SIGN_IN_FAILED)', async () => {
    const b = new B.Browser({ ca: path.join(pki, 'ca.crt') });
    const start = await b.request('GET', `${t.url}/auth/login`);
    const atProvider = await b.go('GET', String(start.headers.location), { stopAt: callbackUrl });
    const done = await B.walk(b, atProvider, { login: 'li-wei', password: 'demo-li-wei', stopAt: callbackUrl });
    const u = new URL(done.redirect!);
    u.searchParams.set('state', 'forged');
    const back = await b.request('GET', u.href);
    assert.equal(back.status, 303);
    assert.equal(back.headers.location, '/#/?signin_error=SIGN_IN_FAILED');
    assert.equal(sessionCookie(b), undefined);
  });

  it('signs in from two tabs of one browser: each callback takes its own pending sign-in by state (SIGN_IN_FAILED for a state of none)', async () => {
    // Each /auth/login overwrote the one sign-in cookie: tab A's callback
    // (with tab B's cookie) used up B's pending sign-in and failed the state
    // check (SIGN_IN_FAILED), then B's found none (SIGN_IN_EXPIRED).
    const b = new B.Browser({ ca: path.join(pki, 'ca.crt') });
    const cookieRe = /^__Host-labshare_signin=([A-Za-z0-9_.-]+); Path=\/; Secure; HttpOnly; SameSite=Lax; Max-Age=600$/;
    const startA = await b.request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent('#/bookings')}`);
    const startB = await b.request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent('#/invoices')}`);
    // At the provider, both tabs.
    const doneA = await B.walk(b, await b.go('GET', String(startA.headers.location), { stopAt: callbackUrl }),
      { login: 'li-wei', password: 'demo-li-wei', stopAt: callbackUrl });
    const doneB = await B.walk(b, await b.go('GET', String(startB.headers.location), { stopAt: callbackUrl }),
      { login: 'li-wei', password: 'demo-li-wei', stopAt: callbackUrl });
    assert.ok(doneA.redirect && doneB.redirect);
    // A callback whose state is neither tab's: the check fails; both stay pending.
    const forged = new URL(doneA.redirect!);
    forged.searchParams.set('state', 'forged');
    const bad = await b.request('GET', forged.href);
    assert.equal(bad.headers.location, '/#/?signin_error=SIGN_IN_FAILED');
    // Tab A comes back first: its own sign-in; then tab B: its own too.
    const exchanges = stub.exchanges;
    const backA = await b.request('GET', doneA.redirect!);
    assert.equal(backA.status, 303);
    assert.equal(backA.headers.location, '/#/bookings');
    const backB = await b.request('GET', doneB.redirect!);
    assert.equal(backB.status, 303);
    assert.equal(backB.headers.location, '/#/invoices');
    assert.equal(stub.exchanges, exchanges + 2);
    assert.ok(t.gw.auth.sessions.lookup(sessionCookie(b)).session, 'signed in');
    // The cookie: both pending sign-ins, newest last, kept at the forged
    // callback, then the one left, then cleared; the session's with each.
    const idA = cookieRe.exec(startA.headers['set-cookie']?.[0] ?? '')?.[1] ?? '';
    assert.match(idA, /^[A-Za-z0-9_-]+$/);
    const both = cookieRe.exec(startB.headers['set-cookie']?.[0] ?? '')?.[1] ?? '';
    assert.match(both, new RegExp(`^${idA}\\.[A-Za-z0-9_-]+$`), 'the cookie holds both pending sign-ins, newest last');
    const idB = both.split('.')[1]!;
    assert.equal(bad.headers['set-cookie']?.[0], `__Host-labshare_signin=${idA}.${idB}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600`);
    assert.equal(backA.headers['set-cookie']?.[0], `__Host-labshare_signin=${idB}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=600`);
    assert.match(backA.headers['set-cookie']?.[1] ?? '', /^__Host-labshare_session=/);
    assert.equal(backB.headers['set-cookie']?.[0], '__Host-labshare_signin=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0');
    assert.match(backB.headers['set-cookie']?.[1] ?? '', /^__Host-labshare_session=/);
    // Replayed: none pending any more.
    assert.equal((await b.request('GET', doneA.redirect!)).headers.location, '/#/?signin_error=SIGN_IN_EXPIRED');

    // The cookie holds the last five sign-ins of a browser.
    const c = new B.Browser({ ca: path.join(pki, 'ca.crt') });
    let last = '';
    for (let i = 0; i < 7; ++i) last = (await c.request('GET', `${t.url}/auth/login`)).headers['set-cookie']?.[0] ?? '';
    const ids = (cookieRe.exec(last)?.[1] ?? '').split('.');
    assert.equal(ids.length, 5);
    assert.ok(ids.every((id) => /^[A-Za-z0-9_-]{150,400}$/.test(id)));
  });

  it("maps the identity service's refusal to an error code the app shows (USER_NOT_REGISTERED)", async () => {
    const { b, back } = await signIn('liu-yang', 'demo-liu-yang', '#/bookings');
    assert.equal(back.status, 303);
    assert.equal(back.headers.location, '/#/?signin_error=USER_NOT_REGISTERED');
    assert.equal(sessionCookie(b), undefined);
    assert.deepEqual(back.headers['set-cookie'], ['__Host-labshare_signin=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0']);
  });

  it('maps a status of the identity service without an ErrorInfo as RPCs map it (SERVICE_UNAVAILABLE for UNAVAILABLE, not UNAVAILABLE)', async () => {
    // README: "SERVICE_UNAVAILABLE (inventory unreachable)"; an UNAVAILABLE
    // made on the way (a proxy, gRPC itself) was signin_error=UNAVAILABLE,
    // a code the app has no sentence for.
    try {
      for (const [code, expected] of [
        [Code.Unavailable, 'SERVICE_UNAVAILABLE'], [Code.DeadlineExceeded, 'UPSTREAM_DEADLINE'], [Code.Internal, 'INTERNAL_ERROR'],
      ] as const) {
        stub.exchangeFailure = new ConnectError('upstream connect error or disconnect/reset before headers', code);
        const { b, back } = await signIn('li-wei', 'demo-li-wei', '#/');
        assert.equal(back.status, 303);
        assert.equal(back.headers.location, `/#/?signin_error=${expected}`, Code[code]);
        assert.equal(sessionCookie(b), undefined);
      }
    } finally {
      stub.exchangeFailure = undefined;
    }
  });

  it('maps a person declining at the provider to ACCESS_DENIED', async () => {
    const b = new B.Browser({ ca: path.join(pki, 'ca.crt') });
    const start = await b.request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent('#/')}`);
    const loginPage = await b.go('GET', String(start.headers.location), { stopAt: callbackUrl });
    const lf = B.forms(loginPage.body, loginPage.url)[0]!;
    const consent = await b.go('POST', lf.action, { form: { ...lf.fields, login: 'li-wei', password: 'demo-li-wei' }, stopAt: callbackUrl });
    // A browser applies form-action to the redirects after the consent form
    // (Chromium does): the provider must allow the console's origin there.
    assert.equal(consent.headers['content-security-policy'], `default-src 'none'; form-action 'self' ${t.origin}; frame-ancestors 'none'`);
    const deny = B.forms(consent.body, consent.url).find((f) => f.fields.decision === 'deny')!;
    const done = await b.go('POST', deny.action, { form: deny.fields, stopAt: callbackUrl });
    assert.ok(done.redirect);
    assert.equal(new URL(done.redirect!).searchParams.get('error'), 'access_denied');
    const back = await b.request('GET', done.redirect!);
    assert.equal(back.headers.location, '/#/?signin_error=ACCESS_DENIED');
  });

  it('accepts only hash routes of the app as return_to; another lands on the app with signin_error=INVALID_RETURN_TO', async () => {
    for (const bad of ['//evil.example', 'https://evil.example/#/', '/#/', 'javascript:alert(1)', '#/a b', '#/<script>', '#evil', `#/${'a'.repeat(600)}`]) {
      const a = await request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent(bad)}`);
      assert.equal(a.status, 303, bad);
      assert.equal(a.headers.location, '/#/?signin_error=INVALID_RETURN_TO', bad);
      assert.equal(a.headers['set-cookie'], undefined);
    }
    const other = await request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent('#/bookings')}`, { headers: { host: `localhost:${new URL(t.url).port}` } });
    assert.equal(other.status, 303);
    assert.equal(other.headers.location, `${t.url}/auth/login?return_to=${encodeURIComponent('#/bookings')}`);
    for (const good of ['#/', '#/bookings', '#/instruments/sem-1?week=2027-03-01&mode=ON_SITE']) {
      const a = await request('GET', `${t.url}/auth/login?return_to=${encodeURIComponent(good)}`);
      assert.equal(a.status, 303, good);
    }
  });

  it('sends the person back with PROVIDER_UNAVAILABLE when the provider cannot be reached', async () => {
    const down = await closedPort();
    const t2 = await startGateway((port) => testConfig({
      upstream: stub.address, port,
      oidc: { issuer: new URL(`https://${down}`), clientId: 'labshare-console', caFile: path.join(pki, 'ca.crt') },
    }));
    try {
      const a = await request('GET', `${t2.url}/auth/login`);
      assert.equal(a.status, 303);
      assert.equal(a.headers.location, '/#/?signin_error=PROVIDER_UNAVAILABLE');
      assert.ok(logs.some((l) => l.msg === 'sign-in: provider discovery failed'));
    } finally {
      await t2.stop();
    }
  });
});
void cookieValue;
