// #/billing/subsidies[?period=2027-03][&org=nanocraft]: the subsidy pools
// (ListSubsidyPools: terms, balance, public to members) and, for each, the
// organisation's allowance (GetSubsidyAllowance: eligible or why not, cap,
// used, remaining in the cap period containing the period, or now), plus
// the subsidies on its invoices of the period.
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  FeeKind, PeriodKind, SizeClass, SubsidyPool_State,
  type SubsidyAllowance, type SubsidyPool,
} from '../../../../gen/labshare/billing/v1/billing_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { billing } from '../../api';
import { money, percentBps } from '../../format';
import { lang, t, listText } from '../../i18n';
import { categoryLabel } from '../../categories';
import { useSignal } from '../../signal';
import {
  BillingHeader, chosenOrg, date, Facts, isPeriod, periodLabel, useNames, word, type Names, useStackedTables,
} from './common';
import { StateBadge } from './invoices';
import { ErrorBox, Loaded, Loading, useLoad } from '../../ui';
import { idOf, listAll } from '../../names';

interface Row { pool: SubsidyPool; allowance?: SubsidyAllowance; error?: unknown }

async function load(org: string, period: string | undefined): Promise<Row[]> {
  const pools: SubsidyPool[] = await listAll(async (pageToken) => {
    const r = await billing.listSubsidyPools({ pageSize: 100, pageToken });
    return { items: r.subsidyPools, next: r.nextPageToken };
  });
  const time = period ? timestampFromDate(new Date(`${period}-01T12:00:00+08:00`)) : undefined;
  return Promise.all(pools.map((pool) =>
    billing.getSubsidyAllowance({ name: `${pool.name}/allowances/${idOf(org)}`, time }).then(
      (allowance) => ({ pool, allowance }),
      (error: unknown) => ({ pool, error }),
    )));
}

function eligibility(pool: SubsidyPool): string {
  const e = pool.eligibility;
  const parts = [
    ...(e?.sizeClasses ?? []).map((s) => word('size', SizeClass, s)),
    ...(e?.modes ?? []).map((m) => word('mode', SharingMode, m)),
    ...(e?.instrumentCategories ?? []).map(categoryLabel),
    ...(e?.feeKinds ?? []).map((f) => word('feeKind', FeeKind, f)),
  ].filter(Boolean);
  return parts.length ? listText(parts) : t('billing.subsidies.everything');
}

function validity(pool: SubsidyPool): string {
  const v = pool.validity;
  if (v?.startTime && v.endTime) return `${date(v.startTime)} – ${date(v.endTime)}`;
  if (v?.startTime) return t('billing.subsidies.from', { date: date(v.startTime) });
  if (v?.endTime) return t('billing.subsidies.until', { date: date(v.endTime) });
  return t('billing.subsidies.openEnded');
}

function PoolCard({ row, names }: { row: Row; names: Names }) {
  const { pool, allowance: a } = row;
  const capPeriod = a?.capPeriod?.startTime
    ? `${date(a.capPeriod.startTime)} – ${date(a.capPeriod.endTime ? { ...a.capPeriod.endTime, seconds: a.capPeriod.endTime.seconds - 1n } : undefined)}`
    : '';
  return (
    <section class="card" data-testid="pool" data-pool={pool.name}>
      <h2>{pool.displayName || idOf(pool.name)} <StateBadge group="poolState" names={SubsidyPool_State} value={pool.state} /></h2>
      {pool.description && <p>{pool.description}</p>}
      <Facts items={[
        [t('billing.subsidies.funder'), pool.funderDisplayName || (pool.funderOrganization ? names.org(pool.funderOrganization) : '—')],
        [t('billing.subsidies.percentage'), percentBps(pool.percentageBps)],
        [t('billing.subsidies.eligibility'), eligibility(pool)],
        [t('billing.subsidies.cap'), pool.capPerOrganization
          ? `${money(pool.capPerOrganization)} ${word('periodKind', PeriodKind, pool.capPeriodKind)}` : t('billing.subsidies.noCap')],
        [t('billing.subsidies.balance'), money(pool.balance)],
        [t('billing.subsidies.granted'), money(pool.grantedTotal)],
        [t('billing.subsidies.validity'), validity(pool)],
      ]} />
      <h3>{names.org(a?.organization || '')}</h3>
      {row.error !== undefined ? <ErrorBox error={row.error} /> : a && (
        <div data-testid="allowance">
          <p>
            <span class={`billing-status s-${a.eligible ? 'paid' : 'VOID'}`} data-testid="eligible">
              {a.eligible ? t('billing.subsidies.eligible') : t('billing.subsidies.notEligible')}
            </span>
            {!a.eligible && a.ineligibleReason && <span class="muted"> {a.ineligibleReason}</span>}
          </p>
          <Facts items={[
            [t('billing.subsidies.period'), capPeriod || '—'],
            [t('billing.subsidies.used'), <span data-testid="used">{a.cap ? t('billing.subsidies.usedOf', { used: money(a.used), cap: money(a.cap) }) : money(a.used)}</span>],
            [t('billing.subsidies.remaining'), <span class="billing-total" data-testid="remaining">{money(a.remaining)}</span>],
          ]} />
        </div>
      )}
    </section>
  );
}

function Received({ org, period, names }: { org: string; period: string; names: Names }) {
  const load = useLoad(() => listAll(async (pageToken) => {
    const r = await billing.listInvoices({ period, payerOrganization: org, pageSize: 200, pageToken });
    return { items: r.invoices, next: r.nextPageToken };
  }).then((invoices) => ({ invoices })), [org, period]);
  if (load.error) return <ErrorBox error={load.error} />;
  if (!load.data) return <Loading />;
  return (
    <>
      {load.data.invoices.map((inv) => (
        <p key={inv.name} data-testid="subsidy-received">
          {t('billing.subsidies.received', { org: names.org(org), period: periodLabel(period), amount: money(inv.subsidyTotal && { ...inv.subsidyTotal, amountMinor: -inv.subsidyTotal.amountMinor }) })}
          {' '}(<a href={`#/billing/invoices/${idOf(inv.name)}`}>{inv.number}</a>)
        </p>
      ))}
    </>
  );
}

export default function Subsidies({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useStackedTables();
  const names = useNames();
  const period = isPeriod(params.period) ? params.period : undefined;
  const org = chosenOrg(params);
  const rows = useLoad(() => load(org, period), [org, period]);
  return (
    <section>
      <h1>{t('billing.subsidies.title', { org: names.org(org) })}</h1>
      <BillingHeader params={params} names={names} period={period} allowAllPeriods />
      <p class="muted">{t('billing.subsidies.intro')} {period ? t('billing.subsidies.asOfPeriod', { period: periodLabel(period) }) : t('billing.subsidies.asOfNow')}</p>
      {period && org && <Received org={org} period={period} names={names} />}
      <Loaded load={rows}>
        {(rs) => rs.length === 0 ? <p>{t('billing.subsidies.empty')}</p> : (
          <>{rs.map((r) => <PoolCard key={r.pool.name} row={r} names={names} />)}</>
        )}
      </Loaded>
    </section>
  );
}
