// #/billing/invoicing: the organisation's fapiao details (inventory
// Organization.invoicing_details), which billing copies onto every invoice it
// issues from then on. A member's billing admin keeps its own organisation's;
// the consortium admin any organisation's (?org=). Saved with
// UpdateOrganization, update mask "invoicing_details", and the etag; the
// service checks the taxpayer id (INVALID_TAXPAYER_ID says which character).
import { useEffect, useState } from 'preact/hooks';
import type { InvoicingDetails, Organization } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { inventory } from '../../api';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { ErrorBox, Loaded, StatusBox, useAction, useLoad, useRequestId } from '../../ui';
import { BillingHeader, chosenOrg, useNames } from './common';

type Fields = Pick<InvoicingDetails, 'legalName' | 'taxpayerId' | 'registeredAddress' | 'phone' | 'bankName' | 'bankAccount'>;
const KEYS: (keyof Fields)[] = ['legalName', 'taxpayerId', 'registeredAddress', 'phone', 'bankName', 'bankAccount'];

function fieldsOf(o: Organization): Fields {
  const d = o.invoicingDetails;
  return {
    legalName: d?.legalName ?? '', taxpayerId: d?.taxpayerId ?? '', registeredAddress: d?.registeredAddress ?? '',
    phone: d?.phone ?? '', bankName: d?.bankName ?? '', bankAccount: d?.bankAccount ?? '',
  };
}

function Form({ org, onSaved }: { org: Organization; onSaved: (o: Organization) => void }) {
  const mutate = useRequestId();
  const [v, setV] = useState<Fields>(fieldsOf(org));
  const { busy, error, done, run } = useAction();
  useEffect(() => setV(fieldsOf(org)), [org.etag]);
  const changed = KEYS.some((k) => v[k] !== fieldsOf(org)[k]);
  return (
    <form class="card form-grid billing-form" data-testid="invoicing-form" onSubmit={(e) => {
      e.preventDefault();
      void run(async () => {
        const o = await mutate('updateOrganization', {
          organization: { name: org.name, etag: org.etag, invoicingDetails: { ...v, taxpayerId: v.taxpayerId.trim().toUpperCase() } },
          updateMask: { paths: ['invoicing_details'] },
        }, (r) => inventory.updateOrganization(r));
        onSaved(o);
        return o;
      }, () => t('billing.invoicing.saved'));
    }}>
      {KEYS.map((k) => (
        <label class="field" key={k}>
          {t(`billing.invoicing.${k}`)}
          <input data-testid={`invoicing-${k}`} value={v[k]} maxLength={k === 'registeredAddress' || k === 'legalName' ? 200 : 100}
            onInput={(e) => setV((o) => ({ ...o, [k]: (e.target as HTMLInputElement).value }))} />
        </label>
      ))}
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy || !changed}>{t('billing.invoicing.save')}</button>
      </div>
      <ErrorBox error={error} />
      <StatusBox>{done}</StatusBox>
    </form>
  );
}

export default function InvoicingScreen({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const names = useNames();
  const name = chosenOrg(params);
  const [fresh, setFresh] = useState<Organization>();
  const org = useLoad(() => inventory.getOrganization({ name }), [name]);
  return (
    <section>
      <h1>{t('billing.invoicing.title', { org: names.org(name) })}</h1>
      <BillingHeader params={params} names={names} chooser={true} />
      <p class="muted">{t('billing.invoicing.note')}</p>
      <Loaded load={org}>{(o) => <Form org={fresh?.name === o.name ? fresh : o} onSaved={setFresh} />}</Loaded>
    </section>
  );
}
