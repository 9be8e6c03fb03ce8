// A minimal browser for the provider's pages: a cookie jar, redirects, and
// forms filled in the way a person fills them. Used by approve-device.mjs and
// browser-sign-in.mjs; it speaks to any provider that serves plain HTML forms.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

export class Browser {
  // ca: PEM file of the CA that signed the provider's certificate (optional).
  constructor({ ca } = {}) {
    this.ca = ca ? fs.readFileSync(ca) : undefined;
    this.cookies = new Map(); // "host|name" -> {value, path}
  }

  cookieHeader(url) {
    const out = [];
    for (const [key, c] of this.cookies) {
      const [host, name] = key.split('|');
      if (host === url.host && url.pathname.startsWith(c.path)) out.push(`${name}=${c.value}`);
    }
    return out.join('; ');
  }

  storeCookies(url, setCookie) {
    for (const line of setCookie ?? []) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const a of attrs) {
        const [k, v] = a.split('=');
        if (k.toLowerCase() === 'path' && v) path = v;
        if (k.toLowerCase() === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (k.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${url.host}|${name}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { value, path });
    }
  }

  // One request, no redirect following. Returns {status, headers, body, url}.
  request(method, target, { form, headers = {} } = {}) {
    const url = new URL(target);
    const body = form ? new URLSearchParams(form).toString() : undefined;
    const h = { ...headers, 'user-agent': 'labshare-oidc-browser' };
    const cookie = this.cookieHeader(url);
    if (cookie) h.cookie = cookie;
    if (body !== undefined) {
      h['content-type'] = 'application/x-www-form-urlencoded';
      h['content-length'] = Buffer.byteLength(body);
    }
    const lib = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(url, { method, headers: h, ca: this.ca }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          this.storeCookies(url, res.headers['set-cookie']);
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), url });
        });
        res.on('error', reject);
      });
      req.on('error', reject);
      req.setTimeout(15000, () => req.destroy(new Error(`timeout on ${method} ${url}`)));
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  // Follows redirects within the provider; stops at a redirect whose target
  // starts with `stopAt` (a client's redirect_uri) and returns it unfetched.
  async go(method, target, { form, stopAt } = {}) {
    let res = await this.request(method, target, { form });
    for (let hops = 0; res.status >= 300 && res.status < 400 && res.headers.location; ++hops) {
      if (hops > 20) throw new Error('too many redirects');
      const next = new URL(res.headers.location, res.url).toString();
      if (stopAt && next.startsWith(stopAt)) return { ...res, redirect: next };
      res = await this.request('GET', next);
    }
    return res;
  }
}

function attributes(tag) {
  const out = {};
  for (const m of tag.matchAll(/([a-zA-Z_:.-]+)\s*=\s*("([^"]*)"|'([^']*)'|([^\s>]+))/g)) {
    out[m[1].toLowerCase()] = decodeEntities(m[3] ?? m[4] ?? m[5] ?? '');
  }
  return out;
}

function decodeEntities(s) {
  return s
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');
}

// The page's forms: [{action, method, fields: {name: value}, names: [..]}].
export function forms(html, pageUrl) {
  const out = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = attributes(m[1]);
    const fields = {};
    for (const input of m[2].matchAll(/<input\b([^>]*)>/gi)) {
      const a = attributes(input[1]);
      if (a.name) fields[a.name] = a.value ?? '';
    }
    out.push({
      action: new URL(attrs.action ?? pageUrl.toString(), pageUrl).toString(),
      method: (attrs.method ?? 'get').toUpperCase(),
      fields,
    });
  }
  return out;
}

// Text of role="alert" elements (the pages' error messages), or the title.
export function pageProblem(html) {
  const alert = /role="alert"[^>]*>([\s\S]*?)</.exec(html);
  if (alert) return decodeEntities(alert[1]).trim();
  if (/<title>Sign-in failed/.test(html)) {
    const p = /<p>([\s\S]*?)<\/p>/.exec(html);
    return decodeEntities(p ? p[1] : 'sign-in failed').replace(/<[^>]+>/g, '');
  }
  return '';
}

// Plays the person on the provider's pages starting from `res`: types the
// user code, signs in, confirms, allows. Returns the final response (a page
// without a form, or a redirect to `stopAt`). Throws with the page's message
// on an error page or a refused login.
export async function walk(browser, res, { userCode, login, password, stopAt }) {
  for (let step = 0; step < 12; ++step) {
    if (res.redirect) return res;
    if (res.status >= 400 && !/<form/i.test(res.body)) {
      throw new Error(pageProblem(res.body) || `HTTP ${res.status} at ${res.url}`);
    }
    const problem = pageProblem(res.body);
    if (problem && step > 0) throw new Error(problem);
    const all = forms(res.body, res.url);
    if (all.length === 0) return res;
    const form = all[0];
    const fields = { ...form.fields };
    if ('user_code' in fields && !fields.user_code) {
      if (!userCode) throw new Error('the provider asks for a user code');
      fields.user_code = userCode;
    }
    if ('login' in fields) {
      if (!login) throw new Error('the provider asks to sign in');
      fields.login = login;
      fields.password = password ?? '';
    }
    res = await browser.go(form.method, form.action, { form: fields, stopAt });
  }
  throw new Error('the sign-in did not finish within 12 pages');
}
