// The inventory RPC comments where a fourth read-only audit found the code
// apart from them (every case fails on the code before): a write step
// guards every document it decided on (a grant, a rate line or a window
// racing a change of its instrument or user does not both succeed); the
// Errors lists' order in CreateRate, GrantQualification, CreateInstrument
// and CreateOrganization; an update that changes nothing writes nothing
// (an empty invoicing_details, a facility stored before time_zone); a use
// from before the current grant changes nothing; LookupRate and
// CheckAccess read every rate line and window however many there are;
// ListRates orders lines by effective_time to the nanosecond, before 1970
// too.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "labshare/inventory/v1/inventory_events.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class InventoryAudit4Test : public InventoryServiceTest {
 protected:
  static Principal Root() {
    Principal p;
    p.user_id = "root";
    p.roles = {Role::kConsortiumAdmin};
    p.expires_at = absl::InfiniteFuture();
    return p;
  }

  // Runs `change` once, in the first `method` call, between its reads and
  // its atomic step.
  void Meanwhile(const std::string& method, std::function<void()> change) {
    auto done = std::make_shared<bool>(false);
    manager_->SetBeforeCommitHookForTesting([method, change, done](absl::string_view m) {
      if (*done || m != method) return;
      *done = true;
      change();
    });
  }

  void Retire(const std::string& instrument) {
    v1::SetInstrumentStateRequest r;
    r.set_name(instrument);
    r.set_state(v1::RETIRED);
    auto done = manager_->SetInstrumentState(Root(), r);
    ASSERT_TRUE(done.ok()) << done.status();
  }

  std::vector<std::string> RateNames(const std::string& instrument) {
    v1::ListRatesRequest list;
    list.set_parent(instrument);
    list.set_page_size(500);
    v1::ListRatesResponse out;
    EXPECT_TRUE(Call(&Stub::ListRates, list, &out, admin_).ok());
    std::vector<std::string> names;
    for (const auto& r : out.rates()) names.push_back(r.name());
    return names;
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
};

// ------------------------------------------------------------ 1. guards on what was read

// inventory_manager.h: "compare-and-set on every document read". A grant
// read the instrument ACTIVE; retired before the grant committed, the
// grant was stored anyway: a RETIRED instrument with a fresh
// qualification. Now the grant reads again and is INSTRUMENT_RETIRED.
TEST_F(InventoryAudit4Test, GrantRacingRetirementDoesNotBothSucceed) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  Meanwhile("GrantQualification", [&] { Retire("instruments/tem"); });
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification q;
  ExpectError(Call(&Stub::GrantQualification, grant, &q, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "INSTRUMENT_RETIRED");
  v1::GetQualificationRequest get;
  get.set_name("instruments/tem/qualifications/ana");
  ExpectError(Call(&Stub::GetQualification, get, &q, admin_), grpc::StatusCode::NOT_FOUND,
              "QUALIFICATION_NOT_FOUND");
}

// The user read not disabled, disabled before the grant committed: the
// grant was stored for a disabled user. Now USER_DISABLED.
TEST_F(InventoryAudit4Test, GrantRacingUserDisabledDoesNotBothSucceed) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  MakeUser("ana", "owner");
  Meanwhile("GrantQualification", [&] {
    v1::UpdateUserRequest u;
    u.mutable_user()->set_name("users/ana");
    u.mutable_user()->set_disabled(true);
    u.mutable_update_mask()->add_paths("disabled");
    ASSERT_TRUE(manager_->UpdateUser(Root(), u).ok());
  });
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification q;
  ExpectError(Call(&Stub::GrantQualification, grant, &q, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "USER_DISABLED");
  v1::GetQualificationRequest get;
  get.set_name("instruments/tem/qualifications/ana");
  ExpectError(Call(&Stub::GetQualification, get, &q, admin_), grpc::StatusCode::NOT_FOUND,
              "QUALIFICATION_NOT_FOUND");
}

// A CNY line checked against a CNY instrument whose currency became USD
// before the line committed was stored in the wrong currency. Now it is
// checked again: INVALID_FIELD rate.price.currency_code, nothing stored.
TEST_F(InventoryAudit4Test, RateRacingCurrencyChangeIsCheckedAgain) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  Meanwhile("CreateRate", [&] {
    v1::UpdateInstrumentRequest u;
    u.mutable_instrument()->set_name("instruments/tem");
    u.mutable_instrument()->mutable_original_value()->set_currency_code("USD");
    u.mutable_instrument()->mutable_original_value()->set_amount_minor(400'000'000);
    u.mutable_update_mask()->add_paths("original_value");
    ASSERT_TRUE(manager_->UpdateInstrument(Root(), u).ok());
  });
  v1::Rate out;
  grpc::Status s = Call(&Stub::CreateRate, RateRequest("tem", tv1::MEMBER, "", 50000, clock_.Now()), &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"rate.price.currency_code"});
  EXPECT_TRUE(RateNames("instruments/tem").empty());
}

// A window declared on an instrument retired before it committed was
// stored. Now INSTRUMENT_RETIRED, no window.
TEST_F(InventoryAudit4Test, WindowRacingRetirementDoesNotBothSucceed) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  Meanwhile("CreateMaintenanceWindow", [&] { Retire("instruments/tem"); });
  v1::CreateMaintenanceWindowRequest req;
  req.set_parent("instruments/tem");
  *req.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(24));
  *req.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(26));
  v1::MaintenanceWindow w;
  ExpectError(Call(&Stub::CreateMaintenanceWindow, req, &w, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "INSTRUMENT_RETIRED");
  v1::ListMaintenanceWindowsRequest list;
  list.set_parent("instruments/tem");
  list.set_include_cancelled(true);
  v1::ListMaintenanceWindowsResponse windows;
  ASSERT_TRUE(Call(&Stub::ListMaintenanceWindows, list, &windows, admin_).ok());
  EXPECT_EQ(windows.maintenance_windows_size(), 0);
}

// ------------------------------------------------------------ 2. CreateRate's order

// CreateRate: "INVALID_ARGUMENT (INVALID_FIELD: negative price, ...);
// NOT_FOUND (INSTRUMENT_NOT_FOUND, SERVICE_ENTRY_NOT_FOUND);
// FAILED_PRECONDITION (MODE_NOT_OFFERED)". A negative price on a missing
// instrument was INSTRUMENT_NOT_FOUND; an unknown catalogue entry on an
// instrument without the mode MODE_NOT_OFFERED.
TEST_F(InventoryAudit4Test, CreateRateChecksFieldsThenNotFoundThenMode) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");  // ON_SITE only, no catalogue
  v1::Rate out;
  grpc::Status s = Call(&Stub::CreateRate, RateRequest("nothing", tv1::MEMBER, "", -1, clock_.Now()), &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "negative price, missing instrument");
  EXPECT_EQ(Violations(s), std::vector<std::string>{"rate.price.amount_minor"});

  v1::CreateRateRequest entry = RateRequest("tem", tv1::MEMBER, "", 1000, clock_.Now());
  entry.mutable_rate()->set_mode(tv1::TECHNICAL_SERVICE);
  entry.mutable_rate()->set_unit(v1::RATE_PER_SAMPLE);
  entry.mutable_rate()->set_service_entry_id("no-such-entry");
  ExpectError(Call(&Stub::CreateRate, entry, &out, admin_), grpc::StatusCode::NOT_FOUND, "SERVICE_ENTRY_NOT_FOUND",
              "unknown entry, mode not offered");
  // A line of a mode not offered that names no entry: MODE_NOT_OFFERED.
  entry.mutable_rate()->set_unit(v1::PER_HOUR);
  entry.mutable_rate()->clear_service_entry_id();
  ExpectError(Call(&Stub::CreateRate, entry, &out, admin_), grpc::StatusCode::FAILED_PRECONDITION, "MODE_NOT_OFFERED",
              "no entry, mode not offered");
}

// ------------------------------------------------------------ 3. GrantQualification's order

// GrantQualification: "FAILED_PRECONDITION (MODE_NOT_OFFERED: no ON_SITE
// mode; INSTRUMENT_RETIRED; USER_DISABLED)". A retired instrument without
// ON_SITE was INSTRUMENT_RETIRED.
TEST_F(InventoryAudit4Test, GrantOnARetiredInstrumentWithoutOnSiteIsModeNotOffered) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  v1::CreateInstrumentRequest create;
  create.set_instrument_id("jr");
  *create.mutable_instrument() = InstrumentSpec("owner", "fac");
  create.mutable_instrument()->mutable_modes(0)->set_mode(tv1::JOINT_RESEARCH);
  create.mutable_instrument()->mutable_modes(0)->mutable_slot_rules()->set_qualification_validity_days(0);
  v1::Instrument in;
  ASSERT_TRUE(Call(&Stub::CreateInstrument, create, &in, admin_).ok());
  Retire("instruments/jr");
  MakeUser("ana", "owner");
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/jr");
  grant.set_user("users/ana");
  v1::Qualification q;
  ExpectError(Call(&Stub::GrantQualification, grant, &q, admin_), grpc::StatusCode::FAILED_PRECONDITION,
              "MODE_NOT_OFFERED");
}

// ------------------------------------------------------------ 4. CreateInstrument's order

// CreateInstrument: "NOT_FOUND (FACILITY_NOT_FOUND,
// ORGANIZATION_NOT_FOUND)". Both missing was ORGANIZATION_NOT_FOUND.
TEST_F(InventoryAudit4Test, CreateInstrumentLooksUpTheFacilityFirst) {
  v1::CreateInstrumentRequest create;
  create.set_instrument_id("tem");
  *create.mutable_instrument() = InstrumentSpec("nobody", "nowhere");
  v1::Instrument in;
  ExpectError(Call(&Stub::CreateInstrument, create, &in, admin_), grpc::StatusCode::NOT_FOUND, "FACILITY_NOT_FOUND");
}

// ------------------------------------------------------------ 5. CreateOrganization's order

// CreateOrganization: "INVALID_FIELD: display_name empty, type
// unspecified, size_class on a non-enterprise, bad id, MEMBER without
// tier, ..., SUSPENDED/EXITED as initial state, an invoicing_details field
// too long or with control characters". The id was checked first, and the
// invoicing details before the membership.
TEST_F(InventoryAudit4Test, CreateOrganizationChecksFieldsInTheListedOrder) {
  const long long outbox = OutboxLength();
  auto violations = [&](const v1::CreateOrganizationRequest& req) {
    v1::Organization out;
    grpc::Status s = Call(&Stub::CreateOrganization, req, &out, admin_);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
    return Violations(s);
  };
  v1::CreateOrganizationRequest req;
  req.set_organization_id("Bad_Id");
  req.mutable_organization()->set_type(v1::UNIVERSITY);
  req.mutable_organization()->set_membership_state(v1::MEMBER);  // without a tier
  // display_name empty, then the id.
  EXPECT_EQ(violations(req), std::vector<std::string>{"organization.display_name"});
  req.mutable_organization()->set_display_name("Nano");
  // The id, then MEMBER without tier.
  EXPECT_EQ(violations(req), std::vector<std::string>{"organization_id"});
  req.set_organization_id("nano");
  EXPECT_EQ(violations(req), std::vector<std::string>{"organization.tier"});
  // The membership before the invoicing details.
  req.mutable_organization()->set_membership_state(v1::SUSPENDED);
  auto* d = req.mutable_organization()->mutable_invoicing_details();
  d->set_taxpayer_id("91350100M000100Y43");
  d->set_legal_name("示例有限公司");
  d->set_registered_address("福州市鼓楼区");
  d->set_bank_name("中国工商银行");
  d->set_bank_account("1202 0215 0910");
  d->set_phone(std::string(41, '1'));  // too long
  EXPECT_EQ(violations(req), std::vector<std::string>{"organization.membership_state"});
  req.mutable_organization()->set_membership_state(v1::APPLICANT);
  EXPECT_EQ(violations(req), std::vector<std::string>{"organization.invoicing_details.phone"});
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ 6. nothing changed, nothing written

// UpdateOrganization: "invoicing_details (the whole message; an empty one
// clears it)"; "An update that changes nothing ... writes nothing". An
// empty invoicing_details on an organisation without any was a change
// (an empty message set): a new etag and an event.
TEST_F(InventoryAudit4Test, ClearingAbsentInvoicingDetailsWritesNothing) {
  const v1::Organization org = MakeOrg("a", v1::MEMBER, "CORE");
  const long long outbox = OutboxLength();
  v1::UpdateOrganizationRequest req;
  req.mutable_organization()->set_name("organizations/a");
  req.mutable_organization()->mutable_invoicing_details();
  req.mutable_update_mask()->add_paths("invoicing_details");
  v1::Organization out;
  ASSERT_TRUE(Call(&Stub::UpdateOrganization, req, &out, admin_).ok());
  EXPECT_EQ(out.etag(), org.etag());
  EXPECT_FALSE(out.has_invoicing_details());
  EXPECT_EQ(OutboxLength(), outbox);
}

// Facility.time_zone: "records from before this field read as empty and
// mean the same" (the default zone). An update of such a record that
// changes nothing else filled the default in and wrote it.
TEST_F(InventoryAudit4Test, UpdateOfAFacilityStoredWithoutTimeZoneThatChangesNothingWritesNothing) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  const v1::Facility f = MakeFacility("fac", "owner");
  // As stored before time_zone existed.
  auto stored = pool_->Command({"HGET", keys::Facility("fac"), "d"});
  ASSERT_TRUE(stored.ok());
  v1::Facility old;
  ASSERT_TRUE(old.ParseFromString(stored->str));
  old.clear_time_zone();
  ASSERT_TRUE(pool_->Command({"HSET", keys::Facility("fac"), "d", old.SerializeAsString()}).ok());
  const long long outbox = OutboxLength();
  v1::UpdateFacilityRequest req;
  req.mutable_facility()->set_name("facilities/fac");
  req.mutable_facility()->set_display_name(f.display_name());
  req.mutable_update_mask()->add_paths("display_name");
  v1::Facility out;
  ASSERT_TRUE(Call(&Stub::UpdateFacility, req, &out, admin_).ok());
  EXPECT_EQ(out.etag(), f.etag());
  EXPECT_EQ(OutboxLength(), outbox);
  // Naming the default zone changes nothing either.
  req.mutable_facility()->set_time_zone(kDefaultFacilityTimeZone);
  req.mutable_update_mask()->add_paths("time_zone");
  ASSERT_TRUE(Call(&Stub::UpdateFacility, req, &out, admin_).ok());
  EXPECT_EQ(out.etag(), f.etag());
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ 7. a use before the grant

// RecordQualificationUse: a use from before the current grant (made under
// an earlier one, reported after a re-grant) changes nothing: no write, no
// event. It was stored as last_use_time, with an event.
TEST_F(InventoryAudit4Test, UseBeforeTheCurrentGrantChangesNothing) {
  v1::Qualification first;
  GrantAnaOnTem(&first);
  clock_.Advance(absl::Minutes(30));
  v1::GrantQualificationRequest grant;
  grant.set_instrument("instruments/tem");
  grant.set_user("users/ana");
  v1::Qualification again;
  ASSERT_TRUE(Call(&Stub::GrantQualification, grant, &again, admin_).ok());
  const long long outbox = OutboxLength();
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  v1::RecordQualificationUseRequest use;
  use.set_name(again.name());
  *use.mutable_use_time() = ToProto(FromProto(again.grant_time()) - absl::Minutes(10));
  grpc::ClientContext ctx;
  v1::Qualification out;
  ASSERT_TRUE(booking->RecordQualificationUse(&ctx, use, &out).ok());
  EXPECT_FALSE(out.has_last_use_time());
  EXPECT_EQ(FromProto(out.expire_time()), FromProto(again.expire_time()));
  EXPECT_EQ(OutboxLength(), outbox);
}

// ------------------------------------------------------------ 7b. a session across the lapse

// RecordQualificationUse with use_start_time: a session that began while
// the qualification was valid renews it from its end, although it lapsed
// during the session (booking reports the check-in and the check-out).
// Judged at use_time alone, the same use changed nothing and the
// qualification stayed EXPIRED.
TEST_F(InventoryAudit4Test, ASessionThatBeganBeforeTheLapseRenewsTheQualification) {
  v1::Qualification q;
  GrantAnaOnTem(&q);  // 30 days of validity
  const absl::Time expire = FromProto(q.expire_time());
  clock_.Advance(absl::Hours(24 * 30) + absl::Hours(2));  // past the lapse
  auto booking = v1::InventoryService::NewStub(testing::TlsChannel(server_->address(), "booking"));
  v1::RecordQualificationUseRequest use;
  use.set_name(q.name());
  use.set_request_id("checkout-b1");
  *use.mutable_use_start_time() = ToProto(expire - absl::Minutes(30));
  *use.mutable_use_time() = ToProto(expire + absl::Minutes(30));
  // Begins after it ends: refused, naming the field.
  {
    v1::RecordQualificationUseRequest bad = use;
    bad.set_request_id("checkout-bad");
    *bad.mutable_use_start_time() = ToProto(expire + absl::Minutes(31));
    grpc::ClientContext ctx;
    v1::Qualification out;
    grpc::Status s = booking->RecordQualificationUse(&ctx, bad, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(GrpcErrorReason(s), "INVALID_FIELD");
    EXPECT_EQ(Violations(s), std::vector<std::string>{"use_start_time"});
  }
  // Without the start, the use at its end (after the lapse) changes nothing.
  {
    v1::RecordQualificationUseRequest end_only = use;
    end_only.set_request_id("checkout-end-only");
    end_only.clear_use_start_time();
    const long long outbox = OutboxLength();
    grpc::ClientContext ctx;
    v1::Qualification out;
    ASSERT_TRUE(booking->RecordQualificationUse(&ctx, end_only, &out).ok());
    EXPECT_EQ(out.state(), v1::EXPIRED);
    EXPECT_FALSE(out.has_last_use_time());
    EXPECT_EQ(OutboxLength(), outbox);
  }
  const long long outbox = OutboxLength();
  grpc::ClientContext ctx;
  v1::Qualification out;
  ASSERT_TRUE(booking->RecordQualificationUse(&ctx, use, &out).ok());
  EXPECT_EQ(out.state(), v1::VALID);
  EXPECT_EQ(FromProto(out.last_use_time()), expire + absl::Minutes(30));
  EXPECT_EQ(FromProto(out.expire_time()), expire + absl::Minutes(30) + absl::Hours(24 * 30));
  EXPECT_EQ(OutboxLength(), outbox + 1);
}

// ------------------------------------------------------------ 8. every line, every window

// LookupRate and CheckAccess read the first 10,000 members of the rate
// index (and of the window index) only: a line or window after them was
// not seen. Index members whose documents are absent are skipped, so
// 10,001 of them before the real ones stand for a long history.
TEST_F(InventoryAudit4Test, LookupRateAndCheckAccessReadEveryLineAndWindow) {
  v1::Qualification q;
  GrantAnaOnTem(&q);
  const v1::Rate line = MakeRate("tem", tv1::OWNER, "", 100, clock_.Now() - absl::Hours(1));
  v1::CreateMaintenanceWindowRequest mw;
  mw.set_parent("instruments/tem");
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + absl::Hours(3));
  *mw.mutable_maintenance_window()->mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + absl::Hours(5));
  v1::MaintenanceWindow window;
  ASSERT_TRUE(Call(&Stub::CreateMaintenanceWindow, mw, &window, admin_).ok());
  std::vector<std::string> rates = {"ZADD", keys::Rates("tem")};
  std::vector<std::string> windows = {"ZADD", keys::Windows("tem")};
  for (int i = 0; i < 10'001; ++i) {
    rates.push_back("0");
    rates.push_back(absl::StrCat("00", std::string(1, kRateKeySeparator), "gone-", i));  // mode 00: first
    windows.push_back("0");
    windows.push_back(absl::StrFormat("%020d.%09d|gone-%d", 0, 0, i));  // 1970: first
  }
  ASSERT_EQ(Redis(rates), 10'001);
  ASSERT_EQ(Redis(windows), 10'001);

  v1::LookupRateRequest lookup;
  lookup.set_instrument("instruments/tem");
  lookup.set_mode(tv1::ON_SITE);
  lookup.set_payer_organization("organizations/owner");
  v1::LookupRateResponse found;
  grpc::Status s = Call(&Stub::LookupRate, lookup, &found, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(found.rate().name(), line.name());

  v1::CheckAccessResponse access;
  ASSERT_TRUE(Call(&Stub::CheckAccess,
                   Access("users/ana", "instruments/tem", clock_.Now() + absl::Hours(4), clock_.Now() + absl::Hours(6)),
                   &access, admin_)
                  .ok());
  EXPECT_EQ(access.rate().name(), line.name());
  ASSERT_EQ(access.denials_size(), 1);
  EXPECT_EQ(access.denials(0).code(), v1::DURING_MAINTENANCE);
}

// ------------------------------------------------------------ 9. rate lines by time

// ListRates: "ordered by key then effective_time". Lines of one key in
// force from within one second came by their ids (whole seconds in the
// index), lines from before 1970 latest first ("-0...02" after
// "-0...01"). Now by effective_time to the nanosecond; index members of
// the whole-second format are rewritten by MigrateRateIndexes, once.
TEST_F(InventoryAudit4Test, ListRatesOrdersLinesByEffectiveTimeToTheNanosecond) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  MakeInstrument("tem", "owner", "fac");
  const absl::Time second = clock_.Now() + absl::Hours(1);
  std::vector<absl::Time> times = {absl::FromUnixSeconds(-2), absl::FromUnixSeconds(-1),
                                   absl::FromUnixSeconds(-1) + absl::Milliseconds(500)};
  for (int i = 0; i < 6; ++i) times.push_back(second + absl::Milliseconds(100 * i));
  std::vector<v1::Rate> lines(times.size());
  for (size_t i = times.size(); i-- > 0;) {  // the latest first
    lines[i] = MakeRate("tem", tv1::MEMBER, "", 1000 + static_cast<int64_t>(i), times[i]);
  }
  std::vector<std::string> by_time;
  for (const auto& r : lines) by_time.push_back(r.name());
  EXPECT_EQ(RateNames("instruments/tem"), by_time);

  // The whole-second format: "<mode>\1<class>\1<tier>\1<entry>\1<seconds, %020d>\1<id>".
  ASSERT_EQ(Redis({"DEL", keys::Rates("tem")}), 1);
  const std::string sep(1, kRateKeySeparator);
  for (const auto& r : lines) {
    const std::string id = r.name().substr(r.name().rfind('/') + 1);
    ASSERT_EQ(Redis({"ZADD", keys::Rates("tem"), "0",
                     absl::StrCat(absl::StrFormat("%02d", static_cast<int>(r.mode())), sep,
                                  static_cast<int>(r.payer_class()), sep, r.tier(), sep, r.service_entry_id(), sep,
                                  absl::StrFormat("%020d", r.effective_time().seconds()), sep, id)}),
              1);
  }
  auto moved = manager_->MigrateRateIndexes();
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, static_cast<int>(lines.size()));
  EXPECT_EQ(*manager_->MigrateRateIndexes(), 0);
  EXPECT_EQ(RateNames("instruments/tem"), by_time);
}

}  // namespace
}  // namespace labshare::inventory
