// #/admin/organizations/:id: one organisation; consortium admins edit its
// descriptive fields (UpdateOrganization with an update mask and the etag)
// and change its membership (ChangeMembership); everybody sees the
// membership history (ListMembershipChanges).
import { useEffect, useState } from 'preact/hooks';
import { inventory } from '../../api';
import { dateTime } from '../../format';
import { lang, t, listText } from '../../i18n';
import { useSignal } from '../../signal';
import {
  MembershipState, OrganizationType, SizeClass, type Organization,
} from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { isAdmin, label, Refusal, values } from './common';
import { OrgFieldset, type OrgFields } from './organization-new';
import { Loading, StatusBox, useLoad, useAction, useRequestId, useWorded, type Worded } from '../../ui';
import { idOf, listAll } from '../../names';

const SNAKE: Record<keyof OrgFields, string> = {
  displayName: 'display_name', type: 'type', sizeClass: 'size_class', stateOwned: 'state_owned', foreign: 'foreign', sector: 'sector',
};

function fieldsOf(o: Organization): OrgFields {
  return { displayName: o.displayName, type: o.type, sizeClass: o.sizeClass, stateOwned: o.stateOwned, foreign: o.foreign, sector: o.sector };
}

function EditOrganization({ org, onSaved }: { org: Organization; onSaved: (o: Organization, msg: Worded) => void }) {
  const mutate = useRequestId();
  const [v, setV] = useState<OrgFields>(fieldsOf(org));
  const { busy, error: err, setError: setErr, run } = useAction();
  useEffect(() => setV(fieldsOf(org)), [org.etag]);
  const base = fieldsOf(org);
  const changed = (Object.keys(SNAKE) as (keyof OrgFields)[]).filter((k) => v[k] !== base[k]);

  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const o = await mutate('updateOrganization', {
        organization: { ...v, name: org.name, etag: org.etag },
        updateMask: { paths: changed.map((k) => SNAKE[k]) },
      }, (r) => inventory.updateOrganization(r));
      onSaved(o, () => t('admin.orgs.saved'));
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="organization-edit">
      <h2>{t('admin.orgs.edit')}</h2>
      <OrgFieldset v={v} set={(p) => setV((o) => ({ ...o, ...p }))} />
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy || changed.length === 0}>{t('admin.save')}</button>
        <span class="muted small">{changed.length === 0 ? t('admin.noChanges') : ''}</span>
      </div>
      <Refusal err={err} onReload={() => { setErr(undefined); onSaved(org, ''); }} />
    </form>
  );
}

function ChangeMembership({ org, onSaved }: { org: Organization; onSaved: (o: Organization, msg: Worded) => void }) {
  const mutate = useRequestId();
  const [to, setTo] = useState(0);
  const [tier, setTier] = useState('');
  const [reason, setReason] = useState('');
  const { busy, error: err, setError: setErr, run } = useAction();
  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const o = await mutate('changeMembership', {
        name: org.name, membershipState: to, tier: tier.trim(), reason: reason.trim(), etag: org.etag,
      }, (r) => inventory.changeMembership(r));
      setReason('');
      setTier('');
      setTo(0);
      onSaved(o, () => t('admin.orgs.membershipChanged', { state: label('MembershipState', MembershipState, o.membershipState) }));
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="membership-form">
      <h2>{t('admin.orgs.changeMembership')}</h2>
      <p class="muted small full">{t('admin.orgs.transitions')}</p>
      <label class="field">
        {t('admin.orgs.newState')}
        <select name="to" value={String(to)} onChange={(e) => setTo(Number((e.target as HTMLSelectElement).value))}>
          <option value="0">{t('admin.choose')}</option>
          {values(MembershipState).map((x) => <option key={x} value={String(x)}>{label('MembershipState', MembershipState, x)}</option>)}
        </select>
      </label>
      <label class="field">
        {t('admin.orgs.tier')}
        <input name="tier" value={tier} placeholder={org.tier || 'CORE / GENERAL'} onInput={(e) => setTier((e.target as HTMLInputElement).value)} />
        <span class="muted small">{t('admin.orgs.tierHint')}</span>
      </label>
      <label class="field wide">
        {t('admin.orgs.reason')}
        <input name="reason" value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} />
      </label>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy}>{t('admin.orgs.applyChange')}</button>
      </div>
      <Refusal err={err} onReload={() => { setErr(undefined); onSaved(org, ''); }} />
    </form>
  );
}

export default function OrganizationScreen({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const id = params['id'] ?? '';
  const name = `organizations/${id}`;
  const org = useLoad(() => inventory.getOrganization({ name }), [name]);
  const history = useLoad(() => listAll(async (pageToken) => {
    const r = await inventory.listMembershipChanges({ parent: name, pageSize: 200, pageToken });
    return { items: r.membershipChanges, next: r.nextPageToken };
  }), [name]);
  const [msg, setMsg] = useWorded();
  const o = org.data;
  const saved = (_: Organization, m: Worded) => { setMsg(m); org.reload(); history.reload(); };
  return (
    <section class="admin">
      <p><a href="#/admin/organizations">← {t('admin.orgs.title')}</a></p>
      <Loading load={org} />
      {o && (
        <>
          <h1>{o.displayName} <span class="muted small">{id}</span></h1>
          <StatusBox testid="done">{msg}</StatusBox>
          <dl class="card facts" data-testid="organization-facts">
            <dt>{t('admin.orgs.type')}</dt><dd>{label('OrganizationType', OrganizationType, o.type)}</dd>
            <dt>{t('admin.orgs.sizeClass')}</dt><dd>{o.sizeClass ? label('SizeClass', SizeClass, o.sizeClass) : '—'}</dd>
            <dt>{t('admin.orgs.membership')}</dt><dd data-testid="membership">{label('MembershipState', MembershipState, o.membershipState)}</dd>
            <dt>{t('admin.orgs.tier')}</dt><dd>{o.tier || '—'}</dd>
            <dt>{t('admin.orgs.sector')}</dt><dd>{o.sector || '—'}</dd>
            <dt>{t('admin.orgs.flags')}</dt><dd>{listText([o.stateOwned ? t('admin.orgs.stateOwned') : '', o.foreign ? t('admin.orgs.foreign') : ''].filter(Boolean)) || '—'}</dd>
            <dt>{t('admin.users.title')}</dt><dd><a href={`#/admin/users?org=${id}`}>{t('admin.orgs.usersOf')}</a></dd>
          </dl>
          {isAdmin() && <EditOrganization org={o} onSaved={saved} />}
          {isAdmin() && <ChangeMembership org={o} onSaved={saved} />}
        </>
      )}
      <h2>{t('admin.orgs.history')}</h2>
      <Loading load={history} />
      {history.data && history.data.length === 0 && <p class="muted">{t('admin.orgs.noHistory')}</p>}
      {history.data && history.data.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="membership-history">
            <thead><tr>
              <th>{t('admin.orgs.when')}</th><th>{t('admin.orgs.from')}</th><th>{t('admin.orgs.to')}</th>
              <th>{t('admin.orgs.tier')}</th><th>{t('admin.orgs.reason')}</th><th>{t('admin.orgs.actor')}</th>
            </tr></thead>
            <tbody>
              {history.data.map((c) => (
                <tr key={c.name}>
                  <td>{dateTime(c.changeTime, 'Asia/Shanghai', true)}</td>
                  <td>{label('MembershipState', MembershipState, c.fromState)}</td>
                  <td>{label('MembershipState', MembershipState, c.toState)}</td>
                  <td>{c.fromTier === c.toTier ? (c.toTier || '—') : `${c.fromTier || '—'} → ${c.toTier || '—'}`}</td>
                  <td>{c.reason}</td>
                  <td>{idOf(c.actor)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
