// The instrument edit panel keeps a person's unsaved edits when the
// instrument is read again (web/src/screens/admin/rule-drafts.ts): a field
// they did not touch shows the newly read value, one they edited keeps their
// text, and an edited field someone else changed too is a conflict. The
// re-based form differs from the new base only where the person edited, so
// a save still sends every other field exactly as read.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WebModules } from './web-module.js';

interface TierRow { id: number; tier: string; horizon: string; orig?: unknown }
interface SlotForm {
  approval: boolean; dur: Record<string, string>; noNonMembers: boolean; nonMember: string;
  tiers: TierRow[]; basis: number; missed: string; lateFee: string; qualification: string;
}
interface LeaseForm { minTerm: string; maxTerm: string; handover: string; ret: string; deposit: string; basis: number; counted: string; horizon: string }
interface Rebased<F> { form: F; conflicts: string[] }
interface Drafts {
  rebase<F extends object>(mine: F, base: F, theirs: F): Rebased<F>;
  rebaseSlot(mine: SlotForm, base: SlotForm, theirs: SlotForm): Rebased<SlotForm>;
  rebaseLease(mine: LeaseForm, base: LeaseForm, theirs: LeaseForm): Rebased<LeaseForm>;
  slotKey(f: SlotForm): string;
  leaseKey(f: LeaseForm): string;
  drafted<S, F>(src: S, toForm: (s: S) => F): DraftState<S, F>;
  reread<S, F>(x: DraftState<S, F>, src: S, toForm: (s: S) => F, onto: Onto<F>): DraftState<S, F>;
  savedAs<S, F>(x: DraftState<S, F>, saved: S, sent: F, toForm: (s: S) => F, onto: Onto<F>): DraftState<S, F>;
}
interface DraftState<S, F> { src: S; f0: F; f: F; conflicts: string[] }
type Onto<F> = (mine: F, base: F, theirs: F) => Rebased<F>;

let web: WebModules | undefined;

const lease = (q: Partial<LeaseForm> = {}): LeaseForm => ({
  minTerm: '7', maxTerm: '180', handover: '24', ret: '48', deposit: '40000.00', basis: 1, counted: '8', horizon: '180', ...q,
});
const slot = (q: Partial<SlotForm> = {}): SlotForm => ({
  approval: false, dur: { minNotice: '2', buffer: '0.5', noShowGrace: '0.5' }, noNonMembers: false, nonMember: '14',
  tiers: [], basis: 2, missed: '50', lateFee: '25', qualification: '90', ...q,
});

describe('the instrument panel\'s unsaved edits over a newly read instrument', () => {
  let d: Drafts;
  before(async () => {
    web = new WebModules('webdrafts-');
    web.write('screens/admin/rule-drafts.ts', 'rule-drafts');
    d = await web.load<Drafts>('rule-drafts');
  });
  after(() => web?.cleanUp());

  it('shows the new value where the person did not type, keeps theirs where they did', () => {
    const base = lease();
    const mine = lease({ horizon: '90', deposit: '35000.00' });
    const theirs = lease({ maxTerm: '365', counted: '10' });
    const r = d.rebaseLease(mine, base, theirs);
    assert.deepEqual(r.form, lease({ horizon: '90', deposit: '35000.00', maxTerm: '365', counted: '10' }));
    assert.deepEqual(r.conflicts, []);
    // Nothing typed: the form is the newly read one; nothing read anew: the form as typed.
    assert.deepEqual(d.rebaseLease(base, base, theirs).form, theirs);
    assert.deepEqual(d.rebaseLease(mine, base, base).form, mine);
  });

  it('names a field both changed, unless both typed the same', () => {
    const base = lease();
    const r = d.rebaseLease(lease({ horizon: '90', minTerm: '14' }), base, lease({ horizon: '120', minTerm: '14' }));
    assert.deepEqual(r.form, lease({ horizon: '90', minTerm: '14' }));
    assert.deepEqual(r.conflicts, ['horizon']);
  });

  it('takes nested durations field by field', () => {
    const base = slot();
    const mine = slot({ dur: { minNotice: '3', buffer: '0.5', noShowGrace: '0.5' } });
    const theirs = slot({ dur: { minNotice: '4', buffer: '0.5', noShowGrace: '0.75' } });
    const r = d.rebaseSlot(mine, base, theirs);
    assert.deepEqual(r.form.dur, { minNotice: '3', buffer: '0.5', noShowGrace: '0.75' });
    assert.deepEqual(r.conflicts, ['dur.minNotice']);
  });

  it('keeps the tier rows as one field: untouched, the newly read rows (with what they were read from); edited, the person\'s list', () => {
    const orig = { tier: 'CORE' };
    const read = [{ id: 0, tier: 'CORE', horizon: '120', orig }];
    const base = slot({ tiers: read });
    const theirRows = [{ id: 0, tier: 'CORE', horizon: '90', orig: { tier: 'CORE', v: 2 } }, { id: 1, tier: 'GENERAL', horizon: '30', orig: { tier: 'GENERAL' } }];
    const theirs = slot({ tiers: theirRows });
    // A blank row added and the rows otherwise as read: untouched.
    const blank = d.rebaseSlot(slot({ tiers: [...read, { id: 1, tier: ' ', horizon: '' }] }), base, theirs);
    assert.equal(blank.form.tiers, theirRows);
    assert.deepEqual(blank.conflicts, []);
    const mineRows = [{ id: 0, tier: 'CORE', horizon: '150', orig }];
    const edited = d.rebaseSlot(slot({ tiers: mineRows }), base, theirs);
    assert.equal(edited.form.tiers, mineRows);
    assert.deepEqual(edited.conflicts, ['tiers']);
  });

  it('keeps the non-members\' checkbox and horizon together', () => {
    const base = slot();
    // The person closed non-members; someone else changed their horizon.
    let r = d.rebaseSlot(slot({ noNonMembers: true }), base, slot({ nonMember: '21' }));
    assert.equal(r.form.noNonMembers, true);
    assert.deepEqual(r.conflicts, ['nonMember']);
    // The person changed the horizon; someone else closed non-members.
    r = d.rebaseSlot(slot({ nonMember: '20' }), base, slot({ noNonMembers: true, nonMember: '' }));
    assert.deepEqual([r.form.noNonMembers, r.form.nonMember], [false, '20']);
    assert.deepEqual(r.conflicts, ['nonMember']);
    // Closed before, opened, typed and closed again: nothing changed, the newly read value.
    const closed = slot({ noNonMembers: true, nonMember: '' });
    r = d.rebaseSlot(slot({ noNonMembers: true, nonMember: '20' }), closed, slot({ nonMember: '30' }));
    assert.deepEqual([r.form.noNonMembers, r.form.nonMember], [false, '30']);
    assert.deepEqual(r.conflicts, []);
  });

  it('differs from the newly read form only where the person edited', () => {
    const base = slot();
    const mine = slot({ approval: true, missed: '40', dur: { minNotice: '3', buffer: '0.5', noShowGrace: '0.5' } });
    const theirs = slot({ basis: 1, lateFee: '30', qualification: '180', dur: { minNotice: '2', buffer: '1', noShowGrace: '0.5' } });
    const r = d.rebaseSlot(mine, base, theirs).form;
    assert.deepEqual(r, slot({
      approval: true, missed: '40', basis: 1, lateFee: '30', qualification: '180', dur: { minNotice: '3', buffer: '1', noShowGrace: '0.5' },
    }));
    const changed = (Object.keys(theirs) as (keyof SlotForm)[]).filter((k) => JSON.stringify(r[k]) !== JSON.stringify(theirs[k]));
    assert.deepEqual(changed.sort(), ['approval', 'dur', 'missed']);
  });

  it('counts neither blank tier rows nor the hidden non-member text as a change', () => {
    const f = slot({ tiers: [{ id: 0, tier: 'CORE', horizon: '120' }] });
    assert.equal(d.slotKey({ ...f, tiers: [...f.tiers, { id: 1, tier: '', horizon: ' ' }] }), d.slotKey(f));
    const closed = slot({ noNonMembers: true, nonMember: '' });
    assert.equal(d.slotKey({ ...closed, nonMember: '20' }), d.slotKey(closed));
    assert.notEqual(d.slotKey({ ...f, nonMember: '20' }), d.slotKey(f));
    assert.notEqual(d.leaseKey(lease({ deposit: '' })), d.leaseKey(lease()));
  });
});

// A block's draft over what it was read from (rule-drafts.ts drafted,
// reread, savedAs; useDraft in mode-rules.tsx): an instrument read anew
// re-bases the edits; the block's own save shows what the service keeps
// without dropping what was typed while the save was on its way.
describe('a block\'s draft over reads and its own saves', () => {
  let d: Drafts;
  before(async () => {
    web = new WebModules('webdraftstate-');
    web.write('screens/admin/rule-drafts.ts', 'rule-drafts');
    d = await web.load<Drafts>('rule-drafts');
  });
  after(() => web?.cleanUp());
  // What a block is read from: here, its form as the service keeps it.
  interface Src<F> { form: F }
  const leaseOf = (s: Src<LeaseForm>): LeaseForm => ({ ...s.form });
  const slotOf = (s: Src<SlotForm>): SlotForm => ({ ...s.form, dur: { ...s.form.dur }, tiers: [...s.form.tiers] });
  const ontoLease: Onto<LeaseForm> = (m, b, t) => d.rebaseLease(m, b, t);
  const ontoSlot: Onto<SlotForm> = (m, b, t) => d.rebaseSlot(m, b, t);

  it('keeps what was typed while the save was on its way, the rest as the service keeps it', () => {
    const read = { form: lease() };
    let x = d.drafted(read, leaseOf);
    // Typed, then Save pressed: this is what is sent.
    x = { ...x, f: lease({ horizon: '90', counted: '8.0' }) };
    const sent = x.f;
    // While the save is on its way: the deposit typed, the horizon typed again
    // and the counted hours typed over (sent as 8.0, which the service keeps as 8).
    x = { ...x, f: lease({ horizon: '60', counted: '9', deposit: '35000.00' }) };
    const saved = { form: lease({ horizon: '90', counted: '8' }) };
    const after = d.savedAs(x, saved, sent, leaseOf, ontoLease);
    assert.equal(after.src, saved);
    assert.deepEqual(after.f0, saved.form);
    assert.deepEqual(after.f, lease({ horizon: '60', counted: '9', deposit: '35000.00' }));
    // Its own save is no one else's change.
    assert.deepEqual(after.conflicts, []);
    // Still unsaved: exactly the edits typed during the save.
    assert.notEqual(d.leaseKey(after.f), d.leaseKey(after.f0));
    const edited = (Object.keys(after.f) as (keyof LeaseForm)[]).filter((k) => after.f[k] !== after.f0[k]);
    assert.deepEqual(edited.sort(), ['counted', 'deposit', 'horizon']);
  });

  it('shows the saved form when nothing was typed meanwhile, and forgets the conflicts the save settled', () => {
    let x = d.drafted({ form: lease() }, leaseOf);
    // Someone else changed the horizon the person changed too (a reload after ETAG_MISMATCH).
    x = { ...x, f: lease({ horizon: '90' }) };
    x = d.reread(x, { form: lease({ horizon: '120' }) }, leaseOf, ontoLease);
    assert.deepEqual(x.conflicts, ['horizon']);
    const saved = { form: lease({ horizon: '90' }) };
    const after = d.savedAs(x, saved, x.f, leaseOf, ontoLease);
    assert.deepEqual(after.f, saved.form);
    assert.equal(d.leaseKey(after.f), d.leaseKey(after.f0));
    assert.deepEqual(after.conflicts, []);
  });

  it('takes the saved tier rows (with what they were read from) unless the rows were edited during the save', () => {
    const first = [{ id: 0, tier: 'CORE', horizon: '120', orig: { tier: 'CORE', v: 1 } }];
    let x = d.drafted({ form: slot({ tiers: first }) }, slotOf);
    x = { ...x, f: { ...x.f, tiers: [{ ...first[0]!, horizon: '150' }] } };
    const sent = x.f;
    const stored = [{ id: 0, tier: 'CORE', horizon: '150', orig: { tier: 'CORE', v: 2 } }];
    // Only the missed-booking fee typed during the save: the stored rows.
    let after = d.savedAs({ ...x, f: { ...sent, missed: '40' } }, { form: slot({ tiers: stored }) }, sent, slotOf, ontoSlot);
    assert.deepEqual(after.f.tiers, stored);
    assert.equal(after.f.missed, '40');
    // A row added during the save: the person's rows.
    const mine = [...sent.tiers, { id: 1, tier: 'GENERAL', horizon: '30' }];
    after = d.savedAs({ ...x, f: { ...sent, tiers: mine } }, { form: slot({ tiers: stored }) }, sent, slotOf, ontoSlot);
    assert.deepEqual(after.f.tiers, mine);
    assert.deepEqual(after.conflicts, []);
  });

  it('re-bases the edits onto an instrument read anew, once per read', () => {
    const read = { form: lease() };
    const x = { ...d.drafted(read, leaseOf), f: lease({ deposit: '35000.00' }) };
    assert.equal(d.reread(x, read, leaseOf, ontoLease), x);
    const theirs = { form: lease({ maxTerm: '365' }) };
    const r = d.reread(x, theirs, leaseOf, ontoLease);
    assert.equal(r.src, theirs);
    assert.deepEqual(r.f, lease({ deposit: '35000.00', maxTerm: '365' }));
    assert.deepEqual(r.f0, theirs.form);
    assert.deepEqual(r.conflicts, []);
  });
});
