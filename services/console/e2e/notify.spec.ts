// Notifications (labshare-notify, issue 16) through the console, against the
// real platform after the demo month: a lab user's mail settings and calendar
// feeds (the secret address served by the gateway, rotated and revoked), the
// unsubscribe link of a mail the demo month sent (confirmation page, then
// the one-click POST), a billing admin's webhooks (secret shown once,
// disable/enable, new secret, delete), and the undelivered mail of staff
// and the consortium admin. Every change is checked against what the
// service answers through the HTTP API.
// Runs once labshare-notify is built and run-local.sh starts it (skipped
// before: the binary is not in the build directory).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test, type Page } from '@playwright/test';
import { api, consoleUrl, PEOPLE, shot, signInAs, type Person } from './fixtures';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..', '..');
const NOTIFY = 'labshare.notify.v1.NotificationService';
const FEEDS = 'labshare.notify.v1.CalendarFeedService';
const WEBHOOKS = 'labshare.notify.v1.WebhookService';
const bin = path.join(process.env.LABSHARE_BUILD_DIR ?? path.join(repo, 'build-test'), 'bin', 'labshare-notify');

test.skip(!fs.existsSync(bin), `labshare-notify is not built (${bin}): nothing to test until it is merged`);

interface Settings { name: string; language?: string; timeZone?: string; delivery?: string; disabledKinds?: string[]; etag?: string }
interface Feed { name: string; kind: string; instrument?: string; displayName?: string; showsDetails?: boolean; secretUrl?: string }
interface Webhook { name: string; url: string; state: string; disabledReason?: string; eventTypes: string[]; etag: string }

async function open(page: Page, hash: string): Promise<void> {
  await page.goto(`${consoleUrl()}/${hash}`);
}

const navLink = (page: Page, name: string) => page.getByRole('navigation', { name: 'main' }).getByRole('link', { name, exact: true });

test('each role finds its notification screens in the navigation', async ({ browser }) => {
  const expected: [Person, string[], string[]][] = [
    ['li-wei', ['Notifications', 'Calendar feeds'], ['Webhooks', 'Undelivered mail']],
    ['sun-mei', ['Notifications', 'Calendar feeds', 'Webhooks'], ['Undelivered mail']],
    ['zhao-lei', ['Notifications', 'Calendar feeds', 'Undelivered mail'], ['Webhooks']],
    ['admin', ['Notifications', 'Calendar feeds', 'Webhooks', 'Undelivered mail'], []],
  ];
  for (const [who, shown, hidden] of expected) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await signInAs(page, who);
    for (const name of shown) await expect(navLink(page, name)).toBeVisible();
    for (const name of hidden) await expect(navLink(page, name)).toHaveCount(0);
    await context.close();
  }
});

test('a lab user turns off reminders, takes a daily digest in Chinese; legal notices stay on', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/settings/notifications');
  const form = page.getByTestId('notify-settings');
  await expect(form).toBeVisible();
  // Legal notices: ticked and cannot be unticked.
  for (const k of ['INVOICE_ISSUED', 'PAYMENT_RECEIVED', 'SETTLEMENT_TRANSFERS_DUE', 'WEBHOOK_DISABLED']) {
    const box = page.getByTestId(`notify-kind-${k}`).getByRole('checkbox');
    await expect(box).toBeChecked();
    await expect(box).toBeDisabled();
  }
  await shot(page, 'notify-settings');
  // By keyboard: focus the reminder's box and untick it with Space.
  const reminder = page.getByTestId('notify-kind-BOOKING_REMINDER').getByRole('checkbox');
  if (!(await reminder.isChecked())) await reminder.check();
  await reminder.focus();
  await page.keyboard.press('Space');
  await expect(reminder).not.toBeChecked();
  await page.getByTestId('notify-delivery-DAILY_DIGEST').check();
  await page.getByTestId('notify-language').selectOption('zh-CN');
  await page.getByTestId('notify-zone').selectOption('Asia/Shanghai');
  await page.getByTestId('notify-save').click();
  await expect(page.getByTestId('notify-status')).toHaveText('Your notification settings are saved.');
  await expect(page.getByTestId('notify-changed')).toContainText('Last changed');

  const s = await api<Settings>('li-wei', `${NOTIFY}/GetNotificationSettings`, { name: 'users/li-wei/notificationSettings' });
  expect(s.language).toBe('zh-CN');
  expect(s.timeZone).toBe('Asia/Shanghai');
  expect(s.delivery).toBe('DAILY_DIGEST');
  expect(s.disabledKinds).toContain('BOOKING_REMINDER');
  expect(s.disabledKinds ?? []).not.toContain('INVOICE_ISSUED');

  // Reloaded, the page shows what the service keeps; in Chinese too.
  await page.reload();
  await expect(page.getByTestId('notify-kind-BOOKING_REMINDER').getByRole('checkbox')).not.toBeChecked();
  await expect(page.getByTestId('notify-delivery-DAILY_DIGEST')).toBeChecked();
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('通知设置');
  await expect(page.getByTestId('notify-kind-INVOICE_ISSUED')).toContainText('总会发送（法定通知）');
  await shot(page, 'notify-settings-zh');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, 'notify-settings-phone');
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.getByTestId('language').selectOption('en');
});

test('a lab user creates a calendar feed, the gateway serves it; a new address replaces it; revoked it is gone', async ({ page, request }) => {
  // Leftovers of an earlier run against the same platform go first.
  for (const f of (await api<{ calendarFeeds?: Feed[] }>('li-wei', `${FEEDS}/ListCalendarFeeds`, { parent: 'users/li-wei' })).calendarFeeds ?? []) {
    if (f.displayName === 'LabShare e2e' || f.displayName === 'SEM busy') {
      await api('li-wei', `${FEEDS}/DeleteCalendarFeed`, { name: f.name, requestId: crypto.randomUUID() });
    }
  }
  await signInAs(page, 'li-wei', '#/settings/feeds');
  await page.getByTestId('feed-kind-USER').check();
  await page.getByTestId('feed-display-name').fill('LabShare e2e');
  await page.getByTestId('feed-create').click();
  await expect(page.getByTestId('feed-status')).toHaveText('The feed “LabShare e2e” is created.');
  const url1 = await page.getByTestId('feed-secret-value').inputValue();
  const m1 = new RegExp(`^${consoleUrl().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/feeds/([A-Za-z0-9_-]{43})\\.ics$`).exec(url1);
  expect(m1, `the secret address ${url1}`).not.toBeNull();
  await shot(page, 'notify-feeds-created');

  const ics = await request.get(url1);
  expect(ics.status()).toBe(200);
  expect(ics.headers()['content-type']).toBe('text/calendar; charset=utf-8');
  expect(ics.headers()['cache-control']).toBe('private, no-cache');
  const body = await ics.text();
  expect(body.startsWith('BEGIN:VCALENDAR\r\n')).toBe(true);
  expect(body).toContain('X-WR-CALNAME:LabShare e2e');
  expect(body.trimEnd().endsWith('END:VCALENDAR')).toBe(true);
  // The ETag revalidates.
  const etag = ics.headers()['etag'];
  expect(etag).toMatch(/^"[0-9a-f]{64}"$/);
  expect((await request.get(url1, { headers: { 'if-none-match': etag! } })).status()).toBe(304);

  // The list (never the address again), as the service has it.
  const listed = await api<{ calendarFeeds: Feed[] }>('li-wei', `${FEEDS}/ListCalendarFeeds`, { parent: 'users/li-wei' });
  const feed = listed.calendarFeeds.find((f) => f.displayName === 'LabShare e2e')!;
  expect(feed.kind).toBe('USER');
  expect(feed.secretUrl ?? '').toBe('');
  const row = page.getByTestId(`feed-${feed.name.split('/').pop()}`);
  await expect(row).toContainText('My bookings, leases and service runs');

  // A new address: the old one answers 404 from now on, the new one the calendar.
  await row.getByRole('button', { name: 'New address for LabShare e2e' }).click();
  await page.getByTestId('feed-confirm-rotate').click();
  await expect(page.getByTestId('feed-done')).toHaveText('The feed “LabShare e2e” has a new address; the old one no longer works.');
  const url2 = await page.getByTestId('feed-secret-value').inputValue();
  expect(url2).not.toBe(url1);
  expect((await request.get(url1)).status()).toBe(404);
  expect(await (await request.get(url1)).text()).toBe('not found\n');
  expect((await request.get(url2)).status()).toBe(200);

  // An instrument's feed: busy time only for someone outside its owner.
  await page.getByTestId('feed-kind-INSTRUMENT').check();
  await page.getByTestId('feed-create').click();
  await expect(page.getByTestId('error')).toHaveText('Choose the instrument of the feed.');
  await page.getByTestId('feed-instrument').selectOption('instruments/sem-1');
  await page.getByTestId('feed-display-name').fill('SEM busy');
  await page.getByTestId('feed-create').click();
  await expect(page.getByTestId('feed-status')).toHaveText('The feed “SEM busy” is created.');
  const sem = (await api<{ calendarFeeds: Feed[] }>('li-wei', `${FEEDS}/ListCalendarFeeds`, { parent: 'users/li-wei' }))
    .calendarFeeds.find((f) => f.displayName === 'SEM busy')!;
  expect(sem.instrument).toBe('instruments/sem-1');
  await expect(page.getByTestId(`feed-${sem.name.split('/').pop()}`)).toContainText(sem.showsDetails ? 'who, for whom and what' : 'busy time only');
  await shot(page, 'notify-feeds');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('日历订阅');
  // The success line follows the language too (it was worded once, in English).
  await expect(page.getByTestId('feed-status')).toHaveText('订阅“SEM busy”已创建。');
  await shot(page, 'notify-feeds-phone-zh');
  await page.getByTestId('language').selectOption('en');
  await page.setViewportSize({ width: 1280, height: 860 });

  // Revoked: gone from the list, its address answers 404.
  for (const [name, url] of [['LabShare e2e', url2], ['SEM busy', await page.getByTestId('feed-secret-value').inputValue()]] as const) {
    await page.getByRole('button', { name: `Revoke ${name}` }).click();
    await page.getByTestId('feed-confirm-revoke').click();
    await expect(page.getByTestId('feed-done')).toHaveText(`The feed “${name}” is revoked; its address no longer works.`);
    expect((await request.get(url)).status()).toBe(404);
  }
  const after = await api<{ calendarFeeds?: Feed[] }>('li-wei', `${FEEDS}/ListCalendarFeeds`, { parent: 'users/li-wei' });
  expect((after.calendarFeeds ?? []).filter((f) => f.displayName === 'LabShare e2e' || f.displayName === 'SEM busy')).toHaveLength(0);
});

// The unsubscribe link of a mail the demo month sent (the development SMTP
// sink keeps each as DATA/mail/*.eml).
function unsubscribeLinks(): string[] {
  const dir = path.join(process.env.LABSHARE_E2E_DATA ?? '', 'mail');
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.eml')) {
        const head = fs.readFileSync(p, 'utf8').split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, ' ');
        const m = /^List-Unsubscribe:\s*<([^>]+)>/im.exec(head);
        if (m?.[1]) out.push(m[1]);
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
}

test('the unsubscribe link of a demo mail: a confirmation page, then one click turns that kind off', async ({ page, request }) => {
  const links = unsubscribeLinks();
  expect(links.length, 'the demo month mailed something with an unsubscribe link').toBeGreaterThan(0);
  const link = new URL(links[0]!);
  expect(link.origin).toBe(new URL(consoleUrl()).origin);
  expect(link.pathname).toBe('/unsubscribe');
  const token = link.searchParams.get('token')!;
  // What the link turns off, and for whom (validate only changes nothing).
  const what = await api<{ user: string; kind: string }>('admin', `${NOTIFY}/Unsubscribe`, { token, validateOnly: true });
  const before = await api<Settings>('admin', `${NOTIFY}/GetNotificationSettings`, { name: `${what.user}/notificationSettings` });
  const wasOff = (before.disabledKinds ?? []).includes(what.kind);

  // A browser without any session opens the link: a page, no script.
  await page.goto(link.href);
  await expect(page.getByRole('heading', { level: 1 })).toContainText('Stop mails about');
  expect(await page.locator('script').count()).toBe(0);
  const still = await api<Settings>('admin', `${NOTIFY}/GetNotificationSettings`, { name: `${what.user}/notificationSettings` });
  expect(still.disabledKinds ?? []).toEqual(before.disabledKinds ?? []);
  await shot(page, 'notify-unsubscribe');
  await page.getByRole('button', { name: 'Unsubscribe' }).click();
  await expect(page.getByRole('heading', { level: 1 })).toContainText(wasOff ? 'were already turned off' : 'Done: you will no longer get mails about');
  await shot(page, 'notify-unsubscribed');
  const now = await api<Settings>('admin', `${NOTIFY}/GetNotificationSettings`, { name: `${what.user}/notificationSettings` });
  expect(now.disabledKinds).toContain(what.kind);

  // RFC 8058: the mail client's POST, no cookie, no CSRF token: same answer.
  const oneClick = await request.post(link.href, { form: { 'List-Unsubscribe': 'One-Click' } });
  expect(oneClick.status()).toBe(200);
  // Anything else in the body changes nothing and is refused.
  expect((await request.post(link.href, { form: { 'List-Unsubscribe': 'Everything' } })).status()).toBe(400);
  // A forged token: 404 page.
  const forged = await request.get(`${consoleUrl()}/unsubscribe?token=${token.split('.')[0]}.${'0'.repeat(64)}`);
  expect(forged.status()).toBe(404);
});

test('NanoCraft’s billing admin registers a webhook: secret shown once, disable and enable, new secret, delete', async ({ page }) => {
  const org = `organizations/${PEOPLE['sun-mei'].org}`;
  await signInAs(page, 'sun-mei', '#/billing/webhooks');
  const form = page.getByTestId('webhook-new');
  await page.getByTestId('webhook-create').click();
  await expect(form.getByTestId('error')).toHaveText('Enter the endpoint’s address, starting with https://.');
  await page.getByTestId('webhook-url').fill('https://erp.nanocraft.example/labshare/events');
  await page.getByTestId('webhook-description').fill('ERP (e2e)');
  await page.getByTestId('webhook-group-billing').getByRole('button', { name: 'Select all: Charges, invoices, payments, settlements' }).click();
  await page.getByTestId('webhook-group-booking').getByRole('checkbox', { name: 'BookingConfirmed' }).check();
  await page.getByTestId('webhook-create').click();
  await expect(page.getByTestId('webhook-status')).toHaveText('The webhook is registered.');
  const secret = await page.getByTestId('webhook-secret-value').inputValue();
  expect(secret).toMatch(/^whsec_[0-9a-f]{64}$/);
  await shot(page, 'notify-webhooks');

  const listed = await api<{ webhooks: Webhook[] }>('sun-mei', `${WEBHOOKS}/ListWebhooks`, { parent: org });
  const wh = listed.webhooks.find((w) => w.url === 'https://erp.nanocraft.example/labshare/events')!;
  expect(wh.state).toBe('ENABLED');
  expect([...wh.eventTypes].sort()).toEqual([
    'labshare.billing.v1.ChargePosted', 'labshare.billing.v1.CorrectionPosted', 'labshare.billing.v1.DepositChanged',
    'labshare.billing.v1.InvoiceIssued', 'labshare.billing.v1.InvoicePaid', 'labshare.billing.v1.InvoiceVoided',
    'labshare.billing.v1.PaymentRecorded', 'labshare.billing.v1.SettlementCleared', 'labshare.billing.v1.SettlementComputed',
    'labshare.billing.v1.SubsidyApplied', 'labshare.booking.v1.BookingConfirmed',
  ]);
  const id = wh.name.split('/').pop()!;
  const row = page.getByTestId(`webhook-${id}`);
  await expect(row).toContainText('11 events');
  await expect(row.getByTestId('webhook-state')).toHaveText('Enabled');

  await row.getByRole('link', { name: 'Deliveries and settings of https://erp.nanocraft.example/labshare/events' }).click();
  await expect(page.getByTestId('webhook-facts')).toContainText('sun-mei');
  await page.getByTestId('webhook-disable').click();
  await expect(page.getByTestId('webhook-status')).toHaveText('The webhook is disabled: nothing is sent until it is enabled again.');
  await expect(page.getByTestId('webhook-facts').getByTestId('webhook-state')).toHaveText('Disabled');
  await expect(page.getByTestId('webhook-facts')).toContainText('by an administrator');
  const off = await api<Webhook>('sun-mei', `${WEBHOOKS}/GetWebhook`, { name: wh.name });
  expect([off.state, off.disabledReason]).toEqual(['DISABLED', 'BY_ADMIN']);
  await page.getByTestId('webhook-enable').click();
  await expect(page.getByTestId('webhook-status')).toHaveText('The webhook is enabled again.');
  expect((await api<Webhook>('sun-mei', `${WEBHOOKS}/GetWebhook`, { name: wh.name })).state).toBe('ENABLED');

  await page.getByTestId('webhook-rotate').click();
  await page.getByTestId('webhook-confirm-rotate').click();
  await expect(page.getByTestId('webhook-status')).toHaveText('The webhook has a new secret.');
  const secret2 = await page.getByTestId('webhook-secret-value').inputValue();
  expect(secret2).toMatch(/^whsec_[0-9a-f]{64}$/);
  expect(secret2).not.toBe(secret);

  // Deliveries: the dead letters (none yet) and all.
  await page.getByTestId('delivery-filter').selectOption('DEAD');
  await expect(page).toHaveURL(/show=DEAD/);
  const dead = await api<{ deliveries?: unknown[] }>('sun-mei', `${WEBHOOKS}/ListWebhookDeliveries`, { parent: wh.name, states: ['DEAD'] });
  if ((dead.deliveries ?? []).length === 0) await expect(page.getByTestId('deliveries-empty')).toBeVisible();
  else await expect(page.getByTestId('deliveries').locator('tbody tr')).toHaveCount(dead.deliveries!.length);
  await shot(page, 'notify-webhook');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, 'notify-webhook-phone');
  await page.setViewportSize({ width: 1280, height: 860 });

  await page.getByTestId('webhook-delete').click();
  await page.getByTestId('webhook-confirm-delete').click();
  await expect(page.getByTestId('webhook-status')).toHaveText('The webhook is deleted.');
  const gone = await api<{ webhooks?: Webhook[] }>('sun-mei', `${WEBHOOKS}/ListWebhooks`, { parent: org });
  expect((gone.webhooks ?? []).map((w) => w.name)).not.toContain(wh.name);

  // A webhook that is not there (she cannot choose another organisation):
  // the service's refusal, in words.
  await open(page, '#/billing/webhooks/nope?org=zju');
  await expect(page.getByTestId('error').first()).toContainText('This webhook does not exist (any more).');
});

test('staff and the consortium admin see the undelivered mail the service lists', async ({ browser }) => {
  for (const who of ['zhao-lei', 'admin'] as const) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const listed = await api<{ deadLetters?: { name: string }[] }>(who, `${NOTIFY}/ListDeadLetters`, { pageSize: 50 });
    await signInAs(page, who, '#/notify/dead-letters');
    await expect(page.getByRole('heading', { level: 1 })).toHaveText('Undelivered mail');
    const n = (listed.deadLetters ?? []).length;
    if (n === 0) await expect(page.getByTestId('dead-letters-empty')).toHaveText('There is no undelivered mail.');
    else await expect(page.getByTestId('dead-letters').locator('tbody tr')).toHaveCount(n);
    await page.getByTestId('dead-letter-reason').selectOption('DELIVERY_UNCERTAIN');
    await expect(page).toHaveURL(/reason=DELIVERY_UNCERTAIN/);
    await shot(page, `notify-dead-letters-${who}`);
    await context.close();
  }
});
