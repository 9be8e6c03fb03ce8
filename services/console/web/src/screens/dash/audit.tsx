// #/dash/audit[?resource=instruments/sem-1&source=booking]: verify the audit
// trail (VerifyAuditChain: VERIFIED, or the first break) and read its latest
// entries (ListAuditEntries, newest first). The head of each verification is
// kept in this browser as an anchor and checked on the next run, as
// usage.proto recommends (a chain rewritten from the start then shows).
import { useState } from 'preact/hooks';
import type { AuditEntry, ListAuditEntriesResponse, VerifyAuditChainResponse } from '../../../../gen/labshare/usage/v1/usage_pb';
import { AuditEntryView, BreakKind, VerificationResult } from '../../../../gen/labshare/usage/v1/usage_pb';
import { usage } from '../../api';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { hex, int, orgName, unhex, useNames, zonedTime } from './common';
import { idOf } from '../../names';
import { ErrorBox, Loading, useLoad, ColumnHeads, useRequestId } from '../../ui';
import { go } from '../../nav';

const ANCHOR_KEY = 'labshare.dash.auditAnchor';
interface StoredAnchor { sequence: string; hash: string }

function storedAnchor(): StoredAnchor | undefined {
  try {
    const v = JSON.parse(localStorage.getItem(ANCHOR_KEY) ?? 'null') as StoredAnchor | null;
    return v && /^\d+$/.test(v.sequence) && /^[0-9a-f]{64}$/.test(v.hash) ? v : undefined;
  } catch {
    return undefined;
  }
}

const SOURCES = ['inventory', 'booking', 'billing', 'usage'] as const;

export default function Audit({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  return (
    <div class="dash">
      <h1>{t('dash.audit.title')}</h1>
      <Verify />
      <Entries resource={params.resource ?? ''} source={params.source ?? ''} />
    </div>
  );
}

function breakText(kind: BreakKind): string {
  switch (kind) {
    case BreakKind.HASH_MISMATCH: return t('dash.audit.break.hash');
    case BreakKind.LINK_MISMATCH: return t('dash.audit.break.link');
    case BreakKind.SEQUENCE_GAP: return t('dash.audit.break.gap');
    case BreakKind.UNKNOWN_ALGORITHM: return t('dash.audit.break.algorithm');
    case BreakKind.ANCHOR_MISMATCH: return t('dash.audit.break.anchor');
    case BreakKind.HEAD_SIGNATURE_INVALID: return t('dash.audit.break.signature');
    default: return t('dash.audit.break.unknown');
  }
}

function Verify() {
  const mutate = useRequestId();
  const [anchor, setAnchor] = useState(storedAnchor());
  const [useAnchor, setUseAnchor] = useState(true);
  const [state, setState] = useState<{ busy: boolean; result?: VerifyAuditChainResponse; error?: unknown }>({ busy: false });
  const run = async () => {
    setState({ busy: true });
    try {
      const anchors = useAnchor && anchor ? [{ sequence: BigInt(anchor.sequence), hash: unhex(anchor.hash) }] : [];
      const result = await mutate('verifyAuditChain', { anchors }, (r) => usage.verifyAuditChain(r));
      if (result.result === VerificationResult.VERIFIED && result.head && result.head.hash.length === 32) {
        const a = { sequence: String(result.head.sequence), hash: hex(result.head.hash) };
        localStorage.setItem(ANCHOR_KEY, JSON.stringify(a));
        setAnchor(a);
      }
      setState({ busy: false, result });
    } catch (error) {
      setState({ busy: false, error });
    }
  };
  const r = state.result;
  const verified = r?.result === VerificationResult.VERIFIED;
  return (
    <section class="card" aria-labelledby="dash-verify-h">
      <h2 id="dash-verify-h">{t('dash.audit.verify.title')}</h2>
      <p class="muted">{t('dash.audit.verify.intro')}</p>
      <div class="row">
        <button type="button" class="primary" onClick={() => void run()} disabled={state.busy} data-testid="verify">
          {state.busy ? t('dash.audit.verify.busy') : t('dash.audit.verify.run')}
        </button>
        {anchor ? (
          <label class="dash-check">
            <input type="checkbox" checked={useAnchor} onChange={(e) => setUseAnchor((e.target as HTMLInputElement).checked)} />
            {t('dash.audit.verify.anchor', { seq: anchor.sequence, hash: anchor.hash.slice(0, 12) })}
          </label>
        ) : null}
      </div>
      {state.error ? <ErrorBox error={state.error} /> : null}
      {r ? (
        <div role="status" class={verified ? 'notice dash-result' : 'error dash-result'} data-testid="verify-result">
          <p class="dash-result-head" data-testid="verify-outcome">
            {verified ? t('dash.audit.verified') : t('dash.audit.broken')}
          </p>
          <p class="dash-nomargin">
            {t('dash.audit.checked', {
              n: int(r.entriesChecked), from: String(r.startSequence), to: String(r.endSequence - 1n), anchors: int(r.anchorsChecked),
            })}
          </p>
          {r.firstBreak ? (
            <p class="dash-nomargin" data-testid="verify-break">
              {t('dash.audit.breakAt', { seq: String(r.firstBreak.sequence), kind: breakText(r.firstBreak.kind) })}
              {r.firstBreak.expectedHash.length ? (
                <><br /><small>{t('dash.audit.expected')} <code class="dash-hash">{hex(r.firstBreak.expectedHash)}</code></small></>
              ) : null}
              {r.firstBreak.actualHash.length ? (
                <><br /><small>{t('dash.audit.actual')} <code class="dash-hash">{hex(r.firstBreak.actualHash)}</code></small></>
              ) : null}
            </p>
          ) : null}
          {r.head ? (
            <p class="dash-nomargin dash-small">
              {t('dash.audit.head', { seq: String(r.head.sequence), time: zonedTime(r.head.appendTime) })}{' '}
              <code class="dash-hash">{hex(r.head.hash)}</code>
              {r.head.signature.length ? ` · ${t('dash.audit.signed', { key: r.head.keyId.slice(0, 16) })}` : ` · ${t('dash.audit.unsigned')}`}
            </p>
          ) : null}
          <p class="dash-nomargin dash-small">{t('dash.audit.verifiedAt', { time: zonedTime(r.verifyTime) })}</p>
        </div>
      ) : null}
    </section>
  );
}

// "labshare.booking.v1.BookingConfirmed" -> "Booking confirmed"
function eventWords(type: string): string {
  const last = type.slice(type.lastIndexOf('.') + 1);
  const words = last.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function Entries({ resource, source }: { resource: string; source: string }) {
  const names = useNames();
  const [res, setRes] = useState(resource);
  const [extra, setExtra] = useState<{ key: string; entries: AuditEntry[]; token: string; busy: boolean; error?: unknown }>();
  const key = `${resource}|${source}`;
  const first = useLoad(async () => {
    const r: ListAuditEntriesResponse = await usage.listAuditEntries({
      descending: true, pageSize: 25, view: AuditEntryView.BASIC,
      ...(resource ? { resource } : {}), ...(source ? { sourceServices: [source] } : {}),
    });
    setExtra({ key, entries: [], token: r.nextPageToken, busy: false });
    return r;
  }, [key]);
  const more = async () => {
    if (!extra?.token) return;
    setExtra({ ...extra, busy: true, error: undefined });
    try {
      const r = await usage.listAuditEntries({
        descending: true, pageSize: 25, view: AuditEntryView.BASIC, pageToken: extra.token,
        ...(resource ? { resource } : {}), ...(source ? { sourceServices: [source] } : {}),
      });
      setExtra({ key, entries: [...extra.entries, ...r.entries], token: r.nextPageToken, busy: false });
    } catch (error) {
      setExtra({ ...extra, busy: false, error });
    }
  };
  const entries = first.data ? [...first.data.entries, ...(extra?.key === key ? extra.entries : [])] : [];
  return (
    <section class="card" aria-labelledby="dash-entries-h" data-testid="entries">
      <h2 id="dash-entries-h">{t('dash.audit.entries.title')}</h2>
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          go('#/dash/audit', { resource: res.trim(), source });
        }}
      >
        <label class="field">
          <span>{t('dash.audit.entries.source')}</span>
          <select
            value={source}
            onChange={(e) => { go('#/dash/audit', { resource, source: (e.target as HTMLSelectElement).value }); }}
          >
            <option value="">{t('dash.audit.entries.allSources')}</option>
            {SOURCES.map((s) => <option key={s} value={s}>{t(`dash.audit.source.${s}`)}</option>)}
          </select>
        </label>
        <label class="field">
          <span>{t('dash.audit.entries.resource')}</span>
          <input value={res} placeholder="instruments/sem-1" onInput={(e) => setRes((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit">{t('dash.audit.entries.filter')}</button>
        {resource || source ? <a href="#/dash/audit">{t('dash.audit.entries.clear')}</a> : null}
      </form>
      {first.error ? <ErrorBox error={first.error} /> : null}
      {!first.data && first.loading ? <Loading /> : null}
      {first.data ? (
        <>
          {first.data.head ? (
            <p class="muted dash-small">{t('dash.audit.entries.head', { seq: String(first.data.head.sequence) })}</p>
          ) : null}
          {entries.length === 0 ? <p>{t('dash.audit.entries.none')}</p> : (
            <div class="table-wrap">
              <table>
                <ColumnHeads prefix="dash.audit.col." cols={['#sequence', 'time', 'source', 'event', 'actor', 'resources', 'hash']} />
                <tbody>
                  {entries.map((e) => (
                    <tr key={String(e.sequence)} data-testid="entry">
                      <td class="num">{String(e.sequence)}</td>
                      <td>{zonedTime(e.eventTime)}</td>
                      <td>{SOURCES.includes(e.sourceService as (typeof SOURCES)[number]) ? t(`dash.audit.source.${e.sourceService}`) : e.sourceService}</td>
                      <td title={e.eventType}>{eventWords(e.eventType)}</td>
                      <td data-testid="actor" title={[e.actor, e.actorOrganization].filter(Boolean).join(' · ')}>{e.actor ? idOf(e.actor) : '—'}
                        {e.actorOrganization ? <><br /><small class="muted">{orgName(names, e.actorOrganization)}</small></> : null}</td>
                      <td class="dash-resources">{e.resources.join(', ') || '—'}</td>
                      <td><code class="dash-hash" title={hex(e.hash)}>{hex(e.hash).slice(0, 12)}…</code></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {extra?.error ? <ErrorBox error={extra.error} /> : null}
          {extra?.token && extra.key === key ? (
            <p>
              <button type="button" onClick={() => void more()} disabled={extra.busy}>
                {extra.busy ? t('app.loading') : t('dash.audit.entries.older')}
              </button>
            </p>
          ) : null}
        </>
      ) : null}
    </section>
  );
}
