// #/billing/settlements?period=2027-03[&org=nanocraft]: the settlements of a
// period with a position of the organisation (ListSettlements; a member
// billing admin gets them reduced to what involves its own organisation):
// the transfers it owes apart from those owed to it, paid or not, its net
// position and the gross amounts netted. The consortium admin may compute a
// settlement and record a transfer's payment.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import { Settlement_State, type Settlement, type SettlementTransfer } from '../../../../gen/labshare/billing/v1/billing_pb';
import { billing } from '../../api';
import { dateTime, money } from '../../format';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import {
  BillingHeader, chosenOrg, seesAll, CONSORTIUM_TZ, currentPeriod, Facts, isAdmin, isPeriod, periodLabel, previousPeriod, useNames, type Names, useStackedTables,
} from './common';
import { StateBadge } from './invoices';
import { ErrorBox, Loaded, useLoad, ColumnHeads, StatusBox, useAction, useRequestId } from '../../ui';
import { idOf, listAll } from '../../names';

interface Data { settlements: Settlement[]; invoices: Map<string, string> }

async function load(org: string, period: string): Promise<Data> {
  // The organisation's invoices of the period (name -> number), to link the
  // netted invoices it may open.
  const invoices = listAll(async (pageToken) => {
    const r = await billing.listInvoices({ period, pageSize: 200, pageToken });
    return { items: r.invoices, next: r.nextPageToken };
  }).then(
    (all) => new Map(all
      .filter((i) => seesAll() || i.payerOrganization === org || i.payees.some((p) => p.organization === org))
      .map((i) => [i.name, i.number])),
    () => new Map<string, string>(),
  );
  const out: Settlement[] = await listAll(async (pageToken) => {
    const r = await billing.listSettlements({ period, organization: org, pageSize: 50, pageToken });
    return { items: r.settlements, next: r.nextPageToken };
  });
  // The current computation first, superseded ones after it.
  out.sort((a, b) => Number(a.state === Settlement_State.SUPERSEDED) - Number(b.state === Settlement_State.SUPERSEDED));
  return { settlements: out, invoices: await invoices };
}

function PayButton({ s, tr, onDone }: { s: Settlement; tr: SettlementTransfer; onDone: () => void }) {
  const mutate = useRequestId();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  return (
    <>
      <button type="button" disabled={busy} onClick={async () => {
        setBusy(true); setError(undefined);
        try {
          await mutate('recordPayment', {
            payment: { payer: tr.fromOrganization, payee: tr.toOrganization, amount: tr.amount, settlement: s.name, transferIndex: tr.index },
          }, (r) => billing.recordPayment(r));
          onDone();
        } catch (err) { setError(err); } finally { setBusy(false); }
      }}>{busy ? t('billing.admin.working') : t('billing.admin.recordPayment')}</button>
      {error !== undefined && <ErrorBox error={error} />}
    </>
  );
}

function Transfers({ s, list, other, names, testid, nothing, onDone }: {
  s: Settlement; list: SettlementTransfer[]; other: (tr: SettlementTransfer) => string; names: Names; testid: string; nothing: string;
  onDone: () => void;
}) {
  if (list.length === 0) return <p data-testid={`${testid}-none`}>{nothing}</p>;
  return (
    <div class="table-wrap">
      <table class="billing-stack" data-testid={testid}>
        <ColumnHeads prefix="billing.settlements.col." cols={['from', 'to', '#amount', 'paid']} />
        <tbody>
          {list.map((tr) => (
            <tr key={tr.index} data-testid="transfer" data-counterparty={other(tr)}>
              <td>{names.org(tr.fromOrganization)}</td>
              <td>{names.org(tr.toOrganization)}</td>
              <td class="num nowrap billing-total" data-testid="transfer-amount">{money(tr.amount)}</td>
              <td>
                <span class={`billing-status s-${tr.payment ? 'paid' : 'open'}`} data-testid="transfer-paid">
                  {tr.payment ? t('billing.settlements.paid') : t('billing.settlements.open')}
                </span>
                {!tr.payment && isAdmin() && s.state === Settlement_State.COMPUTED && <div><PayButton s={s} tr={tr} onDone={onDone} /></div>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function SettlementCard({ s, org, names, invoices, onDone }: { s: Settlement; org: string; names: Names; invoices: Map<string, string>; onDone: () => void }) {
  const own = org === session.value.organization;
  const owe = s.transfers.filter((tr) => tr.fromOrganization === org);
  const owed = s.transfers.filter((tr) => tr.toOrganization === org);
  const pos = s.positions.find((p) => p.organization === org);
  const pairs = s.pairBalances.filter((p) => p.debtorOrganization === org || p.creditorOrganization === org);
  const facts: [string, ComponentChildren][] = [
    [t('billing.settlements.state'), <StateBadge group="settlementState" names={Settlement_State} value={s.state} />],
    [t('billing.settlements.computed'), dateTime(s.createTime, CONSORTIUM_TZ, true)],
  ];
  if (s.clearTime) facts.push([t('billing.settlements.cleared'), dateTime(s.clearTime, CONSORTIUM_TZ, true)]);
  return (
    <section class="card" data-testid="settlement" data-state={Settlement_State[s.state]}>
      <h2>{t('billing.settlements.heading', { period: periodLabel(s.period) })}</h2>
      <Facts items={facts} />
      <div class="billing-split">
        <div data-testid="you-owe">
          <h3>{own ? t('billing.settlements.youOwe') : t('billing.settlements.orgOwes', { org: names.org(org) })}</h3>
          <Transfers s={s} list={owe} other={(tr) => tr.toOrganization} names={names} testid="owe" onDone={onDone}
            nothing={t('billing.settlements.nothingOwe')} />
        </div>
        <div data-testid="owed-to-you">
          <h3>{own ? t('billing.settlements.owedToYou') : t('billing.settlements.owedToOrg', { org: names.org(org) })}</h3>
          <Transfers s={s} list={owed} other={(tr) => tr.fromOrganization} names={names} testid="owed" onDone={onDone}
            nothing={t('billing.settlements.nothingOwed')} />
        </div>
      </div>
      {pos && (
        <>
          <h3>{t('billing.settlements.position')}</h3>
          <Facts items={[
            [t('billing.settlements.owedTo'), money(pos.owedTo)],
            [t('billing.settlements.owedBy'), money(pos.owedBy)],
            [t('billing.settlements.net'), <span data-testid="net">{money(pos.net)}</span>],
          ]} />
        </>
      )}
      {pairs.length > 0 && (
        <>
          <h3>{t('billing.settlements.pairs')}</h3>
          <ul>
            {pairs.map((p) => (
              <li key={`${p.debtorOrganization}-${p.creditorOrganization}`}>
                {t('billing.settlements.pair', { debtor: names.org(p.debtorOrganization), creditor: names.org(p.creditorOrganization) })}
                {': '}<strong>{money(p.amount)}</strong>
                <span class="muted"> ({money(p.debtorOwes)} − {money(p.creditorOwes)})</span>
              </li>
            ))}
          </ul>
        </>
      )}
      <p class="muted">{t('billing.settlements.gross', { gross: money(s.grossTotal), transfers: money(s.transferTotal) })}</p>
      {s.invoices.length > 0 && (
        <p>
          {t('billing.settlements.invoices')}:{' '}
          {s.invoices.filter((inv) => invoices.has(inv)).map((inv, i) => (
            <span key={inv}>{i > 0 && ', '}<a href={`#/billing/invoices/${idOf(inv)}`}>{invoices.get(inv)}</a></span>
          ))}
          {s.invoices.some((inv) => !invoices.has(inv)) && (
            <span class="muted">{invoices.size > 0 && '; '}{t('billing.settlements.otherInvoices', { n: s.invoices.filter((inv) => !invoices.has(inv)).length })}</span>
          )}
        </p>
      )}
    </section>
  );
}

function Compute({ period, onDone }: { period: string; onDone: () => void }) {
  const mutate = useRequestId();
  const { busy, error, done, run } = useAction();
  return (
    <section class="card">
      <h2>{t('billing.admin.title')}</h2>
      <button type="button" class="primary" disabled={busy} onClick={async () => {
        const s = await run(() => mutate('computeSettlement', { period }, (r) => billing.computeSettlement(r)),
          (r) => t('billing.admin.computed', { n: r.transfers.length }));
        if (s) onDone();
      }}>{busy ? t('billing.admin.working') : t('billing.admin.compute', { period: periodLabel(period) })}</button>
      <ErrorBox error={error} />
      <StatusBox>{done}</StatusBox>
    </section>
  );
}

export default function Settlements({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useStackedTables();
  const names = useNames();
  // Default: the last ended period (a settlement needs an ended period).
  const period = isPeriod(params.period) ? params.period : previousPeriod(currentPeriod());
  const org = chosenOrg(params);
  const list = useLoad(() => load(org, period), [org, period]);
  return (
    <section>
      <h1>{t('billing.settlements.title', { org: names.org(org) })}</h1>
      <BillingHeader params={params} names={names} period={period} />
      <p class="muted">{t('billing.settlements.intro')}</p>
      <Loaded load={list}>
        {(d) => d.settlements.length === 0 ? <p data-testid="empty">{t('billing.settlements.empty')}</p> : (
          <>{d.settlements.map((s) => <SettlementCard key={s.name} s={s} org={org} names={names} invoices={d.invoices} onDone={list.reload} />)}</>
        )}
      </Loaded>
      {isAdmin() && <Compute period={period} onDone={list.reload} />}
    </section>
  );
}
