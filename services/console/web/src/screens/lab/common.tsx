// Shared pieces of the lab user's screens: days and weeks of wall times in a
// facility's zone (zones.ts), enum words, and cached look-ups of instruments
// and facilities.
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { timestampDate, timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { Facility, Instrument } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { Booking_ApprovalReason, Booking_State, BusyInterval_Reason, Lease_State, Project_State, ServiceOrder_State } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { inventory } from '../../api';
import { cached } from '../../names';
import { DEFAULT_ZONE, toWall } from '../../zones';
import { t } from '../../i18n';
import './messages';
import { dateLocale } from '../../format';

export const zoneOf = (f?: Facility): string => f?.timeZone || DEFAULT_ZONE;

// ---------------------------------------------------------------- time zones
// Wall times: see zones.ts.
export const tsMs = (ts: Timestamp | undefined): number => (ts ? timestampDate(ts).getTime() : 0);
export const msTs = (ms: number): Timestamp => timestampFromMs(ms);

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
// English dates day-first ("06/04/2027"): format.ts dateLocale, as everywhere.
export { dateLocale };
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
// ---------------------------------------------------------------- enum words
export const modeWord = (m: SharingMode): string => t(`lab.mode.${SharingMode[m]}`);
export const bookingStateWord = (s: Booking_State): string => t(`lab.bookingState.${Booking_State[s]}`);
export const leaseStateWord = (s: Lease_State): string => t(`lab.leaseState.${Lease_State[s]}`);
export const orderStateWord = (s: ServiceOrder_State): string => t(`lab.orderState.${ServiceOrder_State[s]}`);
export const projectStateWord = (s: Project_State): string => t(`lab.projectState.${Project_State[s]}`);
export const busyWord = (r: BusyInterval_Reason): string => t(`lab.busy.${BusyInterval_Reason[r]}`);
export const approvalWord = (r: Booking_ApprovalReason): string => t(`lab.approval.${Booking_ApprovalReason[r]}`);
export const BOOKABLE_MODES = [SharingMode.ON_SITE, SharingMode.JOINT_RESEARCH, SharingMode.LEASE, SharingMode.TECHNICAL_SERVICE];

// ---------------------------------------------------------------- look-ups
export const getInstrument = (name: string): Promise<Instrument> =>
  cached(`i:${name}`, () => inventory.getInstrument({ name }));
export const getFacility = (name: string): Promise<Facility> =>
  cached(`f:${name}`, () => inventory.getFacility({ name }));
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
