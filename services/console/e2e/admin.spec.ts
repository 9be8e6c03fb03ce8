// The consortium admin's screens: organisations (list, register, membership
// change with its history), users of an organisation, facilities and
// instruments, rate cards with the lookup tool; refusals come from the
// service; the auditor reads without the admin's buttons.
import { expect, test, type Page } from '@playwright/test';
import { api, shot, signInAs } from './fixtures';

const INV = 'labshare.inventory.v1.InventoryService';
// Fresh ids per run: the platform keeps what earlier runs created.
const stamp = Date.now().toString(36);
const ORG = `e2e-org-${stamp}`;
const USER = `e2e-user-${stamp}`;
const INSTR = `e2e-instr-${stamp}`;
const FAC = `e2e-fac-${stamp}`;

interface Org { name: string; displayName: string; type: string; sizeClass?: string; membershipState: string; tier?: string }

async function allOrgs(): Promise<Org[]> {
  const out: Org[] = [];
  let pageToken = '';
  do {
    const r = await api<{ organizations: Org[]; nextPageToken?: string }>('admin', `${INV}/ListOrganizations`, { pageSize: 200, pageToken });
    out.push(...r.organizations);
    pageToken = r.nextPageToken ?? '';
  } while (pageToken);
  return out;
}

async function field(page: Page, form: string, name: string, value: string): Promise<void> {
  await page.getByTestId(form).locator(`[name="${name}"]`).fill(value);
}

test('the consortium admin lists organisations, registers one, changes its membership and adds a user', async ({ page }) => {
  await signInAs(page, 'admin', '#/admin/organizations');
  const table = page.getByTestId('organizations');
  for (const id of ['zju', 'sjtu', 'nanocraft', 'biotek', 'ecowater', 'metrology']) {
    await expect(table.getByTestId(`org-${id}`)).toBeVisible();
  }
  // What the service says, in words.
  const orgs = await allOrgs();
  await expect(table.locator('tbody tr')).toHaveCount(orgs.length);
  expect(orgs.find((o) => o.name === 'organizations/ecowater')?.membershipState).toBe('NON_MEMBER');
  await expect(table.getByTestId('org-ecowater').getByTestId('membership')).toHaveText('Non-member');
  await expect(table.getByTestId('org-nanocraft')).toContainText('Small or medium');
  await expect(table.getByTestId('org-zju').getByTestId('membership')).toHaveText('Member');
  await expect(table.getByTestId('org-zju')).toContainText('CORE');
  await shot(page, 'admin-organizations');

  // Register a new enterprise (applicant by default).
  await page.getByTestId('new-organization').click();
  await expect(page.getByTestId('organization-form')).toBeVisible();
  await field(page, 'organization-form', 'id', ORG);
  await field(page, 'organization-form', 'displayName', `Photonix ${stamp}`);
  await page.getByTestId('organization-form').locator('[name=type]').selectOption({ label: 'Enterprise' });
  await page.getByTestId('organization-form').locator('[name=sizeClass]').selectOption({ label: 'Start-up' });
  await field(page, 'organization-form', 'sector', 'photonics');
  await shot(page, 'admin-organization-new');
  await page.getByRole('button', { name: 'Register organisation' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Organisation “Photonix ${stamp}” registered.`);
  const row = page.getByTestId(`org-${ORG}`);
  await expect(row).toBeVisible();
  await expect(row.getByTestId('membership')).toHaveText('Applicant');
  const created = await api<Org>('admin', `${INV}/GetOrganization`, { name: `organizations/${ORG}` });
  expect(created).toMatchObject({ displayName: `Photonix ${stamp}`, type: 'ENTERPRISE', sizeClass: 'START_UP', membershipState: 'APPLICANT' });

  // Membership: applicant -> member (tier GENERAL), with its history.
  await row.getByRole('link', { name: `Photonix ${stamp}` }).click();
  const mf = page.getByTestId('membership-form');
  await mf.locator('[name=to]').selectOption({ label: 'Member' });
  await mf.locator('[name=tier]').fill('GENERAL');
  await mf.locator('[name=reason]').fill('admitted by the board');
  await mf.getByRole('button', { name: 'Apply change' }).click();
  await expect(page.getByTestId('done')).toHaveText('Membership is now: Member.');
  await expect(page.getByTestId('organization-facts').getByTestId('membership')).toHaveText('Member');
  const history = page.getByTestId('membership-history').locator('tbody tr');
  await expect(history).toHaveCount(2);
  await expect(history.nth(1)).toContainText('admitted by the board');
  const changes = await api<{ membershipChanges: { toState: string; toTier?: string; reason: string }[] }>(
    'admin', `${INV}/ListMembershipChanges`, { parent: `organizations/${ORG}` });
  expect(changes.membershipChanges.at(-1)).toMatchObject({ toState: 'MEMBER', toTier: 'GENERAL', reason: 'admitted by the board' });
  // Someone else edits the organisation meanwhile: saving the stale copy is
  // refused (ABORTED, etag mismatch); reloading shows their version.
  const ef = page.getByTestId('organization-edit');
  await ef.locator('[name=sector]').fill('optics');
  const current = await api<Org & { etag: string }>('admin', `${INV}/GetOrganization`, { name: `organizations/${ORG}` });
  await api('admin', `${INV}/UpdateOrganization`, {
    organization: { name: `organizations/${ORG}`, sector: 'integrated photonics', etag: current.etag },
    updateMask: 'sector', requestId: `e2e-sector-${stamp}`,
  });
  await ef.getByRole('button', { name: 'Save changes' }).click();
  await expect(ef.getByTestId('error')).toContainText('Your copy was out of date');
  await shot(page, 'admin-organization');
  await ef.getByRole('button', { name: 'Reload the current version' }).click();
  await expect(ef.locator('[name=sector]')).toHaveValue('integrated photonics');
  await expect(ef.getByTestId('error')).toHaveCount(0);

  // A second identical change: the service refuses (no change).
  await mf.locator('[name=to]').selectOption({ label: 'Member' });
  await mf.locator('[name=reason]').fill('again');
  await mf.getByRole('button', { name: 'Apply change' }).click();
  await expect(mf.getByTestId('error')).toContainText(`organizations/${ORG} is already MEMBER`);

  // A user in the new organisation.
  await page.goto(`${new URL(page.url()).origin}/#/admin/users?org=${ORG}`);
  await expect(page.getByText('This organisation has no users yet.')).toBeVisible();
  // The form names the organisation, not its id.
  await expect(page.getByTestId('user-form').getByRole('heading')).toHaveText(`New user in Photonix ${stamp}`);
  await field(page, 'user-form', 'userId', USER);
  await field(page, 'user-form', 'displayName', 'Gao Min');
  await field(page, 'user-form', 'email', `${USER}@photonix.example`);
  await page.getByTestId('user-form').locator('[name=role-MEMBER_BILLING_ADMIN]').check();
  await page.getByRole('button', { name: 'Create user' }).click();
  await expect(page.getByTestId('done')).toHaveText('User “Gao Min” created.');
  const urow = page.getByTestId(`user-${USER}`);
  await expect(urow.getByTestId('roles')).toHaveText('Lab user, Billing administrator');
  const user = await api<{ organization: string; email: string; roles: string[]; disabled?: boolean }>('admin', `${INV}/GetUser`, { name: `users/${USER}` });
  expect(user).toMatchObject({ organization: `organizations/${ORG}`, email: `${USER}@photonix.example`, roles: ['LAB_USER', 'MEMBER_BILLING_ADMIN'] });
  // Disable the user (UpdateUser with mask "disabled" and the etag).
  await urow.getByRole('button', { name: 'Edit Gao Min' }).click();
  await page.getByTestId('user-edit').locator('[name=disabled]').check();
  await page.getByTestId('user-edit').getByRole('button', { name: 'Save changes' }).click();
  await expect(page.getByTestId('done')).toHaveText('User “Gao Min” saved.');
  await expect(urow).toContainText('Disabled');
  expect((await api<{ disabled?: boolean }>('admin', `${INV}/GetUser`, { name: `users/${USER}` })).disabled).toBe(true);
  await shot(page, 'admin-users');
});

test('the consortium admin registers an instrument, prices it and looks the rate up; bad input is refused by the service', async ({ page }) => {
  await signInAs(page, 'admin', '#/admin/instruments?facility=zju-nano');
  await expect(page.getByTestId('facility-zju-nano').getByTestId('time-zone')).toHaveText('Asia/Shanghai');
  await expect(page.getByTestId('instrument-sem-1')).toContainText('Field-emission SEM');

  // A facility abroad: an unknown time zone is refused, a real one kept.
  await page.getByText('New facility').click();
  const ff = page.getByTestId('facility-form');
  await ff.locator('[name=facilityId]').fill(FAC);
  await ff.locator('[name=displayName]').fill(`Berlin satellite lab ${stamp}`);
  await ff.locator('[name=owner]').selectOption('zju');
  await ff.locator('[name=timeZone]').fill('Mars/Olympus');
  await ff.getByRole('button', { name: 'Create facility' }).click();
  await expect(ff.getByTestId('error')).toContainText('The time zone is not known; use a name such as Asia/Shanghai.');
  await ff.locator('[name=timeZone]').fill('Europe/Berlin');
  await ff.getByRole('button', { name: 'Create facility' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Facility “Berlin satellite lab ${stamp}” created.`);
  await expect(page.getByTestId(`facility-${FAC}`).getByTestId('time-zone')).toHaveText('Europe/Berlin');
  const fac = await api<{ timeZone: string; ownerOrganization: string; operatorOrganization: string }>('admin', `${INV}/GetFacility`, { name: `facilities/${FAC}` });
  expect(fac).toMatchObject({ timeZone: 'Europe/Berlin', ownerOrganization: 'organizations/zju', operatorOrganization: 'organizations/zju' });

  // An empty name: the service's refusal, in words.
  const form = page.getByTestId('instrument-form');
  await form.locator('[name=instrumentId]').fill(INSTR);
  await form.locator('[name=category]').fill('spectroscopy');
  await form.locator('[name=value]').fill('1200000');
  await form.getByRole('button', { name: 'Register instrument' }).click();
  await expect(form.getByTestId('error')).toContainText('The instrument needs a name.');
  await expect(form.getByTestId('error')).toContainText('instrument.display_name: required');

  await form.locator('[name=displayName]').fill(`FTIR spectrometer ${stamp}`);
  await form.locator('[name=mode-JOINT_RESEARCH]').check();
  await form.getByRole('button', { name: 'Register instrument' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Instrument “FTIR spectrometer ${stamp}” registered.`);
  await expect(page.getByTestId(`instrument-${INSTR}`)).toContainText('On site, Joint research');
  await expect(page.getByTestId(`instrument-${INSTR}`).getByTestId('state')).toHaveText('In service');
  const inst = await api<{ facility: string; ownerOrganization: string; originalValue: { currencyCode: string; amountMinor: string }; modes: { mode: string }[]; state: string }>(
    'admin', `${INV}/GetInstrument`, { name: `instruments/${INSTR}` });
  expect(inst).toMatchObject({
    facility: 'facilities/zju-nano', ownerOrganization: 'organizations/zju', state: 'ACTIVE',
    originalValue: { currencyCode: 'CNY', amountMinor: '120000000' },
  });
  expect(inst.modes.map((m) => m.mode)).toEqual(['ON_SITE', 'JOINT_RESEARCH']);
  await shot(page, 'admin-instruments');

  // A rate line from 1 May 2027, 00:00 Shanghai time.
  await page.goto(`${new URL(page.url()).origin}/#/admin/rates?instrument=${INSTR}&at=2027-05-03T10:00`);
  await expect(page.getByText('No rate lines for this instrument.')).toBeVisible();
  const rf = page.getByTestId('rate-form');
  await rf.locator('[name=payerClass]').selectOption({ label: 'Non-member' });
  await rf.locator('[name=effectiveFrom]').fill('2027-05-01T00:00');
  // An empty or malformed price never reaches the service (it would be a free line).
  let createRateCalls = 0;
  page.on('request', (r) => { if (r.url().endsWith('/InventoryService/CreateRate')) createRateCalls += 1; });
  await rf.getByRole('button', { name: 'Add rate line' }).click();
  await expect(rf.getByTestId('field-error')).toHaveText('Enter an amount in CNY such as 1234.50 or 1,234.50 (at most 2 decimals).');
  await rf.locator('[name=price]').fill('1,2,3');
  await rf.getByRole('button', { name: 'Add rate line' }).click();
  await expect(rf.locator('[name=price]')).toHaveAttribute('aria-invalid', 'true');
  await expect(rf.getByTestId('field-error')).toBeVisible();
  expect(createRateCalls).toBe(0);
  // A negative price is the service's to refuse.
  await rf.locator('[name=price]').fill('-5');
  await rf.getByRole('button', { name: 'Add rate line' }).click();
  await expect(rf.getByTestId('error')).toContainText('The price must not be negative.');
  await expect(rf.getByTestId('error')).toContainText('rate.price.amount_minor: must not be negative');
  await shot(page, 'admin-refused');
  await rf.locator('[name=price]').fill('123.45');
  await rf.getByRole('button', { name: 'Add rate line' }).click();
  await expect(page.getByTestId('done')).toContainText('Rate line added');
  const rates = await api<{ rates: { payerClass: string; unit: string; price: { amountMinor: string; currencyCode: string }; effectiveTime: string }[] }>(
    'admin', `${INV}/ListRates`, { parent: `instruments/${INSTR}` });
  expect(rates.rates).toHaveLength(1);
  expect(rates.rates[0]).toMatchObject({ payerClass: 'NON_MEMBER', unit: 'PER_HOUR', price: { currencyCode: 'CNY', amountMinor: '12345' }, effectiveTime: '2027-04-30T16:00:00Z' });
  const line = page.getByTestId('rates').locator('tbody tr');
  await expect(line).toHaveCount(1);
  await expect(line).toContainText('Non-member');
  await expect(line.getByTestId('price')).toContainText('123.45');
  await expect(line.getByTestId('price')).toContainText('per hour');
  await expect(line).toContainText('2027');
  await expect(line).toContainText('00:00');

  // Which line applies to EcoWater (a non-member) on 3 May, 10:00 Shanghai?
  const lf = page.getByTestId('lookup-form');
  await lf.locator('[name=payer]').selectOption('ecowater');
  await lf.getByRole('button', { name: 'Look up' }).click();
  const found = await api<{ payerClass: string; rate: { price: { amountMinor: string } } }>('admin', `${INV}/LookupRate`, {
    instrument: `instruments/${INSTR}`, mode: 'ON_SITE', payerOrganization: 'organizations/ecowater', time: '2027-05-03T02:00:00Z',
  });
  expect(found).toMatchObject({ payerClass: 'NON_MEMBER', rate: { price: { amountMinor: '12345' } } });
  await expect(page.getByTestId('lookup-result')).toContainText('Charged as: Non-member');
  await expect(page.getByTestId('lookup-price')).toContainText('123.45');
  // ... and for ZJU, the owner: no owner line, the service says so.
  await lf.locator('[name=payer]').selectOption('zju');
  await lf.getByRole('button', { name: 'Look up' }).click();
  await expect(lf.getByTestId('error')).toBeVisible();
  await lf.locator('[name=payer]').selectOption('ecowater');
  await lf.getByRole('button', { name: 'Look up' }).click();
  await expect(page.getByTestId('lookup-price')).toContainText('123.45');
  await shot(page, 'admin-rates');

  await page.setViewportSize({ width: 390, height: 844 });
  await expect(page.getByTestId('lookup-price')).toBeVisible();
  await shot(page, 'admin-rates-phone');
  await page.setViewportSize({ width: 1280, height: 860 });

  // Edit it (10 hours a day, technical service offered too), then send it
  // to maintenance.
  await page.goto(`${new URL(page.url()).origin}/#/admin/instruments?facility=zju-nano`);
  await page.getByTestId(`instrument-${INSTR}`).getByRole('button', { name: `Edit FTIR spectrometer ${stamp}` }).click();
  const ed = page.getByTestId('instrument-edit');
  await ed.locator('[name=dailyHours]').fill('10');
  await ed.locator('[name=mode-TECHNICAL_SERVICE]').check();
  await ed.getByRole('button', { name: 'Save changes' }).click();
  await expect(page.getByTestId('done')).toHaveText(`Instrument “FTIR spectrometer ${stamp}” saved.`);
  await expect(page.getByTestId(`instrument-${INSTR}`)).toContainText('On site, Joint research, Technical service');
  const edited = await api<{ dailyAvailableHours: number; modes: { mode: string }[] }>('admin', `${INV}/GetInstrument`, { name: `instruments/${INSTR}` });
  expect(edited.dailyAvailableHours).toBe(10);
  expect(edited.modes.map((m) => m.mode)).toEqual(['ON_SITE', 'JOINT_RESEARCH', 'TECHNICAL_SERVICE']);
  const sf = page.getByTestId('instrument-state');
  await sf.locator('[name=state]').selectOption({ label: 'Maintenance' });
  await sf.locator('[name=reason]').fill('detector replacement');
  await sf.getByRole('button', { name: 'Set state' }).click();
  await expect(page.getByTestId('done')).toHaveText(`“FTIR spectrometer ${stamp}” is now: Maintenance.`);
  await expect(page.getByTestId(`instrument-${INSTR}`).getByTestId('state')).toHaveText('Maintenance');
  expect((await api<{ state: string }>('admin', `${INV}/GetInstrument`, { name: `instruments/${INSTR}` })).state).toBe('MAINTENANCE');
  await shot(page, 'admin-instrument-edit');
});

test('the organisations in Chinese', async ({ page }) => {
  await signInAs(page, 'admin', '#/admin/organizations');
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('heading', { name: '成员单位' })).toBeVisible();
  await expect(page.getByTestId('org-ecowater').getByTestId('membership')).toHaveText('非成员');
  await shot(page, 'admin-organizations-zh');
  await page.goto(`${new URL(page.url()).origin}/#/admin/rates?instrument=sem-1&mode=ON_SITE`);
  await expect(page.getByRole('heading', { name: '收费标准' })).toBeVisible();
  await expect(page.getByTestId('rates').locator('tbody tr').first()).toContainText('场所共用');
  // Without a time in the route, the look-up starts at the platform's now (the demo clock), not the browser's.
  await expect(page.getByTestId('lookup-form').locator('[name=time]')).toHaveValue('2027-04-01T10:00');
  await shot(page, 'admin-rates-zh');
  await page.getByTestId('language').selectOption('en');
});

test('the auditor sees organisations read-only; the service refuses the auditor a registration', async ({ page }) => {
  await signInAs(page, 'auditor', '#/admin/organizations');
  await expect(page.getByTestId('org-zju')).toBeVisible();
  await expect(page.getByTestId('new-organization')).toHaveCount(0);
  await shot(page, 'admin-organizations-auditor');
  await expect(api('auditor', `${INV}/CreateOrganization`, {
    organizationId: `e2e-aud-${stamp}`, organization: { displayName: 'Not allowed', type: 'UNIVERSITY' }, requestId: `e2e-aud-${stamp}`,
  })).rejects.toThrow(/permission_denied/);
  // The instruments screen: no registration form for the auditor.
  await page.goto(`${new URL(page.url()).origin}/#/admin/instruments`);
  await expect(page.getByTestId('instrument-sem-1')).toBeVisible();
  await expect(page.getByTestId('instrument-form')).toHaveCount(0);
});
