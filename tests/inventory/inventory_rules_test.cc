// The inventory's pure rules: validation, transitions, rate lookup,
// qualification expiry and the access decision. No clock, no storage: every
// time is a fixed civil time in UTC.
#include "services/inventory/inventory_rules.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "common/error.h"
#include "common/proto_util.h"

namespace labshare::inventory {
namespace {

namespace tv1 = labshare::type::v1;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// ================================================================ helpers

absl::Time At(int year, int month, int day, int hour = 0, int minute = 0, int second = 0) {
  return absl::FromCivil(absl::CivilSecond(year, month, day, hour, minute, second),
                         absl::UTCTimeZone());
}

// "Now" of every access check: Monday 10 March 2025, 09:00 UTC.
const absl::Time kNow = At(2025, 3, 10, 9);

constexpr char kOwner[] = "organizations/owner";
constexpr char kMemberOrg[] = "organizations/member";
constexpr char kInstrument[] = "instruments/cryo-tem";

// Field names of a status's BadRequest violations, in order.
std::vector<std::string> Fields(const absl::Status& status) {
  std::vector<std::string> out;
  for (const auto& v : FieldViolationsOf(status)) out.push_back(v.field);
  return out;
}

// An INVALID_ARGUMENT / INVALID_FIELD status naming exactly `field`.
void ExpectInvalidField(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ErrorReason(status), "INVALID_FIELD") << status;
  EXPECT_THAT(Fields(status), ElementsAre(field)) << status;
}

void ExpectInvalidName(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(ErrorReason(status), "INVALID_NAME") << status;
  EXPECT_THAT(Fields(status), ElementsAre(field)) << status;
}

tv1::Money Cny(int64_t minor) {
  tv1::Money m;
  m.set_currency_code("CNY");
  m.set_amount_minor(minor);
  return m;
}

tv1::Interval Span(absl::Time start, absl::Time end) {
  tv1::Interval i;
  *i.mutable_start_time() = ToProto(start);
  *i.mutable_end_time() = ToProto(end);
  return i;
}

// ON_SITE rules of the reference instrument: blocks of 1 h to 8 h, members
// book 30 days ahead and everybody else 7, 2 h notice, qualifications lapse
// after 30 days without use.
v1::SlotRules OnSiteRules() {
  v1::SlotRules r;
  *r.mutable_min_block() = ToProto(absl::Hours(1));
  *r.mutable_max_block() = ToProto(absl::Hours(8));
  *r.mutable_member_horizon() = ToProto(absl::Hours(24 * 30));
  *r.mutable_non_member_horizon() = ToProto(absl::Hours(24 * 7));
  *r.mutable_min_notice() = ToProto(absl::Hours(2));
  *r.mutable_buffer() = ToProto(absl::Minutes(15));
  *r.mutable_no_show_grace() = ToProto(absl::Minutes(15));
  *r.mutable_late_cancel_notice() = ToProto(absl::Hours(24));
  r.set_billing_basis(v1::RESERVED_TIME);
  *r.mutable_billing_unit() = ToProto(absl::Minutes(15));
  *r.mutable_minimum_charge() = ToProto(absl::Hours(1));
  r.set_missed_fee_bps(5000);
  r.set_late_cancel_fee_bps(2500);
  r.set_qualification_validity_days(30);
  return r;
}

v1::LeaseRules LeaseTerms() {
  v1::LeaseRules r;
  r.set_min_term_days(7);
  r.set_max_term_days(90);
  *r.mutable_handover_buffer() = ToProto(absl::Hours(24));
  *r.mutable_return_buffer() = ToProto(absl::Hours(48));
  *r.mutable_deposit() = Cny(10000000);
  r.set_rate_basis(v1::PER_DAY);
  r.set_counted_hours_per_day(8);
  *r.mutable_horizon() = ToProto(absl::Hours(24 * 60));
  return r;
}

// A valid instrument offering ON_SITE only, without its own access policy.
v1::Instrument OnSiteInstrument() {
  v1::Instrument in;
  in.set_name(kInstrument);
  in.set_display_name("Cryo-TEM 300 kV");
  in.set_owner_organization(kOwner);
  in.set_facility("facilities/em-centre");
  in.set_category("electron-microscopy");
  *in.mutable_original_value() = Cny(3000000000);
  in.set_state(v1::ACTIVE);
  in.set_daily_available_hours(8);
  auto* m = in.add_modes();
  m->set_mode(tv1::ON_SITE);
  *m->mutable_slot_rules() = OnSiteRules();
  return in;
}

v1::ModeOffering* AddLease(v1::Instrument& in) {
  auto* m = in.add_modes();
  m->set_mode(tv1::LEASE);
  *m->mutable_lease_rules() = LeaseTerms();
  return m;
}

v1::ModeOffering* AddTechnicalService(v1::Instrument& in) {
  auto* m = in.add_modes();
  m->set_mode(tv1::TECHNICAL_SERVICE);
  *m->mutable_slot_rules() = OnSiteRules();
  m->mutable_slot_rules()->set_qualification_validity_days(0);
  auto* e = in.add_service_catalogue();
  e->set_entry_id("sem-imaging");
  e->set_display_name("SEM imaging");
  e->set_unit(v1::PER_SAMPLE);
  *e->mutable_instrument_time_per_unit() = ToProto(absl::Minutes(30));
  return m;
}

v1::Organization Org(const std::string& name, v1::MembershipState state,
                     const std::string& tier = "") {
  v1::Organization o;
  o.set_name(name);
  o.set_display_name("Org " + name);
  o.set_type(v1::UNIVERSITY);
  o.set_membership_state(state);
  o.set_tier(tier);
  return o;
}

v1::Rate RateLine(const std::string& id, tv1::SharingMode mode, tv1::PayerClass cls,
                  const std::string& tier, absl::Time effective, int64_t price,
                  v1::RateUnit unit = v1::PER_HOUR, const std::string& entry = "") {
  v1::Rate r;
  r.set_name(absl::StrCat(kInstrument, "/rates/", id));
  r.set_mode(mode);
  r.set_payer_class(cls);
  r.set_tier(tier);
  r.set_service_entry_id(entry);
  r.set_unit(unit);
  *r.mutable_price() = Cny(price);
  *r.mutable_effective_time() = ToProto(effective);
  return r;
}

// ================================================================ ids and names

TEST(ValidId, AcceptsLowercaseDigitsAndInnerHyphens) {
  EXPECT_TRUE(ValidId("a"));
  EXPECT_TRUE(ValidId("0"));
  EXPECT_TRUE(ValidId("acme"));
  EXPECT_TRUE(ValidId("cryo-tem-2"));
  EXPECT_TRUE(ValidId("9lab-"));
}

TEST(ValidId, AcceptsSixtyThreeCharacters) { EXPECT_TRUE(ValidId(std::string(63, 'a'))); }

TEST(ValidId, RejectsSixtyFourCharacters) { EXPECT_FALSE(ValidId(std::string(64, 'a'))); }

TEST(ValidId, RejectsEmpty) { EXPECT_FALSE(ValidId("")); }

TEST(ValidId, RejectsLeadingHyphen) { EXPECT_FALSE(ValidId("-acme")); }

TEST(ValidId, RejectsUppercase) {
  EXPECT_FALSE(ValidId("Acme"));
  EXPECT_FALSE(ValidId("acMe"));
}

TEST(ValidId, RejectsOtherPunctuation) {
  EXPECT_FALSE(ValidId("a_b"));
  EXPECT_FALSE(ValidId("a.b"));
  EXPECT_FALSE(ValidId("a/b"));
  EXPECT_FALSE(ValidId("a b"));
  EXPECT_FALSE(ValidId("caf\xc3\xa9"));
}

TEST(ParseName, ReturnsTheId) {
  auto id = ParseName("organizations/acme", "organizations", "name");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, "acme");
}

TEST(ParseName, RejectsOtherCollection) {
  ExpectInvalidName(ParseName("users/acme", "organizations", "name").status(), "name");
}

TEST(ParseName, RejectsMissingId) {
  ExpectInvalidName(ParseName("organizations/", "organizations", "name").status(), "name");
}

TEST(ParseName, RejectsBareCollection) {
  ExpectInvalidName(ParseName("organizations", "organizations", "name").status(), "name");
}

TEST(ParseName, RejectsEmpty) {
  ExpectInvalidName(ParseName("", "organizations", "parent").status(), "parent");
}

TEST(ParseName, RejectsExtraSegments) {
  ExpectInvalidName(ParseName("organizations/acme/users/bob", "organizations", "name").status(),
                    "name");
}

TEST(ParseName, RejectsInvalidId) {
  ExpectInvalidName(ParseName("organizations/Acme", "organizations", "payer_organization").status(),
                    "payer_organization");
}

TEST(ParseChildName, ReturnsBothIds) {
  auto ids = ParseChildName("instruments/cryo-tem/rates/r-1", "instruments", "rates", "name");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->first, "cryo-tem");
  EXPECT_EQ(ids->second, "r-1");
}

TEST(ParseChildName, RejectsOtherChildCollection) {
  ExpectInvalidName(
      ParseChildName("instruments/cryo-tem/qualifications/bob", "instruments", "rates", "name")
          .status(),
      "name");
}

TEST(ParseChildName, RejectsOtherParentCollection) {
  ExpectInvalidName(
      ParseChildName("facilities/cryo-tem/rates/r-1", "instruments", "rates", "name").status(),
      "name");
}

TEST(ParseChildName, RejectsParentNameAlone) {
  ExpectInvalidName(ParseChildName("instruments/cryo-tem", "instruments", "rates", "name").status(),
                    "name");
}

TEST(ParseChildName, RejectsMissingChildId) {
  ExpectInvalidName(
      ParseChildName("instruments/cryo-tem/rates/", "instruments", "rates", "name").status(),
      "name");
}

TEST(ParseChildName, RejectsInvalidParentId) {
  ExpectInvalidName(
      ParseChildName("instruments/-/rates/r-1", "instruments", "rates", "name").status(), "name");
}

TEST(ParseChildName, RejectsExtraSegments) {
  ExpectInvalidName(
      ParseChildName("instruments/i/rates/r/x", "instruments", "rates", "name").status(), "name");
}

// ================================================================ membership

constexpr v1::MembershipState kMembershipStates[] = {
    v1::MEMBERSHIP_STATE_UNSPECIFIED, v1::APPLICANT, v1::MEMBER,
    v1::SUSPENDED,                    v1::EXITED,    v1::NON_MEMBER};

bool MembershipTableSaysAllowed(v1::MembershipState from, v1::MembershipState to) {
  static const std::pair<v1::MembershipState, v1::MembershipState> kAllowed[] = {
      {v1::APPLICANT, v1::MEMBER},  {v1::APPLICANT, v1::NON_MEMBER}, {v1::MEMBER, v1::SUSPENDED},
      {v1::MEMBER, v1::EXITED},     {v1::SUSPENDED, v1::MEMBER},     {v1::SUSPENDED, v1::EXITED},
      {v1::EXITED, v1::APPLICANT},  {v1::NON_MEMBER, v1::APPLICANT}};
  for (const auto& [f, t] : kAllowed) {
    if (f == from && t == to) return true;
  }
  return false;
}

class MembershipTransitionTable
    : public ::testing::TestWithParam<std::tuple<v1::MembershipState, v1::MembershipState>> {};

// One instance per (from, to) pair of the six enum values.
TEST_P(MembershipTransitionTable, MatchesTheContract) {
  const auto [from, to] = GetParam();
  EXPECT_EQ(MembershipTransitionAllowed(from, to), MembershipTableSaysAllowed(from, to));
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs, MembershipTransitionTable,
    ::testing::Combine(::testing::ValuesIn(kMembershipStates),
                       ::testing::ValuesIn(kMembershipStates)),
    [](const ::testing::TestParamInfo<MembershipTransitionTable::ParamType>& info) {
      return absl::StrCat(v1::MembershipState_Name(std::get<0>(info.param)), "_to_",
                          v1::MembershipState_Name(std::get<1>(info.param)));
    });

TEST(MembershipTransitions, SuspendedMemberCanBeReinstated) {
  EXPECT_TRUE(MembershipTransitionAllowed(v1::SUSPENDED, v1::MEMBER));
}

TEST(MembershipTransitions, ExitedOrganisationMustReapply) {
  EXPECT_FALSE(MembershipTransitionAllowed(v1::EXITED, v1::MEMBER));
  EXPECT_TRUE(MembershipTransitionAllowed(v1::EXITED, v1::APPLICANT));
}

TEST(MembershipTransitions, NonMemberCannotJoinWithoutApplying) {
  EXPECT_FALSE(MembershipTransitionAllowed(v1::NON_MEMBER, v1::MEMBER));
}

// ================================================================ organisations

v1::Organization ValidEnterprise() {
  v1::Organization o;
  o.set_display_name("Shanghai Microfab Ltd");
  o.set_type(v1::ENTERPRISE);
  o.set_size_class(v1::SME);
  return o;
}

TEST(ValidateOrganization, AcceptsEnterpriseWithSizeClass) {
  EXPECT_TRUE(ValidateOrganization(ValidEnterprise()).ok());
}

TEST(ValidateOrganization, AcceptsUniversityWithoutSizeClass) {
  v1::Organization o;
  o.set_display_name("Fudan University");
  o.set_type(v1::UNIVERSITY);
  EXPECT_TRUE(ValidateOrganization(o).ok());
}

TEST(ValidateOrganization, RejectsEmptyDisplayName) {
  v1::Organization o = ValidEnterprise();
  o.clear_display_name();
  ExpectInvalidField(ValidateOrganization(o), "organization.display_name");
}

TEST(ValidateOrganization, AcceptsDisplayNameOfTwoHundredCharacters) {
  v1::Organization o = ValidEnterprise();
  o.set_display_name(std::string(200, 'x'));
  EXPECT_TRUE(ValidateOrganization(o).ok());
}

TEST(ValidateOrganization, CountsDisplayNameInCharactersNotBytes) {
  v1::Organization o = ValidEnterprise();
  std::string name;
  for (int i = 0; i < 200; ++i) name += "\xe5\xad\xa6";  // 200 x U+5B66, 600 bytes
  o.set_display_name(name);
  EXPECT_TRUE(ValidateOrganization(o).ok());
}

TEST(ValidateOrganization, RejectsDisplayNameOverTwoHundredCharacters) {
  v1::Organization o = ValidEnterprise();
  o.set_display_name(std::string(201, 'x'));
  ExpectInvalidField(ValidateOrganization(o), "organization.display_name");
}

TEST(ValidateOrganization, RejectsUnspecifiedType) {
  v1::Organization o;
  o.set_display_name("Somebody");
  ExpectInvalidField(ValidateOrganization(o), "organization.type");
}

// The original contract refuses a size class on a non-enterprise only: an
// enterprise without one is not classified.
TEST(ValidateOrganization, AcceptsEnterpriseWithoutSizeClass) {
  v1::Organization o = ValidEnterprise();
  o.clear_size_class();
  EXPECT_TRUE(ValidateOrganization(o).ok());
}

TEST(ValidateOrganization, RejectsSizeClassOnNonEnterprise) {
  v1::Organization o;
  o.set_display_name("Institute of Microelectronics");
  o.set_type(v1::RESEARCH_INSTITUTE);
  o.set_size_class(v1::LARGE);
  ExpectInvalidField(ValidateOrganization(o), "organization.size_class");
}

TEST(ValidateOrganization, RejectsUnknownSizeClass) {
  v1::Organization o = ValidEnterprise();
  o.set_size_class(static_cast<v1::SizeClass>(42));
  ExpectInvalidField(ValidateOrganization(o), "organization.size_class");
}

TEST(ValidateOrganization, ReportsEveryBadFieldInOrder) {
  v1::Organization o;
  o.set_size_class(v1::START_UP);
  absl::Status s = ValidateOrganization(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorReason(s), "INVALID_FIELD");
  EXPECT_THAT(Fields(s), ElementsAre("organization.display_name", "organization.type",
                                     "organization.size_class"));
}

TEST(ValidateInitialMembership, AcceptsApplicant) {
  EXPECT_TRUE(ValidateInitialMembership(Org(kMemberOrg, v1::APPLICANT)).ok());
}

TEST(ValidateInitialMembership, AcceptsNonMember) {
  EXPECT_TRUE(ValidateInitialMembership(Org(kMemberOrg, v1::NON_MEMBER)).ok());
}

TEST(ValidateInitialMembership, AcceptsFoundingMemberWithTier) {
  EXPECT_TRUE(ValidateInitialMembership(Org(kMemberOrg, v1::MEMBER, "CORE")).ok());
}

TEST(ValidateInitialMembership, RejectsMemberWithoutTier) {
  ExpectInvalidField(ValidateInitialMembership(Org(kMemberOrg, v1::MEMBER)), "organization.tier");
}

TEST(ValidateInitialMembership, RejectsSuspended) {
  ExpectInvalidField(ValidateInitialMembership(Org(kMemberOrg, v1::SUSPENDED, "CORE")),
                     "organization.membership_state");
}

TEST(ValidateInitialMembership, RejectsExited) {
  ExpectInvalidField(ValidateInitialMembership(Org(kMemberOrg, v1::EXITED)),
                     "organization.membership_state");
}

TEST(ValidateInitialMembership, RejectsUnspecified) {
  ExpectInvalidField(ValidateInitialMembership(Org(kMemberOrg, v1::MEMBERSHIP_STATE_UNSPECIFIED)),
                     "organization.membership_state");
}

// ================================================================ users

v1::User ValidUser() {
  v1::User u;
  u.set_name("users/alice");
  u.set_display_name("Alice Zhang");
  u.set_email("alice@member.example");
  u.set_organization(kMemberOrg);
  u.add_roles(tv1::LAB_USER);
  u.add_roles(tv1::MEMBER_BILLING_ADMIN);
  return u;
}

TEST(ValidateUser, AcceptsPersonWithRoles) { EXPECT_TRUE(ValidateUser(ValidUser()).ok()); }

TEST(ValidateUser, AcceptsMissingEmail) {
  v1::User u = ValidUser();
  u.clear_email();
  EXPECT_TRUE(ValidateUser(u).ok());
}

TEST(ValidateUser, RejectsNoRoles) {
  v1::User u = ValidUser();
  u.clear_roles();
  ExpectInvalidField(ValidateUser(u), "user.roles");
}

TEST(ValidateUser, RejectsServiceRole) {
  v1::User u = ValidUser();
  u.add_roles(tv1::SERVICE);
  ExpectInvalidField(ValidateUser(u), "user.roles");
}

TEST(ValidateUser, RejectsDuplicateRole) {
  v1::User u = ValidUser();
  u.add_roles(tv1::LAB_USER);
  ExpectInvalidField(ValidateUser(u), "user.roles");
}

TEST(ValidateUser, RejectsUnspecifiedRole) {
  v1::User u = ValidUser();
  u.add_roles(tv1::ROLE_UNSPECIFIED);
  ExpectInvalidField(ValidateUser(u), "user.roles");
}

TEST(ValidateUser, RejectsEmailWithoutAt) {
  v1::User u = ValidUser();
  u.set_email("alice.member.example");
  ExpectInvalidField(ValidateUser(u), "user.email");
}

TEST(ValidateUser, RejectsEmailsThatCouldInjectMailHeaders) {
  for (const char* bad : {"alice@member.example\r\nBcc: eve@evil.example", "alice@member.example\nX: y",
                          "alice@member.example>", "<alice@member.example", "alice @member.example",
                          "alice@member@example", "alice\t@member.example"}) {
    v1::User u = ValidUser();
    u.set_email(bad);
    ExpectInvalidField(ValidateUser(u), "user.email");
  }
  v1::User u = ValidUser();
  u.set_email("alice.b+lab@member.example");
  EXPECT_TRUE(ValidateUser(u).ok());
}

TEST(ValidateUser, RejectsEmptyDisplayName) {
  v1::User u = ValidUser();
  u.clear_display_name();
  ExpectInvalidField(ValidateUser(u), "user.display_name");
}

TEST(ValidateUser, ReportsEveryBadFieldInOrder) {
  v1::User u;
  u.set_email("nobody");
  absl::Status s = ValidateUser(u);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Fields(s), ElementsAre("user.display_name", "user.email", "user.roles"));
}

// ================================================================ instruments

TEST(ValidateInstrument, AcceptsOnSiteInstrument) {
  EXPECT_TRUE(ValidateInstrument(OnSiteInstrument()).ok());
}

TEST(ValidateInstrument, AcceptsAllModesWithCatalogue) {
  v1::Instrument in = OnSiteInstrument();
  AddLease(in);
  AddTechnicalService(in);
  auto* jr = in.add_modes();
  jr->set_mode(tv1::JOINT_RESEARCH);
  *jr->mutable_slot_rules() = OnSiteRules();
  EXPECT_TRUE(ValidateInstrument(in).ok()) << ValidateInstrument(in);
}

TEST(ValidateInstrument, RejectsEmptyDisplayName) {
  v1::Instrument in = OnSiteInstrument();
  in.clear_display_name();
  ExpectInvalidField(ValidateInstrument(in), "instrument.display_name");
}

TEST(ValidateInstrument, RejectsEmptyCategory) {
  v1::Instrument in = OnSiteInstrument();
  in.clear_category();
  ExpectInvalidField(ValidateInstrument(in), "instrument.category");
}

TEST(ValidateInstrument, RejectsLowercaseCurrency) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_original_value()->set_currency_code("cny");
  ExpectInvalidField(ValidateInstrument(in), "instrument.original_value.currency_code");
}

TEST(ValidateInstrument, RejectsMissingCurrency) {
  v1::Instrument in = OnSiteInstrument();
  in.clear_original_value();
  ExpectInvalidField(ValidateInstrument(in), "instrument.original_value.currency_code");
}

TEST(ValidateInstrument, RejectsNegativeOriginalValue) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_original_value()->set_amount_minor(-1);
  ExpectInvalidField(ValidateInstrument(in), "instrument.original_value.amount_minor");
}

TEST(ValidateInstrument, RejectsZeroDailyAvailableHours) {
  v1::Instrument in = OnSiteInstrument();
  in.set_daily_available_hours(0);
  ExpectInvalidField(ValidateInstrument(in), "instrument.daily_available_hours");
}

TEST(ValidateInstrument, RejectsTwentyFiveDailyAvailableHours) {
  v1::Instrument in = OnSiteInstrument();
  in.set_daily_available_hours(25);
  ExpectInvalidField(ValidateInstrument(in), "instrument.daily_available_hours");
}

TEST(ValidateInstrument, AcceptsTwentyFourDailyAvailableHours) {
  v1::Instrument in = OnSiteInstrument();
  in.set_daily_available_hours(24);
  EXPECT_TRUE(ValidateInstrument(in).ok());
}

TEST(ValidateInstrument, RejectsNoModes) {
  v1::Instrument in = OnSiteInstrument();
  in.clear_modes();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes");
}

TEST(ValidateInstrument, RejectsDuplicateMode) {
  v1::Instrument in = OnSiteInstrument();
  *in.add_modes() = in.modes(0);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[1].mode");
}

TEST(ValidateInstrument, RejectsUnspecifiedMode) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->set_mode(tv1::SHARING_MODE_UNSPECIFIED);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].mode");
}

TEST(ValidateInstrument, RejectsLeaseWithoutLeaseRules) {
  v1::Instrument in = OnSiteInstrument();
  AddLease(in)->clear_lease_rules();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[1].lease_rules");
}

TEST(ValidateInstrument, RejectsLeaseWithSlotRules) {
  v1::Instrument in = OnSiteInstrument();
  *AddLease(in)->mutable_slot_rules() = OnSiteRules();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[1].slot_rules");
}

TEST(ValidateInstrument, RejectsLeaseMaxTermBelowMinTerm) {
  v1::Instrument in = OnSiteInstrument();
  AddLease(in)->mutable_lease_rules()->set_max_term_days(6);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[1].lease_rules.max_term_days");
}

// LeaseRules.horizon: "Unset: no limit"; set, it must be positive: a zero
// horizon (an empty Duration message) was stored and then refused every
// lease ("a lease may start at most 0 from now"). Negative stays refused.
TEST(ValidateInstrument, RejectsALeaseHorizonSetToZeroOrLessButNotAnUnsetOne) {
  v1::Instrument in = OnSiteInstrument();
  auto* lr = AddLease(in)->mutable_lease_rules();
  lr->clear_horizon();
  EXPECT_TRUE(ValidateInstrument(in).ok());
  for (const absl::Duration d : {absl::ZeroDuration(), absl::Seconds(-1), absl::Nanoseconds(-1)}) {
    *lr->mutable_horizon() = ToProto(d);
    const absl::Status s = ValidateInstrument(in);
    ExpectInvalidField(s, "instrument.modes[1].lease_rules.horizon");
    EXPECT_THAT(std::string(s.message()), HasSubstr("leave it unset for no limit")) << d;
  }
  lr->mutable_horizon()->set_nanos(1);
  EXPECT_TRUE(ValidateInstrument(in).ok());
}

TEST(ValidateInstrument, RejectsOnSiteWithoutSlotRules) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->clear_slot_rules();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules");
}

TEST(ValidateInstrument, RejectsOnSiteWithLeaseRules) {
  v1::Instrument in = OnSiteInstrument();
  *in.mutable_modes(0)->mutable_lease_rules() = LeaseTerms();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].lease_rules");
}

TEST(ValidateInstrument, RejectsMinBlockAboveMaxBlock) {
  v1::Instrument in = OnSiteInstrument();
  *in.mutable_modes(0)->mutable_slot_rules()->mutable_min_block() = ToProto(absl::Hours(9));
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.min_block");
}

TEST(ValidateInstrument, AcceptsMinBlockEqualToMaxBlock) {
  v1::Instrument in = OnSiteInstrument();
  *in.mutable_modes(0)->mutable_slot_rules()->mutable_min_block() = ToProto(absl::Hours(8));
  EXPECT_TRUE(ValidateInstrument(in).ok());
}

TEST(ValidateInstrument, RejectsZeroMaxBlock) {
  v1::Instrument in = OnSiteInstrument();
  auto* r = in.mutable_modes(0)->mutable_slot_rules();
  r->clear_min_block();
  r->clear_max_block();
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.max_block");
}

TEST(ValidateInstrument, RejectsNegativeDuration) {
  v1::Instrument in = OnSiteInstrument();
  *in.mutable_modes(0)->mutable_slot_rules()->mutable_buffer() = ToProto(absl::Minutes(-5));
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.buffer");
}

TEST(ValidateInstrument, RejectsNonMemberHorizonBeyondMemberHorizon) {
  v1::Instrument in = OnSiteInstrument();
  *in.mutable_modes(0)->mutable_slot_rules()->mutable_non_member_horizon() =
      ToProto(absl::Hours(24 * 31));
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.non_member_horizon");
}

TEST(ValidateInstrument, RejectsUnspecifiedBillingBasis) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->set_billing_basis(v1::BILLING_BASIS_UNSPECIFIED);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.billing_basis");
}

// No billing unit: billed as measured (billing's RoundUpTo leaves the time
// as it is); a negative one is still refused.
TEST(ValidateInstrument, AcceptsZeroBillingUnitButNotANegativeOne) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->clear_billing_unit();
  EXPECT_TRUE(ValidateInstrument(in).ok());
  *in.mutable_modes(0)->mutable_slot_rules()->mutable_billing_unit() = ToProto(absl::Minutes(-15));
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.billing_unit");
}

TEST(ValidateInstrument, RejectsMissedFeeAboveTenThousandBasisPoints) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->set_missed_fee_bps(10001);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.missed_fee_bps");
}

TEST(ValidateInstrument, AcceptsFeeOfExactlyTenThousandBasisPoints) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->set_late_cancel_fee_bps(10000);
  EXPECT_TRUE(ValidateInstrument(in).ok());
}

TEST(ValidateInstrument, RejectsNegativeLateCancelFee) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->set_late_cancel_fee_bps(-1);
  ExpectInvalidField(ValidateInstrument(in), "instrument.modes[0].slot_rules.late_cancel_fee_bps");
}

TEST(ValidateInstrument, RejectsNegativeQualificationValidity) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_modes(0)->mutable_slot_rules()->set_qualification_validity_days(-1);
  ExpectInvalidField(ValidateInstrument(in),
                     "instrument.modes[0].slot_rules.qualification_validity_days");
}

TEST(ValidateInstrument, RejectsCatalogueWithoutTechnicalService) {
  v1::Instrument in = OnSiteInstrument();
  auto* e = in.add_service_catalogue();
  e->set_entry_id("sem-imaging");
  e->set_display_name("SEM imaging");
  e->set_unit(v1::PER_SAMPLE);
  ExpectInvalidField(ValidateInstrument(in), "instrument.service_catalogue");
}

TEST(ValidateInstrument, RejectsDuplicateCatalogueEntry) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  *in.add_service_catalogue() = in.service_catalogue(0);
  ExpectInvalidField(ValidateInstrument(in), "instrument.service_catalogue[1].entry_id");
}

TEST(ValidateInstrument, RejectsInvalidCatalogueEntryId) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  in.mutable_service_catalogue(0)->set_entry_id("SEM Imaging");
  ExpectInvalidField(ValidateInstrument(in), "instrument.service_catalogue[0].entry_id");
}

TEST(ValidateInstrument, RejectsCatalogueEntryWithoutUnit) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  in.mutable_service_catalogue(0)->set_unit(v1::SERVICE_UNIT_UNSPECIFIED);
  ExpectInvalidField(ValidateInstrument(in), "instrument.service_catalogue[0].unit");
}

TEST(ValidateInstrument, RejectsUnspecifiedTypeInAccessPolicy) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_access_policy()->add_allowed_types(v1::ORGANIZATION_TYPE_UNSPECIFIED);
  ExpectInvalidField(ValidateInstrument(in), "instrument.access_policy.allowed_types");
}

TEST(ValidateMoney, AcceptsUnsetOptionalAmount) {
  EXPECT_TRUE(ValidateMoney(tv1::Money(), "lease.deposit", false).ok());
}

TEST(ValidateMoney, RejectsUnsetRequiredAmount) {
  ExpectInvalidField(ValidateMoney(tv1::Money(), "rate.price", true), "rate.price.currency_code");
}

TEST(ValidateMoney, RejectsFourLetterCurrency) {
  tv1::Money m = Cny(100);
  m.set_currency_code("CNYY");
  ExpectInvalidField(ValidateMoney(m, "rate.price", true), "rate.price.currency_code");
}

// ---------------------------------------------------------------- instrument states

constexpr v1::InstrumentState kInstrumentStates[] = {
    v1::INSTRUMENT_STATE_UNSPECIFIED, v1::ACTIVE, v1::MAINTENANCE, v1::RETIRED};

bool InstrumentTableSaysAllowed(v1::InstrumentState from, v1::InstrumentState to) {
  return (from == v1::ACTIVE && to == v1::MAINTENANCE) ||
         (from == v1::ACTIVE && to == v1::RETIRED) ||
         (from == v1::MAINTENANCE && to == v1::ACTIVE) ||
         (from == v1::MAINTENANCE && to == v1::RETIRED);
}

class InstrumentTransitionTable
    : public ::testing::TestWithParam<std::tuple<v1::InstrumentState, v1::InstrumentState>> {};

TEST_P(InstrumentTransitionTable, MatchesTheContract) {
  const auto [from, to] = GetParam();
  EXPECT_EQ(InstrumentTransitionAllowed(from, to), InstrumentTableSaysAllowed(from, to));
}

INSTANTIATE_TEST_SUITE_P(
    AllPairs, InstrumentTransitionTable,
    ::testing::Combine(::testing::ValuesIn(kInstrumentStates),
                       ::testing::ValuesIn(kInstrumentStates)),
    [](const ::testing::TestParamInfo<InstrumentTransitionTable::ParamType>& info) {
      return absl::StrCat(v1::InstrumentState_Name(std::get<0>(info.param)), "_to_",
                          v1::InstrumentState_Name(std::get<1>(info.param)));
    });

TEST(InstrumentTransitions, RetiredIsFinal) {
  EXPECT_FALSE(InstrumentTransitionAllowed(v1::RETIRED, v1::ACTIVE));
  EXPECT_FALSE(InstrumentTransitionAllowed(v1::RETIRED, v1::MAINTENANCE));
}

// ---------------------------------------------------------------- modes and policies

TEST(FindMode, ReturnsTheOffering) {
  v1::Instrument in = OnSiteInstrument();
  AddLease(in);
  const v1::ModeOffering* m = FindMode(in, tv1::LEASE);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->lease_rules().min_term_days(), 7);
}

TEST(FindMode, ReturnsNullForModeNotOffered) {
  EXPECT_EQ(FindMode(OnSiteInstrument(), tv1::JOINT_RESEARCH), nullptr);
}

TEST(EffectivePolicy, InstrumentPolicyOverridesFacility) {
  v1::Instrument in = OnSiteInstrument();
  in.mutable_access_policy()->set_allow_foreign(true);
  v1::Facility f;
  f.mutable_access_policy()->set_allow_members(true);
  EXPECT_EQ(&EffectivePolicy(in, f), &in.access_policy());
}

TEST(EffectivePolicy, FallsBackToFacility) {
  v1::Instrument in = OnSiteInstrument();
  v1::Facility f;
  f.mutable_access_policy()->set_allow_members(true);
  EXPECT_EQ(&EffectivePolicy(in, f), &f.access_policy());
}

TEST(QualificationValidityDays, ComesFromOnSiteRules) {
  EXPECT_EQ(QualificationValidityDays(OnSiteInstrument()), 30);
}

TEST(QualificationValidityDays, IsZeroWithoutOnSiteMode) {
  v1::Instrument in = OnSiteInstrument();
  in.clear_modes();
  AddLease(in);
  EXPECT_EQ(QualificationValidityDays(in), 0);
}

// ================================================================ rates

v1::Rate ValidMemberRate() {
  return RateLine("r-core", tv1::ON_SITE, tv1::MEMBER, "CORE", At(2025, 1, 1), 20000);
}

TEST(ValidateRate, AcceptsMemberTierLine) {
  EXPECT_TRUE(ValidateRate(ValidMemberRate(), OnSiteInstrument()).ok());
}

TEST(ValidateRate, RejectsPerDayUnitForOnSite) {
  v1::Rate r = ValidMemberRate();
  r.set_unit(v1::RATE_PER_DAY);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.unit");
}

TEST(ValidateRate, RejectsPerHourUnitForLease) {
  v1::Rate r = ValidMemberRate();
  r.set_mode(tv1::LEASE);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.unit");
}

TEST(ValidateRate, AcceptsPerMonthUnitForLease) {
  v1::Rate r = ValidMemberRate();
  r.set_mode(tv1::LEASE);
  r.set_unit(v1::RATE_PER_MONTH);
  EXPECT_TRUE(ValidateRate(r, OnSiteInstrument()).ok());
}

TEST(ValidateRate, RejectsUnspecifiedUnit) {
  v1::Rate r = ValidMemberRate();
  r.set_unit(v1::RATE_UNIT_UNSPECIFIED);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.unit");
}

TEST(ValidateRate, RejectsTierOnNonMemberLine) {
  v1::Rate r = ValidMemberRate();
  r.set_payer_class(tv1::NON_MEMBER);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.tier");
}

TEST(ValidateRate, RejectsTierOnOwnerLine) {
  v1::Rate r = ValidMemberRate();
  r.set_payer_class(tv1::OWNER);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.tier");
}

TEST(ValidateRate, RejectsUnspecifiedPayerClass) {
  v1::Rate r = ValidMemberRate();
  r.set_payer_class(tv1::PAYER_CLASS_UNSPECIFIED);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.payer_class");
}

TEST(ValidateRate, RejectsUnspecifiedMode) {
  v1::Rate r = ValidMemberRate();
  r.set_mode(tv1::SHARING_MODE_UNSPECIFIED);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.mode");
}

TEST(ValidateRate, RejectsCurrencyOtherThanInstruments) {
  v1::Rate r = ValidMemberRate();
  r.mutable_price()->set_currency_code("USD");
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.price.currency_code");
}

TEST(ValidateRate, RejectsNegativePrice) {
  v1::Rate r = ValidMemberRate();
  r.mutable_price()->set_amount_minor(-100);
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.price.amount_minor");
}

TEST(ValidateRate, RejectsMissingEffectiveTime) {
  v1::Rate r = ValidMemberRate();
  r.clear_effective_time();
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.effective_time");
}

TEST(ValidateRate, RejectsTechnicalServicePerSampleWithoutEntry) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  v1::Rate r = RateLine("r-ts", tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", At(2025, 1, 1), 50000,
                        v1::RATE_PER_SAMPLE);
  ExpectInvalidField(ValidateRate(r, in), "rate.service_entry_id");
}

TEST(ValidateRate, AcceptsTechnicalServicePerSampleWithEntry) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  v1::Rate r = RateLine("r-ts", tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", At(2025, 1, 1), 50000,
                        v1::RATE_PER_SAMPLE, "sem-imaging");
  EXPECT_TRUE(ValidateRate(r, in).ok());
}

TEST(ValidateRate, AcceptsTechnicalServicePerHourWithoutEntry) {
  v1::Instrument in = OnSiteInstrument();
  AddTechnicalService(in);
  v1::Rate r = RateLine("r-ts", tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", At(2025, 1, 1), 50000);
  EXPECT_TRUE(ValidateRate(r, in).ok());
}

TEST(ValidateRate, RejectsEntryOnOnSiteLine) {
  v1::Rate r = ValidMemberRate();
  r.set_service_entry_id("sem-imaging");
  ExpectInvalidField(ValidateRate(r, OnSiteInstrument()), "rate.service_entry_id");
}

// ---------------------------------------------------------------- payer class

TEST(PayerClassFor, OwnerIsOwnerWhateverItsMembership) {
  EXPECT_EQ(PayerClassFor(Org(kOwner, v1::NON_MEMBER), OnSiteInstrument()), tv1::OWNER);
  EXPECT_EQ(PayerClassFor(Org(kOwner, v1::MEMBER, "CORE"), OnSiteInstrument()), tv1::OWNER);
}

TEST(PayerClassFor, MemberIsMember) {
  EXPECT_EQ(PayerClassFor(Org(kMemberOrg, v1::MEMBER, "CORE"), OnSiteInstrument()), tv1::MEMBER);
}

TEST(PayerClassFor, SuspendedMemberPaysAsNonMember) {
  EXPECT_EQ(PayerClassFor(Org(kMemberOrg, v1::SUSPENDED, "CORE"), OnSiteInstrument()),
            tv1::NON_MEMBER);
}

TEST(PayerClassFor, ExitedMemberPaysAsNonMember) {
  EXPECT_EQ(PayerClassFor(Org(kMemberOrg, v1::EXITED, "CORE"), OnSiteInstrument()),
            tv1::NON_MEMBER);
}

TEST(PayerClassFor, ApplicantPaysAsNonMember) {
  EXPECT_EQ(PayerClassFor(Org(kMemberOrg, v1::APPLICANT), OnSiteInstrument()), tv1::NON_MEMBER);
}

TEST(PayerClassFor, NonMemberPaysAsNonMember) {
  EXPECT_EQ(PayerClassFor(Org(kMemberOrg, v1::NON_MEMBER), OnSiteInstrument()), tv1::NON_MEMBER);
}

// ---------------------------------------------------------------- rate lookup

// NON_MEMBER ON_SITE lines: 100.00/h from 1 Jan, 200.00/h from 1 Mar 2025.
std::vector<v1::Rate> NonMemberHistory() {
  return {RateLine("r-jan", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 10000),
          RateLine("r-mar", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 3, 1), 20000)};
}

const v1::Rate* FindNonMemberOnSite(const std::vector<v1::Rate>& rates, absl::Time at) {
  return FindRate(rates, tv1::ON_SITE, tv1::NON_MEMBER, "", "", at);
}

TEST(FindRate, NothingBeforeTheFirstLine) {
  const auto rates = NonMemberHistory();
  EXPECT_EQ(FindNonMemberOnSite(rates, At(2024, 12, 31, 23, 59, 59)), nullptr);
}

TEST(FindRate, LineIsInForceFromItsEffectiveTime) {
  const auto rates = NonMemberHistory();
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 1, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-jan");
}

TEST(FindRate, BetweenTwoLinesTheEarlierApplies) {
  const auto rates = NonMemberHistory();
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 2, 14, 12));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-jan");
}

TEST(FindRate, EarlierLineAppliesUpToTheInstantBeforeTheNext) {
  const auto rates = NonMemberHistory();
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 3, 1) - absl::Nanoseconds(1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-jan");
}

TEST(FindRate, LaterLineSupersedesAtItsEffectiveTime) {
  const auto rates = NonMemberHistory();
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 3, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-mar");
}

TEST(FindRate, AfterTheLastLineItApplies) {
  const auto rates = NonMemberHistory();
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2026, 6, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-mar");
  EXPECT_EQ(r->price().amount_minor(), 20000);
}

TEST(FindRate, DoesNotDependOnOrderOfLines) {
  std::vector<v1::Rate> rates = NonMemberHistory();
  std::swap(rates[0], rates[1]);
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 4, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-mar");
}

TEST(FindRate, SameEffectiveTimeBreaksTieByName) {
  std::vector<v1::Rate> rates = {
      RateLine("r-b", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 200),
      RateLine("r-a", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 100)};
  const v1::Rate* first = FindNonMemberOnSite(rates, At(2025, 2, 1));
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->name(), "instruments/cryo-tem/rates/r-b");
  std::swap(rates[0], rates[1]);
  const v1::Rate* second = FindNonMemberOnSite(rates, At(2025, 2, 1));
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(second->name(), "instruments/cryo-tem/rates/r-b");
}

// Of two lines in the same second the later one (to the nanosecond) is in
// force, whatever their order: CreateRate defaults effective_time to now.
TEST(FindRate, LaterLineWinsWithinTheSameSecond) {
  const absl::Time second = At(2025, 3, 1, 10);
  const std::vector<v1::Rate> rates = {
      RateLine("r-a", tv1::ON_SITE, tv1::NON_MEMBER, "", second + absl::Milliseconds(500), 200),
      RateLine("r-b", tv1::ON_SITE, tv1::NON_MEMBER, "", second, 100)};
  const v1::Rate* r = FindNonMemberOnSite(rates, At(2025, 3, 2));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-a");
}

std::vector<v1::Rate> MemberLines() {
  return {RateLine("r-member", tv1::ON_SITE, tv1::MEMBER, "", At(2025, 1, 1), 30000),
          RateLine("r-core", tv1::ON_SITE, tv1::MEMBER, "CORE", At(2025, 1, 1), 20000),
          RateLine("r-non", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 60000)};
}

TEST(FindRate, MemberGetsItsTiersLine) {
  const auto rates = MemberLines();
  const v1::Rate* r = FindRate(rates, tv1::ON_SITE, tv1::MEMBER, "CORE", "", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-core");
}

TEST(FindRate, MemberFallsBackToLineWithoutTier) {
  const auto rates = MemberLines();
  const v1::Rate* r = FindRate(rates, tv1::ON_SITE, tv1::MEMBER, "GENERAL", "", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-member");
}

TEST(FindRate, MemberWithoutTierGetsLineWithoutTier) {
  const auto rates = MemberLines();
  const v1::Rate* r = FindRate(rates, tv1::ON_SITE, tv1::MEMBER, "", "", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-member");
}

TEST(FindRate, MemberFallsBackWhileTierLineIsNotYetInForce) {
  std::vector<v1::Rate> rates = MemberLines();
  *rates[1].mutable_effective_time() = ToProto(At(2025, 6, 1));
  const v1::Rate* r = FindRate(rates, tv1::ON_SITE, tv1::MEMBER, "CORE", "", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-member");
}

TEST(FindRate, MemberNeverFallsBackToNonMemberLine) {
  const std::vector<v1::Rate> rates = {
      RateLine("r-non", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 60000)};
  EXPECT_EQ(FindRate(rates, tv1::ON_SITE, tv1::MEMBER, "CORE", "", At(2025, 2, 1)), nullptr);
}

TEST(FindRate, NonMemberIgnoresTierLines) {
  const auto rates = MemberLines();
  const v1::Rate* r = FindRate(rates, tv1::ON_SITE, tv1::NON_MEMBER, "CORE", "", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-non");
}

TEST(FindRate, OtherModeDoesNotMatch) {
  const auto rates = MemberLines();
  EXPECT_EQ(FindRate(rates, tv1::JOINT_RESEARCH, tv1::MEMBER, "CORE", "", At(2025, 2, 1)),
            nullptr);
}

// The lines UpdateInstrument holds a change against (RatesInForceOrLater):
// per key the one FindRate finds at now and every later one; replaced
// ones are left out.
TEST(RatesInForceOrLater, KeepsTheLineInForceAndLaterOnesPerKey) {
  std::vector<v1::Rate> rates = MemberLines();  // all three in force since 1 Jan
  rates.push_back(RateLine("r-member-old", tv1::ON_SITE, tv1::MEMBER, "", At(2024, 1, 1), 25000));
  rates.push_back(RateLine("r-member-next", tv1::ON_SITE, tv1::MEMBER, "", At(2025, 6, 1), 35000));
  rates.push_back(RateLine("r-core-tie", tv1::ON_SITE, tv1::MEMBER, "CORE", At(2025, 1, 1), 21000));
  rates.push_back(RateLine("r-core-now", tv1::ON_SITE, tv1::MEMBER, "CORE", kNow, 22000));
  std::vector<std::string> names;
  for (const v1::Rate* r : RatesInForceOrLater(rates, kNow)) names.push_back(r->name().substr(r->name().rfind('/') + 1));
  // r-core and r-core-tie were replaced at kNow (r-core-now takes effect
  // then, half-open); r-member-old by r-member.
  EXPECT_THAT(names, ElementsAre("r-member", "r-non", "r-member-next", "r-core-now"));
  EXPECT_THAT(RatesInForceOrLater({}, kNow), IsEmpty());
}

TEST(RateConflictWithChange, NamesTheCurrencyOrUnitALineNoLongerFits) {
  v1::Instrument before = OnSiteInstrument();
  AddLease(before);
  AddTechnicalService(before);
  const v1::Rate hour = RateLine("r-h", tv1::ON_SITE, tv1::MEMBER, "", At(2025, 1, 1), 100);
  const v1::Rate day = RateLine("r-d", tv1::LEASE, tv1::MEMBER, "", At(2025, 1, 1), 100, v1::RATE_PER_DAY);
  const v1::Rate sample = RateLine("r-s", tv1::TECHNICAL_SERVICE, tv1::MEMBER, "", At(2025, 1, 1), 100,
                                   v1::RATE_PER_SAMPLE, "sem-imaging");
  EXPECT_FALSE(RatePricingChanged(before, before));
  for (const auto* r : {&hour, &day, &sample}) EXPECT_EQ(RateConflictWithChange(*r, before, before), "");

  v1::Instrument usd = before;
  usd.mutable_original_value()->set_currency_code("USD");
  EXPECT_TRUE(RatePricingChanged(before, usd));
  EXPECT_EQ(RateConflictWithChange(hour, before, usd), "priced in CNY, not the new currency USD");
  // A value change in the same currency is no pricing change.
  v1::Instrument dearer = before;
  dearer.mutable_original_value()->set_amount_minor(1);
  EXPECT_FALSE(RatePricingChanged(before, dearer));

  v1::Instrument monthly = before;
  monthly.mutable_modes(1)->mutable_lease_rules()->set_rate_basis(v1::PER_MONTH);
  EXPECT_TRUE(RatePricingChanged(before, monthly));
  EXPECT_EQ(RateConflictWithChange(day, before, monthly),
            "LEASE in RATE_PER_DAY, not RATE_PER_MONTH (the new rate_basis PER_MONTH)");
  EXPECT_EQ(RateConflictWithChange(hour, before, monthly), "");

  v1::Instrument per_test = before;
  per_test.mutable_service_catalogue(0)->set_unit(v1::PER_TEST);
  EXPECT_TRUE(RatePricingChanged(before, per_test));
  EXPECT_EQ(RateConflictWithChange(sample, before, per_test),
            "in RATE_PER_SAMPLE for catalogue entry 'sem-imaging', not RATE_PER_TEST (its new unit PER_TEST)");

  // Without the LEASE offering or the entry, nothing prices the lines (and
  // nothing conflicts); adding them back in another basis or unit does.
  v1::Instrument bare = OnSiteInstrument();
  AddTechnicalService(bare);
  bare.clear_service_catalogue();
  EXPECT_EQ(RateConflictWithChange(day, before, bare), "");
  EXPECT_EQ(RateConflictWithChange(sample, before, bare), "");
  EXPECT_TRUE(RatePricingChanged(bare, monthly));
  EXPECT_EQ(RateConflictWithChange(day, bare, monthly),
            "LEASE in RATE_PER_DAY, not RATE_PER_MONTH (the new rate_basis PER_MONTH)");
  EXPECT_EQ(RateConflictWithChange(sample, bare, per_test),
            "in RATE_PER_SAMPLE for catalogue entry 'sem-imaging', not RATE_PER_TEST (its new unit PER_TEST)");
  // A line that did not fit before either is not held against the change.
  v1::Rate eur_line = hour;
  eur_line.mutable_price()->set_currency_code("EUR");
  EXPECT_EQ(RateConflictWithChange(eur_line, before, usd), "");
}

std::vector<v1::Rate> ServiceLines() {
  return {RateLine("r-sem", tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", At(2025, 1, 1), 50000,
                   v1::RATE_PER_SAMPLE, "sem-imaging"),
          RateLine("r-eds", tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", At(2025, 1, 1), 80000,
                   v1::RATE_PER_SAMPLE, "eds-mapping")};
}

TEST(FindRate, ServiceEntryPicksItsLine) {
  const auto rates = ServiceLines();
  const v1::Rate* r =
      FindRate(rates, tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", "eds-mapping", At(2025, 2, 1));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->name(), "instruments/cryo-tem/rates/r-eds");
}

TEST(FindRate, UnknownServiceEntryHasNoLine) {
  const auto rates = ServiceLines();
  EXPECT_EQ(FindRate(rates, tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", "xrd", At(2025, 2, 1)),
            nullptr);
}

TEST(FindRate, EmptyServiceEntryDoesNotMatchEntryLines) {
  const auto rates = ServiceLines();
  EXPECT_EQ(FindRate(rates, tv1::TECHNICAL_SERVICE, tv1::NON_MEMBER, "", "", At(2025, 2, 1)),
            nullptr);
}

// ================================================================ qualifications

const absl::Time kGrant = At(2025, 2, 1, 10);

v1::Qualification Granted() {
  v1::Qualification q;
  q.set_name("instruments/cryo-tem/qualifications/alice");
  q.set_user("users/alice");
  q.set_instrument(kInstrument);
  *q.mutable_grant_time() = ToProto(kGrant);
  return q;
}

TEST(ComputeQualificationState, ValidJustBeforeValidityEnds) {
  v1::Qualification q = Granted();
  ComputeQualificationState(q, 30, kGrant + absl::Hours(24 * 30) - absl::Seconds(1));
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_EQ(FromProto(q.expire_time()), kGrant + absl::Hours(24 * 30));
}

TEST(ComputeQualificationState, ExpiredExactlyWhenValidityEnds) {
  v1::Qualification q = Granted();
  ComputeQualificationState(q, 30, kGrant + absl::Hours(24 * 30));
  EXPECT_EQ(q.state(), v1::EXPIRED);
  EXPECT_EQ(FromProto(q.expire_time()), At(2025, 3, 3, 10));
}

TEST(ComputeQualificationState, LastUseRestartsValidity) {
  v1::Qualification q = Granted();
  *q.mutable_last_use_time() = ToProto(At(2025, 2, 20, 16));
  ComputeQualificationState(q, 30, At(2025, 3, 10));
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_EQ(FromProto(q.expire_time()), At(2025, 3, 22, 16));
}

TEST(ComputeQualificationState, LapsesThirtyDaysAfterLastUse) {
  v1::Qualification q = Granted();
  *q.mutable_last_use_time() = ToProto(At(2025, 2, 20, 16));
  ComputeQualificationState(q, 30, At(2025, 3, 22, 16));
  EXPECT_EQ(q.state(), v1::EXPIRED);
}

TEST(ComputeQualificationState, UseBeforeARenewedGrantDoesNotShortenIt) {
  v1::Qualification q = Granted();
  *q.mutable_last_use_time() = ToProto(At(2025, 1, 5));
  ComputeQualificationState(q, 30, At(2025, 2, 20));
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_EQ(FromProto(q.expire_time()), At(2025, 3, 3, 10));
}

TEST(ComputeQualificationState, RevokedIsRevokedWithoutExpiry) {
  v1::Qualification q = Granted();
  q.set_revoked(true);
  *q.mutable_expire_time() = ToProto(At(2025, 3, 3, 10));
  ComputeQualificationState(q, 30, At(2025, 2, 2));
  EXPECT_EQ(q.state(), v1::REVOKED);
  EXPECT_FALSE(q.has_expire_time());
}

TEST(ComputeQualificationState, ZeroValidityNeverLapses) {
  v1::Qualification q = Granted();
  ComputeQualificationState(q, 0, At(2030, 1, 1));
  EXPECT_EQ(q.state(), v1::VALID);
  EXPECT_FALSE(q.has_expire_time());
}

// ================================================================ maintenance

v1::MaintenanceWindow Window(absl::Time start, absl::Time end,
                             v1::MaintenanceWindowState state = v1::SCHEDULED) {
  v1::MaintenanceWindow w;
  w.set_name("instruments/cryo-tem/maintenanceWindows/w-1");
  *w.mutable_interval() = Span(start, end);
  w.set_reason("column alignment");
  w.set_state(state);
  return w;
}

TEST(ValidateMaintenanceWindow, AcceptsForwardInterval) {
  EXPECT_TRUE(ValidateMaintenanceWindow(Window(At(2025, 3, 12, 8), At(2025, 3, 12, 12))).ok());
}

TEST(ValidateMaintenanceWindow, RejectsEmptyInterval) {
  ExpectInvalidField(ValidateMaintenanceWindow(Window(At(2025, 3, 12, 8), At(2025, 3, 12, 8))),
                     "maintenance_window.interval.end_time");
}

TEST(ValidateMaintenanceWindow, RejectsInvertedInterval) {
  ExpectInvalidField(ValidateMaintenanceWindow(Window(At(2025, 3, 12, 12), At(2025, 3, 12, 8))),
                     "maintenance_window.interval.end_time");
}

TEST(ValidateMaintenanceWindow, RejectsMissingEnd) {
  v1::MaintenanceWindow w = Window(At(2025, 3, 12, 8), At(2025, 3, 12, 12));
  w.mutable_interval()->clear_end_time();
  ExpectInvalidField(ValidateMaintenanceWindow(w), "maintenance_window.interval");
}

// The reason is optional (the original contract asks only for an interval).
TEST(ValidateMaintenanceWindow, AcceptsAWindowWithoutReason) {
  v1::MaintenanceWindow w = Window(At(2025, 3, 12, 8), At(2025, 3, 12, 12));
  w.clear_reason();
  EXPECT_TRUE(ValidateMaintenanceWindow(w).ok());
}

// ================================================================ access policy

v1::AccessPolicy Policy(bool members, bool non_members, bool foreign) {
  v1::AccessPolicy p;
  p.set_allow_members(members);
  p.set_allow_non_members(non_members);
  p.set_allow_foreign(foreign);
  return p;
}

TEST(PolicyAllows, MemberAdmittedWhenMembersAllowed) {
  EXPECT_TRUE(PolicyAllows(Policy(true, false, false), Org(kMemberOrg, v1::MEMBER, "CORE")));
}

TEST(PolicyAllows, MemberRefusedWhenOnlyNonMembersAllowed) {
  EXPECT_FALSE(PolicyAllows(Policy(false, true, false), Org(kMemberOrg, v1::MEMBER, "CORE")));
}

TEST(PolicyAllows, NonMemberAdmittedWhenNonMembersAllowed) {
  EXPECT_TRUE(PolicyAllows(Policy(false, true, false), Org(kMemberOrg, v1::NON_MEMBER)));
}

TEST(PolicyAllows, NonMemberRefusedWhenOnlyMembersAllowed) {
  EXPECT_FALSE(PolicyAllows(Policy(true, false, false), Org(kMemberOrg, v1::NON_MEMBER)));
}

TEST(PolicyAllows, SuspendedMemberCountsAsNonMember) {
  EXPECT_FALSE(PolicyAllows(Policy(true, false, false), Org(kMemberOrg, v1::SUSPENDED, "CORE")));
  EXPECT_TRUE(PolicyAllows(Policy(false, true, false), Org(kMemberOrg, v1::SUSPENDED, "CORE")));
}

TEST(PolicyAllows, ApplicantCountsAsNonMember) {
  EXPECT_FALSE(PolicyAllows(Policy(true, false, false), Org(kMemberOrg, v1::APPLICANT)));
}

TEST(PolicyAllows, ForeignMemberRefusedWithoutForeignFlag) {
  v1::Organization o = Org(kMemberOrg, v1::MEMBER, "CORE");
  o.set_foreign(true);
  EXPECT_FALSE(PolicyAllows(Policy(true, true, false), o));
}

TEST(PolicyAllows, ForeignMemberAdmittedWithForeignFlag) {
  v1::Organization o = Org(kMemberOrg, v1::MEMBER, "CORE");
  o.set_foreign(true);
  EXPECT_TRUE(PolicyAllows(Policy(true, false, true), o));
}

TEST(PolicyAllows, ForeignFlagAloneDoesNotAdmitNonMembers) {
  v1::Organization o = Org(kMemberOrg, v1::NON_MEMBER);
  o.set_foreign(true);
  EXPECT_FALSE(PolicyAllows(Policy(true, false, true), o));
}

TEST(PolicyAllows, AllowedTypesAdmitListedType) {
  v1::AccessPolicy p = Policy(true, true, false);
  p.add_allowed_types(v1::UNIVERSITY);
  p.add_allowed_types(v1::RESEARCH_INSTITUTE);
  EXPECT_TRUE(PolicyAllows(p, Org(kMemberOrg, v1::MEMBER, "CORE")));
}

TEST(PolicyAllows, AllowedTypesRefuseOtherType) {
  v1::AccessPolicy p = Policy(true, true, false);
  p.add_allowed_types(v1::UNIVERSITY);
  v1::Organization o = Org(kMemberOrg, v1::MEMBER, "CORE");
  o.set_type(v1::ENTERPRISE);
  o.set_size_class(v1::SME);
  EXPECT_FALSE(PolicyAllows(p, o));
}

TEST(PolicyAllows, EmptyPolicyAdmitsNobody) {
  EXPECT_FALSE(PolicyAllows(v1::AccessPolicy(), Org(kMemberOrg, v1::MEMBER, "CORE")));
  EXPECT_FALSE(PolicyAllows(v1::AccessPolicy(), Org(kMemberOrg, v1::NON_MEMBER)));
}

// ================================================================ access decision

// Everything EvaluateAccess reads, valid by default: alice of a CORE member
// wants the ON_SITE cryo-TEM tomorrow 09:00-12:00, qualified since 1 March,
// the facility admits members and non-members (not foreign ones) and the
// rate card has member, CORE and non-member lines since 1 January.
struct AccessWorld {
  v1::User user;
  v1::Organization payer = Org(kMemberOrg, v1::MEMBER, "CORE");
  v1::Instrument instrument = OnSiteInstrument();
  v1::Facility facility;
  v1::Qualification qualification;
  bool qualified = true;
  std::vector<v1::Rate> rates = MemberLines();
  std::vector<v1::MaintenanceWindow> windows;
  v1::CheckAccessRequest request;

  AccessWorld() {
    user.set_name("users/alice");
    user.set_display_name("Alice Zhang");
    user.set_organization(kMemberOrg);
    user.add_roles(tv1::LAB_USER);
    facility.set_name("facilities/em-centre");
    facility.set_display_name("EM centre");
    facility.set_owner_organization(kOwner);
    *facility.mutable_access_policy() = Policy(true, true, false);
    qualification.set_name("instruments/cryo-tem/qualifications/alice");
    qualification.set_user("users/alice");
    qualification.set_instrument(kInstrument);
    *qualification.mutable_grant_time() = ToProto(At(2025, 3, 1, 10));
    request.set_user("users/alice");
    request.set_instrument(kInstrument);
    request.set_mode(tv1::ON_SITE);
    Book(At(2025, 3, 11, 9), absl::Hours(3));
  }

  void Book(absl::Time start, absl::Duration length) {
    *request.mutable_interval() = Span(start, start + length);
  }

  v1::SlotRules& OnSite() { return *instrument.mutable_modes(0)->mutable_slot_rules(); }

  v1::CheckAccessResponse Evaluate() const {
    AccessFacts facts;
    facts.user = &user;
    facts.payer = &payer;
    facts.instrument = &instrument;
    facts.facility = &facility;
    facts.qualification = qualified ? &qualification : nullptr;
    facts.rates = rates;
    facts.windows = windows;
    return EvaluateAccess(facts, request, kNow);
  }
};

std::vector<v1::DenialCode> Denials(const v1::CheckAccessResponse& r) {
  std::vector<v1::DenialCode> out;
  for (const auto& d : r.denials()) out.push_back(d.code());
  return out;
}

TEST(EvaluateAccess, QualifiedCoreMemberIsAllowed) {
  AccessWorld w;
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), IsEmpty());
  EXPECT_EQ(r.payer_class(), tv1::MEMBER);
  EXPECT_EQ(r.rate().name(), "instruments/cryo-tem/rates/r-core");
  EXPECT_EQ(r.rate().price().amount_minor(), 20000);
  EXPECT_FALSE(r.approval_required());
}

TEST(EvaluateAccess, ReportsPayerAndOwner) {
  AccessWorld w;
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_EQ(r.payer_organization(), kMemberOrg);
  EXPECT_EQ(r.membership_state(), v1::MEMBER);
  EXPECT_EQ(r.tier(), "CORE");
  EXPECT_EQ(r.owner_organization(), kOwner);
  EXPECT_EQ(r.mode_offering().mode(), tv1::ON_SITE);
  EXPECT_EQ(FromProto(r.mode_offering().slot_rules().max_block()), absl::Hours(8));
}

TEST(EvaluateAccess, ReportsQualificationAsOfNow) {
  AccessWorld w;
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_EQ(r.qualification().state(), v1::VALID);
  EXPECT_EQ(FromProto(r.qualification().expire_time()), At(2025, 3, 31, 10));
}

TEST(EvaluateAccess, RateIsTheLineInForceAtTheStart) {
  AccessWorld w;
  w.rates.push_back(RateLine("r-core-2", tv1::ON_SITE, tv1::MEMBER, "CORE", At(2025, 3, 11), 25000));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.rate().name(), "instruments/cryo-tem/rates/r-core-2");
}

TEST(EvaluateAccess, DeniesInstrumentUnderMaintenance) {
  AccessWorld w;
  w.instrument.set_state(v1::MAINTENANCE);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::INSTRUMENT_NOT_ACTIVE));
}

TEST(EvaluateAccess, DeniesRetiredInstrument) {
  AccessWorld w;
  w.instrument.set_state(v1::RETIRED);
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::INSTRUMENT_NOT_ACTIVE));
}

TEST(EvaluateAccess, DeniesModeNotOffered) {
  AccessWorld w;
  w.request.set_mode(tv1::JOINT_RESEARCH);
  w.rates.push_back(RateLine("r-jr", tv1::JOINT_RESEARCH, tv1::MEMBER, "", At(2025, 1, 1), 15000));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::MODE_NOT_OFFERED));
}

// A mode not offered has no rate lines (CreateRate refuses them): its only
// denial is MODE_NOT_OFFERED, not NO_RATE as well.
TEST(EvaluateAccess, AModeNotOfferedIsNotAlsoNoRate) {
  AccessWorld w;
  w.request.set_mode(tv1::JOINT_RESEARCH);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::MODE_NOT_OFFERED));
  EXPECT_FALSE(r.has_rate());
}

TEST(EvaluateAccess, DeniesWhenPolicyForbids) {
  AccessWorld w;
  *w.facility.mutable_access_policy() = Policy(false, true, false);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::ACCESS_POLICY_FORBIDS));
  // The message names the policy that refused: the facility's.
  EXPECT_EQ(r.denials(0).message(), "the facility's access policy does not admit this organisation");
}

TEST(EvaluateAccess, DeniesForeignPayerWhenPolicyForbidsForeign) {
  AccessWorld w;
  w.payer.set_foreign(true);
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::ACCESS_POLICY_FORBIDS));
}

TEST(EvaluateAccess, InstrumentPolicyOverridesFacilityPolicy) {
  AccessWorld w;
  *w.instrument.mutable_access_policy() = Policy(false, true, false);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_THAT(Denials(r), ElementsAre(v1::ACCESS_POLICY_FORBIDS));
  // The instrument's own policy refused, and the message says so.
  ASSERT_EQ(r.denials_size(), 1);
  EXPECT_EQ(r.denials(0).message(), "the instrument's access policy does not admit this organisation");
}

TEST(EvaluateAccess, DeniesWithoutQualification) {
  AccessWorld w;
  w.qualified = false;
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::QUALIFICATION_MISSING));
}

TEST(EvaluateAccess, DeniesExpiredQualification) {
  AccessWorld w;
  *w.qualification.mutable_grant_time() = ToProto(At(2025, 1, 15));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::QUALIFICATION_EXPIRED));
  EXPECT_EQ(r.qualification().state(), v1::EXPIRED);
  EXPECT_EQ(FromProto(r.qualification().expire_time()), At(2025, 2, 14));
}

TEST(EvaluateAccess, DeniesRevokedQualification) {
  AccessWorld w;
  w.qualification.set_revoked(true);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::QUALIFICATION_REVOKED));
  EXPECT_EQ(r.qualification().state(), v1::REVOKED);
}

TEST(EvaluateAccess, NoQualificationNeededWhenValidityIsZero) {
  AccessWorld w;
  w.qualified = false;
  w.OnSite().set_qualification_validity_days(0);
  EXPECT_TRUE(w.Evaluate().allowed());
}

// DOMAIN.md: a suspended organisation loses member prices and priority for
// new bookings; it is not refused (the access policy decides, as for any
// non-member).
TEST(EvaluateAccess, SuspendedPayerIsANonMember) {
  AccessWorld w;
  w.payer.set_membership_state(v1::SUSPENDED);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre());
  EXPECT_EQ(r.membership_state(), v1::SUSPENDED);
  EXPECT_EQ(r.payer_class(), tv1::NON_MEMBER);
  EXPECT_EQ(r.rate().name(), "instruments/cryo-tem/rates/r-non");
}

TEST(EvaluateAccess, DeniesDisabledUser) {
  AccessWorld w;
  w.user.set_disabled(true);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::USER_DISABLED));
}

TEST(EvaluateAccess, DeniesOverlapWithMaintenance) {
  AccessWorld w;
  w.windows.push_back(Window(At(2025, 3, 11, 11), At(2025, 3, 11, 14)));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::DURING_MAINTENANCE));
}

TEST(EvaluateAccess, DeniesBookingInsideMaintenance) {
  AccessWorld w;
  w.windows.push_back(Window(At(2025, 3, 11), At(2025, 3, 12)));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::DURING_MAINTENANCE));
}

TEST(EvaluateAccess, WindowsThatOnlyTouchTheIntervalDoNotDeny) {
  AccessWorld w;
  // Booking is [09:00, 12:00): one window ends at 09:00, one starts at 12:00.
  w.windows.push_back(Window(At(2025, 3, 11, 6), At(2025, 3, 11, 9)));
  w.windows.push_back(Window(At(2025, 3, 11, 12), At(2025, 3, 11, 15)));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), IsEmpty());
}

TEST(EvaluateAccess, CancelledWindowDoesNotDeny) {
  AccessWorld w;
  w.windows.push_back(Window(At(2025, 3, 11, 10), At(2025, 3, 11, 11), v1::CANCELLED));
  EXPECT_TRUE(w.Evaluate().allowed());
}

TEST(EvaluateAccess, DeniesBlockShorterThanMinimum) {
  AccessWorld w;
  w.Book(At(2025, 3, 11, 9), absl::Minutes(59));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::BLOCK_TOO_SHORT));
}

TEST(EvaluateAccess, AllowsBlockOfExactlyTheMinimum) {
  AccessWorld w;
  w.Book(At(2025, 3, 11, 9), absl::Hours(1));
  EXPECT_TRUE(w.Evaluate().allowed());
}

TEST(EvaluateAccess, DeniesBlockLongerThanMaximum) {
  AccessWorld w;
  w.Book(At(2025, 3, 11, 9), absl::Hours(8) + absl::Minutes(1));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::BLOCK_TOO_LONG));
}

TEST(EvaluateAccess, AllowsBlockOfExactlyTheMaximum) {
  AccessWorld w;
  w.Book(At(2025, 3, 11, 9), absl::Hours(8));
  EXPECT_TRUE(w.Evaluate().allowed());
}

TEST(EvaluateAccess, DeniesNonMemberBeyondNonMemberHorizon) {
  AccessWorld w;
  w.payer.set_membership_state(v1::NON_MEMBER);
  w.payer.clear_tier();
  w.Book(kNow + absl::Hours(24 * 10), absl::Hours(3));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::BEYOND_HORIZON));
  EXPECT_EQ(r.payer_class(), tv1::NON_MEMBER);
}

TEST(EvaluateAccess, AllowsMemberAtTenDays) {
  AccessWorld w;
  w.Book(kNow + absl::Hours(24 * 10), absl::Hours(3));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), IsEmpty());
}

// The horizon bounds the end of the booking (BookingWindowFor).
TEST(EvaluateAccess, AllowsNonMemberEndingExactlyAtTheNonMemberHorizon) {
  AccessWorld w;
  w.payer.set_membership_state(v1::NON_MEMBER);
  w.payer.clear_tier();
  w.Book(kNow + absl::Hours(24 * 7) - absl::Hours(3), absl::Hours(3));
  EXPECT_TRUE(w.Evaluate().allowed());
}

TEST(EvaluateAccess, DeniesMemberBeyondMemberHorizon) {
  AccessWorld w;
  w.Book(kNow + absl::Hours(24 * 30) + absl::Seconds(1), absl::Hours(3));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BEYOND_HORIZON));
}

TEST(EvaluateAccess, DeniesMemberStartingInsideButEndingBeyondTheHorizon) {
  AccessWorld w;
  w.Book(kNow + absl::Hours(24 * 30) - absl::Hours(1), absl::Hours(1) + absl::Seconds(1));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BEYOND_HORIZON));
}

TEST(EvaluateAccess, DeniesInsufficientNotice) {
  AccessWorld w;
  w.Book(kNow + absl::Hours(1), absl::Hours(3));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::INSUFFICIENT_NOTICE));
}

TEST(EvaluateAccess, AllowsExactlyTheMinimumNotice) {
  AccessWorld w;
  w.Book(kNow + absl::Hours(2), absl::Hours(3));
  EXPECT_TRUE(w.Evaluate().allowed());
}

TEST(EvaluateAccess, DeniesWhenNoRateIsInForce) {
  AccessWorld w;
  w.rates.clear();
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), ElementsAre(v1::NO_RATE));
  EXPECT_FALSE(r.has_rate());
}

TEST(EvaluateAccess, DeniesWhenRateStartsOnlyAfterTheBooking) {
  AccessWorld w;
  w.rates = {RateLine("r-core", tv1::ON_SITE, tv1::MEMBER, "CORE", At(2025, 4, 1), 20000)};
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::NO_RATE));
}

TEST(EvaluateAccess, ReportsEveryDenialAtOnce) {
  AccessWorld w;
  w.user.set_disabled(true);
  w.instrument.set_state(v1::MAINTENANCE);
  w.qualified = false;
  w.rates.clear();
  w.Book(kNow + absl::Hours(1), absl::Minutes(30));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_FALSE(r.allowed());
  EXPECT_THAT(Denials(r), UnorderedElementsAre(v1::USER_DISABLED, v1::INSTRUMENT_NOT_ACTIVE,
                                               v1::BLOCK_TOO_SHORT, v1::INSUFFICIENT_NOTICE,
                                               v1::QUALIFICATION_MISSING, v1::NO_RATE));
}

// CheckAccess's comment: "Denials, when several apply, come in this order":
// the person, the instrument, the policy; the mode (not offered, or its
// rules, the qualification last); maintenance; the rate.
TEST(EvaluateAccess, DenialsComeInTheDocumentedOrder) {
  AccessWorld w;
  w.user.set_disabled(true);
  w.instrument.set_state(v1::MAINTENANCE);
  w.payer.set_membership_state(v1::NON_MEMBER);
  *w.facility.mutable_access_policy() = Policy(true, false, false);
  w.qualification.set_revoked(true);
  w.rates.clear();
  w.Book(kNow + absl::Hours(1), absl::Minutes(30));
  w.windows.push_back(Window(kNow, kNow + absl::Hours(24)));
  EXPECT_THAT(Denials(w.Evaluate()),
              ElementsAre(v1::USER_DISABLED, v1::INSTRUMENT_NOT_ACTIVE, v1::ACCESS_POLICY_FORBIDS,
                          v1::BLOCK_TOO_SHORT, v1::INSUFFICIENT_NOTICE, v1::QUALIFICATION_REVOKED,
                          v1::DURING_MAINTENANCE, v1::NO_RATE));
  // Too long and too far ahead; no qualification at all.
  w.qualified = false;
  w.Book(kNow + absl::Hours(24 * 90), absl::Hours(9));
  w.windows.clear();
  EXPECT_THAT(Denials(w.Evaluate()),
              ElementsAre(v1::USER_DISABLED, v1::INSTRUMENT_NOT_ACTIVE, v1::ACCESS_POLICY_FORBIDS,
                          v1::BLOCK_TOO_LONG, v1::BEYOND_HORIZON, v1::QUALIFICATION_MISSING, v1::NO_RATE));
  // A mode not offered stands for its rules, and no NO_RATE beside it.
  w.request.set_mode(tv1::LEASE);
  w.windows.push_back(Window(kNow, kNow + absl::Hours(24 * 100)));
  EXPECT_THAT(Denials(w.Evaluate()),
              ElementsAre(v1::USER_DISABLED, v1::INSTRUMENT_NOT_ACTIVE, v1::ACCESS_POLICY_FORBIDS,
                          v1::MODE_NOT_OFFERED, v1::DURING_MAINTENANCE));
}

TEST(EvaluateAccess, EveryDenialCarriesAMessage) {
  AccessWorld w;
  w.user.set_disabled(true);
  w.rates.clear();
  w.windows.push_back(Window(At(2025, 3, 11, 10), At(2025, 3, 11, 11)));
  v1::CheckAccessResponse r = w.Evaluate();
  ASSERT_EQ(r.denials_size(), 3);
  for (const auto& d : r.denials()) EXPECT_FALSE(d.message().empty()) << d.code();
}

TEST(EvaluateAccess, ApprovalRequiredAboveThreshold) {
  AccessWorld w;
  *w.OnSite().mutable_approval_threshold() = ToProto(absl::Hours(4));
  w.Book(At(2025, 3, 11, 9), absl::Hours(5));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_TRUE(r.approval_required());
}

TEST(EvaluateAccess, NoApprovalAtExactlyTheThreshold) {
  AccessWorld w;
  *w.OnSite().mutable_approval_threshold() = ToProto(absl::Hours(4));
  w.Book(At(2025, 3, 11, 9), absl::Hours(4));
  EXPECT_FALSE(w.Evaluate().approval_required());
}

TEST(EvaluateAccess, ApprovalRequiredWhenModeSaysSo) {
  AccessWorld w;
  w.instrument.mutable_modes(0)->set_approval_required(true);
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_TRUE(r.approval_required());
}

TEST(EvaluateAccess, OwnerWithoutRateUsesItForFree) {
  AccessWorld w;
  w.payer = Org(kOwner, v1::MEMBER, "CORE");
  w.user.set_organization(kOwner);
  w.rates = {RateLine("r-non", tv1::ON_SITE, tv1::NON_MEMBER, "", At(2025, 1, 1), 60000)};
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), IsEmpty());
  EXPECT_EQ(r.payer_class(), tv1::OWNER);
  EXPECT_FALSE(r.has_rate());
}

TEST(EvaluateAccess, OwnerGetsOwnerLineWhenThereIsOne) {
  AccessWorld w;
  w.payer = Org(kOwner, v1::MEMBER, "CORE");
  w.rates.push_back(RateLine("r-owner", tv1::ON_SITE, tv1::OWNER, "", At(2025, 1, 1), 5000));
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.rate().name(), "instruments/cryo-tem/rates/r-owner");
}

TEST(EvaluateAccess, OwnerIsNotSubjectToAccessPolicy) {
  AccessWorld w;
  w.payer = Org(kOwner, v1::NON_MEMBER);
  *w.facility.mutable_access_policy() = v1::AccessPolicy();
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_EQ(r.payer_class(), tv1::OWNER);
}

TEST(EvaluateAccess, OwnerStillNeedsQualification) {
  AccessWorld w;
  w.payer = Org(kOwner, v1::MEMBER, "CORE");
  w.qualified = false;
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::QUALIFICATION_MISSING));
}

// ---------------------------------------------------------------- leases

struct LeaseWorld : AccessWorld {
  LeaseWorld() {
    AddLease(instrument);
    request.set_mode(tv1::LEASE);
    rates.push_back(RateLine("r-lease", tv1::LEASE, tv1::MEMBER, "", At(2025, 1, 1), 500000,
                             v1::RATE_PER_DAY));
    qualified = false;  // leases need no on-site qualification
    Book(At(2025, 3, 20), absl::Hours(24 * 14));
  }
};

TEST(EvaluateAccess, LeaseAlwaysNeedsApproval) {
  LeaseWorld w;
  v1::CheckAccessResponse r = w.Evaluate();
  EXPECT_TRUE(r.allowed());
  EXPECT_THAT(Denials(r), IsEmpty());
  EXPECT_TRUE(r.approval_required());
  EXPECT_EQ(r.rate().name(), "instruments/cryo-tem/rates/r-lease");
}

TEST(EvaluateAccess, DeniesLeaseShorterThanMinimumTerm) {
  LeaseWorld w;
  w.Book(At(2025, 3, 20), absl::Hours(24 * 7) - absl::Seconds(1));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BLOCK_TOO_SHORT));
}

TEST(EvaluateAccess, DeniesLeaseLongerThanMaximumTerm) {
  LeaseWorld w;
  w.Book(At(2025, 3, 20), absl::Hours(24 * 90) + absl::Seconds(1));
  // It ends past the 60-day horizon, which bounds how far ahead a lease may
  // start, not where it ends.
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BLOCK_TOO_LONG));
}

TEST(EvaluateAccess, DeniesLeaseStartingWithinItsHandoverBufferFromNow) {
  LeaseWorld w;
  w.Book(kNow + absl::Hours(24) - absl::Seconds(1), absl::Hours(24 * 14));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::INSUFFICIENT_NOTICE));
}

TEST(EvaluateAccess, DeniesLeaseStartingBeyondLeaseHorizon) {
  LeaseWorld w;
  w.Book(kNow + absl::Hours(24 * 61), absl::Hours(24 * 14));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BEYOND_HORIZON));
}

// LeaseRules.horizon: "How far ahead a lease may start": a term starting on
// the horizon's last moment may run on past it; one second later may not.
TEST(EvaluateAccess, LeaseHorizonBoundsTheStartNotTheEnd) {
  LeaseWorld w;
  w.Book(kNow + absl::Hours(24 * 60), absl::Hours(24 * 30));
  EXPECT_THAT(Denials(w.Evaluate()), IsEmpty());
  w.Book(kNow + absl::Hours(24 * 60) + absl::Seconds(1), absl::Hours(24 * 30));
  EXPECT_THAT(Denials(w.Evaluate()), ElementsAre(v1::BEYOND_HORIZON));
}

}  // namespace
}  // namespace labshare::inventory
