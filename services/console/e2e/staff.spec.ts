// Facility staff: the approvals queue, maintenance with the preview of the
// bookings it cancels, lease handover, the service-order work queue and
// qualifications. Everything happens in the week 2027-04-12..18 on ZJU's
// X-ray diffractometer (xrd-1) and Raman spectrometer (raman-1), which no
// other area's tests use.
//
// The demo seed has no instrument whose on-site bookings need approval
// (its residency threshold is 7 days, longer than any slot), so beforeAll
// has the consortium admin switch on "every booking needs approval" for
// xrd-1's ON_SITE mode (UpdateInstrument of its modes); afterAll switches it
// off again.
import { expect, test, type Page } from '@playwright/test';
import { api, shot, signInAs } from './fixtures';

const run = Date.now().toString(36);
const XRD = 'instruments/xrd-1';
const RAMAN = 'instruments/raman-1';
const WEEK = { startTime: '2027-04-11T16:00:00Z', endTime: '2027-04-18T16:00:00Z' }; // Mon..Sun, Asia/Shanghai
const BOOKING_ID = `staff-xrd-${run}`;
const LEASE_ID = `staff-raman-${run}`;
const ORDER_ID = `staff-order-${run}`;
const OUTAGE_REASON = `X-ray tube replacement ${run}`;

interface Json { [k: string]: any } // eslint-disable-line @typescript-eslint/no-explicit-any

async function setApprovalRequired(on: boolean): Promise<void> {
  const ins = await api<Json>('admin', 'labshare.inventory.v1.InventoryService/GetInstrument', { name: XRD });
  const modes = (ins.modes as Json[]).map((m) => (m.mode === 'ON_SITE' ? { ...m, approvalRequired: on } : m));
  await api('admin', 'labshare.inventory.v1.InventoryService/UpdateInstrument', {
    instrument: { name: XRD, modes, etag: ins.etag }, updateMask: 'modes', requestId: `staff-approval-${on}-${run}`,
  });
}

// Leaves the week free of what earlier runs on the same platform left behind.
async function clearWeek(): Promise<void> {
  const w = await api<Json>('wang-fang', 'labshare.inventory.v1.InventoryService/ListMaintenanceWindows',
    { parent: XRD, range: WEEK, pageSize: 100 });
  for (const win of (w.maintenanceWindows ?? []) as Json[]) {
    if (win.state !== 'SCHEDULED') continue;
    await api('wang-fang', 'labshare.inventory.v1.InventoryService/CancelMaintenanceWindow',
      { name: win.name, reason: 'test cleanup', requestId: `cleanup-${win.name}-${run}` });
    await api('wang-fang', 'labshare.booking.v1.BookingService/ApplyMaintenanceWindow',
      { maintenanceWindow: win.name, requestId: `cleanup-apply-${win.name}-${run}` });
  }
  for (const instrument of [XRD, RAMAN]) {
    let pageToken = '';
    for (let i = 0; i < 20; i++) {
      const r = await api<Json>('wang-fang', 'labshare.booking.v1.BookingService/ListBookings', {
        instrument, timeRange: WEEK, states: ['PENDING_APPROVAL', 'CONFIRMED'], pageSize: 100, pageToken,
      });
      for (const b of (r.bookings ?? []) as Json[]) {
        if (b.mode === 'LEASE') {
          await api('wang-fang', 'labshare.booking.v1.BookingService/CancelLease', { name: b.lease, reason: 'test cleanup', requestId: `cleanup-${b.name}-${run}` });
        } else {
          await api('wang-fang', 'labshare.booking.v1.BookingService/CancelBooking', { name: b.name, reason: 'test cleanup', requestId: `cleanup-${b.name}-${run}` });
        }
      }
      pageToken = r.nextPageToken ?? '';
      if (!pageToken) break;
    }
  }
}

const getBooking = (name: string) => api<Json>('admin', 'labshare.booking.v1.BookingService/GetBooking', { name });

test.describe.serial('facility staff', () => {
  test.beforeAll(async () => {
    await clearWeek();
    await setApprovalRequired(true);
    // li-wei may operate xrd-1 (the on-site rules want a qualification).
    await api('wang-fang', 'labshare.inventory.v1.InventoryService/GrantQualification',
      { instrument: XRD, user: 'users/li-wei', note: 'XRD induction', requestId: `staff-qual-liwei-${run}` });
    const booking = {
      instrument: XRD, mode: 'ON_SITE', purpose: 'thin-film phase analysis',
      reservedInterval: { startTime: '2027-04-14T01:00:00Z', endTime: '2027-04-14T04:00:00Z' }, // 09:00-12:00 Shanghai
    };
    // The booking service reads instruments through a cache that inventory's
    // events invalidate: wait until it sees the new rule.
    await expect.poll(async () => (await api<Json>('li-wei', 'labshare.booking.v1.BookingService/CreateBooking',
      { booking, validateOnly: true })).state, { timeout: 20_000 }).toBe('PENDING_APPROVAL');
    const created = await api<Json>('li-wei', 'labshare.booking.v1.BookingService/CreateBooking',
      { booking, bookingId: BOOKING_ID, requestId: `staff-book-${run}` });
    expect(created.state).toBe('PENDING_APPROVAL');
    expect(created.approvalReason).toBe('MODE_RULE');
    // A lease request on raman-1 for the approvals queue and the lease screen.
    const lease = await api<Json>('li-wei', 'labshare.booking.v1.BookingService/RequestLease', {
      lease: { instrument: RAMAN, purpose: 'in-line film inspection', term: { startTime: '2027-04-12T01:00:00Z', endTime: '2027-04-19T01:00:00Z' } },
      leaseId: LEASE_ID, requestId: `staff-lease-${run}`,
    });
    expect(lease.state).toBe('REQUESTED');
    // A technical-service order on xrd-1 for the work queue.
    const order = await api<Json>('li-wei', 'labshare.booking.v1.BookingService/CreateServiceOrder', {
      serviceOrder: { instrument: XRD, serviceEntryId: 'analysis', sampleCount: 3, sampleDescription: 'three ZnO films on Si' },
      serviceOrderId: ORDER_ID, requestId: `staff-order-${run}`,
    });
    expect(order.state).toBe('REQUESTED');
  });

  test.afterAll(async () => {
    await setApprovalRequired(false);
  });

  test('staff approve a pending booking and a lease request', async ({ page }) => {
    await signInAs(page, 'wang-fang', '#/staff/approvals');
    const row = page.getByTestId(`approval-${BOOKING_ID}`);
    await expect(row).toContainText('X-ray diffractometer');
    await expect(row).toContainText('li-wei');
    await expect(row).toContainText('NanoCraft');
    await expect(row).toContainText('09:00–12:00'); // Shanghai time in a Berlin browser
    await expect(row).toContainText('(Asia/Shanghai)');
    await expect(row).toContainText('Instrument rule: every booking');
    await expect(page.getByTestId(`lease-approval-${LEASE_ID}`)).toContainText('Raman spectrometer');
    await shot(page, 'staff-approvals');
    await page.setViewportSize({ width: 390, height: 844 });
    await expect(row).toBeVisible();
    // At phone width each request is a block: its buttons lie within the
    // screen (they were beyond its right edge, in a sideways-scrolling table),
    // and the page itself does not scroll sideways.
    const approve = row.getByRole('button', { name: `Approve booking ${BOOKING_ID}` });
    const box = await approve.boundingBox();
    expect(box && box.x >= 0 && box.x + box.width <= 390, `the Approve button at ${JSON.stringify(box)}`).toBe(true);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await shot(page, 'staff-approvals-390');
    await page.setViewportSize({ width: 1280, height: 860 });

    await row.getByRole('button', { name: `Approve booking ${BOOKING_ID}` }).click();
    await expect(page.getByTestId('approvals-status')).toContainText(`Booking ${BOOKING_ID} on X-ray diffractometer approved: Confirmed.`);
    await expect(row).toHaveCount(0);
    const b = await getBooking(`bookings/${BOOKING_ID}`);
    expect(b.state).toBe('CONFIRMED');
    expect(b.decision.decidedBy).toBe('users/wang-fang');

    // The lease: the contract form starts from the rate card and the lease rules.
    const lrow = page.getByTestId(`lease-approval-${LEASE_ID}`);
    await lrow.getByRole('button', { name: 'Approve with contract…' }).click();
    await expect(page.getByLabel('Rate (CNY)')).toHaveValue('1500.00');
    await expect(page.getByLabel('Deposit (CNY)')).toHaveValue('95000.00');
    await page.getByLabel('Terms (insurance, transport, use restrictions)').fill('insured by the lessee; transport by the owner');
    await shot(page, 'staff-approvals-lease-contract');
    await page.getByRole('button', { name: 'Approve lease' }).click();
    await expect(page.getByTestId('approvals-status')).toHaveText(`Lease ${LEASE_ID} approved at CN¥1,500.00 (Per day), deposit CN¥95,000.00.`);
    // The success line follows a change of language: the sentence, the rate
    // basis and the amounts (format.ts money() in the page's language).
    await page.getByTestId('language').selectOption('zh-CN');
    const zhMoney = (n: number) => new Intl.NumberFormat('zh-CN', { style: 'currency', currency: 'CNY', minimumFractionDigits: 2 }).format(n);
    await expect(page.getByTestId('approvals-status')).toHaveText(
      `租赁 ${LEASE_ID} 已批准：租金 ${zhMoney(1500)}（按日），押金 ${zhMoney(95000)}。`);
    await shot(page, 'staff-approvals-done-zh');
    await page.getByTestId('language').selectOption('en');
    await expect(page.getByTestId('approvals-status')).toHaveText(`Lease ${LEASE_ID} approved at CN¥1,500.00 (Per day), deposit CN¥95,000.00.`);
    const l = await api<Json>('admin', 'labshare.booking.v1.BookingService/GetLease', { name: `leases/${LEASE_ID}` });
    expect(l.state).toBe('APPROVED');
    expect(l.contract.rateBasis).toBe('DAILY');
    expect(l.contract.rate).toEqual({ currencyCode: 'CNY', amountMinor: '150000' });
    expect(l.contract.deposit).toEqual({ currencyCode: 'CNY', amountMinor: '9500000' });
  });

  test('staff declare an outage: the preview lists the booking, confirming cancels it', async ({ page }) => {
    await signInAs(page, 'wang-fang', '#/staff/maintenance?week=2027-04-12&instrument=xrd-1');
    await expect(page.getByTestId('maint-instrument')).toHaveValue(XRD);
    await page.getByTestId('maint-start').fill('2027-04-14T08:00');
    await page.getByTestId('maint-end').fill('2027-04-14T18:00');
    await page.getByLabel('Unplanned outage').check();
    await page.getByTestId('maint-reason').fill(OUTAGE_REASON);
    await page.getByRole('button', { name: 'Show affected bookings' }).click();

    const preview = page.getByTestId('maintenance-preview');
    await expect(preview.getByTestId('maintenance-preview-count')).toHaveText('1 booking will be affected:');
    const rows = preview.locator('tbody tr');
    await expect(rows).toHaveCount(1);
    await expect(preview.getByTestId(`preview-${BOOKING_ID}`)).toContainText('Confirmed');
    await expect(preview.getByTestId(`preview-${BOOKING_ID}`)).toContainText('Cancelled, no charge');
    await expect(preview).toContainText('08:00–18:00');
    await shot(page, 'staff-maintenance-preview');
    // Nothing is declared before confirming.
    expect((await getBooking(`bookings/${BOOKING_ID}`)).state).toBe('CONFIRMED');

    await page.getByTestId('maintenance-confirm').click();
    const done = page.getByTestId('maintenance-done');
    await expect(done.getByTestId('maintenance-status')).toContainText('declared. 1 booking cancelled without charge.');
    await expect(done.getByTestId(`done-${BOOKING_ID}`)).toContainText(`Cancelled by maintenance: ${OUTAGE_REASON}`);
    await expect(page.getByTestId('maintenance-windows')).toContainText(OUTAGE_REASON);
    await shot(page, 'staff-maintenance-done');

    const b = await getBooking(`bookings/${BOOKING_ID}`);
    expect(b.state).toBe('CANCELLED');
    expect(b.cancelledByOutage).toBe(true);
    expect(b.lateCancellation ?? false).toBe(false);
    expect(b.cancellation.initiator).toBe('MAINTENANCE_OUTAGE');
    expect(b.cancellation.reason).toBe(OUTAGE_REASON);
    expect(b.cancellation.maintenanceWindow).toMatch(/^instruments\/xrd-1\/maintenanceWindows\//);
    await expect(done.getByTestId('maintenance-status')).toContainText(`Maintenance window ${String(b.cancellation.maintenanceWindow).split('/').pop()} declared.`);
    const w = await api<Json>('admin', 'labshare.inventory.v1.InventoryService/GetMaintenanceWindow', { name: b.cancellation.maintenanceWindow });
    expect(w.state).toBe('SCHEDULED');
    expect(w.outage).toBe(true);
    expect(w.interval).toEqual({ startTime: '2027-04-14T00:00:00Z', endTime: '2027-04-14T10:00:00Z' });
  });

  test('leases of the staff’s instruments', async ({ page }) => {
    await signInAs(page, 'wang-fang', '#/staff/leases');
    const row = page.getByTestId(`lease-${LEASE_ID}`);
    await expect(row).toContainText('Approved, not handed over');
    await expect(row).toContainText('CN¥1,500.00 / day');
    await row.getByRole('button', { name: 'Record handover…' }).click();
    await page.getByLabel('Condition of the instrument and accessories').fill('calibrated, laser 532 nm, manual');
    await shot(page, 'staff-leases');
    // The handover window opens handover_buffer (24 h) before the term, i.e.
    // 2027-04-11 09:00; at the demo clock (04-01) the service refuses, and
    // the screen says so.
    await page.getByRole('button', { name: 'Record handover', exact: true }).click();
    await expect(row.getByTestId('error')).toBeVisible();
    await expect(row.getByTestId('error')).toContainText(/handover/i);
    expect((await api<Json>('admin', 'labshare.booking.v1.BookingService/GetLease', { name: `leases/${LEASE_ID}` })).state).toBe('APPROVED');
    await shot(page, 'staff-leases-refused');
    // The demo month's AFM lease, closed with its deposit released.
    await page.getByTestId('lease-filter').selectOption('ended');
    await expect(page.getByTestId('leases')).toContainText('Atomic force microscope');
    await expect(page.getByTestId('leases')).toContainText('Closed');
    await shot(page, 'staff-leases-ended');
  });

  test('the service-order work queue: quote, samples received, schedule', async ({ page }) => {
    await signInAs(page, 'wang-fang', '#/staff/orders?week=2027-04-12');
    const row = page.getByTestId(`order-${ORDER_ID}`);
    await expect(row).toContainText('New request');
    await expect(row).toContainText('NanoCraft');
    await row.getByRole('button', { name: 'Quote…' }).click();
    await page.getByLabel(/Fee per sample/).fill('200.00');
    await page.getByLabel('Staff time (hours)').fill('1.5');
    await page.getByLabel(/Staff time fee/).fill('300.00');
    await page.getByLabel(/Consumables/).fill('50.00');
    await page.getByLabel(/Quote valid until/).fill('2027-04-20T18:00');
    await expect(page.getByText('Total: CN¥950.00')).toBeVisible();
    await shot(page, 'staff-orders-quote');
    await page.getByRole('button', { name: 'Send quote' }).click();
    await expect(page.getByTestId('orders-status')).toContainText(`Order ${ORDER_ID}: quote of CN¥950.00 sent`);
    let o = await api<Json>('admin', 'labshare.booking.v1.BookingService/GetServiceOrder', { name: `serviceOrders/${ORDER_ID}` });
    expect(o.state).toBe('QUOTED');
    expect(o.quote.total).toEqual({ currencyCode: 'CNY', amountMinor: '95000' });
    expect(o.quote.staffTime).toBe('5400s');
    expect(o.quote.validUntil).toBe('2027-04-20T10:00:00Z');

    // The client accepts; the samples arrive; staff book the run.
    await api('li-wei', 'labshare.booking.v1.BookingService/AcceptQuote',
      { name: o.name, quoteEtag: o.quote.quoteEtag, requestId: `staff-accept-${run}` });
    await page.reload();
    await row.getByRole('button', { name: 'Samples received…' }).click();
    await expect(page.getByLabel('Samples received (ordered: 3)')).toHaveValue('3');
    await page.getByLabel('Condition of the samples').fill('sealed, intact');
    await page.getByRole('button', { name: 'Record samples' }).click();
    await expect(page.getByTestId('orders-status')).toContainText(`Order ${ORDER_ID}: samples received (Samples received).`);

    await row.getByRole('button', { name: 'Schedule…' }).click();
    await page.getByLabel('Run starts (Asia/Shanghai)').fill('2027-04-16T09:00');
    await page.getByLabel('Run ends (Asia/Shanghai)').fill('2027-04-16T12:00');
    await page.getByRole('button', { name: 'Book instrument time' }).click();
    await expect(page.getByTestId('orders-status')).toContainText(`Order ${ORDER_ID}: run booked (Scheduled).`);
    await expect(row).toContainText('09:00–12:00');
    await expect(row.getByRole('button', { name: 'Start run' })).toBeVisible();
    o = await api<Json>('admin', 'labshare.booking.v1.BookingService/GetServiceOrder', { name: `serviceOrders/${ORDER_ID}` });
    expect(o.state).toBe('SCHEDULED');
    expect(o.scheduledInterval).toEqual({ startTime: '2027-04-16T01:00:00Z', endTime: '2027-04-16T04:00:00Z' });
    expect(o.operatorUser).toBe('users/wang-fang');
    await shot(page, 'staff-orders');
  });

  test('grant and revoke a qualification', async ({ page }) => {
    await signInAs(page, 'wang-fang', '#/staff/qualifications?instrument=raman-1');
    await expect(page.getByTestId('qual-instrument')).toHaveValue(RAMAN);
    await page.getByTestId('qual-user').fill('liu-yang');
    await page.getByLabel('Note (induction, training)').fill('laser safety induction');
    await page.getByRole('button', { name: 'Grant', exact: true }).click();
    await expect(page.getByTestId('qual-status')).toContainText('liu-yang is qualified on Raman spectrometer until');
    const qrow = page.getByTestId('qual-liu-yang');
    await expect(qrow).toContainText('Valid');
    let q = await api<Json>('admin', 'labshare.inventory.v1.InventoryService/GetQualification', { name: `${RAMAN}/qualifications/liu-yang` });
    expect(q.state).toBe('VALID');
    expect(q.grantedBy).toBe('users/wang-fang');
    expect(q.note).toBe('laser safety induction');
    await shot(page, 'staff-qualifications');

    await qrow.getByRole('button', { name: 'Revoke the qualification of liu-yang' }).click();
    await page.getByLabel('Reason for revoking').fill('left the project');
    await page.getByRole('button', { name: 'Revoke qualification of liu-yang' }).click();
    await expect(qrow).toContainText('Revoked');
    q = await api<Json>('admin', 'labshare.inventory.v1.InventoryService/GetQualification', { name: `${RAMAN}/qualifications/liu-yang` });
    expect(q.state).toBe('REVOKED');
    await shot(page, 'staff-qualifications-revoked');
  });

  test('SJTU staff see their own instruments, in Chinese', async ({ page }) => {
    await signInAs(page, 'zhao-lei', '#/staff/orders?state=all');
    await page.getByTestId('language').selectOption('zh-CN');
    await expect(page.getByRole('heading', { name: '技术服务工单' })).toBeVisible();
    const table = page.getByTestId('orders');
    await expect(table).toContainText('Confocal microscope');  // the demo month's BioTek order
    await expect(table).toContainText('已完成');
    await expect(table).toContainText('¥1,050.00');
    await expect(page.getByTestId(`order-${ORDER_ID}`)).toHaveCount(0); // ZJU's order is not SJTU's work
    await shot(page, 'staff-orders-zh');
    await gotoHash(page, '#/staff/qualifications?instrument=cryo-tem');
    await expect(page.getByTestId('qual-chen-jing')).toContainText('有效');
    await shot(page, 'staff-qualifications-zh');
  });
});

async function gotoHash(page: Page, hash: string): Promise<void> {
  await page.evaluate((h) => { location.hash = h; }, hash);
}
