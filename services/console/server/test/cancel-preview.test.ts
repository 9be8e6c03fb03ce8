// The booking cancel panel (web/src/screens/lab/bookings.tsx) asks
// cancelConfirmable (web/src/screens/lab/money.ts) whether its confirm
// button works: when the fee preview failed (inventory or availability
// unreachable, a refusal) the button stayed disabled for good and the
// booking could not be cancelled from the console at all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { consoleDir } from './harness.js';
import { WebModules } from './web-module.js';

interface MoneyModule {
  cancelConfirmable(busy: boolean, preview: object | undefined, previewFailed: boolean): boolean;
}

let web: WebModules | undefined;
async function loadMoney(): Promise<MoneyModule> {
  web = new WebModules('webmoney-');
  web.write('screens/lab/money.ts', 'money');
  return web.load<MoneyModule>('money');
}

describe('the cancel panel\'s confirm button (web/src/screens/lab/money.ts)', () => {
  let m: MoneyModule;
  before(async () => { m = await loadMoney(); });
  after(() => web?.cleanUp());

  it('works once the preview is in, or once it failed (fee unknown)', () => {
    assert.equal(m.cancelConfirmable(false, undefined, false), false); // still loading
    assert.equal(m.cancelConfirmable(false, { late: true }, false), true);
    assert.equal(m.cancelConfirmable(false, undefined, true), true); // the preview failed
    assert.equal(m.cancelConfirmable(true, { late: true }, false), false); // a cancellation under way
    assert.equal(m.cancelConfirmable(true, undefined, true), false);
  });

  it('is what bookings.tsx uses for the button', () => {
    const tsx = fs.readFileSync(path.join(consoleDir, 'web', 'src', 'screens', 'lab', 'bookings.tsx'), 'utf8');
    assert.match(tsx, /disabled=\{!cancelConfirmable\(busy, p, previewError !== undefined\)\}/);
    assert.match(tsx, /lab\.cancel\.feeUnknown/);
  });
});
