// Request a lease (RequestLease): the term in the facility's time zone and
// the purpose; "Check" runs every rule without writing (validate_only).
import { useEffect, useState } from 'preact/hooks';
import type { Instrument, LookupRateResponse } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import type { Lease } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import type { ShownError } from '../../errors';
import { money, hoursNumber } from '../../format';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import { instrumentWithZone, isoDay, leaseStateWord, msTs, parseDay, rangeText, todayWall } from './common';
import './lab.css';
import { ErrorBox, StatusBox, useRequestId, useWorded } from '../../ui';
import { explain } from '../../errors';
import { allInstruments, idOf } from '../../names';
import { fromWall, zoneLabel } from '../../zones';

const DAY = 86_400_000;

export default function LabLeaseNew({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const s = useSignal(session);
  const [all, setAll] = useState<Instrument[]>([]);
  const [id, setId] = useState(params.instrument ?? '');
  const [inst, setInst] = useState<{ instrument: Instrument; zone: string; facility?: string }>();
  const [rate, setRate] = useState<LookupRateResponse>();
  const [from, setFrom] = useState(params.from ?? '');
  const [fromTime, setFromTime] = useState('09:00');
  const [to, setTo] = useState(params.to ?? '');
  const [toTime, setToTime] = useState('09:00');
  const [purpose, setPurpose] = useState('');
  const [error, setError] = useState<ShownError>();
  const [checked, setChecked] = useWorded();
  const [done, setDone] = useState<Lease>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    allInstruments().then((i) => setAll(i.filter((x) => x.modes.some((m) => m.mode === SharingMode.LEASE))), (e) => setError(explain(e)));
  }, []);
  useEffect(() => {
    if (!id) return;
    let live = true;
    setRate(undefined);
    instrumentWithZone(id).then((r) => {
      if (!live) return;
      setInst({ instrument: r.instrument, zone: r.zone, facility: r.facility?.displayName });
      const today = todayWall(r.zone);
      if (!from) setFrom(isoDay(today + 7 * DAY));
      if (!to) setTo(isoDay(today + 14 * DAY));
      inventory.lookupRate({ instrument: r.instrument.name, mode: SharingMode.LEASE, payerOrganization: s.organization ?? '' })
        .then((x) => live && setRate(x), () => undefined);
    }, (e) => live && setError(explain(e)));
    return () => { live = false; };
  }, [id]);

  const rules = inst?.instrument.modes.find((m) => m.mode === SharingMode.LEASE)?.leaseRules;
  function term() {
    const z = inst?.zone ?? 'Asia/Shanghai';
    const at = (d: string, tm: string) => {
      const day = parseDay(d) ?? 0;
      const [h, m] = tm.split(':').map(Number);
      return fromWall(day + ((h ?? 0) * 60 + (m ?? 0)) * 60000, z);
    };
    return { startTime: msTs(at(from, fromTime)), endTime: msTs(at(to, toTime)) };
  }
  async function send(validateOnly: boolean) {
    if (!inst) return;
    setBusy(true);
    setError(undefined);
    setChecked('');
    setDone(undefined);
    try {
      const l = await mutate('requestLease', {
        validateOnly,
        lease: { instrument: inst.instrument.name, term: term(), purpose },
      }, (r) => booking.requestLease(r));
      if (validateOnly) setChecked(() => t('lab.lease.checkedOk'));
      else setDone(l);
    } catch (e) {
      setError(explain(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section>
      <h1>{t('lab.lease.title')}</h1>
      <form class="card" onSubmit={(e) => { e.preventDefault(); void send(false); }} data-testid="lease-form">
        <div class="row">
          <label class="field">{t('lab.search.instrument')}
            <select value={id} onChange={(e) => setId((e.target as HTMLSelectElement).value)} data-testid="lease-instrument" required>
              <option value="">—</option>
              {all.map((i) => <option key={i.name} value={idOf(i.name)}>{i.displayName} ({idOf(i.name)})</option>)}
            </select>
          </label>
        </div>
        {inst && (
          <p class="muted" data-testid="lease-rules">
            {inst.facility} · {t('lab.lease.zone', { zone: zoneLabel(inst.zone) })}<br />
            {rules && t('lab.lease.rules', {
              min: rules.minTermDays, max: rules.maxTermDays, handover: hoursNumber(rules.handoverBuffer?.seconds),
              ret: hoursNumber(rules.returnBuffer?.seconds), deposit: money(rules.deposit),
            })}
            {rate?.rate?.price && <><br />{t('lab.lease.rate', { rate: money(rate.rate.price) })}</>}
          </p>
        )}
        <div class="row">
          <label class="field">{t('lab.lease.from')}<input type="date" value={from} required data-testid="lease-from" onInput={(e) => setFrom((e.target as HTMLInputElement).value)} /></label>
          <label class="field">{t('lab.lease.at')}<input type="time" value={fromTime} required onInput={(e) => setFromTime((e.target as HTMLInputElement).value)} /></label>
          <label class="field">{t('lab.lease.to')}<input type="date" value={to} required data-testid="lease-to" onInput={(e) => setTo((e.target as HTMLInputElement).value)} /></label>
          <label class="field">{t('lab.lease.at')}<input type="time" value={toTime} required onInput={(e) => setToTime((e.target as HTMLInputElement).value)} /></label>
        </div>
        <label class="field">{t('lab.lease.purpose')}
          <textarea rows={2} value={purpose} data-testid="lease-purpose" onInput={(e) => setPurpose((e.target as HTMLTextAreaElement).value)} />
        </label>
        <ErrorBox error={error} />
        {checked && <StatusBox>{checked}</StatusBox>}
        {done && (
          <StatusBox>
            <span data-testid="lease-done">{t('lab.lease.done', {
              name: idOf(done.name), state: leaseStateWord(done.state),
              term: rangeText(done.term?.startTime, done.term?.endTime, inst?.zone ?? 'Asia/Shanghai'),
            })}</span>{' '}<a href="#/lab/bookings">{t('lab.cal.toBookings')}</a>
          </StatusBox>
        )}
        <div class="row lab-actions">
          <button type="button" disabled={busy || !inst} onClick={() => void send(true)} data-testid="lease-check">{t('lab.lease.check')}</button>
          <button type="submit" class="primary" disabled={busy || !inst} data-testid="lease-submit">{t('lab.lease.submit')}</button>
        </div>
      </form>
    </section>
  );
}
