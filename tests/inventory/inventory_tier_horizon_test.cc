// SlotRules.tier_horizons: a MEMBER whose tier has an entry books within that
// entry's horizon instead of member_horizon (longer or shorter); other
// members keep member_horizon, NON_MEMBER payers (a suspended organisation
// with a tier too) non_member_horizon, the owner the longest of all. Checked
// when an instrument is written (INVALID_FIELD naming the entry's field).
// Every case fails on the code before the field (no such field, or the
// member horizon for every tier).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "services/inventory/inventory_rules.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

constexpr absl::Duration kDay = absl::Hours(24);

v1::TierHorizon Tier(const std::string& tier, absl::Duration horizon) {
  v1::TierHorizon t;
  t.set_tier(tier);
  *t.mutable_horizon() = ToProto(horizon);
  return t;
}

class TierHorizonTest : public InventoryServiceTest {
 protected:
  // The fixture's ON_SITE rules (member_horizon 30 d, non_member_horizon
  // 7 d, min_notice 2 h, blocks 1..8 h) without a qualification, plus `tiers`.
  static v1::Instrument Spec(const std::vector<v1::TierHorizon>& tiers) {
    v1::Instrument in = InstrumentSpec("owner", "fac");
    auto* sr = in.mutable_modes(0)->mutable_slot_rules();
    sr->set_qualification_validity_days(0);
    for (const auto& t : tiers) *sr->add_tier_horizons() = t;
    return in;
  }
  grpc::Status Create(const std::string& id, const v1::Instrument& in, v1::Instrument* out = nullptr) {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(id);
    *req.mutable_instrument() = in;
    v1::Instrument ignored;
    return Call(&Stub::CreateInstrument, req, out != nullptr ? out : &ignored, admin_);
  }
  // owner (GENERAL member, owns fac), core (CORE), general (GENERAL),
  // associate (ASSOCIATE, no entry), outsider (NON_MEMBER), each with a user
  // u-<org>; rates for members and non-members on `id`.
  void World(const std::string& id, const std::vector<v1::TierHorizon>& tiers) {
    MakeOrg("owner", v1::MEMBER, "GENERAL");
    MakeOrg("core", v1::MEMBER, "CORE");
    MakeOrg("general", v1::MEMBER, "GENERAL");
    MakeOrg("associate", v1::MEMBER, "ASSOCIATE");
    MakeOrg("outsider", v1::NON_MEMBER);
    for (const char* o : {"owner", "core", "general", "associate", "outsider"}) MakeUser(std::string("u-") + o, o);
    MakeFacility("fac", "owner");
    AddInstrument(id, tiers);
  }
  void AddInstrument(const std::string& id, const std::vector<v1::TierHorizon>& tiers) {
    grpc::Status s = Create(id, Spec(tiers));
    ASSERT_TRUE(s.ok()) << s.error_message();
    MakeRate(id, tv1::MEMBER, "", 10000, clock_.Now() - kDay);
    MakeRate(id, tv1::NON_MEMBER, "", 20000, clock_.Now() - kDay);
  }
  // CheckAccess for u-<org> on `id` over the 3 hours ending at now + `end`.
  v1::CheckAccessResponse Check(const std::string& org, absl::Duration end, const std::string& id = "tem") {
    v1::CheckAccessRequest req;
    req.set_user("users/u-" + org);
    req.set_instrument("instruments/" + id);
    req.set_mode(tv1::ON_SITE);
    *req.mutable_interval()->mutable_start_time() = ToProto(clock_.Now() + end - absl::Hours(3));
    *req.mutable_interval()->mutable_end_time() = ToProto(clock_.Now() + end);
    v1::CheckAccessResponse out;
    grpc::Status s = Call(&Stub::CheckAccess, req, &out, admin_);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }
  // The codes of the denials, in order.
  static std::vector<v1::DenialCode> Codes(const v1::CheckAccessResponse& r) {
    std::vector<v1::DenialCode> out;
    for (const auto& d : r.denials()) out.push_back(d.code());
    return out;
  }
  static std::string Message(const v1::CheckAccessResponse& r) {
    return r.denials_size() > 0 ? r.denials(0).message() : "";
  }
  const std::vector<v1::DenialCode> kBeyond = {v1::BEYOND_HORIZON};
};

// ------------------------------------------------------------ validation

TEST_F(TierHorizonTest, EachEntryIsValidatedNamingItsField) {
  MakeOrg("owner", v1::MEMBER, "CORE");
  MakeFacility("fac", "owner");
  struct Case {
    std::string what;
    std::vector<v1::TierHorizon> tiers;
    std::string field;
  };
  v1::TierHorizon no_horizon;
  no_horizon.set_tier("GENERAL");
  v1::TierHorizon mixed_signs;  // 10 d minus a nanosecond, written as no Duration may be
  mixed_signs.set_tier("GENERAL");
  mixed_signs.mutable_horizon()->set_seconds(864000);
  mixed_signs.mutable_horizon()->set_nanos(-1);
  const std::string f = "instrument.modes[0].slot_rules.tier_horizons";
  const std::vector<Case> cases = {
      {"tier empty", {Tier("", 60 * kDay)}, f + "[0].tier"},
      {"tier twice", {Tier("CORE", 60 * kDay), Tier("GENERAL", 40 * kDay), Tier("CORE", 50 * kDay)},
       f + "[2].tier"},
      {"horizon unset", {Tier("CORE", 60 * kDay), no_horizon}, f + "[1].horizon"},
      {"horizon zero", {Tier("CORE", absl::ZeroDuration())}, f + "[0].horizon"},
      {"horizon negative", {Tier("CORE", -kDay)}, f + "[0].horizon"},
      {"horizon with seconds and nanos of other signs", {mixed_signs}, f + "[0].horizon"},
      {"shorter than non_member_horizon (7 d)", {Tier("CORE", 60 * kDay), Tier("GENERAL", 7 * kDay - absl::Seconds(1))},
       f + "[1].horizon"},
  };
  for (const auto& c : cases) {
    grpc::Status s = Create("bad", Spec(c.tiers));
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", c.what);
    EXPECT_EQ(Violations(s), std::vector<std::string>{c.field}) << c.what;
  }
  // UpdateInstrument checks the same (its modes at index 0 too).
  v1::Instrument created;
  ASSERT_TRUE(Create("tem", Spec({}), &created).ok());
  v1::UpdateInstrumentRequest u;
  *u.mutable_instrument() = Spec({Tier("CORE", 60 * kDay), Tier("CORE", 90 * kDay)});
  u.mutable_instrument()->set_name("instruments/tem");
  u.mutable_update_mask()->add_paths("modes");
  v1::Instrument out;
  grpc::Status s = Call(&Stub::UpdateInstrument, u, &out, admin_);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "update: tier twice");
  EXPECT_EQ(Violations(s), std::vector<std::string>{f + "[1].tier"});
  // Accepted: exactly non_member_horizon, shorter and longer than
  // member_horizon; kept as written.
  *u.mutable_instrument() = Spec({Tier("CORE", 60 * kDay), Tier("GENERAL", 7 * kDay)});
  u.mutable_instrument()->set_name("instruments/tem");
  s = Call(&Stub::UpdateInstrument, u, &out, admin_);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  ASSERT_TRUE(Call(&Stub::GetInstrument, g, &out, admin_).ok());
  ASSERT_EQ(out.modes(0).slot_rules().tier_horizons_size(), 2);
  EXPECT_EQ(out.modes(0).slot_rules().tier_horizons(0).tier(), "CORE");
  EXPECT_EQ(FromProto(out.modes(0).slot_rules().tier_horizons(0).horizon()), 60 * kDay);
  EXPECT_EQ(out.modes(0).slot_rules().tier_horizons(1).tier(), "GENERAL");
  EXPECT_EQ(FromProto(out.modes(0).slot_rules().tier_horizons(1).horizon()), 7 * kDay);
}

// ------------------------------------------------------------ CheckAccess

// CORE 60 d against member_horizon 30 d: a booking ending at now + 45 d.
TEST_F(TierHorizonTest, ALongerTierHorizonLetsThatTierBookFurtherAhead) {
  World("tem", {Tier("CORE", 60 * kDay)});
  v1::CheckAccessResponse core = Check("core", 45 * kDay);
  EXPECT_TRUE(core.allowed()) << Message(core);
  EXPECT_EQ(core.tier(), "CORE");
  EXPECT_EQ(core.payer_class(), tv1::MEMBER);
  EXPECT_TRUE(Check("core", 60 * kDay).allowed());
  v1::CheckAccessResponse late = Check("core", 60 * kDay + absl::Seconds(1));
  EXPECT_EQ(Codes(late), kBeyond);
  EXPECT_EQ(Message(late), "members of tier CORE may book time ending at most 1440h ahead");
  // Other tiers keep member_horizon.
  for (const char* org : {"general", "associate"}) {
    v1::CheckAccessResponse r = Check(org, 45 * kDay);
    EXPECT_EQ(Codes(r), kBeyond) << org;
    EXPECT_EQ(Message(r), "members may book time ending at most 720h ahead") << org;
    EXPECT_TRUE(Check(org, 30 * kDay).allowed()) << org;
  }
  // The owner (a GENERAL member itself) books up to the longest horizon.
  v1::CheckAccessResponse owner = Check("owner", 60 * kDay);
  EXPECT_TRUE(owner.allowed()) << Message(owner);
  EXPECT_EQ(owner.payer_class(), tv1::OWNER);
  v1::CheckAccessResponse owner_late = Check("owner", 60 * kDay + absl::Seconds(1));
  EXPECT_EQ(Codes(owner_late), kBeyond);
  EXPECT_EQ(Message(owner_late), "the owner may book time ending at most 1440h ahead");
  // A non-member keeps non_member_horizon.
  EXPECT_TRUE(Check("outsider", 7 * kDay).allowed());
  v1::CheckAccessResponse outsider = Check("outsider", 7 * kDay + absl::Seconds(1));
  EXPECT_EQ(Codes(outsider), kBeyond);
  EXPECT_EQ(Message(outsider), "non-members may book time ending at most 168h ahead");
}

// GENERAL 10 d, shorter than member_horizon 30 d.
TEST_F(TierHorizonTest, AShorterTierHorizonHoldsThatTierBack) {
  World("tem", {Tier("GENERAL", 10 * kDay)});
  v1::CheckAccessResponse general = Check("general", 20 * kDay);
  EXPECT_EQ(Codes(general), kBeyond);
  EXPECT_EQ(Message(general), "members of tier GENERAL may book time ending at most 240h ahead");
  EXPECT_TRUE(Check("general", 10 * kDay).allowed());
  EXPECT_TRUE(Check("core", 20 * kDay).allowed());
  // The owner, a GENERAL member, is not held back: member_horizon is longer.
  EXPECT_TRUE(Check("owner", 30 * kDay).allowed());
}

// A suspended organisation books as NON_MEMBER: its tier gives it nothing.
TEST_F(TierHorizonTest, ASuspendedOrganisationOfTheTierGetsTheNonMemberHorizon) {
  World("tem", {Tier("CORE", 60 * kDay)});
  v1::ChangeMembershipRequest c;
  c.set_name("organizations/core");
  c.set_membership_state(v1::SUSPENDED);
  c.set_reason("breach of trust");
  v1::Organization org;
  ASSERT_TRUE(Call(&Stub::ChangeMembership, c, &org, admin_).ok());
  ASSERT_EQ(org.tier(), "CORE");
  v1::CheckAccessResponse r = Check("core", 8 * kDay);
  EXPECT_EQ(Codes(r), kBeyond);
  EXPECT_EQ(r.payer_class(), tv1::NON_MEMBER);
  EXPECT_EQ(Message(r), "non-members may book time ending at most 168h ahead");
  EXPECT_TRUE(Check("core", 7 * kDay).allowed());
}

// The horizons of one mode's rules only: another instrument without
// entries keeps member_horizon for every tier.
TEST_F(TierHorizonTest, OnlyTheInstrumentsOwnEntriesCount) {
  World("tem", {Tier("CORE", 60 * kDay)});
  AddInstrument("sem", {});
  EXPECT_TRUE(Check("core", 45 * kDay, "tem").allowed());
  EXPECT_EQ(Codes(Check("core", 45 * kDay, "sem")), kBeyond);
}

// ------------------------------------------------------------ BookingWindowFor

// A member without a tier (as the rules see it) keeps member_horizon; the
// tier counts only for MEMBER.
TEST(BookingWindowForTier, TheTierCountsOnlyForAMember) {
  v1::ModeOffering o;
  o.set_mode(tv1::ON_SITE);
  auto* sr = o.mutable_slot_rules();
  *sr->mutable_member_horizon() = ToProto(30 * kDay);
  *sr->mutable_non_member_horizon() = ToProto(7 * kDay);
  *sr->add_tier_horizons() = Tier("CORE", 60 * kDay);
  *sr->add_tier_horizons() = Tier("GENERAL", 10 * kDay);
  const absl::Time now = absl::FromUnixSeconds(1'800'000'000);
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "CORE", now).latest_end, now + 60 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "CORE", now).horizon_tier, "CORE");
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "GENERAL", now).latest_end, now + 10 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "", now).latest_end, now + 30 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "", now).horizon_tier, "");
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "core", now).latest_end, now + 30 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::NON_MEMBER, "CORE", now).latest_end, now + 7 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::OWNER, "GENERAL", now).latest_end, now + 60 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::OWNER, "", now).horizon_tier, "");
  sr->clear_tier_horizons();
  EXPECT_EQ(BookingWindowFor(o, tv1::OWNER, "", now).latest_end, now + 30 * kDay);
  EXPECT_EQ(BookingWindowFor(o, tv1::MEMBER, "CORE", now).latest_end, now + 30 * kDay);
}

}  // namespace
}  // namespace labshare::inventory
