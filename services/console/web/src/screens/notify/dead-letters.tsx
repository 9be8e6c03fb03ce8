// #/notify/dead-letters?reason=R: mails labshare-notify could not deliver
// (NotificationService.ListDeadLetters, newest first), with replay
// (ReplayDeadLetter). Facility staff see mails to people of their own
// organisation, the consortium admin all (the service decides).
import { useState } from 'preact/hooks';
import { DeadLetter_Reason, type DeadLetter } from '../../../../gen/labshare/notify/v1/notify_pb';
import { notifications } from '../../api';
import { lang, t } from '../../i18n';
import { go } from '../../nav';
import { useSignal } from '../../signal';
import { ColumnHeads, ErrorBox, Loading, StatusBox, useAction, useLoad, useRequestId } from '../../ui';
import { idOf, isSet, kindLabel, when } from './common';

const REASONS = [DeadLetter_Reason.REASON_UNSPECIFIED, DeadLetter_Reason.DELIVERY_UNCERTAIN, DeadLetter_Reason.REJECTED,
  DeadLetter_Reason.RETRIES_EXHAUSTED];

export default function DeadLetters({ params }: { params: Record<string, string> }) {
  useSignal(lang);
  const reason = REASONS.find((r) => DeadLetter_Reason[r] === params.reason) ?? DeadLetter_Reason.REASON_UNSPECIFIED;
  const [pages, setPages] = useState(1);
  const list = useLoad(async () => {
    const out: DeadLetter[] = [];
    let pageToken = '';
    let more = false;
    for (let i = 0; i < pages; i++) {
      const r = await notifications.listDeadLetters({ pageSize: 50, pageToken, reason });
      out.push(...r.deadLetters);
      pageToken = r.nextPageToken;
      more = !!pageToken;
      if (!more) break;
    }
    return { items: out, more };
  }, [reason, pages]);

  return (
    <section>
      <h1>{t('notify.dl.title')}</h1>
      <p class="muted">{t('notify.dl.intro')}</p>
      <label class="field" style="max-width:260px">
        <span>{t('notify.dl.show')}</span>
        <select data-testid="dead-letter-reason" value={DeadLetter_Reason[reason]}
          onChange={(e) => { setPages(1); go('#/notify/dead-letters', { reason: (e.target as HTMLSelectElement).value.replace('REASON_UNSPECIFIED', '') }); }}>
          {REASONS.map((r) => (
            <option key={r} value={DeadLetter_Reason[r]}>
              {t(r === DeadLetter_Reason.REASON_UNSPECIFIED ? 'notify.dl.filter.REASON_UNSPECIFIED' : `notify.dl.reason.${DeadLetter_Reason[r]}`)}
            </option>
          ))}
        </select>
      </label>
      <p class="muted">{t('notify.zone', { zone: 'Asia/Shanghai' })}</p>
      <Loading load={list} />
      {list.data && (list.data.items.length === 0 ? <p class="muted" data-testid="dead-letters-empty">{t('notify.dl.empty')}</p> : (
        <>
          <div class="table-wrap">
            <table class="notify-stack" data-testid="dead-letters">
              <ColumnHeads prefix="notify.dl.col." cols={['when', 'kind', 'to', 'subject', 'reason', '#attempts', 'actions']} />
              <tbody>
                {list.data.items.map((d) => <DeadLetterRow key={d.name} d={d} />)}
              </tbody>
            </table>
          </div>
          {list.data.more && <button type="button" onClick={() => setPages(pages + 1)}>{t('notify.dl.more')}</button>}
        </>
      ))}
    </section>
  );
}

// A replayed mail stays in the list (with its status line) until the list is
// loaded again.
function DeadLetterRow({ d }: { d: DeadLetter }) {
  useSignal(lang);
  const act = useAction();
  const mutate = useRequestId();
  const [replayed, setReplayed] = useState(false);
  const to = d.email || idOf(d.recipient);
  const uncertain = d.reason === DeadLetter_Reason.DELIVERY_UNCERTAIN;
  const replay = () => act.run(() => mutate('replayDeadLetter', { name: d.name }, (r) => notifications.replayDeadLetter(r)),
    () => t('notify.dl.replayed', { to })).then((r) => { if (r) setReplayed(true); });
  return (
    <tr data-testid={`dead-letter-${idOf(d.name)}`}>
      <td data-label={t('notify.dl.col.when')}>{when(d.deadTime)}</td>
      <td data-label={t('notify.dl.col.kind')}>{kindLabel(d.kind)}</td>
      <td data-label={t('notify.dl.col.to')}>
        {idOf(d.recipient)}
        <div class="muted">{d.email}{d.recipientOrganization && ` · ${idOf(d.recipientOrganization)}`}</div>
      </td>
      <td data-label={t('notify.dl.col.subject')}>{d.subject}</td>
      <td data-label={t('notify.dl.col.reason')}>
        <span class={`notify-badge ${uncertain ? 'warn' : 'bad'}`} data-testid="dead-letter-reason-badge">{t(`notify.dl.reason.${DeadLetter_Reason[d.reason]}`)}</span>
        {d.lastError && <div class="muted">{d.lastError}</div>}
        {uncertain && <div class="muted">{t('notify.dl.uncertain')}</div>}
        {isSet(d.replayTime) && <div class="muted">{t('notify.dl.replayedBefore', { when: when(d.replayTime), who: idOf(d.replayedBy) })}</div>}
      </td>
      <td class="num" data-label={t('notify.dl.col.attempts')}>{d.attempts}</td>
      <td>
        {!replayed && <button type="button" disabled={act.busy} aria-label={t('notify.dl.replayLabel', { to })} data-testid="dead-letter-replay"
          onClick={() => void replay()}>{t('notify.dl.replay')}</button>}
        <ErrorBox error={act.error} />
        <StatusBox testid="dead-letter-status">{act.done}</StatusBox>
      </td>
    </tr>
  );
}
