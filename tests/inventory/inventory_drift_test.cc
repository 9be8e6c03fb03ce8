// InventoryService against the natural reading of its ORIGINAL contract
// (proto/labshare/inventory/v1/inventory.proto at a102ccd) where the code had
// drifted from it: a rate history with back-dated lines, LookupRate without a
// time, FACILITY_OWNER_MISMATCH, a billing admin's other paths, and fixtures
// the original never forbade (an empty update_mask, an enterprise without a
// size class, slot rules without a billing unit, changes without a reason).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>

#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
using labshare::type::v1::NON_MEMBER;

class InventoryDriftTest : public InventoryServiceTest {
 protected:
  // The price of the NON_MEMBER ON_SITE line on tem for outsider at `at`
  // (unset: the request carries no time); -1 when the call fails.
  int64_t OutsiderPrice(std::optional<absl::Time> at, grpc::Status* status = nullptr) {
    v1::LookupRateRequest req;
    req.set_instrument("instruments/tem");
    req.set_mode(labshare::type::v1::ON_SITE);
    req.set_payer_organization("organizations/outsider");
    if (at) *req.mutable_time() = ToProto(*at);
    v1::LookupRateResponse resp;
    grpc::Status s = Call(&Stub::LookupRate, req, &resp, admin_);
    if (status != nullptr) *status = s;
    return s.ok() ? resp.rate().price().amount_minor() : -1;
  }

  // Moves the clock; the admin's token (valid one hour) is minted again.
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    admin_ = Token("admin", "", {Role::kConsortiumAdmin});
  }

  // owner's instrument tem in its facility fac.
  v1::Instrument OwnersTem() {
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
    return MakeInstrument("tem", "owner", "fac");
  }

  void OwnerFacilityAndOutsider() {
    OwnersTem();
    MakeOrg("outsider", v1::NON_MEMBER);
  }
};

// ------------------------------------------------------------ item 1

// "in force from effective_time until a later line for the same key
// supersedes it. Lines are never edited or deleted: history is kept": a rate
// history is built from lines at fixed past dates, and LookupRate between
// them answers the line in force then. An unset effective_time still means now.
TEST_F(InventoryDriftTest, ARateHistoryOfBackDatedLinesIsLookedUpBetweenThem) {
  OwnerFacilityAndOutsider();
  const absl::Time now = clock_.Now();
  const absl::Time jan = now - absl::Hours(24 * 90);
  const absl::Time apr = now - absl::Hours(24 * 30);
  for (const auto& [price, at] : {std::pair<int64_t, absl::Time>{100000, jan}, {120000, apr}}) {
    v1::Rate out;
    grpc::Status s = Call(&Stub::CreateRate, RateRequest("tem", NON_MEMBER, "", price, at), &out, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(FromProto(out.effective_time()), at);
    EXPECT_EQ(FromProto(out.create_time()), now);
  }
  v1::CreateRateRequest unset = RateRequest("tem", NON_MEMBER, "", 150000, now);
  unset.mutable_rate()->clear_effective_time();
  Advance(absl::Hours(1));
  v1::Rate current;
  ASSERT_TRUE(Call(&Stub::CreateRate, unset, &current, admin_).ok());
  EXPECT_EQ(FromProto(current.effective_time()), now + absl::Hours(1));

  grpc::Status s;
  EXPECT_EQ(OutsiderPrice(jan - absl::Seconds(1), &s), -1);
  ExpectError(s, grpc::StatusCode::NOT_FOUND, "NO_RATE", "before the history");
  EXPECT_EQ(OutsiderPrice(jan), 100000);
  EXPECT_EQ(OutsiderPrice(apr - absl::Seconds(1)), 100000);
  EXPECT_EQ(OutsiderPrice(apr), 120000);
  EXPECT_EQ(OutsiderPrice(now), 120000);
  EXPECT_EQ(OutsiderPrice(now + absl::Hours(1)), 150000);

  // The same key and time is still RATE_EXISTS, in the past as well.
  v1::Rate again;
  ExpectError(Call(&Stub::CreateRate, RateRequest("tem", NON_MEMBER, "", 1, apr), &again, admin_),
              grpc::StatusCode::ALREADY_EXISTS, "RATE_EXISTS");
}

// ------------------------------------------------------------ item 4

// "The line in force at `time`", no requirement: an unset time means now.
TEST_F(InventoryDriftTest, LookupRateWithoutTimeAnswersTheLineInForceNow) {
  OwnerFacilityAndOutsider();
  const absl::Time now = clock_.Now();
  MakeRate("tem", NON_MEMBER, "", 100000, now);
  MakeRate("tem", NON_MEMBER, "", 130000, now + absl::Hours(2));
  grpc::Status s;
  EXPECT_EQ(OutsiderPrice(std::nullopt, &s), 100000);
  EXPECT_TRUE(s.ok()) << s.error_message();
  Advance(absl::Hours(2));
  EXPECT_EQ(OutsiderPrice(std::nullopt), 130000);
}

// ------------------------------------------------------------ item 2

// FAILED_PRECONDITION (FACILITY_OWNER_MISMATCH: the facility belongs to
// another owner or operator). The owner or the operator of the facility may
// own its instruments; a third organisation may not. Authorization comes
// first: staff registering another organisation's instrument are
// ORGANIZATION_SCOPE whatever the facility.
TEST_F(InventoryDriftTest, AnInstrumentOfAnOrganizationNotOwningOrRunningTheFacilityIsFacilityOwnerMismatch) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("opco", v1::MEMBER, "CORE");
  MakeOrg("rival", v1::MEMBER, "CORE");
  ASSERT_EQ(MakeFacility("fac", "owner", "opco").operator_organization(), "organizations/opco");

  auto create = [&](const std::string& id, const std::string& owner, const std::string& token) {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(id);
    *req.mutable_instrument() = InstrumentSpec(owner, "fac");
    v1::Instrument out;
    return Call(&Stub::CreateInstrument, req, &out, token);
  };
  const long long keys = KeyCount();
  const long long events = OutboxLength();
  grpc::Status s = create("r1", "rival", admin_);
  ExpectError(s, grpc::StatusCode::FAILED_PRECONDITION, "FACILITY_OWNER_MISMATCH", "admin, rival's instrument");
  EXPECT_NE(s.error_message().find("facilities/fac"), std::string::npos) << s.error_message();
  ExpectError(create("r2", "rival", Token("sam", "rival", {Role::kFacilityStaff})),
              grpc::StatusCode::FAILED_PRECONDITION, "FACILITY_OWNER_MISMATCH", "rival's staff, own instrument");
  ExpectError(create("r3", "owner", Token("sam", "rival", {Role::kFacilityStaff})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "rival's staff, owner's instrument");
  EXPECT_EQ(KeyCount(), keys);
  EXPECT_EQ(OutboxLength(), events);

  EXPECT_TRUE(create("o1", "owner", admin_).ok());
  EXPECT_TRUE(create("o2", "owner", Token("ola", "owner", {Role::kFacilityStaff})).ok());
  s = create("p1", "opco", Token("pia", "opco", {Role::kFacilityStaff}));
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// ------------------------------------------------------------ item 3

// Roles: CONSORTIUM_ADMIN, everybody else ROLE_NOT_ALLOWED; the later
// addition lets an organisation's MEMBER_BILLING_ADMIN set its own
// invoicing_details. Any other path stays the consortium admin's: the role
// may not (ROLE_NOT_ALLOWED), whichever organisation; another organisation's
// invoicing_details is ORGANIZATION_SCOPE.
TEST_F(InventoryDriftTest, ABillingAdminUpdatingAnotherPathIsRoleNotAllowed) {
  MakeOrg("lab", v1::MEMBER, "CORE");
  MakeOrg("other", v1::MEMBER, "CORE");
  const std::string lena = Token("lena", "lab", {Role::kMemberBillingAdmin});
  auto update = [&](const std::string& org, const std::string& path) {
    v1::UpdateOrganizationRequest req;
    req.mutable_organization()->set_name("organizations/" + org);
    req.mutable_organization()->set_display_name("Renamed");
    auto* d = req.mutable_organization()->mutable_invoicing_details();
    d->set_legal_name("纳米工坊材料科技（杭州）有限公司");
    d->set_taxpayer_id("91330110MA2H3K5L7B");
    d->set_registered_address("浙江省杭州市余杭区文一西路1818号");
    d->set_bank_name("中国工商银行杭州余杭支行");
    d->set_bank_account("1202 0215 0910 0123 456");
    if (!path.empty()) req.mutable_update_mask()->add_paths(path);
    v1::Organization out;
    return Call(&Stub::UpdateOrganization, req, &out, lena);
  };
  ExpectError(update("lab", "display_name"), grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "own, display_name");
  ExpectError(update("lab", "tier"), grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "own, tier");
  ExpectError(update("other", "display_name"), grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED",
              "other, display_name");
  // An empty mask implies display_name too (the request sets it).
  ExpectError(update("lab", ""), grpc::StatusCode::PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "own, implied mask");
  ExpectError(update("other", "invoicing_details"), grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE",
              "other, invoicing_details");
  grpc::Status s = update("lab", "invoicing_details");
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::GetOrganizationRequest get;
  get.set_name("organizations/lab");
  v1::Organization lab;
  ASSERT_TRUE(Call(&Stub::GetOrganization, get, &lab, admin_).ok());
  EXPECT_EQ(lab.display_name(), "Org lab");
  EXPECT_EQ(lab.invoicing_details().taxpayer_id(), "91330110MA2H3K5L7B");
}

// ------------------------------------------------------------ item 5

// The original lists update_mask paths but never calls an empty mask an
// error: AIP-134's implied mask (the listed fields the request sets).
TEST_F(InventoryDriftTest, AnEmptyUpdateMaskChangesTheListedFieldsTheRequestSets) {
  const v1::Instrument created = OwnersTem();
  v1::UpdateInstrumentRequest req;
  *req.mutable_instrument() = created;  // as read: output-only fields are not paths
  req.mutable_instrument()->set_display_name("Cryo-TEM Krios G4");
  req.mutable_instrument()->set_daily_available_hours(24);
  v1::Instrument updated;
  grpc::Status s = Call(&Stub::UpdateInstrument, req, &updated, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(updated.display_name(), "Cryo-TEM Krios G4");
  EXPECT_EQ(updated.daily_available_hours(), 24);
  EXPECT_EQ(updated.category(), created.category());
  EXPECT_EQ(updated.etag(), "2");

  v1::UpdateOrganizationRequest org;
  org.mutable_organization()->set_name("organizations/owner");
  org.mutable_organization()->set_sector("semiconductors");
  v1::Organization owner;
  ASSERT_TRUE(Call(&Stub::UpdateOrganization, org, &owner, admin_).ok());
  EXPECT_EQ(owner.sector(), "semiconductors");
  EXPECT_EQ(owner.display_name(), "Org owner");  // not set in the request: kept
  EXPECT_EQ(owner.type(), v1::UNIVERSITY);

  // Nothing to change: still INVALID_UPDATE_MASK, nothing written.
  v1::UpdateFacilityRequest nothing;
  nothing.mutable_facility()->set_name("facilities/fac");
  v1::Facility f;
  ExpectError(Call(&Stub::UpdateFacility, nothing, &f, admin_), grpc::StatusCode::INVALID_ARGUMENT,
              "INVALID_UPDATE_MASK", "empty mask, nothing set");
}

// CreateOrganization's original errors: "size_class on a non-enterprise";
// nothing requires one on an enterprise (unclassified).
TEST_F(InventoryDriftTest, AnEnterpriseWithoutSizeClassIsRegistered) {
  v1::CreateOrganizationRequest req;
  req.set_organization_id("startup");
  req.mutable_organization()->set_display_name("Startup");
  req.mutable_organization()->set_type(v1::ENTERPRISE);
  v1::Organization out;
  grpc::Status s = Call(&Stub::CreateOrganization, req, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.size_class(), v1::SIZE_CLASS_UNSPECIFIED);
}

// "Billed time is rounded up to a multiple of this": without one, billed
// as measured.
TEST_F(InventoryDriftTest, SlotRulesWithoutBillingUnitAreAccepted) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  v1::CreateInstrumentRequest req;
  req.set_instrument_id("tem");
  *req.mutable_instrument() = InstrumentSpec("owner", "fac");
  req.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->clear_billing_unit();
  v1::Instrument out;
  grpc::Status s = Call(&Stub::CreateInstrument, req, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
}

// SetInstrumentState and CreateMaintenanceWindow: the original lists no
// reason among their INVALID_FIELD cases.
TEST_F(InventoryDriftTest, StateChangesAndMaintenanceWindowsNeedNoReason) {
  OwnersTem();
  v1::SetInstrumentStateRequest state;
  state.set_name("instruments/tem");
  state.set_state(v1::MAINTENANCE);
  v1::Instrument in;
  grpc::Status s = Call(&Stub::SetInstrumentState, state, &in, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(in.state(), v1::MAINTENANCE);

  v1::CreateMaintenanceWindowRequest window;
  window.set_parent("instruments/tem");
  *window.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *window.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(30));
  v1::MaintenanceWindow w;
  s = Call(&Stub::CreateMaintenanceWindow, window, &w, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(w.state(), v1::SCHEDULED);
  EXPECT_TRUE(w.reason().empty());
}

}  // namespace
}  // namespace labshare::inventory
