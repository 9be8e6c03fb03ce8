// Pieces every screen uses: the service's refusal (role="alert"), a success
// line (role="status"), the loading state, and loading data on route change.
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { Code, ConnectError } from '@connectrpc/connect';
import { booking, requestId } from './api';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Instrument } from '../../gen/labshare/inventory/v1/inventory_pb';
import { explain, type ShownError } from './errors';
import { lang, t } from './i18n';
import { useSignal } from './signal';

const isShown = (e: unknown): e is ShownError =>
  typeof e === 'object' && e !== null && !(e instanceof Error) && 'sentence' in e && 'code' in e;
// explain(err), unless it is explained already.
export const shown = (e: unknown): ShownError => (isShown(e) ? e : explain(e));

// The refusal: explain(err).sentence, then `children` (screen-specific notes),
// the service's own message muted, then `actions` (e.g. a reload button).
// `error` is the caught error or an already explained one.
export function ErrorBox({ error, children, actions }: { error?: unknown; children?: ComponentChildren; actions?: ComponentChildren }) {
  useSignal(lang);
  if (!error) return null;
  const e = shown(error);
  return (
    <div class="error" role="alert" data-testid="error">
      <p class="error-sentence">{e.sentence}</p>
      {children}
      {e.detail && <p class="muted error-detail">{e.detail}</p>}
      {actions}
    </div>
  );
}

// A success line; nothing when there is nothing to say.
export function StatusBox({ children, testid = 'status' }: { children?: ComponentChildren; testid?: string }) {
  if (children === undefined || children === null || children === '' || children === false) return null;
  return <div class="notice" role="status" data-testid={testid}>{children}</div>;
}

export interface Load<T> { data?: T; error?: unknown; loading: boolean; reload: () => void }

// Runs `fn` whenever deps change (or reload() is called); the latest answer
// wins, earlier data stays shown while loading again.
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): Load<T> {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ data: s.data, loading: true }));
    fn().then(
      (data) => live && setState({ data, loading: false }),
      (error: unknown) => live && setState({ error, loading: false }),
    );
    return () => { live = false; };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { ...state, reload };
}

// "Loading…"; given a load: its error, the loading line before the first
// answer, nothing once there is data.
export function Loading({ load }: { load?: Load<unknown> }) {
  useSignal(lang);
  if (load?.error) return <ErrorBox error={load.error} />;
  if (load && !(load.loading && load.data === undefined)) return null;
  return <p aria-busy="true" class="muted">{t('app.loading')}</p>;
}

// The loading state, the error, or the content.
export function Loaded<T>({ load, children }: { load: Load<T>; children: (data: T) => ComponentChildren }) {
  if (load.error) return <ErrorBox error={load.error} />;
  if (load.data === undefined) return <Loading />;
  return <>{children(load.data)}</>;
}

// A success line set once and worded at each render, so it follows a change
// of language: set(() => t('...', {...})) (a plain string stays as it is).
// The closure words its parameters too (state words, amounts, times), not
// only the sentence. `initial`: the line before anything is set.
export type Worded = string | (() => string);
const wordedOf = (x: Worded) => ({ f: typeof x === 'function' ? x : () => x });
export function useWorded(initial: Worded = ''): [string, (w: Worded) => void] {
  const [w, setW] = useState<{ f: () => string }>(() => wordedOf(initial));
  const set = useCallback((x: Worded) => setW(wordedOf(x)), []);
  return [w.f(), set];
}

// One user action: keeps the busy flag, the error (for ErrorBox) and the
// success line. A fresh request id is the caller's business. run() answers
// undefined when the action failed. The success line is `ok(answer)` worked
// out again at each render, so it follows a change of language (ok only
// words the answer: t(...) and formatting, no side effects).
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [doneText, setWorded] = useWorded();
  const setDone = useCallback((s: string | undefined) => setWorded(s ?? ''), [setWorded]);
  const done = doneText || undefined;
  async function run<T>(f: () => Promise<T>, ok?: (v: T) => string): Promise<T | undefined> {
    setBusy(true);
    setError(undefined);
    setDone(undefined);
    try {
      const v = await f();
      if (ok) setWorded(() => ok(v));
      return v;
    } catch (err) {
      setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  }
  return { busy, error, done, run, setError, setDone };
}

// A table's column headings from i18n keys `${prefix}${name}`; "#name" marks a
// numeric (right-aligned) column.
export function ColumnHeads({ prefix, cols }: { prefix: string; cols: string[] }) {
  return (
    <thead>
      <tr>
        {cols.map((c) => {
          const num = c.startsWith('#');
          const key = prefix + (num ? c.slice(1) : c);
          return <th key={key} scope="col" class={num ? 'num' : undefined}>{t(key)}</th>;
        })}
      </tr>
    </thead>
  );
}

// Whether a failed call may have been carried out anyway (the answer was lost,
// or the service asks for a retry with the same request_id): then a retry must
// present the same request_id. A definite refusal (invalid input, a failed
// precondition, ...) wrote nothing; the next press may use a new id.
function outcomeUnknown(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return true;
  return [Code.Unavailable, Code.DeadlineExceeded, Code.Unknown, Code.Internal, Code.Canceled, Code.Aborted].includes(err.code);
}

const keyOf = (what: string, req: unknown) =>
  what + ' ' + JSON.stringify(req, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() + 'n' : v));

// The request ids of one screen's (or one row's) mutations. send(what, req, f)
// calls f(req + requestId) where the id belongs to the content (`what` and the
// request without its id): pressing the button again after a network error, a
// timeout, UNAVAILABLE or CONCURRENT_MODIFICATION resends the SAME id, so the
// service answers with the first outcome instead of doing it twice (the
// AIP-155 contract in type/v1/types.proto). After a success, or when the
// content changes, the next press gets a new id. One call at a time: a press
// while a call is in flight (a double click) sends nothing and its promise
// never settles (the first press finishes the work).
export function useRequestId() {
  const ids = useRef(new Map<string, string>());
  const flying = useRef(false);
  return useCallback(async function send<Q extends object, T>(what: string, req: Q, f: (r: Q & { requestId: string }) => Promise<T>): Promise<T> {
    if (flying.current) return new Promise<T>(() => {});
    const key = keyOf(what, req);
    let id = ids.current.get(key);
    if (!id) {
      id = requestId();
      ids.current.set(key, id);
    }
    flying.current = true;
    try {
      const v = await f({ ...req, requestId: id });
      ids.current.delete(key);
      return v;
    } catch (err) {
      if (!outcomeUnknown(err)) ids.current.delete(key);
      throw err;
    } finally {
      flying.current = false;
    }
  }, []);
}

// The platform's "now" (not the browser's clock): QueryAvailability's
// earliest_start for a slot mode of the instrument, less its minimum notice.
// Undefined when the instrument offers no slot mode or the question fails.
export async function platformNow(inst: Instrument): Promise<Date | undefined> {
  const offering = inst.modes.find((m) => m.slotRules);
  if (!offering) return undefined;
  try {
    const probe = new Date();
    const r = await booking.queryAvailability({
      instrument: inst.name, mode: offering.mode,
      range: { startTime: timestampFromDate(probe), endTime: timestampFromDate(new Date(probe.getTime() + 3_600_000)) },
    });
    if (!r.earliestStart) return undefined;
    const notice = offering.slotRules?.minNotice;
    const noticeMs = notice ? Number(notice.seconds) * 1000 + Math.round(notice.nanos / 1e6) : 0;
    return new Date(timestampDate(r.earliestStart).getTime() - noticeMs);
  } catch {
    return undefined;
  }
}
