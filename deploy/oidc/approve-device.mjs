// Plays the person at the browser for a device sign-in (RFC 8628): opens the
// provider's device page, types the user code, confirms it, signs in with the
// given email (or username) and password and allows access, all through the
// provider's real pages. For tests and the demo.
//
//   node deploy/oidc/approve-device.mjs --issuer=URL --user_code=CODE \
//        --login=EMAIL --password=PW [--ca=FILE]
//
// Exit 0 once the provider shows its "signed in" page; 1 with the page's
// message on stderr otherwise (wrong password, unknown or expired code).
import process from 'node:process';

import { Browser, walk } from './browser.mjs';
import { parseArgs } from './cli-args.mjs';

const USAGE =
  'usage: node deploy/oidc/approve-device.mjs --issuer=URL --user_code=CODE --login=EMAIL --password=PW [--ca=FILE]';
const args = parseArgs(process.argv.slice(2), ['issuer', 'user_code', 'login', 'password', 'ca'],
  ['issuer', 'user_code', 'login', 'password'], USAGE);

try {
  const browser = new Browser({ ca: args.ca });
  const issuer = args.issuer.replace(/\/$/, '');
  const discovery = JSON.parse((await browser.request('GET', `${issuer}/.well-known/openid-configuration`)).body);
  if (discovery.issuer !== issuer) throw new Error(`the discovery document names issuer ${discovery.issuer}`);
  // oidc-provider serves the device verification page at /device.
  const start = await browser.go('GET', `${issuer}/device`);
  const done = await walk(browser, start, { userCode: args.user_code, login: args.login, password: args.password });
  if (!/signed in/i.test(done.body)) throw new Error(`unexpected final page (HTTP ${done.status})`);
  process.stdout.write(`approved ${args.user_code} as ${args.login}\n`);
} catch (err) {
  process.stderr.write(`approve-device: ${err.message ?? err}\n`);
  process.exit(1);
}
