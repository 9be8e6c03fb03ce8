// #/billing/webhooks/:id?org=ID: one webhook: its facts, enable / disable,
// a new signing secret (shown once), delete; its deliveries (all, or only
// the dead letters) with replay.
import { useState } from 'preact/hooks';
import { Webhook_State, WebhookDelivery_State, type Webhook, type WebhookDelivery } from '../../../../gen/labshare/notify/v1/webhooks_pb';
import { webhooks } from '../../api';
import { lang, t } from '../../i18n';
import { listAll } from '../../names';
import { go, href } from '../../nav';
import { hasRole, session } from '../../session';
import { useSignal } from '../../signal';
import { ColumnHeads, ErrorBox, Loading, StatusBox, useAction, useLoad, useRequestId } from '../../ui';
import { idOf, isSet, SecretBox, shortType, when } from './common';
import { StateBadge, webhookOrg } from './webhooks';

const FILTERS = ['all', 'DEAD', 'PENDING', 'DELIVERED'] as const;

export default function WebhookScreen({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  useSignal(session);
  const org = webhookOrg(params);
  const name = `${org}/webhooks/${params.id ?? ''}`;
  const back = href('#/billing/webhooks', { org: hasRole('CONSORTIUM_ADMIN') ? idOf(org) : undefined });
  const hook = useLoad(() => webhooks.getWebhook({ name }), [name]);
  const filter = (FILTERS as readonly string[]).includes(params.show ?? '') ? params.show! : 'all';
  const deliveries = useLoad(() => listAll(async (pageToken) => {
    const states = filter === 'all' ? [] : [WebhookDelivery_State[filter as 'DEAD']];
    const r = await webhooks.listWebhookDeliveries({ parent: name, pageSize: 100, pageToken, states });
    return { items: r.deliveries, next: r.nextPageToken };
  }, 10), [name, filter]);
  const act = useAction();
  const mutate = useRequestId();
  const [confirm, setConfirm] = useState<'rotate' | 'delete'>();
  const [secret, setSecret] = useState<string>();
  const [deleted, setDeleted] = useState(false);

  const w = hook.data;
  const setState = (wh: Webhook, state: Webhook_State) => act.run(
    () => mutate('updateWebhook', { webhook: { name: wh.name, state, etag: wh.etag }, updateMask: { paths: ['state'] } }, (r) => webhooks.updateWebhook(r)),
    () => t(state === Webhook_State.ENABLED ? 'notify.wh.enabled' : 'notify.wh.disabledNow'),
  ).then((r) => { if (r) { hook.reload(); deliveries.reload(); } });
  const rotate = (wh: Webhook) => act.run(
    () => mutate('rotateWebhookSecret', { name: wh.name, etag: wh.etag }, (r) => webhooks.rotateWebhookSecret(r)),
    () => t('notify.wh.rotated'),
  ).then((r) => { if (r) { setConfirm(undefined); setSecret(r.secret); hook.reload(); } });
  const remove = (wh: Webhook) => act.run(
    () => mutate('deleteWebhook', { name: wh.name, etag: wh.etag }, (r) => webhooks.deleteWebhook(r)),
    () => t('notify.wh.deleted'),
  ).then((r) => { if (r) { setConfirm(undefined); setDeleted(true); } });

  return (
    <section>
      <p><a href={back}>← {t('notify.wh.back')}</a></p>
      <h1>{t('notify.wh.one')}</h1>
      {w && <p class="notify-url-big" data-testid="webhook-url-shown">{w.url}</p>}
      <Loading load={hook} />
      {deleted ? <StatusBox testid="webhook-status">{act.done}</StatusBox> : w && (
        <>
          {w.description && <p>{w.description}</p>}
          <dl class="notify-facts" data-testid="webhook-facts">
            <dt>{t('notify.wh.facts.state')}</dt><dd><StateBadge w={w} /></dd>
            <dt>{t('notify.wh.facts.failures')}</dt><dd>{w.consecutiveFailures}</dd>
            <dt>{t('notify.wh.facts.lastError')}</dt><dd>{w.lastError || t('notify.none')}</dd>
            <dt>{t('notify.wh.facts.lastAttempt')}</dt><dd>{when(w.lastAttemptTime)}</dd>
            <dt>{t('notify.wh.facts.lastSuccess')}</dt><dd>{when(w.lastSuccessTime)}</dd>
            <dt>{t('notify.wh.facts.secretTime')}</dt><dd>{when(w.secretTime)}</dd>
            <dt>{t('notify.wh.facts.creator')}</dt><dd>{idOf(w.creator) || t('notify.none')}</dd>
            <dt>{t('notify.wh.events')}</dt>
            <dd class="notify-mono">{w.eventTypes.map(shortType).join(', ')}</dd>
          </dl>
          <div class="notify-actions">
            {w.state === Webhook_State.ENABLED
              ? <button type="button" disabled={act.busy} data-testid="webhook-disable" onClick={() => void setState(w, Webhook_State.DISABLED)}>{t('notify.wh.disable')}</button>
              : <button type="button" class="primary" disabled={act.busy} data-testid="webhook-enable" onClick={() => void setState(w, Webhook_State.ENABLED)}>{t('notify.wh.enable')}</button>}
            <button type="button" aria-expanded={confirm === 'rotate'} data-testid="webhook-rotate"
              onClick={() => setConfirm(confirm === 'rotate' ? undefined : 'rotate')}>{t('notify.wh.rotate')}</button>
            <button type="button" aria-expanded={confirm === 'delete'} data-testid="webhook-delete"
              onClick={() => setConfirm(confirm === 'delete' ? undefined : 'delete')}>{t('notify.wh.delete')}</button>
          </div>
          {confirm && (
            <div class="card" role="group" aria-label={t(confirm === 'rotate' ? 'notify.wh.rotate' : 'notify.wh.delete')}>
              <p>{t(confirm === 'rotate' ? 'notify.wh.confirmRotate' : 'notify.wh.confirmDelete')}</p>
              <div class="notify-actions">
                <button type="button" class={confirm === 'delete' ? 'danger' : 'primary'} disabled={act.busy} data-testid={`webhook-confirm-${confirm}`}
                  onClick={() => void (confirm === 'rotate' ? rotate(w) : remove(w))}>
                  {t(confirm === 'rotate' ? 'notify.wh.yesRotate' : 'notify.wh.yesDelete')}
                </button>
                <button type="button" onClick={() => setConfirm(undefined)}>{t('notify.cancel')}</button>
              </div>
            </div>
          )}
          <ErrorBox error={act.error} />
          <StatusBox testid="webhook-status">{act.done}</StatusBox>
          {secret && <SecretBox testid="webhook-secret" label={t('notify.wh.secret')} value={secret} note={t('notify.wh.secretNote')} />}

          <h2>{t('notify.wh.deliveries')}</h2>
          <label class="field" style="max-width:260px">
            <span>{t('notify.wh.show')}</span>
            <select data-testid="delivery-filter" value={filter}
              onChange={(e) => go(`#/billing/webhooks/${params.id ?? ''}`, { org: params.org, show: (e.target as HTMLSelectElement).value })}>
              {FILTERS.map((f) => <option key={f} value={f}>{t(`notify.wh.filter.${f}`)}</option>)}
            </select>
          </label>
          <Loading load={deliveries} />
          {deliveries.data && (deliveries.data.length === 0 ? <p class="muted" data-testid="deliveries-empty">{t('notify.wh.noDeliveries')}</p> : (
            <div class="table-wrap">
              <table class="notify-stack" data-testid="deliveries">
                <ColumnHeads prefix="notify.wh.d." cols={['event', 'time', 'state', '#attempts', 'last', 'actions']} />
                <tbody>
                  {deliveries.data.map((d) => (
                    <DeliveryRow key={d.name} d={d} enabled={w.state === Webhook_State.ENABLED}
                      onReplayed={() => { deliveries.reload(); }} />
                  ))}
                </tbody>
              </table>
            </div>
          ))}
        </>
      )}
    </section>
  );
}

function DeliveryRow({ d, enabled, onReplayed }: { d: WebhookDelivery; enabled: boolean; onReplayed: () => void }) {
  useSignal(lang);
  const act = useAction();
  const mutate = useRequestId();
  const id = idOf(d.name);
  const state = WebhookDelivery_State[d.state];
  const cls = d.state === WebhookDelivery_State.DELIVERED ? 'ok' : d.state === WebhookDelivery_State.DEAD ? 'bad' : 'warn';
  const canReplay = enabled && (d.state === WebhookDelivery_State.DEAD || d.state === WebhookDelivery_State.DELIVERED);
  const replay = () => act.run(() => mutate('replayWebhookDelivery', { name: d.name }, (r) => webhooks.replayWebhookDelivery(r)),
    () => t('notify.wh.replayed', { id })).then((r) => { if (r) onReplayed(); });
  return (
    <tr data-testid={`delivery-${id}`}>
      <td data-label={t('notify.wh.d.event')}><span class="notify-mono notify-type">{shortType(d.eventType)}</span><div class="muted notify-mono">{d.eventId}</div></td>
      <td data-label={t('notify.wh.d.time')}>{when(d.eventTime)}</td>
      <td data-label={t('notify.wh.d.state')}>
        <span class={`notify-badge ${cls}`} data-testid="delivery-state">{t(`notify.wh.d.state.${state}`)}</span>
        {d.state === WebhookDelivery_State.PENDING && isSet(d.nextAttemptTime) && <div class="muted">{t('notify.wh.d.next', { when: when(d.nextAttemptTime) })}</div>}
        {d.replays > 0 && <div class="muted">{t('notify.wh.d.replays', { n: d.replays })}</div>}
      </td>
      <td class="num" data-label={t('notify.wh.d.attempts')}>{d.attempts}</td>
      <td data-label={t('notify.wh.d.last')}>
        {when(d.lastAttemptTime)}
        {(d.lastStatusCode > 0 || d.lastError) && <div class="muted">{d.lastStatusCode > 0 ? `HTTP ${d.lastStatusCode} ` : ''}{d.lastError}</div>}
      </td>
      <td>
        {canReplay && <button type="button" disabled={act.busy} aria-label={t('notify.wh.replayLabel', { id })} data-testid="delivery-replay"
          onClick={() => void replay()}>{t('notify.wh.replay')}</button>}
        <ErrorBox error={act.error} />
        <StatusBox testid="delivery-status">{act.done}</StatusBox>
      </td>
    </tr>
  );
}
