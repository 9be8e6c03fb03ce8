// Starts the platform with the demo month played through (scripts/dev-platform.sh)
// on free ports, unless LABSHARE_CONSOLE_URL names one already running.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

// BASE .. BASE+8 and BASE+100 .. BASE+106 free (run-local's port plan; +6 and
// +106: labshare-notify and its metrics, +7 the development SMTP sink, +8
// Redis as scripts/dev-platform.sh places it).
async function freeBase(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    // Below the kernel's ephemeral ports (32768 and up by default): a port in
    // that range can be taken by any outgoing connection before the
    // platform binds it.
    const base = 10000 + Math.floor(Math.random() * 22000);
    const ports = [0, 1, 2, 3, 4, 5, 6, 7, 8, 100, 101, 102, 103, 104, 105, 106].map((d) => base + d);
    let ok = true;
    for (const p of ports) if (!(await portFree(p))) { ok = false; break; }
    if (ok) return base;
  }
  throw new Error('no free port range for the platform');
}

export default async function globalSetup(): Promise<(() => Promise<void>) | void> {
  if (process.env.LABSHARE_CONSOLE_URL) {
    if (!process.env.LABSHARE_E2E_DATA) throw new Error('LABSHARE_E2E_DATA: the platform\'s data folder');
    return;
  }
  const base = await freeBase();
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'labshare-e2e-'));
  const log = fs.openSync(path.join(data, '..', `${path.basename(data)}.platform.log`), 'w');
  const child = spawn('bash', [path.join(here, '..', 'scripts', 'dev-platform.sh'), String(base), data], {
    detached: true, stdio: ['ignore', log, log],
  });
  const logFile = path.join(data, '..', `${path.basename(data)}.platform.log`);
  const deadline = Date.now() + 8 * 60_000;
  for (;;) {
    const text = fs.readFileSync(logFile, 'utf8');
    const m = /demo month done; console at (\S+)/.exec(text);
    if (m?.[1]) {
      process.env.LABSHARE_CONSOLE_URL = m[1];
      break;
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`the platform did not come up:\n${text.slice(-4000)}\n${tail(path.join(data, 'demo.out'))}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  process.env.LABSHARE_E2E_DATA = data;
  return async () => {
    try { process.kill(-child.pid!, 'SIGTERM'); } catch { /* gone */ }
    await new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
    keepProblems(data, logFile);
    if (!process.env.LABSHARE_E2E_KEEP) fs.rmSync(data, { recursive: true, force: true });
  };
}

// What a crashed or sanitizer-stopped service wrote, kept before the data
// folder goes: test-results/platform-problems.log, which
// tests/e2e/console_e2e_test.sh prints and fails on. A service that aborts
// mid-run (an undocumented error under LABSHARE_STRICT_REASONS, a sanitizer
// report) otherwise shows only as "the service is unavailable" in some
// later test.
const PROBLEM = /LABSHARE_STRICT_REASONS:|ERROR: (Address|Leak|Thread)Sanitizer|runtime error:|terminate called|Check failed|assertion failed|^\S+: line \d+: +\d+ (Aborted|Segmentation fault|Bus error)/m;

function keepProblems(data: string, platformLog: string): void {
  const found: string[] = [];
  const platform = tail(platformLog, 20_000);
  if (PROBLEM.test(platform)) found.push(`=== ${platformLog} (end)\n${platform.slice(-4000)}`);
  let names: string[] = [];
  try { names = fs.readdirSync(data).filter((n) => /\.(log|out)$/.test(n)).sort(); } catch { /* no folder */ }
  for (const name of names) {
    const text = tail(path.join(data, name), Number.MAX_SAFE_INTEGER);
    const m = PROBLEM.exec(text);
    if (!m) continue;
    // From a little before the first sign of trouble, as much as fits.
    const at = Math.max(0, text.lastIndexOf('\n', Math.max(0, m.index - 3000)));
    found.push(`=== ${name}\n${text.slice(at, at + 20_000)}`);
  }
  if (found.length === 0) return;
  const out = path.join(here, '..', 'test-results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'platform-problems.log'), `${found.join('\n')}\n`);
}

function tail(file: string, chars = 3000): string {
  try { return fs.readFileSync(file, 'utf8').slice(-chars); } catch { return ''; }
}
