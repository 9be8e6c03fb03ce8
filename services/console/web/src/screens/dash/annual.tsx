// #/dash/annual?year=2027: the annual report (GetAnnualReport, paged) and
// its CSV file (ExportAnnualReportCsv, streamed, checked against the
// trailer's SHA-256, then saved through a Blob and <a download>).
import { useState } from 'preact/hooks';
import type { AnnualReport, AssessmentCounts, InstrumentAssessment, ReportSummary } from '../../../../gen/labshare/usage/v1/usage_pb';
import { Dimension } from '../../../../gen/labshare/usage/v1/usage_pb';
import { usage } from '../../api';
import { lang, t } from '../../i18n';
import { categoryLabel } from '../../categories';
import { useSignal } from '../../signal';
import { ComputedNote, hours, int, modeLabel, monthKey, noteZone, ratio, Section, zone } from './common';
import { ErrorBox, Loading, useLoad, ColumnHeads } from '../../ui';
import { idOf } from '../../names';
import { go, href } from '../../nav';
import { money, percentBps } from '../../format';

function parseYear(s: string | undefined): number {
  const y = Number(s);
  if (/^\d{4}$/.test(s ?? '') && y >= 1970) return y;
  return Number(new Intl.DateTimeFormat('en-US', { timeZone: zone(), year: 'numeric' }).format(new Date()));
}

const PAGE = 100;

export default function Annual({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const year = parseYear(params.year);
  const [more, setMore] = useState<{ year: number; rows: InstrumentAssessment[]; token: string; error?: unknown; busy: boolean }>();
  const report = useLoad(async () => {
    const r = await usage.getAnnualReport({ year, pageSize: PAGE });
    noteZone(r.computation?.timeZone);
    setMore({ year, rows: [], token: r.nextPageToken, busy: false });
    return r;
  }, [year]);

  const loadMore = async () => {
    if (!more?.token) return;
    setMore({ ...more, busy: true, error: undefined });
    try {
      const r = await usage.getAnnualReport({ year, pageSize: PAGE, pageToken: more.token });
      setMore({ year, rows: [...more.rows, ...r.instruments], token: r.nextPageToken, busy: false });
    } catch (error) {
      setMore({ ...more, busy: false, error });
    }
  };

  const r = report.data;
  const instruments = r ? [...r.instruments, ...(more?.year === year ? more.rows : [])] : [];
  return (
    <div class="dash">
      <header class="dash-head">
        <h1>{t('dash.annual.title', { year })}</h1>
        <nav class="row dash-monthnav" aria-label={t('dash.yearNav')}>
          <a href={href('#/dash/annual', { year: String(year - 1) })}>‹ {year - 1}</a>
          <label class="field">
            <span>{t('dash.year')}</span>
            <input
              type="number" min={1970} max={9999} value={year} class="dash-year"
              onChange={(e) => {
                const v = (e.target as HTMLInputElement).value;
                if (/^\d{4}$/.test(v)) go('#/dash/annual', { year: v });
              }}
            />
          </label>
          <a href={href('#/dash/annual', { year: String(year + 1) })}>{year + 1} ›</a>
          <span class="dash-spacer" />
          <a href={href('#/dash', { month: monthKey({ y: year, m: 1 }) })}>{t('dash.nav')}</a>
        </nav>
        <p class="muted dash-small">{t('dash.annual.zoneNote', { zone: zone() })}</p>
      </header>
      <CsvDownload year={year} />
      {report.error ? <ErrorBox error={report.error} /> : null}
      {!r && report.loading ? <Loading /> : null}
      {r ? (
        <>
          <ComputedNote computed={r.computation?.computedTime} provisional={r.computation?.provisional} />
          <Platform r={r} />
          <Summaries title={t('dash.annual.byOrganization')} rows={r.organizationSummaries} testid="sum-org" />
          <Summaries title={t('dash.annual.byFacility')} rows={r.facilitySummaries} testid="sum-facility" />
          <Summaries title={t('dash.annual.byCategory')} rows={r.categorySummaries} testid="sum-category" />
          <Summaries title={t('dash.annual.byMode')} rows={r.modeSummaries} testid="sum-mode" />
          <Instruments rows={instruments} year={year} />
          {more?.error ? <ErrorBox error={more.error} /> : null}
          {more?.token ? (
            <p>
              <button type="button" onClick={() => void loadMore()} disabled={more.busy} data-testid="more">
                {more.busy ? t('app.loading') : t('dash.annual.more')}
              </button>
            </p>
          ) : null}
        </>
      ) : null}
    </div>
  );
}

function countsText(c: AssessmentCounts | undefined): string {
  if (!c) return '—';
  return t('dash.annual.countsValue', { n: int(c.instruments), assessed: int(c.assessed), idle: int(c.idle), under: int(c.underShared) });
}

function Platform({ r }: { r: AnnualReport }) {
  const f = r.platformFigures;
  if (!f) return null;
  const band = r.thresholds?.bands ?? [];
  const items: [string, string, string][] = [
    ['instruments', t('dash.annual.counts'), countsText(r.platformCounts)],
    ['effective', t('dash.fig.effective'), hours(f.effectiveSeconds)],
    ['external', t('dash.fig.external'), hours(f.externalSeconds)],
    ['utilization', t('dash.fig.utilization'), ratio(f.utilization)],
    ['sharing', t('dash.fig.sharing'), ratio(f.sharingRate)],
    ['income', t('dash.fig.income'), money(f.serviceIncome)],
    ['revenue-rate', t('dash.fig.revenueRate'), ratio(f.revenueRate)],
    ['in-kind', t('dash.fig.inKind'), money(f.inKindContribution)],
    ['bookings', t('dash.fig.bookings'), int(f.bookings)],
    ['users', t('dash.fig.users'), t('dash.fig.usersValue', { n: int(f.usersServed), ext: int(f.externalUsersServed), sme: int(f.smeUsersServed) })],
    ['orgs', t('dash.fig.orgs'), t('dash.fig.orgsValue', {
      n: int(f.organizationsServed), ext: int(f.externalOrganizationsServed), sme: int(f.smeOrganizationsServed),
      startup: int(f.startupOrganizationsServed),
    })],
  ];
  return (
    <Section id="dash-platform" title={t('dash.annual.platform')} testid="platform">
      <dl class="dash-kpis">
        {items.map(([k, label, v]) => (
          <div key={k} class="dash-kpi" data-testid={`platform-${k}`}>
            <dt>{label}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
      <p class="muted dash-small">
        {t('dash.annual.thresholds', {
          bands: band.map((b) => t('dash.annual.band', {
            from: money(b.minOriginalValue), idle: hours(b.idleEffectiveSecondsPerYear), rate: percentBps(b.minSharingRateBp),
            ext: b.minExternalSecondsPerYear > 0n ? hours(b.minExternalSecondsPerYear) : '—',
          })).join('; '),
          days: r.thresholds?.minimumAssessedDays ?? 0,
        })}
      </p>
    </Section>
  );
}

function summaryName(s: ReportSummary): string {
  if (s.dimension === Dimension.SHARING_MODE) return modeLabel(s.key!.mode);
  // A category's display name is its key ("electron-microscopy"): words instead.
  if (s.dimension === Dimension.CATEGORY && s.key?.category) return categoryLabel(s.key.category);
  return s.displayName || idOf(s.key?.ownerOrganization || s.key?.facility || '');
}

function Summaries({ title, rows, testid }: { title: string; rows: ReportSummary[]; testid: string }) {
  const withCounts = rows.some((s) => s.counts);
  return (
    <Section id={`dash-${testid}`} title={title} testid={testid}>
      {rows.length === 0 ? <p>{t('dash.none')}</p> : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">{t('dash.col.name')}</th>
                <th scope="col" class="num">{t('dash.col.effective')}</th>
                <th scope="col" class="num">{t('dash.col.external')}</th>
                <th scope="col" class="num">{t('dash.col.utilization')}</th>
                <th scope="col" class="num">{t('dash.col.sharing')}</th>
                <th scope="col" class="num">{t('dash.col.income')}</th>
                <th scope="col" class="num">{t('dash.col.revenueRate')}</th>
                <th scope="col" class="num">{t('dash.col.bookings')}</th>
                {withCounts ? <th scope="col">{t('dash.annual.counts')}</th> : null}
              </tr>
            </thead>
            <tbody>
              {rows.map((s, i) => (
                <tr key={i}>
                  <th scope="row">{summaryName(s)}</th>
                  <td class="num">{hours(s.figures?.effectiveSeconds)}</td>
                  <td class="num">{hours(s.figures?.externalSeconds)}</td>
                  <td class="num">{ratio(s.figures?.utilization)}</td>
                  <td class="num">{ratio(s.figures?.sharingRate)}</td>
                  <td class="num">{money(s.figures?.serviceIncome)}</td>
                  <td class="num">{ratio(s.figures?.revenueRate)}</td>
                  <td class="num">{int(s.figures?.bookings)}</td>
                  {withCounts ? <td>{countsText(s.counts)}</td> : null}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

function Instruments({ rows, year }: { rows: InstrumentAssessment[]; year: number }) {
  const flag = (a: InstrumentAssessment) => {
    if (!a.assessed) return <span class="muted">{t('dash.flag.notAssessed')}</span>;
    if (a.idle) return <span class="dash-flag dash-flag-bad">{t('dash.flag.idle')}</span>;
    if (a.underShared) return <span class="dash-flag dash-flag-warn">{t('dash.flag.underShared')}</span>;
    return <span class="dash-flag dash-flag-ok">{t('dash.flag.ok')}</span>;
  };
  return (
    <Section id="dash-annual-instruments" title={t('dash.annual.instruments', { n: rows.length })} testid="annual-instruments">
      <div class="table-wrap">
        <table>
          <ColumnHeads prefix="dash.col." cols={['instrument', 'owner', '#effective', '#idleThreshold', '#external', '#utilization', '#sharing', '#minSharing', '#income', '#bookings', 'assessment']} />
          <tbody>
            {rows.map((a) => (
              <tr key={a.instrument} data-testid={`annual-row-${idOf(a.instrument)}`}>
                <th scope="row">
                  <a href={href(`#/dash/instruments/${idOf(a.instrument)}`, { month: monthKey({ y: year, m: 1 }) })}>
                    {a.instrumentDisplayName || idOf(a.instrument)}
                  </a>
                </th>
                <td class="dash-org">{a.ownerOrganizationDisplayName || idOf(a.ownerOrganization)}</td>
                <td class="num" data-testid="effective">{hours(a.figures?.effectiveSeconds)}</td>
                <td class="num">{a.assessed ? hours(a.idleThresholdSeconds) : '—'}</td>
                <td class="num">{hours(a.figures?.externalSeconds)}</td>
                <td class="num" data-testid="utilization">{ratio(a.figures?.utilization)}</td>
                <td class="num">{ratio(a.figures?.sharingRate)}</td>
                <td class="num">{a.assessed ? percentBps(a.minSharingRateBp) : '—'}</td>
                <td class="num" data-testid="income">{money(a.figures?.serviceIncome)}</td>
                <td class="num" data-testid="bookings">{int(a.figures?.bookings)}</td>
                <td>{flag(a)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </Section>
  );
}

// ------------------------------------------------------------ CSV

async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string | undefined> {
  if (!globalThis.crypto?.subtle) return undefined;
  const d = await crypto.subtle.digest('SHA-256', data);
  return Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, '0')).join('');
}

function CsvDownload({ year }: { year: number }) {
  const [state, setState] = useState<{ busy: boolean; error?: unknown; done?: string; mismatch?: boolean }>({ busy: false });
  const [bom, setBom] = useState(true);
  const download = async () => {
    setState({ busy: true });
    try {
      const chunks: Uint8Array[] = [];
      let size = 0;
      let trailer: { rowCount: bigint; totalBytes: bigint; sha256Hex: string } | undefined;
      for await (const c of usage.exportAnnualReportCsv({ year, includeBom: bom })) {
        if (c.data.length) {
          if (Number(c.offset) !== size) throw new Error(`CSV chunk at offset ${c.offset}, expected ${size}`);
          chunks.push(c.data);
          size += c.data.length;
        }
        if (c.trailer) trailer = c.trailer;
      }
      const bytes = new Uint8Array(new ArrayBuffer(size));
      let at = 0;
      for (const c of chunks) { bytes.set(c, at); at += c.length; }
      const sum = await sha256Hex(bytes);
      const mismatch = !trailer || Number(trailer.totalBytes) !== size || (sum !== undefined && sum !== trailer.sha256Hex);
      const url = URL.createObjectURL(new Blob([bytes], { type: 'text/csv;charset=utf-8' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `labshare-annual-report-${year}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      setState({
        busy: false, mismatch,
        done: t('dash.csv.done', { rows: int(trailer?.rowCount), bytes: int(size), sha: (trailer?.sha256Hex ?? '').slice(0, 16) }),
      });
    } catch (error) {
      setState({ busy: false, error });
    }
  };
  return (
    <div class="card">
      <div class="row">
        <button type="button" class="primary" onClick={() => void download()} disabled={state.busy} data-testid="csv">
          {state.busy ? t('dash.csv.busy') : t('dash.csv.download', { year })}
        </button>
        <label class="dash-check">
          <input type="checkbox" checked={bom} onChange={(e) => setBom((e.target as HTMLInputElement).checked)} />
          {t('dash.csv.bom')}
        </label>
      </div>
      {state.error ? <ErrorBox error={state.error} /> : null}
      {state.done ? (
        <p role="status" class={state.mismatch ? 'error' : 'notice'} data-testid="csv-status">
          {state.mismatch ? t('dash.csv.mismatch') : state.done}
        </p>
      ) : null}
    </div>
  );
}
