// #/billing/webhooks?org=ID: an organisation's webhooks (WebhookService):
// the registered endpoints with their state, and registering a new one (URL,
// description, event types); its signing secret is shown once. A member's
// billing admin sees their own organisation; the consortium admin chooses.
import { useState } from 'preact/hooks';
import { Webhook_DisabledReason, Webhook_State, type Webhook } from '../../../../gen/labshare/notify/v1/webhooks_pb';
import { webhooks } from '../../api';
import { lang, t } from '../../i18n';
import { allOrganizations, listAll } from '../../names';
import { go, href } from '../../nav';
import { hasRole, session } from '../../session';
import { useSignal } from '../../signal';
import { ColumnHeads, ErrorBox, Loading, StatusBox, useAction, useLoad, useRequestId, useWorded } from '../../ui';
import { EVENT_GROUPS, idOf, isSet, SecretBox, shortType, tn, when } from './common';

// The organisation the view is about: ?org= for the consortium admin, else
// the caller's own.
export function webhookOrg(params: Record<string, string>): string {
  const own = session.value.organization ?? '';
  if (hasRole('CONSORTIUM_ADMIN') && params.org) return `organizations/${params.org}`;
  return own;
}

export function StateBadge({ w }: { w: Webhook }) {
  const on = w.state === Webhook_State.ENABLED;
  const why = !on && w.disabledReason ? t(`notify.wh.disabled.${Webhook_DisabledReason[w.disabledReason]}`) : '';
  return (
    <>
      <span class={`notify-badge ${on ? 'ok' : 'bad'}`} data-testid="webhook-state">{t(`notify.wh.state.${Webhook_State[w.state]}`)}</span>
      {why && <div class="muted">{why}</div>}
    </>
  );
}

export function OrgChooser({ org, path }: { org: string; path: string }) {
  const orgs = useLoad(() => allOrganizations(), []);
  if (!hasRole('CONSORTIUM_ADMIN')) return null;
  return (
    <label class="field" style="max-width:320px">
      <span>{t('notify.wh.org')}</span>
      <select data-testid="webhook-org" value={idOf(org)} onChange={(e) => go(path, { org: (e.target as HTMLSelectElement).value })}>
        {!orgs.data && <option value={idOf(org)}>{idOf(org)}</option>}
        {(orgs.data ?? []).map((o) => <option key={o.name} value={idOf(o.name)}>{o.displayName || idOf(o.name)}</option>)}
      </select>
    </label>
  );
}

export default function Webhooks({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useSignal(session);
  const org = webhookOrg(params);
  const list = useLoad(() => listAll(async (pageToken) => {
    const r = await webhooks.listWebhooks({ parent: org, pageSize: 50, pageToken });
    return { items: r.webhooks, next: r.nextPageToken };
  }), [org]);
  const create = useAction();
  const mutate = useRequestId();
  const [url, setUrl] = useState('');
  const [description, setDescription] = useState('');
  const [events, setEvents] = useState<Set<string>>(new Set());
  const [missing, setMissing] = useWorded();
  const [secret, setSecret] = useState<string>();

  const setGroup = (types: string[], on: boolean) => {
    const next = new Set(events);
    for (const ty of types) if (on) next.add(ty); else next.delete(ty);
    setEvents(next);
  };
  const submit = () => {
    if (!/^https:\/\/[^\s]+$/i.test(url.trim())) { setMissing(() => t('notify.wh.needUrl')); return; }
    if (events.size === 0) { setMissing(() => t('notify.wh.needEvents')); return; }
    setMissing('');
    setSecret(undefined);
    const webhook = { url: url.trim(), description: description.trim(), eventTypes: [...events].sort() };
    void create.run(() => mutate('createWebhook', { parent: org, webhook }, (r) => webhooks.createWebhook(r)), () => t('notify.wh.registered'))
      .then((r) => {
        if (!r) return;
        setSecret(r.secret);
        setUrl('');
        setDescription('');
        setEvents(new Set());
        list.reload();
      });
  };

  return (
    <section class="notify-page">
      <h1>{t('notify.wh.title')}</h1>
      <p class="muted">{t('notify.wh.intro')}</p>
      <OrgChooser org={org} path="#/billing/webhooks" />

      <h2>{t('notify.wh.list')}</h2>
      <Loading load={list} />
      {list.data && (list.data.length === 0 ? <p class="muted" data-testid="webhooks-empty">{t('notify.wh.empty')}</p> : (
        <div class="table-wrap">
          <table class="notify-stack" data-testid="webhooks">
            <ColumnHeads prefix="notify.wh.col." cols={['url', 'events', 'state', 'last', 'actions']} />
            <tbody>
              {list.data.map((w) => (
                <tr key={w.name} data-testid={`webhook-${idOf(w.name)}`}>
                  <td data-label={t('notify.wh.col.url')}><span class="notify-url">{w.url}</span>{w.description && <div class="muted">{w.description}</div>}</td>
                  <td data-label={t('notify.wh.col.events')}>{tn('notify.wh.eventsCount', w.eventTypes.length)}</td>
                  <td data-label={t('notify.wh.col.state')}><StateBadge w={w} /></td>
                  <td data-label={t('notify.wh.col.last')}>
                    {isSet(w.lastSuccessTime) ? t('notify.wh.lastSuccess', { when: when(w.lastSuccessTime) }) : t('notify.none')}
                    {w.consecutiveFailures > 0 && <div class="muted">{tn('notify.wh.failures', w.consecutiveFailures)}: {w.lastError}</div>}
                  </td>
                  <td>
                    <a href={href(`#/billing/webhooks/${idOf(w.name)}`, { org: hasRole('CONSORTIUM_ADMIN') ? idOf(org) : undefined })}
                      aria-label={t('notify.wh.openLabel', { url: w.url })}>{t('notify.wh.open')}</a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}

      <form class="card" onSubmit={(e) => { e.preventDefault(); submit(); }} aria-labelledby="wh-new-h" data-testid="webhook-new">
        <h2 id="wh-new-h">{t('notify.wh.new')}</h2>
        <div class="notify-form">
          <label class="field wide">
            <span>{t('notify.wh.url')}</span>
            <input type="url" data-testid="webhook-url" value={url} placeholder="https://erp.example.com/labshare" autoComplete="off"
              onInput={(e) => setUrl((e.target as HTMLInputElement).value)} />
          </label>
          <label class="field wide">
            <span>{t('notify.wh.description')}</span>
            <input data-testid="webhook-description" value={description} maxLength={200}
              onInput={(e) => setDescription((e.target as HTMLInputElement).value)} />
          </label>
          <div class="wide">
            <p><strong>{t('notify.wh.events')}</strong></p>
            {EVENT_GROUPS.map(([group, types]) => (
              <fieldset key={group} class="notify-set" data-testid={`webhook-group-${group}`}>
                <legend>{t(`notify.wh.grp.${group}`)}</legend>
                <div class="notify-actions">
                  <button type="button" onClick={() => setGroup(types, true)}
                    aria-label={`${t('notify.wh.all')}: ${t(`notify.wh.grp.${group}`)}`}>{t('notify.wh.all')}</button>
                  <button type="button" onClick={() => setGroup(types, false)}
                    aria-label={`${t('notify.wh.none')}: ${t(`notify.wh.grp.${group}`)}`}>{t('notify.wh.none')}</button>
                </div>
                <div class="notify-checks">
                  {types.map((ty) => (
                    <label key={ty} class="notify-check">
                      <input type="checkbox" checked={events.has(ty)} value={ty}
                        onChange={(e) => setGroup([ty], (e.target as HTMLInputElement).checked)} />
                      <span class="notify-mono">{shortType(ty)}</span>
                    </label>
                  ))}
                </div>
              </fieldset>
            ))}
          </div>
          {missing && <div class="error wide" role="alert" data-testid="error">{missing}</div>}
          <div class="buttons">
            <button type="submit" class="primary" disabled={create.busy} data-testid="webhook-create">{t('notify.wh.register')}</button>
          </div>
        </div>
        <ErrorBox error={create.error} />
        <StatusBox testid="webhook-status">{create.done}</StatusBox>
        {secret && <SecretBox testid="webhook-secret" label={t('notify.wh.secret')} value={secret} note={t('notify.wh.secretNote')} />}
      </form>
    </section>
  );
}
