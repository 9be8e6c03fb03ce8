// The console's money digits (web/src/format.ts), run under Node: the same
// ISO 4217 exponents as the services (common/currency.cc), not the
// browser's Intl data, which gives IDR, HUF, IRR, ... no decimals and IQD
// none instead of three; parseMoney in forms reads the same digits.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { consoleDir, repoRoot } from './harness.js';
import { WebModules } from './web-module.js';

interface Money { currencyCode: string; amountMinor: bigint }
interface FormatModule {
  ZERO_DIGIT_CURRENCIES: readonly string[];
  THREE_DIGIT_CURRENCIES: readonly string[];
  currencyDigits(code: string): number;
  money(m: Money | undefined): string;
  moneyText(m: Money | undefined): string;
  parseMoney(text: string, currencyCode: string): Money | undefined;
  webLink(uri: string): string | undefined;
}

// web/src/format.ts transpiled next to node_modules, with the built gen/
// types and i18n's language as a stub (English).
let web: WebModules | undefined;
async function loadFormat(): Promise<FormatModule> {
  web = new WebModules('webformat-');
  const types = pathToFileURL(path.join(consoleDir, 'dist', 'gen', 'labshare', 'type', 'v1', 'types_pb.js')).href;
  web.stub('i18n', "export const lang = { value: 'en' };\n");
  web.write('format.ts', 'format', (js) => js
    .replace(/from '\.\/i18n'/g, "from './i18n.mjs'")
    .replace(/from '\.\.\/\.\.\/gen\/labshare\/type\/v1\/types_pb'/g, `from '${types}'`));
  return web.load<FormatModule>('format');
}

// The two lists of common/currency.cc.
function serviceList(name: string): string[] {
  const cc = fs.readFileSync(path.join(repoRoot, 'common', 'currency.cc'), 'utf8');
  const m = new RegExp(`${name}\\[\\]\\s*=\\s*\\{([^}]*)\\}`).exec(cc);
  assert.ok(m, `${name} in common/currency.cc`);
  return [...m[1]!.matchAll(/"([A-Z]{3})"/g)].map((x) => x[1]!).sort();
}

describe('money digits (web/src/format.ts)', () => {
  let f: FormatModule;
  before(async () => { f = await loadFormat(); });
  after(() => web?.cleanUp());

  it('uses the lists of common/currency.cc', () => {
    assert.deepEqual([...f.ZERO_DIGIT_CURRENCIES].sort(), serviceList('kZero'));
    assert.deepEqual([...f.THREE_DIGIT_CURRENCIES].sort(), serviceList('kThree'));
  });

  it('gives the services\' digits where the browser\'s differ', () => {
    for (const [code, digits] of [['CNY', 2], ['JPY', 0], ['KRW', 0], ['KWD', 3], ['IQD', 3], ['IDR', 2], ['HUF', 2],
      ['IRR', 2], ['LAK', 2], ['MGA', 2], ['YER', 2], ['ALL', 2], ['ISK', 0], ['UYI', 0], ['ZZZ', 2], ['', 2]] as const) {
      assert.equal(f.currencyDigits(code), digits, code);
    }
  });

  it('shows amounts with those digits', () => {
    assert.equal(f.moneyText({ currencyCode: 'IDR', amountMinor: 150000n }), '1500.00');
    assert.equal(f.moneyText({ currencyCode: 'IQD', amountMinor: 1500n }), '1.500');
    assert.equal(f.moneyText({ currencyCode: 'JPY', amountMinor: 1500n }), '1500');
    assert.equal(f.moneyText({ currencyCode: 'CNY', amountMinor: -5n }), '-0.05');
    assert.match(f.money({ currencyCode: 'IDR', amountMinor: 150000n }), /1,500\.00/);
    assert.match(f.money({ currencyCode: 'IQD', amountMinor: 1500n }), /1\.500/);
    assert.match(f.money({ currencyCode: 'HUF', amountMinor: 12345n }), /123\.45/);
    assert.match(f.money({ currencyCode: 'JPY', amountMinor: 1500n }), /1,500$/);
  });

  it('reads form amounts with those digits', () => {
    assert.equal(f.parseMoney('1,500.25', 'IDR')?.amountMinor, 150025n);
    assert.equal(f.parseMoney('12.34', 'HUF')?.amountMinor, 1234n);
    assert.equal(f.parseMoney('1.5', 'IQD')?.amountMinor, 1500n);
    assert.equal(f.parseMoney('1.500', 'IQD')?.amountMinor, 1500n);
    assert.equal(f.parseMoney('1.5000', 'IQD'), undefined);
    assert.equal(f.parseMoney('1500', 'JPY')?.amountMinor, 1500n);
    assert.equal(f.parseMoney('1500.5', 'JPY'), undefined);
    assert.equal(f.parseMoney('500.001', 'CNY'), undefined);
    assert.equal(f.parseMoney('-2', 'KWD')?.amountMinor, -2000n);
  });

  it('links only http and https report locations', () => {
    assert.equal(f.webLink('https://files.example.org/demo.pdf'), 'https://files.example.org/demo.pdf');
    assert.equal(f.webLink('http://10.0.0.5/r.pdf'), 'http://10.0.0.5/r.pdf');
    for (const bad of ['javascript:alert(1)', 'JavaScript:fetch(1)', ' javascript:x', 'data:text/html,<b>x</b>',
      'vbscript:x', 'file:///etc/passwd', '\\\\nas\\reports\\r.pdf', 's3://bucket/r.pdf', 'reports/r.pdf', '']) {
      assert.equal(f.webLink(bad), undefined, bad);
    }
  });
});
