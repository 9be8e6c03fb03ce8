// The gateway's flags (--name=value), checked once at start: a bad flag is a
// readable error and exit code 2, never a surprise later.
import fs from 'node:fs';
import net from 'node:net';
import { hostOf, isLoopbackHost } from './upstream.js';

export interface Config {
  listen: { host: string; port: number };
  publicUrl: URL;                  // what browsers type; origin for CSRF, redirect URI base
  upstreams: { inventory: string; booking: string; billing: string; usage: string; notify: string };
  tls: { ca?: string; cert?: string; key?: string };       // upstream mTLS (client side)
  https?: { cert: string; key: string };                   // serving HTTPS
  oidc?: { issuer: URL; clientId: string; caFile?: string };
  webRoot: string;
  bodyLimitBytes: number;
  // Bodies of RPCs held at once, all callers together (bytes as read, until
  // the call ends), and per client address the RPCs whose body is still
  // arriving; a body that has not arrived by bodyReadTimeoutMs after its
  // headers is refused (inflight.ts). Connections per TCP peer address (0:
  // any number).
  maxBodyBytesInFlight: number;
  maxPendingBodiesPerAddress: number;
  bodyReadTimeoutMs: number;
  maxConnectionsPerAddress: number;
  upstreamTimeoutMs: number;
  refreshMarginMs: number;
  sessionIdleTimeoutMs: number;
  maxSessions: number;
  maxSessionsPerUser: number;
  rateLimit: { perSecond: number; burst: number };         // perSecond 0: off
  addressRateLimit: { perSecond: number; burst: number };  // per client address, before who it is
  loginRateLimit: { perSecond: number; burst: number };    // /auth/login and /auth/callback per address
  trustedProxies?: net.BlockList | undefined;              // X-Forwarded-For only from these peers
  shutdownDrainMs: number;
  accessLogSample: number;                                 // 0..1 of successful calls logged
  shutdownGraceMs: number;
}

export class FlagError extends Error {}

export const USAGE = `usage: node dist/server/main.js --listen=HOST:PORT --public_url=URL
    --inventory=HOST:PORT --booking=HOST:PORT --billing=HOST:PORT --usage=HOST:PORT --notify=HOST:PORT
    [--tls_ca=PEM --tls_cert=PEM --tls_key=PEM]          upstream mutual TLS (the console's certificate)
    [--https_cert=PEM --https_key=PEM]                   serve HTTPS (plain HTTP only on loopback)
    [--oidc_issuer=URL --oidc_client_id=labshare-console [--oidc_ca_file=PEM]]
    [--web_root=DIR] [--body_limit=1MiB] [--upstream_timeout=15s]
    [--max_body_bytes_in_flight=64MiB] [--max_pending_bodies_per_address=32] [--body_read_timeout=15s]
    [--max_connections_per_address=256]                  0: any number
    [--session_idle_timeout=30m] [--refresh_margin=60s] [--max_sessions=20000] [--max_sessions_per_user=10]
    [--rate_limit_rps=20] [--rate_limit_burst=60]         per session / bearer token / anonymous address
    [--rate_limit_address_rps=500] [--rate_limit_address_burst=1500]   per client address, first
    [--rate_limit_login_rps=2] [--rate_limit_login_burst=40]         /auth/login, /auth/callback per address
    [--trusted_proxies=CIDR[,CIDR]]                      honour X-Forwarded-For from these peers only
    [--access_log_sample=1] [--shutdown_drain=5s] [--shutdown_grace=10s]`;

const KNOWN = new Set([
  'listen', 'public_url', 'inventory', 'booking', 'billing', 'usage', 'notify', 'tls_ca', 'tls_cert', 'tls_key',
  'https_cert', 'https_key', 'oidc_issuer', 'oidc_client_id', 'oidc_ca_file', 'web_root', 'body_limit',
  'upstream_timeout', 'session_idle_timeout', 'refresh_margin', 'max_sessions', 'rate_limit_rps',
  'rate_limit_burst', 'access_log_sample', 'shutdown_grace', 'rate_limit_address_rps', 'rate_limit_address_burst',
  'rate_limit_login_rps', 'rate_limit_login_burst', 'trusted_proxies', 'shutdown_drain',
  'max_body_bytes_in_flight', 'max_pending_bodies_per_address', 'body_read_timeout', 'max_connections_per_address',
  'max_sessions_per_user',
]);

// "10.0.0.0/8,fd00::/8,192.168.1.7" as a BlockList (a bare address is /32 or /128).
export function parseCidrs(name: string, v: string): net.BlockList {
  const list = new net.BlockList();
  for (const part of v.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(part);
    const ip = m?.[1] ?? '';
    const family = net.isIPv4(ip) ? 'ipv4' : net.isIPv6(ip) ? 'ipv6' : undefined;
    const bits = family === 'ipv4' ? 32 : 128;
    const prefix = m?.[2] === undefined ? bits : Number(m[2]);
    if (!family || prefix > bits) throw new FlagError(`--${name}: want CIDR ranges like 10.0.0.0/8,fd00::/8, got "${part}"`);
    list.addSubnet(ip, prefix, family);
  }
  return list;
}

export function parseFlags(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z_]+)=(.*)$/s.exec(a);
    if (!m || !m[1]) throw new FlagError(`unknown argument "${a}" (flags are --name=value)`);
    if (!KNOWN.has(m[1])) throw new FlagError(`unknown flag --${m[1]}`);
    flags.set(m[1], m[2] ?? '');
  }
  return flags;
}

// "250ms", "15s", "30m", "12h", or a plain number of seconds.
export function parseDurationMs(name: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m || !m[1]) throw new FlagError(`--${name}: want a duration like 250ms, 15s, 30m or 12h, got "${v}"`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return Math.round(n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!);
}

// "1048576", "512KiB", "1MiB", "2MB" (MB = MiB here; nobody means 10^6).
export function parseBytes(name: string, v: string): number {
  const m = /^(\d+)\s*(B|KB|KiB|MB|MiB)?$/i.exec(v.trim());
  if (!m || !m[1]) throw new FlagError(`--${name}: want a size like 1048576, 512KiB or 1MiB, got "${v}"`);
  const unit = (m[2] ?? 'B').toLowerCase();
  const mult = unit === 'b' ? 1 : unit.startsWith('k') ? 1024 : 1024 * 1024;
  return Number(m[1]) * mult;
}

function parseNumber(name: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new FlagError(`--${name}: want a number from ${min} to ${max}, got "${v}"`);
  }
  return n;
}

export function splitHostPort(name: string, v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? m?.[2];
  if (!m || !host || Number(m[3]) > 65535) throw new FlagError(`--${name}: want HOST:PORT, got "${v}"`);
  return { host, port: Number(m[3]) };
}

function readable(name: string, file: string): string {
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw new FlagError(`--${name}: cannot read ${file}`);
  }
  return file;
}

export function configFromFlags(flags: Map<string, string>, defaultWebRoot: string): Config {
  const need = (k: string): string => {
    const v = flags.get(k);
    if (!v) throw new FlagError(`--${k} is required`);
    return v;
  };
  const opt = (k: string): string | undefined => flags.get(k) || undefined;

  const listen = splitHostPort('listen', need('listen'));
  const httpsCert = opt('https_cert');
  const httpsKey = opt('https_key');
  if (!!httpsCert !== !!httpsKey) throw new FlagError('--https_cert and --https_key go together');
  if (!httpsCert && !isLoopbackHost(listen.host)) {
    throw new FlagError(
      `PLAINTEXT_REFUSED: plain HTTP is served on loopback only; give --https_cert and --https_key to listen on ${listen.host}`,
    );
  }
  const hostInUrl = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  const publicUrlText = opt('public_url') ?? `${httpsCert ? 'https' : 'http'}://${hostInUrl}:${listen.port}`;
  let publicUrl: URL;
  try {
    publicUrl = new URL(publicUrlText);
  } catch {
    throw new FlagError(`--public_url: not a URL: "${publicUrlText}"`);
  }
  if (publicUrl.protocol !== 'https:' && !(publicUrl.protocol === 'http:' && isLoopbackHost(publicUrl.hostname))) {
    throw new FlagError(`--public_url: must be https:// (http:// only for a loopback address), got "${publicUrlText}"`);
  }
  if (publicUrl.pathname !== '/' || publicUrl.search || publicUrl.hash) {
    throw new FlagError(`--public_url: the console is served at the root of its origin; want e.g. https://console.example.org, got "${publicUrlText}"`);
  }

  const upstreams = {
    inventory: need('inventory'), booking: need('booking'), billing: need('billing'), usage: need('usage'),
    notify: need('notify'),
  };
  for (const [k, v] of Object.entries(upstreams)) splitHostPort(k, v);

  const tls = { ca: opt('tls_ca'), cert: opt('tls_cert'), key: opt('tls_key') };
  if (!!tls.cert !== !!tls.key) throw new FlagError('--tls_cert and --tls_key go together');
  if (tls.cert && !tls.ca) throw new FlagError('--tls_cert needs --tls_ca (the CA of the services)');
  if (!tls.ca) {
    for (const [k, v] of Object.entries(upstreams)) {
      if (!isLoopbackHost(hostOf(v))) {
        throw new FlagError(`PLAINTEXT_REFUSED: --${k}=${v} is not loopback; give --tls_ca (and the console's --tls_cert/--tls_key)`);
      }
    }
  }
  for (const [k, v] of Object.entries(tls)) if (v) readable(`tls_${k}`, v);
  if (httpsCert) readable('https_cert', httpsCert);
  if (httpsKey) readable('https_key', httpsKey);

  let oidc: Config['oidc'];
  const issuer = opt('oidc_issuer');
  if (issuer) {
    let u: URL;
    try {
      u = new URL(issuer);
    } catch {
      throw new FlagError(`--oidc_issuer: not a URL: "${issuer}"`);
    }
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && isLoopbackHost(u.hostname))) {
      throw new FlagError(`--oidc_issuer: must be https:// (http:// only on loopback), got "${issuer}"`);
    }
    const caFile = opt('oidc_ca_file');
    if (caFile) readable('oidc_ca_file', caFile);
    oidc = { issuer: u, clientId: opt('oidc_client_id') ?? 'labshare-console', ...(caFile ? { caFile } : {}) };
  }

  const bodyLimitBytes = parseBytes('body_limit', opt('body_limit') ?? '1MiB');
  if (bodyLimitBytes < 1024 || bodyLimitBytes > 64 * 1024 * 1024) {
    throw new FlagError('--body_limit: from 1KiB to 64MiB');
  }
  const duration = (k: string, d: string, min: number) => {
    const ms = parseDurationMs(k, opt(k) ?? d);
    if (ms < min) throw new FlagError(`--${k}: at least ${min} ms`);
    return ms;
  };
  // At least one whole body must fit, else no RPC with a large body could pass.
  const maxBodyBytesInFlight = parseBytes('max_body_bytes_in_flight', opt('max_body_bytes_in_flight') ?? '64MiB');
  if (maxBodyBytesInFlight < bodyLimitBytes || maxBodyBytesInFlight > 4096 * 1024 * 1024) {
    throw new FlagError(`--max_body_bytes_in_flight: from --body_limit (${bodyLimitBytes} bytes) to 4096MiB`);
  }
  return {
    listen,
    publicUrl,
    upstreams,
    tls,
    ...(httpsCert && httpsKey ? { https: { cert: httpsCert, key: httpsKey } } : {}),
    ...(oidc ? { oidc } : {}),
    webRoot: opt('web_root') ?? defaultWebRoot,
    bodyLimitBytes,
    maxBodyBytesInFlight,
    maxPendingBodiesPerAddress: parseNumber('max_pending_bodies_per_address', opt('max_pending_bodies_per_address') ?? '32', 1, 1e6),
    bodyReadTimeoutMs: duration('body_read_timeout', '15s', 100),
    maxConnectionsPerAddress: parseNumber('max_connections_per_address', opt('max_connections_per_address') ?? '256', 0, 1e6),
    upstreamTimeoutMs: duration('upstream_timeout', '15s', 1),
    refreshMarginMs: duration('refresh_margin', '60s', 0),
    sessionIdleTimeoutMs: duration('session_idle_timeout', '30m', 1000),
    maxSessions: parseNumber('max_sessions', opt('max_sessions') ?? '20000', 1, 10_000_000),
    maxSessionsPerUser: parseNumber('max_sessions_per_user', opt('max_sessions_per_user') ?? '10', 1, 1000),
    rateLimit: {
      perSecond: parseNumber('rate_limit_rps', opt('rate_limit_rps') ?? '20', 0, 1e6),
      burst: parseNumber('rate_limit_burst', opt('rate_limit_burst') ?? '60', 1, 1e7),
    },
    addressRateLimit: {
      perSecond: parseNumber('rate_limit_address_rps', opt('rate_limit_address_rps') ?? '500', 0, 1e6),
      burst: parseNumber('rate_limit_address_burst', opt('rate_limit_address_burst') ?? '1500', 1, 1e7),
    },
    loginRateLimit: {
      perSecond: parseNumber('rate_limit_login_rps', opt('rate_limit_login_rps') ?? '2', 0, 1e6),
      burst: parseNumber('rate_limit_login_burst', opt('rate_limit_login_burst') ?? '40', 1, 1e7),
    },
    ...(opt('trusted_proxies') ? { trustedProxies: parseCidrs('trusted_proxies', opt('trusted_proxies')!) } : {}),
    shutdownDrainMs: duration('shutdown_drain', '5s', 0),
    accessLogSample: parseNumber('access_log_sample', opt('access_log_sample') ?? '1', 0, 1),
    shutdownGraceMs: duration('shutdown_grace', '10s', 0),
  };
}
