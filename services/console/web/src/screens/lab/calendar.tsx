// An instrument's week: free and busy time in the facility's time zone
// (QueryAvailability), the caller's own bookings highlighted (ListBookings),
// drag a slot (or use the keyboard form) to book it (CreateBooking). The
// service decides; its refusal is shown on the spot.
import { Calendar, type EventInput } from '@fullcalendar/core';
import zhCn from '@fullcalendar/core/locales/zh-cn';
import enGb from '@fullcalendar/core/locales/en-gb';
import timeGridPlugin from '@fullcalendar/timegrid';
import interactionPlugin from '@fullcalendar/interaction';
import { useEffect, useRef, useState } from 'preact/hooks';
import type { Instrument, Facility } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { Booking_State, BusyInterval_Reason, type Booking, type Project, type QueryAvailabilityResponse } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking } from '../../api';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import type { ShownError } from '../../errors';
import {
  approvalWord, bookingStateWord, busyWord, hhmm, instrumentWithZone, isoDay, modeWord, mondayOf, msTs, parseDay, rangeText, todayWall, tsMs, wallText,
} from './common';
import './lab.css';
import { ErrorBox, StatusBox, useRequestId } from '../../ui';
import { explain } from '../../errors';
import { idOf, listAll } from '../../names';
import { fromWall, toWall, zoneLabel } from '../../zones';

const DAY = 86_400_000;
const HOLDING = [Booking_State.PENDING_APPROVAL, Booking_State.CONFIRMED, Booking_State.CHECKED_IN, Booking_State.COMPLETED, Booking_State.MISSED];

interface Loaded {
  instrument: Instrument;
  facility?: Facility;
  zone: string;
}
interface Week {
  avail?: QueryAvailabilityResponse;
  mine: Booking[];
  error?: ShownError;
}
interface Slot { start: number; end: number } // wall times

export default function LabCalendar({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const s = useSignal(session);
  const id = params.id ?? '';
  const [base, setBase] = useState<Loaded>();
  const [loadError, setLoadError] = useState<ShownError>();
  const [mode, setMode] = useState<SharingMode>(SharingMode.ON_SITE);
  const [week, setWeek] = useState<Week>({ mine: [] });
  const [slot, setSlot] = useState<Slot>();
  const [refresh, setRefresh] = useState(0);
  const [result, setResult] = useState<Booking>();
  const narrow = typeof matchMedia === 'function' && matchMedia('(max-width: 640px)').matches;

  useEffect(() => {
    let live = true;
    setBase(undefined);
    instrumentWithZone(id).then((b) => live && setBase(b), (e) => live && setLoadError(explain(e)));
    return () => { live = false; };
  }, [id]);

  const zone = base?.zone ?? 'Asia/Shanghai';
  const monday = mondayOf(parseDay(params.week) ?? todayWall(zone));
  const weekParam = isoDay(monday);
  const start = fromWall(monday, zone);
  const end = fromWall(monday + 7 * DAY, zone);

  useEffect(() => {
    if (!base) return;
    let live = true;
    const range = { startTime: msTs(start), endTime: msTs(end) };
    Promise.all([
      booking.queryAvailability({ instrument: base.instrument.name, range, mode }),
      listAll(async (pageToken) => {
        const r = await booking.listBookings({ instrument: base.instrument.name, timeRange: range, pageSize: 200, user: s.user ?? '', pageToken });
        return { items: r.bookings, next: r.nextPageToken };
      }),
    ]).then(([avail, mine]) => {
      if (live) setWeek({ avail, mine: mine.filter((b) => HOLDING.includes(b.state)) });
    }, (e) => live && setWeek({ mine: [], error: explain(e) }));
    return () => { live = false; };
  }, [base, weekParam, mode, refresh, s.user]);

  if (loadError) return <section><h1>{t('lab.cal.title')}</h1><ErrorBox error={loadError} /></section>;
  if (!base) return <p aria-busy="true">{t('app.loading')}</p>;
  const inst = base.instrument;
  const offered = inst.modes.map((m) => m.mode).filter((m) => m === SharingMode.ON_SITE || m === SharingMode.JOINT_RESEARCH);
  const rules = inst.modes.find((m) => m.mode === mode)?.slotRules;
  const weekHref = (w: number) => `#/lab/instruments/${idOf(inst.name)}?week=${isoDay(w)}`;

  return (
    <section class="lab-calendar">
      <h1>{inst.displayName} <span class="muted">({idOf(inst.name)})</span></h1>
      <p class="muted" data-testid="zone">
        {t('lab.cal.zoneNote', { facility: base.facility?.displayName ?? idOf(inst.facility), zone: zoneLabel(zone, start) })}
      </p>
      <div class="row lab-toolbar">
        <a href={weekHref(monday - 7 * DAY)} data-testid="prev-week">{t('lab.cal.prev')}</a>
        <strong data-testid="week-label">{t('lab.cal.weekOf', { date: wallText(monday, { hour: undefined, minute: undefined }) })}</strong>
        <a href={weekHref(monday + 7 * DAY)} data-testid="next-week">{t('lab.cal.next')}</a>
        <label class="field">
          {t('lab.cal.showMode')}
          <select value={String(mode)} onChange={(e) => setMode(Number((e.target as HTMLSelectElement).value) as SharingMode)}>
            {offered.map((m) => <option key={m} value={String(m)}>{modeWord(m)}</option>)}
          </select>
        </label>
        {inst.modes.some((m) => m.mode === SharingMode.LEASE) &&
          <a href={`#/lab/leases/new?instrument=${idOf(inst.name)}`}>{t('lab.search.requestLease')}</a>}
        {inst.modes.some((m) => m.mode === SharingMode.TECHNICAL_SERVICE) &&
          <a href={`#/lab/orders/new?instrument=${idOf(inst.name)}`}>{t('lab.search.orderService')}</a>}
      </div>
      {week.avail && (
        <p class="muted" data-testid="window">
          {t('lab.cal.window', {
            earliest: wallText(toWall(tsMs(week.avail.earliestStart), zone)),
            horizon: week.avail.horizonEnd ? wallText(toWall(tsMs(week.avail.horizonEnd), zone)) : '—',
          })}
          {rules && ' ' + t('lab.cal.rules', {
            min: String(Number(rules.minBlock?.seconds ?? 0n) / 3600), max: String(Number(rules.maxBlock?.seconds ?? 0n) / 3600),
          })}
        </p>
      )}
      <ErrorBox error={week.error} />
      <Legend />
      <p class="muted">{t('lab.cal.howTo')}</p>
      <WeekGrid monday={monday} zone={zone} week={week} narrow={narrow}
        onSelect={(sl) => { setSlot(sl); setResult(undefined); }} />
      <KeyboardForm monday={monday} onChoose={(sl) => { setSlot(sl); setResult(undefined); }} />
      {slot && (
        <BookPanel key={`${slot.start}-${slot.end}`} slot={slot} zone={zone} instrument={inst} defaultMode={mode}
          onClose={() => setSlot(undefined)}
          onBooked={(b) => { setResult(b); setSlot(undefined); setRefresh((n) => n + 1); }} />
      )}
      {result && (
        <StatusBox>
          <span data-testid="booked">
            {t('lab.cal.booked', {
              name: idOf(result.name), when: rangeText(result.reservedInterval?.startTime, result.reservedInterval?.endTime, zone),
              state: bookingStateWord(result.state),
            })}
            {result.state === Booking_State.PENDING_APPROVAL && ' ' + t('lab.cal.pendingWhy', { why: approvalWord(result.approvalReason) })}
          </span>{' '}
          <a href="#/lab/bookings">{t('lab.cal.toBookings')}</a>
        </StatusBox>
      )}
      <h2>{t('lab.cal.mineTitle')}</h2>
      {week.mine.length === 0 ? <p class="muted">{t('lab.cal.mineNone')}</p> : (
        <ul data-testid="my-week">
          {week.mine.map((b) => (
            <li key={b.name}>
              {rangeText(b.reservedInterval?.startTime, b.reservedInterval?.endTime, zone)} · {modeWord(b.mode)} ·{' '}
              <strong>{bookingStateWord(b.state)}</strong> <span class="muted">({idOf(b.name)})</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function Legend() {
  return (
    <ul class="lab-legend" aria-label={t('lab.cal.legend')}>
      <li><span class="lab-swatch lab-free" />{t('lab.cal.free')}</li>
      <li><span class="lab-swatch lab-closed" />{t('lab.cal.closed')}</li>
      <li><span class="lab-swatch lab-busy" />{t('lab.cal.busy')}</li>
      <li><span class="lab-swatch lab-maint" />{t('lab.busy.MAINTENANCE')}</li>
      <li><span class="lab-swatch lab-mine" />{t('lab.cal.mine')}</li>
    </ul>
  );
}

// FullCalendar shows wall times as UTC (no named-zone plugin installed):
// every instant is moved to the facility's wall clock before it is drawn, and
// a selection is moved back.
function WeekGrid({ monday, zone, week, narrow, onSelect }: {
  monday: number; zone: string; week: Week; narrow: boolean; onSelect: (s: Slot) => void;
}) {
  const el = useRef<HTMLDivElement>(null);
  const cal = useRef<Calendar>();
  const select = useRef(onSelect);
  select.current = onSelect;
  const l = useSignal(lang);

  useEffect(() => {
    if (!el.current) return;
    const c = new Calendar(el.current, {
      plugins: [timeGridPlugin, interactionPlugin],
      locales: [enGb, zhCn],
      locale: l === 'zh-CN' ? 'zh-cn' : 'en-gb',
      initialView: 'timeGridWeek',
      timeZone: 'UTC',
      initialDate: isoDay(monday),
      firstDay: 1,
      headerToolbar: false,
      allDaySlot: false,
      height: 'auto',
      stickyHeaderDates: false,
      slotDuration: '00:30:00',
      slotLabelFormat: { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' },
      eventTimeFormat: { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' },
      dayHeaderFormat: narrow ? { weekday: 'narrow', day: 'numeric' } : { weekday: 'short', day: 'numeric', month: 'numeric' },
      selectable: true,
      selectMirror: true,
      unselectAuto: false,
      select: (info) => select.current({ start: info.start.getTime(), end: info.end.getTime() }),
    });
    c.render();
    cal.current = c;
    return () => { c.destroy(); cal.current = undefined; };
  }, [l, narrow]);

  useEffect(() => { cal.current?.gotoDate(isoDay(monday)); }, [monday, l]);

  useEffect(() => {
    const c = cal.current;
    if (!c) return;
    const events: EventInput[] = [];
    const wall = (ms: number) => new Date(toWall(ms, zone));
    for (const f of week.avail?.freeIntervals ?? []) {
      events.push({ start: wall(tsMs(f.startTime)), end: wall(tsMs(f.endTime)), display: 'background', classNames: ['lab-free'] });
    }
    for (const b of week.avail?.busyIntervals ?? []) {
      events.push({
        start: wall(tsMs(b.interval?.startTime)), end: wall(tsMs(b.interval?.endTime)), display: 'background',
        title: busyWord(b.reason), classNames: [b.reason === BusyInterval_Reason.MAINTENANCE ? 'lab-maint' : 'lab-busy'],
      });
    }
    for (const b of week.mine) {
      if (b.state === Booking_State.COMPLETED || b.state === Booking_State.MISSED) continue;
      events.push({
        start: wall(tsMs(b.reservedInterval?.startTime)), end: wall(tsMs(b.reservedInterval?.endTime)), display: 'background',
        title: `${t('lab.cal.mine')} · ${bookingStateWord(b.state)} ${hhmm(toWall(tsMs(b.reservedInterval?.startTime), zone))}–${hhmm(toWall(tsMs(b.reservedInterval?.endTime), zone))}`,
        classNames: ['lab-mine'], id: b.name,
      });
    }
    c.removeAllEvents();
    c.addEventSource(events);
    c.unselect();
  }, [week, zone, l, narrow]);

  return <div class="lab-fc" ref={el} data-testid="calendar" />;
}

// The keyboard way: a day, a start and an end in the facility's zone.
function KeyboardForm({ monday, onChoose }: { monday: number; onChoose: (s: Slot) => void }) {
  const [day, setDay] = useState(isoDay(monday));
  const [from, setFrom] = useState('10:00');
  const [to, setTo] = useState('12:00');
  useEffect(() => setDay(isoDay(monday)), [monday]);
  return (
    <form class="card row" data-testid="slot-form" onSubmit={(e) => {
      e.preventDefault();
      const d = parseDay(day);
      const [fh, fm] = from.split(':').map(Number);
      const [th, tm] = to.split(':').map(Number);
      if (d === undefined || fh === undefined || th === undefined) return;
      const s = d + (fh * 60 + (fm ?? 0)) * 60000;
      let e2 = d + (th * 60 + (tm ?? 0)) * 60000;
      if (e2 <= s) e2 += DAY; // "22:00 to 02:00" runs past midnight
      onChoose({ start: s, end: e2 });
    }}>
      <strong class="lab-form-title">{t('lab.cal.kbTitle')}</strong>
      <label class="field">{t('lab.cal.kbDay')}<input type="date" value={day} required onInput={(e) => setDay((e.target as HTMLInputElement).value)} /></label>
      <label class="field">{t('lab.cal.kbFrom')}<input type="time" step={900} value={from} required onInput={(e) => setFrom((e.target as HTMLInputElement).value)} /></label>
      <label class="field">{t('lab.cal.kbTo')}<input type="time" step={900} value={to} required onInput={(e) => setTo((e.target as HTMLInputElement).value)} /></label>
      <button type="submit">{t('lab.cal.kbChoose')}</button>
    </form>
  );
}

function BookPanel({ slot, zone, instrument, defaultMode, onClose, onBooked }: {
  slot: Slot; zone: string; instrument: Instrument; defaultMode: SharingMode; onClose: () => void; onBooked: (b: Booking) => void;
}) {
  const mutate = useRequestId();
  const [mode, setMode] = useState<SharingMode>(defaultMode);
  const [projects, setProjects] = useState<Project[]>();
  const [project, setProject] = useState('');
  const [purpose, setPurpose] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ShownError>();
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => { heading.current?.focus(); }, []);
  useEffect(() => {
    if (mode !== SharingMode.JOINT_RESEARCH || projects) return;
    listAll(async (pageToken) => {
      const r = await booking.listProjects({ instrument: instrument.name, pageSize: 200, pageToken });
      return { items: r.projects, next: r.nextPageToken };
    }).then((all) => {
      setProjects(all);
      if (all[0]) setProject(all[0].name);
    }, (e) => setError(explain(e)));
  }, [mode]);
  const offered = instrument.modes.map((m) => m.mode).filter((m) => m === SharingMode.ON_SITE || m === SharingMode.JOINT_RESEARCH);
  const startMs = fromWall(slot.start, zone);
  const endMs = fromWall(slot.end, zone);

  async function book(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const b = await mutate('createBooking', {
        booking: {
          instrument: instrument.name, mode, purpose,
          reservedInterval: { startTime: msTs(startMs), endTime: msTs(endMs) },
          project: mode === SharingMode.JOINT_RESEARCH ? project : '',
        },
      }, (r) => booking.createBooking(r));
      onBooked(b);
    } catch (err) {
      setError(explain(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form class="card lab-panel" data-testid="book-panel" onSubmit={book} aria-labelledby="lab-book-h">
      <h2 id="lab-book-h" tabIndex={-1} ref={heading}>{t('lab.book.title')}</h2>
      <p data-testid="slot-text">
        <strong>{wallText(slot.start)} – {isoDay(slot.start) === isoDay(slot.end - 1) ? hhmm(slot.end) : wallText(slot.end)}</strong>{' '}
        <span class="muted">{zoneLabel(zone, startMs)}</span>
      </p>
      <div class="row">
        <label class="field">{t('lab.book.mode')}
          <select data-testid="book-mode" value={String(mode)} onChange={(e) => setMode(Number((e.target as HTMLSelectElement).value) as SharingMode)}>
            {offered.map((m) => <option key={m} value={String(m)}>{modeWord(m)}</option>)}
          </select>
        </label>
        {mode === SharingMode.JOINT_RESEARCH && (
          <label class="field">{t('lab.book.project')}
            <select data-testid="book-project" value={project} onChange={(e) => setProject((e.target as HTMLSelectElement).value)}>
              {(projects ?? []).length === 0 && <option value="">{projects ? t('lab.book.noProjects') : t('app.loading')}</option>}
              {(projects ?? []).map((p) => <option key={p.name} value={p.name}>{p.title} ({idOf(p.name)})</option>)}
            </select>
          </label>
        )}
        <label class="field lab-grow">{t('lab.book.purpose')}
          <input data-testid="book-purpose" value={purpose} onInput={(e) => setPurpose((e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <ErrorBox error={error} />
      <div class="row lab-actions">
        <button type="submit" class="primary" disabled={busy} data-testid="book-confirm">{t('lab.book.confirm')}</button>
        <button type="button" onClick={onClose}>{t('lab.book.close')}</button>
      </div>
    </form>
  );
}
