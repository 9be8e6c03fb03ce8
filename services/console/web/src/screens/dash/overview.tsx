// #/dash?month=2027-03[&trend=12]: the consortium dashboard of one month for
// CONSORTIUM_ADMIN and AUDITOR. Every figure is the usage service's
// (QueryUsage, ListIdleInstruments, ListUnderSharedInstruments,
// GetSharingMatrix, GetThresholds); the console only draws and formats them.
import { useMemo, useState } from 'preact/hooks';
import { Dimension, PeriodGranularity } from '../../../../gen/labshare/usage/v1/usage_pb';
import type {
  GetSharingMatrixResponse, InstrumentAssessment, QueryUsageResponse, Thresholds, UsageFigures, UsageRow,
} from '../../../../gen/labshare/usage/v1/usage_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { QueryUsageRequestSchema } from '../../../../gen/labshare/usage/v1/usage_pb';
import { usage } from '../../api';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  addMonths, ComputedNote, DataTable, hours, hoursValue, instrumentName, int, modeLabel, monthKey, monthLabel, monthOf, monthsRange, n, noteZone, orgName, parseMonth, percentText, ratio, ratioPercent, Section, useNames, zone, type Month, type Names,
} from './common';
import { EChart, narrow, type ChartOption } from './chart';
import { ErrorBox, Loading, useLoad, ColumnHeads } from '../../ui';
import { idOf } from '../../names';
import { go, href } from '../../nav';
import { money, moneyValue, percentBps } from '../../format';

type QueryInit = MessageInitShape<typeof QueryUsageRequestSchema>;

// Every page of a QueryUsage (rows are paged; totals repeat on every page).
async function queryAll(req: QueryInit): Promise<QueryUsageResponse> {
  let first: QueryUsageResponse | undefined;
  const rows: UsageRow[] = [];
  let token = '';
  do {
    const r = await usage.queryUsage({ ...req, pageSize: 500, pageToken: token });
    first ??= r;
    rows.push(...r.rows);
    token = r.nextPageToken;
  } while (token);
  first!.rows = rows;
  return first!;
}

// The first request learns the reporting zone; if it is not the one assumed,
// ask again with ranges aligned to it.
async function withZone<T extends { computation?: { timeZone: string } }>(f: () => Promise<T>): Promise<T> {
  const r = await f();
  return noteZone(r.computation?.timeZone) ? f() : r;
}

// Threshold band of an instrument: the largest min_original_value <= value
// (the first band when the value is unknown), as usage.proto defines it.
function bandOf(th: Thresholds, f: UsageFigures) {
  const value = f.originalValue && f.originalValue.currencyCode ? f.originalValue.amountMinor : undefined;
  let band = th.bands[0];
  if (value !== undefined) for (const b of th.bands) if ((b.minOriginalValue?.amountMinor ?? 0n) <= value) band = b;
  return band;
}
// round_half_up(T x in_service_seconds / 31536000)
function prorate(perYear: bigint, calendarSeconds: bigint): bigint {
  const Y = 31536000n;
  return (perYear * calendarSeconds * 2n + Y) / (2n * Y);
}

interface InstrumentLine {
  name: string;
  label: string;
  owner: string;
  f: UsageFigures;
  idleThreshold?: bigint;
  minExternal?: bigint;
  minSharingBp?: number;
  assessed: boolean;
  idle: boolean;
  underShared: boolean;
}

export default function Dashboard({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const names = useNames();
  const mo = parseMonth(params.month);
  const key = monthKey(mo);
  const trendN = params.trend === '12' ? 12 : 6;

  const main = useLoad(async () => {
    const instruments = await withZone(() => queryAll({
      range: monthsRange(mo), granularity: PeriodGranularity.RANGE, groupBy: [Dimension.INSTRUMENT],
    }));
    const [thresholds, idle, under] = await Promise.all([
      usage.getThresholds({ name: 'thresholds' }),
      listAll((token) => usage.listIdleInstruments({ range: monthsRange(mo), pageSize: 200, pageToken: token })),
      listAll((token) => usage.listUnderSharedInstruments({ range: monthsRange(mo), pageSize: 200, pageToken: token })),
    ]);
    return { instruments, thresholds, idle, under };
  }, [key]);

  const setView = (q: Record<string, string | undefined>) => {
    go('#/dash', { month: key, trend: params.trend, ...q });
  };

  return (
    <div class="dash">
      <header class="dash-head">
        <h1>{t('dash.title', { month: monthLabel(mo) })}</h1>
        <nav class="row dash-monthnav" aria-label={t('dash.monthNav')}>
          <a href={href('#/dash', { month: monthKey(addMonths(mo, -1)), trend: params.trend })} data-testid="prev-month">
            ‹ {monthLabel(addMonths(mo, -1), 'short')}
          </a>
          <label class="field">
            <span>{t('dash.month')}</span>
            <input
              type="month"
              value={key}
              data-testid="month"
              onChange={(e) => {
                const v = (e.target as HTMLInputElement).value;
                if (/^\d{4}-\d{2}$/.test(v)) setView({ month: v });
              }}
            />
          </label>
          <a href={href('#/dash', { month: monthKey(addMonths(mo, 1)), trend: params.trend })} data-testid="next-month">
            {monthLabel(addMonths(mo, 1), 'short')} ›
          </a>
          <span class="dash-spacer" />
          <a href={href('#/dash/annual', { year: String(mo.y) })}>{t('dash.annual.link', { year: mo.y })}</a>
          <a href="#/dash/audit">{t('dash.audit.link')}</a>
        </nav>
        <p class="muted dash-small">{t('dash.zoneNote', { zone: zone() })}</p>
      </header>

      {main.error ? <ErrorBox error={main.error} /> : null}
      {!main.data && main.loading ? <Loading /> : null}
      {main.data ? (
        <MonthFigures
          mo={mo}
          names={names}
          instruments={main.data.instruments}
          thresholds={main.data.thresholds}
          idle={main.data.idle}
          under={main.data.under}
        />
      ) : null}
      <Trend mo={mo} n={trendN} onN={(v) => setView({ trend: v === 12 ? '12' : undefined })} />
      <Income mo={mo} names={names} />
      <Matrix mo={mo} names={names} />
    </div>
  );
}

interface Listed { instruments: InstrumentAssessment[]; totalSize: bigint; nextPageToken: string }
async function listAll(f: (token: string) => Promise<Listed>): Promise<{ instruments: InstrumentAssessment[]; total: number }> {
  const out: InstrumentAssessment[] = [];
  let token = '';
  let total = 0;
  do {
    const r = await f(token);
    out.push(...r.instruments);
    total = n(r.totalSize);
    token = r.nextPageToken;
  } while (token);
  return { instruments: out, total };
}

// ------------------------------------------------------------ the month

function MonthFigures({ mo, names, instruments, thresholds, idle, under }: {
  mo: Month; names: Names; instruments: QueryUsageResponse; thresholds: Thresholds;
  idle: { instruments: InstrumentAssessment[]; total: number }; under: { instruments: InstrumentAssessment[]; total: number };
}) {
  const tot = instruments.totals;
  const idleSet = new Set(idle.instruments.map((a) => a.instrument));
  const underSet = new Set(under.instruments.map((a) => a.instrument));
  const minDays = BigInt(thresholds.minimumAssessedDays || 0) * 86400n;
  const lines = useMemo((): InstrumentLine[] => instruments.rows.map((r) => {
    const f = r.figures!;
    const band = thresholds.bands.length ? bandOf(thresholds, f) : undefined;
    return {
      name: r.key!.instrument,
      label: instrumentName(names, r.key!.instrument),
      owner: names.instruments.get(r.key!.instrument)?.owner ?? '',
      f,
      idleThreshold: band ? prorate(band.idleEffectiveSecondsPerYear, f.calendarSeconds) : undefined,
      minExternal: band && band.minExternalSecondsPerYear > 0n ? prorate(band.minExternalSecondsPerYear, f.calendarSeconds) : undefined,
      minSharingBp: band?.minSharingRateBp,
      assessed: f.calendarSeconds >= minDays,
      idle: idleSet.has(r.key!.instrument),
      underShared: underSet.has(r.key!.instrument),
    };
  }), [instruments, thresholds, idle, under, names]);
  return (
    <>
      <Kpis f={tot} />
      <ComputedNote computed={instruments.computation?.computedTime} provisional={instruments.computation?.provisional} />
      <PerInstrumentCharts lines={lines} mo={mo} />
      <InstrumentTable lines={lines} mo={mo} names={names} />
      <Assessments mo={mo} names={names} idle={idle} under={under} />
    </>
  );
}

function Kpis({ f }: { f?: UsageFigures }) {
  if (!f) return null;
  const items: [string, string, string][] = [
    ['instruments', t('dash.kpi.instruments'), int(f.instrumentCount)],
    ['effective', t('dash.kpi.effective'), hours(f.effectiveSeconds)],
    ['external', t('dash.kpi.external'), hours(f.externalSeconds)],
    ['utilization', t('dash.kpi.utilization'), ratio(f.utilization)],
    ['sharing', t('dash.kpi.sharing'), ratio(f.sharingRate)],
    ['income', t('dash.kpi.income'), money(f.serviceIncome)],
    ['bookings', t('dash.kpi.bookings'), int(f.bookings)],
    ['orgs', t('dash.kpi.orgsServed'), t('dash.kpi.orgsValue', { n: int(f.organizationsServed), sme: int(f.smeOrganizationsServed) })],
  ];
  return (
    <section aria-label={t('dash.kpi.label')}>
      <dl class="dash-kpis" data-testid="kpis">
        {items.map(([k, label, v]) => (
          <div key={k} class="dash-kpi" data-testid={`kpi-${k}`}>
            <dt>{label}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </section>
  );
}

function PerInstrumentCharts({ lines, mo }: { lines: InstrumentLine[]; mo: Month }) {
  const l = lang.value;
  const sorted = useMemo(() => [...lines].sort((a, b) =>
    (ratioPercent(b.f.utilization) ?? -1) - (ratioPercent(a.f.utilization) ?? -1) || a.label.localeCompare(b.label)), [lines]);
  const used = useMemo(() => sorted.filter((x) => x.f.effectiveSeconds > 0n || x.f.bookings > 0n), [sorted]);
  // Many instruments: the used ones by default (the idle ones are listed
  // below); the checkbox shows all.
  const [showAll, setShowAll] = useState(sorted.length <= 12);
  const shown = showAll ? sorted : used;
  const height = Math.max(160, 70 + shown.length * 30);

  const rateOption = useMemo((): ChartOption => {
    const bands = [...new Set(shown.map((x) => x.minSharingBp).filter((x): x is number => x !== undefined))];
    return {
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' }, valueFormatter: (v: unknown) => (v == null ? t('dash.undefined') : percentText(Number(v))) },
      legend: { top: 0 },
      grid: { left: 8, right: 48, top: 36, bottom: 8, containLabel: true },
      xAxis: { type: 'value', max: (v: { max: number }) => Math.max(100, Math.ceil(v.max)), splitNumber: narrow() ? 3 : 5, axisLabel: { formatter: (v: number) => percentText(v), hideOverlap: true } },
      yAxis: { type: 'category', inverse: true, data: shown.map((x) => x.label), axisLabel: { width: narrow() ? 90 : 150, overflow: 'truncate' } },
      series: [
        { name: t('dash.series.utilization'), type: 'bar', data: shown.map((x) => ratioPercent(x.f.utilization)) },
        {
          name: t('dash.series.sharing'), type: 'bar', data: shown.map((x) => ratioPercent(x.f.sharingRate)),
          markLine: {
            symbol: 'none', silent: true, lineStyle: { type: 'dashed', color: '#b3261e', width: 2 },
            label: { formatter: (p: { value: number }) => t('dash.yardstick.sharing', { v: percentText(p.value) }), position: 'insideEndTop', color: '#b3261e', backgroundColor: 'rgba(255,255,255,0.9)', padding: [1, 3] },
            data: bands.map((b) => ({ xAxis: b / 100 })),
          },
        },
      ],
    };
  }, [shown, l]);

  const hoursOption = useMemo((): ChartOption => {
    const idleTh = [...new Set(shown.map((x) => x.idleThreshold).filter((x) => x !== undefined).map(String))];
    const extTh = [...new Set(shown.map((x) => x.minExternal).filter((x) => x !== undefined).map(String))];
    const markData = [
      ...(idleTh.length === 1 ? [{ xAxis: hoursValue(BigInt(idleTh[0]!)), name: 'idle' }] : []),
      ...(extTh.length === 1 ? [{ xAxis: hoursValue(BigInt(extTh[0]!)), name: 'ext' }] : []),
    ];
    const series: unknown[] = [
      {
        name: t('dash.series.effective'), type: 'bar', data: shown.map((x) => hoursValue(x.f.effectiveSeconds)),
        markLine: {
          symbol: 'none', silent: true, lineStyle: { type: 'dashed', color: '#b3261e', width: 2 },
          label: {
            // On a white ground: the line runs over the bars, so must its words.
            position: 'insideEndTop', color: '#b3261e', backgroundColor: 'rgba(255,255,255,0.9)', padding: [1, 3],
            formatter: (p: { name: string; value: number }) =>
              t(p.name === 'idle' ? 'dash.yardstick.idle' : 'dash.yardstick.external', { v: t('dash.unit.hours', { n: p.value }) }),
          },
          data: markData,
        },
      },
      { name: t('dash.series.external'), type: 'bar', data: shown.map((x) => hoursValue(x.f.externalSeconds)) },
    ];
    // Instruments in different value bands or with different time in
    // service have different yardsticks: show each as a marker.
    if (idleTh.length > 1) {
      series.push({
        name: t('dash.series.idleThreshold'), type: 'scatter', symbol: 'diamond', symbolSize: 10, itemStyle: { color: '#b3261e' },
        data: shown.map((x) => (x.idleThreshold === undefined ? null : hoursValue(x.idleThreshold))),
      });
    }
    return {
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' }, valueFormatter: (v: unknown) => t('dash.unit.hours', { n: String(v ?? 0) }) },
      legend: { top: 0 },
      grid: { left: 8, right: 48, top: 36, bottom: 8, containLabel: true },
      xAxis: { type: 'value', splitNumber: narrow() ? 3 : 5, axisLabel: { formatter: (v: number) => t('dash.unit.hours', { n: v }), hideOverlap: true } },
      yAxis: { type: 'category', inverse: true, data: shown.map((x) => x.label), axisLabel: { width: narrow() ? 90 : 150, overflow: 'truncate' } },
      series,
    };
  }, [shown, l]);

  const sharingBands = [...new Set(lines.map((x) => x.minSharingBp).filter((x): x is number => x !== undefined))];
  const idleBands = [...new Set(lines.map((x) => x.idleThreshold).filter((x): x is bigint => x !== undefined).map(String))];
  return (
    <Section id="dash-per-instrument" title={t('dash.perInstrument.title', { month: monthLabel(mo) })} testid="per-instrument">
      <p class="muted">
        {t('dash.perInstrument.intro', {
          sharing: sharingBands.map((b) => percentBps(b)).join(', ') || '—',
          idle: idleBands.map((s) => hours(BigInt(s))).join(', ') || '—',
        })}
      </p>
      <label class="dash-check">
        <input type="checkbox" checked={showAll} onChange={(e) => setShowAll((e.target as HTMLInputElement).checked)} data-testid="show-all" />
        {t('dash.perInstrument.showAll', { n: sorted.length, used: used.length })}
      </label>
      {shown.length === 0 ? <p>{t('dash.perInstrument.noneUsed')}</p> : (
      <div class="dash-grid2">
        <figure class="dash-figure">
          <figcaption>{t('dash.perInstrument.rates')}</figcaption>
          <EChart option={rateOption} height={height} label={t('dash.perInstrument.ratesAria')} testid="chart-rates" />
        </figure>
        <figure class="dash-figure">
          <figcaption>{t('dash.perInstrument.hours')}</figcaption>
          <EChart option={hoursOption} height={height} label={t('dash.perInstrument.hoursAria')} testid="chart-hours" />
        </figure>
      </div>
      )}
      <p class="muted dash-small"><a href="#dash-instruments">{t('dash.perInstrument.tableLink')}</a></p>
    </Section>
  );
}

function InstrumentTable({ lines, mo, names }: { lines: InstrumentLine[]; mo: Month; names: Names }) {
  const status = (x: InstrumentLine) => {
    if (x.idle) return <span class="dash-flag dash-flag-bad">{t('dash.flag.idle')}</span>;
    if (x.underShared) return <span class="dash-flag dash-flag-warn">{t('dash.flag.underShared')}</span>;
    if (!x.assessed) return <span class="muted">{t('dash.flag.notAssessed')}</span>;
    return <span class="dash-flag dash-flag-ok">{t('dash.flag.ok')}</span>;
  };
  return (
    <Section id="dash-instruments" title={t('dash.instruments.title', { month: monthLabel(mo) })} testid="instrument-table">
      <div class="table-wrap">
        <table>
          <ColumnHeads prefix="dash.col." cols={['instrument', 'owner', '#effective', '#external', '#available', '#utilization', '#sharing', '#bookings', '#income', 'assessment']} />
          <tbody>
            {lines.map((x) => (
              <tr key={x.name} data-testid={`row-${idOf(x.name)}`}>
                <th scope="row">
                  <a href={href(`#/dash/instruments/${idOf(x.name)}`, { month: monthKey(mo) })}>{x.label}</a>
                </th>
                <td class="dash-org">{x.owner ? orgName(names, x.owner) : '—'}</td>
                <td class="num" data-testid="effective">{hours(x.f.effectiveSeconds)}</td>
                <td class="num" data-testid="external">{hours(x.f.externalSeconds)}</td>
                <td class="num">{hours(x.f.availableSeconds)}</td>
                <td class="num" data-testid="utilization">{ratio(x.f.utilization)}</td>
                <td class="num" data-testid="sharing">{ratio(x.f.sharingRate)}</td>
                <td class="num" data-testid="bookings">{int(x.f.bookings)}</td>
                <td class="num" data-testid="income">{money(x.f.serviceIncome)}</td>
                <td>{status(x)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}

function Assessments({ mo, names, idle, under }: {
  mo: Month; names: Names; idle: { instruments: InstrumentAssessment[]; total: number }; under: { instruments: InstrumentAssessment[]; total: number };
}) {
  const link = (a: InstrumentAssessment) => (
    <a href={href(`#/dash/instruments/${idOf(a.instrument)}`, { month: monthKey(mo) })}>
      {a.instrumentDisplayName || instrumentName(names, a.instrument)}
    </a>
  );
  const owner = (a: InstrumentAssessment) => a.ownerOrganizationDisplayName || orgName(names, a.ownerOrganization);
  return (
    <>
      <Section id="dash-idle" title={t('dash.idle.title', { n: idle.total })} testid="idle">
        <p class="muted dash-small">{t('dash.idle.intro')}</p>
        {idle.instruments.length === 0 ? <p>{t('dash.idle.none')}</p> : (
          <div class="table-wrap">
            <table>
              <ColumnHeads prefix="dash.col." cols={['instrument', 'owner', '#effective', '#idleThreshold']} />
              <tbody>
                {idle.instruments.map((a) => (
                  <tr key={a.instrument}>
                    <th scope="row">{link(a)}</th>
                    <td class="dash-org">{owner(a)}</td>
                    <td class="num">{hours(a.figures?.effectiveSeconds)}</td>
                    <td class="num">{hours(a.idleThresholdSeconds)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
      <Section id="dash-under" title={t('dash.under.title', { n: under.total })} testid="under-shared">
        <p class="muted dash-small">{t('dash.under.intro')}</p>
        {under.instruments.length === 0 ? <p>{t('dash.under.none')}</p> : (
          <div class="table-wrap">
            <table>
              <ColumnHeads prefix="dash.col." cols={['instrument', 'owner', '#sharing', '#minSharing', '#external', '#minExternal']} />
              <tbody>
                {under.instruments.map((a) => (
                  <tr key={a.instrument}>
                    <th scope="row">{link(a)}</th>
                    <td class="dash-org">{owner(a)}</td>
                    <td class="num">{ratio(a.figures?.sharingRate)}</td>
                    <td class="num">{percentBps(a.minSharingRateBp)}</td>
                    <td class="num">{hours(a.figures?.externalSeconds)}</td>
                    <td class="num">{a.minExternalThresholdSeconds > 0n ? hours(a.minExternalThresholdSeconds) : '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Section>
    </>
  );
}

// ------------------------------------------------------------ trend

function Trend({ mo, n: count, onN }: { mo: Month; n: number; onN: (n: number) => void }) {
  const l = lang.value;
  const from = addMonths(mo, -(count - 1));
  const data = useLoad(() => withZone(() => queryAll({ range: monthsRange(from, mo), granularity: PeriodGranularity.MONTH })),
    [monthKey(mo), count]);
  // Every month of the range, also those without a row (no instrument in
  // service yet): the axis shows the whole span.
  const rows = useMemo(() => {
    const byMonth = new Map((data.data?.rows ?? []).map((r) => [monthKey(monthOf(r.period?.startTime)), r]));
    return Array.from({ length: count }, (_, i) => {
      const m = addMonths(from, i);
      return { m, r: byMonth.get(monthKey(m)) };
    });
  }, [data.data]);
  const option = useMemo((): ChartOption => ({
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    grid: { left: 8, right: 8, top: narrow() ? 70 : 40, bottom: 8, containLabel: true },
    xAxis: { type: 'category', data: rows.map(({ m }) => monthLabel(m, 'short')) },
    yAxis: [
      { type: 'value', name: t('dash.unit.hoursAxis'), axisLabel: { formatter: '{value}' } },
      { type: 'value', name: '%', axisLabel: { formatter: (v: number) => percentText(v) }, splitLine: { show: false } },
    ],
    series: [
      { name: t('dash.series.effective'), type: 'bar', data: rows.map(({ r }) => (r ? hoursValue(r.figures?.effectiveSeconds) : null)) },
      { name: t('dash.series.external'), type: 'bar', data: rows.map(({ r }) => (r ? hoursValue(r.figures?.externalSeconds) : null)) },
      { name: t('dash.series.utilization'), type: 'line', yAxisIndex: 1, data: rows.map(({ r }) => ratioPercent(r?.figures?.utilization)) },
      { name: t('dash.series.sharing'), type: 'line', yAxisIndex: 1, data: rows.map(({ r }) => ratioPercent(r?.figures?.sharingRate)) },
    ],
  }), [data.data, l]);
  return (
    <Section id="dash-trend" title={t('dash.trend.title')} testid="trend">
      <div class="row">
        <label class="field">
          <span>{t('dash.trend.range')}</span>
          <select value={String(count)} onChange={(e) => onN(Number((e.target as HTMLSelectElement).value))} data-testid="trend-range">
            <option value="6">{t('dash.trend.months', { n: 6 })}</option>
            <option value="12">{t('dash.trend.months', { n: 12 })}</option>
          </select>
        </label>
        <p class="muted dash-small">{t('dash.trend.span', { from: monthLabel(from), to: monthLabel(mo) })}</p>
      </div>
      {data.error ? <ErrorBox error={data.error} /> : null}
      {!data.data && data.loading ? <Loading /> : null}
      {data.data ? (
        <>
          <EChart option={option} height={320} label={t('dash.trend.aria')} testid="chart-trend" />
          <DataTable caption={t('dash.trend.title')}>
            <ColumnHeads prefix="dash.col." cols={['month', '#effective', '#external', '#utilization', '#sharing', '#bookings', '#income']} />
            <tbody>
              {rows.map(({ m, r }) => (
                <tr key={monthKey(m)}>
                  <th scope="row">{monthLabel(m)}{r?.partialPeriod ? ` ${t('dash.partial')}` : ''}</th>
                  {r ? (
                    <>
                      <td class="num">{hours(r.figures?.effectiveSeconds)}</td>
                      <td class="num">{hours(r.figures?.externalSeconds)}</td>
                      <td class="num">{ratio(r.figures?.utilization)}</td>
                      <td class="num">{ratio(r.figures?.sharingRate)}</td>
                      <td class="num">{int(r.figures?.bookings)}</td>
                      <td class="num">{money(r.figures?.serviceIncome)}</td>
                    </>
                  ) : <td colSpan={6} class="muted">{t('dash.trend.noInstruments')}</td>}
                </tr>
              ))}
            </tbody>
          </DataTable>
        </>
      ) : null}
    </Section>
  );
}

// ------------------------------------------------------------ income

function Income({ mo, names }: { mo: Month; names: Names }) {
  const l = lang.value;
  const data = useLoad(async () => {
    const [byMode, byOwner] = await Promise.all([
      withZone(() => queryAll({ range: monthsRange(mo), granularity: PeriodGranularity.RANGE, groupBy: [Dimension.SHARING_MODE] })),
      withZone(() => queryAll({ range: monthsRange(mo), granularity: PeriodGranularity.RANGE, groupBy: [Dimension.OWNER_ORGANIZATION] })),
    ]);
    return { byMode, byOwner };
  }, [monthKey(mo)]);
  const modeRows = (data.data?.byMode.rows ?? []).filter((r) => r.key && r.key.mode !== SharingMode.SHARING_MODE_UNSPECIFIED);
  const ownerRows = [...(data.data?.byOwner.rows ?? [])].sort((a, b) =>
    moneyValue(b.figures?.serviceIncome) - moneyValue(a.figures?.serviceIncome));
  const earning = ownerRows.filter((r) => (r.figures?.serviceIncome?.amountMinor ?? 0n) !== 0n);
  const currency = data.data?.byMode.computation?.currencyCode || 'CNY';

  const modeOption = useMemo((): ChartOption => ({
    tooltip: { trigger: 'item', valueFormatter: (v: unknown) => `${v} ${currency}` },
    legend: { bottom: 0 },
    series: [{
      name: t('dash.income.byMode'), type: 'pie', radius: ['35%', '65%'], center: ['50%', '45%'],
      label: { formatter: (p: { name: string; percent: number }) => `${p.name}\n${percentText(p.percent)}` },
      data: modeRows.filter((r) => moneyValue(r.figures?.serviceIncome) !== 0)
        .map((r) => ({ name: modeLabel(r.key!.mode), value: moneyValue(r.figures?.serviceIncome) })),
    }],
  }), [data.data, l]);
  const ownerOption = useMemo((): ChartOption => ({
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' }, valueFormatter: (v: unknown) => `${v} ${currency}` },
    grid: { left: 8, right: 24, top: 16, bottom: 8, containLabel: true },
    xAxis: { type: 'value', name: currency, splitNumber: narrow() ? 3 : 5, axisLabel: { hideOverlap: true } },
    yAxis: { type: 'category', inverse: true, data: earning.map((r) => orgName(names, r.key!.ownerOrganization)), axisLabel: { width: narrow() ? 90 : 150, overflow: 'truncate' } },
    series: [{ name: t('dash.series.income'), type: 'bar', data: earning.map((r) => moneyValue(r.figures?.serviceIncome)) }],
  }), [data.data, names, l]);

  return (
    <Section id="dash-income" title={t('dash.income.title', { month: monthLabel(mo) })} testid="income">
      {data.error ? <ErrorBox error={data.error} /> : null}
      {!data.data && data.loading ? <Loading /> : null}
      {data.data ? (
        <div class="dash-grid2">
          <figure class="dash-figure">
            <figcaption>{t('dash.income.byMode')}</figcaption>
            {modeRows.some((r) => moneyValue(r.figures?.serviceIncome) !== 0)
              ? <EChart option={modeOption} height={300} label={t('dash.income.byModeAria')} testid="chart-mode" />
              : <p>{t('dash.income.none')}</p>}
            <DataTable caption={t('dash.income.byMode')}>
              <ColumnHeads prefix="dash.col." cols={['mode', '#income', '#penalty', '#subsidized', '#inKind', '#effective', '#bookings']} />
              <tbody>
                {modeRows.map((r) => (
                  <tr key={r.key!.mode}>
                    <th scope="row">{modeLabel(r.key!.mode)}</th>
                    <td class="num">{money(r.figures?.serviceIncome)}</td>
                    <td class="num">{money(r.figures?.penaltyIncome)}</td>
                    <td class="num">{money(r.figures?.subsidizedIncome)}</td>
                    <td class="num">{money(r.figures?.inKindContribution)}</td>
                    <td class="num">{hours(r.figures?.effectiveSeconds)}</td>
                    <td class="num">{int(r.figures?.bookings)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row">{t('dash.total')}</th>
                  <td class="num" data-testid="income-total">{money(data.data.byMode.totals?.serviceIncome)}</td>
                  <td class="num">{money(data.data.byMode.totals?.penaltyIncome)}</td>
                  <td class="num">{money(data.data.byMode.totals?.subsidizedIncome)}</td>
                  <td class="num">{money(data.data.byMode.totals?.inKindContribution)}</td>
                  <td class="num">{hours(data.data.byMode.totals?.effectiveSeconds)}</td>
                  <td class="num">{int(data.data.byMode.totals?.bookings)}</td>
                </tr>
              </tfoot>
            </DataTable>
          </figure>
          <figure class="dash-figure">
            <figcaption>{t('dash.income.byOwner')}</figcaption>
            {earning.length
              ? <EChart option={ownerOption} height={Math.max(160, 60 + earning.length * 36)} label={t('dash.income.byOwnerAria')} testid="chart-owner" />
              : <p>{t('dash.income.none')}</p>}
            {ownerRows.length > earning.length ? (
              <p class="muted dash-small">{t('dash.income.ownersWithout', { n: ownerRows.length - earning.length })}</p>
            ) : null}
            <DataTable caption={t('dash.income.byOwner')}>
              <ColumnHeads prefix="dash.col." cols={['owner', '#instruments', '#income', '#revenueRate', '#effective', '#utilization', '#sharing']} />
              <tbody>
                {ownerRows.map((r) => (
                  <tr key={r.key!.ownerOrganization}>
                    <th scope="row">{orgName(names, r.key!.ownerOrganization)}</th>
                    <td class="num">{int(r.figures?.instrumentCount)}</td>
                    <td class="num">{money(r.figures?.serviceIncome)}</td>
                    <td class="num">{ratio(r.figures?.revenueRate)}</td>
                    <td class="num">{hours(r.figures?.effectiveSeconds)}</td>
                    <td class="num">{ratio(r.figures?.utilization)}</td>
                    <td class="num">{ratio(r.figures?.sharingRate)}</td>
                  </tr>
                ))}
              </tbody>
            </DataTable>
          </figure>
        </div>
      ) : null}
    </Section>
  );
}

// ------------------------------------------------------------ sharing matrix

function Matrix({ mo, names }: { mo: Month; names: Names }) {
  const l = lang.value;
  const [internal, setInternal] = useState(false);
  const [metric, setMetric] = useState<'hours' | 'money'>('hours');
  const data = useLoad(async () => {
    let first: GetSharingMatrixResponse | undefined;
    const cells: GetSharingMatrixResponse['cells'] = [];
    let token = '';
    do {
      const r = await usage.getSharingMatrix({ range: monthsRange(mo), includeInternal: internal, pageSize: 1000, pageToken: token });
      first ??= r;
      cells.push(...r.cells);
      token = r.nextPageToken;
    } while (token);
    first!.cells = cells;
    return first!;
  }, [monthKey(mo), internal]);
  const cells = data.data?.cells ?? [];
  const owners = [...new Set(cells.map((c) => c.ownerOrganization))];
  const users = [...new Set(cells.map((c) => c.userOrganization))].sort();
  const currency = data.data?.computation?.currencyCode || 'CNY';
  const value = (c: (typeof cells)[number]) => (metric === 'hours' ? hoursValue(c.effectiveSeconds) : moneyValue(c.charged));
  const option = useMemo((): ChartOption => {
    const vals = cells.map(value);
    const unit = metric === 'hours' ? t('dash.unit.hoursAxis') : currency;
    return {
      tooltip: {
        position: 'top',
        formatter: (p: { value: [number, number, number] }) =>
          `${orgName(names, owners[p.value[1]]!)} → ${orgName(names, users[p.value[0]]!)}: ${p.value[2]} ${unit}`,
      },
      grid: { left: 8, right: 100, top: 24, bottom: 36, containLabel: true },
      xAxis: {
        type: 'category', name: t('dash.matrix.users'), nameLocation: 'middle', nameGap: 28,
        data: users.map((u) => orgName(names, u)), splitArea: { show: true }, axisLabel: { interval: 0, width: narrow() ? 70 : 130, overflow: 'truncate' },
      },
      yAxis: {
        type: 'category', data: owners.map((o) => orgName(names, o)), splitArea: { show: true },
        axisLabel: { width: narrow() ? 90 : 180, overflow: 'truncate' },
      },
      visualMap: {
        min: 0, max: Math.max(1, ...vals), calculable: true, orient: 'vertical', right: 0, top: 'middle', itemHeight: 120,
        text: [unit, ''], inRange: { color: ['#e8f0fb', '#1f5fbf', '#0b2e66'] },
      },
      series: [{
        name: metric === 'hours' ? t('dash.matrix.metricHours') : t('dash.matrix.metricMoney'),
        type: 'heatmap',
        data: cells.map((c) => [users.indexOf(c.userOrganization), owners.indexOf(c.ownerOrganization), value(c)]),
        label: { show: true },
        emphasis: { itemStyle: { shadowBlur: 8, shadowColor: 'rgba(0,0,0,0.4)' } },
      }],
    };
  }, [data.data, metric, names, l]);
  return (
    <Section id="dash-matrix" title={t('dash.matrix.title', { month: monthLabel(mo) })} testid="matrix">
      <p class="muted dash-small">{t('dash.matrix.intro')}</p>
      <div class="row">
        <label class="field">
          <span>{t('dash.matrix.metric')}</span>
          <select value={metric} onChange={(e) => setMetric((e.target as HTMLSelectElement).value as 'hours' | 'money')} data-testid="matrix-metric">
            <option value="hours">{t('dash.matrix.metricHours')}</option>
            <option value="money">{t('dash.matrix.metricMoney')}</option>
          </select>
        </label>
        <label class="dash-check">
          <input type="checkbox" checked={internal} onChange={(e) => setInternal((e.target as HTMLInputElement).checked)} data-testid="matrix-internal" />
          {t('dash.matrix.internal')}
        </label>
      </div>
      {data.error ? <ErrorBox error={data.error} /> : null}
      {!data.data && data.loading ? <Loading /> : null}
      {data.data ? (cells.length === 0 ? <p>{t('dash.matrix.none')}</p> : (
        <>
          <EChart option={option} height={Math.max(260, 130 + owners.length * 48)} label={t('dash.matrix.aria')} testid="chart-heatmap" />
          <DataTable caption={t('dash.matrix.title', { month: monthLabel(mo) })}>
            <thead>
              <tr>
                <th scope="col">{t('dash.matrix.owner')}</th>
                <th scope="col">{t('dash.matrix.user')}</th>
                <th scope="col" class="num">{t('dash.col.effective')}</th>
                <th scope="col" class="num">{t('dash.col.bookings')}</th>
                <th scope="col" class="num">{t('dash.col.charged')}</th>
                <th scope="col" class="num">{t('dash.col.subsidized')}</th>
                <th scope="col" class="num">{t('dash.col.users')}</th>
              </tr>
            </thead>
            <tbody>
              {cells.map((c) => (
                <tr key={`${c.ownerOrganization} ${c.userOrganization}`}>
                  <th scope="row">{orgName(names, c.ownerOrganization)}</th>
                  <td>{orgName(names, c.userOrganization)}</td>
                  <td class="num">{hours(c.effectiveSeconds)}</td>
                  <td class="num">{int(c.bookings)}</td>
                  <td class="num">{money(c.charged)}</td>
                  <td class="num">{money(c.subsidized)}</td>
                  <td class="num">{int(c.usersServed)}</td>
                </tr>
              ))}
            </tbody>
          </DataTable>
        </>
      )) : null}
    </Section>
  );
}
