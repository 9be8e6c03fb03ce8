// A technical-service report accepted automatically: the consortium admin
// gives the SJTU confocal's TECHNICAL_SERVICE rules a report acceptance
// period of one hour (UpdateInstrument of its modes); BioTek's order is run
// and its report delivered at 13:30 on the demo day (the demo clock moved
// there and back: the platform reads it from LABSHARE_E2E_DATA/clock). The
// client's order view and the staff's work queue say when the report will
// be accepted (14:30 Shanghai time, in a Berlin browser), and the client's
// stops offering the dispute once the platform's now is past it; at 14:30 the
// booking sweep accepts it and both say it was accepted automatically, and
// a dispute then is refused. afterAll puts the clock and the rule back.
import fs from 'node:fs';
import path from 'node:path';
import { expect, test } from '@playwright/test';
import { api, shot, signInAs } from './fixtures';

const run = Date.now().toString(36);
const CONFOCAL = 'instruments/confocal';
const ORDER_ID = `auto-accept-${run}`;
const ORDER = `serviceOrders/${ORDER_ID}`;

interface Json { [k: string]: any } // eslint-disable-line @typescript-eslint/no-explicit-any

function clockFile(): string {
  const data = process.env.LABSHARE_E2E_DATA;
  if (!data) throw new Error('LABSHARE_E2E_DATA is not set (global setup)');
  return path.join(data, 'clock');
}
function setClock(rfc3339: string): void {
  fs.writeFileSync(`${clockFile()}.next`, `${rfc3339}\n`);
  fs.renameSync(`${clockFile()}.next`, clockFile()); // atomic, as deploy/demo-scenario.sh does
}

// confocal's TECHNICAL_SERVICE report_acceptance_period (undefined: unset).
async function setPeriod(period: string | undefined, requestId: string): Promise<void> {
  const ins = await api<Json>('admin', 'labshare.inventory.v1.InventoryService/GetInstrument', { name: CONFOCAL });
  const modes = (ins.modes as Json[]).map((m) => {
    if (m.mode !== 'TECHNICAL_SERVICE') return m;
    const slotRules = { ...m.slotRules };
    if (period) slotRules.reportAcceptancePeriod = period; else delete slotRules.reportAcceptancePeriod;
    return { ...m, slotRules };
  });
  await api('admin', 'labshare.inventory.v1.InventoryService/UpdateInstrument', {
    instrument: { name: CONFOCAL, modes, etag: ins.etag }, updateMask: 'modes', requestId,
  });
}

const getOrder = () => api<Json>('admin', 'labshare.booking.v1.BookingService/GetServiceOrder', { name: ORDER });

test.describe.serial('a report accepted automatically', () => {
  let demoNow = '';

  test.beforeAll(async () => {
    demoNow = fs.readFileSync(clockFile(), 'utf8').trim();
    await setPeriod('3600s', `auto-accept-period-${run}`);
    const order = await api<Json>('chen-jing', 'labshare.booking.v1.BookingService/CreateServiceOrder', {
      serviceOrder: { instrument: CONFOCAL, serviceEntryId: 'analysis', sampleCount: 2, sampleDescription: 'two fixed cell cultures' },
      serviceOrderId: ORDER_ID, requestId: `auto-accept-order-${run}`,
    });
    const quoted = await api<Json>('zhao-lei', 'labshare.booking.v1.BookingService/IssueQuote', {
      name: order.name, requestId: `auto-accept-quote-${run}`,
      quote: { perSampleFee: { currencyCode: 'CNY', amountMinor: '17500' }, validUntil: '2027-04-30T00:00:00+08:00' },
    });
    await api('chen-jing', 'labshare.booking.v1.BookingService/AcceptQuote',
      { name: order.name, quoteEtag: quoted.quote.quoteEtag, requestId: `auto-accept-ok-${run}` });
    await api('zhao-lei', 'labshare.booking.v1.BookingService/ReceiveSamples',
      { name: order.name, receivedSampleCount: 2, requestId: `auto-accept-samples-${run}` });
    await api('zhao-lei', 'labshare.booking.v1.BookingService/ScheduleService', {
      name: order.name, requestId: `auto-accept-schedule-${run}`,
      interval: { startTime: '2027-04-01T13:00:00+08:00', endTime: '2027-04-01T14:00:00+08:00' },
    });
    setClock('2027-04-01T13:00:00+08:00');
    await api('zhao-lei', 'labshare.booking.v1.BookingService/StartService', { name: order.name, requestId: `auto-accept-start-${run}` });
    setClock('2027-04-01T13:30:00+08:00');
    const delivered = await api<Json>('zhao-lei', 'labshare.booking.v1.BookingService/DeliverReport', {
      name: order.name, requestId: `auto-accept-report-${run}`,
      report: { uri: 'https://files.example.org/auto-accept.pdf', summary: '2 cultures imaged' },
    });
    expect(delivered.state).toBe('REPORT_DELIVERED');
    expect(delivered.reportAcceptDeadline).toBe('2027-04-01T06:30:00Z');
  });

  test.afterAll(async () => {
    if (demoNow) setClock(demoNow);
    await setPeriod(undefined, `auto-accept-unset-${run}`);
  });

  test('the client sees when the report will be accepted unless disputed', async ({ page }) => {
    await signInAs(page, 'chen-jing', `#/lab/orders/${ORDER_ID}`);
    await expect(page.getByTestId('order-state')).toHaveText('Report delivered');
    await expect(page.getByTestId('report-deadline')).toHaveText('Accepted automatically on 01/04/2027, 14:30 unless you dispute it.');
    await expect(page.getByTestId('accept-report')).toBeVisible();
    await expect(page.getByTestId('dispute')).toBeVisible();
    await shot(page, 'lab-order-auto-accept');
  });

  // Between the deadline and the sweep's next round the order is still
  // REPORT_DELIVERED, but DisputeReport is refused: the page asks the
  // platform's now (QueryAvailability's earliest start, here answered as
  // ten days later) and stops offering the dispute.
  test('once the period is over the dispute is no longer offered', async ({ page }) => {
    await page.route('**/labshare.booking.v1.BookingService/QueryAvailability', (route) => route.fulfill({
      status: 200, contentType: 'application/json', body: JSON.stringify({ earliestStart: '2027-04-11T00:00:00Z' }),
    }));
    await signInAs(page, 'chen-jing', `#/lab/orders/${ORDER_ID}`);
    await expect(page.getByTestId('order-state')).toHaveText('Report delivered');
    await expect(page.getByTestId('report-deadline')).toHaveText(
      'The acceptance period ended on 01/04/2027, 14:30: the report counts as accepted and can no longer be disputed. The order is completed and charged shortly.');
    await expect(page.getByTestId('dispute')).toHaveCount(0);
    await expect(page.getByTestId('accept-report')).toBeVisible();
    await shot(page, 'lab-order-acceptance-closed');
  });

  test('the staff see it in their work queue', async ({ page }) => {
    await signInAs(page, 'zhao-lei', '#/staff/orders?state=waitingClient');
    await expect(page.getByTestId(`report-deadline-${ORDER_ID}`))
      .toContainText('01/04/2027 14:30 unless the client disputes it');
    await shot(page, 'staff-orders-auto-accept');
  });

  test('at the deadline the sweep accepts it; a dispute is refused', async ({ page }) => {
    setClock('2027-04-01T14:30:00+08:00');
    // The booking service sweeps every second on a demo clock.
    await expect.poll(async () => (await getOrder()).state, { timeout: 30_000 }).toBe('COMPLETED');
    const o = await getOrder();
    expect(o.reportAutoAccepted).toBe(true);
    expect(o.reportAcceptTime).toBe('2027-04-01T06:30:00Z');
    expect(o.reportAcceptDeadline).toBeUndefined();
    await expect(api('chen-jing', 'labshare.booking.v1.BookingService/DisputeReport',
      { name: ORDER, reason: 'too late', requestId: `auto-accept-dispute-${run}` })).rejects.toThrow(/accepted automatically at 2027-04-01T06:30:00/);

    await signInAs(page, 'chen-jing', `#/lab/orders/${ORDER_ID}`);
    await expect(page.getByTestId('order-state')).toHaveText('Completed');
    await expect(page.getByTestId('report-auto-accepted')).toContainText('accepted automatically on 01/04/2027, 14:30');
    await expect(page.getByTestId('accept-report')).toHaveCount(0);
    await shot(page, 'lab-order-auto-accepted');
  });

  test('the staff see that it was accepted automatically', async ({ page }) => {
    await signInAs(page, 'zhao-lei', '#/staff/orders?state=closed');
    const note = page.getByTestId(`report-auto-accepted-${ORDER_ID}`);
    await expect(note).toContainText('Accepted automatically on');
    await expect(note).toContainText('01/04/2027 14:30');
    await shot(page, 'staff-orders-auto-accepted');
  });
});
