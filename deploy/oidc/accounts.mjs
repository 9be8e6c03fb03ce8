// The provider's accounts: a JSON file of people with scrypt password hashes.
//
//   {"accounts": [{"sub": "acct-li-wei", "username": "li-wei", "email": "li-wei@example.org",
//                  "email_verified": true, "name": "Li Wei", "password": "scrypt$16384$8$1$SALT$HASH"}]}
//
// sub is the stable subject the provider asserts (LabShare matches it to a
// user's external_subject); people sign in with their email or username.
// Make a hash with `node deploy/oidc/hash-password.mjs PASSWORD`.
import crypto from 'node:crypto';
import fs from 'node:fs';

const N = 16384;
const R = 8;
const P = 1;
const KEY_LENGTH = 32;

export function hashPassword(password, salt = crypto.randomBytes(16)) {
  const hash = crypto.scryptSync(password, salt, KEY_LENGTH, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${hash.toString('base64url')}`;
}

// Constant-time comparison of the password's hash with the stored one.
export function verifyPassword(password, stored) {
  const parts = String(stored).split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [n, r, p] = parts.slice(1, 4).map(Number);
  const salt = Buffer.from(parts[4], 'base64url');
  const expected = Buffer.from(parts[5], 'base64url');
  if (!(n >= 1024 && n <= 1 << 20) || !(r >= 1 && r <= 32) || !(p >= 1 && p <= 16) || expected.length < 16) return false;
  const actual = crypto.scryptSync(password, salt, expected.length, { N: n, r, p, maxmem: 256 * n * r + 1024 * 1024 });
  return crypto.timingSafeEqual(actual, expected);
}

export function loadAccounts(file) {
  const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!Array.isArray(doc.accounts)) throw new Error(`${file}: expected {"accounts": [...]}`);
  const bySub = new Map();
  const byLogin = new Map();
  for (const a of doc.accounts) {
    for (const field of ['sub', 'email', 'password']) {
      if (typeof a[field] !== 'string' || a[field] === '') throw new Error(`${file}: an account lacks "${field}"`);
    }
    if (!a.password.startsWith('scrypt$')) throw new Error(`${file}: account ${a.sub}: password must be a scrypt hash`);
    if (bySub.has(a.sub)) throw new Error(`${file}: duplicate sub ${a.sub}`);
    bySub.set(a.sub, a);
    for (const login of [a.email, a.username]) {
      if (!login) continue;
      const key = login.toLowerCase();
      if (byLogin.has(key)) throw new Error(`${file}: duplicate login ${login}`);
      byLogin.set(key, a);
    }
  }
  return { bySub, byLogin, dummyHash: hashPassword(crypto.randomBytes(8).toString('hex')) };
}
