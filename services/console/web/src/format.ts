// Money with its currency, times in the facility's time zone, in the
// user's language.
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import type { Money } from '../../gen/labshare/type/v1/types_pb';
import { lang } from './i18n';

const DIGITS: Record<string, number> = { JPY: 0, KRW: 0 };

export function money(m: Money | undefined): string {
  if (!m) return '—';
  const digits = DIGITS[m.currencyCode] ?? 2;
  const value = Number(m.amountMinor) / 10 ** digits;
  return new Intl.NumberFormat(lang.value, {
    style: 'currency', currency: m.currencyCode || 'CNY', minimumFractionDigits: digits,
  }).format(value);
}

export function dateTime(ts: Timestamp | undefined, timeZone: string, withZone = false): string {
  if (!ts) return '—';
  return new Intl.DateTimeFormat(lang.value, {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    hourCycle: 'h23', ...(withZone ? { timeZoneName: 'short' } : {}),
  }).format(timestampDate(ts));
}

export function percentBps(bps: number | undefined): string {
  return new Intl.NumberFormat(lang.value, { style: 'percent', maximumFractionDigits: 1 }).format((bps ?? 0) / 10000);
}
