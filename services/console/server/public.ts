// The gateway's two public pages of labshare-notify, reached without a
// session: the secret token in the URL is the credential, checked by the
// service (which stores only its hash / verifies its signature).
//
//   GET|HEAD /feeds/<token>.ics  CalendarFeedService.GetCalendarFeedContent:
//       the iCalendar document (text/calendar), ETag from the service,
//       If-None-Match -> 304; "Cache-Control: private, no-cache" so that
//       calendar apps revalidate every time (a revoked or rotated URL stops
//       working at once) and no shared cache keeps a copy. An unknown,
//       rotated or revoked token is a bare 404, nothing more.
//   GET  /unsubscribe?token=T    NotificationService.Unsubscribe with
//       validate_only: a confirmation page (no script; a plain form), so
//       that link scanners and previews change nothing.
//   POST /unsubscribe?token=T    with the body List-Unsubscribe=One-Click
//       (RFC 8058: mail clients send it without any cookie; the page's form
//       sends the same): NotificationService.Unsubscribe. No session or CSRF
//       token: the only thing this can do is turn off the one kind of mail
//       the signed token names, for the person it was made for.
// Neither forwards cookies or an Authorization header, and neither logs the
// token.
import { Code, ConnectError, type Client } from '@connectrpc/connect';
import { ErrorInfoSchema } from '../gen/google/rpc/error_details_pb.js';
import type { CalendarFeedService } from '../gen/labshare/notify/v1/feeds_pb.js';
import { NotificationKind, type NotificationService } from '../gen/labshare/notify/v1/notify_pb.js';
import { sendText, type Req, type Res } from './http-util.js';
import { logLine } from './errors.js';

export interface PublicDeps {
  feeds: Client<typeof CalendarFeedService>;
  notifications: Client<typeof NotificationService>;
  timeoutMs: number;
  // Request headers for the service (the request's x-trace-id).
  headers?: Record<string, string>;
  // One access-log line (the path without its token).
  access: (what: string, code: string, ms: number) => void;
  // The console's address, for the link to the notification settings.
  publicOrigin: string;
}

// Feed tokens: 43 URL-safe base64 characters, 32 random bytes without
// padding (services/notify/feed_manager.cc NewToken); anything else is no
// feed and answers 404 without asking the service.
export const FEED_PATH = /^\/feeds\/([A-Za-z0-9_-]{43})\.ics$/;
// Unsubscribe tokens: URL-safe base64 payload "." hex signature.
const UNSUBSCRIBE_TOKEN = /^[A-Za-z0-9_=-]{1,400}\.[0-9a-f]{16,128}$/;
const FORM_LIMIT = 4096;
const CALENDAR = 'text/calendar; charset=utf-8';

const codeName = (c: Code) => Code[c].replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
const gone = (err: unknown) => err instanceof ConnectError && (err.code === Code.NotFound || err.code === Code.InvalidArgument);
// A genuine unsubscribe link past its expiry (notify.proto Unsubscribe).
const expired = (err: unknown) =>
  err instanceof ConnectError && err.code === Code.NotFound &&
  err.findDetails(ErrorInfoSchema)[0]?.reason === 'UNSUBSCRIBE_TOKEN_EXPIRED';
const passing = (err: unknown) => err instanceof ConnectError && (err.code === Code.Unavailable || err.code === Code.DeadlineExceeded);

function logFailure(what: string, err: unknown): void {
  if (gone(err)) return;
  // The upstream's message may quote the request; keep only what is safe.
  const code = err instanceof ConnectError ? codeName(err.code) : 'internal';
  logLine({ level: 'error', msg: 'public route failed', route: what, code, error: err instanceof ConnectError ? err.rawMessage.slice(0, 200) : String(err) });
}

// ------------------------------------------------------------ /feeds/<token>.ics

export async function serveFeed(deps: PublicDeps, req: Req, res: Res, token: string): Promise<void> {
  const start = performance.now();
  let code = 'ok';
  try {
    const c = await deps.feeds.getCalendarFeedContent({ token }, { timeoutMs: deps.timeoutMs, headers: deps.headers });
    const etag = /^[0-9a-f]{8,128}$/i.test(c.etag) ? `"${c.etag}"` : undefined;
    const headers: Record<string, string> = {
      'cache-control': 'private, no-cache',
      'x-robots-tag': 'noindex, nofollow',
      ...(etag ? { etag } : {}),
    };
    const inm = req.headers['if-none-match'];
    if (etag && typeof inm === 'string' && inm.split(',').some((x) => x.trim().replace(/^W\//, '') === etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    const type = /^text\/calendar\b/i.test(c.contentType) ? c.contentType : CALENDAR;
    res.writeHead(200, {
      ...headers,
      'content-type': type,
      'content-length': String(c.body.byteLength),
      'content-disposition': 'inline; filename="labshare.ics"',
    });
    if (req.method === 'HEAD') res.end();
    else res.end(Buffer.from(c.body.buffer, c.body.byteOffset, c.body.byteLength));
  } catch (err) {
    code = err instanceof ConnectError ? codeName(err.code) : 'internal';
    logFailure('feeds', err);
    if (res.headersSent) {
      res.end();
    } else if (gone(err)) {
      sendText(res, 404, 'not found\n');
    } else if (passing(err)) {
      sendText(res, 503, 'the calendar is unavailable; try again shortly\n', { 'retry-after': '60' });
    } else {
      sendText(res, 500, 'internal error\n');
    }
  } finally {
    deps.access('GET /feeds/{token}.ics', code, performance.now() - start);
  }
}

// ------------------------------------------------------------ /unsubscribe

type Lang = 'en' | 'zh-CN';

const KINDS: Record<Lang, Partial<Record<keyof typeof NotificationKind, string>>> = {
  en: {
    BOOKING_CONFIRMED: 'booking confirmed',
    BOOKING_APPROVED: 'booking approved',
    BOOKING_REJECTED: 'booking rejected',
    BOOKING_CANCELLED_BY_OUTAGE: 'booking cancelled by an outage',
    BOOKING_CANCELLED: 'booking cancelled by someone else',
    BOOKING_REMINDER: 'reminder before a booking starts',
    BOOKING_MISSED: 'missed booking',
    APPROVAL_REQUESTED: 'approval requested',
    LEASE_APPROVED: 'lease approved',
    LEASE_REJECTED: 'lease rejected',
    LEASE_CANCELLED: 'lease cancelled',
    LEASE_HANDOVER_DUE: 'lease handover due',
    LEASE_RETURN_DUE: 'lease return due',
    QUOTE_ISSUED: 'quote issued',
    REPORT_DELIVERED: 'report delivered',
    REPORT_AUTO_ACCEPTED: 'report accepted automatically',
    ORDER_DISPUTED: 'order disputed',
    ORDER_RECEIVED: 'new service order',
    QUOTE_ACCEPTED: 'quote accepted',
    SERVICE_SCHEDULED: 'service run scheduled',
    ORDER_CANCELLED: 'service order cancelled',
    SUBSIDY_POOL_LOW: 'subsidy pool running low',
  },
  'zh-CN': {
    BOOKING_CONFIRMED: '预约已确认',
    BOOKING_APPROVED: '预约已批准',
    BOOKING_REJECTED: '预约被拒绝',
    BOOKING_CANCELLED_BY_OUTAGE: '预约因停机被取消',
    BOOKING_CANCELLED: '预约被他人取消',
    BOOKING_REMINDER: '预约开始前提醒',
    BOOKING_MISSED: '预约未签到（爽约）',
    APPROVAL_REQUESTED: '待审批申请',
    LEASE_APPROVED: '租赁已批准',
    LEASE_REJECTED: '租赁被拒绝',
    LEASE_CANCELLED: '租赁被取消',
    LEASE_HANDOVER_DUE: '租赁即将交付',
    LEASE_RETURN_DUE: '租赁即将到期归还',
    QUOTE_ISSUED: '报价已出具',
    REPORT_DELIVERED: '报告已交付',
    REPORT_AUTO_ACCEPTED: '报告已自动验收',
    ORDER_DISPUTED: '工单有异议',
    ORDER_RECEIVED: '新的技术服务工单',
    QUOTE_ACCEPTED: '报价已被接受',
    SERVICE_SCHEDULED: '技术服务已排期',
    ORDER_CANCELLED: '技术服务工单被取消',
    SUBSIDY_POOL_LOW: '补贴资金池余额不足',
  },
};

const TEXT: Record<Lang, Record<string, string>> = {
  en: {
    title: 'Unsubscribe — LabShare',
    confirm: 'Stop mails about “{kind}”?',
    explain: 'You will no longer get LabShare mails of this kind. Other notifications and legal notices (invoices, payments, settlements) are not affected.',
    button: 'Unsubscribe',
    done: 'Done: you will no longer get mails about “{kind}”.',
    already: 'Mails about “{kind}” were already turned off.',
    settings: 'Change which mails you get in the console’s notification settings.',
    settingsLink: 'Notification settings',
    invalid: 'This unsubscribe link is not valid (any more).',
    expired: 'This unsubscribe link has expired. You can still turn these mails off in your notification settings:',
    unavailable: 'LabShare cannot be reached right now. Please try again in a few minutes.',
    bad: 'This request could not be understood.',
    other: '中文',
  },
  'zh-CN': {
    title: '退订 — LabShare',
    confirm: '不再接收“{kind}”邮件？',
    explain: '您将不再收到此类 LabShare 邮件。其他通知和法定通知（发票、付款、结算）不受影响。',
    button: '退订',
    done: '已退订：您将不再收到“{kind}”邮件。',
    already: '“{kind}”邮件此前已关闭。',
    settings: '可在控制台的通知设置中修改接收哪些邮件。',
    settingsLink: '通知设置',
    invalid: '此退订链接无效（或已失效）。',
    expired: '此退订链接已过期。您仍可在通知设置中关闭此类邮件：',
    unavailable: '暂时无法连接 LabShare，请几分钟后再试。',
    bad: '无法识别此请求。',
    other: 'English',
  },
};

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

export function pageLanguage(query: string | null, acceptLanguage: string | undefined): Lang {
  if (query === 'en' || query === 'zh-CN') return query;
  // The first language the browser names that we have.
  for (const part of (acceptLanguage ?? '').split(',')) {
    const tag = part.split(';')[0]!.trim().toLowerCase();
    if (tag.startsWith('zh')) return 'zh-CN';
    if (tag.startsWith('en')) return 'en';
  }
  return 'en';
}

function kindLabel(lang: Lang, kind: NotificationKind): string {
  const name = NotificationKind[kind] as keyof typeof NotificationKind | undefined;
  return (name && KINDS[lang][name]) ?? String(name ?? kind);
}

function page(res: Res, status: number, lang: Lang, body: string, other: string | undefined, deps: PublicDeps): void {
  const t = TEXT[lang];
  const html = `<!doctype html>
<html lang="${lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${escapeHtml(t.title!)}</title>
<style>
body { font-family: system-ui, "Noto Sans CJK SC", "PingFang SC", sans-serif; color: #1d2430; background: #f6f7f9; margin: 0; }
main { max-width: 36em; margin: 10vh auto; background: #fff; border: 1px solid #d9dde3; border-radius: 6px; padding: 16px 24px; }
h1 { font-size: 1.3em; }
button { font: inherit; padding: 6px 14px; border-radius: 4px; border: 1px solid #1f5fbf; background: #1f5fbf; color: #fff; cursor: pointer; }
:focus-visible { outline: 3px solid #f0a800; outline-offset: 2px; }
.muted { color: #5b6678; }
a { color: #1f5fbf; }
nav { float: right; }
</style>
</head>
<body>
<main>
${other ? `<nav><a href="${escapeHtml(other)}" lang="${lang === 'en' ? 'zh-CN' : 'en'}">${escapeHtml(t.other!)}</a></nav>\n` : ''}<p class="muted">LabShare</p>
${body}
<p class="muted"><a href="${escapeHtml(deps.publicOrigin)}/#/settings/notifications">${escapeHtml(t.settings!)}</a></p>
</main>
</body>
</html>
`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(html)),
  });
  res.end(html);
}

async function readForm(req: Req): Promise<FormData | undefined> {
  const type = String(req.headers['content-type'] ?? '');
  if (!/^(application\/x-www-form-urlencoded|multipart\/form-data)\b/i.test(type)) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > FORM_LIMIT) return undefined;
    chunks.push(c);
  }
  try {
    return await new Response(Buffer.concat(chunks), { headers: { 'content-type': type } }).formData();
  } catch {
    return undefined;
  }
}

export async function serveUnsubscribe(deps: PublicDeps, req: Req, res: Res, url: URL): Promise<void> {
  const start = performance.now();
  let code = 'ok';
  const lang = pageLanguage(url.searchParams.get('lang'), req.headers['accept-language'] as string | undefined);
  const t = TEXT[lang];
  const token = url.searchParams.get('token') ?? '';
  const self = (l?: Lang) => `/unsubscribe?${new URLSearchParams({ token, ...(l ? { lang: l } : {}) }).toString()}`;
  const other = self(lang === 'en' ? 'zh-CN' : 'en');
  const post = req.method === 'POST';
  try {
    if (post) {
      const length = Number(req.headers['content-length'] ?? 0);
      const form = length > FORM_LIMIT ? undefined : await readForm(req);
      if (form?.get('List-Unsubscribe') !== 'One-Click') {
        code = 'invalid_argument';
        page(res, 400, lang, `<h1>${escapeHtml(t.bad!)}</h1>`, undefined, deps);
        return;
      }
    }
    if (!UNSUBSCRIBE_TOKEN.test(token)) throw new ConnectError('malformed token', Code.NotFound);
    const r = await deps.notifications.unsubscribe(
      { token, validateOnly: !post, requestId: crypto.randomUUID() },
      { timeoutMs: deps.timeoutMs, headers: deps.headers },
    );
    const kind = escapeHtml(kindLabel(lang, r.kind));
    if (!post) {
      page(res, 200, lang, `<h1>${t.confirm!.replace('{kind}', kind)}</h1>
<p>${escapeHtml(t.explain!)}</p>
<form method="post" action="${escapeHtml(self(url.searchParams.get('lang') ? lang : undefined))}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">${escapeHtml(t.button!)}</button>
</form>`, other, deps);
    } else {
      page(res, 200, lang, `<div role="status"><h1>${(r.changed ? t.done! : t.already!).replace('{kind}', kind)}</h1></div>`, undefined, deps);
    }
  } catch (err) {
    code = err instanceof ConnectError ? codeName(err.code) : 'internal';
    logFailure('unsubscribe', err);
    if (res.headersSent) res.end();
    else if (expired(err)) {
      page(res, 410, lang, `<h1>${escapeHtml(t.expired!)}</h1>
<p><a href="${escapeHtml(deps.publicOrigin)}/#/settings/notifications">${escapeHtml(t.settingsLink!)}</a></p>`, undefined, deps);
    } else if (gone(err)) page(res, 404, lang, `<h1>${escapeHtml(t.invalid!)}</h1>`, undefined, deps);
    else page(res, passing(err) ? 503 : 500, lang, `<h1>${escapeHtml(t.unavailable!)}</h1>`, undefined, deps);
  } finally {
    deps.access(`${post ? 'POST' : 'GET'} /unsubscribe`, code, performance.now() - start);
  }
}
