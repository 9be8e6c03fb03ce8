// The report aggregates (services/usage/usage_aggregates.h) answer exactly
// what the counters and served sets answer: a varied year of events (sessions
// across midnight, month and year ends, users paying through several
// organisations, an empty payer and user, every size class and none, an
// instrument created mid-year and one retired, LEASE caps, fees, corrections,
// in-kind) folded, then every report compared with the reference computation
// (set_use_aggregates(false)) and the distinct counts with values computed
// here from the sessions. Then: attribute changes (reports fall back until
// the rebuild), data of the old layout migrated at start (with replicas
// migrating at once while events arrive), and batched ingest (ApplyEvents)
// leaving exactly what ApplyEvent leaves, the signed audit chain included.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "common/error.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::SharingMode;

constexpr int kOrgs = 8, kInstruments = 10, kUsers = 25;

struct Session {
  int instrument;
  std::string org;   // payer, may be empty
  std::string user;  // may be empty
  SharingMode mode;
  absl::Time start, end;
};

class UsageAggregatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    absl::LoadTimeZone("Asia/Shanghai", &zone_);
    clock_.Set(absl::FromCivil(absl::CivilDay(2027, 3, 1), zone_));
    figures_ = NewFigures();
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
    auditor_ = Principal{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
  }
  void TearDown() override { SetQuietLogging(false); }

  std::unique_ptr<UsageFigures> NewFigures() {
    return std::make_unique<UsageFigures>(pool_.get(), &clock_, zone_, testing::TestPageTokens());
  }
  static std::string Org(int o) { return absl::StrCat("organizations/o", o); }
  static std::string Instr(int i) { return absl::StrCat("instruments/i", i); }
  // o5 never gets an OrganizationChanged (size class unknown: 0).
  static int SizeClass(int o) {
    static const int kSizes[kOrgs] = {iv::SME, iv::START_UP, 1, 2, iv::SME, 0, iv::START_UP, 1};
    return kSizes[o];
  }
  std::string OwnerOf(int i) const { return Org(i % 5); }

  StreamEvent Event(const std::string& type, std::string payload) {
    StreamEvent e;
    e.stream_id = absl::StrCat(++stream_seq_, "-0");
    e.type = type;
    e.payload = std::move(payload);
    return e;
  }
  StreamEvent OrgEvent(int o, int size) {
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("org-", o, "-", size, "-", ++ids_));
    auto* org = e.mutable_organization_changed()->mutable_organization();
    org->set_name(Org(o));
    org->set_display_name(absl::StrCat("Org ", o));
    org->set_size_class(static_cast<iv::SizeClass>(size));
    return Event("labshare.inventory.v1.InventoryEvent", e.SerializeAsString());
  }
  iv::Instrument Instrument(int i) const {
    iv::Instrument in;
    in.set_name(Instr(i));
    in.set_display_name(absl::StrCat("Instrument ", i));
    in.set_owner_organization(OwnerOf(i));
    in.set_facility(absl::StrCat("facilities/f", i % 3));
    in.set_category(absl::StrCat("category-", i % 4));
    if (i != 7) {
      in.mutable_original_value()->set_currency_code("CNY");
      in.mutable_original_value()->set_amount_minor(int64_t{100000} * (i + 1));
    }
    in.set_daily_available_hours(i % 2 == 0 ? 24 : 10);
    *in.mutable_create_time() = ToProto(absl::FromCivil(absl::CivilDay(2025, 1, 1), zone_));
    if (i == 8) *in.mutable_create_time() = ToProto(absl::FromCivil(absl::CivilDay(2026, 6, 15), zone_));
    if (i == 9) {
      in.set_state(iv::RETIRED);
      *in.mutable_update_time() = ToProto(absl::FromCivil(absl::CivilSecond(2026, 9, 10, 12, 0, 0), zone_));
    }
    return in;
  }
  StreamEvent InstrumentEvent(const iv::Instrument& in) {
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("instr-", ++ids_));
    *e.mutable_instrument_changed()->mutable_instrument() = in;
    return Event("labshare.inventory.v1.InventoryEvent", e.SerializeAsString());
  }

  // The inventory, then `n` sessions with their booking and billing events.
  void Generate(int n, uint64_t seed) {
    for (int o = 0; o < kOrgs; ++o) {
      if (o != 5) inventory_.push_back(OrgEvent(o, SizeClass(o)));
    }
    for (int i = 0; i < kInstruments; ++i) inventory_.push_back(InstrumentEvent(Instrument(i)));
    std::mt19937_64 rng(seed);
    const SharingMode modes[] = {labshare::type::v1::ON_SITE, labshare::type::v1::TECHNICAL_SERVICE,
                                 labshare::type::v1::JOINT_RESEARCH, labshare::type::v1::LEASE};
    const absl::Time from = absl::FromCivil(absl::CivilDay(2025, 12, 20), zone_);
    for (int s = 0; s < n; ++s) {
      Session x;
      x.instrument = static_cast<int>(rng() % kInstruments);
      const int o = static_cast<int>(rng() % (kOrgs + 1));
      x.org = o == kOrgs ? "" : Org(o);
      const int u = static_cast<int>(rng() % (kUsers + 1));
      x.user = u == kUsers ? "" : absl::StrCat("users/u", u);
      x.mode = modes[rng() % 4];
      x.start = from + absl::Minutes(static_cast<int64_t>(rng() % (390 * 24 * 60)));
      x.end = x.start + absl::Minutes(30 + static_cast<int64_t>(rng() % (30 * 60)));
      bk::Booking b;
      b.set_name(absl::StrCat("bookings/b", s));
      b.set_instrument(Instr(x.instrument));
      b.set_mode(x.mode);
      b.set_payer_organization(x.org);
      b.set_user(x.user);
      *b.mutable_reserved_interval()->mutable_start_time() = ToProto(x.start);
      *b.mutable_reserved_interval()->mutable_end_time() = ToProto(x.end);
      *b.mutable_create_time() = ToProto(x.start - absl::Hours(30));
      b.set_state(bk::Booking::CONFIRMED);
      bk::BookingEvent created;
      created.mutable_header()->set_event_id(absl::StrCat("c", s));
      *created.mutable_booking_created()->mutable_booking() = b;
      booking_.push_back(Event("labshare.booking.v1.BookingEvent", created.SerializeAsString()));
      const int fate = static_cast<int>(rng() % 10);
      bk::BookingEvent next;
      next.mutable_header()->set_event_id(absl::StrCat("n", s));
      if (fate < 7) {
        *b.mutable_session()->mutable_start_time() = ToProto(x.start);
        *b.mutable_session()->mutable_end_time() = ToProto(x.end);
        *next.mutable_booking_checked_out()->mutable_booking() = b;
        sessions_.push_back(x);
      } else if (fate == 7) {
        *next.mutable_booking_missed()->mutable_booking() = b;
      } else if (fate == 8) {
        auto* c = next.mutable_booking_cancelled();
        *c->mutable_booking() = b;
        c->set_initiator(bk::Booking::BOOKER);
        c->set_late_cancellation(rng() % 2 == 0);
      } else {
        *next.mutable_booking_rejected()->mutable_booking() = b;
      }
      booking_.push_back(Event("labshare.booking.v1.BookingEvent", next.SerializeAsString()));
      bl::BillingEvent charge;
      charge.mutable_header()->set_event_id(absl::StrCat("ch", s));
      bl::IncomeFigures* f = rng() % 5 == 0 ? charge.mutable_correction_posted()->add_income_deltas()
                                            : charge.mutable_charge_posted()->mutable_income();
      f->set_owner_organization(OwnerOf(x.instrument));
      f->set_instrument(Instr(x.instrument));
      f->set_mode(x.mode);
      f->set_fee_kind(fate == 7 ? bl::MISSED_BOOKING_FEE : bl::FEE_KIND_UNSPECIFIED);
      *f->mutable_effective_time() = ToProto(x.end);
      f->set_currency_code("CNY");
      auto* share = f->add_shares();
      share->set_payer_organization(x.org);
      share->set_share_bps(10000);
      share->mutable_service_income()->set_currency_code("CNY");
      share->mutable_service_income()->set_amount_minor(static_cast<int64_t>(rng() % 100000) - 10000);
      share->mutable_subsidised()->set_currency_code("CNY");
      share->mutable_subsidised()->set_amount_minor(o % 3 == 0 ? 5000 : 0);
      f->mutable_in_kind()->set_currency_code("CNY");
      f->mutable_in_kind()->set_amount_minor(x.mode == labshare::type::v1::JOINT_RESEARCH ? 777 : 0);
      billing_.push_back(Event("labshare.billing.v1.BillingEvent", charge.SerializeAsString()));
    }
  }
  void FoldAll(UsageFigures& f) {
    for (const auto& e : inventory_) ASSERT_TRUE(f.Fold("inventory", e).ok());
    for (const auto& e : booking_) ASSERT_TRUE(f.Fold("booking", e).ok());
    for (const auto& e : billing_) ASSERT_TRUE(f.Fold("billing", e).ok());
  }

  labshare::type::v1::Interval Range(absl::CivilDay a, absl::CivilDay b) const {
    labshare::type::v1::Interval r;
    *r.mutable_start_time() = ToProto(absl::FromCivil(a, zone_));
    *r.mutable_end_time() = ToProto(absl::FromCivil(b, zone_));
    return r;
  }

  // Every report this test compares, serialized, in order.
  std::vector<std::string> Reports(UsageFigures& f) {
    std::vector<std::string> out;
    auto add = [&](const auto& r) {
      EXPECT_TRUE(r.ok()) << r.status();
      out.push_back(r.ok() ? SerializeDeterministic(*r) : r.status().ToString());
    };
    for (int y : {2025, 2026, 2027}) {
      v1::GetUsageFiguresRequest r;
      *r.mutable_range() = Range(absl::CivilDay(y, 1, 1), absl::CivilDay(y + 1, 1, 1));
      add(f.GetUsageFigures(auditor_, r));
    }
    for (int m = 1; m <= 12; ++m) {
      v1::GetUsageFiguresRequest r;
      *r.mutable_range() = Range(absl::CivilDay(2026, m, 1), absl::CivilDay(absl::CivilMonth(2026, m) + 1));
      add(f.GetUsageFigures(auditor_, r));
    }
    {
      v1::GetUsageFiguresRequest r;  // three months: not one period
      *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 4, 1));
      add(f.GetUsageFigures(auditor_, r));
      r.mutable_filter()->add_user_organizations(Org(2));
      add(f.GetUsageFigures(auditor_, r));
    }
    const std::vector<std::vector<v1::Dimension>> groupings = {
        {},
        {v1::DIMENSION_INSTRUMENT},
        {v1::DIMENSION_OWNER_ORGANIZATION},
        {v1::DIMENSION_FACILITY},
        {v1::DIMENSION_CATEGORY},
        {v1::DIMENSION_SHARING_MODE},
        {v1::DIMENSION_OWNER_ORGANIZATION, v1::DIMENSION_USER_ORGANIZATION}};
    for (auto g : {v1::PERIOD_GRANULARITY_RANGE, v1::PERIOD_GRANULARITY_MONTH, v1::PERIOD_GRANULARITY_YEAR}) {
      for (const auto& dims : groupings) {
        v1::QueryUsageRequest r;
        *r.mutable_range() = Range(absl::CivilDay(2025, 1, 1), absl::CivilDay(2027, 1, 1));
        if (g == v1::PERIOD_GRANULARITY_RANGE) {
          *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
        }
        r.set_granularity(g);
        for (auto d : dims) r.add_group_by(d);
        r.set_page_size(1000);
        add(f.QueryUsage(auditor_, r));
      }
    }
    {
      v1::QueryUsageRequest r;  // an instrument filter
      *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
      r.set_granularity(v1::PERIOD_GRANULARITY_MONTH);
      r.add_group_by(v1::DIMENSION_INSTRUMENT);
      r.mutable_filter()->add_owner_organizations(Org(1));
      r.set_page_size(1000);
      add(f.QueryUsage(auditor_, r));
    }
    for (int y : {2025, 2026}) {
      v1::GetAnnualReportRequest r;
      r.set_year(y);
      r.set_page_size(100);
      add(f.GetAnnualReport(auditor_, r));
    }
    v1::GetSharingMatrixRequest m;
    *m.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
    m.set_page_size(1000);
    add(f.GetSharingMatrix(auditor_, m));
    return out;
  }
  // The reports with the aggregates, then from the counters and sets.
  void ExpectSameAsReference(const char* what) {
    figures_->set_use_aggregates(true);
    const std::vector<std::string> fast = Reports(*figures_);
    figures_->set_use_aggregates(false);
    const std::vector<std::string> reference = Reports(*figures_);
    figures_->set_use_aggregates(true);
    ASSERT_EQ(fast.size(), reference.size());
    for (size_t i = 0; i < fast.size(); ++i) EXPECT_EQ(fast[i], reference[i]) << what << ": report " << i;
  }

  // The served days of the sessions (Shanghai days), for the independent counts.
  struct Served {
    int instrument;
    absl::CivilDay day;
    std::string org, user;
  };
  std::vector<Served> ServedDays() const {
    std::vector<Served> out;
    for (const Session& s : sessions_) {
      for (absl::Time t = s.start; t < s.end;) {
        const absl::CivilDay d = absl::ToCivilDay(t, zone_);
        out.push_back({s.instrument, d, s.org, s.user});
        t = std::min(s.end, absl::FromCivil(d + 1, zone_));
      }
    }
    return out;
  }

  testing::RedisServer* redis_ = nullptr;
  FakeClock clock_;
  absl::TimeZone zone_;
  std::unique_ptr<RedisPool> pool_;
  std::unique_ptr<UsageFigures> figures_;
  Principal auditor_;
  std::vector<StreamEvent> inventory_, booking_, billing_;
  std::vector<Session> sessions_;
  int64_t stream_seq_ = 0, ids_ = 0;
};

TEST_F(UsageAggregatesTest, EveryReportEqualsTheReferenceAndTheIndependentCounts) {
  Generate(600, 7);
  FoldAll(*figures_);
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("folded");
  // The aggregates answered: years, months, the annual report's groupings.
  EXPECT_GT(figures_->buckets_from_aggregates() - before, 40);

  // Distinct counts of 2026 computed here: instrument in service all year
  // except i8 (from 2026-06-15) and i9 (until 2026-09-10), both inside 2026.
  std::set<std::string> users, ext_users, sme_users, orgs, ext_orgs, sme_orgs, startup_orgs;
  std::map<int, std::set<std::string>> users_of, ext_users_of, orgs_of;
  auto size_of = [&](const std::string& org) {
    for (int o = 0; o < kOrgs; ++o) {
      if (Org(o) == org) return SizeClass(o);
    }
    return 0;
  };
  for (const Served& s : ServedDays()) {
    if (s.day.year() != 2026) continue;
    const bool ext = s.org != OwnerOf(s.instrument);
    users.insert(s.user);
    orgs.insert(s.org);
    users_of[s.instrument].insert(s.user);
    orgs_of[s.instrument].insert(s.org);
    if (ext) {
      ext_users.insert(s.user);
      ext_orgs.insert(s.org);
      ext_users_of[s.instrument].insert(s.user);
    }
    if (size_of(s.org) == iv::SME) {
      sme_users.insert(s.user);
      sme_orgs.insert(s.org);
    }
    if (size_of(s.org) == iv::START_UP) startup_orgs.insert(s.org);
  }
  ASSERT_GT(users.size(), 20u);
  ASSERT_GT(sme_orgs.size(), 0u);
  v1::GetUsageFiguresRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto year = figures_->GetUsageFigures(auditor_, r);
  ASSERT_TRUE(year.ok()) << year.status();
  EXPECT_EQ(year->figures().users_served(), static_cast<int64_t>(users.size()));
  EXPECT_EQ(year->figures().external_users_served(), static_cast<int64_t>(ext_users.size()));
  EXPECT_EQ(year->figures().sme_users_served(), static_cast<int64_t>(sme_users.size()));
  EXPECT_EQ(year->figures().organizations_served(), static_cast<int64_t>(orgs.size()));
  EXPECT_EQ(year->figures().external_organizations_served(), static_cast<int64_t>(ext_orgs.size()));
  EXPECT_EQ(year->figures().sme_organizations_served(), static_cast<int64_t>(sme_orgs.size()));
  EXPECT_EQ(year->figures().startup_organizations_served(), static_cast<int64_t>(startup_orgs.size()));
  v1::QueryUsageRequest q;
  *q.mutable_range() = r.range();
  q.add_group_by(v1::DIMENSION_INSTRUMENT);
  q.set_page_size(100);
  auto rows = figures_->QueryUsage(auditor_, q);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows_size(), kInstruments);
  for (const auto& row : rows->rows()) {
    int i = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row.key().instrument().substr(13), &i));
    EXPECT_EQ(row.figures().users_served(), static_cast<int64_t>(users_of[i].size())) << i;
    EXPECT_EQ(row.figures().external_users_served(), static_cast<int64_t>(ext_users_of[i].size())) << i;
    EXPECT_EQ(row.figures().organizations_served(), static_cast<int64_t>(orgs_of[i].size())) << i;
  }
}

TEST_F(UsageAggregatesTest, AttributeChangesFallBackUntilRebuilt) {
  Generate(300, 11);
  FoldAll(*figures_);
  ExpectSameAsReference("folded");
  // i3 moves to another facility and owner; o2 becomes an SME; o5 gets a
  // size class for the first time.
  iv::Instrument moved = Instrument(3);
  moved.set_facility("facilities/f9");
  moved.set_owner_organization(Org(6));
  ASSERT_TRUE(figures_->Fold("inventory", InstrumentEvent(moved)).ok());
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(2, iv::SME)).ok());
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(5, iv::START_UP)).ok());
  int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("after the changes");
  EXPECT_EQ(figures_->buckets_from_aggregates(), before);  // nothing from stale aggregates
  auto rebuilt = figures_->RebuildStaleAggregates();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*rebuilt, 17);  // every period with data: 2025-12 to 2027-01 and three years
  before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("rebuilt");
  EXPECT_GT(figures_->buckets_from_aggregates(), before);
  // Rebuilding again finds nothing stale; folding more keeps them exact.
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
  ASSERT_TRUE(figures_->Fold("inventory", InstrumentEvent(moved)).ok());  // same attributes: still exact
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
}

// Usage of an instrument folded before its inventory event: recorded once,
// gen not bumped per event (reports stay on the aggregates where it does not
// contribute, the rebuild does not run again and again); becoming known
// invalidates its periods once, and after their rebuild every report equals
// the reference.
TEST_F(UsageAggregatesTest, UsageBeforeTheInstrumentIsKnownInvalidatesItsPeriodsOnceWhenKnown) {
  Generate(300, 31);
  const std::string late = Instr(3);
  StreamEvent late_event;
  for (const auto& e : inventory_) {
    iv::InventoryEvent ie;
    ASSERT_TRUE(ie.ParseFromString(e.payload));
    if (ie.has_instrument_changed() && ie.instrument_changed().instrument().name() == late) {
      late_event = e;
      continue;
    }
    ASSERT_TRUE(figures_->Fold("inventory", e).ok());
  }
  auto gen = [&] {
    auto v = pool_->Command({"HGET", "{usage}:agg", "gen"});
    return v.ok() && !v->is_nil() ? v->str : std::string("0");
  };
  const std::string g0 = gen();
  for (const auto& e : booking_) ASSERT_TRUE(figures_->Fold("booking", e).ok());
  for (const auto& e : billing_) ASSERT_TRUE(figures_->Fold("billing", e).ok());
  EXPECT_EQ(gen(), g0);
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:agg:unknown", "i3"})->str, "1");
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
  ASSERT_TRUE(figures_->Fold("inventory", late_event).ok());
  EXPECT_EQ(gen(), g0);  // only i3's periods invalidated
  EXPECT_TRUE(pool_->Command({"HGET", "{usage}:agg:unknown", "i3"})->is_nil());
  const int64_t periods = pool_->Command({"HLEN", "{usage}:agg:ip:i3"})->integer;
  ASSERT_GT(periods, 0);
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), periods);
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
  ExpectSameAsReference("known late");
}

// A fold between a rebuild's listing of the period's instruments and its Lua
// step (i10 added, and its first usage in 2026-05): the step refuses and lists again,
// so i10 is counted and the period's aggregates equal the reference.
TEST_F(UsageAggregatesTest, RebuildRacingAFirstFoldOfAnInstrumentCountsIt) {
  Generate(200, 41);
  FoldAll(*figures_);
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(2, iv::SME)).ok());  // every period stale
  const StreamEvent added = InstrumentEvent(Instrument(10));
  bk::Booking b;
  b.set_name("bookings/late");
  b.set_instrument(Instr(10));
  b.set_mode(labshare::type::v1::ON_SITE);
  b.set_payer_organization(Org(3));
  b.set_user("users/u99");
  const absl::Time start = absl::FromCivil(absl::CivilSecond(2026, 5, 10, 10, 0, 0), zone_);
  *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
  *b.mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(2));
  *b.mutable_create_time() = ToProto(start - absl::Hours(30));
  b.set_state(bk::Booking::CONFIRMED);
  *b.mutable_session()->mutable_start_time() = ToProto(start);
  *b.mutable_session()->mutable_end_time() = ToProto(start + absl::Hours(2));
  bk::BookingEvent out;
  out.mutable_header()->set_event_id("late-out");
  *out.mutable_booking_checked_out()->mutable_booking() = b;
  const StreamEvent late = Event("labshare.booking.v1.BookingEvent", out.SerializeAsString());
  int hooked = 0;
  figures_->set_rebuild_listed_hook_for_testing([&] {
    if (hooked++ == 0) {
      ASSERT_TRUE(figures_->Fold("inventory", added).ok());
      ASSERT_TRUE(figures_->Fold("booking", late).ok());
    }
  });
  auto done = figures_->RebuildPeriod("m202605");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  EXPECT_EQ(hooked, 2);  // listed again after the refusal
  figures_->set_rebuild_listed_hook_for_testing(nullptr);
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:ai:m202605", "i10"})->str, "1");
  EXPECT_EQ(*figures_->RebuildPeriod("m202605"), false);  // already exact: nothing done
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("rebuilt during a fold");
  EXPECT_GT(figures_->buckets_from_aggregates() - before, 40);
}

// An instrument's attribute change invalidates only the periods it was counted
// in: i8 (in service from 2026-06-15) moves; only its periods are rebuilt.
TEST_F(UsageAggregatesTest, AnInstrumentChangeInvalidatesOnlyItsPeriods) {
  Generate(300, 13);
  FoldAll(*figures_);
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
  auto periods = pool_->Command({"HKEYS", "{usage}:agg:ip:i8"});
  ASSERT_TRUE(periods.ok());
  std::set<std::string> mine;
  for (const auto& p : periods->elements) mine.insert(p.str);
  auto all = pool_->Command({"HLEN", "{usage}:agg:built"});
  ASSERT_GT(all->integer, static_cast<int64_t>(mine.size()));
  EXPECT_EQ(mine.count("y2026"), 1u);
  iv::Instrument moved = Instrument(8);
  moved.set_owner_organization(Org(2));
  moved.set_category("category-9");
  ASSERT_TRUE(figures_->Fold("inventory", InstrumentEvent(moved)).ok());
  ExpectSameAsReference("after the change");
  auto rebuilt = figures_->RebuildStaleAggregates();
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  EXPECT_EQ(*rebuilt, static_cast<int>(mine.size()));
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("rebuilt");
  EXPECT_GT(figures_->buckets_from_aggregates() - before, 40);
}

TEST_F(UsageAggregatesTest, OldLayoutDataIsMigratedAtStartByConcurrentReplicas) {
  Generate(400, 23);
  // Half the events folded, then every aggregate key removed: what the fold
  // before the aggregates left.
  const size_t half = booking_.size() / 2;
  std::vector<StreamEvent> later_booking(booking_.begin() + static_cast<std::ptrdiff_t>(half), booking_.end());
  booking_.resize(half);
  FoldAll(*figures_);
  figures_->set_use_aggregates(false);
  const std::vector<std::string> reference = Reports(*figures_);
  auto drop_aggregates = [&] {
    for (const char* pattern : {"{usage}:a:*", "{usage}:ad:*", "{usage}:au:*", "{usage}:ao:*", "{usage}:ai:*",
                                "{usage}:agg*", "{usage}:iattr"}) {
      auto keys = pool_->Command({"KEYS", pattern});
      ASSERT_TRUE(keys.ok());
      for (const auto& k : keys->elements) ASSERT_TRUE(pool_->Command({"DEL", k.str}).ok());
    }
  };
  drop_aggregates();
  // One replica alone migrates the old data: the reports from the aggregates
  // equal the reference computed before.
  {
    auto alone = NewFigures();
    ASSERT_TRUE(alone->MigrateAggregates().ok());
    alone->set_use_aggregates(true);
    const std::vector<std::string> migrated = Reports(*alone);
    EXPECT_GT(alone->buckets_from_aggregates(), 40);
    ASSERT_EQ(migrated.size(), reference.size());
    for (size_t i = 0; i < migrated.size(); ++i) EXPECT_EQ(migrated[i], reference[i]) << "report " << i;
  }
  drop_aggregates();
  // Three replicas start at once while the rest of the events arrive.
  std::vector<std::unique_ptr<UsageFigures>> replicas;
  for (int i = 0; i < 3; ++i) replicas.push_back(NewFigures());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (auto& rep : replicas) {
    threads.emplace_back([&, f = rep.get()] {
      if (!f->MigrateAggregates().ok()) ++failures;
    });
  }
  threads.emplace_back([&] {
    for (const auto& e : later_booking) {
      if (!replicas[0]->Fold("booking", e).ok()) ++failures;
    }
  });
  for (auto& t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  // A period first registered by a fold during the migration is built by the
  // next check (the service runs it every --aggregates_check_s).
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("migrated");
  EXPECT_GT(figures_->buckets_from_aggregates() - before, 40);
  // Migrating again changes nothing.
  ASSERT_TRUE(figures_->MigrateAggregates().ok());
  EXPECT_EQ(*figures_->RebuildStaleAggregates(), 0);
}

// The aggregate hashes of a period, sorted, to compare rebuilds field by field;
// without_has drops the "has|<mode>" fields, which only a rebuild writes (a
// fold never did: a mode served after its instrument's set was scanned has
// its counters, so the reports are the same, as they check).
std::map<std::string, std::map<std::string, std::string>> AggregatesOf(RedisPool& pool, const std::string& period,
                                                                       bool without_has = false) {
  std::vector<std::string> keys = {"{usage}:ad:" + period, "{usage}:au:" + period, "{usage}:ao:" + period,
                                   "{usage}:ai:" + period};
  for (int i = 0; i < 12; ++i) keys.push_back(absl::StrCat("{usage}:a:i", i, ":", period));
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const auto& k : keys) {
    auto r = pool.Command({"HGETALL", k});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) continue;
    for (size_t i = 0; i + 1 < r->elements.size(); i += 2) {
      if (without_has && absl::StartsWith(r->elements[i].str, "has|")) continue;
      out[k][r->elements[i].str] = r->elements[i + 1].str;
    }
  }
  return out;
}

// Invalidates P and rebuilds it in one step (a budget larger than the data):
// the aggregates of the one-step rebuild.
std::map<std::string, std::map<std::string, std::string>> RebuiltAtOnce(RedisPool& pool, UsageFigures& f,
                                                                        const std::string& period,
                                                                        bool without_has = false) {
  EXPECT_TRUE(pool.Command({"HSET", "{usage}:agg:built", period, "-1"}).ok());
  f.set_rebuild_chunk(1 << 30);
  int steps = 0;
  f.set_rebuild_chunk_hook_for_testing([&](const std::string&, int64_t) {
    ++steps;
    return true;
  });
  auto done = f.RebuildPeriod(period);
  EXPECT_TRUE(done.ok() && *done) << done.status();
  EXPECT_EQ(steps, 1);
  f.set_rebuild_chunk_hook_for_testing(nullptr);
  return AggregatesOf(pool, period, without_has);
}

// A stale year rebuilt in steps of at most 40 source entries, stopped after 3
// steps (as by a crash: state and lease left in Redis); reports fall back
// meanwhile; another instance waits for the lease, then continues from the
// cursor; the result equals a one-step rebuild field by field and every
// report equals the reference.
TEST_F(UsageAggregatesTest, AChunkedRebuildInterruptedIsResumedByAnotherInstance) {
  Generate(300, 21);
  FoldAll(*figures_);
  iv::Instrument moved = Instrument(3);
  moved.set_owner_organization(Org(6));
  ASSERT_TRUE(figures_->Fold("inventory", InstrumentEvent(moved)).ok());
  figures_->set_rebuild_chunk(40);
  std::vector<std::string> statuses;
  figures_->set_rebuild_chunk_hook_for_testing([&](const std::string& st, int64_t) {
    statuses.push_back(st);
    return statuses.size() < 3;
  });
  auto first = figures_->RebuildPeriod("y2026");
  EXPECT_EQ(first.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(statuses, (std::vector<std::string>{"MORE", "MORE", "MORE"}));
  auto built = pool_->Command({"HGET", "{usage}:agg:built", "y2026"});
  EXPECT_EQ(built->str.substr(0, 1), "r");  // in progress: never equal to gen
  EXPECT_EQ(pool_->Command({"HGET", "{usage}:rb:y2026", "owner"})->str, figures_->rebuild_owner());
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("while the rebuild is interrupted");
  auto other = NewFigures();
  other->set_rebuild_chunk(40);
  int64_t steps = 0, max_step = 0;
  other->set_rebuild_chunk_hook_for_testing([&](const std::string&, int64_t n) {
    ++steps;
    max_step = std::max(max_step, n);
    return true;
  });
  EXPECT_EQ(*other->RebuildPeriod("y2026"), false);  // the lease is held
  EXPECT_EQ(steps, 0);
  // The lease expires (Redis TIME passed "until").
  ASSERT_TRUE(pool_->Command({"HSET", "{usage}:rb:y2026", "until", "0"}).ok());
  const std::string idx = pool_->Command({"HGET", "{usage}:rb:y2026", "idx"})->str;
  auto resumed = other->RebuildPeriod("y2026");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_TRUE(*resumed);
  EXPECT_GT(steps, 1);
  EXPECT_NE(idx, "1");  // continued after the instruments done, not started again
  EXPECT_EQ(pool_->Command({"EXISTS", "{usage}:rb:y2026", "{usage}:rb:y2026:pend"})->integer, 0);
  const auto chunked = AggregatesOf(*pool_, "y2026");
  EXPECT_FALSE(chunked.empty());
  figures_->set_rebuild_chunk_hook_for_testing(nullptr);
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  ExpectSameAsReference("resumed");
  EXPECT_GT(figures_->buckets_from_aggregates(), before);
  EXPECT_EQ(RebuiltAtOnce(*pool_, *other, "y2026"), chunked);
}

// Events folded between the chunks of a rebuild (deterministically: three
// after every step) are counted exactly once: the result equals a one-step
// rebuild after all of them, field by field, and every report the reference.
TEST_F(UsageAggregatesTest, FoldsBetweenRebuildChunksAreCountedOnce) {
  Generate(300, 23);
  for (const auto& e : inventory_) ASSERT_TRUE(figures_->Fold("inventory", e).ok());
  std::vector<std::pair<const char*, const StreamEvent*>> rest;
  for (size_t i = 0; i < booking_.size(); ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(figures_->Fold("booking", booking_[i]).ok());
    } else {
      rest.emplace_back("booking", &booking_[i]);
    }
  }
  for (size_t i = 0; i < billing_.size(); ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(figures_->Fold("billing", billing_[i]).ok());
    } else {
      rest.emplace_back("billing", &billing_[i]);
    }
  }
  iv::Instrument moved = Instrument(3);
  moved.set_facility("facilities/f9");
  ASSERT_TRUE(figures_->Fold("inventory", InstrumentEvent(moved)).ok());
  figures_->set_rebuild_chunk(25);
  size_t next = 0;
  int steps = 0;
  figures_->set_rebuild_chunk_hook_for_testing([&](const std::string& st, int64_t n) {
    ++steps;
    EXPECT_LE(n, 25 + 200) << st;  // bounded (the counters test checks the exact bound)
    for (int k = 0; k < 3 && next < rest.size(); ++k, ++next) {
      EXPECT_TRUE(figures_->Fold(rest[next].first, *rest[next].second).ok());
    }
    return true;
  });
  auto done = figures_->RebuildPeriod("y2026");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  EXPECT_GT(steps, 10);
  EXPECT_GT(next, 30u);  // folds did race the rebuild
  figures_->set_rebuild_chunk_hook_for_testing(nullptr);
  for (; next < rest.size(); ++next) ASSERT_TRUE(figures_->Fold(rest[next].first, *rest[next].second).ok());
  const auto chunked = AggregatesOf(*pool_, "y2026", true);
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  const int64_t before = figures_->buckets_from_aggregates();
  ExpectSameAsReference("folds between chunks");
  EXPECT_GT(figures_->buckets_from_aggregates(), before);
  EXPECT_EQ(RebuiltAtOnce(*pool_, *figures_, "y2026", true), chunked);
}

// Two instances racing for one period's lease: the one that holds it rebuilds;
// the other, trying between its steps, does no step at all; the result equals
// a one-step rebuild.
TEST_F(UsageAggregatesTest, TwoInstancesRacingForTheLeaseRebuildOnce) {
  Generate(300, 25);
  FoldAll(*figures_);
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(2, iv::SME)).ok());  // gen + 1: every period stale
  auto other = NewFigures();
  other->set_rebuild_chunk(30);
  figures_->set_rebuild_chunk(30);
  int mine = 0, theirs = 0;
  std::vector<bool> other_results;
  other->set_rebuild_chunk_hook_for_testing([&](const std::string&, int64_t) {
    ++theirs;
    return true;
  });
  figures_->set_rebuild_chunk_hook_for_testing([&](const std::string& st, int64_t) {
    ++mine;
    if (st == "MORE" && mine % 2 == 0) {
      auto r = other->RebuildPeriod("y2026");
      EXPECT_TRUE(r.ok()) << r.status();
      other_results.push_back(r.ok() && *r);
    }
    return true;
  });
  auto done = figures_->RebuildPeriod("y2026");
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(*done);
  EXPECT_GT(other_results.size(), 2u);
  for (bool r : other_results) EXPECT_FALSE(r);
  EXPECT_EQ(theirs, 0);
  EXPECT_EQ(*other->RebuildPeriod("y2026"), false);  // exact now
  figures_->set_rebuild_chunk_hook_for_testing(nullptr);
  const auto chunked = AggregatesOf(*pool_, "y2026");
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  ExpectSameAsReference("raced");
  EXPECT_EQ(RebuiltAtOnce(*pool_, *figures_, "y2026"), chunked);
}

// No step processes more than the budget of source entries, except that an
// instrument's counters hash is copied whole: with a budget above the largest
// counters hash, every step stays within it, and all of them together saw at
// least every counter field and served-set member.
TEST_F(UsageAggregatesTest, ARebuildStepProcessesAtMostItsBudget) {
  Generate(300, 27);
  FoldAll(*figures_);
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(2, iv::SME)).ok());
  long long largest = 0, total = 0;
  for (int i = 0; i < kInstruments; ++i) {
    largest = std::max(largest, pool_->Command({"HLEN", absl::StrCat("{usage}:y:i", i, ":2026")})->integer);
    total += pool_->Command({"HLEN", absl::StrCat("{usage}:y:i", i, ":2026")})->integer +
             pool_->Command({"SCARD", absl::StrCat("{usage}:uy:i", i, ":2026")})->integer;
  }
  ASSERT_GT(largest, 0);
  const int budget = static_cast<int>(largest) + 3;
  figures_->set_rebuild_chunk(budget);
  int64_t seen = 0, max_step = 0, steps = 0;
  figures_->set_rebuild_chunk_hook_for_testing([&](const std::string&, int64_t n) {
    ++steps;
    seen += n;
    max_step = std::max(max_step, n);
    return true;
  });
  ASSERT_TRUE(*figures_->RebuildPeriod("y2026"));
  EXPECT_LE(max_step, budget);
  EXPECT_GE(seen, total);
  EXPECT_GE(steps, total / budget);
  figures_->set_rebuild_chunk_hook_for_testing(nullptr);
  ASSERT_TRUE(figures_->RebuildStaleAggregates().ok());
  ExpectSameAsReference("bounded steps");
}

// A clock 1 ms later at every reading.
class TickingClock : public Clock {
 public:
  absl::Time Now() const override { return t_ += absl::Milliseconds(1); }
  void Reset() { t_ = absl::FromUnixSeconds(1800000000); }

 private:
  mutable absl::Time t_ = absl::FromUnixSeconds(1800000000);
};

// Every key and its content (order-free), for comparing two stores.
std::map<std::string, std::string> Contents(RedisPool& pool) {
  std::map<std::string, std::string> out;
  auto keys = pool.Command({"KEYS", "*"});
  for (const auto& k : keys->elements) {
    const std::string type = pool.Command({"TYPE", k.str})->str;
    std::vector<std::string> items;
    if (type == "hash") {
      auto v = pool.Command({"HGETALL", k.str});
      for (size_t i = 0; i + 1 < v->elements.size(); i += 2) {
        items.push_back(absl::StrCat(v->elements[i].str, "=", v->elements[i + 1].str));
      }
    } else if (type == "set") {
      auto v = pool.Command({"SMEMBERS", k.str});
      for (const auto& m : v->elements) items.push_back(m.str);
    } else if (type == "zset") {
      auto v = pool.Command({"ZRANGE", k.str, "0", "-1", "WITHSCORES"});
      for (const auto& m : v->elements) items.push_back(m.str);
    } else {
      items.push_back(pool.Command({"GET", k.str})->str);
    }
    std::sort(items.begin(), items.end());
    out[k.str] = type + ":" + absl::StrJoin(items, "\n");
  }
  return out;
}

std::shared_ptr<const AuditSigningKey> NewEd25519Key() {
  EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  return *AuditSigningKey::FromPrivateKeyPem(pem);
}

// Review M4 (Redis Cluster): every key a fold step writes is one of its KEYS.
// Each step's declared keys are recorded; the store before and after the
// step are compared key by key (inventory, booking and billing events, in
// batches, with an attribute change that invalidates periods).
TEST_F(UsageAggregatesTest, EveryKeyAFoldStepWritesIsDeclared) {
  Generate(120, 23);
  std::vector<std::string> declared;
  figures_->set_fold_keys_hook_for_testing([&](const std::vector<std::string>& keys) { declared = keys; });
  int steps = 0;
  auto fold = [&](const std::string& source, const std::vector<StreamEvent>& batch) {
    const auto before = Contents(*pool_);
    declared.clear();
    for (const auto& st : figures_->FoldBatch(source, batch)) ASSERT_TRUE(st.ok()) << st;
    ASSERT_FALSE(declared.empty());
    ++steps;
    const std::set<std::string> ks(declared.begin(), declared.end());
    const auto after = Contents(*pool_);
    for (const auto& [k, v] : after) {
      auto it = before.find(k);
      if (it == before.end() || it->second != v) {
        EXPECT_EQ(ks.count(k), 1u) << "undeclared key written: " << k;
      }
    }
    for (const auto& [k, v] : before) {
      if (after.count(k) == 0) {
        EXPECT_EQ(ks.count(k), 1u) << "undeclared key removed: " << k;
      }
    }
  };
  fold("inventory", inventory_);
  for (size_t i = 0; i < booking_.size(); i += 40) {
    fold("booking", std::vector<StreamEvent>(booking_.begin() + static_cast<std::ptrdiff_t>(i),
                                             booking_.begin() + static_cast<std::ptrdiff_t>(
                                                                    std::min(booking_.size(), i + 40))));
  }
  fold("billing", billing_);
  iv::Instrument moved = Instrument(3);
  moved.set_facility("facilities/f9");
  fold("inventory", {InstrumentEvent(moved)});
  EXPECT_GE(steps, 4);
  // The attribute change invalidated the periods i3 was counted in.
  auto built = pool_->Command({"HVALS", "{usage}:agg:built"});
  ASSERT_TRUE(built.ok());
  int stale = 0;
  for (const auto& v : built->elements) stale += v.str == "-1" ? 1 : 0;
  EXPECT_GT(stale, 0);
}

// Every key a rebuild step (start or chunk) writes or removes is declared in
// its KEYS (between the steps the client only reads).
TEST_F(UsageAggregatesTest, EveryKeyARebuildStepWritesIsDeclared) {
  Generate(120, 29);
  FoldAll(*figures_);
  ASSERT_TRUE(figures_->Fold("inventory", OrgEvent(2, iv::SME)).ok());
  figures_->set_rebuild_chunk(30);
  std::map<std::string, std::string> before;
  std::vector<std::string> declared;
  int checked = 0;
  auto check = [&] {
    const std::set<std::string> ks(declared.begin(), declared.end());
    const auto after = Contents(*pool_);
    for (const auto& [k, v] : after) {
      auto it = before.find(k);
      if (it == before.end() || it->second != v) {
        EXPECT_EQ(ks.count(k), 1u) << "undeclared key written: " << k;
      }
    }
    for (const auto& [k, v] : before) {
      if (after.count(k) == 0) {
        EXPECT_EQ(ks.count(k), 1u) << "undeclared key removed: " << k;
      }
    }
    ++checked;
  };
  figures_->set_rebuild_keys_hook_for_testing([&](const std::vector<std::string>& keys) {
    if (!declared.empty()) check();
    before = Contents(*pool_);
    declared = keys;
  });
  for (const char* period : {"y2026", "m202606"}) {
    declared.clear();
    auto done = figures_->RebuildPeriod(period);
    ASSERT_TRUE(done.ok() && *done) << done.status();
    check();
  }
  EXPECT_GT(checked, 10);
  figures_->set_rebuild_keys_hook_for_testing(nullptr);
}


TEST_F(UsageAggregatesTest, ApplyEventsLeavesExactlyWhatApplyEventLeaves) {
  Generate(150, 5);
  // Redeliveries (in and across batches), an undecodable event, an event
  // naming a malformed resource.
  std::vector<std::pair<std::string, StreamEvent>> events;
  for (const auto& e : inventory_) events.push_back({"inventory", e});
  for (size_t i = 0; i < booking_.size(); ++i) {
    events.push_back({"booking", booking_[i]});
    if (i % 17 == 3) events.push_back({"booking", booking_[i]});
    if (i % 29 == 5) events.push_back({"booking", booking_[i / 2]});
  }
  events.push_back({"booking", Event("labshare.booking.v1.BookingEvent", "\xff\xff\xff")});
  {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id("bad-name");
    *e.mutable_booking_created()->mutable_booking() = bk::Booking();
    e.mutable_booking_created()->mutable_booking()->set_instrument("instruments/../x");
    e.mutable_booking_created()->mutable_booking()->set_state(bk::Booking::CONFIRMED);
    events.push_back({"booking", Event("labshare.booking.v1.BookingEvent", e.SerializeAsString())});
  }
  for (const auto& e : billing_) events.push_back({"billing", e});
  const auto key = NewEd25519Key();
  // The chain's clock moves on at every reading: each new entry reads it once
  // on either path, so the append times (and hashes) must match one for one.
  TickingClock ticking;
  auto chain = [&] {
    AuditChainOptions o;
    o.clock = &ticking;
    o.signing_key = key;
    return std::make_unique<AuditChain>(pool_.get(), testing::TestPageTokens(), o);
  };

  // One by one.
  std::vector<std::string> single_status;
  {
    auto audit = chain();
    for (const auto& [source, e] : events) {
      single_status.push_back(ApplyEvent(audit.get(), figures_.get(), source, e).ToString());
    }
  }
  const auto single = Contents(*pool_);
  const std::vector<std::string> single_reports = Reports(*figures_);
  ASSERT_GT(single.count(audit_keys::Entry(300)), 0u);

  // In batches of 1..37 events of one source, as a consumer reads them.
  testing::FlushAll(*redis_);
  ASSERT_TRUE(figures_->MigrateAggregates().ok());
  ticking.Reset();
  std::vector<std::string> batch_status;
  {
    auto audit = chain();
    EXPECT_TRUE(audit->AppendBatch("booking", {}).empty());
    size_t i = 0, size = 1;
    while (i < events.size()) {
      std::vector<StreamEvent> batch;
      const std::string source = events[i].first;
      while (i < events.size() && events[i].first == source && batch.size() < size) {
        batch.push_back(events[i++].second);
      }
      for (const auto& s : ApplyEvents(audit.get(), figures_.get(), source, batch)) {
        batch_status.push_back(s.ToString());
      }
      size = size % 37 + 1;
    }
  }
  EXPECT_EQ(batch_status, single_status);
  // Every key identical: entries, hashes, sequences, markers, indexes, the
  // signed head (Ed25519 signatures are deterministic), figures, aggregates.
  const auto batched = Contents(*pool_);
  EXPECT_EQ(batched.size(), single.size());
  for (const auto& [k, v] : single) {
    auto it = batched.find(k);
    ASSERT_NE(it, batched.end()) << k;
    EXPECT_EQ(it->second, v) << k;
  }
  EXPECT_EQ(Reports(*figures_), single_reports);
}

// The one-step fold of a run (FoldFast: increments summed per field, served
// members and first-seen markers deduplicated) leaves exactly what the
// per-event step leaves, event by event: check-ins (open sessions), sessions
// left open, check-outs across midnight, cancellations with and without a
// session, redeliveries in and across batches, and attribute and size class
// changes folded by another replica between batches (the first replica's
// cached attributes are then stale: its step refuses them and it reads
// again).
TEST_F(UsageAggregatesTest, AFastFoldLeavesExactlyWhatThePerEventStepLeaves) {
  Generate(240, 13);
  std::vector<StreamEvent> booking;
  for (size_t i = 0; i < booking_.size(); ++i) {
    bk::BookingEvent e;
    ASSERT_TRUE(e.ParseFromString(booking_[i].payload));
    if (e.has_booking_checked_out() && i % 3 == 1) {
      // Checked in first (an open session), sometimes in the batch before.
      bk::BookingEvent in;
      in.mutable_header()->set_event_id(absl::StrCat("in", i));
      *in.mutable_booking_checked_in()->mutable_booking() = e.booking_checked_out().booking();
      in.mutable_booking_checked_in()->mutable_booking()->clear_state();
      booking.push_back(Event("labshare.booking.v1.BookingEvent", in.SerializeAsString()));
      if (i % 4 == 1) {
        // A session still open at the end.
        in.mutable_header()->set_event_id(absl::StrCat("in-open", i));
        in.mutable_booking_checked_in()->mutable_booking()->set_name(absl::StrCat("bookings/open", i));
        booking.push_back(Event("labshare.booking.v1.BookingEvent", in.SerializeAsString()));
      }
    }
    booking.push_back(booking_[i]);
    if (i % 23 == 4) booking.push_back(booking_[i]);      // redelivered in the batch
    if (i % 31 == 9) booking.push_back(booking_[i / 2]);  // and later
  }
  iv::Instrument moved = Instrument(2);
  moved.set_owner_organization(Org(6));
  moved.set_category("category-9");
  const std::vector<StreamEvent> changes = {InstrumentEvent(moved), OrgEvent(3, iv::SME), OrgEvent(5, iv::START_UP)};
  auto run = [&](bool fast) {
    testing::FlushAll(*redis_);
    auto figures = NewFigures();
    auto other = NewFigures();  // another replica
    figures->set_fast_fold_for_testing(fast);
    other->set_fast_fold_for_testing(fast);
    EXPECT_TRUE(figures->MigrateAggregates().ok());
    std::vector<std::string> status;
    auto fold = [&](UsageFigures& f, const std::string& source, const std::vector<StreamEvent>& events,
                    size_t first_size) {
      size_t size = first_size;
      for (size_t i = 0; i < events.size();) {
        std::vector<StreamEvent> batch(events.begin() + static_cast<std::ptrdiff_t>(i),
                                       events.begin() + static_cast<std::ptrdiff_t>(std::min(events.size(), i + size)));
        i += batch.size();
        for (const auto& st : f.FoldBatch(source, batch)) status.push_back(st.ToString());
        size = size % 61 + 1;
      }
    };
    fold(*figures, "inventory", inventory_, 5);
    const size_t half = booking.size() / 2;
    fold(*figures, "booking", std::vector<StreamEvent>(booking.begin(), booking.begin() + static_cast<std::ptrdiff_t>(half)), 7);
    fold(*figures, "billing", std::vector<StreamEvent>(billing_.begin(), billing_.begin() + 100), 40);
    fold(*other, "inventory", changes, 3);
    fold(*figures, "booking", std::vector<StreamEvent>(booking.begin() + static_cast<std::ptrdiff_t>(half), booking.end()), 50);
    fold(*figures, "billing", std::vector<StreamEvent>(billing_.begin() + 100, billing_.end()), 61);
    if (fast) {
      EXPECT_GT(figures->fast_fold_steps(), 20);
      EXPECT_GT(figures->fast_fold_stale(), 0);
    } else {
      EXPECT_EQ(figures->fast_fold_steps(), 0);
    }
    return std::make_pair(status, Contents(*pool_));
  };
  const auto [step_status, step] = run(false);
  const auto [fast_status, fast] = run(true);
  EXPECT_EQ(fast_status, step_status);
  EXPECT_EQ(fast.size(), step.size());
  for (const auto& [k, v] : step) {
    auto it = fast.find(k);
    ASSERT_NE(it, fast.end()) << k;
    EXPECT_EQ(it->second, v) << k;
  }
  EXPECT_GT(step.count("{usage}:open"), 0u);
  EXPECT_GT(step.count("{usage}:closed"), 0u);
}

}  // namespace
}  // namespace labshare::usage
