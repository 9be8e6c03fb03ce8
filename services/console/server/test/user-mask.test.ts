// The admin user edit form (web/src/screens/admin/users.tsx) builds its
// UpdateUser mask with userUpdatePaths (web/src/screens/admin/user-mask.ts):
// external_subject, which UpdateUser allows (inventory.proto), could not be
// changed from the console at all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { consoleDir, repoRoot } from './harness.js';
import { WebModules } from './web-module.js';

interface UserFields { displayName: string; email: string; roles: readonly number[]; disabled: boolean; externalSubject: string }
interface MaskModule { userUpdatePaths(before: UserFields, after: UserFields): string[] }

let web: WebModules | undefined;
async function loadMask(): Promise<MaskModule> {
  web = new WebModules('webmask-');
  web.write('screens/admin/user-mask.ts', 'user-mask');
  return web.load<MaskModule>('user-mask');
}

describe('the admin user edit form\'s update mask', () => {
  let m: MaskModule;
  before(async () => { m = await loadMask(); });
  after(() => web?.cleanUp());
  const user: UserFields = { displayName: '李伟', email: 'li@x.cn', roles: [1, 3], disabled: false, externalSubject: 'sub-1' };

  it('names exactly the changed fields, external_subject included', () => {
    assert.deepEqual(m.userUpdatePaths(user, { ...user }), []);
    assert.deepEqual(m.userUpdatePaths(user, { ...user, roles: [3, 1] }), []);
    assert.deepEqual(m.userUpdatePaths(user, { ...user, externalSubject: 'sub-2' }), ['external_subject']);
    assert.deepEqual(m.userUpdatePaths(user, { ...user, externalSubject: ' sub-1 ' }), []);
    assert.deepEqual(m.userUpdatePaths(user, { ...user, externalSubject: '' }), ['external_subject']);
    assert.deepEqual(m.userUpdatePaths({ ...user, externalSubject: '' }, { ...user }), ['external_subject']);
    assert.deepEqual(m.userUpdatePaths(user, { ...user, displayName: 'x', email: 'y', roles: [1], disabled: true }),
      ['display_name', 'email', 'roles', 'disabled']);
  });

  it('uses only paths UpdateUser allows', () => {
    const proto = fs.readFileSync(path.join(repoRoot, 'proto', 'labshare', 'inventory', 'v1', 'inventory.proto'), 'utf8');
    const before = proto.slice(0, proto.indexOf('rpc UpdateUser('));
    const comment = /update_mask paths:([\s\S]*?)Roles:/.exec(before.slice(before.lastIndexOf('update_mask paths:')));
    assert.ok(comment, 'UpdateUser\'s update_mask comment');
    const allowed = comment[1]!.replace(/\/\//g, ' ').split(/[\s,.]+/).filter(Boolean);
    const all = m.userUpdatePaths(user, { displayName: 'x', email: 'y', roles: [], disabled: true, externalSubject: 'z' });
    for (const p of all) assert.ok(allowed.includes(p), p);
    assert.equal(all.length, 5);
  });

  it('is what users.tsx sends', () => {
    const tsx = fs.readFileSync(path.join(consoleDir, 'web', 'src', 'screens', 'admin', 'users.tsx'), 'utf8');
    assert.match(tsx, /userUpdatePaths\(user, \{ displayName, email, roles, disabled, externalSubject: subject \}\)/);
    assert.match(tsx, /externalSubject: subject\.trim\(\), etag: user\.etag/);
  });
});
