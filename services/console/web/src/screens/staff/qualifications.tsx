// #/staff/qualifications: who may operate which of the staff's instruments
// on site. ListQualifications per instrument; GrantQualification (grants or
// renews) and RevokeQualification with a reason.
import { useEffect, useState } from 'preact/hooks';
import { QualificationState, type Qualification } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { inventory } from '../../api';
import { explain, type ShownError } from '../../errors';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { FieldError, StaffHeader, offersMode, useStaffWorld, when, zoneOf } from './common';
import { ErrorBox, StatusBox, useAction, ColumnHeads, useRequestId, useWorded } from '../../ui';
import { idOf, listAll } from '../../names';

export default function Qualifications({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const { world, error } = useStaffWorld();
  const [instrument, setInstrument] = useState(params.instrument ? `instruments/${params.instrument}` : '');
  const [list, setList] = useState<Qualification[]>();
  const [loadError, setLoadError] = useState<ShownError>();
  const [tick, setTick] = useState(0);
  const [user, setUser] = useState('');
  const [note, setNote] = useState('');
  const [missing, setMissing] = useWorded();
  const grant = useAction();

  const onSite = world?.instruments.filter((i) => offersMode(i, SharingMode.ON_SITE)) ?? [];
  useEffect(() => {
    if (world && !instrument && onSite[0]) setInstrument(onSite[0].name);
  }, [world]);

  useEffect(() => {
    if (!instrument) return;
    let live = true;
    setList(undefined);
    listAll(async (pageToken) => {
      const r = await inventory.listQualifications({ parent: instrument, pageSize: 200, pageToken });
      return { items: r.qualifications, next: r.nextPageToken };
    }).then((q) => { if (live) { setList(q); setLoadError(undefined); } }, (err) => live && setLoadError(explain(err)));
    return () => { live = false; };
  }, [instrument, tick]);

  if (!world) {
    return (
      <section>
        <StaffHeader title={t('staff.quals.title')} current="#/staff/qualifications" />
        {error ? <ErrorBox error={error} /> : <p aria-busy="true">{t('app.loading')}</p>}
      </section>
    );
  }
  const zone = zoneOf(world, instrument);
  const ins = world.instruments.find((i) => i.name === instrument);
  const days = ins?.modes.find((m) => m.mode === SharingMode.ON_SITE)?.slotRules?.qualificationValidityDays ?? 0;

  const doGrant = () => {
    const id = idOf(user.trim());
    if (!/^[a-z][a-z0-9-]*$/.test(id)) { setMissing(() => t('staff.quals.badUser')); return; }
    setMissing('');
    void grant.run(() => mutate('grantQualification', { instrument, user: `users/${id}`, note: note.trim() }, (r) => inventory.grantQualification(r)),
      (q) => t('staff.quals.granted', { user: idOf(q.user), instrument: ins?.displayName ?? idOf(instrument), until: when(q.expireTime, zone) }))
      .then((q) => { if (q) { setUser(''); setNote(''); setTick((n) => n + 1); } });
  };

  return (
    <section>
      <StaffHeader title={t('staff.quals.title')} current="#/staff/qualifications" />
      <p class="muted">{t('staff.quals.intro')}</p>
      <label class="field" style="max-width:420px">
        <span>{t('staff.col.instrument')}</span>
        <select data-testid="qual-instrument" value={instrument} onChange={(e) => setInstrument((e.target as HTMLSelectElement).value)}>
          {onSite.map((i) => <option key={i.name} value={i.name}>{i.displayName} ({idOf(i.name)})</option>)}
        </select>
      </label>
      <p class="muted">{days > 0 ? t('staff.quals.validity', { days }) : t('staff.quals.notNeeded')}</p>

      <form class="card" onSubmit={(e) => { e.preventDefault(); doGrant(); }} aria-labelledby="grant-h">
        <h2 id="grant-h">{t('staff.quals.grantTitle')}</h2>
        <div class="staff-form">
          <label class="field">
            <span>{t('staff.quals.user')}</span>
            <input data-testid="qual-user" value={user} placeholder="li-wei" autoComplete="off"
              onInput={(e) => setUser((e.target as HTMLInputElement).value)} />
          </label>
          <label class="field">
            <span>{t('staff.quals.note')}</span>
            <input value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} />
          </label>
          <FieldError text={missing} />
          <div class="buttons"><button type="submit" class="primary" disabled={grant.busy}>{t('staff.quals.grant')}</button></div>
        </div>
        <ErrorBox error={grant.error} />
        <StatusBox testid="qual-status">{grant.done}</StatusBox>
      </form>

      <h2>{t('staff.quals.listTitle', { instrument: ins?.displayName ?? '' })}</h2>
      <ErrorBox error={loadError} />
      {!list ? (!loadError && <p aria-busy="true">{t('app.loading')}</p>) : list.length === 0 ? (
        <p class="muted">{t('staff.quals.none')}</p>
      ) : (
        <div class="table-wrap">
          <table class="stack" data-testid="qualifications">
            <ColumnHeads prefix="staff." cols={['quals.userCol', 'col.state', 'quals.granted.col', 'quals.lastUse', 'quals.expires', 'col.actions']} />
            <tbody>
              {list.map((q) => <QualRow key={q.name} q={q} zone={zone} onChanged={() => setTick((n) => n + 1)} />)}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function QualRow({ q, zone, onChanged }: { q: Qualification; zone: string; onChanged: () => void }) {
  const mutate = useRequestId();
  const act = useAction();
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const user = idOf(q.user);
  const cls = q.state === QualificationState.VALID ? 'ok' : q.state === QualificationState.REVOKED ? 'bad' : 'warn';
  const revoke = () => act.run(() => mutate('revokeQualification', { name: q.name, reason: reason.trim() }, (r) => inventory.revokeQualification(r)))
    .then((r) => { if (r) { setOpen(false); onChanged(); } });
  return (
    <>
      <tr data-testid={`qual-${user}`}>
        <td>{user}{q.note && <div class="muted">{q.note}</div>}</td>
        <td><span class={`staff-badge ${cls}`}>{t(`staff.qualState.${QualificationState[q.state]}`)}</span></td>
        <td>{when(q.grantTime, zone)}<div class="muted">{t('staff.quals.by', { who: idOf(q.grantedBy) })}</div></td>
        <td>{when(q.lastUseTime, zone)}</td>
        <td>{q.state === QualificationState.REVOKED ? '—' : when(q.expireTime, zone)}</td>
        <td>
          {!q.revoked && <button type="button" aria-expanded={open} onClick={() => setOpen(!open)}
            aria-label={t('staff.quals.revokeLabel', { user })}>{t('staff.quals.revoke')}</button>}
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {open && (
        <tr class="staff-sub">
          <td colSpan={6}>
            <div class="staff-form">
              <label class="field wide">
                <span>{t('staff.quals.revokeReason')}</span>
                <input value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
              </label>
              <div class="buttons">
                <button type="button" class="danger" disabled={act.busy} onClick={() => void revoke()}>{t('staff.quals.confirmRevoke', { user })}</button>
                <button type="button" onClick={() => setOpen(false)}>{t('staff.cancelForm')}</button>
              </div>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}
