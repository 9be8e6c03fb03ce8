// --name=value arguments of the helper scripts.
import process from 'node:process';

export function parseArgs(argv, known, required, usage) {
  const out = {};
  for (const arg of argv) {
    const m = /^--([a-z_]+)=(.*)$/s.exec(arg);
    if (!m || !known.includes(m[1])) {
      process.stderr.write(`unknown argument ${arg}\n${usage}\n`);
      process.exit(2);
    }
    out[m[1]] = m[2];
  }
  for (const name of required) {
    if (!out[name]) {
      process.stderr.write(`--${name} is required\n${usage}\n`);
      process.exit(2);
    }
  }
  return out;
}
