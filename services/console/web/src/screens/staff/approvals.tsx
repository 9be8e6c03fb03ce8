// #/staff/approvals: what waits for the owner's decision on the staff's
// instruments: PENDING_APPROVAL bookings (ApproveBooking / RejectBooking with
// a reason) and REQUESTED leases (ApproveLease with a contract: rate basis,
// rate, deposit; RejectLease).
import { useEffect, useState } from 'preact/hooks';
import { Booking_ApprovalReason, Booking_State, LeaseContract_RateBasis, Lease_State,
  type Booking, type Lease } from '../../../../gen/labshare/booking/v1/booking_pb';
import { LeaseRateBasis, RateUnit } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import { explain, type ShownError } from '../../errors';
import { money, moneyText } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  FieldError, OrgName, StaffHeader, Zone, currencyOf, instrumentLabel, modeLabel, parseAmount, span, useStaffWorld, when, zoneOf, type StaffWorld,
} from './common';
import { ErrorBox, StatusBox, useAction, ColumnHeads, useRequestId, useWorded, type Worded } from '../../ui';
import { idOf, listAll } from '../../names';

interface Queue { bookings: Booking[]; leases: Lease[] }

export default function Approvals(_: { params: Record<string, string> }) {
  useSignal(lang);
  const { world, error } = useStaffWorld();
  const [queue, setQueue] = useState<Queue>();
  const [loadError, setLoadError] = useState<ShownError>();
  const [status, setStatus] = useWorded();
  const [tick, setTick] = useState(0);

  useEffect(() => {
    if (!world) return;
    let live = true;
    const mine = new Set(world.instruments.map((i) => i.name));
    void (async () => {
      try {
        const [bookings, leases] = await Promise.all([
          listAll(async (pageToken) => {
            const r = await booking.listBookings({ pageSize: 200, pageToken, states: [Booking_State.PENDING_APPROVAL] });
            return { items: r.bookings, next: r.nextPageToken };
          }),
          listAll(async (pageToken) => {
            const r = await booking.listLeases({ pageSize: 200, pageToken, states: [Lease_State.REQUESTED] });
            return { items: r.leases, next: r.nextPageToken };
          }),
        ]);
        if (!live) return;
        setLoadError(undefined);
        setQueue({
          bookings: bookings.filter((b) => mine.has(b.instrument) && b.mode !== SharingMode.LEASE),
          leases: leases.filter((l) => mine.has(l.instrument)),
        });
      } catch (err) {
        if (live) setLoadError(explain(err));
      }
    })();
    return () => { live = false; };
  }, [world, tick]);

  const done = (msg: Worded) => { setStatus(msg); setTick((n) => n + 1); };

  return (
    <section>
      <StaffHeader title={t('staff.approvals.title')} current="#/staff/approvals" />
      <p class="muted">{t('staff.approvals.intro')}</p>
      <ErrorBox error={error ?? loadError} />
      <StatusBox testid="approvals-status">{status}</StatusBox>
      {!world || !queue ? (!error && !loadError && <p aria-busy="true">{t('app.loading')}</p>) : (
        <>
          <h2>{t('staff.approvals.bookings', { n: queue.bookings.length })}</h2>
          {queue.bookings.length === 0 ? <p class="muted" data-testid="approvals-empty">{t('staff.approvals.noBookings')}</p> : (
            <div class="table-wrap">
              <table class="stack" data-testid="approvals-bookings">
                <ColumnHeads prefix="staff.col." cols={['instrument', 'requester', 'time', 'why', 'actions']} />
                <tbody>
                  {queue.bookings.map((b) => <BookingRow key={b.name} b={b} world={world} onDone={done} />)}
                </tbody>
              </table>
            </div>
          )}
          <h2 class="staff-section">{t('staff.approvals.leases', { n: queue.leases.length })}</h2>
          {queue.leases.length === 0 ? <p class="muted">{t('staff.approvals.noLeases')}</p> : (
            <div class="table-wrap">
              <table class="stack" data-testid="approvals-leases">
                <ColumnHeads prefix="staff.col." cols={['instrument', 'lessee', 'term', 'purpose', 'actions']} />
                <tbody>
                  {queue.leases.map((l) => <LeaseRow key={l.name} l={l} world={world} onDone={done} />)}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}

function BookingRow({ b, world, onDone }: { b: Booking; world: StaffWorld; onDone: (m: Worded) => void }) {
  const mutate = useRequestId();
  const zone = zoneOf(world, b.instrument);
  const act = useAction();
  const [rejecting, setRejecting] = useState(false);
  const [note, setNote] = useState('');
  const [reason, setReason] = useState('');
  const [missing, setMissing] = useWorded();
  const id = idOf(b.name);

  const approve = () => act.run(
    () => mutate('approveBooking', { name: b.name, note, etag: b.etag }, (r) => booking.approveBooking(r)),
  ).then((r) => r && onDone(() => t('staff.approvals.approved', {
    id, instrument: instrumentLabel(world, r.instrument), state: t(`staff.bookingState.${Booking_State[r.state]}`),
  })));
  const reject = () => {
    if (!reason.trim()) { setMissing(() => t('staff.approvals.reasonRequired')); return; }
    setMissing('');
    void act.run(() => mutate('rejectBooking', { name: b.name, reason: reason.trim(), etag: b.etag }, (r) => booking.rejectBooking(r)))
      .then((r) => r && onDone(() => t('staff.approvals.rejected', { id, instrument: instrumentLabel(world, r.instrument) })));
  };

  return (
    <>
      <tr data-testid={`approval-${id}`}>
        <td>{instrumentLabel(world, b.instrument)}<div class="muted">{modeLabel(b.mode)} · {id}</div></td>
        <td>{idOf(b.user)}<div class="muted"><OrgName name={b.userOrganization || b.payerOrganization} /></div></td>
        <td>{span(b.reservedInterval, zone)}<Zone zone={zone} /></td>
        <td>
          <span class="staff-badge warn">{t(`staff.approvalReason.${Booking_ApprovalReason[b.approvalReason]}`)}</span>
          {b.purpose && <div>{b.purpose}</div>}
          <div class="muted">{t('staff.approvals.requestedAt', { when: when(b.createTime, zone) })}</div>
        </td>
        <td>
          <div class="staff-actions">
            <button type="button" class="primary" disabled={act.busy} onClick={() => void approve()}
              aria-label={t('staff.approvals.approveLabel', { id })}>{t('staff.approve')}</button>
            <button type="button" disabled={act.busy} aria-expanded={rejecting}
              onClick={() => setRejecting(!rejecting)} aria-label={t('staff.approvals.rejectLabel', { id })}>{t('staff.reject')}</button>
          </div>
          <label class="field" style="margin-top:6px">
            <span>{t('staff.approvals.note')}</span>
            <input value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} />
          </label>
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {rejecting && (
        <tr class="staff-sub">
          <td colSpan={5}>
            <div class="staff-form">
              <label class="field wide">
                <span>{t('staff.approvals.rejectReason')}</span>
                <textarea required value={reason} onInput={(e) => setReason((e.target as HTMLTextAreaElement).value)} />
              </label>
              <FieldError text={missing} />
              <div class="buttons">
                <button type="button" class="danger" disabled={act.busy} onClick={reject}>{t('staff.approvals.confirmReject')}</button>
                <button type="button" onClick={() => setRejecting(false)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}

function LeaseRow({ l, world, onDone }: { l: Lease; world: StaffWorld; onDone: (m: Worded) => void }) {
  const mutate = useRequestId();
  const zone = zoneOf(world, l.instrument);
  const ins = world.instruments.find((i) => i.name === l.instrument);
  const currency = currencyOf(ins);
  const rules = ins?.modes.find((m) => m.mode === SharingMode.LEASE)?.leaseRules;
  const act = useAction();
  const [form, setForm] = useState<'approve' | 'reject'>();
  const [basis, setBasis] = useState<LeaseContract_RateBasis>(
    rules?.rateBasis === LeaseRateBasis.PER_MONTH ? LeaseContract_RateBasis.MONTHLY : LeaseContract_RateBasis.DAILY);
  const [rate, setRate] = useState('');
  const [deposit, setDeposit] = useState(moneyText(rules?.deposit));
  const [terms, setTerms] = useState('');
  const [reason, setReason] = useState('');
  const [missing, setMissing] = useWorded();
  const id = idOf(l.name);

  // The rate card line for the lessee's class, as the usual contract rate.
  useEffect(() => {
    if (form !== 'approve' || rate) return;
    let live = true;
    inventory.lookupRate({
      instrument: l.instrument, mode: SharingMode.LEASE, payerOrganization: l.lesseeOrganization,
      time: l.term?.startTime ?? l.createTime,
    }).then((r) => {
      if (!live || !r.rate?.price) return;
      setRate(moneyText(r.rate.price));
      if (r.rate.unit === RateUnit.RATE_PER_MONTH) setBasis(LeaseContract_RateBasis.MONTHLY);
      if (r.rate.unit === RateUnit.RATE_PER_DAY) setBasis(LeaseContract_RateBasis.DAILY);
    }, () => undefined);
    return () => { live = false; };
  }, [form]);

  const approve = () => {
    const r = parseAmount(rate, currency);
    const d = parseAmount(deposit || '0', currency);
    if (!r || r.amountMinor <= 0n) { setMissing(() => t('staff.leaseForm.badRate')); return; }
    if (!d) { setMissing(() => t('staff.leaseForm.badDeposit')); return; }
    setMissing('');
    void act.run(() => mutate('approveLease', {
      name: l.name, etag: l.etag,
      contract: { rateBasis: basis, rate: r, deposit: d, termsNotes: terms },
    }, (r) => booking.approveLease(r))).then((x) => x && onDone(() => t('staff.approvals.leaseApproved', {
      id, rate: money(x.contract?.rate), basis: t(`staff.rateBasis.${LeaseContract_RateBasis[basis]}`), deposit: money(x.contract?.deposit),
    })));
  };
  const reject = () => {
    if (!reason.trim()) { setMissing(() => t('staff.approvals.reasonRequired')); return; }
    setMissing('');
    void act.run(() => mutate('rejectLease', { name: l.name, reason: reason.trim(), etag: l.etag }, (r) => booking.rejectLease(r)))
      .then((x) => x && onDone(() => t('staff.approvals.leaseRejected', { id })));
  };

  return (
    <>
      <tr data-testid={`lease-approval-${id}`}>
        <td>{instrumentLabel(world, l.instrument)}<div class="muted">{id}</div></td>
        <td><OrgName name={l.lesseeOrganization} /><div class="muted">{idOf(l.contactUser)}</div></td>
        <td>{span(l.term, zone)}<Zone zone={zone} /></td>
        <td>{l.purpose || '—'}</td>
        <td>
          <div class="staff-actions">
            <button type="button" class="primary" aria-expanded={form === 'approve'}
              onClick={() => setForm(form === 'approve' ? undefined : 'approve')}>{t('staff.approvals.approveLease')}</button>
            <button type="button" aria-expanded={form === 'reject'}
              onClick={() => setForm(form === 'reject' ? undefined : 'reject')}>{t('staff.reject')}</button>
          </div>
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {form === 'approve' && (
        <tr class="staff-sub">
          <td colSpan={5}>
            <h3>{t('staff.leaseForm.title')}</h3>
            <div class="staff-form">
              <label class="field">
                <span>{t('staff.leaseForm.basis')}</span>
                <select value={String(basis)} onChange={(e) => setBasis(Number((e.target as HTMLSelectElement).value))}>
                  <option value={String(LeaseContract_RateBasis.DAILY)}>{t('staff.rateBasis.DAILY')}</option>
                  <option value={String(LeaseContract_RateBasis.MONTHLY)}>{t('staff.rateBasis.MONTHLY')}</option>
                </select>
              </label>
              <label class="field">
                <span>{t('staff.leaseForm.rate', { currency })}</span>
                <input inputMode="decimal" value={rate} onInput={(e) => setRate((e.target as HTMLInputElement).value)} />
              </label>
              <label class="field">
                <span>{t('staff.leaseForm.deposit', { currency })}</span>
                <input inputMode="decimal" value={deposit} onInput={(e) => setDeposit((e.target as HTMLInputElement).value)} />
              </label>
              <label class="field wide">
                <span>{t('staff.leaseForm.terms')}</span>
                <textarea value={terms} onInput={(e) => setTerms((e.target as HTMLTextAreaElement).value)} />
              </label>
              <FieldError text={missing} />
              <div class="buttons">
                <button type="button" class="primary" disabled={act.busy} onClick={approve}>{t('staff.leaseForm.confirm')}</button>
                <button type="button" onClick={() => setForm(undefined)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
      {form === 'reject' && (
        <tr class="staff-sub">
          <td colSpan={5}>
            <div class="staff-form">
              <label class="field wide">
                <span>{t('staff.approvals.rejectReason')}</span>
                <textarea value={reason} onInput={(e) => setReason((e.target as HTMLTextAreaElement).value)} />
              </label>
              <FieldError text={missing} />
              <div class="buttons">
                <button type="button" class="danger" disabled={act.busy} onClick={reject}>{t('staff.approvals.confirmReject')}</button>
                <button type="button" onClick={() => setForm(undefined)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}
