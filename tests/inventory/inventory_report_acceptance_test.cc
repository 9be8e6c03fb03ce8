// SlotRules.report_acceptance_period: TECHNICAL_SERVICE only, a valid
// Duration (seconds and nanos of one sign), not negative, at most 3650
// days; checked when an instrument is created or its modes updated
// (INVALID_FIELD naming the field's path), kept as written. Unset (0) on
// every mode is what instruments had before the field. Every refusal
// fails on the code before the field (no such check: the instrument is
// created).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "common/proto_util.h"
#include "labshare/inventory/v1/inventory.grpc.pb.h"
#include "tests/inventory/inventory_fixture.h"

namespace labshare::inventory {
namespace {

using Stub = v1::InventoryService::Stub;
namespace tv1 = labshare::type::v1;

class ReportAcceptanceTest : public InventoryServiceTest {
 protected:
  void SetUp() override {
    InventoryServiceTest::SetUp();
    MakeOrg("owner", v1::MEMBER, "CORE");
    MakeFacility("fac", "owner");
  }
  // The fixture's ON_SITE rules (modes[0]) without a qualification, and
  // TECHNICAL_SERVICE (modes[1]) with the same rules, a catalogue entry and
  // `period` (unset when nullptr); `on_site_period` on ON_SITE likewise.
  static v1::Instrument Spec(const google::protobuf::Duration* period,
                             const google::protobuf::Duration* on_site_period = nullptr) {
    v1::Instrument in = InstrumentSpec("owner", "fac");
    auto* on_site = in.mutable_modes(0);
    on_site->mutable_slot_rules()->set_qualification_validity_days(0);
    auto* ts = in.add_modes();
    ts->set_mode(tv1::TECHNICAL_SERVICE);
    *ts->mutable_slot_rules() = on_site->slot_rules();
    if (period != nullptr) *ts->mutable_slot_rules()->mutable_report_acceptance_period() = *period;
    if (on_site_period != nullptr) *on_site->mutable_slot_rules()->mutable_report_acceptance_period() = *on_site_period;
    auto* entry = in.add_service_catalogue();
    entry->set_entry_id("imaging");
    entry->set_display_name("Imaging");
    entry->set_unit(v1::PER_SAMPLE);
    return in;
  }
  static google::protobuf::Duration D(int64_t seconds, int32_t nanos = 0) {
    google::protobuf::Duration d;
    d.set_seconds(seconds);
    d.set_nanos(nanos);
    return d;
  }
  grpc::Status Create(const std::string& id, const v1::Instrument& in, v1::Instrument* out = nullptr) {
    v1::CreateInstrumentRequest req;
    req.set_instrument_id(id);
    *req.mutable_instrument() = in;
    v1::Instrument ignored;
    return Call(&Stub::CreateInstrument, req, out != nullptr ? out : &ignored, admin_);
  }
  grpc::Status UpdateModes(const v1::Instrument& in, v1::Instrument* out) {
    v1::UpdateInstrumentRequest u;
    *u.mutable_instrument() = in;
    u.mutable_instrument()->set_name("instruments/tem");
    u.mutable_update_mask()->add_paths("modes");
    return Call(&Stub::UpdateInstrument, u, out, admin_);
  }
  const std::string kTs = "instrument.modes[1].slot_rules.report_acceptance_period";
  const std::string kOnSite = "instrument.modes[0].slot_rules.report_acceptance_period";
};

TEST_F(ReportAcceptanceTest, ThePeriodIsValidatedNamingItsField) {
  struct Case {
    std::string what;
    google::protobuf::Duration ts;
    std::optional<google::protobuf::Duration> on_site;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"negative", D(-3600), std::nullopt, kTs},
      {"negative nanos alone", D(0, -1), std::nullopt, kTs},
      {"seconds and nanos of other signs", D(259200, -1), std::nullopt, kTs},
      {"nanos of a second or more", D(3600, 1000000000), std::nullopt, kTs},
      {"longer than 3650 days", D(3650LL * 86400 + 1), std::nullopt, kTs},
      {"set on ON_SITE", D(259200), D(259200), kOnSite},
      {"a nanosecond on ON_SITE", D(0), D(0, 1), kOnSite},
  };
  for (const auto& c : cases) {
    grpc::Status s = Create("bad", Spec(&c.ts, c.on_site ? &*c.on_site : nullptr));
    ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", c.what);
    EXPECT_EQ(Violations(s), std::vector<std::string>{c.field}) << c.what;
  }
  // UpdateInstrument (modes) checks the same.
  ASSERT_TRUE(Create("tem", Spec(nullptr)).ok());
  v1::Instrument out;
  const google::protobuf::Duration negative = D(-1);
  grpc::Status s = UpdateModes(Spec(&negative), &out);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "update: negative");
  EXPECT_EQ(Violations(s), std::vector<std::string>{kTs});
  const google::protobuf::Duration day = D(86400);
  s = UpdateModes(Spec(&day, &day), &out);
  ExpectError(s, grpc::StatusCode::INVALID_ARGUMENT, "INVALID_FIELD", "update: on ON_SITE");
  EXPECT_EQ(Violations(s), std::vector<std::string>{kOnSite});
}

TEST_F(ReportAcceptanceTest, AValidPeriodIsKeptAsWritten) {
  // Exactly 3650 days, and a period with nanos; zero on ON_SITE is unset.
  const google::protobuf::Duration longest = D(3650LL * 86400);
  const google::protobuf::Duration zero = D(0);
  v1::Instrument created;
  grpc::Status s = Create("tem", Spec(&longest, &zero), &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(FromProto(created.modes(1).slot_rules().report_acceptance_period()), absl::Hours(24 * 3650));
  const google::protobuf::Duration three_days = D(259200, 500);
  v1::Instrument out;
  s = UpdateModes(Spec(&three_days), &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::GetInstrumentRequest g;
  g.set_name("instruments/tem");
  ASSERT_TRUE(Call(&Stub::GetInstrument, g, &out, admin_).ok());
  EXPECT_EQ(out.modes(1).slot_rules().report_acceptance_period().seconds(), 259200);
  EXPECT_EQ(out.modes(1).slot_rules().report_acceptance_period().nanos(), 500);
  EXPECT_FALSE(out.modes(0).slot_rules().has_report_acceptance_period());
  // Unset again: never accepted automatically.
  s = UpdateModes(Spec(nullptr), &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(out.modes(1).slot_rules().has_report_acceptance_period());
}

}  // namespace
}  // namespace labshare::inventory
