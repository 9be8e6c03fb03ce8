#!/usr/bin/env node
// Fails when the console's strings drift:
//  (a) every ErrorInfo reason any RPC may answer (the "Errors:" lists of
//      proto/labshare/**.proto, read as tests/common/error_contract_test.cc
//      reads them; see error-contract.mjs), plus the gateway's own reasons
//      and the few below, needs a `reason.<REASON>` sentence in `en` and in
//      `zh-CN`;
//  (b) every registerMessages({...}) call in web/src/**/*.ts(x): a key in one
//      language but not the other, or a different set of {placeholders} in
//      the two, fails; a reason sentence may only use metadata keys the
//      services always attach to that reason (a missing one shows "{key}").
// Usage: node services/console/scripts/check-messages.mjs   (from anywhere;
// needs the console's node_modules for the TypeScript parser: npm ci).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allReasons, readContract } from './error-contract.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const consoleDir = resolve(here, '..');
const root = resolve(consoleDir, '..', '..');
const webSrc = join(consoleDir, 'web', 'src');
const LANGS = ['en', 'zh-CN'];

// Reasons not found by the proto parser that the console still shows.
const EXTRA_REASONS = {
  // The gateway's own refusals (services/console/server).
  CSRF_TOKEN_INVALID: 'gateway: state change without the session CSRF token',
  RATE_LIMITED: 'gateway: per-session rate limit',
  SESSION_EXPIRED: 'gateway: the console session ended (idle, signed out, refresh refused)',
  SERVICE_UNAVAILABLE: 'gateway: a service unreachable, or UNAVAILABLE without an ErrorInfo (also a sign-in error code)',
  UPSTREAM_DEADLINE: 'gateway: a service did not answer within the deadline',
  UPSTREAM_ERROR: 'gateway: a status made on the way to a service (gRPC, a proxy) without an ErrorInfo',
  REQUEST_CANCELED: 'gateway: the call was canceled',
  INTERNAL_ERROR: 'gateway: a defect in the gateway',
  INVALID_JSON: 'gateway: a Connect JSON body that is not JSON, not an object, or not the request message',
  INVALID_REQUEST: 'gateway: a request Connect cannot read (binary, headers, compression)',
  BODY_TOO_LARGE: 'gateway: a request body over --body_limit',
  METHOD_NOT_ALLOWED: 'gateway: an RPC path with another method than POST (405)',
  UNSUPPORTED_CONTENT_TYPE: 'gateway: an RPC path with a content type no protocol offers (415)',
  // INVALID_FIELD (a field the request message does not have) and
  // INVALID_TOKEN (a malformed Authorization header) are the services' reasons.
  // Documented in RecordPayment's list, but a word without "_" is not a
  // reason to the proto parser (common/error_contract_parser.cc).
  OVERPAYMENT: 'billing RecordPayment (services/billing/billing_payments.cc)',
};

// ErrorInfo metadata keys every raise site of a reason attaches (grep
// MakeError/InvalidFields in services/ and common/). A reason sentence may
// use only these as {placeholders}.
const ALWAYS_METADATA = {
  INVALID_FIELD: ['field'],
  ORGANIZATION_EXISTS: ['name'],
  USER_EXISTS: ['name'],
  FACILITY_EXISTS: ['name'],
  INSTRUMENT_EXISTS: ['name'],
  EXPORT_LIMIT: ['limit', 'scope'],
  SEQUENCE_OUT_OF_RANGE: ['head_sequence'],
};

let ts;
try {
  ts = (await import('typescript')).default;
} catch {
  console.error('check-messages: the TypeScript parser is missing; run `npm ci` in services/console first');
  process.exit(2);
}

function sourceFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (/\.tsx?$/.test(name) && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const problems = [];
const warnings = [];

// ---------------------------------------------------------------- reading
// Static value of an expression: a string, an object (Map of key -> value),
// or undefined when it cannot be read without running the code.
function unwrap(node) {
  while (node && (ts.isParenthesizedExpression(node) || ts.isAsExpression(node) ||
                  ts.isSatisfiesExpression?.(node) || ts.isTypeAssertionExpression?.(node))) {
    node = node.expression;
  }
  return node;
}

function constInitializer(sf, name) {
  let found;
  const visit = (n) => {
    if (found) return;
    if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.name.text === name && n.initializer &&
        (ts.getCombinedNodeFlags(n) & ts.NodeFlags.Const)) {
      found = n.initializer;
      return;
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return found;
}

function propName(name) {
  if (ts.isIdentifier(name) || ts.isStringLiteral(name) || ts.isNumericLiteral(name)) return name.text;
  if (ts.isNoSubstitutionTemplateLiteral(name)) return name.text;
  return undefined;
}

function valueOf(sf, node, depth = 0) {
  node = unwrap(node);
  if (!node || depth > 20) return undefined;
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const l = valueOf(sf, node.left, depth + 1);
    const r = valueOf(sf, node.right, depth + 1);
    return typeof l === 'string' && typeof r === 'string' ? l + r : undefined;
  }
  if (ts.isIdentifier(node)) {
    const init = constInitializer(sf, node.text);
    return init ? valueOf(sf, init, depth + 1) : undefined;
  }
  if (ts.isObjectLiteralExpression(node)) {
    const out = new Map();
    for (const p of node.properties) {
      if (ts.isPropertyAssignment(p)) {
        const k = propName(p.name);
        const v = valueOf(sf, p.initializer, depth + 1);
        if (k === undefined || v === undefined) return undefined;
        out.set(k, v);
      } else if (ts.isShorthandPropertyAssignment(p)) {
        const v = valueOf(sf, p.name, depth + 1);
        if (v === undefined) return undefined;
        out.set(p.name.text, v);
      } else if (ts.isSpreadAssignment(p)) {
        const v = valueOf(sf, p.expression, depth + 1);
        if (!(v instanceof Map)) return undefined;
        for (const [k, x] of v) out.set(k, x);
      } else {
        return undefined;
      }
    }
    return out;
  }
  return undefined;
}

// Every registerMessages call: {file, line, dicts: {en: Map, 'zh-CN': Map}}.
function registrations() {
  const out = [];
  for (const file of sourceFiles(webSrc)) {
    const text = readFileSync(file, 'utf8');
    if (!text.includes('registerMessages(')) continue;
    const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true,
                                   file.endsWith('.tsx') ? ts.ScriptKind.TSX : ts.ScriptKind.TS);
    const visit = (n) => {
      if (ts.isCallExpression(n) && ts.isIdentifier(n.expression) && n.expression.text === 'registerMessages') {
        const where = `${relative(root, file)}:${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1}`;
        const arg = valueOf(sf, n.arguments[0]);
        if (!(arg instanceof Map)) {
          problems.push(`${where}: registerMessages(...) must get an object literal the checker can read ` +
                        '({en: {...}, \'zh-CN\': {...}} of string literals)');
        } else {
          const dicts = {};
          for (const lang of LANGS) {
            const d = arg.get(lang);
            if (!(d instanceof Map) || [...d.values()].some((v) => typeof v !== 'string')) {
              problems.push(`${where}: no readable '${lang}' dictionary of string literals`);
              dicts[lang] = new Map();
            } else {
              dicts[lang] = d;
            }
          }
          for (const k of arg.keys()) {
            if (!LANGS.includes(k)) problems.push(`${where}: unknown language '${k}' (the console has ${LANGS.join(', ')})`);
          }
          out.push({ where, dicts });
        }
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return out;
}

const placeholders = (s) => [...new Set([...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]))].sort();

// ---------------------------------------------------------------- (b)
const regs = registrations();
const merged = { en: new Map(), 'zh-CN': new Map() };  // key -> [{where, text}]
for (const { where, dicts } of regs) {
  for (const lang of LANGS) {
    for (const [k, v] of dicts[lang]) {
      if (!merged[lang].has(k)) merged[lang].set(k, []);
      merged[lang].get(k).push({ where, text: v });
    }
  }
  const [a, b] = LANGS;
  for (const k of dicts[a].keys()) if (!dicts[b].has(k)) problems.push(`${where}: '${k}' has ${a} but no ${b}`);
  for (const k of dicts[b].keys()) if (!dicts[a].has(k)) problems.push(`${where}: '${k}' has ${b} but no ${a}`);
  for (const [k, en] of dicts[a]) {
    const zh = dicts[b].get(k);
    if (zh === undefined) continue;
    const pa = placeholders(en).join(',');
    const pb = placeholders(zh).join(',');
    if (pa !== pb) problems.push(`${where}: '${k}' placeholders differ: ${a} {${pa}} vs ${b} {${pb}}`);
    if (!zh.trim() !== !en.trim()) problems.push(`${where}: '${k}' is empty in one language only`);
  }
}
// One key with different texts in several blocks: the module loaded last
// wins, for every screen (dictionaries are global). Listed per pair of places.
const clashes = new Map();  // "where1 & where2" -> keys
for (const lang of LANGS) {
  for (const [k, defs] of merged[lang]) {
    if (new Set(defs.map((d) => d.text)).size < 2) continue;
    const places = [...new Set(defs.map((d) => d.where))].join(' & ');
    if (!clashes.has(places)) clashes.set(places, new Set());
    clashes.get(places).add(k);
  }
}
for (const [places, keys] of clashes) {
  warnings.push(`${keys.size} key(s) registered with different texts in ${places} (the module loaded last wins ` +
                `everywhere): ${[...keys].sort().join(', ')}`);
}

// ---------------------------------------------------------------- (a)
const contract = readContract(root);
for (const p of contract.problems) problems.push(`proto: ${p}`);
const reasons = allReasons(contract);
const required = new Map([...reasons].map(([r, v]) => [r, [...v.where].slice(0, 3).join(', ')]));
for (const [r, why] of Object.entries(EXTRA_REASONS)) if (!required.has(r)) required.set(r, why);
const missing = [];
for (const [r, where] of [...required].sort()) {
  const key = `reason.${r}`;
  const lacks = LANGS.filter((l) => !merged[l].has(key));
  if (lacks.length) missing.push(`  ${r} (no ${lacks.join(', no ')}; answered by ${where})`);
}
if (missing.length) {
  problems.push(`reasons without a sentence (add them to services/console/web/src/reasons.ts):\n${missing.join('\n')}`);
}
for (const lang of LANGS) {
  for (const [k, defs] of merged[lang]) {
    if (!k.startsWith('reason.')) continue;
    const r = k.slice('reason.'.length);
    if (!required.has(r)) {
      if (lang === 'en') warnings.push(`'${k}' names a reason no proto lists (${defs[0].where})`);
      continue;
    }
    const allowed = ALWAYS_METADATA[r] ?? [];
    for (const d of defs) {
      for (const ph of placeholders(d.text)) {
        if (!allowed.includes(ph)) {
          problems.push(`${d.where}: '${k}' (${lang}) uses {${ph}}, which ${r}'s ErrorInfo does not always carry` +
                        (allowed.length ? ` (always: ${allowed.join(', ')})` : ' (it carries no metadata always)'));
        }
      }
    }
  }
}

for (const w of warnings) console.warn(`warning: ${w}`);
if (problems.length) {
  console.error(`check-messages: ${problems.length} problem(s)\n${problems.join('\n')}`);
  process.exit(1);
}
console.log(`check-messages: ${regs.length} registerMessages blocks, ${merged.en.size} keys in both languages; ` +
            `${required.size} reasons (${reasons.size} from ${contract.methods.size} RPCs of the protos) ` +
            'all have an en and a zh-CN sentence');
