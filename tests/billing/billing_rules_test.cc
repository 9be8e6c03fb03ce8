// The billing service's pure rules: prices, fees, lease rent, technical
// services, splits, subsidies, ledger postings, settlement and periods.
// Every amount below is computed by hand in the comment next to it; times
// are fixed civil times (Asia/Shanghai unless the test is about zones).
#include "services/billing/billing_rules.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/proto_util.h"

namespace labshare::billing {
namespace {

namespace tv1 = labshare::type::v1;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

constexpr char kOwner[] = "organizations/owner";
constexpr char kPayer[] = "organizations/payer";
constexpr char kThird[] = "organizations/third";
constexpr char kPool[] = "subsidyPools/sme-voucher";

// ================================================================ helpers

absl::TimeZone Shanghai() {
  auto tz = LoadBillingTimeZone("");
  EXPECT_TRUE(tz.ok()) << tz.status();
  return *tz;
}

// A civil time in Shanghai.
absl::Time Sh(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), Shanghai());
}

absl::Time Utc(int y, int mo, int d, int h = 0, int mi = 0, int s = 0) {
  return absl::FromCivil(absl::CivilSecond(y, mo, d, h, mi, s), absl::UTCTimeZone());
}

Money Cny(int64_t minor) { return MakeMoney("CNY", minor); }

tv1::Interval Span(absl::Time start, absl::Time end) { return ToInterval(TimeRange{start, end}); }

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& reason) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(ErrorReason(status), reason) << status;
}

void ExpectInvalid(const absl::Status& status, const std::string& reason = "INVALID_FIELD") {
  ExpectError(status, absl::StatusCode::kInvalidArgument, reason);
}

std::string FieldOf(const absl::Status& status) {
  auto v = FieldViolationsOf(status);
  return v.empty() ? "" : v.front().field;
}

// 120.00 CNY per hour, a CORE member line.
v1::AppliedRate Hourly(int64_t price = 12000) {
  v1::AppliedRate r;
  r.set_rate("instruments/sem-01/rates/core-hourly");
  r.set_rate_name("CORE member, hourly");
  r.set_payer_class(tv1::MEMBER);
  r.set_member_tier("CORE");
  *r.mutable_unit_price() = Cny(price);
  r.set_unit(v1::UNIT_HOUR);
  return r;
}

BillingPolicy Policy(v1::ChargeBasis basis, absl::Duration unit = absl::Minutes(15),
                     absl::Duration minimum = absl::Hours(1)) {
  BillingPolicy p;
  p.basis = basis;
  p.billing_unit = unit;
  p.minimum_charge = minimum;
  p.missed_fee_bps = 5000;
  p.late_cancel_fee_bps = 2500;
  return p;
}

// Reserved 10:00-12:00 on 10 March 2025; actual as given.
TimedUse Use(std::optional<std::pair<absl::Time, absl::Time>> actual, bool outage = false) {
  TimedUse u;
  u.reserved = {Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 12)};
  if (actual) u.actual = TimeRange{actual->first, actual->second};
  u.interrupted_by_outage = outage;
  return u;
}

absl::Time At10(int minutes_after_ten) {
  return Sh(2025, 3, 10, 10) + absl::Minutes(minutes_after_ten);
}

v1::Charge MustPrice(const absl::StatusOr<v1::Charge>& c) {
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : v1::Charge();
}

bkv1::CostShare Share(const std::string& org, int32_t bps) {
  bkv1::CostShare s;
  s.set_organization(org);
  s.set_share_bps(bps);
  return s;
}

// A completed booking with the reserved interval and session given.
bkv1::Booking Booking(tv1::SharingMode mode, bkv1::Booking::State state) {
  bkv1::Booking b;
  b.set_name("bookings/b-1");
  b.set_instrument("instruments/sem-01");
  b.set_instrument_owner(kOwner);
  b.set_mode(mode);
  b.set_user("users/alice");
  b.set_payer_organization(kPayer);
  b.set_state(state);
  *b.mutable_reserved_interval() = Span(Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 12));
  if (state == bkv1::Booking::COMPLETED) {
    *b.mutable_session()->mutable_start_time() = ToProto(At10(5));
    *b.mutable_session()->mutable_end_time() = ToProto(At10(80));
  }
  if (mode == tv1::JOINT_RESEARCH) {
    b.set_project("projects/graphene");
    *b.add_cost_shares() = Share(kOwner, 3334);
    *b.add_cost_shares() = Share(kPayer, 3333);
    *b.add_cost_shares() = Share(kThird, 3333);
  }
  return b;
}

// A lease of 500.00 CNY per day handed over on 20 March 2025 10:00.
bkv1::Lease Lease(bkv1::LeaseContract::RateBasis basis = bkv1::LeaseContract::DAILY,
                  int64_t rate = 50000) {
  bkv1::Lease l;
  l.set_name("leases/l-1");
  l.set_instrument("instruments/pilot-line");
  l.set_instrument_owner(kOwner);
  l.set_lessee_organization(kPayer);
  l.set_contact_user("users/bob");
  l.set_payer_class(tv1::NON_MEMBER);
  *l.mutable_term() = Span(Sh(2025, 3, 20, 10), Sh(2025, 4, 20, 10));
  l.mutable_contract()->set_rate_basis(basis);
  *l.mutable_contract()->mutable_rate() = Cny(rate);
  *l.mutable_contract()->mutable_deposit() = Cny(100000);
  *l.mutable_handover()->mutable_handover_time() = ToProto(Sh(2025, 3, 20, 10));
  return l;
}

void Return(bkv1::Lease& l, absl::Time when, int64_t damage = 0) {
  *l.mutable_return_record()->mutable_return_time() = ToProto(when);
  if (damage > 0) *l.mutable_return_record()->mutable_damage_amount() = Cny(damage);
}

// 12 samples at 150.00, 2 h staff for 400.00, consumables 85.00:
// total 1800.00 + 400.00 + 85.00 = 2285.00.
bkv1::ServiceOrder Order() {
  bkv1::ServiceOrder o;
  o.set_name("serviceOrders/o-1");
  o.set_instrument("instruments/sem-01");
  o.set_instrument_owner(kOwner);
  o.set_service_entry_id("sem-imaging");
  o.set_client_organization(kPayer);
  o.set_requester("users/carol");
  o.set_sample_count(12);
  o.set_payer_class(tv1::MEMBER);
  o.set_payer_tier("GENERAL");
  bkv1::Quote* q = o.mutable_quote();
  *q->mutable_per_sample_fee() = Cny(15000);
  *q->mutable_staff_time() = ToProto(absl::Hours(2));
  *q->mutable_staff_time_fee() = Cny(40000);
  *q->mutable_consumables() = Cny(8500);
  *q->mutable_total() = Cny(228500);
  *q->mutable_quote_time() = ToProto(Utc(2025, 3, 1, 17));  // 2 March 01:00 in Shanghai
  return o;
}

// A 50 % SME pool with a monthly cap of 1000.00 and 10000.00 in funds.
PoolFunds SmePool(const std::string& name = kPool, int32_t bps = 5000, int32_t priority = 1) {
  PoolFunds f;
  f.pool.set_name(name);
  f.pool.set_display_name("SME innovation voucher");
  f.pool.set_currency_code("CNY");
  f.pool.set_percentage_bps(bps);
  f.pool.mutable_eligibility()->add_size_classes(v1::SME);
  *f.pool.mutable_cap_per_organization() = Cny(100000);
  f.pool.set_cap_period_kind(v1::MONTHLY);
  f.pool.set_priority(priority);
  f.balance = 1000000;
  return f;
}

SubsidyCharge UsageFacts() {
  SubsidyCharge c;
  c.owner_organization = kOwner;
  c.mode = tv1::ON_SITE;
  c.instrument_category = "electron-microscopy";
  c.fee_kind = v1::USAGE;
  c.currency_code = "CNY";
  c.posting_time = Sh(2025, 3, 10, 15);
  return c;
}

SubsidyBeneficiary Sme(const std::string& org = kPayer, int64_t part = 24001) {
  return {org, v1::SME, part};
}

std::vector<v1::SubsidyLine> MustApply(const SubsidyCharge& c,
                                       const std::vector<SubsidyBeneficiary>& b,
                                       const std::vector<PoolFunds>& pools) {
  auto lines = ApplySubsidies(c, b, pools, Shanghai());
  EXPECT_TRUE(lines.ok()) << lines.status();
  return lines.ok() ? *lines : std::vector<v1::SubsidyLine>();
}

// One entry as a comparable tuple: account, counterparty, debit, credit.
using Row = std::tuple<std::string, std::string, int64_t, int64_t>;
std::vector<Row> Rows(const std::vector<v1::Entry>& entries) {
  std::vector<Row> out;
  for (const auto& e : entries) {
    out.emplace_back(e.account(), e.counterparty(), e.has_debit() ? e.debit().amount_minor() : 0,
                     e.has_credit() ? e.credit().amount_minor() : 0);
  }
  return out;
}

std::vector<v1::Entry> Must(const absl::StatusOr<std::vector<v1::Entry>>& e) {
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *e : std::vector<v1::Entry>();
}

// A ledger in memory: debits - credits per (account, counterparty).
class Ledger {
 public:
  void Post(const std::vector<v1::Entry>& entries) {
    ASSERT_TRUE(CheckBalanced(entries).ok()) << CheckBalanced(entries);
    for (const auto& e : entries) {
      balance_[{e.account(), e.counterparty()}] +=
          e.has_debit() ? e.debit().amount_minor() : -e.credit().amount_minor();
    }
  }
  int64_t Net(const std::string& account, const std::string& counterparty = "") const {
    auto it = balance_.find({account, counterparty});
    return it == balance_.end() ? 0 : it->second;
  }
  // Sum over every counterparty of an account.
  int64_t Total(const std::string& account) const {
    int64_t sum = 0;
    for (const auto& [key, v] : balance_) {
      if (key.first == account) sum += v;
    }
    return sum;
  }
  // Every receivable, payable and cash sub-ledger of organisations.
  bool OpenItemsClosed() const {
    for (const auto& [key, v] : balance_) {
      if ((key.first.find("/accounts/receivable") != std::string::npos ||
           key.first.find("/accounts/payable") != std::string::npos) &&
          v != 0) {
        return false;
      }
    }
    return true;
  }

 private:
  std::map<std::pair<std::string, std::string>, int64_t> balance_;
};

std::string A(const std::string& owner, v1::AccountKind kind) { return AccountName(owner, kind); }

// ================================================================ money

TEST(Money, RoundHalfUpRoundsHalvesUp) {
  EXPECT_EQ(*MulDivRoundHalfUp(5, 1, 2), 3);  // 2.5
  EXPECT_EQ(*MulDivRoundHalfUp(7, 1, 2), 4);  // 3.5
  EXPECT_EQ(*MulDivRoundHalfUp(1, 1, 3), 0);  // 0.333
  EXPECT_EQ(*MulDivRoundHalfUp(2, 1, 3), 1);  // 0.667
  EXPECT_EQ(*MulDivRoundHalfUp(0, 99, 7), 0);
}

TEST(Money, RoundHalfUpIsExactBeyond64Bits) {
  // (2^63 - 1) * 2 / 3 = 6148914691236517204.67 -> ...205.
  EXPECT_EQ(*MulDivRoundHalfUp(kMax, 2, 3), int64_t{6148914691236517205});
  EXPECT_EQ(*MulDivRoundHalfUp(kMax, 10000, 10000), kMax);
}

TEST(Money, RoundHalfUpRejectsOverflowAndNegatives) {
  ExpectInvalid(MulDivRoundHalfUp(kMax, 2, 1).status(), "AMOUNT_OUT_OF_RANGE");
  ExpectInvalid(MulDivRoundHalfUp(-1, 2, 1).status());
  ExpectInvalid(MulDivRoundHalfUp(1, 2, 0).status());
}

TEST(Money, FloorIsExact) {
  EXPECT_EQ(*MulDivFloor(10, 3333, 10000), 3);        // 3.333
  EXPECT_EQ(*MulDivFloor(19999, 5000, 10000), 9999);  // 9999.5
  EXPECT_EQ(*MulDivFloor(kMax, 9999, 10000), int64_t{9222449699651090329});
}

TEST(Money, CurrencyCodes) {
  EXPECT_TRUE(ValidCurrencyCode("CNY"));
  EXPECT_FALSE(ValidCurrencyCode("cny"));
  EXPECT_FALSE(ValidCurrencyCode("CN"));
  EXPECT_FALSE(ValidCurrencyCode("CNYY"));
  EXPECT_FALSE(ValidCurrencyCode(""));
}

TEST(Money, ValidateAmountNamesTheField) {
  absl::Status s = ValidateAmount(Cny(-1), "fee");
  ExpectInvalid(s, "INVALID_AMOUNT");
  EXPECT_EQ(FieldOf(s), "fee.amount_minor");
  s = ValidateAmount(MakeMoney("cny", 1), "fee");
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "fee.currency_code");
  ExpectInvalid(ValidateAmount(Cny(0), "fee", /*positive=*/true), "INVALID_AMOUNT");
  EXPECT_TRUE(ValidateAmount(Cny(0), "fee").ok());
}

// ================================================================ time and periods

TEST(Periods, DefaultZoneIsShanghai) {
  auto tz = LoadBillingTimeZone("");
  ASSERT_TRUE(tz.ok());
  EXPECT_EQ(tz->name(), "Asia/Shanghai");
  ExpectInvalid(LoadBillingTimeZone("Mars/Olympus_Mons").status());
  // --time_zone is an IANA name: not the host's zone, a fixed offset or a file.
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai"}) {
    ExpectInvalid(LoadBillingTimeZone(zone).status());
  }
  EXPECT_EQ(LoadBillingTimeZone("Europe/Berlin")->name(), "Europe/Berlin");
}

TEST(Periods, PeriodOfFollowsTheZone) {
  // 16:00 UTC on 31 March is midnight of 1 April in Shanghai (UTC+8).
  EXPECT_EQ(PeriodOf(Utc(2025, 3, 31, 16), Shanghai()), "2025-04");
  EXPECT_EQ(PeriodOf(Utc(2025, 3, 31, 15, 59, 59), Shanghai()), "2025-03");
  EXPECT_EQ(PeriodOf(Utc(2025, 3, 31, 16), absl::UTCTimeZone()), "2025-03");
}

TEST(Periods, ParseRejectsAnythingButYyyyMm) {
  for (const char* bad : {"2025-3", "2025-13", "2025-00", "25-03", "2025/03", "2025-03x", "0000-01",
                          "", "abcd-ef", "2025-1a"}) {
    ExpectInvalid(ParsePeriod(bad).status(), "INVALID_PERIOD");
  }
  auto m = ParsePeriod("2025-03");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m, absl::CivilMonth(2025, 3));
}

TEST(Periods, RangeIsTheCalendarMonthInTheZone) {
  auto r = PeriodRange("2025-02", Shanghai());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, Utc(2025, 1, 31, 16));
  EXPECT_EQ(r->end, Utc(2025, 2, 28, 16));
}

TEST(Periods, NextAndPrevious) {
  EXPECT_EQ(*NextPeriod("2025-12"), "2026-01");
  EXPECT_EQ(*NextPeriod("2025-01"), "2025-02");
  EXPECT_EQ(*PreviousPeriod("2025-01"), "2024-12");
  ExpectInvalid(NextPeriod("9999-12").status(), "INVALID_PERIOD");
  ExpectInvalid(PreviousPeriod("0001-01").status(), "INVALID_PERIOD");
  ExpectInvalid(NextPeriod("2025-13").status(), "INVALID_PERIOD");
}

TEST(Periods, EndedAtItsLastInstant) {
  EXPECT_TRUE(*PeriodEnded("2025-03", Utc(2025, 3, 31, 16), Shanghai()));
  EXPECT_FALSE(*PeriodEnded("2025-03", Utc(2025, 3, 31, 15, 59, 59), Shanghai()));
}

TEST(Periods, TouchedByARangeEndingAtMidnightExcludesTheNextMonth) {
  auto p = PeriodsTouched({Sh(2025, 1, 15), Sh(2025, 3, 1)}, Shanghai());
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, ElementsAre("2025-01", "2025-02"));
  p = PeriodsTouched({Sh(2024, 12, 31, 23), Sh(2025, 1, 1, 1)}, Shanghai());
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, ElementsAre("2024-12", "2025-01"));
}

TEST(Periods, TouchedRejectsOpenOrEmptyRanges) {
  ExpectInvalid(PeriodsTouched({Sh(2025, 1, 1), absl::InfiniteFuture()}, Shanghai()).status());
  ExpectInvalid(PeriodsTouched({Sh(2025, 1, 1), Sh(2025, 1, 1)}, Shanghai()).status());
}

TEST(Periods, CapPeriodsMonthQuarterYear) {
  const absl::Time t = Sh(2025, 5, 10, 12);
  auto m = CapPeriodRange(v1::MONTHLY, t, Shanghai());
  auto q = CapPeriodRange(v1::QUARTERLY, t, Shanghai());
  auto y = CapPeriodRange(v1::YEARLY, t, Shanghai());
  ASSERT_TRUE(m.ok() && q.ok() && y.ok());
  EXPECT_EQ(*m, (TimeRange{Sh(2025, 5, 1), Sh(2025, 6, 1)}));
  EXPECT_EQ(*q, (TimeRange{Sh(2025, 4, 1), Sh(2025, 7, 1)}));
  EXPECT_EQ(*y, (TimeRange{Sh(2025, 1, 1), Sh(2026, 1, 1)}));
  ExpectInvalid(CapPeriodRange(v1::PERIOD_KIND_UNSPECIFIED, t, Shanghai()).status());
}

TEST(Periods, QuarterStartsAtLocalMidnight) {
  // Midnight of 1 April in Shanghai is still 31 March in UTC.
  auto q = CapPeriodRange(v1::QUARTERLY, Utc(2025, 3, 31, 16), Shanghai());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, (TimeRange{Sh(2025, 4, 1), Sh(2025, 7, 1)}));
  q = CapPeriodRange(v1::QUARTERLY, Sh(2025, 12, 31, 23, 59), Shanghai());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(*q, (TimeRange{Sh(2025, 10, 1), Sh(2026, 1, 1)}));
}

TEST(Periods, CalendarDaysCountStartedDays) {
  EXPECT_EQ(*CalendarDaysTouched({Sh(2025, 3, 1, 14), Sh(2025, 3, 3, 14)}, Shanghai()), 3);
  EXPECT_EQ(*CalendarDaysTouched({Sh(2025, 3, 1), Sh(2025, 3, 3)}, Shanghai()), 2);
  EXPECT_EQ(*CalendarDaysTouched({Sh(2025, 3, 1, 9), Sh(2025, 3, 1, 9)}, Shanghai()), 0);
  EXPECT_EQ(*CalendarDaysTouched({Sh(2025, 3, 1, 9), Sh(2025, 3, 1, 10)}, Shanghai()), 1);
}

TEST(Periods, CalendarDaysDependOnTheZone) {
  // 15:00-17:00 UTC is 23:00-01:00 in Shanghai: two days there, one in UTC.
  const TimeRange r{Utc(2025, 3, 1, 15), Utc(2025, 3, 1, 17)};
  EXPECT_EQ(*CalendarDaysTouched(r, Shanghai()), 2);
  EXPECT_EQ(*CalendarDaysTouched(r, absl::UTCTimeZone()), 1);
}

TEST(Periods, DaysInMonth) {
  EXPECT_EQ(DaysInMonth(absl::CivilMonth(2024, 2)), 29);
  EXPECT_EQ(DaysInMonth(absl::CivilMonth(2025, 2)), 28);
  EXPECT_EQ(DaysInMonth(absl::CivilMonth(2025, 12)), 31);
  EXPECT_EQ(DaysInMonth(absl::CivilMonth(2025, 4)), 30);
}

TEST(Periods, IntervalConversions) {
  tv1::Interval open;
  *open.mutable_start_time() = ToProto(Sh(2025, 1, 1));
  ExpectInvalid(RangeFromInterval(open, "term").status());
  auto r = RangeFromInterval(open, "term", true, /*allow_open_end=*/true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->end, absl::InfiniteFuture());
  EXPECT_FALSE(ToInterval(*r).has_end_time());
  absl::Status inverted = RangeFromInterval(Span(Sh(2025, 1, 2), Sh(2025, 1, 1)), "term").status();
  ExpectInvalid(inverted);
  EXPECT_EQ(FieldOf(inverted), "term");
  ExpectInvalid(RangeFromInterval(Span(Sh(2025, 1, 1), Sh(2025, 1, 1)), "term").status());
  EXPECT_TRUE(RangeFromInterval(Span(Sh(2025, 1, 1), Sh(2025, 1, 1)), "term", false).ok());
}

// ================================================================ usage

TEST(Usage, ReservedTimeBillsTheSlot) {
  // 2 h x 120.00 = 240.00 whatever the session.
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use({{At10(5), At10(80)}})));
  EXPECT_EQ(c.fee_kind(), v1::USAGE);
  EXPECT_EQ(c.source_key(), "usage");
  EXPECT_EQ(c.basis(), v1::RESERVED_TIME);
  EXPECT_EQ(c.amount().amount_minor(), 24000);
  EXPECT_EQ(c.amount().currency_code(), "CNY");
  EXPECT_EQ(c.quantity_milli(), 2000);
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Hours(2));
  EXPECT_FALSE(c.minimum_charge_applied());
  EXPECT_EQ(FromProto(c.service_interval().start_time()), Sh(2025, 3, 10, 10));
  EXPECT_EQ(FromProto(c.service_interval().end_time()), Sh(2025, 3, 10, 12));
}

TEST(Usage, ActualTimeRoundsUpToTheBillingUnit) {
  // 77 min -> 90 min = 1.5 h x 120.00 = 180.00.
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use({{At10(5), At10(82)}})));
  EXPECT_EQ(c.basis(), v1::ACTUAL_TIME);
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Minutes(90));
  EXPECT_EQ(c.quantity_milli(), 1500);
  EXPECT_EQ(c.amount().amount_minor(), 18000);
  EXPECT_EQ(FromProto(c.service_interval().start_time()), At10(5));
  EXPECT_EQ(FromProto(c.service_interval().end_time()), At10(82));
}

TEST(Usage, ActualTimeOnAUnitBoundaryIsNotRoundedFurther) {
  // 75 min is 5 x 15 min: 1.25 h x 120.00 = 150.00.
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use({{At10(5), At10(80)}})));
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Minutes(75));
  EXPECT_EQ(c.amount().amount_minor(), 15000);
}

TEST(Usage, MinimumChargeRaisesShortSessions) {
  // 20 min -> 30 min -> raised to the 1 h minimum: 120.00.
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use({{At10(0), At10(20)}})));
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Hours(1));
  EXPECT_TRUE(c.minimum_charge_applied());
  EXPECT_EQ(c.amount().amount_minor(), 12000);
  EXPECT_EQ(FromProto(c.minimum_charge()), absl::Hours(1));
  EXPECT_EQ(FromProto(c.billing_increment()), absl::Minutes(15));
}

TEST(Usage, MinimumExactlyReachedIsNotApplied) {
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use({{At10(0), At10(60)}})));
  EXPECT_FALSE(c.minimum_charge_applied());
  EXPECT_EQ(c.amount().amount_minor(), 12000);
}

TEST(Usage, MinimumThatIsNoMultipleOfTheUnitStillApplies) {
  // 20 min -> 30 min (unit) -> 50 min (minimum): 50/60 x 120.00 = 100.00.
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME, absl::Minutes(15), absl::Minutes(50)),
                           Use({{At10(0), At10(20)}})));
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Minutes(50));
  EXPECT_TRUE(c.minimum_charge_applied());
  EXPECT_EQ(c.amount().amount_minor(), 10000);
  EXPECT_EQ(c.quantity_milli(), 833);  // 0.8333 h
}

TEST(Usage, GreaterOfTakesTheLongerSession) {
  // Actual 160 min > reserved 120 min: 165 min = 2.75 h x 120.00 = 330.00.
  v1::Charge c = MustPrice(PriceUsage(Hourly(), Policy(v1::GREATER_OF_RESERVED_AND_ACTUAL),
                                      Use({{At10(0), At10(160)}})));
  EXPECT_EQ(c.basis(), v1::GREATER_OF_RESERVED_AND_ACTUAL);
  EXPECT_EQ(FromProto(c.billed_duration()), absl::Minutes(165));
  EXPECT_EQ(c.amount().amount_minor(), 33000);
  EXPECT_EQ(FromProto(c.service_interval().end_time()), At10(160));
}

TEST(Usage, GreaterOfTakesTheReservationWhenTheSessionIsShorter) {
  v1::Charge c = MustPrice(
      PriceUsage(Hourly(), Policy(v1::GREATER_OF_RESERVED_AND_ACTUAL), Use({{At10(0), At10(30)}})));
  EXPECT_EQ(c.amount().amount_minor(), 24000);
  EXPECT_EQ(FromProto(c.service_interval().end_time()), Sh(2025, 3, 10, 12));
}

TEST(Usage, OutageInterruptionBillsActualTimeOnly) {
  // Policy says reserved (2 h), but an outage cut the session at 50 min:
  // 50 -> 60 min: 120.00.
  v1::Charge c = MustPrice(
      PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use({{At10(0), At10(50)}}, /*outage=*/true)));
  EXPECT_EQ(c.basis(), v1::ACTUAL_TIME);
  EXPECT_EQ(c.amount().amount_minor(), 12000);
}

TEST(Usage, AmountRoundsHalfUpToTheMinorUnit) {
  const BillingPolicy none = Policy(v1::ACTUAL_TIME, absl::ZeroDuration(), absl::ZeroDuration());
  // 10.01 per hour for 30 min = 5.005 -> 5.01.
  EXPECT_EQ(
      MustPrice(PriceUsage(Hourly(1001), none, Use({{At10(0), At10(30)}}))).amount().amount_minor(),
      501);
  // 10.01 per hour for 20 min = 3.3367 -> 3.34.
  EXPECT_EQ(
      MustPrice(PriceUsage(Hourly(1001), none, Use({{At10(0), At10(20)}}))).amount().amount_minor(),
      334);
  // 10.00 per hour for 1 min = 0.1667 -> 0.17.
  EXPECT_EQ(
      MustPrice(PriceUsage(Hourly(1000), none, Use({{At10(0), At10(1)}}))).amount().amount_minor(),
      17);
  // 10.00 per hour for 1 s = 0.00278 -> 0.00.
  TimedUse second = Use({{At10(0), At10(0) + absl::Seconds(1)}});
  EXPECT_EQ(MustPrice(PriceUsage(Hourly(1000), none, second)).amount().amount_minor(), 0);
}

TEST(Usage, NoBillingUnitBillsTheExactTime) {
  // 77 min x 120.00 / 60 = 154.00.
  const BillingPolicy none = Policy(v1::ACTUAL_TIME, absl::ZeroDuration(), absl::ZeroDuration());
  v1::Charge c = MustPrice(PriceUsage(Hourly(), none, Use({{At10(5), At10(82)}})));
  EXPECT_EQ(c.amount().amount_minor(), 15400);
  EXPECT_EQ(c.quantity_milli(), 1283);  // 1.28333 h
}

TEST(Usage, QuantityMilliRoundsHalfUp) {
  EXPECT_EQ(*HoursMilli(absl::Minutes(20)), 333);
  EXPECT_EQ(*HoursMilli(absl::Minutes(40)), 667);
  EXPECT_EQ(*HoursMilli(absl::Seconds(9)), 3);  // 2.5 milli-hours -> 3
}

TEST(Usage, HugePricesUse128BitProducts) {
  // 9 x 10^15 per hour for 1000 h = 9 x 10^18, just inside int64.
  EXPECT_EQ(*HourlyAmount(9'000'000'000'000'000, absl::Hours(1000)),
            int64_t{9'000'000'000'000'000'000});
  ExpectInvalid(HourlyAmount(kMax, absl::Hours(2)).status(), "AMOUNT_OUT_OF_RANGE");
  ExpectInvalid(HourlyAmount(1, absl::Hours(24 * 365 * 300)).status());
}

TEST(Usage, ActualBasisNeedsASession) {
  ExpectInvalid(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use(std::nullopt)).status());
  ExpectInvalid(
      PriceUsage(Hourly(), Policy(v1::GREATER_OF_RESERVED_AND_ACTUAL), Use(std::nullopt)).status());
  EXPECT_TRUE(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use(std::nullopt)).ok());
}

TEST(Usage, RejectsRatesThatAreNotHourly) {
  v1::AppliedRate daily = Hourly();
  daily.set_unit(v1::UNIT_DAY);
  absl::Status s = PriceUsage(daily, Policy(v1::RESERVED_TIME), Use(std::nullopt)).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "rate.unit");
  ExpectInvalid(PriceUsage(Hourly(-1), Policy(v1::RESERVED_TIME), Use(std::nullopt)).status(),
                "INVALID_AMOUNT");
}

TEST(Usage, CopiesTheRateAndTheIntervals) {
  v1::Charge c =
      MustPrice(PriceUsage(Hourly(), Policy(v1::ACTUAL_TIME), Use({{At10(5), At10(80)}})));
  EXPECT_EQ(c.rate().rate(), "instruments/sem-01/rates/core-hourly");
  EXPECT_EQ(c.rate().member_tier(), "CORE");
  EXPECT_EQ(FromProto(c.reserved_interval().start_time()), Sh(2025, 3, 10, 10));
  EXPECT_EQ(FromProto(c.actual_interval().start_time()), At10(5));
  EXPECT_EQ(FromProto(c.actual_interval().end_time()), At10(80));
}

TEST(Policy, ValidationRejectsBadRules) {
  BillingPolicy p = Policy(v1::RESERVED_TIME);
  p.basis = v1::COUNTED;
  ExpectInvalid(ValidatePolicy(p));
  p = Policy(v1::RESERVED_TIME);
  p.missed_fee_bps = 10001;
  EXPECT_EQ(FieldOf(ValidatePolicy(p)), "billing_policy.missed_fee_bps");
  p = Policy(v1::RESERVED_TIME);
  p.late_cancel_fee_bps = -1;
  ExpectInvalid(ValidatePolicy(p));
  p = Policy(v1::RESERVED_TIME);
  p.billing_unit = absl::Minutes(-15);
  ExpectInvalid(ValidatePolicy(p));
  EXPECT_TRUE(ValidatePolicy(Policy(v1::RESERVED_TIME)).ok());
}

TEST(Policy, FromSlotRules) {
  invv1::SlotRules r;
  r.set_billing_basis(invv1::GREATER_OF_RESERVED_AND_ACTUAL);
  *r.mutable_billing_unit() = ToProto(absl::Minutes(30));
  *r.mutable_minimum_charge() = ToProto(absl::Hours(2));
  r.set_missed_fee_bps(10000);
  r.set_late_cancel_fee_bps(3000);
  auto p = PolicyFromSlotRules(r);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->basis, v1::GREATER_OF_RESERVED_AND_ACTUAL);
  EXPECT_EQ(p->billing_unit, absl::Minutes(30));
  EXPECT_EQ(p->minimum_charge, absl::Hours(2));
  EXPECT_EQ(p->missed_fee_bps, 10000);
  EXPECT_EQ(p->late_cancel_fee_bps, 3000);
  r.set_billing_basis(invv1::BILLING_BASIS_UNSPECIFIED);
  absl::Status s = PolicyFromSlotRules(r).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "slot_rules.billing_basis");
}

TEST(Rates, AppliedRateFromAnInventoryLine) {
  invv1::Rate line;
  line.set_name("instruments/sem-01/rates/r-7");
  line.set_mode(tv1::ON_SITE);
  line.set_payer_class(tv1::MEMBER);
  line.set_unit(invv1::PER_HOUR);
  *line.mutable_price() = Cny(9000);
  *line.mutable_effective_time() = ToProto(Sh(2025, 1, 1));
  auto r = AppliedRateFromLine(line, "CORE");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rate(), "instruments/sem-01/rates/r-7");
  EXPECT_EQ(r->rate_name(), "CORE member, hourly");
  EXPECT_EQ(r->member_tier(), "CORE");
  EXPECT_EQ(r->unit(), v1::UNIT_HOUR);
  EXPECT_EQ(r->unit_price().amount_minor(), 9000);
  EXPECT_EQ(FromProto(r->effective_time()), Sh(2025, 1, 1));
}

TEST(Rates, NonMemberLinesCarryNoTier) {
  invv1::Rate line;
  line.set_payer_class(tv1::NON_MEMBER);
  line.set_unit(invv1::RATE_PER_SAMPLE);
  *line.mutable_price() = Cny(15000);
  auto r = AppliedRateFromLine(line, "CORE");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rate_name(), "non-member, per sample");
  EXPECT_EQ(r->member_tier(), "");
  EXPECT_EQ(r->unit(), v1::UNIT_SAMPLE);
  line.set_unit(invv1::RATE_UNIT_UNSPECIFIED);
  ExpectInvalid(AppliedRateFromLine(line, "").status());
}

TEST(Rates, UnitMapping) {
  EXPECT_EQ(ChargeUnitOf(invv1::RATE_PER_DAY), v1::UNIT_DAY);
  EXPECT_EQ(ChargeUnitOf(invv1::RATE_PER_MONTH), v1::UNIT_MONTH);
  EXPECT_EQ(ChargeUnitOf(invv1::RATE_PER_TEST), v1::UNIT_TEST);
  EXPECT_EQ(ChargeUnitOf(invv1::PER_TEST), v1::UNIT_TEST);
  EXPECT_EQ(ChargeUnitOf(invv1::PER_SAMPLE), v1::UNIT_SAMPLE);
  EXPECT_EQ(ChargeUnitOf(invv1::SERVICE_UNIT_UNSPECIFIED), v1::CHARGE_UNIT_UNSPECIFIED);
}

// ================================================================ booking fees

TEST(Fees, MissedBookingIsAShareOfTheReservedCharge) {
  // 50 % of 2 h x 120.00 = 120.00.
  v1::Charge c =
      MustPrice(PriceBookingFee(v1::MISSED_BOOKING_FEE, Hourly(), Policy(v1::ACTUAL_TIME),
                                {Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 12)}));
  EXPECT_EQ(c.fee_kind(), v1::MISSED_BOOKING_FEE);
  EXPECT_EQ(c.source_key(), "missed-booking-fee");
  EXPECT_EQ(c.basis(), v1::RESERVED_TIME);
  EXPECT_EQ(c.fee_bps(), 5000);
  EXPECT_EQ(c.base_amount().amount_minor(), 24000);
  EXPECT_EQ(c.amount().amount_minor(), 12000);
  EXPECT_FALSE(c.has_actual_interval());
}

TEST(Fees, LateCancellationRoundsHalfUp) {
  BillingPolicy p = Policy(v1::RESERVED_TIME, absl::Minutes(15), absl::ZeroDuration());
  const TimeRange hour{Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 11)};
  // 25 % of 10.01 = 2.5025 -> 2.50.
  EXPECT_EQ(MustPrice(PriceBookingFee(v1::LATE_CANCELLATION_FEE, Hourly(1001), p, hour))
                .amount()
                .amount_minor(),
            250);
  // 50 % of 10.01 = 5.005 -> 5.01.
  p.late_cancel_fee_bps = 5000;
  v1::Charge c = MustPrice(PriceBookingFee(v1::LATE_CANCELLATION_FEE, Hourly(1001), p, hour));
  EXPECT_EQ(c.amount().amount_minor(), 501);
  EXPECT_EQ(c.source_key(), "late-cancellation-fee");
  EXPECT_EQ(c.base_amount().amount_minor(), 1001);
}

TEST(Fees, BaseIncludesBillingUnitAndMinimum) {
  // Reserved 20 min -> 30 min -> 1 h minimum: base 120.00; 10 % = 12.00.
  BillingPolicy p = Policy(v1::ACTUAL_TIME);
  p.missed_fee_bps = 1000;
  v1::Charge c =
      MustPrice(PriceBookingFee(v1::MISSED_BOOKING_FEE, Hourly(), p, {At10(0), At10(20)}));
  EXPECT_EQ(c.base_amount().amount_minor(), 12000);
  EXPECT_TRUE(c.minimum_charge_applied());
  EXPECT_EQ(c.amount().amount_minor(), 1200);
}

TEST(Fees, ZeroBpsIsAZeroFee) {
  BillingPolicy p = Policy(v1::RESERVED_TIME);
  p.missed_fee_bps = 0;
  v1::Charge c = MustPrice(PriceBookingFee(v1::MISSED_BOOKING_FEE, Hourly(), p,
                                           {Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 12)}));
  EXPECT_EQ(c.amount().amount_minor(), 0);
  EXPECT_EQ(c.base_amount().amount_minor(), 24000);
}

// A booking whose fee is 0 bps is charged nothing at all (no zero-amount
// charge), as a service order's late cancellation at 0 bps.
TEST(Fees, ABookingFeeOfZeroBpsIsNoCharge) {
  BillingPolicy p = Policy(v1::RESERVED_TIME);
  p.missed_fee_bps = 0;
  auto missed = PriceBooking(Booking(tv1::ON_SITE, bkv1::Booking::MISSED), Hourly(), p);
  ASSERT_TRUE(missed.ok()) << missed.status();
  EXPECT_FALSE(missed->has_value());
  bkv1::Booking late = Booking(tv1::ON_SITE, bkv1::Booking::CANCELLED);
  late.set_late_cancellation(true);
  auto fee = PriceBooking(late, Hourly(), p);  // late_cancel_fee_bps 2500
  ASSERT_TRUE(fee.ok() && fee->has_value()) << fee.status();
  EXPECT_EQ((*fee)->amount().amount_minor(), 6000);
  p.late_cancel_fee_bps = 0;
  fee = PriceBooking(late, Hourly(), p);
  ASSERT_TRUE(fee.ok()) << fee.status();
  EXPECT_FALSE(fee->has_value());
  EXPECT_EQ(FeeBpsFor(BookingCharge::kUsage, p), std::nullopt);
}

// A fee of positive bps that rounds to 0 minor units is no charge either
// (billing.proto Charge.amount: a fee is never 0), while one unit more of
// fee is charged. Reserved 2 h at 0.01 an hour: base 2 minor units.
TEST(Fees, ABookingFeeThatRoundsToZeroIsNoCharge) {
  BillingPolicy p = Policy(v1::RESERVED_TIME);
  p.missed_fee_bps = 2000;  // 20 % of 2 = 0.4 -> 0
  auto missed = PriceBooking(Booking(tv1::ON_SITE, bkv1::Booking::MISSED), Hourly(1), p);
  ASSERT_TRUE(missed.ok()) << missed.status();
  EXPECT_FALSE(missed->has_value());
  p.missed_fee_bps = 2500;  // 25 % of 2 = 0.5 -> 1
  missed = PriceBooking(Booking(tv1::ON_SITE, bkv1::Booking::MISSED), Hourly(1), p);
  ASSERT_TRUE(missed.ok() && missed->has_value()) << missed.status();
  EXPECT_EQ((*missed)->base_amount().amount_minor(), 2);
  EXPECT_EQ((*missed)->amount().amount_minor(), 1);
  bkv1::Booking late = Booking(tv1::ON_SITE, bkv1::Booking::CANCELLED);
  late.set_late_cancellation(true);
  p.late_cancel_fee_bps = 1;  // 0.01 % of 2 = 0.0002 -> 0
  auto fee = PriceBooking(late, Hourly(1), p);
  ASSERT_TRUE(fee.ok()) << fee.status();
  EXPECT_FALSE(fee->has_value());
  // A free use is still a charge of 0 (a record of the use), not a fee.
  auto free = PriceBooking(Booking(tv1::ON_SITE, bkv1::Booking::COMPLETED), Hourly(0), p);
  ASSERT_TRUE(free.ok() && free->has_value()) << free.status();
  EXPECT_EQ((*free)->amount().amount_minor(), 0);
}

TEST(Fees, OnlyMissedAndLateFeesAreBookingFees) {
  ExpectInvalid(PriceBookingFee(v1::USAGE, Hourly(), Policy(v1::RESERVED_TIME),
                                {Sh(2025, 3, 10, 10), Sh(2025, 3, 10, 12)})
                    .status());
  ExpectInvalid(PriceBookingFee(v1::MISSED_BOOKING_FEE, Hourly(), Policy(v1::RESERVED_TIME),
                                {Sh(2025, 3, 10, 12), Sh(2025, 3, 10, 12)})
                    .status());
}

TEST(Fees, FeeAmountBounds) {
  EXPECT_EQ(*FeeAmount(5, 5000), 3);  // 2.5 -> 3
  EXPECT_EQ(*FeeAmount(24000, 10000), 24000);
  ExpectInvalid(FeeAmount(100, 10001).status());
  ExpectInvalid(FeeAmount(-1, 100).status());
}

// ================================================================ what a booking is charged

TEST(BookingCharges, CompletedSlotModesAreUsage) {
  EXPECT_EQ(ChargeForBooking(Booking(tv1::ON_SITE, bkv1::Booking::COMPLETED)),
            BookingCharge::kUsage);
  EXPECT_EQ(ChargeForBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED)),
            BookingCharge::kUsage);
}

TEST(BookingCharges, MissedIsTheMissedFee) {
  EXPECT_EQ(ChargeForBooking(Booking(tv1::ON_SITE, bkv1::Booking::MISSED)),
            BookingCharge::kMissedBookingFee);
}

TEST(BookingCharges, OnlyLateCancellationsWithoutOutageAreCharged) {
  bkv1::Booking b = Booking(tv1::ON_SITE, bkv1::Booking::CANCELLED);
  EXPECT_EQ(ChargeForBooking(b), BookingCharge::kNone);
  b.set_late_cancellation(true);
  EXPECT_EQ(ChargeForBooking(b), BookingCharge::kLateCancellationFee);
  b.set_cancelled_by_outage(true);
  EXPECT_EQ(ChargeForBooking(b), BookingCharge::kNone);
  b.set_cancelled_by_outage(false);
  b.mutable_cancellation()->set_initiator(bkv1::Booking::MAINTENANCE_OUTAGE);
  EXPECT_EQ(ChargeForBooking(b), BookingCharge::kNone);
}

TEST(BookingCharges, LeaseServiceAndOtherStatesAreNotCharged) {
  EXPECT_EQ(ChargeForBooking(Booking(tv1::LEASE, bkv1::Booking::COMPLETED)), BookingCharge::kNone);
  EXPECT_EQ(ChargeForBooking(Booking(tv1::TECHNICAL_SERVICE, bkv1::Booking::COMPLETED)),
            BookingCharge::kNone);
  EXPECT_EQ(ChargeForBooking(Booking(tv1::ON_SITE, bkv1::Booking::EXPIRED)), BookingCharge::kNone);
  EXPECT_EQ(ChargeForBooking(Booking(tv1::ON_SITE, bkv1::Booking::REJECTED)), BookingCharge::kNone);
  EXPECT_EQ(ChargeForBooking(Booking(tv1::ON_SITE, bkv1::Booking::CHECKED_IN)),
            BookingCharge::kNone);
}

TEST(BookingCharges, PriceBookingFillsTheBookingFields) {
  auto c = PriceBooking(Booking(tv1::ON_SITE, bkv1::Booking::COMPLETED), Hourly(),
                        Policy(v1::ACTUAL_TIME));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  const v1::Charge& charge = **c;
  EXPECT_EQ(charge.booking(), "bookings/b-1");
  EXPECT_EQ(charge.mode(), tv1::ON_SITE);
  EXPECT_EQ(charge.instrument(), "instruments/sem-01");
  EXPECT_EQ(charge.owner_organization(), kOwner);
  EXPECT_EQ(charge.payer_organization(), kPayer);
  EXPECT_EQ(charge.user(), "users/alice");
  EXPECT_EQ(charge.amount().amount_minor(), 15000);  // 75 min
  EXPECT_THAT(charge.splits(), IsEmpty());
}

TEST(BookingCharges, JointResearchIsSplitByTheBookingsShares) {
  // 240.00 over 3334 / 3333 / 3333: floors 80.01, 79.99, 79.99 (one fen
  // left) and remainders 0.6, 0.2, 0.2 -> the owner's part gets it.
  auto c = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED), Hourly(),
                        Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  const v1::Charge& charge = **c;
  EXPECT_EQ(charge.project(), "projects/graphene");
  ASSERT_EQ(charge.splits_size(), 3);
  EXPECT_EQ(charge.splits(0).organization(), kOwner);
  EXPECT_TRUE(charge.splits(0).in_kind());
  EXPECT_EQ(charge.splits(0).amount().amount_minor(), 8002);
  EXPECT_EQ(charge.splits(1).amount().amount_minor(), 7999);
  EXPECT_FALSE(charge.splits(1).in_kind());
  EXPECT_EQ(charge.splits(2).amount().amount_minor(), 7999);
  EXPECT_EQ(charge.splits(2).share_bps(), 3333);
}

TEST(BookingCharges, MissedJointResearchFeeIsSplitToo) {
  // 50 % of 240.00 = 120.00. 12000 x 3334 / 10000 = 4000 r 8000;
  // 12000 x 3333 / 10000 = 3999 r 6000 (twice). Floors sum to 11998: two
  // units left, to the owner (r 8000) and the payer (first of the tie).
  auto c = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::MISSED), Hourly(),
                        Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->fee_kind(), v1::MISSED_BOOKING_FEE);
  EXPECT_EQ((*c)->amount().amount_minor(), 12000);
  ASSERT_EQ((*c)->splits_size(), 3);
  EXPECT_EQ((*c)->splits(0).amount().amount_minor(), 4001);
  EXPECT_EQ((*c)->splits(1).amount().amount_minor(), 4000);
  EXPECT_EQ((*c)->splits(2).amount().amount_minor(), 3999);
}

TEST(BookingCharges, OutageCancellationPricesNothing) {
  bkv1::Booking b = Booking(tv1::ON_SITE, bkv1::Booking::CANCELLED);
  b.set_late_cancellation(true);
  b.set_cancelled_by_outage(true);
  auto c = PriceBooking(b, Hourly(), Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TEST(BookingCharges, LateCancellationOfABooking) {
  bkv1::Booking b = Booking(tv1::ON_SITE, bkv1::Booking::CANCELLED);
  b.set_late_cancellation(true);
  auto c = PriceBooking(b, Hourly(), Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->fee_kind(), v1::LATE_CANCELLATION_FEE);
  EXPECT_EQ((*c)->amount().amount_minor(), 6000);  // 25 % of 240.00
}

TEST(BookingCharges, JointResearchWithoutSharesIsRejected) {
  bkv1::Booking b = Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED);
  b.clear_cost_shares();
  absl::Status s = PriceBooking(b, Hourly(), Policy(v1::RESERVED_TIME)).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "booking.cost_shares");
}

TEST(BookingCharges, RunningSessionIsRejected) {
  bkv1::Booking b = Booking(tv1::ON_SITE, bkv1::Booking::COMPLETED);
  b.mutable_session()->clear_end_time();
  absl::Status s = TimedUseFromBooking(b).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "booking.session.end_time");
  b.clear_reserved_interval();
  ExpectInvalid(TimedUseFromBooking(b).status());
}

// ================================================================ lease

TEST(Lease, DailyRentCountsStartedDaysInsideThePeriod) {
  // Handed over 20 March 10:00, still out: 20..31 March = 12 days x 500.00.
  v1::Charge c = MustPrice(PriceLeasePeriod(Lease(), "2025-03", Shanghai()));
  EXPECT_EQ(c.fee_kind(), v1::LEASE_PERIOD);
  EXPECT_EQ(c.source_key(), "lease-period/2025-03");
  EXPECT_EQ(c.basis(), v1::CONTRACT_TERM);
  EXPECT_EQ(c.rate().unit(), v1::UNIT_DAY);
  EXPECT_EQ(c.rate().rate_name(), "lease contract, daily");
  EXPECT_EQ(c.quantity_milli(), 12000);
  EXPECT_EQ(c.amount().amount_minor(), 600000);
  EXPECT_EQ(FromProto(c.service_interval().start_time()), Sh(2025, 3, 20, 10));
  EXPECT_EQ(FromProto(c.service_interval().end_time()), Sh(2025, 4, 1));
  EXPECT_EQ(c.payer_organization(), kPayer);
  EXPECT_EQ(c.owner_organization(), kOwner);
  EXPECT_EQ(c.lease(), "leases/l-1");
  EXPECT_EQ(c.mode(), tv1::LEASE);
}

TEST(Lease, EarlyReturnStopsTheRent) {
  // Returned 10 April 15:00: 1..10 April = 10 days.
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 4, 10, 15));
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai())).amount().amount_minor(), 500000);
}

TEST(Lease, ReturnAtMidnightDoesNotChargeTheNextDay) {
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 4, 10));
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai())).quantity_milli(), 9000);
}

TEST(Lease, LateReturnIsChargedUntilTheReturn) {
  // Term ends 20 April; returned 25 April 09:00: 1..25 April = 25 days.
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 4, 25, 9));
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai())).amount().amount_minor(), 1250000);
}

TEST(Lease, MonthlyRentIsProratedByDaysOfThatMonth) {
  // 10000.00 a month; handed over 10 Feb 2025: 10..28 Feb = 19 of 28 days
  // = 6785.714 -> 6785.71; quantity 0.6786 months -> 679.
  bkv1::Lease l = Lease(bkv1::LeaseContract::MONTHLY, 1000000);
  *l.mutable_handover()->mutable_handover_time() = ToProto(Sh(2025, 2, 10, 9));
  v1::Charge c = MustPrice(PriceLeasePeriod(l, "2025-02", Shanghai()));
  EXPECT_EQ(c.rate().unit(), v1::UNIT_MONTH);
  EXPECT_EQ(c.amount().amount_minor(), 678571);
  EXPECT_EQ(c.quantity_milli(), 679);
}

TEST(Lease, MonthlyProrationRoundsHalfUp) {
  // 1000.01 a month, 16..30 April = 15 of 30 days = 500.005 -> 500.01.
  bkv1::Lease l = Lease(bkv1::LeaseContract::MONTHLY, 100001);
  *l.mutable_handover()->mutable_handover_time() = ToProto(Sh(2025, 4, 16));
  v1::Charge c = MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai()));
  EXPECT_EQ(c.amount().amount_minor(), 50001);
  EXPECT_EQ(c.quantity_milli(), 500);
}

TEST(Lease, AFullMonthCostsExactlyTheMonthlyRate) {
  bkv1::Lease l = Lease(bkv1::LeaseContract::MONTHLY, 1000000);
  v1::Charge c = MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai()));
  EXPECT_EQ(c.amount().amount_minor(), 1000000);
  EXPECT_EQ(c.quantity_milli(), 1000);
}

TEST(Lease, LeapFebruaryHas29Days) {
  bkv1::Lease l = Lease(bkv1::LeaseContract::MONTHLY, 2900000);
  *l.mutable_handover()->mutable_handover_time() = ToProto(Sh(2024, 1, 15));
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2024-02", Shanghai())).amount().amount_minor(), 2900000);
  Return(l, Sh(2024, 2, 1, 18));  // one day of February
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2024-02", Shanghai())).amount().amount_minor(), 100000);
}

TEST(Lease, PeriodOutsideTheLeaseIsRejected) {
  bkv1::Lease l = Lease();
  ExpectInvalid(PriceLeasePeriod(l, "2025-02", Shanghai()).status(), "NOT_IN_PERIOD");
  Return(l, Sh(2025, 4, 10));
  ExpectInvalid(PriceLeasePeriod(l, "2025-05", Shanghai()).status(), "NOT_IN_PERIOD");
  ExpectInvalid(PriceLeasePeriod(l, "2025-5", Shanghai()).status(), "INVALID_PERIOD");
}

TEST(Lease, TheZoneDecidesWhichMonthADayBelongsTo) {
  // Handed over 20:00 UTC on 31 March = 04:00 on 1 April in Shanghai.
  bkv1::Lease l = Lease();
  *l.mutable_handover()->mutable_handover_time() = ToProto(Utc(2025, 3, 31, 20));
  Return(l, Utc(2025, 4, 2, 20));
  ExpectInvalid(PriceLeasePeriod(l, "2025-03", Shanghai()).status(), "NOT_IN_PERIOD");
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2025-03", absl::UTCTimeZone())).quantity_milli(), 1000);
  // Shanghai: 1 April 04:00 .. 3 April 04:00 = 3 days.
  EXPECT_EQ(MustPrice(PriceLeasePeriod(l, "2025-04", Shanghai())).quantity_milli(), 3000);
}

TEST(Lease, NotHandedOverIsRejected) {
  bkv1::Lease l = Lease();
  l.clear_handover();
  absl::Status s = PriceLeasePeriod(l, "2025-03", Shanghai()).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "lease.handover.handover_time");
}

TEST(Lease, RateBasisAndRateAreRequired) {
  bkv1::Lease l = Lease();
  l.mutable_contract()->set_rate_basis(bkv1::LeaseContract::RATE_BASIS_UNSPECIFIED);
  ExpectInvalid(PriceLeasePeriod(l, "2025-03", Shanghai()).status());
  l = Lease(bkv1::LeaseContract::DAILY, 0);
  ExpectInvalid(PriceLeasePeriod(l, "2025-03", Shanghai()).status(), "INVALID_AMOUNT");
}

TEST(Lease, PeriodsFromHandoverToReturnOrNow) {
  bkv1::Lease l = Lease();
  auto p = LeasePeriods(l, Sh(2025, 5, 5), Shanghai());
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, ElementsAre("2025-03", "2025-04", "2025-05"));
  Return(l, Sh(2025, 4, 10));
  p = LeasePeriods(l, Sh(2025, 5, 5), Shanghai());
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, ElementsAre("2025-03", "2025-04"));
  p = LeasePeriods(l, Sh(2025, 3, 1), Shanghai());
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, IsEmpty());
}

TEST(Lease, ChargedRangeIsOpenWhileOut) {
  auto r = LeaseChargedRange(Lease());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, Sh(2025, 3, 20, 10));
  EXPECT_EQ(r->end, absl::InfiniteFuture());
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 3, 1));
  ExpectInvalid(LeaseChargedRange(l).status());
}

// ================================================================ deposits and damage

TEST(Deposit, DamageBelowTheDepositIsApplied) {
  auto s = SettleDeposit(Cny(100000), Cny(30000));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->applied.amount_minor(), 30000);
  EXPECT_EQ(s->released.amount_minor(), 70000);
  EXPECT_EQ(s->damage_outstanding.amount_minor(), 0);
}

TEST(Deposit, DamageAboveTheDepositLeavesAnOutstandingDamage) {
  auto s = SettleDeposit(Cny(100000), Cny(150000));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->applied.amount_minor(), 100000);
  EXPECT_EQ(s->released.amount_minor(), 0);
  EXPECT_EQ(s->damage_outstanding.amount_minor(), 50000);
}

TEST(Deposit, NoDamageReleasesEverything) {
  auto s = SettleDeposit(Cny(100000), Money());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->released.amount_minor(), 100000);
  EXPECT_EQ(s->applied.amount_minor(), 0);
  EXPECT_EQ(s->released.currency_code(), "CNY");
}

TEST(Deposit, CurrenciesMustAgree) {
  ExpectInvalid(SettleDeposit(Cny(100), MakeMoney("USD", 10)).status(), "CURRENCY_MISMATCH");
  ExpectInvalid(SettleDeposit(Cny(100), Cny(-10)).status(), "INVALID_AMOUNT");
}

TEST(Deposit, BookingSettlementMustAgree) {
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 4, 10), 30000);
  *l.mutable_settlement()->mutable_deposit_applied() = Cny(30000);
  *l.mutable_settlement()->mutable_deposit_released() = Cny(70000);
  EXPECT_TRUE(LeaseDepositSettlement(l).ok());
  *l.mutable_settlement()->mutable_deposit_released() = Cny(60000);
  ExpectInvalid(LeaseDepositSettlement(l).status(), "SETTLEMENT_MISMATCH");
}

TEST(Deposit, NotReturnedHasNoSettlement) {
  ExpectInvalid(LeaseDepositSettlement(Lease()).status());
}

TEST(Deposit, DepositChargeAtHandover) {
  auto c = PriceDeposit(Lease());
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->fee_kind(), v1::DEPOSIT);
  EXPECT_EQ((*c)->basis(), v1::ASSESSED);
  EXPECT_EQ((*c)->rate().unit(), v1::UNIT_FLAT);
  EXPECT_EQ((*c)->quantity_milli(), 1000);
  EXPECT_EQ((*c)->amount().amount_minor(), 100000);
  EXPECT_EQ((*c)->payer_organization(), kPayer);
}

// booking.proto LeaseContract.deposit: without a currency it is in the
// rate's. The hold (PriceDeposit) and the settlement at close
// (LeaseDepositSettlement) read it alike: both in CNY, the rate's.
TEST(Deposit, ADepositWithoutCurrencyIsHeldAndSettledInTheRatesCurrency) {
  bkv1::Lease l = Lease();
  l.mutable_contract()->mutable_deposit()->clear_currency_code();
  ASSERT_EQ(l.contract().rate().currency_code(), "CNY");
  auto c = PriceDeposit(l);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->amount().currency_code(), "CNY");
  EXPECT_EQ((*c)->amount().amount_minor(), 100000);
  Return(l, Sh(2025, 4, 10), 0);
  auto settled = LeaseDepositSettlement(l);
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->released.currency_code(), (*c)->amount().currency_code());
  EXPECT_EQ(settled->released.amount_minor(), (*c)->amount().amount_minor());
}

TEST(Deposit, ZeroDepositIsNoCharge) {
  bkv1::Lease l = Lease();
  l.mutable_contract()->clear_deposit();
  auto c = PriceDeposit(l);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

TEST(Deposit, DamageChargeOnlyForTheExcess) {
  bkv1::Lease l = Lease();
  Return(l, Sh(2025, 4, 10), 150000);
  auto c = PriceDamage(l);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->fee_kind(), v1::DAMAGE);
  EXPECT_EQ((*c)->source_key(), "damage");
  EXPECT_EQ((*c)->amount().amount_minor(), 50000);
  Return(l, Sh(2025, 4, 10), 30000);
  c = PriceDamage(l);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());
}

// ================================================================ technical service

TEST(TechnicalService, QuoteBecomesThreeCharges) {
  auto lines = PriceServiceOrder(Order(), v1::UNIT_SAMPLE, Shanghai());
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 3u);
  const v1::Charge& samples = (*lines)[0];
  EXPECT_EQ(samples.fee_kind(), v1::TECHNICAL_SERVICE);
  EXPECT_EQ(samples.source_key(), "sample-fee");
  EXPECT_EQ(samples.basis(), v1::COUNTED);
  EXPECT_EQ(samples.rate().unit(), v1::UNIT_SAMPLE);
  EXPECT_EQ(samples.rate().unit_price().amount_minor(), 15000);
  EXPECT_EQ(samples.quantity_milli(), 12000);
  EXPECT_EQ(samples.amount().amount_minor(), 180000);  // 12 x 150.00
  const v1::Charge& staff = (*lines)[1];
  EXPECT_EQ(staff.fee_kind(), v1::STAFF_TIME);
  EXPECT_EQ(staff.source_key(), "staff-time");
  EXPECT_EQ(staff.rate().unit(), v1::UNIT_FLAT);
  EXPECT_EQ(FromProto(staff.billed_duration()), absl::Hours(2));
  EXPECT_EQ(staff.quantity_milli(), 1000);
  EXPECT_EQ(staff.amount().amount_minor(), 40000);
  const v1::Charge& consumables = (*lines)[2];
  EXPECT_EQ(consumables.fee_kind(), v1::CONSUMABLES);
  EXPECT_EQ(consumables.amount().amount_minor(), 8500);
  for (const auto& c : *lines) {
    EXPECT_EQ(c.mode(), tv1::TECHNICAL_SERVICE);
    EXPECT_EQ(c.service_order(), "serviceOrders/o-1");
    EXPECT_EQ(c.payer_organization(), kPayer);
    EXPECT_EQ(c.owner_organization(), kOwner);
    EXPECT_EQ(c.rate().service_entry_id(), "sem-imaging");
    EXPECT_EQ(c.rate().member_tier(), "GENERAL");
  }
}

TEST(TechnicalService, RateNameDatesTheQuoteInTheZone) {
  auto lines = PriceServiceOrder(Order(), v1::UNIT_SAMPLE, Shanghai());
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ((*lines)[0].rate().rate_name(), "quote of 2025-03-02");
  lines = PriceServiceOrder(Order(), v1::UNIT_SAMPLE, absl::UTCTimeZone());
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ((*lines)[0].rate().rate_name(), "quote of 2025-03-01");
}

TEST(TechnicalService, PerTestUnit) {
  auto lines = PriceServiceOrder(Order(), v1::UNIT_TEST, Shanghai());
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ((*lines)[0].rate().unit(), v1::UNIT_TEST);
  ExpectInvalid(PriceServiceOrder(Order(), v1::UNIT_HOUR, Shanghai()).status());
}

TEST(TechnicalService, ZeroLinesAreLeftOut) {
  bkv1::ServiceOrder o = Order();
  o.mutable_quote()->clear_staff_time_fee();
  o.mutable_quote()->clear_consumables();
  *o.mutable_quote()->mutable_total() = Cny(180000);
  auto lines = PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai());
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 1u);
  EXPECT_EQ((*lines)[0].fee_kind(), v1::TECHNICAL_SERVICE);
}

TEST(TechnicalService, TotalMustMatchItsParts) {
  bkv1::ServiceOrder o = Order();
  *o.mutable_quote()->mutable_total() = Cny(228501);
  ExpectInvalid(PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai()).status(), "QUOTE_TOTAL_MISMATCH");
  o.mutable_quote()->clear_total();  // output-only: may be absent
  EXPECT_TRUE(PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai()).ok());
}

TEST(TechnicalService, OneCurrencyPerQuote) {
  bkv1::ServiceOrder o = Order();
  *o.mutable_quote()->mutable_consumables() = MakeMoney("USD", 8500);
  ExpectInvalid(PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai()).status(), "CURRENCY_MISMATCH");
}

TEST(TechnicalService, NeedsAQuoteAndSamples) {
  bkv1::ServiceOrder o = Order();
  o.clear_quote();
  ExpectInvalid(PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai()).status());
  o = Order();
  o.set_sample_count(0);
  ExpectInvalid(PriceServiceOrder(o, v1::UNIT_SAMPLE, Shanghai()).status());
}

TEST(TechnicalService, LateCancellationIsAShareOfTheQuote) {
  // 33.33 % of 2285.00 = 761.5905 -> 761.59.
  bkv1::ServiceOrder o = Order();
  o.set_late_cancellation(true);
  auto priced = PriceServiceOrderCancellation(o, 3333);
  ASSERT_TRUE(priced.ok() && priced->has_value()) << priced.status();
  const v1::Charge& c = **priced;
  EXPECT_EQ(c.fee_kind(), v1::LATE_CANCELLATION_FEE);
  EXPECT_EQ(c.base_amount().amount_minor(), 228500);
  EXPECT_EQ(c.fee_bps(), 3333);
  EXPECT_EQ(c.amount().amount_minor(), 76159);
}

// A quote of 12 minor units (12 samples at 0.01): 40 % of it is 4.8 -> 5
// minor units, charged; 4 % is 0.48 -> 0: no charge at all (billing.proto
// Charge.amount: a fee is never 0), as at 0 bps.
TEST(TechnicalService, ALateCancellationFeeThatRoundsToZeroIsNoCharge) {
  bkv1::ServiceOrder o = Order();
  o.set_late_cancellation(true);
  *o.mutable_quote()->mutable_per_sample_fee() = Cny(1);
  *o.mutable_quote()->mutable_staff_time_fee() = Cny(0);
  *o.mutable_quote()->mutable_consumables() = Cny(0);
  *o.mutable_quote()->mutable_total() = Cny(12);
  auto priced = PriceServiceOrderCancellation(o, 4000);
  ASSERT_TRUE(priced.ok() && priced->has_value()) << priced.status();
  EXPECT_EQ((*priced)->base_amount().amount_minor(), 12);
  EXPECT_EQ((*priced)->amount().amount_minor(), 5);
  for (int32_t bps : {400, 0}) {
    SCOPED_TRACE(bps);
    priced = PriceServiceOrderCancellation(o, bps);
    ASSERT_TRUE(priced.ok()) << priced.status();
    EXPECT_FALSE(priced->has_value());
  }
}

TEST(TechnicalService, OnlyLateCancellationsAreCharged) {
  ExpectInvalid(PriceServiceOrderCancellation(Order(), 3333).status());
}

// ================================================================ splits

std::vector<int64_t> Split(int64_t amount, const std::vector<int32_t>& bps) {
  auto parts = SplitLargestRemainder(amount, bps);
  EXPECT_TRUE(parts.ok()) << parts.status();
  return parts.ok() ? *parts : std::vector<int64_t>();
}

TEST(Splits, ThirdsOfAHundred) {
  // 33.34 / 33.33 / 33.33 -> floors 33 each, remainders .34 .33 .33.
  EXPECT_THAT(Split(100, {3334, 3333, 3333}), ElementsAre(34, 33, 33));
}

TEST(Splits, ThirdsOfAnOddAmountBreakTiesByAgreementOrder) {
  // 101: 33.6734 / 33.6633 / 33.6633; two units left: first, then the
  // second of the tied pair.
  EXPECT_THAT(Split(101, {3334, 3333, 3333}), ElementsAre(34, 34, 33));
  EXPECT_THAT(Split(101, {3333, 3333, 3334}), ElementsAre(34, 33, 34));
}

TEST(Splits, ZeroOneAndTwo) {
  EXPECT_THAT(Split(0, {3334, 3333, 3333}), ElementsAre(0, 0, 0));
  EXPECT_THAT(Split(1, {3334, 3333, 3333}), ElementsAre(1, 0, 0));
  EXPECT_THAT(Split(2, {3334, 3333, 3333}), ElementsAre(1, 1, 0));
  EXPECT_THAT(Split(1, {5000, 5000}), ElementsAre(1, 0));
  EXPECT_THAT(Split(3, {2500, 2500, 2500, 2500}), ElementsAre(1, 1, 1, 0));
}

TEST(Splits, LargestRemainderNotLargestShare) {
  // 2^63 - 1 over 3334/3333/3333: remainders 538, 4731, 4731 (of 10000):
  // the one unit left goes to the second share, not the largest.
  EXPECT_THAT(Split(kMax, {3334, 3333, 3333}),
              ElementsAre(int64_t{3075072237087382254}, int64_t{3074149899883696777},
                          int64_t{3074149899883696776}));
}

TEST(Splits, SevenEqualShares) {
  // EQUAL_SPLIT of 7: 1429 x 4, 1428 x 3. 1000 -> floors 142 x 7 = 994,
  // remainders .9 x 4, .8 x 3: six units to the four .9 and two .8.
  EXPECT_THAT(Split(1000, {1429, 1429, 1429, 1429, 1428, 1428, 1428}),
              ElementsAre(143, 143, 143, 143, 143, 143, 142));
}

TEST(Splits, TenThousandParticipants) {
  // 1 bp each; 12345 = 1.2345 each: 10000 floors, 2345 units left to the
  // first 2345 (all remainders tie).
  std::vector<int32_t> bps(10000, 1);
  std::vector<int64_t> parts = Split(12345, bps);
  ASSERT_EQ(parts.size(), 10000u);
  EXPECT_EQ(std::count(parts.begin(), parts.end(), 2), 2345);
  EXPECT_EQ(parts[2344], 2);
  EXPECT_EQ(parts[2345], 1);
  EXPECT_EQ(std::accumulate(parts.begin(), parts.end(), int64_t{0}), 12345);
}

TEST(Splits, ZeroShareNeverReceivesAUnit) {
  EXPECT_THAT(Split(3, {0, 5000, 5000}), ElementsAre(0, 2, 1));
  EXPECT_THAT(Split(1, {0, 10000}), ElementsAre(0, 1));
}

TEST(Splits, PartsAlwaysSumToTheWholeAndStayWithinOneUnit) {
  std::mt19937_64 rng(20250310);
  for (int round = 0; round < 2000; ++round) {
    const int n = 1 + static_cast<int>(rng() % 12);
    std::vector<int32_t> bps(static_cast<size_t>(n), 0);
    int32_t left = 10000;
    for (int i = 0; i < n - 1; ++i) {
      bps[static_cast<size_t>(i)] = static_cast<int32_t>(rng() % static_cast<uint64_t>(left + 1));
      left -= bps[static_cast<size_t>(i)];
    }
    bps[static_cast<size_t>(n - 1)] = left;
    const int64_t amount =
        round % 3 == 0 ? static_cast<int64_t>(rng() >> 1) : static_cast<int64_t>(rng() % 100000);
    std::vector<int64_t> parts = Split(amount, bps);
    ASSERT_EQ(parts.size(), bps.size());
    __int128 sum = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const __int128 exact_floor = static_cast<__int128>(amount) * bps[i] / 10000;
      ASSERT_GE(parts[i], exact_floor);
      ASSERT_LE(parts[i], exact_floor + 1);
      sum += parts[i];
    }
    ASSERT_TRUE(sum == amount) << "round " << round;
  }
}

TEST(Splits, SharesMustSumToExactly10000) {
  ExpectInvalid(SplitLargestRemainder(100, {5000, 4999}).status(), "SHARES_NOT_10000");
  ExpectInvalid(SplitLargestRemainder(100, {5000, 5001}).status(), "SHARES_NOT_10000");
  ExpectInvalid(SplitLargestRemainder(100, {}).status(), "SHARES_NOT_10000");
  ExpectInvalid(SplitLargestRemainder(100, {-1, 10001}).status(), "SHARES_NOT_10000");
  ExpectInvalid(SplitLargestRemainder(-100, {10000}).status());
}

TEST(Splits, ChargeSplitFlagsTheOwnersPartInKind) {
  auto splits = SplitCharge(
      Cny(100), {Share(kPayer, 3334), Share(kOwner, 3333), Share(kThird, 3333)}, kOwner);
  ASSERT_TRUE(splits.ok()) << splits.status();
  ASSERT_EQ(splits->size(), 3u);
  EXPECT_FALSE((*splits)[0].in_kind());
  EXPECT_TRUE((*splits)[1].in_kind());
  EXPECT_EQ((*splits)[0].amount().amount_minor(), 34);
  EXPECT_EQ((*splits)[1].amount().amount_minor(), 33);
  EXPECT_EQ((*splits)[1].amount().currency_code(), "CNY");
  EXPECT_EQ((*splits)[2].share_bps(), 3333);
}

TEST(Splits, ChargeSplitRejectsDuplicatesAndBadNames) {
  absl::Status s =
      SplitCharge(Cny(100), {Share(kPayer, 5000), Share(kPayer, 5000)}, kOwner).status();
  ExpectInvalid(s);
  EXPECT_EQ(FieldOf(s), "cost_shares[1].organization");
  ExpectInvalid(SplitCharge(Cny(100), {Share("payer", 10000)}, kOwner).status());
}

// ================================================================ subsidies

TEST(Subsidies, PaysFloorOfItsPercentage) {
  // 50 % of 240.01 = 120.005 -> 120.00.
  auto lines = MustApply(UsageFacts(), {Sme()}, {SmePool()});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].subsidy_pool(), kPool);
  EXPECT_EQ(lines[0].beneficiary_organization(), kPayer);
  EXPECT_EQ(lines[0].eligible_amount().amount_minor(), 24001);
  EXPECT_EQ(lines[0].percentage_bps(), 5000);
  EXPECT_EQ(lines[0].amount().amount_minor(), 12000);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::NOT_LIMITED);
  EXPECT_EQ(FromProto(lines[0].cap_period().start_time()), Sh(2025, 3, 1));
  EXPECT_EQ(FromProto(lines[0].cap_period().end_time()), Sh(2025, 4, 1));
}

TEST(Subsidies, OrganizationCapLimits) {
  PoolFunds pool = SmePool();
  pool.cap_used[kPayer] = 95000;  // 50.00 of the 1000.00 cap left
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 5000);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::ORGANIZATION_CAP);
}

TEST(Subsidies, CapUsedByOthersDoesNotCount) {
  PoolFunds pool = SmePool();
  pool.cap_used[kThird] = 100000;
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 12000);
}

TEST(Subsidies, PoolBalanceLimits) {
  PoolFunds pool = SmePool();
  pool.balance = 3000;
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 3000);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::POOL_BALANCE);
}

TEST(Subsidies, CapAndBalanceTiedReportsTheCap) {
  PoolFunds pool = SmePool();
  pool.balance = 5000;
  pool.cap_used[kPayer] = 95000;
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 5000);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::ORGANIZATION_CAP);
}

TEST(Subsidies, ExactlyExhaustingTheCapIsNotLimited) {
  PoolFunds pool = SmePool();
  pool.cap_used[kPayer] = 88000;  // 120.00 left, exactly the 50 %
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::NOT_LIMITED);
}

TEST(Subsidies, ExhaustedPoolOrCapPaysNoLine) {
  PoolFunds empty = SmePool();
  empty.balance = 0;
  EXPECT_THAT(MustApply(UsageFacts(), {Sme()}, {empty}), IsEmpty());
  PoolFunds capped = SmePool();
  capped.cap_used[kPayer] = 100000;
  EXPECT_THAT(MustApply(UsageFacts(), {Sme()}, {capped}), IsEmpty());
  PoolFunds overused = SmePool();
  overused.cap_used[kPayer] = 150000;
  EXPECT_THAT(MustApply(UsageFacts(), {Sme()}, {overused}), IsEmpty());
}

// A negative balance (a top-up reversed after it paid subsidies) is an
// exhausted pool, not an error: the charge is posted without its line, and
// the next pool still pays.
TEST(Subsidies, NegativeBalancePaysNoLineAndBlocksNothing) {
  PoolFunds overdrawn = SmePool("subsidyPools/a-overdrawn", 5000, 1);
  overdrawn.balance = -30000;
  PoolFunds next = SmePool("subsidyPools/b-next", 1000, 2);
  auto lines = MustApply(UsageFacts(), {Sme()}, {overdrawn, next});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].subsidy_pool(), "subsidyPools/b-next");
  EXPECT_EQ(lines[0].amount().amount_minor(), 2400);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::NOT_LIMITED);
}

TEST(Subsidies, UncappedPoolHasNoCapPeriod) {
  PoolFunds pool = SmePool();
  pool.pool.clear_cap_per_organization();
  pool.cap_used[kPayer] = 999999999;
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 12000);
  EXPECT_FALSE(lines[0].has_cap_period());
}

TEST(Subsidies, PoolsApplyByPriorityThenName) {
  PoolFunds late = SmePool("subsidyPools/a-late", 1000, 2);
  PoolFunds early = SmePool("subsidyPools/z-early", 2000, 1);
  PoolFunds tie = SmePool("subsidyPools/b-tie", 500, 2);
  auto lines = MustApply(UsageFacts(), {Sme(kPayer, 10000)}, {late, tie, early});
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].subsidy_pool(), "subsidyPools/z-early");
  EXPECT_EQ(lines[0].amount().amount_minor(), 2000);
  EXPECT_EQ(lines[1].subsidy_pool(), "subsidyPools/a-late");
  EXPECT_EQ(lines[1].amount().amount_minor(), 1000);
  EXPECT_EQ(lines[2].subsidy_pool(), "subsidyPools/b-tie");
  EXPECT_EQ(lines[2].amount().amount_minor(), 500);
}

TEST(Subsidies, LaterPoolsAreLimitedByWhatEarlierPoolsLeft) {
  // 80 % then 50 % of 100.00: 80.00, then only 20.00 is left.
  PoolFunds first = SmePool("subsidyPools/first", 8000, 1);
  PoolFunds second = SmePool("subsidyPools/second", 5000, 2);
  auto lines = MustApply(UsageFacts(), {Sme(kPayer, 10000)}, {second, first});
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 8000);
  EXPECT_EQ(lines[1].amount().amount_minor(), 2000);
  EXPECT_EQ(lines[1].limited_by(), v1::SubsidyLine::LIMIT_UNSPECIFIED);
  // Nothing left for a third pool.
  PoolFunds third = SmePool("subsidyPools/third", 1000, 3);
  lines = MustApply(UsageFacts(), {Sme(kPayer, 10000)}, {second, first, third});
  EXPECT_EQ(lines.size(), 2u);
}

TEST(Subsidies, BalanceIsSharedByTheBeneficiariesOfOneCharge) {
  // Two participants of 100.00 each, 50 %, 70.00 in the pool.
  PoolFunds pool = SmePool();
  pool.balance = 7000;
  auto lines = MustApply(UsageFacts(), {Sme(kPayer, 10000), Sme(kThird, 10000)}, {pool});
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].beneficiary_organization(), kPayer);
  EXPECT_EQ(lines[0].amount().amount_minor(), 5000);
  EXPECT_EQ(lines[0].limited_by(), v1::SubsidyLine::NOT_LIMITED);
  EXPECT_EQ(lines[1].beneficiary_organization(), kThird);
  EXPECT_EQ(lines[1].amount().amount_minor(), 2000);
  EXPECT_EQ(lines[1].limited_by(), v1::SubsidyLine::POOL_BALANCE);
}

TEST(Subsidies, CapsAreCountedPerBeneficiary) {
  PoolFunds pool = SmePool();
  pool.cap_used[kThird] = 99000;
  auto lines = MustApply(UsageFacts(), {Sme(kPayer, 10000), Sme(kThird, 10000)}, {pool});
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].amount().amount_minor(), 5000);
  EXPECT_EQ(lines[1].amount().amount_minor(), 1000);
  EXPECT_EQ(lines[1].limited_by(), v1::SubsidyLine::ORGANIZATION_CAP);
}

TEST(Subsidies, FloorToZeroPaysNoLine) {
  // 33.33 % of 0.02 = 0.0067 -> 0.
  PoolFunds pool = SmePool("subsidyPools/third", 3333, 1);
  EXPECT_THAT(MustApply(UsageFacts(), {Sme(kPayer, 2)}, {pool}), IsEmpty());
}

TEST(Subsidies, QuarterlyCapPeriodOnTheLine) {
  PoolFunds pool = SmePool();
  pool.pool.set_cap_period_kind(v1::QUARTERLY);
  auto lines = MustApply(UsageFacts(), {Sme()}, {pool});
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(FromProto(lines[0].cap_period().start_time()), Sh(2025, 1, 1));
  EXPECT_EQ(FromProto(lines[0].cap_period().end_time()), Sh(2025, 4, 1));
}

TEST(Subsidies, EligibilityBySizeClass) {
  const v1::SubsidyPool pool = SmePool().pool;
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), {kPayer, v1::LARGE, 100}),
            "size class LARGE not covered");
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), {kPayer, v1::SIZE_CLASS_UNSPECIFIED, 100}),
            "organisations without a size class are not covered");
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()), "");
  EXPECT_THAT(MustApply(UsageFacts(), {{kPayer, v1::LARGE, 24001}}, {SmePool()}), IsEmpty());
}

TEST(Subsidies, EligibilityByModeCategoryAndFeeKind) {
  v1::SubsidyPool pool = SmePool().pool;
  pool.mutable_eligibility()->add_modes(tv1::LEASE);
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()), "mode ON_SITE not covered");
  pool.mutable_eligibility()->add_modes(tv1::ON_SITE);
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()), "");
  pool.mutable_eligibility()->add_instrument_categories("lithography");
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()),
            "instrument category 'electron-microscopy' not covered");
  pool.mutable_eligibility()->add_instrument_categories("electron-microscopy");
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()), "");
  pool.mutable_eligibility()->add_fee_kinds(v1::LEASE_PERIOD);
  EXPECT_EQ(IneligibilityReason(pool, UsageFacts(), Sme()), "fee kind USAGE not covered");
}

TEST(Subsidies, DepositDamageAndOwnerAreNeverEligible) {
  v1::SubsidyPool pool = SmePool().pool;
  pool.clear_eligibility();
  SubsidyCharge c = UsageFacts();
  c.fee_kind = v1::DEPOSIT;
  EXPECT_NE(IneligibilityReason(pool, c, Sme()), "");
  c.fee_kind = v1::DAMAGE;
  EXPECT_NE(IneligibilityReason(pool, c, Sme()), "");
  c.fee_kind = v1::USAGE;
  EXPECT_EQ(IneligibilityReason(pool, c, Sme(kOwner)), "the owner's own use is never subsidised");
  EXPECT_EQ(IneligibilityReason(pool, c, Sme()), "");
  EXPECT_FALSE(FeeKindSubsidisable(v1::DEPOSIT));
  EXPECT_FALSE(FeeKindSubsidisable(v1::DAMAGE));
  EXPECT_TRUE(FeeKindSubsidisable(v1::LEASE_PERIOD));
}

TEST(Subsidies, CurrencyAndValidity) {
  v1::SubsidyPool pool = SmePool().pool;
  SubsidyCharge c = UsageFacts();
  c.currency_code = "USD";
  EXPECT_NE(IneligibilityReason(pool, c, Sme()), "");
  c = UsageFacts();
  *pool.mutable_validity() = Span(Sh(2025, 4, 1), Sh(2025, 12, 31));
  EXPECT_EQ(IneligibilityReason(pool, c, Sme()), "before the pool's validity");
  *pool.mutable_validity() = Span(Sh(2025, 1, 1), Sh(2025, 3, 10, 15));
  EXPECT_EQ(IneligibilityReason(pool, c, Sme()), "after the pool's validity");
  pool.mutable_validity()->clear_end_time();
  EXPECT_EQ(IneligibilityReason(pool, c, Sme()), "");
}

TEST(Subsidies, ProfileOnlyReason) {
  const v1::SubsidyPool pool = SmePool().pool;
  EXPECT_EQ(ProfileIneligibilityReason(pool, v1::SME), "");
  EXPECT_EQ(ProfileIneligibilityReason(pool, v1::START_UP), "size class START_UP not covered");
  v1::SubsidyPool open = pool;
  open.clear_eligibility();
  EXPECT_EQ(ProfileIneligibilityReason(open, v1::SIZE_CLASS_UNSPECIFIED), "");
}

TEST(Subsidies, AllowanceRemaining) {
  const v1::SubsidyPool pool = SmePool().pool;  // cap 1000.00
  EXPECT_EQ(AllowanceRemaining(pool, 30000, 50000), 50000);
  EXPECT_EQ(AllowanceRemaining(pool, 30000, 80000), 70000);
  EXPECT_EQ(AllowanceRemaining(pool, 120000, 80000), 0);
  v1::SubsidyPool uncapped = pool;
  uncapped.clear_cap_per_organization();
  EXPECT_EQ(AllowanceRemaining(uncapped, 999999, 80000), 80000);
  EXPECT_EQ(AllowanceRemaining(uncapped, 0, -5), 0);
}

TEST(Subsidies, BeneficiariesOfACharge) {
  auto c = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED), Hourly(),
                        Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(c.ok() && c->has_value());
  std::vector<SubsidyBeneficiary> b = BeneficiariesOf(**c);
  ASSERT_EQ(b.size(), 2u);  // the owner's in-kind part is not relieved
  EXPECT_EQ(b[0].organization, kPayer);
  EXPECT_EQ(b[0].part, 7999);
  EXPECT_EQ(b[1].organization, kThird);

  v1::Charge plain = MustPrice(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use(std::nullopt)));
  plain.set_owner_organization(kOwner);
  plain.set_payer_organization(kPayer);
  b = BeneficiariesOf(plain);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].part, 24000);
  plain.set_payer_organization(kOwner);
  EXPECT_THAT(BeneficiariesOf(plain), IsEmpty());
  plain.set_payer_organization(kPayer);
  plain.set_fee_kind(v1::DAMAGE);
  EXPECT_THAT(BeneficiariesOf(plain), IsEmpty());
}

TEST(Subsidies, InvalidInputsAreRejected) {
  PoolFunds dup = SmePool();
  ExpectInvalid(ApplySubsidies(UsageFacts(), {Sme()}, {dup, dup}, Shanghai()).status());
  PoolFunds bad = SmePool("pools/x");
  ExpectInvalid(ApplySubsidies(UsageFacts(), {Sme()}, {bad}, Shanghai()).status());
  ExpectInvalid(ApplySubsidies(UsageFacts(), {Sme(kPayer, -1)}, {SmePool()}, Shanghai()).status());
  ExpectInvalid(ApplySubsidies(UsageFacts(), {Sme(), Sme()}, {SmePool()}, Shanghai()).status());
}

TEST(Subsidies, PoolValidation) {
  v1::SubsidyPool pool = SmePool().pool;
  EXPECT_TRUE(ValidateSubsidyPool(pool).ok());
  v1::SubsidyPool p = pool;
  p.set_percentage_bps(0);
  EXPECT_EQ(FieldOf(ValidateSubsidyPool(p)), "subsidy_pool.percentage_bps");
  p = pool;
  p.set_cap_period_kind(v1::PERIOD_KIND_UNSPECIFIED);
  EXPECT_EQ(FieldOf(ValidateSubsidyPool(p)), "subsidy_pool.cap_period_kind");
  p = pool;
  *p.mutable_validity() = Span(Sh(2025, 2, 1), Sh(2025, 1, 1));
  EXPECT_EQ(FieldOf(ValidateSubsidyPool(p)), "subsidy_pool.validity");
  p = pool;
  *p.mutable_cap_per_organization() = Cny(-1);
  ExpectInvalid(ValidateSubsidyPool(p), "INVALID_FIELD");  // CreateSubsidyPool's list: "negative cap"
  p = pool;
  p.set_display_name("");
  ExpectInvalid(ValidateSubsidyPool(p));
}

TEST(ChargeTotals, JointResearchWithSubsidy) {
  // 240.00 = owner in kind 80.02 + 79.99 + 79.99; a pool pays 30.00:
  // payable 240.00 - 80.02 - 30.00 = 129.98; income 240.00 - 80.02.
  auto priced = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED), Hourly(),
                             Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(priced.ok() && priced->has_value());
  v1::Charge c = **priced;
  v1::SubsidyLine* line = c.add_subsidy_lines();
  *line->mutable_amount() = Cny(3000);
  ASSERT_TRUE(FillChargeTotals(c).ok());
  EXPECT_EQ(c.subsidy_total().amount_minor(), 3000);
  EXPECT_EQ(c.payable_amount().amount_minor(), 12998);
  EXPECT_EQ(c.service_income().amount_minor(), 15998);
}

TEST(ChargeTotals, InternalUseAndCompensationEarnNoIncome) {
  v1::Charge c = MustPrice(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use(std::nullopt)));
  c.set_owner_organization(kOwner);
  c.set_payer_organization(kOwner);
  ASSERT_TRUE(FillChargeTotals(c).ok());
  EXPECT_EQ(c.payable_amount().amount_minor(), 0);
  EXPECT_EQ(c.service_income().amount_minor(), 0);
  c.set_payer_organization(kPayer);
  c.set_fee_kind(v1::DAMAGE);
  ASSERT_TRUE(FillChargeTotals(c).ok());
  EXPECT_EQ(c.payable_amount().amount_minor(), 24000);
  EXPECT_EQ(c.service_income().amount_minor(), 0);
  c.set_fee_kind(v1::USAGE);
  ASSERT_TRUE(FillChargeTotals(c).ok());
  EXPECT_EQ(c.service_income().amount_minor(), 24000);
}

TEST(ChargeTotals, SubsidiesBeyondThePayersPartAreRejected) {
  v1::Charge c = MustPrice(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use(std::nullopt)));
  c.set_owner_organization(kOwner);
  c.set_payer_organization(kPayer);
  *c.add_subsidy_lines()->mutable_amount() = Cny(24001);
  ExpectInvalid(FillChargeTotals(c));
}

// ================================================================ ledger: names

TEST(Accounts, KebabCaseKinds) {
  EXPECT_EQ(AccountKindSlug(v1::RECEIVABLE), "receivable");
  EXPECT_EQ(AccountKindSlug(v1::DEPOSIT_HELD), "deposit-held");
  EXPECT_EQ(AccountKindSlug(v1::IN_KIND_CONTRIBUTION), "in-kind-contribution");
  EXPECT_EQ(AccountKindSlug(v1::POOL_FUNDS), "pool-funds");
  EXPECT_EQ(AccountKindSlug(v1::ACCOUNT_KIND_UNSPECIFIED), "");
  EXPECT_EQ(AccountName(kOwner, v1::SUBSIDY_RECEIVED),
            "organizations/owner/accounts/subsidy-received");
}

TEST(Accounts, EverySlugRoundTrips) {
  for (v1::AccountKind k :
       {v1::RECEIVABLE, v1::PAYABLE, v1::INCOME, v1::EXPENSE, v1::SUBSIDY_RECEIVED,
        v1::DEPOSIT_HELD, v1::DEPOSIT_LODGED, v1::IN_KIND_CONTRIBUTION, v1::INTERNAL_USE,
        v1::COMPENSATION, v1::CASH, v1::POOL_FUNDS, v1::POOL_PAYABLE, v1::POOL_CASH}) {
    auto back = AccountKindFromSlug(AccountKindSlug(k));
    ASSERT_TRUE(back.ok()) << AccountKindSlug(k);
    EXPECT_EQ(*back, k);
  }
  ExpectInvalid(AccountKindFromSlug("deposit_held").status(), "INVALID_NAME");
}

TEST(Accounts, ParseChecksOwnerTypeAndKind) {
  auto ref = ParseAccountName("subsidyPools/sme-voucher/accounts/pool-payable");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->owner, kPool);
  EXPECT_EQ(ref->kind, v1::POOL_PAYABLE);
  ref = ParseAccountName("organizations/owner/accounts/in-kind-contribution");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->kind, v1::IN_KIND_CONTRIBUTION);
  for (const char* bad :
       {"organizations/owner/accounts/pool-funds", "subsidyPools/sme-voucher/accounts/receivable",
        "organizations/owner/accounts/bank", "organizations/Owner/accounts/cash",
        "users/u/accounts/cash", "organizations/owner/cash",
        "organizations/owner/accounts/cash/x"}) {
    ExpectInvalid(ParseAccountName(bad).status(), "INVALID_NAME");
  }
}

TEST(Accounts, NormalSidesAndCounterparties) {
  EXPECT_EQ(NormalSideOf(v1::RECEIVABLE), v1::DEBIT);
  EXPECT_EQ(NormalSideOf(v1::EXPENSE), v1::DEBIT);
  EXPECT_EQ(NormalSideOf(v1::POOL_CASH), v1::DEBIT);
  EXPECT_EQ(NormalSideOf(v1::PAYABLE), v1::CREDIT);
  EXPECT_EQ(NormalSideOf(v1::POOL_FUNDS), v1::CREDIT);
  EXPECT_EQ(NormalSideOf(v1::COMPENSATION), v1::CREDIT);
  EXPECT_TRUE(RequiresCounterparty(v1::POOL_PAYABLE));
  EXPECT_TRUE(RequiresCounterparty(v1::CASH));
  EXPECT_FALSE(RequiresCounterparty(v1::INCOME));
  EXPECT_FALSE(RequiresCounterparty(v1::POOL_CASH));
}

// ================================================================ ledger: postings

TEST(Postings, ChargeBetweenTwoOrganisations) {
  auto e = Must(ChargeEntries(kPayer, kOwner, Cny(24000), v1::USAGE));
  EXPECT_THAT(Rows(e), ElementsAre(Row{A(kPayer, v1::EXPENSE), "", 24000, 0},
                                   Row{A(kPayer, v1::PAYABLE), kOwner, 0, 24000},
                                   Row{A(kOwner, v1::RECEIVABLE), kPayer, 24000, 0},
                                   Row{A(kOwner, v1::INCOME), kPayer, 0, 24000}));
  EXPECT_TRUE(CheckBalanced(e).ok());
}

TEST(Postings, DamageIsCompensationNotIncome) {
  auto e = Must(ChargeEntries(kPayer, kOwner, Cny(50000), v1::DAMAGE));
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[3].account(), A(kOwner, v1::COMPENSATION));
  EXPECT_TRUE(CheckBalanced(e).ok());
}

TEST(Postings, ChargeEntriesRejectMisuse) {
  ExpectInvalid(ChargeEntries(kOwner, kOwner, Cny(1), v1::USAGE).status());
  ExpectInvalid(ChargeEntries(kPayer, kOwner, Cny(1), v1::DEPOSIT).status());
  ExpectInvalid(ChargeEntries(kPayer, kOwner, Cny(0), v1::USAGE).status(), "INVALID_AMOUNT");
  ExpectInvalid(ChargeEntries("payer", kOwner, Cny(1), v1::USAGE).status());
}

TEST(Postings, InternalUseAndInKind) {
  EXPECT_THAT(Rows(Must(InternalUseEntries(kOwner, Cny(500)))),
              ElementsAre(Row{A(kOwner, v1::EXPENSE), "", 500, 0},
                          Row{A(kOwner, v1::INTERNAL_USE), "", 0, 500}));
  EXPECT_THAT(Rows(Must(InKindEntries(kOwner, Cny(8002)))),
              ElementsAre(Row{A(kOwner, v1::EXPENSE), "", 8002, 0},
                          Row{A(kOwner, v1::IN_KIND_CONTRIBUTION), "", 0, 8002}));
}

TEST(Postings, SubsidyMovesTheReceivableToThePool) {
  auto e = Must(SubsidyEntries(kPool, kPayer, kOwner, Cny(12000)));
  EXPECT_THAT(Rows(e), ElementsAre(Row{A(kPool, v1::POOL_FUNDS), "", 12000, 0},
                                   Row{A(kPool, v1::POOL_PAYABLE), kOwner, 0, 12000},
                                   Row{A(kPayer, v1::PAYABLE), kOwner, 12000, 0},
                                   Row{A(kPayer, v1::SUBSIDY_RECEIVED), kPool, 0, 12000},
                                   Row{A(kOwner, v1::RECEIVABLE), kPool, 12000, 0},
                                   Row{A(kOwner, v1::RECEIVABLE), kPayer, 0, 12000}));
  EXPECT_TRUE(CheckBalanced(e).ok());
  ExpectInvalid(SubsidyEntries(kPool, kOwner, kOwner, Cny(1)).status());
  ExpectInvalid(SubsidyEntries(kPayer, kPayer, kOwner, Cny(1)).status());
}

TEST(Postings, DepositHoldReleaseAndApplication) {
  EXPECT_THAT(Rows(Must(DepositHoldEntries(kPayer, kOwner, Cny(100000)))),
              ElementsAre(Row{A(kPayer, v1::DEPOSIT_LODGED), "", 100000, 0},
                          Row{A(kPayer, v1::PAYABLE), kOwner, 0, 100000},
                          Row{A(kOwner, v1::RECEIVABLE), kPayer, 100000, 0},
                          Row{A(kOwner, v1::DEPOSIT_HELD), "", 0, 100000}));
  EXPECT_THAT(Rows(Must(DepositReleaseEntries(kOwner, kPayer, Cny(70000)))),
              ElementsAre(Row{A(kOwner, v1::DEPOSIT_HELD), "", 70000, 0},
                          Row{A(kOwner, v1::PAYABLE), kPayer, 0, 70000},
                          Row{A(kPayer, v1::RECEIVABLE), kOwner, 70000, 0},
                          Row{A(kPayer, v1::DEPOSIT_LODGED), "", 0, 70000}));
  EXPECT_THAT(Rows(Must(DepositApplicationEntries(kOwner, kPayer, Cny(30000)))),
              ElementsAre(Row{A(kOwner, v1::DEPOSIT_HELD), "", 30000, 0},
                          Row{A(kOwner, v1::COMPENSATION), kPayer, 0, 30000},
                          Row{A(kPayer, v1::EXPENSE), "", 30000, 0},
                          Row{A(kPayer, v1::DEPOSIT_LODGED), "", 0, 30000}));
}

TEST(Postings, PaymentsAndPoolMoney) {
  EXPECT_THAT(Rows(Must(PaymentEntries(kPayer, kOwner, Cny(12000)))),
              ElementsAre(Row{A(kPayer, v1::PAYABLE), kOwner, 12000, 0},
                          Row{A(kPayer, v1::CASH), kOwner, 0, 12000},
                          Row{A(kOwner, v1::CASH), kPayer, 12000, 0},
                          Row{A(kOwner, v1::RECEIVABLE), kPayer, 0, 12000}));
  EXPECT_THAT(Rows(Must(PoolPaymentEntries(kPool, kOwner, Cny(12000)))),
              ElementsAre(Row{A(kPool, v1::POOL_PAYABLE), kOwner, 12000, 0},
                          Row{A(kPool, v1::POOL_CASH), "", 0, 12000},
                          Row{A(kOwner, v1::CASH), kPool, 12000, 0},
                          Row{A(kOwner, v1::RECEIVABLE), kPool, 0, 12000}));
  EXPECT_THAT(Rows(Must(PoolTopUpEntries(kPool, Cny(1000000)))),
              ElementsAre(Row{A(kPool, v1::POOL_CASH), "", 1000000, 0},
                          Row{A(kPool, v1::POOL_FUNDS), "", 0, 1000000}));
  ExpectInvalid(PaymentEntries(kPayer, kPayer, Cny(1)).status());
  ExpectInvalid(PoolTopUpEntries(kOwner, Cny(1)).status());
}

TEST(Postings, JointResearchChargePosting) {
  auto priced = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED), Hourly(),
                             Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(priced.ok() && priced->has_value());
  auto e = Must(ChargePostingEntries(**priced));
  ASSERT_EQ(e.size(), 10u);  // in kind (2) + two participants (4 each)
  EXPECT_TRUE(CheckBalanced(e).ok());
  Ledger l;
  l.Post(e);
  EXPECT_EQ(l.Total(A(kOwner, v1::IN_KIND_CONTRIBUTION)), -8002);
  EXPECT_EQ(l.Net(A(kOwner, v1::INCOME), kPayer), -7999);
  EXPECT_EQ(l.Net(A(kOwner, v1::INCOME), kThird), -7999);
  EXPECT_EQ(l.Net(A(kOwner, v1::RECEIVABLE), kThird), 7999);
  EXPECT_EQ(l.Net(A(kThird, v1::PAYABLE), kOwner), -7999);
  EXPECT_EQ(l.Total(A(kOwner, v1::EXPENSE)), 8002);
}

TEST(Postings, ChargePostingChoosesThePattern) {
  v1::Charge c = MustPrice(PriceUsage(Hourly(), Policy(v1::RESERVED_TIME), Use(std::nullopt)));
  c.set_owner_organization(kOwner);
  c.set_payer_organization(kOwner);
  auto e = Must(ChargePostingEntries(c));
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[1].account(), A(kOwner, v1::INTERNAL_USE));
  c.set_payer_organization(kPayer);
  EXPECT_EQ(Must(ChargePostingEntries(c))[3].account(), A(kOwner, v1::INCOME));
  c.set_fee_kind(v1::DEPOSIT);
  EXPECT_EQ(Must(ChargePostingEntries(c))[0].account(), A(kPayer, v1::DEPOSIT_LODGED));
  c.set_fee_kind(v1::USAGE);
  *c.mutable_amount() = Cny(0);
  EXPECT_THAT(Must(ChargePostingEntries(c)), IsEmpty());
}

TEST(Postings, ChargePostingChecksSplits) {
  auto priced = PriceBooking(Booking(tv1::JOINT_RESEARCH, bkv1::Booking::COMPLETED), Hourly(),
                             Policy(v1::RESERVED_TIME));
  ASSERT_TRUE(priced.ok() && priced->has_value());
  v1::Charge c = **priced;
  c.mutable_splits(1)->set_in_kind(true);
  ExpectInvalid(ChargePostingEntries(c).status());
  c = **priced;
  c.mutable_splits(2)->mutable_amount()->set_amount_minor(8000);
  ExpectInvalid(ChargePostingEntries(c).status());
}

TEST(Postings, ReverseMirrorsEveryEntry) {
  auto e = Must(SubsidyEntries(kPool, kPayer, kOwner, Cny(12000)));
  std::vector<v1::Entry> r = ReverseEntries(e);
  ASSERT_EQ(r.size(), e.size());
  EXPECT_TRUE(CheckBalanced(r).ok());
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(r[i].has_debit(), e[i].has_credit());
    EXPECT_EQ(r[i].account(), e[i].account());
    EXPECT_EQ(r[i].counterparty(), e[i].counterparty());
  }
  Ledger l;
  l.Post(e);
  l.Post(r);
  EXPECT_EQ(l.Total(A(kPool, v1::POOL_FUNDS)), 0);
  EXPECT_EQ(l.Net(A(kOwner, v1::RECEIVABLE), kPool), 0);
  EXPECT_THAT(Rows(ReverseEntries(r)), ::testing::ContainerEq(Rows(e)));
}

// ================================================================ ledger: validation

std::vector<v1::Entry> TwoEntries(int64_t debit, int64_t credit) {
  return {DebitEntry(A(kOwner, v1::EXPENSE), "", Cny(debit)),
          CreditEntry(A(kOwner, v1::INTERNAL_USE), "", Cny(credit))};
}

TEST(Balance, DebitsMustEqualCredits) {
  EXPECT_TRUE(CheckBalanced(TwoEntries(100, 100)).ok());
  ExpectInvalid(CheckBalanced(TwoEntries(100, 99)), "UNBALANCED_POSTING");
}

TEST(Balance, AtLeastTwoEntries) {
  ExpectInvalid(CheckBalanced({}), "UNBALANCED_POSTING");
  ExpectInvalid(CheckBalanced({DebitEntry(A(kOwner, v1::EXPENSE), "", Cny(1))}),
                "UNBALANCED_POSTING");
}

TEST(Balance, AmountsMustBePositiveAndOneSided) {
  ExpectInvalid(CheckBalanced(TwoEntries(0, 0)), "INVALID_AMOUNT");
  ExpectInvalid(CheckBalanced(TwoEntries(-5, -5)), "INVALID_AMOUNT");
  std::vector<v1::Entry> both = TwoEntries(100, 100);
  *both[0].mutable_credit() = Cny(100);
  ExpectInvalid(CheckBalanced(both), "INVALID_AMOUNT");
  std::vector<v1::Entry> neither = TwoEntries(100, 100);
  neither[0].clear_debit();
  absl::Status s = CheckBalanced(neither);
  ExpectInvalid(s, "INVALID_AMOUNT");
  EXPECT_EQ(FieldOf(s), "entries[0]");
}

TEST(Balance, OneCurrency) {
  std::vector<v1::Entry> e = TwoEntries(100, 100);
  *e[1].mutable_credit() = MakeMoney("USD", 100);
  ExpectInvalid(CheckBalanced(e), "CURRENCY_MISMATCH");
  BalanceCheckOptions usd;
  usd.currency_code = "USD";
  ExpectInvalid(CheckBalanced(TwoEntries(100, 100), usd), "CURRENCY_MISMATCH");
}

TEST(Balance, AccountsAndCounterparties) {
  std::vector<v1::Entry> e = Must(PaymentEntries(kPayer, kOwner, Cny(100)));
  std::vector<v1::Entry> missing = e;
  missing[0].clear_counterparty();
  absl::Status s = CheckBalanced(missing);
  ExpectInvalid(s, "INVALID_ACCOUNT");
  EXPECT_EQ(FieldOf(s), "entries[0].counterparty");
  std::vector<v1::Entry> self = e;
  self[0].set_counterparty(kPayer);
  ExpectInvalid(CheckBalanced(self), "INVALID_ACCOUNT");
  std::vector<v1::Entry> malformed = e;
  malformed[1].set_account("organizations/payer/accounts/bank");
  ExpectInvalid(CheckBalanced(malformed), "INVALID_ACCOUNT");
  std::vector<v1::Entry> bad_cp = e;
  bad_cp[2].set_counterparty("users/u");
  ExpectInvalid(CheckBalanced(bad_cp), "INVALID_ACCOUNT");
}

TEST(Balance, EachOrganisationBalancesOnItsOwn) {
  // Balanced overall, but the payer's expense is the owner's income.
  std::vector<v1::Entry> e = {DebitEntry(A(kPayer, v1::EXPENSE), "", Cny(100)),
                              CreditEntry(A(kOwner, v1::INCOME), kPayer, Cny(100))};
  ExpectInvalid(CheckBalanced(e), "UNBALANCED_POSTING");
  BalanceCheckOptions overall;
  overall.per_owner = false;
  EXPECT_TRUE(CheckBalanced(e, overall).ok());
}

TEST(Balance, EveryStandardPostingBalancesPerOwner) {
  for (const auto& e :
       {Must(ChargeEntries(kPayer, kOwner, Cny(7), v1::USAGE)),
        Must(InternalUseEntries(kOwner, Cny(7))), Must(InKindEntries(kOwner, Cny(7))),
        Must(SubsidyEntries(kPool, kPayer, kOwner, Cny(7))),
        Must(DepositHoldEntries(kPayer, kOwner, Cny(7))),
        Must(DepositReleaseEntries(kOwner, kPayer, Cny(7))),
        Must(DepositApplicationEntries(kOwner, kPayer, Cny(7))),
        Must(PaymentEntries(kPayer, kOwner, Cny(7))),
        Must(PoolPaymentEntries(kPool, kOwner, Cny(7))), Must(PoolTopUpEntries(kPool, Cny(7)))}) {
    BalanceCheckOptions cny;
    cny.currency_code = "CNY";
    EXPECT_TRUE(CheckBalanced(e, cny).ok()) << CheckBalanced(e, cny);
  }
}

TEST(Ledger, AChargeWithSubsidyAndPaymentsClosesEveryOpenItem) {
  // 240.01 charged to an SME; the pool pays 120.00; the SME pays 120.01;
  // the pool pays the owner its 120.00.
  Ledger l;
  l.Post(Must(PoolTopUpEntries(kPool, Cny(1000000))));
  l.Post(Must(ChargeEntries(kPayer, kOwner, Cny(24001), v1::USAGE)));
  auto lines = MustApply(UsageFacts(), {Sme()}, {SmePool()});
  ASSERT_EQ(lines.size(), 1u);
  const int64_t subsidy = lines[0].amount().amount_minor();
  l.Post(Must(SubsidyEntries(kPool, kPayer, kOwner, Cny(subsidy))));
  EXPECT_EQ(l.Net(A(kPayer, v1::PAYABLE), kOwner), -12001);
  EXPECT_EQ(l.Net(A(kOwner, v1::RECEIVABLE), kPool), 12000);
  l.Post(Must(PaymentEntries(kPayer, kOwner, Cny(12001))));
  l.Post(Must(PoolPaymentEntries(kPool, kOwner, Cny(subsidy))));
  EXPECT_TRUE(l.OpenItemsClosed());
  EXPECT_EQ(l.Total(A(kOwner, v1::INCOME)), -24001);
  EXPECT_EQ(l.Total(A(kOwner, v1::CASH)), 24001);
  EXPECT_EQ(l.Total(A(kPayer, v1::SUBSIDY_RECEIVED)), -12000);
  EXPECT_EQ(l.Total(A(kPool, v1::POOL_FUNDS)), -(1000000 - 12000));
  EXPECT_EQ(l.Total(A(kPool, v1::POOL_PAYABLE)), 0);
}

TEST(Ledger, LeaseDepositLifecycle) {
  // Deposit 1000.00, damage 1500.00: all applied, 500.00 excess damage.
  bkv1::Lease lease = Lease();
  Return(lease, Sh(2025, 4, 10), 150000);
  auto s = LeaseDepositSettlement(lease);
  ASSERT_TRUE(s.ok());
  auto damage = PriceDamage(lease);
  ASSERT_TRUE(damage.ok() && damage->has_value());
  (*damage)->set_owner_organization(kOwner);
  Ledger l;
  l.Post(Must(DepositHoldEntries(kPayer, kOwner, Cny(100000))));
  l.Post(Must(PaymentEntries(kPayer, kOwner, Cny(100000))));  // deposit paid
  l.Post(Must(DepositApplicationEntries(kOwner, kPayer, s->applied)));
  l.Post(Must(ChargePostingEntries(**damage)));
  EXPECT_EQ(l.Total(A(kOwner, v1::DEPOSIT_HELD)), 0);
  EXPECT_EQ(l.Total(A(kPayer, v1::DEPOSIT_LODGED)), 0);
  EXPECT_EQ(l.Total(A(kOwner, v1::COMPENSATION)), -150000);
  EXPECT_EQ(l.Total(A(kOwner, v1::INCOME)), 0);
  EXPECT_EQ(l.Net(A(kPayer, v1::PAYABLE), kOwner), -50000);
}

// ================================================================ settlement

std::vector<v1::SettlementTransfer> Plan(const std::vector<NetPosition>& p,
                                         TransferStrategy strategy = TransferStrategy::kMinimal,
                                         int max_exact = kDefaultMaxExactPositions) {
  TransferOptions o;
  o.strategy = strategy;
  o.max_exact = max_exact;
  auto t = PlanTransfers(p, "CNY", o);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : std::vector<v1::SettlementTransfer>();
}

using T = std::tuple<std::string, std::string, int64_t>;
std::vector<T> Tuples(const std::vector<v1::SettlementTransfer>& ts) {
  std::vector<T> out;
  for (const auto& t : ts)
    out.emplace_back(t.from_organization(), t.to_organization(), t.amount().amount_minor());
  return out;
}

std::string Org(const std::string& id) { return "organizations/" + id; }

// Transfers clear every position, and nobody both pays and receives.
void ExpectClears(const std::vector<NetPosition>& positions,
                  const std::vector<v1::SettlementTransfer>& transfers) {
  std::map<std::string, __int128> moved;
  std::set<std::string> payers, payees;
  for (size_t i = 0; i < transfers.size(); ++i) {
    const auto& t = transfers[i];
    EXPECT_EQ(t.index(), static_cast<int32_t>(i));
    EXPECT_GT(t.amount().amount_minor(), 0);
    EXPECT_EQ(t.amount().currency_code(), "CNY");
    moved[t.from_organization()] -= t.amount().amount_minor();
    moved[t.to_organization()] += t.amount().amount_minor();
    payers.insert(t.from_organization());
    payees.insert(t.to_organization());
  }
  for (const auto& p : positions) {
    EXPECT_TRUE(moved[p.organization] == p.net) << p.organization;
    EXPECT_FALSE(payers.count(p.organization) && payees.count(p.organization)) << p.organization;
  }
  for (size_t i = 1; i < transfers.size(); ++i) {
    EXPECT_LE(std::tie(transfers[i - 1].from_organization(), transfers[i - 1].to_organization()),
              std::tie(transfers[i].from_organization(), transfers[i].to_organization()));
  }
}

// The fewest transfers by brute force: N - (most zero-sum groups).
int BruteForceMinTransfers(const std::vector<int64_t>& nets) {
  const int n = static_cast<int>(nets.size());
  int best_groups = 0;
  // Assign each element a group label (restricted growth strings).
  std::vector<int> label(static_cast<size_t>(n), 0);
  std::function<void(int, int)> rec = [&](int i, int groups) {
    if (i == n) {
      std::vector<int64_t> sums(static_cast<size_t>(groups), 0);
      for (int k = 0; k < n; ++k)
        sums[static_cast<size_t>(label[static_cast<size_t>(k)])] += nets[static_cast<size_t>(k)];
      if (std::all_of(sums.begin(), sums.end(), [](int64_t s) { return s == 0; })) {
        best_groups = std::max(best_groups, groups);
      }
      return;
    }
    for (int g = 0; g <= groups; ++g) {
      label[static_cast<size_t>(i)] = g;
      rec(i + 1, std::max(groups, g + 1));
    }
  };
  rec(0, 0);
  return n - best_groups;
}

TEST(Settlement, PositionsFromOpenAmounts) {
  // A owes B 100, B owes C 50, C owes A 30.
  auto p = ComputePositions(
      {{Org("a"), Org("b"), 100}, {Org("b"), Org("c"), 50}, {Org("c"), Org("a"), 30}}, "CNY");
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].organization(), Org("a"));
  EXPECT_EQ((*p)[0].owed_to().amount_minor(), 30);
  EXPECT_EQ((*p)[0].owed_by().amount_minor(), 100);
  EXPECT_EQ((*p)[0].net().amount_minor(), -70);
  EXPECT_EQ((*p)[1].net().amount_minor(), 50);
  EXPECT_EQ((*p)[2].net().amount_minor(), 20);
}

TEST(Settlement, NegativeOpenAmountRunsTheOtherWay) {
  auto p = ComputePositions({{Org("a"), Org("b"), -40}}, "CNY");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].net().amount_minor(), 40);   // a receives
  EXPECT_EQ((*p)[1].net().amount_minor(), -40);  // b pays
  ExpectInvalid(ComputePositions({{Org("a"), Org("a"), 1}}, "CNY").status());
  ExpectInvalid(ComputePositions({{Org("a"), Org("b"), 1}}, "cny").status());
}

TEST(Settlement, PairBalancesNetEachPair) {
  auto pairs = ComputePairBalances({{Org("b"), Org("a"), 40},
                                    {Org("a"), Org("b"), 100},
                                    {Org("c"), Org("d"), 5},
                                    {Org("d"), Org("c"), 5}},
                                   "CNY");
  ASSERT_TRUE(pairs.ok());
  ASSERT_EQ(pairs->size(), 1u);  // c and d are square
  EXPECT_EQ((*pairs)[0].debtor_organization(), Org("a"));
  EXPECT_EQ((*pairs)[0].creditor_organization(), Org("b"));
  EXPECT_EQ((*pairs)[0].amount().amount_minor(), 60);
  EXPECT_EQ((*pairs)[0].debtor_owes().amount_minor(), 100);
  EXPECT_EQ((*pairs)[0].creditor_owes().amount_minor(), 40);
}

TEST(Settlement, TwoIndependentPairsNeedTwoTransfers) {
  const std::vector<NetPosition> p = {
      {Org("a"), -10}, {Org("b"), 10}, {Org("c"), -20}, {Org("d"), 20}};
  auto t = Plan(p);
  EXPECT_THAT(Tuples(t), ElementsAre(T{Org("a"), Org("b"), 10}, T{Org("c"), Org("d"), 20}));
  ExpectClears(p, t);
}

TEST(Settlement, ExactPairsAreMatchedFirst) {
  // b (-3) and d (+3) are exactly opposite and settle together; largest to
  // largest alone would have a pay c 7 then d 3, and b pay e 3.
  const std::vector<NetPosition> p = {
      {Org("a"), -10}, {Org("b"), -3}, {Org("c"), 7}, {Org("d"), 3}, {Org("e"), 3}};
  for (TransferStrategy s : {TransferStrategy::kContractGreedy, TransferStrategy::kMinimal}) {
    auto t = Plan(p, s);
    EXPECT_THAT(Tuples(t), ElementsAre(T{Org("a"), Org("c"), 7}, T{Org("a"), Org("e"), 3},
                                       T{Org("b"), Org("d"), 3}));
    ExpectClears(p, t);
  }
}

TEST(Settlement, MinimalFindsTheZeroSumGroupsGreedyMisses) {
  // Groups {a -9, d +5, e +4} and {b -8, c +6, f +2}: 4 transfers. The
  // contract's greedy (largest to largest) needs 5.
  const std::vector<NetPosition> p = {{Org("a"), -9}, {Org("b"), -8}, {Org("c"), 6},
                                      {Org("d"), 5},  {Org("e"), 4},  {Org("f"), 2}};
  auto minimal = Plan(p, TransferStrategy::kMinimal);
  EXPECT_THAT(Tuples(minimal), ElementsAre(T{Org("a"), Org("d"), 5}, T{Org("a"), Org("e"), 4},
                                           T{Org("b"), Org("c"), 6}, T{Org("b"), Org("f"), 2}));
  ExpectClears(p, minimal);
  auto greedy = Plan(p, TransferStrategy::kContractGreedy);
  // a pays c 6; b pays d 5; a pays e 3 (a's 3 tied with b's 3, a by name);
  // b pays f 2; b pays e 1.
  EXPECT_THAT(Tuples(greedy), ElementsAre(T{Org("a"), Org("c"), 6}, T{Org("a"), Org("e"), 3},
                                          T{Org("b"), Org("d"), 5}, T{Org("b"), Org("e"), 1},
                                          T{Org("b"), Org("f"), 2}));
  ExpectClears(p, greedy);
}

TEST(Settlement, AboveTheExactLimitFallsBackToGreedy) {
  const std::vector<NetPosition> p = {{Org("a"), -9}, {Org("b"), -8}, {Org("c"), 6},
                                      {Org("d"), 5},  {Org("e"), 4},  {Org("f"), 2}};
  EXPECT_EQ(Plan(p, TransferStrategy::kMinimal, /*max_exact=*/5).size(), 5u);
  EXPECT_EQ(Plan(p, TransferStrategy::kMinimal, /*max_exact=*/6).size(), 4u);
}

TEST(Settlement, GreedyBreaksTiesByName) {
  // Two creditors of 5: the one named first is paid first.
  const std::vector<NetPosition> p = {{Org("z"), -10}, {Org("m"), 5}, {Org("b"), 5}};
  auto t = Plan(p, TransferStrategy::kContractGreedy);
  EXPECT_THAT(Tuples(t), ElementsAre(T{Org("z"), Org("b"), 5}, T{Org("z"), Org("m"), 5}));
}

TEST(Settlement, AtMostNMinusOneTransfers) {
  const std::vector<NetPosition> p = {
      {Org("a"), -7}, {Org("b"), -5}, {Org("c"), -1}, {Org("d"), 4}, {Org("e"), 9}};
  for (TransferStrategy s : {TransferStrategy::kContractGreedy, TransferStrategy::kMinimal}) {
    auto t = Plan(p, s);
    EXPECT_LE(t.size(), 4u);
    ExpectClears(p, t);
  }
}

TEST(Settlement, MinimalMatchesBruteForceOnRandomCases) {
  std::mt19937_64 rng(42);
  int greedy_worse = 0;
  for (int round = 0; round < 400; ++round) {
    const int n = 2 + static_cast<int>(rng() % 8);  // 2..9 organisations
    std::vector<int64_t> nets(static_cast<size_t>(n));
    int64_t sum = 0;
    for (int i = 0; i < n - 1; ++i) {
      // Small values make zero-sum groups (and exact pairs) common.
      nets[static_cast<size_t>(i)] = static_cast<int64_t>(rng() % 19) - 9;
      sum += nets[static_cast<size_t>(i)];
    }
    nets[static_cast<size_t>(n - 1)] = -sum;
    std::vector<NetPosition> positions;
    std::vector<int64_t> non_zero;
    for (int i = 0; i < n; ++i) {
      positions.push_back({Org(absl::StrCat("o", i)), nets[static_cast<size_t>(i)]});
      if (nets[static_cast<size_t>(i)] != 0) non_zero.push_back(nets[static_cast<size_t>(i)]);
    }
    auto minimal = Plan(positions, TransferStrategy::kMinimal);
    ExpectClears(positions, minimal);
    ASSERT_EQ(static_cast<int>(minimal.size()), BruteForceMinTransfers(non_zero))
        << "round " << round;
    auto greedy = Plan(positions, TransferStrategy::kContractGreedy);
    ExpectClears(positions, greedy);
    ASSERT_GE(greedy.size(), minimal.size());
    ASSERT_LE(greedy.size(), non_zero.empty() ? 0u : non_zero.size() - 1);
    if (greedy.size() > minimal.size()) ++greedy_worse;
  }
  // The cases exercise the difference between the two strategies.
  EXPECT_GT(greedy_worse, 10);
}

TEST(Settlement, SixteenPositionsAreSolvedExactly) {
  // Four groups {100g+1, 100g+2, -(200g+3)} and one {611, 612, 613, -1836}:
  // 16 positions, no exact opposite pair, at most 5 zero-sum groups (one
  // debtor each): 16 - 5 = 11 transfers.
  std::vector<NetPosition> p;
  for (int g = 1; g <= 4; ++g) {
    p.push_back({Org(absl::StrCat("g", g, "-a")), 100 * g + 1});
    p.push_back({Org(absl::StrCat("g", g, "-b")), 100 * g + 2});
    p.push_back({Org(absl::StrCat("g", g, "-debtor")), -(200 * g + 3)});
  }
  for (int64_t v : {611, 612, 613, -1836}) p.push_back({Org(absl::StrCat("h", v < 0 ? -v : v)), v});
  ASSERT_EQ(p.size(), 16u);
  auto minimal = Plan(p, TransferStrategy::kMinimal);
  ExpectClears(p, minimal);
  EXPECT_EQ(minimal.size(), 11u);
  auto fallback = Plan(p, TransferStrategy::kMinimal, /*max_exact=*/15);
  ExpectClears(p, fallback);
  EXPECT_GE(fallback.size(), 11u);
  EXPECT_LE(fallback.size(), 15u);
}

TEST(Settlement, ZeroPositionsAreIgnored) {
  EXPECT_THAT(Plan({{Org("a"), 0}, {Org("b"), 0}}), IsEmpty());
  EXPECT_THAT(Plan({}), IsEmpty());
  auto t = Plan({{Org("a"), 0}, {Org("b"), -3}, {Org("c"), 3}});
  EXPECT_THAT(Tuples(t), ElementsAre(T{Org("b"), Org("c"), 3}));
}

TEST(Settlement, HugePositions) {
  const std::vector<NetPosition> p = {{Org("a"), -kMax}, {Org("b"), kMax - 1}, {Org("c"), 1}};
  auto t = Plan(p);
  ExpectClears(p, t);
  EXPECT_EQ(t.size(), 2u);
}

TEST(Settlement, InvalidPositions) {
  ExpectInvalid(PlanTransfers({{Org("a"), -1}, {Org("b"), 2}}, "CNY").status(),
                "UNBALANCED_POSITIONS");
  ExpectInvalid(PlanTransfers({{Org("a"), -1}, {Org("a"), 1}}, "CNY").status());
  ExpectInvalid(PlanTransfers({{"a", -1}, {Org("b"), 1}}, "CNY").status());
  ExpectInvalid(PlanTransfers({{Org("a"), -1}, {Org("b"), 1}}, "").status());
  ExpectInvalid(PlanTransfers({{Org("a"), std::numeric_limits<int64_t>::min()}}, "CNY").status(),
                "AMOUNT_OUT_OF_RANGE");
  TransferOptions too_big;
  too_big.max_exact = 30;
  ExpectInvalid(PlanTransfers({}, "CNY", too_big).status());
}

TEST(Settlement, ComputeSettlementTotals) {
  // a owes b 100 and c 50; b owes a 30; c owes b 20.
  const std::vector<OpenAmount> open = {{Org("a"), Org("b"), 100},
                                        {Org("a"), Org("c"), 50},
                                        {Org("b"), Org("a"), 30},
                                        {Org("c"), Org("b"), 20}};
  auto s = ComputeSettlement(open, "CNY");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->currency_code(), "CNY");
  EXPECT_EQ(s->gross_total().amount_minor(), 200);
  // Nets: a -120, b +90, c +30 -> a pays b 90 and c 30.
  ASSERT_EQ(s->positions_size(), 3);
  EXPECT_EQ(s->positions(0).net().amount_minor(), -120);
  EXPECT_EQ(s->positions(1).net().amount_minor(), 90);
  EXPECT_EQ(s->positions(2).net().amount_minor(), 30);
  EXPECT_EQ(s->transfer_total().amount_minor(), 120);
  EXPECT_THAT(Tuples({s->transfers().begin(), s->transfers().end()}),
              ElementsAre(T{Org("a"), Org("b"), 90}, T{Org("a"), Org("c"), 30}));
  ASSERT_EQ(s->pair_balances_size(), 3);
  EXPECT_EQ(s->pair_balances(0).debtor_organization(), Org("a"));
  EXPECT_EQ(s->pair_balances(0).creditor_organization(), Org("b"));
  EXPECT_EQ(s->pair_balances(0).amount().amount_minor(), 70);
  EXPECT_EQ(s->pair_balances(2).debtor_organization(), Org("c"));
}

// The ComputeSettlement RPC computes with these rules: open amounts whose
// sum for one organisation (or in all) passes 64-bit minor units are its
// INVALID_ARGUMENT "AMOUNT_OUT_OF_RANGE" (billing.proto lists it), never a
// wrapped total.
TEST(Settlement, ComputeSettlementRefusesSumsPast64Bits) {
  const int64_t big = std::numeric_limits<int64_t>::max() / 2 + 1;
  ExpectInvalid(ComputeSettlement({{Org("a"), Org("b"), big}, {Org("a"), Org("c"), big}}, "CNY").status(),
                "AMOUNT_OUT_OF_RANGE");
  // Each organisation's position fits; the gross total does not.
  ExpectInvalid(ComputeSettlement({{Org("a"), Org("b"), big}, {Org("c"), Org("d"), big}}, "CNY").status(),
                "AMOUNT_OUT_OF_RANGE");
  EXPECT_TRUE(ComputeSettlement({{Org("a"), Org("b"), big - 1}, {Org("c"), Org("d"), big - 1}}, "CNY").ok());
}

TEST(Settlement, NettingThenTransfersClosesEverySubLedger) {
  // Invoices: a owes b 100 (usage), b owes c 100 (lease), c owes a 30.
  const std::vector<OpenAmount> open = {
      {Org("a"), Org("b"), 100}, {Org("b"), Org("c"), 100}, {Org("c"), Org("a"), 30}};
  auto s = ComputeSettlement(open, "CNY");
  ASSERT_TRUE(s.ok());
  // Nets: a -70, b 0, c +70: one transfer.
  ASSERT_EQ(s->transfers_size(), 1);
  const std::vector<v1::SettlementTransfer> transfers(s->transfers().begin(), s->transfers().end());
  Ledger l;
  l.Post(Must(ChargeEntries(Org("a"), Org("b"), Cny(100), v1::USAGE)));
  l.Post(Must(ChargeEntries(Org("b"), Org("c"), Cny(100), v1::LEASE_PERIOD)));
  l.Post(Must(ChargeEntries(Org("c"), Org("a"), Cny(30), v1::TECHNICAL_SERVICE)));
  auto netting = SettlementNettingEntries(open, transfers, "CNY");
  ASSERT_TRUE(netting.ok()) << netting.status();
  for (const auto& e : *netting) {
    const std::string& acct = e.account();
    EXPECT_TRUE(acct.find("/accounts/receivable") != std::string::npos ||
                acct.find("/accounts/payable") != std::string::npos)
        << acct;
  }
  l.Post(*netting);
  for (const auto& t : transfers) {
    l.Post(Must(PaymentEntries(t.from_organization(), t.to_organization(), t.amount())));
  }
  EXPECT_TRUE(l.OpenItemsClosed());
}

TEST(Settlement, NettingRejectsTransfersThatDoNotClear) {
  const std::vector<OpenAmount> open = {{Org("a"), Org("b"), 100}};
  v1::SettlementTransfer t;
  t.set_from_organization(Org("a"));
  t.set_to_organization(Org("b"));
  *t.mutable_amount() = Cny(90);
  ExpectInvalid(SettlementNettingEntries(open, {t}, "CNY").status(), "UNBALANCED_POSTING");
  *t.mutable_amount() = Cny(100);
  auto e = SettlementNettingEntries(open, {t}, "CNY");
  ASSERT_TRUE(e.ok());
  EXPECT_THAT(*e, IsEmpty());  // the transfer is the invoice: nothing to move
  *t.mutable_amount() = MakeMoney("USD", 100);
  ExpectInvalid(SettlementNettingEntries(open, {t}, "CNY").status(), "CURRENCY_MISMATCH");
}

}  // namespace
}  // namespace labshare::billing
