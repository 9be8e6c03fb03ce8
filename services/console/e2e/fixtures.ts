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
export async function signInAs(page: Page, who: Person, hash = '#/'): Promise<void> {
  const url = consoleUrl();
  if (process.env.LABSHARE_E2E_AUTH === 'bearer') {
    await page.context().setExtraHTTPHeaders({ authorization: `Bearer ${tokenFor(who)}` });
    await page.goto(`${url}/${hash}`);
    await expect(page.getByTestId('who')).toBeVisible();
    return;
  }
  await page.goto(`${url}/${hash}`);
  await page.getByTestId('sign-in').first().click();
  await page.getByLabel('Email or username').fill(`${who}@example.org`);
  await page.getByLabel('Password').fill(`demo-${who}`);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  const allow = page.getByRole('button', { name: 'Allow', exact: true });
  const back = page.waitForURL((u) => u.origin === new URL(url).origin, { waitUntil: 'domcontentloaded' });
  await Promise.race([back, allow.waitFor({ state: 'visible' }).then(() => allow.click())]);
  await back;
  await expect(page.getByTestId('who')).toBeVisible();
}

// A full-page screenshot of the view, kept with the test results
// (test-results/screens/<name>.png).
export async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.waitForLoadState('networkidle');
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}
