// Find an instrument: by category, facility, sharing mode and day.
// With a category, SearchAvailableInstruments answers which instruments
// have free time that day (and when); without one, ListInstruments lists
// what there is. The query lives in the route (#/lab/instruments?category=
// electron-microscopy&date=2027-04-06&mode=ON_SITE&facility=zju-nano).
import { useEffect, useState } from 'preact/hooks';
import type { Facility, Instrument, Organization } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { InstrumentState } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import type { AvailableInstrument } from '../../../../gen/labshare/booking/v1/booking_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking } from '../../api';
import type { ShownError } from '../../errors';
import { lang, t, listText } from '../../i18n';
import { useSignal } from '../../signal';
import { BOOKABLE_MODES, hhmm, isoDay, mondayOf, modeWord, msTs, parseDay, todayWall, tsMs, zoneOf } from './common';
import { categoryLabel } from '../../categories';
import './lab.css';
import { ErrorBox } from '../../ui';
import { explain } from '../../errors';
import { allFacilities, allInstruments, allOrganizations, idOf, orgName } from '../../names';
import { DEFAULT_ZONE, fromWall, toWall, zoneLabel } from '../../zones';

const DAY = 86_400_000;

export default function LabInstruments({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const [instruments, setInstruments] = useState<Instrument[]>();
  const [facilities, setFacilities] = useState<Facility[]>([]);
  const [orgs, setOrgs] = useState<Organization[]>();
  const [error, setError] = useState<ShownError>();
  const [found, setFound] = useState<AvailableInstrument[]>();
  const [searching, setSearching] = useState(false);

  const category = params.category ?? '';
  const facility = params.facility ?? '';
  const mode = (SharingMode[(params.mode ?? 'ON_SITE') as keyof typeof SharingMode] ?? SharingMode.ON_SITE) as SharingMode;
  const fac = facilities.find((f) => idOf(f.name) === facility);
  // The chosen facility's zone; without one, the facilities' zone when they
  // share one, else the consortium's.
  const facZones = [...new Set(facilities.map((f) => zoneOf(f)))];
  const zone = fac ? zoneOf(fac) : facZones.length === 1 ? facZones[0]! : DEFAULT_ZONE;
  const day = parseDay(params.date) ?? todayWall(zone);
  const minHours = Number(params.hours ?? '1') || 1;

  useEffect(() => {
    Promise.all([allInstruments(), allFacilities(), allOrganizations()]).then(([i, f, o]) => {
      setInstruments(i);
      setFacilities(f);
      setOrgs(o);
    }, (e) => setError(explain(e)));
  }, []);

  // Search whenever the query in the route changes (and a category is set).
  useEffect(() => {
    if (!category) { setFound(undefined); return; }
    if (!instruments) return; // the facilities (their zones) first
    let live = true;
    setSearching(true);
    setError(undefined);
    const out: AvailableInstrument[] = [];
    (async () => {
      let pageToken = '';
      do {
        const r = await booking.searchAvailableInstruments({
          category, mode, facility: facility ? `facilities/${facility}` : '', pageSize: 100, pageToken,
          range: { startTime: msTs(fromWall(day, zone)), endTime: msTs(fromWall(day + DAY, zone)) },
          minDuration: { seconds: BigInt(Math.round(minHours * 3600)), nanos: 0 },
        });
        out.push(...r.instruments);
        pageToken = r.nextPageToken;
      } while (pageToken && live);
      if (live) setFound(out);
    })().catch((e) => live && setError(explain(e))).finally(() => live && setSearching(false));
    return () => { live = false; };
  }, [category, facility, mode, day, minHours, zone, !instruments]);

  const categories = [...new Set((instruments ?? []).map((i) => i.category))].sort((a, b) => categoryLabel(a).localeCompare(categoryLabel(b), lang.value));
  const byName = new Map((instruments ?? []).map((i) => [i.name, i]));
  const facName = (name: string) => facilities.find((f) => f.name === name)?.displayName ?? idOf(name);
  const facZone = (name: string) => zoneOf(facilities.find((f) => f.name === name));

  // The list below the form: search results, or every matching instrument.
  const listed: { inst: Instrument; free?: AvailableInstrument }[] = category && found
    ? found.map((a) => ({ inst: byName.get(a.instrument)!, free: a })).filter((x) => x.inst)
    : (instruments ?? []).filter((i) =>
      i.state === InstrumentState.ACTIVE && (!facility || idOf(i.facility) === facility) &&
      i.modes.some((m) => m.mode === mode)).map((inst) => ({ inst }));

  function submit(e: Event) {
    e.preventDefault();
    const f = new FormData(e.target as HTMLFormElement);
    const q = new URLSearchParams();
    for (const k of ['category', 'facility', 'mode', 'date', 'hours']) {
      const v = String(f.get(k) ?? '');
      if (v) q.set(k, v);
    }
    location.hash = `#/lab/instruments?${q.toString()}`;
  }

  return (
    <section>
      <h1>{t('lab.search.title')}</h1>
      <form class="card row" onSubmit={submit} data-testid="search-form" key={`${JSON.stringify(params)}-${categories.length}-${facilities.length}`}>
        <label class="field">{t('lab.search.category')}
          <select name="category" data-testid="category">
            <option value="">{t('lab.search.anyCategory')}</option>
            {categories.map((c) => <option key={c} value={c} selected={c === category}>{categoryLabel(c)}</option>)}
          </select>
        </label>
        <label class="field">{t('lab.search.facility')}
          <select name="facility">
            <option value="">{t('lab.search.anyFacility')}</option>
            {facilities.map((f) => <option key={f.name} value={idOf(f.name)} selected={idOf(f.name) === facility}>{f.displayName}</option>)}
          </select>
        </label>
        <label class="field">{t('lab.search.mode')}
          <select name="mode">
            {BOOKABLE_MODES.map((m) => <option key={m} value={SharingMode[m]} selected={m === mode}>{modeWord(m)}</option>)}
          </select>
        </label>
        <label class="field">{t('lab.search.date')}
          <input type="date" name="date" defaultValue={isoDay(day)} data-testid="date" />
        </label>
        <label class="field">{t('lab.search.hours')}
          <input type="number" name="hours" min="0.25" step="0.25" defaultValue={String(minHours)} class="lab-narrow" />
        </label>
        <button type="submit" class="primary" data-testid="search">{t('lab.search.go')}</button>
      </form>
      <p class="muted">{category ? t('lab.search.freeNote', { zone: zoneLabel(zone) }) : t('lab.search.pickCategory')}</p>
      <ErrorBox error={error} />
      {(!instruments || searching) && !error && <p aria-busy="true">{t('app.loading')}</p>}
      {instruments && !searching && listed.length === 0 && <p class="muted" data-testid="no-results">{t('lab.search.none')}</p>}
      {instruments && !searching && listed.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="results">
            <thead><tr>
              <th>{t('lab.search.instrument')}</th><th>{t('lab.search.facility')}</th><th>{t('lab.search.owner')}</th>
              <th>{t('lab.search.modes')}</th>{category && <th>{t('lab.search.free')}</th>}<th>{t('lab.list.actions')}</th>
            </tr></thead>
            <tbody>
              {listed.map(({ inst, free }) => {
                const z = facZone(inst.facility);
                return (
                  <tr key={inst.name} data-testid={`result-${idOf(inst.name)}`}>
                    <td><strong>{inst.displayName}</strong><div class="muted">{idOf(inst.name)} · {categoryLabel(inst.category)}</div></td>
                    <td>{facName(inst.facility)}</td>
                    <td>{orgName(orgs, inst.ownerOrganization)}</td>
                    <td>{listText(inst.modes.map((m) => modeWord(m.mode)))}</td>
                    {category && (
                      <td>{(free?.freeIntervals ?? []).map((iv, k) => {
                        const s = toWall(tsMs(iv.startTime), z);
                        const e = toWall(tsMs(iv.endTime), z);
                        return <div key={k}>{hhmm(s)}–{isoDay(e) !== isoDay(s) && hhmm(e) === '00:00' ? '24:00' : hhmm(e)}</div>;
                      })}<div class="muted">{z}</div></td>
                    )}
                    <td><div class="lab-actions">
                      <a href={`#/lab/instruments/${idOf(inst.name)}?week=${isoDay(mondayOf(day))}`} data-testid="calendar-link">{t('lab.search.calendar')}</a>
                      {inst.modes.some((m) => m.mode === SharingMode.LEASE) &&
                        <a href={`#/lab/leases/new?instrument=${idOf(inst.name)}`}>{t('lab.search.requestLease')}</a>}
                      {inst.modes.some((m) => m.mode === SharingMode.TECHNICAL_SERVICE) && inst.serviceCatalogue.length > 0 &&
                        <a href={`#/lab/orders/new?instrument=${idOf(inst.name)}`}>{t('lab.search.orderService')}</a>}
                    </div></td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
