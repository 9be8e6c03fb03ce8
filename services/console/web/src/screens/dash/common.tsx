// Shared pieces of the consortium dashboard (CONSORTIUM_ADMIN, AUDITOR):
// calendar periods in the consortium's reporting zone, figure formatting
// (seconds as hours, Ratio basis points as percentages, money with its
// currency), display names, sections and chart tables.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { timestampDate, timestampFromMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { Interval } from '../../../../gen/labshare/type/v1/types_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import type { Ratio } from '../../../../gen/labshare/usage/v1/usage_pb';
import { dateLocale, hoursNumber, percentBps } from '../../format';
import { allFacilities, allInstruments, allOrganizations, idOf } from '../../names';
import { DEFAULT_ZONE, fromWall } from '../../zones';
import { lang, t } from '../../i18n';
import './messages';
import './dash.css';

// The consortium's reporting zone (usage.proto "Units"). Every figure
// response names it in computation.time_zone; screens check it and keep the
// zone the service answered with (see noteZone).
let reportZone = DEFAULT_ZONE;
export function zone(): string {
  return reportZone;
}
// Returns true when the service's zone differs from the one assumed (the
// caller then asks again with ranges aligned to the right zone).
export function noteZone(tz: string | undefined): boolean {
  if (!tz || tz === reportZone) return false;
  reportZone = tz;
  return true;
}

// ------------------------------------------------------------ periods

// Midnight at the start of y-m-d in the zone, as epoch milliseconds
// (month may overflow: Date.UTC normalises it).
export function zonedMidnight(y: number, m: number, d: number, tz = zone()): number {
  return fromWall(Date.UTC(y, m - 1, d), tz);
}

export interface Month { y: number; m: number }

// Today's month in the reporting zone (the real date, as the design asks for
// screens opened without a period in the route).
export function currentMonth(): Month {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone: zone(), year: 'numeric', month: '2-digit' })
    .formatToParts(new Date());
  return { y: Number(parts.find((p) => p.type === 'year')?.value), m: Number(parts.find((p) => p.type === 'month')?.value) };
}

export function parseMonth(s: string | undefined): Month {
  const r = /^(\d{4})-(\d{2})$/.exec(s ?? '');
  if (r) {
    const y = Number(r[1]);
    const m = Number(r[2]);
    if (m >= 1 && m <= 12 && y >= 1970 && y <= 9999) return { y, m };
  }
  return currentMonth();
}

export function addMonths(mo: Month, n: number): Month {
  const i = mo.y * 12 + (mo.m - 1) + n;
  return { y: Math.floor(i / 12), m: (i % 12) + 1 };
}

export function monthKey(mo: Month): string {
  return `${mo.y}-${String(mo.m).padStart(2, '0')}`;
}

export function ts(ms: number): Timestamp {
  return timestampFromMs(ms);
}

// [first day of `from`, first day after `to`) in the reporting zone.
export function monthsRange(from: Month, to: Month = from): Interval {
  return {
    $typeName: 'labshare.type.v1.Interval',
    startTime: ts(zonedMidnight(from.y, from.m, 1)),
    endTime: ts(zonedMidnight(to.y, to.m + 1, 1)),
  };
}

export function monthLabel(mo: Month, style: 'long' | 'short' = 'long'): string {
  const ms = zonedMidnight(mo.y, mo.m, 1);
  return new Intl.DateTimeFormat(dateLocale(), { timeZone: zone(), year: 'numeric', month: style }).format(new Date(ms));
}

// The month (in the reporting zone) a period starts in.
export function monthOf(t0: Timestamp | undefined): Month {
  const parts = new Intl.DateTimeFormat('en-US', { timeZone: zone(), year: 'numeric', month: '2-digit' })
    .formatToParts(t0 ? timestampDate(t0) : new Date());
  return { y: Number(parts.find((p) => p.type === 'year')?.value), m: Number(parts.find((p) => p.type === 'month')?.value) };
}

export function dayLabel(t0: Timestamp | undefined): string {
  if (!t0) return '—';
  return new Intl.DateTimeFormat(dateLocale(), { timeZone: zone(), month: 'short', day: 'numeric' }).format(timestampDate(t0));
}

// Date and time to the second in the reporting zone, with the zone named;
// numeric like every date of the console ("01/04/2027, 10:00:00").
export function zonedTime(t0: Timestamp | undefined): string {
  if (!t0) return '—';
  return new Intl.DateTimeFormat(dateLocale(), {
    timeZone: zone(), year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
  }).format(timestampDate(t0)) + ` (${zone()})`;
}

// ------------------------------------------------------------ figures

export function n(v: bigint | number | undefined): number {
  return Number(v ?? 0);
}

export function int(v: bigint | number | undefined): string {
  return new Intl.NumberFormat(lang.value).format(n(v));
}

// Seconds as hours, up to two decimals ("2.5 h").
export function hoursValue(sec: bigint | number | undefined): number {
  return Math.round((n(sec) / 3600) * 100) / 100;
}
export function hours(sec: bigint | number | undefined): string {
  return t('dash.unit.hours', { n: hoursNumber(sec) });
}

// A Ratio: its basis points, or "not defined" when the denominator is 0
// (never read as 0 %).
export function ratio(r: Ratio | undefined): string {
  if (!r || !r.defined) return t('dash.undefined');
  return percentBps(r.basisPoints);
}
// A chart's percentage (0–100) as the tables write it: "16%", "6.25%".
export function percentText(v: number): string {
  return new Intl.NumberFormat(lang.value, { style: 'percent', maximumFractionDigits: 2 }).format(v / 100);
}

export function ratioPercent(r: Ratio | undefined): number | null {
  if (!r || !r.defined) return null;
  return n(r.basisPoints) / 100;
}

export function modeLabel(m: SharingMode): string {
  switch (m) {
    case SharingMode.ON_SITE: return t('dash.mode.onSite');
    case SharingMode.LEASE: return t('dash.mode.lease');
    case SharingMode.JOINT_RESEARCH: return t('dash.mode.jointResearch');
    case SharingMode.TECHNICAL_SERVICE: return t('dash.mode.technicalService');
    default: return t('dash.mode.unspecified');
  }
}

export function hex(b: Uint8Array | undefined): string {
  return b ? Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('') : '';
}
export function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ------------------------------------------------------------ display names

export interface InstrumentInfo { displayName: string; owner: string; facility: string; category: string }
export interface Names { orgs: Map<string, string>; instruments: Map<string, InstrumentInfo>; facilities: Map<string, string> }

let namesPromise: Promise<Names> | undefined;

// Display names of organisations, facilities and instruments (any signed-in
// person may list them). Loaded once per page; a failure leaves ids shown.
export function loadNames(): Promise<Names> {
  namesPromise ??= Promise.all([allOrganizations(), allFacilities(), allInstruments()]).then(
    ([orgs, facilities, instruments]) => ({
      orgs: new Map(orgs.map((o) => [o.name, o.displayName])),
      facilities: new Map(facilities.map((f) => [f.name, f.displayName])),
      instruments: new Map(instruments.map((i) => [i.name, {
        displayName: i.displayName, owner: i.ownerOrganization, facility: i.facility, category: i.category,
      }])),
    }),
    () => {
      namesPromise = undefined; // try again next time; ids are shown meanwhile
      return { orgs: new Map(), instruments: new Map(), facilities: new Map() };
    });
  return namesPromise;
}

export function useNames(): Names {
  const [names, setNames] = useState<Names>({ orgs: new Map(), instruments: new Map(), facilities: new Map() });
  useEffect(() => {
    let live = true;
    void loadNames().then((x) => live && setNames(x));
    return () => { live = false; };
  }, []);
  return names;
}

export function orgName(names: Names, name: string): string {
  return names.orgs.get(name) || idOf(name);
}
export function instrumentName(names: Names, name: string): string {
  return names.instruments.get(name)?.displayName || idOf(name);
}
export function facilityName(names: Names, name: string): string {
  return names.facilities.get(name) || idOf(name);
}

// ------------------------------------------------------------ small components

export function Section({ id, title, children, testid }: { id: string; title: string; children: ComponentChildren; testid?: string }) {
  return (
    <section class="card dash-section" aria-labelledby={`${id}-h`} id={id} data-testid={testid}>
      <h2 id={`${id}-h`}>{title}</h2>
      {children}
    </section>
  );
}

// The numbers behind a chart, for screen readers and keyboard users.
export function DataTable({ caption, children }: { caption: string; children: ComponentChildren }) {
  return (
    <details class="dash-details">
      <summary>{t('dash.showTable', { what: caption })}</summary>
      <div class="table-wrap">
        <table>
          <caption class="sr-only">{caption}</caption>
          {children}
        </table>
      </div>
    </details>
  );
}

export function ComputedNote({ computed, provisional }: { computed?: Timestamp; provisional?: boolean }) {
  return (
    <p class="muted dash-small" data-testid="computed">
      {t('dash.computedAt', { time: zonedTime(computed) })}
      {provisional ? ' ' + t('dash.provisional') : ''}
    </p>
  );
}
