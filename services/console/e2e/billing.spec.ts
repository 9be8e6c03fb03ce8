// Billing: NanoCraft's member billing admin (sun-mei) reads the March 2027
// invoices, opens NanoCraft's invoice and downloads it, then its statement,
// subsidies and settlement. Every figure shown is compared with what the
// billing service answers and with the demo month's known results
// (tests/e2e/expect_demo.sh, RESULT lines of the demo run).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test, type Page } from '@playwright/test';
import { api, consoleUrl, shot, signInAs } from './fixtures';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');
const BILLING = 'labshare.billing.v1.BillingService';
const PERIOD = '2027-03';
const NANOCRAFT = 'organizations/nanocraft';
const ZJU = 'organizations/zju';

interface Money { currencyCode: string; amountMinor?: string }
interface Line { lineNumber: number; kind: string; amount: Money; subsidyPool?: string; serviceInterval?: object }
interface Invoice {
  name: string; number: string; state: string; payerOrganization: string; amountDue: Money; lines: Line[];
  subsidyTotal?: Money;
}
interface Transfer { index?: number; fromOrganization: string; toOrganization: string; amount: Money; payment?: string }

// What the console's format.ts money() shows, in the page's language.
function money(m: Money, lang = 'en'): string {
  return new Intl.NumberFormat(lang, { style: 'currency', currency: m.currencyCode || 'CNY', minimumFractionDigits: 2 })
    .format(Number(m.amountMinor ?? '0') / 100);
}

// The demo's expected value (tests/e2e/expect_demo.sh) and the value of the
// run we test against (RESULT line of demo.out): they must agree.
function expected(key: string): string {
  const m = new RegExp(`^expect ${key} "?([^"\\n]*)"?$`, 'm').exec(fs.readFileSync(path.join(repo, 'tests', 'e2e', 'expect_demo.sh'), 'utf8'));
  if (!m?.[1]) throw new Error(`expect_demo.sh has no ${key}`);
  return m[1];
}
function result(key: string): string {
  const out = fs.readFileSync(path.join(process.env.LABSHARE_E2E_DATA ?? '', 'demo.out'), 'utf8');
  const m = new RegExp(`^RESULT ${key}=(.*)$`, 'm').exec(out);
  if (!m?.[1]) throw new Error(`demo.out has no RESULT ${key}`);
  return m[1];
}

async function open(page: Page, hash: string): Promise<void> {
  await page.goto(`${consoleUrl()}/${hash}`);
}

test('NanoCraft’s billing admin sees the March invoice, its lines and downloads, statement, subsidies and settlement', async ({ page }) => {
  // ---- the service's answer and the demo's known value
  const listed = await api<{ invoices: Invoice[] }>('sun-mei', `${BILLING}/ListInvoices`, { period: PERIOD, payerOrganization: NANOCRAFT });
  expect(listed.invoices).toHaveLength(1);
  const inv = listed.invoices[0]!;
  expect(inv.amountDue.amountMinor).toBe(expected('invoice_nanocraft'));
  expect(inv.amountDue.amountMinor).toBe(result('invoice_nanocraft'));
  expect(inv.amountDue.currencyCode).toBe('CNY');
  const total = money(inv.amountDue);
  expect(total).toBe('CN¥117,875.00');

  // ---- the invoices of March 2027
  await signInAs(page, 'sun-mei', `#/billing/invoices?period=${PERIOD}`);
  const toPay = page.getByTestId('invoices-to-pay');
  const row = toPay.getByTestId('invoice-row').filter({ hasText: inv.number });
  await expect(row).toHaveCount(1);
  await expect(row.getByTestId('amount-due')).toHaveText(total);
  await expect(row.getByTestId('status')).toHaveText('Paid');
  // ZJU's invoice owes NanoCraft its lease deposit back: listed apart.
  await expect(page.getByTestId('invoices-owed').getByTestId('amount-due')).toHaveText(money({ currencyCode: 'CNY', amountMinor: result('invoice_zju') }));
  await shot(page, 'billing-invoices');

  // ---- the invoice and its lines
  await row.getByRole('link', { name: inv.number }).click();
  await expect(page.getByTestId('invoice-number')).toContainText(inv.number);
  await expect(page.getByTestId('invoice-total')).toHaveText(total);
  const lines = page.getByTestId('invoice-line');
  await expect(lines).toHaveCount(inv.lines.length);
  // Line 1: 2 h of on-site SEM time at 480.00 per hour, booked; line 2 its
  // voucher. The lease deposit has no service time: it comes after every
  // line that has one (InvoiceLine.line_number).
  const usage = lines.nth(0);
  await expect(usage).toContainText('Instrument time · On site');
  await expect(usage).toContainText('2 h');
  await expect(usage).toContainText('CN¥480.00 per hour');
  await expect(usage).toContainText('CN¥960.00');
  await expect(usage).toContainText(/Booking \S+/);
  await expect(usage).toContainText(/CST|GMT\+8/);
  await expect(lines.nth(1)).toContainText('Subsidy · paid by');
  await expect(lines.nth(1)).toContainText('-CN¥480.00');
  const depositLine = lines.filter({ hasText: 'Lease deposit · Lease' });
  await expect(depositLine).toHaveCount(1);
  await expect(depositLine).toContainText(/Lease \S+/);
  const depositNumber = Number(await depositLine.locator('td').first().innerText());
  const lastTimed = inv.lines.filter((l) => l.serviceInterval !== undefined).length;
  expect(depositNumber).toBeGreaterThan(lastTimed);
  await expect(page.getByTestId('lines-total')).toContainText(total);
  await shot(page, 'billing-invoice');

  // ---- downloads: CSV built in the browser from the lines, and JSON
  const [csvDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-csv').click()]);
  expect(csvDownload.suggestedFilename()).toBe(`${inv.number}.csv`);
  const csv = fs.readFileSync((await csvDownload.path())!, 'utf8').replace(/^\ufeff/, '').split('\r\n');
  const totalLine = csv.find((l) => l.startsWith('Amount due,'));
  expect(totalLine).toBeDefined();
  expect(totalLine!.split(',').slice(-2)).toEqual(['117875.00', 'CNY']);
  // One row per invoice line, between the column headings and the totals.
  const header = csv.findIndex((l) => l.startsWith('#,'));
  expect(csv.slice(header + 1, header + 1 + inv.lines.length).every((l) => /^\d+,/.test(l))).toBe(true);
  expect(csv[header + 1 + inv.lines.length]).toBe('');
  const [jsonDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-json').click()]);
  expect(jsonDownload.suggestedFilename()).toBe(`${inv.number}.json`);
  const json = JSON.parse(fs.readFileSync((await jsonDownload.path())!, 'utf8')) as Invoice;
  expect(json.amountDue.amountMinor).toBe(inv.amountDue.amountMinor);
  expect(json.lines).toHaveLength(inv.lines.length);

  // ---- the issued document from billing (GetInvoiceDocument through the
  // gateway's /documents route): a PDF with the fapiao details copied at
  // issue, read back with pdftotext (poppler-utils).
  const [pdfDownload] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-pdf').click()]);
  expect(pdfDownload.suggestedFilename()).toBe(`${inv.number}.pdf`);
  const pdfPath = (await pdfDownload.path())!;
  expect(fs.readFileSync(pdfPath).subarray(0, 5).toString('latin1')).toBe('%PDF-');
  const pdfText = execFileSync('pdftotext', ['-enc', 'UTF-8', '-layout', pdfPath, '-'], { encoding: 'utf8' });
  expect(pdfText).toContain(inv.number);
  expect(pdfText).toContain('纳米工坊材料科技（杭州）有限公司');
  expect(pdfText).toContain('117875.00 CNY');
  const [docCsv] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-document-csv').click()]);
  expect(docCsv.suggestedFilename()).toBe(`${inv.number}.csv`);
  expect(fs.readFileSync((await docCsv.path())!, 'utf8').split('\r\n')).toContain('total,amount_due,117875.00,,,,,,,,,,,CNY');

  // ---- a refused download shows its reason on the page (here billing
  // answering DOCUMENT_RENDER_FAILED, as it does without a CJK font), and no
  // file is saved. The answer is the gateway's Connect error body.
  const errorInfo = (reason: string, domain: string) => {
    const r = Buffer.from(reason);
    const d = Buffer.from(domain);
    return Buffer.concat([Buffer.from([0x0a, r.length]), r, Buffer.from([0x12, d.length]), d]).toString('base64');
  };
  await page.route('**/documents/invoices/*.pdf', (route) => route.fulfill({
    status: 503,
    contentType: 'application/json',
    body: JSON.stringify({
      code: 'unavailable',
      message: 'the invoice document could not be rendered',
      details: [{ type: 'google.rpc.ErrorInfo', value: errorInfo('DOCUMENT_RENDER_FAILED', 'billing.labshare') }],
    }),
  }));
  let saved = false;
  const onDownload = () => { saved = true; };
  page.on('download', onDownload);
  await page.getByTestId('download-pdf').click();
  await expect(page.getByTestId('error')).toContainText('The invoice document could not be produced right now.');
  await expect(page.getByTestId('download-pdf')).toBeEnabled();
  await shot(page, 'billing-invoice-document-refused');
  page.off('download', onDownload);
  expect(saved).toBe(false);
  await page.unroute('**/documents/invoices/*.pdf');
  const [again] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-pdf').click()]);
  expect(again.suggestedFilename()).toBe(`${inv.number}.pdf`);
  await expect(page.getByTestId('error')).toHaveCount(0);

  // ---- at phone width
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(page.getByTestId('invoice-total')).toBeVisible();
  await shot(page, 'billing-invoice-390');
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---- the statement of March, balances, payments, deposits
  const statement = await api<{ closingBalance: Money }>('sun-mei', `${BILLING}/GetOrganizationStatement`, {
    organization: NANOCRAFT,
    interval: { startTime: '2027-03-01T00:00:00+08:00', endTime: '2027-04-01T00:00:00+08:00' },
  });
  await page.getByRole('link', { name: 'Statement' }).click();
  await expect(page).toHaveURL(/#\/billing\/statement\?period=2027-03/);
  await expect(page.getByTestId('closing-balance')).toHaveText(money(statement.closingBalance));
  await expect(page.getByTestId('statement-lines').locator('tbody tr')).not.toHaveCount(0);
  // The AFM deposit: lodged with ZJU and returned in full.
  const deposit = page.getByTestId('deposit-row');
  await expect(deposit).toHaveCount(1);
  await expect(deposit).toContainText('CN¥110,000.00');
  await expect(deposit).toContainText('Returned in full');
  // The settlement transfer NanoCraft paid ZJU.
  const [, , , transferMinor] = result('transfers').split(';').map((t) => t.split(' ')).find((t) => t[1] === NANOCRAFT)!;
  const transfer = money({ currencyCode: 'CNY', amountMinor: transferMinor });
  expect(transfer).toBe('CN¥7,875.00');
  await expect(page.getByTestId('payment-row').filter({ hasText: transfer })).toContainText('Paid');
  await shot(page, 'billing-statement');

  // ---- subsidies: the SME voucher, and what NanoCraft used of it in March
  const pools = await api<{ subsidyPools: { name: string; displayName: string }[] }>('sun-mei', `${BILLING}/ListSubsidyPools`, {});
  expect(pools.subsidyPools.length).toBeGreaterThan(0);
  await page.getByRole('link', { name: 'Subsidies' }).click();
  await expect(page).toHaveURL(/#\/billing\/subsidies\?period=2027-03/);
  await expect(page.getByTestId('pool')).toHaveCount(pools.subsidyPools.length);
  const voucher = pools.subsidyPools.find((p) => p.name === 'subsidyPools/sme-voucher')!;
  const allowance = await api<{ eligible?: boolean; used?: Money; remaining?: Money; cap?: Money }>('sun-mei',
    `${BILLING}/GetSubsidyAllowance`, { name: `${voucher.name}/allowances/nanocraft`, time: '2027-03-01T12:00:00+08:00' });
  const card = page.locator(`[data-testid=pool][data-pool="${voucher.name}"]`);
  await expect(card.getByTestId('eligible')).toHaveText(allowance.eligible ? 'Eligible' : 'Not eligible');
  await expect(card.getByTestId('remaining')).toHaveText(money(allowance.remaining ?? { currencyCode: 'CNY' }));
  await expect(card.getByTestId('used')).toContainText(money(allowance.used ?? { currencyCode: 'CNY' }));
  // The voucher paid 7875.00 of NanoCraft's March invoice (a negative total on the invoice).
  expect(inv.subsidyTotal?.amountMinor).toBe('-787500');
  await expect(page.getByTestId('subsidy-received')).toContainText(': CN¥7,875.00');
  await shot(page, 'billing-subsidies');

  // ---- the settlement: NanoCraft owes ZJU the net transfer, paid
  const settlements = await api<{ settlements: { state: string; transfers: Transfer[] }[] }>('sun-mei',
    `${BILLING}/ListSettlements`, { period: PERIOD });
  const cleared = settlements.settlements.find((s) => s.state === 'CLEARED')!;
  expect(cleared.state).toBe(result('settlement_state'));
  const mine = cleared.transfers.find((t) => t.fromOrganization === NANOCRAFT && t.toOrganization === ZJU)!;
  expect(mine.amount.amountMinor).toBe(transferMinor);
  await page.getByRole('link', { name: 'Settlements' }).click();
  await expect(page).toHaveURL(/#\/billing\/settlements\?period=2027-03/);
  const settlement = page.getByTestId('settlement');
  await expect(settlement.getByTestId('status').first()).toHaveText('Cleared');
  const owe = settlement.getByTestId('you-owe');
  await expect(owe.getByRole('heading')).toHaveText('You owe');
  await expect(owe.getByTestId('transfer')).toHaveCount(1);
  await expect(owe.getByTestId('transfer')).toContainText('Zhejiang');
  await expect(owe.getByTestId('transfer-amount')).toHaveText(transfer);
  await expect(owe.getByTestId('transfer-paid')).toHaveText('Paid');
  await expect(settlement.getByTestId('owed-to-you').getByTestId('owed-none')).toBeVisible();
  await expect(settlement.getByTestId('net')).toHaveText(money({ currencyCode: 'CNY', amountMinor: `-${transferMinor}` }));
  await shot(page, 'billing-settlements');
  await page.setViewportSize({ width: 390, height: 844 });
  await expect(owe.getByTestId('transfer-amount')).toBeVisible();
  await shot(page, 'billing-settlements-390');
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---- in Chinese
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(owe.getByRole('heading')).toHaveText('您需支付');
  await expect(owe.getByTestId('transfer-amount')).toHaveText(money(mine.amount, 'zh-CN'));
  await shot(page, 'billing-settlements-zh');
  await open(page, `#/billing/invoices?period=${PERIOD}`);
  await expect(page.getByTestId('invoices-to-pay').getByTestId('amount-due')).toHaveText(money(inv.amountDue, 'zh-CN'));
  await expect(page.getByTestId('invoices-to-pay').getByTestId('status')).toHaveText('已付清');
  await shot(page, 'billing-invoices-zh');
});

test('a member billing admin is refused another organisation’s invoice, with the reason shown', async ({ page }) => {
  const all = await api<{ invoices: Invoice[] }>('admin', `${BILLING}/ListInvoices`, { period: PERIOD });
  const biotek = all.invoices.find((i) => i.payerOrganization === 'organizations/biotek')!;
  expect(biotek.amountDue.amountMinor).toBe(result('invoice_biotek'));
  await signInAs(page, 'sun-mei', `#/billing/invoices/${biotek.name.split('/')[1]}`);
  await expect(page.getByTestId('error')).toBeVisible();
  // PERMISSION_DENIED ORGANIZATION_SCOPE, as a sentence.
  await expect(page.getByTestId('error')).toContainText('You can do this only for your own organisation.');
  await expect(page.getByTestId('invoice-total')).toHaveCount(0);
  await shot(page, 'billing-invoice-refused');
});

test('NanoCraft’s billing admin sees its fapiao details; a mistyped taxpayer id is refused with the reason', async ({ page }) => {
  await signInAs(page, 'sun-mei', '#/billing/invoicing');
  await expect(page.getByTestId('invoicing-legalName')).toHaveValue('纳米工坊材料科技（杭州）有限公司');
  await expect(page.getByTestId('invoicing-taxpayerId')).toHaveValue('91330110MA2H3K5L7B');
  await expect(page.getByTestId('invoicing-bankAccount')).toHaveValue('1202 0215 0910 0123 456');
  await shot(page, 'billing-invoicing');
  // The last character mistyped: INVALID_TAXPAYER_ID, nothing saved.
  await page.getByTestId('invoicing-taxpayerId').fill('91330110MA2H3K5L7C');
  await page.getByTestId('invoicing-form').getByRole('button').click();
  await expect(page.getByTestId('error')).toContainText('The taxpayer ID is not a valid 18-character unified social credit code.');
  const org = await api<{ invoicingDetails?: { taxpayerId: string } }>('sun-mei', 'labshare.inventory.v1.InventoryService/GetOrganization', { name: NANOCRAFT });
  expect(org.invoicingDetails?.taxpayerId).toBe('91330110MA2H3K5L7B');
  await shot(page, 'billing-invoicing-refused');
});

test('the consortium admin sees every organisation’s invoices and chooses one', async ({ page }) => {
  const all = await api<{ invoices: Invoice[] }>('admin', `${BILLING}/ListInvoices`, { period: PERIOD });
  const biotek = all.invoices.find((i) => i.payerOrganization === 'organizations/biotek')!;
  await signInAs(page, 'admin', `#/billing/invoices?period=${PERIOD}&org=-`);
  await expect(page.getByTestId('invoice-row')).toHaveCount(all.invoices.length);
  await page.getByTestId('billing-org').selectOption('biotek');
  await expect(page).toHaveURL(/org=biotek/);
  await expect(page.getByTestId('invoices-to-pay').getByTestId('amount-due')).toHaveText(money(biotek.amountDue));
  await shot(page, 'billing-invoices-admin');

  // Issuing March again is refused (already issued), and so is a second
  // settlement of March (everything is settled): the refusal is shown, nothing changes.
  await page.getByTestId('billing-org').selectOption('nanocraft');
  await page.getByRole('combobox', { name: 'Payer' }).selectOption('organizations/nanocraft');
  await page.getByRole('button', { name: 'Issue invoice (March 2027)' }).click();
  await expect(page.getByTestId('error')).toContainText('An invoice for this organisation, period and currency has already been issued.');
  await page.getByRole('link', { name: 'Settlements' }).click();
  await page.getByRole('button', { name: 'Compute settlement of March 2027' }).click();
  await expect(page.getByTestId('error')).toContainText('there is nothing to settle');
  await expect(page.getByTestId('settlement')).toHaveCount(1);
  await expect(page.getByTestId('settlement')).toHaveAttribute('data-state', 'CLEARED');
  await shot(page, 'billing-settlements-admin');
});
