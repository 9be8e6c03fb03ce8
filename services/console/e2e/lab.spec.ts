// The lab user (li-wei of NanoCraft, qualified on sem-1): find an
// instrument, book on its week calendar by dragging, be refused an
// overlapping slot with the reason, see the demo month's bookings, preview
// and cancel, request a lease, order a service and accept its quote, book
// inside a joint-research project. Lab's time: sem-1, afm-1 and confocal in
// the week 2027-04-05..04-11 (the demo clock is 2027-04-01 10:00 Shanghai).
import { expect, test, type Page } from '@playwright/test';
import { api, shot, signInAs } from './fixtures';

test.describe.configure({ mode: 'serial' });

interface Booking { name: string; state: string; reservedInterval: { startTime: string; endTime: string }; lateCancellation?: boolean; mode: string; project?: string }

// Drags over the week grid from `from` to `to` ("HH:MM", on the half-hour
// rows) on one day: the pointer goes down inside the `from` row and up
// inside the row before `to`.
async function drag(page: Page, day: string, from: string, to: string): Promise<void> {
  const col = await page.locator(`td.fc-timegrid-col[data-date="${day}"]`).boundingBox();
  const [th, tm] = to.split(':').map(Number) as [number, number];
  const lastMin = th * 60 + tm - 30;
  const last = `${String(Math.floor(lastMin / 60)).padStart(2, '0')}:${String(lastMin % 60).padStart(2, '0')}`;
  const a = page.locator(`td.fc-timegrid-slot-lane[data-time="${from}:00"]`);
  const b = page.locator(`td.fc-timegrid-slot-lane[data-time="${last}:00"]`);
  await a.evaluate((e) => e.scrollIntoView({ block: 'center' }));
  const ra = await a.boundingBox();
  const rb = await b.boundingBox();
  if (!col || !ra || !rb) throw new Error('calendar grid not found');
  const x = col.x + col.width / 2;
  await page.mouse.move(x, ra.y + ra.height / 2);
  await page.mouse.down();
  await page.mouse.move(x, (ra.y + rb.y) / 2 + ra.height / 2, { steps: 5 });
  await page.mouse.move(x, rb.y + rb.height / 2, { steps: 5 });
  await page.mouse.up();
}

async function myBookingsAt(start: string, end: string): Promise<Booking[]> {
  const r = await api<{ bookings?: Booking[] }>('li-wei', 'labshare.booking.v1.BookingService/ListBookings', {
    instrument: 'instruments/sem-1', user: 'users/li-wei', timeRange: { startTime: start, endTime: end },
  });
  return (r.bookings ?? []).filter((b) => b.reservedInterval.startTime === start && b.reservedInterval.endTime === end);
}

let booked = ''; // bookings/… made on the calendar

test('li-wei finds the SEM free on Tuesday 6 April and opens its week', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/instruments?category=electron-microscopy&date=2027-04-06');
  const row = page.getByTestId('result-sem-1');
  await expect(row).toContainText('Field-emission SEM');
  await expect(row).toContainText('ZJU Micro-Nano Fabrication Centre');
  await expect(row).toContainText('Zhejiang University');
  await expect(row).toContainText('On-site use');
  await expect(row).toContainText('00:00–24:00');
  await expect(page.getByTestId('result-cryo-tem')).toBeVisible();
  await expect(page.getByTestId('category')).toHaveValue('electron-microscopy');
  // The category in words, not its key.
  await expect(page.getByTestId('category').locator('option:checked')).toHaveText('Electron microscopy');
  await expect(row).toContainText('Electron microscopy');
  await expect(row).not.toContainText('electron-microscopy');
  // Narrow to the ZJU facility with the form.
  await page.getByLabel('Facility').selectOption({ label: 'ZJU Micro-Nano Fabrication Centre' });
  await page.getByTestId('search').click();
  await expect(page).toHaveURL(/facility=zju-nano/);
  await expect(page.getByTestId('result-cryo-tem')).toHaveCount(0);
  await expect(row).toBeVisible();
  await shot(page, 'lab-search');
  await row.getByTestId('calendar-link').click();
  await expect(page).toHaveURL(/#\/lab\/instruments\/sem-1\?week=2027-04-05$/);
  await expect(page.getByTestId('zone')).toContainText('Asia/Shanghai (UTC+08:00)');
});

test('li-wei drags a free slot, gets a confirmed booking, and is refused an overlapping one', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/instruments/sem-1?week=2027-04-05');
  await expect(page.getByTestId('zone')).toContainText('Asia/Shanghai');
  await expect(page.locator('.fc-bg-event.lab-free').first()).toBeVisible();
  await drag(page, '2027-04-06', '10:00', '12:00');
  const panel = page.getByTestId('book-panel');
  await expect(panel.getByTestId('slot-text')).toContainText('06/04/2027, 10:00 – 12:00');
  await panel.getByTestId('book-purpose').fill('GaN film cross-sections');
  await panel.getByTestId('book-confirm').click();
  const status = page.getByRole('status');
  await expect(status).toContainText('06/04/2027, 10:00 – 12:00: Confirmed.');
  const name = (await page.getByTestId('booked').textContent())?.match(/Booking (\S+) for/)?.[1];
  expect(name).toBeTruthy();
  booked = `bookings/${name}`;
  await expect(page.locator('.fc-bg-event.lab-mine')).toContainText('Your booking · Confirmed 10:00–12:00');
  await expect(page.getByTestId('my-week')).toContainText('06/04/2027, 10:00 – 12:00');
  await shot(page, 'lab-calendar');

  // What the service holds: exactly that interval (10:00-12:00 Shanghai), confirmed, for li-wei.
  const got = await api<Booking>('li-wei', 'labshare.booking.v1.BookingService/GetBooking', { name: booked });
  expect(got.state).toBe('CONFIRMED');
  expect(got.mode).toBe('ON_SITE');
  expect(got.reservedInterval).toEqual({ startTime: '2027-04-06T02:00:00Z', endTime: '2027-04-06T04:00:00Z' });

  // An overlapping slot: the service refuses, the reason is shown on the spot.
  await drag(page, '2027-04-06', '10:30', '11:30');
  await expect(panel.getByTestId('slot-text')).toContainText('06/04/2027, 10:30 – 11:30');
  await panel.getByTestId('book-confirm').click();
  const alert = panel.getByRole('alert');
  await expect(alert).toContainText('This time overlaps another booking on the instrument');
  await expect(alert).toHaveAttribute('data-testid', 'error');
  await shot(page, 'lab-booking-refused');
  expect(await myBookingsAt('2027-04-06T02:30:00Z', '2027-04-06T03:30:00Z')).toEqual([]);
});

test('a booking whose answer is lost is made once when Book is pressed again', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/instruments/sem-1?week=2027-04-05');
  await expect(page.locator('.fc-bg-event.lab-free').first()).toBeVisible();
  // The first CreateBooking reaches the service, but its answer is lost.
  let calls = 0;
  const ids: string[] = [];
  await page.route('**/labshare.booking.v1.BookingService/CreateBooking', async (route) => {
    calls += 1;
    ids.push((JSON.parse(route.request().postData() ?? '{}') as { requestId?: string }).requestId ?? '');
    if (calls === 1) {
      await route.fetch();
      await route.abort('failed');
    } else {
      await route.continue();
    }
  });
  await drag(page, '2027-04-08', '15:00', '16:00');
  const panel = page.getByTestId('book-panel');
  await panel.getByTestId('book-purpose').fill('retry after a lost answer');
  await panel.getByTestId('book-confirm').click();
  await expect(panel.getByRole('alert')).toBeVisible();
  await expect.poll(() => myBookingsAt('2027-04-08T07:00:00Z', '2027-04-08T08:00:00Z').then((b) => b.length)).toBe(1);
  await panel.getByTestId('book-confirm').click();
  await expect(page.getByRole('status')).toContainText('Confirmed.');
  expect(calls).toBe(2);
  expect(ids[0]).toBeTruthy();
  expect(ids[1]).toBe(ids[0]);
  const mine = await myBookingsAt('2027-04-08T07:00:00Z', '2027-04-08T08:00:00Z');
  expect(mine.map((b) => b.state)).toEqual(['CONFIRMED']);
  const name = (await page.getByTestId('booked').textContent())?.match(/Booking (\S+) for/)?.[1];
  expect(`bookings/${name}`).toBe(mine[0]!.name);
  await page.unroute('**/labshare.booking.v1.BookingService/CreateBooking');
});

test('the bookings list shows the demo month and previews, then makes, the cancellation', async ({ page }) => {
  expect(booked).not.toBe('');
  await signInAs(page, 'li-wei', '#/lab/bookings?month=2027-03');
  const table = page.getByTestId('bookings-table');
  await expect(table.getByTestId('booking-demo-onsite')).toContainText('02/03/2027, 09:00 – 11:00');
  await expect(table.getByTestId('booking-demo-onsite').getByTestId('state')).toHaveText('Completed');
  await expect(table.getByTestId('booking-demo-missed').getByTestId('state')).toHaveText('Missed (no check-in)');
  await expect(table.getByTestId('booking-demo-joint')).toContainText('Joint research');
  // The project by its title, not its id.
  await expect(table.getByTestId('booking-demo-joint')).toContainText('project Wide-bandgap thin films');
  await expect(table.getByTestId('booking-demo-joint')).not.toContainText('prj-demo');
  await expect(table.getByTestId('booking-demo-joint')).toContainText('04/03/2027, 09:00 – 10:00');
  await expect(page.getByTestId('leases-table')).toContainText('Closed');
  await shot(page, 'lab-bookings');
  await page.getByTestId('month').fill('2027-04');
  await page.getByTestId('month-form').getByRole('button').click();
  await expect(page).toHaveURL(/#\/lab\/bookings\?month=2027-04$/);

  const row = table.getByTestId(`booking-${booked.slice('bookings/'.length)}`);
  await expect(row.getByTestId('state')).toHaveText('Confirmed');
  await row.getByTestId('cancel').click();
  const preview = page.getByTestId('cancel-preview');
  // Demo clock 2027-04-01 10:00; late from 24 h before the 10:00 start. The
  // fee it would be: 2 h x 480.00 (MEMBER line) = 960.00, 25 % = 240.00.
  await expect(preview.getByTestId('cancel-verdict')).toContainText('This cancellation is in time (at least 24 hours before the start, until 05/04/2027, 10:00): no fee.');
  await expect(preview.getByTestId('cancel-fee')).toContainText('Cancelled after 05/04/2027, 10:00 it would cost CN¥240.00 (25 % of the reserved-time charge CN¥960.00).');
  await expect(preview).toContainText('01/04/2027, 10:00');
  await shot(page, 'lab-cancel-preview');
  await preview.getByTestId('cancel-confirm').click();
  await expect(page.getByRole('status')).toContainText('Cancelled, in time, no fee.');
  await expect(row.getByTestId('state')).toContainText('Cancelled');
  const got = await api<Booking>('li-wei', 'labshare.booking.v1.BookingService/GetBooking', { name: booked });
  expect(got.state).toBe('CANCELLED');
  expect(got.lateCancellation ?? false).toBe(false);
});

test('li-wei requests a week-long lease of the AFM', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/leases/new?instrument=afm-1&from=2027-04-05&to=2027-04-12');
  await expect(page.getByTestId('lease-rules')).toContainText('Term 7 to 180 days');
  await expect(page.getByTestId('lease-rules')).toContainText('Asia/Shanghai');
  await page.getByTestId('lease-purpose').fill('thin-film roughness survey at NanoCraft');
  await page.getByTestId('lease-check').click();
  await expect(page.getByRole('status')).toContainText('The platform accepts this request');
  await page.getByTestId('lease-submit').click();
  await expect(page.getByTestId('lease-done')).toContainText('05/04/2027, 09:00 – 12/04/2027, 09:00: Requested.');
  await shot(page, 'lab-lease-new');
  const name = (await page.getByTestId('lease-done').textContent())?.match(/Lease (\S+) for/)?.[1];
  const lease = await api<{ state: string; term: { startTime: string; endTime: string }; purpose: string }>(
    'li-wei', 'labshare.booking.v1.BookingService/GetLease', { name: `leases/${name}` });
  expect(lease.state).toBe('REQUESTED');
  expect(lease.term).toEqual({ startTime: '2027-04-05T01:00:00Z', endTime: '2027-04-12T01:00:00Z' });
  // Asking again for the same term: the first request holds it.
  await page.getByTestId('lease-submit').click();
  await expect(page.getByRole('alert')).toContainText('This time overlaps another booking on the instrument');
  // Leave afm-1 free for a re-run on the same platform.
  await api('li-wei', 'labshare.booking.v1.BookingService/CancelLease', { name: `leases/${name}`, reason: 'e2e clean-up' });
});

test('li-wei orders a confocal analysis, gets a quote and accepts it', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/orders/new?instrument=confocal');
  await expect(page.getByTestId('order-entry')).toHaveValue('analysis');
  await page.getByTestId('order-count').fill('3');
  await page.getByTestId('order-desc').fill('GaN on sapphire, photoluminescence maps');
  await page.getByTestId('order-submit').click();
  await expect(page).toHaveURL(/#\/lab\/orders\/[a-z0-9-]+/);
  await expect(page.getByTestId('order-state')).toHaveText('Requested, waiting for a quote');
  await expect(page.getByTestId('no-quote')).toBeVisible();
  const id = new URL(page.url()).hash.match(/#\/lab\/orders\/([^?]+)/)?.[1];
  // SJTU's staff quote it: 3 x 175.00 + 300.00 + 50.00 = 875.00.
  await api('zhao-lei', 'labshare.booking.v1.BookingService/IssueQuote', {
    name: `serviceOrders/${id}`, requestId: `e2e-quote-${id}`,
    quote: {
      perSampleFee: { currencyCode: 'CNY', amountMinor: '17500' }, staffTimeFee: { currencyCode: 'CNY', amountMinor: '30000' },
      staffTime: '7200s', consumables: { currencyCode: 'CNY', amountMinor: '5000' }, validUntil: '2027-04-30T00:00:00Z',
    },
  });
  await page.reload();
  await expect(page.getByTestId('order-state')).toHaveText('Quoted');
  await expect(page.getByTestId('quote-total')).toHaveText('CN¥875.00');
  await shot(page, 'lab-order');
  await page.getByTestId('accept-quote').click();
  await expect(page.getByTestId('order-state')).toHaveText('Quote accepted');
  await expect(page.getByRole('status')).toHaveText(`Accept the quote: ${id} is now Quote accepted.`);
  // The success line follows a change of language: the action, the state.
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByTestId('order-state')).toHaveText('已接受报价');
  await expect(page.getByRole('status')).toHaveText(`接受报价：${id} 当前状态为 已接受报价。`);
  await shot(page, 'lab-order-accepted-zh');
  await page.getByTestId('language').selectOption('en');
  await expect(page.getByRole('status')).toHaveText(`Accept the quote: ${id} is now Quote accepted.`);
  const o = await api<{ state: string }>('li-wei', 'labshare.booking.v1.BookingService/GetServiceOrder', { name: `serviceOrders/${id}` });
  expect(o.state).toBe('QUOTE_ACCEPTED');
});

test('li-wei books joint-research time on prj-demo with the keyboard and sees the project budget', async ({ page }) => {
  await signInAs(page, 'li-wei', '#/lab/instruments/sem-1?week=2027-04-05');
  const form = page.getByTestId('slot-form');
  await form.getByLabel('Day').fill('2027-04-07');
  await form.getByLabel('From').fill('14:00');
  await form.getByLabel('To').fill('15:00');
  await form.getByRole('button', { name: 'Choose this time' }).click();
  const panel = page.getByTestId('book-panel');
  await expect(panel.getByTestId('slot-text')).toContainText('07/04/2027, 14:00 – 15:00');
  await panel.getByTestId('book-mode').selectOption({ label: 'Joint research' });
  await expect(panel.getByTestId('book-project')).toHaveValue('projects/prj-demo');
  await panel.getByTestId('book-confirm').click();
  await expect(page.getByRole('status')).toContainText('07/04/2027, 14:00 – 15:00: Confirmed.');
  const b = (await myBookingsAt('2027-04-07T06:00:00Z', '2027-04-07T07:00:00Z')).find((x) => x.state === 'CONFIRMED');
  expect(b?.mode).toBe('JOINT_RESEARCH');
  expect(b?.project).toBe('projects/prj-demo');

  await page.goto(page.url().replace(/#.*$/, '#/lab/projects'));
  const card = page.getByTestId('project-prj-demo');
  await expect(card).toContainText('Wide-bandgap thin films');
  await expect(card).toContainText('Zhejiang University 50%');
  const budget = card.getByTestId('budget-sem-1');
  await expect(budget).toContainText('20 h');
  // The instrument by its name, not its id.
  await expect(budget.getByTestId('budget-instrument')).toHaveText('Field-emission SEM (Zhejiang University)');
  await expect(budget.getByTestId('remaining')).toHaveText('18 h'); // 20 - 1 used (demo-joint) - 1 booked now
  await shot(page, 'lab-projects');
  await api('li-wei', 'labshare.booking.v1.BookingService/CancelBooking', { name: b!.name, reason: 'e2e clean-up' });
});

test('the week view at phone width, and the bookings in Chinese', async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await signInAs(page, 'li-wei', '#/lab/instruments/sem-1?week=2027-04-05');
  await expect(page.locator('.fc-bg-event.lab-free').first()).toBeVisible();
  await shot(page, 'lab-calendar-phone');
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.goto(page.url().replace(/#.*$/, '#/lab/bookings?month=2027-03'));
  await page.getByTestId('language').selectOption('zh-CN');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('我的预约、租赁与委托');
  await expect(page.getByTestId('booking-demo-onsite').getByTestId('state')).toHaveText('已完成');
  await expect(page.getByTestId('booking-demo-missed').getByTestId('state')).toHaveText('爽约（未签到）');
  await shot(page, 'lab-bookings-zh');
  await page.getByTestId('language').selectOption('en');
});
