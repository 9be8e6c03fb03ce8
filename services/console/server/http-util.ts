// Small HTTP helpers shared by the gateway's own endpoints: cookies, the
// security headers every answer carries, plain answers.
import type http from 'node:http';
import net from 'node:net';
import type http2 from 'node:http2';

export type Req = http.IncomingMessage | http2.Http2ServerRequest;
export type Res = http.ServerResponse | http2.Http2ServerResponse;

export const SESSION_COOKIE = '__Host-labshare_session';
export const LOGIN_COOKIE = '__Host-labshare_signin';

export const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

export const HSTS = 'max-age=31536000; includeSubDomains';

export function securityHeaders(res: Res, https: boolean): void {
  res.setHeader('content-security-policy', CSP);
  res.setHeader('x-content-type-options', 'nosniff');
  res.setHeader('referrer-policy', 'no-referrer');
  res.setHeader('x-frame-options', 'DENY');
  res.setHeader('cross-origin-opener-policy', 'same-origin');
  res.setHeader('cross-origin-resource-policy', 'same-origin');
  if (https) res.setHeader('strict-transport-security', HSTS);
}

export function parseCookies(header: string | undefined | null): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

// __Host- cookies: Secure, Path=/, no Domain. Browsers keep Secure cookies
// on https:// and on loopback http:// (a secure context), which is the only
// place this gateway serves plain HTTP.
export function setCookie(name: string, value: string, sameSite: 'Strict' | 'Lax', maxAgeSeconds?: number): string {
  const age = maxAgeSeconds === undefined ? '' : `; Max-Age=${maxAgeSeconds}`;
  return `${name}=${value}; Path=/; Secure; HttpOnly; SameSite=${sameSite}${age}`;
}

export function clearCookie(name: string, sameSite: 'Strict' | 'Lax'): string {
  return `${name}=; Path=/; Secure; HttpOnly; SameSite=${sameSite}; Max-Age=0`;
}

export function sendText(res: Res, status: number, text: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export function sendJson(res: Res, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

export function redirect(res: Res, location: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(303, { location, 'cache-control': 'no-store', ...headers });
  res.end();
}

function plainIp(a: string): string {
  const m = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(a);
  return m?.[1] ?? a;
}

// The TCP peer of a socket as clientAddress reads it (IPv4-mapped IPv6 as IPv4).
export function peerAddress(socket: { remoteAddress?: string | undefined }): string {
  return plainIp(socket.remoteAddress ?? 'unknown');
}

export function inList(list: net.BlockList, ip: string): boolean {
  const family = net.isIPv4(ip) ? 'ipv4' : net.isIPv6(ip) ? 'ipv6' : undefined;
  return !!family && list.check(ip, family);
}

// The client's address: the TCP peer, or, when the peer is one of
// --trusted_proxies, the rightmost X-Forwarded-For hop that is not a trusted
// proxy (the leftmost hops are whatever the client wrote).
export function clientAddress(req: Req, trusted?: net.BlockList): string {
  const peer = peerAddress(req.socket ?? {});
  if (!trusted || !inList(trusted, peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((h) => plainIp(h.trim()));
  let addr = peer;
  for (let i = hops.length - 1; i >= 0; --i) {
    const hop = hops[i]!;
    if (!net.isIP(hop)) break;
    addr = hop;
    if (!inList(trusted, hop)) break;
  }
  return addr;
}

// The key a client address is counted under (rate limits, pending
// sign-ins): an IPv4 address itself; an IPv6 address by its /64, the
// smallest block a site gets, so that one host cannot take a fresh bucket
// per address of its prefix. Addresses that carry an IPv4 address in their
// last 32 bits (NAT64 64:ff9b::/96, a dotted tail) stay whole: a /64 there
// is many IPv4 clients.
export function addressKey(addr: string): string {
  const a = addr.replace(/%.*$/, '');
  if (!net.isIPv6(a) || /\./.test(a)) return addr;
  const [head = '', tail] = a.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const hex = groups.map((g) => Number.parseInt(g, 16).toString(16));
  if (hex[0] === '64' && hex[1] === 'ff9b' && hex.slice(2, 6).every((g) => g === '0')) return hex.join(':');
  return `${hex.slice(0, 4).join(':')}::/64`;
}

// The request headers as a Fetch Headers object.
export function headersOf(req: Req): Headers {
  const h = new Headers();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.startsWith(':') || v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) h.append(k, x);
    else h.set(k, v);
  }
  return h;
}
