// The inventory RPC comments where a read-only audit found the code apart
// from them: a filtered list whose last page is exactly full carries no
// next_page_token (types.proto: the token is set only when more results
// exist); a malformed resource name in a list filter is INVALID_NAME (the
// file header), after the scope check where there is one; a cleared
// Facility.time_zone is the default zone again and only an IANA name is
// taken; ListRates refuses an
// unknown mode; CreateInstrument checks the scope before the name; a use
// after a qualification lapsed does not renew it; GrantQualification and
// CheckAccess check the scope before the user's name; a lab user's
// CheckAccess is paid by their own organisation.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class InventoryAuditTest : public InventoryServiceTest {
 protected:
  // a has users a1 and a2, b has b1 (ids sort a1 < a2 < b1).
  void TwoOrgsThreeUsers() {
    MakeOrg("a", v1::MEMBER, "CORE");
    MakeOrg("b", v1::MEMBER, "CORE");
    MakeUser("a1", "a");
    MakeUser("a2", "a");
    MakeUser("b1", "b");
  }
};

// ------------------------------------------------------------ last page

// The audit's case: a's billing admin lists a's two users with page_size 2.
// The page is full but nothing after it matches: no token (the old code
// answered a token whose page was empty).
TEST_F(InventoryAuditTest, ListUsersFullLastPageCarriesNoToken) {
  TwoOrgsThreeUsers();
  v1::ListUsersRequest req;
  req.set_organization("organizations/a");
  req.set_page_size(2);
  v1::ListUsersResponse resp;
  grpc::Status s = Call(&Stub::ListUsers, req, &resp, Token("bill", "a", {Role::kMemberBillingAdmin}));
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.users_size(), 2);
  EXPECT_EQ(resp.users(0).name(), "users/a1");
  EXPECT_EQ(resp.users(1).name(), "users/a2");
  EXPECT_EQ(resp.next_page_token(), "");
}

// A further match after a full page still gets a token, and the page it
// leads to holds exactly that match and no token.
TEST_F(InventoryAuditTest, ListUsersTokenOnlyWhenAnotherMatchFollows) {
  TwoOrgsThreeUsers();
  MakeUser("c1", "b");
  MakeUser("d1", "a");  // after b1 and c1, which do not match
  v1::ListUsersRequest req;
  req.set_organization("organizations/a");
  req.set_page_size(2);
  v1::ListUsersResponse first;
  ASSERT_TRUE(Call(&Stub::ListUsers, req, &first, admin_).ok());
  ASSERT_EQ(first.users_size(), 2);
  ASSERT_NE(first.next_page_token(), "");
  req.set_page_token(first.next_page_token());
  v1::ListUsersResponse second;
  grpc::Status s = Call(&Stub::ListUsers, req, &second, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(second.users_size(), 1);
  EXPECT_EQ(second.users(0).name(), "users/d1");
  EXPECT_EQ(second.next_page_token(), "");
}

// Unfiltered, a page that takes the last entries has no token either.
TEST_F(InventoryAuditTest, UnfilteredListExactlyFullHasNoToken) {
  TwoOrgsThreeUsers();
  v1::ListUsersRequest req;
  req.set_page_size(3);
  v1::ListUsersResponse resp;
  ASSERT_TRUE(Call(&Stub::ListUsers, req, &resp, admin_).ok());
  EXPECT_EQ(resp.users_size(), 3);
  EXPECT_EQ(resp.next_page_token(), "");
  req.set_page_size(2);
  ASSERT_TRUE(Call(&Stub::ListUsers, req, &resp, admin_).ok());
  EXPECT_EQ(resp.users_size(), 2);
  EXPECT_NE(resp.next_page_token(), "");
}

TEST_F(InventoryAuditTest, ListInstrumentsFullLastPageCarriesNoToken) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeOrg("b", v1::MEMBER, "CORE");
  MakeFacility("fa", "a");
  MakeFacility("fb", "b");
  MakeInstrument("i1", "a", "fa");
  MakeInstrument("i2", "a", "fa");
  MakeInstrument("i3", "b", "fb");
  v1::ListInstrumentsRequest req;
  req.set_owner_organization("organizations/a");
  req.set_page_size(2);
  v1::ListInstrumentsResponse resp;
  ASSERT_TRUE(Call(&Stub::ListInstruments, req, &resp, admin_).ok());
  EXPECT_EQ(resp.instruments_size(), 2);
  EXPECT_EQ(resp.next_page_token(), "");
  req.clear_owner_organization();
  req.set_facility("facilities/fa");
  ASSERT_TRUE(Call(&Stub::ListInstruments, req, &resp, admin_).ok());
  EXPECT_EQ(resp.instruments_size(), 2);
  EXPECT_EQ(resp.next_page_token(), "");
}

TEST_F(InventoryAuditTest, ListFacilitiesFullLastPageCarriesNoToken) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeOrg("b", v1::MEMBER, "CORE");
  MakeFacility("f1", "a");
  MakeFacility("f2", "a");
  MakeFacility("f3", "b");
  v1::ListFacilitiesRequest req;
  req.set_owner_organization("organizations/a");
  req.set_page_size(2);
  v1::ListFacilitiesResponse resp;
  ASSERT_TRUE(Call(&Stub::ListFacilities, req, &resp, admin_).ok());
  EXPECT_EQ(resp.facilities_size(), 2);
  EXPECT_EQ(resp.next_page_token(), "");
}

TEST_F(InventoryAuditTest, ListOrganizationsFullLastPageCarriesNoToken) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeOrg("b", v1::MEMBER, "CORE");
  MakeOrg("c", v1::APPLICANT);
  v1::ListOrganizationsRequest req;
  req.set_membership_state(v1::MEMBER);
  req.set_page_size(2);
  v1::ListOrganizationsResponse resp;
  ASSERT_TRUE(Call(&Stub::ListOrganizations, req, &resp, admin_).ok());
  EXPECT_EQ(resp.organizations_size(), 2);
  EXPECT_EQ(resp.next_page_token(), "");
}

// ListRates (mode filter) and ListQualifications (user filter) page the same way.
TEST_F(InventoryAuditTest, ListRatesAndQualificationsFullLastPageCarryNoToken) {
  v1::Qualification q;
  GrantAnaOnTem(&q);
  MakeRate("tem", tv1::OWNER, "", 100, clock_.Now());
  MakeRate("tem", tv1::MEMBER, "", 200, clock_.Now());
  v1::ListRatesRequest rates;
  rates.set_parent("instruments/tem");
  rates.set_mode(tv1::ON_SITE);
  rates.set_page_size(2);
  v1::ListRatesResponse rresp;
  ASSERT_TRUE(Call(&Stub::ListRates, rates, &rresp, admin_).ok());
  EXPECT_EQ(rresp.rates_size(), 2);
  EXPECT_EQ(rresp.next_page_token(), "");

  MakeUser("bo", "owner");
  v1::ListQualificationsRequest quals;
  quals.set_parent("instruments/tem");
  quals.set_user("users/ana");
  quals.set_page_size(1);
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/bo");
  v1::Qualification bo;
  ASSERT_TRUE(Call(&Stub::GrantQualification, grant, &bo, admin_).ok());
  v1::ListQualificationsResponse qresp;
  ASSERT_TRUE(Call(&Stub::ListQualifications, quals, &qresp, admin_).ok());
  EXPECT_EQ(qresp.qualifications_size(), 1);
  EXPECT_EQ(qresp.next_page_token(), "");
}

// ------------------------------------------------------------ names in filters

TEST_F(InventoryAuditTest, ListFacilitiesMalformedOwnerIsInvalidName) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeFacility("f1", "a");
  for (const std::string bad : {"a", "organizations/", "organizations/Bad Org!", "facilities/f1"}) {
    v1::ListFacilitiesRequest req;
    req.set_owner_organization(bad);
    v1::ListFacilitiesResponse resp;
    grpc::Status s = Call(&Stub::ListFacilities, req, &resp, Token("u", "a", {Role::kLabUser}));
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", bad);
    EXPECT_EQ(Violations(s), std::vector<std::string>{"owner_organization"}) << bad;
  }
}

TEST_F(InventoryAuditTest, ListInstrumentsMalformedFiltersAreInvalidName) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeFacility("f1", "a");
  MakeInstrument("i1", "a", "f1");
  v1::ListInstrumentsResponse resp;
  v1::ListInstrumentsRequest req;
  req.set_owner_organization("organizations/A");
  grpc::Status s = Call(&Stub::ListInstruments, req, &resp, Token("u", "a", {Role::kLabUser}));
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "owner_organization");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"owner_organization"});
  req.clear_owner_organization();
  req.set_facility("f1");
  s = Call(&Stub::ListInstruments, req, &resp, Token("u", "a", {Role::kLabUser}));
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "facility");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"facility"});
  req.set_facility("facilities/f1");
  ASSERT_TRUE(Call(&Stub::ListInstruments, req, &resp, admin_).ok());
  EXPECT_EQ(resp.instruments_size(), 1);
}

// Who sees every user gets INVALID_NAME; anybody else is out of scope first
// (permission before validation, types.proto), as for a well-formed name of
// another organisation.
TEST_F(InventoryAuditTest, ListUsersMalformedOrganizationAfterTheScope) {
  TwoOrgsThreeUsers();
  v1::ListUsersRequest req;
  req.set_organization("organizations/Bad Org!");
  v1::ListUsersResponse resp;
  grpc::Status s = Call(&Stub::ListUsers, req, &resp, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "admin");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"organization"});
  s = Call(&Stub::ListUsers, req, &resp, Token("aud", "", {Role::kAuditor}));
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "auditor");
  ExpectError(Call(&Stub::ListUsers, req, &resp, Token("bill", "a", {Role::kMemberBillingAdmin})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "billing admin, malformed");
  req.set_organization("organizations/b");
  ExpectError(Call(&Stub::ListUsers, req, &resp, Token("bill", "a", {Role::kMemberBillingAdmin})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "billing admin, another org");
}

// ------------------------------------------------------------ time zone

// Facility.time_zone: "Asia/Shanghai" is the default and empty means the
// same; cleared through UpdateFacility the default is stored and answered.
TEST_F(InventoryAuditTest, ClearedFacilityTimeZoneIsTheDefault) {
  MakeOrg("a", v1::MEMBER, "CORE");
  v1::Facility f = MakeFacility("f1", "a");
  EXPECT_EQ(f.time_zone(), "Asia/Shanghai");
  v1::UpdateFacilityRequest set;
  set.mutable_facility()->set_name("facilities/f1");
  set.mutable_facility()->set_time_zone("Europe/Berlin");
  ASSERT_TRUE(Call(&Stub::UpdateFacility, set, &f, admin_).ok());
  EXPECT_EQ(f.time_zone(), "Europe/Berlin");

  v1::UpdateFacilityRequest clear;
  clear.mutable_facility()->set_name("facilities/f1");
  clear.mutable_update_mask()->add_paths("time_zone");
  grpc::Status s = Call(&Stub::UpdateFacility, clear, &f, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(f.time_zone(), "Asia/Shanghai");
  v1::GetFacilityRequest get;
  get.set_name("facilities/f1");
  v1::Facility stored;
  ASSERT_TRUE(Call(&Stub::GetFacility, get, &stored, admin_).ok());
  EXPECT_EQ(stored.time_zone(), "Asia/Shanghai");
}

// Facility.time_zone: only Zone and Link names of the IANA tz database;
// names the zone library also takes (the host's zone, fixed offsets, files)
// are INVALID_FIELD in CreateFacility and UpdateFacility, and nothing is
// stored.
TEST_F(InventoryAuditTest, FacilityTimeZoneIsAnIanaName) {
  MakeOrg("a", v1::MEMBER, "CORE");
  auto create = [&](const std::string& id, const std::string& zone, v1::Facility* out) {
    v1::CreateFacilityRequest req;
    req.set_facility_id(id);
    req.mutable_facility()->set_display_name("Facility " + id);
    req.mutable_facility()->set_owner_organization("organizations/a");
    req.mutable_facility()->set_time_zone(zone);
    return Call(&Stub::CreateFacility, req, out, admin_);
  };
  v1::Facility f;
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00", "/usr/share/zoneinfo/Asia/Shanghai",
                           "posix/Asia/Shanghai", "Factory"}) {
    ExpectError(create("f-bad", zone, &f), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", zone);
  }
  v1::GetFacilityRequest get;
  get.set_name("facilities/f-bad");
  ExpectError(Call(&Stub::GetFacility, get, &f, admin_), grpc::StatusCode::NOT_FOUND, "FACILITY_NOT_FOUND");

  grpc::Status s = create("f1", "Asia/Shanghai", &f);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(f.time_zone(), "Asia/Shanghai");
  for (const char* zone : {"localtime", "Fixed/UTC+08:00:00"}) {
    v1::UpdateFacilityRequest set;
    set.mutable_facility()->set_name("facilities/f1");
    set.mutable_facility()->set_time_zone(zone);
    v1::Facility updated;
    ExpectError(Call(&Stub::UpdateFacility, set, &updated, admin_), grpc::StatusCode::INVALID_ARGUMENT,
                "INVALID_FIELD", zone);
  }
  get.set_name("facilities/f1");
  ASSERT_TRUE(Call(&Stub::GetFacility, get, &f, admin_).ok());
  EXPECT_EQ(f.time_zone(), "Asia/Shanghai");
}

// ------------------------------------------------------------ ListRates mode

TEST_F(InventoryAuditTest, ListRatesUnknownModeIsInvalidField) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeFacility("f1", "a");
  MakeInstrument("i1", "a", "f1");
  v1::ListRatesRequest req;
  req.set_parent("instruments/i1");
  req.set_mode(static_cast<tv1::SharingMode>(99));
  v1::ListRatesResponse resp;
  grpc::Status s = Call(&Stub::ListRates, req, &resp, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "ListRates mode 99");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"mode"});
}

// ------------------------------------------------------------ CreateInstrument scope

// The scope is "checked first": staff naming anything but their own
// organisation, malformed or not, are ORGANIZATION_SCOPE; the consortium
// admin's malformed owner is INVALID_NAME.
TEST_F(InventoryAuditTest, CreateInstrumentScopeBeforeOwnerName) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeFacility("f1", "a");
  const long long outbox = OutboxLength();
  v1::CreateInstrumentRequest req;
  req.set_instrument_id("i1");
  *req.mutable_instrument() = InstrumentSpec("a", "f1");
  req.mutable_instrument()->set_owner_organization("organizations/Not Valid");
  v1::Instrument out;
  ExpectError(Call(&Stub::CreateInstrument, req, &out, Token("staff", "a", {Role::kFacilityStaff})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "staff, malformed owner");
  grpc::Status s = Call(&Stub::CreateInstrument, req, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "admin, malformed owner");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"instrument.owner_organization"});
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ qualification lapse

// QualificationState.EXPIRED: "Only a new grant renews it; a use recorded
// after the lapse does not." A use at or after expire_time changes nothing
// and publishes nothing (it revived the qualification); after a new grant
// uses renew it again.
TEST_F(InventoryAuditTest, AUseAfterTheLapseDoesNotRenewTheQualification) {
  const absl::Time granted = clock_.Now();
  v1::Qualification q;
  ASSERT_NO_FATAL_FAILURE(GrantAnaOnTem(&q));
  const absl::Time lapsed = granted + absl::Hours(24 * 30);
  ASSERT_EQ(FromProto(q.expire_time()), lapsed);
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  auto use_at = [&](absl::Time t, v1::Qualification* out) {
    v1::RecordQualificationUseRequest use;
    use.set_name(q.name());
    *use.mutable_use_time() = ToProto(t);
    grpc::ClientContext ctx;
    return booking->RecordQualificationUse(&ctx, use, out);
  };
  clock_.Set(lapsed + absl::Hours(24));
  const long long outbox = OutboxLength();
  for (const absl::Time t : {lapsed, lapsed + absl::Hours(24)}) {
    v1::Qualification out;
    ASSERT_TRUE(use_at(t, &out).ok());
    EXPECT_EQ(out.state(), v1::EXPIRED);
    EXPECT_FALSE(out.has_last_use_time());
    EXPECT_EQ(FromProto(out.expire_time()), lapsed);
  }
  EXPECT_EQ(OutboxLength(), outbox);
  // A use just before the lapse, reported late, still renews it.
  v1::Qualification out;
  ASSERT_TRUE(use_at(lapsed - absl::Seconds(1), &out).ok());
  EXPECT_EQ(out.state(), v1::VALID);
  EXPECT_EQ(FromProto(out.expire_time()), lapsed - absl::Seconds(1) + absl::Hours(24 * 30));
  // Lapsed again; a new grant renews it, and uses count again.
  clock_.Set(lapsed + absl::Hours(24 * 40));
  ASSERT_TRUE(use_at(clock_.Now(), &out).ok());
  EXPECT_EQ(out.state(), v1::EXPIRED);
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  ASSERT_TRUE(Call(&Stub::GrantQualification, grant, &out, Token("staff", "owner", {Role::kFacilityStaff})).ok());
  EXPECT_EQ(out.state(), v1::VALID);
  ASSERT_TRUE(use_at(clock_.Now() + absl::Hours(24), &out).ok());
  EXPECT_EQ(FromProto(out.expire_time()), clock_.Now() + absl::Hours(24 * 31));
}

// ------------------------------------------------------------ scope before the user's name

// types.proto: ORGANIZATION_SCOPE is "checked before validation". Staff of
// another organisation naming a malformed user are out of scope (they were
// told INVALID_NAME); the consortium admin is told INVALID_NAME.
TEST_F(InventoryAuditTest, GrantQualificationScopeBeforeUserName) {
  TwoOrgsThreeUsers();
  MakeFacility("f1", "a");
  MakeInstrument("i1", "a", "f1");
  const long long outbox = OutboxLength();
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/i1");
  grant.set_user("users/Not Valid");
  v1::Qualification out;
  ExpectError(Call(&Stub::GrantQualification, grant, &out, Token("staff", "b", {Role::kFacilityStaff})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "staff of b, malformed user");
  grpc::Status s = Call(&Stub::GrantQualification, grant, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "admin, malformed user");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"user"});
  EXPECT_EQ(OutboxLength(), outbox);
}

// CheckAccess: "a LAB_USER naming another user (a malformed name too) ... is
// ORGANIZATION_SCOPE", before the name is validated.
TEST_F(InventoryAuditTest, CheckAccessScopeBeforeUserName) {
  TwoOrgsThreeUsers();
  MakeFacility("f1", "a");
  MakeInstrument("i1", "a", "f1");
  v1::CheckAccessRequest req;
  req.set_user("users/Not Valid");
  req.set_instrument("instruments/i1");
  req.set_mode(tv1::ON_SITE);
  *req.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *req.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(26));
  v1::CheckAccessResponse out;
  ExpectError(Call(&Stub::CheckAccess, req, &out, Token("a1", "a", {Role::kLabUser})),
              grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE", "a1, malformed user");
  ExpectError(Call(&Stub::CheckAccess, req, &out, admin_), grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME",
              "admin, malformed user");
}

// ------------------------------------------------------------ CheckAccess payer

// CheckAccess: "LAB_USER for themselves, paid by their own organisation". A
// lab user of b naming a's instrument owner as payer was answered as the
// owner's own use (OWNER, allowed, free); now ORGANIZATION_SCOPE. Their own
// organisation named, or none, is answered; staff may name any payer.
TEST_F(InventoryAuditTest, CheckAccessLabUserPaysOnlyAsTheirOrganisation) {
  TwoOrgsThreeUsers();
  MakeFacility("f1", "a");
  MakeInstrument("i1", "a", "f1");
  MakeRate("i1", tv1::MEMBER, "", 80000, clock_.Now());
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/i1");
  grant.set_user("users/b1");
  v1::Qualification q;
  ASSERT_TRUE(Call(&Stub::GrantQualification, grant, &q, admin_).ok());
  v1::CheckAccessRequest req;
  req.set_user("users/b1");
  req.set_instrument("instruments/i1");
  req.set_mode(tv1::ON_SITE);
  *req.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *req.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(26));
  req.set_payer_organization("organizations/a");
  const std::string b1 = Token("b1", "b", {Role::kLabUser});
  v1::CheckAccessResponse out;
  ExpectError(Call(&Stub::CheckAccess, req, &out, b1), grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE",
              "b1 naming the owner as payer");
  for (const std::string payer : {"", "organizations/b"}) {
    req.set_payer_organization(payer);
    grpc::Status s = Call(&Stub::CheckAccess, req, &out, b1);
    ASSERT_TRUE(s.ok()) << payer << ": " << s.error_message();
    EXPECT_TRUE(out.allowed()) << payer;
    EXPECT_EQ(out.payer_organization(), "organizations/b");
    EXPECT_EQ(out.payer_class(), tv1::MEMBER);
    EXPECT_EQ(out.rate().price().amount_minor(), 80000);
  }
  req.set_payer_organization("organizations/a");
  grpc::Status s = Call(&Stub::CheckAccess, req, &out, Token("staff", "a", {Role::kFacilityStaff}));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.payer_class(), tv1::OWNER);
}

}  // namespace
}  // namespace labshare::inventory
