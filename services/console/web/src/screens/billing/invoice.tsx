// #/billing/invoices/:id: one invoice (GetInvoice) with its lines, each with
// the booking, lease or service order behind it (GetCharge), totals, payees,
// status; downloads as CSV (built here from the lines) and as JSON, and the
// issued document (PDF, CSV with the fapiao details) from billing. The
// consortium admin may mark an issued invoice paid (MarkInvoicePaid).
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { toJsonString, type JsonValue } from '@bufbuild/protobuf';
import { Code, ConnectError } from '@connectrpc/connect';
import { errorFromJson } from '@connectrpc/connect/protocol-connect';
import { timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import {
  ChargeUnit, FeeKind, Invoice_State, InvoiceLine_Kind, InvoiceSchema,
  type Charge, type Invoice, type InvoiceLine,
} from '../../../../gen/labshare/billing/v1/billing_pb';
import { SharingMode, type Interval, type Money } from '../../../../gen/labshare/type/v1/types_pb';
import { billing } from '../../api';
import { dateLocale, dateTime, money, percentBps, moneyText } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  BillingHeader, CONSORTIUM_TZ, date, Facts, isAdmin, periodLabel, quantity, useNames, word, type Names, useStackedTables,
} from './common';
import { StateBadge } from './invoices';
import { ErrorBox, Loaded, useLoad, ColumnHeads, useRequestId } from '../../ui';
import { idOf, listAll } from '../../names';
import { href } from '../../nav';

interface Data { invoice: Invoice; charges: Map<string, Charge>; pools: Map<string, string> }

async function load(name: string): Promise<Data> {
  const [invoice, pools] = await Promise.all([
    billing.getInvoice({ name }),
    listAll(async (pageToken) => {
      const r = await billing.listSubsidyPools({ pageSize: 200, pageToken });
      return { items: r.subsidyPools, next: r.nextPageToken };
    }).then(
      (all) => new Map(all.map((p) => [p.name, p.displayName || idOf(p.name)])),
      () => new Map<string, string>(),
    ),
  ]);
  // The booking, lease or order behind each charge line. A charge we may not
  // read (or that fails) just shows without its reference.
  const wanted = [...new Set(invoice.lines.map((l) => l.charge).filter(Boolean))];
  const charges = new Map<string, Charge>();
  for (let i = 0; i < wanted.length; i += 6) {
    await Promise.all(wanted.slice(i, i + 6).map((c) =>
      billing.getCharge({ name: c }).then((ch) => void charges.set(c, ch), () => undefined)));
  }
  return { invoice, charges, pools };
}

function reference(line: InvoiceLine, charge: Charge | undefined): string {
  if (charge?.booking) return t('billing.invoice.ref.booking', { id: idOf(charge.booking) });
  if (charge?.lease) return t('billing.invoice.ref.lease', { id: idOf(charge.lease) });
  if (charge?.serviceOrder) return t('billing.invoice.ref.order', { id: idOf(charge.serviceOrder) });
  if (charge?.project) return t('billing.invoice.ref.project', { id: idOf(charge.project) });
  if (line.deposit) return t('billing.invoice.ref.deposit', { id: idOf(line.deposit) });
  return '';
}

function item(line: InvoiceLine, pools: Map<string, string>, names: Names): string {
  const kind = word('lineKind', InvoiceLine_Kind, line.kind);
  const fee = line.feeKind ? word('feeKind', FeeKind, line.feeKind) : '';
  const mode = line.mode ? word('mode', SharingMode, line.mode) : '';
  switch (line.kind) {
    case InvoiceLine_Kind.CHARGE:
      return [fee || kind, mode].filter(Boolean).join(' · ');
    case InvoiceLine_Kind.SUBSIDY:
      // The funder as the issued invoice names it; older invoices: the pool now.
      return `${kind} · ${t('billing.invoice.pool', { pool: line.funderDisplayName || (pools.get(line.subsidyPool) ?? idOf(line.subsidyPool)) })}`;
    case InvoiceLine_Kind.DEPOSIT_RELEASE:
      return `${kind} · ${names.org(line.payeeOrganization)}`;
    default:
      return [kind, line.description].filter(Boolean).join(' · ');
  }
}

function when(iv: Interval | undefined, zone: string): string {
  if (!iv?.startTime || !iv.endTime) return '';
  const sameDay = date(iv.startTime, zone) === date(iv.endTime, zone);
  const end = sameDay
    ? new Intl.DateTimeFormat(dateLocale(), { timeZone: zone, hour: '2-digit', minute: '2-digit', hourCycle: 'h23', timeZoneName: 'short' })
      .format(timestampDate(iv.endTime))
    : dateTime(iv.endTime, zone, true);
  return `${dateTime(iv.startTime, zone)} – ${end}`;
}

function priceText(line: InvoiceLine): string {
  if (!line.unitPrice) return '';
  const per = t(`billing.per.${ChargeUnit[line.unit] ?? 'CHARGE_UNIT_UNSPECIFIED'}`);
  return per ? `${money(line.unitPrice)} ${per}` : money(line.unitPrice);
}

function quantityText(line: InvoiceLine): string {
  if (!line.quantityMilli || line.unit === ChargeUnit.UNIT_FLAT) return '';
  return `${quantity(line.quantityMilli)} ${word('unit', ChargeUnit, line.unit)}`;
}

// ------------------------------------------------------------------ downloads

// ISO 8601 in the consortium zone (UTC+08:00), for the CSV.
function iso(ts: Timestamp | undefined): string {
  if (!ts) return '';
  const d = new Date(timestampDate(ts).getTime() + 8 * 3600_000);
  return d.toISOString().replace(/\.\d{3}Z$/, '+08:00');
}

function csvCell(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function invoiceCsv(d: Data, names: Names): string {
  const inv = d.invoice;
  const rows: string[][] = [];
  rows.push([t('billing.invoice.title', { number: inv.number }), names.org(inv.payerOrganization), inv.period,
    word('invoiceState', Invoice_State, inv.state)]);
  rows.push([]);
  rows.push([
    t('billing.invoice.col.n'), t('billing.invoice.col.item'), t('billing.invoice.col.reference'),
    t('billing.invoice.col.instrument'), 'start', 'end', t('billing.invoice.col.quantity'), 'unit',
    t('billing.invoice.col.price'), t('billing.invoice.col.payee'), t('billing.invoice.col.amount'), 'currency',
  ]);
  for (const l of inv.lines) {
    rows.push([
      String(l.lineNumber), item(l, d.pools, names), reference(l, d.charges.get(l.charge)),
      l.instrument ? names.instrument(l.instrument) : '', iso(l.serviceInterval?.startTime), iso(l.serviceInterval?.endTime),
      l.quantityMilli ? String(Number(l.quantityMilli) / 1000) : '', l.unit ? word('unit', ChargeUnit, l.unit) : '',
      moneyText(l.unitPrice), names.org(l.payeeOrganization),
      moneyText(l.kind === InvoiceLine_Kind.DEPOSIT_APPLIED ? l.memoAmount : l.amount), inv.currencyCode,
    ]);
  }
  rows.push([]);
  const total = (key: string, m: Money | undefined) => rows.push([t(key), '', '', '', '', '', '', '', '', '', moneyText(m), inv.currencyCode]);
  total('billing.invoice.chargesTotal', inv.chargesTotal);
  total('billing.invoice.subsidyTotal', inv.subsidyTotal);
  total('billing.invoice.depositReleaseTotal', inv.depositReleaseTotal);
  total('billing.invoice.adjustmentsTotal', inv.adjustmentsTotal);
  total('billing.invoice.amountDue', inv.amountDue);
  total('billing.invoice.amountPaid', inv.amountPaid);
  total('billing.invoice.amountOutstanding', inv.amountOutstanding);
  return '\ufeff' + rows.map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';
}

function download(text: string, type: string, filename: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// The issued document from the gateway's download route. Fetched rather than
// linked, so that a refusal (not issued, not yours, rendering failed) shows
// its reason here instead of saving the error as a file.
async function fetchDocument(url: string, fallbackName: string): Promise<void> {
  const res = await fetch(url, { credentials: 'same-origin', headers: { accept: '*/*' } });
  if (!res.ok) {
    let body: JsonValue = null;
    try {
      body = await res.json() as JsonValue;
    } catch {
      body = null;
    }
    throw errorFromJson(body ?? { code: 'unknown', message: `HTTP ${res.status}` }, undefined,
      new ConnectError(`HTTP ${res.status}`, Code.Unknown));
  }
  const disposition = /filename="([A-Za-z0-9._-]+)"/.exec(res.headers.get('content-disposition') ?? '');
  const blob = await res.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = disposition?.[1] ?? fallbackName;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

function DocumentButton({ testid, url, filename, label, onError }: {
  testid: string; url: string; filename: string; label: string; onError: (e: unknown) => void;
}) {
  const [busy, setBusy] = useState(false);
  return (
    <button type="button" data-testid={testid} disabled={busy} aria-busy={busy}
      onClick={() => {
        setBusy(true);
        onError(undefined);
        fetchDocument(url, filename).catch(onError).finally(() => setBusy(false));
      }}>
      {label}
    </button>
  );
}

// ------------------------------------------------------------------ admin

function MarkPaid({ invoice, onDone }: { invoice: Invoice; onDone: () => void }) {
  const mutate = useRequestId();
  const [ref, setRef] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState(false);
  return (
    <section class="card">
      <h2>{t('billing.admin.title')}</h2>
      <form class="row" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true); setError(undefined);
        try {
          await mutate('markInvoicePaid', { name: invoice.name, externalReference: ref, etag: invoice.etag }, (r) => billing.markInvoicePaid(r));
          setDone(true);
          onDone();
        } catch (err) { setError(err); } finally { setBusy(false); }
      }}>
        <label class="field">
          {t('billing.admin.reference')}
          <input value={ref} onInput={(e) => setRef((e.target as HTMLInputElement).value)} />
        </label>
        <button type="submit" class="primary" disabled={busy}>{busy ? t('billing.admin.working') : t('billing.admin.markPaid')}</button>
      </form>
      {error !== undefined && <ErrorBox error={error} />}
      {done && <p class="notice" role="status">{t('billing.admin.markedPaid')}</p>}
    </section>
  );
}

// ------------------------------------------------------------------ screen

export default function InvoiceScreen({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useStackedTables();
  const names = useNames();
  const name = `invoices/${params.id ?? ''}`;
  const data = useLoad(() => load(name), [name]);
  const [docError, setDocError] = useState<unknown>();
  return (
    <section>
      <BillingHeader params={params} names={names} tabPeriod={data.data?.invoice.period} chooser={false} />
      {data.error !== undefined && <p><a href={href('#/billing/invoices', { org: params.org })}>{t('billing.invoice.backAll')}</a></p>}
      <Loaded load={data}>
        {(d) => {
          const inv = d.invoice;
          const cur = inv.currencyCode;
          const zero = (m: Money | undefined) => !m || m.amountMinor === 0n;
          return (
            <>
              <p><a href={href('#/billing/invoices', { period: inv.period, org: params.org })}>
                {t('billing.invoice.back', { period: periodLabel(inv.period) })}</a></p>
              <h1 data-testid="invoice-number">{t('billing.invoice.title', { number: inv.number || '—' })}</h1>
              <div class="card">
                <Facts items={[
                  [t('billing.invoice.payer'), names.org(inv.payerOrganization)],
                  [t('billing.invoice.period'), periodLabel(inv.period)],
                  [t('billing.invoice.status'), <StateBadge group="invoiceState" names={Invoice_State} value={inv.state} />],
                  [t('billing.invoice.amountDue'), <span class="billing-total" data-testid="invoice-total">{money(inv.amountDue)}</span>],
                  [t('billing.invoice.amountOutstanding'), money(inv.amountOutstanding)],
                  [t('billing.invoice.tax'), zero(inv.taxTotal) ? t('billing.invoice.noTax') : money(inv.taxTotal)],
                  [t('billing.invoice.issued'), dateTime(inv.issueTime, CONSORTIUM_TZ, true)],
                  [t('billing.invoice.due'), dateTime(inv.dueTime, CONSORTIUM_TZ, true)],
                  ...(inv.paidTime ? [[t('billing.invoice.paid'), dateTime(inv.paidTime, CONSORTIUM_TZ, true)] as [string, string]] : []),
                  ...(inv.voidTime ? [[t('billing.invoice.voided'), dateTime(inv.voidTime, CONSORTIUM_TZ, true)] as [string, string]] : []),
                  ...(inv.voidReason ? [[t('billing.invoice.voidReason'), inv.voidReason] as [string, string]] : []),
                  ...(inv.settlement ? [[t('billing.invoice.settlement'),
                    <a href={href('#/billing/settlements', { period: inv.period, org: params.org })}>{t('billing.tab.settlements')} {periodLabel(inv.period)}</a>] as [string, ComponentChildren]] : []),
                  ...(inv.replaces ? [[t('billing.invoice.replaces'), <a href={`#/billing/invoices/${idOf(inv.replaces)}`}>{idOf(inv.replaces)}</a>] as [string, ComponentChildren]] : []),
                  ...(inv.replacedBy ? [[t('billing.invoice.replacedBy'), <a href={`#/billing/invoices/${idOf(inv.replacedBy)}`}>{idOf(inv.replacedBy)}</a>] as [string, ComponentChildren]] : []),
                ]} />
                <div class="billing-actions">
                  <span>{t('billing.invoice.download')}:</span>
                  <button type="button" data-testid="download-csv"
                    onClick={() => download(invoiceCsv(d, names), 'text/csv;charset=utf-8', `${inv.number || 'invoice'}.csv`)}>
                    {t('billing.invoice.csv')}
                  </button>
                  <button type="button" data-testid="download-json"
                    onClick={() => download(toJsonString(InvoiceSchema, inv, { prettySpaces: 2 }), 'application/json', `${inv.number || 'invoice'}.json`)}>
                    {t('billing.invoice.json')}
                  </button>
                  <span class="muted">{t('billing.invoice.csvTimes')}</span>
                </div>
                {inv.name && (
                  <div class="billing-actions">
                    <span>{t('billing.invoice.document')}:</span>
                    {/* billing's GetInvoiceDocument through the gateway's
                        download route: the issued document with the fapiao
                        details as they were at issue. */}
                    <DocumentButton testid="download-pdf" url={`/documents/invoices/${idOf(inv.name)}.pdf`}
                      filename={`${inv.number || idOf(inv.name)}.pdf`} label={t('billing.invoice.pdf')} onError={setDocError} />
                    <DocumentButton testid="download-document-csv" url={`/documents/invoices/${idOf(inv.name)}.csv`}
                      filename={`${inv.number || idOf(inv.name)}.csv`} label={t('billing.invoice.documentCsv')} onError={setDocError} />
                  </div>
                )}
                <ErrorBox error={docError} />
              </div>

              <h2>{t('billing.invoice.lines')}</h2>
              {inv.lines.length === 0 ? <p>{t('billing.invoice.noLines')}</p> : (
                <div class="table-wrap">
                  <table class="billing-stack" data-testid="invoice-lines">
                    <ColumnHeads prefix="billing.invoice.col." cols={['n', 'item', 'reference', 'instrument', 'when', '#quantity', '#price', 'payee', '#amount']} />
                    <tbody>
                      {inv.lines.map((l) => {
                        const sub = l.kind === InvoiceLine_Kind.SUBSIDY || l.kind === InvoiceLine_Kind.DEPOSIT_APPLIED;
                        const zone = names.instrumentZone(l.instrument);
                        return (
                          <tr key={l.lineNumber} class={sub ? 'billing-sub' : undefined} data-testid="invoice-line">
                            <td>{l.lineNumber}</td>
                            <td>
                              {item(l, d.pools, names)}
                              {l.shareBps > 0 && <div class="muted">{t('billing.invoice.share', { share: percentBps(l.shareBps) })}</div>}
                              {l.kind === InvoiceLine_Kind.DEPOSIT_APPLIED && <div>{t('billing.invoice.kept', { amount: money(l.memoAmount) })}</div>}
                              {l.late && <div class="muted">{t('billing.invoice.late')}</div>}
                            </td>
                            <td>{sub ? '' : reference(l, d.charges.get(l.charge))}</td>
                            <td>{sub || !l.instrument ? '' : names.instrument(l.instrument)}</td>
                            <td>{sub ? '' : when(l.serviceInterval, zone)}</td>
                            <td class="num nowrap">{sub ? '' : quantityText(l)}</td>
                            <td class="num nowrap">{sub ? '' : priceText(l)}</td>
                            <td>{names.org(l.payeeOrganization)}</td>
                            <td class={`num nowrap${l.amount && l.amount.amountMinor < 0n ? ' billing-neg' : ''}`}>{money(l.amount)}</td>
                          </tr>
                        );
                      })}
                    </tbody>
                    <tfoot>
                      <tr><td colSpan={8}>{t('billing.invoice.chargesTotal')}</td><td class="num nowrap">{money(inv.chargesTotal)}</td></tr>
                      {!zero(inv.subsidyTotal) && <tr><td colSpan={8}>{t('billing.invoice.subsidyTotal')}</td><td class="num nowrap">{money(inv.subsidyTotal)}</td></tr>}
                      {!zero(inv.depositReleaseTotal) && <tr><td colSpan={8}>{t('billing.invoice.depositReleaseTotal')}</td><td class="num nowrap">{money(inv.depositReleaseTotal)}</td></tr>}
                      {!zero(inv.adjustmentsTotal) && <tr><td colSpan={8}>{t('billing.invoice.adjustmentsTotal')}</td><td class="num nowrap">{money(inv.adjustmentsTotal)}</td></tr>}
                      <tr data-testid="lines-total"><td colSpan={8}>{t('billing.invoice.amountDue')} ({cur})</td><td class="num nowrap">{money(inv.amountDue)}</td></tr>
                    </tfoot>
                  </table>
                </div>
              )}

              {inv.payees.length > 0 && (
                <>
                  <h2>{t('billing.invoice.payees')}</h2>
                  <div class="table-wrap">
                    <table class="billing-stack" data-testid="invoice-payees">
                      <thead><tr>
                        <th>{t('billing.invoice.col.payee')}</th>
                        <th class="num">{t('billing.invoice.payeeDue')}</th>
                        <th class="num">{t('billing.invoice.payeePaid')}</th>
                        <th class="num">{t('billing.invoice.payeeOutstanding')}</th>
                      </tr></thead>
                      <tbody>
                        {inv.payees.map((p) => (
                          <tr key={p.organization}>
                            <td>{names.org(p.organization)}</td>
                            <td class="num nowrap">{money(p.amountDue)}</td>
                            <td class="num nowrap">{money(p.amountPaid)}</td>
                            <td class="num nowrap">{money(p.amountOutstanding)}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                </>
              )}
              {isAdmin() && inv.state === Invoice_State.ISSUED && !inv.settlement && <MarkPaid invoice={inv} onDone={data.reload} />}
            </>
          );
        }}
      </Loaded>
    </section>
  );
}
