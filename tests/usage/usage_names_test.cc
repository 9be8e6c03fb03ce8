// Resource names reaching usage (issue 12): names such as
// "instruments/../organizations/x" or "organizations/*" in consumed events
// are never indexed or used in a key (the event is still recorded in the
// audit chain and acknowledged, so it cannot poison the consumer), and
// requests naming them are INVALID_ARGUMENT (INVALID_NAME).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/events.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/resource_name.h"
#include "labshare/booking/v1/booking_events.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/usage/audit_chain.h"
#include "services/usage/usage_figures.h"
#include "services/usage/usage_service.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

namespace bk = labshare::booking::v1;
namespace iv = labshare::inventory::v1;
using ::testing::ElementsAre;

constexpr char kDotDot[] = "instruments/../organizations/x";
constexpr char kStar[] = "organizations/*";

// ------------------------------------------------------------ the validator

TEST(ResourceNameTest, AcceptsTheNamesTheServicesMake) {
  for (const char* n : {"instruments/i7", "organizations/nano-craft", "users/li-wei", "services/billing",
                        "bookings/b1", "quotas/sem-01.fudan.month", "auditEntries/12",
                        "instruments/sem-01/maintenanceWindows/mw-3", "subsidyPools/p1/allowances/o2",
                        "organizations/o1/accounts/deposit-held"}) {
    EXPECT_TRUE(ValidResourceName(n)) << n;
  }
}

TEST(ResourceNameTest, RejectsTraversalWildcardsAndJunk) {
  for (const char* n : {kDotDot, kStar, "", "instruments", "instruments/", "/i7", "instruments/I7",
                        "instruments/i7/", "instruments//i7", "instruments/.", "instruments/..",
                        "quotas/a..b", "quotas/.a", "instruments/i 7", "instruments/i7\n", "instruments/*",
                        "instruments/i?", "instruments/[a]", "Instruments/i7", "in-struments/i7",
                        "auditEntries/012", "auditEntries/x", "instruments/i7/rates"}) {
    EXPECT_FALSE(ValidResourceName(n)) << n;
  }
  EXPECT_FALSE(ValidResourceName(absl::StrCat("instruments/", std::string(64, 'a'))));
  EXPECT_TRUE(IsResourceName("organizations/o1", "organizations"));
  EXPECT_FALSE(IsResourceName(kStar, "organizations"));
  EXPECT_FALSE(IsResourceName("users/u1", "organizations"));
  auto id = ParseResourceName("instruments/i7", "instruments", "instrument");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "i7");
  auto bad = ParseResourceName(kDotDot, "instruments", "instrument");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(bad.status()), "INVALID_NAME");
  EXPECT_EQ(ErrorReason(CheckResourceName(kStar, "resource")), "INVALID_NAME");
  EXPECT_TRUE(CheckResourceName("bookings/b1", "resource").ok());
}

// ------------------------------------------------------------ on Redis

class UsageNamesTest : public UsageServiceFixture {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartStore()); }

  // A checked-out ON_SITE session of one hour on `instrument`, booked by
  // `payer` for `user`.
  StreamEvent CheckedOut(const std::string& event_id, const std::string& instrument, const std::string& payer,
                         const std::string& user = "users/u1", const std::string& actor = "users/u1") {
    bk::BookingEvent e;
    e.mutable_header()->set_event_id(event_id);
    e.mutable_header()->set_actor(actor);
    e.mutable_header()->set_actor_organization("organizations/o1");
    *e.mutable_header()->mutable_event_time() = ToProto(clock_.Now());
    auto* b = e.mutable_booking_checked_out()->mutable_booking();
    b->set_name("bookings/b-" + event_id);
    b->set_instrument(instrument);
    b->set_user(user);
    b->set_payer_organization(payer);
    b->set_mode(labshare::type::v1::ON_SITE);
    const absl::Time start = absl::FromCivil(absl::CivilHour(2027, 2, 10, 9), zone_);
    *b->mutable_reserved_interval()->mutable_start_time() = ToProto(start);
    *b->mutable_reserved_interval()->mutable_end_time() = ToProto(start + absl::Hours(1));
    *b->mutable_session()->mutable_start_time() = ToProto(start);
    *b->mutable_session()->mutable_end_time() = ToProto(start + absl::Hours(1));
    return {"1-0", "labshare.booking.v1.BookingEvent", e.SerializeAsString()};
  }

  StreamEvent OrganizationChanged(const std::string& event_id, const std::string& name) {
    iv::InventoryEvent e;
    e.mutable_header()->set_event_id(event_id);
    auto* o = e.mutable_organization_changed()->mutable_organization();
    o->set_name(name);
    o->set_display_name("Org");
    return {"1-0", "labshare.inventory.v1.InventoryEvent", e.SerializeAsString()};
  }

  bool Exists(const std::string& key) { return *pool_->Command({"EXISTS", key})->AsInteger() == 1; }
  std::vector<std::string> Keys(const std::string& pattern) {
    std::vector<std::string> out;
    auto reply = pool_->Command({"KEYS", pattern});
    for (const auto& v : reply->elements) out.push_back(v.str);
    std::sort(out.begin(), out.end());
    return out;
  }

  labshare::type::v1::Interval February() {
    labshare::type::v1::Interval r;
    *r.mutable_start_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 2, 1), zone_));
    *r.mutable_end_time() = ToProto(absl::FromCivil(absl::CivilDay(2027, 3, 1), zone_));
    return r;
  }
};

TEST_F(UsageNamesTest, BadNamesInAnEventAreRecordedButNeverIndexed) {
  auto appended = audit_->Append("booking", CheckedOut("e1", kDotDot, kStar, "users/u1", "users/../admin"));
  ASSERT_TRUE(appended.ok()) << appended.status();
  ASSERT_TRUE(appended->appended);
  // The chain records the event as received (payload bytes untouched) ...
  EXPECT_EQ(appended->entry.sequence(), 1);
  // ... but only well-formed names are derived from it and indexed.
  EXPECT_THAT(appended->entry.resources(), ElementsAre("bookings/b-e1", "users/u1"));
  EXPECT_EQ(appended->entry.actor(), "");
  EXPECT_FALSE(Exists(audit_keys::Index("resource", kDotDot)));
  EXPECT_FALSE(Exists(audit_keys::Index("resource", kStar)));
  EXPECT_FALSE(Exists(audit_keys::Index("actor", "users/../admin")));
  EXPECT_THAT(Keys("{usage}:audit:idx:resource:*"),
              ElementsAre("{usage}:audit:idx:resource:bookings/b-e1", "{usage}:audit:idx:resource:users/u1"));
  auto verified = audit_->Verify(0, 0, {});
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ(verified->result(), v1::VERIFIED);
}

TEST_F(UsageNamesTest, ListAuditEntriesRejectsMalformedNames) {
  ASSERT_TRUE(audit_->Append("booking", CheckedOut("e1", "instruments/i7", "organizations/o1")).ok());
  for (const char* bad : {kDotDot, kStar, "bookings/b-e1/", "bookings"}) {
    v1::ListAuditEntriesRequest q;
    q.set_resource(bad);
    auto r = audit_->List(auditor_, q);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(ErrorReason(r.status()), "INVALID_NAME") << bad;
    ASSERT_EQ(FieldViolationsOf(r.status()).size(), 1u);
    EXPECT_EQ(FieldViolationsOf(r.status())[0].field, "resource");
  }
  v1::ListAuditEntriesRequest actor;
  actor.set_actor("users/*");
  EXPECT_EQ(ErrorReason(audit_->List(auditor_, actor).status()), "INVALID_NAME");
  actor.set_actor("organizations/o1");  // an actor is a user or a service
  EXPECT_EQ(ErrorReason(audit_->List(auditor_, actor).status()), "INVALID_NAME");
  v1::ListAuditEntriesRequest org;
  org.set_actor_organization(kStar);
  EXPECT_EQ(ErrorReason(audit_->List(auditor_, org).status()), "INVALID_NAME");
  // Well-formed names work as before.
  v1::ListAuditEntriesRequest ok;
  ok.set_resource("instruments/i7");
  auto listed = audit_->List(auditor_, ok);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->entries_size(), 1);
  ok.set_actor("users/u1");
  ok.set_actor_organization("organizations/o1");
  ASSERT_TRUE(audit_->List(auditor_, ok).ok());
}

TEST_F(UsageNamesTest, BadNamesInAnEventAreNotFoldedIntoFigures) {
  // Applied (acknowledged), recorded in the chain, but no counter or
  // attribute is stored under the bad name or under the id it ends with.
  ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "booking", CheckedOut("e1", kDotDot, "organizations/o1")).ok());
  ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "booking", CheckedOut("e2", "instruments/i7", kStar)).ok());
  ASSERT_TRUE(
      ApplyEvent(audit_.get(), figures_.get(), "booking", CheckedOut("e3", "instruments/i7", "organizations/o1",
                                                                    "users/a|b"))
          .ok());
  ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "inventory", OrganizationChanged("e4", kStar)).ok());
  EXPECT_THAT(Keys("{usage}:d:*"), ElementsAre());
  EXPECT_THAT(Keys("{usage}:ud:*"), ElementsAre());
  EXPECT_FALSE(Exists("{usage}:orgs"));
  EXPECT_FALSE(Exists("{usage}:orgname"));
  EXPECT_EQ(audit_->Head()->sequence(), 4);  // all four are in the audit chain
  // Each is marked as seen, so a redelivery is a no-op too.
  EXPECT_EQ(*pool_->Command({"HLEN", "{usage}:applied"})->AsInteger(), 4);
  // A good event after them is folded.
  ASSERT_TRUE(
      ApplyEvent(audit_.get(), figures_.get(), "booking", CheckedOut("e5", "instruments/i7", "organizations/o1")).ok());
  EXPECT_THAT(Keys("{usage}:d:*"), ElementsAre("{usage}:d:i7:20270210"));
}

// AuditEntry.resources: a malformed name no figure uses (a project, the
// header's actor) is recorded and never indexed, but does not keep the use
// its event reports out of the figures (a purpose or project typed to look
// like a bad name must not hide a session from the funders' figures);
// ApplyEvent and ApplyEvents alike.
TEST_F(UsageNamesTest, AMalformedNameNoFigureUsesDoesNotKeepTheUseOutOfTheFigures) {
  test_events::InstrumentFacts facts;
  facts.create_time = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_);
  StreamEvent registered = test_events::Entry(test_events::InstrumentChanged("i7", facts), "reg");
  registered.type = "labshare.inventory.v1.InventoryEvent";
  ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "inventory", registered).ok());
  auto in_project = [&](const std::string& event_id, const std::string& project) {
    StreamEvent e = CheckedOut(event_id, "instruments/i7", "organizations/o1");
    bk::BookingEvent b;
    EXPECT_TRUE(b.ParseFromString(e.payload));
    b.mutable_booking_checked_out()->mutable_booking()->set_project(project);
    e.payload = b.SerializeAsString();
    return e;
  };
  auto effective_seconds = [&] {
    v1::GetUsageFiguresRequest g;
    *g.mutable_range() = February();
    auto r = figures_->GetUsageFigures(auditor_, g);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->figures().effective_seconds() : -1;
  };
  ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "booking", in_project("e1", "projects/*")).ok());
  EXPECT_EQ(audit_->Head()->sequence(), 2);  // recorded
  EXPECT_EQ(effective_seconds(), 3600);      // and counted
  std::vector<absl::Status> batch = ApplyEvents(
      audit_.get(), figures_.get(), "booking",
      {in_project("e3", "projects/p1"),
       CheckedOut("e5", "instruments/i7", "organizations/o1", "users/u1", "users/../admin")});
  ASSERT_EQ(batch.size(), 2u);
  for (const auto& s : batch) EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(audit_->Head()->sequence(), 4);
  EXPECT_EQ(effective_seconds(), 3 * 3600);
  // Neither bad name is an index key.
  EXPECT_THAT(Keys("{usage}:audit:idx:resource:projects/\\*"), ElementsAre());  // a literal "*" in KEYS
  EXPECT_THAT(Keys("{usage}:audit:idx:actor:users/../admin"), ElementsAre());
}

TEST_F(UsageNamesTest, AConsumerIsNotPoisonedByABadName) {
  for (const StreamEvent& e : {CheckedOut("e1", kDotDot, kStar), CheckedOut("e2", "instruments/i7", "organizations/o1")}) {
    ASSERT_TRUE(pool_->Command({"XADD", "{bk:0}:outbox", "*", "type", e.type, "payload", e.payload}).ok());
  }
  ConsumerOptions o;
  o.stream = "{bk:0}:outbox";
  o.group = kEventsGroup;
  o.consumer = "c1";
  o.block = absl::ZeroDuration();
  EventConsumer consumer(pool_.get(), o);
  ASSERT_TRUE(consumer.EnsureGroup().ok());
  auto acked = consumer.PollOnce([&](const StreamEvent& e) { return ApplyEvent(audit_.get(), figures_.get(), "booking", e); });
  ASSERT_TRUE(acked.ok()) << acked.status();
  EXPECT_EQ(*acked, 2);
  auto pending = pool_->Command({"XPENDING", "{bk:0}:outbox", kEventsGroup});
  EXPECT_EQ(pending->elements[0].integer, 0);
  EXPECT_EQ(audit_->Head()->sequence(), 2);
}

TEST_F(UsageNamesTest, FigureRequestsRejectMalformedNames) {
  // Authorised callers naming a malformed resource: INVALID_NAME, naming the field.
  struct Case {
    std::function<void(v1::UsageFilter*)> set;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::UsageFilter* f) { f->add_instruments(kDotDot); }, "filter.instruments[0]"},
      {[](v1::UsageFilter* f) { f->add_owner_organizations(kStar); }, "filter.owner_organizations[0]"},
      {[](v1::UsageFilter* f) { f->add_facilities("facilities/.."); }, "filter.facilities[0]"},
      {[](v1::UsageFilter* f) {
         f->add_user_organizations("organizations/o1");
         f->add_user_organizations("instruments/i7");
       },
       "filter.user_organizations[1]"},
  };
  for (const auto& c : cases) {
    v1::GetUsageFiguresRequest g;
    *g.mutable_range() = February();
    c.set(g.mutable_filter());
    auto r = figures_->GetUsageFigures(auditor_, g);
    EXPECT_EQ(ErrorReason(r.status()), "INVALID_NAME") << c.field;
    ASSERT_EQ(FieldViolationsOf(r.status()).size(), 1u);
    EXPECT_EQ(FieldViolationsOf(r.status())[0].field, c.field);
    v1::QueryUsageRequest q;
    *q.mutable_range() = February();
    c.set(q.mutable_filter());
    EXPECT_EQ(ErrorReason(figures_->QueryUsage(auditor_, q).status()), "INVALID_NAME") << c.field;
    v1::GetSharingMatrixRequest m;
    *m.mutable_range() = February();
    c.set(m.mutable_filter());
    EXPECT_EQ(ErrorReason(figures_->GetSharingMatrix(auditor_, m).status()), "INVALID_NAME") << c.field;
  }
  // Staff in scope (own organisation) with a bad instrument name.
  Principal staff{"sam", "own", {Role::kFacilityStaff}, absl::InfiniteFuture()};
  v1::ListIdleInstrumentsRequest idle;
  idle.mutable_filter()->add_owner_organizations("organizations/own");
  idle.mutable_filter()->add_instruments(kDotDot);
  EXPECT_EQ(ErrorReason(figures_->ListIdleInstruments(staff, idle).status()), "INVALID_NAME");
  // Out of scope: authorization first (PERMISSION_DENIED, not INVALID_NAME).
  v1::GetUsageFiguresRequest out_of_scope;
  *out_of_scope.mutable_range() = February();
  out_of_scope.mutable_filter()->add_owner_organizations(kStar);
  EXPECT_EQ(figures_->GetUsageFigures(staff, out_of_scope).status().code(), absl::StatusCode::kPermissionDenied);
  v1::GetAnnualReportRequest report;
  report.set_year(2026);
  report.mutable_scope()->add_facilities("facilities/*");
  EXPECT_EQ(ErrorReason(figures_->GetAnnualReport(auditor_, report).status()), "INVALID_NAME");
  // Well-formed names never seen: zero figures, not an error.
  v1::GetUsageFiguresRequest fine;
  *fine.mutable_range() = February();
  fine.mutable_filter()->add_instruments("instruments/never-seen");
  EXPECT_TRUE(figures_->GetUsageFigures(auditor_, fine).ok());
}

}  // namespace
}  // namespace labshare::usage
