// Prints the scrypt hash of a password for an accounts file:
//   node deploy/oidc/hash-password.mjs PASSWORD
// (or the password on stdin when no argument is given, to keep it out of ps).
import fs from 'node:fs';
import process from 'node:process';

import { hashPassword } from './accounts.mjs';

const password = process.argv[2] ?? fs.readFileSync(0, 'utf8').replace(/\r?\n$/, '');
if (!password) {
  process.stderr.write('usage: node deploy/oidc/hash-password.mjs PASSWORD\n');
  process.exit(2);
}
process.stdout.write(`${hashPassword(password)}\n`);
