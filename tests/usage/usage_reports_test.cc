// The reports of the usage service over a scripted year (2026, Asia/Shanghai)
// of synthetic inventory, booking and billing events folded into the
// figures: thresholds, idle and under-shared lists, the sharing matrix, the
// annual report and its CSV, and the usage export. Every number is computed
// by hand in the comments.
//
// The year (all instruments registered 2026-01-01 00:00 Shanghai, so in
// service 365 days = 31536000 s, except i4):
//   i1 "EBL"  owner own, f1, lithography,          value 2,000,000,000 minor
//        sme/s1 ON_SITE 300 h (Jan 5 00:00 .. Jan 17 12:00)  = 1,080,000 s
//        own/o1 ON_SITE 700 h (Mar 1 00:00 .. Mar 30 04:00)  = 2,520,000 s
//        charge to sme 30,000,000 (of which subsidised 10,000,000) on Jan 17
//   i2 "TEM"  owner own, f1, electron-microscopy,  value   500,000,000
//        big/b1 ON_SITE 100 h (Feb 1 00:00 .. Feb 5 04:00)   =   360,000 s
//        own/o1 ON_SITE 100 h (Jun 1 00:00 .. Jun 5 04:00)   =   360,000 s
//        charge to big 5,000,000 on Feb 5
//   i3 "NMR"  owner big, f2, spectroscopy,         value   300,000,000
//        big/b2 ON_SITE 900 h (Apr 1 00:00 .. May 8 12:00)   = 3,240,000 s
//        start/t1 TECHNICAL_SERVICE 100 h (Jul 1 .. Jul 5 04:00) = 360,000 s
//        charge to start 2,000,000 on Jul 5; in-kind 1,000,000 (JOINT_RESEARCH)
//   i4 "MS"   owner big, f2, spectroscopy, no value, registered Dec 15: 17 days
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <limits>
#include <map>
#include <optional>

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "labshare/billing/v1/billing_events.pb.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "labshare/usage/v1/usage.grpc.pb.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_tokens.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace bl = labshare::billing::v1;
namespace iv = labshare::inventory::v1;
using labshare::type::v1::JOINT_RESEARCH;
using labshare::type::v1::LEASE;
using labshare::type::v1::ON_SITE;
using labshare::type::v1::SharingMode;
using labshare::type::v1::TECHNICAL_SERVICE;

constexpr int64_t kYear = 31536000;

std::string Sha256Hex(absl::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(d), n));
}

class UsageReportsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetQuietLogging(true);
    redis_ = testing::SharedRedisServer();
    ASSERT_NE(redis_, nullptr);
    testing::FlushAll(*redis_);
    pool_ = std::make_unique<RedisPool>(redis_->options());
    zone_ = absl::FixedTimeZone(8 * 3600);
    ASSERT_TRUE(absl::LoadTimeZone("Asia/Shanghai", &zone_));
    clock_.Set(At(2027, 3, 1));
    figures_ = std::make_unique<UsageFigures>(pool_.get(), &clock_, zone_, testing::TestPageTokens());
    // Reports from the aggregates wherever they apply (a fresh store: nothing to migrate).
    ASSERT_TRUE(figures_->MigrateAggregates().ok());
  }

  absl::Time At(int y, int m, int d, int h = 0) { return absl::FromCivil(absl::CivilHour(y, m, d, h), zone_); }
  labshare::type::v1::Interval Range(absl::CivilDay from, absl::CivilDay to) {
    labshare::type::v1::Interval r;
    *r.mutable_start_time() = ToProto(absl::FromCivil(from, zone_));
    *r.mutable_end_time() = ToProto(absl::FromCivil(to, zone_));
    return r;
  }
  template <typename Event>
  void Fold(const std::string& source, Event e) {
    e.mutable_header()->set_event_id(absl::StrCat("e", ++next_id_));
    StreamEvent s;
    s.payload = e.SerializeAsString();
    ASSERT_TRUE(figures_->Fold(source, s).ok());
  }
  void Org(const std::string& id, const std::string& display, iv::SizeClass size) {
    iv::InventoryEvent e;
    auto* o = e.mutable_organization_changed()->mutable_organization();
    o->set_name("organizations/" + id);
    o->set_display_name(display);
    o->set_size_class(size);
    Fold("inventory", e);
  }
  void Facility(const std::string& id, const std::string& display) {
    iv::InventoryEvent e;
    auto* f = e.mutable_facility_changed()->mutable_facility();
    f->set_name("facilities/" + id);
    f->set_display_name(display);
    Fold("inventory", e);
  }
  // (`updated`, when given: a later version, in effect from then.)
  void Instrument(const std::string& id, const std::string& display, const std::string& owner,
                  const std::string& facility, const std::string& category, int64_t value, absl::Time created,
                  std::optional<absl::Time> updated = std::nullopt) {
    iv::InventoryEvent e;
    auto* in = e.mutable_instrument_changed()->mutable_instrument();
    in->set_name("instruments/" + id);
    in->set_display_name(display);
    in->set_owner_organization("organizations/" + owner);
    in->set_facility("facilities/" + facility);
    in->set_category(category);
    if (value > 0) {
      in->mutable_original_value()->set_currency_code("CNY");
      in->mutable_original_value()->set_amount_minor(value);
    }
    in->set_daily_available_hours(24);
    *in->mutable_create_time() = ToProto(created);
    if (updated) *in->mutable_update_time() = ToProto(*updated);
    Fold("inventory", e);
  }
  // A confirmed booking used from start to end (one check-out).
  void Session(const std::string& instr, SharingMode mode, const std::string& org, const std::string& user,
               absl::Time start, absl::Time end) {
    bk::Booking b;
    b.set_name(absl::StrCat("bookings/b", next_id_));
    b.set_instrument("instruments/" + instr);
    b.set_mode(mode);
    b.set_payer_organization("organizations/" + org);
    b.set_user("users/" + user);
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(end);
    b.set_state(bk::Booking::CONFIRMED);
    bk::BookingEvent created;  // created straight into CONFIRMED
    *created.mutable_booking_created()->mutable_booking() = b;
    Fold("booking", created);
    if (mode == TECHNICAL_SERVICE) {  // its order, confirmed when the run starts
      bk::BookingEvent accepted;
      auto* o = accepted.mutable_service_order_quote_accepted()->mutable_service_order();
      o->set_instrument(b.instrument());
      o->set_client_organization(b.payer_organization());
      *o->mutable_quote_accept_time() = ToProto(start);
      Fold("booking", accepted);
    }
    *b.mutable_session()->mutable_start_time() = ToProto(start);
    *b.mutable_session()->mutable_end_time() = ToProto(end);
    bk::BookingEvent out;
    *out.mutable_booking_checked_out()->mutable_booking() = b;
    Fold("booking", out);
  }
  void Charge(const std::string& instr, const std::string& owner, SharingMode mode, const std::string& payer,
              int64_t income, int64_t subsidised, int64_t in_kind, absl::Time at) {
    bl::BillingEvent e;
    auto* f = e.mutable_charge_posted()->mutable_income();
    f->set_owner_organization("organizations/" + owner);
    f->set_instrument("instruments/" + instr);
    f->set_mode(mode);
    *f->mutable_effective_time() = ToProto(at);
    f->set_currency_code("CNY");
    if (!payer.empty()) {
      auto* s = f->add_shares();
      s->set_payer_organization("organizations/" + payer);
      s->set_share_bps(10000);
      s->mutable_service_income()->set_currency_code("CNY");
      s->mutable_service_income()->set_amount_minor(income);
      s->mutable_subsidised()->set_currency_code("CNY");
      s->mutable_subsidised()->set_amount_minor(subsidised);
    }
    f->mutable_in_kind()->set_currency_code("CNY");
    f->mutable_in_kind()->set_amount_minor(in_kind);
    Fold("billing", e);
  }

  void Year() {
    Org("own", "Owner University", iv::LARGE);
    Org("big", "Big Co", iv::LEADING);
    Org("sme", "Small Co", iv::SME);
    Org("start", "Start Co", iv::START_UP);
    Facility("f1", "Fab One");
    Facility("f2", "Bio Two");
    Instrument("i1", "EBL", "own", "f1", "lithography", 2000000000, At(2026, 1, 1));
    Instrument("i2", "TEM", "own", "f1", "electron-microscopy", 500000000, At(2026, 1, 1));
    Instrument("i3", "NMR", "big", "f2", "spectroscopy", 300000000, At(2026, 1, 1));
    Instrument("i4", "MS", "big", "f2", "spectroscopy", 0, At(2026, 12, 15));
    Session("i1", ON_SITE, "sme", "s1", At(2026, 1, 5), At(2026, 1, 17, 12));
    Session("i1", ON_SITE, "own", "o1", At(2026, 3, 1), At(2026, 3, 30, 4));
    Charge("i1", "own", ON_SITE, "sme", 30000000, 10000000, 0, At(2026, 1, 17, 12));
    Session("i2", ON_SITE, "big", "b1", At(2026, 2, 1), At(2026, 2, 5, 4));
    Session("i2", ON_SITE, "own", "o1", At(2026, 6, 1), At(2026, 6, 5, 4));
    Charge("i2", "own", ON_SITE, "big", 5000000, 0, 0, At(2026, 2, 5, 4));
    Session("i3", ON_SITE, "big", "b2", At(2026, 4, 1), At(2026, 5, 8, 12));
    Session("i3", TECHNICAL_SERVICE, "start", "t1", At(2026, 7, 1), At(2026, 7, 5, 4));
    Charge("i3", "big", TECHNICAL_SERVICE, "start", 2000000, 0, 0, At(2026, 7, 5, 4));
    Charge("i3", "big", JOINT_RESEARCH, "", 0, 0, 1000000, At(2026, 7, 5, 4));
  }

  testing::RedisServer* redis_ = nullptr;
  std::unique_ptr<RedisPool> pool_;
  FakeClock clock_;
  absl::TimeZone zone_;
  std::unique_ptr<UsageFigures> figures_;
  int next_id_ = 0;
  Principal auditor_{"audrey", "", {Role::kAuditor}, absl::InfiniteFuture()};
  Principal admin_{"adam", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
};

// ================================================================ thresholds

TEST_F(UsageReportsTest, ThresholdsDefaultsUpdateEtagIdempotencyAndEvent) {
  v1::GetThresholdsRequest get;
  get.set_name("thresholds");
  auto t = figures_->GetThresholds(auditor_, get);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->bands_size(), 1);
  EXPECT_EQ(t->bands(0).min_original_value().amount_minor(), 0);
  EXPECT_EQ(t->bands(0).min_original_value().currency_code(), "CNY");
  EXPECT_EQ(t->bands(0).idle_effective_seconds_per_year(), 2880000);  // 800 h
  EXPECT_EQ(t->bands(0).min_external_seconds_per_year(), 0);
  EXPECT_EQ(t->bands(0).min_sharing_rate_bp(), 1600);
  EXPECT_EQ(t->minimum_assessed_days(), 30);
  EXPECT_EQ(t->default_lease_counted_hours_per_day(), 8);
  EXPECT_EQ(t->etag(), "1");
  EXPECT_EQ(FromProto(t->create_time()), clock_.Now());
  get.set_name("thresholds/x");
  EXPECT_EQ(ErrorReason(figures_->GetThresholds(auditor_, get).status()), "INVALID_NAME");

  // Second band at 10,000,000 CNY: 964 external hours, 34 %.
  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  *u.mutable_thresholds()->add_bands() = t->bands(0);
  auto* b2 = u.mutable_thresholds()->add_bands();
  b2->mutable_min_original_value()->set_currency_code("CNY");
  b2->mutable_min_original_value()->set_amount_minor(1000000000);
  b2->set_idle_effective_seconds_per_year(2880000);
  b2->set_min_external_seconds_per_year(3470400);
  b2->set_min_sharing_rate_bp(3400);
  u.mutable_thresholds()->set_minimum_assessed_days(99);  // not in the mask: ignored
  u.mutable_update_mask()->add_paths("bands");
  u.set_request_id("r1");
  u.mutable_thresholds()->set_etag("1");
  clock_.Set(At(2027, 3, 2));
  auto v2 = figures_->UpdateThresholds(admin_, u);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(v2->etag(), "2");
  EXPECT_EQ(v2->bands_size(), 2);
  EXPECT_EQ(v2->minimum_assessed_days(), 30);
  EXPECT_EQ(v2->updated_by(), "users/adam");
  EXPECT_EQ(FromProto(v2->update_time()), At(2027, 3, 2));
  EXPECT_EQ(FromProto(v2->create_time()), At(2027, 3, 1));
  // The same request again: the same answer, no second event.
  auto again = figures_->UpdateThresholds(admin_, u);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->SerializeAsString(), v2->SerializeAsString());
  // Another administrator's same request (types.proto: a request_id belongs
  // to its caller): REQUEST_ID_REUSED, never adam's answer, no event.
  const Principal other_admin{"ada", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(figures_->UpdateThresholds(other_admin, u).status()), "REQUEST_ID_REUSED");
  // One ThresholdsChanged on {usage}:outbox, with before and after.
  auto outbox = pool_->Command({"XRANGE", "{usage}:outbox", "-", "+"});
  ASSERT_TRUE(outbox.ok());
  ASSERT_EQ(outbox->elements.size(), 1u);
  const auto& fields = outbox->elements[0].elements[1].elements;
  ASSERT_EQ(fields.size(), 4u);
  EXPECT_EQ(fields[0].str, "type");
  EXPECT_EQ(fields[1].str, "labshare.usage.v1.UsageEvent");
  EXPECT_EQ(fields[2].str, "payload");
  v1::UsageEvent ev;
  ASSERT_TRUE(ev.ParseFromString(fields[3].str));
  EXPECT_EQ(ev.thresholds_changed().previous().etag(), "1");
  EXPECT_EQ(ev.thresholds_changed().current().etag(), "2");
  EXPECT_EQ(ev.thresholds_changed().update_mask().paths_size(), 1);
  EXPECT_EQ(ev.header().request_id(), "r1");
  EXPECT_EQ(ev.header().actor(), "users/adam");
  // Same request id, other content.
  u.mutable_thresholds()->mutable_bands(1)->set_min_sharing_rate_bp(3500);
  EXPECT_EQ(ErrorReason(figures_->UpdateThresholds(admin_, u).status()), "REQUEST_ID_REUSED");
  // Stale etag.
  u.set_request_id("r2");
  EXPECT_EQ(ErrorReason(figures_->UpdateThresholds(admin_, u).status()), "ETAG_MISMATCH");
  // Validation, each on its own.
  auto invalid = [&](const std::function<void(v1::UpdateThresholdsRequest*)>& change) {
    v1::UpdateThresholdsRequest bad = u;
    bad.mutable_thresholds()->clear_etag();
    bad.clear_request_id();
    change(&bad);
    return ErrorReason(figures_->UpdateThresholds(admin_, bad).status());
  };
  EXPECT_EQ(invalid([](auto* r) { r->mutable_thresholds()->clear_bands(); }), "INVALID_FIELD");
  EXPECT_EQ(invalid([](auto* r) {
              r->mutable_thresholds()->mutable_bands(0)->mutable_min_original_value()->set_amount_minor(1);
            }),
            "INVALID_FIELD");  // first band not at 0
  EXPECT_EQ(invalid([](auto* r) {
              r->mutable_thresholds()->mutable_bands(1)->mutable_min_original_value()->set_amount_minor(0);
            }),
            "INVALID_FIELD");  // not strictly ascending
  EXPECT_EQ(invalid([](auto* r) { r->mutable_thresholds()->mutable_bands(1)->set_min_sharing_rate_bp(10001); }),
            "INVALID_FIELD");
  EXPECT_EQ(invalid([](auto* r) { r->mutable_thresholds()->mutable_bands(1)->set_idle_effective_seconds_per_year(-1); }),
            "INVALID_FIELD");
  EXPECT_EQ(invalid([](auto* r) {
              r->mutable_thresholds()->mutable_bands(1)->mutable_min_original_value()->set_currency_code("USD");
            }),
            "CURRENCY_MISMATCH");
  EXPECT_EQ(invalid([](auto* r) {
              r->mutable_update_mask()->set_paths(0, "default_lease_counted_hours_per_day");
              r->mutable_thresholds()->set_default_lease_counted_hours_per_day(25);
            }),
            "INVALID_FIELD");
  EXPECT_EQ(invalid([](auto* r) { r->mutable_update_mask()->set_paths(0, "etag"); }), "INVALID_UPDATE_MASK");
  EXPECT_EQ(invalid([](auto* r) { r->mutable_thresholds()->set_name("x"); }), "INVALID_NAME");
  // Nothing of the above was stored or published.
  get.set_name("thresholds");
  auto now = figures_->GetThresholds(auditor_, get);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->etag(), "2");
  EXPECT_EQ(*pool_->Command({"XLEN", "{usage}:outbox"})->AsInteger(), 1);
  // A band value without a currency code is taken in the reporting currency
  // and stored with it (not CURRENCY_MISMATCH).
  v1::UpdateThresholdsRequest plain = u;
  plain.set_request_id("r3");
  plain.mutable_thresholds()->clear_etag();
  for (auto& b : *plain.mutable_thresholds()->mutable_bands()) b.mutable_min_original_value()->clear_currency_code();
  auto v3 = figures_->UpdateThresholds(admin_, plain);
  ASSERT_TRUE(v3.ok()) << v3.status();
  ASSERT_EQ(v3->bands_size(), 2);
  for (const auto& b : v3->bands()) EXPECT_EQ(b.min_original_value().currency_code(), "CNY");
  EXPECT_EQ(v3->bands(1).min_original_value().amount_minor(), 1000000000);
  now = figures_->GetThresholds(auditor_, get);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->bands(1).min_original_value().currency_code(), "CNY");
}

// Lease days aggregated after a change of the default count the new hours.
TEST_F(UsageReportsTest, DefaultLeaseHoursComeFromTheThresholds) {
  Instrument("afm", "AFM", "own", "f1", "microscopy", 100000000, At(2026, 1, 1));
  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  u.mutable_thresholds()->set_default_lease_counted_hours_per_day(6);
  u.mutable_update_mask()->add_paths("default_lease_counted_hours_per_day");
  ASSERT_TRUE(figures_->UpdateThresholds(admin_, u).ok());
  // Out on lease Aug 1 00:00 .. Aug 3 00:00: 2 days x 6 h = 43200 s.
  Session("afm", LEASE, "sme", "s1", At(2026, 8, 1), At(2026, 8, 3));
  v1::GetUsageFiguresRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 8, 1), absl::CivilDay(2026, 9, 1));
  auto f = figures_->GetUsageFigures(auditor_, r);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->figures().effective_seconds(), 43200);
}

// ================================================================ assessments

TEST_F(UsageReportsTest, IdleAndUnderSharedInstruments) {
  Year();
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto out = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(out.ok()) << out.status();
  // Only i2: 720,000 s < 2,880,000 s. i4 is in service 17 days < 30: not assessed.
  ASSERT_EQ(out->instruments_size(), 1);
  EXPECT_EQ(out->total_size(), 1);
  const auto& i2 = out->instruments(0);
  EXPECT_EQ(i2.instrument(), "instruments/i2");
  EXPECT_EQ(i2.instrument_display_name(), "TEM");
  EXPECT_EQ(i2.owner_organization_display_name(), "Owner University");
  EXPECT_EQ(i2.facility_display_name(), "Fab One");
  EXPECT_EQ(i2.figures().effective_seconds(), 720000);
  EXPECT_EQ(i2.figures().calendar_seconds(), kYear);
  EXPECT_TRUE(i2.assessed());
  EXPECT_TRUE(i2.idle());
  EXPECT_FALSE(i2.under_shared());  // 360,000 / 720,000 = 5000 bp
  EXPECT_EQ(i2.idle_threshold_seconds(), 2880000);
  EXPECT_EQ(i2.min_sharing_rate_bp(), 1600);
  EXPECT_EQ(out->thresholds().etag(), "1");

  // Override 4,000,000 s/year: i2 (720,000), then i1 and i3 (3,600,000 each)
  // by name; two per page.
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(4000000);
  idle.set_page_size(2);
  out = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->instruments_size(), 2);
  EXPECT_EQ(out->total_size(), 3);
  EXPECT_EQ(out->instruments(0).instrument(), "instruments/i2");
  EXPECT_EQ(out->instruments(1).instrument(), "instruments/i1");
  EXPECT_EQ(out->instruments(1).idle_threshold_seconds(), 4000000);
  ASSERT_FALSE(out->next_page_token().empty());
  idle.set_page_token(out->next_page_token());
  out = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->instruments_size(), 1);
  EXPECT_EQ(out->instruments(0).instrument(), "instruments/i3");
  EXPECT_TRUE(out->next_page_token().empty());
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(-1);
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(auditor_, idle).status()), "INVALID_FIELD");

  // January and February only (59 days = 5,097,600 s): the threshold is
  // round_half_up(2,880,000 x 5,097,600 / 31,536,000) = 465,534 (465,534.25).
  // i3 had no use (0), i2 had 360,000; i1 had 1,080,000 (not idle).
  v1::ListIdleInstrumentsRequest two;
  *two.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 3, 1));
  out = figures_->ListIdleInstruments(auditor_, two);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->instruments_size(), 2);
  EXPECT_EQ(out->instruments(0).instrument(), "instruments/i3");
  EXPECT_EQ(out->instruments(1).instrument(), "instruments/i2");
  EXPECT_EQ(out->instruments(1).idle_threshold_seconds(), 465534);
  EXPECT_EQ(out->instruments(1).figures().calendar_seconds(), 5097600);

  // Under-shared: i3 (360,000 / 3,600,000 = 1000 bp < 1600).
  v1::ListUnderSharedInstrumentsRequest us;
  *us.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto under = figures_->ListUnderSharedInstruments(auditor_, us);
  ASSERT_TRUE(under.ok()) << under.status();
  ASSERT_EQ(under->instruments_size(), 1);
  EXPECT_EQ(under->instruments(0).instrument(), "instruments/i3");
  EXPECT_EQ(under->instruments(0).figures().sharing_rate().basis_points(), 1000);
  // A second band from 1,000,000,000 minor with 964 h external and 3400 bp:
  // i1 (2,000,000,000) falls in it: 1,080,000 s external < 3,470,400 and
  // 3000 bp < 3400. Order: i3 (1000 bp), i1 (3000 bp).
  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  auto* b1 = u.mutable_thresholds()->add_bands();
  b1->set_idle_effective_seconds_per_year(2880000);
  b1->set_min_sharing_rate_bp(1600);
  auto* b2 = u.mutable_thresholds()->add_bands();
  b2->mutable_min_original_value()->set_amount_minor(1000000000);
  b2->set_idle_effective_seconds_per_year(2880000);
  b2->set_min_external_seconds_per_year(3470400);
  b2->set_min_sharing_rate_bp(3400);
  u.mutable_update_mask()->add_paths("bands");
  ASSERT_TRUE(figures_->UpdateThresholds(admin_, u).ok());
  under = figures_->ListUnderSharedInstruments(auditor_, us);
  ASSERT_TRUE(under.ok());
  ASSERT_EQ(under->instruments_size(), 2);
  EXPECT_EQ(under->instruments(0).instrument(), "instruments/i3");
  EXPECT_EQ(under->instruments(0).band_index(), 0);
  EXPECT_EQ(under->instruments(1).instrument(), "instruments/i1");
  EXPECT_EQ(under->instruments(1).band_index(), 1);
  EXPECT_EQ(under->instruments(1).min_external_threshold_seconds(), 3470400);
  EXPECT_EQ(under->instruments(1).min_sharing_rate_bp(), 3400);
  // Override the rate to 0 % and the external minimum off: nobody.
  us.mutable_threshold_override()->set_min_sharing_rate_bp(0);
  us.mutable_threshold_override()->set_min_external_seconds_per_year(0);
  under = figures_->ListUnderSharedInstruments(auditor_, us);
  ASSERT_TRUE(under.ok());
  EXPECT_EQ(under->total_size(), 0);
  us.mutable_threshold_override()->set_min_sharing_rate_bp(10001);
  EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(auditor_, us).status()), "INVALID_FIELD");

  // Owners see their own; others must name theirs.
  Principal staff{"sam", "big", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  v1::ListIdleInstrumentsRequest mine = two;
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(staff, mine).status()), "ORGANIZATION_SCOPE");
  mine.mutable_filter()->add_owner_organizations("organizations/big");
  out = figures_->ListIdleInstruments(staff, mine);
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->instruments_size(), 1);
  EXPECT_EQ(out->instruments(0).instrument(), "instruments/i3");
}

// types.proto: a page token is bound to every field of its request, range
// unset included. The default range (365 days ending today) is the first
// page's on every page: page 2 read after midnight ranks the same window and
// answers the same response.range (it used to take the new day's).
TEST_F(UsageReportsTest, AnUnsetRangeIsTheFirstPagesOnEveryPage) {
  Year();
  clock_.Set(At(2027, 1, 1, 12));  // the default: [2026-01-01, 2027-01-01)
  const auto first_day = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  const auto next_day = Range(absl::CivilDay(2026, 1, 2), absl::CivilDay(2027, 1, 2));
  auto names = [](const auto& resp) {
    std::vector<std::string> out;
    for (const auto& a : resp.instruments()) out.push_back(a.instrument());
    return out;
  };

  v1::ListIdleInstrumentsRequest idle;
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(4000000);
  auto whole = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_EQ(names(*whole), (std::vector<std::string>{"instruments/i2", "instruments/i1", "instruments/i3"}));
  idle.set_page_size(2);
  auto page1 = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(page1.ok()) << page1.status();
  EXPECT_EQ(page1->range().SerializeAsString(), first_day.SerializeAsString());
  ASSERT_FALSE(page1->next_page_token().empty());
  clock_.Advance(absl::Hours(24));  // past midnight: today's default is another year
  idle.set_page_token(page1->next_page_token());
  auto page2 = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(page2.ok()) << page2.status();
  EXPECT_EQ(page2->range().SerializeAsString(), first_day.SerializeAsString());
  EXPECT_EQ(names(*page2), std::vector<std::string>{"instruments/i3"});
  EXPECT_EQ(page2->total_size(), 3);
  // A new listing starts from the new day.
  idle.clear_page_token();
  auto fresh = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->range().SerializeAsString(), next_day.SerializeAsString());

  clock_.Set(At(2027, 1, 1, 12));
  v1::ListUnderSharedInstrumentsRequest under;
  under.mutable_threshold_override()->set_min_sharing_rate_bp(10000);
  under.set_page_size(1);
  auto u1 = figures_->ListUnderSharedInstruments(auditor_, under);
  ASSERT_TRUE(u1.ok()) << u1.status();
  EXPECT_EQ(u1->range().SerializeAsString(), first_day.SerializeAsString());
  ASSERT_FALSE(u1->next_page_token().empty());
  clock_.Advance(absl::Hours(24));
  under.set_page_token(u1->next_page_token());
  auto u2 = figures_->ListUnderSharedInstruments(auditor_, under);
  ASSERT_TRUE(u2.ok()) << u2.status();
  EXPECT_EQ(u2->range().SerializeAsString(), first_day.SerializeAsString());
  EXPECT_EQ(u2->total_size(), u1->total_size());
  ASSERT_EQ(u2->instruments_size(), 1);
  EXPECT_NE(u2->instruments(0).instrument(), u1->instruments(0).instrument());
}

// "Ordered by sharing rate ascending, then instrument name": the exact
// rates, not their rounded basis points. ia shares 10,002 of 30,000 s
// (3334 bp exactly), ib 10,001 of 30,000 s (3333.67, also 3334 bp): ib
// first, then ia, one per page.
TEST_F(UsageReportsTest, UnderSharedOrderComparesExactRates) {
  Instrument("ia", "A", "own", "f1", "sem", 100000000, At(2026, 1, 1));
  Instrument("ib", "B", "own", "f1", "sem", 100000000, At(2026, 1, 1));
  const absl::Time t = At(2026, 3, 2);
  Session("ia", ON_SITE, "big", "b1", t, t + absl::Seconds(10002));
  Session("ia", ON_SITE, "own", "o1", t + absl::Hours(12), t + absl::Hours(12) + absl::Seconds(19998));
  Session("ib", ON_SITE, "big", "b1", t, t + absl::Seconds(10001));
  Session("ib", ON_SITE, "own", "o1", t + absl::Hours(12), t + absl::Hours(12) + absl::Seconds(19999));
  v1::ListUnderSharedInstrumentsRequest us;
  *us.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  us.mutable_threshold_override()->set_min_sharing_rate_bp(5000);
  us.set_page_size(1);
  std::vector<std::string> order;
  for (int page = 0; page < 3; ++page) {
    auto got = figures_->ListUnderSharedInstruments(auditor_, us);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->total_size(), 2);
    for (const auto& a : got->instruments()) {
      order.push_back(a.instrument());
      EXPECT_EQ(a.figures().sharing_rate().basis_points(), 3334);
      EXPECT_EQ(a.figures().sharing_rate().denominator(), 30000);
    }
    if (got->next_page_token().empty()) break;
    us.set_page_token(got->next_page_token());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"instruments/ib", "instruments/ia"}));
  // A token issued before (rounded basis points and name): refused, start again.
  us.set_page_token(testing::TestPageTokens().Make(us, auditor_, "00000000000000003334\x1finstruments/ia"));
  EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(auditor_, us).status()), "INVALID_PAGE_TOKEN");
}

// Membership compares the rounded basis points (InstrumentAssessment.
// under_shared; ListUnderSharedInstruments lists exactly those): ia shares
// 3,199 of 20,000 s in March (1599.5 bp, rounded to 1600), ib 3,198 (1599
// bp). Against the default minimum of 1600 bp only ib is under-shared, in
// its assessment and in the list alike.
TEST_F(UsageReportsTest, UnderSharedComparesTheRoundedBasisPoints) {
  Instrument("ia", "A", "own", "f1", "sem", 100000000, At(2026, 1, 1));
  Instrument("ib", "B", "own", "f1", "sem", 100000000, At(2026, 1, 1));
  const absl::Time t = At(2026, 3, 2);
  Session("ia", ON_SITE, "big", "b1", t, t + absl::Seconds(3199));
  Session("ia", ON_SITE, "own", "o1", t + absl::Hours(12), t + absl::Hours(12) + absl::Seconds(16801));
  Session("ib", ON_SITE, "big", "b1", t, t + absl::Seconds(3198));
  Session("ib", ON_SITE, "own", "o1", t + absl::Hours(12), t + absl::Hours(12) + absl::Seconds(16802));
  v1::ListUnderSharedInstrumentsRequest under;
  *under.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  auto listed = figures_->ListUnderSharedInstruments(auditor_, under);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->total_size(), 1);
  ASSERT_EQ(listed->instruments_size(), 1);
  EXPECT_EQ(listed->instruments(0).instrument(), "instruments/ib");
  EXPECT_TRUE(listed->instruments(0).under_shared());
  // Both are idle (20,000 s in March): their assessments, from the idle list.
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = under.range();
  auto assessed = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(assessed.ok()) << assessed.status();
  ASSERT_EQ(assessed->instruments_size(), 2);
  for (const auto& a : assessed->instruments()) {
    SCOPED_TRACE(a.instrument());
    const bool ia = a.instrument() == "instruments/ia";
    EXPECT_TRUE(a.assessed());
    EXPECT_EQ(a.figures().effective_seconds(), 20000);
    EXPECT_EQ(a.figures().sharing_rate().numerator(), ia ? 3199 : 3198);
    EXPECT_EQ(a.figures().sharing_rate().basis_points(), ia ? 1600 : 1599);
    EXPECT_EQ(a.min_sharing_rate_bp(), 1600);
    EXPECT_EQ(a.under_shared(), !ia);
  }
}

// ================================================================ matrix

// InstrumentAssessment.instrument_display_name: "as last seen in inventory
// events" (like the owner's and facility's names), also for a range before a
// rename; the owner, facility and category stay the range's.
TEST_F(UsageReportsTest, AssessmentsNameTheInstrumentAsLastSeen) {
  Year();
  Instrument("i2", "TEM Krios G4", "big", "f2", "electron-microscopy", 500000000, At(2026, 1, 1), At(2027, 2, 1));

  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto out = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->instruments_size(), 1);
  const auto& i2 = out->instruments(0);
  EXPECT_EQ(i2.instrument(), "instruments/i2");
  EXPECT_EQ(i2.instrument_display_name(), "TEM Krios G4");
  EXPECT_EQ(i2.owner_organization(), "organizations/own");  // in 2026
  EXPECT_EQ(i2.owner_organization_display_name(), "Owner University");
  EXPECT_EQ(i2.facility_display_name(), "Fab One");

  // The annual report of 2026 names it so too.
  v1::GetAnnualReportRequest report;
  report.set_year(2026);
  auto annual = figures_->GetAnnualReport(auditor_, report);
  ASSERT_TRUE(annual.ok()) << annual.status();
  int seen = 0;
  for (const auto& a : annual->instruments()) {
    if (a.instrument() != "instruments/i2") continue;
    ++seen;
    EXPECT_EQ(a.instrument_display_name(), "TEM Krios G4");
    EXPECT_EQ(a.owner_organization(), "organizations/own");
  }
  EXPECT_EQ(seen, 1);
}

// An override is refused for what UpdateThresholds refuses in a band (a
// negative value, a sharing rate above 10000 basis points), by both lists
// (usage.proto: ListIdleInstruments' INVALID_FIELD, ListUnderSharedInstruments
// "as ListIdleInstruments"): the idle list's assessments carry under_shared
// too, judged by that rate.
TEST_F(UsageReportsTest, BothListsBoundTheRateOverrideAsTheThresholdsDo) {
  Year();
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  v1::ListUnderSharedInstrumentsRequest under;
  *under.mutable_range() = idle.range();
  for (int32_t bp : {10001, 12000, -1}) {
    idle.mutable_threshold_override()->set_min_sharing_rate_bp(bp);
    auto refused_idle = figures_->ListIdleInstruments(auditor_, idle);
    EXPECT_EQ(refused_idle.status().code(), absl::StatusCode::kInvalidArgument) << bp;
    EXPECT_EQ(ErrorReason(refused_idle.status()), "INVALID_FIELD") << bp;
    under.mutable_threshold_override()->set_min_sharing_rate_bp(bp);
    auto refused_under = figures_->ListUnderSharedInstruments(auditor_, under);
    EXPECT_EQ(refused_under.status().code(), absl::StatusCode::kInvalidArgument) << bp;
    EXPECT_EQ(ErrorReason(refused_under.status()), "INVALID_FIELD") << bp;
  }
  for (auto set : {+[](v1::ThresholdOverride* o) { o->set_idle_effective_seconds_per_year(-1); },
                   +[](v1::ThresholdOverride* o) { o->set_min_external_seconds_per_year(-1); }}) {
    idle.clear_threshold_override();
    set(idle.mutable_threshold_override());
    EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(auditor_, idle).status()), "INVALID_FIELD");
    *under.mutable_threshold_override() = idle.threshold_override();
    EXPECT_EQ(ErrorReason(figures_->ListUnderSharedInstruments(auditor_, under).status()), "INVALID_FIELD");
  }
  // 10000 itself is a rate a band may hold.
  idle.clear_threshold_override();
  idle.mutable_threshold_override()->set_min_sharing_rate_bp(10000);
  auto listed = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->instruments_size(), 1);
  EXPECT_EQ(listed->instruments(0).instrument(), "instruments/i2");
  EXPECT_EQ(listed->instruments(0).min_sharing_rate_bp(), 10000);
}

// A threshold near INT64_MAX a year, prorated over a range longer than a
// year, stays at INT64_MAX: every assessed instrument is idle (it wrapped to
// a negative threshold, and none was).
TEST_F(UsageReportsTest, AHugeIdleOverrideOverMoreThanAYearSaturates) {
  Year();
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 3, 1));  // 424 days
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(std::numeric_limits<int64_t>::max());
  auto out = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->instruments_size(), 4);
  for (const auto& a : out->instruments()) {
    EXPECT_TRUE(a.assessed()) << a.instrument();
    EXPECT_TRUE(a.idle()) << a.instrument();
    // i4, in service 76 days of the range: round_half_up(INT64_MAX x
    // 6,566,400 / 31,536,000) fits.
    EXPECT_EQ(a.idle_threshold_seconds(), a.instrument() == "instruments/i4" ? int64_t{1920482944660172497}
                                                                              : std::numeric_limits<int64_t>::max())
        << a.instrument();
  }
  EXPECT_EQ(out->instruments(2).instrument(), "instruments/i1");
  EXPECT_EQ(out->instruments(2).figures().calendar_seconds(), 424 * 86400);
}

// A page token is good only for the list, the filters and the caller it was
// issued to, and only as issued; a negative page size is refused.
TEST_F(UsageReportsTest, PageTokenRefusedOnAnotherListForgedOrFromAnotherCaller) {
  Year();
  v1::ListIdleInstrumentsRequest idle;
  *idle.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  idle.mutable_threshold_override()->set_idle_effective_seconds_per_year(4000000);
  idle.set_page_size(1);
  auto first = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token().empty());
  auto expect_refused = [](const absl::Status& s) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ErrorReason(s), "INVALID_PAGE_TOKEN");
    EXPECT_TRUE(absl::StrContains(s.message(), "without page_token")) << s.message();
  };
  // The under-shared list has the very same fields.
  v1::ListUnderSharedInstrumentsRequest under;
  *under.mutable_range() = idle.range();
  *under.mutable_threshold_override() = idle.threshold_override();
  under.set_page_size(1);
  under.set_page_token(first->next_page_token());
  expect_refused(figures_->ListUnderSharedInstruments(auditor_, under).status());
  // Edited by the client, or made up.
  idle.set_page_token(testing::ForgePageToken(first->next_page_token()));
  ASSERT_FALSE(idle.page_token().empty());
  expect_refused(figures_->ListIdleInstruments(auditor_, idle).status());
  idle.set_page_token("bm90LWEtdG9rZW4");
  expect_refused(figures_->ListIdleInstruments(auditor_, idle).status());
  // Another caller presenting the auditor's token.
  idle.set_page_token(first->next_page_token());
  expect_refused(figures_->ListIdleInstruments(admin_, idle).status());
  auto second = figures_->ListIdleInstruments(auditor_, idle);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->instruments_size(), 1);
  EXPECT_NE(second->instruments(0).instrument(), first->instruments(0).instrument());

  idle.clear_page_token();
  idle.set_page_size(-1);
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(auditor_, idle).status()), "INVALID_FIELD");
}

TEST_F(UsageReportsTest, SharingMatrix) {
  Year();
  v1::GetSharingMatrixRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto m = figures_->GetSharingMatrix(auditor_, r);
  ASSERT_TRUE(m.ok()) << m.status();
  // (big, start), (own, big), (own, sme); the diagonal left out.
  ASSERT_EQ(m->cells_size(), 3);
  EXPECT_EQ(m->cells(0).owner_organization(), "organizations/big");
  EXPECT_EQ(m->cells(0).user_organization(), "organizations/start");
  EXPECT_EQ(m->cells(0).effective_seconds(), 360000);
  EXPECT_EQ(m->cells(0).charged().amount_minor(), 2000000);
  EXPECT_EQ(m->cells(1).user_organization(), "organizations/big");
  EXPECT_EQ(m->cells(1).effective_seconds(), 360000);
  EXPECT_EQ(m->cells(1).charged().amount_minor(), 5000000);
  const auto& sme = m->cells(2);
  EXPECT_EQ(sme.owner_organization(), "organizations/own");
  EXPECT_EQ(sme.user_organization(), "organizations/sme");
  EXPECT_EQ(sme.effective_seconds(), 1080000);
  EXPECT_EQ(sme.bookings(), 1);
  EXPECT_EQ(sme.charged().amount_minor(), 30000000);
  EXPECT_EQ(sme.subsidized().amount_minor(), 10000000);
  EXPECT_EQ(sme.users_served(), 1);
  EXPECT_EQ(sme.mode(), labshare::type::v1::SHARING_MODE_UNSPECIFIED);
  // Owner totals: big 360,000 s / 2,000,000; own 1,440,000 s / 35,000,000.
  ASSERT_EQ(m->owner_totals_size(), 2);
  EXPECT_EQ(m->owner_totals(1).organization(), "organizations/own");
  EXPECT_EQ(m->owner_totals(1).effective_seconds(), 1440000);
  EXPECT_EQ(m->owner_totals(1).charged().amount_minor(), 35000000);
  // User totals: big, sme, start.
  ASSERT_EQ(m->user_totals_size(), 3);
  EXPECT_EQ(m->user_totals(1).organization(), "organizations/sme");
  EXPECT_EQ(m->user_totals(1).charged().amount_minor(), 30000000);

  // With the diagonal: (big, big) 900 h = 3,240,000 s, in-kind not charged;
  // (own, own) 800 h = 2,880,000 s over 2 bookings.
  r.set_include_internal(true);
  r.set_page_size(2);
  m = figures_->GetSharingMatrix(auditor_, r);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->cells_size(), 2);
  EXPECT_EQ(m->cells(0).user_organization(), "organizations/big");
  EXPECT_EQ(m->cells(0).effective_seconds(), 3240000);
  EXPECT_EQ(m->cells(0).charged().amount_minor(), 0);
  EXPECT_EQ(m->owner_totals(0).effective_seconds(), 3600000);
  r.set_page_token(m->next_page_token());
  m = figures_->GetSharingMatrix(auditor_, r);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->cells_size(), 2);  // (own, big), (own, own)
  EXPECT_EQ(m->cells(1).user_organization(), "organizations/own");
  EXPECT_EQ(m->cells(1).effective_seconds(), 2880000);
  EXPECT_EQ(m->cells(1).bookings(), 2);
  EXPECT_EQ(m->owner_totals_size(), 0);  // first page only
  r.set_page_token(m->next_page_token());
  m = figures_->GetSharingMatrix(auditor_, r);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->cells_size(), 1);
  EXPECT_TRUE(m->next_page_token().empty());

  // By mode: i3's technical service to start.
  v1::GetSharingMatrixRequest modes;
  *modes.mutable_range() = r.range();
  modes.set_split_by_mode(true);
  modes.mutable_filter()->add_owner_organizations("organizations/big");
  m = figures_->GetSharingMatrix(auditor_, modes);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->cells_size(), 1);
  EXPECT_EQ(m->cells(0).mode(), TECHNICAL_SERVICE);

  // A billing admin sees its own column; staff only its own row.
  Principal billing{"bea", "sme", {Role::kMemberBillingAdmin}, absl::InfiniteFuture()};
  v1::GetSharingMatrixRequest col;
  *col.mutable_range() = r.range();
  EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(billing, col).status()), "ORGANIZATION_SCOPE");
  col.mutable_filter()->add_user_organizations("organizations/sme");
  m = figures_->GetSharingMatrix(billing, col);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->cells_size(), 1);
  EXPECT_EQ(m->cells(0).charged().amount_minor(), 30000000);
  Principal staff{"sam", "sme", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(staff, col).status()), "ORGANIZATION_SCOPE");
}

// ================================================================ annual report

// A booking is counted once, whether it was created CONFIRMED (one
// BookingCreated) or approved later (BookingCreated, then BookingConfirmed
// via approval); the BookingConfirmed that older streams carry after a
// CONFIRMED BookingCreated is not counted again; a booking never confirmed
// is not counted.
TEST_F(UsageReportsTest, BookingsAreCountedOnceWhicheverWayTheyWereConfirmed) {
  Org("own", "Owner University", iv::LARGE);
  Facility("f1", "Fab One");
  Instrument("i1", "EBL", "own", "f1", "lithography", 0, At(2026, 1, 1));
  auto booking = [&](const std::string& id, bk::Booking::State state) {
    bk::Booking b;
    b.set_name("bookings/" + id);
    b.set_instrument("instruments/i1");
    b.set_mode(ON_SITE);
    b.set_payer_organization("organizations/own");
    b.set_user("users/o1");
    *b.mutable_reserved_interval()->mutable_start_time() = ToProto(At(2026, 3, 2));
    *b.mutable_reserved_interval()->mutable_end_time() = ToProto(At(2026, 3, 2, 2));
    b.set_state(state);
    return b;
  };
  auto created = [&](const bk::Booking& b) {
    bk::BookingEvent e;
    *e.mutable_booking_created()->mutable_booking() = b;
    Fold("booking", e);
  };
  auto confirmed = [&](const bk::Booking& b, bool via_approval) {
    bk::BookingEvent e;
    *e.mutable_booking_confirmed()->mutable_booking() = b;
    e.mutable_booking_confirmed()->set_via_approval(via_approval);
    Fold("booking", e);
  };
  const bk::Booking direct = booking("direct", bk::Booking::CONFIRMED);
  created(direct);
  confirmed(direct, false);  // as older streams have it
  created(booking("approved", bk::Booking::PENDING_APPROVAL));
  confirmed(booking("approved", bk::Booking::CONFIRMED), true);
  created(booking("pending", bk::Booking::PENDING_APPROVAL));

  v1::GetUsageFiguresRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 3, 1), absl::CivilDay(2026, 4, 1));
  r.mutable_filter()->add_instruments("instruments/i1");
  auto out = figures_->GetUsageFigures(auditor_, r);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->figures().bookings(), 2);
}

TEST_F(UsageReportsTest, AnnualReportAndItsCsv) {
  Year();
  v1::GetAnnualReportRequest r;
  r.set_year(2026);
  r.set_page_size(3);
  auto rep = figures_->GetAnnualReport(auditor_, r);
  ASSERT_TRUE(rep.ok()) << rep.status();
  const auto& p = rep->platform_figures();
  // 3,600,000 + 720,000 + 3,600,000.
  EXPECT_EQ(p.effective_seconds(), 7920000);
  // 1,080,000 (sme on i1) + 360,000 (big on i2) + 360,000 (start on i3).
  EXPECT_EQ(p.external_seconds(), 1800000);
  EXPECT_EQ(p.sharing_rate().basis_points(), 2273);  // 22.7272 %
  EXPECT_EQ(p.calendar_seconds(), 3 * kYear + 17 * 86400);
  EXPECT_EQ(p.service_income().amount_minor(), 37000000);
  EXPECT_EQ(p.subsidized_income().amount_minor(), 10000000);
  EXPECT_EQ(p.in_kind_contribution().amount_minor(), 1000000);
  EXPECT_EQ(p.original_value().amount_minor(), 2800000000);
  EXPECT_EQ(p.revenue_rate().basis_points(), 132);  // 37e6 / 2.8e9 = 132.14 bp
  EXPECT_EQ(p.instrument_count(), 4);
  EXPECT_EQ(p.instruments_without_value(), 1);
  EXPECT_EQ(p.bookings(), 6);
  EXPECT_EQ(p.users_served(), 5);           // s1, o1, b1, b2, t1
  EXPECT_EQ(p.external_users_served(), 3);  // s1, b1, t1
  EXPECT_EQ(p.organizations_served(), 4);
  EXPECT_EQ(p.external_organizations_served(), 3);  // sme, big (on i2), start
  EXPECT_EQ(p.sme_organizations_served(), 1);
  EXPECT_EQ(p.startup_organizations_served(), 1);
  EXPECT_EQ(rep->platform_counts().instruments(), 4);
  EXPECT_EQ(rep->platform_counts().assessed(), 3);
  EXPECT_EQ(rep->platform_counts().idle(), 1);
  EXPECT_EQ(rep->platform_counts().under_shared(), 1);
  ASSERT_EQ(rep->organization_summaries_size(), 2);
  const auto& big = rep->organization_summaries(0);
  EXPECT_EQ(big.key().owner_organization(), "organizations/big");
  EXPECT_EQ(big.display_name(), "Big Co");
  EXPECT_EQ(big.figures().effective_seconds(), 3600000);
  EXPECT_EQ(big.counts().instruments(), 2);
  EXPECT_EQ(big.counts().assessed(), 1);
  EXPECT_EQ(big.counts().under_shared(), 1);
  EXPECT_EQ(rep->organization_summaries(1).counts().idle(), 1);
  ASSERT_EQ(rep->facility_summaries_size(), 2);
  EXPECT_EQ(rep->facility_summaries(0).display_name(), "Fab One");
  EXPECT_EQ(rep->facility_summaries(0).figures().effective_seconds(), 4320000);
  ASSERT_EQ(rep->category_summaries_size(), 3);
  EXPECT_EQ(rep->category_summaries(2).key().category(), "spectroscopy");
  EXPECT_EQ(rep->category_summaries(2).counts().instruments(), 2);
  // ON_SITE 3,600,000 + 720,000 + 3,240,000; JOINT_RESEARCH only in kind;
  // TECHNICAL_SERVICE 360,000.
  ASSERT_EQ(rep->mode_summaries_size(), 3);
  EXPECT_EQ(rep->mode_summaries(0).key().mode(), ON_SITE);
  EXPECT_EQ(rep->mode_summaries(0).figures().effective_seconds(), 7560000);
  EXPECT_EQ(rep->mode_summaries(1).key().mode(), JOINT_RESEARCH);
  EXPECT_EQ(rep->mode_summaries(1).figures().in_kind_contribution().amount_minor(), 1000000);
  EXPECT_EQ(rep->mode_summaries(2).figures().effective_seconds(), 360000);
  EXPECT_FALSE(rep->mode_summaries(0).has_counts());
  // Instruments by owner, then name: i3, i4 | i1, i2.
  ASSERT_EQ(rep->instruments_size(), 3);
  EXPECT_EQ(rep->instruments(0).instrument(), "instruments/i3");
  EXPECT_EQ(rep->instruments(1).instrument(), "instruments/i4");
  EXPECT_FALSE(rep->instruments(1).assessed());
  // round_half_up(2,880,000 x 1,468,800 / 31,536,000) = 134,137 (134,136.99).
  EXPECT_EQ(rep->instruments(1).idle_threshold_seconds(), 134137);
  EXPECT_EQ(rep->instruments(2).instrument(), "instruments/i1");
  EXPECT_FALSE(rep->computation().provisional());
  r.set_page_token(rep->next_page_token());
  auto page2 = figures_->GetAnnualReport(auditor_, r);
  ASSERT_TRUE(page2.ok());
  ASSERT_EQ(page2->instruments_size(), 1);
  EXPECT_EQ(page2->instruments(0).instrument(), "instruments/i2");
  EXPECT_FALSE(page2->has_platform_figures());
  EXPECT_EQ(page2->organization_summaries_size(), 0);
  // The first page published ReportGenerated.
  auto outbox = pool_->Command({"XRANGE", "{usage}:outbox", "-", "+"});
  ASSERT_EQ(outbox->elements.size(), 1u);
  v1::UsageEvent ev;
  ASSERT_TRUE(ev.ParseFromString(outbox->elements[0].elements[1].elements[3].str));
  EXPECT_EQ(ev.report_generated().year(), 2026);
  EXPECT_EQ(ev.report_generated().platform_counts().idle(), 1);

  // Years: not before 1970, not after the current one (2027).
  r.clear_page_token();
  r.set_year(2028);
  EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(auditor_, r).status()), "INVALID_YEAR");
  r.set_year(2027);
  auto provisional = figures_->GetAnnualReport(auditor_, r);
  ASSERT_TRUE(provisional.ok());
  EXPECT_TRUE(provisional->computation().provisional());
  // Staff: own scope only.
  Principal staff{"sam", "own", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  r.set_year(2026);
  EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(staff, r).status()), "ORGANIZATION_SCOPE");
  r.mutable_scope()->add_owner_organizations("organizations/own");
  auto own = figures_->GetAnnualReport(staff, r);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own->platform_figures().effective_seconds(), 4320000);
  EXPECT_EQ(own->platform_counts().instruments(), 2);

  // The CSV: 1 platform + 2 organisations + 2 facilities + 3 categories +
  // 3 modes + 4 instruments = 15 lines after the header; small chunks.
  figures_->set_export_chunk(1000, 500);
  v1::ExportAnnualReportCsvRequest c;
  c.set_year(2026);
  c.set_include_bom(true);
  std::string file;
  std::vector<v1::CsvChunk> chunks;
  ASSERT_TRUE(figures_
                  ->ExportAnnualReportCsv(auditor_, c,
                                          [&](const v1::CsvChunk& chunk) {
                                            EXPECT_EQ(chunk.offset(), static_cast<int64_t>(file.size()));
                                            file += chunk.data();
                                            chunks.push_back(chunk);
                                            return absl::OkStatus();
                                          })
                  .ok());
  ASSERT_GT(chunks.size(), 2u);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    EXPECT_FALSE(chunks[i].has_trailer());
    EXPECT_TRUE(absl::EndsWith(chunks[i].data(), "\r\n"));
  }
  const auto& trailer = chunks.back().trailer();
  EXPECT_EQ(trailer.row_count(), 15);
  EXPECT_EQ(trailer.total_bytes(), static_cast<int64_t>(file.size()));
  EXPECT_EQ(trailer.sha256_hex(), Sha256Hex(file));
  EXPECT_TRUE(absl::StartsWith(file, "\xEF\xBB\xBFrow_type,key,display_name,owner_organization,facility,category,"
                                     "effective_seconds,effective_hours,external_seconds,external_hours,"));
  std::vector<std::string> lines = absl::StrSplit(file, "\r\n");
  ASSERT_EQ(lines.size(), 17u);  // header, 15 lines, "" after the last CRLF
  EXPECT_TRUE(absl::StartsWith(lines[1], "PLATFORM,,,,,,7920000,2200.00,1800000,500.00,")) << lines[1];
  EXPECT_TRUE(absl::EndsWith(lines[1], ",4,3,1,1,,,,CNY")) << lines[1];
  EXPECT_TRUE(absl::StartsWith(lines[2], "ORGANIZATION,organizations/big,Big Co,,,,3600000,1000.00,")) << lines[2];
  // MODE lines (9 to 11): the four count and three threshold columns empty.
  for (size_t i = 9; i <= 11; ++i) {
    EXPECT_TRUE(absl::StartsWith(lines[i], "MODE,")) << lines[i];
    EXPECT_TRUE(absl::EndsWith(lines[i], ",,,,,,,,CNY")) << lines[i];
  }
  // i2: 720,000 s = 200.00 h; assessed, idle, not under-shared.
  EXPECT_TRUE(
      absl::StartsWith(lines[15], "INSTRUMENT,instruments/i2,TEM,organizations/own,facilities/f1,electron-microscopy,"
                                  "720000,200.00,360000,100.00,31536000,8760.00,"))
      << lines[15];
  EXPECT_TRUE(absl::EndsWith(lines[15], ",,true,true,false,2880000,0,1600,CNY")) << lines[15];
}

// A name a spreadsheet would run as a formula is text in the CSV (an
// apostrophe first); plain numbers stay numbers.
TEST_F(UsageReportsTest, AnnualReportCsvGuardsFormulaNames) {
  Org("own", "=HYPERLINK(\"https://evil.example\",\"ZJU\")", iv::LARGE);
  Facility("f1", "@SUM(A1)");
  Instrument("i1", "-cmd", "own", "f1", "+86 571", 0, At(2026, 1, 1));
  Instrument("i2", "-100", "own", "f1", "lithography", 0, At(2026, 1, 1));
  v1::ExportAnnualReportCsvRequest c;
  c.set_year(2026);
  std::string file;
  ASSERT_TRUE(figures_
                  ->ExportAnnualReportCsv(auditor_, c,
                                          [&](const v1::CsvChunk& chunk) {
                                            file += chunk.data();
                                            return absl::OkStatus();
                                          })
                  .ok());
  std::vector<std::string> lines = absl::StrSplit(file, "\r\n");
  auto line = [&](absl::string_view prefix) {
    for (const auto& l : lines)
      if (absl::StartsWith(l, prefix)) return l;
    return std::string("(none) ") + std::string(prefix);
  };
  EXPECT_TRUE(absl::StartsWith(line("ORGANIZATION,"),
                               "ORGANIZATION,organizations/own,\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"ZJU\"\")\",,,,"))
      << line("ORGANIZATION,");
  EXPECT_TRUE(absl::StartsWith(line("FACILITY,"), "FACILITY,facilities/f1,'@SUM(A1),,,,")) << line("FACILITY,");
  EXPECT_TRUE(absl::StartsWith(line("CATEGORY,'+86"), "CATEGORY,'+86 571,'+86 571,,,,")) << line("CATEGORY,'+86");
  EXPECT_TRUE(absl::StartsWith(line("INSTRUMENT,instruments/i1,"),
                               "INSTRUMENT,instruments/i1,'-cmd,organizations/own,facilities/f1,'+86 571,0,0.00,"))
      << line("INSTRUMENT,instruments/i1,");
  EXPECT_TRUE(absl::StartsWith(line("INSTRUMENT,instruments/i2,"), "INSTRUMENT,instruments/i2,-100,")) << line("INSTRUMENT,instruments/i2,");
}

// ================================================================ usage export

// A year (or a scope) with nothing in it: the platform figures are zero
// figures, money 0 in the reporting currency, as GetUsageFigures answers
// for the same emptiness; in the answer, ReportGenerated and the CSV's
// PLATFORM line alike.
TEST_F(UsageReportsTest, AnAnnualReportOfAnEmptyYearHasZeroPlatformFigures) {
  auto zero_money = [](const labshare::type::v1::Money& m) {
    EXPECT_EQ(m.currency_code(), "CNY");
    EXPECT_EQ(m.amount_minor(), 0);
  };
  auto zero = [&](const v1::UsageFigures& fig) {
    for (const auto* m : {&fig.service_income(), &fig.penalty_income(), &fig.subsidized_income(),
                          &fig.in_kind_contribution(), &fig.original_value()}) {
      zero_money(*m);
    }
    EXPECT_TRUE(fig.has_sharing_rate());
    EXPECT_FALSE(fig.sharing_rate().defined());
    EXPECT_TRUE(fig.has_utilization());
    EXPECT_TRUE(fig.has_revenue_rate());
    EXPECT_EQ(fig.effective_seconds(), 0);
    EXPECT_EQ(fig.instrument_count(), 0);
  };
  v1::GetAnnualReportRequest r;
  r.set_year(2025);
  auto rep = figures_->GetAnnualReport(auditor_, r);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_TRUE(rep->has_platform_figures());
  zero(rep->platform_figures());
  // The same as GetUsageFigures over the year.
  v1::GetUsageFiguresRequest g;
  *g.mutable_range() = Range(absl::CivilDay(2025, 1, 1), absl::CivilDay(2026, 1, 1));
  auto figures = figures_->GetUsageFigures(auditor_, g);
  ASSERT_TRUE(figures.ok()) << figures.status();
  EXPECT_EQ(rep->platform_figures().SerializeAsString(), figures->figures().SerializeAsString());
  auto outbox = pool_->Command({"XRANGE", "{usage}:outbox", "-", "+"});
  ASSERT_EQ(outbox->elements.size(), 1u);
  v1::UsageEvent ev;
  ASSERT_TRUE(ev.ParseFromString(outbox->elements[0].elements[1].elements[3].str));
  ASSERT_TRUE(ev.report_generated().has_platform_figures());
  zero(ev.report_generated().platform_figures());

  // A scope with nothing in it in a year with use.
  Year();
  r.set_year(2026);
  r.mutable_scope()->add_facilities("facilities/none");
  rep = figures_->GetAnnualReport(auditor_, r);
  ASSERT_TRUE(rep.ok()) << rep.status();
  ASSERT_TRUE(rep->has_platform_figures());
  zero(rep->platform_figures());

  // The CSV of the empty year: the header and the PLATFORM line, its money
  // cells 0, its ratio cells empty (undefined), no other currency.
  v1::ExportAnnualReportCsvRequest c;
  c.set_year(2025);
  std::string file;
  ASSERT_TRUE(figures_
                  ->ExportAnnualReportCsv(auditor_, c,
                                          [&](const v1::CsvChunk& chunk) {
                                            file += chunk.data();
                                            return absl::OkStatus();
                                          })
                  .ok());
  std::vector<std::string> lines = absl::StrSplit(file, "\r\n");
  ASSERT_EQ(lines.size(), 3u) << file;  // header, PLATFORM, "" after the last CRLF
  std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  std::vector<std::string> platform = absl::StrSplit(lines[1], ',');
  ASSERT_EQ(header.size(), platform.size()) << lines[1];
  std::map<std::string, std::string> cell;
  for (size_t i = 0; i < header.size(); ++i) cell[header[i]] = platform[i];
  EXPECT_EQ(cell["row_type"], "PLATFORM");
  for (const char* money : {"service_income_minor", "penalty_income_minor", "subsidized_income_minor",
                            "in_kind_contribution_minor", "original_value_minor"}) {
    EXPECT_EQ(cell[money], "0") << money;
  }
  EXPECT_EQ(cell["other_currency_income"], "");
  for (const char* ratio : {"sharing_rate_bp", "utilization_bp", "revenue_rate_bp"}) {
    EXPECT_EQ(cell[ratio], "") << ratio;
  }
  EXPECT_EQ(cell["effective_seconds"], "0");
  EXPECT_EQ(cell["effective_hours"], "0.00");
  EXPECT_EQ(cell["instruments"], "0");
  EXPECT_EQ(cell["currency_code"], "CNY");
  EXPECT_EQ(lines[1],
            "PLATFORM,,,,,,0,0.00,0,0.00,0,0.00,0,0.00,0,0.00,,,,,,,,,,0,0,0,0,,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,"
            "0,0,0,0,,,,CNY");
}

TEST_F(UsageReportsTest, ExportUsageRowsCsvAndResume) {
  Year();
  figures_->set_export_chunk(1, 2);  // a CSV message per line, 2 rows per batch
  v1::ExportUsageRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 4, 1));
  r.set_granularity(v1::PERIOD_GRANULARITY_MONTH);
  r.add_group_by(v1::DIMENSION_INSTRUMENT);
  EXPECT_EQ(ErrorReason(figures_->ExportUsage(auditor_, r, [](const auto&) { return absl::OkStatus(); })),
            "INVALID_FIELD");  // no format
  r.set_format(v1::EXPORT_FORMAT_ROWS);
  std::vector<v1::ExportUsageResponse> got;
  auto collect = [&](const v1::ExportUsageResponse& m) {
    got.push_back(m);
    return absl::OkStatus();
  };
  ASSERT_TRUE(figures_->ExportUsage(auditor_, r, collect).ok());
  // 3 months x i1, i2, i3 (i4 not yet in service) = 9 rows in 5 batches.
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[0].rows().rows(0).key().instrument(), "instruments/i1");
  EXPECT_EQ(got[0].rows().rows(0).figures().effective_seconds(), 1080000);  // January
  EXPECT_EQ(got[1].rows().rows(0).key().instrument(), "instruments/i3");
  EXPECT_EQ(got[1].rows().rows(1).key().instrument(), "instruments/i1");  // February
  EXPECT_EQ(got[4].rows().rows_size(), 1);
  EXPECT_EQ(got[4].rows().rows(0).key().instrument(), "instruments/i3");
  EXPECT_EQ(got[4].trailer().row_count(), 9);
  EXPECT_TRUE(got[4].trailer().sha256_hex().empty());
  for (size_t i = 0; i < 4; ++i) EXPECT_FALSE(got[i].has_trailer());
  // Resume after the second batch: rows 5..9.
  v1::ExportUsageRequest again = r;
  again.set_resume_token(got[1].resume_token());
  std::vector<v1::ExportUsageResponse> first = std::move(got);
  got.clear();
  ASSERT_TRUE(figures_->ExportUsage(auditor_, again, collect).ok());
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].rows().rows(0).SerializeAsString(), first[2].rows().rows(0).SerializeAsString());
  EXPECT_EQ(got[2].trailer().row_count(), 5);
  // Another caller (another user, or the same with other roles), or the
  // token with any character changed (it was readable text, its position
  // editable): refused, nothing sent.
  got.clear();
  EXPECT_EQ(ErrorReason(figures_->ExportUsage(admin_, again, collect)), "INVALID_RESUME_TOKEN");
  const std::string token = again.resume_token();
  for (size_t i = 0; i < token.size(); ++i) {
    for (char c : {'A', 'B', 'Q', 'g', '0', '-'}) {
      if (c == token[i]) continue;
      std::string edited = token;
      edited[i] = c;
      again.set_resume_token(edited);
      ASSERT_EQ(ErrorReason(figures_->ExportUsage(auditor_, again, collect)), "INVALID_RESUME_TOKEN")
          << i << " " << edited;
    }
  }
  EXPECT_TRUE(got.empty());
  // A token of another request.
  again.set_resume_token(token);
  again.set_granularity(v1::PERIOD_GRANULARITY_DAY);
  EXPECT_EQ(ErrorReason(figures_->ExportUsage(auditor_, again, collect)), "INVALID_RESUME_TOKEN");

  // CSV of i2 over January and February, one row, by hand: 100 h by big;
  // 59 days = 5,097,600 s = 1416 h; utilisation 360,000 / 5,097,600 = 706 bp
  // (706.21); revenue 5,000,000 / 500,000,000 = 100 bp.
  v1::ExportUsageRequest c;
  *c.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 3, 1));
  c.mutable_filter()->add_instruments("instruments/i2");
  c.set_format(v1::EXPORT_FORMAT_CSV);
  got.clear();
  ASSERT_TRUE(figures_->ExportUsage(auditor_, c, collect).ok());
  ASSERT_EQ(got.size(), 1u);
  const std::string& csv = got[0].csv();
  EXPECT_EQ(csv,
            "period_start,period_end,partial_period,"
            "effective_seconds,effective_hours,external_seconds,external_hours,calendar_seconds,calendar_hours,"
            "maintenance_seconds,maintenance_hours,available_seconds,available_hours,"
            "sharing_rate_numerator,sharing_rate_denominator,sharing_rate_bp,"
            "utilization_numerator,utilization_denominator,utilization_bp,"
            "revenue_rate_numerator,revenue_rate_denominator,revenue_rate_bp,"
            "service_income_minor,penalty_income_minor,subsidized_income_minor,in_kind_contribution_minor,"
            "other_currency_income,original_value_minor,bookings,completed_bookings,missed_bookings,"
            "late_cancelled_bookings,cancelled_bookings,outage_cancelled_bookings,rejected_requests,"
            "users_served,external_users_served,sme_users_served,organizations_served,"
            "external_organizations_served,sme_organizations_served,startup_organizations_served,"
            "instrument_count,instruments_without_value,currency_code\r\n"
            "2026-01-01T00:00:00+08:00,2026-03-01T00:00:00+08:00,false,"
            "360000,100.00,360000,100.00,5097600,1416.00,0,0.00,5097600,1416.00,"
            "360000,360000,10000,360000,5097600,706,5000000,500000000,100,"
            "5000000,0,0,0,,500000000,1,1,0,0,0,0,0,1,1,0,1,1,0,0,1,0,CNY\r\n");
  EXPECT_EQ(got[0].trailer().row_count(), 1);
  EXPECT_EQ(got[0].trailer().total_bytes(), static_cast<int64_t>(csv.size()));
  EXPECT_EQ(got[0].trailer().sha256_hex(), Sha256Hex(csv));

  // A monthly CSV resumed after its second message continues the same file.
  r.set_format(v1::EXPORT_FORMAT_CSV);
  got.clear();
  ASSERT_TRUE(figures_->ExportUsage(auditor_, r, collect).ok());
  ASSERT_EQ(got.size(), 9u);  // header with the first row, then a row each
  std::string whole;
  for (const auto& m : got) whole += m.csv();
  EXPECT_EQ(got.back().trailer().sha256_hex(), Sha256Hex(whole));
  std::string resumed = got[0].csv() + got[1].csv();
  v1::ExportUsageRequest rest = r;
  rest.set_resume_token(got[1].resume_token());
  const int64_t offset = static_cast<int64_t>(resumed.size());
  got.clear();
  ASSERT_TRUE(figures_->ExportUsage(auditor_, rest, collect).ok());
  EXPECT_EQ(got[0].csv_offset(), offset);
  std::string tail;
  for (const auto& m : got) tail += m.csv();
  EXPECT_EQ(resumed + tail, whole);
  EXPECT_EQ(got.back().trailer().row_count(), 7);
  EXPECT_EQ(got.back().trailer().sha256_hex(), Sha256Hex(tail));
  // Every completed export published ReportExported: rows, rows resumed,
  // the i2 CSV, the monthly CSV and its resumption (the rejected one did not).
  EXPECT_EQ(*pool_->Command({"XLEN", "{usage}:outbox"})->AsInteger(), 5);
}

// "Ratio fields as three columns ..., all three empty when the ratio is
// undefined": i4 (no original value, registered 15 December, no use) in
// December 2026 has no sharing rate (no use) and no revenue rate (no value):
// their six cells are empty; its utilisation 0 / 1,468,800 (17 days) is
// defined: 0, 1468800, 0.
TEST_F(UsageReportsTest, AnUndefinedRatioLeavesAllThreeCsvCellsEmpty) {
  Year();
  v1::ExportUsageRequest r;
  *r.mutable_range() = Range(absl::CivilDay(2026, 12, 1), absl::CivilDay(2027, 1, 1));
  r.mutable_filter()->add_instruments("instruments/i4");
  r.set_format(v1::EXPORT_FORMAT_CSV);
  std::string csv;
  ASSERT_TRUE(figures_
                  ->ExportUsage(auditor_, r,
                                [&](const v1::ExportUsageResponse& m) {
                                  csv += m.csv();
                                  return absl::OkStatus();
                                })
                  .ok());
  std::vector<std::string> lines = absl::StrSplit(csv, "\r\n");
  ASSERT_EQ(lines.size(), 3u) << csv;  // header, i4's row, "" after the last CRLF
  const std::vector<std::string> header = absl::StrSplit(lines[0], ',');
  const std::vector<std::string> row = absl::StrSplit(lines[1], ',');
  ASSERT_EQ(row.size(), header.size());
  auto cell = [&](const std::string& column) {
    const auto it = std::find(header.begin(), header.end(), column);
    return it == header.end() ? std::string("(no column ") + column + ")" : row[it - header.begin()];
  };
  for (const std::string ratio : {"sharing_rate", "revenue_rate"}) {
    for (const std::string part : {"_numerator", "_denominator", "_bp"}) {
      EXPECT_EQ(cell(ratio + part), "") << ratio + part;
    }
  }
  EXPECT_EQ(cell("utilization_numerator"), "0");
  EXPECT_EQ(cell("utilization_denominator"), "1468800");
  EXPECT_EQ(cell("utilization_bp"), "0");
  EXPECT_EQ(cell("instruments_without_value"), "1");
}

// ================================================================ over gRPC

TEST_F(UsageReportsTest, PolicyAndStreamsOverGrpc) {
  Year();
  Authorizer auth(labshare::testing::TestVerifier(), UsagePolicy(), &clock_);
  AuditChainOptions audit_options;
  audit_options.clock = &clock_;
  AuditChain audit(pool_.get(), testing::TestPageTokens(), audit_options);
  UsageService service(figures_.get(), &audit, &auth);
  ServerConfig config;
  config.service_name = "usage";
  config.redis = pool_.get();
  config.authorizer = &auth;
  auto server = Server::Start(config, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::UsageService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  auto ctx = [&](const std::string& user, const std::string& org, Role role) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->AddMetadata("authorization",
                   "Bearer " + labshare::testing::Mint(Principal{user, org, {role}, clock_.Now() + absl::Hours(1)}, clock_.Now()));
    return c;
  };
  // Everybody of the four roles reads the thresholds; only the admin changes them.
  v1::GetThresholdsRequest get;
  get.set_name("thresholds");
  v1::Thresholds t;
  EXPECT_TRUE(stub->GetThresholds(ctx("sam", "own", Role::kFacilityStaff).get(), get, &t).ok());
  EXPECT_EQ(stub->GetThresholds(ctx("lu", "own", Role::kLabUser).get(), get, &t).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::UpdateThresholdsRequest u;
  u.mutable_thresholds()->set_name("thresholds");
  u.mutable_thresholds()->set_minimum_assessed_days(10);
  u.mutable_update_mask()->add_paths("minimum_assessed_days");
  EXPECT_EQ(stub->UpdateThresholds(ctx("audrey", "", Role::kAuditor).get(), u, &t).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(stub->UpdateThresholds(ctx("adam", "", Role::kConsortiumAdmin).get(), u, &t).ok());
  EXPECT_EQ(t.minimum_assessed_days(), 10);
  // Every new method is in the policy.
  const auto& policy = auth.policy();
  for (const char* m : {"ListIdleInstruments", "ListUnderSharedInstruments", "GetSharingMatrix", "GetThresholds",
                        "UpdateThresholds", "GetAnnualReport", "ExportAnnualReportCsv", "ExportUsage"}) {
    EXPECT_TRUE(policy.Knows(absl::StrCat("/labshare.usage.v1.UsageService/", m))) << m;
  }
  // The annual CSV streamed: with minimum 10 days, i4 (17 days) is assessed
  // too, and idle (0 < 134,137): 2 idle instruments.
  v1::ExportAnnualReportCsvRequest c;
  c.set_year(2026);
  auto call = ctx("audrey", "", Role::kAuditor);
  auto reader = stub->ExportAnnualReportCsv(call.get(), c);
  v1::CsvChunk chunk;
  std::string file;
  v1::ExportTrailer trailer;
  while (reader->Read(&chunk)) {
    file += chunk.data();
    if (chunk.has_trailer()) trailer = chunk.trailer();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(trailer.row_count(), 15);
  EXPECT_EQ(trailer.sha256_hex(), Sha256Hex(file));
  std::vector<std::string> lines = absl::StrSplit(file, "\r\n");
  EXPECT_TRUE(absl::EndsWith(lines[1], ",4,4,2,1,,,,CNY")) << lines[1];
  // Staff without their scope: PERMISSION_DENIED at the stream's end.
  auto denied = ctx("sam", "own", Role::kFacilityStaff);
  auto r2 = stub->ExportAnnualReportCsv(denied.get(), c);
  while (r2->Read(&chunk)) {
  }
  EXPECT_EQ(r2->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace labshare::usage
