// #/staff/leases: leases of the staff's instruments by state, with what the
// owner's staff do next: handover with condition notes (RecordHandover),
// return with condition, damage notes and amount (RecordReturn), close with
// the deposit settlement (CloseLease), extend the term (ExtendLease).
import { useState } from 'preact/hooks';
import { LeaseContract_RateBasis, Lease_State, type Lease } from '../../../../gen/labshare/booking/v1/booking_pb';
import { booking } from '../../api';
import { money } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  FieldError, FilterSelect, OrgName, StaffHeader, Zone, currencyOf, instrumentLabel, parseAmount, span, useOnMyInstruments, useStaffWorld, when, zoneOf, zonedTs, type StaffWorld,
} from './common';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { ErrorBox, StatusBox, useAction, ColumnHeads, useRequestId, useWorded, type Worded } from '../../ui';
import { idOf } from '../../names';
import { dateToZonedInput } from '../../zones';

const FILTERS: Record<string, Lease_State[]> = {
  active: [Lease_State.APPROVED, Lease_State.HANDED_OVER, Lease_State.RETURNED],
  requested: [Lease_State.REQUESTED],
  ended: [Lease_State.CLOSED, Lease_State.REJECTED, Lease_State.CANCELLED],
  all: [],
};

export default function Leases({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const { world, error } = useStaffWorld();
  const [filter, setFilter] = useState(params.state && params.state in FILTERS ? params.state : 'active');
  const [status, setStatus] = useWorded();
  const [tick, setTick] = useState(0);

  const { items: leases, error: loadError } = useOnMyInstruments(world, async (pageToken) => {
    const r = await booking.listLeases({ pageSize: 200, pageToken, states: FILTERS[filter] ?? [], orderBy: 'start_time desc' });
    return { items: r.leases, next: r.nextPageToken };
  }, [filter, tick]);

  return (
    <section>
      <StaffHeader title={t('staff.leases.title')} current="#/staff/leases" />
      <p class="muted">{t('staff.leases.intro')}</p>
      <FilterSelect testid="lease-filter" filters={Object.keys(FILTERS)} prefix="staff.leases.filter" value={filter} onChange={setFilter} />
      <ErrorBox error={error ?? loadError} />
      <StatusBox testid="leases-status">{status}</StatusBox>
      {!world || !leases ? (!error && !loadError && <p aria-busy="true">{t('app.loading')}</p>) : leases.length === 0 ? (
        <p class="muted">{t('staff.leases.none')}</p>
      ) : (
        <div class="table-wrap">
          <table class="stack" data-testid="leases">
            <ColumnHeads prefix="staff." cols={['col.instrument', 'col.lessee', 'col.term', 'col.state', 'leases.contract', 'col.actions']} />
            <tbody>
              {leases.map((l) => <LeaseRow key={l.name} l={l} world={world}
                onDone={(m) => { setStatus(m); setTick((n) => n + 1); }} />)}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

type Form = 'handover' | 'return' | 'close' | 'extend';

function LeaseRow({ l, world, onDone }: { l: Lease; world: StaffWorld; onDone: (m: Worded) => void }) {
  const mutate = useRequestId();
  const zone = zoneOf(world, l.instrument);
  const currency = l.contract?.rate?.currencyCode || currencyOf(world.instruments.find((i) => i.name === l.instrument));
  const id = idOf(l.name);
  const act = useAction();
  const [form, setForm] = useState<Form>();
  const [notes, setNotes] = useState('');
  const [damageNotes, setDamageNotes] = useState('');
  const [damage, setDamage] = useState('0');
  const [newEnd, setNewEnd] = useState(l.term?.endTime ? dateToZonedInput(new Date(timestampDate(l.term.endTime).getTime() + 7 * 86400e3), zone) : '');
  const [missing, setMissing] = useWorded();
  const stateWord = (s: Lease_State) => t(`staff.leaseState.${Lease_State[s]}`);

  const submit = () => {
    setMissing('');
    if (form === 'handover') {
      if (!notes.trim()) { setMissing(() => t('staff.leases.conditionRequired')); return; }
      void act.run(() => mutate('recordHandover', { name: l.name, conditionNotes: notes.trim() }, (r) => booking.recordHandover(r)))
        .then((r) => r && onDone(() => t('staff.leases.handedOver', { id, state: stateWord(r.state) })));
    } else if (form === 'return') {
      if (!notes.trim()) { setMissing(() => t('staff.leases.conditionRequired')); return; }
      const d = parseAmount(damage || '0', currency);
      if (!d) { setMissing(() => t('staff.leases.badDamage')); return; }
      void act.run(() => mutate('recordReturn', {
        name: l.name, conditionNotes: notes.trim(), damageNotes: damageNotes.trim(),
        damageAmount: d.amountMinor > 0n ? d : undefined,
      }, (r) => booking.recordReturn(r))).then((r) => r && onDone(() => t('staff.leases.returned', { id, state: stateWord(r.state) })));
    } else if (form === 'close') {
      void act.run(() => mutate('closeLease', { name: l.name, notes: notes.trim() }, (r) => booking.closeLease(r)))
        .then((r) => r && onDone(() => t('staff.leases.closed', {
          id, applied: money(r.settlement?.depositApplied), released: money(r.settlement?.depositReleased),
          outstanding: money(r.settlement?.damageOutstanding),
        })));
    } else if (form === 'extend') {
      const end = zonedTs(newEnd, zone);
      if (!end) { setMissing(() => t('staff.leases.badEnd')); return; }
      void act.run(() => mutate('extendLease', { name: l.name, newEndTime: end, note: notes.trim(), etag: l.etag }, (r) => booking.extendLease(r)))
        .then((r) => r && onDone(() => t('staff.leases.extended', { id, end: when(r.term?.endTime, zone) })));
    }
  };

  const canExtend = l.state === Lease_State.APPROVED || l.state === Lease_State.HANDED_OVER;
  const toggle = (f: Form) => { setForm(form === f ? undefined : f); setNotes(''); setMissing(''); };
  return (
    <>
      <tr data-testid={`lease-${id}`}>
        <td>{instrumentLabel(world, l.instrument)}<div class="muted">{id}</div></td>
        <td><OrgName name={l.lesseeOrganization} /><div class="muted">{idOf(l.contactUser)}</div></td>
        <td>{span(l.term, zone)}<Zone zone={zone} />
          {l.extensions.length > 0 && <div class="muted">{t('staff.leases.extendedTimes', { n: l.extensions.length })}</div>}</td>
        <td>
          <span class="staff-badge">{stateWord(l.state)}</span>
          {l.handover && <div class="muted">{t('staff.leases.handoverAt', { when: when(l.handover.handoverTime, zone), notes: l.handover.conditionNotes })}</div>}
          {l.returnRecord && <div class="muted">{t('staff.leases.returnAt', { when: when(l.returnRecord.returnTime, zone), notes: l.returnRecord.conditionNotes })}
            {l.returnRecord.earlyReturn && ` · ${t('staff.leases.early')}`}{l.returnRecord.lateReturn && ` · ${t('staff.leases.late')}`}</div>}
          {l.cancelledByOutage && <div class="muted">{t('staff.leases.byOutage')}</div>}
          {l.endReason && <div class="muted">{l.endReason}</div>}
        </td>
        <td>
          {l.contract ? (
            <>
              <div>{money(l.contract.rate)} / {t(`staff.rateBasis.unit.${LeaseContract_RateBasis[l.contract.rateBasis]}`)}</div>
              <div class="muted">{t('staff.leases.deposit', { amount: money(l.contract.deposit) })}</div>
            </>
          ) : '—'}
          {l.settlement && (
            <div class="muted" data-testid={`settlement-${id}`}>
              {t('staff.leases.settlement', { applied: money(l.settlement.depositApplied), released: money(l.settlement.depositReleased),
                outstanding: money(l.settlement.damageOutstanding) })}
            </div>
          )}
        </td>
        <td>
          <div class="staff-actions">
            {l.state === Lease_State.APPROVED && <button type="button" class="primary" aria-expanded={form === 'handover'} onClick={() => toggle('handover')}>{t('staff.leases.handover')}</button>}
            {l.state === Lease_State.HANDED_OVER && <button type="button" class="primary" aria-expanded={form === 'return'} onClick={() => toggle('return')}>{t('staff.leases.return')}</button>}
            {l.state === Lease_State.RETURNED && <button type="button" class="primary" aria-expanded={form === 'close'} onClick={() => toggle('close')}>{t('staff.leases.close')}</button>}
            {canExtend && <button type="button" aria-expanded={form === 'extend'} onClick={() => toggle('extend')}>{t('staff.leases.extend')}</button>}
            {l.state === Lease_State.REQUESTED && <a href="#/staff/approvals">{t('staff.leases.toApprovals')}</a>}
          </div>
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {form && (
        <tr class="staff-sub">
          <td colSpan={6}>
            <h3>{t(`staff.leases.form.${form}`, { id })}</h3>
            <div class="staff-form">
              {form === 'extend' && (
                <label class="field">
                  <span>{t('staff.leases.newEnd', { zone })}</span>
                  <input type="datetime-local" value={newEnd} onInput={(e) => setNewEnd((e.target as HTMLInputElement).value)} />
                </label>
              )}
              <label class="field wide">
                <span>{t(form === 'handover' || form === 'return' ? 'staff.leases.condition' : 'staff.leases.notes')}</span>
                <textarea value={notes} onInput={(e) => setNotes((e.target as HTMLTextAreaElement).value)} />
              </label>
              {form === 'return' && (
                <>
                  <label class="field wide">
                    <span>{t('staff.leases.damageNotes')}</span>
                    <textarea value={damageNotes} onInput={(e) => setDamageNotes((e.target as HTMLTextAreaElement).value)} />
                  </label>
                  <label class="field">
                    <span>{t('staff.leases.damageAmount', { currency })}</span>
                    <input inputMode="decimal" value={damage} onInput={(e) => setDamage((e.target as HTMLInputElement).value)} />
                  </label>
                </>
              )}
              {form === 'close' && l.contract && (
                <p class="muted wide">{t('staff.leases.closeNote', { deposit: money(l.contract.deposit), damage: money(l.returnRecord?.damageAmount) })}</p>
              )}
              <FieldError text={missing} />
              <div class="buttons">
                <button type="button" class="primary" disabled={act.busy} onClick={submit}>{t(`staff.leases.confirm.${form}`)}</button>
                <button type="button" onClick={() => setForm(undefined)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}
