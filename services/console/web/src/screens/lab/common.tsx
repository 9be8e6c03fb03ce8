// Shared pieces of the lab user's screens: facility time zones (wall time
// <-> instants without a time-zone library), enum words, error and status
// boxes, and cached look-ups of instruments, facilities and organisations.
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { Facility, Instrument, Organization } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { Booking_ApprovalReason, Booking_State, BusyInterval_Reason, Lease_State, Project_State, ServiceOrder_State } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { inventory } from '../../api';
import { explain, type ShownError } from '../../errors';
import { lang, t } from '../../i18n';
import './messages';

export const DEFAULT_ZONE = 'Asia/Shanghai';
export const zoneOf = (f?: Facility): string => f?.timeZone || DEFAULT_ZONE;
export const idOf = (name: string): string => name.slice(name.lastIndexOf('/') + 1);

// ---------------------------------------------------------------- time zones
// "Wall" times are milliseconds whose UTC fields are the facility's local
// clock fields (how FullCalendar shows them with timeZone: 'UTC').
const fmtCache = new Map<string, Intl.DateTimeFormat>();
function offsetMs(instant: number, zone: string): number {
  let f = fmtCache.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
      hour: '2-digit', minute: '2-digit', second: '2-digit',
    });
    fmtCache.set(zone, f);
  }
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(new Date(instant))) p[part.type] = Number(part.value);
  const asUtc = Date.UTC(p.year ?? 1970, (p.month ?? 1) - 1, p.day ?? 1, p.hour ?? 0, p.minute ?? 0, p.second ?? 0);
  return asUtc - Math.floor(instant / 1000) * 1000;
}
export function toWall(instant: number, zone: string): number {
  return instant + offsetMs(instant, zone);
}
export function fromWall(wall: number, zone: string): number {
  let t0 = wall - offsetMs(wall, zone);
  t0 = wall - offsetMs(t0, zone);
  return t0;
}
export const tsMs = (ts: Timestamp | undefined): number => (ts ? timestampDate(ts).getTime() : 0);
export const msTs = (ms: number): Timestamp => timestampFromMs(ms);

// "UTC+08:00" for the zone at an instant.
export function zoneLabel(zone: string, at = Date.now()): string {
  const off = Math.round(offsetMs(at, zone) / 60000);
  const sign = off < 0 ? '-' : '+';
  const a = Math.abs(off);
  return `${zone} (UTC${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')})`;
}

// "YYYY-MM-DD" of a wall time.
export const isoDay = (wall: number): string => new Date(wall).toISOString().slice(0, 10);
export const hhmm = (wall: number): string => new Date(wall).toISOString().slice(11, 16);
export function parseDay(s: string | undefined): number | undefined {
  if (!s || !/^\d{4}-\d{2}-\d{2}$/.test(s)) return undefined;
  const ms = Date.parse(`${s}T00:00:00Z`);
  return Number.isNaN(ms) ? undefined : ms;
}
// The Monday (wall, 00:00) of the week containing a wall day.
export function mondayOf(wallDay: number): number {
  const d = new Date(wallDay);
  const dow = (d.getUTCDay() + 6) % 7;
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - dow);
}
// Today in a zone, as a wall day.
export function todayWall(zone: string): number {
  const w = toWall(Date.now(), zone);
  return parseDay(isoDay(w)) ?? w;
}

// A time in the facility's zone: "06/04/2027, 10:00" in the user's language.
// English dates day-first ("06/04/2027"), as the consortium writes them.
export const dateLocale = (): string => (lang.value === 'en' ? 'en-GB' : lang.value);
export function wallText(wall: number, opts: Intl.DateTimeFormatOptions = {}): string {
  return new Intl.DateTimeFormat(dateLocale(), {
    timeZone: 'UTC', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23', ...opts,
  }).format(new Date(wall));
}
export function timeText(ts: Timestamp | undefined, zone: string): string {
  return ts ? wallText(toWall(tsMs(ts), zone)) : '—';
}
// "06/04/2027, 10:00 – 12:00" (same day) or with both dates.
export function rangeText(start: Timestamp | undefined, end: Timestamp | undefined, zone: string): string {
  if (!start || !end) return '—';
  const s = toWall(tsMs(start), zone);
  const e = toWall(tsMs(end), zone);
  const sameDay = isoDay(s) === isoDay(e - 1);
  return `${wallText(s)} – ${sameDay ? hhmm(e) : wallText(e)}`;
}
export function hours(seconds: bigint | number | undefined): string {
  const h = Number(seconds ?? 0) / 3600;
  return new Intl.NumberFormat(lang.value, { maximumFractionDigits: 2 }).format(h);
}

// ---------------------------------------------------------------- enum words
export const modeWord = (m: SharingMode): string => t(`lab.mode.${SharingMode[m]}`);
export const bookingStateWord = (s: Booking_State): string => t(`lab.bookingState.${Booking_State[s]}`);
export const leaseStateWord = (s: Lease_State): string => t(`lab.leaseState.${Lease_State[s]}`);
export const orderStateWord = (s: ServiceOrder_State): string => t(`lab.orderState.${ServiceOrder_State[s]}`);
export const projectStateWord = (s: Project_State): string => t(`lab.projectState.${Project_State[s]}`);
export const busyWord = (r: BusyInterval_Reason): string => t(`lab.busy.${BusyInterval_Reason[r]}`);
export const approvalWord = (r: Booking_ApprovalReason): string => t(`lab.approval.${Booking_ApprovalReason[r]}`);
export const BOOKABLE_MODES = [SharingMode.ON_SITE, SharingMode.JOINT_RESEARCH, SharingMode.LEASE, SharingMode.TECHNICAL_SERVICE];

// ---------------------------------------------------------------- boxes
export function ErrorBox({ error }: { error?: ShownError }) {
  if (!error) return null;
  return (
    <div class="error" role="alert" data-testid="error">
      <div>{error.sentence}</div>
      {error.detail && <div class="muted lab-detail">{error.detail}</div>}
    </div>
  );
}
export function StatusBox({ children }: { children?: preact.ComponentChildren }) {
  return <div class="notice" role="status" data-testid="status">{children}</div>;
}
export { explain };

// ---------------------------------------------------------------- look-ups
const cache = new Map<string, Promise<unknown>>();
function cached<T>(key: string, f: () => Promise<T>): Promise<T> {
  let p = cache.get(key) as Promise<T> | undefined;
  if (!p) {
    p = f();
    p.catch(() => cache.delete(key));
    cache.set(key, p);
  }
  return p;
}
export const getInstrument = (name: string): Promise<Instrument> =>
  cached(`i:${name}`, () => inventory.getInstrument({ name }));
export const getFacility = (name: string): Promise<Facility> =>
  cached(`f:${name}`, () => inventory.getFacility({ name }));
export async function listFacilities(): Promise<Facility[]> {
  return cached('facilities', async () => {
    const out: Facility[] = [];
    let pageToken = '';
    do {
      const r = await inventory.listFacilities({ pageSize: 500, pageToken });
      out.push(...r.facilities);
      pageToken = r.nextPageToken;
    } while (pageToken);
    return out;
  });
}
export async function listOrganizations(): Promise<Organization[]> {
  return cached('orgs', async () => {
    const out: Organization[] = [];
    let pageToken = '';
    do {
      const r = await inventory.listOrganizations({ pageSize: 500, pageToken });
      out.push(...r.organizations);
      pageToken = r.nextPageToken;
    } while (pageToken);
    return out;
  });
}
export async function listAllInstruments(): Promise<Instrument[]> {
  return cached('instruments', async () => {
    const out: Instrument[] = [];
    let pageToken = '';
    do {
      const r = await inventory.listInstruments({ pageSize: 500, pageToken });
      out.push(...r.instruments);
      pageToken = r.nextPageToken;
    } while (pageToken);
    return out;
  });
}
// An instrument with its facility (and so its time zone).
export async function instrumentWithZone(id: string): Promise<{ instrument: Instrument; facility?: Facility; zone: string }> {
  const instrument = await getInstrument(id.includes('/') ? id : `instruments/${id}`);
  let facility: Facility | undefined;
  try {
    facility = await getFacility(instrument.facility);
  } catch {
    facility = undefined;
  }
  return { instrument, facility, zone: zoneOf(facility) };
}
export function orgName(orgs: Organization[] | undefined, name: string): string {
  return orgs?.find((o) => o.name === name)?.displayName || idOf(name);
}
