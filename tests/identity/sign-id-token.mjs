// Test helper: an ID token signed with the development provider's own RS256
// key (from its --keys file), with claims the provider would never issue
// (expired, another audience, another subject), to check that ExchangeToken
// judges the claims and not only the signature.
//
//   node sign-id-token.mjs --keys=FILE --claims='{"sub":...}' [--foreign_key]
//
// --foreign_key signs with a fresh key under the provider key's kid (a
// forgery). Prints the token.
import crypto from 'node:crypto';
import fs from 'node:fs';
import process from 'node:process';

const args = Object.fromEntries(process.argv.slice(2).map((a) => {
  const m = /^--([a-z_]+)(?:=(.*))?$/s.exec(a);
  if (!m) throw new Error(`bad argument ${a}`);
  return [m[1], m[2] ?? true];
}));
const jwk = JSON.parse(fs.readFileSync(args.keys, 'utf8')).keys.find((k) => k.kty === 'RSA');
const key = args.foreign_key
  ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey
  : crypto.createPrivateKey({ key: jwk, format: 'jwk' });
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const input = `${b64({ alg: 'RS256', typ: 'JWT', kid: jwk.kid })}.${b64(JSON.parse(args.claims))}`;
const signature = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
process.stdout.write(`${input}.${signature}\n`);
