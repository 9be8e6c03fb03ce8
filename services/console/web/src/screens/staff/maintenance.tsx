// #/staff/maintenance: declare a maintenance window or outage on one of the
// staff's instruments. Neither CreateMaintenanceWindow nor
// ApplyMaintenanceWindow has a dry run, so the preview asks ListBookings for
// the instrument's holding bookings (PENDING_APPROVAL, CONFIRMED, CHECKED_IN)
// near the window and keeps those whose *blocked* interval (reserved time
// plus buffers: what the calendar holds, and what the booking service clears)
// overlaps it. Confirming creates the window in inventory, then applies it
// on the calendar (ApplyMaintenanceWindow; the booking service also applies it
// from inventory's event, the call is idempotent) and shows what became of
// every booking. Existing windows are listed with cancel
// (CancelMaintenanceWindow, then ApplyMaintenanceWindow to unblock).
import { useEffect, useRef, useState } from 'preact/hooks';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Booking_State, type Booking, type ApplyMaintenanceWindowResponse } from '../../../../gen/labshare/booking/v1/booking_pb';
import { MaintenanceWindowState, type MaintenanceWindow, type Instrument } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { IntervalSchema, SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import { explain, type ShownError } from '../../errors';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  FieldError, OrgName, StaffHeader, Zone, modeLabel, overlaps, span, tn, useStaffWorld, weekStart, when, zoneOf, type StaffWorld,
} from './common';
import { ErrorBox, StatusBox, useAction, ColumnHeads, useRequestId, useWorded } from '../../ui';
import { idOf, listAll } from '../../names';
import { zonedInputToDate } from '../../zones';

const HOLDING = [Booking_State.PENDING_APPROVAL, Booking_State.CONFIRMED, Booking_State.CHECKED_IN];

// The largest buffer the instrument puts around a booking: how far a
// booking's reserved time may lie from the window and still block into it.
function reachSeconds(ins: Instrument | undefined): number {
  let s = 7 * 86400;
  for (const m of ins?.modes ?? []) {
    for (const d of [m.slotRules?.buffer, m.leaseRules?.handoverBuffer, m.leaseRules?.returnBuffer]) {
      if (d) s = Math.max(s, Number(d.seconds) * 2);
    }
  }
  return s;
}

// What applying the window does to a booking (booking.proto, ApplyMaintenanceWindow).
function consequence(b: Booking): string {
  if (b.mode === SharingMode.LEASE) {
    return b.state === Booking_State.CHECKED_IN ? 'staff.maint.fate.leaseConflict' : 'staff.maint.fate.leaseCancelled';
  }
  if (b.mode === SharingMode.TECHNICAL_SERVICE && b.state === Booking_State.CONFIRMED) return 'staff.maint.fate.unscheduled';
  if (b.state === Booking_State.CHECKED_IN) return 'staff.maint.fate.interrupted';
  return 'staff.maint.fate.cancelled';
}

interface Draft { instrument: string; start: string; end: string; reason: string; outage: boolean }
interface Preview { draft: Draft; startDate: Date; endDate: Date; bookings: Booking[] }
interface Done { window: MaintenanceWindow; applied?: ApplyMaintenanceWindowResponse; applyError?: ShownError; bookings: Booking[] }

export default function Maintenance({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const { world, error } = useStaffWorld();
  const monday = weekStart(params.week);
  const [draft, setDraft] = useState<Draft>({
    instrument: params.instrument ? `instruments/${params.instrument}` : '',
    start: `${monday}T09:00`, end: `${monday}T17:00`, reason: '', outage: false,
  });
  const [preview, setPreview] = useState<Preview>();
  const [done, setDone] = useState<Done>();
  const [missing, setMissing] = useWorded();
  const [tick, setTick] = useState(0);
  const act = useAction();

  useEffect(() => {
    if (world && !draft.instrument && world.instruments[0]) setDraft({ ...draft, instrument: world.instruments[0].name });
  }, [world]);

  const set = (patch: Partial<Draft>) => { setDraft({ ...draft, ...patch }); setPreview(undefined); };

  if (!world) {
    return (
      <section>
        <StaffHeader title={t('staff.maint.title')} current="#/staff/maintenance" />
        {error ? <ErrorBox error={error} /> : <p aria-busy="true">{t('app.loading')}</p>}
      </section>
    );
  }
  const zone = zoneOf(world, draft.instrument);
  const ins = world.instruments.find((i) => i.name === draft.instrument);

  const check = async () => {
    const s = zonedInputToDate(draft.start, zone);
    const e = zonedInputToDate(draft.end, zone);
    if (!draft.instrument) { setMissing(() => t('staff.maint.pickInstrument')); return; }
    if (!s || !e || e <= s) { setMissing(() => t('staff.maint.badInterval')); return; }
    if (!draft.reason.trim()) { setMissing(() => t('staff.maint.reasonRequired')); return; }
    setMissing('');
    setDone(undefined);
    const reach = reachSeconds(ins) * 1000;
    const found = await act.run(() => listAll(async (pageToken) => {
      const r = await booking.listBookings({
        pageSize: 200, pageToken, instrument: draft.instrument, states: HOLDING,
        timeRange: { startTime: timestampFromDate(new Date(s.getTime() - reach)), endTime: timestampFromDate(new Date(e.getTime() + reach)) },
      });
      return { items: r.bookings, next: r.nextPageToken };
    }));
    if (!found) return;
    setPreview({ draft, startDate: s, endDate: e, bookings: found.filter((b) => overlaps(b.blockedInterval ?? b.reservedInterval, s, e)) });
  };

  const confirm = async () => {
    if (!preview) return;
    const p = preview;
    const w = await act.run(() => mutate('createMaintenanceWindow', {
      parent: p.draft.instrument,
      maintenanceWindow: {
        interval: { startTime: timestampFromDate(p.startDate), endTime: timestampFromDate(p.endDate) },
        reason: p.draft.reason.trim(), outage: p.draft.outage,
      },
    }, (r) => inventory.createMaintenanceWindow(r)));
    if (!w) return;
    let applied: ApplyMaintenanceWindowResponse | undefined;
    let applyError: ShownError | undefined;
    try {
      applied = await mutate('applyMaintenanceWindow', { maintenanceWindow: w.name }, (r) => booking.applyMaintenanceWindow(r));
    } catch (err) {
      applyError = explain(err);
    }
    const names = new Set([...p.bookings.map((b) => b.name), ...(applied?.cancelledBookings ?? []), ...(applied?.interruptedBookings ?? [])]);
    const bookings = await Promise.all([...names].map((name) =>
      booking.getBooking({ name }).catch(() => p.bookings.find((b) => b.name === name)!)));
    setDone({ window: w, applied, applyError, bookings: bookings.filter(Boolean) });
    setPreview(undefined);
    setTick((n) => n + 1);
  };

  return (
    <section>
      <StaffHeader title={t('staff.maint.title')} current="#/staff/maintenance" />
      <p class="muted">{t('staff.maint.intro')}</p>
      <form class="card" onSubmit={(e) => { e.preventDefault(); void check(); }} aria-labelledby="maint-form">
        <h2 id="maint-form">{t('staff.maint.declare')}</h2>
        <div class="staff-form">
          <label class="field span2">
            <span>{t('staff.col.instrument')}</span>
            <select data-testid="maint-instrument" value={draft.instrument}
              onChange={(e) => set({ instrument: (e.target as HTMLSelectElement).value })}>
              {world.instruments.map((i) => <option key={i.name} value={i.name}>{i.displayName} ({idOf(i.name)})</option>)}
            </select>
          </label>
          <label class="field">
            <span>{t('staff.maint.start', { zone })}</span>
            <input type="datetime-local" data-testid="maint-start" value={draft.start}
              onInput={(e) => set({ start: (e.target as HTMLInputElement).value })} />
          </label>
          <label class="field">
            <span>{t('staff.maint.end', { zone })}</span>
            <input type="datetime-local" data-testid="maint-end" value={draft.end}
              onInput={(e) => set({ end: (e.target as HTMLInputElement).value })} />
          </label>
          <label class="field" style="flex-direction:row;gap:6px;align-items:center">
            <input type="checkbox" checked={draft.outage} onChange={(e) => set({ outage: (e.target as HTMLInputElement).checked })} />
            <span>{t('staff.maint.outage')}</span>
          </label>
          <label class="field wide">
            <span>{t('staff.maint.reason')}</span>
            <input data-testid="maint-reason" value={draft.reason} onInput={(e) => set({ reason: (e.target as HTMLInputElement).value })} />
          </label>
          <FieldError text={missing} />
          <div class="buttons">
            <button type="submit" class="primary" disabled={act.busy}>{t('staff.maint.preview')}</button>
          </div>
        </div>
      </form>
      <ErrorBox error={act.error} />

      {preview && (
        <div class="card" data-testid="maintenance-preview">
          <h2>{t('staff.maint.previewTitle')}</h2>
          <p>
            {instrumentLabel2(world, preview.draft.instrument)}: {span(create(IntervalSchema, {
              startTime: timestampFromDate(preview.startDate), endTime: timestampFromDate(preview.endDate) }), zone)}
            <Zone zone={zone} />
          </p>
          <p class="staff-count" data-testid="maintenance-preview-count">
            {preview.bookings.length === 0 ? t('staff.maint.noneHit') : tn('staff.maint.hits', preview.bookings.length)}
          </p>
          {preview.bookings.length > 0 && <BookingTable bookings={preview.bookings} zone={zone} fate testid="preview" />}
          <p class="muted">{t('staff.maint.noCharge')}</p>
          <div class="staff-actions">
            <button type="button" class="danger" data-testid="maintenance-confirm" disabled={act.busy}
              onClick={() => void confirm()}>
              {preview.bookings.length === 0 ? t('staff.maint.confirmNone') : tn('staff.maint.confirm', preview.bookings.length)}
            </button>
            <button type="button" onClick={() => setPreview(undefined)}>{t('staff.maint.change')}</button>
          </div>
        </div>
      )}

      {done && (
        <div class="card" data-testid="maintenance-done">
          <StatusBox testid="maintenance-status">
            {t('staff.maint.declared', { id: idOf(done.window.name) })}{' '}
            {tn('staff.maint.cancelled', done.bookings.filter((b) => b.state === Booking_State.CANCELLED && b.cancelledByOutage).length)}{' '}
            {done.bookings.some((b) => b.interruptedByOutage) && tn('staff.maint.interrupted', done.bookings.filter((b) => b.interruptedByOutage).length)}
          </StatusBox>
          {done.applyError && (
            <>
              <ErrorBox error={done.applyError} />
              <p class="muted">{t('staff.maint.applyLater')}</p>
            </>
          )}
          {(done.applied?.conflictingLeases.length ?? 0) > 0 && (
            <p class="error" role="alert">{t('staff.maint.conflicts', { leases: done.applied!.conflictingLeases.map(idOf).join(', ') })}</p>
          )}
          {done.bookings.length > 0 && <BookingTable bookings={done.bookings} zone={zoneOf(world, done.window.name.split('/maintenanceWindows/')[0]!)} testid="done" />}
        </div>
      )}

      <Windows world={world} instrument={draft.instrument} tick={tick} onChanged={() => setTick((n) => n + 1)} />
    </section>
  );
}

function instrumentLabel2(world: StaffWorld, name: string): string {
  return world.instruments.find((i) => i.name === name)?.displayName ?? idOf(name);
}

function BookingTable({ bookings, zone, fate, testid }: { bookings: Booking[]; zone: string; fate?: boolean; testid: string }) {
  return (
    <div class="table-wrap">
      <table class="stack" data-testid={`maintenance-${testid}-bookings`}>
        <thead>
          <tr>
            <th>{t('staff.col.booking')}</th>
            <th>{t('staff.col.requester')}</th>
            <th>{t('staff.col.time')}</th>
            <th>{t('staff.col.state')}</th>
            {fate && <th>{t('staff.maint.fate')}</th>}
          </tr>
        </thead>
        <tbody>
          {bookings.map((b) => (
            <tr key={b.name} data-testid={`${testid}-${idOf(b.name)}`}>
              <td>{idOf(b.name)}<div class="muted">{modeLabel(b.mode)}</div></td>
              <td>{idOf(b.user)}<div class="muted"><OrgName name={b.userOrganization || b.payerOrganization} /></div></td>
              <td>{span(b.reservedInterval, zone)}<Zone zone={zone} /></td>
              <td>
                <span class="staff-badge">{t(`staff.bookingState.${Booking_State[b.state]}`)}</span>
                {b.cancelledByOutage && <div class="muted">{t('staff.maint.byOutage', { reason: b.cancellation?.reason ?? '' })}</div>}
                {b.interruptedByOutage && <div class="muted">{t('staff.maint.interruptedNote')}</div>}
              </td>
              {fate && <td>{t(consequence(b))}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Windows({ world, instrument, tick, onChanged }: { world: StaffWorld; instrument: string; tick: number; onChanged: () => void }) {
  const [windows, setWindows] = useState<MaintenanceWindow[]>();
  const [loadError, setLoadError] = useState<ShownError>();
  const [withCancelled, setWithCancelled] = useState(false);
  const zone = zoneOf(world, instrument);
  useEffect(() => {
    if (!instrument) return;
    let live = true;
    setWindows(undefined);
    listAll(async (pageToken) => {
      const r = await inventory.listMaintenanceWindows({ parent: instrument, pageSize: 200, pageToken, includeCancelled: withCancelled });
      return { items: r.maintenanceWindows, next: r.nextPageToken };
    }).then((w) => { if (live) { setWindows(w); setLoadError(undefined); } }, (err) => live && setLoadError(explain(err)));
    return () => { live = false; };
  }, [instrument, tick, withCancelled]);

  return (
    <div class="staff-section">
      <h2>{t('staff.maint.existing', { instrument: instrumentLabel2(world, instrument) })}</h2>
      <label class="field" style="flex-direction:row;gap:6px;align-items:center">
        <input type="checkbox" checked={withCancelled} onChange={(e) => setWithCancelled((e.target as HTMLInputElement).checked)} />
        <span>{t('staff.maint.showCancelled')}</span>
      </label>
      <ErrorBox error={loadError} />
      {!windows ? (!loadError && <p aria-busy="true">{t('app.loading')}</p>) : windows.length === 0 ? (
        <p class="muted">{t('staff.maint.noWindows')}</p>
      ) : (
        <div class="table-wrap">
          <table class="stack" data-testid="maintenance-windows">
            <ColumnHeads prefix="staff." cols={['col.time', 'maint.reason', 'maint.kind', 'col.state', 'col.actions']} />
            <tbody>
              {windows.map((w) => <WindowRow key={w.name} w={w} zone={zone} onChanged={onChanged} />)}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function WindowRow({ w, zone, onChanged }: { w: MaintenanceWindow; zone: string; onChanged: () => void }) {
  const mutate = useRequestId();
  const act = useAction();
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const cancelled = useRef<MaintenanceWindow>();
  const cancel = async () => {
    const r = await act.run(async () => {
      // A retry after the apply step failed does not cancel again.
      const c = cancelled.current ?? await mutate('cancelMaintenanceWindow', { name: w.name, reason: reason.trim() }, (r) => inventory.cancelMaintenanceWindow(r));
      cancelled.current = c;
      await mutate('applyMaintenanceWindow', { maintenanceWindow: c.name }, (r) => booking.applyMaintenanceWindow(r));
      return c;
    }, () => t('staff.maint.windowCancelled'));
    if (r) { setOpen(false); onChanged(); }
  };
  return (
    <>
      <tr data-testid={`window-${idOf(w.name)}`}>
        <td>{span(w.interval, zone)}<Zone zone={zone} /><div class="muted">{t('staff.maint.createdBy', { who: idOf(w.createdBy), when: when(w.createTime, zone) })}</div></td>
        <td>{w.reason || '—'}</td>
        <td>{w.outage ? t('staff.maint.kindOutage') : t('staff.maint.kindPlanned')}</td>
        <td><span class={`staff-badge ${w.state === MaintenanceWindowState.CANCELLED ? '' : 'warn'}`}>
          {t(`staff.windowState.${MaintenanceWindowState[w.state]}`)}</span></td>
        <td>
          {w.state === MaintenanceWindowState.SCHEDULED && (
            <button type="button" aria-expanded={open} onClick={() => setOpen(!open)}>{t('staff.maint.cancelWindow')}</button>
          )}
          <ErrorBox error={act.error} />
          <StatusBox>{act.done}</StatusBox>
        </td>
      </tr>
      {open && (
        <tr class="staff-sub">
          <td colSpan={5}>
            <div class="staff-form">
              <label class="field wide">
                <span>{t('staff.maint.cancelReason')}</span>
                <input value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
              </label>
              <p class="muted wide">{t('staff.maint.cancelNote')}</p>
              <div class="buttons">
                <button type="button" class="danger" disabled={act.busy} onClick={() => void cancel()}>{t('staff.maint.confirmCancelWindow')}</button>
                <button type="button" onClick={() => setOpen(false)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}
