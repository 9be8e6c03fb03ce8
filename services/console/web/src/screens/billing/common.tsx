// Shared pieces of the billing screens: the organisation chooser (for
// callers who may see several organisations), the billing-period chooser,
// the tabs between the billing views, display names, and words for the
// service's enums.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { create } from '@bufbuild/protobuf';
import { timestampFromDate, timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { IntervalSchema, type Interval } from '../../../../gen/labshare/type/v1/types_pb';
import { billing } from '../../api';
import { allFacilities, allInstruments, allOrganizations, idOf, listAll } from '../../names';
import { go, hashPath, href } from '../../nav';
import { lang, t } from '../../i18n';
import { hasRole, session } from '../../session';
import { useSignal } from '../../signal';
import './messages';
import './billing.css';
import { dateLocale } from '../../format';

// Billing periods are calendar months in the consortium time zone
// (billing.proto; Asia/Shanghai, UTC+08:00 all year).
export const CONSORTIUM_TZ = 'Asia/Shanghai';
const OFFSET = '+08:00';

export function isPeriod(p: string | undefined): p is string {
  return !!p && /^\d{4}-(0[1-9]|1[0-2])$/.test(p);
}

export function currentPeriod(): string {
  const d = new Date();
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: CONSORTIUM_TZ, year: 'numeric', month: '2-digit' }).formatToParts(d);
  const y = parts.find((p) => p.type === 'year')?.value ?? '1970';
  const m = parts.find((p) => p.type === 'month')?.value ?? '01';
  return `${y}-${m}`;
}

export function previousPeriod(p: string): string {
  const [y, m] = p.split('-').map(Number) as [number, number];
  return m === 1 ? `${y - 1}-12` : `${y}-${String(m - 1).padStart(2, '0')}`;
}

export function nextPeriod(p: string): string {
  const [y, m] = p.split('-').map(Number) as [number, number];
  return m === 12 ? `${y + 1}-01` : `${y}-${String(m + 1).padStart(2, '0')}`;
}

export function periodInterval(p: string): Interval {
  return create(IntervalSchema, {
    startTime: timestampFromDate(new Date(`${p}-01T00:00:00${OFFSET}`)),
    endTime: timestampFromDate(new Date(`${nextPeriod(p)}-01T00:00:00${OFFSET}`)),
  });
}

// "2027-03" as "March 2027" / "2027年3月".
export function periodLabel(p: string): string {
  if (!isPeriod(p)) return p;
  return new Intl.DateTimeFormat(dateLocale(), { timeZone: 'UTC', year: 'numeric', month: 'long' })
    .format(new Date(`${p}-15T00:00:00Z`));
}

export function date(ts: Timestamp | undefined, timeZone = CONSORTIUM_TZ): string {
  if (!ts) return '—';
  // Numeric, as every date and time of the console (format.ts dateTime): "01/04/2027", "2027/04/01".
  return new Intl.DateTimeFormat(dateLocale(), { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(timestampDate(ts));
}

export function quantity(milli: bigint): string {
  return new Intl.NumberFormat(lang.value, { maximumFractionDigits: 3 }).format(Number(milli) / 1000);
}

// Words for an enum value: t(`billing.<group>.<NAME>`).
export function word(group: string, names: Record<number, string>, v: number): string {
  return t(`billing.${group}.${names[v] ?? 'UNSPECIFIED'}`);
}

// ------------------------------------------------------------------ names

export interface Names { party: (name: string) => string; org: (name: string) => string; instrument: (name: string) => string; orgs: { name: string; label: string }[]; instrumentZone: (name: string) => string }

let namesPromise: Promise<Names> | undefined;

async function loadNames(): Promise<Names> {
  const [orgList, instrumentList, facilityList, poolList] = await Promise.all([
    allOrganizations(), allInstruments(), allFacilities(),
    listAll(async (pageToken) => {
      const r = await billing.listSubsidyPools({ pageSize: 100, pageToken });
      return { items: r.subsidyPools, next: r.nextPageToken };
    }).catch(() => []),
  ]);
  const orgs = new Map(orgList.map((o) => [o.name, o.displayName || idOf(o.name)]));
  const instruments = new Map(instrumentList.map((i) => [i.name, { label: i.displayName || idOf(i.name), facility: i.facility }]));
  const zones = new Map(facilityList.map((f) => [f.name, f.timeZone || CONSORTIUM_TZ]));
  const pools = new Map(poolList.map((p) => [p.name, p.displayName || idOf(p.name)]));
  return {
    party: (n) => orgs.get(n) ?? pools.get(n) ?? (n ? idOf(n) : '—'),
    org: (n) => orgs.get(n) ?? (n ? idOf(n) : '—'),
    instrument: (n) => instruments.get(n)?.label ?? (n ? idOf(n) : '—'),
    instrumentZone: (n) => zones.get(instruments.get(n)?.facility ?? '') ?? CONSORTIUM_TZ,
    orgs: [...orgs.entries()].map(([name, label]) => ({ name, label })).sort((a, b) => a.label.localeCompare(b.label)),
  };
}

const fallbackNames: Names = {
  party: (n) => (n ? idOf(n) : '—'), org: (n) => (n ? idOf(n) : '—'), instrument: (n) => (n ? idOf(n) : '—'), instrumentZone: () => CONSORTIUM_TZ, orgs: [],
};

// Display names of organisations and instruments (inventory; any signed-in
// person may read them). Resource ids until they arrive, or if they fail.
export function useNames(): Names {
  const [names, setNames] = useState<Names>(fallbackNames);
  useEffect(() => {
    namesPromise ??= loadNames().catch(() => { namesPromise = undefined; return fallbackNames; });
    let live = true;
    void namesPromise.then((n) => live && setNames(n));
    return () => { live = false; };
  }, []);
  return names;
}

// May the caller look at several organisations' billing? (The services
// decide; the consortium admin and the auditor see everything.)
export function seesAll(): boolean {
  return hasRole('CONSORTIUM_ADMIN', 'AUDITOR');
}

export function isAdmin(): boolean {
  return hasRole('CONSORTIUM_ADMIN');
}

// The organisation a view is about: the route's ?org= for those who see
// several, otherwise the caller's own organisation.
export function chosenOrg(params: Record<string, string>, allowAll = false): string {
  const own = session.value.organization ?? '';
  if (!seesAll()) return own;
  if (params.org === '-' && allowAll) return '';
  if (params.org) return `organizations/${params.org}`;
  return allowAll ? '' : own;
}

// ------------------------------------------------------------------ header

const TABS = [
  { path: '#/billing/invoices', key: 'billing.tab.invoices' },
  { path: '#/billing/statement', key: 'billing.tab.statement' },
  { path: '#/billing/subsidies', key: 'billing.tab.subsidies' },
  { path: '#/billing/settlements', key: 'billing.tab.settlements' },
  { path: '#/billing/invoicing', key: 'billing.tab.invoicing' },
];

// Tabs between the billing views, keeping organisation and period, plus the
// organisation chooser (only for callers who may see several) and the period
// chooser.
export function BillingHeader({ params, names, period, allowAllOrgs = false, allowAllPeriods = false, tabPeriod, chooser = true }: {
  params: Record<string, string>; names: Names; period?: string; allowAllOrgs?: boolean; allowAllPeriods?: boolean;
  tabPeriod?: string; chooser?: boolean;
}) {
  useSignal(lang);
  const path = hashPath();
  const keep = { org: params.org, period: period ?? tabPeriod ?? params.period };
  const [month, setMonth] = useState(period ?? '');
  useEffect(() => setMonth(period ?? ''), [period]);
  const org = chosenOrg(params, allowAllOrgs);
  return (
    <div class="billing-head">
      <nav aria-label={t('billing.tabs')} class="billing-tabs">
        {TABS.map((tab) => (
          <a key={tab.path} href={href(tab.path, keep)} aria-current={path.startsWith(tab.path) ? 'page' : undefined}>
            {t(tab.key)}
          </a>
        ))}
      </nav>
      {chooser && <form class="row" onSubmit={(e) => {
        e.preventDefault();
        go(path, { ...keep, period: isPeriod(month) ? month : undefined });
      }}>
        {seesAll() && (
          <label class="field">
            {t('billing.org')}
            <select data-testid="billing-org" value={params.org === '-' && allowAllOrgs ? '-' : idOf(org) || (allowAllOrgs ? '-' : '')}
              onChange={(e) => go(path, { ...keep, org: (e.target as HTMLSelectElement).value })}>
              {allowAllOrgs && <option value="-">{t('billing.org.all')}</option>}
              {names.orgs.length === 0 && org && <option value={idOf(org)}>{names.org(org)}</option>}
              {names.orgs.map((o) => <option key={o.name} value={idOf(o.name)}>{o.label}</option>)}
            </select>
          </label>
        )}
        {period !== undefined || allowAllPeriods ? (
          <>
            <label class="field">
              {t('billing.period')}
              <input type="month" data-testid="billing-period" value={month} required={!allowAllPeriods}
                onInput={(e) => setMonth((e.target as HTMLInputElement).value)} />
            </label>
            <button type="submit">{t('billing.period.show')}</button>
            {allowAllPeriods && period && (
              <button type="button" onClick={() => go(path, { ...keep, period: undefined })}>{t('billing.period.clear')}</button>
            )}
          </>
        ) : null}
      </form>}
    </div>
  );
}

// Tables of class "billing-stack" become one card per row at phone width:
// each cell is labelled with its column heading (copied here after every
// render, so the labels follow the language), blank cells are hidden.
function labelTables(): void {
  document.querySelectorAll<HTMLTableElement>('table.billing-stack').forEach((table) => {
    const heads = [...table.querySelectorAll('thead th')].map((th) => th.textContent ?? '');
    table.querySelectorAll<HTMLTableRowElement>('tbody tr').forEach((tr) => {
      let col = 0;
      for (const td of [...tr.cells]) {
        if (td.dataset.label !== heads[col]) td.dataset.label = heads[col] ?? '';
        td.classList.toggle('blank', !(td.textContent ?? '').trim() && !td.querySelector('button, input, select'));
        col += td.colSpan || 1;
      }
    });
  });
}

export function useStackedTables(): void {
  useEffect(() => {
    labelTables();
    let pending = 0;
    // Content and language change without this component re-rendering:
    // relabel after any change of text or elements (not of attributes).
    const obs = new MutationObserver(() => {
      if (!pending) pending = requestAnimationFrame(() => { pending = 0; labelTables(); });
    });
    const root = document.getElementById('main') ?? document.body;
    obs.observe(root, { childList: true, subtree: true, characterData: true });
    return () => { obs.disconnect(); if (pending) cancelAnimationFrame(pending); };
  }, []);
}

// A small definition list of label/value pairs.
export function Facts({ items }: { items: [string, ComponentChildren][] }) {
  return (
    <dl class="billing-facts">
      {items.map(([k, v]) => (
        <div key={k}><dt>{k}</dt><dd>{v}</dd></div>
      ))}
    </dl>
  );
}
