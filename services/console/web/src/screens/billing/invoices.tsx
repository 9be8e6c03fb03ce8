// #/billing/invoices?period=2027-03[&org=nanocraft]: the invoices of an
// organisation (ListInvoices; a member billing admin is narrowed to its own
// organisation as payer or payee), those it pays apart from those where it
// is owed; the consortium admin may issue an invoice.
import { useEffect, useState } from 'preact/hooks';
import type { Invoice } from '../../../../gen/labshare/billing/v1/billing_pb';
import { Invoice_State } from '../../../../gen/labshare/billing/v1/billing_pb';
import { billing } from '../../api';
import { money } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  BillingHeader, chosenOrg, date, isAdmin, isPeriod, periodLabel, useNames, word, type Names, useStackedTables,
} from './common';
import { ErrorBox, Loaded, useLoad, StatusBox, useAction, useRequestId } from '../../ui';
import { idOf } from '../../names';

async function listAll(req: { period?: string; payerOrganization?: string }): Promise<Invoice[]> {
  const out: Invoice[] = [];
  let pageToken = '';
  for (let i = 0; i < 40; i++) {
    const r = await billing.listInvoices({ ...req, pageSize: 100, pageToken });
    out.push(...r.invoices);
    pageToken = r.nextPageToken;
    if (!pageToken) break;
  }
  return out;
}

export function StateBadge({ group, names, value }: { group: string; names: Record<number, string>; value: number }) {
  return <span class={`billing-status s-${names[value] ?? ''}`} data-testid="status">{word(group, names, value)}</span>;
}

function InvoiceTable({ invoices, names, showPayer, testid }: { invoices: Invoice[]; names: Names; showPayer: boolean; testid: string }) {
  return (
    <div class="table-wrap">
      <table class="billing-stack" data-testid={testid}>
        <thead>
          <tr>
            <th>{t('billing.invoices.number')}</th>
            {showPayer && <th>{t('billing.invoices.payer')}</th>}
            <th>{t('billing.invoices.period')}</th>
            <th>{t('billing.invoices.status')}</th>
            <th class="nowrap">{t('billing.invoices.issued')}</th>
            <th class="num">{t('billing.invoices.amountDue')}</th>
            <th class="num">{t('billing.invoices.outstanding')}</th>
          </tr>
        </thead>
        <tbody>
          {invoices.map((inv) => (
            <tr key={inv.name} data-testid="invoice-row" data-invoice={inv.name}>
              <td class="nowrap">
                <a href={`#/billing/invoices/${encodeURIComponent(idOf(inv.name))}`} aria-label={t('billing.invoices.open', { number: inv.number })}>
                  {inv.number}
                </a>
              </td>
              {showPayer && <td>{names.org(inv.payerOrganization)}</td>}
              <td class="nowrap">{periodLabel(inv.period)}</td>
              <td><StateBadge group="invoiceState" names={Invoice_State} value={inv.state} /></td>
              <td class="nowrap">{date(inv.issueTime)}</td>
              <td class="num nowrap" data-testid="amount-due">{money(inv.amountDue)}</td>
              <td class="num nowrap">{money(inv.amountOutstanding)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function IssueForm({ period, names, org, onDone }: { period: string; names: Names; org: string; onDone: () => void }) {
  const mutate = useRequestId();
  const [payer, setPayer] = useState(org);
  useEffect(() => setPayer(org), [org]);
  const { busy, error, done, run } = useAction();
  return (
    <section class="card">
      <h2>{t('billing.admin.title')}</h2>
      <form class="row" onSubmit={async (e) => {
        e.preventDefault();
        const inv = await run(() => mutate('issueInvoice', { payerOrganization: payer, period }, (r) => billing.issueInvoice(r)),
          (i) => t('billing.admin.issued', { number: i.number, amount: money(i.amountDue) }));
        if (inv) onDone();
      }}>
        <label class="field">
          {t('billing.admin.issuePayer')}
          <select value={payer} onChange={(e) => setPayer((e.target as HTMLSelectElement).value)} required>
            <option value="">{t('billing.admin.choose')}</option>
            {names.orgs.map((o) => <option key={o.name} value={o.name}>{o.label}</option>)}
          </select>
        </label>
        <button type="submit" class="primary" disabled={busy || !payer}>
          {busy ? t('billing.admin.working') : `${t('billing.admin.issue')} (${periodLabel(period)})`}
        </button>
      </form>
      <ErrorBox error={error} />
      <StatusBox>{done}</StatusBox>
    </section>
  );
}

export default function Invoices({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useStackedTables();
  const names = useNames();
  const period = isPeriod(params.period) ? params.period : undefined;
  const org = chosenOrg(params, true);
  const load = useLoad(() => listAll({ period, payerOrganization: undefined }), [period]);
  const title = org ? t('billing.invoices.titleOrg', { org: names.org(org) }) : t('billing.invoices.title');
  return (
    <section>
      <h1>{title}</h1>
      <BillingHeader params={params} names={names} period={period} allowAllOrgs allowAllPeriods />
      <p class="muted">{period ? t('billing.invoices.periodNote', { period: periodLabel(period) }) : t('billing.period.all')}</p>
      <Loaded load={load}>
        {(all) => {
          // Invoices this organisation pays, and those with a line owed to it.
          const mine = org ? all.filter((i) => i.payerOrganization === org) : all;
          const owed = org ? all.filter((i) => i.payerOrganization !== org && i.payees.some((p) => p.organization === org)) : [];
          if (mine.length === 0 && owed.length === 0) return <p data-testid="empty">{t('billing.invoices.empty')}</p>;
          return (
            <>
              {(!org || mine.length > 0) && (
                <section class="card" data-testid="invoices-to-pay">
                  {org && <h2>{t('billing.invoices.toPay', { org: names.org(org) })}</h2>}
                  <InvoiceTable invoices={mine} names={names} showPayer={!org} testid="invoices" />
                </section>
              )}
              {owed.length > 0 && (
                <section class="card" data-testid="invoices-owed">
                  <h2>{t('billing.invoices.owed', { org: names.org(org) })}</h2>
                  <InvoiceTable invoices={owed} names={names} showPayer testid="invoices-owed-table" />
                </section>
              )}
            </>
          );
        }}
      </Loaded>
      {isAdmin() && period && <IssueForm period={period} names={names} org={org} onDone={load.reload} />}
      <p class="muted">{t('billing.zoneNote')}</p>
    </section>
  );
}
