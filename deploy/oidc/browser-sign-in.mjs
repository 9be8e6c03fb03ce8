// Signs a person in the way a browser does for the web console: the
// authorization code flow with PKCE (S256) through the provider's real login
// and consent pages, then the code exchange at the token endpoint. Prints the
// token response (JSON with id_token) on stdout. For tests and the demo; the
// console does the same in its own code.
//
//   node deploy/oidc/browser-sign-in.mjs --issuer=URL --redirect_uri=URL \
//        --login=EMAIL --password=PW [--client_id=labshare-console] [--ca=FILE] [--pkce=S256|none]
//
// --pkce=none leaves out the code challenge (the provider must refuse it).
// Exit 1 with the provider's message on stderr when sign-in fails.
import crypto from 'node:crypto';
import process from 'node:process';

import { Browser, walk } from './browser.mjs';
import { parseArgs } from './cli-args.mjs';

const USAGE =
  'usage: node deploy/oidc/browser-sign-in.mjs --issuer=URL --redirect_uri=URL --login=EMAIL --password=PW ' +
  '[--client_id=labshare-console] [--ca=FILE] [--pkce=S256|none]';
const args = parseArgs(process.argv.slice(2),
  ['issuer', 'redirect_uri', 'login', 'password', 'client_id', 'ca', 'pkce'],
  ['issuer', 'redirect_uri', 'login', 'password'], USAGE);
const clientId = args.client_id ?? 'labshare-console';

try {
  const browser = new Browser({ ca: args.ca });
  const issuer = args.issuer.replace(/\/$/, '');
  const discovery = JSON.parse((await browser.request('GET', `${issuer}/.well-known/openid-configuration`)).body);
  const verifier = crypto.randomBytes(32).toString('base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const nonce = crypto.randomBytes(16).toString('base64url');
  const auth = new URL(discovery.authorization_endpoint);
  auth.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    scope: 'openid email profile',
    redirect_uri: args.redirect_uri,
    state,
    nonce,
    ...(args.pkce === 'none'
      ? {}
      : { code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256' }),
  }).toString();
  const start = await browser.go('GET', auth.toString(), { stopAt: args.redirect_uri });
  const done = await walk(browser, start, { login: args.login, password: args.password, stopAt: args.redirect_uri });
  if (!done.redirect) throw new Error(`the provider did not redirect back (HTTP ${done.status})`);
  const back = new URL(done.redirect).searchParams;
  if (back.get('error')) throw new Error(`${back.get('error')}: ${back.get('error_description') ?? ''}`);
  if (back.get('state') !== state) throw new Error('the state came back changed');
  const token = await browser.request('POST', discovery.token_endpoint, {
    form: {
      grant_type: 'authorization_code',
      code: back.get('code'),
      redirect_uri: args.redirect_uri,
      client_id: clientId,
      code_verifier: verifier,
    },
  });
  const body = JSON.parse(token.body);
  if (token.status !== 200) throw new Error(`token endpoint: ${body.error}: ${body.error_description ?? ''}`);
  process.stdout.write(`${JSON.stringify(body)}\n`);
} catch (err) {
  process.stderr.write(`browser-sign-in: ${err.message ?? err}\n`);
  process.exit(1);
}
