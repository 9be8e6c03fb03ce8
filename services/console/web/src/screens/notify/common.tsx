// Shared pieces of the notification screens: the kinds of mail and which are
// legal notices (notify.proto), the event types a webhook may subscribe to
// (webhooks.proto), the box that shows a secret once with a Copy button,
// times, and the tabs between the personal views.
import { useRef, useState } from 'preact/hooks';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { NotificationKind } from '../../../../gen/labshare/notify/v1/notify_pb';
import { dateTime } from '../../format';
import { hasMessage, lang, t } from '../../i18n';
import { hashPath } from '../../nav';
import { useSignal } from '../../signal';
import { DEFAULT_ZONE } from '../../zones';
import './messages';
import './notify.css';

// ------------------------------------------------------------ kinds of mail

export const KIND_GROUPS: [string, NotificationKind[]][] = [
  ['bookings', [NotificationKind.BOOKING_CONFIRMED, NotificationKind.BOOKING_APPROVED, NotificationKind.BOOKING_REJECTED,
    NotificationKind.BOOKING_CANCELLED, NotificationKind.BOOKING_CANCELLED_BY_OUTAGE, NotificationKind.BOOKING_REMINDER,
    NotificationKind.BOOKING_MISSED]],
  ['leases', [NotificationKind.LEASE_APPROVED, NotificationKind.LEASE_REJECTED, NotificationKind.LEASE_CANCELLED,
    NotificationKind.LEASE_HANDOVER_DUE, NotificationKind.LEASE_RETURN_DUE]],
  ['orders', [NotificationKind.QUOTE_ISSUED, NotificationKind.SERVICE_SCHEDULED, NotificationKind.REPORT_DELIVERED,
    NotificationKind.REPORT_AUTO_ACCEPTED, NotificationKind.ORDER_CANCELLED]],
  ['staff', [NotificationKind.APPROVAL_REQUESTED, NotificationKind.ORDER_RECEIVED, NotificationKind.QUOTE_ACCEPTED,
    NotificationKind.ORDER_DISPUTED]],
  ['billing', [NotificationKind.INVOICE_ISSUED, NotificationKind.PAYMENT_RECEIVED, NotificationKind.SETTLEMENT_TRANSFERS_DUE,
    NotificationKind.WEBHOOK_DISABLED]],
  ['admin', [NotificationKind.SUBSIDY_POOL_LOW]],
];

// Always sent, at once; never turned off, digested or unsubscribed.
export const LEGAL_NOTICES = new Set<NotificationKind>([
  NotificationKind.INVOICE_ISSUED, NotificationKind.PAYMENT_RECEIVED, NotificationKind.SETTLEMENT_TRANSFERS_DUE,
  NotificationKind.WEBHOOK_DISABLED,
]);

export function kindLabel(k: NotificationKind): string {
  return t(`notify.kind.${NotificationKind[k] ?? 'NOTIFICATION_KIND_UNSPECIFIED'}`);
}

// ------------------------------------------------------------ webhook events

// Full names of the event payloads a webhook may subscribe to (webhooks.proto,
// the party rule), grouped for the form.
const B = 'labshare.booking.v1.';
const BI = 'labshare.billing.v1.';
export const EVENT_GROUPS: [string, string[]][] = [
  ['booking', ['BookingCreated', 'BookingConfirmed', 'BookingApproved', 'BookingRejected', 'BookingCancelled',
    'BookingCheckedIn', 'BookingCheckedOut', 'BookingMissed', 'BookingExpired', 'BookingIntervalChanged'].map((n) => B + n)],
  ['lease', ['LeaseRequested', 'LeaseApproved', 'LeaseRejected', 'LeaseCancelled', 'LeaseHandedOver', 'LeaseReturned',
    'LeaseExtended', 'LeaseClosed'].map((n) => B + n)],
  ['project', ['ProjectCreated', 'ProjectUpdated'].map((n) => B + n)],
  ['order', ['ServiceOrderCreated', 'ServiceOrderQuoted', 'ServiceOrderQuoteAccepted', 'ServiceOrderSamplesReceived',
    'ServiceOrderScheduled', 'ServiceOrderUnscheduled', 'ServiceOrderStarted', 'ServiceOrderReportDelivered',
    'ServiceOrderReportAccepted', 'ServiceOrderReportDisputed', 'ServiceOrderCancelled'].map((n) => B + n)],
  ['quota', ['QuotaSet', 'QuotaDeleted'].map((n) => B + n)],
  ['billing', ['ChargePosted', 'CorrectionPosted', 'SubsidyApplied', 'InvoiceIssued', 'InvoicePaid', 'InvoiceVoided',
    'PaymentRecorded', 'SettlementComputed', 'SettlementCleared', 'DepositChanged'].map((n) => BI + n)],
  ['notify', ['labshare.notify.v1.WebhookDisabled']],
];

// "labshare.booking.v1.BookingConfirmed" -> "BookingConfirmed"
export const shortType = (type: string): string => type.slice(type.lastIndexOf('.') + 1);

// ------------------------------------------------------------ words and times

// A count sentence: "<key>.one" when n is 1 and such a sentence exists.
export function tn(key: string, n: number, vars: Record<string, string | number> = {}): string {
  return t(n === 1 && hasMessage(`${key}.one`) ? `${key}.one` : key, { n, ...vars });
}

export function isSet(ts: Timestamp | undefined): ts is Timestamp {
  return !!ts && (ts.seconds !== 0n || ts.nanos !== 0);
}

// Date and time with the zone's short name; "—" when unset.
export function when(ts: Timestamp | undefined, zone = DEFAULT_ZONE): string {
  return isSet(ts) ? dateTime(ts, zone, true) : t('notify.none');
}

// The last part of a resource name: "users/li-wei" -> "li-wei".
export const idOf = (name: string): string => name.slice(name.lastIndexOf('/') + 1);

// ------------------------------------------------------------ the secret, once

// A secret (feed URL, signing secret) shown once: read-only text, selected on
// focus, and a Copy button; the note says it will not be shown again.
export function SecretBox({ label, value, note, testid }: { label: string; value: string; note: string; testid: string }) {
  useSignal(lang);
  const input = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState<'ok' | 'failed'>();
  const copy = async () => {
    input.current?.select();
    try {
      await navigator.clipboard.writeText(value);
      setCopied('ok');
    } catch {
      setCopied(document.execCommand?.('copy') ? 'ok' : 'failed');
    }
  };
  return (
    <div class="notice notify-secret" data-testid={testid}>
      <label class="field">
        <span>{label}</span>
        <span class="notify-secret-row">
          <input ref={input} readOnly value={value} data-testid={`${testid}-value`} spellcheck={false}
            onFocus={(e) => (e.target as HTMLInputElement).select()} />
          <button type="button" onClick={() => void copy()}>{t('notify.copy')}</button>
        </span>
      </label>
      <p class="notify-secret-note">{note}</p>
      {copied && <p role="status" class="muted">{t(copied === 'ok' ? 'notify.copied' : 'notify.copyFailed')}</p>}
    </div>
  );
}

// ------------------------------------------------------------ header

// The personal notification views: settings and calendar feeds.
export function PersonalHeader({ title }: { title: string }) {
  useSignal(lang);
  const path = hashPath();
  const tabs: [string, string][] = [
    ['#/settings/notifications', 'nav.notify.settings'],
    ['#/settings/feeds', 'nav.notify.feeds'],
  ];
  return (
    <header class="notify-head">
      <h1>{title}</h1>
      <nav aria-label={t('notify.tabs')} class="notify-tabs">
        {tabs.map(([href, key]) => (
          <a key={href} href={href} aria-current={path === href ? 'page' : undefined}>{t(key)}</a>
        ))}
      </nav>
    </header>
  );
}
