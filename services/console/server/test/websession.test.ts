// The app's view of the session (web/src/session.ts), run under Node with a
// stubbed fetch: a refusal of /auth/session for now (429) keeps who is
// signed in and asks again after Retry-After; only an answer changes it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it, mock } from 'node:test';
import ts from 'typescript';
import { consoleDir } from './harness.js';

interface SessionModule {
  session: { value: { signedIn: boolean; user?: string; roles: string[] } };
  loadSession(): Promise<{ signedIn: boolean }>;
}

// web/src/session.ts and signal.ts, transpiled next to node_modules (preact).
let out = '';
async function loadWebSession(): Promise<SessionModule> {
  out = fs.mkdtempSync(path.join(consoleDir, 'dist', 'websession-'));
  for (const name of ['session', 'signal']) {
    const src = fs.readFileSync(path.join(consoleDir, 'web', 'src', `${name}.ts`), 'utf8');
    const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText
      .replace(/from '\.\/(\w+)'/g, "from './$1.mjs'");
    fs.writeFileSync(path.join(out, `${name}.mjs`), js);
  }
  return (await import(pathToFileURL(path.join(out, 'session.mjs')).href)) as SessionModule;
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
    if (out) fs.rmSync(out, { recursive: true, force: true });
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
});
