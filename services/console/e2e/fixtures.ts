// What every browser test uses: sign a demo person in (through the real
// OpenID provider's pages), call the HTTP API as a person (bearer token, for
// checking what the services compute), and save a screenshot of a view.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, type Page } from '@playwright/test';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');
export const SHOTS = path.resolve(here, '..', 'test-results', 'screens');

export function consoleUrl(): string {
  const u = process.env.LABSHARE_CONSOLE_URL;
  if (!u) throw new Error('LABSHARE_CONSOLE_URL is not set (global setup)');
  return u.replace(/\/$/, '');
}

// The demo consortium's people (deploy/demo_seed.cc); passwords demo-<username>.
export const PEOPLE = {
  'li-wei': { org: 'nanocraft', roles: ['lab_user'] },
  'chen-jing': { org: 'biotek', roles: ['lab_user'] },
  'wang-fang': { org: 'zju', roles: ['facility_staff', 'lab_user'] },
  'zhao-lei': { org: 'sjtu', roles: ['facility_staff'] },
  'sun-mei': { org: 'nanocraft', roles: ['member_billing_admin'] },
  'liu-yang': { org: 'ecowater', roles: ['lab_user'] },
  admin: { org: 'zju', roles: ['consortium_admin'] },
  auditor: { org: 'metrology', roles: ['auditor'] },
} as const;
export type Person = keyof typeof PEOPLE;

// A LabShare token for a person, minted with the platform's signing key (as
// labshare-token does for operators): for API checks from the test itself.
export function tokenFor(who: Person): string {
  const data = process.env.LABSHARE_E2E_DATA;
  if (!data) throw new Error('LABSHARE_E2E_DATA is not set (global setup)');
  const bin = path.join(process.env.LABSHARE_BUILD_DIR ?? path.join(repo, 'build-test'), 'bin', 'labshare-token');
  const p = PEOPLE[who];
  return execFileSync(bin, [`--signing_key_file=${path.join(data, 'secrets', 'token-signing.pem')}`,
    `--user=${who}`, `--org=${p.org}`, `--roles=${p.roles.join(',')}`, '--ttl=30m'],
  { encoding: 'utf8', env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' } }).trim();
}

// One RPC through the gateway's HTTP API (Connect protocol, JSON), as a
// member firm's script calls it. Returns the parsed JSON answer; throws
// with the Connect error body on a non-200 answer.
export async function api<T = Record<string, unknown>>(who: Person, method: string, body: unknown = {}): Promise<T> {
  const r = await fetch(`${consoleUrl()}/${method}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tokenFor(who)}`, 'content-type': 'application/json', 'connect-protocol-version': '1' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method}: HTTP ${r.status} ${text}`);
  return JSON.parse(text) as T;
}

// Signs `who` in the way a person does: the console's Sign in button, the
// provider's login page (and its consent page the first time), back to the
// console. LABSHARE_E2E_AUTH=bearer (for working on screens before sign-in
// exists) sends a minted token with every request instead.
//
// `strict` (shell.spec.ts, whose subject is sign-in): one attempt. Other
// tests, whose subject is the screen behind it, sign in again once when the
// first attempt does not end signed in; what the page and the platform's
// logs said about the failed attempt goes to stderr (and to
// test-results/sign-in-retries.log), so a sign-in that fails now and then
// is seen, not hidden, and shell.spec.ts still fails on it.
export async function signInAs(page: Page, who: Person, hash = '#/', opts: { strict?: boolean } = {}): Promise<void> {
  const url = consoleUrl();
  if (process.env.LABSHARE_E2E_AUTH === 'bearer') {
    await page.context().setExtraHTTPHeaders({ authorization: `Bearer ${tokenFor(who)}` });
    await page.goto(`${url}/${hash}`);
    await expect(page.getByTestId('who')).toBeVisible();
    return;
  }
  const attempts = opts.strict ? 1 : 2;
  for (let attempt = 1; ; attempt++) {
    try {
      await page.goto(`${url}/${hash}`);
      if (attempt > 1) {
        // The first attempt may have ended signed in after all.
        await expect(page.getByTestId('who').or(page.getByTestId('sign-in').first())).toBeVisible();
        if (await page.getByTestId('who').isVisible()) return;
      }
      await page.getByTestId('sign-in').first().click();
      await page.getByLabel('Email or username').fill(`${who}@example.org`);
      await page.getByLabel('Password').fill(`demo-${who}`);
      await page.getByRole('button', { name: 'Sign in', exact: true }).click();
      const allow = page.getByRole('button', { name: 'Allow', exact: true });
      const back = page.waitForURL((u) => u.origin === new URL(url).origin, { waitUntil: 'domcontentloaded', timeout: 30_000 });
      await Promise.race([back, allow.waitFor({ state: 'visible', timeout: 30_000 }).then(() => allow.click(), () => undefined)]);
      await back;
      await expect(page.getByTestId('who')).toBeVisible();
      return;
    } catch (err) {
      // Why not: what the page says (a sign-in refusal's sentence) and what
      // the gateway, the provider and the identity service logged about it.
      const text = (await page.locator('body').innerText().catch(() => '')).slice(0, 600);
      const why = `${who} is not signed in after attempt ${attempt} at ${page.url()}\npage: ${text}\n${signInLogs()}`;
      if (attempt >= attempts) throw new Error(why, { cause: err });
      process.stderr.write(`SIGN-IN RETRIED: ${why}\n`);
      fs.mkdirSync(path.join(SHOTS, '..'), { recursive: true });
      fs.appendFileSync(path.join(SHOTS, '..', 'sign-in-retries.log'), `${new Date().toISOString()} ${why}\n\n`);
    }
  }
}

// The platform's log lines about sign-in (the last few of each log).
function signInLogs(): string {
  const data = process.env.LABSHARE_E2E_DATA;
  if (!data) return '';
  const pick = /sign|callback|exchange|token|refus|error|warn|oidc|interaction/i;
  return ['console.log', 'oidc.log', 'inventory.log'].map((f) => {
    let lines: string[] = [];
    try { lines = fs.readFileSync(path.join(data, f), 'utf8').split('\n').filter((l) => pick.test(l)); } catch { /* none */ }
    return `--- ${f} (last lines about sign-in)\n${lines.slice(-12).map((l) => l.slice(0, 400)).join('\n')}`;
  }).join('\n');
}

// A full-page screenshot of the view, kept with the test results
// (test-results/screens/<name>.png).
export async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.waitForLoadState('networkidle');
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}
