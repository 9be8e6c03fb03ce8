// InventoryService error reasons its RPC comments list and no other test
// named: ALREADY_EXISTS for a taken organisation, user or facility id (and
// how that meets request_id idempotency: the retry of the first request gets
// the first answer, another request with the id the reason), INSTRUMENT_RETIRED
// on UpdateInstrument, GrantQualification and CreateMaintenanceWindow,
// SERVICE_ENTRY_NOT_FOUND on CreateRate, RATE_NOT_FOUND on GetRate and
// MAINTENANCE_WINDOW_NOT_FOUND on Get/CancelMaintenanceWindow, NO_CHANGE on
// CancelMaintenanceWindow, USER_DISABLED and USER_NOT_FOUND on
// GrantQualification, INVALID_TAXPAYER_ID on CreateOrganization and the
// NOT_FOUNDs of UpdateOrganization, UpdateUser, CreateFacility and
// CheckAccess. Each case also checks that nothing was written (no event, no
// key, the record as it was).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class InventoryReasonsTest : public InventoryServiceTest {
 protected:
  // A create whose id is then taken: `first` succeeds under request_id
  // "first"; its retry answers the first answer (also after `touch` changed
  // the record), other content under it is REQUEST_ID_REUSED; `other`
  // (another request for the same id) fails with ALREADY_EXISTS `reason`
  // under a request_id of its own and without one, as does `first` sent
  // again without its request_id. None of those writes anything: no key,
  // no event.
  template <typename Req, typename Resp>
  void ExpectTakenId(grpc::Status (Stub::*create)(grpc::ClientContext*, const Req&, Resp*), Req first,
                     Req other, const std::string& reason, const std::function<void()>& touch) {
    first.set_request_id("first");
    Resp answer;
    grpc::Status s = Call(create, first, &answer, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    touch();
    const long long keys = KeyCount();
    const long long outbox = OutboxLength();

    Resp again;
    s = Call(create, first, &again, admin_);
    ASSERT_TRUE(s.ok()) << reason << ": the retry: " << s.error_message();
    EXPECT_EQ(again.SerializeAsString(), answer.SerializeAsString()) << reason << ": the retry";

    other.set_request_id("first");
    ExpectError(Call(create, other, &again, admin_), grpc::StatusCode::FAILED_PRECONDITION, "REQUEST_ID_REUSED",
                reason + ": other content under the first request_id");
    other.set_request_id("other");
    ExpectError(Call(create, other, &again, admin_), grpc::StatusCode::ALREADY_EXISTS, reason, "another request");
    other.clear_request_id();
    ExpectError(Call(create, other, &again, admin_), grpc::StatusCode::ALREADY_EXISTS, reason,
                "another request without request_id");
    first.clear_request_id();
    ExpectError(Call(create, first, &again, admin_), grpc::StatusCode::ALREADY_EXISTS, reason,
                "the first content without request_id");
    // The failed request kept no answer: sent again it fails again.
    other.set_request_id("other");
    ExpectError(Call(create, other, &again, admin_), grpc::StatusCode::ALREADY_EXISTS, reason,
                "another request again");

    EXPECT_EQ(KeyCount(), keys) << reason;
    EXPECT_EQ(OutboxLength(), outbox) << reason;
  }

  // owner's instrument tem in its facility fac.
  void OwnersTem() {
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
    MakeInstrument("tem", "owner", "fac");
  }

  // owner's tem in fac, RETIRED by the consortium admin.
  v1::Instrument RetiredTem() {
    OwnersTem();
    return Retire("tem");
  }

  v1::Instrument Retire(const std::string& id) {
    v1::SetInstrumentStateRequest req;
    req.set_name("instruments/" + id);
    req.set_state(v1::RETIRED);
    v1::Instrument out;
    grpc::Status s = Call(&Stub::SetInstrumentState, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  v1::Instrument GetInstrument(const std::string& id) {
    v1::GetInstrumentRequest req;
    req.set_name("instruments/" + id);
    v1::Instrument out;
    EXPECT_TRUE(Call(&Stub::GetInstrument, req, &out, admin_).ok());
    return out;
  }

  static v1::CreateMaintenanceWindowRequest WindowRequest(const std::string& instrument, absl::Time start) {
    v1::CreateMaintenanceWindowRequest req;
    req.set_parent("instruments/" + instrument);
    auto* interval = req.mutable_maintenance_window()->mutable_interval();
    *interval->mutable_start_time() = ToProto(start);
    *interval->mutable_end_time() = ToProto(start + absl::Hours(4));
    req.mutable_maintenance_window()->set_reason("annual service");
    return req;
  }

  grpc::Status GetWindow(const std::string& name, v1::MaintenanceWindow* out) {
    v1::GetMaintenanceWindowRequest req;
    req.set_name(name);
    return Call(&Stub::GetMaintenanceWindow, req, out, admin_);
  }

  grpc::Status CancelWindow(const std::string& name, const std::string& request_id, v1::MaintenanceWindow* out) {
    v1::CancelMaintenanceWindowRequest req;
    req.set_name(name);
    req.set_request_id(request_id);
    return Call(&Stub::CancelMaintenanceWindow, req, out, Token("staff", "owner", {Role::kFacilityStaff}));
  }
};

// ------------------------------------------------------------ *_EXISTS

// CreateOrganization: ALREADY_EXISTS (ORGANIZATION_EXISTS) for a taken
// organization_id; the organisation and its membership history as they were.
TEST_F(InventoryReasonsTest, CreateOrganizationTakenIdIsOrganizationExists) {
  v1::CreateOrganizationRequest first;
  first.set_organization_id("pku");
  first.mutable_organization()->set_display_name("Peking University");
  first.mutable_organization()->set_type(v1::UNIVERSITY);
  v1::CreateOrganizationRequest other = first;
  other.mutable_organization()->set_display_name("Another PKU");
  other.mutable_organization()->set_membership_state(v1::NON_MEMBER);
  ExpectTakenId(&Stub::CreateOrganization, first, other, "ORGANIZATION_EXISTS", [&] {
    v1::ChangeMembershipRequest join;  // the retry answers the registration, not today's record
    join.set_name("organizations/pku");
    join.set_membership_state(v1::MEMBER);
    join.set_tier("CORE");
    join.set_reason("admitted");
    v1::Organization out;
    ASSERT_TRUE(Call(&Stub::ChangeMembership, join, &out, admin_).ok());
  });

  v1::GetOrganizationRequest get;
  get.set_name("organizations/pku");
  v1::Organization org;
  ASSERT_TRUE(Call(&Stub::GetOrganization, get, &org, admin_).ok());
  EXPECT_EQ(org.display_name(), "Peking University");
  EXPECT_EQ(org.membership_state(), v1::MEMBER);
  v1::ListMembershipChangesRequest history;
  history.set_parent("organizations/pku");
  v1::ListMembershipChangesResponse changes;
  ASSERT_TRUE(Call(&Stub::ListMembershipChanges, history, &changes, admin_).ok());
  EXPECT_EQ(changes.membership_changes_size(), 2);  // registered, admitted
}

// CreateUser: ALREADY_EXISTS (USER_EXISTS) for a taken user_id, also when
// the other request names another organisation and an email (no sign-in
// index entry for it).
TEST_F(InventoryReasonsTest, CreateUserTakenIdIsUserExists) {
  MakeOrg("lab-a", v1::MEMBER, "CORE");
  MakeOrg("lab-b", v1::MEMBER, "CORE");
  v1::CreateUserRequest first;
  first.set_user_id("ana");
  first.mutable_user()->set_display_name("Ana");
  first.mutable_user()->set_organization("organizations/lab-a");
  first.mutable_user()->add_roles(tv1::LAB_USER);
  v1::CreateUserRequest other = first;
  other.mutable_user()->set_display_name("Another Ana");
  other.mutable_user()->set_organization("organizations/lab-b");
  other.mutable_user()->set_email("ana@lab-b.test");
  ExpectTakenId(&Stub::CreateUser, first, other, "USER_EXISTS", [&] {
    v1::UpdateUserRequest rename;
    rename.mutable_user()->set_name("users/ana");
    rename.mutable_user()->set_display_name("Ana Li");
    v1::User out;
    ASSERT_TRUE(Call(&Stub::UpdateUser, rename, &out, admin_).ok());
  });

  v1::GetUserRequest get;
  get.set_name("users/ana");
  v1::User user;
  ASSERT_TRUE(Call(&Stub::GetUser, get, &user, admin_).ok());
  EXPECT_EQ(user.display_name(), "Ana Li");
  EXPECT_EQ(user.organization(), "organizations/lab-a");
  EXPECT_EQ(user.email(), "");
}

// CreateFacility: ALREADY_EXISTS (FACILITY_EXISTS) for a taken facility_id.
TEST_F(InventoryReasonsTest, CreateFacilityTakenIdIsFacilityExists) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeOrg("runner", v1::MEMBER, "CORE");
  v1::CreateFacilityRequest first;
  first.set_facility_id("fac");
  first.mutable_facility()->set_display_name("Cryo-EM centre");
  first.mutable_facility()->set_owner_organization("organizations/owner");
  v1::CreateFacilityRequest other = first;
  other.mutable_facility()->set_display_name("Another centre");
  other.mutable_facility()->set_owner_organization("organizations/runner");
  ExpectTakenId(&Stub::CreateFacility, first, other, "FACILITY_EXISTS", [&] {
    v1::UpdateFacilityRequest rename;
    rename.mutable_facility()->set_name("facilities/fac");
    rename.mutable_facility()->set_display_name("Cryo-EM centre (east)");
    v1::Facility out;
    ASSERT_TRUE(Call(&Stub::UpdateFacility, rename, &out, admin_).ok());
  });

  v1::GetFacilityRequest get;
  get.set_name("facilities/fac");
  v1::Facility f;
  ASSERT_TRUE(Call(&Stub::GetFacility, get, &f, admin_).ok());
  EXPECT_EQ(f.display_name(), "Cryo-EM centre (east)");
  EXPECT_EQ(f.owner_organization(), "organizations/owner");
}

// ------------------------------------------------------------ INSTRUMENT_RETIRED

// UpdateInstrument on a retired instrument: FAILED_PRECONDITION
// (INSTRUMENT_RETIRED), with its current etag too; nothing changes.
TEST_F(InventoryReasonsTest, UpdateInstrumentOnRetiredIsInstrumentRetired) {
  const v1::Instrument retired = RetiredTem();
  ASSERT_EQ(retired.state(), v1::RETIRED);
  const long long outbox = OutboxLength();
  v1::UpdateInstrumentRequest req;
  req.mutable_instrument()->set_name("instruments/tem");
  req.mutable_instrument()->set_display_name("Cryo-TEM (refurbished)");
  req.mutable_update_mask()->add_paths("display_name");
  v1::Instrument out;
  ExpectError(Call(&Stub::UpdateInstrument, req, &out, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "INSTRUMENT_RETIRED", "without etag");
  req.mutable_instrument()->set_etag(retired.etag());
  req.set_request_id("rename-1");
  ExpectError(Call(&Stub::UpdateInstrument, req, &out, Token("staff", "owner", {Role::kFacilityStaff})),
              grpc::StatusCode::FAILED_PRECONDITION, "INSTRUMENT_RETIRED", "owner staff, current etag");
  const v1::Instrument now = GetInstrument("tem");
  EXPECT_EQ(now.SerializeAsString(), retired.SerializeAsString());
  EXPECT_EQ(OutboxLength(), outbox);
}

// GrantQualification on a retired instrument: FAILED_PRECONDITION
// (INSTRUMENT_RETIRED) for a new grant and for the renewal of one granted
// before the retirement; no qualification written.
TEST_F(InventoryReasonsTest, GrantQualificationOnRetiredIsInstrumentRetired) {
  v1::Qualification before;
  GrantAnaOnTem(&before);
  MakeUser("bo", "owner");
  clock_.Advance(absl::Hours(1));
  admin_ = Token("admin", "", {Role::kConsortiumAdmin});
  Retire("tem");
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  const std::string staff = Token("staff", "owner", {Role::kFacilityStaff});
  for (const std::string user : {"bo", "ana"}) {
    v1::GrantQualificationRequest grant;
    grant.set_instrument("instruments/tem");
    grant.set_user("users/" + user);
    grant.set_request_id("grant-" + user);
    v1::Qualification out;
    ExpectError(Call(&Stub::GrantQualification, grant, &out, staff), grpc::StatusCode::FAILED_PRECONDITION,
                "INSTRUMENT_RETIRED", user);
  }
  v1::GetQualificationRequest get;
  get.set_name("instruments/tem/qualifications/bo");
  v1::Qualification q;
  ExpectError(Call(&Stub::GetQualification, get, &q, admin_), grpc::StatusCode::NOT_FOUND,
              "QUALIFICATION_NOT_FOUND", "bo's");
  get.set_name("instruments/tem/qualifications/ana");
  ASSERT_TRUE(Call(&Stub::GetQualification, get, &q, admin_).ok());
  EXPECT_EQ(q.grant_time().SerializeAsString(), before.grant_time().SerializeAsString());  // not renewed
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
}

// CreateMaintenanceWindow on a retired instrument: FAILED_PRECONDITION
// (INSTRUMENT_RETIRED); no window.
TEST_F(InventoryReasonsTest, CreateMaintenanceWindowOnRetiredIsInstrumentRetired) {
  RetiredTem();
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::MaintenanceWindow out;
  auto req = WindowRequest("tem", clock_.Now() + absl::Hours(24));
  ExpectError(Call(&Stub::CreateMaintenanceWindow, req, &out, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "INSTRUMENT_RETIRED", "admin");
  req.set_request_id("mw-1");
  ExpectError(Call(&Stub::CreateMaintenanceWindow, req, &out, Token("staff", "owner", {Role::kFacilityStaff})),
              grpc::StatusCode::FAILED_PRECONDITION, "INSTRUMENT_RETIRED", "owner staff");
  v1::ListMaintenanceWindowsRequest list;
  list.set_parent("instruments/tem");
  list.set_include_cancelled(true);
  v1::ListMaintenanceWindowsResponse windows;
  ASSERT_TRUE(Call(&Stub::ListMaintenanceWindows, list, &windows, admin_).ok());
  EXPECT_EQ(windows.maintenance_windows_size(), 0);
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
}

// ------------------------------------------------------------ rates

// CreateRate: NOT_FOUND (SERVICE_ENTRY_NOT_FOUND) for a TECHNICAL_SERVICE
// line naming an entry the instrument's catalogue does not have (also one
// another instrument's catalogue has); no line written.
TEST_F(InventoryReasonsTest, CreateRateForUnknownEntryIsServiceEntryNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  auto with_service = [&](const std::string& id, const std::string& entry) {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(id);
    *req.mutable_instrument() = InstrumentSpec("owner", "fac");
    auto* mode = req.mutable_instrument()->add_modes();
    *mode = req.instrument().modes(0);
    mode->set_mode(tv1::TECHNICAL_SERVICE);
    mode->mutable_slot_rules()->set_qualification_validity_days(0);
    auto* e = req.mutable_instrument()->add_service_catalogue();
    e->set_entry_id(entry);
    e->set_display_name(entry);
    e->set_unit(v1::PER_SAMPLE);
    *e->mutable_instrument_time_per_unit() = ToProto(absl::Minutes(30));
    v1::Instrument out;
    grpc::Status s = Call(&Stub::CreateInstrument, req, &out, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  };
  with_service("sem", "sem-imaging");
  with_service("eds", "eds-mapping");
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();

  auto req = RateRequest("sem", tv1::NON_MEMBER, "", 50'000, clock_.Now());
  req.mutable_rate()->set_mode(tv1::TECHNICAL_SERVICE);
  req.mutable_rate()->set_unit(v1::RATE_PER_SAMPLE);
  v1::Rate out;
  for (const std::string entry : {"tem-imaging", "eds-mapping"}) {
    req.mutable_rate()->set_service_entry_id(entry);
    ExpectError(Call(&Stub::CreateRate, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "SERVICE_ENTRY_NOT_FOUND",
                entry);
  }
  v1::ListRatesRequest list;
  list.set_parent("instruments/sem");
  v1::ListRatesResponse rates;
  ASSERT_TRUE(Call(&Stub::ListRates, list, &rates, admin_).ok());
  EXPECT_EQ(rates.rates_size(), 0);
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  // The catalogue's own entry is priced.
  req.mutable_rate()->set_service_entry_id("sem-imaging");
  grpc::Status s = Call(&Stub::CreateRate, req, &out, admin_);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// GetRate: NOT_FOUND (RATE_NOT_FOUND) for an unknown line, for a line named
// under another instrument than its own, and under an unknown instrument.
TEST_F(InventoryReasonsTest, GetRateUnknownIsRateNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeInstrument("sem", "owner", "fac");
  const v1::Rate line = MakeRate("tem", tv1::NON_MEMBER, "", 100'000, clock_.Now());
  const std::string rate_id = line.name().substr(line.name().rfind('/') + 1);
  v1::GetRateRequest get;
  v1::Rate out;
  get.set_name(line.name());
  ASSERT_TRUE(Call(&Stub::GetRate, get, &out, admin_).ok());
  for (const std::string& name : {std::string("instruments/tem/rates/r-0000000000000000"),
                                 "instruments/sem/rates/" + rate_id, "instruments/nope/rates/" + rate_id}) {
    get.set_name(name);
    ExpectError(Call(&Stub::GetRate, get, &out, Token("ana", "owner", {Role::kLabUser})), grpc::StatusCode::NOT_FOUND,
                "RATE_NOT_FOUND", name);
  }
}

// ------------------------------------------------------------ maintenance windows

// GetMaintenanceWindow: NOT_FOUND (MAINTENANCE_WINDOW_NOT_FOUND) for an
// unknown window and for a window named under another instrument.
TEST_F(InventoryReasonsTest, GetMaintenanceWindowUnknownIsNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeInstrument("sem", "owner", "fac");
  v1::MaintenanceWindow w;
  ASSERT_TRUE(Call(&Stub::CreateMaintenanceWindow, WindowRequest("tem", clock_.Now() + absl::Hours(24)), &w, admin_)
                  .ok());
  const std::string window_id = w.name().substr(w.name().rfind('/') + 1);
  v1::MaintenanceWindow out;
  ASSERT_TRUE(GetWindow(w.name(), &out).ok());
  for (const std::string& name : {std::string("instruments/tem/maintenanceWindows/mw-unknown"),
                                 "instruments/sem/maintenanceWindows/" + window_id,
                                 "instruments/nope/maintenanceWindows/" + window_id}) {
    ExpectError(GetWindow(name, &out), grpc::StatusCode::NOT_FOUND, "MAINTENANCE_WINDOW_NOT_FOUND", name);
  }
}

// CancelMaintenanceWindow: NOT_FOUND (MAINTENANCE_WINDOW_NOT_FOUND) for an
// unknown window of a known instrument and for a window named under another
// instrument (that window stays SCHEDULED); no event, no request record.
TEST_F(InventoryReasonsTest, CancelMaintenanceWindowUnknownIsNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeInstrument("sem", "owner", "fac");
  v1::MaintenanceWindow w;
  ASSERT_TRUE(Call(&Stub::CreateMaintenanceWindow, WindowRequest("tem", clock_.Now() + absl::Hours(24)), &w, admin_)
                  .ok());
  const std::string window_id = w.name().substr(w.name().rfind('/') + 1);
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::MaintenanceWindow out;
  ExpectError(CancelWindow("instruments/tem/maintenanceWindows/mw-unknown", "cancel-1", &out),
              grpc::StatusCode::NOT_FOUND, "MAINTENANCE_WINDOW_NOT_FOUND", "unknown window");
  ExpectError(CancelWindow("instruments/sem/maintenanceWindows/" + window_id, "cancel-2", &out),
              grpc::StatusCode::NOT_FOUND, "MAINTENANCE_WINDOW_NOT_FOUND", "under another instrument");
  ExpectError(CancelWindow("instruments/nope/maintenanceWindows/" + window_id, "cancel-3", &out),
              grpc::StatusCode::NOT_FOUND, "INSTRUMENT_NOT_FOUND", "under an unknown instrument");
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  ASSERT_TRUE(GetWindow(w.name(), &out).ok());
  EXPECT_EQ(out.state(), v1::SCHEDULED);
}

// CancelMaintenanceWindow: FAILED_PRECONDITION (NO_CHANGE) for a window
// already cancelled. The retry of the cancel that did it answers its first
// answer; another request (with a request_id of its own or none) is
// NO_CHANGE, writes nothing (no event, no request record) and the window
// stays as the first cancel left it.
TEST_F(InventoryReasonsTest, CancellingACancelledWindowIsNoChange) {
  OwnersTem();
  v1::MaintenanceWindow w;
  ASSERT_TRUE(Call(&Stub::CreateMaintenanceWindow, WindowRequest("tem", clock_.Now() + absl::Hours(24)), &w, admin_)
                  .ok());
  v1::MaintenanceWindow cancelled;
  grpc::Status s = CancelWindow(w.name(), "cancel-1", &cancelled);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(cancelled.state(), v1::CANCELLED);
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();

  v1::MaintenanceWindow out;
  s = CancelWindow(w.name(), "cancel-1", &out);
  ASSERT_TRUE(s.ok()) << "the retry: " << s.error_message();
  EXPECT_EQ(out.SerializeAsString(), cancelled.SerializeAsString());
  ExpectError(CancelWindow(w.name(), "cancel-2", &out), grpc::StatusCode::FAILED_PRECONDITION, "NO_CHANGE",
              "another request");
  ExpectError(CancelWindow(w.name(), "", &out), grpc::StatusCode::FAILED_PRECONDITION, "NO_CHANGE",
              "without request_id");
  v1::CancelMaintenanceWindowRequest by_admin;
  by_admin.set_name(w.name());
  ExpectError(Call(&Stub::CancelMaintenanceWindow, by_admin, &out, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "NO_CHANGE", "the consortium admin");
  // cancel-2 kept no answer: sent again it is NO_CHANGE again.
  ExpectError(CancelWindow(w.name(), "cancel-2", &out), grpc::StatusCode::FAILED_PRECONDITION, "NO_CHANGE",
              "another request again");
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  ASSERT_TRUE(GetWindow(w.name(), &out).ok());
  EXPECT_EQ(out.SerializeAsString(), cancelled.SerializeAsString());
}

// ------------------------------------------------------------ qualifications

// GrantQualification: FAILED_PRECONDITION (USER_DISABLED) for a disabled
// user, a new grant as well as the renewal of one granted before the user
// was disabled; nothing written (bo has no qualification, ana's keeps its
// grant time). Enabled again, the grant goes through.
TEST_F(InventoryReasonsTest, GrantQualificationToADisabledUserIsUserDisabled) {
  v1::Qualification before;
  GrantAnaOnTem(&before);
  MakeUser("bo", "owner");
  auto set_disabled = [&](const std::string& user, bool disabled) {
    v1::UpdateUserRequest req;
    req.mutable_user()->set_name("users/" + user);
    req.mutable_user()->set_disabled(disabled);
    req.mutable_update_mask()->add_paths("disabled");
    v1::User out;
    grpc::Status s = Call(&Stub::UpdateUser, req, &out, admin_);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(out.disabled(), disabled);
  };
  set_disabled("ana", true);
  set_disabled("bo", true);
  clock_.Advance(absl::Hours(1));
  admin_ = Token("admin", "", {Role::kConsortiumAdmin});
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  const std::string staff = Token("staff", "owner", {Role::kFacilityStaff});
  auto grant = [&](const std::string& user, const std::string& token, v1::Qualification* out) {
    v1::GrantQualificationRequest req;
    req.set_instrument("instruments/tem");
    req.set_user("users/" + user);
    req.set_request_id("grant-" + user);
    return Call(&Stub::GrantQualification, req, out, token);
  };
  v1::Qualification out;
  for (const std::string user : {"bo", "ana"}) {
    ExpectError(grant(user, staff, &out), grpc::StatusCode::FAILED_PRECONDITION, "USER_DISABLED", user + ", staff");
    ExpectError(grant(user, admin_, &out), grpc::StatusCode::FAILED_PRECONDITION, "USER_DISABLED", user + ", admin");
  }
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  v1::GetQualificationRequest get;
  get.set_name("instruments/tem/qualifications/bo");
  ExpectError(Call(&Stub::GetQualification, get, &out, admin_), grpc::StatusCode::NOT_FOUND,
              "QUALIFICATION_NOT_FOUND", "bo's");
  get.set_name("instruments/tem/qualifications/ana");
  ASSERT_TRUE(Call(&Stub::GetQualification, get, &out, admin_).ok());
  EXPECT_EQ(out.grant_time().SerializeAsString(), before.grant_time().SerializeAsString());  // not renewed

  // The failed grant kept no answer: enabled again, the same request grants.
  set_disabled("bo", false);
  grpc::Status s = grant("bo", staff, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FromProto(out.grant_time()), clock_.Now());
}

// GrantQualification: NOT_FOUND (USER_NOT_FOUND) for a user inventory does
// not know, by the owner's staff and by the consortium admin; no
// qualification written. An unknown instrument is INSTRUMENT_NOT_FOUND
// whatever the user.
TEST_F(InventoryReasonsTest, GrantQualificationToAnUnknownUserIsUserNotFound) {
  OwnersTem();
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::GrantQualificationRequest req;
  req.set_instrument("instruments/tem");
  req.set_user("users/nobody");
  req.set_request_id("grant-nobody");
  v1::Qualification out;
  ExpectError(Call(&Stub::GrantQualification, req, &out, Token("staff", "owner", {Role::kFacilityStaff})),
              grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND", "owner staff");
  req.clear_request_id();
  ExpectError(Call(&Stub::GrantQualification, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
              "admin");
  req.set_instrument("instruments/nope");
  ExpectError(Call(&Stub::GrantQualification, req, &out, admin_), grpc::StatusCode::NOT_FOUND,
              "INSTRUMENT_NOT_FOUND", "unknown instrument");
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  v1::ListQualificationsRequest list;
  list.set_parent("instruments/tem");
  v1::ListQualificationsResponse qualifications;
  ASSERT_TRUE(Call(&Stub::ListQualifications, list, &qualifications, admin_).ok());
  EXPECT_EQ(qualifications.qualifications_size(), 0);
}

// ------------------------------------------------------------ organisations

// CreateOrganization: INVALID_ARGUMENT (INVALID_TAXPAYER_ID) for
// invoicing_details whose taxpayer_id is not a unified social credit code
// (wrong length, lower case, a letter the code does not use, a letter in
// the division code, a mistyped check character, a full-width digit) or is
// missing while other details are set; the message says what is wrong. No organisation, no
// event. The same details with the right code register it.
TEST_F(InventoryReasonsTest, CreateOrganizationWithABadTaxpayerIdIsInvalidTaxpayerId) {
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::CreateOrganizationRequest req;
  req.set_organization_id("nano");
  auto* o = req.mutable_organization();
  o->set_display_name("Nano Works");
  o->set_type(v1::ENTERPRISE);
  o->set_size_class(v1::SME);
  auto* d = o->mutable_invoicing_details();
  d->set_legal_name("纳米工坊材料科技（杭州）有限公司");
  d->set_registered_address("浙江省杭州市余杭区文一西路1818号");
  d->set_bank_name("中国工商银行杭州余杭支行");
  d->set_bank_account("1202 0215 0910 0123 456");
  struct Case {
    std::string taxpayer_id;
    std::string says;  // a piece of the message
  };
  const std::vector<Case> cases = {
      {"", "required"},
      {"91330110MA2H3K5L7", "18 characters"},
      {"91330110MA2H3K5L7BB", "18 characters"},
      {"91330110ma2H3K5L7B", "character 9 'm' must be upper case"},
      {"91330110MA2H3K5O7B", "character 16 'O' is not used"},
      {"913301A0MA2H3K5L7B", "character 7 'A' must be a digit"},
      {"91330110MA2H3K5L7C", "expected 'B'"},
      // A full-width digit (3 bytes in UTF-8): 18 characters, one not the code's.
      {"91330110MA2H3K5L\xEF\xBC\x97" "B", "character 17 must be a digit or an upper-case letter"},
      {"\xEF\xBC\x99" "1330110MA2H3K5L7B", "character 1 must be a digit or an upper-case letter"},
  };
  v1::Organization out;
  for (const Case& c : cases) {
    d->set_taxpayer_id(c.taxpayer_id);
    req.set_request_id("nano-" + std::to_string(&c - cases.data()));
    grpc::Status s = Call(&Stub::CreateOrganization, req, &out, admin_);
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_TAXPAYER_ID", c.taxpayer_id);
    EXPECT_NE(s.error_message().find(c.says), std::string::npos) << c.taxpayer_id << ": " << s.error_message();
    EXPECT_EQ(Violations(s), std::vector<std::string>{"organization.invoicing_details.taxpayer_id"}) << c.taxpayer_id;
  }
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  v1::GetOrganizationRequest get;
  get.set_name("organizations/nano");
  ExpectError(Call(&Stub::GetOrganization, get, &out, admin_), grpc::StatusCode::NOT_FOUND,
              "ORGANIZATION_NOT_FOUND", "not registered");

  // A failed request kept no answer: the first one's id with the right code
  // registers the organisation.
  d->set_taxpayer_id("91330110MA2H3K5L7B");
  req.set_request_id("nano-0");
  grpc::Status s = Call(&Stub::CreateOrganization, req, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.invoicing_details().taxpayer_id(), "91330110MA2H3K5L7B");
}

// UpdateOrganization: NOT_FOUND (ORGANIZATION_NOT_FOUND) for an
// organisation never registered, with a mask or an implied one, with an
// etag too; nothing written.
TEST_F(InventoryReasonsTest, UpdateOrganizationUnknownIsOrganizationNotFound) {
  MakeOrg("pku", v1::MEMBER, "CORE");
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::UpdateOrganizationRequest req;
  req.mutable_organization()->set_name("organizations/nobody");
  req.mutable_organization()->set_display_name("Nobody");
  v1::Organization out;
  ExpectError(Call(&Stub::UpdateOrganization, req, &out, admin_), grpc::StatusCode::NOT_FOUND,
              "ORGANIZATION_NOT_FOUND", "implied mask");
  req.mutable_update_mask()->add_paths("display_name");
  req.mutable_organization()->set_etag("1");
  req.set_request_id("rename-nobody");
  ExpectError(Call(&Stub::UpdateOrganization, req, &out, admin_), grpc::StatusCode::NOT_FOUND,
              "ORGANIZATION_NOT_FOUND", "mask and etag");
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
}

// ------------------------------------------------------------ users

// UpdateUser: NOT_FOUND (USER_NOT_FOUND) for a user never created (also one
// whose id another organisation's name uses); nothing written, no sign-in
// index entry for the email it names.
TEST_F(InventoryReasonsTest, UpdateUserUnknownIsUserNotFound) {
  MakeOrg("lab", v1::MEMBER, "CORE");
  MakeUser("ana", "lab");
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::UpdateUserRequest req;
  v1::User out;
  for (const std::string id : {"nobody", "lab"}) {
    req.mutable_user()->set_name("users/" + id);
    req.mutable_user()->set_email(id + "@lab.test");
    req.mutable_update_mask()->Clear();
    ExpectError(Call(&Stub::UpdateUser, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
                id + ", implied mask");
    req.mutable_update_mask()->add_paths("email");
    req.mutable_user()->set_etag("1");
    ExpectError(Call(&Stub::UpdateUser, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
                id + ", mask and etag");
  }
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
}

// ------------------------------------------------------------ facilities

// CreateFacility: NOT_FOUND (ORGANIZATION_NOT_FOUND) for an owner or an
// operator organisation never registered; no facility, no event.
TEST_F(InventoryReasonsTest, CreateFacilityForAnUnknownOrganizationIsOrganizationNotFound) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  const long long outbox = OutboxLength();
  const long long keys = KeyCount();
  v1::CreateFacilityRequest req;
  req.set_facility_id("fac");
  req.mutable_facility()->set_display_name("Cryo-EM centre");
  v1::Facility out;
  const std::vector<std::pair<std::string, std::string>> parties = {
      {"nobody", ""}, {"nobody", "owner"}, {"owner", "nobody"}};
  for (const auto& [owner, op] : parties) {
    req.mutable_facility()->set_owner_organization("organizations/" + owner);
    req.mutable_facility()->set_operator_organization(op.empty() ? "" : "organizations/" + op);
    ExpectError(Call(&Stub::CreateFacility, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "ORGANIZATION_NOT_FOUND",
                owner + " run by " + op);
  }
  EXPECT_EQ(OutboxLength(), outbox);
  EXPECT_EQ(KeyCount(), keys);
  v1::GetFacilityRequest get;
  get.set_name("facilities/fac");
  ExpectError(Call(&Stub::GetFacility, get, &out, admin_), grpc::StatusCode::NOT_FOUND, "FACILITY_NOT_FOUND");
}

// ------------------------------------------------------------ access

// CheckAccess: NOT_FOUND (USER_NOT_FOUND) for a user inventory does not
// know, asked by staff or admin for anyone and by a lab user (whose token
// names an id inventory does not have) for themselves; also with a payer
// named and with an unknown instrument (the user is looked up first).
TEST_F(InventoryReasonsTest, CheckAccessForAnUnknownUserIsUserNotFound) {
  OwnersTem();
  v1::CheckAccessRequest req;
  req.set_user("users/ghost");
  req.set_instrument("instruments/tem");
  req.set_mode(tv1::ON_SITE);
  *req.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *req.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(26));
  v1::CheckAccessResponse out;
  const std::vector<std::pair<std::string, std::string>> callers = {
      {"admin", admin_},
      {"staff", Token("staff", "owner", {Role::kFacilityStaff})},
      {"ghost", Token("ghost", "owner", {Role::kLabUser})}};
  for (const auto& [who, token] : callers) {
    ExpectError(Call(&Stub::CheckAccess, req, &out, token), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND", who);
  }
  req.set_payer_organization("organizations/owner");
  ExpectError(Call(&Stub::CheckAccess, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
              "payer named");
  req.set_instrument("instruments/nope");
  ExpectError(Call(&Stub::CheckAccess, req, &out, admin_), grpc::StatusCode::NOT_FOUND, "USER_NOT_FOUND",
              "unknown instrument");
}

}  // namespace
}  // namespace labshare::inventory
