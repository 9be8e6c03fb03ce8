// Money with its currency, times in the facility's time zone, in the
// user's language; money and hours read from and written to inputs.
import { create } from '@bufbuild/protobuf';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { MoneySchema, type Money } from '../../gen/labshare/type/v1/types_pb';
import { lang } from './i18n';

// Minor-unit digits of a currency: the ISO 4217 exponents the services use,
// copied from common/currency.cc (CurrencyMinorDigits) so the console shows
// and reads amounts exactly as billing computes them; the browser's Intl data
// differs (IDR, HUF, IQD, IRR, LAK, MGA, YER, ALL, ...). Keep the two lists
// equal to that file's (format.test.ts checks them against it).
export const ZERO_DIGIT_CURRENCIES: readonly string[] = [
  'BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF',
];
export const THREE_DIGIT_CURRENCIES: readonly string[] = ['BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND'];

// 0, 3, or 2 for every other code (CNY, EUR, USD, and codes nobody knows).
export function currencyDigits(code: string): number {
  if (ZERO_DIGIT_CURRENCIES.includes(code)) return 0;
  if (THREE_DIGIT_CURRENCIES.includes(code)) return 3;
  return 2;
}

// Exactly, however large: the decimal string goes to Intl, never a Number.
export function money(m: Money | undefined): string {
  if (!m) return '—';
  const digits = currencyDigits(m.currencyCode);
  return new Intl.NumberFormat(lang.value, {
    style: 'currency', currency: m.currencyCode || 'CNY', minimumFractionDigits: digits, maximumFractionDigits: digits,
  }).format(moneyText(m) as unknown as number);
}

// The amount in major units as a number (for charts and sums).
export function moneyValue(m: Money | undefined): number {
  return m ? Number(m.amountMinor) / 10 ** currencyDigits(m.currencyCode) : 0;
}

// The amount as a plain decimal ("117875.00"), for inputs and CSV files.
export function moneyText(m: Money | undefined): string {
  if (!m) return '';
  const digits = currencyDigits(m.currencyCode);
  const neg = m.amountMinor < 0n;
  const abs = (neg ? -m.amountMinor : m.amountMinor).toString().padStart(digits + 1, '0');
  const s = digits ? `${abs.slice(0, -digits)}.${abs.slice(-digits)}` : abs;
  return neg ? `-${s}` : s;
}

// "1234.5" or "1,234.5" (major units, at most the currency's digits) -> Money, exactly;
// undefined when it is not a plain amount. A minus sign is kept: whether a
// negative amount is allowed is the service's (or the screen's) decision.
export function parseMoney(text: string, currencyCode: string): Money | undefined {
  const digits = currencyDigits(currencyCode);
  const t = text.trim();
  // Digits with proper thousands grouping ("1,234,567") or none ("1234567").
  const grouped = '(?:\\d{1,3}(?:,\\d{3})+|\\d+)';
  const re = new RegExp(`^-?${grouped}${digits === 0 ? '' : `(?:\\.\\d{1,${digits}})?`}$`);
  if (!re.test(t)) return undefined;
  const s = t.replace(/,/g, '');
  const neg = s.startsWith('-');
  const [whole, frac = ''] = (neg ? s.slice(1) : s).split('.');
  const minor = BigInt(whole!) * 10n ** BigInt(digits) + BigInt((frac + '0'.repeat(digits)).slice(0, digits) || '0');
  return create(MoneySchema, { currencyCode, amountMinor: neg ? -minor : minor });
}

// Seconds as a number of hours, up to two decimals ("2.5").
export function hoursNumber(seconds: bigint | number | undefined): string {
  return new Intl.NumberFormat(lang.value, { maximumFractionDigits: 2 }).format(Number(seconds ?? 0) / 3600);
}

// The locale of every date shown: English dates day-first the British way
// ("06/04/2027", "6 April 2027"), everywhere; Chinese as zh-CN writes them.
export const dateLocale = (): string => (lang.value === 'en' ? 'en-GB' : lang.value);

// Date and time in `timeZone`; with the zone's short name after the time
// ("2027/03/01 08:01 GMT+8", never between date and time).
export function dateTime(ts: Timestamp | undefined, timeZone: string, withZone = false): string {
  if (!ts) return '—';
  const d = timestampDate(ts);
  const text = new Intl.DateTimeFormat(dateLocale(), {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  }).format(d);
  if (!withZone) return text;
  const zone = new Intl.DateTimeFormat(dateLocale(), { timeZone, timeZoneName: 'short' })
    .formatToParts(d).find((p) => p.type === 'timeZoneName')?.value;
  return zone ? `${text} ${zone}` : text;
}

// Basis points as a percentage with the two decimals they carry (68 -> "0.68%").
export function percentBps(bps: bigint | number | undefined): string {
  return new Intl.NumberFormat(lang.value, { style: 'percent', maximumFractionDigits: 2 }).format(Number(bps ?? 0) / 10000);
}

// A link a page may follow: the text itself when it is an absolute http: or
// https: URL, undefined otherwise (javascript:, data:, a file share path or
// anything else a report's uri may hold is shown as text, never as a link).
export function webLink(uri: string): string | undefined {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return undefined;
  }
  return u.protocol === 'http:' || u.protocol === 'https:' ? uri : undefined;
}
