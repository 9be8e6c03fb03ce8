// Shared pieces of the facility-staff screens: the staff's instruments
// (owned or operated by their organisation) with their facility's time zone,
// organisation names, dates in a zone, amounts typed in, the action state
// (busy / error / success line) and the sub-navigation.
import { useEffect, useState } from 'preact/hooks';
import { timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { Instrument } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import type { Interval, Money } from '../../../../gen/labshare/type/v1/types_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { inventory } from '../../api';
import { explain, type ShownError } from '../../errors';
import { hasMessage, lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import { dateLocale, parseMoney } from '../../format';
import { allInstruments, idOf, listAll } from '../../names';
import { DEFAULT_ZONE, zonedInputToDate } from '../../zones';
import './messages';
import './staff.css';

// ------------------------------------------------------------ the staff's instruments

export interface StaffWorld {
  instruments: Instrument[];                 // owned or operated by the staff's organisation
  zone: Record<string, string>;              // instrument name -> facility time zone
  facilityName: Record<string, string>;      // instrument name -> facility display name
}

let worldPromise: { org: string; p: Promise<StaffWorld> } | undefined;

async function loadWorld(org: string): Promise<StaffWorld> {
  const instruments = (await allInstruments())
    .filter((ins) => ins.ownerOrganization === org || ins.operatorOrganization === org);
  instruments.sort((a, b) => a.displayName.localeCompare(b.displayName));
  const facilities = [...new Set(instruments.map((i) => i.facility))];
  const fz: Record<string, { zone: string; name: string }> = {};
  await Promise.all(facilities.map(async (f) => {
    try {
      const fac = await inventory.getFacility({ name: f });
      fz[f] = { zone: fac.timeZone || DEFAULT_ZONE, name: fac.displayName };
    } catch {
      fz[f] = { zone: DEFAULT_ZONE, name: f };
    }
  }));
  const zone: Record<string, string> = {};
  const facilityName: Record<string, string> = {};
  for (const i of instruments) {
    zone[i.name] = fz[i.facility]?.zone ?? DEFAULT_ZONE;
    facilityName[i.name] = fz[i.facility]?.name ?? i.facility;
  }
  return { instruments, zone, facilityName };
}

export function useStaffWorld(): { world?: StaffWorld; error?: ShownError } {
  const s = useSignal(session);
  const org = s.organization ?? '';
  const [state, setState] = useState<{ world?: StaffWorld; error?: ShownError }>({});
  useEffect(() => {
    if (!org) return;
    if (!worldPromise || worldPromise.org !== org) worldPromise = { org, p: loadWorld(org) };
    let live = true;
    const mine = worldPromise;
    mine.p.then(
      (world) => live && setState({ world }),
      (err) => {
        if (worldPromise === mine) worldPromise = undefined;
        if (live) setState({ error: explain(err) });
      },
    );
    return () => { live = false; };
  }, [org]);
  return state;
}

export function instrumentLabel(world: StaffWorld, name: string): string {
  return world.instruments.find((i) => i.name === name)?.displayName ?? idOf(name);
}

export function zoneOf(world: StaffWorld, instrument: string): string {
  return world.zone[instrument] ?? DEFAULT_ZONE;
}

export function offersMode(ins: Instrument | undefined, mode: SharingMode): boolean {
  return !!ins?.modes.some((m) => m.mode === mode);
}

// ------------------------------------------------------------ organisations

const orgNames = new Map<string, Promise<string>>();

export function orgName(name: string): Promise<string> {
  if (!name) return Promise.resolve('');
  let p = orgNames.get(name);
  if (!p) {
    p = inventory.getOrganization({ name }).then((o) => o.displayName || idOf(name), () => idOf(name));
    orgNames.set(name, p);
  }
  return p;
}

export function OrgName({ name }: { name: string }) {
  const [label, setLabel] = useState(idOf(name));
  useEffect(() => {
    let live = true;
    void orgName(name).then((l) => live && setLabel(l));
    return () => { live = false; };
  }, [name]);
  return <>{label}</>;
}

// ------------------------------------------------------------ times in a zone

export function zonedTs(value: string, timeZone: string): Timestamp | undefined {
  const d = zonedInputToDate(value, timeZone);
  return d ? timestampFromDate(d) : undefined;
}

// The Monday of ?week=YYYY-MM-DD, or of today.
export function weekStart(week: string | undefined): string {
  const m = week && /^(\d{4})-(\d{2})-(\d{2})$/.exec(week);
  const d = m ? new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!)) : new Date();
  const day = (d.getUTCDay() + 6) % 7;
  const monday = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - day));
  return monday.toISOString().slice(0, 10);
}

export function addDays(ymd: string, n: number): string {
  const [y, mo, d] = ymd.split('-').map(Number);
  return new Date(Date.UTC(y!, mo! - 1, d! + n)).toISOString().slice(0, 10);
}

function fmt(ts: Timestamp, timeZone: string, opts: Intl.DateTimeFormatOptions): string {
  return new Intl.DateTimeFormat(dateLocale(), { timeZone, hourCycle: 'h23', ...opts }).format(timestampDate(ts));
}

const DAY: Intl.DateTimeFormatOptions = { year: 'numeric', month: '2-digit', day: '2-digit', weekday: 'short' };
const HM: Intl.DateTimeFormatOptions = { hour: '2-digit', minute: '2-digit' };

// The day with its weekday: "Wed, 14/04/2027"; in Chinese the weekday after
// the date and a space ("2027/04/14 周三": Intl glues them, "2027/04/14周三"),
// its two characters joined (U+2060) so a narrow column does not split it.
function day(ts: Timestamp, timeZone: string): string {
  if (!dateLocale().startsWith('zh')) return fmt(ts, timeZone, DAY);
  const weekday = [...fmt(ts, timeZone, { weekday: 'short' })].join('\u2060');
  return `${fmt(ts, timeZone, { year: 'numeric', month: '2-digit', day: '2-digit' })} ${weekday}`;
}

// The services leave a time unset or at the epoch when there is none.
export function isSet(ts: Timestamp | undefined): ts is Timestamp {
  return !!ts && (ts.seconds !== 0n || ts.nanos !== 0);
}

export function when(ts: Timestamp | undefined, timeZone: string): string {
  if (!isSet(ts)) return '—';
  return `${day(ts, timeZone)} ${fmt(ts, timeZone, HM)}`;
}

// An interval in the facility's zone: "Wed 14/04/2027 09:00–12:00", or both
// dates when it spans days; the zone is shown next to it (ZoneNote).
export function span(iv: Interval | undefined, timeZone: string): string {
  if (!iv?.startTime || !iv.endTime) return '—';
  const d1 = day(iv.startTime, timeZone);
  const d2 = day(iv.endTime, timeZone);
  const h1 = fmt(iv.startTime, timeZone, HM);
  const h2 = fmt(iv.endTime, timeZone, HM);
  return d1 === d2 ? `${d1} ${h1}–${h2}` : `${d1} ${h1} – ${d2} ${h2}`;
}

export function Zone({ zone }: { zone: string }) {
  return <span class="muted staff-zone"> ({zone})</span>;
}

export function overlaps(iv: Interval | undefined, start: Date, end: Date): boolean {
  if (!iv?.startTime || !iv.endTime) return false;
  return timestampDate(iv.startTime) < end && timestampDate(iv.endTime) > start;
}

// ------------------------------------------------------------ money

// An amount a person types: a plain, non-negative amount (staff amounts are
// never negative), else undefined.
export function parseAmount(text: string, currencyCode: string): Money | undefined {
  const m = parseMoney(text, currencyCode);
  return m && m.amountMinor >= 0n ? m : undefined;
}

export function currencyOf(ins: Instrument | undefined): string {
  return ins?.originalValue?.currencyCode || 'CNY';
}

// ------------------------------------------------------------ feedback

export function FieldError({ text }: { text?: string }) {
  if (!text) return null;
  return <div class="error" role="alert" data-testid="error">{text}</div>;
}

// A count sentence: "<key>.one" when n is 1 and such a sentence exists.
export function tn(key: string, n: number, vars: Record<string, string | number> = {}): string {
  return t(n === 1 && hasMessage(`${key}.one`) ? `${key}.one` : key, { n, ...vars });
}

export function modeLabel(m: SharingMode): string {
  return t(`staff.mode.${SharingMode[m] ?? 'SHARING_MODE_UNSPECIFIED'}`);
}

// Screen header with the staff sub-navigation.
export function StaffHeader({ title, current }: { title: string; current: string }) {
  useSignal(lang);
  const tabs: [string, string][] = [
    ['#/staff/approvals', 'staff.nav.approvals'],
    ['#/staff/maintenance', 'staff.nav.maintenance'],
    ['#/staff/leases', 'staff.nav.leases'],
    ['#/staff/orders', 'staff.nav.orders'],
    ['#/staff/qualifications', 'staff.nav.qualifications'],
  ];
  return (
    <header class="staff-head">
      <h1>{title}</h1>
      <nav aria-label={t('staff.nav.label')} class="staff-tabs">
        {tabs.map(([href, key]) => (
          <a key={href} href={href} aria-current={href === current ? 'page' : undefined}>{t(key)}</a>
        ))}
      </nav>
    </header>
  );
}

// The items of a list RPC (every page) on the staff's instruments, loaded
// again when deps change (items undefined meanwhile).
export function useOnMyInstruments<T extends { instrument: string }>(
  world: StaffWorld | undefined,
  page: (pageToken: string) => Promise<{ items: T[]; next: string }>,
  deps: unknown[],
): { items?: T[]; error?: ShownError } {
  const [state, setState] = useState<{ items?: T[]; error?: ShownError }>({});
  useEffect(() => {
    if (!world) return;
    let live = true;
    const mine = new Set(world.instruments.map((i) => i.name));
    setState((s) => ({ error: s.error }));
    listAll(page).then(
      (all) => live && setState({ items: all.filter((x) => mine.has(x.instrument)) }),
      (err) => live && setState({ error: explain(err) }),
    );
    return () => { live = false; };
  }, [world, ...deps]);
  return state;
}

// The "Show" chooser of a list: one option per filter, labelled `${prefix}.${key}`.
export function FilterSelect({ testid, filters, prefix, value, onChange }: {
  testid: string; filters: string[]; prefix: string; value: string; onChange: (v: string) => void;
}) {
  return (
    <label class="field" style="max-width:260px">
      <span>{t('staff.filter.show')}</span>
      <select data-testid={testid} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {filters.map((k) => <option key={k} value={k}>{t(`${prefix}.${k}`)}</option>)}
      </select>
    </label>
  );
}
