// One technical-service order: its state, the current quote (accept it with
// its quote_etag), delivered reports (accept or dispute; when the instrument
// accepts reports automatically, the moment it will, in the facility's zone,
// and afterwards that it did), and cancelling it while the rules allow
// (CancelOrder).
import { useEffect, useState } from 'preact/hooks';
import { ServiceOrder_State, type ServiceOrder } from '../../../../gen/labshare/booking/v1/booking_pb';
import { booking } from '../../api';
import type { ShownError } from '../../errors';
import { money, hoursNumber, webLink } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { tsMs, instrumentWithZone, orderStateWord, rangeText, timeText } from './common';
import './lab.css';
import { ErrorBox, StatusBox, platformNow, useRequestId, useWorded } from '../../ui';
import { explain } from '../../errors';
import { idOf } from '../../names';
import { zoneLabel } from '../../zones';

const CANCELLABLE = [ServiceOrder_State.REQUESTED, ServiceOrder_State.QUOTED, ServiceOrder_State.QUOTE_ACCEPTED,
  ServiceOrder_State.SAMPLES_RECEIVED, ServiceOrder_State.SCHEDULED];

export default function LabOrder({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const name = `serviceOrders/${params.id ?? ''}`;
  const [o, setO] = useState<ServiceOrder>();
  const [zone, setZone] = useState('Asia/Shanghai');
  const [title, setTitle] = useState('');
  const [entryName, setEntryName] = useState('');
  const [error, setError] = useState<ShownError>();
  const [status, setStatus] = useWorded(params.created ? () => t('lab.order.created') : '');
  const [dispute, setDispute] = useState('');
  const [cancelReason, setCancelReason] = useState('');
  const [busy, setBusy] = useState(false);
  // The platform's now (not the browser's), asked only while a delivered
  // report has an acceptance deadline: from it on the report counts as
  // accepted and DisputeReport is refused (REPORT_ACCEPTANCE_CLOSED).
  const [platformMs, setPlatformMs] = useState<number>();

  useEffect(() => {
    let live = true;
    booking.getServiceOrder({ name }).then(async (x) => {
      if (!live) return;
      setO(x);
      const r = await instrumentWithZone(x.instrument);
      if (!live) return;
      setZone(r.zone);
      setTitle(r.instrument.displayName);
      setEntryName(r.instrument.serviceCatalogue.find((c) => c.entryId === x.serviceEntryId)?.displayName ?? x.serviceEntryId);
      if (x.state === ServiceOrder_State.REPORT_DELIVERED && tsMs(x.reportAcceptDeadline) > 0) {
        const now = await platformNow(r.instrument);
        if (live && now) setPlatformMs(now.getTime());
      }
    }).catch((e) => live && setError(explain(e)));
    return () => { live = false; };
  }, [name]);

  // whatKey: the action's i18n key; the line is worded at each render.
  async function act(whatKey: string, f: () => Promise<ServiceOrder>) {
    setBusy(true);
    setError(undefined);
    setStatus('');
    try {
      const x = await f();
      setO(x);
      setStatus(() => t('lab.list.done', { what: t(whatKey), name: idOf(x.name), state: orderStateWord(x.state) }));
    } catch (e) {
      const shown = explain(e);
      setError(shown);
      // The platform says the period is over: stop offering the dispute.
      if (shown.reason === 'REPORT_ACCEPTANCE_CLOSED' && o) setPlatformMs(tsMs(o.reportAcceptDeadline));
    } finally {
      setBusy(false);
    }
  }

  if (!o) return <section><h1>{t('lab.order.title', { id: params.id ?? '' })}</h1>{error ? <ErrorBox error={error} /> : <p aria-busy="true">{t('app.loading')}</p>}</section>;
  const q = o.quote;
  const report = o.reports[o.reports.length - 1];
  // Half-open: the deadline itself is already past the period.
  const closed = o.state === ServiceOrder_State.REPORT_DELIVERED && tsMs(o.reportAcceptDeadline) > 0 &&
    platformMs !== undefined && platformMs >= tsMs(o.reportAcceptDeadline);
  return (
    <section>
      <h1>{t('lab.order.title', { id: idOf(o.name) })}</h1>
      <p class="muted">{t('lab.list.zoneNote1', { zone: zoneLabel(zone) })}</p>
      {status && (status !== t('lab.order.created') || o.state === ServiceOrder_State.REQUESTED) && <StatusBox>{status}</StatusBox>}
      <ErrorBox error={error} />
      <div class="card">
        <dl class="lab-dl">
          <dt>{t('lab.list.state')}</dt><dd data-testid="order-state"><strong>{orderStateWord(o.state)}</strong></dd>
          <dt>{t('lab.search.instrument')}</dt><dd>{title || idOf(o.instrument)}</dd>
          <dt>{t('lab.orderNew.entry')}</dt><dd>{entryName}</dd>
          <dt>{t('lab.order.samples')}</dt><dd>{o.sampleCount}{o.receivedSampleCount ? ` (${t('lab.order.received', { n: o.receivedSampleCount })})` : ''}</dd>
          <dt>{t('lab.orderNew.desc')}</dt><dd>{o.sampleDescription || '—'}</dd>
          <dt>{t('lab.list.created')}</dt><dd>{timeText(o.createTime, zone)}</dd>
          {tsMs(o.requestedCompletionTime) > 0 && <><dt>{t('lab.orderNew.wish')}</dt><dd>{timeText(o.requestedCompletionTime, zone)}</dd></>}
          {o.scheduledInterval && <><dt>{t('lab.order.scheduled')}</dt><dd>{rangeText(o.scheduledInterval.startTime, o.scheduledInterval.endTime, zone)}</dd></>}
          {o.disputeReason && <><dt>{t('lab.order.disputeReason')}</dt><dd>{o.disputeReason}</dd></>}
          {o.cancelReason && <><dt>{t('lab.order.cancelReason')}</dt><dd>{o.cancelReason}</dd></>}
        </dl>
      </div>

      <h2>{t('lab.order.quote')}</h2>
      {!q ? <p class="muted" data-testid="no-quote">{t('lab.order.noQuote')}</p> : (
        <div class="card" data-testid="quote">
          <div class="table-wrap"><table>
            <tbody>
              <tr><th>{t('lab.order.perSample')}</th><td class="num">{money(q.perSampleFee)} × {o.sampleCount}</td></tr>
              <tr><th>{t('lab.order.staffTime', { h: hoursNumber(q.staffTime?.seconds) })}</th><td class="num">{money(q.staffTimeFee)}</td></tr>
              <tr><th>{t('lab.order.consumables')}</th><td class="num">{money(q.consumables)}</td></tr>
              <tr><th>{t('lab.order.total')}</th><td class="num" data-testid="quote-total"><strong>{money(q.total)}</strong></td></tr>
            </tbody>
          </table></div>
          <p class="muted">{t('lab.order.validUntil', { when: timeText(q.validUntil, zone) })}{q.notes && ` · ${q.notes}`}</p>
          {o.state === ServiceOrder_State.QUOTED && (
            <button type="button" class="primary" disabled={busy} data-testid="accept-quote"
              onClick={() => void act('lab.order.acceptQuote', () => mutate('acceptQuote', { name: o.name, quoteEtag: q.quoteEtag }, (r) => booking.acceptQuote(r)))}>
              {t('lab.order.acceptQuote')}
            </button>
          )}
        </div>
      )}

      <h2>{t('lab.order.reports')}</h2>
      {o.reports.length === 0 ? <p class="muted">{t('lab.order.noReport')}</p> : (
        <ul>
          {o.reports.map((r, i) => (
            <li key={i}>
              {webLink(r.uri)
                ? <a href={webLink(r.uri)} rel="noopener noreferrer" target="_blank">{r.summary || r.uri}</a>
                : <span data-testid="report-location">{r.summary ? `${r.summary}: ` : ''}<code>{r.uri}</code></span>}{' '}
              <span class="muted">{timeText(r.deliverTime, zone)}{r.sha256 ? ` · SHA-256 ${r.sha256.slice(0, 12)}…` : ''}</span>
            </li>
          ))}
        </ul>
      )}
      {o.state === ServiceOrder_State.COMPLETED && o.reportAutoAccepted && (
        <p data-testid="report-auto-accepted">{t('lab.order.autoAccepted', { when: timeText(o.reportAcceptTime, zone) })}</p>
      )}
      {report && o.state === ServiceOrder_State.REPORT_DELIVERED && (
        <div class="card">
          {closed ? (
            <p data-testid="report-deadline">{t('lab.order.acceptanceClosed', { when: timeText(o.reportAcceptDeadline, zone) })}</p>
          ) : tsMs(o.reportAcceptDeadline) > 0 && (
            <p data-testid="report-deadline">{t('lab.order.autoAcceptAt', { when: timeText(o.reportAcceptDeadline, zone) })}</p>
          )}
          <button type="button" class="primary" disabled={busy} data-testid="accept-report"
            onClick={() => void act('lab.order.acceptReport', () => mutate('acceptReport', { name: o.name }, (r) => booking.acceptReport(r)))}>
            {t('lab.order.acceptReport')}
          </button>
          {!closed && <form class="row" onSubmit={(e) => { e.preventDefault(); void act('lab.order.dispute', () => mutate('disputeReport', { name: o.name, reason: dispute }, (r) => booking.disputeReport(r))); }}>
            <label class="field lab-grow">{t('lab.order.disputeWhy')}
              <input value={dispute} required onInput={(e) => setDispute((e.target as HTMLInputElement).value)} data-testid="dispute-reason" />
            </label>
            <button type="submit" disabled={busy} data-testid="dispute">{t('lab.order.dispute')}</button>
          </form>}
        </div>
      )}
      {CANCELLABLE.includes(o.state) && (
        <form class="card row" onSubmit={(e) => {
          e.preventDefault();
          if (confirm(t('lab.order.cancelConfirm'))) void act('lab.order.cancel', () => mutate('cancelOrder', { name: o.name, reason: cancelReason }, (r) => booking.cancelOrder(r)));
        }}>
          <label class="field lab-grow">{t('lab.cancel.reason')}
            <input value={cancelReason} onInput={(e) => setCancelReason((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit" class="danger" disabled={busy} data-testid="cancel-order">{t('lab.order.cancel')}</button>
          {o.state === ServiceOrder_State.SCHEDULED && <p class="muted">{t('lab.order.cancelLateNote')}</p>}
        </form>
      )}
      <p><a href="#/lab/bookings">{t('lab.cal.toBookings')}</a></p>
    </section>
  );
}
