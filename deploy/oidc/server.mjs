// LabShare's development OpenID Connect provider: a real, certified
// implementation (npm oidc-provider) with the demo consortium's people as its
// accounts, a plain login page and a consent page. Used by deploy/run-local.sh,
// the demo and the tests; a consortium's own provider replaces it in
// production (README, "Plugging in your consortium's OpenID Connect provider").
//
//   node deploy/oidc/server.mjs --listen=HOST:PORT --accounts=FILE
//        [--tls_cert=PEM --tls_key=PEM] [--keys=FILE] [--issuer=URL]
//        [--console_redirect_uri=URL ...]
//
// Prints "listening on http(s)://HOST:PORT" on stdout once it accepts
// connections (port 0 picks a free port). Plain HTTP is refused on anything
// but loopback. See deploy/oidc/README.md.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import process from 'node:process';

import Provider from 'oidc-provider';

import { loadAccounts, verifyPassword } from './accounts.mjs';

function usage(message) {
  if (message) process.stderr.write(`server.mjs: ${message}\n`);
  process.stderr.write(
    'usage: node deploy/oidc/server.mjs --listen=HOST:PORT --accounts=FILE ' +
      '[--tls_cert=PEM --tls_key=PEM] [--keys=FILE] [--issuer=URL] [--console_redirect_uri=URL ...]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const out = { console_redirect_uri: [] };
  const known = new Set(['listen', 'accounts', 'tls_cert', 'tls_key', 'keys', 'issuer', 'console_redirect_uri']);
  for (const arg of argv) {
    const m = /^--([a-z_]+)=(.*)$/s.exec(arg);
    if (!m || !known.has(m[1])) usage(`unknown argument ${arg}`);
    if (m[1] === 'console_redirect_uri') out.console_redirect_uri.push(m[2]);
    else out[m[1]] = m[2];
  }
  if (!out.listen) usage('--listen=HOST:PORT is required');
  if (!out.accounts) usage('--accounts=FILE is required');
  if (!!out.tls_cert !== !!out.tls_key) usage('--tls_cert and --tls_key go together');
  return out;
}

function splitHostPort(listen) {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m) usage(`--listen must be HOST:PORT, got ${listen}`);
  return { host: m[1] ?? m[2], port: Number(m[3]) };
}

function isLoopback(host) {
  if (host === 'localhost' || host === '::1') return true;
  return net.isIPv4(host) && host.startsWith('127.');
}

// The provider's signing keys (an RSA key for RS256, the algorithm every
// relying party supports, and a P-256 key for ES256) and its cookie keys.
// Kept in --keys so that tokens and sessions survive a restart; created with
// mode 0600 when absent, refused when others can read it.
function loadOrCreateKeys(file) {
  const generate = () => {
    // kid: the RFC 7638 thumbprint of the public key.
    const thumbprint = (pub) => {
      const members = pub.kty === 'RSA' ? { e: pub.e, kty: pub.kty, n: pub.n } : { crv: pub.crv, kty: pub.kty, x: pub.x, y: pub.y };
      return crypto.createHash('sha256').update(JSON.stringify(members)).digest('base64url');
    };
    const make = (type, options, alg) => {
      const { privateKey, publicKey } = crypto.generateKeyPairSync(type, options);
      return { ...privateKey.export({ format: 'jwk' }), kid: thumbprint(publicKey.export({ format: 'jwk' })), use: 'sig', alg };
    };
    return {
      keys: [make('rsa', { modulusLength: 2048 }, 'RS256'), make('ec', { namedCurve: 'P-256' }, 'ES256')],
      cookie_keys: [crypto.randomBytes(32).toString('base64url')],
    };
  };
  if (!file) return generate();
  if (!fs.existsSync(file)) {
    const keys = generate();
    fs.writeFileSync(file, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    return keys;
  }
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`key file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 ${file}`);
  }
  const keys = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(keys.keys) || !Array.isArray(keys.cookie_keys)) {
    throw new Error(`key file ${file} holds no {"keys": [...], "cookie_keys": [...]}`);
  }
  return keys;
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

// Every page says what this provider is: its accounts and their passwords
// are published with LabShare, so nobody may take it for a real sign-in.
const DEVELOPMENT_NOTICE = 'development provider — demo accounts';

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)} - LabShare ${DEVELOPMENT_NOTICE}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<p role="note"><strong>LabShare ${DEVELOPMENT_NOTICE}.</strong> For demos and tests only: the accounts and their passwords are published with LabShare, so anybody can sign in as anybody here.</p>
<main>
<h1>${escapeHtml(title)}</h1>
${body}
</main>
</body>
</html>
`;
}

const CLIENT_NAMES = { 'labshare-cli': 'the labshare command line', 'labshare-console': 'the LabShare console' };

function clientLabel(client) {
  return client.clientName || CLIENT_NAMES[client.clientId] || client.clientId;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Where the pages' forms may lead: the provider itself and, since a browser
// applies form-action to the redirects that follow a form (Chromium does),
// the origins of the registered redirect URIs the consent form ends at.
let formAction = "'self'";

function send(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'x-frame-options': 'DENY',
    'content-security-policy': `default-src 'none'; form-action ${formAction}; frame-ancestors 'none'`,
  });
  res.end(html);
}

function loginPage(uid, clientName, login, error) {
  return page(
    'Sign in',
    `<p>Sign in to continue to ${escapeHtml(clientName)}.</p>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="on">
<p><label for="login">Email or username</label><br>
<input id="login" name="login" type="text" required autofocus value="${escapeHtml(login ?? '')}"></p>
<p><label for="password">Password</label><br>
<input id="password" name="password" type="password" required></p>
<p><button type="submit">Sign in</button></p>
</form>`,
  );
}

function consentPage(uid, clientName, account, scopes) {
  const list = scopes.map((s) => `<li>${escapeHtml(s)}</li>`).join('');
  return page(
    'Allow access',
    `<p>${escapeHtml(clientName)} asks to sign you in as <strong>${escapeHtml(account.email)}</strong> and to read:</p>
<ul>${list}</ul>
<form method="post" action="/interaction/${escapeHtml(uid)}/consent">
<input type="hidden" name="decision" value="allow">
<p><button type="submit">Allow</button></p>
</form>
<form method="post" action="/interaction/${escapeHtml(uid)}/consent">
<input type="hidden" name="decision" value="deny">
<p><button type="submit">Deny</button></p>
</form>`,
  );
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { host, port } = splitHostPort(args.listen);
  const tls = !!args.tls_cert;
  if (!tls && !isLoopback(host)) {
    usage(`plain HTTP is only served on loopback; give --tls_cert and --tls_key to listen on ${host}`);
  }
  const accounts = loadAccounts(args.accounts);
  const keys = loadOrCreateKeys(args.keys);

  const server = tls
    ? https.createServer({ cert: fs.readFileSync(args.tls_cert), key: fs.readFileSync(args.tls_key) })
    : http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address().port;
  const hostInUrl = net.isIPv6(host) ? `[${host}]` : host;
  const base = `${tls ? 'https' : 'http'}://${hostInUrl}:${bound}`;
  const issuer = args.issuer || base;
  const consoleRedirects = args.console_redirect_uri.length
    ? args.console_redirect_uri
    : ['http://localhost:8080/auth/callback'];
  formAction = ["'self'", ...new Set(consoleRedirects.map((u) => new URL(u).origin))].join(' ');

  const provider = new Provider(issuer, {
    clients: [
      {
        // The command line: a public client on the device authorization grant.
        client_id: 'labshare-cli',
        client_name: 'labshare command line',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      {
        // The web console: authorization code with PKCE (S256) only.
        client_id: 'labshare-console',
        client_name: 'LabShare console',
        application_type: 'web',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: consoleRedirects,
        // RP-initiated logout: back to the console's root.
        post_logout_redirect_uris: [...new Set(consoleRedirects.map((u) => new URL('/', u).href))],
      },
    ],
    pkce: { required: () => true, methods: ['S256'] },
    scopes: ['openid', 'email', 'profile', 'offline_access'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    // The ID token carries the scopes' claims (email) even when an access
    // token is issued too: LabShare exchanges the ID token alone.
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      const account = accounts.bySub.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified !== false,
            name: account.name,
            preferred_username: account.username,
          };
        },
      };
    },
    jwks: { keys: keys.keys },
    cookies: { keys: keys.cookie_keys },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // The library's own pages, in this provider's page (its notice).
        logoutSource: async (ctx, form) => {
          ctx.body = page(
            'Sign out',
            `<p>Do you want to sign out from ${escapeHtml(ctx.host)}?</p>
${form}
<p><button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button></p>`,
          );
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = page('Signed out', '<p>You are signed out here.</p>');
        },
      },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: async (ctx, form, out, err) => {
          const msg = err ? '<p role="alert">That code is not valid or has expired; try again.</p>' : '';
          ctx.body = page(
            'Connect a device',
            `<p>Enter the code your terminal shows.</p>${msg}
${form.replace('placeholder="Enter code"', 'placeholder="Enter code" aria-label="Code"')}
<p><button type="submit" form="op.deviceInputForm">Continue</button></p>`,
          );
        },
        userCodeConfirmSource: async (ctx, form, client, deviceInfo, userCode) => {
          ctx.body = page(
            'Confirm the code',
            `<p>${escapeHtml(clientLabel(client))} asks to sign in. Check that your terminal shows this code:</p>
<p><code>${escapeHtml(userCode)}</code></p>
${form}
<p><button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button></p>`,
          );
        },
        successSource: async (ctx) => {
          ctx.body = page('Signed in', '<p>You are signed in. Return to your terminal.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      DeviceCode: 600,
      Grant: 14 * 24 * 3600,
      IdToken: 600,
      Interaction: 3600,
      RefreshToken: 14 * 24 * 3600,
      Session: 14 * 24 * 3600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = page('Sign-in failed', `<p>${escapeHtml(out.error)}: ${escapeHtml(out.error_description ?? '')}</p>`);
    },
  });

  const providerCallback = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      send(res, 400, page('Sign-in failed', '<p>This sign-in page belongs to another request; start again.</p>'));
      return;
    }
    const client = await provider.Client.find(details.params.client_id);
    const clientName = client ? clientLabel(client) : details.params.client_id;
    const prompt = details.prompt.name;
    if (req.method === 'GET' && !action) {
      if (prompt === 'login') {
        send(res, 200, loginPage(uid, clientName, details.params.login_hint));
      } else {
        const account = accounts.bySub.get(details.session?.accountId);
        const d = details.prompt.details;
        const scopes = [...(d.missingOIDCScope ?? []), ...(d.missingOIDCClaims ?? [])];
        send(res, 200, consentPage(uid, clientName, account ?? { email: '?' }, scopes));
      }
      return;
    }
    if (req.method !== 'POST') {
      send(res, 405, page('Sign-in failed', '<p>Use the form.</p>'));
      return;
    }
    const form = await readForm(req);
    if (action === 'login' && prompt === 'login') {
      const login = (form.get('login') ?? '').trim();
      const account = accounts.byLogin.get(login.toLowerCase());
      // Always hash, so that an unknown login takes as long as a wrong password.
      const ok = verifyPassword(form.get('password') ?? '', account?.password ?? accounts.dummyHash) && !!account;
      if (!ok) {
        send(res, 401, loginPage(uid, clientName, login, 'Wrong email, username or password.'));
        return;
      }
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: account.sub } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    if (action === 'consent' && prompt === 'consent') {
      if (form.get('decision') !== 'allow') {
        await provider.interactionFinished(
          req,
          res,
          { error: 'access_denied', error_description: 'the person declined' },
          { mergeWithLastSubmission: false },
        );
        return;
      }
      const { grantId, session, params } = details;
      const grant = grantId
        ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = details.prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      if (d.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      await provider.interactionFinished(
        req,
        res,
        { consent: { grantId: await grant.save() } },
        { mergeWithLastSubmission: true },
      );
      return;
    }
    send(res, 400, page('Sign-in failed', '<p>This step does not belong here; start again.</p>'));
  }

  server.on('request', (req, res) => {
    const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent))?\/?(?:\?.*)?$/.exec(req.url);
    if (!m) {
      providerCallback(req, res);
      return;
    }
    interaction(req, res, m[1], m[2]).catch((err) => {
      const status = err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
      if (status === 500) process.stderr.write(`interaction error: ${err.stack ?? err}\n`);
      if (!res.headersSent) {
        send(res, status, page('Sign-in failed', `<p>${escapeHtml(err.error_description ?? err.message)}; start again.</p>`));
      } else {
        res.end();
      }
    });
  });

  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`listening on ${base}\n`);
}

main().catch((err) => {
  process.stderr.write(`server.mjs: ${err.message ?? err}\n`);
  process.exit(1);
});
