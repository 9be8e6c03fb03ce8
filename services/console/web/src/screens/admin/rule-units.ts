// The numbers of the booking-rules editor (mode-rules.tsx) as a person types
// them, and back, exactly: durations in hours or days to and from
// google.protobuf.Duration (seconds and nanos, integer arithmetic only, so
// that 0.25 h is 900 s and never 899.9999), fee rates in percent to and from
// basis points, whole numbers for int32 fields. Only the reading of numbers
// is here; whether a value is allowed is the service's to say. No imports:
// the console's unit tests load it under Node (server/test/rule-units.test.ts).

export const HOUR = 3600;
export const DAY = 86400;

export interface DurationValue { seconds: bigint; nanos: number }

// A field as typed: empty (the field unset), a value, or text that is not a
// number of this kind.
export type Parsed<T> = { kind: 'empty' } | { kind: 'ok'; value: T } | { kind: 'bad' };

// google.protobuf.Duration's range (about 10,000 years).
const MAX_DURATION_SECONDS = 315_576_000_000n;
const NANOS = 1_000_000_000n;
const INT32_MAX = 2_147_483_647n;
const INT32_MIN = -2_147_483_648n;

// "12", "0.25", ".5", "-3" (a minus sign is kept: a negative value is the
// service's to refuse). No thousands separators, no exponent.
const DECIMAL = /^(-?)(\d*)(?:\.(\d*))?$/;

function decimal(text: string): { neg: boolean; digits: bigint; scale: number } | undefined {
  const m = DECIMAL.exec(text.trim());
  if (!m) return undefined;
  const whole = m[2] ?? '';
  const frac = m[3] ?? '';
  if (!whole && !frac) return undefined;
  return { neg: m[1] === '-', digits: BigInt((whole || '0') + frac), scale: frac.length };
}

// `text` in units of `unit` seconds (HOUR, DAY) as a Duration; bad when it
// is not a decimal number, not a whole number of nanoseconds, or outside
// Duration's range.
export function parseDuration(text: string, unit: number): Parsed<DurationValue> {
  if (!text.trim()) return { kind: 'empty' };
  const d = decimal(text);
  if (!d) return { kind: 'bad' };
  const scale = 10n ** BigInt(d.scale);
  const scaledNanos = d.digits * BigInt(unit) * NANOS;
  if (scaledNanos % scale !== 0n) return { kind: 'bad' };
  const total = scaledNanos / scale;
  const seconds = total / NANOS;
  if (seconds > MAX_DURATION_SECONDS) return { kind: 'bad' };
  const nanos = Number(total % NANOS);
  // Seconds and nanos of one sign (Duration's rule).
  return { kind: 'ok', value: d.neg ? { seconds: -seconds, nanos: nanos === 0 ? 0 : -nanos } : { seconds, nanos } };
}

// A Duration in units of `unit` seconds as plain decimal text ("0.25", "60"):
// exact when the quotient has at most nine decimals, else rounded to six
// (20 minutes is "0.333333" h). Unset is "".
export function durationText(d: { seconds: bigint; nanos: number } | undefined, unit: number): string {
  if (!d) return '';
  const total = d.seconds * NANOS + BigInt(d.nanos);
  const neg = total < 0n;
  const abs = neg ? -total : total;
  const den = BigInt(unit) * NANOS;
  let digits = 9;
  let q = (abs * 10n ** 9n) / den;
  if ((abs * 10n ** 9n) % den !== 0n) {
    digits = 6;
    q = (abs * 10n ** 6n * 2n + den) / (den * 2n); // rounded half up
  }
  let s = q.toString().padStart(digits + 1, '0');
  s = `${s.slice(0, -digits)}.${s.slice(-digits)}`.replace(/\.?0+$/, '');
  return neg && s !== '0' ? `-${s}` : s;
}

// A percentage with at most two decimals ("25", "2.5", "0.01") as basis
// points (2500, 250, 1).
export function parseBps(text: string): Parsed<number> {
  if (!text.trim()) return { kind: 'empty' };
  const d = decimal(text);
  if (!d || d.scale > 2) return { kind: 'bad' };
  const bps = d.digits * 10n ** BigInt(2 - d.scale) * (d.neg ? -1n : 1n);
  if (bps > INT32_MAX || bps < INT32_MIN) return { kind: 'bad' };
  return { kind: 'ok', value: Number(bps) };
}

// Basis points as the percentage typed (2500 -> "25", 250 -> "2.5").
export function bpsText(bps: number): string {
  const neg = bps < 0;
  const abs = Math.abs(Math.trunc(bps));
  const frac = String(abs % 100).padStart(2, '0').replace(/0+$/, '');
  const s = `${Math.floor(abs / 100)}${frac ? `.${frac}` : ''}`;
  return neg ? `-${s}` : s;
}

// A whole number that fits an int32 field.
export function parseInt32(text: string): Parsed<number> {
  const s = text.trim();
  if (!s) return { kind: 'empty' };
  if (!/^-?\d+$/.test(s)) return { kind: 'bad' };
  const v = BigInt(s);
  if (v > INT32_MAX || v < INT32_MIN) return { kind: 'bad' };
  return { kind: 'ok', value: Number(v) };
}
