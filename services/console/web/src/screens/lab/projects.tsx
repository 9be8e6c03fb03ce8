// The caller's joint-research projects (ListProjects, scoped by the service
// to participant organisations): participants and cost shares, period,
// hour budgets per instrument with used and committed hoursNumber.
import { useEffect, useState } from 'preact/hooks';
import type { Instrument, Organization } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import type { Project } from '../../../../gen/labshare/booking/v1/booking_pb';
import { booking } from '../../api';
import type { ShownError } from '../../errors';
import { percentBps, hoursNumber } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { projectStateWord, timeText, tsMs, isoDay, mondayOf, todayWall } from './common';
import './lab.css';
import { ErrorBox } from '../../ui';
import { explain } from '../../errors';
import { allInstruments, allOrganizations, idOf, listAll, orgName } from '../../names';
import { DEFAULT_ZONE, toWall } from '../../zones';

export default function LabProjects() {
  useSignal(lang);
  const [projects, setProjects] = useState<Project[]>();
  const [orgs, setOrgs] = useState<Organization[]>();
  const [instruments, setInstruments] = useState<Instrument[]>();
  const [error, setError] = useState<ShownError>();
  useEffect(() => {
    listAll(async (pageToken) => {
      const r = await booking.listProjects({ pageSize: 100, pageToken });
      return { items: r.projects, next: r.nextPageToken };
    }).then(setProjects, (e) => setError(explain(e)));
    allOrganizations().then(setOrgs, () => undefined);
    allInstruments().then(setInstruments, () => undefined);
  }, []);
  const zone = DEFAULT_ZONE;
  return (
    <section>
      <h1>{t('lab.projects.title')}</h1>
      <p class="muted">{t('lab.projects.note')}</p>
      <ErrorBox error={error} />
      {!projects && !error && <p aria-busy="true">{t('app.loading')}</p>}
      {projects && projects.length === 0 && <p class="muted">{t('lab.projects.none')}</p>}
      {projects?.map((p) => {
        const startWall = toWall(tsMs(p.period?.startTime), zone);
        const week = isoDay(mondayOf(Math.max(startWall, todayWall(zone))));
        return (
          <article class="card" key={p.name} data-testid={`project-${idOf(p.name)}`}>
            <h2>{p.title} <span class="muted">({idOf(p.name)})</span> · {projectStateWord(p.state)}</h2>
            <p>{t('lab.projects.period', { from: timeText(p.period?.startTime, zone), to: timeText(p.period?.endTime, zone) })}
              {p.externalReference && ` · ${p.externalReference}`}</p>
            <p>{t('lab.projects.participants')}: {p.participants.map((x) => `${orgName(orgs, x.organization)} ${percentBps(x.shareBps)}${x.lead ? ' ★' : ''}`).join(' · ')}</p>
            <div class="table-wrap">
              <table class="stack">
                <thead><tr>
                  <th>{t('lab.search.instrument')}</th><th class="num">{t('lab.projects.budget')}</th><th class="num">{t('lab.projects.used')}</th>
                  <th class="num">{t('lab.projects.committed')}</th><th class="num">{t('lab.projects.remaining')}</th><th>{t('lab.list.actions')}</th>
                </tr></thead>
                <tbody>
                  {p.instrumentBudgets.map((b) => {
                    const rem = Number(b.budget?.seconds ?? 0n) - Number(b.used?.seconds ?? 0n) - Number(b.committed?.seconds ?? 0n);
                    return (
                      <tr key={b.instrument} data-testid={`budget-${idOf(b.instrument)}`}>
                        <td data-testid="budget-instrument">{instruments?.find((i) => i.name === b.instrument)?.displayName || idOf(b.instrument)}
                          {' '}<span class="muted">({orgName(orgs, b.instrumentOwner)})</span></td>
                        <td class="num">{t('lab.projects.h', { h: hoursNumber(b.budget?.seconds) })}</td>
                        <td class="num">{t('lab.projects.h', { h: hoursNumber(b.used?.seconds) })}</td>
                        <td class="num">{t('lab.projects.h', { h: hoursNumber(b.committed?.seconds) })}</td>
                        <td class="num" data-testid="remaining">{t('lab.projects.h', { h: hoursNumber(rem) })}</td>
                        <td><a href={`#/lab/instruments/${idOf(b.instrument)}?week=${week}`}>{t('lab.projects.book')}</a></td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          </article>
        );
      })}
    </section>
  );
}
