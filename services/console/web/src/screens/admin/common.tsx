// Pieces the administration screens share: refusals and confirmations,
// words for the proto enums, loading every page of a list, times in a
// facility's zone, money input. (Candidates for the shell: Refusal, Done,
// useLoad, listAll, zonedToUtc.)
import { useCallback, useEffect, useState } from 'preact/hooks';
import { explain, type ShownError } from '../../errors';
import { hasMessage, lang, t } from '../../i18n';
import { hasRole, session } from '../../session';
import { useSignal } from '../../signal';
import './messages';
import './admin.css';

// Case-insensitive: a bearer-token session reports roles in lower case.
export const isAdmin = (): boolean =>
  hasRole('CONSORTIUM_ADMIN') || session.value.roles.some((r) => r.toUpperCase() === 'CONSORTIUM_ADMIN');

// "organizations/zju" -> "zju"
export function idOf(name: string | undefined): string {
  if (!name) return '';
  const i = name.lastIndexOf('/');
  return i >= 0 ? name.slice(i + 1) : name;
}

// A proto enum value as words: t("admin.<Enum>.<VALUE>").
export function label(enumName: string, e: Record<number, string>, v: number | undefined): string {
  const n = e[v ?? 0];
  if (!n || v === 0) return '—';
  const key = `admin.${enumName}.${n}`;
  return hasMessage(key) ? t(key) : n.toLowerCase().replace(/_/g, ' ');
}

// Every value of a proto enum but UNSPECIFIED, in declaration order.
export function values<E extends Record<string, string | number>>(e: E): number[] {
  return Object.values(e).filter((v): v is number => typeof v === 'number' && v !== 0);
}

// The service's refusal: the sentence, a sentence for the field the service
// named (INVALID_FIELD), and the service's own message below.
export function Refusal({ err, onReload }: { err: unknown; onReload?: () => void }) {
  useSignal(lang);
  if (!err) return null;
  const e: ShownError = explain(err);
  const field = e.metadata['field'];
  const fieldKey = field ? `admin.field.${field.replace(/\[\d+\]/g, '[]')}` : '';
  const fieldSentence = fieldKey && hasMessage(fieldKey) ? t(fieldKey) : '';
  return (
    <div class="error" role="alert" data-testid="error">
      <p class="refusal-sentence">{e.sentence}</p>
      {fieldSentence && <p data-testid="error-field">{fieldSentence}</p>}
      {e.reason === 'ETAG_MISMATCH' && <p>{t('admin.etagMismatch')}</p>}
      {e.detail && <p class="muted">{e.detail}</p>}
      {onReload && (e.code === 'ABORTED') && (
        <button type="button" onClick={onReload}>{t('admin.reload')}</button>
      )}
    </div>
  );
}

export function Done({ text }: { text: string }) {
  if (!text) return null;
  return <p class="notice" role="status" data-testid="done">{text}</p>;
}

export interface Loaded<T> { data?: T; err?: unknown; loading: boolean; reload: () => void }

// Runs `fn` when deps change; the latest answer wins.
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; err?: unknown; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ data: s.data, loading: true }));
    fn().then(
      (data) => live && setState({ data, loading: false }),
      (err: unknown) => live && setState({ err, loading: false }),
    );
    return () => { live = false; };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { ...state, reload };
}

export function Loading({ l }: { l: Loaded<unknown> }) {
  if (l.err) return <Refusal err={l.err} />;
  if (l.loading && l.data === undefined) return <p aria-busy="true" class="muted">{t('app.loading')}</p>;
  return null;
}

// All pages of a paginated list.
export async function listAll<T>(page: (token: string) => Promise<{ items: T[]; next: string }>): Promise<T[]> {
  const out: T[] = [];
  let token = '';
  for (let i = 0; i < 100; i++) {
    const r = await page(token);
    out.push(...r.items);
    if (!r.next) break;
    token = r.next;
  }
  return out;
}

// Replaces the route's query (keeps the path), e.g. setQuery({org: 'zju'}).
export function setQuery(params: Record<string, string | undefined>): void {
  const h = location.hash || '#/';
  const q = h.indexOf('?');
  const path = q >= 0 ? h.slice(0, q) : h;
  const sp = new URLSearchParams(q >= 0 ? h.slice(q + 1) : '');
  for (const [k, v] of Object.entries(params)) {
    if (v) sp.set(k, v); else sp.delete(k);
  }
  const s = sp.toString();
  location.hash = s ? `${path}?${s}` : path;
}

// ---------------------------------------------------------------- time zones

const DEFAULT_ZONE = 'Asia/Shanghai';
export const zoneOf = (tz: string | undefined): string => tz || DEFAULT_ZONE;

function zoneOffsetMs(utcMs: number, tz: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).formatToParts(new Date(utcMs));
  const get = (ty: string) => Number(parts.find((p) => p.type === ty)?.value ?? 0);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return asUtc - Math.floor(utcMs / 1000) * 1000;
}

// "2027-05-01T09:00" read as wall time in `tz` -> the instant.
export function zonedToUtc(local: string, tz: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(local);
  if (!m) return undefined;
  const wall = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!);
  let utc = wall - zoneOffsetMs(wall, tz);
  utc = wall - zoneOffsetMs(utc, tz);
  return new Date(utc);
}

// The instant as "YYYY-MM-DDTHH:MM" wall time in `tz` (for datetime-local).
export function utcToZoned(d: Date, tz: string): string {
  const local = new Date(d.getTime() + zoneOffsetMs(d.getTime(), tz));
  return local.toISOString().slice(0, 16);
}

// ---------------------------------------------------------------- money

// "123.45" in a currency -> minor units; undefined when not a number.
export function parseMinor(text: string, currency: string): bigint | undefined {
  const s = text.trim().replace(/,/g, '');
  if (!/^-?\d+(\.\d+)?$/.test(s)) return undefined;
  const digits = currency === 'JPY' || currency === 'KRW' ? 0 : 2;
  return BigInt(Math.round(Number(s) * 10 ** digits));
}

// Minor units -> "123.45" (for editing).
export function minorText(m: { currencyCode: string; amountMinor: bigint } | undefined): string {
  if (!m) return '';
  const digits = m.currencyCode === 'JPY' || m.currencyCode === 'KRW' ? 0 : 2;
  return (Number(m.amountMinor) / 10 ** digits).toFixed(digits);
}

export function hours(n: number): { seconds: bigint } {
  return { seconds: BigInt(Math.round(n * 3600)) };
}
