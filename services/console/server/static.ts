// The single-page app's files (dist/web): "/" is index.html, then the files
// themselves; anything else is 404. Hash routes never reach the server.
// Files are read once per change (mtime) and kept with their gzip form;
// hashed assets are cached by browsers for a year, index.html revalidated.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { sendText, type Req, type Res } from './http-util.js';

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.json': 'application/json',
  '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.txt': 'text/plain; charset=utf-8',
  '.map': 'application/json',
};
const COMPRESSIBLE = new Set(['.html', '.js', '.css', '.svg', '.json', '.txt', '.map']);

interface Entry { mtimeMs: number; size: number; body: Buffer; gzip?: Buffer }

export class StaticFiles {
  private readonly root: string;
  private readonly cache = new Map<string, Entry>();

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  serve(req: Req, res: Res, pathname: string): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendText(res, 404, 'not found\n');
      return;
    }
    let rel: string;
    try {
      rel = pathname === '/' ? 'index.html' : decodeURIComponent(pathname).replace(/^\/+/, '');
    } catch {
      sendText(res, 404, 'not found\n');
      return;
    }
    const file = path.resolve(this.root, rel);
    if (!file.startsWith(this.root + path.sep) || rel.split('/').some((p) => p.startsWith('.'))) {
      sendText(res, 404, 'not found\n');
      return;
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch {
      sendText(res, 404, 'not found\n');
      return;
    }
    if (!st.isFile()) {
      sendText(res, 404, 'not found\n');
      return;
    }
    const ext = path.extname(file);
    let e = this.cache.get(file);
    if (!e || e.mtimeMs !== st.mtimeMs || e.size !== st.size) {
      const body = fs.readFileSync(file);
      e = { mtimeMs: st.mtimeMs, size: st.size, body };
      if (COMPRESSIBLE.has(ext) && body.length > 512) e.gzip = zlib.gzipSync(body, { level: 9 });
      if (this.cache.size > 2000) this.cache.clear();
      this.cache.set(file, e);
    }
    const gzip = !!e.gzip && acceptsGzip(req.headers['accept-encoding']);
    const body = gzip ? e.gzip! : e.body;
    const immutable = rel.startsWith('assets/');
    res.writeHead(200, {
      'content-type': MIME[ext] ?? 'application/octet-stream',
      'content-length': String(body.length),
      'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      ...(e.gzip ? { vary: 'accept-encoding' } : {}),
      ...(gzip ? { 'content-encoding': 'gzip' } : {}),
    });
    if (req.method === 'HEAD') res.end();
    else res.end(body);
  }
}

// Accept-Encoding allows gzip: listed (or "*") with a q-value above 0.
export function acceptsGzip(header: string | string[] | undefined): boolean {
  let gzip: number | undefined;
  let star: number | undefined;
  for (const part of (Array.isArray(header) ? header.join(',') : header ?? '').split(',')) {
    const [name = '', ...params] = part.split(';').map((x) => x.trim());
    let q = 1;
    for (const p of params) {
      const m = /^q=([0-9.]+)$/i.exec(p);
      if (m) q = Number(m[1]);
    }
    if (!Number.isFinite(q)) q = 0;
    const n = name.toLowerCase();
    if (n === 'gzip' || n === 'x-gzip') gzip = q;
    else if (n === '*') star = q;
  }
  return (gzip ?? star ?? 0) > 0;
}
