// The error contract read out of the proto comments: a port of
// common/error_contract_parser.cc (the parser tests/common/error_contract_test.cc
// checks), so the console's checks see exactly the reasons the servers may
// answer. Keep the two in step: an "Errors:" list is gRPC codes, each
// followed by its reasons in parentheses; a reason is an UPPER_SNAKE word
// that starts an item and ends it or is followed by ":" or "as OtherRpc";
// a code without parentheses answers its own name as reason; the list ends
// at the first ". " outside parentheses; a file's header comment (before
// `package`) may hold a list too (types.proto's applies everywhere).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const GRPC_CODES = new Set([
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
]);

const isWordChar = (c) => /[A-Za-z0-9_]/.test(c);
const isUpper = (c) => c >= 'A' && c <= 'Z';
const isSpace = (c) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';

// UPPER_SNAKE with at least one underscore: "BOOKING_NOT_FOUND", not "MEMBER".
export function isReasonWord(w) {
  return /^[A-Z][A-Z0-9_]*$/.test(w) && w.includes('_') && !w.endsWith('_');
}

// "CreateProject": an rpc name.
const isCamelWord = (w) => w.length > 0 && isUpper(w[0]) && /[a-z]/.test(w);

function skipSpaces(s, i) {
  while (i < s.length && isSpace(s[i])) ++i;
  return i;
}

function wordAt(s, i) {
  let j = i;
  while (j < s.length && isWordChar(s[j])) ++j;
  return s.slice(i, j);
}

function matchingParen(s, open) {
  let depth = 0;
  for (let i = open; i < s.length; ++i) {
    if (s[i] === '(') ++depth;
    if (s[i] === ')' && --depth === 0) return i;
  }
  return -1;
}

// Splits at ',' and ';' outside nested parentheses.
function items(s) {
  const out = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= s.length; ++i) {
    if (i < s.length && s[i] === '(') ++depth;
    if (i < s.length && s[i] === ')') --depth;
    if (i === s.length || (depth === 0 && (s[i] === ',' || s[i] === ';'))) {
      out.push(s.slice(start, i).trim());
      start = i + 1;
    }
  }
  return out;
}

function reasonWords(s) {
  const out = new Set();
  for (const item of items(s)) {
    const w = wordAt(item, 0);
    if (isReasonWord(w)) out.add(w);
  }
  return out;
}

// One code's parenthesised group: [code, reason] pairs and "as X" refs.
function parseGroup(code, content, out, refs) {
  for (const item of items(content)) {
    if (item.startsWith('as ')) {
      const rpc = wordAt(item, skipSpaces(item, 3));
      if (isCamelWord(rpc)) refs.push({ code, rpc, without: new Set() });
      continue;
    }
    const word = wordAt(item, 0);
    if (!isReasonWord(word)) continue;
    const rest = item.slice(word.length).trimStart();
    if (rest === '' || rest[0] === ':' || rest.startsWith('as ')) out.set(`${code} ${word}`, [code, word]);
  }
}

// The text after "Errors:" -> Map("CODE REASON" -> [code, reason]).
export function parseErrorSpec(spec, refs = []) {
  const out = new Map();
  let i = 0;
  while (i < spec.length) {
    const c = spec[i];
    if (c === '(') {
      const close = matchingParen(spec, i);
      if (close < 0) break;
      i = close + 1;
      continue;
    }
    if (c === '.' && (i + 1 === spec.length || isSpace(spec[i + 1]))) break;
    if (!isWordChar(c)) {
      ++i;
      continue;
    }
    const word = wordAt(spec, i);
    i += word.length;
    if (GRPC_CODES.has(word) && word !== 'OK') {
      const j = skipSpaces(spec, i);
      if (j < spec.length && spec[j] === '(') {
        const close = matchingParen(spec, j);
        if (close < 0) break;
        parseGroup(word, spec.slice(j + 1, close), out, refs);
        i = close + 1;
      } else {
        out.set(`${word} ${word}`, [word, word]);
      }
    } else if (word === 'as') {
      let j = skipSpaces(spec, i);
      const rpc = wordAt(spec, j);
      if (!isCamelWord(rpc)) continue;
      const ref = { code: '', rpc, without: new Set() };
      i = j + rpc.length;
      j = skipSpaces(spec, i);
      if (j < spec.length && spec[j] === '(') {
        const close = matchingParen(spec, j);
        let inner = spec.slice(j + 1, close < 0 ? j + 1 : close);
        if (inner.startsWith('without ')) {
          inner = inner.slice('without '.length);
          ref.without = reasonWords(inner);
          i = close + 1;
        }
      }
      refs.push(ref);
    }
  }
  return out;
}

// Comment lines without "//", joined by single spaces.
function joinComment(lines) {
  const parts = [];
  for (const l of lines) {
    let t = l.trim();
    if (!t.startsWith('//')) continue;
    t = t.slice(2).trim();
    if (t) parts.push(t);
  }
  return parts.join(' ');
}

function errorsText(comment, anyCase) {
  const at = anyCase ? comment.toLowerCase().indexOf('errors:') : comment.indexOf('Errors:');
  return at < 0 ? null : comment.slice(at + 7);
}

// files: [[name, content]]. Returns {methods, services, everywhere, problems}
// with Maps of "CODE REASON" -> [code, reason].
export function parseErrorContract(files) {
  const methods = new Map();
  const services = new Map();
  const everywhere = new Map();
  const problems = [];
  const pending = [];
  for (const [fileName, content] of files) {
    const lines = content.split('\n');
    let pkg = '';
    const header = [];
    let comment = [];
    const servicesHere = [];
    let service = '';
    for (let n = 0; n < lines.length; ++n) {
      let t = lines[n].trim();
      if (t.startsWith('//')) {
        comment.push(lines[n]);
        if (!pkg) header.push(lines[n]);
        continue;
      }
      if (t.startsWith('package ')) {
        pkg = t.slice('package '.length).trim().replace(/;$/, '');
      } else if (t.startsWith('service ')) {
        service = `${pkg}.${wordAt(t, 'service '.length)}`;
        servicesHere.push(service);
      } else if (t.startsWith('rpc ')) {
        const rpc = wordAt(t, 4);
        const spec = errorsText(joinComment(comment), true);
        if (spec === null) problems.push(`${fileName}:${n + 1}: rpc ${rpc} has no "Errors:"`);
        const refs = [];
        methods.set(`/${service}/${rpc}`, parseErrorSpec(spec ?? '', refs));
        pending.push({ service, rpc, refs });
      }
      comment = [];
    }
    const spec = errorsText(joinComment(header), false);
    if (spec !== null) {
      const errors = parseErrorSpec(spec);
      if (pkg === 'labshare.type.v1') {
        for (const [k, v] of errors) everywhere.set(k, v);
      } else {
        for (const s of servicesHere) {
          if (!services.has(s)) services.set(s, new Map());
          for (const [k, v] of errors) services.get(s).set(k, v);
        }
      }
    }
  }
  for (let changed = true; changed;) {
    changed = false;
    for (const p of pending) {
      const mine = methods.get(`/${p.service}/${p.rpc}`);
      for (const ref of p.refs) {
        const other = methods.get(`/${p.service}/${ref.rpc}`);
        if (!other) continue;
        for (const [k, [code, reason]] of other) {
          if (ref.code && code !== ref.code) continue;
          if (ref.without.has(reason)) continue;
          if (!mine.has(k)) {
            mine.set(k, [code, reason]);
            changed = true;
          }
        }
      }
    }
  }
  for (const p of pending) {
    for (const ref of p.refs) {
      if (!methods.has(`/${p.service}/${ref.rpc}`)) problems.push(`${p.rpc}: errors refer to unknown rpc ${ref.rpc}`);
    }
  }
  return { methods, services, everywhere, problems };
}

function protoFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...protoFiles(p));
    else if (name.endsWith('.proto')) out.push(p);
  }
  return out;
}

// The contract of <root>/proto/labshare.
export function readContract(root) {
  const files = protoFiles(join(root, 'proto', 'labshare')).map((p) => [relative(root, p), readFileSync(p, 'utf8')]);
  return parseErrorContract(files);
}

// Every reason any RPC may answer -> the set of codes it comes with and the
// places (methods, "<service> (every method)", "every method") that list it.
export function allReasons(contract) {
  const out = new Map();
  const add = (where, errors) => {
    for (const [code, reason] of errors.values()) {
      if (!out.has(reason)) out.set(reason, { codes: new Set(), where: new Set() });
      out.get(reason).codes.add(code);
      out.get(reason).where.add(where);
    }
  };
  add('every method', contract.everywhere);
  for (const [s, errors] of contract.services) add(`${s} (every method)`, errors);
  for (const [m, errors] of contract.methods) add(m, errors);
  return out;
}
