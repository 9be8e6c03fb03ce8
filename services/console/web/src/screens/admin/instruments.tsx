// #/admin/instruments?facility=<id>&owner=<id>: facilities with their time
// zone (ListFacilities, CreateFacility) and instruments by facility and
// owner (ListInstruments); consortium admins register instruments with the
// sharing modes they offer and simple rules (CreateInstrument), edit them
// (UpdateInstrument with mask and etag) and set their state
// (SetInstrumentState). In the edit panel each offered mode's booking rules
// are edited on their own (mode-rules.tsx: UpdateInstrument with mask
// "modes"), with a one-line summary of how far ahead whom may book. Saving
// one part of the panel keeps the unsaved edits of the others (re-based onto
// the instrument the service answered, rule-drafts.ts); they are marked,
// and closing the panel, editing another instrument or leaving the screen
// with unsaved edits asks first (leave.ts).
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { inventory } from '../../api';
import { money, moneyText, parseMoney } from '../../format';
import { lang, t, listText } from '../../i18n';
import { categoryLabel } from '../../categories';
import { useSignal } from '../../signal';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import {
  BillingBasis, InstrumentState, LeaseRateBasis, ServiceUnit,
  type Facility, type Instrument, type ModeOffering, type Organization,
} from '../../../../gen/labshare/inventory/v1/inventory_pb';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { ModeOfferingSchema } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { AmountNote, amountOk, hours, isAdmin, label, Refusal, values } from './common';
import { allOrganizations } from './organizations';
import { ModeRules, useDraft } from './mode-rules';
import { rebase } from './rule-drafts';
import { mayLeave, useUnsaved } from '../../leave';
import { Loading, StatusBox, useLoad, useAction, useRequestId, useWorded, type Worded } from '../../ui';
import { idOf, listAll } from '../../names';
import { setQuery } from '../../nav';
import { zoneOr } from '../../zones';

export async function allFacilities(): Promise<Facility[]> {
  return listAll(async (pageToken) => {
    const r = await inventory.listFacilities({ pageSize: 200, pageToken });
    return { items: r.facilities, next: r.nextPageToken };
  });
}

export async function allInstruments(filter: { facility?: string; ownerOrganization?: string } = {}): Promise<Instrument[]> {
  return listAll(async (pageToken) => {
    const r = await inventory.listInstruments({ pageSize: 200, pageToken, ...filter });
    return { items: r.instruments, next: r.nextPageToken };
  });
}

const ZONES = ['Asia/Shanghai', 'Asia/Hong_Kong', 'Asia/Taipei', 'Asia/Tokyo', 'Asia/Singapore', 'Europe/Berlin', 'Europe/London', 'America/New_York', 'UTC'];

function policyText(f: Facility): string {
  const p = f.accessPolicy;
  if (!p) return '—';
  return listText([p.allowMembers ? t('admin.fac.members') : '', p.allowNonMembers ? t('admin.fac.nonMembers') : '', p.allowForeign ? t('admin.fac.foreignOrgs') : '']
    .filter(Boolean)) || t('admin.fac.nobody');
}

function NewFacility({ orgs, onDone }: { orgs: Organization[]; onDone: (f: Facility) => void }) {
  const mutate = useRequestId();
  const [v, setV] = useState({ id: '', displayName: '', owner: '', operator: '', funder: '', address: '', timeZone: 'Asia/Shanghai', members: true, nonMembers: false, foreign: false });
  const { busy, error: err, run } = useAction();
  const set = (p: Partial<typeof v>) => setV((o) => ({ ...o, ...p }));
  async function submit(e: Event) {
    e.preventDefault();
    await run(async () => {
      const f = await mutate('createFacility', {
        facilityId: v.id.trim(),
        facility: {
          displayName: v.displayName.trim(),
          ownerOrganization: v.owner ? `organizations/${v.owner}` : '',
          operatorOrganization: v.operator ? `organizations/${v.operator}` : '',
          funder: v.funder.trim(), address: v.address.trim(), timeZone: v.timeZone.trim(),
          accessPolicy: { allowMembers: v.members, allowNonMembers: v.nonMembers, allowForeign: v.foreign },
        },
      }, (r) => inventory.createFacility(r));
      setV((o) => ({ ...o, id: '', displayName: '', funder: '', address: '' }));
      onDone(f);
    });
  }
  const orgOptions = orgs.map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName}</option>);
  return (
    <details class="card">
      <summary>{t('admin.fac.new')}</summary>
      <form class="form-grid" onSubmit={(e) => void submit(e)} data-testid="facility-form">
        <label class="field">{t('admin.fac.id')}<input name="facilityId" value={v.id} onInput={(e) => set({ id: (e.target as HTMLInputElement).value })} /></label>
        <label class="field">{t('admin.fac.displayName')}<input name="displayName" value={v.displayName} onInput={(e) => set({ displayName: (e.target as HTMLInputElement).value })} /></label>
        <label class="field">{t('admin.fac.owner')}
          <select name="owner" value={v.owner} onChange={(e) => set({ owner: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('admin.choose')}</option>{orgOptions}
          </select>
        </label>
        <label class="field">{t('admin.fac.operator')}
          <select name="operator" value={v.operator} onChange={(e) => set({ operator: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('admin.fac.sameAsOwner')}</option>{orgOptions}
          </select>
        </label>
        <label class="field">{t('admin.fac.timeZone')}
          <input name="timeZone" list="admin-zones" value={v.timeZone} onInput={(e) => set({ timeZone: (e.target as HTMLInputElement).value })} />
          <datalist id="admin-zones">{ZONES.map((z) => <option key={z} value={z} />)}</datalist>
        </label>
        <label class="field">{t('admin.fac.funder')}<input name="funder" value={v.funder} onInput={(e) => set({ funder: (e.target as HTMLInputElement).value })} /></label>
        <label class="field wide">{t('admin.fac.address')}<input name="address" value={v.address} onInput={(e) => set({ address: (e.target as HTMLInputElement).value })} /></label>
        <fieldset class="full"><legend>{t('admin.fac.policy')}</legend>
          <label class="check"><input type="checkbox" checked={v.members} onChange={(e) => set({ members: (e.target as HTMLInputElement).checked })} />{t('admin.fac.members')}</label>
          <label class="check"><input type="checkbox" checked={v.nonMembers} onChange={(e) => set({ nonMembers: (e.target as HTMLInputElement).checked })} />{t('admin.fac.nonMembers')}</label>
          <label class="check"><input type="checkbox" checked={v.foreign} onChange={(e) => set({ foreign: (e.target as HTMLInputElement).checked })} />{t('admin.fac.foreignOrgs')}</label>
        </fieldset>
        <div class="form-actions"><button type="submit" class="primary" disabled={busy}>{t('admin.fac.create')}</button></div>
        <Refusal err={err} />
      </form>
    </details>
  );
}

type ModeInit = MessageInitShape<typeof ModeOfferingSchema>;

interface Rules {
  minBlockH: string; maxBlockH: string; noticeH: string; qualificationDays: string; approval: boolean;
  leaseMinDays: string; leaseMaxDays: string; deposit: string;
  entryId: string; entryName: string; entryUnit: number; entryMinutes: string;
}

// Simple rules: a few numbers a person chooses, the rest the consortium's
// usual values (shown in the form's note).
function slotRules(r: Rules, onSite: boolean) {
  return {
    minBlock: hours(Number(r.minBlockH)), maxBlock: hours(Number(r.maxBlockH)),
    memberHorizon: hours(24 * 60), nonMemberHorizon: hours(24 * 14), minNotice: hours(Number(r.noticeH)),
    buffer: hours(0.5), approvalThreshold: hours(24 * 7), noShowGrace: hours(0.5), lateCancelNotice: hours(24),
    billingBasis: BillingBasis.GREATER_OF_RESERVED_AND_ACTUAL, billingUnit: hours(0.25), minimumCharge: hours(1),
    missedFeeBps: 5000, lateCancelFeeBps: 2500, qualificationValidityDays: onSite ? Number(r.qualificationDays) : 0,
  };
}

const DEFAULT_RULES: Rules = { minBlockH: '1', maxBlockH: '12', noticeH: '2', qualificationDays: '90', approval: false, leaseMinDays: '7', leaseMaxDays: '180', deposit: '', entryId: '', entryName: '', entryUnit: ServiceUnit.PER_SAMPLE, entryMinutes: '45' };

// A mode with the simple rules (LEASE: lease rules, the others slot rules).
function defaultOffering(m: number, r: Rules, currency: string): ModeInit {
  return m === SharingMode.LEASE
    ? {
      mode: m, approvalRequired: true,
      leaseRules: {
        minTermDays: Number(r.leaseMinDays), maxTermDays: Number(r.leaseMaxDays), handoverBuffer: hours(24), returnBuffer: hours(48),
        deposit: r.deposit.trim() ? { currencyCode: currency, amountMinor: parseMoney(r.deposit, currency)!.amountMinor } : undefined,
        rateBasis: LeaseRateBasis.PER_DAY, countedHoursPerDay: 8, horizon: hours(24 * 180),
      },
    }
    : { mode: m, approvalRequired: r.approval, slotRules: slotRules(r, m === SharingMode.ON_SITE) };
}

function ModePicker({ modes, set }: { modes: number[]; set: (m: number[]) => void }) {
  return (
    <fieldset class="full"><legend>{t('admin.instr.modes')}</legend>
      {values(SharingMode).map((m) => (
        <label class="check" key={m}>
          <input type="checkbox" name={`mode-${SharingMode[m]}`} checked={modes.includes(m)}
            onChange={(e) => set((e.target as HTMLInputElement).checked ? [...modes, m].sort() : modes.filter((x) => x !== m))} />
          {label('SharingMode', SharingMode, m)}
        </label>
      ))}
    </fieldset>
  );
}

function NewInstrument({ facilities, orgs, facility, onDone }: { facilities: Facility[]; orgs: Organization[]; facility: string; onDone: (i: Instrument) => void }) {
  const mutate = useRequestId();
  const [v, setV] = useState({ id: '', displayName: '', facility, owner: '', category: '', value: '', currency: 'CNY', daily: '8' });
  const [modes, setModes] = useState<number[]>([SharingMode.ON_SITE]);
  const [r, setR] = useState<Rules>(DEFAULT_RULES);
  const { busy, error: err, run } = useAction();
  const set = (p: Partial<typeof v>) => setV((o) => ({ ...o, ...p }));
  const setRule = (p: Partial<Rules>) => setR((o) => ({ ...o, ...p }));
  const fac = facilities.find((f) => idOf(f.name) === v.facility);
  const owner = v.owner || idOf(fac?.ownerOrganization);

  const [checked, setChecked] = useState(false);
  const valueBad = !amountOk(v.value, v.currency.trim().toUpperCase());
  const depositBad = modes.includes(SharingMode.LEASE) && !amountOk(r.deposit, v.currency.trim().toUpperCase(), true);
  async function submit(e: Event) {
    e.preventDefault();
    setChecked(true);
    if (valueBad || depositBad) {
      (e.currentTarget as HTMLFormElement).querySelector<HTMLInputElement>(valueBad ? '[name=value]' : '[name=deposit]')?.focus();
      return;
    }
    await run(async () => {
      const offered: ModeInit[] = modes.map((m) => defaultOffering(m, r, v.currency.trim().toUpperCase()));
      const catalogue = modes.includes(SharingMode.TECHNICAL_SERVICE) && r.entryId.trim()
        ? [{ entryId: r.entryId.trim(), displayName: r.entryName.trim(), unit: r.entryUnit, instrumentTimePerUnit: hours(Number(r.entryMinutes) / 60) }]
        : [];
      const i = await mutate('createInstrument', {
        instrumentId: v.id.trim(),
        instrument: {
          displayName: v.displayName.trim(),
          facility: v.facility ? `facilities/${v.facility}` : '',
          ownerOrganization: owner ? `organizations/${owner}` : '',
          category: v.category.trim(),
          originalValue: { currencyCode: v.currency.trim().toUpperCase(), amountMinor: parseMoney(v.value, v.currency.trim().toUpperCase())!.amountMinor },
          dailyAvailableHours: Number(v.daily) || 0,
          modes: offered,
          serviceCatalogue: catalogue,
        },
      }, (r) => inventory.createInstrument(r));
      setV((o) => ({ ...o, id: '', displayName: '' }));
      setChecked(false);
      onDone(i);
    });
  }
  const slotModes = modes.some((m) => m !== SharingMode.LEASE);
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="instrument-form">
      <h2 class="full">{t('admin.instr.new')}</h2>
      <label class="field">{t('admin.instr.id')}<input name="instrumentId" value={v.id} autoComplete="off" onInput={(e) => set({ id: (e.target as HTMLInputElement).value })} />
        <span class="muted small">{t('admin.idHint')}</span></label>
      <label class="field">{t('admin.instr.displayName')}<input name="displayName" value={v.displayName} onInput={(e) => set({ displayName: (e.target as HTMLInputElement).value })} /></label>
      <label class="field">{t('admin.instr.facility')}
        <select name="facility" value={v.facility} onChange={(e) => set({ facility: (e.target as HTMLSelectElement).value, owner: '' })}>
          <option value="">{t('admin.choose')}</option>
          {facilities.map((f) => <option key={f.name} value={idOf(f.name)}>{f.displayName}</option>)}
        </select>
      </label>
      <label class="field">{t('admin.instr.owner')}
        <select name="owner" value={owner} onChange={(e) => set({ owner: (e.target as HTMLSelectElement).value })}>
          <option value="">{t('admin.choose')}</option>
          {orgs.map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName}</option>)}
        </select>
      </label>
      <label class="field">{t('admin.instr.category')}<input name="category" value={v.category} placeholder="electron-microscopy" onInput={(e) => set({ category: (e.target as HTMLInputElement).value })} /></label>
      <label class="field">{t('admin.instr.value')}
        <span class="row nowrap">
          <input name="value" inputMode="decimal" aria-required="true" value={v.value} size={12} aria-invalid={checked && valueBad}
            aria-describedby={checked && valueBad ? 'instr-value-note' : undefined} onInput={(e) => set({ value: (e.target as HTMLInputElement).value })} />
          <input name="currency" aria-label={t('admin.currency')} value={v.currency} size={4} maxLength={3} onInput={(e) => set({ currency: (e.target as HTMLInputElement).value })} />
        </span>
        <AmountNote show={checked && valueBad} currency={v.currency.trim().toUpperCase()} id="instr-value-note" />
      </label>
      <label class="field">{t('admin.instr.dailyHours')}<input name="dailyHours" type="number" min={1} max={24} value={v.daily} onInput={(e) => set({ daily: (e.target as HTMLInputElement).value })} /></label>
      <ModePicker modes={modes} set={setModes} />
      {slotModes && (
        <fieldset class="full form-grid"><legend>{t('admin.instr.slotRules')}</legend>
          <label class="field">{t('admin.instr.minBlock')}<input name="minBlock" type="number" step="0.25" value={r.minBlockH} onInput={(e) => setRule({ minBlockH: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.maxBlock')}<input name="maxBlock" type="number" step="0.25" value={r.maxBlockH} onInput={(e) => setRule({ maxBlockH: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.notice')}<input name="notice" type="number" step="0.5" value={r.noticeH} onInput={(e) => setRule({ noticeH: (e.target as HTMLInputElement).value })} /></label>
          {modes.includes(SharingMode.ON_SITE) && (
            <label class="field">{t('admin.instr.qualificationDays')}<input name="qualificationDays" type="number" value={r.qualificationDays} onInput={(e) => setRule({ qualificationDays: (e.target as HTMLInputElement).value })} /></label>
          )}
          <label class="check"><input type="checkbox" checked={r.approval} onChange={(e) => setRule({ approval: (e.target as HTMLInputElement).checked })} />{t('admin.instr.approval')}</label>
          <p class="muted small full">{t('admin.instr.slotDefaults')}</p>
        </fieldset>
      )}
      {modes.includes(SharingMode.LEASE) && (
        <fieldset class="full form-grid"><legend>{t('admin.instr.leaseRules')}</legend>
          <label class="field">{t('admin.instr.leaseMin')}<input type="number" value={r.leaseMinDays} onInput={(e) => setRule({ leaseMinDays: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.leaseMax')}<input type="number" value={r.leaseMaxDays} onInput={(e) => setRule({ leaseMaxDays: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.deposit', { currency: v.currency })}<input name="deposit" inputMode="decimal" value={r.deposit} aria-invalid={checked && depositBad}
            aria-describedby={checked && depositBad ? 'instr-deposit-note' : undefined} onInput={(e) => setRule({ deposit: (e.target as HTMLInputElement).value })} />
            <AmountNote show={checked && depositBad} currency={v.currency.trim().toUpperCase()} id="instr-deposit-note" /></label>
          <p class="muted small full">{t('admin.instr.leaseDefaults')}</p>
        </fieldset>
      )}
      {modes.includes(SharingMode.TECHNICAL_SERVICE) && (
        <fieldset class="full form-grid"><legend>{t('admin.instr.catalogue')}</legend>
          <label class="field">{t('admin.instr.entryId')}<input name="entryId" value={r.entryId} placeholder="analysis" onInput={(e) => setRule({ entryId: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.entryName')}<input name="entryName" value={r.entryName} onInput={(e) => setRule({ entryName: (e.target as HTMLInputElement).value })} /></label>
          <label class="field">{t('admin.instr.entryUnit')}
            <select value={String(r.entryUnit)} onChange={(e) => setRule({ entryUnit: Number((e.target as HTMLSelectElement).value) })}>
              {values(ServiceUnit).map((u) => <option key={u} value={String(u)}>{label('ServiceUnit', ServiceUnit, u)}</option>)}
            </select>
          </label>
          <label class="field">{t('admin.instr.entryMinutes')}<input type="number" value={r.entryMinutes} onInput={(e) => setRule({ entryMinutes: (e.target as HTMLInputElement).value })} /></label>
        </fieldset>
      )}
      <div class="form-actions"><button type="submit" class="primary" disabled={busy}>{t('admin.instr.create')}</button></div>
      <Refusal err={err} />
    </form>
  );
}

// The mode whose rules form is open after the panel is drawn again, and
// whether it was just saved.
export interface RulesOpen { mode: number; saved: boolean }

// The panel's own fields as typed.
interface DetailsForm { displayName: string; category: string; daily: string; value: string; modes: number[] }
const detailsForm = (i: Instrument): DetailsForm => ({
  displayName: i.displayName, category: i.category, daily: String(i.dailyAvailableHours), value: moneyText(i.originalValue),
  modes: i.modes.map((m) => m.mode).sort(),
});

// The edit panel. It shows the newest instrument it knows: the one a save
// here answered, or the list's when that is read again (after "Reload the
// current version"). Every part keeps its unsaved edits across that
// (useDraft), says so, and closing the panel or leaving the screen with
// unsaved edits asks first (leave.ts).
function EditInstrument({ inst: listed, orgs, rules, onRules, onDone, onClose }: {
  inst: Instrument; orgs: Organization[] | undefined; rules: RulesOpen | undefined; onRules: (r: RulesOpen) => void;
  onDone: (i: Instrument, msg: Worded) => void; onClose: () => void;
}) {
  const mutate = useRequestId();
  const [inst, setInst] = useState(listed);
  useEffect(() => { if (listed.etag !== inst.etag) setInst(listed); }, [listed]);
  const d = useDraft(inst, detailsForm, (mine, base, theirs) => rebase(mine, base, theirs));
  const { f: v, f0: v0, src: read } = d;
  const cur = read.originalValue?.currencyCode || 'CNY';
  const [state, setState] = useState(0);
  const [reason, setReason] = useState('');
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => { box.current?.scrollIntoView({ block: 'nearest' }); box.current?.querySelector('h2')?.focus({ preventScroll: true }); }, [inst.name]);
  const { busy, error: err, setError: setErr, run } = useAction();
  const set = (p: Partial<DetailsForm>) => d.setF((o) => ({ ...o, ...p }));
  const paths = [
    v.displayName !== v0.displayName ? 'display_name' : '',
    v.category !== v0.category ? 'category' : '',
    v.daily !== v0.daily ? 'daily_available_hours' : '',
    v.value !== v0.value ? 'original_value' : '',
    v.modes.join(',') !== v0.modes.join(',') ? 'modes' : '',
  ].filter(Boolean);
  const [checked, setChecked] = useState(false);
  const valueBad = paths.includes('original_value') && !amountOk(v.value, cur);
  // Which parts have unsaved edits: the modes' rules blocks say so.
  const [dirtyModes, setDirtyModes] = useState<number[]>([]);
  const onDirty = useCallback((mode: number, dirty: boolean) => setDirtyModes((x) => {
    if (dirty === x.includes(mode)) return x;
    return dirty ? [...x, mode] : x.filter((m) => m !== mode);
  }), []);
  const unsavedParts = [
    paths.length ? t('admin.instr.details') : '',
    ...inst.modes.filter((o) => dirtyModes.includes(o.mode)).map((o) => label('SharingMode', SharingMode, o.mode)),
  ].filter(Boolean);
  useUnsaved(unsavedParts.length ? t('admin.instr.leaveUnsaved', { name: inst.displayName, parts: unsavedParts.join(t('admin.rules.sum.sep')) }) : undefined);
  const saved = (i: Instrument, msg: Worded) => { setInst(i); onDone(i, msg); };
  // After the panel's own Save or Set state, whose button may be disabled now.
  const focusTitle = () => box.current?.querySelector('h2')?.focus({ preventScroll: true });
  async function save(e: Event) {
    e.preventDefault();
    setChecked(true);
    if (valueBad) { (e.currentTarget as HTMLFormElement).querySelector<HTMLInputElement>('[name=value]')?.focus(); return; }
    // A mode no longer offered takes its rules block, and the block's
    // unsaved edits, with it: ask first (as closing the panel does).
    const dropped = inst.modes.filter((o) => !v.modes.includes(o.mode) && dirtyModes.includes(o.mode));
    if (dropped.length && !window.confirm(t('admin.instr.dropUnsavedRules', {
      name: inst.displayName, modes: listText(dropped.map((o) => label('SharingMode', SharingMode, o.mode))),
    }))) return;
    const sent = v;
    await run(async () => {
      const i = await mutate('updateInstrument', {
        instrument: {
          name: inst.name, etag: inst.etag, displayName: v.displayName.trim(), category: v.category.trim(),
          dailyAvailableHours: Number(v.daily) || 0,
          originalValue: paths.includes('original_value') ? { currencyCode: cur, amountMinor: parseMoney(v.value, cur)!.amountMinor } : inst.originalValue,
          // Offered modes keep their rules; a newly offered one gets the simple rules.
          modes: v.modes.map((m) => inst.modes.find((o) => o.mode === m) ?? defaultOffering(m, DEFAULT_RULES, cur)),
        },
        updateMask: { paths },
      }, (r) => inventory.updateInstrument(r));
      d.saved(i, sent);
      setChecked(false);
      if (rules) onRules({ ...rules, saved: false });
      saved(i, () => t('admin.instr.saved', { name: i.displayName || idOf(i.name) }));
      focusTitle();
    });
  }
  async function setInstrumentState(e: Event) {
    e.preventDefault();
    await run(async () => {
      const i = await mutate('setInstrumentState', { name: inst.name, state, reason: reason.trim(), etag: inst.etag }, (r) => inventory.setInstrumentState(r));
      setState(0);
      setReason('');
      if (rules) onRules({ ...rules, saved: false });
      saved(i, () => t('admin.instr.stateSet', { name: i.displayName || idOf(i.name), state: label('InstrumentState', InstrumentState, i.state) }));
      focusTitle();
    });
  }
  return (
    <div class="card" data-testid="instrument-edit" ref={box}>
      <h2 tabIndex={-1}>{t('admin.instr.edit', { name: inst.displayName })}</h2>
      <form class="form-grid" onSubmit={(e) => void save(e)}>
        <label class="field">{t('admin.instr.displayName')}<input name="displayName" value={v.displayName} onInput={(e) => set({ displayName: (e.target as HTMLInputElement).value })} /></label>
        <label class="field">{t('admin.instr.category')}<input name="category" value={v.category} onInput={(e) => set({ category: (e.target as HTMLInputElement).value })} /></label>
        <label class="field">{t('admin.instr.dailyHours')}<input name="dailyHours" type="number" value={v.daily} onInput={(e) => set({ daily: (e.target as HTMLInputElement).value })} /></label>
        <label class="field">{t('admin.instr.valueIn', { currency: cur })}<input name="value" inputMode="decimal" value={v.value} aria-invalid={checked && valueBad}
          aria-describedby={checked && valueBad ? 'edit-value-note' : undefined} onInput={(e) => set({ value: (e.target as HTMLInputElement).value })} />
          <AmountNote show={checked && valueBad} currency={cur} id="edit-value-note" /></label>
        <ModePicker modes={v.modes} set={(modes) => set({ modes })} />
        <p class="muted small full">{t('admin.instr.modesEditHint')}</p>
        <div class="form-actions">
          <button type="submit" class="primary" disabled={busy || paths.length === 0}>{t('admin.save')}</button>
          <button type="button" onClick={() => { if (mayLeave()) onClose(); }}>{t('admin.close')}</button>
          {paths.length > 0 && <span class="unsaved-note" data-testid="details-unsaved">{t('admin.rules.unsaved')}</span>}
        </div>
      </form>
      <section class="rules-section" aria-labelledby="rules-title" data-testid="instrument-rules">
        <h3 id="rules-title">{t('admin.rules.title')}</h3>
        <p class="muted small">{t('admin.rules.hint')}</p>
        {inst.modes.map((o, i) => (
          <ModeRules key={o.mode} inst={inst} index={i} orgs={orgs} open={rules?.mode === o.mode} saved={rules?.mode === o.mode && rules.saved}
            onDirty={onDirty}
            onDone={(next, mode) => {
              onRules({ mode, saved: next !== undefined });
              if (next) saved(next, () => t('admin.rules.saved', { mode: label('SharingMode', SharingMode, mode), name: next.displayName || idOf(next.name) }));
              else onDone(inst, '');
            }} />
        ))}
      </section>
      <form class="form-grid state-form" onSubmit={(e) => void setInstrumentState(e)} data-testid="instrument-state">
        <h3 class="full">{t('admin.instr.setState')}</h3>
        <label class="field">{t('admin.instr.newState')}
          <select name="state" value={String(state)} onChange={(e) => setState(Number((e.target as HTMLSelectElement).value))}>
            <option value="0">{t('admin.choose')}</option>
            {values(InstrumentState).map((s) => <option key={s} value={String(s)}>{label('InstrumentState', InstrumentState, s)}</option>)}
          </select>
        </label>
        <label class="field wide">{t('admin.orgs.reason')}<input name="reason" value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} /></label>
        <p class="muted small full">{t('admin.instr.stateHint')}</p>
        <div class="form-actions"><button type="submit" class={state === InstrumentState.RETIRED ? 'danger' : 'primary'} disabled={busy}>{t('admin.instr.applyState')}</button></div>
      </form>
      <Refusal err={err} etagNote={t('admin.etagKept')} onReload={() => { setErr(undefined); onDone(inst, ''); }} />
    </div>
  );
}

function modeList(i: Instrument): string {
  return listText(i.modes.map((m: ModeOffering) => label('SharingMode', SharingMode, m.mode)));
}

export default function Instruments({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const facility = params['facility'] ?? '';
  const owner = params['owner'] ?? '';
  const facilities = useLoad(allFacilities, []);
  const orgs = useLoad(() => allOrganizations(), []);
  const instruments = useLoad(() => allInstruments({
    facility: facility ? `facilities/${facility}` : '', ownerOrganization: owner ? `organizations/${owner}` : '',
  }), [facility, owner]);
  const [editing, setEditing] = useState<string>();
  const [rules, setRules] = useState<RulesOpen>();
  const [msg, setMsg] = useWorded();
  const orgName = (n: string) => orgs.data?.find((o) => o.name === n)?.displayName ?? idOf(n);
  const facName = (n: string) => facilities.data?.find((f) => f.name === n)?.displayName ?? idOf(n);
  const edited = instruments.data?.find((i) => i.name === editing);
  return (
    <section class="admin">
      <h1>{t('admin.instr.title')}</h1>
      <StatusBox testid="done">{msg}</StatusBox>
      <h2>{t('admin.fac.title')}</h2>
      <Loading load={facilities} />
      {facilities.data && (
        <div class="table-wrap">
          <table class="stack" data-testid="facilities">
            <thead><tr>
              <th>{t('admin.fac.displayName')}</th><th>{t('admin.fac.owner')}</th><th>{t('admin.fac.operator')}</th>
              <th>{t('admin.fac.timeZone')}</th><th>{t('admin.fac.policy')}</th><th>{t('admin.fac.funder')}</th>
            </tr></thead>
            <tbody>
              {facilities.data.map((f) => (
                <tr key={f.name} data-testid={`facility-${idOf(f.name)}`}>
                  <td><a href={`#/admin/instruments?facility=${idOf(f.name)}`}>{f.displayName}</a><div class="muted small">{idOf(f.name)}</div></td>
                  <td>{orgName(f.ownerOrganization)}</td>
                  <td>{orgName(f.operatorOrganization || f.ownerOrganization)}</td>
                  <td data-testid="time-zone">{zoneOr(f.timeZone)}</td>
                  <td>{policyText(f)}</td>
                  <td>{f.funder || '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {isAdmin() && orgs.data && (
        <NewFacility orgs={orgs.data} onDone={(f) => { setMsg(() => t('admin.fac.created', { name: f.displayName || idOf(f.name) })); facilities.reload(); }} />
      )}

      <h2>{t('admin.instr.list')}</h2>
      <div class="row card" role="search">
        <label class="field">{t('admin.instr.facility')}
          <select name="filterFacility" value={facility} onChange={(e) => setQuery({ facility: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('admin.all')}</option>
            {(facilities.data ?? []).map((f) => <option key={f.name} value={idOf(f.name)}>{f.displayName}</option>)}
          </select>
        </label>
        <label class="field">{t('admin.instr.owner')}
          <select name="filterOwner" value={owner} onChange={(e) => setQuery({ owner: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('admin.all')}</option>
            {(orgs.data ?? []).map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName}</option>)}
          </select>
        </label>
      </div>
      <Loading load={instruments} />
      {instruments.data && instruments.data.length === 0 && <p class="muted">{t('admin.instr.none')}</p>}
      {instruments.data && instruments.data.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="instruments">
            <thead><tr>
              <th>{t('admin.instr.displayName')}</th><th>{t('admin.instr.facility')}</th><th>{t('admin.instr.owner')}</th>
              <th>{t('admin.instr.category')}</th><th>{t('admin.instr.modes')}</th><th>{t('admin.instr.state')}</th>
              <th class="num">{t('admin.instr.dailyHoursShort')}</th><th class="num">{t('admin.instr.valueShort')}</th>
              <th><span class="sr-only">{t('admin.actions')}</span></th>
            </tr></thead>
            <tbody>
              {instruments.data.map((i) => (
                <tr key={i.name} data-testid={`instrument-${idOf(i.name)}`}>
                  <td>{i.displayName}<div class="muted small">{idOf(i.name)}</div></td>
                  <td>{facName(i.facility)}</td>
                  <td>{orgName(i.ownerOrganization)}</td>
                  <td>{categoryLabel(i.category)}<div class="muted small">{i.category}</div></td>
                  <td>{modeList(i)}</td>
                  <td data-testid="state"><span class={`pill state-${InstrumentState[i.state]}`}>{label('InstrumentState', InstrumentState, i.state)}</span></td>
                  <td class="num">{i.dailyAvailableHours}</td>
                  <td class="num">{money(i.originalValue)}</td>
                  <td><div class="actions">
                    <a href={`#/admin/rates?instrument=${idOf(i.name)}`}>{t('admin.instr.rates')}</a>
                    {isAdmin() && <button type="button" onClick={() => {
                      if (i.name !== editing && !mayLeave()) return;
                      setMsg(''); setRules(undefined); setEditing(i.name);
                    }} aria-label={t('admin.instr.editLabel', { name: i.displayName })}>{t('admin.edit')}</button>}
                  </div></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {isAdmin() && edited && (
        <EditInstrument key={edited.name} inst={edited} orgs={orgs.data} rules={rules} onRules={setRules}
          onClose={() => setEditing(undefined)}
          onDone={(_, m) => { setMsg(m); instruments.reload(); }} />
      )}
      {isAdmin() && facilities.data && orgs.data && (
        <NewInstrument facilities={facilities.data} orgs={orgs.data} facility={facility}
          onDone={(i) => { setMsg(() => t('admin.instr.created', { name: i.displayName || idOf(i.name) })); instruments.reload(); }} />
      )}
    </section>
  );
}
