// labshare-console: the web console and the HTTP API gateway.
//   node dist/server/main.js --listen=127.0.0.1:8080 --inventory=HOST:PORT \
//     --booking=HOST:PORT --billing=HOST:PORT --usage=HOST:PORT \
//     [--tls_ca=PEM --tls_cert=console.crt --tls_key=console.key] [--web_root=DIR]
// Prints "listening on URL" once it accepts connections.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { registerProxies, type ServiceName } from './proxy.js';
import { upstreamTransport } from './upstream.js';

function parseFlags(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z_]+)=(.*)$/s.exec(a);
    if (!m || !m[1]) throw new Error(`unknown argument "${a}" (flags are --name=value)`);
    flags.set(m[1], m[2] ?? '');
  }
  return flags;
}

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.json': 'application/json',
  '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
};

interface Claims { sub: string; org?: string; roles?: string[]; exp?: number }
function decodeClaims(token: string): Claims | undefined {
  try {
    const c = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Claims;
    return typeof c.sub === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

function main(): void {
  const flags = parseFlags(process.argv.slice(2));
  // Sign-in (not yet wired in this scaffold): --public_url, --oidc_issuer,
  // --oidc_client_id, --oidc_ca_file.
  const need = (k: string) => {
    const v = flags.get(k);
    if (!v) throw new Error(`--${k} is required`);
    return v;
  };
  const tls = { ca: flags.get('tls_ca'), cert: flags.get('tls_cert'), key: flags.get('tls_key') };
  const transports = Object.fromEntries(
    (['inventory', 'booking', 'billing', 'usage'] as ServiceName[]).map((s) => [s, upstreamTransport(need(s), tls)]),
  ) as Record<ServiceName, ReturnType<typeof upstreamTransport>>;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const webRoot = path.resolve(flags.get('web_root') ?? path.join(here, '..', 'web'));

  const api = connectNodeAdapter({
    routes: (router) =>
      registerProxies(router, transports, (ctx) => {
        const auth = ctx.requestHeader.get('authorization');
        return auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
      }),
  });

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname.startsWith('/labshare.')) return api(req, res);
    if (url.pathname === '/auth/session') {
      // A script's bearer token: its claims, read for display only (the
      // services verify the token on every call).
      const auth = req.headers.authorization;
      const claims = auth?.startsWith('Bearer ') ? decodeClaims(auth.slice(7)) : undefined;
      const body = claims
        ? { signedIn: true, user: `users/${claims.sub}`, displayName: claims.sub,
            organization: claims.org ? `organizations/${claims.org}` : undefined, roles: claims.roles ?? [] }
        : { signedIn: false, roles: [] };
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
      return;
    }
    // The single-page app (hash routes): "/" is index.html, then its files.
    const file = path.join(webRoot, url.pathname === '/' ? 'index.html' : path.normalize(url.pathname));
    if (!file.startsWith(webRoot + path.sep) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    res.setHeader('content-type', MIME[path.extname(file)] ?? 'application/octet-stream');
    fs.createReadStream(file).pipe(res);
  });
  const listen = need('listen');
  const m = /^(.*):(\d+)$/.exec(listen);
  if (!m || !m[1] || !m[2]) throw new Error(`bad --listen "${listen}"`);
  server.listen(Number(m[2]), m[1].replace(/^\[|\]$/g, ''), () => {
    const a = server.address();
    const port = typeof a === 'object' && a ? a.port : Number(m[2]);
    console.log(`listening on http://${m[1]}:${port}`);
  });
}

main();
