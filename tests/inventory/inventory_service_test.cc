// InventoryService through a real gRPC channel against a real redis-server,
// with an injected fake clock. Each test starts from an empty database.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/proto_util.h"
#include "common/server.h"
#include "google/rpc/error_details.pb.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "services/inventory/inventory_rules.h"
#include "services/inventory/inventory_service.h"
#include "tests/support/page_tokens.h"
#include "tests/support/redis_server.h"
#include "tests/support/test_pki.h"
#include "tests/support/test_tokens.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using labshare::type::v1::SharingMode;
using ::testing::Test;

// ------------------------------------------------------------------ CRUD

TEST_F(InventoryServiceTest, CreatesAndReadsOrganization) {
  v1::Organization created = MakeOrg("tsinghua", v1::MEMBER, "CORE");
  EXPECT_EQ(created.name(), "organizations/tsinghua");
  EXPECT_EQ(created.etag(), "1");
  EXPECT_EQ(FromProto(created.create_time()), clock_.Now());

  v1::GetOrganizationRequest get;
  get.set_name("organizations/tsinghua");
  v1::Organization read;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GetOrganization, get, &read,
                   Token("u", "other", {Role::kLabUser})).ok());
  EXPECT_EQ(read.SerializeAsString(), created.SerializeAsString());
  EXPECT_EQ(read.membership_state(), v1::MEMBER);
  EXPECT_EQ(read.tier(), "CORE");
}

TEST_F(InventoryServiceTest, GetMissingOrganizationIsNotFound) {
  v1::GetOrganizationRequest get;
  get.set_name("organizations/nobody");
  v1::Organization read;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &read, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_NOT_FOUND");
}

TEST_F(InventoryServiceTest, MalformedNameIsInvalidArgument) {
  v1::GetInstrumentRequest get;
  get.set_name("instrument/x");
  v1::Instrument read;
  auto s = Call(&v1::InventoryService::Stub::GetInstrument, get, &read, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_NAME");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"name"});
}

TEST_F(InventoryServiceTest, ErrorInfoCarriesDomain) {
  v1::GetOrganizationRequest get;
  get.set_name("organizations/nobody");
  v1::Organization read;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &read, admin_);
  google::rpc::ErrorInfo info;
  const google::rpc::Status rpc = ToRpcStatus(s);
  ASSERT_EQ(rpc.details_size(), 1);
  ASSERT_TRUE(rpc.details(0).UnpackTo(&info));
  EXPECT_EQ(info.domain(), "inventory.labshare");
  EXPECT_EQ(rpc.code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

// ------------------------------------------------------------------ validation

TEST_F(InventoryServiceTest, EachInvalidOrganizationFieldHasItsViolation) {
  struct Case {
    std::function<void(v1::CreateOrganizationRequest&)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](auto& r) { r.mutable_organization()->clear_display_name(); }, "organization.display_name"},
      {[](auto& r) { r.mutable_organization()->set_type(v1::ORGANIZATION_TYPE_UNSPECIFIED); }, "organization.type"},
      {[](auto& r) { r.mutable_organization()->set_size_class(v1::SME); }, "organization.size_class"},
      {[](auto& r) { r.set_organization_id("Bad_Id"); }, "organization_id"},
      {[](auto& r) { r.mutable_organization()->set_membership_state(v1::SUSPENDED); }, "organization.membership_state"},
      {[](auto& r) { r.mutable_organization()->set_membership_state(v1::MEMBER); }, "organization.tier"},
      {[](auto& r) { r.mutable_organization()->set_tier("CORE"); }, "organization.tier"},
  };
  const long long keys_before = KeyCount();
  for (const auto& c : cases) {
    v1::CreateOrganizationRequest req;
    req.set_organization_id("org-x");
    req.mutable_organization()->set_display_name("X");
    req.mutable_organization()->set_type(v1::UNIVERSITY);
    c.mutate(req);
    v1::Organization out;
    auto s = Call(&v1::InventoryService::Stub::CreateOrganization, req, &out, admin_);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD") << c.field;
    ASSERT_FALSE(Violations(s).empty()) << c.field;
    EXPECT_EQ(Violations(s).front(), c.field);
  }
  EXPECT_EQ(KeyCount(), keys_before);
  EXPECT_EQ(OutboxLength(), 0);
}

TEST_F(InventoryServiceTest, RejectedRequestsWriteNothing) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const long long keys_before = KeyCount();
  const long long events_before = OutboxLength();

  // Duplicate id, invalid instrument, unknown facility, bad transition.
  v1::CreateInstrumentRequest dup;
  dup.set_instrument_id("tem");
  *dup.mutable_instrument() = InstrumentSpec("owner", "fac");
  v1::Instrument in;
  auto s = Call(&v1::InventoryService::Stub::CreateInstrument, dup, &in, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "INSTRUMENT_EXISTS");

  v1::CreateInstrumentRequest bad = dup;
  bad.set_instrument_id("tem2");
  bad.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->set_missed_fee_bps(20000);
  s = Call(&v1::InventoryService::Stub::CreateInstrument, bad, &in, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Violations(s), std::vector<std::string>{"instrument.modes[0].slot_rules.missed_fee_bps"});

  v1::CreateInstrumentRequest nofac = dup;
  nofac.set_instrument_id("tem3");
  nofac.mutable_instrument()->set_facility("facilities/missing");
  s = Call(&v1::InventoryService::Stub::CreateInstrument, nofac, &in, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "FACILITY_NOT_FOUND");

  v1::ChangeMembershipRequest back;
  back.set_name("organizations/owner");
  back.set_membership_state(v1::APPLICANT);
  back.set_reason("oops");
  v1::Organization org;
  s = Call(&v1::InventoryService::Stub::ChangeMembership, back, &org, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "TRANSITION_NOT_ALLOWED");

  EXPECT_EQ(KeyCount(), keys_before);
  EXPECT_EQ(OutboxLength(), events_before);
}

// ------------------------------------------------------------------ auth

TEST_F(InventoryServiceTest, MissingTokenIsUnauthenticated) {
  v1::GetOrganizationRequest get;
  get.set_name("organizations/x");
  v1::Organization out;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &out, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "MISSING_CREDENTIALS");
}

TEST_F(InventoryServiceTest, ForgedTokenIsUnauthenticated) {
  // Signed by a key the verifier's key set does not hold.
  auto other = *TokenIssuer::FromPem(*GenerateEcPrivateKeyPem(), "labshare", "labshare");
  Principal p{"mallory", "", {Role::kConsortiumAdmin}, clock_.Now() + absl::Hours(1)};
  v1::GetOrganizationRequest get;
  get.set_name("organizations/x");
  v1::Organization out;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &out, other->Mint(p, clock_.Now()));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_TOKEN");
}

TEST_F(InventoryServiceTest, ExpiredTokenIsUnauthenticated) {
  const std::string token = Token("u", "o", {Role::kConsortiumAdmin});
  clock_.Advance(absl::Hours(2));
  v1::GetOrganizationRequest get;
  get.set_name("organizations/x");
  v1::Organization out;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &out, token);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GrpcErrorReason(s), "TOKEN_EXPIRED");
}

TEST_F(InventoryServiceTest, RoleCheckComesBeforeValidation) {
  v1::CreateOrganizationRequest req;  // invalid: no display name
  v1::Organization out;
  auto s = Call(&v1::InventoryService::Stub::CreateOrganization, req, &out,
                Token("u", "o", {Role::kLabUser, Role::kMemberBillingAdmin}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ROLE_NOT_ALLOWED");
}

// Owner's instrument tem (facility fac), a rival organisation beside it,
// and a request putting tem into maintenance.
class InventoryScopeTest : public InventoryServiceTest {
 protected:
  v1::SetInstrumentStateRequest TemOfOwnerBesideRival() {
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeOrg("rival", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
    MakeInstrument("tem", "owner", "fac");
    v1::SetInstrumentStateRequest req;
    req.set_name("instruments/tem");
    req.set_state(v1::MAINTENANCE);
    req.set_reason("cleaning");
    return req;
  }
};

TEST_F(InventoryScopeTest, StaffOfAnotherOrganizationCannotManageInstrument) {
  v1::SetInstrumentStateRequest req = TemOfOwnerBesideRival();
  v1::Instrument out;
  auto s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out,
                Token("staff", "rival", {Role::kFacilityStaff}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out,
           Token("staff", "owner", {Role::kFacilityStaff}));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.state(), v1::MAINTENANCE);
}

TEST_F(InventoryServiceTest, BillingAdminListsOnlyOwnOrganizationUsers) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeOrg("b", v1::MEMBER, "CORE");
  MakeUser("ana", "a");
  MakeUser("bob", "b");
  const std::string token = Token("fin", "a", {Role::kMemberBillingAdmin});
  v1::ListUsersRequest req;
  req.set_organization("organizations/b");
  v1::ListUsersResponse resp;
  auto s = Call(&v1::InventoryService::Stub::ListUsers, req, &resp, token);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
  req.set_organization("organizations/a");
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListUsers, req, &resp, token).ok());
  ASSERT_EQ(resp.users_size(), 1);
  EXPECT_EQ(resp.users(0).name(), "users/ana");
}

// ------------------------------------------------------------------ idempotency

TEST_F(InventoryServiceTest, RetryWithSameRequestIdReturnsFirstAnswer) {
  v1::CreateOrganizationRequest req;
  req.mutable_organization()->set_display_name("Generated id");
  req.mutable_organization()->set_type(v1::RESEARCH_INSTITUTE);
  req.set_request_id("req-1");
  v1::Organization first, second;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CreateOrganization, req, &first, admin_).ok());
  clock_.Advance(absl::Minutes(5));
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CreateOrganization, req, &second, admin_).ok());
  EXPECT_EQ(first.SerializeAsString(), second.SerializeAsString());
  EXPECT_EQ(Redis({"ZCARD", keys::Orgs()}), 1);
  EXPECT_EQ(OutboxLength(), 1);
}

TEST_F(InventoryServiceTest, ConcurrentRetriesCreateOneResource) {
  v1::CreateOrganizationRequest req;
  req.mutable_organization()->set_display_name("Raced");
  req.mutable_organization()->set_type(v1::UNIVERSITY);
  req.set_request_id("req-race");
  std::vector<std::string> names(16);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < names.size(); ++i) {
    threads.emplace_back([&, i] {
      v1::Organization out;
      auto s = Call(&v1::InventoryService::Stub::CreateOrganization, req, &out, admin_);
      names[i] = s.ok() ? out.name() : "error: " + s.error_message();
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& n : names) EXPECT_EQ(n, names[0]);
  EXPECT_EQ(Redis({"ZCARD", keys::Orgs()}), 1);
  EXPECT_EQ(OutboxLength(), 1);
}

TEST_F(InventoryServiceTest, SameRequestIdWithOtherContentIsRejected) {
  v1::CreateOrganizationRequest req;
  req.mutable_organization()->set_display_name("One");
  req.mutable_organization()->set_type(v1::UNIVERSITY);
  req.set_request_id("req-2");
  v1::Organization out;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CreateOrganization, req, &out, admin_).ok());
  req.mutable_organization()->set_display_name("Two");
  auto s = Call(&v1::InventoryService::Stub::CreateOrganization, req, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
}

// A stored answer is kept for its caller: the same request_id and content
// from another caller (here staff of another organisation, whom the scope
// check refuses) is REQUEST_ID_REUSED, not the first caller's answer; the
// first caller's retry still gets it. A record written before answers were
// bound to the caller (its fingerprint covers the request alone) is still
// replayed.
TEST_F(InventoryScopeTest, StoredAnswerIsKeptForItsCaller) {
  v1::SetInstrumentStateRequest req = TemOfOwnerBesideRival();
  req.set_request_id("state-1");
  const std::string staff = Token("staff", "owner", {Role::kFacilityStaff});
  v1::Instrument first, again;
  const long long events_before = OutboxLength();
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::SetInstrumentState, req, &first, staff).ok());
  auto s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &again,
                Token("staff", "rival", {Role::kFacilityStaff}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "REQUEST_ID_REUSED");
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::SetInstrumentState, req, &again, staff).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  // The record as the previous release wrote it: fingerprint of the request.
  const std::string idem = keys::Idempotency("SetInstrumentState", "state-1");
  ASSERT_EQ(Redis({"HSET", idem, "f", RequestFingerprint("SetInstrumentState", req)}), 0);
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::SetInstrumentState, req, &again, staff).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(OutboxLength(), events_before + 1);
}

TEST_F(InventoryServiceTest, EveryMutationPublishesOneEventWithItsRequestId) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  v1::ChangeMembershipRequest req;
  req.set_name("organizations/owner");
  req.set_membership_state(v1::SUSPENDED);
  req.set_reason("unpaid invoices");
  req.set_request_id("susp-1");
  v1::Organization out;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ChangeMembership, req, &out, admin_).ok());
  ASSERT_EQ(OutboxLength(), 2);
  auto last = pool_->Command({"XREVRANGE", keys::Outbox(), "+", "-", "COUNT", "1"});
  ASSERT_TRUE(last.ok());
  const auto& fields = last->elements[0].elements[1].elements;
  ASSERT_EQ(fields.size(), 4u);
  EXPECT_EQ(fields[1].str, "labshare.inventory.v1.InventoryEvent");
  v1::InventoryEvent event;
  ASSERT_TRUE(event.ParseFromString(fields[3].str));
  EXPECT_EQ(event.header().request_id(), "susp-1");
  EXPECT_EQ(event.header().actor(), "users/admin");
  EXPECT_EQ(event.header().event_id().size(), 32u);
  ASSERT_TRUE(event.has_membership_changed());
  EXPECT_EQ(event.membership_changed().change().from_state(), v1::MEMBER);
  EXPECT_EQ(event.membership_changed().change().to_state(), v1::SUSPENDED);
  EXPECT_EQ(event.membership_changed().change().reason(), "unpaid invoices");
}

// ------------------------------------------------------------------ membership

TEST_F(InventoryServiceTest, MembershipLifecycleKeepsHistory) {
  MakeOrg("newco", v1::APPLICANT);
  auto change = [&](v1::MembershipState to, const std::string& tier) {
    v1::ChangeMembershipRequest req;
    req.set_name("organizations/newco");
    req.set_membership_state(to);
    req.set_tier(tier);
    req.set_reason("step");
    v1::Organization out;
    return Call(&v1::InventoryService::Stub::ChangeMembership, req, &out, admin_);
  };
  auto s = change(v1::MEMBER, "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Violations(s), std::vector<std::string>{"tier"});
  ASSERT_TRUE(change(v1::MEMBER, "GENERAL").ok());
  ASSERT_TRUE(change(v1::MEMBER, "CORE").ok());  // tier change
  EXPECT_EQ(GrpcErrorReason(change(v1::MEMBER, "CORE")), "NO_CHANGE");
  ASSERT_TRUE(change(v1::SUSPENDED, "").ok());
  ASSERT_TRUE(change(v1::MEMBER, "").ok());  // reinstated, tier kept
  ASSERT_TRUE(change(v1::EXITED, "").ok());
  EXPECT_EQ(GrpcErrorReason(change(v1::MEMBER, "CORE")), "TRANSITION_NOT_ALLOWED");

  v1::ListMembershipChangesRequest list;
  list.set_parent("organizations/newco");
  list.set_page_size(4);
  std::vector<std::pair<int, int>> seen;
  std::vector<std::string> tiers;
  std::string token;
  do {
    list.set_page_token(token);
    v1::ListMembershipChangesResponse resp;
    ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListMembershipChanges, list, &resp, admin_).ok());
    for (const auto& c : resp.membership_changes()) {
      seen.emplace_back(c.from_state(), c.to_state());
      tiers.push_back(c.to_tier());
    }
    token = resp.next_page_token();
  } while (!token.empty());
  std::vector<std::pair<int, int>> want = {{0, v1::APPLICANT},
                                           {v1::APPLICANT, v1::MEMBER},
                                           {v1::MEMBER, v1::MEMBER},
                                           {v1::MEMBER, v1::SUSPENDED},
                                           {v1::SUSPENDED, v1::MEMBER},
                                           {v1::MEMBER, v1::EXITED}};
  EXPECT_EQ(seen, want);
  EXPECT_EQ(tiers, (std::vector<std::string>{"", "GENERAL", "CORE", "CORE", "CORE", "CORE"}));
}

// ------------------------------------------------------------------ update

TEST_F(InventoryServiceTest, UpdateAppliesOnlyTheMaskAndChecksEtag) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  v1::Instrument created = MakeInstrument("tem", "owner", "fac");
  v1::UpdateInstrumentRequest req;
  req.mutable_instrument()->set_name("instruments/tem");
  req.mutable_instrument()->set_display_name("Cryo-TEM Krios G4");
  req.mutable_instrument()->set_category("ignored-not-in-mask");
  req.mutable_instrument()->set_etag(created.etag());
  req.mutable_update_mask()->add_paths("display_name");
  clock_.Advance(absl::Minutes(1));
  v1::Instrument updated;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::UpdateInstrument, req, &updated, admin_).ok());
  EXPECT_EQ(updated.display_name(), "Cryo-TEM Krios G4");
  EXPECT_EQ(updated.category(), "electron-microscopy");
  EXPECT_EQ(updated.etag(), "2");
  EXPECT_EQ(FromProto(updated.update_time()), clock_.Now());
  EXPECT_EQ(updated.create_time().seconds(), created.create_time().seconds());

  auto s = Call(&v1::InventoryService::Stub::UpdateInstrument, req, &updated, admin_);  // stale etag "1"
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(GrpcErrorReason(s), "ETAG_MISMATCH");

  req.mutable_instrument()->clear_etag();
  req.mutable_update_mask()->add_paths("owner_organization");
  s = Call(&v1::InventoryService::Stub::UpdateInstrument, req, &updated, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_UPDATE_MASK");
}

TEST_F(InventoryServiceTest, AUserStoredWithARefusedAddressCanStillBeDisabledButNotGiveItAgain) {
  MakeOrg("lab", v1::MEMBER, "CORE");
  MakeUser("ana", "lab");
  // Stored before addresses were checked strictly.
  auto doc = pool_->Command({"HGET", "{inventory}:user:ana", "d"});
  ASSERT_TRUE(doc.ok() && !doc->str.empty());
  v1::User stored;
  ASSERT_TRUE(stored.ParseFromString(doc->str));
  stored.set_email("ana lopez <ana@lab.example>");
  stored.set_external_subject("ana\tlopez");  // a tab: refused since, but kept
  ASSERT_TRUE(pool_->Command({"HSET", "{inventory}:user:ana", "d", stored.SerializeAsString()}).ok());
  v1::UpdateUserRequest req;
  req.mutable_user()->set_name("users/ana");
  req.mutable_user()->set_disabled(true);
  req.mutable_update_mask()->add_paths("disabled");
  v1::User updated;
  auto s = Call(&v1::InventoryService::Stub::UpdateUser, req, &updated, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(updated.disabled());
  EXPECT_EQ(updated.email(), "ana lopez <ana@lab.example>");
  EXPECT_EQ(updated.external_subject(), "ana\tlopez");
  // Setting that address (or another bad one) is still refused.
  req.mutable_user()->set_email("eve@lab.example\r\nBcc: x@y.example");
  req.mutable_update_mask()->add_paths("email");
  s = Call(&v1::InventoryService::Stub::UpdateUser, req, &updated, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// A facility stored with "localtime" before zones had to be IANA names can
// still be renamed (readers use the default zone for it); setting such a
// zone is refused.
TEST_F(InventoryServiceTest, AFacilityStoredWithARefusedZoneCanStillBeRenamed) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  auto doc = pool_->Command({"HGET", "{inventory}:facility:fac", "d"});
  ASSERT_TRUE(doc.ok() && !doc->str.empty());
  v1::Facility stored;
  ASSERT_TRUE(stored.ParseFromString(doc->str));
  stored.set_time_zone("localtime");
  ASSERT_TRUE(pool_->Command({"HSET", "{inventory}:facility:fac", "d", stored.SerializeAsString()}).ok());
  v1::UpdateFacilityRequest req;
  req.mutable_facility()->set_name("facilities/fac");
  req.mutable_facility()->set_display_name("Imaging hall");
  req.mutable_update_mask()->add_paths("display_name");
  v1::Facility updated;
  auto s = Call(&v1::InventoryService::Stub::UpdateFacility, req, &updated, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(updated.display_name(), "Imaging hall");
  EXPECT_EQ(updated.time_zone(), "localtime");
  req.mutable_facility()->set_time_zone("Fixed/UTC+08:00:00");
  req.mutable_update_mask()->add_paths("time_zone");
  s = Call(&v1::InventoryService::Stub::UpdateFacility, req, &updated, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
}

TEST_F(InventoryServiceTest, RetiredInstrumentIsFinal) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  v1::SetInstrumentStateRequest req;
  req.set_name("instruments/tem");
  req.set_state(v1::RETIRED);
  req.set_reason("end of life");
  v1::Instrument out;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out, admin_).ok());
  req.set_state(v1::ACTIVE);
  auto s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "TRANSITION_NOT_ALLOWED");
}

// ------------------------------------------------------------------ pagination

TEST_F(InventoryServiceTest, PaginatesHundredsOfInstrumentsWithFilters) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("other", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeFacility("fac2", "other");
  for (int i = 0; i < 300; ++i) {
    const bool mine = i % 3 != 0;
    MakeInstrument(absl::StrFormat("i%03d", i), mine ? "owner" : "other", mine ? "fac" : "fac2",
                   i % 2 == 0 ? "nmr" : "mass-spectrometry");
  }
  auto collect = [&](v1::ListInstrumentsRequest req) {
    std::vector<std::string> names;
    std::string token;
    int pages = 0;
    do {
      req.set_page_token(token);
      v1::ListInstrumentsResponse resp;
      auto s = Call(&v1::InventoryService::Stub::ListInstruments, req, &resp, admin_);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_LE(resp.instruments_size(), req.page_size());
      for (const auto& in : resp.instruments()) names.push_back(in.name());
      token = resp.next_page_token();
      ++pages;
    } while (!token.empty() && pages < 100);
    return names;
  };
  v1::ListInstrumentsRequest all;
  all.set_page_size(40);
  auto names = collect(all);
  ASSERT_EQ(names.size(), 300u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), 300u);

  v1::ListInstrumentsRequest filtered;
  filtered.set_page_size(7);
  filtered.set_owner_organization("organizations/owner");
  filtered.set_category("nmr");
  names = collect(filtered);
  // i even and i % 3 != 0: 150 even numbers minus 50 multiples of 6.
  EXPECT_EQ(names.size(), 100u);

  // A token from one query is refused by another.
  v1::ListInstrumentsResponse first;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListInstruments, filtered, &first, admin_).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  v1::ListInstrumentsRequest other = filtered;
  other.set_category("mass-spectrometry");
  other.set_page_token(first.next_page_token());
  v1::ListInstrumentsResponse resp;
  auto s = Call(&v1::InventoryService::Stub::ListInstruments, other, &resp, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_PAGE_TOKEN");
}

// A page token is good only for the list, the filters and the caller it was
// issued to, and only as issued.
TEST_F(InventoryServiceTest, PageTokenRefusedOnAnotherListForgedOrFromAnotherCaller) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeOrg("b", v1::MEMBER, "CORE");
  MakeOrg("c", v1::MEMBER, "CORE");
  MakeFacility("fa", "a");
  MakeFacility("fb", "a");
  MakeFacility("fc", "a");
  v1::ListFacilitiesRequest facilities;
  facilities.set_page_size(1);
  v1::ListFacilitiesResponse first;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListFacilities, facilities, &first, admin_).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  auto expect_refused = [](const grpc::Status& s) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_PAGE_TOKEN");
    EXPECT_NE(s.error_message().find("without page_token"), std::string::npos) << s.error_message();
  };

  // The same token continues the same list for the same caller.
  facilities.set_page_token(first.next_page_token());
  v1::ListFacilitiesResponse second;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListFacilities, facilities, &second, admin_).ok());
  ASSERT_EQ(second.facilities_size(), 1);
  EXPECT_EQ(second.facilities(0).name(), "facilities/fb");

  // Another list with the same (empty) filters.
  v1::ListOrganizationsRequest orgs;
  orgs.set_page_size(1);
  orgs.set_page_token(first.next_page_token());
  v1::ListOrganizationsResponse org_resp;
  expect_refused(Call(&v1::InventoryService::Stub::ListOrganizations, orgs, &org_resp, admin_));

  // A token edited by the client.
  facilities.set_page_token(testing::ForgePageToken(first.next_page_token()));
  ASSERT_FALSE(facilities.page_token().empty());
  expect_refused(Call(&v1::InventoryService::Stub::ListFacilities, facilities, &second, admin_));
  facilities.set_page_token("bm90LWEtdG9rZW4");  // base64url of "not-a-token"
  expect_refused(Call(&v1::InventoryService::Stub::ListFacilities, facilities, &second, admin_));

  // Another caller presenting the administrator's token.
  facilities.set_page_token(first.next_page_token());
  expect_refused(Call(&v1::InventoryService::Stub::ListFacilities, facilities, &second,
                      Token("u-lab", "a", {Role::kLabUser})));
}

TEST_F(InventoryServiceTest, NegativePageSizeIsInvalidField) {
  v1::ListFacilitiesRequest facilities;
  facilities.set_page_size(-1);
  v1::ListFacilitiesResponse resp;
  auto s = Call(&v1::InventoryService::Stub::ListFacilities, facilities, &resp, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"page_size"});
}

// ------------------------------------------------------------------ rates

TEST_F(InventoryServiceTest, LooksUpRateByDateAndPayerClass) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("core", v1::MEMBER, "CORE");
  MakeOrg("general", v1::MEMBER, "GENERAL");
  MakeOrg("outsider", v1::NON_MEMBER);
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const absl::Time t0 = clock_.Now();
  MakeRate("tem", labshare::type::v1::MEMBER, "", 80000, t0);
  MakeRate("tem", labshare::type::v1::MEMBER, "CORE", 60000, t0);
  MakeRate("tem", labshare::type::v1::NON_MEMBER, "", 150000, t0);
  MakeRate("tem", labshare::type::v1::NON_MEMBER, "", 180000, t0 + absl::Hours(24 * 30));

  auto lookup = [&](const std::string& org, absl::Time at, int64_t* price, int* cls) {
    v1::LookupRateRequest req;
    req.set_instrument("instruments/tem");
    req.set_mode(labshare::type::v1::ON_SITE);
    req.set_payer_organization("organizations/" + org);
    *req.mutable_time() = ToProto(at);
    v1::LookupRateResponse resp;
    auto s = Call(&v1::InventoryService::Stub::LookupRate, req, &resp, admin_);
    *price = resp.rate().price().amount_minor();
    *cls = resp.payer_class();
    return s;
  };
  int64_t price = 0;
  int cls = 0;
  ASSERT_TRUE(lookup("core", t0 + absl::Hours(1), &price, &cls).ok());
  EXPECT_EQ(price, 60000);
  EXPECT_EQ(cls, labshare::type::v1::MEMBER);
  ASSERT_TRUE(lookup("general", t0 + absl::Hours(1), &price, &cls).ok());
  EXPECT_EQ(price, 80000);  // no GENERAL line: the member line without tier
  ASSERT_TRUE(lookup("outsider", t0 + absl::Hours(24 * 30) - absl::Seconds(1), &price, &cls).ok());
  EXPECT_EQ(price, 150000);
  ASSERT_TRUE(lookup("outsider", t0 + absl::Hours(24 * 30), &price, &cls).ok());
  EXPECT_EQ(price, 180000);
  EXPECT_EQ(cls, labshare::type::v1::NON_MEMBER);
  auto s = lookup("outsider", t0 - absl::Seconds(1), &price, &cls);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GrpcErrorReason(s), "NO_RATE");
  s = lookup("owner", t0, &price, &cls);
  EXPECT_EQ(GrpcErrorReason(s), "NO_RATE");  // no OWNER line
  // A mode that is no SharingMode value is a bad field, not "no rate".
  v1::LookupRateRequest odd;
  odd.set_instrument("instruments/tem");
  odd.set_mode(static_cast<labshare::type::v1::SharingMode>(42));
  odd.set_payer_organization("organizations/core");
  v1::LookupRateResponse none;
  s = Call(&v1::InventoryService::Stub::LookupRate, odd, &none, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");

  v1::ListRatesRequest list;
  list.set_parent("instruments/tem");
  v1::ListRatesResponse rates;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListRates, list, &rates, admin_).ok());
  EXPECT_EQ(rates.rates_size(), 4);  // history kept
}

// (A line may be back-dated: inventory_drift_test.)
TEST_F(InventoryServiceTest, RateLinesAreNeverDuplicated) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const absl::Time t0 = clock_.Now();
  MakeRate("tem", labshare::type::v1::NON_MEMBER, "", 150000, t0 + absl::Hours(1));

  v1::CreateRateRequest req;
  req.set_parent("instruments/tem");
  auto* r = req.mutable_rate();
  r->set_mode(labshare::type::v1::ON_SITE);
  r->set_payer_class(labshare::type::v1::NON_MEMBER);
  r->set_unit(v1::PER_HOUR);
  r->mutable_price()->set_currency_code("CNY");
  r->mutable_price()->set_amount_minor(1);
  *r->mutable_effective_time() = ToProto(t0 + absl::Hours(1));
  v1::Rate out;
  auto s = Call(&v1::InventoryService::Stub::CreateRate, req, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "RATE_EXISTS");

  r->set_mode(labshare::type::v1::LEASE);
  r->set_unit(v1::RATE_PER_DAY);
  r->clear_effective_time();
  s = Call(&v1::InventoryService::Stub::CreateRate, req, &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(s), "MODE_NOT_OFFERED");
}

// ------------------------------------------------------------------ qualifications

TEST_F(InventoryServiceTest, QualificationLapsesWithoutUseAndUseRenewsIt) {
  const absl::Time granted = clock_.Now();
  v1::Qualification q;
  ASSERT_NO_FATAL_FAILURE(GrantAnaOnTem(&q));
  EXPECT_EQ(q.name(), "instruments/tem/qualifications/ana");
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_EQ(FromProto(q.expire_time()), granted + absl::Hours(24 * 30));

  // Tokens are minted at the fake clock's now, so mint after moving it.
  auto Fresh = [&] { return Token("admin", "", {Role::kConsortiumAdmin}); };
  v1::GetQualificationRequest get;
  get.set_name(q.name());
  clock_.Set(granted + absl::Hours(24 * 30) - absl::Seconds(1));
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GetQualification, get, &q, Fresh()).ok());
  EXPECT_EQ(q.state(), v1::VALID);
  clock_.Set(granted + absl::Hours(24 * 30));
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GetQualification, get, &q, Fresh()).ok());
  EXPECT_EQ(q.state(), v1::EXPIRED);

  v1::RecordQualificationUseRequest use;
  use.set_name(q.name());
  *use.mutable_use_time() = ToProto(granted + absl::Hours(24 * 20));
  auto s = Call(&v1::InventoryService::Stub::RecordQualificationUse, use, &q,
                Token("ana", "owner", {Role::kLabUser}));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // As booking calls it: with its service certificate (mutual TLS).
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  grpc::ClientContext service_ctx;
  ASSERT_TRUE(booking->RecordQualificationUse(&service_ctx, use, &q).ok());
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_EQ(FromProto(q.expire_time()), granted + absl::Hours(24 * 50));

  // An older use (a late check-out report) changes nothing and publishes nothing.
  const long long events = OutboxLength();
  *use.mutable_use_time() = ToProto(granted + absl::Hours(24 * 10));
  grpc::ClientContext older_ctx;
  ASSERT_TRUE(booking->RecordQualificationUse(&older_ctx, use, &q).ok());
  EXPECT_EQ(FromProto(q.last_use_time()), granted + absl::Hours(24 * 20));
  EXPECT_EQ(FromProto(q.expire_time()), granted + absl::Hours(24 * 50));
  EXPECT_EQ(OutboxLength(), events);
}

// ListRates: "ordered by key then effective_time" (key: mode, payer class,
// tier, entry): a tier sorts after no tier and before its extensions; rate
// indexes written in the first format are rewritten at start-up
// (MigrateRateIndexes) and keep their ids.
TEST_F(InventoryServiceTest, ListRatesIsOrderedByKeyThenEffectiveTime) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const absl::Time t0 = clock_.Now() + absl::Hours(1);
  const v1::Rate core = MakeRate("tem", labshare::type::v1::MEMBER, "CORE", 60000, t0);
  const v1::Rate core2 = MakeRate("tem", labshare::type::v1::MEMBER, "CORE2", 50000, t0);
  const v1::Rate later = MakeRate("tem", labshare::type::v1::MEMBER, "", 90000, t0 + absl::Hours(24));
  const v1::Rate plain = MakeRate("tem", labshare::type::v1::MEMBER, "", 80000, t0);
  const std::vector<std::string> expected = {plain.name(), later.name(), core.name(), core2.name()};
  auto listed = [&] {
    v1::ListRatesRequest list;
    list.set_parent("instruments/tem");
    list.set_page_size(3);  // across a page boundary
    std::vector<std::string> names;
    do {
      v1::ListRatesResponse out;
      EXPECT_TRUE(Call(&v1::InventoryService::Stub::ListRates, list, &out, admin_).ok());
      for (const auto& r : out.rates()) names.push_back(r.name());
      list.set_page_token(out.next_page_token());
    } while (!list.page_token().empty());
    return names;
  };
  EXPECT_EQ(listed(), expected);

  // The first format: '|' between the fields.
  auto members = pool_->Command({"ZRANGE", keys::Rates("tem"), "0", "-1"});
  ASSERT_TRUE(members.ok());
  ASSERT_EQ(members->elements.size(), 4u);
  for (const auto& m : members->elements) {
    std::string old = m.str;
    std::replace(old.begin(), old.end(), kRateKeySeparator, '|');
    ASSERT_EQ(Redis({"ZREM", keys::Rates("tem"), m.str}), 1);
    ASSERT_EQ(Redis({"ZADD", keys::Rates("tem"), "0", old}), 1);
  }
  EXPECT_NE(listed(), expected);  // '|' sorts after letters: CORE before no tier
  auto moved = manager_->MigrateRateIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 4);
  EXPECT_EQ(listed(), expected);
  EXPECT_EQ(*manager_->MigrateRateIndexes(), 0);
  // Ids did not change: the same line again is RATE_EXISTS.
  v1::Rate out;
  auto s = Call(&v1::InventoryService::Stub::CreateRate,
                RateRequest("tem", labshare::type::v1::MEMBER, "CORE", core.price().amount_minor(), t0), &out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(GrpcErrorReason(s), "RATE_EXISTS");
}

// types.proto: INVALID_FIELD names the field; an enum filter outside its
// enum is that filter's field.
TEST_F(InventoryServiceTest, AnUnknownEnumFilterNamesItsField) {
  v1::ListOrganizationsRequest orgs;
  orgs.set_membership_state(static_cast<v1::MembershipState>(42));
  v1::ListOrganizationsResponse orgs_out;
  auto s = Call(&v1::InventoryService::Stub::ListOrganizations, orgs, &orgs_out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"membership_state"});
  v1::ListInstrumentsRequest instruments;
  instruments.set_state(static_cast<v1::InstrumentState>(42));
  v1::ListInstrumentsResponse instruments_out;
  s = Call(&v1::InventoryService::Stub::ListInstruments, instruments, &instruments_out, admin_);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"state"});
}

// types.proto: a retry with the same request_id returns the first answer,
// other content under it is REQUEST_ID_REUSED; also when the first answer
// was "an older use changes nothing".
TEST_F(InventoryServiceTest, RecordQualificationUseKeepsAnUnchangedAnswerForItsRequestId) {
  const absl::Time t0 = clock_.Now();
  v1::Qualification q;
  ASSERT_NO_FATAL_FAILURE(GrantAnaOnTem(&q));
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  auto use_at = [&](absl::Duration after, const std::string& request_id, v1::Qualification* out) {
    v1::RecordQualificationUseRequest use;
    use.set_name(q.name());
    use.set_request_id(request_id);
    *use.mutable_use_time() = ToProto(t0 + after);
    grpc::ClientContext ctx;
    return booking->RecordQualificationUse(&ctx, use, out);
  };
  v1::Qualification out;
  ASSERT_TRUE(use_at(absl::Hours(24 * 20), "use-20", &out).ok());
  const long long events = OutboxLength();
  ASSERT_TRUE(use_at(absl::Hours(24 * 10), "use-10", &out).ok());  // older: unchanged
  EXPECT_EQ(FromProto(out.last_use_time()), t0 + absl::Hours(24 * 20));
  EXPECT_EQ(OutboxLength(), events);
  // A later use moves last_use on; the retry of "use-10" still answers 20 days.
  ASSERT_TRUE(use_at(absl::Hours(24 * 40), "use-40", &out).ok());
  ASSERT_TRUE(use_at(absl::Hours(24 * 10), "use-10", &out).ok());
  EXPECT_EQ(FromProto(out.last_use_time()), t0 + absl::Hours(24 * 20));
  // Other content under "use-10": refused, nothing recorded.
  grpc::Status reused = use_at(absl::Hours(24 * 50), "use-10", &out);
  EXPECT_EQ(reused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(GrpcErrorReason(reused), "REQUEST_ID_REUSED");
  v1::GetQualificationRequest get;
  get.set_name(q.name());
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GetQualification, get, &out,
                   Token("admin", "", {Role::kConsortiumAdmin})).ok());
  EXPECT_EQ(FromProto(out.last_use_time()), t0 + absl::Hours(24 * 40));
  EXPECT_EQ(OutboxLength(), events + 1);
}

// ------------------------------------------------------------------ access

TEST_F(InventoryServiceTest, CheckAccessAnswersRateAndEveryReason) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("lab", v1::MEMBER, "GENERAL");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "lab");
  const absl::Time t0 = clock_.Now();
  MakeRate("tem", labshare::type::v1::MEMBER, "", 80000, t0);

  v1::CheckAccessRequest req;
  req.set_user("users/ana");
  req.set_instrument("instruments/tem");
  req.set_mode(labshare::type::v1::ON_SITE);
  *req.mutable_interval()->mutable_start_time() = ToProto(t0 + absl::Hours(24));
  *req.mutable_interval()->mutable_end_time() = ToProto(t0 + absl::Hours(26));
  const std::string ana = Token("ana", "lab", {Role::kLabUser});
  v1::CheckAccessResponse resp;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CheckAccess, req, &resp, ana).ok());
  EXPECT_FALSE(resp.allowed());
  ASSERT_EQ(resp.denials_size(), 1);
  EXPECT_EQ(resp.denials(0).code(), v1::QUALIFICATION_MISSING);
  EXPECT_EQ(resp.rate().price().amount_minor(), 80000);
  EXPECT_EQ(resp.payer_class(), labshare::type::v1::MEMBER);

  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification q;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GrantQualification, grant, &q, admin_).ok());
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CheckAccess, req, &resp, ana).ok());
  EXPECT_TRUE(resp.allowed());
  EXPECT_EQ(resp.denials_size(), 0);
  EXPECT_EQ(resp.tier(), "GENERAL");

  v1::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(t0 + absl::Hours(25));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(t0 + absl::Hours(30));
  mw.mutable_maintenance_window()->set_reason("cryo refill");
  v1::MaintenanceWindow window;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  *req.mutable_interval()->mutable_end_time() = ToProto(t0 + absl::Hours(24) + absl::Minutes(30));
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CheckAccess, req, &resp, ana).ok());
  std::vector<int> codes;
  for (const auto& d : resp.denials()) codes.push_back(d.code());
  EXPECT_EQ(codes, std::vector<int>{v1::BLOCK_TOO_SHORT});  // window does not touch [24h, 24h30)

  *req.mutable_interval()->mutable_end_time() = ToProto(t0 + absl::Hours(26));
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CheckAccess, req, &resp, ana).ok());
  codes.clear();
  for (const auto& d : resp.denials()) codes.push_back(d.code());
  EXPECT_EQ(codes, std::vector<int>{v1::DURING_MAINTENANCE});

  req.set_user("users/someone-else");
  auto s = Call(&v1::InventoryService::Stub::CheckAccess, req, &resp, ana);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(GrpcErrorReason(s), "ORGANIZATION_SCOPE");
}

// ------------------------------------------------------------------ contract audit

// SetInstrumentState takes an etag like the other changes of an instrument;
// a stale one is ABORTED (ETAG_MISMATCH), as its Errors list says.
TEST_F(InventoryServiceTest, SetInstrumentStateWithAStaleEtagIsEtagMismatch) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const long long events = OutboxLength();
  v1::SetInstrumentStateRequest req;
  req.set_name("instruments/tem");
  req.set_state(v1::MAINTENANCE);
  req.set_reason("cleaning");
  req.set_etag("7");
  v1::Instrument out;
  auto s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out, admin_);
  ExpectError(s, grpc::StatusCode::ABORTED, "ETAG_MISMATCH");
  EXPECT_EQ(OutboxLength(), events);
  req.set_etag("1");
  s = Call(&v1::InventoryService::Stub::SetInstrumentState, req, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.state(), v1::MAINTENANCE);
  EXPECT_EQ(out.etag(), "2");
}

// Get and RecordQualificationUse name a missing parent instrument
// INSTRUMENT_NOT_FOUND (as RevokeQualification does), a missing
// qualification of an existing instrument QUALIFICATION_NOT_FOUND.
TEST_F(InventoryServiceTest, QualificationOfAMissingInstrumentIsInstrumentNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  auto expect = [&](const std::string& name, const std::string& reason) {
    v1::GetQualificationRequest get;
    get.set_name(name);
    v1::Qualification q;
    auto s = Call(&v1::InventoryService::Stub::GetQualification, get, &q, admin_);
    ExpectError(s, grpc::StatusCode::NOT_FOUND, reason, name);
    v1::RecordQualificationUseRequest use;
    use.set_name(name);
    *use.mutable_use_time() = ToProto(clock_.Now());
    grpc::ClientContext ctx;
    s = booking->RecordQualificationUse(&ctx, use, &q);
    ExpectError(s, grpc::StatusCode::NOT_FOUND, reason, name);
  };
  expect("instruments/nope/qualifications/ana", "INSTRUMENT_NOT_FOUND");
  expect("instruments/tem/qualifications/ana", "QUALIFICATION_NOT_FOUND");
}

// CheckAccess reports the user's qualification for ON_SITE whenever there
// is one, also on an instrument whose on-site use needs none (validity 0).
TEST_F(InventoryServiceTest, CheckAccessReportsTheQualificationAlsoWhenNoneIsNeeded) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  v1::CreateInstrumentRequest create;
  create.set_instrument_id("tem");
  *create.mutable_instrument() = InstrumentSpec("owner", "fac");
  create.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->set_qualification_validity_days(0);
  v1::Instrument in;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CreateInstrument, create, &in, admin_).ok());
  MakeUser("ana", "owner");
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification q;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::GrantQualification, grant, &q, admin_).ok());

  const absl::Time t0 = clock_.Now();
  v1::CheckAccessRequest req;
  req.set_user("users/ana");
  req.set_instrument("instruments/tem");
  req.set_mode(labshare::type::v1::ON_SITE);
  *req.mutable_interval()->mutable_start_time() = ToProto(t0 + absl::Hours(24));
  *req.mutable_interval()->mutable_end_time() = ToProto(t0 + absl::Hours(26));
  v1::CheckAccessResponse resp;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::CheckAccess, req, &resp,
                   Token("ana", "owner", {Role::kLabUser})).ok());
  EXPECT_TRUE(resp.allowed());  // the owner's own use, free
  ASSERT_TRUE(resp.has_qualification());
  EXPECT_EQ(resp.qualification().name(), "instruments/tem/qualifications/ana");
  EXPECT_EQ(resp.qualification().state(), v1::VALID);
}

// A stored record that no longer parses is INTERNAL (CORRUPT_DOCUMENT), the
// code types.proto gives it, on reads and on changes alike.
TEST_F(InventoryServiceTest, AnUnreadableStoredRecordIsInternalCorruptDocument) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  // A length-delimited field claiming more bytes than follow.
  ASSERT_EQ(Redis({"HSET", keys::Org("owner"), "d", std::string("\x0a\x05" "ab")}), 0);
  v1::GetOrganizationRequest get;
  get.set_name("organizations/owner");
  v1::Organization out;
  auto s = Call(&v1::InventoryService::Stub::GetOrganization, get, &out, admin_);
  ExpectError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT");
  v1::ChangeMembershipRequest change;
  change.set_name("organizations/owner");
  change.set_membership_state(v1::SUSPENDED);
  change.set_reason("audit");
  s = Call(&v1::InventoryService::Stub::ChangeMembership, change, &out, admin_);
  ExpectError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT");
  // A list does not leave it out silently, CheckAccess does not read it as empty.
  v1::ListOrganizationsResponse listed;
  s = Call(&v1::InventoryService::Stub::ListOrganizations, v1::ListOrganizationsRequest(), &listed, admin_);
  ExpectError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT");
  MakeOrg("lab", v1::MEMBER, "GENERAL");
  MakeFacility("fac", "lab");
  MakeInstrument("tem", "lab", "fac");
  MakeUser("ana", "lab");
  v1::CheckAccessRequest check;
  check.set_user("users/ana");
  check.set_instrument("instruments/tem");
  check.set_payer_organization("organizations/owner");
  check.set_mode(labshare::type::v1::ON_SITE);
  *check.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(48));
  *check.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(49));
  v1::CheckAccessResponse access;
  s = Call(&v1::InventoryService::Stub::CheckAccess, check, &access, admin_);
  ExpectError(s, grpc::StatusCode::INTERNAL, "CORRUPT_DOCUMENT");
}

// ------------------------------------------------------------------ operator change

// Facility "fac" of "owner" run by "oldop", with instruments tem and sem;
// "fac2" (run by its owner) with "other".
class OperatorChangeTest : public InventoryServiceTest {
 protected:
  void SetUp() override {
    InventoryServiceTest::SetUp();
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeOrg("oldop", v1::MEMBER, "CORE");
    MakeOrg("newop", v1::MEMBER, "CORE");
    ASSERT_EQ(MakeFacility("fac", "owner", "oldop").operator_organization(), "organizations/oldop");
    MakeFacility("fac2", "owner");
    EXPECT_EQ(MakeInstrument("tem", "owner", "fac").operator_organization(), "organizations/oldop");
    MakeInstrument("sem", "owner", "fac");
    MakeInstrument("other", "owner", "fac2");
  }

  grpc::Status ChangeOperator(const std::string& to, const std::string& request_id, v1::Facility* out) {
    v1::UpdateFacilityRequest req;
    req.mutable_facility()->set_name("facilities/fac");
    req.mutable_facility()->set_operator_organization("organizations/" + to);
    req.mutable_update_mask()->add_paths("operator_organization");
    req.set_request_id(request_id);
    return Call(&v1::InventoryService::Stub::UpdateFacility, req, out, admin_);
  }

  v1::Instrument Get(const std::string& id) {
    v1::GetInstrumentRequest get;
    get.set_name("instruments/" + id);
    v1::Instrument out;
    auto s = Call(&v1::InventoryService::Stub::GetInstrument, get, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  grpc::Status Rename(const std::string& id, const std::string& token) {
    v1::UpdateInstrumentRequest req;
    req.mutable_instrument()->set_name("instruments/" + id);
    req.mutable_instrument()->set_display_name("Renamed");
    req.mutable_update_mask()->add_paths("display_name");
    v1::Instrument out;
    return Call(&v1::InventoryService::Stub::UpdateInstrument, req, &out, token);
  }

  grpc::Status DeclareWindow(const std::string& id, const std::string& token) {
    v1::CreateMaintenanceWindowRequest mw;
    mw.set_parent("instruments/" + id);
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(25));
    *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(30));
    mw.mutable_maintenance_window()->set_reason("cryo refill");
    v1::MaintenanceWindow out;
    return Call(&v1::InventoryService::Stub::CreateMaintenanceWindow, mw, &out, token);
  }
};

TEST_F(OperatorChangeTest, ANewOperatorTakesOverEveryInstrumentOfTheFacilityInOneStep) {
  const long long events = OutboxLength();
  clock_.Advance(absl::Minutes(5));
  v1::Facility first;
  ASSERT_TRUE(ChangeOperator("newop", "op-1", &first).ok());
  EXPECT_EQ(first.operator_organization(), "organizations/newop");

  for (const std::string id : {"tem", "sem"}) {
    const v1::Instrument in = Get(id);
    EXPECT_EQ(in.operator_organization(), "organizations/newop") << id;
    EXPECT_EQ(in.etag(), "2") << id;
    EXPECT_EQ(FromProto(in.update_time()), clock_.Now()) << id;
  }
  const v1::Instrument other = Get("other");
  EXPECT_EQ(other.operator_organization(), "organizations/owner");
  EXPECT_EQ(other.etag(), "1");
  v1::ListInstrumentsRequest list;
  list.set_facility("facilities/fac");
  v1::ListInstrumentsResponse listed;
  ASSERT_TRUE(Call(&v1::InventoryService::Stub::ListInstruments, list, &listed, admin_).ok());
  ASSERT_EQ(listed.instruments_size(), 2);
  for (const auto& in : listed.instruments()) EXPECT_EQ(in.operator_organization(), "organizations/newop");

  // The facility's event, then one InstrumentChanged per instrument moved.
  ASSERT_EQ(OutboxLength(), events + 3);
  const std::vector<v1::InventoryEvent> published = LastEvents(3);
  ASSERT_EQ(published.size(), 3u);
  ASSERT_TRUE(published[0].has_facility_changed());
  EXPECT_EQ(published[0].facility_changed().facility().operator_organization(), "organizations/newop");
  std::set<std::string> moved, event_ids;
  for (const auto& e : published) {
    EXPECT_EQ(e.header().request_id(), "op-1");
    EXPECT_EQ(e.header().actor(), "users/admin");
    event_ids.insert(e.header().event_id());
  }
  EXPECT_EQ(event_ids.size(), 3u);
  for (size_t i = 1; i < published.size(); ++i) {
    ASSERT_TRUE(published[i].has_instrument_changed());
    const auto& changed = published[i].instrument_changed();
    EXPECT_EQ(changed.kind(), v1::UPDATED);
    EXPECT_EQ(changed.instrument().operator_organization(), "organizations/newop");
    EXPECT_EQ(changed.instrument().etag(), "2");
    moved.insert(changed.instrument().name());
  }
  EXPECT_EQ(moved, (std::set<std::string>{"instruments/sem", "instruments/tem"}));

  // A retry answers the same and writes nothing again.
  const long long keys_before = KeyCount();
  v1::Facility again;
  ASSERT_TRUE(ChangeOperator("newop", "op-1", &again).ok());
  EXPECT_EQ(again.SerializeAsString(), first.SerializeAsString());
  EXPECT_EQ(OutboxLength(), events + 3);
  EXPECT_EQ(KeyCount(), keys_before);
  EXPECT_EQ(Get("tem").etag(), "2");

  // Naming the same operator again changes nothing: no instrument moves,
  // and the facility is neither written nor published (inventory_events.proto).
  v1::Facility same;
  ASSERT_TRUE(ChangeOperator("newop", "op-2", &same).ok());
  EXPECT_EQ(OutboxLength(), events + 3);
  EXPECT_EQ(same.etag(), first.etag());
  EXPECT_EQ(Get("tem").etag(), "2");
}

TEST_F(OperatorChangeTest, TheNewOperatorsStaffManageTheInstrumentsAndTheOldOperatorsNoLonger) {
  const std::string old_staff = Token("olds", "oldop", {Role::kFacilityStaff});
  const std::string new_staff = Token("news", "newop", {Role::kFacilityStaff});
  v1::Facility changed;
  ASSERT_TRUE(ChangeOperator("newop", "op-1", &changed).ok());

  grpc::Status s = Rename("tem", old_staff);
  ExpectError(s, grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE");
  s = DeclareWindow("tem", old_staff);
  ExpectError(s, grpc::StatusCode::PERMISSION_DENIED, "ORGANIZATION_SCOPE");
  s = Rename("tem", new_staff);
  EXPECT_TRUE(s.ok()) << s.error_message();
  s = DeclareWindow("sem", new_staff);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// Facility.operator_organization "defaults to the owner": named in the mask
// and left empty, the owner runs the site again (as CreateFacility without
// one), and takes over its instruments in the same step.
TEST_F(OperatorChangeTest, AClearedOperatorIsTheOwnerAgain) {
  v1::UpdateFacilityRequest req;
  req.mutable_facility()->set_name("facilities/fac");
  req.mutable_update_mask()->add_paths("operator_organization");
  v1::Facility changed;
  grpc::Status s = Call(&v1::InventoryService::Stub::UpdateFacility, req, &changed, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(changed.operator_organization(), "organizations/owner");
  EXPECT_EQ(Get("tem").operator_organization(), "organizations/owner");
  EXPECT_EQ(Get("sem").operator_organization(), "organizations/owner");
}

TEST_F(OperatorChangeTest, InstrumentsRegisteredBeforeTheFacilityIndexMoveAfterTheBackfill) {
  // As stored by a version without the facility's instrument index.
  ASSERT_EQ(Redis({"DEL", keys::FacilityInstruments("fac")}), 1);
  ASSERT_EQ(Redis({"DEL", keys::FacilityInstruments("fac2")}), 1);
  auto examined = manager_->BackfillFacilityInstruments();
  ASSERT_TRUE(examined.ok()) << examined.status();
  EXPECT_EQ(*examined, 3);
  EXPECT_EQ(Redis({"ZCARD", keys::FacilityInstruments("fac")}), 2);
  EXPECT_EQ(Redis({"ZCARD", keys::FacilityInstruments("fac2")}), 1);
  // Idempotent.
  ASSERT_TRUE(manager_->BackfillFacilityInstruments().ok());
  EXPECT_EQ(Redis({"ZCARD", keys::FacilityInstruments("fac")}), 2);
  v1::Facility changed;
  ASSERT_TRUE(ChangeOperator("newop", "op-1", &changed).ok());
  EXPECT_EQ(Get("tem").operator_organization(), "organizations/newop");
  EXPECT_EQ(Get("sem").operator_organization(), "organizations/newop");
}

// Not a check: how long UpdateFacility's step blocks Redis when it moves
// LABSHARE_MEASURE_N (default 2000) more instruments; prints the script's time from
// SLOWLOG. Run with --gtest_also_run_disabled_tests --gtest_filter='*DISABLED_Measure*'.
TEST_F(OperatorChangeTest, DISABLED_MeasureTheStepOfALargeFacility) {
  const int n = std::atoi(std::getenv("LABSHARE_MEASURE_N") ? std::getenv("LABSHARE_MEASURE_N") : "2000");
  Principal admin;
  admin.user_id = "admin";
  admin.roles = {Role::kConsortiumAdmin};
  size_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(absl::StrFormat("m%05d", i));
    *req.mutable_instrument() = InstrumentSpec("owner", "fac");
    auto in = manager_->CreateInstrument(admin, req);
    ASSERT_TRUE(in.ok()) << in.status();
    bytes = in->ByteSizeLong();
  }
  Redis({"CONFIG", "SET", "slowlog-log-slower-than", "0"});
  Redis({"SLOWLOG", "RESET"});
  v1::UpdateFacilityRequest req;
  req.mutable_facility()->set_name("facilities/fac");
  req.mutable_facility()->set_operator_organization("organizations/newop");
  req.mutable_update_mask()->add_paths("operator_organization");
  const absl::Time t0 = absl::Now();
  auto out = manager_->UpdateFacility(admin, req);
  const absl::Duration total = absl::Now() - t0;
  ASSERT_TRUE(out.ok()) << out.status();
  auto log = pool_->Command({"SLOWLOG", "GET", "1000"});
  int64_t lua_us = 0;
  for (const auto& e : log->elements) {
    if (e.elements[3].elements[0].str == "EVALSHA" || e.elements[3].elements[0].str == "EVAL") lua_us = std::max<int64_t>(lua_us, e.elements[2].integer);
  }
  Redis({"CONFIG", "SET", "slowlog-log-slower-than", "10000"});
  std::printf("MEASURE n=%d instrument_bytes=%zu lua_us=%lld call_ms=%lld\n", n + 2, bytes,
              static_cast<long long>(lua_us), static_cast<long long>(absl::ToInt64Milliseconds(total)));
}

}  // namespace
}  // namespace labshare::inventory
