// The late-cancellation preview, computed as billing computes the fee
// (services/billing/billing_rules.cc PriceBookingFee): the reserved time is
// rounded up to the rule's billing_unit and raised to minimum_charge; the
// base is the hourly price times that time (round half up); the fee is
// late_cancel_fee_bps of the base (round half up).
import type { Duration } from '@bufbuild/protobuf/wkt';
import type { Money } from '../../../../gen/labshare/type/v1/types_pb';
import type { SlotRules } from '../../../../gen/labshare/inventory/v1/inventory_pb';

const ns = (d: Duration | undefined): bigint => (d ? d.seconds * 1_000_000_000n + BigInt(d.nanos) : 0n);
const HOUR_NS = 3_600_000_000_000n;
// Round half up of a * b / c for non-negative values.
export function mulDivHalfUp(a: bigint, b: bigint, c: bigint): bigint {
  return (a * b * 2n + c) / (2n * c);
}

export interface FeePreview {
  billedNs: bigint;
  base: Money;
  fee: Money;
  feeBps: number;
  minimumApplied: boolean;
}

export function lateCancelFee(rules: SlotRules, hourly: Money, reservedMs: number): FeePreview {
  const measured = BigInt(reservedMs) * 1_000_000n;
  const unit = ns(rules.billingUnit);
  const rounded = unit > 0n ? ((measured + unit - 1n) / unit) * unit : measured;
  const min = ns(rules.minimumCharge);
  const minimumApplied = min > rounded;
  const billedNs = minimumApplied ? min : rounded;
  const base = mulDivHalfUp(hourly.amountMinor, billedNs, HOUR_NS);
  const fee = mulDivHalfUp(base, BigInt(rules.lateCancelFeeBps), 10000n);
  const cur = hourly.currencyCode;
  return {
    billedNs, minimumApplied, feeBps: rules.lateCancelFeeBps,
    base: { $typeName: 'labshare.type.v1.Money', currencyCode: cur, amountMinor: base },
    fee: { $typeName: 'labshare.type.v1.Money', currencyCode: cur, amountMinor: fee },
  };
}
export const durationMs = (d: Duration | undefined): number => Number(ns(d) / 1_000_000n);

// Whether the cancel panel's confirm button can be pressed: not while a
// cancellation is under way; once the fee preview is in, or once the preview
// failed (the fee is then shown as unknown: the service decides it when the
// person confirms, so a failed preview must not keep them from cancelling).
export function cancelConfirmable(busy: boolean, preview: object | undefined, previewFailed: boolean): boolean {
  return !busy && (preview !== undefined || previewFailed);
}
