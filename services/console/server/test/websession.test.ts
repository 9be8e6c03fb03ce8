// The app's view of the session (web/src/session.ts), run under Node with a
// stubbed fetch: a refusal of /auth/session for now (429) keeps who is
// signed in and asks again after Retry-After; only an answer changes it.
import assert from 'node:assert/strict';
import { after, before, describe, it, mock } from 'node:test';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { ErrorInfoSchema } from '../../gen/google/rpc/error_details_pb.js';
import { WebModules } from './web-module.js';

interface SessionModule {
  session: { value: { signedIn: boolean; user?: string; roles: string[] } };
  loadSession(): Promise<{ signedIn: boolean }>;
  signOut(): Promise<{ status: number; body: string } | undefined>;
  returnTo(hash: string): string;
}

// web/src/session.ts and signal.ts, transpiled next to node_modules (preact).
let web: WebModules | undefined;
async function loadWebSession(): Promise<SessionModule> {
  web = new WebModules('websession-');
  for (const name of ['session', 'signal']) {
    web.write(`${name}.ts`, name, (js) => js.replace(/from '\.\/(\w+)'/g, "from './$1.mjs'"));
  }
  return web.load<SessionModule>('session');
}

describe('the app\'s session state (web/src/session.ts)', () => {
  const realFetch = globalThis.fetch;
  let answers: Response[] = [];
  let asked = 0;
  let m: SessionModule;

  before(async () => {
    m = await loadWebSession();
    globalThis.fetch = (async () => {
      ++asked;
      const a = answers.shift();
      if (!a) throw new Error('no answer prepared');
      return a;
    }) as typeof fetch;
  });
  after(() => {
    globalThis.fetch = realFetch;
    mock.timers.reset();
    web?.cleanUp();
  });

  it('9: keeps the current state on 429 and asks again after Retry-After', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const signedIn = { signedIn: true, user: 'users/li-wei', roles: ['LAB_USER'], csrfToken: 'c' };
    answers = [new Response(JSON.stringify(signedIn), { status: 200, headers: { 'content-type': 'application/json' } })];
    await m.loadSession();
    assert.equal(m.session.value.signedIn, true);

    answers = [new Response('{"code":"resource_exhausted"}', { status: 429, headers: { 'retry-after': '3' } })];
    asked = 0;
    const kept = await m.loadSession();
    assert.equal(kept.signedIn, true, 'a 429 is no answer: still signed in');
    assert.equal(m.session.value.user, 'users/li-wei');
    assert.equal(asked, 1);

    // The retry after Retry-After (3 s), not before; its answer decides.
    answers = [new Response(JSON.stringify({ signedIn: false, roles: [] }), { status: 200 })];
    mock.timers.tick(2999);
    await new Promise((r) => setImmediate(r));
    assert.equal(asked, 1);
    mock.timers.tick(1);
    for (let i = 0; i < 5 && m.session.value.signedIn; ++i) await new Promise((r) => setImmediate(r));
    assert.equal(asked, 2);
    assert.equal(m.session.value.signedIn, false);

    // A 500 keeps the state too.
    answers = [new Response(JSON.stringify(signedIn), { status: 200 })];
    await m.loadSession();
    answers = [new Response('internal error', { status: 500 })];
    await m.loadSession();
    assert.equal(m.session.value.signedIn, true);
  });

  it('5: sign-out ends the state only on 200; a refusal (403, 429, 500) or no answer keeps it and is returned', async () => {
    mock.timers.reset();
    const assigned: string[] = [];
    const realLocation = (globalThis as { location?: unknown }).location;
    (globalThis as { location?: unknown }).location = { assign: (to: string) => assigned.push(to), hash: '' };
    try {
      const signedIn = { signedIn: true, user: 'users/li-wei', roles: ['LAB_USER'], csrfToken: 'c' };
      const csrf = JSON.stringify({ code: 'permission_denied', message: 'csrf', details: [] });
      for (const [status, body] of [[403, csrf], [429, '{"code":"resource_exhausted","message":"slow down"}'], [500, 'internal error']] as const) {
        answers = [new Response(JSON.stringify(signedIn), { status: 200 })];
        await m.loadSession();
        // The 403 asks for the session again (a fresh CSRF token).
        answers = [new Response(body, { status }), new Response(JSON.stringify({ ...signedIn, csrfToken: 'fresh' }), { status: 200 })];
        const refused = await m.signOut();
        assert.deepEqual(refused, { status, body }, String(status));
        assert.equal(m.session.value.signedIn, true, `${status}: still signed in`);
        assert.deepEqual(assigned, [], `${status}: the page stays`);
        for (let i = 0; i < 5; ++i) await new Promise((r) => setImmediate(r));
        if (status === 403) assert.equal((m.session.value as { csrfToken?: string }).csrfToken, 'fresh');
      }
      answers = [];
      const none = await m.signOut(); // fetch throws: no answer
      assert.equal(none?.status, 0);
      assert.equal(m.session.value.signedIn, true);
      answers = [new Response(JSON.stringify({ signedIn: false, roles: [], redirect: 'https://idp.example/session/end?client_id=x' }), { status: 200 })];
      assert.equal(await m.signOut(), undefined);
      assert.equal(m.session.value.signedIn, false);
      assert.deepEqual(assigned, ['https://idp.example/session/end?client_id=x']);
    } finally {
      (globalThis as { location?: unknown }).location = realLocation;
    }
  });

  it('6: sign-in sends a return_to the gateway takes: the route, else #/ (no signin_error carried back)', () => {
    assert.equal(m.returnTo('#/bookings?week=2027-03-01'), '#/bookings?week=2027-03-01');
    assert.equal(m.returnTo('#/instruments/sem-1'), '#/instruments/sem-1');
    for (const hash of ['', '#', '#evil', '#/a b', '#/<x>', `#/${'a'.repeat(600)}`, '#/?signin_error=RATE_LIMITED']) {
      assert.equal(m.returnTo(hash), '#/', hash);
    }
  });
});

describe('the app\'s RPC clients (web/src/api.ts)', () => {
  const realFetch = globalThis.fetch;
  const realLocation = (globalThis as { location?: unknown }).location;
  let mods: WebModules | undefined;
  after(() => {
    globalThis.fetch = realFetch;
    (globalThis as { location?: unknown }).location = realLocation;
    mods?.cleanUp();
  });

  it('9: a refused CSRF token (CSRF_TOKEN_INVALID) reads the session again, so the next try carries the current token', async () => {
    (globalThis as { location?: unknown }).location = { origin: 'http://127.0.0.1:1', hash: '' };
    mods = new WebModules('webapi-');
    const local = (js: string) => js.replace(/from '\.\/(\w+)'/g, "from './$1.mjs'")
      .replace(/from '\.\.\/\.\.\/gen\/([\w/]+)'/g, "from '../gen/$1.js'");
    for (const name of ['api', 'session', 'signal']) mods.write(`${name}.ts`, name, local);
    const api = await mods.load<{ csrf: Interceptor }>('api');
    const { session } = await mods.load<{ session: { set(v: unknown): void; value: { csrfToken?: string } } }>('session');
    session.set({ signedIn: true, roles: [], csrfToken: 'old' });
    const asked: string[] = [];
    globalThis.fetch = (async (url: string) => {
      asked.push(String(url));
      return new Response(JSON.stringify({ signedIn: true, roles: [], csrfToken: 'fresh' }), { status: 200 });
    }) as typeof fetch;
    const refused = new ConnectError('the CSRF token is missing or wrong', Code.PermissionDenied, undefined, [
      { desc: ErrorInfoSchema, value: { reason: 'CSRF_TOKEN_INVALID', domain: 'console.labshare' } },
    ]);
    const sent: (string | null)[] = [];
    const call = api.csrf(async (req) => {
      sent.push(req.header.get('x-csrf-token'));
      throw refused;
    });
    const req = { header: new Headers() } as unknown as Parameters<typeof call>[0];
    await assert.rejects(call(req), (e: unknown) => e === refused);
    for (let i = 0; i < 5 && session.value.csrfToken !== 'fresh'; ++i) await new Promise((r) => setImmediate(r));
    assert.deepEqual(asked, ['/auth/session']);
    assert.equal(session.value.csrfToken, 'fresh');
    await assert.rejects(call({ header: new Headers() } as unknown as Parameters<typeof call>[0]));
    assert.deepEqual(sent, ['old', 'fresh'], 'the next try carries the fresh token');
    // Another permission refusal (a service's) reads nothing.
    asked.length = 0;
    const other = api.csrf(async () => {
      throw new ConnectError('no', Code.PermissionDenied, undefined, [
        { desc: ErrorInfoSchema, value: { reason: 'ORGANIZATION_SCOPE', domain: 'booking.labshare' } },
      ]);
    });
    await assert.rejects(other({ header: new Headers() } as unknown as Parameters<typeof call>[0]));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(asked, []);
  });
});
