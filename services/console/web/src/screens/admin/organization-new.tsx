// #/admin/organizations/new: registers an organisation (CreateOrganization).
// The form hints (size class only for enterprises, tier for members); the
// service decides and its refusal is shown as it answers.
import { useState } from 'preact/hooks';
import { inventory } from '../../api';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { MembershipState, OrganizationType, SizeClass } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { isAdmin, label, Refusal, values } from './common';
import { idOf } from '../../names';
import { useAction, useRequestId } from '../../ui';

export interface OrgFields {
  displayName: string; type: number; sizeClass: number; stateOwned: boolean; foreign: boolean; sector: string;
}

// The descriptive fields, shared by registration and editing.
export function OrgFieldset({ v, set }: { v: OrgFields; set: (p: Partial<OrgFields>) => void }) {
  return (
    <>
      <label class="field">
        {t('admin.orgs.displayName')}
        <input name="displayName" value={v.displayName} onInput={(e) => set({ displayName: (e.target as HTMLInputElement).value })} />
      </label>
      <label class="field">
        {t('admin.orgs.type')}
        <select name="type" value={String(v.type)} onChange={(e) => {
          const type = Number((e.target as HTMLSelectElement).value);
          set(type === OrganizationType.ENTERPRISE ? { type } : { type, sizeClass: 0 });
        }}>
          <option value="0">{t('admin.choose')}</option>
          {values(OrganizationType).map((x) => <option key={x} value={String(x)}>{label('OrganizationType', OrganizationType, x)}</option>)}
        </select>
      </label>
      {v.type === OrganizationType.ENTERPRISE && (
        <label class="field">
          {t('admin.orgs.sizeClass')}
          <select name="sizeClass" value={String(v.sizeClass)} onChange={(e) => set({ sizeClass: Number((e.target as HTMLSelectElement).value) })}>
            <option value="0">{t('admin.choose')}</option>
            {values(SizeClass).map((x) => <option key={x} value={String(x)}>{label('SizeClass', SizeClass, x)}</option>)}
          </select>
        </label>
      )}
      <label class="field">
        {t('admin.orgs.sector')}
        <input name="sector" value={v.sector} placeholder={t('admin.orgs.sectorHint')} onInput={(e) => set({ sector: (e.target as HTMLInputElement).value })} />
      </label>
      <label class="check">
        <input type="checkbox" checked={v.stateOwned} onChange={(e) => set({ stateOwned: (e.target as HTMLInputElement).checked })} />
        {t('admin.orgs.stateOwned')}
      </label>
      <label class="check">
        <input type="checkbox" checked={v.foreign} onChange={(e) => set({ foreign: (e.target as HTMLInputElement).checked })} />
        {t('admin.orgs.foreign')}
      </label>
    </>
  );
}

export default function NewOrganization() {
  const mutate = useRequestId();
  useSignal(lang);
  const [id, setId] = useState('');
  const [v, setV] = useState<OrgFields>({ displayName: '', type: 0, sizeClass: 0, stateOwned: false, foreign: false, sector: '' });
  const [state, setState] = useState<number>(MembershipState.APPLICANT);
  const [tier, setTier] = useState('');
  const { busy, error: err, run } = useAction();
  const set = (p: Partial<OrgFields>) => setV((o) => ({ ...o, ...p }));

  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const o = await mutate('createOrganization', {
        organizationId: id.trim(),
        organization: { ...v, displayName: v.displayName.trim(), membershipState: state, tier: state === MembershipState.MEMBER ? tier.trim() : '' },
      }, (r) => inventory.createOrganization(r));
      location.hash = `#/admin/organizations?created=${encodeURIComponent(idOf(o.name))}`;
    });
  }

  return (
    <section class="admin">
      <p><a href="#/admin/organizations">← {t('admin.orgs.title')}</a></p>
      <h1>{t('admin.orgs.new')}</h1>
      {!isAdmin() && <p class="muted">{t('admin.readOnly')}</p>}
      <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="organization-form">
        <label class="field">
          {t('admin.orgs.id')}
          <input name="id" value={id} placeholder="e.g. photonix" autoComplete="off" onInput={(e) => setId((e.target as HTMLInputElement).value)} />
          <span class="muted small">{t('admin.idHint')}</span>
        </label>
        <OrgFieldset v={v} set={set} />
        <label class="field">
          {t('admin.orgs.initialState')}
          <select name="membershipState" value={String(state)} onChange={(e) => setState(Number((e.target as HTMLSelectElement).value))}>
            {[MembershipState.APPLICANT, MembershipState.MEMBER, MembershipState.NON_MEMBER].map((x) => (
              <option key={x} value={String(x)}>{label('MembershipState', MembershipState, x)}</option>
            ))}
          </select>
        </label>
        {state === MembershipState.MEMBER && (
          <label class="field">
            {t('admin.orgs.tier')}
            <input name="tier" value={tier} placeholder="CORE / GENERAL" onInput={(e) => setTier((e.target as HTMLInputElement).value)} />
          </label>
        )}
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy}>{t('admin.orgs.create')}</button>
          <a href="#/admin/organizations">{t('admin.cancel')}</a>
        </div>
      </form>
      <Refusal err={err} />
    </section>
  );
}
