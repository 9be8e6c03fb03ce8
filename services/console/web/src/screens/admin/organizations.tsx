// #/admin/organizations: the consortium's organisations with kind, size
// class and membership (ListOrganizations), filtered by membership state
// and type. Consortium admins register new ones (#/admin/organizations/new).
import { inventory } from '../../api';
import { lang, t, listText } from '../../i18n';
import { useSignal } from '../../signal';
import {
  MembershipState, OrganizationType, SizeClass, type Organization,
} from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { isAdmin, label, values } from './common';
import { Loading, StatusBox, useLoad, ColumnHeads } from '../../ui';
import { idOf, listAll } from '../../names';
import { setQuery } from '../../nav';

export async function allOrganizations(filter: { membershipState?: number; type?: number } = {}): Promise<Organization[]> {
  return listAll(async (pageToken) => {
    const r = await inventory.listOrganizations({ pageSize: 200, pageToken, ...filter });
    return { items: r.organizations, next: r.nextPageToken };
  });
}

export default function Organizations({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const state = Number(params['state'] ? MembershipState[params['state'] as keyof typeof MembershipState] ?? 0 : 0);
  const type = Number(params['type'] ? OrganizationType[params['type'] as keyof typeof OrganizationType] ?? 0 : 0);
  const orgs = useLoad(() => allOrganizations({ membershipState: state, type }), [state, type]);
  const created = params['created'];
  return (
    <section class="admin">
      <div class="row admin-head">
        <h1>{t('admin.orgs.title')}</h1>
        {isAdmin() && <a class="button primary" href="#/admin/organizations/new" data-testid="new-organization">{t('admin.orgs.new')}</a>}
      </div>
      {created && <StatusBox testid="done">{t('admin.orgs.created', { name: orgs.data?.find((o) => idOf(o.name) === created)?.displayName || created })}</StatusBox>}
      <div class="row card" role="search">
        <label class="field">
          {t('admin.orgs.filterState')}
          <select value={params['state'] ?? ''} onChange={(e) => setQuery({ state: (e.target as HTMLSelectElement).value, created: undefined })}>
            <option value="">{t('admin.all')}</option>
            {values(MembershipState).map((v) => <option key={v} value={MembershipState[v]}>{label('MembershipState', MembershipState, v)}</option>)}
          </select>
        </label>
        <label class="field">
          {t('admin.orgs.filterType')}
          <select value={params['type'] ?? ''} onChange={(e) => setQuery({ type: (e.target as HTMLSelectElement).value, created: undefined })}>
            <option value="">{t('admin.all')}</option>
            {values(OrganizationType).map((v) => <option key={v} value={OrganizationType[v]}>{label('OrganizationType', OrganizationType, v)}</option>)}
          </select>
        </label>
      </div>
      <Loading load={orgs} />
      {orgs.data && orgs.data.length === 0 && <p class="muted">{t('admin.orgs.none')}</p>}
      {orgs.data && orgs.data.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="organizations">
            <ColumnHeads prefix="admin.orgs." cols={['name', 'type', 'sizeClass', 'membership', 'tier', 'sector', 'flags']} />
            <tbody>
              {orgs.data.map((o) => {
                const id = idOf(o.name);
                return (
                  <tr key={o.name} data-testid={`org-${id}`} class={created === id ? 'highlight' : undefined}>
                    <td><a href={`#/admin/organizations/${id}`}>{o.displayName}</a><div class="muted small">{id}</div></td>
                    <td>{label('OrganizationType', OrganizationType, o.type)}</td>
                    <td>{o.sizeClass ? label('SizeClass', SizeClass, o.sizeClass) : '—'}</td>
                    <td data-testid="membership"><span class={`pill state-${MembershipState[o.membershipState]}`}>{label('MembershipState', MembershipState, o.membershipState)}</span></td>
                    <td>{o.tier || '—'}</td>
                    <td>{o.sector || '—'}</td>
                    <td>{listText([o.stateOwned ? t('admin.orgs.stateOwned') : '', o.foreign ? t('admin.orgs.foreign') : ''].filter(Boolean)) || '—'}</td>
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
