// The inventory RPC comments where a third read-only audit found the code
// apart from them (every case fails on the code before): a billing admin's
// UpdateOrganization is refused (ROLE_NOT_ALLOWED, ORGANIZATION_SCOPE)
// before the name is validated; ChangeMembership checks the move before the
// tier; an event's event_time is the time the change stamped on its
// resource; an update that changes nothing writes nothing and publishes
// nothing; User.external_subject holds no control character (nor U+2028,
// U+2029, U+061C), nor do the fapiao fields and Organization.display_name; a revoked
// qualification's use changes nothing; a non_member_horizon of 0 refuses
// every non-member booking; service_entry_id prices TECHNICAL_SERVICE only;
// CheckAccess validates the payer's name before reading the user;
// ListMaintenanceWindows orders windows by start to the nanosecond.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "tests/inventory/inventory_fixture.h"
#include "tests/support/page_tokens.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

// A clock that moves one second every time it is read: a second reading
// within one call shows.
class TickingClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::FromUnixSeconds(1798761600 + ticks_++); }

 private:
  mutable std::atomic<int64_t> ticks_{0};
};

class InventoryAudit3Test : public InventoryServiceTest {
 protected:
  v1::InventoryEvent LastEvent() {
    auto events = LastEvents(1);
    return events.empty() ? v1::InventoryEvent() : events.front();
  }
  // A stored document's bytes and version.
  std::string StoredBytes(const std::string& key) {
    auto d = pool_->Command({"HGET", key, "d"});
    auto v = pool_->Command({"HGET", key, "v"});
    EXPECT_TRUE(d.ok() && v.ok());
    return d.ok() && v.ok() ? d->str + "\nversion " + v->str : "";
  }
  static v1::CheckAccessRequest Access(const std::string& user, const std::string& instrument, absl::Time start,
                                       absl::Time end) {
    v1::CheckAccessRequest req;
    req.set_user(user);
    req.set_instrument(instrument);
    req.set_mode(tv1::ON_SITE);
    *req.mutable_interval()->mutable_start_time() = ToProto(start);
    *req.mutable_interval()->mutable_end_time() = ToProto(end);
    return req;
  }
  static bool Denied(const v1::CheckAccessResponse& r, v1::DenialCode code) {
    for (const auto& d : r.denials()) {
      if (d.code() == code) return true;
    }
    return false;
  }
};

// ------------------------------------------------------------ 1. billing admin before the name

// UpdateOrganization: a billing admin's path other than invoicing_details is
// ROLE_NOT_ALLOWED "for any organisation", another organisation's
// invoicing_details ORGANIZATION_SCOPE; types.proto: "checked before
// validation". A malformed name was INVALID_NAME for both.
TEST_F(InventoryAudit3Test, BillingAdminIsRefusedBeforeTheNameIsValidated) {
  MakeOrg("a", v1::MEMBER, "CORE");
  const std::string billing = Token("bill", "a", {Role::kMemberBillingAdmin});
  const long long outbox = OutboxLength();
  v1::UpdateOrganizationRequest req;
  req.mutable_organization()->set_name("organizations/Bad_Org");
  req.mutable_organization()->set_display_name("Renamed");
  req.mutable_update_mask()->add_paths("display_name");
  v1::Organization out;
  ExpectError(Call(&Stub::UpdateOrganization, req, &out, billing), grpc::StatusCode::PERMISSION_DENIED,
              "ROLE_NOT_ALLOWED", "display_name of a malformed name");
  // An unknown path or a sub-path: ROLE_NOT_ALLOWED too, before the mask's validity.
  for (const std::string path : {"no_such_field", "invoicing_details.phone"}) {
    req.mutable_update_mask()->Clear();
    req.mutable_update_mask()->add_paths(path);
    req.mutable_organization()->set_name("organizations/a");
    ExpectError(Call(&Stub::UpdateOrganization, req, &out, billing), grpc::StatusCode::PERMISSION_DENIED,
                "ROLE_NOT_ALLOWED", path);
  }
  req.mutable_organization()->set_name("organizations/Bad_Org");
  req.mutable_update_mask()->Clear();
  req.mutable_update_mask()->add_paths("invoicing_details");
  ExpectError(Call(&Stub::UpdateOrganization, req, &out, billing), grpc::StatusCode::PERMISSION_DENIED,
              "ORGANIZATION_SCOPE", "invoicing_details of a malformed name");
  // The consortium admin may update any path: the name is validated.
  grpc::Status s = Call(&Stub::UpdateOrganization, req, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "admin, malformed name");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"organization.name"});
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ 2. the move before the tier

// ChangeMembership: NON_MEMBER -> MEMBER is not a transition; without a
// tier it was INVALID_FIELD tier. The move is checked first: whatever the
// tier, TRANSITION_NOT_ALLOWED. An allowed move to MEMBER without a tier is
// still INVALID_FIELD tier.
TEST_F(InventoryAudit3Test, ChangeMembershipChecksTheMoveBeforeTheTier) {
  MakeOrg("n", v1::NON_MEMBER);
  MakeOrg("ap", v1::APPLICANT);
  const long long outbox = OutboxLength();
  v1::ChangeMembershipRequest req;
  req.set_name("organizations/n");
  req.set_membership_state(v1::MEMBER);
  req.set_reason("admitted");
  v1::Organization out;
  for (const std::string tier : {"", "CORE"}) {
    req.set_tier(tier);
    grpc::Status s = Call(&Stub::ChangeMembership, req, &out, admin_);
    ExpectError(s, grpc::StatusCode::FAILED_PRECONDITION, "TRANSITION_NOT_ALLOWED", "tier '" + tier + "'");
  }
  req.set_name("organizations/ap");
  req.set_tier("");
  grpc::Status s = Call(&Stub::ChangeMembership, req, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "applicant without tier");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"tier"});
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ 3. event_time

// EventHeader.event_time: "Service clock time of the state change". With a
// clock that moves on every reading, each event's time is the time its
// change stamped (it was a later reading of the clock).
TEST_F(InventoryAudit3Test, EventTimeIsTheTimeTheChangeStamped) {
  TickingClock tick;
  InventoryManager m(store_.get(), &tick, testing::TestPageTokens());
  Principal admin;
  admin.user_id = "admin";
  admin.roles = {Role::kConsortiumAdmin};
  auto event_time = [&]() { return FromProto(LastEvent().header().event_time()); };

  v1::CreateOrganizationRequest co;
  co.set_organization_id("owner");
  co.mutable_organization()->set_display_name("Owner");
  co.mutable_organization()->set_type(v1::UNIVERSITY);
  co.mutable_organization()->set_membership_state(v1::MEMBER);
  co.mutable_organization()->set_tier("CORE");
  auto org = m.CreateOrganization(admin, co);
  ASSERT_TRUE(org.ok()) << org.status();
  EXPECT_EQ(event_time(), FromProto(org->create_time())) << "CreateOrganization";
  co.set_organization_id("runner");
  ASSERT_TRUE(m.CreateOrganization(admin, co).ok());

  v1::UpdateOrganizationRequest uo;
  uo.mutable_organization()->set_name("organizations/owner");
  uo.mutable_organization()->set_display_name("Owner, renamed");
  auto renamed = m.UpdateOrganization(admin, uo);
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_EQ(event_time(), FromProto(renamed->update_time())) << "UpdateOrganization";

  v1::ChangeMembershipRequest cm;
  cm.set_name("organizations/owner");
  cm.set_membership_state(v1::MEMBER);
  cm.set_tier("GENERAL");
  cm.set_reason("tier change");
  auto changed = m.ChangeMembership(admin, cm);
  ASSERT_TRUE(changed.ok()) << changed.status();
  const v1::InventoryEvent membership = LastEvent();
  EXPECT_EQ(FromProto(membership.header().event_time()), FromProto(changed->update_time())) << "ChangeMembership";
  EXPECT_EQ(FromProto(membership.header().event_time()), FromProto(membership.membership_changed().change().change_time()));

  v1::CreateUserRequest cu;
  cu.set_user_id("ana");
  cu.mutable_user()->set_display_name("Ana");
  cu.mutable_user()->set_organization("organizations/owner");
  cu.mutable_user()->add_roles(tv1::LAB_USER);
  auto user = m.CreateUser(admin, cu);
  ASSERT_TRUE(user.ok()) << user.status();
  EXPECT_EQ(event_time(), FromProto(user->update_time())) << "CreateUser";
  v1::UpdateUserRequest uu;
  uu.mutable_user()->set_name("users/ana");
  uu.mutable_user()->set_display_name("Ana L.");
  auto user2 = m.UpdateUser(admin, uu);
  ASSERT_TRUE(user2.ok()) << user2.status();
  EXPECT_EQ(event_time(), FromProto(user2->update_time())) << "UpdateUser";

  v1::CreateFacilityRequest cf;
  cf.set_facility_id("fac");
  cf.mutable_facility()->set_display_name("Facility");
  cf.mutable_facility()->set_owner_organization("organizations/owner");
  cf.mutable_facility()->mutable_access_policy()->set_allow_members(true);
  auto fac = m.CreateFacility(admin, cf);
  ASSERT_TRUE(fac.ok()) << fac.status();
  EXPECT_EQ(event_time(), FromProto(fac->create_time())) << "CreateFacility";

  v1::CreateInstrumentRequest ci;
  ci.set_instrument_id("tem");
  *ci.mutable_instrument() = InstrumentSpec("owner", "fac");
  auto in = m.CreateInstrument(admin, ci);
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(event_time(), FromProto(in->create_time())) << "CreateInstrument";

  // A new operator: the facility's event and the instrument's, one time.
  v1::UpdateFacilityRequest uf;
  uf.mutable_facility()->set_name("facilities/fac");
  uf.mutable_facility()->set_operator_organization("organizations/runner");
  auto fac2 = m.UpdateFacility(admin, uf);
  ASSERT_TRUE(fac2.ok()) << fac2.status();
  const auto moved = LastEvents(2);
  ASSERT_EQ(moved.size(), 2u);
  EXPECT_EQ(FromProto(moved[0].header().event_time()), FromProto(fac2->update_time())) << "UpdateFacility";
  EXPECT_EQ(FromProto(moved[1].header().event_time()), FromProto(fac2->update_time())) << "the instrument moved with it";
  EXPECT_EQ(FromProto(moved[1].instrument_changed().instrument().update_time()), FromProto(fac2->update_time()));

  v1::UpdateInstrumentRequest ui;
  ui.mutable_instrument()->set_name("instruments/tem");
  ui.mutable_instrument()->set_display_name("Cryo-TEM 2");
  auto in2 = m.UpdateInstrument(admin, ui);
  ASSERT_TRUE(in2.ok()) << in2.status();
  EXPECT_EQ(event_time(), FromProto(in2->update_time())) << "UpdateInstrument";

  v1::SetInstrumentStateRequest ss;
  ss.set_name("instruments/tem");
  ss.set_state(v1::MAINTENANCE);
  auto in3 = m.SetInstrumentState(admin, ss);
  ASSERT_TRUE(in3.ok()) << in3.status();
  EXPECT_EQ(event_time(), FromProto(in3->update_time())) << "SetInstrumentState";

  auto rate = m.CreateRate(admin, RateRequest("tem", tv1::MEMBER, "", 1000, absl::FromUnixSeconds(1798000000)));
  ASSERT_TRUE(rate.ok()) << rate.status();
  EXPECT_EQ(event_time(), FromProto(rate->create_time())) << "CreateRate";

  v1::GrantQualificationRequest gq;
  gq.set_instrument("instruments/tem");
  gq.set_user("users/ana");
  auto q = m.GrantQualification(admin, gq);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(event_time(), FromProto(q->grant_time())) << "GrantQualification";

  v1::CreateMaintenanceWindowRequest cw;
  cw.set_parent("instruments/tem");
  *cw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(tick.Now() + absl::Hours(24));
  *cw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(tick.Now() + absl::Hours(48));
  auto w = m.CreateMaintenanceWindow(admin, cw);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(event_time(), FromProto(w->create_time())) << "CreateMaintenanceWindow";
}

// ------------------------------------------------------------ 4. an update that changes nothing

// inventory_events.proto: "a call that changes nothing ... publishes none".
// The four updates with the stored values: nothing written (etag,
// update_time and the stored bytes stay), no event, the stored resource
// answered, also to a retry with the same request_id; a real change after
// it still moves the etag.
TEST_F(InventoryAudit3Test, AnUpdateThatChangesNothingWritesNothing) {
  const v1::Organization org = MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("runner", v1::MEMBER, "CORE");
  const v1::Facility fac = MakeFacility("fac", "owner", "runner");
  const v1::Instrument in = MakeInstrument("tem", "owner", "fac");
  const v1::User user = MakeUser("ana", "owner");
  clock_.Advance(absl::Minutes(5));  // the tokens last an hour
  const long long outbox = OutboxLength();

  v1::UpdateOrganizationRequest uo;
  *uo.mutable_organization() = org;
  uo.mutable_update_mask()->add_paths("display_name");
  uo.mutable_update_mask()->add_paths("type");
  uo.set_request_id("same-org");
  v1::UpdateUserRequest uu;
  uu.mutable_user()->set_name(user.name());
  uu.mutable_user()->set_display_name(user.display_name());
  uu.mutable_user()->add_roles(tv1::LAB_USER);
  uu.set_request_id("same-user");
  v1::UpdateFacilityRequest uf;
  uf.mutable_facility()->set_name(fac.name());
  uf.mutable_facility()->set_operator_organization("organizations/runner");
  uf.mutable_facility()->set_time_zone("");
  uf.mutable_update_mask()->add_paths("operator_organization");
  uf.mutable_update_mask()->add_paths("time_zone");  // cleared: the default, as stored
  uf.set_request_id("same-facility");
  v1::UpdateInstrumentRequest ui;
  *ui.mutable_instrument() = in;
  ui.mutable_update_mask()->add_paths("modes");
  ui.mutable_update_mask()->add_paths("daily_available_hours");
  ui.set_request_id("same-instrument");

  const std::string org_bytes = StoredBytes(keys::Org("owner"));
  const std::string user_bytes = StoredBytes(keys::User("ana"));
  const std::string fac_bytes = StoredBytes(keys::Facility("fac"));
  const std::string in_bytes = StoredBytes(keys::Instrument("tem"));
  ASSERT_FALSE(org_bytes.empty());
  for (int attempt = 0; attempt < 2; ++attempt) {  // the request, then its retry
    const std::string what = attempt == 0 ? "first" : "retry";
    v1::Organization o;
    grpc::Status s = Call(&Stub::UpdateOrganization, uo, &o, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(o.etag(), org.etag()) << what;
    EXPECT_EQ(FromProto(o.update_time()), FromProto(org.update_time())) << what;
    v1::User u;
    s = Call(&Stub::UpdateUser, uu, &u, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(u.etag(), user.etag()) << what;
    EXPECT_EQ(FromProto(u.update_time()), FromProto(user.update_time())) << what;
    v1::Facility f;
    s = Call(&Stub::UpdateFacility, uf, &f, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(f.etag(), fac.etag()) << what;
    EXPECT_EQ(FromProto(f.update_time()), FromProto(fac.update_time())) << what;
    EXPECT_EQ(f.time_zone(), "Asia/Shanghai");
    v1::Instrument i;
    s = Call(&Stub::UpdateInstrument, ui, &i, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(i.etag(), in.etag()) << what;
    EXPECT_EQ(FromProto(i.update_time()), FromProto(in.update_time())) << what;
    EXPECT_EQ(OutboxLength(), outbox) << what;
    EXPECT_EQ(StoredBytes(keys::Org("owner")), org_bytes) << what;
    EXPECT_EQ(StoredBytes(keys::User("ana")), user_bytes) << what;
    EXPECT_EQ(StoredBytes(keys::Facility("fac")), fac_bytes) << what;
    EXPECT_EQ(StoredBytes(keys::Instrument("tem")), in_bytes) << what;
  }
  // Without a request_id, the same.
  uu.clear_request_id();
  v1::User u;
  ASSERT_TRUE(Call(&Stub::UpdateUser, uu, &u, admin_).ok());
  EXPECT_EQ(u.etag(), user.etag());
  EXPECT_EQ(OutboxLength(), outbox);
  // Other content under a kept request_id is still REQUEST_ID_REUSED.
  uo.mutable_organization()->set_display_name("Owner, renamed");
  v1::Organization o;
  ExpectError(Call(&Stub::UpdateOrganization, uo, &o, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "REQUEST_ID_REUSED", "other content, same id");
  // A real change writes and publishes.
  uo.set_request_id("rename-org");
  ASSERT_TRUE(Call(&Stub::UpdateOrganization, uo, &o, admin_).ok());
  EXPECT_NE(o.etag(), org.etag());
  EXPECT_EQ(FromProto(o.update_time()), clock_.Now());
  EXPECT_EQ(OutboxLength(), outbox + 1);
}

// ------------------------------------------------------------ 5. external_subject

// User.external_subject: "no line break" (a "\r" passed) nor other control
// character.
TEST_F(InventoryAudit3Test, ExternalSubjectHoldsNoControlCharacter) {
  MakeOrg("a", v1::MEMBER, "CORE");
  MakeUser("ana", "a");
  const long long outbox = OutboxLength();
  // Also the Unicode line and paragraph separators and the Arabic letter
  // mark (a bidirectional control), which passed before.
  for (const std::string& subject : {std::string("abc\rdef"), std::string("abc\ndef"), std::string("abc\tdef"),
                                    std::string("abc\x7f"), std::string("abc\xc2\x85"), std::string("abc\u2028def"),
                                    std::string("abc\u2029def"), std::string("abc\u061Cdef")}) {
    v1::CreateUserRequest create;
    create.set_user_id("bob");
    create.mutable_user()->set_display_name("Bob");
    create.mutable_user()->set_organization("organizations/a");
    create.mutable_user()->add_roles(tv1::LAB_USER);
    create.mutable_user()->set_external_subject(subject);
    v1::User out;
    grpc::Status s = Call(&Stub::CreateUser, create, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "create");
    EXPECT_EQ(Violations(s), std::vector<std::string>{"user.external_subject"});
    v1::UpdateUserRequest update;
    update.mutable_user()->set_name("users/ana");
    update.mutable_user()->set_external_subject(subject);
    s = Call(&Stub::UpdateUser, update, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "update");
    EXPECT_EQ(Violations(s), std::vector<std::string>{"user.external_subject"});
  }
  EXPECT_EQ(OutboxLength(), outbox);
  v1::UpdateUserRequest update;
  update.mutable_user()->set_name("users/ana");
  update.mutable_user()->set_external_subject("248289761001|accounts.example.cn");
  v1::User out;
  ASSERT_TRUE(Call(&Stub::UpdateUser, update, &out, admin_).ok());
}

// InvoicingDetails: legal_name, registered_address and bank_name hold no
// control or text-direction character: U+2028, U+2029 (line breaks to
// billing's fapiao renderer) and U+061C passed. Organization.display_name,
// printed on the same block, holds none either (nothing was checked);
// UpdateOrganization checks it only when it changes.
TEST_F(InventoryAudit3Test, FapiaoTextHoldsNoUnicodeLineBreakNorBidiControl) {
  MakeOrg("a", v1::MEMBER, "CORE");
  const long long outbox = OutboxLength();
  auto details = [](v1::InvoicingDetails* d) {
    d->set_taxpayer_id("91350100M000100Y43");
    d->set_legal_name("示例有限公司");
    d->set_registered_address("福州市鼓楼区");
    d->set_bank_name("中国工商银行");
    d->set_bank_account("1202 0215 0910");
  };
  const std::vector<std::string> bad = {"A\u2028B", "A\u2029B", "A\u061CB", "A\u202EB", "A\nB"};
  for (const std::string& text : bad) {
    for (const std::string field : {"legal_name", "registered_address", "bank_name"}) {
      v1::CreateOrganizationRequest create;
      create.set_organization_id("b");
      create.mutable_organization()->set_display_name("B");
      create.mutable_organization()->set_type(v1::UNIVERSITY);
      auto* d = create.mutable_organization()->mutable_invoicing_details();
      details(d);
      if (field == "legal_name") d->set_legal_name(text);
      if (field == "registered_address") d->set_registered_address(text);
      if (field == "bank_name") d->set_bank_name(text);
      v1::Organization out;
      grpc::Status s = Call(&Stub::CreateOrganization, create, &out, admin_);
      ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", field);
      EXPECT_EQ(Violations(s), std::vector<std::string>{"organization.invoicing_details." + field}) << field;
    }
    v1::CreateOrganizationRequest create;
    create.set_organization_id("b");
    create.mutable_organization()->set_display_name("Org" + text + "纳税人 Taxpayer ID");
    create.mutable_organization()->set_type(v1::UNIVERSITY);
    v1::Organization out;
    grpc::Status s = Call(&Stub::CreateOrganization, create, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "create display_name");
    EXPECT_EQ(Violations(s), std::vector<std::string>{"organization.display_name"});
    v1::UpdateOrganizationRequest update;
    update.mutable_organization()->set_name("organizations/a");
    update.mutable_organization()->set_display_name("Org" + text + "A");
    s = Call(&Stub::UpdateOrganization, update, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "update display_name");
    EXPECT_EQ(Violations(s), std::vector<std::string>{"organization.display_name"});
  }
  EXPECT_EQ(OutboxLength(), outbox);
  // A name stored before the check does not block other paths.
  auto doc = pool_->Command({"HGET", keys::Org("a"), "d"});
  ASSERT_TRUE(doc.ok() && !doc->str.empty());
  v1::Organization stored;
  ASSERT_TRUE(stored.ParseFromString(doc->str));
  stored.set_display_name("Org\u2028A");
  ASSERT_TRUE(pool_->Command({"HSET", keys::Org("a"), "d", stored.SerializeAsString()}).ok());
  v1::UpdateOrganizationRequest update;
  update.mutable_organization()->set_name("organizations/a");
  update.mutable_organization()->set_sector("new materials");
  update.mutable_update_mask()->add_paths("sector");
  v1::Organization out;
  grpc::Status s = Call(&Stub::UpdateOrganization, update, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.display_name(), "Org\u2028A");
  EXPECT_EQ(out.sector(), "new materials");
}

// ------------------------------------------------------------ 7. a revoked qualification's use

// RecordQualificationUse restarts "a qualification still valid at
// use_time": a revoked one is not; its use changes nothing (it was written
// and published).
TEST_F(InventoryAudit3Test, AUseOfARevokedQualificationChangesNothing) {
  v1::Qualification q;
  ASSERT_NO_FATAL_FAILURE(GrantAnaOnTem(&q));
  v1::RevokeQualificationRequest revoke;
  revoke.set_name(q.name());
  v1::Qualification revoked;
  ASSERT_TRUE(Call(&Stub::RevokeQualification, revoke, &revoked, admin_).ok());
  EXPECT_EQ(revoked.state(), v1::REVOKED);
  EXPECT_FALSE(revoked.has_expire_time());  // Qualification.expire_time: unset when REVOKED
  const std::string bytes = StoredBytes(keys::Qualification("tem", "ana"));
  const long long outbox = OutboxLength();
  clock_.Advance(absl::Minutes(5));  // the tokens last an hour
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  v1::RecordQualificationUseRequest use;
  use.set_name(q.name());
  use.set_request_id("use-1");
  *use.mutable_use_time() = ToProto(clock_.Now() - absl::Minutes(10));
  for (int attempt = 0; attempt < 2; ++attempt) {
    grpc::ClientContext ctx;
    v1::Qualification out;
    grpc::Status s = booking->RecordQualificationUse(&ctx, use, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.state(), v1::REVOKED);
    EXPECT_FALSE(out.has_last_use_time());
    EXPECT_FALSE(out.has_expire_time());
  }
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(StoredBytes(keys::Qualification("tem", "ana")), bytes);
  // Granted again, uses count again.
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification again;
  ASSERT_TRUE(Call(&Stub::GrantQualification, grant, &again, admin_).ok());
  use.set_request_id("use-2");
  *use.mutable_use_time() = ToProto(clock_.Now() + absl::Minutes(10));
  grpc::ClientContext ctx;
  v1::Qualification out;
  ASSERT_TRUE(booking->RecordQualificationUse(&ctx, use, &out).ok());
  EXPECT_EQ(out.state(), v1::VALID);
  EXPECT_EQ(FromProto(out.last_use_time()), FromProto(use.use_time()));
}

// ------------------------------------------------------------ 8. non_member_horizon 0

// SlotRules.non_member_horizon: "0 (unset): ... every booking of theirs is
// BEYOND_HORIZON". An interval ending by now was not; members are not
// refused.
TEST_F(InventoryAudit3Test, NoNonMemberHorizonRefusesEveryNonMemberBooking) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("member", v1::MEMBER, "CORE");
  MakeOrg("outsider", v1::NON_MEMBER);
  MakeFacility("fac", "owner");
  v1::CreateInstrumentRequest ci;
  ci.set_instrument_id("tem");
  *ci.mutable_instrument() = InstrumentSpec("owner", "fac");
  ci.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->clear_non_member_horizon();
  ci.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->set_qualification_validity_days(0);
  v1::Instrument in;
  ASSERT_TRUE(Call(&Stub::CreateInstrument, ci, &in, admin_).ok());
  MakeUser("ann", "member");
  MakeUser("oli", "outsider");
  const absl::Time now = clock_.Now();
  struct Case {
    std::string user;
    absl::Time start, end;
    bool beyond;
  };
  for (const Case& c : {Case{"users/oli", now - absl::Hours(3), now - absl::Hours(1), true},
                        Case{"users/oli", now - absl::Hours(1), now, true},
                        Case{"users/oli", now + absl::Hours(3), now + absl::Hours(4), true},
                        Case{"users/ann", now - absl::Hours(3), now - absl::Hours(1), false},
                        Case{"users/ann", now + absl::Hours(3), now + absl::Hours(4), false}}) {
    v1::CheckAccessResponse out;
    grpc::Status s = Call(&Stub::CheckAccess, Access(c.user, "instruments/tem", c.start, c.end), &out, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(Denied(out, v1::BEYOND_HORIZON), c.beyond)
        << c.user << " " << absl::FormatTime(c.start) << ".." << absl::FormatTime(c.end);
  }
}

// ------------------------------------------------------------ 9. service_entry_id

// CheckAccessRequest.service_entry_id is for TECHNICAL_SERVICE: sent with
// another mode it is ignored (it made the mode's line unfound: NO_RATE).
TEST_F(InventoryAudit3Test, ServiceEntryIdIsIgnoredOutsideTechnicalService) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("member", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  v1::CreateInstrumentRequest ci;
  ci.set_instrument_id("tem");
  *ci.mutable_instrument() = InstrumentSpec("owner", "fac");
  ci.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->set_qualification_validity_days(0);
  v1::Instrument in;
  ASSERT_TRUE(Call(&Stub::CreateInstrument, ci, &in, admin_).ok());
  MakeRate("tem", tv1::MEMBER, "", 80000, clock_.Now() - absl::Hours(1));
  MakeUser("ann", "member");
  v1::CheckAccessRequest req =
      Access("users/ann", "instruments/tem", clock_.Now() + absl::Hours(3), clock_.Now() + absl::Hours(4));
  req.set_service_entry_id("xrd-powder");
  v1::CheckAccessResponse out;
  grpc::Status s = Call(&Stub::CheckAccess, req, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.allowed()) << (out.denials().empty() ? "" : out.denials(0).message());
  EXPECT_EQ(out.rate().price().amount_minor(), 80000);

  v1::LookupRateRequest lookup;
  lookup.set_instrument("instruments/tem");
  lookup.set_mode(tv1::ON_SITE);
  lookup.set_payer_organization("organizations/member");
  lookup.set_service_entry_id("xrd-powder");
  v1::LookupRateResponse rate;
  s = Call(&Stub::LookupRate, lookup, &rate, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(rate.rate().price().amount_minor(), 80000);
}

// ------------------------------------------------------------ 10. the payer's name first

// CheckAccess: a malformed payer_organization is INVALID_NAME before the
// user is read (it was USER_NOT_FOUND for an unknown user).
TEST_F(InventoryAudit3Test, CheckAccessValidatesThePayerBeforeReadingTheUser) {
  v1::CheckAccessRequest req =
      Access("users/nobody", "instruments/none", clock_.Now() + absl::Hours(3), clock_.Now() + absl::Hours(4));
  req.set_payer_organization("organizations/Bad_Org");
  v1::CheckAccessResponse out;
  grpc::Status s = Call(&Stub::CheckAccess, req, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_NAME", "malformed payer, unknown user");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"payer_organization"});
  req.set_payer_organization("organizations/someone");
  ExpectError(Call(&Stub::CheckAccess, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
              "well-formed payer, unknown user");
}

// ------------------------------------------------------------ 11. windows by start

// ListMaintenanceWindows: "by start". Windows starting within one second
// came in the order of their random ids; now by start to the nanosecond.
// Index members of the first format (whole seconds) are rewritten by
// MigrateWindowIndexes, once.
TEST_F(InventoryAudit3Test, MaintenanceWindowsListByStartToTheNanosecond) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const absl::Time second = clock_.Now() + absl::Hours(24);
  std::vector<std::string> by_start(6);
  for (int i = 5; i >= 0; --i) {  // declared latest first
    v1::CreateMaintenanceWindowRequest req;
    req.set_parent("instruments/tem");
    *req.mutable_maintenance_window()->mutable_interval()->mutable_start_time() =
        ToProto(second + absl::Milliseconds(100 * i));
    *req.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(second + absl::Hours(1));
    v1::MaintenanceWindow w;
    ASSERT_TRUE(Call(&Stub::CreateMaintenanceWindow, req, &w, admin_).ok());
    by_start[static_cast<size_t>(i)] = w.name();
  }
  auto listed = [&]() {
    v1::ListMaintenanceWindowsRequest list;
    list.set_parent("instruments/tem");
    v1::ListMaintenanceWindowsResponse resp;
    EXPECT_TRUE(Call(&Stub::ListMaintenanceWindows, list, &resp, admin_).ok());
    std::vector<std::string> names;
    for (const auto& w : resp.maintenance_windows()) names.push_back(w.name());
    return names;
  };
  EXPECT_EQ(listed(), by_start);
  // The first format: "<seconds>|<id>".
  auto members = pool_->Command({"ZRANGE", keys::Windows("tem"), "0", "-1"});
  ASSERT_TRUE(members.ok());
  ASSERT_EQ(members->elements.size(), 6u);
  for (const auto& m : members->elements) {
    const std::string& member = m.str;
    const std::string old_member = member.substr(0, member.find('.')) + member.substr(member.rfind('|'));
    ASSERT_EQ(Redis({"ZREM", keys::Windows("tem"), member}), 1);
    ASSERT_EQ(Redis({"ZADD", keys::Windows("tem"), "0", old_member}), 1);
  }
  auto moved = manager_->MigrateWindowIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 6);
  EXPECT_EQ(*manager_->MigrateWindowIndexes(), 0);
  EXPECT_EQ(listed(), by_start);
  // CheckAccess reads the members too: an interval over the first window
  // only is DURING_MAINTENANCE, naming it.
  MakeUser("ana", "owner");
  v1::CheckAccessResponse out;
  ASSERT_TRUE(Call(&Stub::CheckAccess,
                   Access("users/ana", "instruments/tem", second - absl::Hours(1), second + absl::Milliseconds(50)),
                   &out, admin_)
                  .ok());
  ASSERT_TRUE(Denied(out, v1::DURING_MAINTENANCE));
  for (const auto& d : out.denials()) {
    if (d.code() == v1::DURING_MAINTENANCE) {
      EXPECT_TRUE(absl::StrContains(d.message(), by_start[0])) << d.message();
    }
  }
}

}  // namespace
}  // namespace labshare::inventory
