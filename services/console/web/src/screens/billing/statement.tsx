// #/billing/statement?period=2027-03[&org=nanocraft]: the organisation's
// statement for a period (GetOrganizationStatement: receivable and payable,
// opening/closing balance, entries with running balance), its balances now
// (ListBalances by counterparty), payments (ListPayments) and deposits
// (ListDeposits, as lessee and as owner).
import { useState } from 'preact/hooks';
import {
  AccountKind, Deposit_State, PostingKind,
  type Deposit, type OrganizationStatement, type Payment, type StatementLine,
} from '../../../../gen/labshare/billing/v1/billing_pb';
import { billing } from '../../api';
import { dateTime, money } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import {
  BillingHeader, chosenOrg, CONSORTIUM_TZ, currentPeriod, Facts, isPeriod, periodInterval, periodLabel, useNames, word, type Names, useStackedTables,
} from './common';
import { StateBadge } from './invoices';
import { ErrorBox, Loaded, Loading, useLoad, ColumnHeads } from '../../ui';
import { idOf, listAll } from '../../names';

function accountKind(account: string): string {
  const kebab = account.slice(account.lastIndexOf('/') + 1);
  const name = kebab.replace(/-/g, '_').toUpperCase();
  return t(`billing.account.${name in AccountKind ? name : 'ACCOUNT_KIND_UNSPECIFIED'}`);
}

function Statement({ org, period, names }: { org: string; period: string; names: Names }) {
  const first = useLoad(() => billing.getOrganizationStatement({ organization: org, interval: periodInterval(period), pageSize: 100 }), [org, period]);
  const [more, setMore] = useState<{ lines: StatementLine[]; token: string; error?: unknown; busy?: boolean }>();
  const s: OrganizationStatement | undefined = first.data;
  const lines = [...(s?.lines ?? []), ...(more?.lines ?? [])];
  const token = more ? more.token : s?.nextPageToken ?? '';
  return (
    <section class="card" data-testid="statement">
      <h2>{t('billing.tab.statement')} · {periodLabel(period)}</h2>
      <p class="muted">{t('billing.statement.intro', { period: periodLabel(period) })}</p>
      <Loaded load={first}>
        {(st) => (
          <>
            <Facts items={[
              [t('billing.statement.opening'), money(st.openingBalance)],
              [t('billing.statement.debits'), money(st.totalDebits)],
              [t('billing.statement.credits'), money(st.totalCredits)],
              [t('billing.statement.closing'), <span class="billing-total" data-testid="closing-balance">{money(st.closingBalance)}</span>],
            ]} />
            {lines.length === 0 ? <p>{t('billing.statement.empty')}</p> : (
              <div class="table-wrap">
                <table class="billing-stack" data-testid="statement-lines">
                  <ColumnHeads prefix="billing.statement.col." cols={['time', 'kind', 'account', 'counterparty', '#debit', '#credit', '#balance']} />
                  <tbody>
                    {lines.map((l, i) => (
                      <tr key={`${l.posting}-${i}`}>
                        <td class="nowrap">{dateTime(l.postingTime, CONSORTIUM_TZ, true)}</td>
                        <td>{word('posting', PostingKind, l.kind)}</td>
                        <td>{accountKind(l.account)}</td>
                        <td>{l.counterparty ? names.party(l.counterparty) : ''}</td>
                        <td class="num nowrap">{l.debit && l.debit.amountMinor !== 0n ? money(l.debit) : ''}</td>
                        <td class="num nowrap">{l.credit && l.credit.amountMinor !== 0n ? money(l.credit) : ''}</td>
                        <td class="num nowrap">{money(l.runningBalance)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
            {token && (
              <p>
                <button type="button" disabled={more?.busy} onClick={async () => {
                  setMore({ lines: more?.lines ?? [], token, busy: true });
                  try {
                    const r = await billing.getOrganizationStatement({ organization: org, interval: periodInterval(period), pageSize: 100, pageToken: token });
                    setMore({ lines: [...(more?.lines ?? []), ...r.lines], token: r.nextPageToken });
                  } catch (error) { setMore({ lines: more?.lines ?? [], token, error }); }
                }}>{t('billing.statement.more')}</button>
              </p>
            )}
            {more?.error !== undefined && <ErrorBox error={more.error} />}
          </>
        )}
      </Loaded>
    </section>
  );
}

function Balances({ org, names }: { org: string; names: Names }) {
  const load = useLoad(() => listAll(async (pageToken) => {
    const r = await billing.listBalances({ parent: org, groupByCounterparty: true, skipEmpty: true, pageSize: 200, pageToken });
    return { items: r.balances, next: r.nextPageToken };
  }).then((balances) => ({ balances })), [org]);
  return (
    <section class="card" data-testid="balances">
      <h2>{t('billing.balances.title')}</h2>
      <Loaded load={load}>
        {(r) => r.balances.length === 0 ? <p>{t('billing.balances.empty')}</p> : (
          <div class="table-wrap">
            <table class="billing-stack">
              <ColumnHeads prefix="billing.balances.col." cols={['account', 'counterparty', '#debits', '#credits', '#balance']} />
              <tbody>
                {r.balances.map((b, i) => (
                  <tr key={`${b.account}-${b.counterparty}-${i}`}>
                    <td>{word('account', AccountKind, b.kind)}</td>
                    <td>{b.counterparty ? names.party(b.counterparty) : ''}</td>
                    <td class="num nowrap">{money(b.debitTotal)}</td>
                    <td class="num nowrap">{money(b.creditTotal)}</td>
                    <td class="num nowrap">{money(b.balance)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
    </section>
  );
}

function allPayments(org: string): Promise<Payment[]> {
  return listAll(async (pageToken) => {
    const r = await billing.listPayments({ organization: org, pageSize: 100, pageToken });
    return { items: r.payments, next: r.nextPageToken };
  });
}

function Payments({ org, names }: { org: string; names: Names }) {
  const load = useLoad(() => allPayments(org), [org]);
  const party = names.party;
  return (
    <section class="card" data-testid="payments">
      <h2>{t('billing.payments.title')}</h2>
      <Loaded load={load}>
        {(ps) => ps.length === 0 ? <p>{t('billing.payments.empty')}</p> : (
          <div class="table-wrap">
            <table class="billing-stack">
              <ColumnHeads prefix="billing.payments.col." cols={['time', 'direction', 'from', 'to', '#amount', 'for', 'reference']} />
              <tbody>
                {ps.map((p) => (
                  <tr key={p.name} data-testid="payment-row">
                    <td class="nowrap">{dateTime(p.paidTime ?? p.createTime, CONSORTIUM_TZ, true)}</td>
                    <td>{p.payer === org ? t('billing.payments.paid') : t('billing.payments.received')}</td>
                    <td>{party(p.payer)}</td>
                    <td>{party(p.payee)}</td>
                    <td class="num nowrap">{money(p.amount)}</td>
                    <td>
                      {p.invoice && <a href={`#/billing/invoices/${idOf(p.invoice)}`}>{t('billing.payments.forInvoice')} {idOf(p.invoice)}</a>}
                      {p.settlement && <span>{t('billing.payments.forTransfer', { n: p.transferIndex })}</span>}
                    </td>
                    <td>{p.externalReference || p.note}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
    </section>
  );
}

async function deposits(org: string): Promise<Deposit[]> {
  const [a, b] = await Promise.all([
    listAll(async (pageToken) => {
      const r = await billing.listDeposits({ lesseeOrganization: org, pageSize: 200, pageToken });
      return { items: r.deposits, next: r.nextPageToken };
    }),
    listAll(async (pageToken) => {
      const r = await billing.listDeposits({ ownerOrganization: org, pageSize: 200, pageToken });
      return { items: r.deposits, next: r.nextPageToken };
    }),
  ]);
  const seen = new Map<string, Deposit>();
  for (const d of [...a, ...b]) seen.set(d.name, d);
  return [...seen.values()];
}

function Deposits({ org, names }: { org: string; names: Names }) {
  const load = useLoad(() => deposits(org), [org]);
  return (
    <section class="card" data-testid="deposits">
      <h2>{t('billing.deposits.title')}</h2>
      <Loaded load={load}>
        {(ds) => ds.length === 0 ? <p>{t('billing.deposits.empty')}</p> : (
          <div class="table-wrap">
            <table class="billing-stack">
              <ColumnHeads prefix="billing.deposits.col." cols={['lease', 'instrument', 'owner', 'lessee', '#amount', '#held', '#applied', '#released', 'state']} />
              <tbody>
                {ds.map((d) => (
                  <tr key={d.name} data-testid="deposit-row">
                    <td>{idOf(d.lease)}</td>
                    <td>{names.instrument(d.instrument)}</td>
                    <td>{names.org(d.ownerOrganization)}</td>
                    <td>{names.org(d.lesseeOrganization)}</td>
                    <td class="num nowrap">{money(d.amount)}</td>
                    <td class="num nowrap">{money(d.heldAmount)}</td>
                    <td class="num nowrap">{money(d.appliedAmount)}</td>
                    <td class="num nowrap">{money(d.releasedAmount)}</td>
                    <td><StateBadge group="depositState" names={Deposit_State} value={d.state} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Loaded>
    </section>
  );
}

export default function StatementScreen({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useStackedTables();
  const names = useNames();
  const period = isPeriod(params.period) ? params.period : currentPeriod();
  const org = chosenOrg(params);
  return (
    <section>
      <h1>{t('billing.statement.title', { org: names.org(org) })}</h1>
      <BillingHeader params={params} names={names} period={period} />
      {!org ? <Loading /> : (
        <>
          <Statement key={`${org}-${period}`} org={org} period={period} names={names} />
          <Balances org={org} names={names} />
          <Payments org={org} names={names} />
          <Deposits org={org} names={names} />
        </>
      )}
      <p class="muted">{t('billing.zoneNote')}</p>
    </section>
  );
}
