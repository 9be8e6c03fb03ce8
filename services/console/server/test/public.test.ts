// The public pages of labshare-notify through the gateway, against a stub
// notify service: /feeds/<token>.ics (the calendar, its cache headers, a
// bare 404 for unknown tokens) and /unsubscribe (confirmation page without
// script, RFC 8058 one-click POST without session or CSRF token). Neither
// forwards the caller's credentials, neither logs the token.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setLogSink } from '../errors.js';
import { CSP } from '../http-util.js';
import { pageLanguage } from '../public.js';
import {
  closedPort, rpc, EXPIRED_UNSUBSCRIBE_TOKEN, FEED_BODY, FEED_DOWN, FEED_ETAG, FEED_TOKEN, request, startGateway, Stub,
  testConfig, UNSUBSCRIBE_TOKEN, type TestGateway,
} from './harness.js';

const logs: string[] = [];
setLogSink((line) => logs.push(line));

const SESSION = '__Host-labshare_session';

describe('public pages of labshare-notify', () => {
  let stub: Stub;
  let t: TestGateway;
  let cookie: string;

  before(async () => {
    stub = await new Stub().start();
    t = await startGateway((port) => testConfig({ upstream: stub.address, port }));
    const s = t.gw.auth.sessions.create({
      accessToken: 'access-s', accessExpiresAt: t.clock.t + 900_000, refreshToken: 'rt-s', refreshExpiresAt: t.clock.t + 3600_000,
      user: { name: 'users/li-wei', displayName: 'Li Wei', organization: 'organizations/nanocraft', roles: ['LAB_USER'] },
    });
    cookie = `${SESSION}=${s.id}`;
  });
  after(async () => {
    await t.stop();
    await stub.stop();
  });

  it('serves a feed as text/calendar with its ETag, revalidated every time, without the caller’s credentials', async () => {
    const a = await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`, { headers: { cookie, authorization: 'Bearer tok' } });
    assert.equal(a.status, 200);
    assert.equal(a.text, FEED_BODY);
    assert.equal(a.headers['content-type'], 'text/calendar; charset=utf-8');
    assert.equal(a.headers['content-length'], String(Buffer.byteLength(FEED_BODY)));
    assert.equal(a.headers['cache-control'], 'private, no-cache');
    assert.equal(a.headers.etag, `"${FEED_ETAG}"`);
    assert.equal(a.headers['content-disposition'], 'inline; filename="labshare.ics"');
    assert.equal(a.headers['x-robots-tag'], 'noindex, nofollow');
    assert.equal(a.headers['content-security-policy'], CSP);
    assert.equal(a.headers['referrer-policy'], 'no-referrer');
    const call = stub.callsOf('GetCalendarFeedContent').at(-1)!;
    assert.equal((call.request as { token: string }).token, FEED_TOKEN);
    assert.equal(call.authorization, null);
  });

  it('answers 304 to If-None-Match with the current ETag, and HEAD without a body', async () => {
    const n = await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`, { headers: { 'if-none-match': `W/"x", "${FEED_ETAG}"` } });
    assert.equal(n.status, 304);
    assert.equal(n.text, '');
    assert.equal(n.headers.etag, `"${FEED_ETAG}"`);
    assert.equal(n.headers['cache-control'], 'private, no-cache');
    const changed = await request('GET', `${t.url}/feeds/${FEED_TOKEN}.ics`, { headers: { 'if-none-match': '"old"' } });
    assert.equal(changed.status, 200);
    assert.equal(changed.text, FEED_BODY);
    const h = await request('HEAD', `${t.url}/feeds/${FEED_TOKEN}.ics`);
    assert.equal(h.status, 200);
    assert.equal(h.text, '');
    assert.equal(h.headers['content-length'], String(Buffer.byteLength(FEED_BODY)));
  });

  it('answers a bare 404 for an unknown, rotated or revoked token, and for paths that are no token (service not asked)', async () => {
    const unknown = await request('GET', `${t.url}/feeds/${'x'.repeat(43)}.ics`);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.text, 'not found\n');
    assert.equal(unknown.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal((stub.callsOf('GetCalendarFeedContent').at(-1)!.request as { token: string }).token, 'x'.repeat(43));
    const before = stub.callsOf('GetCalendarFeedContent').length;
    for (const p of ['/feeds/', '/feeds/abc', `/feeds/${FEED_TOKEN}`, '/feeds/a%2Fb.ics', '/feeds/a.b.ics', `/feeds/${'y'.repeat(129)}.ics`, '/feeds/x.ics/more']) {
      const a = await request('GET', `${t.url}${p}`);
      assert.equal(a.status, 404, p);
      assert.equal(a.text, 'not found\n', p);
    }
    assert.equal(stub.callsOf('GetCalendarFeedContent').length, before);
    const post = await request('POST', `${t.url}/feeds/${FEED_TOKEN}.ics`, { body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
    assert.equal(post.headers.connection, 'close');
  });

  it('answers 503 without detail when the service is unavailable; never logs a token', async () => {
    const a = await request('GET', `${t.url}/feeds/${FEED_DOWN}.ics`);
    assert.equal(a.status, 503);
    assert.equal(a.text, 'the calendar is unavailable; try again shortly\n');
    assert.equal(a.headers['retry-after'], '60');
    const all = logs.join('\n');
    assert.match(all, /"method":"GET \/feeds\/\{token\}\.ics","code":"unavailable"/);
    assert.match(all, /"method":"GET \/feeds\/\{token\}\.ics","code":"not_found"/);
    assert.doesNotMatch(all, new RegExp(`${FEED_TOKEN}|${FEED_DOWN}|${UNSUBSCRIBE_TOKEN.slice(0, 20)}`));
  });

  it('shows the unsubscribe confirmation page (validate only, no script, a plain form), in the browser’s language', async () => {
    const a = await request('GET', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, { headers: { cookie, 'accept-language': 'en-GB,en;q=0.9' } });
    assert.equal(a.status, 200);
    assert.equal(a.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(a.headers['cache-control'], 'no-store');
    assert.equal(a.headers['content-security-policy'], CSP);
    assert.match(a.text, /<h1>Stop mails about “reminder before a booking starts”\?<\/h1>/);
    assert.match(a.text, new RegExp(`<form method="post" action="/unsubscribe\\?token=${UNSUBSCRIBE_TOKEN}">`));
    assert.match(a.text, /<input type="hidden" name="List-Unsubscribe" value="One-Click">/);
    assert.doesNotMatch(a.text, /<script|onclick|javascript:/i);
    const call = stub.callsOf('Unsubscribe').at(-1)!;
    assert.equal(call.authorization, null);
    const r = call.request as { token: string; validateOnly: boolean };
    assert.deepEqual([r.token, r.validateOnly], [UNSUBSCRIBE_TOKEN, true]);
    assert.equal(stub.unsubscribed, false);

    const zh = await request('GET', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, { headers: { 'accept-language': 'zh-CN,zh;q=0.9,en;q=0.5' } });
    assert.match(zh.text, /<html lang="zh-CN">/);
    assert.match(zh.text, /<h1>不再接收“预约开始前提醒”邮件？<\/h1>/);
    const en = await request('GET', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}&lang=en`, { headers: { 'accept-language': 'zh-CN' } });
    assert.match(en.text, /<html lang="en">/);
    assert.equal(pageLanguage(null, 'de-DE, zh-TW;q=0.8'), 'zh-CN');
    assert.equal(pageLanguage(null, undefined), 'en');
  });

  it('says an expired unsubscribe link has expired and links the notification settings, GET and one-click POST', async () => {
    const before = stub.unsubscribed;
    const a = await request('GET', `${t.url}/unsubscribe?token=${EXPIRED_UNSUBSCRIBE_TOKEN}`, { headers: { 'accept-language': 'en' } });
    assert.equal(a.status, 410);
    assert.match(a.text, /<h1>This unsubscribe link has expired\. You can still turn these mails off in your notification settings:<\/h1>/);
    assert.match(a.text, /<a href="[^"]*\/#\/settings\/notifications">Notification settings<\/a>/);
    assert.doesNotMatch(a.text, /<form/);
    assert.doesNotMatch(a.text, /not valid/);
    const p = await request('POST', `${t.url}/unsubscribe?token=${EXPIRED_UNSUBSCRIBE_TOKEN}`, {
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'accept-language': 'zh-CN' }, body: 'List-Unsubscribe=One-Click',
    });
    assert.equal(p.status, 410);
    assert.match(p.text, /<h1>此退订链接已过期。您仍可在通知设置中关闭此类邮件：<\/h1>/);
    assert.match(p.text, /<a href="[^"]*\/#\/settings\/notifications">通知设置<\/a>/);
    assert.equal(stub.unsubscribed, before);
  });

  it('unsubscribes on the RFC 8058 one-click POST without session or CSRF token; again: already off', async () => {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const a = await request('POST', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, { headers: form, body: 'List-Unsubscribe=One-Click' });
    assert.equal(a.status, 200);
    assert.match(a.text, /<div role="status"><h1>Done: you will no longer get mails about “reminder before a booking starts”\.<\/h1>/);
    const call = stub.callsOf('Unsubscribe').at(-1)!;
    assert.equal(call.authorization, null);
    assert.equal((call.request as { validateOnly: boolean }).validateOnly, false);
    assert.match((call.request as { requestId: string }).requestId, /^[0-9a-f-]{36}$/);

    const boundary = 'XyZ';
    const multipart = `--${boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--${boundary}--\r\n`;
    const b = await request('POST', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, {
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, cookie, 'accept-language': 'zh-CN' }, body: multipart,
    });
    assert.equal(b.status, 200);
    assert.match(b.text, /<div role="status"><h1>“预约开始前提醒”邮件此前已关闭。<\/h1>/);
    assert.equal(stub.callsOf('Unsubscribe').at(-1)!.authorization, null);
  });

  it('refuses a POST without the one-click body, unknown and malformed tokens, and other methods', async () => {
    const before = stub.callsOf('Unsubscribe').length;
    for (const [headers, body] of [
      [{}, undefined],
      [{ 'content-type': 'application/x-www-form-urlencoded' }, 'List-Unsubscribe=Yes'],
      [{ 'content-type': 'application/json' }, '{"List-Unsubscribe":"One-Click"}'],
      [{ 'content-type': 'application/x-www-form-urlencoded' }, `List-Unsubscribe=One-Click&x=${'a'.repeat(5000)}`],
    ] as [Record<string, string>, string | undefined][]) {
      const a = await request('POST', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, { headers, ...(body !== undefined ? { body } : {}) });
      assert.equal(a.status, 400, body);
      assert.match(a.text, /<h1>This request could not be understood\.<\/h1>/);
    }
    assert.equal(stub.callsOf('Unsubscribe').length, before);

    const unknown = await request('GET', `${t.url}/unsubscribe?token=bm9ib2R5OlFVT1RFX0lTU1VFRA.${'0'.repeat(64)}`);
    assert.equal(unknown.status, 404);
    assert.match(unknown.text, /<h1>This unsubscribe link is not valid \(any more\)\.<\/h1>/);
    assert.equal(stub.callsOf('Unsubscribe').length, before + 1);
    for (const q of ['', '?token=', '?token=%3Cscript%3E.00', `?token=${'a'.repeat(500)}.00ff00ff00ff00ff`]) {
      const a = await request('GET', `${t.url}/unsubscribe${q}`);
      assert.equal(a.status, 404, q);
      assert.doesNotMatch(a.text, /<script/);
    }
    assert.equal(stub.callsOf('Unsubscribe').length, before + 1);
    const put = await request('PUT', `${t.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`, { body: 'x' });
    assert.equal(put.status, 405);
    assert.equal(put.headers.allow, 'GET, HEAD, POST');
    // Only Unsubscribe is reachable this way: the page never reaches another method.
    assert.equal((await request('POST', `${t.url}/unsubscribe/labshare.notify.v1.NotificationService/UpdateNotificationSettings`, { body: '{}' })).status, 404);
  });

  it('forwards the three notify services like the others: the caller’s token upstream, CSRF for cookie calls', async () => {
    const cases: [string, unknown, string, unknown][] = [
      ['labshare.notify.v1.NotificationService/GetNotificationSettings', { name: 'users/li-wei/notificationSettings' },
        'GetNotificationSettings', { name: 'users/li-wei/notificationSettings', language: 'zh-CN' }],
      ['labshare.notify.v1.WebhookService/ListWebhooks', { parent: 'organizations/nanocraft' },
        'ListWebhooks', { webhooks: [{ name: 'organizations/nanocraft/webhooks/erp', url: 'https://erp.example.com/hook', state: 'ENABLED' }] }],
      ['labshare.notify.v1.CalendarFeedService/ListCalendarFeeds', { parent: 'users/li-wei' },
        'ListCalendarFeeds', { calendarFeeds: [{ name: 'users/li-wei/calendarFeeds/f1', kind: 'USER' }] }],
    ];
    for (const [method, body, stubName, answer] of cases) {
      const a = await rpc(t.url, method, body, { authorization: 'Bearer tok-n' });
      assert.equal(a.status, 200, method);
      assert.deepEqual(a.json(), answer);
      assert.equal(stub.callsOf(stubName).at(-1)!.authorization, 'Bearer tok-n');
      const noCsrf = await rpc(t.url, method, body, { cookie, origin: t.origin });
      assert.equal(noCsrf.status, 403, method);
    }
    // The one-click method is an ordinary RPC too (the service allows it without a token).
    const u = await rpc(t.url, 'labshare.notify.v1.NotificationService/Unsubscribe', { token: UNSUBSCRIBE_TOKEN, validateOnly: true });
    assert.equal(u.status, 200);
    assert.deepEqual(u.json(), { user: 'users/li-wei', kind: 'BOOKING_REMINDER' });
    assert.equal(stub.callsOf('Unsubscribe').at(-1)!.authorization, null);
  });

  it('counts the public pages in the per-address rate limit, and answers 503 when notify cannot be reached', async () => {
    const down = await closedPort();
    const t2 = await startGateway((port) => ({
      ...testConfig({ upstream: stub.address, port }),
      upstreams: { inventory: stub.address, booking: stub.address, billing: stub.address, usage: stub.address, notify: down },
      addressRateLimit: { perSecond: 1, burst: 2 },
    }));
    try {
      const a = await request('GET', `${t2.url}/feeds/${FEED_TOKEN}.ics`);
      assert.equal(a.status, 503);
      assert.equal(a.text, 'the calendar is unavailable; try again shortly\n');
      const b = await request('GET', `${t2.url}/unsubscribe?token=${UNSUBSCRIBE_TOKEN}`);
      assert.equal(b.status, 503);
      assert.match(b.text, /LabShare cannot be reached right now/);
      const c = await request('GET', `${t2.url}/feeds/${FEED_TOKEN}.ics`);
      assert.equal(c.status, 429);
      assert.equal(c.headers['retry-after'], '1');
      const r = await request('GET', `${t2.url}/readyz`);
      assert.equal(r.json().services.notify, 'UNREACHABLE (unavailable)');
      // The rest of the console stays in service without the notifier.
      assert.equal(r.status, 200);
      assert.equal(r.json().ready, true);
    } finally {
      await t2.stop();
    }
  });
});
