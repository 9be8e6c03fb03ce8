#include "services/billing/billing_rules.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <tuple>
#include <utility>

#include <google/protobuf/descriptor.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/error.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "common/time_zone.h"

namespace labshare::billing {
namespace {

namespace tv1 = labshare::type::v1;
using i128 = __int128;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kNanosPerHour = int64_t{3600} * 1000 * 1000 * 1000;
// Longest range PeriodsTouched lists (a millennium of months).
constexpr int64_t kMaxPeriods = 12 * 1000;

absl::Status OutOfRange(absl::string_view field) {
  return InvalidField(std::string(field), "the amount does not fit in 64-bit minor units",
                      "AMOUNT_OUT_OF_RANGE");
}

absl::StatusOr<int64_t> Narrow(i128 v, absl::string_view field) {
  if (v > static_cast<i128>(kInt64Max) || v < static_cast<i128>(kInt64Min)) {
    return OutOfRange(field);
  }
  return static_cast<int64_t>(v);
}

bool ValidId(absl::string_view id) { return ValidResourceId(id); }

bool IsName(absl::string_view name, absl::string_view collection) { return IsResourceName(name, collection); }

absl::Status CheckOrganization(absl::string_view name, absl::string_view field) {
  if (IsOrganizationName(name)) return absl::OkStatus();
  return InvalidField(std::string(field),
                      absl::StrCat("must be 'organizations/{id}', got '", name, "'"));
}

absl::Status CheckPool(absl::string_view name, absl::string_view field) {
  if (IsSubsidyPoolName(name)) return absl::OkStatus();
  return InvalidField(std::string(field),
                      absl::StrCat("must be 'subsidyPools/{id}', got '", name, "'"));
}

// A Money that may be left empty for zero: no currency and no amount.
bool IsEmptyZero(const Money& m) { return m.currency_code().empty() && m.amount_minor() == 0; }

std::string ChargeUnitWord(v1::ChargeUnit unit) {
  switch (unit) {
    case v1::UNIT_HOUR: return "hourly";
    case v1::UNIT_DAY: return "daily";
    case v1::UNIT_MONTH: return "monthly";
    case v1::UNIT_SAMPLE: return "per sample";
    case v1::UNIT_TEST: return "per test";
    case v1::UNIT_ITEM: return "per item";
    case v1::UNIT_FLAT: return "flat";
    default: return "unknown unit";
  }
}

std::string PayerClassWords(tv1::PayerClass cls, absl::string_view tier) {
  switch (cls) {
    case tv1::OWNER: return "owner";
    case tv1::MEMBER: return tier.empty() ? "member" : absl::StrCat(tier, " member");
    case tv1::NON_MEMBER: return "non-member";
    default: return "unknown payer class";
  }
}

absl::Duration RoundUpTo(absl::Duration d, absl::Duration unit) {
  if (unit <= absl::ZeroDuration()) return d;
  absl::Duration rem;
  int64_t q = absl::IDivDuration(d, unit, &rem);
  if (rem > absl::ZeroDuration()) ++q;
  return unit * q;
}

absl::Status ValidateHourlyRate(const v1::AppliedRate& rate) {
  if (rate.unit() != v1::UNIT_HOUR) {
    return InvalidField("rate.unit", absl::StrCat("time is priced per hour; got ",
                                                  v1::ChargeUnit_Name(rate.unit())));
  }
  return ValidateAmount(rate.unit_price(), "rate.unit_price");
}

void SetTimeFields(v1::Charge& c, const BilledTime& bt, const BillingPolicy& policy,
                   const TimedUse& use, int64_t quantity_milli) {
  c.set_basis(bt.basis);
  *c.mutable_service_interval() = ToInterval(bt.service);
  *c.mutable_reserved_interval() = ToInterval(use.reserved);
  if (use.actual) *c.mutable_actual_interval() = ToInterval(*use.actual);
  *c.mutable_billed_duration() = ToProto(bt.billed);
  c.set_quantity_milli(quantity_milli);
  *c.mutable_billing_increment() = ToProto(policy.billing_unit);
  *c.mutable_minimum_charge() = ToProto(policy.minimum_charge);
  c.set_minimum_charge_applied(bt.minimum_applied);
}

// The parts of an accepted quote, all in one currency.
struct QuoteParts {
  std::string currency;
  int64_t sample_fee = 0;  // per sample or test
  int64_t samples = 0;
  int64_t sample_amount = 0;
  int64_t staff = 0;
  int64_t consumables = 0;
  int64_t total = 0;
};

absl::StatusOr<QuoteParts> ReadQuote(const bkv1::ServiceOrder& order) {
  if (!order.has_quote()) {
    return InvalidField("service_order.quote", "the order has no accepted quote");
  }
  const bkv1::Quote& q = order.quote();
  QuoteParts parts;
  const std::vector<std::pair<const Money*, std::string>> monies = {
      {&q.per_sample_fee(), "service_order.quote.per_sample_fee"},
      {&q.staff_time_fee(), "service_order.quote.staff_time_fee"},
      {&q.consumables(), "service_order.quote.consumables"},
      {&q.total(), "service_order.quote.total"}};
  for (const auto& [m, field] : monies) {
    if (IsEmptyZero(*m)) continue;
    LS_RETURN_IF_ERROR(ValidateAmount(*m, field));
    if (parts.currency.empty()) {
      parts.currency = m->currency_code();
    } else if (m->currency_code() != parts.currency) {
      return InvalidField(field + ".currency_code",
                          absl::StrCat("must be the quote's currency ", parts.currency),
                          "CURRENCY_MISMATCH");
    }
  }
  if (parts.currency.empty()) {
    return InvalidField("service_order.quote", "the quote names no amount and no currency");
  }
  if (order.sample_count() < 1) {
    return InvalidField("service_order.sample_count", "at least one sample or test is charged");
  }
  parts.sample_fee = q.per_sample_fee().amount_minor();
  parts.samples = order.sample_count();
  LS_ASSIGN_OR_RETURN(parts.sample_amount,
                      Narrow(static_cast<i128>(parts.sample_fee) * parts.samples,
                             "service_order.quote.per_sample_fee"));
  parts.staff = q.staff_time_fee().amount_minor();
  parts.consumables = q.consumables().amount_minor();
  LS_ASSIGN_OR_RETURN(parts.total,
                      Narrow(static_cast<i128>(parts.sample_amount) + parts.staff + parts.consumables,
                             "service_order.quote.total"));
  if (!IsEmptyZero(q.total()) && q.total().amount_minor() != parts.total) {
    return InvalidField("service_order.quote.total",
                        absl::StrCat("is ", q.total().amount_minor(), " but per_sample_fee x ",
                                     parts.samples, " + staff_time_fee + consumables is ",
                                     parts.total),
                        "QUOTE_TOTAL_MISMATCH");
  }
  return parts;
}

// Fields every technical-service charge of an order carries.
v1::Charge ServiceOrderCharge(const bkv1::ServiceOrder& order) {
  v1::Charge c;
  c.set_mode(tv1::TECHNICAL_SERVICE);
  c.set_service_order(order.name());
  c.set_instrument(order.instrument());
  c.set_owner_organization(order.instrument_owner());
  c.set_payer_organization(order.client_organization());
  c.set_user(order.requester());
  if (order.has_scheduled_interval()) *c.mutable_service_interval() = order.scheduled_interval();
  return c;
}

v1::AppliedRate QuoteRate(const bkv1::ServiceOrder& order, absl::TimeZone tz) {
  v1::AppliedRate r;
  r.set_rate_name(order.quote().has_quote_time()
                      ? absl::StrCat("quote of ", absl::FormatTime("%Y-%m-%d",
                                                                    FromProto(order.quote().quote_time()),
                                                                    tz))
                      : "accepted quote");
  r.set_payer_class(order.payer_class());
  if (order.payer_class() == tv1::MEMBER) r.set_member_tier(order.payer_tier());
  r.set_service_entry_id(order.service_entry_id());
  if (order.quote().has_quote_time()) *r.mutable_effective_time() = order.quote().quote_time();
  return r;
}

// Fields every charge of a lease carries.
absl::StatusOr<v1::Charge> LeaseCharge(const bkv1::Lease& lease) {
  LS_RETURN_IF_ERROR(CheckOrganization(lease.instrument_owner(), "lease.instrument_owner"));
  LS_RETURN_IF_ERROR(CheckOrganization(lease.lessee_organization(), "lease.lessee_organization"));
  v1::Charge c;
  c.set_mode(tv1::LEASE);
  c.set_lease(lease.name());
  c.set_instrument(lease.instrument());
  c.set_owner_organization(lease.instrument_owner());
  c.set_payer_organization(lease.lessee_organization());
  c.set_user(lease.contact_user());
  return c;
}

v1::AppliedRate LeaseRate(const bkv1::Lease& lease, absl::string_view name, const Money& price,
                          v1::ChargeUnit unit) {
  v1::AppliedRate r;
  r.set_rate_name(std::string(name));
  r.set_payer_class(lease.payer_class());
  if (lease.payer_class() == tv1::MEMBER) r.set_member_tier(lease.payer_tier());
  *r.mutable_unit_price() = price;
  r.set_unit(unit);
  if (lease.contract().has_approve_time()) *r.mutable_effective_time() = lease.contract().approve_time();
  return r;
}

bool SameMoney(const Money& a, const Money& b) {
  if (a.amount_minor() != b.amount_minor()) return false;
  return a.currency_code() == b.currency_code() || a.currency_code().empty() ||
         b.currency_code().empty();
}

// ------------------------------------------------------------ ledger helpers

absl::Status CheckPositive(const Money& amount) { return ValidateAmount(amount, "amount", true); }

absl::Status CheckDistinct(absl::string_view a, absl::string_view b, absl::string_view field) {
  if (a == b) {
    return InvalidField(std::string(field), absl::StrCat("must differ from the other party ", a));
  }
  return absl::OkStatus();
}

std::string Acct(absl::string_view owner, v1::AccountKind kind) { return AccountName(owner, kind); }

// ------------------------------------------------------------ settlement helpers

struct Party {
  std::string name;
  i128 net = 0;  // positive receives
};

struct PlannedTransfer {
  std::string from;
  std::string to;
  i128 amount = 0;
};

// Largest debtor pays largest creditor, ties by name, until all are zero.
// The parties must sum to zero.
void SettleGreedy(std::vector<Party> parties, std::vector<PlannedTransfer>& out) {
  for (;;) {
    int debtor = -1;
    int creditor = -1;
    for (int i = 0; i < static_cast<int>(parties.size()); ++i) {
      const Party& p = parties[i];
      if (p.net < 0 && (debtor < 0 || -p.net > -parties[debtor].net ||
                        (-p.net == -parties[debtor].net && p.name < parties[debtor].name))) {
        debtor = i;
      }
      if (p.net > 0 && (creditor < 0 || p.net > parties[creditor].net ||
                        (p.net == parties[creditor].net && p.name < parties[creditor].name))) {
        creditor = i;
      }
    }
    if (debtor < 0 || creditor < 0) return;
    const i128 amount = std::min(-parties[debtor].net, parties[creditor].net);
    out.push_back({parties[debtor].name, parties[creditor].name, amount});
    parties[debtor].net += amount;
    parties[creditor].net -= amount;
  }
}

// Partition into the most zero-sum groups (each party in exactly one).
// Exact; O(n 2^n).
std::vector<std::vector<Party>> MaxZeroSumGroups(const std::vector<Party>& parties) {
  const int n = static_cast<int>(parties.size());
  const uint32_t full = (uint32_t{1} << n) - 1;
  std::vector<i128> sums(static_cast<size_t>(full) + 1, 0);
  std::vector<uint8_t> dp(static_cast<size_t>(full) + 1, 0);
  for (uint32_t mask = 1; mask <= full; ++mask) {
    const int low = __builtin_ctz(mask);
    sums[mask] = sums[mask & (mask - 1)] + parties[low].net;
    uint8_t best = 0;
    for (int i = 0; i < n; ++i) {
      if (mask & (uint32_t{1} << i)) best = std::max(best, dp[mask ^ (uint32_t{1} << i)]);
    }
    dp[mask] = static_cast<uint8_t>(best + (sums[mask] == 0 ? 1 : 0));
  }
  // Walk back one element at a time along an optimal order; the zero-sum
  // prefixes of that order cut it into the groups.
  std::vector<int> order;
  uint32_t mask = full;
  while (mask != 0) {
    const int target = dp[mask] - (sums[mask] == 0 ? 1 : 0);
    for (int i = 0; i < n; ++i) {
      const uint32_t bit = uint32_t{1} << i;
      if ((mask & bit) && dp[mask ^ bit] == target) {
        order.push_back(i);
        mask ^= bit;
        break;
      }
    }
  }
  std::reverse(order.begin(), order.end());
  std::vector<std::vector<Party>> groups;
  std::vector<Party> current;
  i128 running = 0;
  for (int i : order) {
    current.push_back(parties[i]);
    running += parties[i].net;
    if (running == 0) {
      groups.push_back(std::move(current));
      current.clear();
    }
  }
  return groups;
}

struct NormalizedOpen {
  std::string debtor;
  std::string creditor;
  i128 amount = 0;  // > 0
};

absl::StatusOr<std::vector<NormalizedOpen>> NormalizeOpen(const std::vector<OpenAmount>& open,
                                                          absl::string_view currency_code) {
  if (!ValidCurrencyCode(currency_code)) {
    return InvalidField("currency_code", "must be an ISO 4217 code such as CNY");
  }
  std::vector<NormalizedOpen> out;
  for (size_t i = 0; i < open.size(); ++i) {
    const OpenAmount& o = open[i];
    const std::string f = absl::StrCat("open[", i, "]");
    LS_RETURN_IF_ERROR(CheckOrganization(o.debtor, f + ".debtor"));
    LS_RETURN_IF_ERROR(CheckOrganization(o.creditor, f + ".creditor"));
    LS_RETURN_IF_ERROR(CheckDistinct(o.creditor, o.debtor, f + ".creditor"));
    if (o.amount == 0) continue;
    if (o.amount > 0) {
      out.push_back({o.debtor, o.creditor, static_cast<i128>(o.amount)});
    } else {
      out.push_back({o.creditor, o.debtor, -static_cast<i128>(o.amount)});
    }
  }
  return out;
}

}  // namespace

// ================================================================ money

absl::StatusOr<int64_t> MulDivRoundHalfUp(int64_t a, int64_t b, int64_t d) {
  if (a < 0 || b < 0) return InvalidField("amount", "must not be negative");
  if (d <= 0) return InvalidField("divisor", "must be positive");
  const i128 p = static_cast<i128>(a) * b;
  i128 q = p / d;
  const i128 r = p % d;
  if (2 * r >= d) ++q;
  return Narrow(q, "amount");
}

absl::StatusOr<int64_t> TaxContained(int64_t amount, int32_t tax_rate_bps) {
  if (tax_rate_bps < 0 || tax_rate_bps > kWholeBps) {
    return InvalidField("tax_rate_bps", "must be between 0 and 10000");
  }
  const bool negative = amount < 0;
  if (amount == std::numeric_limits<int64_t>::min()) return InvalidField("amount", "out of range");
  LS_ASSIGN_OR_RETURN(int64_t tax, MulDivRoundHalfUp(negative ? -amount : amount, tax_rate_bps,
                                                     static_cast<int64_t>(kWholeBps) + tax_rate_bps));
  return negative ? -tax : tax;
}

absl::StatusOr<int64_t> MulDivFloor(int64_t a, int64_t b, int64_t d) {
  if (a < 0 || b < 0) return InvalidField("amount", "must not be negative");
  if (d <= 0) return InvalidField("divisor", "must be positive");
  return Narrow(static_cast<i128>(a) * b / d, "amount");
}

bool ValidCurrencyCode(absl::string_view code) {
  return code.size() == 3 &&
         std::all_of(code.begin(), code.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

bool IsIso4217Code(absl::string_view code) {
  // The codes of ISO 4217's list (Debian iso-codes 4.15's iso_4217.json,
  // plus ZWG of 2024 and XCG of 2025; codes withdrawn since are kept, so a
  // ledger in them still reads), sorted for the binary search.
  static constexpr absl::string_view kCodes[] = {
      "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
      "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
      "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF",
      "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD",
      "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK",
      "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP",
      "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
      "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
      "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
      "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
      "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW",
      "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD",
      "XCG", "XDR", "XOF", "XPD", "XPF", "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
      "ZWL",
  };
  return ValidCurrencyCode(code) && std::binary_search(std::begin(kCodes), std::end(kCodes), code);
}

absl::Status CheckRequestCurrency(absl::string_view code) {
  if (code.empty() || IsIso4217Code(code)) return absl::OkStatus();
  return InvalidField("currency_code", "must be an ISO 4217 code such as CNY, or empty for the consortium currency");
}

Money MakeMoney(absl::string_view currency_code, int64_t amount_minor) {
  Money m;
  m.set_currency_code(std::string(currency_code));
  m.set_amount_minor(amount_minor);
  return m;
}

absl::Status ValidateAmount(const Money& money, absl::string_view field, bool positive) {
  const std::string f(field);
  if (!ValidCurrencyCode(money.currency_code())) {
    return InvalidField(f + ".currency_code", "must be an ISO 4217 code such as CNY");
  }
  if (money.amount_minor() < 0 || (positive && money.amount_minor() == 0)) {
    return InvalidField(f + ".amount_minor", positive ? "must be positive" : "must not be negative",
                        "INVALID_AMOUNT");
  }
  if (money.amount_minor() > kMaxAmountMinor) {
    return InvalidField(f + ".amount_minor", absl::StrCat("must be at most ", kMaxAmountMinor, " minor units"));
  }
  return absl::OkStatus();
}

// ================================================================ time

tv1::Interval ToInterval(const TimeRange& range) {
  tv1::Interval i;
  *i.mutable_start_time() = ToProto(range.start);
  if (range.end != absl::InfiniteFuture()) *i.mutable_end_time() = ToProto(range.end);
  return i;
}

absl::StatusOr<TimeRange> RangeFromInterval(const tv1::Interval& interval, absl::string_view field,
                                            bool non_empty, bool allow_open_end) {
  const std::string f(field);
  if (!interval.has_start_time()) return InvalidField(f + ".start_time", "required");
  TimeRange r{FromProto(interval.start_time()), absl::InfiniteFuture()};
  if (interval.has_end_time()) {
    r.end = FromProto(interval.end_time());
  } else if (!allow_open_end) {
    return InvalidField(f + ".end_time", "required");
  }
  if (r.end < r.start || (non_empty && r.end == r.start)) {
    return InvalidField(f, non_empty ? "must end after it starts" : "must not end before it starts");
  }
  return r;
}

absl::StatusOr<absl::TimeZone> LoadBillingTimeZone(absl::string_view name) {
  absl::TimeZone tz;
  const std::string zone = name.empty() ? std::string(kDefaultTimeZone) : std::string(name);
  if (!LoadIanaTimeZone(zone, &tz)) {
    return InvalidField("time_zone", absl::StrCat("not an IANA time zone name: '", zone, "'"));
  }
  return tz;
}

// ================================================================ billing periods

std::string FormatPeriod(absl::CivilMonth month) {
  return absl::StrFormat("%04d-%02d", month.year(), month.month());
}

std::string PeriodOf(absl::Time t, absl::TimeZone tz) {
  return FormatPeriod(absl::ToCivilMonth(t, tz));
}

absl::StatusOr<absl::CivilMonth> ParsePeriod(absl::string_view period) {
  auto bad = [&]() {
    return InvalidField("period", absl::StrCat("must be 'YYYY-MM', got '", period, "'"),
                        "INVALID_PERIOD");
  };
  if (period.size() != 7 || period[4] != '-') return bad();
  int year = 0;
  int month = 0;
  for (size_t i = 0; i < 7; ++i) {
    if (i == 4) continue;
    if (!absl::ascii_isdigit(static_cast<unsigned char>(period[i]))) return bad();
    const int digit = period[i] - '0';
    if (i < 4) {
      year = year * 10 + digit;
    } else {
      month = month * 10 + digit;
    }
  }
  if (year < 1 || month < 1 || month > 12) return bad();
  return absl::CivilMonth(year, month);
}

absl::StatusOr<TimeRange> PeriodRange(absl::string_view period, absl::TimeZone tz) {
  LS_ASSIGN_OR_RETURN(absl::CivilMonth m, ParsePeriod(period));
  return TimeRange{absl::FromCivil(m, tz), absl::FromCivil(m + 1, tz)};
}

absl::StatusOr<std::string> NextPeriod(absl::string_view period) {
  LS_ASSIGN_OR_RETURN(absl::CivilMonth m, ParsePeriod(period));
  if (m.year() == 9999 && m.month() == 12) {
    return InvalidField("period", "9999-12 has no next period", "INVALID_PERIOD");
  }
  return FormatPeriod(m + 1);
}

absl::StatusOr<std::string> PreviousPeriod(absl::string_view period) {
  LS_ASSIGN_OR_RETURN(absl::CivilMonth m, ParsePeriod(period));
  if (m.year() == 1 && m.month() == 1) {
    return InvalidField("period", "0001-01 has no previous period", "INVALID_PERIOD");
  }
  return FormatPeriod(m - 1);
}

absl::StatusOr<bool> PeriodEnded(absl::string_view period, absl::Time now, absl::TimeZone tz) {
  LS_ASSIGN_OR_RETURN(TimeRange r, PeriodRange(period, tz));
  return r.end <= now;
}

absl::StatusOr<std::vector<std::string>> PeriodsTouched(const TimeRange& range, absl::TimeZone tz) {
  if (range.end == absl::InfiniteFuture() || range.start == absl::InfinitePast()) {
    return InvalidField("range", "must be finite");
  }
  if (range.end <= range.start) return InvalidField("range", "must end after it starts");
  const absl::CivilMonth first = absl::ToCivilMonth(range.start, tz);
  absl::CivilMonth last = absl::ToCivilMonth(range.end, tz);
  if (absl::FromCivil(last, tz) == range.end) last -= 1;
  if (last - first >= kMaxPeriods) return InvalidField("range", "spans too many periods");
  std::vector<std::string> out;
  for (absl::CivilMonth m = first; m <= last; ++m) out.push_back(FormatPeriod(m));
  return out;
}

absl::StatusOr<TimeRange> CapPeriodRange(v1::PeriodKind kind, absl::Time t, absl::TimeZone tz) {
  const absl::CivilMonth m = absl::ToCivilMonth(t, tz);
  switch (kind) {
    case v1::MONTHLY: return TimeRange{absl::FromCivil(m, tz), absl::FromCivil(m + 1, tz)};
    case v1::QUARTERLY: {
      const absl::CivilMonth q(m.year(), ((m.month() - 1) / 3) * 3 + 1);
      return TimeRange{absl::FromCivil(q, tz), absl::FromCivil(q + 3, tz)};
    }
    case v1::YEARLY: {
      const absl::CivilYear y(m.year());
      return TimeRange{absl::FromCivil(y, tz), absl::FromCivil(y + 1, tz)};
    }
    default:
      return InvalidField("cap_period_kind", "choose MONTHLY, QUARTERLY or YEARLY");
  }
}

absl::StatusOr<int64_t> CalendarDaysTouched(const TimeRange& range, absl::TimeZone tz) {
  if (range.end == absl::InfiniteFuture() || range.start == absl::InfinitePast()) {
    return InvalidField("range", "must be finite");
  }
  if (range.end <= range.start) return 0;
  const absl::CivilDay first = absl::ToCivilDay(range.start, tz);
  absl::CivilDay last = absl::ToCivilDay(range.end, tz);
  if (absl::FromCivil(last, tz) == range.end) last -= 1;
  return static_cast<int64_t>(last - first) + 1;
}

int DaysInMonth(absl::CivilMonth month) {
  return static_cast<int>(absl::CivilDay(month + 1) - absl::CivilDay(month));
}

// ================================================================ usage and booking fees

absl::Status ValidatePolicy(const BillingPolicy& policy) {
  if (policy.basis != v1::RESERVED_TIME && policy.basis != v1::ACTUAL_TIME &&
      policy.basis != v1::GREATER_OF_RESERVED_AND_ACTUAL) {
    return InvalidField("billing_policy.basis",
                        "choose RESERVED_TIME, ACTUAL_TIME or GREATER_OF_RESERVED_AND_ACTUAL");
  }
  if (policy.billing_unit < absl::ZeroDuration()) {
    return InvalidField("billing_policy.billing_unit", "must not be negative");
  }
  if (policy.minimum_charge < absl::ZeroDuration()) {
    return InvalidField("billing_policy.minimum_charge", "must not be negative");
  }
  if (policy.missed_fee_bps < 0 || policy.missed_fee_bps > kWholeBps) {
    return InvalidField("billing_policy.missed_fee_bps", "must be between 0 and 10000");
  }
  if (policy.late_cancel_fee_bps < 0 || policy.late_cancel_fee_bps > kWholeBps) {
    return InvalidField("billing_policy.late_cancel_fee_bps", "must be between 0 and 10000");
  }
  return absl::OkStatus();
}

absl::StatusOr<BillingPolicy> PolicyFromSlotRules(const invv1::SlotRules& rules) {
  BillingPolicy p;
  switch (rules.billing_basis()) {
    case invv1::RESERVED_TIME: p.basis = v1::RESERVED_TIME; break;
    case invv1::ACTUAL_TIME: p.basis = v1::ACTUAL_TIME; break;
    case invv1::GREATER_OF_RESERVED_AND_ACTUAL: p.basis = v1::GREATER_OF_RESERVED_AND_ACTUAL; break;
    default:
      return InvalidField("slot_rules.billing_basis",
                          "choose RESERVED_TIME, ACTUAL_TIME or GREATER_OF_RESERVED_AND_ACTUAL");
  }
  p.billing_unit = FromProto(rules.billing_unit());
  p.minimum_charge = FromProto(rules.minimum_charge());
  p.missed_fee_bps = rules.missed_fee_bps();
  p.late_cancel_fee_bps = rules.late_cancel_fee_bps();
  LS_RETURN_IF_ERROR(ValidatePolicy(p));
  return p;
}

absl::StatusOr<BillingPolicy> PolicyFromBillingTerms(const bkv1::BillingTerms& terms) {
  BillingPolicy p;
  switch (terms.billing_basis()) {
    case bkv1::BillingTerms::RESERVED_TIME: p.basis = v1::RESERVED_TIME; break;
    case bkv1::BillingTerms::ACTUAL_TIME: p.basis = v1::ACTUAL_TIME; break;
    case bkv1::BillingTerms::GREATER_OF_RESERVED_AND_ACTUAL: p.basis = v1::GREATER_OF_RESERVED_AND_ACTUAL; break;
    default:
      return InvalidField("booking.billing_terms.billing_basis",
                          "choose RESERVED_TIME, ACTUAL_TIME or GREATER_OF_RESERVED_AND_ACTUAL");
  }
  p.billing_unit = FromProto(terms.billing_unit());
  p.minimum_charge = FromProto(terms.minimum_charge());
  p.missed_fee_bps = terms.missed_fee_bps();
  p.late_cancel_fee_bps = terms.late_cancel_fee_bps();
  LS_RETURN_IF_ERROR(ValidatePolicy(p));
  return p;
}

BillingPolicy WithdrawnModePolicy() {
  BillingPolicy p;
  p.basis = v1::ACTUAL_TIME;
  p.billing_unit = absl::ZeroDuration();
  p.minimum_charge = absl::ZeroDuration();
  p.missed_fee_bps = 0;
  p.late_cancel_fee_bps = 0;
  return p;
}

v1::ChargeUnit ChargeUnitOf(invv1::RateUnit unit) {
  switch (unit) {
    case invv1::PER_HOUR: return v1::UNIT_HOUR;
    case invv1::RATE_PER_DAY: return v1::UNIT_DAY;
    case invv1::RATE_PER_MONTH: return v1::UNIT_MONTH;
    case invv1::RATE_PER_SAMPLE: return v1::UNIT_SAMPLE;
    case invv1::RATE_PER_TEST: return v1::UNIT_TEST;
    default: return v1::CHARGE_UNIT_UNSPECIFIED;
  }
}

v1::ChargeUnit ChargeUnitOf(invv1::ServiceUnit unit) {
  switch (unit) {
    case invv1::PER_SAMPLE: return v1::UNIT_SAMPLE;
    case invv1::PER_TEST: return v1::UNIT_TEST;
    default: return v1::CHARGE_UNIT_UNSPECIFIED;
  }
}

absl::StatusOr<v1::AppliedRate> AppliedRateFromLine(const invv1::Rate& line,
                                                    absl::string_view payer_tier) {
  LS_RETURN_IF_ERROR(ValidateAmount(line.price(), "rate.price"));
  const v1::ChargeUnit unit = ChargeUnitOf(line.unit());
  if (unit == v1::CHARGE_UNIT_UNSPECIFIED) {
    return InvalidField("rate.unit", "the line has no unit");
  }
  if (line.payer_class() == tv1::PAYER_CLASS_UNSPECIFIED) {
    return InvalidField("rate.payer_class", "the line has no payer class");
  }
  v1::AppliedRate r;
  r.set_rate(line.name());
  const absl::string_view tier = line.payer_class() == tv1::MEMBER ? payer_tier : "";
  r.set_rate_name(
      absl::StrCat(PayerClassWords(line.payer_class(), tier), ", ", ChargeUnitWord(unit)));
  r.set_payer_class(line.payer_class());
  r.set_member_tier(std::string(tier));
  r.set_service_entry_id(line.service_entry_id());
  *r.mutable_unit_price() = line.price();
  r.set_unit(unit);
  if (line.has_effective_time()) *r.mutable_effective_time() = line.effective_time();
  if (line.has_tax_rate_bps()) r.set_tax_rate_bps(line.tax_rate_bps());
  return r;
}

absl::StatusOr<TimedUse> TimedUseFromBooking(const bkv1::Booking& booking) {
  TimedUse use;
  LS_ASSIGN_OR_RETURN(use.reserved,
                      RangeFromInterval(booking.reserved_interval(), "booking.reserved_interval"));
  if (booking.has_session() && booking.session().has_start_time()) {
    if (!booking.session().has_end_time()) {
      return InvalidField("booking.session.end_time", "the session is still running");
    }
    const TimeRange actual{FromProto(booking.session().start_time()),
                           FromProto(booking.session().end_time())};
    if (actual.end < actual.start) {
      return InvalidField("booking.session", "checked out before it checked in");
    }
    use.actual = actual;
  }
  use.interrupted_by_outage = booking.interrupted_by_outage();
  return use;
}

std::optional<int32_t> FeeBpsFor(BookingCharge what, const BillingPolicy& policy) {
  switch (what) {
    case BookingCharge::kMissedBookingFee: return policy.missed_fee_bps;
    case BookingCharge::kLateCancellationFee: return policy.late_cancel_fee_bps;
    default: return std::nullopt;
  }
}

BookingCharge ChargeForBooking(const bkv1::Booking& booking) {
  if (booking.mode() != tv1::ON_SITE && booking.mode() != tv1::JOINT_RESEARCH) {
    return BookingCharge::kNone;
  }
  switch (booking.state()) {
    case bkv1::Booking::COMPLETED: return BookingCharge::kUsage;
    case bkv1::Booking::MISSED: return BookingCharge::kMissedBookingFee;
    case bkv1::Booking::CANCELLED:
      if (booking.late_cancellation() && !booking.cancelled_by_outage() &&
          booking.cancellation().initiator() != bkv1::Booking::MAINTENANCE_OUTAGE) {
        return BookingCharge::kLateCancellationFee;
      }
      return BookingCharge::kNone;
    default: return BookingCharge::kNone;
  }
}

absl::StatusOr<BilledTime> ComputeBilledTime(const BillingPolicy& policy, const TimedUse& use) {
  LS_RETURN_IF_ERROR(ValidatePolicy(policy));
  if (use.reserved.end < use.reserved.start) {
    return InvalidField("reserved", "must not end before it starts");
  }
  BilledTime bt;
  bt.basis = use.interrupted_by_outage ? v1::ACTUAL_TIME : policy.basis;
  if (bt.basis != v1::RESERVED_TIME && !use.actual) {
    return InvalidField("actual", absl::StrCat(v1::ChargeBasis_Name(bt.basis),
                                               " billing needs the checked-in session"));
  }
  if (use.actual && use.actual->end < use.actual->start) {
    return InvalidField("actual", "must not end before it starts");
  }
  switch (bt.basis) {
    case v1::RESERVED_TIME: bt.service = use.reserved; break;
    case v1::ACTUAL_TIME: bt.service = *use.actual; break;
    default:
      bt.service = use.actual->length() > use.reserved.length() ? *use.actual : use.reserved;
      break;
  }
  bt.measured = bt.service.length();
  const absl::Duration rounded = RoundUpTo(bt.measured, policy.billing_unit);
  bt.minimum_applied = policy.minimum_charge > rounded;
  bt.billed = bt.minimum_applied ? policy.minimum_charge : rounded;
  return bt;
}

absl::StatusOr<int64_t> HourlyAmount(int64_t unit_price, absl::Duration billed) {
  if (unit_price < 0) return InvalidField("rate.unit_price", "must not be negative");
  if (billed < absl::ZeroDuration() || billed >= absl::Nanoseconds(kInt64Max)) {
    return InvalidField("billed_duration", "must be between 0 and 292 years");
  }
  return MulDivRoundHalfUp(unit_price, absl::ToInt64Nanoseconds(billed), kNanosPerHour);
}

absl::StatusOr<int64_t> HoursMilli(absl::Duration billed) {
  if (billed < absl::ZeroDuration() || billed >= absl::Nanoseconds(kInt64Max)) {
    return InvalidField("billed_duration", "must be between 0 and 292 years");
  }
  return MulDivRoundHalfUp(absl::ToInt64Nanoseconds(billed), 1000, kNanosPerHour);
}

absl::StatusOr<int64_t> FeeAmount(int64_t base_amount, int32_t fee_bps) {
  if (fee_bps < 0 || fee_bps > kWholeBps) {
    return InvalidField("fee_bps", "must be between 0 and 10000");
  }
  if (base_amount < 0) return InvalidField("base_amount", "must not be negative");
  return MulDivRoundHalfUp(base_amount, fee_bps, kWholeBps);
}

absl::StatusOr<v1::Charge> PriceUsage(const v1::AppliedRate& rate, const BillingPolicy& policy,
                                      const TimedUse& use) {
  LS_RETURN_IF_ERROR(ValidateHourlyRate(rate));
  LS_ASSIGN_OR_RETURN(BilledTime bt, ComputeBilledTime(policy, use));
  LS_ASSIGN_OR_RETURN(int64_t amount, HourlyAmount(rate.unit_price().amount_minor(), bt.billed));
  LS_ASSIGN_OR_RETURN(int64_t milli, HoursMilli(bt.billed));
  v1::Charge c;
  c.set_fee_kind(v1::USAGE);
  c.set_source_key("usage");
  *c.mutable_rate() = rate;
  SetTimeFields(c, bt, policy, use, milli);
  *c.mutable_amount() = MakeMoney(rate.unit_price().currency_code(), amount);
  return c;
}

absl::StatusOr<v1::Charge> PriceBookingFee(v1::FeeKind kind, const v1::AppliedRate& rate,
                                           const BillingPolicy& policy, const TimeRange& reserved) {
  if (kind != v1::MISSED_BOOKING_FEE && kind != v1::LATE_CANCELLATION_FEE) {
    return InvalidField("fee_kind", "choose MISSED_BOOKING_FEE or LATE_CANCELLATION_FEE");
  }
  LS_RETURN_IF_ERROR(ValidateHourlyRate(rate));
  if (reserved.end <= reserved.start) return InvalidField("reserved", "must end after it starts");
  BillingPolicy base_policy = policy;
  base_policy.basis = v1::RESERVED_TIME;
  TimedUse use;
  use.reserved = reserved;
  LS_ASSIGN_OR_RETURN(BilledTime bt, ComputeBilledTime(base_policy, use));
  LS_ASSIGN_OR_RETURN(int64_t base, HourlyAmount(rate.unit_price().amount_minor(), bt.billed));
  LS_ASSIGN_OR_RETURN(int64_t milli, HoursMilli(bt.billed));
  const int32_t bps =
      kind == v1::MISSED_BOOKING_FEE ? policy.missed_fee_bps : policy.late_cancel_fee_bps;
  LS_ASSIGN_OR_RETURN(int64_t fee, FeeAmount(base, bps));
  const std::string& currency = rate.unit_price().currency_code();
  v1::Charge c;
  c.set_fee_kind(kind);
  c.set_source_key(kind == v1::MISSED_BOOKING_FEE ? "missed-booking-fee" : "late-cancellation-fee");
  *c.mutable_rate() = rate;
  SetTimeFields(c, bt, base_policy, use, milli);
  c.set_fee_bps(bps);
  *c.mutable_base_amount() = MakeMoney(currency, base);
  *c.mutable_amount() = MakeMoney(currency, fee);
  return c;
}

absl::StatusOr<std::optional<v1::Charge>> PriceBooking(const bkv1::Booking& booking,
                                                       const v1::AppliedRate& rate,
                                                       const BillingPolicy& policy) {
  const BookingCharge what = ChargeForBooking(booking);
  if (what == BookingCharge::kNone) return std::optional<v1::Charge>();
  // A fee of 0 bps charges nothing: no zero-amount charge (as for service
  // orders).
  if (FeeBpsFor(what, policy) == 0) return std::optional<v1::Charge>();
  LS_RETURN_IF_ERROR(CheckOrganization(booking.instrument_owner(), "booking.instrument_owner"));
  LS_RETURN_IF_ERROR(CheckOrganization(booking.payer_organization(), "booking.payer_organization"));
  LS_ASSIGN_OR_RETURN(TimedUse use, TimedUseFromBooking(booking));
  v1::Charge c;
  switch (what) {
    case BookingCharge::kUsage: {
      LS_ASSIGN_OR_RETURN(c, PriceUsage(rate, policy, use));
      break;
    }
    case BookingCharge::kMissedBookingFee: {
      LS_ASSIGN_OR_RETURN(c, PriceBookingFee(v1::MISSED_BOOKING_FEE, rate, policy, use.reserved));
      break;
    }
    default: {
      LS_ASSIGN_OR_RETURN(c,
                          PriceBookingFee(v1::LATE_CANCELLATION_FEE, rate, policy, use.reserved));
      break;
    }
  }
  // A fee of positive bps that rounds to 0 minor units charges nothing
  // either: a charge is never a zero-amount fee (billing_events.proto).
  if (what != BookingCharge::kUsage && c.amount().amount_minor() == 0) return std::optional<v1::Charge>();
  c.set_booking(booking.name());
  c.set_mode(booking.mode());
  c.set_instrument(booking.instrument());
  c.set_owner_organization(booking.instrument_owner());
  c.set_payer_organization(booking.payer_organization());
  c.set_user(booking.user());
  if (booking.mode() == tv1::JOINT_RESEARCH) {
    c.set_project(booking.project());
    if (booking.cost_shares().empty()) {
      return InvalidField("booking.cost_shares", "a joint-research booking carries its cost shares");
    }
    const std::vector<bkv1::CostShare> shares(booking.cost_shares().begin(),
                                              booking.cost_shares().end());
    LS_ASSIGN_OR_RETURN(std::vector<v1::ChargeSplit> splits,
                        SplitCharge(c.amount(), shares, booking.instrument_owner()));
    for (auto& s : splits) *c.add_splits() = std::move(s);
  }
  return std::optional<v1::Charge>(std::move(c));
}

// ================================================================ lease

absl::StatusOr<TimeRange> LeaseChargedRange(const bkv1::Lease& lease) {
  if (!lease.has_handover() || !lease.handover().has_handover_time()) {
    return InvalidField("lease.handover.handover_time", "the lease has not been handed over");
  }
  TimeRange r{FromProto(lease.handover().handover_time()), absl::InfiniteFuture()};
  if (lease.has_return_record() && lease.return_record().has_return_time()) {
    r.end = FromProto(lease.return_record().return_time());
    if (r.end < r.start) {
      return InvalidField("lease.return_record.return_time", "is before the handover");
    }
  }
  return r;
}

absl::StatusOr<std::vector<std::string>> LeasePeriods(const bkv1::Lease& lease, absl::Time until,
                                                      absl::TimeZone tz) {
  LS_ASSIGN_OR_RETURN(TimeRange r, LeaseChargedRange(lease));
  r.end = std::min(r.end, until);
  if (r.end <= r.start) return std::vector<std::string>();
  return PeriodsTouched(r, tz);
}

absl::StatusOr<v1::Charge> PriceLeasePeriod(const bkv1::Lease& lease, absl::string_view period,
                                            absl::TimeZone tz) {
  const bkv1::LeaseContract& contract = lease.contract();
  v1::ChargeUnit unit = v1::CHARGE_UNIT_UNSPECIFIED;
  switch (contract.rate_basis()) {
    case bkv1::LeaseContract::DAILY: unit = v1::UNIT_DAY; break;
    case bkv1::LeaseContract::MONTHLY: unit = v1::UNIT_MONTH; break;
    default: return InvalidField("lease.contract.rate_basis", "choose DAILY or MONTHLY");
  }
  LS_RETURN_IF_ERROR(ValidateAmount(contract.rate(), "lease.contract.rate", true));
  LS_ASSIGN_OR_RETURN(v1::Charge c, LeaseCharge(lease));
  LS_ASSIGN_OR_RETURN(absl::CivilMonth month, ParsePeriod(period));
  LS_ASSIGN_OR_RETURN(TimeRange charged, LeaseChargedRange(lease));
  LS_ASSIGN_OR_RETURN(TimeRange in_period, PeriodRange(period, tz));
  const TimeRange clip{std::max(charged.start, in_period.start),
                       std::min(charged.end, in_period.end)};
  if (clip.end <= clip.start) {
    return InvalidField("period",
                        absl::StrCat("the lease was not out during ", period), "NOT_IN_PERIOD");
  }
  LS_ASSIGN_OR_RETURN(int64_t days, CalendarDaysTouched(clip, tz));
  const int64_t rate = contract.rate().amount_minor();
  int64_t amount = 0;
  int64_t milli = 0;
  if (unit == v1::UNIT_DAY) {
    LS_ASSIGN_OR_RETURN(amount, Narrow(static_cast<i128>(rate) * days, "amount"));
    milli = days * 1000;
  } else {
    const int64_t dim = DaysInMonth(month);
    LS_ASSIGN_OR_RETURN(amount, MulDivRoundHalfUp(rate, days, dim));
    LS_ASSIGN_OR_RETURN(milli, MulDivRoundHalfUp(days, 1000, dim));
  }
  c.set_fee_kind(v1::LEASE_PERIOD);
  c.set_source_key(absl::StrCat("lease-period/", period));
  *c.mutable_rate() = LeaseRate(
      lease, unit == v1::UNIT_DAY ? "lease contract, daily" : "lease contract, monthly",
      contract.rate(), unit);
  c.set_basis(v1::CONTRACT_TERM);
  *c.mutable_service_interval() = ToInterval(clip);
  c.set_quantity_milli(milli);
  *c.mutable_amount() = MakeMoney(contract.rate().currency_code(), amount);
  return c;
}

absl::StatusOr<DepositSettlement> SettleDeposit(const Money& deposit, const Money& damage) {
  std::string currency = deposit.currency_code().empty() ? damage.currency_code()
                                                         : deposit.currency_code();
  if (!IsEmptyZero(deposit)) LS_RETURN_IF_ERROR(ValidateAmount(deposit, "deposit"));
  if (!IsEmptyZero(damage)) LS_RETURN_IF_ERROR(ValidateAmount(damage, "damage"));
  if (!ValidCurrencyCode(currency)) {
    return InvalidField("deposit.currency_code", "must be an ISO 4217 code such as CNY");
  }
  if (!damage.currency_code().empty() && damage.currency_code() != currency) {
    return InvalidField("damage.currency_code",
                        absl::StrCat("must be the deposit's currency ", currency),
                        "CURRENCY_MISMATCH");
  }
  const int64_t applied = std::min(deposit.amount_minor(), damage.amount_minor());
  DepositSettlement s;
  s.applied = MakeMoney(currency, applied);
  s.released = MakeMoney(currency, deposit.amount_minor() - applied);
  s.damage_outstanding = MakeMoney(currency, damage.amount_minor() - applied);
  return s;
}

// The contract's deposit (booking.proto LeaseContract.deposit: "unset (or
// 0 without a currency) is 0 in the rate's currency"): without a currency,
// in the rate's. Held (PriceDeposit) and settled (LeaseDepositSettlement)
// alike.
Money LeaseDeposit(const bkv1::Lease& lease) {
  Money deposit = lease.contract().deposit();
  if (deposit.currency_code().empty()) {
    deposit.set_currency_code(lease.contract().rate().currency_code());
  }
  return deposit;
}

absl::StatusOr<DepositSettlement> LeaseDepositSettlement(const bkv1::Lease& lease) {
  if (!lease.has_return_record()) {
    return InvalidField("lease.return_record", "the lease has not been returned");
  }
  const Money deposit = LeaseDeposit(lease);
  LS_ASSIGN_OR_RETURN(DepositSettlement s,
                      SettleDeposit(deposit, lease.return_record().damage_amount()));
  if (lease.has_settlement()) {
    const bkv1::LeaseSettlement& b = lease.settlement();
    if (!SameMoney(b.deposit_applied(), s.applied) ||
        !SameMoney(b.deposit_released(), s.released) ||
        !SameMoney(b.damage_outstanding(), s.damage_outstanding)) {
      return InvalidField(
          "lease.settlement",
          absl::StrCat("booking settled applied ", b.deposit_applied().amount_minor(),
                       ", released ", b.deposit_released().amount_minor(), ", outstanding ",
                       b.damage_outstanding().amount_minor(), "; deposit and damage give ",
                       s.applied.amount_minor(), ", ", s.released.amount_minor(), ", ",
                       s.damage_outstanding.amount_minor()),
          "SETTLEMENT_MISMATCH");
    }
  }
  return s;
}

absl::StatusOr<std::optional<v1::Charge>> PriceDeposit(const bkv1::Lease& lease) {
  const Money deposit = LeaseDeposit(lease);
  if (deposit.amount_minor() == 0) return std::optional<v1::Charge>();
  LS_RETURN_IF_ERROR(ValidateAmount(deposit, "lease.contract.deposit", true));
  LS_ASSIGN_OR_RETURN(v1::Charge c, LeaseCharge(lease));
  c.set_fee_kind(v1::DEPOSIT);
  c.set_source_key("deposit");
  *c.mutable_rate() = LeaseRate(lease, "lease contract, deposit", deposit, v1::UNIT_FLAT);
  c.set_basis(v1::ASSESSED);
  c.set_quantity_milli(1000);
  *c.mutable_amount() = deposit;
  return std::optional<v1::Charge>(std::move(c));
}

absl::StatusOr<std::optional<v1::Charge>> PriceDamage(const bkv1::Lease& lease) {
  LS_ASSIGN_OR_RETURN(DepositSettlement s, LeaseDepositSettlement(lease));
  if (s.damage_outstanding.amount_minor() == 0) return std::optional<v1::Charge>();
  LS_ASSIGN_OR_RETURN(v1::Charge c, LeaseCharge(lease));
  c.set_fee_kind(v1::DAMAGE);
  c.set_source_key("damage");
  *c.mutable_rate() =
      LeaseRate(lease, "assessed damage beyond the deposit", s.damage_outstanding, v1::UNIT_FLAT);
  c.set_basis(v1::ASSESSED);
  c.set_quantity_milli(1000);
  *c.mutable_amount() = s.damage_outstanding;
  return std::optional<v1::Charge>(std::move(c));
}

// ================================================================ technical service

absl::StatusOr<std::vector<v1::Charge>> PriceServiceOrder(const bkv1::ServiceOrder& order,
                                                          v1::ChargeUnit unit, absl::TimeZone tz) {
  if (unit != v1::UNIT_SAMPLE && unit != v1::UNIT_TEST) {
    return InvalidField("unit", "a catalogue entry is priced per sample or per test");
  }
  LS_RETURN_IF_ERROR(CheckOrganization(order.instrument_owner(), "service_order.instrument_owner"));
  LS_RETURN_IF_ERROR(
      CheckOrganization(order.client_organization(), "service_order.client_organization"));
  LS_ASSIGN_OR_RETURN(QuoteParts q, ReadQuote(order));
  const v1::Charge common = ServiceOrderCharge(order);
  const v1::AppliedRate quote_rate = QuoteRate(order, tz);
  std::vector<v1::Charge> out;
  if (q.sample_amount > 0) {
    v1::Charge c = common;
    c.set_fee_kind(v1::TECHNICAL_SERVICE);
    c.set_source_key("sample-fee");
    *c.mutable_rate() = quote_rate;
    *c.mutable_rate()->mutable_unit_price() = MakeMoney(q.currency, q.sample_fee);
    c.mutable_rate()->set_unit(unit);
    c.set_basis(v1::COUNTED);
    c.set_quantity_milli(q.samples * 1000);
    *c.mutable_amount() = MakeMoney(q.currency, q.sample_amount);
    out.push_back(std::move(c));
  }
  if (q.staff > 0) {
    v1::Charge c = common;
    c.set_fee_kind(v1::STAFF_TIME);
    c.set_source_key("staff-time");
    *c.mutable_rate() = quote_rate;
    *c.mutable_rate()->mutable_unit_price() = MakeMoney(q.currency, q.staff);
    c.mutable_rate()->set_unit(v1::UNIT_FLAT);
    c.set_basis(v1::COUNTED);
    *c.mutable_billed_duration() = order.quote().staff_time();
    c.set_quantity_milli(1000);
    *c.mutable_amount() = MakeMoney(q.currency, q.staff);
    out.push_back(std::move(c));
  }
  if (q.consumables > 0) {
    v1::Charge c = common;
    c.set_fee_kind(v1::CONSUMABLES);
    c.set_source_key("consumables");
    *c.mutable_rate() = quote_rate;
    *c.mutable_rate()->mutable_unit_price() = MakeMoney(q.currency, q.consumables);
    c.mutable_rate()->set_unit(v1::UNIT_FLAT);
    c.set_basis(v1::COUNTED);
    c.set_quantity_milli(1000);
    *c.mutable_amount() = MakeMoney(q.currency, q.consumables);
    out.push_back(std::move(c));
  }
  return out;
}

absl::StatusOr<std::optional<v1::Charge>> PriceServiceOrderCancellation(const bkv1::ServiceOrder& order,
                                                                        int32_t fee_bps) {
  if (!order.late_cancellation()) {
    return InvalidField("service_order.late_cancellation",
                        "only a late cancellation by the client is charged");
  }
  LS_RETURN_IF_ERROR(CheckOrganization(order.instrument_owner(), "service_order.instrument_owner"));
  LS_RETURN_IF_ERROR(
      CheckOrganization(order.client_organization(), "service_order.client_organization"));
  LS_ASSIGN_OR_RETURN(QuoteParts q, ReadQuote(order));
  LS_ASSIGN_OR_RETURN(int64_t fee, FeeAmount(q.total, fee_bps));
  // 0 bps, or a fee that rounds to 0 minor units: no charge.
  if (fee == 0) return std::optional<v1::Charge>();
  v1::Charge c = ServiceOrderCharge(order);
  c.set_fee_kind(v1::LATE_CANCELLATION_FEE);
  c.set_source_key("late-cancellation-fee");
  v1::AppliedRate rate;
  rate.set_rate_name("accepted quote");
  rate.set_payer_class(order.payer_class());
  if (order.payer_class() == tv1::MEMBER) rate.set_member_tier(order.payer_tier());
  rate.set_service_entry_id(order.service_entry_id());
  *rate.mutable_unit_price() = MakeMoney(q.currency, q.total);
  rate.set_unit(v1::UNIT_FLAT);
  if (order.quote().has_quote_time()) *rate.mutable_effective_time() = order.quote().quote_time();
  *c.mutable_rate() = rate;
  c.set_basis(v1::COUNTED);
  c.set_quantity_milli(1000);
  c.set_fee_bps(fee_bps);
  *c.mutable_base_amount() = MakeMoney(q.currency, q.total);
  *c.mutable_amount() = MakeMoney(q.currency, fee);
  return std::optional<v1::Charge>(std::move(c));
}

// ================================================================ splits

absl::StatusOr<std::vector<int64_t>> SplitLargestRemainder(int64_t amount,
                                                           const std::vector<int32_t>& shares_bps) {
  if (amount < 0) return InvalidField("amount", "must not be negative");
  if (shares_bps.empty()) return InvalidField("shares", "at least one share", "SHARES_NOT_10000");
  int64_t sum = 0;
  for (size_t i = 0; i < shares_bps.size(); ++i) {
    if (shares_bps[i] < 0 || shares_bps[i] > kWholeBps) {
      return InvalidField(absl::StrCat("shares[", i, "]"), "must be between 0 and 10000",
                          "SHARES_NOT_10000");
    }
    sum += shares_bps[i];
  }
  if (sum != kWholeBps) {
    return InvalidField("shares", absl::StrCat("must sum to exactly 10000, got ", sum),
                        "SHARES_NOT_10000");
  }
  const size_t n = shares_bps.size();
  std::vector<int64_t> parts(n);
  std::vector<int64_t> remainders(n);
  i128 allocated = 0;
  for (size_t i = 0; i < n; ++i) {
    const i128 p = static_cast<i128>(amount) * shares_bps[i];
    parts[i] = static_cast<int64_t>(p / kWholeBps);
    remainders[i] = static_cast<int64_t>(p % kWholeBps);
    allocated += parts[i];
  }
  // Fewer left-over units than non-zero remainders: sum(remainders) =
  // left * 10000 with each remainder below 10000.
  int64_t left = static_cast<int64_t>(static_cast<i128>(amount) - allocated);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return remainders[a] > remainders[b]; });
  for (size_t k = 0; k < n && left > 0; ++k, --left) ++parts[order[k]];
  return parts;
}

absl::StatusOr<std::vector<v1::ChargeSplit>> SplitCharge(const Money& amount,
                                                         const std::vector<bkv1::CostShare>& shares,
                                                         absl::string_view owner_organization) {
  LS_RETURN_IF_ERROR(ValidateAmount(amount, "amount"));
  std::set<std::string> seen;
  std::vector<int32_t> bps;
  for (size_t i = 0; i < shares.size(); ++i) {
    const std::string f = absl::StrCat("cost_shares[", i, "].organization");
    LS_RETURN_IF_ERROR(CheckOrganization(shares[i].organization(), f));
    if (!seen.insert(shares[i].organization()).second) {
      return InvalidField(f, absl::StrCat(shares[i].organization(), " appears twice"));
    }
    bps.push_back(shares[i].share_bps());
  }
  LS_ASSIGN_OR_RETURN(std::vector<int64_t> parts, SplitLargestRemainder(amount.amount_minor(), bps));
  std::vector<v1::ChargeSplit> out;
  for (size_t i = 0; i < shares.size(); ++i) {
    v1::ChargeSplit s;
    s.set_organization(shares[i].organization());
    s.set_share_bps(shares[i].share_bps());
    *s.mutable_amount() = MakeMoney(amount.currency_code(), parts[i]);
    s.set_in_kind(shares[i].organization() == owner_organization);
    out.push_back(std::move(s));
  }
  return out;
}

// ================================================================ subsidies

bool FeeKindSubsidisable(v1::FeeKind kind) {
  switch (kind) {
    case v1::USAGE:
    case v1::MISSED_BOOKING_FEE:
    case v1::LATE_CANCELLATION_FEE:
    case v1::LEASE_PERIOD:
    case v1::TECHNICAL_SERVICE:
    case v1::STAFF_TIME:
    case v1::CONSUMABLES: return true;
    default: return false;
  }
}

std::vector<SubsidyBeneficiary> BeneficiariesOf(const v1::Charge& charge) {
  std::vector<SubsidyBeneficiary> out;
  if (!FeeKindSubsidisable(charge.fee_kind())) return out;
  if (!charge.splits().empty()) {
    for (const auto& s : charge.splits()) {
      if (s.in_kind() || s.organization() == charge.owner_organization()) continue;
      if (s.amount().amount_minor() <= 0) continue;
      out.push_back({s.organization(), v1::SIZE_CLASS_UNSPECIFIED, s.amount().amount_minor()});
    }
    return out;
  }
  if (charge.payer_organization() != charge.owner_organization() &&
      charge.amount().amount_minor() > 0) {
    out.push_back(
        {charge.payer_organization(), v1::SIZE_CLASS_UNSPECIFIED, charge.amount().amount_minor()});
  }
  return out;
}

std::string ProfileIneligibilityReason(const v1::SubsidyPool& pool, v1::SizeClass size_class) {
  const auto& classes = pool.eligibility().size_classes();
  if (classes.empty()) return "";
  if (size_class == v1::SIZE_CLASS_UNSPECIFIED) {
    return "organisations without a size class are not covered";
  }
  if (std::find(classes.begin(), classes.end(), size_class) == classes.end()) {
    return absl::StrCat("size class ", v1::SizeClass_Name(size_class), " not covered");
  }
  return "";
}

std::string IneligibilityReason(const v1::SubsidyPool& pool, const SubsidyCharge& charge,
                                const SubsidyBeneficiary& beneficiary) {
  if (pool.currency_code() != charge.currency_code) {
    return absl::StrCat("currency ", charge.currency_code, " is not the pool's ",
                        pool.currency_code());
  }
  if (pool.has_validity()) {
    if (pool.validity().has_start_time() &&
        charge.posting_time < FromProto(pool.validity().start_time())) {
      return "before the pool's validity";
    }
    if (pool.validity().has_end_time() &&
        charge.posting_time >= FromProto(pool.validity().end_time())) {
      return "after the pool's validity";
    }
  }
  if (!FeeKindSubsidisable(charge.fee_kind)) {
    return absl::StrCat("fee kind ", v1::FeeKind_Name(charge.fee_kind), " is never subsidised");
  }
  if (beneficiary.organization == charge.owner_organization) {
    return "the owner's own use is never subsidised";
  }
  if (std::string reason = ProfileIneligibilityReason(pool, beneficiary.size_class);
      !reason.empty()) {
    return reason;
  }
  const v1::SubsidyEligibility& e = pool.eligibility();
  if (!e.modes().empty() &&
      std::find(e.modes().begin(), e.modes().end(), charge.mode) == e.modes().end()) {
    return absl::StrCat("mode ", tv1::SharingMode_Name(charge.mode), " not covered");
  }
  if (!e.instrument_categories().empty() &&
      std::find(e.instrument_categories().begin(), e.instrument_categories().end(),
                charge.instrument_category) == e.instrument_categories().end()) {
    return absl::StrCat("instrument category '", charge.instrument_category, "' not covered");
  }
  if (!e.fee_kinds().empty() &&
      std::find(e.fee_kinds().begin(), e.fee_kinds().end(), charge.fee_kind) ==
          e.fee_kinds().end()) {
    return absl::StrCat("fee kind ", v1::FeeKind_Name(charge.fee_kind), " not covered");
  }
  return "";
}

int64_t AllowanceRemaining(const v1::SubsidyPool& pool, int64_t used, int64_t balance) {
  const int64_t funds = std::max<int64_t>(balance, 0);
  if (!pool.has_cap_per_organization()) return funds;
  const i128 left = static_cast<i128>(pool.cap_per_organization().amount_minor()) - used;
  if (left <= 0) return 0;
  return left < funds ? static_cast<int64_t>(left) : funds;
}

absl::Status ValidateSubsidyPool(const v1::SubsidyPool& pool, PoolCurrencyCheck currency) {
  if (pool.display_name().empty()) return InvalidField("subsidy_pool.display_name", "required");
  if (pool.percentage_bps() < 1 || pool.percentage_bps() > kWholeBps) {
    return InvalidField("subsidy_pool.percentage_bps", "must be between 1 and 10000");
  }
  // A new pool's currency is one of ISO 4217's list ("RMB", "XXY" are
  // not), checked before the cap: a cap in CNY on an "XXY" pool is a bad
  // pool currency, not a bad cap.
  if (currency == PoolCurrencyCheck::kIso4217 ? !IsIso4217Code(pool.currency_code())
                                              : !ValidCurrencyCode(pool.currency_code())) {
    return InvalidField("subsidy_pool.currency_code", "must be an ISO 4217 code such as CNY");
  }
  if (!pool.funder_organization().empty() && !IsOrganizationName(pool.funder_organization())) {
    return InvalidField("subsidy_pool.funder_organization", "must be organizations/{organization}, or empty");
  }
  if (pool.has_cap_per_organization()) {
    // CreateSubsidyPool and UpdateSubsidyPool list INVALID_FIELD for a bad
    // cap (negative, or not in the pool's currency).
    if (pool.cap_per_organization().amount_minor() < 0) {
      return InvalidField("subsidy_pool.cap_per_organization.amount_minor", "must not be negative");
    }
    LS_RETURN_IF_ERROR(ValidateAmount(pool.cap_per_organization(), "subsidy_pool.cap_per_organization"));
    if (pool.cap_per_organization().currency_code() != pool.currency_code()) {
      return InvalidField("subsidy_pool.cap_per_organization.currency_code", "must be the pool's currency");
    }
    if (pool.cap_period_kind() == v1::PERIOD_KIND_UNSPECIFIED ||
        !v1::PeriodKind_IsValid(pool.cap_period_kind())) {
      return InvalidField("subsidy_pool.cap_period_kind",
                          "a cap needs MONTHLY, QUARTERLY or YEARLY");
    }
  }
  if (pool.has_validity() && pool.validity().has_start_time() && pool.validity().has_end_time() &&
      FromProto(pool.validity().end_time()) <= FromProto(pool.validity().start_time())) {
    return InvalidField("subsidy_pool.validity", "must end after it starts");
  }
  const v1::SubsidyEligibility& e = pool.eligibility();
  for (int i = 0; i < e.size_classes_size(); ++i) {
    if (e.size_classes(i) == v1::SIZE_CLASS_UNSPECIFIED || !v1::SizeClass_IsValid(e.size_classes(i))) {
      return InvalidField(absl::StrCat("subsidy_pool.eligibility.size_classes[", i, "]"),
                          "must be a size class");
    }
  }
  for (int i = 0; i < e.modes_size(); ++i) {
    if (e.modes(i) == tv1::SHARING_MODE_UNSPECIFIED || !tv1::SharingMode_IsValid(e.modes(i))) {
      return InvalidField(absl::StrCat("subsidy_pool.eligibility.modes[", i, "]"),
                          "must be a sharing mode");
    }
  }
  for (int i = 0; i < e.instrument_categories_size(); ++i) {
    if (e.instrument_categories(i).empty()) {
      return InvalidField(absl::StrCat("subsidy_pool.eligibility.instrument_categories[", i, "]"),
                          "must not be empty");
    }
  }
  for (int i = 0; i < e.fee_kinds_size(); ++i) {
    if (e.fee_kinds(i) == v1::FEE_KIND_UNSPECIFIED || !v1::FeeKind_IsValid(e.fee_kinds(i))) {
      return InvalidField(absl::StrCat("subsidy_pool.eligibility.fee_kinds[", i, "]"),
                          "must be a fee kind");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::SubsidyLine>> ApplySubsidies(
    const SubsidyCharge& charge, const std::vector<SubsidyBeneficiary>& beneficiaries,
    const std::vector<PoolFunds>& pools, absl::TimeZone tz) {
  if (!ValidCurrencyCode(charge.currency_code)) {
    return InvalidField("charge.currency_code", "must be an ISO 4217 code such as CNY");
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < beneficiaries.size(); ++i) {
    const std::string f = absl::StrCat("beneficiaries[", i, "]");
    LS_RETURN_IF_ERROR(CheckOrganization(beneficiaries[i].organization, f + ".organization"));
    if (!seen.insert(beneficiaries[i].organization).second) {
      return InvalidField(f + ".organization", "appears twice");
    }
    if (beneficiaries[i].part < 0) return InvalidField(f + ".part", "must not be negative");
  }
  seen.clear();
  for (size_t i = 0; i < pools.size(); ++i) {
    const std::string f = absl::StrCat("pools[", i, "]");
    const v1::SubsidyPool& p = pools[i].pool;
    LS_RETURN_IF_ERROR(CheckPool(p.name(), f + ".name"));
    if (!seen.insert(p.name()).second) return InvalidField(f + ".name", "appears twice");
    if (p.percentage_bps() < 1 || p.percentage_bps() > kWholeBps) {
      return InvalidField(f + ".percentage_bps", "must be between 1 and 10000");
    }
    if (p.has_cap_per_organization()) {
      if (p.cap_per_organization().amount_minor() < 0) {
        return InvalidField(f + ".cap_per_organization", "must not be negative");
      }
      if (p.cap_per_organization().currency_code() != p.currency_code()) {
        return InvalidField(f + ".cap_per_organization.currency_code",
                            "must be the pool's currency", "CURRENCY_MISMATCH");
      }
    }
  }
  std::vector<size_t> order(pools.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const v1::SubsidyPool& x = pools[a].pool;
    const v1::SubsidyPool& y = pools[b].pool;
    if (x.priority() != y.priority()) return x.priority() < y.priority();
    return x.name() < y.name();
  });
  std::vector<int64_t> covered(beneficiaries.size(), 0);
  std::vector<v1::SubsidyLine> out;
  for (size_t pi : order) {
    const v1::SubsidyPool& pool = pools[pi].pool;
    // A negative balance (a top-up reversed after it paid subsidies) is an
    // exhausted pool: it pays nothing, and the charge is still posted.
    int64_t balance = std::max<int64_t>(pools[pi].balance, 0);
    std::optional<TimeRange> cap_period;
    if (pool.has_cap_per_organization()) {
      LS_ASSIGN_OR_RETURN(cap_period,
                          CapPeriodRange(pool.cap_period_kind(), charge.posting_time, tz));
    }
    for (size_t bi = 0; bi < beneficiaries.size(); ++bi) {
      const SubsidyBeneficiary& b = beneficiaries[bi];
      if (b.part == 0 || !IneligibilityReason(pool, charge, b).empty()) continue;
      LS_ASSIGN_OR_RETURN(int64_t full, MulDivFloor(b.part, pool.percentage_bps(), kWholeBps));
      if (full == 0) continue;
      int64_t cap_left = kInt64Max;
      if (pool.has_cap_per_organization()) {
        auto it = pools[pi].cap_used.find(b.organization);
        const int64_t used = it == pools[pi].cap_used.end() ? 0 : it->second;
        const i128 left = static_cast<i128>(pool.cap_per_organization().amount_minor()) - used;
        cap_left = left <= 0 ? 0 : static_cast<int64_t>(std::min<i128>(left, kInt64Max));
      }
      const int64_t part_left = b.part - covered[bi];
      const int64_t amount = std::min({full, cap_left, balance, part_left});
      v1::SubsidyLine::Limit limit = v1::SubsidyLine::NOT_LIMITED;
      if (amount < full) {
        limit = amount == cap_left   ? v1::SubsidyLine::ORGANIZATION_CAP
                : amount == balance ? v1::SubsidyLine::POOL_BALANCE
                                    : v1::SubsidyLine::LIMIT_UNSPECIFIED;
      }
      if (amount <= 0) continue;
      balance -= amount;
      covered[bi] += amount;
      v1::SubsidyLine line;
      line.set_subsidy_pool(pool.name());
      line.set_beneficiary_organization(b.organization);
      *line.mutable_eligible_amount() = MakeMoney(charge.currency_code, b.part);
      line.set_percentage_bps(pool.percentage_bps());
      *line.mutable_amount() = MakeMoney(charge.currency_code, amount);
      line.set_limited_by(limit);
      if (cap_period) *line.mutable_cap_period() = ToInterval(*cap_period);
      out.push_back(std::move(line));
    }
  }
  return out;
}

absl::Status FillChargeTotals(v1::Charge& charge) {
  LS_RETURN_IF_ERROR(ValidateAmount(charge.amount(), "charge.amount"));
  const std::string& currency = charge.amount().currency_code();
  const int64_t amount = charge.amount().amount_minor();
  i128 subsidy = 0;
  for (int i = 0; i < charge.subsidy_lines_size(); ++i) {
    const Money& m = charge.subsidy_lines(i).amount();
    if (m.currency_code() != currency) {
      return InvalidField(absl::StrCat("charge.subsidy_lines[", i, "].amount.currency_code"),
                          "must be the charge's currency", "CURRENCY_MISMATCH");
    }
    subsidy += m.amount_minor();
  }
  i128 in_kind = 0;
  i128 split_sum = 0;
  for (int i = 0; i < charge.splits_size(); ++i) {
    const Money& m = charge.splits(i).amount();
    if (m.currency_code() != currency) {
      return InvalidField(absl::StrCat("charge.splits[", i, "].amount.currency_code"),
                          "must be the charge's currency", "CURRENCY_MISMATCH");
    }
    split_sum += m.amount_minor();
    if (charge.splits(i).in_kind()) in_kind += m.amount_minor();
  }
  if (charge.splits_size() > 0 && split_sum != amount) {
    return InvalidField("charge.splits", "the parts must sum to the charge's amount");
  }
  const bool internal =
      charge.splits().empty() && charge.payer_organization() == charge.owner_organization();
  const bool compensation_or_deposit =
      charge.fee_kind() == v1::DEPOSIT || charge.fee_kind() == v1::DAMAGE;
  const i128 payable = internal ? 0 : static_cast<i128>(amount) - in_kind - subsidy;
  if (payable < 0) {
    return InvalidField("charge.subsidy_lines", "subsidies exceed what the payers bear");
  }
  const i128 income = internal || compensation_or_deposit ? 0 : static_cast<i128>(amount) - in_kind;
  LS_ASSIGN_OR_RETURN(int64_t subsidy64, Narrow(subsidy, "charge.subsidy_total"));
  *charge.mutable_subsidy_total() = MakeMoney(currency, subsidy64);
  *charge.mutable_payable_amount() = MakeMoney(currency, static_cast<int64_t>(payable));
  *charge.mutable_service_income() = MakeMoney(currency, static_cast<int64_t>(income));
  return absl::OkStatus();
}

// ================================================================ ledger

namespace {

// Every account kind but UNSPECIFIED with its slug (the enum name in lower
// case, '-' for '_'), in the descriptor's order; built once: slugs are on
// the ingest path (each posting entry's account name is parsed and built).
const std::vector<std::pair<v1::AccountKind, std::string>>& AccountKindSlugs() {
  static const auto* slugs = [] {
    auto* out = new std::vector<std::pair<v1::AccountKind, std::string>>();
    const google::protobuf::EnumDescriptor* d = v1::AccountKind_descriptor();
    for (int i = 0; i < d->value_count(); ++i) {
      const auto kind = static_cast<v1::AccountKind>(d->value(i)->number());
      if (kind == v1::ACCOUNT_KIND_UNSPECIFIED) continue;
      out->emplace_back(kind, absl::StrReplaceAll(absl::AsciiStrToLower(d->value(i)->name()), {{"_", "-"}}));
    }
    return out;
  }();
  return *slugs;
}

}  // namespace

std::string AccountKindSlug(v1::AccountKind kind) {
  if (kind == v1::ACCOUNT_KIND_UNSPECIFIED || !v1::AccountKind_IsValid(kind)) return "";
  for (const auto& [k, slug] : AccountKindSlugs()) {
    if (k == kind) return slug;
  }
  return "";
}

absl::StatusOr<v1::AccountKind> AccountKindFromSlug(absl::string_view slug) {
  for (const auto& [kind, s] : AccountKindSlugs()) {
    if (s == slug) return kind;
  }
  return InvalidField("account", absl::StrCat("unknown account kind '", slug, "'"), "INVALID_NAME");
}

bool IsOrganizationAccountKind(v1::AccountKind kind) {
  return kind >= v1::RECEIVABLE && kind <= v1::CASH;
}

bool IsPoolAccountKind(v1::AccountKind kind) {
  return kind == v1::POOL_FUNDS || kind == v1::POOL_PAYABLE || kind == v1::POOL_CASH;
}

bool RequiresCounterparty(v1::AccountKind kind) {
  return kind == v1::RECEIVABLE || kind == v1::PAYABLE || kind == v1::CASH ||
         kind == v1::POOL_PAYABLE;
}

v1::NormalSide NormalSideOf(v1::AccountKind kind) {
  switch (kind) {
    case v1::RECEIVABLE:
    case v1::EXPENSE:
    case v1::DEPOSIT_LODGED:
    case v1::CASH:
    case v1::POOL_CASH: return v1::DEBIT;
    case v1::PAYABLE:
    case v1::INCOME:
    case v1::SUBSIDY_RECEIVED:
    case v1::DEPOSIT_HELD:
    case v1::IN_KIND_CONTRIBUTION:
    case v1::INTERNAL_USE:
    case v1::COMPENSATION:
    case v1::POOL_FUNDS:
    case v1::POOL_PAYABLE: return v1::CREDIT;
    default: return v1::NORMAL_SIDE_UNSPECIFIED;
  }
}

std::string AccountName(absl::string_view owner, v1::AccountKind kind) {
  return absl::StrCat(owner, "/accounts/", AccountKindSlug(kind));
}

bool IsOrganizationName(absl::string_view name) { return IsName(name, "organizations"); }
bool IsSubsidyPoolName(absl::string_view name) { return IsName(name, "subsidyPools"); }

absl::StatusOr<AccountRef> ParseAccountName(absl::string_view account, absl::string_view field) {
  auto bad = [&](absl::string_view why) {
    return InvalidField(std::string(field), absl::StrCat("'", account, "' ", why), "INVALID_NAME");
  };
  std::vector<absl::string_view> parts = absl::StrSplit(account, '/');
  if (parts.size() != 4 || parts[2] != "accounts" || !ValidId(parts[1])) {
    return bad("is not '{organizations|subsidyPools}/{id}/accounts/{kind}'");
  }
  AccountRef ref;
  ref.owner = absl::StrCat(parts[0], "/", parts[1]);
  auto kind = AccountKindFromSlug(parts[3]);
  if (!kind.ok()) return bad("names no account kind");
  ref.kind = *kind;
  if (parts[0] == "organizations") {
    if (!IsOrganizationAccountKind(ref.kind)) return bad("is a pool account kind on an organisation");
  } else if (parts[0] == "subsidyPools") {
    if (!IsPoolAccountKind(ref.kind)) return bad("is an organisation account kind on a pool");
  } else {
    return bad("belongs to neither an organisation nor a subsidy pool");
  }
  return ref;
}

v1::Entry DebitEntry(absl::string_view account, absl::string_view counterparty, const Money& amount) {
  v1::Entry e;
  e.set_account(std::string(account));
  e.set_counterparty(std::string(counterparty));
  *e.mutable_debit() = amount;
  return e;
}

v1::Entry CreditEntry(absl::string_view account, absl::string_view counterparty,
                      const Money& amount) {
  v1::Entry e;
  e.set_account(std::string(account));
  e.set_counterparty(std::string(counterparty));
  *e.mutable_credit() = amount;
  return e;
}

absl::StatusOr<std::vector<v1::Entry>> ChargeEntries(absl::string_view payer,
                                                     absl::string_view owner, const Money& amount,
                                                     v1::FeeKind fee_kind) {
  LS_RETURN_IF_ERROR(CheckOrganization(payer, "payer"));
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  if (payer == owner) {
    return InvalidField("payer", "the owner's own use is an internal-use posting");
  }
  if (fee_kind == v1::DEPOSIT) {
    return InvalidField("fee_kind", "a deposit is posted as a deposit hold");
  }
  if (fee_kind == v1::FEE_KIND_UNSPECIFIED || !v1::FeeKind_IsValid(fee_kind)) {
    return InvalidField("fee_kind", "required");
  }
  const v1::AccountKind owner_side = fee_kind == v1::DAMAGE ? v1::COMPENSATION : v1::INCOME;
  return std::vector<v1::Entry>{DebitEntry(Acct(payer, v1::EXPENSE), "", amount),
                                CreditEntry(Acct(payer, v1::PAYABLE), owner, amount),
                                DebitEntry(Acct(owner, v1::RECEIVABLE), payer, amount),
                                CreditEntry(Acct(owner, owner_side), payer, amount)};
}

absl::StatusOr<std::vector<v1::Entry>> InternalUseEntries(absl::string_view owner,
                                                          const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(owner, v1::EXPENSE), "", amount),
                                CreditEntry(Acct(owner, v1::INTERNAL_USE), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> InKindEntries(absl::string_view owner, const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(owner, v1::EXPENSE), "", amount),
                                CreditEntry(Acct(owner, v1::IN_KIND_CONTRIBUTION), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> SubsidyEntries(absl::string_view pool,
                                                      absl::string_view beneficiary,
                                                      absl::string_view owner,
                                                      const Money& amount) {
  LS_RETURN_IF_ERROR(CheckPool(pool, "pool"));
  LS_RETURN_IF_ERROR(CheckOrganization(beneficiary, "beneficiary"));
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckDistinct(beneficiary, owner, "beneficiary"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{
      DebitEntry(Acct(pool, v1::POOL_FUNDS), "", amount),
      CreditEntry(Acct(pool, v1::POOL_PAYABLE), owner, amount),
      DebitEntry(Acct(beneficiary, v1::PAYABLE), owner, amount),
      CreditEntry(Acct(beneficiary, v1::SUBSIDY_RECEIVED), pool, amount),
      DebitEntry(Acct(owner, v1::RECEIVABLE), pool, amount),
      CreditEntry(Acct(owner, v1::RECEIVABLE), beneficiary, amount)};
}

absl::StatusOr<std::vector<v1::Entry>> DepositHoldEntries(absl::string_view lessee,
                                                          absl::string_view owner,
                                                          const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(lessee, "lessee"));
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckDistinct(lessee, owner, "lessee"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(lessee, v1::DEPOSIT_LODGED), "", amount),
                                CreditEntry(Acct(lessee, v1::PAYABLE), owner, amount),
                                DebitEntry(Acct(owner, v1::RECEIVABLE), lessee, amount),
                                CreditEntry(Acct(owner, v1::DEPOSIT_HELD), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> DepositReleaseEntries(absl::string_view owner,
                                                             absl::string_view lessee,
                                                             const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckOrganization(lessee, "lessee"));
  LS_RETURN_IF_ERROR(CheckDistinct(lessee, owner, "lessee"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(owner, v1::DEPOSIT_HELD), "", amount),
                                CreditEntry(Acct(owner, v1::PAYABLE), lessee, amount),
                                DebitEntry(Acct(lessee, v1::RECEIVABLE), owner, amount),
                                CreditEntry(Acct(lessee, v1::DEPOSIT_LODGED), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> DepositApplicationEntries(absl::string_view owner,
                                                                 absl::string_view lessee,
                                                                 const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckOrganization(lessee, "lessee"));
  LS_RETURN_IF_ERROR(CheckDistinct(lessee, owner, "lessee"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(owner, v1::DEPOSIT_HELD), "", amount),
                                CreditEntry(Acct(owner, v1::COMPENSATION), lessee, amount),
                                DebitEntry(Acct(lessee, v1::EXPENSE), "", amount),
                                CreditEntry(Acct(lessee, v1::DEPOSIT_LODGED), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> PaymentEntries(absl::string_view payer,
                                                      absl::string_view payee,
                                                      const Money& amount) {
  LS_RETURN_IF_ERROR(CheckOrganization(payer, "payer"));
  LS_RETURN_IF_ERROR(CheckOrganization(payee, "payee"));
  LS_RETURN_IF_ERROR(CheckDistinct(payee, payer, "payee"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(payer, v1::PAYABLE), payee, amount),
                                CreditEntry(Acct(payer, v1::CASH), payee, amount),
                                DebitEntry(Acct(payee, v1::CASH), payer, amount),
                                CreditEntry(Acct(payee, v1::RECEIVABLE), payer, amount)};
}

absl::StatusOr<std::vector<v1::Entry>> PoolPaymentEntries(absl::string_view pool,
                                                          absl::string_view owner,
                                                          const Money& amount) {
  LS_RETURN_IF_ERROR(CheckPool(pool, "pool"));
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "owner"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(pool, v1::POOL_PAYABLE), owner, amount),
                                CreditEntry(Acct(pool, v1::POOL_CASH), "", amount),
                                DebitEntry(Acct(owner, v1::CASH), pool, amount),
                                CreditEntry(Acct(owner, v1::RECEIVABLE), pool, amount)};
}

absl::StatusOr<std::vector<v1::Entry>> PoolTopUpEntries(absl::string_view pool,
                                                        const Money& amount) {
  LS_RETURN_IF_ERROR(CheckPool(pool, "pool"));
  LS_RETURN_IF_ERROR(CheckPositive(amount));
  return std::vector<v1::Entry>{DebitEntry(Acct(pool, v1::POOL_CASH), "", amount),
                                CreditEntry(Acct(pool, v1::POOL_FUNDS), "", amount)};
}

absl::StatusOr<std::vector<v1::Entry>> ChargePostingEntries(const v1::Charge& charge) {
  LS_RETURN_IF_ERROR(ValidateAmount(charge.amount(), "charge.amount"));
  const std::string& owner = charge.owner_organization();
  const std::string& payer = charge.payer_organization();
  LS_RETURN_IF_ERROR(CheckOrganization(owner, "charge.owner_organization"));
  LS_RETURN_IF_ERROR(CheckOrganization(payer, "charge.payer_organization"));
  std::vector<v1::Entry> out;
  if (charge.fee_kind() == v1::DEPOSIT) {
    if (!charge.splits().empty()) return InvalidField("charge.splits", "a deposit is not split");
    if (charge.amount().amount_minor() == 0) return out;
    return DepositHoldEntries(payer, owner, charge.amount());
  }
  if (!charge.splits().empty()) {
    i128 sum = 0;
    for (int i = 0; i < charge.splits_size(); ++i) {
      const v1::ChargeSplit& s = charge.splits(i);
      const std::string f = absl::StrCat("charge.splits[", i, "]");
      if (s.in_kind() != (s.organization() == owner)) {
        return InvalidField(f + ".in_kind", "exactly the owner's own part is in kind");
      }
      if (s.amount().currency_code() != charge.amount().currency_code()) {
        return InvalidField(f + ".amount.currency_code", "must be the charge's currency",
                            "CURRENCY_MISMATCH");
      }
      if (s.amount().amount_minor() < 0) return InvalidField(f + ".amount", "must not be negative");
      sum += s.amount().amount_minor();
      if (s.amount().amount_minor() == 0) continue;
      LS_ASSIGN_OR_RETURN(std::vector<v1::Entry> part,
                          s.in_kind() ? InKindEntries(owner, s.amount())
                                      : ChargeEntries(s.organization(), owner, s.amount(),
                                                      charge.fee_kind()));
      for (auto& e : part) out.push_back(std::move(e));
    }
    if (sum != charge.amount().amount_minor()) {
      return InvalidField("charge.splits", "the parts must sum to the charge's amount");
    }
    return out;
  }
  if (charge.amount().amount_minor() == 0) return out;
  if (payer == owner) {
    if (charge.fee_kind() == v1::DAMAGE) {
      return InvalidField("charge.payer_organization", "an owner does not compensate itself");
    }
    return InternalUseEntries(owner, charge.amount());
  }
  return ChargeEntries(payer, owner, charge.amount(), charge.fee_kind());
}

absl::StatusOr<std::vector<v1::Entry>> SubsidyLineEntries(const v1::SubsidyLine& line,
                                                          const v1::Charge& charge) {
  if (line.amount().currency_code() != charge.amount().currency_code()) {
    return InvalidField("line.amount.currency_code", "must be the charge's currency",
                        "CURRENCY_MISMATCH");
  }
  return SubsidyEntries(line.subsidy_pool(), line.beneficiary_organization(),
                        charge.owner_organization(), line.amount());
}

std::vector<v1::Entry> ReverseEntries(const std::vector<v1::Entry>& entries) {
  std::vector<v1::Entry> out;
  out.reserve(entries.size());
  for (const auto& e : entries) {
    v1::Entry r = e;
    r.clear_debit();
    r.clear_credit();
    if (e.has_debit()) *r.mutable_credit() = e.debit();
    if (e.has_credit()) *r.mutable_debit() = e.credit();
    out.push_back(std::move(r));
  }
  return out;
}

absl::Status CheckBalanced(const std::vector<v1::Entry>& entries,
                           const BalanceCheckOptions& options) {
  if (entries.size() < 2) {
    return InvalidField("entries", "a posting needs at least two entries", "UNBALANCED_POSTING");
  }
  std::string currency = options.currency_code;
  i128 total = 0;  // debits - credits
  std::map<std::string, i128> per_owner;
  for (size_t i = 0; i < entries.size(); ++i) {
    const v1::Entry& e = entries[i];
    const std::string f = absl::StrCat("entries[", i, "]");
    auto ref = ParseAccountName(e.account());
    if (!ref.ok()) {
      return InvalidField(f + ".account", std::string(ref.status().message()), "INVALID_ACCOUNT");
    }
    if (RequiresCounterparty(ref->kind) && e.counterparty().empty()) {
      return InvalidField(f + ".counterparty",
                          absl::StrCat(AccountKindSlug(ref->kind), " entries name a counterparty"),
                          "INVALID_ACCOUNT");
    }
    if (!e.counterparty().empty()) {
      if (!IsOrganizationName(e.counterparty()) && !IsSubsidyPoolName(e.counterparty())) {
        return InvalidField(f + ".counterparty",
                            "must be 'organizations/{id}' or 'subsidyPools/{id}'",
                            "INVALID_ACCOUNT");
      }
      if (e.counterparty() == ref->owner) {
        return InvalidField(f + ".counterparty", "must not be the account's own owner",
                            "INVALID_ACCOUNT");
      }
      if (options.owed_to_organizations && (ref->kind == v1::PAYABLE || ref->kind == v1::POOL_PAYABLE) &&
          !IsOrganizationName(e.counterparty())) {
        return InvalidField(f + ".counterparty",
                            absl::StrCat(AccountKindSlug(ref->kind),
                                         " entries are owed to an organisation, never to a subsidy pool (a "
                                         "pool is owed nothing: it is funded by top-ups and pays owners)"),
                            "INVALID_ACCOUNT");
      }
    }
    if (e.has_debit() == e.has_credit()) {
      return InvalidField(f, "exactly one of debit and credit must be set", "INVALID_AMOUNT");
    }
    const Money& m = e.has_debit() ? e.debit() : e.credit();
    if (m.amount_minor() <= 0) {
      return InvalidField(f + (e.has_debit() ? ".debit" : ".credit"), "must be positive",
                          "INVALID_AMOUNT");
    }
    if (m.amount_minor() > kMaxAmountMinor) {
      return InvalidField(f + (e.has_debit() ? ".debit" : ".credit"),
                          absl::StrCat("must be at most ", kMaxAmountMinor, " minor units"), "INVALID_AMOUNT");
    }
    if (currency.empty()) currency = m.currency_code();
    if (!ValidCurrencyCode(m.currency_code()) || m.currency_code() != currency) {
      return InvalidField(f + (e.has_debit() ? ".debit" : ".credit") + ".currency_code",
                          absl::StrCat("must be the posting's currency ", currency),
                          "CURRENCY_MISMATCH");
    }
    const i128 signed_amount = e.has_debit() ? i128{m.amount_minor()} : -i128{m.amount_minor()};
    total += signed_amount;
    per_owner[ref->owner] += signed_amount;
  }
  if (total != 0) {
    return InvalidField("entries", "the debits and the credits differ", "UNBALANCED_POSTING");
  }
  if (options.per_owner) {
    for (const auto& [owner, net] : per_owner) {
      if (net != 0) {
        return InvalidField("entries",
                            absl::StrCat("the entries of ", owner, " do not balance on their own"),
                            "UNBALANCED_POSTING");
      }
    }
  }
  return absl::OkStatus();
}

// ================================================================ settlement

absl::StatusOr<std::vector<v1::OrganizationPosition>> ComputePositions(
    const std::vector<OpenAmount>& open, absl::string_view currency_code) {
  LS_ASSIGN_OR_RETURN(std::vector<NormalizedOpen> norm, NormalizeOpen(open, currency_code));
  struct Sums {
    i128 owed_to = 0;
    i128 owed_by = 0;
  };
  std::map<std::string, Sums> by_org;
  for (const auto& o : norm) {
    by_org[o.debtor].owed_by += o.amount;
    by_org[o.creditor].owed_to += o.amount;
  }
  std::vector<v1::OrganizationPosition> out;
  for (const auto& [org, s] : by_org) {
    LS_ASSIGN_OR_RETURN(int64_t to, Narrow(s.owed_to, "owed_to"));
    LS_ASSIGN_OR_RETURN(int64_t by, Narrow(s.owed_by, "owed_by"));
    LS_ASSIGN_OR_RETURN(int64_t net, Narrow(s.owed_to - s.owed_by, "net"));
    v1::OrganizationPosition p;
    p.set_organization(org);
    *p.mutable_owed_to() = MakeMoney(currency_code, to);
    *p.mutable_owed_by() = MakeMoney(currency_code, by);
    *p.mutable_net() = MakeMoney(currency_code, net);
    out.push_back(std::move(p));
  }
  return out;
}

absl::StatusOr<std::vector<v1::PairBalance>> ComputePairBalances(
    const std::vector<OpenAmount>& open, absl::string_view currency_code) {
  LS_ASSIGN_OR_RETURN(std::vector<NormalizedOpen> norm, NormalizeOpen(open, currency_code));
  // Per unordered pair (a < b): gross a owes b, gross b owes a.
  std::map<std::pair<std::string, std::string>, std::pair<i128, i128>> pairs;
  for (const auto& o : norm) {
    if (o.debtor < o.creditor) {
      pairs[{o.debtor, o.creditor}].first += o.amount;
    } else {
      pairs[{o.creditor, o.debtor}].second += o.amount;
    }
  }
  std::vector<v1::PairBalance> out;
  for (const auto& [key, gross] : pairs) {
    const auto& [a_owes, b_owes] = gross;
    if (a_owes == b_owes) continue;
    const bool a_debtor = a_owes > b_owes;
    v1::PairBalance p;
    p.set_debtor_organization(a_debtor ? key.first : key.second);
    p.set_creditor_organization(a_debtor ? key.second : key.first);
    LS_ASSIGN_OR_RETURN(int64_t net, Narrow(a_debtor ? a_owes - b_owes : b_owes - a_owes, "amount"));
    LS_ASSIGN_OR_RETURN(int64_t debtor_owes, Narrow(a_debtor ? a_owes : b_owes, "debtor_owes"));
    LS_ASSIGN_OR_RETURN(int64_t creditor_owes, Narrow(a_debtor ? b_owes : a_owes, "creditor_owes"));
    *p.mutable_amount() = MakeMoney(currency_code, net);
    *p.mutable_debtor_owes() = MakeMoney(currency_code, debtor_owes);
    *p.mutable_creditor_owes() = MakeMoney(currency_code, creditor_owes);
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(), [](const v1::PairBalance& x, const v1::PairBalance& y) {
    return std::tie(x.debtor_organization(), x.creditor_organization()) <
           std::tie(y.debtor_organization(), y.creditor_organization());
  });
  return out;
}

absl::StatusOr<std::vector<v1::SettlementTransfer>> PlanTransfers(
    const std::vector<NetPosition>& positions, absl::string_view currency_code,
    const TransferOptions& options) {
  if (!ValidCurrencyCode(currency_code)) {
    return InvalidField("currency_code", "must be an ISO 4217 code such as CNY");
  }
  if (options.max_exact < 0 || options.max_exact > 20) {
    return InvalidField("max_exact", "must be between 0 and 20");
  }
  std::set<std::string> seen;
  i128 sum = 0;
  std::vector<Party> parties;
  for (size_t i = 0; i < positions.size(); ++i) {
    const std::string f = absl::StrCat("positions[", i, "]");
    LS_RETURN_IF_ERROR(CheckOrganization(positions[i].organization, f + ".organization"));
    if (!seen.insert(positions[i].organization).second) {
      return InvalidField(f + ".organization", "appears twice");
    }
    if (positions[i].net == kInt64Min) return OutOfRange(f + ".net");
    sum += positions[i].net;
    if (positions[i].net != 0) parties.push_back({positions[i].organization, positions[i].net});
  }
  if (sum != 0) {
    return InvalidField("positions", "the net positions must sum to zero", "UNBALANCED_POSITIONS");
  }
  std::sort(parties.begin(), parties.end(),
            [](const Party& a, const Party& b) { return a.name < b.name; });
  std::vector<PlannedTransfer> planned;
  // Exact opposite pairs first, debtors by name, each with the first
  // creditor by name holding exactly its debt.
  std::vector<bool> done(parties.size(), false);
  for (size_t d = 0; d < parties.size(); ++d) {
    if (parties[d].net >= 0) continue;
    for (size_t c = 0; c < parties.size(); ++c) {
      if (!done[c] && parties[c].net == -parties[d].net) {
        planned.push_back({parties[d].name, parties[c].name, parties[c].net});
        done[c] = done[d] = true;
        break;
      }
    }
  }
  std::vector<Party> rest;
  for (size_t i = 0; i < parties.size(); ++i) {
    if (!done[i]) rest.push_back(parties[i]);
  }
  if (options.strategy == TransferStrategy::kMinimal &&
      static_cast<int>(rest.size()) <= options.max_exact) {
    for (auto& group : MaxZeroSumGroups(rest)) SettleGreedy(std::move(group), planned);
  } else {
    SettleGreedy(std::move(rest), planned);
  }
  std::sort(planned.begin(), planned.end(), [](const PlannedTransfer& a, const PlannedTransfer& b) {
    return std::tie(a.from, a.to) < std::tie(b.from, b.to);
  });
  std::vector<v1::SettlementTransfer> out;
  for (size_t i = 0; i < planned.size(); ++i) {
    v1::SettlementTransfer t;
    t.set_index(static_cast<int32_t>(i));
    t.set_from_organization(planned[i].from);
    t.set_to_organization(planned[i].to);
    *t.mutable_amount() = MakeMoney(currency_code, static_cast<int64_t>(planned[i].amount));
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<v1::Settlement> ComputeSettlement(const std::vector<OpenAmount>& open,
                                                 absl::string_view currency_code,
                                                 const TransferOptions& options) {
  LS_ASSIGN_OR_RETURN(std::vector<v1::OrganizationPosition> positions,
                      ComputePositions(open, currency_code));
  LS_ASSIGN_OR_RETURN(std::vector<v1::PairBalance> pairs, ComputePairBalances(open, currency_code));
  std::vector<NetPosition> nets;
  for (const auto& p : positions) nets.push_back({p.organization(), p.net().amount_minor()});
  LS_ASSIGN_OR_RETURN(std::vector<v1::SettlementTransfer> transfers,
                      PlanTransfers(nets, currency_code, options));
  i128 gross = 0;
  for (const auto& o : open) gross += o.amount < 0 ? -static_cast<i128>(o.amount) : o.amount;
  i128 moved = 0;
  for (const auto& t : transfers) moved += t.amount().amount_minor();
  v1::Settlement s;
  s.set_currency_code(std::string(currency_code));
  for (auto& p : positions) *s.add_positions() = std::move(p);
  for (auto& p : pairs) *s.add_pair_balances() = std::move(p);
  for (auto& t : transfers) *s.add_transfers() = std::move(t);
  LS_ASSIGN_OR_RETURN(int64_t gross64, Narrow(gross, "gross_total"));
  LS_ASSIGN_OR_RETURN(int64_t moved64, Narrow(moved, "transfer_total"));
  *s.mutable_gross_total() = MakeMoney(currency_code, gross64);
  *s.mutable_transfer_total() = MakeMoney(currency_code, moved64);
  return s;
}

absl::StatusOr<std::vector<v1::Entry>> SettlementNettingEntries(
    const std::vector<OpenAmount>& open, const std::vector<v1::SettlementTransfer>& transfers,
    absl::string_view currency_code) {
  LS_RETURN_IF_ERROR(NormalizeOpen(open, currency_code).status());  // the parties' checks
  // (account, counterparty) -> debits - credits.
  std::map<std::pair<std::string, std::string>, i128> net;
  // An open amount sits on the debtor's PAYABLE towards the creditor and the
  // creditor's RECEIVABLE from the debtor; a negative one (the creditor owes
  // the debtor back: a credit on the invoice) sits there too, on the other
  // sides. Each is moved off where it sits, signed, so both sub-ledgers
  // close; the transfers' payments close what the transfers open.
  for (const auto& o : open) {
    net[{Acct(o.debtor, v1::PAYABLE), o.creditor}] += o.amount;
    net[{Acct(o.creditor, v1::RECEIVABLE), o.debtor}] -= o.amount;
  }
  for (size_t i = 0; i < transfers.size(); ++i) {
    const v1::SettlementTransfer& t = transfers[i];
    const std::string f = absl::StrCat("transfers[", i, "]");
    LS_RETURN_IF_ERROR(CheckOrganization(t.from_organization(), f + ".from_organization"));
    LS_RETURN_IF_ERROR(CheckOrganization(t.to_organization(), f + ".to_organization"));
    LS_RETURN_IF_ERROR(CheckDistinct(t.to_organization(), t.from_organization(),
                                     f + ".to_organization"));
    LS_RETURN_IF_ERROR(ValidateAmount(t.amount(), f + ".amount", true));
    if (t.amount().currency_code() != currency_code) {
      return InvalidField(f + ".amount.currency_code", "must be the settlement's currency",
                          "CURRENCY_MISMATCH");
    }
    net[{Acct(t.from_organization(), v1::PAYABLE), t.to_organization()}] -= t.amount().amount_minor();
    net[{Acct(t.to_organization(), v1::RECEIVABLE), t.from_organization()}] +=
        t.amount().amount_minor();
  }
  std::vector<v1::Entry> out;
  for (const auto& [key, value] : net) {
    if (value == 0) continue;
    LS_ASSIGN_OR_RETURN(int64_t amount, Narrow(value < 0 ? -value : value, "amount"));
    const Money m = MakeMoney(currency_code, amount);
    out.push_back(value > 0 ? DebitEntry(key.first, key.second, m)
                            : CreditEntry(key.first, key.second, m));
  }
  if (!out.empty()) {
    BalanceCheckOptions check;
    check.currency_code = std::string(currency_code);
    if (absl::Status s = CheckBalanced(out, check); !s.ok()) {
      return InvalidField("transfers", "the transfers do not clear the open amounts",
                          "UNBALANCED_POSTING");
    }
  }
  return out;
}

}  // namespace labshare::billing
