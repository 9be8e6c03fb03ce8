// #/settings/feeds: the signed-in person's calendar feeds
// (CalendarFeedService): create a personal feed or an instrument's, copy its
// secret address (shown once, in the answer of Create and Rotate), give it a
// new address, revoke it.
import { useState } from 'preact/hooks';
import { CalendarFeed_Kind, type CalendarFeed } from '../../../../gen/labshare/notify/v1/feeds_pb';
import { feeds } from '../../api';
import { lang, t } from '../../i18n';
import { allInstruments, listAll } from '../../names';
import { session } from '../../session';
import { useSignal } from '../../signal';
import { ColumnHeads, ErrorBox, Loading, StatusBox, useAction, useLoad, useRequestId, useWorded } from '../../ui';
import { idOf, PersonalHeader, SecretBox, when } from './common';

interface Shown { feed: string; url: string }

export default function CalendarFeeds() {
  useSignal(lang);
  const s = useSignal(session);
  const parent = s.user ?? '';
  const list = useLoad(() => listAll(async (pageToken) => {
    const r = await feeds.listCalendarFeeds({ parent, pageSize: 50, pageToken });
    return { items: r.calendarFeeds, next: r.nextPageToken };
  }), [parent]);
  const instruments = useLoad(() => allInstruments(), []);
  const create = useAction();
  const mutate = useRequestId();
  const [kind, setKind] = useState(CalendarFeed_Kind.USER);
  const [instrument, setInstrument] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [missing, setMissing] = useWorded();
  // The secret address of the feed just created or rotated: shown once.
  const [shown, setShown] = useState<Shown>();
  // What the last rotation or revocation did, worded at each render (in the current language).
  const [done, setDone] = useWorded();

  const label = (f: CalendarFeed) => f.displayName || idOf(f.name);
  const instrumentName = (n: string) => instruments.data?.find((i) => i.name === n)?.displayName || idOf(n);

  const submit = () => {
    if (kind === CalendarFeed_Kind.INSTRUMENT && !instrument) {
      setMissing(() => t('notify.feeds.needInstrument'));
      return;
    }
    setMissing('');
    setDone('');
    const calendarFeed = { kind, instrument: kind === CalendarFeed_Kind.INSTRUMENT ? instrument : '', displayName: displayName.trim() };
    void create.run(() => mutate('createCalendarFeed', { parent, calendarFeed }, (r) => feeds.createCalendarFeed(r)),
      (f) => t('notify.feeds.created', { name: label(f) }))
      .then((f) => {
        if (!f) return;
        setShown(f.secretUrl ? { feed: f.name, url: f.secretUrl } : undefined);
        setDisplayName('');
        list.reload();
      });
  };

  return (
    <section>
      <PersonalHeader title={t('notify.feeds.title')} />
      <p class="muted">{t('notify.feeds.intro')}</p>

      <form class="card" onSubmit={(e) => { e.preventDefault(); submit(); }} aria-labelledby="feed-new-h" data-testid="feed-new">
        <h2 id="feed-new-h">{t('notify.feeds.new')}</h2>
        <div class="notify-form">
          <fieldset class="notify-set wide">
            <legend>{t('notify.feeds.kind')}</legend>
            <div class="notify-radios">
              {[CalendarFeed_Kind.USER, CalendarFeed_Kind.INSTRUMENT].map((k) => (
                <label key={k} class="notify-check">
                  <input type="radio" name="feed-kind" checked={kind === k} data-testid={`feed-kind-${CalendarFeed_Kind[k]}`}
                    onChange={() => setKind(k)} />
                  {t(`notify.feeds.kind.${CalendarFeed_Kind[k]}`)}
                </label>
              ))}
            </div>
          </fieldset>
          {kind === CalendarFeed_Kind.INSTRUMENT && (
            <label class="field">
              <span>{t('notify.feeds.instrument')}</span>
              <select data-testid="feed-instrument" value={instrument}
                onChange={(e) => setInstrument((e.target as HTMLSelectElement).value)}>
                <option value="">{t('notify.feeds.chooseInstrument')}</option>
                {(instruments.data ?? []).slice().sort((a, b) => a.displayName.localeCompare(b.displayName)).map((i) => (
                  <option key={i.name} value={i.name}>{i.displayName} ({idOf(i.name)})</option>
                ))}
              </select>
            </label>
          )}
          <label class="field">
            <span>{t('notify.feeds.displayName')}</span>
            <input data-testid="feed-display-name" value={displayName} maxLength={200}
              onInput={(e) => setDisplayName((e.target as HTMLInputElement).value)} />
          </label>
          {missing && <div class="error wide" role="alert" data-testid="error">{missing}</div>}
          <div class="buttons">
            <button type="submit" class="primary" disabled={create.busy} data-testid="feed-create">{t('notify.feeds.create')}</button>
          </div>
        </div>
        <ErrorBox error={create.error} />
        <StatusBox testid="feed-status">{create.done}</StatusBox>
      </form>

      {shown && <SecretBox testid="feed-secret" label={t('notify.feeds.secret')} value={shown.url} note={t('notify.feeds.secretNote')} />}
      <StatusBox testid="feed-done">{done}</StatusBox>

      <h2>{t('notify.feeds.list')}</h2>
      <Loading load={list} />
      {list.data && (list.data.length === 0 ? <p class="muted" data-testid="feeds-empty">{t('notify.feeds.empty')}</p> : (
        <div class="table-wrap">
          <table class="notify-stack" data-testid="feeds">
            <ColumnHeads prefix="notify.feeds.col." cols={['name', 'shows', 'created', 'rotated', 'actions']} />
            <tbody>
              {list.data.map((f) => (
                <FeedRow key={f.name} feed={f} label={label(f)} instrumentName={instrumentName}
                  onRotated={(url, name) => { setShown(url ? { feed: f.name, url } : undefined); setDone(() => t('notify.feeds.rotated', { name })); list.reload(); }}
                  onRevoked={(name) => { if (shown?.feed === f.name) setShown(undefined); setDone(() => t('notify.feeds.revoked', { name })); list.reload(); }} />
              ))}
            </tbody>
          </table>
        </div>
      ))}
    </section>
  );
}

function FeedRow({ feed, label, instrumentName, onRotated, onRevoked }: {
  feed: CalendarFeed; label: string; instrumentName: (n: string) => string;
  onRotated: (url: string, name: string) => void; onRevoked: (name: string) => void;
}) {
  const act = useAction();
  const mutate = useRequestId();
  const [confirm, setConfirm] = useState<'rotate' | 'revoke'>();
  const id = idOf(feed.name);
  const rotate = () => act.run(() => mutate('rotateCalendarFeed', { name: feed.name }, (r) => feeds.rotateCalendarFeed(r)))
    .then((f) => { if (f) { setConfirm(undefined); onRotated(f.secretUrl, label); } });
  const revoke = () => act.run(() => mutate('deleteCalendarFeed', { name: feed.name }, (r) => feeds.deleteCalendarFeed(r)))
    .then((f) => { if (f) { setConfirm(undefined); onRevoked(label); } });
  const shows = feed.kind === CalendarFeed_Kind.INSTRUMENT
    ? <>{instrumentName(feed.instrument)}<div class="muted">{t(feed.showsDetails ? 'notify.feeds.details' : 'notify.feeds.busyOnly')}</div></>
    : t('notify.feeds.kind.USER');
  return (
    <>
      <tr data-testid={`feed-${id}`}>
        <td data-label={t('notify.feeds.col.name')}>{label}</td>
        <td data-label={t('notify.feeds.col.shows')}>{shows}</td>
        <td data-label={t('notify.feeds.col.created')}>{when(feed.createTime)}</td>
        <td data-label={t('notify.feeds.col.rotated')}>{when(feed.rotateTime)}</td>
        <td>
          <div class="notify-actions">
            <button type="button" aria-expanded={confirm === 'rotate'} aria-label={t('notify.feeds.rotateLabel', { name: label })}
              onClick={() => setConfirm(confirm === 'rotate' ? undefined : 'rotate')}>{t('notify.feeds.rotate')}</button>
            <button type="button" aria-expanded={confirm === 'revoke'} aria-label={t('notify.feeds.revokeLabel', { name: label })}
              onClick={() => setConfirm(confirm === 'revoke' ? undefined : 'revoke')}>{t('notify.feeds.revoke')}</button>
          </div>
          <ErrorBox error={act.error} />
        </td>
      </tr>
      {confirm && (
        <tr class="notify-confirm">
          <td colSpan={5}>
            <p>{t(confirm === 'rotate' ? 'notify.feeds.confirmRotate' : 'notify.feeds.confirmRevoke', { name: label })}</p>
            <div class="notify-actions">
              <button type="button" class={confirm === 'revoke' ? 'danger' : 'primary'} disabled={act.busy} data-testid={`feed-confirm-${confirm}`}
                onClick={() => void (confirm === 'rotate' ? rotate() : revoke())}>
                {t(confirm === 'rotate' ? 'notify.feeds.yesRotate' : 'notify.feeds.yesRevoke')}
              </button>
              <button type="button" onClick={() => setConfirm(undefined)}>{t('notify.cancel')}</button>
            </div>
          </td>
        </tr>
      )}
    </>
  );
}
