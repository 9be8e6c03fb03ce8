// The booking rules of one sharing mode an instrument offers, in the
// instrument edit panel (instruments.tsx): every field of SlotRules
// (ON_SITE, JOINT_RESEARCH, TECHNICAL_SERVICE) or of LeaseRules (LEASE),
// durations in hours or days, fee rates in percent, the member tiers'
// horizons as rows. Saving sends UpdateInstrument with update_mask "modes"
// and the instrument's etag: every other mode as read, this mode as read
// with only the fields the person changed replaced, so that whatever the
// form does not show stays as it is. The service checks the values; its
// refusal (INVALID_FIELD with the field's path) is shown with Refusal and
// the field it names is marked. The browser only reads the numbers.
//
// Each block keeps its unsaved edits when the panel's instrument is read
// again (another block saved, or the person reloaded after ETAG_MISMATCH):
// they are re-based onto the new instrument (useDraft, rule-drafts.ts), the
// block says it has unsaved changes (also in its summary line, so a closed
// block shows it), and a field someone else changed meanwhile that the
// person changed too shows the newly stored value next to theirs.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { clone, create } from '@bufbuild/protobuf';
import { DurationSchema, type Duration } from '@bufbuild/protobuf/wkt';
import { inventory } from '../../api';
import { explain } from '../../errors';
import { moneyText, parseMoney } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { useAction, useRequestId } from '../../ui';
import { idOf } from '../../names';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import {
  BillingBasis, LeaseRateBasis, LeaseRulesSchema, ModeOfferingSchema, SlotRulesSchema, TierHorizonSchema,
  type Instrument, type ModeOffering, type Organization,
} from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { AmountNote, amountOk, label, Refusal, values } from './common';
import { DAY, HOUR, bpsText, durationText, parseBps, parseDuration, parseInt32 } from './rule-units';
import {
  blankRow, drafted, leaseKey, rebaseLease, rebaseSlot, reread, savedAs, slotKey,
  type LeaseForm, type Onto, type SlotForm as SlotFormOf, type TierRow,
} from './rule-drafts';

const isZero = (d: Duration | undefined): boolean => !d || (d.seconds === 0n && d.nanos === 0);
const days = (d: Duration | undefined): string => durationText(d, DAY) || '0';

// "members 60 d, tier CORE 120 d, non-members 14 d" (slot modes);
// "terms 7–180 d, starting within 180 d" (LEASE).
export function rulesSummary(o: ModeOffering): string {
  const sep = t('admin.rules.sum.sep');
  if (o.mode === SharingMode.LEASE) {
    const l = o.leaseRules;
    if (!l) return '';
    return [
      t('admin.rules.sum.terms', { min: l.minTermDays, max: l.maxTermDays }),
      l.horizon ? t('admin.rules.sum.startWithin', { days: days(l.horizon) }) : t('admin.rules.sum.startAny'),
    ].join(sep);
  }
  const r = o.slotRules;
  if (!r) return '';
  return [
    t('admin.rules.sum.members', { days: days(r.memberHorizon) }),
    ...r.tierHorizons.map((h) => t('admin.rules.sum.tier', { tier: h.tier, days: days(h.horizon) })),
    isZero(r.nonMemberHorizon) ? t('admin.rules.sum.noNonMembers') : t('admin.rules.sum.nonMembers', { days: days(r.nonMemberHorizon) }),
  ].join(sep);
}

// The tiers organisations have now (Organization.tier), for the tier rows' suggestions.
export function tiersOf(orgs: Organization[] | undefined): string[] {
  return [...new Set((orgs ?? []).map((o) => o.tier).filter(Boolean))].sort();
}

// ---------------------------------------------------------------- reading the form

// A field's proto path within the mode ("slot_rules.buffer") names its input.
type Bad = string[];

function readDuration(text: string, unit: number, name: string, bad: Bad): Duration | undefined | null {
  const p = parseDuration(text, unit);
  if (p.kind === 'bad') { bad.push(name); return null; }
  return p.kind === 'ok' ? create(DurationSchema, p.value) : undefined;
}

function readInt(text: string, name: string, bad: Bad, read = parseInt32): number | null {
  const p = read(text);
  if (p.kind === 'bad') { bad.push(name); return null; }
  return p.kind === 'ok' ? p.value : 0;
}

const SLOT_DURATIONS = [
  ['minBlock', 'min_block', HOUR], ['maxBlock', 'max_block', HOUR], ['minNotice', 'min_notice', HOUR],
  ['memberHorizon', 'member_horizon', DAY], ['buffer', 'buffer', HOUR], ['approvalThreshold', 'approval_threshold', DAY],
  ['noShowGrace', 'no_show_grace', HOUR], ['lateCancelNotice', 'late_cancel_notice', HOUR],
  ['billingUnit', 'billing_unit', HOUR], ['minimumCharge', 'minimum_charge', HOUR],
  ['reportAcceptancePeriod', 'report_acceptance_period', DAY],
] as const;
type SlotDuration = typeof SLOT_DURATIONS[number][0];
type SlotForm = SlotFormOf<SlotDuration>;

function slotForm(o: ModeOffering): SlotForm {
  const r = o.slotRules ?? create(SlotRulesSchema);
  const dur = {} as Record<SlotDuration, string>;
  for (const [k, , unit] of SLOT_DURATIONS) dur[k] = durationText(r[k], unit);
  return {
    approval: o.approvalRequired, dur,
    noNonMembers: isZero(r.nonMemberHorizon),
    nonMember: isZero(r.nonMemberHorizon) ? '' : durationText(r.nonMemberHorizon, DAY),
    tiers: r.tierHorizons.map((h, i) => ({ id: i, tier: h.tier, horizon: durationText(h.horizon, DAY), orig: h })),
    basis: r.billingBasis, missed: bpsText(r.missedFeeBps), lateFee: bpsText(r.lateCancelFeeBps),
    qualification: String(r.qualificationValidityDays),
  };
}

// The offering to send: `o` as read, with the fields that differ from the
// form as first shown (`f0`) replaced; undefined with the inputs whose text
// is not a number.
function buildSlot(o: ModeOffering, f: SlotForm, f0: SlotForm): { next?: ModeOffering; bad: Bad } {
  const bad: Bad = [];
  const next = clone(ModeOfferingSchema, o);
  next.approvalRequired = f.approval;
  const r = next.slotRules ?? create(SlotRulesSchema);
  next.slotRules = r;
  for (const [k, path, unit] of SLOT_DURATIONS) {
    if (f.dur[k] === f0.dur[k]) continue;
    const v = readDuration(f.dur[k], unit, `slot_rules.${path}`, bad);
    if (v !== null) r[k] = v;
  }
  if (f.noNonMembers !== f0.noNonMembers || (!f.noNonMembers && f.nonMember !== f0.nonMember)) {
    if (f.noNonMembers) r.nonMemberHorizon = undefined;
    else {
      const v = readDuration(f.nonMember, DAY, 'slot_rules.non_member_horizon', bad);
      if (v !== null) r.nonMemberHorizon = v;
    }
  }
  // Rows left blank are no rows; a row as read stays as read.
  r.tierHorizons = f.tiers.filter((row) => !blankRow(row)).map((row, i) => {
    const o = row.orig;
    const sameHorizon = o !== undefined && row.horizon === durationText(o.horizon, DAY);
    if (o && sameHorizon && row.tier === o.tier) return clone(TierHorizonSchema, o);
    const h = create(TierHorizonSchema, { tier: row.tier.trim() });
    if (o && sameHorizon) h.horizon = o.horizon && clone(DurationSchema, o.horizon);
    else {
      const v = readDuration(row.horizon, DAY, `slot_rules.tier_horizons[${i}].horizon`, bad);
      if (v !== null) h.horizon = v;
    }
    return h;
  });
  if (f.basis !== f0.basis) r.billingBasis = f.basis;
  if (f.missed !== f0.missed) {
    const v = readInt(f.missed, 'slot_rules.missed_fee_bps', bad, parseBps);
    if (v !== null) r.missedFeeBps = v;
  }
  if (f.lateFee !== f0.lateFee) {
    const v = readInt(f.lateFee, 'slot_rules.late_cancel_fee_bps', bad, parseBps);
    if (v !== null) r.lateCancelFeeBps = v;
  }
  if (f.qualification !== f0.qualification) {
    const v = readInt(f.qualification, 'slot_rules.qualification_validity_days', bad);
    if (v !== null) r.qualificationValidityDays = v;
  }
  return bad.length ? { bad } : { next, bad };
}

function leaseForm(o: ModeOffering): LeaseForm {
  const l = o.leaseRules ?? create(LeaseRulesSchema);
  return {
    minTerm: String(l.minTermDays), maxTerm: String(l.maxTermDays),
    handover: durationText(l.handoverBuffer, HOUR), ret: durationText(l.returnBuffer, HOUR),
    deposit: moneyText(l.deposit), basis: l.rateBasis, counted: String(l.countedHoursPerDay),
    horizon: durationText(l.horizon, DAY),
  };
}

function buildLease(o: ModeOffering, f: LeaseForm, f0: LeaseForm, currency: string): { next?: ModeOffering; bad: Bad } {
  const bad: Bad = [];
  const next = clone(ModeOfferingSchema, o);
  const l = next.leaseRules ?? create(LeaseRulesSchema);
  next.leaseRules = l;
  const int = (text: string, name: string, set: (v: number) => void) => { const v = readInt(text, name, bad); if (v !== null) set(v); };
  const dur = (text: string, unit: number, name: string, set: (v: Duration | undefined) => void) => {
    const v = readDuration(text, unit, name, bad);
    if (v !== null) set(v);
  };
  if (f.minTerm !== f0.minTerm) int(f.minTerm, 'lease_rules.min_term_days', (v) => { l.minTermDays = v; });
  if (f.maxTerm !== f0.maxTerm) int(f.maxTerm, 'lease_rules.max_term_days', (v) => { l.maxTermDays = v; });
  if (f.handover !== f0.handover) dur(f.handover, HOUR, 'lease_rules.handover_buffer', (v) => { l.handoverBuffer = v; });
  if (f.ret !== f0.ret) dur(f.ret, HOUR, 'lease_rules.return_buffer', (v) => { l.returnBuffer = v; });
  if (f.horizon !== f0.horizon) dur(f.horizon, DAY, 'lease_rules.horizon', (v) => { l.horizon = v; });
  if (f.counted !== f0.counted) int(f.counted, 'lease_rules.counted_hours_per_day', (v) => { l.countedHoursPerDay = v; });
  if (f.basis !== f0.basis) l.rateBasis = f.basis;
  if (f.deposit !== f0.deposit) {
    if (!f.deposit.trim()) l.deposit = undefined;
    else if (!amountOk(f.deposit, currency)) bad.push('lease_rules.deposit');
    else l.deposit = parseMoney(f.deposit, currency);
  }
  return bad.length ? { bad } : { next, bad };
}

// ---------------------------------------------------------------- the form

// The field INVALID_FIELD names, within mode `index` ("slot_rules.buffer"), or "".
function refusedField(err: unknown, index: number): string {
  if (!err) return '';
  const e = explain(err);
  const field = e.reason === 'INVALID_FIELD' ? e.metadata['field'] ?? '' : '';
  const prefix = `instrument.modes[${index}].`;
  return field.startsWith(prefix) ? field.slice(prefix.length) : '';
}

// A form over what it was read from (`src`: a mode's offering, or the
// instrument for the panel's own fields). When a newly read `src` arrives,
// the person's edits are re-based onto it (`onto`, rule-drafts.ts): the
// fields they did not touch show the new values, the ones they edited keep
// their text; `conflicts` names the edited fields someone else changed too.
// `reset` shows `to` (by default the current `src`) as read (Undo).
// `saved(to, sent)`: this form's own save of `sent` answered `to`; what was
// typed while the save was on its way stays (rule-drafts.ts savedAs).
export interface Draft<S, F> {
  src: S; f0: F; f: F; conflicts: string[];
  setF: (u: (f: F) => F) => void;
  reset: (to?: S) => void;
  saved: (to: S, sent: F) => void;
}

export function useDraft<S, F>(src: S, toForm: (s: S) => F, onto: Onto<F>): Draft<S, F> {
  const [d, setD] = useState(() => drafted(src, toForm));
  // A layout effect: the re-based form is drawn before the browser paints
  // the new `src` with the old form.
  useLayoutEffect(() => { setD((x) => reread(x, src, toForm, onto)); }, [src]);
  return {
    ...d,
    setF: (u) => setD((x) => ({ ...x, f: u(x.f) })),
    reset: (to = d.src) => setD(drafted(to, toForm)),
    saved: (to, sent) => setD((x) => savedAs(x, to, sent, toForm, onto)),
  };
}

// What the newly read instrument holds in a field the person changed too
// (shown next to theirs), or undefined.
function theirsOf(d: { conflicts: string[] }, path: string, differs: boolean, value: string): string | undefined {
  return differs && d.conflicts.includes(path) ? value || t('admin.rules.theirsEmpty') : undefined;
}

const noteId = (uid: string, name: string, kind: string) => `${uid}-${name.replace(/[^a-z0-9]+/gi, '-')}-${kind}`;

// "Saved meanwhile by someone else: 0.5. …" under a field.
function Theirs({ id, value }: { id?: string; value: string | undefined }) {
  if (value === undefined) return null;
  return <span id={id} class="field-theirs small" data-testid="field-theirs">{t('admin.rules.theirs', { value })}</span>;
}

interface FieldProps {
  uid: string; name: string; text: string; onText: (s: string) => void; bad: Bad; refused: string;
  note: string; disabled?: boolean; hint?: string; theirs?: string;
}

// A number typed as text (no browser step checks), its own note when it does
// not read as a number, marked when the service refused it.
function NumberField({ uid, name, text, onText, bad, refused, note, disabled, label: title, hint, theirs }: FieldProps & { label: string }) {
  const isBad = bad.includes(name);
  const badId = noteId(uid, name, 'note');
  const theirsId = noteId(uid, name, 'theirs');
  const described = [isBad ? badId : '', theirs !== undefined ? theirsId : ''].filter(Boolean).join(' ');
  return (
    <label class="field">{title}
      <input name={name} inputMode="decimal" autoComplete="off" value={text} disabled={disabled}
        aria-invalid={isBad || refused === name} aria-describedby={described || undefined}
        onInput={(e) => onText((e.target as HTMLInputElement).value)} />
      {hint && <span class="muted small">{hint}</span>}
      <Theirs id={theirsId} value={theirs} />
      {isBad && <span id={badId} class="field-error" role="alert" data-testid="field-error">{note}</span>}
    </label>
  );
}

function Summary({ o, name, unsaved }: { o: ModeOffering; name: string; unsaved: boolean }) {
  return (
    <summary>
      <span class="rules-mode">{name}</span>
      {unsaved && <span class="pill unsaved" data-testid="rules-unsaved">{t('admin.rules.unsaved')}</span>}
      <span class="muted small rules-summary" data-testid="rules-summary">{rulesSummary(o)}</span>
    </summary>
  );
}

export interface ModeRulesProps {
  inst: Instrument;
  index: number;
  orgs: Organization[] | undefined;
  open: boolean;
  saved: boolean;
  // After a save (the instrument as saved) or on "Reload the current version" (undefined).
  onDone: (i: Instrument | undefined, mode: number) => void;
  // Whether the block has unsaved edits (false again when it goes away).
  onDirty: (mode: number, dirty: boolean) => void;
}

export function ModeRules(p: ModeRulesProps) {
  useSignal(lang);
  const o = p.inst.modes[p.index]!;
  return o.mode === SharingMode.LEASE ? <LeaseRulesForm {...p} o={o} /> : <SlotRulesForm {...p} o={o} />;
}

function useDirty(p: ModeRulesProps, mode: number, dirty: boolean) {
  useEffect(() => { p.onDirty(mode, dirty); }, [dirty]);
  useEffect(() => () => p.onDirty(mode, false), []);
}

// Saving: the instrument's modes as read, this one replaced; once saved, the
// form shows this mode as the service keeps it, with whatever was typed
// while the save was on its way still there (`onSaved(to, sent)`: the
// draft's `saved`), and the other blocks re-base their unsaved edits onto
// the instrument the service answered. A form whose inputs did not all read
// as numbers is not sent: the first such input (marked bad) gets the focus.
// `sent`: the form as it was when Save was pressed.
function useSave<F>(p: ModeRulesProps, form: { current: HTMLFormElement | null }, setBad: (b: Bad) => void,
  onSaved: (to: ModeOffering, sent: F) => void) {
  const mutate = useRequestId();
  const action = useAction();
  async function save(built: { next?: ModeOffering; bad: Bad }, sent: F) {
    setBad(built.bad);
    const next = built.next;
    if (!next) {
      action.setError(undefined);
      form.current?.querySelector<HTMLInputElement>(`[name="${built.bad[0]}"]`)?.focus();
      return;
    }
    await action.run(async () => {
      const i = await mutate('updateInstrument', {
        instrument: { name: p.inst.name, etag: p.inst.etag, modes: p.inst.modes.map((m, k) => (k === p.index ? next : m)) },
        updateMask: { paths: ['modes'] },
      }, (r) => inventory.updateInstrument(r));
      const to = i.modes.find((m) => m.mode === next.mode);
      if (to) onSaved(to, sent);
      p.onDone(i, next.mode);
      // The Save button may be disabled now: the focus goes to the block's
      // summary, unless the person is typing in one of its fields.
      const typing = document.activeElement?.matches('input, select, textarea') && form.current?.contains(document.activeElement);
      if (!typing) form.current?.closest('details')?.querySelector('summary')?.focus();
    });
  }
  return { ...action, save };
}

function SavedNote({ show, mode, inst }: { show: boolean; mode: string; inst: Instrument }) {
  if (!show) return null;
  return <p class="notice full" data-testid="rules-saved">{t('admin.rules.saved', { mode, name: inst.displayName || idOf(inst.name) })}</p>;
}

const ticked = (on: boolean): string => t(on ? 'admin.rules.ticked' : 'admin.rules.notTicked');

function SlotRulesForm(p: ModeRulesProps & { o: ModeOffering }) {
  const { inst, index } = p;
  const d = useDraft(p.o, slotForm, rebaseSlot);
  const { f, f0, src: o, setF } = d;
  const modeName = label('SharingMode', SharingMode, o.mode);
  const uid = `rules-${SharingMode[o.mode]}`;
  const [bad, setBad] = useState<Bad>([]);
  const [open, setOpen] = useState(p.open);
  const focusRow = useRef<number>();
  const addButton = useRef<HTMLButtonElement>(null);
  const form = useRef<HTMLFormElement>(null);
  const { busy, error: err, setError, save } = useSave(p, form, setBad, d.saved);
  const refused = refusedField(err, index);
  const set = (q: Partial<SlotForm>) => setF((x) => ({ ...x, ...q }));
  const setDur = (k: SlotDuration, s: string) => setF((x) => ({ ...x, dur: { ...x.dur, [k]: s } }));
  const setRow = (id: number, q: Partial<TierRow>) => setF((x) => ({ ...x, tiers: x.tiers.map((r) => (r.id === id ? { ...r, ...q } : r)) }));
  const changed = slotKey(f) !== slotKey(f0);
  useDirty(p, o.mode, changed);
  const known = tiersOf(p.orgs);
  useEffect(() => {
    if (focusRow.current === undefined) return;
    form.current?.querySelector<HTMLInputElement>(`[data-row="${focusRow.current}"] input`)?.focus();
    focusRow.current = undefined;
  }, [f.tiers.length]);

  async function submit(e: Event) {
    e.preventDefault();
    await save(buildSlot(o, f, f0), f);
  }
  const numberNote = t('admin.rules.notNumber');
  const field = (k: SlotDuration, path: string, title: string, hint?: string) => (
    <NumberField uid={uid} name={`slot_rules.${path}`} text={f.dur[k]} onText={(s) => setDur(k, s)} bad={bad} refused={refused}
      note={numberNote} label={title} hint={hint} theirs={theirsOf(d, `dur.${k}`, f.dur[k] !== f0.dur[k], f0.dur[k])} />
  );
  const nonMembersKept = f.noNonMembers !== f0.noNonMembers || (!f.noNonMembers && f.nonMember !== f0.nonMember);
  const theirsNonMembers = theirsOf(d, 'nonMember', nonMembersKept, f0.noNonMembers ? t('admin.rules.sum.noNonMembers') : f0.nonMember);
  const theirsTiers = theirsOf(d, 'tiers', slotKey({ ...f0, tiers: f.tiers }) !== slotKey(f0),
    f0.tiers.map((r) => t('admin.rules.sum.tier', { tier: r.tier, days: r.horizon })).join(t('admin.rules.sum.sep')) || t('admin.rules.noTiers'));
  let sent = 0;
  return (
    <details class="rules" open={open} onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)} data-testid={uid}>
      <Summary o={p.o} name={modeName} unsaved={changed} />
      <form class="form-grid" ref={form} onSubmit={(e) => void submit(e)} aria-label={t('admin.rules.formLabel', { mode: modeName })}>
        <SavedNote show={p.saved && !changed} mode={modeName} inst={inst} />
        <fieldset class="full form-grid"><legend>{t('admin.rules.ahead')}</legend>
          {field('memberHorizon', 'member_horizon', t('admin.rules.memberHorizon'))}
          <div class="non-members">
            <NumberField uid={uid} name="slot_rules.non_member_horizon" text={f.noNonMembers ? '' : f.nonMember} disabled={f.noNonMembers}
              onText={(s) => set({ nonMember: s })} bad={bad} refused={refused} note={numberNote} label={t('admin.rules.nonMemberHorizon')}
              theirs={theirsNonMembers} />
            <label class="check"><input type="checkbox" name="noNonMembers" checked={f.noNonMembers}
              onChange={(e) => set({ noNonMembers: (e.target as HTMLInputElement).checked })} />{t('admin.rules.noNonMembers')}</label>
          </div>
          <div class="full tier-rules">
            <h4 id={`${uid}-tiers`}>{t('admin.rules.tiers')}</h4>
            <p class="muted small">{t('admin.rules.tiersHint')}</p>
            {f.tiers.length === 0 && <p class="muted small" data-testid="no-tiers">{t('admin.rules.noTiers')}</p>}
            <ul class="tier-rows" aria-labelledby={`${uid}-tiers`}>
              {f.tiers.map((row, n) => {
                const i = blankRow(row) ? -1 : sent++;
                const base = i >= 0 ? `slot_rules.tier_horizons[${i}]` : `tier-new-${row.id}`;
                const unknown = row.tier.trim() && p.orgs !== undefined && !known.includes(row.tier.trim());
                return (
                  <li key={row.id} class="tier-row" data-row={row.id} data-testid="tier-row">
                    <label class="field">{t('admin.rules.tier')}
                      <input name={`${base}.tier`} list={`${uid}-tier-list`} autoComplete="off" value={row.tier}
                        aria-invalid={refused === `${base}.tier`} onInput={(e) => setRow(row.id, { tier: (e.target as HTMLInputElement).value })} />
                    </label>
                    <NumberField uid={`${uid}-${row.id}`} name={`${base}.horizon`} text={row.horizon} onText={(s) => setRow(row.id, { horizon: s })}
                      bad={bad} refused={refused} note={numberNote} label={t('admin.rules.tierHorizon')} />
                    <button type="button" class="tier-remove" aria-label={t('admin.rules.removeTier', { tier: row.tier.trim() || String(n + 1) })}
                      onClick={() => { set({ tiers: f.tiers.filter((r) => r.id !== row.id) }); addButton.current?.focus(); }}>{t('admin.rules.remove')}</button>
                    {unknown && <span class="muted small tier-note">{t('admin.rules.tierUnknown', { tier: row.tier.trim() })}</span>}
                  </li>
                );
              })}
            </ul>
            <Theirs value={theirsTiers} />
            <datalist id={`${uid}-tier-list`}>{known.map((x) => <option key={x} value={x} />)}</datalist>
            <button type="button" ref={addButton} data-testid="add-tier" onClick={() => {
              const id = Math.max(-1, ...f.tiers.map((r) => r.id)) + 1;
              focusRow.current = id;
              set({ tiers: [...f.tiers, { id, tier: '', horizon: '' }] });
            }}>{t('admin.rules.addTier')}</button>
          </div>
        </fieldset>
        <fieldset class="full form-grid"><legend>{t('admin.rules.bookings')}</legend>
          <div class="full">
            <label class="check"><input type="checkbox" name="approvalRequired" checked={f.approval}
              onChange={(e) => set({ approval: (e.target as HTMLInputElement).checked })} />{t('admin.instr.approval')}</label>
            <Theirs value={theirsOf(d, 'approval', f.approval !== f0.approval, ticked(f0.approval))} />
          </div>
          {field('minBlock', 'min_block', t('admin.rules.minBlock'))}
          {field('maxBlock', 'max_block', t('admin.instr.maxBlock'))}
          {field('minNotice', 'min_notice', t('admin.instr.notice'))}
          {field('buffer', 'buffer', t('admin.rules.buffer'))}
          {field('approvalThreshold', 'approval_threshold', t('admin.rules.approvalThreshold'))}
          {o.mode === SharingMode.ON_SITE && (
            <NumberField uid={uid} name="slot_rules.qualification_validity_days" text={f.qualification} onText={(s) => set({ qualification: s })}
              bad={bad} refused={refused} note={t('admin.rules.notWhole')} label={t('admin.instr.qualificationDays')}
              theirs={theirsOf(d, 'qualification', f.qualification !== f0.qualification, f0.qualification)} />
          )}
        </fieldset>
        <fieldset class="full form-grid"><legend>{t('admin.rules.checkIn')}</legend>
          {field('noShowGrace', 'no_show_grace', t('admin.rules.noShowGrace'))}
          {field('lateCancelNotice', 'late_cancel_notice', t('admin.rules.lateCancelNotice'))}
          {o.mode === SharingMode.TECHNICAL_SERVICE && field('reportAcceptancePeriod', 'report_acceptance_period', t('admin.rules.reportAcceptance'))}
        </fieldset>
        <fieldset class="full form-grid"><legend>{t('admin.rules.billing')}</legend>
          <label class="field wide">{t('admin.rules.billingBasis')}
            <select name="slot_rules.billing_basis" value={String(f.basis)} aria-invalid={refused === 'slot_rules.billing_basis'}
              onChange={(e) => set({ basis: Number((e.target as HTMLSelectElement).value) })}>
              {f.basis === 0 && <option value="0">{t('admin.choose')}</option>}
              {values(BillingBasis).map((b) => <option key={b} value={String(b)}>{label('BillingBasis', BillingBasis, b)}</option>)}
            </select>
            <Theirs value={theirsOf(d, 'basis', f.basis !== f0.basis, label('BillingBasis', BillingBasis, f0.basis))} />
          </label>
          {field('billingUnit', 'billing_unit', t('admin.rules.billingUnit'))}
          {field('minimumCharge', 'minimum_charge', t('admin.rules.minimumCharge'))}
          <NumberField uid={uid} name="slot_rules.missed_fee_bps" text={f.missed} onText={(s) => set({ missed: s })}
            bad={bad} refused={refused} note={t('admin.rules.notPercent')} label={t('admin.rules.missedFee')}
            theirs={theirsOf(d, 'missed', f.missed !== f0.missed, f0.missed)} />
          <NumberField uid={uid} name="slot_rules.late_cancel_fee_bps" text={f.lateFee} onText={(s) => set({ lateFee: s })}
            bad={bad} refused={refused} note={t('admin.rules.notPercent')} label={t('admin.rules.lateCancelFee')}
            theirs={theirsOf(d, 'lateFee', f.lateFee !== f0.lateFee, f0.lateFee)} />
          <p class="muted small full">{t('admin.rules.billingHint')}</p>
        </fieldset>
        <Actions changed={changed} busy={busy} modeName={modeName} onUndo={() => { d.reset(); setBad([]); setError(undefined); }} />
        <Refusal err={err} etagNote={t('admin.etagKept')} onReload={() => { setError(undefined); p.onDone(undefined, o.mode); }} />
      </form>
    </details>
  );
}

// Save and Undo, and whether there is anything unsaved.
function Actions({ changed, busy, modeName, onUndo }: { changed: boolean; busy: boolean; modeName: string; onUndo: () => void }) {
  return (
    <div class="form-actions">
      <button type="submit" class="primary" disabled={busy || !changed}>{t('admin.rules.save', { mode: modeName })}</button>
      {changed && <button type="button" onClick={onUndo}>{t('admin.rules.undo')}</button>}
      {changed && <span class="unsaved-note">{t('admin.rules.unsaved')}</span>}
    </div>
  );
}

function LeaseRulesForm(p: ModeRulesProps & { o: ModeOffering }) {
  const { inst, index } = p;
  const d = useDraft(p.o, leaseForm, rebaseLease);
  const { f, f0, src: o, setF } = d;
  const modeName = label('SharingMode', SharingMode, o.mode);
  const uid = `rules-${SharingMode[o.mode]}`;
  const currency = o.leaseRules?.deposit?.currencyCode || inst.originalValue?.currencyCode || 'CNY';
  const [bad, setBad] = useState<Bad>([]);
  const [open, setOpen] = useState(p.open);
  const form = useRef<HTMLFormElement>(null);
  const { busy, error: err, setError, save } = useSave(p, form, setBad, d.saved);
  const refused = refusedField(err, index);
  const set = (q: Partial<LeaseForm>) => setF((x) => ({ ...x, ...q }));
  const changed = leaseKey(f) !== leaseKey(f0);
  useDirty(p, o.mode, changed);
  async function submit(e: Event) {
    e.preventDefault();
    await save(buildLease(o, f, f0, currency), f);
  }
  const num = (k: keyof Omit<LeaseForm, 'basis'>, name: string, title: string, note: string) => (
    <NumberField uid={uid} name={name} text={f[k]} onText={(s) => set({ [k]: s })} bad={bad} refused={refused} note={note} label={title}
      theirs={theirsOf(d, k, f[k] !== f0[k], f0[k])} />
  );
  const depositBad = bad.includes('lease_rules.deposit');
  const depositTheirs = theirsOf(d, 'deposit', f.deposit !== f0.deposit, f0.deposit);
  return (
    <details class="rules" open={open} onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)} data-testid={uid}>
      <Summary o={p.o} name={modeName} unsaved={changed} />
      <form class="form-grid" ref={form} onSubmit={(e) => void submit(e)} aria-label={t('admin.rules.formLabel', { mode: modeName })}>
        <SavedNote show={p.saved && !changed} mode={modeName} inst={inst} />
        {num('minTerm', 'lease_rules.min_term_days', t('admin.instr.leaseMin'), t('admin.rules.notWhole'))}
        {num('maxTerm', 'lease_rules.max_term_days', t('admin.instr.leaseMax'), t('admin.rules.notWhole'))}
        {num('horizon', 'lease_rules.horizon', t('admin.rules.leaseHorizon'), t('admin.rules.notNumber'))}
        {num('handover', 'lease_rules.handover_buffer', t('admin.rules.handover'), t('admin.rules.notNumber'))}
        {num('ret', 'lease_rules.return_buffer', t('admin.rules.return'), t('admin.rules.notNumber'))}
        <label class="field">{t('admin.instr.deposit', { currency })}
          <input name="lease_rules.deposit" inputMode="decimal" autoComplete="off" value={f.deposit}
            aria-invalid={depositBad || refused.startsWith('lease_rules.deposit')}
            aria-describedby={[depositBad ? `${uid}-deposit-note` : '', depositTheirs !== undefined ? `${uid}-deposit-theirs` : ''].filter(Boolean).join(' ') || undefined}
            onInput={(e) => set({ deposit: (e.target as HTMLInputElement).value })} />
          <Theirs id={`${uid}-deposit-theirs`} value={depositTheirs} />
          <AmountNote show={depositBad} currency={currency} id={`${uid}-deposit-note`} />
        </label>
        <label class="field">{t('admin.rules.rateBasis')}
          <select name="lease_rules.rate_basis" value={String(f.basis)} aria-invalid={refused === 'lease_rules.rate_basis'}
            onChange={(e) => set({ basis: Number((e.target as HTMLSelectElement).value) })}>
            {f.basis === 0 && <option value="0">{t('admin.choose')}</option>}
            {values(LeaseRateBasis).map((b) => <option key={b} value={String(b)}>{label('LeaseRateBasis', LeaseRateBasis, b)}</option>)}
          </select>
          <Theirs value={theirsOf(d, 'basis', f.basis !== f0.basis, label('LeaseRateBasis', LeaseRateBasis, f0.basis))} />
        </label>
        {num('counted', 'lease_rules.counted_hours_per_day', t('admin.rules.countedHours'), t('admin.rules.notWhole'))}
        <p class="muted small full">{t('admin.rules.leaseHint')}</p>
        <Actions changed={changed} busy={busy} modeName={modeName} onUndo={() => { d.reset(); setBad([]); setError(undefined); }} />
        <Refusal err={err} etagNote={t('admin.etagKept')} onReload={() => { setError(undefined); p.onDone(undefined, o.mode); }} />
      </form>
    </details>
  );
}
