// #/admin/rates?instrument=<id>&mode=<MODE>: an instrument's rate card,
// history included (ListRates); consortium admins add lines (CreateRate:
// lines are never edited, a later line supersedes); anybody looks up the
// line in force for a payer at a time (LookupRate). Times are the
// facility's, with its zone.
import { useEffect, useState } from 'preact/hooks';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { inventory } from '../../api';
import { dateTime, money, parseMoney } from '../../format';
import { lang, t } from '../../i18n';
import { useSignal } from '../../signal';
import { PayerClass, SharingMode } from '../../../../gen/labshare/type/v1/types_pb';
import { RateUnit, type Instrument, type LookupRateResponse, type Organization, type Rate } from '../../../../gen/labshare/inventory/v1/inventory_pb';
import { AmountNote, amountOk, isAdmin, label, Refusal, values } from './common';
import { allFacilities, allInstruments } from './instruments';
import { allOrganizations } from './organizations';
import { Loading, StatusBox, useLoad, useAction, useRequestId, platformNow, useWorded } from '../../ui';
import { idOf, listAll } from '../../names';
import { setQuery } from '../../nav';
import { dateToZonedInput, zonedInputToDate, zoneOr } from '../../zones';

const UNITS_FOR: Record<number, number[]> = {
  [SharingMode.ON_SITE]: [RateUnit.PER_HOUR],
  [SharingMode.JOINT_RESEARCH]: [RateUnit.PER_HOUR],
  [SharingMode.LEASE]: [RateUnit.RATE_PER_DAY, RateUnit.RATE_PER_MONTH],
  [SharingMode.TECHNICAL_SERVICE]: [RateUnit.RATE_PER_SAMPLE, RateUnit.RATE_PER_TEST, RateUnit.PER_HOUR],
};

export function priceText(r: Rate | undefined): string {
  if (!r) return '—';
  return t('admin.rates.perUnit', { price: money(r.price), unit: label('RateUnit', RateUnit, r.unit) });
}

function NewRate({ inst, zone, onDone }: { inst: Instrument; zone: string; onDone: (r: Rate) => void }) {
  const mutate = useRequestId();
  const currency = inst.originalValue?.currencyCode || 'CNY';
  const offered = inst.modes.map((m) => m.mode);
  const [mode, setMode] = useState<number>(offered[0] ?? SharingMode.ON_SITE);
  const [payer, setPayer] = useState<number>(PayerClass.MEMBER);
  const [tier, setTier] = useState('');
  const [unit, setUnit] = useState<number>(UNITS_FOR[offered[0] ?? SharingMode.ON_SITE]?.[0] ?? RateUnit.PER_HOUR);
  const [entry, setEntry] = useState('');
  const [price, setPrice] = useState('');
  const [from, setFrom] = useState('');
  const [note, setNote] = useState('');
  const { busy, error: err, run } = useAction();
  const units = UNITS_FOR[mode] ?? [];
  const [checked, setChecked] = useState(false);
  const priceBad = !amountOk(price, currency);
  async function submit(e: Event) {
    e.preventDefault();
    setChecked(true);
    if (priceBad) { (e.currentTarget as HTMLFormElement).querySelector<HTMLInputElement>('[name=price]')?.focus(); return; }
    await run(async () => {
      const when = from ? zonedInputToDate(from, zone) : undefined;
      const r = await mutate('createRate', {
        parent: inst.name,
        rate: {
          mode, payerClass: payer, tier: payer === PayerClass.MEMBER ? tier.trim() : '', unit,
          serviceEntryId: mode === SharingMode.TECHNICAL_SERVICE && unit !== RateUnit.PER_HOUR ? entry : '',
          price: { currencyCode: currency, amountMinor: parseMoney(price, currency)!.amountMinor },
          effectiveTime: when ? timestampFromDate(when) : undefined,
          note: note.trim(),
        },
      }, (r) => inventory.createRate(r));
      setPrice(''); setNote(''); setChecked(false);
      onDone(r);
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="rate-form">
      <h2 class="full">{t('admin.rates.new')}</h2>
      <p class="muted small full">{t('admin.rates.newHint')}</p>
      <label class="field">{t('admin.rates.mode')}
        <select name="mode" value={String(mode)} onChange={(e) => { const m = Number((e.target as HTMLSelectElement).value); setMode(m); setUnit(UNITS_FOR[m]?.[0] ?? 0); }}>
          {values(SharingMode).map((m) => (
            <option key={m} value={String(m)}>{label('SharingMode', SharingMode, m)}{offered.includes(m) ? '' : ` (${t('admin.rates.notOffered')})`}</option>
          ))}
        </select>
      </label>
      <label class="field">{t('admin.rates.payerClass')}
        <select name="payerClass" value={String(payer)} onChange={(e) => setPayer(Number((e.target as HTMLSelectElement).value))}>
          {values(PayerClass).map((p) => <option key={p} value={String(p)}>{label('PayerClass', PayerClass, p)}</option>)}
        </select>
      </label>
      {payer === PayerClass.MEMBER && (
        <label class="field">{t('admin.rates.tier')}<input name="tier" value={tier} placeholder={t('admin.rates.anyTier')} onInput={(e) => setTier((e.target as HTMLInputElement).value)} /></label>
      )}
      <label class="field">{t('admin.rates.unit')}
        <select name="unit" value={String(unit)} onChange={(e) => setUnit(Number((e.target as HTMLSelectElement).value))}>
          {units.map((u) => <option key={u} value={String(u)}>{label('RateUnit', RateUnit, u)}</option>)}
        </select>
      </label>
      {mode === SharingMode.TECHNICAL_SERVICE && unit !== RateUnit.PER_HOUR && (
        <label class="field">{t('admin.rates.entry')}
          <select name="entry" value={entry} onChange={(e) => setEntry((e.target as HTMLSelectElement).value)}>
            <option value="">{t('admin.choose')}</option>
            {inst.serviceCatalogue.map((c) => <option key={c.entryId} value={c.entryId}>{c.displayName}</option>)}
          </select>
        </label>
      )}
      <label class="field">{t('admin.rates.price', { currency })}
        <input name="price" inputMode="decimal" aria-required="true" value={price} aria-invalid={checked && priceBad}
          aria-describedby={checked && priceBad ? 'rate-price-note' : undefined} onInput={(e) => setPrice((e.target as HTMLInputElement).value)} />
        <AmountNote show={checked && priceBad} currency={currency} id="rate-price-note" />
      </label>
      <label class="field">{t('admin.rates.effectiveFrom', { zone })}
        <input name="effectiveFrom" type="datetime-local" value={from} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
        <span class="muted small">{t('admin.rates.effectiveHint')}</span>
      </label>
      <label class="field wide">{t('admin.rates.note')}<input name="note" value={note} onInput={(e) => setNote((e.target as HTMLInputElement).value)} /></label>
      <div class="form-actions"><button type="submit" class="primary" disabled={busy}>{t('admin.rates.create')}</button></div>
      <Refusal err={err} />
    </form>
  );
}

function Lookup({ inst, zone, orgs, at }: { inst: Instrument; zone: string; orgs: Organization[]; at: string }) {
  const offered = inst.modes.map((m) => m.mode);
  const [mode, setMode] = useState<number>(offered[0] ?? SharingMode.ON_SITE);
  const [payer, setPayer] = useState('');
  // The platform's now (not the browser's clock), unless the route gives a time.
  const [time, setTime] = useState(at);
  useEffect(() => {
    if (at) return;
    let live = true;
    void platformNow(inst).then((now) => { if (live && now) setTime((t0) => t0 || dateToZonedInput(now, zone)); });
    return () => { live = false; };
  }, [inst.name]);
  const [entry, setEntry] = useState('');
  const [res, setRes] = useState<LookupRateResponse>();
  const { busy, error: err, run } = useAction();
  async function submit(e: Event) {
    e.preventDefault();
    setRes(undefined);
    await run(async () => {
      const when = zonedInputToDate(time, zone);
      setRes(await inventory.lookupRate({
        instrument: inst.name, mode, payerOrganization: payer ? `organizations/${payer}` : '',
        time: when ? timestampFromDate(when) : undefined, serviceEntryId: mode === SharingMode.TECHNICAL_SERVICE ? entry : '',
      }));
    });
  }
  return (
    <form class="card form-grid" onSubmit={(e) => void submit(e)} data-testid="lookup-form">
      <h2 class="full">{t('admin.rates.lookup')}</h2>
      <label class="field">{t('admin.rates.payer')}
        <select name="payer" value={payer} onChange={(e) => setPayer((e.target as HTMLSelectElement).value)}>
          <option value="">{t('admin.choose')}</option>
          {orgs.map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName}</option>)}
        </select>
      </label>
      <label class="field">{t('admin.rates.mode')}
        <select name="mode" value={String(mode)} onChange={(e) => setMode(Number((e.target as HTMLSelectElement).value))}>
          {offered.map((m) => <option key={m} value={String(m)}>{label('SharingMode', SharingMode, m)}</option>)}
        </select>
      </label>
      {mode === SharingMode.TECHNICAL_SERVICE && (
        <label class="field">{t('admin.rates.entry')}
          <select name="entry" value={entry} onChange={(e) => setEntry((e.target as HTMLSelectElement).value)}>
            <option value="">{t('admin.rates.instrumentTime')}</option>
            {inst.serviceCatalogue.map((c) => <option key={c.entryId} value={c.entryId}>{c.displayName}</option>)}
          </select>
        </label>
      )}
      <label class="field">{t('admin.rates.at', { zone })}
        <input name="time" type="datetime-local" value={time} onInput={(e) => setTime((e.target as HTMLInputElement).value)} />
      </label>
      <div class="form-actions"><button type="submit" class="primary" disabled={busy}>{t('admin.rates.lookupButton')}</button></div>
      {res && (
        <div class="notice full" role="status" data-testid="lookup-result">
          <p><strong data-testid="lookup-price">{priceText(res.rate)}</strong></p>
          <p>
            {t('admin.rates.lookupClass', { cls: label('PayerClass', PayerClass, res.payerClass) })}
            {res.rate?.tier ? ` · ${t('admin.rates.tier')}: ${res.rate.tier}` : ''}
            {' · '}{t('admin.rates.since', { time: dateTime(res.rate?.effectiveTime, zone, true) })}
          </p>
        </div>
      )}
      <div class="full"><Refusal err={err} /></div>
    </form>
  );
}

export default function Rates({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const instruments = useLoad(() => allInstruments(), []);
  const facilities = useLoad(allFacilities, []);
  const orgs = useLoad(() => allOrganizations(), []);
  const id = params['instrument'] || idOf(instruments.data?.[0]?.name) || '';
  const modeName = params['mode'] ?? '';
  const mode = modeName ? Number(SharingMode[modeName as keyof typeof SharingMode] ?? 0) : 0;
  const rates = useLoad(async () => id ? listAll(async (pageToken) => {
    const r = await inventory.listRates({ parent: `instruments/${id}`, mode, pageSize: 200, pageToken });
    return { items: r.rates, next: r.nextPageToken };
  }) : [], [id, mode]);
  const [msg, setMsg] = useWorded();
  const inst = instruments.data?.find((i) => idOf(i.name) === id);
  const zone = zoneOr(facilities.data?.find((f) => f.name === inst?.facility)?.timeZone);
  return (
    <section class="admin">
      <h1>{t('admin.rates.title')}</h1>
      <div class="row card" role="search">
        <label class="field">{t('admin.rates.instrument')}
          <select name="instrument" value={id} onChange={(e) => { setMsg(''); setQuery({ instrument: (e.target as HTMLSelectElement).value }); }}>
            {(instruments.data ?? []).map((i) => <option key={i.name} value={idOf(i.name)}>{i.displayName} ({idOf(i.name)})</option>)}
            {!instruments.data && id && <option value={id}>{id}</option>}
          </select>
        </label>
        <label class="field">{t('admin.rates.mode')}
          <select name="filterMode" value={modeName} onChange={(e) => setQuery({ mode: (e.target as HTMLSelectElement).value })}>
            <option value="">{t('admin.all')}</option>
            {values(SharingMode).map((m) => <option key={m} value={SharingMode[m]}>{label('SharingMode', SharingMode, m)}</option>)}
          </select>
        </label>
        {inst && <p class="muted small">{t('admin.rates.zoneNote', { zone })}</p>}
      </div>
      <StatusBox testid="done">{msg}</StatusBox>
      <Loading load={instruments} />
      <Loading load={rates} />
      {rates.data && rates.data.length === 0 && <p class="muted">{t('admin.rates.none')}</p>}
      {rates.data && rates.data.length > 0 && (
        <div class="table-wrap">
          <table class="stack" data-testid="rates">
            <thead><tr>
              <th>{t('admin.rates.mode')}</th><th>{t('admin.rates.payerClass')}</th><th>{t('admin.rates.tier')}</th>
              <th>{t('admin.rates.entry')}</th><th class="num">{t('admin.rates.priceShort')}</th>
              <th>{t('admin.rates.effective')}</th><th>{t('admin.rates.note')}</th>
            </tr></thead>
            <tbody>
              {rates.data.map((r) => (
                <tr key={r.name} data-testid={`rate-${idOf(r.name)}`}>
                  <td>{label('SharingMode', SharingMode, r.mode)}</td>
                  <td>{label('PayerClass', PayerClass, r.payerClass)}</td>
                  <td>{r.tier || (r.payerClass === PayerClass.MEMBER ? t('admin.rates.anyTier') : '—')}</td>
                  <td>{r.serviceEntryId ? (inst?.serviceCatalogue.find((c) => c.entryId === r.serviceEntryId)?.displayName ?? r.serviceEntryId) : '—'}</td>
                  <td class="num" data-testid="price">{priceText(r)}</td>
                  <td>{dateTime(r.effectiveTime, zone, true)}</td>
                  <td>{r.note || '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {inst && isAdmin() && (
        <NewRate key={inst.name} inst={inst} zone={zone}
          onDone={(r) => { setMsg(() => t('admin.rates.created', { price: priceText(r) })); rates.reload(); }} />
      )}
      {inst && orgs.data && <Lookup key={inst.name} inst={inst} zone={zone} orgs={orgs.data} at={params['at'] ?? ''} />}
    </section>
  );
}
