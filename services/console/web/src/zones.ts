// Times in a facility's time zone without a time-zone library. "Wall" times
// are milliseconds whose UTC fields are the zone's clock fields (how
// FullCalendar shows them with timeZone: 'UTC', and how
// <input type="datetime-local"> values read).
export const DEFAULT_ZONE = 'Asia/Shanghai';
export const zoneOr = (tz: string | undefined): string => tz || DEFAULT_ZONE;

const fmtCache = new Map<string, Intl.DateTimeFormat>();

// The zone's offset from UTC at an instant, in milliseconds.
export function offsetMs(instant: number, zone: string): number {
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
  const asUtc = Date.UTC(p.year ?? 1970, (p.month ?? 1) - 1, p.day ?? 1, (p.hour ?? 0) % 24, p.minute ?? 0, p.second ?? 0);
  return asUtc - Math.floor(instant / 1000) * 1000;
}

export function toWall(instant: number, zone: string): number {
  return instant + offsetMs(instant, zone);
}

export function fromWall(wall: number, zone: string): number {
  const guess = wall - offsetMs(wall, zone);
  return wall - offsetMs(guess, zone);
}

// "2027-04-14T09:00" (datetime-local) read as wall time in `zone`.
export function zonedInputToDate(value: string, zone: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value);
  if (!m) return undefined;
  return new Date(fromWall(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!), zone));
}

// The instant as "YYYY-MM-DDTHH:MM" wall time in `zone` (for datetime-local).
export function dateToZonedInput(date: Date, zone: string): string {
  return new Date(toWall(date.getTime(), zone)).toISOString().slice(0, 16);
}

// "Asia/Shanghai (UTC+08:00)" for the zone at an instant.
export function zoneLabel(zone: string, at = Date.now()): string {
  const off = Math.round(offsetMs(at, zone) / 60000);
  const sign = off < 0 ? '-' : '+';
  const a = Math.abs(off);
  return `${zone} (UTC${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')})`;
}
