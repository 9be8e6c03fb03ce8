// #/dash/instruments/:id?month=2027-03: one instrument's figures for one
// month, as the usage service computes them (GetUsageFigures with the
// instrument filter), and its days (QueryUsage, granularity DAY).
import { useMemo } from 'preact/hooks';
import { PeriodGranularity } from '../../../../gen/labshare/usage/v1/usage_pb';
import type { UsageFigures } from '../../../../gen/labshare/usage/v1/usage_pb';
import { usage } from '../../api';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { categoryLabel } from '../../categories';
import {
  addMonths, ComputedNote, DataTable, dayLabel, facilityName, hours, hoursValue, int, monthKey, monthLabel, monthsRange, noteZone, orgName, parseMonth, ratio, Section, useNames, zone,
} from './common';
import { EChart, type ChartOption } from './chart';
import { ErrorBox, Loading, useLoad, ColumnHeads } from '../../ui';
import { go, href } from '../../nav';
import { money } from '../../format';

export default function InstrumentFigures({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const names = useNames();
  const id = params.id ?? '';
  const name = `instruments/${id}`;
  const mo = parseMonth(params.month);
  const key = monthKey(mo);
  const info = names.instruments.get(name);

  const data = useLoad(async () => {
    const ask = () => usage.getUsageFigures({ range: monthsRange(mo), filter: { instruments: [name] } });
    let figures = await ask();
    if (noteZone(figures.computation?.timeZone)) figures = await ask();
    const days = await usage.queryUsage({
      range: monthsRange(mo), granularity: PeriodGranularity.DAY, filter: { instruments: [name] }, pageSize: 400,
    });
    return { figures, days };
  }, [name, key]);

  const path = `#/dash/instruments/${encodeURIComponent(id)}`;
  const f = data.data?.figures.figures;
  return (
    <div class="dash">
      <p><a href={href('#/dash', { month: key })}>‹ {t('dash.back', { month: monthLabel(mo) })}</a></p>
      <header class="dash-head">
        <h1>{t('dash.instrument.title', { name: info?.displayName || id, month: monthLabel(mo) })}</h1>
        {info ? (
          <p class="muted">
            {t('dash.instrument.meta', {
              owner: orgName(names, info.owner), facility: facilityName(names, info.facility), category: categoryLabel(info.category),
            })}
          </p>
        ) : null}
        <nav class="row dash-monthnav" aria-label={t('dash.monthNav')}>
          <a href={href(path, { month: monthKey(addMonths(mo, -1)) })}>‹ {monthLabel(addMonths(mo, -1), 'short')}</a>
          <label class="field">
            <span>{t('dash.month')}</span>
            <input
              type="month"
              value={key}
              onChange={(e) => {
                const v = (e.target as HTMLInputElement).value;
                if (/^\d{4}-\d{2}$/.test(v)) go(path, { month: v });
              }}
            />
          </label>
          <a href={href(path, { month: monthKey(addMonths(mo, 1)) })}>{monthLabel(addMonths(mo, 1), 'short')} ›</a>
          <span class="dash-spacer" />
          <a href={href('#/dash/audit', { resource: name })}>{t('dash.instrument.auditLink')}</a>
        </nav>
        <p class="muted dash-small">{t('dash.zoneNote', { zone: zone() })}</p>
      </header>
      {data.error ? <ErrorBox error={data.error} /> : null}
      {!data.data && data.loading ? <Loading /> : null}
      {f && data.data ? (
        <>
          <Figures f={f} />
          <ComputedNote computed={data.data.figures.computation?.computedTime} provisional={data.data.figures.computation?.provisional} />
          <Days rows={data.data.days.rows} />
        </>
      ) : null}
    </div>
  );
}

function Figures({ f }: { f: UsageFigures }) {
  const groups: { title: string; items: [string, string, string][] }[] = [
    {
      title: t('dash.instrument.time'),
      items: [
        ['effective', t('dash.fig.effective'), hours(f.effectiveSeconds)],
        ['external', t('dash.fig.external'), hours(f.externalSeconds)],
        ['available', t('dash.fig.available'), hours(f.availableSeconds)],
        ['maintenance', t('dash.fig.maintenance'), hours(f.maintenanceSeconds)],
        ['utilization', t('dash.fig.utilization'), ratio(f.utilization)],
        ['sharing', t('dash.fig.sharing'), ratio(f.sharingRate)],
      ],
    },
    {
      title: t('dash.instrument.bookings'),
      items: [
        ['bookings', t('dash.fig.bookings'), int(f.bookings)],
        ['completed', t('dash.fig.completed'), int(f.completedBookings)],
        ['missed', t('dash.fig.missed'), int(f.missedBookings)],
        ['cancelled', t('dash.fig.cancelled'), int(f.cancelledBookings)],
        ['late-cancelled', t('dash.fig.lateCancelled'), int(f.lateCancelledBookings)],
        ['outage-cancelled', t('dash.fig.outageCancelled'), int(f.outageCancelledBookings)],
        ['rejected', t('dash.fig.rejected'), int(f.rejectedRequests)],
      ],
    },
    {
      title: t('dash.instrument.money'),
      items: [
        ['income', t('dash.fig.income'), money(f.serviceIncome)],
        ['penalty', t('dash.fig.penalty'), money(f.penaltyIncome)],
        ['subsidized', t('dash.fig.subsidized'), money(f.subsidizedIncome)],
        ['in-kind', t('dash.fig.inKind'), money(f.inKindContribution)],
        ['original-value', t('dash.fig.originalValue'), money(f.originalValue)],
        ['revenue-rate', t('dash.fig.revenueRate'), ratio(f.revenueRate)],
        ...f.otherCurrencyIncome.map((m, i): [string, string, string] => [`other-${i}`, t('dash.fig.otherCurrency'), money(m)]),
      ],
    },
    {
      title: t('dash.instrument.served'),
      items: [
        ['users', t('dash.fig.users'), t('dash.fig.usersValue', { n: int(f.usersServed), ext: int(f.externalUsersServed), sme: int(f.smeUsersServed) })],
        ['orgs', t('dash.fig.orgs'), t('dash.fig.orgsValue', {
          n: int(f.organizationsServed), ext: int(f.externalOrganizationsServed), sme: int(f.smeOrganizationsServed),
          startup: int(f.startupOrganizationsServed),
        })],
      ],
    },
  ];
  return (
    <div class="dash-grid2" data-testid="figures">
      {groups.map((g) => (
        <section class="card" key={g.title} aria-label={g.title}>
          <h2>{g.title}</h2>
          <dl class="dash-dl">
            {g.items.map(([k, label, v]) => (
              <div key={k} data-testid={`fig-${k}`}>
                <dt>{label}</dt>
                <dd>{v}</dd>
              </div>
            ))}
          </dl>
        </section>
      ))}
    </div>
  );
}

function Days({ rows }: { rows: { period?: { startTime?: import('@bufbuild/protobuf/wkt').Timestamp }; figures?: UsageFigures }[] }) {
  const l = lang.value;
  const used = rows.filter((r) => (r.figures?.effectiveSeconds ?? 0n) > 0n || (r.figures?.bookings ?? 0n) > 0n);
  const option = useMemo((): ChartOption => ({
    tooltip: { trigger: 'axis', valueFormatter: (v: unknown) => t('dash.unit.hours', { n: String(v ?? 0) }) },
    legend: { top: 0 },
    grid: { left: 8, right: 8, top: 36, bottom: 8, containLabel: true },
    xAxis: { type: 'category', data: rows.map((r) => dayLabel(r.period?.startTime)) },
    yAxis: { type: 'value', name: t('dash.unit.hoursAxis') },
    series: [
      { name: t('dash.series.effective'), type: 'bar', data: rows.map((r) => hoursValue(r.figures?.effectiveSeconds)) },
      { name: t('dash.series.external'), type: 'bar', data: rows.map((r) => hoursValue(r.figures?.externalSeconds)) },
    ],
  }), [rows, l]);
  return (
    <Section id="dash-days" title={t('dash.instrument.days')} testid="days">
      <EChart option={option} height={280} label={t('dash.instrument.daysAria')} testid="chart-days" />
      <DataTable caption={t('dash.instrument.days')}>
        <ColumnHeads prefix="dash.col." cols={['day', '#effective', '#external', '#bookings', '#income']} />
        <tbody>
          {used.length === 0 ? (
            <tr><td colSpan={5}>{t('dash.instrument.noDays')}</td></tr>
          ) : used.map((r) => (
            <tr key={String(r.period?.startTime?.seconds)}>
              <th scope="row">{dayLabel(r.period?.startTime)}</th>
              <td class="num">{hours(r.figures?.effectiveSeconds)}</td>
              <td class="num">{hours(r.figures?.externalSeconds)}</td>
              <td class="num">{int(r.figures?.bookings)}</td>
              <td class="num">{money(r.figures?.serviceIncome)}</td>
            </tr>
          ))}
        </tbody>
      </DataTable>
    </Section>
  );
}
