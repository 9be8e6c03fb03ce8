// The billing service's rules as pure functions: prices of usage, fees,
// lease rent and technical services, cost splits, subsidies, ledger postings,
// settlement and billing periods. No storage, no RPC, no clock: every time
// ("now", the posting time) and the consortium time zone are parameters.
//
// Money is an int64 number of minor units; nothing here uses floating point.
// Products are formed in 128 bits and rounded as the contract's file comment
// says (proto/labshare/billing/v1/billing.proto, "Rounding"):
// - charge amounts: unit price x exact quantity, rounded half up;
// - fees: fee_bps of the base amount, rounded half up;
// - splits: largest remainder, ties by agreement order;
// - subsidies: floor(eligible x percentage_bps / 10000), then limits.
// A result that does not fit in int64 is INVALID_ARGUMENT
// (AMOUNT_OUT_OF_RANGE).
//
// Errors: every rejection of input is INVALID_ARGUMENT built with
// common/error.h, carrying a reason (INVALID_FIELD unless stated) and the
// offending field. Ledger checks use the contract's PostCorrection reasons
// (UNBALANCED_POSTING, INVALID_ACCOUNT, INVALID_AMOUNT, CURRENCY_MISMATCH);
// periods use INVALID_PERIOD.
//
// Pricing functions return the pricing part of a v1::Charge (fee kind,
// source_key, applied rate, basis, intervals, billed time, quantity, amount
// and, for fees, fee_bps and base_amount); the functions that take a booking,
// lease or service order also fill the "what it is for" fields they know
// (mode, instrument, owner, payer, booking / lease / service_order / project,
// user). Names, source event, create time, subsidies and ledger links are the
// caller's.
//
// Thread-safety: every function is pure and reentrant.
#ifndef LABSHARE_SERVICES_BILLING_BILLING_RULES_H_
#define LABSHARE_SERVICES_BILLING_BILLING_RULES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "labshare/billing/v1/billing.pb.h"
#include "labshare/booking/v1/booking.pb.h"
#include "labshare/inventory/v1/inventory.pb.h"
#include "labshare/type/v1/types.pb.h"

namespace labshare::billing {

namespace bkv1 = labshare::booking::v1;
namespace invv1 = labshare::inventory::v1;
using labshare::type::v1::Money;
using labshare::type::v1::SharingMode;

inline constexpr char kDefaultTimeZone[] = "Asia/Shanghai";
inline constexpr int32_t kWholeBps = 10000;
// Settlement: exact minimum transfers up to this many non-zero positions
// (after exact opposite pairs are matched); greedy above.
inline constexpr int kDefaultMaxExactPositions = 16;

// ================================================================ money

// round_half_up(a * b / d) for a, b >= 0 and d > 0, computed exactly.
absl::StatusOr<int64_t> MulDivRoundHalfUp(int64_t a, int64_t b, int64_t d);
// The VAT contained in a tax-inclusive amount at tax_rate_bps (0..10000):
// round-half-up(|amount| * r / (10000 + r)) with amount's sign (billing.proto
// "Tax"). INVALID_ARGUMENT (INVALID_FIELD) for a rate out of range.
absl::StatusOr<int64_t> TaxContained(int64_t amount, int32_t tax_rate_bps);
// floor(a * b / d) for a, b >= 0 and d > 0, computed exactly.
absl::StatusOr<int64_t> MulDivFloor(int64_t a, int64_t b, int64_t d);
// Three upper-case letters (ISO 4217 shape).
bool ValidCurrencyCode(absl::string_view code);
// A code of ISO 4217's list ("CNY", "USD"; not "RMB", not "ABC"): what a
// request naming a currency that only it brings into the ledger (a pool's,
// an invoice's or a settlement's currency_code) must give.
bool IsIso4217Code(absl::string_view code);
// A request's optional currency_code (an invoice's, a settlement's, a
// statement's or a report's): empty (the consortium currency) or a code of
// ISO 4217's list; another ("RMB", "cny") is INVALID_FIELD currency_code
// rather than an answer of nothing in a currency no ledger line has.
absl::Status CheckRequestCurrency(absl::string_view code);
Money MakeMoney(absl::string_view currency_code, int64_t amount_minor);
// The largest amount billing accepts in any money input or computes for one
// charge, payment, top-up or posting entry: 10^15 minor units (10 trillion
// CNY). Well below 2^53, so sums of many such amounts stay exact in the
// ledger step's Lua arithmetic (see kMaxCounter in billing_store.h).
inline constexpr int64_t kMaxAmountMinor = 1000000000000000;

// A money field that must be present: valid currency, amount >= 0 (> 0 when
// `positive`) and at most kMaxAmountMinor (INVALID_FIELD). `field` names it
// in the error.
absl::Status ValidateAmount(const Money& money, absl::string_view field, bool positive = false);

// ================================================================ time

// A half-open [start, end). end == absl::InfiniteFuture() means open-ended.
struct TimeRange {
  absl::Time start;
  absl::Time end;
  absl::Duration length() const { return end - start; }
  bool operator==(const TimeRange& o) const { return start == o.start && end == o.end; }
};
// An open end (InfiniteFuture) leaves end_time unset.
labshare::type::v1::Interval ToInterval(const TimeRange& range);
// Both times required and start <= end (start < end when `non_empty`);
// with `allow_open_end` an unset end_time becomes InfiniteFuture.
absl::StatusOr<TimeRange> RangeFromInterval(const labshare::type::v1::Interval& interval,
                                            absl::string_view field, bool non_empty = true,
                                            bool allow_open_end = false);

// The consortium time zone by IANA name; "" is kDefaultTimeZone.
absl::StatusOr<absl::TimeZone> LoadBillingTimeZone(absl::string_view name);

// ================================================================ billing periods

// "YYYY-MM" of the calendar month containing `t` in `tz`.
std::string PeriodOf(absl::Time t, absl::TimeZone tz);
// Exactly "YYYY-MM" (4-digit year, month 01..12); INVALID_PERIOD otherwise.
absl::StatusOr<absl::CivilMonth> ParsePeriod(absl::string_view period);
std::string FormatPeriod(absl::CivilMonth month);
// The month's half-open interval in `tz`.
absl::StatusOr<TimeRange> PeriodRange(absl::string_view period, absl::TimeZone tz);
absl::StatusOr<std::string> NextPeriod(absl::string_view period);
absl::StatusOr<std::string> PreviousPeriod(absl::string_view period);
// True when the period's end is at or before `now`.
absl::StatusOr<bool> PeriodEnded(absl::string_view period, absl::Time now, absl::TimeZone tz);
// The periods a finite, non-empty range touches, oldest first.
absl::StatusOr<std::vector<std::string>> PeriodsTouched(const TimeRange& range, absl::TimeZone tz);
// Subsidy cap period (calendar month, quarter Jan-Mar/Apr-Jun/..., or year
// in `tz`) containing `t`.
absl::StatusOr<TimeRange> CapPeriodRange(v1::PeriodKind kind, absl::Time t, absl::TimeZone tz);
// Calendar days in `tz` that the range touches: a started day counts whole;
// an end exactly at midnight does not touch the next day. 0 when empty.
absl::StatusOr<int64_t> CalendarDaysTouched(const TimeRange& range, absl::TimeZone tz);
int DaysInMonth(absl::CivilMonth month);

// ================================================================ usage and booking fees

// The instrument's billing policy for time slots (inventory SlotRules).
struct BillingPolicy {
  v1::ChargeBasis basis = v1::RESERVED_TIME;  // RESERVED_TIME, ACTUAL_TIME or GREATER_OF_...
  absl::Duration billing_unit;                 // billed time rounds up to a multiple; 0: none
  absl::Duration minimum_charge;               // billed time is at least this
  int32_t missed_fee_bps = 0;                  // 0..10000
  int32_t late_cancel_fee_bps = 0;             // 0..10000
};
absl::Status ValidatePolicy(const BillingPolicy& policy);
absl::StatusOr<BillingPolicy> PolicyFromSlotRules(const invv1::SlotRules& rules);
// The terms booking pinned on a slot booking when it was created
// (Booking.billing_terms): what billing prices the booking with.
absl::StatusOr<BillingPolicy> PolicyFromBillingTerms(const bkv1::BillingTerms& terms);
// A booking without billing_terms (created before booking pinned them) whose
// mode its instrument no longer offers: ACTUAL_TIME, no billing unit, no
// minimum, missed and late-cancellation fees 0 bps (as a technical-service
// order's late cancellation is priced with fee 0 when the instrument no
// longer offers TECHNICAL_SERVICE).
BillingPolicy WithdrawnModePolicy();

// The rate card line as billing copies it onto a charge. payer_tier is the
// payer's tier recorded when the booking was made (booking.payer_tier), kept
// for MEMBER lines.
// rate_name is composed, e.g. "CORE member, hourly", "non-member, per sample".
absl::StatusOr<v1::AppliedRate> AppliedRateFromLine(const invv1::Rate& line,
                                                    absl::string_view payer_tier);
v1::ChargeUnit ChargeUnitOf(invv1::RateUnit unit);          // UNSPECIFIED if none fits
v1::ChargeUnit ChargeUnitOf(invv1::ServiceUnit unit);       // PER_SAMPLE/PER_TEST

// The times an ON_SITE or JOINT_RESEARCH booking is billed on.
struct TimedUse {
  TimeRange reserved;
  std::optional<TimeRange> actual;  // check-in to check-out; none when missed
  bool interrupted_by_outage = false;
};
// reserved_interval (required, non-empty) and the session when it has both
// times.
absl::StatusOr<TimedUse> TimedUseFromBooking(const bkv1::Booking& booking);

// What a booking in its current state is charged (booking_events.proto):
// ON_SITE and JOINT_RESEARCH only; COMPLETED -> usage, MISSED -> missed fee,
// CANCELLED late and not by an outage -> late cancellation fee.
enum class BookingCharge { kNone, kUsage, kMissedBookingFee, kLateCancellationFee };
BookingCharge ChargeForBooking(const bkv1::Booking& booking);
// The policy's basis points for a fee (missed or late cancellation); nullopt
// for usage and none. A fee of 0 bps is not charged at all (no zero-amount
// charge, no ChargePosted).
std::optional<int32_t> FeeBpsFor(BookingCharge what, const BillingPolicy& policy);

// The time billed: the basis (ACTUAL_TIME whatever the policy when the
// session was interrupted by an outage), rounded up to billing_unit, then
// raised to minimum_charge.
struct BilledTime {
  v1::ChargeBasis basis = v1::CHARGE_BASIS_UNSPECIFIED;
  TimeRange service;         // the interval whose length was billed
  absl::Duration measured;   // before rounding and minimum
  absl::Duration billed;
  bool minimum_applied = false;
};
absl::StatusOr<BilledTime> ComputeBilledTime(const BillingPolicy& policy, const TimedUse& use);

// round_half_up(unit_price * billed / 1 h), exact to the nanosecond.
absl::StatusOr<int64_t> HourlyAmount(int64_t unit_price, absl::Duration billed);
// billed / 1 h in thousandths, rounded half up (display only).
absl::StatusOr<int64_t> HoursMilli(absl::Duration billed);
// round_half_up(base * bps / 10000); bps 0..10000.
absl::StatusOr<int64_t> FeeAmount(int64_t base_amount, int32_t fee_bps);

// USAGE charge. The rate must be UNIT_HOUR.
absl::StatusOr<v1::Charge> PriceUsage(const v1::AppliedRate& rate, const BillingPolicy& policy,
                                      const TimedUse& use);
// MISSED_BOOKING_FEE / LATE_CANCELLATION_FEE: the policy's bps of the
// reserved-time charge, i.e. the USAGE charge the reserved interval would
// cost on basis RESERVED_TIME (billing unit and minimum included). The
// charge's billed_duration, quantity_milli, billing_increment and
// minimum_charge describe that base; base_amount is its amount.
absl::StatusOr<v1::Charge> PriceBookingFee(v1::FeeKind kind, const v1::AppliedRate& rate,
                                           const BillingPolicy& policy, const TimeRange& reserved);
// The charge a booking in its state calls for (ChargeForBooking), with the
// booking's fields and, for JOINT_RESEARCH, its splits; nullopt when none
// (also for a fee of 0 bps or one that rounds to 0 minor units).
absl::StatusOr<std::optional<v1::Charge>> PriceBooking(const bkv1::Booking& booking,
                                                       const v1::AppliedRate& rate,
                                                       const BillingPolicy& policy);

// ================================================================ lease

// The time a handed-over lease is charged for: from handover to return;
// the end is InfiniteFuture while it is out (so extensions and late returns
// are charged until the return, early returns stop at it).
absl::StatusOr<TimeRange> LeaseChargedRange(const bkv1::Lease& lease);
// The periods with rent to charge from handover up to min(return, until).
absl::StatusOr<std::vector<std::string>> LeasePeriods(const bkv1::Lease& lease, absl::Time until,
                                                      absl::TimeZone tz);
// LEASE_PERIOD charge for the part of the charged range inside `period`:
// DAILY: rate x calendar days touched; MONTHLY: round_half_up(rate x days /
// days in that month). INVALID_ARGUMENT (NOT_IN_PERIOD) when the lease was
// not out during the period. Call it for an ended period or on return.
absl::StatusOr<v1::Charge> PriceLeasePeriod(const bkv1::Lease& lease, absl::string_view period,
                                            absl::TimeZone tz);

// applied = min(deposit, damage), released = deposit - applied,
// damage_outstanding = damage - applied. Same currency; an empty damage
// (no currency, zero) counts as zero.
struct DepositSettlement {
  Money applied;
  Money released;
  Money damage_outstanding;
};
absl::StatusOr<DepositSettlement> SettleDeposit(const Money& deposit, const Money& damage);
// From lease.contract.deposit and lease.return_record.damage_amount; when
// the lease carries booking's settlement it must agree
// (INVALID_ARGUMENT SETTLEMENT_MISMATCH otherwise).
absl::StatusOr<DepositSettlement> LeaseDepositSettlement(const bkv1::Lease& lease);
// DEPOSIT charge at handover; nullopt for a zero deposit.
absl::StatusOr<std::optional<v1::Charge>> PriceDeposit(const bkv1::Lease& lease);
// DAMAGE charge for the damage beyond the deposit; nullopt when none.
absl::StatusOr<std::optional<v1::Charge>> PriceDamage(const bkv1::Lease& lease);

// ================================================================ technical service

// The charges of a COMPLETED order from its accepted quote: TECHNICAL_SERVICE
// (per_sample_fee x sample_count, unit UNIT_SAMPLE or UNIT_TEST as the
// catalogue entry says), STAFF_TIME (the quoted staff fee, UNIT_FLAT,
// billed_duration = quoted staff time) and CONSUMABLES (UNIT_FLAT), in that
// order, source keys "sample-fee", "staff-time", "consumables". Lines of
// amount zero are left out. A quote total that disagrees with its parts is
// INVALID_ARGUMENT (QUOTE_TOTAL_MISMATCH). `tz` dates the rate name
// ("quote of 2025-03-02").
absl::StatusOr<std::vector<v1::Charge>> PriceServiceOrder(const bkv1::ServiceOrder& order,
                                                          v1::ChargeUnit unit, absl::TimeZone tz);
// LATE_CANCELLATION_FEE of an order cancelled late: fee_bps (the
// TECHNICAL_SERVICE slot rule's late_cancel_fee_bps) of the quote's total;
// nullopt when that fee is 0 minor units (0 bps, or rounded to 0).
absl::StatusOr<std::optional<v1::Charge>> PriceServiceOrderCancellation(const bkv1::ServiceOrder& order,
                                                                        int32_t fee_bps);

// ================================================================ splits

// Largest remainder over shares in basis points summing to exactly 10000
// (each >= 0): floor parts, then the left-over minor units one each to the
// largest discarded remainders, ties by position. Parts sum to `amount`.
absl::StatusOr<std::vector<int64_t>> SplitLargestRemainder(int64_t amount,
                                                           const std::vector<int32_t>& shares_bps);
// One ChargeSplit per share, in agreement order; the owner's is in_kind.
// Organisations must be distinct "organizations/{id}" names.
absl::StatusOr<std::vector<v1::ChargeSplit>> SplitCharge(const Money& amount,
                                                         const std::vector<bkv1::CostShare>& shares,
                                                         absl::string_view owner_organization);

// ================================================================ subsidies

// The attributes of a charge that eligibility reads.
struct SubsidyCharge {
  std::string owner_organization;
  SharingMode mode = labshare::type::v1::SHARING_MODE_UNSPECIFIED;
  std::string instrument_category;
  v1::FeeKind fee_kind = v1::FEE_KIND_UNSPECIFIED;
  std::string currency_code;
  absl::Time posting_time;  // picks validity and the cap period
};
// One organisation whose part of the charge may be relieved.
struct SubsidyBeneficiary {
  std::string organization;
  v1::SizeClass size_class = v1::SIZE_CLASS_UNSPECIFIED;
  int64_t part = 0;
};
// A pool as the ledger has it at posting time.
struct PoolFunds {
  v1::SubsidyPool pool;   // terms: name, currency, percentage, eligibility, cap, validity, priority
  int64_t balance = 0;    // POOL_FUNDS balance
  // Granted per beneficiary organisation in the cap period containing the
  // posting time, net of reversals; absent = 0.
  std::map<std::string, int64_t> cap_used;
};

// The beneficiaries of a charge: for JOINT_RESEARCH every split that is not
// in kind, else the payer when it is not the owner; DEPOSIT and DAMAGE none.
// Parts only; the caller adds each organisation's size class.
std::vector<SubsidyBeneficiary> BeneficiariesOf(const v1::Charge& charge);
// DEPOSIT and DAMAGE (and UNSPECIFIED) are never subsidised.
bool FeeKindSubsidisable(v1::FeeKind kind);
// Why the pool does not cover this beneficiary's part of this charge; ""
// when it does. Checks currency, validity at posting time, fee kind, owner,
// and every non-empty eligibility list.
std::string IneligibilityReason(const v1::SubsidyPool& pool, const SubsidyCharge& charge,
                                const SubsidyBeneficiary& beneficiary);
// The organisation-profile part only (size class), for SubsidyAllowance:
// "" when eligible, else e.g. "size class LARGE not covered".
std::string ProfileIneligibilityReason(const v1::SubsidyPool& pool, v1::SizeClass size_class);
// SubsidyAllowance.remaining: min(cap - used, balance), the balance when
// uncapped, never negative.
int64_t AllowanceRemaining(const v1::SubsidyPool& pool, int64_t used, int64_t balance);
// CreateSubsidyPool's checks on the terms (not the id), in its Errors
// order. The currency is checked where its shape is, before the cap (whose
// currency must be the pool's): against ISO 4217's list
// (kIso4217: a new pool), or its shape alone (kShapeOnly: a stored pool's
// currency, which never changes and may predate the list check).
enum class PoolCurrencyCheck { kIso4217, kShapeOnly };
absl::Status ValidateSubsidyPool(const v1::SubsidyPool& pool,
                                 PoolCurrencyCheck currency = PoolCurrencyCheck::kIso4217);

// The subsidy lines of one charge. Pools in ascending priority then name;
// for each pool, each beneficiary in the given order. Each line pays
// floor(part x bps / 10000) limited by the beneficiary's cap remaining in
// that pool (cap - cap_used), the pool's balance (less what earlier lines of
// this charge took from it; a negative balance counts as 0) and what earlier
// pools left of the part. limited_by names the binding limit
// (ORGANIZATION_CAP before POOL_BALANCE on a tie); a line cut only by what
// earlier pools left has LIMIT_UNSPECIFIED (the contract has no value for
// it). Lines paying 0 are left out. cap_period is set for capped pools;
// posting is the caller's.
absl::StatusOr<std::vector<v1::SubsidyLine>> ApplySubsidies(
    const SubsidyCharge& charge, const std::vector<SubsidyBeneficiary>& beneficiaries,
    const std::vector<PoolFunds>& pools, absl::TimeZone tz);

// Sets subsidy_total, payable_amount and service_income from amount,
// splits, subsidy_lines, payer, owner and fee kind (Charge field comments).
absl::Status FillChargeTotals(v1::Charge& charge);

// ================================================================ ledger

// "receivable", "deposit-held", "pool-funds", ...; "" for UNSPECIFIED.
std::string AccountKindSlug(v1::AccountKind kind);
absl::StatusOr<v1::AccountKind> AccountKindFromSlug(absl::string_view slug);
bool IsOrganizationAccountKind(v1::AccountKind kind);
bool IsPoolAccountKind(v1::AccountKind kind);
// RECEIVABLE, PAYABLE, CASH and POOL_PAYABLE.
bool RequiresCounterparty(v1::AccountKind kind);
v1::NormalSide NormalSideOf(v1::AccountKind kind);
// "{owner}/accounts/{slug}", owner "organizations/{o}" or "subsidyPools/{f}".
std::string AccountName(absl::string_view owner, v1::AccountKind kind);
struct AccountRef {
  std::string owner;  // "organizations/{o}" or "subsidyPools/{f}"
  v1::AccountKind kind = v1::ACCOUNT_KIND_UNSPECIFIED;
};
// INVALID_ARGUMENT (INVALID_NAME, naming the request field `field`) when
// malformed or the kind does not belong to the owner's type.
absl::StatusOr<AccountRef> ParseAccountName(absl::string_view account, absl::string_view field = "account");
bool IsOrganizationName(absl::string_view name);
bool IsSubsidyPoolName(absl::string_view name);

v1::Entry DebitEntry(absl::string_view account, absl::string_view counterparty, const Money& amount);
v1::Entry CreditEntry(absl::string_view account, absl::string_view counterparty,
                      const Money& amount);

// The standard postings of the contract's ledger model, entries in the
// order written there. Parties are resource names; amounts positive.
// P != O: Dr P.EXPENSE, Cr P.PAYABLE(O); Dr O.RECEIVABLE(P), Cr O.INCOME(P)
// (Cr O.COMPENSATION(P) for DAMAGE; DEPOSIT is rejected: use DepositHold).
absl::StatusOr<std::vector<v1::Entry>> ChargeEntries(absl::string_view payer,
                                                     absl::string_view owner, const Money& amount,
                                                     v1::FeeKind fee_kind);
// Dr O.EXPENSE, Cr O.INTERNAL_USE.
absl::StatusOr<std::vector<v1::Entry>> InternalUseEntries(absl::string_view owner,
                                                          const Money& amount);
// Dr O.EXPENSE, Cr O.IN_KIND_CONTRIBUTION.
absl::StatusOr<std::vector<v1::Entry>> InKindEntries(absl::string_view owner, const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> SubsidyEntries(absl::string_view pool,
                                                      absl::string_view beneficiary,
                                                      absl::string_view owner,
                                                      const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> DepositHoldEntries(absl::string_view lessee,
                                                          absl::string_view owner,
                                                          const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> DepositReleaseEntries(absl::string_view owner,
                                                             absl::string_view lessee,
                                                             const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> DepositApplicationEntries(absl::string_view owner,
                                                                 absl::string_view lessee,
                                                                 const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> PaymentEntries(absl::string_view payer,
                                                      absl::string_view payee,
                                                      const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> PoolPaymentEntries(absl::string_view pool,
                                                          absl::string_view owner,
                                                          const Money& amount);
absl::StatusOr<std::vector<v1::Entry>> PoolTopUpEntries(absl::string_view pool,
                                                        const Money& amount);
// The CHARGE posting of a priced charge: DEPOSIT -> deposit hold; splits ->
// per participant (in kind for the owner's); payer == owner -> internal
// use; else ChargeEntries. Parts of zero produce no entries; a zero charge
// yields an empty list (nothing to post).
absl::StatusOr<std::vector<v1::Entry>> ChargePostingEntries(const v1::Charge& charge);
// The SUBSIDY posting of one line of `charge`.
absl::StatusOr<std::vector<v1::Entry>> SubsidyLineEntries(const v1::SubsidyLine& line,
                                                          const v1::Charge& charge);
// The mirror of a posting (debits become credits), for REVERSE corrections.
std::vector<v1::Entry> ReverseEntries(const std::vector<v1::Entry>& entries);

struct BalanceCheckOptions {
  // When set, every entry must be in it (else CURRENCY_MISMATCH).
  std::string currency_code;
  // Also require each organisation's and pool's entries to balance on their
  // own (true of every standard posting and of settlement netting; caller
  // ADJUST corrections may need only the overall balance).
  bool per_owner = true;
  // Also require the counterparty of each PAYABLE and POOL_PAYABLE entry to
  // be an organisation (else INVALID_ACCOUNT): what is owed is owed to an
  // organisation; a pool is a counterparty only where the standard postings
  // name one (an owner's RECEIVABLE and CASH; SUBSIDY_RECEIVED,
  // informative). Set for caller-supplied entries (ADJUST).
  bool owed_to_organizations = false;
};
// A valid posting: at least two entries; each with exactly one of debit and
// credit, positive (INVALID_AMOUNT); one currency (CURRENCY_MISMATCH); a
// well-formed account, a counterparty where required and never the
// account's own owner, and an organisation where `owed_to_organizations`
// asks (INVALID_ACCOUNT); debits == credits overall and per owner when
// asked (UNBALANCED_POSTING).
absl::Status CheckBalanced(const std::vector<v1::Entry>& entries,
                           const BalanceCheckOptions& options = {});

// ================================================================ settlement

// An open amount between two organisations: debtor owes creditor `amount`
// (negative: the other way round). From the open invoice lines.
struct OpenAmount {
  std::string debtor;
  std::string creditor;
  int64_t amount = 0;
};
struct NetPosition {
  std::string organization;
  int64_t net = 0;  // positive receives, negative pays
};

// Every organisation with an open amount, by name (owed_to, owed_by, net).
absl::StatusOr<std::vector<v1::OrganizationPosition>> ComputePositions(
    const std::vector<OpenAmount>& open, absl::string_view currency_code);
// Every pair with a non-zero net, by debtor then creditor, with the gross
// amounts each way.
absl::StatusOr<std::vector<v1::PairBalance>> ComputePairBalances(
    const std::vector<OpenAmount>& open, absl::string_view currency_code);

enum class TransferStrategy {
  // What Settlement.transfers describes: exact opposite pairs first, then
  // repeatedly the largest debtor pays the largest creditor, ties by name.
  kContractGreedy,
  // The same pairs first, then the fewest transfers for the rest (exact up
  // to max_exact positions: the most zero-sum groups, settled greedily
  // inside each group), kContractGreedy beyond.
  kMinimal,
};
struct TransferOptions {
  TransferStrategy strategy = TransferStrategy::kMinimal;
  int max_exact = kDefaultMaxExactPositions;
};
// Transfers clearing the positions (which must sum to zero; names distinct):
// each organisation only pays or only receives, at most N - 1 transfers for
// N non-zero positions. Ordered by payer then payee; index set.
absl::StatusOr<std::vector<v1::SettlementTransfer>> PlanTransfers(
    const std::vector<NetPosition>& positions, absl::string_view currency_code,
    const TransferOptions& options = {});
// positions, pair_balances, transfers, gross_total (sum of |open amounts|)
// and transfer_total of a settlement over the open amounts.
absl::StatusOr<v1::Settlement> ComputeSettlement(const std::vector<OpenAmount>& open,
                                                 absl::string_view currency_code,
                                                 const TransferOptions& options = {});
// SETTLEMENT_NETTING entries: close every original receivable/payable pair
// where it sits (the debtor's PAYABLE, the creditor's RECEIVABLE, also for
// a negative open amount) and open one per transfer, netted per (account,
// counterparty); they touch RECEIVABLE and PAYABLE only and net to zero per
// organisation.
absl::StatusOr<std::vector<v1::Entry>> SettlementNettingEntries(
    const std::vector<OpenAmount>& open, const std::vector<v1::SettlementTransfer>& transfers,
    absl::string_view currency_code);

}  // namespace labshare::billing

#endif  // LABSHARE_SERVICES_BILLING_BILLING_RULES_H_
