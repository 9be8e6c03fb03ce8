// #/settings/notifications: the signed-in person's mail settings
// (NotificationService.Get/UpdateNotificationSettings): language and time
// zone of the mails, immediate or daily digest, and which kinds are off.
// Legal notices are shown ticked and cannot be unticked.
import { useEffect, useState } from 'preact/hooks';
import { NotificationKind, NotificationSettings_Delivery, type NotificationSettings } from '../../../../gen/labshare/notify/v1/notify_pb';
import { notifications } from '../../api';
import { lang, t } from '../../i18n';
import { session } from '../../session';
import { useSignal } from '../../signal';
import { ErrorBox, Loading, StatusBox, useAction, useLoad, useRequestId } from '../../ui';
import { isSet, KIND_GROUPS, kindLabel, LEGAL_NOTICES, PersonalHeader, when } from './common';

const DELIVERIES = [NotificationSettings_Delivery.IMMEDIATE, NotificationSettings_Delivery.DAILY_DIGEST];

function zones(): string[] {
  const f = (Intl as unknown as { supportedValuesOf?: (k: string) => string[] }).supportedValuesOf;
  const list = f ? f('timeZone') : [];
  return list.includes('UTC') ? list : ['UTC', ...list];
}

export default function NotificationSettingsScreen() {
  useSignal(lang);
  const s = useSignal(session);
  const name = `${s.user ?? ''}/notificationSettings`;
  const load = useLoad(() => notifications.getNotificationSettings({ name }), [name]);
  const save = useAction();
  const mutate = useRequestId();
  const [language, setLanguage] = useState('');
  const [zone, setZone] = useState('');
  const [delivery, setDelivery] = useState(NotificationSettings_Delivery.IMMEDIATE);
  const [off, setOff] = useState<Set<NotificationKind>>(new Set());
  const [etag, setEtag] = useState('');
  const [current, setCurrent] = useState<NotificationSettings>();

  const take = (v: NotificationSettings) => {
    setCurrent(v);
    setLanguage(v.language);
    setZone(v.timeZone);
    setDelivery(v.delivery === NotificationSettings_Delivery.DAILY_DIGEST ? v.delivery : NotificationSettings_Delivery.IMMEDIATE);
    setOff(new Set(v.disabledKinds.filter((k) => !LEGAL_NOTICES.has(k))));
    setEtag(v.etag);
  };
  useEffect(() => { if (load.data) take(load.data); }, [load.data]);

  const toggle = (k: NotificationKind, on: boolean) => {
    const next = new Set(off);
    if (on) next.delete(k);
    else next.add(k);
    setOff(next);
  };

  const submit = () => {
    const disabledKinds = [...off].sort((a, b) => a - b);
    void save.run(() => mutate('updateNotificationSettings', {
      settings: { name, language, timeZone: zone, delivery, disabledKinds, etag },
      updateMask: { paths: ['language', 'time_zone', 'delivery', 'disabled_kinds'] },
    }, (r) => notifications.updateNotificationSettings(r)), () => t('notify.settings.saved')).then((v) => { if (v) take(v); });
  };

  const allZones = zones();
  return (
    <section>
      <PersonalHeader title={t('notify.settings.title')} />
      <p class="muted">{t('notify.settings.intro')}</p>
      <Loading load={load} />
      {current && (
        <form onSubmit={(e) => { e.preventDefault(); submit(); }} data-testid="notify-settings">
          <div class="card">
            <h2>{t('notify.settings.general')}</h2>
            <div class="notify-form">
              <label class="field">
                <span>{t('notify.settings.language')}</span>
                <select data-testid="notify-language" value={language} onChange={(e) => setLanguage((e.target as HTMLSelectElement).value)}>
                  <option value="">{t('notify.settings.language.default')}</option>
                  <option value="zh-CN" lang="zh-CN">中文</option>
                  <option value="en" lang="en">English</option>
                </select>
              </label>
              <label class="field">
                <span>{t('notify.settings.zone')}</span>
                <select data-testid="notify-zone" value={zone} onChange={(e) => setZone((e.target as HTMLSelectElement).value)}>
                  <option value="">{t('notify.settings.zone.default')}</option>
                  {zone && !allZones.includes(zone) && <option value={zone}>{zone}</option>}
                  {allZones.map((z) => <option key={z} value={z}>{z}</option>)}
                </select>
              </label>
              <fieldset class="notify-set wide">
                <legend>{t('notify.settings.delivery')}</legend>
                <div class="notify-radios">
                  {DELIVERIES.map((d) => (
                    <label key={d} class="notify-check">
                      <input type="radio" name="delivery" checked={delivery === d} data-testid={`notify-delivery-${NotificationSettings_Delivery[d]}`}
                        onChange={() => setDelivery(d)} />
                      {t(`notify.settings.delivery.${NotificationSettings_Delivery[d]}`)}
                    </label>
                  ))}
                </div>
                <p class="muted notify-legal">{t('notify.settings.delivery.note')}</p>
              </fieldset>
            </div>
          </div>
          <div class="card">
            <h2>{t('notify.settings.kinds')}</h2>
            <p class="muted">{t('notify.settings.kinds.intro')}</p>
            {KIND_GROUPS.map(([group, kinds]) => (
              <fieldset key={group} class="notify-set">
                <legend>{t(`notify.group.${group}`)}</legend>
                <div class="notify-checks">
                  {kinds.map((k) => {
                    const legal = LEGAL_NOTICES.has(k);
                    const id = NotificationKind[k];
                    return (
                      <label key={k} class="notify-check" data-testid={`notify-kind-${id}`}>
                        <input type="checkbox" checked={legal || !off.has(k)} disabled={legal}
                          aria-describedby={legal ? `legal-${id}` : undefined}
                          onChange={(e) => toggle(k, (e.target as HTMLInputElement).checked)} />
                        <span>
                          {kindLabel(k)}
                          {legal && <span id={`legal-${id}`} class="notify-legal"> — {t('notify.settings.legal')}</span>}
                        </span>
                      </label>
                    );
                  })}
                </div>
              </fieldset>
            ))}
          </div>
          <div class="notify-buttons">
            <button type="submit" class="primary" disabled={save.busy} data-testid="notify-save">{t('notify.settings.save')}</button>
            <span class="muted" data-testid="notify-changed">
              {isSet(current.updateTime) ? t('notify.settings.changed', { when: when(current.updateTime, zone || undefined) }) : t('notify.settings.neverChanged')}
            </span>
          </div>
          <ErrorBox error={save.error} />
          <StatusBox testid="notify-status">{save.done}</StatusBox>
        </form>
      )}
    </section>
  );
}
