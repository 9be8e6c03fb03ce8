// The unsaved edits of the instrument edit panel (instruments.tsx,
// mode-rules.tsx) when the instrument is read again: after another block of
// the panel saved, or after "Reload the current version" following an
// ETAG_MISMATCH refusal (someone else changed the instrument). A block's
// form as it was first shown (`base`), as the person has it now (`mine`),
// and as the newly read instrument shows it (`theirs`) give the form to
// show: a field the person did not touch takes the newly read value; a
// field they edited keeps their edit, and when the newly read value differs
// from both, it is a conflict the block points out (the person's value is
// what a save sends). Only the person's edits differ from the new base, so
// saving still sends every untouched field exactly as read. No runtime
// imports: the console's unit tests load it under Node
// (server/test/rule-drafts.test.ts).
import type { TierHorizon } from '../../../../gen/labshare/inventory/v1/inventory_pb';

export interface TierRow { id: number; tier: string; horizon: string; orig?: TierHorizon }

// The slot rules (ON_SITE, JOINT_RESEARCH, TECHNICAL_SERVICE) as typed:
// durations as text by field (D: the SlotRules duration fields shown).
export interface SlotForm<D extends string = string> {
  approval: boolean;
  dur: Record<D, string>;
  noNonMembers: boolean;
  nonMember: string;
  tiers: TierRow[];
  basis: number;
  missed: string;
  lateFee: string;
  qualification: string;
}

// The lease rules as typed.
export interface LeaseForm { minTerm: string; maxTerm: string; handover: string; ret: string; deposit: string; basis: number; counted: string; horizon: string }

export interface Rebased<F> {
  form: F;
  // The edited fields whose newly read value differs from what the person
  // typed and from what was read before, as paths ("dur.buffer", "tiers").
  conflicts: string[];
}

type Same = (a: unknown, b: unknown) => boolean;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function plainSame(a: unknown, b: unknown): boolean {
  if (isRecord(a) && isRecord(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].every((k) => plainSame(a[k], b[k]));
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => plainSame(x, b[i]));
  return Object.is(a, b);
}

// Field by field (a nested record, such as the durations, field by field
// too; a list as one field): untouched fields from `theirs`, edited ones
// from `mine`. `same` overrides the comparison of a top-level field.
export function rebase<F extends object>(mine: F, base: F, theirs: F, same: Partial<Record<keyof F, Same>> = {}): Rebased<F> {
  const conflicts: string[] = [];
  const walk = (m: Record<string, unknown>, b: Record<string, unknown>, t: Record<string, unknown>, prefix: string,
    over: Partial<Record<string, Same>>): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(t)) {
      const eq = over[k] ?? plainSame;
      const mk = m[k], bk = b[k], tk = t[k];
      if (!over[k] && isRecord(mk) && isRecord(bk) && isRecord(tk)) {
        out[k] = walk(mk, bk, tk, `${prefix}${k}.`, {});
        continue;
      }
      if (eq(mk, bk)) { out[k] = tk; continue; }
      out[k] = mk;
      if (!eq(bk, tk) && !eq(mk, tk)) conflicts.push(`${prefix}${k}`);
    }
    return out;
  };
  const form = walk(mine as Record<string, unknown>, base as Record<string, unknown>, theirs as Record<string, unknown>, '',
    same as Partial<Record<string, Same>>) as F;
  return { form, conflicts };
}

// A tier row with neither tier nor horizon is no row.
export const blankRow = (row: TierRow): boolean => !row.tier.trim() && !row.horizon.trim();
const tierKey = (rows: TierRow[]): string => JSON.stringify(rows.filter((r) => !blankRow(r)).map((r) => [r.tier, r.horizon]));
const sameTiers: Same = (a, b) => tierKey(a as TierRow[]) === tierKey(b as TierRow[]);

// What the non-members' fields mean: no horizon (may not book), or the text.
const nonMembers = (f: SlotForm): string | null => (f.noNonMembers ? null : f.nonMember);

// The form with its blank tier rows and hidden non-member text left out:
// two forms with one key send the same.
export const slotKey = (f: SlotForm): string =>
  JSON.stringify({ ...f, nonMember: nonMembers(f), tiers: JSON.parse(tierKey(f.tiers)) as unknown });
export const leaseKey = (f: LeaseForm): string => JSON.stringify(f);

// Slot rules: the tier rows are one field (rows have no identity across
// reads: a person who changed any row keeps their list); the non-members'
// checkbox and horizon are one field.
export function rebaseSlot<F extends SlotForm>(mine: F, base: F, theirs: F): Rebased<F> {
  const r = rebase(mine, base, theirs, { tiers: sameTiers, noNonMembers: () => true, nonMember: () => true } as Partial<Record<keyof F, Same>>);
  const m = nonMembers(mine), b = nonMembers(base), t = nonMembers(theirs);
  const kept = m !== b;
  r.form.noNonMembers = kept ? mine.noNonMembers : theirs.noNonMembers;
  r.form.nonMember = kept ? mine.nonMember : theirs.nonMember;
  if (kept && b !== t && m !== t) r.conflicts.push('nonMember');
  return r;
}

export const rebaseLease = (mine: LeaseForm, base: LeaseForm, theirs: LeaseForm): Rebased<LeaseForm> => rebase(mine, base, theirs);

// ---------------------------------------------------------------- a block's draft

// One block's draft (useDraft in mode-rules.tsx): what it was read from
// (`src`: a mode's offering, or the instrument for the panel's own fields),
// its form as first shown (`f0`), as the person has it (`f`), and the edited
// fields someone else changed too.
export interface DraftState<S, F> { src: S; f0: F; f: F; conflicts: string[] }
export type Onto<F> = (mine: F, base: F, theirs: F) => Rebased<F>;

// `src` as read, nothing edited.
export function drafted<S, F>(src: S, toForm: (s: S) => F): DraftState<S, F> {
  const f0 = toForm(src);
  return { src, f0, f: f0, conflicts: [] };
}

// `src` read anew (another block saved, or "Reload the current version"):
// the edits re-based onto it; its conflicts join those already pointed out.
export function reread<S, F>(x: DraftState<S, F>, src: S, toForm: (s: S) => F, onto: Onto<F>): DraftState<S, F> {
  if (x.src === src) return x;
  const f0 = toForm(src);
  const r = onto(x.f, x.f0, f0);
  return { src, f0, f: r.form, conflicts: [...new Set([...x.conflicts, ...r.conflicts])] };
}

// The block's own save answered `saved` for the form `sent`: the form shows
// `saved` as the service keeps it, with what the person typed after the save
// started (the edits since `sent`) re-based onto it, as another block's save
// re-bases them; a field not typed in since shows the stored value. No
// conflicts: the save sent the person's values over the ones pointed out,
// and a stored value that reads differently from what was sent (the service
// keeps it its own way) is the person's own, not someone else's.
export function savedAs<S, F>(x: DraftState<S, F>, saved: S, sent: F, toForm: (s: S) => F, onto: Onto<F>): DraftState<S, F> {
  const f0 = toForm(saved);
  return { src: saved, f0, f: onto(x.f, sent, f0).form, conflicts: [] };
}
