// The consortium dashboard (area "dash"): the auditor opens March 2027 and
// sees the SEM's month exactly as the usage service computes it, on the
// dashboard and on the instrument's page; the annual report's CSV downloads
// with the same SEM line; the audit trail verifies. Read-only: nothing here
// changes the demo data (a verification run is appended to the audit trail).
import fs from 'node:fs';
import path from 'node:path';
import { expect, test, type Page } from '@playwright/test';
import { api, consoleUrl, shot, SHOTS, signInAs } from './fixtures';

// March 2027 in the consortium's reporting zone (Asia/Shanghai, UTC+8).
const MARCH = { startTime: '2027-02-28T16:00:00Z', endTime: '2027-03-31T16:00:00Z' };
const SEM = 'instruments/sem-1';

interface Ratio { defined?: boolean; basisPoints?: string }
interface Money { currencyCode?: string; amountMinor?: string }
interface Figures {
  effectiveSeconds?: string; externalSeconds?: string; availableSeconds?: string; bookings?: string; missedBookings?: string;
  utilization?: Ratio; sharingRate?: Ratio; serviceIncome?: Money; inKindContribution?: Money;
}

// The console's formatting in English (the browser's locale is en-GB, the
// console's language "en"): percentages from basis points with up to two
// decimals, money with its currency, seconds as hours.
const pct = (r: Ratio | undefined) =>
  r?.defined ? new Intl.NumberFormat('en', { style: 'percent', maximumFractionDigits: 2 }).format(Number(r.basisPoints ?? 0) / 10000) : 'n/a';
const cny = (m: Money | undefined) =>
  new Intl.NumberFormat('en', { style: 'currency', currency: m?.currencyCode || 'CNY', minimumFractionDigits: 2 })
    .format(Number(m?.amountMinor ?? 0) / 100);
const hrs = (s: string | undefined) => `${new Intl.NumberFormat('en', { maximumFractionDigits: 2 }).format(Number(s ?? 0) / 3600)} h`;

// Opens a dashboard view after signing in (sign-in returns to the hash).
async function open(page: Page, who: 'auditor' | 'admin', hash: string): Promise<void> {
  await signInAs(page, who, hash);
  if (!page.url().endsWith(hash)) await page.goto(`${consoleUrl()}/${hash}`);
}

async function chartDrawn(page: Page, testid: string): Promise<void> {
  const chart = page.getByTestId(testid);
  await expect(chart).toHaveAttribute('data-rendered', 'true');
  await expect(chart.locator('canvas').first()).toBeVisible();
}

async function semFigures(): Promise<Figures> {
  const r = await api<{ figures: Figures; computation: { timeZone: string } }>('auditor',
    'labshare.usage.v1.UsageService/GetUsageFigures', { range: MARCH, filter: { instruments: [SEM] } });
  expect(r.computation.timeZone).toBe('Asia/Shanghai');
  return r.figures;
}

test('the auditor sees the SEM month on the dashboard as the usage service computes it', async ({ page }) => {
  const f = await semFigures();
  // The demo month's known values (tests/e2e/expect_demo.sh).
  expect(f.effectiveSeconds).toBe('9000');
  expect(f.serviceIncome).toEqual({ currencyCode: 'CNY', amountMinor: '135000' });
  expect(f.bookings).toBe('3');

  await open(page, 'auditor', '#/dash?month=2027-03');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Consortium dashboard: March 2027');

  const row = page.getByTestId('row-sem-1');
  await expect(row.getByRole('link')).toHaveText('Field-emission SEM');
  await expect(row.getByTestId('utilization')).toHaveText(pct(f.utilization));
  await expect(row.getByTestId('utilization')).toHaveText('0.68%');
  await expect(row.getByTestId('income')).toHaveText(cny(f.serviceIncome));
  await expect(row.getByTestId('income')).toHaveText('CN¥1,350.00');
  await expect(row.getByTestId('effective')).toHaveText(hrs(f.effectiveSeconds));
  await expect(row.getByTestId('effective')).toHaveText('2.5 h');
  await expect(row.getByTestId('sharing')).toHaveText(pct(f.sharingRate));
  await expect(row.getByTestId('bookings')).toHaveText('3');

  // The month's totals are the service's too.
  const totals = await api<{ figures: Figures }>('auditor', 'labshare.usage.v1.UsageService/GetUsageFigures', { range: MARCH });
  await expect(page.getByTestId('kpi-income').locator('dd')).toHaveText(cny(totals.figures.serviceIncome));
  await expect(page.getByTestId('kpi-utilization').locator('dd')).toHaveText(pct(totals.figures.utilization));

  for (const c of ['chart-rates', 'chart-hours', 'chart-trend', 'chart-mode', 'chart-owner', 'chart-heatmap']) await chartDrawn(page, c);
  await shot(page, 'dash-overview');

  // The heat map of owners x users, and its table (keyboard: open the details).
  const matrix = await api<{ cells: { ownerOrganization: string; userOrganization: string; effectiveSeconds?: string; charged?: Money }[] }>(
    'auditor', 'labshare.usage.v1.UsageService/GetSharingMatrix', { range: MARCH });
  const zjuNano = matrix.cells.find((c) => c.ownerOrganization === 'organizations/zju' && c.userOrganization === 'organizations/nanocraft');
  expect(zjuNano).toBeTruthy();
  const section = page.getByTestId('matrix');
  await section.getByTestId('chart-heatmap').scrollIntoViewIfNeeded();
  await section.locator('summary').focus();
  await page.keyboard.press('Enter');
  const cell = section.locator('tbody tr', { hasText: 'NanoCraft' }).filter({ hasText: 'Zhejiang University' });
  await expect(cell).toContainText(hrs(zjuNano!.effectiveSeconds));
  await expect(cell).toContainText(cny(zjuNano!.charged));
  await section.scrollIntoViewIfNeeded();
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, 'dash-heatmap.png') });

  // The instrument's page, reached from the table, shows the same figures.
  await row.getByRole('link').click();
  await expect(page).toHaveURL(/#\/dash\/instruments\/sem-1\?month=2027-03$/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Field-emission SEM: March 2027');
  const fig = (k: string) => page.getByTestId(`fig-${k}`).locator('dd');
  await expect(fig('effective')).toHaveText(hrs(f.effectiveSeconds));
  await expect(fig('external')).toHaveText(hrs(f.externalSeconds));
  await expect(fig('available')).toHaveText(hrs(f.availableSeconds));
  await expect(fig('utilization')).toHaveText(pct(f.utilization));
  await expect(fig('sharing')).toHaveText(pct(f.sharingRate));
  await expect(fig('bookings')).toHaveText('3');
  await expect(fig('missed')).toHaveText(f.missedBookings ?? '0');
  await expect(fig('income')).toHaveText('CN¥1,350.00');
  await expect(fig('in-kind')).toHaveText(cny(f.inKindContribution));
  await chartDrawn(page, 'chart-days');
  await shot(page, 'dash-instrument');
});

test('the annual report downloads as CSV with the SEM line the service computes', async ({ page }) => {
  await open(page, 'auditor', '#/dash/annual?year=2027');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Annual report 2027');

  // The service's own row for the SEM (the report is paged).
  type Row = { instrument: string; figures: Figures };
  let semRow: Row | undefined;
  let token = '';
  do {
    const r = await api<{ instruments?: Row[]; nextPageToken?: string }>('auditor', 'labshare.usage.v1.UsageService/GetAnnualReport',
      { year: 2027, pageSize: 100, pageToken: token });
    semRow ??= r.instruments?.find((x) => x.instrument === SEM);
    token = r.nextPageToken ?? '';
  } while (token && !semRow);
  expect(semRow).toBeTruthy();
  const row = page.getByTestId('annual-row-sem-1');
  await expect(row.getByTestId('utilization')).toHaveText(pct(semRow!.figures.utilization));
  await expect(row.getByTestId('income')).toHaveText(cny(semRow!.figures.serviceIncome));
  await expect(row.getByTestId('effective')).toHaveText(hrs(semRow!.figures.effectiveSeconds));

  const download = page.waitForEvent('download');
  await page.getByTestId('csv').click();
  const d = await download;
  expect(d.suggestedFilename()).toBe('labshare-annual-report-2027.csv');
  const file = path.join(SHOTS, '..', 'dash-annual-2027.csv');
  await d.saveAs(file);
  await expect(page.getByTestId('csv-status')).toHaveClass(/notice/);

  const text = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  const lines = text.split('\r\n').filter((l) => l);
  const header = lines[0]!.split(',');
  const col = (name: string) => {
    const i = header.indexOf(name);
    expect(i, `column ${name}`).toBeGreaterThanOrEqual(0);
    return i;
  };
  // Instrument lines: no quoted commas before the figures in the demo data
  // (display names are quoted when needed: parse RFC 4180 fields).
  const parse = (l: string) => {
    const out: string[] = [];
    let cur = '';
    let q = false;
    for (let i = 0; i < l.length; i++) {
      const ch = l[i]!;
      if (q) {
        if (ch === '"' && l[i + 1] === '"') { cur += '"'; i++; } else if (ch === '"') q = false; else cur += ch;
      } else if (ch === '"') q = true; else if (ch === ',') { out.push(cur); cur = ''; } else cur += ch;
    }
    out.push(cur);
    return out;
  };
  const sem = lines.map(parse).find((c) => c[col('row_type')] === 'INSTRUMENT' && c[col('key')] === SEM);
  expect(sem, 'the SEM line of the CSV').toBeTruthy();
  // The year so far (other specs may add April bookings on the SEM): the
  // CSV's SEM line is the service's annual row, field for field.
  expect(sem![col('effective_seconds')]).toBe(semRow!.figures.effectiveSeconds ?? '0');
  expect(sem![col('external_seconds')]).toBe(semRow!.figures.externalSeconds ?? '0');
  expect(sem![col('service_income_minor')]).toBe(semRow!.figures.serviceIncome?.amountMinor ?? '0');
  expect(sem![col('bookings')]).toBe(semRow!.figures.bookings ?? '0');
  expect(sem![col('utilization_bp')]).toBe(semRow!.figures.utilization?.basisPoints ?? '');
  expect(sem![col('currency_code')]).toBe('CNY');
  // Categories in words (the CSV keeps the keys).
  await expect(page.getByTestId('sum-category')).toContainText('Electron microscopy');
  await expect(page.getByTestId('sum-category')).not.toContainText('electron-microscopy');
  await shot(page, 'dash-annual');
});

test('the auditor verifies the audit trail', async ({ page }) => {
  await open(page, 'auditor', '#/dash/audit');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Audit trail');
  await expect(page.getByTestId('entry').first()).toBeVisible();
  // Who: the user and the organisation's name (the resource names in the cell's title).
  await expect(page.getByTestId('actor').filter({ hasText: 'Provincial Metrology Institute' }).first()).toBeVisible();
  await expect(page.getByTestId('actor').filter({ hasText: 'organizations/' })).toHaveCount(0);
  await page.getByTestId('verify').click();
  await expect(page.getByTestId('verify-outcome')).toHaveText('VERIFIED: the audit trail is intact.');
  await expect(page.getByTestId('verify-result')).toContainText(/\d+ entries checked/);
  await expect(page.getByTestId('verify-break')).toHaveCount(0);
  await shot(page, 'dash-audit');
});

test('a lab user who opens the dashboard sees the service refuse it', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/');
  await expect(page.getByRole('link', { name: 'Dashboard' })).toHaveCount(0);
  await page.goto(`${consoleUrl()}/#/dash?month=2027-03`);
  await expect(page.getByTestId('error').first()).toBeVisible();
  await expect(page.getByTestId('error').first()).not.toBeEmpty();
  await expect(page.getByTestId('row-sem-1')).toHaveCount(0);
});

test('the dashboard at phone width and in Chinese', async ({ page }) => {
  const f = await semFigures();
  await page.setViewportSize({ width: 390, height: 844 });
  await open(page, 'admin', '#/dash?month=2027-03');
  await expect(page.getByTestId('row-sem-1').getByTestId('income')).toHaveText(cny(f.serviceIncome));
  for (const c of ['chart-rates', 'chart-trend', 'chart-heatmap']) await chartDrawn(page, c);
  // Nothing wider than the phone except inside scrolling tables.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await shot(page, 'dash-overview-390');

  await page.setViewportSize({ width: 1280, height: 860 });
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('联盟看板：2027年3月');
  await expect(page.getByTestId('row-sem-1').getByTestId('income')).toHaveText(
    new Intl.NumberFormat('zh-CN', { style: 'currency', currency: 'CNY', minimumFractionDigits: 2 }).format(1350));
  for (const c of ['chart-rates', 'chart-hours', 'chart-heatmap']) await chartDrawn(page, c);
  await shot(page, 'dash-overview-zh');
  await page.getByTestId('language').selectOption('en');
});
