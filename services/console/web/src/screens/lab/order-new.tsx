// Order a technical service (CreateServiceOrder) from an instrument's
// service catalogue; the order then waits for the owner's quote.
import { useEffect, useState } from 'preact/hooks';
import type { Instrument, LookupRateResponse } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { ServiceUnit } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { booking, inventory } from '../../api';
import type { ShownError } from '../../errors';
import { money } from '../../format';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import { instrumentWithZone, msTs, parseDay } from './common';
import './lab.css';
import { ErrorBox, useRequestId } from '../../ui';
import { explain } from '../../errors';
import { allInstruments, idOf } from '../../names';
import { fromWall, zoneLabel } from '../../zones';

export default function LabOrderNew({ params }: { params: Record<string, string> }) {
  const mutate = useRequestId();
  useSignal(lang);
  const s = useSignal(session);
  const [all, setAll] = useState<Instrument[]>([]);
  const [id, setId] = useState(params.instrument ?? '');
  const [inst, setInst] = useState<{ instrument: Instrument; zone: string; facility?: string }>();
  const [entry, setEntry] = useState('');
  const [rate, setRate] = useState<LookupRateResponse>();
  const [count, setCount] = useState('1');
  const [desc, setDesc] = useState('');
  const [wish, setWish] = useState('');
  const [error, setError] = useState<ShownError>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    allInstruments().then((i) => setAll(i.filter((x) => x.serviceCatalogue.length > 0 &&
      x.modes.some((m) => m.mode === SharingMode.TECHNICAL_SERVICE))), (e) => setError(explain(e)));
  }, []);
  useEffect(() => {
    if (!id) return;
    let live = true;
    instrumentWithZone(id).then((r) => {
      if (!live) return;
      setInst({ instrument: r.instrument, zone: r.zone, facility: r.facility?.displayName });
      setEntry(r.instrument.serviceCatalogue[0]?.entryId ?? '');
    }, (e) => live && setError(explain(e)));
    return () => { live = false; };
  }, [id]);
  useEffect(() => {
    if (!inst || !entry) return;
    setRate(undefined);
    inventory.lookupRate({ instrument: inst.instrument.name, mode: SharingMode.TECHNICAL_SERVICE, payerOrganization: s.organization ?? '', serviceEntryId: entry })
      .then(setRate, () => undefined);
  }, [inst, entry]);

  async function submit(e: Event) {
    e.preventDefault();
    if (!inst) return;
    setBusy(true);
    setError(undefined);
    try {
      const wishDay = parseDay(wish);
      const o = await mutate('createServiceOrder', {
        serviceOrder: {
          instrument: inst.instrument.name, serviceEntryId: entry, sampleCount: Number(count), sampleDescription: desc,
          requestedCompletionTime: wishDay === undefined ? undefined : msTs(fromWall(wishDay + 17 * 3_600_000, inst.zone)),
        },
      }, (r) => booking.createServiceOrder(r));
      location.hash = `#/lab/orders/${idOf(o.name)}?created=1`;
    } catch (err) {
      setError(explain(err));
    } finally {
      setBusy(false);
    }
  }
  const e = inst?.instrument.serviceCatalogue.find((x) => x.entryId === entry);
  return (
    <section>
      <h1>{t('lab.orderNew.title')}</h1>
      <form class="card" onSubmit={submit} data-testid="order-form">
        <div class="row">
          <label class="field">{t('lab.search.instrument')}
            <select value={id} required onChange={(ev) => setId((ev.target as HTMLSelectElement).value)} data-testid="order-instrument">
              <option value="">—</option>
              {all.map((i) => <option key={i.name} value={idOf(i.name)}>{i.displayName} ({idOf(i.name)})</option>)}
            </select>
          </label>
          {inst && (
            <label class="field">{t('lab.orderNew.entry')}
              <select value={entry} required onChange={(ev) => setEntry((ev.target as HTMLSelectElement).value)} data-testid="order-entry">
                {inst.instrument.serviceCatalogue.map((c) => <option key={c.entryId} value={c.entryId}>{c.displayName}</option>)}
              </select>
            </label>
          )}
          <label class="field">{e?.unit === ServiceUnit.PER_TEST ? t('lab.orderNew.tests') : t('lab.orderNew.samples')}
            <input type="number" min="1" step="1" value={count} required class="lab-narrow" data-testid="order-count"
              onInput={(ev) => setCount((ev.target as HTMLInputElement).value)} />
          </label>
          <label class="field">{t('lab.orderNew.wish')}
            <input type="date" value={wish} onInput={(ev) => setWish((ev.target as HTMLInputElement).value)} />
          </label>
        </div>
        {inst && (
          <p class="muted">
            {inst.facility} · {zoneLabel(inst.zone)}
            {e?.description && <><br />{e.description}</>}
            {rate?.rate?.price && <><br />{t('lab.orderNew.listPrice', { price: money(rate.rate.price) })}</>}
          </p>
        )}
        <label class="field">{t('lab.orderNew.desc')}
          <textarea rows={3} value={desc} data-testid="order-desc" onInput={(ev) => setDesc((ev.target as HTMLTextAreaElement).value)} />
        </label>
        <ErrorBox error={error} />
        <div class="row lab-actions">
          <button type="submit" class="primary" disabled={busy || !inst || !entry} data-testid="order-submit">{t('lab.orderNew.submit')}</button>
        </div>
      </form>
    </section>
  );
}
