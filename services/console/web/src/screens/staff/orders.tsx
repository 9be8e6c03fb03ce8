// #/staff/orders: the technical-service work queue of the staff's
// instruments, by state, with the next step of each order: quote
// (IssueQuote: per-sample fee, staff time and its fee, consumables, valid
// until), samples received (ReceiveSamples), schedule (ScheduleService with
// an interval in the facility's zone), start (StartService), deliver the
// report (DeliverReport: uri, sha256, summary); a delivered report's
// automatic acceptance (when it will happen, or that it did).
import { useEffect, useRef, useState } from 'preact/hooks';
import { ServiceOrder_State, type ServiceOrder } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import { money, moneyText, webLink } from '../../format';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import {
  FieldError, FilterSelect, OrgName, StaffHeader, Zone, addDays, currencyOf, instrumentLabel, isSet, parseAmount, span, useOnMyInstruments, useStaffWorld, weekStart, when, zoneOf, zonedTs, type StaffWorld,
} from './common';
import { ErrorBox, StatusBox, useAction, ColumnHeads, useRequestId, useWorded, type Worded } from '../../ui';
import { idOf } from '../../names';

const S = ServiceOrder_State;
const FILTERS: Record<string, ServiceOrder_State[]> = {
  open: [S.REQUESTED, S.QUOTED, S.QUOTE_ACCEPTED, S.SAMPLES_RECEIVED, S.SCHEDULED, S.IN_PROGRESS, S.REPORT_DELIVERED, S.DISPUTED],
  toQuote: [S.REQUESTED],
  waitingClient: [S.QUOTED, S.REPORT_DELIVERED],
  toReceive: [S.QUOTE_ACCEPTED],
  toSchedule: [S.SAMPLES_RECEIVED],
  toRun: [S.SCHEDULED, S.IN_PROGRESS],
  disputed: [S.DISPUTED],
  closed: [S.COMPLETED, S.CANCELLED],
  all: [],
};

export default function Orders({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const { world, error } = useStaffWorld();
  const [filter, setFilter] = useState(params.state && params.state in FILTERS ? params.state : 'open');
  const [status, setStatus] = useWorded();
  const [tick, setTick] = useState(0);
  const monday = weekStart(params.week);

  const { items: orders, error: loadError } = useOnMyInstruments(world, async (pageToken) => {
    const r = await booking.listServiceOrders({ pageSize: 200, pageToken, states: FILTERS[filter] ?? [] });
    return { items: r.serviceOrders, next: r.nextPageToken };
  }, [filter, tick]);

  return (
    <section>
      <StaffHeader title={t('staff.orders.title')} current="#/staff/orders" />
      <p class="muted">{t('staff.orders.intro')}</p>
      <FilterSelect testid="order-filter" filters={Object.keys(FILTERS)} prefix="staff.orders.filter" value={filter} onChange={setFilter} />
      <ErrorBox error={error ?? loadError} />
      <StatusBox testid="orders-status">{status}</StatusBox>
      {!world || !orders ? (!error && !loadError && <p aria-busy="true">{t('app.loading')}</p>) : orders.length === 0 ? (
        <p class="muted">{t('staff.orders.none')}</p>
      ) : (
        <div class="table-wrap">
          <table class="stack" data-testid="orders">
            <ColumnHeads prefix="staff." cols={['orders.service', 'orders.client', 'orders.samples', 'col.state', 'orders.quote', 'orders.run', 'col.actions']} />
            <tbody>
              {orders.map((o) => <OrderRow key={o.name} o={o} world={world} monday={monday}
                onDone={(m) => { setStatus(m); setTick((n) => n + 1); }} />)}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

type Form = 'quote' | 'receive' | 'schedule' | 'report';

function OrderRow({ o, world, monday, onDone }: { o: ServiceOrder; world: StaffWorld; monday: string; onDone: (m: Worded) => void }) {
  const mutate = useRequestId();
  const me = useSignal(session).user ?? '';
  const zone = zoneOf(world, o.instrument);
  const ins = world.instruments.find((i) => i.name === o.instrument);
  const entry = ins?.serviceCatalogue.find((e) => e.entryId === o.serviceEntryId);
  const currency = o.quote?.perSampleFee?.currencyCode || currencyOf(ins);
  const id = idOf(o.name);
  const act = useAction();
  const [form, setForm] = useState<Form>();
  const [missing, setMissing] = useWorded();
  // quote
  const [fee, setFee] = useState(moneyText(o.quote?.perSampleFee));
  const feeTouched = useRef(false);
  const [staffHours, setStaffHours] = useState(o.quote?.staffTime ? String(Number(o.quote.staffTime.seconds) / 3600) : '1');
  const [staffFee, setStaffFee] = useState(moneyText(o.quote?.staffTimeFee) || '0');
  const [consumables, setConsumables] = useState(moneyText(o.quote?.consumables) || '0');
  const [validUntil, setValidUntil] = useState(`${addDays(monday, 14)}T18:00`);
  const [notes, setNotes] = useState('');
  // receive
  const [count, setCount] = useState(String(o.sampleCount));
  // schedule
  const perUnit = entry?.instrumentTimePerUnit ? Number(entry.instrumentTimePerUnit.seconds) : 3600;
  const runHours = Math.max(1, Math.ceil((perUnit * Math.max(1, o.receivedSampleCount || o.sampleCount)) / 3600));
  const [start, setStart] = useState(`${addDays(monday, 2)}T09:00`);
  const [end, setEnd] = useState(`${addDays(monday, 2)}T${String(Math.min(23, 9 + runHours)).padStart(2, '0')}:00`);
  // report
  const [uri, setUri] = useState('');
  const [sha, setSha] = useState('');
  const [summary, setSummary] = useState('');

  const stateWord = (s: ServiceOrder_State) => t(`staff.orderState.${ServiceOrder_State[s]}`);

  // The rate card's per-sample price for the client's class, as the usual fee.
  useEffect(() => {
    if (form !== 'quote' || fee) return;
    let live = true;
    inventory.lookupRate({
      instrument: o.instrument, mode: SharingMode.TECHNICAL_SERVICE, payerOrganization: o.clientOrganization,
      serviceEntryId: o.serviceEntryId, time: o.createTime, // the line in force when it was ordered
    }).then((r) => {
      // Never over what the user typed while the lookup was on its way.
      const usual = r.rate?.price;
      // Not once the field has had focus: a value typed then (or the browser
      // test's fill, which clears and then inserts) must not be joined by
      // ours arriving in between.
      if (live && usual && !feeTouched.current) setFee((typed) => typed || moneyText(usual));
    }, () => undefined);
    return () => { live = false; };
  }, [form]);

  const submit = () => {
    setMissing('');
    const ok = (key: string) => (r: ServiceOrder | undefined) => r && onDone(() => t(key, { id, state: stateWord(r.state), total: money(r.quote?.total) }));
    if (form === 'quote') {
      const f = parseAmount(fee, currency), sf = parseAmount(staffFee || '0', currency), c = parseAmount(consumables || '0', currency);
      const hours = Number(staffHours);
      const until = zonedTs(validUntil, zone);
      if (!f || !sf || !c) { setMissing(() => t('staff.orders.badAmount')); return; }
      if (!Number.isFinite(hours) || hours < 0) { setMissing(() => t('staff.orders.badHours')); return; }
      if (!until) { setMissing(() => t('staff.orders.badValidUntil')); return; }
      void act.run(() => mutate('issueQuote', {
        name: o.name, etag: o.etag,
        quote: { perSampleFee: f, staffTime: { seconds: BigInt(Math.round(hours * 3600)) }, staffTimeFee: sf, consumables: c, validUntil: until, notes: notes.trim() },
      }, (r) => booking.issueQuote(r))).then(ok('staff.orders.quoted'));
    } else if (form === 'receive') {
      const n = Number(count);
      if (!Number.isInteger(n) || n < 1) { setMissing(() => t('staff.orders.badCount')); return; }
      void act.run(() => mutate('receiveSamples', { name: o.name, receivedSampleCount: n, conditionNotes: notes.trim() }, (r) => booking.receiveSamples(r)))
        .then(ok('staff.orders.received'));
    } else if (form === 'schedule') {
      const s = zonedTs(start, zone), e = zonedTs(end, zone);
      if (!s || !e) { setMissing(() => t('staff.orders.badInterval')); return; }
      void act.run(() => mutate('scheduleService', { name: o.name, interval: { startTime: s, endTime: e }, operatorUser: me }, (r) => booking.scheduleService(r)))
        .then(ok('staff.orders.scheduled'));
    } else if (form === 'report') {
      if (!uri.trim()) { setMissing(() => t('staff.orders.uriRequired')); return; }
      if (sha.trim() && !/^[0-9a-fA-F]{64}$/.test(sha.trim())) { setMissing(() => t('staff.orders.badSha')); return; }
      void act.run(() => mutate('deliverReport', { name: o.name, report: { uri: uri.trim(), sha256: sha.trim().toLowerCase(), summary: summary.trim() } }, (r) => booking.deliverReport(r)))
        .then(ok('staff.orders.delivered'));
    }
  };
  const start_ = () => act.run(() => mutate('startService', { name: o.name }, (r) => booking.startService(r)))
    .then((r) => r && onDone(() => t('staff.orders.started', { id, state: stateWord(r.state) })));
  const toggle = (f: Form) => { setForm(form === f ? undefined : f); setMissing(''); setNotes(''); };
  const report = o.reports[o.reports.length - 1];

  return (
    <>
      <tr data-testid={`order-${id}`}>
        <td>{entry?.displayName ?? o.serviceEntryId}<div class="muted">{instrumentLabel(world, o.instrument)} · {id}</div></td>
        <td><OrgName name={o.clientOrganization} /><div class="muted">{idOf(o.requester)}</div></td>
        <td><span class="num">{o.receivedSampleCount || o.sampleCount}</span>
          {o.sampleDescription && <div class="muted">{o.sampleDescription}</div>}</td>
        <td><span class="staff-badge">{stateWord(o.state)}</span>
          {o.state === S.DISPUTED && o.disputeReason && <div class="muted">{t('staff.orders.disputed', { reason: o.disputeReason })}</div>}
          {o.state === S.REPORT_DELIVERED && isSet(o.reportAcceptDeadline) &&
            <div class="muted" data-testid={`report-deadline-${id}`}>{t('staff.orders.autoAcceptAt', { when: when(o.reportAcceptDeadline, zone) })}</div>}
          {o.state === S.COMPLETED && o.reportAutoAccepted &&
            <div class="muted" data-testid={`report-auto-accepted-${id}`}>{t('staff.orders.autoAccepted', { when: when(o.reportAcceptTime, zone) })}</div>}
          {isSet(o.requestedCompletionTime) && <div class="muted">{t('staff.orders.wish', { when: when(o.requestedCompletionTime, zone) })}</div>}</td>
        <td>{o.quote ? (<>
          <div data-testid={`quote-total-${id}`}>{money(o.quote.total)}</div>
          <div class="muted">{t('staff.orders.validUntil', { when: when(o.quote.validUntil, zone) })}</div></>) : '—'}</td>
        <td>{o.scheduledInterval ? <>{span(o.scheduledInterval, zone)}<Zone zone={zone} /></> : '—'}
          {report && <div class="muted">{t('staff.orders.reportAt', { when: when(report.deliverTime, zone) })}: {webLink(report.uri) ? <a href={webLink(report.uri)} rel="noopener noreferrer">{report.uri}</a> : <code>{report.uri}</code>}</div>}</td>
        <td>
          <div class="staff-actions">
            {(o.state === S.REQUESTED || o.state === S.QUOTED || o.state === S.QUOTE_ACCEPTED) &&
              <button type="button" class={o.state === S.REQUESTED ? 'primary' : ''} aria-expanded={form === 'quote'} onClick={() => toggle('quote')}>
                {o.quote ? t('staff.orders.requote') : t('staff.orders.issueQuote')}</button>}
            {o.state === S.QUOTE_ACCEPTED && <button type="button" class="primary" aria-expanded={form === 'receive'} onClick={() => toggle('receive')}>{t('staff.orders.receive')}</button>}
            {(o.state === S.SAMPLES_RECEIVED || o.state === S.SCHEDULED) && <button type="button" class={o.state === S.SAMPLES_RECEIVED ? 'primary' : ''}
              aria-expanded={form === 'schedule'} onClick={() => toggle('schedule')}>{o.state === S.SCHEDULED ? t('staff.orders.reschedule') : t('staff.orders.schedule')}</button>}
            {o.state === S.SCHEDULED && <button type="button" class="primary" disabled={act.busy} onClick={() => void start_()}>{t('staff.orders.start')}</button>}
            {(o.state === S.IN_PROGRESS || o.state === S.DISPUTED) && <button type="button" class="primary" aria-expanded={form === 'report'} onClick={() => toggle('report')}>
              {o.state === S.DISPUTED ? t('staff.orders.revisedReport') : t('staff.orders.deliver')}</button>}
          </div>
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {form && (
        <tr class="staff-sub">
          <td colSpan={7}>
            <h3>{t(`staff.orders.form.${form}`, { id })}</h3>
            <div class="staff-form">
              {form === 'quote' && (<>
                <label class="field"><span>{t('staff.orders.perSample', { currency, n: o.sampleCount })}</span>
                  <input inputMode="decimal" value={fee} onFocus={() => { feeTouched.current = true; }}
                    onInput={(e) => setFee((e.target as HTMLInputElement).value)} /></label>
                <label class="field"><span>{t('staff.orders.staffHours')}</span>
                  <input inputMode="decimal" value={staffHours} onInput={(e) => setStaffHours((e.target as HTMLInputElement).value)} /></label>
                <label class="field"><span>{t('staff.orders.staffFee', { currency })}</span>
                  <input inputMode="decimal" value={staffFee} onInput={(e) => setStaffFee((e.target as HTMLInputElement).value)} /></label>
                <label class="field"><span>{t('staff.orders.consumables', { currency })}</span>
                  <input inputMode="decimal" value={consumables} onInput={(e) => setConsumables((e.target as HTMLInputElement).value)} /></label>
                <label class="field"><span>{t('staff.orders.validUntilField', { zone })}</span>
                  <input type="datetime-local" value={validUntil} onInput={(e) => setValidUntil((e.target as HTMLInputElement).value)} /></label>
                <QuoteTotal fee={fee} n={o.sampleCount} staffFee={staffFee} consumables={consumables} currency={currency} />
              </>)}
              {form === 'receive' && (
                <label class="field"><span>{t('staff.orders.receivedCount', { n: o.sampleCount })}</span>
                  <input inputMode="numeric" value={count} onInput={(e) => setCount((e.target as HTMLInputElement).value)} /></label>
              )}
              {form === 'schedule' && (<>
                <label class="field"><span>{t('staff.orders.runStart', { zone })}</span>
                  <input type="datetime-local" value={start} onInput={(e) => setStart((e.target as HTMLInputElement).value)} /></label>
                <label class="field"><span>{t('staff.orders.runEnd', { zone })}</span>
                  <input type="datetime-local" value={end} onInput={(e) => setEnd((e.target as HTMLInputElement).value)} /></label>
                <p class="muted wide">{t('staff.orders.operatorIsMe', { me: idOf(me) })}</p>
              </>)}
              {form === 'report' && (<>
                <label class="field wide"><span>{t('staff.orders.uri')}</span>
                  <input type="url" value={uri} onInput={(e) => setUri((e.target as HTMLInputElement).value)} /></label>
                <label class="field wide"><span>{t('staff.orders.sha')}</span>
                  <input value={sha} spellcheck={false} onInput={(e) => setSha((e.target as HTMLInputElement).value)} /></label>
                <label class="field wide"><span>{t('staff.orders.summary')}</span>
                  <textarea value={summary} onInput={(e) => setSummary((e.target as HTMLTextAreaElement).value)} /></label>
              </>)}
              {(form === 'quote' || form === 'receive') && (
                <label class="field wide"><span>{t(form === 'quote' ? 'staff.orders.quoteNotes' : 'staff.orders.condition')}</span>
                  <textarea value={notes} onInput={(e) => setNotes((e.target as HTMLTextAreaElement).value)} /></label>
              )}
              <FieldError text={missing} />
              <div class="buttons">
                <button type="button" class="primary" disabled={act.busy} onClick={submit}>{t(`staff.orders.confirm.${form}`)}</button>
                <button type="button" onClick={() => setForm(undefined)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}

function QuoteTotal({ fee, n, staffFee, consumables, currency }: { fee: string; n: number; staffFee: string; consumables: string; currency: string }) {
  const f = parseAmount(fee, currency), s = parseAmount(staffFee || '0', currency), c = parseAmount(consumables || '0', currency);
  if (!f || !s || !c) return null;
  const total = { ...f, amountMinor: f.amountMinor * BigInt(n) + s.amountMinor + c.amountMinor };
  return <p class="wide">{t('staff.orders.totalPreview', { total: money(total) })}</p>;
}

