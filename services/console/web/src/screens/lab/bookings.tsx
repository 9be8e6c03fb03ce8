// "My bookings, leases and orders" across instruments: ListBookings (the
// caller's own), ListLeases and ListServiceOrders (scoped by the service to
// the caller's organisation), times in each facility's zone, paging.
// Actions: check in / check out, cancel with a preview of whether it is late
// and what it costs, cancel a lease before handover.
import { useEffect, useRef, useState } from 'preact/hooks';
import { Booking_State, LeaseContract_RateBasis, Lease_State, type Booking, type Lease, type ServiceOrder } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import type { ShownError } from '../../errors';
import { money } from '../../format';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import {
  bookingStateWord, instrumentWithZone, leaseStateWord, modeWord, msTs, orderStateWord, rangeText, timeText, tsMs, wallText,
} from './common';
import { cancelConfirmable, durationMs, lateCancelFee, type FeePreview } from './money';
import './lab.css';
import { ErrorBox, StatusBox, useRequestId, useWorded } from '../../ui';
import { explain } from '../../errors';
import { allFacilities, idOf, listAll } from '../../names';
import { DEFAULT_ZONE, fromWall, toWall, zoneLabel } from '../../zones';

const PAGE = 20;

// Each row's instrument, with its display name and time zone.
function useZones(instruments: string[]): Record<string, { zone: string; title: string }> {
  const [z, setZ] = useState<Record<string, { zone: string; title: string }>>({});
  const key = [...new Set(instruments)].sort().join(',');
  useEffect(() => {
    let live = true;
    for (const name of new Set(instruments)) {
      if (z[name]) continue;
      instrumentWithZone(name).then((r) => {
        if (live) setZ((old) => ({ ...old, [name]: { zone: r.zone, title: r.instrument.displayName } }));
      }, () => undefined);
    }
    return () => { live = false; };
  }, [key]);
  return z;
}

// Paging with a stack of page tokens (Previous / Next).
function usePages<T>(load: (token: string) => Promise<{ items: T[]; next: string }>, deps: unknown[]) {
  const [tokens, setTokens] = useState<string[]>(['']);
  const [page, setPage] = useState<{ items: T[]; next: string }>();
  const [error, setError] = useState<ShownError>();
  const [n, setN] = useState(0);
  const token = tokens[tokens.length - 1] ?? '';
  useEffect(() => {
    let live = true;
    setError(undefined);
    load(token).then((p) => live && setPage(p), (e) => live && setError(explain(e)));
    return () => { live = false; };
  }, [token, n, ...deps]);
  return {
    page, error,
    hasPrev: tokens.length > 1,
    next: () => page?.next && setTokens([...tokens, page.next]),
    prev: () => setTokens(tokens.slice(0, -1)),
    reload: () => setN((x) => x + 1),
  };
}

function Pager({ p, label }: { p: { hasPrev: boolean; page?: { next: string }; next: () => void; prev: () => void }; label: string }) {
  if (!p.hasPrev && !p.page?.next) return null;
  return (
    <nav class="row lab-pager" aria-label={label}>
      <button type="button" disabled={!p.hasPrev} onClick={p.prev}>{t('lab.page.prev')}</button>
      <button type="button" disabled={!p.page?.next} onClick={p.next}>{t('lab.page.next')}</button>
    </nav>
  );
}

export default function LabBookings({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const s = useSignal(session);
  const [status, setStatus] = useWorded();
  const [actionError, setActionError] = useState<ShownError>();
  const [cancelling, setCancelling] = useState<Booking>();

  // ?month=2027-03 narrows all three lists to that month (consortium
  // time, Asia/Shanghai); without it everything, newest first.
  const month = /^\d{4}-\d{2}$/.test(params.month ?? '') ? params.month! : '';
  // The month in the facilities' zone when they all share one (else the
  // consortium's, Asia/Shanghai); asked before the lists.
  const [listZone, setListZone] = useState<string>();
  useEffect(() => {
    let live = true;
    allFacilities().then((fs) => {
      const zs = [...new Set(fs.map((f) => f.timeZone || DEFAULT_ZONE))];
      if (live) setListZone(zs.length === 1 ? zs[0]! : DEFAULT_ZONE);
    }, () => live && setListZone(DEFAULT_ZONE));
    return () => { live = false; };
  }, []);
  const range = monthRange(month, listZone ?? DEFAULT_ZONE);
  const bookings = usePages<Booking>(async (pageToken) => {
    const r = await booking.listBookings({ user: s.user ?? '', orderBy: 'start_time desc', pageSize: PAGE, pageToken, timeRange: range });
    return { items: r.bookings, next: r.nextPageToken };
  }, [s.user, month, listZone]);
  const leases = usePages<Lease>(async (pageToken) => {
    const r = await booking.listLeases({ orderBy: 'start_time desc', pageSize: PAGE, pageToken, timeRange: range });
    return { items: r.leases, next: r.nextPageToken };
  }, [s.user, month, listZone]);
  const orders = usePages<ServiceOrder>(async (pageToken) => {
    const r = await booking.listServiceOrders({ pageSize: PAGE, pageToken, createTimeRange: range });
    return { items: r.serviceOrders, next: r.nextPageToken };
  }, [s.user, month, listZone]);
  const zones = useZones([
    ...(bookings.page?.items ?? []).map((b) => b.instrument),
    ...(leases.page?.items ?? []).map((l) => l.instrument),
    ...(orders.page?.items ?? []).map((o) => o.instrument),
  ]);
  // Project titles for the joint-research bookings (ListProjects: the
  // caller's organisation's projects); the id until they are there.
  const [projectTitles, setProjectTitles] = useState<Record<string, string>>({});
  useEffect(() => {
    let live = true;
    listAll(async (pageToken) => {
      const r = await booking.listProjects({ pageSize: 100, pageToken });
      return { items: r.projects, next: r.nextPageToken };
    }).then((ps) => live && setProjectTitles(Object.fromEntries(ps.map((x) => [x.name, x.title || idOf(x.name)]))), () => undefined);
    return () => { live = false; };
  }, []);
  const zoneOf = (inst: string) => zones[inst]?.zone ?? 'Asia/Shanghai';
  const title = (inst: string) => zones[inst]?.title ?? idOf(inst);

  const [acting, setActing] = useState(false);
  // whatKey: the action's i18n key; the line is worded at each render.
  async function act(whatKey: string, f: () => Promise<Booking | Lease>) {
    setActionError(undefined);
    setStatus('');
    setActing(true);
    try {
      const r = await f();
      const state = () => r.$typeName === 'labshare.booking.v1.Lease'
        ? leaseStateWord((r as Lease).state) : bookingStateWord((r as Booking).state);
      setStatus(() => t('lab.list.done', { what: t(whatKey), name: idOf(r.name), state: state() }));
      bookings.reload();
      leases.reload();
    } catch (e) {
      setActionError(explain(e));
    } finally {
      setActing(false);
    }
  }

  return (
    <section>
      <h1>{t('lab.list.title')}</h1>
      <p class="muted">{t('lab.list.zoneNote')}</p>
      <form class="row" data-testid="month-form" key={month} onSubmit={(e) => {
        e.preventDefault();
        const m = String(new FormData(e.target as HTMLFormElement).get('month') ?? '');
        location.hash = m ? `#/lab/bookings?month=${m}` : '#/lab/bookings';
      }}>
        <label class="field">{t('lab.list.month')}
          <input type="month" name="month" defaultValue={month} data-testid="month" />
        </label>
        <button type="submit">{t('lab.list.show')}</button>
        {month && <a href="#/lab/bookings">{t('lab.list.all')}</a>}
      </form>
      <ErrorBox error={actionError} />
      {status && <StatusBox>{status}</StatusBox>}
      {cancelling && (
        <CancelPreview b={cancelling} zone={zoneOf(cancelling.instrument)}
          onClose={() => setCancelling(undefined)}
          onCancelled={(b) => {
            setCancelling(undefined);
            setStatus(() => t(b.lateCancellation ? 'lab.cancel.doneLate' : 'lab.cancel.doneOnTime', { name: idOf(b.name), state: bookingStateWord(b.state) }));
            bookings.reload();
          }} />
      )}

      <h2>{t('lab.list.bookings')}</h2>
      <ErrorBox error={bookings.error} />
      {!bookings.page && !bookings.error && <p aria-busy="true">{t('app.loading')}</p>}
      {bookings.page && bookings.page.items.length === 0 && <p class="muted">{t('lab.list.noBookings')}</p>}
      {bookings.page && bookings.page.items.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="bookings-table">
            <thead><tr>
              <th>{t('lab.list.booking')}</th><th>{t('lab.list.instrument')}</th><th>{t('lab.list.when')}</th>
              <th>{t('lab.list.mode')}</th><th>{t('lab.list.state')}</th><th>{t('lab.list.actions')}</th>
            </tr></thead>
            <tbody>
              {bookings.page.items.map((b) => {
                const z = zoneOf(b.instrument);
                const slotMode = b.mode === SharingMode.ON_SITE || b.mode === SharingMode.JOINT_RESEARCH;
                return (
                  <tr key={b.name} data-testid={`booking-${idOf(b.name)}`}>
                    <td>{idOf(b.name)}{b.project && <div class="muted">{t('lab.list.project', { p: projectTitles[b.project] ?? idOf(b.project) })}</div>}</td>
                    <td><a href={`#/lab/instruments/${idOf(b.instrument)}?week=${weekOf(b, z)}`}>{title(b.instrument)}</a></td>
                    <td>{rangeText(b.reservedInterval?.startTime, b.reservedInterval?.endTime, z)}<div class="muted">{z}</div></td>
                    <td>{modeWord(b.mode)}</td>
                    <td data-testid="state">
                      {bookingStateWord(b.state)}
                      {b.state === Booking_State.CANCELLED && <div class="muted">{b.lateCancellation ? t('lab.list.late') : b.cancelledByOutage ? t('lab.list.outage') : t('lab.list.onTime')}</div>}
                    </td>
                    <td><div class="lab-actions">
                      {slotMode && b.state === Booking_State.CONFIRMED &&
                        <button type="button" disabled={acting} onClick={() => void act('lab.act.checkIn', () => mutate('checkIn', { name: b.name }, (r) => booking.checkIn(r)))}>{t('lab.act.checkIn')}</button>}
                      {b.state === Booking_State.CHECKED_IN && b.mode !== SharingMode.LEASE &&
                        <button type="button" disabled={acting} onClick={() => void act('lab.act.checkOut', () => mutate('checkOut', { name: b.name }, (r) => booking.checkOut(r)))}>{t('lab.act.checkOut')}</button>}
                      {slotMode && (b.state === Booking_State.CONFIRMED || b.state === Booking_State.PENDING_APPROVAL) &&
                        <button type="button" class="danger" data-testid="cancel" onClick={() => { setStatus(''); setCancelling(b); }}>{t('lab.act.cancel')}</button>}
                    </div></td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <Pager p={bookings} label={t('lab.list.bookings')} />

      <h2>{t('lab.list.leases')}</h2>
      <ErrorBox error={leases.error} />
      {leases.page && leases.page.items.length === 0 && <p class="muted">{t('lab.list.noLeases')}</p>}
      {leases.page && leases.page.items.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="leases-table">
            <thead><tr>
              <th>{t('lab.list.lease')}</th><th>{t('lab.list.instrument')}</th><th>{t('lab.list.term')}</th>
              <th>{t('lab.list.state')}</th><th>{t('lab.list.contract')}</th><th>{t('lab.list.actions')}</th>
            </tr></thead>
            <tbody>
              {leases.page.items.map((l) => {
                const z = zoneOf(l.instrument);
                return (
                  <tr key={l.name} data-testid={`lease-${idOf(l.name)}`}>
                    <td>{idOf(l.name)}{l.purpose && <div class="muted">{l.purpose}</div>}</td>
                    <td>{title(l.instrument)}</td>
                    <td>{rangeText(l.term?.startTime, l.term?.endTime, z)}<div class="muted">{z}</div></td>
                    <td>{leaseStateWord(l.state)}</td>
                    <td>{l.contract ? `${money(l.contract.rate)} / ${t(`lab.rateBasis.${LeaseContract_RateBasis[l.contract.rateBasis]}`)} · ${t('lab.lease.deposit')} ${money(l.contract.deposit)}` : '—'}</td>
                    <td>
                      {(l.state === Lease_State.REQUESTED || l.state === Lease_State.APPROVED) &&
                        <button type="button" class="danger" disabled={acting} onClick={() => {
                          if (confirm(t('lab.lease.cancelConfirm', { name: idOf(l.name) }))) {
                            void act('lab.act.cancelLease', () => mutate('cancelLease', { name: l.name }, (r) => booking.cancelLease(r)));
                          }
                        }}>{t('lab.act.cancelLease')}</button>}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <Pager p={leases} label={t('lab.list.leases')} />

      <h2>{t('lab.list.orders')}</h2>
      <ErrorBox error={orders.error} />
      {orders.page && orders.page.items.length === 0 && <p class="muted">{t('lab.list.noOrders')}</p>}
      {orders.page && orders.page.items.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="orders-table">
            <thead><tr>
              <th>{t('lab.list.order')}</th><th>{t('lab.list.instrument')}</th><th>{t('lab.order.samples')}</th>
              <th>{t('lab.list.created')}</th><th>{t('lab.list.state')}</th><th>{t('lab.order.total')}</th>
            </tr></thead>
            <tbody>
              {orders.page.items.map((o) => (
                <tr key={o.name} data-testid={`order-${idOf(o.name)}`}>
                  <td><a href={`#/lab/orders/${idOf(o.name)}`}>{idOf(o.name)}</a></td>
                  <td>{title(o.instrument)}</td>
                  <td class="num">{o.sampleCount}</td>
                  <td>{timeText(o.createTime, zoneOf(o.instrument))}</td>
                  <td>{orderStateWord(o.state)}</td>
                  <td class="num">{o.quote?.total ? money(o.quote.total) : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager p={orders} label={t('lab.list.orders')} />
      <p><a href="#/lab/instruments">{t('lab.list.findMore')}</a></p>
    </section>
  );
}

function monthRange(month: string, zone: string) {
  if (!month) return undefined;
  const [y, m] = month.split('-').map(Number) as [number, number];
  return { startTime: msTs(fromWall(Date.UTC(y, m - 1, 1), zone)), endTime: msTs(fromWall(Date.UTC(y, m, 1), zone)) };
}

function weekOf(b: Booking, zone: string): string {
  const w = toWall(tsMs(b.reservedInterval?.startTime), zone);
  const d = new Date(w);
  const dow = (d.getUTCDay() + 6) % 7;
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - dow)).toISOString().slice(0, 10);
}

// Before cancelling: is it late, and what would it cost? The booking
// service has no validate-only cancel, so the preview follows the rules the
// services apply: late when the booking is CONFIRMED and the platform's now
// is later than start - late_cancel_notice (GetInstrument's slot rules); the
// platform's now is QueryAvailability's earliest_start - min_notice (the
// services' clock, not the browser's); the fee is late_cancel_fee_bps of the
// reserved-time charge at the payer's rate line (LookupRate).
interface Preview {
  now: number;
  deadline: number;
  noticeMs: number;
  late: boolean;
  fee?: FeePreview;
  noRate?: boolean;
}

function CancelPreview({ b, zone, onClose, onCancelled }: {
  b: Booking; zone: string; onClose: () => void; onCancelled: (b: Booking) => void;
}) {
  const mutate = useRequestId();
  const [p, setP] = useState<Preview>();
  const [error, setError] = useState<ShownError>();
  const [previewError, setPreviewError] = useState<ShownError>();
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => { heading.current?.focus(); }, [b.name]);
  useEffect(() => {
    let live = true;
    (async () => {
      const { instrument } = await instrumentWithZone(b.instrument);
      const rules = instrument.modes.find((m) => m.mode === b.mode)?.slotRules;
      const start = tsMs(b.reservedInterval?.startTime);
      const end = tsMs(b.reservedInterval?.endTime);
      const avail = await booking.queryAvailability({
        instrument: b.instrument, mode: b.mode,
        range: { startTime: b.reservedInterval?.startTime, endTime: b.reservedInterval?.endTime },
      });
      const now = tsMs(avail.earliestStart) - durationMs(rules?.minNotice);
      const noticeMs = durationMs(rules?.lateCancelNotice);
      const deadline = start - noticeMs;
      const late = b.state === Booking_State.CONFIRMED && now > deadline;
      let fee: FeePreview | undefined;
      let noRate = false;
      try {
        const r = await inventory.lookupRate({ instrument: b.instrument, mode: b.mode, payerOrganization: b.payerOrganization, time: msTs(start) });
        if (rules && r.rate?.price) fee = lateCancelFee(rules, r.rate.price, end - start);
      } catch {
        noRate = true; // the owner's own use has no rate line: nothing to charge
      }
      if (live) setP({ now, deadline, noticeMs, late, fee, noRate });
    })().catch((e) => live && setPreviewError(explain(e)));
    return () => { live = false; };
  }, [b.name]);

  async function cancel() {
    setBusy(true);
    setError(undefined);
    try {
      onCancelled(await mutate('cancelBooking', { name: b.name, reason }, (r) => booking.cancelBooking(r)));
    } catch (e) {
      setError(explain(e));
    } finally {
      setBusy(false);
    }
  }
  const hoursNotice = p ? String(p.noticeMs / 3_600_000) : '';
  return (
    <div class="card lab-panel" data-testid="cancel-preview" role="region" aria-labelledby="lab-cancel-h">
      <h2 id="lab-cancel-h" tabIndex={-1} ref={heading}>{t('lab.cancel.title', { name: idOf(b.name) })}</h2>
      <p>{rangeText(b.reservedInterval?.startTime, b.reservedInterval?.endTime, zone)} <span class="muted">{zoneLabel(zone)}</span> · {modeWord(b.mode)} · {bookingStateWord(b.state)}</p>
      {!p && !previewError && <p aria-busy="true">{t('app.loading')}</p>}
      {previewError && (
        <div data-testid="cancel-fee-unknown">
          <p><strong>{t('lab.cancel.feeUnknown')}</strong></p>
          <ErrorBox error={previewError} />
        </div>
      )}
      {p && (
        <div data-testid="cancel-verdict">
          {p.late ? (
            <p class="lab-late"><strong>{t('lab.cancel.late', { hours: hoursNotice })}</strong></p>
          ) : (
            <p><strong>{b.state === Booking_State.PENDING_APPROVAL ? t('lab.cancel.pendingFree') : t('lab.cancel.onTime', { hours: hoursNotice, deadline: wallText(toWall(p.deadline, zone)) })}</strong></p>
          )}
          {p.fee && (
            <p data-testid="cancel-fee">
              {p.late
                ? t('lab.cancel.feeNow', { fee: money(p.fee.fee), bps: String(p.fee.feeBps / 100), base: money(p.fee.base) })
                : b.state === Booking_State.CONFIRMED
                  ? t('lab.cancel.feeLater', { fee: money(p.fee.fee), bps: String(p.fee.feeBps / 100), base: money(p.fee.base), deadline: wallText(toWall(p.deadline, zone)) })
                  : ''}
              {b.mode === SharingMode.JOINT_RESEARCH && p.late && ' ' + t('lab.cancel.split')}
            </p>
          )}
          {p.noRate && <p class="muted">{t('lab.cancel.noRate')}</p>}
          <p class="muted">{t('lab.cancel.asOf', { now: wallText(toWall(p.now, zone)) })}</p>
        </div>
      )}
      <label class="field">{t('lab.cancel.reason')}
        <input value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
      </label>
      <ErrorBox error={error} />
      <div class="row lab-actions">
        <button type="button" class="danger" disabled={!cancelConfirmable(busy, p, previewError !== undefined)} onClick={() => void cancel()} data-testid="cancel-confirm">
          {p?.late && p.fee ? t('lab.cancel.confirmFee', { fee: money(p.fee.fee) }) : t('lab.cancel.confirm')}
        </button>
        <button type="button" onClick={onClose}>{t('lab.cancel.keep')}</button>
      </div>
    </div>
  );
}
