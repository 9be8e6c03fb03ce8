// The inventory RPC comments where black-box probes found the code apart
// from them (every case fails on the code before): maintenance windows
// starting before 1970 are listed by start and seen by CheckAccess (the
// index padded their seconds with %020d, which sorts -10 before -100), and
// index members of that format are rewritten at start-up
// (MigrateWindowIndexes). Also the parent-first order of four child
// lookups, which the comments now state (the code always read the
// instrument first; the comments listed the child's NOT_FOUND first).
// Then three field-level gaps a sixth audit found: a lease horizon set to
// zero (refusing every lease) is INVALID_FIELD; UpdateInstrument keeps the
// currency, a catalogue entry's unit and the LEASE rate basis while rate
// lines in force or taking effect later are in them (RATE_CARD_CONFLICT).
#include <grpcpp/grpcpp.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class InventoryAudit5Test : public InventoryServiceTest {
 protected:
  v1::MaintenanceWindow MakeWindow(const std::string& instrument, absl::Time start, absl::Time end) {
    v1::CreateMaintenanceWindowRequest req;
    req.set_parent("instruments/" + instrument);
    *req.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(start);
    *req.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(end);
    v1::MaintenanceWindow w;
    grpc::Status s = Call(&Stub::CreateMaintenanceWindow, req, &w, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return w;
  }
  std::vector<std::string> Listed(const std::string& instrument) {
    v1::ListMaintenanceWindowsRequest list;
    list.set_parent("instruments/" + instrument);
    v1::ListMaintenanceWindowsResponse resp;
    EXPECT_TRUE(Call(&Stub::ListMaintenanceWindows, list, &resp, admin_).ok());
    std::vector<std::string> names;
    for (const auto& w : resp.maintenance_windows()) names.push_back(w.name());
    return names;
  }
  // The DURING_MAINTENANCE denial's message for ana on tem over [start, end),
  // empty when there is none.
  std::string MaintenanceDenial(absl::Time start, absl::Time end) {
    v1::CheckAccessRequest req;
    req.set_user("users/ana");
    req.set_instrument("instruments/tem");
    req.set_mode(tv1::ON_SITE);
    *req.mutable_interval()->mutable_start_time() = ToProto(start);
    *req.mutable_interval()->mutable_end_time() = ToProto(end);
    v1::CheckAccessResponse out;
    grpc::Status s = Call(&Stub::CheckAccess, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& d : out.denials()) {
      if (d.code() == v1::DURING_MAINTENANCE) return d.message();
    }
    return "";
  }
};

// ------------------------------------------------------------ 1. windows before 1970

// ListMaintenanceWindows: "by start". Windows starting at -100 s, -10 s and
// 3 s were listed -10 s, -100 s, 3 s, and CheckAccess over [-90 s, -50 s)
// stopped reading at -10 s (after the interval's end) before it met the
// window [-100 s, -40 s): no DURING_MAINTENANCE.
TEST_F(InventoryAudit5Test, WindowsStartingBefore1970AreListedByStartAndSeenByCheckAccess) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  const absl::Time epoch = absl::UnixEpoch();
  const v1::MaintenanceWindow late = MakeWindow("tem", epoch + absl::Seconds(3), epoch + absl::Seconds(1000));
  const v1::MaintenanceWindow near = MakeWindow("tem", epoch - absl::Seconds(10), epoch + absl::Seconds(50));
  const v1::MaintenanceWindow early = MakeWindow("tem", epoch - absl::Seconds(100), epoch - absl::Seconds(40));
  const std::vector<std::string> by_start = {early.name(), near.name(), late.name()};
  EXPECT_EQ(Listed("tem"), by_start);
  const std::string denial = MaintenanceDenial(epoch - absl::Seconds(90), epoch - absl::Seconds(50));
  EXPECT_TRUE(absl::StrContains(denial, early.name())) << "denial: '" << denial << "'";
  EXPECT_FALSE(absl::StrContains(denial, near.name())) << denial;
}

// Index members written by the earlier code ("%020d" seconds: "-0...0100")
// are rewritten by MigrateWindowIndexes, once; members of 1970 and after
// are of the new format already and stay.
TEST_F(InventoryAudit5Test, MigrationRekeysWindowsIndexedBefore1970ByTheOldPadding) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  const absl::Time epoch = absl::UnixEpoch();
  const v1::MaintenanceWindow late = MakeWindow("tem", epoch + absl::Seconds(3), epoch + absl::Seconds(1000));
  const v1::MaintenanceWindow near = MakeWindow("tem", epoch - absl::Seconds(10), epoch + absl::Seconds(50));
  const v1::MaintenanceWindow early =
      MakeWindow("tem", epoch - absl::Seconds(100) + absl::Milliseconds(250), epoch - absl::Seconds(40));
  const std::vector<std::string> by_start = {early.name(), near.name(), late.name()};
  auto members = pool_->Command({"ZRANGE", keys::Windows("tem"), "0", "-1"});
  ASSERT_TRUE(members.ok());
  ASSERT_EQ(members->elements.size(), 3u);
  // The format the earlier code wrote: "<%020d seconds>.<%09d nanos>|<id>".
  ASSERT_EQ(Redis({"DEL", keys::Windows("tem")}), 1);
  for (const auto* w : {&late, &near, &early}) {
    const std::string id = w->name().substr(w->name().rfind('/') + 1);
    ASSERT_EQ(Redis({"ZADD", keys::Windows("tem"), "0",
                     absl::StrCat(absl::StrFormat("%020d", w->interval().start_time().seconds()), ".",
                                  absl::StrFormat("%09d", w->interval().start_time().nanos()), "|", id)}),
              1);
  }
  EXPECT_EQ(Listed("tem"), (std::vector<std::string>{near.name(), early.name(), late.name()}));
  auto moved = manager_->MigrateWindowIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2);  // the two before 1970
  EXPECT_EQ(*manager_->MigrateWindowIndexes(), 0);
  EXPECT_EQ(Listed("tem"), by_start);
  auto after = pool_->Command({"ZRANGE", keys::Windows("tem"), "0", "-1"});
  ASSERT_TRUE(after.ok());
  std::vector<std::string> now;
  for (const auto& m : after->elements) now.push_back(m.str);
  std::vector<std::string> expected;
  for (const auto* w : {&early, &near, &late}) {
    expected.push_back(WindowSortKey(*w, w->name().substr(w->name().rfind('/') + 1)));
  }
  EXPECT_EQ(now, expected);
  const std::string denial = MaintenanceDenial(epoch - absl::Seconds(90), epoch - absl::Seconds(50));
  EXPECT_TRUE(absl::StrContains(denial, early.name())) << "denial: '" << denial << "'";
}

// ------------------------------------------------------------ 2. a rate's unit

// RevokeQualification, GetQualification, RecordQualificationUse and
// CancelMaintenanceWindow read the parent instrument first: a name whose
// instrument and child are both missing is INSTRUMENT_NOT_FOUND, one whose
// instrument exists the child's NOT_FOUND (inventory.proto).
TEST_F(InventoryAudit5Test, AMissingParentInstrumentIsNamedBeforeItsChild) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  v1::Qualification q;
  v1::MaintenanceWindow w;
  for (const std::string instrument : {"nope", "tem"}) {
    const bool parent = instrument == "tem";
    const std::string qual = "instruments/" + instrument + "/qualifications/nobody";
    const std::string win = "instruments/" + instrument + "/maintenanceWindows/none";
    const char* qual_reason = parent ? "QUALIFICATION_NOT_FOUND" : "INSTRUMENT_NOT_FOUND";
    v1::RevokeQualificationRequest revoke;
    revoke.set_name(qual);
    ExpectError(Call(&Stub::RevokeQualification, revoke, &q, admin_), grpc::StatusCode::NOT_FOUND, qual_reason,
                "RevokeQualification " + qual);
    v1::GetQualificationRequest get;
    get.set_name(qual);
    ExpectError(Call(&Stub::GetQualification, get, &q, admin_), grpc::StatusCode::NOT_FOUND, qual_reason,
                "GetQualification " + qual);
    v1::RecordQualificationUseRequest use;
    use.set_name(qual);
    *use.mutable_use_time() = ToProto(absl::FromUnixSeconds(1798761600));
    auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
    grpc::ClientContext ctx;
    ExpectError(booking->RecordQualificationUse(&ctx, use, &q), grpc::StatusCode::NOT_FOUND, qual_reason,
                "RecordQualificationUse " + qual);
    v1::CancelMaintenanceWindowRequest cancel;
    cancel.set_name(win);
    ExpectError(Call(&Stub::CancelMaintenanceWindow, cancel, &w, admin_), grpc::StatusCode::NOT_FOUND,
                parent ? "MAINTENANCE_WINDOW_NOT_FOUND" : "INSTRUMENT_NOT_FOUND", "CancelMaintenanceWindow " + win);
  }
}

// CreateRate: INVALID_FIELD "unit not fitting the mode", now also not
// fitting what the line prices. "svc" offers ON_SITE, LEASE (rate_basis
// PER_DAY) and TECHNICAL_SERVICE, with catalogue entries img (PER_SAMPLE)
// and tst (PER_TEST). Each of these was created.
class InventoryRateUnitTest : public InventoryAudit5Test {
 protected:
  void SetUp() override {
    InventoryAudit5Test::SetUp();
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
    v1::CreateInstrumentRequest req;
    req.set_instrument_id("svc");
    *req.mutable_instrument() = InstrumentSpec("owner", "fac");
    auto* ts = req.mutable_instrument()->add_modes();
    ts->set_mode(tv1::TECHNICAL_SERVICE);
    *ts->mutable_slot_rules() = req.instrument().modes(0).slot_rules();
    auto* lease = req.mutable_instrument()->add_modes();
    lease->set_mode(tv1::LEASE);
    lease->set_approval_required(true);
    auto* lr = lease->mutable_lease_rules();
    lr->set_min_term_days(1);
    lr->set_max_term_days(30);
    lr->set_rate_basis(v1::PER_DAY);
    for (auto [id, unit] : {std::pair<const char*, v1::ServiceUnit>{"img", v1::PER_SAMPLE}, {"tst", v1::PER_TEST}}) {
      auto* e = req.mutable_instrument()->add_service_catalogue();
      e->set_entry_id(id);
      e->set_display_name(id);
      e->set_unit(unit);
    }
    v1::Instrument out;
    grpc::Status s = Call(&Stub::CreateInstrument, req, &out, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  static v1::CreateRateRequest Line(tv1::SharingMode mode, v1::RateUnit unit, const std::string& entry) {
    v1::CreateRateRequest req = RateRequest("svc", tv1::MEMBER, "", 10000, absl::FromUnixSeconds(1800000000));
    req.mutable_rate()->set_mode(mode);
    req.mutable_rate()->set_unit(unit);
    req.mutable_rate()->set_service_entry_id(entry);
    return req;
  }
  void ExpectRefused(const v1::CreateRateRequest& req, const std::string& field, const std::string& what) {
    const long long outbox = OutboxLength();
    v1::Rate out;
    grpc::Status s = Call(&Stub::CreateRate, req, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", what);
    EXPECT_EQ(Violations(s), std::vector<std::string>{field}) << what;
    EXPECT_EQ(OutboxLength(), outbox) << what;
  }
  void ExpectCreated(const v1::CreateRateRequest& req, const std::string& what) {
    v1::Rate out;
    grpc::Status s = Call(&Stub::CreateRate, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << what << ": " << s.error_message();
  }
};

TEST_F(InventoryRateUnitTest, ACatalogueEntryIsPricedInItsOwnUnit) {
  ExpectRefused(Line(tv1::TECHNICAL_SERVICE, v1::RATE_PER_TEST, "img"), "rate.unit", "per-test line, per-sample entry");
  ExpectRefused(Line(tv1::TECHNICAL_SERVICE, v1::RATE_PER_SAMPLE, "tst"), "rate.unit", "per-sample line, per-test entry");
  ExpectRefused(Line(tv1::TECHNICAL_SERVICE, v1::PER_HOUR, "img"), "rate.unit", "per-hour line naming an entry");
  // An entry that does not exist is still SERVICE_ENTRY_NOT_FOUND.
  v1::Rate out;
  ExpectError(Call(&Stub::CreateRate, Line(tv1::TECHNICAL_SERVICE, v1::PER_HOUR, "nope"), &out, admin_),
              grpc::StatusCode::NOT_FOUND, "SERVICE_ENTRY_NOT_FOUND", "per-hour line naming an unknown entry");
  ExpectCreated(Line(tv1::TECHNICAL_SERVICE, v1::RATE_PER_SAMPLE, "img"), "per-sample entry, per-sample line");
  ExpectCreated(Line(tv1::TECHNICAL_SERVICE, v1::RATE_PER_TEST, "tst"), "per-test entry, per-test line");
  ExpectCreated(Line(tv1::TECHNICAL_SERVICE, v1::PER_HOUR, ""), "per-hour line, no entry");
}

TEST_F(InventoryRateUnitTest, ALeaseLineIsInTheUnitOfTheLeaseRulesRateBasis) {
  ExpectRefused(Line(tv1::LEASE, v1::RATE_PER_MONTH, ""), "rate.unit", "per-month line, PER_DAY lease rules");
  ExpectCreated(Line(tv1::LEASE, v1::RATE_PER_DAY, ""), "per-day line, PER_DAY lease rules");
}

// LeaseRules.horizon: "Unset: no limit"; a horizon set to zero was stored
// and then refused every lease (CheckAccess BEYOND_HORIZON "a lease may
// start at most 0 from now"). It is INVALID_FIELD, in CreateInstrument and
// UpdateInstrument, and the message says to leave it unset.
TEST_F(InventoryRateUnitTest, ALeaseHorizonIsPositiveOrUnset) {
  v1::GetInstrumentRequest get;
  get.set_name("instruments/svc");
  v1::Instrument svc;
  ASSERT_TRUE(Call(&Stub::GetInstrument, get, &svc, admin_).ok());
  ASSERT_EQ(svc.modes(2).mode(), tv1::LEASE);
  ASSERT_FALSE(svc.modes(2).lease_rules().has_horizon());
  const long long outbox = OutboxLength();
  v1::CreateInstrumentRequest create;
  create.set_instrument_id("svc2");
  *create.mutable_instrument() = svc;
  create.mutable_instrument()->clear_name();
  create.mutable_instrument()->clear_etag();
  v1::UpdateInstrumentRequest update;
  *update.mutable_instrument() = svc;
  update.mutable_update_mask()->add_paths("modes");
  for (const absl::Duration d : {absl::ZeroDuration(), absl::Hours(-24)}) {
    *create.mutable_instrument()->mutable_modes(2)->mutable_lease_rules()->mutable_horizon() = ToProto(d);
    *update.mutable_instrument()->mutable_modes(2)->mutable_lease_rules()->mutable_horizon() = ToProto(d);
    v1::Instrument out;
    for (grpc::Status s : {Call(&Stub::CreateInstrument, create, &out, admin_),
                           Call(&Stub::UpdateInstrument, update, &out, admin_)}) {
      ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", absl::FormatDuration(d));
      EXPECT_EQ(Violations(s), std::vector<std::string>{"instrument.modes[2].lease_rules.horizon"});
      EXPECT_TRUE(absl::StrContains(s.error_message(), "leave it unset for no limit")) << s.error_message();
    }
  }
  EXPECT_EQ(OutboxLength(), outbox);
  *update.mutable_instrument()->mutable_modes(2)->mutable_lease_rules()->mutable_horizon() =
      ToProto(absl::Hours(24 * 90));
  v1::Instrument out;
  grpc::Status s = Call(&Stub::UpdateInstrument, update, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FromProto(out.modes(2).lease_rules().horizon()), absl::Hours(24 * 90));
}

// UpdateInstrument: "The rate card must keep fitting": a change of the
// currency, of a catalogue entry's unit or of the LEASE rate_basis under
// rate lines in force or taking effect later is FAILED_PRECONDITION
// RATE_CARD_CONFLICT, and nothing is written. Each of these updates
// succeeded before, leaving lines that CreateRate refuses and billing
// still priced from.
class InventoryRateCardChangeTest : public InventoryRateUnitTest {
 protected:
  static Principal Root() {
    Principal p;
    p.user_id = "root";
    p.roles = {Role::kConsortiumAdmin};
    p.expires_at = absl::InfiniteFuture();
    return p;
  }
  v1::Instrument Svc() {
    v1::GetInstrumentRequest get;
    get.set_name("instruments/svc");
    v1::Instrument in;
    EXPECT_TRUE(Call(&Stub::GetInstrument, get, &in, admin_).ok());
    return in;
  }
  static v1::UpdateInstrumentRequest Update(const v1::Instrument& in, const std::string& path) {
    v1::UpdateInstrumentRequest req;
    *req.mutable_instrument() = in;
    req.mutable_update_mask()->add_paths(path);
    return req;
  }
  // The refusal, and that nothing was written; returns the message.
  std::string ExpectConflict(const v1::UpdateInstrumentRequest& req, const std::string& what,
                             const std::string& first_line) {
    const v1::Instrument before = Svc();
    const long long outbox = OutboxLength();
    v1::Instrument out;
    grpc::Status s = Call(&Stub::UpdateInstrument, req, &out, admin_);
    ExpectError(s, grpc::StatusCode::FAILED_PRECONDITION, "RATE_CARD_CONFLICT", what);
    EXPECT_EQ(ErrorMetadataOf(FromGrpcStatus(s))["rate"], first_line) << what;
    EXPECT_EQ(OutboxLength(), outbox) << what;
    const v1::Instrument after = Svc();
    EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString()) << what;
    return s.error_message();
  }
  v1::Instrument ExpectUpdated(const v1::UpdateInstrumentRequest& req, const std::string& what) {
    v1::Instrument out;
    grpc::Status s = Call(&Stub::UpdateInstrument, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << what << ": " << s.error_message();
    return out;
  }
  std::string Create(v1::CreateRateRequest req, absl::Time effective) {
    *req.mutable_rate()->mutable_effective_time() = ToProto(effective);
    v1::Rate out;
    grpc::Status s = Call(&Stub::CreateRate, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.name();
  }
};

TEST_F(InventoryRateCardChangeTest, TheCurrencyStaysWhileLinesInForceOrLaterAreInIt) {
  const absl::Time now = clock_.Now();
  // "ended" was replaced by "current" before now; "next" takes effect later.
  const std::string ended = Create(Line(tv1::ON_SITE, v1::PER_HOUR, ""), now - absl::Hours(24 * 30));
  const std::string current = Create(Line(tv1::ON_SITE, v1::PER_HOUR, ""), now - absl::Hours(24));
  const std::string next = Create(Line(tv1::ON_SITE, v1::PER_HOUR, ""), now + absl::Hours(24 * 10));
  v1::Instrument in = Svc();
  in.mutable_original_value()->set_currency_code("USD");
  const std::string message = ExpectConflict(Update(in, "original_value"), "CNY -> USD", current);
  EXPECT_THAT(message, ::testing::HasSubstr(absl::StrCat("2 lines priced in CNY, not the new currency USD (", current,
                                                         ", ", next, ")")));
  EXPECT_FALSE(absl::StrContains(message, ended)) << message;
  // The same with a request_id, and the retry gets the same answer.
  v1::UpdateInstrumentRequest with_id = Update(in, "original_value");
  with_id.set_request_id("usd-1");
  ExpectConflict(with_id, "CNY -> USD, request_id", current);
  ExpectConflict(with_id, "CNY -> USD, retried", current);
  // Another value in the same currency changes no price.
  in = Svc();
  in.mutable_original_value()->set_amount_minor(1);
  EXPECT_EQ(ExpectUpdated(Update(in, "original_value"), "a new value in CNY").original_value().amount_minor(), 1);
  // An instrument without lines changes its currency.
  MakeInstrument("bare", "owner", "fac");
  v1::UpdateInstrumentRequest bare;
  bare.mutable_instrument()->set_name("instruments/bare");
  bare.mutable_instrument()->mutable_original_value()->set_currency_code("USD");
  bare.mutable_update_mask()->add_paths("original_value");
  EXPECT_EQ(ExpectUpdated(bare, "no lines").original_value().currency_code(), "USD");
}

TEST_F(InventoryRateCardChangeTest, AnEntryKeepsTheUnitItsLinesAreIn) {
  const std::string img = Create(Line(tv1::TECHNICAL_SERVICE, v1::RATE_PER_SAMPLE, "img"), clock_.Now());
  v1::Instrument in = Svc();
  in.mutable_service_catalogue(0)->set_unit(v1::PER_TEST);
  const std::string message = ExpectConflict(Update(in, "service_catalogue"), "img PER_SAMPLE -> PER_TEST", img);
  EXPECT_THAT(message, ::testing::HasSubstr(absl::StrCat(
                           "1 line in RATE_PER_SAMPLE for catalogue entry 'img', not RATE_PER_TEST (its new unit "
                           "PER_TEST) (",
                           img, ")")));
  // Removed and added again in the other unit, it is refused too.
  in = Svc();
  in.mutable_service_catalogue()->erase(in.mutable_service_catalogue()->begin());
  ExpectUpdated(Update(in, "service_catalogue"), "img removed");
  v1::ServiceCatalogueEntry again;
  again.set_entry_id("img");
  again.set_display_name("img");
  again.set_unit(v1::PER_TEST);
  in = Svc();
  *in.add_service_catalogue() = again;
  ExpectConflict(Update(in, "service_catalogue"), "img again, PER_TEST", img);
  // An entry without lines changes its unit; a new entry takes any.
  in = Svc();
  in.mutable_service_catalogue(0)->set_unit(v1::PER_SAMPLE);  // tst
  again.set_entry_id("img-test");
  *in.add_service_catalogue() = again;
  ExpectUpdated(Update(in, "service_catalogue"), "tst PER_TEST -> PER_SAMPLE, img-test added");
}

TEST_F(InventoryRateCardChangeTest, LeasesKeepTheRateBasisTheirLinesAreIn) {
  // A line taking effect later counts as one in force.
  const std::string day = Create(Line(tv1::LEASE, v1::RATE_PER_DAY, ""), clock_.Now() + absl::Hours(24 * 365));
  v1::Instrument in = Svc();
  ASSERT_EQ(in.modes(2).mode(), tv1::LEASE);
  in.mutable_modes(2)->mutable_lease_rules()->set_rate_basis(v1::PER_MONTH);
  const std::string message = ExpectConflict(Update(in, "modes"), "PER_DAY -> PER_MONTH", day);
  EXPECT_THAT(message, ::testing::HasSubstr(absl::StrCat(
                           "1 line LEASE in RATE_PER_DAY, not RATE_PER_MONTH (the new rate_basis PER_MONTH) (", day,
                           ")")));
  // Other lease rules change; without LEASE nothing prices the line, and
  // LEASE offered again is held to it.
  in = Svc();
  in.mutable_modes(2)->mutable_lease_rules()->set_max_term_days(60);
  ExpectUpdated(Update(in, "modes"), "max_term_days");
  in = Svc();
  v1::ModeOffering lease = in.modes(2);
  in.mutable_modes()->RemoveLast();
  ExpectUpdated(Update(in, "modes"), "LEASE removed");
  lease.mutable_lease_rules()->set_rate_basis(v1::PER_MONTH);
  in = Svc();
  *in.add_modes() = lease;
  ExpectConflict(Update(in, "modes"), "LEASE again, PER_MONTH", day);
}

// A line created between UpdateInstrument's reads and its atomic step
// sends it back to read again, and then it is refused.
TEST_F(InventoryRateCardChangeTest, ALineCreatedMeanwhileIsHeldAgainstTheChange) {
  std::string created;
  auto done = std::make_shared<bool>(false);
  manager_->SetBeforeCommitHookForTesting([this, done, &created](absl::string_view m) {
    if (*done || m != "UpdateInstrument") return;
    *done = true;
    auto rate = manager_->CreateRate(Root(), Line(tv1::ON_SITE, v1::PER_HOUR, ""));
    ASSERT_TRUE(rate.ok()) << rate.status();
    created = rate->name();
  });
  v1::Instrument in = Svc();
  in.mutable_original_value()->set_currency_code("USD");
  v1::Instrument out;
  grpc::Status s = Call(&Stub::UpdateInstrument, Update(in, "original_value"), &out, admin_);
  manager_->SetBeforeCommitHookForTesting(nullptr);
  ExpectError(s, grpc::StatusCode::FAILED_PRECONDITION, "RATE_CARD_CONFLICT", "a line created meanwhile");
  EXPECT_FALSE(created.empty());
  EXPECT_EQ(Svc().original_value().currency_code(), "CNY");
}

}  // namespace
}  // namespace labshare::inventory
