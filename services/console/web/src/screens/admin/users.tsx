// #/admin/users?org=<id>: the people of one organisation (ListUsers);
// consortium admins register people (CreateUser) and change their name,
// e-mail, roles, sign-in subject or disable them (UpdateUser with an update
// mask and etag).
import { useEffect, useRef, useState } from 'preact/hooks';
import { inventory } from '../../api';
import { lang, t, listText } from '../../i18n';
import { useSignal } from '../../signal';
import { Role } from '../../../../gen/labshare/type/v1/types_pb';
import type { User } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { isAdmin, label, Refusal } from './common';
import { allOrganizations } from './organizations';
import { Loading, StatusBox, useLoad, useAction, useRequestId, useWorded } from '../../ui';
import { idOf, listAll } from '../../names';
import { setQuery } from '../../nav';
import { userUpdatePaths } from './user-mask';

const PERSON_ROLES = [Role.LAB_USER, Role.FACILITY_STAFF, Role.MEMBER_BILLING_ADMIN, Role.CONSORTIUM_ADMIN, Role.AUDITOR];

function RolePicker({ roles, set, legend }: { roles: number[]; set: (r: number[]) => void; legend: string }) {
  return (
    <fieldset class="roles">
      <legend>{legend}</legend>
      {PERSON_ROLES.map((r) => (
        <label class="check" key={r}>
          <input type="checkbox" name={`role-${Role[r]}`} checked={roles.includes(r)}
            onChange={(e) => set((e.target as HTMLInputElement).checked ? [...roles, r].sort() : roles.filter((x) => x !== r))} />
          {label('Role', Role, r)}
        </label>
      ))}
    </fieldset>
  );
}

function NewUser({ org, orgTitle, onDone }: { org: string; orgTitle: string; onDone: (u: User) => void }) {
  const mutate = useRequestId();
  const [id, setId] = useState('');
  const [displayName, setName] = useState('');
  const [email, setEmail] = useState('');
  const [subject, setSubject] = useState('');
  const [roles, setRoles] = useState<number[]>([Role.LAB_USER]);
  const { busy, error: err, run } = useAction();
  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const u = await mutate('createUser', {
        userId: id.trim(),
        user: { displayName: displayName.trim(), email: email.trim(), organization: `organizations/${org}`, roles, externalSubject: subject.trim() },
      }, (r) => inventory.createUser(r));
      setId(''); setName(''); setEmail(''); setSubject(''); setRoles([Role.LAB_USER]);
      onDone(u);
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="user-form">
      <h2>{t('admin.users.new', { org: orgTitle })}</h2>
      <label class="field">{t('admin.users.id')}
        <input name="userId" value={id} autoComplete="off" onInput={(e) => setId((e.target as HTMLInputElement).value)} />
        <span class="muted small">{t('admin.idHint')}</span>
      </label>
      <label class="field">{t('admin.users.displayName')}
        <input name="displayName" value={displayName} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      </label>
      <label class="field">{t('admin.users.email')}
        <input name="email" type="text" inputMode="email" value={email} onInput={(e) => setEmail((e.target as HTMLInputElement).value)} />
      </label>
      <label class="field">{t('admin.users.subject')}
        <input name="externalSubject" value={subject} onInput={(e) => setSubject((e.target as HTMLInputElement).value)} />
        <span class="muted small">{t('admin.users.subjectHint')}</span>
      </label>
      <RolePicker roles={roles} set={setRoles} legend={t('admin.users.roles')} />
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy}>{t('admin.users.create')}</button>
      </div>
      <Refusal err={err} />
    </form>
  );
}

function EditUser({ user, onDone, onClose }: { user: User; onDone: (u: User) => void; onClose: () => void }) {
  const mutate = useRequestId();
  const [displayName, setName] = useState(user.displayName);
  const [email, setEmail] = useState(user.email);
  const [roles, setRoles] = useState<number[]>([...user.roles]);
  const [disabled, setDisabled] = useState(user.disabled);
  const [subject, setSubject] = useState(user.externalSubject);
  const { busy, error: err, setError: setErr, run } = useAction();
  useEffect(() => {
    setName(user.displayName); setEmail(user.email); setRoles([...user.roles]); setDisabled(user.disabled); setSubject(user.externalSubject);
  }, [user.etag]);
  const box = useRef<HTMLFormElement>(null);
  useEffect(() => { box.current?.scrollIntoView({ block: 'nearest' }); box.current?.querySelector('h2')?.focus({ preventScroll: true }); }, [user.name]);
  const paths = userUpdatePaths(user, { displayName, email, roles, disabled, externalSubject: subject });
  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const u = await mutate('updateUser', {
        user: { name: user.name, displayName, email, roles, disabled, externalSubject: subject.trim(), etag: user.etag },
        updateMask: { paths },
      }, (r) => inventory.updateUser(r));
      onDone(u);
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="user-edit" ref={box}>
      <h2 tabIndex={-1}>{t('admin.users.edit', { id: idOf(user.name) })}</h2>
      <label class="field">{t('admin.users.displayName')}
        <input name="displayName" value={displayName} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
      </label>
      <label class="field">{t('admin.users.email')}
        <input name="email" value={email} onInput={(e) => setEmail((e.target as HTMLInputElement).value)} />
      </label>
      <label class="field">{t('admin.users.subject')}
        <input name="externalSubject" value={subject} onInput={(e) => setSubject((e.target as HTMLInputElement).value)} />
        <span class="muted small">{t('admin.users.subjectHint')}</span>
      </label>
      <RolePicker roles={roles} set={setRoles} legend={t('admin.users.roles')} />
      <label class="check">
        <input type="checkbox" name="disabled" checked={disabled} onChange={(e) => setDisabled((e.target as HTMLInputElement).checked)} />
        {t('admin.users.disabled')}
      </label>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy || paths.length === 0}>{t('admin.save')}</button>
        <button type="button" onClick={onClose}>{t('admin.cancel')}</button>
      </div>
      <Refusal err={err} onReload={() => { setErr(undefined); onDone(user); }} />
    </form>
  );
}

export default function Users({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const org = params['org'] || 'zju';
  const orgs = useLoad(() => allOrganizations(), []);
  const users = useLoad(() => listAll(async (pageToken) => {
    const r = await inventory.listUsers({ organization: `organizations/${org}`, pageSize: 200, pageToken });
    return { items: r.users, next: r.nextPageToken };
  }), [org]);
  const [editing, setEditing] = useState<string>();
  const [msg, setMsg] = useWorded();
  const edited = users.data?.find((u) => u.name === editing);
  return (
    <section class="admin">
      <h1>{t('admin.users.title')}</h1>
      <div class="row card" role="search">
        <label class="field">{t('admin.users.organization')}
          <select name="org" value={org} onChange={(e) => { setEditing(undefined); setMsg(''); setQuery({ org: (e.target as HTMLSelectElement).value }); }}>
            {(orgs.data ?? []).map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName} ({idOf(o.name)})</option>)}
            {!orgs.data && <option value={org}>{org}</option>}
          </select>
        </label>
      </div>
      <StatusBox testid="done">{msg}</StatusBox>
      <Loading load={users} />
      {users.data && users.data.length === 0 && <p class="muted">{t('admin.users.none')}</p>}
      {users.data && users.data.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="users">
            <thead><tr>
              <th>{t('admin.users.displayName')}</th><th>{t('admin.users.email')}</th><th>{t('admin.users.roles')}</th>
              <th>{t('admin.users.status')}</th>{isAdmin() && <th><span class="sr-only">{t('admin.actions')}</span></th>}
            </tr></thead>
            <tbody>
              {users.data.map((u) => (
                <tr key={u.name} data-testid={`user-${idOf(u.name)}`}>
                  <td>{u.displayName}<div class="muted small">{idOf(u.name)}</div></td>
                  <td>{u.email || '—'}</td>
                  <td data-testid="roles">{listText(u.roles.map((r) => label('Role', Role, r)))}</td>
                  <td>{u.disabled ? <span class="pill state-off">{t('admin.users.isDisabled')}</span> : t('admin.users.active')}</td>
                  {isAdmin() && (
                    <td><button type="button" onClick={() => { setMsg(''); setEditing(u.name); }} aria-label={t('admin.users.editLabel', { name: u.displayName })}>{t('admin.edit')}</button></td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {isAdmin() && edited && (
        <EditUser user={edited} onClose={() => setEditing(undefined)}
          onDone={(u) => { if (u.etag !== edited.etag) { setMsg(() => t('admin.users.saved', { name: u.displayName || idOf(u.name) })); setEditing(undefined); } users.reload(); }} />
      )}
      {isAdmin() && <NewUser org={org} orgTitle={orgs.data?.find((o) => idOf(o.name) === org)?.displayName || org} onDone={(u) => { setMsg(() => t('admin.users.created', { name: u.displayName || idOf(u.name) })); users.reload(); }} />}
    </section>
  );
}
