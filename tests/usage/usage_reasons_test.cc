// usage.proto error reasons no test named before, each through gRPC in the
// situation its RPC comment describes, with nothing written: ExportUsage,
// ListIdleInstruments and GetSharingMatrix refuse a range that is not whole
// days in the reporting zone (RANGE_NOT_ALIGNED), GetSharingMatrix one of
// more than 100 calendar years (RANGE_TOO_LARGE); UpdateThresholds that
// loses every attempt to a concurrent update is ABORTED
// CONCURRENT_MODIFICATION and succeeds when retried with its request_id;
// ExportAuditTrail whose ReportExported cannot be published because Redis
// refuses writes (out of memory) ends UNAVAILABLE STORAGE_UNAVAILABLE
// without its trailer. Undocumented reasons fail the run through
// common/error_contract.h (LABSHARE_STRICT_REASONS=1 under ctest).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/grpc_status.h"
#include "tests/usage/usage_service_fixture.h"
#include "tests/usage/usage_test_events.h"

namespace labshare::usage {
namespace {

// A clock that, while armed, lets `interfere` run each time it is read: the
// usage service reads the time between loading the thresholds and
// committing their update, so another update can be slipped in exactly
// there, deterministically.
class InterferingClock final : public Clock {
 public:
  explicit InterferingClock(const Clock* base) : base_(base) {}
  absl::Time Now() const override {
    if (armed_.load()) interfere_();
    return base_->Now();
  }
  void Arm(std::function<void()> interfere) {
    interfere_ = std::move(interfere);
    armed_.store(true);
  }
  void Disarm() { armed_.store(false); }

 private:
  const Clock* base_;
  std::atomic<bool> armed_{false};
  std::function<void()> interfere_;
};

class UsageReasonsTest : public UsageServiceFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(StartUsage(&usage_clock_));
    // One audited event: instruments/sem of organizations/own, never used.
    test_events::InstrumentFacts sem;
    sem.category = "sem";
    sem.create_time = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_);
    StreamEvent registered = test_events::Entry(test_events::InstrumentChanged("sem", sem), "ev1");
    registered.stream_id = "1-0";
    registered.type = "labshare.inventory.v1.InventoryEvent";
    ASSERT_TRUE(ApplyEvent(audit_.get(), figures_.get(), "inventory", registered).ok());
  }

  void TearDown() override {
    usage_clock_.Disarm();
    UsageServiceFixture::TearDown();
    if (pool_) pool_->Command({"CONFIG", "SET", "maxmemory", "0"}).IgnoreError();  // the server is shared
    SetQuietLogging(false);
  }

  labshare::type::v1::Interval Between(absl::Time start, absl::Time end) const {
    labshare::type::v1::Interval r;
    *r.mutable_start_time() = ToProto(start);
    *r.mutable_end_time() = ToProto(end);
    return r;
  }
  // Ranges that are not whole days in Asia/Shanghai: midnight UTC (08:00
  // there) at the start, one second short of midnight at the end, an hour off.
  std::vector<labshare::type::v1::Interval> MisalignedRanges() const {
    const absl::Time jan = absl::FromCivil(absl::CivilDay(2026, 1, 1), zone_);
    const absl::Time feb = absl::FromCivil(absl::CivilDay(2026, 2, 1), zone_);
    return {Between(absl::FromCivil(absl::CivilDay(2026, 1, 1), absl::UTCTimeZone()), feb),
            Between(jan, feb - absl::Seconds(1)), Between(jan + absl::Hours(1), feb + absl::Hours(1))};
  }

  int64_t OutboxLength() {
    auto v = pool_->Command({"XLEN", "{usage}:outbox"});
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? v->integer : -1;
  }

  InterferingClock usage_clock_{&clock_};
};

void ExpectReason(const grpc::Status& s, grpc::StatusCode code, const std::string& reason) {
  EXPECT_EQ(s.error_code(), code) << s.error_message();
  EXPECT_EQ(GrpcErrorReason(s), reason) << s.error_message();
}

// ExportUsage: "INVALID_ARGUMENT (... RANGE_NOT_ALIGNED ...)": before any
// message, with no export recorded; the aligned range exports.
TEST_F(UsageReasonsTest, ExportUsageRefusesARangeThatIsNotWholeDays) {
  figures_->set_max_concurrent_exports(/*total=*/1, /*per_caller=*/1);
  v1::ExportUsageRequest r;
  r.set_format(v1::EXPORT_FORMAT_CSV);
  for (const auto& range : MisalignedRanges()) {
    *r.mutable_range() = range;
    auto ctx = Ctx();
    auto reader = stub_->ExportUsage(ctx.get(), r);
    v1::ExportUsageResponse m;
    int messages = 0;
    while (reader->Read(&m)) ++messages;
    ExpectReason(reader->Finish(), grpc::StatusCode::INVALID_ARGUMENT, "RANGE_NOT_ALIGNED");
    EXPECT_EQ(messages, 0);
  }
  EXPECT_EQ(OutboxLength(), 0);
  // No slot was kept by the refused calls: the one slot exports the aligned month.
  *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2026, 2, 1));
  auto ctx = Ctx();
  auto reader = stub_->ExportUsage(ctx.get(), r);
  v1::ExportUsageResponse m;
  int trailers = 0;
  while (reader->Read(&m)) trailers += m.has_trailer() ? 1 : 0;
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(trailers, 1);
  EXPECT_EQ(OutboxLength(), 1);
}

// ListIdleInstruments: "RANGE_NOT_ALIGNED"; the same range in whole days
// lists the unused instrument.
TEST_F(UsageReasonsTest, ListIdleInstrumentsRefusesARangeThatIsNotWholeDays) {
  v1::ListIdleInstrumentsRequest r;
  for (const auto& range : MisalignedRanges()) {
    *r.mutable_range() = range;
    v1::ListIdleInstrumentsResponse resp;
    auto ctx = Ctx();
    ExpectReason(stub_->ListIdleInstruments(ctx.get(), r, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                 "RANGE_NOT_ALIGNED");
  }
  // Facility staff of the owner, scoped to its own instruments: the same.
  r.mutable_filter()->add_owner_organizations("organizations/own");
  *r.mutable_range() = MisalignedRanges()[0];
  v1::ListIdleInstrumentsResponse resp;
  auto staff = Ctx(Role::kFacilityStaff, "fay", "own");
  ExpectReason(stub_->ListIdleInstruments(staff.get(), r, &resp), grpc::StatusCode::INVALID_ARGUMENT,
               "RANGE_NOT_ALIGNED");
  // Another organisation's staff is refused its scope first.
  auto other = Ctx(Role::kFacilityStaff, "fred", "lab");
  ExpectReason(stub_->ListIdleInstruments(other.get(), r, &resp), grpc::StatusCode::PERMISSION_DENIED,
               "ORGANIZATION_SCOPE");

  *r.mutable_range() = Range(absl::CivilDay(2026, 1, 1), absl::CivilDay(2027, 1, 1));
  auto ctx = Ctx();
  grpc::Status s = stub_->ListIdleInstruments(ctx.get(), r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.instruments_size(), 1);
  EXPECT_EQ(resp.instruments(0).instrument(), "instruments/sem");
  EXPECT_EQ(OutboxLength(), 0);
}

// GetSharingMatrix: "RANGE_NOT_ALIGNED"; "RANGE_TOO_LARGE: more than 100
// years" (calendar years: 29 February to 1 March, 100 years on).
TEST_F(UsageReasonsTest, GetSharingMatrixRefusesRangesNotWholeDaysOrOverAHundredYears) {
  v1::GetSharingMatrixRequest r;
  v1::GetSharingMatrixResponse resp;
  for (const auto& range : MisalignedRanges()) {
    *r.mutable_range() = range;
    auto ctx = Ctx();
    ExpectReason(stub_->GetSharingMatrix(ctx.get(), r, &resp), grpc::StatusCode::INVALID_ARGUMENT,
                 "RANGE_NOT_ALIGNED");
  }
  // A member billing admin's column: validated after its scope.
  r.mutable_filter()->add_user_organizations("organizations/lab");
  auto billing = Ctx(Role::kMemberBillingAdmin, "bill", "lab");
  ExpectReason(stub_->GetSharingMatrix(billing.get(), r, &resp), grpc::StatusCode::INVALID_ARGUMENT,
               "RANGE_NOT_ALIGNED");
  r.clear_filter();

  const struct {
    absl::CivilDay from, to;
    bool ok;
  } kCases[] = {
      {absl::CivilDay(2000, 1, 1), absl::CivilDay(2100, 1, 1), true},
      {absl::CivilDay(2000, 1, 1), absl::CivilDay(2100, 1, 2), false},
      {absl::CivilDay(2000, 2, 29), absl::CivilDay(2100, 3, 1), true},
      {absl::CivilDay(2000, 2, 29), absl::CivilDay(2100, 3, 2), false},
      {absl::CivilDay(1970, 1, 1), absl::CivilDay(2100, 1, 1), false},
  };
  for (const auto& c : kCases) {
    *r.mutable_range() = Range(c.from, c.to);
    auto ctx = Ctx();
    grpc::Status s = stub_->GetSharingMatrix(ctx.get(), r, &resp);
    if (c.ok) {
      EXPECT_TRUE(s.ok()) << c.from << " " << c.to << ": " << s.error_message();
    } else {
      ExpectReason(s, grpc::StatusCode::INVALID_ARGUMENT, "RANGE_TOO_LARGE");
    }
  }
  EXPECT_EQ(OutboxLength(), 0);
}

// UpdateThresholds: "ABORTED (... CONCURRENT_MODIFICATION: retry with the
// same request_id)". Another administrator's update lands between each
// attempt's read and its commit; without an etag the update reads again
// until it gives up. Nothing of it is written, and its retry applies once.
TEST_F(UsageReasonsTest, UpdateThresholdsOutrunByOtherUpdatesIsAbortedAndRetriable) {
  UsageFigures rival(pool_.get(), &clock_, zone_, labshare::testing::TestPageTokens());
  const Principal carol{"carol", "", {Role::kConsortiumAdmin}, absl::InfiniteFuture()};
  v1::GetThresholdsRequest get;
  get.set_name("thresholds");
  ASSERT_TRUE(figures_->GetThresholds(carol, get).ok());  // the defaults stored: etag 1
  int rival_updates = 0;
  usage_clock_.Arm([&] {
    v1::UpdateThresholdsRequest u;
    u.set_request_id(absl::StrCat("rival-", ++rival_updates));
    u.mutable_thresholds()->set_name("thresholds");
    u.mutable_thresholds()->set_minimum_assessed_days(100 + rival_updates);
    u.mutable_update_mask()->add_paths("minimum_assessed_days");
    auto done = rival.UpdateThresholds(carol, u);
    ASSERT_TRUE(done.ok()) << done.status();
  });

  v1::UpdateThresholdsRequest mine;
  mine.set_request_id("mine-1");
  mine.mutable_thresholds()->set_name("thresholds");
  mine.mutable_thresholds()->set_default_lease_counted_hours_per_day(6);
  mine.mutable_update_mask()->add_paths("default_lease_counted_hours_per_day");
  v1::Thresholds out;
  auto ctx = Ctx(Role::kConsortiumAdmin, "ada");
  ExpectReason(stub_->UpdateThresholds(ctx.get(), mine, &out), grpc::StatusCode::ABORTED,
               "CONCURRENT_MODIFICATION");
  usage_clock_.Disarm();

  // Only the rival's updates were written, each with its event.
  ASSERT_GE(rival_updates, 1);
  auto now = figures_->GetThresholds(carol, get);
  ASSERT_TRUE(now.ok()) << now.status();
  EXPECT_EQ(now->minimum_assessed_days(), 100 + rival_updates);
  EXPECT_NE(now->default_lease_counted_hours_per_day(), 6);
  EXPECT_EQ(now->etag(), std::to_string(1 + rival_updates));
  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), static_cast<size_t>(rival_updates));
  for (const auto& e : events) {
    EXPECT_TRUE(e.has_thresholds_changed());
    EXPECT_EQ(e.header().actor(), "users/carol");
  }

  // The retry with the same request_id applies once, on the rival's values.
  auto again = Ctx(Role::kConsortiumAdmin, "ada");
  grpc::Status s = stub_->UpdateThresholds(again.get(), mine, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.default_lease_counted_hours_per_day(), 6);
  EXPECT_EQ(out.minimum_assessed_days(), 100 + rival_updates);
  EXPECT_EQ(out.etag(), std::to_string(2 + rival_updates));
  events = Outbox();
  ASSERT_EQ(events.size(), static_cast<size_t>(rival_updates + 1));
  EXPECT_EQ(events.back().header().actor(), "users/ada");
  EXPECT_EQ(events.back().thresholds_changed().current().default_lease_counted_hours_per_day(), 6);
  v1::Thresholds replayed;
  auto third = Ctx(Role::kConsortiumAdmin, "ada");
  s = stub_->UpdateThresholds(third.get(), mine, &replayed);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(replayed.SerializeAsString(), out.SerializeAsString());
  EXPECT_EQ(Outbox().size(), static_cast<size_t>(rival_updates + 1));
}

// ExportAuditTrail: "if the event cannot be published (e.g. UNAVAILABLE
// STORAGE_UNAVAILABLE), the stream ends with that error instead of the last
// message and nothing is recorded". Redis at its memory limit still answers
// reads, so the file is produced, but refuses the ReportExported.
TEST_F(UsageReasonsTest, ExportAuditTrailWhoseEventRedisRefusesEndsUnavailableWithoutTrailer) {
  // A file of several 64 KiB messages: 40 more entries of 4 KiB each.
  for (int i = 2; i <= 41; ++i) {
    labshare::inventory::v1::InventoryEvent e;
    e.mutable_header()->set_event_id(absl::StrCat("ev", i));
    e.mutable_instrument_changed()->mutable_instrument()->set_name("instruments/sem");
    e.mutable_instrument_changed()->mutable_instrument()->set_display_name(std::string(4096, 'x'));
    ASSERT_TRUE(audit_->Append("inventory", {absl::StrCat(i, "-0"), "labshare.inventory.v1.InventoryEvent",
                                             e.SerializeAsString()}).ok());
  }
  figures_->set_max_concurrent_exports(/*total=*/1, /*per_caller=*/1);
  v1::ExportAuditTrailRequest r;
  r.set_format(v1::AUDIT_EXPORT_FORMAT_JSONL);
  ASSERT_TRUE(pool_->Command({"CONFIG", "SET", "maxmemory", "1"}).ok());
  auto ctx = Ctx();
  auto reader = stub_->ExportAuditTrail(ctx.get(), r);
  v1::ExportAuditTrailResponse m;
  int trailers = 0;
  std::string received;  // what came before the error: whole lines, in order
  while (reader->Read(&m)) {
    trailers += m.has_trailer() ? 1 : 0;
    EXPECT_EQ(m.offset(), static_cast<int64_t>(received.size()));
    received += m.data();
  }
  grpc::Status s = reader->Finish();
  ExpectReason(s, grpc::StatusCode::UNAVAILABLE, "STORAGE_UNAVAILABLE");
  ASSERT_TRUE(GrpcRetryDelay(s).has_value()) << s.error_message();
  EXPECT_EQ(trailers, 0);
  // The file was produced (its first messages sent): only the event failed.
  EXPECT_GT(received.size(), 64u * 1024);
  EXPECT_EQ(received.back(), '\n');
  ASSERT_TRUE(pool_->Command({"CONFIG", "SET", "maxmemory", "0"}).ok());
  EXPECT_EQ(OutboxLength(), 0);

  // Storage back: the same export (the one slot free again) ends with its
  // trailer and is recorded once.
  auto again = Ctx();
  reader = stub_->ExportAuditTrail(again.get(), r);
  v1::ExportTrailer trailer;
  std::string file;
  while (reader->Read(&m)) {
    file += m.data();
    if (m.has_trailer()) trailer = m.trailer();
  }
  s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(trailer.row_count(), 41);
  EXPECT_EQ(file.substr(0, received.size()), received);
  std::vector<v1::UsageEvent> events = Outbox();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].report_exported().kind(), v1::EXPORT_KIND_AUDIT_TRAIL);
  EXPECT_EQ(events[0].report_exported().trailer().SerializeAsString(), trailer.SerializeAsString());
}

// OUT_OF_RANGE "SEQUENCE_OUT_OF_RANGE" through gRPC: a start_sequence or an
// anchor beyond the chain head (one entry here). Nothing is published (no
// AuditVerificationRun); the range up to the head still verifies.
TEST_F(UsageReasonsTest, VerifyAuditChainBeyondTheHeadIsSequenceOutOfRange) {
  const size_t events = Outbox().size();
  v1::VerifyAuditChainRequest r;
  v1::VerifyAuditChainResponse resp;
  r.set_start_sequence(5);
  auto ctx = Ctx();
  ExpectReason(stub_->VerifyAuditChain(ctx.get(), r, &resp), grpc::StatusCode::OUT_OF_RANGE,
               "SEQUENCE_OUT_OF_RANGE");
  r.set_start_sequence(0);
  v1::AuditAnchor* anchor = r.add_anchors();
  anchor->set_sequence(2);
  anchor->set_hash(std::string(32, 'x'));
  auto admin = Ctx(Role::kConsortiumAdmin, "root");
  ExpectReason(stub_->VerifyAuditChain(admin.get(), r, &resp), grpc::StatusCode::OUT_OF_RANGE,
               "SEQUENCE_OUT_OF_RANGE");
  EXPECT_EQ(Outbox().size(), events) << "a refused verification publishes nothing";
  r.clear_anchors();
  auto again = Ctx();
  grpc::Status s = stub_->VerifyAuditChain(again.get(), r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.result(), v1::VERIFIED);
}

}  // namespace
}  // namespace labshare::usage
