// The booking rules of each mode in the admin's instrument edit panel
// (web/src/screens/admin/mode-rules.tsx): a tier horizon for a tier the demo
// organisations have (CORE), saved with UpdateInstrument (mask "modes", the
// etag) so that the other modes and every field the person did not touch stay
// as read; the summary of who books how far ahead; a value the service
// refuses shown with its sentence and field; lease rules; phone width and
// Chinese. Unsaved edits: two modes edited, one saved, the other keeps its
// edit (marked unsaved) and is saved after it; closing the panel or leaving
// the screen with unsaved edits asks first; a save refused with
// ETAG_MISMATCH (someone else changed the instrument) keeps the edits over
// "Reload the current version", untouched fields then showing the new
// stored values.
import { expect, test, type Locator, type Page } from '@playwright/test';
import { api, shot, signInAs } from './fixtures';

const INV = 'labshare.inventory.v1.InventoryService';
const stamp = Date.now().toString(36);
const INSTR = `e2e-rules-${stamp}`;
const NAME = `Ellipsometer ${stamp}`;

interface TierHorizon { tier: string; horizon: string }
interface Offering {
  mode: string; approvalRequired?: boolean;
  slotRules?: Record<string, unknown> & { tierHorizons?: TierHorizon[]; nonMemberHorizon?: string };
  leaseRules?: Record<string, unknown>;
}
interface Inst { name: string; etag: string; modes: Offering[] }

const slotRules = (maxHours: number, extra: Record<string, unknown> = {}) => ({
  minBlock: '3600s', maxBlock: `${maxHours * 3600}s`, memberHorizon: '5184000s', nonMemberHorizon: '1209600s',
  minNotice: '7200s', buffer: '1800s', approvalThreshold: '604800s', noShowGrace: '1800s', lateCancelNotice: '86400s',
  billingBasis: 'GREATER_OF_RESERVED_AND_ACTUAL', billingUnit: '1800s', minimumCharge: '3600s',
  missedFeeBps: 5000, lateCancelFeeBps: 2500, ...extra,
});

const get = (): Promise<Inst> => api<Inst>('admin', `${INV}/GetInstrument`, { name: `instruments/${INSTR}` });
const mode = (i: Inst, m: string): Offering => i.modes.find((o) => o.mode === m)!;

async function openEdit(page: Page): Promise<Locator> {
  await page.getByTestId(`instrument-${INSTR}`).getByRole('button', { name: `Edit ${NAME}` }).click();
  const ed = page.getByTestId('instrument-edit');
  await expect(ed).toBeVisible();
  return ed;
}

test('the consortium admin sets a tier horizon in an instrument\'s rules; the rest stays as read; the service refuses a bad one', async ({ page }) => {
  // An instrument of ZJU's with on-site (a 20-minute buffer, which the form
  // shows in hours only rounded), joint-research and lease rules.
  await api('admin', `${INV}/CreateInstrument`, {
    instrumentId: INSTR, requestId: `e2e-rules-${stamp}`,
    instrument: {
      displayName: NAME, facility: 'facilities/zju-nano', ownerOrganization: 'organizations/zju', category: 'surface-analysis',
      originalValue: { currencyCode: 'CNY', amountMinor: '80000000' }, dailyAvailableHours: 8,
      modes: [
        { mode: 'ON_SITE', slotRules: slotRules(12, { buffer: '1200s', qualificationValidityDays: 90 }) },
        { mode: 'JOINT_RESEARCH', approvalRequired: true, slotRules: slotRules(24) },
        { mode: 'LEASE', approvalRequired: true, leaseRules: {
          minTermDays: 7, maxTermDays: 180, handoverBuffer: '86400s', returnBuffer: '172800s',
          deposit: { currencyCode: 'CNY', amountMinor: '4000000' }, rateBasis: 'PER_DAY', countedHoursPerDay: 8, horizon: '15552000s',
        } },
      ],
    },
  });
  const before = await get();
  // The tiers the demo organisations have (ZJU, SJTU: CORE; BioTek, NanoCraft: GENERAL).
  const orgs = await api<{ organizations: { tier?: string }[] }>('admin', `${INV}/ListOrganizations`, { pageSize: 500 });
  const tiers = [...new Set(orgs.organizations.map((o) => o.tier).filter((x): x is string => !!x))].sort();
  expect(tiers).toContain('CORE');

  await signInAs(page, 'admin', '#/admin/instruments?facility=zju-nano');
  let ed = await openEdit(page);
  let onSite = ed.getByTestId('rules-ON_SITE');
  await expect(onSite.getByTestId('rules-summary')).toHaveText('members 60 d, non-members 14 d');
  await expect(ed.getByTestId('rules-JOINT_RESEARCH').getByTestId('rules-summary')).toHaveText('members 60 d, non-members 14 d');
  await expect(ed.getByTestId('rules-LEASE').getByTestId('rules-summary')).toHaveText('terms 7–180 d, starting within 180 d');
  await onSite.locator('summary').click();
  await expect(onSite.getByTestId('no-tiers')).toBeVisible();
  await expect(onSite.getByLabel('Members book up to (days ahead)', { exact: true })).toHaveValue('60');
  await expect(onSite.getByLabel('Non-members book up to (days ahead)')).toHaveValue('14');
  await expect(onSite.getByLabel('Kept free after each booking (hours)')).toHaveValue('0.333333');
  // The tier suggestions are the organisations' tiers.
  expect((await onSite.locator('datalist option').evaluateAll((os) => os.map((o) => (o as HTMLOptionElement).value))).sort()).toEqual(tiers);

  // By keyboard: add a row (the focus goes to its tier), type the tier and its horizon.
  await onSite.getByRole('button', { name: 'Add a tier' }).press('Enter');
  const row = onSite.getByTestId('tier-row').first();
  await expect(row.getByLabel('Tier', { exact: true })).toBeFocused();
  await page.keyboard.type('CORE');
  await page.keyboard.press('Tab');
  await page.keyboard.type('120');
  await onSite.getByLabel('Billed in steps of (hours; 0: as measured)').fill('0.25');
  // A number that does not read as one never reaches the service.
  let updates = 0;
  page.on('request', (r) => { if (r.url().endsWith('/InventoryService/UpdateInstrument')) updates += 1; });
  await onSite.getByLabel('Notice before start (hours)').fill('two');
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  await expect(onSite.getByTestId('field-error')).toHaveText('Enter a number such as 2 or 0.25.');
  await expect(onSite.getByLabel('Notice before start (hours)')).toBeFocused();
  expect(updates).toBe(0);
  await onSite.getByLabel('Notice before start (hours)').fill('2');
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of On site for “${NAME}” saved.`);
  onSite = page.getByTestId('instrument-edit').getByTestId('rules-ON_SITE');
  await expect(onSite.getByTestId('rules-summary')).toHaveText('members 60 d, tier CORE 120 d, non-members 14 d');
  await expect(onSite.getByTestId('rules-saved')).toBeVisible();

  // GetInstrument: exactly the tier and the billing unit (0.25 h = 900 s)
  // changed; the 20-minute buffer, the other modes and the rest as read.
  const saved = await get();
  expect(saved.etag).not.toBe(before.etag);
  expect(mode(saved, 'ON_SITE')).toEqual({
    ...mode(before, 'ON_SITE'),
    slotRules: { ...mode(before, 'ON_SITE').slotRules, tierHorizons: [{ tier: 'CORE', horizon: '10368000s' }], billingUnit: '900s' },
  });
  expect(mode(saved, 'ON_SITE').slotRules!['buffer']).toBe('1200s');
  expect(mode(saved, 'JOINT_RESEARCH')).toEqual(mode(before, 'JOINT_RESEARCH'));
  expect(mode(saved, 'LEASE')).toEqual(mode(before, 'LEASE'));
  expect(saved.modes.map((m) => m.mode)).toEqual(['ON_SITE', 'JOINT_RESEARCH', 'LEASE']);
  await shot(page, 'admin-instrument-rules');

  // After a reload the panel shows what the service keeps.
  await page.reload();
  ed = await openEdit(page);
  onSite = ed.getByTestId('rules-ON_SITE');
  await expect(onSite.getByTestId('rules-summary')).toHaveText('members 60 d, tier CORE 120 d, non-members 14 d');
  await onSite.locator('summary').click();
  await expect(onSite.getByTestId('tier-row')).toHaveCount(1);
  await expect(onSite.getByTestId('tier-row').getByLabel('Tier', { exact: true })).toHaveValue('CORE');
  await expect(onSite.getByTestId('tier-row').getByLabel('Books up to (days ahead)')).toHaveValue('120');
  await expect(onSite.getByLabel('Billed in steps of (hours; 0: as measured)')).toHaveValue('0.25');

  // A tier horizon shorter than the non-members' 14 days: the service refuses
  // it (INVALID_FIELD naming the row), nothing is written.
  const horizon = onSite.getByTestId('tier-row').getByLabel('Books up to (days ahead)');
  await horizon.fill('7');
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  const err = onSite.getByTestId('error');
  // The sentence is words (no proto path in it); the field's own sentence
  // says what is wrong, the service's message below names the field.
  await expect(err.getByText('A value you entered is not accepted. Correct it and try again.', { exact: true })).toBeVisible();
  await expect(err.getByTestId('error-field')).toHaveText('A tier’s horizon must be more than zero days and not shorter than the non-members’ horizon.');
  await expect(err).toContainText('instrument.modes[0].slot_rules.tier_horizons[0].horizon: must not be shorter than non_member_horizon');
  await expect(horizon).toHaveAttribute('aria-invalid', 'true');
  expect((await get()).etag).toBe(saved.etag);
  await shot(page, 'admin-instrument-rules-refused');

  // Non-members may not book at all (non_member_horizon unset).
  await onSite.getByRole('button', { name: 'Undo changes' }).click();
  await expect(horizon).toHaveValue('120');
  await onSite.getByLabel('Non-members may not book at all').check();
  await expect(onSite.getByLabel('Non-members book up to (days ahead)')).toBeDisabled();
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of On site for “${NAME}” saved.`);
  onSite = page.getByTestId('instrument-edit').getByTestId('rules-ON_SITE');
  await expect(onSite.getByTestId('rules-summary')).toHaveText('members 60 d, tier CORE 120 d, non-members may not book');
  const closed = await get();
  expect(mode(closed, 'ON_SITE').slotRules!.nonMemberHorizon).toBeUndefined();
  expect(mode(closed, 'ON_SITE').slotRules!.tierHorizons).toEqual([{ tier: 'CORE', horizon: '10368000s' }]);

  // Lease rules: how far ahead a term may start (180 -> 90 days), nothing else.
  const lease = page.getByTestId('instrument-edit').getByTestId('rules-LEASE');
  await lease.locator('summary').click();
  await expect(lease.getByLabel('Deposit (CNY)')).toHaveValue('40000.00');
  await expect(lease.getByLabel('Handover before the term (hours)')).toHaveValue('24');
  await lease.getByLabel('A term starts at most (days ahead; empty: no limit)').fill('90');
  await lease.getByRole('button', { name: 'Save the rules of Lease' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of Lease for “${NAME}” saved.`);
  await expect(page.getByTestId('instrument-edit').getByTestId('rules-LEASE').getByTestId('rules-summary')).toHaveText('terms 7–180 d, starting within 90 d');
  const leased = await get();
  expect(mode(leased, 'LEASE')).toEqual({ ...mode(before, 'LEASE'), leaseRules: { ...mode(before, 'LEASE').leaseRules, horizon: '7776000s' } });
  expect(mode(leased, 'ON_SITE')).toEqual(mode(closed, 'ON_SITE'));
  expect(mode(leased, 'JOINT_RESEARCH')).toEqual(mode(before, 'JOINT_RESEARCH'));

  // Phone width: the open on-site rules fit the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  // (The on-site rules are still open: saving another mode leaves them as they were.)
  onSite = page.getByTestId('instrument-edit').getByTestId('rules-ON_SITE');
  await expect(onSite.getByTestId('tier-row').getByLabel('Tier', { exact: true })).toBeVisible();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await onSite.scrollIntoViewIfNeeded();
  await shot(page, 'admin-instrument-rules-phone');
  await page.setViewportSize({ width: 1280, height: 860 });

  // In Chinese.
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(onSite.getByTestId('rules-summary')).toHaveText('成员 60 天，CORE 级 120 天，非成员不可预约');
  await expect(onSite.getByRole('button', { name: '保存场所共用规则' })).toBeVisible();
  // The success line above follows the language too.
  await expect(page.getByTestId('done')).toHaveText(`“${NAME}”的出租租赁规则已保存。`);
  await shot(page, 'admin-instrument-rules-zh');
  await page.getByTestId('language').selectOption('en');
});

// A technical service's report acceptance period (SlotRules
// .report_acceptance_period, days): offered in the TECHNICAL_SERVICE rules
// only, refused by the service past 3650 days, saved as a Duration, and
// emptied again (unset: the client accepts), the rest of the instrument as
// read. On the SJTU confocal, put back as it was.
test('the consortium admin sets how long a technical service\'s client has to accept a report', async ({ page }) => {
  const CONFOCAL = 'instruments/confocal';
  const read = (): Promise<Inst & { displayName: string }> =>
    api<Inst & { displayName: string }>('admin', `${INV}/GetInstrument`, { name: CONFOCAL });
  const before = await read();
  const ts = before.modes.findIndex((o) => o.mode === 'TECHNICAL_SERVICE');
  expect(ts).toBeGreaterThanOrEqual(0);
  expect(before.modes[ts]!.slotRules!['reportAcceptancePeriod']).toBeUndefined();
  const LABEL = 'A delivered report is accepted automatically after (days; 0: never, the client accepts)';

  await signInAs(page, 'admin', '#/admin/instruments');
  await page.getByTestId('instrument-confocal').getByRole('button', { name: `Edit ${before.displayName}` }).click();
  const ed = page.getByTestId('instrument-edit');
  for (const o of before.modes.filter((m) => m.mode !== 'TECHNICAL_SERVICE' && m.mode !== 'LEASE')) {
    const other = ed.getByTestId(`rules-${o.mode}`);
    await other.locator('summary').click();
    await expect(other.getByLabel(LABEL)).toHaveCount(0);
    await other.locator('summary').click();
  }
  let rules = ed.getByTestId('rules-TECHNICAL_SERVICE');
  await rules.locator('summary').click();
  await expect(rules.getByLabel(LABEL)).toHaveValue('');

  // Past the 3650 days the service allows: refused, nothing written.
  await rules.getByLabel(LABEL).fill('4000');
  await rules.getByRole('button', { name: 'Save the rules of Technical service' }).click();
  await expect(rules.getByTestId('error')).toContainText(`instrument.modes[${ts}].slot_rules.report_acceptance_period`);
  expect((await read()).etag).toBe(before.etag);

  await rules.getByLabel(LABEL).fill('14');
  await rules.getByRole('button', { name: 'Save the rules of Technical service' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of Technical service for “${before.displayName}” saved.`);
  const saved = await read();
  expect(saved.modes[ts]).toEqual({
    ...before.modes[ts], slotRules: { ...before.modes[ts]!.slotRules, reportAcceptancePeriod: '1209600s' },
  });
  expect(saved.modes.filter((_, i) => i !== ts)).toEqual(before.modes.filter((_, i) => i !== ts));
  rules = page.getByTestId('instrument-edit').getByTestId('rules-TECHNICAL_SERVICE');
  await expect(rules.getByLabel(LABEL)).toHaveValue('14');
  await rules.scrollIntoViewIfNeeded();
  await shot(page, 'admin-instrument-rules-report-acceptance');

  // Emptied: unset again, the instrument's modes as they were.
  await rules.getByLabel(LABEL).fill('');
  await rules.getByRole('button', { name: 'Save the rules of Technical service' }).click();
  await expect.poll(async () => (await read()).modes).toEqual(before.modes);
  await expect(page.getByTestId('instrument-edit').getByTestId('rules-TECHNICAL_SERVICE').getByLabel(LABEL)).toHaveValue('');
});

// Unsaved edits in the instrument panel (mode-rules.tsx, rule-drafts.ts):
// each mode's block is saved on its own, and saving one must not drop what
// the person typed in another. On an instrument of its own.
test('two modes edited, one saved: the other keeps its unsaved edit and saves too; leaving asks; someone else\'s change keeps the edits', async ({ page }) => {
  const ID = `e2e-drafts-${stamp}`;
  const TITLE = `Profilometer ${stamp}`;
  await api('admin', `${INV}/CreateInstrument`, {
    instrumentId: ID, requestId: `e2e-drafts-${stamp}`,
    instrument: {
      displayName: TITLE, facility: 'facilities/zju-nano', ownerOrganization: 'organizations/zju', category: 'surface-analysis',
      originalValue: { currencyCode: 'CNY', amountMinor: '30000000' }, dailyAvailableHours: 8,
      modes: [
        { mode: 'ON_SITE', slotRules: slotRules(12, { qualificationValidityDays: 90 }) },
        { mode: 'JOINT_RESEARCH', approvalRequired: true, slotRules: slotRules(24) },
        { mode: 'LEASE', approvalRequired: true, leaseRules: {
          minTermDays: 7, maxTermDays: 180, handoverBuffer: '86400s', returnBuffer: '172800s',
          deposit: { currencyCode: 'CNY', amountMinor: '4000000' }, rateBasis: 'PER_DAY', countedHoursPerDay: 8,
        } },
      ],
    },
  });
  const read = (): Promise<Inst & { category: string }> => api<Inst & { category: string }>('admin', `${INV}/GetInstrument`, { name: `instruments/${ID}` });
  const before = await read();
  const slot = (i: Inst, m: string, rules: Record<string, unknown>): Offering =>
    ({ ...mode(i, m), slotRules: { ...mode(i, m).slotRules, ...rules } });
  // Leaving with unsaved edits asks (the browser's confirm); the test says stay.
  const asked: string[] = [];
  page.on('dialog', (d) => { asked.push(d.message()); void d.dismiss(); });
  const BUFFER = 'Kept free after each booking (hours)';
  const MISSED = 'Fee for a missed booking (% of the reserved time’s charge)';
  const NOTICE = 'Notice before start (hours)';
  const GRACE = 'Check-in closes this long after the start (hours; 0: at the end)';

  await signInAs(page, 'admin', '#/admin/instruments?facility=zju-nano');
  await page.getByTestId(`instrument-${ID}`).getByRole('button', { name: `Edit ${TITLE}` }).click();
  const ed = page.getByTestId('instrument-edit');
  const onSite = ed.getByTestId('rules-ON_SITE');
  const joint = ed.getByTestId('rules-JOINT_RESEARCH');
  const saveOnSite = onSite.getByRole('button', { name: 'Save the rules of On site' });
  await onSite.locator('summary').click();
  await joint.locator('summary').click();
  await expect(ed.getByTestId('rules-unsaved')).toHaveCount(0);

  // Two modes edited (and the instrument's category above them): each
  // block says it has unsaved changes, the lease rules do not.
  await onSite.getByLabel(BUFFER).fill('0.75');
  await joint.getByLabel(MISSED).fill('40');
  await ed.locator('[name=category]').fill('profilometry');
  await expect(onSite.getByTestId('rules-unsaved')).toHaveText('Unsaved changes');
  await expect(joint.getByTestId('rules-unsaved')).toHaveText('Unsaved changes');
  await expect(ed.getByTestId('details-unsaved')).toHaveText('Unsaved changes');
  await expect(ed.getByTestId('rules-LEASE').getByTestId('rules-unsaved')).toHaveCount(0);
  await onSite.scrollIntoViewIfNeeded();
  await shot(page, 'admin-instrument-rules-unsaved');

  // On site saved: the joint-research edit and the category are still
  // there, still unsaved; the on-site block is not any more.
  await saveOnSite.click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of On site for “${TITLE}” saved.`);
  await expect(onSite.getByTestId('rules-unsaved')).toHaveCount(0);
  await expect(onSite.getByLabel(BUFFER)).toHaveValue('0.75');
  await expect(joint.getByLabel(MISSED)).toHaveValue('40');
  await expect(joint.getByTestId('rules-unsaved')).toHaveText('Unsaved changes');
  await expect(ed.locator('[name=category]')).toHaveValue('profilometry');
  await expect(ed.getByTestId('details-unsaved')).toBeVisible();
  const onSiteSaved = await read();
  expect(mode(onSiteSaved, 'ON_SITE')).toEqual(slot(before, 'ON_SITE', { buffer: '2700s' }));
  expect(mode(onSiteSaved, 'JOINT_RESEARCH')).toEqual(mode(before, 'JOINT_RESEARCH'));

  // Then joint research, by keyboard (Enter in its field saves its mode),
  // with the etag the on-site save answered: both are stored, the rest as read.
  await joint.getByLabel(MISSED).press('Enter');
  await expect(page.getByTestId('done')).toHaveText(`Rules of Joint research for “${TITLE}” saved.`);
  await expect(joint.getByTestId('rules-unsaved')).toHaveCount(0);
  const both = await read();
  expect(mode(both, 'ON_SITE')).toEqual(slot(before, 'ON_SITE', { buffer: '2700s' }));
  expect(mode(both, 'JOINT_RESEARCH')).toEqual(slot(before, 'JOINT_RESEARCH', { missedFeeBps: 4000 }));
  expect(mode(both, 'LEASE')).toEqual(mode(before, 'LEASE'));
  expect(both.category).toBe('surface-analysis');
  await ed.getByRole('button', { name: 'Save changes' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Instrument “${TITLE}” saved.`);
  await expect(ed.getByTestId('details-unsaved')).toHaveCount(0);
  const described = await read();
  expect(described.category).toBe('profilometry');
  expect(described.modes).toEqual(both.modes);

  // Unsaved on-site notice: closing the panel asks (the test stays), and so
  // does leaving the screen by the menu (the address stays too).
  await onSite.getByLabel(NOTICE).fill('3');
  await ed.getByRole('button', { name: 'Close', exact: true }).click();
  await expect.poll(() => asked.length).toBe(1);
  expect(asked[0]).toBe(`“${TITLE}” has unsaved changes (On site). Leave without saving them?`);
  await expect(onSite.getByLabel(NOTICE)).toHaveValue('3');
  const here = page.url();
  await page.getByRole('navigation', { name: 'main' }).getByRole('link', { name: 'Organisations' }).click();
  await expect.poll(() => asked.length).toBe(2);
  await expect(page).toHaveURL(here);
  await expect(onSite.getByLabel(NOTICE)).toHaveValue('3');

  // Someone else changes the on-site rules meanwhile: the notice (4 h, which
  // the person changed too) and the check-in grace (45 min, which they did not).
  const other = await read();
  await api('admin', `${INV}/UpdateInstrument`, {
    requestId: `e2e-drafts-other-${stamp}`, updateMask: 'modes',
    instrument: { name: other.name, etag: other.etag, modes: other.modes.map((m) => (m.mode === 'ON_SITE' ? slot(other, 'ON_SITE', { minNotice: '14400s', noShowGrace: '2700s' }) : m)) },
  });
  const theirs = await read();
  // The save is refused (ETAG_MISMATCH); the edit stays, nothing is written.
  await saveOnSite.click();
  const err = onSite.getByTestId('error');
  await expect(err).toContainText('Someone changed this in the meantime.');
  await expect(err.getByTestId('etag-note')).toHaveText(/^Nothing was saved\. Your changes stay in the form: reload the current version/);
  await expect(onSite.getByLabel(NOTICE)).toHaveValue('3');
  expect((await read()).etag).toBe(theirs.etag);
  await shot(page, 'admin-instrument-rules-etag');
  // Reloaded: the untouched grace shows their 0.75 h, the notice keeps the
  // person's 3 h with theirs (4) under it, still unsaved.
  await err.getByRole('button', { name: 'Reload the current version' }).click();
  await expect(onSite.getByLabel(GRACE)).toHaveValue('0.75');
  await expect(onSite.getByLabel(NOTICE)).toHaveValue('3');
  await expect(onSite.getByTestId('field-theirs')).toHaveText('Saved meanwhile by someone else: 4. Yours is kept until you save or undo.');
  await expect(onSite.getByTestId('rules-unsaved')).toBeVisible();
  await expect(err).toHaveCount(0);

  // Phone width: the marked block and the note fit.
  await page.setViewportSize({ width: 390, height: 844 });
  await onSite.getByLabel(NOTICE).scrollIntoViewIfNeeded();
  expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
  await shot(page, 'admin-instrument-rules-merge-phone');
  await page.setViewportSize({ width: 1280, height: 860 });
  // In Chinese.
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(onSite.getByTestId('rules-unsaved')).toHaveText('有未保存的修改');
  await expect(onSite.getByTestId('field-theirs')).toHaveText('此间他人已保存为：4。在您保存或撤销之前保留您的值。');
  await shot(page, 'admin-instrument-rules-merge-zh');
  await page.getByTestId('language').selectOption('en');

  // Saved: their grace and the person's notice, the rest as stored.
  await saveOnSite.click();
  await expect(page.getByTestId('done')).toHaveText(`Rules of On site for “${TITLE}” saved.`);
  await expect(onSite.getByTestId('field-theirs')).toHaveCount(0);
  await expect(onSite.getByTestId('rules-unsaved')).toHaveCount(0);
  const merged = await read();
  expect(mode(merged, 'ON_SITE')).toEqual(slot(theirs, 'ON_SITE', { minNotice: '10800s' }));
  expect(mode(merged, 'ON_SITE').slotRules!['noShowGrace']).toBe('2700s');
  expect(mode(merged, 'JOINT_RESEARCH')).toEqual(mode(both, 'JOINT_RESEARCH'));
  expect(mode(merged, 'LEASE')).toEqual(mode(before, 'LEASE'));

  // Nothing unsaved: closing asks nothing.
  await ed.getByRole('button', { name: 'Close', exact: true }).click();
  await expect(page.getByTestId('instrument-edit')).toHaveCount(0);
  expect(asked).toHaveLength(2);
});

// A mode's save on its way (its answer held back here) while the person types
// on in the same block: the block then shows what the service keeps and still
// what was typed meanwhile (unsaved, the focus where the person types), and
// saving again stores it. Then a mode whose rules have unsaved edits is no
// longer offered in the details above: saving that asks first (the edits go
// with the block), and saving nothing when the person says no. On an
// instrument of its own.
test('typing on while a mode\'s save is on its way is kept; dropping a mode with unsaved rules asks first', async ({ page }) => {
  const ID = `e2e-inflight-${stamp}`;
  const TITLE = `Nanoindenter ${stamp}`;
  await api('admin', `${INV}/CreateInstrument`, {
    instrumentId: ID, requestId: `e2e-inflight-${stamp}`,
    instrument: {
      displayName: TITLE, facility: 'facilities/zju-nano', ownerOrganization: 'organizations/zju', category: 'mechanical-testing',
      originalValue: { currencyCode: 'CNY', amountMinor: '50000000' }, dailyAvailableHours: 8,
      modes: [
        { mode: 'ON_SITE', slotRules: slotRules(12, { qualificationValidityDays: 90 }) },
        { mode: 'JOINT_RESEARCH', approvalRequired: true, slotRules: slotRules(24) },
        { mode: 'LEASE', approvalRequired: true, leaseRules: {
          minTermDays: 7, maxTermDays: 180, handoverBuffer: '86400s', returnBuffer: '172800s',
          deposit: { currencyCode: 'CNY', amountMinor: '4000000' }, rateBasis: 'PER_DAY', countedHoursPerDay: 8,
        } },
      ],
    },
  });
  const read = (): Promise<Inst> => api<Inst>('admin', `${INV}/GetInstrument`, { name: `instruments/${ID}` });
  const before = await read();
  const slot = (i: Inst, m: string, rules: Record<string, unknown>): Offering =>
    ({ ...mode(i, m), slotRules: { ...mode(i, m).slotRules, ...rules } });
  const asked: string[] = [];
  let leave = false;
  page.on('dialog', (d) => { asked.push(d.message()); void (leave ? d.accept() : d.dismiss()); });
  const BUFFER = 'Kept free after each booking (hours)';
  const MISSED = 'Fee for a missed booking (% of the reserved time’s charge)';

  await signInAs(page, 'admin', '#/admin/instruments?facility=zju-nano');
  await page.getByTestId(`instrument-${ID}`).getByRole('button', { name: `Edit ${TITLE}` }).click();
  const ed = page.getByTestId('instrument-edit');
  const onSite = ed.getByTestId('rules-ON_SITE');
  await onSite.locator('summary').click();

  // The buffer typed and saved; the answer held back until the person has
  // typed the buffer again and the missed-booking fee.
  let answer!: () => void;
  const held = new Promise<void>((r) => { answer = r; });
  let arrived!: () => void;
  const sent = new Promise<void>((r) => { arrived = r; });
  await page.route('**/labshare.inventory.v1.InventoryService/UpdateInstrument', async (route) => {
    arrived();
    const res = await route.fetch();
    await held;
    await route.fulfill({ response: res });
  });
  await onSite.getByLabel(BUFFER).fill('0.75');
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  await sent;
  await onSite.getByLabel(MISSED).fill('40');
  await onSite.getByLabel(BUFFER).fill('1');
  answer();
  await expect(page.getByTestId('done')).toHaveText(`Rules of On site for “${TITLE}” saved.`);
  // Stored: the buffer as sent (0.75 h), the fee as read.
  expect(mode(await read(), 'ON_SITE')).toEqual(slot(before, 'ON_SITE', { buffer: '2700s' }));
  // Shown: what was typed meanwhile, unsaved, the focus still in the field.
  await expect(onSite.getByLabel(BUFFER)).toHaveValue('1');
  await expect(onSite.getByLabel(MISSED)).toHaveValue('40');
  await expect(onSite.getByTestId('rules-unsaved')).toHaveText('Unsaved changes');
  await expect(onSite.getByTestId('field-theirs')).toHaveCount(0);
  await expect(onSite.getByLabel(BUFFER)).toBeFocused();
  await onSite.scrollIntoViewIfNeeded();
  await shot(page, 'admin-instrument-rules-typed-during-save');
  await page.unroute('**/labshare.inventory.v1.InventoryService/UpdateInstrument');
  // Saved again: both stored, nothing unsaved.
  await onSite.getByRole('button', { name: 'Save the rules of On site' }).click();
  await expect(onSite.getByTestId('rules-unsaved')).toHaveCount(0);
  const twice = await read();
  expect(mode(twice, 'ON_SITE')).toEqual(slot(before, 'ON_SITE', { buffer: '3600s', missedFeeBps: 4000 }));

  // Joint research's rules edited, not saved; joint research and lease (no
  // unsaved edits) no longer offered in the details above. Saving asks, about
  // joint research only; "no" saves nothing and keeps everything as typed.
  const joint = ed.getByTestId('rules-JOINT_RESEARCH');
  await joint.locator('summary').click();
  await joint.getByLabel(MISSED).fill('30');
  await ed.locator('[name=mode-JOINT_RESEARCH]').uncheck();
  await ed.locator('[name=mode-LEASE]').uncheck();
  await ed.getByRole('button', { name: 'Save changes' }).click();
  await expect.poll(() => asked.length).toBe(1);
  expect(asked[0]).toBe(`Saving “${TITLE}” stops offering Joint research, whose rules have unsaved changes: they will be lost. Save anyway?`);
  await expect(joint.getByLabel(MISSED)).toHaveValue('30');
  await expect(ed.getByTestId('details-unsaved')).toBeVisible();
  await expect(ed.locator('[name=mode-JOINT_RESEARCH]')).not.toBeChecked();
  expect((await read()).etag).toBe(twice.etag);
  // "Yes": saved; the block and its edit go.
  leave = true;
  await ed.getByRole('button', { name: 'Save changes' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Instrument “${TITLE}” saved.`);
  expect(asked).toHaveLength(2);
  const dropped = await read();
  expect(dropped.modes).toEqual([mode(twice, 'ON_SITE')]);
  await expect(ed.getByTestId('rules-JOINT_RESEARCH')).toHaveCount(0);
  await expect(ed.getByTestId('details-unsaved')).toHaveCount(0);
  // Nothing unsaved now: closing asks nothing.
  await ed.getByRole('button', { name: 'Close', exact: true }).click();
  await expect(page.getByTestId('instrument-edit')).toHaveCount(0);
  expect(asked).toHaveLength(2);
});
